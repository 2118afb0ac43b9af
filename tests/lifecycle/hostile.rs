//! The convergence loop that ships (`objects::observe`, `lifecycle::converge` over
//! `objects::SetObjects`, the Secret layout, real keys) against a simulated cluster that is
//! hostile between any two writes: it crashes the operator, refuses writes, edits, corrupts and
//! deletes data keys of the Secret and the ConfigMap, empties and truncates the manifest,
//! restores older copies, plants foreign keys, loses the status, changes the spec and moves the
//! clock. Writes carry the version they read, as on the API server: a write after an edit is a
//! conflict, and the pass starts again from a fresh read.
//!
//! The checker looks at the objects as a signer and a verifier see them (never through the
//! manifest): a signer signs with the key in `private.pem` (or `secret`) under the `kid` file's
//! name; a verifier looks the kid up in the published JWKS (or, for HMAC, `verify.jwks.json`).
//!
//! `HOSTILE_TRACE=1` prints every pass, write and fault of the cases run (for a failing case:
//! `PROPTEST_CASES=1`, which replays the saved regression first).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::api::KeyStatus;
use jwt_key_rotator::keys::{self, Algorithm, KeyError, KeyMaterial, RsaKeySize};
use jwt_key_rotator::layout::{self, LayoutError};
use jwt_key_rotator::lifecycle::{
    self, KeyState, MANIFEST_VERSION, Manifest, ManifestRead, Policy, Stopped,
};
use jwt_key_rotator::objects::{self, ObjectApi, SetObjects, TooLarge, WriteMemory};
use k8s_openapi::ByteString;
use proptest::prelude::*;

use super::{config, policy, secs, t};

const JWKS_KEY: &str = "jwks.json";
/// Real keys are generated once per run; a case that needs more than this sees generation fail.
const POOL: usize = 128;
const RSA_POOL: usize = 48;
/// An API server refuses objects over 1 MiB.
const OBJECT_LIMIT: usize = 1024 * 1024;

type SecretData = BTreeMap<String, ByteString>;

fn trace(line: impl FnOnce() -> String) {
    thread_local! {
        static ON: bool = std::env::var_os("HOSTILE_TRACE").is_some();
    }
    if ON.with(|on| *on) {
        eprintln!("{}", line());
    }
}
type MapData = BTreeMap<String, String>;

struct Pools {
    minted: HashMap<Algorithm, Vec<Arc<KeyMaterial>>>,
    foreign: Vec<Arc<KeyMaterial>>,
}

fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| {
        let make = |alg: Algorithm, n: usize| -> Vec<Arc<KeyMaterial>> {
            (0..n)
                .map(|_| Arc::new(keys::generate(alg, None).expect("test key")))
                .collect()
        };
        let mut minted = HashMap::new();
        for alg in ALGORITHMS {
            let n = if alg.is_rsa() { RSA_POOL } else { POOL };
            minted.insert(alg, make(alg, n));
        }
        let foreign = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::HS256]
            .into_iter()
            .flat_map(|alg| make(alg, 4))
            .collect();
        Pools { minted, foreign }
    })
}

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::HS256,
    Algorithm::HS512,
    Algorithm::RS256,
];

/// Every kind of key, RSA less often: reading an RSA key back costs a hundred times more.
fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        3 => Just(Algorithm::EdDSA),
        3 => Just(Algorithm::ES256),
        2 => Just(Algorithm::HS256),
        1 => Just(Algorithm::HS512),
        1 => Just(Algorithm::RS256),
    ]
}

/// What the cluster holds.
#[derive(Clone, Default)]
struct Objects {
    secret: Option<SecretData>,
    config_map: Option<MapData>,
    status: Vec<KeyStatus>,
    /// `status.rotationRequest`.
    status_rotation_request: Option<String>,
}

/// Between two writes, the cluster may do one of these.
#[derive(Clone, Debug)]
enum Fault {
    /// The operator process dies here: in-memory state is lost.
    Crash,
    /// The API server refuses this write.
    Refuse,
    DeleteSecretEntry(usize),
    CorruptSecretEntry(usize),
    /// A trailing newline, as `echo | base64` leaves it.
    NewlineSecretEntry(usize),
    EmptyManifest,
    TruncateManifest(usize),
    DropManifestRecord(usize),
    DeleteSecret,
    DeleteConfigMap,
    CorruptJwks,
    DropJwksMember(usize),
    RestoreSecret(usize),
    RestoreConfigMap(usize),
    RestoreBoth(usize),
    PlantJwk(usize),
    /// A JWKS member's key is replaced by a foreign one under the same kid.
    ForgeJwk(usize, usize),
    PlantPendingMaterial(usize),
    LoseStatus,
    /// A newer operator wrote the manifest (a later version), then was rolled back; the
    /// test rolls the manifest back after the operator's next pass.
    NewerManifest,
    /// A record's state edited by hand (0 pending, 1 active, 2 retired), on a custom resource
    /// recreated (its status lost) or not.
    EditState {
        record: usize,
        state: usize,
        lose_status: bool,
    },
    /// A retired key's public part removed everywhere by hand: from its record, from the
    /// JWKS, and the status lost (what rule 8 answers for). A key with material left would
    /// only lose its publication: with a later restore of both objects on top, that is
    /// beyond what any evidence can tell.
    ForgetPublicPart(usize),
    /// The next n status writes are refused: the status lags the Secret. Not for good (as with
    /// a missing RBAC rule): a status stale since bootstrap, with edits on top, is an open case
    /// (issue 8's note).
    RefuseStatus(u8),
    /// A record's time edited back (the status kept): field 0 activatedAt, 1 retiredAt (its
    /// expiresAt moved back as much). Not publishedAt: while the status lags a publication
    /// (its write refused), nothing bounds how far back one may be moved; the status has no
    /// time of its own to tell. Nor createdAt: while the status lags a new key, one moved
    /// before every key the status knows reads as forgotten (rule 3b). Both are open cases.
    EditTimeBack {
        record: usize,
        field: usize,
        back: i64,
    },
    /// Two changes at once.
    Both(Box<Fault>, Box<Fault>),
    /// The custom resource is recreated (its status lost) and a manifest record's time is
    /// edited ahead: field 0 createdAt, 1 publishedAt, 2 activatedAt, 3 retiredAt.
    EditTimeAhead {
        record: usize,
        field: usize,
        ahead: i64,
    },
}

#[derive(Clone, Debug)]
enum Event {
    /// Time passes; the operator runs at every wake-up it asked for.
    Advance(i64),
    /// The operator is down while time passes.
    Down(i64),
    /// The operator's clock is set back.
    JumpBack(i64),
    Revoke(usize),
    RequestRotation,
    ChangeAlgorithm(Algorithm),
    ChangeTokenTtl(i64),
    /// The cluster changes under the operator, then the operator reacts.
    Between(Fault),
    /// The next pass meets this fault before its n-th write.
    During(usize, Fault),
}

/// Mostly one change between two passes; sometimes two (a backup tool restores the Secret while
/// the custom resource is recreated from Git).
fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        9 => one_fault(),
        1 => (one_fault(), one_fault()).prop_map(|(a, b)| Fault::Both(Box::new(a), Box::new(b))),
    ]
}

fn one_fault() -> impl Strategy<Value = Fault> {
    let n = 0usize..16;
    prop_oneof![
        2 => Just(Fault::Crash),
        2 => Just(Fault::Refuse),
        2 => n.clone().prop_map(Fault::DeleteSecretEntry),
        2 => n.clone().prop_map(Fault::CorruptSecretEntry),
        2 => n.clone().prop_map(Fault::NewlineSecretEntry),
        1 => Just(Fault::EmptyManifest),
        1 => (0usize..400).prop_map(Fault::TruncateManifest),
        1 => n.clone().prop_map(Fault::DropManifestRecord),
        1 => Just(Fault::DeleteSecret),
        1 => Just(Fault::DeleteConfigMap),
        1 => Just(Fault::CorruptJwks),
        1 => n.clone().prop_map(Fault::DropJwksMember),
        1 => n.clone().prop_map(Fault::RestoreSecret),
        1 => n.clone().prop_map(Fault::RestoreConfigMap),
        1 => n.clone().prop_map(Fault::RestoreBoth),
        1 => n.clone().prop_map(Fault::PlantJwk),
        1 => (n.clone(), n.clone()).prop_map(|(m, f)| Fault::ForgeJwk(m, f)),
        1 => n.clone().prop_map(Fault::PlantPendingMaterial),
        1 => Just(Fault::LoseStatus),
        1 => Just(Fault::NewerManifest),
        1 => (n.clone(), 0usize..3, any::<bool>()).prop_map(|(record, state, lose_status)| {
            Fault::EditState { record, state, lose_status }
        }),
        1 => n.clone().prop_map(Fault::ForgetPublicPart),
        1 => (1u8..4).prop_map(Fault::RefuseStatus),
        1 => (n.clone(), 0usize..2, 1i64..100_000)
            .prop_map(|(record, field, back)| Fault::EditTimeBack { record, field, back }),
        1 => (n.clone(), 0usize..4, prop_oneof![0i64..120, 0i64..40_000_000])
            .prop_map(|(record, field, ahead)| Fault::EditTimeAhead { record, field, ahead }),
    ]
}

fn event(ri: i64) -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (0..ri / 2 + 1).prop_map(Event::Advance),
        3 => (0..3 * ri).prop_map(Event::Advance),
        1 => (0..4 * ri).prop_map(Event::Down),
        1 => (1..ri + 1).prop_map(Event::JumpBack),
        1 => (0usize..8).prop_map(Event::Revoke),
        1 => Just(Event::RequestRotation),
        1 => algorithm().prop_map(Event::ChangeAlgorithm),
        1 => (1..ri * 4).prop_map(Event::ChangeTokenTtl),
        6 => fault().prop_map(Event::Between),
        4 => ((0usize..4), fault()).prop_map(|(n, f)| Event::During(n, f)),
    ]
}

/// A valid spec (as `validate()` demands) and the events that befall it.
fn scenario() -> impl Strategy<Value = (Policy, Vec<Event>)> {
    (2i64..300, algorithm())
        .prop_flat_map(|(ri, alg)| (Just(ri), Just(alg), 1..ri))
        .prop_flat_map(|(ri, alg, pl)| {
            (
                Just(ri),
                Just(alg),
                Just(pl),
                0..=pl,
                1i64..4 * ri,
                0i64..ri,
            )
        })
        .prop_flat_map(|(ri, alg, pl, pd, ttl, skew)| {
            (
                Just(policy(alg, ri, pl, pd, ttl, skew)),
                prop::collection::vec(event(ri), 1..30),
            )
        })
}

#[derive(Debug)]
enum SimError {
    Conflict,
    Crash,
    Refused,
    /// Key generation (the pool ran dry), rendering or the size bound refused the write.
    Other,
}

impl From<KeyError> for SimError {
    fn from(_: KeyError) -> Self {
        SimError::Other
    }
}
impl From<LayoutError> for SimError {
    fn from(_: LayoutError) -> Self {
        SimError::Other
    }
}
impl From<TooLarge> for SimError {
    fn from(_: TooLarge) -> Self {
        SimError::Other
    }
}

/// The simulated cluster, the spec and the checker.
struct World {
    /// Real time, which the checker uses.
    now: Timestamp,
    /// How far the operator's clock is behind real time: it only grows (a clock set back that
    /// stays behind). A clock ahead of real time is no fault the operator can see; the README
    /// says to budget for it in clockSkew and publishLead.
    skew: SignedDuration,
    objects: Objects,
    /// Versions, bumped by every change: a write carrying an older one is a conflict.
    secret_version: u64,
    map_version: u64,
    /// Copies after every operator write, for restores.
    history: Vec<Objects>,
    policy: Policy,
    minted: HashMap<Algorithm, usize>,
    minted_kids: BTreeSet<String>,
    /// The last key generated since the operator process started, and whether a Secret write
    /// holding it was acknowledged.
    last_minted: Option<(Algorithm, String, bool)>,
    /// Faults waiting for the next pass's n-th write.
    during: Vec<(usize, Fault)>,
    writes_this_pass: usize,
    /// This pass read a manifest of a newer version: it must write nothing.
    read_newer: bool,
    /// A pass read objects that named the spec's rotation request (as honoured), and a later
    /// one read objects that no longer did: the operator may rightly honour it again.
    request_named: bool,
    request_forgotten: bool,
    /// Passes that read objects where the key that signed is gone (a key must sign at once).
    emergency_reads: usize,
    /// Faults that hit this pass's read (after it read, before a write).
    during_hit: usize,
    /// Status writes still to refuse.
    refuse_status: u8,
    checker: Checker,
}

/// One pass's view of the cluster: what it read, and the way to write.
struct SimApi<'w> {
    world: &'w mut World,
    secret_version: u64,
    map_version: u64,
}

impl ObjectApi for SimApi<'_> {
    type Error = SimError;

    fn now(&mut self) -> Timestamp {
        // Every call is a step of a few milliseconds: writes take time.
        self.world.now += SignedDuration::from_millis(3);
        self.world.now - self.world.skew
    }

    fn generate(
        &mut self,
        alg: Algorithm,
        _size: Option<RsaKeySize>,
    ) -> Result<Arc<KeyMaterial>, KeyError> {
        // A key minted for a write that failed is offered again (`WriteMemory`) until the process
        // restarts: generating another would leave one more key per failed write.
        if let Some((prev, kid, false)) = &self.world.last_minted
            && *prev == alg
        {
            let failure = format!(
                "a new {alg:?} key was generated at {} while {kid}, generated for a write that failed, was still held",
                self.world.now
            );
            self.world.checker.failure.get_or_insert(failure);
        }
        let used = self.world.minted.entry(alg).or_insert(0);
        let key = pools().minted[&alg].get(*used).cloned();
        *used += 1;
        let key = key.ok_or(KeyError::Generate {
            alg,
            reason: "the test's key pool is exhausted".into(),
        })?;
        self.world.minted_kids.insert(key.kid().to_string());
        self.world.last_minted = Some((alg, key.kid().to_string(), false));
        Ok(key)
    }

    async fn put_secret(&mut self, data: &SecretData) -> Result<(), SimError> {
        let old = self.world.objects.secret.clone().unwrap_or_default();
        trace(|| {
            let changed: Vec<_> = data
                .keys()
                .filter(|k| old.get(*k) != data.get(*k))
                .collect();
            format!("  write Secret at {}: {changed:?}", self.world.now)
        });
        self.world.before_write()?;
        if self.secret_version != self.world.secret_version {
            return Err(SimError::Conflict);
        }
        self.world.checker.verifiable_before_write = Seen::of(&self.world.objects).verifiable;
        self.world.objects.secret = Some(data.clone());
        self.world.secret_version += 1;
        if let Some((_, kid, written)) = self.world.last_minted.as_mut() {
            let stored = manifest_of(&self.world.objects).is_some_and(|m| m.get(kid).is_some());
            *written |= stored;
        }
        self.secret_version = self.world.secret_version;
        self.world.operator_wrote(Wrote::Secret);
        Ok(())
    }

    async fn put_jwks(&mut self, data: &MapData) -> Result<(), SimError> {
        trace(|| {
            let kids: Vec<String> = data
                .get(JWKS_KEY)
                .map(|d| {
                    layout::read_jwks(d)
                        .into_iter()
                        .map(|k| k.kid[..6].to_string())
                        .collect()
                })
                .unwrap_or_default();
            format!("  write JWKS at {}: {kids:?}", self.world.now)
        });
        self.world.before_write()?;
        if self.map_version != self.world.map_version {
            return Err(SimError::Conflict);
        }
        self.world.checker.verifiable_before_write = Seen::of(&self.world.objects).verifiable;
        self.world.objects.config_map = Some(data.clone());
        self.world.map_version += 1;
        self.map_version = self.world.map_version;
        self.world.operator_wrote(Wrote::Jwks);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Secret,
    Jwks,
}

impl World {
    fn new(policy: Policy) -> Self {
        World {
            now: t(0),
            skew: SignedDuration::ZERO,
            objects: Objects::default(),
            secret_version: 0,
            map_version: 0,
            history: Vec::new(),
            policy,
            minted: HashMap::new(),
            minted_kids: BTreeSet::new(),
            last_minted: None,
            during: Vec::new(),
            writes_this_pass: 0,
            read_newer: false,
            request_named: false,
            request_forgotten: false,
            emergency_reads: 0,
            during_hit: 0,
            refuse_status: 0,
            checker: Checker::default(),
        }
    }

    fn before_write(&mut self) -> Result<(), SimError> {
        if self.read_newer {
            let failure = format!(
                "wrote at {} over a manifest of a newer version it cannot read",
                self.now
            );
            self.checker.failure.get_or_insert(failure);
        }
        let n = self.writes_this_pass;
        self.writes_this_pass += 1;
        let due: Vec<Fault> = self
            .during
            .iter()
            .filter(|(at, _)| *at == n)
            .map(|(_, f)| f.clone())
            .collect();
        self.during.retain(|(at, _)| *at != n);
        self.during_hit += due.len();
        for f in due {
            match f {
                Fault::Crash => return Err(SimError::Crash),
                Fault::Refuse => return Err(SimError::Refused),
                f => self.apply(&f),
            }
        }
        Ok(())
    }

    /// Checks what the operator just wrote; the first failure is kept for the test to report.
    fn operator_wrote(&mut self, what: Wrote) {
        self.history.push(self.objects.clone());
        if self.history.len() > 12 {
            self.history.remove(0);
        }
        let seen = Seen::of(&self.objects);
        let checked = self.checker.operator_wrote(
            what,
            &seen,
            &self.objects,
            &self.policy,
            &self.minted_kids,
            self.now,
        );
        if let Err(e) = checked {
            self.checker.failure.get_or_insert(e.to_string());
        }
    }

    /// A change made by someone else.
    fn apply(&mut self, fault: &Fault) {
        trace(|| format!("fault at {}: {fault:?}", self.now));
        let changed = fault_changes(self, fault);
        if changed.0 {
            self.secret_version += 1;
        }
        if changed.1 {
            self.map_version += 1;
        }
        let seen = Seen::of(&self.objects);
        self.checker
            .someone_changed(&seen, &self.objects, &self.policy, self.now, changed.1);
    }
}

/// Applies a fault; returns whether the Secret and the ConfigMap changed.
fn fault_changes(world: &mut World, fault: &Fault) -> (bool, bool) {
    let objects = &mut world.objects;
    let pick = |n: usize, len: usize| (len > 0).then(|| n % len);
    match fault {
        Fault::Crash | Fault::Refuse => (false, false),
        Fault::Both(a, b) => {
            let (a, b) = (fault_changes(world, a), fault_changes(world, b));
            (a.0 || b.0, a.1 || b.1)
        }
        Fault::DeleteSecretEntry(n)
        | Fault::CorruptSecretEntry(n)
        | Fault::NewlineSecretEntry(n) => {
            let Some(data) = objects.secret.as_mut() else {
                return (false, false);
            };
            let Some(i) = pick(*n, data.len()) else {
                return (false, false);
            };
            let Some(key) = data.keys().nth(i).cloned() else {
                return (false, false);
            };
            match fault {
                Fault::DeleteSecretEntry(_) => {
                    data.remove(&key);
                }
                Fault::CorruptSecretEntry(_) => {
                    data.insert(key, ByteString(b"\x00garbage".to_vec()));
                }
                _ => {
                    if let Some(v) = data.get_mut(&key) {
                        v.0.push(b'\n');
                    }
                }
            }
            (true, false)
        }
        Fault::EmptyManifest | Fault::TruncateManifest(_) | Fault::DropManifestRecord(_) => {
            let Some(data) = objects.secret.as_mut() else {
                return (false, false);
            };
            let Some(bytes) = data.get(layout::MANIFEST).map(|b| b.0.clone()) else {
                return (false, false);
            };
            let edited = match fault {
                Fault::EmptyManifest => b"{}".to_vec(),
                Fault::TruncateManifest(n) => bytes[..(*n).min(bytes.len())].to_vec(),
                Fault::DropManifestRecord(n) => match serde_json::from_slice::<Manifest>(&bytes) {
                    Ok(mut m) if !m.keys.is_empty() => {
                        let i = n % m.keys.len();
                        m.keys.remove(i);
                        m.to_json().into_bytes()
                    }
                    _ => return (false, false),
                },
                _ => return (false, false),
            };
            data.insert(layout::MANIFEST.to_string(), ByteString(edited));
            (true, false)
        }
        Fault::DeleteSecret => (objects.secret.take().is_some(), false),
        Fault::DeleteConfigMap => (false, objects.config_map.take().is_some()),
        Fault::CorruptJwks => {
            let Some(map) = objects.config_map.as_mut() else {
                return (false, false);
            };
            map.insert(JWKS_KEY.to_string(), "{\"keys\":[".to_string());
            (false, true)
        }
        Fault::DropJwksMember(n) => {
            let Some(map) = objects.config_map.as_mut() else {
                return (false, false);
            };
            let Some(doc) = map.get(JWKS_KEY) else {
                return (false, false);
            };
            let mut jwks: serde_json::Value = match serde_json::from_str(doc) {
                Ok(v) => v,
                Err(_) => return (false, false),
            };
            let Some(members) = jwks.get_mut("keys").and_then(|k| k.as_array_mut()) else {
                return (false, false);
            };
            let Some(i) = pick(*n, members.len()) else {
                return (false, false);
            };
            members.remove(i);
            map.insert(JWKS_KEY.to_string(), jwks.to_string());
            (false, true)
        }
        Fault::RestoreSecret(n) | Fault::RestoreConfigMap(n) | Fault::RestoreBoth(n) => {
            let Some(i) = pick(*n, world.history.len()) else {
                return (false, false);
            };
            let old = world.history[i].clone();
            let secret = !matches!(fault, Fault::RestoreConfigMap(_));
            let map = !matches!(fault, Fault::RestoreSecret(_));
            if secret {
                objects.secret = old.secret;
            }
            if map {
                objects.config_map = old.config_map;
            }
            (secret, map)
        }
        Fault::PlantJwk(n) => {
            let foreign = &pools().foreign[n % pools().foreign.len()];
            let Some(jwk) = foreign.public_jwk() else {
                return (false, false);
            };
            let map = objects.config_map.get_or_insert_with(BTreeMap::new);
            let doc = map
                .get(JWKS_KEY)
                .cloned()
                .unwrap_or_else(|| "{\"keys\":[]}".into());
            let mut jwks: serde_json::Value =
                serde_json::from_str(&doc).unwrap_or(serde_json::json!({"keys": []}));
            if let Some(keys) = jwks.get_mut("keys").and_then(|k| k.as_array_mut()) {
                keys.push(serde_json::to_value(jwk).unwrap_or_default());
            }
            map.insert(JWKS_KEY.to_string(), jwks.to_string());
            (false, true)
        }
        Fault::ForgeJwk(member, n) => {
            let foreign = &pools().foreign[n % pools().foreign.len()];
            let Some(jwk) = foreign.public_jwk() else {
                return (false, false);
            };
            let Some(map) = objects.config_map.as_mut() else {
                return (false, false);
            };
            let Some(mut jwks) = map
                .get(JWKS_KEY)
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            else {
                return (false, false);
            };
            let Some(members) = jwks.get_mut("keys").and_then(|k| k.as_array_mut()) else {
                return (false, false);
            };
            let Some(i) = pick(*member, members.len()) else {
                return (false, false);
            };
            let mut forged = serde_json::to_value(jwk).unwrap_or_default();
            for field in ["kid", "alg"] {
                forged[field] = members[i][field].clone();
            }
            members[i] = forged;
            map.insert(JWKS_KEY.to_string(), jwks.to_string());
            (false, true)
        }
        Fault::PlantPendingMaterial(n) => {
            let foreign = &pools().foreign[n % pools().foreign.len()];
            let Some(data) = objects.secret.as_mut() else {
                return (false, false);
            };
            let bytes = foreign.private_pem().unwrap_or(foreign.private_jwk_json());
            data.insert(
                "pending.private.pem".into(),
                ByteString(bytes.as_bytes().to_vec()),
            );
            data.insert(
                "pending.kid".into(),
                ByteString(foreign.kid().as_bytes().to_vec()),
            );
            (true, false)
        }
        Fault::EditTimeAhead {
            record,
            field,
            ahead,
        } => {
            let at = world.now - world.skew + secs(*ahead);
            let Some(data) = objects.secret.as_mut() else {
                return (false, false);
            };
            let parsed = data
                .get(layout::MANIFEST)
                .and_then(|b| serde_json::from_slice::<Manifest>(&b.0).ok());
            let Some(mut m) = parsed.filter(|m| !m.keys.is_empty()) else {
                return (false, false);
            };
            let i = record % m.keys.len();
            let k = &mut m.keys[i];
            match field {
                0 => k.created_at = at,
                1 => k.published_at = Some(at),
                2 => k.activated_at = Some(at),
                _ => k.retired_at = Some(at),
            }
            data.insert(
                layout::MANIFEST.to_string(),
                ByteString(m.to_json().into_bytes()),
            );
            objects.status.clear();
            objects.status_rotation_request = None;
            (true, false)
        }
        Fault::NewerManifest => (set_manifest_version(objects, MANIFEST_VERSION + 1), false),
        Fault::RefuseStatus(n) => {
            world.refuse_status = world.refuse_status.max(*n);
            (false, false)
        }
        Fault::EditTimeBack {
            record,
            field,
            back,
        } => {
            let back = secs(*back);
            let edited = edit_record(objects, *record, |k| match field {
                0 => k.activated_at = k.activated_at.map(|t| t - back),
                _ => {
                    k.retired_at = k.retired_at.map(|t| t - back);
                    k.expires_at = k.expires_at.map(|t| t - back);
                }
            });
            (edited.is_some(), false)
        }
        Fault::EditState {
            record,
            state,
            lose_status,
        } => {
            let state = [KeyState::Pending, KeyState::Active, KeyState::Retired][state % 3];
            let edited = edit_record(objects, *record, |k| k.state = state).is_some();
            if edited && *lose_status {
                objects.status.clear();
                objects.status_rotation_request = None;
            }
            (edited, false)
        }
        Fault::ForgetPublicPart(n) => {
            let retired: Vec<String> = manifest_of(objects)
                .map(|m| m.keys.into_iter().filter(|k| k.state == KeyState::Retired))
                .into_iter()
                .flatten()
                .map(|k| k.kid)
                .collect();
            let Some(kid) = retired
                .get(n.checked_rem(retired.len()).unwrap_or(0))
                .cloned()
            else {
                return (false, false);
            };
            let Some(i) =
                manifest_of(objects).and_then(|m| m.keys.iter().position(|k| k.kid == kid))
            else {
                return (false, false);
            };
            edit_record(objects, i, |k| k.public_jwk = None);
            objects.status.clear();
            objects.status_rotation_request = None;
            // Without material to derive it from, the key's tokens can no longer be verified:
            // the edit's doing, not the operator's.
            if !Seen::of(objects).material.contains(&kid) {
                world.checker.exempt.insert(kid.clone());
            }
            let Some(doc) = objects
                .config_map
                .as_mut()
                .and_then(|m| m.get_mut(JWKS_KEY))
            else {
                return (true, false);
            };
            let mut jwks = layout::read_jwks(doc);
            jwks.retain(|k| k.kid != kid);
            *doc = jwt_key_rotator::keys::Jwks { keys: jwks }.to_json();
            (true, true)
        }
        Fault::LoseStatus => {
            objects.status.clear();
            objects.status_rotation_request = None;
            (false, false)
        }
    }
}

/// The objects as a signer and a verifier see them.
struct Seen {
    /// The kid a signer puts in its tokens, when the `kid` file names the key in the signing files.
    signable: Option<String>,
    /// Kids a verifier finds: the ConfigMap's JWKS and, for HMAC, the Secret's verification set.
    verifiable: BTreeSet<String>,
    /// Kids whose genuine public JWK the ConfigMap holds.
    in_jwks: BTreeSet<String>,
    /// Every kid with private material anywhere in the Secret.
    material: BTreeSet<String>,
    /// The symmetric ones among them.
    symmetric: BTreeSet<String>,
}

impl Seen {
    fn of(objects: &Objects) -> Seen {
        let secret = objects.secret.clone().unwrap_or_default();
        let kid_of = |file: &str| secret.get(file).and_then(|b| kid_of_bytes(&b.0));
        let named = secret
            .get(layout::KID)
            .and_then(|k| String::from_utf8(k.0.clone()).ok());
        let in_slot = kid_of(layout::PRIVATE_PEM).or_else(|| kid_of(layout::SECRET));
        let signable = match (named, in_slot) {
            (Some(named), Some(slot)) if named == slot => Some(slot),
            _ => None,
        };
        let in_jwks: BTreeSet<String> = objects
            .config_map
            .as_ref()
            .and_then(|m| m.get(JWKS_KEY))
            .map(|doc| {
                // A member verifies the key's tokens only if it is that key: its kid is its
                // thumbprint.
                let jwks = layout::read_jwks(doc).into_iter();
                let genuine = jwks.filter(|k| keys::kid_of_public_jwk(k).as_ref() == Some(&k.kid));
                genuine.map(|k| k.kid).collect()
            })
            .unwrap_or_default();
        let verify_set: Vec<String> = secret
            .get(layout::VERIFY_JWKS)
            .and_then(|doc| serde_json::from_slice::<serde_json::Value>(&doc.0).ok())
            .and_then(|doc| doc.get("keys").and_then(|k| k.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|member| kid_of_bytes(member.to_string().as_bytes()))
            .collect();
        let mut verifiable = in_jwks.clone();
        verifiable.extend(verify_set.iter().cloned());
        let symmetric = verify_set
            .iter()
            .cloned()
            .chain(kid_of(layout::SECRET))
            .chain(kid_of("pending.secret"))
            .collect();
        let files = ["private.pem", "private.jwk.json", "secret"];
        let material = files
            .iter()
            .flat_map(|f| [f.to_string(), format!("pending.{f}")])
            .filter_map(|f| kid_of(&f))
            .chain(verify_set)
            .collect();
        Seen {
            signable,
            verifiable,
            in_jwks,
            material,
            symmetric,
        }
    }
}

/// The thumbprint of the key in a file, whatever its encoding (cached: the same bytes come
/// back thousands of times).
fn kid_of_bytes(bytes: &[u8]) -> Option<String> {
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<Vec<u8>, Option<String>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    if let Some(hit) = CACHE.with(|c| c.borrow().get(bytes).cloned()) {
        return hit;
    }
    let encoded = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
    ];
    let parsed = encoded
        .into_iter()
        .find_map(|alg| keys::parse_private(alg, bytes).ok())
        .or_else(|| keys::hmac_from_secret(Algorithm::HS256, bytes).ok())
        .map(|k| k.kid().to_string());
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.len() > 20_000 {
            cache.clear();
        }
        cache.insert(bytes.to_vec(), parsed.clone());
    });
    parsed
}

/// What the checker remembers.
#[derive(Default)]
struct Checker {
    signable: Option<String>,
    /// Since when (real time) `signable` is the signing key.
    signable_since: Option<Timestamp>,
    ever_signable: BTreeSet<String>,
    /// The key the operator last made the signing key.
    active: Option<String>,
    /// Each key that signed must be verifiable until then (its end of signing + retention).
    verifiable_until: BTreeMap<String, Timestamp>,
    /// Since when each kid is verifiable, as the operator can know it.
    published_since: BTreeMap<String, Timestamp>,
    /// A key must sign at once in this pass (bootstrap, revocation, material lost everywhere).
    emergency: bool,
    /// Keys a fault made signable that no record names (nothing can vouch for them), and
    /// symmetric keys a fault destroyed (their secret was the only way to verify them).
    exempt: BTreeSet<String>,
    symmetric: BTreeSet<String>,
    /// Someone changed the ConfigMap since the operator last read or wrote it.
    stale_map: bool,
    /// Kids of every manifest the operator wrote: a key is recorded before it is published.
    stored: BTreeSet<String>,
    /// What verifiers could find just before the operator's current write.
    verifiable_before_write: BTreeSet<String>,
    failure: Option<String>,
}

impl Checker {
    /// At the start of a pass, what the operator reads. A pass blocked by a newer manifest
    /// writes and records nothing: a gap in the JWKS that only such a pass read, and that a
    /// restore closed before the operator could act, is not one it can answer for (a known
    /// limit, in the README).
    fn operator_reads(&mut self, seen: &Seen, policy: &Policy, blocked: bool) {
        self.stale_map = false;
        if !blocked {
            self.published_since
                .retain(|kid, _| seen.verifiable.contains(kid));
        }
        self.emergency = match &self.active {
            None => true,
            Some(active) => {
                policy.revoked_kids.contains(active)
                    || !seen.material.contains(active)
                    || self.exempt.contains(active)
            }
        };
    }

    fn track(&mut self, seen: &Seen, policy: &Policy, now: Timestamp) {
        for kid in &seen.verifiable {
            self.published_since.entry(kid.clone()).or_insert(now);
        }
        if self.signable != seen.signable {
            if let Some(old) = self.signable.take() {
                let until = now + policy.retention();
                let entry = self.verifiable_until.entry(old).or_insert(until);
                *entry = (*entry).max(until);
            }
            self.signable = seen.signable.clone();
            self.signable_since = Some(now);
        }
    }

    fn someone_changed(
        &mut self,
        seen: &Seen,
        objects: &Objects,
        policy: &Policy,
        now: Timestamp,
        map_changed: bool,
    ) {
        self.stale_map |= map_changed;
        self.symmetric.extend(seen.symmetric.iter().cloned());
        let destroyed = self
            .symmetric
            .iter()
            .filter(|k| !seen.material.contains(*k));
        self.exempt.extend(destroyed.cloned());
        if let Some(kid) = &seen.signable
            && self.signable.as_ref() != Some(kid)
            && !recorded(objects, kid)
        {
            self.exempt.insert(kid.clone());
        }
        // A key that signed, that no record names any more and that the objects do not prove
        // the set's own (its material and its genuine JWK together, rule 2), is one the operator
        // cannot know.
        // A symmetric key's material and its verification set are one object: no proof.
        let unknowable: Vec<String> = self
            .verifiable_until
            .keys()
            .chain(&self.signable)
            .filter(|k| !recorded(objects, k))
            .filter(|k| !(seen.material.contains(*k) && seen.in_jwks.contains(*k)))
            .cloned()
            .collect();
        self.exempt.extend(unknowable);
        self.track(seen, policy, now);
    }

    fn operator_wrote(
        &mut self,
        what: Wrote,
        seen: &Seen,
        objects: &Objects,
        policy: &Policy,
        minted: &BTreeSet<String>,
        now: Timestamp,
    ) -> Result<(), TestCaseError> {
        let before = self.signable.clone();
        self.symmetric.extend(seen.symmetric.iter().cloned());
        self.track(seen, policy, now);
        // A write answers for what its own object holds: the JWKS for public keys, the Secret's
        // verification set for symmetric ones.
        let (symmetric, exempt) = (self.symmetric.clone(), self.exempt.clone());
        let answers_for = |kid: &String| match what {
            Wrote::Jwks => !symmetric.contains(kid),
            Wrote::Secret => symmetric.contains(kid),
        };
        if what == Wrote::Secret {
            let keys = manifest_of(objects).map(|m| m.keys).unwrap_or_default();
            let active: Vec<_> = keys
                .iter()
                .filter(|k| k.state == KeyState::Active)
                .collect();
            prop_assert!(
                active.len() <= 1,
                "two keys active at {}: {:?}",
                now,
                active
            );
            // Every key kept for verifiers has a public part to publish (or is symmetric).
            let unpublishable: Vec<_> = keys
                .iter()
                .filter(|k| !k.alg.is_symmetric() && k.public_jwk.is_none())
                .map(|k| &k.kid)
                .collect();
            prop_assert!(
                unpublishable.is_empty(),
                "kept keys with no public part at {}: {:?}",
                now,
                unpublishable
            );
            // A set holds at most MAX_KEYS keys: none is created beyond them (keys restored or
            // recovered may outnumber them until they expire), unless no key can sign: one must.
            let created: Vec<_> = keys
                .iter()
                .filter(|k| minted.contains(&k.kid) && !self.stored.contains(&k.kid))
                .map(|k| &k.kid)
                .collect();
            prop_assert!(
                keys.len() <= lifecycle::MAX_KEYS || created.is_empty() || self.emergency,
                "{} keys held at {} with {:?} created",
                keys.len(),
                now,
                created
            );
            self.stored.extend(keys.into_iter().map(|k| k.kid));
        }
        if what == Wrote::Jwks {
            self.stale_map = false;
            let planted: Vec<_> = seen.verifiable.difference(minted).collect();
            prop_assert!(
                planted.is_empty(),
                "published keys it never created: {:?}",
                planted
            );
            // The private part is stored (and recorded) before the public part is published: a
            // crash between the two writes must not leave a published key nobody holds. A key
            // that must sign at once is the exception: verifiers must have it first.
            let stored = &self.stored;
            let at_once = self.emergency;
            let unstored: Vec<_> = seen
                .in_jwks
                .iter()
                .filter(|k| !stored.contains(*k) && !recorded(objects, k))
                .collect();
            prop_assert!(
                unstored.len() <= usize::from(at_once),
                "published {:?} at {} before storing them",
                unstored,
                now
            );
            let unstored: Vec<_> = unstored.into_iter().filter(|_| !at_once).collect();
            prop_assert!(
                unstored.is_empty(),
                "published {:?} at {} before storing it",
                unstored,
                now
            );
        }
        let vouched = |kid: &&String| !policy.revoked_kids.contains(*kid) && !exempt.contains(*kid);
        if let Some(kid) = seen.signable.as_ref().filter(vouched) {
            // A key the operator just made the signing key, or one its JWKS write left out.
            let moved_here = before.as_ref() != Some(kid) && what == Wrote::Secret;
            let fault_unseen = self.stale_map && !symmetric.contains(kid);
            if (moved_here && !fault_unseen) || answers_for(kid) {
                prop_assert!(
                    seen.verifiable.contains(kid),
                    "{} signs at {} but verifiers cannot find it",
                    kid,
                    now
                );
            }
            if before.as_ref() != Some(kid) {
                self.signing_starts(kid, policy, now)?;
            }
            // A key a fault put in the slot and the operator kept signing is its signing key
            // now: revoking it makes the next key sign at once.
            self.active = Some(kid.clone());
        } else if let Some(kid) = seen.signable.as_ref() {
            // A key nothing vouches for is not checked, but it is what signs now: revoking it
            // makes the next key sign at once.
            self.active = Some(kid.clone());
        }
        // Every key that signed stays verifiable for its retention, unless revoked: no write
        // takes it out (one an edit took out comes back by the end of the pass, `pass_ended`).
        let was = std::mem::take(&mut self.verifiable_before_write);
        for (kid, until) in &self.verifiable_until {
            let needed = *until > now && vouched(&kid) && answers_for(kid) && was.contains(kid);
            prop_assert!(
                !needed || seen.verifiable.contains(kid),
                "{} signed until {} - retention but left the published keys at {}",
                kid,
                until,
                now
            );
        }
        if what == Wrote::Secret {
            let bytes: usize = objects
                .secret
                .iter()
                .flatten()
                .map(|(k, v)| k.len() + v.0.len())
                .sum();
            prop_assert!(bytes < OBJECT_LIMIT, "the Secret holds {} bytes", bytes);
            if let Some(before) = before
                && seen.signable.as_ref() != Some(&before)
                && !policy.revoked_kids.contains(&before)
                && !self.exempt.contains(&before)
            {
                prop_assert!(
                    retired_in(objects, &before),
                    "{} stopped signing at {} but is not kept as retired",
                    before,
                    now
                );
            }
        }
        Ok(())
    }

    /// At the end of a pass that converged, every key that signed is verifiable for its
    /// retention, unless revoked or beyond what the operator can know.
    fn pass_ended(
        &self,
        seen: &Seen,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<(), TestCaseError> {
        for (kid, until) in &self.verifiable_until {
            let needed =
                *until > now && !policy.revoked_kids.contains(kid) && !self.exempt.contains(kid);
            prop_assert!(
                !needed || seen.verifiable.contains(kid),
                "{} signed until {} - retention but is not published after the pass at {}",
                kid,
                until,
                now
            );
        }
        Ok(())
    }

    /// A key that signs for the first time was published `publishLead` before, unless a key
    /// had to sign at once.
    fn signing_starts(
        &mut self,
        kid: &str,
        policy: &Policy,
        now: Timestamp,
    ) -> Result<(), TestCaseError> {
        self.active = Some(kid.to_string());
        if !self.ever_signable.insert(kid.to_string()) || self.emergency {
            self.emergency = false;
            return Ok(());
        }
        let since = self.published_since.get(kid).copied();
        prop_assert!(
            since.is_some_and(|s| s + policy.publish_lead <= now),
            "{} signs at {} but was published since {:?} (lead {})",
            kid,
            now,
            since,
            policy.publish_lead
        );
        Ok(())
    }
}

/// Edits the manifest's record `n` (modulo their number); the edited record's kid.
fn edit_record(
    objects: &mut Objects,
    n: usize,
    edit: impl FnOnce(&mut lifecycle::KeyRecord),
) -> Option<String> {
    let data = objects.secret.as_mut()?;
    let bytes = data.get(layout::MANIFEST)?;
    let mut m = serde_json::from_slice::<Manifest>(&bytes.0).ok()?;
    let len = m.keys.len();
    let k = m.keys.get_mut(n.checked_rem(len)?)?;
    edit(k);
    let kid = k.kid.clone();
    data.insert(
        layout::MANIFEST.into(),
        ByteString(m.to_json().into_bytes()),
    );
    Some(kid)
}

/// Rewrites the manifest's `version`; whether there was a manifest to rewrite.
fn set_manifest_version(objects: &mut Objects, version: u32) -> bool {
    let Some(data) = objects.secret.as_mut() else {
        return false;
    };
    let Some(mut doc) = data
        .get(layout::MANIFEST)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.0).ok())
        .filter(|d| d.get("version").is_some())
    else {
        return false;
    };
    doc["version"] = version.into();
    data.insert(
        layout::MANIFEST.into(),
        ByteString(doc.to_string().into_bytes()),
    );
    true
}

impl World {
    /// The newer operator is rolled back (as the README says to): its manifest comes back at
    /// the version this operator reads.
    fn roll_back_newer_manifest(&mut self) {
        let newer = self.objects.secret.as_ref().map(layout::read_manifest);
        if matches!(newer, Some(ManifestRead::Newer(_)))
            && set_manifest_version(&mut self.objects, MANIFEST_VERSION)
        {
            trace(|| format!("manifest rolled back at {}", self.now));
            self.secret_version += 1;
            let seen = Seen::of(&self.objects);
            self.checker
                .someone_changed(&seen, &self.objects, &self.policy, self.now, false);
        }
    }
}

impl World {
    fn note_request_memory(&mut self, objects: &Objects) {
        let Some(request) = self.policy.rotation_request.as_ref() else {
            return;
        };
        let in_manifest = manifest_of(objects).and_then(|m| m.rotation_request);
        let named = [
            in_manifest.as_ref(),
            objects.status_rotation_request.as_ref(),
        ]
        .contains(&Some(request));
        self.request_forgotten |= self.request_named && !named;
        self.request_named |= named;
    }
}

fn manifest_of(objects: &Objects) -> Option<Manifest> {
    let data = objects.secret.as_ref()?;
    match layout::read_manifest(data) {
        ManifestRead::Read(m) => Some(m),
        _ => None,
    }
}

/// Whether the operator can know the key: the Secret's manifest or the status names it.
fn recorded(objects: &Objects, kid: &str) -> bool {
    objects.status.iter().any(|k| k.kid == kid)
        || manifest_of(objects).is_some_and(|m| m.get(kid).is_some())
}

fn retired_in(objects: &Objects, kid: &str) -> bool {
    manifest_of(objects)
        .and_then(|m| m.get(kid).map(|k| k.state == KeyState::Retired))
        .unwrap_or(false)
}

/// One reconcile of the set, as the operator's shell runs it; `write_memory` lives as long as the
/// operator process.
fn pass(world: &mut World, write_memory: &mut WriteMemory) -> Option<lifecycle::Converged> {
    world.writes_this_pass = 0;
    let mut converged_once = None;
    for _ in 0..5 {
        let objects = world.objects.clone();
        world.during_hit = 0;
        world.read_newer = objects
            .secret
            .as_ref()
            .is_some_and(|s| matches!(layout::read_manifest(s), ManifestRead::Newer(_)));
        world
            .checker
            .operator_reads(&Seen::of(&objects), &world.policy, world.read_newer);
        world.emergency_reads += usize::from(world.checker.emergency);
        world.note_request_memory(&objects);
        let memory = objects
            .status
            .iter()
            .filter_map(|k| k.to_record())
            .collect();
        let (evidence, materials) = objects::observe(objects::Read {
            secret: objects.secret.as_ref(),
            jwks: objects.config_map.as_ref(),
            jwks_key: JWKS_KEY,
            memory,
            remembered_rotation_request: objects.status_rotation_request.clone(),
            own_manifest: write_memory.stored_last("set", objects.secret.as_ref()),
            stored: write_memory.stored_times("set"),
            spec_algorithm: world.policy.algorithm,
        });
        let policy = world.policy.clone();
        let api = SimApi {
            secret_version: world.secret_version,
            map_version: world.map_version,
            world: &mut *world,
        };
        let mut cluster = SetObjects::new(
            api,
            "set".into(),
            objects.secret.clone(),
            objects.config_map.clone(),
            JWKS_KEY.into(),
            materials,
            &*write_memory,
        );
        let result =
            futures::executor::block_on(lifecycle::converge(&mut cluster, &policy, &evidence));
        drop(cluster);
        trace(|| match &result {
            Ok(c) => format!(
                "pass at {}: {:?} {:?}",
                world.now, c.transitions, c.findings
            ),
            Err(Stopped::Failed {
                error,
                transitions,
                findings,
            }) => format!(
                "pass at {}: {error:?} after {transitions:?} {findings:?}",
                world.now
            ),
            Err(Stopped::Blocked(b)) => format!("pass at {}: {b}", world.now),
        });
        match result {
            Ok(converged) => {
                // Unless the cluster changed under the pass after it read (its watch would run
                // it again).
                if world.during_hit == 0 {
                    let seen = Seen::of(&world.objects);
                    let checked = world.checker.pass_ended(&seen, &world.policy, world.now);
                    if let Err(e) = checked {
                        world.checker.failure.get_or_insert(e.to_string());
                    }
                }
                if world.refuse_status > 0 {
                    world.refuse_status -= 1;
                    trace(|| format!("status write refused at {}", world.now));
                } else {
                    world.objects.status = converged
                        .plan
                        .manifest
                        .keys
                        .iter()
                        .map(KeyStatus::from)
                        .collect();
                    world.objects.status_rotation_request =
                        converged.plan.manifest.rotation_request.clone();
                }
                // The cluster changed under the pass after it read: its watch runs it again.
                if world.during_hit > 0 {
                    world.during.clear();
                    converged_once = Some(converged);
                    continue;
                }
                world.during.clear();
                return Some(converged);
            }
            Err(Stopped::Failed {
                error: SimError::Conflict,
                ..
            }) => continue,
            Err(Stopped::Failed {
                error: SimError::Crash,
                ..
            }) => {
                restart(world, write_memory);
                break;
            }
            Err(_) => break,
        }
    }
    world.during.clear();
    converged_once
}

/// The operator process starts again: what it held in memory is gone.
fn restart(world: &mut World, write_memory: &mut WriteMemory) {
    *write_memory = WriteMemory::default();
    world.last_minted = None;
}

/// Runs the operator at every wake-up it asked for until `target`, then at `target`.
fn advance(
    world: &mut World,
    write_memory: &mut WriteMemory,
    last: &mut Option<lifecycle::Converged>,
    to: Timestamp,
) {
    for _ in 0..200 {
        let wake = match last {
            Some(c) if c.settled => c.plan.wake_at + world.skew,
            // A failed or unsettled pass is retried soon (the back-off's first step).
            _ => world.now + secs(1),
        };
        if wake > to {
            break;
        }
        world.now = world.now.max(wake);
        *last = pass(world, write_memory);
    }
    world.now = world.now.max(to);
    *last = pass(world, write_memory);
}

fn change_spec(world: &mut World, event: &Event) {
    // Tokens signed until now live under the retention in force until now.
    if let Some(kid) = world.checker.signable.clone() {
        let until = world.now + world.policy.retention();
        let entry = world.checker.verifiable_until.entry(kid).or_insert(until);
        *entry = (*entry).max(until);
    }
    let policy = &mut world.policy;
    match event {
        Event::Revoke(n) => {
            let kids: Vec<String> = world.objects.status.iter().map(|k| k.kid.clone()).collect();
            if !kids.is_empty() {
                policy.revoked_kids.insert(kids[n % kids.len()].clone());
            }
        }
        Event::RequestRotation => {
            let n = policy.rotation_request.as_ref().map_or(0, |r| r.len());
            policy.rotation_request = Some("r".repeat(n + 1));
        }
        Event::ChangeAlgorithm(alg) => {
            policy.algorithm = *alg;
            policy.rsa_size = alg.is_rsa().then_some(RsaKeySize::Bits2048);
        }
        Event::ChangeTokenTtl(s) => {
            // Within the bound validate() and the CRD enforce.
            let most = lifecycle::MAX_RETENTION_INTERVALS * policy.rotation_interval.as_secs()
                - policy.propagation_delay.as_secs()
                - policy.clock_skew.as_secs();
            policy.token_ttl = secs((*s).clamp(1, most.max(1)));
        }
        _ => {}
    }
}

/// One event, and the operator's passes it causes.
fn happen(
    world: &mut World,
    write_memory: &mut WriteMemory,
    last: &mut Option<lifecycle::Converged>,
    event: &Event,
) {
    match event {
        Event::Advance(s) => {
            let to = world.now + secs(*s);
            advance(world, write_memory, last, to);
            return;
        }
        Event::Down(s) => {
            restart(world, write_memory);
            world.now += secs(*s);
        }
        Event::JumpBack(s) => world.skew += secs(*s),
        Event::Between(f) => {
            if matches!(f, Fault::Crash) {
                restart(world, write_memory);
            }
            world.apply(f);
        }
        Event::During(n, f) => world.during.push((*n, f.clone())),
        spec => change_spec(world, spec),
    }
    *last = pass(world, write_memory);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_token_breaks_whatever_happens_to_the_objects((policy, events) in scenario()) {
        let mut world = World::new(policy);
        let mut write_memory = WriteMemory::default();
        let mut last = pass(&mut world, &mut write_memory);
        for event in &events {
            happen(&mut world, &mut write_memory, &mut last, event);
            if let Some(failure) = &world.checker.failure {
                prop_assert!(false, "{}", failure);
            }
            world.roll_back_newer_manifest();
        }
        // Left alone, the set settles: one key signs, verifiers have it, and nothing is written.
        let calm = world.policy.rotation_interval + world.policy.publish_lead;
        let to = world.now + calm;
        advance(&mut world, &mut write_memory, &mut last, to);
        if let Some(failure) = &world.checker.failure {
            prop_assert!(false, "{}", failure);
        }
        let seen = Seen::of(&world.objects);
        let signer = seen.signable.clone();
        prop_assert!(signer.is_some(), "no key signs after the calm");
        prop_assert!(last.as_ref().is_some_and(|c| c.settled), "the last pass did not settle");
        // Nothing is due before the wake-up: a pass in between writes nothing.
        for _ in 0..10 {
            let wake = last.as_ref().map_or(world.now, |c| c.plan.wake_at + world.skew);
            if wake > world.now + SignedDuration::from_millis(200) {
                break;
            }
            advance(&mut world, &mut write_memory, &mut last, wake + secs(1));
        }
        let versions = (world.secret_version, world.map_version);
        let again = pass(&mut world, &mut write_memory);
        prop_assert!(again.is_some());
        prop_assert_eq!(versions, (world.secret_version, world.map_version), "a calm pass wrote");
        // And it keeps rotating: whatever the objects said (a time edited ahead, say), the key
        // that signs at the end of a window longer than a rotation with its lead took over within
        // one (an edited time within a minute ahead is left alone and may delay it that much).
        let (ri, pl) = (world.policy.rotation_interval, world.policy.publish_lead);
        let window = ri * 3 + pl + secs(130);
        let to = world.now + window;
        advance(&mut world, &mut write_memory, &mut last, to);
        if let Some(failure) = &world.checker.failure {
            prop_assert!(false, "{}", failure);
        }
        let alg = world.policy.algorithm;
        let pool_dry = world.minted.get(&alg).copied().unwrap_or(0) >= pools().minted[&alg].len();
        let held = last.as_ref().is_some_and(|c| c.plan.held_at_limit);
        let since = world.checker.signable_since;
        prop_assert!(
            pool_dry || held || since.is_some_and(|s| s + ri * 2 + pl + secs(65) >= world.now),
            "rotation stopped: the key that signs at {} signs since {:?} (rotationInterval {})",
            world.now,
            since,
            ri
        );
    }
}

/// Faults on the records of a rotation rather than on key material: what must neither make a
/// requested rotation happen twice (rule 3c) nor keep it from happening.
fn record_fault() -> impl Strategy<Value = Event> {
    let between = prop_oneof![
        Just(Fault::EmptyManifest),
        (0usize..400).prop_map(Fault::TruncateManifest),
        (0usize..16).prop_map(Fault::DropManifestRecord),
        (0usize..16).prop_map(Fault::RestoreSecret),
        (0usize..16).prop_map(Fault::RestoreBoth),
        Just(Fault::LoseStatus),
        Just(Fault::Crash),
    ];
    let during = prop_oneof![
        Just(Fault::Crash),
        Just(Fault::Refuse),
        Just(Fault::EmptyManifest),
    ];
    prop_oneof![
        3 => between.prop_map(Event::Between),
        1 => (0usize..3, during).prop_map(|(n, f)| Event::During(n, f)),
    ]
}

/// A spec whose lead leaves room in an interval, the time the rotation is requested, and the
/// faults that follow its honouring (with the seconds before each), all within the interval.
fn request_scenario() -> impl Strategy<Value = (Policy, i64, Vec<(i64, Event)>)> {
    (10i64..300, algorithm())
        .prop_flat_map(|(ri, alg)| (Just(ri), Just(alg), 1..ri / 2))
        .prop_flat_map(|(ri, alg, pl)| {
            let room = (ri - pl - 3) / 6 + 1;
            (
                Just(policy(alg, ri, pl, 0, ri, 0)),
                0..ri,
                prop::collection::vec((0..room, record_fault()), 1..6),
            )
        })
}

proptest! {
    #![proptest_config(config())]

    /// The rotate annotation: a key that never signed signs within publishLead, and emptied,
    /// truncated or restored records do not make it happen a second time.
    #[test]
    fn a_requested_rotation_happens_once_whatever_happens_to_its_records(
        (policy, warmup, faults) in request_scenario()
    ) {
        let (ri, pl) = (policy.rotation_interval, policy.publish_lead);
        let mut world = World::new(policy);
        let mut write_memory = WriteMemory::default();
        let mut last = pass(&mut world, &mut write_memory);
        let to = world.now + secs(warmup);
        advance(&mut world, &mut write_memory, &mut last, to);
        let signed_before = world.checker.ever_signable.clone();
        let asked = world.now;
        happen(&mut world, &mut write_memory, &mut last, &Event::RequestRotation);
        advance(&mut world, &mut write_memory, &mut last, asked + pl + secs(2));
        let fresh: Vec<String> = world.checker.ever_signable.difference(&signed_before).cloned().collect();
        prop_assert!(
            fresh.len() == 1,
            "rotation requested at {}: keys that signed for the first time by {}: {:?}",
            asked, world.now, fresh
        );
        let since = world.checker.signable_since.unwrap_or(asked);
        let emergencies = world.emergency_reads;
        for (gap, event) in &faults {
            let to = world.now + secs(*gap);
            advance(&mut world, &mut write_memory, &mut last, to);
            happen(&mut world, &mut write_memory, &mut last, event);
        }
        // Until the next scheduled rotation, no other key takes over.
        advance(&mut world, &mut write_memory, &mut last, since + ri - secs(1));
        if let Some(failure) = &world.checker.failure {
            prop_assert!(false, "{}", failure);
        }
        let again: Vec<String> = world.checker.ever_signable
            .difference(&signed_before)
            .filter(|k| !fresh.contains(k))
            .cloned()
            .collect();
        let excused = world.request_forgotten || world.emergency_reads > emergencies;
        prop_assert!(
            excused || again.is_empty(),
            "the rotation requested at {} and honoured at {} happened again by {}: {:?}",
            asked, since, world.now, again
        );
    }
}

/// A spec with the longest retention a valid spec allows, and a burst of rotate requests that
/// outnumbers the keys a set may hold (each after some seconds, and sometimes a record fault).
fn burst_scenario() -> impl Strategy<Value = (Policy, Vec<(i64, Option<Event>)>)> {
    (10i64..120, algorithm())
        .prop_flat_map(|(ri, alg)| (Just(ri), Just(alg), 1..ri / 2))
        .prop_flat_map(|(ri, alg, pl)| {
            let ttl = lifecycle::MAX_RETENTION_INTERVALS * ri;
            let fault = prop::option::weighted(0.05, record_fault());
            let requests = lifecycle::MAX_KEYS + 2..lifecycle::MAX_KEYS + 10;
            (
                Just(policy(alg, ri, pl, 0, ttl, 0)),
                prop::collection::vec((pl + 1..pl + 6, fault), requests),
            )
        })
}

proptest! {
    #![proptest_config({
        let mut c = config();
        c.cases = (c.cases / 40).max(1);
        c
    })]

    /// Rotate requests faster than keys expire: the set stops at MAX_KEYS keys (the rotation
    /// waits for the oldest to expire) and no token breaks on the way.
    #[test]
    fn a_burst_of_rotate_requests_holds_at_the_key_limit((policy, events) in burst_scenario()) {
        let mut world = World::new(policy);
        let mut write_memory = WriteMemory::default();
        let mut last = pass(&mut world, &mut write_memory);
        let mut held = false;
        for (gap, fault) in &events {
            let to = world.now + secs(*gap);
            advance(&mut world, &mut write_memory, &mut last, to);
            for event in fault.iter().chain([&Event::RequestRotation]) {
                happen(&mut world, &mut write_memory, &mut last, event);
                held |= last.as_ref().is_some_and(|c| c.plan.held_at_limit);
            }
            if let Some(failure) = &world.checker.failure {
                prop_assert!(false, "{}", failure);
            }
        }
        let alg = world.policy.algorithm;
        let pool_dry = world.minted.get(&alg).copied().unwrap_or(0) >= pools().minted[&alg].len();
        // A fault may take keys away (a restored copy holds fewer): then the limit may not be
        // reached; without one, every request makes a key until it is.
        let faults = events.iter().any(|(_, f)| f.is_some());
        prop_assert!(
            held || pool_dry || faults,
            "{} requests never reached the key limit",
            events.len()
        );
    }
}
