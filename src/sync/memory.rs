//! What the sync remembers between reconciles: which copies it last saw as its own and
//! current, and when each namespace is read back next. With it a reconcile that has nothing
//! to do sends no request (watch restarts, config reloads and source changes reconcile every
//! namespace), a rotation is one write per copy, and the periodic read-back of every copy is
//! spread evenly over the resync interval instead of coming all at once.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tokio::time::Instant;

/// How far the lean between "unknown copies exist" and "are absent" may go (see
/// [`Memory::create_first`]).
const LEAN_LIMIT: i32 = 8;

/// A copy as the sync last saw it: its own, and current for the source of this fingerprint.
/// Kept small: there is one per copy, thousands of them. The resourceVersion alone serves as
/// the precondition of a write or a delete (a recreated object never has the same one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub resource_version: Box<str>,
    /// [`fingerprint`] of the source hash the copy carries.
    pub source: u64,
}

impl Known {
    pub fn of(secret: &Secret, source_hash: &str) -> Self {
        Self {
            resource_version: secret.resource_version().unwrap_or_default().into(),
            source: fingerprint(source_hash),
        }
    }
}

/// A short stand-in for a `sha256:` source hash: comparing it decides whether a known copy
/// needs a write. A collision would only postpone that write to the next read-back, which
/// compares the full annotation.
pub fn fingerprint(source_hash: &str) -> u64 {
    let mut h = DefaultHasher::new();
    source_hash.hash(&mut h);
    h.finish()
}

#[derive(Debug, Default)]
struct Namespace {
    /// By secret name; the names are shared with every other namespace (see [`Memory::name`]).
    copies: Vec<(Arc<str>, Known)>,
    verified_at: Option<Instant>,
    /// Not opted in, and known to hold none of our copies.
    clean: bool,
}

/// Why a namespace's copies are read back now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Never read since this process started.
    Start,
    /// Its slot in the resync interval came.
    Resync,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Resync => "resync",
        }
    }
}

#[derive(Debug)]
pub struct Memory {
    origin: Instant,
    resync: Duration,
    namespaces: Mutex<HashMap<Box<str>, Namespace>>,
    /// One allocation per configured secret name, not one per copy.
    names: Mutex<HashSet<Arc<str>>>,
    /// Positive while most unknown copies probed were absent, negative while most existed.
    lean: AtomicI32,
}

impl Memory {
    pub fn new(resync: Duration) -> Self {
        Self {
            origin: Instant::now(),
            resync: resync.max(Duration::from_secs(1)),
            namespaces: Mutex::default(),
            names: Mutex::default(),
            lean: AtomicI32::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Namespace>> {
        // A panic elsewhere must not stop the sync: at worst a copy is read once more.
        self.namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn known(&self, ns: &str, secret: &str) -> Option<Known> {
        self.lock()
            .get(ns)?
            .copies
            .iter()
            .find(|(name, _)| &**name == secret)
            .map(|(_, known)| known.clone())
    }

    /// Every copy known in `ns`.
    pub fn copies(&self, ns: &str) -> Vec<(String, Known)> {
        self.lock()
            .get(ns)
            .map(|n| {
                n.copies
                    .iter()
                    .map(|(name, known)| (name.to_string(), known.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn name(&self, secret: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = names.get(secret) {
            return name.clone();
        }
        let name: Arc<str> = secret.into();
        names.insert(name.clone());
        name
    }

    pub fn remember(&self, ns: &str, secret: &str, known: Known) {
        let name = self.name(secret);
        let mut all = self.lock();
        let entry = all.entry(ns.into()).or_default();
        entry.clean = false;
        match entry.copies.iter_mut().find(|(n, _)| **n == *secret) {
            Some((_, slot)) => *slot = known,
            None => entry.copies.push((name, known)),
        }
    }

    pub fn forget(&self, ns: &str, secret: &str) {
        if let Some(entry) = self.lock().get_mut(ns) {
            entry.copies.retain(|(name, _)| &**name != secret);
        }
    }

    pub fn forget_namespace(&self, ns: &str) {
        self.lock().remove(ns);
    }

    /// Whether `ns` is known to hold none of our copies.
    pub fn is_clean(&self, ns: &str) -> bool {
        self.lock().get(ns).is_some_and(|n| n.clean)
    }

    pub fn set_clean(&self, ns: &str, now: Instant) {
        let mut all = self.lock();
        let entry = all.entry(ns.into()).or_default();
        entry.copies.clear();
        entry.clean = true;
        entry.verified_at = Some(now);
    }

    /// Whether `ns`'s copies are to be read back now, and why. An opted-in namespace never
    /// read is read at once; one that did not opt in is only swept for leftovers of ours at
    /// its slot of the first interval, so a start costs nothing for namespaces the injector
    /// does not serve.
    pub fn due(&self, ns: &str, opted_in: bool, now: Instant) -> Option<Verify> {
        let verified_at = self.lock().get(ns).and_then(|n| n.verified_at);
        match verified_at {
            None if opted_in || now >= self.first_slot(ns) => Some(Verify::Start),
            None => None,
            Some(at) if now >= self.next_slot(ns, at) => Some(Verify::Resync),
            Some(_) => None,
        }
    }

    pub fn verified(&self, ns: &str, now: Instant) {
        let mut all = self.lock();
        let entry = all.entry(ns.into()).or_default();
        entry.verified_at = Some(now);
    }

    /// How long until `ns` is due.
    pub fn next_check(&self, ns: &str, now: Instant) -> Duration {
        let verified_at = self.lock().get(ns).and_then(|n| n.verified_at);
        let at = match verified_at {
            Some(at) => self.next_slot(ns, at),
            None => self.first_slot(ns),
        };
        at.saturating_duration_since(now)
    }

    /// Each namespace has a fixed phase in the resync interval, from a hash of its name, so
    /// read-backs of thousands of namespaces come at an even rate.
    fn phase(&self, ns: &str) -> Duration {
        let mut h = DefaultHasher::new();
        ns.hash(&mut h);
        let interval = self.resync.as_millis().max(1) as u64;
        Duration::from_millis(h.finish() % interval)
    }

    fn first_slot(&self, ns: &str) -> Instant {
        self.origin + self.phase(ns)
    }

    /// The first slot at least half an interval after `verified_at`: a namespace read at
    /// start, just before its slot, is not read again right away.
    fn next_slot(&self, ns: &str, verified_at: Instant) -> Instant {
        let after = verified_at + self.resync / 2;
        let first = self.first_slot(ns);
        if after < first {
            return first;
        }
        let since = after.duration_since(first).as_nanos();
        let periods = since / self.resync.as_nanos() + 1;
        let offset = self
            .resync
            .saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
        first + offset
    }

    /// Whether to probe an unknown copy by creating it (201 when absent, 409 when present)
    /// rather than reading it: on a fresh install nearly every copy is absent and creating
    /// first halves the requests; after a restart nearly every copy exists and reading first
    /// does. The lean follows what the last probes found.
    pub fn create_first(&self) -> bool {
        self.lean.load(Ordering::Relaxed) > 0
    }

    pub fn probed(&self, absent: bool) {
        let step = if absent { 1 } else { -1 };
        let _ = self
            .lean
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |lean| {
                Some((lean + step).clamp(-LEAN_LIMIT, LEAN_LIMIT))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn read_backs_are_spread_over_the_interval_at_least_half_an_interval_apart() {
        let resync = Duration::from_secs(600);
        let memory = Memory::new(resync);
        let start = Instant::now();
        let mut slots = Vec::new();
        for i in 0..1000 {
            let ns = format!("team-{i}");
            memory.verified(&ns, start);
            let next = start + memory.next_check(&ns, start);
            assert!(next >= start + resync / 2, "{ns}: too soon");
            assert!(next <= start + resync * 3 / 2, "{ns}: too late");
            slots.push(next.duration_since(start).as_secs() / 60);
        }
        // Ten one-minute buckets over the interval: none holds more than twice its share.
        let mut buckets = HashMap::<u64, usize>::new();
        for slot in slots {
            *buckets.entry(slot).or_default() += 1;
        }
        assert!(buckets.values().all(|&n| n < 2 * 1000 / 10), "{buckets:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn opted_in_namespaces_are_due_at_once_others_at_their_slot() {
        let memory = Memory::new(Duration::from_secs(600));
        let now = Instant::now();
        assert_eq!(memory.due("a", true, now), Some(Verify::Start));
        let later = now + memory.next_check("b", now);
        assert_eq!(memory.due("b", false, later), Some(Verify::Start));
        memory.verified("a", now);
        assert_eq!(memory.due("a", true, now), None);
        let slot = now + memory.next_check("a", now);
        memory.verified("a", now);
        assert_eq!(memory.due("a", true, slot), Some(Verify::Resync));
    }

    #[test]
    fn the_lean_follows_the_probes() {
        let memory = Memory::new(Duration::from_secs(60));
        assert!(
            !memory.create_first(),
            "read first until copies are seen absent"
        );
        memory.probed(true);
        assert!(memory.create_first());
        for _ in 0..20 {
            memory.probed(false);
        }
        assert!(!memory.create_first());
        memory.probed(true);
        assert!(
            !memory.create_first(),
            "bounded: one absent copy does not undo many found"
        );
    }
}
