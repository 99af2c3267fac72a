//! Leader election on a `coordination.k8s.io` Lease in the release namespace, with
//! `kube-lease-manager` (kube-rs has none built in). The cluster-wide background work (the
//! sync and its read-backs, minting and renewal, credential checks, repair) runs on the
//! replica holding the Lease; the webhook and its read-back on admission run on every one.
//!
//! Timing: the holder renews every `duration - duration/3`; a replica that dies by SIGKILL is
//! replaced once its Lease expires (`duration`, 15 s by default, plus up to a second), and one
//! that stops on SIGTERM releases the Lease, so another takes it within about a second.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

#[derive(Clone, Debug, Args)]
pub struct LeaderArgs {
    /// Name of the Lease the replicas elect their leader on (in --namespace).
    #[arg(long, env = "PSI_LEASE_NAME", default_value = "pullsecret-injector")]
    pub lease_name: String,
    /// How long a Lease holds without renewal: a dead leader is replaced after this.
    #[arg(long, env = "PSI_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease [default: $POD_NAME, else the host name and the
    /// process id]. Must differ between replicas.
    #[arg(long, env = "PSI_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
}

impl Default for LeaderArgs {
    fn default() -> Self {
        Self {
            lease_name: "pullsecret-injector".to_owned(),
            lease_duration: Duration::from_secs(15),
            lease_identity: None,
        }
    }
}

impl LeaderArgs {
    fn identity(&self) -> String {
        let given = |id: Option<String>| id.filter(|id| !id.trim().is_empty());
        given(self.lease_identity.clone())
            .or_else(|| given(std::env::var("POD_NAME").ok()))
            .unwrap_or_else(|| {
                // Outside a Pod several replicas may share a host: the pid tells them apart.
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default();
                format!(
                    "{}-{}",
                    given(Some(host)).unwrap_or_else(|| "pullsecret-injector".into()),
                    std::process::id()
                )
            })
    }
}

/// Whether this replica leads, as the election last saw it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
}

impl Leadership {
    /// A leadership set by hand (tests, and a process that is alone by construction).
    pub fn manual(leading: bool) -> (Self, impl Fn(bool) + Send + Sync + 'static) {
        let (tx, rx) = watch::channel(leading);
        (Self { rx }, move |leading| {
            tx.send_replace(leading);
        })
    }

    pub fn is_leading(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once this replica leads; never, once the election has ended.
    pub async fn leading(&mut self) {
        if self.rx.wait_for(|leading| *leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this replica no longer leads (or the election has ended).
    pub async fn lost(&mut self) {
        let _ = self.rx.wait_for(|leading| !*leading).await;
    }
}

/// The election: its handle, and the task that runs it (to be supervised) until `shutdown`,
/// then releases the Lease.
pub struct Election {
    client: Client,
    namespace: String,
    args: LeaderArgs,
    identity: String,
    metrics: Arc<Metrics>,
    tx: Arc<watch::Sender<bool>>,
}

impl Election {
    pub fn new(
        client: Client,
        namespace: String,
        args: LeaderArgs,
        metrics: Arc<Metrics>,
    ) -> (Self, Leadership) {
        let (tx, rx) = watch::channel(false);
        let identity = args.identity();
        let election = Self {
            client,
            namespace,
            args,
            identity,
            metrics,
            tx: Arc::new(tx),
        };
        (election, Leadership { rx })
    }

    /// Campaigns until `shutdown`, publishing every change; on shutdown gives the Lease up.
    /// An API error ends the current term (the work stops: another replica may take over
    /// meanwhile) and the campaign starts again after a backoff.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        tracing::info!(lease = %self.args.lease_name, identity = %self.identity, "campaigning for the leader Lease");
        loop {
            let manager = tokio::select! {
                manager = self.manager() => manager,
                () = shutdown.cancelled() => return,
            };
            match manager {
                Ok(manager) => {
                    let stopped = self.campaign(&manager, &shutdown).await;
                    if stopped {
                        self.publish(false);
                        match manager.release().await {
                            Ok(()) => tracing::info!("leader Lease released"),
                            Err(error) => {
                                tracing::warn!(%error, "cannot release the leader Lease; it expires by itself")
                            }
                        }
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot set up the leader Lease");
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn manager(&self) -> kube_lease_manager::Result<LeaseManager> {
        let seconds = self.args.lease_duration.as_secs().max(3);
        LeaseManagerBuilder::new(self.client.clone(), &self.args.lease_name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(seconds)
            .with_grace((seconds / 3).max(1))
            // One field manager per replica: server-side apply then refuses a second
            // replica's claim on a holder another one owns, instead of last-writer-wins.
            .with_field_manager(format!("{}-{}", crate::names::FIELD_MANAGER, self.identity))
            .build()
            .await
    }

    /// One manager's campaign; true when it ended at shutdown, false on an API error.
    async fn campaign(&self, manager: &LeaseManager, shutdown: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return true,
                changed = manager.changed() => match changed {
                    Ok(leading) => self.publish(leading),
                    Err(error) => {
                        tracing::warn!(%error, "leader election failed; campaigning again");
                        self.publish(false);
                        return false;
                    }
                },
            }
        }
    }

    fn publish(&self, leading: bool) {
        let was = self.tx.send_replace(leading);
        self.metrics.leader(leading);
        if was != leading {
            if leading {
                tracing::info!(identity = %self.identity, "this replica leads: background work starts here");
            } else {
                tracing::info!(identity = %self.identity, "this replica no longer leads");
            }
        }
    }
}
