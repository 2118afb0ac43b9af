//! Runs the reconciler as a kube-runtime Controller over JwtKeySets, owning the Secrets and
//! ConfigMaps it writes so that a change to them (a deletion, an edit) triggers a reconcile.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Config;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::api::JwtKeySet;
use crate::cache::Caches;
use crate::copies;
use crate::leader::Fence;
use crate::metrics::Metrics;
use crate::reconcile::{self, Clock, Context, MANAGED_BY_LABEL, MANAGER};

/// Reconciles JwtKeySets in `namespaces` (all namespaces when empty) until `shutdown`, at most
/// `concurrency` sets at a time per namespace watched.
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    clock: Clock,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let (scopes, copy_scope, mut namespace_events) = if namespaces.is_empty() {
        let (events, store) = watched_namespaces(&client);
        (vec![None], copies::Scope::All(store), Some(events))
    } else {
        let only = copies::Scope::Only(namespaces.iter().cloned().collect());
        (namespaces.into_iter().map(Some).collect(), only, None)
    };
    let (mut secret_stores, mut map_stores) = (vec![], vec![]);
    let controllers: Vec<Controller<JwtKeySet>> = scopes
        .into_iter()
        .map(|ns| {
            info!(
                namespace = ns.as_deref().unwrap_or("<all>"),
                "watching JwtKeySets"
            );
            let (sets, set_store) = watched_sets(scoped(&client, ns.as_deref()));
            let (secrets, secret_store) = owned(scoped::<Secret>(&client, ns.as_deref()));
            let (maps, map_store) = owned(scoped::<ConfigMap>(&client, ns.as_deref()));
            secret_stores.push(secret_store);
            map_stores.push(map_store);
            let copying = set_store.clone();
            // Bounded: with every due set at once, memory grew with the sets due (each pass
            // holds its objects and its requests), and the API server queued them all anyway.
            // Sets beyond the bound wait in the scheduler, a key each, in due order.
            let controller = Controller::for_stream(sets, set_store)
                .with_config(Config::default().concurrency(concurrency))
                .owns_stream(secrets)
                .watches_stream(maps, map_triggers);
            match namespace_events.take() {
                // A namespace created, labelled or deleted: the sets that copy by selector.
                Some(events) => {
                    controller.watches_stream(events, move |_| copying_by_selector(&copying))
                }
                None => controller,
            }
        })
        .collect();
    let caches = Caches::new(secret_stores, map_stores);
    let ctx = Arc::new(Context::new(
        client.clone(),
        clock,
        reporter(),
        fence,
        metrics.clone(),
        caches,
        copy_scope,
    ));
    // Per-set series are read from these watch caches at scrape time, and only while this
    // replica runs the controllers: a deleted set, or a standby, reports none.
    let _observing = metrics.observe(controllers.iter().map(Controller::store).collect());
    let running = controllers.into_iter().map(|controller| {
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => debug!(set = %object.name, "reconciled"),
                    Err(e) => warn!(error = %e, "controller"),
                }
            })
    });
    futures::future::join_all(running).await;
    info!("shut down");
}

/// Who reports Events: this pod.
fn reporter() -> Reporter {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| MANAGER.to_string());
    Reporter {
        controller: MANAGER.into(),
        instance: Some(instance),
    }
}

/// Annotations the operator never reads and never writes back (it only patches the sets).
const UNREAD_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// The JwtKeySets, kept in a cache (the controller's) without what reconcile never reads: the
/// managedFields (a few KiB a set, most of what the cache held) and kubectl's copy of the spec.
fn watched_sets(
    api: Api<JwtKeySet>,
) -> (
    impl Stream<Item = Result<JwtKeySet, watcher::Error>> + Send + 'static,
    Store<JwtKeySet>,
) {
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .modify(|set: &mut JwtKeySet| {
            set.metadata.managed_fields = None;
            if let Some(annotations) = set.metadata.annotations.as_mut() {
                annotations.retain(|k, _| !UNREAD_ANNOTATIONS.contains(&k.as_str()));
            }
        })
        .reflect(writer)
        .applied_objects();
    (stream, store)
}

/// A watch of our own objects of one kind (by label: never every Secret in the cluster), kept
/// in a cache that reconcile reads, and the stream of changes that triggers the owner's pass.
/// The cache keeps no managedFields: reconcile never reads them, and a replace that omits them
/// leaves them as they are on the server.
fn owned<K>(
    api: Api<K>,
) -> (
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let (store, writer) = reflector::store();
    let stream = watcher(api, ours)
        .modify(|object: &mut K| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (stream, store)
}

/// What a ConfigMap's change triggers: the set that owns it (its JWKS ConfigMap), or the set it
/// is a copy of (a copy lives in another namespace, where no owner reference reaches).
fn map_triggers(map: ConfigMap) -> Vec<ObjectRef<JwtKeySet>> {
    let ns = map.namespace();
    let kind = JwtKeySet::kind(&());
    let api_version = JwtKeySet::api_version(&());
    let owners = map
        .owner_references()
        .iter()
        .filter(|r| r.kind == kind && r.api_version == api_version)
        .map(|r| {
            let owner = ObjectRef::new(&r.name);
            match &ns {
                Some(ns) => owner.within(ns),
                None => owner,
            }
        });
    owners.chain(copies::source_of(&map)).collect()
}

/// The sets that copy their JWKS into namespaces chosen by label.
fn copying_by_selector(sets: &Store<JwtKeySet>) -> Vec<ObjectRef<JwtKeySet>> {
    let by_selector = |s: &JwtKeySet| {
        let copies = s.spec.jwks.copies.as_ref();
        copies.is_some_and(|c| c.namespace_selector.is_some())
    };
    sets.state()
        .iter()
        .filter(|s| by_selector(s))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// Every namespace's metadata (cluster mode only: namespaced RBAC cannot list them), for
/// `spec.jwks.copies.namespaceSelector`; and the changes, which trigger the sets that copy.
fn watched_namespaces(
    client: &Client,
) -> (
    impl Stream<Item = Result<PartialObjectMeta<Namespace>, watcher::Error>> + Send + 'static,
    Store<PartialObjectMeta<Namespace>>,
) {
    let (store, writer) = reflector::store();
    // Metadata only: a PartialObjectMeta Api asks for nothing else.
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .modify(|ns| ns.metadata.managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (stream, store)
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
