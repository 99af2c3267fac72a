//! The `serve` command: loads config and certificates, starts the servers and the supervised
//! tasks (the reload loop; with a cluster, the leader election, the leader's background work
//! and the read-back on admission), and runs the shutdown sequence on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::credential_check::{CheckArgs, Checker};
use crate::credentials::http::HttpClient;
use crate::kube_client::{self, KubeArgs};
use crate::leader::{Election, LeaderArgs};
use crate::metrics::Metrics;
use crate::refresh::{CredentialArgs, Refresher};
use crate::repair::{self, RepairArgs};
use crate::server::{self, AppState, Limits};
use crate::supervise::Tasks;
use crate::sync::{self, Sources, SyncArgs, Verifier};
use crate::tls::{self, CertResolver, TlsArgs};
use crate::watch::{ConfigStore, Reload, load_config};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Registries config (YAML). Reloaded when it changes.
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Address of the HTTPS webhook port.
    #[arg(long, env = "PSI_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP metrics port (`GET /metrics`).
    #[arg(long, env = "PSI_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Namespace holding the source Secrets [default: the pod's own namespace, else `default`].
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
    /// Run the webhook only, without the Secret sync.
    #[arg(long, env = "PSI_NO_SYNC")]
    pub no_sync: bool,
    #[command(flatten)]
    pub sync: SyncArgs,
    #[command(flatten)]
    pub repair: RepairArgs,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[command(flatten)]
    pub checks: CheckArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    /// After SIGTERM, keep serving (unready) this long so load balancers and the API server
    /// stop sending new connections, before draining.
    #[arg(long, env = "PSI_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,
    /// Longest time to let in-flight requests finish once draining starts.
    #[arg(long, env = "PSI_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Largest AdmissionReview body accepted (bytes); larger ones get 413.
    #[arg(long, env = "PSI_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Time limit to receive a request body (the answer itself takes microseconds); slower
    /// bodies get 408.
    #[arg(long, env = "PSI_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// How often mounted files (config, certificates) are re-read, besides file events.
    #[arg(long, env = "PSI_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
}

/// Serves until a signal drains the process; on the multi-threaded runtime `cli` starts.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    let signals = Signals::new()?;
    // Cancelled when draining starts: the servers drain, every task stops, the Lease is
    // given up.
    let shutdown = CancellationToken::new();
    let mut tasks = Tasks::new(shutdown.clone(), metrics.clone());

    // Load what the webhook answers with, and keep it current.
    let config = load_config(&args.config)?;
    tracing::info!(rules = config.rules().len(), path = %args.config.display(), "config loaded");
    let store = Arc::new(ConfigStore::new(config));
    let resolver = Arc::new(CertResolver::new(args.tls.load()?));
    let tls_config = tls::server_config(resolver.clone())?;
    let reload = Reload {
        config_path: args.config.clone(),
        config: store.clone(),
        certificate: args
            .tls
            .files()
            .map(|(cert, key)| (cert.to_owned(), key.to_owned(), resolver)),
        metrics: metrics.clone(),
        poll: args.reload_interval,
    };
    tasks.spawn("reload", move |stop| {
        let reload = reload.clone();
        async move {
            tokio::select! {
                () = reload.run() => {}
                () = stop.cancelled() => {}
            }
        }
    });

    // Bind both ports before anything is reported ready.
    let listener = server::bind(args.listen).await?;
    let metrics_listener = server::bind(args.metrics_listen).await?;
    let listen = listener.local_addr().unwrap_or(args.listen);
    let metrics_listen = metrics_listener.local_addr().unwrap_or(args.metrics_listen);

    let verifier = start_cluster_tasks(&args, &store, &metrics, &mut tasks).await;

    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        ..Limits::default()
    };
    let ready = Arc::new(AtomicBool::new(false));
    let app = server::router(
        AppState {
            config: store,
            metrics: metrics.clone(),
            ready: ready.clone(),
            verifier,
        },
        &limits,
    );
    let metrics_task = tokio::spawn(server::serve_metrics(
        metrics_listener,
        metrics,
        shutdown.clone().cancelled_owned(),
    ));

    ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %listen,
        metrics = %metrics_listen,
        ready_ms = started.elapsed().as_millis() as u64,
        "serving"
    );
    tokio::spawn(shutdown_on_signals(
        signals,
        ready,
        args.shutdown_delay,
        shutdown.clone(),
    ));

    let drained = server::serve_tls(
        listener,
        tls_config,
        app,
        limits,
        shutdown.clone().cancelled_owned(),
        args.shutdown_grace,
    )
    .await;
    if !drained {
        tracing::warn!(grace = ?args.shutdown_grace, "connections still open after the grace period; exiting anyway");
    }
    shutdown.cancel();
    tasks.join(args.shutdown_grace).await;
    let _ = metrics_task.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The first signal turns us unready and, after `delay`, starts the drain; another one at any
/// point exits at once.
async fn shutdown_on_signals(
    mut signals: Signals,
    ready: Arc<AtomicBool>,
    delay: Duration,
    shutdown: CancellationToken,
) {
    signals.recv().await;
    ready.store(false, Ordering::Release);
    tracing::info!(?delay, "signal received: unready; draining after the delay");
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = signals.recv() => abort(),
    }
    shutdown.cancel();
    signals.recv().await;
    abort();
}

fn abort() -> ! {
    tracing::warn!("second signal: exiting now");
    std::process::exit(130)
}

/// What every cluster task is built from; cloned into each task's factory.
#[derive(Clone)]
struct Cluster {
    client: kube::Client,
    /// The release namespace: the sources, the minted secrets and the Lease live here.
    namespace: String,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    /// The sync's watch of the sources, read by the checker too.
    sources: Sources,
}

/// Starts the cluster work, each part when it is wanted and a cluster answers: the leader
/// election, and under it the sync, the refresher, the checker and the repairer; on every
/// replica the read-back on admission. Returns the webhook's handle on the read-backs.
async fn start_cluster_tasks(
    args: &ServeArgs,
    store: &Arc<ConfigStore>,
    metrics: &Arc<Metrics>,
    tasks: &mut Tasks,
) -> Verifier {
    if args.no_sync {
        tracing::info!("secret sync is off (--no-sync)");
    }
    if args.no_sync && !args.repair.enabled {
        return Verifier::disabled();
    }
    let client = match kube_client::connect(&args.kube, metrics.clone()).await {
        Ok(client) => client,
        Err(error) => {
            tracing::info!(%error, "no cluster reachable: the webhook runs alone, without the secret sync, credential renewal and checks, or the repair");
            return Verifier::disabled();
        }
    };
    let cluster = Cluster {
        client,
        namespace: args.namespace.clone().unwrap_or_else(own_namespace),
        config: store.clone(),
        metrics: metrics.clone(),
        sources: Sources::default(),
    };
    let (election, leadership) = Election::new(
        cluster.client.clone(),
        cluster.namespace.clone(),
        args.leader.clone(),
        metrics.clone(),
    );
    let election = Arc::new(election);
    tasks.spawn("leader-election", move |stop| {
        let election = election.clone();
        async move { election.run(stop).await }
    });

    if args.repair.enabled {
        let (c, repair) = (cluster.clone(), args.repair.clone());
        tasks.spawn_leading("repair", leadership.clone(), move |stop| {
            let c = c.clone();
            repair::run(
                c.client,
                c.config,
                c.metrics,
                repair.clone(),
                stop.cancelled_owned(),
            )
        });
    }
    if args.no_sync {
        return Verifier::disabled();
    }
    // Minted secrets' sources are written here and copied by the sync like any other.
    match HttpClient::new(Duration::from_secs(30)) {
        Ok(http) => {
            let (c, h, credentials) = (cluster.clone(), http.clone(), args.credentials.clone());
            tasks.spawn_leading("refresh", leadership.clone(), move |stop| {
                let c = c.clone();
                Refresher::new(
                    c.client,
                    c.namespace,
                    c.config,
                    c.metrics,
                    h.clone(),
                    credentials.clone(),
                )
                .run(stop.cancelled_owned())
            });
            let (c, checks) = (cluster.clone(), args.checks.clone());
            tasks.spawn_leading("credential-check", leadership.clone(), move |stop| {
                let c = c.clone();
                Checker::new(
                    &c.client,
                    c.namespace,
                    c.sources,
                    c.config,
                    c.metrics,
                    http.clone(),
                    &checks,
                )
                .run(stop.cancelled_owned())
            });
        }
        Err(error) => {
            tracing::error!(%error, "cannot load the system's TLS roots: minted secrets are not renewed");
        }
    }
    tracing::info!(namespace = %cluster.namespace, "secret sync starts on the leader");
    let (c, sync) = (cluster.clone(), args.sync.clone());
    tasks.spawn_leading("sync", leadership, move |stop| {
        let c = c.clone();
        sync::run(
            c.client,
            c.namespace,
            c.config,
            c.metrics,
            sync.clone(),
            c.sources,
            stop.cancelled_owned(),
        )
    });

    let (verifier, requests) = Verifier::new(args.sync.verify_on_admission);
    // One receiver for the task's every start.
    let requests = Arc::new(tokio::sync::Mutex::new(requests));
    tasks.spawn("read-back", move |stop| {
        let (c, requests) = (cluster.clone(), requests.clone());
        async move {
            let mut requests = requests.lock().await;
            let requests = (&mut *requests).take_until(stop.cancelled());
            sync::run_read_backs(c.client, c.namespace, c.config, c.metrics, requests).await;
        }
    });
    verifier
}

/// The namespace of the pod we run in, as the ServiceAccount mount tells it.
fn own_namespace() -> String {
    let path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
    std::fs::read_to_string(path)
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// SIGTERM and SIGINT, registered once so no signal between two waits is lost.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
