//! What a signing workload and a verifier do with the operator's files, through the
//! `jsonwebtoken` crate; shared by tests/keys.rs and tests/interop.rs (`#[path]` module).

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Validation};
use jwt_key_rotator::keys::{Algorithm, KeyMaterial};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
}

/// Our algorithm as `jsonwebtoken` names it: both use the RFC 7518 names.
pub fn jwt_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    alg.as_str().parse().unwrap()
}

/// Checks the signature, the algorithm and `exp`; the tests' tokens carry no audience.
pub fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(jwt_alg(alg));
    validation.validate_aud = false;
    validation
}

/// The key a signer loads from the Secret: `private.pem`, or `secret` for HMAC.
pub fn signing_key(key: &KeyMaterial) -> EncodingKey {
    use Algorithm::*;
    match key.alg() {
        HS256 | HS384 | HS512 => EncodingKey::from_secret(key.secret_bytes().unwrap()),
        alg => {
            let pem = key.private_pem().unwrap().as_bytes();
            match alg {
                ES256 | ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
                EdDSA => EncodingKey::from_ed_pem(pem).unwrap(),
                _ => EncodingKey::from_rsa_pem(pem).unwrap(),
            }
        }
    }
}

/// The JWK a verifier is handed, as JSON: the public JWK, or for HMAC the `oct` JWK in the
/// Secret.
pub fn verifier_jwk_json(key: &KeyMaterial) -> String {
    match key.public_jwk() {
        Some(public) => serde_json::to_string(public).unwrap(),
        None => key.private_jwk_json().to_string(),
    }
}

pub fn verifier_jwk(key: &KeyMaterial) -> Jwk {
    serde_json::from_str(&verifier_jwk_json(key)).unwrap()
}
