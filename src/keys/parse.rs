//! Key material read back from whatever survives in a Secret, whatever its encoding: a PEM
//! (PKCS#8 v1 or v2, PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`) or a private JWK, and for
//! HMAC an `oct` JWK or the raw secret. The key found is rendered again by the code that
//! renders a generated key, so its `kid` and every file it yields are the canonical ones.
//!
//! Errors never quote the input: they name a member, a size or a key type in our own words.

use base64ct::{Base64UrlUnpadded, Encoding};
use elliptic_curve::SecretKey;
use rsa::BoxedUint;
use rsa::pkcs1::{DecodeRsaPrivateKey, RsaPrivateKeyRef};
use rsa::pkcs8::der::{Decode, SecretDocument};
use rsa::pkcs8::{ObjectIdentifier, PrivateKeyInfoRef};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use super::algorithm::{Algorithm, KeyFamily, RsaKeySize};
use super::error::KeyError;
use super::material::{KeyMaterial, PrivateKey};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Named curves and key types we recognise only to say what a foreign key is.
const OTHER_KEY_TYPES: [(&str, &str); 5] = [
    ("1.3.132.0.35", "a P-521 EC"),
    ("1.3.132.0.10", "a secp256k1 EC"),
    ("1.3.101.113", "an Ed448"),
    ("1.3.101.110", "an X25519"),
    ("1.3.101.111", "an X448"),
];

/// Reads the private key for `alg` from a PEM (PKCS#8 v1 or v2, PKCS#1, SEC1) or a private JWK;
/// for HMAC from its `oct` JWK (the raw secret goes to [`hmac_from_secret`]). Whitespace around
/// the text (the newline `echo | base64` leaves) is ignored. A key of another family than
/// `alg` needs, or an RSA modulus the operator does not use, is an error.
pub fn parse_private(alg: Algorithm, encoded: &[u8]) -> Result<KeyMaterial, KeyError> {
    let text = std::str::from_utf8(encoded)
        .map_err(|_| KeyError::malformed(alg, "not text: neither a PEM nor a JWK"))?
        .trim();
    if text.starts_with('{') {
        from_jwk(alg, text)
    } else if text.starts_with("-----BEGIN ") {
        KeyMaterial::from_key(alg, from_pem(alg, text)?)
    } else {
        Err(KeyError::malformed(
            alg,
            "neither a PEM private key nor a private JWK",
        ))
    }
}

/// The HMAC key whose raw bytes are `secret`, exactly as given: a trailing newline may be part
/// of a random secret, so none is trimmed here.
pub fn hmac_from_secret(alg: Algorithm, secret: &[u8]) -> Result<KeyMaterial, KeyError> {
    KeyMaterial::from_key(alg, PrivateKey::Hmac(Zeroizing::new(secret.to_vec())))
}

fn wrong_type(alg: Algorithm, found: &str) -> KeyError {
    KeyError::WrongKeyType {
        alg,
        expected: alg.family().describe(),
        found: found.to_string(),
    }
}

/// Refuses, before any key is built, a key of another family than `alg` needs.
fn expect_family(alg: Algorithm, found: KeyFamily) -> Result<(), KeyError> {
    match alg.family().admits(found) {
        true => Ok(()),
        false => Err(wrong_type(alg, found.describe())),
    }
}

/// The family of a named curve; a curve we do not use is refused by name.
fn curve_family(alg: Algorithm, curve: Option<ObjectIdentifier>) -> Result<KeyFamily, KeyError> {
    match curve.map(|oid| oid.to_string()).as_deref() {
        Some("1.2.840.10045.3.1.7") => Ok(KeyFamily::P256),
        Some("1.3.132.0.34") => Ok(KeyFamily::P384),
        Some(oid) => Err(wrong_type(alg, other_key_type(oid))),
        None => Err(KeyError::malformed(alg, "an EC key that names no curve")),
    }
}

fn other_key_type(oid: &str) -> &'static str {
    OTHER_KEY_TYPES
        .iter()
        .find(|(known, _)| *known == oid)
        .map_or("an unsupported kind of", |(_, name)| name)
}

/// Refuses an RSA modulus the operator does not use, from its big-endian bytes.
fn expect_rsa_size(alg: Algorithm, modulus: &[u8]) -> Result<(), KeyError> {
    let modulus = &modulus[modulus.iter().take_while(|b| **b == 0).count()..];
    let bits = modulus
        .first()
        .map_or(0, |top| modulus.len() * 8 - top.leading_zeros() as usize);
    match u32::try_from(bits).ok().and_then(RsaKeySize::from_bits) {
        Some(_) => Ok(()),
        None => Err(KeyError::RsaSize { alg, bits }),
    }
}

fn from_pem(alg: Algorithm, text: &str) -> Result<PrivateKey, KeyError> {
    let bad = |what: &str| KeyError::malformed(alg, format!("a PEM that holds {what}"));
    let (label, der) = SecretDocument::from_pem(text)
        .map_err(|_| KeyError::malformed(alg, "not a well-formed PEM document"))?;
    match label {
        "PRIVATE KEY" => from_pkcs8(alg, der.as_bytes()),
        "RSA PRIVATE KEY" => {
            expect_family(alg, KeyFamily::Rsa)?;
            let parts = RsaPrivateKeyRef::from_der(der.as_bytes())
                .map_err(|_| bad("a malformed PKCS#1 RSA key"))?;
            expect_rsa_size(alg, parts.modulus.as_bytes())?;
            let key = rsa::PrivateKey::from_pkcs1_der(der.as_bytes())
                .map_err(|_| bad("an invalid PKCS#1 RSA key"))?;
            Ok(PrivateKey::Rsa(key))
        }
        "EC PRIVATE KEY" => {
            let sec1 = sec1::EcPrivateKey::from_der(der.as_bytes())
                .map_err(|_| bad("a malformed SEC1 EC key"))?;
            let family = curve_family(alg, sec1.parameters.and_then(|p| p.named_curve()))?;
            expect_family(alg, family)?;
            let invalid = |_| bad("an invalid SEC1 EC key");
            match family {
                KeyFamily::P256 => SecretKey::try_from(sec1).map(PrivateKey::P256),
                _ => SecretKey::try_from(sec1).map(PrivateKey::P384),
            }
            .map_err(invalid)
        }
        "ENCRYPTED PRIVATE KEY" => Err(bad("an encrypted key: decrypt it first")),
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" => Err(bad("no private key")),
        _ => Err(bad("something other than a private key")),
    }
}

fn from_pkcs8(alg: Algorithm, der: &[u8]) -> Result<PrivateKey, KeyError> {
    let bad = |what: &str| KeyError::malformed(alg, format!("a PKCS#8 document that is {what}"));
    let info = PrivateKeyInfoRef::from_der(der).map_err(|_| bad("malformed"))?;
    let algorithm = info.algorithm.oid;
    let family = if algorithm == RSA_ENCRYPTION || algorithm == RSASSA_PSS {
        KeyFamily::Rsa
    } else if algorithm == EC_PUBLIC_KEY {
        curve_family(alg, info.algorithm.parameters_oid().ok())?
    } else if algorithm == ED25519 {
        KeyFamily::Ed25519
    } else {
        return Err(wrong_type(alg, other_key_type(&algorithm.to_string())));
    };
    expect_family(alg, family)?;
    let invalid = || bad("not a valid key of its type");
    match family {
        KeyFamily::Rsa => {
            let parts =
                RsaPrivateKeyRef::from_der(info.private_key.as_bytes()).map_err(|_| invalid())?;
            expect_rsa_size(alg, parts.modulus.as_bytes())?;
            rsa::PrivateKey::try_from(info)
                .map(PrivateKey::Rsa)
                .map_err(|_| invalid())
        }
        KeyFamily::P256 => SecretKey::try_from(info)
            .map(PrivateKey::P256)
            .map_err(|_| invalid()),
        KeyFamily::P384 => SecretKey::try_from(info)
            .map(PrivateKey::P384)
            .map_err(|_| invalid()),
        // Checks an embedded public key (PKCS#8 v2) against the private one.
        KeyFamily::Ed25519 => ed25519_dalek::SigningKey::try_from(info)
            .map(PrivateKey::Ed25519)
            .map_err(|_| invalid()),
        KeyFamily::Hmac(_) => Err(invalid()),
    }
}

/// The members of a private JWK (RFC 7518 §6) this module reads; the private ones zeroize.
#[derive(Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    #[serde(default, deserialize_with = "zeroizing")]
    d: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    p: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    q: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    dp: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    dq: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    qi: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "zeroizing")]
    k: Option<Zeroizing<String>>,
    oth: Option<IgnoredAny>,
}

/// A private member, straight into a buffer that is wiped when dropped.
fn zeroizing<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Zeroizing::new))
}

impl PrivateJwk {
    fn parse(alg: Algorithm, text: &str) -> Result<Self, KeyError> {
        // serde's own messages may quote a value: say only where the JSON went wrong.
        serde_json::from_str(text).map_err(|e| {
            let what = match e.is_data() {
                true => "a JWK member is missing or not a string",
                false => "not valid JSON",
            };
            KeyError::malformed(
                alg,
                format!("{what} (line {}, column {})", e.line(), e.column()),
            )
        })
    }

    /// Every member whose value is rendered from the key, by name.
    fn key_members(&self) -> [(&'static str, Option<&str>); 13] {
        [
            ("kty", Some(self.kty.as_str())),
            ("crv", self.crv.as_deref()),
            ("n", self.n.as_deref()),
            ("e", self.e.as_deref()),
            ("x", self.x.as_deref()),
            ("y", self.y.as_deref()),
            ("d", secret(&self.d)),
            ("p", secret(&self.p)),
            ("q", secret(&self.q)),
            ("dp", secret(&self.dp)),
            ("dq", secret(&self.dq)),
            ("qi", secret(&self.qi)),
            ("k", secret(&self.k)),
        ]
    }

    fn family(&self, alg: Algorithm) -> Result<KeyFamily, KeyError> {
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => Ok(KeyFamily::Rsa),
            ("EC", Some("P-256")) => Ok(KeyFamily::P256),
            ("EC", Some("P-384")) => Ok(KeyFamily::P384),
            ("EC", Some("P-521")) => Err(wrong_type(alg, "a P-521 EC")),
            ("EC", Some("secp256k1")) => Err(wrong_type(alg, "a secp256k1 EC")),
            ("OKP", Some("Ed25519")) => Ok(KeyFamily::Ed25519),
            ("OKP", Some("Ed448")) => Err(wrong_type(alg, "an Ed448")),
            ("OKP", Some("X25519")) => Err(wrong_type(alg, "an X25519")),
            ("oct", _) => Ok(KeyFamily::Hmac(0)),
            _ => Err(wrong_type(alg, "an unsupported kind of")),
        }
    }
}

fn secret(value: &Option<Zeroizing<String>>) -> Option<&str> {
    value.as_ref().map(|s| s.as_str())
}

/// Decodes a base64url member; `None` if absent.
fn member(
    alg: Algorithm,
    name: &'static str,
    value: Option<&str>,
) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
    value
        .map(|v| {
            Base64UrlUnpadded::decode_vec(v)
                .map(Zeroizing::new)
                .map_err(|_| KeyError::malformed(alg, format!("member `{name}` is not base64url")))
        })
        .transpose()
}

fn required(
    alg: Algorithm,
    name: &'static str,
    value: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    member(alg, name, value)?
        .ok_or_else(|| KeyError::malformed(alg, format!("member `{name}` is missing")))
}

fn from_jwk(alg: Algorithm, text: &str) -> Result<KeyMaterial, KeyError> {
    let jwk = PrivateJwk::parse(alg, text)?;
    let family = jwk.family(alg)?;
    expect_family(alg, family)?;
    if let Some(claimed) = jwk.alg.as_deref().filter(|a| *a != alg.as_str()) {
        let says = claimed
            .parse::<Algorithm>()
            .map_or("another algorithm", |a| a.as_str());
        return Err(KeyError::malformed(alg, format!("the JWK is for {says}")));
    }
    let key = match family {
        KeyFamily::Rsa => rsa_from_jwk(alg, &jwk)?,
        KeyFamily::P256 => PrivateKey::P256(ec_from_jwk(alg, &jwk)?),
        KeyFamily::P384 => PrivateKey::P384(ec_from_jwk(alg, &jwk)?),
        KeyFamily::Ed25519 => {
            let d = required(alg, "d", secret(&jwk.d))?;
            let seed: &[u8; 32] = d
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::malformed(alg, "member `d` is not 32 bytes long"))?;
            PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
        }
        KeyFamily::Hmac(_) => PrivateKey::Hmac(required(alg, "k", secret(&jwk.k))?),
    };
    let material = KeyMaterial::from_key(alg, key)?;
    expect_same_members(alg, &jwk, &material)?;
    Ok(material)
}

/// Every key member the input carries must be the one rendered from the key it holds: a
/// public half of another key, or CRT values that do not fit, would make other libraries
/// compute another `kid` or wrong signatures.
fn expect_same_members(
    alg: Algorithm,
    input: &PrivateJwk,
    material: &KeyMaterial,
) -> Result<(), KeyError> {
    let rendered = PrivateJwk::parse(alg, material.private_jwk_json())?;
    let pairs = input.key_members().into_iter().zip(rendered.key_members());
    for ((name, given), (_, canonical)) in pairs {
        if given.is_some_and(|given| Some(given) != canonical) {
            return Err(KeyError::Inconsistent { alg, member: name });
        }
    }
    Ok(())
}

fn rsa_from_jwk(alg: Algorithm, jwk: &PrivateJwk) -> Result<PrivateKey, KeyError> {
    if jwk.oth.is_some() {
        return Err(KeyError::malformed(alg, "a multi-prime RSA key"));
    }
    let n = required(alg, "n", jwk.n.as_deref())?;
    let e = required(alg, "e", jwk.e.as_deref())?;
    // RFC 7518 §6.3.1: minimal big-endian integers. Checked first, so that no size below is
    // taken from an input padded with zeros: n has at most 512 bytes, e at most 8.
    if n.first() == Some(&0) || e.first() == Some(&0) || e.len() > 8 {
        return Err(KeyError::malformed(
            alg,
            "member `n` or `e` is not a minimal RSA integer",
        ));
    }
    expect_rsa_size(alg, &n)?;
    let d = required(alg, "d", secret(&jwk.d))?;
    // The precisions the rsa crate's own PKCS#1 decoder uses, so both paths build one key.
    let (bits, e_bits) = (n.len() as u32 * 8, e.len() as u32 * 8);
    let uint = |name: &'static str, bytes: &[u8], bits: u32| {
        BoxedUint::from_be_slice(bytes, bits)
            .map_err(|_| KeyError::malformed(alg, format!("member `{name}` is out of range")))
    };
    let primes = match (
        member(alg, "p", secret(&jwk.p))?,
        member(alg, "q", secret(&jwk.q))?,
    ) {
        (Some(p), Some(q)) => vec![uint("p", &p, bits)?, uint("q", &q, bits)?],
        // RFC 7518 §6.3.2: without p and q, the primes are recovered from n, e and d.
        (None, None) => vec![],
        _ => {
            return Err(KeyError::malformed(
                alg,
                "only one of `p` and `q` is present",
            ));
        }
    };
    let key = rsa::PrivateKey::from_components(
        uint("n", &n, bits)?,
        uint("e", &e, e_bits)?,
        uint("d", &d, bits)?,
        primes,
    )
    .map_err(|_| KeyError::malformed(alg, "the RSA members do not form a valid key"))?;
    Ok(PrivateKey::Rsa(key))
}

fn ec_from_jwk<C>(alg: Algorithm, jwk: &PrivateJwk) -> Result<SecretKey<C>, KeyError>
where
    C: elliptic_curve::Curve,
{
    let d = required(alg, "d", secret(&jwk.d))?;
    if d.len() != elliptic_curve::FieldBytes::<C>::default().len() {
        // RFC 7518 §6.2.2.1: `d` is exactly as long as the curve's field elements.
        return Err(KeyError::malformed(alg, "member `d` has the wrong length"));
    }
    SecretKey::from_slice(&d)
        .map_err(|_| KeyError::malformed(alg, "member `d` is not a valid scalar"))
}

#[cfg(test)]
mod tests;
