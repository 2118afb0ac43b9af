//! The operator's keys, checked by implementations that share no code with it: the `openssl`
//! CLI, PyJWT with `cryptography` (Python) and panva/jose on Node's crypto, beside the
//! `jsonwebtoken` crate. Tokens cross in every direction: each signs with the files a signer
//! mounts, each verifies with the JWKS a verifier is handed, and each computes the `kid`.
//! Keys the others write (openssl in every form, PyJWT's, `cryptography`'s and jose's private
//! JWKs and PEMs) are read back by `parse_private` to the very files we render.
//!
//! Needs `openssl`, `node` and what `tests/interop/setup.sh` installs (tests/run.sh runs it).
//! A missing tool or package fails these tests: they never skip.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64ct::{Base64UrlUnpadded, Encoding};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Header, decode, encode};
use jwt::{Claims, jwt_alg, signing_key, validation, verifier_jwk, verifier_jwk_json};
use jwt_key_rotator::keys::Algorithm::{self, *};
use jwt_key_rotator::keys::{Jwks, KeyError, KeyMaterial, RsaKeySize, generate, parse_private};

#[path = "interop/jwt.rs"]
mod jwt;

/// Every algorithm with its default key, and the larger RSA moduli once each.
const CASES: [(&str, Algorithm, Option<RsaKeySize>); 14] = [
    ("RS256", RS256, None),
    ("RS384", RS384, None),
    ("RS512", RS512, None),
    ("PS256", PS256, None),
    ("PS384", PS384, None),
    ("PS512", PS512, None),
    ("ES256", ES256, None),
    ("ES384", ES384, None),
    ("EdDSA", EdDSA, None),
    ("HS256", HS256, None),
    ("HS384", HS384, None),
    ("HS512", HS512, None),
    ("RS256-3072", RS256, Some(RsaKeySize::Bits3072)),
    ("PS512-4096", PS512, Some(RsaKeySize::Bits4096)),
];

/// Who signs a token in each case, by the token's file name `token.<signer>.jwt`.
const SIGNERS_ASYMMETRIC: [&str; 5] = ["rust", "python-pem", "python-jwk", "node-pem", "node-jwk"];
const SIGNERS_HMAC: [&str; 5] = [
    "rust",
    "python-secret",
    "python-jwk",
    "node-secret",
    "node-jwk",
];

fn signers(key: &KeyMaterial) -> [&'static str; 5] {
    match key.alg().is_symmetric() {
        true => SIGNERS_HMAC,
        false => SIGNERS_ASYMMETRIC,
    }
}

fn keys() -> &'static [(&'static str, KeyMaterial)] {
    static KEYS: OnceLock<Vec<(&'static str, KeyMaterial)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        CASES
            .iter()
            .map(|&(name, alg, size)| (name, generate(alg, size).unwrap()))
            .collect()
    })
}

fn claims(signer: &str, case: &str) -> Claims {
    Claims {
        sub: format!("{signer}:{case}"),
        exp: 4_000_000_000,
    }
}

/// The token `jsonwebtoken` signs with the key a signer mounts, `kid` in its header.
fn rust_token(case: &str, key: &KeyMaterial) -> String {
    let mut header = Header::new(jwt_alg(key.alg()));
    header.kid = Some(key.kid().to_string());
    encode(&header, &claims("rust", case), &signing_key(key)).unwrap()
}

/// A fresh directory under cargo's scratch space for integration tests; left there on failure.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command to success and returns its stdout; a missing program or a failure panics
/// with everything it printed.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (see tests/interop/setup.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn openssl<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Vec<u8> {
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// The token's signing input and its signature bytes.
fn split_token(token: &str) -> (&str, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input, Base64UrlUnpadded::decode_vec(sig).unwrap())
}

fn digest(alg: Algorithm) -> &'static str {
    match alg {
        RS256 | PS256 | ES256 | HS256 => "-sha256",
        RS384 | PS384 | ES384 | HS384 => "-sha384",
        _ => "-sha512",
    }
}

/// `openssl` options that sign (or verify) a JWS signing input the way `alg` does, with the
/// key file `key`; `verify` takes the public key and the signature file.
fn openssl_sig_args(alg: Algorithm, key: &str, verify: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = match alg {
        // EdDSA signs the message itself, not a digest.
        EdDSA => vec![
            "pkeyutl".into(),
            "-rawin".into(),
            "-inkey".into(),
            key.into(),
        ],
        _ => vec!["dgst".into(), digest(alg).into()],
    };
    match (alg, verify) {
        (EdDSA, None) => args.push("-sign".into()),
        (EdDSA, Some(sig)) => args.extend(["-verify", "-pubin", "-sigfile", sig].map(Into::into)),
        (_, None) => args.extend(["-sign".into(), key.into()]),
        (_, Some(sig)) => args.extend(["-verify", key, "-signature", sig].map(Into::into)),
    }
    if matches!(alg, PS256 | PS384 | PS512) {
        // RFC 7518 §3.5: MGF1 with the same hash, and a salt as long as the hash.
        args.extend(
            [
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ]
            .map(Into::into),
        );
    }
    // pkeyutl reads `-in`; dgst takes the file last.
    if alg == EdDSA {
        args.push("-in".into());
    }
    args.push("input".into());
    args
}

/// JWS ECDSA signatures are r || s (RFC 7518 §3.4); OpenSSL reads and writes DER.
fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    let integer = |bytes: &[u8]| {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        let mut body = if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            vec![0]
        } else {
            vec![]
        };
        body.extend(trimmed);
        [vec![0x02, body.len() as u8], body].concat()
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let seq = [integer(r), integer(s)].concat();
    [vec![0x30, seq.len() as u8], seq].concat()
}

fn ecdsa_der_to_raw(der: &[u8], half: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    let mut rest = &der[2..];
    let mut raw = Vec::new();
    for _ in 0..2 {
        assert_eq!(rest[0], 0x02, "DER INTEGER");
        let len = rest[1] as usize;
        let int = &rest[2..2 + len];
        let int = &int[int.len().saturating_sub(half)..];
        raw.extend(std::iter::repeat_n(0, half - int.len()));
        raw.extend(int);
        rest = &rest[2 + len..];
    }
    raw
}

/// OpenSSL loads, checks and re-encodes the key files byte for byte, signs with `private.pem`
/// and verifies with `public.pem`, verifies the JWT `jsonwebtoken` signed, and signs a JWT
/// that `jsonwebtoken` verifies with the published JWK.
fn check_with_openssl(dir: &Path, name: &str, key: &KeyMaterial) {
    let alg = key.alg();
    let rust_token = rust_token(name, key);
    let (input, rust_sig) = split_token(&rust_token);
    std::fs::write(dir.join("input"), input).unwrap();

    if let Some(secret) = key.secret_bytes() {
        let hexkey: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let mac = openssl(
            dir,
            &[
                "dgst",
                digest(alg),
                "-mac",
                "HMAC",
                "-macopt",
                &format!("hexkey:{hexkey}"),
                "-binary",
                "input",
            ],
        );
        assert_eq!(
            mac, rust_sig,
            "{name}: openssl's HMAC of the token with `secret`"
        );
        return;
    }

    std::fs::write(dir.join("private.pem"), key.private_pem().unwrap()).unwrap();
    std::fs::write(dir.join("public.pem"), key.public_pem().unwrap()).unwrap();
    openssl(dir, &["pkey", "-in", "private.pem", "-check", "-noout"]);
    openssl(dir, &["pkey", "-pubin", "-in", "public.pem", "-noout"]);
    let reencoded = openssl(dir, &["pkey", "-in", "private.pem"]);
    assert_eq!(
        String::from_utf8(reencoded).unwrap(),
        key.private_pem().unwrap(),
        "{name}: openssl re-encodes private.pem byte for byte"
    );
    let public = openssl(dir, &["pkey", "-in", "private.pem", "-pubout"]);
    assert_eq!(
        String::from_utf8(public).unwrap(),
        key.public_pem().unwrap(),
        "{name}: public.pem is what openssl derives from private.pem"
    );

    // OpenSSL signs, and verifies its own signature with public.pem.
    let ossl_sig = openssl(dir, &openssl_sig_args(alg, "private.pem", None));
    std::fs::write(dir.join("openssl.sig"), &ossl_sig).unwrap();
    let verify = |sig_file: &str| {
        openssl(dir, &openssl_sig_args(alg, "public.pem", Some(sig_file)));
    };
    verify("openssl.sig");

    // OpenSSL verifies the token jsonwebtoken signed with private.pem.
    let is_ec = matches!(alg, ES256 | ES384);
    let rust_sig = if is_ec {
        ecdsa_raw_to_der(&rust_sig)
    } else {
        rust_sig
    };
    std::fs::write(dir.join("rust.sig"), rust_sig).unwrap();
    verify("rust.sig");

    // jsonwebtoken verifies, with the published JWK, the token OpenSSL signed.
    let ossl_sig = if is_ec {
        ecdsa_der_to_raw(&ossl_sig, if alg == ES256 { 32 } else { 48 })
    } else {
        ossl_sig
    };
    let ossl_token = format!("{input}.{}", Base64UrlUnpadded::encode_string(&ossl_sig));
    let decoding = DecodingKey::from_jwk(&verifier_jwk(key)).unwrap();
    let verified = decode::<Claims>(&ossl_token, &decoding, &validation(alg))
        .unwrap_or_else(|e| panic!("{name}: the token openssl signed did not verify: {e}"));
    assert_eq!(verified.claims, claims("rust", name));
}

#[test]
fn openssl_loads_checks_and_signs_with_every_algorithms_key_files() {
    let root = scratch("interop-openssl");
    // Every case runs, so one failure does not hide another; each prints its own panic.
    let failed: Vec<&str> = keys()
        .iter()
        .filter(|(name, key)| {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::panic::catch_unwind(|| check_with_openssl(&dir, name, key)).is_err()
        })
        .map(|(name, _)| *name)
        .collect();
    assert!(failed.is_empty(), "openssl refused the keys of {failed:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// An algorithm, the `openssl genpkey` options of a key for it, and the openssl command that
/// rewrites that key in its traditional form (PKCS#1, SEC1), if there is one.
type OpensslKey = (
    Algorithm,
    &'static [&'static str],
    Option<&'static [&'static str]>,
);

/// Keys as a person makes them with openssl, in each form it writes.
const OPENSSL_KEYS: [OpensslKey; 6] = [
    (
        RS256,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        Some(&["rsa", "-traditional"]),
    ),
    (
        PS256,
        &["-algorithm", "RSA-PSS", "-pkeyopt", "rsa_keygen_bits:3072"],
        None,
    ),
    (
        RS512,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        None,
    ),
    (
        ES256,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Some(&["ec"]),
    ),
    (
        ES384,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        Some(&["ec"]),
    ),
    (EdDSA, &["-algorithm", "ED25519"], None),
];

#[test]
fn keys_openssl_makes_are_read_back_in_every_form_it_writes() {
    let dir = scratch("interop-openssl-keys");
    for (alg, genpkey, traditional) in OPENSSL_KEYS {
        let generated = openssl(&dir, &[&["genpkey"][..], genpkey].concat());
        std::fs::write(dir.join("key.pem"), &generated).unwrap();
        let text = |args: &[&str]| String::from_utf8(openssl(&dir, args)).unwrap();
        let (pkcs8, spki) = (
            text(&["pkey", "-in", "key.pem"]),
            text(&["pkey", "-in", "key.pem", "-pubout"]),
        );
        let mut forms = vec![("PKCS#8", generated)];
        if let Some(command) = traditional {
            forms.push((
                "traditional",
                openssl(&dir, &[command, &["-in", "key.pem"]].concat()),
            ));
        }
        for (form, pem) in forms {
            let key = parse_private(alg, &pem)
                .unwrap_or_else(|e| panic!("{alg}: openssl's {form} key: {e}"));
            // openssl writes the very bytes we render for the same key; an RSA-PSS key alone
            // differs, in its algorithm identifier, which we write as plain RSA.
            if genpkey[1] != "RSA-PSS" {
                assert_eq!(
                    key.private_pem(),
                    Some(pkcs8.as_str()),
                    "{alg} {form}: private.pem"
                );
                assert_eq!(
                    key.public_pem(),
                    Some(spki.as_str()),
                    "{alg} {form}: public.pem"
                );
            }
            check_with_openssl(&dir, &format!("{alg} from openssl's {form} key"), &key);
            // It is the key openssl made: openssl's own key file signs, our public.pem verifies.
            let args = |key: &str, sig: Option<&str>| openssl_sig_args(alg, key, sig);
            std::fs::write(
                dir.join("theirs.sig"),
                openssl(&dir, &args("key.pem", None)),
            )
            .unwrap();
            openssl(&dir, &args("public.pem", Some("theirs.sig")));
        }
    }
    // A curve and a modulus size the operator does not use are named in the refusal.
    let p521 = openssl(
        &dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
        ],
    );
    let err = parse_private(ES256, &p521).map(|_| ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ES256 needs a P-256 EC key, but this is a P-521 EC key"
    );
    for bits in [512, 1024] {
        let keygen_bits = format!("rsa_keygen_bits:{bits}");
        let small = openssl(
            &dir,
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", &keygen_bits],
        );
        let err = parse_private(RS256, &small).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaSize { bits: b, .. } if b == bits),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes what a signer mounts and what a verifier is handed, per case, and the Rust token.
fn write_cases(root: &Path) {
    let mut cases = Vec::new();
    let mut jwks = Jwks::default();
    for (name, key) in keys() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, bytes: &[u8]| std::fs::write(dir.join(file), bytes).unwrap();
        write("alg", key.alg().as_str().as_bytes());
        write("kid", key.kid().as_bytes());
        write("private.jwk.json", key.private_jwk_json().as_bytes());
        write("verify.jwk.json", verifier_jwk_json(key).as_bytes());
        match key.secret_bytes() {
            Some(secret) => write("secret", secret),
            None => {
                write("private.pem", key.private_pem().unwrap().as_bytes());
                write("public.pem", key.public_pem().unwrap().as_bytes());
            }
        }
        jwks.keys.extend(key.public_jwk().cloned());
        write("token.rust.jwt", rust_token(name, key).as_bytes());
        cases.push(serde_json::json!({"name": name, "signers": signers(key)}));
    }
    std::fs::write(root.join("cases.json"), serde_json::to_vec(&cases).unwrap()).unwrap();
    std::fs::write(root.join("jwks.json"), jwks.to_json()).unwrap();
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Runs one side's script; its report, and whether every check in it passed. A program that
/// cannot start fails the test at once.
fn script(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (see tests/interop/setup.sh)"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

fn python(mode: &str, root: &Path) -> (bool, String) {
    let python = interop_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/interop/setup.sh",
        python.display()
    );
    script(
        Command::new(python)
            .arg(interop_dir().join("interop.py"))
            .args([mode.as_ref(), root.as_os_str()]),
    )
}

fn node(mode: &str, root: &Path) -> (bool, String) {
    script(
        Command::new("node")
            .arg(interop_dir().join("interop.mjs"))
            .args([mode.as_ref(), root.as_os_str()]),
    )
}

/// jsonwebtoken verifies every token, picking the key from the published JWKS by `kid` (the
/// `oct` JWK for HMAC), and refuses it with one signature bit flipped. Returns the count.
fn verify_with_jsonwebtoken(root: &Path) -> usize {
    let jwks: JwkSet =
        serde_json::from_slice(&std::fs::read(root.join("jwks.json")).unwrap()).unwrap();
    let mut verified = 0;
    for (name, key) in keys() {
        for signer in signers(key) {
            let path = root.join(name).join(format!("token.{signer}.jwt"));
            let token = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
            assert_eq!(kid, key.kid(), "{name}: {signer}'s kid");
            let jwk = match key.alg().is_symmetric() {
                true => verifier_jwk(key),
                false => jwks
                    .find(&kid)
                    .unwrap_or_else(|| panic!("{name}: kid not in JWKS"))
                    .clone(),
            };
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let validation = validation(key.alg());
            let got = decode::<Claims>(&token, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{name}: {signer}'s token did not verify: {e}"));
            assert_eq!(got.claims, claims(signer, name));
            let (input, mut sig) = split_token(&token);
            let middle = sig.len() / 2;
            sig[middle] ^= 1;
            let forged = format!("{input}.{}", Base64UrlUnpadded::encode_string(&sig));
            assert!(
                decode::<Claims>(&forged, &decoding, &validation).is_err(),
                "{name}: forged"
            );
            verified += 1;
        }
    }
    verified
}

/// The files PyJWT, `cryptography` and jose wrote for each key (its private JWK, and the
/// traditional PKCS#1 or SEC1 PEM) read back to the key, rendered byte for byte as generated.
fn read_back_exports(root: &Path) -> usize {
    let mut read = 0;
    for (name, key) in keys() {
        let mut files = vec!["python.private.jwk.json", "node.private.jwk.json"];
        if !key.alg().is_symmetric() {
            files.push("python.traditional.pem");
        }
        for file in files {
            let encoded = std::fs::read(root.join(name).join(file)).unwrap();
            let parsed = parse_private(key.alg(), &encoded)
                .unwrap_or_else(|e| panic!("{name}: {file}: {e}"));
            let rendered = |k: &KeyMaterial| {
                let files = [k.private_pem(), k.public_pem(), Some(k.private_jwk_json())];
                (k.kid().to_string(), files.map(|f| f.map(str::to_string)))
            };
            assert_eq!(rendered(&parsed), rendered(key), "{name}: {file}");
            read += 1;
        }
    }
    read
}

#[test]
fn tokens_cross_between_rust_python_and_node_in_every_direction() {
    let root = scratch("interop-jwt");
    write_cases(&root);
    // Each signs with every encoding it can load, then each verifies every token; all run
    // even when one fails, so a failure shows what every library made of it.
    let runs = [
        python("sign", &root),
        node("sign", &root),
        python("verify", &root),
        node("verify", &root),
    ];
    let report: String = runs.iter().map(|(_, r)| r.as_str()).collect();
    print!("{report}");
    assert!(runs.iter().all(|(ok, _)| *ok), "interop failed:\n{report}");
    let verified = verify_with_jsonwebtoken(&root);
    assert_eq!(verified, CASES.len() * SIGNERS_ASYMMETRIC.len());
    println!(
        "jsonwebtoken verified {verified} tokens from 5 signers over {} cases",
        CASES.len()
    );
    let read = read_back_exports(&root);
    // Three files per asymmetric key, two (the JWKs) per HMAC key.
    let hmac = CASES.iter().filter(|c| c.1.is_symmetric()).count();
    assert_eq!(read, 3 * (CASES.len() - hmac) + 2 * hmac);
    println!("parse_private read back {read} keys written by PyJWT, cryptography and jose");
    std::fs::remove_dir_all(&root).unwrap();
}
