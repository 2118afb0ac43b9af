//! One test per rule of weighing the evidence (`lifecycle::weigh`), and of the convergence
//! loop's order of writes and bounds.

use std::collections::BTreeSet;

use jwt_key_rotator::keys::{Algorithm, Jwks, RsaKeySize};
use jwt_key_rotator::lifecycle::{
    Blocked, Cluster, Evidence, Finding, KeyRecord, KeyState, MAX_KEYS, Manifest, ManifestRead,
    NewKey, ObjectNames, Transition, WrittenNames, converge, moved, weigh,
};

use super::{Minter, all_kids, evidence, policy, settle, settle_from, t};

/// ri=100s, lead=20s, propagation=5s, ttl=90s, skew=2s: retention 97s, so a retired key is
/// still held when the next pending key comes.
fn quick() -> jwt_key_rotator::lifecycle::Policy {
    policy(Algorithm::ES256, 100, 20, 5, 90, 2)
}

/// A set after its first rotation: `[retired, active, pending]`, all published, at t(181).
fn rotated(minter: &mut Minter) -> (Manifest, [String; 3]) {
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), minter);
    let (p, _) = settle(&quick(), &p.manifest, t(80), minter);
    let (p, _) = settle(&quick(), &p.manifest, t(100), minter);
    let (p, _) = settle(&quick(), &p.manifest, t(180), minter);
    let kids = [0, 1, 2].map(|i| p.manifest.keys[i].kid.clone());
    assert_eq!(
        p.manifest.keys.iter().map(|k| k.state).collect::<Vec<_>>(),
        [KeyState::Retired, KeyState::Active, KeyState::Pending]
    );
    (p.manifest, kids)
}

fn state(m: &Manifest, kid: &str) -> Option<KeyState> {
    m.get(kid).map(|k| k.state)
}

fn with_manifest(mut e: Evidence, manifest: ManifestRead) -> Evidence {
    if let Some(s) = e.secret.as_mut() {
        s.manifest = manifest;
    }
    e
}

#[test]
fn the_evidence_of_an_untouched_set_weighs_to_its_own_manifest() {
    let mut minter = Minter::default();
    let (m, _) = rotated(&mut minter);
    let w = weigh(&evidence(&m, &all_kids(&m)), &quick(), t(181)).unwrap();
    assert_eq!(w.manifest, m);
    assert!(w.findings.is_empty(), "{:?}", w.findings);
    assert!(w.retire_on_write.is_empty());
}

#[test]
fn an_emptied_manifest_is_rebuilt_from_the_status_and_the_objects() {
    let mut minter = Minter::default();
    let (m, [retired, active, pending]) = rotated(&mut minter);
    for broken in [
        ManifestRead::Read(Manifest::empty()),
        ManifestRead::Unreadable("truncated".into()),
        ManifestRead::Absent,
    ] {
        let e = with_manifest(evidence(&m, &all_kids(&m)), broken.clone());
        let w = weigh(&e, &quick(), t(181)).unwrap();
        assert_eq!(
            state(&w.manifest, &retired),
            Some(KeyState::Retired),
            "{broken:?}"
        );
        assert_eq!(
            state(&w.manifest, &active),
            Some(KeyState::Active),
            "{broken:?}"
        );
        assert_eq!(
            state(&w.manifest, &pending),
            Some(KeyState::Pending),
            "{broken:?}"
        );
        assert_eq!(
            w.manifest.keys, m.keys,
            "times and public parts too: {broken:?}"
        );
    }
}

#[test]
fn a_record_removed_from_the_manifest_comes_back_from_the_status() {
    let mut minter = Minter::default();
    let (m, [_, active, _]) = rotated(&mut minter);
    let mut edited = m.clone();
    edited.keys.retain(|k| k.kid != active);
    let e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(edited));
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(w.manifest, m);
}

#[test]
fn with_the_status_lost_keys_that_signed_keep_the_longest_retention_a_spec_allows() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Absent);
    e.memory.clear();
    let w = weigh(&e, &quick(), t(181)).unwrap();
    // How long their tokens live was in the lost records (a tokenTTL shortened since they
    // signed): the longest a valid spec with this interval allows, 16 intervals of 100 s.
    for kid in [&active, &pending] {
        let k = w.manifest.get(kid).expect("kept");
        assert_eq!(
            k.longest_retention,
            Some(jiff::SignedDuration::from_secs(1600)),
            "{kid}"
        );
    }
    // With only the status lost, the Secret may be an older copy (rule 2b): every key in it
    // may have signed since, a pending one included, under a tokenTTL shortened since.
    let mut e = evidence(&m, &all_kids(&m));
    e.memory.clear();
    let w = weigh(&e, &quick(), t(181)).unwrap();
    for k in &w.manifest.keys {
        let longest = Some(jiff::SignedDuration::from_secs(1600));
        assert_eq!(k.longest_retention, longest, "{}", k.kid);
    }
    // Nor when a key retired: its retirement (a copy's, or an edited time) counts from now.
    assert_eq!(
        w.retire_on_write,
        BTreeSet::from([m.keys[0].kid.clone()]),
        "the retired key"
    );
    // With the status intact, the records say how long tokens live.
    let w = weigh(&evidence(&m, &all_kids(&m)), &quick(), t(181)).unwrap();
    assert_eq!(w.manifest, m);
}

#[test]
fn with_the_status_lost_a_manifest_this_process_stored_keeps_its_times() {
    let mut minter = Minter::default();
    let (m, _) = rotated(&mut minter);
    let mut e = evidence(&m, &all_kids(&m));
    e.memory.clear();
    e.own_manifest = true;
    // Status writes keep failing: the times it stamped are its own, and stamping them again
    // on every pass would rewrite the Secret each time and hold the pending key forever.
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(w.manifest.keys, m.keys);
    assert!(w.retire_on_write.is_empty());
}

#[test]
fn a_publication_this_process_stored_outlasts_a_lagging_status_and_a_lost_manifest() {
    let mut minter = Minter::default();
    let (m, [_, _, pending]) = rotated(&mut minter);
    // The pending key left the JWKS and came back: this process stamped it published at
    // t(181). The status write failed (it still says t(180)) and the manifest was lost.
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Absent);
    e.stored.published = [(pending.clone(), t(181))].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, Some(t(181)));
    // An older stored time changes nothing: the later one waits longer.
    e.stored.published = [(pending.clone(), t(100))].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, Some(t(180)));
}

#[test]
fn an_expiry_this_process_stored_outlasts_a_lagging_status_and_a_restored_secret() {
    let mut minter = Minter::default();
    let (m, [retired, _, _]) = rotated(&mut minter);
    let expires = m.get(&retired).unwrap().expires_at.unwrap();
    // A restored Secret made the retired key sign again; this process stored it retired until
    // later, the status write failed, and the Secret was restored once more.
    let later = expires + jiff::SignedDuration::from_secs(60);
    let mut e = evidence(&m, &all_kids(&m));
    e.stored.expires = [(retired.clone(), later)].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(w.manifest.get(&retired).unwrap().expires_at, Some(later));
    // An earlier stored expiry changes nothing.
    e.stored.expires = [(retired.clone(), t(100))].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(w.manifest.get(&retired).unwrap().expires_at, Some(expires));
}

#[test]
fn a_key_of_the_manifest_this_process_stored_is_not_forgotten_whatever_its_times_say() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    // The status lags (its writes fail) and knows only the pending key; the active key looks
    // older than it (a clock set back): in a restored Secret, that is a key the operator let go.
    let mut e = evidence(&m, &all_kids(&m));
    e.memory.retain(|r| r.kid == pending);
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Retired));
    // In the manifest this process stored last, it is the operator's own key: it signs on,
    // even in a copy of it edited since.
    e.stored.states = [(active.clone(), KeyState::Active)].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
}

#[test]
fn a_state_this_process_stored_outlasts_a_restored_copy_from_before_it_with_the_status_lost() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    // This process stored the pending key active (it signed); then the status was lost and a
    // copy from before that activation restored: it reads pending again, and would be
    // discarded as a pending key is when the algorithm changes.
    let mut e = evidence(&m, &all_kids(&m));
    e.memory.clear();
    e.stored.states = [(pending.clone(), KeyState::Active)].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    // The copy's active key is in the slot and signs on; the one that signed retires from now.
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &pending), Some(KeyState::Retired));
    assert!(w.retire_on_write.contains(&pending));
}

#[test]
fn a_signing_key_this_process_stored_is_recovered_when_its_records_were_edited_away() {
    let mut minter = Minter::default();
    let (m, [_, active, _]) = rotated(&mut minter);
    // The status lags (it never knew the active key) and its manifest record was removed by
    // hand: with a readable manifest and a status, nothing else proves the key is the set's.
    let mut e = evidence(&m, &all_kids(&m));
    e.memory.retain(|r| r.kid != active);
    let mut edited = m.clone();
    edited.keys.retain(|k| k.kid != active);
    let mut e = with_manifest(e, ManifestRead::Read(edited));
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(state(&w.manifest, &active), None);
    // This process stored it: it is the set's own, and signers use it: it signs on.
    e.stored.states = [(active.clone(), KeyState::Active)].into();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
}

#[test]
fn with_status_and_manifest_both_lost_the_key_signers_use_signs_on_and_the_others_are_retired() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Absent);
    e.memory.clear();
    let w = weigh(&e, &quick(), t(181)).unwrap();
    let k = w.manifest.get(&active).expect("kept");
    assert_eq!(
        k.state,
        KeyState::Active,
        "in the signing slot and published: no unseen key signs in its place"
    );
    assert!(!w.retire_on_write.contains(&active));
    assert!(w.findings.contains(&Finding::Recovered {
        kid: active.clone()
    }));
    // The pending key's material and JWK survive too, but nothing says it signed or waited.
    let p = w.manifest.get(&pending).expect("kept");
    assert_eq!(
        p.state,
        KeyState::Retired,
        "it may have signed: kept as retired"
    );
    assert_eq!(p.retired_at, Some(t(181)));
    assert!(
        w.retire_on_write.contains(&pending),
        "retention counts from the repair"
    );
}

#[test]
fn an_active_record_edited_to_retired_signs_on_when_no_key_took_over() {
    let mut minter = Minter::default();
    let (mut m, [_, active, _]) = rotated(&mut minter);
    let e = evidence(&m, &all_kids(&m));
    let record = m.keys.iter_mut().find(|k| k.kid == active).unwrap();
    record.state = KeyState::Retired;
    record.retired_at = Some(t(150));
    let w = weigh(
        &with_manifest(e.clone(), ManifestRead::Read(m.clone())),
        &quick(),
        t(181),
    )
    .unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
    // A key the status does not remember as active stays retired: this rule undoes no
    // retirement the operator made.
    let mut status_agrees = e;
    status_agrees.memory = m.keys.clone();
    let w = weigh(
        &with_manifest(status_agrees, ManifestRead::Read(m)),
        &quick(),
        t(181),
    )
    .unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Retired));
}

#[test]
fn the_status_s_active_key_signs_on_when_a_restored_secret_holds_an_older_key_in_the_slot() {
    let mut minter = Minter::default();
    let (m, [retired, active, pending]) = rotated(&mut minter);
    // The Secret restored to before the rotation: `retired` signed, `active` was pending; and
    // `active`'s record edited to retired. The status remembers the truth.
    let mut restored = m.clone();
    restored.keys.retain(|k| k.kid != pending);
    for k in restored.keys.iter_mut() {
        k.state = KeyState::Retired;
        k.retired_at = Some(t(99));
    }
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(restored));
    if let Some(s) = e.secret.as_mut() {
        for f in s.found.iter_mut() {
            f.slots = BTreeSet::from([if f.kid == retired {
                jwt_key_rotator::lifecycle::Slot::Signing
            } else {
                jwt_key_rotator::lifecycle::Slot::Pending
            }]);
        }
        s.named_signing = Some(retired.clone());
    }
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &retired), Some(KeyState::Retired));
}

#[test]
fn a_status_older_than_the_slot_key_is_no_witness_against_it() {
    let mut minter = Minter::default();
    let (mut m, [retired, active, _]) = rotated(&mut minter);
    let e = evidence(&m, &all_kids(&m));
    // Status writes failed since the first key: the status knows only `retired`, as active.
    let mut stale = e;
    stale.memory = m
        .keys
        .iter()
        .filter(|k| k.kid == retired)
        .cloned()
        .collect();
    if let Some(r) = stale.memory.first_mut() {
        r.state = KeyState::Active;
        r.retired_at = None;
        r.expires_at = None;
    }
    // The active record edited to retired: its activation says it signed, the stale status
    // never knew it. It signs on rather than a fresh key.
    if let Some(k) = m.keys.iter_mut().find(|k| k.kid == active) {
        k.state = KeyState::Retired;
    }
    let w = weigh(
        &with_manifest(stale, ManifestRead::Read(m)),
        &quick(),
        t(181),
    )
    .unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
}

#[test]
fn a_key_this_process_made_sign_again_signs_on_while_the_status_still_says_retired() {
    let mut minter = Minter::default();
    let (m, [retired, active, pending]) = rotated(&mut minter);
    // The status saw the rotation (`retired` retired, `active` signing); then its writes were
    // refused and both objects restored to before it: `active`'s material is gone everywhere,
    // and this process made `retired`, still in the slot and published, sign on (rule 7b) and
    // stored it active, with a new pending key. The status still says `retired` retired.
    let mut stored = m.clone();
    for k in stored.keys.iter_mut() {
        if k.kid == retired {
            k.state = KeyState::Active;
            k.retired_at = None;
            k.expires_at = None;
        } else if k.kid == active {
            k.state = KeyState::Retired;
            k.retired_at = Some(t(181));
        }
    }
    // The Secret holds that manifest (`active`'s material is in none of its files), verifiers
    // all three keys; the status lists the rotation it saw, not the new key.
    let mut e = evidence(&stored, &all_kids(&stored));
    e.memory = m
        .keys
        .iter()
        .filter(|k| k.kid != pending)
        .cloned()
        .collect();
    e.own_manifest = true;
    e.stored.states = stored
        .keys
        .iter()
        .map(|k| (k.kid.clone(), k.state))
        .collect();
    let w = weigh(&e, &quick(), t(182)).unwrap();
    // The manifest this process stored last is its latest word: `retired` signs on, and the
    // pending key waits its lead rather than sign at once in its place.
    assert_eq!(state(&w.manifest, &retired), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &pending), Some(KeyState::Pending));
    let (plan, transitions) = settle_from(&quick(), &e, t(182), &mut minter);
    assert_eq!(plan.manifest.active().map(|k| &k.kid), Some(&retired));
    assert!(
        !transitions
            .iter()
            .any(|t| matches!(t, Transition::Activated { .. })),
        "{transitions:?}"
    );
}

#[test]
fn a_pending_record_edited_to_active_waits_its_lead_while_the_key_signers_use_signs_on() {
    let mut minter = Minter::default();
    let (mut m, [_, active, pending]) = rotated(&mut minter);
    let e = evidence(&m, &all_kids(&m));
    for k in m.keys.iter_mut() {
        if k.kid == pending {
            k.state = KeyState::Active;
        }
        if k.kid == active {
            k.state = KeyState::Retired;
            k.retired_at = Some(t(181));
        }
    }
    let edited = with_manifest(e, ManifestRead::Read(m));
    let w = weigh(&edited, &quick(), t(181)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
    let p = w.manifest.get(&pending).expect("kept");
    assert_eq!(
        p.state,
        KeyState::Pending,
        "the status says it never signed"
    );
    assert_eq!(p.activated_at, None);
    // With the status lost too, nothing says it waited its lead: it may not sign.
    let mut lost = edited;
    lost.memory.clear();
    let w = weigh(&lost, &quick(), t(181)).unwrap();
    assert_eq!(state(&w.manifest, &active), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &pending), Some(KeyState::Retired));
    assert!(w.retire_on_write.contains(&pending));
}

#[test]
fn a_rotation_request_either_record_honoured_is_not_honoured_again() {
    let mut minter = Minter::default();
    let (m, _) = rotated(&mut minter);
    let mut policy = quick();
    policy.rotation_request = Some("once".into());
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Absent);
    e.remembered_rotation_request = Some("once".into());
    let w = weigh(&e, &policy, t(181)).unwrap();
    assert_eq!(w.manifest.rotation_request.as_deref(), Some("once"));
    // Neither record knows the value: it is a new request.
    e.remembered_rotation_request = Some("before".into());
    let w = weigh(&e, &policy, t(181)).unwrap();
    assert_eq!(w.manifest.rotation_request.as_deref(), Some("before"));
}

#[test]
fn a_key_no_record_names_is_not_published_whatever_the_jwks_says() {
    let mut minter = Minter::default();
    let (m, _) = rotated(&mut minter);
    let Ok(planted) = minter.mint(Algorithm::ES256, None);
    let mut e = evidence(&m, &all_kids(&m));
    e.published.push(planted.public_jwk.clone().unwrap());
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert!(w.manifest.get(&planted.kid).is_none());
    assert!(
        w.findings
            .iter()
            .any(|f| matches!(f, Finding::Unrecorded { kid, .. } if *kid == planted.kid))
    );
    // Not even when the Secret is gone and nothing else is known.
    let only_jwks = Evidence {
        secret: None,
        published: vec![planted.public_jwk.clone().unwrap()],
        memory: Vec::new(),
        remembered_rotation_request: None,
        own_manifest: false,
        stored: Default::default(),
    };
    let w = weigh(&only_jwks, &quick(), t(181)).unwrap();
    assert!(w.manifest.keys.is_empty());
}

#[test]
fn a_jwk_whose_kid_is_not_its_thumbprint_is_no_evidence() {
    let mut minter = Minter::default();
    let (m, [_, active, _]) = rotated(&mut minter);
    let mut e = evidence(&m, &all_kids(&m));
    let mut forged = e.published[0].clone();
    forged.kid = active.clone();
    e.published = vec![forged];
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert!(
        !w.observed.published.contains(&active),
        "a forged member does not publish the key"
    );
}

#[test]
fn the_status_s_active_key_retires_no_earlier_than_now_whatever_a_restored_record_says() {
    let mut minter = Minter::default();
    let (m, [_, active, _]) = rotated(&mut minter);
    // A restored manifest says the key the status saw signing retired long ago and has expired.
    let mut restored = m.clone();
    let record = restored.keys.iter_mut().find(|k| k.kid == active).unwrap();
    record.state = KeyState::Retired;
    record.retired_at = Some(t(100));
    record.expires_at = Some(t(150));
    let mut e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(restored));
    // Its material is not in the restored copy (else it would sign on, rule 7b).
    if let Some(s) = e.secret.as_mut() {
        s.named_signing = None;
        s.found.retain(|f| f.kid != active);
    }
    let w = weigh(&e, &quick(), t(181)).unwrap();
    let k = w.manifest.get(&active).expect("kept");
    assert_eq!(k.state, KeyState::Retired);
    assert!(
        w.retire_on_write.contains(&active),
        "it signed until the last pass"
    );
    assert_eq!(k.expires_at, None, "no expiry fixed before stands");
}

#[test]
fn an_older_secret_restored_moves_no_key_backwards() {
    let mut minter = Minter::default();
    let (before, _) = rotated(&mut minter);
    // Two more periods: k1 retires, k2 signs, k3 is pending.
    let (p, _) = settle(&quick(), &before, t(200), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(280), &mut minter);
    let now_manifest = p.manifest;
    let [k1, k2, k3] = [0, 1, 2].map(|i| now_manifest.keys[i].kid.clone());
    assert_eq!(state(&now_manifest, &k2), Some(KeyState::Active));
    // The Secret restored from t(181): k1 signs there, k2 pending; the status and JWKS are current.
    let mut e = evidence(&before, &all_kids(&before));
    e.memory = now_manifest.keys.clone();
    e.published = now_manifest.public_jwks().keys;
    let w = weigh(&e, &quick(), t(281)).unwrap();
    assert_eq!(state(&w.manifest, &k1), Some(KeyState::Retired));
    assert_eq!(state(&w.manifest, &k2), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &k3), Some(KeyState::Pending));
    assert!(
        w.retire_on_write.contains(&k1),
        "signers of the restored copy use k1: its retention counts from the repair"
    );
    assert!(
        !w.observed.private.contains(&k3),
        "k3's material is not in the old copy"
    );
}

#[test]
fn an_older_jwks_restored_makes_the_pending_key_wait_a_full_lead_again() {
    let mut minter = Minter::default();
    let (m, [retired, active, pending]) = rotated(&mut minter);
    let published = BTreeSet::from([retired, active]);
    let w = weigh(&evidence(&m, &published), &quick(), t(190)).unwrap();
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, None);
    assert!(!w.observed.published.contains(&pending));
}

#[test]
fn a_pending_key_the_status_forgot_waits_a_full_lead_when_a_restore_brings_it_back() {
    let mut minter = Minter::default();
    let (m, [_, _, pending]) = rotated(&mut minter);
    // The operator lost `pending` (its material), dropped it from the JWKS and made `newer`;
    // then both objects were restored to a copy that publishes `pending`.
    let mut newer = m.get(&pending).unwrap().clone();
    newer.kid = "newer".into();
    newer.created_at = t(185);
    let mut e = evidence(&m, &all_kids(&m));
    e.memory = m
        .keys
        .iter()
        .filter(|k| k.kid != pending)
        .cloned()
        .collect();
    e.memory.push(newer);
    let w = weigh(&e, &quick(), t(190)).unwrap();
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, None);
    assert!(
        w.findings
            .iter()
            .any(|f| matches!(f, Finding::RecordCorrected { kid, .. } if *kid == pending))
    );
    // Once stamped again, after the newer key, the rule is satisfied: no second reset, so no
    // Secret write on every pass while the status cannot be written.
    let mut stamped = m.clone();
    stamped
        .keys
        .iter_mut()
        .find(|k| k.kid == pending)
        .unwrap()
        .published_at = Some(t(186));
    let again = with_manifest(e.clone(), ManifestRead::Read(stamped));
    let w = weigh(&again, &quick(), t(190)).unwrap();
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, Some(t(186)));
    // A status that only lags (its write failed after `pending` was made) knows no newer key:
    // the manifest's time stands, or every pass would restart the lead.
    e.memory.pop();
    let w = weigh(&e, &quick(), t(190)).unwrap();
    assert_eq!(
        w.manifest.get(&pending).unwrap().published_at,
        m.get(&pending).unwrap().published_at
    );
}

#[test]
fn times_far_in_the_future_are_clamped_and_later_claims_win() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    let mut edited = m.clone();
    for k in edited.keys.iter_mut() {
        if k.kid == active {
            k.activated_at = Some(t(10_000_000));
        }
        if k.kid == pending {
            // Published "long ago": the status remembers the truth (t(180)).
            k.published_at = Some(t(50));
        }
    }
    let e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(edited));
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(
        w.manifest.get(&active).unwrap().activated_at,
        Some(t(100)),
        "the status's time, not the edit"
    );
    assert_eq!(w.manifest.get(&pending).unwrap().published_at, Some(t(180)));
    let mut alone = e.clone();
    alone.memory.clear();
    let w = weigh(&alone, &quick(), t(181)).unwrap();
    assert_eq!(w.manifest.get(&active).unwrap().activated_at, Some(t(181)));
    assert!(
        w.findings
            .iter()
            .any(|f| matches!(f, Finding::RecordCorrected { .. }))
    );
}

#[test]
fn a_duplicated_kid_is_one_key() {
    let mut minter = Minter::default();
    let (m, [_, active, _]) = rotated(&mut minter);
    let mut edited = m.clone();
    let copy = edited.get(&active).unwrap().clone();
    edited.keys.push(KeyRecord {
        state: KeyState::Pending,
        ..copy
    });
    let e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(edited));
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(w.manifest, m);
}

#[test]
fn of_two_active_keys_the_one_the_status_names_signs_and_the_other_retires() {
    let mut minter = Minter::default();
    let (m, [_, active, pending]) = rotated(&mut minter);
    let mut edited = m.clone();
    for k in edited.keys.iter_mut().filter(|k| k.kid == pending) {
        k.state = KeyState::Active;
        k.activated_at = Some(t(181));
    }
    let e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Read(edited));
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert_eq!(w.manifest.active().unwrap().kid, active);
    assert_eq!(state(&w.manifest, &pending), Some(KeyState::Retired));
    assert!(w.retire_on_write.contains(&pending));
}

#[test]
fn a_manifest_from_a_newer_operator_blocks_everything() {
    let mut minter = Minter::default();
    let (m, _) = rotated(&mut minter);
    let e = with_manifest(evidence(&m, &all_kids(&m)), ManifestRead::Newer(2));
    assert_eq!(weigh(&e, &quick(), t(181)), Err(Blocked::NewerManifest(2)));
}

#[test]
fn a_retirement_never_confirmed_counts_from_the_next_read() {
    let mut minter = Minter::default();
    let (m, [retired, _, _]) = rotated(&mut minter);
    let mut unconfirmed = m.clone();
    for k in unconfirmed.keys.iter_mut().filter(|k| k.kid == retired) {
        k.expires_at = None;
    }
    let mut e = evidence(&unconfirmed, &all_kids(&m));
    e.memory = unconfirmed.keys.clone();
    let w = weigh(&e, &quick(), t(120)).unwrap();
    assert_eq!(w.manifest.get(&retired).unwrap().retired_at, Some(t(120)));
    assert!(w.retire_on_write.contains(&retired));
}

#[test]
fn a_retired_key_with_no_public_part_anywhere_is_dropped_and_said() {
    let mut minter = Minter::default();
    let (m, [retired, _, _]) = rotated(&mut minter);
    let mut e = evidence(&m, &all_kids(&m));
    for k in e.memory.iter_mut().filter(|k| k.kid == retired) {
        k.public_jwk = None;
    }
    let mut edited = m.clone();
    for k in edited.keys.iter_mut().filter(|k| k.kid == retired) {
        k.public_jwk = None;
    }
    e = with_manifest(e, ManifestRead::Read(edited));
    e.published.retain(|k| k.kid != retired);
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert!(w.manifest.get(&retired).is_none());
    assert!(
        w.findings
            .contains(&Finding::Unpublishable { kid: retired })
    );
}

#[test]
fn the_secret_lost_with_the_status_kept_keeps_every_published_key() {
    let mut minter = Minter::default();
    let (m, [retired, active, pending]) = rotated(&mut minter);
    let mut e = evidence(&m, &all_kids(&m));
    e.secret = None;
    let w = weigh(&e, &quick(), t(181)).unwrap();
    assert!(w.findings.contains(&Finding::SecretMissing));
    for kid in [&retired, &active, &pending] {
        assert!(w.manifest.get(kid).is_some(), "{kid} still known");
    }
    assert!(w.observed.private.is_empty());
    // The planner then retires the active key (published for its retention) and one signs.
    let (p, _) = settle_from(&quick(), &e, t(181), &mut minter);
    assert_eq!(state(&p.manifest, &active), Some(KeyState::Retired));
    assert_eq!(
        state(&p.manifest, &pending),
        Some(KeyState::Retired),
        "published: a lost record of its activation would not show, so it stays published"
    );
    assert_ne!(p.manifest.active().unwrap().kid, active);
}

#[test]
fn moving_a_name_workloads_mount_is_refused() {
    let wanted = ObjectNames {
        secret: "s".into(),
        config_map: "c".into(),
        jwks_key: "new.json".into(),
    };
    let written = WrittenNames {
        secret: Some("s".into()),
        config_map: Some("c".into()),
        jwks_key: Some("jwks.json".into()),
    };
    let m = moved(&written, &wanted).expect("refused");
    assert_eq!(m.field, "spec.jwks.key");
    assert_eq!(
        moved(&WrittenNames::default(), &wanted),
        None,
        "nothing written yet"
    );
}

/// Records the order of writes.
struct Recorder<'m> {
    minter: &'m mut Minter,
    writes: Vec<(&'static str, BTreeSet<String>)>,
}

impl Cluster for Recorder<'_> {
    type Error = &'static str;
    fn now(&mut self) -> jiff::Timestamp {
        t(0)
    }
    fn mint(&mut self, alg: Algorithm, size: Option<RsaKeySize>) -> Result<NewKey, &'static str> {
        let Ok(k) = self.minter.mint(alg, size);
        Ok(k)
    }
    async fn store(&mut self, manifest: &Manifest) -> Result<(), &'static str> {
        let active = manifest
            .active()
            .map(|k| k.kid.clone())
            .into_iter()
            .collect();
        self.writes.push(("store", active));
        Ok(())
    }
    async fn publish(&mut self, jwks: &Jwks) -> Result<(), &'static str> {
        self.writes
            .push(("publish", jwks.keys.iter().map(|k| k.kid.clone()).collect()));
        Ok(())
    }
}

#[test]
fn a_key_that_must_sign_at_once_is_published_before_the_secret_names_it() {
    let mut minter = Minter::default();
    let mut cluster = Recorder {
        minter: &mut minter,
        writes: Vec::new(),
    };
    let fresh = Evidence::default();
    let c = futures::executor::block_on(converge(&mut cluster, &quick(), &fresh)).unwrap();
    let kid = c.plan.manifest.active().unwrap().kid.clone();
    assert_eq!(
        cluster.writes[0],
        ("publish", BTreeSet::from([kid.clone()]))
    );
    assert_eq!(cluster.writes[1], ("store", BTreeSet::from([kid])));
}

#[test]
fn at_the_key_limit_no_key_is_generated_and_the_rotation_waits() {
    let mut minter = Minter::default();
    let (mut m, _) = rotated(&mut minter);
    m.keys.retain(|k| k.state == KeyState::Active);
    let active = m.keys[0].clone();
    for i in 0..MAX_KEYS - 1 {
        let Ok(k) = minter.mint(Algorithm::ES256, None);
        m.keys.push(KeyRecord {
            kid: k.kid,
            state: KeyState::Retired,
            retired_at: Some(t(150 + i as i64)),
            expires_at: Some(t(1000)),
            public_jwk: k.public_jwk,
            ..active.clone()
        });
    }
    let minted = minter.minted;
    let (p, transitions) = settle(&quick(), &m, t(185), &mut minter);
    assert_eq!(minter.minted, minted, "no key generated");
    assert!(p.held_at_limit);
    assert!(transitions.is_empty(), "{transitions:?}");
    assert_eq!(p.wake_at, t(1000), "the first expiry frees a place");
}

#[test]
fn a_revoked_key_a_restored_copy_brings_back_active_does_not_unseat_the_status_active_key() {
    let hs = || policy(Algorithm::HS256, 100, 20, 5, 90, 2);
    let mut minter = Minter::default();
    let (p, _) = settle(&hs(), &Manifest::empty(), t(0), &mut minter);
    let (p, _) = settle(&hs(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&hs(), &p.manifest, t(100), &mut minter);
    let (p, _) = settle(&hs(), &p.manifest, t(180), &mut minter);
    let m = p.manifest;
    let [retired, active, pending] = [0, 1, 2].map(|i| m.keys[i].kid.clone());
    assert_eq!(state(&m, &active), Some(KeyState::Active));
    // Since: `active` was revoked (and forgotten), and the operator made `retired`, whose
    // symmetric material survives in the verification set, the signing key again. The status
    // says so. Then a backup restores the Secret from before: `active` is back, active, in the
    // slot; `retired` retired.
    let mut policy = hs();
    policy.revoked_kids.insert(active.clone());
    let mut e = evidence(&m, &all_kids(&m));
    e.memory = m
        .keys
        .iter()
        .filter(|k| k.kid != active)
        .cloned()
        .map(|mut k| {
            if k.kid == retired {
                k.state = KeyState::Active;
                k.retired_at = None;
                k.expires_at = None;
            }
            k
        })
        .collect();
    let w = weigh(&e, &policy, t(182)).unwrap();
    // A revoked key cannot sign: it is no active key to keep, and the key the status names
    // active, its material left, signs on; no fresh key signs without its lead.
    assert_eq!(state(&w.manifest, &retired), Some(KeyState::Active));
    assert_ne!(state(&w.manifest, &active), Some(KeyState::Active));
    assert_eq!(state(&w.manifest, &pending), Some(KeyState::Pending));
    let (plan, _) = settle_from(&policy, &e, t(182), &mut minter);
    assert_eq!(plan.manifest.active().map(|k| &k.kid), Some(&retired));
}
