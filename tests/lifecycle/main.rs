//! The lifecycle core: one test per rule (`rules`, `evidence`), property tests of the planner
//! over random clocks and events (`properties`), and of the convergence loop that ships against
//! a hostile simulated cluster with real keys and the real Secret layout (`hostile`).

mod evidence;
mod hostile;
mod properties;
mod rules;

use std::collections::BTreeSet;
use std::convert::Infallible;

use base64ct::{Base64UrlUnpadded, Encoding};
use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::keys::{
    Algorithm, Jwks, KeyFamily, PublicJwk, RsaKeySize, kid_of_public_jwk, thumbprint,
};
use jwt_key_rotator::lifecycle::{
    Cluster, Evidence, FoundKey, KeyState, Manifest, ManifestRead, NewKey, Observed, Plan, Policy,
    SecretEvidence, Slot, Transition, converge, plan,
};
use sha2::{Digest, Sha256};

/// A fixed origin, so failures print readable times.
pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

pub fn secs(s: i64) -> SignedDuration {
    SignedDuration::from_secs(s)
}

/// rotationInterval, publishLead, propagationDelay, tokenTTL, clockSkew in seconds; verifiers
/// that do not cache the JWKS (verifierCacheTTL 0: `with_cache` sets one).
pub fn policy(alg: Algorithm, ri: i64, pl: i64, pd: i64, ttl: i64, skew: i64) -> Policy {
    Policy {
        algorithm: alg,
        rsa_size: alg.is_rsa().then_some(RsaKeySize::Bits2048),
        rotation_interval: secs(ri),
        publish_lead: secs(pl),
        propagation_delay: secs(pd),
        token_ttl: secs(ttl),
        clock_skew: secs(skew),
        verifier_cache_ttl: SignedDuration::ZERO,
        revoked_kids: BTreeSet::new(),
        rotation_request: None,
        served_over_http: false,
    }
}

/// `policy` with verifiers that keep a copy of the JWKS for `cache` seconds.
pub fn with_cache(policy: Policy, cache: i64) -> Policy {
    Policy {
        verifier_cache_ttl: secs(cache),
        ..policy
    }
}

/// Deterministic stand-in for key generation: public parts are made up, but each kid is the
/// RFC 7638 thumbprint of its JWK (as the core checks), and kids are unique, never random.
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
        // Made-up public parts of the right sizes, unique per key.
        let bytes = |len: usize| -> String {
            let mut out = Vec::new();
            for block in 0u8.. {
                out.extend(Sha256::digest(
                    [&self.minted.to_be_bytes()[..], &[block]].concat(),
                ));
                if out.len() >= len {
                    break;
                }
            }
            out.truncate(len);
            out[0] |= 0x80;
            Base64UrlUnpadded::encode_string(&out)
        };
        let (kty, crv, len) = match alg.family() {
            KeyFamily::Rsa => ("RSA", None, 256),
            KeyFamily::P256 => ("EC", Some("P-256"), 32),
            KeyFamily::P384 => ("EC", Some("P-384"), 48),
            KeyFamily::Ed25519 => ("OKP", Some("Ed25519"), 32),
            KeyFamily::Hmac(_) => {
                let kid = thumbprint(&[("k", &bytes(32)), ("kty", "oct")]);
                return Ok(NewKey {
                    kid,
                    alg,
                    rsa_size: None,
                    public_jwk: None,
                });
            }
        };
        let mut jwk = PublicJwk {
            kty: kty.into(),
            crv: crv.map(str::to_string),
            x: (kty != "RSA").then(|| bytes(len)),
            y: (kty == "EC").then(|| bytes(len)),
            n: (kty == "RSA").then(|| bytes(len)),
            e: (kty == "RSA").then(|| "AQAB".into()),
            kid: String::new(),
            alg: alg.as_str().into(),
            key_use: "sig".into(),
        };
        jwk.kid = kid_of_public_jwk(&jwk).expect("a complete JWK");
        Ok(NewKey {
            kid: jwk.kid.clone(),
            alg,
            rsa_size,
            public_jwk: Some(jwk),
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

/// A cluster whose writes all succeed (the JWKS write fails while `refuse_publish`), with a
/// clock that stands still: the rules are checked through the loop that ships, `converge`.
pub struct MemoryCluster<'m> {
    pub now: Timestamp,
    pub minter: &'m mut Minter,
    pub stored: Manifest,
    /// What verifiers see: the JWKS, and for HMAC keys the Secret's verification set.
    pub published: BTreeSet<String>,
    pub refuse_publish: bool,
}

/// Kids a Secret holding `manifest` lets verifiers find (HMAC keys with their material).
fn symmetric_kids(manifest: &Manifest) -> BTreeSet<String> {
    manifest
        .keys
        .iter()
        .filter(|k| k.alg.is_symmetric())
        .map(|k| k.kid.clone())
        .collect()
}

impl Cluster for MemoryCluster<'_> {
    type Error = &'static str;
    fn now(&mut self) -> Timestamp {
        self.now
    }
    fn mint(&mut self, alg: Algorithm, size: Option<RsaKeySize>) -> Result<NewKey, Self::Error> {
        let Ok(key) = self.minter.mint(alg, size);
        Ok(key)
    }
    async fn store(&mut self, manifest: &Manifest) -> Result<(), Self::Error> {
        let before = symmetric_kids(&self.stored);
        self.published.retain(|k| !before.contains(k));
        self.published.extend(symmetric_kids(manifest));
        self.stored = manifest.clone();
        Ok(())
    }
    async fn publish(&mut self, jwks: &Jwks) -> Result<(), Self::Error> {
        if self.refuse_publish {
            return Err("the JWKS write is refused");
        }
        let mut published: BTreeSet<String> = jwks.keys.iter().map(|k| k.kid.clone()).collect();
        published.extend(symmetric_kids(&self.stored));
        self.published = published;
        Ok(())
    }
}

/// What the cluster shows when the Secret holds `manifest` (with the material of every key
/// that keeps it), the status remembers it, and verifiers see `published`.
pub fn evidence(manifest: &Manifest, published: &BTreeSet<String>) -> Evidence {
    let found = manifest
        .keys
        .iter()
        .filter(|k| k.keeps_private_material())
        .map(|k| FoundKey {
            kid: k.kid.clone(),
            alg: k.alg,
            rsa_bits: k.rsa_bits,
            public_jwk: k.public_jwk.clone(),
            slots: BTreeSet::from([match (k.state, k.alg.is_symmetric()) {
                (_, true) if published.contains(&k.kid) => Slot::Verify,
                (KeyState::Active, _) => Slot::Signing,
                _ => Slot::Pending,
            }]),
        })
        .collect();
    Evidence {
        secret: Some(SecretEvidence {
            manifest: ManifestRead::Read(manifest.clone()),
            found,
            named_signing: manifest.active().map(|k| k.kid.clone()),
            unreadable: Vec::new(),
        }),
        published: manifest
            .public_jwks()
            .keys
            .into_iter()
            .filter(|k| published.contains(&k.kid))
            .collect(),
        memory: manifest.keys.clone(),
        remembered_rotation_request: manifest.rotation_request.clone(),
        own_manifest: false,
        stored: Default::default(),
    }
}

/// One pass of `converge` at `now` over a cluster that holds `manifest`, every key published.
pub fn settle(
    policy: &Policy,
    manifest: &Manifest,
    now: Timestamp,
    minter: &mut Minter,
) -> (Plan, Vec<Transition>) {
    settle_from(
        policy,
        &evidence(manifest, &all_kids(manifest)),
        now,
        minter,
    )
}

/// One pass of `converge` at `now` from `evidence`, over a cluster whose writes all succeed.
pub fn settle_from(
    policy: &Policy,
    evidence: &Evidence,
    now: Timestamp,
    minter: &mut Minter,
) -> (Plan, Vec<Transition>) {
    let mut cluster = MemoryCluster {
        now,
        minter,
        stored: Manifest::empty(),
        published: BTreeSet::new(),
        refuse_publish: false,
    };
    match futures::executor::block_on(converge(&mut cluster, policy, evidence)) {
        Ok(c) => {
            assert!(c.settled, "converge did not settle at {now}");
            (c.plan, c.transitions)
        }
        Err(e) => panic!("converge failed at {now}: {e:?}"),
    }
}

/// Property-test configuration: 10,000 cases unless `PROPTEST_CASES` says otherwise. Shrinking
/// is bounded (at most 2,000 steps or two minutes): a failure in CI reports a case that is small
/// enough to read, and fails the run in minutes, not in the quarter of an hour that
/// shrinking 10,000 cases' worth takes.
pub fn config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // `PROPTEST_MAX_SHRINK_ITERS=0` reports the first failing case as found (the mutation study,
    // `mutations.sh`, only needs to know which invariant fails, not a readable case).
    let max_shrink_iters = std::env::var("PROPTEST_MAX_SHRINK_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    proptest::test_runner::Config {
        cases,
        max_shrink_iters,
        max_shrink_time: 120_000,
        ..Default::default()
    }
}
