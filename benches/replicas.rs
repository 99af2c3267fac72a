//! What more replicas cost the cluster: 1 and then 3 replicas of the release binary against
//! the fake API server of `tests/fake_api/` (plain HTTP on loopback) and a loopback registry
//! with Basic auth, with the same config: 20 opted-in namespaces, one source, one rule with a
//! probeImage, credential checks and read-backs every 30 s. Counted from the processes' start
//! (a rolling update restarts every replica, so what each does at start counts too) over
//! 75 s: the Kubernetes API requests (GETs, the Lease's among them, and all methods) and the
//! registry's requests. Prints a Markdown table; the numbers go to docs/performance.md.
//!
//!   cargo bench --bench replicas
//!   REPLICAS_BENCH_SECONDS=120 cargo bench --bench replicas
//!
//! Loopback only; every wait is bounded.

mod common;
#[path = "../tests/fake_api/mod.rs"]
mod fake_api;

use common::free_port;

use std::convert::Infallible;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fake_api::FakeApi;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::time::Instant;

const OWN_NS: &str = "pullsecret-injector";
const NAMESPACES: usize = 20;
const USER: &str = "puller";
const PASSWORD: &str = "s3cret";

fn main() {
    let binary = common::release_binary();
    let seconds = std::env::var("REPLICAS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    let window = Duration::from_secs(seconds);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{NAMESPACES} opted-in namespaces, 1 source, 1 rule with a probeImage; --credential-check-interval 30s, --resync-interval 30s; {seconds} s from the processes' start\n"
    );
    println!(
        "| replicas | API GETs | of them the Lease's | API GETs without the Lease | API requests, all methods | registry requests |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for replicas in [1, 3] {
        let counts = runtime.block_on(run(&binary, replicas, window));
        println!(
            "| {replicas} | {} | {} | {} | {} | {} |",
            counts.gets,
            counts.lease_gets,
            counts.gets - counts.lease_gets,
            counts.all,
            counts.registry
        );
        rows.push(counts);
    }
    let ratio = |f: fn(&Counts) -> usize| f(&rows[1]) as f64 / f(&rows[0]).max(1) as f64;
    println!(
        "\n3 replicas / 1: API GETs x{:.2}, without the Lease x{:.2}, all API requests x{:.2}, registry requests x{:.2}",
        ratio(|c| c.gets),
        ratio(|c| c.gets - c.lease_gets),
        ratio(|c| c.all),
        ratio(|c| c.registry),
    );
}

#[derive(Debug)]
struct Counts {
    gets: usize,
    lease_gets: usize,
    all: usize,
    registry: usize,
}

/// A registry's v2 API as far as a login and a manifest HEAD go: Basic auth, every request
/// counted.
async fn registry(listener: tokio::net::TcpListener, count: Arc<AtomicUsize>) {
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    while let Ok((stream, _)) = listener.accept().await {
        let (count, expected) = (count.clone(), expected.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<_>| {
                count.fetch_add(1, Ordering::Relaxed);
                let authorized = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                let response = if !authorized {
                    Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .header("www-authenticate", "Basic realm=\"bench\"")
                        .header("docker-distribution-api-version", "registry/2.0")
                        .body(Full::new(Bytes::new()))
                } else if request.method() == Method::HEAD || request.uri().path() != "/v2/" {
                    Response::builder()
                        .header(
                            "content-type",
                            "application/vnd.docker.distribution.manifest.v2+json",
                        )
                        .header(
                            "docker-content-digest",
                            format!("sha256:{}", "0".repeat(64)),
                        )
                        .body(Full::new(Bytes::new()))
                } else {
                    Response::builder()
                        .header("docker-distribution-api-version", "registry/2.0")
                        .body(Full::new(Bytes::from_static(b"{}")))
                };
                async move {
                    Ok::<_, Infallible>(
                        response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn source(registry: &str) -> Value {
    use base64::Engine as _;
    let config =
        format!(r#"{{"auths":{{"{registry}":{{"username":"{USER}","password":"{PASSWORD}"}}}}}}"#);
    json!({ "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config) } })
}

fn start(binary: &Path, dir: &Path, identity: &str) -> Child {
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(dir.join("config.yaml"))
        .args(["--namespace", OWN_NS, "--lease-identity", identity])
        .arg(format!("--listen=127.0.0.1:{}", free_port()))
        .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
        .args(["--resync-interval=30s", "--credential-check-interval=30s"])
        .arg("--self-signed-ca")
        .arg(dir.join(format!("{identity}-ca.crt")))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("POD_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{identity}.log"))).expect("log file"))
        .spawn()
        .expect("start the injector")
}

async fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
}

async fn run(binary: &Path, replicas: usize, window: Duration) -> Counts {
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registry_addr = registry_listener.local_addr().expect("address");
    let registry_requests = Arc::new(AtomicUsize::new(0));
    let registry_task = tokio::spawn(registry(registry_listener, registry_requests.clone()));
    let host = registry_addr.to_string();

    let api = FakeApi::default();
    api.state().latency = Duration::from_millis(1);
    for i in 0..NAMESPACES {
        api.add_namespace(&format!("team-{i:02}"), true);
    }
    api.add_namespace(OWN_NS, false);
    api.put_secret(OWN_NS, "registry-pull", source(&host));
    let dir = tempfile::tempdir().expect("temp dir");
    api.serve_with_kubeconfig(&dir.path().join("kubeconfig"))
        .await;
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "registries:\n  - match: {host}\n    secret: registry-pull\n    probeImage: {host}/app/web:1\n"
        ),
    )
    .expect("config");

    let children: Vec<Child> = (0..replicas)
        .map(|i| start(binary, dir.path(), &format!("replica-{i}")))
        .collect();
    tokio::time::sleep(window).await;
    let counts = {
        let st = api.state();
        let gets = st.requests.iter().filter(|r| r.method == Method::GET);
        Counts {
            gets: gets.clone().count(),
            lease_gets: gets.filter(|r| r.path.contains("/leases")).count(),
            all: st.requests.len(),
            registry: registry_requests.load(Ordering::Relaxed),
        }
    };
    for child in children {
        stop(child).await;
    }
    let copies = (0..NAMESPACES)
        .filter(|i| {
            api.secret(&format!("team-{i:02}"), "registry-pull")
                .is_some()
        })
        .count();
    assert_eq!(
        copies,
        NAMESPACES,
        "every copy made (logs in {:?})",
        dir.path()
    );
    registry_task.abort();
    counts
}
