//! One key object in, every encoding the operator writes out. `generate` and `parse` both end
//! here, so a key generated, stored and read back renders to the same bytes.

use std::fmt;

use ed25519_dalek::pkcs8::KeypairBytes;
use elliptic_curve::SecretKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, RsaPrivateKeyRef};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use super::algorithm::{Algorithm, KeyFamily, RsaKeySize};
use super::error::KeyError;
use super::jwk::{PublicJwk, b64, thumbprint};

/// A private key as a crypto library holds it; each variant zeroizes itself when dropped.
pub(super) enum PrivateKey {
    Rsa(rsa::PrivateKey),
    P256(SecretKey<p256::NistP256>),
    P384(SecretKey<p384::NistP384>),
    Ed25519(ed25519_dalek::SigningKey),
    Hmac(Zeroizing<Vec<u8>>),
}

impl PrivateKey {
    fn family(&self) -> KeyFamily {
        match self {
            PrivateKey::Rsa(_) => KeyFamily::Rsa,
            PrivateKey::P256(_) => KeyFamily::P256,
            PrivateKey::P384(_) => KeyFamily::P384,
            PrivateKey::Ed25519(_) => KeyFamily::Ed25519,
            PrivateKey::Hmac(secret) => KeyFamily::Hmac(secret.len()),
        }
    }
}

/// One key pair (or symmetric key) with every encoding the operator writes.
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

    /// Renders every encoding of `key` for `alg`: the one place encodings are made.
    pub(super) fn from_key(alg: Algorithm, key: PrivateKey) -> Result<Self, KeyError> {
        let expected = alg.family();
        if !expected.admits(key.family()) {
            return Err(KeyError::WrongKeyType {
                alg,
                expected: expected.describe(),
                found: key.family().describe().to_string(),
            });
        }
        match key {
            PrivateKey::Rsa(key) => encode_rsa(alg, &key),
            PrivateKey::P256(key) => encode_ec(alg, "P-256", &key),
            PrivateKey::P384(key) => encode_ec(alg, "P-384", &key),
            PrivateKey::Ed25519(key) => encode_ed25519(alg, &key),
            PrivateKey::Hmac(secret) => encode_hmac(alg, secret),
        }
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

/// The private JWK: the key's own members, then `kid`, `alg` and `use`, in that order.
fn private_jwk_of(alg: Algorithm, kid: &str, members: &[(&str, &str)]) -> Zeroizing<String> {
    let tail = [("kid", kid), ("alg", alg.as_str()), ("use", "sig")];
    json_object(&[members, &tail].concat())
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

fn encode_rsa(alg: Algorithm, key: &rsa::PrivateKey) -> Result<KeyMaterial, KeyError> {
    let bits = key.n().bit_width_vartime() as usize;
    let size = u32::try_from(bits)
        .ok()
        .and_then(RsaKeySize::from_bits)
        .ok_or(KeyError::RsaSize { alg, bits })?;
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
    let private_jwk = private_jwk_of(
        alg,
        &kid,
        &[
            ("kty", "RSA"),
            ("n", &n),
            ("e", &e),
            ("d", &d),
            ("p", &p),
            ("q", &q),
            ("dp", &dp),
            ("dq", &dq),
            ("qi", &qi),
        ],
    );
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

fn encode_ec<C>(alg: Algorithm, crv: &str, secret: &SecretKey<C>) -> Result<KeyMaterial, KeyError>
where
    C: elliptic_curve::CurveArithmetic + elliptic_curve::point::PointCompression,
    C::FieldBytesSize: elliptic_curve::sec1::ModulusSize,
    C::AffinePoint: elliptic_curve::sec1::FromSec1Point<C> + elliptic_curve::sec1::ToSec1Point<C>,
    SecretKey<C>: EncodePrivateKey,
    elliptic_curve::PublicKey<C>: EncodePublicKey,
{
    use elliptic_curve::sec1::ToSec1Point;

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
    let members = [("kty", "EC"), ("crv", crv), ("x", &x), ("y", &y)];
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        public_jwk: Some(public_jwk(alg, "EC", &kid, &members[1..])),
        public_pem: Some(
            public
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| enc(&e))?,
        ),
        // The RustCrypto PKCS#8 is v1, with the public key inside the SEC1 structure where
        // RFC 5915 puts it; OpenSSL writes the same bytes.
        private_pem: Some(secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| enc(&e))?),
        private_jwk: private_jwk_of(alg, &kid, &[&members[..], &[("d", d.as_str())]].concat()),
        kid,
        secret: None,
    })
}

fn encode_ed25519(
    alg: Algorithm,
    signing: &ed25519_dalek::SigningKey,
) -> Result<KeyMaterial, KeyError> {
    let enc = encode_err(alg);
    let x = b64(signing.verifying_key().as_bytes());
    let kid = thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]);
    let seed = Zeroizing::new(signing.to_bytes());
    let d = Zeroizing::new(b64(seed.as_ref()));
    let members = [("kty", "OKP"), ("crv", "Ed25519"), ("x", &x)];
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        public_jwk: Some(public_jwk(alg, "OKP", &kid, &members[1..])),
        public_pem: Some(
            signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| enc(&e))?,
        ),
        private_pem: Some(ed25519_pkcs8_v1_pem(signing).map_err(|e| enc(&e))?),
        private_jwk: private_jwk_of(alg, &kid, &[&members[..], &[("d", d.as_str())]].concat()),
        kid,
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
    let bytes = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    };
    bytes.to_pkcs8_pem(LineEnding::LF)
}

fn encode_hmac(alg: Algorithm, secret: Zeroizing<Vec<u8>>) -> Result<KeyMaterial, KeyError> {
    // RFC 7518 §3.2: a key at least as long as the hash output, and never under 256 bits.
    let min = match alg.family() {
        KeyFamily::Hmac(min) => min.max(32),
        _ => 32,
    };
    if secret.len() < min {
        return Err(KeyError::HmacTooShort {
            alg,
            len: secret.len(),
            min,
        });
    }
    let k = Zeroizing::new(b64(&secret));
    // For an `oct` key the thumbprint hashes the secret. SHA-256 of >= 256 random bits reveals
    // nothing a token's own HMAC tag does not already let an attacker test offline.
    let kid = thumbprint(&[("k", &k), ("kty", "oct")]);
    Ok(KeyMaterial {
        alg,
        rsa_size: None,
        private_jwk: private_jwk_of(alg, &kid, &[("kty", "oct"), ("k", &k)]),
        kid,
        public_jwk: None,
        public_pem: None,
        private_pem: None,
        secret: Some(secret),
    })
}
