//! The Secret's layout (a contract with the workloads that mount it) and the JWKS document:
//! rendering them from the manifest and the private material, and reading them back. No I/O.
//!
//! Secret data keys:
//! - always: `kid` (the active kid), `private.jwk.json` (active private JWK), `manifest.json`;
//! - RSA, EC, EdDSA active key: `private.pem` (PKCS#8), `public.pem` (SPKI), `jwks.json`;
//! - HMAC active key: `secret` (raw bytes) and `verify.jwks.json` (every held HMAC key as an
//!   `oct` JWK, so verifiers sharing the Secret accept tokens signed before a rotation);
//! - the pending key, while there is one: `pending.kid`, `pending.private.jwk.json`, and
//!   `pending.private.pem` + `pending.public.pem`, or `pending.secret`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::keys::{Jwks, KeyMaterial, PublicJwk};
use crate::lifecycle::{KeyState, Manifest, ManifestError};

pub const KID: &str = "kid";
pub const PRIVATE_JWK: &str = "private.jwk.json";
pub const PRIVATE_PEM: &str = "private.pem";
pub const PUBLIC_PEM: &str = "public.pem";
pub const SECRET: &str = "secret";
pub const JWKS: &str = "jwks.json";
pub const VERIFY_JWKS: &str = "verify.jwks.json";
pub const MANIFEST: &str = "manifest.json";
const PENDING: &str = "pending.";

/// Whether a Secret data key belongs to the layout above (other keys are left alone).
pub fn is_layout_key(key: &str) -> bool {
    key.starts_with(PENDING)
        || [
            KID,
            PRIVATE_JWK,
            PRIVATE_PEM,
            PUBLIC_PEM,
            SECRET,
            JWKS,
            VERIFY_JWKS,
            MANIFEST,
        ]
        .contains(&key)
}

/// The private material of one key, as stored.
pub struct StoredKey {
    private_jwk: Zeroizing<String>,
    private_pem: Option<Zeroizing<String>>,
    public_pem: Option<String>,
    secret: Option<Zeroizing<Vec<u8>>>,
}

impl From<&KeyMaterial> for StoredKey {
    fn from(k: &KeyMaterial) -> Self {
        StoredKey {
            private_jwk: Zeroizing::new(k.private_jwk_json().to_string()),
            private_pem: k.private_pem().map(|p| Zeroizing::new(p.to_string())),
            public_pem: k.public_pem().map(str::to_string),
            secret: k.secret_bytes().map(|s| Zeroizing::new(s.to_vec())),
        }
    }
}

/// Private material by kid.
#[derive(Default)]
pub struct Materials(BTreeMap<String, StoredKey>);

impl Materials {
    pub fn insert(&mut self, kid: String, key: StoredKey) {
        self.0.insert(kid, key);
    }
    pub fn kids(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }
    /// Drops material the manifest no longer needs (retired asymmetric keys, removed keys).
    pub fn retain_needed(&mut self, manifest: &Manifest) {
        self.0.retain(|kid, _| {
            manifest
                .get(kid)
                .is_some_and(|k| k.keeps_private_material())
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the Secret has no {MANIFEST}")]
    NoManifest,
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the Secret's {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("the Secret's {VERIFY_JWKS} is not a JWK set")]
    VerifyJwks,
    #[error("the manifest's active key {0} has no private material to write")]
    MissingActive(String),
}

/// A data entry as text; `label` names it in the error (never its content).
fn text(
    data: &BTreeMap<String, ByteString>,
    key: &str,
    label: &'static str,
) -> Result<Option<Zeroizing<String>>, StoreError> {
    match data.get(key) {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes.0.clone())
            .map(|s| Some(Zeroizing::new(s)))
            .map_err(|_| StoreError::NotUtf8(label)),
    }
}

#[derive(Deserialize)]
struct Kty {
    kty: String,
}

/// The raw bytes of an `oct` JWK: the `secret` file is derived from it, so it can always be
/// rewritten from the verification set.
fn oct_secret(jwk: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64ct::{Base64UrlUnpadded, Encoding};
    // Borrowed: no copy of the encoded secret is made.
    #[derive(Deserialize)]
    struct Oct<'a> {
        #[serde(borrow)]
        k: &'a str,
    }
    let oct: Oct = serde_json::from_str(jwk).ok()?;
    Base64UrlUnpadded::decode_vec(oct.k)
        .ok()
        .map(Zeroizing::new)
}

/// One `oct` key inside `verify.jwks.json`; only `kid` is read, the rest is kept verbatim.
#[derive(Deserialize)]
struct OctKid {
    kid: String,
}

/// Splits a JWKS document into (kid, the member's JSON text).
fn jwks_members(json: &str) -> Option<Vec<(String, Zeroizing<String>)>> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        keys: Vec<&'a serde_json::value::RawValue>,
    }
    let raw: Raw = serde_json::from_str(json).ok()?;
    raw.keys
        .into_iter()
        .map(|member| {
            let kid = serde_json::from_str::<OctKid>(member.get()).ok()?.kid;
            Some((kid, Zeroizing::new(member.get().to_string())))
        })
        .collect()
}

/// What a Secret written by the operator holds.
pub struct StoredSecret {
    pub manifest: Manifest,
    pub materials: Materials,
    /// Kids of the HMAC keys verifiers can read from the Secret (its publication).
    pub hmac_published: BTreeSet<String>,
}

/// Reads the manifest and every key's private material back from the Secret's data.
pub fn read_secret(data: &BTreeMap<String, ByteString>) -> Result<StoredSecret, StoreError> {
    let manifest = Manifest::from_json(&data.get(MANIFEST).ok_or(StoreError::NoManifest)?.0)?;
    let mut materials = Materials::default();
    let mut hmac_published = BTreeSet::new();
    if let Some(verify) = text(data, VERIFY_JWKS, VERIFY_JWKS)? {
        for (kid, jwk) in jwks_members(&verify).ok_or(StoreError::VerifyJwks)? {
            hmac_published.insert(kid.clone());
            let stored = StoredKey {
                secret: oct_secret(&jwk),
                private_jwk: jwk,
                private_pem: None,
                public_pem: None,
            };
            materials.insert(kid, stored);
        }
    }
    for prefix in ["", PENDING] {
        let key = |name: &str| format!("{prefix}{name}");
        let Some(kid) = data.get(&key(KID)) else {
            continue;
        };
        let Ok(kid) = String::from_utf8(kid.0.clone()) else {
            continue;
        };
        let label = if prefix.is_empty() {
            "key material"
        } else {
            "pending key material"
        };
        let get = |name: &str| text(data, &key(name), label);
        let Some(private_jwk) = get(PRIVATE_JWK)? else {
            continue;
        };
        let symmetric = serde_json::from_str::<Kty>(&private_jwk).is_ok_and(|k| k.kty == "oct");
        let stored = StoredKey {
            secret: if symmetric {
                oct_secret(&private_jwk)
            } else {
                None
            },
            private_pem: get(PRIVATE_PEM)?,
            public_pem: get(PUBLIC_PEM)?.map(|p| p.to_string()),
            private_jwk,
        };
        // Signers mount these files: a key missing one of them cannot sign, and counts as lost
        // (the planner then retires it and a complete key signs at once).
        let complete = if symmetric {
            stored.secret.is_some()
        } else {
            stored.private_pem.is_some() && stored.public_pem.is_some()
        };
        if complete {
            materials.insert(kid, stored);
        }
    }
    Ok(StoredSecret {
        manifest,
        materials,
        hmac_published,
    })
}

fn put(data: &mut BTreeMap<String, ByteString>, key: String, value: &[u8]) {
    data.insert(key, ByteString(value.to_vec()));
}

/// The Secret's data for `manifest`: the active and pending keys' material, the manifest, and
/// for HMAC the verification set. Deterministic: the same inputs give the same bytes.
pub fn render_secret(
    manifest: &Manifest,
    materials: &Materials,
) -> Result<BTreeMap<String, ByteString>, StoreError> {
    let mut data = BTreeMap::new();
    let active = manifest.active();
    let pending = manifest.keys.iter().find(|k| k.state == KeyState::Pending);
    for (prefix, record) in [("", active), (PENDING, pending)] {
        let Some(record) = record else { continue };
        let Some(stored) = materials.0.get(&record.kid) else {
            if prefix.is_empty() {
                return Err(StoreError::MissingActive(record.kid.clone()));
            }
            continue;
        };
        put(&mut data, format!("{prefix}{KID}"), record.kid.as_bytes());
        put(
            &mut data,
            format!("{prefix}{PRIVATE_JWK}"),
            stored.private_jwk.as_bytes(),
        );
        if let Some(pem) = &stored.private_pem {
            put(&mut data, format!("{prefix}{PRIVATE_PEM}"), pem.as_bytes());
        }
        if let Some(pem) = &stored.public_pem {
            put(&mut data, format!("{prefix}{PUBLIC_PEM}"), pem.as_bytes());
        }
        if let Some(secret) = &stored.secret {
            put(&mut data, format!("{prefix}{SECRET}"), secret);
        }
    }
    if manifest.keys.iter().any(|k| !k.alg.is_symmetric()) {
        put(
            &mut data,
            JWKS.to_string(),
            render_jwks(manifest).as_bytes(),
        );
    }
    let hmac: Vec<&str> = manifest
        .keys
        .iter()
        .filter(|k| k.alg.is_symmetric())
        .filter_map(|k| materials.0.get(&k.kid))
        .map(|s| s.private_jwk.as_str())
        .collect();
    if !hmac.is_empty() {
        let mut verify = Zeroizing::new(String::from("{\"keys\":["));
        verify.push_str(&hmac.join(","));
        verify.push_str("]}");
        put(&mut data, VERIFY_JWKS.to_string(), verify.as_bytes());
    }
    put(
        &mut data,
        MANIFEST.to_string(),
        manifest.to_json().as_bytes(),
    );
    Ok(data)
}

/// The public JWKS of every asymmetric key held, oldest first.
pub fn render_jwks(manifest: &Manifest) -> String {
    manifest.public_jwks().to_json()
}

/// The public keys of a published JWKS document (unreadable documents publish nothing).
pub fn read_jwks(document: Option<&String>) -> Vec<PublicJwk> {
    document
        .and_then(|d| serde_json::from_str::<Jwks>(d).ok())
        .map(|j| j.keys)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use jiff::Timestamp;

    use super::*;
    use crate::keys::{Algorithm, generate};
    use crate::lifecycle::{KeyRecord, MANIFEST_VERSION};

    fn record(key: &KeyMaterial, state: KeyState) -> KeyRecord {
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        KeyRecord {
            kid: key.kid().to_string(),
            alg: key.alg(),
            rsa_bits: key.rsa_size().map(|s| s.bits() as u32),
            state,
            created_at: t,
            published_at: Some(t),
            activated_at: (state != KeyState::Pending).then_some(t),
            retired_at: (state == KeyState::Retired).then_some(t),
            expires_at: None,
            public_jwk: key.public_jwk().cloned(),
        }
    }

    /// A manifest with an active, a pending and a retired key of `alg`, and their material.
    fn three_keys(alg: Algorithm) -> (Manifest, Materials, [String; 3]) {
        let keys = [
            generate(alg, None).unwrap(),
            generate(alg, None).unwrap(),
            generate(alg, None).unwrap(),
        ];
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            keys: vec![
                record(&keys[0], KeyState::Retired),
                record(&keys[1], KeyState::Active),
                record(&keys[2], KeyState::Pending),
            ],
            rotation_request: None,
            forced_rotation_at: None,
        };
        let mut materials = Materials::default();
        for k in &keys {
            materials.insert(k.kid().to_string(), StoredKey::from(k));
        }
        materials.retain_needed(&manifest);
        let kids = keys.map(|k| k.kid().to_string());
        (manifest, materials, kids)
    }

    #[test]
    fn the_secret_layout_round_trips_for_every_algorithm() {
        for alg in Algorithm::ALL {
            let (manifest, materials, [retired, active, pending]) = three_keys(alg);
            let data = render_secret(&manifest, &materials).unwrap();
            assert!(
                data.keys().all(|k| is_layout_key(k)),
                "{alg}: every key written is a layout key"
            );
            assert_eq!(data[KID].0, active.as_bytes());
            assert_eq!(data["pending.kid"].0, pending.as_bytes());
            let back = read_secret(&data).unwrap();
            assert_eq!(back.manifest, manifest, "{alg}");
            let mut expected = BTreeSet::from([active.clone(), pending.clone()]);
            if alg.is_symmetric() {
                // Verifiers sharing the Secret still need the retired key.
                expected.insert(retired.clone());
                assert_eq!(back.hmac_published, expected);
                assert!(data.contains_key(SECRET) && data.contains_key("pending.secret"));
                assert!(!data.contains_key(JWKS), "{alg}: no public JWKS");
            } else {
                assert!(back.hmac_published.is_empty());
                for key in [
                    PRIVATE_PEM,
                    PUBLIC_PEM,
                    JWKS,
                    "pending.private.pem",
                    "pending.public.pem",
                ] {
                    assert!(data.contains_key(key), "{alg}: {key}");
                }
                let jwks: Jwks = serde_json::from_slice(&data[JWKS].0).unwrap();
                let published: Vec<_> = jwks.keys.iter().map(|k| k.kid.clone()).collect();
                assert_eq!(
                    published,
                    vec![retired.clone(), active.clone(), pending.clone()]
                );
            }
            assert_eq!(
                back.materials.kids(),
                expected,
                "{alg}: material kept for exactly these keys"
            );
            // Rendering what was read gives the same bytes: a steady state writes nothing.
            assert_eq!(
                render_secret(&back.manifest, &back.materials).unwrap(),
                data,
                "{alg}"
            );
        }
    }

    #[test]
    fn manifest_and_public_documents_hold_no_private_member() {
        for alg in Algorithm::ALL {
            let (manifest, materials, _) = three_keys(alg);
            let data = render_secret(&manifest, &materials).unwrap();
            for key in [MANIFEST, JWKS] {
                if let Some(doc) = data.get(key) {
                    let text = String::from_utf8(doc.0.clone()).unwrap();
                    for member in ["\"d\"", "\"k\"", "\"p\"", "\"q\"", "PRIVATE KEY"] {
                        assert!(!text.contains(member), "{alg}: {key} contains {member}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_key_missing_a_file_signers_mount_counts_as_without_material() {
        let (manifest, materials, [_, active, _]) = three_keys(Algorithm::ES256);
        let mut data = render_secret(&manifest, &materials).unwrap();
        data.remove(PRIVATE_PEM);
        assert!(
            !read_secret(&data)
                .unwrap()
                .materials
                .kids()
                .contains(&active)
        );
    }

    #[test]
    fn a_deleted_hmac_secret_file_is_rewritten_from_its_jwk() {
        let (manifest, materials, _) = three_keys(Algorithm::HS256);
        let full = render_secret(&manifest, &materials).unwrap();
        let mut data = full.clone();
        data.remove(SECRET);
        let back = read_secret(&data).unwrap();
        assert_eq!(
            render_secret(&back.manifest, &back.materials).unwrap(),
            full
        );
    }

    #[test]
    fn an_unreadable_manifest_is_an_error_not_an_empty_set() {
        let mut data = BTreeMap::new();
        assert!(matches!(read_secret(&data), Err(StoreError::NoManifest)));
        data.insert(MANIFEST.to_string(), ByteString(b"{not json".to_vec()));
        assert!(matches!(read_secret(&data), Err(StoreError::Manifest(_))));
    }
}
