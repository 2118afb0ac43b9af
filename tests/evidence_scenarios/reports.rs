//! What the operator reports: each Event names its own key, and a long refusal still arrives.

use super::*;

/// kube's `Recorder` folds Events of one reason about one object into a series that keeps the
/// first note: the operator uses one recorder per Event, so the second `KeyCreated` names the
/// second key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_event_names_its_own_key() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("event-notes", QUIET).await;
    let a = set.active_kid().await;
    set.rotate("once").await;
    let b = next_signer(&w, &a).await;
    set.wait_events("KeyCreated", 2).await;
    let notes = set.event_notes("KeyCreated").await;
    w.finish().await;
    for kid in [&a, &b] {
        let named = notes.iter().filter(|n| n.contains(kid.as_str())).count();
        assert_eq!(named, 1, "one KeyCreated Event names {kid}: {notes:?}");
    }
}

/// A write refused with a message longer than the 1024 characters an Event's note may hold (a
/// webhook's or a policy's refusal) still reaches the set's Events, cut: with the status
/// unwritable too, nothing else tells a person why the set is stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_longer_than_an_event_note_still_reaches_the_events() {
    let _shared = GATE.read().await;
    let set = Set::ready_alone("long-refusal", QUIET).await;
    let message = "status writes refused by the test; ".repeat(40);
    let refused = StatusRefused::install(&set, message.trim_end()).await;
    // A spec change: the status must be written (its observedGeneration moves), and is refused.
    let mut spec = QUIET.spec();
    spec["clockSkew"] = json!("2s");
    set.apply(spec).await;
    let what = "[long-refusal] a ReconcileError Event";
    let notes = support::eventually(what, DEADLINE, || async {
        let notes = set.event_notes("ReconcileError").await;
        (!notes.is_empty()).then_some(notes)
    })
    .await;
    drop(refused);
    let log = set.operator.log_text();
    let dropped = log.lines().find(|l| l.contains("could not publish event"));
    assert!(dropped.is_none(), "an Event was refused: {dropped:?}");
    for note in &notes {
        assert!(note.len() <= 1024, "a note of {} bytes", note.len());
        assert!(note.contains("status writes refused by the test"), "{note}");
    }
    eprintln!(
        "[long-refusal] {} ReconcileError Event(s), the first {} bytes",
        notes.len(),
        notes[0].len()
    );
}
