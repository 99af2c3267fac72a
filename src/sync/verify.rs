//! Read-back on admission: when the webhook injects a secret into a Pod, the copies of that
//! Pod's namespace are read back right then, so a copy someone deleted is restored before the
//! kubelet pulls, not at the next resync. Rate-limited per namespace: a Deployment scaling to
//! a hundred Pods costs one read-back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use tokio::time::Instant;

/// Pending read-back requests the sync has not taken yet; more are dropped (the next resync
/// reads those namespaces anyway).
const QUEUE: usize = 1024;
/// Namespaces remembered for the rate limit before old entries are pruned.
const REMEMBERED: usize = 20_000;

/// The webhook's handle on the sync. Cheap to clone; [`Verifier::request`] never waits.
#[derive(Clone, Debug)]
pub struct Verifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
    tx: mpsc::Sender<String>,
}

impl Verifier {
    /// A verifier and the stream of namespaces the sync is to read back. A zero interval
    /// turns read-back on admission off.
    pub fn new(interval: Duration) -> (Self, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = (!interval.is_zero()).then(|| {
            Arc::new(Inner {
                interval,
                last: Mutex::default(),
                tx,
            })
        });
        (Self { inner }, rx)
    }

    /// One that asks for nothing: the webhook without the sync.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Asks for a read-back of `namespace`'s copies, unless one was asked within the interval.
    pub fn request(&self, namespace: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        let now = Instant::now();
        {
            let mut last = inner.last.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .get(namespace)
                .is_some_and(|at| now.duration_since(*at) < inner.interval)
            {
                return;
            }
            if last.len() >= REMEMBERED {
                last.retain(|_, at| now.duration_since(*at) < inner.interval);
            }
            last.insert(namespace.to_owned(), now);
        }
        // Full only when the sync is far behind; it reads every namespace at its slot anyway.
        let _ = inner.tx.clone().try_send(namespace.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn one_request_per_namespace_per_interval() {
        let (verifier, mut rx) = Verifier::new(Duration::from_secs(30));
        for _ in 0..100 {
            verifier.request("team-a");
        }
        verifier.request("team-b");
        assert_eq!(rx.next().await.as_deref(), Some("team-a"));
        assert_eq!(rx.next().await.as_deref(), Some("team-b"));
        assert!(rx.try_recv().is_err(), "nothing more within the interval");
        tokio::time::advance(Duration::from_secs(31)).await;
        verifier.request("team-a");
        assert_eq!(rx.next().await.as_deref(), Some("team-a"));
    }

    #[tokio::test]
    async fn a_zero_interval_or_no_sync_asks_for_nothing() {
        let (verifier, mut rx) = Verifier::new(Duration::ZERO);
        verifier.request("team-a");
        drop(verifier);
        assert_eq!(rx.next().await, None);
        Verifier::disabled().request("team-a");
    }
}
