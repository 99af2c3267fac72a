//! Generated registry rules and image strings, for the properties the matcher, the
//! matchConditions and the admission policy are held to: the hosts, ports and paths that
//! decide, globs of every kind, and strings the API server accepts that the grammar may not.

use proptest::prelude::*;

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("docker.io".to_owned()),
        Just("index.docker.io".to_owned()),
        Just("ghcr.io".to_owned()),
        Just("localhost".to_owned()),
        Just("Foo".to_owned()),
        Just("us-docker.pkg.dev".to_owned()),
        Just("a.b.pkg.dev".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        Just("[ABC]".to_owned()),
        "[a-z]{1,3}\\.[a-z]{2,3}",
        "[a-z]{1,6}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("library".to_owned()),
            Just("acme".to_owned()),
            Just("nginx".to_owned()),
            "[a-z][a-z0-9]{0,3}",
            "[a-z]{1,3}[._-][a-z]{1,3}",
        ],
        1..4,
    )
    .prop_map(|p| p.join("/"))
}

fn port() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("5000".to_owned())),
        Just(Some("443".to_owned()))
    ]
}

pub fn image() -> impl Strategy<Value = String> {
    let well_formed = (
        prop::option::of((host(), port())),
        path(),
        prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,5}"),
        prop::option::of(Just(
            "@sha256:9d2d1e6c2a8d0b4c1e5b8f3a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
        )),
    )
        .prop_map(|(domain, path, tag, digest)| {
            let mut s = match domain {
                Some((h, Some(p))) => format!("{h}:{p}/{path}"),
                Some((h, None)) => format!("{h}/{path}"),
                None => path,
            };
            if let Some(tag) = tag {
                s = format!("{s}:{tag}");
            }
            if let Some(digest) = digest {
                s.push_str(digest);
            }
            s
        });
    prop_oneof![
        4 => well_formed,
        // Strings the API server accepts and the grammar may not.
        1 => "[a-zA-Z0-9./:@_\\[\\]-]{0,30}",
    ]
}

pub fn rule() -> impl Strategy<Value = String> {
    let glob_host = prop_oneof![
        host(),
        Just("*".to_owned()),
        Just("*.io".to_owned()),
        Just("*.pkg.dev".to_owned()),
        Just("d?cker.*".to_owned()),
        Just("[a-h]*.io".to_owned()),
        Just("[^a-f]*.*".to_owned()),
        Just("[!-/]*.io".to_owned()),
        Just("127.0.0.*".to_owned()),
        Just("*:*:*".to_owned()),
    ];
    (glob_host, port(), prop::option::of(path()), any::<bool>()).prop_map(
        |(h, port, path, https)| {
            let mut s = if https { format!("https://{h}") } else { h };
            if let Some(p) = port {
                s = format!("{s}:{p}");
            }
            if let Some(p) = path {
                s = format!("{s}/{p}");
            }
            s
        },
    )
}
