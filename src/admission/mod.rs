//! The admission decision: an `admission.k8s.io/v1` AdmissionReview in, the answer out.
//!
//! Everything here is pure (no I/O, no clock), shared by `POST /mutate` and the `mutate`
//! command. Only the fields the decision needs are deserialized, borrowing from the request
//! body; the rest of the Pod is skipped unparsed.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use json_patch::Patch;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::Config;
use crate::image::{ImageError, ImageRef};
use crate::names::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, SKIP_ANNOTATION};

mod read;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// The JSON pointer to [`INJECTED_ANNOTATION`]: its '/' is written "~1".
const INJECTED_POINTER: &str = "/metadata/annotations/pullsecret-injector.io~1injected";
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
    pub const ALL: [Self; 6] = [
        Self::Patched,
        Self::Unchanged,
        Self::OptedOut,
        Self::MirrorPod,
        Self::Ignored,
        Self::InvalidObject,
    ];

    /// The position of `self` in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

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

// `ALL` lists the outcomes in declaration order, so `index` is the discriminant.
const _: () = {
    let mut i = 0;
    while i < Outcome::ALL.len() {
        assert!(Outcome::ALL[i] as usize == i);
        i += 1;
    }
};

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
    /// The JSON Patch, serialized: it is only ever sent, so it is written once, as bytes.
    pub patch_json: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

/// Reviews one AdmissionReview body.
pub fn review(config: &Config, body: &[u8]) -> Result<Decision, ReviewError> {
    // One pass reads the review and the Pod's few fields together: the hand-written reader,
    // or serde_json for what that reader leaves to it. Only when both fail is the body read
    // again, keeping the object raw, to tell a malformed review (400) from a Pod we cannot
    // read (allowed unchanged).
    if let Some(review) = read::review(body) {
        return decide(config, review, |object| object.ok_or_else(no_object));
    }
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
    if *api_version != *API_VERSION || *kind != *KIND {
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
        patch_json: None,
        warnings: Vec::new(),
    };

    let is_pod_create = request.operation.as_deref() == Some("CREATE")
        && request
            .kind
            .as_ref()
            .is_some_and(|k| k.group.is_empty() && &*k.kind == "Pod")
        && request
            .resource
            .as_ref()
            .is_some_and(|r| r.group.is_empty() && &*r.resource == "pods")
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

    decision.patch_json = Some(patch_json(&pod, &annotations, &plan.add));
    decision.added = plan.add.iter().map(|s| (*s).to_owned()).collect();
    decision.outcome = Outcome::Patched;
    Ok(decision)
}

impl Decision {
    /// The JSON Patch as operations, for callers that apply it.
    pub fn patch(&self) -> Option<Patch> {
        // Our own output: it parses, which the tests check.
        self.patch_json
            .as_deref()
            .and_then(|json| serde_json::from_slice(json).ok())
    }

    /// The AdmissionReview the API server expects back: same uid, always allowed.
    pub fn to_review_bytes(&self) -> Vec<u8> {
        let patch_len = self.patch_json.as_ref().map_or(0, |p| p.len() * 4 / 3 + 64);
        let mut out = Vec::with_capacity(160 + self.uid.len() + patch_len);
        out.extend_from_slice(br#"{"apiVersion":""#);
        out.extend_from_slice(API_VERSION.as_bytes());
        out.extend_from_slice(br#"","kind":""#);
        out.extend_from_slice(KIND.as_bytes());
        out.extend_from_slice(br#"","response":{"uid":"#);
        push_json(&mut out, &self.uid);
        out.extend_from_slice(br#","allowed":true"#);
        if let Some(patch) = &self.patch_json {
            // Base64 needs no JSON escaping: encode straight into the answer.
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(
                start + base64::encoded_len(patch.len(), true).unwrap_or(0),
                0,
            );
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(patch, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        if !self.warnings.is_empty() {
            out.extend_from_slice(br#","warnings":"#);
            push_json(&mut out, &self.warnings);
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// Appends `value` as JSON (strings escaped as serde_json escapes them).
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
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

/// The JSON Patch adding `add` to the Pod, written directly as bytes: the operations are
/// fixed in shape, and building `serde_json::Value`s to serialize them cost more than the rest
/// of the decision.
fn patch_json(pod: &PodIn<'_>, annotations: &Annotations, add: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + add.iter().map(|s| s.len() * 2 + 48).sum::<usize>());
    out.push(b'[');
    let existing = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_deref())
        .unwrap_or_default();
    let secret_ref = |out: &mut Vec<u8>, name: &str| {
        out.extend_from_slice(br#"{"name":"#);
        push_json(out, name);
        out.push(b'}');
    };
    if existing.is_empty() {
        out.extend_from_slice(br#"{"op":"add","path":"/spec/imagePullSecrets","value":["#);
        for (i, secret) in add.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            secret_ref(&mut out, secret);
        }
        out.extend_from_slice(b"]}");
    } else {
        for (i, secret) in add.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"op":"add","path":"/spec/imagePullSecrets/-","value":"#);
            secret_ref(&mut out, secret);
            out.push(b'}');
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
    let value = injected.join(",");
    out.extend_from_slice(br#",{"op":"add","path":"#);
    // The annotation alone, in a new annotations map, or in a new metadata holding that map.
    let (path, open, close): (&str, &[u8], &[u8]) = match pod.metadata.as_ref() {
        None => ("/metadata", br#"{"annotations":{"#, b"}}"),
        Some(meta) if !meta.annotations.present => ("/metadata/annotations", b"{", b"}"),
        Some(_) => (INJECTED_POINTER, b"", b""),
    };
    push_json(&mut out, path);
    out.extend_from_slice(br#","value":"#);
    out.extend_from_slice(open);
    if !open.is_empty() {
        push_json(&mut out, INJECTED_ANNOTATION);
        out.push(b':');
    }
    push_json(&mut out, &value);
    out.extend_from_slice(close);
    out.push(b'}');
    out.push(b']');
    out
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

// ---- wire types -------------------------------------------------------------------------

/// An AdmissionReview whose `request.object` is read as `O`: the Pod's fields, or raw.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(borrow)]
    api_version: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
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

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct GroupKind<'a> {
    #[serde(borrow, default)]
    group: Str<'a>,
    #[serde(borrow, default)]
    kind: Str<'a>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct GroupResource<'a> {
    #[serde(borrow, default)]
    group: Str<'a>,
    #[serde(borrow, default)]
    resource: Str<'a>,
}

/// The few fields of a Pod the decision reads.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
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
#[cfg_attr(test, derive(PartialEq))]
#[serde(rename_all = "camelCase")]
struct MetaIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    generate_name: Option<Str<'a>>,
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
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
#[cfg_attr(test, derive(PartialEq))]
struct ContainerIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    image: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(PartialEq))]
struct SecretRefIn<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
}

/// The annotations that matter, read without keeping the others (which can be large, such as
/// `kubectl.kubernetes.io/last-applied-configuration`).
#[derive(Clone, Debug, Default)]
#[cfg_attr(test, derive(PartialEq))]
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
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key {
                        SKIP_ANNOTATION => {
                            let v: Str<'de> = map.next_value()?;
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

/// A JSON string borrowed from the body when it has no escapes, owned otherwise. serde's own
/// `Cow<str>` borrows only as a bare field, never inside `Option` or as a map key, and an
/// allocation per string read was most of the decision's cost.
#[derive(Debug, Default, Clone)]
#[cfg_attr(test, derive(PartialEq))]
struct Str<'a>(Cow<'a, str>);

impl Str<'_> {
    fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

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
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(StrVisitor)
    }
}
