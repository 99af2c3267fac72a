//! Matching rules against images, as the kubelet's keyring matches docker config keys
//! (cases from `pkg/credentialprovider/keyring_test.go` first), and config validation.

mod common;

use pullsecret_injector::config::{Config, ConfigError};
use pullsecret_injector::image::ImageRef;
use pullsecret_injector::rules::{Rule, RuleError};

fn rule(m: &str) -> Rule {
    Rule::new(m, "s", &mut Vec::new()).unwrap_or_else(|e| panic!("rule {m:?}: {e}"))
}

fn matches(m: &str, image: &str) -> bool {
    let image = ImageRef::parse(image).unwrap_or_else(|e| panic!("image {image:?}: {e}"));
    rule(m).matches(&image)
}

#[test]
fn kubelet_keyring_examples() {
    let cases = common::KEYRING_CASES;
    for &(rule, image, expected) in cases {
        assert_eq!(
            matches(rule, image),
            expected,
            "rule {rule:?} vs image {image:?}"
        );
    }
}

#[test]
fn design_examples_and_our_differences() {
    let cases = [
        // DESIGN.md's config.
        (
            "asia-northeast1-docker.pkg.dev",
            "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1",
            true,
        ),
        ("*.pkg.dev", "us-docker.pkg.dev/acme/tools/x:1", true),
        ("*.pkg.dev", "pkg.dev/x", false),
        ("*.pkg.dev", "a.b.pkg.dev/x", false),
        ("ghcr.io/acme", "ghcr.io/acme/api:1.2.3", true),
        ("ghcr.io/acme", "ghcr.io/acme/jobs/nightly:2026.11", true),
        ("ghcr.io/acme", "ghcr.io/acme:1", true),
        // Whole path segments only (the kubelet's raw prefix would match this).
        ("ghcr.io/acme", "ghcr.io/acmecorp/api:1.0", false),
        ("docker.io", "nginx", true),
        ("docker.io", "library/nginx:1", true),
        ("docker.io", "index.docker.io/grafana/grafana:11.0.0", true),
        ("docker.io", "docker.io/bitnami/kafka:3.7", true),
        (
            "docker.io",
            "registry-1.docker.io/library/busybox:1.36",
            false,
        ),
        ("docker.io/bitnami", "bitnami/kafka", true),
        ("docker.io/library", "nginx", true),
        ("index.docker.io", "nginx", true),
        ("https://index.docker.io/v1/", "nginx", true),
        ("localhost:5000", "localhost:5000/dev/app:latest", true),
        ("localhost:5000", "localhost/dev/app", false),
        ("localhost", "localhost/dev/app", true),
        ("localhost", "localhost:5000/dev/app", false),
        ("127.0.0.1:5000", "127.0.0.1:5000/x", true),
        ("[::1]:5000", "[::1]:5000/ipv6/app:1", true),
        ("[::1]", "[::1]:5000/ipv6/app:1", false),
        (
            "*.dkr.ecr.*.amazonaws.com",
            "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/team/svc:9",
            true,
        ),
        (
            "*.dkr.ecr.*.amazonaws.com",
            "public.ecr.aws/nginx/nginx:1",
            false,
        ),
        (
            "harbor.corp.example:8443/proj",
            "harbor.corp.example:8443/proj/img:v1",
            true,
        ),
        ("*-docker.pkg.dev", "asia-northeast1-docker.pkg.dev/x", true),
        ("*-docker.pkg.dev", "gcr.io/x", false),
        ("?.gcr.io", "eu.gcr.io/acme/legacy:2", false),
        ("??.gcr.io", "eu.gcr.io/acme/legacy:2", true),
        ("[a-f]?.gcr.io", "eu.gcr.io/acme/legacy:2", true),
        ("[^e]?.gcr.io", "eu.gcr.io/acme/legacy:2", false),
        ("[^e]?.gcr.io", "us.gcr.io/x", true),
        ("\\*.gcr.io", "eu.gcr.io/x", false),
        ("*", "localhost/x", true),
        ("*", "nginx", false),
        // Tags and digests are not part of the match.
        (
            "ghcr.io/acme/api",
            "ghcr.io/acme/api@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
            true,
        ),
    ];
    for (rule, image, expected) in cases {
        assert_eq!(
            matches(rule, image),
            expected,
            "rule {rule:?} vs image {image:?}"
        );
    }
}

fn rule_error(m: &str, secret: &str) -> RuleError {
    match Rule::new(m, secret, &mut Vec::new()) {
        Ok(r) => panic!("rule {m:?} should be refused, got {r}"),
        Err(e) => e,
    }
}

#[test]
fn bad_rules_are_refused_with_the_reason() {
    assert_eq!(rule_error("", "s"), RuleError::EmptyMatch);
    assert_eq!(rule_error("ghcr.io", ""), RuleError::EmptySecret);
    assert!(matches!(
        rule_error("ghcr.io", "Gar_Pull"),
        RuleError::InvalidSecretName(_)
    ));
    assert!(matches!(
        rule_error("ghcr.io", "-x"),
        RuleError::InvalidSecretName(_)
    ));
    assert!(matches!(
        rule_error("*.pkg.dev[", "s"),
        RuleError::BadPattern { .. }
    ));
    assert!(matches!(
        rule_error("[]a].pkg.dev", "s"),
        RuleError::BadPattern { .. }
    ));
    assert!(matches!(
        rule_error("[z-a].pkg.dev", "s"),
        RuleError::BadPattern { .. }
    ));
    assert!(matches!(
        rule_error("foo\\", "s"),
        RuleError::BadPattern { .. }
    ));
    assert!(matches!(
        rule_error("exa_mple.com", "s"),
        RuleError::BadPattern { .. }
    ));
    assert!(matches!(rule_error("a..b", "s"), RuleError::EmptyLabel(_)));
    assert_eq!(
        rule_error("ghcr.io:abc", "s"),
        RuleError::BadPort("abc".into())
    );
    assert_eq!(rule_error("ghcr.io:0", "s"), RuleError::BadPort("0".into()));
    assert_eq!(
        rule_error("ghcr.io:70000", "s"),
        RuleError::BadPort("70000".into())
    );
    assert_eq!(
        rule_error("ghcr.io/Acme", "s"),
        RuleError::BadPath("Acme".into())
    );
    assert_eq!(
        rule_error("ghcr.io/a*", "s"),
        RuleError::BadPath("a*".into())
    );
    assert_eq!(
        rule_error("oci://ghcr.io", "s"),
        RuleError::BadScheme("oci".into())
    );
}

fn warnings_of(m: &str) -> Vec<String> {
    let mut w = Vec::new();
    Rule::new(m, "s", &mut w).expect(m);
    w.into_iter().map(|w| w.0).collect()
}

#[test]
fn spellings_the_kubelet_never_uses_as_written_are_warned_about() {
    assert!(warnings_of("ghcr.io/acme").is_empty());
    assert!(warnings_of("https://ghcr.io")[0].contains("scheme is ignored"));
    assert!(warnings_of("ghcr.io/acme/")[0].contains("trailing '/'"));
    assert!(
        warnings_of("https://index.docker.io/v1/")
            .iter()
            .any(|w| w.contains("/v1/"))
    );
    assert!(warnings_of("index.docker.io")[0].contains("Docker Hub"));
    assert!(warnings_of("registry-1.docker.io")[0].contains("no image reference normalizes"));
    assert!(warnings_of("Example.com")[0].contains("case-sensitively"));
    assert!(warnings_of("myregistry")[0].contains("Docker Hub"));
    assert!(warnings_of("myregistry:5000").is_empty());
    assert!(warnings_of("localhost").is_empty());
}

#[test]
fn rules_display_in_normalized_form() {
    assert_eq!(
        rule("https://index.docker.io/v1/").to_string(),
        "docker.io -> s"
    );
    assert_eq!(rule("[::1]:5000/dev").to_string(), "[::1]:5000/dev -> s");
    assert_eq!(rule("*.pkg.dev").to_string(), "*.pkg.dev -> s");
}

#[test]
fn config_errors_name_the_rule() {
    let text = "registries:\n  - match: ghcr.io\n    secret: ok\n  - match: \"*.pkg.dev[\"\n    secret: gar\n";
    let error = Config::from_yaml(text).expect_err("bad glob");
    assert!(
        matches!(error, ConfigError::Rule { index: 2, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("rule 2 (match \"*.pkg.dev[\"):"),
        "{message}"
    );
    assert!(message.contains("not closed"), "{message}");

    let typo =
        Config::from_yaml("registries:\n  - match: ghcr.io\n    secrets: x\n").expect_err("typo");
    assert!(
        typo.to_string().contains("unknown field `secrets`"),
        "{typo}"
    );
    let missing = Config::from_yaml("registries:\n  - match: ghcr.io\n").expect_err("missing");
    assert!(
        missing.to_string().contains("missing field `secret`"),
        "{missing}"
    );
    let not_list = Config::from_yaml("registries: ghcr.io\n").expect_err("not a list");
    assert!(
        not_list.to_string().starts_with("not a valid config"),
        "{not_list}"
    );
    let top_typo = Config::from_yaml("registry: []\n").expect_err("top-level typo");
    assert!(
        top_typo.to_string().contains("unknown field `registry`"),
        "{top_typo}"
    );
    assert!(Config::from_yaml(": : :\n\t- [").is_err());
    assert!(
        !Config::from_yaml("x")
            .unwrap_err()
            .to_string()
            .contains('\n')
    );
}

#[test]
fn config_keeps_order_and_dedupes_secrets() {
    let text = "registries:\n  - match: a.io\n    secret: one\n  - match: b.io\n    secret: two\n  - match: c.io\n    secret: one\n";
    let (config, warnings) = Config::from_yaml(text).expect("valid");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.secrets(), ["one", "two"]);
    let images: Vec<_> = ["c.io/x", "b.io/y", "a.io/z"]
        .iter()
        .map(|i| ImageRef::parse(i).unwrap())
        .collect();
    assert_eq!(config.secrets_for(&images), ["one", "two"]);
    let only_c = [ImageRef::parse("c.io/x").unwrap()];
    assert_eq!(config.secrets_for(&only_c), ["one"]);
}

#[test]
fn empty_config_is_valid_with_a_warning() {
    for text in ["", "registries: []\n", "registries:\n"] {
        let (config, warnings) = Config::from_yaml(text).expect(text);
        assert!(config.rules().is_empty());
        assert_eq!(warnings.len(), 1, "{text:?}");
    }
}
