//! Issue 8's scenarios on the real control plane, with the real operator binary: everything
//! people, backup tools and other writers do to a set's objects, while a workload signs tokens
//! with the Secret's key and verifies them against the JWKS as pods do (`workload`). Not one
//! token may break on what the operator publishes, and each scenario asserts its own outcome
//! (the Event named, the same kid still signing, the key republished, the lead waited).
//!
//! One test measures what the operator's reads cost the API server; it runs alone (`GATE`).

#[path = "../support/mod.rs"]
mod support;

mod known_bugs;
mod set;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::keys::{Algorithm, generate};
use jwt_key_rotator::lifecycle::{KeyRecord, KeyState, Manifest};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use set::{DEADLINE, NAME, Set};
use workload::{Checker, Edited, JWKS_KEY, Timing, Workload};

/// The cost measurement takes it for writing: no other test's requests may land in its window.
static GATE: RwLock<()> = RwLock::const_new(());

/// A set that does not rotate on its own during a test: what changes is the test's doing.
const QUIET: Timing = Timing::secs(3600, 2, 1, 3, 1);

/// Samples the workload takes after each repair: a second of tokens signed before it, verified
/// after it.
const AFTER_REPAIR: usize = 20;

/// Waits until the operator has written the Secret and the JWKS since `at`, and `check` holds;
/// then lets the workload go on for `AFTER_REPAIR` samples.
async fn operator_since<T>(
    w: &Workload,
    what: &str,
    at: Timestamp,
    check: impl Fn(&Checker) -> Option<T>,
) -> T {
    let value = w
        .until(what, DEADLINE, |c| {
            let secret = c.operator_secret_read.is_some_and(|t| t > at);
            let jwks = c.operator_jwks_read.is_some_and(|t| t > at);
            if secret && jwks { check(c) } else { None }
        })
        .await;
    w.observe(AFTER_REPAIR).await;
    value
}

fn active_of(m: &Manifest) -> Option<&KeyRecord> {
    m.keys.iter().find(|k| k.state == KeyState::Active)
}

fn pending_published(m: &Manifest) -> Option<&KeyRecord> {
    m.keys
        .iter()
        .find(|k| k.state == KeyState::Pending && k.published_at.is_some())
}

/// The kid that signs once a key other than `other` signs.
async fn next_signer(w: &Workload, other: &str) -> String {
    let what = format!("a key other than {other} to sign");
    w.until(&what, DEADLINE, |c| {
        c.signing.clone().filter(|k| k != other)
    })
    .await
}

/// When `kid` left an operator-written JWKS after `since` (waiting for it); the workload has
/// checked that this was after its retention.
async fn left_jwks(w: &Workload, kid: &str, since: Timestamp) -> Timestamp {
    let what = format!("{kid} to leave the JWKS after its retention");
    w.until(&what, DEADLINE, |c| {
        let after = |(k, at): &&(String, Timestamp)| k == kid && *at > since;
        c.expired.iter().find(after).map(|(_, at)| *at)
    })
    .await
}

/// Runs `edit` with the operator stopped, and lets the workload use what the edit left for a
/// second before the operator may react: pods mount what a backup tool restores.
async fn edit_while_stopped(
    set: &Set,
    w: &Workload,
    what: &str,
    edit: impl std::future::Future<Output = Edited>,
) -> Timestamp {
    set.operator.signal("STOP");
    let at = w.edit(what, edit).await;
    w.observe(AFTER_REPAIR).await;
    set.operator.signal("CONT");
    at
}

fn sleep_until(t: Timestamp) -> tokio::time::Sleep {
    let wait = t.duration_since(Timestamp::now()).max(SignedDuration::ZERO);
    tokio::time::sleep(wait.unsigned_abs())
}

// ---- 1. cosmetic edits -----------------------------------------------------------------------

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

// ---- 2. the manifest lost or damaged -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_damaged_manifest_is_rebuilt_and_no_key_leaves_the_jwks() {
    let _shared = GATE.read().await;
    // Retention 8 s over a 6 s interval: a retired, an active and (half the time) a pending key.
    let timing = Timing::secs(6, 3, 1, 6, 1);
    let (set, w) = Set::start("manifest", timing).await;
    let full = |c: &Checker| {
        let m = c.manifest.as_ref()?;
        let retired = m.keys.iter().any(|k| k.state == KeyState::Retired);
        (retired && pending_published(m).is_some()).then(|| m.clone())
    };
    let edits: [(&str, fn(&Manifest) -> Vec<u8>); 3] = [
        ("manifest.json emptied ({})", |_| b"{}".to_vec()),
        ("manifest.json truncated", |m| {
            let text = m.to_json().into_bytes();
            text[..text.len() / 2].to_vec()
        }),
        ("the active key's record removed from manifest.json", |m| {
            let mut m = m.clone();
            m.keys.retain(|k| k.state != KeyState::Active);
            m.to_json().into_bytes()
        }),
    ];
    for (what, edit) in edits {
        // All three states present, so every kind of record is at stake.
        let before = w
            .until("a retired and a published pending key", DEADLINE, full)
            .await;
        let bytes = edit(&before);
        let at = w
            .edit(what, set.set_secret_file("manifest.json", &bytes))
            .await;
        let needed: BTreeSet<String> = before.keys.iter().map(|k| k.kid.clone()).collect();
        let active = active_of(&before).map(|k| (k.kid.clone(), k.activated_at));
        // Every key comes back, unless its retention ended meanwhile.
        let after = operator_since(&w, "the manifest rebuilt", at, |c| {
            let m = c.manifest.as_ref()?;
            let gone: BTreeSet<&String> = c.expired.iter().map(|(k, _)| k).collect();
            needed
                .iter()
                .all(|k| m.get(k).is_some() || gone.contains(k))
                .then(|| m.clone())
        })
        .await;
        if let Some((kid, activated_at)) = active
            && let Some(record) = after.get(&kid)
            && record.state == KeyState::Active
        {
            assert_eq!(
                record.activated_at, activated_at,
                "[{what}] the active key keeps its activation time (rotation stays on schedule)"
            );
        }
        eprintln!(
            "[manifest] {what}: {} keys before, {} after",
            before.keys.len(),
            after.keys.len()
        );
    }
    let rebuilt = set.wait_events("ManifestRebuilt", 2).await;
    let c = w.finish().await;
    let first = set.logged("KeyActivated");
    let bootstrap = first.iter().filter(|l| l.contains("first key")).count();
    let emergency = first.iter().filter(|l| l.contains("signs at once")).count();
    assert_eq!(bootstrap, 1, "one bootstrap, at creation: {first:#?}");
    assert_eq!(emergency, 0, "no key signed without its lead: {first:#?}");
    assert!(c.activations.iter().all(|a| !a.unled));
    eprintln!("[manifest] ManifestRebuilt reported {rebuilt} times");
    set.print_key_events();
}

// ---- 3. backups restored -------------------------------------------------------------------

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
    // The status names B too: a restore before it does is `known_bugs`' business.
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

// ---- 4. a planted key ----------------------------------------------------------------------

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

// ---- 5. spec.jwks.key ----------------------------------------------------------------------

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

// ---- 6. bounds -----------------------------------------------------------------------------

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
                 "propagationDelay": "0s", "tokenTTL": "87599h", "clockSkew": "0s"},
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

// ---- 7. an inconsistent manifest -----------------------------------------------------------

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
    let p = w
        .until("a published pending key", DEADLINE, |c| {
            c.manifest.as_ref().and_then(pending_published).cloned()
        })
        .await;
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

// ---- 8. operations still work --------------------------------------------------------------

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

// ---- what the protections cost -------------------------------------------------------------

/// The resources a set's reconcile reads or writes.
const SET_RESOURCES: [&str; 5] = [
    "secrets",
    "configmaps",
    "jwtkeysets",
    "jwtkeysets/status",
    "events",
];

/// `apiserver_request_total` from the control plane's /metrics, summed by (verb, resource) over
/// `SET_RESOURCES` (all namespaces, every client).
fn api_requests() -> BTreeMap<(String, String), f64> {
    let out = support::kubectl(&["get", "--raw", "/metrics"]);
    assert!(out.success, "GET /metrics: {}", out.stderr);
    let mut totals = BTreeMap::new();
    for line in out.stdout.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let sub = label("subresource");
        let resource = match sub.as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        if !SET_RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *totals.entry((label("verb"), resource)).or_insert(0.0) += n;
    }
    totals
}

type Requests = BTreeMap<(String, String), f64>;

fn difference(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn minus(mut requests: Requests, verb: &str, resource: &str, n: f64) -> Requests {
    let key = (verb.to_string(), resource.to_string());
    if let Some(v) = requests.get_mut(&key) {
        *v -= n;
    }
    requests.retain(|_, v| *v > 0.0);
    requests
}

fn writes(requests: &Requests) -> f64 {
    let read = ["GET", "LIST", "WATCH"];
    requests
        .iter()
        .filter(|((verb, _), _)| !read.contains(&verb.as_str()))
        .map(|(_, v)| v)
        .sum()
}

fn table(requests: &Requests, per: f64) -> String {
    let cells: Vec<String> = requests
        .iter()
        .filter(|((verb, _), _)| verb != "WATCH")
        .map(|((verb, resource), n)| format!("{verb} {resource}: {:.1}", n / per))
        .collect();
    if cells.is_empty() {
        "none".into()
    } else {
        cells.join(", ")
    }
}

/// Waits until the operator has reconciled after `before` and then stayed idle for a second.
async fn reconciles_settled(set: &Set, before: f64) -> f64 {
    let mut n = set.reconciled_after(before).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = set.reconciles().await;
        if again == n {
            return n;
        }
        n = again;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_protections_cost_in_api_requests_per_reconcile() {
    let _alone = GATE.write().await;
    let set = Set::ready_alone("cost", QUIET).await;
    let mut reconciles = reconciles_settled(&set, 0.0).await;

    // The background: the same resources, nobody touching the set, for 5 s.
    let before = api_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = difference(&api_requests(), &before);
    eprintln!("[cost] background over 5 s: {}", table(&idle, 1.0));

    // Ten reconciles with nothing due: an annotation that is not the rotate one.
    let before = api_requests();
    for i in 0..10 {
        set.annotate("example.com/touched", &format!("t{i}")).await;
        reconciles = set.reconciled_after(reconciles).await;
    }
    let steady = minus(
        difference(&api_requests(), &before),
        "PATCH",
        "jwtkeysets",
        10.0,
    );
    eprintln!(
        "[cost] per steady-state reconcile: {}",
        table(&steady, 10.0)
    );
    assert_eq!(
        writes(&steady),
        0.0,
        "a steady state writes nothing: {steady:?}"
    );
    let gets = |r: &Requests, resource: &str| {
        r.get(&("GET".to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        gets(&steady, "secrets") >= 10.0 && gets(&steady, "configmaps") >= 10.0,
        "each reconcile reads the Secret and the ConfigMap: {steady:?}"
    );

    // Repairs: what one edit costs, from the edit until the operator is idle again.
    let original = set.secret_data().await;
    let kid = set.active_kid().await;
    let newline = format!("{kid}\n");
    let repairs: [(&str, &[u8]); 2] = [
        ("kid with a trailing newline", newline.as_bytes()),
        ("manifest.json emptied", b"{}"),
    ];
    for (what, bytes) in repairs {
        let key = if what.starts_with("kid") {
            "kid"
        } else {
            "manifest.json"
        };
        let before = api_requests();
        set.set_secret_file(key, bytes).await;
        reconciles = reconciles_settled(&set, reconciles).await;
        let repair = minus(
            difference(&api_requests(), &before),
            "PATCH",
            "secrets",
            1.0,
        );
        eprintln!("[cost] repairing \"{what}\": {}", table(&repair, 1.0));
        assert_eq!(
            set.secret_data().await,
            original,
            "{what} repaired byte-identical"
        );
    }
    let before = api_requests();
    set.remove_secret_files(&["private.pem", "public.pem"])
        .await;
    reconciles_settled(&set, reconciles).await;
    let repair = minus(
        difference(&api_requests(), &before),
        "PATCH",
        "secrets",
        1.0,
    );
    eprintln!(
        "[cost] repairing \"private.pem and public.pem deleted\": {}",
        table(&repair, 1.0)
    );
    assert_eq!(set.secret_data().await, original);
}
