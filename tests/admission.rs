//! The admission decision on the AdmissionReviews recorded from a real API server, and on
//! hand-made Pods for each patch rule.

mod common;

use common::*;
use pullsecret_injector::admission::{self, Outcome, ReviewError};
use pullsecret_injector::config::Config;
use serde_json::{Value, json};

fn decide(config: &Config, review: &Value) -> (admission::Decision, Value) {
    let decision =
        admission::review(config, &serde_json::to_vec(review).unwrap()).expect("a valid review");
    let response: Value = serde_json::from_slice(&decision.to_review_bytes().unwrap()).unwrap();
    (decision, response)
}

/// Runs a recorded review, applies the answer, and returns the patched Pod.
fn run_fixture(name: &str) -> (admission::Decision, Value, Value) {
    let config = example_config();
    let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let (decision, response) = decide(&config, &review);
    let pod = apply_response(&review, &response);
    (decision, response, pod)
}

#[test]
fn deployment_pod_gets_gar_and_dockerhub_in_config_order() {
    let (decision, _, pod) = run_fixture("deployment-pod.json");
    assert_eq!(decision.outcome, Outcome::Patched);
    assert_eq!((decision.images, decision.matched_images), (3, 3));
    assert_eq!(pull_secrets(&pod), ["gar-pull", "dockerhub"]);
    assert_eq!(
        injected_annotation(&pod).as_deref(),
        Some("gar-pull,dockerhub")
    );
    // generateName Pods have no name yet; the decision reports the prefix.
    assert_eq!(decision.name, "web-84858677cd-");
    assert_eq!(decision.namespace, "team-a");
}

#[test]
fn job_pod_gets_the_path_prefixed_secret() {
    let (_, _, pod) = run_fixture("job-pod.json");
    assert_eq!(pull_secrets(&pod), ["ghcr-acme"]);
}

#[test]
fn serviceaccount_secrets_stay_first() {
    let (decision, response, pod) = run_fixture("serviceaccount-secrets-pod.json");
    assert_eq!(pull_secrets(&pod), ["sa-registry", "local-registry"]);
    // An existing list gets one `add .../-` per secret, existing annotations one key.
    let ops = decision.patch.clone().expect("patch");
    let ops = serde_json::to_value(&ops).unwrap();
    assert_eq!(ops[0]["path"], "/spec/imagePullSecrets/-");
    assert_eq!(
        ops[1]["path"],
        "/metadata/annotations/pullsecret-injector.io~1injected"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["team"], "build",
        "other annotations kept"
    );
    assert!(response["response"]["warnings"].is_null());
}

#[test]
fn secrets_the_pod_already_lists_are_not_added_again() {
    let (decision, response, pod) = run_fixture("own-secrets-pod.json");
    assert_eq!(decision.outcome, Outcome::Unchanged);
    // us-docker.pkg.dev matches `*.pkg.dev`; quay.io matches nothing.
    assert_eq!((decision.images, decision.matched_images), (2, 1));
    assert!(response["response"]["patch"].is_null());
    assert_eq!(pull_secrets(&pod), ["team-own", "gar-pull"]);
}

#[test]
fn opted_out_pod_is_left_alone() {
    let (decision, response, _) = run_fixture("opted-out-pod.json");
    assert_eq!(decision.outcome, Outcome::OptedOut);
    assert!(response["response"]["patch"].is_null());
}

#[test]
fn dry_run_is_answered_like_a_real_create() {
    let mut config_text = std::fs::read_to_string(data_path("../../examples/config.yaml")).unwrap();
    config_text.push_str("  - match: registry.example.com:5443/team\n    secret: team-registry\n");
    let (config, _) = Config::from_yaml(&config_text).unwrap();
    let review: Value = serde_json::from_slice(&fixture("dry-run-pod.json")).unwrap();
    let (decision, response) = decide(&config, &review);
    assert!(decision.dry_run);
    assert_eq!(
        pull_secrets(&apply_response(&review, &response)),
        ["team-registry"]
    );
}

#[test]
fn ephemeral_container_update_is_not_mutated() {
    let (decision, response, _) = run_fixture("ephemeral-container-update.json");
    assert_eq!(decision.outcome, Outcome::Ignored);
    assert!(response["response"]["patch"].is_null());
    assert_eq!(response["response"]["allowed"], true);
}

#[test]
fn thirty_containers_with_odd_images() {
    let (decision, response, pod) = run_fixture("thirty-container-pod.json");
    assert_eq!(
        pull_secrets(&pod),
        ["gar-pull", "ghcr-acme", "dockerhub", "local-registry"]
    );
    let bad: Vec<&str> = decision
        .invalid_images
        .iter()
        .map(|b| b.image.as_str())
        .collect();
    assert_eq!(bad, ["ghcr.io/Acme/api:1"]);
    let warnings = response["response"]["warnings"]
        .as_array()
        .expect("warnings");
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("ghcr.io/Acme/api:1"));
}

/// A Pod whose only private image is an image volume: recorded-shape (the job-pod review with
/// a `spec.volumes[].image` as the 1.33+ Pod schema has it, and its volumeMount).
#[test]
fn image_volume_pod_gets_the_volumes_secret() {
    let (decision, response, pod) = run_fixture("image-volume-pod.json");
    assert_eq!(decision.outcome, Outcome::Patched);
    assert_eq!(
        (
            decision.images,
            decision.matched_images,
            decision.image_volumes
        ),
        (2, 1, 1)
    );
    assert_eq!(pull_secrets(&pod), ["gar-pull"]);
    assert_eq!(injected_annotation(&pod).as_deref(), Some("gar-pull"));
    assert!(response["response"]["warnings"].is_null());
}

#[test]
fn an_invalid_image_volume_reference_is_warned_about_by_its_volume() {
    let config = example_config();
    let review = review_of(pod(json!({
        "containers": [{ "name": "c", "image": "ghcr.io/acme/api:1" }],
        "volumes": [{ "name": "models", "image": { "reference": "ghcr.io/Acme/models:1" } }],
    })));
    let (decision, response) = decide(&config, &review);
    assert_eq!(
        decision.added,
        ["ghcr-acme"],
        "the valid image still counts"
    );
    assert_eq!(decision.invalid_images.len(), 1);
    assert_eq!(decision.invalid_images[0].holder, "image volume");
    assert_eq!(decision.invalid_images[0].name, "models");
    let warning = response["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains(r#"of image volume "models""#), "{warning}");
}

#[test]
fn every_fixture_is_idempotent() {
    let config = example_config();
    for name in [
        "deployment-pod.json",
        "job-pod.json",
        "serviceaccount-secrets-pod.json",
        "own-secrets-pod.json",
        "thirty-container-pod.json",
        "image-volume-pod.json",
    ] {
        let review: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let (_, response) = decide(&config, &review);
        let patched = apply_response(&review, &response);
        let mut again = review.clone();
        again["request"]["object"] = patched;
        let (decision, response) = decide(&config, &again);
        assert!(decision.patch.is_none(), "{name}: second pass patched");
        assert!(response["response"]["patch"].is_null(), "{name}");
    }
}

fn pod(spec: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "namespace": "ns" }, "spec": spec })
}

#[test]
fn every_container_kind_counts() {
    let config = example_config();
    let cases = [
        (
            json!({ "initContainers": [{ "name": "i", "image": "ghcr.io/acme/init:1" }], "containers": [{ "name": "c", "image": "quay.io/x/y" }] }),
            vec!["ghcr-acme"],
        ),
        (
            json!({ "containers": [{ "name": "c", "image": "quay.io/x/y" }], "ephemeralContainers": [{ "name": "e", "image": "nginx" }] }),
            vec!["dockerhub"],
        ),
        (
            json!({ "containers": [{ "name": "c", "image": "quay.io/x/y" }] }),
            vec![],
        ),
        (
            json!({ "containers": [{ "name": "c" }, { "name": "d", "image": "" }] }),
            vec![],
        ),
        // Image volumes (Kubernetes 1.33+) are pulled with the same credentials.
        (
            json!({ "containers": [{ "name": "c", "image": "quay.io/x/y" }], "volumes": [{ "name": "m", "image": { "reference": "ghcr.io/acme/models:1", "pullPolicy": "IfNotPresent" } }] }),
            vec!["ghcr-acme"],
        ),
        // Volumes of other kinds, and image volumes without a reference, name no image.
        (
            json!({ "containers": [{ "name": "c", "image": "quay.io/x/y" }], "volumes": [{ "name": "a", "configMap": { "name": "x" } }, { "name": "b", "image": {} }, { "name": "c", "image": null }, { "name": "d", "image": { "reference": "" } }] }),
            vec![],
        ),
        (
            json!({ "containers": [{ "name": "c", "image": "quay.io/x/y" }], "volumes": null }),
            vec![],
        ),
    ];
    for (spec, expected) in cases {
        let review = review_of(pod(spec.clone()));
        let (_, response) = decide(&config, &review);
        assert_eq!(
            pull_secrets(&apply_response(&review, &response)),
            expected,
            "{spec}"
        );
    }
}

#[test]
fn empty_or_null_lists_get_one_add_of_the_whole_list() {
    let config = example_config();
    for existing in [json!([]), Value::Null] {
        let review = review_of(pod(
            json!({ "containers": [{ "name": "c", "image": "nginx" }, { "name": "d", "image": "ghcr.io/acme/x" }], "imagePullSecrets": existing }),
        ));
        let (decision, response) = decide(&config, &review);
        let ops = serde_json::to_value(decision.patch.clone().unwrap()).unwrap();
        assert_eq!(
            ops[0],
            json!({ "op": "add", "path": "/spec/imagePullSecrets", "value": [{ "name": "ghcr-acme" }, { "name": "dockerhub" }] })
        );
        assert_eq!(
            ops.as_array().unwrap().len(),
            2,
            "one add for the list, one for the annotation"
        );
        assert_eq!(
            pull_secrets(&apply_response(&review, &response)),
            ["ghcr-acme", "dockerhub"]
        );
    }
}

#[test]
fn injected_annotation_is_merged_on_reinvocation() {
    let config = example_config();
    let mut p = pod(
        json!({ "containers": [{ "name": "c", "image": "nginx" }], "imagePullSecrets": [{ "name": "dockerhub" }] }),
    );
    p["metadata"]["annotations"] = json!({ "pullsecret-injector.io/injected": "dockerhub" });
    // Another webhook added a container after our first pass.
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "sidecar", "image": "ghcr.io/acme/sidecar:1" }));
    let review = review_of(p);
    let (_, response) = decide(&config, &review);
    let patched = apply_response(&review, &response);
    assert_eq!(pull_secrets(&patched), ["dockerhub", "ghcr-acme"]);
    assert_eq!(
        injected_annotation(&patched).as_deref(),
        Some("dockerhub,ghcr-acme")
    );
}

#[test]
fn mirror_pods_and_skip_values() {
    let config = example_config();
    let with_annotations = |annotations: Value| {
        let mut p = pod(json!({ "containers": [{ "name": "c", "image": "nginx" }] }));
        p["metadata"]["annotations"] = annotations;
        decide(&config, &review_of(p)).0.outcome
    };
    assert_eq!(
        with_annotations(json!({ "kubernetes.io/config.mirror": "abc" })),
        Outcome::MirrorPod
    );
    assert_eq!(
        with_annotations(json!({ "pullsecret-injector.io/skip": "true" })),
        Outcome::OptedOut
    );
    assert_eq!(
        with_annotations(json!({ "pullsecret-injector.io/skip": "True" })),
        Outcome::OptedOut
    );
    assert_eq!(
        with_annotations(json!({ "pullsecret-injector.io/skip": "false" })),
        Outcome::Patched
    );
    assert_eq!(with_annotations(json!(null)), Outcome::Patched);
}

#[test]
fn pod_without_metadata_gets_metadata_added() {
    let config = example_config();
    let review =
        review_of(json!({ "spec": { "containers": [{ "name": "c", "image": "nginx" }] } }));
    let (_, response) = decide(&config, &review);
    let patched = apply_response(&review, &response);
    assert_eq!(injected_annotation(&patched).as_deref(), Some("dockerhub"));
}

#[test]
fn only_pod_create_is_mutated() {
    let config = example_config();
    let base = review_of(pod(
        json!({ "containers": [{ "name": "c", "image": "nginx" }] }),
    ));
    let variants: [(&str, Value); 5] = [
        ("operation", json!("UPDATE")),
        ("operation", json!("DELETE")),
        ("subResource", json!("ephemeralcontainers")),
        (
            "kind",
            json!({ "group": "apps", "version": "v1", "kind": "Deployment" }),
        ),
        (
            "resource",
            json!({ "group": "", "version": "v1", "resource": "configmaps" }),
        ),
    ];
    assert_eq!(decide(&config, &base).0.outcome, Outcome::Patched);
    for (field, value) in variants {
        let mut review = base.clone();
        review["request"][field] = value.clone();
        let (decision, response) = decide(&config, &review);
        assert_eq!(decision.outcome, Outcome::Ignored, "{field} = {value}");
        assert!(response["response"]["patch"].is_null());
    }
}

#[test]
fn unreadable_pod_is_allowed_unchanged() {
    let config = example_config();
    for object in [
        json!(null),
        json!({ "spec": { "containers": "nginx" } }),
        json!({ "spec": { "containers": [{ "image": 5 }] } }),
        json!([1, 2]),
    ] {
        let mut review = review_of(json!({}));
        review["request"]["object"] = object.clone();
        let (decision, response) = decide(&config, &review);
        assert_eq!(decision.outcome, Outcome::InvalidObject, "{object}");
        assert_eq!(response["response"]["allowed"], true);
        assert!(response["response"]["patch"].is_null());
    }
}

#[test]
fn non_reviews_are_errors() {
    let config = example_config();
    type Check = fn(&ReviewError) -> bool;
    let cases: [(&[u8], Check); 6] = [
        (b"not json", |e| matches!(e, ReviewError::Malformed(_))),
        (b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}", |e| matches!(e, ReviewError::WrongType { .. })),
        (b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}", |e| matches!(e, ReviewError::WrongType { .. })),
        (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", |e| matches!(e, ReviewError::NoRequest)),
        (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}", |e| matches!(e, ReviewError::NoUid)),
        (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"\"}}", |e| matches!(e, ReviewError::NoUid)),
    ];
    for (body, check) in cases {
        let error = admission::review(&config, body).expect_err("should be refused");
        assert!(
            check(&error),
            "{}: {error:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn answer_has_exactly_the_admission_v1_fields() {
    // admission.k8s.io/v1 AdmissionResponse: uid, allowed, status, patch (base64 of Go's
    // []byte), patchType, auditAnnotations, warnings. We send only what we use.
    let (_, response, _) = run_fixture("thirty-container-pod.json");
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    assert!(
        response.get("request").is_none(),
        "the request is not echoed back"
    );
    let mut keys: Vec<&str> = response["response"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["allowed", "patch", "patchType", "uid", "warnings"]);
    assert_eq!(
        response["response"]["uid"],
        "3a9a67a1-1b44-49a9-985b-2b282da82305"
    );

    let (_, response, _) = run_fixture("opted-out-pod.json");
    let mut keys: Vec<&str> = response["response"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["allowed", "uid"]);
}
