//! Weighing what was read from the cluster into the state of a set.
//!
//! Nothing read back is trusted as written: people edit Secrets by hand, backup tools restore
//! old copies, GitOps tools sync stale ones, other writers plant keys. Every source is evidence,
//! and `weigh` turns all of it into one manifest under these rules, safest first:
//!
//! | # | rule | why |
//! |---|------|-----|
//! | 1 | A key is identified by its own thumbprint: a record whose kid is not the thumbprint of its JWK loses the JWK; material is found in whatever file or encoding survives | names can be edited, mathematics cannot |
//! | 2 | A key is the set's own when `status.keys` (written only by the operator) or a readable manifest record names it, or, when one of those records is lost, when its private material and its published JWK both survive, or when its material survives and it is a key of the manifest this process last stored | a key the operator never recorded is never published by it |
//! | 2b | With the status lost, every key keeps published for the longest retention a valid spec allows (16 rotation intervals) once it retires, a retired key counts as retired from now, and a pending key as published from now, until this process has stored the manifest itself | the Secret may be a copy from before a tokenTTL was shortened, or from when a key that signed since was pending, or its times edited; tokens signed under the longer TTL are alive, and verifiers may have lost a pending key since the copy |
//! | 3 | Records of one kid merge: the furthest state wins, and of each time the value that waits longest (latest publication and retirement, earliest activation); a retired key stays published at least until the expiry this process last stored | states only move forward; a restored copy is older, not newer, and a status whose writes fail is older still; the state and expiry this process last stored count as one more record |
//! | 3b | A key only a restored Secret names, older than every key the status remembers, never signs again: it comes back retired at most (not a key of the manifest this process last stored: a clock set back or an edited time made it look older while the status lagged) | a key the operator let expire does not come back to life |
//! | 3c | A rotate-annotation value that the manifest or `status.rotationRequest` says was honoured is not honoured again, and a forced rotation older than the active key's activation was served by it | an emptied or restored manifest must not rotate a second time |
//! | 4 | Times more than a minute in the future are clamped to now; times a state cannot have are dropped | an edited `activatedAt` must not stop rotation, nor a `publishedAt` in the past start it early |
//! | 5 | A pending key not in the published document now counts as unpublished, and waits a full `publishLead` once it is seen again | what is published now is what verifiers hold |
//! | 5b | A pending key the status does not list, while it lists a key created after its publication, waits a full `publishLead` from now | a restored copy brings back a key the operator took out of the document; verifiers may have dropped it |
//! | 6 | A key signers may be using (in the Secret's signing slot, active in the status, or the last active key this process stored) that is not the active key retires no earlier than the write that takes it out of the slot | a pod signs with what it mounts; a restored manifest's old retirement does not undo the signing the status saw |
//! | 7 | Of two active keys, the one that may sign (not revoked, material left) stays active, then the one `status.keys` names, then the one in the signing slot, then the latest activated; the other retires now | exactly one key signs, and neither is dropped |
//! | 7b | With no active record that can sign (material left, not revoked), a retired or pending record of the key in the signing slot (not revoked; named active or pending by the status, active in the manifest this process last stored, recovered, activated by its record and unknown to the status, or the status lost), or else of the key the status names active whose material survives, or else of a slot key the status knows that is still published and not expired, is wrong and it signs on | the operator never retires a key without naming its successor in the same write; an edited state must not make an unseen key sign |
//! | 7c | An active record whose key is not in the signing slot and that the status does not name active, while the slot holds another key 7b vouches for, is wrong: it goes back to pending when the status says so, else retires now, and the slot's key signs on (7b) | the operator activates a key in the same write that puts it in the signing slot; an edited state must not make a key sign before its lead |
//! | 8 | A retired key with no public JWK left anywhere cannot be published and is dropped; keys with material are never dropped here | only expiry, revocation or loss of every encoding removes a key |
//! | 9 | A manifest of a newer version blocks: nothing is written | never destroy what a newer operator wrote |
//!
//! Loss of private material (a pending or active key with no encoding left) is the planner's
//! business: it sees the surviving material in `Observed::private`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::keys::{Algorithm, PublicJwk, kid_of_public_jwk};

use super::manifest::{KeyRecord, KeyState, MANIFEST_VERSION, Manifest, add};
use super::planner::Observed;
use super::policy::Policy;

/// Times up to this far ahead are left alone: replicas' clocks differ by that much, and a time a
/// little ahead only makes the key wait a little longer. Further ahead, an edited `activatedAt`
/// would stop rotation for good.
const FUTURE_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Where in the Secret a key's private material was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// The files signers mount: `private.pem`, `private.jwk.json`, `secret`.
    Signing,
    /// The `pending.*` files.
    Pending,
    /// `verify.jwks.json` (symmetric keys verifiers read from the Secret).
    Verify,
}

/// A key whose private material survives in the Secret, identified by its own thumbprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundKey {
    pub kid: String,
    pub alg: Algorithm,
    pub rsa_bits: Option<u32>,
    /// Derived from the private material; `None` for symmetric keys.
    pub public_jwk: Option<PublicJwk>,
    pub slots: BTreeSet<Slot>,
}

/// `manifest.json` as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRead {
    Absent,
    /// Not a manifest this operator can read; the reason names no secret.
    Unreadable(String),
    /// A manifest of a later version than this operator understands.
    Newer(u32),
    Read(Manifest),
}

/// What the Secret holds, as evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEvidence {
    pub manifest: ManifestRead,
    pub found: Vec<FoundKey>,
    /// The `kid` file, trimmed, when it names a key.
    pub named_signing: Option<String>,
    /// Files that should hold private material and hold none that can be read.
    pub unreadable: Vec<String>,
}

/// Everything read about one set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// `None` when the Secret does not exist.
    pub secret: Option<SecretEvidence>,
    /// The public keys in the set's published document(s) now, as read.
    pub published: Vec<PublicJwk>,
    /// `status.keys`: the operator's own record of the keys it created.
    pub memory: Vec<KeyRecord>,
    /// `status.rotationRequest`: the last rotate-annotation value the operator honoured.
    pub remembered_rotation_request: Option<String>,
    /// The manifest read is the one this process last stored: its times are the operator's own.
    pub own_manifest: bool,
    /// Times this process last stored (lost on restart).
    pub stored: StoredTimes,
}

/// Times from the manifest this process last stored: the operator's own word, which a status
/// whose writes fail and a restored Secret would otherwise both forget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredTimes {
    /// When each pending key was stored as published.
    pub published: BTreeMap<String, Timestamp>,
    /// Until when each retired key was stored as published.
    pub expires: BTreeMap<String, Timestamp>,
    /// The state of every key of that manifest.
    pub states: BTreeMap<String, KeyState>,
}

/// Something the weighing found and repaired, for Events and logs. Never holds key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The Secret is gone while keys were recorded or published: what survives elsewhere is
    /// kept published; nothing can sign with a key whose material was only there.
    SecretMissing,
    /// `manifest.json` could not be used; the set was rebuilt from the other evidence.
    ManifestUnusable { reason: String },
    /// A record (in the manifest or the status) was wrong and was corrected or ignored.
    RecordCorrected { kid: String, what: String },
    /// A key of this set no record named, recovered from its material and its publication.
    Recovered { kid: String },
    /// A key no record of this set names (never created by it, or expired and forgotten),
    /// found where `place` says; it is not published.
    Unrecorded { kid: String, place: &'static str },
    /// A file that should hold private material holds nothing readable; it is rendered again
    /// from the manifest (or dropped).
    FileUnreadable { file: String },
    /// A retired key whose public part survives nowhere: it can no longer be published.
    Unpublishable { kid: String },
    /// Two keys claimed to be active; `retired` retires now.
    TwoActive { kept: String, retired: String },
}

/// Why nothing may be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error(
        "manifest.json has version {0}, written by a newer operator; this one understands version {MANIFEST_VERSION} and writes nothing rather than lose what it cannot read"
    )]
    NewerManifest(u32),
}

/// The set's state, weighed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weighed {
    pub manifest: Manifest,
    pub observed: Observed,
    /// Retired keys signers may still use: their retirement counts from the next acknowledged
    /// Secret write, the one that takes them out of the signing slot.
    pub retire_on_write: BTreeSet<String>,
    pub findings: Vec<Finding>,
}

/// Weighs every piece of evidence into one manifest (see the module's rules), one rule a step.
pub fn weigh(evidence: &Evidence, policy: &Policy, now: Timestamp) -> Result<Weighed, Blocked> {
    let mut w = Weighing::new(evidence, now)?;
    w.merge_records();
    w.forgotten_stay_retired();
    w.recover_unrecorded(policy);
    w.status_lost_trust_no_time(policy);
    w.attach_public_parts();
    w.unconfirmed_activation_steps_back(policy);
    w.signing_key_signs_on(policy);
    w.unconfirmed_retirements_count_from_now();
    w.one_active(policy);
    // After rule 7: a second active key it retires may have no public part left either.
    w.drop_unpublishable();
    w.stored_expiries_stand();
    w.signers_retire_on_write();
    Ok(w.finish(policy))
}

/// The evidence of one set, indexed, and the manifest being weighed from it.
struct Weighing<'e> {
    evidence: &'e Evidence,
    now: Timestamp,
    manifest: Option<&'e Manifest>,
    /// Private material found in the Secret, by kid.
    found: BTreeMap<&'e str, &'e FoundKey>,
    /// Published keys whose kid is their thumbprint, by kid.
    published: BTreeMap<&'e str, &'e PublicJwk>,
    /// Kids of the symmetric keys verifiers read from the Secret.
    verify: BTreeSet<&'e str>,
    /// Kids signers may be using now: the signing files, and the `kid` file.
    signing: BTreeSet<&'e str>,
    records: BTreeMap<String, KeyRecord>,
    /// Keys no record named, proven the set's own by material and publication (rule 2).
    recovered: BTreeSet<String>,
    retire_on_write: BTreeSet<String>,
    findings: Vec<Finding>,
}

impl<'e> Weighing<'e> {
    /// Rule 9 (a newer manifest blocks), and the evidence indexed.
    fn new(evidence: &'e Evidence, now: Timestamp) -> Result<Self, Blocked> {
        let mut findings = Vec::new();
        let (manifest, found, named) = match &evidence.secret {
            None => (None, &[][..], None),
            Some(s) => {
                let unreadable = s.unreadable.iter().cloned();
                findings.extend(unreadable.map(|file| Finding::FileUnreadable { file }));
                let manifest = read_manifest(&s.manifest, &mut findings)?;
                (manifest, &s.found[..], s.named_signing.as_deref())
            }
        };
        let known_elsewhere = !(evidence.memory.is_empty() && evidence.published.is_empty());
        if evidence.secret.is_none() && known_elsewhere {
            findings.push(Finding::SecretMissing);
        }
        let published = verified_jwks(&evidence.published, &mut findings);
        let found: BTreeMap<&str, &FoundKey> = found.iter().map(|f| (f.kid.as_str(), f)).collect();
        let in_slot = |slot: Slot| {
            found
                .values()
                .filter(move |f| f.slots.contains(&slot))
                .map(|f| f.kid.as_str())
        };
        let verify = in_slot(Slot::Verify).collect();
        let named = named.filter(|k| found.contains_key(k));
        let signing = in_slot(Slot::Signing).chain(named).collect();
        Ok(Weighing {
            evidence,
            now,
            manifest,
            found,
            published,
            verify,
            signing,
            records: BTreeMap::new(),
            recovered: BTreeSet::new(),
            retire_on_write: BTreeSet::new(),
            findings,
        })
    }

    /// Rules 1, 3, 4: every record, checked and merged per kid; the status first, as the
    /// operator's own memory.
    fn merge_records(&mut self) {
        let from_manifest = self.manifest.iter().flat_map(|m| m.keys.iter());
        for record in self.evidence.memory.iter().chain(from_manifest) {
            let Some(record) = checked(record, self.now, &mut self.findings) else {
                continue;
            };
            let merged = match self.records.remove(&record.kid) {
                Some(earlier) => merge(earlier, record),
                None => record,
            };
            self.records.insert(merged.kid.clone(), merged);
        }
        // The state this process last stored is one more record of it: a restored copy from
        // before an activation, with the status lost, must not make a key that signed pending
        // again (and discardable).
        for (kid, state) in &self.evidence.stored.states {
            if let Some(r) = self.records.get_mut(kid)
                && *state > r.state
            {
                r.state = *state;
                fit_times_to_state(r, self.now);
            }
        }
    }

    /// Rule 3b: a key only the Secret names, older than every key the status remembers, was
    /// forgotten by the operator (it expired or was revoked) and comes back from a restored
    /// copy: it never signs again. A pending one never signed and goes; an active one stays
    /// published as retired from now (signers of the restored copy may use it). A key of the
    /// manifest this process last stored was not let go: the status lags it (its writes
    /// failing), whatever a clock set back or a time edited since says of its age.
    fn forgotten_stay_retired(&mut self) {
        let memory = &self.evidence.memory;
        let Some(oldest) = memory.iter().map(|r| r.created_at).min() else {
            return;
        };
        let stored = &self.evidence.stored.states;
        let forgotten = |r: &KeyRecord| {
            r.created_at < oldest
                && !memory.iter().any(|m| m.kid == r.kid)
                && !stored.contains_key(&r.kid)
        };
        self.records
            .retain(|_, r| !(forgotten(r) && r.state == KeyState::Pending));
        for r in self.records.values_mut() {
            if forgotten(r) && r.state == KeyState::Active {
                r.state = KeyState::Retired;
                r.expires_at = None;
                self.retire_on_write.insert(r.kid.clone());
                self.findings.push(Finding::RecordCorrected {
                    kid: r.kid.clone(),
                    what: "older than every key the status remembers: it never signs again".into(),
                });
            }
        }
    }

    /// Rule 2: material and publication together prove a key no record names, when a record
    /// may have been lost (the status is empty, or the manifest unusable); anything else no
    /// record names is not the set's. With both records intact, a key in neither was planted,
    /// even as a matching pair in both objects.
    fn recover_unrecorded(&mut self, policy: &Policy) {
        let records_lost = self.evidence.memory.is_empty() || self.manifest.is_none();
        for (kid, key) in &self.found {
            if self.records.contains_key(*kid) {
                continue;
            }
            // Symmetric keys publish only inside the Secret: one object is no independent proof.
            // A key of the manifest this process stored needs none: its record was edited away
            // while the status lagged.
            let proven = records_lost && self.published.contains_key(*kid);
            if proven || self.evidence.stored.states.contains_key(*kid) {
                self.findings.push(Finding::Recovered {
                    kid: kid.to_string(),
                });
                self.records
                    .insert(kid.to_string(), recovered(key, self.now, policy));
                self.recovered.insert(kid.to_string());
                self.retire_on_write.insert(kid.to_string());
            } else {
                self.findings.push(Finding::Unrecorded {
                    kid: kid.to_string(),
                    place: "the Secret",
                });
            }
        }
        for kid in self.published.keys() {
            if !self.records.contains_key(*kid) {
                self.findings.push(Finding::Unrecorded {
                    kid: kid.to_string(),
                    place: "the published JWKS",
                });
            }
        }
    }

    /// Rule 2b: with the status lost, the Secret's times are nobody's word: it may be an older
    /// copy (from before a longer tokenTTL was shortened, from when a key that signed since was
    /// still pending, from before verifiers lost a pending key) or edited. Every key is taken
    /// to live as long as a valid spec with this interval allows, a retired key as retired
    /// from now, and a pending key as published from now. Once this process stored the
    /// manifest, its times are its own: re-stamping them on every pass while status writes
    /// fail would rewrite the Secret each time and never let a pending key reach its lead.
    fn status_lost_trust_no_time(&mut self, policy: &Policy) {
        if !self.evidence.memory.is_empty() || self.evidence.own_manifest {
            return;
        }
        let longest = longest_valid_retention(policy);
        for r in self.records.values_mut() {
            r.longest_retention = r.longest_retention.max(Some(longest));
            // Nor does anything vouch for when a key retired or was published (a copy, or an
            // edited time): verifiers may have lost a pending key since the copy was taken.
            match r.state {
                KeyState::Retired => {
                    self.retire_on_write.insert(r.kid.clone());
                }
                KeyState::Pending => {
                    r.published_at = r.published_at.map(|at| at.max(self.now));
                }
                KeyState::Active => {}
            }
        }
    }

    /// Rule 5b: the status remembers a key created after this one was published, but not this
    /// one: the operator dropped it (it was lost or discarded, and left the document since) and
    /// a restored copy brings it back; verifiers may have dropped it too. A status that merely
    /// lags (its write failed) knows only older keys; and once the publication is stamped
    /// again, after that newer key, the rule is satisfied: it never resets a lead twice, so no
    /// pass rewrites the Secret for it while status writes fail. A status time far ahead of now
    /// (a clock set back) proves nothing.
    fn forgotten_by_status(&self, record: &KeyRecord) -> bool {
        let memory = &self.evidence.memory;
        let Some(published_at) = record.published_at else {
            return false;
        };
        let horizon = self.now + FUTURE_TOLERANCE;
        !memory.iter().any(|m| m.kid == record.kid)
            && memory
                .iter()
                .any(|m| m.created_at > published_at && m.created_at <= horizon)
    }

    /// The state `status.keys` gives a kid, if it lists it.
    fn status_state(&self, kid: &str) -> Option<KeyState> {
        let memory = &self.evidence.memory;
        memory.iter().find(|m| m.kid == kid).map(|m| m.state)
    }

    fn seen(&self, kid: &str) -> bool {
        self.published.contains_key(kid) || self.verify.contains(kid)
    }

    /// Rules 1, 5 and 5b: public parts from the strongest source; publication as seen now.
    fn attach_public_parts(&mut self) {
        let kids: Vec<String> = self.records.keys().cloned().collect();
        for kid in kids {
            let seen = self.seen(&kid);
            let material = self.found.get(kid.as_str()).copied();
            let published = self.published.get(kid.as_str()).copied();
            let forgotten = self
                .records
                .get(&kid)
                .is_some_and(|r| self.forgotten_by_status(r));
            let stored = self.evidence.stored.published.get(&kid).copied();
            if let Some(record) = self.records.get_mut(&kid) {
                attach_public_part(record, material, published);
                if record.state != KeyState::Pending || record.published_at.is_none() {
                    continue;
                }
                // This process stamped a later publication (the key came back after a gap)
                // that a lagging status and a lost manifest would forget: it waits longest.
                record.published_at = record.published_at.max(stored);
                if !seen {
                    record.published_at = None;
                } else if forgotten {
                    record.published_at = None;
                    self.findings.push(Finding::RecordCorrected {
                        kid,
                        what: "a pending key the status does not list counts as published from now"
                            .into(),
                    });
                }
            }
        }
    }

    /// Rule 8: a retired key nothing can publish any more.
    fn drop_unpublishable(&mut self) {
        let (found, findings) = (&self.found, &mut self.findings);
        self.records.retain(|kid, r| {
            let keep = r.state != KeyState::Retired
                || r.public_jwk.is_some()
                || (r.alg.is_symmetric() && found.contains_key(kid.as_str()));
            if !keep {
                findings.push(Finding::Unpublishable { kid: kid.clone() });
            }
            keep
        });
    }

    /// The key in the signing slot that may sign on (rule 7b): of the set, not active, not
    /// revoked, and named active or pending by the status (pending: the status lags the
    /// activation that put it there), or active in the manifest this process last stored, or
    /// recovered (rule 2: a status that lags never knew it), or activated by its record and
    /// unknown to the status, or the status is lost. A key the status remembers as retired
    /// was taken out of signing by the operator, unless this process made it sign again since
    /// (rule 7b itself, after a restore): the manifest it stored last is its latest word, and
    /// a status whose write was refused since is older.
    fn slot_key_vouched(&self, policy: &Policy) -> Option<String> {
        let memory = &self.evidence.memory;
        let stored_active =
            |kid: &str| self.evidence.stored.states.get(kid) == Some(&KeyState::Active);
        // A key the status never listed, whose record says it was activated, created after
        // the oldest key the status knows: the status is older than that activation (its
        // writes failing), not a witness against it. One created before was forgotten (rule
        // 3b): a key the operator let expire does not sign again.
        let oldest = memory.iter().map(|m| m.created_at).min();
        let activated_since_status = |r: &KeyRecord| {
            r.activated_at.is_some()
                && self.status_state(&r.kid).is_none()
                && oldest.is_some_and(|o| r.created_at > o)
        };
        self.records
            .values()
            .filter(|r| {
                r.state != KeyState::Active
                    && self.signing.contains(r.kid.as_str())
                    && !policy.revoked_kids.contains(&r.kid)
                    && (memory.is_empty()
                        || self
                            .status_state(&r.kid)
                            .is_some_and(|s| s != KeyState::Retired)
                        || stored_active(&r.kid)
                        || self.recovered.contains(&r.kid)
                        || activated_since_status(r))
            })
            .max_by_key(|r| (r.activated_at, r.kid.clone()))
            .map(|r| r.kid.clone())
    }

    /// Failing that (a restored Secret's slot holds an older key), the key the status names
    /// active, its material surviving in any slot: the status is the operator's own, later
    /// record, and a retirement never written with a successor was not the operator's.
    fn status_active_with_material(&self, policy: &Policy) -> Option<String> {
        let memory = &self.evidence.memory;
        memory
            .iter()
            .filter(|m| m.state == KeyState::Active)
            .filter(|m| self.found.contains_key(m.kid.as_str()))
            .filter(|m| !policy.revoked_kids.contains(&m.kid))
            .filter(|m| {
                self.records
                    .get(&m.kid)
                    .is_some_and(|r| r.state != KeyState::Active)
            })
            .map(|m| m.kid.clone())
            .max()
    }

    /// Failing both (a restored Secret's slot holds a key the status retired, and the key the
    /// status names active has no material left), and with no pending key to take over, the
    /// slot's key if verifiers still hold it: the status knows it, it is published now and not
    /// expired. Signers use it already; a fresh key would sign with no lead at all.
    fn slot_key_still_published(&self, policy: &Policy) -> Option<String> {
        let may_sign = |r: &KeyRecord| {
            !policy.revoked_kids.contains(&r.kid) && self.found.contains_key(r.kid.as_str())
        };
        if self
            .records
            .values()
            .any(|r| r.state == KeyState::Pending && may_sign(r))
        {
            return None;
        }
        self.records
            .values()
            .filter(|r| r.state == KeyState::Retired && self.signing.contains(r.kid.as_str()))
            .filter(|r| !policy.revoked_kids.contains(&r.kid))
            .filter(|r| self.status_state(&r.kid).is_some() && self.seen(&r.kid))
            .filter(|r| r.expires_at.is_none_or(|e| e > self.now))
            .max_by_key(|r| (r.activated_at, r.kid.clone()))
            .map(|r| r.kid.clone())
    }

    /// Rule 7c: the operator activates a key in the same write that puts it in the signing
    /// slot. An active record whose key is not there, and that the status does not name
    /// active, while the slot holds a key rule 7b vouches for, was never an activation: an
    /// edited `state`. Left
    /// active, the planner would move it into the slot at once, before verifiers had it for
    /// `publishLead`. It goes back to pending when the status says it was (its lead counts as
    /// before), else retires now, and the slot's key signs on (rule 7b).
    fn unconfirmed_activation_steps_back(&mut self, policy: &Policy) {
        if self.slot_key_vouched(policy).is_none() {
            return;
        }
        let unconfirmed: Vec<String> = self
            .records
            .values()
            .filter(|r| r.state == KeyState::Active && !self.signing.contains(r.kid.as_str()))
            .filter(|r| self.status_state(&r.kid) != Some(KeyState::Active))
            .map(|r| r.kid.clone())
            .collect();
        for kid in unconfirmed {
            let pending = self.status_state(&kid) == Some(KeyState::Pending);
            let Some(r) = self.records.get_mut(&kid) else {
                continue;
            };
            r.expires_at = None;
            if pending {
                r.state = KeyState::Pending;
                r.activated_at = None;
                r.retired_at = None;
            } else {
                r.state = KeyState::Retired;
                r.retired_at = Some(self.now);
                self.retire_on_write.insert(kid.clone());
            }
            let became = if pending {
                "pending"
            } else {
                "retired from now"
            };
            self.findings.push(Finding::RecordCorrected {
                kid,
                what: format!("active but not in the signing slot while another key is; {became}"),
            });
        }
    }

    /// Rule 7b: with no active record left, a retired or pending record of the key signers use
    /// now (its material in the signing slot, not revoked), or else of the key the status names
    /// active (its material anywhere), is wrong: the operator never retires a key without
    /// naming its successor in the same write, and never puts a pending key in the signing
    /// slot. An edited `state`, a restored copy, or both records lost would otherwise make a
    /// key nobody has seen sign at once in its place. A key the status forgot (rule 3b) or
    /// remembers as retired stays retired.
    fn signing_key_signs_on(&mut self, policy: &Policy) {
        // An active record whose key has no material left, or is revoked (a restored copy
        // brings back a revoked key as active), cannot sign: the slot's key or the status's
        // active key is better than a fresh one that signs at once (rule 7 retires the other).
        let can_sign = |r: &KeyRecord| {
            self.found.contains_key(r.kid.as_str()) && !policy.revoked_kids.contains(&r.kid)
        };
        if self
            .records
            .values()
            .any(|r| r.state == KeyState::Active && can_sign(r))
        {
            return;
        }
        let Some(kid) = self
            .slot_key_vouched(policy)
            .or_else(|| self.status_active_with_material(policy))
            .or_else(|| self.slot_key_still_published(policy))
        else {
            return;
        };
        let mut was = "retired";
        if let Some(r) = self.records.get_mut(&kid) {
            if r.state == KeyState::Pending {
                was = "pending";
            }
            r.state = KeyState::Active;
            r.activated_at = r.activated_at.or(Some(self.now));
            r.retired_at = None;
            r.expires_at = None;
        }
        self.retire_on_write.remove(&kid);
        self.findings.push(Finding::RecordCorrected {
            kid,
            what: format!("{was} with no active key; it signs on"),
        });
    }

    /// A retirement whose write was never confirmed (the process died) counts from now.
    fn unconfirmed_retirements_count_from_now(&mut self) {
        for r in self.records.values_mut() {
            if r.state == KeyState::Retired && r.expires_at.is_none() {
                self.retire_on_write.insert(r.kid.clone());
            }
        }
    }

    /// Rule 7: of two active keys, one by rank; the other retires now.
    fn one_active(&mut self, policy: &Policy) {
        let remembered: BTreeSet<&str> = self
            .evidence
            .memory
            .iter()
            .filter(|r| r.state == KeyState::Active)
            .map(|r| r.kid.as_str())
            .collect();
        // A key that may sign beats one that may not (revoked, or no material left); then the
        // status's choice (a restored Secret is older than the status); then what signers use
        // now (the status lags the Secret by a pass); then the latest activated.
        let rank = |r: &KeyRecord| {
            (
                !policy.revoked_kids.contains(&r.kid) && self.found.contains_key(r.kid.as_str()),
                remembered.contains(r.kid.as_str()),
                self.signing.contains(r.kid.as_str()),
                r.activated_at,
                r.kid.clone(),
            )
        };
        let actives = self
            .records
            .values()
            .filter(|r| r.state == KeyState::Active);
        let Some(kept) = actives.max_by_key(|r| rank(r)).map(|r| r.kid.clone()) else {
            return;
        };
        for r in self.records.values_mut() {
            if r.state == KeyState::Active && r.kid != kept {
                r.state = KeyState::Retired;
                r.expires_at = None;
                self.retire_on_write.insert(r.kid.clone());
                self.findings.push(Finding::TwoActive {
                    kept: kept.clone(),
                    retired: r.kid.clone(),
                });
            }
        }
    }

    /// Rule 3: an expiry this process stored counts as the latest record of it. A retired key
    /// found signing again (a restored Secret) was stored with a later expiry; a status write
    /// refused and the Secret restored once more would otherwise forget that it signed since.
    fn stored_expiries_stand(&mut self) {
        let stored = &self.evidence.stored.expires;
        for r in self.records.values_mut() {
            if r.state == KeyState::Retired
                && let Some(at) = stored.get(&r.kid)
            {
                r.expires_at = r.expires_at.max(Some(*at));
            }
        }
    }

    /// Rule 6: a retired key signers may be using retires no earlier than the write that takes
    /// it out of the signing slot: no expiry fixed before stands.
    fn signers_retire_on_write(&mut self) {
        // The status's active key signed until the status was last written at least, whatever
        // an older record (a restored manifest) says of its retirement. Only a retirement
        // older than that write is in doubt: the operator's own later retirement, which a
        // refused status write has not caught up with, stands (else every pass would restamp
        // it and rewrite the Secret).
        let horizon = self.now + FUTURE_TOLERANCE;
        let memory = &self.evidence.memory;
        let status_written_after = memory
            .iter()
            .flat_map(|m| {
                [
                    Some(m.created_at),
                    m.published_at,
                    m.activated_at,
                    m.retired_at,
                ]
            })
            .flatten()
            .filter(|t| *t <= horizon)
            .max();
        let records = &self.records;
        let remembered_active = memory
            .iter()
            .filter(|m| m.state == KeyState::Active)
            .map(|m| m.kid.as_str())
            .filter(|kid| {
                records.get(*kid).is_some_and(|r| {
                    r.retired_at
                        .zip(status_written_after)
                        .is_none_or(|(retired, seen)| retired < seen)
                })
            });
        // And the key this process last stored as active signed until it read otherwise: a
        // restored copy's older retirement does not undo the signing since.
        let stored = &self.evidence.stored.states;
        let stored_active = stored
            .iter()
            .filter(|(_, state)| **state == KeyState::Active)
            .map(|(kid, _)| kid.as_str());
        let in_use: BTreeSet<&str> = self
            .signing
            .iter()
            .copied()
            .chain(remembered_active)
            .chain(stored_active)
            .collect();
        for kid in in_use {
            if self
                .records
                .get(kid)
                .is_some_and(|r| r.state == KeyState::Retired)
            {
                self.retire_on_write.insert(kid.to_string());
            }
        }
        let now = self.now;
        for kid in &self.retire_on_write {
            if let Some(r) = self.records.get_mut(kid) {
                r.retired_at = Some(r.retired_at.map_or(now, |at| at.max(now)));
                r.expires_at = r.expires_at.filter(|e| *e > now);
            }
        }
    }

    fn finish(self, policy: &Policy) -> Weighed {
        let mut keys: Vec<KeyRecord> = self.records.into_values().collect();
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        let kids = |keep: &dyn Fn(&str) -> bool| -> BTreeSet<String> {
            keys.iter()
                .filter(|k| keep(&k.kid))
                .map(|k| k.kid.clone())
                .collect()
        };
        let observed = Observed {
            published: kids(&|kid| self.published.contains_key(kid) || self.verify.contains(kid)),
            private: kids(&|kid| self.found.contains_key(kid)),
        };
        let now = self.now;
        let (written, forced_rotation_at) = self
            .manifest
            .map(|m| {
                (
                    m.rotation_request.clone(),
                    m.forced_rotation_at.map(|t| t.min(now)),
                )
            })
            .unwrap_or_default();
        // Rule 3c: a forced rotation is served by the first activation after it; a restored
        // manifest's must not rotate the key that served it.
        let active_since = keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .and_then(|k| k.activated_at);
        let forced_rotation_at = forced_rotation_at.filter(|t| active_since.is_none_or(|a| a < *t));
        // Rule 3c: a request either record says was honoured is not honoured again (an emptied
        // or restored manifest would rotate a second time).
        let remembered = self.evidence.remembered_rotation_request.clone();
        let requested = policy.rotation_request.clone();
        let rotation_request =
            if requested.is_some() && [&written, &remembered].contains(&&requested) {
                requested
            } else {
                written.or(remembered)
            };
        Weighed {
            manifest: Manifest {
                version: MANIFEST_VERSION,
                keys,
                rotation_request,
                forced_rotation_at,
            },
            observed,
            retire_on_write: self.retire_on_write,
            findings: self.findings,
        }
    }
}

fn read_manifest<'a>(
    read: &'a ManifestRead,
    findings: &mut Vec<Finding>,
) -> Result<Option<&'a Manifest>, Blocked> {
    match read {
        ManifestRead::Read(m) => Ok(Some(m)),
        ManifestRead::Newer(version) => Err(Blocked::NewerManifest(*version)),
        ManifestRead::Unreadable(reason) => {
            findings.push(Finding::ManifestUnusable {
                reason: reason.clone(),
            });
            Ok(None)
        }
        ManifestRead::Absent => {
            findings.push(Finding::ManifestUnusable {
                reason: "the Secret has no manifest.json".into(),
            });
            Ok(None)
        }
    }
}

/// The published keys whose kid is their own thumbprint; the others are not this set's.
fn verified_jwks<'a>(
    published: &'a [PublicJwk],
    findings: &mut Vec<Finding>,
) -> BTreeMap<&'a str, &'a PublicJwk> {
    let mut verified = BTreeMap::new();
    for jwk in published {
        if jwk_is_sound(jwk) {
            verified.insert(jwk.kid.as_str(), jwk);
        } else {
            findings.push(Finding::Unrecorded {
                kid: jwk.kid.clone(),
                place: "the published JWKS (its kid is not its thumbprint)",
            });
        }
    }
    verified
}

/// A public JWK whose kid is its own thumbprint and whose `alg` fits its key type.
fn jwk_is_sound(jwk: &PublicJwk) -> bool {
    jwk.matches_alg() && kid_of_public_jwk(jwk).as_deref() == Some(jwk.kid.as_str())
}

/// A record as one source has it, corrected (rule 4) or refused (a kid that is no thumbprint).
fn checked(record: &KeyRecord, now: Timestamp, findings: &mut Vec<Finding>) -> Option<KeyRecord> {
    let mut r = record.clone();
    let mut note = |what: &str| {
        findings.push(Finding::RecordCorrected {
            kid: record.kid.clone(),
            what: what.to_string(),
        })
    };
    let well_formed = r.kid.len() == 43
        && r.kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        note("ignored: the kid is not an RFC 7638 thumbprint");
        return None;
    }
    let foreign_jwk = |jwk: &PublicJwk| {
        r.alg.is_symmetric() || jwk.kid != r.kid || !jwk_is_sound(jwk) || jwk.alg != r.alg.as_str()
    };
    if r.public_jwk.as_ref().is_some_and(foreign_jwk) {
        note("public JWK ignored: it is not this key's");
        r.public_jwk = None;
    }
    let future = |t: &mut Option<Timestamp>| match t {
        Some(at) if *at > add(now, FUTURE_TOLERANCE) => {
            *at = now;
            true
        }
        _ => false,
    };
    let mut created = Some(r.created_at);
    let clamped = [
        future(&mut created),
        future(&mut r.published_at),
        future(&mut r.activated_at),
        future(&mut r.retired_at),
    ];
    if clamped.iter().any(|c| *c) {
        note("a time in the future was set to now");
    }
    r.created_at = created.unwrap_or(now);
    fit_times_to_state(&mut r, now);
    Some(r)
}

/// Drops the times a state cannot have, and supplies the ones it must have as `now` (later
/// activation delays rotation; later retirement extends retention: both wait longer).
fn fit_times_to_state(r: &mut KeyRecord, now: Timestamp) {
    match r.state {
        KeyState::Pending => {
            r.activated_at = None;
            r.retired_at = None;
            r.expires_at = None;
        }
        KeyState::Active => {
            r.activated_at.get_or_insert(now);
            r.retired_at = None;
            r.expires_at = None;
        }
        KeyState::Retired => {
            r.retired_at.get_or_insert(now);
        }
    }
    let earliest = [r.published_at, r.activated_at, r.retired_at]
        .into_iter()
        .flatten()
        .fold(r.created_at, Timestamp::min);
    r.created_at = earliest;
}

/// Two records of one kid (rule 3): the first given is the operator's memory.
fn merge(a: KeyRecord, b: KeyRecord) -> KeyRecord {
    let later = |x: Option<Timestamp>, y: Option<Timestamp>| x.max(y);
    let earlier = |x: Option<Timestamp>, y: Option<Timestamp>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    // A pending key the Secret calls unpublished waits longest: rule 5 wrote that when the key
    // left the document (a pass that failed before reporting leaves the old time in the
    // status), or the Secret is a copy from before the publication. The status lacking a time
    // only lags the Secret.
    let state = a.state.max(b.state);
    let unpublished = state == KeyState::Pending && b.published_at.is_none();
    // Both were checked, so the merged times fit the furthest state.
    KeyRecord {
        state,
        created_at: a.created_at.min(b.created_at),
        published_at: later(a.published_at, b.published_at).filter(|_| !unpublished),
        activated_at: earlier(a.activated_at, b.activated_at),
        retired_at: later(a.retired_at, b.retired_at),
        expires_at: later(a.expires_at, b.expires_at),
        rsa_bits: a.rsa_bits.or(b.rsa_bits),
        public_jwk: a.public_jwk.clone().or(b.public_jwk),
        longest_retention: a.longest_retention.max(b.longest_retention),
        ..a
    }
}

/// A key found in the Secret and in the JWKS but named by no record: it may have signed, so it
/// is kept as retired, published for a full retention. How long its tokens live was in the lost
/// record (a tokenTTL shortened since it signed): it is taken as the longest a valid spec with
/// this rotation interval allows.
fn recovered(key: &FoundKey, now: Timestamp, policy: &Policy) -> KeyRecord {
    KeyRecord {
        kid: key.kid.clone(),
        alg: key.alg,
        rsa_bits: key.rsa_bits,
        state: KeyState::Retired,
        created_at: now,
        published_at: Some(now),
        activated_at: None,
        retired_at: Some(now),
        expires_at: None,
        public_jwk: key.public_jwk.clone(),
        longest_retention: Some(longest_valid_retention(policy)),
    }
}

/// The longest retention a valid spec with this rotation interval allows.
fn longest_valid_retention(policy: &Policy) -> jiff::SignedDuration {
    let intervals = policy.rotation_interval.as_secs();
    let longest = intervals.saturating_mul(super::policy::MAX_RETENTION_INTERVALS);
    jiff::SignedDuration::from_secs(longest).max(policy.retention())
}

/// The public part, from the material (derived), else the published JWKS, else the record.
fn attach_public_part(
    record: &mut KeyRecord,
    material: Option<&FoundKey>,
    published: Option<&PublicJwk>,
) {
    if record.alg.is_symmetric() {
        record.public_jwk = None;
        return;
    }
    if let Some(found) = material {
        record.rsa_bits = found.rsa_bits.or(record.rsa_bits);
    }
    let derived = material.and_then(|f| f.public_jwk.clone());
    let published = published.filter(|j| j.alg == record.alg.as_str()).cloned();
    if let Some(jwk) = derived.or(published) {
        record.public_jwk = Some(PublicJwk {
            alg: record.alg.as_str().to_string(),
            ..jwk
        });
    }
}
