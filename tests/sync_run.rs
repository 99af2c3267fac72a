//! The whole secret sync (`sync::run`: watches, controller, reconciles) against the fake API
//! server, on tokio's paused clock: time only moves when every task waits, so orderings such as
//! "the namespaces are listed before the sources" are reproduced exactly, every run.

mod fake_api;

use std::sync::Arc;
use std::time::Duration;

use fake_api::FakeApi;
use pullsecret_injector::config::Config;
use pullsecret_injector::kube_client::{ApiLayer, KubeArgs};
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::sync::{self, SyncArgs, Verifier};
use pullsecret_injector::watch::ConfigStore;
use serde_json::{Value, json};

const OWN_NS: &str = "pullsecret-injector";

fn config(secrets: &[&str]) -> Config {
    let mut text = String::from("registries:\n");
    for (i, s) in secrets.iter().enumerate() {
        text.push_str(&format!("  - match: r{i}.example.com\n    secret: {s}\n"));
    }
    Config::from_yaml(&text).expect("test config").0
}

fn source(password: &str) -> Value {
    let config = format!(r#"{{"auths":{{"ghcr.io":{{"username":"u","password":"{password}"}}}}}}"#);
    json!({ "type": "kubernetes.io/dockerconfigjson",
            "data": { ".dockerconfigjson": base64(&config) } })
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Waits (on the paused clock) until `done` holds, at most `limit`.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// Whether every namespace gets a copy of every secret within `limit`.
async fn copies_everywhere(
    api: &FakeApi,
    namespaces: &[String],
    secrets: &[&str],
    limit: Duration,
) -> bool {
    eventually(limit, || {
        missing_copies(api, namespaces, secrets).is_empty()
    })
    .await
}

fn missing_copies(api: &FakeApi, namespaces: &[String], secrets: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for ns in namespaces {
        for s in secrets {
            if api.secret(ns, s).is_none() {
                missing.push(format!("{ns}/{s}"));
            }
        }
    }
    missing
}

/// One running sync, as `serve` starts it.
struct Running {
    store: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    verifier: Verifier,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    read_backs: tokio::task::JoinHandle<()>,
}

impl Running {
    /// With the client layers of the real binary (retries, request budget).
    fn start(api: &FakeApi, secrets: &[&str], args: SyncArgs, kube: KubeArgs) -> Self {
        let metrics = Arc::new(Metrics::new());
        let client = api.client_with(&ApiLayer::new(&kube, metrics.clone()));
        Self::start_with(client, secrets, args, metrics)
    }

    fn start_with(
        client: kube::Client,
        secrets: &[&str],
        args: SyncArgs,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::start_config(client, config(secrets), args, metrics)
    }

    fn start_config(
        client: kube::Client,
        config: Config,
        args: SyncArgs,
        metrics: Arc<Metrics>,
    ) -> Self {
        let store = Arc::new(ConfigStore::new(config));
        let (verifier, requests) = Verifier::new(args.verify_on_admission);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // As on every replica: the webhook's read-backs beside the (leader's) sync.
        let read_backs = tokio::spawn(sync::run_read_backs(
            client.clone(),
            OWN_NS.to_owned(),
            store.clone(),
            metrics.clone(),
            requests,
        ));
        let task = tokio::spawn(sync::run(
            client,
            OWN_NS.to_owned(),
            store.clone(),
            metrics.clone(),
            args,
            sync::Sources::default(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        Self {
            store,
            metrics,
            verifier,
            stop: Some(stop_tx),
            task,
            read_backs,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
        self.read_backs.abort();
    }
}

fn cluster(api: &FakeApi, opted_in: usize, secrets: &[&str]) -> Vec<String> {
    let namespaces: Vec<String> = (0..opted_in).map(|i| format!("team-{i}")).collect();
    for ns in &namespaces {
        api.add_namespace(ns, true);
    }
    api.add_namespace(OWN_NS, false);
    api.add_namespace("kube-system", false);
    for s in secrets {
        api.put_secret(OWN_NS, s, source(&format!("{s}-1")));
    }
    namespaces
}

fn data(api: &FakeApi, ns: &str, secret: &str) -> Option<Value> {
    api.secret(ns, secret).map(|s| s["data"].clone())
}

fn args() -> SyncArgs {
    SyncArgs {
        resync_interval: Duration::from_secs(600),
        ..SyncArgs::default()
    }
}

/// Issue 12's bug: with the namespaces listed before the sources, every reconcile used to wait
/// on the sources store's one-shot readiness, which wakes a single waiter: all namespaces but
/// one stayed without copies for good.
#[tokio::test(start_paused = true)]
async fn namespaces_listed_before_the_sources_all_get_their_copies() {
    let api = FakeApi::default();
    let namespaces: Vec<String> = (0..5).map(|i| format!("team-{i}")).collect();
    for ns in &namespaces {
        api.add_namespace(ns, true);
    }
    api.add_namespace(OWN_NS, false);
    api.put_secret(OWN_NS, "gar-pull", source("p"));
    api.state().list_delays.insert(
        format!("/api/v1/namespaces/{OWN_NS}/secrets"),
        Duration::from_secs(1),
    );

    // A plain client: the ordering alone must not strand a namespace.
    let sync = Running::start_with(
        api.client(),
        &["gar-pull"],
        SyncArgs::default(),
        Arc::new(Metrics::new()),
    );

    let converged = eventually(Duration::from_secs(300), || {
        missing_copies(&api, &namespaces, &["gar-pull"]).is_empty()
    })
    .await;
    assert!(
        converged,
        "copies still missing after 5 minutes: {:?}",
        missing_copies(&api, &namespaces, &["gar-pull"])
    );
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_loses_its_history_relists_and_misses_nothing() {
    let api = FakeApi::default();
    let secrets = ["gar-pull", "ghcr"];
    let namespaces = cluster(&api, 3, &secrets);
    let sync = Running::start(&api, &secrets, args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(10)).await);

    // The watches stall; meanwhile a namespace opts in, one opts out, a source rotates; then
    // the history is compacted: resuming gets 410 Gone, and only a new list tells.
    api.state().watches_stalled = true;
    api.add_namespace("team-new", true);
    api.label_namespace("team-0", false);
    api.put_secret(OWN_NS, "ghcr", source("rotated"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        api.secret("team-new", "gar-pull").is_none(),
        "stalled: nothing seen yet"
    );
    api.compact();

    let rotated = source("rotated")["data"].clone();
    let done = eventually(Duration::from_secs(30), || {
        api.secret("team-new", "gar-pull").is_some()
            && api.secret("team-new", "ghcr").is_some()
            && api.secret("team-0", "gar-pull").is_none()
            && ["team-1", "team-2", "team-new"]
                .iter()
                .all(|ns| data(&api, ns, "ghcr").as_ref() == Some(&rotated))
    })
    .await;
    assert!(
        done,
        "state after the relist: {:?}",
        api.state().secrets.keys().collect::<Vec<_>>()
    );
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_source_created_after_the_namespaces_reaches_them_at_once() {
    let api = FakeApi::default();
    let namespaces = cluster(&api, 4, &[]);
    let sync = Running::start(&api, &["gar-pull"], args(), KubeArgs::default());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        sync.metrics
            .encode()
            .contains("pullsecret_injector_sync_errors_total{reason=\"missing_source\"}"),
        "a missing source is an error"
    );
    api.put_secret(OWN_NS, "gar-pull", source("late"));
    // Sooner than any backoff: the source's own event reconciles every namespace.
    assert!(copies_everywhere(&api, &namespaces, &["gar-pull"], Duration::from_millis(500)).await);
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rule_added_by_a_config_reload_is_copied_everywhere() {
    let api = FakeApi::default();
    let namespaces = cluster(&api, 4, &["gar-pull", "ghcr"]);
    let sync = Running::start(&api, &["gar-pull"], args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &["gar-pull"], Duration::from_secs(10)).await);
    assert!(missing_copies(&api, &namespaces, &["ghcr"]).len() == 4);
    sync.store.store(config(&["gar-pull", "ghcr"]));
    assert!(copies_everywhere(&api, &namespaces, &["ghcr"], Duration::from_secs(1)).await);
    // And a rule removed takes its copies with it.
    sync.store.store(config(&["ghcr"]));
    assert!(
        eventually(Duration::from_secs(1), || missing_copies(
            &api,
            &namespaces,
            &["gar-pull"]
        )
        .len()
            == 4)
        .await
    );
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_pauses_every_request_for_its_retry_after_then_converges() {
    let api = FakeApi::default();
    let secrets = ["a", "b", "c"];
    let namespaces = cluster(&api, 20, &secrets);
    // Everything the injector sends first is refused, lists included.
    api.fail_next(40, 429, Some(2));
    let sync = Running::start(&api, &secrets, args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(300)).await);

    // After each 429, nothing was sent for its Retry-After (requests already on their way
    // apart: they were answered at that same instant).
    let requests = api.requests();
    let refused: Vec<_> = requests.iter().take(40).map(|r| r.at).collect();
    for at in &refused {
        let during = requests
            .iter()
            .filter(|r| r.at > *at && r.at < *at + Duration::from_secs(2))
            .count();
        assert_eq!(during, 0, "requests sent during a Retry-After pause");
    }
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_5xx_storm_backs_off_then_converges() {
    let api = FakeApi::default();
    let secrets = ["a", "b"];
    let namespaces = cluster(&api, 10, &secrets);
    let sync = Running::start(&api, &secrets, args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(60)).await);

    // For a minute every new request is answered 500, while both sources rotate: every
    // namespace's reconcile fails, again and again.
    let storm = Duration::from_secs(60);
    let start = tokio::time::Instant::now();
    api.fail_next(100_000, 500, None);
    for s in secrets {
        api.put_secret(OWN_NS, s, source(&format!("{s}-2")));
    }
    tokio::time::sleep(storm).await;
    api.state().faults.clear();
    let during = api
        .requests()
        .iter()
        .filter(|r| r.at >= start && r.at < start + storm)
        .count();
    // Backing off from 1 s and doubling, each namespace's reconcile runs 6 times in the minute
    // (at 0, 1, 3, 7, 15 and 31 s; 7 allowed), one failed write per secret each; open watches
    // send nothing new. Requeued at once, it is tens of thousands.
    let bound = namespaces.len() * secrets.len() * 7 + 20;
    assert!(
        during <= bound,
        "{during} requests during a one-minute storm (at most {bound} with backoff)"
    );
    assert!(during >= namespaces.len(), "the storm was met: {during}");

    // And it converges on the new data once the API server answers again.
    let current = |api: &FakeApi| {
        namespaces.iter().all(|ns| {
            secrets
                .iter()
                .all(|s| data(api, ns, s) == data(api, OWN_NS, s))
        })
    };
    assert!(eventually(Duration::from_secs(300), || current(&api)).await);
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn two_replicas_starting_at_once_write_each_copy_once_and_then_agree() {
    let api = FakeApi::default();
    let secrets = ["a", "b", "c"];
    let namespaces = cluster(&api, 10, &secrets);
    let one = Running::start(&api, &secrets, args(), KubeArgs::default());
    let two = Running::start(&api, &secrets, args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writes = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| r.is_copy_request(OWN_NS) && r.method != http::Method::GET)
            .count()
    };
    let created = api
        .requests()
        .iter()
        .filter(|r| r.is_copy_request(OWN_NS) && r.method == http::Method::POST)
        .count();
    let after_start = writes(&api);
    assert!(
        after_start <= 2 * 30,
        "at most one write per copy per replica: {after_start}"
    );
    assert!(created <= 2 * 30, "{created}");
    // Through two read-back intervals, neither replica writes again.
    tokio::time::sleep(Duration::from_secs(1200)).await;
    assert_eq!(writes(&api), after_start, "replicas fight over the copies");
    for ns in &namespaces {
        for s in secrets {
            assert_eq!(
                data(&api, ns, s),
                Some(source(&format!("{s}-1"))["data"].clone())
            );
        }
    }
    one.stop().await;
    two.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rotation_opt_in_and_opt_out_while_running() {
    let api = FakeApi::default();
    let secrets = ["gar-pull"];
    let namespaces = cluster(&api, 5, &secrets);
    let sync = Running::start(&api, &secrets, args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(10)).await);
    let uid = api.secret("team-1", "gar-pull").unwrap()["metadata"]["uid"].clone();

    api.put_secret(OWN_NS, "gar-pull", source("rotated"));
    let rotated = source("rotated")["data"].clone();
    assert!(
        eventually(Duration::from_secs(1), || namespaces.iter().all(|ns| data(
            &api, ns, "gar-pull"
        )
        .as_ref()
            == Some(&rotated)))
        .await
    );
    assert_eq!(
        api.secret("team-1", "gar-pull").unwrap()["metadata"]["uid"],
        uid,
        "updated in place"
    );

    api.add_namespace("team-late", true);
    assert!(
        eventually(Duration::from_secs(1), || api
            .secret("team-late", "gar-pull")
            .is_some())
        .await
    );
    api.label_namespace("team-2", false);
    assert!(
        eventually(Duration::from_secs(1), || api
            .secret("team-2", "gar-pull")
            .is_none())
        .await
    );
    assert!(
        api.secret("kube-system", "gar-pull").is_none(),
        "never opted in"
    );
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_copy_deleted_before_a_pod_is_admitted_is_back_at_once() {
    let api = FakeApi::default();
    let namespaces = cluster(&api, 3, &["gar-pull"]);
    let sync = Running::start(&api, &["gar-pull"], args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &["gar-pull"], Duration::from_secs(10)).await);
    api.delete_secret("team-1", "gar-pull");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        api.secret("team-1", "gar-pull").is_none(),
        "not due: nobody looked"
    );
    sync.verifier.request("team-1");
    assert!(
        eventually(Duration::from_millis(200), || api
            .secret("team-1", "gar-pull")
            .is_some())
        .await
    );
    sync.stop().await;
}

/// What the end-to-end suite met on a real API server: a Pod admitted (its namespace read
/// back), the copy deleted, a second Pod admitted inside the read-back window. The second
/// request may not be swallowed: the copy is back by the window's end.
#[tokio::test(start_paused = true)]
async fn a_copy_deleted_inside_the_read_back_window_is_back_by_its_end() {
    let api = FakeApi::default();
    let namespaces = cluster(&api, 2, &["gar-pull"]);
    let window = args().verify_on_admission;
    let sync = Running::start(&api, &["gar-pull"], args(), KubeArgs::default());
    assert!(copies_everywhere(&api, &namespaces, &["gar-pull"], Duration::from_secs(10)).await);

    let before = api.requests().len();
    sync.verifier.request("team-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    api.delete_secret("team-1", "gar-pull");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sync.verifier.request("team-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        api.secret("team-1", "gar-pull").is_none(),
        "inside the window: not read back yet"
    );
    assert!(
        eventually(window, || api.secret("team-1", "gar-pull").is_some()).await,
        "the copy is back by the end of the window"
    );
    let copy_reads = api.requests()[before..]
        .iter()
        .filter(|r| r.method == http::Method::GET && r.path.ends_with("/team-1/secrets/gar-pull"))
        .count();
    assert_eq!(copy_reads, 2, "a leading and a trailing read-back, no more");
    assert!(sync.metrics.encode().contains(
        "pullsecret_injector_sync_namespace_verifications_total{reason=\"admission\"} 2"
    ));
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn steady_state_reads_each_copy_once_per_interval_at_an_even_rate() {
    let api = FakeApi::default();
    let secrets = ["a", "b", "c"];
    let namespaces = cluster(&api, 200, &secrets);
    let resync = Duration::from_secs(600);
    let sync = Running::start(
        &api,
        &secrets,
        SyncArgs {
            resync_interval: resync,
            ..SyncArgs::default()
        },
        KubeArgs::default(),
    );
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(30)).await);
    // Each namespace has a slot in the interval; from the second interval on, it is read
    // exactly once per interval.
    tokio::time::sleep(resync).await;
    let start = tokio::time::Instant::now();
    let before = api.requests().len();
    tokio::time::sleep(resync * 3).await;
    let copy_requests: Vec<_> = api.requests()[before..]
        .iter()
        .filter(|r| r.is_copy_request(OWN_NS))
        .map(|r| r.at.duration_since(start))
        .collect();
    let copies = namespaces.len() * secrets.len();
    let per_interval = copy_requests.len() as f64 / 3.0;
    assert!(
        per_interval <= copies as f64 * 1.02 && per_interval >= copies as f64 * 0.98,
        "{per_interval} requests per interval for {copies} copies"
    );
    assert!(
        api.requests()[before..]
            .iter()
            .all(|r| r.method == http::Method::GET),
        "steady state: reads only"
    );
    // Spread: no minute holds more than twice the mean of a minute.
    let mut minutes = vec![0usize; 30];
    for at in &copy_requests {
        minutes[(at.as_secs() / 60) as usize % 30] += 1;
    }
    let mean = copy_requests.len() / 30;
    assert!(
        minutes.iter().all(|&n| n <= 2 * mean),
        "per minute: {minutes:?}"
    );
    sync.stop().await;
}

#[tokio::test(start_paused = true)]
async fn no_second_carries_more_than_the_client_rate_and_its_burst() {
    let api = FakeApi::default();
    let secrets = ["a", "b", "c"];
    let namespaces = cluster(&api, 100, &secrets);
    let kube = KubeArgs {
        kube_api_qps: 50,
        kube_api_burst: 10,
    };
    let started = tokio::time::Instant::now();
    let sync = Running::start(&api, &secrets, args(), kube);
    assert!(copies_everywhere(&api, &namespaces, &secrets, Duration::from_secs(60)).await);
    let requests = api.requests();
    assert!(requests.len() > 300, "{}", requests.len());
    let took = requests.last().unwrap().at.duration_since(started);
    assert!(
        took >= Duration::from_secs_f64((requests.len() - 10) as f64 / 50.0 * 0.95),
        "{} requests in {took:?}",
        requests.len()
    );
    for (i, first) in requests.iter().enumerate() {
        let window = requests[i..]
            .iter()
            .take_while(|r| r.at < first.at + Duration::from_secs(1))
            .count();
        assert!(window <= 50 + 10, "{window} requests within one second");
    }
    sync.stop().await;
}

// ---- serviceAccounts: ----------------------------------------------------------------------

fn pull_secrets_of(api: &FakeApi, ns: &str, name: &str) -> Option<Vec<String>> {
    let sa = api.service_account(ns, name)?;
    Some(
        sa["imagePullSecrets"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// Waits (paused clock) until the ServiceAccount lists exactly `want`; on failure shows what
/// the fake API server saw.
async fn lists(api: &FakeApi, ns: &str, name: &str, want: &[&str]) -> bool {
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let ok = eventually(Duration::from_secs(10), || {
        pull_secrets_of(api, ns, name) == Some(want.clone())
    })
    .await;
    if !ok {
        for r in api
            .requests()
            .iter()
            .filter(|r| r.path.contains("serviceaccounts"))
        {
            eprintln!("{:?} {} {} watch={}", r.at, r.method, r.path, r.watch);
        }
        eprintln!("{ns}/{name}: {:?}", api.service_account(ns, name));
    }
    ok
}

fn service_account(secrets: &[&str]) -> Value {
    json!({ "metadata": {}, "imagePullSecrets": secrets.iter().map(|s| json!({ "name": s })).collect::<Vec<_>>() })
}

/// What a user or the controller-manager writes over a ServiceAccount: the entries given,
/// the annotations it had kept.
fn edit_service_account(api: &FakeApi, ns: &str, name: &str, secrets: &[&str]) {
    let mut sa = service_account(secrets);
    if let Some(before) = api.service_account(ns, name) {
        sa["metadata"]["annotations"] = before["metadata"]["annotations"].clone();
    }
    api.put_service_account(ns, name, sa);
}

#[tokio::test(start_paused = true)]
async fn listed_service_accounts_get_our_secrets_after_theirs_and_lose_only_ours() {
    let api = FakeApi::default();
    let secrets = ["gar-pull", "ghcr"];
    let namespaces = cluster(&api, 1, &secrets);
    let ns = namespaces[0].as_str();
    api.put_service_account(ns, "default", service_account(&[]));
    api.put_service_account(ns, "builder", service_account(&["builder-own"]));
    api.put_service_account(ns, "other", service_account(&["x"]));
    // Not opted in: left alone.
    api.add_namespace("elsewhere", false);
    api.put_service_account("elsewhere", "default", service_account(&["theirs"]));
    let config = Config::from_yaml(
        "registries:\n  - match: r0.example.com\n    secret: gar-pull\n  - match: r1.example.com\n    secret: ghcr\nserviceAccounts: [default, builder]\n",
    )
    .expect("config")
    .0;
    let metrics = Arc::new(Metrics::new());
    let client = api.client_with(&ApiLayer::new(&KubeArgs::default(), metrics.clone()));
    let sync = Running::start_config(client, config, args(), metrics);

    assert!(lists(&api, ns, "builder", &["builder-own", "gar-pull", "ghcr"]).await);
    assert!(lists(&api, ns, "default", &["gar-pull", "ghcr"]).await);
    assert_eq!(
        pull_secrets_of(&api, ns, "other").unwrap(),
        ["x"],
        "not listed: untouched"
    );
    assert_eq!(
        pull_secrets_of(&api, "elsewhere", "default").unwrap(),
        ["theirs"]
    );
    assert_eq!(
        api.service_account(ns, "builder").unwrap()["metadata"]["annotations"]
            [pullsecret_injector::names::SERVICE_ACCOUNT_SECRETS_ANNOTATION],
        "gar-pull,ghcr"
    );

    // Nothing to do: no write, however often the namespace is reconciled.
    let writes = |api: &FakeApi| {
        api.requests()
            .iter()
            .filter(|r| r.method == http::Method::PATCH && r.path.contains("/serviceaccounts/"))
            .count()
    };
    let before = writes(&api);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(writes(&api), before);

    // A user's later edit is kept; an entry of ours they remove comes back.
    edit_service_account(
        &api,
        ns,
        "builder",
        &["builder-own", "gar-pull", "ghcr", "user-added"],
    );
    edit_service_account(&api, ns, "default", &["gar-pull"]);
    assert!(lists(&api, ns, "default", &["gar-pull", "ghcr"]).await);
    assert!(
        lists(
            &api,
            ns,
            "builder",
            &["builder-own", "gar-pull", "ghcr", "user-added"]
        )
        .await
    );

    // A namespace opted in before its ServiceAccount exists: served once it appears.
    api.add_namespace("team-new", true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.put_service_account("team-new", "default", service_account(&[]));
    assert!(lists(&api, "team-new", "default", &["gar-pull", "ghcr"]).await);

    // An entry the ServiceAccount had before us stays theirs when the namespace opts out.
    api.add_namespace("team-had", false);
    api.put_service_account("team-had", "default", service_account(&["ghcr"]));
    api.label_namespace("team-had", true);
    assert!(lists(&api, "team-had", "default", &["ghcr", "gar-pull"]).await);
    api.label_namespace("team-had", false);
    api.label_namespace(ns, false);
    assert!(lists(&api, ns, "builder", &["builder-own", "user-added"]).await);
    assert!(lists(&api, ns, "default", &[]).await);
    assert!(
        lists(&api, "team-had", "default", &["ghcr"]).await,
        "theirs stays"
    );
    assert!(
        api.service_account(ns, "builder").unwrap()["metadata"]["annotations"]
            .get(pullsecret_injector::names::SERVICE_ACCOUNT_SECRETS_ANNOTATION)
            .is_none()
    );
    assert!(
        sync.metrics
            .encode()
            .contains("pullsecret_injector_sync_service_account_patches_total")
    );
    sync.stop().await;
}
