use std::collections::BTreeSet;

use jiff::SignedDuration;

use crate::keys::{Algorithm, RsaKeySize};

/// The most keys a set holds (pending, active and retired). Every held key is published and
/// every verifier fetches them all; 20 RSA-4096 keys are a 15 KiB JWKS, far inside the 1 MiB a
/// Secret or ConfigMap may hold. The spec is refused at admission when its schedule alone would
/// need more (`MAX_RETENTION_INTERVALS`); manual rotations beyond it wait for an expiry.
pub const MAX_KEYS: usize = 20;

/// A retired key stays published for its retention: a spec whose retention spans more than this
/// many rotation intervals would hold more than `MAX_KEYS` keys (these, the active and the
/// pending key, and one at the boundary).
pub const MAX_RETENTION_INTERVALS: i64 = 16;

/// The validated rules a set's keys live by (made by `JwtKeySet::validate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub algorithm: Algorithm,
    /// Set for RSA algorithms only.
    pub rsa_size: Option<RsaKeySize>,
    pub rotation_interval: SignedDuration,
    pub publish_lead: SignedDuration,
    pub propagation_delay: SignedDuration,
    pub token_ttl: SignedDuration,
    pub clock_skew: SignedDuration,
    /// The longest time a verifier keeps a copy of the published JWKS.
    pub verifier_cache_ttl: SignedDuration,
    pub revoked_kids: BTreeSet<String>,
    /// The value of the rotate annotation; a value not yet honoured starts a rotation.
    pub rotation_request: Option<String>,
    /// The JWKS is also served over HTTP, where shared caches may hold it (`http_max_age`).
    pub served_over_http: bool,
}

impl Policy {
    /// How long a retired key stays published: a pod may sign with it until its mounted Secret
    /// refreshes, a token it signed lives `tokenTTL`, and clocks disagree by `clockSkew`.
    pub fn retention(&self) -> SignedDuration {
        self.propagation_delay
            .saturating_add(self.token_ttl)
            .saturating_add(self.clock_skew)
    }
}

impl Policy {
    /// How long a key must have been published before it signs: `publishLead`, and never less
    /// than it takes every verifier to hold it (it reaches a verifier `propagationDelay` late,
    /// and a verifier that fetched just before keeps its copy for `verifierCacheTTL`).
    /// `validate()` refuses a shorter `publishLead`; the planner holds the rule regardless.
    pub fn signing_lead(&self) -> SignedDuration {
        self.publish_lead.max(self.cache_horizon())
    }

    /// How long after a change to the published JWKS some verifier may still act on the copy
    /// from before: `propagationDelay + verifierCacheTTL`, and over HTTP the `max-age` a shared
    /// cache may keep it for on top.
    pub fn cache_horizon(&self) -> SignedDuration {
        let shared = if self.served_over_http {
            self.http_max_age()
        } else {
            SignedDuration::ZERO
        };
        self.propagation_delay
            .saturating_add(self.verifier_cache_ttl)
            .saturating_add(shared)
    }

    /// The `max-age` the JWKS is served with over HTTP. A shared cache (a proxy, a CDN) that
    /// honours it adds up to that much to the age of the copy a verifier then caches itself,
    /// so it is the lead's slack beyond `propagationDelay + verifierCacheTTL`: every verifier
    /// still holds a new key before it signs. And at most `verifierCacheTTL`: a verifier that
    /// takes `max-age` for its own cache time keeps no copy longer than the spec says.
    pub fn http_max_age(&self) -> SignedDuration {
        let slack = self
            .publish_lead
            .saturating_sub(self.propagation_delay)
            .saturating_sub(self.verifier_cache_ttl);
        slack.clamp(SignedDuration::ZERO, self.verifier_cache_ttl)
    }
}

/// The names workloads mount: the Secret, the JWKS ConfigMap, and its data key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectNames {
    pub secret: String,
    pub config_map: String,
    pub jwks_key: String,
}

/// A name the spec moved after the set's objects were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

/// Workloads mount the objects by these names: moving one would orphan the keys they mount and
/// start a new key without its lead, so a move is refused once the objects were written.
/// `written` holds the names the objects were written under, each `None` when unknown.
pub fn moved(written: &WrittenNames, wanted: &ObjectNames) -> Option<Moved> {
    let fields = [
        ("spec.secretName", &written.secret, &wanted.secret),
        (
            "spec.jwks.configMapName",
            &written.config_map,
            &wanted.config_map,
        ),
        ("spec.jwks.key", &written.jwks_key, &wanted.jwks_key),
    ];
    fields.into_iter().find_map(|(field, old, new)| match old {
        Some(old) if old != new => Some(Moved {
            field,
            from: old.clone(),
            to: new.clone(),
        }),
        _ => None,
    })
}

/// The names a set's objects were written under, as far as they are known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenNames {
    pub secret: Option<String>,
    pub config_map: Option<String>,
    pub jwks_key: Option<String>,
}
