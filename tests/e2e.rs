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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
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
    /// The policy case's: opted in, and left out by the suite's webhook.
    ns_policy: String,
    webhook_name: String,
    /// The policy case's MutatingAdmissionPolicy and its binding.
    policy_name: String,
    dir: tempfile::TempDir,
    host: String,
    port: u16,
    server: Option<Child>,
    /// A second replica, for the failover case.
    second: Option<Child>,
}

impl Run {
    fn namespaces(&self) -> [&str; 7] {
        [
            &self.source_ns,
            &self.ns_a,
            &self.ns_b,
            &self.ns_c,
            &self.ns_sa,
            &self.ns_sa_late,
            &self.ns_policy,
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
        delete_policy(&self.client, &self.policy_name).await;
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
        // The policy case's namespace is opted in, and only the policy may act there.
        .args([
            "--set-json",
            &format!("webhook.excludeNamespaces={}", json!([run.ns_policy])),
        ])
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
        ns_policy: format!("psi-e2e-{id}-policy"),
        webhook_name: format!("psi-e2e-{id}-pullsecret-injector"),
        policy_name: format!("psi-e2e-{id}-pullsecret-injector"),
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
    // Before case 15: with `serviceAccounts` on, the sync would add our secrets to the
    // policy case's ServiceAccounts while it reads them.
    policy_case(run).await;
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

/// The group version that serves MutatingAdmissionPolicy GA (Kubernetes 1.36+).
const POLICY_GROUP_VERSION: &str = "admissionregistration.k8s.io/v1";
/// The policy case's kinds, with their plurals.
const POLICY_KINDS: [(&str, &str); 2] = [
    ("MutatingAdmissionPolicy", "mutatingadmissionpolicies"),
    (
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
    ),
];
/// How long the API server gets to start applying a new policy.
const POLICY_PICKUP: Duration = Duration::from_secs(30);
/// Case 16's config: globs, ports, path prefixes (one with a `.`), Docker Hub, IP registries,
/// and a secret two rules share.
const POLICY_RULES: [(&str, &str); 10] = [
    ("*.pkg.dev", "gar-pull"),
    ("ghcr.io/acme", "ghcr-acme"),
    ("docker.io/library/nginx", "nginx-pull"),
    ("docker.io", "dockerhub"),
    ("localhost:5000", "local-registry"),
    ("127.0.0.1:5000", "loopback-registry"),
    ("[::1]:5000", "ipv6-registry"),
    ("r?.example.com", "example-pull"),
    ("[a-c]ocker.io", "dockerhub"),
    ("quay.io/team.a/app", "quay-team"),
];
/// Case 16's images, one Pod each: distribution's reference table (the valid ones of
/// tests/image.rs, then invalid ones the API server still accepts: it checks only for
/// surrounding whitespace), then the edges of each rule above.
const POLICY_IMAGES: &[&str] = &[
    "nginx",
    "nginx:1.27",
    "nginx:Latest",
    "library/redis:7",
    "docker.io/bitnami/kafka:3.7",
    "docker.io/nginx",
    "docker.io/library/alpine",
    "index.docker.io/grafana/grafana:11.0.0",
    "index.docker.io/nginx",
    "index.docker.io/library/nginx",
    "registry-1.docker.io/library/busybox:1.36",
    "registry-1.docker.io/busybox",
    "busybox@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
    "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1",
    "asia-northeast1-docker.pkg.dev/acme-prod/app/web@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "us-docker.pkg.dev/other/x/y",
    "gcr.io/distroless/static:nonroot",
    "eu.gcr.io/acme/legacy:2",
    "k8s.gcr.io/echoserver:1.4",
    "ghcr.io/acme/api:1.2.3",
    "ghcr.io/acme/jobs/nightly:2026.11",
    "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/team/svc:9",
    "public.ecr.aws/nginx/nginx:1",
    "quay.io/jetstack/cert-manager-controller:v1.15.0",
    "registry.k8s.io/pause:3.9",
    "mcr.microsoft.com/dotnet/runtime:8.0",
    "localhost:5000/dev/app:latest",
    "localhost/dev/app",
    "localhost:5000/x@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "127.0.0.1:5000/x",
    "10.0.0.1/team/app:2",
    "[::1]:5000/ipv6/app:1",
    "[2001:db8::1]/app",
    "harbor.corp.example:8443/proj/img:v1",
    "nexus.internal:18080/repo/app:1.0.0-rc.1-build.5",
    "a.b.c.d.example.com/deep/path/to/image:tag",
    "xn--bcher-kva.example/x",
    "Example.COM/x/y:1",
    "Foo/bar",
    "Docker.io/library/nginx",
    "foo:5000",
    "localhost",
    "localhost:5000",
    "example.com",
    "sha256:abc",
    "foo/bar:5000",
    "a/b/c/d/e/f",
    "my_repo/app",
    "my__repo/app",
    "my--repo/app",
    "my.repo/app",
    "nginx:1.27@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "nginx@sha512:00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "nginx:_under",
    // Invalid references: never matched.
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "ghcr.io/Acme/api:1",
    "ghcr.io/Acme/x",
    "FOO",
    "docker.io/Library/nginx",
    "index.docker.io/Library/nginx",
    "nginx@sha256:abc",
    "nginx@sha256:9D2D1E6C2A8D0B4C1E5B8F3A7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F1A0B9C8D",
    "nginx@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d00",
    "nginx@md5:0123456789abcdef0123456789abcdef",
    "nginx@",
    "nginx:",
    "nginx:-bad",
    "nginx:a b",
    "-repo/app",
    "repo-/app",
    "my___repo/app",
    "example.com/",
    "example.com//x",
    "ghcr.io/acm\u{e9}/x",
    "ghcr.io/acme/app:1:2",
    "example.com:/x",
    "example.com:abc/x",
    ":5000/x",
    "[zz::1]:5000/x",
    "exa_mple.com/foo",
    "-bad.example.com/x",
    "a..b/x",
    "localhost:5000/X",
    // The edges of the rules.
    "x.pkg.dev/a/b",
    "pkg.dev/a",
    "a.b.pkg.dev/x",
    "asia-northeast1-docker.pkg.dev:443/acme-prod/app",
    "ghcr.io/acme",
    "ghcr.io/acme:1",
    "ghcr.io/acme-corp/x",
    "ghcr.io/acmecorp/x",
    "ghcr.io/acme/x/y/z",
    "ghcr.io/x/acme",
    "GHCR.io/acme/x",
    "quay.io/team.a/app",
    "quay.io/team.a/app/sub:1",
    "quay.io/team.a/application",
    "quay.io/teamxa/app",
    "quay.io/team.a",
    "docker.io/library/nginx:1",
    "library/nginx",
    "index.docker.io/library/nginx:stable",
    "docker.io/library/nginx-extra",
    "docker.io/library/nginx/sub",
    "docker.io/library/nginx.x",
    "localhost:5000/x",
    "localhost:5001/x",
    "localhost/x",
    "LOCALHOST:5000/x",
    "127.0.0.1:5000/team/app:2",
    "127.0.0.1/team/app",
    "127.0.0.2:5000/x",
    "[::1]:5000/x",
    "[::1]/x",
    "[::1]:5001/x",
    "[0:0:0:0:0:0:0:1]:5000/x",
    "r1.example.com/x",
    "ra.example.com/x",
    "r.example.com/x",
    "r12.example.com/x",
    "a.r1.example.com/x",
    "r1.example.com:443/x",
    "R1.example.com/x",
    "r-.example.com/x",
    "bocker.io/x",
    "cocker.io/library/nginx",
    "aocker.io/x:1",
    "eocker.io/x",
    "docker.io/x",
];

/// Case 16's Pods: one per image above and the longest names either side of the limit, then
/// Pods for the other things that decide: every place an image can be (ephemeral containers
/// cannot be created with the Pod, so containers, initContainers and image volumes), secrets
/// the Pod or its ServiceAccount lists, the injected annotation already there, other
/// annotations or none, the skip annotation, a mirror pod. Each with the secrets the webhook
/// gives it where the table pins them, so that agreement on nothing cannot pass.
fn policy_pods() -> Vec<(String, Value, Option<&'static [&'static str]>)> {
    let c = |image: &str| json!([{ "name": "c", "image": image }]);
    let long = |prefix: &str, n: usize| format!("{prefix}{}", "a".repeat(n));
    let mut images: Vec<String> = POLICY_IMAGES.iter().map(|&i| i.to_owned()).collect();
    images.extend([
        // 255 characters of normalized name, then 256; written `index.docker.io/`, six more.
        long("example.com/", 243),
        long("example.com/", 244),
        long("index.docker.io/acme/", 240),
        long("index.docker.io/acme/", 241),
        long("nginx:", 128),
        long("nginx:", 129),
    ]);
    let mut pods: Vec<(String, Value, Option<&'static [&'static str]>)> = images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let name = format!("policy-image-{i}");
            (name.clone(), pod(&name, c(image)), None)
        })
        .collect();

    let quay = "quay.io/prometheus/busybox:latest";
    let mut every_image = pod(
        "policy-every-image",
        images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({ "name": format!("c{i}"), "image": image }))
            .collect(),
    );
    every_image["spec"]["initContainers"] = json!([{ "name": "i", "image": quay }]);
    pods.push(("policy-every-image".to_owned(), every_image, None));

    let mut all_holders = pod(
        "policy-all-holders",
        json!([{ "name": "c", "image": quay }, { "name": "d", "image": "nginx" }]),
    );
    all_holders["spec"]["initContainers"] =
        json!([{ "name": "i", "image": "ghcr.io/acme/migrate:1" }]);
    all_holders["spec"]["volumes"] =
        json!([{ "name": "models", "image": { "reference": "localhost:5000/models/llm:1" } }]);
    pods.push((
        "policy-all-holders".to_owned(),
        all_holders,
        Some(&["ghcr-acme", "nginx-pull", "dockerhub", "local-registry"]),
    ));

    let mut volume_only = pod("policy-volume-only", c(quay));
    volume_only["spec"]["volumes"] =
        json!([{ "name": "data", "image": { "reference": "ghcr.io/acme/data:1" } }]);
    pods.push((
        "policy-volume-only".to_owned(),
        volume_only,
        Some(&["ghcr-acme"]),
    ));

    let mut volume_invalid = pod("policy-volume-invalid", c(quay));
    volume_invalid["spec"]["volumes"] =
        json!([{ "name": "data", "image": { "reference": "ghcr.io/Acme/data:1" } }]);
    pods.push((
        "policy-volume-invalid".to_owned(),
        volume_invalid,
        Some(&[]),
    ));

    let mut init_only = pod("policy-init-only", c(quay));
    init_only["spec"]["initContainers"] =
        json!([{ "name": "i", "image": "127.0.0.1:5000/tools:1" }]);
    pods.push((
        "policy-init-only".to_owned(),
        init_only,
        Some(&["loopback-registry"]),
    ));

    // Images in the reverse of config order; a secret two rules share, once.
    pods.push((
        "policy-config-order".to_owned(),
        pod(
            "policy-config-order",
            json!([
                { "name": "c", "image": "[::1]:5000/x" },
                { "name": "d", "image": "bocker.io/x" },
                { "name": "e", "image": "docker.io/x" },
                { "name": "f", "image": "x.pkg.dev/a/b" },
            ]),
        ),
        Some(&["gar-pull", "dockerhub", "ipv6-registry"]),
    ));

    let mut own = pod(
        "policy-own-secrets",
        json!([{ "name": "c", "image": "nginx" }, { "name": "d", "image": "ghcr.io/acme/api:1" }]),
    );
    own["spec"]["imagePullSecrets"] = json!([{ "name": "team-own" }, { "name": "dockerhub" }]);
    pods.push((
        "policy-own-secrets".to_owned(),
        own,
        Some(&["team-own", "dockerhub", "ghcr-acme", "nginx-pull"]),
    ));

    let mut own_all = pod("policy-own-all", c("ghcr.io/acme/api:1"));
    own_all["spec"]["imagePullSecrets"] = json!([{ "name": "ghcr-acme" }]);
    pods.push(("policy-own-all".to_owned(), own_all, Some(&["ghcr-acme"])));

    for (name, recorded) in [
        ("policy-recorded", "gar-pull"),
        ("policy-recorded-same", "ghcr-acme"),
        ("policy-recorded-odd", ",gar-pull,,"),
        ("policy-recorded-empty", ""),
    ] {
        let mut p = pod(name, c("ghcr.io/acme/api:1"));
        p["metadata"]["annotations"] = json!({ "pullsecret-injector.io/injected": recorded });
        pods.push((name.to_owned(), p, Some(&["ghcr-acme"])));
    }

    let mut other = pod("policy-other-annotations", c("ghcr.io/acme/api:1"));
    other["metadata"]["annotations"] = json!({ "team": "a" });
    pods.push((
        "policy-other-annotations".to_owned(),
        other,
        Some(&["ghcr-acme"]),
    ));
    let mut empty = pod("policy-empty-annotations", c("ghcr.io/acme/api:1"));
    empty["metadata"]["annotations"] = json!({});
    pods.push((
        "policy-empty-annotations".to_owned(),
        empty,
        Some(&["ghcr-acme"]),
    ));

    for (name, value, want) in [
        ("policy-skip", "true", &[][..]),
        ("policy-skip-spaced", " TRUE ", &[]),
        ("policy-skip-false", "false", &["ghcr-acme"]),
        ("policy-skip-yes", "yes", &["ghcr-acme"]),
    ] {
        let mut p = pod(name, c("ghcr.io/acme/api:1"));
        p["metadata"]["annotations"] = json!({ "pullsecret-injector.io/skip": value });
        pods.push((name.to_owned(), p, Some(want)));
    }

    // The ServiceAccount plugin's Validate refuses a mirror pod that names a secret: a
    // policy that added one would make this create fail.
    let mut mirror = pod("policy-mirror", c("ghcr.io/acme/api:1"));
    mirror["metadata"]["annotations"] = json!({ "kubernetes.io/config.mirror": "policy-mirror" });
    pods.push(("policy-mirror".to_owned(), mirror, Some(&[])));

    let mut via_sa = pod("policy-via-sa", c("ghcr.io/acme/api:1"));
    via_sa["spec"]["serviceAccountName"] = json!("builder");
    pods.push((
        "policy-via-sa".to_owned(),
        via_sa,
        Some(&["sa-registry", "ghcr-acme"]),
    ));
    let mut via_sa_own = pod("policy-via-sa-own", c("ghcr.io/acme/api:1"));
    via_sa_own["spec"]["serviceAccountName"] = json!("builder");
    via_sa_own["spec"]["imagePullSecrets"] = json!([{ "name": "team-own" }]);
    pods.push((
        "policy-via-sa-own".to_owned(),
        via_sa_own,
        Some(&["team-own", "ghcr-acme"]),
    ));
    pods
}

/// The Pod as the policy and the webhook see it: the ServiceAccount admission plugin runs
/// before both and gives a Pod that lists no imagePullSecrets those of its ServiceAccount
/// (`default` when it names none); it leaves mirror pods alone.
fn as_admitted(pod: &Value, service_accounts: &BTreeMap<String, Vec<String>>) -> Value {
    let mut pod = pod.clone();
    let mirror = pod
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some();
    let listed = pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    if mirror || listed {
        return pod;
    }
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let names = service_accounts
        .get(account)
        .unwrap_or_else(|| panic!("case 16: no ServiceAccount {account} was read"));
    if !names.is_empty() {
        pod["spec"]["imagePullSecrets"] = names.iter().map(|n| json!({ "name": n })).collect();
    }
    pod
}

/// `pullsecret-injector mutate --output pod` on `pod`: the webhook's decision, as the Pod it
/// makes of it.
fn mutate_pod(run: &Run, config: &Path, name: &str, pod: &Value) -> Pod {
    let file = run.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, pod.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args(["mutate", "--output", "pod", "--config"])
        .arg(config)
        .arg(&file)
        .output()
        .expect("run mutate");
    assert!(
        out.status.success(),
        "case 16 {name}: mutate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("case 16 {name}: the Pod mutate prints: {e}"))
}

fn policy_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Deletes the policy case's binding and policy; nothing to do where they were never made (or
/// the API server does not serve them).
async fn delete_policy(client: &Client, name: &str) {
    for (kind, plural) in POLICY_KINDS.iter().rev() {
        let _ = policy_api(client, kind, plural)
            .delete(name, &DeleteParams::default())
            .await;
    }
}

/// Case 16, policy mode (Kubernetes 1.36+): the MutatingAdmissionPolicy and binding that
/// `render admission-policy` prints make the API server inject by itself exactly as the webhook
/// does: for every Pod of the table, the dry-run answer in an opted-in namespace where only the
/// policy acts has the `imagePullSecrets` (in order) and the `injected` annotation that
/// `mutate --output pod` gives the same Pod.
///
/// Only the policy acts there: the suite's webhook is rendered with the namespace in
/// `webhook.excludeNamespaces` from the start (so its other cases keep the webhook exactly as
/// they test it, and nothing is re-registered mid-run), which the case reads back, and a Pod
/// dry-run before the policy exists gets nothing. The binding keeps the selector it is rendered
/// with (`--namespace` the run's source namespace) and adds one term, the names of this
/// namespace and of `ns_b` (not opted in): it must not act on any other namespace of the
/// cluster, and `ns_b` shows that the rendered opt-in term holds. Policy and binding are named
/// after the run and deleted at the end, also on failure (`Run::cleanup`).
async fn policy_case(run: &Run) {
    let ns = run.ns_policy.clone();
    let served = match run
        .client
        .list_api_group_resources(POLICY_GROUP_VERSION)
        .await
    {
        Ok(list) => list
            .resources
            .iter()
            .any(|r| r.name == "mutatingadmissionpolicies"),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(e) => panic!("case 16: discovery of {POLICY_GROUP_VERSION}: {e}"),
    };
    if !served {
        eprintln!(
            "case 16 skipped: the API server does not serve {POLICY_GROUP_VERSION} MutatingAdmissionPolicy (1.36+)"
        );
        return;
    }

    let webhook = Api::<MutatingWebhookConfiguration>::all(run.client.clone())
        .get(&run.webhook_name)
        .await
        .unwrap();
    let excluded = webhook.webhooks.iter().flatten().all(|w| {
        w.namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|expressions| {
                expressions.iter().any(|e| {
                    e.key == "kubernetes.io/metadata.name"
                        && e.operator == "NotIn"
                        && e.values.iter().flatten().any(|v| *v == ns)
                })
            })
    });
    assert!(
        excluded,
        "case 16: the suite's webhook must leave {ns} alone"
    );

    create_namespace(run, &ns, true).await;
    create_default_service_account(run, &ns).await;
    let builder: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": "builder" },
        "imagePullSecrets": [{ "name": "sa-registry" }],
    }))
    .unwrap();
    run.service_accounts(&ns)
        .create(&PostParams::default(), &builder)
        .await
        .expect("case 16: create ServiceAccount builder");
    // What the ServiceAccount plugin copies, as the API server has it.
    let mut service_accounts = BTreeMap::new();
    for name in ["default", "builder"] {
        let sa = run.service_accounts(&ns).get(name).await.unwrap();
        service_accounts.insert(name.to_owned(), sa_pull_secrets(&sa));
    }

    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe: Pod = serde_json::from_value(pod(
        "policy-probe",
        json!([{ "name": "c", "image": "ghcr.io/acme/api:1" }]),
    ))
    .unwrap();
    let before = run
        .pods(&ns)
        .create(&dry, &probe)
        .await
        .expect("case 16: the probe, before the policy");
    assert!(
        pull_secrets(&before).is_empty() && injected(&before).is_none(),
        "case 16: something other than the policy injects in {ns}"
    );

    let config = run.dir.path().join("policy-config.yaml");
    let rules: String = POLICY_RULES
        .iter()
        .map(|(m, secret)| format!("  - match: \"{m}\"\n    secret: {secret}\n"))
        .collect();
    std::fs::write(&config, format!("registries:\n{rules}")).unwrap();
    // The largest Pod of the table (every image, six long names, an init container) is within
    // the policy's image bound, where the two must agree.
    let (loaded, _) = pullsecret_injector::config::Config::load(&config).expect("case 16 config");
    let bound = pullsecret_injector::admission_policy::AdmissionPolicy::new(&loaded).max_images;
    assert!(
        POLICY_IMAGES.len() as u64 + 7 <= bound,
        "case 16: the table outgrew the policy's bound of {bound} images"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args(["render", "admission-policy", "--output", "json", "--config"])
        .arg(&config)
        .args(["--namespace", &run.source_ns])
        .output()
        .expect("run render admission-policy");
    assert!(
        out.status.success(),
        "case 16: render admission-policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("case 16: a JSON List");
    let [mut policy, mut binding] = [0, 1].map(|i| list["items"][i].clone());
    assert_eq!(policy["kind"], "MutatingAdmissionPolicy", "case 16");
    assert_eq!(binding["kind"], "MutatingAdmissionPolicyBinding", "case 16");
    policy["metadata"]["name"] = json!(run.policy_name);
    binding["metadata"]["name"] = json!(run.policy_name);
    binding["spec"]["policyName"] = json!(run.policy_name);
    binding
        .pointer_mut("/spec/matchResources/namespaceSelector/matchExpressions")
        .and_then(Value::as_array_mut)
        .expect("case 16: the binding's namespaceSelector")
        .push(json!({
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": [ns, run.ns_b],
        }));
    for (object, (kind, plural)) in [policy, binding].into_iter().zip(POLICY_KINDS) {
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        policy_api(&run.client, kind, plural)
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("case 16: create the {kind}: {e}"));
    }

    // The API server picks new policies up asynchronously.
    let deadline = Instant::now() + POLICY_PICKUP;
    loop {
        let answer = run.pods(&ns).create(&dry, &probe).await;
        let last = match &answer {
            Ok(p) if pull_secrets(p) == ["ghcr-acme"] => break,
            Ok(p) => format!("imagePullSecrets {:?}", pull_secrets(p)),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "case 16: the API server did not apply the policy within {POLICY_PICKUP:?} (the probe's answer: {last})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The table: the policy's answer against the webhook's, exactly.
    let mut disagreements = Vec::new();
    for (name, manifest, want) in policy_pods() {
        let object: Pod = serde_json::from_value(manifest.clone())
            .unwrap_or_else(|e| panic!("case 16 {name}: not a Pod: {e}"));
        let answer = run
            .pods(&ns)
            .create(&dry, &object)
            .await
            .unwrap_or_else(|e| panic!("case 16 {name}: dry-run create: {e}\n{manifest}"));
        let webhook = mutate_pod(
            run,
            &config,
            &name,
            &as_admitted(&manifest, &service_accounts),
        );
        let by_policy = (pull_secrets(&answer), injected(&answer));
        let by_webhook = (pull_secrets(&webhook), injected(&webhook));
        if by_policy != by_webhook {
            disagreements.push(format!(
                "{name}: policy {by_policy:?}, webhook {by_webhook:?}, for {}",
                manifest["spec"]
            ));
        }
        if let Some(want) = want {
            assert_eq!(
                by_webhook.0, want,
                "case 16 {name}: the table pins what the webhook gives"
            );
        }
    }
    assert!(
        disagreements.is_empty(),
        "case 16: the policy and the webhook disagree on {} Pod(s):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );

    // The binding's opt-in term: a namespace it names but that is not opted in gets nothing.
    let outside = run
        .pods(&run.ns_b)
        .create(&dry, &probe)
        .await
        .expect("case 16: the probe in a namespace not opted in");
    assert!(
        pull_secrets(&outside).is_empty(),
        "case 16: the policy acted in {}, which is not opted in",
        run.ns_b
    );

    // A real create, stored with the secret, and the webhook never called for this namespace:
    // the server's log has a review for a Pod of the webhook's namespace created after it, and
    // none for this namespace (the dry runs above included).
    let real = run
        .create_pod(
            &ns,
            pod(
                "policy-real",
                json!([{ "name": "c", "image": "ghcr.io/acme/api:1" }]),
            ),
        )
        .await;
    let stored = run.pods(&ns).get("policy-real").await.unwrap();
    for pod in [&real, &stored] {
        assert_eq!(pull_secrets(pod), ["ghcr-acme"], "case 16: a real Pod");
        assert_eq!(
            injected(pod).as_deref(),
            Some("ghcr-acme"),
            "case 16: a real Pod"
        );
    }
    let control = run
        .create_pod(
            &run.ns_a,
            pod(
                "policy-control",
                json!([{ "name": "c", "image": GAR_IMAGE }]),
            ),
        )
        .await;
    assert_eq!(
        pull_secrets(&control),
        ["gar-pull"],
        "case 16: the webhook still acts in {}",
        run.ns_a
    );
    let log = run.server_log();
    let reviews: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"message\":\"review\""))
        .collect();
    assert!(
        reviews
            .iter()
            .any(|line| line.contains("\"pod\":\"policy-control\"")),
        "case 16: the review of the control Pod is logged"
    );
    let here: Vec<&&str> = reviews
        .iter()
        .filter(|line| line.contains(&format!("\"namespace\":\"{ns}\"")))
        .collect();
    assert!(
        here.is_empty(),
        "case 16: the webhook was called for {ns}: {here:?}"
    );

    delete_policy(&run.client, &run.policy_name).await;
}
