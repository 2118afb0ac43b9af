use elliptic_curve::Generate;
use getrandom::SysRng;
use zeroize::Zeroizing;

use super::algorithm::{Algorithm, KeyFamily, RsaKeySize};
use super::error::KeyError;
use super::material::{KeyMaterial, PrivateKey};

/// Generates a new key for `alg` from the operating system's RNG.
/// `rsa_size` is used for RSA algorithms only (default 2048 bits).
pub fn generate(alg: Algorithm, rsa_size: Option<RsaKeySize>) -> Result<KeyMaterial, KeyError> {
    let key = match alg.family() {
        KeyFamily::Rsa => {
            let bits = rsa_size.unwrap_or(RsaKeySize::DEFAULT).bits();
            let key = rsa::PrivateKey::new(&mut SysRng, bits).map_err(|e| KeyError::Generate {
                alg,
                reason: e.to_string(),
            })?;
            PrivateKey::Rsa(key)
        }
        KeyFamily::P256 => PrivateKey::P256(
            elliptic_curve::SecretKey::try_generate_from_rng(&mut SysRng)
                .map_err(KeyError::Random)?,
        ),
        KeyFamily::P384 => PrivateKey::P384(
            elliptic_curve::SecretKey::try_generate_from_rng(&mut SysRng)
                .map_err(KeyError::Random)?,
        ),
        KeyFamily::Ed25519 => {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut()).map_err(KeyError::Random)?;
            PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        KeyFamily::Hmac(len) => {
            // Never fewer than 256 bits, and at least the hash size (RFC 7518 §3.2).
            let mut secret = Zeroizing::new(vec![0u8; len.max(32)]);
            getrandom::fill(secret.as_mut_slice()).map_err(KeyError::Random)?;
            PrivateKey::Hmac(secret)
        }
    };
    KeyMaterial::from_key(alg, key)
}
