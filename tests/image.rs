//! The image reference grammar, case by case: what distribution's `ParseNormalizedNamed`
//! makes of each string (and, for the invalid ones, why it refuses them).

mod common;

use common::references::{self, VALID};
use pullsecret_injector::image::{ImageError, ImageRef};

#[test]
fn valid_references_parse_and_normalize() {
    for (input, domain, path, tag, digest) in VALID {
        let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(r.domain(), *domain, "domain of {input:?}");
        assert_eq!(r.path(), *path, "path of {input:?}");
        assert_eq!(r.tag(), *tag, "tag of {input:?}");
        assert_eq!(r.digest(), *digest, "digest of {input:?}");
    }
}

#[test]
fn host_and_port_split() {
    let cases = [
        ("localhost:5000/x", "localhost", Some("5000")),
        ("[::1]:5000/x", "[::1]", Some("5000")),
        ("[::1]/x", "[::1]", None),
        (
            "harbor.corp.example:8443/proj/img",
            "harbor.corp.example",
            Some("8443"),
        ),
        ("nginx", "docker.io", None),
    ];
    for (input, host, port) in cases {
        let r = ImageRef::parse(input).expect(input);
        assert_eq!((r.host(), r.port()), (host, port), "{input}");
    }
}

#[test]
fn display_is_the_fully_qualified_reference() {
    let cases = [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        (
            "index.docker.io/grafana/grafana:11",
            "docker.io/grafana/grafana:11",
        ),
        (
            "localhost:5000/x:1@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
            "localhost:5000/x:1@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        ),
    ];
    for (input, full) in cases {
        assert_eq!(ImageRef::parse(input).expect(input).to_string(), full);
    }
}

fn err(input: &str) -> ImageError {
    match ImageRef::parse(input) {
        Ok(r) => panic!("{input:?} should not parse, got {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn invalid_references_are_refused_with_the_reason() {
    for (input, expected) in references::invalid() {
        assert_eq!(err(&input), expected, "{input:?}");
    }
    let max_tag = format!("nginx:{}", "a".repeat(128));
    assert!(ImageRef::parse(&max_tag).is_ok());
    let max_name = format!("example.com/{}", "a".repeat(243));
    assert!(ImageRef::parse(&max_name).is_ok());
}
