//! The secret sync's reconcile against kube-rs' mock service (`tower-test`) answered by the
//! fake API server of `fake_api/` (404s, server-side apply, create, resourceVersion and uid
//! preconditions, immutable type, injected faults). Each test calls reconcile the way the
//! controller does and asserts on the state the fake ends in and on the requests it got.

mod common;
mod fake_api;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fake_api::FakeApi;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::names;
use pullsecret_injector::sync::{self, Context, Error, NamespaceMeta};
use pullsecret_injector::watch::ConfigStore;
use serde_json::{Value, json};

const OWN_NS: &str = "pullsecret-injector";

// ---- fixtures -----------------------------------------------------------------------------

const RESYNC: Duration = Duration::from_secs(60);

fn namespace(name: &str, opted_in: bool) -> Arc<NamespaceMeta> {
    let labels = opted_in.then(|| {
        BTreeMap::from([(
            "pullsecret-injector.io/inject".to_owned(),
            "enabled".to_owned(),
        )])
    });
    Arc::new(
        ObjectMeta {
            name: Some(name.to_owned()),
            labels,
            ..ObjectMeta::default()
        }
        .into_response_partial::<Namespace>(),
    )
}

fn source(name: &str, type_: &str, password: &str) -> Secret {
    let config =
        format!("{{\"auths\":{{\"ghcr.io\":{{\"username\":\"u\",\"password\":\"{password}\"}}}}}}");
    let key = if type_ == names::DOCKER_CFG {
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
        common::captured_logs();
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
            RESYNC,
        ));
        Self {
            api,
            ctx,
            writer,
            store,
            metrics,
        }
    }

    async fn reconcile(&self, ns: &Arc<NamespaceMeta>) -> Result<Action, Error> {
        sync::reconcile(ns.clone(), self.ctx.clone()).await
    }

    fn copy(&self, ns: &str, name: &str) -> Option<Value> {
        self.api.secret(ns, name)
    }

    fn put(&self, ns: &str, name: &str, secret: Value) {
        self.api.put_secret(ns, name, secret);
    }

    fn writes(&self) -> usize {
        self.api
            .state()
            .requests
            .iter()
            .filter(|r| r.method != http::Method::GET)
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
    let gar = source("gar-pull", names::DOCKER_CONFIG_JSON, "p1");
    let legacy = source("legacy", names::DOCKER_CFG, "p2");
    let h = Harness::new(&["gar-pull", "legacy"], vec![gar.clone(), legacy.clone()]);
    let action = h
        .reconcile(&namespace("team-a", true))
        .await
        .expect("reconcile");
    assert_ne!(
        action,
        Action::await_change(),
        "opted-in namespaces are read back at their slot"
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

#[tokio::test(start_paused = true)]
async fn a_known_current_copy_costs_nothing_until_its_read_back_then_one_get() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p1")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let (writes, requests) = (h.writes(), h.requests());
    // Watch restarts, config reloads and source events reconcile every namespace.
    h.reconcile(&ns).await.unwrap();
    tokio::time::advance(RESYNC / 3).await;
    h.reconcile(&ns).await.unwrap();
    assert_eq!(
        h.requests(),
        requests,
        "no request before the read-back is due"
    );
    // Its slot comes between half an interval and one and a half after the last read.
    tokio::time::advance(RESYNC * 3 / 2).await;
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.requests(), requests + 1, "one GET per copy");
    assert_eq!(h.writes(), writes, "no write when the copy is current");
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.requests(), requests + 1, "read back once per interval");
    assert!(
        h.metrics.encode().contains(
            "pullsecret_injector_sync_namespace_verifications_total{reason=\"resync\"} 1"
        )
    );
}

#[tokio::test]
async fn rotation_updates_the_copy_in_place() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let uid = h.copy("team-a", "gar-pull").unwrap()["metadata"]["uid"].clone();

    let rotated = source("gar-pull", names::DOCKER_CONFIG_JSON, "new");
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

#[tokio::test(start_paused = true)]
async fn a_copy_edited_by_someone_is_restored_at_its_read_back() {
    let src = source("gar-pull", names::DOCKER_CONFIG_JSON, "p");
    let h = Harness::new(&["gar-pull"], vec![src.clone()]);
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let mut edited = h.copy("team-a", "gar-pull").unwrap();
    edited["data"] = json!({ ".dockerconfigjson": "e30=" });
    h.put("team-a", "gar-pull", edited);
    tokio::time::advance(RESYNC * 3 / 2).await;
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.copy("team-a", "gar-pull").unwrap()["data"], data_of(&src));
}

#[tokio::test]
async fn opting_out_removes_our_copies_only() {
    let h = Harness::new(
        &["gar-pull", "ghcr"],
        vec![
            source("gar-pull", names::DOCKER_CONFIG_JSON, "p"),
            source("ghcr", names::DOCKER_CONFIG_JSON, "q"),
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
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
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
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
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
    // Retries (every minute at most, for as long as the source is missing) read nothing.
    let requests = h.requests();
    h.reconcile(&namespace("team-a", true))
        .await
        .expect_err("still missing");
    assert_eq!(
        h.requests(),
        requests,
        "no read of the other copies on retry"
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
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
    );
    let ns = namespace("team-a", true);
    h.api.fail_next(1, 500, None);
    h.api.fail_next(1, 403, None);
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

#[tokio::test(start_paused = true)]
async fn a_write_racing_our_read_back_is_refused_then_retried() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let rotated = source("gar-pull", names::DOCKER_CONFIG_JSON, "new");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(rotated.clone()));
    tokio::time::advance(RESYNC * 3 / 2).await;
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
async fn a_rotation_onto_a_copy_changed_since_reads_it_first() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    // Someone adds a label of their own: a new resourceVersion, still our copy.
    let mut touched = h.copy("team-a", "gar-pull").unwrap();
    touched["metadata"]["labels"]["team"] = json!("a");
    h.put("team-a", "gar-pull", touched);
    let rotated = source("gar-pull", names::DOCKER_CONFIG_JSON, "new");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(rotated.clone()));
    h.reconcile(&ns).await.expect("one reconcile");
    assert_eq!(
        h.copy("team-a", "gar-pull").unwrap()["data"],
        data_of(&rotated)
    );
    let tail: Vec<String> = h.api.requests()[2..]
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(
        tail,
        ["PATCH", "GET", "PATCH"],
        "409 on the known version, read, apply"
    );
}

#[tokio::test]
async fn a_rotation_taken_over_by_someone_is_left_to_them() {
    let mut h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "old")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let mine = json!({ "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } });
    h.put("team-a", "gar-pull", mine);
    h.writer.apply_watcher_event(&watcher::Event::Apply(source(
        "gar-pull",
        names::DOCKER_CONFIG_JSON,
        "new",
    )));
    h.reconcile(&ns).await.expect("a conflict is not an error");
    assert_eq!(
        h.copy("team-a", "gar-pull").unwrap()["data"][".dockerconfigjson"],
        "e30=",
        "no longer ours: untouched"
    );
}

#[tokio::test]
async fn two_replicas_converge_on_the_same_copies() {
    let api = FakeApi::default();
    let sources = vec![
        source("gar-pull", names::DOCKER_CONFIG_JSON, "p"),
        source("ghcr", names::DOCKER_CFG, "q"),
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
            source("gar-pull", names::DOCKER_CONFIG_JSON, "p"),
            source("ghcr", names::DOCKER_CONFIG_JSON, "q"),
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
        vec![source("gar-pull", names::DOCKER_CFG, "p")],
    );
    let ns = namespace("team-a", true);
    h.reconcile(&ns).await.unwrap();
    let converted = source("gar-pull", names::DOCKER_CONFIG_JSON, "p");
    h.writer
        .apply_watcher_event(&watcher::Event::Apply(converted.clone()));
    h.reconcile(&ns).await.unwrap();
    let copy = h.copy("team-a", "gar-pull").unwrap();
    assert_eq!(copy["type"], names::DOCKER_CONFIG_JSON);
    assert_eq!(copy["data"], data_of(&converted));
}

#[tokio::test]
async fn the_injectors_own_namespace_is_left_alone() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
    );
    h.reconcile(&namespace(OWN_NS, true)).await.unwrap();
    assert_eq!(h.requests(), 0);
}

#[tokio::test]
async fn a_terminating_namespace_is_not_written_to() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
    );
    let mut ns = (*namespace("team-a", true)).clone();
    ns.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    assert!(!sync::is_opted_in(&ns));
    assert!(sync::is_opted_in(namespace("team-a", true).as_ref()));
    h.reconcile(&Arc::new(ns)).await.unwrap();
    assert_eq!(h.writes(), 0);
}

#[tokio::test]
async fn no_secret_data_reaches_the_logs_at_any_level() {
    let captured = common::captured_logs();

    let marker = "hunter2-PASSWORD-MARKER";
    let mut h = Harness::new(
        &["gar-pull", "absent"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, marker)],
    );
    let ns = namespace("team-a", true);
    let _ = h.reconcile(&ns).await;
    h.writer.apply_watcher_event(&watcher::Event::Apply(source(
        "gar-pull",
        names::DOCKER_CONFIG_JSON,
        &format!("{marker}-2"),
    )));
    h.api.fail_next(1, 500, None);
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
    let src = source("gar-pull", names::DOCKER_CONFIG_JSON, marker);
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

#[tokio::test]
async fn a_fresh_install_creates_copies_without_reading_each_and_a_restart_only_reads() {
    let names = ["a", "b", "c"];
    let sources: Vec<Secret> = names
        .iter()
        .map(|n| source(n, names::DOCKER_CONFIG_JSON, "p"))
        .collect();
    let api = FakeApi::default();
    let fresh = Harness::with_api(api.clone(), &names, sources.clone());
    for i in 0..4 {
        fresh
            .reconcile(&namespace(&format!("team-{i}"), true))
            .await
            .unwrap();
    }
    assert_eq!(api.state().secrets.len(), 12);
    let first: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(
        first[..3],
        ["GET", "PATCH", "POST"],
        "the first copy is read and found absent; from then on copies are created outright"
    );
    assert_eq!(first.len(), 13, "one request per copy, and one probe");

    // A new process over the same copies: they exist, so it reads.
    let restarted = Harness::with_api(api.clone(), &names, sources);
    for i in 0..4 {
        restarted
            .reconcile(&namespace(&format!("team-{i}"), true))
            .await
            .unwrap();
    }
    let second: Vec<String> = api.requests()[13..]
        .iter()
        .map(|r| r.method.to_string())
        .collect();
    assert_eq!(second, vec!["GET"; 12], "one read per copy, no write");
}

#[tokio::test(start_paused = true)]
async fn a_namespace_that_did_not_opt_in_is_swept_for_our_leftovers_once_at_its_slot() {
    let h = Harness::new(
        &["gar-pull"],
        vec![source("gar-pull", names::DOCKER_CONFIG_JSON, "p")],
    );
    // Left by an earlier process before the namespace opted out.
    h.put(
        "team-a",
        "gar-pull",
        json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": "pullsecret-injector" } },
                "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } }),
    );
    let ns = namespace("team-a", false);
    let mut swept = false;
    for _ in 0..20 {
        let action = h.reconcile(&ns).await.unwrap();
        if action == Action::await_change() {
            swept = true;
            break;
        }
        assert_eq!(
            h.requests(),
            0,
            "nothing is read before the namespace's slot"
        );
        tokio::time::advance(RESYNC / 10).await;
    }
    assert!(swept, "swept within one interval");
    assert!(
        h.copy("team-a", "gar-pull").is_none(),
        "our leftover removed"
    );
    let requests = h.requests();
    h.reconcile(&ns).await.unwrap();
    assert_eq!(h.requests(), requests, "clean: no more requests");
}
