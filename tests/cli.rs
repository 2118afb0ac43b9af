//! The command-line tool against the real control plane and the real operator: status,
//! rotate, revoke, verify and history, as the binary and as `kubectl jwtks`.

mod ops;
mod support;

use std::time::Duration;

use jwt_key_rotator::api::JwtKeySet;
use kube::Api;
use ops::{jwtks, long_lived_spec, sign_es256, wait_ready};
use support::Operator;

fn kubeconfig() -> &'static std::path::Path {
    &support::control_plane().kubeconfig
}

#[tokio::test]
async fn status_shows_each_key_on_a_timeline_and_verify_finds_the_key_of_a_token() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cli-verify").await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let _operator = Operator::start(&ns);
    let set = wait_ready(&client, &ns, "web").await;
    let kid = set
        .status
        .as_ref()
        .and_then(|s| s.active_kid.clone())
        .unwrap();

    let status = jwtks(kubeconfig(), &["status", "-n", &ns, "-o", "json"], None);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let listed = &status.json()[0];
    assert_eq!(listed["activeKid"], kid.as_str());
    assert_eq!(listed["ready"]["status"], "True");
    let key = &listed["keys"][0];
    assert_eq!(
        (key["kid"].as_str(), key["state"].as_str()),
        (Some(kid.as_str()), Some("Active"))
    );
    for time in ["publishedAt", "signsFrom", "retiresAt", "expiresAt"] {
        assert!(key[time].is_string(), "{time} missing: {key}");
    }
    let text = jwtks(kubeconfig(), &["status", "web", "-n", &ns], None);
    assert!(
        text.stdout.contains(&kid) && text.stdout.contains("LEAVES JWKS"),
        "{}",
        text.stdout
    );

    let data = ops::secret_data(&client, &ns, "web-signing-keys").await;
    let token = sign_es256(&data["private.pem"], &kid, 600);
    let valid = jwtks(kubeconfig(), &["verify", "-", "-o", "json"], Some(&token));
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    let verdict = valid.json();
    assert_eq!(verdict["verifies"], true);
    assert_eq!(verdict["keySet"], format!("{ns}/web"));
    assert_eq!(verdict["key"]["state"], "Active");
    assert_eq!(verdict["key"]["expiresAt"], key["expiresAt"]);

    // Another payload under the same signature: the key is found, the signature refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = "eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwfQ";
    parts[1] = forged_claims;
    let forged = jwtks(kubeconfig(), &["verify", &parts.join("."), "-n", &ns], None);
    assert_eq!(forged.code, 1, "{}{}", forged.stdout, forged.stderr);
    assert!(
        forged.stdout.contains("does not verify with key"),
        "{}",
        forged.stdout
    );

    let expired = sign_es256(&data["private.pem"], &kid, -60);
    let late = jwtks(kubeconfig(), &["verify", &expired, "-n", &ns], None);
    assert_eq!(late.code, 1);
    assert!(
        late.stdout.contains("the token expired at"),
        "{}",
        late.stdout
    );
}

#[tokio::test]
async fn rotate_starts_a_rotation_and_history_records_it() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cli-rotate").await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let _operator = Operator::start(&ns);
    let set = wait_ready(&client, &ns, "web").await;
    let first = set
        .status
        .as_ref()
        .and_then(|s| s.active_kid.clone())
        .unwrap();

    let rotate = jwtks(kubeconfig(), &["rotate", "web", "-n", &ns], None);
    assert_eq!(rotate.code, 0, "{}", rotate.stderr);
    assert!(
        rotate.stdout.contains("signs after publishLead (1h)"),
        "{}",
        rotate.stdout
    );
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    let pending = support::eventually("a pending key", Duration::from_secs(60), || async {
        let status = sets.get("web").await.ok()?.status?;
        status
            .keys
            .into_iter()
            .find(|k| k.state == "Pending")
            .map(|k| k.kid)
    })
    .await;

    let history = support::eventually(
        "the new key in the history",
        Duration::from_secs(30),
        || async {
            let run = jwtks(
                kubeconfig(),
                &["history", "web", "-n", &ns, "-o", "json"],
                None,
            );
            let entries = run.json().as_array().cloned()?;
            let has = |event: &str, kid: &str| {
                entries
                    .iter()
                    .any(|e| e["event"] == event && e["kid"] == kid)
            };
            has("KeyCreated", &pending).then_some(entries)
        },
    )
    .await;
    let events: Vec<(&str, &str)> = history
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["kid"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("KeyCreated", first.as_str()),
        ("KeyActivated", first.as_str()),
        ("KeyPublished", first.as_str()),
        ("KeyCreated", pending.as_str()),
        ("KeyPublished", pending.as_str()),
    ] {
        assert!(events.contains(&expected), "{expected:?} not in {events:?}");
    }
    let text = jwtks(kubeconfig(), &["history", "web", "-n", &ns], None);
    assert!(
        text.stdout.contains("KeyCreated") && text.stdout.contains(&pending),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn revoke_asks_first_keeps_other_revocations_and_the_key_stops_verifying() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cli-revoke").await;
    let earlier = "A".repeat(43);
    let mut spec = long_lived_spec();
    spec["revokedKids"] = serde_json::json!([earlier]);
    support::apply_set(&client, &ns, "web", spec).await;
    let _operator = Operator::start(&ns);
    let set = wait_ready(&client, &ns, "web").await;
    let kid = set
        .status
        .as_ref()
        .and_then(|s| s.active_kid.clone())
        .unwrap();
    let data = ops::secret_data(&client, &ns, "web-signing-keys").await;
    let token = sign_es256(&data["private.pem"], &kid, 600);

    // No terminal and no --yes: nothing is revoked.
    let refused = jwtks(kubeconfig(), &["revoke", "web", &kid, "-n", &ns], None);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("Revocation cannot beat caches")
            && refused.stderr.contains("propagationDelay (1m)")
            && refused.stderr.contains("verifierCacheTTL (10m)"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        sets.get("web").await.unwrap().spec.revoked_kids,
        std::slice::from_ref(&earlier)
    );

    let revoked = jwtks(
        kubeconfig(),
        &["revoke", "web", &kid, "-n", &ns, "--yes"],
        None,
    );
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(
        sets.get("web").await.unwrap().spec.revoked_kids,
        [earlier, kid.clone()]
    );
    let status = support::eventually(
        "the revoked key to leave the status",
        Duration::from_secs(60),
        || async {
            let status = sets.get("web").await.ok()?.status?;
            let gone = !status.keys.iter().any(|k| k.kid == kid) && status.active_kid.is_some();
            (gone && status.revocations.len() == 2).then_some(status)
        },
    )
    .await;
    // Revocation cannot beat caches: every verifier refuses it propagationDelay (1m) +
    // verifierCacheTTL (10m, the default) after it left the JWKS.
    let revocation = status.revocations.iter().find(|r| r.kid == kid).unwrap();
    let horizon = revocation
        .effective_at
        .duration_since(revocation.unpublished_at);
    assert!(
        horizon >= jiff::SignedDuration::from_mins(11)
            && horizon <= jiff::SignedDuration::from_secs(11 * 60 + 1),
        "{revocation:?}"
    );
    let shown = jwtks(kubeconfig(), &["status", "web", "-n", &ns], None);
    assert!(
        shown.stdout.contains(&format!("revoked {kid}"))
            && shown.stdout.contains("accept it until"),
        "{}",
        shown.stdout
    );

    let rejected = jwtks(
        kubeconfig(),
        &["verify", &token, "-n", &ns, "-o", "json"],
        None,
    );
    assert_eq!(rejected.code, 1, "{}", rejected.stdout);
    let reasons = rejected.json()["reasons"].to_string();
    assert!(
        reasons.contains("revoked") && reasons.contains("(status.revocations)"),
        "{reasons}"
    );
    let history = jwtks(
        kubeconfig(),
        &["history", "web", "-n", &ns, "-o", "json"],
        None,
    )
    .json();
    let recorded = history
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "KeyRevoked" && e["kid"] == kid.as_str());
    assert!(recorded, "{history}");
    let again = jwtks(kubeconfig(), &["revoke", "web", &kid, "-n", &ns], None);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("already revoked"), "{}", again.stdout);
}

#[tokio::test]
async fn errors_name_the_object_and_what_to_do() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cli-errors").await;
    let missing = jwtks(kubeconfig(), &["status", "nope", "-n", &ns], None);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains(&format!("JwtKeySet {ns}/nope not found")),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("status -A"), "{}", missing.stderr);

    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let unknown = jwtks(
        kubeconfig(),
        &["revoke", "web", &"B".repeat(43), "-n", &ns, "--yes"],
        None,
    );
    assert_eq!(unknown.code, 2);
    assert!(
        unknown
            .stderr
            .contains(&format!("is not a key of JwtKeySet {ns}/web")),
        "{}",
        unknown.stderr
    );

    let garbage = jwtks(kubeconfig(), &["verify", "not-a-token"], None);
    assert_eq!(garbage.code, 2);
    assert!(
        garbage.stderr.contains("a signed JWT has 3"),
        "{}",
        garbage.stderr
    );

    let nowhere = jwtks(
        std::path::Path::new("/nonexistent/kubeconfig"),
        &["status"],
        None,
    );
    assert_eq!(nowhere.code, 2);
    assert!(
        nowhere.stderr.contains("set KUBECONFIG"),
        "{}",
        nowhere.stderr
    );
}

/// kubectl runs `kubectl-jwtks` from PATH for `kubectl jwtks`; a symlink to the binary is it.
#[tokio::test]
async fn kubectl_runs_the_binary_as_the_jwtks_plugin() {
    let client = support::client().await;
    let ns = support::namespace(&client, "cli-plugin").await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let bin = std::env::temp_dir().join(format!("jwtks-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kubectl-jwtks");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_jwt-key-rotator"), &link).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = support::tool("kubectl");
    let run = |args: &[&str]| {
        std::process::Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", kubeconfig())
            .output()
            .unwrap()
    };
    let listed = run(&["plugin", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("kubectl-jwtks"));
    let status = run(&["jwtks", "status", "-n", &ns]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(stdout.contains(&format!("{ns}/web")), "{stdout}");
    let help = run(&["jwtks", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl jwtks"));
    let _ = std::fs::remove_dir_all(&bin);
}
