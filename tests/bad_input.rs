//! A corpus of bad requests: each gets a definite answer (never a panic, never a denial of
//! the Pod), and the server keeps serving afterwards.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Request;
use pullsecret_injector::server::Limits;
use serde_json::{Value, json};

/// What a case must get back.
enum Expect {
    /// An HTTP error whose one-line body contains this text.
    Error(u16, &'static str),
    /// 200, `allowed: true`, no patch.
    AllowedUnchanged,
}

struct Case {
    name: &'static str,
    request: Request<Full<Bytes>>,
    expect: Expect,
}

fn review_with(request: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request })).unwrap()
}

fn pod_review_with_object(object: Value) -> Vec<u8> {
    review_with(json!({
        "uid": "u-1",
        "kind": { "group": "", "version": "v1", "kind": "Pod" },
        "resource": { "group": "", "version": "v1", "resource": "pods" },
        "operation": "CREATE",
        "namespace": "team-a",
        "object": object,
    }))
}

fn with_content_type(body: impl Into<Bytes>, content_type: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::post("https://localhost/mutate").header("host", "localhost");
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Full::new(body.into())).unwrap()
}

fn corpus() -> Vec<Case> {
    use Expect::*;
    let good = fixture("deployment-pod.json");
    let truncated = good[..good.len() / 2].to_vec();
    let mut cases = vec![
        ("malformed JSON", mutate_request(&b"{\"apiVersion\":"[..]), Error(400, "not a JSON AdmissionReview")),
        ("truncated body", mutate_request(truncated), Error(400, "EOF")),
        ("empty body", mutate_request(Bytes::new()), Error(400, "not a JSON AdmissionReview")),
        ("JSON null", mutate_request(&b"null"[..]), Error(400, "not a JSON AdmissionReview")),
        ("JSON array", mutate_request(&b"[]"[..]), Error(400, "not a JSON AdmissionReview")),
        ("JSON string", mutate_request(&b"\"AdmissionReview\""[..]), Error(400, "not a JSON AdmissionReview")),
        ("JSON number", mutate_request(&b"42"[..]), Error(400, "not a JSON AdmissionReview")),
        ("trailing garbage", mutate_request([good.clone(), b" x".to_vec()].concat()), Error(400, "trailing characters")),
        ("byte order mark", mutate_request([b"\xEF\xBB\xBF".to_vec(), good.clone()].concat()), Error(400, "not a JSON AdmissionReview")),
        ("non-UTF-8 bytes", mutate_request(&b"{\"apiVersion\":\"\xff\xfe\"}"[..]), Error(400, "not a JSON AdmissionReview")),
        ("gzip-compressed body", mutate_request(&b"\x1f\x8b\x08\x00\x00\x00\x00\x00"[..]), Error(400, "not a JSON AdmissionReview")),
        ("deeply nested JSON", mutate_request("[".repeat(100_000)), Error(400, "not a JSON AdmissionReview")),
        ("deeply nested map", mutate_request(format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000))), Error(400, "expected apiVersion")),
        ("wrong kind: a Pod", mutate_request(serde_json::to_vec(&json!({ "apiVersion": "v1", "kind": "Pod" })).unwrap()), Error(400, "expected apiVersion")),
        ("v1beta1 AdmissionReview", mutate_request(serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": { "uid": "u" } })).unwrap()), Error(400, "admission.k8s.io/v1beta1")),
        ("no apiVersion or kind", mutate_request(&b"{}"[..]), Error(400, "expected apiVersion")),
        ("kind not a string", mutate_request(serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": 7 })).unwrap()), Error(400, "invalid type")),
        ("no request", mutate_request(serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" })).unwrap()), Error(400, "no request")),
        ("request null", mutate_request(review_with(Value::Null)), Error(400, "no request")),
        ("request a list", mutate_request(review_with(json!([]))), Error(400, "not a JSON AdmissionReview")),
        ("missing uid", mutate_request(review_with(json!({ "operation": "CREATE" }))), Error(400, "no uid")),
        ("empty uid", mutate_request(review_with(json!({ "uid": "" }))), Error(400, "no uid")),
        ("uid a number", mutate_request(review_with(json!({ "uid": 12 }))), Error(400, "invalid type")),
        ("dryRun a string", mutate_request(review_with(json!({ "uid": "u", "dryRun": "yes" }))), Error(400, "invalid type")),
        ("object null", mutate_request(pod_review_with_object(Value::Null)), AllowedUnchanged),
        ("object a string", mutate_request(pod_review_with_object(json!("pod"))), AllowedUnchanged),
        ("containers not a list", mutate_request(pod_review_with_object(json!({ "spec": { "containers": { "name": "c" } } }))), AllowedUnchanged),
        ("containers a list of strings", mutate_request(pod_review_with_object(json!({ "spec": { "containers": ["nginx"] } }))), AllowedUnchanged),
        ("image a number", mutate_request(pod_review_with_object(json!({ "spec": { "containers": [{ "name": "c", "image": 1 }] } }))), AllowedUnchanged),
        ("imagePullSecrets a string", mutate_request(pod_review_with_object(json!({ "spec": { "containers": [{ "image": "nginx" }], "imagePullSecrets": "x" } }))), AllowedUnchanged),
        ("annotations a list", mutate_request(pod_review_with_object(json!({ "metadata": { "annotations": ["x"] }, "spec": { "containers": [{ "image": "nginx" }] } }))), AllowedUnchanged),
        ("extra unknown fields", mutate_request(pod_review_with_object(json!({ "spec": { "containers": [{ "image": "quay.io/x/y", "x-unknown": { "a": [1, 2] } }] }, "status": {} }))), AllowedUnchanged),
        ("image that is not a reference", mutate_request(pod_review_with_object(json!({ "spec": { "containers": [{ "name": "c", "image": "ghcr.io/Acme/x:1" }] } }))), AllowedUnchanged),
        ("image of 100 kB", mutate_request(pod_review_with_object(json!({ "spec": { "containers": [{ "name": "c", "image": "a".repeat(100_000) }] } }))), AllowedUnchanged),
        ("10 MB body", mutate_request(vec![b' '; 10 * 1024 * 1024]), Error(413, "length limit exceeded")),
        ("just over the body limit", mutate_request(vec![b' '; Limits::default().max_body_bytes + 1]), Error(413, "length limit exceeded")),
        ("text/plain content type", with_content_type(good.clone(), Some("text/plain")), Error(415, "Content-Type must be application/json")),
        ("no content type", with_content_type(good.clone(), None), Error(415, "Content-Type must be application/json")),
        ("GET /mutate", get_request("/mutate"), Error(405, "")),
        ("PUT /mutate", Request::put("https://localhost/mutate").header("host", "localhost").header("content-type", "application/json").body(Full::new(Bytes::from(good.clone()))).unwrap(), Error(405, "")),
        ("unknown path", Request::post("https://localhost/validate").header("host", "localhost").header("content-type", "application/json").body(Full::new(Bytes::from(good.clone()))).unwrap(), Error(404, "")),
    ];
    // Nesting deeper than serde_json's limit inside the Pod: the Pod is unreadable, so it is
    // allowed unchanged.
    let template = String::from_utf8(pod_review_with_object(json!({ "spec": "DEEP" }))).unwrap();
    let deep = template.replace(
        "\"DEEP\"",
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    );
    cases.push((
        "deep nesting inside the Pod",
        mutate_request(deep),
        AllowedUnchanged,
    ));
    cases
        .into_iter()
        .map(|(name, request, expect)| Case {
            name,
            request,
            expect,
        })
        .collect()
}

#[tokio::test]
async fn every_bad_input_gets_a_definite_answer_and_the_server_keeps_serving() {
    let server = TestServer::start(example_config(), Limits::default()).await;
    let cases = corpus();
    assert!(cases.len() >= 30);
    let mut client = H1::connect(&server).await;
    for case in cases {
        if client.is_closed() {
            // After a 413 the server does not read the rest of the body: a fresh connection.
            client = H1::connect(&server).await;
        }
        let reply = client
            .send(case.request)
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", case.name));
        match case.expect {
            Expect::Error(status, text) => {
                assert_eq!(reply.status, status, "{}: {}", case.name, reply.text());
                assert!(
                    reply.text().contains(text),
                    "{}: {:?} lacks {text:?}",
                    case.name,
                    reply.text()
                );
                assert!(
                    reply.text().trim_end().lines().count() <= 1,
                    "{}: one line: {:?}",
                    case.name,
                    reply.text()
                );
            }
            Expect::AllowedUnchanged => {
                assert_eq!(reply.status, 200, "{}: {}", case.name, reply.text());
                let answer = reply.json();
                assert_eq!(answer["response"]["allowed"], true, "{}", case.name);
                assert_eq!(answer["response"]["uid"], "u-1", "{}", case.name);
                assert!(
                    answer["response"]["patch"].is_null(),
                    "{}: {answer}",
                    case.name
                );
            }
        }
    }
    // Still serving, on a new connection and with the right answer.
    let mut client = H1::connect(&server).await;
    let body = fixture("deployment-pod.json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let reply = client.send(mutate_request(body)).await.unwrap();
    assert_eq!(
        pull_secrets(&apply_response(&request, &reply.json())),
        ["gar-pull", "dockerhub"]
    );
    let metrics = server.metrics.encode();
    assert!(
        metrics.contains("pullsecret_injector_admission_rejected_total{reason=\"too_large\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pullsecret_injector_admission_rejected_total{reason=\"content_type\"} 2"),
        "{metrics}"
    );
}
