//! When a revocation holds for every verifier.
//!
//! A revoked key leaves the Secret and the published JWKS at once, but that cannot beat caches:
//! a verifier sees the JWKS `propagationDelay` late and keeps the copy it fetched for
//! `verifierCacheTTL`. So each revoked kid gets two times: when the operator knew the published
//! document(s) no longer held it, and, `propagationDelay + verifierCacheTTL` after that, when no
//! verifier accepts it any more.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::evidence::{Evidence, Slot};
use super::manifest::add;
use super::planner::Transition;
use super::policy::Policy;

/// One revoked kid, and when every verifier refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub kid: String,
    /// The first time the operator knew that no published document held the key: the end of the
    /// pass whose writes took it out (or found it out already). Never earlier than the truth.
    pub unpublished_at: Timestamp,
    /// `unpublished_at + propagationDelay + verifierCacheTTL`, rounded up to the second, and
    /// never earlier than a time reported before (the caches were filled under the old figures).
    pub effective_at: Timestamp,
}

/// The kids a pass found where verifiers read them (the JWKS, and for symmetric keys the
/// Secret's verification set) or took out itself: for these the revocation counts from the end
/// of this pass, even if it was reported before (a restored copy published the key again).
pub fn unpublished_by_pass(evidence: &Evidence, transitions: &[Transition]) -> BTreeSet<String> {
    let in_jwks = evidence.published.iter().map(|j| j.kid.clone());
    let in_verify_set = evidence
        .secret
        .iter()
        .flat_map(|s| &s.found)
        .filter(|f| f.slots.contains(&Slot::Verify))
        .map(|f| f.kid.clone());
    let revoked = transitions.iter().filter_map(|t| match t {
        Transition::Revoked { kid, .. } => Some(kid.clone()),
        _ => None,
    });
    in_jwks.chain(in_verify_set).chain(revoked).collect()
}

/// The revocation of every kid in `spec.revokedKids`, after a pass that ended at `now` with none
/// of them published. `remembered` is what the status said; `this_pass` the kids the pass found
/// published or took out (`unpublished_by_pass`). A kid no longer listed is no longer reported.
pub fn revocations(
    policy: &Policy,
    remembered: &[Revocation],
    this_pass: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<Revocation> {
    policy
        .revoked_kids
        .iter()
        .map(|kid| {
            let before = remembered.iter().find(|r| r.kid == *kid);
            // Known out since the earlier report, unless this pass saw it in (again); a time
            // ahead of now (a clock set back) is no later than the truth: it stands.
            let unpublished_at = match before {
                Some(r) if !this_pass.contains(kid) => r.unpublished_at,
                Some(r) => r.unpublished_at.max(now),
                None => now,
            };
            let by_rule = ceil_second(add(unpublished_at, policy.cache_horizon()));
            let effective_at = before.map_or(by_rule, |r| r.effective_at.max(by_rule));
            Revocation {
                kid: kid.clone(),
                unpublished_at,
                effective_at,
            }
        })
        .collect()
}

/// People and the API read whole seconds: an effective time must not read as earlier than it is.
fn ceil_second(t: Timestamp) -> Timestamp {
    let floor = Timestamp::from_second(t.as_second()).unwrap_or(t);
    if floor == t {
        return t;
    }
    floor
        .checked_add(jiff::SignedDuration::from_secs(1))
        .unwrap_or(t)
}
