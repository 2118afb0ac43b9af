//! Weighing what was read from the cluster into the state of a set.
//!
//! Nothing read back is trusted as written: people edit Secrets by hand, backup tools restore
//! old copies, GitOps tools sync stale ones, other writers plant keys. Every source is evidence,
//! and `weigh` turns all of it into one manifest under these rules, safest first:
//!
//! | # | rule | why |
//! |---|------|-----|
//! | 1 | A key is identified by its own thumbprint: a record whose kid is not the thumbprint of its JWK loses the JWK; material is found in whatever file or encoding survives | names can be edited, mathematics cannot |
//! | 2 | A key is the set's own when `status.keys` (written only by the operator) or a readable manifest record names it, or when its private material and its published JWK both survive | a key the operator never recorded is never published by it |
//! | 3 | Records of one kid merge: the furthest state wins, and of each time the value that waits longest (latest publication and retirement, earliest activation) | states only move forward; a restored copy is older, not newer |
//! | 3b | A key only a restored Secret names, older than every key the status remembers, never signs again: it comes back retired at most | a key the operator let expire does not come back to life |
//! | 4 | Times more than a minute in the future are clamped to now; times a state cannot have are dropped | an edited `activatedAt` must not stop rotation, nor a `publishedAt` in the past start it early |
//! | 5 | A pending key not in the published document now counts as unpublished, and waits a full `publishLead` once it is seen again | what is published now is what verifiers hold |
//! | 6 | A key signers may be using (in the Secret's signing slot) that is not the active key retires no earlier than the write that takes it out of the slot | a pod signs with what it mounts |
//! | 7 | Of two active keys, the one that may sign (not revoked, material left) stays active, then the one `status.keys` names, then the one in the signing slot, then the latest activated; the other retires now | exactly one key signs, and neither is dropped |
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

/// Weighs every piece of evidence into one manifest (see the module's rules).
pub fn weigh(evidence: &Evidence, policy: &Policy, now: Timestamp) -> Result<Weighed, Blocked> {
    let mut findings = Vec::new();
    let (manifest, found, named_signing) = match &evidence.secret {
        None => (None, &[][..], None),
        Some(s) => {
            findings.extend(
                s.unreadable
                    .iter()
                    .map(|file| Finding::FileUnreadable { file: file.clone() }),
            );
            (
                read_manifest(&s.manifest, &mut findings)?,
                &s.found[..],
                s.named_signing.as_deref(),
            )
        }
    };
    if evidence.secret.is_none() && !(evidence.memory.is_empty() && evidence.published.is_empty()) {
        findings.push(Finding::SecretMissing);
    }
    let published = verified_jwks(&evidence.published, &mut findings);
    let found: BTreeMap<&str, &FoundKey> = found.iter().map(|f| (f.kid.as_str(), f)).collect();

    // Rules 1, 3, 4: every record, checked and merged per kid; the status first, as the
    // operator's own memory.
    let mut records: BTreeMap<String, KeyRecord> = BTreeMap::new();
    let remembered_active: BTreeSet<&str> = evidence
        .memory
        .iter()
        .filter(|r| r.state == KeyState::Active)
        .map(|r| r.kid.as_str())
        .collect();
    let from_manifest = manifest.iter().flat_map(|m| m.keys.iter());
    for record in evidence.memory.iter().chain(from_manifest) {
        let Some(record) = checked(record, now, &mut findings) else {
            continue;
        };
        let merged = match records.remove(&record.kid) {
            Some(earlier) => merge(earlier, record),
            None => record,
        };
        records.insert(merged.kid.clone(), merged);
    }
    let mut retire_on_write = BTreeSet::new();
    forgotten_stay_retired(&mut records, &evidence.memory, &mut retire_on_write, now);

    // Rule 2: material and publication together prove a key no record names.
    for (kid, key) in &found {
        if records.contains_key(*kid) {
            continue;
        }
        // Symmetric keys publish only inside the Secret: one object is no independent proof.
        if published.contains_key(*kid) {
            findings.push(Finding::Recovered {
                kid: kid.to_string(),
            });
            records.insert(kid.to_string(), recovered(key, now));
            retire_on_write.insert(kid.to_string());
        } else {
            findings.push(Finding::Unrecorded {
                kid: kid.to_string(),
                place: "the Secret",
            });
        }
    }
    for kid in published.keys() {
        if !records.contains_key(*kid) {
            findings.push(Finding::Unrecorded {
                kid: kid.to_string(),
                place: "the published JWKS",
            });
        }
    }

    // Rules 1 and 5: public parts from the strongest source, publication as seen now.
    let verify_kids: BTreeSet<&str> = found
        .values()
        .filter(|f| f.slots.contains(&Slot::Verify))
        .map(|f| f.kid.as_str())
        .collect();
    for record in records.values_mut() {
        let material = found.get(record.kid.as_str()).copied();
        attach_public_part(
            record,
            material,
            published.get(record.kid.as_str()).copied(),
        );
        let seen = published.contains_key(record.kid.as_str())
            || verify_kids.contains(record.kid.as_str());
        if record.state == KeyState::Pending && !seen {
            record.published_at = None;
        }
    }

    // Rule 8: a retired key nothing can publish any more.
    records.retain(|kid, r| {
        let keep = r.state != KeyState::Retired
            || r.public_jwk.is_some()
            || (r.alg.is_symmetric() && found.contains_key(kid.as_str()));
        if !keep {
            findings.push(Finding::Unpublishable { kid: kid.clone() });
        }
        keep
    });

    // A retirement whose write was never confirmed (the process died) counts from now.
    for r in records.values_mut() {
        if r.state == KeyState::Retired && r.expires_at.is_none() {
            r.retired_at = Some(r.retired_at.map_or(now, |at| at.max(now)));
            retire_on_write.insert(r.kid.clone());
        }
    }

    // Rules 6 and 7: one active key; a key signers use that is not it retires on the write.
    let signing: BTreeSet<&str> = found
        .values()
        .filter(|f| f.slots.contains(&Slot::Signing))
        .map(|f| f.kid.as_str())
        .chain(named_signing.filter(|k| found.contains_key(k)))
        .collect();
    // A key that may sign beats one that may not (revoked, or no material left); then the
    // status's choice (a restored Secret is older than the status); then what signers use now
    // (the status lags the Secret by a pass); then the latest activated.
    let rank = |r: &KeyRecord| {
        (
            !policy.revoked_kids.contains(&r.kid) && found.contains_key(r.kid.as_str()),
            remembered_active.contains(r.kid.as_str()),
            signing.contains(r.kid.as_str()),
            r.activated_at,
            r.kid.clone(),
        )
    };
    one_active(&mut records, &mut retire_on_write, rank, now, &mut findings);
    for kid in &signing {
        if records
            .get(*kid)
            .is_some_and(|r| r.state == KeyState::Retired)
        {
            retire_on_write.insert(kid.to_string());
        }
    }
    // Their retirement counts from now at the earliest: no expiry fixed before stands.
    for kid in &retire_on_write {
        if let Some(r) = records.get_mut(kid) {
            r.retired_at = Some(r.retired_at.map_or(now, |at| at.max(now)));
            r.expires_at = r.expires_at.filter(|e| *e > now);
        }
    }

    let mut keys: Vec<KeyRecord> = records.into_values().collect();
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    let observed = Observed {
        published: keys
            .iter()
            .filter(|k| {
                published.contains_key(k.kid.as_str()) || verify_kids.contains(k.kid.as_str())
            })
            .map(|k| k.kid.clone())
            .collect(),
        private: keys
            .iter()
            .filter(|k| found.contains_key(k.kid.as_str()))
            .map(|k| k.kid.clone())
            .collect(),
    };
    let (rotation_request, forced_rotation_at) = manifest
        .map(|m| {
            (
                m.rotation_request.clone(),
                m.forced_rotation_at.map(|t| t.min(now)),
            )
        })
        .unwrap_or_default();
    Ok(Weighed {
        manifest: Manifest {
            version: MANIFEST_VERSION,
            keys,
            rotation_request,
            forced_rotation_at,
        },
        observed,
        retire_on_write,
        findings,
    })
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
    // Both were checked, so the merged times fit the furthest state.
    KeyRecord {
        state: a.state.max(b.state),
        created_at: a.created_at.min(b.created_at),
        published_at: later(a.published_at, b.published_at),
        activated_at: earlier(a.activated_at, b.activated_at),
        retired_at: later(a.retired_at, b.retired_at),
        expires_at: later(a.expires_at, b.expires_at),
        rsa_bits: a.rsa_bits.or(b.rsa_bits),
        public_jwk: a.public_jwk.clone().or(b.public_jwk),
        longest_retention: a.longest_retention.max(b.longest_retention),
        ..a
    }
}

/// Rule 3b: a key only the Secret names, older than every key the status remembers, was
/// forgotten by the operator (it expired or was revoked) and comes back from a restored copy:
/// it never signs again. A pending one never signed and goes; any other stays published as
/// retired from now (signers of the restored copy may use it).
fn forgotten_stay_retired(
    records: &mut BTreeMap<String, KeyRecord>,
    memory: &[KeyRecord],
    retire_on_write: &mut BTreeSet<String>,
    now: Timestamp,
) {
    let Some(oldest) = memory.iter().map(|r| r.created_at).min() else {
        return;
    };
    let forgotten = |r: &KeyRecord| r.created_at < oldest && !memory.iter().any(|m| m.kid == r.kid);
    records.retain(|_, r| !(forgotten(r) && r.state == KeyState::Pending));
    for r in records.values_mut() {
        if forgotten(r) && r.state == KeyState::Active {
            r.state = KeyState::Retired;
            r.retired_at = Some(now);
            r.expires_at = None;
            retire_on_write.insert(r.kid.clone());
        }
    }
}

/// A key found in the Secret and in the JWKS but named by no record: it may have signed, so it
/// is kept as retired, published for a full retention.
fn recovered(key: &FoundKey, now: Timestamp) -> KeyRecord {
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
        longest_retention: None,
    }
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

/// Rule 7: exactly one active key among the records, the first by `rank`.
fn one_active<R: Ord>(
    records: &mut BTreeMap<String, KeyRecord>,
    retire_on_write: &mut BTreeSet<String>,
    rank: impl Fn(&KeyRecord) -> R,
    now: Timestamp,
    findings: &mut Vec<Finding>,
) {
    let actives: Vec<&KeyRecord> = records
        .values()
        .filter(|r| r.state == KeyState::Active)
        .collect();
    if actives.len() < 2 {
        return;
    }
    let Some(kept) = actives
        .iter()
        .max_by_key(|r| rank(r))
        .map(|r| r.kid.clone())
    else {
        return;
    };
    for r in records.values_mut() {
        if r.state == KeyState::Active && r.kid != kept {
            r.state = KeyState::Retired;
            r.retired_at = Some(now);
            r.expires_at = None;
            retire_on_write.insert(r.kid.clone());
            findings.push(Finding::TwoActive {
                kept: kept.clone(),
                retired: r.kid.clone(),
            });
        }
    }
}
