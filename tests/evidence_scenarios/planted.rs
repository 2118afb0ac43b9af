//! A planted key: a foreign JWK in the JWKS, then the Secret lost.

use super::*;

/// A valid public JWK of a key this test made: what another writer could plant.
fn foreign_jwk() -> (String, Value) {
    let key = generate(Algorithm::ES256, None).expect("a key");
    let jwk = serde_json::to_value(key.public_jwk().expect("a public JWK")).expect("JSON");
    (key.kid().to_string(), jwk)
}

async fn plant(set: &Set, jwk: &Value) -> Edited {
    let mut data = set.jwks_data().await;
    let mut doc: Value = serde_json::from_str(&data[JWKS_KEY]).expect("a JWKS");
    doc["keys"].as_array_mut().expect("keys").push(jwk.clone());
    data.insert(JWKS_KEY.into(), doc.to_string());
    set.restore_map(&data).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_key_is_never_published_even_when_the_secret_is_lost() {
    let _shared = GATE.read().await;
    let (set, w) = Set::start("planted", QUIET).await;
    let a = set.active_kid().await;

    let (f1, jwk1) = foreign_jwk();
    w.foreign(&f1).await;
    let at = w
        .edit("a foreign key planted in the JWKS", plant(&set, &jwk1))
        .await;
    operator_since(&w, "the JWKS written without it", at, |c| {
        let jwks = c.operator_published.as_ref()?;
        (!jwks.contains(&f1) && jwks.contains(&a)).then_some(())
    })
    .await;
    set.wait_events("UnrecordedKey", 1).await;

    // The operator sees both at once: a planted key in the JWKS and no Secret.
    let (f2, jwk2) = foreign_jwk();
    w.foreign(&f2).await;
    w.allow_emergency().await;
    set.operator.signal("STOP");
    let at = w
        .edit(
            "another foreign key planted and the Secret deleted, the operator stopped",
            async { plant(&set, &jwk2).await.and(set.delete_secret().await) },
        )
        .await;
    set.operator.signal("CONT");
    let b = operator_since(&w, "a new key signing", at, |c| {
        c.signing.clone().filter(|k| *k != a)
    })
    .await;
    set.wait_events("SecretRecreated", 1).await;
    let a_gone = left_jwks(&w, &a, at).await;
    let c = w.finish().await;
    let status = set.ready().await;
    assert_eq!(status.active_kid.as_deref(), Some(b.as_str()));
    let remembered: Vec<&str> = status.keys.iter().map(|k| k.kid.as_str()).collect();
    for f in [&f1, &f2] {
        assert!(!c.ever_published.contains(f), "{f} was published");
        assert!(
            !remembered.contains(&f.as_str()),
            "{f} recorded as the set's own"
        );
        let named = set
            .logged("UnrecordedKey")
            .iter()
            .any(|l| l.contains(f.as_str()));
        assert!(named, "an UnrecordedKey event names {f}");
    }
    assert!(
        a_gone >= at + QUIET.retention(),
        "the lost key stays published for its retention"
    );
    assert!(
        c.activations.iter().any(|x| x.kid == b && x.unled),
        "the new key signed at once: nothing else could"
    );
    set.print_key_events();
}
