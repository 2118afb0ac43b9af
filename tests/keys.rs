//! Key material checked by independent implementations: every generated key signs a JWT that
//! the `jsonwebtoken` crate verifies with the published public JWK, and that crate computes the
//! same RFC 7638 thumbprint as our `kid`.

#[path = "interop/jwt.rs"]
mod jwt;

use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::{DecodingKey, Header, decode, encode};
use jwt::{Claims, jwt_alg, signing_key, validation, verifier_jwk};
use jwt_key_rotator::keys::{Algorithm, KeyMaterial, RsaKeySize, generate};

fn sign_and_verify(key: &KeyMaterial) {
    let alg = jwt_alg(key.alg());
    let claims = Claims {
        sub: "alice".into(),
        exp: 4_000_000_000,
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.kid().to_string());
    let token = encode(&header, &claims, &signing_key(key)).unwrap();

    let jwk = verifier_jwk(key);
    assert_eq!(jwk.common.key_id.as_deref(), Some(key.kid()));
    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    let validation = validation(key.alg());
    let verified = decode::<Claims>(&token, &decoding, &validation)
        .unwrap_or_else(|e| panic!("{}: token did not verify: {e}", key.alg()));
    assert_eq!(verified.claims, claims);

    // A token signed by another key of the same algorithm must not verify with this JWK.
    let other = generate(key.alg(), key.rsa_size()).unwrap();
    let forged = encode(&header, &claims, &signing_key(&other)).unwrap();
    assert!(decode::<Claims>(&forged, &decoding, &validation).is_err());

    // kid is the RFC 7638 thumbprint, as computed by an independent implementation.
    assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), key.kid());
}

#[test]
fn every_algorithm_signs_a_jwt_that_jsonwebtoken_verifies_with_the_published_jwk() {
    for alg in Algorithm::ALL {
        let key = generate(alg, None).unwrap();
        sign_and_verify(&key);
    }
}

#[test]
fn rsa_key_sizes_are_honoured() {
    for size in [
        RsaKeySize::Bits2048,
        RsaKeySize::Bits3072,
        RsaKeySize::Bits4096,
    ] {
        let key = generate(Algorithm::RS256, Some(size)).unwrap();
        let n = key.public_jwk().unwrap().n.clone().unwrap();
        let bytes = base64_len(&n);
        assert_eq!(bytes * 8, size.bits(), "modulus length for {size:?}");
        sign_and_verify(&key);
    }
}

fn base64_len(b64url: &str) -> usize {
    b64url.len() * 3 / 4
}

#[test]
fn hmac_keys_have_at_least_the_hash_size_and_never_fewer_than_256_bits() {
    for (alg, bytes) in [
        (Algorithm::HS256, 32),
        (Algorithm::HS384, 48),
        (Algorithm::HS512, 64),
    ] {
        let key = generate(alg, None).unwrap();
        assert_eq!(key.secret_bytes().unwrap().len(), bytes, "{alg}");
        assert!(key.public_jwk().is_none(), "{alg} must have no public JWK");
        assert!(key.private_pem().is_none());
    }
}

#[test]
fn pem_encodings_round_trip_to_the_same_public_key() {
    for alg in Algorithm::ALL.into_iter().filter(|a| !a.is_symmetric()) {
        let key = generate(alg, None).unwrap();
        let public_pem = key.public_pem().unwrap();
        assert!(
            public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{alg}: SPKI PEM"
        );
        assert!(
            key.private_pem()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{alg}: PKCS#8 PEM"
        );
        // jsonwebtoken reads the SPKI PEM; a token signed with the PKCS#8 PEM verifies with it.
        let decoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(public_pem.as_bytes()),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(public_pem.as_bytes()),
            _ => DecodingKey::from_rsa_pem(public_pem.as_bytes()),
        }
        .unwrap();
        let claims = Claims {
            sub: "bob".into(),
            exp: 4_000_000_000,
        };
        let token = encode(&Header::new(jwt_alg(alg)), &claims, &signing_key(&key)).unwrap();
        assert_eq!(
            decode::<Claims>(&token, &decoding, &validation(alg))
                .unwrap()
                .claims,
            claims
        );
    }
}

#[test]
fn private_jwk_carries_kid_alg_and_the_private_members() {
    for alg in Algorithm::ALL {
        let key = generate(alg, None).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(key.private_jwk_json()).unwrap();
        assert_eq!(jwk["kid"], key.kid(), "{alg}");
        assert_eq!(jwk["alg"], alg.as_str(), "{alg}");
        let private_member = if alg.is_symmetric() { "k" } else { "d" };
        assert!(
            jwk[private_member].is_string(),
            "{alg}: private JWK lacks {private_member}"
        );
        if let Some(public) = key.public_jwk() {
            let public = serde_json::to_value(public).unwrap();
            assert!(
                public.get("d").is_none() && public.get("k").is_none(),
                "{alg}: public JWK leaks"
            );
            for member in ["n", "e", "x", "y", "crv", "kty"] {
                if let Some(value) = public.get(member) {
                    assert_eq!(&jwk[member], value, "{alg}: {member} differs between JWKs");
                }
            }
        }
    }
}

#[test]
fn debug_output_never_contains_key_material() {
    for alg in Algorithm::ALL {
        let key = generate(alg, None).unwrap();
        let debug = format!("{key:?}");
        let jwk: serde_json::Value = serde_json::from_str(key.private_jwk_json()).unwrap();
        let private = jwk
            .get("d")
            .or_else(|| jwk.get("k"))
            .unwrap()
            .as_str()
            .unwrap();
        assert!(
            !debug.contains(private),
            "{alg}: Debug printed the private key"
        );
        assert!(!debug.contains("PRIVATE KEY"), "{alg}: Debug printed a PEM");
        assert!(debug.contains(key.kid()));
    }
}

#[test]
fn kids_are_unique_across_generations() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        assert!(seen.insert(generate(Algorithm::ES256, None).unwrap().kid().to_string()));
    }
}

/// RFC 8410 §7 and RFC 5208: OneAsymmetricKey version 0 (v1), no embedded public key. OpenSSL
/// 3.0, Node 20 and Python's `cryptography` refuse an Ed25519 v2 key with the public key in it.
#[test]
fn private_pem_is_pkcs8_v1_without_an_embedded_public_key() {
    use rsa::pkcs8::der::{Decode, SecretDocument};
    use rsa::pkcs8::{PrivateKeyInfoRef, Version};
    for alg in Algorithm::ALL.into_iter().filter(|a| !a.is_symmetric()) {
        let key = generate(alg, None).unwrap();
        let (label, der) = SecretDocument::from_pem(key.private_pem().unwrap()).unwrap();
        assert_eq!(label, "PRIVATE KEY", "{alg}");
        let info = PrivateKeyInfoRef::from_der(der.as_bytes()).unwrap();
        assert_eq!(info.version(), Version::V1, "{alg}: PKCS#8 version");
        assert!(info.public_key.is_none(), "{alg}: embedded public key");
    }
}
