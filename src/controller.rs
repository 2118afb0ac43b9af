//! Runs the reconciler as a kube-runtime Controller over JwtKeySets, owning the Secrets and
//! ConfigMaps it writes so that a change to them (a deletion, an edit) triggers a reconcile.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::api::JwtKeySet;
use crate::leader::Fence;
use crate::metrics::Metrics;
use crate::reconcile::{self, Clock, Context, MANAGED_BY_LABEL, MANAGER};

const PRUNE_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

/// Reconciles JwtKeySets in `namespaces` (all namespaces when empty) until `shutdown`.
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    clock: Clock,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| MANAGER.to_string());
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: Some(instance),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        clock,
        Recorder::new(client.clone(), reporter),
        fence,
        metrics.clone(),
    ));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        info!(
            namespace = ns.as_deref().unwrap_or("<all>"),
            "watching JwtKeySets"
        );
        let sets: Api<JwtKeySet> = scoped(&client, ns.as_deref());
        let secrets: Api<Secret> = scoped(&client, ns.as_deref());
        let maps: Api<ConfigMap> = scoped(&client, ns.as_deref());
        // Only our own objects are watched (and cached): never every Secret in the cluster.
        let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
        let controller = Controller::new(sets, watcher::Config::default())
            .owns(secrets, ours.clone())
            .owns(maps, ours);
        // Deleted sets (without a finalizer no reconcile sees them go) leave the metrics.
        let store = controller.store();
        let pruned = metrics.clone();
        let scope = ns.clone();
        let pruner = tokio::spawn(async move {
            loop {
                tokio::time::sleep(PRUNE_PERIOD).await;
                pruned.retain(|l| {
                    scope.as_ref().is_some_and(|s| *s != l.namespace)
                        || store
                            .get(&ObjectRef::new(&l.name).within(&l.namespace))
                            .is_some()
                });
            }
        });
        controller
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => debug!(set = %object.name, "reconciled"),
                    Err(e) => warn!(error = %e, "controller"),
                }
            })
            .map(move |()| pruner.abort())
    });
    futures::future::join_all(controllers).await;
    info!("shut down");
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
