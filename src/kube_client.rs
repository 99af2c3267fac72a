//! The Kubernetes API client: kube-rs' own stack under a request budget that every request
//! and every retry passes through, so the injector never sends more than `--kube-api-qps`
//! (bursts of `--kube-api-burst`), and an API server that answers 429 (API Priority and
//! Fairness) with `Retry-After` pauses all of it, not just the one request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder};
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
pub fn recorder(client: &Client) -> kube::runtime::events::Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: crate::names::APP_NAME.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    kube::runtime::events::Recorder::new(client.clone(), reporter)
}

/// Records a Warning Event on the Secret `namespace/name`; a failure to record it is only
/// logged at debug (Events are best effort).
pub async fn warn_on_secret(
    recorder: &kube::runtime::events::Recorder,
    (namespace, name): (&str, &str),
    (reason, action): (&str, &str),
    note: String,
) {
    use kube::Resource as _;
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    let reference = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..kube::api::ObjectMeta::default()
        },
        ..Default::default()
    }
    .object_ref(&());
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::debug!(%error, reason, "cannot record an event");
    }
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

/// A token bucket (GCRA: one "theoretical arrival time" instead of a refill loop) and a
/// pause that a `Retry-After` sets for every request.
#[derive(Debug)]
pub struct Budget {
    /// Time between two requests at the sustained rate; zero for no limit.
    interval: Duration,
    /// How far ahead of the sustained rate a burst may run.
    tolerance: Duration,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    next: Instant,
    hold_until: Instant,
}

impl Budget {
    pub fn new(qps: u32, burst: u32) -> Self {
        let interval = if qps == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / qps
        };
        let now = Instant::now();
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            state: Mutex::new(BudgetState {
                next: now,
                hold_until: now,
            }),
        }
    }

    /// Waits for this request's turn.
    pub async fn acquire(&self) {
        let at = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now().max(st.hold_until);
            let next = st.next.max(now);
            st.next = next + self.interval;
            next.checked_sub(self.tolerance).unwrap_or(now).max(now)
        };
        tokio::time::sleep_until(at).await;
    }

    /// Nothing is sent before `now + pause`.
    pub fn hold(&self, pause: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.hold_until = st.hold_until.max(Instant::now() + pause.min(MAX_HOLD));
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
