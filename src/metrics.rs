//! Prometheus metrics, per JwtKeySet. Ages and countdowns are computed at scrape time from the
//! times the last reconcile saw, so they are right between reconciles too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Default)]
struct Times {
    activated_at: Option<Timestamp>,
    next_rotation_at: Option<Timestamp>,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<SetLabels, Counter>,
    reconcile_errors: Family<SetLabels, Counter>,
    rotations: Family<SetLabels, Counter>,
    key_age: Family<SetLabels, Gauge<f64, AtomicU64>>,
    until_rotation: Family<SetLabels, Gauge<f64, AtomicU64>>,
    leader: Gauge,
    times: Mutex<HashMap<SetLabels, Times>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("jwt_key_rotator");
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            rotations: Family::default(),
            key_age: Family::default(),
            until_rotation: Family::default(),
            leader: Gauge::default(),
            times: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles of a JwtKeySet",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles of a JwtKeySet that failed and were retried",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "rotations",
            "Keys that took over from an active key (scheduled, requested or emergency)",
            metrics.rotations.clone(),
        );
        registry.register(
            "active_key_age_seconds",
            "Seconds since the active key started signing",
            metrics.key_age.clone(),
        );
        registry.register(
            "seconds_until_next_rotation",
            "Seconds until the next key is due to take over (negative when late)",
            metrics.until_rotation.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            metrics.leader.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    fn labels(namespace: &str, name: &str) -> SetLabels {
        SetLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn reconciled(
        &self,
        namespace: &str,
        name: &str,
        activated_at: Option<Timestamp>,
        next_rotation_at: Option<Timestamp>,
    ) {
        let labels = Self::labels(namespace, name);
        self.reconciles.get_or_create(&labels).inc();
        if let Ok(mut times) = self.times.lock() {
            times.insert(
                labels,
                Times {
                    activated_at,
                    next_rotation_at,
                },
            );
        }
    }

    pub fn reconcile_failed(&self, namespace: &str, name: &str) {
        self.reconcile_errors
            .get_or_create(&Self::labels(namespace, name))
            .inc();
    }

    pub fn rotated(&self, namespace: &str, name: &str) {
        self.rotations
            .get_or_create(&Self::labels(namespace, name))
            .inc();
    }

    /// The set is gone: its series go too.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = Self::labels(namespace, name);
        if let Ok(mut times) = self.times.lock() {
            times.remove(&labels);
        }
        for family in [&self.key_age, &self.until_rotation] {
            family.remove(&labels);
        }
    }

    /// Keeps the series of the sets for which `keep` holds: deleted sets (and, on a replica that
    /// stopped leading, all sets) must not go on reporting a countdown nobody acts on.
    pub fn retain(&self, keep: impl Fn(&SetLabels) -> bool) {
        let Ok(mut times) = self.times.lock() else {
            return;
        };
        let gone: Vec<SetLabels> = times.keys().filter(|l| !keep(l)).cloned().collect();
        for labels in gone {
            times.remove(&labels);
            self.key_age.remove(&labels);
            self.until_rotation.remove(&labels);
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The Prometheus text exposition of every metric at `now`.
    pub fn render(&self, now: Timestamp) -> String {
        if let Ok(times) = self.times.lock() {
            for (labels, t) in times.iter() {
                if let Some(at) = t.activated_at {
                    self.key_age
                        .get_or_create(labels)
                        .set(now.duration_since(at).as_secs_f64());
                }
                if let Some(at) = t.next_rotation_at {
                    self.until_rotation
                        .get_or_create(labels)
                        .set(at.duration_since(now).as_secs_f64());
                }
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_computed_at_scrape_time() {
        let m = Metrics::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        m.reconciled(
            "ns",
            "web",
            Some(t0),
            Some(t0 + jiff::SignedDuration::from_secs(100)),
        );
        m.rotated("ns", "web");
        m.set_leader(true);
        let text = m.render(t0 + jiff::SignedDuration::from_secs(30));
        assert!(
            text.contains(r#"jwt_key_rotator_rotations_total{namespace="ns",name="web"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jwt_key_rotator_active_key_age_seconds{namespace="ns",name="web"} 30.0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"jwt_key_rotator_seconds_until_next_rotation{namespace="ns",name="web"} 70.0"#
            ),
            "{text}"
        );
        assert!(text.contains("jwt_key_rotator_leader 1"), "{text}");
        m.retain(|l| l.name != "web");
        assert!(!m.render(t0).contains("active_key_age_seconds{"));
        m.reconciled("ns", "web", Some(t0), None);
        m.forget("ns", "web");
        assert!(!m.render(t0).contains("active_key_age_seconds{"));
    }
}
