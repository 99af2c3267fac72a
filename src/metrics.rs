//! Prometheus metrics, served as text on the plain metrics port.
//!
//! Every review counts itself, so that path takes no lock and allocates nothing: the outcome
//! counters are created at start, and per-secret counters are looked up in a copy-on-write map
//! that only changes the first time a secret is seen.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    secret: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    /// The HTTP status; 0 when no answer came.
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Every metric the process exports, registered once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// One counter per [`Outcome`], in [`Outcome::ALL`] order.
    reviews: [Counter; Outcome::ALL.len()],
    rejected: Family<ReasonLabels, Counter>,
    review_duration: DurationHistogram,
    invalid_images: Counter,
    secrets_injected: Family<SecretLabels, Counter>,
    /// Handles to `secrets_injected`'s counters, by secret.
    injected_by_secret: ArcSwap<HashMap<String, Counter>>,
    config_reloads: Family<ResultLabels, Counter>,
    certificate_reloads: Family<ResultLabels, Counter>,
    // Secret sync.
    sync_applied: Family<SecretLabels, Counter>,
    sync_deleted: Family<SecretLabels, Counter>,
    sync_conflicts: Family<SecretLabels, Counter>,
    sync_errors: Family<ReasonLabels, Counter>,
    sync_last_success: Gauge,
    sync_verifications: Family<ReasonLabels, Counter>,
    kube_api_requests: Family<ApiLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pullsecret_injector");
        let review_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "AdmissionReviews answered, by outcome",
            review_family.clone(),
        );
        // Created now, so every outcome is exported from the start, at 0.
        let reviews = Outcome::ALL.map(|outcome| {
            review_family
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admission_rejected",
            "Requests to /mutate answered with an HTTP error, by reason",
            rejected.clone(),
        );
        // From 50 µs to ~0.8 s: the decision takes microseconds, the API server waits 2 s.
        let review_duration = DurationHistogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.5, 12),
        );
        registry.register(
            "admission_review_duration_seconds",
            "Time to decide one AdmissionReview, body read excluded",
            review_duration.clone(),
        );
        let invalid_images = Counter::default();
        registry.register(
            "invalid_images",
            "Image strings that are not valid references (skipped, never failing the review)",
            invalid_images.clone(),
        );
        let secrets_injected = Family::<SecretLabels, Counter>::default();
        registry.register(
            "secrets_injected",
            "imagePullSecrets added to Pods, by secret",
            secrets_injected.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result (success, failure)",
            config_reloads.clone(),
        );
        let certificate_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads, by result (success, failure)",
            certificate_reloads.clone(),
        );
        let sync_applied = Family::<SecretLabels, Counter>::default();
        registry.register(
            "sync_secrets_applied",
            "Secret copies written (created or updated) by server-side apply, by secret",
            sync_applied.clone(),
        );
        let sync_deleted = Family::<SecretLabels, Counter>::default();
        registry.register(
            "sync_secrets_deleted",
            "Managed Secret copies deleted, by secret",
            sync_deleted.clone(),
        );
        let sync_conflicts = Family::<SecretLabels, Counter>::default();
        registry.register(
            "sync_conflicts",
            "Secrets of a configured name that the sync does not own and left alone, by secret",
            sync_conflicts.clone(),
        );
        let sync_errors = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sync_errors",
            "Reconcile errors, by reason",
            sync_errors.clone(),
        );
        let sync_last_success = Gauge::default();
        registry.register(
            "sync_last_success_timestamp_seconds",
            "Unix time of the last reconcile that finished without error",
            sync_last_success.clone(),
        );
        let sync_verifications = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sync_namespace_verifications",
            "Namespaces whose copies were read back from the API server, by reason (start, resync, admission)",
            sync_verifications.clone(),
        );
        let kube_api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "kube_api_requests",
            "Requests sent to the Kubernetes API, retries included, by method and status",
            kube_api_requests.clone(),
        );
        Self {
            registry,
            reviews,
            rejected,
            review_duration,
            invalid_images,
            secrets_injected,
            injected_by_secret: ArcSwap::default(),
            config_reloads,
            certificate_reloads,
            sync_applied,
            sync_deleted,
            sync_conflicts,
            sync_errors,
            sync_last_success,
            sync_verifications,
            kube_api_requests,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn review(
        &self,
        outcome: Outcome,
        duration: Duration,
        added: &[String],
        invalid_images: usize,
    ) {
        self.reviews[outcome.index()].inc();
        self.review_duration.observe(duration);
        if invalid_images > 0 {
            self.invalid_images.inc_by(invalid_images as u64);
        }
        for secret in added {
            self.count_injected(secret);
        }
    }

    fn count_injected(&self, secret: &str) {
        if let Some(counter) = self.injected_by_secret.load().get(secret) {
            counter.inc();
            return;
        }
        let counter = self
            .secrets_injected
            .get_or_create(&SecretLabels {
                secret: secret.to_owned(),
            })
            .clone();
        self.injected_by_secret.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(secret.to_owned(), counter.clone());
            Arc::new(map)
        });
        counter.inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn certificate_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.certificate_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn sync_applied(&self, secret: &str) {
        self.sync_applied
            .get_or_create(&SecretLabels {
                secret: secret.to_owned(),
            })
            .inc();
    }

    pub fn sync_deleted(&self, secret: &str) {
        self.sync_deleted
            .get_or_create(&SecretLabels {
                secret: secret.to_owned(),
            })
            .inc();
    }

    pub fn sync_conflict(&self, secret: &str) {
        self.sync_conflicts
            .get_or_create(&SecretLabels {
                secret: secret.to_owned(),
            })
            .inc();
    }

    pub fn sync_error(&self, reason: &'static str) {
        self.sync_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn sync_success(&self, unix_seconds: i64) {
        self.sync_last_success.set(unix_seconds);
    }

    pub fn sync_verified(&self, reason: &'static str) {
        self.sync_verifications
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn kube_api_request(&self, method: &str, code: u16) {
        self.kube_api_requests
            .get_or_create(&ApiLabels {
                method: method.to_owned(),
                code,
            })
            .inc();
    }
}

/// A histogram of durations made of atomics. prometheus-client's `Histogram` takes a mutex per
/// observation; on two busy cores, a worker preempted while holding it stalls the other one
/// for a whole scheduler slice, which showed in the p99 of the load benchmark.
#[derive(Clone, Debug)]
pub struct DurationHistogram {
    cells: Arc<Cells>,
}

#[derive(Debug)]
struct Cells {
    /// Upper bounds in seconds, ascending, the last one +Inf.
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        let cells = Cells {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum_nanos: AtomicU64::new(0),
        };
        Self {
            cells: Arc::new(cells),
        }
    }

    pub fn observe(&self, duration: Duration) {
        let cells = &*self.cells;
        let seconds = duration.as_secs_f64();
        let bucket = cells
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(cells.bounds.len() - 1);
        cells.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The count is the buckets' total, so the two always agree; the sum may lag a
        // review being counted at that instant, as with any lock-free client.
        let cells = &*self.cells;
        let buckets: Vec<(f64, u64)> = cells
            .bounds
            .iter()
            .zip(&cells.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = cells.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
