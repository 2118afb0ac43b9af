//! Cosmetic edits of the Secret: the same key signs on, and the Secret is repaired byte-identical.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosmetic_edits_of_the_secret_keep_the_same_key_signing() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("cosmetic", QUIET).await;
    let original = set.secret_data().await;
    let kid = set.active_kid().await;
    let newline = format!("{kid}\n");
    let repaired = || async {
        eventually_identical(&set, &original).await;
        w.observe(AFTER_REPAIR).await;
    };

    w.edit(
        "kid with a trailing newline (as `echo | base64` leaves it)",
        set.set_secret_file("kid", newline.as_bytes()),
    )
    .await;
    repaired().await;
    w.edit(
        "public.pem deleted",
        set.remove_secret_files(&["public.pem"]),
    )
    .await;
    repaired().await;
    w.edit(
        "private.pem deleted; private.jwk.json still holds the key",
        set.remove_secret_files(&["private.pem"]),
    )
    .await;
    repaired().await;
    w.edit(
        "all three at once",
        set.patch_secret(json!([
            {"op": "add", "path": "/data/kid", "value": k8s_openapi::ByteString(newline.clone().into_bytes())},
            {"op": "remove", "path": "/data/public.pem"},
            {"op": "remove", "path": "/data/private.pem"},
        ])),
    )
    .await;
    repaired().await;

    let c = w.finish().await;
    let status = set.ready().await;
    assert_eq!(
        status.active_kid.as_deref(),
        Some(kid.as_str()),
        "the same key signs"
    );
    assert_eq!(
        set.events("KeyCreated").await,
        1,
        "no key was generated after the first"
    );
    let signed: BTreeSet<&str> = c.signed_with.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        signed,
        BTreeSet::from([kid.as_str()]),
        "only the one key ever signed"
    );
    assert_eq!(c.activations.len(), 1, "no activation after the first read");
    assert_eq!(set.jwks_kids().await, BTreeSet::from([kid.clone()]));
    set.print_key_events();
}

/// Waits until every data entry of the Secret is byte-identical to `original`.
async fn eventually_identical(set: &Set, original: &BTreeMap<String, k8s_openapi::ByteString>) {
    let what = format!("[{}] the Secret rewritten byte-identical", set.label);
    support::eventually(&what, DEADLINE, || async {
        (set.secret_data().await == *original).then_some(())
    })
    .await;
}
