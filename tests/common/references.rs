//! The reference grammar's tables: what distribution's `ParseNormalizedNamed` makes of each
//! valid string, and why it refuses each invalid one. The parser (tests/image.rs) and policy
//! mode's CEL (tests/admission_policy.rs) are both held to them.

use pullsecret_injector::image::ImageError;

pub const D256: &str = "sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d";

/// (input, domain, path, tag, digest)
pub type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

pub const VALID: &[Case] = &[
    ("nginx", "docker.io", "library/nginx", None, None),
    (
        "nginx:1.27",
        "docker.io",
        "library/nginx",
        Some("1.27"),
        None,
    ),
    (
        "nginx:Latest",
        "docker.io",
        "library/nginx",
        Some("Latest"),
        None,
    ),
    (
        "library/redis:7",
        "docker.io",
        "library/redis",
        Some("7"),
        None,
    ),
    (
        "docker.io/bitnami/kafka:3.7",
        "docker.io",
        "bitnami/kafka",
        Some("3.7"),
        None,
    ),
    ("docker.io/nginx", "docker.io", "library/nginx", None, None),
    (
        "docker.io/library/alpine",
        "docker.io",
        "library/alpine",
        None,
        None,
    ),
    (
        "index.docker.io/grafana/grafana:11.0.0",
        "docker.io",
        "grafana/grafana",
        Some("11.0.0"),
        None,
    ),
    (
        "index.docker.io/nginx",
        "docker.io",
        "library/nginx",
        None,
        None,
    ),
    (
        "index.docker.io/library/nginx",
        "docker.io",
        "library/nginx",
        None,
        None,
    ),
    // distribution does not rewrite the API endpoint host.
    (
        "registry-1.docker.io/library/busybox:1.36",
        "registry-1.docker.io",
        "library/busybox",
        Some("1.36"),
        None,
    ),
    (
        "registry-1.docker.io/busybox",
        "registry-1.docker.io",
        "busybox",
        None,
        None,
    ),
    (
        "busybox@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
        "docker.io",
        "library/busybox",
        None,
        Some("sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"),
    ),
    (
        "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1",
        "asia-northeast1-docker.pkg.dev",
        "acme-prod/app/web",
        Some("1"),
        None,
    ),
    (
        "asia-northeast1-docker.pkg.dev/acme-prod/app/web@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        "asia-northeast1-docker.pkg.dev",
        "acme-prod/app/web",
        None,
        Some(D256),
    ),
    (
        "asia-northeast1-docker.pkg.dev/acme-prod/app/web:1@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        "asia-northeast1-docker.pkg.dev",
        "acme-prod/app/web",
        Some("1"),
        Some(D256),
    ),
    (
        "us-docker.pkg.dev/other/x/y",
        "us-docker.pkg.dev",
        "other/x/y",
        None,
        None,
    ),
    (
        "gcr.io/distroless/static:nonroot",
        "gcr.io",
        "distroless/static",
        Some("nonroot"),
        None,
    ),
    (
        "eu.gcr.io/acme/legacy:2",
        "eu.gcr.io",
        "acme/legacy",
        Some("2"),
        None,
    ),
    (
        "k8s.gcr.io/echoserver:1.4",
        "k8s.gcr.io",
        "echoserver",
        Some("1.4"),
        None,
    ),
    (
        "ghcr.io/acme/api:1.2.3",
        "ghcr.io",
        "acme/api",
        Some("1.2.3"),
        None,
    ),
    (
        "ghcr.io/acme/jobs/nightly:2026.11",
        "ghcr.io",
        "acme/jobs/nightly",
        Some("2026.11"),
        None,
    ),
    (
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/team/svc:9",
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com",
        "team/svc",
        Some("9"),
        None,
    ),
    (
        "public.ecr.aws/nginx/nginx:1",
        "public.ecr.aws",
        "nginx/nginx",
        Some("1"),
        None,
    ),
    (
        "quay.io/jetstack/cert-manager-controller:v1.15.0",
        "quay.io",
        "jetstack/cert-manager-controller",
        Some("v1.15.0"),
        None,
    ),
    (
        "registry.k8s.io/pause:3.9",
        "registry.k8s.io",
        "pause",
        Some("3.9"),
        None,
    ),
    (
        "mcr.microsoft.com/dotnet/runtime:8.0",
        "mcr.microsoft.com",
        "dotnet/runtime",
        Some("8.0"),
        None,
    ),
    (
        "localhost:5000/dev/app:latest",
        "localhost:5000",
        "dev/app",
        Some("latest"),
        None,
    ),
    ("localhost/dev/app", "localhost", "dev/app", None, None),
    (
        "localhost:5000/x@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        "localhost:5000",
        "x",
        None,
        Some(D256),
    ),
    ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", None, None),
    (
        "10.0.0.1/team/app:2",
        "10.0.0.1",
        "team/app",
        Some("2"),
        None,
    ),
    (
        "[::1]:5000/ipv6/app:1",
        "[::1]:5000",
        "ipv6/app",
        Some("1"),
        None,
    ),
    ("[2001:db8::1]/app", "[2001:db8::1]", "app", None, None),
    (
        "harbor.corp.example:8443/proj/img:v1",
        "harbor.corp.example:8443",
        "proj/img",
        Some("v1"),
        None,
    ),
    (
        "nexus.internal:18080/repo/app:1.0.0-rc.1-build.5",
        "nexus.internal:18080",
        "repo/app",
        Some("1.0.0-rc.1-build.5"),
        None,
    ),
    (
        "a.b.c.d.example.com/deep/path/to/image:tag",
        "a.b.c.d.example.com",
        "deep/path/to/image",
        Some("tag"),
        None,
    ),
    (
        "xn--bcher-kva.example/x",
        "xn--bcher-kva.example",
        "x",
        None,
        None,
    ),
    // An uppercase first component is a registry host, and hosts may have uppercase letters.
    ("Example.COM/x/y:1", "Example.COM", "x/y", Some("1"), None),
    ("Foo/bar", "Foo", "bar", None, None),
    (
        "Docker.io/library/nginx",
        "Docker.io",
        "library/nginx",
        None,
        None,
    ),
    // No '/': always a Docker Hub short name, even when it looks like a host or host:port.
    ("foo:5000", "docker.io", "library/foo", Some("5000"), None),
    ("localhost", "docker.io", "library/localhost", None, None),
    (
        "localhost:5000",
        "docker.io",
        "library/localhost",
        Some("5000"),
        None,
    ),
    (
        "example.com",
        "docker.io",
        "library/example.com",
        None,
        None,
    ),
    (
        "sha256:abc",
        "docker.io",
        "library/sha256",
        Some("abc"),
        None,
    ),
    // A first component without '.', ':' or uppercase that is not localhost is a Hub namespace.
    ("foo/bar:5000", "docker.io", "foo/bar", Some("5000"), None),
    ("a/b/c/d/e/f", "docker.io", "a/b/c/d/e/f", None, None),
    ("my_repo/app", "docker.io", "my_repo/app", None, None),
    ("my__repo/app", "docker.io", "my__repo/app", None, None),
    ("my--repo/app", "docker.io", "my--repo/app", None, None),
    ("my.repo/app", "my.repo", "app", None, None),
    (
        "nginx:1.27@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        "docker.io",
        "library/nginx",
        Some("1.27"),
        Some(D256),
    ),
    (
        "nginx@sha512:00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        "docker.io",
        "library/nginx",
        None,
        Some(
            "sha512:00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
        ),
    ),
    (
        "nginx:_under",
        "docker.io",
        "library/nginx",
        Some("_under"),
        None,
    ),
];

/// Invalid strings, each with why it is refused.
pub fn invalid() -> Vec<(String, ImageError)> {
    use ImageError::*;
    let long_tag = format!("nginx:{}", "a".repeat(129));
    let long_name = format!("example.com/{}", "a".repeat(244));
    let hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases: Vec<(&str, ImageError)> = vec![
        ("", Empty),
        (hex64, IdentifierOnly),
        ("ghcr.io/Acme/api:1", Uppercase),
        ("FOO", Uppercase),
        ("docker.io/Library/nginx", Uppercase),
        ("nginx@sha256:abc", InvalidDigest("sha256:abc".into())),
        (
            "nginx@sha256:9D2D1E6C2A8D0B4C1E5B8F3A7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F1A0B9C8D",
            InvalidDigest(
                "sha256:9D2D1E6C2A8D0B4C1E5B8F3A7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F1A0B9C8D".into(),
            ),
        ),
        (
            "nginx@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d00",
            InvalidDigest(
                "sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d00".into(),
            ),
        ),
        (
            "nginx@md5:0123456789abcdef0123456789abcdef",
            UnsupportedDigest("md5".into()),
        ),
        ("nginx@", InvalidDigest("".into())),
        ("nginx:", InvalidTag("".into())),
        ("nginx:-bad", InvalidTag("-bad".into())),
        ("nginx:a b", InvalidTag("a b".into())),
        ("-repo/app", InvalidPath("-repo".into())),
        ("repo-/app", InvalidPath("repo-".into())),
        ("my___repo/app", InvalidPath("my___repo".into())),
        ("example.com/", InvalidPath("".into())),
        ("example.com//x", InvalidPath("".into())),
        ("ghcr.io/acm\u{e9}/x", InvalidPath("acm\u{e9}".into())),
        ("ghcr.io/acme/app:1:2", InvalidPath("app:1".into())),
        ("example.com:/x", InvalidDomain("example.com:".into())),
        ("example.com:abc/x", InvalidDomain("example.com:abc".into())),
        (":5000/x", InvalidDomain(":5000".into())),
        ("[zz::1]:5000/x", InvalidDomain("[zz::1]:5000".into())),
        ("exa_mple.com/foo", InvalidDomain("exa_mple.com".into())),
        (
            "-bad.example.com/x",
            InvalidDomain("-bad.example.com".into()),
        ),
        ("a..b/x", InvalidDomain("a..b".into())),
        (&long_tag, InvalidTag("a".repeat(129))),
        (&long_name, NameTooLong),
    ];
    cases
        .into_iter()
        .map(|(input, error)| (input.to_owned(), error))
        .collect()
}
