//! Key material: generation, encodings (PEM, JWK, JWKS) and RFC 7638 thumbprints.
//!
//! No I/O happens here. Every byte that could reveal a private key lives in a
//! `Zeroizing` buffer, and no type in this module prints secret bytes through `Debug`.

mod algorithm;
mod error;
mod generate;
mod jwk;
mod material;

pub use algorithm::{Algorithm, KeyFamily, RsaKeySize};
pub use error::KeyError;
pub use generate::generate;
pub use jwk::{Jwks, PublicJwk, thumbprint};
pub use material::KeyMaterial;
