//! Background credential checks: for each source Secret and each registry its rules name, the
//! registry's login flow with the credentials the kubelet would pick (and the manifest of the
//! rule's `probeImage`, when it names one), at start, after every change of the source, and
//! every `--credential-check-interval`, jittered. Results are metrics, a log line when one
//! changes, and a `PullCredentialFailed` Event on the source Secret when it turns bad.
//!
//! Gentle on registries: a stale password must not lock an account (a kubelet with a stale
//! secret was seen sending 11 failed logins in 60 ms). Each registry is asked once per check
//! with one credential, at most once a minute whatever changes, a failed check is not retried
//! before the next interval, and all checks share a budget of [`MAX_PER_MINUTE`].
//!
//! The series of a pair leave the metrics when its rule leaves the config, and all of them when
//! the checker stops: a last result nobody renews must not keep an alert firing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use crate::config::Config;
use crate::credentials::http::HttpClient;
use crate::image::ImageRef;
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::refresh::jitter;
use crate::registry::{self, Endpoint, Verdict};
use crate::sync::Sources;
use crate::watch::ConfigStore;

/// Checks of all sources and registries, per minute, at most.
pub const MAX_PER_MINUTE: u32 = 30;
/// The least time between two checks of one source against one registry.
pub const MIN_GAP: Duration = Duration::from_secs(60);
const TICK: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// How often each source's credentials are checked against each registry its rules name
    /// (jittered by a tenth; also at start and after every change of a source); 0s: never.
    #[arg(long, env = "PSI_CREDENTIAL_CHECK_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub credential_check_interval: Duration,
    /// This process shares the node's network (a Pod with `hostNetwork`): node-local
    /// registries (`localhost`, loopback addresses, `host.docker.internal` and the like) are
    /// checked like others. Without it their result is `node_local`: from a Pod's own network
    /// those names are not what the kubelet pulls from.
    #[arg(long, env = "PSI_HOST_NETWORK")]
    pub host_network: bool,
}

impl Default for CheckArgs {
    fn default() -> Self {
        Self {
            credential_check_interval: Duration::from_secs(600),
            host_network: false,
        }
    }
}

/// One thing to check: a secret against a registry (a rule's match).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub secret: String,
    /// The rule's match, `host[:port][/path]`: the `registry` label.
    pub registry: String,
    /// The image whose manifest is asked for, or `None` for a login only.
    pub probe_image: Option<String>,
}

pub use crate::registry::result_label;

/// What to check under `config`: every secret against every rule naming it with a concrete
/// host (a glob host names no registry to ask, unless its probe image does).
pub fn targets(config: &Config) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for (i, rule) in config.rules().iter().enumerate() {
        let probe = config.probe_image(i).map(str::to_owned);
        if probe.is_none() && rule.host_labels().any(|(_, literal)| !literal) {
            continue;
        }
        let target = Target {
            secret: rule.secret().to_owned(),
            registry: rule.key(),
            probe_image: probe,
        };
        if !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

impl Target {
    /// The image whose registry is asked: the probe image, or any image of the registry.
    fn image_text(&self) -> String {
        self.probe_image
            .clone()
            .unwrap_or_else(|| format!("{}/probe", self.registry))
    }

    /// Whether the registry asked is node-local ([`registry::is_node_local`]).
    pub fn is_node_local(&self) -> bool {
        let text = self.image_text();
        ImageRef::parse(&text).is_ok_and(|image| registry::is_node_local(&image))
    }
}

/// Checks `target` with the `.dockerconfigjson` (or `.dockercfg`) bytes of its source.
pub async fn check_target(
    http: &HttpClient,
    target: &Target,
    docker_config: &[u8],
) -> (Verdict, Vec<String>) {
    let keyring = match Keyring::from_docker_config(docker_config) {
        Ok(k) => k,
        Err(e) => {
            return (
                Verdict::NoAuthEntry,
                vec![format!("the source is not a docker config: {e}")],
            );
        }
    };
    let image_text = target.image_text();
    let Ok(image) = ImageRef::parse(&image_text) else {
        return (
            Verdict::NoRule,
            vec![format!("{image_text:?} is not an image")],
        );
    };
    let Some(credential) = keyring.lookup(&image).into_iter().next() else {
        return (Verdict::NoAuthEntry, vec![]);
    };
    let mut endpoint = Endpoint {
        http,
        plain_http: false,
    };
    if registry::is_loopback(&image) {
        endpoint.plain_http = !registry::speaks_tls(http, &image).await;
    }
    let check = if target.probe_image.is_some() {
        registry::check(endpoint, &image, Some(credential)).await
    } else {
        registry::login(endpoint, &image, credential).await
    };
    (check.verdict, check.steps)
}

struct Schedule {
    next: Instant,
    last: Option<Instant>,
    /// The source's resourceVersion last checked.
    version: Option<String>,
    result: Option<Verdict>,
}

/// Runs the checks until `stop`.
pub struct Checker {
    namespace: String,
    sources: Sources,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    http: HttpClient,
    interval: Duration,
    min_gap: Duration,
    host_network: bool,
    recorder: Recorder,
}

impl Checker {
    /// Checks the sources in `namespace`, as the sync's watch of them (`sources`) shows them.
    pub fn new(
        client: &Client,
        namespace: String,
        sources: Sources,
        config: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        http: HttpClient,
        args: &CheckArgs,
    ) -> Self {
        Self {
            recorder: crate::kube_client::recorder(client),
            namespace,
            sources,
            config,
            metrics,
            http,
            interval: args.credential_check_interval,
            min_gap: MIN_GAP,
            host_network: args.host_network,
        }
    }

    /// Another least time between two checks of a pair (tests shorten it).
    pub fn with_min_gap(mut self, gap: Duration) -> Self {
        self.min_gap = gap;
        self
    }

    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.interval.is_zero() {
            tracing::info!("credential checks are off (--credential-check-interval 0s)");
            return;
        }
        let mut stop = std::pin::pin!(futures::FutureExt::fuse(stop));
        let mut schedules: HashMap<Target, Schedule> = HashMap::new();
        let budget = budget();
        // Dropped when this task ends, whichever way: the series go with it.
        let _forget = ForgetChecks(&self.metrics);
        loop {
            // Until the sync's watch has listed the sources there is nothing to check.
            if let Some(sources) = self.sources.get() {
                self.round(&sources, &mut schedules, &budget).await;
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = &mut stop => break,
            }
        }
    }

    /// One pass: every target that is due, or whose source changed, within the budget.
    async fn round(
        &self,
        sources: &Store<Secret>,
        schedules: &mut HashMap<Target, Schedule>,
        budget: &DefaultDirectRateLimiter,
    ) {
        let config = self.config.load();
        let targets = targets(&config);
        schedules.retain(|gone, _| {
            if targets.contains(gone) {
                return true;
            }
            // Two probe images of one pair share its series.
            if !targets
                .iter()
                .any(|t| t.secret == gone.secret && t.registry == gone.registry)
            {
                self.metrics
                    .forget_credential_check(&gone.secret, &gone.registry);
            }
            false
        });
        let now = Instant::now();
        for target in targets {
            let schedule = schedules.entry(target.clone()).or_insert(Schedule {
                next: now,
                last: None,
                version: None,
                result: None,
            });
            let source = sources.get(&ObjectRef::new(&target.secret).within(&self.namespace));
            let version = source.as_ref().and_then(|s| s.resource_version());
            let changed = source.is_some() && version != schedule.version;
            let due = now >= schedule.next || changed;
            let too_soon = schedule
                .last
                .is_some_and(|l| now.duration_since(l) < self.min_gap);
            if !due || too_soon {
                continue;
            }
            let Some(source) = source else {
                // The sync reports a missing source; nothing to check yet.
                continue;
            };
            // Dialled from the Pod, a node-local name is the Pod itself: no request (nor any
            // of the budget), and no failure either.
            let node_local = !self.host_network && target.is_node_local();
            if !node_local && budget.check().is_err() {
                break;
            }
            let data = source.data.clone().unwrap_or_default();
            let bytes = data
                .get(".dockerconfigjson")
                .or_else(|| data.get(".dockercfg"))
                .map(|b| b.0.clone())
                .unwrap_or_default();
            let (verdict, steps) = if node_local {
                (Verdict::NodeLocal, Vec::new())
            } else {
                check_target(&self.http, &target, &bytes).await
            };
            schedule.last = Some(Instant::now());
            schedule.version = version;
            // The interval, give or take a tenth.
            schedule.next = Instant::now() + self.interval.mul_f64(0.9) + jitter(self.interval / 5);
            self.metrics.credential_check(
                &target.secret,
                &target.registry,
                verdict,
                SystemTime::now(),
            );
            let previous = schedule.result.replace(verdict);
            if previous != Some(verdict) {
                self.changed(&target, verdict, previous, &steps).await;
            }
        }
    }

    async fn changed(
        &self,
        target: &Target,
        verdict: Verdict,
        previous: Option<Verdict>,
        steps: &[String],
    ) {
        let (secret, registry) = (&target.secret, &target.registry);
        if verdict == Verdict::WouldPull {
            tracing::info!(%secret, %registry, "credential check passes");
            return;
        }
        if verdict == Verdict::NodeLocal {
            tracing::info!(%secret, %registry, "the registry is node-local: not checked from this Pod's network (--host-network when the Pod shares the node's; check-pull on the node checks it)");
            return;
        }
        tracing::warn!(%secret, %registry, result = result_label(verdict), steps = %steps.join("; "), "credential check fails");
        if previous.is_some_and(|p| p != Verdict::WouldPull) {
            return;
        }
        crate::kube_client::warn_on_secret(
            &self.recorder,
            (&self.namespace, secret),
            ("PullCredentialFailed", "Check"),
            format!(
                "the credentials of {secret} fail against {registry}: {verdict} (check-pull shows the steps)"
            ),
        )
        .await;
    }
}

/// The shared budget of all checks: at most [`MAX_PER_MINUTE`] in any minute, one at a time at
/// even gaps. (A GCRA that allows a burst of `n` lets `n` more through within the same minute,
/// so a burst would lower the sustained rate below the budget.)
fn budget() -> DefaultDirectRateLimiter {
    RateLimiter::direct(budget_quota())
}

fn budget_quota() -> Quota {
    let per_minute = NonZeroU32::new(MAX_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN)
}

/// Removes every check series when dropped.
struct ForgetChecks<'a>(&'a Metrics);

impl Drop for ForgetChecks<'_> {
    fn drop(&mut self) {
        self.0.forget_credential_checks();
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn the_budget_allows_at_most_its_number_in_any_minute_and_about_that_many_each_minute() {
        let clock = FakeRelativeClock::default();
        let budget = RateLimiter::direct_with_clock(budget_quota(), clock.clone());
        // Always more checks due than the budget allows, looked at every 100 ms for ten
        // minutes.
        let step = Duration::from_millis(100);
        let mut allowed: Vec<Duration> = Vec::new();
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(600) {
            while budget.check().is_ok() {
                allowed.push(now);
            }
            clock.advance(step);
            now += step;
        }
        for (i, start) in allowed.iter().enumerate() {
            let within = allowed[i..]
                .iter()
                .take_while(|at| **at < *start + Duration::from_secs(60))
                .count();
            assert!(
                within <= MAX_PER_MINUTE as usize,
                "{within} checks in the minute from {start:?}"
            );
        }
        // Not stingier than it must be: the whole budget every minute.
        let per_minute = allowed.len() / 10;
        assert!(
            per_minute + 1 >= MAX_PER_MINUTE as usize,
            "{} in ten minutes",
            allowed.len()
        );
    }
}
