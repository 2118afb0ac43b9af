//! What the operations tests share: running the CLI as a user would, waiting for a set to be
//! ready, reading its Secret as the admin, and signing tokens as a workload does.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jwt_key_rotator::api::JwtKeySet;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::support;

/// What the CLI printed, and its exit code.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `jwt-key-rotator ARGS` as the user of `kubeconfig`, with `stdin` (none: /dev/null).
pub fn jwtks(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    run_program(
        Path::new(env!("CARGO_BIN_EXE_jwt-key-rotator")),
        kubeconfig,
        args,
        stdin,
    )
}

pub fn run_program(program: &Path, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for the CLI");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The set once the operator reports it Ready with an active key.
pub async fn wait_ready(client: &Client, ns: &str, name: &str) -> JwtKeySet {
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), ns);
    support::eventually(
        &format!("JwtKeySet {ns}/{name} to be Ready"),
        Duration::from_secs(60),
        || async {
            let set = sets.get(name).await.ok()?;
            let status = set.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.active_kid.is_some()).then_some(set)
        },
    )
    .await
}

/// The Secret's data as the admin reads it.
pub async fn secret_data(client: &Client, ns: &str, name: &str) -> BTreeMap<String, Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret {ns}/{name}: {e}"));
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// A token signed as a workload signs it: with `private.pem` and `kid` from the Secret, by the
/// independent `jsonwebtoken` crate.
pub fn sign_es256(private_pem: &[u8], kid: &str, lifetime: i64) -> String {
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private_pem).expect("ES256 private.pem");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let exp = jiff::Timestamp::now().as_second() + lifetime;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// An ES256 set with a long life, so nothing rotates on its own during a test.
pub fn long_lived_spec() -> serde_json::Value {
    serde_json::json!({
        "algorithm": "ES256",
        "rotationInterval": "24h",
        "publishLead": "1h",
        "tokenTTL": "10m",
        "propagationDelay": "1m",
        "clockSkew": "30s",
    })
}

/// The value etcd holds under `key`, read with etcdctl past the API server.
pub fn etcd_value(plane: &support::ControlPlane, key: &str) -> Vec<u8> {
    let endpoint = support::plane_env(plane, "ETCD_ENDPOINT");
    let out = Command::new(support::tool("etcdctl"))
        .args(["--endpoints", &endpoint, "get", key, "--print-value-only"])
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap_or_else(|e| panic!("run etcdctl: {e}"));
    assert!(
        out.status.success(),
        "etcdctl get {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "etcd holds nothing under {key}");
    out.stdout
}

/// Whether `needle` occurs in `haystack`, byte for byte.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A kubeconfig for user `user` of group `group`, with a client certificate signed by the
/// plane's cluster CA (as an organisation's identity provider or `kubeadm kubeconfig user`
/// would issue one).
pub fn user_kubeconfig(plane: &support::ControlPlane, user: &str, group: &str) -> PathBuf {
    let pki = plane.kubeconfig.with_file_name("pki");
    let dir = plane.kubeconfig.with_file_name(format!("user-{user}"));
    std::fs::create_dir_all(&dir).expect("user dir");
    let (key, crt) = (dir.join("user.key"), dir.join("user.crt"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let key_s = key.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &key_s,
    ]);
    let csr = dir.join("user.csr").display().to_string();
    let subject = format!("/O={group}/CN={user}");
    openssl(&[
        "req", "-new", "-key", &key_s, "-subj", &subject, "-out", &csr,
    ]);
    let (ca_crt, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    // A v3 client certificate, as up.sh issues its own (rustls refuses a v1 one).
    let ext = dir.join("client.ext");
    let usage = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
    std::fs::write(&ext, usage).expect("write client.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-days",
        "1",
        "-out",
        &crt.display().to_string(),
        "-CA",
        &ca_crt.display().to_string(),
        "-CAkey",
        &ca_key.display().to_string(),
        "-CAcreateserial",
        "-extfile",
        &ext.display().to_string(),
    ]);
    let admin: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(&plane.kubeconfig).expect("admin kubeconfig"),
    )
    .expect("admin kubeconfig is YAML");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": user, "user": {
            "client-certificate": crt.display().to_string(),
            "client-key": key_s,
        }}],
        "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
        "current-context": user,
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
    path
}

/// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a fresh token
/// (TokenRequest API), as the operator's pod would.
pub async fn service_account_kubeconfig(
    plane: &support::ControlPlane,
    admin: &Client,
    namespace: &str,
    name: &str,
) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("TokenRequest status")
        .token;
    let admin_config: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(&plane.kubeconfig).expect("admin kubeconfig"),
    )
    .expect("admin kubeconfig is YAML");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": admin_config["clusters"][0]["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        "current-context": name,
    });
    let path = plane
        .kubeconfig
        .with_file_name(format!("sa-{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
    path
}
