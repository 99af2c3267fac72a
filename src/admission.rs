//! The admission decision: an `admission.k8s.io/v1` AdmissionReview in, the answer out.
//!
//! Everything here is pure (no I/O, no clock), shared by `POST /mutate` and the `mutate`
//! command. The review is read by serde into borrowed structs that name only the fields the
//! decision needs; the rest of the Pod is skipped unparsed. A new field is one more line in
//! the structs at the end of this file.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::Config;
use crate::image::{ImageError, ImageRef};
use crate::names::INJECTED_ANNOTATION;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// What holds an image, in [`InvalidImage::holder`].
const CONTAINER: &str = "container";
const IMAGE_VOLUME: &str = "image volume";
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

impl ReviewError {
    /// The `reason` label of the rejected-requests metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongType { .. } => "wrong_type",
            Self::NoRequest => "no_request",
            Self::NoUid => "no_uid",
        }
    }
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
    pub const ALL: [Self; 6] = [
        Self::Patched,
        Self::Unchanged,
        Self::OptedOut,
        Self::MirrorPod,
        Self::Ignored,
        Self::InvalidObject,
    ];

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
    /// What holds it: `container` (init and ephemeral ones too) or `image volume`.
    pub holder: &'static str,
    /// The container's or the volume's name.
    pub name: String,
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
    /// Valid image references in the Pod (image volumes included), how many of them a rule
    /// matched, and how many of them are image volumes.
    pub images: usize,
    pub matched_images: usize,
    pub image_volumes: usize,
    pub invalid_images: Vec<InvalidImage>,
    /// Why the object could not be read, for [`Outcome::InvalidObject`].
    pub object_error: Option<String>,
    /// The JSON Patch, for [`Outcome::Patched`].
    pub patch: Option<Patch>,
    pub warnings: Vec<String>,
}

/// Reviews one AdmissionReview body.
pub fn review(config: &Config, body: &[u8]) -> Result<Decision, ReviewError> {
    // The API server sends UTF-8 (Go's encoder replaces anything else). Checking the body
    // once lets serde_json take each string as it is, instead of checking every one.
    let body = std::str::from_utf8(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    // One pass reads the review and the Pod's fields together. Only when that fails is the
    // body read again, with the object kept raw, to tell a malformed review (400) from a Pod
    // we cannot read (allowed unchanged).
    if let Ok(review) = serde_json::from_str::<ReviewIn<'_, PodIn<'_>>>(body) {
        return decide(config, review, Ok);
    }
    let review: ReviewIn<'_, &RawValue> =
        serde_json::from_str(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    decide(config, review, |raw| {
        serde_json::from_str(raw.get()).map_err(|e| e.to_string())
    })
}

fn decide<'a, O>(
    config: &Config,
    review: ReviewIn<'a, O>,
    read_pod: impl FnOnce(O) -> Result<PodIn<'a>, String>,
) -> Result<Decision, ReviewError> {
    let request = review.request()?;
    let mut decision = Decision::new(&request)?;
    if !request.is_pod_create() {
        return Ok(decision);
    }
    let pod = request
        .object
        .ok_or_else(|| "request has no object".to_owned())
        .and_then(read_pod);
    let pod = match pod {
        Ok(pod) => pod,
        Err(error) => {
            decision.outcome = Outcome::InvalidObject;
            decision.object_error = Some(error);
            return Ok(decision);
        }
    };
    if decision.name.is_empty() {
        decision.name = pod.name().to_owned();
    }
    let annotations = pod.annotations();
    if annotations.is_some_and(|a| a.skip.as_deref().is_some_and(is_true)) {
        decision.outcome = Outcome::OptedOut;
        return Ok(decision);
    }
    if annotations.is_some_and(|a| a.mirror.is_some()) {
        decision.outcome = Outcome::MirrorPod;
        return Ok(decision);
    }

    let add = decision.read_images(config, &pod);
    if add.is_empty() {
        decision.outcome = Outcome::Unchanged;
        return Ok(decision);
    }
    decision.patch = Some(patch(&pod, &add));
    decision.added = add.into_iter().map(str::to_owned).collect();
    decision.outcome = Outcome::Patched;
    Ok(decision)
}

fn is_true(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

impl Decision {
    /// An [`Outcome::Ignored`] decision for `request`, which must have a uid.
    fn new<O>(request: &RequestIn<'_, O>) -> Result<Self, ReviewError> {
        let uid = request.uid.as_deref().unwrap_or_default();
        if uid.is_empty() {
            return Err(ReviewError::NoUid);
        }
        Ok(Self {
            uid: uid.to_owned(),
            outcome: Outcome::Ignored,
            namespace: request.namespace.as_deref().unwrap_or_default().to_owned(),
            name: request.name.as_deref().unwrap_or_default().to_owned(),
            dry_run: request.dry_run.unwrap_or(false),
            added: Vec::new(),
            images: 0,
            matched_images: 0,
            image_volumes: 0,
            invalid_images: Vec::new(),
            object_error: None,
            patch: None,
            warnings: Vec::new(),
        })
    }

    /// Reads every image of `pod`, counting them and noting the invalid ones; returns the
    /// secrets the Pod lacks, in config order.
    fn read_images<'c>(&mut self, config: &'c Config, pod: &PodIn<'_>) -> Vec<&'c str> {
        let mut hits = vec![false; config.rules().len()];
        for (holder, name, image) in pod.images() {
            let Some(image) = image.filter(|i| !i.is_empty()) else {
                // No image: API validation rejects the Pod after admission.
                continue;
            };
            match ImageRef::parse(image) {
                Ok(reference) => {
                    self.images += 1;
                    if holder == IMAGE_VOLUME {
                        self.image_volumes += 1;
                    }
                    if config.mark_matches(&reference, &mut hits) {
                        self.matched_images += 1;
                    }
                }
                Err(error) => self.invalid_images.push(InvalidImage {
                    holder,
                    name: name.unwrap_or_default().to_owned(),
                    image: image.to_owned(),
                    error,
                }),
            }
        }
        self.warnings = self
            .invalid_images
            .iter()
            .take(MAX_WARNINGS)
            .map(|bad| {
                format!(
                    "pullsecret-injector: image {:?} of {} {:?} is not a valid image reference ({}); no pull secret was added for it",
                    truncate(&bad.image, 128),
                    bad.holder,
                    truncate(&bad.name, 63),
                    bad.error
                )
            })
            .collect();
        let existing = pod.pull_secrets();
        let mut add = config.secrets_of(&hits);
        add.retain(|s| !existing.iter().any(|e| e.name.as_deref() == Some(*s)));
        add
    }

    /// The AdmissionReview the API server expects back: same uid, always allowed, and only
    /// the response fields we use. Written by hand around the serialized patch, which is
    /// base64-encoded straight into the answer: through serde the answer cost 1.6x as much.
    pub fn to_review_bytes(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(br#"{"apiVersion":""#);
        out.extend_from_slice(API_VERSION.as_bytes());
        out.extend_from_slice(br#"","kind":""#);
        out.extend_from_slice(KIND.as_bytes());
        out.extend_from_slice(br#"","response":{"uid":"#);
        serde_json::to_writer(&mut out, &self.uid)?;
        out.extend_from_slice(br#","allowed":true"#);
        if let Some(patch) = &self.patch {
            let json = serde_json::to_vec(patch)?;
            // Base64 needs no JSON escaping.
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(start + json.len().div_ceil(3) * 4, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(&json, &mut out[start..])
                .map_err(serde::ser::Error::custom)?;
            out.truncate(start + written);
            out.push(b'"');
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            serde_json::to_writer(&mut out, &self.warnings)?;
        }
        out.extend_from_slice(b"}}");
        Ok(out)
    }
}

/// The JSON Patch adding `add` to the Pod's `imagePullSecrets` and recording them in the
/// injected annotation.
fn patch(pod: &PodIn<'_>, add: &[&str]) -> Patch {
    let add_op = |path: &[&str], value| {
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        })
    };
    let secret_refs = add.iter().map(|name| json!({ "name": name }));
    let mut ops = Vec::with_capacity(add.len() + 1);
    if pod.pull_secrets().is_empty() {
        ops.push(add_op(
            &["spec", "imagePullSecrets"],
            Value::Array(secret_refs.collect()),
        ));
    } else {
        ops.extend(secret_refs.map(|r| add_op(&["spec", "imagePullSecrets", "-"], r)));
    }

    // Keep what an earlier invocation recorded, so a reinvocation that adds more lists all.
    let annotations = pod.annotations();
    let mut injected: Vec<&str> = annotations
        .and_then(|a| a.injected.as_deref())
        .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    for secret in add {
        if !injected.contains(secret) {
            injected.push(secret);
        }
    }
    let value = Value::String(injected.join(","));
    // The annotation alone, in a new annotations map, or in a new metadata holding that map.
    ops.push(match (&pod.metadata, annotations) {
        (None, _) => add_op(
            &["metadata"],
            json!({ "annotations": { INJECTED_ANNOTATION: value } }),
        ),
        (Some(_), None) => add_op(
            &["metadata", "annotations"],
            json!({ INJECTED_ANNOTATION: value }),
        ),
        (Some(_), Some(_)) => add_op(&["metadata", "annotations", INJECTED_ANNOTATION], value),
    });
    Patch(ops)
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
    api_version: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

impl<'a, O> ReviewIn<'a, O> {
    /// The request of an `admission.k8s.io/v1` AdmissionReview.
    fn request(self) -> Result<RequestIn<'a, O>, ReviewError> {
        let api_version = self.api_version.unwrap_or_default();
        let kind = self.kind.unwrap_or_default();
        if *api_version != *API_VERSION || *kind != *KIND {
            return Err(ReviewError::WrongType {
                api_version: api_version.0.into_owned(),
                kind: kind.0.into_owned(),
            });
        }
        self.request.ok_or(ReviewError::NoRequest)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a, O> {
    #[serde(borrow)]
    uid: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Option<GroupKind<'a>>,
    #[serde(borrow)]
    resource: Option<GroupResource<'a>>,
    #[serde(borrow)]
    sub_resource: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    namespace: Option<Str<'a>>,
    #[serde(borrow)]
    operation: Option<Str<'a>>,
    dry_run: Option<bool>,
    object: Option<O>,
}

impl<O> RequestIn<'_, O> {
    /// A CREATE of a Pod itself, not of one of its subresources.
    fn is_pod_create(&self) -> bool {
        self.operation.as_deref() == Some("CREATE")
            && self
                .kind
                .as_ref()
                .is_some_and(|k| k.group.is_empty() && &*k.kind == "Pod")
            && self
                .resource
                .as_ref()
                .is_some_and(|r| r.group.is_empty() && &*r.resource == "pods")
            && self.sub_resource.as_deref().unwrap_or_default().is_empty()
    }
}

#[derive(Deserialize)]
struct GroupKind<'a> {
    #[serde(borrow, default)]
    group: Str<'a>,
    #[serde(borrow, default)]
    kind: Str<'a>,
}

#[derive(Deserialize)]
struct GroupResource<'a> {
    #[serde(borrow, default)]
    group: Str<'a>,
    #[serde(borrow, default)]
    resource: Str<'a>,
}

/// The few fields of a Pod the decision reads.
#[derive(Deserialize)]
struct PodIn<'a> {
    #[serde(borrow)]
    metadata: Option<MetaIn<'a>>,
    #[serde(borrow)]
    spec: Option<SpecIn<'a>>,
}

impl PodIn<'_> {
    fn name(&self) -> &str {
        let meta = self.metadata.as_ref();
        meta.and_then(|m| m.name.as_deref().or(m.generate_name.as_deref()))
            .unwrap_or_default()
    }

    /// `metadata.annotations`, when it is a map.
    fn annotations(&self) -> Option<&AnnotationsIn<'_>> {
        self.metadata.as_ref()?.annotations.as_ref()
    }

    /// Every image the kubelet pulls for the Pod: each container's (init and ephemeral ones
    /// included) and each image volume's, with what holds it and its name.
    fn images(&self) -> impl Iterator<Item = (&'static str, Option<&str>, Option<&str>)> {
        self.spec.iter().flat_map(|spec| {
            let containers = [
                &spec.init_containers,
                &spec.containers,
                &spec.ephemeral_containers,
            ]
            .into_iter()
            .flatten()
            .flatten()
            .map(|c| (CONTAINER, c.name.as_deref(), c.image.as_deref()));
            let volumes = spec.volumes.iter().flatten().filter_map(|v| {
                let image = v.image.as_ref()?;
                Some((IMAGE_VOLUME, v.name.as_deref(), image.reference.as_deref()))
            });
            containers.chain(volumes)
        })
    }

    fn pull_secrets(&self) -> &[SecretRefIn<'_>] {
        let spec = self.spec.as_ref();
        spec.and_then(|s| s.image_pull_secrets.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    generate_name: Option<Str<'a>>,
    #[serde(borrow)]
    annotations: Option<AnnotationsIn<'a>>,
}

/// The annotations that matter; the others (which can be large, such as
/// `kubectl.kubernetes.io/last-applied-configuration`) are skipped unread. The keys are
/// those of [`crate::names`].
#[derive(Deserialize)]
struct AnnotationsIn<'a> {
    #[serde(borrow, rename = "pullsecret-injector.io/skip")]
    skip: Option<Str<'a>>,
    #[serde(rename = "kubernetes.io/config.mirror")]
    mirror: Option<IgnoredAny>,
    #[serde(borrow, rename = "pullsecret-injector.io/injected")]
    injected: Option<Str<'a>>,
}

#[derive(Deserialize)]
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
    #[serde(borrow)]
    volumes: Option<Vec<VolumeIn<'a>>>,
}

#[derive(Deserialize)]
struct ContainerIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    image: Option<Str<'a>>,
}

/// A volume; only image volumes (Kubernetes 1.33+) name an image.
#[derive(Deserialize)]
struct VolumeIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    image: Option<ImageVolumeIn<'a>>,
}

#[derive(Deserialize)]
struct ImageVolumeIn<'a> {
    #[serde(borrow)]
    reference: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct SecretRefIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

/// A JSON string borrowed from the body when it has no escapes, owned otherwise. serde's own
/// `Cow<str>` borrows only as a bare field, never inside `Option`, and an allocation per
/// string read was most of the decision's cost.
#[derive(Default)]
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}
