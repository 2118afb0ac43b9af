//! Backups restored: an older Secret, ConfigMap, or both, put back after rotations.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_restored_from_before_a_rotation_keeps_the_new_key_signing() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(6, 3, 1, 3, 1);
    let (set, w) = Set::start("restore-secret", timing).await;
    // The copy holds the active key A and the pending key B, published.
    let (copy, a, b) = support::eventually("a copy with a pending key", DEADLINE, || async {
        let data = set.secret_data().await;
        let m = Manifest::from_json(&data.get("manifest.json")?.0).ok()?;
        let (a, b) = (
            active_of(&m)?.kid.clone(),
            pending_published(&m)?.kid.clone(),
        );
        Some((data, a, b))
    })
    .await;
    assert_eq!(next_signer(&w, &a).await, b, "B took over from A");
    // The status names B too: a restore before it does is
    // `a_secret_restored_while_the_status_lags_keeps_the_key_that_signed_published`.
    set.status_names(&b).await;
    let what = "the Secret restored from a copy taken before the rotation";
    let at = edit_while_stopped(&set, &w, what, set.restore_secret(&copy)).await;
    operator_since(&w, "the Secret written again", at, |_| Some(())).await;
    // A stays published for a full retention from the restore: signers of the copy used it.
    let gone = left_jwks(&w, &a, at).await;
    let c = w.finish().await;
    assert!(
        gone >= at + timing.retention(),
        "A left the JWKS at {gone}, before restore {at} + retention"
    );
    let after: Vec<&str> = c
        .activations
        .iter()
        .filter(|x| x.by > at)
        .map(|x| x.kid.as_str())
        .collect();
    assert!(
        !after.contains(&a.as_str()),
        "A never signs again: {after:?}"
    );
    assert!(
        c.signed_with.contains(&("fresh", a.clone())),
        "the workload signed with the restored copy's key"
    );
    eprintln!(
        "[restore-secret] A left the JWKS {} ms after the restore",
        gone.duration_since(at).as_millis()
    );
    set.print_key_events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_restored_makes_the_pending_key_wait_a_full_lead_again() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(8, 4, 1, 3, 1);
    let lead = timing.publish_lead;
    let (set, w) = Set::start("restore-jwks", timing).await;
    let copy = set.jwks_data().await;
    let copied = set.jwks_kids().await;
    // After a rotation, a pending key P the copy lacks, published for half its lead.
    let p = w
        .until("a pending key half-way through its lead", DEADLINE, |c| {
            let m = c.manifest.as_ref()?;
            let p = pending_published(m)?;
            let half = p.published_at? + lead / 2 <= Timestamp::now();
            let rotated = c.signing.as_ref().is_some_and(|k| !copied.contains(k));
            (half && rotated && !copied.contains(&p.kid)).then(|| p.kid.clone())
        })
        .await;
    let at = w
        .edit(
            "the ConfigMap restored from a copy taken before the last rotation",
            set.restore_map(&copy),
        )
        .await;
    let activation = w
        .until("P to sign", DEADLINE, |c| {
            c.activations.iter().find(|a| a.kid == p).cloned()
        })
        .await;
    let c = w.finish().await;
    assert!(
        activation.after.is_some_and(|t| t > at),
        "P was still pending when the copy was restored"
    );
    assert!(
        activation.by >= at + lead,
        "P signed by {}, less than publishLead after the restore at {at}",
        activation.by
    );
    let republished = c.records.get(&p).and_then(|r| r.published_at);
    assert!(
        republished.is_some_and(|t| t >= at),
        "P's publication counts from the restore: {republished:?}"
    );
    eprintln!(
        "[restore-jwks] P signed {} ms after the restore (lead {} ms)",
        activation.by.duration_since(at).as_millis(),
        lead.as_millis()
    );
    set.print_key_events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_restored_from_two_rotations_ago_lose_no_key_a_token_needs() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(5, 2, 1, 2, 1);
    let (set, w) = Set::start("restore-both", timing).await;
    let (secret_copy, map_copy) = (set.secret_data().await, set.jwks_data().await);
    let a = Manifest::from_json(&secret_copy["manifest.json"].0)
        .ok()
        .and_then(|m| active_of(&m).map(|k| k.kid.clone()))
        .expect("the copy's active key");
    // Two rotations later, A has expired and the operator forgot it.
    left_jwks(&w, &a, Timestamp::MIN).await;
    let c_kid = w
        .until("two rotations after the copy", DEADLINE, |c| {
            (c.activations.len() >= 3)
                .then(|| c.signing.clone())
                .flatten()
        })
        .await;
    set.status_names(&c_kid).await;
    // The copy overwrites the private key that signs now: another key must sign at once.
    w.allow_emergency().await;
    let what = "the Secret and the ConfigMap restored from copies two rotations old";
    let at = edit_while_stopped(&set, &w, what, async {
        let secret = set.restore_secret(&secret_copy).await;
        secret.and(set.restore_map(&map_copy).await)
    })
    .await;
    let c_now = c_kid.clone();
    let republished = operator_since(&w, "A published again", at, |c| {
        let jwks = c.operator_published.as_ref()?;
        (jwks.contains(&a) && c.signing.as_ref() != Some(&c_now)).then_some(())
    });
    republished.await;
    set.wait_events("KeyMaterialLost", 1).await;
    // Both keys tokens may need stay for a full retention from the restore.
    let a_gone = left_jwks(&w, &a, at).await;
    let c_gone = left_jwks(&w, &c_kid, at).await;
    let checker = w.finish().await;
    for (kid, gone) in [(&a, a_gone), (&c_kid, c_gone)] {
        assert!(
            gone >= at + timing.retention(),
            "{kid} left at {gone}, before the restore {at} + retention"
        );
    }
    assert!(
        checker.activations.iter().any(|x| x.unled && x.by > at),
        "a key signed at once: the one that signed was lost with the Secret"
    );
    set.print_key_events();
    eprintln!(
        "[restore-both] A left {} ms and C {} ms after the restore",
        a_gone.duration_since(at).as_millis(),
        c_gone.duration_since(at).as_millis()
    );
}

/// The status (the operator's memory) follows the Secret by one write. Here it stops following
/// once it lists the pending key B: B starts signing, the status still names A active and B
/// pending, and then a copy of the Secret from before B existed is restored. B's material is
/// gone, but pods signed with it: it stays published, retired, for a full retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_restored_while_the_status_lags_keeps_the_key_that_signed_published() {
    let _shared = GATE.read().await;
    // A 6 s lead: time to refuse status writes between B's listing and its activation.
    let timing = Timing::secs(10, 6, 1, 3, 1);
    let (set, w) = Set::start("status-lags", timing).await;
    let a = set.active_kid().await;
    let copy = set.secret_data().await;
    let b = w
        .until("a published pending key", DEADLINE, |c| {
            let m = c.manifest.as_ref()?;
            pending_published(m).map(|k| k.kid.clone())
        })
        .await;
    set.status_lists(&b, "Pending").await;
    let refused = StatusRefused::install(&set, "status writes refused by the test").await;
    // A failing status write puts the set on back-off: changes of the set bring it back.
    let started = std::time::Instant::now();
    loop {
        if w.with(|c| c.signing.as_ref() == Some(&b)).await {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "B never signed");
        set.annotate("example.com/poke", &Timestamp::now().to_string())
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.observe(AFTER_REPAIR).await;
    let status = set.sets.get(NAME).await.expect("the set").status;
    let lags = status.and_then(|s| s.active_kid);
    assert_eq!(
        lags,
        Some(a.clone()),
        "the status still names A: the scenario holds"
    );
    let at = w
        .edit(
            "the Secret restored from before B existed; the status still names A active",
            set.restore_secret(&copy),
        )
        .await;
    let published = operator_since(&w, "the operator's answer", at, |c| {
        c.operator_published.clone()
    })
    .await;
    drop(refused);
    assert!(
        published.contains(&b),
        "B, which signed, left the JWKS: {published:?}"
    );
    let gone = left_jwks(&w, &b, at).await;
    let c = w.finish().await;
    set.print_key_events();
    assert!(
        c.signed_with.contains(&("fresh", b.clone())),
        "the workload signed with B"
    );
    assert!(
        gone >= at + timing.retention(),
        "B left the JWKS at {gone}, before the restore {at} + retention"
    );
}
