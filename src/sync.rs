//! Secret sync: a copy of each configured source Secret in every opted-in namespace.
//!
//! A kube-rs Controller over Namespaces. Sources are watched in our own namespace only; in
//! other namespaces we touch nothing but the configured names, by `get`, server-side
//! `apply` and `delete` (all three can be limited with RBAC `resourceNames`), so the
//! injector never needs to list or watch anyone else's Secrets. Drift is found by a periodic
//! `get` of each copy. Several replicas may run this at once: every write is an idempotent
//! apply of the same content, guarded by a resourceVersion or uid precondition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::config::ConfigStore;
use crate::metrics::Metrics;
use crate::names::{
    APP_NAME, FIELD_MANAGER, INJECT_LABEL, INJECT_LABEL_VALUE, MANAGED_BY_LABEL, SOURCE_ANNOTATION,
    SOURCE_HASH_ANNOTATION,
};

/// Secret types a pull secret may have.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// Namespaces reconciled at once: enough to converge fast, few enough not to flood the API
/// server when the injector starts in a cluster with thousands of namespaces.
const CONCURRENCY: u16 = 8;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
    resync: Duration,
    /// Secret names a previous config had and the current one does not: copies to remove.
    retired: Mutex<BTreeSet<String>>,
    /// Namespaces not opted in where we know no copy of ours is left, so events on them cost
    /// no API calls. Cleared when the config changes.
    clean: Mutex<BTreeSet<String>>,
    /// Consecutive failures per namespace, for backoff.
    failures: Mutex<HashMap<String, u32>>,
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
        let reporter = Reporter {
            controller: APP_NAME.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace,
            config,
            sources,
            metrics,
            resync,
            retired: Mutex::default(),
            clean: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Takes note of a new config: names it dropped are retired (their copies removed), and
    /// every namespace is looked at again.
    pub fn config_changed(&self, before: &[String], after: &[String]) {
        let mut retired = lock(&self.retired);
        for name in before.iter().filter(|n| !after.contains(n)) {
            retired.insert(name.clone());
        }
        for name in after {
            retired.remove(name);
        }
        lock(&self.clean).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not stop the sync: the data is still consistent enough.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A client from the kubeconfig or the in-cluster environment, checked to answer. Outside a
/// cluster an unreachable API server means: run the webhook alone.
pub async fn connect() -> anyhow::Result<Client> {
    let client = Client::try_default().await?;
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("the API server did not answer within 5s"))??;
    }
    Ok(client)
}

/// Runs the sync until `stop` completes.
pub async fn run(
    client: Client,
    namespace: String,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    resync: Duration,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (sources, writer) = reflector::store();
    let source_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let watched_config = config.clone();
    let source_changes = reflector::reflector(
        writer,
        watcher(source_api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .filter_map(move |secret| {
        let relevant = match secret {
            Ok(secret) => watched_config.load().secrets().contains(&secret.name_any()),
            Err(error) => {
                tracing::warn!(%error, "watch of the source Secrets failed; retrying");
                false
            }
        };
        futures::future::ready(relevant.then_some(()))
    });

    let ctx = Arc::new(Context::new(
        client.clone(),
        namespace,
        config.clone(),
        sources,
        metrics,
        resync,
    ));

    let config_changes = {
        let ctx = ctx.clone();
        let mut previous = config.load().secrets().to_vec();
        futures::stream::unfold(config.subscribe(), |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        })
        .map(move |()| {
            let current = ctx.config.load().secrets().to_vec();
            ctx.config_changed(&previous, &current);
            previous = current;
        })
    };

    let namespaces: Api<Namespace> = Api::all(client);
    Controller::new(namespaces, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .reconcile_all_on(futures::stream::select(source_changes, config_changes))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "sync controller event");
            }
        })
        .await;
    tracing::info!("secret sync stopped");
}

/// Whether a namespace opted in (and is not being deleted).
pub fn is_opted_in(ns: &Namespace) -> bool {
    ns.labels().get(INJECT_LABEL).map(String::as_str) == Some(INJECT_LABEL_VALUE)
        && ns.metadata.deletion_timestamp.is_none()
}

fn is_managed(secret: &Secret) -> bool {
    secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(APP_NAME)
}

/// Brings one namespace to the desired state: a copy of every configured source if it opted
/// in, none of ours otherwise.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.name_any();
    if name == ctx.namespace {
        // The sources live here; a copy would be the source itself.
        return Ok(Action::await_change());
    }
    let opted_in = is_opted_in(&ns);
    if !opted_in && lock(&ctx.clean).contains(&name) {
        return Ok(Action::await_change());
    }
    // Before the first list of sources arrives, every source would look missing.
    let _ = ctx.sources.wait_until_ready().await;

    let config = ctx.config.load();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &name);
    let mut first_error = None;
    for secret in config.secrets() {
        let result = if opted_in {
            ensure_copy(&ctx, &api, &name, secret).await
        } else {
            remove_copy(&ctx, &api, &name, secret).await
        };
        if let Err(error) = result {
            ctx.metrics.sync_error(error.metric_label());
            tracing::warn!(namespace = %name, secret = %secret, %error, "sync failed");
            first_error.get_or_insert(error);
        }
    }
    let retired: Vec<String> = lock(&ctx.retired).iter().cloned().collect();
    for secret in retired {
        match remove_copy(&ctx, &api, &name, &secret).await {
            Ok(()) => {}
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 403 => {
                // The RBAC for a removed rule usually goes with it: nothing more we can do.
                tracing::info!(namespace = %name, %secret, "not allowed to remove a copy of a secret no longer configured; delete it by hand");
                lock(&ctx.retired).remove(&secret);
            }
            Err(error) => {
                ctx.metrics.sync_error(error.metric_label());
                first_error.get_or_insert(error);
            }
        }
    }

    if let Some(error) = first_error {
        return Err(error);
    }
    lock(&ctx.failures).remove(&name);
    ctx.metrics.sync_success(unix_now());
    if opted_in {
        lock(&ctx.clean).remove(&name);
        Ok(Action::requeue(ctx.resync))
    } else {
        lock(&ctx.clean).insert(name);
        Ok(Action::await_change())
    }
}

/// Retries a failed namespace with exponential backoff, 1 s up to 5 min.
pub fn error_policy(ns: Arc<Namespace>, _error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = lock(&ctx.failures);
    let count = failures.entry(ns.name_any()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count - 1).min(9)).min(MAX_BACKOFF);
    Action::requeue(delay)
}

async fn ensure_copy(ctx: &Context, api: &Api<Secret>, ns: &str, name: &str) -> Result<(), Error> {
    let source = ctx
        .sources
        .get(&ObjectRef::new(name).within(&ctx.namespace))
        .ok_or_else(|| Error::MissingSource {
            namespace: ctx.namespace.clone(),
            name: name.to_owned(),
        })?;
    let type_ = source.type_.as_deref().unwrap_or_default();
    if type_ != DOCKER_CONFIG_JSON && type_ != DOCKER_CFG {
        return Err(Error::UnsupportedType {
            namespace: ctx.namespace.clone(),
            name: name.to_owned(),
            type_: type_.to_owned(),
        });
    }
    let mut desired = copy_of(&source, &ctx.namespace, ns);

    match api.get_opt(name).await? {
        Some(existing) if !is_managed(&existing) => {
            report_conflict(ctx, &existing).await;
            return Ok(());
        }
        Some(existing) if is_current(&existing, &desired) => return Ok(()),
        Some(existing) if existing.type_ != desired.type_ => {
            // A Secret's type cannot change in place: replace it.
            delete_exactly(api, &existing).await?;
        }
        Some(existing) => {
            // Apply only onto the copy we just read: if someone took it over meanwhile,
            // the API server refuses (409) and the next reconcile sees their change.
            desired.metadata.resource_version = existing.resource_version();
        }
        None => {}
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    ctx.metrics.sync_applied(name);
    tracing::info!(namespace = %ns, secret = %name, "secret copy applied");
    Ok(())
}

async fn remove_copy(ctx: &Context, api: &Api<Secret>, ns: &str, name: &str) -> Result<(), Error> {
    match api.get_opt(name).await? {
        Some(existing) if is_managed(&existing) => {
            delete_exactly(api, &existing).await?;
            ctx.metrics.sync_deleted(name);
            tracing::info!(namespace = %ns, secret = %name, "secret copy removed");
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
    let event = Event {
        type_: EventType::Warning,
        reason: "PullSecretConflict".to_owned(),
        note: Some(format!(
            "Secret {ns}/{name} is not managed by pullsecret-injector (no label {MANAGED_BY_LABEL}={APP_NAME}), so it was not overwritten; Pods will use it as it is"
        )),
        action: "Sync".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &existing.object_ref(&()))
        .await
    {
        tracing::debug!(%error, "cannot record the conflict event");
    }
}

/// The copy we want in `namespace`: same name, type and data as the source, our label, and
/// annotations naming the source and hashing its content.
pub fn copy_of(source: &Secret, source_namespace: &str, namespace: &str) -> Secret {
    let name = source.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                APP_NAME.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    SOURCE_ANNOTATION.to_owned(),
                    format!("{source_namespace}/{name}"),
                ),
                (SOURCE_HASH_ANNOTATION.to_owned(), content_hash(source)),
            ])),
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
