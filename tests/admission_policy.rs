//! Policy mode's MutatingAdmissionPolicy, evaluated as the API server evaluates it: its
//! matchConditions, then its variables in order, then its JSONPatch mutation applied with
//! RFC 6902, by a real CEL interpreter with cel-go's string extension. For every table the
//! matcher is held to, the patched Pod must equal the one the webhook's own answer gives:
//! the same `imagePullSecrets` in the same order, the same annotation, nothing else changed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::common::types::Type;
use cel::common::value::{CowVal, Val};
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, Program, StructType, Value as Cel};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use pullsecret_injector::admission;
use pullsecret_injector::admission_policy::{AdmissionPolicy, MAX_PULL_SECRETS, MAX_RECORDED_LEN};
use pullsecret_injector::config::Config;
use serde_json::{Value, json};

/// The config of `(match, secret)` rules, or why it refuses them.
fn try_config(rules: &[(impl AsRef<str>, impl AsRef<str>)]) -> Result<Config, String> {
    let yaml = rules
        .iter()
        .map(|(m, s)| format!("  - match: {:?}\n    secret: {}\n", m.as_ref(), s.as_ref()))
        .collect::<String>();
    Config::from_yaml(&format!("registries:\n{yaml}"))
        .map(|(config, _)| config)
        .map_err(|e| format!("{yaml}: {e}"))
}

fn config(rules: &[(impl AsRef<str>, impl AsRef<str>)]) -> Config {
    try_config(rules).unwrap_or_else(|e| panic!("{e}"))
}

/// `Object.<path>{...}` and `JSONPatch{...}`: the API server makes JSON of them, so here
/// they are maps. `fields`, when given, are the only ones allowed (JSONPatch's).
struct JsonStruct {
    r#type: Type,
    fields: Option<&'static [&'static str]>,
}

impl JsonStruct {
    fn new(name: &str, fields: Option<&'static [&'static str]>) -> Self {
        Self {
            r#type: Type::new_struct(name.to_owned()),
            fields,
        }
    }
}

impl StructType for JsonStruct {
    fn get_type(&self) -> &Type {
        &self.r#type
    }

    fn new_value<'b, 'v>(
        &self,
        fields: BTreeMap<String, CowVal<'b, 'v>>,
    ) -> Result<Box<dyn Val + 'v>, ExecutionError> {
        let mut map = HashMap::new();
        for (name, value) in fields {
            if self
                .fields
                .is_some_and(|allowed| !allowed.contains(&name.as_str()))
            {
                return Err(ExecutionError::function_error(
                    self.r#type.name(),
                    format!("unexpected field {name}"),
                ));
            }
            map.insert(name, Cel::try_from(value.as_ref())?);
        }
        Box::<dyn Val>::try_from(Cel::from(map))
    }
}

fn to_json(value: &Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => json!(b),
        Cel::Int(i) => json!(i),
        Cel::UInt(u) => json!(u),
        Cel::Float(f) => json!(f),
        Cel::String(s) => json!(s.as_str()),
        Cel::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Cel::Map(map) => {
            let mut out = serde_json::Map::new();
            for (key, value) in map.map.iter() {
                let Key::String(key) = key else {
                    return Err(format!("a JSON key must be a string: {key:?}"));
                };
                out.insert(key.to_string(), to_json(value)?);
            }
            Value::Object(out)
        }
        other => return Err(format!("no JSON for {other:?}")),
    })
}

/// The policy, compiled.
struct Policy {
    env: Arc<Env>,
    conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    mutation: Program,
    max_images: u64,
}

impl Policy {
    fn new(config: &Config) -> Self {
        let mut env = Env::stdlib();
        env.add_extension(cel::extensions::strings)
            .expect("strings extension");
        env.add_type(JsonStruct::new(
            "JSONPatch",
            Some(&["op", "path", "from", "value"]),
        ))
        .expect("JSONPatch");
        for name in [
            "Object.spec.imagePullSecrets",
            "Object.metadata.annotations",
        ] {
            env.add_type(JsonStruct::new(name, None)).expect(name);
        }
        let policy = AdmissionPolicy::new(config);
        let compile = |name: &str, expression: &str| {
            env.compile(expression)
                .unwrap_or_else(|e| panic!("{name} does not compile: {e}\n{expression}"))
        };
        let conditions = policy
            .match_conditions
            .iter()
            .map(|c| (c.name.to_owned(), compile(c.name, &c.expression)))
            .collect();
        let variables = policy
            .variables
            .iter()
            .map(|v| (v.name.to_owned(), compile(v.name, &v.expression)))
            .collect();
        let mutation = compile("mutation", &policy.mutation);
        Self {
            env: Arc::new(env),
            conditions,
            variables,
            mutation,
            max_images: policy.max_images,
        }
    }

    /// The Pod as the policy leaves it: every expression evaluated with `object` bound as the
    /// API server binds it; any evaluation error is returned (the API server would then apply
    /// `failurePolicy: Ignore`, which is a disagreement too).
    fn admit(&self, pod: &Value) -> Result<Value, String> {
        let object = cel::to_value(pod).map_err(|e| format!("object: {e}"))?;
        let context_with = |variables: &HashMap<String, Cel>| {
            let mut context = Context::with_env(self.env.clone());
            context.add_variable_from_value("object", object.clone());
            context.add_variable_from_value("variables", variables.clone());
            context
        };
        let mut variables: HashMap<String, Cel> = HashMap::new();
        for (name, condition) in &self.conditions {
            match condition.execute(&context_with(&variables)) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Ok(pod.clone()),
                other => return Err(format!("matchCondition {name}: {other:?}")),
            }
        }
        for (name, program) in &self.variables {
            let value = program
                .execute(&context_with(&variables))
                .map_err(|e| format!("variable {name}: {e}"))?;
            variables.insert(name.clone(), value);
        }
        let patch = self
            .mutation
            .execute(&context_with(&variables))
            .map_err(|e| format!("mutation: {e}"))?;
        let patch = to_json(&patch)?;
        let patch: json_patch::Patch =
            serde_json::from_value(patch.clone()).map_err(|e| format!("{patch}: {e}"))?;
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).map_err(|e| format!("applying {patch:?}: {e}"))?;
        Ok(out)
    }
}

/// The Pod as the webhook leaves it.
fn webhook(config: &Config, pod: &Value) -> Value {
    webhook_answer(config, pod).1
}

/// The secrets the webhook adds to `pod`, and the Pod as its answer leaves it.
fn webhook_answer(config: &Config, pod: &Value) -> (Vec<String>, Value) {
    let review = common::review_of(pod.clone());
    let decision = admission::review(config, &serde_json::to_vec(&review).expect("JSON"))
        .expect("a valid review");
    let answer: Value =
        serde_json::from_slice(&decision.to_review_bytes().expect("answer")).expect("JSON");
    (decision.added, common::apply_response(&review, &answer))
}

/// The two agree on `pod`; returns the patched Pod.
#[track_caller]
fn assert_same(config: &Config, policy: &Policy, pod: &Value) -> Value {
    let expected = webhook(config, pod);
    let got = policy
        .admit(pod)
        .unwrap_or_else(|e| panic!("the policy fails on {pod}: {e}"));
    assert_eq!(got, expected, "policy and webhook differ on {pod}");
    // Reinvocation (IfNeeded) on its own output changes nothing.
    let again = policy.admit(&got).expect("reinvocation");
    assert_eq!(again, got, "reinvocation changed {got}");
    got
}

/// A Pod as the API server passes it to admission: metadata with a namespace, one container.
fn pod_with(field: &str, image: &str) -> Value {
    match field {
        "volumes" => json!({
            "metadata": { "name": "p", "namespace": "team" },
            "spec": {
                "containers": [{ "name": "app" }],
                "volumes": [{ "name": "v", "image": { "reference": image } }],
            }
        }),
        list => json!({
            "metadata": { "name": "p", "namespace": "team" },
            "spec": { list: [{ "name": "c", "image": image }] }
        }),
    }
}

const FIELDS: [&str; 4] = [
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
];

/// (rule, image, whether it matches): the kubelet keyring's cases and the match condition's
/// table, each as a one-rule config, in every place an image can be.
#[test]
fn the_policy_decides_as_the_webhook_on_the_matcher_tables() {
    let mut checked = 0;
    for &(rule, image, expected) in common::KEYRING_CASES.iter().chain(common::MATCH_TABLE) {
        let config = config(&[(rule, "s0")]);
        let policy = Policy::new(&config);
        for field in FIELDS {
            let pod = assert_same(&config, &policy, &pod_with(field, image));
            assert_eq!(
                common::pull_secrets(&pod) == ["s0"],
                expected,
                "{rule:?} vs {image:?} in {field}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 300, "{checked}");
}

/// The distribution project's reference table: every valid reference, every invalid one
/// (which must never be matched), under rules that would match each if it were valid.
/// Rules that would match every reference below if it were valid.
const GRAMMAR_RULES: [(&str, &str); 8] = [
    ("docker.io", "hub"),
    ("*", "one-label"),
    ("*.*", "two-labels"),
    ("*.*.*", "three-labels"),
    ("*:5000", "one-label-port"),
    ("*.*:5000", "two-labels-port"),
    ("[::1]:5000", "ipv6"),
    ("localhost", "localhost"),
];

/// The distribution project's reference table, valid and invalid, and the edges of the
/// grammar: lengths either side of each limit, domains by every test, odd strings.
fn grammar_images() -> Vec<String> {
    let extra = [
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_owned(),
        format!("example.com/{}", "a".repeat(244)),
        format!("example.com/{}", "a".repeat(243)),
        format!("nginx:{}", "a".repeat(129)),
        format!("nginx:{}", "a".repeat(128)),
        format!("index.docker.io/a/{}", "a".repeat(243)),
        format!("index.docker.io/a/{}", "a".repeat(244)),
    ];
    let odd = [
        "Foo/bar",
        "FOO",
        "[ABC]/x",
        "[abc]/x",
        "[abc]:5000/x",
        "localhost/x",
        "localhost",
        "localhost:5000",
        "nginx:1/x",
        "docker.io/nginx",
        "docker.io/library/nginx:1",
        "index.docker.io/nginx",
        "registry-1.docker.io/library/nginx",
        "a.b/c",
        "example.com:99999/x",
        "example.com:05000/x",
        "\u{e9}xample.com/x",
        "example.com/x\n",
        "example.com/x@sha256:abc@def",
    ];
    common::references::VALID
        .iter()
        .map(|c| c.0.to_owned())
        .chain(
            common::references::invalid()
                .into_iter()
                .map(|(input, _)| input),
        )
        .chain(extra)
        .chain(odd.map(str::to_owned))
        .collect()
}

#[test]
fn the_reference_grammar_is_the_webhooks() {
    let config = config(&GRAMMAR_RULES);
    let policy = Policy::new(&config);
    let mut checked = 0;
    for image in grammar_images() {
        for field in FIELDS {
            assert_same(&config, &policy, &pod_with(field, &image));
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

/// Several rules per secret in mixed order: a secret takes the place of the first rule naming
/// it that an image hit, as the webhook orders them.
#[test]
fn secrets_come_in_config_order_each_once() {
    let config = config(&[
        ("ghcr.io/acme", "s2"),
        ("quay.io", "s1"),
        ("ghcr.io", "s2"),
        ("*.io", "s3"),
        ("docker.io", "s1"),
    ]);
    let policy = Policy::new(&config);
    let cases: &[(&[&str], &[&str])] = &[
        (&["ghcr.io/acme/x"], &["s2", "s3"]),
        (&["ghcr.io/other/x"], &["s2", "s3"]),
        (&["quay.io/x/y"], &["s1", "s3"]),
        (&["nginx"], &["s3", "s1"]),
        (&["nginx", "ghcr.io/acme/x"], &["s2", "s3", "s1"]),
        (&["quay.io/x", "ghcr.io/z"], &["s1", "s2", "s3"]),
        (
            &["ghcr.io/acme/x", "nginx", "quay.io/y"],
            &["s2", "s1", "s3"],
        ),
        (&["registry.k8s.io/pause"], &[]),
    ];
    for (images, expected) in cases {
        let containers: Vec<Value> = images
            .iter()
            .map(|i| json!({ "name": "c", "image": i }))
            .collect();
        let pod = json!({ "metadata": { "name": "p", "namespace": "team" }, "spec": { "containers": containers } });
        let got = assert_same(&config, &policy, &pod);
        assert_eq!(common::pull_secrets(&got), *expected, "{images:?}");
    }
}

/// What the Pod already has: its own secrets and the ServiceAccount's first, no duplicates,
/// the annotation extended, an absent or empty list, entries without a name; the opt-out and
/// mirror-pod annotations.
#[test]
fn existing_secrets_annotations_and_opt_outs() {
    let config = common::example_config();
    let policy = Policy::new(&config);
    let mut patched = 0;
    for pod in &history_pods() {
        let got = assert_same(&config, &policy, pod);
        patched += usize::from(got != *pod);
    }
    assert_eq!(patched, 9, "the tables above patch nine Pods");
}

/// Pods with a history, under the example config: their own secrets and the ServiceAccount's,
/// the annotation recorded, annotations absent or empty, opt-outs, mirror pods, images in
/// every place and none.
fn history_pods() -> Vec<Value> {
    let images = json!([
        { "name": "a", "image": "asia-northeast1-docker.pkg.dev/p/r/i:1" },
        { "name": "b", "image": "ghcr.io/acme/api" },
        { "name": "c", "image": "nginx" },
    ]);
    vec![
        json!({ "metadata": { "name": "p" }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": {} }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": { "team": "a" } }, "spec": { "containers": images, "imagePullSecrets": [] } }),
        // The ServiceAccount plugin's secrets come first, and are not added again.
        json!({ "metadata": { "name": "p" }, "spec": { "containers": images, "imagePullSecrets": [{ "name": "sa-secret" }, { "name": "ghcr-acme" }] } }),
        json!({ "metadata": { "name": "p" }, "spec": { "containers": images, "imagePullSecrets": [{}, { "name": "" }, { "name": "gar-pull" }] } }),
        // Everything present already: no patch at all.
        json!({ "metadata": { "name": "p" }, "spec": { "containers": images, "imagePullSecrets": [{ "name": "dockerhub" }, { "name": "ghcr-acme" }, { "name": "gar-pull" }] } }),
        // An earlier injection recorded: kept, extended, no name twice.
        json!({ "metadata": { "name": "p", "annotations": { "pullsecret-injector.io/injected": "other,gar-pull,,x" } }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": { "pullsecret-injector.io/injected": "" } }, "spec": { "containers": images } }),
        // Opted out, in any case and with spaces; a value that is not true does not opt out.
        json!({ "metadata": { "name": "p", "annotations": { "pullsecret-injector.io/skip": "true" } }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": { "pullsecret-injector.io/skip": " TRUE\n" } }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": { "pullsecret-injector.io/skip": "yes" } }, "spec": { "containers": images } }),
        json!({ "metadata": { "name": "p", "annotations": { "kubernetes.io/config.mirror": "abc" } }, "spec": { "containers": images } }),
        // Images everywhere the kubelet pulls from, some missing or empty.
        json!({ "metadata": { "name": "p" }, "spec": {
            "initContainers": [{ "name": "i", "image": "localhost:5000/dev/init" }, { "name": "noimage" }],
            "containers": [{ "name": "c", "image": "" }],
            "ephemeralContainers": [{ "name": "e", "image": "ghcr.io/acme/debug" }],
            "volumes": [{ "name": "cfg", "configMap": { "name": "x" } }, { "name": "v", "image": { "reference": "us-docker.pkg.dev/p/r/model" } }, { "name": "w", "image": {} }],
        } }),
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "c", "image": "quay.io/x/y" }] } }),
        json!({ "metadata": { "name": "p" }, "spec": {} }),
    ]
}

/// Every recorded AdmissionReview of the shared fixtures, its Pod as the API server sent it.
#[test]
fn the_recorded_reviews_come_out_the_same() {
    let config = common::example_config();
    let policy = Policy::new(&config);
    let pods = recorded_pods();
    for pod in &pods {
        assert_same(&config, &policy, pod);
    }
    assert!(pods.len() >= 3, "{} Pod CREATE fixtures", pods.len());
}

/// The Pods of the shared fixtures' Pod CREATE reviews, as the API server sent them.
fn recorded_pods() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/admission");
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let Ok(review) = serde_json::from_slice::<Value>(&std::fs::read(&path).expect("read"))
        else {
            continue;
        };
        let request = &review["request"];
        if request["kind"]["kind"] == "Pod" && request["operation"] == "CREATE" {
            pods.push(request["object"].clone());
        }
    }
    pods
}

/// Above its bounds (images, pull secrets, the injected annotation) the policy examines nothing (its documented difference); at the
/// bound it still decides as the webhook.
#[test]
fn the_image_bound_is_where_the_policy_stops() {
    let config = common::example_config();
    let policy = Policy::new(&config);
    assert!(policy.max_images >= 100, "{}", policy.max_images);
    let pod = |n: u64| {
        let mut containers: Vec<Value> = (0..n - 1)
            .map(|i| json!({ "name": format!("c{i}"), "image": "registry.k8s.io/pause:3.9" }))
            .collect();
        containers.push(json!({ "name": "last", "image": "ghcr.io/acme/api" }));
        json!({ "metadata": { "name": "p" }, "spec": { "containers": containers } })
    };
    let at = assert_same(&config, &policy, &pod(policy.max_images));
    assert_eq!(common::pull_secrets(&at), ["ghcr-acme"]);
    let over = pod(policy.max_images + 1);
    assert_eq!(policy.admit(&over).expect("admit"), over);
    assert_eq!(
        common::pull_secrets(&webhook(&config, &over)),
        ["ghcr-acme"]
    );
    // The pull secrets and the injected annotation have bounds of their own.
    let mut secrets = pod(1);
    let many: Vec<Value> = (0..MAX_PULL_SECRETS)
        .map(|i| json!({ "name": format!("own{i}") }))
        .collect();
    secrets["spec"]["imagePullSecrets"] = json!(many);
    assert_same(&config, &policy, &secrets);
    secrets["spec"]["imagePullSecrets"]
        .as_array_mut()
        .expect("list")
        .push(json!({ "name": "one-more" }));
    assert_eq!(policy.admit(&secrets).expect("admit"), secrets);
    let mut recorded = pod(1);
    let long = "x".repeat(usize::try_from(MAX_RECORDED_LEN).expect("small"));
    recorded["metadata"]["annotations"] = json!({ "pullsecret-injector.io/injected": long });
    assert_same(&config, &policy, &recorded);
    recorded["metadata"]["annotations"]["pullsecret-injector.io/injected"] =
        json!(format!("{long}y"));
    assert_eq!(policy.admit(&recorded).expect("admit"), recorded);
}

/// The cost the policy is sized to, for configs from none to hundreds of rules: always under
/// the limit, room for real Pods up to a hundred rules, and none at all (the webhook only)
/// past what the rules' order check can afford.
#[test]
fn the_worst_case_cost_stays_under_the_limit() {
    for (n, min_images) in [
        (0, 150),
        (1, 150),
        (10, 150),
        (20, 100),
        (100, 20),
        (400, 0),
    ] {
        let rules: Vec<(String, String)> = (0..n)
            .map(|i| (format!("r{i}.*.example.com/team{i}"), format!("s{}", i % 7)))
            .collect();
        let policy = AdmissionPolicy::new(&config(&rules));
        assert!(
            policy.worst_case_cost <= 900_000 || policy.max_images == 0,
            "{n} rules: {}",
            policy.worst_case_cost
        );
        assert!(
            policy.max_images >= min_images,
            "{n} rules: {} images",
            policy.max_images
        );
        if min_images == 0 {
            assert_eq!(policy.max_images, 0, "{n} rules");
        }
    }
    // Each secret is looked up among the Pod's: past 91 secrets that alone is too much.
    for (n, cannot) in [(91, false), (92, true)] {
        let rules: Vec<(String, String)> = (0..n)
            .map(|i| (format!("r{i}.example.com"), format!("s{i}")))
            .collect();
        let policy = AdmissionPolicy::new(&config(&rules));
        assert_eq!(policy.max_images == 0, cannot, "{n} secrets");
    }
}

// ---- generated rules and images ------------------------------------------------------------

use common::generate::{image, rule};

/// A generated config (each rule with one of three secrets) and Pod: containers, maybe an
/// image volume, maybe pull secrets of its own.
fn generated() -> impl Strategy<Value = (Vec<(String, String)>, Value)> {
    (
        prop::collection::vec((rule(), 0..3usize), 1..5),
        prop::collection::vec(image(), 1..5),
        prop::option::of(image()),
        prop::collection::vec(0..4usize, 0..3),
    )
        .prop_map(|(rules, images, volume, existing)| {
            let rules = rules
                .into_iter()
                .map(|(m, s)| (m, format!("s{s}")))
                .collect();
            let containers: Vec<Value> = images
                .iter()
                .map(|i| json!({ "name": "c", "image": i }))
                .collect();
            let mut pod = json!({ "metadata": { "name": "p", "namespace": "team" }, "spec": { "containers": containers } });
            if let Some(v) = volume {
                pod["spec"]["volumes"] = json!([{ "name": "v", "image": { "reference": v } }]);
            }
            if !existing.is_empty() {
                pod["spec"]["imagePullSecrets"] = existing
                    .iter()
                    .map(|s| json!({ "name": format!("s{s}") }))
                    .collect();
            }
            (rules, pod)
        })
}

/// The config of generated rules, unless it refuses one (a glob the grammar rejects).
fn generated_config(rules: &[(String, String)]) -> Option<Config> {
    try_config(rules).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn generated_rules_and_images_agree((rules, pod) in generated()) {
        let config = generated_config(&rules);
        prop_assume!(config.is_some());
        let config = config.expect("assumed");
        let policy = Policy::new(&config);
        let expected = webhook(&config, &pod);
        let got = policy.admit(&pod).map_err(TestCaseError::fail)?;
        prop_assert_eq!(got, expected, "rules {:?}, pod {}", rules, pod);
    }
}

// ---- a second interpreter: cel-cpp, with RE2 ------------------------------------------------

/// What the webhook does to `pod`: the secrets it adds, and the annotation it then writes.
fn webhook_decision(config: &Config, pod: &Value) -> Value {
    let (added, patched) = webhook_answer(config, pod);
    let injected = (!added.is_empty())
        .then(|| common::injected_annotation(&patched))
        .flatten();
    json!({ "add": added, "injected": injected })
}

/// The same tables and generated cases, evaluated by cel-cpp (Google's C++ CEL, whose
/// `matches` is RE2, as cel-go's is) with every variable type-checked as the API server
/// declares it: `tests/cel-cpp/evaluate_policy.py` must find the webhook's secrets and
/// annotation for every Pod.
#[test]
#[cfg_attr(not(has_cel_cpp), ignore = "needs python3 with cel-expr-python (pip)")]
fn cel_cpp_and_re2_decide_as_the_webhook() {
    let mut configs = Vec::new();
    let mut add = |config: &Config, pods: Vec<Value>| {
        let [policy, _] = AdmissionPolicy::new(config).manifests("pullsecret-injector");
        let pods: Vec<Value> = pods
            .into_iter()
            .enumerate()
            .map(|(i, pod)| {
                let mut case = webhook_decision(config, &pod);
                case["name"] = json!(format!("config {} pod {i}: {pod}", configs.len()));
                case["pod"] = pod;
                case
            })
            .collect();
        configs.push(json!({ "policy": policy, "pods": pods }));
    };
    for &(rule, image, _) in common::KEYRING_CASES.iter().chain(common::MATCH_TABLE) {
        let pods = FIELDS.iter().map(|f| pod_with(f, image)).collect();
        add(&config(&[(rule, "s0")]), pods);
    }
    let grammar: Vec<Value> = grammar_images()
        .iter()
        .flat_map(|image| FIELDS.map(|f| pod_with(f, image)))
        .collect();
    add(&config(&GRAMMAR_RULES), grammar);
    let mut history = history_pods();
    history.extend(recorded_pods());
    add(&common::example_config(), history);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = generated();
    let mut generated_pods = 0;
    while generated_pods < 300 {
        let (rules, pod) = strategy
            .new_tree(&mut runner)
            .expect("a generated case")
            .current();
        if let Some(config) = generated_config(&rules) {
            add(&config, vec![pod]);
            generated_pods += 1;
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("cases.json");
    std::fs::write(&cases, json!({ "configs": configs }).to_string()).expect("write");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cel-cpp/evaluate_policy.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&cases)
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cel-cpp disagrees with the webhook:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every case was evaluated: the tables (4 places each), the grammar, the history, 300
    // generated.
    let checked: usize = report
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(checked > 900, "{report}");
}
