//! Copies of a set's JWKS ConfigMap in verifier namespaces (`spec.jwks.copies`): which
//! namespaces get one, writing them with the JWKS, withdrawing them, and what is reported.
//!
//! A copy is written right after the JWKS ConfigMap, in the same write of the core
//! (`ObjectApi::put_jwks`), and that write fails unless every copy that can be written was:
//! the core stamps a key's publication when it returns, so `publishLead` counts from the
//! moment the last copy carries the key. A copy that exists is evidence of what verifiers in
//! its namespace hold: a key it lacks is not published for them (the shell narrows the
//! published keys to what every copy carries, and writes them again), so a copy write that
//! failed after the set's own ConfigMap took a key holds that key's lead back.
//!
//! A JwtKeySet is a tenant's object: in cluster mode a namespace receives copies only when it
//! says so (`ACCEPT_LABEL`), so that no set can write into a namespace it merely names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::api::{JwtKeySet, ValidCopies};
use crate::cache::{Absent, Freshness};
use crate::reconcile::{Context, Error, MANAGED_BY_LABEL, MANAGER, conflict_or, labels};

/// The label by which a namespace accepts JWKS copies (cluster mode): `"true"`.
pub const ACCEPT_LABEL: &str = "jwt.keyrotator.dev/accept-jwks-copies";
/// On a copy: the set it copies, as `<namespace>/<name>`.
pub const COPY_OF_ANNOTATION: &str = "jwt.keyrotator.dev/copy-of";
/// Held while a set has (or asks for) copies: they are in other namespaces, where an owner
/// reference cannot reach, so the operator withdraws them itself when the set is deleted.
pub const COPIES_FINALIZER: &str = "jwt.keyrotator.dev/copies";

/// The namespaces this operator may copy into.
pub enum Scope {
    /// Every namespace (cluster mode): a selector is matched against this watch of them.
    All(Store<PartialObjectMeta<Namespace>>),
    /// Only these (namespaced mode): its RBAC reaches no further, and it cannot list
    /// namespaces, so a selector cannot be evaluated.
    Only(BTreeSet<String>),
}

/// Why a namespace asked for has no current copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A ConfigMap of that name is not a copy of this set: it is left untouched.
    Foreign,
    /// Outside the namespaces this operator watches (namespaced mode): never written.
    NotWatched,
    /// The namespace does not carry `ACCEPT_LABEL` (cluster mode): never written.
    NotAccepted,
    /// No such namespace.
    Missing,
    /// The API server refused the write (RBAC, a namespace being deleted, a policy).
    Refused,
    /// The write failed (an error the API server may not repeat): retried, and until it
    /// succeeds no key this copy lacks counts as published.
    Failed(String),
}

/// The copies of one set in one pass: where they go, and what happened there.
pub struct Copies {
    pub spec: ValidCopies,
    /// The namespaces a copy is written to.
    pub targets: BTreeSet<String>,
    /// Namespaces asked for that hold no current copy, and why.
    pub problems: BTreeMap<String, Problem>,
    /// A selector asked for in namespaced mode, where it cannot be evaluated.
    pub selector_ignored: bool,
    /// The namespaces have not been listed yet (a replica just started): nothing is written or
    /// withdrawn.
    pub unsure: bool,
}

impl Copies {
    /// Where the copies of a set in `own_ns`, whose JWKS ConfigMap is `source`, go.
    pub fn plan(spec: &ValidCopies, own_ns: &str, source: &str, scope: &Scope) -> Copies {
        let mut wanted: BTreeSet<String> = spec.namespaces.clone();
        let (mut selector_ignored, mut unsure) = (false, false);
        if let Some(selector) = &spec.selector {
            match scope {
                Scope::All(namespaces) => wanted.extend(selected(namespaces, selector)),
                Scope::Only(_) => selector_ignored = true,
            }
        }
        // The set's own ConfigMap is the source, not a copy of itself.
        if spec.config_map_name == source {
            wanted.remove(own_ns);
        }
        let mut problems = BTreeMap::new();
        match scope {
            Scope::Only(watched) => {
                for ns in wanted.iter().filter(|ns| !watched.contains(*ns)) {
                    problems.insert(ns.clone(), Problem::NotWatched);
                }
                wanted.retain(|ns| watched.contains(ns));
            }
            Scope::All(namespaces) if !listed(namespaces) => unsure = true,
            Scope::All(namespaces) => {
                for ns in &wanted {
                    match namespaces.get(&ObjectRef::new(ns)) {
                        None => problems.insert(ns.clone(), Problem::Missing),
                        Some(meta) if !accepts(&meta) => {
                            problems.insert(ns.clone(), Problem::NotAccepted)
                        }
                        Some(_) => None,
                    };
                }
                wanted.retain(|ns| !problems.contains_key(ns));
            }
        }
        Copies {
            spec: spec.clone(),
            targets: wanted,
            problems,
            selector_ignored,
            unsure,
        }
    }

    /// The copies of `set` that exist in the target namespaces (as the cache holds them).
    pub fn existing(&self, ctx: &Context, set: &JwtKeySet) -> Vec<Arc<ConfigMap>> {
        let name = &self.spec.config_map_name;
        let copies = self.targets.iter();
        let cached = copies.filter_map(|ns| ctx.caches.config_maps.peek(ns, name));
        cached.filter(|m| is_copy_of(&m.metadata, set)).collect()
    }

    /// Whether a copy in `ns` named `name` is still wanted, or may be (a namespace with a
    /// problem keeps the copy it has: a stale JWKS beats none).
    pub fn keeps(&self, ns: &str, name: &str) -> bool {
        let asked = self.targets.contains(ns) || self.problems.contains_key(ns);
        self.unsure || (asked && self.spec.config_map_name == name)
    }

    /// Writes `document` to every target whose copy differs (none in a steady state).
    /// Every target is tried; then the first failure is returned (a conflict first, so that the
    /// pass is retried from a fresh read), so that no key counts as published while a copy
    /// that could be written lacks it.
    pub async fn write(
        &mut self,
        ctx: &Context,
        set: &JwtKeySet,
        document: &str,
    ) -> Result<u32, Error> {
        if self.unsure {
            return Err(Error::NotListed);
        }
        let (mut writes, mut failed, mut conflict) = (0, None, None);
        for ns in self.targets.clone() {
            match put_copy(ctx, set, &ns, &self.spec, document).await {
                Ok(Written::Unchanged) => {}
                Ok(Written::Wrote) => writes += 1,
                Ok(Written::Not(problem)) => {
                    self.problems.insert(ns.clone(), problem);
                    self.targets.remove(&ns);
                }
                Err(e @ Error::Conflict(_)) => conflict = Some(e),
                Err(e) => {
                    self.problems
                        .insert(ns.clone(), Problem::Failed(failure(&e)));
                    failed.get_or_insert(Error::Copy {
                        namespace: ns.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
        match conflict.or(failed) {
            Some(e) => Err(e),
            None => Ok(writes),
        }
    }

    /// The namespaces that hold a current copy.
    pub fn current(&self) -> &BTreeSet<String> {
        &self.targets
    }
}

fn listed(namespaces: &Store<PartialObjectMeta<Namespace>>) -> bool {
    matches!(namespaces.wait_until_ready().now_or_never(), Some(Ok(())))
}

fn accepts(namespace: &PartialObjectMeta<Namespace>) -> bool {
    namespace.labels().get(ACCEPT_LABEL).map(String::as_str) == Some("true")
}

/// What a failed copy write says in the status: the API server's reason and code, never its
/// message (which may name what a tenant should not learn).
fn failure(e: &Error) -> String {
    match e {
        Error::Kube(kube::Error::Api(s)) => format!("{} ({})", s.reason, s.code),
        Error::NotLeader(_) => "not the leader".into(),
        _ => "no answer from the API server".into(),
    }
}

/// Namespaces whose labels `selector` matches and that accept copies, but not those being
/// deleted.
fn selected(namespaces: &Store<PartialObjectMeta<Namespace>>, selector: &Selector) -> Vec<String> {
    namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| accepts(ns) && selector.matches(&ns.labels().clone()))
        .map(|ns| ns.name_any())
        .collect()
}

/// Whether `meta` is a copy of `set` (its annotation, and our label).
pub fn is_copy_of(meta: &ObjectMeta, set: &JwtKeySet) -> bool {
    let ours = meta.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL));
    let of = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(COPY_OF_ANNOTATION));
    ours.map(String::as_str) == Some(MANAGER) && of == Some(&copy_of(set))
}

fn copy_of(set: &JwtKeySet) -> String {
    format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())
}

/// The set a ConfigMap is a copy of, from its annotation: what its watch event triggers.
pub fn source_of(map: &ConfigMap) -> Option<ObjectRef<JwtKeySet>> {
    let of = map.annotations().get(COPY_OF_ANNOTATION)?;
    let (ns, name) = of.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

enum Written {
    Unchanged,
    Wrote,
    Not(Problem),
}

/// The copy in `ns` as it should be, from what is there (`existing`) or anew.
fn desired(
    set: &JwtKeySet,
    ns: &str,
    spec: &ValidCopies,
    existing: Option<ConfigMap>,
    document: &str,
) -> ConfigMap {
    let mut map = existing.unwrap_or_else(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(spec.config_map_name.clone()),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    });
    map.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels(set));
    map.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(COPY_OF_ANNOTATION.into(), copy_of(set));
    map.data = Some(BTreeMap::from([(spec.key.clone(), document.to_string())]));
    map.binary_data = None;
    map
}

async fn put_copy(
    ctx: &Context,
    set: &JwtKeySet,
    ns: &str,
    spec: &ValidCopies,
    document: &str,
) -> Result<Written, Error> {
    let name = spec.config_map_name.as_str();
    // The cache holds every ConfigMap carrying our label; one without it is created over
    // (AlreadyExists tells), never overwritten unread.
    let cached = ctx
        .caches
        .config_maps
        .read(&ctx.client, (ns, name), Absent::Trust, Freshness::Cache)
        .await?;
    let existing = match cached {
        Some(map) if !is_copy_of(&map.metadata, set) => return Ok(Written::Not(Problem::Foreign)),
        other => other,
    };
    let wanted = desired(set, ns, spec, existing.clone(), document);
    if existing.as_ref() == Some(&wanted) {
        return Ok(Written::Unchanged);
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    ctx.fence.check()?;
    let written = match &existing {
        Some(_) => api.replace(name, &PostParams::default(), &wanted).await,
        None => api.create(&PostParams::default(), &wanted).await,
    };
    match written {
        Ok(map) => {
            ctx.caches.config_maps.wrote(&map);
            Ok(Written::Wrote)
        }
        // Created over one the cache does not hold: someone else's, or ours whose label was
        // removed by hand, which no longer reads as ours (`is_copy_of`): both are reported.
        Err(kube::Error::Api(s)) if s.code == 409 && existing.is_none() => {
            match api.get_opt(name).await? {
                Some(map) if is_copy_of(&map.metadata, set) => {
                    let wanted = desired(set, ns, spec, Some(map), document);
                    ctx.fence.check()?;
                    let map = api
                        .replace(name, &PostParams::default(), &wanted)
                        .await
                        .map_err(conflict_or)?;
                    ctx.caches.config_maps.wrote(&map);
                    Ok(Written::Wrote)
                }
                Some(_) => Ok(Written::Not(Problem::Foreign)),
                None => Err(Error::Conflict(1)),
            }
        }
        // A copy refused its creation is reported and holds nothing up: no verifier there
        // holds an older one. A copy that exists and cannot be updated is a failure (below):
        // verifiers there hold it, and no key it lacks may count as published.
        Err(kube::Error::Api(s)) if s.code == 403 && existing.is_none() => {
            Ok(Written::Not(Problem::Refused))
        }
        Err(kube::Error::Api(s)) if s.code == 404 && existing.is_none() => {
            Ok(Written::Not(Problem::Missing))
        }
        Err(e) => Err(conflict_or(e)),
    }
}

/// Every copy of `set` the caches hold.
fn copies_of(ctx: &Context, set: &JwtKeySet) -> Vec<Arc<ConfigMap>> {
    ctx.caches
        .config_maps
        .all(|map| is_copy_of(&map.metadata, set))
}

/// Whether any copy of `set` exists (as far as the caches know).
pub fn any(ctx: &Context, set: &JwtKeySet) -> bool {
    !copies_of(ctx, set).is_empty()
}

/// Deletes the copies of `set` that `keep` does not want: a namespace that stopped matching,
/// a name or key changed, the set deleted. Conditional on the version read.
pub async fn withdraw(
    ctx: &Context,
    set: &JwtKeySet,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<u32, Error> {
    let mut deleted = 0;
    for map in copies_of(ctx, set) {
        let (ns, name) = (map.namespace().unwrap_or_default(), map.name_any());
        if keep(&ns, &name) {
            continue;
        }
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: map.resource_version(),
                uid: map.meta().uid.clone(),
            }),
            ..DeleteParams::default()
        };
        ctx.fence.check()?;
        match api.delete(&name, &params).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(conflict_or(e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn spec(namespaces: &[&str], selector: Option<LabelSelector>) -> ValidCopies {
        ValidCopies {
            config_map_name: "gateway-jwks".into(),
            key: "jwks.json".into(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            selector: selector.map(|s| Selector::try_from(s).expect("a valid selector")),
        }
    }

    fn namespace(
        name: &str,
        labels: &[(&str, &str)],
        deleting: bool,
    ) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.into());
        meta.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if deleting {
            meta.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
            );
        }
        meta
    }

    fn store(namespaces: Vec<PartialObjectMeta<Namespace>>) -> Store<PartialObjectMeta<Namespace>> {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for ns in namespaces {
            writer.apply_watcher_event(&Event::InitApply(ns));
        }
        writer.apply_watcher_event(&Event::InitDone);
        reader
    }

    const ACCEPTS: (&str, &str) = (ACCEPT_LABEL, "true");

    #[test]
    fn names_and_a_selector_add_up_among_namespaces_that_accept_copies() {
        let all = Scope::All(store(vec![
            namespace("gw", &[("jwks", "yes"), ACCEPTS], false),
            namespace("team-b", &[("jwks", "yes"), ACCEPTS], false),
            namespace("named", &[ACCEPTS], false),
            namespace("leaving", &[("jwks", "yes"), ACCEPTS], true),
            namespace("closed", &[("jwks", "yes")], false),
            namespace("kube-system", &[], false),
            namespace("other", &[ACCEPTS], false),
        ]));
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("jwks".into(), "yes".into())])),
            ..LabelSelector::default()
        };
        let asked = spec(&["named", "kube-system", "nowhere"], Some(selector));
        let copies = Copies::plan(&asked, "home", "home-jwks", &all);
        let targets: Vec<&str> = copies.targets.iter().map(String::as_str).collect();
        assert_eq!(targets, ["gw", "named", "team-b"]);
        assert_eq!(
            copies.problems.get("kube-system"),
            Some(&Problem::NotAccepted)
        );
        assert_eq!(copies.problems.get("nowhere"), Some(&Problem::Missing));
        assert_eq!(copies.problems.len(), 2);
        assert!(!copies.unsure);
    }

    #[test]
    fn before_the_namespaces_are_listed_nothing_is_written_and_every_copy_is_kept() {
        let (reader, _writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let copies = Copies::plan(
            &spec(&["b"], None),
            "home",
            "home-jwks",
            &Scope::All(reader),
        );
        assert!(copies.unsure);
        assert!(copies.keeps("anywhere", "any-name"));
    }

    #[test]
    fn a_copy_is_kept_where_it_is_wanted_or_its_namespace_has_a_problem() {
        let all = Scope::All(store(vec![
            namespace("b", &[ACCEPTS], false),
            namespace("closed", &[], false),
        ]));
        let copies = Copies::plan(&spec(&["b", "closed"], None), "home", "home-jwks", &all);
        assert!(copies.keeps("b", "gateway-jwks"));
        assert!(copies.keeps("closed", "gateway-jwks"));
        assert!(!copies.keeps("b", "old-name"));
        assert!(!copies.keeps("elsewhere", "gateway-jwks"));
    }

    #[test]
    fn the_source_itself_is_no_copy_but_another_name_in_its_namespace_is() {
        let all = Scope::All(store(vec![
            namespace("home", &[ACCEPTS], false),
            namespace("b", &[ACCEPTS], false),
        ]));
        let copies = Copies::plan(&spec(&["home", "b"], None), "home", "gateway-jwks", &all);
        assert_eq!(copies.targets, BTreeSet::from(["b".to_string()]));
        let copies = Copies::plan(&spec(&["home", "b"], None), "home", "home-jwks", &all);
        assert_eq!(
            copies.targets,
            BTreeSet::from(["b".to_string(), "home".to_string()])
        );
    }

    #[test]
    fn namespaced_mode_copies_only_into_watched_namespaces_and_says_why_not_elsewhere() {
        let only = Scope::Only(BTreeSet::from(["a".to_string(), "b".to_string()]));
        let selector = LabelSelector::default();
        let copies = Copies::plan(&spec(&["b", "c"], Some(selector)), "a", "a-jwks", &only);
        assert_eq!(copies.targets, BTreeSet::from(["b".to_string()]));
        assert_eq!(copies.problems.get("c"), Some(&Problem::NotWatched));
        assert!(copies.selector_ignored);
    }
}
