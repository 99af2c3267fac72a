//! The release-style binary as it runs in a pod: start, config reload from a ConfigMap-style
//! mount, certificate rotation from a Secret-style mount under load, and SIGTERM under load.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;

/// A running `pullsecret-injector serve`.
struct Served {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    ca_pem: String,
    logs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    /// Starts the binary and waits for its "serving" log line.
    fn start(args: &[&str], ca_pem: Option<String>, dir: &Path) -> Self {
        let ca_file = dir.join("self-signed-ca.crt");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--no-sync",
            ])
            .arg("--self-signed-ca")
            .arg(&ca_file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"serving\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no serving line; logs: {:?}", logs.lock().unwrap()));
        let log: Value = serde_json::from_str(&line).expect("JSON log line");
        let ca_pem = ca_pem
            .unwrap_or_else(|| std::fs::read_to_string(&ca_file).expect("self-signed CA written"));
        Self {
            child,
            addr: log["listen"].as_str().unwrap().parse().unwrap(),
            metrics: log["metrics"].as_str().unwrap().parse().unwrap(),
            ca_pem,
            logs,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its success and how long it took.
    fn wait(&mut self, limit: Duration) -> (bool, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), started.elapsed());
            }
            assert!(started.elapsed() < limit, "did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn metrics_text(&self) -> String {
        plain_get(self.metrics, "/metrics").await.text()
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The secrets the server adds to the job fixture's Pod (ghcr.io/acme/jobs/nightly).
async fn job_secrets(client: &mut H1) -> hyper::Result<Vec<String>> {
    Ok(job_review(client).await?.0)
}

/// Same, and whether the server asked to close the connection.
async fn job_review(client: &mut H1) -> hyper::Result<(Vec<String>, bool)> {
    let body = fixture("job-pod.json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let reply = client.send(mutate_request(body)).await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let close = reply
        .headers
        .get("connection")
        .is_some_and(|v| v == "close");
    Ok((
        pull_secrets(&apply_response(&request, &reply.json())),
        close,
    ))
}

/// A directory laid out like a kubelet-managed ConfigMap/Secret volume: `name -> ..data/name`,
/// `..data -> ..<version>`, updated by swapping the `..data` link atomically.
struct AtomicDir {
    root: PathBuf,
    version: usize,
}

impl AtomicDir {
    fn new(root: &Path, files: &[(&str, &[u8])]) -> Self {
        let mut dir = Self {
            root: root.to_owned(),
            version: 0,
        };
        dir.write(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), root.join(name))
                .unwrap();
        }
        dir
    }

    fn write(&mut self, files: &[(&str, &[u8])]) {
        self.version += 1;
        let versioned = format!("..2026_11_24_v{}", self.version);
        std::fs::create_dir(self.root.join(&versioned)).unwrap();
        for (name, content) in files {
            std::fs::write(self.root.join(&versioned).join(name), content).unwrap();
        }
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&versioned, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

#[tokio::test]
async fn runs_on_a_laptop_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut served = Served::start(&["--config", &config], None, dir.path());
    let mut client = H1::connect_to(served.addr, &served.ca_pem).await;
    assert_eq!(job_secrets(&mut client).await.unwrap(), ["ghcr-acme"]);
    assert!(
        served
            .metrics_text()
            .await
            .contains("pullsecret_injector_admission_reviews_total{outcome=\"patched\"} 1")
    );
    served.signal("TERM");
    let (ok, took) = served.wait(Duration::from_secs(10));
    assert!(ok, "exit status; logs: {}", served.logs());
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn refuses_to_start_with_a_broken_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "registries:\n  - match: ghcr.io\n    secret: ok\n  - match: \"*.pkg.dev[\"\n    secret: gar\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args([
            "serve",
            "--no-sync",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--self-signed-ca")
        .arg(dir.path().join("ca.crt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: rule 2 (match \"*.pkg.dev[\"): host label \"dev[\" is not a valid pattern: '[' is not closed"), "{stderr}");
    let missing = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args(["serve", "--no-sync", "--config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/config.yaml")
    );
}

#[tokio::test]
async fn runs_alone_when_no_cluster_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--self-signed-ca",
        ])
        .arg(dir.path().join("ca.crt"))
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let serving = line.contains("\"message\":\"serving\"");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("no cluster reachable"), "{text}");
    assert!(text.contains("\"message\":\"serving\""), "{text}");
}

#[tokio::test]
async fn a_closed_log_pipe_does_not_stop_serving_or_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let ca = dir.path().join("ca.crt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args([
            "serve",
            "--no-sync",
            "--config",
            &config,
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--self-signed-ca",
        ])
        .arg(&ca)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Whoever read the logs went away: every later write to stderr fails.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    drop(stderr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ca.exists() || tokio::net::TcpStream::connect(&listen).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = H1::connect_to(
        listen.parse().unwrap(),
        &std::fs::read_to_string(&ca).unwrap(),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            job_secrets(&mut client)
                .await
                .expect("served despite the closed log pipe"),
            ["ghcr-acme"]
        );
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM ignored with a closed log pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn config_reloads_and_a_broken_config_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("config");
    std::fs::create_dir(&mount).unwrap();
    let v1 = b"registries:\n  - match: ghcr.io/acme\n    secret: ghcr-acme\n";
    let mut volume = AtomicDir::new(&mount, &[("config.yaml", v1)]);
    let config = volume.path("config.yaml");
    let served = Served::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--reload-interval",
            "200ms",
        ],
        None,
        dir.path(),
    );
    let mut client = H1::connect_to(served.addr, &served.ca_pem).await;
    assert_eq!(job_secrets(&mut client).await.unwrap(), ["ghcr-acme"]);

    volume.write(&[(
        "config.yaml",
        b"registries:\n  - match: ghcr.io\n    secret: ghcr-all\n",
    )]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while job_secrets(&mut client).await.unwrap() != ["ghcr-all"] {
        assert!(
            Instant::now() < deadline,
            "config not reloaded; logs: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    volume.write(&[(
        "config.yaml",
        b"registries:\n  - match: \"ghcr.io[\"\n    secret: broken\n",
    )]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served
        .metrics_text()
        .await
        .contains("pullsecret_injector_config_reloads_total{result=\"failure\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "broken config not noticed; logs: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        job_secrets(&mut client).await.unwrap(),
        ["ghcr-all"],
        "last good config kept"
    );
    assert!(served.logs().contains("keeping the last good config"));
}

/// A CA and serving certificates it signs, as cert-manager or certs-scripts would make.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for localhost.
    fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        (
            params.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn served_leaf(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tls = tls_connect(addr, ca_pem, "localhost", &[b"http/1.1"])
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends reviews on `connections` keep-alive connections until `stop`; reconnects when the
/// server says `Connection: close`. Returns (answered, failed after being sent).
fn load(
    addr: SocketAddr,
    ca_pem: String,
    connections: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..connections)
        .map(|_| {
            let (ca_pem, stop, answered) = (ca_pem.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut client: Option<H1> = None;
                while !stop.load(Ordering::Relaxed) {
                    if client.as_ref().is_none_or(H1::is_closed) {
                        // A refused connection is not an accepted request: the caller counts
                        // those by timing, not here.
                        match tls_connect(addr, &ca_pem, "localhost", &[b"http/1.1"]).await {
                            Ok(tls) => {
                                let (sender, conn) = hyper::client::conn::http1::handshake(
                                    hyper_util::rt::TokioIo::new(tls),
                                )
                                .await
                                .unwrap();
                                tokio::spawn(conn);
                                client = Some(H1::from_sender(sender));
                            }
                            Err(_) => break,
                        }
                    }
                    let Some(c) = client.as_mut() else { break };
                    match job_review(c).await {
                        Ok((secrets, close)) if secrets == ["ghcr-acme"] => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            // As Go's HTTP client does: never reuse a connection the server closes.
                            if close {
                                client = None;
                            }
                        }
                        Ok((other, _)) => failures.push(format!("wrong answer {other:?}")),
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                }
                failures
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let (cert1, key1) = pki.leaf();
    let mount = dir.path().join("tls");
    std::fs::create_dir(&mount).unwrap();
    let mut volume = AtomicDir::new(
        &mount,
        &[("tls.crt", cert1.as_bytes()), ("tls.key", key1.as_bytes())],
    );
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let (crt, key) = (volume.path("tls.crt"), volume.path("tls.key"));
    let served = Served::start(
        &[
            "--config",
            &config,
            "--tls-cert",
            crt.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--reload-interval",
            "200ms",
        ],
        Some(pki.ca_pem.clone()),
        dir.path(),
    );
    assert_eq!(
        served_leaf(served.addr, &pki.ca_pem).await,
        leaf_der(&cert1)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers = load(
        served.addr,
        pki.ca_pem.clone(),
        4,
        stop.clone(),
        answered.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (cert2, key2) = pki.leaf();
    volume.write(&[("tls.crt", cert2.as_bytes()), ("tls.key", key2.as_bytes())]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_leaf(served.addr, &pki.ca_pem).await != leaf_der(&cert2) {
        assert!(
            Instant::now() < deadline,
            "new certificate not served; logs: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken pair (key of another certificate) is refused; the current one stays.
    let (cert3, _) = pki.leaf();
    volume.write(&[("tls.crt", cert3.as_bytes()), ("tls.key", key2.as_bytes())]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served
        .metrics_text()
        .await
        .contains("pullsecret_injector_certificate_reloads_total{result=\"failure\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "broken pair not noticed; logs: {}",
            served.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_leaf(served.addr, &pki.ca_pem).await,
        leaf_der(&cert2)
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        answered.load(Ordering::Relaxed) > 50,
        "the load ran: {}",
        answered.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_accepted_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let served = Served::start(
        &[
            "--config",
            &config,
            "--shutdown-delay",
            "1s",
            "--shutdown-grace",
            "5s",
        ],
        None,
        dir.path(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers = load(
        served.addr,
        served.ca_pem.clone(),
        8,
        stop.clone(),
        answered.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = answered.load(Ordering::Relaxed);

    let mut probe = H1::connect_to(served.addr, &served.ca_pem).await;
    assert_eq!(
        probe.send(get_request("/readyz")).await.unwrap().status,
        200
    );
    served.signal("TERM");
    let signalled = Instant::now();
    // Unready at once, while still serving.
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut probe = H1::connect_to(served.addr, &served.ca_pem).await;
        if probe.send(get_request("/readyz")).await.unwrap().status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz did not turn 503");
    }

    let (ok, served) = tokio::task::spawn_blocking(move || {
        let mut served = served;
        (served.wait(Duration::from_secs(10)).0, served)
    })
    .await
    .unwrap();
    let exited_after = signalled.elapsed();
    drop(served);
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(ok, "clean exit");
    assert!(
        exited_after < Duration::from_secs(6),
        "exit within delay + grace: {exited_after:?}"
    );
    assert!(
        failures.is_empty(),
        "accepted requests failed: {failures:?}"
    );
    let after = answered.load(Ordering::Relaxed);
    assert!(
        before > 20 && after > before,
        "served during the shutdown delay: {before} then {after}"
    );
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_completes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/examples/config.yaml", env!("CARGO_MANIFEST_DIR"));
    let mut served = Served::start(
        &["--config", &config, "--shutdown-grace", "5s"],
        None,
        dir.path(),
    );
    let body = fixture("job-pod.json");
    let tls = tls_connect(served.addr, &served.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (mut rx, mut tx) = tokio::io::split(tls);
    let head = format!(
        "POST /mutate?timeout=2s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tx.write_all(head.as_bytes()).await.unwrap();
    tx.write_all(&body[..body.len() / 2]).await.unwrap();
    tx.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    served.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: the listener is closed, but the request already begun is finished.
    assert!(
        tokio::net::TcpStream::connect(served.addr).await.is_err(),
        "no new connections while draining"
    );
    tx.write_all(&body[body.len() / 2..]).await.unwrap();
    tx.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"allowed\":true"), "{answer}");
    let (ok, _) = served.wait(Duration::from_secs(10));
    assert!(ok);
}
