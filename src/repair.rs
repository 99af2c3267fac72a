//! Repair: Pods admitted without their secret (the webhook was down under `failurePolicy:
//! Ignore`, the namespace opted in later, the chart came later) stay in `ImagePullBackOff` for
//! ever, since `imagePullSecrets` cannot change after creation. The repairer evicts such a
//! Pod, through the Eviction API so PodDisruptionBudgets hold, when its controller will
//! recreate it and the webhook will then inject the secret.
//!
//! A Pod is evicted only when all of these hold:
//! - its namespace opted in, and the Pod did not opt out;
//! - a container or init container waits with `ErrImagePull` or `ImagePullBackOff`;
//! - that image matches a rule whose secret the Pod lacks, and the copy of that secret
//!   exists in the namespace (otherwise the new Pod would fail the same way: wait);
//! - a ReplicaSet, StatefulSet, DaemonSet or Job controls it;
//! - it is not the replacement of a Pod we evicted (then the webhook did not inject: we stop
//!   rather than evict in a loop).
//!
//! A stuck Pod that fails any of the others (bare, no rule explains it, it has the secret and
//! so the credentials are wrong) is left alone with an Event that says why, once. Evictions are
//! rate-limited overall and per namespace, each Pod is evicted at most once (by uid, with a uid
//! precondition), and a Pod another replica evicted first is simply gone.
//!
//! [`assess`] is the pure part: the Pod and the config in, what to do out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{NotUntil, RateLimiter};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod, Secret};
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    DeleteOptions, ObjectMeta, Preconditions as K8sPreconditions,
};
use kube::api::{Api, PartialObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::time::Instant;

use crate::config::Config;
use crate::image::ImageRef;
use crate::kube_client::{DirectLimiter, KeyedLimiter, TokioClock, per_minute, record_event};
use crate::metrics::Metrics;
use crate::names::{INJECT_LABEL, INJECT_LABEL_VALUE, MIRROR_ANNOTATION, SKIP_ANNOTATION};
use crate::watch::ConfigStore;

/// The Event reason on a Pod the repairer evicted or left alone, and on its owner.
pub const EVENT_REASON: &str = "PullSecretRepair";
/// Waiting reasons of a container whose image cannot be pulled.
const PULL_FAILURES: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];
/// Controllers that recreate an evicted Pod.
const RECREATING_OWNERS: [&str; 4] = ["ReplicaSet", "StatefulSet", "DaemonSet", "Job"];
/// How soon a Pod that may become repairable (its copy missing, the rate limit reached, a
/// PodDisruptionBudget in the way) is looked at again.
const RETRY: Duration = Duration::from_secs(30);
/// How long what the repairer remembers of a Pod is kept.
const MEMORY: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Args)]
pub struct RepairArgs {
    /// Evict Pods stuck in ImagePullBackOff for want of a secret the webhook would now inject,
    /// so their controller recreates them with it (needs pods list/watch and pods/eviction).
    #[arg(long = "repair", env = "PSI_REPAIR")]
    pub enabled: bool,
    /// Evictions per minute at most, over all namespaces (per replica).
    #[arg(long, env = "PSI_REPAIR_MAX_PER_MINUTE", default_value_t = 30)]
    pub repair_max_per_minute: u32,
    /// Evictions per minute at most in one namespace (per replica).
    #[arg(
        long,
        env = "PSI_REPAIR_MAX_PER_NAMESPACE_PER_MINUTE",
        default_value_t = 5
    )]
    pub repair_max_per_namespace_per_minute: u32,
}

impl Default for RepairArgs {
    fn default() -> Self {
        Self {
            enabled: false,
            repair_max_per_minute: 30,
            repair_max_per_namespace_per_minute: 5,
        }
    }
}

/// What to do with one Pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Not stuck pulling, opted out, or a mirror pod: nothing to do or say.
    Nothing,
    /// Stuck for want of `missing`; `owner` will recreate it.
    Evict {
        missing: Vec<String>,
        owner: OwnerReference,
    },
    /// Stuck, but an eviction would not help.
    Leave(Leave),
}

/// Why a stuck Pod is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leave {
    /// No controller would recreate it (none, or one of another kind).
    BarePod { owner_kind: Option<String> },
    /// No rule matches the images it cannot pull.
    NoRule { images: Vec<String> },
    /// It has every secret the rules give its images: the credentials are wrong, not missing.
    HasSecrets { secrets: Vec<String> },
    /// It replaced a Pod we evicted and still lacks the secret: the webhook did not inject.
    ReplacementLacksSecret { missing: Vec<String> },
}

impl Leave {
    /// The `result` label of the repairs metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::BarePod { .. } => "bare_pod",
            Self::NoRule { .. } => "no_rule",
            Self::HasSecrets { .. } => "has_secrets",
            Self::ReplacementLacksSecret { .. } => "replacement_lacks_secret",
        }
    }

    fn note(&self) -> String {
        match self {
            Self::BarePod { owner_kind: None } => "the Pod cannot pull its image without a pull secret it lacks, but no controller would recreate it: not evicted; delete and recreate it to get the secret".to_owned(),
            Self::BarePod { owner_kind: Some(kind) } => format!("the Pod cannot pull its image without a pull secret it lacks, but its controller ({kind}) is not one known to recreate it: not evicted; delete and recreate it to get the secret"),
            Self::NoRule { images } => format!("no pullsecret-injector rule matches the image(s) it cannot pull ({}): not evicted", images.join(", ")),
            Self::HasSecrets { secrets } => format!("the Pod already has the pull secret(s) its rules give ({}): the credentials are wrong or lack access, not missing; not evicted", secrets.join(", ")),
            Self::ReplacementLacksSecret { missing } => format!("the Pod replaced one evicted for lacking {} and lacks it too: the webhook did not inject it (is it reachable?); not evicted again", missing.join(", ")),
        }
    }
}

/// Decides what to do with `pod` under `config`, from the Pod alone.
pub fn assess(config: &Config, pod: &Pod) -> Verdict {
    let annotations = pod.annotations();
    let skip = annotations
        .get(SKIP_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if skip || annotations.contains_key(MIRROR_ANNOTATION) {
        return Verdict::Nothing;
    }
    let stuck = stuck_images(pod);
    if stuck.is_empty() {
        return Verdict::Nothing;
    }
    let parsed: Vec<ImageRef<'_>> = stuck
        .iter()
        .filter_map(|i| ImageRef::parse(i).ok())
        .collect();
    let needed = config.secrets_for(&parsed);
    if needed.is_empty() {
        return Verdict::Leave(Leave::NoRule {
            images: stuck.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    let has: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.as_str())
        .collect();
    let missing: Vec<String> = needed
        .iter()
        .filter(|s| !has.contains(s))
        .map(|s| (*s).to_owned())
        .collect();
    if missing.is_empty() {
        return Verdict::Leave(Leave::HasSecrets {
            secrets: needed.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    let controller = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if RECREATING_OWNERS.contains(&owner.kind.as_str()) => Verdict::Evict {
            missing,
            owner: owner.clone(),
        },
        other => Verdict::Leave(Leave::BarePod {
            owner_kind: other.map(|o| o.kind.clone()),
        }),
    }
}

/// The images of the Pod's containers and init containers that wait on a failed pull.
fn stuck_images(pod: &Pod) -> Vec<&str> {
    let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else {
        return Vec::new();
    };
    let statuses = [&status.init_container_statuses, &status.container_statuses];
    let containers = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
    };
    let mut out = Vec::new();
    for cs in statuses.into_iter().flatten().flatten() {
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
        let reason = waiting
            .and_then(|w| w.reason.as_deref())
            .unwrap_or_default();
        if !PULL_FAILURES.contains(&reason) {
            continue;
        }
        // The spec's image is what the webhook saw; the status may show it normalized.
        let image = containers()
            .find(|c| c.name == cs.name)
            .and_then(|c| c.image.as_deref())
            .unwrap_or(cs.image.as_str());
        if !out.contains(&image) {
            out.push(image);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What the repairer remembers, and its handles.
pub struct Repairer {
    client: Client,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The Pending Pods the controller watches.
    pods: Store<Pod>,
    /// Evictions over all namespaces: `--repair-max-per-minute`, the whole minute's worth
    /// at once if need be.
    overall: DirectLimiter,
    /// Evictions per namespace: `--repair-max-per-namespace-per-minute`.
    per_namespace: KeyedLimiter<String>,
    clock: TokioClock,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Pods decided for good (evicted, gone, or left with an Event), by uid.
    done: HashMap<String, Instant>,
    /// Owners we evicted a Pod of, by uid: when, and the uids of the Pods they had then. A
    /// Pod of theirs not among those is a replacement.
    evicted_owners: HashMap<String, (Instant, HashSet<String>)>,
    last_prune: Option<Instant>,
}

impl Repairer {
    pub fn new(
        client: Client,
        config: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        namespaces: Store<PartialObjectMeta<Namespace>>,
        pods: Store<Pod>,
        args: RepairArgs,
    ) -> Self {
        let clock = TokioClock::default();
        let overall = per_minute(args.repair_max_per_minute);
        let per_namespace = per_minute(args.repair_max_per_namespace_per_minute);
        Self {
            recorder: crate::kube_client::recorder(&client),
            client,
            config,
            metrics,
            namespaces,
            pods,
            overall: RateLimiter::direct_with_clock(overall, clock.clone()),
            per_namespace: RateLimiter::new(
                per_namespace,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            clock,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn opted_in(&self, namespace: &str) -> bool {
        let key = reflector::ObjectRef::new(namespace);
        self.namespaces.get(&key).is_some_and(|ns| {
            ns.labels().get(INJECT_LABEL).map(String::as_str) == Some(INJECT_LABEL_VALUE)
        })
    }

    /// Takes an eviction token for `namespace`, or says how long until one is there.
    ///
    /// The namespace's limit is asked first, so a namespace at its limit takes nothing from
    /// the others'; a namespace's eviction refused by the overall limit still counts against
    /// that namespace (governor cannot give a cell back): it errs towards fewer evictions.
    fn take_token(&self, namespace: &str) -> Result<(), Duration> {
        let now = self.clock.now();
        let wait = |not_until: NotUntil<Nanos>| not_until.wait_time_from(now);
        self.per_namespace
            .check_key(&namespace.to_owned())
            .map_err(wait)?;
        self.overall.check().map_err(wait)
    }

    /// Forgets what is older than [`MEMORY`], and the namespaces whose eviction budget is
    /// full again, at most once a minute.
    fn prune(&self, st: &mut State, now: Instant) {
        if st
            .last_prune
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        st.last_prune = Some(now);
        let fresh = |at: &mut Instant| now.duration_since(*at) < MEMORY;
        st.done.retain(|_, at| fresh(at));
        st.evicted_owners.retain(|_, (at, _)| fresh(at));
        self.per_namespace.retain_recent();
    }

    async fn event(&self, type_: EventType, action: &str, note: String, pod: &Pod) {
        let reference = pod.object_ref(&());
        let what = (EVENT_REASON, action);
        record_event(&self.recorder, &reference, None, type_, what, note).await;
    }

    async fn owner_event(&self, note: String, pod: &Pod, owner: &OwnerReference) {
        let reference = ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: pod.namespace(),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        };
        let related = Some(pod.object_ref(&()));
        let what = (EVENT_REASON, "Evict");
        record_event(
            &self.recorder,
            &reference,
            related,
            EventType::Normal,
            what,
            note,
        )
        .await;
    }

    async fn leave(&self, pod: &Pod, uid: &str, why: Leave) -> Action {
        self.state().done.insert(uid.to_owned(), Instant::now());
        self.metrics.repair(why.metric_label());
        tracing::info!(
            namespace = pod.namespace().unwrap_or_default(),
            pod = pod.name_any(),
            reason = why.metric_label(),
            "stuck Pod left alone"
        );
        self.event(EventType::Warning, "Skip", why.note(), pod)
            .await;
        Action::await_change()
    }
}

/// Looks at one Pod; evicts it when that repairs it.
pub async fn reconcile(pod: Arc<Pod>, repairer: Arc<Repairer>) -> Result<Action, Error> {
    let (Some(uid), Some(namespace)) = (pod.uid(), pod.namespace()) else {
        return Ok(Action::await_change());
    };
    let now = Instant::now();
    {
        let mut st = repairer.state();
        repairer.prune(&mut st, now);
        if st.done.contains_key(&uid) {
            return Ok(Action::await_change());
        }
    }
    if !repairer.opted_in(&namespace) {
        return Ok(Action::await_change());
    }
    let verdict = assess(&repairer.config.load(), &pod);
    let (missing, owner) = match verdict {
        Verdict::Nothing => return Ok(Action::await_change()),
        Verdict::Leave(why) => return Ok(repairer.leave(&pod, &uid, why).await),
        Verdict::Evict { missing, owner } => (missing, owner),
    };
    let replaced = repairer
        .state()
        .evicted_owners
        .get(&owner.uid)
        .is_some_and(|(_, siblings)| !siblings.contains(&uid));
    if replaced {
        let why = Leave::ReplacementLacksSecret { missing };
        return Ok(repairer.leave(&pod, &uid, why).await);
    }

    // The new Pod needs the copies, or it fails the same way.
    let secrets: Api<Secret> = Api::namespaced(repairer.client.clone(), &namespace);
    for name in &missing {
        if secrets.get_metadata_opt(name).await?.is_none() {
            tracing::debug!(%namespace, pod = pod.name_any(), secret = %name, "copy not there yet; repair waits");
            return Ok(Action::requeue(RETRY));
        }
    }
    if let Err(wait) = repairer.take_token(&namespace) {
        repairer.metrics.repair("rate_limited");
        return Ok(Action::requeue(wait.max(Duration::from_secs(1))));
    }

    let name = pod.name_any();
    match evict(&repairer.client, &namespace, &name, &uid).await {
        Ok(_) => {}
        // Gone already (another replica evicted it), or replaced under the same name.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            repairer.state().done.insert(uid, now);
            repairer.metrics.repair("gone");
            return Ok(Action::await_change());
        }
        // A PodDisruptionBudget allows no disruption now.
        Err(kube::Error::Api(status)) if status.code == 429 => {
            repairer.metrics.repair("blocked");
            return Ok(Action::requeue(RETRY));
        }
        Err(error) => return Err(error.into()),
    }
    let siblings = repairer
        .pods
        .state()
        .iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == owner.uid))
        .filter_map(|p| p.uid())
        .collect();
    {
        let mut st = repairer.state();
        st.done.insert(uid, now);
        st.evicted_owners.insert(owner.uid.clone(), (now, siblings));
    }
    repairer.metrics.repair("evicted");
    let secrets = missing.join(", ");
    tracing::info!(%namespace, pod = %name, owner = %format!("{}/{}", owner.kind, owner.name), secrets = %secrets, "evicted a Pod that lacked its pull secret");
    let note = format!(
        "evicted: the Pod cannot pull its image without {secrets}, which it was created without; its {} recreates it and the webhook injects the secret",
        owner.kind
    );
    repairer
        .event(EventType::Normal, "Evict", note.clone(), &pod)
        .await;
    let note = format!("evicted Pod {name}, which lacked the pull secret(s) {secrets}");
    repairer.owner_event(note, &pod, &owner).await;
    Ok(Action::await_change())
}

/// Evicts `namespace/name` if its uid is still `uid`. A `policy/v1` Eviction written out:
/// kube's `Api::evict` sends its delete options as `delete_options`, which the API server
/// ignores, and the uid precondition with them.
async fn evict(client: &Client, namespace: &str, name: &str, uid: &str) -> kube::Result<()> {
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            // Never another Pod of the same name (a StatefulSet's replacement).
            preconditions: Some(K8sPreconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let _: kube::core::Status = pods
        .create_subresource("eviction", name, &PostParams::default(), &eviction)
        .await?;
    Ok(())
}

pub fn error_policy(_pod: Arc<Pod>, error: &Error, repairer: Arc<Repairer>) -> Action {
    tracing::warn!(%error, "repair failed; retrying");
    repairer.metrics.repair("error");
    Action::requeue(RETRY)
}

/// Runs the repairer until `stop` completes: Pending Pods, cluster-wide, each looked at when it
/// changes; opted-in namespaces from a label-selected watch, every Pod looked at again when
/// one changes.
pub async fn run(
    client: Client,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    args: RepairArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let selector = format!("{INJECT_LABEL}={INJECT_LABEL_VALUE}");
    let namespace_changes = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects()
    .filter_map(|ns| futures::future::ready(ns.ok().map(|_| ())));

    // A Pod stuck pulling is Pending; the field selector keeps the rest off the wire.
    let pods = Api::<Pod>::all(client.clone());
    let pod_config = watcher::Config::default().fields("status.phase=Pending");
    let controller = Controller::new(pods, pod_config);
    let repairer = Repairer::new(
        client,
        config,
        metrics,
        namespaces,
        controller.store(),
        args,
    );
    tracing::info!("repair of Pods admitted without their pull secret starting");
    controller
        .reconcile_all_on(namespace_changes)
        .graceful_shutdown_on(futures::FutureExt::shared(stop))
        .run(reconcile, error_policy, Arc::new(repairer))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "repair controller event");
            }
        })
        .await;
    tracing::info!("repair stopped");
}
