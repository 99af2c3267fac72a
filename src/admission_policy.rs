//! Policy mode: a `MutatingAdmissionPolicy` (`admissionregistration.k8s.io/v1`, Kubernetes
//! 1.36+) that the API server evaluates by itself and that decides **exactly** as
//! `POST /mutate` does: the same images, the same reference grammar, the same host matching,
//! the same secrets in the same order, the same annotation.
//!
//! Unlike the webhook's `matchConditions` ([`crate::match_condition`]), which may be a
//! superset, a disagreement here either loses a secret or adds one. So the policy does not
//! approximate the matcher; it restates it in CEL, in stages kept as the policy's
//! `variables`:
//!
//! 1. `imageCount`, `examined`, `images`: every image string of the Pod (containers, init and
//!    ephemeral containers, image volumes), unless the Pod is past the bounds below;
//! 2. `refs`: each split into registry and remainder as distribution's `splitDockerDomain`
//!    does (`crate::image`);
//! 3. `names`: each normalized name (`docker.io/library/nginx`) of a valid reference, checked
//!    against the reference grammar, or `''`;
//! 4. `secrets`, `ruleSecrets`, `hits`: the secrets, each rule's, and whether a name matches it ([`Rule::host_regex`] and the path
//!    prefix on whole segments);
//! 5. `hitRules`, `wanted`, `add`: the secrets of the hit rules in config order, each once, less those the
//!    Pod already names;
//! 6. `recorded`, `injected`: the `pullsecret-injector.io/injected` annotation, extended.
//!
//! The mutation writes them with JSON Patch, using only constructs a real API server takes:
//! string values, `Object.spec.imagePullSecrets{name: ...}` (typed construction) and one
//! empty list. A map literal as a patch value made a 1.36.3 API server panic, so an absent
//! annotations map is made from a typed `Object.metadata.annotations{...}` under a plain key
//! and then moved to the annotation's key.
//!
//! It must never block a Pod: `failurePolicy: Ignore`, and a cost bounded for any Pod. Each
//! expression is sized, by cel-go's runtime cost model, to stay under the API server's
//! per-expression limit; a Pod with more images than [`AdmissionPolicy::max_images`] gets no
//! secret (the webhook has no such bound: the one place the two differ, documented).

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::config::Config;
use crate::match_condition::{MAX_IMAGE_LEN, MIRROR_CONDITION, MIRROR_EXPRESSION, PER_CALL_LIMIT};
use crate::names::{
    APP_NAME, INJECT_LABEL, INJECT_LABEL_VALUE, INJECTED_ANNOTATION, SKIP_ANNOTATION,
};
use crate::rules::Rule;

/// The policy's and the binding's name.
pub const POLICY_NAME: &str = APP_NAME;
/// The API group and version of both objects.
pub const API_VERSION: &str = "admissionregistration.k8s.io/v1";
/// Name of the condition that leaves Pods annotated `pullsecret-injector.io/skip: "true"` alone.
pub const SKIP_CONDITION: &str = "not-opted-out";
/// The key an absent annotations map is first made with (a CEL field name cannot hold `/`),
/// then moved from.
const STAGING_KEY: &str = "pullsecretInjectorInjected";

/// A registry and port as an image names them: DNS labels, or an IPv6 literal in brackets.
const DOMAIN_REGEX: &str = r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$";
/// One repository path component.
const PATH_COMPONENT: &str = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
/// A tag (ASCII classes: RE2's `\w` is ASCII, other engines' is not) and the digests
/// go-digest validates, each with the length of its hash.
const TAG_AND_DIGEST: &str = "(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}))?$";
/// Pods with more `imagePullSecrets` entries, or a longer injected annotation, are not
/// examined: the checks against them are sized for these.
pub const MAX_PULL_SECRETS: u64 = 64;
pub const MAX_RECORDED_LEN: u64 = 512;
/// Longest normalized name less the `/` between registry and path.
const MAX_NAME_PARTS: usize = crate::image::NAME_TOTAL_LENGTH_MAX - 1;

/// What each expression is sized to cost at most: a tenth below the limit, for what the model
/// below leaves out.
const COST_TARGET: u64 = PER_CALL_LIMIT / 10 * 9;
/// Cost of a string operation over the longest image: `ceil((1 + 526) * 0.1)`.
const STRING_COST: u64 = (1 + MAX_IMAGE_LEN as u64).div_ceil(10);
/// Cost of one comprehension step over an image besides the calls: variable and field
/// access, `has()`, comparisons, the list append; generous.
const STEP_COST: u64 = 50;
/// Cost of one step over the rules besides the calls (the rules' order check: variable
/// accesses, two list indexings, two integer comparisons); generous.
const ORDER_STEP_COST: u64 = 16;
/// Cost of comparing a secret name (at most 253 characters: 26) in a comprehension step.
const NAME_STEP_COST: u64 = 30;

/// One entry of the policy's `variables` or `matchConditions`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NamedExpression {
    pub name: &'static str,
    pub expression: String,
}

/// The policy for a config: its expressions, and the bound that keeps them affordable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionPolicy {
    pub match_conditions: Vec<NamedExpression>,
    /// In evaluation order: each may use the ones before it.
    pub variables: Vec<NamedExpression>,
    /// The JSON Patch expression of the one mutation.
    pub mutation: String,
    /// Pods with more images than this (containers of every kind and image volumes) are not
    /// examined and get no secret, so that no expression exceeds the API server's limit (nor
    /// are Pods with more than [`MAX_PULL_SECRETS`] pull secrets or an injected annotation
    /// over [`MAX_RECORDED_LEN`] characters). Zero when the config has too many rules to be a
    /// policy at all.
    pub max_images: u64,
    /// The most one expression can cost, by the model below, for any Pod.
    pub worst_case_cost: u64,
}

impl AdmissionPolicy {
    pub fn new(config: &Config) -> Self {
        let rules = config.rules();
        let rule_regexes: Vec<Option<String>> = rules.iter().map(rule_regex).collect();
        let per_image = [
            refs_cost_per_image(),
            names_cost_per_image(),
            hits_cost_per_image(&rule_regexes),
        ];
        // Each expression has its own limit: the per-image ones bound the images; the rules'
        // order and the checks against present secrets cost the same whatever the images.
        let order_cost = order_cost(rules.len()).max(present_cost(config.secrets().len()));
        let max_images = if order_cost > COST_TARGET {
            0
        } else {
            per_image
                .iter()
                .map(|cost| COST_TARGET / cost)
                .min()
                .unwrap_or(0)
        };
        let worst_case_cost = per_image
            .iter()
            .map(|cost| cost * max_images)
            .chain([order_cost])
            .max()
            .unwrap_or(0);
        Self {
            match_conditions: vec![
                NamedExpression {
                    name: MIRROR_CONDITION,
                    expression: MIRROR_EXPRESSION.to_owned(),
                },
                NamedExpression {
                    name: SKIP_CONDITION,
                    expression: skip_expression(),
                },
            ],
            variables: variables(rules, config.secrets(), &rule_regexes, max_images),
            mutation: mutation(),
            max_images,
            worst_case_cost,
        }
    }

    /// The `MutatingAdmissionPolicy` and its `MutatingAdmissionPolicyBinding`; the binding
    /// selects opted-in namespaces except kube-system and `namespace`, the injector's own.
    pub fn manifests(&self, namespace: &str) -> [Value; 2] {
        let labels = json!({ "app.kubernetes.io/name": APP_NAME });
        let policy = json!({
            "apiVersion": API_VERSION,
            "kind": "MutatingAdmissionPolicy",
            "metadata": { "name": POLICY_NAME, "labels": labels },
            "spec": {
                "failurePolicy": "Ignore",
                "reinvocationPolicy": "IfNeeded",
                "matchConstraints": {
                    "matchPolicy": "Equivalent",
                    "resourceRules": [{
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }],
                },
                "matchConditions": self.match_conditions,
                "variables": self.variables,
                "mutations": [{
                    "patchType": "JSONPatch",
                    "jsonPatch": { "expression": self.mutation },
                }],
            },
        });
        let binding = json!({
            "apiVersion": API_VERSION,
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": { "name": POLICY_NAME, "labels": labels },
            "spec": {
                "policyName": POLICY_NAME,
                "matchResources": {
                    "namespaceSelector": {
                        "matchExpressions": [
                            { "key": INJECT_LABEL, "operator": "In", "values": [INJECT_LABEL_VALUE] },
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "NotIn",
                                "values": ["kube-system", namespace],
                            },
                        ],
                    },
                },
            },
        });
        [policy, binding]
    }
}

/// The exact pattern of the normalized names (`registry/path`) `rule` matches, or `None` when
/// no valid image can match it.
pub fn rule_regex(rule: &Rule) -> Option<String> {
    let mut out = format!("^{}", rule.host_regex()?);
    if let Some(port) = rule.port() {
        let _ = write!(out, ":{port}");
    }
    out.push('/');
    if !rule.path().is_empty() {
        let _ = write!(out, "{}(?:/|$)", rule.path().replace('.', r"\."));
    }
    Some(out)
}

/// `true` unless the skip annotation says `true` (any case, spaces around), as the webhook
/// reads it.
fn skip_expression() -> String {
    format!(
        "!has(object.metadata) || !has(object.metadata.annotations) || !('{SKIP_ANNOTATION}' in object.metadata.annotations) || object.metadata.annotations['{SKIP_ANNOTATION}'].trim().lowerAscii() != 'true'"
    )
}

fn variable(name: &'static str, expression: String) -> NamedExpression {
    NamedExpression { name, expression }
}

fn variables(
    rules: &[Rule],
    config_secrets: &[String],
    rule_regexes: &[Option<String>],
    max_images: u64,
) -> Vec<NamedExpression> {
    let lists = [
        "initContainers",
        "containers",
        "ephemeralContainers",
        "volumes",
    ];
    let count = lists
        .iter()
        .map(|l| format!("(has(object.spec.{l}) ? size(object.spec.{l}) : 0)"))
        .collect::<Vec<_>>()
        .join(" + ");
    let images = lists
        .iter()
        .map(|&l| match l {
            "volumes" => "(has(object.spec.volumes) ? object.spec.volumes.filter(v, has(v.image) && has(v.image.reference)).map(v, v.image.reference) : [])".to_owned(),
            l => format!("(has(object.spec.{l}) ? object.spec.{l}.map(c, has(c.image) ? c.image : '') : [])"),
        })
        .collect::<Vec<_>>()
        .join(" + ");

    // distribution's splitDockerDomain, on `i`: [registry, remainder].
    let first = "i.split('/')[0]";
    let rest = format!("i.substring(size({first}) + 1)");
    let split = format!(
        "size(i) > {MAX_IMAGE_LEN} || i.matches('^[a-f0-9]{{64}}$') ? ['', ''] \
         : !i.contains('/') ? ['docker.io', 'library/' + i] \
         : {first} in ['docker.io', 'index.docker.io'] ? ['docker.io', {rest}.contains('/') ? {rest} : 'library/' + {rest}] \
         : {first} == 'localhost' || {first}.matches('[.:A-Z]') ? [{first}, {rest}] \
         : ['docker.io', i]"
    );
    // The remainder's path: before the tag or digest.
    let path = "r[1].split('@')[0].split(':')[0]";
    let name = format!(
        "r[0].matches(r'{DOMAIN_REGEX}') && r[1].matches(r'{}') && size(r[0]) + size({path}) <= {MAX_NAME_PARTS} ? r[0] + '/' + {path} : ''",
        remainder_regex()
    );
    let hits = rule_regexes
        .iter()
        .map(|re| match re {
            Some(re) => format!("variables.names.exists(n, n.matches(r'{re}'))"),
            None => "false".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let indices = (0..rules.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let secrets = config_secrets
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Each rule's secret as its place in `secrets`: the order check compares integers.
    let rule_secrets = rules
        .iter()
        .map(|r| {
            let place = config_secrets.iter().position(|s| s == r.secret());
            place.unwrap_or_default().to_string()
        })
        .collect::<Vec<_>>()
        .join(", ");
    // A secret takes the place of the first rule naming it that an image hit.
    let hit_rules = if rules.is_empty() {
        "[]".to_owned()
    } else {
        format!("[{indices}].filter(k, variables.hits[k])")
    };
    let annotations = "object.metadata.annotations";
    vec![
        variable(
            "imageCount",
            format!("has(object.spec) ? {count} : 0"),
        ),
        variable(
            "examined",
            format!(
                "has(object.spec) && variables.imageCount <= {max_images} && (!has(object.spec.imagePullSecrets) || size(object.spec.imagePullSecrets) <= {MAX_PULL_SECRETS}) && (!has({annotations}) || !('{INJECTED_ANNOTATION}' in {annotations}) || size({annotations}['{INJECTED_ANNOTATION}']) <= {MAX_RECORDED_LEN})"
            ),
        ),
        variable("images", format!("!variables.examined ? [] : {images}")),
        variable("refs", format!("variables.images.map(i, {split})")),
        variable("names", format!("variables.refs.map(r, {name})")),
        variable("secrets", format!("[{secrets}]")),
        variable("ruleSecrets", format!("[{rule_secrets}]")),
        variable("hits", format!("[{hits}]")),
        variable("hitRules", hit_rules),
        variable(
            "wanted",
            "variables.hitRules.filter(k, !variables.hitRules.exists(j, j < k && variables.ruleSecrets[j] == variables.ruleSecrets[k])).map(k, variables.secrets[variables.ruleSecrets[k]])".to_owned(),
        ),
        variable(
            "existing",
            "has(object.spec.imagePullSecrets) ? object.spec.imagePullSecrets.filter(e, has(e.name)).map(e, e.name) : []".to_owned(),
        ),
        variable(
            "add",
            "variables.wanted.filter(s, !(s in variables.existing))".to_owned(),
        ),
        variable(
            "recorded",
            format!(
                "has({annotations}) && '{INJECTED_ANNOTATION}' in {annotations} ? {annotations}['{INJECTED_ANNOTATION}'].split(',').filter(s, s != '') : []"
            ),
        ),
        variable(
            "injected",
            "(variables.recorded + variables.add.filter(s, !(s in variables.recorded))).join(',')"
                .to_owned(),
        ),
    ]
}

/// The JSON Patch: the secrets after those present (the whole list when there is none), then
/// the annotation.
fn mutation() -> String {
    let key = INJECTED_ANNOTATION.replace('~', "~0").replace('/', "~1");
    format!(
        "size(variables.add) == 0 ? [] : \
         (has(object.spec.imagePullSecrets) && size(object.spec.imagePullSecrets) > 0 ? [] : [JSONPatch{{op: 'add', path: '/spec/imagePullSecrets', value: []}}]) \
         + variables.add.map(s, JSONPatch{{op: 'add', path: '/spec/imagePullSecrets/-', value: Object.spec.imagePullSecrets{{name: s}}}}) \
         + (has(object.metadata.annotations) \
         ? [JSONPatch{{op: 'add', path: '/metadata/annotations/{key}', value: variables.injected}}] \
         : [JSONPatch{{op: 'add', path: '/metadata/annotations', value: Object.metadata.annotations{{{STAGING_KEY}: variables.injected}}}}, \
         JSONPatch{{op: 'move', from: '/metadata/annotations/{STAGING_KEY}', path: '/metadata/annotations/{key}'}}])"
    )
}

/// `matches` on a string of `len` characters with a pattern of `regex_len`, by cel-go's model.
fn matches_cost(len: u64, regex_len: usize) -> u64 {
    (1 + len).div_ceil(10) * (regex_len as u64).div_ceil(4)
}

/// `refs`, per image: the identifier check, then at most seven string operations (`split`,
/// `substring`, `contains`, each a traversal, counted twice for the list or string it makes)
/// and one small `matches`.
fn refs_cost_per_image() -> u64 {
    let len = MAX_IMAGE_LEN as u64;
    matches_cost(len, 14) + 7 * 2 * STRING_COST + matches_cost(len, 7) + STEP_COST
}

/// `names`, per image: the two grammar checks and four `split`s.
fn names_cost_per_image() -> u64 {
    let len = MAX_IMAGE_LEN as u64;
    let remainder_len = remainder_regex().len();
    matches_cost(len, DOMAIN_REGEX.len())
        + matches_cost(len, remainder_len)
        + 4 * 2 * STRING_COST
        + STEP_COST
}

/// `hits`, per image: each rule's `matches` on a normalized name (at most 255 characters).
fn hits_cost_per_image(rule_regexes: &[Option<String>]) -> u64 {
    let len = crate::image::NAME_TOTAL_LENGTH_MAX as u64;
    let rules: u64 = rule_regexes
        .iter()
        .flatten()
        .map(|re| matches_cost(len, re.len()) + ORDER_STEP_COST)
        .sum();
    rules.max(1)
}

/// `hitRules` and `wanted` when every rule is hit: a step per rule, then each hit rule against
/// every other.
fn order_cost(rules: usize) -> u64 {
    let rules = rules as u64;
    rules * ORDER_STEP_COST + rules * rules * ORDER_STEP_COST
}

/// `add` and `injected` at their bounds: each of `secrets` looked up among the Pod's pull
/// secrets and among the recorded ones (a name compared at 26).
fn present_cost(secrets: usize) -> u64 {
    let per_secret = (MAX_PULL_SECRETS + MAX_RECORDED_LEN / 2 + 1) * NAME_STEP_COST;
    secrets as u64 * per_secret + MAX_RECORDED_LEN * NAME_STEP_COST
}

/// A reference's remainder after its registry: the repository path, a tag, a digest.
fn remainder_regex() -> String {
    format!("^{PATH_COMPONENT}(?:/{PATH_COMPONENT})*{TAG_AND_DIGEST}")
}
