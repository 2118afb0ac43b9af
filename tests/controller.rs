//! The operator's main job against a real control plane: apply → Ready for every key family,
//! a steady state that writes nothing, tampering, bad input, operations and a conflicting
//! writer. Each test runs the real operator binary in its own namespace.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use jwt_key_rotator::api::JwtKeySet;
use jwt_key_rotator::lifecycle::{KeyState, Manifest};
use jwt_key_rotator::reconcile::{MANAGED_BY_LABEL, MANAGER};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{Operator, eventually};

const READY_DEADLINE: Duration = Duration::from_secs(60);

struct Fixture {
    client: Client,
    ns: String,
    sets: Api<JwtKeySet>,
    secrets: Api<Secret>,
    maps: Api<ConfigMap>,
    operator: Operator,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let client = support::client().await;
        let ns = support::namespace(&client, prefix).await;
        Fixture {
            sets: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            maps: Api::namespaced(client.clone(), &ns),
            operator: Operator::start(&ns),
            client,
            ns,
        }
    }

    async fn apply(&self, name: &str, spec: Value) {
        support::apply_set(&self.client, &self.ns, name, spec).await;
    }

    /// Waits until the set reports `Ready` with `status` and `reason` for its current generation.
    async fn wait_condition(&self, name: &str, status: &str, reason: &str) -> JwtKeySet {
        let what = format!("{name} Ready={status} ({reason})");
        eventually(&what, READY_DEADLINE, || async {
            let set = self.sets.get(name).await.ok()?;
            let generation = set.metadata.generation;
            let s = set.status.as_ref()?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (c.status == status && c.reason == reason && c.observed_generation == generation)
                .then_some(set)
        })
        .await
    }

    async fn ready(&self, name: &str) -> JwtKeySet {
        self.wait_condition(name, "True", "KeysReady").await
    }

    async fn secret_data(&self, name: &str) -> BTreeMap<String, ByteString> {
        self.secrets
            .get(&format!("{name}-signing-keys"))
            .await
            .unwrap()
            .data
            .unwrap_or_default()
    }

    /// Removes data entries from the set's Secret, as `kubectl edit` would.
    async fn remove_secret_entries(&self, name: &str, entries: &[&str]) {
        let ops: Vec<_> = entries
            .iter()
            .map(|e| json!({"op": "remove", "path": format!("/data/{e}")}))
            .collect();
        self.secrets
            .patch(
                &format!("{name}-signing-keys"),
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(json!(ops)).unwrap()),
            )
            .await
            .unwrap();
    }

    async fn manifest(&self, name: &str) -> Manifest {
        Manifest::from_json(&self.secret_data(name).await["manifest.json"].0).unwrap()
    }

    async fn jwks(&self, name: &str) -> Option<String> {
        let map = self.maps.get_opt(&format!("{name}-jwks")).await.ok()??;
        map.data?.get("jwks.json").cloned()
    }

    async fn jwks_kids(&self, name: &str) -> Vec<String> {
        let Some(doc) = self.jwks(name).await else {
            return vec![];
        };
        let set: JwkSet = serde_json::from_str(&doc).unwrap();
        set.keys
            .into_iter()
            .filter_map(|k| k.common.key_id)
            .collect()
    }

    async fn events(&self, reason: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("Secret lacks {key}"))
            .0
            .clone(),
    )
    .unwrap()
}

/// Signs a token with the Secret's active key, as a signing pod would, and verifies it against
/// what a verifier reads: the ConfigMap's JWKS, or for HMAC the Secret's verify.jwks.json.
fn sign_and_verify(alg: jsonwebtoken::Algorithm, data: &BTreeMap<String, ByteString>, jwks: &str) {
    let kid = text(data, "kid");
    let key = match alg {
        jsonwebtoken::Algorithm::HS256 => EncodingKey::from_secret(&data["secret"].0),
        jsonwebtoken::Algorithm::ES256 => {
            EncodingKey::from_ec_pem(text(data, "private.pem").as_bytes()).unwrap()
        }
        jsonwebtoken::Algorithm::EdDSA => {
            EncodingKey::from_ed_pem(text(data, "private.pem").as_bytes()).unwrap()
        }
        _ => EncodingKey::from_rsa_pem(text(data, "private.pem").as_bytes()).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.clone());
    let token = encode(
        &header,
        &json!({"sub": "alice", "exp": 4_000_000_000u64}),
        &key,
    )
    .unwrap();
    let set: JwkSet = serde_json::from_str(jwks).unwrap();
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("active kid {kid} not in the verifiers' JWKS"));
    let mut validation = Validation::new(alg);
    validation.validate_aud = false;
    decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("token verifies");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_family_becomes_ready_with_a_secret_a_jwks_and_a_status_that_agree() {
    let f = Fixture::new("families").await;
    let families = [
        ("rsa", "RS256", jsonwebtoken::Algorithm::RS256),
        ("ec", "ES256", jsonwebtoken::Algorithm::ES256),
        ("ed", "EdDSA", jsonwebtoken::Algorithm::EdDSA),
        ("hmac", "HS256", jsonwebtoken::Algorithm::HS256),
    ];
    for (name, alg, jalg) in families {
        let started = Instant::now();
        f.apply(name, json!({"algorithm": alg})).await;
        let set = f.ready(name).await;
        eprintln!(
            "apply -> Ready for {alg}: {} ms",
            started.elapsed().as_millis()
        );
        let data = f.secret_data(name).await;
        let manifest = f.manifest(name).await;
        let status = set.status.unwrap();
        let active = manifest.active().expect("one active key");
        assert_eq!(text(&data, "kid"), active.kid);
        assert_eq!(status.active_kid.as_deref(), Some(active.kid.as_str()));
        assert_eq!(status.key_count, Some(1));
        assert_eq!(status.keys[0].state, "Active");
        let manifest_text = text(&data, "manifest.json");
        for private in ["\"d\"", "\"k\"", "PRIVATE KEY", "\"p\"", "\"q\""] {
            assert!(
                !manifest_text.contains(private),
                "{alg}: manifest.json contains {private}"
            );
        }
        let jwk: Value = serde_json::from_str(&text(&data, "private.jwk.json")).unwrap();
        assert_eq!(jwk["kid"], active.kid.as_str());
        assert_eq!(jwk["alg"], alg);
        if alg == "HS256" {
            assert!(data.contains_key("secret") && data.contains_key("verify.jwks.json"));
            assert!(!data.contains_key("private.pem"));
            assert_eq!(
                f.jwks(name).await,
                None,
                "a symmetric key is never published in a ConfigMap"
            );
            sign_and_verify(jalg, &data, &text(&data, "verify.jwks.json"));
        } else {
            for key in ["private.pem", "public.pem", "jwks.json"] {
                assert!(data.contains_key(key), "{alg}: Secret lacks {key}");
            }
            let published = f.jwks(name).await.expect("JWKS ConfigMap");
            assert_eq!(
                published,
                text(&data, "jwks.json"),
                "Secret and ConfigMap carry the same JWKS"
            );
            assert!(
                !published.contains("\"d\""),
                "{alg}: private member in the JWKS"
            );
            sign_and_verify(jalg, &data, &published);
        }
    }
    let created = f.events("KeyCreated").await;
    assert!(
        created.len() >= 4,
        "a KeyCreated Event per set, got {}",
        created.len()
    );
}

/// The operator reads its objects from a watch that selects them by its label: one that lost
/// the label (a hand edit) drops out of that cache, yet is found (asked of the API server),
/// labelled again, and keeps its key.
#[tokio::test(flavor = "multi_thread")]
async fn an_object_that_lost_our_labels_is_found_and_labelled_again() {
    let f = Fixture::new("unlabelled").await;
    f.apply("web", json!({"algorithm": "ES256"})).await;
    let kid = f.ready("web").await.status.unwrap().active_kid.unwrap();
    let unlabel =
        json!([{"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1managed-by"}]);
    let patch = || Patch::<()>::Json(serde_json::from_value(unlabel.clone()).unwrap());
    let params = PatchParams::default();
    f.secrets
        .patch("web-signing-keys", &params, &patch())
        .await
        .unwrap();
    f.maps.patch("web-jwks", &params, &patch()).await.unwrap();
    let managed = |labels: &BTreeMap<String, String>| {
        labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
    };
    eventually("both objects labelled again", READY_DEADLINE, || async {
        let secret = f.secrets.get("web-signing-keys").await.ok()?;
        let map = f.maps.get("web-jwks").await.ok()?;
        (managed(secret.labels()) && managed(map.labels())).then_some(())
    })
    .await;
    assert_eq!(
        text(&f.secret_data("web").await, "kid"),
        kid,
        "the same key signs"
    );
    assert_eq!(f.jwks_kids("web").await, vec![kid]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_steady_state_makes_no_writes() {
    let f = Fixture::new("steady").await;
    f.apply(
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "10m", "verifierCacheTTL": "5m"}),
    )
    .await;
    f.ready("web").await;
    let versions = |f: &Fixture| {
        let (sets, secrets, maps) = (f.sets.clone(), f.secrets.clone(), f.maps.clone());
        async move {
            (
                sets.get("web").await.unwrap().resource_version(),
                secrets
                    .get("web-signing-keys")
                    .await
                    .unwrap()
                    .resource_version(),
                maps.get("web-jwks").await.unwrap().resource_version(),
            )
        }
    };
    // Let any reconcile triggered by our own writes settle: versions stable for 2s.
    let mut before = versions(&f).await;
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = versions(&f).await;
        if now == before {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "versions never settled"
        );
        before = now;
    }
    let reconciles = |log: &str| log.matches("reconciled").count();
    let count_before = reconciles(&f.operator.log_text());
    // Provoke reconciles without any due transition: label the Secret and the ConfigMap.
    for i in 0..5 {
        let patch = json!({"metadata": {"labels": {"touched": format!("t{i}")}}});
        f.secrets
            .patch(
                "web-signing-keys",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        f.maps
            .patch("web-jwks", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let touched = versions(&f).await;
    eventually(
        "the operator to reconcile the touched objects",
        Duration::from_secs(30),
        || async { (reconciles(&f.operator.log_text()) > count_before).then_some(()) },
    )
    .await;
    // Observe for 5 seconds: nothing the operator writes may bump a resourceVersion.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            versions(&f).await,
            touched,
            "the operator wrote in steady state"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        before.0, touched.0,
        "the JwtKeySet (and its status) was not rewritten"
    );
    eprintln!(
        "steady state: {} reconciles, 0 writes",
        reconciles(&f.operator.log_text()) - count_before
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_edited_jwks_config_map_is_rebuilt_from_the_secret() {
    let f = Fixture::new("jwks-tamper").await;
    f.apply("web", json!({"algorithm": "ES256"})).await;
    f.ready("web").await;
    let original = f.jwks("web").await.unwrap();
    f.maps
        .delete("web-jwks", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the deleted ConfigMap to be rebuilt",
        READY_DEADLINE,
        || async { (f.jwks("web").await.as_ref() == Some(&original)).then_some(()) },
    )
    .await;
    let patch = json!({"data": {"jwks.json": "{\"keys\":[]}"}});
    f.maps
        .patch("web-jwks", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "the edited ConfigMap to be restored",
        READY_DEADLINE,
        || async { (f.jwks("web").await.as_ref() == Some(&original)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_secret_is_recreated_with_a_fresh_key_and_old_public_keys_stay_published() {
    let f = Fixture::new("secret-tamper").await;
    f.apply("web", json!({"algorithm": "ES256", "tokenTTL": "1h"}))
        .await;
    f.ready("web").await;
    let old_kid = text(&f.secret_data("web").await, "kid");
    f.secrets
        .delete("web-signing-keys", &DeleteParams::default())
        .await
        .unwrap();
    let new_kid = eventually(
        "the Secret to be recreated with a new key",
        READY_DEADLINE,
        || async {
            let data = f.secrets.get_opt("web-signing-keys").await.ok()??.data?;
            let kid = String::from_utf8(data.get("kid")?.0.clone()).ok()?;
            (kid != old_kid).then_some(kid)
        },
    )
    .await;
    let kids = f.jwks_kids("web").await;
    assert!(
        kids.contains(&old_kid),
        "the old public key stays published: {kids:?}"
    );
    assert!(kids.contains(&new_kid));
    let manifest = f.manifest("web").await;
    let old = manifest.get(&old_kid).expect("old key tracked");
    assert_eq!(old.state, KeyState::Retired);
    assert!(old.expires_at.is_some());
    eventually("a SecretRecreated Event", READY_DEADLINE, || async {
        (!f.events("SecretRecreated").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_it_does_not_own_is_never_adopted_or_overwritten() {
    let f = Fixture::new("foreign").await;
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("web-signing-keys".into()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "password".to_string(),
            "hunter2".to_string(),
        )])),
        ..Secret::default()
    };
    let created = f
        .secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    f.apply("web", json!({"algorithm": "ES256"})).await;
    let set = f.wait_condition("web", "False", "SecretConflict").await;
    let message = &set.status.unwrap().conditions[0].message;
    assert!(message.contains("web-signing-keys"), "{message}");
    let after = f.secrets.get("web-signing-keys").await.unwrap();
    assert_eq!(
        after.resource_version(),
        created.resource_version(),
        "the foreign Secret was not written"
    );
    assert!(after.owner_references().is_empty());
    eventually("a SecretConflict Event", READY_DEADLINE, || async {
        (!f.events("SecretConflict").await.is_empty()).then_some(())
    })
    .await;
    assert!(
        f.maps.get_opt("web-jwks").await.unwrap().is_none(),
        "nothing was published either"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_only_the_controller_can_refuse_changes_nothing_that_exists() {
    let f = Fixture::new("invalid").await;
    f.apply(
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "10m", "verifierCacheTTL": "5m"}),
    )
    .await;
    f.ready("web").await;
    let secret_before = f.secrets.get("web-signing-keys").await.unwrap();
    let map_before = f.maps.get("web-jwks").await.unwrap();
    // The schema admits a zero tokenTTL (its pattern is any duration); only the controller
    // refuses it.
    f.apply(
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "10m", "verifierCacheTTL": "5m", "tokenTTL": "0s"}),
    )
    .await;
    let set = f.wait_condition("web", "False", "InvalidSpec").await;
    let message = set.status.as_ref().unwrap().conditions[0].message.clone();
    assert!(
        message.contains("spec.tokenTTL"),
        "the field is named: {message}"
    );
    assert_eq!(
        set.status.unwrap().active_kid,
        Some(text(&secret_before.data.clone().unwrap(), "kid"))
    );
    assert_eq!(
        f.secrets
            .get("web-signing-keys")
            .await
            .unwrap()
            .resource_version(),
        secret_before.resource_version()
    );
    assert_eq!(
        f.maps.get("web-jwks").await.unwrap().resource_version(),
        map_before.resource_version()
    );
    eventually("an InvalidSpec Event", READY_DEADLINE, || async {
        (!f.events("InvalidSpec").await.is_empty()).then_some(())
    })
    .await;
    // Fixing the spec makes it Ready again with the same key.
    f.apply(
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "10m", "verifierCacheTTL": "5m"}),
    )
    .await;
    let set = f.ready("web").await;
    assert_eq!(
        set.status.unwrap().active_kid,
        Some(text(&secret_before.data.unwrap(), "kid"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_rotation_goes_through_the_safe_path_and_revocation_is_immediate() {
    let f = Fixture::new("operations").await;
    let spec = json!({"algorithm": "EdDSA", "rotationInterval": "1h", "publishLead": "2s", "propagationDelay": "1s", "verifierCacheTTL": "1s", "tokenTTL": "30s", "clockSkew": "1s"});
    f.apply("web", spec.clone()).await;
    f.ready("web").await;
    let first = text(&f.secret_data("web").await, "kid");
    let patch = json!({"metadata": {"annotations": {"jwt.keyrotator.dev/rotate": "ticket-42"}}});
    f.sets
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let second = eventually(
        "the requested rotation",
        Duration::from_secs(30),
        || async {
            let kid = text(&f.secret_data("web").await, "kid");
            (kid != first).then_some(kid)
        },
    )
    .await;
    let manifest = f.manifest("web").await;
    let new = manifest.get(&second).unwrap();
    assert!(
        new.activated_at.unwrap() >= new.published_at.unwrap() + jiff::SignedDuration::from_secs(2),
        "the new key was published for publishLead before it signed"
    );
    assert_eq!(manifest.get(&first).unwrap().state, KeyState::Retired);
    assert!(
        f.jwks_kids("web").await.contains(&first),
        "the retired key stays published"
    );

    // Revoke the active key: it leaves Secret and JWKS at once and a new key signs.
    let mut revoked = spec.clone();
    revoked["revokedKids"] = json!([second.clone()]);
    f.apply("web", revoked).await;
    let third = eventually(
        "a new key after revocation",
        Duration::from_secs(30),
        || async {
            let kid = text(&f.secret_data("web").await, "kid");
            (kid != second && !f.jwks_kids("web").await.contains(&second)).then_some(kid)
        },
    )
    .await;
    assert!(f.manifest("web").await.get(&second).is_none());
    assert!(f.jwks_kids("web").await.contains(&third));
    eventually("a KeyRevoked Event", READY_DEADLINE, || async {
        (!f.events("KeyRevoked").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_policy_delete_collects_the_objects_and_retain_keeps_them() {
    let f = Fixture::new("deletion").await;
    f.apply("gone", json!({"algorithm": "ES256"})).await;
    f.apply(
        "kept",
        json!({"algorithm": "ES256", "deletionPolicy": "Retain"}),
    )
    .await;
    f.ready("gone").await;
    f.ready("kept").await;
    eventually("the Retain finalizer", Duration::from_secs(10), || async {
        let set = f.sets.get("kept").await.ok()?;
        set.finalizers()
            .iter()
            .any(|x| x == "jwt.keyrotator.dev/retain")
            .then_some(())
    })
    .await;
    f.sets
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    f.sets
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    eventually("both sets to be gone", READY_DEADLINE, || async {
        (f.sets.get_opt("gone").await.ok()?.is_none()
            && f.sets.get_opt("kept").await.ok()?.is_none())
        .then_some(())
    })
    .await;
    eventually(
        "garbage collection of the Delete set's objects",
        READY_DEADLINE,
        || async {
            (f.secrets.get_opt("gone-signing-keys").await.ok()?.is_none()
                && f.maps.get_opt("gone-jwks").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
    let kept = f
        .secrets
        .get("kept-signing-keys")
        .await
        .expect("Retain keeps the Secret");
    assert!(
        kept.owner_references().is_empty(),
        "released from the deleted set"
    );
    assert!(kept.data.unwrap().contains_key("private.pem"));
    assert!(
        f.maps
            .get("kept-jwks")
            .await
            .unwrap()
            .owner_references()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflicting_writer_never_loses_a_key_or_crashes_the_operator() {
    let mut f = Fixture::new("conflict").await;
    f.apply("web", json!({"algorithm": "ES256", "rotationInterval": "3s", "publishLead": "1s", "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "2s", "clockSkew": "0s"})).await;
    f.ready("web").await;
    let secrets = f.secrets.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut writes = 0u32;
            let mut conflicts = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = secrets.get("web-signing-keys").await else {
                    continue;
                };
                s.labels_mut().insert("writer".into(), format!("w{writes}"));
                match secrets
                    .replace("web-signing-keys", &PostParams::default(), &s)
                    .await
                {
                    Ok(_) => writes += 1,
                    Err(_) => conflicts += 1,
                }
            }
            (writes, conflicts)
        })
    };
    let mut active_seen = Vec::<String>::new();
    let started = Instant::now();
    // At least 10 s of contention, and until three keys have signed (30 s at most).
    while started.elapsed() < Duration::from_secs(10) || active_seen.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rotations stalled under contention: {active_seen:?}"
        );
        let data = f.secret_data("web").await;
        let kid = text(&data, "kid");
        let kids = f.jwks_kids("web").await;
        assert!(
            kids.contains(&kid),
            "active kid {kid} missing from the JWKS {kids:?}"
        );
        if active_seen.last() != Some(&kid) {
            active_seen.push(kid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (writes, conflicts) = writer.await.unwrap();
    eprintln!(
        "conflicting writer: {writes} label writes, {conflicts} conflicts; {} active keys seen",
        active_seen.len()
    );
    assert!(writes > 20, "the other writer really wrote ({writes})");
    assert!(active_seen.len() >= 3, "rotations went on: {active_seen:?}");
    assert!(f.operator.is_running(), "the operator did not crash");
    let manifest = f.manifest("web").await;
    assert_eq!(
        manifest
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .count(),
        1
    );
    assert!(
        f.secrets
            .get("web-signing-keys")
            .await
            .unwrap()
            .labels()
            .contains_key("writer"),
        "the other writer's label survived"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn moving_the_secret_to_another_name_is_refused_and_nothing_is_orphaned() {
    let f = Fixture::new("rename").await;
    f.apply("web", json!({"algorithm": "ES256"})).await;
    let ready = f.ready("web").await;
    let kid = ready.status.unwrap().active_kid;
    f.apply(
        "web",
        json!({"algorithm": "ES256", "secretName": "elsewhere"}),
    )
    .await;
    let set = f.wait_condition("web", "False", "InvalidSpec").await;
    let message = &set.status.as_ref().unwrap().conditions[0].message;
    assert!(
        message.contains("spec.secretName") && message.contains("web-signing-keys"),
        "{message}"
    );
    assert!(
        f.secrets.get_opt("elsewhere").await.unwrap().is_none(),
        "no second Secret"
    );
    assert_eq!(
        set.status.unwrap().active_kid,
        kid,
        "the key workloads mount is untouched"
    );
    f.apply("web", json!({"algorithm": "ES256"})).await;
    assert_eq!(f.ready("web").await.status.unwrap().active_kid, kid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_api_server_refuses_turns_ready_false_with_the_reason() {
    let mut f = Fixture::new("refused").await;
    f.apply(
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "2s", "propagationDelay": "1s", "verifierCacheTTL": "1s"}),
    )
    .await;
    f.ready("web").await;
    // Someone marks the Secret immutable: the next write (a requested rotation) must fail.
    let patch = json!({"immutable": true});
    f.secrets
        .patch(
            "web-signing-keys",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let rotate = json!({"metadata": {"annotations": {"jwt.keyrotator.dev/rotate": "now"}}});
    f.sets
        .patch("web", &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .unwrap();
    let set = f.wait_condition("web", "False", "ReconcileError").await;
    let message = &set.status.unwrap().conditions[0].message;
    assert!(
        message.contains("immutable")
            || message.contains("Forbidden")
            || message.contains("Invalid"),
        "{message}"
    );
    assert!(f.operator.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_map_it_does_not_own_blocks_a_public_set_and_is_ignored_by_a_symmetric_one() {
    let f = Fixture::new("foreign-cm").await;
    for name in ["pub-jwks", "sym-jwks"] {
        let foreign = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "jwks.json".to_string(),
                "{\"keys\":[]}".to_string(),
            )])),
            ..ConfigMap::default()
        };
        f.maps
            .create(&PostParams::default(), &foreign)
            .await
            .unwrap();
    }
    f.apply("pub", json!({"algorithm": "ES256"})).await;
    f.apply("sym", json!({"algorithm": "HS256"})).await;
    f.wait_condition("pub", "False", "ConfigMapConflict").await;
    f.ready("sym").await;
    for name in ["pub-jwks", "sym-jwks"] {
        let map = f.maps.get(name).await.unwrap();
        assert!(map.owner_references().is_empty(), "{name} adopted");
        assert_eq!(
            map.data.unwrap()["jwks.json"],
            "{\"keys\":[]}",
            "{name} overwritten"
        );
    }
    assert!(
        f.secrets
            .get_opt("pub-signing-keys")
            .await
            .unwrap()
            .is_none(),
        "nothing written for the blocked set"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_pem_deleted_from_the_secret_is_written_again_and_the_key_signs_on() {
    let f = Fixture::new("repair").await;
    f.apply("web", json!({"algorithm": "ES256", "tokenTTL": "1h"}))
        .await;
    f.ready("web").await;
    let before = f.secret_data("web").await;
    let first = text(&before, "kid");
    // private.jwk.json still holds the key: nothing is lost, the derived file is repaired.
    f.remove_secret_entries("web", &["private.pem", "public.pem"])
        .await;
    eventually("private.pem written again", READY_DEADLINE, || async {
        let data = f.secret_data("web").await;
        (data.get("private.pem") == before.get("private.pem")
            && data.get("public.pem") == before.get("public.pem"))
        .then_some(())
    })
    .await;
    assert_eq!(
        text(&f.secret_data("web").await, "kid"),
        first,
        "the same key signs"
    );
    assert_eq!(f.manifest("web").await.active().unwrap().kid, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_whose_every_encoding_is_deleted_is_lost_and_another_signs_at_once() {
    let f = Fixture::new("lost").await;
    f.apply("web", json!({"algorithm": "ES256", "tokenTTL": "1h"}))
        .await;
    f.ready("web").await;
    let first = text(&f.secret_data("web").await, "kid");
    f.remove_secret_entries("web", &["private.pem", "private.jwk.json"])
        .await;
    let second = eventually("a complete new active key", READY_DEADLINE, || async {
        let data = f.secret_data("web").await;
        let kid = String::from_utf8(data.get("kid")?.0.clone()).ok()?;
        (kid != first && data.contains_key("private.pem")).then_some(kid)
    })
    .await;
    let manifest = f.manifest("web").await;
    assert_eq!(
        manifest.get(&first).unwrap().state,
        KeyState::Retired,
        "its public part stays published"
    );
    assert!(f.jwks_kids("web").await.contains(&first));
    assert!(f.jwks_kids("web").await.contains(&second));
    eventually("a KeyMaterialLost Event", READY_DEADLINE, || async {
        (!f.events("KeyMaterialLost").await.is_empty()).then_some(())
    })
    .await;
}
