//! Reconcile one JwtKeySet: read the cluster, ask the planner, write in the safe order
//! (Secret with new keys → JWKS ConfigMap → Secret with the moved active pointer → status and
//! Events), and requeue at the planner's wake-up. It knows Kubernetes; it knows no rotation rule.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{DeletionPolicy, InvalidSpec, JwtKeySet, JwtKeySetStatus, KeyStatus, ValidSpec};
use crate::keys::{self, KeyError};
use crate::leader::{Fence, NotLeader};
use crate::lifecycle::{self, Activation, Manifest, NewKey, Observed, Plan, Transition};
use crate::metrics::Metrics;
use crate::store::{self, Materials, StoreError, StoredKey};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "jwt-key-rotator";
pub const KEY_SET_LABEL: &str = "jwt.keyrotator.dev/key-set";
/// Held while `deletionPolicy: Retain`, so the Secret and ConfigMap can be released first.
pub const RETAIN_FINALIZER: &str = "jwt.keyrotator.dev/retain";
/// Conflicting writes are retried from a fresh read this many times before giving up.
const CONFLICT_RETRIES: u32 = 5;
/// Even with nothing due, look again this often (cheap: a steady-state pass writes nothing).
const MAX_REQUEUE: Duration = Duration::from_secs(3600);

pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub clock: Clock,
    pub recorder: Recorder,
    /// Closed while another replica leads: every write checks it first.
    pub fence: Arc<Fence>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key generation: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another writer changed the object {0} times in a row; will retry")]
    Conflict(u32),
    #[error("the JwtKeySet has no namespace")]
    NoNamespace,
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    #[error("reconciling panicked (a bug); will retry")]
    Panicked,
}

/// Why a set is not Ready, as the condition's reason.
enum Blocked {
    InvalidSpec(InvalidSpec),
    SecretConflict(String),
    ConfigMapConflict(String),
    SecretUnreadable(String),
    /// A write or read the API server refused, or another failure; retried with back-off.
    Failing(String),
}

impl Blocked {
    fn reason(&self) -> &'static str {
        match self {
            Blocked::InvalidSpec(_) => "InvalidSpec",
            Blocked::SecretConflict(_) => "SecretConflict",
            Blocked::ConfigMapConflict(_) => "ConfigMapConflict",
            Blocked::SecretUnreadable(_) => "SecretUnreadable",
            Blocked::Failing(_) => "ReconcileError",
        }
    }
    fn message(&self) -> String {
        match self {
            Blocked::InvalidSpec(e) => format!("spec refused, nothing was changed: {e}"),
            Blocked::SecretConflict(name) => format!(
                "Secret {name} exists and is not managed by this JwtKeySet; it is left untouched. \
                 Delete or rename it, or set spec.secretName to another name"
            ),
            Blocked::ConfigMapConflict(name) => format!(
                "ConfigMap {name} exists and is not managed by this JwtKeySet; it is left untouched. \
                 Delete or rename it, or set spec.jwks.configMapName to another name"
            ),
            Blocked::Failing(e) => format!("reconciling failed and is retried: {e}"),
            Blocked::SecretUnreadable(e) => format!(
                "the Secret's key record cannot be read, so nothing is rotated or rewritten: {e}. \
                 Restore it from a backup, or delete the Secret to start over with a fresh key"
            ),
        }
    }
}

pub async fn reconcile(set: Arc<JwtKeySet>, ctx: Arc<Context>) -> Result<Action, Error> {
    // A panic in one set's reconcile must not take the controller (and every other set's
    // rotations) down with it: it becomes an error, retried with back-off.
    let result = AssertUnwindSafe(reconcile_set(&set, &ctx))
        .catch_unwind()
        .await
        .unwrap_or(Err(Error::Panicked));
    if let Err(e) = &result
        && !matches!(
            e,
            Error::Conflict(_) | Error::NotLeader(_) | Error::NoNamespace
        )
        && let Some(ns) = set.namespace()
    {
        // Say so where people look: a failing write must not leave Ready=True standing.
        let sets: Api<JwtKeySet> = Api::namespaced(ctx.client.clone(), &ns);
        let _ = report_blocked(&set, &sets, &ctx, Blocked::Failing(e.to_string())).await;
    }
    result
}

async fn reconcile_set(set: &JwtKeySet, ctx: &Context) -> Result<Action, Error> {
    let ns = set.namespace().ok_or(Error::NoNamespace)?;
    ctx.fence.check()?;
    let sets: Api<JwtKeySet> = Api::namespaced(ctx.client.clone(), &ns);
    if set.meta().deletion_timestamp.is_some() {
        return release_on_delete(set, &sets, ctx).await;
    }
    // Before validation: a set switched to Retain in the same edit as a bad field keeps its keys.
    manage_finalizer(&ctx.fence, set, &sets, set.spec.deletion_policy).await?;
    let valid = match set.validate() {
        Ok(valid) => valid,
        Err(e) => return report_blocked(set, &sets, ctx, Blocked::InvalidSpec(e)).await,
    };
    if let Some(refused) = renamed(set, &valid) {
        return report_blocked(set, &sets, ctx, Blocked::InvalidSpec(refused)).await;
    }
    for _ in 0..CONFLICT_RETRIES {
        match sync(set, &sets, &valid, ctx, &ns).await {
            Err(Error::Conflict(_)) => debug!("write conflict; re-reading"),
            other => return other,
        }
    }
    Err(Error::Conflict(CONFLICT_RETRIES))
}

/// Moving the Secret or the JWKS ConfigMap to another name would orphan the keys workloads
/// mount (and start a new key without publishLead): refused once the set has written them.
fn renamed(set: &JwtKeySet, valid: &ValidSpec) -> Option<InvalidSpec> {
    let status = set.status.as_ref()?;
    let moved = |field: &str, old: &Option<String>, new: &str| {
        old.as_deref().filter(|old| *old != new).map(|old| InvalidSpec {
            field: field.to_string(),
            problem: format!(
                "cannot change from {old:?} to {new:?}: workloads mount {old:?}, and its keys would be \
                 orphaned. Set it back, or delete and re-create the JwtKeySet"
            ),
        })
    };
    moved("spec.secretName", &status.secret_name, &valid.secret_name).or_else(|| {
        moved(
            "spec.jwks.configMapName",
            &status.config_map_name,
            &valid.config_map_name,
        )
    })
}

pub fn error_policy(set: Arc<JwtKeySet>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_failed(&set.namespace().unwrap_or_default(), &set.name_any());
    warn!(set = %set.name_any(), namespace = set.namespace().unwrap_or_default(), %error, "reconcile failed");
    match error {
        Error::Conflict(_) => Action::requeue(Duration::from_millis(500)),
        Error::NotLeader(_) => Action::requeue(Duration::from_secs(2)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

fn owned_by(meta: &ObjectMeta, set: &JwtKeySet) -> bool {
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

fn labels(set: &JwtKeySet) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (KEY_SET_LABEL.to_string(), set.name_any()),
    ])
}

/// Our metadata on an object we manage; true when something had to change.
fn claim(meta: &mut ObjectMeta, set: &JwtKeySet) -> bool {
    let mut changed = false;
    let have = meta.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in labels(set) {
        if have.get(&k) != Some(&v) {
            have.insert(k, v);
            changed = true;
        }
    }
    changed
}

fn conflict_or(e: kube::Error) -> Error {
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

/// The Secret with `layout` as its data: data keys outside the documented layout are kept.
/// `None` when the Secret read already is exactly that.
fn desired_secret(
    set: &JwtKeySet,
    ns: &str,
    name: &str,
    current: Option<&Secret>,
    layout: BTreeMap<String, k8s_openapi::ByteString>,
) -> Option<Secret> {
    let Some(current) = current else {
        return Some(Secret {
            metadata: new_meta(name, ns, set),
            type_: Some("Opaque".into()),
            data: Some(layout),
            ..Secret::default()
        });
    };
    let mut secret = current.clone();
    let mut data: BTreeMap<_, _> = current
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| !store::is_layout_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    data.extend(layout);
    let relabelled = claim(&mut secret.metadata, set);
    if !relabelled && current.data.as_ref() == Some(&data) {
        return None;
    }
    secret.data = Some(data);
    Some(secret)
}

/// The JWKS ConfigMap holding `jwks` (and nothing else); `None` when the one read already is.
fn desired_config_map(
    set: &JwtKeySet,
    ns: &str,
    valid: &ValidSpec,
    current: Option<&ConfigMap>,
    jwks: String,
) -> Option<ConfigMap> {
    let data = BTreeMap::from([(valid.jwks_key.clone(), jwks)]);
    let Some(current) = current else {
        return Some(ConfigMap {
            metadata: new_meta(&valid.config_map_name, ns, set),
            data: Some(data),
            ..ConfigMap::default()
        });
    };
    let mut map = current.clone();
    let relabelled = claim(&mut map.metadata, set);
    if !relabelled && map.data.as_ref() == Some(&data) && map.binary_data.is_none() {
        return None;
    }
    map.data = Some(data);
    map.binary_data = None;
    Some(map)
}

async fn sync(
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    valid: &ValidSpec,
    ctx: &Context,
    ns: &str,
) -> Result<Action, Error> {
    let mut now = (ctx.clock)();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let policy = &valid.policy;

    let mut secret = secrets.get_opt(&valid.secret_name).await?;
    if secret.as_ref().is_some_and(|s| !owned_by(&s.metadata, set)) {
        return report_blocked(
            set,
            sets,
            ctx,
            Blocked::SecretConflict(valid.secret_name.clone()),
        )
        .await;
    }
    let mut map = maps.get_opt(&valid.config_map_name).await?;
    // Someone else's ConfigMap is never read as ours, nor written.
    let foreign_map = map.as_ref().is_some_and(|m| !owned_by(&m.metadata, set));
    if foreign_map {
        map = None;
    }
    let published_doc = |map: &Option<ConfigMap>| {
        store::read_jwks(
            map.as_ref()
                .and_then(|m| m.data.as_ref())
                .and_then(|d| d.get(&valid.jwks_key)),
        )
    };

    let (mut manifest, mut materials, mut hmac_published, recreated) = match &secret {
        Some(s) => match store::read_secret(s.data.as_ref().unwrap_or(&BTreeMap::new())) {
            Ok(stored) => (
                stored.manifest,
                stored.materials,
                stored.hmac_published,
                false,
            ),
            Err(e) => {
                return report_blocked(set, sets, ctx, Blocked::SecretUnreadable(e.to_string()))
                    .await;
            }
        },
        None => {
            let published = published_doc(&map);
            let had_keys =
                !published.is_empty() || set.status.as_ref().is_some_and(|s| !s.keys.is_empty());
            let manifest = Manifest::recovered_from_published(&published, policy, now);
            (manifest, Materials::default(), BTreeSet::new(), had_keys)
        }
    };

    // A symmetric set publishes nothing, so another owner's ConfigMap of that name is none of
    // its business; unless public keys (from before an algorithm change) still need publishing.
    if foreign_map
        && (!policy.algorithm.is_symmetric() || manifest.keys.iter().any(|k| !k.alg.is_symmetric()))
    {
        return report_blocked(
            set,
            sets,
            ctx,
            Blocked::ConfigMapConflict(valid.config_map_name.clone()),
        )
        .await;
    }

    let mut transitions = Vec::new();
    let mut round = 0;
    let plan: Plan = loop {
        round += 1;
        // A fresh time each round: what the previous round wrote is in the cluster by now, so a
        // key seen published is stamped no earlier than its publication.
        now = (ctx.clock)();
        let mut published: BTreeSet<String> =
            published_doc(&map).into_iter().map(|k| k.kid).collect();
        published.extend(hmac_published.iter().cloned());
        let observed = Observed {
            published,
            private: materials.kids(),
        };
        let mut minted = None;
        // Key generation is CPU-bound (an RSA-4096 key takes up to a second): keep it off the
        // async workers' hot path.
        let plan = tokio::task::block_in_place(|| {
            lifecycle::plan(policy, &manifest, &observed, now, |alg, size| {
                let key = keys::generate(alg, size)?;
                let new = NewKey {
                    kid: key.kid().to_string(),
                    alg,
                    rsa_size: key.rsa_size(),
                    public_jwk: key.public_jwk().cloned(),
                };
                minted = Some(key);
                Ok::<_, KeyError>(new)
            })
        })?;
        if let Some(key) = minted.take() {
            materials.insert(key.kid().to_string(), StoredKey::from(&key));
        }
        manifest = plan.manifest.clone();
        materials.retain_needed(&manifest);
        transitions.extend(plan.transitions.iter().cloned());

        // 1 and 3: the Secret first (new private keys; the active pointer moves only once the
        // planner has seen the new key published for publishLead).
        let layout = store::render_secret(&manifest, &materials)?;
        if let Some(desired) = desired_secret(set, ns, &valid.secret_name, secret.as_ref(), layout)
        {
            let existed = secret.is_some();
            secret = Some(create_or_replace(&ctx.fence, &secrets, existed, &desired).await?);
        }
        // What verifiers sharing the Secret now see: its verification set, as written.
        hmac_published = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|data| store::read_secret(data).ok())
            .map(|stored| stored.hmac_published)
            .unwrap_or_default();
        // 2: then the JWKS verifiers read.
        if map.is_some() || manifest.keys.iter().any(|k| !k.alg.is_symmetric()) {
            let jwks = store::render_jwks(&manifest);
            if let Some(desired) = desired_config_map(set, ns, valid, map.as_ref(), jwks) {
                let existed = map.is_some();
                map = Some(create_or_replace(&ctx.fence, &maps, existed, &desired).await?);
            }
        }
        let retired: Vec<String> = plan
            .transitions
            .iter()
            .filter_map(|t| match t {
                Transition::Retired { kid, .. } => Some(kid.clone()),
                _ => None,
            })
            .collect();
        // Count retention from the acknowledged write; the next round persists the change.
        let confirmed =
            !retired.is_empty() && manifest.confirm_retired(&retired, (ctx.clock)(), policy);
        if (plan.wake_at > now && !confirmed) || round >= 4 {
            break plan;
        }
    };

    // 4: report.
    if recreated {
        publish(
            ctx,
            set,
            EventType::Warning,
            "SecretRecreated",
            "Recreate",
            format!(
                "Secret {} was missing: a fresh key signs now; keys still in the JWKS stay published for their retention",
                valid.secret_name
            ),
        )
        .await;
    }
    for t in &transitions {
        announce(ctx, set, t).await;
    }
    let ready = ready_condition(set, &plan, policy.algorithm.as_str(), now);
    let status = status_for(set, valid, &plan.manifest, plan.next_rotation_at, ready);
    write_status(&ctx.fence, set, sets, status).await?;
    let name = set.name_any();
    ctx.metrics.reconciled(ns, &name);
    for t in &transitions {
        if matches!(t, Transition::Activated { why, .. } if *why != Activation::Bootstrap) {
            ctx.metrics.rotated(ns, &name);
        }
    }

    let wait = plan
        .wake_at
        .duration_since(now)
        .unsigned_abs()
        .clamp(Duration::from_millis(50), MAX_REQUEUE);
    debug!(set = %set.name_any(), wake_in = ?wait, "reconciled");
    Ok(Action::requeue(wait))
}

/// Kubernetes serializes times to whole seconds: the status is computed at that precision, so
/// that what we compare with (read back from the server) can be equal and a steady state
/// writes nothing.
fn whole_seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn ready_condition(set: &JwtKeySet, plan: &Plan, alg: &str, now: Timestamp) -> Condition {
    let active = plan
        .manifest
        .active()
        .map(|k| k.kid.as_str())
        .unwrap_or("none");
    let published = plan.manifest.keys.len();
    let next = plan
        .next_rotation_at
        .map(|t| format!("; next rotation at {}", whole_seconds(t).0))
        .unwrap_or_default();
    condition(
        set,
        "True",
        "KeysReady",
        format!("{alg} key {active} signs; {published} key(s) held and published{next}"),
        now,
    )
}

fn condition(
    set: &JwtKeySet,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let previous = set
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    // Kubernetes convention: lastTransitionTime moves only when status changes.
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => whole_seconds(now),
    };
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: set.meta().generation,
        last_transition_time,
    }
}

fn status_for(
    set: &JwtKeySet,
    valid: &ValidSpec,
    manifest: &Manifest,
    next_rotation: Option<Timestamp>,
    ready: Condition,
) -> JwtKeySetStatus {
    JwtKeySetStatus {
        conditions: vec![ready],
        observed_generation: set.meta().generation,
        active_kid: manifest.active().map(|k| k.kid.clone()),
        next_rotation_time: next_rotation.map(whole_seconds),
        key_count: Some(manifest.keys.len() as i32),
        secret_name: Some(valid.secret_name.clone()),
        config_map_name: Some(valid.config_map_name.clone()),
        keys: manifest
            .keys
            .iter()
            .map(|k| KeyStatus {
                kid: k.kid.clone(),
                state: k.state.as_str().into(),
                algorithm: k.alg.as_str().into(),
                created_at: whole_seconds(k.created_at),
                published_at: k.published_at.map(whole_seconds),
                activated_at: k.activated_at.map(whole_seconds),
                retired_at: k.retired_at.map(whole_seconds),
                expires_at: k.expires_at.map(whole_seconds),
            })
            .collect(),
    }
}

/// Writes the status only when it differs from what the set shows: a steady state writes nothing.
async fn write_status(
    fence: &Fence,
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    status: JwtKeySetStatus,
) -> Result<(), Error> {
    if set.status.as_ref() == Some(&status) {
        return Ok(());
    }
    fence.check()?;
    let patch = json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "status": status,
    });
    sets.patch_status(
        &set.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Ready=False with a reason and an Event; nothing else is written.
async fn report_blocked(
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    ctx: &Context,
    blocked: Blocked,
) -> Result<Action, Error> {
    let reason = blocked.reason();
    let message = blocked.message();
    let mut status = set.status.clone().unwrap_or_default();
    let ready = condition(set, "False", reason, message.clone(), (ctx.clock)());
    let unchanged = status.conditions.iter().any(|c| {
        c.type_ == "Ready" && c.status == "False" && c.reason == reason && c.message == message
    });
    if !unchanged {
        warn!(set = %set.name_any(), reason, %message, "not ready");
        publish(ctx, set, EventType::Warning, reason, "Refuse", message).await;
    }
    status.conditions = vec![ready];
    status.observed_generation = set.meta().generation;
    write_status(&ctx.fence, set, sets, status).await?;
    // Conflicting objects may be outside our watches (not labelled): look again now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

async fn publish(
    ctx: &Context,
    set: &JwtKeySet,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    if ctx.fence.check().is_err() {
        return;
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &set.object_ref(&())).await {
        warn!(set = %set.name_any(), reason, error = %e, "could not publish event");
    }
}

async fn announce(ctx: &Context, set: &JwtKeySet, t: &Transition) {
    let name = set.name_any();
    let (type_, reason, note) = match t {
        Transition::Published { kid } => {
            debug!(set = %name, kid, "key published");
            return;
        }
        Transition::Created { kid } => (
            EventType::Normal,
            "KeyCreated",
            format!("generated key {kid}"),
        ),
        Transition::Activated { kid, why } => match why {
            Activation::Bootstrap => (
                EventType::Normal,
                "KeyActivated",
                format!("first key {kid} signs"),
            ),
            Activation::Scheduled => (
                EventType::Normal,
                "KeyActivated",
                format!("key {kid} took over on schedule"),
            ),
            Activation::Emergency => (
                EventType::Warning,
                "KeyActivated",
                format!("key {kid} signs at once: the set had no usable active key"),
            ),
        },
        Transition::Retired { kid, expires_at } => (
            EventType::Normal,
            "KeyRetired",
            format!("key {kid} stopped signing; stays published until {expires_at}"),
        ),
        Transition::Expired { kid } => (
            EventType::Normal,
            "KeyExpired",
            format!("key {kid} left the JWKS: no token it signed is still valid"),
        ),
        Transition::Revoked { kid, was_active } => (
            EventType::Warning,
            "KeyRevoked",
            format!(
                "key {kid} revoked and removed from the Secret and the JWKS{}",
                if *was_active {
                    "; it was the active key"
                } else {
                    ""
                }
            ),
        ),
        Transition::Discarded { kid } => (
            EventType::Normal,
            "KeyDiscarded",
            format!("pending key {kid} dropped: the spec asks for another kind of key"),
        ),
        Transition::Lost { kid, state } => (
            EventType::Warning,
            "KeyMaterialLost",
            format!(
                "the Secret no longer holds the private part of {} key {kid}",
                state.as_str().to_lowercase()
            ),
        ),
    };
    info!(set = %name, reason, %note, "key transition");
    publish(ctx, set, type_, reason, "Rotate", note).await;
}

/// `deletionPolicy: Retain` keeps a finalizer so the Secret and ConfigMap can be released
/// (owner references removed) before garbage collection would take them.
async fn manage_finalizer(
    fence: &Fence,
    set: &JwtKeySet,
    sets: &Api<JwtKeySet>,
    policy: DeletionPolicy,
) -> Result<(), Error> {
    let finalizers = set.finalizers();
    let has = finalizers.iter().any(|f| f == RETAIN_FINALIZER);
    let wanted = policy == DeletionPolicy::Retain;
    if has == wanted {
        return Ok(());
    }
    let mut next: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != RETAIN_FINALIZER)
        .cloned()
        .collect();
    if wanted {
        next.push(RETAIN_FINALIZER.into());
    }
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
    if !set.finalizers().iter().any(|f| f == RETAIN_FINALIZER) {
        return Ok(Action::await_change());
    }
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
    let next: Vec<String> = set
        .finalizers()
        .iter()
        .filter(|f| *f != RETAIN_FINALIZER)
        .cloned()
        .collect();
    let patch =
        json!({"metadata": {"finalizers": next, "resourceVersion": set.resource_version()}});
    ctx.fence.check()?;
    sets.patch(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(conflict_or)?;
    ctx.metrics.forget(&ns, &set.name_any());
    Ok(Action::await_change())
}
