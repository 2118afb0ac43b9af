//! Copies of a set's JWKS ConfigMap in verifier namespaces (`spec.jwks.copies`): which
//! namespaces get one, writing them with the JWKS, withdrawing them, and what is reported.
//!
//! A copy is written right after the JWKS ConfigMap, in the same write of the core
//! (`ObjectApi::put_jwks`): the core stamps a key's publication when that write returns, so
//! `publishLead` counts from the moment the last copy carries the key. A copy is never read
//! as evidence: the set's own ConfigMap is; a copy edited by hand is written again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::core::{PartialObjectMeta, Selector, SelectorExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::api::{JwtKeySet, ValidCopies};
use crate::cache::{Absent, Freshness};
use crate::reconcile::{Context, Error, MANAGED_BY_LABEL, MANAGER, conflict_or, labels};

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
    /// The API server refused the write (RBAC, a namespace missing or being deleted).
    Refused(String),
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
}

impl Copies {
    /// Where the copies of a set in `own_ns`, whose JWKS ConfigMap is `source`, go.
    pub fn plan(spec: &ValidCopies, own_ns: &str, source: &str, scope: &Scope) -> Copies {
        let mut wanted: BTreeSet<String> = spec.namespaces.clone();
        let mut selector_ignored = false;
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
        if let Scope::Only(watched) = scope {
            for ns in wanted.iter().filter(|ns| !watched.contains(*ns)) {
                problems.insert(ns.clone(), Problem::NotWatched);
            }
            wanted.retain(|ns| watched.contains(ns));
        }
        Copies {
            spec: spec.clone(),
            targets: wanted,
            problems,
            selector_ignored,
        }
    }

    /// Writes `document` to every target whose copy differs (none in a steady state).
    pub async fn write(
        &mut self,
        ctx: &Context,
        set: &JwtKeySet,
        document: &str,
    ) -> Result<u32, Error> {
        let mut writes = 0;
        for ns in self.targets.clone() {
            match put_copy(ctx, set, &ns, &self.spec, document).await? {
                Written::Unchanged => {}
                Written::Wrote => writes += 1,
                Written::Not(problem) => {
                    self.problems.insert(ns.clone(), problem);
                    self.targets.remove(&ns);
                }
            }
        }
        Ok(writes)
    }

    /// The namespaces that hold a current copy.
    pub fn current(&self) -> &BTreeSet<String> {
        &self.targets
    }
}

/// Namespaces whose labels `selector` matches, but not those being deleted.
fn selected(namespaces: &Store<PartialObjectMeta<Namespace>>, selector: &Selector) -> Vec<String> {
    namespaces
        .state()
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter(|ns| selector.matches(&ns.labels().clone()))
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
        // Created over one the cache does not hold: someone else's, or ours with our label
        // removed by hand (then it is repaired).
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
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => {
            Ok(Written::Not(Problem::Refused(s.message)))
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

    #[test]
    fn names_and_a_selector_add_up_and_a_namespace_being_deleted_is_not_selected() {
        let all = Scope::All(store(vec![
            namespace("gw", &[("jwks", "yes")], false),
            namespace("team-b", &[("jwks", "yes")], false),
            namespace("leaving", &[("jwks", "yes")], true),
            namespace("other", &[], false),
        ]));
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("jwks".into(), "yes".into())])),
            ..LabelSelector::default()
        };
        let copies = Copies::plan(&spec(&["named"], Some(selector)), "home", "home-jwks", &all);
        let targets: Vec<&str> = copies.targets.iter().map(String::as_str).collect();
        assert_eq!(targets, ["gw", "named", "team-b"]);
        assert!(copies.problems.is_empty());
    }

    #[test]
    fn the_source_itself_is_no_copy_but_another_name_in_its_namespace_is() {
        let all = Scope::All(store(vec![]));
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
