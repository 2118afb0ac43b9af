//! Revocation and requested rotation after every kind of edit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_requested_rotation_work_after_every_kind_of_edit() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("operations", QUIET).await;
    let map_copy = set.jwks_data().await;
    let a = set.active_kid().await;
    let at = w
        .edit(
            "manifest.json emptied",
            set.set_secret_file("manifest.json", b"{}"),
        )
        .await;
    operator_since(&w, "the manifest rebuilt", at, |c| c.manifest.clone()).await;
    set.rotate("first").await;
    let b = next_signer(&w, &a).await;
    let newline = format!("{b}\n");
    let at = w
        .edit(
            "kid with a trailing newline",
            set.set_secret_file("kid", newline.as_bytes()),
        )
        .await;
    operator_since(&w, "the kid repaired", at, |_| Some(())).await;
    let at = w
        .edit(
            "the ConfigMap restored from before the rotation",
            set.restore_map(&map_copy),
        )
        .await;
    operator_since(&w, "B published again", at, |c| {
        c.operator_published.as_ref()?.contains(&b).then_some(())
    })
    .await;
    assert_eq!(
        w.with(|c| c.signing.clone()).await.as_deref(),
        Some(b.as_str())
    );

    // Revoke the active key: it goes at once, and another key signs at once.
    w.revoke(&b).await;
    w.allow_emergency().await;
    let mut revoked = QUIET.spec();
    revoked["revokedKids"] = json!([b.clone()]);
    set.apply(revoked.clone()).await;
    let c_kid = w
        .until("B gone and another key signing", DEADLINE, |c| {
            let gone = !c.operator_published.as_ref()?.contains(&b);
            gone.then(|| c.signing.clone().filter(|k| *k != b))
                .flatten()
        })
        .await;
    set.wait_events("KeyRevoked", 1).await;
    assert!(
        !set.secret_data()
            .await
            .values()
            .any(|v| v.0 == b.as_bytes())
    );

    // A requested rotation goes through the safe path: published for publishLead first.
    set.rotate("second").await;
    let d = next_signer(&w, &c_kid).await;
    let c = w.finish().await;
    let d_activation = c
        .activations
        .iter()
        .find(|x| x.kid == d)
        .expect("D's activation");
    let lead = d_activation.lead_at_most.expect("D's publication seen");
    assert!(lead >= QUIET.publish_lead && !d_activation.unled);
    assert!(!set.jwks_kids().await.contains(&b));
    eprintln!(
        "[operations] after the edits: revoked {b}, {c_kid} signed at once, {d} after {} ms",
        lead.as_millis()
    );
    set.print_key_events();
}
