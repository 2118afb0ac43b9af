//! Bounds: a spec that would outgrow the Secret, and the key limit.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_that_would_outgrow_the_secret_is_refused_at_admission() {
    let _shared = GATE.read().await;
    let client = support::client().await;
    let ns = support::namespace(&client, "outgrow").await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        &ns,
        &ApiResource::erase::<jwt_key_rotator::api::JwtKeySet>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "metadata": {"name": NAME},
        "spec": {"algorithm": "ES256", "rotationInterval": "2s", "publishLead": "1s",
                 "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "87599h", "clockSkew": "0s"},
    }))
    .expect("an object");
    match api.create(&PostParams::default(), &object).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.tokenTTL"),
                "{}",
                status.message
            );
            eprintln!("[outgrow] refused: {}", status.message);
        }
        other => panic!("admitted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rotations_stop_at_the_key_limit_and_the_active_key_signs_on() {
    let _shared = GATE.read().await;
    // Retired keys outlive the test (tokenTTL 1h); each rotation waits a 1 s lead.
    let timing = Timing::secs(3600, 1, 0, 3600, 0);
    let (set, w) = Set::start("limit", timing).await;
    let mut kid = set.active_kid().await;
    for i in 1..20 {
        set.rotate(&format!("r{i}")).await;
        kid = next_signer(&w, &kid).await;
    }
    set.rotate("r20").await;
    let held = set.condition("True", "RotationHeld").await;
    let status = held.status.expect("status");
    assert_eq!(status.key_count, Some(20));
    set.wait_events("KeyLimitReached", 1).await;
    // Asked again: each request is reconciled, no key is generated.
    for i in 21..24 {
        let before = set.reconciles().await;
        set.rotate(&format!("r{i}")).await;
        set.reconciled_after(before).await;
    }
    let c = w.finish().await;
    assert_eq!(set.events("KeyCreated").await, 20);
    assert_eq!(set.active_kid().await, kid, "the active key signs on");
    assert_eq!(c.signing.as_deref(), Some(kid.as_str()));
    let bytes: usize = set.secret_data().await.values().map(|v| v.0.len()).sum();
    let jwks = set.jwks_data().await[JWKS_KEY].len();
    assert!(bytes < 64 * 1024, "the Secret stays small: {bytes} bytes");
    eprintln!("[limit] 20 keys held: Secret {bytes} bytes, JWKS {jwks} bytes");
    eprintln!("[limit] {}", status.conditions[0].message);
    let limit_events = set.events("KeyLimitReached").await;
    eprintln!("[limit] KeyLimitReached reported {limit_events} time(s)");
    set.print_key_events();
}
