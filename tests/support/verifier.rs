//! Verifiers of other languages (tests/interop: PyJWT, panva/jose), run as processes that read
//! one token a line and answer one verdict a line, and tokens signed as a workload signs them.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use jsonwebtoken::{EncodingKey, Header};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

/// tests/interop, where the verifiers and their pinned libraries live (`setup.sh`).
pub fn interop() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
}

/// A verifier process reading tokens on stdin and answering "ok <kid>" or "refused ..." each.
pub struct Verifier {
    pub name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Verifier {
    pub fn start(name: &'static str, mut cmd: Command) -> Verifier {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (see tests/interop/setup.sh)"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Verifier {
            name,
            child,
            stdin,
            stdout,
        }
    }

    pub fn verify(&mut self, token: &str) -> String {
        writeln!(self.stdin, "{token}").expect("send a token");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read a verdict");
        line.trim().to_string()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ES256 token signed with what the Secret's signing files hold now, as a signer that
/// mounts it.
pub fn sign_es256(secret: &Secret) -> Option<String> {
    let data = secret.data.as_ref()?;
    let kid = String::from_utf8(data.get("kid")?.0.clone()).ok()?;
    let key = EncodingKey::from_ec_pem(&data.get("private.pem")?.0).ok()?;
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.trim().to_string());
    let exp = jiff::Timestamp::now().as_second() + 10;
    jsonwebtoken::encode(&header, &json!({"sub": "login", "exp": exp}), &key).ok()
}
