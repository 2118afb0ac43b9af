//! The Secret's layout (a contract with the workloads that mount it) and the JWKS document:
//! rendering them from the manifest and the private material, and reading them back as
//! evidence. No I/O.
//!
//! Secret data keys:
//! - always: `kid` (the active kid), `private.jwk.json` (active private JWK), `manifest.json`;
//! - RSA, EC, EdDSA active key: `private.pem` (PKCS#8), `public.pem` (SPKI), `jwks.json`;
//! - HMAC active key: `secret` (raw bytes) and `verify.jwks.json` (every held HMAC key as an
//!   `oct` JWK, so verifiers sharing the Secret accept tokens signed before a rotation);
//! - the pending key, while there is one: `pending.kid`, `pending.private.jwk.json`, and
//!   `pending.private.pem` + `pending.public.pem`, or `pending.secret`.
//!
//! Reading back trusts no file name: each file that can hold private material is parsed, and
//! the key in it is known by its own thumbprint. Whatever encoding survives is enough; the
//! others are rendered again from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::ByteString;
use serde::Deserialize;

use crate::keys::{self, Algorithm, Jwks, KeyMaterial, PublicJwk};
use crate::lifecycle::{
    FoundKey, KeyState, MANIFEST_VERSION, Manifest, ManifestRead, SecretEvidence, Slot,
};

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

/// Private material by kid. Shared (`Arc`), so a key minted for a write that failed can be
/// offered again without a copy of its bytes.
#[derive(Clone, Default)]
pub struct Materials(BTreeMap<String, Arc<KeyMaterial>>);

impl Materials {
    pub fn insert(&mut self, key: Arc<KeyMaterial>) {
        self.0.insert(key.kid().to_string(), key);
    }
    pub fn get(&self, kid: &str) -> Option<&Arc<KeyMaterial>> {
        self.0.get(kid)
    }
    pub fn kids(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }
}

/// What a Secret holds: the evidence for the core, and the private material for rendering.
pub struct SecretRead {
    pub evidence: SecretEvidence,
    pub materials: Materials,
}

/// The algorithm each known kid has, for material whose encoding does not say (an RSA key
/// serves RS256 as well as PS512).
#[derive(Default)]
pub struct AlgHints {
    pub by_kid: BTreeMap<String, Algorithm>,
    /// The spec's algorithm, for keys no record names.
    pub spec: Option<Algorithm>,
}

impl AlgHints {
    fn knows(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    fn choose(&self, kid: &str, stated: Option<Algorithm>, parsed: Algorithm) -> Algorithm {
        let fits = |a: &Algorithm| same_kind(*a, parsed);
        self.by_kid
            .get(kid)
            .copied()
            .filter(fits)
            .or(stated.filter(fits))
            .or(self.spec.filter(fits))
            .unwrap_or(parsed)
    }
}

fn same_kind(a: Algorithm, b: Algorithm) -> bool {
    a.family() == b.family() || (a.is_symmetric() && b.is_symmetric())
}

/// Reads `manifest.json`. Reasons name the position of a fault, never the content.
pub fn read_manifest(data: &BTreeMap<String, ByteString>) -> ManifestRead {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let Some(bytes) = data.get(MANIFEST) else {
        return ManifestRead::Absent;
    };
    let position = |e: serde_json::Error| {
        ManifestRead::Unreadable(format!(
            "{MANIFEST} is not a manifest ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    };
    match serde_json::from_slice::<Version>(&bytes.0) {
        Ok(v) if v.version > MANIFEST_VERSION => ManifestRead::Newer(v.version),
        Ok(_) => match serde_json::from_slice::<Manifest>(&bytes.0) {
            Ok(m) if m.version == MANIFEST_VERSION => ManifestRead::Read(m),
            Ok(m) => ManifestRead::Unreadable(format!("{MANIFEST} has version {}", m.version)),
            Err(e) => position(e),
        },
        Err(e) => position(e),
    }
}

/// Reads the Secret's data as evidence: the manifest, and every key whose private material
/// survives in any file, known by its thumbprint.
pub fn read_secret(data: &BTreeMap<String, ByteString>, hints: &AlgHints) -> SecretRead {
    let manifest = read_manifest(data);
    let mut materials = Materials::default();
    let mut found: BTreeMap<String, FoundKey> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut add = |key: KeyMaterial, slot: Slot| {
        let entry = found
            .entry(key.kid().to_string())
            .or_insert_with(|| FoundKey {
                kid: key.kid().to_string(),
                alg: key.alg(),
                rsa_bits: key.rsa_size().map(|s| s.bits() as u32),
                public_jwk: key.public_jwk().cloned(),
                slots: BTreeSet::new(),
            });
        entry.slots.insert(slot);
        materials.insert(Arc::new(key));
    };
    for (prefix, slot) in [("", Slot::Signing), (PENDING, Slot::Pending)] {
        for file in [PRIVATE_PEM, PRIVATE_JWK, SECRET] {
            let name = format!("{prefix}{file}");
            let Some(bytes) = data.get(&name) else {
                continue;
            };
            match identify(&bytes.0, file == SECRET, hints) {
                Some(key) => add(key, slot),
                None => unreadable.push(name),
            }
        }
    }
    if let Some(bytes) = data.get(VERIFY_JWKS) {
        match jwks_members(&bytes.0) {
            Some(members) => {
                for member in members {
                    match identify(member.get().as_bytes(), false, hints) {
                        Some(key) if key.alg().is_symmetric() => add(key, Slot::Verify),
                        _ => unreadable.push(VERIFY_JWKS.to_string()),
                    }
                }
            }
            None => unreadable.push(VERIFY_JWKS.to_string()),
        }
    }
    let named_signing = data
        .get(KID)
        .and_then(|k| std::str::from_utf8(&k.0).ok())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    unreadable.sort();
    unreadable.dedup();
    SecretRead {
        evidence: SecretEvidence {
            manifest,
            found: found.into_values().collect(),
            named_signing,
            unreadable,
        },
        materials,
    }
}

/// The key in one file, whatever its encoding; `raw` for the `secret` files (raw HMAC bytes).
fn identify(bytes: &[u8], raw: bool, hints: &AlgHints) -> Option<KeyMaterial> {
    if raw {
        // Raw bytes: a trailing newline may be a byte of the secret, or an edit's leftover.
        // The exact bytes first; trimmed only when that names a key the records know.
        let exact = identify_hmac(bytes, hints);
        let trimmed = bytes.trim_ascii_end();
        if trimmed.len() < bytes.len() && exact.as_ref().is_none_or(|k| !hints.knows(k.kid())) {
            let repaired = identify_hmac(trimmed, hints).filter(|k| hints.knows(k.kid()));
            return repaired.or(exact);
        }
        return exact;
    }
    let stated = stated_alg(bytes);
    let guesses = stated.into_iter().chain([
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ]);
    for guess in guesses {
        let Ok(key) = keys::parse_private(guess, bytes) else {
            continue;
        };
        let alg = hints.choose(key.kid(), stated, guess);
        return if alg == guess {
            Some(key)
        } else {
            keys::parse_private(alg, bytes).ok()
        };
    }
    None
}

fn identify_hmac(bytes: &[u8], hints: &AlgHints) -> Option<KeyMaterial> {
    let guess = hints
        .spec
        .filter(|a| a.is_symmetric())
        .unwrap_or(Algorithm::HS256);
    let key = keys::hmac_from_secret(guess, bytes)
        .or_else(|_| keys::hmac_from_secret(Algorithm::HS256, bytes))
        .ok()?;
    let alg = hints.choose(key.kid(), None, key.alg());
    if alg == key.alg() {
        Some(key)
    } else {
        keys::hmac_from_secret(alg, bytes).ok()
    }
}

/// The `alg` member of a JWK, when the bytes are one.
fn stated_alg(bytes: &[u8]) -> Option<Algorithm> {
    #[derive(Deserialize)]
    struct Alg {
        alg: Algorithm,
    }
    serde_json::from_slice::<Alg>(bytes).ok().map(|a| a.alg)
}

/// The members of a JWKS document, unparsed.
fn jwks_members(bytes: &[u8]) -> Option<Vec<Box<serde_json::value::RawValue>>> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<Box<serde_json::value::RawValue>>,
    }
    serde_json::from_slice::<Raw>(bytes).ok().map(|r| r.keys)
}

fn put(data: &mut BTreeMap<String, ByteString>, key: String, value: &[u8]) {
    data.insert(key, ByteString(value.to_vec()));
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the manifest's {state} key {kid} has no private material to write")]
    MissingMaterial { state: &'static str, kid: String },
}

/// The Secret's data for `manifest`: the active and pending keys' material, the manifest, and
/// for HMAC the verification set. Deterministic: the same inputs give the same bytes.
pub fn render_secret(
    manifest: &Manifest,
    materials: &Materials,
) -> Result<BTreeMap<String, ByteString>, LayoutError> {
    let mut data = BTreeMap::new();
    let active = manifest.active();
    let pending = manifest.keys.iter().find(|k| k.state == KeyState::Pending);
    for (prefix, record) in [("", active), (PENDING, pending)] {
        let Some(record) = record else { continue };
        let Some(key) = materials.get(&record.kid) else {
            return Err(LayoutError::MissingMaterial {
                state: record.state.as_str(),
                kid: record.kid.clone(),
            });
        };
        put(&mut data, format!("{prefix}{KID}"), record.kid.as_bytes());
        put(
            &mut data,
            format!("{prefix}{PRIVATE_JWK}"),
            key.private_jwk_json().as_bytes(),
        );
        if let Some(pem) = key.private_pem() {
            put(&mut data, format!("{prefix}{PRIVATE_PEM}"), pem.as_bytes());
        }
        if let Some(pem) = key.public_pem() {
            put(&mut data, format!("{prefix}{PUBLIC_PEM}"), pem.as_bytes());
        }
        if let Some(secret) = key.secret_bytes() {
            put(&mut data, format!("{prefix}{SECRET}"), secret);
        }
    }
    if manifest.keys.iter().any(|k| !k.alg.is_symmetric()) {
        put(
            &mut data,
            JWKS.to_string(),
            render_jwks(&manifest.public_jwks()).as_bytes(),
        );
    }
    let mut hmac = manifest
        .keys
        .iter()
        .filter(|k| k.alg.is_symmetric())
        .filter_map(|k| materials.get(&k.kid))
        .peekable();
    if hmac.peek().is_some() {
        // Built in one zeroizing buffer: no copy of a secret outlives this call.
        let mut verify = zeroize::Zeroizing::new(String::from("{\"keys\":["));
        for (i, key) in hmac.enumerate() {
            if i > 0 {
                verify.push(',');
            }
            verify.push_str(key.private_jwk_json());
        }
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

/// The JWKS document verifiers read.
pub fn render_jwks(jwks: &Jwks) -> String {
    jwks.to_json()
}

/// The public keys of a published JWKS document: members that are not public JWKs are left out
/// (they are not this set's), an unreadable document publishes nothing.
pub fn read_jwks(document: &str) -> Vec<PublicJwk> {
    jwks_members(document.as_bytes())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| serde_json::from_str::<PublicJwk>(m.get()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::keys::{Algorithm, generate};
    use crate::lifecycle::KeyRecord;

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
            expires_at: (state == KeyState::Retired).then_some(t),
            public_jwk: key.public_jwk().cloned(),
            longest_retention: None,
        }
    }

    /// A manifest with a retired, an active and a pending key of `alg`, and the material the
    /// Secret keeps (retired asymmetric keys keep none).
    fn three_keys(alg: Algorithm) -> (Manifest, Materials, [String; 3]) {
        let keys = [(); 3].map(|_| Arc::new(generate(alg, None).unwrap()));
        let states = [KeyState::Retired, KeyState::Active, KeyState::Pending];
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            keys: keys.iter().zip(states).map(|(k, s)| record(k, s)).collect(),
            rotation_request: None,
            forced_rotation_at: None,
        };
        let mut materials = Materials::default();
        for (k, s) in keys.iter().zip(states) {
            if s != KeyState::Retired || alg.is_symmetric() {
                materials.insert(k.clone());
            }
        }
        (manifest, materials, keys.map(|k| k.kid().to_string()))
    }

    fn hints(manifest: &Manifest) -> AlgHints {
        AlgHints {
            by_kid: manifest
                .keys
                .iter()
                .map(|k| (k.kid.clone(), k.alg))
                .collect(),
            spec: None,
        }
    }

    fn slots_of(read: &SecretRead, kid: &str) -> BTreeSet<Slot> {
        read.evidence
            .found
            .iter()
            .find(|f| f.kid == kid)
            .map(|f| f.slots.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_secret_layout_round_trips_for_every_algorithm() {
        for alg in Algorithm::ALL {
            let (manifest, materials, [retired, active, pending]) = three_keys(alg);
            let data = render_secret(&manifest, &materials).unwrap();
            assert!(
                data.keys().all(|k| is_layout_key(k)),
                "{alg}: layout keys only"
            );
            assert_eq!(data[KID].0, active.as_bytes());
            assert_eq!(data["pending.kid"].0, pending.as_bytes());
            let back = read_secret(&data, &hints(&manifest));
            assert_eq!(
                back.evidence.manifest,
                ManifestRead::Read(manifest.clone()),
                "{alg}"
            );
            assert_eq!(
                back.evidence.named_signing.as_deref(),
                Some(active.as_str())
            );
            assert!(
                back.evidence.unreadable.is_empty(),
                "{alg}: {:?}",
                back.evidence.unreadable
            );
            assert!(slots_of(&back, &active).contains(&Slot::Signing), "{alg}");
            assert!(slots_of(&back, &pending).contains(&Slot::Pending), "{alg}");
            if alg.is_symmetric() {
                // Verifiers sharing the Secret still need the retired key.
                assert!(slots_of(&back, &retired).contains(&Slot::Verify), "{alg}");
                assert!(!data.contains_key(JWKS), "{alg}: no public JWKS");
            } else {
                assert!(
                    slots_of(&back, &retired).is_empty(),
                    "{alg}: no retired material"
                );
                let jwks: Jwks = serde_json::from_slice(&data[JWKS].0).unwrap();
                let published: Vec<_> = jwks.keys.iter().map(|k| k.kid.clone()).collect();
                assert_eq!(
                    published,
                    vec![retired.clone(), active.clone(), pending.clone()]
                );
            }
            for found in &back.evidence.found {
                assert_eq!(found.alg, alg, "the algorithm comes back from the record");
            }
            // Rendering what was read gives the same bytes: a steady state writes nothing.
            let manifest_back = match back.evidence.manifest {
                ManifestRead::Read(m) => m,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                render_secret(&manifest_back, &back.materials).unwrap(),
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
    fn a_key_survives_in_any_one_of_its_encodings_and_the_others_are_rendered_again() {
        for alg in [
            Algorithm::RS256,
            Algorithm::PS384,
            Algorithm::ES256,
            Algorithm::EdDSA,
            Algorithm::HS512,
        ] {
            let (manifest, materials, [_, active, _]) = three_keys(alg);
            let full = render_secret(&manifest, &materials).unwrap();
            let signing_files: Vec<&str> = [PRIVATE_PEM, PRIVATE_JWK, SECRET]
                .into_iter()
                .filter(|f| full.contains_key(*f))
                .collect();
            for keep in &signing_files {
                let mut data = full.clone();
                data.retain(|k, _| k == keep || !signing_files.contains(&k.as_str()));
                data.remove(PUBLIC_PEM);
                // A trailing newline, as `echo | base64` leaves it.
                data.get_mut(KID).unwrap().0.push(b'\n');
                data.get_mut(*keep).unwrap().0.push(b'\n');
                let back = read_secret(&data, &hints(&manifest));
                assert!(
                    slots_of(&back, &active).contains(&Slot::Signing),
                    "{alg}: {keep}"
                );
                assert_eq!(
                    back.evidence.named_signing.as_deref(),
                    Some(active.as_str())
                );
                assert_eq!(
                    render_secret(&manifest, &back.materials).unwrap(),
                    full,
                    "{alg}: {keep}"
                );
            }
            let mut none = full.clone();
            none.retain(|k, _| !signing_files.contains(&k.as_str()));
            let back = read_secret(&none, &hints(&manifest));
            if alg.is_symmetric() {
                // verify.jwks.json holds the secret too: it is one more encoding of the key.
                assert_eq!(slots_of(&back, &active), BTreeSet::from([Slot::Verify]));
                assert_eq!(
                    render_secret(&manifest, &back.materials).unwrap(),
                    full,
                    "{alg}"
                );
            } else {
                assert!(
                    slots_of(&back, &active).is_empty(),
                    "{alg}: no encoding left"
                );
            }
        }
    }

    #[test]
    fn a_file_holding_no_readable_key_is_named_and_nothing_of_it_is_echoed() {
        let (manifest, materials, _) = three_keys(Algorithm::ES256);
        let mut data = render_secret(&manifest, &materials).unwrap();
        data.insert(
            PRIVATE_PEM.into(),
            ByteString(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n".to_vec()),
        );
        let back = read_secret(&data, &hints(&manifest));
        assert_eq!(back.evidence.unreadable, vec![PRIVATE_PEM.to_string()]);
    }

    #[test]
    fn an_unreadable_manifest_is_evidence_with_a_reason_that_echoes_nothing() {
        let mut data = BTreeMap::new();
        assert_eq!(read_manifest(&data), ManifestRead::Absent);
        data.insert(
            MANIFEST.to_string(),
            ByteString(b"{\"keys\": [\"c2VjcmV0\"".to_vec()),
        );
        match read_manifest(&data) {
            ManifestRead::Unreadable(reason) => assert!(!reason.contains("c2VjcmV0"), "{reason}"),
            other => panic!("{other:?}"),
        }
        data.insert(
            MANIFEST.to_string(),
            ByteString(b"{\"version\": 7, \"keys\": 1}".to_vec()),
        );
        assert_eq!(read_manifest(&data), ManifestRead::Newer(7));
    }
}
