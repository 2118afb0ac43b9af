//! An inconsistent manifest: timestamps that cannot be, a record without its JWK, duplicated kids,
//! a state edited.

use super::*;

/// Reconciles of the set over the next 10 s.
async fn reconciles_over_ten_seconds(set: &Set) -> f64 {
    let before = set.reconciles().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    set.reconciles().await - before
}

fn record_mut<'m>(m: &'m mut Value, state: &str) -> &'m mut Value {
    let keys = m["keys"].as_array_mut().expect("keys");
    keys.iter_mut()
        .find(|k| k["state"] == state)
        .unwrap_or_else(|| panic!("a {state} record"))
}

fn duplicate(m: &mut Value, state: &str) {
    let copy = record_mut(m, state).clone();
    m["keys"].as_array_mut().expect("keys").push(copy);
}

/// The published pending key once the status lists it, as the Secret records it then: the
/// record the status and the Secret agree on.
async fn published_pending_the_status_lists(set: &Set, w: &Workload) -> KeyRecord {
    let p = w
        .until("a published pending key", DEADLINE, |c| {
            c.manifest.as_ref().and_then(pending_published).cloned()
        })
        .await;
    set.status_lists(&p.kid, "Pending").await;
    let m = set.manifest().await;
    let p = pending_published(&m).filter(|k| k.kid == p.kid);
    p.cloned().expect("the key the status lists, still pending")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_manifest_is_corrected_without_a_storm_and_timing_holds() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(10, 4, 1, 3, 1);
    let (set, w) = Set::start("inconsistent", timing).await;
    let a = active_of(&set.manifest().await)
        .cloned()
        .expect("an active key");
    let activated = a.activated_at.expect("activatedAt");
    // Late in A's life, before the next key exists: a trusted future activatedAt would push
    // the rotation back by as much.
    sleep_until(activated + SignedDuration::from_secs(4)).await;
    let ten_years = (Timestamp::now() + SignedDuration::from_hours(24 * 3650)).to_string();
    let at = w
        .edit(
            "the active key's activatedAt moved 10 years ahead, and its record duplicated",
            set.edit_manifest(|m| {
                record_mut(m, "Active")["activatedAt"] = json!(ten_years);
                duplicate(m, "Active");
            }),
        )
        .await;
    set.wait_events("RecordCorrected", 1).await;
    let storm_a = reconciles_over_ten_seconds(&set).await;
    let b = next_signer(&w, &a.kid).await;
    let b_record = w
        .with(|c| c.records.get(&b).cloned())
        .await
        .expect("B's record");
    let late = b_record
        .activated_at
        .expect("activatedAt")
        .duration_since(activated + timing.rotation_interval);
    assert!(
        late < SignedDuration::from_secs(2),
        "B took over {} ms after A's interval ended (edit at {at})",
        late.as_millis()
    );

    // A requested rotation: P is published; then its record is damaged three ways.
    set.rotate("now").await;
    let p = published_pending_the_status_lists(&set, &w).await;
    let at = w
        .edit(
            "the pending key's publishedAt moved an hour back, its publicJwk removed, its record duplicated",
            set.edit_manifest(|m| {
                let hour_ago = p.published_at.expect("publishedAt") - SignedDuration::from_hours(1);
                let pending = record_mut(m, "Pending");
                pending["publishedAt"] = json!(hour_ago.to_string());
                pending.as_object_mut().expect("a record").remove("publicJwk");
                duplicate(m, "Pending");
            }),
        )
        .await;
    let storm_p = reconciles_over_ten_seconds(&set).await;
    let activation = w
        .until("P to sign", DEADLINE, |c| {
            c.activations.iter().find(|x| x.kid == p.kid).cloned()
        })
        .await;
    let c = w.finish().await;
    assert!(
        activation.after.is_some_and(|t| t > at),
        "P was pending at the edit"
    );
    let lead = activation.lead_at_most.expect("P's publication was seen");
    assert!(
        lead >= timing.publish_lead,
        "P signed {} ms after publication",
        lead.as_millis()
    );
    let kept = c.records.get(&p.kid).and_then(|r| r.published_at);
    assert_eq!(kept, p.published_at, "P keeps its real publication time");
    eprintln!(
        "[inconsistent] B late by {} ms; P signed at most {} ms after publication; \
         reconciles in the 10 s after each edit: {storm_a}, {storm_p}",
        late.as_millis(),
        lead.as_millis()
    );
    for storm in [storm_a, storm_p] {
        assert!(storm <= 20.0, "a reconcile storm: {storm} in 10 s");
    }
    set.print_key_events();
}

/// One edited field (`"state": "Active"` -> `"Retired"` on the active key's record, the status
/// and the key material intact): the key verifiers have signs on, no key is generated (rule 7b).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_record_edited_to_retired_keeps_the_same_key_signing() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("edited-retired", QUIET).await;
    let a = set.active_kid().await;
    let at = w
        .edit(
            "the active key's record edited to state Retired",
            set.edit_manifest(|m| record_mut(m, "Active")["state"] = json!("Retired")),
        )
        .await;
    let repaired = operator_since(&w, "the record repaired", at, |c| {
        let m = c.manifest.as_ref()?;
        (active_of(m)?.kid == a).then(|| m.clone())
    })
    .await;
    w.observe(AFTER_REPAIR).await;
    let c = w.finish().await;
    set.print_key_events();
    assert_eq!(
        c.signing,
        Some(a.clone()),
        "the key verifiers have goes on signing"
    );
    assert_eq!(
        repaired.keys.len(),
        1,
        "one key, active: {:?}",
        repaired.keys
    );
    assert_eq!(set.events("KeyCreated").await, 1, "no key was generated");
    set.wait_events("RecordCorrected", 1).await;
}

/// An edit of a pending key's record, given the record the operator wrote.
type RecordEdit = fn(&mut Value, &KeyRecord);

/// Each inconsistency of a pending key's record on its own, one after the other while the key
/// waits for its lead: `publishedAt` an hour in the past, `publicJwk` removed, the record
/// duplicated. Each is repaired to one record with its JWK and a publication no earlier than
/// the real one, and the key signs no earlier than its lead after its real publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_inconsistency_of_a_pending_record_is_repaired_and_the_lead_holds() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(3600, 12, 1, 3, 1);
    let (set, w) = Set::start("pending-record", timing).await;
    set.rotate("now").await;
    let p = published_pending_the_status_lists(&set, &w).await;
    let published = p.published_at.expect("publishedAt");
    let edits: [(&str, RecordEdit); 3] = [
        (
            "the pending key's publishedAt moved an hour back",
            |m, p| {
                let hour_ago = p.published_at.expect("publishedAt") - SignedDuration::from_hours(1);
                record_mut(m, "Pending")["publishedAt"] = json!(hour_ago.to_string());
            },
        ),
        ("the pending key's publicJwk removed", |m, _| {
            let record = record_mut(m, "Pending").as_object_mut().expect("a record");
            record.remove("publicJwk");
        }),
        ("the pending key's record duplicated", |m, _| {
            duplicate(m, "Pending")
        }),
    ];
    let mut reconciles = reconciles_settled(&set, 0.0).await;
    for (what, edit) in edits {
        let at = w.edit(what, set.edit_manifest(|m| edit(m, &p))).await;
        let repaired = operator_since(&w, "the record repaired", at, |c| {
            let m = c.manifest.as_ref()?;
            let records: Vec<&KeyRecord> = m.keys.iter().filter(|k| k.kid == p.kid).collect();
            (records.len() == 1).then(|| records[0].clone())
        })
        .await;
        assert_eq!(repaired.state, KeyState::Pending, "[{what}]");
        assert_eq!(
            repaired.public_jwk, p.public_jwk,
            "[{what}] the JWK is back"
        );
        let again = repaired.published_at.expect("publishedAt");
        assert!(
            again >= published,
            "[{what}] publication moved back to {again}"
        );
        reconciles = reconciles_settled(&set, reconciles).await;
        eprintln!("[pending-record] {what}: repaired, published {again}");
    }
    let activation = w
        .until("P to sign", DEADLINE, |c| {
            c.activations.iter().find(|x| x.kid == p.kid).cloned()
        })
        .await;
    let c = w.finish().await;
    set.print_key_events();
    assert!(
        activation.by >= published + timing.publish_lead,
        "P signed by {}, before its lead from {published}",
        activation.by
    );
    assert!(c.activations.iter().all(|a| !a.unled));
}
