//! Live reload of the mounted files: the config (a ConfigMap) and the serving certificate
//! (a Secret). One loop serves both; a file that fails to load is logged and counted, and the
//! last good one stays in force.
//!
//! The kubelet updates such a volume by writing a new timestamped directory and swapping the
//! `..data` symlink, so a watch on the file itself never fires. We watch each file's parent
//! directory instead, and also poll on an interval in case events are lost (some volume types
//! send none). Callers compare contents, so a spurious notice costs one read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::tls::{self, CertResolver};

/// How long to let a burst of events (the kubelet's several renames) settle before reporting.
const SETTLE: Duration = Duration::from_millis(100);

struct FileWatch {
    // Kept alive for as long as events are wanted.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    poll: tokio::time::Interval,
}

impl FileWatch {
    fn new(files: &[PathBuf], poll: Duration) -> notify::Result<Self> {
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    // A full channel already holds a notice: nothing is lost by dropping this one.
                    let _ = tx.try_send(());
                }
            })?;
        let dirs: BTreeSet<&Path> = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            })
            .collect();
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let mut poll = tokio::time::interval(poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        Ok(Self {
            _watcher: watcher,
            events,
            poll,
        })
    }

    /// Waits until something may have changed. Returns false only if the watcher is gone.
    async fn changed(&mut self) -> bool {
        tokio::select! {
            event = self.events.recv() => {
                if event.is_none() {
                    return false;
                }
                tokio::time::sleep(SETTLE).await;
                while self.events.try_recv().is_ok() {}
            }
            _ = self.poll.tick() => {}
        }
        true
    }
}

/// Reads and parses the config file, logging its warnings.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let (config, warnings) = Config::load(path)?;
    for w in &warnings {
        tracing::warn!(warning = %w, "config warning");
    }
    Ok(config)
}

/// The config in force, swapped atomically on reload; readers never wait.
#[derive(Debug)]
pub struct ConfigStore {
    current: ArcSwap<Config>,
    /// Counts reloads, so the sync can react to a new config.
    generation: watch::Sender<u64>,
}

impl ConfigStore {
    pub fn new(config: Config) -> Self {
        Self {
            current: ArcSwap::from_pointee(config),
            generation: watch::Sender::new(0),
        }
    }

    pub fn load(&self) -> Arc<Config> {
        self.current.load_full()
    }

    pub fn store(&self, config: Config) {
        self.current.store(Arc::new(config));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Notified after every [`store`](Self::store).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// What the reload loop keeps current.
#[derive(Clone)]
pub struct Reload {
    pub config_path: PathBuf,
    pub config: Arc<ConfigStore>,
    /// The certificate and key files and the resolver serving them; none for a self-signed
    /// certificate.
    pub certificate: Option<(PathBuf, PathBuf, Arc<CertResolver>)>,
    pub metrics: Arc<Metrics>,
    /// How often the files are re-read besides file events.
    pub poll: Duration,
}

impl Reload {
    /// Re-reads the files whenever one changes, until the watcher goes away.
    pub async fn run(self) {
        let mut files = vec![self.config_path.clone()];
        if let Some((cert, key, _)) = &self.certificate {
            files.extend([cert.clone(), key.clone()]);
        }
        let mut watch = match FileWatch::new(&files, self.poll) {
            Ok(w) => w,
            Err(error) => {
                tracing::error!(%error, "cannot watch the config and certificate files; reloads are off");
                return;
            }
        };
        let read =
            |paths: &[PathBuf]| -> Vec<_> { paths.iter().map(|p| std::fs::read(p).ok()).collect() };
        let mut last = read(&files);
        while watch.changed().await {
            let now = read(&files);
            if now[0] != last[0] {
                self.reload_config();
            }
            if now[1..] != last[1..] {
                self.reload_certificate();
            }
            last = now;
        }
    }

    fn reload_config(&self) {
        let path = self.config_path.display();
        match load_config(&self.config_path) {
            Ok(config) => {
                tracing::info!(rules = config.rules().len(), %path, "config reloaded");
                self.config.store(config);
                self.metrics.config_reload(true);
            }
            Err(error) => {
                tracing::error!(%error, %path, "config reload failed; keeping the last good config");
                self.metrics.config_reload(false);
            }
        }
    }

    fn reload_certificate(&self) {
        let Some((cert, key, resolver)) = &self.certificate else {
            return;
        };
        match tls::load_files(cert, key) {
            Ok(pair) => {
                resolver.set(pair);
                self.metrics.certificate_reload(true);
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            }
            Err(error) => {
                self.metrics.certificate_reload(false);
                tracing::error!(%error, "certificate reload failed; keeping the current certificate");
            }
        }
    }
}
