//! The Kubernetes API client: kube-rs' own stack under a request budget that every request
//! and every retry passes through, so the injector never sends more than `--kube-api-qps`
//! (bursts of `--kube-api-burst`), and an API server that answers 429 (API Priority and
//! Fairness) with `Retry-After` pauses all of it, not just the one request.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::retry::Retry;
use tower::{BoxError, Layer, Service};

use crate::metrics::Metrics;

/// Longest pause a `Retry-After` may impose; the API server sends a few seconds.
const MAX_HOLD: Duration = Duration::from_secs(60);
/// Pause after a 429 that names no `Retry-After`.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Args)]
pub struct KubeArgs {
    /// Requests per second the injector may send to the Kubernetes API, at most.
    #[arg(long, env = "PSI_KUBE_API_QPS", default_value_t = 1000)]
    pub kube_api_qps: u32,
    /// Requests the injector may send at once above that rate.
    #[arg(long, env = "PSI_KUBE_API_BURST", default_value_t = 100)]
    pub kube_api_burst: u32,
}

impl Default for KubeArgs {
    fn default() -> Self {
        Self {
            kube_api_qps: 1000,
            kube_api_burst: 100,
        }
    }
}

/// A client from the kubeconfig or the in-cluster environment, checked to answer. Outside a
/// cluster an unreachable API server means: run the webhook alone.
pub async fn connect(args: &KubeArgs, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
    let mut config = kube::Config::infer().await?;
    // Retries go through the budget instead (see [`ApiLayer`]).
    config.default_retry = false;
    let client = ClientBuilder::try_from(config)?
        .with_layer(&ApiLayer::new(args, metrics))
        .build();
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .map_err(|_| anyhow::anyhow!("the API server did not answer within 5s"))??;
    }
    Ok(client)
}

/// The Event recorder every part uses: reported as `pullsecret-injector`, with the pod's name
/// as the instance.
pub fn recorder(client: &Client) -> Recorder {
    let reporter = Reporter {
        controller: crate::names::APP_NAME.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Recorder::new(client.clone(), reporter)
}

/// Publishes an Event on `reference` (with `related`, the object it concerns, if any); a
/// failure to record it is only logged at debug (Events are best effort).
pub async fn record_event(
    recorder: &Recorder,
    reference: &ObjectReference,
    related: Option<ObjectReference>,
    type_: EventType,
    (reason, action): (&str, &str),
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: related,
    };
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::debug!(
            %error,
            reason,
            kind = reference.kind.as_deref().unwrap_or_default(),
            namespace = reference.namespace.as_deref().unwrap_or_default(),
            name = reference.name.as_deref().unwrap_or_default(),
            "cannot record an event"
        );
    }
}

/// Records a Warning Event on the Secret `namespace/name`.
pub async fn warn_on_secret(
    recorder: &Recorder,
    (namespace, name): (&str, &str),
    (reason, action): (&str, &str),
    note: String,
) {
    use kube::Resource as _;
    let reference = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..kube::api::ObjectMeta::default()
        },
        ..Default::default()
    }
    .object_ref(&());
    record_event(
        recorder,
        &reference,
        None,
        EventType::Warning,
        (reason, action),
        note,
    )
    .await;
}

/// kube-rs' retries (429, 503, 504, honouring `Retry-After`) around the budget around the
/// service, so every attempt waits its turn. The buffer makes kube-rs' boxed stack cloneable,
/// as retries need.
#[derive(Clone, Debug)]
pub struct ApiLayer {
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl ApiLayer {
    pub fn new(args: &KubeArgs, metrics: Arc<Metrics>) -> Self {
        Self {
            budget: Arc::new(Budget::new(args.kube_api_qps, args.kube_api_burst)),
            metrics,
        }
    }
}

impl<S, B> Layer<S> for ApiLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = Retry<RetryPolicy, Budgeted<Buffer<Request<Body>, S::Future>>>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            retry_policy(),
            Budgeted {
                inner: Buffer::new(inner, 1024),
                budget: self.budget.clone(),
                metrics: self.metrics.clone(),
            },
        )
    }
}

/// A few quick retries, then the error goes to the sync, which backs off per namespace.
fn retry_policy() -> RetryPolicy {
    // `new` refuses only a minimum above the maximum; these constants are in order.
    RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(30), 8, true)
        .unwrap_or_default()
}

/// Governor's time source on tokio's clock, so the limits follow `tokio::time::pause` as every
/// other timer here does (governor's own clocks would not, and its waiting futures sleep on a
/// timer thread of their own: we sleep with tokio instead).
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = self.start.elapsed().as_nanos();
        Nanos::from(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

/// A governor limiter of one budget, on tokio's clock.
pub type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;
/// A governor limiter of one budget per key, on tokio's clock.
pub type KeyedLimiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, TokioClock, NoOpMiddleware<Nanos>>;

/// `n` a minute, all of them at once if they come together; zero is taken as one.
pub fn per_minute(n: u32) -> Quota {
    let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n)
}

/// The request budget: a governor limiter at `qps` with bursts of `burst`, and a pause that a
/// `Retry-After` sets for every request.
#[derive(Debug)]
pub struct Budget {
    /// None for no limit (`--kube-api-qps 0`).
    limiter: Option<DirectLimiter>,
    clock: TokioClock,
    hold_until: Mutex<Instant>,
    /// Waiters take turns in order: one asks the limiter at a time, instead of all waking
    /// together at each free slot and all but one going back to sleep.
    turn: tokio::sync::Mutex<()>,
}

impl Budget {
    pub fn new(qps: u32, burst: u32) -> Self {
        let clock = TokioClock::default();
        let limiter = NonZeroU32::new(qps).map(|qps| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::direct_with_clock(Quota::per_second(qps).allow_burst(burst), clock.clone())
        });
        Self {
            limiter,
            clock,
            hold_until: Mutex::new(Instant::now()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for this request's turn.
    pub async fn acquire(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let hold_until = *self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
            if hold_until > Instant::now() {
                tokio::time::sleep_until(hold_until).await;
                continue;
            }
            let Some(limiter) = &self.limiter else {
                return;
            };
            match limiter.check() {
                Ok(()) => return,
                // Then the hold is looked at again: a 429 may have come meanwhile.
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
                }
            }
        }
    }

    /// Nothing is sent before `now + pause`.
    pub fn hold(&self, pause: Duration) {
        let mut hold_until = self.hold_until.lock().unwrap_or_else(|p| p.into_inner());
        *hold_until = (*hold_until).max(Instant::now() + pause.min(MAX_HOLD));
    }
}

/// The pause an answer asks for: `Retry-After` seconds on a 429 (1 s without one), or on a
/// 503 that names one.
fn pause_of<B>(response: &Response<B>) -> Option<Duration> {
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match response.status() {
        StatusCode::TOO_MANY_REQUESTS => Some(retry_after.unwrap_or(DEFAULT_HOLD)),
        StatusCode::SERVICE_UNAVAILABLE => retry_after,
        _ => None,
    }
}

#[derive(Clone, Debug)]
pub struct Budgeted<S> {
    inner: S,
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<Body>> for Budgeted<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The service polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let budget = self.budget.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            budget.acquire().await;
            let method = request.method().clone();
            let result = inner.call(request).await;
            match &result {
                Ok(response) => {
                    metrics.kube_api_request(method.as_str(), response.status().as_u16());
                    if let Some(pause) = pause_of(response) {
                        tracing::info!(pause = ?pause, status = %response.status(), "the API server asked to slow down; pausing every request");
                        budget.hold(pause);
                    }
                }
                Err(_) => metrics.kube_api_request(method.as_str(), 0),
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `n` turns one after the other; the time each was granted, from `start`.
    async fn turns(budget: &Budget, n: usize, start: Instant) -> Vec<Duration> {
        let mut at = Vec::with_capacity(n);
        for _ in 0..n {
            budget.acquire().await;
            at.push(start.elapsed());
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_at_once_then_the_rate() {
        let start = Instant::now();
        let budget = Budget::new(50, 10);
        let at = turns(&budget, 60, start).await;
        assert!(at[..10].iter().all(|t| t.is_zero()), "{at:?}");
        // One every 20 ms after the burst: the 11th at 20 ms, the 60th at 1 s.
        assert_eq!(at[10], Duration::from_millis(20));
        assert_eq!(at[59], Duration::from_secs(1));
        assert!(
            at.windows(2)
                .skip(10)
                .all(|w| w[1] - w[0] == Duration::from_millis(20))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_share_the_rate() {
        let start = Instant::now();
        let budget = Arc::new(Budget::new(20, 5));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    budget.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut at = Vec::new();
        for task in tasks {
            at.push(task.await.expect("task"));
        }
        at.sort();
        // 5 at once, then 95 at 20 a second.
        assert_eq!(at[99], Duration::from_millis(4750), "{at:?}");
        for (i, first) in at.iter().enumerate() {
            let window = at[i..]
                .iter()
                .take_while(|t| **t < *first + Duration::from_secs(1));
            assert!(window.count() <= 20 + 5);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request_up_to_a_minute() {
        let start = Instant::now();
        let budget = Budget::new(1000, 100);
        budget.hold(Duration::from_secs(3));
        // A shorter hold does not cut a longer one short.
        budget.hold(Duration::from_secs(1));
        assert_eq!(turns(&budget, 2, start).await, [Duration::from_secs(3); 2]);
        budget.hold(Duration::from_secs(3600));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        budget.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3) + MAX_HOLD);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_qps_is_no_limit() {
        let start = Instant::now();
        let budget = Budget::new(0, 0);
        let at = turns(&budget, 10_000, start).await;
        assert!(at.iter().all(|t| t.is_zero()));
    }

    #[test]
    fn zero_per_minute_is_one() {
        assert_eq!(per_minute(0), per_minute(1));
        assert_eq!(per_minute(30).replenish_interval(), Duration::from_secs(2));
    }
}
