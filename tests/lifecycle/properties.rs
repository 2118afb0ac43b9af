//! Random specs, random clocks, random events: the invariants of design.md hold at every pass.
//!
//! Each pass is the loop that ships, `converge`, over an in-memory cluster whose JWKS write fails
//! when asked. Between passes the clock moves forward, sometimes far, sometimes backwards. (The
//! hostile cluster, with real keys and the real Secret layout, is `hostile`.)

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::keys::Algorithm;
use jwt_key_rotator::lifecycle::{
    Converged, Evidence, KeyState, Manifest, Plan, Policy, Revocation, Stopped, converge,
    revocations, unpublished_by_pass,
};
use proptest::prelude::*;

use super::{MemoryCluster, Minter, all_kids, config, evidence, policy, run, secs, t, with_cache};

#[derive(Clone, Debug)]
enum Event {
    /// Time passes (seconds).
    Advance(i64),
    /// The clock is set back (seconds).
    JumpBack(i64),
    /// Revoke the n-th held key (modulo the number of keys).
    Revoke(usize),
    /// Set the rotate annotation to a new value.
    RequestRotation,
    ChangeAlgorithm(Algorithm),
    ChangeTokenTtl(i64),
    /// Verifiers' cache time changes (seconds; capped so that the spec stays valid).
    ChangeCacheTtl(i64),
    /// The JWKS write after the next plan fails: verifiers do not see new keys yet.
    PublishFails,
    /// Someone deletes the n-th held key's private part from the Secret.
    LoseMaterial(usize),
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

fn event(ri: i64) -> impl Strategy<Value = Event> {
    prop_oneof![
        10 => (0..ri / 2 + 1).prop_map(Event::Advance),
        4 => (0..3 * ri).prop_map(Event::Advance),
        1 => (0..50 * ri).prop_map(Event::Advance),
        1 => (1..2 * ri).prop_map(Event::JumpBack),
        1 => (0usize..8).prop_map(Event::Revoke),
        1 => Just(Event::RequestRotation),
        1 => algorithm().prop_map(Event::ChangeAlgorithm),
        1 => (1..ri * 2).prop_map(Event::ChangeTokenTtl),
        1 => (0..ri).prop_map(Event::ChangeCacheTtl),
        2 => Just(Event::PublishFails),
        1 => (0usize..8).prop_map(Event::LoseMaterial),
    ]
}

/// (policy, events): rotationInterval 2..600s, 0 < publishLead < rotationInterval,
/// propagationDelay + verifierCacheTTL <= publishLead, as `validate()` demands.
fn scenario() -> impl Strategy<Value = (Policy, Vec<Event>)> {
    (2i64..600, algorithm())
        .prop_flat_map(|(ri, alg)| (Just(ri), Just(alg), 1..ri))
        .prop_flat_map(|(ri, alg, pl)| (Just(ri), Just(alg), Just(pl), 0..=pl))
        .prop_flat_map(|(ri, alg, pl, pd)| {
            let cache = 0..=pl - pd;
            (Just((ri, alg, pl, pd)), cache, 1i64..1000, 0i64..120)
        })
        .prop_flat_map(|((ri, alg, pl, pd), cache, ttl, skew)| {
            let policy = with_cache(policy(alg, ri, pl, pd, ttl, skew), cache);
            let served = any::<bool>().prop_map(move |served_over_http| Policy {
                served_over_http,
                ..policy.clone()
            });
            (served, prop::collection::vec(event(ri), 1..60))
        })
}

/// How long verifiers may hold a JWKS from before a change: propagationDelay + verifierCacheTTL,
/// and served over HTTP, the max-age a shared cache may keep it on top.
fn caches(policy: &Policy) -> SignedDuration {
    let mut horizon = policy.propagation_delay + policy.verifier_cache_ttl;
    if policy.served_over_http {
        let max_age = policy.http_max_age();
        // The max-age keeps the lead's promise and the spec's cache time (the README's rule).
        assert!(max_age >= SignedDuration::ZERO && max_age <= policy.verifier_cache_ttl);
        horizon += max_age;
    }
    horizon
}

/// What the checker remembers across steps.
#[derive(Default)]
struct History {
    removed: BTreeSet<String>,
    /// Retention in force when each key retired.
    retention_at_retirement: BTreeMap<String, SignedDuration>,
    requests: u64,
    /// Kids whose private part was deleted from the Secret.
    lost: BTreeSet<String>,
    /// `status.revocations` as the last pass that converged reported them.
    revocations: Vec<Revocation>,
}

fn check_step(
    policy: &Policy,
    before: &Manifest,
    published: &BTreeSet<String>,
    now: Timestamp,
    plan: &Plan,
    minted: u64,
    history: &mut History,
) -> Result<(), TestCaseError> {
    let after = &plan.manifest;
    prop_assert!(
        minted <= 2,
        "at most two keys are generated per pass (an emergency, then the next), got {}",
        minted
    );

    // Exactly one active key, always (the first plan bootstraps).
    let actives: Vec<_> = after
        .keys
        .iter()
        .filter(|k| k.state == KeyState::Active)
        .collect();
    prop_assert_eq!(
        actives.len(),
        1,
        "exactly one active key at {}: {:?}",
        now,
        after.keys
    );

    // Keys never come back.
    for k in &after.keys {
        prop_assert!(
            !history.removed.contains(&k.kid),
            "{} came back at {}",
            k.kid,
            now
        );
    }

    let old_active = before.active();
    // Revoked or lost: the set has no usable active key, and a key must sign at once.
    let old_active_gone = old_active
        .is_some_and(|a| policy.revoked_kids.contains(&a.kid) || history.lost.contains(&a.kid));
    for k in &after.keys {
        let old = before.get(&k.kid);
        // Publication is recorded only when seen, at the time it is seen, and never changes
        // (but for a time far in the future of a clock set back: that becomes now).
        match (old.and_then(|o| o.published_at), k.published_at) {
            (Some(a), b) if a > now + secs(60) => prop_assert_eq!(b, Some(now)),
            (Some(a), b) => prop_assert_eq!(Some(a), b, "published_at of {} changed", k.kid),
            (None, Some(at)) => {
                prop_assert_eq!(at, now);
                prop_assert!(
                    published.contains(&k.kid),
                    "{} marked published but not seen",
                    k.kid
                );
            }
            (None, None) => {}
        }
        // States only move forward.
        if let Some(old) = old {
            let rank = |s: KeyState| match s {
                KeyState::Pending => 0,
                KeyState::Active => 1,
                KeyState::Retired => 2,
            };
            prop_assert!(
                rank(k.state) >= rank(old.state),
                "{} went from {:?} to {:?}",
                k.kid,
                old.state,
                k.state
            );
        }
        // A key takes over from a live active key only after publishLead of publication, and
        // only once every verifier can hold it: propagationDelay + verifierCacheTTL.
        let newly_active =
            k.state == KeyState::Active && old.is_none_or(|o| o.state != KeyState::Active);
        if newly_active && old_active.is_some() && !old_active_gone {
            let published_at = k.published_at;
            let caches = caches(policy);
            prop_assert!(
                published_at.is_some_and(|p| p + caches <= now),
                "{} signs at {} but was published at {:?}: verifiers may cache a JWKS without it \
                 for propagationDelay + verifierCacheTTL ({})",
                k.kid,
                now,
                published_at,
                caches
            );
            prop_assert!(
                published_at.is_some_and(|p| p + policy.publish_lead <= now),
                "{} activated at {} but published at {:?} (lead {})",
                k.kid,
                now,
                published_at,
                policy.publish_lead
            );
        }
        if k.state == KeyState::Retired && old.is_some_and(|o| o.state != KeyState::Retired) {
            history
                .retention_at_retirement
                .insert(k.kid.clone(), policy.retention());
            prop_assert_eq!(k.retired_at, Some(now));
        }
    }

    // Nothing that may still verify a token is removed, unless revoked.
    for old in &before.keys {
        if after.get(&old.kid).is_some() {
            continue;
        }
        history.removed.insert(old.kid.clone());
        if policy.revoked_kids.contains(&old.kid) {
            continue;
        }
        // A key whose private part is gone: a pending one never signed, and a symmetric key has
        // nothing left to verify with. An asymmetric active key must retire instead.
        if history.lost.contains(&old.kid)
            && (old.state == KeyState::Pending || old.alg.is_symmetric())
        {
            continue;
        }
        match old.state {
            KeyState::Active => prop_assert!(false, "active key {} removed at {}", old.kid, now),
            KeyState::Pending => prop_assert!(
                !old.matches(policy),
                "a usable pending key {} was dropped",
                old.kid
            ),
            KeyState::Retired => {
                let retired_at = old.retired_at.unwrap_or(Timestamp::MAX);
                let at_retirement = history
                    .retention_at_retirement
                    .get(&old.kid)
                    .copied()
                    .unwrap_or(policy.retention());
                let needed = retired_at + at_retirement.max(policy.retention());
                prop_assert!(
                    now >= needed,
                    "{} removed at {} before {}",
                    old.kid,
                    now,
                    needed
                );
            }
        }
    }
    Ok(())
}

/// Revocation cannot beat caches: the status says, for each revoked kid, a time no earlier
/// than propagationDelay + verifierCacheTTL after the pass that took it out of the JWKS, and
/// never moves that time earlier.
fn check_revocations(
    policy: &Policy,
    evidence: &Evidence,
    converged: &Converged,
    seen: &BTreeSet<String>,
    now: Timestamp,
    history: &mut History,
) -> Result<(), TestCaseError> {
    let this_pass = unpublished_by_pass(evidence, &converged.transitions);
    let reported = revocations(policy, &history.revocations, &this_pass, now);
    let horizon = caches(policy);
    for r in &reported {
        prop_assert!(!seen.contains(&r.kid), "revoked {} is published", r.kid);
        if this_pass.contains(&r.kid) {
            prop_assert!(
                r.effective_at >= now + horizon,
                "{} taken out at {} said effective at {}",
                r.kid,
                now,
                r.effective_at
            );
        }
        prop_assert!(r.effective_at >= r.unpublished_at + horizon);
        let before = history.revocations.iter().find(|b| b.kid == r.kid);
        prop_assert!(before.is_none_or(|b| b.effective_at <= r.effective_at));
    }
    history.revocations = reported;
    Ok(())
}

/// Nothing is due before the wake-up: planning anywhere in [now, wake) changes nothing.
fn check_wake_up(
    policy: &Policy,
    plan: &Plan,
    now: Timestamp,
    probe: f64,
) -> Result<(), TestCaseError> {
    if plan.wake_at <= now || plan.wake_at == Timestamp::MAX {
        return Ok(());
    }
    let span = plan.wake_at.duration_since(now).as_secs_f64();
    let at = now + SignedDuration::from_secs_f64((span * probe).min(span - 1e-3).max(0.0));
    let mut minter = Minter { minted: 1_000_000 };
    let again = run(
        policy,
        &plan.manifest,
        &all_kids(&plan.manifest),
        at,
        &mut minter,
    );
    prop_assert!(
        again.transitions.is_empty(),
        "planned wake-up {} but {:?} was due at {}",
        plan.wake_at,
        again.transitions,
        at
    );
    prop_assert_eq!(&again.manifest, &plan.manifest);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold_over_random_schedules_and_clocks(
        (mut policy, events) in scenario(),
        probes in prop::collection::vec(0.0f64..1.0, 60),
    ) {
        let mut minter = Minter::default();
        let mut history = History::default();
        let mut manifest = Manifest::empty();
        let mut published = BTreeSet::new();
        let mut now = t(0);
        let mut publish_fails = false;
        for (i, event) in std::iter::once(Event::Advance(0)).chain(events).enumerate() {
            match event {
                Event::Advance(s) => now += secs(s),
                Event::JumpBack(s) => now -= secs(s),
                Event::Revoke(n) => {
                    if !manifest.keys.is_empty() {
                        let kid = manifest.keys[n % manifest.keys.len()].kid.clone();
                        policy.revoked_kids.insert(kid);
                    }
                }
                Event::RequestRotation => {
                    history.requests += 1;
                    policy.rotation_request = Some(format!("request-{}", history.requests));
                }
                Event::ChangeAlgorithm(alg) => {
                    policy.algorithm = alg;
                    policy.rsa_size = alg.is_rsa().then_some(jwt_key_rotator::keys::RsaKeySize::Bits2048);
                }
                Event::ChangeTokenTtl(s) => policy.token_ttl = secs(s),
                Event::ChangeCacheTtl(s) => {
                    let most = policy.publish_lead - policy.propagation_delay;
                    policy.verifier_cache_ttl = secs(s).min(most);
                }
                Event::PublishFails => publish_fails = true,
                Event::LoseMaterial(n) => {
                    if !manifest.keys.is_empty() {
                        history.lost.insert(manifest.keys[n % manifest.keys.len()].kid.clone());
                    }
                }
            }
            // One pass of the loop that ships.
            let before_minted = minter.minted;
            let mut e = evidence(&manifest, &published);
            if let Some(secret) = e.secret.as_mut() {
                secret.found.retain(|f| !history.lost.contains(&f.kid));
            }
            let mut cluster = MemoryCluster {
                now,
                minter: &mut minter,
                stored: manifest.clone(),
                published: published.clone(),
                refuse_publish: std::mem::take(&mut publish_fails),
            };
            let result = futures::executor::block_on(converge(&mut cluster, &policy, &e));
            let (stored, seen) = (cluster.stored.clone(), cluster.published.clone());
            let minted = minter.minted - before_minted;
            match result {
                Ok(c) => {
                    prop_assert!(c.settled, "converge did not settle at {}", now);
                    check_step(&policy, &manifest, &seen, now, &c.plan, minted, &mut history)?;
                    check_wake_up(&policy, &c.plan, now, probes[i % probes.len()])?;
                    check_revocations(&policy, &e, &c, &seen, now, &mut history)?;
                    manifest = c.plan.manifest;
                }
                Err(Stopped::Failed { .. }) => manifest = stored,
                Err(Stopped::Blocked(b)) => prop_assert!(false, "blocked: {}", b),
            }
            published = seen;
            // What the shell repairs on its next write: lost material is gone for good.
            history.lost.retain(|kid| manifest.get(kid).is_some_and(|k| k.keeps_private_material()));
        }
    }
}
