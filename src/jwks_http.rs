//! The published JWKS over HTTP, for verifiers that fetch it rather than mount it.
//!
//! Every replica serves, the standbys too: verifiers must not lose the endpoint while the
//! leader hands over. Each reads the sets and their JWKS ConfigMaps from watch caches of its
//! own; no request reaches the API server. What is served is what the ConfigMap publishes, so
//! HTTP verifiers see a key when mounting verifiers do (the planner's `propagationDelay` covers
//! the watch's lag as it covers the kubelet's), and only public members of sound keys (a kid
//! that is its key's thumbprint), whatever a hand edit put in the ConfigMap.
//!
//! Routes, for sets whose `spec.jwks.http` asks for them:
//! - `/jwks/<namespace>/<name>.json` on any host;
//! - with an issuer, on the issuer's host: `<issuer path>/.well-known/jwks.json` and
//!   `<issuer path>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0, section 4).
//!
//! Responses carry `Cache-Control: public, max-age=N` (`Policy::http_max_age`: what keeps the
//! lead's promise behind a shared cache) and a strong `ETag`; `If-None-Match` gets a 304.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64ct::{Base64UrlUnpadded, Encoding};
use futures::{FutureExt, Stream, StreamExt};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::warn;

use crate::api::JwtKeySet;
use crate::keys::{Jwks, kid_of_public_jwk};
use crate::layout;
use crate::reconcile::{MANAGED_BY_LABEL, MANAGER, owned_by};

const JWKS_PREFIX: &str = "/jwks/";
const JWKS_SUFFIX: &str = ".json";
const ISSUER_JWKS: &str = "/.well-known/jwks.json";
const DISCOVERY: &str = "/.well-known/openid-configuration";
/// RFC 7517, section 8.5.
const JWK_SET_TYPE: &str = "application/jwk-set+json";

/// The sets and JWKS ConfigMaps this replica watches, and the documents rendered from them.
pub struct Catalog {
    sets: Vec<Store<JwtKeySet>>,
    maps: Vec<Store<ConfigMap>>,
    /// Every store has listed once: before that, a missing set is not known to be missing.
    listed: watch::Sender<bool>,
    /// Rendered documents by route, with the resourceVersions they were rendered from.
    rendered: Mutex<HashMap<String, Rendered>>,
}

#[derive(Clone)]
struct Rendered {
    /// The set, its resourceVersion, its ConfigMap, and that ConfigMap's resourceVersion.
    set: ObjectRef<JwtKeySet>,
    set_version: Option<String>,
    map: ObjectRef<ConfigMap>,
    map_version: Option<String>,
    document: Arc<Document>,
}

/// A response body ready to serve.
struct Document {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
    cache_control: HeaderValue,
}

/// Starts watching the sets and our ConfigMaps in `namespaces` (all when empty). The returned
/// future drives the watches; it runs until the process ends.
pub fn watch(
    client: &Client,
    namespaces: &[String],
) -> (Arc<Catalog>, impl Future<Output = ()> + Send + 'static) {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut streams = Vec::new();
    let (mut sets, mut maps) = (Vec::new(), Vec::new());
    for ns in scopes {
        let all = watcher::Config::default();
        let ours = all.clone().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
        let (store, stream) = cached(scoped::<JwtKeySet>(client, ns), all, |set| {
            // Only the spec is read: the status and annotations are most of a set's bytes.
            set.status = None;
            set.metadata.annotations = None;
        });
        sets.push(store);
        streams.push(stream.boxed());
        let (store, stream) = cached(scoped::<ConfigMap>(client, ns), ours, |map| {
            map.metadata.annotations = None;
            map.binary_data = None;
        });
        maps.push(store);
        streams.push(stream.boxed());
    }
    let catalog = Arc::new(Catalog {
        sets,
        maps,
        listed: watch::Sender::new(false),
        rendered: Mutex::default(),
    });
    let ready = {
        let catalog = catalog.clone();
        async move {
            let stores = catalog.sets.iter().map(|s| s.wait_until_ready().boxed());
            let maps = catalog.maps.iter().map(|s| s.wait_until_ready().boxed());
            futures::future::join_all(stores.chain(maps)).await;
            catalog.listed.send_replace(true);
        }
    };
    let driven = futures::stream::select_all(streams).for_each(|_| async {});
    let run = async move {
        futures::future::join(ready, driven).await;
    };
    (catalog, run)
}

/// A watch of `api` kept in a store, trimmed by `trim`, retried with back-off on errors.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            object.meta_mut().managed_fields = None;
            trim(object);
        })
        .reflect(writer)
        .map(|event| {
            if let Err(e) = event {
                warn!(error = %e, "watching for the JWKS endpoint");
            }
        });
    (store, stream)
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Where a request points.
enum Route<'a> {
    Jwks { namespace: &'a str, name: &'a str },
    Issuer { prefix: &'a str, discovery: bool },
}

fn route(path: &str) -> Option<Route<'_>> {
    let set_path = path.strip_prefix(JWKS_PREFIX).and_then(|rest| {
        let (namespace, file) = rest.split_once('/')?;
        let name = file.strip_suffix(JWKS_SUFFIX)?;
        let plain = |s: &str| !s.is_empty() && !s.contains('/');
        (plain(namespace) && plain(name)).then_some(Route::Jwks { namespace, name })
    });
    // Else an issuer's path, which may begin with /jwks/ too.
    if set_path.is_some() {
        return set_path;
    }
    if let Some(prefix) = path.strip_suffix(DISCOVERY) {
        return Some(Route::Issuer {
            prefix,
            discovery: true,
        });
    }
    let prefix = path.strip_suffix(ISSUER_JWKS)?;
    Some(Route::Issuer {
        prefix,
        discovery: false,
    })
}

impl Catalog {
    /// Completes once every watch has listed: until then the replica is not ready to serve.
    pub async fn listed(&self) {
        let mut listed = self.listed.subscribe();
        // The sender lives as long as `self`: waiting cannot fail while it is borrowed.
        let _ = listed.wait_for(|listed| *listed).await;
    }

    /// The response to `req` (bodies are never read).
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(header::ALLOW, allow);
            return response;
        }
        let Some(route) = route(req.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        if !*self.listed.borrow() {
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator has not read the JwtKeySets yet\n",
            );
            let retry = HeaderValue::from_static("1");
            response.headers_mut().insert(header::RETRY_AFTER, retry);
            return response;
        }
        let found = match route {
            Route::Jwks { namespace, name } => self.set(namespace, name).map(|set| (set, false)),
            Route::Issuer { prefix, discovery } => {
                let host = match host(req) {
                    Ok(host) => host,
                    Err(message) => return plain(StatusCode::BAD_REQUEST, message),
                };
                self.by_issuer(host, prefix).map(|set| (set, discovery))
            }
        };
        let document = found.and_then(|(set, discovery)| self.document(&set, discovery));
        match document {
            Some(Ok(document)) => serve(&document, req.headers()),
            Some(Err(why)) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
            None => plain(StatusCode::NOT_FOUND, "no JWKS is served here\n"),
        }
    }

    fn set(&self, namespace: &str, name: &str) -> Option<Arc<JwtKeySet>> {
        let key = ObjectRef::new(name).within(namespace);
        let set = self.sets.iter().find_map(|s| s.get(&key))?;
        set.spec.jwks.http.is_some().then_some(set)
    }

    /// The set whose issuer is `host` and `prefix`. When several name it, the oldest keeps it:
    /// a set created later (in another tenant's namespace, say) cannot take it over or down.
    fn by_issuer(&self, host: Option<&str>, prefix: &str) -> Option<Arc<JwtKeySet>> {
        let host = normal_host(host?);
        let claims = |set: &JwtKeySet| {
            let issuer = set.spec.jwks.http.as_ref()?.issuer.as_deref()?;
            let (authority, path) = split_issuer(issuer)?;
            Some(normal_host(authority) == host && path == prefix)
        };
        let matching = self
            .sets
            .iter()
            .flat_map(|s| s.state_filter(|set| claims(set) == Some(true)));
        matching.min_by_key(|set| (set.creation_timestamp(), set.uid()))
    }

    fn map(&self, key: &ObjectRef<ConfigMap>) -> Option<Arc<ConfigMap>> {
        self.maps.iter().find_map(|s| s.get(key))
    }

    /// The set's JWKS or discovery document, rendered again only when an object changed; an
    /// error when its ConfigMap holds no JWKS now (a hand edit the operator has yet to undo):
    /// better no answer, which no cache keeps, than an empty key set that caches would.
    fn document(
        &self,
        set: &JwtKeySet,
        discovery: bool,
    ) -> Option<Result<Arc<Document>, &'static str>> {
        let namespace = set.namespace()?;
        let route = format!("{namespace}/{}/{discovery}", set.name_any());
        let mut rendered = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = rendered.get(&route)
            && r.set_version == set.resource_version()
            && r.map_version == self.map(&r.map).and_then(|m| m.resource_version())
        {
            return Some(Ok(r.document.clone()));
        }
        rendered.remove(&route);
        let valid = set.validate().ok()?;
        // A set switched to HS* keeps serving the public keys its ConfigMap still publishes
        // (they verify tokens until they expire); it has nothing to discover.
        if discovery && valid.policy.algorithm.is_symmetric() {
            return None;
        }
        let map_key = ObjectRef::new(&valid.config_map_name).within(&namespace);
        // Only the set's own ConfigMap: another set naming it must not serve its keys.
        let map = self.map(&map_key).filter(|m| owned_by(&m.metadata, set))?;
        let published = map.data.as_ref()?.get(&valid.jwks_key)?;
        if !is_jwks(published) {
            return Some(Err("the JWKS ConfigMap holds no JWKS now; retry shortly\n"));
        }
        let max_age = valid.policy.http_max_age().as_secs();
        let document = Arc::new(if discovery {
            let issuer = valid.issuer.as_deref()?;
            let alg = valid.policy.algorithm.to_string();
            render(
                discovery_document(issuer, &alg),
                "application/json",
                max_age,
            )
        } else {
            render(sound_keys(published), JWK_SET_TYPE, max_age)
        });
        // Documents of deleted sets go when another is rendered (a change, not a request).
        rendered.retain(|_, r| self.sets.iter().any(|s| s.get(&r.set).is_some()));
        let entry = Rendered {
            set: ObjectRef::from_obj(set),
            set_version: set.resource_version(),
            map: map_key,
            map_version: map.resource_version(),
            document: document.clone(),
        };
        rendered.insert(route, entry);
        Some(Ok(document))
    }
}

/// A JSON object with a `keys` array, as the operator writes it.
fn is_jwks(published: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(published)
        .is_ok_and(|doc| doc.get("keys").is_some_and(serde_json::Value::is_array))
}

/// The published document's sound public keys, and only their public members.
fn sound_keys(published: &str) -> String {
    let keys = layout::read_jwks(published)
        .into_iter()
        .filter(|k| k.matches_alg() && kid_of_public_jwk(k).as_deref() == Some(k.kid.as_str()));
    Jwks {
        keys: keys.collect(),
    }
    .to_json()
}

/// OpenID Connect Discovery's required members, for an issuer that signs tokens (no
/// authorization endpoint: the Kubernetes service-account issuer publishes the same).
fn discovery_document(issuer: &str, alg: &str) -> String {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{ISSUER_JWKS}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [alg],
    })
    .to_string()
}

fn render(body: String, content_type: &'static str, max_age: i64) -> Document {
    let digest = Sha256::digest(body.as_bytes());
    let tag = Base64UrlUnpadded::encode_string(&digest[..18]);
    Document {
        body: Bytes::from(body),
        content_type,
        // Base64url and digits only: always a valid header value.
        etag: HeaderValue::from_str(&format!("\"{tag}\""))
            .unwrap_or(HeaderValue::from_static("\"\"")),
        // A cache cut off from the operator must not serve its copy past max-age (RFC 9111,
        // section 5.2.2.2): the lead counts on it.
        cache_control: HeaderValue::from_str(&format!(
            "public, max-age={max_age}, must-revalidate"
        ))
        .unwrap_or(HeaderValue::from_static("no-cache")),
    }
}

/// The document, or 304 when the client holds it (`If-None-Match`, weak comparison as RFC 9110
/// section 13.1.2 asks of GET).
fn serve(document: &Document, request: &HeaderMap) -> Response<Full<Bytes>> {
    let etag = document.etag.to_str().unwrap_or_default();
    let held = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    let mut response = if held {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(document.body.clone()));
        let content_type = HeaderValue::from_static(document.content_type);
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        r
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, document.etag.clone());
    headers.insert(header::CACHE_CONTROL, document.cache_control.clone());
    let anyone = HeaderValue::from_static("*");
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, anyone);
    response
}

/// An answer no cache may keep: a 404 cached would hide a set that asks for HTTP later.
fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The host the request was sent to: the request target's authority, else its one `Host`.
fn host<B>(req: &Request<B>) -> Result<Option<&str>, &'static str> {
    if let Some(authority) = req.uri().authority() {
        return Ok(Some(authority.as_str()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().and_then(|h| h.to_str().ok());
    if hosts.next().is_some() {
        return Err("more than one Host header\n");
    }
    Ok(host)
}

/// A host as compared: lower case, without a trailing dot or the default ports.
fn normal_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let host = host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(&host);
    host.strip_suffix('.').unwrap_or(host).to_string()
}

/// An issuer's authority and path ("" at the root).
fn split_issuer(issuer: &str) -> Option<(&str, &str)> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))?;
    Some(rest.split_at(rest.find('/').unwrap_or(rest.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_a_set_or_an_issuer_and_nothing_else() {
        assert!(matches!(
            route("/jwks/team-a/api.json"),
            Some(Route::Jwks {
                namespace: "team-a",
                name: "api"
            })
        ));
        for not_a_set in [
            "/jwks/team-a/api",
            "/jwks//api.json",
            "/jwks/a/b/c.json",
            "/",
        ] {
            assert!(route(not_a_set).is_none(), "{not_a_set}");
        }
        assert!(matches!(
            route("/t/.well-known/openid-configuration"),
            Some(Route::Issuer {
                prefix: "/t",
                discovery: true
            })
        ));
        assert!(matches!(
            route("/.well-known/jwks.json"),
            Some(Route::Issuer {
                prefix: "",
                discovery: false
            })
        ));
    }

    #[test]
    fn a_private_member_or_a_key_whose_kid_is_not_its_thumbprint_is_never_served() {
        let key = crate::keys::generate(crate::keys::Algorithm::ES256, None).unwrap();
        let mut member = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        member["d"] = "private-scalar".into();
        let forged = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA",
            "kid": "not-its-thumbprint", "alg": "ES256", "use": "sig"});
        let published = serde_json::json!({"keys": [member, forged]}).to_string();
        let served = sound_keys(&published);
        assert!(!served.contains("private-scalar") && !served.contains("\"d\""));
        assert!(!served.contains("not-its-thumbprint"));
        assert!(served.contains(key.kid()));
    }

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::watcher::Event;

    fn set(name: &str, uid: &str, created: i64, spec: serde_json::Value) -> JwtKeySet {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "jwt.keyrotator.dev/v1alpha1", "kind": "JwtKeySet",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "1",
                "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": spec,
        }))
        .unwrap()
    }

    fn map(name: &str, owner_uid: &str, document: &str) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.into());
        map.metadata.namespace = Some("ns".into());
        map.metadata.resource_version = Some(format!("{}", document.len()));
        map.metadata.owner_references = Some(vec![OwnerReference {
            controller: Some(true),
            uid: owner_uid.into(),
            ..OwnerReference::default()
        }]);
        map.data = Some([("jwks.json".to_string(), document.to_string())].into());
        map
    }

    fn catalog(sets: Vec<JwtKeySet>, maps: Vec<ConfigMap>) -> Catalog {
        let (set_store, mut set_writer) = reflector::store();
        let (map_store, mut map_writer) = reflector::store();
        for s in sets {
            set_writer.apply_watcher_event(&Event::Apply(s));
        }
        for m in maps {
            map_writer.apply_watcher_event(&Event::Apply(m));
        }
        Catalog {
            sets: vec![set_store],
            maps: vec![map_store],
            listed: watch::Sender::new(true),
            rendered: Mutex::default(),
        }
    }

    /// An ES256 key and a JWKS publishing it.
    fn one_key_jwks() -> (crate::keys::KeyMaterial, String) {
        let key = crate::keys::generate(crate::keys::Algorithm::ES256, None).unwrap();
        let jwks = Jwks {
            keys: vec![key.public_jwk().unwrap().clone()],
        }
        .to_json();
        (key, jwks)
    }

    fn get(catalog: &Catalog, host: &str, path: &str) -> Response<Full<Bytes>> {
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(())
            .unwrap();
        catalog.respond(&req)
    }

    #[test]
    fn a_set_serves_only_its_own_config_map_and_no_document_while_it_holds_garbage() {
        let (_, jwks) = one_key_jwks();
        let http = serde_json::json!({"algorithm": "ES256", "jwks": {"http": {}}});
        // "b" names a's ConfigMap: a's keys must not be served under b's path.
        let mut b_spec = http.clone();
        b_spec["jwks"]["configMapName"] = "a-jwks".into();
        let sets = vec![
            set("a", "uid-a", 1_800_000_000, http.clone()),
            set("b", "uid-b", 1_800_000_000, b_spec),
        ];
        let c = catalog(sets.clone(), vec![map("a-jwks", "uid-a", &jwks)]);
        assert_eq!(get(&c, "h", "/jwks/ns/a.json").status(), StatusCode::OK);
        let not_its_own = get(&c, "h", "/jwks/ns/b.json");
        assert_eq!(not_its_own.status(), StatusCode::NOT_FOUND);
        assert_eq!(not_its_own.headers()[header::CACHE_CONTROL], "no-store");
        // A hand edit left no JWKS: no answer a cache would keep, rather than an empty set.
        let c = catalog(sets, vec![map("a-jwks", "uid-a", "{not json")]);
        let garbage = get(&c, "h", "/jwks/ns/a.json");
        assert_eq!(garbage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(garbage.headers()[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn of_two_sets_naming_one_issuer_the_oldest_keeps_it_whatever_the_host_spelling() {
        let (key, jwks) = one_key_jwks();
        let issuer = serde_json::json!({"algorithm": "ES256",
            "jwks": {"http": {"issuer": "https://Auth.example.com/jwks/t"}}});
        let sets = vec![
            set("late", "uid-late", 1_800_000_100, issuer.clone()),
            set("early", "uid-early", 1_800_000_000, issuer),
        ];
        let maps = vec![
            map("early-jwks", "uid-early", &jwks),
            map("late-jwks", "uid-late", "{\"keys\":[]}"),
        ];
        let c = catalog(sets, maps);
        // An issuer path under /jwks/ is an issuer's, not a set's.
        for host in [
            "auth.example.com",
            "AUTH.example.com.",
            "auth.example.com:443",
        ] {
            let r = get(&c, host, "/jwks/t/.well-known/jwks.json");
            assert_eq!(r.status(), StatusCode::OK, "{host}");
        }
        let r = get(&c, "auth.example.com", "/jwks/t/.well-known/jwks.json");
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()));
        let body = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
        assert!(body.contains(key.kid()), "the oldest set's keys: {body}");
        assert_eq!(
            get(&c, "other.example.com", "/jwks/t/.well-known/jwks.json").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn a_set_switched_to_hmac_serves_the_public_keys_its_config_map_still_publishes() {
        let (key, jwks) = one_key_jwks();
        let spec = serde_json::json!({"algorithm": "HS256",
            "jwks": {"http": {"issuer": "https://auth.example.com"}}});
        let switched = set("a", "uid-a", 1_800_000_000, spec.clone());
        let c = catalog(vec![switched], vec![map("a-jwks", "uid-a", &jwks)]);
        let r = get(&c, "h", "/jwks/ns/a.json");
        assert_eq!(r.status(), StatusCode::OK);
        let body = futures::executor::block_on(http_body_util::BodyExt::collect(r.into_body()));
        let body = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
        assert!(body.contains(key.kid()), "{body}");
        let discovery = get(&c, "auth.example.com", "/.well-known/openid-configuration");
        assert_eq!(discovery.status(), StatusCode::NOT_FOUND);
        // An HS* set that never published public keys has no ConfigMap: nothing is served.
        let c = catalog(vec![set("a", "uid-a", 1_800_000_000, spec)], vec![]);
        assert_eq!(
            get(&c, "h", "/jwks/ns/a.json").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_document_of_a_deleted_set_goes_when_another_is_rendered() {
        let (_, jwks) = one_key_jwks();
        let http = serde_json::json!({"algorithm": "ES256", "jwks": {"http": {}}});
        let (a, b) = (
            set("a", "uid-a", 1_800_000_000, http.clone()),
            set("b", "uid-b", 1_800_000_000, http),
        );
        let (set_store, mut sets) = reflector::store();
        let (map_store, mut maps) = reflector::store();
        for s in [&a, &b] {
            sets.apply_watcher_event(&Event::Apply(s.clone()));
        }
        for m in [map("a-jwks", "uid-a", &jwks), map("b-jwks", "uid-b", &jwks)] {
            maps.apply_watcher_event(&Event::Apply(m));
        }
        let c = Catalog {
            sets: vec![set_store],
            maps: vec![map_store],
            listed: watch::Sender::new(true),
            rendered: Mutex::default(),
        };
        for path in ["/jwks/ns/a.json", "/jwks/ns/b.json"] {
            assert_eq!(get(&c, "h", path).status(), StatusCode::OK);
        }
        sets.apply_watcher_event(&Event::Delete(a));
        // b's ConfigMap changes (another resourceVersion): b is rendered again.
        maps.apply_watcher_event(&Event::Apply(map("b-jwks", "uid-b", "{\"keys\":[]}")));
        assert_eq!(get(&c, "h", "/jwks/ns/b.json").status(), StatusCode::OK);
        let routes: Vec<String> = c.rendered.lock().unwrap().keys().cloned().collect();
        assert_eq!(routes, ["ns/b/false"]);
    }

    #[test]
    fn if_none_match_with_the_etag_weak_or_in_a_list_gets_304_and_no_body() {
        let document = render("{\"keys\":[]}".into(), JWK_SET_TYPE, 600);
        let etag = document.etag.to_str().unwrap().to_string();
        for held in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&held).unwrap());
            let response = serve(&document, &headers);
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{held}");
            assert_eq!(response.headers()[header::ETAG], document.etag);
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        let response = serve(&document, &headers);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=600, must-revalidate"
        );
    }
}
