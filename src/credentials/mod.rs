//! Credential sources: where a secret's credentials come from when they are not a byte copy of
//! a long-lived Secret. A minted secret carries short-lived credentials (an OAuth2 access token
//! for Artifact Registry, a 12-hour ECR token, what a kubelet credential provider plugin
//! answers), renewed at a fraction of their lifetime by [`refresh`], the same bytes in every
//! namespace. The long-lived key stays in the injector's namespace.
//!
//! The minted credentials are written to the Secret of the secret's name in the injector's own
//! namespace, the source the sync then copies like any other. Its annotations say when it was
//! minted and when it expires, so a replica that finds a fresh one does not mint again.

pub mod ecr;
pub mod gcp;
pub mod http;
pub mod plugin;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::rules::validate_secret_name;

/// Where one secret's credentials come from (the config's `secrets:` map): a map with exactly
/// one key, the kind.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SourceSpec")]
pub enum Source {
    /// A service-account JSON key in a Secret of the injector's namespace: mint OAuth2 access
    /// tokens from it (`oauth2accesstoken`); the key is never copied.
    GcpServiceAccountKey(KeyRef),
    /// The GKE metadata server, or an external-account credential file.
    GcpWorkloadIdentity(WorkloadIdentity),
    /// Amazon ECR's `GetAuthorizationToken`, with the AWS default credential chain.
    Ecr(ecr::Ecr),
    /// A kubelet image credential provider plugin (`credentialprovider.kubelet.k8s.io/v1`).
    CredentialProvider(Plugin),
}

/// The YAML shape of a [`Source`]: one field per kind, exactly one given.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SourceSpec {
    gcp_service_account_key: Option<KeyRef>,
    gcp_workload_identity: Option<WorkloadIdentity>,
    ecr: Option<ecr::Ecr>,
    credential_provider: Option<Plugin>,
}

impl TryFrom<SourceSpec> for Source {
    type Error = String;

    fn try_from(spec: SourceSpec) -> Result<Self, String> {
        let given: Vec<Self> = [
            spec.gcp_service_account_key.map(Self::GcpServiceAccountKey),
            spec.gcp_workload_identity.map(Self::GcpWorkloadIdentity),
            spec.ecr.map(Self::Ecr),
            spec.credential_provider.map(Self::CredentialProvider),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[Self; 1]>::try_from(given) {
            Ok([source]) => Ok(source),
            Err(given) => Err(format!(
                "give exactly one of gcpServiceAccountKey, gcpWorkloadIdentity, ecr, credentialProvider (got {})",
                given.len()
            )),
        }
    }
}

/// A key of a Secret in the injector's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub secret: String,
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadIdentity {
    /// An external-account (workload identity federation) credential file; without it, the
    /// metadata server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugin {
    /// Absolute path of the plugin binary.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables for the plugin.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl Source {
    /// The kind, as the config names it and the copies' annotation shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GcpServiceAccountKey(_) => "gcpServiceAccountKey",
            Self::GcpWorkloadIdentity(_) => "gcpWorkloadIdentity",
            Self::Ecr(_) => "ecr",
            Self::CredentialProvider(_) => "credentialProvider",
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::GcpServiceAccountKey(key) => {
                validate_secret_name(&key.secret).map_err(|e| format!("secret: {e}"))?;
                if key.key.is_empty() {
                    return Err("key is empty".to_owned());
                }
            }
            Self::GcpWorkloadIdentity(wi) => {
                if wi.credentials_file.as_deref() == Some("") {
                    return Err("credentialsFile is empty".to_owned());
                }
            }
            Self::Ecr(ecr) => ecr.validate()?,
            Self::CredentialProvider(plugin) => {
                if !plugin.command.starts_with('/') {
                    return Err(format!(
                        "command {:?} must be an absolute path",
                        plugin.command
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Source {
    /// One line for `check-config`: the kind and where, never a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GcpServiceAccountKey(k) => write!(
                f,
                "gcpServiceAccountKey (key {:?} of Secret {:?})",
                k.key, k.secret
            ),
            Self::GcpWorkloadIdentity(WorkloadIdentity {
                credentials_file: Some(file),
            }) => write!(f, "gcpWorkloadIdentity (external account {file})"),
            Self::GcpWorkloadIdentity(_) => write!(f, "gcpWorkloadIdentity (metadata server)"),
            Self::Ecr(e) if e.registry_ids.is_empty() => write!(f, "ecr ({})", e.region),
            Self::Ecr(e) => write!(
                f,
                "ecr ({}, registries {})",
                e.region,
                e.registry_ids.join(", ")
            ),
            Self::CredentialProvider(p) => write!(f, "credentialProvider ({})", p.command),
        }
    }
}

/// Credentials a source minted, with when they stop working.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    /// `auths` entries: registry key (as in a docker config) to username and password.
    pub auths: BTreeMap<String, (String, String)>,
    pub expires_at: SystemTime,
}

impl fmt::Debug for Minted {
    // Never the password, not even in a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("registries", &self.auths.keys().collect::<Vec<_>>())
            .field(
                "expires_at",
                &humantime::format_rfc3339_seconds(self.expires_at),
            )
            .finish()
    }
}

impl Minted {
    /// The same credentials for every key in `keys`.
    pub fn for_keys(
        keys: &[String],
        username: &str,
        password: &str,
        expires_at: SystemTime,
    ) -> Self {
        let auths = keys
            .iter()
            .map(|k| (k.clone(), (username.to_owned(), password.to_owned())))
            .collect();
        Self { auths, expires_at }
    }

    /// The `.dockerconfigjson` content, as `kubectl create secret docker-registry` writes it.
    pub fn docker_config_json(&self) -> Vec<u8> {
        docker_config_json(
            self.auths
                .iter()
                .map(|(key, (user, password))| (key.as_str(), user.as_str(), password.as_str())),
        )
        .into_bytes()
    }

    /// How long the credentials live from `minted_at`.
    pub fn lifetime(&self, minted_at: SystemTime) -> Duration {
        self.expires_at
            .duration_since(minted_at)
            .unwrap_or(Duration::ZERO)
    }
}

/// The longest lifetime a source is taken at its word for. A longer claim (a plugin's
/// `cacheDuration: 168h`, an impersonated token's far `expireTime`) is cut to this, so minted
/// credentials are renewed at least daily: renewing early costs one call, while a long lifetime
/// nobody checks could keep dead credentials in force. Google's and ECR's tokens live 12 hours
/// at most.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Beyond this a claimed lifetime is a broken answer, not a long one, and minting fails: the
/// error names the source, and the last good credentials stay in force. It is the range of Go's
/// `time.Duration`, so the kubelet itself refuses such a `cacheDuration`.
const MAX_CLAIMED_LIFETIME: Duration = Duration::from_nanos(i64::MAX as u64);

/// When credentials minted at `minted_at` and claimed to live `claimed` expire: `claimed` cut
/// to [`MAX_LIFETIME`]. A zero lifetime (already expired) or one beyond any credential's is an
/// error, for the caller to prefix with the field and the source.
pub fn bounded_expiry(minted_at: SystemTime, claimed: Duration) -> Result<SystemTime, String> {
    if claimed.is_zero() {
        return Err("a lifetime of zero: expired when minted".to_owned());
    }
    if claimed > MAX_CLAIMED_LIFETIME {
        return Err(format!(
            "a lifetime of {} is longer than any credential lives",
            humantime::format_duration(claimed)
        ));
    }
    minted_at
        .checked_add(claimed.min(MAX_LIFETIME))
        .ok_or_else(|| "the expiry is past the clock's range".to_owned())
}

/// [`bounded_expiry`] for a source that answers with an absolute expiry (ECR's `expiresAt`, an
/// impersonated token's `expireTime`). One already past (a clock off, an emulator's fixed date)
/// is kept, as the credentials may still work: the refresher sees them expired and asks again
/// after its backoff. It is floored at the Unix epoch, so it still prints.
pub fn bounded_until(minted_at: SystemTime, expires_at: SystemTime) -> Result<SystemTime, String> {
    match expires_at.duration_since(minted_at) {
        Ok(lifetime) if !lifetime.is_zero() => bounded_expiry(minted_at, lifetime),
        _ => Ok(expires_at.max(UNIX_EPOCH)),
    }
}

/// The `.dockerconfigjson` content for `auths` entries (registry key, username, password), byte
/// for byte as `kubectl create secret docker-registry` writes it: Go's `encoding/json` of
/// kubectl's `DockerConfigJSON`, compact, keys sorted (the last entry of a key wins, as in a Go
/// map), each entry's `username`, `password`, `auth` in that order and left out when empty
/// (`omitempty`), strings escaped as Go escapes them. Written by hand, so there is no encoding
/// error to lose: every `&str` has a JSON form.
pub fn docker_config_json<'a>(
    auths: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let auths: BTreeMap<&str, (&str, &str)> = auths
        .into_iter()
        .map(|(key, user, password)| (key, (user, password)))
        .collect();
    let mut out = String::from("{\"auths\":{");
    for (i, (key, (user, password))) in auths.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_go_json_string(&mut out, key);
        out.push_str(":{");
        let auth = b64.encode(format!("{user}:{password}"));
        let fields = [
            ("username", user),
            ("password", password),
            ("auth", auth.as_str()),
        ];
        for (j, (name, value)) in fields
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            push_go_json_string(&mut out, name);
            out.push(':');
            push_go_json_string(&mut out, value);
        }
        out.push('}');
    }
    out.push_str("}}");
    out
}

/// `text` as a JSON string the way Go's `encoding/json` writes one (HTML-safe, Go 1.22 and
/// later): `"` and `\\` backslashed; `\b`, `\f`, `\n`, `\r`, `\t` short; other control
/// characters, `<`, `>`, `&`, U+2028 and U+2029 as `\u` and four lowercase hex digits; the
/// rest as is.
fn push_go_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why minting failed. The message never holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("cannot read the key: {0}")]
    Key(String),
    #[error("token endpoint {endpoint}: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error("credential provider {command}: {message}")]
    Plugin { command: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl MintError {
    /// The `result` label of the refresh metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Key(_) => "key_error",
            Self::Endpoint { .. } => "endpoint_error",
            Self::Plugin { .. } => "plugin_error",
            Self::Other(_) => "error",
        }
    }
}

/// Reads a key of a Secret in the injector's namespace.
pub type KeyReader<'a> = dyn Fn(&KeyRef) -> futures::future::BoxFuture<'static, Result<Vec<u8>, MintError>>
    + Send
    + Sync
    + 'a;

/// What minting needs besides the source: how to read a key Secret of the injector's
/// namespace, and how to reach token endpoints.
pub struct MintEnv<'a> {
    pub read_key: &'a KeyReader<'a>,
    pub http: &'a http::HttpClient,
    /// Where the GCP metadata server is (tests point it elsewhere).
    pub metadata_host: &'a str,
    /// Longest a plugin may run.
    pub plugin_timeout: Duration,
}

/// Mints credentials for `secret` from `source`, for `keys`.
pub async fn mint(
    source: &Source,
    keys: &[String],
    env: &MintEnv<'_>,
) -> Result<Minted, MintError> {
    match source {
        Source::GcpServiceAccountKey(key) => {
            let json = (env.read_key)(key).await?;
            gcp::mint_from_key(&json, keys, env.http).await
        }
        Source::GcpWorkloadIdentity(wi) => match &wi.credentials_file {
            Some(file) => gcp::mint_external_account(file, keys, env.http).await,
            None => gcp::mint_from_metadata(env.metadata_host, keys, env.http).await,
        },
        Source::Ecr(e) => ecr::mint(e, keys, env.http).await,
        Source::CredentialProvider(plugin) => plugin::mint(plugin, keys, env.plugin_timeout).await,
    }
}
