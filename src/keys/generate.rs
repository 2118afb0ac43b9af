use std::fmt;

use getrandom::SysRng;
use rsa::pkcs1::{EncodeRsaPrivateKey, RsaPrivateKeyRef};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use zeroize::Zeroizing;

use super::algorithm::{Algorithm, KeyFamily, RsaKeySize};
use super::jwk::{PublicJwk, b64, thumbprint};

/// Why a key could not be made. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{alg} key generation failed: {reason}")]
    Generate { alg: Algorithm, reason: String },
    #[error("{alg} key encoding failed: {reason}")]
    Encode { alg: Algorithm, reason: String },
}

/// One freshly generated key pair (or symmetric key) with every encoding the operator writes.
pub struct KeyMaterial {
    alg: Algorithm,
    rsa_size: Option<RsaKeySize>,
    kid: String,
    public_jwk: Option<PublicJwk>,
    public_pem: Option<String>,
    private_pem: Option<Zeroizing<String>>,
    private_jwk: Zeroizing<String>,
    secret: Option<Zeroizing<Vec<u8>>>,
}

impl KeyMaterial {
    pub fn alg(&self) -> Algorithm {
        self.alg
    }
    /// The RSA modulus size, for RSA keys.
    pub fn rsa_size(&self) -> Option<RsaKeySize> {
        self.rsa_size
    }
    /// The RFC 7638 thumbprint of the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }
    /// The public JWK with `kid`, `alg`, `use: sig`; `None` for symmetric keys.
    pub fn public_jwk(&self) -> Option<&PublicJwk> {
        self.public_jwk.as_ref()
    }
    /// SPKI PEM of the public key; `None` for symmetric keys.
    pub fn public_pem(&self) -> Option<&str> {
        self.public_pem.as_deref()
    }
    /// PKCS#8 v1 PEM of the private key (RFC 5208; RFC 8410 §7 for Ed25519); `None` for
    /// symmetric keys.
    pub fn private_pem(&self) -> Option<&str> {
        self.private_pem.as_ref().map(|s| s.as_str())
    }
    /// The private JWK (for HMAC the `oct` JWK) as compact JSON, with `kid` and `alg`.
    pub fn private_jwk_json(&self) -> &str {
        &self.private_jwk
    }
    /// The raw symmetric key, for HMAC algorithms.
    pub fn secret_bytes(&self) -> Option<&[u8]> {
        self.secret.as_ref().map(|s| s.as_slice())
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately omits every private field.
        f.debug_struct("KeyMaterial")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Generates a new key for `alg` from the operating system's RNG.
/// `rsa_size` is used for RSA algorithms only (default 2048 bits).
pub fn generate(alg: Algorithm, rsa_size: Option<RsaKeySize>) -> Result<KeyMaterial, KeyError> {
    match alg.family() {
        KeyFamily::Rsa => generate_rsa(alg, rsa_size.unwrap_or(RsaKeySize::DEFAULT)),
        KeyFamily::P256 => generate_ec::<p256::NistP256>(alg, "P-256"),
        KeyFamily::P384 => generate_ec::<p384::NistP384>(alg, "P-384"),
        KeyFamily::Ed25519 => generate_ed25519(alg),
        KeyFamily::Hmac(len) => generate_hmac(alg, len),
    }
}

fn encode_err(alg: Algorithm) -> impl Fn(&dyn fmt::Display) -> KeyError {
    move |e| KeyError::Encode {
        alg,
        reason: e.to_string(),
    }
}

/// Builds compact JSON from members whose values need no escaping (base64url and fixed names),
/// straight into a zeroizing buffer so no copy of a private member outlives this call.
fn json_object(members: &[(&str, &str)]) -> Zeroizing<String> {
    let capacity = members
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum::<usize>()
        + 2;
    let mut out = Zeroizing::new(String::with_capacity(capacity));
    out.push('{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":\"");
        out.push_str(value);
        out.push('"');
    }
    out.push('}');
    out
}

fn public_jwk(alg: Algorithm, kty: &str, kid: &str, members: &[(&str, &str)]) -> PublicJwk {
    let get = |name: &str| {
        members
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    PublicJwk {
        kty: kty.to_string(),
        crv: get("crv"),
        x: get("x"),
        y: get("y"),
        n: get("n"),
        e: get("e"),
        kid: kid.to_string(),
        alg: alg.as_str().to_string(),
        key_use: "sig".to_string(),
    }
}

fn generate_rsa(alg: Algorithm, size: RsaKeySize) -> Result<KeyMaterial, KeyError> {
    let key = rsa::PrivateKey::new(&mut SysRng, size.bits()).map_err(|e| KeyError::Generate {
        alg,
        reason: e.to_string(),
    })?;
    let enc = encode_err(alg);
    let private_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| enc(&e))?;
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| enc(&e))?;
    // PKCS#1 carries every CRT parameter a private JWK needs (RFC 7518 §6.3.2).
    let der = key.to_pkcs1_der().map_err(|e| enc(&e))?;
    let parts = RsaPrivateKeyRef::try_from(der.as_bytes()).map_err(|e| enc(&e))?;
    let n = b64(parts.modulus.as_bytes());
    let e = b64(parts.public_exponent.as_bytes());
    let kid = thumbprint(&[("e", &e), ("kty", "RSA"), ("n", &n)]);
    let d = Zeroizing::new(b64(parts.private_exponent.as_bytes()));
    let p = Zeroizing::new(b64(parts.prime1.as_bytes()));
    let q = Zeroizing::new(b64(parts.prime2.as_bytes()));
    let dp = Zeroizing::new(b64(parts.exponent1.as_bytes()));
    let dq = Zeroizing::new(b64(parts.exponent2.as_bytes()));
    let qi = Zeroizing::new(b64(parts.coefficient.as_bytes()));
    let private_jwk = json_object(&[
        ("kty", "RSA"),
        ("n", &n),
        ("e", &e),
        ("d", &d),
        ("p", &p),
        ("q", &q),
        ("dp", &dp),
        ("dq", &dq),
        ("qi", &qi),
        ("kid", &kid),
        ("alg", alg.as_str()),
        ("use", "sig"),
    ]);
    Ok(KeyMaterial {
        alg,
        rsa_size: Some(size),
        public_jwk: Some(public_jwk(alg, "RSA", &kid, &[("n", &n), ("e", &e)])),
        kid,
        public_pem: Some(public_pem),
        private_pem: Some(private_pem),
        private_jwk,
        secret: None,
    })
}

fn generate_ec<C>(alg: Algorithm, crv: &str) -> Result<KeyMaterial, KeyError>
where
    C: elliptic_curve::CurveArithmetic + elliptic_curve::point::PointCompression,
    C::FieldBytesSize: elliptic_curve::sec1::ModulusSize,
    C::AffinePoint: elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    elliptic_curve::SecretKey<C>: EncodePrivateKey,
    elliptic_curve::PublicKey<C>: EncodePublicKey,
{
    use elliptic_curve::Generate;
    use elliptic_curve::sec1::ToSec1Point;

    let secret = elliptic_curve::SecretKey::<C>::try_generate_from_rng(&mut SysRng)
        .map_err(KeyError::Random)?;
    let public = secret.public_key();
    let enc = encode_err(alg);
    let point = public.to_sec1_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(KeyError::Encode {
            alg,
            reason: "public key is the point at infinity".into(),
        });
    };
    let x = b64(x);
    let y = b64(y);
    let kid = thumbprint(&[("crv", crv), ("kty", "EC"), ("x", &x), ("y", &y)]);
    let scalar = Zeroizing::new(secret.to_bytes());
    let d = Zeroizing::new(b64(&scalar));
    let private_jwk = json_object(&[
        ("kty", "EC"),
        ("crv", crv),
        ("x", &x),
        ("y", &y),
        ("d", &d),
        ("kid", &kid),
        ("alg", alg.as_str()),
        ("use", "sig"),
    ]);
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        public_jwk: Some(public_jwk(
            alg,
            "EC",
            &kid,
            &[("crv", crv), ("x", &x), ("y", &y)],
        )),
        public_pem: Some(
            public
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| enc(&e))?,
        ),
        private_pem: Some(secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| enc(&e))?),
        kid,
        private_jwk,
        secret: None,
    })
}

fn generate_ed25519(alg: Algorithm) -> Result<KeyMaterial, KeyError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(KeyError::Random)?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let enc = encode_err(alg);
    let x = b64(signing.verifying_key().as_bytes());
    let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]);
    let d = Zeroizing::new(b64(seed.as_ref()));
    let private_jwk = json_object(&[
        ("kty", "OKP"),
        ("crv", "Ed25519"),
        ("x", &x),
        ("d", &d),
        ("kid", &kid),
        ("alg", alg.as_str()),
        ("use", "sig"),
    ]);
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        public_jwk: Some(public_jwk(
            alg,
            "OKP",
            &kid,
            &[("crv", "Ed25519"), ("x", &x)],
        )),
        public_pem: Some(
            signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| enc(&e))?,
        ),
        private_pem: Some(ed25519_pkcs8_v1_pem(&signing).map_err(|e| enc(&e))?),
        kid,
        private_jwk,
        secret: None,
    })
}

/// PKCS#8 v1 without the public key, as RFC 8410 §7 shows it. ed25519-dalek's own
/// `to_pkcs8_pem` writes v2 with the public key embedded, which OpenSSL 3.0, Node 20 and
/// Python's `cryptography` refuse to load.
fn ed25519_pkcs8_v1_pem(
    signing: &ed25519_dalek::SigningKey,
) -> ed25519_dalek::pkcs8::Result<Zeroizing<String>> {
    // KeypairBytes zeroizes its secret half when dropped.
    let bytes = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    };
    bytes.to_pkcs8_pem(LineEnding::LF)
}

fn generate_hmac(alg: Algorithm, len: usize) -> Result<KeyMaterial, KeyError> {
    // Never fewer than 256 bits, and at least the hash size (RFC 7518 §3.2).
    let mut secret = Zeroizing::new(vec![0u8; len.max(32)]);
    getrandom::fill(secret.as_mut_slice()).map_err(KeyError::Random)?;
    let k = Zeroizing::new(b64(&secret));
    // For an `oct` key the thumbprint hashes the secret. SHA-256 of >= 256 random bits reveals
    // nothing a token's own HMAC tag does not already let an attacker test offline.
    let kid = thumbprint(&[("k", &k), ("kty", "oct")]);
    let private_jwk = json_object(&[
        ("kty", "oct"),
        ("k", &k),
        ("kid", &kid),
        ("alg", alg.as_str()),
        ("use", "sig"),
    ]);
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        kid,
        public_jwk: None,
        public_pem: None,
        private_pem: None,
        private_jwk,
        secret: Some(secret),
    })
}
