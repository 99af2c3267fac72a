//! The repairer: which stuck Pods are evicted and which are left alone (a table over the pure
//! decision), then reconcile against kube-rs' mock service answered by the fake API server:
//! evictions, Events, waits for a missing copy, PodDisruptionBudgets, rate limits, Pods
//! evicted once, replacements that still lack the secret, and two replicas at once.

mod fake_api;

use std::sync::Arc;
use std::time::Duration;

use fake_api::FakeApi;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::repair::{self, Leave, RepairArgs, Repairer, Verdict};
use pullsecret_injector::watch::ConfigStore;
use serde_json::{Value, json};

fn config() -> Config {
    Config::from_yaml(
        "registries:\n  - match: ghcr.io/acme\n    secret: ghcr-acme\n  - match: \"*.pkg.dev\"\n    secret: gar-pull\n",
    )
    .unwrap()
    .0
}

/// A Pod of `owner` (kind) whose container `app` runs `image` and waits with `reason`.
struct PodSpec {
    name: &'static str,
    namespace: &'static str,
    uid: &'static str,
    image: &'static str,
    reason: &'static str,
    init: bool,
    owner: Option<(&'static str, bool)>,
    secrets: &'static [&'static str],
    annotations: Value,
}

impl Default for PodSpec {
    fn default() -> Self {
        Self {
            name: "web-1",
            namespace: "team-a",
            uid: "pod-uid-1",
            image: "ghcr.io/acme/api:1",
            reason: "ImagePullBackOff",
            init: false,
            owner: Some(("ReplicaSet", true)),
            secrets: &[],
            annotations: json!({}),
        }
    }
}

impl PodSpec {
    fn json(&self) -> Value {
        let status = json!({ "name": "app", "image": self.image, "imageID": "", "ready": false,
            "restartCount": 0, "state": { "waiting": { "reason": self.reason, "message": "pull failed" } } });
        let container = json!({ "name": "app", "image": self.image });
        let other = json!({ "name": "sidecar", "image": "quay.io/other/sidecar:1" });
        let other_status = json!({ "name": "sidecar", "image": "quay.io/other/sidecar:1", "imageID": "",
            "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "PodInitializing" } } });
        let (init, containers, init_status, statuses) = if self.init {
            (
                json!([container]),
                json!([other]),
                json!([status]),
                json!([other_status]),
            )
        } else {
            (
                json!([]),
                json!([other, container]),
                json!([]),
                json!([other_status, status]),
            )
        };
        let owners: Vec<Value> = self
            .owner
            .iter()
            .map(|(kind, controller)| {
                json!({ "apiVersion": if *kind == "Job" { "batch/v1" } else { "apps/v1" },
                    "kind": kind, "name": "web-abc", "uid": format!("owner-{kind}"), "controller": controller })
            })
            .collect();
        let secrets: Vec<Value> = self.secrets.iter().map(|s| json!({ "name": s })).collect();
        json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": self.name, "namespace": self.namespace, "uid": self.uid,
                          "ownerReferences": owners, "annotations": self.annotations },
            "spec": { "initContainers": init, "containers": containers, "imagePullSecrets": secrets },
            "status": { "phase": "Pending", "initContainerStatuses": init_status, "containerStatuses": statuses } })
    }

    fn pod(&self) -> Pod {
        serde_json::from_value(self.json()).unwrap()
    }
}

#[test]
fn who_is_evicted_and_who_is_left_alone() {
    let config = config();
    fn evict(missing: &'static [&'static str], kind: &'static str) -> impl Fn(&Verdict) -> bool {
        move |v: &Verdict| matches!(v, Verdict::Evict { missing: m, owner } if m == missing && owner.kind == kind)
    }
    type Check = Box<dyn Fn(&Verdict) -> bool>;
    let cases: Vec<(&str, PodSpec, Check)> = vec![
        (
            "stuck ReplicaSet Pod lacking its secret",
            PodSpec::default(),
            Box::new(evict(&["ghcr-acme"], "ReplicaSet")),
        ),
        (
            "ErrImagePull counts too",
            PodSpec {
                reason: "ErrImagePull",
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "ReplicaSet")),
        ),
        (
            "an init container stuck",
            PodSpec {
                init: true,
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "ReplicaSet")),
        ),
        (
            "StatefulSet",
            PodSpec {
                owner: Some(("StatefulSet", true)),
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "StatefulSet")),
        ),
        (
            "DaemonSet",
            PodSpec {
                owner: Some(("DaemonSet", true)),
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "DaemonSet")),
        ),
        (
            "Job",
            PodSpec {
                owner: Some(("Job", true)),
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "Job")),
        ),
        (
            "a glob rule's secret",
            PodSpec {
                image: "us-docker.pkg.dev/p/r/i:1",
                ..PodSpec::default()
            },
            Box::new(evict(&["gar-pull"], "ReplicaSet")),
        ),
        (
            "has another secret, lacks the one it needs",
            PodSpec {
                secrets: &["gar-pull", "team-own"],
                ..PodSpec::default()
            },
            Box::new(evict(&["ghcr-acme"], "ReplicaSet")),
        ),
        (
            "bare Pod",
            PodSpec {
                owner: None,
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Leave(Leave::BarePod { owner_kind: None })),
        ),
        (
            "an owner that is not its controller",
            PodSpec {
                owner: Some(("ReplicaSet", false)),
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Leave(Leave::BarePod { owner_kind: None })),
        ),
        (
            "a controller that may not recreate it",
            PodSpec {
                owner: Some(("Workflow", true)),
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| {
                *v == Verdict::Leave(Leave::BarePod {
                    owner_kind: Some("Workflow".to_owned()),
                })
            }),
        ),
        (
            "its image matches no rule",
            PodSpec {
                image: "quay.io/acme/api:1",
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| {
                *v == Verdict::Leave(Leave::NoRule {
                    images: vec!["quay.io/acme/api:1".to_owned()],
                })
            }),
        ),
        (
            "an invalid image",
            PodSpec {
                image: "ghcr.io/Acme/api:1",
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| matches!(v, Verdict::Leave(Leave::NoRule { .. }))),
        ),
        (
            "it has the secret: wrong credentials",
            PodSpec {
                secrets: &["ghcr-acme"],
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| {
                *v == Verdict::Leave(Leave::HasSecrets {
                    secrets: vec!["ghcr-acme".to_owned()],
                })
            }),
        ),
        (
            "not stuck: creating",
            PodSpec {
                reason: "ContainerCreating",
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Nothing),
        ),
        (
            "not stuck: bad config",
            PodSpec {
                reason: "CreateContainerConfigError",
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Nothing),
        ),
        (
            "opted out",
            PodSpec {
                annotations: json!({ "pullsecret-injector.io/skip": "true" }),
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Nothing),
        ),
        (
            "mirror pod",
            PodSpec {
                annotations: json!({ "kubernetes.io/config.mirror": "x" }),
                owner: Some(("Node", true)),
                ..PodSpec::default()
            },
            Box::new(|v: &Verdict| *v == Verdict::Nothing),
        ),
    ];
    for (what, spec, check) in cases {
        let verdict = repair::assess(&config, &spec.pod());
        assert!(check(&verdict), "{what}: got {verdict:?}");
    }
    // A Pod with no status yet, or no spec, is nothing to repair.
    let mut bare = PodSpec::default().json();
    bare["status"] = json!({});
    let bare: Pod = serde_json::from_value(bare).unwrap();
    assert_eq!(repair::assess(&config, &bare), Verdict::Nothing);
    assert_eq!(repair::assess(&config, &Pod::default()), Verdict::Nothing);
}

// ---- reconcile against the fake API server ----------------------------------------------

struct Harness {
    repairer: Arc<Repairer>,
    metrics: Arc<Metrics>,
    _writer: Writer<PartialObjectMeta<Namespace>>,
}

fn namespace(name: &str, opted_in: bool) -> PartialObjectMeta<Namespace> {
    let mut labels = std::collections::BTreeMap::new();
    if opted_in {
        labels.insert(
            "pullsecret-injector.io/inject".to_owned(),
            "enabled".to_owned(),
        );
    }
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
    .into_response_partial::<Namespace>()
}

impl Harness {
    fn new(api: &FakeApi, args: RepairArgs) -> Self {
        let (store, mut writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for (ns, opted_in) in [("team-a", true), ("team-b", true), ("outside", false)] {
            writer.apply_watcher_event(&watcher::Event::InitApply(namespace(ns, opted_in)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // The controller's view of the Pending Pods: what the fake holds now.
        let (pods, mut pod_writer) = reflector::store::<Pod>();
        pod_writer.apply_watcher_event(&watcher::Event::Init);
        for pod in api.state().pods.values() {
            let pod: Pod = serde_json::from_value(pod.clone()).unwrap();
            pod_writer.apply_watcher_event(&watcher::Event::InitApply(pod));
        }
        pod_writer.apply_watcher_event(&watcher::Event::InitDone);
        let metrics = Arc::new(Metrics::new());
        let repairer = Repairer::new(
            api.client(),
            Arc::new(ConfigStore::new(config())),
            metrics.clone(),
            store,
            pods,
            args,
        );
        Self {
            repairer: Arc::new(repairer),
            metrics,
            _writer: writer,
        }
    }

    async fn reconcile(&self, spec: &PodSpec) -> Action {
        repair::reconcile(Arc::new(spec.pod()), self.repairer.clone())
            .await
            .expect("reconcile")
    }

    fn metric(&self, result: &str) -> u64 {
        let text = self.metrics.encode();
        let line = format!("pullsecret_injector_repairs_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

fn with_copies(api: &FakeApi, namespaces: &[&str]) {
    for ns in namespaces {
        api.put_secret(
            ns,
            "ghcr-acme",
            json!({ "type": "kubernetes.io/dockerconfigjson",
            "metadata": { "labels": { "app.kubernetes.io/managed-by": "pullsecret-injector" } },
            "data": { ".dockerconfigjson": "e30=" } }),
        );
    }
}

fn add(api: &FakeApi, spec: &PodSpec) {
    api.put_pod(spec.json());
}

fn events(api: &FakeApi) -> Vec<Value> {
    api.state().events.clone()
}

#[tokio::test]
async fn a_stuck_pod_is_evicted_with_events_on_it_and_its_owner() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a"]);
    let spec = PodSpec::default();
    add(&api, &spec);
    let h = Harness::new(&api, RepairArgs::default());

    assert_eq!(h.reconcile(&spec).await, Action::await_change());
    assert_eq!(api.evictions(), ["team-a/web-1"]);
    assert!(api.pod("team-a", "web-1").is_none(), "the Pod is evicted");
    assert_eq!(h.metric("evicted"), 1);
    let events = events(&api);
    let on = |kind: &str| {
        events
            .iter()
            .find(|e| e["regarding"]["kind"] == kind)
            .unwrap_or_else(|| panic!("no event on the {kind}: {events:?}"))
            .clone()
    };
    let pod_event = on("Pod");
    assert_eq!(pod_event["reason"], "PullSecretRepair");
    assert_eq!(pod_event["action"], "Evict");
    assert_eq!(pod_event["type"], "Normal");
    assert!(pod_event["note"].as_str().unwrap().contains("ghcr-acme"));
    let owner_event = on("ReplicaSet");
    assert_eq!(owner_event["regarding"]["name"], "web-abc");
    assert_eq!(owner_event["related"]["name"], "web-1");

    // Never the same Pod twice, even if it showed up again.
    add(&api, &spec);
    h.reconcile(&spec).await;
    assert_eq!(api.evictions().len(), 1);
}

#[tokio::test]
async fn pods_that_eviction_would_not_help_are_left_with_one_event_saying_why() {
    let cases = [
        (
            PodSpec {
                owner: None,
                ..PodSpec::default()
            },
            "bare_pod",
            "no controller",
        ),
        (
            PodSpec {
                image: "quay.io/acme/api:1",
                ..PodSpec::default()
            },
            "no_rule",
            "no pullsecret-injector rule",
        ),
        (
            PodSpec {
                secrets: &["ghcr-acme"],
                ..PodSpec::default()
            },
            "has_secrets",
            "credentials are wrong",
        ),
    ];
    for (spec, label, words) in cases {
        let api = FakeApi::default();
        with_copies(&api, &["team-a"]);
        add(&api, &spec);
        let h = Harness::new(&api, RepairArgs::default());
        h.reconcile(&spec).await;
        h.reconcile(&spec).await;
        assert!(api.evictions().is_empty(), "{label}");
        assert!(api.pod("team-a", "web-1").is_some(), "{label}");
        assert_eq!(h.metric(label), 1, "{label}: counted once");
        let events = events(&api);
        assert_eq!(
            events.len(),
            1,
            "{label}: one event, not one per look: {events:?}"
        );
        assert_eq!(events[0]["type"], "Warning");
        assert_eq!(events[0]["reason"], "PullSecretRepair");
        assert_eq!(events[0]["action"], "Skip");
        assert!(
            events[0]["note"].as_str().unwrap().contains(words),
            "{label}: {}",
            events[0]["note"]
        );
    }
}

#[tokio::test]
async fn pods_outside_opted_in_namespaces_are_not_touched() {
    let api = FakeApi::default();
    with_copies(&api, &["outside"]);
    let spec = PodSpec {
        namespace: "outside",
        ..PodSpec::default()
    };
    add(&api, &spec);
    let h = Harness::new(&api, RepairArgs::default());
    assert_eq!(h.reconcile(&spec).await, Action::await_change());
    assert!(api.evictions().is_empty());
    assert!(events(&api).is_empty());
}

#[tokio::test]
async fn waits_for_the_copy_then_evicts() {
    let api = FakeApi::default();
    let spec = PodSpec::default();
    add(&api, &spec);
    let h = Harness::new(&api, RepairArgs::default());
    let action = h.reconcile(&spec).await;
    assert_ne!(action, Action::await_change(), "looked at again later");
    assert!(
        api.evictions().is_empty(),
        "no copy yet: the new Pod would fail the same way"
    );
    with_copies(&api, &["team-a"]);
    h.reconcile(&spec).await;
    assert_eq!(api.evictions(), ["team-a/web-1"]);
}

#[tokio::test]
async fn a_disruption_budget_holds_the_eviction_until_it_allows_it() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a"]);
    let spec = PodSpec::default();
    add(&api, &spec);
    api.state().evictions_blocked = true;
    let h = Harness::new(&api, RepairArgs::default());
    let action = h.reconcile(&spec).await;
    assert_ne!(action, Action::await_change());
    assert!(api.pod("team-a", "web-1").is_some());
    assert_eq!(h.metric("blocked"), 1);
    api.state().evictions_blocked = false;
    h.reconcile(&spec).await;
    assert!(api.pod("team-a", "web-1").is_none());
    assert_eq!(h.metric("evicted"), 1);
}

#[tokio::test]
async fn evictions_are_rate_limited_per_namespace_and_overall() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a", "team-b"]);
    let names = ["p0", "p1", "p2", "p3"];
    let uids = ["u0", "u1", "u2", "u3"];
    let pods: Vec<PodSpec> = ["team-a", "team-b"]
        .into_iter()
        .flat_map(|ns| {
            names.iter().zip(uids).map(move |(name, uid)| PodSpec {
                name,
                namespace: ns,
                uid: if ns == "team-a" {
                    uid
                } else {
                    Box::leak(format!("{uid}-b").into_boxed_str())
                },
                ..PodSpec::default()
            })
        })
        .collect();
    for p in &pods {
        add(&api, p);
    }
    let args = RepairArgs {
        repair_max_per_minute: 3,
        repair_max_per_namespace_per_minute: 2,
        ..RepairArgs::default()
    };
    let h = Harness::new(&api, args);
    let mut actions = Vec::new();
    for p in &pods {
        actions.push(h.reconcile(p).await);
    }
    let evicted = api.evictions();
    // Two in team-a (its limit), then one in team-b (the overall limit of three).
    assert_eq!(evicted, ["team-a/p0", "team-a/p1", "team-b/p0"]);
    assert_eq!(h.metric("rate_limited"), 5);
    // The ones held back are looked at again, not dropped.
    assert!(actions[2..4].iter().all(|a| *a != Action::await_change()));
}

#[tokio::test(start_paused = true)]
async fn eviction_budgets_refill_at_their_rate_per_minute() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a", "team-b"]);
    let pod = |namespace: &'static str, name: &'static str| PodSpec {
        name,
        namespace,
        uid: Box::leak(format!("{namespace}-{name}").into_boxed_str()),
        ..PodSpec::default()
    };
    let [a0, a1, a2, a3] = ["p0", "p1", "p2", "p3"].map(|n| pod("team-a", n));
    let [b0, b1] = ["p0", "p1"].map(|n| pod("team-b", n));
    for p in [&a0, &a1, &a2, &a3, &b0, &b1] {
        add(&api, p);
    }
    let args = RepairArgs {
        repair_max_per_minute: 3,
        repair_max_per_namespace_per_minute: 2,
        ..RepairArgs::default()
    };
    let h = Harness::new(&api, args);
    let held = |seconds| Action::requeue(Duration::from_secs(seconds));

    assert_eq!(h.reconcile(&a0).await, Action::await_change());
    assert_eq!(h.reconcile(&a1).await, Action::await_change());
    // Two a minute in team-a: the next one in 30 s.
    assert_eq!(h.reconcile(&a2).await, held(30));
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(h.reconcile(&a2).await, Action::await_change());
    assert_eq!(h.reconcile(&a3).await, held(30));
    // Three a minute overall, one back every 20 s: after four in 30 s, the next at 40 s.
    assert_eq!(h.reconcile(&b0).await, Action::await_change());
    assert_eq!(h.reconcile(&b1).await, held(10));
    assert_eq!(
        api.evictions(),
        ["team-a/p0", "team-a/p1", "team-a/p2", "team-b/p0"]
    );
    assert_eq!(h.metric("rate_limited"), 3);
}

#[tokio::test]
async fn a_replacement_that_still_lacks_the_secret_is_not_evicted_again() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a"]);
    let first = PodSpec::default();
    add(&api, &first);
    let h = Harness::new(&api, RepairArgs::default());
    h.reconcile(&first).await;
    assert_eq!(api.evictions().len(), 1);
    // The ReplicaSet's new Pod came without the secret too: the webhook did not inject.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = PodSpec {
        name: "web-2",
        uid: "pod-uid-2",
        ..PodSpec::default()
    };
    add(&api, &second);
    h.reconcile(&second).await;
    assert_eq!(api.evictions().len(), 1, "no eviction loop");
    assert_eq!(h.metric("replacement_lacks_secret"), 1);
    assert!(events(&api).iter().any(|e| {
        e["note"]
            .as_str()
            .unwrap_or_default()
            .contains("webhook did not inject")
    }));
}

#[tokio::test]
async fn two_replicas_evict_a_pod_once_and_never_its_namesake() {
    let api = FakeApi::default();
    with_copies(&api, &["team-a"]);
    let spec = PodSpec::default();
    add(&api, &spec);
    let (one, two) = (
        Harness::new(&api, RepairArgs::default()),
        Harness::new(&api, RepairArgs::default()),
    );
    one.reconcile(&spec).await;
    // The other replica still has the Pod in its cache: its eviction finds it gone.
    two.reconcile(&spec).await;
    assert!(api.pod("team-a", "web-1").is_none());
    assert_eq!(one.metric("evicted") + two.metric("evicted"), 1);
    assert_eq!(two.metric("gone"), 1);

    // A StatefulSet Pod recreated under the same name: a stale view never evicts the new one.
    let stale = PodSpec {
        owner: Some(("StatefulSet", true)),
        name: "db-0",
        uid: "old",
        ..PodSpec::default()
    };
    let fresh = PodSpec {
        uid: "new",
        ..stale
    };
    add(&api, &fresh);
    let stale = PodSpec {
        uid: "old",
        ..fresh
    };
    let three = Harness::new(&api, RepairArgs::default());
    three.reconcile(&stale).await;
    assert_eq!(api.pod("team-a", "db-0").unwrap()["metadata"]["uid"], "new");
    assert_eq!(three.metric("gone"), 1);
}

#[tokio::test]
async fn the_running_repairer_finds_stuck_pods_and_namespaces_that_opt_in_later() {
    let api = FakeApi::default();
    api.add_namespace("team-a", true);
    api.add_namespace("later", false);
    with_copies(&api, &["team-a", "later"]);
    let stuck = PodSpec::default();
    add(&api, &stuck);
    let waiting = PodSpec {
        namespace: "later",
        uid: "pod-uid-later",
        ..PodSpec::default()
    };
    add(&api, &waiting);
    // A Running Pod is not even listed (the field selector), let alone evicted.
    let mut running = PodSpec {
        name: "ok",
        uid: "pod-uid-ok",
        ..PodSpec::default()
    }
    .json();
    running["status"]["phase"] = json!("Running");
    api.put_pod(running);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(repair::run(
        api.client(),
        Arc::new(ConfigStore::new(config())),
        Arc::new(Metrics::new()),
        RepairArgs {
            enabled: true,
            ..RepairArgs::default()
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let wait_for = |what: &'static str, done: Box<dyn Fn() -> bool>| async move {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    };
    let a = api.clone();
    wait_for(
        "the stuck Pod's eviction",
        Box::new(move || a.pod("team-a", "web-1").is_none()),
    )
    .await;
    assert!(
        api.pod("later", "web-1").is_some(),
        "its namespace has not opted in"
    );

    api.label_namespace("later", true);
    let a = api.clone();
    wait_for(
        "the eviction once the namespace opted in",
        Box::new(move || a.pod("later", "web-1").is_none()),
    )
    .await;
    assert!(api.pod("team-a", "ok").is_some());
    assert_eq!(api.evictions(), ["team-a/web-1", "later/web-1"]);
    let pod_lists = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods")
        .count();
    assert!(pod_lists >= 1);

    let _ = stop_tx.send(());
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the repairer stops")
        .unwrap();
}
