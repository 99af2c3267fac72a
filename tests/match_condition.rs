//! The `matchConditions` image expression, evaluated by a real CEL interpreter over the same
//! rules and images as the matcher: it must be true for every Pod the matcher would patch (a
//! superset), false for Pods no rule can match, and never fail to evaluate.

mod common;

use cel::{Context, Program, Value as Cel};
use proptest::prelude::*;
use pullsecret_injector::config::Config;
use pullsecret_injector::image::ImageRef;
use pullsecret_injector::match_condition::{
    ImageCondition, MAX_EXPRESSION_LEN, MAX_IMAGE_LEN, MIRROR_EXPRESSION, PER_CALL_LIMIT,
    image_regex,
};
use pullsecret_injector::rules::Rule;
use serde_json::{Value, json};

fn config(rules: &[&str]) -> Config {
    let yaml = rules
        .iter()
        .enumerate()
        .map(|(i, m)| format!("  - match: {m:?}\n    secret: s{i}\n"))
        .collect::<String>();
    Config::from_yaml(&format!("registries:\n{yaml}"))
        .unwrap_or_else(|e| panic!("{rules:?}: {e}"))
        .0
}

/// Evaluates `expression` with `object` bound as the API server binds it.
fn eval(expression: &str, object: &Value) -> Result<bool, String> {
    let program = Program::compile(expression).map_err(|e| format!("compile: {e}"))?;
    let mut context = Context::default();
    let object = cel::to_value(object).map_err(|e| format!("object: {e}"))?;
    context.add_variable_from_value("object", object);
    match program.execute(&context) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("not a bool: {other:?}")),
        Err(e) => Err(format!("evaluation: {e}")),
    }
}

fn pod_with(field: &str, image: &str) -> Value {
    match field {
        "volumes" => json!({
            "metadata": { "name": "p" },
            "spec": {
                "containers": [{ "name": "app" }],
                "volumes": [{ "name": "v", "image": { "reference": image } }],
            }
        }),
        list => json!({
            "metadata": { "name": "p" },
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

/// What the matcher says of `image` under `config`.
fn rust_matches(config: &Config, image: &str) -> bool {
    ImageRef::parse(image).is_ok_and(|r| !config.secrets_for([&r]).is_empty())
}

/// Checks the expression against the matcher for `image` in every place an image can be:
/// where the matcher matches, the expression must too.
fn assert_superset(rules: &[&str], image: &str) -> bool {
    let config = config(rules);
    let expression = ImageCondition::new(&config).expression;
    let rust = rust_matches(&config, image);
    let mut cel_result = None;
    for field in FIELDS {
        let got = eval(&expression, &pod_with(field, image))
            .unwrap_or_else(|e| panic!("{rules:?} / {image:?} in {field}: {e}"));
        if rust {
            assert!(
                got,
                "false negative: rules {rules:?}, image {image:?} in {field}"
            );
        }
        // The place of the image does not change the answer.
        assert_eq!(*cel_result.get_or_insert(got), got, "{field} differs");
    }
    cel_result.unwrap_or_default()
}

#[test]
fn the_expression_is_a_superset_of_the_matcher_on_its_tables() {
    for &(rule, image, expected) in common::KEYRING_CASES.iter().chain(common::MATCH_TABLE) {
        let config = config(&[rule]);
        assert_eq!(
            rust_matches(&config, image),
            expected,
            "{rule:?} vs {image:?}"
        );
        let got = assert_superset(&[rule], image);
        // Where the matcher says no and the regex is precise enough to say it too, it must.
        if !expected && !rule.contains(['*', '?', '[']) {
            assert!(!got, "needless call: rule {rule:?}, image {image:?}");
        }
    }
}

#[test]
fn pods_no_rule_can_match_are_not_sent() {
    let rules = [
        "asia-northeast1-docker.pkg.dev",
        "*.pkg.dev",
        "ghcr.io/acme",
        "localhost:5000",
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com",
    ];
    let expression = ImageCondition::new(&config(&rules)).expression;
    for image in [
        "nginx",
        "bitnami/kafka:3.7",
        "docker.io/library/alpine",
        "quay.io/jetstack/cert-manager-controller:v1.15.0",
        "ghcr.io/acmecorp/api:1.0",
        "pkg.dev/x",
        "a.b.pkg.dev/x",
        "localhost/dev/app",
        "localhost:5001/dev/app",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/svc:9",
        "registry.k8s.io/pause:3.9",
    ] {
        for field in FIELDS {
            assert_eq!(
                eval(&expression, &pod_with(field, image)),
                Ok(false),
                "{image:?} in {field}"
            );
        }
    }
    // One matching image among others is enough.
    let pod = json!({ "spec": {
        "containers": [{ "name": "a", "image": "nginx" }, { "name": "b", "image": "ghcr.io/acme/x:1" }],
    }});
    assert_eq!(eval(&expression, &pod), Ok(true));
}

#[test]
fn every_fixture_pod_the_webhook_patches_is_sent() {
    let config = common::example_config();
    let expression = ImageCondition::new(&config).expression;
    for name in [
        "deployment-pod.json",
        "job-pod.json",
        "serviceaccount-secrets-pod.json",
        "own-secrets-pod.json",
        "dry-run-pod.json",
        "thirty-container-pod.json",
        "image-volume-pod.json",
    ] {
        let review: Value = serde_json::from_slice(&common::fixture(name)).unwrap();
        let object = &review["request"]["object"];
        let decision =
            pullsecret_injector::admission::review(&config, &common::fixture(name)).unwrap();
        let sent = eval(&expression, object).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            sent || decision.matched_images == 0,
            "{name}: the webhook would match {} image(s) but is not called",
            decision.matched_images
        );
        assert!(decision.matched_images == 0 || sent, "{name}");
    }
}

#[test]
fn pods_missing_any_optional_field_evaluate_without_error() {
    let expression = ImageCondition::new(&config(&["docker.io", "ghcr.io/acme"])).expression;
    let pods = [
        json!({}),
        json!({ "metadata": {} }),
        json!({ "spec": {} }),
        json!({ "spec": { "containers": [] } }),
        json!({ "spec": { "containers": [{ "name": "no-image" }] } }),
        json!({ "spec": { "initContainers": [{}] } }),
        json!({ "spec": { "ephemeralContainers": [{ "name": "e" }] } }),
        json!({ "spec": { "volumes": [{ "name": "v" }] } }),
        json!({ "spec": { "volumes": [{ "name": "v", "emptyDir": {} }] } }),
        json!({ "spec": { "volumes": [{ "name": "v", "image": {} }] } }),
        json!({ "spec": { "volumes": [{ "name": "v", "image": { "pullPolicy": "Always" } }] } }),
        json!({ "spec": { "containers": [{ "image": "" }] } }),
    ];
    for pod in pods {
        assert_eq!(eval(&expression, &pod), Ok(false), "{pod}");
        assert!(eval(MIRROR_EXPRESSION, &pod).is_ok(), "{pod}");
    }
    // And a Pod with one of each, and a matching image volume.
    let pod = json!({ "spec": {
        "containers": [{ "name": "a", "image": "quay.io/x" }],
        "initContainers": [{ "name": "b" }],
        "volumes": [{ "name": "v", "emptyDir": {} }, { "name": "w", "image": { "reference": "ghcr.io/acme/models:1" } }],
    }});
    assert_eq!(eval(&expression, &pod), Ok(true));
}

#[test]
fn mirror_condition_is_false_only_for_mirror_pods() {
    let mirror = json!({ "metadata": { "annotations": { "kubernetes.io/config.mirror": "abc" } } });
    let other = json!({ "metadata": { "annotations": { "a": "b" } } });
    assert_eq!(eval(MIRROR_EXPRESSION, &mirror), Ok(false));
    assert_eq!(eval(MIRROR_EXPRESSION, &other), Ok(true));
    assert_eq!(
        eval(MIRROR_EXPRESSION, &json!({ "metadata": {} })),
        Ok(true)
    );
}

#[test]
fn no_rules_sends_no_pod() {
    let condition = ImageCondition::new(&Config::default());
    assert_eq!(condition.expression, "false");
    assert_eq!(
        eval(&condition.expression, &pod_with("containers", "nginx")),
        Ok(false)
    );
}

/// The API server's cost limit for one CEL expression: `PerCallLimit` in
/// k8s.io/apiserver/pkg/apis/cel/config.go.
const API_SERVER_PER_CALL_LIMIT: u64 = 1_000_000;
/// What cel-go's `exists` macro adds per element besides its predicate: the loop condition
/// (`@not_strictly_false(!__result__)`: an identifier and two calls) and the step's identifier
/// (`__result__ || predicate`), with one to spare.
const FOLD_PER_ELEMENT: u64 = 5;
/// What it adds once: the result's identifier, with one to spare.
const FOLD_ONCE: u64 = 2;

/// One `list.exists(var, predicate)` of the expression, as its text says.
struct Comprehension {
    list: String,
    /// Longest image the predicate's `size(...) <= N` guard lets through to `matches`.
    max_len: u64,
    /// The regular expression given to `matches`.
    regex: String,
    /// The predicate's text with the regex literal taken out.
    rest: String,
}

/// The text of `text` up to the parenthesis that closes the one opened just before it,
/// stepping over raw string literals.
fn until_close(text: &str) -> &str {
    let mut depth = 0usize;
    let mut in_string = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string && depth == 0 => return &text[..i],
            ')' if !in_string => depth -= 1,
            _ => {}
        }
    }
    panic!("unbalanced: {text}")
}

/// The number right after the first `marker` in `text`.
fn number_after(text: &str, marker: &str) -> u64 {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {text}"))
        + marker.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// The comprehensions of `expression` and the rest of its text.
fn comprehensions(expression: &str) -> (Vec<Comprehension>, String) {
    let mut found = Vec::new();
    let mut outside = String::new();
    let mut rest = expression;
    while let Some(at) = rest.find(".exists(") {
        let list = rest[..at].rsplit('.').next().unwrap().to_owned();
        outside.push_str(&rest[..at]);
        let body = until_close(&rest[at + ".exists(".len()..]);
        rest = &rest[at + ".exists(".len() + body.len() + 1..];
        let max_len = number_after(body, ") <= ");
        let open = body.find(".matches(r'").expect("a matches call") + ".matches(r'".len();
        let close = open + body[open..].find('\'').expect("the regex literal ends");
        found.push(Comprehension {
            list,
            max_len,
            regex: body[open..close].to_owned(),
            rest: format!("{}{}", &body[..open], &body[close..]),
        });
    }
    outside.push_str(rest);
    (found, outside)
}

/// At most what `text` costs cel-go outside any `matches`: every identifier, field name,
/// function name and operator costs at most 1 (constants cost 0, counted anyway), so the
/// number of such tokens bounds it.
fn token_cost(text: &str) -> u64 {
    let mut tokens = 0;
    let mut previous: Option<bool> = None;
    for c in text.chars() {
        let kind = if c.is_ascii_alphanumeric() || c == '_' {
            Some(true)
        } else if "<>=!&|?:+-".contains(c) {
            Some(false)
        } else {
            None
        };
        if kind.is_some() && kind != previous {
            tokens += 1;
        }
        previous = kind;
    }
    tokens
}

/// cel-go's runtime cost of `s.matches(regex)` (interpreter/runtimecost.go):
/// `ceil((1 + size(s)) * 0.1) * ceil(size(regex) * 0.25)`, sizes in code points.
fn matches_cost(string_len: u64, regex: &str) -> u64 {
    let string_cost = ((1.0 + string_len as f64) * 0.1).ceil() as u64;
    let regex_cost = (regex.chars().count() as f64 * 0.25).ceil() as u64;
    string_cost * regex_cost
}

/// The most `expression` can cost cel-go for any Pod, from its text alone (not from the
/// generator's own numbers): a Pod with as many images as the count guard lets through, all
/// in the costliest list, each as long as the length guard allows and matching no rule (so
/// `exists` looks at every one). Also that Pod's costliest list, image bound and image length.
fn worst_case_from_text(expression: &str) -> (u64, String, u64, u64) {
    let max_images = number_after(expression, " > ");
    let (lists, outside) = comprehensions(expression);
    assert_eq!(
        lists.len(),
        4,
        "containers, init, ephemeral, volumes: {expression}"
    );
    let costliest = lists
        .iter()
        .max_by_key(|c| matches_cost(c.max_len, &c.regex) + token_cost(&c.rest))
        .unwrap();
    let per_image = matches_cost(costliest.max_len, &costliest.regex)
        + token_cost(&costliest.rest)
        + FOLD_PER_ELEMENT;
    let cost = token_cost(&outside) + FOLD_ONCE * lists.len() as u64 + max_images * per_image;
    (cost, costliest.list.clone(), max_images, costliest.max_len)
}

/// A Pod with `count` images of `len` characters in `list`: `prefix`, a number, `/`, padding.
fn pod_of(list: &str, count: u64, len: u64, prefix: &str) -> Value {
    let image = |i: u64| {
        let head = format!("{prefix}{i}/");
        format!("{head}{}", "x".repeat(len as usize - head.len()))
    };
    let items: Vec<Value> = (0..count)
        .map(|i| match list {
            "volumes" => json!({ "name": format!("v{i}"), "image": { "reference": image(i) } }),
            _ => json!({ "name": format!("c{i}"), "image": image(i) }),
        })
        .collect();
    json!({ "spec": { list: items } })
}

#[test]
fn cost_stays_under_the_api_server_limit_whatever_the_pod() {
    assert_eq!(PER_CALL_LIMIT, API_SERVER_PER_CALL_LIMIT);
    // Each config with an image prefix one of its rules matches.
    let mut configs: Vec<(String, Config, &str)> = [1usize, 5, 20, 100, 400]
        .iter()
        .map(|&n| {
            let rules: Vec<String> = (0..n)
                .map(|i| format!("registry-{i}.team-{i}.example.com/project-{i}"))
                .collect();
            let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
            (
                format!("{n} rules"),
                config(&rules),
                "registry-0.team-0.example.com/project-0/",
            )
        })
        .collect();
    configs.push((
        "the example config".into(),
        common::example_config(),
        "ghcr.io/acme/",
    ));
    configs.push((
        "globs and Docker Hub".into(),
        config(&["*.io", "docker.io/library", "ghcr.io/acme", "[::1]:5000"]),
        "ghcr.io/acme/",
    ));
    for (what, config, matching) in &configs {
        let condition = ImageCondition::new(config);
        let expression = &condition.expression;
        assert!(expression.len() <= MAX_EXPRESSION_LEN);
        if expression == "true" {
            assert_eq!(what, "400 rules", "{what} should still fit");
            continue;
        }
        let (cost, list, max_images, max_len) = worst_case_from_text(expression);
        assert!(
            cost <= API_SERVER_PER_CALL_LIMIT,
            "{what}: {max_images} images of {max_len} characters in {list} cost up to {cost}"
        );
        assert!(max_images >= 1, "{what}");
        // That Pod is evaluated, every image up to the longest: one more image and it is
        // sent unexamined; the last image, as long as allowed, is still matched.
        let none = pod_of(&list, max_images, max_len, "unmatched.example.org/x");
        assert_eq!(eval(expression, &none), Ok(false), "{what}");
        let more = pod_of(&list, max_images + 1, max_len, "unmatched.example.org/x");
        assert_eq!(eval(expression, &more), Ok(true), "{what}");
        let mut last = none.clone();
        let matching = pod_of(&list, 1, max_len, matching)["spec"][&list][0].clone();
        let items = last["spec"][&list].as_array_mut().unwrap();
        *items.last_mut().unwrap() = matching;
        assert_eq!(eval(expression, &last), Ok(true), "{what}");
    }
    // The example config leaves room for hundreds of containers.
    let example = ImageCondition::new(&common::example_config());
    assert!(example.max_images >= 400, "{}", example.max_images);
    // Thousands of rules: every Pod is sent rather than an expression cel-go refuses.
    let rules: Vec<String> = (0..3000).map(|i| format!("r{i}.example.com")).collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    assert_eq!(ImageCondition::new(&config(&rules)).expression, "true");
}

#[test]
fn an_image_longer_than_any_reference_is_not_matched() {
    let expression = ImageCondition::new(&config(&["docker.io"])).expression;
    let long = format!("nginx:{}", "a".repeat(MAX_IMAGE_LEN));
    assert!(ImageRef::parse(&long).is_err());
    assert_eq!(eval(&expression, &pod_with("containers", &long)), Ok(false));
    // The longest valid reference is still matched: its name is 255 characters once
    // `index.docker.io/` is normalized to `docker.io/`.
    let longest = format!(
        "index.docker.io/a/{}:{}@sha512:{}",
        "a".repeat(255 - "docker.io/a/".len()),
        "t".repeat(128),
        "0".repeat(128)
    );
    assert!(ImageRef::parse(&longest).is_ok(), "{longest}");
    assert!(ImageRef::parse(&format!("index.docker.io/a/a{}", &longest[18..])).is_err());
    assert_eq!(longest.len(), MAX_IMAGE_LEN);
    assert_eq!(
        eval(&expression, &pod_with("containers", &longest)),
        Ok(true)
    );
}

#[test]
fn regex_dedupes_and_keeps_rule_order() {
    let config = config(&["ghcr.io", "*.pkg.dev", "ghcr.io", "us-docker.pkg.dev"]);
    assert_eq!(
        image_regex(config.rules()).as_deref(),
        Some(r"^(?:ghcr\.io/|[A-Za-z0-9-]*\.pkg\.dev/|us-docker\.pkg\.dev/)")
    );
}

// ---- the superset property over generated rules and images ------------------------------

use common::generate::{image, rule};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_expression_is_a_superset_of_the_matcher(
        rules in prop::collection::vec(rule(), 1..4),
        images in prop::collection::vec(image(), 1..4),
    ) {
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        // A generated rule the config refuses (a glob the grammar rejects) proves nothing.
        prop_assume!(rules.iter().all(|r| Rule::new(r, "s0", &mut Vec::new()).is_ok()));
        let config = config(&rules);
        let expression = ImageCondition::new(&config).expression;
        let containers: Vec<Value> = images
            .iter()
            .map(|i| json!({ "name": "c", "image": i }))
            .collect();
        let pod = json!({ "spec": { "containers": containers } });
        let rust = images.iter().any(|i| rust_matches(&config, i));
        let got = eval(&expression, &pod).map_err(TestCaseError::fail)?;
        prop_assert!(!rust || got, "false negative: {rules:?} {images:?}");
    }
}
