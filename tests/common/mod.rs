//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod generate;
pub mod references;

use base64::Engine as _;
use pullsecret_injector::config::Config;
use pullsecret_injector::sync::Verifier;
use serde_json::Value;

/// (rule, image, whether the rule matches): the kubelet keyring's own cases
/// (`pkg/credentialprovider/keyring_test.go`). The matcher and the matchCondition expression
/// are both held to them.
pub const KEYRING_CASES: &[(&str, &str, bool)] = &[
    // Wildcards, one label each.
    ("*.kubernetes.io", "prefix.kubernetes.io/foo", true),
    ("prefix.*.io", "prefix.kubernetes.io/foo", true),
    ("prefix.kubernetes.*", "prefix.kubernetes.io/foo", true),
    (
        "*-good.kubernetes.io",
        "prefix-good.kubernetes.io/foo",
        true,
    ),
    // Paths.
    ("kubernetes.io/foo", "kubernetes.io/foo/bar", true),
    ("kubernetes.io/foo/bar", "kubernetes.io/foo/bar", true),
    ("*.kubernetes.io/foo", "prefix.kubernetes.io/foo/bar", true),
    // Ports.
    ("kubernetes.io:8080", "kubernetes.io:8080/foo", true),
    (
        "*.kubernetes.io:1111/foo",
        "prefix.kubernetes.io:1111/foo/bar",
        true,
    ),
    (
        "prefix.*.io:1111/foo",
        "prefix.kubernetes.io:1111/foo/bar",
        true,
    ),
    // The label count must be equal.
    ("*.kubernetes.io", "kubernetes.io/foo", false),
    ("*.kubernetes.io", "sub.prefix.kubernetes.io/foo", false),
    ("prefix.kubernetes.io", "kubernetes.io/foo", false),
    // Ports must be equal, and a rule without one does not match an image with one.
    (
        "*.kubernetes.io:1111",
        "prefix.kubernetes.io:2222/foo",
        false,
    ),
    ("kubernetes.io", "kubernetes.io:1111/foo", false),
    ("kubernetes.io:1111", "kubernetes.io/foo", false),
    // The image path must start with the rule path.
    ("kubernetes.io/foo/bar", "kubernetes.io/foo", false),
    ("kubernetes.io/foo", "kubernetes.io/other/foo", false),
    // Hosts compare case-sensitively, as Go's filepath.Match does.
    ("example.com", "Example.COM/x/y", false),
    ("Example.COM", "Example.COM/x/y", true),
];

/// (rule, image, the matcher's answer), besides the kubelet's keyring cases
/// ([`KEYRING_CASES`]): DESIGN.md's config, every Docker Hub spelling, globs that take
/// in Docker Hub, IP hosts, the spellings the kubelet accepts.
pub const MATCH_TABLE: &[(&str, &str, bool)] = &[
    // DESIGN.md's config.
    (
        "asia-northeast1-docker.pkg.dev",
        "asia-northeast1-docker.pkg.dev/p/r/i:1",
        true,
    ),
    ("*.pkg.dev", "us-docker.pkg.dev/p/r/i", true),
    ("*.pkg.dev", "pkg.dev/x", false),
    ("*.pkg.dev", "a.b.pkg.dev/x", false),
    ("ghcr.io/acme", "ghcr.io/acme/api:1", true),
    ("ghcr.io/acme", "ghcr.io/acme:1", true),
    (
        "ghcr.io/acme",
        "ghcr.io/acme@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        true,
    ),
    ("ghcr.io/acme", "ghcr.io/acmecorp/api", false),
    ("localhost:5000", "localhost:5000/dev/app", true),
    ("localhost:5000", "localhost/dev/app", false),
    ("localhost:5000", "localhost:5001/dev/app", false),
    // Docker Hub, every spelling.
    ("docker.io", "nginx", true),
    ("docker.io", "nginx:1.27", true),
    (
        "docker.io",
        "nginx@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        true,
    ),
    ("docker.io", "library/redis:7", true),
    ("docker.io", "bitnami/kafka:3.7", true),
    ("docker.io", "docker.io/bitnami/kafka:3.7", true),
    ("docker.io", "index.docker.io/grafana/grafana:11", true),
    ("docker.io", "index.docker.io/busybox", true),
    ("docker.io", "registry-1.docker.io/library/busybox", false),
    ("docker.io", "quay.io/x/y", false),
    ("docker.io", "localhost:5000/x", false),
    ("index.docker.io", "nginx", true),
    ("https://index.docker.io/v1/", "grafana/grafana", true),
    ("docker.io/acme", "acme/api:1", true),
    ("docker.io/acme", "docker.io/acme/api", true),
    ("docker.io/acme", "index.docker.io/acme/api", true),
    ("docker.io/acme", "acmecorp/api", false),
    ("docker.io/acme", "nginx", false),
    ("docker.io/library", "nginx", true),
    ("docker.io/library", "docker.io/nginx:1", true),
    ("docker.io/library", "library/nginx", true),
    ("docker.io/library", "bitnami/kafka", false),
    ("docker.io/library/nginx", "nginx:1.27", true),
    ("docker.io/library/nginx", "index.docker.io/nginx", true),
    ("docker.io/library/nginx", "library/nginx/sub", true),
    ("docker.io/library/nginx", "redis", false),
    ("docker.io/my.org", "docker.io/my.org/x", true),
    // A glob that takes in Docker Hub.
    ("*.io", "nginx", true),
    ("*.io", "bitnami/kafka", true),
    ("docker.*/acme", "acme/x", true),
    ("d?cker.io", "alpine", true),
    ("[a-e]ocker.io", "alpine", true),
    ("*.io", "quay.io/x", true),
    ("*.io", "gcr.io.example/x", false),
    // IPv6 and IPv4 hosts.
    ("[::1]:5000", "[::1]:5000/ipv6/app:1", true),
    ("::1:5000", "[::1]:5000/ipv6/app:1", true),
    ("127.0.0.1:5000", "127.0.0.1:5000/x", true),
    ("127.0.0.*:5000", "127.0.0.1:5000/x", true),
    ("127.0.0.1", "127.0.0.1:5000/x", false),
    // A one-label rule and an IPv6 host, one label to the kubelet.
    ("*", "[::1]/library", true),
    ("*:5000", "[::1]:5000/x", true),
    ("abc:5000", "[abc]:5000/x", true),
    ("abc:5000", "abc:5000/x", true),
    ("abc:5000", "[abd]:5000/x", false),
    // Spellings the kubelet accepts in a docker config key.
    ("https://ghcr.io/acme/", "ghcr.io/acme/x", true),
    ("ghcr.io/v2/acme", "ghcr.io/acme/x", true),
    ("ghcr.io/v1/", "ghcr.io/anyone/x", true),
    (
        "nexus.internal:18080/repo",
        "nexus.internal:18080/repo/app:1.0.0-rc.1",
        true,
    ),
    ("registry.k8s.io", "registry.k8s.io/pause:3.9", true),
    ("registry.k8s.io", "k8s.gcr.io/pause:3.9", false),
];

/// A writer the log subscriber fills, to read back what was logged.
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Every test of the calling test binary logs at TRACE into one buffer (a process-wide
/// subscriber: a thread-local one misses events when tests run in parallel).
pub fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        captured
    })
}

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The example config of the README (DESIGN.md's config).
pub fn example_config() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    Config::load(&path).expect("examples/config.yaml").0
}

/// Applies the patch of an AdmissionReview answer to the request's Pod; returns the patched
/// Pod, or the Pod unchanged when the answer carries no patch.
pub fn apply_response(request: &Value, response: &Value) -> Value {
    let mut pod = request["request"]["object"].clone();
    let answer = &response["response"];
    assert_eq!(answer["allowed"], true, "the webhook must allow: {answer}");
    assert_eq!(
        answer["uid"], request["request"]["uid"],
        "uid must be echoed"
    );
    if let Some(patch) = answer["patch"].as_str() {
        assert_eq!(answer["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON patch");
        json_patch::patch(&mut pod, &patch).expect("patch applies to the Pod");
    } else {
        assert!(
            answer.get("patchType").is_none(),
            "patchType without patch: {answer}"
        );
    }
    pod
}

pub fn pull_secrets(pod: &Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn injected_annotation(pod: &Value) -> Option<String> {
    pod["metadata"]["annotations"]["pullsecret-injector.io/injected"]
        .as_str()
        .map(str::to_owned)
}

/// Wraps `pod` in a Pod CREATE AdmissionReview.
pub fn review_of(pod: Value) -> Value {
    pullsecret_injector::admission::review_for_pod(pod)
}

// ---- a real server on loopback and TLS clients that verify it like the API server ---------

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::server::{self, AppState, Limits};
use pullsecret_injector::tls::{self, CertResolver};
use pullsecret_injector::watch::ConfigStore;
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub struct TestServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub resolver: Arc<CertResolver>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<bool>>,
}

impl TestServer {
    pub async fn start(config: Config, limits: Limits) -> Self {
        let pair = tls::self_signed(&["localhost", "127.0.0.1"]).expect("test certificate");
        Self::start_with(config, limits, &pair.cert_pem, &pair.key_pem, &pair.ca_pem).await
    }

    /// Serves with a handle on the sync that the reviews ask for read-backs.
    pub async fn start_verifying(config: Config, verifier: Verifier) -> Self {
        let pair = tls::self_signed(&["localhost", "127.0.0.1"]).expect("test certificate");
        Self::serve(
            config,
            Limits::default(),
            (&pair.cert_pem, &pair.key_pem, &pair.ca_pem),
            verifier,
        )
        .await
    }

    /// Serves with the given certificate chain and key; `ca_pem` is what clients will trust.
    pub async fn start_with(
        config: Config,
        limits: Limits,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Self {
        Self::serve(
            config,
            limits,
            (cert_pem, key_pem, ca_pem),
            Verifier::disabled(),
        )
        .await
    }

    async fn serve(
        config: Config,
        limits: Limits,
        (cert_pem, key_pem, ca_pem): (&str, &str, &str),
        verifier: Verifier,
    ) -> Self {
        let key = tls::certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), "cert", "key")
            .expect("usable certificate and key");
        let resolver = Arc::new(CertResolver::new(key));
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(true));
        let app = server::router(
            AppState {
                config: Arc::new(ConfigStore::new(config)),
                metrics: metrics.clone(),
                ready: ready.clone(),
                verifier,
            },
            &limits,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_tls(
            listener,
            tls::server_config(resolver.clone()).unwrap(),
            app,
            limits,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ));
        Self {
            addr,
            ca_pem: ca_pem.to_owned(),
            metrics,
            ready,
            resolver,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Starts draining; returns whether every connection finished in time.
    pub async fn stop(&mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("server task")
    }
}

pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection that trusts only `ca_pem` and checks that the certificate is for `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    TlsConnector::from(client_config(ca_pem, alpn))
        .connect(name, tcp)
        .await
}

/// An HTTP/1.1 keep-alive connection, as the API server opens to webhooks.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    async fn read(response: hyper::Response<hyper::body::Incoming>) -> hyper::Result<Self> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Self {
            status,
            headers,
            body,
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl H1 {
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_to(server.addr, &server.ca_pem).await
    }

    pub async fn connect_to(addr: SocketAddr, ca_pem: &str) -> Self {
        let tls = tls_connect(addr, ca_pem, "localhost", &[b"http/1.1"])
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    pub fn from_sender(sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> Self {
        Self { sender }
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Reply> {
        self.sender.ready().await?;
        Reply::read(self.sender.send_request(request).await?).await
    }

    /// The status of a recorded review sent on this connection: "still serving?".
    pub async fn review_status(&mut self) -> u16 {
        self.send(mutate_request(fixture("job-pod.json")))
            .await
            .expect("an answer")
            .status
    }
}

/// An HTTP/2 connection; clones share it, each request a stream.
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub async fn connect(server: &TestServer) -> Self {
        let tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[b"h2"])
            .await
            .expect("TLS handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> hyper::Result<Reply> {
        self.sender.ready().await?;
        Reply::read(self.sender.send_request(request).await?).await
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// The status of a recorded review sent on this connection: "still serving?".
    pub async fn review_status(&mut self) -> u16 {
        self.send(mutate_request(fixture("job-pod.json")))
            .await
            .expect("an answer")
            .status
    }
}

/// Waits until `is_closed` says the server has closed the connection; fails after 5 s.
pub async fn until_closed(what: &str, is_closed: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !is_closed() {
        assert!(std::time::Instant::now() < deadline, "{what} still open");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET path` over plain HTTP/1.1 (the metrics port).
pub async fn plain_get(addr: SocketAddr, path: &str) -> Reply {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let response = sender
        .send_request(get_request(path))
        .await
        .expect("answer");
    Reply::read(response).await.expect("body")
}

/// `POST /mutate?timeout=2s` with the API server's headers.
pub fn mutate_request(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post("https://localhost/mutate?timeout=2s")
        .header("host", "localhost")
        .header("user-agent", "kube-apiserver-admission")
        .header("accept", "application/json, */*")
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(Full::new(body.into()))
        .unwrap()
}

pub fn get_request(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}
