use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::keys::{Algorithm, PublicJwk, RsaKeySize};

use super::manifest::{KeyRecord, KeyState, Manifest, add};
use super::policy::{MAX_KEYS, Policy};

/// The public facts of a freshly minted key; its private part stays with the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub kid: String,
    pub alg: Algorithm,
    pub rsa_size: Option<RsaKeySize>,
    pub public_jwk: Option<PublicJwk>,
}

/// Why a key became active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The set had no key yet: nothing can have been signed, so there is nothing to wait for.
    Bootstrap,
    /// The pending key took over on schedule, after `publishLead` of publication.
    Scheduled,
    /// The set had keys but none active (the active key was revoked): a key signs at once.
    Emergency,
}

/// What the caller saw in the cluster before planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Kids present in the document verifiers read: the JWKS ConfigMap, and for symmetric keys
    /// the Secret's verification set.
    pub published: BTreeSet<String>,
    /// Kids whose private material the Secret holds.
    pub private: BTreeSet<String>,
}

/// A change the plan makes to one key, for Events and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Created {
        kid: String,
    },
    Published {
        kid: String,
    },
    Activated {
        kid: String,
        why: Activation,
    },
    Retired {
        kid: String,
        expires_at: Timestamp,
    },
    Expired {
        kid: String,
    },
    Revoked {
        kid: String,
        was_active: bool,
    },
    /// A pending key of a kind the spec no longer asks for: dropped, or, when it was published,
    /// kept published as retired for a retention.
    Discarded {
        kid: String,
    },
    /// The Secret no longer holds this key's private material (edited by hand, or an older copy
    /// restored). An asymmetric key is retired (its public part stays published); a symmetric
    /// one is dropped.
    Lost {
        kid: String,
        state: KeyState,
    },
}

/// What the manifest should become, what changed, and when to plan again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub manifest: Manifest,
    pub transitions: Vec<Transition>,
    /// The next time anything can become due. Equal to `now` when a key still has to be
    /// published: the caller publishes, then plans again.
    pub wake_at: Timestamp,
    /// When the next key is expected to take over.
    pub next_rotation_at: Option<Timestamp>,
    /// A rotation is due but waits: the set holds `MAX_KEYS` keys until the oldest expires.
    pub held_at_limit: bool,
}

/// Applies every rule of a key's life to `manifest` at `now`.
///
/// `observed` is what the caller has seen in the cluster. `mint` makes a new key of the given
/// kind; it is called at most once per plan.
pub fn plan<E>(
    policy: &Policy,
    manifest: &Manifest,
    observed: &Observed,
    now: Timestamp,
    mut mint: impl FnMut(Algorithm, Option<RsaKeySize>) -> Result<NewKey, E>,
) -> Result<Plan, E> {
    let mut p = Planning::new(policy, manifest, now);
    p.revoke();
    p.lose_vanished(observed);
    p.stamp_published(observed);
    p.expire();
    p.discard_stale_pending();
    p.honour_rotation_request();
    match p.keys.iter().position(|k| k.state == KeyState::Active) {
        None => p.activate_at_once(&mut mint)?,
        Some(active) => p.rotate_when_due(active, &mut mint)?,
    }
    p.track_longest_retention();
    Ok(p.finish(manifest.version))
}

/// A plan being made: the keys as the rules leave them, and what changed.
struct Planning<'p> {
    policy: &'p Policy,
    now: Timestamp,
    keys: Vec<KeyRecord>,
    transitions: Vec<Transition>,
    rotation_request: Option<String>,
    forced_rotation_at: Option<Timestamp>,
    had_keys: bool,
    held_at_limit: bool,
}

impl<'p> Planning<'p> {
    fn new(policy: &'p Policy, manifest: &Manifest, now: Timestamp) -> Self {
        Planning {
            policy,
            now,
            keys: manifest.keys.clone(),
            transitions: Vec::new(),
            rotation_request: manifest.rotation_request.clone(),
            forced_rotation_at: manifest.forced_rotation_at,
            had_keys: !manifest.keys.is_empty(),
            held_at_limit: false,
        }
    }

    /// Drops the keys `gone` picks, each with the transition it says.
    fn drop_where(&mut self, gone: impl Fn(&KeyRecord) -> Option<Transition>) {
        let transitions = &mut self.transitions;
        self.keys.retain(|k| match gone(k) {
            Some(t) => {
                transitions.push(t);
                false
            }
            None => true,
        });
    }

    /// A revoked key goes now, whatever its state. It cannot beat caches: verifiers holding a
    /// copy of the JWKS accept it for `propagationDelay + verifierCacheTTL` more (`revocation`).
    fn revoke(&mut self) {
        let revoked = &self.policy.revoked_kids;
        self.drop_where(|k| {
            revoked.contains(&k.kid).then(|| Transition::Revoked {
                kid: k.kid.clone(),
                was_active: k.state == KeyState::Active,
            })
        });
    }

    /// A key whose private part vanished cannot sign. Its public part may still verify tokens,
    /// so an active asymmetric key retires like any other, and so does a pending one: it may
    /// have signed for an operator whose record of its activation was lost (a Secret restored
    /// before the status caught up), and keeping it published for a retention costs one JWKS
    /// entry. A symmetric key has nothing left to publish.
    fn lose_vanished(&mut self, observed: &Observed) {
        let (now, policy) = (self.now, self.policy);
        let transitions = &mut self.transitions;
        self.keys.retain_mut(|k| {
            if !k.keeps_private_material() || observed.private.contains(&k.kid) {
                return true;
            }
            transitions.push(Transition::Lost {
                kid: k.kid.clone(),
                state: k.state,
            });
            if k.alg.is_symmetric() {
                return false;
            }
            match k.state {
                // Signers may hold it until the write that takes it out of their mounts.
                KeyState::Active => k.expires_at = None,
                // No signer can take it from the Secret any more: retention counts from now. Not
                // only when published now: a restore of both objects may have taken it out of
                // the JWKS after it signed.
                KeyState::Pending if k.public_jwk.is_some() => {
                    k.expires_at = Some(add(now, k.retention(policy)));
                }
                _ => return false,
            }
            k.state = KeyState::Retired;
            k.retired_at = Some(now);
            true
        });
    }

    /// Publication is recorded when seen, at the time it is seen.
    fn stamp_published(&mut self, observed: &Observed) {
        for k in self.keys.iter_mut() {
            if k.published_at.is_none() && observed.published.contains(&k.kid) {
                k.published_at = Some(self.now);
                self.transitions
                    .push(Transition::Published { kid: k.kid.clone() });
            }
        }
    }

    /// A retired key leaves when no token it may have signed is still valid.
    fn expire(&mut self) {
        let (policy, now) = (self.policy, self.now);
        self.drop_where(|k| {
            let expired =
                k.state == KeyState::Retired && k.expiry(policy).is_some_and(|e| now >= e);
            expired.then(|| Transition::Expired { kid: k.kid.clone() })
        });
    }

    /// A pending key of another kind is not wanted. One never published never signed and goes;
    /// a published one may have signed for an operator whose record of its activation was lost
    /// (a Secret restored with the status lost), so it stays published as retired for a full
    /// retention, like a lost one.
    fn discard_stale_pending(&mut self) {
        let (now, policy) = (self.now, self.policy);
        let transitions = &mut self.transitions;
        self.keys.retain_mut(|k| {
            if k.state != KeyState::Pending || k.matches(policy) {
                return true;
            }
            transitions.push(Transition::Discarded { kid: k.kid.clone() });
            if k.published_at.is_none() {
                return false;
            }
            k.state = KeyState::Retired;
            k.retired_at = Some(now);
            k.expires_at = Some(add(now, k.retention(policy)));
            true
        });
    }

    /// A new value of the rotate annotation makes the active key due now.
    fn honour_rotation_request(&mut self) {
        let requested = &self.policy.rotation_request;
        if requested.is_some() && *requested != self.rotation_request {
            self.rotation_request = requested.clone();
            let now = self.now;
            self.forced_rotation_at = Some(self.forced_rotation_at.map_or(now, |t| t.min(now)));
        }
    }

    /// A new pending key of the kind the policy asks for.
    fn mint<E>(
        &mut self,
        mint: &mut impl FnMut(Algorithm, Option<RsaKeySize>) -> Result<NewKey, E>,
    ) -> Result<usize, E> {
        let new = mint(self.policy.algorithm, self.policy.rsa_size)?;
        self.transitions.push(Transition::Created {
            kid: new.kid.clone(),
        });
        self.keys.push(KeyRecord {
            kid: new.kid,
            alg: new.alg,
            rsa_bits: new.rsa_size.map(|s| s.bits() as u32),
            state: KeyState::Pending,
            created_at: self.now,
            published_at: None,
            activated_at: None,
            retired_at: None,
            expires_at: None,
            public_jwk: new.public_jwk,
            longest_retention: None,
        });
        Ok(self.keys.len() - 1)
    }

    /// No key signs (bootstrap, or the active key was revoked or lost): one must, now.
    fn activate_at_once<E>(
        &mut self,
        mint: &mut impl FnMut(Algorithm, Option<RsaKeySize>) -> Result<NewKey, E>,
    ) -> Result<(), E> {
        let why = if self.had_keys {
            Activation::Emergency
        } else {
            Activation::Bootstrap
        };
        let index = match best_pending(&self.keys, self.policy) {
            Some(i) => i,
            // Even at MAX_KEYS: a set nothing can sign with is worse than one key over the
            // limit, and the render cap still bounds the Secret.
            None => self.mint(mint)?,
        };
        activate(&mut self.keys[index], self.now, why, &mut self.transitions);
        self.forced_rotation_at = None;
        Ok(())
    }

    /// A pending key is created `publishLead` before the active key is due, and takes over
    /// when it is due and has been published for `publishLead`, which is never shorter than
    /// `propagationDelay + verifierCacheTTL` (`Policy::signing_lead`): every verifier holds it.
    fn rotate_when_due<E>(
        &mut self,
        active: usize,
        mint: &mut impl FnMut(Algorithm, Option<RsaKeySize>) -> Result<NewKey, E>,
    ) -> Result<(), E> {
        let (policy, now) = (self.policy, self.now);
        let due = rotation_due(&self.keys[active], policy, self.forced_rotation_at);
        let mut pending = best_pending(&self.keys, policy);
        if pending.is_none() && now >= add(due, -policy.signing_lead()) {
            // Checked before generating: every key held is published, and a verifier fetches
            // them all; past the limit the active key signs on until one expires.
            if self.keys.len() < MAX_KEYS {
                pending = Some(self.mint(mint)?);
            } else {
                self.held_at_limit = true;
            }
        }
        let Some(p) = pending else { return Ok(()) };
        let ready = self.keys[p]
            .published_at
            .is_some_and(|at| now >= add(at, policy.signing_lead()));
        if now >= due && ready {
            let old = &mut self.keys[active];
            let expires_at = add(now, old.retention(policy));
            old.state = KeyState::Retired;
            old.retired_at = Some(now);
            // Fixed when the write that retires it is acknowledged (`confirm_retired`).
            old.expires_at = None;
            let kid = old.kid.clone();
            self.transitions
                .push(Transition::Retired { kid, expires_at });
            activate(
                &mut self.keys[p],
                now,
                Activation::Scheduled,
                &mut self.transitions,
            );
            self.forced_rotation_at = None;
        }
        Ok(())
    }

    /// Tokens signed now live under today's retention, whatever the spec says later.
    fn track_longest_retention(&mut self) {
        let retention = Some(self.policy.retention());
        if let Some(active) = self.keys.iter_mut().find(|k| k.state == KeyState::Active)
            && active.longest_retention < retention
        {
            active.longest_retention = retention;
        }
    }

    fn finish(self, version: u32) -> Plan {
        let manifest = Manifest {
            version,
            keys: self.keys,
            rotation_request: self.rotation_request,
            forced_rotation_at: self.forced_rotation_at,
        };
        let (wake_at, next_rotation_at) = schedule(&manifest, self.policy, self.now);
        Plan {
            manifest,
            transitions: self.transitions,
            wake_at,
            next_rotation_at,
            held_at_limit: self.held_at_limit,
        }
    }
}

fn activate(key: &mut KeyRecord, now: Timestamp, why: Activation, out: &mut Vec<Transition>) {
    key.state = KeyState::Active;
    key.activated_at = Some(now);
    out.push(Transition::Activated {
        kid: key.kid.clone(),
        why,
    });
}

/// The pending key to promote next: the one published longest, of the kind the policy asks for.
fn best_pending(keys: &[KeyRecord], policy: &Policy) -> Option<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, k)| k.state == KeyState::Pending && k.matches(policy))
        .min_by_key(|(_, k)| (k.published_at.is_none(), k.published_at, k.created_at))
        .map(|(i, _)| i)
}

/// When the active key must hand over: after `rotationInterval`, at a requested rotation, or at
/// once (through the safe path) when the spec asks for another kind of key.
fn rotation_due(active: &KeyRecord, policy: &Policy, forced: Option<Timestamp>) -> Timestamp {
    let activated = active.activated_at.unwrap_or(active.created_at);
    let mut due = add(activated, policy.rotation_interval);
    if let Some(forced) = forced {
        due = due.min(forced);
    }
    if !active.matches(policy) {
        due = due.min(activated);
    }
    due
}

/// The earliest time at which planning again can change anything, and the expected time of the
/// next activation.
fn schedule(
    manifest: &Manifest,
    policy: &Policy,
    now: Timestamp,
) -> (Timestamp, Option<Timestamp>) {
    // A key nothing can publish (no public part) must not keep the loop spinning.
    let unpublished = |k: &KeyRecord| {
        k.published_at.is_none() && (k.public_jwk.is_some() || k.alg.is_symmetric())
    };
    if manifest.keys.iter().any(unpublished) {
        let next = manifest
            .active()
            .map(|a| rotation_due(a, policy, manifest.forced_rotation_at));
        return (now, next);
    }
    let mut wake = Timestamp::MAX;
    let mut next_rotation = None;
    if let Some(active) = manifest.active() {
        let due = rotation_due(active, policy, manifest.forced_rotation_at);
        match best_pending(&manifest.keys, policy) {
            // At the limit, the next expiry (below) is the next chance to mint.
            None if manifest.keys.len() >= MAX_KEYS => next_rotation = Some(due),
            None => {
                wake = wake.min(add(due, -policy.signing_lead()));
                next_rotation = Some(due);
            }
            Some(p) => {
                let ready = manifest.keys[p]
                    .published_at
                    .map_or(now, |at| add(at, policy.signing_lead()));
                let at = due.max(ready);
                wake = wake.min(at);
                next_rotation = Some(at);
            }
        }
    }
    for k in &manifest.keys {
        if let Some(expiry) = k.expiry(policy) {
            wake = wake.min(expiry);
        }
    }
    // A due time already passed (a clock that went backwards then forwards) means: plan now.
    (wake.max(now), next_rotation)
}
