//! Prometheus metrics. Per-set series are derived at scrape time from the JwtKeySet watch caches
//! the controllers hold: a set that is not in a cache has no series, and a replica observing no
//! cache (a standby) reports none. Ages and countdowns come from each set's status, so they are
//! right between reconciles too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::api::{JwtKeySet, JwtKeySetStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct SetLabels {
    pub namespace: String,
    pub name: String,
}

impl SetLabels {
    fn new(namespace: &str, name: &str) -> Self {
        SetLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// What the reconciler counted for one set since this replica first saw it.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    reconciles: u64,
    errors: u64,
    rotations: u64,
}

#[derive(Default)]
pub struct Metrics {
    leader: Gauge,
    sets: Arc<PerSet>,
}

/// The watch caches observed now, and the counts of the sets in them.
#[derive(Default)]
struct PerSet {
    /// Keyed by the id of the guard that observes them.
    caches: Mutex<BTreeMap<u64, Vec<Store<JwtKeySet>>>>,
    next_cache: AtomicU64,
    counts: Mutex<HashMap<SetLabels, Counts>>,
}

/// While alive, the sets in its caches have series; dropped when the controllers stop.
#[must_use = "the caches are observed only while this is held"]
pub struct Observing {
    sets: Arc<PerSet>,
    id: u64,
}

impl Drop for Observing {
    fn drop(&mut self) {
        lock(&self.sets.caches).remove(&self.id);
        self.sets.drop_departed();
    }
}

/// Counts are plain numbers: a panic elsewhere while holding a lock leaves nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PerSet {
    /// Every set in an observed cache, by labels.
    fn live(&self) -> BTreeMap<SetLabels, Arc<JwtKeySet>> {
        let caches: Vec<Store<JwtKeySet>> =
            lock(&self.caches).values().flatten().cloned().collect();
        caches
            .iter()
            .flat_map(Store::state)
            .filter_map(|set| {
                let labels = SetLabels::new(set.namespace()?.as_str(), set.meta().name.as_deref()?);
                Some((labels, set))
            })
            .collect()
    }

    /// Forgets the counts of sets no cache holds any more.
    fn drop_departed(&self) {
        let live: BTreeSet<SetLabels> = self.live().into_keys().collect();
        lock(&self.counts).retain(|labels, _| live.contains(labels));
    }

    fn count(&self, namespace: &str, name: &str, bump: impl FnOnce(&mut Counts)) {
        let labels = SetLabels::new(namespace, name);
        if !lock(&self.counts).contains_key(&labels) {
            // A set counted for the first time: the moment to drop departed ones, so memory
            // follows the live sets even when nobody scrapes.
            self.drop_departed();
        }
        bump(lock(&self.counts).entry(labels).or_default());
    }

    /// One sample per live set, its counts and its status read at `now`.
    fn samples(&self, now: Timestamp) -> Vec<SetSample> {
        let live = self.live();
        let mut counts = lock(&self.counts);
        counts.retain(|labels, _| live.contains_key(labels));
        live.into_iter()
            .map(|(labels, set)| SetSample {
                counts: counts.get(&labels).copied().unwrap_or_default(),
                key_age: set.status.as_ref().and_then(|s| active_key_age(s, now)),
                until_rotation: set.status.as_ref().and_then(|s| until_rotation(s, now)),
                labels,
            })
            .collect()
    }
}

fn active_key_age(status: &JwtKeySetStatus, now: Timestamp) -> Option<f64> {
    let kid = status.active_kid.as_ref()?;
    let key = status.keys.iter().find(|k| k.kid == *kid)?;
    let at = key.activated_at?;
    Some(now.duration_since(at).as_secs_f64())
}

fn until_rotation(status: &JwtKeySetStatus, now: Timestamp) -> Option<f64> {
    let at = status.next_rotation_time.as_ref()?.0;
    Some(at.duration_since(now).as_secs_f64())
}

#[derive(Debug)]
struct SetSample {
    labels: SetLabels,
    counts: Counts,
    key_age: Option<f64>,
    until_rotation: Option<f64>,
}

/// The per-set series of one scrape.
#[derive(Debug)]
struct PerSetSeries(Vec<SetSample>);

impl PerSetSeries {
    /// One metric family: `value` of every sample that has one.
    fn family<M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        value: impl Fn(&SetSample) -> Option<M>,
    ) -> std::fmt::Result {
        let values: Vec<(&SetLabels, M)> = self
            .0
            .iter()
            .filter_map(|s| Some((&s.labels, value(s)?)))
            .collect();
        let Some((_, first)) = values.first() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(name, help, None, first.metric_type())?;
        for (labels, metric) in &values {
            metric.encode(family.encode_family(*labels)?)?;
        }
        Ok(())
    }
}

impl Collector for PerSetSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let counter = |n: u64| Some(ConstCounter::new(n));
        let gauge = |v: Option<f64>| v.map(ConstGauge::new);
        self.family(&mut encoder, RECONCILES, |s| counter(s.counts.reconciles))?;
        self.family(&mut encoder, ERRORS, |s| counter(s.counts.errors))?;
        self.family(&mut encoder, ROTATIONS, |s| counter(s.counts.rotations))?;
        self.family(&mut encoder, KEY_AGE, |s| gauge(s.key_age))?;
        self.family(&mut encoder, UNTIL_ROTATION, |s| gauge(s.until_rotation))
    }
}

const RECONCILES: (&str, &str) = ("reconciles", "Reconciles of a JwtKeySet");
const ERRORS: (&str, &str) = (
    "reconcile_errors",
    "Reconciles of a JwtKeySet that failed and were retried",
);
const ROTATIONS: (&str, &str) = (
    "rotations",
    "Keys that took over from an active key (scheduled, requested or emergency)",
);
const KEY_AGE: (&str, &str) = (
    "active_key_age_seconds",
    "Seconds since the active key started signing (status.keys[activeKid].activatedAt)",
);
const UNTIL_ROTATION: (&str, &str) = (
    "seconds_until_next_rotation",
    "Seconds until the next key is due to take over (status.nextRotationTime; negative when late)",
);

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports per-set series for the sets in `caches` (one per watched namespace, or one for
    /// all) for as long as the returned guard lives.
    pub fn observe(&self, caches: Vec<Store<JwtKeySet>>) -> Observing {
        let id = self.sets.next_cache.fetch_add(1, Ordering::Relaxed);
        lock(&self.sets.caches).insert(id, caches);
        Observing {
            sets: self.sets.clone(),
            id,
        }
    }

    pub fn reconciled(&self, namespace: &str, name: &str) {
        self.sets.count(namespace, name, |c| c.reconciles += 1);
    }

    pub fn reconcile_failed(&self, namespace: &str, name: &str) {
        self.sets.count(namespace, name, |c| c.errors += 1);
    }

    pub fn rotated(&self, namespace: &str, name: &str) {
        self.sets.count(namespace, name, |c| c.rotations += 1);
    }

    /// The set is gone (its finalizer was removed): its counts go at once.
    pub fn forget(&self, namespace: &str, name: &str) {
        lock(&self.sets.counts).remove(&SetLabels::new(namespace, name));
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric at `now`.
    pub fn render(&self, now: Timestamp) -> String {
        let mut registry = Registry::with_prefix("jwt_key_rotator");
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            self.leader.clone(),
        );
        registry.register_collector(Box::new(PerSetSeries(self.sets.samples(now))));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    const T0: i64 = 1_800_000_000;

    fn at(offset: i64) -> Timestamp {
        Timestamp::from_second(T0 + offset).unwrap()
    }

    /// A set whose key `k2` became active at T0 and whose next rotation is due at T0 + 100s.
    fn set(namespace: &str, name: &str) -> JwtKeySet {
        let key = |kid: &str, state: &str, activated: Timestamp| {
            json!({"kid": kid, "state": state, "algorithm": "ES256",
                   "createdAt": at(-1000), "activatedAt": activated})
        };
        serde_json::from_value(json!({
            "apiVersion": "jwt.keyrotator.dev/v1alpha1",
            "kind": "JwtKeySet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {},
            "status": {
                "activeKid": "k2",
                "nextRotationTime": at(100),
                "keys": [key("k1", "Retired", at(-500)), key("k2", "Active", at(0))],
            },
        }))
        .unwrap()
    }

    fn series(text: &str, metric: &str, namespace: &str, name: &str) -> Option<String> {
        let prefix =
            format!("jwt_key_rotator_{metric}{{namespace=\"{namespace}\",name=\"{name}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
    }

    #[test]
    fn a_cached_set_reports_its_counts_and_gauges_read_from_its_status_at_scrape_time() {
        let metrics = Metrics::new();
        let mut cache = Writer::default();
        let _observing = metrics.observe(vec![cache.as_reader()]);
        cache.apply_watcher_event(&Event::Apply(set("ns", "web")));
        metrics.reconciled("ns", "web");
        metrics.reconciled("ns", "web");
        metrics.rotated("ns", "web");
        metrics.set_leader(true);
        let text = metrics.render(at(30));
        let value = |metric| series(&text, metric, "ns", "web");
        assert_eq!(value("reconciles_total").as_deref(), Some("2"), "{text}");
        assert_eq!(
            value("reconcile_errors_total").as_deref(),
            Some("0"),
            "{text}"
        );
        assert_eq!(value("rotations_total").as_deref(), Some("1"), "{text}");
        assert_eq!(
            value("active_key_age_seconds").as_deref(),
            Some("30.0"),
            "{text}"
        );
        assert_eq!(
            value("seconds_until_next_rotation").as_deref(),
            Some("70.0"),
            "{text}"
        );
        assert!(text.contains("jwt_key_rotator_leader 1"), "{text}");
    }

    #[test]
    fn a_deleted_set_has_no_series_at_the_next_scrape_and_its_counts_are_dropped() {
        let metrics = Metrics::new();
        let mut cache = Writer::default();
        let _observing = metrics.observe(vec![cache.as_reader()]);
        cache.apply_watcher_event(&Event::Apply(set("ns", "web")));
        metrics.rotated("ns", "web");
        assert!(metrics.render(at(1)).contains("name=\"web\""));
        cache.apply_watcher_event(&Event::Delete(set("ns", "web")));
        let text = metrics.render(at(2));
        assert!(!text.contains("name=\"web\""), "{text}");
        assert!(lock(&metrics.sets.counts).is_empty());
    }

    #[test]
    fn counts_of_departed_sets_are_dropped_without_a_scrape_when_a_new_set_is_counted() {
        let metrics = Metrics::new();
        let mut cache = Writer::default();
        let _observing = metrics.observe(vec![cache.as_reader()]);
        cache.apply_watcher_event(&Event::Apply(set("ns", "old")));
        metrics.reconciled("ns", "old");
        cache.apply_watcher_event(&Event::Delete(set("ns", "old")));
        cache.apply_watcher_event(&Event::Apply(set("ns", "new")));
        metrics.reconciled("ns", "new");
        let counted: Vec<SetLabels> = lock(&metrics.sets.counts).keys().cloned().collect();
        assert_eq!(counted, [SetLabels::new("ns", "new")]);
    }

    #[test]
    fn sets_of_every_observed_cache_are_reported() {
        let metrics = Metrics::new();
        let (mut a, mut b) = (Writer::default(), Writer::default());
        let _observing = metrics.observe(vec![a.as_reader(), b.as_reader()]);
        a.apply_watcher_event(&Event::Apply(set("team-a", "web")));
        b.apply_watcher_event(&Event::Apply(set("team-b", "api")));
        let text = metrics.render(at(0));
        assert!(
            series(&text, "reconciles_total", "team-a", "web").is_some(),
            "{text}"
        );
        assert!(
            series(&text, "reconciles_total", "team-b", "api").is_some(),
            "{text}"
        );
    }

    #[test]
    fn a_replica_that_stops_observing_reports_only_whether_it_leads() {
        let metrics = Metrics::new();
        let mut cache = Writer::default();
        let observing = metrics.observe(vec![cache.as_reader()]);
        cache.apply_watcher_event(&Event::Apply(set("ns", "web")));
        metrics.reconciled("ns", "web");
        metrics.set_leader(true);
        assert!(metrics.render(at(0)).contains("name=\"web\""));
        // Leadership lost: the controllers, and their guard, are dropped.
        metrics.set_leader(false);
        drop(observing);
        let text = metrics.render(at(0));
        assert!(!text.contains("namespace="), "{text}");
        assert!(text.contains("jwt_key_rotator_leader 0"), "{text}");
        assert!(lock(&metrics.sets.counts).is_empty());
    }
}
