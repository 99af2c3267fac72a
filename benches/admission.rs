//! The in-process decision on realistic reviews, against the cost of only parsing the same
//! bytes with serde_json (`IgnoredAny`). Goal: decision <= 2x parse.
//!
//! `cargo bench --bench admission`; numbers and method in docs/performance.md.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pullsecret_injector::admission;
use pullsecret_injector::config::Config;
use serde::de::IgnoredAny;

fn read(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn bench(c: &mut Criterion) {
    let config_text = String::from_utf8(read("examples/config.yaml")).expect("UTF-8 config");
    let (config, _) = Config::from_yaml(&config_text).expect("example config");
    let cases = [
        ("small-pod", read("tests/data/job-pod.json")),
        ("deployment-pod", read("tests/data/deployment-pod.json")),
        (
            "thirty-container-pod",
            read("tests/data/thirty-container-pod.json"),
        ),
    ];
    for (name, body) in &cases {
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse-only", |b| {
            b.iter(|| serde_json::from_slice::<IgnoredAny>(black_box(body)).is_ok())
        });
        group.bench_function("decision", |b| {
            b.iter(|| {
                let decision = admission::review(&config, black_box(body)).ok();
                decision.map(|d| d.to_review_bytes())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
