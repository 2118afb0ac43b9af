//! Runs the reconciler as a kube-runtime Controller over JwtKeySets, owning the Secrets and
//! ConfigMaps it writes so that a change to them (a deletion, an edit) triggers a reconcile.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::api::JwtKeySet;
use crate::leader::Fence;
use crate::metrics::Metrics;
use crate::reconcile::{self, Clock, Context, MANAGED_BY_LABEL, MANAGER};

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
        reporter,
        fence,
        metrics.clone(),
    ));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers: Vec<Controller<JwtKeySet>> = scopes
        .into_iter()
        .map(|ns| {
            info!(
                namespace = ns.as_deref().unwrap_or("<all>"),
                "watching JwtKeySets"
            );
            let sets: Api<JwtKeySet> = scoped(&client, ns.as_deref());
            let secrets: Api<Secret> = scoped(&client, ns.as_deref());
            let maps: Api<ConfigMap> = scoped(&client, ns.as_deref());
            // Only our own objects are watched (and cached): never every Secret in the cluster.
            let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
            Controller::new(sets, watcher::Config::default())
                .owns(secrets, ours.clone())
                .owns(maps, ours)
        })
        .collect();
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

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
