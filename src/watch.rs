//! Change notices for files mounted from ConfigMaps and Secrets.
//!
//! The kubelet updates such a volume by writing a new timestamped directory and swapping the
//! `..data` symlink, so a watch on the file itself never fires. We watch each file's parent
//! directory instead, and also poll on an interval in case events are lost (some volume types
//! send none). Callers compare contents, so a spurious notice costs one read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to let a burst of events (the kubelet's several renames) settle before reporting.
const SETTLE: Duration = Duration::from_millis(100);

pub struct FileWatch {
    // Kept alive for as long as events are wanted.
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    poll: tokio::time::Interval,
}

impl FileWatch {
    pub fn new(files: &[PathBuf], poll: Duration) -> notify::Result<Self> {
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
    pub async fn changed(&mut self) -> bool {
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
