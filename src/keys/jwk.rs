use base64ct::{Base64UrlUnpadded, Encoding};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::algorithm::{Algorithm, KeyFamily};

/// A public JWK (RFC 7517) as published to verifiers.
///
/// Field order is fixed by this struct, so the same key always serializes to the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
}

impl PublicJwk {
    /// The algorithm the JWK's `alg` names, if it is one the operator knows.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg.parse().ok()
    }

    /// Whether `kty` and `crv` are those of the key family `alg` needs: `RSA` for RS*/PS*,
    /// `EC` on P-256 for ES256 and P-384 for ES384, `OKP` on Ed25519 for EdDSA. Never true for
    /// HMAC, whose key is never published, nor for an `alg` the operator does not know.
    pub fn matches_alg(&self) -> bool {
        self.algorithm()
            .is_some_and(|alg| self.family() == Some(alg.family()))
    }

    /// The key family `kty` and `crv` name, for the families the operator publishes.
    fn family(&self) -> Option<KeyFamily> {
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", None) => Some(KeyFamily::Rsa),
            ("EC", Some("P-256")) => Some(KeyFamily::P256),
            ("EC", Some("P-384")) => Some(KeyFamily::P384),
            ("OKP", Some("Ed25519")) => Some(KeyFamily::Ed25519),
            _ => None,
        }
    }
}

/// The RFC 7638 thumbprint of a public JWK, recomputed from its own members (its `kid` plays no
/// part). `None` unless the JWK is a well-formed key of a family the operator publishes: the
/// members its `kty` requires, base64url and of the curve's length (a minimal modulus and
/// exponent for RSA), and none of another `kty`'s.
pub fn kid_of_public_jwk(jwk: &PublicJwk) -> Option<String> {
    /// The member, if it is base64url of `len` bytes (a curve coordinate), or of a minimal
    /// big-endian integer when `len` is None (RFC 7518 §6.3.1).
    fn b64(value: &Option<String>, len: Option<usize>) -> Option<&str> {
        let value = value.as_deref()?;
        let bytes = Base64UrlUnpadded::decode_vec(value).ok()?;
        let well_formed = match len {
            Some(len) => bytes.len() == len,
            None => bytes.first().is_some_and(|top| *top != 0),
        };
        well_formed.then_some(value)
    }
    let absent = |members: &[&Option<String>]| members.iter().all(|m| m.is_none());
    let (x, y, n, e) = (&jwk.x, &jwk.y, &jwk.n, &jwk.e);
    let kty = jwk.kty.as_str();
    match jwk.family()? {
        KeyFamily::Rsa if absent(&[x, y]) => Some(thumbprint(&[
            ("e", b64(e, None)?),
            ("kty", kty),
            ("n", b64(n, None)?),
        ])),
        family @ (KeyFamily::P256 | KeyFamily::P384) if absent(&[n, e]) => {
            let len = if family == KeyFamily::P256 { 32 } else { 48 };
            Some(thumbprint(&[
                ("crv", jwk.crv.as_deref()?),
                ("kty", kty),
                ("x", b64(x, Some(len))?),
                ("y", b64(y, Some(len))?),
            ]))
        }
        KeyFamily::Ed25519 if absent(&[y, n, e]) => Some(thumbprint(&[
            ("crv", jwk.crv.as_deref()?),
            ("kty", kty),
            ("x", b64(x, Some(32))?),
        ])),
        _ => None,
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<PublicJwk>,
}

impl Jwks {
    /// Compact JSON; identical input gives identical bytes.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// RFC 7638 thumbprint: base64url(SHA-256(the required members, in lexicographic order,
/// without white space)). `members` are (name, value) pairs; they are sorted here.
pub fn thumbprint(members: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut canonical = String::from("{");
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        // Member values here are base64url strings or fixed names: no JSON escaping is needed,
        // but serde_json quoting keeps this correct for any input.
        canonical.push_str(&serde_json::Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&serde_json::Value::from(*value).to_string());
    }
    canonical.push('}');
    let digest = Sha256::digest(canonical.as_bytes());
    // Zeroize the canonical form: for an `oct` key it contains the secret.
    zeroize::Zeroize::zeroize(&mut canonical);
    Base64UrlUnpadded::encode_string(&digest)
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 7638 §3.1.
    #[test]
    fn rfc7638_example_thumbprint() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let tp = thumbprint(&[("n", n), ("e", "AQAB"), ("kty", "RSA")]);
        assert_eq!(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn jwks_serializes_deterministically_and_round_trips() {
        let jwk = PublicJwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
            y: None,
            n: None,
            e: None,
            kid: "k".into(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
        };
        let jwks = Jwks { keys: vec![jwk] };
        let json = jwks.to_json();
        assert_eq!(
            json,
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k","alg":"EdDSA","use":"sig"}]}"#
        );
        let back: Jwks = serde_json::from_str(&json).unwrap();
        assert_eq!(back, jwks);
    }
}
