//! Reconcile one JwtKeySet: read its objects, hand the evidence to the core, let the core's
//! convergence loop write through the Kubernetes API in the safe order, then report (status,
//! Events, metrics) and requeue at the core's wake-up. It knows Kubernetes; it knows no
//! rotation rule.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{DeletionPolicy, JwtKeySet, ValidSpec};
use crate::cache::{Absent, Caches, Freshness};
use crate::copies::{self, COPIES_FINALIZER, Copies};
use crate::keys::{self, Algorithm, KeyError, KeyMaterial, RsaKeySize};
use crate::layout::LayoutError;
use crate::leader::{Fence, NotLeader};
use crate::lifecycle::{self, ObjectNames, Stopped, WrittenNames};
use crate::metrics::Metrics;
use crate::objects::{self, ObjectApi, SetObjects, TooLarge, WriteMemory};
use crate::report::{self, Blocked};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "jwt-key-rotator";
pub const KEY_SET_LABEL: &str = "jwt.keyrotator.dev/key-set";
/// Held while `deletionPolicy: Retain`, so the Secret and ConfigMap can be released first.
pub const RETAIN_FINALIZER: &str = "jwt.keyrotator.dev/retain";
/// Conflicting writes are retried from a fresh read this many times before giving up.
const CONFLICT_RETRIES: u32 = 5;
/// Even with nothing due, look again this often (cheap: a steady-state pass writes nothing).
const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// A pass that saw the set from before our own status write looks again after this long, if
/// the write's watch event has not started it sooner (it does, as soon as the cache has it).
const CATCH_UP: Duration = Duration::from_millis(500);
/// A set whose copies have problems looks again this often.
const COPY_RETRY: Duration = Duration::from_secs(60);
/// A pass that ran out of rounds with work due comes back after this long, not at once.
const UNSETTLED_REQUEUE: Duration = Duration::from_secs(1);

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub clock: Clock,
    /// Who reports Events.
    pub reporter: Reporter,
    /// A recorder per distinct Event (set, reason, note): kube's `Recorder` folds Events of one
    /// reason about one object into a series that keeps the first note, so with one recorder a
    /// second key created would show as the first one. Per note, a retried pass's repeats fold
    /// into a series and anything new is an Event of its own.
    pub recorders: Mutex<HashMap<u64, Recorder>>,
    /// Closed while another replica leads: every write checks it first.
    pub fence: Arc<Fence>,
    pub metrics: Arc<Metrics>,
    /// Keys minted for writes that failed, offered again on the retry.
    pub write_memory: WriteMemory,
    /// Consecutive failures per set, for the back-off.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The watch caches of the sets' Secrets and ConfigMaps, which reconcile reads.
    pub caches: Caches,
    /// Our last status write per set: the resourceVersion it replaced (its precondition) and
    /// the one it made, until the watch cache shows the set past the first.
    pub status_written: Mutex<HashMap<String, (String, String)>>,
    /// Where JWKS copies may go.
    pub copy_scope: copies::Scope,
}

impl Context {
    pub fn new(
        client: Client,
        clock: Clock,
        reporter: Reporter,
        fence: Arc<Fence>,
        metrics: Arc<Metrics>,
        caches: Caches,
        copy_scope: copies::Scope,
    ) -> Self {
        Context {
            client,
            clock,
            reporter,
            recorders: Mutex::default(),
            fence,
            metrics,
            write_memory: WriteMemory::default(),
            failures: Mutex::default(),
            caches,
            status_written: Mutex::default(),
            copy_scope,
        }
    }

    /// Remembers our status write (made on the set at `replaced`), whose watch event starts the
    /// set's next pass.
    pub fn wrote_status(&self, replaced: Option<String>, set: &JwtKeySet) {
        let (Some(replaced), Some(made)) = (replaced, set.resource_version()) else {
            return;
        };
        // A write that changed nothing made no new version: there is nothing to wait for.
        if replaced == made {
            return;
        }
        if let Ok(mut written) = self.status_written.lock() {
            written.insert(set_key(set), (replaced, made));
        }
    }

    /// Whether the watch cache still shows `set` as it was before our last status write: a pass
    /// started by our own Secret or ConfigMap write may outrun that write's watch event, and
    /// would weigh the old status and write it again (conditionally on the old version: refused).
    /// Exact, without ordering resourceVersions: the write was conditional on the version it
    /// replaced, so the cache shows that one until it shows ours (or a later one).
    fn behind_own_status(&self, set: &JwtKeySet) -> bool {
        let Ok(mut written) = self.status_written.lock() else {
            return false;
        };
        let key = set_key(set);
        let behind = written
            .get(&key)
            .is_some_and(|(replaced, _)| set.resource_version().as_ref() == Some(replaced));
        if !behind {
            written.remove(&key);
        }
        behind
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key generation: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    #[error("another writer changed the object {0} times in a row; will retry")]
    Conflict(u32),
    #[error("the JwtKeySet has no namespace")]
    NoNamespace,
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("reconciling panicked (a bug); will retry")]
    Panicked,
    #[error("copying the JWKS into namespace {namespace}: {source}")]
    Copy {
        namespace: String,
        source: Box<Error>,
    },
    #[error("the namespaces are not listed yet; JWKS copies wait")]
    NotListed,
    /// The keys were written; reporting them (the status) failed. Retried with back-off, but
    /// never later than the next key transition is due: a refused status write must not hold
    /// up the schedule of the keys.
    #[error("{source}")]
    Unreported { source: Box<Error>, due: Duration },
}

pub async fn reconcile(set: Arc<JwtKeySet>, ctx: Arc<Context>) -> Result<Action, Error> {
    // A panic in one set's reconcile must not take the controller (and every other set's
    // rotations) down with it: it becomes an error, retried with back-off.
    let result = AssertUnwindSafe(reconcile_set(&set, &ctx))
        .catch_unwind()
        .await
        .unwrap_or(Err(Error::Panicked));
    match &result {
        Ok(_) => {
            if let Ok(mut failures) = ctx.failures.lock() {
                failures.remove(&set_key(&set));
            }
        }
        Err(Error::Conflict(_) | Error::NotLeader(_) | Error::NoNamespace) => {}
        Err(e) => {
            // Say so where people look: a failing write must not leave Ready=True standing.
            let _ = report::blocked(&set, &ctx, Blocked::Failing(e.to_string())).await;
        }
    }
    result
}

async fn reconcile_set(set: &JwtKeySet, ctx: &Context) -> Result<Action, Error> {
    let ns = set.namespace().ok_or(Error::NoNamespace)?;
    ctx.fence.check()?;
    if ctx.behind_own_status(set) {
        return Ok(Action::requeue(CATCH_UP));
    }
    let sets: Api<JwtKeySet> = Api::namespaced(ctx.client.clone(), &ns);
    if set.meta().deletion_timestamp.is_some() {
        return release_on_delete(set, &sets, ctx).await;
    }
    // Before validation: a set switched to Retain in the same edit as a bad field keeps its keys.
    if manage_finalizers(ctx, set, &sets).await? {
        // The patch's watch event starts the next pass on the set as patched: a status written
        // now would carry the old resourceVersion, and be refused.
        return Ok(Action::requeue(CATCH_UP));
    }
    let valid = match set.validate() {
        Ok(valid) => valid,
        Err(e) => return report::blocked(set, ctx, Blocked::InvalidSpec(e.to_string())).await,
    };
    let mut freshness = Freshness::Cache;
    for _ in 0..CONFLICT_RETRIES {
        match sync(set, &valid, ctx, &ns, freshness).await {
            Err(Error::Conflict(_)) => debug!("write conflict; re-reading from the API server"),
            other => return other,
        }
        freshness = Freshness::Server;
    }
    Err(Error::Conflict(CONFLICT_RETRIES))
}

/// Exponential back-off with jitter: a set that keeps failing is retried at 1 s, 2 s, 4 s, ...
/// up to 5 minutes, each spread by ±50% so that a fleet failing together does not retry in step.
pub fn error_policy(set: Arc<JwtKeySet>, error: &Error, ctx: Arc<Context>) -> Action {
    let (ns, name) = (set.namespace().unwrap_or_default(), set.name_any());
    ctx.metrics.reconcile_failed(&ns, &name);
    warn!(set = %name, namespace = %ns, %error, "reconcile failed");
    let failures = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(set_key(&set)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let base = match error {
        Error::Conflict(_) => Duration::from_millis(500),
        Error::NotLeader(_) => return Action::requeue(Duration::from_secs(2)),
        _ => Duration::from_secs(1),
    };
    let wait = backoff(base, failures);
    match error {
        Error::Unreported { due, .. } => Action::requeue(wait.min(*due)),
        _ => Action::requeue(wait),
    }
}

fn backoff(base: Duration, failures: u32) -> Duration {
    let exponential = base.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let capped = exponential.min(Duration::from_secs(300));
    let mut random = [0u8; 2];
    let spread = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    capped.mul_f64(0.5 + spread)
}

fn set_key(set: &JwtKeySet) -> String {
    format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())
}

pub(crate) fn owned_by(meta: &ObjectMeta, set: &JwtKeySet) -> bool {
    let uid = set.meta().uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// Drops this set's owner reference only; other owners' references stay.
fn release(meta: &mut ObjectMeta, set: &JwtKeySet) {
    let uid = set.meta().uid.clone().unwrap_or_default();
    if let Some(refs) = meta.owner_references.as_mut() {
        refs.retain(|r| r.uid != uid);
    }
}

fn owner_reference(set: &JwtKeySet) -> Option<OwnerReference> {
    set.controller_owner_ref(&())
}

pub(crate) fn labels(set: &JwtKeySet) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (KEY_SET_LABEL.to_string(), set.name_any()),
    ])
}

/// Whether an object we manage lost one of our labels (then it must be written to repair them).
fn lacks_labels(meta: &ObjectMeta, set: &JwtKeySet) -> bool {
    let have = meta.labels.clone().unwrap_or_default();
    labels(set).iter().any(|(k, v)| have.get(k) != Some(v))
}

pub(crate) fn conflict_or(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(ref s) if s.code == 409 => Error::Conflict(1),
        e => Error::Kube(e),
    }
}

fn new_meta(name: &str, ns: &str, set: &JwtKeySet) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(labels(set)),
        owner_references: owner_reference(set).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Creates `object`, or replaces the one read (`existed`) conditionally on the resourceVersion
/// it carries: a concurrent change makes this a `Conflict`, never an overwrite.
async fn create_or_replace<K>(
    fence: &Fence,
    api: &Api<K>,
    existed: bool,
    object: &K,
) -> Result<K, Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    fence.check()?;
    let written = if existed {
        api.replace(&object.name_any(), &PostParams::default(), object)
            .await
    } else {
        api.create(&PostParams::default(), object).await
    };
    written.map_err(conflict_or)
}

/// The set's objects as read.
struct Objects {
    secret: Option<Secret>,
    /// `None` also when a ConfigMap of that name exists but is not this set's.
    config_map: Option<ConfigMap>,
    foreign_config_map: bool,
}

/// Reads the objects from the watch caches (see `cache` for why that is safe, and when the API
/// server is asked instead). A ConfigMap missing from the cache of a set that has published
/// nothing is taken as absent: the set's first write is then its create (the first key
/// signs at once, so the JWKS goes first), which a ConfigMap of that name refuses. A missing
/// Secret is asked for: someone else's must block the set before anything is published.
async fn read_objects(
    set: &JwtKeySet,
    valid: &ValidSpec,
    ctx: &Context,
    ns: &str,
    freshness: Freshness,
) -> Result<Objects, Error> {
    let published = set
        .status
        .iter()
        .flat_map(|s| &s.keys)
        .any(|k| k.public_jwk.is_some());
    let map_absent = if published {
        Absent::Ask
    } else {
        Absent::Trust
    };
    let (client, caches) = (&ctx.client, &ctx.caches);
    let secret = caches
        .secrets
        .read(client, (ns, &valid.secret_name), Absent::Ask, freshness)
        .await?;
    let map = caches
        .config_maps
        .read(client, (ns, &valid.config_map_name), map_absent, freshness)
        .await?;
    // Someone else's ConfigMap is never read as ours, nor written.
    let foreign_config_map = map.as_ref().is_some_and(|m| !owned_by(&m.metadata, set));
    Ok(Objects {
        secret,
        config_map: map.filter(|_| !foreign_config_map),
        foreign_config_map,
    })
}

/// Why the objects cannot be touched at all: a Secret or ConfigMap of that name that is not ours.
fn ownership_conflict(set: &JwtKeySet, valid: &ValidSpec, objects: &Objects) -> Option<Blocked> {
    if objects
        .secret
        .as_ref()
        .is_some_and(|s| !owned_by(&s.metadata, set))
    {
        return Some(Blocked::SecretConflict(valid.secret_name.clone()));
    }
    // A symmetric set publishes nothing, so another owner's ConfigMap of that name is none of
    // its business; unless public keys (from before an algorithm change) still need publishing.
    let remembers_public = set
        .status
        .iter()
        .flat_map(|s| &s.keys)
        .any(|k| k.public_jwk.is_some());
    let publishes = !valid.policy.algorithm.is_symmetric() || remembers_public;
    (objects.foreign_config_map && publishes)
        .then(|| Blocked::ConfigMapConflict(valid.config_map_name.clone()))
}

/// The names the objects were written under: remembered in the status, else (the status lost)
/// the one data key of the set's own ConfigMap.
fn written_names(set: &JwtKeySet, objects: &Objects) -> WrittenNames {
    let status = set.status.clone().unwrap_or_default();
    let map_keys: Vec<&String> = objects
        .config_map
        .iter()
        .flat_map(|m| m.data.iter().flatten())
        .map(|(k, _)| k)
        .collect();
    let lone_key = match map_keys[..] {
        [key] => Some(key.clone()),
        _ => None,
    };
    WrittenNames {
        secret: status.secret_name,
        config_map: status.config_map_name,
        jwks_key: status.jwks_key.or(lone_key),
    }
}

async fn sync(
    set: &JwtKeySet,
    valid: &ValidSpec,
    ctx: &Context,
    ns: &str,
    freshness: Freshness,
) -> Result<Action, Error> {
    let objects = read_objects(set, valid, ctx, ns, freshness).await?;
    if let Some(blocked) = refused(set, valid, &objects) {
        return report::blocked(set, ctx, blocked).await;
    }
    let (evidence, mut cluster) = observe(set, valid, ctx, ns, objects);
    match lifecycle::converge(&mut cluster, &valid.policy, &evidence).await {
        Ok(converged) => {
            cluster.api.settle_copies().await?;
            let mut due = requeue_after(&converged, (ctx.clock)());
            // A namespace created or labelled later, a foreign ConfigMap removed, RBAC fixed:
            // not all of these start a pass, so look again soon.
            if cluster
                .api
                .copies
                .as_ref()
                .is_some_and(|c| !c.problems.is_empty())
            {
                due = due.min(COPY_RETRY);
            }
            let unpublished = lifecycle::unpublished_by_pass(&evidence, &converged.transitions);
            let copies = cluster.api.copies.as_ref();
            match report::converged(set, valid, ctx, &converged, &unpublished, copies).await {
                Ok(()) => Ok(Action::requeue(due)),
                Err(e) => Err(Error::Unreported {
                    source: Box::new(e),
                    due,
                }),
            }
        }
        Err(Stopped::Blocked(blocked)) => {
            report::blocked(set, ctx, Blocked::Evidence(blocked)).await
        }
        // A pass refused at its first write changed nothing: the retry, from a fresh read,
        // reports what happens (a stale cache read must not leave Events of what did not).
        Err(Stopped::Failed {
            error: error @ Error::Conflict(_),
            ..
        }) if cluster.api.writes == 0 => Err(error),
        Err(Stopped::Failed {
            error,
            transitions,
            findings,
        }) => {
            report::events(set, ctx, &transitions, &findings).await;
            Err(error)
        }
    }
}

/// Objects that are not the set's, or names moved since they were written: nothing is touched.
fn refused(set: &JwtKeySet, valid: &ValidSpec, objects: &Objects) -> Option<Blocked> {
    let wanted = ObjectNames {
        secret: valid.secret_name.clone(),
        config_map: valid.config_map_name.clone(),
        jwks_key: valid.jwks_key.clone(),
    };
    ownership_conflict(set, valid, objects)
        .or_else(|| lifecycle::moved(&written_names(set, objects), &wanted).map(Blocked::Moved))
}

/// The evidence for the core, and the set's objects as its cluster (writing through the API).
fn observe<'a>(
    set: &'a JwtKeySet,
    valid: &ValidSpec,
    ctx: &'a Context,
    ns: &'a str,
    objects: Objects,
) -> (lifecycle::Evidence, SetObjects<'a, KubeObjects<'a>>) {
    let memory = set
        .status
        .iter()
        .flat_map(|s| &s.keys)
        .filter_map(|k| k.to_record())
        .collect();
    let secret_data = objects
        .secret
        .as_ref()
        .map(|s| s.data.clone().unwrap_or_default());
    let jwks_data = objects
        .config_map
        .as_ref()
        .map(|m| m.data.clone().unwrap_or_default());
    let copies = valid
        .copies
        .as_ref()
        .map(|c| Copies::plan(c, ns, &valid.config_map_name, &ctx.copy_scope));
    let (mut evidence, materials) = objects::observe(objects::Read {
        secret: secret_data.as_ref(),
        jwks: jwks_data.as_ref(),
        jwks_key: &valid.jwks_key,
        memory,
        remembered_rotation_request: set.status.as_ref().and_then(|s| s.rotation_request.clone()),
        spec_algorithm: valid.policy.algorithm,
        own_manifest: ctx
            .write_memory
            .stored_last(&set_key(set), secret_data.as_ref()),
        stored: ctx.write_memory.stored_times(&set_key(set)),
    });
    // Our labels removed (the watch selects by them), or binaryData added: write them again.
    let repair_secret = objects
        .secret
        .as_ref()
        .is_some_and(|s| lacks_labels(&s.metadata, set));
    let repair_map = objects.config_map.as_ref().is_some_and(|m| {
        lacks_labels(&m.metadata, set) || m.binary_data.as_ref().is_some_and(|b| !b.is_empty())
    });
    let source = jwks_data.as_ref().and_then(|d| d.get(&valid.jwks_key));
    let stale_copies = match (&copies, source) {
        (Some(c), Some(source)) => narrow_to_copies(&mut evidence, c, ctx, set, source),
        _ => false,
    };
    let api = KubeObjects::new(set, ctx, ns, valid, objects, copies);
    let cluster = SetObjects::new(
        api,
        set_key(set),
        secret_data,
        jwks_data,
        valid.jwks_key.clone(),
        materials,
        &ctx.write_memory,
    )
    .rewrite(repair_secret, repair_map || stale_copies);
    (evidence, cluster)
}

/// A copy that exists is what verifiers in its namespace hold: a key it lacks is not published
/// for them, whatever the set's own ConfigMap says (a copy write failed after that one took
/// the key). Narrows the published keys to what every copy carries; whether any copy differs
/// from the source, and must be written again with the JWKS.
fn narrow_to_copies(
    evidence: &mut lifecycle::Evidence,
    copies: &Copies,
    ctx: &Context,
    set: &JwtKeySet,
    source: &str,
) -> bool {
    let mut stale = false;
    for copy in copies.existing(ctx, set) {
        let document = copy.data.as_ref().and_then(|d| d.get(&copies.spec.key));
        stale |= document.map(String::as_str) != Some(source);
        let carried: Vec<String> = document
            .map(|d| {
                crate::layout::read_jwks(d)
                    .into_iter()
                    .map(|j| j.kid)
                    .collect()
            })
            .unwrap_or_default();
        evidence.published.retain(|j| carried.contains(&j.kid));
    }
    stale
}

fn requeue_after(converged: &lifecycle::Converged, now: Timestamp) -> Duration {
    if !converged.settled {
        return UNSETTLED_REQUEUE;
    }
    converged
        .plan
        .wake_at
        .duration_since(now)
        .unsigned_abs()
        .clamp(Duration::from_millis(50), MAX_REQUEUE)
}

/// The set's Secret and ConfigMap through the Kubernetes API: every write is a create, or a
/// replace carrying the resourceVersion read (or last written).
struct KubeObjects<'a> {
    set: &'a JwtKeySet,
    ctx: &'a Context,
    ns: &'a str,
    secret_name: String,
    config_map_name: String,
    jwks_key: String,
    secret: Option<Secret>,
    config_map: Option<ConfigMap>,
    /// Where the JWKS is copied, and what happened there in this pass.
    copies: Option<Copies>,
    /// Writes acknowledged in this pass.
    writes: u32,
}

impl<'a> KubeObjects<'a> {
    fn new(
        set: &'a JwtKeySet,
        ctx: &'a Context,
        ns: &'a str,
        valid: &ValidSpec,
        objects: Objects,
        copies: Option<Copies>,
    ) -> Self {
        KubeObjects {
            set,
            ctx,
            ns,
            secret_name: valid.secret_name.clone(),
            config_map_name: valid.config_map_name.clone(),
            jwks_key: valid.jwks_key.clone(),
            secret: objects.secret,
            config_map: objects.config_map,
            copies,
            writes: 0,
        }
    }

    /// The JWKS document the set's ConfigMap holds (as read, or as this pass wrote it).
    fn document(&self) -> Option<String> {
        let data = self.config_map.as_ref()?.data.as_ref()?;
        data.get(&self.jwks_key).cloned()
    }

    /// After the core's pass: copies its writes did not touch (a namespace newly selected, a
    /// copy edited or deleted by hand) are written, and copies no longer wanted withdrawn.
    async fn settle_copies(&mut self) -> Result<(), Error> {
        if self.copies.is_none() && !holds_copies_finalizer(self.set) {
            return Ok(());
        }
        let document = self.document();
        if let Some(copies) = self.copies.as_mut() {
            match &document {
                Some(document) => self.writes += copies.write(self.ctx, self.set, document).await?,
                // Nothing published (a symmetric set): nothing to copy.
                None => copies.targets.clear(),
            }
        }
        let copies = self.copies.as_ref();
        let keep = |ns: &str, name: &str| copies.is_some_and(|c| c.keeps(ns, name));
        self.writes += copies::withdraw(self.ctx, self.set, keep).await?;
        Ok(())
    }
}

impl ObjectApi for KubeObjects<'_> {
    type Error = Error;

    fn now(&mut self) -> Timestamp {
        (self.ctx.clock)()
    }

    fn generate(
        &mut self,
        alg: Algorithm,
        size: Option<RsaKeySize>,
    ) -> Result<Arc<KeyMaterial>, KeyError> {
        // CPU-bound (an RSA-4096 key takes up to a second): off the async workers' hot path.
        tokio::task::block_in_place(|| keys::generate(alg, size)).map(Arc::new)
    }

    async fn put_secret(&mut self, data: &BTreeMap<String, ByteString>) -> Result<(), Error> {
        let existed = self.secret.is_some();
        let mut secret = self.secret.clone().unwrap_or_else(|| Secret {
            metadata: new_meta(&self.secret_name, self.ns, self.set),
            type_: Some("Opaque".into()),
            ..Secret::default()
        });
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(labels(self.set));
        secret.data = Some(data.clone());
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let written = create_or_replace(&self.ctx.fence, &api, existed, &secret).await?;
        self.ctx.caches.secrets.wrote(&written);
        self.secret = Some(written);
        self.writes += 1;
        Ok(())
    }

    async fn put_jwks(&mut self, data: &BTreeMap<String, String>) -> Result<(), Error> {
        let existed = self.config_map.is_some();
        let mut map = self.config_map.clone().unwrap_or_else(|| ConfigMap {
            metadata: new_meta(&self.config_map_name, self.ns, self.set),
            ..ConfigMap::default()
        });
        map.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(labels(self.set));
        map.data = Some(data.clone());
        map.binary_data = None;
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), self.ns);
        let written = create_or_replace(&self.ctx.fence, &api, existed, &map).await?;
        self.ctx.caches.config_maps.wrote(&written);
        self.config_map = Some(written);
        self.writes += 1;
        // The copies in the same write: the core stamps a publication when this returns.
        if let (Some(copies), Some(document)) = (self.copies.as_mut(), data.get(&self.jwks_key)) {
            self.writes += copies.write(self.ctx, self.set, document).await?;
        }
        Ok(())
    }
}

/// The finalizers this operator keeps on `set`: `deletionPolicy: Retain`'s, so the Secret and
/// ConfigMap can be released (owner references removed) before garbage collection would take
/// them; and the copies', while the set asks for copies or any is left, since no owner
/// reference reaches another namespace.
fn wanted_finalizers(ctx: &Context, set: &JwtKeySet) -> Vec<&'static str> {
    let mut wanted = vec![];
    if set.spec.deletion_policy == DeletionPolicy::Retain {
        wanted.push(RETAIN_FINALIZER);
    }
    // An unlisted cache may not show copies that exist: the finalizer stays until it can tell.
    // The cache is scanned only for a set that holds the finalizer (none without it).
    let may_have_copies = || !ctx.caches.config_maps.ready() || copies::any(ctx, set);
    if set.spec.jwks.copies.is_some() || (holds_copies_finalizer(set) && may_have_copies()) {
        wanted.push(COPIES_FINALIZER);
    }
    wanted
}

/// Copies are written only while this finalizer is held: without it, a set has none, and no
/// pass looks for them (a scan of every cached ConfigMap).
fn holds_copies_finalizer(set: &JwtKeySet) -> bool {
    set.finalizers().iter().any(|f| f == COPIES_FINALIZER)
}

/// Adds or removes our finalizers as `wanted_finalizers` says. Whether it patched.
async fn manage_finalizers(
    ctx: &Context,
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
) -> Result<bool, Error> {
    let ours = [RETAIN_FINALIZER, COPIES_FINALIZER];
    let wanted = wanted_finalizers(ctx, set);
    let finalizers = set.finalizers();
    let has: Vec<&str> = ours
        .into_iter()
        .filter(|f| finalizers.iter().any(|g| g == f))
        .collect();
    if has == wanted {
        return Ok(false);
    }
    let mut next: Vec<String> = finalizers
        .iter()
        .filter(|f| !ours.contains(&f.as_str()))
        .cloned()
        .collect();
    next.extend(wanted.iter().map(|f| f.to_string()));
    patch_finalizers(&ctx.fence, set, sets, next).await?;
    Ok(true)
}

async fn patch_finalizers(
    fence: &Fence,
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    next: Vec<String>,
) -> Result<(), Error> {
    fence.check()?;
    let patch =
        json!({"metadata": {"finalizers": next, "resourceVersion": set.resource_version()}});
    sets.patch(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(conflict_or)?;
    Ok(())
}

async fn release_on_delete(
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    ctx: &Context,
) -> Result<Action, Error> {
    let has = |f: &str| set.finalizers().iter().any(|g| g == f);
    let (retain, copies) = (has(RETAIN_FINALIZER), has(COPIES_FINALIZER));
    if !retain && !copies {
        return Ok(Action::await_change());
    }
    if retain {
        release_objects(set, ctx).await?;
    }
    // Retain keeps the copies too: verifiers elsewhere go on reading them.
    if copies && set.spec.deletion_policy != DeletionPolicy::Retain {
        if !ctx.caches.config_maps.ready() {
            return Ok(Action::requeue(CATCH_UP));
        }
        let withdrawn = copies::withdraw(ctx, set, |_, _| false).await?;
        info!(set = %set.name_any(), withdrawn, "JWKS copies withdrawn");
    }
    let next: Vec<String> = set
        .finalizers()
        .iter()
        .filter(|f| *f != RETAIN_FINALIZER && *f != COPIES_FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(&ctx.fence, set, sets, next).await?;
    let ns = set.namespace().ok_or(Error::NoNamespace)?;
    ctx.metrics.forget(&ns, &set.name_any());
    Ok(Action::await_change())
}

/// `deletionPolicy: Retain`: the Secret and ConfigMap lose this set's owner reference.
async fn release_objects(set: &JwtKeySet, ctx: &Context) -> Result<(), Error> {
    let ns = set.namespace().ok_or(Error::NoNamespace)?;
    // Names only: a spec refused for another reason must not cost the user their keys.
    let (secret_name, config_map_name) = set.object_names();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(mut s) = secrets.get_opt(&secret_name).await?
        && owned_by(&s.metadata, set)
    {
        release(&mut s.metadata, set);
        create_or_replace(&ctx.fence, &secrets, true, &s).await?;
    }
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(mut m) = maps.get_opt(&config_map_name).await?
        && owned_by(&m.metadata, set)
    {
        release(&mut m.metadata, set);
        create_or_replace(&ctx.fence, &maps, true, &m).await?;
    }
    info!(set = %set.name_any(), "deletionPolicy Retain: Secret and ConfigMap released");
    Ok(())
}
