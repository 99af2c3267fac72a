//! The admission decision: an `admission.k8s.io/v1` AdmissionReview in, the answer out.
//!
//! Everything here is pure (no I/O, no clock), shared by `POST /mutate` and the `mutate`
//! command. Only the fields the decision needs are deserialized, borrowing from the request
//! body; the rest of the Pod is skipped unparsed.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::Config;
use crate::image::{ImageError, ImageRef};
use crate::names::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, SKIP_ANNOTATION};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// At most this many warnings go back to the client (the API server caps their size too).
const MAX_WARNINGS: usize = 8;

/// A body that is not an AdmissionReview we can answer: the server replies 400, which lets
/// `failurePolicy: Ignore` admit the Pod.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("body is not a JSON AdmissionReview: {0}")]
    Malformed(String),
    #[error(
        "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got {api_version:?} and {kind:?}"
    )]
    WrongType { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
}

/// What happened to a review; also the `outcome` label of the reviews metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Secrets were added.
    Patched,
    /// A Pod CREATE that needed nothing.
    Unchanged,
    /// The Pod carries the opt-out annotation.
    OptedOut,
    /// A mirror pod: the kubelet owns it.
    MirrorPod,
    /// Not a Pod CREATE (UPDATE, a subresource, another kind).
    Ignored,
    /// A Pod CREATE whose object we could not read: allowed unchanged.
    InvalidObject,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::OptedOut => "opted_out",
            Self::MirrorPod => "mirror_pod",
            Self::Ignored => "ignored",
            Self::InvalidObject => "invalid_object",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An image string that is not a valid reference; no secret is added for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidImage {
    pub container: String,
    pub image: String,
    pub error: ImageError,
}

/// The answer to one review, with what the logs and metrics want to know about it.
#[derive(Debug)]
pub struct Decision {
    pub uid: String,
    pub outcome: Outcome,
    pub namespace: String,
    /// The Pod's name, or its `generateName` prefix.
    pub name: String,
    pub dry_run: bool,
    /// Secrets added, in patch order.
    pub added: Vec<String>,
    /// Valid image references in the Pod, and how many of them a rule matched.
    pub images: usize,
    pub matched_images: usize,
    pub invalid_images: Vec<InvalidImage>,
    /// Why the object could not be read, for [`Outcome::InvalidObject`].
    pub object_error: Option<String>,
    pub patch: Option<Patch>,
    pub warnings: Vec<String>,
}

/// Reviews one AdmissionReview body.
pub fn review(config: &Config, body: &[u8]) -> Result<Decision, ReviewError> {
    // One pass reads the review and the Pod's few fields together. Only when that fails is
    // the body read again, keeping the object raw, to tell a malformed review (400) from a
    // Pod we cannot read (allowed unchanged).
    if let Ok(review) = serde_json::from_slice::<ReviewIn<'_, PodIn<'_>>>(body) {
        return decide(config, review, |object| object.ok_or_else(no_object));
    }
    let review: ReviewIn<'_, &RawValue> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    decide(config, review, |object| {
        let raw = object.ok_or_else(no_object)?;
        serde_json::from_str::<PodIn<'_>>(raw.get()).map_err(|e| e.to_string())
    })
}

fn no_object() -> String {
    "request has no object".to_owned()
}

fn decide<'a, O>(
    config: &Config,
    review: ReviewIn<'a, O>,
    read_pod: impl FnOnce(Option<O>) -> Result<PodIn<'a>, String>,
) -> Result<Decision, ReviewError> {
    let api_version = review.api_version.unwrap_or_default();
    let kind = review.kind.unwrap_or_default();
    if api_version != API_VERSION || kind != KIND {
        return Err(ReviewError::WrongType {
            api_version: api_version.into_owned(),
            kind: kind.into_owned(),
        });
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    let uid = match request.uid {
        Some(uid) if !uid.is_empty() => uid.into_owned(),
        _ => return Err(ReviewError::NoUid),
    };
    let mut decision = Decision {
        uid,
        outcome: Outcome::Ignored,
        namespace: request.namespace.unwrap_or_default().into_owned(),
        name: request.name.unwrap_or_default().into_owned(),
        dry_run: request.dry_run.unwrap_or(false),
        added: Vec::new(),
        images: 0,
        matched_images: 0,
        invalid_images: Vec::new(),
        object_error: None,
        patch: None,
        warnings: Vec::new(),
    };

    let is_pod_create = request.operation.as_deref() == Some("CREATE")
        && request
            .kind
            .as_ref()
            .is_some_and(|k| k.group.is_empty() && k.kind == "Pod")
        && request
            .resource
            .as_ref()
            .is_some_and(|r| r.group.is_empty() && r.resource == "pods")
        && request
            .sub_resource
            .as_deref()
            .unwrap_or_default()
            .is_empty();
    if !is_pod_create {
        return Ok(decision);
    }

    let pod = match read_pod(request.object) {
        Ok(pod) => pod,
        Err(error) => {
            decision.outcome = Outcome::InvalidObject;
            decision.object_error = Some(error);
            return Ok(decision);
        }
    };
    if decision.name.is_empty()
        && let Some(meta) = &pod.metadata
    {
        decision.name = meta
            .name
            .as_deref()
            .or(meta.generate_name.as_deref())
            .unwrap_or_default()
            .to_owned();
    }

    let annotations = pod
        .metadata
        .as_ref()
        .map(|m| &m.annotations)
        .cloned()
        .unwrap_or_default();
    if annotations.skip {
        decision.outcome = Outcome::OptedOut;
        return Ok(decision);
    }
    if annotations.mirror {
        decision.outcome = Outcome::MirrorPod;
        return Ok(decision);
    }

    let plan = plan(config, &pod);
    decision.images = plan.images;
    decision.matched_images = plan.matched_images;
    decision.invalid_images = plan.invalid_images;
    decision.warnings = decision
        .invalid_images
        .iter()
        .take(MAX_WARNINGS)
        .map(|bad| {
            format!(
                "pullsecret-injector: image {:?} of container {:?} is not a valid image reference ({}); no pull secret was added for it",
                truncate(&bad.image, 128),
                truncate(&bad.container, 63),
                bad.error
            )
        })
        .collect();
    if plan.add.is_empty() {
        decision.outcome = Outcome::Unchanged;
        return Ok(decision);
    }

    decision.patch = Some(build_patch(&pod, &annotations, &plan.add));
    decision.added = plan.add.iter().map(|s| (*s).to_owned()).collect();
    decision.outcome = Outcome::Patched;
    Ok(decision)
}

impl Decision {
    /// The AdmissionReview the API server expects back: same uid, always allowed.
    pub fn to_review_bytes(&self) -> Vec<u8> {
        let out = ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response: ResponseOut {
                uid: &self.uid,
                allowed: true,
                patch_type: self.patch.as_ref().map(|_| "JSONPatch"),
                patch: self.patch.as_ref().map(|p| {
                    base64::engine::general_purpose::STANDARD
                        .encode(serde_json::to_vec(p).unwrap_or_default())
                }),
                warnings: &self.warnings,
            },
        };
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

/// Wraps a Pod manifest in the AdmissionReview the API server would send for its CREATE, so
/// the `mutate` command takes the same path as the server.
pub fn review_for_pod(pod: Value) -> Value {
    let namespace = pod
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or_else(|| json!("default"));
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        }
    })
}

/// The pure core: which secrets to add to a Pod, and which images could not be read.
#[derive(Debug, Default)]
pub struct Plan<'c> {
    pub add: Vec<&'c str>,
    pub invalid_images: Vec<InvalidImage>,
    /// Images read, and how many of them some rule matched.
    pub images: usize,
    pub matched_images: usize,
}

pub fn plan<'c>(config: &'c Config, pod: &PodIn<'_>) -> Plan<'c> {
    let mut out = Plan::default();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let mut hits = vec![false; config.rules().len()];
    let containers = [
        &spec.init_containers,
        &spec.containers,
        &spec.ephemeral_containers,
    ];
    for container in containers.into_iter().flatten().flatten() {
        let Some(image) = container.image.as_deref().filter(|i| !i.is_empty()) else {
            // No image: API validation rejects the Pod after admission.
            continue;
        };
        match ImageRef::parse(image) {
            Ok(reference) => {
                out.images += 1;
                if config.mark_matches(&reference, &mut hits) {
                    out.matched_images += 1;
                }
            }
            Err(error) => out.invalid_images.push(InvalidImage {
                container: container.name.as_deref().unwrap_or_default().to_owned(),
                image: image.to_owned(),
                error,
            }),
        }
    }
    let existing = spec.image_pull_secrets.as_deref().unwrap_or_default();
    out.add = config
        .secrets_of(&hits)
        .into_iter()
        .filter(|s| !existing.iter().any(|e| e.name.as_deref() == Some(*s)))
        .collect();
    out
}

fn build_patch(pod: &PodIn<'_>, annotations: &Annotations, add: &[&str]) -> Patch {
    let op = |tokens: &[&str], value: Value| {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(tokens.iter().copied()),
            value,
        })
    };
    let mut ops = Vec::with_capacity(add.len() + 1);
    let existing = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_deref())
        .unwrap_or_default();
    if existing.is_empty() {
        let list = add.iter().map(|s| json!({ "name": s })).collect();
        ops.push(op(&["spec", "imagePullSecrets"], Value::Array(list)));
    } else {
        for secret in add {
            ops.push(op(
                &["spec", "imagePullSecrets", "-"],
                json!({ "name": secret }),
            ));
        }
    }

    // Keep what an earlier invocation recorded, so a reinvocation that adds more lists all.
    let mut injected: Vec<&str> = annotations
        .injected
        .as_deref()
        .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    for secret in add {
        if !injected.contains(secret) {
            injected.push(secret);
        }
    }
    let value = Value::String(injected.join(","));
    match pod.metadata.as_ref() {
        None => ops.push(op(
            &["metadata"],
            json!({ "annotations": { INJECTED_ANNOTATION: value } }),
        )),
        Some(meta) if !meta.annotations.present => ops.push(op(
            &["metadata", "annotations"],
            json!({ INJECTED_ANNOTATION: value }),
        )),
        Some(_) => ops.push(op(&["metadata", "annotations", INJECTED_ANNOTATION], value)),
    }
    Patch(ops)
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

// ---- wire types -------------------------------------------------------------------------

/// An AdmissionReview whose `request.object` is read as `O`: the Pod's fields, or raw.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<GroupKind<'a>>,
    #[serde(borrow)]
    resource: Option<GroupResource<'a>>,
    #[serde(borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    dry_run: Option<bool>,
    object: Option<O>,
}

#[derive(Deserialize)]
struct GroupKind<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct GroupResource<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    resource: Cow<'a, str>,
}

/// The few fields of a Pod the decision reads.
#[derive(Debug, Deserialize)]
pub struct PodIn<'a> {
    #[serde(borrow)]
    metadata: Option<MetaIn<'a>>,
    #[serde(borrow)]
    spec: Option<SpecIn<'a>>,
}

impl<'a> PodIn<'a> {
    /// Reads the fields the decision needs from a Pod's JSON.
    pub fn from_json(json: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    generate_name: Option<Cow<'a, str>>,
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecIn<'a> {
    #[serde(borrow)]
    containers: Option<Vec<ContainerIn<'a>>>,
    #[serde(borrow)]
    init_containers: Option<Vec<ContainerIn<'a>>>,
    #[serde(borrow)]
    ephemeral_containers: Option<Vec<ContainerIn<'a>>>,
    #[serde(borrow)]
    image_pull_secrets: Option<Vec<SecretRefIn<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ContainerIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    image: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct SecretRefIn<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

/// The annotations that matter, read without keeping the others (which can be large, such as
/// `kubectl.kubernetes.io/last-applied-configuration`).
#[derive(Clone, Debug, Default)]
struct Annotations {
    /// `metadata.annotations` is a non-null map.
    present: bool,
    skip: bool,
    mirror: bool,
    injected: Option<String>,
}

impl<'de> Deserialize<'de> for Annotations {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AnnotationsVisitor;
        impl<'de> Visitor<'de> for AnnotationsVisitor {
            type Value = Annotations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of annotations or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Annotations, E> {
                Ok(Annotations::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Annotations, E> {
                Ok(Annotations::default())
            }
            fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Annotations, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Annotations, A::Error> {
                let mut out = Annotations {
                    present: true,
                    ..Annotations::default()
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        SKIP_ANNOTATION => {
                            let v: Cow<'de, str> = map.next_value()?;
                            out.skip = v.trim().eq_ignore_ascii_case("true");
                        }
                        MIRROR_ANNOTATION => {
                            map.next_value::<IgnoredAny>()?;
                            out.mirror = true;
                        }
                        INJECTED_ANNOTATION => {
                            out.injected = Some(map.next_value::<String>()?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_option(AnnotationsVisitor)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}
