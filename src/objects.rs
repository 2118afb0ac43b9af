//! One set's Secret and JWKS ConfigMap as the core's abstract cluster: their data read into
//! evidence, and written as the core asks through an `ObjectApi` (the Kubernetes API in the
//! operator, a simulated cluster in the property tests). Only what changed is written.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::ByteString;

use crate::keys::{Algorithm, Jwks, KeyError, KeyMaterial, RsaKeySize};
use crate::layout::{self, AlgHints, LayoutError, Materials};
use crate::lifecycle::{
    Cluster, Evidence, KeyRecord, KeyState, Manifest, ManifestRead, NewKey, StoredTimes,
};

/// The most bytes the operator renders into the Secret's layout or a JWKS document. The API
/// server refuses objects over 1 MiB; `MAX_KEYS` keys of the largest kind need about 60 KiB.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;

/// Raw access to one set's Secret and ConfigMap data. Writes are conditional on what was read:
/// a concurrent change is a conflict, never an overwrite.
#[allow(async_fn_in_trait)]
pub trait ObjectApi {
    type Error: From<KeyError> + From<LayoutError> + From<TooLarge>;
    fn now(&mut self) -> Timestamp;
    /// A new key (CPU-bound: an implementation keeps it off async workers).
    fn generate(
        &mut self,
        alg: Algorithm,
        size: Option<RsaKeySize>,
    ) -> Result<Arc<KeyMaterial>, KeyError>;
    /// Creates or replaces the Secret with exactly `data`.
    async fn put_secret(&mut self, data: &BTreeMap<String, ByteString>) -> Result<(), Self::Error>;
    /// Creates or replaces the ConfigMap with exactly `data`.
    async fn put_jwks(&mut self, data: &BTreeMap<String, String>) -> Result<(), Self::Error>;
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the {object} would hold {bytes} bytes, more than the {MAX_RENDERED_BYTES} the operator writes"
)]
pub struct TooLarge {
    pub object: &'static str,
    pub bytes: usize,
}

/// What this process remembers of its writes, by set (lost when it restarts): a key minted for
/// a write that did not succeed, offered again rather than generating another on every retry;
/// and the manifest it last stored, whose times are then its own and not evidence to doubt.
/// The manifest is kept as a keyed hash (random per process, so no one can forge a match):
/// a few bytes a set, not a copy of every set's manifest.
#[derive(Default)]
pub struct WriteMemory {
    sets: Mutex<HashMap<String, SetWrites>>,
    hasher: RandomState,
}

#[derive(Default)]
struct SetWrites {
    unwritten: Option<Arc<KeyMaterial>>,
    manifest: Option<u64>,
    /// Its pending keys' publication times, and its retired keys' expiries.
    times: StoredTimes,
}

impl WriteMemory {
    fn with<T>(&self, set: &str, f: impl FnOnce(&mut SetWrites) -> T) -> Option<T> {
        let mut held = self.sets.lock().ok()?;
        Some(f(held.entry(set.to_string()).or_default()))
    }
    fn matching(
        &self,
        set: &str,
        alg: Algorithm,
        size: Option<RsaKeySize>,
    ) -> Option<Arc<KeyMaterial>> {
        self.with(set, |w| w.unwritten.clone())
            .flatten()
            .filter(|k| k.alg() == alg && (!alg.is_rsa() || k.rsa_size() == size))
    }
    fn keep(&self, set: &str, key: Arc<KeyMaterial>) {
        self.with(set, |w| w.unwritten = Some(key));
    }
    fn written(&self, set: &str, manifest: &Manifest, stored: Option<&ByteString>) {
        self.with(set, |w| {
            if w.unwritten
                .as_ref()
                .is_some_and(|k| manifest.get(k.kid()).is_some())
            {
                w.unwritten = None;
            }
            w.manifest = stored.map(|b| self.hasher.hash_one(&b.0));
            let times = |state: KeyState, at: fn(&KeyRecord) -> Option<Timestamp>| {
                let keys = manifest.keys.iter().filter(|k| k.state == state);
                keys.filter_map(|k| Some((k.kid.clone(), at(k)?))).collect()
            };
            w.times = StoredTimes {
                published: times(KeyState::Pending, |k| k.published_at),
                expires: times(KeyState::Retired, |k| k.expires_at),
                states: manifest
                    .keys
                    .iter()
                    .map(|k| (k.kid.clone(), k.state))
                    .collect(),
            };
        });
    }
    /// The times this process last stored for `set`: a status that lags and a Secret restored
    /// or lost since would otherwise bring back older ones (an earlier publication, or an
    /// expiry from before a retired key signed again).
    pub fn stored_times(&self, set: &str) -> StoredTimes {
        self.with(set, |w| w.times.clone()).unwrap_or_default()
    }

    /// Whether `secret` holds the manifest this process last stored for `set`.
    pub fn stored_last(&self, set: &str, secret: Option<&BTreeMap<String, ByteString>>) -> bool {
        let read = secret.and_then(|d| d.get(layout::MANIFEST));
        let read = read.map(|b| self.hasher.hash_one(&b.0));
        self.with(set, |w| read.is_some() && w.manifest == read)
            .unwrap_or(false)
    }
}

/// What was read of one set: its Secret data, its ConfigMap data, and its status's memory.
pub struct Read<'a> {
    pub secret: Option<&'a BTreeMap<String, ByteString>>,
    pub jwks: Option<&'a BTreeMap<String, String>>,
    pub jwks_key: &'a str,
    pub memory: Vec<KeyRecord>,
    /// `status.rotationRequest`.
    pub remembered_rotation_request: Option<String>,
    pub spec_algorithm: Algorithm,
    /// The Secret holds the manifest this process last stored (`WriteMemory::stored_last`).
    pub own_manifest: bool,
    /// `WriteMemory::stored_times`.
    pub stored: StoredTimes,
}

/// Reads the objects into evidence for the core, and the private material found.
pub fn observe(read: Read<'_>) -> (Evidence, Materials) {
    let manifest = read.secret.map(layout::read_manifest);
    let mut hints = AlgHints {
        spec: Some(read.spec_algorithm),
        ..AlgHints::default()
    };
    let manifest_keys = match &manifest {
        Some(ManifestRead::Read(m)) => &m.keys[..],
        _ => &[],
    };
    for record in manifest_keys.iter().chain(&read.memory) {
        hints.by_kid.insert(record.kid.clone(), record.alg);
    }
    let (secret, materials) = match read.secret {
        Some(data) => {
            let read = layout::read_secret(data, &hints);
            (Some(read.evidence), read.materials)
        }
        None => (None, Materials::default()),
    };
    let published = read
        .jwks
        .and_then(|data| data.get(read.jwks_key))
        .map(|doc| layout::read_jwks(doc))
        .unwrap_or_default();
    let evidence = Evidence {
        secret,
        published,
        memory: read.memory,
        remembered_rotation_request: read.remembered_rotation_request,
        own_manifest: read.own_manifest,
        stored: read.stored,
    };
    (evidence, materials)
}

/// The core's view of one set's objects, writing through `api`.
pub struct SetObjects<'a, O> {
    pub api: O,
    secret: Option<BTreeMap<String, ByteString>>,
    jwks: Option<BTreeMap<String, String>>,
    jwks_key: String,
    materials: Materials,
    write_memory: &'a WriteMemory,
    set: String,
    /// Metadata to repair (our labels were removed): write even if the data is unchanged.
    rewrite_secret: bool,
    rewrite_jwks: bool,
}

impl<'a, O: ObjectApi> SetObjects<'a, O> {
    /// `set` identifies the set for `write_memory`; the data are the objects as read.
    pub fn new(
        api: O,
        set: String,
        secret: Option<BTreeMap<String, ByteString>>,
        jwks: Option<BTreeMap<String, String>>,
        jwks_key: String,
        materials: Materials,
        write_memory: &'a WriteMemory,
    ) -> Self {
        SetObjects {
            api,
            secret,
            jwks,
            jwks_key,
            materials,
            write_memory,
            set,
            rewrite_secret: false,
            rewrite_jwks: false,
        }
    }

    /// Writes the objects at least once, even with unchanged data (to repair their metadata).
    pub fn rewrite(mut self, secret: bool, jwks: bool) -> Self {
        self.rewrite_secret = secret;
        self.rewrite_jwks = jwks;
        self
    }
}

impl<O: ObjectApi> Cluster for SetObjects<'_, O> {
    type Error = O::Error;

    fn now(&mut self) -> Timestamp {
        self.api.now()
    }

    fn mint(&mut self, alg: Algorithm, size: Option<RsaKeySize>) -> Result<NewKey, O::Error> {
        let key = match self.write_memory.matching(&self.set, alg, size) {
            Some(key) => key,
            None => self.api.generate(alg, size)?,
        };
        self.write_memory.keep(&self.set, key.clone());
        let new = NewKey {
            kid: key.kid().to_string(),
            alg,
            rsa_size: key.rsa_size(),
            public_jwk: key.public_jwk().cloned(),
        };
        self.materials.insert(key);
        Ok(new)
    }

    async fn store(&mut self, manifest: &Manifest) -> Result<(), O::Error> {
        let rendered = layout::render_secret(manifest, &self.materials)?;
        check_size("Secret", rendered.values().map(|v| v.0.len()).sum())?;
        // Data keys outside the layout belong to someone else: kept as they are.
        let mut data: BTreeMap<String, ByteString> = self
            .secret
            .iter()
            .flatten()
            .filter(|(k, _)| !layout::is_layout_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        data.extend(rendered);
        if self.secret.as_ref() != Some(&data) || self.rewrite_secret {
            self.api.put_secret(&data).await?;
            self.secret = Some(data);
            self.rewrite_secret = false;
        }
        let stored = self.secret.as_ref().and_then(|d| d.get(layout::MANIFEST));
        self.write_memory.written(&self.set, manifest, stored);
        Ok(())
    }

    async fn publish(&mut self, jwks: &Jwks) -> Result<(), O::Error> {
        // A symmetric set publishes nothing; a ConfigMap left from public keys is kept current.
        if jwks.keys.is_empty() && self.jwks.is_none() {
            return Ok(());
        }
        let document = layout::render_jwks(jwks);
        check_size("JWKS ConfigMap", document.len())?;
        let data = BTreeMap::from([(self.jwks_key.clone(), document)]);
        if self.jwks.as_ref() != Some(&data) || self.rewrite_jwks {
            self.api.put_jwks(&data).await?;
            self.jwks = Some(data);
            self.rewrite_jwks = false;
        }
        Ok(())
    }
}

fn check_size(object: &'static str, bytes: usize) -> Result<(), TooLarge> {
    if bytes > MAX_RENDERED_BYTES {
        return Err(TooLarge { object, bytes });
    }
    Ok(())
}
