//! A compact JWS (RFC 7515) read and its signature checked against a public JWK, with the
//! RustCrypto crates the operator already uses to make keys. Pure: no I/O, no clock.

use base64ct::{Base64UrlUnpadded, Encoding};
use rsa::signature::Verifier;

use crate::keys::{Algorithm, PublicJwk};

/// A token split into its parts; nothing in it is trusted until `verify` says so.
pub struct Token {
    pub alg: String,
    pub kid: Option<String>,
    /// The claims, as JSON (`exp`, `nbf`, ...).
    pub claims: serde_json::Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Token {
    /// `exp` and `nbf` as Unix seconds, when present and numeric.
    pub fn time_claim(&self, name: &str) -> Option<i64> {
        let value = self.claims.get(name)?;
        value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
    }
}

/// Splits and decodes `header.payload.signature`.
pub fn parse(token: &str) -> Result<Token, String> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(format!(
            "not a compact JWS: it has {} part(s) separated by '.', a signed JWT has 3",
            parts.len()
        ));
    };
    let json = |part: &str, what: &str| -> Result<serde_json::Value, String> {
        let bytes = Base64UrlUnpadded::decode_vec(part)
            .map_err(|_| format!("the {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the {what} is not JSON: {e}"))
    };
    let head = json(header, "header")?;
    let claims = json(payload, "payload")?;
    let alg = head["alg"]
        .as_str()
        .ok_or("the header has no \"alg\"")?
        .to_string();
    let signature = Base64UrlUnpadded::decode_vec(signature)
        .map_err(|_| "the signature is not base64url".to_string())?;
    Ok(Token {
        alg,
        kid: head["kid"].as_str().map(str::to_string),
        claims,
        signing_input: format!("{header}.{payload}"),
        signature,
    })
}

/// Whether the token's signature is the key's, for the algorithm the key is published for:
/// a header naming another algorithm than the JWK's `alg` is refused, never tried.
pub fn verify(token: &Token, jwk: &PublicJwk) -> Result<(), String> {
    if token.alg != jwk.alg {
        return Err(format!(
            "the token says alg {} but key {} is published for {}",
            token.alg, jwk.kid, jwk.alg
        ));
    }
    let alg: Algorithm = jwk
        .alg
        .parse()
        .map_err(|_| format!("unknown algorithm {}", jwk.alg))?;
    let (message, signature) = (token.signing_input.as_bytes(), &token.signature[..]);
    let checked = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
            rsa_pkcs1(alg, jwk, message, signature)
        }
        Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
            rsa_pss(alg, jwk, message, signature)
        }
        Algorithm::ES256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&ec_point(jwk)?)
                .map_err(|_| "the JWK is not a P-256 point")?;
            let sig = p256::ecdsa::Signature::from_slice(signature)
                .map_err(|_| "malformed ES256 signature")?;
            key.verify(message, &sig)
                .map_err(|_| "signature mismatch".to_string())
        }
        Algorithm::ES384 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&ec_point(jwk)?)
                .map_err(|_| "the JWK is not a P-384 point")?;
            let sig = p384::ecdsa::Signature::from_slice(signature)
                .map_err(|_| "malformed ES384 signature")?;
            key.verify(message, &sig)
                .map_err(|_| "signature mismatch".to_string())
        }
        Algorithm::EdDSA => ed25519(jwk, message, signature),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(
            "HMAC keys are never published: verify HS* tokens with the Secret's verify.jwks.json"
                .into(),
        ),
    };
    checked.map_err(|why| format!("the signature does not verify with key {}: {why}", jwk.kid))
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value
        .as_deref()
        .ok_or(format!("the JWK has no \"{name}\""))?;
    Base64UrlUnpadded::decode_vec(value)
        .map_err(|_| format!("the JWK's \"{name}\" is not base64url"))
}

/// The uncompressed SEC1 point 0x04 || x || y.
fn ec_point(jwk: &PublicJwk) -> Result<Vec<u8>, String> {
    let mut point = vec![4u8];
    point.extend(member(&jwk.x, "x")?);
    point.extend(member(&jwk.y, "y")?);
    Ok(point)
}

fn rsa_key(jwk: &PublicJwk) -> Result<rsa::PublicKey, String> {
    let n = rsa::BoxedUint::from_be_slice_vartime(&member(&jwk.n, "n")?);
    let e = rsa::BoxedUint::from_be_slice_vartime(&member(&jwk.e, "e")?);
    rsa::PublicKey::new(n, e).map_err(|e| format!("the JWK is not a usable RSA key: {e}"))
}

fn rsa_pkcs1(
    alg: Algorithm,
    jwk: &PublicJwk,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    let key = rsa_key(jwk)?;
    let sig = Signature::try_from(signature).map_err(|_| "malformed RSA signature")?;
    let verified = match alg {
        Algorithm::RS256 => VerifyingKey::<sha2::Sha256>::new(key).verify(message, &sig),
        Algorithm::RS384 => VerifyingKey::<sha2::Sha384>::new(key).verify(message, &sig),
        _ => VerifyingKey::<sha2::Sha512>::new(key).verify(message, &sig),
    };
    verified.map_err(|_| "signature mismatch".into())
}

fn rsa_pss(
    alg: Algorithm,
    jwk: &PublicJwk,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use rsa::pss::{Signature, VerifyingKey};
    let key = rsa_key(jwk)?;
    let sig = Signature::try_from(signature).map_err(|_| "malformed RSA-PSS signature")?;
    // RFC 7518 §3.5: the salt is as long as the hash.
    let verified = match alg {
        Algorithm::PS256 => VerifyingKey::<sha2::Sha256>::new(key).verify(message, &sig),
        Algorithm::PS384 => VerifyingKey::<sha2::Sha384>::new(key).verify(message, &sig),
        _ => VerifyingKey::<sha2::Sha512>::new(key).verify(message, &sig),
    };
    verified.map_err(|_| "signature mismatch".into())
}

fn ed25519(jwk: &PublicJwk, message: &[u8], signature: &[u8]) -> Result<(), String> {
    let x: [u8; 32] = member(&jwk.x, "x")?
        .try_into()
        .map_err(|_| "the JWK's \"x\" is not 32 bytes")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| "the JWK is not an Ed25519 point")?;
    let sig =
        ed25519_dalek::Signature::from_slice(signature).map_err(|_| "malformed EdDSA signature")?;
    key.verify_strict(message, &sig)
        .map_err(|_| "signature mismatch".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyMaterial, RsaKeySize, generate};

    /// A token signed by the independent `jsonwebtoken` crate with the key's private PEM.
    fn signed(key: &KeyMaterial) -> String {
        use jsonwebtoken::EncodingKey;
        let pem = key.private_pem().unwrap().as_bytes();
        let encoding = match key.alg() {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_rsa_pem(pem),
        }
        .unwrap();
        let mut header = jsonwebtoken::Header::new(key.alg().as_str().parse().unwrap());
        header.kid = Some(key.kid().to_string());
        let claims = serde_json::json!({"sub": "alice", "exp": 2_000_000_000u64});
        jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
    }

    #[test]
    fn tokens_signed_by_another_library_verify_with_every_published_algorithm() {
        use Algorithm::*;
        for alg in [
            RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
        ] {
            let key = generate(alg, alg.is_rsa().then_some(RsaKeySize::Bits2048)).unwrap();
            let token = parse(&signed(&key)).unwrap();
            assert_eq!(token.kid.as_deref(), Some(key.kid()));
            assert_eq!(token.time_claim("exp"), Some(2_000_000_000));
            assert_eq!(verify(&token, key.public_jwk().unwrap()), Ok(()), "{alg:?}");
        }
    }

    #[test]
    fn a_changed_payload_another_key_or_another_alg_does_not_verify() {
        let key = generate(Algorithm::ES256, None).unwrap();
        let other = generate(Algorithm::ES256, None).unwrap();
        let token = signed(&key);
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = Base64UrlUnpadded::encode_string(br#"{"sub":"mallory","exp":2000000000}"#);
        let tampered = parse(&parts.join(".")).unwrap();
        assert!(verify(&tampered, key.public_jwk().unwrap()).is_err());
        let genuine = parse(&token).unwrap();
        assert!(verify(&genuine, other.public_jwk().unwrap()).is_err());
        let mut es384 = key.public_jwk().unwrap().clone();
        es384.alg = "ES384".into();
        let refused = verify(&genuine, &es384).unwrap_err();
        assert!(refused.contains("published for ES384"), "{refused}");
    }

    #[test]
    fn what_is_not_a_jws_is_named() {
        assert!(parse("abc").err().unwrap().contains("1 part(s)"));
        assert!(parse("a.b.c").err().unwrap().contains("header"));
    }
}
