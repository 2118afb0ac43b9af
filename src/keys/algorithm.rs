use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A JWS signing algorithm (RFC 7518 §3, RFC 8037 for EdDSA).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

/// The kind of key an algorithm needs; two keys of one family and size are interchangeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// A symmetric key of at least this many bytes.
    Hmac(usize),
}

impl KeyFamily {
    /// How a message names a key of this family: "ES256 needs a P-256 EC key".
    pub fn describe(self) -> &'static str {
        match self {
            KeyFamily::Rsa => "an RSA",
            KeyFamily::P256 => "a P-256 EC",
            KeyFamily::P384 => "a P-384 EC",
            KeyFamily::Ed25519 => "an Ed25519",
            KeyFamily::Hmac(_) => "a symmetric (oct)",
        }
    }

    /// Whether a key of family `other` can serve an algorithm of this family; HMAC secrets of
    /// any length are one family here, their minimum length is checked on its own.
    pub(crate) fn admits(self, other: KeyFamily) -> bool {
        match (self, other) {
            (KeyFamily::Hmac(_), KeyFamily::Hmac(_)) => true,
            _ => self == other,
        }
    }
}

/// RSA modulus sizes the operator generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RsaKeySize {
    Bits2048,
    Bits3072,
    Bits4096,
}

impl RsaKeySize {
    pub const DEFAULT: RsaKeySize = RsaKeySize::Bits2048;

    pub fn bits(self) -> usize {
        match self {
            RsaKeySize::Bits2048 => 2048,
            RsaKeySize::Bits3072 => 3072,
            RsaKeySize::Bits4096 => 4096,
        }
    }

    pub fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            2048 => Some(RsaKeySize::Bits2048),
            3072 => Some(RsaKeySize::Bits3072),
            4096 => Some(RsaKeySize::Bits4096),
            _ => None,
        }
    }
}

impl Algorithm {
    pub const ALL: [Algorithm; 12] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];

    pub fn family(self) -> KeyFamily {
        use Algorithm::*;
        match self {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyFamily::Rsa,
            ES256 => KeyFamily::P256,
            ES384 => KeyFamily::P384,
            EdDSA => KeyFamily::Ed25519,
            // RFC 7518 §3.2: a key of the same size as the hash output, or larger.
            HS256 => KeyFamily::Hmac(32),
            HS384 => KeyFamily::Hmac(48),
            HS512 => KeyFamily::Hmac(64),
        }
    }

    pub fn is_rsa(self) -> bool {
        self.family() == KeyFamily::Rsa
    }

    /// Symmetric keys are never published: their JWK is the secret itself.
    pub fn is_symmetric(self) -> bool {
        matches!(self.family(), KeyFamily::Hmac(_))
    }

    pub fn as_str(self) -> &'static str {
        use Algorithm::*;
        match self {
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            EdDSA => "EdDSA",
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the twelve JWS algorithms the operator knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown JWS algorithm `{0}`")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// The RFC 7518 name, exactly as `Display` writes it (case-sensitive, as `alg` is).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}
