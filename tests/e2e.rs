//! End-to-end: the real binary against the Kubernetes API server `KUBECONFIG` points to (kind,
//! k3s, Rancher Desktop, a cloud cluster, or a bare kube-apiserver). Skipped, with the reason,
//! when `KUBECONFIG` is not set. See docs/e2e.md.
//!
//! The webhook runs on this machine and is registered with the MutatingWebhookConfiguration
//! the chart renders in its external-URL mode. Nothing here needs a kubelet, a scheduler or a
//! controller-manager: every assertion is on what the API server stored (or answered, for
//! dry-run). The repair case is the one that uses them where the cluster has Ready nodes (a
//! Deployment whose Pods really fail to pull); on a bare API server it sets the stuck status
//! itself, as the kubelet would. Every run uses fresh namespaces and removes what it made, also when a case fails.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const GAR_IMAGE: &str = "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1";
const TIMEOUT: Duration = Duration::from_secs(60);
/// The leader Lease, in the injector's namespace.
const LEASE: &str = "pullsecret-injector";
/// The injector's rules: its config file, and the chart's `registries` (the image
/// matchCondition is rendered from them).
const RULES: [(&str, &str); 4] = [
    ("asia-northeast1-docker.pkg.dev", "gar-pull"),
    ("ghcr.io/acme", "ghcr-acme"),
    ("docker.io", "dockerhub"),
    ("localhost:5000", "local-registry"),
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Everything one run makes, named after a random run id.
struct Run {
    client: Client,
    id: String,
    /// The injector's namespace: the source Secrets live here.
    source_ns: String,
    /// Opted in.
    ns_a: String,
    /// Not opted in.
    ns_b: String,
    /// Opted in later, with a foreign Secret of a configured name already in it.
    ns_c: String,
    /// The ServiceAccount case's: opted in after its ServiceAccounts exist.
    ns_sa: String,
    /// The ServiceAccount case's: created with the label, its `default` made after.
    ns_sa_late: String,
    webhook_name: String,
    dir: tempfile::TempDir,
    host: String,
    port: u16,
    server: Option<Child>,
    /// A second replica, for the failover case.
    second: Option<Child>,
}

impl Run {
    fn namespaces(&self) -> [&str; 6] {
        [
            &self.source_ns,
            &self.ns_a,
            &self.ns_b,
            &self.ns_c,
            &self.ns_sa,
            &self.ns_sa_late,
        ]
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The injector's config: the rules, ghcr-acme minted by a credential provider plugin
    /// (the one source kind that runs anywhere), and `serviceAccounts` when given.
    fn write_config(&self, service_accounts: &[&str]) {
        let rules: String = RULES
            .iter()
            .map(|(m, secret)| format!("  - match: {m}\n    secret: {secret}\n"))
            .collect();
        let plugin = manifest_dir().join("tests/plugins/good-provider.sh");
        let mut config = format!(
            "registries:\n{rules}secrets:\n  ghcr-acme:\n    credentialProvider: {{command: {}}}\n",
            plugin.display()
        );
        if !service_accounts.is_empty() {
            config.push_str(&format!(
                "serviceAccounts: [{}]\n",
                service_accounts.join(", ")
            ));
        }
        std::fs::write(self.config_path(), config).unwrap();
    }

    fn service_accounts(&self, ns: &str) -> Api<ServiceAccount> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn start_server(&mut self) {
        let child = self.spawn_replica("replica-1", self.port, "server.log");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the webhook did not start: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One replica of the injector, with its own Lease identity, webhook port and log.
    fn spawn_replica(&self, identity: &str, port: u16, log: &str) -> Child {
        let certs = self.dir.path().join("certs");
        Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,pullsecret_injector=debug",
                "serve",
            ])
            .arg("--config")
            .arg(self.config_path())
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .args([
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--metrics-listen",
                "127.0.0.1:0",
                "--lease-identity",
                identity,
            ])
            .args([
                "--repair",
                "--namespace",
                &self.source_ns,
                // Long: every repair below must come from a start, an event or an
                // admission, not from the periodic read-back.
                "--resync-interval",
                "30m",
                "--shutdown-grace",
                "5s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join(log)).unwrap(),
            ))
            .spawn()
            .expect("start the binary")
    }

    fn stop_server(&mut self) {
        if let Some(child) = self.server.take() {
            stop_child(child);
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn secrets(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn create_pod(&self, ns: &str, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods(ns)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod in {ns}: {e}"))
    }

    async fn set_opt_in(&self, ns: &str, enabled: bool) {
        let value = if enabled {
            json!("enabled")
        } else {
            Value::Null
        };
        let patch = json!({ "metadata": { "labels": { "pullsecret-injector.io/inject": value } } });
        Api::<Namespace>::all(self.client.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Removes everything the run made. Namespaces are deleted last; on a bare API server
    /// (no namespace controller) they stay Terminating, but empty.
    async fn cleanup(&mut self) {
        self.stop_server();
        if let Some(second) = self.second.take() {
            stop_child(second);
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.source_ns);
        let _ = leases.delete(LEASE, &DeleteParams::default()).await;
        let webhooks: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = webhooks
            .delete(&self.webhook_name, &DeleteParams::default())
            .await;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for ns in self.namespaces() {
            let _ = self
                .pods(ns)
                .delete_collection(&now, &ListParams::default())
                .await;
            let _ = self
                .secrets(ns)
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
            let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            let _ = sas
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete(ns, &DeleteParams::default())
                .await;
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 15 s.
fn stop_child(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn pod(name: &str, containers: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name }, "spec": { "containers": containers } })
}

fn pull_secrets(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn injected(pod: &Pod) -> Option<String> {
    pod.annotations()
        .get("pullsecret-injector.io/injected")
        .cloned()
}

fn docker_config(password: &str) -> Secret {
    let auths = json!({ "auths": { "asia-northeast1-docker.pkg.dev": { "username": "_json_key", "password": password } } });
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "gar-pull" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": auths.to_string() },
    }))
    .unwrap()
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace of the run, labelled as the suite's (and opted in when asked).
async fn create_namespace(run: &Run, ns: &str, opted_in: bool) {
    let mut labels = BTreeMap::from([(
        "app.kubernetes.io/part-of".to_owned(),
        "pullsecret-injector-e2e".to_owned(),
    )]);
    if opted_in {
        labels.insert(
            "pullsecret-injector.io/inject".to_owned(),
            "enabled".to_owned(),
        );
    }
    let object = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(ns.to_owned()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(run.client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
}

/// The `default` ServiceAccount, as the controller-manager makes it (unless it did already).
async fn create_default_service_account(run: &Run, ns: &str) {
    let default: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap();
    match run
        .service_accounts(ns)
        .create(&PostParams::default(), &default)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create ServiceAccount default in {ns}: {e}"),
    }
}

fn sa_pull_secrets(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

/// The entries the sync recorded as its own on a ServiceAccount.
fn sa_ours(sa: &ServiceAccount) -> BTreeSet<String> {
    sa.annotations()
        .get("pullsecret-injector.io/service-account-secrets")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The MutatingWebhookConfiguration as the chart renders it in external-URL mode.
fn render_webhook(run: &Run, ca_bundle: &str, kube_version: &str) -> MutatingWebhookConfiguration {
    let registries: Value = RULES
        .iter()
        .map(|(m, secret)| json!({ "match": m, "secret": secret }))
        .collect();
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".to_owned());
    let out = Command::new(&helm)
        .args(["template", &format!("psi-e2e-{}", run.id)])
        .arg(manifest_dir().join("charts/pullsecret-injector"))
        .args([
            "--namespace",
            &run.source_ns,
            "--show-only",
            "templates/mutatingwebhookconfiguration.yaml",
        ])
        .args([
            "--set",
            &format!(
                "webhook.url=https://{}:{}/mutate",
                url_host(&run.host),
                run.port
            ),
        ])
        .args([
            "--set",
            "certs.mode=secret",
            "--set",
            "certs.secret.name=unused",
        ])
        .args(["--set", &format!("certs.secret.caBundle={ca_bundle}")])
        .args([
            "--set",
            "webhook.timeoutSeconds=10",
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "webhook.imageMatchCondition=true",
        ])
        .args(["--set-json", &format!("registries={registries}")])
        // matchConditions only where the cluster has them.
        .args(["--kube-version", kube_version])
        .output()
        .unwrap_or_else(|e| panic!("the e2e suite renders the webhook with helm ({helm}): {e}"));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("a MutatingWebhookConfiguration")
}

fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn setup() -> Run {
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let id: String = {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
    };
    let host = std::env::var("PSI_E2E_HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PSI_E2E_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(free_port);
    let run = Run {
        client,
        source_ns: format!("psi-e2e-{id}-src"),
        ns_a: format!("psi-e2e-{id}-a"),
        ns_b: format!("psi-e2e-{id}-b"),
        ns_c: format!("psi-e2e-{id}-c"),
        ns_sa: format!("psi-e2e-{id}-sa"),
        ns_sa_late: format!("psi-e2e-{id}-sa-late"),
        webhook_name: format!("psi-e2e-{id}-pullsecret-injector"),
        id,
        dir: tempfile::tempdir().unwrap(),
        host,
        port,
        server: None,
        second: None,
    };
    // No serviceAccounts until their case: see service_accounts_case.
    run.write_config(&[]);
    run
}

/// Namespaces (each with the `default` ServiceAccount the ServiceAccount admission plugin
/// needs, in case no controller-manager makes it), the source Secret, the server, and the
/// webhook registration.
async fn prepare(run: &mut Run) {
    for (ns, opted_in) in [
        (&run.source_ns, false),
        (&run.ns_a, true),
        (&run.ns_b, false),
        (&run.ns_c, false),
    ] {
        create_namespace(run, ns, opted_in).await;
        create_default_service_account(run, ns).await;
    }
    run.secrets(&run.source_ns)
        .create(&PostParams::default(), &docker_config("first"))
        .await
        .expect("source Secret");

    // A Secret named like a configured one, made by someone else, in a namespace not yet opted in.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": { "name": "gar-pull", "labels": { "team": "c" } },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": "{\"auths\":{}}" },
    }))
    .unwrap();
    run.secrets(&run.ns_c)
        .create(&PostParams::default(), &foreign)
        .await
        .expect("foreign Secret");

    let certs = run.dir.path().join("certs");
    let made = Command::new("bash")
        .arg(manifest_dir().join("certs-scripts/gen-certs.sh"))
        .args(["--host", &run.host, "--host", "localhost", "--out"])
        .arg(&certs)
        .output()
        .expect("gen-certs.sh");
    assert!(
        made.status.success(),
        "gen-certs.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let ca_bundle = String::from_utf8(made.stdout).unwrap().trim().to_owned();

    run.start_server();
    let info = run
        .client
        .apiserver_version()
        .await
        .expect("the API server's version");
    let minor: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let webhook = render_webhook(run, &ca_bundle, &format!("{}.{minor}.0", info.major));
    assert_eq!(webhook.name_any(), run.webhook_name);
    Api::<MutatingWebhookConfiguration>::all(run.client.clone())
        .create(&PostParams::default(), &webhook)
        .await
        .expect("register the webhook");

    // The API server picks up new webhook configurations asynchronously.
    let pods = run.pods(&run.ns_a);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe: Pod =
        serde_json::from_value(pod("probe", json!([{ "name": "c", "image": GAR_IMAGE }]))).unwrap();
    // Unreachable is the usual first-run failure (kind and VMs need PSI_E2E_HOST): say so.
    let what = format!(
        "the API server to call the webhook at https://{}:{}/mutate (is that address reachable \
         from the API server? set PSI_E2E_HOST, see docs/e2e.md)",
        url_host(&run.host),
        run.port
    );
    eventually(&what, || {
        let (pods, probe, dry) = (&pods, &probe, &dry);
        async move {
            pods.create(dry, probe)
                .await
                .ok()
                .filter(|p| pull_secrets(p) == ["gar-pull"])
                .map(|_| ())
        }
    })
    .await;
}

#[tokio::test]
#[cfg_attr(
    not(has_cluster),
    ignore = "needs a cluster: KUBECONFIG is not set (see docs/e2e.md)"
)]
async fn e2e() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut run = setup().await;
    let outcome = std::panic::AssertUnwindSafe(async {
        prepare(&mut run).await;
        cases(&mut run).await;
    })
    .catch_unwind()
    .await;
    let log = run.server_log();
    run.cleanup().await;
    if let Err(panic) = outcome {
        eprintln!("--- server log ---\n{log}");
        std::panic::resume_unwind(panic);
    }
}

async fn cases(run: &mut Run) {
    let (a, b) = (run.ns_a.clone(), run.ns_b.clone());

    // 1. Opted-in namespace, Artifact Registry image.
    let stored = run
        .create_pod(&a, pod("gar", json!([{ "name": "c", "image": GAR_IMAGE }])))
        .await;
    assert_eq!(pull_secrets(&stored), ["gar-pull"], "case 1");
    assert_eq!(
        injected(&stored).as_deref(),
        Some("gar-pull"),
        "case 1 annotation"
    );
    let fetched = run.pods(&a).get("gar").await.unwrap();
    assert_eq!(pull_secrets(&fetched), ["gar-pull"], "case 1, as stored");

    // 2. Namespace not opted in.
    let stored = run
        .create_pod(&b, pod("gar", json!([{ "name": "c", "image": GAR_IMAGE }])))
        .await;
    assert!(pull_secrets(&stored).is_empty(), "case 2");
    assert_eq!(injected(&stored), None, "case 2");

    // 3. Secrets the Pod lists itself: kept first, not repeated.
    let mut own = pod(
        "own",
        json!([{ "name": "c", "image": GAR_IMAGE }, { "name": "d", "image": "nginx:1.27" }]),
    );
    own["spec"]["imagePullSecrets"] = json!([{ "name": "team-own" }, { "name": "gar-pull" }]);
    let stored = run.create_pod(&a, own).await;
    assert_eq!(
        pull_secrets(&stored),
        ["team-own", "gar-pull", "dockerhub"],
        "case 3"
    );
    assert_eq!(injected(&stored).as_deref(), Some("dockerhub"));
    //    ... and those the ServiceAccount admission plugin copies in.
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "builder" }, "imagePullSecrets": [{ "name": "sa-registry" }] })).unwrap();
    Api::<ServiceAccount>::namespaced(run.client.clone(), &a)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let mut via_sa = pod(
        "via-sa",
        json!([{ "name": "c", "image": "localhost:5000/tools/builder:dev" }]),
    );
    via_sa["spec"]["serviceAccountName"] = json!("builder");
    let stored = run.create_pod(&a, via_sa).await;
    assert_eq!(
        pull_secrets(&stored),
        ["sa-registry", "local-registry"],
        "case 3 (ServiceAccount)"
    );

    // 4. Init container only; Docker Hub short name; a registry with a port; a digest.
    let mut init_only = pod(
        "init-only",
        json!([{ "name": "c", "image": "quay.io/prometheus/busybox:latest" }]),
    );
    init_only["spec"]["initContainers"] =
        json!([{ "name": "i", "image": "ghcr.io/acme/migrate:1" }]);
    assert_eq!(
        pull_secrets(&run.create_pod(&a, init_only).await),
        ["ghcr-acme"],
        "case 4 init"
    );
    assert_eq!(
        pull_secrets(
            &run.create_pod(&a, pod("hub", json!([{ "name": "c", "image": "nginx" }])))
                .await
        ),
        ["dockerhub"],
        "case 4 nginx"
    );
    assert_eq!(
        pull_secrets(
            &run.create_pod(
                &a,
                pod(
                    "local",
                    json!([{ "name": "c", "image": "localhost:5000/x" }])
                )
            )
            .await
        ),
        ["local-registry"],
        "case 4 port"
    );
    let digest = "asia-northeast1-docker.pkg.dev/acme-prod/app/web@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d";
    assert_eq!(
        pull_secrets(
            &run.create_pod(&a, pod("digest", json!([{ "name": "c", "image": digest }])))
                .await
        ),
        ["gar-pull"],
        "case 4 digest"
    );

    // 5. Opt-out annotation; server-side dry run.
    let mut skip = pod("skip", json!([{ "name": "c", "image": GAR_IMAGE }]));
    skip["metadata"]["annotations"] = json!({ "pullsecret-injector.io/skip": "true" });
    let stored = run.create_pod(&a, skip).await;
    assert!(
        pull_secrets(&stored).is_empty() && injected(&stored).is_none(),
        "case 5 opt-out"
    );
    let dry: Pod =
        serde_json::from_value(pod("dry", json!([{ "name": "c", "image": GAR_IMAGE }]))).unwrap();
    let answered = run
        .pods(&a)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &dry,
        )
        .await
        .unwrap();
    assert_eq!(
        pull_secrets(&answered),
        ["gar-pull"],
        "case 5 dry-run answer"
    );
    assert!(
        run.pods(&a).get_opt("dry").await.unwrap().is_none(),
        "case 5: dry run stores nothing"
    );

    // 8. generateName, as a Deployment's ReplicaSet creates Pods.
    let stored = run.create_pod(&a, json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "generateName": "web-84858677cd-", "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": GAR_IMAGE }] } })).await;
    assert!(stored.name_any().starts_with("web-84858677cd-"));
    assert_eq!(pull_secrets(&stored), ["gar-pull"], "case 8");

    match_condition_case(run).await;
    minted_case(run).await;
    check_commands_case(run).await;
    sync_cases(run).await;
    webhook_down_case(run).await;
    repair_case(run).await;
    restart_case(run).await;
    failover_case(run).await;
    service_accounts_case(run).await;
}

/// Case 14, two replicas: the one holding the Lease does the sync. Killed by SIGKILL, the
/// other leads within 20 s and repairs what changed meanwhile; stopped by SIGTERM, it gives
/// the Lease up and the next replica leads at once.
async fn failover_case(run: &mut Run) {
    let a = run.ns_a.clone();
    let leases: Api<Lease> = Api::namespaced(run.client.clone(), &run.source_ns);
    let holder = async || {
        leases
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    eventually("replica-1 holds the Lease", || async {
        (holder().await.as_deref() == Some("replica-1")).then_some(())
    })
    .await;
    let second = run.spawn_replica("replica-2", free_port(), "server-2.log");
    run.second = Some(second);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        holder().await.as_deref(),
        Some("replica-1"),
        "case 14: one leader; the second replica waits"
    );

    // The leader dies without a word; meanwhile a copy is deleted.
    let mut leader = run.server.take().expect("replica-1 runs");
    let killed = Instant::now();
    let _ = leader.kill();
    let _ = leader.wait();
    let _ = run
        .secrets(&a)
        .delete("gar-pull", &DeleteParams::default())
        .await;
    eventually("replica-2 leads after replica-1's SIGKILL", || async {
        (holder().await.as_deref() == Some("replica-2")).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(20),
        "case 14: the Lease changed hands {took:?} after the SIGKILL"
    );
    eventually(
        "the new leader restores the copy deleted during the handover",
        || async { run.secrets(&a).get_opt("gar-pull").await.ok().flatten() },
    )
    .await;

    // A rollout: SIGTERM gives the Lease up, so the next replica does not wait for expiry.
    if let Some(second) = run.second.take() {
        stop_child(second);
    }
    let restarted = Instant::now();
    run.start_server();
    eventually("replica-1 leads again", || async {
        (holder().await.as_deref() == Some("replica-1")).then_some(())
    })
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "case 14: a released Lease is taken at once, not at expiry ({took:?})"
    );
}

/// Case 9, restarts: what changed while the injector was stopped is repaired by the next
/// start, every time (the sources' readiness used to strand namespaces listed before them).
async fn restart_case(run: &mut Run) {
    let (a, b) = (run.ns_a.clone(), run.ns_b.clone());
    run.set_opt_in(&b, true).await;
    eventually("the copy in the second opted-in namespace", || async {
        run.secrets(&b).get_opt("gar-pull").await.ok().flatten()
    })
    .await;
    for round in 0..3 {
        run.stop_server();
        for ns in [&a, &b] {
            let _ = run
                .secrets(ns)
                .delete("gar-pull", &DeleteParams::default())
                .await;
        }
        run.start_server();
        for ns in [&a, &b] {
            eventually(
                &format!("restart {round}: the copy in {ns} restored"),
                || async { run.secrets(ns).get_opt("gar-pull").await.ok().flatten() },
            )
            .await;
        }
    }
    run.set_opt_in(&b, false).await;
}

/// 6. The sync: copy, rotation, opt-out, and a foreign Secret left alone.
async fn sync_cases(run: &Run) {
    let (a, c) = (run.ns_a.clone(), run.ns_c.clone());
    let source = run.secrets(&run.source_ns).get("gar-pull").await.unwrap();
    let copy = eventually("the copy in the opted-in namespace", || async {
        run.secrets(&a).get_opt("gar-pull").await.ok().flatten()
    })
    .await;
    assert_eq!(copy.type_, source.type_);
    assert_eq!(copy.data, source.data);
    assert_eq!(
        copy.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("pullsecret-injector")
    );
    assert_eq!(
        copy.annotations().get("pullsecret-injector.io/source"),
        Some(&format!("{}/gar-pull", run.source_ns))
    );
    let uid = copy.uid();

    // Rotate the source.
    let rotated = docker_config("second");
    run.secrets(&run.source_ns)
        .replace(
            "gar-pull",
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    resource_version: source.resource_version(),
                    ..rotated.metadata.clone()
                },
                ..rotated
            },
        )
        .await
        .unwrap();
    let new_source = run.secrets(&run.source_ns).get("gar-pull").await.unwrap();
    let updated = eventually("the rotated copy", || async {
        run.secrets(&a)
            .get_opt("gar-pull")
            .await
            .ok()
            .flatten()
            .filter(|s| s.data == new_source.data)
    })
    .await;
    assert_eq!(updated.uid(), uid, "updated in place");

    // A copy someone deletes comes back as soon as a Pod that needs it is admitted.
    run.secrets(&a)
        .delete("gar-pull", &DeleteParams::default())
        .await
        .unwrap();
    let stored = run
        .create_pod(
            &a,
            pod("after-delete", json!([{ "name": "c", "image": GAR_IMAGE }])),
        )
        .await;
    assert_eq!(pull_secrets(&stored), ["gar-pull"]);
    eventually("the deleted copy restored at admission", || async {
        run.secrets(&a).get_opt("gar-pull").await.ok().flatten()
    })
    .await;

    // Opting in a namespace that already has a foreign Secret of that name: left untouched.
    let foreign_before = run.secrets(&c).get("gar-pull").await.unwrap();
    run.set_opt_in(&c, true).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(run.client.clone(), &c);
    eventually("the conflict Event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()
            .filter(|list| {
                list.items
                    .iter()
                    .any(|e| e.reason.as_deref() == Some("PullSecretConflict"))
            })
            .map(|_| ())
    })
    .await;
    let foreign_after = run.secrets(&c).get("gar-pull").await.unwrap();
    assert_eq!(
        foreign_after.data, foreign_before.data,
        "foreign Secret data untouched"
    );
    assert_eq!(
        foreign_after.resource_version(),
        foreign_before.resource_version(),
        "foreign Secret not written at all"
    );

    // Opting out removes our copy (and only ours).
    run.set_opt_in(&a, false).await;
    eventually("the copy removed after opt-out", || async {
        run.secrets(&a)
            .get_opt("gar-pull")
            .await
            .ok()
            .map(|s| s.is_none())
            .filter(|gone| *gone)
    })
    .await;
    run.set_opt_in(&c, false).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        run.secrets(&c).get_opt("gar-pull").await.unwrap().is_some(),
        "a foreign Secret is never deleted"
    );
    run.set_opt_in(&a, true).await;
}

/// 7. Webhook down: Pods are still created (failurePolicy Ignore); back up: injected again.
async fn webhook_down_case(run: &mut Run) {
    let a = run.ns_a.clone();
    run.stop_server();
    let stored = run
        .create_pod(
            &a,
            pod("while-down", json!([{ "name": "c", "image": GAR_IMAGE }])),
        )
        .await;
    assert!(
        pull_secrets(&stored).is_empty(),
        "case 7: admitted unchanged while the webhook is down"
    );
    run.start_server();
    let (run, a) = (&*run, &a);
    let mut n = 0;
    eventually("injection after the webhook is back", || {
        n += 1;
        let name = format!("back-{n}");
        async move {
            let stored = run
                .create_pod(a, pod(&name, json!([{ "name": "c", "image": GAR_IMAGE }])))
                .await;
            (pull_secrets(&stored) == ["gar-pull"]).then_some(())
        }
    })
    .await;
}

/// Case 10, repair: Pods created while the webhook was down, stuck pulling, are evicted once
/// it is back, and their controller's new Pods carry the secret; a bare Pod is left alone.
async fn repair_case(run: &mut Run) {
    let a = run.ns_a.clone();
    eventually("the copy the repaired Pods will use", || async {
        run.secrets(&a).get_opt("gar-pull").await.ok().flatten()
    })
    .await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(run.client.clone());
    let ready_nodes = nodes
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items.iter().any(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        })
        .unwrap_or(false);
    run.stop_server();
    let bare = run
        .create_pod(
            &a,
            pod("repair-bare", json!([{ "name": "c", "image": GAR_IMAGE }])),
        )
        .await;
    assert!(
        pull_secrets(&bare).is_empty(),
        "created while the webhook is down"
    );
    if ready_nodes {
        repair_deployment(run, &a).await;
    } else {
        repair_simulated(run, &a).await;
    }
    // The bare Pod is never evicted. On a cluster its pull fails for real; here, say so.
    if !ready_nodes {
        set_stuck(run, &a, "repair-bare").await;
    }
    eventually("the Event on the bare Pod", || async {
        repair_event(run, &a, "repair-bare", "Skip").await
    })
    .await;
    assert!(run.pods(&a).get_opt("repair-bare").await.unwrap().is_some());
}

/// A real Deployment: the kubelet reports ErrImagePull, the repairer evicts, the ReplicaSet
/// recreates the Pods through the webhook.
async fn repair_deployment(run: &mut Run, ns: &str) {
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": { "name": "repair-web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "repair-web" } },
            "template": {
                "metadata": { "labels": { "app": "repair-web" } },
                "spec": { "containers": [{ "name": "c", "image": GAR_IMAGE }] }
            }
        }
    }))
    .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(run.client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    let by_label = ListParams::default().labels("app=repair-web");
    let shared = &*run;
    let first: Vec<String> = eventually(
        "the Deployment's Pods stuck pulling, without the secret",
        || {
            let by_label = by_label.clone();
            async move {
                let pods = shared.pods(ns).list(&by_label).await.ok()?.items;
                let stuck = pods.len() == 2
                    && pods
                        .iter()
                        .all(|p| pull_secrets(p).is_empty() && is_stuck(p));
                stuck.then(|| pods.iter().map(ResourceExt::name_any).collect())
            }
        },
    )
    .await;
    run.start_server();
    let run = &*run;
    eventually(
        "every Pod of the Deployment recreated with the secret",
        || {
            let by_label = by_label.clone();
            let first = first.clone();
            async move {
                let pods = run.pods(ns).list(&by_label).await.ok()?.items;
                let live: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let done = live.len() == 2
                    && live
                        .iter()
                        .all(|p| pull_secrets(p) == ["gar-pull"] && !first.contains(&p.name_any()));
                done.then_some(())
            }
        },
    )
    .await;
    eventually("the eviction Event", || async {
        repair_event(run, ns, &first[0], "Evict").await
    })
    .await;
    let _ = deployments
        .delete("repair-web", &DeleteParams::default())
        .await;
}

/// A bare API server: a ReplicaSet no controller acts on, its Pod given the status the kubelet
/// reports when a pull fails; the repairer evicts it.
async fn repair_simulated(run: &mut Run, ns: &str) {
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(run.client.clone(), ns);
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
        "metadata": { "name": "repair-web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "repair-web" } },
            "template": {
                "metadata": { "labels": { "app": "repair-web" } },
                "spec": { "containers": [{ "name": "c", "image": GAR_IMAGE }] }
            }
        }
    }))
    .unwrap();
    let rs = replica_sets
        .create(&PostParams::default(), &rs)
        .await
        .expect("create the ReplicaSet");
    let mut owned = pod("repair-web-1", json!([{ "name": "c", "image": GAR_IMAGE }]));
    owned["metadata"]["labels"] = json!({ "app": "repair-web" });
    owned["metadata"]["ownerReferences"] = json!([{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "repair-web", "uid": rs.uid(), "controller": true, "blockOwnerDeletion": true }]);
    let stored = run.create_pod(ns, owned).await;
    assert!(pull_secrets(&stored).is_empty());
    set_stuck(run, ns, "repair-web-1").await;
    run.start_server();
    eventually("the stuck Pod evicted", || async {
        let pod = run.pods(ns).get_opt("repair-web-1").await.ok()?;
        pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    eventually("the eviction Event", || async {
        repair_event(run, ns, "repair-web-1", "Evict").await
    })
    .await;
    let _ = replica_sets
        .delete("repair-web", &DeleteParams::default())
        .await;
}

/// Gives a Pod the status the kubelet reports when its image cannot be pulled.
async fn set_stuck(run: &Run, ns: &str, name: &str) {
    let status = json!({ "status": { "phase": "Pending", "containerStatuses": [{
        "name": "c", "image": GAR_IMAGE, "imageID": "", "ready": false, "restartCount": 0,
        "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image" } } }] } });
    run.pods(ns)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("set the status of {ns}/{name}: {e}"));
}

fn is_stuck(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|statuses| {
            statuses.iter().any(|c| {
                let reason = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref());
                matches!(reason, Some("ErrImagePull" | "ImagePullBackOff"))
            })
        })
}

/// `Some` once a `PullSecretRepair` Event with `action` names the Pod.
async fn repair_event(run: &Run, ns: &str, pod: &str, action: &str) -> Option<()> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(run.client.clone(), ns);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some("PullSecretRepair")
                && e.action.as_deref() == Some(action)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .then_some(())
}

/// Case 11: with the image matchCondition (Kubernetes 1.28+), the API server does not call the
/// webhook for a Pod whose images no rule can match, and still calls it for the others.
async fn match_condition_case(run: &Run) {
    let webhook = Api::<MutatingWebhookConfiguration>::all(run.client.clone())
        .get(&run.webhook_name)
        .await
        .unwrap();
    let has_conditions = webhook.webhooks.iter().flatten().any(|w| {
        w.match_conditions
            .iter()
            .flatten()
            .any(|c| c.name == "an-image-may-match-a-rule")
    });
    if !has_conditions {
        eprintln!("case 11 skipped: the API server predates matchConditions (1.28)");
        return;
    }
    let a = &run.ns_a;
    let stored = run
        .create_pod(
            a,
            pod(
                "unmatched",
                json!([{ "name": "c", "image": "quay.io/prometheus/busybox:latest" }]),
            ),
        )
        .await;
    assert!(pull_secrets(&stored).is_empty(), "case 11");
    let stored = run
        .create_pod(
            a,
            pod(
                "matched",
                json!([{ "name": "c", "image": "ghcr.io/acme/api:1" }]),
            ),
        )
        .await;
    assert_eq!(pull_secrets(&stored), ["ghcr-acme"], "case 11");
    let reviewed = |name: &str| {
        run.server_log().lines().any(|line| {
            line.contains("\"message\":\"review\"") && line.contains(&format!("\"pod\":\"{name}\""))
        })
    };
    assert!(
        reviewed("matched"),
        "case 11: the review of the matched Pod is logged"
    );
    assert!(
        !reviewed("unmatched"),
        "case 11: the API server sent a Pod no rule can match"
    );
}

/// Case 12: a secret minted by a credential provider plugin: its source is written in the
/// injector's namespace and copied, the same bytes, into the opted-in namespace.
async fn minted_case(run: &Run) {
    let source = eventually("the minted source", || async {
        run.secrets(&run.source_ns)
            .get_opt("ghcr-acme")
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(
        source
            .annotations()
            .get("pullsecret-injector.io/credential-source")
            .map(String::as_str),
        Some("credentialProvider")
    );
    let config = source
        .data
        .as_ref()
        .and_then(|d| d.get(".dockerconfigjson"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    assert!(
        config.contains("plugin-user"),
        "case 12: the plugin's credentials"
    );
    let copy = eventually("the minted copy in the opted-in namespace", || async {
        run.secrets(&run.ns_a)
            .get_opt("ghcr-acme")
            .await
            .ok()
            .flatten()
            .filter(|c| c.data == source.data)
    })
    .await;
    assert_eq!(
        copy.annotations()
            .get("pullsecret-injector.io/credential-source")
            .map(String::as_str),
        Some("credentialProvider")
    );
}

/// Case 13: `check-config --namespace` and `check-pull --namespace` read the copies through
/// the cluster. The registry itself may be out of reach from here: only the steps up to it are
/// asserted, and that the verdict is one of the registry's.
async fn check_commands_case(run: &Run) {
    eventually("the copy in the opted-in namespace", || async {
        run.secrets(&run.ns_a)
            .get_opt("gar-pull")
            .await
            .ok()
            .flatten()
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .arg("check-config")
        .arg(run.config_path())
        .args(["--namespace", &run.ns_a])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "case 13: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("warning: rule 1 "),
        "case 13: gar-pull covers its rule: {text}"
    );
    assert!(
        text.contains("secret local-registry: not in the namespace"),
        "case 13: {text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args([
            "check-pull",
            GAR_IMAGE,
            "--timeout",
            "5s",
            "--namespace",
            &run.ns_a,
        ])
        .arg("--config")
        .arg(run.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(
            "auth entry: \"asia-northeast1-docker.pkg.dev\" of secret gar-pull (user _json_key)"
        ),
        "case 13: {text}"
    );
    let code = out.status.code().unwrap_or(-1);
    assert!(
        [0, 10, 11, 12, 14, 15].contains(&code),
        "case 13: exit {code}: {text}"
    );
}

/// Case 15, ServiceAccounts too (`serviceAccounts: [default, builder]`): in an opted-in
/// namespace the listed ServiceAccounts get our secrets after their own entries.
///
/// It runs last and turns `serviceAccounts` on itself (a restart with the new config), in
/// namespaces of its own: with it on, the ServiceAccount admission plugin copies the `default`
/// ServiceAccount's entries into every Pod of an opted-in namespace, which the per-Pod cases
/// above assert exactly, and turning it off again leaves the entries in place (only opting
/// out removes them).
async fn service_accounts_case(run: &mut Run) {
    let (ns, late) = (run.ns_sa.clone(), run.ns_sa_late.clone());
    // The configured secrets, in config order: what every listed ServiceAccount ends with.
    let mut ours: Vec<String> = Vec::new();
    for (_, secret) in RULES {
        if !ours.iter().any(|s| s == secret) {
            ours.push(secret.to_owned());
        }
    }
    let ours_set: BTreeSet<String> = ours.iter().cloned().collect();
    run.stop_server();
    run.write_config(&["default", "builder"]);
    run.start_server();

    // Before the label: `builder` with an entry of its own, and `default`.
    create_namespace(run, &ns, false).await;
    let sas = run.service_accounts(&ns);
    let builder: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": "builder" },
        "imagePullSecrets": [{ "name": "builder-own" }],
    }))
    .unwrap();
    sas.create(&PostParams::default(), &builder)
        .await
        .expect("create ServiceAccount builder");
    wait_for_default(run, &ns).await;
    let default_before = sa_pull_secrets(&sas.get("default").await.unwrap());
    assert!(
        default_before.iter().all(|e| !ours_set.contains(e)),
        "case 15: nothing of ours before the label: {default_before:?}"
    );

    run.set_opt_in(&ns, true).await;
    let mut want = vec!["builder-own".to_owned()];
    want.extend(ours.iter().cloned());
    let builder = eventually("case 15: builder has its own entry, then ours", || async {
        sas.get("builder")
            .await
            .ok()
            .filter(|sa| sa_pull_secrets(sa) == want)
    })
    .await;
    assert_eq!(sa_ours(&builder), ours_set, "case 15: ours recorded");
    let mut want_default = default_before.clone();
    want_default.extend(ours.iter().cloned());
    eventually("case 15: default has ours after what it had", || async {
        sas.get("default")
            .await
            .ok()
            .filter(|sa| sa_pull_secrets(sa) == want_default && sa_ours(sa) == ours_set)
    })
    .await;

    // A user's later edit (kubectl edit: read, change, replace) is kept, and the sync does
    // not write again: nothing of ours is missing.
    let edited = edit_service_account(run, &ns, "builder", |list| {
        list.push("user-added".to_owned());
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = sas.get("builder").await.unwrap();
    let mut want_edited = want.clone();
    want_edited.push("user-added".to_owned());
    assert_eq!(
        sa_pull_secrets(&now),
        want_edited,
        "case 15: the user's edit kept"
    );
    assert_eq!(
        now.resource_version(),
        edited.resource_version(),
        "case 15: no write after the user's edit"
    );

    // A user removing one of ours gets it back; the user's own entries stay.
    let removed = ours[1].clone();
    edit_service_account(run, &ns, "builder", |list| list.retain(|e| *e != removed)).await;
    let restored = eventually("case 15: the removed entry of ours back", || async {
        sas.get("builder")
            .await
            .ok()
            .filter(|sa| sa_pull_secrets(sa).contains(&removed))
    })
    .await;
    let list = sa_pull_secrets(&restored);
    assert_eq!(
        list[0], "builder-own",
        "case 15: theirs stay first: {list:?}"
    );
    assert!(list.contains(&"user-added".to_owned()), "{list:?}");
    assert_eq!(
        list.len(),
        ours.len() + 2,
        "case 15: no duplicates: {list:?}"
    );
    assert_eq!(sa_ours(&restored), ours_set);

    // A namespace created with the label: its `default` gets ours once it exists, and a
    // listed ServiceAccount that does not exist is not created.
    create_namespace(run, &late, true).await;
    wait_for_default(run, &late).await;
    let late_sas = run.service_accounts(&late);
    eventually("case 15: default of a new namespace has ours", || async {
        late_sas
            .get("default")
            .await
            .ok()
            .filter(|sa| sa_pull_secrets(sa).ends_with(&ours) && sa_ours(sa) == ours_set)
    })
    .await;
    assert!(
        late_sas.get_opt("builder").await.unwrap().is_none(),
        "case 15: a missing ServiceAccount is not created"
    );

    // Removing the label removes ours only.
    run.set_opt_in(&ns, false).await;
    run.set_opt_in(&late, false).await;
    let theirs = vec!["builder-own".to_owned(), "user-added".to_owned()];
    let builder = eventually(
        "case 15: builder keeps only its own after opt-out",
        || async {
            sas.get("builder")
                .await
                .ok()
                .filter(|sa| sa_pull_secrets(sa) == theirs)
        },
    )
    .await;
    assert!(
        sa_ours(&builder).is_empty(),
        "case 15: nothing recorded as ours"
    );
    eventually("case 15: default back to what it had", || async {
        sas.get("default")
            .await
            .ok()
            .filter(|sa| sa_pull_secrets(sa) == default_before && sa_ours(sa).is_empty())
    })
    .await;
    eventually(
        "case 15: the new namespace's default without ours",
        || async {
            late_sas
                .get("default")
                .await
                .ok()
                .filter(|sa| sa_pull_secrets(sa).iter().all(|e| !ours_set.contains(e)))
        },
    )
    .await;
}

/// Waits up to 10 s for the controller-manager to make `default` in `ns`, and makes it by
/// hand on a cluster without one (a bare API server).
async fn wait_for_default(run: &Run, ns: &str) {
    let sas = run.service_accounts(ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if sas.get_opt("default").await.ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    create_default_service_account(run, ns).await;
}

/// A user's edit of a ServiceAccount's `imagePullSecrets`: read, change, replace with the
/// version read, again on a conflict (the sync may write in between). Returns what was stored.
async fn edit_service_account(
    run: &Run,
    ns: &str,
    name: &str,
    change: impl Fn(&mut Vec<String>),
) -> ServiceAccount {
    let sas = run.service_accounts(ns);
    eventually(&format!("the edit of ServiceAccount {name}"), || async {
        let mut sa = sas.get(name).await.ok()?;
        let mut list = sa_pull_secrets(&sa);
        change(&mut list);
        sa.image_pull_secrets = Some(
            list.into_iter()
                .map(|name| k8s_openapi::api::core::v1::LocalObjectReference { name })
                .collect(),
        );
        sas.replace(name, &PostParams::default(), &sa).await.ok()
    })
    .await
}
