//! Key material: generation, encodings (PEM, JWK, JWKS), RFC 7638 thumbprints, and reading
//! key material back from any encoding it survives in.
//!
//! No I/O happens here. Every byte that could reveal a private key lives in a
//! `Zeroizing` buffer, and no type in this module prints secret bytes through `Debug`.

mod algorithm;
mod error;
mod generate;
mod jwk;
mod material;
mod parse;

pub use algorithm::{Algorithm, KeyFamily, RsaKeySize, UnknownAlgorithm};
pub use error::KeyError;
pub use generate::generate;
pub use jwk::{Jwks, PublicJwk, kid_of_public_jwk, thumbprint};
pub use material::KeyMaterial;
pub use parse::{hmac_from_secret, parse_private};
