//! Keeps each minted secret's source (the Secret of its name in the injector's namespace)
//! holding credentials that work: minted at start, renewed at a fraction of their lifetime
//! (`--credential-renew-at`, half by default), written in place by server-side apply, so the
//! sync carries the same new bytes to every copy.
//!
//! Several replicas do not stampede the provider: each reads the source first, and one that
//! finds credentials minted within the renewal period waits (the renewal point is jittered by
//! a tenth, so two replicas rarely meet). A failed renewal is retried with backoff while the
//! last good credentials stay in force; once they are past nine tenths of their lifetime the
//! failure is logged as an error, counted, and reported by an Event on the source Secret.
//!
//! A secret's expiry and renewal series leave the metrics when it is no longer minted, and all
//! of them when the refresher stops: a dead expiry time must not fire the expiry alert.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBackoff, ExponentialBuilder};
use clap::Args;
use futures::FutureExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Client, ResourceExt};
use tokio::time::Instant;

use crate::config::Config;
use crate::credentials::http::HttpClient;
use crate::credentials::{KeyRef, MintEnv, MintError, Minted, Source, mint};
use crate::metrics::Metrics;
use crate::names::{
    APP_NAME, CREDENTIAL_SOURCE_ANNOTATION, DOCKER_CONFIG_JSON, EXPIRES_AT_ANNOTATION,
    FIELD_MANAGER, MANAGED_BY_LABEL, MINTED_AT_ANNOTATION,
};
use crate::watch::ConfigStore;

/// The metadata server's address on GKE and GCE.
pub const METADATA_HOST: &str = "metadata.google.internal";
/// First retry after a failed renewal, plus up to as much again in jitter; doubled from there
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Retries of failed renewals: jitter adds up to the delay itself, so the delay before jitter
/// stops at half of [`MAX_BACKOFF`]; never gives up.
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(FIRST_BACKOFF)
    .with_max_delay(Duration::from_secs(MAX_BACKOFF.as_secs() / 2))
    .with_factor(2.0)
    .with_jitter()
    .without_max_times();
/// Longest sleep of the loop, so a config change or clock jump is seen soon enough.
const MAX_SLEEP: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Args)]
pub struct CredentialArgs {
    /// Renew minted credentials once this fraction of their lifetime has passed (0.1 to 0.9).
    #[arg(long, env = "PSI_CREDENTIAL_RENEW_AT", default_value_t = 0.5, value_parser = parse_fraction)]
    pub credential_renew_at: f64,
    /// Longest time a credential provider plugin may run.
    #[arg(long, env = "PSI_CREDENTIAL_PLUGIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub credential_plugin_timeout: Duration,
    /// Address of the GCP metadata server (for gcpWorkloadIdentity).
    #[arg(long, env = "PSI_GCP_METADATA_HOST", default_value = METADATA_HOST)]
    pub gcp_metadata_host: String,
}

impl Default for CredentialArgs {
    fn default() -> Self {
        Self {
            credential_renew_at: 0.5,
            credential_plugin_timeout: Duration::from_secs(30),
            gcp_metadata_host: METADATA_HOST.to_owned(),
        }
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.1..=0.9).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0.1 and 0.9"))
    }
}

/// What one refresh found or did.
#[derive(Debug)]
pub enum Outcome {
    /// Credentials were minted and written.
    Minted {
        minted_at: SystemTime,
        minted: Minted,
    },
    /// The source already held fresh credentials (another replica, or an earlier run).
    Fresh {
        minted_at: SystemTime,
        expires_at: SystemTime,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Mint(#[from] MintError),
    #[error(
        "Secret {namespace}/{name} exists and is not managed by pullsecret-injector: not overwritten"
    )]
    Foreign { namespace: String, name: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl RefreshError {
    /// The `result` label of the refresh metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Mint(e) => e.metric_label(),
            Self::Foreign { .. } => "conflict",
            Self::Kube(_) => "api_error",
        }
    }
}

/// Mints and renews every minted secret of the config.
pub struct Refresher {
    client: Client,
    namespace: String,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    http: HttpClient,
    args: CredentialArgs,
    recorder: Recorder,
}

struct Schedule {
    next: Instant,
    /// The retries after the failures in a row so far; none after a success.
    backoff: Option<ExponentialBackoff>,
    /// When the credentials in force were minted and expire, as last seen.
    in_force: Option<(SystemTime, SystemTime)>,
}

impl Refresher {
    pub fn new(
        client: Client,
        namespace: String,
        config: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        http: HttpClient,
        args: CredentialArgs,
    ) -> Self {
        Self {
            recorder: crate::kube_client::recorder(&client),
            client,
            namespace,
            config,
            metrics,
            http,
            args,
        }
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Runs until `stop` completes.
    pub async fn run(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stop = std::pin::pin!(stop.fuse());
        let mut config_rx = self.config.subscribe();
        let mut schedules: HashMap<String, Schedule> = HashMap::new();
        // Dropped when this task ends, whichever way: the series go with it.
        let _forget = ForgetMinted(&self.metrics);
        loop {
            let config = self.config.load();
            let minted: Vec<(String, Source)> = config
                .minted()
                .map(|(name, source)| (name.to_owned(), source.clone()))
                .collect();
            schedules.retain(|name, _| {
                let keep = minted.iter().any(|(n, _)| n == name);
                if !keep {
                    self.metrics.forget_minted(name);
                }
                keep
            });
            let now = Instant::now();
            for (name, source) in &minted {
                let schedule = schedules.entry(name.clone()).or_insert(Schedule {
                    next: now,
                    backoff: None,
                    in_force: None,
                });
                if schedule.next > now {
                    continue;
                }
                let keys = config.registry_keys(name);
                match self.refresh(name, source, &keys).await {
                    Ok(outcome) => {
                        let in_force = match outcome {
                            Outcome::Minted { minted_at, minted } => {
                                self.metrics.credential_refresh(name, "success");
                                tracing::info!(secret = %name, source = source.kind(), registries = minted.auths.len(), expires_at = %humantime::format_rfc3339_seconds(minted.expires_at), "credentials minted");
                                (minted_at, minted.expires_at)
                            }
                            Outcome::Fresh {
                                minted_at,
                                expires_at,
                            } => (minted_at, expires_at),
                        };
                        self.metrics.credential_expiry(name, in_force.1);
                        schedule.backoff = None;
                        schedule.in_force = Some(in_force);
                        schedule.next = Instant::now() + self.renew_after(in_force);
                    }
                    Err(error) => {
                        self.metrics.credential_refresh(name, error.metric_label());
                        let backoff = schedule
                            .backoff
                            .get_or_insert_with(|| BACKOFF.build())
                            .next()
                            .unwrap_or(MAX_BACKOFF);
                        schedule.next = Instant::now() + backoff;
                        self.failed(name, source, &error, schedule.in_force).await;
                    }
                }
            }
            let wake = schedules
                .values()
                .map(|s| s.next)
                .min()
                .unwrap_or(now + MAX_SLEEP)
                .min(Instant::now() + MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                changed = config_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = &mut stop => return,
            }
        }
    }

    /// When to look again after a success: at the renewal point of what is in force, jittered
    /// by up to a tenth of the lifetime so replicas rarely renew at once.
    fn renew_after(&self, (minted_at, expires_at): (SystemTime, SystemTime)) -> Duration {
        let Ok(lifetime) = expires_at.duration_since(minted_at) else {
            // Expired when minted (a provider's clock, an emulator): do not hammer it.
            tracing::warn!(expires_at = %humantime::format_rfc3339_seconds(expires_at), "minted credentials were already expired; trying again in five minutes");
            return MAX_BACKOFF;
        };
        let point =
            minted_at + lifetime.mul_f64(self.args.credential_renew_at) + jitter(lifetime / 10);
        point
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }

    /// One look at `name`: mint unless the source holds credentials minted within the renewal
    /// period; write them.
    pub async fn refresh(
        &self,
        name: &str,
        source: &Source,
        keys: &[String],
    ) -> Result<Outcome, RefreshError> {
        let api = self.secrets();
        let existing = api.get_opt(name).await?;
        if let Some(existing) = &existing {
            if existing.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(APP_NAME) {
                return Err(RefreshError::Foreign {
                    namespace: self.namespace.clone(),
                    name: name.to_owned(),
                });
            }
            if let Some((minted_at, expires_at)) = self.still_fresh(existing, source) {
                return Ok(Outcome::Fresh {
                    minted_at,
                    expires_at,
                });
            }
        }
        let read_key = |key: &KeyRef| self.read_key(key).boxed();
        let env = MintEnv {
            read_key: &read_key,
            http: &self.http,
            metadata_host: &self.args.gcp_metadata_host,
            plugin_timeout: self.args.credential_plugin_timeout,
        };
        let minted_at = SystemTime::now();
        let minted = mint(source, keys, &env).await?;
        let secret = minted_secret(name, &self.namespace, source, &minted, minted_at);
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
        Ok(Outcome::Minted { minted_at, minted })
    }

    /// When `existing`'s credentials were minted and expire, if `source` minted them and they
    /// are before their renewal point.
    fn still_fresh(&self, existing: &Secret, source: &Source) -> Option<(SystemTime, SystemTime)> {
        let annotations = existing.annotations();
        if annotations
            .get(CREDENTIAL_SOURCE_ANNOTATION)
            .map(String::as_str)
            != Some(source.kind())
        {
            return None;
        }
        let time = |key: &str| humantime::parse_rfc3339(annotations.get(key)?).ok();
        let (minted_at, expires_at) = (time(MINTED_AT_ANNOTATION)?, time(EXPIRES_AT_ANNOTATION)?);
        let lifetime = expires_at.duration_since(minted_at).ok()?;
        let renew_at = minted_at + lifetime.mul_f64(self.args.credential_renew_at);
        (SystemTime::now() < renew_at).then_some((minted_at, expires_at))
    }

    fn read_key(
        &self,
        key: &KeyRef,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, MintError>> + Send + 'static {
        let api = self.secrets();
        let key = key.clone();
        let namespace = self.namespace.clone();
        async move {
            let secret = api
                .get_opt(&key.secret)
                .await
                .map_err(|e| {
                    MintError::Key(format!(
                        "cannot read Secret {namespace}/{}: {e}",
                        key.secret
                    ))
                })?
                .ok_or_else(|| {
                    MintError::Key(format!("Secret {namespace}/{} does not exist", key.secret))
                })?;
            secret
                .data
                .and_then(|mut d| d.remove(&key.key))
                .map(|ByteString(b)| b)
                .ok_or_else(|| {
                    MintError::Key(format!(
                        "Secret {namespace}/{} has no key {:?}",
                        key.secret, key.key
                    ))
                })
        }
    }

    /// Logs a failed renewal: a warning while the credentials in force have time left, an
    /// error and an Event on the source once they are in their last tenth (or gone).
    async fn failed(
        &self,
        name: &str,
        source: &Source,
        error: &RefreshError,
        in_force: Option<(SystemTime, SystemTime)>,
    ) {
        let expires_at = in_force.map(|(_, e)| e);
        // Urgent in the last tenth of the lifetime, and at least the last ten minutes.
        let urgent = in_force.is_none_or(|(minted_at, expires_at)| {
            let lifetime = expires_at.duration_since(minted_at).unwrap_or_default();
            let left = expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            left < (lifetime / 10).max(Duration::from_secs(600))
        });
        if !urgent {
            tracing::warn!(secret = %name, source = source.kind(), %error, "renewing the credentials failed; retrying, the current ones stay in force");
            return;
        }
        let until = expires_at.map_or_else(
            || "no credentials are in force".to_owned(),
            |e| {
                format!(
                    "the credentials in force expire at {}",
                    humantime::format_rfc3339_seconds(e)
                )
            },
        );
        tracing::error!(secret = %name, source = source.kind(), %error, "renewing the credentials failed and {until}");
        crate::kube_client::warn_on_secret(
            &self.recorder,
            (&self.namespace, name),
            ("PullCredentialRefreshFailed", "Refresh"),
            format!(
                "minting {name} from its {} source failed ({error}); {until}",
                source.kind()
            ),
        )
        .await;
    }
}

/// The source Secret of a minted secret, as written to the injector's namespace.
pub fn minted_secret(
    name: &str,
    namespace: &str,
    source: &Source,
    minted: &Minted,
    minted_at: SystemTime,
) -> Secret {
    let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                APP_NAME.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (
                    CREDENTIAL_SOURCE_ANNOTATION.to_owned(),
                    source.kind().to_owned(),
                ),
                (MINTED_AT_ANNOTATION.to_owned(), rfc3339(minted_at)),
                (EXPIRES_AT_ANNOTATION.to_owned(), rfc3339(minted.expires_at)),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_JSON.to_owned()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(minted.docker_config_json()),
        )])),
        ..Secret::default()
    }
}

/// A random time in `[0, spread)`, to spread apart what replicas started together would do at
/// once: backon's jitter (a constant delay `d` with jitter waits `d` plus up to `d`).
pub fn jitter(spread: Duration) -> Duration {
    // Far beyond any real spread; keeps `d + d` from overflowing.
    let spread = spread.min(Duration::MAX / 4);
    let waited = ConstantBuilder::new()
        .with_delay(spread)
        .with_jitter()
        .build()
        .next()
        .unwrap_or(spread);
    waited.saturating_sub(spread)
}

/// Removes every minted secret's series when dropped.
struct ForgetMinted<'a>(&'a Metrics);

impl Drop for ForgetMinted<'_> {
    fn drop(&mut self) {
        self.0.forget_all_minted();
    }
}

/// Mints once for `name` under `config`, for the `token` command.
pub async fn mint_once(
    config: &Config,
    name: &str,
    env: &MintEnv<'_>,
) -> Result<Minted, RefreshError> {
    let source = config.source(name).ok_or_else(|| {
        MintError::Other(format!(
            "the config has no credential source for {name:?} (its `secrets:` map)"
        ))
    })?;
    let keys = config.registry_keys(name);
    Ok(mint(source, &keys, env).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_within_its_bound() {
        let spread = Duration::from_secs(60);
        let draws: Vec<Duration> = (0..200).map(|_| jitter(spread)).collect();
        assert!(draws.iter().all(|d| *d < spread), "{draws:?}");
        // Spread out, not one value: replicas started together must not act together.
        let early = draws.iter().filter(|d| **d < spread / 2).count();
        assert!(
            (40..=160).contains(&early),
            "{early} of 200 in the first half"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        assert!(jitter(Duration::MAX) < Duration::MAX);
    }

    #[test]
    fn renewal_retries_back_off_from_five_seconds_to_five_minutes() {
        let delays: Vec<Duration> = BACKOFF.build().take(20).collect();
        assert_eq!(delays.len(), 20, "never gives up");
        // Doubling from 5 s, each plus up to as much again, never past five minutes.
        let mut base = FIRST_BACKOFF;
        for delay in &delays {
            assert!((base..base * 2).contains(delay), "{base:?}: {delays:?}");
            assert!(*delay < MAX_BACKOFF, "{delays:?}");
            base = (base * 2).min(MAX_BACKOFF / 2);
        }
    }
}
