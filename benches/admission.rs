//! The in-process decision on realistic reviews, against the cost of only parsing the same
//! bytes with serde_json (`IgnoredAny`). Goal: decision <= 2x parse.
//!
//! `cargo bench --bench admission`: criterion's estimates for each, then the ratio measured
//! by interleaving the two (the fastest of 300 alternating batches each), which a busy
//! machine disturbs far less than two runs minutes apart. Numbers and method in
//! docs/performance.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use pullsecret_injector::admission;
use pullsecret_injector::config::Config;
use serde::de::IgnoredAny;

fn read(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn parse_only(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(black_box(body)).is_ok()
}

fn decision(config: &Config, body: &[u8]) -> Option<Vec<u8>> {
    let decision = admission::review(config, black_box(body)).ok()?;
    decision.to_review_bytes().ok()
}

/// The time per call of `f` over one batch of `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
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

    let mut c = Criterion::default().configure_from_args();
    for (name, body) in &cases {
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse-only", |b| b.iter(|| parse_only(body)));
        group.bench_function("decision", |b| b.iter(|| decision(&config, body)));
        group.finish();
    }
    c.final_summary();

    // `cargo test --benches` runs this binary in test mode: criterion does nothing then, and
    // neither does the ratio.
    if std::env::args().any(|a| a == "--bench") {
        println!("\ninterleaved, fastest of 300 batches:");
        for (name, body) in &cases {
            let n = if body.len() > 10_000 { 100 } else { 1000 };
            let (mut parse, mut decide) = (f64::MAX, f64::MAX);
            for _ in 0..300 {
                parse = parse.min(per_call(n, || {
                    black_box(parse_only(body));
                }));
                decide = decide.min(per_call(n, || {
                    black_box(decision(&config, body));
                }));
            }
            println!(
                "{name:>22}: parse-only {:6.2} µs, decision {:6.2} µs, decision / parse {:.2}x",
                parse * 1e6,
                decide * 1e6,
                decide / parse
            );
        }
    }
}
