//! The secret sync's reconcile against kube-rs' mock service (`tower-test`): a small fake
//! API server keeps Secrets and Events in memory with the semantics the sync relies on
//! (404s, server-side apply, resourceVersion and uid preconditions, immutable type), and can
//! inject faults. Tests assert on the state it ends in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use pullsecret_injector::config::{Config, ConfigStore};
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::sync::{self, Context, Error};
use serde_json::{Value, json};

const OWN_NS: &str = "pullsecret-injector";

// ---- the fake API server ------------------------------------------------------------------

#[derive(Default)]
struct State {
    secrets: BTreeMap<(String, String), Value>,
    events: Vec<Value>,
    next_rv: u64,
    /// Answers to give instead of the real one, for the next requests.
    faults: VecDeque<u16>,
    /// Someone else writes the object right after each GET, once.
    race_after_get: bool,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code }),
    )
}

impl FakeApi {
    fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (code, body) = api.handle(request).await;
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    async fn handle(&self, request: Request<Body>) -> (u16, Value) {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let mut st = self.state();
        st.requests.push(format!("{method} {path}"));
        if let Some(code) = st.faults.pop_front() {
            return status(code, "Fault", "injected fault");
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                st.events.push(body.clone());
                (201, body)
            }
            ("PATCH", ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => (200, body),
            (_, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let key = (ns.to_string(), name.to_string());
                st.secret(method.as_str(), key, body)
            }
            _ => status(404, "NotFound", &format!("unexpected {method} {path}")),
        }
    }
}

impl State {
    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    fn secret(&mut self, method: &str, key: (String, String), body: Value) -> (u16, Value) {
        let not_found = status(404, "NotFound", &format!("secrets \"{}\" not found", key.1));
        match method {
            "GET" => match self.secrets.get(&key).cloned() {
                Some(secret) => {
                    if std::mem::take(&mut self.race_after_get) {
                        let rv = self.bump();
                        self.secrets.get_mut(&key).unwrap()["metadata"]["resourceVersion"] =
                            json!(rv);
                    }
                    (200, secret)
                }
                None => not_found,
            },
            "PATCH" => {
                let rv = self.bump();
                match self.secrets.get_mut(&key) {
                    Some(existing) => {
                        if let Some(want) = body["metadata"]["resourceVersion"].as_str()
                            && existing["metadata"]["resourceVersion"] != want
                        {
                            return status(409, "Conflict", "the object has been modified");
                        }
                        if body.get("type").is_some() && existing["type"] != body["type"] {
                            return status(422, "Invalid", "field is immutable: type");
                        }
                        for field in ["labels", "annotations"] {
                            for (k, v) in body["metadata"][field]
                                .as_object()
                                .cloned()
                                .unwrap_or_default()
                            {
                                existing["metadata"][field][k] = v;
                            }
                        }
                        existing["data"] = body["data"].clone();
                        existing["metadata"]["resourceVersion"] = json!(rv);
                        (200, existing.clone())
                    }
                    None => {
                        let mut created = body;
                        created["metadata"]["uid"] = json!(format!("uid-{rv}"));
                        created["metadata"]["resourceVersion"] = json!(rv);
                        self.secrets.insert(key, created.clone());
                        (201, created)
                    }
                }
            }
            "DELETE" => match self.secrets.get(&key) {
                None => not_found,
                Some(existing) => {
                    let pre = &body["preconditions"];
                    let mismatch = |field: &str| {
                        pre[field].is_string() && pre[field] != existing["metadata"][field]
                    };
                    if mismatch("uid") || mismatch("resourceVersion") {
                        return status(409, "Conflict", "precondition failed");
                    }
                    let gone = self.secrets.remove(&key).unwrap();
                    (200, gone)
                }
            },
            _ => status(405, "MethodNotAllowed", method),
        }
    }
}

// ---- fixtures -----------------------------------------------------------------------------

fn namespace(name: &str, opted_in: bool) -> Arc<Namespace> {
    let labels = opted_in.then(|| {
        BTreeMap::from([(
            "pullsecret-injector.io/inject".to_owned(),
            "enabled".to_owned(),
        )])
    });
    Arc::new(Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels,
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    })
}

fn source(name: &str, type_: &str, password: &str) -> Secret {
    let config =
        format!("{{\"auths\":{{\"ghcr.io\":{{\"username\":\"u\",\"password\":\"{password}\"}}}}}}");
    let key = if type_ == sync::DOCKER_CFG {
        ".dockercfg"
    } else {
        ".dockerconfigjson"
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(OWN_NS.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(config.into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn config(secrets: &[&str]) -> Config {
    let mut text = String::from("registries:\n");
    for (i, s) in secrets.iter().enumerate() {
        text.push_str(&format!("  - match: r{i}.example.com\n    secret: {s}\n"));
    }
    Config::from_yaml(&text).unwrap().0
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    writer: Writer<Secret>,
    store: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(secrets: &[&str], sources: Vec<Secret>) -> Self {
        Self::with_api(FakeApi::default(), secrets, sources)
    }

    fn with_api(api: FakeApi, secrets: &[&str], sources: Vec<Secret>) -> Self {
        captured_logs();
        let (reader, mut writer): (Store<Secret>, Writer<Secret>) = reflector::store();
        // What the reflector sees from the initial list.
        writer.apply_watcher_event(&watcher::Event::Init);
        for s in sources {
            writer.apply_watcher_event(&watcher::Event::InitApply(s));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let store = Arc::new(ConfigStore::new(config(secrets)));
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            api.client(),
            OWN_NS.to_owned(),
            store.clone(),
            reader,
            metrics.clone(),
            Duration::from_secs(60),
        ));
        Self {
            api,
            ctx,
            writer,
            store,
            metrics,
        }
    }

    async fn reconcile(&self, ns: &Arc<Namespace>) -> Result<Action, Error> {
        sync::reconcile(ns.clone(), self.ctx.clone()).await
    }

    fn copy(&self, ns: &str, name: &str) -> Option<Value> {
        self.api
            .state()
            .secrets
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    fn put(&self, ns: &str, name: &str, secret: Value) {
        let mut st = self.api.state();
        let rv = st.bump();
        let mut secret = secret;
        secret["metadata"]["resourceVersion"] = json!(rv);
        secret["metadata"]["uid"] = json!(format!("uid-{rv}"));
        st.secrets.insert((ns.to_owned(), name.to_owned()), secret);
    }

    fn writes(&self) -> usize {
        self.api
            .state()
            .requests
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .count()
    }

    fn requests(&self) -> usize {
        self.api.state().requests.len()
    }
}

fn data_of(secret: &Secret) -> Value {
    serde_json::to_value(secret.data.as_ref().unwrap()).unwrap()
}

// ---- cases --------------------------------------------------------------------------------

#[tokio::test]
async fn new_namespace_gets_a_copy_of_every_source() {
    let gar = source("gar-pull", sync::DOCKER_CONFIG_JSON, "p1");
    let legacy = source("legacy", sync::DOCKER_CFG, "p2");
    let h = Harness::new(&["gar-pull", "legacy"], vec![gar.clone(), legacy.clone()]);
    let action = h
        .reconcile(&namespace("team-a", true))
        .await
        .expect("reconcile");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "opted-in namespaces are re-checked"
    );

    for (name, src) in [("gar-pull", &gar), ("legacy", &legacy)] {
        let copy = h.copy("team-a", name).expect("copy");
        assert_eq!(copy["type"], json!(src.type_));
        assert_eq!(copy["data"], data_of(src));
        assert_eq!(
            copy["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "pullsecret-injector"
        );
        assert_eq!(
            copy["metadata"]["annotations"]["pullsecret-injector.io/source"],
            format!("{OWN_NS}/{name}")
        );
        assert_eq!(
            copy["metadata"]["annotations"]["pullsecret-injector.io/source-hash"],
            json!(sync::content_hash(src))
        );
    }
    assert!(
        h.metrics
            .encode()
            .contains("pullsecret_injector_sync_secrets_applied_total{secret=\"gar-pull\"} 1")
    );
}

#[tokio::test]
async fn a_current_copy_costs_one_get_and_no_write() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p1")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let (writes, requests) = (h.writes(), h.requests());
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.writes(), writes, "no write when the copy is current");
    assert_eq!(h.requests(), requests + 1, "one GET per copy");
}

#[tokio::test]
async fn rotation_updates_the_copy_in_place() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let uid = h.copy("team-a", "gar-pull").unwrap()["metadata"]["uid"].clone();

    let rotated = source("gar-pull", sync::DOCKER_CONFIG_JSON, "new");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(rotated.clone()));
    h.reconcile(&ns).await.unwrap();
    let copy = h.copy("team-a", "gar-pull").unwrap();
    assert_eq!(copy["data"], data_of(&rotated));
    assert_eq!(
        copy["metadata"]["annotations"]["pullsecret-injector.io/source-hash"],
        json!(sync::content_hash(&rotated))
    );
    assert_eq!(
        copy["metadata"]["uid"], uid,
        "updated, never deleted and recreated"
    );
}

#[tokio::test]
async fn a_copy_edited_by_someone_is_restored() {
    let src = source("gar-pull", sync::DOCKER_CONFIG_JSON, "p");
    let h = Harness::new(&["gar-pull"], vec![src.clone()]);
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let mut edited = h.copy("team-a", "gar-pull").unwrap();
    edited["data"] = json!({ ".dockerconfigjson": "e30=" });
    h.put("team-a", "gar-pull", edited);
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.copy("team-a", "gar-pull").unwrap()["data"], data_of(&src));
}

#[tokio::test]
async fn opting_out_removes_our_copies_only() {
    let h = Harness::new(
        &["gar-pull", "ghcr"],
        vec![
            source("gar-pull", sync::DOCKER_CONFIG_JSON, "p"),
            source("ghcr", sync::DOCKER_CONFIG_JSON, "q"),
        ],
    );
    h.reconcile(&namespace("team-a", true)).await.unwrap();
    // Someone replaced one of them with their own Secret (no managed-by label).
    h.put("team-a", "ghcr", json!({ "metadata": { "name": "ghcr", "namespace": "team-a" }, "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } }));

    let action = h.reconcile(&namespace("team-a", false)).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        h.copy("team-a", "gar-pull").is_none(),
        "managed copy deleted"
    );
    assert_eq!(
        h.copy("team-a", "ghcr").expect("kept")["data"][".dockerconfigjson"],
        "e30=",
        "foreign Secret untouched"
    );

    // Known clean now: further events on the namespace cost no API call.
    let requests = h.requests();
    h.reconcile(&namespace("team-a", false)).await.unwrap();
    assert_eq!(h.requests(), requests);
    assert!(
        h.metrics
            .encode()
            .contains("pullsecret_injector_sync_secrets_deleted_total{secret=\"gar-pull\"} 1")
    );
}

#[tokio::test]
async fn a_foreign_secret_of_the_same_name_is_never_overwritten() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p")],
    );
    let foreign = json!({ "metadata": { "name": "gar-pull", "namespace": "team-a", "labels": { "team": "a" } }, "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } });
    h.put("team-a", "gar-pull", foreign);
    let before = h.copy("team-a", "gar-pull").unwrap();
    h.reconcile(&namespace("team-a", true))
        .await
        .expect("a conflict is not an error");
    assert_eq!(
        h.copy("team-a", "gar-pull").unwrap(),
        before,
        "byte for byte unchanged"
    );

    let events = h.api.state().events.clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "PullSecretConflict");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["regarding"]["name"], "gar-pull");
    assert_eq!(events[0]["regarding"]["namespace"], "team-a");
    assert!(
        h.metrics
            .encode()
            .contains("pullsecret_injector_sync_conflicts_total{secret=\"gar-pull\"} 1")
    );
}

#[tokio::test]
async fn a_missing_source_is_an_error_and_the_others_still_sync() {
    let h = Harness::new(
        &["absent", "gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p")],
    );
    let error = h
        .reconcile(&namespace("team-a", true))
        .await
        .expect_err("missing source");
    assert!(
        matches!(error, Error::MissingSource { ref name, .. } if name == "absent"),
        "{error}"
    );
    assert!(h.copy("team-a", "gar-pull").is_some());
    assert!(h.copy("team-a", "absent").is_none());
    assert!(
        h.metrics
            .encode()
            .contains("pullsecret_injector_sync_errors_total{reason=\"missing_source\"} 1")
    );
}

#[tokio::test]
async fn a_source_of_another_type_is_not_copied() {
    let h = Harness::new(&["opaque"], vec![source("opaque", "Opaque", "p")]);
    let error = h
        .reconcile(&namespace("team-a", true))
        .await
        .expect_err("wrong type");
    assert!(matches!(error, Error::UnsupportedType { .. }), "{error}");
    assert!(h.copy("team-a", "opaque").is_none());
    assert_eq!(h.writes(), 0);
}

#[tokio::test]
async fn api_errors_back_off_then_converge() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p")],
    );
    let ns = namespace("team-a", true);
    h.api.state().faults.extend([500, 403]);
    let first = h.reconcile(&ns).await.expect_err("500");
    assert_eq!(first.metric_label(), "server_error");
    assert_eq!(
        sync::error_policy(ns.clone(), &first, h.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    let second = h.reconcile(&ns).await.expect_err("403");
    assert_eq!(second.metric_label(), "forbidden");
    assert_eq!(
        sync::error_policy(ns.clone(), &second, h.ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    h.reconcile(&ns).await.expect("recovers");
    assert!(h.copy("team-a", "gar-pull").is_some());
    // Success resets the backoff.
    assert_eq!(
        sync::error_policy(ns.clone(), &first, h.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn a_write_racing_ours_is_refused_then_retried() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let rotated = source("gar-pull", sync::DOCKER_CONFIG_JSON, "new");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(rotated.clone()));
    h.api.state().race_after_get = true;
    let error = h.reconcile(&ns).await.expect_err("409");
    assert_eq!(error.metric_label(), "conflict");
    h.reconcile(&ns).await.expect("retry");
    assert_eq!(
        h.copy("team-a", "gar-pull").unwrap()["data"],
        data_of(&rotated)
    );
}

#[tokio::test]
async fn two_replicas_converge_on_the_same_copies() {
    let api = FakeApi::default();
    let sources = vec![
        source("gar-pull", sync::DOCKER_CONFIG_JSON, "p"),
        source("ghcr", sync::DOCKER_CFG, "q"),
    ];
    let a = Harness::with_api(api.clone(), &["gar-pull", "ghcr"], sources.clone());
    let b = Harness::with_api(api.clone(), &["gar-pull", "ghcr"], sources.clone());
    let ns = namespace("team-a", true);
    let (ra, rb) = tokio::join!(a.reconcile(&ns), b.reconcile(&ns));
    // Interleaved, one may lose a resourceVersion race; its retry must converge.
    if ra.is_err() {
        a.reconcile(&ns).await.expect("a converges");
    }
    if rb.is_err() {
        b.reconcile(&ns).await.expect("b converges");
    }
    for src in &sources {
        let copy = a
            .copy("team-a", src.metadata.name.as_deref().unwrap())
            .expect("copy");
        assert_eq!(copy["data"], data_of(src));
    }
    assert_eq!(api.state().secrets.len(), 2);
    let writes = a.writes();
    let (ra, rb) = tokio::join!(a.reconcile(&ns), b.reconcile(&ns));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.writes(), writes, "once converged, neither replica writes");
}

#[tokio::test]
async fn a_rule_removed_from_the_config_removes_its_copies() {
    let h = Harness::new(
        &["gar-pull", "ghcr"],
        vec![
            source("gar-pull", sync::DOCKER_CONFIG_JSON, "p"),
            source("ghcr", sync::DOCKER_CONFIG_JSON, "q"),
        ],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let before = h.store.load().secrets().to_vec();
    h.store.store(config(&["gar-pull"]));
    h.ctx.config_changed(&before, h.store.load().secrets());
    h.reconcile(&ns).await.unwrap();
    assert!(h.copy("team-a", "ghcr").is_none());
    assert!(h.copy("team-a", "gar-pull").is_some());
}

#[tokio::test]
async fn a_secret_type_change_replaces_the_copy() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CFG, "p")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let converted = source("gar-pull", sync::DOCKER_CONFIG_JSON, "p");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(converted.clone()));
    h.reconcile(&ns).await.unwrap();
    let copy = h.copy("team-a", "gar-pull").unwrap();
    assert_eq!(copy["type"], sync::DOCKER_CONFIG_JSON);
    assert_eq!(copy["data"], data_of(&converted));
}

#[tokio::test]
async fn the_injectors_own_namespace_is_left_alone() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p")],
    );
    h.reconcile(&namespace(OWN_NS, true)).await.unwrap();
    assert_eq!(h.requests(), 0);
}

#[tokio::test]
async fn a_terminating_namespace_is_not_written_to() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, "p")],
    );
    let mut ns = (*namespace("team-a", true)).clone();
    ns.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    assert!(!sync::is_opted_in(&ns));
    h.reconcile(&Arc::new(ns)).await.unwrap();
    assert_eq!(h.writes(), 0);
}

/// A writer the log subscriber fills, to read back what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every test of this file logs at TRACE into one buffer (a process-wide subscriber: a
/// thread-local one misses events when tests run in parallel).
fn captured_logs() -> &'static Captured {
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

#[tokio::test]
async fn no_secret_data_reaches_the_logs_at_any_level() {
    let captured = captured_logs();

    let marker = "hunter2-PASSWORD-MARKER";
    let mut h = Harness::new(
        &["gar-pull", "absent"],
        vec![source("gar-pull", sync::DOCKER_CONFIG_JSON, marker)],
    );
    let ns = namespace("team-a", true);
    let _ = h.reconcile(&ns).await;
    h.writer.apply_watcher_event(&watcher::Event::Apply(source(
        "gar-pull",
        sync::DOCKER_CONFIG_JSON,
        &format!("{marker}-2"),
    )));
    h.api.state().faults.push_back(500);
    let _ = h.reconcile(&ns).await;
    let _ = h.reconcile(&ns).await;
    h.put(
        "team-b",
        "gar-pull",
        json!({ "metadata": { "name": "gar-pull" }, "data": { ".dockerconfigjson": "e30=" } }),
    );
    let _ = h.reconcile(&namespace("team-b", true)).await;
    let _ = h.reconcile(&namespace("team-a", false)).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("secret copy applied"),
        "the test must capture the sync's logs: {logs}"
    );
    let src = source("gar-pull", sync::DOCKER_CONFIG_JSON, marker);
    let b64 = serde_json::to_value(src.data.unwrap()).unwrap()[".dockerconfigjson"]
        .as_str()
        .unwrap()
        .to_owned();
    // Debug of a Secret prints ByteString data as decimal bytes.
    let as_bytes = marker
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for needle in [marker, &b64[..40], &as_bytes] {
        assert!(!logs.contains(needle), "secret data in the logs: {needle}");
    }
}
