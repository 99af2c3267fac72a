//! Secret sync: a copy of each configured source Secret in every opted-in namespace.
//!
//! A kube-rs Controller over Namespaces (metadata only). Sources are watched in our own
//! namespace only; in other namespaces we touch nothing but the configured names, by `get`,
//! `create`, server-side `apply` and `delete` (`get`, `patch` and `delete` can be limited with
//! RBAC `resourceNames`), so the injector never needs to list or watch anyone else's Secrets.
//!
//! What each copy costs:
//! - at start, every copy in an opted-in namespace is read (or created, on a fresh install);
//! - then nothing, until something changes: a rotated source is one write per copy, a newly
//!   labelled namespace one read or create per secret, an opted-out one a delete per copy;
//! - drift is found by reading every copy back once per `--resync-interval`, each namespace at
//!   its own slot, so the reads come at an even rate; and right away in a namespace where the
//!   webhook just injected a secret (`--verify-on-admission`, see [`Verifier`]), so a deleted
//!   copy is back before the kubelet pulls.
//!
//! The sync runs on the replica holding the leader Lease; the read-back on admission runs on
//! every replica. Two writers may still meet (a read-back, a leader change): every write is
//! an idempotent apply of the same content, guarded by a resourceVersion or uid
//! precondition, or a create that fails when the copy exists.

mod memory;
mod reconcile;
mod service_accounts;
mod sources;
mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

pub use reconcile::{
    Context, Error, NamespaceMeta, content_hash, copy_of, error_policy, is_opted_in, reconcile,
};
pub use service_accounts::ServiceAccounts;
pub use sources::Sources;
pub use verify::{Verifier, run as run_read_backs};

use crate::metrics::Metrics;
use crate::names::INJECT_LABEL;
use crate::watch::ConfigStore;

#[derive(Clone, Debug, Args)]
pub struct SyncArgs {
    /// How often every copy is read back to repair drift, each namespace at its own slot of
    /// the interval (events, rotations and new namespaces are handled at once regardless).
    /// Only the leader reads back, so this holds however many replicas run.
    #[arg(long, env = "PSI_RESYNC_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// When the webhook injects a secret into a Pod, read that namespace's copies back right
    /// then, and again at the end of this interval if more Pods came meanwhile (a read-back
    /// per namespace at the start and at the end of each interval at most); 0s turns it off.
    #[arg(long, env = "PSI_VERIFY_ON_ADMISSION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub verify_on_admission: Duration,
    /// Namespaces reconciled at once.
    #[arg(long, env = "PSI_SYNC_CONCURRENCY", default_value_t = 16)]
    pub sync_concurrency: u16,
}

impl Default for SyncArgs {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(600),
            verify_on_admission: Duration::from_secs(30),
            sync_concurrency: 16,
        }
    }
}

/// Runs the sync until `stop` completes, publishing the sources' store to `sources`.
pub async fn run(
    client: Client,
    namespace: String,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    args: SyncArgs,
    sources: Sources,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let stop = stop.shared();

    // The sources' watch runs on its own task, so its store fills whatever the controller
    // does; reconciles never wait for it (see below). The credential checker reads the same
    // store.
    let (changed_tx, changed_rx) = futures::channel::mpsc::channel::<()>(1);
    let source_task = {
        let (sources, client, namespace, config) = (
            sources.clone(),
            client.clone(),
            namespace.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            sources
                .watch(client, &namespace, |secret| {
                    if config.load().secrets().contains(&secret.name_any()) {
                        // Full means a reconcile of everything is pending already.
                        let _ = changed_tx.clone().try_send(());
                    }
                })
                .await
        })
    };

    // Before the first list of sources every source would look missing: waited for once,
    // here, before any reconcile.
    let sources = tokio::select! {
        store = sources.ready() => store,
        () = stop.clone() => {
            source_task.abort();
            return;
        }
    };
    tracing::info!(
        sources = sources.state().len(),
        "source Secrets listed; reconciling namespaces"
    );

    // The ServiceAccounts `serviceAccounts:` names: their watch runs beside the controller
    // and asks it to reconcile the namespace of each one that changes.
    let service_accounts = ServiceAccounts::default();
    let (sa_tx, sa_rx) = futures::channel::mpsc::channel(1024);
    let sa_task = {
        let (watched, client, config) = (service_accounts.clone(), client.clone(), config.clone());
        tokio::spawn(async move { watched.watch(client, config, sa_tx).await })
    };

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            namespace,
            config.clone(),
            sources,
            metrics,
            args.resync_interval,
        )
        .with_service_accounts(service_accounts),
    );

    let config_changes = {
        let ctx = ctx.clone();
        let config = config.clone();
        let mut previous = config.load().secrets().to_vec();
        futures::stream::unfold(config.subscribe(), |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        })
        .map(move |()| {
            let current = config.load().secrets().to_vec();
            ctx.config_changed(&previous, &current);
            previous = current;
        })
    };

    let (namespaces, ns_writer) = reflector::store::<NamespaceMeta>();
    let deleted_ctx = ctx.clone();
    let namespace_events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(slim_namespace)
    .reflect(ns_writer)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(ns)) = event {
            deleted_ctx.namespace_deleted(&ns.name_any());
        }
    })
    .applied_objects();

    Controller::for_stream(namespace_events, namespaces)
        .with_config(controller::Config::default().concurrency(args.sync_concurrency.max(1)))
        .reconcile_all_on(futures::stream::select(changed_rx, config_changes))
        .reconcile_on(sa_rx)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "sync controller event");
            }
        })
        .await;
    source_task.abort();
    sa_task.abort();
    tracing::info!("secret sync stopped");
}

/// What the namespaces' store keeps: the name, our label and the deletion mark, all reconcile
/// reads (the watcher has taken the resourceVersion to resume from before this runs).
fn slim_namespace(ns: &mut NamespaceMeta) {
    let meta = &mut ns.metadata;
    let opt_in = meta
        .labels
        .as_mut()
        .and_then(|labels| labels.remove_entry(INJECT_LABEL));
    meta.labels = opt_in.map(|(k, v)| std::collections::BTreeMap::from([(k, v)]));
    meta.annotations = None;
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.owner_references = None;
    meta.uid = None;
    meta.resource_version = None;
    meta.creation_timestamp = None;
    meta.generation = None;
}
