//! Properties that must hold for every input, not just the ones we thought of.

mod common;

use common::*;
use proptest::prelude::*;
use pullsecret_injector::admission;
use pullsecret_injector::image::ImageRef;
use serde_json::{Value, json};

const IMAGES: &[&str] = &[
    "nginx",
    "nginx:1.27",
    "library/redis:7",
    "index.docker.io/grafana/grafana:11",
    "asia-northeast1-docker.pkg.dev/acme/app/web:1",
    "us-docker.pkg.dev/x/y@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
    "ghcr.io/acme/api:1",
    "ghcr.io/acmecorp/api:1",
    "ghcr.io/Acme/api:1",
    "localhost:5000/dev/app",
    "localhost/dev/app",
    "quay.io/x/y",
    "",
];
const SECRETS: &[&str] = &[
    "gar-pull",
    "ghcr-acme",
    "dockerhub",
    "local-registry",
    "team-own",
    "",
];

fn image() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(IMAGES).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9./:@_\\[\\]-]{0,40}",
    ]
}

fn containers() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(image(), 0..5).prop_map(|images| {
        images
            .into_iter()
            .enumerate()
            .map(|(i, image)| json!({ "name": format!("c{i}"), "image": image }))
            .collect()
    })
}

fn image_volumes() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(image(), 0..3).prop_map(|images| {
        images
            .into_iter()
            .enumerate()
            .map(|(i, reference)| json!({ "name": format!("v{i}"), "image": { "reference": reference, "pullPolicy": "IfNotPresent" } }))
            .collect()
    })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        containers(),
        containers(),
        image_volumes(),
        proptest::option::of(proptest::collection::vec(proptest::sample::select(SECRETS), 0..4)),
        any::<bool>(),
    )
        .prop_map(|(containers, init, volumes, existing, annotated)| {
            let mut pod = json!({ "metadata": { "name": "p" }, "spec": { "containers": containers, "initContainers": init, "volumes": volumes } });
            if let Some(existing) = existing {
                pod["spec"]["imagePullSecrets"] = existing.iter().map(|s| json!({ "name": s })).collect();
            }
            if annotated {
                pod["metadata"]["annotations"] = json!({ "team": "a" });
            }
            pod
        })
}

fn respond(review: &Value) -> Value {
    let config = example_config();
    let decision =
        admission::review(&config, &serde_json::to_vec(review).unwrap()).expect("valid review");
    serde_json::from_slice(&decision.to_review_bytes().unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_never_panics(s in any::<String>()) {
        let _ = ImageRef::parse(&s);
    }

    #[test]
    fn parser_never_panics_on_reference_like_strings(s in "[a-zA-Z0-9./:@_\\[\\]+-]{0,300}") {
        if let Ok(r) = ImageRef::parse(&s) {
            // A parsed reference prints as one that parses to the same thing.
            let printed = r.to_string();
            let again = ImageRef::parse(&printed).expect("printed reference parses");
            prop_assert_eq!(again.to_string(), printed);
        }
    }

    #[test]
    fn decision_never_panics_on_any_body(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = admission::review(&example_config(), &body);
    }

    #[test]
    fn patch_adds_exactly_the_missing_secrets_in_config_order_once(pod in pod()) {
        let review = review_of(pod.clone());
        let response = respond(&review);
        prop_assert_eq!(&response["response"]["allowed"], &json!(true));
        let patched = apply_response(&review, &response);

        // What the Pod should end with: its own list untouched, then each configured secret
        // one of its valid images needs and it lacks, in config order.
        let config = example_config();
        let images: Vec<String> = ["containers", "initContainers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["image"].as_str().map(str::to_owned))
            .chain(
                pod["spec"]["volumes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|v| v["image"]["reference"].as_str().map(str::to_owned)),
            )
            .collect();
        let refs: Vec<ImageRef<'_>> = images.iter().filter_map(|i| ImageRef::parse(i).ok()).collect();
        let before = pull_secrets(&pod);
        let missing: Vec<String> = config
            .secrets_for(&refs)
            .into_iter()
            .filter(|s| !before.iter().any(|b| b == s))
            .map(str::to_owned)
            .collect();
        let mut expected = before.clone();
        expected.extend(missing.iter().cloned());
        prop_assert_eq!(pull_secrets(&patched), expected);
        if missing.is_empty() {
            prop_assert!(response["response"]["patch"].is_null());
        } else {
            prop_assert_eq!(injected_annotation(&patched), Some(missing.join(",")));
            // Other annotations survive.
            if pod["metadata"]["annotations"].is_object() {
                prop_assert_eq!(&patched["metadata"]["annotations"]["team"], "a");
            }
        }

        // Reviewing our own output changes nothing.
        let again = review_of(patched);
        let response = respond(&again);
        prop_assert!(response["response"]["patch"].is_null(), "second pass patched: {}", response);
    }
}
