//! The HTTPS webhook server and the plain metrics server.
//!
//! TLS is terminated per connection with the current certificate (see [`crate::tls`]); hyper
//! then speaks the protocol ALPN agreed on: HTTP/1.1 with keep-alive (what the API server
//! uses, and the default without ALPN) or HTTP/2. Idle HTTP/1.1 connections are closed after
//! [`Limits::idle_timeout`]; HTTP/2 ones are pinged then, and closed if the peer is gone. On
//! shutdown the accept loop stops, every connection is told to
//! finish: in-flight requests complete, idle keep-alive connections close, HTTP/2 gets a
//! GOAWAY.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Collected, LengthLimitError};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{self, Decision};
use crate::config;
use crate::metrics::Metrics;
use crate::sync::Verifier;
use crate::watch::ConfigStore;

/// Limits of the webhook port.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Time to receive a request body, from the end of its head; slower bodies get 408. An
    /// HTTP/1.1 head is bounded by `idle_timeout`; the answer is computed in microseconds.
    pub request_timeout: Duration,
    /// Time to finish a TLS handshake.
    pub handshake_timeout: Duration,
    /// How long an HTTP/1.1 connection may wait for the next request head, and an HTTP/2
    /// connection may go without sending anything. Longer than the API server's own 90 s idle
    /// timeout, so we never close a connection it is about to reuse.
    pub idle_timeout: Duration,
    /// When draining starts, how long connections accepted just before may still send their
    /// request (answered with `Connection: close`) before idle ones are closed.
    pub drain_linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            drain_linger: Duration::from_millis(500),
        }
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<ConfigStore>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Asks the sync to read back the copies of a namespace whose Pod needs them.
    pub verifier: Verifier,
}

/// The routes of the webhook port.
pub fn router(state: AppState, limits: &Limits) -> Router {
    // One Arc for the whole state: every request clones it, and each clone is an atomic
    // write the two cores would pass back and forth. The body limit and the request timeout
    // are applied by the /mutate handler itself (see [`read_body`]), not as layers: each
    // layer wraps every route in one more boxed service.
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(Shared {
            app: state,
            max_body_bytes: limits.max_body_bytes,
            request_timeout: limits.request_timeout,
        }))
}

/// The state of the webhook routes: the handlers' shared parts and the request limits.
#[derive(Debug)]
struct Shared {
    app: AppState,
    max_body_bytes: usize,
    request_timeout: Duration,
}

/// The routes of the metrics port.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    )
}

/// Once shutdown has begun, every HTTP/1.1 answer carries `Connection: close`: the client
/// (the API server keeps idle connections to a terminating pod) opens its next connection
/// elsewhere, and no idle connection is left to race with the final close. Called by each
/// handler rather than as a middleware layer, which cost a boxed future per request; axum's
/// own 404 and 405 answers go without it, and nothing that sends reviews or probes gets them.
fn finish(state: &AppState, version: Version, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if version <= Version::HTTP_11 && !state.ready.load(Ordering::Acquire) {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn healthz(State(state): State<Arc<Shared>>, version: Version) -> Response {
    finish(&state.app, version, "ok\n")
}

async fn readyz(State(state): State<Arc<Shared>>, version: Version) -> Response {
    let answer = if state.app.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    };
    finish(&state.app, version, answer)
}

async fn mutate(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes, state.request_timeout).await;
    let response = answer(&state.app, is_json(&parts.headers), body);
    finish(&state.app, parts.version, response)
}

/// Why a request body was not read.
#[derive(Debug)]
enum BodyError {
    TooLarge,
    TimedOut,
    Unreadable(String),
}

/// Reads the whole body, at most `limit` bytes, within `timeout`. The API server sends a
/// review with its head, so the body is nearly always complete at the first poll: a timer is
/// armed only when it is not, instead of for every request.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let mut collect = std::pin::pin!(http_body_util::Limited::new(body, limit).collect());
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let collected = match first {
        Poll::Ready(collected) => collected,
        Poll::Pending => tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| BodyError::TimedOut)?,
    };
    collected.map(Collected::to_bytes).map_err(|error| {
        if error.is::<LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(error.to_string())
        }
    })
}

fn answer(state: &AppState, json: bool, body: Result<Bytes, BodyError>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            let (status, reason, detail) = match &error {
                BodyError::TooLarge => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "length limit exceeded",
                ),
                BodyError::TimedOut => (
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "not received in time",
                ),
                BodyError::Unreadable(error) => (StatusCode::BAD_REQUEST, "unreadable", &**error),
            };
            let text = format!("Failed to buffer the body: {detail}");
            state.metrics.rejected(reason);
            tracing::warn!(%status, reason = %text, "admission request rejected");
            return (status, one_line(&text)).into_response();
        }
    };
    if !json {
        state.metrics.rejected("content_type");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json\n",
        )
            .into_response();
    }

    let started = Instant::now();
    let config = state.config.load();
    let result = admission::review(&config, &body);
    let elapsed = started.elapsed();

    match result {
        Ok(decision) => {
            record(state, &decision, elapsed);
            match decision.to_review_bytes() {
                Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                // Only strings and JSON values are serialized; should that ever fail, the
                // API server applies the failure policy.
                Err(error) => {
                    tracing::error!(%error, "cannot write the answer");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        Err(error) => {
            state.metrics.rejected(error.reason());
            tracing::warn!(%error, "admission request rejected");
            (StatusCode::BAD_REQUEST, one_line(&error.to_string())).into_response()
        }
    }
}

/// What a decision leaves behind: a read-back request to the sync, metrics, log lines (in a
/// span that names the review once).
fn record(state: &AppState, decision: &Decision, elapsed: Duration) {
    if decision.matched_images > 0 && !decision.dry_run {
        state.verifier.request(&decision.namespace);
    }
    state.metrics.review(
        decision.outcome,
        elapsed,
        &decision.added,
        decision.invalid_images.len(),
    );
    let _review = tracing::info_span!(
        "review",
        uid = %decision.uid,
        namespace = %decision.namespace,
        pod = %decision.name,
    )
    .entered();
    for bad in &decision.invalid_images {
        tracing::warn!(
            holder = bad.holder,
            name = %bad.name,
            image = %bad.image,
            error = %bad.error,
            "image is not a valid reference; no secret added for it"
        );
    }
    if let Some(error) = &decision.object_error {
        tracing::warn!(%error, "cannot read the Pod; allowed unchanged");
    }
    tracing::debug!(
        outcome = %decision.outcome,
        dry_run = decision.dry_run,
        images = decision.images,
        matched = decision.matched_images,
        image_volumes = decision.image_volumes,
        added = %decision.added.join(","),
        micros = elapsed.as_micros() as u64,
        "review"
    );
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let mime = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        mime.trim_ascii().eq_ignore_ascii_case(b"application/json")
    })
}

/// A one-line HTTP error body.
fn one_line(s: &str) -> String {
    format!("{}\n", config::one_line(&s))
}

/// Serves `app` over TLS on `listener` until `stop` completes, then drains: no new
/// connections, in-flight requests finish, idle connections close. Returns when every
/// connection is done or `drain_timeout` has passed (returning false then).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> bool {
    let acceptor = TlsAcceptor::from(tls);
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout);
    // HTTP/2 gets hyper's keep-alive: a ping after `idle_timeout` without a frame, and the
    // connection closed if the ping goes unanswered. A live client may keep an idle
    // connection open (as HTTP/2 allows).
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(limits.idle_timeout.min(Duration::from_secs(20)));
    let builders = Arc::new((h1, h2));
    let graceful = GracefulShutdown::new();

    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let builders = builders.clone();
        let service = TowerToHyperService::new(app.clone());
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The protocol is the one ALPN agreed on (HTTP/2 over TLS requires it), so no
            // bytes are read to guess it.
            let (h1, h2) = &*builders;
            let ended = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                watcher
                    .watch(h2.serve_connection(TokioIo::new(tls), service))
                    .await
            } else {
                watcher
                    .watch(h1.serve_connection(TokioIo::new(tls), service))
                    .await
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; draining connections"
    );
    let deadline = tokio::time::Instant::now() + drain_timeout;
    if graceful.count() > 0 {
        // A connection accepted a moment ago has its request on the way; closing it now as
        // idle would fail that request.
        tokio::time::sleep(limits.drain_linger.min(drain_timeout)).await;
    }
    tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_ok()
}

/// Serves the metrics router over plain HTTP until `stop` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, metrics_router(metrics))
        .with_graceful_shutdown(stop)
        .await
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
