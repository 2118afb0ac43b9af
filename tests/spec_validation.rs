//! `JwtKeySet::validate` refuses bad specs with the field named, and agrees with the CRD's CEL
//! rules, evaluated client-side here as a fast unit check. That the API server enforces each
//! rule at admission is proven in tests/control_plane.rs.

use jwt_key_rotator::api::JwtKeySet;
use serde_json::{Value, json};

fn set(spec: Value) -> JwtKeySet {
    serde_json::from_value(json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": spec,
    }))
    .expect("test spec deserializes")
}

/// Each case: a spec, and the field `validate()` must name (None: valid).
fn cases() -> Vec<(&'static str, Value, Option<&'static str>)> {
    vec![
        ("defaults", json!({}), None),
        (
            "es256 quick",
            json!({"algorithm": "ES256", "rotationInterval": "10s", "publishLead": "2s", "propagationDelay": "1s", "verifierCacheTTL": "1s", "tokenTTL": "3s", "clockSkew": "0s"}),
            None,
        ),
        (
            "rsa 4096",
            json!({"algorithm": "PS384", "keySize": 4096}),
            None,
        ),
        (
            "keySize with EC",
            json!({"algorithm": "ES256", "keySize": 2048}),
            Some("spec.keySize"),
        ),
        (
            "keySize with HMAC",
            json!({"algorithm": "HS256", "keySize": 4096}),
            Some("spec.keySize"),
        ),
        (
            "lead equals interval",
            json!({"rotationInterval": "24h", "publishLead": "24h"}),
            Some("spec.publishLead"),
        ),
        (
            "lead longer than interval",
            json!({"rotationInterval": "1h", "publishLead": "90m"}),
            Some("spec.publishLead"),
        ),
        (
            "lead shorter than propagation",
            json!({"publishLead": "1m", "propagationDelay": "2m"}),
            Some("spec.publishLead"),
        ),
        (
            "lead shorter than propagation plus the default cache time",
            json!({"publishLead": "14m59s", "propagationDelay": "5m"}),
            Some("spec.publishLead"),
        ),
        (
            "lead exactly propagation plus cache time",
            json!({"publishLead": "15m", "propagationDelay": "5m", "verifierCacheTTL": "10m"}),
            None,
        ),
        (
            "short lead for verifiers that do not cache",
            json!({"rotationInterval": "10s", "publishLead": "1s", "propagationDelay": "1s", "verifierCacheTTL": "0s", "tokenTTL": "3s", "clockSkew": "0s"}),
            None,
        ),
        (
            "verifiers caching for hours",
            json!({"publishLead": "11h", "verifierCacheTTL": "12h"}),
            Some("spec.publishLead"),
        ),
        (
            "compound durations",
            json!({"rotationInterval": "1h30m", "publishLead": "45m30s"}),
            None,
        ),
    ]
}

#[test]
fn validate_names_the_offending_field() {
    for (name, spec, field) in cases() {
        let result = set(spec).validate();
        match (field, result) {
            (None, Ok(_)) => {}
            (Some(f), Err(e)) => {
                assert_eq!(e.field, f, "{name}: wrong field in {e}");
                assert!(
                    e.to_string().starts_with(f),
                    "{name}: message {e} does not lead with the field"
                );
            }
            (None, Err(e)) => panic!("{name}: refused a valid spec: {e}"),
            (Some(f), Ok(_)) => panic!("{name}: accepted a spec that {f} makes invalid"),
        }
    }
}

#[test]
fn crd_cel_rules_agree_with_validate() {
    for (name, spec, _) in cases() {
        let object = set(spec);
        let rust = object.validate().is_ok();
        let cel = kube::core::cel::validate_cel(&object);
        assert_eq!(
            cel.is_ok(),
            rust,
            "{name}: CEL says {cel:?}, validate() says {rust}"
        );
    }
}

#[test]
fn refuses_malformed_values_the_schema_also_refuses() {
    let bad = [
        (
            json!({"rotationInterval": "30 days"}),
            "spec.rotationInterval",
        ),
        (json!({"tokenTTL": "0s"}), "spec.tokenTTL"),
        (
            json!({"rotationInterval": "100000h"}),
            "spec.rotationInterval",
        ),
        (json!({"clockSkew": "-5m"}), "spec.clockSkew"),
        (
            json!({"verifierCacheTTL": "10 minutes"}),
            "spec.verifierCacheTTL",
        ),
        (json!({"keySize": 1024}), "spec.keySize"),
        (json!({"secretName": "Not_A_Name"}), "spec.secretName"),
        (
            json!({"jwks": {"configMapName": "-bad"}}),
            "spec.jwks.configMapName",
        ),
        (json!({"jwks": {"key": "a/b"}}), "spec.jwks.key"),
        (json!({"revokedKids": ["short"]}), "spec.revokedKids[0]"),
    ];
    let issuers = [
        "ftp://auth.example.com",
        "https://auth.example.com/team-a/",
        "https://auth.example.com?tenant=a",
        "https://auth.example.com#a",
        "https://user@auth.example.com",
        "https://auth.example.com//a",
        "https://",
    ];
    let bad_issuers = issuers.map(|issuer| {
        let spec = json!({"jwks": {"http": {"issuer": issuer}}});
        (spec, "spec.jwks.http.issuer")
    });
    for (spec, field) in bad.into_iter().chain(bad_issuers) {
        let err = set(spec.clone())
            .validate()
            .expect_err(&format!("{spec} must be refused"));
        assert_eq!(err.field, field, "{spec}: {err}");
    }
}

#[test]
fn served_over_http_the_max_age_is_the_leads_slack_and_revocations_wait_for_it() {
    let spec = json!({"publishLead": "40s", "propagationDelay": "5s", "verifierCacheTTL": "10s",
        "jwks": {"http": {"issuer": "https://auth.example.com/team-a"}}});
    let valid = set(spec).validate().unwrap();
    assert_eq!(
        valid.issuer.as_deref(),
        Some("https://auth.example.com/team-a")
    );
    // 40s - 5s - 10s of slack, at most verifierCacheTTL: 10s; a shared cache may hold the
    // document that long on top of propagationDelay + verifierCacheTTL.
    assert_eq!(valid.policy.http_max_age().as_secs(), 10);
    assert_eq!(valid.policy.cache_horizon().as_secs(), 25);
    // No slack: nothing may be cached on the way.
    let tight = json!({"publishLead": "15s", "propagationDelay": "5s", "verifierCacheTTL": "10s",
        "jwks": {"http": {}}});
    let valid = set(tight).validate().unwrap();
    assert_eq!(valid.policy.http_max_age().as_secs(), 0);
    assert_eq!(valid.policy.cache_horizon().as_secs(), 15);
    // Not served over HTTP: only propagation and verifiers' own caches count.
    let mounted =
        json!({"publishLead": "40s", "propagationDelay": "5s", "verifierCacheTTL": "10s"});
    assert_eq!(
        set(mounted)
            .validate()
            .unwrap()
            .policy
            .cache_horizon()
            .as_secs(),
        15
    );
}

#[test]
fn a_name_too_long_to_label_the_secret_is_refused() {
    let mut object = set(json!({}));
    object.metadata.name = Some("n".repeat(64));
    assert_eq!(object.validate().unwrap_err().field, "metadata.name");
    object.metadata.name = Some("n".repeat(63));
    assert!(object.validate().is_ok());
}

#[test]
fn defaults_derive_names_from_the_set() {
    let valid = set(json!({})).validate().unwrap();
    assert_eq!(valid.secret_name, "web-signing-keys");
    assert_eq!(valid.config_map_name, "web-jwks");
    assert_eq!(valid.jwks_key, "jwks.json");
    assert_eq!(
        valid.policy.algorithm,
        jwt_key_rotator::keys::Algorithm::RS256
    );
    assert_eq!(
        valid.policy.rsa_size,
        Some(jwt_key_rotator::keys::RsaKeySize::Bits2048)
    );
    assert_eq!(
        valid.policy.rotation_interval,
        jiff::SignedDuration::from_hours(720)
    );
    assert_eq!(
        valid.policy.retention(),
        jiff::SignedDuration::from_mins(70)
    );
}

#[test]
fn a_lead_shorter_than_propagation_plus_cache_time_is_refused_with_the_fields_and_numbers() {
    let spec =
        json!({"publishLead": "12m", "propagationDelay": "2m30s", "verifierCacheTTL": "10m"});
    let err = set(spec).validate().unwrap_err();
    assert_eq!(err.field, "spec.publishLead");
    let message = err.to_string();
    for part in [
        "\"12m\"",
        "spec.propagationDelay + spec.verifierCacheTTL",
        "\"2m30s\" + \"10m\" = 12m 30s",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn the_default_lead_covers_the_default_propagation_and_cache_times() {
    let policy = set(json!({})).validate().unwrap().policy;
    assert_eq!(
        policy.verifier_cache_ttl,
        jiff::SignedDuration::from_mins(10)
    );
    assert!(
        policy.publish_lead >= policy.propagation_delay + policy.verifier_cache_ttl,
        "24h >= 5m + 10m"
    );
    assert_eq!(policy.signing_lead(), jiff::SignedDuration::from_hours(24));
}

#[test]
fn every_example_under_deploy_is_a_valid_spec() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut object: JwtKeySet = serde_norway::from_str(&text).unwrap();
        object.metadata.namespace = Some("default".into());
        let valid = object.validate();
        assert!(valid.is_ok(), "{}: {:?}", path.display(), valid.err());
        let cel = kube::core::cel::validate_cel(&object);
        assert!(cel.is_ok(), "{}: CEL says {cel:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 5, "the examples were read");
}

#[test]
fn rotate_annotation_becomes_the_rotation_request() {
    let mut object = set(json!({}));
    object
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            jwt_key_rotator::api::ROTATE_ANNOTATION.into(),
            "2026-11-26".into(),
        );
    assert_eq!(
        object
            .validate()
            .unwrap()
            .policy
            .rotation_request
            .as_deref(),
        Some("2026-11-26")
    );
}
