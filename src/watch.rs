//! Live reload of the mounted files: the config (a ConfigMap) and the serving certificate
//! (a Secret). One loop serves both; a file that fails to load is logged and counted, and the
//! last good one stays in force.
//!
//! The kubelet updates such a volume by writing a new timestamped directory and swapping the
//! `..data` symlink, so a watch on the file itself never fires. We watch each file's parent
//! directory instead, and also poll on an interval in case events are lost (some volume types
//! send none). Callers compare contents, so a spurious notice costs one read. When the watcher
//! cannot start or stops, the poll alone keeps the files current.

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
/// Shortest poll interval: `--reload-interval 0s` would make tokio's interval panic.
const MIN_POLL: Duration = Duration::from_millis(100);

/// File events from the watcher, while it runs.
struct Notices {
    /// The watcher; events stop when it is dropped.
    _watcher: Box<dyn std::any::Any + Send>,
    events: mpsc::Receiver<()>,
}

/// How the file watcher is started (tests start one that fails).
type StartWatcher = fn(&[PathBuf]) -> notify::Result<Notices>;

/// notify's watcher (inotify on Linux) on the directory of each file.
fn notify_watcher(files: &[PathBuf]) -> notify::Result<Notices> {
    let (tx, events) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
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
    Ok(Notices {
        _watcher: Box::new(watcher),
        events,
    })
}

/// File events and a poll; the poll alone when the watcher cannot start or stops (no inotify
/// instances or watches left on the node, say), so reloads never stop.
struct FileWatch {
    notices: Option<Notices>,
    poll: tokio::time::Interval,
}

impl FileWatch {
    fn new(files: &[PathBuf], poll: Duration, start: StartWatcher) -> Self {
        let poll = poll.max(MIN_POLL);
        let notices = match start(files) {
            Ok(notices) => Some(notices),
            Err(error) => {
                tracing::warn!(%error, every = ?poll, "cannot watch the config and certificate files; polling them instead");
                None
            }
        };
        let mut poll = tokio::time::interval(poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        Self { notices, poll }
    }

    /// Waits until something may have changed.
    async fn changed(&mut self) {
        let Some(notices) = &mut self.notices else {
            self.poll.tick().await;
            return;
        };
        let stopped = tokio::select! {
            event = notices.events.recv() => {
                if event.is_some() {
                    tokio::time::sleep(SETTLE).await;
                    while notices.events.try_recv().is_ok() {}
                }
                event.is_none()
            }
            _ = self.poll.tick() => false,
        };
        if stopped {
            tracing::warn!(every = ?self.poll.period(), "the file watcher stopped; polling the config and certificate files instead");
            self.notices = None;
        }
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
    /// Re-reads the files whenever one may have changed: on file events, and every `poll`.
    /// Runs for good; without file events it polls.
    pub async fn run(self) {
        self.run_with(notify_watcher).await;
    }

    async fn run_with(self, start: StartWatcher) {
        let mut files = vec![self.config_path.clone()];
        if let Some((cert, key, _)) = &self.certificate {
            files.extend([cert.clone(), key.clone()]);
        }
        let mut watch = FileWatch::new(&files, self.poll, start);
        let read =
            |paths: &[PathBuf]| -> Vec<_> { paths.iter().map(|p| std::fs::read(p).ok()).collect() };
        let mut last = read(&files);
        loop {
            watch.changed().await;
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// Log lines, for a subscriber set on the test's thread (its runtime runs there too).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    const V1: &str = "registries:\n  - match: ghcr.io/acme\n    secret: ghcr-acme\n";
    const V2: &str = "registries:\n  - match: ghcr.io\n    secret: ghcr-all\n";

    /// Runs the reload loop with `start` as the watcher over a config file, rewrites the file,
    /// and waits for the new config; returns the metrics text and the logs.
    async fn reloads_with(start: StartWatcher) -> (String, String) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, V1).unwrap();
        let store = Arc::new(ConfigStore::new(load_config(&path).unwrap()));
        let metrics = Arc::new(Metrics::new());
        let reload = Reload {
            config_path: path.clone(),
            config: store.clone(),
            certificate: None,
            metrics: metrics.clone(),
            poll: Duration::from_millis(50),
        };
        let task = tokio::spawn(reload.run_with(start));
        // Let the loop read the first version before it changes.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Replaced whole, as the kubelet does, so no poll reads it half-written.
        let next = dir.path().join("config.yaml.next");
        std::fs::write(&next, V2).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let secret = || store.load().rules()[0].secret().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while secret() != "ghcr-all" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the changed config was never picked up; logs: {}",
                logs.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A few more polls: the loop keeps running, and says nothing more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished(), "the reload loop stopped");
        task.abort();
        (metrics.encode(), logs.text())
    }

    #[tokio::test]
    async fn a_watcher_that_cannot_start_leaves_the_poll_which_picks_up_a_change() {
        let (metrics, logs) =
            reloads_with(|_| Err(notify::Error::generic("inotify instances exhausted"))).await;
        assert!(
            metrics.contains("pullsecret_injector_config_reloads_total{result=\"success\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            logs.matches("cannot watch the config and certificate files; polling them instead")
                .count(),
            1,
            "logged once: {logs}"
        );
        assert!(logs.contains("WARN"), "{logs}");
        assert!(logs.contains("inotify instances exhausted"), "{logs}");
    }

    #[tokio::test]
    async fn a_watcher_that_stops_leaves_the_poll_which_picks_up_a_change() {
        // A watcher whose events end at once, as when its thread dies.
        let (metrics, logs) = reloads_with(|_| {
            let (_, events) = mpsc::channel(1);
            Ok(Notices {
                _watcher: Box::new(()),
                events,
            })
        })
        .await;
        assert!(
            metrics.contains("pullsecret_injector_config_reloads_total{result=\"success\"} 1"),
            "{metrics}"
        );
        assert_eq!(
            logs.matches("the file watcher stopped").count(),
            1,
            "logged once: {logs}"
        );
    }

    #[tokio::test]
    async fn a_zero_poll_interval_does_not_panic() {
        let watch = FileWatch::new(&[], Duration::ZERO, |_| Err(notify::Error::generic("off")));
        assert_eq!(watch.poll.period(), MIN_POLL);
    }
}
