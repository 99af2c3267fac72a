//! The webhook server over real TLS on loopback, with clients that trust only the test CA
//! and check the name, speaking HTTP/1.1 keep-alive (as the API server does) and HTTP/2.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use pullsecret_injector::server::Limits;
use serde_json::Value;

async fn start() -> TestServer {
    TestServer::start(example_config(), Limits::default()).await
}

#[tokio::test]
async fn recorded_reviews_over_http1_keep_alive() {
    let server = start().await;
    let mut client = H1::connect(&server).await;
    let cases: [(&str, &[&str]); 8] = [
        ("deployment-pod.json", &["gar-pull", "dockerhub"]),
        ("job-pod.json", &["ghcr-acme"]),
        (
            "serviceaccount-secrets-pod.json",
            &["sa-registry", "local-registry"],
        ),
        ("own-secrets-pod.json", &["team-own", "gar-pull"]),
        ("opted-out-pod.json", &[]),
        ("dry-run-pod.json", &[]),
        ("ephemeral-container-update.json", &["team-own", "gar-pull"]),
        (
            "thirty-container-pod.json",
            &["gar-pull", "ghcr-acme", "dockerhub", "local-registry"],
        ),
    ];
    // All on one connection: keep-alive must hold across reviews.
    for (name, expected) in cases {
        let body = fixture(name);
        let request: Value = serde_json::from_slice(&body).unwrap();
        let reply = client.send(mutate_request(body)).await.expect("request");
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.headers["content-type"], "application/json");
        let pod = apply_response(&request, &reply.json());
        assert_eq!(pull_secrets(&pod), expected, "{name}");
    }
    assert!(
        !client.is_closed(),
        "the server closed a keep-alive connection"
    );
    let metrics = server.metrics.encode();
    assert!(
        metrics.contains("pullsecret_injector_admission_reviews_total{outcome=\"patched\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pullsecret_injector_admission_reviews_total{outcome=\"opted_out\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pullsecret_injector_invalid_images_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pod_that_needs_a_secret_has_its_namespace_read_back_once() {
    let (verifier, mut requests) =
        pullsecret_injector::sync::Verifier::new(std::time::Duration::from_secs(30));
    let server = TestServer::start_verifying(example_config(), verifier).await;
    let mut client = H1::connect(&server).await;
    let mut no_match: Value = serde_json::from_slice(&fixture("job-pod.json")).unwrap();
    no_match["request"]["object"]["spec"]["containers"][0]["image"] = "quay.io/public/x:1".into();
    let mut elsewhere: Value = serde_json::from_slice(&fixture("job-pod.json")).unwrap();
    elsewhere["request"]["namespace"] = "team-b".into();
    let bodies = [
        // Nothing of ours is pulled for these: no read-back.
        fixture("dry-run-pod.json"),
        fixture("opted-out-pod.json"),
        serde_json::to_vec(&no_match).unwrap(),
        // These pull with our copies.
        fixture("deployment-pod.json"),
        fixture("job-pod.json"),
        serde_json::to_vec(&elsewhere).unwrap(),
    ];
    for body in bodies {
        let reply = client.send(mutate_request(body)).await.expect("request");
        assert_eq!(reply.status, 200);
    }
    drop(server);
    let mut asked = Vec::new();
    while let Ok(ns) = requests.try_recv() {
        asked.push(ns);
    }
    assert_eq!(
        asked,
        ["team-a", "team-b"],
        "once per namespace within the interval"
    );
}

#[tokio::test]
async fn many_reviews_on_one_http1_connection() {
    let server = start().await;
    let mut client = H1::connect(&server).await;
    let body = fixture("deployment-pod.json");
    for i in 0..200 {
        let reply = client
            .send(mutate_request(body.clone()))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(reply.status, 200);
    }
    assert!(!client.is_closed());
}

#[tokio::test]
async fn concurrent_reviews_over_http2() {
    let server = start().await;
    let client = H2::connect(&server).await;
    let body = fixture("job-pod.json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut client = client.clone();
            let body = body.clone();
            tokio::spawn(async move { client.send(mutate_request(body)).await })
        })
        .collect();
    for task in tasks {
        let reply = task.await.unwrap().expect("h2 request");
        assert_eq!(reply.status, 200);
        assert_eq!(
            pull_secrets(&apply_response(&request, &reply.json())),
            ["ghcr-acme"]
        );
    }
}

#[tokio::test]
async fn tls_is_verified_like_the_api_server_does() {
    let server = start().await;
    // The certificate's SANs are localhost and 127.0.0.1.
    assert!(
        tls_connect(server.addr, &server.ca_pem, "localhost", &[b"http/1.1"])
            .await
            .is_ok()
    );
    assert!(
        tls_connect(server.addr, &server.ca_pem, "127.0.0.1", &[b"http/1.1"])
            .await
            .is_ok()
    );
    let wrong_name = tls_connect(
        server.addr,
        &server.ca_pem,
        "pullsecret-injector.other.svc",
        &[b"http/1.1"],
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "a certificate for another name must be refused"
    );
    let other_ca = pullsecret_injector::tls::self_signed(&["localhost"])
        .unwrap()
        .ca_pem;
    let untrusted = tls_connect(server.addr, &other_ca, "localhost", &[b"http/1.1"]).await;
    assert!(
        untrusted.is_err(),
        "a certificate from another CA must be refused"
    );
    // No ALPN at all (an old client) still gets HTTP/1.1.
    let tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[])
        .await
        .expect("no ALPN");
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn tls_1_2_is_accepted_and_older_is_not_offered() {
    let server = start().await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(server.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = start().await;
    let mut client = H1::connect(&server).await;
    let healthz = client.send(get_request("/healthz")).await.unwrap();
    assert_eq!((healthz.status, healthz.text().as_str()), (200, "ok\n"));
    assert_eq!(
        client.send(get_request("/readyz")).await.unwrap().status,
        200
    );
    assert!(
        healthz.headers.get("connection").is_none(),
        "keep-alive while ready"
    );
    server.ready.store(false, Ordering::Release);
    let readyz = client.send(get_request("/readyz")).await.unwrap();
    assert_eq!(readyz.status, 503);
    // Shutting down: the answer tells the client to take its next request elsewhere.
    assert_eq!(readyz.headers["connection"], "close");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        client.is_closed(),
        "the server closes the connection after that answer"
    );
    // Unready still answers reviews: late requests must not fail.
    let mut client = H1::connect(&server).await;
    let reply = client
        .send(mutate_request(fixture("job-pod.json")))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["connection"], "close");
    // HTTP/2 has no Connection header; its streams are unaffected.
    let mut h2 = H2::connect(&server).await;
    let reply = h2
        .send(mutate_request(fixture("job-pod.json")))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get("connection").is_none());
}

#[tokio::test]
async fn metrics_port_serves_prometheus_text() {
    let metrics = std::sync::Arc::new(pullsecret_injector::metrics::Metrics::new());
    metrics.review(
        pullsecret_injector::admission::Outcome::Patched,
        std::time::Duration::from_micros(100),
        &["gar-pull".to_owned()],
        0,
    );
    // The second time a secret is counted takes the cached counter.
    metrics.review(
        pullsecret_injector::admission::Outcome::Patched,
        std::time::Duration::from_micros(100),
        &["gar-pull".to_owned(), "ghcr".to_owned()],
        0,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(pullsecret_injector::server::serve_metrics(
        listener,
        metrics,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let reply = plain_get(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(
        text.contains("pullsecret_injector_admission_reviews_total{outcome=\"patched\"} 2"),
        "{text}"
    );
    // Every outcome is exported from the start.
    assert!(
        text.contains("pullsecret_injector_admission_reviews_total{outcome=\"mirror_pod\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("pullsecret_injector_secrets_injected_total{secret=\"gar-pull\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("pullsecret_injector_secrets_injected_total{secret=\"ghcr\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE pullsecret_injector_admission_review_duration_seconds histogram"),
        "{text}"
    );
    // Two reviews of 100 µs each: both in the 125 µs bucket, none in the 50 µs one.
    for line in [
        "pullsecret_injector_admission_review_duration_seconds_count 2",
        "pullsecret_injector_admission_review_duration_seconds_sum 0.0002",
        "pullsecret_injector_admission_review_duration_seconds_bucket{le=\"0.00005\"} 0",
        "pullsecret_injector_admission_review_duration_seconds_bucket{le=\"0.000125\"} 2",
        "pullsecret_injector_admission_review_duration_seconds_bucket{le=\"+Inf\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn slow_body_gets_408_and_the_server_keeps_serving() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(example_config(), limits).await;
    // Send headers announcing a body, then only part of it.
    let tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (rx, mut tx) = tokio::io::split(tls);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tx.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\"").await.unwrap();
    let mut rx = rx;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), rx.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("not received in time"), "{head}");
    assert!(
        server
            .metrics
            .encode()
            .contains("pullsecret_injector_admission_rejected_total{reason=\"timeout\"} 1")
    );
    let mut client = H1::connect(&server).await;
    assert_eq!(client.review_status().await, 200);
}

/// Reads until the server ends the connection; fails if it is still open after `within`.
async fn closed_by_server(mut rx: impl tokio::io::AsyncRead + Unpin, within: Duration) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .unwrap_or_else(|_| panic!("the server did not close the connection: {seen:?}"));
    seen
}

async fn start_with_idle_timeout(idle_timeout: Duration) -> TestServer {
    let limits = Limits {
        idle_timeout,
        ..Limits::default()
    };
    TestServer::start(example_config(), limits).await
}

#[tokio::test]
async fn idle_keep_alive_connections_and_unfinished_heads_are_closed() {
    let server = start_with_idle_timeout(Duration::from_millis(300)).await;

    // A keep-alive connection that answered one review, then sits idle.
    let mut client = H1::connect(&server).await;
    assert_eq!(client.review_status().await, 200);
    until_closed("idle connection", || client.is_closed()).await;

    // A request head that never ends (a slow or stuck client) does not hold a connection.
    let tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let (rx, mut tx) = tokio::io::split(tls);
    use tokio::io::AsyncWriteExt;
    tx.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let seen = closed_by_server(rx, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the idle timeout"
    );
    assert!(
        seen.is_empty() || seen.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    // A connection that never sends anything at all.
    let tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let _ = closed_by_server(tls, Duration::from_secs(5)).await;

    // The server itself is fine.
    let mut client = H1::connect(&server).await;
    assert_eq!(client.review_status().await, 200);
}

#[tokio::test]
async fn http2_peers_that_stop_answering_pings_are_closed_and_live_ones_kept() {
    let server = start_with_idle_timeout(Duration::from_millis(300)).await;

    // A live client answers hyper's keep-alive pings: busy, then idle for several periods,
    // the same connection still answers.
    let mut client = H2::connect(&server).await;
    for _ in 0..3 {
        assert_eq!(client.review_status().await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!client.is_closed());
    assert_eq!(client.review_status().await, 200);

    // A peer that sends its preface and SETTINGS, then goes silent: the unanswered ping
    // closes it after the idle period and the ping timeout.
    let mut tls = tls_connect(server.addr, &server.ca_pem, "localhost", &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    use tokio::io::AsyncWriteExt;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let _ = closed_by_server(tls, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut client = H2::connect(&server).await;
    assert_eq!(client.review_status().await, 200);
}
