//! Reads of a set's Secret and ConfigMap from the operator's watch caches, with a GET only where
//! a cache cannot answer.
//!
//! Why a cached read is safe: every write carries the resourceVersion of the object it read, so a
//! stale read can never overwrite a newer object: the API server refuses the write (409), and
//! the pass is retried from a GET (`Freshness::Server`). Staleness costs a retry, never a key.
//! A GET after a conflict, rather than waiting for the cache to catch up: resourceVersions may
//! not be ordered by clients, so nothing says when the cache holds the object the write lost to;
//! one GET is bounded, and conflicts are rare (another writer, or a cache behind our own write).
//!
//! Where the cache cannot answer, the server is asked:
//! - the object is not in the cache: it may exist without our labels (a hand edit; the cache
//!   selects by them, and the repair path writes them back), or be someone else's (which must
//!   block the set before anything is written), or be deleted, or the cache has not listed yet;
//! - the cache does not hold our own last write yet (the pass our write started may outrun the
//!   watch event of that write): reading our own writes keeps a pass from weighing old evidence.
//!
//! The caller may take the cache's word that an object does not exist (`Absent::Trust`) when its
//! first write to it is a create that must come before any other: a create never overwrites
//! (409 AlreadyExists), and the pass is retried from GETs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Where a pass reads its objects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The watch cache, with a GET where it cannot answer (see the module's comment).
    Cache,
    /// The API server: after a conflict, the cache may hold what the write lost to, or not yet.
    Server,
}

/// What an object missing from the cache means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    /// Nothing: ask the API server.
    Ask,
    /// That it does not exist (see the module's comment for when that is safe).
    Trust,
}

/// One kind of object's watch caches (one per watched namespace scope) and our writes to them
/// that the caches may not show yet (resourceVersion by object).
pub struct Cached<K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + 'static> {
    stores: Vec<Store<K>>,
    written: Mutex<HashMap<(String, String), String>>,
}

impl<K> Cached<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug + 'static,
{
    pub fn new(stores: Vec<Store<K>>) -> Self {
        Cached {
            stores,
            written: Mutex::default(),
        }
    }

    /// The object `ns/name`: from the cache when it can answer, else from the API server.
    pub async fn read(
        &self,
        client: &Client,
        (ns, name): (&str, &str),
        absent: Absent,
        freshness: Freshness,
    ) -> Result<Option<K>, kube::Error> {
        if freshness == Freshness::Cache
            && let Some(answer) = self.cached(ns, name, absent)
        {
            return Ok(answer);
        }
        let api: Api<K> = Api::namespaced(client.clone(), ns);
        let read = api.get_opt(name).await?;
        // Whatever we wrote before this GET, the GET shows it or something newer.
        self.forget(ns, name);
        Ok(read)
    }

    /// `Some(answer)` when the cache can answer; `None` when the server must be asked.
    fn cached(&self, ns: &str, name: &str, absent: Absent) -> Option<Option<K>> {
        if !self.ready() {
            return None;
        }
        let cached = self.peek(ns, name);
        let written = self
            .written
            .lock()
            .ok()?
            .get(&(ns.into(), name.into()))
            .cloned();
        match (cached, written) {
            (None, None) if absent == Absent::Trust => Some(None),
            (None, _) => None,
            (Some(object), Some(rv)) if object.resource_version().as_ref() != Some(&rv) => None,
            (Some(object), _) => {
                self.forget(ns, name);
                Some(Some(Arc::unwrap_or_clone(object)))
            }
        }
    }

    /// Whether every store has listed: before that, a missing object may exist.
    pub fn ready(&self) -> bool {
        self.stores
            .iter()
            .all(|s| matches!(s.wait_until_ready().now_or_never(), Some(Ok(()))))
    }

    /// The cached object `ns/name`, without asking the API server.
    pub fn peek(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name).within(ns);
        self.stores.iter().find_map(|s| s.get(&key))
    }

    /// Every cached object `keep` wants (the caches hold only objects carrying our label).
    pub fn all(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|o| keep(o))
            .collect()
    }

    /// Remembers the resourceVersion of our write, until the cache (or a GET) shows it.
    pub fn wrote(&self, object: &K) {
        let (Some(ns), Some(rv)) = (object.namespace(), object.resource_version()) else {
            return;
        };
        if let Ok(mut written) = self.written.lock() {
            written.insert((ns, object.name_any()), rv);
        }
    }

    fn forget(&self, ns: &str, name: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(&(ns.to_string(), name.to_string()));
        }
    }
}

/// The caches of the objects reconcile reads: the sets' Secrets and ConfigMaps.
pub struct Caches {
    pub secrets: Cached<Secret>,
    pub config_maps: Cached<ConfigMap>,
}

impl Caches {
    pub fn new(secrets: Vec<Store<Secret>>, config_maps: Vec<Store<ConfigMap>>) -> Self {
        Caches {
            secrets: Cached::new(secrets),
            config_maps: Cached::new(config_maps),
        }
    }
}
