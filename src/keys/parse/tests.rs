//! Reading keys back: every encoding of a generated key, and what people paste from openssl,
//! yields the key's own `kid` and the very bytes `generate` rendered; anything else is refused
//! with an error that quotes none of the input.

use elliptic_curve::{Generate, SecretKey};
use getrandom::SysRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::*;
use crate::keys::jwk::kid_of_public_jwk;
use crate::keys::{Algorithm, PublicJwk, generate};

/// Every observable part of a key, to compare two keys byte for byte.
fn rendered(k: &KeyMaterial) -> impl PartialEq + std::fmt::Debug {
    (
        k.alg(),
        k.rsa_size(),
        k.kid().to_string(),
        k.public_jwk().cloned(),
        k.public_pem().map(str::to_string),
        k.private_pem().map(str::to_string),
        k.private_jwk_json().to_string(),
        k.secret_bytes().map(<[u8]>::to_vec),
    )
}

fn assert_same_key(parsed: &KeyMaterial, original: &KeyMaterial, from: &str) {
    assert_eq!(
        rendered(parsed),
        rendered(original),
        "{}: parsed from {from}",
        original.alg()
    );
}

/// The same JSON with its members in another order (serde_json's map sorts them) and spaces.
fn reordered(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    serde_json::to_string_pretty(&value).unwrap()
}

/// The encodings a signer's Secret may hold for `key`, as they may survive a hand edit.
fn surviving_encodings(key: &KeyMaterial) -> Vec<(&'static str, String)> {
    let jwk = key.private_jwk_json();
    let mut encodings = vec![
        ("private JWK", jwk.to_string()),
        ("private JWK + newline", format!("{jwk}\n")),
        ("private JWK, members reordered", reordered(jwk)),
    ];
    if let Some(pem) = key.private_pem() {
        encodings.push(("private.pem", pem.to_string()));
        encodings.push(("private.pem + blank lines", format!("\n{pem}\n\n  ")));
        encodings.push(("private.pem, CRLF", pem.replace('\n', "\r\n")));
        encodings.push(("private.pem, no final newline", pem.trim_end().to_string()));
    }
    encodings
}

#[test]
fn every_encoding_of_a_generated_key_parses_back_to_byte_identical_files() {
    for alg in Algorithm::ALL {
        let keys = if alg.is_rsa() { 2 } else { 20 };
        for _ in 0..keys {
            let key = generate(alg, None).unwrap();
            for (from, encoded) in surviving_encodings(&key) {
                let parsed = parse_private(alg, encoded.as_bytes())
                    .unwrap_or_else(|e| panic!("{alg}: {from}: {e}"));
                assert_same_key(&parsed, &key, from);
            }
            if let Some(secret) = key.secret_bytes() {
                assert_same_key(&hmac_from_secret(alg, secret).unwrap(), &key, "secret");
            }
        }
    }
}

#[test]
fn larger_rsa_keys_parse_back_with_their_size() {
    for size in [RsaKeySize::Bits3072, RsaKeySize::Bits4096] {
        let key = generate(Algorithm::PS384, Some(size)).unwrap();
        for (from, encoded) in surviving_encodings(&key) {
            let parsed = parse_private(Algorithm::PS384, encoded.as_bytes()).unwrap();
            assert_eq!(parsed.rsa_size(), Some(size), "{from}");
            assert_same_key(&parsed, &key, from);
        }
    }
}

#[test]
fn traditional_pkcs1_and_sec1_pems_from_openssl_are_read() {
    let rsa = rsa::PrivateKey::new(&mut SysRng, 2048).unwrap();
    let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let from_pkcs8 = parse_private(
        Algorithm::RS256,
        rsa.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    assert_same_key(
        &parse_private(Algorithm::RS256, pkcs1.as_bytes()).unwrap(),
        &from_pkcs8,
        "PKCS#1",
    );

    let p256 = SecretKey::<p256::NistP256>::try_generate_from_rng(&mut SysRng).unwrap();
    let p384 = SecretKey::<p384::NistP384>::try_generate_from_rng(&mut SysRng).unwrap();
    let cases = [
        (
            Algorithm::ES256,
            p256.to_sec1_pem(LineEnding::LF).unwrap(),
            p256.to_pkcs8_pem(LineEnding::LF).unwrap(),
        ),
        (
            Algorithm::ES384,
            p384.to_sec1_pem(LineEnding::LF).unwrap(),
            p384.to_pkcs8_pem(LineEnding::LF).unwrap(),
        ),
    ];
    for (alg, sec1, pkcs8) in cases {
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let canonical = parse_private(alg, pkcs8.as_bytes()).unwrap();
        assert_eq!(canonical.private_pem(), Some(pkcs8.as_str()));
        assert_same_key(
            &parse_private(alg, sec1.as_bytes()).unwrap(),
            &canonical,
            "SEC1",
        );
    }
}

#[test]
fn pkcs8_v2_ed25519_is_read_and_rendered_as_v1() {
    let key = generate(Algorithm::EdDSA, None).unwrap();
    let parsed = parse_private(Algorithm::EdDSA, key.private_jwk_json().as_bytes()).unwrap();
    let jwk: serde_json::Value = serde_json::from_str(key.private_jwk_json()).unwrap();
    let seed: [u8; 32] = Base64UrlUnpadded::decode_vec(jwk["d"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    // ed25519-dalek's own encoding: v2, with the public key embedded.
    let v2 = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
    assert_ne!(v2.as_str(), key.private_pem().unwrap());
    assert_same_key(
        &parse_private(Algorithm::EdDSA, v2.as_bytes()).unwrap(),
        &parsed,
        "PKCS#8 v2",
    );

    // A v2 document whose embedded public key is another key's is refused.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let forged = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: seed,
        public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
            other.verifying_key().to_bytes(),
        )),
    };
    let forged = forged.to_pkcs8_pem(LineEnding::LF).unwrap();
    assert!(matches!(
        parse_private(Algorithm::EdDSA, forged.as_bytes()),
        Err(KeyError::Malformed { .. })
    ));
}

#[test]
fn a_key_of_another_family_is_refused_in_every_encoding() {
    let keys: Vec<KeyMaterial> = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ]
    .into_iter()
    .map(|alg| generate(alg, None).unwrap())
    .collect();
    for alg in Algorithm::ALL {
        for key in keys
            .iter()
            .filter(|k| !alg.family().admits(k.alg().family()))
        {
            for (from, encoded) in surviving_encodings(key) {
                let err = parse_private(alg, encoded.as_bytes())
                    .map(|_| ())
                    .unwrap_err();
                match &err {
                    KeyError::WrongKeyType {
                        expected, found, ..
                    } => {
                        assert_eq!(*expected, alg.family().describe());
                        assert_eq!(found, key.alg().family().describe(), "{alg}: {from}");
                    }
                    other => panic!("{alg}: {from} of a {} key: {other}", key.alg()),
                }
            }
        }
    }
    // A raw secret is an HMAC key only.
    let err = hmac_from_secret(Algorithm::RS256, &[1; 64])
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err}");
}

#[test]
fn an_rsa_modulus_the_operator_does_not_use_is_refused_with_its_size() {
    let small = rsa::PrivateKey::new(&mut SysRng, 1024).unwrap();
    for pem in [
        small.to_pkcs8_pem(LineEnding::LF).unwrap(),
        small.to_pkcs1_pem(LineEnding::LF).unwrap(),
    ] {
        let err = parse_private(Algorithm::RS256, pem.as_bytes())
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, KeyError::RsaSize { bits: 1024, .. }), "{err}");
    }
}

#[test]
fn hmac_secrets_are_taken_byte_for_byte_and_must_be_long_enough() {
    let key = generate(Algorithm::HS256, None).unwrap();
    let mut with_newline = key.secret_bytes().unwrap().to_vec();
    with_newline.push(b'\n');
    let other = hmac_from_secret(Algorithm::HS256, &with_newline).unwrap();
    assert_ne!(
        other.kid(),
        key.kid(),
        "a trailing byte is part of the secret"
    );
    for (alg, min) in [
        (Algorithm::HS256, 32),
        (Algorithm::HS384, 48),
        (Algorithm::HS512, 64),
    ] {
        let err = hmac_from_secret(alg, &vec![1; min - 1])
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, KeyError::HmacTooShort { len, min: m, .. } if len == min - 1 && m == min),
            "{err}"
        );
        assert!(hmac_from_secret(alg, &vec![1; min]).is_ok());
    }
}

/// Replaces one member of a private JWK.
fn with_member(jwk: &str, name: &str, value: serde_json::Value) -> String {
    let mut object: serde_json::Value = serde_json::from_str(jwk).unwrap();
    object[name] = value;
    object.to_string()
}

#[test]
fn private_jwk_members_that_do_not_belong_to_the_key_are_refused() {
    let rsa = generate(Algorithm::RS256, None).unwrap();
    let rsa2 = generate(Algorithm::RS256, None).unwrap();
    let ec = generate(Algorithm::ES256, None).unwrap();
    let ec2 = generate(Algorithm::ES256, None).unwrap();
    let ed = generate(Algorithm::EdDSA, None).unwrap();
    let ed2 = generate(Algorithm::EdDSA, None).unwrap();
    let member = |k: &KeyMaterial, name: &str| {
        serde_json::from_str::<serde_json::Value>(k.private_jwk_json()).unwrap()[name].clone()
    };
    let cases = [
        (&ec, "x", member(&ec2, "x")),
        (&ec, "y", member(&ec2, "y")),
        (&ed, "x", member(&ed2, "x")),
        (&rsa, "dp", member(&rsa2, "dp")),
        (&rsa, "qi", member(&rsa2, "qi")),
    ];
    for (key, name, value) in cases {
        let jwk = with_member(key.private_jwk_json(), name, value);
        let err = parse_private(key.alg(), jwk.as_bytes())
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, KeyError::Inconsistent { member, .. } if member == name),
            "{name}: {err}"
        );
    }
    // Another key's modulus with this key's private members is no key at all.
    let jwk = with_member(rsa.private_jwk_json(), "n", member(&rsa2, "n"));
    assert!(parse_private(Algorithm::RS256, jwk.as_bytes()).is_err());
    // The JWK's own `alg`, when present, must be the one asked for.
    let err = parse_private(Algorithm::RS384, rsa.private_jwk_json().as_bytes())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a usable RS384 private key: the JWK is for RS256"
    );
}

#[test]
fn an_rsa_jwk_without_its_primes_is_read_by_recovering_them() {
    let key = generate(Algorithm::PS256, None).unwrap();
    let mut jwk: serde_json::Value = serde_json::from_str(key.private_jwk_json()).unwrap();
    for name in ["p", "q", "dp", "dq", "qi"] {
        jwk.as_object_mut().unwrap().remove(name);
    }
    let parsed = parse_private(Algorithm::PS256, jwk.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.kid(), key.kid());
    assert_eq!(parsed.public_pem(), key.public_pem());
}

#[test]
fn garbage_is_refused_with_an_error_that_quotes_none_of_it() {
    const MARK: &str = "SeCrEtMaRk";
    let key = generate(Algorithm::ES256, None).unwrap();
    let pem = key.private_pem().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let cut = &pem[..pem.len() / 2];
    let inputs: Vec<(Algorithm, Vec<u8>)> = vec![
        (Algorithm::ES256, MARK.as_bytes().to_vec()),
        (Algorithm::ES256, vec![0xff, 0xfe, 0x00, 0x80]),
        (Algorithm::ES256, cut.as_bytes().to_vec()),
        (
            Algorithm::ES256,
            format!("-----BEGIN PRIVATE KEY-----\n{MARK}{MARK}\n-----END PRIVATE KEY-----\n")
                .into_bytes(),
        ),
        (
            Algorithm::ES256,
            pem.replace("PRIVATE KEY", "SECRET THING").into_bytes(),
        ),
        (
            Algorithm::ES256,
            pem.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
                .into_bytes(),
        ),
        (
            Algorithm::ES256,
            key.public_pem().unwrap().as_bytes().to_vec(),
        ),
        (
            Algorithm::ES256,
            format!("{{\"kty\":\"EC\",\"crv\":\"P-256\",\"d\":\"{MARK}\"}}").into_bytes(),
        ),
        (
            Algorithm::ES256,
            format!("{{\"kty\":\"EC\",\"crv\":\"P-256\",\"d\":[\"{MARK}\"]}}").into_bytes(),
        ),
        (
            Algorithm::ES256,
            format!("{{\"kty\":\"EC\",\"crv\":\"P-256\",\"d\":\"{MARK}").into_bytes(),
        ),
        (
            Algorithm::ES256,
            format!("{{\"kty\":\"{MARK}\",\"d\":\"AAAA\"}}").into_bytes(),
        ),
        (
            Algorithm::ES256,
            format!("{{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"{MARK}\",\"d\":\"AAAA\"}}")
                .into_bytes(),
        ),
        (
            Algorithm::HS256,
            format!("{{\"kty\":\"oct\",\"k\":\"{MARK}!\"}}").into_bytes(),
        ),
        (
            Algorithm::HS256,
            format!("{{\"kty\":\"oct\",\"k\":{MARK}}}").into_bytes(),
        ),
        (Algorithm::HS256, pem.as_bytes().to_vec()),
    ];
    for (alg, input) in inputs {
        let shown = String::from_utf8_lossy(&input).into_owned();
        let err = parse_private(alg, &input)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(!err.contains(MARK), "{err} quotes its input {shown:?}");
        // No run of 8 characters of a key's base64 body appears in the message.
        let windows: Vec<&str> = (0..body.len().saturating_sub(8))
            .map(|i| &body[i..i + 8])
            .collect();
        assert!(
            !windows.iter().any(|w| err.contains(w)),
            "{err} quotes the key"
        );
    }
}

#[test]
fn kid_of_public_jwk_is_the_keys_kid_and_needs_the_members_of_its_kty() {
    for alg in Algorithm::ALL.into_iter().filter(|a| !a.is_symmetric()) {
        let key = generate(alg, None).unwrap();
        let jwk = key.public_jwk().unwrap().clone();
        assert_eq!(kid_of_public_jwk(&jwk).as_deref(), Some(key.kid()), "{alg}");
        assert!(jwk.matches_alg(), "{alg}");
        // The kid member plays no part: the thumbprint is recomputed.
        let renamed = PublicJwk {
            kid: "something else".into(),
            ..jwk.clone()
        };
        assert_eq!(kid_of_public_jwk(&renamed).as_deref(), Some(key.kid()));
        // A member of another kty, one of its own missing, or another kty or curve: no kid.
        let foreign = match alg.is_rsa() {
            true => PublicJwk {
                x: jwk.n.clone(),
                ..jwk.clone()
            },
            false => PublicJwk {
                e: Some("AQAB".into()),
                ..jwk.clone()
            },
        };
        let missing = match alg.is_rsa() {
            true => PublicJwk {
                e: None,
                ..jwk.clone()
            },
            false => PublicJwk {
                x: None,
                ..jwk.clone()
            },
        };
        let other_curve = PublicJwk {
            crv: Some("P-521".into()),
            ..jwk.clone()
        };
        let other_kty = PublicJwk {
            kty: "oct".into(),
            ..jwk.clone()
        };
        let broken = [foreign, missing, other_curve, other_kty];
        for (i, b) in broken.iter().enumerate() {
            assert_eq!(kid_of_public_jwk(b), None, "{alg}: broken #{i}");
        }
        // Another algorithm of another family does not match the key.
        let other = if alg.is_rsa() {
            Algorithm::ES256
        } else {
            Algorithm::RS256
        };
        assert!(
            !PublicJwk {
                alg: other.to_string(),
                ..jwk.clone()
            }
            .matches_alg(),
            "{alg}"
        );
        assert!(
            !PublicJwk {
                alg: "HS256".into(),
                ..jwk.clone()
            }
            .matches_alg()
        );
        assert!(
            !PublicJwk {
                alg: "none".into(),
                ..jwk.clone()
            }
            .matches_alg()
        );
    }
    // A coordinate of the wrong length for its curve, and a modulus with a leading zero byte.
    let ec = generate(Algorithm::ES384, None)
        .unwrap()
        .public_jwk()
        .unwrap()
        .clone();
    let p256_coordinate = generate(Algorithm::ES256, None)
        .unwrap()
        .public_jwk()
        .unwrap()
        .x
        .clone();
    assert_eq!(
        kid_of_public_jwk(&PublicJwk {
            x: p256_coordinate,
            ..ec.clone()
        }),
        None
    );
    assert!(
        !PublicJwk {
            crv: Some("P-256".into()),
            ..ec
        }
        .matches_alg()
    );
    let rsa = generate(Algorithm::RS256, None)
        .unwrap()
        .public_jwk()
        .unwrap()
        .clone();
    let n = Base64UrlUnpadded::decode_vec(rsa.n.as_deref().unwrap()).unwrap();
    let padded = Base64UrlUnpadded::encode_string(&[&[0u8][..], &n].concat());
    assert_eq!(
        kid_of_public_jwk(&PublicJwk {
            n: Some(padded),
            ..rsa
        }),
        None
    );
}
