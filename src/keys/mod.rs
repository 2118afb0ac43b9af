//! Key material: generation, encodings (PEM, JWK, JWKS) and RFC 7638 thumbprints.
//!
//! No I/O happens here. Every byte that could reveal a private key lives in a
//! `Zeroizing` buffer, and no type in this module prints secret bytes through `Debug`.

mod algorithm;
mod generate;
mod jwk;

pub use algorithm::{Algorithm, KeyFamily, RsaKeySize};
pub use generate::{KeyError, KeyMaterial, generate};
pub use jwk::{Jwks, PublicJwk, thumbprint};
