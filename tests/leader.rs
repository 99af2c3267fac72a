//! Leader election: one replica holds the Lease and does the background work; another takes
//! over when it dies (SIGKILL: at Lease expiry) or stops (SIGTERM: it releases the Lease), and
//! nothing that changed during the handover is missed. Against the fake API server, in
//! process and with two real `serve` processes.

mod fake_api;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use pullsecret_injector::leader::{Election, LeaderArgs, Leadership};
use pullsecret_injector::metrics::Metrics;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const OWN_NS: &str = "pullsecret-injector";
const LEASE: &str = "pullsecret-injector";

fn election(api: &FakeApi, identity: &str, seconds: u64) -> (Arc<Election>, Leadership) {
    let args = LeaderArgs {
        lease_name: LEASE.to_owned(),
        lease_duration: Duration::from_secs(seconds),
        lease_identity: Some(identity.to_owned()),
    };
    let (election, leadership) = Election::new(
        api.client(),
        OWN_NS.to_owned(),
        args,
        Arc::new(Metrics::new()),
    );
    (Arc::new(election), leadership)
}

fn campaign(election: &Arc<Election>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let election = election.clone();
    let token = stop.clone();
    (stop, tokio::spawn(async move { election.run(token).await }))
}

/// How long until `leadership` leads, if within `limit`.
async fn leads_within(leadership: &mut Leadership, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, leadership.leading())
        .await
        .ok()
        .map(|()| started.elapsed())
}

fn holder(api: &FakeApi) -> Option<String> {
    api.lease(OWN_NS, LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_and_another_takes_over_when_it_dies_or_steps_down() {
    let api = FakeApi::default();
    let (a, mut a_leads) = election(&api, "a", 3);
    let (b, mut b_leads) = election(&api, "b", 3);

    let (_a_stop, a_task) = campaign(&a);
    assert!(
        leads_within(&mut a_leads, Duration::from_secs(5))
            .await
            .is_some()
    );
    let (b_stop, _b_task) = campaign(&b);
    assert!(
        leads_within(&mut b_leads, Duration::from_secs(5))
            .await
            .is_none(),
        "one leader at a time: a renews"
    );
    assert_eq!(holder(&api).as_deref(), Some("a"));

    // a dies without a word: b leads once the Lease expires.
    a_task.abort();
    let took = leads_within(&mut b_leads, Duration::from_secs(10))
        .await
        .expect("b takes over");
    assert!(took <= Duration::from_secs(3 + 2), "took {took:?}");
    assert_eq!(holder(&api).as_deref(), Some("b"));

    // b steps down (SIGTERM): the Lease is released, a new campaigner takes it.
    let (a2, mut a2_leads) = election(&api, "a2", 3);
    let (_a2_stop, _a2_task) = campaign(&a2);
    b_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), b_leads.lost())
        .await
        .expect("b stops leading at once");
    assert!(
        leads_within(&mut a2_leads, Duration::from_secs(10))
            .await
            .is_some()
    );
    assert_eq!(holder(&api).as_deref(), Some("a2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_campaigning_at_once_elect_one() {
    let api = FakeApi::default();
    let mut all = Vec::new();
    for id in ["a", "b", "c"] {
        let (e, l) = election(&api, id, 3);
        let (stop, task) = campaign(&e);
        all.push((l, stop, task));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leaders: Vec<bool> = all.iter().map(|(l, _, _)| l.is_leading()).collect();
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "exactly one leader: {leaders:?}"
    );
}

// ---- two real replicas ------------------------------------------------------------------

struct Replica {
    child: Child,
    metrics: SocketAddr,
}

impl Replica {
    fn start(dir: &Path, identity: &str) -> Self {
        let metrics_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
            .args(["serve", "--config"])
            .arg(dir.join("config.yaml"))
            .args(["--namespace", OWN_NS, "--lease-identity", identity])
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--metrics-listen=127.0.0.1:{metrics_port}"))
            .arg("--self-signed-ca")
            .arg(dir.join(format!("{identity}-ca.crt")))
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAME")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{identity}.log"))).expect("log file"))
            .spawn()
            .expect("binary starts");
        Self {
            child,
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        }
    }

    /// The leader gauge, once the metrics port answers.
    async fn leading(&self) -> Option<bool> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(self.metrics).await.ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await.ok()?;
            Some(text)
        };
        let text = tokio::time::timeout(Duration::from_secs(2), fetch)
            .await
            .ok()??;
        let line = text
            .lines()
            .find(|l| l.starts_with("pullsecret_injector_leader "))?;
        Some(line.ends_with(" 1"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn source(password: &str) -> Value {
    use base64::Engine as _;
    let config =
        format!(r#"{{"auths":{{"r0.example.com":{{"username":"u","password":"{password}"}}}}}}"#);
    json!({ "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config) } })
}

async fn until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_20s_and_its_drift_is_repaired() {
    let api = FakeApi::default();
    let namespaces = ["team-0", "team-1", "team-2"];
    for ns in namespaces {
        api.add_namespace(ns, true);
    }
    api.add_namespace(OWN_NS, false);
    api.put_secret(OWN_NS, "gar-pull", source("v1"));
    let dir = tempfile::tempdir().expect("temp dir");
    api.serve_with_kubeconfig(&dir.path().join("kubeconfig"))
        .await;
    std::fs::write(
        dir.path().join("config.yaml"),
        "registries:\n  - match: r0.example.com\n    secret: gar-pull\n",
    )
    .expect("config");

    let mut replicas = [
        Replica::start(dir.path(), "replica-a"),
        Replica::start(dir.path(), "replica-b"),
    ];
    let copies_carry = |api: &FakeApi, want: &Value| {
        namespaces.iter().all(|ns| {
            api.secret(ns, "gar-pull")
                .is_some_and(|s| s["data"] == want["data"])
        })
    };
    let v1 = source("v1");
    let elected = until(Duration::from_secs(30), async || {
        let a = replicas[0].leading().await;
        let b = replicas[1].leading().await;
        matches!(
            (a, b),
            (Some(true), Some(false)) | (Some(false), Some(true))
        ) && copies_carry(&api, &v1)
    })
    .await;
    let logs = |dir: &Path| {
        ["replica-a", "replica-b"]
            .map(|r| std::fs::read_to_string(dir.join(format!("{r}.log"))).unwrap_or_default())
            .join("\n----\n")
    };
    assert!(
        elected.is_some(),
        "one leader and every copy; logs:\n{}",
        logs(dir.path())
    );
    let leader = usize::from(replicas[1].leading().await == Some(true));
    let follower = 1 - leader;
    let names = ["replica-a", "replica-b"];
    assert_eq!(holder(&api).as_deref(), Some(names[leader]));

    // The leader dies; meanwhile a copy is deleted and the source rotates.
    replicas[leader].kill();
    api.delete_secret("team-1", "gar-pull");
    let v2 = source("v2");
    api.put_secret(OWN_NS, "gar-pull", v2.clone());

    let took = until(Duration::from_secs(20), async || {
        replicas[follower].leading().await == Some(true)
    })
    .await;
    assert!(
        took.is_some(),
        "the follower did not lead within 20 s; logs:\n{}",
        logs(dir.path())
    );
    eprintln!("the follower led {took:?} after the leader's SIGKILL");
    assert_eq!(holder(&api).as_deref(), Some(names[follower]));
    assert!(
        until(Duration::from_secs(10), async || copies_carry(&api, &v2))
            .await
            .is_some(),
        "the new leader restores the deleted copy and the rotation; logs:\n{}",
        logs(dir.path())
    );
}
