//! One test per rule of a key's life (design.md, "The life of one key").

use std::collections::BTreeSet;

use jwt_key_rotator::keys::Algorithm;
use jwt_key_rotator::lifecycle::{
    Activation, Evidence, KeyState, Manifest, Observed, Policy, Revocation, Transition, plan,
    revocations, unpublished_by_pass,
};

use super::{Minter, all_kids, policy, run, secs, settle, t, with_cache};

fn state_of(m: &Manifest, kid: &str) -> Option<KeyState> {
    m.get(kid).map(|k| k.state)
}

/// ri=100s, lead=20s, propagation=5s, ttl=30s, skew=2s: retention 37s.
fn quick() -> Policy {
    policy(Algorithm::ES256, 100, 20, 5, 30, 2)
}

#[test]
fn bootstrap_activates_the_first_key_at_once_and_asks_to_publish_it() {
    let mut minter = Minter::default();
    let p = run(
        &quick(),
        &Manifest::empty(),
        &BTreeSet::new(),
        t(0),
        &mut minter,
    );
    let active = p.manifest.active().expect("an active key");
    assert_eq!(active.activated_at, Some(t(0)));
    assert_eq!(p.manifest.keys.len(), 1);
    assert!(p.transitions.contains(&Transition::Activated {
        kid: active.kid.clone(),
        why: Activation::Bootstrap
    }));
    assert_eq!(
        p.wake_at,
        t(0),
        "an unpublished key means: publish, then plan again"
    );
}

#[test]
fn publication_is_recorded_when_seen_and_the_next_wake_up_is_the_pending_key_creation() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    assert_eq!(p.manifest.keys[0].published_at, Some(t(0)));
    assert_eq!(p.wake_at, t(80), "due (100) minus publishLead (20)");
    assert_eq!(p.next_rotation_at, Some(t(100)));
}

#[test]
fn steady_state_planning_changes_nothing() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    for now in [1, 40, 79] {
        let again = run(
            &quick(),
            &p.manifest,
            &all_kids(&p.manifest),
            t(now),
            &mut minter,
        );
        assert_eq!(again.manifest, p.manifest, "at {now}s");
        assert!(
            again.transitions.is_empty(),
            "at {now}s: {:?}",
            again.transitions
        );
    }
    assert_eq!(minter.minted, 1);
}

#[test]
fn pending_key_is_created_publish_lead_before_it_is_due_and_not_earlier() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let early = run(
        &quick(),
        &p.manifest,
        &all_kids(&p.manifest),
        t(79),
        &mut minter,
    );
    assert_eq!(early.manifest.keys.len(), 1);
    let (on_time, transitions) = settle(&quick(), &p.manifest, t(80), &mut minter);
    assert_eq!(on_time.manifest.keys.len(), 2);
    let pending = &on_time.manifest.keys[1];
    assert_eq!(pending.state, KeyState::Pending);
    assert_eq!(pending.published_at, Some(t(80)));
    assert!(transitions.contains(&Transition::Created {
        kid: pending.kid.clone()
    }));
    assert_eq!(on_time.wake_at, t(100));
}

#[test]
fn pending_key_takes_over_when_due_and_the_old_key_retires_with_its_retention() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let second = p.manifest.keys[1].kid.clone();
    let not_yet = run(
        &quick(),
        &p.manifest,
        &all_kids(&p.manifest),
        t(99),
        &mut minter,
    );
    assert_eq!(state_of(&not_yet.manifest, &first), Some(KeyState::Active));
    let (p, transitions) = settle(&quick(), &p.manifest, t(100), &mut minter);
    assert_eq!(state_of(&p.manifest, &first), Some(KeyState::Retired));
    assert_eq!(state_of(&p.manifest, &second), Some(KeyState::Active));
    let retired = p.manifest.get(&first).unwrap();
    assert_eq!(retired.retired_at, Some(t(100)));
    assert_eq!(
        retired.expires_at,
        Some(t(137)),
        "retiredAt + propagationDelay + tokenTTL + clockSkew"
    );
    assert!(transitions.contains(&Transition::Activated {
        kid: second,
        why: Activation::Scheduled
    }));
    assert_eq!(
        p.wake_at,
        t(137),
        "the retired key's expiry comes before the next pending key (180)"
    );
}

#[test]
fn a_key_published_late_waits_the_full_publish_lead_before_it_signs() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    // The pending key is stored at 80 but the JWKS write fails until 95.
    let stored = run(
        &quick(),
        &p.manifest,
        &all_kids(&p.manifest),
        t(80),
        &mut minter,
    );
    let pending = stored.manifest.keys[1].kid.clone();
    let unpublished = all_kids(&p.manifest);
    let still = run(&quick(), &stored.manifest, &unpublished, t(94), &mut minter);
    assert_eq!(still.manifest.get(&pending).unwrap().published_at, None);
    let (published, _) = settle(&quick(), &still.manifest, t(95), &mut minter);
    assert_eq!(
        published.manifest.get(&pending).unwrap().published_at,
        Some(t(95))
    );
    let due_but_young = run(
        &quick(),
        &published.manifest,
        &all_kids(&published.manifest),
        t(114),
        &mut minter,
    );
    assert_eq!(
        state_of(&due_but_young.manifest, &pending),
        Some(KeyState::Pending)
    );
    assert_eq!(due_but_young.wake_at, t(115));
    assert_eq!(due_but_young.next_rotation_at, Some(t(115)));
    let (later, _) = settle(&quick(), &published.manifest, t(115), &mut minter);
    assert_eq!(state_of(&later.manifest, &pending), Some(KeyState::Active));
}

#[test]
fn a_retired_key_stays_published_until_its_expiry_and_not_a_second_longer() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(100), &mut minter);
    let kept = run(
        &quick(),
        &p.manifest,
        &all_kids(&p.manifest),
        t(136),
        &mut minter,
    );
    assert!(kept.manifest.get(&first).is_some());
    assert!(
        kept.manifest
            .public_jwks()
            .keys
            .iter()
            .any(|k| k.kid == first)
    );
    let (gone, transitions) = settle(&quick(), &p.manifest, t(137), &mut minter);
    assert!(gone.manifest.get(&first).is_none());
    assert!(transitions.contains(&Transition::Expired { kid: first }));
}

#[test]
fn a_longer_retention_set_after_retirement_extends_it_and_a_shorter_one_does_not_shorten_it() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(100), &mut minter);
    let mut longer = quick();
    longer.token_ttl = secs(300);
    let kept = run(
        &longer,
        &p.manifest,
        &all_kids(&p.manifest),
        t(200),
        &mut minter,
    );
    assert!(
        kept.manifest.get(&first).is_some(),
        "tokenTTL raised to 300s keeps it until 407"
    );
    let mut shorter = quick();
    shorter.token_ttl = secs(1);
    let kept = run(
        &shorter,
        &p.manifest,
        &all_kids(&p.manifest),
        t(136),
        &mut minter,
    );
    assert!(
        kept.manifest.get(&first).is_some(),
        "the expiry fixed at retirement (137) holds"
    );
}

#[test]
fn revoking_the_active_key_promotes_the_pending_key_at_once() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let second = p.manifest.keys[1].kid.clone();
    let mut revoking = quick();
    revoking.revoked_kids.insert(first.clone());
    let (r, transitions) = settle(&revoking, &p.manifest, t(81), &mut minter);
    assert!(
        r.manifest.get(&first).is_none(),
        "revoked key leaves Secret and JWKS at once"
    );
    assert_eq!(state_of(&r.manifest, &second), Some(KeyState::Active));
    assert!(transitions.contains(&Transition::Revoked {
        kid: first,
        was_active: true
    }));
    assert!(transitions.contains(&Transition::Activated {
        kid: second,
        why: Activation::Emergency
    }));
}

#[test]
fn revoking_the_only_key_mints_a_new_one_that_signs_at_once() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let mut revoking = quick();
    revoking.revoked_kids.insert(first.clone());
    let (r, _) = settle(&revoking, &p.manifest, t(10), &mut minter);
    let active = r.manifest.active().unwrap();
    assert_ne!(active.kid, first);
    assert_eq!(active.activated_at, Some(t(10)));
    assert_eq!(r.manifest.keys.len(), 1);
}

#[test]
fn revoking_a_retired_key_removes_it_before_its_expiry() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(100), &mut minter);
    let active = p.manifest.active().unwrap().kid.clone();
    let mut revoking = quick();
    revoking.revoked_kids.insert(first.clone());
    let (r, _) = settle(&revoking, &p.manifest, t(101), &mut minter);
    assert!(r.manifest.get(&first).is_none());
    assert_eq!(
        r.manifest.active().unwrap().kid,
        active,
        "the active key is untouched"
    );
}

#[test]
fn changing_the_algorithm_rolls_to_the_new_kind_through_the_safe_path() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let old_pending = p.manifest.keys[1].kid.clone();
    let old_active = p.manifest.keys[0].kid.clone();
    let eddsa = policy(Algorithm::EdDSA, 100, 20, 5, 30, 2);
    let (c, transitions) = settle(&eddsa, &p.manifest, t(85), &mut minter);
    assert_eq!(
        state_of(&c.manifest, &old_pending),
        Some(KeyState::Retired),
        "published: a lost record of its activation would not show, so it stays published"
    );
    assert_eq!(
        c.manifest.get(&old_pending).unwrap().expires_at,
        Some(t(85) + jiff::SignedDuration::from_secs(5 + 30 + 2)),
        "for a retention from the discard"
    );
    assert!(transitions.contains(&Transition::Discarded { kid: old_pending }));
    let new = c
        .manifest
        .keys
        .iter()
        .find(|k| k.alg == Algorithm::EdDSA)
        .unwrap()
        .kid
        .clone();
    assert_eq!(state_of(&c.manifest, &old_active), Some(KeyState::Active));
    assert_eq!(
        c.wake_at,
        t(105),
        "the new kind signs only after publishLead"
    );
    let (c, _) = settle(&eddsa, &c.manifest, t(105), &mut minter);
    assert_eq!(state_of(&c.manifest, &new), Some(KeyState::Active));
    assert_eq!(state_of(&c.manifest, &old_active), Some(KeyState::Retired));
}

#[test]
fn a_manual_rotation_request_rotates_once_through_the_safe_path() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let mut asked = quick();
    asked.rotation_request = Some("now-please".into());
    let (r, _) = settle(&asked, &p.manifest, t(10), &mut minter);
    assert_eq!(r.manifest.keys.len(), 2, "a pending key is minted at once");
    assert_eq!(r.wake_at, t(30));
    let (r, _) = settle(&asked, &r.manifest, t(30), &mut minter);
    assert_eq!(state_of(&r.manifest, &first), Some(KeyState::Retired));
    let minted = minter.minted;
    let (again, _) = settle(&asked, &r.manifest, t(31), &mut minter);
    assert_eq!(
        minter.minted, minted,
        "the same request value does not rotate again"
    );
    assert_eq!(again.manifest, r.manifest);
}

#[test]
fn a_clock_that_jumps_backwards_removes_and_activates_nothing() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&quick(), &p.manifest, t(100), &mut minter);
    let back = run(
        &quick(),
        &p.manifest,
        &all_kids(&p.manifest),
        t(-500),
        &mut minter,
    );
    assert_eq!(back.manifest, p.manifest);
    assert!(back.transitions.is_empty());
}

#[test]
fn a_clock_that_jumps_far_ahead_still_waits_publish_lead_for_the_next_key() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (j, _) = settle(&quick(), &p.manifest, t(10_000), &mut minter);
    assert_eq!(
        state_of(&j.manifest, &first),
        Some(KeyState::Active),
        "overdue, but the new key is not published yet"
    );
    assert_eq!(j.wake_at, t(10_020));
    let (j, _) = settle(&quick(), &j.manifest, t(10_020), &mut minter);
    assert_eq!(state_of(&j.manifest, &first), Some(KeyState::Retired));
}

#[test]
fn a_failing_key_generation_changes_nothing() {
    let result: Result<_, &str> = plan(
        &quick(),
        &Manifest::empty(),
        &Observed::default(),
        t(0),
        |_, _| Err("no entropy"),
    );
    assert_eq!(result.unwrap_err(), "no entropy");
}

#[test]
fn hmac_retired_keys_keep_their_secret_and_asymmetric_ones_do_not() {
    for (alg, keeps) in [(Algorithm::HS256, true), (Algorithm::ES256, false)] {
        let pol = policy(alg, 100, 20, 5, 30, 2);
        let mut minter = Minter::default();
        let (p, _) = settle(&pol, &Manifest::empty(), t(0), &mut minter);
        let (p, _) = settle(&pol, &p.manifest, t(80), &mut minter);
        let (p, _) = settle(&pol, &p.manifest, t(100), &mut minter);
        let retired = p
            .manifest
            .keys
            .iter()
            .find(|k| k.state == KeyState::Retired)
            .unwrap();
        assert_eq!(retired.keeps_private_material(), keeps, "{alg}");
        assert_eq!(
            p.manifest.public_jwks().keys.is_empty(),
            alg.is_symmetric(),
            "{alg}"
        );
    }
}

#[test]
fn manifest_round_trips_through_json_and_refuses_other_versions() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let json = p.manifest.to_json();
    assert_eq!(Manifest::from_json(json.as_bytes()).unwrap(), p.manifest);
    let future = json.replace("\"version\": 1", "\"version\": 2");
    let err = Manifest::from_json(future.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn an_active_key_whose_private_part_vanished_retires_and_a_new_key_signs_at_once() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let observed = Observed {
        published: all_kids(&p.manifest),
        private: BTreeSet::new(),
    };
    let Ok(lost) = plan(&quick(), &p.manifest, &observed, t(10), |a, s| {
        minter.mint(a, s)
    });
    let old = lost.manifest.get(&first).unwrap();
    assert_eq!(
        old.state,
        KeyState::Retired,
        "its public part may still verify tokens"
    );
    assert_eq!(old.retired_at, Some(t(10)));
    assert_eq!(
        old.expires_at, None,
        "fixed when the write that retires it is acknowledged"
    );
    assert_ne!(lost.manifest.active().unwrap().kid, first);
    assert!(lost.transitions.contains(&Transition::Lost {
        kid: first,
        state: KeyState::Active
    }));
}

#[test]
fn retention_counts_from_the_acknowledged_retirement_write() {
    let mut minter = Minter::default();
    let (p, _) = settle(&quick(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&quick(), &p.manifest, t(80), &mut minter);
    let (m, _) = settle(&quick(), &p.manifest, t(100), &mut minter);
    let mut manifest = m.manifest;
    let retiring = BTreeSet::from([first.clone()]);
    assert!(manifest.confirm_retired(&retiring, t(101), &quick()));
    let retired = manifest.get(&first).unwrap();
    assert_eq!(retired.retired_at, Some(t(101)));
    assert_eq!(retired.expires_at, Some(t(138)));
    assert!(
        !manifest.confirm_retired(&retiring, t(99), &quick()),
        "never earlier"
    );
}

/// ri=100s, lead=20s, propagation=5s, verifiers caching 15s, ttl=30s, skew=2s: the lead is
/// exactly propagationDelay + verifierCacheTTL.
fn cached() -> Policy {
    with_cache(quick(), 15)
}

#[test]
fn a_key_signs_only_after_propagation_delay_plus_verifier_cache_ttl_of_publication() {
    // A policy validate() refuses (lead 10s < 5s + 15s): the planner holds the rule anyway.
    let short_lead = with_cache(policy(Algorithm::ES256, 100, 10, 5, 30, 2), 15);
    assert_eq!(short_lead.signing_lead(), secs(20));
    let mut minter = Minter::default();
    let (p, _) = settle(&short_lead, &Manifest::empty(), t(0), &mut minter);
    assert_eq!(
        p.wake_at,
        t(80),
        "the next key is made 5s + 15s before it is due"
    );
    // The pending key is stored at 80, but the JWKS write fails until 85.
    let stored = run(
        &short_lead,
        &p.manifest,
        &all_kids(&p.manifest),
        t(80),
        &mut minter,
    );
    let pending = stored.manifest.keys[1].kid.clone();
    let (p, _) = settle(&short_lead, &stored.manifest, t(85), &mut minter);
    assert_eq!(p.manifest.get(&pending).unwrap().published_at, Some(t(85)));
    // Due at 100 and published for publishLead (10s) since 95; but a verifier that fetched at
    // 84 holds its copy until 99, and pods see the new one up to 5s after that.
    let (due, _) = settle(&short_lead, &p.manifest, t(104), &mut minter);
    assert_eq!(state_of(&due.manifest, &pending), Some(KeyState::Pending));
    assert_eq!(due.next_rotation_at, Some(t(105)));
    let (later, _) = settle(&short_lead, &p.manifest, t(105), &mut minter);
    assert_eq!(state_of(&later.manifest, &pending), Some(KeyState::Active));
}

#[test]
fn verifier_caches_do_not_lengthen_the_retention_of_a_retired_key() {
    // A key taken out of the JWKS lingers in caches, which only accepts tokens longer: the key
    // must be published while a token it signed is valid, and no longer.
    let mut minter = Minter::default();
    let (p, _) = settle(&cached(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&cached(), &p.manifest, t(80), &mut minter);
    let (p, _) = settle(&cached(), &p.manifest, t(100), &mut minter);
    assert_eq!(
        p.manifest.get(&first).unwrap().expires_at,
        Some(t(137)),
        "retiredAt + propagationDelay + tokenTTL + clockSkew, with no cache time"
    );
}

#[test]
fn a_pending_key_that_left_the_jwks_waits_propagation_delay_plus_cache_ttl_from_its_return() {
    let mut minter = Minter::default();
    let (p, _) = settle(&cached(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let (p, _) = settle(&cached(), &p.manifest, t(80), &mut minter);
    let pending = p.manifest.keys[1].kid.clone();
    // At 90 an older JWKS is restored: verifiers fetching now cache a copy without the key.
    let restored = super::evidence(&p.manifest, &BTreeSet::from([first]));
    let (back, _) = super::settle_from(&cached(), &restored, t(90), &mut minter);
    assert_eq!(
        back.manifest.get(&pending).unwrap().published_at,
        Some(t(90))
    );
    let (due, _) = settle(&cached(), &back.manifest, t(109), &mut minter);
    assert_eq!(
        state_of(&due.manifest, &pending),
        Some(KeyState::Pending),
        "due at 100, but a copy fetched at 90 lives until 105 and reaches pods by 110"
    );
    let (later, _) = settle(&cached(), &back.manifest, t(110), &mut minter);
    assert_eq!(state_of(&later.manifest, &pending), Some(KeyState::Active));
}

#[test]
fn a_revocation_is_effective_for_every_verifier_propagation_delay_plus_cache_ttl_after_it_left_the_jwks()
 {
    let mut minter = Minter::default();
    let (p, _) = settle(&cached(), &Manifest::empty(), t(0), &mut minter);
    let first = p.manifest.keys[0].kid.clone();
    let mut revoking = cached();
    revoking.revoked_kids.insert(first.clone());
    let (_, transitions) = settle(&revoking, &p.manifest, t(10), &mut minter);
    let this_pass = unpublished_by_pass(&Evidence::default(), &transitions);
    assert!(this_pass.contains(&first), "the pass took it out");
    let r = revocations(&revoking, &[], &this_pass, t(10));
    assert_eq!(
        r,
        vec![Revocation {
            kid: first.clone(),
            unpublished_at: t(10),
            effective_at: t(30),
        }],
        "out at 10, then 5s of propagation and 15s of cache"
    );
    // Later passes keep the times: the key stays out.
    let again = revocations(&revoking, &r, &BTreeSet::new(), t(50));
    assert_eq!(again, r);
}

#[test]
fn a_revoked_key_a_restored_jwks_published_again_counts_from_the_pass_that_took_it_out_again() {
    let mut revoking = cached();
    revoking.revoked_kids.insert("k".repeat(43));
    let first = revocations(&revoking, &[], &BTreeSet::new(), t(10));
    let seen_again = BTreeSet::from(["k".repeat(43)]);
    let r = revocations(&revoking, &first, &seen_again, t(40));
    assert_eq!(r[0].unpublished_at, t(40));
    assert_eq!(r[0].effective_at, t(60));
}

#[test]
fn raising_the_cache_ttl_moves_the_effective_time_later_and_lowering_it_does_not() {
    let mut revoking = cached();
    revoking.revoked_kids.insert("k".repeat(43));
    let r = revocations(&revoking, &[], &BTreeSet::new(), t(10));
    assert_eq!(r[0].effective_at, t(30));
    let raised = with_cache(revoking.clone(), 100);
    let r = revocations(&raised, &r, &BTreeSet::new(), t(20));
    assert_eq!(r[0].effective_at, t(115));
    let lowered = with_cache(revoking.clone(), 0);
    let r = revocations(&lowered, &r, &BTreeSet::new(), t(30));
    assert_eq!(
        r[0].effective_at,
        t(115),
        "caches filled under the longer time"
    );
    let unlisted = revocations(&cached(), &r, &BTreeSet::new(), t(40));
    assert!(
        unlisted.is_empty(),
        "a kid taken off the list is not reported"
    );
}

#[test]
fn an_effective_time_is_never_shown_earlier_than_it_is() {
    let mut revoking = cached();
    revoking.revoked_kids.insert("k".repeat(43));
    let late = t(10) + jiff::SignedDuration::from_millis(300);
    let r = revocations(&revoking, &[], &BTreeSet::new(), late);
    assert_eq!(r[0].effective_at, t(31), "30.3s rounds up to whole seconds");
}
