//! The lifecycle planner: one test per rule (`rules`), and property tests that drive random
//! specs through random clocks and events and check the invariants at every step (`properties`).

mod properties;
mod rules;

use std::collections::BTreeSet;
use std::convert::Infallible;

use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::keys::{Algorithm, PublicJwk, RsaKeySize};
use jwt_key_rotator::lifecycle::{Manifest, NewKey, Observed, Plan, Policy, plan};

/// A fixed origin, so failures print readable times.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// rotationInterval, publishLead, propagationDelay, tokenTTL, clockSkew in seconds.
pub fn policy(alg: Algorithm, ri: i64, pl: i64, pd: i64, ttl: i64, skew: i64) -> Policy {
    Policy {
        algorithm: alg,
        rsa_size: alg.is_rsa().then_some(RsaKeySize::Bits2048),
        rotation_interval: secs(ri),
        publish_lead: secs(pl),
        propagation_delay: secs(pd),
        token_ttl: secs(ttl),
        clock_skew: secs(skew),
        revoked_kids: BTreeSet::new(),
        rotation_request: None,
    }
}

/// Deterministic stand-in for key generation: kids are unique, never random.
#[derive(Default)]
pub struct Minter {
    pub minted: u64,
}

impl Minter {
    pub fn mint(
        &mut self,
        alg: Algorithm,
        rsa_size: Option<RsaKeySize>,
    ) -> Result<NewKey, Infallible> {
        self.minted += 1;
        let kid = format!("kid-{:06}", self.minted);
        let public_jwk = (!alg.is_symmetric()).then(|| PublicJwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(kid.clone()),
            y: Some(kid.clone()),
            n: None,
            e: None,
            kid: kid.clone(),
            alg: alg.as_str().into(),
            key_use: "sig".into(),
        });
        Ok(NewKey {
            kid,
            alg,
            rsa_size,
            public_jwk,
        })
    }
}

pub fn run(
    policy: &Policy,
    manifest: &Manifest,
    published: &BTreeSet<String>,
    now: Timestamp,
    minter: &mut Minter,
) -> Plan {
    let observed = Observed {
        published: published.clone(),
        private: all_kids(manifest),
    };
    run_observed(policy, manifest, &observed, now, minter)
}

pub fn run_observed(
    policy: &Policy,
    manifest: &Manifest,
    observed: &Observed,
    now: Timestamp,
    minter: &mut Minter,
) -> Plan {
    let Ok(plan) = plan(policy, manifest, observed, now, |a, s| minter.mint(a, s));
    plan
}

/// Every kid in the manifest: what the shell publishes after it writes.
pub fn all_kids(manifest: &Manifest) -> BTreeSet<String> {
    manifest.keys.iter().map(|k| k.kid.clone()).collect()
}
