//! Every long-running task of `serve`, owned and watched. A task that returns or panics
//! before shutdown is logged at error, counted (`task_restarts_total{task}`) and started again
//! after a backoff: never a silent stop. Tasks that are the leader's work run only while this
//! replica holds the Lease ([`Tasks::spawn_leading`]).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::Leadership;
use crate::metrics::Metrics;

/// A run this long counts as healthy: the next failure starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

fn restart_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The tasks, and the token that tells them all to stop.
pub struct Tasks {
    set: JoinSet<()>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken, metrics: Arc<Metrics>) -> Self {
        Self {
            set: JoinSet::new(),
            shutdown,
            metrics,
        }
    }

    /// Runs `task` until shutdown, in a span named for it. `task` makes a fresh future for
    /// each start; the token it is given is cancelled at shutdown, and the future is to
    /// return then.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.metrics.task_started(name);
        let supervised = supervise(name, self.shutdown.clone(), self.metrics.clone(), task);
        self.set
            .spawn(supervised.instrument(tracing::info_span!("task", task = name)));
    }

    /// Like [`Tasks::spawn`], but `task` runs only while `leadership` says this replica
    /// leads: started when it gains the Lease, stopped (its token cancelled, and waited for)
    /// when it loses it.
    pub fn spawn_leading<F, Fut>(&mut self, name: &'static str, leadership: Leadership, task: F)
    where
        F: FnMut(CancellationToken) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, move |stop| {
            let leadership = leadership.clone();
            let task = task.clone();
            while_leading(name, leadership, stop, task)
        });
    }

    /// Waits for every task to end (after shutdown was asked), at most `grace`.
    pub async fn join(mut self, grace: Duration) {
        let all = async { while self.set.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                ?grace,
                "tasks still running after the grace period; leaving them"
            );
        }
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    mut task: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut delays = restart_delays();
    loop {
        let started = Instant::now();
        let outcome = AssertUnwindSafe(task(shutdown.child_token()))
            .catch_unwind()
            .await;
        if shutdown.is_cancelled() {
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            delays = restart_delays();
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(60));
        metrics.task_restarted(name);
        match outcome {
            Ok(()) => tracing::error!(?delay, "task stopped on its own; restarting it"),
            Err(panic) => {
                tracing::error!(
                    panic = panic_message(&*panic),
                    ?delay,
                    "task panicked; restarting it"
                )
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Runs `task` for each term this replica leads, until `stop`. Returns early only when the
/// task ends on its own while leading, which the supervisor reports.
async fn while_leading<F, Fut>(
    name: &'static str,
    mut leadership: Leadership,
    stop: CancellationToken,
    mut task: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = leadership.leading() => {}
            () = stop.cancelled() => return,
        }
        tracing::info!("leading: {name} starts");
        let term = stop.child_token();
        let mut run = std::pin::pin!(task(term.clone()));
        tokio::select! {
            () = &mut run => return,
            () = leadership.lost() => {
                term.cancel();
                run.await;
                tracing::info!("no longer leading: {name} stopped");
            }
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_or_returns_is_restarted_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone(), metrics.clone());
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        tasks.spawn("flaky", move |stop| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => panic!("boom"),
                    1 => {}
                    _ => stop.cancelled().await,
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(
            metrics
                .encode()
                .contains("pullsecret_injector_task_restarts_total{task=\"flaky\"} 2"),
            "{}",
            metrics.encode()
        );
        shutdown.cancel();
        tasks.join(Duration::from_secs(1)).await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "not restarted at shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leading_task_runs_only_while_leading() {
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (leadership, set) = Leadership::manual(false);
        let mut tasks = Tasks::new(shutdown.clone(), metrics);
        let running = Arc::new(AtomicUsize::new(0));
        let starts = Arc::new(AtomicUsize::new(0));
        let (r, s) = (running.clone(), starts.clone());
        tasks.spawn_leading("work", leadership, move |stop| {
            let (running, starts) = (r.clone(), s.clone());
            async move {
                starts.fetch_add(1, Ordering::SeqCst);
                running.fetch_add(1, Ordering::SeqCst);
                stop.cancelled().await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(running.load(Ordering::SeqCst), 0, "a follower does no work");
        set(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        set(false);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "stopped on losing the lease"
        );
        set(true);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(running.load(Ordering::SeqCst), 1);
        assert_eq!(
            starts.load(Ordering::SeqCst),
            2,
            "a fresh start for each term"
        );
        shutdown.cancel();
        tasks.join(Duration::from_secs(1)).await;
        assert_eq!(running.load(Ordering::SeqCst), 0);
    }
}
