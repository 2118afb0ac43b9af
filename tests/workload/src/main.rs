//! A workload that consumes what jwt-key-rotator keeps, as the README tells one to:
//!
//! - `watch FILE...` (a pod's main process): polls the mounted files every 100 ms and prints,
//!   whenever one changes, a JSON line: the file, when it changed (Unix milliseconds), and the
//!   kids it now holds (a `kid` file's kid, or a JWKS's; never a key's bytes). The tests read
//!   these lines from the pod's log to measure when the kubelet refreshed each volume.
//! - `sign DIR ALG TTL-SECONDS SUBJECT`: signs a token with whatever `kid` and `private.pem`
//!   (`secret` for HS*) are mounted in DIR, and prints it. The kubelet swaps a volume's files
//!   all at once, but two reads can straddle a swap: the kid is read before and after the key,
//!   and the pair is used only if both reads agree.
//! - `verify JWKS-FILE TOKEN...`: verifies each token against the JWKS mounted now (key
//!   chosen by the token's `kid`, signature, algorithm and `exp` checked, no leeway), printing
//!   `ok KID` or `refused KID: WHY` per token; exits 1 if any was refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("watch") if args.len() > 1 => watch(&args[1..]),
        Some("sign") if args.len() == 5 => sign(&args[1], &args[2], &args[3], &args[4]),
        Some("verify") if args.len() > 1 => verify(&args[1], &args[2..]),
        _ => Err(
            "usage: jwt-workload watch FILE... | sign DIR ALG TTL-SECONDS SUBJECT | \
                  verify JWKS-FILE TOKEN..."
                .to_string(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("jwt-workload: {message}");
            ExitCode::from(2)
        }
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The kids a file holds: a JWKS's, or the one in a `kid` file. Anything else (a private key)
/// is never echoed: it holds no kid.
fn kids(content: &str) -> Vec<String> {
    let is_kid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(jwks)) => jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str().map(str::to_string))
            .collect(),
        _ if is_kid(content.trim()) => vec![content.trim().to_string()],
        _ => vec![],
    }
}

fn watch(files: &[String]) -> Result<ExitCode, String> {
    let mut last: Vec<Option<String>> = vec![None; files.len()];
    loop {
        for (file, last) in files.iter().zip(last.iter_mut()) {
            // A file missing for a moment (never, with the kubelet's atomic swaps) is skipped.
            let Ok(content) = std::fs::read_to_string(file) else {
                continue;
            };
            if last.as_deref() != Some(content.as_str()) {
                let line = json!({
                    "file": file,
                    "at_ms": now().as_millis() as u64,
                    "kids": kids(&content),
                });
                println!("{line}");
                *last = Some(content);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sign(dir: &str, alg: &str, ttl: &str, subject: &str) -> Result<ExitCode, String> {
    let alg: Algorithm = alg.parse().map_err(|e| format!("algorithm {alg}: {e}"))?;
    let ttl: u64 = ttl.parse().map_err(|e| format!("TTL {ttl}: {e}"))?;
    let dir = PathBuf::from(dir);
    let key_file = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "secret",
        _ => "private.pem",
    };
    for _ in 0..10 {
        let kid = read(&dir.join("kid"))?;
        let key = std::fs::read(dir.join(key_file)).map_err(|e| format!("{key_file}: {e}"))?;
        if read(&dir.join("kid"))? != kid {
            continue; // the volume was swapped between the reads: read the pair again
        }
        let encoding = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(EncodingKey::from_secret(&key))
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&key),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&key),
            _ => EncodingKey::from_rsa_pem(&key),
        }
        .map_err(|e| format!("{key_file}: {e}"))?;
        let mut header = Header::new(alg);
        header.kid = Some(kid.trim().to_string());
        let iat = now().as_secs();
        let claims = json!({"sub": subject, "iat": iat, "exp": iat + ttl});
        let token = jsonwebtoken::encode(&header, &claims, &encoding)
            .map_err(|e| format!("signing: {e}"))?;
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    Err("the kid kept changing while reading the key".to_string())
}

fn verify(jwks_file: &str, tokens: &[String]) -> Result<ExitCode, String> {
    let jwks: JwkSet = serde_json::from_str(&read(Path::new(jwks_file))?)
        .map_err(|e| format!("{jwks_file}: {e}"))?;
    let mut refused = 0;
    for token in tokens {
        match verify_one(&jwks, token) {
            Ok(kid) => println!("ok {kid}"),
            Err((kid, why)) => {
                refused += 1;
                println!("refused {kid}: {why}");
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn verify_one(jwks: &JwkSet, token: &str) -> Result<String, (String, String)> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| ("?".into(), e.to_string()))?;
    let kid = header.kid.unwrap_or_default();
    let fail = |why: String| (kid.clone(), why);
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| fail("no key with this kid in the JWKS".into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| fail(e.to_string()))?;
    Ok(kid)
}
