use std::collections::BTreeSet;

use jiff::SignedDuration;

use crate::keys::{Algorithm, RsaKeySize};

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
    pub revoked_kids: BTreeSet<String>,
    /// The value of the rotate annotation; a value not yet honoured starts a rotation.
    pub rotation_request: Option<String>,
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
