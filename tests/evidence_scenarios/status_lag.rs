//! The status lags the Secret: its write refused (a policy, a webhook, RBAC without
//! `jwtkeysets/status`), or not yet in the watch cache when the operator's own Secret write
//! starts the next pass. The operator corrects nothing and writes nothing for its own lag
//! (rule 5b of `evidence.rs` fires only when the status knows a key newer than the pending one).

use super::*;

/// Status writes refused while a pending key exists that the status does not list: the Secret
/// is not rewritten in a loop (once, before the fix, about 30 Secret writes and 30
/// `RecordCorrected` Events a second, each started by the operator's own write past the error
/// back-off, and the pending key never got its lead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_write_does_not_make_the_operator_rewrite_the_secret_in_a_loop() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(6, 3, 1, 3, 1);
    let set = Set::ready_alone("status-refused", timing).await;
    let refused = StatusRefused::install(&set, "status writes refused by the test").await;
    let what = "[status-refused] a pending key in the Secret";
    support::eventually(what, DEADLINE, || async {
        let m = set.manifest().await;
        m.keys
            .iter()
            .any(|k| k.state == KeyState::Pending)
            .then_some(())
    })
    .await;
    let events_before = set.events("RecordCorrected").await;
    let changes = set.secret_changes_over(Duration::from_secs(5)).await;
    let events = set.events("RecordCorrected").await - events_before;
    drop(refused);
    let log = set.operator.log_text();
    let sample: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("RecordCorrected"))
        .take(2)
        .collect();
    eprintln!(
        "[status-refused] over 5 s: {changes} Secret writes, {events} RecordCorrected Events; {sample:#?}"
    );
    assert!(
        changes <= 5,
        "the Secret was written {changes} times in 5 s with the status refused ({events} \
         RecordCorrected Events)"
    );
}

/// A new pending key is written to the Secret before the status lists it (the safe order of
/// writes), and the pass the operator's own Secret write starts may read a status that does not
/// list it yet: no `RecordCorrected` Event, no restarted lead, for a set nobody touched (once,
/// before the fix, 3 of 10 rotations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_of_a_set_nobody_edits_correct_no_record() {
    let _shared = GATE.read().await;
    let timing = Timing::secs(3600, 1, 0, 3600, 0);
    let (set, w) = Set::start("own-lag", timing).await;
    let mut kid = set.active_kid().await;
    for i in 1..=10 {
        set.rotate(&format!("r{i}")).await;
        kid = next_signer(&w, &kid).await;
    }
    w.finish().await;
    let corrected = set.logged("RecordCorrected");
    assert!(
        corrected.is_empty(),
        "{} correction(s) in 10 rotations of a set nobody edited: {corrected:#?}",
        corrected.len()
    );
}
