//! Convergence: weigh the evidence, then plan, write and plan again until nothing is due.
//!
//! This is the loop that ships. It runs over an abstract view of one set's objects (`Cluster`):
//! the operator drives it against the API server, the property tests against a simulated cluster
//! that crashes, edits, restores and plants between any two writes.
//!
//! Writes go in an order that is safe to cut anywhere: the Secret stores a new key before the
//! JWKS publishes it, and the JWKS holds a key before the Secret names it the signing key. The
//! exception to "store first" is a key that may sign or have signed but is not published (one
//! that must sign at once, or one an edit took out of the JWKS): it is published first.

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::keys::{Algorithm, Jwks, RsaKeySize};

use super::evidence::{Blocked, Evidence, Finding, weigh};
use super::manifest::{KeyState, Manifest};
use super::planner::{NewKey, Observed, Plan, Transition, plan};
use super::policy::Policy;

/// Rounds of plan-and-write in one pass. A pass needs at most three (write a new key, stamp its
/// publication, confirm a retirement); the rest of the time the planner wakes later.
pub const MAX_ROUNDS: u32 = 4;

/// One set's objects, as the convergence loop sees them.
#[allow(async_fn_in_trait)]
pub trait Cluster {
    type Error;
    /// The time now. Read after each acknowledged write, so what was written is in the cluster.
    fn now(&mut self) -> Timestamp;
    /// A new key of this kind; its private part stays with the implementation.
    fn mint(&mut self, alg: Algorithm, size: Option<RsaKeySize>) -> Result<NewKey, Self::Error>;
    /// Makes the Secret hold `manifest` and the private material of the keys it keeps.
    async fn store(&mut self, manifest: &Manifest) -> Result<(), Self::Error>;
    /// Makes the published document(s) hold exactly `jwks`.
    async fn publish(&mut self, jwks: &Jwks) -> Result<(), Self::Error>;
}

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converged {
    /// The last plan: the manifest as written, the next wake-up and rotation.
    pub plan: Plan,
    pub transitions: Vec<Transition>,
    pub findings: Vec<Finding>,
    /// False when the pass ran out of rounds with work still due (the caller retries soon).
    pub settled: bool,
}

/// Why a pass stopped early.
#[derive(Debug)]
pub enum Stopped<E> {
    /// The evidence cannot be reconciled safely: nothing was written.
    Blocked(Blocked),
    /// A write or a key generation failed; what happened before it is listed.
    Failed {
        error: E,
        transitions: Vec<Transition>,
        findings: Vec<Finding>,
    },
}

/// Weighs `evidence`, then plans and writes until nothing is due now.
pub async fn converge<C: Cluster>(
    cluster: &mut C,
    policy: &Policy,
    evidence: &Evidence,
) -> Result<Converged, Stopped<C::Error>> {
    let now = cluster.now();
    let weighed = weigh(evidence, policy, now).map_err(Stopped::Blocked)?;
    let findings = weighed.findings;
    let mut manifest = weighed.manifest;
    let mut observed = weighed.observed;
    let mut retire_on_write = weighed.retire_on_write;
    let mut transitions = Vec::new();
    let fail = |error, transitions: &Vec<Transition>, findings: &Vec<Finding>| Stopped::Failed {
        error,
        transitions: transitions.clone(),
        findings: findings.clone(),
    };
    let mut round = 0;
    loop {
        round += 1;
        let now = cluster.now();
        let mut plan = plan(policy, &manifest, &observed, now, |alg, size| {
            cluster.mint(alg, size)
        })
        .map_err(|e| fail(e, &transitions, &findings))?;
        transitions.extend(plan.transitions.iter().cloned());
        let planned = plan.transitions.len();
        retire_on_write.extend(retired_in(&plan.transitions));
        write_round(cluster, &mut plan, &observed)
            .await
            .map_err(|e| fail(e, &transitions, &findings))?;
        transitions.extend(plan.transitions[planned..].iter().cloned());
        observed = held_after_writing(&plan.manifest);
        // Retention counts from the acknowledged write that took a key out of signing; the
        // next round stores the later time.
        let written_at = cluster.now();
        let confirmed = plan
            .manifest
            .confirm_retired(&retire_on_write, written_at, policy);
        retire_on_write.clear();
        manifest = plan.manifest.clone();
        let settled = plan.wake_at > now && !confirmed;
        // Out of rounds with work due: the caller comes back soon rather than spin here.
        if settled || round >= MAX_ROUNDS {
            return Ok(Converged {
                plan,
                transitions,
                findings,
                settled,
            });
        }
    }
}

/// One round's writes, in the safe order: the Secret first, so a new key's private part is
/// stored before its public part is published; but when a key that may have signed (an active
/// or retired one) is missing from what verifiers see, the JWKS first, so that no signer holds a
/// key verifiers cannot find for a moment longer than it must. The Secret that follows records
/// the publication just acknowledged, rather than a second Secret write next round recording it
/// (a new set: one Secret create).
async fn write_round<C: Cluster>(
    cluster: &mut C,
    plan: &mut Plan,
    observed: &Observed,
) -> Result<(), C::Error> {
    let jwks = plan.manifest.public_jwks();
    let signed_unpublished = plan.manifest.keys.iter().any(|k| {
        k.state != KeyState::Pending
            && k.public_jwk.is_some()
            && !observed.published.contains(&k.kid)
    });
    if !signed_unpublished {
        cluster.store(&plan.manifest).await?;
        return cluster.publish(&jwks).await;
    }
    let first = published_before_storing(&plan.manifest, observed);
    cluster.publish(&first).await?;
    stamp_published(plan, &first, cluster.now());
    cluster.store(&plan.manifest).await?;
    if first.keys.len() < jwks.keys.len() {
        cluster.publish(&jwks).await?;
    }
    Ok(())
}

/// The JWKS written ahead of the Secret: without the pending keys that are not published now.
/// One minted this round is not stored yet (no crash may leave a published key nobody holds);
/// one an edit took out of the JWKS must be recorded as unpublished before verifiers see it
/// again, or a failed Secret write would leave its old publication time standing and it would
/// sign before verifiers that missed it refetch. Both are out of the JWKS already, and in it
/// again two writes later (their publication is stamped next round).
fn published_before_storing(manifest: &Manifest, observed: &Observed) -> Jwks {
    let waits =
        |k: &super::KeyRecord| k.state == KeyState::Pending && !observed.published.contains(&k.kid);
    let keys = manifest.keys.iter().filter(|k| !waits(k));
    Jwks {
        keys: keys.filter_map(|k| k.public_jwk.clone()).collect(),
    }
}

/// Records the publication of the public keys just published, at the time it was acknowledged,
/// as the planner does for what it sees published (`Transition::Published`). Nothing else is
/// planned between the two writes: no time-based rule runs before the Secret write lands.
fn stamp_published(plan: &mut Plan, published: &Jwks, published_at: Timestamp) {
    for k in plan.manifest.keys.iter_mut() {
        let in_it = published.keys.iter().any(|j| j.kid == k.kid);
        if k.published_at.is_none() && k.public_jwk.is_some() && in_it {
            k.published_at = Some(published_at);
            plan.transitions
                .push(Transition::Published { kid: k.kid.clone() });
        }
    }
}

/// After both writes: verifiers see every key held (symmetric ones in the Secret), and the
/// Secret holds the material of every key that keeps it.
fn held_after_writing(manifest: &Manifest) -> Observed {
    let kids = |keep: fn(&super::KeyRecord) -> bool| -> BTreeSet<String> {
        manifest
            .keys
            .iter()
            .filter(|k| keep(k))
            .map(|k| k.kid.clone())
            .collect()
    };
    Observed {
        published: kids(|k| k.public_jwk.is_some() || k.alg.is_symmetric()),
        private: kids(|k| k.keeps_private_material()),
    }
}

fn retired_in(transitions: &[Transition]) -> impl Iterator<Item = String> + '_ {
    transitions.iter().filter_map(|t| match t {
        Transition::Retired { kid, .. } => Some(kid.clone()),
        Transition::Lost {
            kid,
            state: KeyState::Active,
        } => Some(kid.clone()),
        _ => None,
    })
}
