//! The `serve` command: loads config and certificates, starts the servers and the sync, and
//! runs the shutdown sequence on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::cli::{ServeArgs, TlsArgs};
use crate::config::{Config, ConfigStore};
use crate::kube_client;
use crate::metrics::Metrics;
use crate::server::{self, AppState, Limits};
use crate::sync::{self, Verifier};
use crate::tls::{self, CertResolver};

/// Hosts the self-signed certificate is made for.
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    let mut signals = Signals::new()?;

    let (config, warnings) = Config::load(&args.config)?;
    for w in &warnings {
        tracing::warn!(warning = %w, "config warning");
    }
    tracing::info!(rules = config.rules().len(), path = %args.config.display(), "config loaded");
    let store = Arc::new(ConfigStore::new(config));
    tokio::spawn(
        store
            .clone()
            .watch(args.config.clone(), metrics.clone(), args.reload_interval),
    );

    let resolver = Arc::new(CertResolver::new(load_certificate(&args.tls)?));
    if let (Some(cert), Some(key)) = (&args.tls.tls_cert, &args.tls.tls_key) {
        tokio::spawn(resolver.clone().watch(
            cert.clone(),
            key.clone(),
            metrics.clone(),
            args.reload_interval,
        ));
    }

    let listener = server::bind(args.listen).await?;
    let metrics_listener = server::bind(args.metrics_listen).await?;
    let listen = listener.local_addr().unwrap_or(args.listen);
    let metrics_listen = metrics_listener.local_addr().unwrap_or(args.metrics_listen);
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: args.request_timeout,
        ..Limits::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let verifier = start_sync(&args, &store, &metrics, stopped(stop_rx.clone())).await;

    let ready = Arc::new(AtomicBool::new(false));
    let app = server::router(
        AppState {
            config: store.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
            verifier,
        },
        &limits,
    );
    let metrics_task = tokio::spawn(server::serve_metrics(
        metrics_listener,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));

    ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %listen,
        metrics = %metrics_listen,
        ready_ms = started.elapsed().as_millis() as u64,
        "serving"
    );

    // One task owns the signals: the first turns us unready and, after the delay, starts the
    // drain; another one at any point exits at once.
    let shutdown_delay = args.shutdown_delay;
    let signal_ready = ready.clone();
    let signal_stop = stop_tx.clone();
    tokio::spawn(async move {
        signals.recv().await;
        signal_ready.store(false, Ordering::Release);
        tracing::info!(delay = ?shutdown_delay, "signal received: unready; draining after the delay");
        tokio::select! {
            () = tokio::time::sleep(shutdown_delay) => {}
            () = signals.recv() => abort(),
        }
        let _ = signal_stop.send(true);
        signals.recv().await;
        abort();
    });

    let tls_config = tls::server_config(resolver);
    let drained = server::serve_tls(
        listener,
        tls_config,
        app,
        limits,
        stopped(stop_rx.clone()),
        args.shutdown_grace,
    )
    .await;
    if !drained {
        tracing::warn!(grace = ?args.shutdown_grace, "connections still open after the grace period; exiting anyway");
    }
    let _ = stop_tx.send(true);
    let _ = metrics_task.await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Starts the secret sync when it is wanted and a cluster answers; the webhook's handle on it.
async fn start_sync(
    args: &ServeArgs,
    store: &Arc<ConfigStore>,
    metrics: &Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Verifier {
    if args.no_sync {
        tracing::info!("secret sync is off (--no-sync)");
        return Verifier::disabled();
    }
    let namespace = args.namespace.clone().unwrap_or_else(own_namespace);
    match kube_client::connect(&args.kube, metrics.clone()).await {
        Ok(client) => {
            tracing::info!(%namespace, "secret sync starting");
            let (verifier, requests) = Verifier::new(args.sync.verify_on_admission);
            tokio::spawn(sync::run(
                client,
                namespace,
                store.clone(),
                metrics.clone(),
                args.sync.clone(),
                requests,
                stop,
            ));
            verifier
        }
        Err(error) => {
            tracing::info!(%error, "no cluster reachable: the webhook runs alone, without the secret sync");
            Verifier::disabled()
        }
    }
}

fn abort() -> ! {
    tracing::warn!("second signal: exiting now");
    std::process::exit(130)
}

/// The serving certificate: from files, or a fresh self-signed one for local use.
fn load_certificate(args: &TlsArgs) -> anyhow::Result<rustls::sign::CertifiedKey> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return Ok(tls::load_files(cert, key)?);
    }
    let pair = tls::self_signed(LOCAL_HOSTS)?;
    let ca_path = args.self_signed_ca.clone().unwrap_or_else(|| {
        std::env::temp_dir()
            .join("pullsecret-injector")
            .join("ca.crt")
    });
    write_file(&ca_path, pair.ca_pem.as_bytes())?;
    tracing::info!(
        ca = %ca_path.display(),
        hosts = ?LOCAL_HOSTS,
        "no --tls-cert given: serving a self-signed certificate; trust its CA with e.g. curl --cacert {}",
        ca_path.display()
    );
    Ok(tls::certified_key(
        pair.cert_pem.as_bytes(),
        pair.key_pem.as_bytes(),
        "self-signed certificate",
        "self-signed key",
    )?)
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The namespace of the pod we run in, as the ServiceAccount mount tells it.
fn own_namespace() -> String {
    let path = PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/namespace");
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
