//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use pullsecret_injector::config::Config;
use serde_json::Value;

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The example config of the README (DESIGN.md's config).
pub fn example_config() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/config.yaml");
    Config::load(&path).expect("examples/config.yaml").0
}

/// Applies the patch of an AdmissionReview answer to the request's Pod; returns the patched
/// Pod, or the Pod unchanged when the answer carries no patch.
pub fn apply_response(request: &Value, response: &Value) -> Value {
    let mut pod = request["request"]["object"].clone();
    let answer = &response["response"];
    assert_eq!(answer["allowed"], true, "the webhook must allow: {answer}");
    assert_eq!(answer["uid"], request["request"]["uid"], "uid must be echoed");
    if let Some(patch) = answer["patch"].as_str() {
        assert_eq!(answer["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch).expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON patch");
        json_patch::patch(&mut pod, &patch).expect("patch applies to the Pod");
    } else {
        assert!(answer.get("patchType").is_none(), "patchType without patch: {answer}");
    }
    pod
}

pub fn pull_secrets(pod: &Value) -> Vec<String> {
    pod["spec"]["imagePullSecrets"]
        .as_array()
        .map(|list| list.iter().map(|s| s["name"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

pub fn injected_annotation(pod: &Value) -> Option<String> {
    pod["metadata"]["annotations"]["pullsecret-injector.io/injected"].as_str().map(str::to_owned)
}

/// Wraps `pod` in a Pod CREATE AdmissionReview.
pub fn review_of(pod: Value) -> Value {
    pullsecret_injector::admission::review_for_pod(pod)
}
