//! Scale benchmark of the secret sync: the release binary against the fake API server of
//! `tests/fake_api/`, served over plain HTTP on loopback with a latency per request, for N
//! opted-in namespaces and 3 sources. Prints one Markdown table row per N:
//!
//! - cold start: time until every copy exists (fresh install), and the requests it took;
//! - steady state: requests per copy per resync interval and the busiest second, measured
//!   over one interval starting one interval after the start (every namespace is then on its
//!   slot);
//! - rotation: time until every copy carries a rotated source;
//! - a newly labelled namespace: time until its copies exist;
//! - admission: a copy deleted, a review for a Pod in its namespace sent to /mutate, time until
//!   the copy is back;
//! - restart: the binary stopped and started over the existing copies: time until every copy
//!   was read, and its requests;
//! - peak RSS of the binary (VmHWM), over both runs.
//!
//!   cargo bench --bench sync_scale                 (N = 1000 and 5000)
//!   cargo bench --bench sync_scale -- 300          (other sizes)
//!   SYNC_BENCH_LATENCY_MS=5 SYNC_BENCH_RESYNC_S=60 cargo bench --bench sync_scale
//!
//! Loopback only; every wait is bounded.

mod common;
#[path = "../tests/fake_api/mod.rs"]
mod fake_api;

use common::free_port;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake_api::FakeApi;
use serde_json::{Value, json};
use tokio::time::Instant;

const OWN_NS: &str = "pullsecret-injector";
const SECRETS: [&str; 3] = ["gar-pull", "ghcr", "dockerhub"];
const QPS: u32 = 1000;
const BURST: u32 = 100;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 5000]
    } else {
        sizes
    };
    let binary = common::release_binary();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let latency = Duration::from_millis(env_u64("SYNC_BENCH_LATENCY_MS", 2));
    let resync = Duration::from_secs(env_u64("SYNC_BENCH_RESYNC_S", 60));
    println!(
        "latency {latency:?} per request, resync {resync:?}, --kube-api-qps {QPS} --kube-api-burst {BURST}, 3 sources\n"
    );
    println!(
        "| namespaces | copies | cold start: all copies | its requests | steady: requests per copy per interval | busiest second | rotation: all copies | new namespace | copy back after admission | restart: all copies read | its requests | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let row = runtime.block_on(run(&binary, n, latency, resync));
        println!("{row}");
    }
}

fn source(version: &str) -> Value {
    use base64::Engine as _;
    let config = format!(
        r#"{{"auths":{{"registry.example.com":{{"username":"u","password":"{version}"}}}}}}"#
    );
    json!({ "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config) } })
}

struct Injector {
    child: Child,
    port: u16,
}

impl Injector {
    fn start(binary: &Path, dir: &Path, resync: Duration, log: &str) -> Self {
        let port = free_port();
        let log = std::fs::File::create(dir.join(log)).expect("log file");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(dir.join("config.yaml"))
            .args(["--namespace", OWN_NS])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
            .arg(format!("--resync-interval={}s", resync.as_secs()))
            .arg(format!("--kube-api-qps={QPS}"))
            .arg(format!("--kube-api-burst={BURST}"))
            .arg("--self-signed-ca")
            .arg(dir.join("ca.crt"))
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the injector");
        Self { child, port }
    }

    fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passes; the time it took.
async fn time_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn all_copies(api: &FakeApi, namespaces: &[String], check: impl Fn(&Value) -> bool) -> bool {
    let st = api.state();
    namespaces.iter().all(|ns| {
        SECRETS.iter().all(|s| {
            st.secrets
                .get(&(ns.clone(), (*s).to_owned()))
                .is_some_and(&check)
        })
    })
}

fn copy_requests(api: &FakeApi, since: usize) -> usize {
    api.state().requests[since..]
        .iter()
        .filter(|r| r.is_copy_request(OWN_NS))
        .count()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("did not finish".to_owned(), |d| {
        format!("{:.2} s", d.as_secs_f64())
    })
}

async fn run(binary: &Path, n: usize, latency: Duration, resync: Duration) -> String {
    let api = FakeApi::default();
    api.state().latency = latency;
    let namespaces: Vec<String> = (0..n).map(|i| format!("team-{i:05}")).collect();
    for ns in &namespaces {
        api.add_namespace(ns, true);
    }
    api.add_namespace(OWN_NS, false);
    for s in SECRETS {
        api.put_secret(OWN_NS, s, source("v1"));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    api.serve_with_kubeconfig(&dir.path().join("kubeconfig"))
        .await;
    let mut config = String::from("registries:\n");
    for (i, s) in SECRETS.iter().enumerate() {
        config.push_str(&format!("  - match: r{i}.example.com\n    secret: {s}\n"));
    }
    std::fs::write(dir.path().join("config.yaml"), config).expect("config");

    // Cold start, fresh install.
    let injector = Injector::start(binary, dir.path(), resync, "first.log");
    let started = Instant::now();
    let cold = time_until(Duration::from_secs(300), || {
        all_copies(&api, &namespaces, |_| true)
    })
    .await;
    let cold_requests = copy_requests(&api, 0);
    eprintln!(
        "{n}: RSS {} KiB after the cold start, peak {} KiB",
        injector.rss_kib(),
        injector.peak_rss_kib()
    );

    // Steady state: one interval, from one interval after the start.
    if let Some(rest) = resync.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest + Duration::from_secs(1)).await;
    }
    let steady_from = api.state().requests.len();
    let steady_start = Instant::now();
    tokio::time::sleep(resync).await;
    let steady: Vec<Duration> = api.state().requests[steady_from..]
        .iter()
        .filter(|r| r.is_copy_request(OWN_NS))
        .map(|r| r.at.duration_since(steady_start))
        .collect();
    let per_copy = steady.len() as f64 / (n * SECRETS.len()) as f64;
    let mut seconds = vec![0usize; resync.as_secs() as usize + 1];
    for at in &steady {
        if let Some(slot) = seconds.get_mut(at.as_secs() as usize) {
            *slot += 1;
        }
    }
    let busiest = seconds.iter().copied().max().unwrap_or(0);
    let mean = steady.len() as f64 / resync.as_secs_f64();

    // Rotation of one source.
    api.put_secret(OWN_NS, "ghcr", source("v2"));
    let rotated = source("v2")["data"].clone();
    let rotation = time_until(Duration::from_secs(120), || {
        let st = api.state();
        namespaces.iter().all(|ns| {
            st.secrets
                .get(&(ns.clone(), "ghcr".to_owned()))
                .is_some_and(|s| s["data"] == rotated)
        })
    })
    .await;

    // A namespace labelled now.
    api.add_namespace("team-new", true);
    let fresh = vec!["team-new".to_owned()];
    let labelled = time_until(Duration::from_secs(30), || {
        all_copies(&api, &fresh, |_| true)
    })
    .await;

    // A copy deleted, then a Pod admitted in its namespace.
    let victim = &namespaces[n / 2];
    api.delete_secret(victim, "gar-pull");
    let review = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": { "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
            "namespace": victim, "userInfo": {},
            "object": { "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": victim },
                "spec": { "containers": [{ "name": "c", "image": "r0.example.com/app:1" }] } } } });
    let sent = Instant::now();
    let answered = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(dir.path().join("ca.crt"))
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(review.to_string())
        .arg(format!("https://localhost:{}/mutate", injector.port))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let back = if answered == "200" {
        time_until(Duration::from_secs(30), || {
            api.secret(victim, "gar-pull").is_some()
        })
        .await
        .map(|_| sent.elapsed())
    } else {
        None
    };
    eprintln!(
        "{n}: RSS {} KiB after steady state, rotation and admission, peak {} KiB",
        injector.rss_kib(),
        injector.peak_rss_kib()
    );
    let mut rss = injector.peak_rss_kib();
    injector.stop().await;

    // Restart over the copies that exist.
    let from = api.state().requests.len();
    let injector = Injector::start(binary, dir.path(), resync, "second.log");
    let all = n * SECRETS.len() + SECRETS.len();
    let restart = time_until(Duration::from_secs(300), || {
        copy_requests(&api, from) >= all
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart_requests = copy_requests(&api, from);
    rss = rss.max(injector.peak_rss_kib());
    injector.stop().await;

    format!(
        "| {n} | {} | {} | {cold_requests} | {per_copy:.3} | {busiest} (mean {mean:.0}/s) | {} | {} | {} | {} | {restart_requests} | {:.1} MiB |",
        n * SECRETS.len(),
        secs(cold),
        secs(rotation),
        secs(labelled),
        secs(back),
        secs(restart),
        rss as f64 / 1024.0,
    )
}
