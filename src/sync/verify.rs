//! Read-back on admission: when the webhook injects a secret into a Pod, the copies of that
//! Pod's namespace are read back right then, so a copy someone deleted is restored before the
//! kubelet pulls, not at the next resync. Every replica does this for the Pods it admits,
//! leader or not: it is one `get` per configured secret, and a `create` from the source only
//! for a copy that is gone (content drift is the leader's sync's to mend).
//!
//! Rate-limited per namespace with a leading and a trailing edge: the first request is read
//! back at once, and any number of requests inside the interval cost one more read-back at
//! its end, so a copy deleted just after a read-back is back within one interval at worst and
//! a Deployment scaling to a hundred Pods costs two.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::reconcile::{copy_of, is_managed};
use crate::metrics::Metrics;
use crate::names::FIELD_MANAGER;
use crate::watch::ConfigStore;

/// Pending read-back requests not taken yet; more are dropped (the leader's periodic
/// read-back reaches those namespaces anyway).
const QUEUE: usize = 1024;
/// Namespaces remembered for the rate limit before old entries are pruned.
const REMEMBERED: usize = 20_000;
/// Namespaces read back at once.
const CONCURRENCY: usize = 8;

/// The webhook's handle on the read-backs. Cheap to clone; [`Verifier::request`] never waits.
#[derive(Clone, Debug)]
pub struct Verifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    interval: Duration,
    namespaces: Mutex<HashMap<String, Window>>,
    tx: mpsc::Sender<String>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    /// When the last read-back was sent.
    sent: Instant,
    /// A read-back is scheduled for the end of the window.
    trailing: bool,
}

impl Verifier {
    /// A verifier and the stream of namespaces to read back (see [`run`]). A zero interval
    /// turns read-back on admission off.
    pub fn new(interval: Duration) -> (Self, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = (!interval.is_zero()).then(|| {
            Arc::new(Inner {
                interval,
                namespaces: Mutex::default(),
                tx,
            })
        });
        (Self { inner }, rx)
    }

    /// One that asks for nothing: the webhook without a cluster.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Asks for a read-back of `namespace`'s copies: now if none was sent within the
    /// interval, else once at the end of the interval. Must be called within a tokio runtime.
    pub fn request(&self, namespace: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        let now = Instant::now();
        let due_at = {
            let mut windows = inner.lock();
            if windows.len() >= REMEMBERED {
                windows.retain(|_, w| w.trailing || now.duration_since(w.sent) < inner.interval);
            }
            match windows.get_mut(namespace) {
                Some(w) if now.duration_since(w.sent) < inner.interval => {
                    if w.trailing {
                        return;
                    }
                    w.trailing = true;
                    Some(w.sent + inner.interval)
                }
                _ => {
                    windows.insert(
                        namespace.to_owned(),
                        Window {
                            sent: now,
                            trailing: false,
                        },
                    );
                    None
                }
            }
        };
        match due_at {
            None => inner.send(namespace),
            Some(at) => {
                let inner = inner.clone();
                let namespace = namespace.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    if let Some(w) = inner.lock().get_mut(&namespace) {
                        *w = Window {
                            sent: Instant::now(),
                            trailing: false,
                        };
                    }
                    inner.send(&namespace);
                });
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, namespace: &str) {
        // Full only when the read-backs are far behind.
        let _ = self.tx.clone().try_send(namespace.to_owned());
    }
}

/// Reads back the namespaces the webhook asks for until the stream ends.
pub async fn run(
    client: Client,
    own_namespace: String,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    requests: impl futures::Stream<Item = String>,
) {
    let own = own_namespace.as_str();
    let (client, config, metrics) = (&client, &config, &metrics);
    requests
        .for_each_concurrent(CONCURRENCY, |ns| async move {
            let span = tracing::info_span!("read_back", namespace = %ns);
            read_back(client, own, config, metrics, &ns)
                .instrument(span)
                .await;
        })
        .await;
}

/// Restores every configured copy missing from `ns`, from its source in `own_namespace`.
async fn read_back(
    client: &Client,
    own_namespace: &str,
    config: &ConfigStore,
    metrics: &Metrics,
    ns: &str,
) {
    if ns == own_namespace {
        return;
    }
    let copies: Api<Secret> = Api::namespaced(client.clone(), ns);
    let sources: Api<Secret> = Api::namespaced(client.clone(), own_namespace);
    let mut all_read = true;
    for name in config.load().secrets() {
        let span = tracing::info_span!("copy", secret = %name);
        if let Err(error) = restore(&copies, &sources, own_namespace, ns, name, metrics)
            .instrument(span)
            .await
        {
            all_read = false;
            metrics.sync_error(error.metric_label());
            tracing::warn!(secret = %name, %error, "read-back on admission failed");
        }
    }
    if all_read {
        metrics.sync_verified("admission");
    }
}

async fn restore(
    copies: &Api<Secret>,
    sources: &Api<Secret>,
    own_namespace: &str,
    ns: &str,
    name: &str,
    metrics: &Metrics,
) -> Result<(), super::Error> {
    if let Some(existing) = copies.get_opt(name).await? {
        if !is_managed(&existing) {
            tracing::debug!("a Secret of this name is not ours; left as it is");
        }
        return Ok(());
    }
    let Some(source) = sources.get_opt(name).await? else {
        return Err(super::Error::MissingSource {
            namespace: own_namespace.to_owned(),
            name: name.to_owned(),
        });
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match copies
        .create(&params, &copy_of(&source, own_namespace, ns))
        .await
    {
        Ok(created) => {
            metrics.sync_applied(&created.name_any());
            tracing::info!("deleted secret copy restored on admission");
            Ok(())
        }
        // Someone (the leader's sync, another replica) made it meanwhile.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_leading_and_a_trailing_read_back_per_namespace_per_interval() {
        let (verifier, mut rx) = Verifier::new(Duration::from_secs(30));
        let start = Instant::now();
        for _ in 0..100 {
            verifier.request("team-a");
        }
        verifier.request("team-b");
        assert_eq!(rx.next().await.as_deref(), Some("team-a"));
        assert_eq!(rx.next().await.as_deref(), Some("team-b"));
        assert!(
            rx.try_recv().is_err(),
            "the rest waits for the window's end"
        );

        // The hundred requests inside the window cost one read-back at its end.
        assert_eq!(rx.next().await.as_deref(), Some("team-a"));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            rx.try_recv().is_err(),
            "one trailing read-back, not one per request"
        );

        // The trailing read-back opened a new window: a request inside it waits again.
        verifier.request("team-a");
        assert!(rx.try_recv().is_err());
        assert_eq!(rx.next().await.as_deref(), Some("team-a"));
        assert_eq!(start.elapsed(), Duration::from_secs(60));

        // After a quiet window, the next request is read back at once.
        tokio::time::advance(Duration::from_secs(45)).await;
        verifier.request("team-a");
        assert_eq!(rx.try_recv().ok().as_deref(), Some("team-a"));
    }

    #[tokio::test]
    async fn a_zero_interval_or_no_cluster_asks_for_nothing() {
        let (verifier, mut rx) = Verifier::new(Duration::ZERO);
        verifier.request("team-a");
        drop(verifier);
        assert_eq!(rx.next().await, None);
        Verifier::disabled().request("team-a");
    }
}
