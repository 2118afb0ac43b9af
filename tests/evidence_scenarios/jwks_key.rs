//! `spec.jwks.key` moved: refused, the document stays where verifiers mount it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_jwks_data_key_is_refused_and_the_document_stays_where_verifiers_mount_it() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("jwks-key", QUIET).await;
    let before = set.jwks_data().await;
    let kid = set.active_kid().await;
    let mut moved = QUIET.spec();
    moved["jwks"] = json!({"key": "other.json"});
    set.apply(moved).await;
    let refused = set.condition("False", "InvalidSpec").await;
    w.observe(2 * AFTER_REPAIR).await;
    let message = refused.status.expect("status").conditions[0]
        .message
        .clone();
    assert!(
        message.contains("spec.jwks.key"),
        "the field is named: {message}"
    );
    set.wait_events("InvalidSpec", 1).await;
    assert_eq!(
        set.jwks_data().await,
        before,
        "the document stays under jwks.json"
    );
    set.apply(QUIET.spec()).await;
    let status = set.ready().await;
    w.observe(AFTER_REPAIR).await;
    assert_eq!(status.active_kid, Some(kid));
    assert_eq!(set.jwks_data().await, before);
    w.finish().await;
    eprintln!("[jwks-key] refused: {message}");
    set.print_key_events();
}
