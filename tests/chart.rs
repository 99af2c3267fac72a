//! The Helm chart and certs-scripts: rendered with the real `helm`, validated with
//! `kubernetes-validate`, and the certificates they make served by the real server.
//!
//! These need `helm` and `kubernetes-validate` on PATH (`.ci/run` installs both). Without
//! them `cargo test` reports them as ignored, with the reason (see `build.rs`); under CI a
//! missing tool fails them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::*;
use pullsecret_injector::config::Config;
use pullsecret_injector::match_condition;
use pullsecret_injector::server::Limits;
use serde_json::Value;

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/pullsecret-injector")
}

/// The tool's path; `build.rs` saw it on PATH (or CI promises it).
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH (bash .ci/run installs it)"))
}

/// `helm template` with `args`; Err(stderr) when helm refuses.
fn template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args([
            "template",
            "psi",
            chart_dir().to_str().unwrap(),
            "--namespace",
            "pullsecret-injector",
        ])
        .args(args)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

const DEFAULT_VALUES: &str = "ci/default-values.yaml";

fn render_default(helm: &Path) -> Vec<Value> {
    let values = chart_dir().join(DEFAULT_VALUES);
    documents(&template(helm, &["-f", values.to_str().unwrap()]).expect("renders"))
}

#[test]
#[cfg_attr(
    not(all(has_helm, has_kubernetes_validate)),
    ignore = "needs helm and kubernetes-validate on PATH"
)]
fn lint_and_every_values_file_renders_manifests_that_validate() {
    let (helm, validate) = (tool("helm"), tool("kubernetes-validate"));
    let dir = tempfile::tempdir().unwrap();
    let mut values: Vec<Option<PathBuf>> = vec![None];
    values.extend(ci_values().into_iter().map(Some));
    assert!(
        values.len() >= 7,
        "a values file per cert mode and option set"
    );
    for file in values {
        let mut args = vec![];
        let file_str = file.as_ref().map(|f| f.display().to_string());
        if let Some(f) = &file_str {
            args.extend(["-f", f.as_str()]);
        }
        let lint = Command::new(&helm)
            .args(["lint", "--strict", chart_dir().to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            lint.status.success(),
            "helm lint {file_str:?}: {}",
            String::from_utf8_lossy(&lint.stdout)
        );
        let rendered = template(&helm, &args).unwrap_or_else(|e| panic!("{file_str:?}: {e}"));
        let out = dir.path().join("rendered.yaml");
        std::fs::write(&out, &rendered).unwrap();
        let check = Command::new(&validate)
            .args(["--strict", "--quiet"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{file_str:?}: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn schema_refuses_misspelt_keys_and_bad_values() {
    let helm = tool("helm");
    for bad in [
        "replicaCountt=3",
        "webhook.failurePolicyy=Fail",
        "certs.mode=vault",
        "webhook.failurePolicy=Deny",
        "registries[0].matches=ghcr.io",
        "pullSecrets.Bad_Name.username=u",
    ] {
        let error = template(&helm, &["--set", bad]).expect_err(bad);
        assert!(
            error.contains("values don't meet the specifications")
                || error.contains("additional properties")
                || error.contains("at '"),
            "{bad}: {error}"
        );
    }
    assert!(template(&helm, &["--set", "webhook.failurePolicy=Fail"]).is_ok());
}

#[tokio::test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
async fn webhook_points_at_the_port_and_path_the_server_serves() {
    let helm = tool("helm");
    let docs = render_default(&helm);
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    let service_ref = &webhook["clientConfig"]["service"];
    let service = find(&docs, "Service");
    assert_eq!(service_ref["name"], service["metadata"]["name"]);
    assert_eq!(service_ref["namespace"], "pullsecret-injector");
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == service_ref["port"])
        .expect("the Service has the webhook's port");
    let container = &find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let target = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the targetPort names a container port");
    let listen = format!("--listen=0.0.0.0:{}", target["containerPort"]);
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| *a == listen),
        "the server listens on the container port"
    );

    // The path, and the probes' paths, exist on the real server.
    let server = TestServer::start(example_config(), Limits::default()).await;
    let mut client = H1::connect(&server).await;
    let path = webhook["clientConfig"]["service"]["path"].as_str().unwrap();
    let request = hyper::Request::post(format!("https://localhost{path}?timeout=2s"))
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(fixture(
            "job-pod.json",
        ))))
        .unwrap();
    assert_eq!(client.send(request).await.unwrap().status, 200);
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["scheme"], "HTTPS");
        assert_eq!(get["port"], "https");
        let reply = client
            .send(get_request(get["path"].as_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{probe}");
    }

    // The rest of the webhook contract.
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["timeoutSeconds"], 2);
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(webhook["matchPolicy"], "Equivalent");
    assert_eq!(
        webhook["admissionReviewVersions"],
        serde_json::json!(["v1"])
    );
    assert_eq!(
        webhook["rules"],
        serde_json::json!([{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }])
    );
    let selector = &webhook["namespaceSelector"]["matchExpressions"];
    assert_eq!(
        selector[0],
        serde_json::json!({ "key": "pullsecret-injector.io/inject", "operator": "In", "values": ["enabled"] })
    );
    assert_eq!(selector[1]["operator"], "NotIn");
    assert_eq!(
        selector[1]["values"],
        serde_json::json!(["kube-system", "pullsecret-injector"])
    );
}

/// The Deployment's container args, parsed by the binary's own command line.
fn serve_args(docs: &[Value]) -> pullsecret_injector::serve::ServeArgs {
    use clap::Parser as _;
    let container = &find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let cli = pullsecret_injector::cli::Cli::try_parse_from(
        std::iter::once("pullsecret-injector".to_owned()).chain(args),
    )
    .unwrap_or_else(|e| panic!("the binary refuses the chart's args: {e}"));
    match cli.command {
        pullsecret_injector::cli::Command::Serve(args) => *args,
        other => panic!("not serve: {other:?}"),
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn sync_reads_back_once_per_ten_minutes_whatever_the_replicas() {
    let helm = tool("helm");
    let minutes = |args: &[&str]| {
        let docs = documents(&template(&helm, args).unwrap());
        serve_args(&docs).sync.resync_interval.as_secs() / 60
    };
    // Only the leader reads back: the interval is not to be scaled by the replicas (which
    // `kubectl scale` or an HPA would silently break).
    assert_eq!(minutes(&[]), 10, "two replicas by default");
    assert_eq!(minutes(&["--set", "replicaCount=1"]), 10);
    assert_eq!(minutes(&["--set", "replicaCount=3"]), 10);
    let docs = render_default(&helm);
    assert_eq!(
        serve_args(&docs).leader.lease_name,
        "psi-pullsecret-injector",
        "the Lease is named for the release"
    );
    assert_eq!(
        minutes(&["--set", "resyncInterval=5m"]),
        5,
        "an explicit value wins"
    );

    let docs = documents(
        &template(
            &helm,
            &[
                "--set",
                "kubeApi.qps=200",
                "--set",
                "kubeApi.burst=20",
                "--set",
                "verifyOnAdmission=0s",
                "--set",
                "syncConcurrency=4",
            ],
        )
        .unwrap(),
    );
    let args = serve_args(&docs);
    assert_eq!(
        (args.kube.kube_api_qps, args.kube.kube_api_burst),
        (200, 20)
    );
    assert!(args.sync.verify_on_admission.is_zero());
    assert_eq!(args.sync.sync_concurrency, 4);
    assert!(template(&helm, &["--set", "kubeApi.qps=fast"]).is_err());
    assert!(template(&helm, &["--set", "resyncInterval=often"]).is_err());
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn mirror_pods_are_skipped_by_match_conditions_from_1_28() {
    let helm = tool("helm");
    let webhook = |version: &str| {
        let docs = documents(&template(&helm, &["--kube-version", version]).unwrap());
        find(&docs, "MutatingWebhookConfiguration")["webhooks"][0].clone()
    };
    assert!(webhook("1.27.0").get("matchConditions").is_none());
    assert_eq!(
        webhook("1.30.0")["matchConditions"][0],
        serde_json::json!({
            "name": match_condition::MIRROR_CONDITION,
            "expression": match_condition::MIRROR_EXPRESSION,
        })
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn image_match_condition_is_on_where_the_cluster_serves_it_unless_set() {
    let helm = tool("helm");
    let values = chart_dir().join(DEFAULT_VALUES);
    let conditions = |version: &str, set: &[&str]| {
        let mut args = vec!["-f", values.to_str().unwrap(), "--kube-version", version];
        args.extend(set.iter().flat_map(|s| ["--set", *s]));
        let docs = documents(&template(&helm, &args).unwrap());
        find(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"].clone()
    };
    // What the binary renders for the same rules.
    let docs = render_default(&helm);
    let config_yaml = find(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = Config::from_yaml(&config_yaml).unwrap().0;
    let both = serde_json::to_value(match_condition::match_conditions(&config)).unwrap();
    assert_eq!(both.as_array().map(Vec::len), Some(2), "{both}");
    let mirror_only = serde_json::json!([both[0].clone()]);

    // Unset (null): on from 1.28, where the API server evaluates matchConditions.
    assert!(conditions("1.27.0", &[]).is_null());
    assert_eq!(conditions("1.28.0", &[]), both);
    assert_eq!(conditions("1.36.0", &[]), both);
    // An explicit value wins; below 1.28 there is nothing to render either way.
    let off = "webhook.imageMatchCondition=false";
    assert_eq!(conditions("1.28.0", &[off]), mirror_only);
    assert_eq!(conditions("1.36.0", &[off]), mirror_only);
    let on = "webhook.imageMatchCondition=true";
    assert_eq!(conditions("1.36.0", &[on]), both);
    assert!(conditions("1.27.0", &[on]).is_null());
    assert!(template(&helm, &["--set", "webhook.imageMatchCondition=maybe"]).is_err());
}

/// The port a named (or numbered) port of the container resolves to.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == *port)
        .unwrap_or_else(|| panic!("no container port named {port}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn webhook_port_and_host_network_reach_every_place_that_names_them() {
    let helm = tool("helm");
    let pod_of = |docs: &[Value]| find(docs, "Deployment")["spec"]["template"]["spec"].clone();

    // Defaults: the Pod network, 8443.
    let docs = render_default(&helm);
    let pod = pod_of(&docs);
    assert!(pod.get("hostNetwork").is_none() && pod.get("dnsPolicy").is_none());
    assert_eq!(
        find(&docs, "Deployment")["spec"]["strategy"]["rollingUpdate"],
        serde_json::json!({ "maxSurge": 1, "maxUnavailable": 0 })
    );
    assert_eq!(serve_args(&docs).listen.port(), 8443);

    let docs = documents(
        &template(
            &helm,
            &[
                "--set",
                "hostNetwork=true",
                "--set",
                "webhook.port=10443",
                "--set",
                "metrics.port=10090",
            ],
        )
        .unwrap(),
    );
    let pod = pod_of(&docs);
    assert_eq!(pod["hostNetwork"], true);
    assert!(
        serve_args(&docs).checks.host_network,
        "node-local registries are checked from the node's network"
    );
    assert!(!serve_args(&render_default(&helm)).checks.host_network);
    // A surge Pod would need the node ports its predecessor holds.
    assert_eq!(
        find(&docs, "Deployment")["spec"]["strategy"]["rollingUpdate"],
        serde_json::json!({ "maxSurge": 0, "maxUnavailable": 1 })
    );
    assert_eq!(
        pod["dnsPolicy"], "ClusterFirstWithHostNet",
        "the cluster's DNS on the host network"
    );
    let args = serve_args(&docs);
    assert_eq!(args.listen.port(), 10443);
    assert_eq!(args.metrics_listen.port(), 10090);
    let container = &pod["containers"][0];
    let https = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .expect("the https container port");
    assert_eq!(https["containerPort"], 10443);
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container_port(container, &container[probe]["httpGet"]["port"]),
            10443,
            "{probe}"
        );
    }
    let service = find(&docs, "Service");
    let ports = service["spec"]["ports"].as_array().unwrap();
    let webhook_ref =
        &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"];
    let called = ports
        .iter()
        .find(|p| p["port"] == webhook_ref["port"])
        .expect("the Service port the API server calls");
    assert_eq!(container_port(container, &called["targetPort"]), 10443);
    let metrics = ports.iter().find(|p| p["name"] == "metrics").unwrap();
    assert_eq!(container_port(container, &metrics["targetPort"]), 10090);

    // One port for two servers is refused, with the reason.
    for clash in [
        &["--set", "webhook.port=9090"][..],
        &["--set", "metrics.port=8443"],
        &[
            "--set",
            "hostNetwork=true",
            "--set",
            "webhook.port=10250",
            "--set",
            "metrics.port=10250",
        ],
    ] {
        let error = template(&helm, clash).expect_err("a port clash");
        assert!(
            error.contains("webhook.port and metrics.port are both")
                && error.contains("need a port each"),
            "{clash:?}: {error}"
        );
    }
    // The listen flags come from the port values, not extraArgs.
    for flag in ["--listen=0.0.0.0:9443", "--metrics-listen=0.0.0.0:9091"] {
        let error = template(&helm, &["--set", &format!("extraArgs[0]={flag}")])
            .expect_err("a listen flag in extraArgs");
        assert!(
            error.contains("use webhook.port or metrics.port"),
            "{flag}: {error}"
        );
    }
    for bad in ["webhook.port=0", "webhook.port=65536", "hostNetwork=yes"] {
        assert!(template(&helm, &["--set", bad]).is_err(), "{bad}");
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn a_rule_change_rolls_the_pods_only_when_asked() {
    let helm = tool("helm");
    // certs.mode=secret: the certificate (and its checksum) is the same on every render.
    let pod_template = |rule: &str, rollout: bool| {
        let docs = documents(
            &template(
                &helm,
                &[
                    "--set",
                    &format!("registries[0].match={rule}"),
                    "--set",
                    "registries[0].secret=s",
                    "--set",
                    "pullSecrets.s.existingSecret=true",
                    "--set",
                    "certs.mode=secret",
                    "--set",
                    "certs.secret.name=tls",
                    "--set",
                    "certs.secret.caBundle=Y2E=",
                    "--set",
                    &format!("rolloutOnConfigChange={rollout}"),
                ],
            )
            .unwrap(),
        );
        let config = find(&docs, "ConfigMap")["data"]["config.yaml"].clone();
        (
            find(&docs, "Deployment")["spec"]["template"].clone(),
            config,
        )
    };
    let (before, config_before) = pod_template("ghcr.io", false);
    let (after, config_after) = pod_template("quay.io", false);
    assert_ne!(config_before, config_after, "the rule reaches the config");
    assert!(
        before["metadata"]["annotations"]
            .get("checksum/config")
            .is_none(),
        "no config checksum by default: {}",
        before["metadata"]
    );
    assert_eq!(before, after, "the config reloads live: no rollout");

    let (before, _) = pod_template("ghcr.io", true);
    let (after, _) = pod_template("quay.io", true);
    let checksum = |t: &Value| t["metadata"]["annotations"]["checksum/config"].clone();
    assert!(checksum(&before).is_string(), "{}", before["metadata"]);
    assert_ne!(checksum(&before), checksum(&after), "opted in: a rollout");
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn probes_tolerate_one_slow_answer_and_two_replicas_by_default() {
    let helm = tool("helm");
    let docs = render_default(&helm);
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = &container[probe];
        let failures = p["failureThreshold"].as_u64().unwrap_or(3);
        let timeout = p["timeoutSeconds"].as_u64().unwrap_or(1);
        let period = p["periodSeconds"].as_u64().unwrap_or(10);
        assert!(failures >= 3, "{probe}: unready after {failures} misses");
        // A slow answer is one that takes over a second (the kubelet's default timeout).
        assert!(timeout >= 2, "{probe}: {timeout} s timeout");
        assert!(timeout <= period, "{probe}: probes overlap");
    }
}

/// Rule sets whose image condition the chart must render exactly as the binary does: every
/// spelling the normalization handles, globs, ports, IPv6, Docker Hub paths, none at all.
const CONDITION_RULE_SETS: &[&[&str]] = &[
    &[],
    &[
        "asia-northeast1-docker.pkg.dev",
        "*.pkg.dev",
        "ghcr.io/acme",
        "docker.io",
        "localhost:5000",
    ],
    &[
        "https://index.docker.io/v1/",
        "http://ghcr.io/v2/acme/",
        "quay.io//",
    ],
    &[
        "docker.io/library",
        "docker.io/library/nginx",
        "docker.io/acme/team",
    ],
    &[
        "*.io",
        "d?cker.io/acme",
        "[a-f]*.example.com:8443/x.y",
        "prefix.*.io:1111/foo",
    ],
    &["[::1]:5000", "::1:5000", "127.0.0.1:5000/dev", "127.0.0.*"],
    // One-label rules, which may also match an IPv6 host (`[abc]:5000/x`).
    &["*", "abc:5000", "cafe", "*:443", "zz"],
    &[
        "  Example.COM/x  ",
        "registry-1.docker.io",
        "docker.io:443",
        "ghcr.io",
        "ghcr.io",
    ],
];

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn image_match_condition_renders_as_the_binary_renders_it() {
    let helm = tool("helm");
    let dir = tempfile::tempdir().unwrap();
    // So many rules that both fall back to sending every Pod.
    let many: Vec<String> = (0..2500).map(|i| format!("r{i}.example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let sets = CONDITION_RULE_SETS.iter().copied().chain([many.as_slice()]);
    for rules in sets {
        let registries: Vec<Value> = rules
            .iter()
            .enumerate()
            .map(|(i, m)| serde_json::json!({ "match": m, "secret": format!("s{i}") }))
            .collect();
        let values = dir.path().join("values.yaml");
        let doc = serde_json::json!({
            "registries": registries,
            "webhook": { "imageMatchCondition": true },
        });
        std::fs::write(&values, serde_json::to_string(&doc).unwrap()).unwrap();
        let docs = documents(
            &template(
                &helm,
                &["-f", values.to_str().unwrap(), "--kube-version", "1.33.0"],
            )
            .unwrap_or_else(|e| panic!("{rules:?}: {e}")),
        );
        // The config the chart mounts, read by the binary's own loader.
        let config_yaml = find(&docs, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .to_owned();
        let config = Config::from_yaml(&config_yaml)
            .unwrap_or_else(|e| panic!("{rules:?}: {e}"))
            .0;
        assert_eq!(config.rules().len(), rules.len());
        let expected = serde_json::to_value(match_condition::match_conditions(&config)).unwrap();
        let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
        if rules.len() == many.len() {
            assert_eq!(webhook["matchConditions"][1]["expression"], "true");
        }
        assert_eq!(
            webhook["matchConditions"], expected,
            "rules {rules:?}: the chart and the binary disagree"
        );
    }
}

/// What `helm template` needs to render admission.mode=policy: a cluster that serves
/// MutatingAdmissionPolicy v1.
const POLICY_CAPABILITY: [&str; 4] = [
    "--api-versions",
    "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
    "--kube-version",
    "1.36.0",
];

/// Rule sets whose policy the chart must render exactly as the binary does, besides
/// [`CONDITION_RULE_SETS`]: the glob rewriting (classes, negation, ranges, escapes, `?`),
/// forms that need a character outside a label's and are dropped, IPv6, paths, Docker Hub.
const POLICY_RULE_SETS: &[&[&str]] = &[
    &[
        "[a-f]*.example.com",
        "[^a-c]x?.example.com:8443/x.y",
        "[^0-9]*.io",
        "[A-Z][a-z0-9].corp",
        r"\a\-b.io",
        r"[\]-a]b.io",
        r"[a\-z]x.io",
        r"x[^a-z\-].io",
        "[+-0]x.io",
        "[!-,]x.io",
        "?.??.???",
        "*",
        "*:5000",
        "[a-f]:5000",
    ],
    // A form needing '_' or ':' in a DNS label, or a class left empty, is dropped; a rule with
    // no form is `false`.
    &[
        "a[_]b.io",
        r"[^A-Za-z0-9\-]x.io",
        r"x\:y.io:5000",
        "?:?:5000",
        "[:]1:5000",
        "x[^:]:443",
        "ghcr.io",
    ],
    &[
        "[::1]:5000",
        "[fe80::*]:5000",
        "[::1]",
        "::1",
        "[2001:db8::1]:443/team",
        "127.0.0.*:5000",
        "127.0.0.1:5000/dev",
        "[0-9]*.[0-9]*.0.1",
    ],
    &[
        "ghcr.io/acme",
        "ghcr.io/acme/team.x",
        "quay.io/a_b/c-d",
        "localhost:5000/x",
        "localhost",
        "registry.example.com:443/a/b/c",
    ],
    &[
        "docker.io",
        "index.docker.io",
        "docker.io/library",
        "docker.io/library/nginx",
        "docker.io/acme",
        "https://index.docker.io/v1/",
        "registry-1.docker.io",
        "docker.io:443",
        "d?cker.io",
        "[d]ocker.io/acme",
        "*.docker.io",
    ],
];

/// `n` rules of every shape, for the cost bound: with hundreds the rules' order check alone
/// exhausts the budget.
fn many_policy_rules(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 6 {
            0 => format!("r{i}.example.com"),
            1 => format!("*.r{i}.example.com:{}", 1000 + i),
            2 => format!("[a-f]{i}?.example.org/team{i}"),
            3 => format!("[::{i:x}]:5000"),
            4 => format!("[^a-m]x{i}.corp/p.q"),
            _ => format!("docker.io/org{i}"),
        })
        .collect()
}

/// `rules` as chart values, each rule its own secret or (`shared`) three secrets over all the
/// rules in mixed order.
fn policy_values(rules: &[&str], shared: bool, extra: Value) -> Value {
    let registries: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let secret = if shared {
                format!("s{}", (i * 7 + i / 4) % 3)
            } else {
                format!("s{i}")
            };
            serde_json::json!({ "match": m, "secret": secret })
        })
        .collect();
    let mut doc = serde_json::json!({
        "registries": registries,
        "admission": { "mode": "policy" },
    });
    if let (Some(doc), Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    doc
}

/// The chart rendered with `values` (and `args`), in a temporary values file.
fn render_values(helm: &Path, values: &Value, args: &[&str]) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, serde_json::to_string(values).unwrap()).unwrap();
    let mut all = vec!["-f", file.to_str().unwrap()];
    all.extend(args);
    template(helm, &all).map(|yaml| documents(&yaml))
}

/// `pullsecret-injector render admission-policy -o json` on the config the chart mounts: the
/// policy and the binding.
fn binary_policy(docs: &[Value]) -> Result<(Value, Value), String> {
    let text = find(docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    render_admission_policy(text)
}

/// Whether the binary refuses `values`' rules as a policy, with the message the chart gives.
fn binary_policy_refuses(values: &Value) -> bool {
    let yaml: String = values["registries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("  - match: {}\n    secret: {}\n", r["match"], r["secret"]))
        .collect();
    render_admission_policy(&format!("registries:\n{yaml}"))
        .is_err_and(|e| e.contains("more than a MutatingAdmissionPolicy can check"))
}

/// `pullsecret-injector render admission-policy -o json` on a config's text: the policy and
/// the binding, or what the command says on failure.
fn render_admission_policy(config_text: &str) -> Result<(Value, Value), String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args(["render", "admission-policy", "--config"])
        .arg(&config)
        .args(["--namespace", "pullsecret-injector", "-o", "json"])
        .env_remove("PSI_OUTPUT")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "MutatingAdmissionPolicy");
    assert_eq!(list["items"][1]["kind"], "MutatingAdmissionPolicyBinding");
    Ok((list["items"][0].clone(), list["items"][1].clone()))
}

/// The expression of the policy variable `name`.
fn policy_variable<'a>(policy: &'a Value, name: &str) -> &'a str {
    policy["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["expression"].as_str())
        .unwrap_or_else(|| panic!("no variable {name}"))
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn admission_policy_renders_as_the_binary_renders_it() {
    let helm = tool("helm");
    let keyring: Vec<&str> = KEYRING_CASES.iter().map(|(rule, _, _)| *rule).collect();
    let many = many_policy_rules(300);
    let some = many_policy_rules(120);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let some: Vec<&str> = some.iter().map(String::as_str).collect();
    let sets = CONDITION_RULE_SETS
        .iter()
        .chain(POLICY_RULE_SETS)
        .copied()
        .chain([keyring.as_slice(), some.as_slice(), many.as_slice()]);
    // (rules, shared secrets, the image bound; None where the config cannot be a policy).
    let mut bounds: Vec<(usize, bool, Option<String>)> = Vec::new();
    let mut hits = Vec::new();
    for rules in sets {
        for shared in [false, true] {
            let values = policy_values(rules, shared, Value::Null);
            let rendered = render_values(&helm, &values, &POLICY_CAPABILITY);
            let docs = match rendered {
                Ok(docs) => docs,
                Err(e) => {
                    // Too many rules or secrets: the chart refuses as the binary does.
                    assert!(
                        e.contains("more than a MutatingAdmissionPolicy can check"),
                        "{rules:?}: {e}"
                    );
                    assert!(binary_policy_refuses(&values), "{rules:?}: {e}");
                    bounds.push((rules.len(), shared, None));
                    continue;
                }
            };
            let config = config_of(&docs);
            assert_eq!(config.rules().len(), rules.len());
            let (expected, _) = binary_policy(&docs).unwrap_or_else(|e| {
                panic!("{rules:?} (shared secrets: {shared}): the chart renders what the binary refuses: {e}")
            });
            let policy = find(&docs, "MutatingAdmissionPolicy");
            // The variables one by one first, for a readable failure.
            let (chart_vars, binary_vars) = (
                policy["spec"]["variables"].as_array().unwrap(),
                expected["spec"]["variables"].as_array().unwrap(),
            );
            for (chart, binary) in chart_vars.iter().zip(binary_vars) {
                assert_eq!(
                    chart, binary,
                    "rules {rules:?} (shared secrets: {shared}): the chart and the binary disagree"
                );
            }
            assert_eq!(
                policy["spec"], expected["spec"],
                "rules {rules:?} (shared secrets: {shared}): the chart and the binary disagree"
            );
            let examined = policy_variable(&expected, "examined").to_owned();
            bounds.push((rules.len(), shared, Some(examined)));
            hits.push(policy_variable(&expected, "hits").to_owned());
        }
    }
    // The sets reach the glob rewriting's every outcome: dropped rules, a host as a DNS name
    // or an IPv6 literal, negated classes listed in full.
    for needle in [
        "[false, ",
        r"|\[[0-9A-Fa-f:]*\]):5000/",
        "n.matches(r'^[ABCDEFGHIJKLMNOPQRSTUVWXYZdefghijklmnopqrstuvwxyz0123456789\\-]x",
    ] {
        assert!(hits.iter().any(|h| h.contains(needle)), "{needle}");
    }
    // The sets reach every side of the cost bound: the usual 193 images, fewer with a hundred
    // rules, none (a refusal) with hundreds of rules or a hundred secrets.
    let bound = |n: usize, shared: bool| {
        bounds
            .iter()
            .find(|(len, s, _)| *len == n && *s == shared)
            .map(|(_, _, e)| e.clone())
            .unwrap()
    };
    let none = bound(0, false).unwrap();
    assert!(none.contains("variables.imageCount <= 193 &&"), "{none}");
    assert_eq!(bound(300, true), None);
    assert_eq!(bound(120, false), None);
    let hundred = bound(120, true).unwrap();
    assert!(
        !hundred.contains("<= 0 &&") && !hundred.contains("<= 193 &&"),
        "{hundred}"
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn admission_policy_binding_selects_the_webhooks_namespaces() {
    let helm = tool("helm");
    let rules = ["ghcr.io/acme", "docker.io"];
    let docs = render_values(
        &helm,
        &policy_values(&rules, false, Value::Null),
        &POLICY_CAPABILITY,
    )
    .unwrap();
    let policy = find(&docs, "MutatingAdmissionPolicy");
    let binding = find(&docs, "MutatingAdmissionPolicyBinding");
    // Named like every other object of the release, and bound to the policy.
    let fullname = find(&docs, "Deployment")["metadata"]["name"].clone();
    assert_eq!(fullname, "psi-pullsecret-injector");
    assert_eq!(policy["metadata"]["name"], fullname);
    assert_eq!(binding["metadata"]["name"], fullname);
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    for object in [policy, binding] {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"],
            "psi"
        );
        assert!(
            object["metadata"].get("namespace").is_none(),
            "cluster-scoped"
        );
    }
    // What the binary binds for the release namespace.
    let (_, expected) = binary_policy(&docs).unwrap();
    assert_eq!(binding["spec"], {
        let mut spec = expected["spec"].clone();
        spec["policyName"] = fullname.clone();
        spec
    });

    // The webhook's namespaceSelector, webhook.excludeNamespaces included.
    let exclude = serde_json::json!({ "webhook": { "excludeNamespaces": ["team-a", "team-b"] } });
    let docs = render_values(
        &helm,
        &policy_values(&rules, false, exclude.clone()),
        &POLICY_CAPABILITY,
    )
    .unwrap();
    let selector = &find(&docs, "MutatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"];
    assert_eq!(
        selector["matchExpressions"][1]["values"],
        serde_json::json!(["kube-system", "pullsecret-injector", "team-a", "team-b"])
    );
    let mut webhook_values = policy_values(&rules, false, exclude);
    webhook_values["admission"]["mode"] = "webhook".into();
    let webhook_docs = render_values(&helm, &webhook_values, &POLICY_CAPABILITY).unwrap();
    assert_eq!(
        *selector,
        find(&webhook_docs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn policy_mode_needs_a_cluster_that_serves_the_policy() {
    let helm = tool("helm");
    let message = "admission.mode=policy needs a cluster that serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy (Kubernetes 1.36+); use admission.mode=webhook";
    let policy = ["--set", "admission.mode=policy"];
    for cluster in [
        &[][..],
        // A 1.36 version alone is not the capability (helm's built-in list lacks the kind).
        &["--kube-version", "1.36.0"],
        // Beta is not v1.
        &[
            "--api-versions",
            "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy",
            "--kube-version",
            "1.34.0",
        ],
    ] {
        let args: Vec<&str> = policy.iter().chain(cluster).copied().collect();
        let error = template(&helm, &args).expect_err("no policy without the kind");
        assert!(error.contains(message), "{cluster:?}: {error}");
    }
    let args: Vec<&str> = policy.iter().chain(&POLICY_CAPABILITY).copied().collect();
    assert!(template(&helm, &args).is_ok());
    // Webhook mode does not ask.
    assert!(template(&helm, &["--set", "admission.mode=webhook"]).is_ok());
    let error = template(&helm, &["--set", "admission.mode=both"]).expect_err("not a mode");
    assert!(error.contains("admission"), "{error}");
    // A host label the binary refuses fails the render too.
    let bad = policy_values(&["[a-]x.io"], false, Value::Null);
    let error = render_values(&helm, &bad, &POLICY_CAPABILITY).expect_err("bad glob");
    assert!(
        error.contains(r#"host label "[a-]x" of "[a-]x.io" is not a valid pattern"#),
        "{error}"
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn webhook_mode_is_unchanged_and_policy_mode_swaps_only_the_admission_objects() {
    let helm = tool("helm");
    // certs.mode=secret: every render is the same, so whole renders compare.
    let base = serde_json::json!({
        "registries": [{ "match": "ghcr.io/acme", "secret": "s" }],
        "pullSecrets": { "s": { "existingSecret": true } },
        "certs": { "mode": "secret", "secret": { "name": "tls", "caBundle": "Y2E=" } },
    });
    let with_mode = |mode: &str| {
        let mut values = base.clone();
        values["admission"] = serde_json::json!({ "mode": mode });
        values
    };
    let default = render_values(&helm, &base, &["--kube-version", "1.36.0"]).unwrap();
    let kinds = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(kinds(&default).contains(&"MutatingWebhookConfiguration".to_owned()));
    for kind in ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"] {
        assert!(!kinds(&default).contains(&kind.to_owned()), "{kind}");
    }
    // The mode's default is webhook, and the cluster serving the policy changes nothing.
    assert_eq!(
        render_values(&helm, &with_mode("webhook"), &["--kube-version", "1.36.0"]).unwrap(),
        default
    );
    assert_eq!(
        render_values(&helm, &base, &POLICY_CAPABILITY).unwrap(),
        default
    );

    // Policy mode: the policy and its binding instead of the webhook configuration; the
    // Deployment (sync, refresher, checks, repair), its Service and the rest unchanged.
    let policy = render_values(&helm, &with_mode("policy"), &POLICY_CAPABILITY).unwrap();
    let without = |docs: &[Value], gone: &[&str]| -> Vec<Value> {
        docs.iter()
            .filter(|d| !gone.iter().any(|k| d["kind"] == *k))
            .cloned()
            .collect()
    };
    assert_eq!(
        without(
            &policy,
            &["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]
        ),
        without(&default, &["MutatingWebhookConfiguration"])
    );
    assert_eq!(
        kinds(&policy)
            .iter()
            .filter(|k| k.starts_with("MutatingAdmissionPolicy"))
            .count(),
        2
    );
    assert!(!kinds(&policy).contains(&"MutatingWebhookConfiguration".to_owned()));
}

#[test]
#[cfg_attr(
    not(all(has_helm, has_kubernetes_validate)),
    ignore = "needs helm and kubernetes-validate on PATH"
)]
fn policy_mode_manifests_validate() {
    let (helm, validate) = (tool("helm"), tool("kubernetes-validate"));
    let rules: Vec<&str> = POLICY_RULE_SETS
        .iter()
        .flat_map(|set| set.iter().copied())
        .collect();
    let mut values = policy_values(&rules, true, Value::Null);
    values["pullSecrets"] = serde_json::json!({
        "s0": { "existingSecret": true },
        "s1": { "existingSecret": true },
        "s2": { "existingSecret": true },
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, serde_json::to_string(&values).unwrap()).unwrap();
    let mut args = vec!["-f", file.to_str().unwrap()];
    args.extend(POLICY_CAPABILITY);
    let rendered = template(&helm, &args).unwrap();
    let out = dir.path().join("rendered.yaml");
    std::fs::write(&out, &rendered).unwrap();
    let check = Command::new(&validate)
        .args(["--strict", "--kubernetes-version", "1.36.0"])
        .arg(&out)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{report}");
    // kubernetes-validate passes a kind it has no schema for with a warning only: then only
    // the policy's own check is skipped, with the reason.
    if report.contains("Couldn't find schema for kind MutatingAdmissionPolicy") {
        eprintln!(
            "skipped: this kubernetes-validate has no 1.36 schema for MutatingAdmissionPolicy v1: {report}"
        );
        return;
    }
    for object in [
        "mutatingadmissionpolicy/psi-pullsecret-injector",
        "mutatingadmissionpolicybinding/psi-pullsecret-injector",
    ] {
        assert!(
            report.contains(&format!("passed for resource {object} ")),
            "{object}: {report}"
        );
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn pod_template_meets_restricted_pod_security() {
    let helm = tool("helm");
    for file in ci_values() {
        let docs = documents(&template(&helm, &["-f", file.to_str().unwrap()]).unwrap());
        let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        // hostNetwork is the one exception, and only where the values ask for it.
        let asked: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        if asked["hostNetwork"] != true {
            assert!(pod.get("hostNetwork").is_none(), "{file:?}");
        }
        for key in ["hostPID", "hostIPC"] {
            assert!(pod.get(key).is_none_or(|v| *v == false), "{key}");
        }
        for volume in pod["volumes"].as_array().unwrap() {
            assert!(volume.get("hostPath").is_none());
        }
        for container in pod["containers"].as_array().unwrap() {
            let sc = &container["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["readOnlyRootFilesystem"], true);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            assert!(sc["capabilities"].get("add").is_none());
            assert!(sc.get("privileged").is_none_or(|v| *v == false));
            assert!(container["resources"]["limits"]["memory"].is_string());
        }
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn rbac_reaches_secrets_by_name_only() {
    let helm = tool("helm");
    let docs = render_default(&helm);
    let role = find(&docs, "ClusterRole");
    for rule in role["rules"].as_array().unwrap() {
        if rule["resources"] == serde_json::json!(["secrets"]) {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(
                !verbs.contains(&"list") && !verbs.contains(&"watch"),
                "no list/watch of Secrets cluster-wide: {rule}"
            );
            if verbs != ["create"] {
                assert_eq!(
                    rule["resourceNames"],
                    serde_json::json!(["ghcr-acme", "dockerhub"]),
                    "{rule}"
                );
            }
        }
    }
    let own = find(&docs, "Role");
    assert_eq!(own["metadata"]["namespace"], "pullsecret-injector");
    // The leader Lease: created once, then read and patched by its name, in the release
    // namespace only; nothing cluster-wide.
    let lease_rules: Vec<&Value> = own["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"] == serde_json::json!(["leases"]))
        .collect();
    assert_eq!(
        lease_rules,
        [
            &serde_json::json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"] }),
            &serde_json::json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "resourceNames": ["psi-pullsecret-injector"], "verbs": ["get", "patch"] }),
        ]
    );
    assert!(
        !role.to_string().contains("leases"),
        "no Lease rights cluster-wide"
    );
}

/// The ClusterRole's rules that name `resource`.
fn rules_on<'a>(docs: &'a [Value], resource: &str) -> Vec<&'a Value> {
    find(docs, "ClusterRole")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == resource)
        })
        .collect()
}

fn config_of(docs: &[Value]) -> Config {
    let yaml = find(docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    Config::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("the binary refuses the chart's config: {e}\n{yaml}"))
        .0
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn service_accounts_reach_the_config_and_rbac_by_name_only() {
    let helm = tool("helm");
    let values = chart_dir().join(DEFAULT_VALUES);
    let values = values.to_str().unwrap();
    for off in [
        documents(&template(&helm, &[]).unwrap()),
        render_default(&helm),
    ] {
        assert!(
            rules_on(&off, "serviceaccounts").is_empty(),
            "no access to ServiceAccounts unless listed"
        );
        assert!(config_of(&off).service_accounts().is_empty());
    }

    let on = documents(
        &template(
            &helm,
            &["-f", values, "--set", "serviceAccounts={default,builder}"],
        )
        .unwrap(),
    );
    assert_eq!(config_of(&on).service_accounts(), ["default", "builder"]);
    assert_eq!(
        rules_on(&on, "serviceaccounts"),
        [
            &serde_json::json!({ "apiGroups": [""], "resources": ["serviceaccounts"],
            "resourceNames": ["default", "builder"], "verbs": ["get", "patch", "list", "watch"] })
        ]
    );
    // Secrets are reached exactly as without it; the release namespace's Role is the same.
    let off = render_default(&helm);
    assert_eq!(rules_on(&on, "secrets"), rules_on(&off, "secrets"));
    assert_eq!(find(&on, "Role"), find(&off, "Role"));

    // The ci values file that lists them renders the same rule.
    let ci = chart_dir().join("ci/single-replica-values.yaml");
    let docs = documents(&template(&helm, &["-f", ci.to_str().unwrap()]).unwrap());
    assert_eq!(config_of(&docs).service_accounts(), ["default", "builder"]);
    assert_eq!(
        rules_on(&docs, "serviceaccounts")[0]["resourceNames"],
        serde_json::json!(["default", "builder"])
    );

    for bad in [
        "serviceAccounts={default,default}",
        "serviceAccounts={Builder}",
        "serviceAccounts={build_er}",
        "serviceAccounts[0]=",
        "serviceAccounts=default",
    ] {
        let error = template(&helm, &["-f", values, "--set", bad]).expect_err(bad);
        assert!(error.contains("serviceAccounts"), "{bad}: {error}");
    }
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn repair_rbac_and_flags_only_when_asked() {
    let helm = tool("helm");
    let pod_rules = |docs: &[Value]| -> Vec<Value> {
        find(docs, "ClusterRole")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x.as_str().unwrap().starts_with("pods"))
            })
            .cloned()
            .collect()
    };
    let off = render_default(&helm);
    assert!(pod_rules(&off).is_empty(), "no access to Pods by default");
    assert!(!serve_args(&off).repair.enabled);

    let on = documents(
        &template(
            &helm,
            &[
                "--set",
                "repair.enabled=true",
                "--set",
                "repair.maxPerNamespacePerMinute=2",
            ],
        )
        .unwrap(),
    );
    assert_eq!(
        pod_rules(&on),
        [
            serde_json::json!({ "apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"] }),
            serde_json::json!({ "apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"] }),
        ]
    );
    let args = serve_args(&on);
    assert!(args.repair.enabled);
    assert_eq!(args.repair.repair_max_per_minute, 30);
    assert_eq!(args.repair.repair_max_per_namespace_per_minute, 2);
    assert!(
        template(&helm, &["--set", "repair.maxPerMinute=0"]).is_err(),
        "the schema refuses a zero rate"
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn minted_sources_reach_the_config_and_the_key_stays_home() {
    use pullsecret_injector::credentials::{KeyRef, Source};
    let helm = tool("helm");
    let values = chart_dir().join("ci/minted-values.yaml");
    let docs = documents(&template(&helm, &["-f", values.to_str().unwrap()]).unwrap());
    let config_yaml = find(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    let (config, warnings) = Config::from_yaml(&config_yaml).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.source("gar-pull"),
        Some(&Source::GcpServiceAccountKey(KeyRef {
            secret: "gar-pull-key".into(),
            key: "key.json".into()
        }))
    );
    assert_eq!(
        config.source("gar-wi").map(Source::kind),
        Some("gcpWorkloadIdentity")
    );
    assert_eq!(
        config.source("ecr-plugin").map(Source::kind),
        Some("credentialProvider")
    );

    let secrets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Secret").collect();
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    // Only the key's own Secret: the minted ones are the injector's to write.
    assert!(names.contains(&"gar-pull-key"), "{names:?}");
    for minted in ["gar-pull", "gar-wi", "ecr-plugin", "ecr-pull"] {
        assert!(!names.contains(&minted), "{minted} is minted, not rendered");
    }
    let key = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "gar-pull-key")
        .unwrap();
    assert_eq!(key["type"], "Opaque");
    // The Role may write the minted names in its own namespace, and nothing more.
    let role = find(&docs, "Role");
    let rules = role["rules"].as_array().unwrap();
    assert!(rules.contains(&serde_json::json!({ "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ecr-plugin", "ecr-pull", "gar-pull", "gar-wi"], "verbs": ["patch"] })), "{rules:?}");
    // Without minted sources the Role only reads Secrets.
    let plain = render_default(&helm);
    let verbs: Vec<Value> = find(&plain, "Role")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"] == serde_json::json!(["secrets"]))
        .map(|r| r["verbs"].clone())
        .collect();
    assert_eq!(verbs, [serde_json::json!(["get", "list", "watch"])]);
    // The workload identity annotation reaches the ServiceAccount.
    assert_eq!(
        find(&docs, "ServiceAccount")["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "puller@acme-prod.iam.gserviceaccount.com"
    );
    // A plugin command must be an absolute path.
    let bad = template(
        &helm,
        &[
            "--set",
            "registries[0].match=ghcr.io",
            "--set",
            "registries[0].secret=g",
            "--set",
            "pullSecrets.g.credentialProvider.command=plugin",
        ],
    );
    assert!(bad.is_err());
}

#[test]
#[cfg_attr(
    not(all(has_helm, has_promtool)),
    ignore = "needs helm and promtool on PATH (bash .ci/run installs them)"
)]
fn alert_rules_pass_promtool() {
    let helm = tool("helm");
    let rendered = template(
        &helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
    )
    .unwrap();
    let rule = documents(&rendered).remove(0);
    assert_eq!(rule["kind"], "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        data_path("alerts-test.yaml"),
        dir.path().join("alerts-test.yaml"),
    )
    .unwrap();
    let promtool = tool("promtool");
    for args in [
        ["check", "rules", "rules.yaml"],
        ["test", "rules", "alerts-test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Off by default; a threshold reaches the rules.
    assert!(
        render_default(&helm)
            .iter()
            .all(|d| d["kind"] != "PrometheusRule")
    );
    let tuned = template(
        &helm,
        &[
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.credentialExpiryHours=6",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
    )
    .unwrap();
    assert!(tuned.contains("< 6 * 3600"), "{tuned}");
}

/// Every `pullsecret_injector_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("pullsecret_injector_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn dashboard_and_alerts_query_metrics_the_binary_exports() {
    use pullsecret_injector::metrics::Metrics;
    // Every family, used once so that each shows up in the exposition.
    let metrics = Metrics::new();
    let now = std::time::SystemTime::now();
    metrics.review(
        pullsecret_injector::admission::Outcome::Patched,
        std::time::Duration::from_micros(5),
        &["s".to_owned()],
        1,
    );
    metrics.rejected("malformed");
    metrics.config_reload(true);
    metrics.certificate_reload(true);
    metrics.sync_applied("s");
    metrics.sync_deleted("s");
    metrics.sync_conflict("s");
    metrics.sync_error("forbidden");
    metrics.sync_success(1);
    metrics.sync_verified("start");
    metrics.kube_api_request("GET", 200);
    metrics.repair("evicted");
    metrics.task_started("sync");
    metrics.credential_refresh("s", "success");
    metrics.credential_expiry("s", now);
    metrics.credential_check(
        "s",
        "ghcr.io",
        pullsecret_injector::registry::Verdict::WouldPull,
        now,
    );
    let exported: std::collections::BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 12, "a panel per concern");
    let rules = std::fs::read_to_string(chart_dir().join("files/prometheus-rules.yaml")).unwrap();
    for (what, names) in [
        ("dashboard", metric_names(&exprs.join("\n"))),
        ("alerts", metric_names(&rules)),
    ] {
        assert!(!names.is_empty());
        for name in names {
            assert!(
                exported.contains(&name),
                "the {what} queries {name}, which the binary does not export"
            );
        }
    }
    // The chart ships the dashboard for Grafana's sidecar.
    let helm = tool("helm");
    let docs =
        documents(&template(&helm, &["--set", "metrics.grafanaDashboard.enabled=true"]).unwrap());
    let map = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-dashboard")
        })
        .expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(map["data"]["pullsecret-injector.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn disruption_budget_only_with_several_replicas() {
    let helm = tool("helm");
    let count = |args: &[&str]| {
        documents(&template(&helm, args).unwrap())
            .iter()
            .filter(|d| d["kind"] == "PodDisruptionBudget")
            .count()
    };
    assert_eq!(count(&[]), 1);
    assert_eq!(count(&["--set", "replicaCount=1"]), 0);
    let docs = documents(&template(&helm, &[]).unwrap());
    assert_eq!(
        find(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn pull_secrets_from_values_carry_the_credentials() {
    let helm = tool("helm");
    let docs = render_default(&helm);
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "ghcr-acme")
        .expect("ghcr-acme Secret");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let config: Value = serde_json::from_slice(
        &b64.decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let entry = &config["auths"]["ghcr.io/acme"];
    assert_eq!(entry["username"], "acme-bot");
    assert_eq!(entry["password"], "not-a-real-token");
    assert_eq!(
        b64.decode(entry["auth"].as_str().unwrap()).unwrap(),
        b"acme-bot:not-a-real-token"
    );

    let gcp = documents(
        &template(
            &helm,
            &[
                "-f",
                chart_dir().join("ci/gcp-values.yaml").to_str().unwrap(),
            ],
        )
        .unwrap(),
    );
    let secret = gcp
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "gar-pull")
        .expect("gar-pull Secret");
    let config: Value = serde_json::from_slice(
        &b64.decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    for server in ["asia-northeast1-docker.pkg.dev", "us-docker.pkg.dev"] {
        assert_eq!(config["auths"][server]["username"], "_json_key");
        let key: Value =
            serde_json::from_str(config["auths"][server]["password"].as_str().unwrap())
                .expect("the key file JSON");
        assert_eq!(key["type"], "service_account");
    }
    // existingSecret: nothing rendered for it.
    let cm = documents(
        &template(
            &helm,
            &[
                "-f",
                chart_dir()
                    .join("ci/certmanager-values.yaml")
                    .to_str()
                    .unwrap(),
            ],
        )
        .unwrap(),
    );
    assert!(
        !cm.iter()
            .any(|d| d["kind"] == "Secret" && d["metadata"]["name"] == "local-registry")
    );
    let missing = template(
        &helm,
        &[
            "--set",
            "registries[0].match=ghcr.io",
            "--set",
            "registries[0].secret=s",
            "--set",
            "pullSecrets.s.username=u",
        ],
    );
    assert!(missing.expect_err("no password").contains("pullSecrets.s"));
}

fn service_names() -> [&'static str; 4] {
    [
        "psi-pullsecret-injector",
        "psi-pullsecret-injector.pullsecret-injector",
        "psi-pullsecret-injector.pullsecret-injector.svc",
        "psi-pullsecret-injector.pullsecret-injector.svc.cluster.local",
    ]
}

#[tokio::test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
async fn helm_made_certificate_serves_every_service_name() {
    let helm = tool("helm");
    let docs = render_default(&helm);
    let b64 = base64::engine::general_purpose::STANDARD;
    let tls = docs
        .iter()
        .find(|d| d["type"] == "kubernetes.io/tls")
        .expect("TLS Secret");
    let pem = |key: &str| {
        String::from_utf8(b64.decode(tls["data"][key].as_str().unwrap()).unwrap()).unwrap()
    };
    let ca_bundle =
        find(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap()
            .to_owned();
    let ca = String::from_utf8(b64.decode(&ca_bundle).unwrap()).unwrap();
    assert_eq!(
        ca,
        pem("ca.crt"),
        "the webhook trusts the CA of the served certificate"
    );
    assert!(
        pem("tls.key").contains("EC PRIVATE KEY"),
        "ECDSA key for cheap handshakes"
    );
    let server = TestServer::start_with(
        example_config(),
        Limits::default(),
        &pem("tls.crt"),
        &pem("tls.key"),
        &ca,
    )
    .await;
    for name in service_names() {
        assert!(
            tls_connect(server.addr, &ca, name, &[b"http/1.1"])
                .await
                .is_ok(),
            "{name}"
        );
    }
    assert!(
        tls_connect(
            server.addr,
            &ca,
            "other.pullsecret-injector.svc",
            &[b"http/1.1"]
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn gen_certs_script_certificates_verify_for_every_san_and_are_served() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs-scripts/gen-certs.sh");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .expect("bash runs")
    };
    let made = run(&[
        "--service",
        "psi-pullsecret-injector",
        "--namespace",
        "pullsecret-injector",
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let ca_bundle = String::from_utf8(made.stdout).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        String::from_utf8(b64.decode(ca_bundle.trim()).unwrap()).unwrap(),
        read("ca.crt"),
        "stdout is the caBundle"
    );

    let server = TestServer::start_with(
        example_config(),
        Limits::default(),
        &read("tls.crt"),
        &read("tls.key"),
        &read("ca.crt"),
    )
    .await;
    for name in service_names()
        .into_iter()
        .chain(["127.0.0.1", "localhost"])
    {
        let tls = tls_connect(server.addr, &read("ca.crt"), name, &[b"http/1.1"]).await;
        assert!(tls.is_ok(), "{name}: {:?}", tls.err());
    }
    assert!(
        tls_connect(server.addr, &read("ca.crt"), "example.com", &[b"http/1.1"])
            .await
            .is_err()
    );
    let mut client = H1::connect_to(server.addr, &read("ca.crt")).await;
    assert_eq!(client.review_status().await, 200);

    // Existing keys are kept unless --force.
    let again = run(&["--host", "localhost", "--out", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        read("ca.crt"),
        String::from_utf8(b64.decode(ca_bundle.trim()).unwrap()).unwrap()
    );
    let forced = run(&[
        "--host",
        "localhost",
        "--out",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(forced.status.success());
    assert_ne!(
        read("ca.crt"),
        String::from_utf8(b64.decode(ca_bundle.trim()).unwrap()).unwrap()
    );

    // Bad arguments: a usage line and exit 2, nothing written.
    for bad in [
        &["--service", "x"][..],
        &["--bogus"],
        &[],
        &["--host", "bad host"],
        &["--service", "Bad_Name", "--namespace", "ns"],
        &["--host", "h", "--days", "0"],
    ] {
        let refused = run(bad);
        assert_eq!(refused.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("usage: gen-certs.sh"),
            "{bad:?}"
        );
        assert!(refused.stdout.is_empty());
    }
}

#[test]
fn every_value_is_documented_by_a_comment_starting_with_its_name() {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let indent = line.len() - trimmed.len();
        path.retain(|(level, _)| *level < indent);
        path.push((indent, key.to_owned()));
        let dotted = path
            .iter()
            .map(|(_, k)| k.as_str())
            .collect::<Vec<_>>()
            .join(".");
        // Under these the keys are Kubernetes' own.
        if ["resources.", "podSecurityContext.", "securityContext."]
            .iter()
            .any(|p| dotted.starts_with(p))
        {
            continue;
        }
        let mut first = i;
        while first > 0 && lines[first - 1].trim_start().starts_with('#') {
            first -= 1;
        }
        assert!(first < i, "{dotted} (line {}) has no comment", i + 1);
        let expected = format!("# {dotted} --");
        assert!(
            lines[first].trim_start().starts_with(&expected),
            "{dotted}: comment should start with {expected:?}, found {:?}",
            lines[first]
        );
        checked += 1;
    }
    assert!(checked > 40, "{checked} keys checked");
}

#[test]
#[cfg_attr(not(has_helm), ignore = "needs helm on PATH")]
fn extra_args_env_volumes_and_security_contexts_reach_the_pod() {
    let helm = tool("helm");
    let docs = documents(
        &template(
            &helm,
            &[
                "--set",
                "extraArgs[0]=--max-body-bytes=1048576",
                "--set",
                "extraEnv[0].name=PSI_LOG_LEVEL",
                "--set",
                "extraEnv[0].value=debug",
                "--set",
                "volumes[0].name=ca",
                "--set",
                "volumes[0].configMap.name=corporate-ca",
                "--set",
                "volumeMounts[0].name=ca",
                "--set",
                "volumeMounts[0].mountPath=/etc/ssl/corporate",
                // OpenShift: its SCC assigns the ids.
                "--set",
                "podSecurityContext.runAsUser=null",
                "--set",
                "podSecurityContext.runAsGroup=null",
                "--set",
                "podSecurityContext.fsGroup=null",
            ],
        )
        .unwrap(),
    );
    // The binary takes the extra flag beside the chart's own.
    assert_eq!(serve_args(&docs).max_body_bytes, 1_048_576);
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "PSI_LOG_LEVEL" && e["value"] == "debug")
    );
    assert!(
        env.iter().any(|e| e["name"] == "PSI_NAMESPACE"),
        "the chart's own env kept"
    );
    let volumes = pod["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3, "config, tls and the extra one");
    assert_eq!(volumes[2]["configMap"]["name"], "corporate-ca");
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts[2]["mountPath"], "/etc/ssl/corporate");
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    for id in ["runAsUser", "runAsGroup", "fsGroup"] {
        assert!(sc.get(id).is_none(), "{id} left to the platform: {sc}");
    }
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    // The defaults still pin the ids.
    let docs = render_default(&helm);
    let sc = &find(&docs, "Deployment")["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(sc["runAsUser"], 65532);
    for bad in ["extraArgs[0]=serve", "volumeMounts[0].name=x"] {
        assert!(template(&helm, &["--set", bad]).is_err(), "{bad}");
    }
}

/// The chart README's values table, generated from the `# key -- text` comments of
/// values.yaml and the defaults there. `UPDATE_CHART_README=1 cargo test --test chart`
/// rewrites it.
fn values_table() -> String {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap();
    let values: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut rows = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(comment) = trimmed.strip_prefix("# ") {
            if let Some((key, doc)) = comment.split_once(" -- ") {
                rows.extend(current.take());
                current = Some((key.to_owned(), doc.to_owned()));
                continue;
            }
            // A continuation line of the description (examples come after the key, where
            // no description is open).
            if let Some((_, doc)) = current.as_mut() {
                for word in comment.split_whitespace() {
                    doc.push(' ');
                    doc.push_str(word);
                }
                continue;
            }
        }
        if !trimmed.starts_with('#') {
            rows.extend(current.take());
        }
    }
    rows.extend(current);
    let mut out = String::from("| Key | Default | Description |\n|---|---|---|\n");
    for (key, doc) in rows {
        let pointer = format!("/{}", key.replace('.', "/"));
        let default = values.pointer(&pointer).expect("documented key exists");
        // An object whose keys are documented on their own rows is not repeated.
        let nested = default.is_object() && text.contains(&format!("# {key}."));
        let default = if nested {
            String::new()
        } else {
            format!("`{}`", serde_json::to_string(default).unwrap())
        };
        out.push_str(&format!(
            "| `{key}` | {default} | {} |\n",
            doc.replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn chart_readme_lists_every_value_from_its_comment() {
    const BEGIN: &str = "<!-- values: generated from values.yaml, do not edit -->\n";
    const END: &str = "<!-- end of values -->";
    let path = chart_dir().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(BEGIN).expect("README has the values marker") + BEGIN.len();
    let end = readme.find(END).expect("README has the end marker");
    let table = values_table();
    if std::env::var_os("UPDATE_CHART_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        readme[start..end],
        table,
        "charts/pullsecret-injector/README.md is stale: UPDATE_CHART_README=1 cargo test --test chart"
    );
}
