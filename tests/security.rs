//! What a security team asks, shown on a real API server configured as the README's security
//! section says: who revoked a key (the shipped audit policy, deploy/cluster/audit-policy.yaml),
//! and whether etcd holds the private key in the clear (an EncryptionConfiguration, read back
//! past the API server with etcdctl; and, so the test can fail, the same without it).

mod ops;
mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use ops::{contains, etcd_value, jwtks, long_lived_spec, secret_data, wait_ready};
use serde_json::Value;
use support::Operator;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const OPERATOR_ACCOUNT: &str = "system:serviceaccount:jwt-key-rotator:jwt-key-rotator";

/// Where this binary's API server writes its audit log and reads its encryption config: under
/// target/ (cargo's scratch for integration tests), emptied at each run, so nothing is left in
/// /tmp and no run reads an older run's log.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("security");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// The shared control plane: audit log with the shipped policy, Secrets encrypted (secretbox).
fn plane() -> &'static support::ControlPlane {
    static ARGS: OnceLock<Vec<String>> = OnceLock::new();
    let args = ARGS.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random key");
        let config = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
             resources:\n  - resources: [secrets]\n    providers:\n      \
             - secretbox:\n          keys:\n            - name: key1\n              \
             secret: {}\n      - identity: {{}}\n",
            <base64ct::Base64 as base64ct::Encoding>::encode_string(&key)
        );
        let config_path = scratch().join("encryption.yaml");
        std::fs::write(&config_path, config).expect("write encryption config");
        vec![
            format!("--audit-policy-file={REPO}/deploy/cluster/audit-policy.yaml"),
            format!("--audit-log-path={}", scratch().join("audit.log").display()),
            format!("--encryption-provider-config={}", config_path.display()),
        ]
    });
    support::control_plane_with(args)
}

fn private_pem(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let pem = data.get("private.pem").cloned().unwrap_or_default();
    assert!(
        contains(&pem, b"PRIVATE KEY"),
        "no private.pem in the Secret"
    );
    pem
}

#[tokio::test]
async fn with_an_encryption_configuration_etcd_holds_no_private_key_bytes() {
    let plane = plane();
    let client = support::client().await;
    let ns = support::namespace(&client, "at-rest").await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let _operator = Operator::start(&ns);
    wait_ready(&client, &ns, "web").await;
    let pem = private_pem(&secret_data(&client, &ns, "web-signing-keys").await);

    let stored = etcd_value(plane, &format!("/registry/secrets/{ns}/web-signing-keys"));
    eprintln!(
        "etcd: {}",
        String::from_utf8_lossy(&stored[..stored.len().min(60)])
    );
    assert!(
        stored.starts_with(b"k8s:enc:secretbox:v1:key1:"),
        "not encrypted: {stored:?}"
    );
    assert!(
        !contains(&stored, &pem),
        "the private key is in etcd in the clear"
    );
    assert!(!contains(&stored, b"PRIVATE KEY"));
}

#[tokio::test]
async fn without_an_encryption_configuration_etcd_holds_the_private_key_in_the_clear() {
    plain_plane_shows_the_key().await;
}

async fn plain_plane_shows_the_key() {
    // Operator::start_with reaches for the shared plane: it must start with its flags.
    plane();
    let own = support::own_control_plane(&[]);
    let client = support::client_of(&own).await;
    let ns = support::namespace(&client, "in-the-clear").await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let run = ["run", "--namespace", &ns, "--metrics-addr", "127.0.0.1:0"];
    let kubeconfig = own.kubeconfig.display().to_string();
    let _operator = Operator::start_with(
        run.iter().map(|s| s.to_string()).collect(),
        vec![("KUBECONFIG".into(), kubeconfig)],
    );
    wait_ready(&client, &ns, "web").await;
    let pem = private_pem(&secret_data(&client, &ns, "web-signing-keys").await);

    let stored = etcd_value(&own, &format!("/registry/secrets/{ns}/web-signing-keys"));
    eprintln!(
        "etcd: {}",
        String::from_utf8_lossy(&stored[..stored.len().min(60)])
    );
    assert!(
        stored.starts_with(b"k8s\0"),
        "not the plain protobuf: {stored:?}"
    );
    assert!(
        contains(&stored, &pem),
        "private.pem not found in etcd's bytes"
    );
}

#[tokio::test]
async fn the_audit_log_names_who_revoked_a_kid_and_the_operator_s_secret_writes_without_bodies() {
    let plane = plane();
    let client = support::client().await;
    let ns = support::namespace(&client, "audit").await;
    let operator_kubeconfig = install_operator_identity(plane, &client).await;
    support::apply_set(&client, &ns, "web", long_lived_spec()).await;
    let run = ["run", "--namespace", &ns, "--metrics-addr", "127.0.0.1:0"];
    let operator = Operator::start_with(
        run.iter().map(|s| s.to_string()).collect(),
        vec![(
            "KUBECONFIG".into(),
            operator_kubeconfig.display().to_string(),
        )],
    );
    let set = wait_ready(&client, &ns, "web").await;
    let kid = set.status.and_then(|s| s.active_kid).unwrap_or_default();
    let pem = private_pem(&secret_data(&client, &ns, "web-signing-keys").await);

    // alice of group security-oncall may edit JwtKeySets here, and read no Secret.
    grant_oncall(&client, &ns, "alice").await;
    let alice = ops::user_kubeconfig(plane, "alice", "security-oncall");
    let revoked = jwtks(&alice, &["revoke", "web", &kid, "-n", &ns, "--yes"], None);
    assert_eq!(revoked.code, 0, "{}{}", revoked.stdout, revoked.stderr);

    let is_revoke = |e: &Value| {
        e["objectRef"]["resource"] == "jwtkeysets"
            && e["objectRef"]["namespace"] == ns.as_str()
            && e["verb"] == "patch"
            && e["stage"] == "ResponseComplete"
            && e["requestObject"]["spec"]["revokedKids"]
                .to_string()
                .contains(&kid)
    };
    let entry = support::eventually(
        "alice's revocation in the audit log",
        Duration::from_secs(30),
        || async { audit_events().into_iter().find(|e| is_revoke(e)) },
    )
    .await;
    eprintln!("audit: {entry}");
    assert_eq!(entry["user"]["username"], "alice", "{entry}");
    assert!(
        entry["user"]["groups"]
            .to_string()
            .contains("security-oncall"),
        "{entry}"
    );
    assert_eq!(
        (
            entry["level"].as_str(),
            entry["responseStatus"]["code"].as_i64()
        ),
        (Some("Request"), Some(200))
    );
    // Which tool: the CLI writes as field manager kubectl-jwtks.
    assert!(
        entry["requestURI"]
            .as_str()
            .is_some_and(|u| u.contains("fieldManager=kubectl-jwtks")),
        "{entry}"
    );

    // The operator's Secret writes: who, which Secret, when, never the body.
    let secret_writes: Vec<Value> = audit_events()
        .into_iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "secrets" && e["objectRef"]["namespace"] == ns.as_str()
        })
        .collect();
    assert!(
        !secret_writes.is_empty(),
        "no Secret write of the operator logged"
    );
    for e in &secret_writes {
        assert_eq!(
            (e["user"]["username"].as_str(), e["level"].as_str()),
            (Some(OPERATOR_ACCOUNT), Some("Metadata")),
            "{e}"
        );
        assert!(
            e.get("requestObject").is_none() && e.get("responseObject").is_none(),
            "{e}"
        );
    }
    // The operator, with the chart's rights only, records the revocation in status.history.
    let sets: Api<jwt_key_rotator::api::JwtKeySet> = Api::namespaced(client.clone(), &ns);
    support::eventually(
        "KeyRevoked in status.history",
        Duration::from_secs(60),
        || async {
            let history = sets.get("web").await.ok()?.status?.history;
            history
                .iter()
                .any(|h| h.event == "KeyRevoked" && h.kid.as_deref() == Some(kid.as_str()))
                .then_some(())
        },
    )
    .await;
    let log = std::fs::read(scratch().join("audit.log")).expect("audit log");
    let pem_in_json = String::from_utf8_lossy(&pem).replace('\n', "\\n");
    assert!(!contains(&log, b"PRIVATE KEY") && !contains(&log, pem_in_json.as_bytes()));
    drop(operator);
}

/// Every event of the audit log, one JSON object a line.
fn audit_events() -> Vec<Value> {
    let text = std::fs::read_to_string(scratch().join("audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The chart's identity and rights (deploy/: Namespace, ServiceAccount, ClusterRole and its
/// binding), and a kubeconfig with a token of that ServiceAccount.
async fn install_operator_identity(plane: &support::ControlPlane, admin: &kube::Client) -> PathBuf {
    let applied = support::kubectl(&[
        "apply",
        "-f",
        "deploy/namespace.yaml",
        "-f",
        "deploy/serviceaccount.yaml",
        "-f",
        "deploy/rbac.yaml",
    ]);
    assert!(applied.success, "{}", applied.stderr);
    ops::service_account_kubeconfig(plane, admin, "jwt-key-rotator", "jwt-key-rotator").await
}

/// A Role letting `user` read and edit the JwtKeySets of `ns` (and their JWKS), no Secret.
async fn grant_oncall(admin: &kube::Client, ns: &str, user: &str) {
    let meta = ObjectMeta {
        name: Some("jwtks-oncall".into()),
        ..ObjectMeta::default()
    };
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![
            rule(
                "jwt.keyrotator.dev",
                "jwtkeysets",
                &["get", "list", "watch", "patch"],
            ),
            rule("", "configmaps", &["get", "list"]),
        ]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "jwtks-oncall".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&pp, &role)
        .await
        .expect("create Role");
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&pp, &binding)
        .await
        .expect("create RoleBinding");
}
