//! The `matchConditions` of the webhook: CEL expressions the API server evaluates before it
//! calls us, so that a Pod no rule can match never waits on the webhook.
//!
//! The image condition must be a **superset** of [`Rule::matches`]: a false positive costs one
//! webhook call, a false negative loses a secret. So each rule becomes an anchored regular
//! expression over the image string as written (before normalization) that matches every
//! image the rule matches, and a few more: a host label with a glob widens to any label, and a
//! Docker Hub rule widens to every image whose first component does not name a registry.
//!
//! The expression must also never fail to evaluate: on an error the API server applies the
//! failure policy, and with `Ignore` the Pod would lose its secret. So every optional field is
//! guarded with `has()`, and the runtime cost stays under the API server's per-expression limit
//! whatever the Pod: an image longer than any valid reference is not matched (it is not valid,
//! so no rule matches it), and a Pod with more images than the budget covers is sent to the
//! webhook without looking at them.
//!
//! The chart renders the same expression from its `registries` values
//! (`charts/pullsecret-injector/templates/_helpers.tpl`); a test holds the two to the letter.

use std::fmt::Write as _;

use crate::config::Config;
use crate::image::DOCKER_HUB;
use crate::rules::Rule;

/// Name of the condition that leaves mirror pods alone.
pub const MIRROR_CONDITION: &str = "not-a-mirror-pod";
/// The mirror-pod condition: mirror pods belong to the kubelet (static pods).
pub const MIRROR_EXPRESSION: &str = "!has(object.metadata) || !has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)";
/// Name of the condition that sends only Pods with an image a rule may match.
pub const IMAGE_CONDITION: &str = "an-image-may-match-a-rule";

/// Longest valid image reference: a name of 255 characters once normalized (261 as written:
/// `index.docker.io/` normalizes to `docker.io/`), `:` and a 128-character tag, `@` and a
/// `sha512:` digest. A longer string is not a reference, so no rule matches it.
pub const MAX_IMAGE_LEN: usize = 255 + 6 + 1 + 128 + 1 + 7 + 128;
/// The API server's cost limit for one CEL expression (`celconfig.PerCallLimit`).
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// What the expression is sized to cost at most: a tenth below the limit, for what the cost
/// model below leaves out.
const COST_TARGET: u64 = PER_CALL_LIMIT / 10 * 9;
/// What the expression may cost outside the per-image checks (the image count, the `has()`
/// guards), with a wide margin.
const BASE_COST: u64 = 1_000;
/// Longest expression rendered; a longer one is replaced by `true` (every Pod is sent). cel-go
/// refuses expressions over 100,000 code points, and the webhook configuration with them.
pub const MAX_EXPRESSION_LEN: usize = 64_000;
/// What one image costs besides its regular expression match: the comprehension step, field
/// selections, `has()`, `size()`, the comparison.
const PER_IMAGE_OVERHEAD: u64 = 20;

/// Any one host label of a valid image.
const ANY_LABEL: &str = "[A-Za-z0-9-]*";
/// Any IPv6 host of a valid image, brackets included.
const ANY_IPV6: &str = r"\[[0-9A-Fa-f:]*\]";
/// Docker Hub as an image may name it.
const HUB_PREFIX: &str = r"(?:index\.)?docker\.io/";
/// What may follow a repository path prefix: more path, a tag, a digest, or nothing.
const PATH_END: &str = "(?:[/:@]|$)";

/// The image condition for `config`: its expression and what it costs at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCondition {
    /// The anchored regular expression every matching image string matches; `None` when the
    /// config has no rules, or so many that the expression is `true`.
    pub regex: Option<String>,
    /// Pods with more images than this (all containers and volumes counted) go to the
    /// webhook unexamined, so the expression stays under [`PER_CALL_LIMIT`].
    pub max_images: u64,
    pub expression: String,
}

impl ImageCondition {
    pub fn new(config: &Config) -> Self {
        let regex = image_regex(config.rules());
        let Some(regex) = regex else {
            return Self {
                regex: None,
                max_images: 0,
                expression: "false".to_owned(),
            };
        };
        let max_images = max_images(regex.len());
        let expression = expression(&regex, max_images);
        if expression.len() > MAX_EXPRESSION_LEN {
            // Thousands of rules: send every Pod rather than fail to compile.
            return Self {
                regex: None,
                max_images: 0,
                expression: "true".to_owned(),
            };
        }
        Self {
            regex: Some(regex),
            max_images,
            expression,
        }
    }

    /// The most the expression can cost the API server for any Pod, by cel-go's runtime cost
    /// model: each `matches` costs `ceil((1 + len(image)) * 0.1) * ceil(len(regex) * 0.25)`.
    pub fn worst_case_cost(&self) -> u64 {
        let per_image = self.regex.as_ref().map_or(0, |r| per_image_cost(r.len()));
        BASE_COST + self.max_images * per_image
    }
}

/// One entry of a webhook's `matchConditions`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MatchCondition {
    pub name: &'static str,
    pub expression: String,
}

/// The `matchConditions` list of the webhook: the mirror-pod condition, then the image one.
pub fn match_conditions(config: &Config) -> Vec<MatchCondition> {
    vec![
        MatchCondition {
            name: MIRROR_CONDITION,
            expression: MIRROR_EXPRESSION.to_owned(),
        },
        MatchCondition {
            name: IMAGE_CONDITION,
            expression: ImageCondition::new(config).expression,
        },
    ]
}

fn per_image_cost(regex_len: usize) -> u64 {
    // ceil((1 + MAX_IMAGE_LEN) * 0.1) and ceil(regex_len * 0.25), in integers.
    let string_cost = (1 + MAX_IMAGE_LEN as u64).div_ceil(10);
    let regex_cost = (regex_len as u64).div_ceil(4);
    string_cost * regex_cost + PER_IMAGE_OVERHEAD
}

fn max_images(regex_len: usize) -> u64 {
    (COST_TARGET - BASE_COST) / per_image_cost(regex_len)
}

/// `^(?:alt|alt|...)` over every rule's alternatives, each once, in rule order.
pub fn image_regex(rules: &[Rule]) -> Option<String> {
    let mut alternatives: Vec<String> = Vec::new();
    for rule in rules {
        for alt in rule_alternatives(rule) {
            if !alternatives.contains(&alt) {
                alternatives.push(alt);
            }
        }
    }
    (!alternatives.is_empty()).then(|| format!("^(?:{})", alternatives.join("|")))
}

/// The image strings `rule` may match, as regular expressions anchored at the start.
fn rule_alternatives(rule: &Rule) -> Vec<String> {
    let path = rule.path().replace('.', r"\.");
    let labels: Vec<(&str, bool)> = rule.host_labels().collect();
    // Two labels and no port: the rule is Docker Hub's, or a glob that may match it
    // (`*.io`), and Docker Hub images mostly do not name their registry.
    let hub_shaped = rule.port().is_none() && labels.len() == 2;
    let docker_hub = hub_shaped && labels.iter().map(|(l, _)| *l).eq(DOCKER_HUB.split('.'));
    let maybe_hub = hub_shaped && labels.iter().any(|(_, literal)| !literal);
    let mut alts = Vec::new();
    if !docker_hub {
        let mut host = labels
            .iter()
            .map(|&(label, literal)| if literal { label } else { ANY_LABEL })
            .collect::<Vec<_>>()
            .join(r"\.");
        // An IPv6 host is one label to the kubelet, written in brackets: a one-label rule may
        // match it (`*`, `abc:5000` against `[abc]:5000/x`), one with a `:` only it.
        if let [(label, literal)] = labels.as_slice() {
            if host.contains(':') {
                host = format!(r"\[{host}\]");
            } else if !literal {
                host = format!(r"(?:{ANY_LABEL}|{ANY_IPV6})");
            } else if label.bytes().all(|b| b.is_ascii_hexdigit()) {
                host = format!(r"(?:{host}|\[{host}\])");
            }
        }
        let mut alt = host;
        if let Some(port) = rule.port() {
            let _ = write!(alt, ":{port}");
        }
        alt.push('/');
        if !path.is_empty() {
            let _ = write!(alt, "{path}{PATH_END}");
        }
        alts.push(alt);
    }
    if docker_hub || maybe_hub {
        alts.extend(docker_hub_alternatives(&path));
    }
    alts
}

/// What a Docker Hub rule with repository path prefix `path` (regex-escaped) may match:
/// `docker.io/`, `index.docker.io/`, `user/repo` and `repo` all land on Docker Hub.
fn docker_hub_alternatives(path: &str) -> Vec<String> {
    if path.is_empty() {
        return vec![
            HUB_PREFIX.to_owned(),
            // A first component without '.', ':' or an uppercase letter is not a registry.
            "[^./:A-Z]+/".to_owned(),
            // A single name is an official image: `library/<name>`.
            "[^/]+$".to_owned(),
        ];
    }
    let hub = format!("(?:{HUB_PREFIX})?");
    let mut alts = vec![format!("{hub}{path}{PATH_END}")];
    if path == "library" {
        alts.push(format!("{hub}[^/]+$"));
    } else if let Some(name) = path.strip_prefix("library/")
        && !name.contains('/')
    {
        alts.push(format!("{hub}{name}(?:[:@]|$)"));
    }
    alts
}

/// The whole expression around `regex`.
fn expression(regex: &str, max_images: u64) -> String {
    let lists = [
        ("containers", "c", "c.image"),
        ("initContainers", "c", "c.image"),
        ("ephemeralContainers", "c", "c.image"),
        ("volumes", "v", "v.image.reference"),
    ];
    let count = lists
        .iter()
        .map(|(list, _, _)| format!("(has(object.spec.{list}) ? size(object.spec.{list}) : 0)"))
        .collect::<Vec<_>>()
        .join(" + ");
    let mut out = format!("has(object.spec) && ({count} > {max_images}");
    for (list, var, field) in lists {
        let guard = if field == "v.image.reference" {
            "has(v.image) && has(v.image.reference)".to_owned()
        } else {
            format!("has({field})")
        };
        let _ = write!(
            out,
            " || has(object.spec.{list}) && object.spec.{list}.exists({var}, {guard} && size({field}) <= {MAX_IMAGE_LEN} && {field}.matches(r'{regex}'))"
        );
    }
    out.push(')');
    out
}
