//! One namespace brought to the desired state: a copy of every configured source if it opted
//! in, none of ours otherwise. Requests go only where [`Memory`] says something may have
//! changed: a known, current copy costs nothing until its read-back is due.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{
    Api, DeleteParams, ObjectMeta, PartialObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::Instrument;

use super::memory::{Known, Memory, Verify, fingerprint};
use super::service_accounts::{self, ServiceAccounts};
use crate::metrics::Metrics;
use crate::names::{
    APP_NAME, CREDENTIAL_SOURCE_ANNOTATION, DOCKER_CFG, DOCKER_CONFIG_JSON, EXPIRES_AT_ANNOTATION,
    FIELD_MANAGER, INJECT_LABEL, INJECT_LABEL_VALUE, MANAGED_BY_LABEL, SOURCE_ANNOTATION,
    SOURCE_HASH_ANNOTATION,
};
use crate::watch::ConfigStore;

/// The namespaces the controller watches: metadata only (labels and deletion are all it
/// reads), a fraction of the memory of whole objects at thousands of namespaces.
pub type NamespaceMeta = PartialObjectMeta<Namespace>;

const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source Secret {namespace}/{name} does not exist")]
    MissingSource { namespace: String, name: String },
    #[error(
        "source Secret {namespace}/{name} has type {type_:?}; only {DOCKER_CONFIG_JSON} and {DOCKER_CFG} are copied"
    )]
    UnsupportedType {
        namespace: String,
        name: String,
        type_: String,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// The `reason` label of the sync errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingSource { .. } => "missing_source",
            Self::UnsupportedType { .. } => "unsupported_type",
            Self::Kube(kube::Error::Api(status)) => match status.code {
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "api",
            },
            Self::Kube(_) => "transport",
        }
    }
}

/// What reconcile needs. Built once; shared by every reconcile.
pub struct Context {
    client: Client,
    /// Our own namespace, where the sources live.
    namespace: String,
    config: Arc<ConfigStore>,
    sources: Store<Secret>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    pub(super) memory: Memory,
    /// Secret names a previous config had and the current one does not: copies to remove.
    retired: Mutex<BTreeSet<String>>,
    /// Consecutive failures per namespace, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The configured ServiceAccounts, as their watch sees them.
    service_accounts: ServiceAccounts,
}

impl Context {
    pub fn new(
        client: Client,
        namespace: String,
        config: Arc<ConfigStore>,
        sources: Store<Secret>,
        metrics: Arc<Metrics>,
        resync: Duration,
    ) -> Self {
        Self {
            recorder: crate::kube_client::recorder(&client),
            client,
            namespace,
            config,
            sources,
            metrics,
            memory: Memory::new(resync),
            retired: Mutex::default(),
            failures: Mutex::default(),
            service_accounts: ServiceAccounts::default(),
        }
    }

    /// Serves the ServiceAccounts `serviceAccounts:` names, as `watched` sees them.
    pub fn with_service_accounts(mut self, watched: ServiceAccounts) -> Self {
        self.service_accounts = watched;
        self
    }

    /// The configured ServiceAccounts of `ns` brought to `wanted`.
    async fn serve_service_accounts(&self, ns: &str, wanted: &[String]) -> Result<(), Error> {
        let config = self.config.load();
        let written = service_accounts::reconcile(
            &self.client,
            &self.service_accounts,
            config.service_accounts(),
            ns,
            wanted,
        )
        .await?;
        for _ in 0..written {
            self.metrics.sync_service_account_patched();
        }
        Ok(())
    }

    /// Takes note of a new config: names it dropped are retired (their copies removed).
    pub fn config_changed(&self, before: &[String], after: &[String]) {
        let mut retired = lock(&self.retired);
        for name in before.iter().filter(|n| !after.contains(n)) {
            retired.insert(name.clone());
        }
        for name in after {
            retired.remove(name);
        }
    }

    /// A deleted namespace: nothing of it to remember.
    pub fn namespace_deleted(&self, namespace: &str) {
        self.memory.forget_namespace(namespace);
        lock(&self.failures).remove(namespace);
    }

    fn source(&self, name: &str) -> Result<Arc<Secret>, Error> {
        let source = self
            .sources
            .get(&ObjectRef::new(name).within(&self.namespace))
            .ok_or_else(|| Error::MissingSource {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })?;
        let type_ = source.type_.as_deref().unwrap_or_default();
        if type_ != DOCKER_CONFIG_JSON && type_ != DOCKER_CFG {
            return Err(Error::UnsupportedType {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                type_: type_.to_owned(),
            });
        }
        Ok(source)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop the sync: the data is still consistent enough.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a namespace opted in (and is not being deleted).
pub fn is_opted_in(ns: &impl Resource) -> bool {
    ns.meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(INJECT_LABEL))
        .map(String::as_str)
        == Some(INJECT_LABEL_VALUE)
        && ns.meta().deletion_timestamp.is_none()
}

pub(super) fn is_managed(secret: &Secret) -> bool {
    secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(APP_NAME)
}

/// Brings one namespace to the desired state.
#[tracing::instrument(name = "reconcile", skip_all, fields(namespace = %ns.name_any()))]
pub async fn reconcile(ns: Arc<NamespaceMeta>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    if name == ctx.namespace {
        // The sources live here; a copy would be the source itself.
        return Ok(Action::await_change());
    }
    if ns.metadata.deletion_timestamp.is_some() {
        // The namespace controller deletes what is in it, and refuses new objects.
        ctx.namespace_deleted(&name);
        return Ok(Action::await_change());
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &name);
    let opted_in = is_opted_in(ns.as_ref());
    let due = ctx.memory.due(&name, opted_in, Instant::now());
    let action = if opted_in {
        serve(&ctx, &api, &name, due).await?
    } else {
        clear(&ctx, &api, &name, due).await?
    };
    lock(&ctx.failures).remove(&name);
    ctx.metrics.sync_success(unix_now());
    Ok(action)
}

/// An opted-in namespace: every configured copy present and current, retired ones gone.
async fn serve(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    due: Option<Verify>,
) -> Result<Action, Error> {
    let config = ctx.config.load();
    let mut first_error = None;
    // A missing or mistyped source is a config problem: the copies that could be read were,
    // and retries need not read them again. An API error leaves the read-back due.
    let mut all_read = true;
    for secret in config.secrets() {
        let copy = tracing::info_span!("copy", secret = %secret);
        if let Err(error) = ensure_copy(ctx, api, ns, secret, due.is_some())
            .instrument(copy.clone())
            .await
        {
            ctx.metrics.sync_error(error.metric_label());
            tracing::warn!(parent: &copy, %error, "sync failed");
            all_read &= !matches!(error, Error::Kube(_));
            first_error.get_or_insert(error);
        }
    }
    if let Err(error) = remove_retired(ctx, api, ns, due.is_some()).await {
        all_read = false;
        first_error.get_or_insert(error);
    }
    if let Err(error) = ctx.serve_service_accounts(ns, config.secrets()).await {
        ctx.metrics.sync_error(error.metric_label());
        tracing::warn!(%error, "ServiceAccount update failed");
        first_error.get_or_insert(error);
    }
    let now = Instant::now();
    if let Some(reason) = due
        && all_read
    {
        ctx.memory.verified(ns, now);
        ctx.metrics.sync_verified(reason.as_str());
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    Ok(Action::requeue(ctx.memory.next_check(ns, now)))
}

/// A namespace that did not opt in (or opted out): our copies removed, foreign ones kept.
/// Copies we know of go at once; a namespace never seen is swept at its slot.
async fn clear(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    due: Option<Verify>,
) -> Result<Action, Error> {
    // Our entries leave the ServiceAccounts first: that costs nothing where there are none.
    ctx.serve_service_accounts(ns, &[]).await?;
    if ctx.memory.is_clean(ns) {
        return Ok(Action::await_change());
    }
    let known = ctx.memory.copies(ns);
    if known.is_empty() && due.is_none() {
        return Ok(Action::requeue(ctx.memory.next_check(ns, Instant::now())));
    }
    let mut first_error = None;
    for (secret, copy) in &known {
        if let Err(error) = remove_known(ctx, api, ns, secret, copy).await {
            ctx.metrics.sync_error(error.metric_label());
            first_error.get_or_insert(error);
        }
    }
    if due.is_some() {
        // Due for a read (never read in this process, or its slot came): look for copies of
        // every name we may have written, known or not.
        let config = ctx.config.load();
        let retired: Vec<String> = lock(&ctx.retired).iter().cloned().collect();
        for secret in config.secrets().iter().chain(&retired) {
            if let Err(error) = remove_copy(ctx, api, ns, secret).await {
                ctx.metrics.sync_error(error.metric_label());
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    ctx.memory.set_clean(ns, Instant::now());
    Ok(Action::await_change())
}

/// Retries a failed namespace with exponential backoff, 1 s up to a minute (the client's rate
/// limit spreads the namespaces of one outage).
pub fn error_policy(ns: Arc<NamespaceMeta>, _error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = lock(&ctx.failures);
    let count = failures.entry(ns.name_any()).or_insert(0);
    *count = count.saturating_add(1).min(16);
    let delay = ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_BACKOFF)
        .without_max_times()
        .build()
        .nth(*count as usize - 1)
        .unwrap_or(MAX_BACKOFF);
    Action::requeue(delay)
}

/// Makes the copy of `name` in `ns` current. With `verify`, or when the copy is not known, it
/// is read first; a known copy of an older source is updated in place, on the very version we
/// last saw (someone else's write since makes us read it).
async fn ensure_copy(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    name: &str,
    verify: bool,
) -> Result<(), Error> {
    let source = ctx.source(name)?;
    let desired = copy_of(&source, &ctx.namespace, ns);
    let hash = desired
        .annotations()
        .get(SOURCE_HASH_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let known = ctx.memory.known(ns, name);

    if let Some(known) = &known
        && !verify
    {
        if known.source == fingerprint(&hash) {
            return Ok(());
        }
        match apply(api, desired.clone(), Some(&*known.resource_version)).await {
            Ok(applied) => {
                applied_copy(ctx, ns, name, &applied, &hash);
                return Ok(());
            }
            // Changed, taken over or deleted since we saw it: read it and decide.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
            Err(error) => return Err(error.into()),
        }
    }

    if known.is_none() && ctx.memory.create_first() {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match api.create(&params, &desired).await {
            Ok(created) => {
                ctx.memory.probed(true);
                applied_copy(ctx, ns, name, &created, &hash);
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }

    let existing = api.get_opt(name).await?;
    if known.is_none() {
        ctx.memory.probed(existing.is_none());
    }
    let precondition = match &existing {
        Some(existing) if !is_managed(existing) => {
            ctx.memory.forget(ns, name);
            report_conflict(ctx, existing).await;
            return Ok(());
        }
        Some(existing) if is_current(existing, &desired) => {
            ctx.memory.remember(ns, name, Known::of(existing, &hash));
            return Ok(());
        }
        Some(existing) if existing.type_ != desired.type_ => {
            // A Secret's type cannot change in place: replace it.
            delete_exactly(api, existing).await?;
            None
        }
        // Apply only onto the copy we just read: if someone took it over meanwhile, the API
        // server refuses (409) and the retry sees their change.
        Some(existing) => existing.resource_version(),
        None => None,
    };
    let applied = apply(api, desired, precondition.as_deref()).await?;
    applied_copy(ctx, ns, name, &applied, &hash);
    Ok(())
}

fn applied_copy(ctx: &Context, ns: &str, name: &str, applied: &Secret, hash: &str) {
    ctx.memory.remember(ns, name, Known::of(applied, hash));
    ctx.metrics.sync_applied(name);
    tracing::info!(namespace = %ns, secret = %name, "secret copy applied");
}

/// Server-side apply of `desired`, onto `resource_version` when given.
async fn apply(
    api: &Api<Secret>,
    mut desired: Secret,
    resource_version: Option<&str>,
) -> Result<Secret, kube::Error> {
    desired.metadata.resource_version = resource_version.map(str::to_owned);
    let name = desired.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
}

/// Copies of names no longer configured: the known ones deleted; in a namespace never read
/// in this process, looked for.
async fn remove_retired(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    verify: bool,
) -> Result<(), Error> {
    let retired: Vec<String> = lock(&ctx.retired).iter().cloned().collect();
    let mut first_error = None;
    for secret in retired {
        let result = match ctx.memory.known(ns, &secret) {
            Some(copy) => remove_known(ctx, api, ns, &secret, &copy).await,
            None if verify => remove_copy(ctx, api, ns, &secret).await,
            None => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 403 => {
                // The RBAC for a removed rule usually goes with it: nothing more we can do.
                tracing::info!(namespace = %ns, %secret, "not allowed to remove a copy of a secret no longer configured; delete it by hand");
                lock(&ctx.retired).remove(&secret);
                ctx.memory.forget(ns, &secret);
            }
            Err(error) => {
                ctx.metrics.sync_error(error.metric_label());
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes a copy we know, on the version we saw; if it changed since, reads it first.
async fn remove_known(
    ctx: &Context,
    api: &Api<Secret>,
    ns: &str,
    name: &str,
    copy: &Known,
) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some(copy.resource_version.to_string()),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            removed_copy(ctx, ns, name);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            ctx.memory.forget(ns, name);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            ctx.memory.forget(ns, name);
            remove_copy(ctx, api, ns, name).await
        }
        Err(error) => Err(error.into()),
    }
}

fn removed_copy(ctx: &Context, ns: &str, name: &str) {
    ctx.memory.forget(ns, name);
    ctx.metrics.sync_deleted(name);
    tracing::info!(namespace = %ns, secret = %name, "secret copy removed");
}

/// Reads the copy and deletes it if it is ours.
async fn remove_copy(ctx: &Context, api: &Api<Secret>, ns: &str, name: &str) -> Result<(), Error> {
    match api.get_opt(name).await? {
        Some(existing) if is_managed(&existing) => {
            delete_exactly(api, &existing).await?;
            removed_copy(ctx, ns, name);
            Ok(())
        }
        // Not ours (or not there): never touched.
        _ => Ok(()),
    }
}

/// Deletes the very object we read (uid and resourceVersion preconditions); gone already is
/// fine.
async fn delete_exactly(api: &Api<Secret>, secret: &Secret) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: secret.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&secret.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn report_conflict(ctx: &Context, existing: &Secret) {
    let name = existing.name_any();
    let ns = existing.namespace().unwrap_or_default();
    ctx.metrics.sync_conflict(&name);
    tracing::warn!(namespace = %ns, secret = %name, "a Secret of this name exists and is not managed by pullsecret-injector; left as it is");
    let note = format!(
        "Secret {ns}/{name} is not managed by pullsecret-injector (no label {MANAGED_BY_LABEL}={APP_NAME}), so it was not overwritten; Pods will use it as it is"
    );
    crate::kube_client::record_event(
        &ctx.recorder,
        &existing.object_ref(&()),
        None,
        EventType::Warning,
        ("PullSecretConflict", "Sync"),
        note,
    )
    .await;
}

/// The copy we want in `namespace`: same name, type and data as the source, our label, and
/// annotations naming the source and hashing its content.
pub fn copy_of(source: &Secret, source_namespace: &str, namespace: &str) -> Secret {
    let name = source.name_any();
    let mut annotations = BTreeMap::from([
        (
            SOURCE_ANNOTATION.to_owned(),
            format!("{source_namespace}/{name}"),
        ),
        (SOURCE_HASH_ANNOTATION.to_owned(), content_hash(source)),
    ]);
    // A minted secret's copies say where the credentials come from and when they expire.
    for key in [CREDENTIAL_SOURCE_ANNOTATION, EXPIRES_AT_ANNOTATION] {
        if let Some(value) = source.annotations().get(key) {
            annotations.insert(key.to_owned(), value.clone());
        }
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                APP_NAME.to_owned(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Secret::default()
    }
}

/// `sha256:<hex>` of the type and data (keys in order), to see a rotation at a glance.
pub fn content_hash(secret: &Secret) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.type_.as_deref().unwrap_or_default());
    for (key, ByteString(value)) in secret.data.iter().flatten() {
        hash.update([0]);
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(value);
    }
    let digest = hash.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn is_current(existing: &Secret, desired: &Secret) -> bool {
    let annotation = |s: &Secret| s.annotations().get(SOURCE_HASH_ANNOTATION).cloned();
    existing.type_ == desired.type_
        && existing.data == desired.data
        && annotation(existing) == annotation(desired)
        && existing.annotations().get(SOURCE_ANNOTATION)
            == desired.annotations().get(SOURCE_ANNOTATION)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
