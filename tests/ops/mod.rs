//! What the operations tests share: running the CLI as a user would, waiting for a set to be
//! ready, reading its Secret as the admin, and signing tokens as a workload does.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
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
