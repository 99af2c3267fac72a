//! Prometheus metrics, served as text on the plain metrics port.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::admission::Outcome;
use crate::registry::{Verdict, result_label};

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
struct SecretResultLabels {
    secret: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    secret: String,
    registry: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    secret: String,
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    /// The HTTP status; 0 when no answer came.
    code: u16,
}

/// Every metric the process exports, registered once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<OutcomeLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    review_duration: Histogram,
    invalid_images: Counter,
    secrets_injected: Family<SecretLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    certificate_reloads: Family<ResultLabels, Counter>,
    sync_applied: Family<SecretLabels, Counter>,
    sync_deleted: Family<SecretLabels, Counter>,
    sync_conflicts: Family<SecretLabels, Counter>,
    sync_errors: Family<ReasonLabels, Counter>,
    sync_last_success: Gauge,
    sync_verifications: Family<ReasonLabels, Counter>,
    kube_api_requests: Family<ApiLabels, Counter>,
    repairs: Family<ResultLabels, Counter>,
    credential_refreshes: Family<SecretResultLabels, Counter>,
    /// The `result` labels of `credential_refreshes` used so far: a Family cannot list its
    /// label sets, and a secret's series are removed by name.
    refresh_results: Mutex<BTreeSet<&'static str>>,
    credential_expiry: Family<SecretLabels, Gauge>,
    credential_checks: Family<CheckLabels, Gauge>,
    credential_check_time: Family<RegistryLabels, Gauge>,
    leader: Gauge,
    task_restarts: Family<TaskLabels, Counter>,
    sync_service_account_patches: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and hands it back.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("pullsecret_injector");
        let r = &mut r;
        // From 50 µs to ~0.8 s: the decision takes microseconds, the API server waits 2 s.
        let buckets = exponential_buckets(0.00005, 2.5, 12);
        let review_duration = Histogram::new(buckets);
        let metrics = Self {
            reviews: register(
                r,
                "admission_reviews",
                "AdmissionReviews answered, by outcome",
                Family::default(),
            ),
            rejected: register(
                r,
                "admission_rejected",
                "Requests to /mutate answered with an HTTP error, by reason",
                Family::default(),
            ),
            review_duration: register(
                r,
                "admission_review_duration_seconds",
                "Time to decide one AdmissionReview, body read excluded",
                review_duration,
            ),
            invalid_images: register(
                r,
                "invalid_images",
                "Image strings that are not valid references (skipped, never failing the review)",
                Counter::default(),
            ),
            secrets_injected: register(
                r,
                "secrets_injected",
                "imagePullSecrets added to Pods, by secret",
                Family::default(),
            ),
            config_reloads: register(
                r,
                "config_reloads",
                "Config reloads, by result (success, failure)",
                Family::default(),
            ),
            certificate_reloads: register(
                r,
                "certificate_reloads",
                "Serving certificate reloads, by result (success, failure)",
                Family::default(),
            ),
            sync_applied: register(
                r,
                "sync_secrets_applied",
                "Secret copies written (created or updated) by server-side apply, by secret",
                Family::default(),
            ),
            sync_deleted: register(
                r,
                "sync_secrets_deleted",
                "Managed Secret copies deleted, by secret",
                Family::default(),
            ),
            sync_conflicts: register(
                r,
                "sync_conflicts",
                "Secrets of a configured name that the sync does not own and left alone, by secret",
                Family::default(),
            ),
            sync_errors: register(
                r,
                "sync_errors",
                "Reconcile errors, by reason",
                Family::default(),
            ),
            sync_last_success: register(
                r,
                "sync_last_success_timestamp_seconds",
                "Unix time of the last reconcile that finished without error",
                Gauge::default(),
            ),
            sync_verifications: register(
                r,
                "sync_namespace_verifications",
                "Namespaces whose copies were read back from the API server, by reason (start, resync, admission)",
                Family::default(),
            ),
            kube_api_requests: register(
                r,
                "kube_api_requests",
                "Requests sent to the Kubernetes API, retries included, by method and status",
                Family::default(),
            ),
            repairs: register(
                r,
                "repairs",
                "Pods stuck pulling for want of a secret, by what the repairer did (evicted, gone, blocked, rate_limited, error) or why it left them (bare_pod, no_rule, has_secrets, replacement_lacks_secret)",
                Family::default(),
            ),
            credential_refreshes: register(
                r,
                "credential_refresh",
                "Renewals of minted credentials, by secret and result (success, key_error, endpoint_error, plugin_error, conflict, api_error)",
                Family::default(),
            ),
            refresh_results: Mutex::default(),
            credential_expiry: register(
                r,
                "credential_expiry_timestamp_seconds",
                "Unix time at which the minted credentials in force expire, by secret",
                Family::default(),
            ),
            credential_checks: register(
                r,
                "credential_check",
                &format!(
                    "Result of the last credential check of a source against a registry: 1 for the current result ({}), 0 for the others seen",
                    Verdict::ALL.map(result_label).join(", ")
                ),
                Family::default(),
            ),
            credential_check_time: register(
                r,
                "credential_check_timestamp_seconds",
                "Unix time of the last credential check of a source against a registry",
                Family::default(),
            ),
            sync_service_account_patches: register(
                r,
                "sync_service_account_patches",
                "ServiceAccounts whose imagePullSecrets the sync updated (serviceAccounts:)",
                Counter::default(),
            ),
            leader: register(
                r,
                "leader",
                "1 on the replica holding the leader Lease (it runs the sync, renewals, checks and repair), else 0",
                Gauge::default(),
            ),
            task_restarts: register(
                r,
                "task_restarts",
                "Background tasks restarted after they stopped or panicked, by task",
                Family::default(),
            ),
            registry: std::mem::take(r),
        };
        // Every outcome is exported from the start, at 0.
        for outcome in Outcome::ALL.map(Outcome::as_str) {
            let _ = metrics.reviews.get_or_create(&OutcomeLabels { outcome });
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // fmt::Write for String never fails, and the registry's own encoders only fail on a
        // failing writer.
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
        let outcome = outcome.as_str();
        self.reviews.get_or_create(&OutcomeLabels { outcome }).inc();
        self.review_duration.observe(duration.as_secs_f64());
        if invalid_images > 0 {
            self.invalid_images.inc_by(invalid_images as u64);
        }
        for secret in added {
            inc_secret(&self.secrets_injected, secret);
        }
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn config_reload(&self, ok: bool) {
        inc_result(&self.config_reloads, ok);
    }

    pub fn certificate_reload(&self, ok: bool) {
        inc_result(&self.certificate_reloads, ok);
    }

    pub fn sync_applied(&self, secret: &str) {
        inc_secret(&self.sync_applied, secret);
    }

    pub fn sync_deleted(&self, secret: &str) {
        inc_secret(&self.sync_deleted, secret);
    }

    pub fn sync_conflict(&self, secret: &str) {
        inc_secret(&self.sync_conflicts, secret);
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

    pub fn sync_service_account_patched(&self) {
        self.sync_service_account_patches.inc();
    }

    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// A supervised task exists: its restart count is exported from 0.
    pub fn task_started(&self, task: &'static str) {
        let _ = self.task_restarts.get_or_create(&TaskLabels { task });
    }

    pub fn task_restarted(&self, task: &'static str) {
        self.task_restarts.get_or_create(&TaskLabels { task }).inc();
    }

    pub fn repair(&self, result: &'static str) {
        self.repairs.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn credential_refresh(&self, secret: &str, result: &'static str) {
        let labels = SecretResultLabels {
            secret: secret.to_owned(),
            result,
        };
        self.credential_refreshes.get_or_create(&labels).inc();
        lock(&self.refresh_results).insert(result);
    }

    pub fn credential_expiry(&self, secret: &str, expires_at: std::time::SystemTime) {
        let unix = expires_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let labels = SecretLabels {
            secret: secret.to_owned(),
        };
        self.credential_expiry.get_or_create(&labels).set(unix);
    }

    /// Removes the series of a secret no longer minted: its expiry must not fire the expiry
    /// alert once that time has passed.
    pub fn forget_minted(&self, secret: &str) {
        self.credential_expiry.remove(&SecretLabels {
            secret: secret.to_owned(),
        });
        for &result in lock(&self.refresh_results).iter() {
            self.credential_refreshes.remove(&SecretResultLabels {
                secret: secret.to_owned(),
                result,
            });
        }
    }

    /// Removes every minted secret's series: the refresher has stopped, and nothing keeps
    /// them true.
    pub fn forget_all_minted(&self) {
        self.credential_expiry.clear();
        self.credential_refreshes.clear();
    }

    /// Records a credential check: `verdict` becomes the one result set to 1 for the pair.
    pub fn credential_check(
        &self,
        secret: &str,
        registry: &str,
        verdict: Verdict,
        at: std::time::SystemTime,
    ) {
        for previous in Verdict::ALL {
            let labels = CheckLabels {
                secret: secret.to_owned(),
                registry: registry.to_owned(),
                result: result_label(previous),
            };
            if previous == verdict {
                self.credential_checks.get_or_create(&labels).set(1);
            } else if let Some(gauge) = self.credential_checks.get(&labels) {
                gauge.set(0);
            }
        }
        let unix = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let labels = RegistryLabels {
            secret: secret.to_owned(),
            registry: registry.to_owned(),
        };
        self.credential_check_time.get_or_create(&labels).set(unix);
    }

    /// Removes the check series of a pair no longer configured, so that its last result does
    /// not keep an alert firing.
    pub fn forget_credential_check(&self, secret: &str, registry: &str) {
        for verdict in Verdict::ALL {
            self.credential_checks.remove(&CheckLabels {
                secret: secret.to_owned(),
                registry: registry.to_owned(),
                result: result_label(verdict),
            });
        }
        self.credential_check_time.remove(&RegistryLabels {
            secret: secret.to_owned(),
            registry: registry.to_owned(),
        });
    }

    /// Removes every check series: the checker has stopped, and nothing keeps them true.
    pub fn forget_credential_checks(&self) {
        self.credential_checks.clear();
        self.credential_check_time.clear();
    }

    pub fn kube_api_request(&self, method: &str, code: u16) {
        let labels = ApiLabels {
            method: method.to_owned(),
            code,
        };
        self.kube_api_requests.get_or_create(&labels).inc();
    }
}

/// The lock, even if a panic poisoned it: the set it guards stays valid.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn inc_secret(family: &Family<SecretLabels, Counter>, secret: &str) {
    let labels = SecretLabels {
        secret: secret.to_owned(),
    };
    family.get_or_create(&labels).inc();
}

fn inc_result(family: &Family<ResultLabels, Counter>, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    family.get_or_create(&ResultLabels { result }).inc();
}
