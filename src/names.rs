//! Names users see: labels, annotations, field manager. They are the public interface.

/// Namespace label that opts a namespace in (webhook `namespaceSelector` and the sync).
pub const INJECT_LABEL: &str = "pullsecret-injector.io/inject";
/// Value of [`INJECT_LABEL`] that opts in.
pub const INJECT_LABEL_VALUE: &str = "enabled";
/// Pod annotation that opts a Pod out.
pub const SKIP_ANNOTATION: &str = "pullsecret-injector.io/skip";
/// Annotation the webhook adds to a Pod it changed: the secrets it added, comma-separated.
pub const INJECTED_ANNOTATION: &str = "pullsecret-injector.io/injected";
/// Annotation the kubelet puts on mirror pods (static pods' API objects).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Label on every Secret copy the sync owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`]; also the binary, crate, chart and image name.
pub const APP_NAME: &str = "pullsecret-injector";
/// Server-side apply field manager.
pub const FIELD_MANAGER: &str = "pullsecret-injector";
/// Annotation on a Secret copy: `<namespace>/<name>` of its source.
pub const SOURCE_ANNOTATION: &str = "pullsecret-injector.io/source";
/// Annotation on a Secret copy: `sha256:<hex>` of the source's type and data.
pub const SOURCE_HASH_ANNOTATION: &str = "pullsecret-injector.io/source-hash";
/// The Secret type of a pull Secret made by `kubectl create secret docker-registry`.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The legacy pull Secret type (`.dockercfg`), still copied.
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";
/// Annotation on a minted secret (its source in our namespace, and each copy): the kind of its
/// credential source (`gcpServiceAccountKey`, ...).
pub const CREDENTIAL_SOURCE_ANNOTATION: &str = "pullsecret-injector.io/credential-source";
/// Annotation on a minted secret: when its credentials were minted (RFC 3339).
pub const MINTED_AT_ANNOTATION: &str = "pullsecret-injector.io/minted-at";
/// Annotation on a minted secret and its copies: when its credentials expire (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "pullsecret-injector.io/expires-at";
/// Annotation on a ServiceAccount named by `serviceAccounts:`: the `imagePullSecrets` entries
/// the sync added (comma-separated), so opting out removes exactly those.
pub const SERVICE_ACCOUNT_SECRETS_ANNOTATION: &str =
    "pullsecret-injector.io/service-account-secrets";
