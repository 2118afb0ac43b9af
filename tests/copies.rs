//! JWKS copies in verifier namespaces (`spec.jwks.copies`) on the real control plane, with the
//! operator watching every namespace (cluster mode): copies created by name and by namespace
//! label in namespaces that accept them (and none in those that do not), carrying a new key before the operator records it published, a foreign ConfigMap of
//! that name never touched and reported, a namespace that stops matching losing its copy, and
//! the copies withdrawn with the set. A verifier (PyJWT, reloading its keys on a schedule) reads
//! the copy in its own namespace as a mounted file and refuses no token across rotations.
//!
//! One test: an operator watching every namespace would also reconcile the sets of any other
//! test running beside it in this binary. Needs what `tests/interop/setup.sh` installs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::verifier::{Verifier, interop, sign_es256};
use support::{Operator, apply_set, client, eventually, namespace};

use jwt_key_rotator::api::JwtKeySet;
use jwt_key_rotator::copies::ACCEPT_LABEL;

const DEADLINE: Duration = Duration::from_secs(60);
const COPY: &str = "verifier-jwks";
const COPY_KEY: &str = "keys.json";
const LABEL: &str = "jwks-copy";

fn kids(doc: &str) -> BTreeSet<String> {
    let doc: Value = serde_json::from_str(doc).unwrap_or(Value::Null);
    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect()
}

/// The document a ConfigMap holds under `key`, if any.
async fn document(client: &Client, ns: &str, name: &str, key: &str) -> Option<String> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    maps.get_opt(name).await.ok()??.data?.get(key).cloned()
}

/// The pending key the manifest records as published, if any.
fn published_pending(secret: &Secret) -> Option<String> {
    let manifest = secret.data.as_ref()?.get("manifest.json")?;
    let manifest: Value = serde_json::from_slice(&manifest.0).ok()?;
    manifest["keys"].as_array()?.iter().find_map(|k| {
        let published = k["state"] == "Pending" && !k["publishedAt"].is_null();
        published.then(|| k["kid"].as_str().map(String::from))?
    })
}

/// Every version of one object a watch saw, as (resourceVersion, what `read` takes from it).
/// The kube-apiserver's resourceVersions are etcd revisions: ordered across objects and kinds
/// on one cluster, which is what lets the test say which write came first.
type Seen<T> = Arc<Mutex<Vec<(u64, T)>>>;

fn record<K, T>(api: Api<K>, name: &str, read: fn(&K) -> T) -> Seen<T>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
    T: Send + 'static,
{
    let seen: Seen<T> = Arc::default();
    let into = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut versions = std::pin::pin!(watcher(api, config).applied_objects());
        while let Some(Ok(object)) = versions.next().await {
            let rv = object.resource_version().and_then(|v| v.parse().ok());
            if let (Some(rv), Ok(mut seen)) = (rv, into.lock()) {
                seen.push((rv, read(&object)));
            }
        }
    });
    seen
}

fn copy_kids(map: &ConfigMap) -> BTreeSet<String> {
    let doc = map.data.as_ref().and_then(|d| d.get(COPY_KEY));
    doc.map(|d| kids(d)).unwrap_or_default()
}

/// The first version of the copy that carries `kid`.
fn first_carrying(copy: &Seen<BTreeSet<String>>, kid: &str) -> Option<u64> {
    let seen = copy.lock().ok()?;
    seen.iter()
        .find(|(_, kids)| kids.contains(kid))
        .map(|(rv, _)| *rv)
}

async fn make_namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let ns = namespace(client, prefix).await;
    if !labels.is_empty() {
        label_namespace(client, &ns, labels.iter().map(|(k, v)| (*k, Some(*v)))).await;
    }
    ns
}

async fn label_namespace<'a>(
    client: &Client,
    ns: &str,
    labels: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) {
    let labels: BTreeMap<&str, Option<&str>> = labels.into_iter().collect();
    let api: Api<Namespace> = Api::all(client.clone());
    api.patch(
        ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": labels}})),
    )
    .await
    .unwrap_or_else(|e| panic!("label namespace {ns}: {e}"));
}

/// The set's `CopiesReady` condition: (status, reason, message).
async fn copies_ready(client: &Client, ns: &str) -> Option<(String, String, String)> {
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), ns);
    let set = sets.get_opt("api").await.ok()??;
    let conditions = set.status?.conditions;
    let c = conditions.into_iter().find(|c| c.type_ == "CopiesReady")?;
    Some((c.status, c.reason, c.message))
}

/// A JWKS file as a pod mounting the copy reads it: the test keeps it in step with the
/// ConfigMap, swapped atomically as the kubelet does.
struct Mounted(PathBuf);

impl Mounted {
    fn mount(&self, document: &str) {
        let next = self.0.with_extension("next");
        std::fs::write(&next, document).expect("write the mounted copy");
        std::fs::rename(&next, &self.0).expect("swap the mounted copy");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The kid the Secret's signing slot holds.
fn signing_kid(secret: &Secret) -> Option<String> {
    let kid = secret.data.as_ref()?.get("kid")?;
    Some(String::from_utf8_lossy(&kid.0).trim().to_string())
}

/// An admission policy refusing every update of a ConfigMap in `ns` (a GitOps guard, a
/// webhook down): created, and waited on until the API server enforces it.
async fn refuse_updates(client: &Client, ns: &str) -> [(Api<DynamicObject>, String); 2] {
    let name = format!("refuse-updates-{ns}");
    let policy = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "resources": ["configmaps"], "operations": ["UPDATE"]}]},
            "validations": [{"expression": "false", "message": "updates refused (test)"}]}});
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}});
    let mut made = vec![];
    for (kind, object) in [
        ("ValidatingAdmissionPolicy", policy),
        ("ValidatingAdmissionPolicyBinding", binding),
    ] {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let object: DynamicObject = serde_json::from_value(object).expect("a policy object");
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {kind}: {e}"));
        made.push((api, name.clone()));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let probe = ConfigMap {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    maps.create(&PostParams::default(), &probe)
        .await
        .expect("create the probe");
    eventually("the policy to refuse updates", DEADLINE, || async {
        let mut probe = maps.get("probe").await.ok()?;
        probe.data = Some(BTreeMap::from([(
            "at".into(),
            format!("{:?}", Instant::now()),
        )]));
        match maps.replace("probe", &PostParams::default(), &probe).await {
            // A policy's refusal is 422 Invalid unless it names another reason.
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("(test)") => Some(()),
            _ => None,
        }
    })
    .await;
    let [policy, binding]: [(Api<DynamicObject>, String); 2] =
        made.try_into().expect("two objects");
    [policy, binding]
}

/// A copy that exists and cannot be updated holds the next key's publication back: the key is
/// in the set's own ConfigMap, but it is never recorded published, and never signs, until the
/// copy carries it; then it is, in that order.
async fn a_copy_that_cannot_be_updated_holds_the_next_key_back(
    client: &Client,
    home: &str,
    spec: &Value,
    accepts: (&str, &str),
) {
    let blocked = make_namespace(client, "copies-blocked", &[accepts]).await;
    let mut spec = spec.clone();
    spec["jwks"]["copies"]["namespaces"] = json!([blocked]);
    spec["jwks"]["copies"]
        .as_object_mut()
        .map(|c| c.remove("namespaceSelector"));
    apply_set(client, home, "api", spec).await;
    eventually("the copy in the new namespace", DEADLINE, || async {
        let source = document(client, home, "api-jwks", "jwks.json").await?;
        (document(client, &blocked, COPY, COPY_KEY).await? == source).then_some(())
    })
    .await;
    let policy = refuse_updates(client, &blocked).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), home);
    let signing = signing_kid(&secrets.get("api-signing-keys").await.expect("the Secret"))
        .expect("a signing key");
    // The next key, in the set's own ConfigMap but not in the copy that cannot be updated.
    let held = eventually("a key the refused copy lacks", DEADLINE, || async {
        let source = kids(&document(client, home, "api-jwks", "jwks.json").await?);
        let copy = kids(&document(client, &blocked, COPY, COPY_KEY).await?);
        source.difference(&copy).next().cloned()
    })
    .await;
    // Past the next rotation (16 s): it is never recorded published, the old key signs on.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let secret = secrets.get("api-signing-keys").await.expect("the Secret");
        assert_ne!(
            published_pending(&secret),
            Some(held.clone()),
            "{held} recorded published"
        );
        assert_eq!(
            signing_kid(&secret).as_ref(),
            Some(&signing),
            "the signing key changed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Said where people look: the pass fails (and is retried), naming the namespace.
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), home);
    let set = sets.get("api").await.expect("the set");
    let ready = set
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Ready");
    let message = ready.map(|c| c.message.clone()).unwrap_or_default();
    assert!(
        message.contains(&format!("copying the JWKS into namespace {blocked}")),
        "{message}"
    );
    // Updates allowed again: the copy takes the key, then the key is published and signs.
    for (api, name) in policy.iter().rev() {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete the policy");
    }
    // The failed passes backed off (up to ~48 s with jitter by now), then the lead runs.
    eventually(
        &format!("{held} to sign"),
        Duration::from_secs(150),
        || async {
            let secret = secrets.get_opt("api-signing-keys").await.ok()??;
            (signing_kid(&secret)? == held).then_some(())
        },
    )
    .await;
    let copy = document(client, &blocked, COPY, COPY_KEY)
        .await
        .unwrap_or_default();
    assert!(
        kids(&copy).contains(&held),
        "{held} signs; the copy lacks it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_follow_the_jwks_into_verifier_namespaces_and_leave_when_unwanted() {
    let client = client().await;
    // A namespace receives copies only when it says so: a set is a tenant's object.
    let accepts = (ACCEPT_LABEL, "true");
    let home = make_namespace(&client, "copies-home", &[]).await;
    let named = make_namespace(&client, "copies-named", &[accepts]).await;
    let selected = make_namespace(&client, "copies-selected", &[(LABEL, "yes"), accepts]).await;
    let taken = make_namespace(&client, "copies-taken", &[(LABEL, "yes"), accepts]).await;
    let closed = make_namespace(&client, "copies-closed", &[(LABEL, "yes")]).await;
    let unasked = make_namespace(&client, "copies-unasked", &[]).await;
    let theirs = ConfigMap {
        metadata: ObjectMeta {
            name: Some(COPY.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(COPY_KEY.into(), "theirs".into())])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &taken)
        .create(&PostParams::default(), &theirs)
        .await
        .expect("create the foreign ConfigMap");

    // Every namespace watched: the selector can be evaluated.
    let operator = Operator::start_with(
        ["run", "--metrics-addr", "127.0.0.1:0"]
            .map(String::from)
            .to_vec(),
        vec![],
    );
    let cache = 4;
    let spec = json!({"algorithm": "ES256", "rotationInterval": "16s", "publishLead": "6s",
        "propagationDelay": "1s", "verifierCacheTTL": format!("{cache}s"), "tokenTTL": "10s",
        "clockSkew": "1s", "jwks": {"copies": {"configMapName": COPY, "key": COPY_KEY,
        "namespaces": [named, unasked], "namespaceSelector": {"matchLabels": {LABEL: "yes"}}}}});
    apply_set(&client, &home, "api", spec.clone()).await;

    // Copies by name and by label hold the JWKS as the set's own ConfigMap publishes it.
    for ns in [&named, &selected] {
        eventually(&format!("the copy in {ns}"), DEADLINE, || async {
            let source = document(&client, &home, "api-jwks", "jwks.json").await?;
            let copy = document(&client, ns, COPY, COPY_KEY).await?;
            (copy == source && !kids(&copy).is_empty()).then_some(())
        })
        .await;
    }
    // Someone else's ConfigMap of that name is left as it is, and reported.
    let (status, reason, message) = eventually("CopiesReady=False", DEADLINE, || async {
        copies_ready(&client, &home)
            .await
            .filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "CopyConflict", "{status} {message}");
    assert!(message.contains(&taken), "{message}");
    // Named or selected, a namespace that does not accept copies gets none, and is named.
    assert!(
        message.contains(&format!("{unasked} (the namespace does not accept copies")),
        "{message}"
    );
    for ns in [&closed, &unasked] {
        assert!(
            document(&client, ns, COPY, COPY_KEY).await.is_none(),
            "a copy in {ns}"
        );
    }
    let kept = document(&client, &taken, COPY, COPY_KEY).await;
    assert_eq!(
        kept.as_deref(),
        Some("theirs"),
        "the foreign ConfigMap was written"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &home);
    let reported = events.list(&ListParams::default()).await.expect("events");
    assert!(
        reported
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("CopyConflict")),
        "no CopyConflict Event"
    );

    // Two rotations: a token every 200 ms signed with the Secret's key, verified against the
    // copy in `named`; and every version of the Secret and the copies watched, to show that a
    // pending key is recorded published only after every copy carries it (the copies are
    // written in the same write as the set's ConfigMap).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &home);
    let manifests = record(secrets.clone(), "api-signing-keys", published_pending);
    let copies = [&named, &selected].map(|ns| {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        (ns.clone(), record(maps, COPY, copy_kids))
    });
    let file = std::env::temp_dir().join(format!("copies-{}.jwks.json", std::process::id()));
    // PyJWT reading the copy as a pod mounting it would, reloading it every `cache` seconds.
    let mounted = Mounted(file.clone());
    let mut python = Command::new(interop().join(".venv/bin/python"));
    python.arg(interop().join("file_verify.py"));
    python.arg(&file).arg(cache.to_string());
    let mut verifier = Verifier::start("PyJWT", python);
    let mut token = eventually("the first key to sign", DEADLINE, || async {
        sign_es256(&secrets.get_opt("api-signing-keys").await.ok()??)
    })
    .await;
    let (mut verified, mut refused) = (BTreeMap::<String, usize>::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(36);
    while Instant::now() < until {
        if let Some(copy) = document(&client, &named, COPY, COPY_KEY).await {
            mounted.mount(&copy);
        }
        let verdict = verifier.verify(&token);
        match verdict.strip_prefix("ok ") {
            Some(kid) => *verified.entry(kid.to_string()).or_default() += 1,
            None => refused.push(verdict),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(secret) = secrets.get_opt("api-signing-keys").await.ok().flatten() else {
            continue;
        };
        token = sign_es256(&secret).unwrap_or(token);
    }
    let recorded: BTreeMap<String, u64> = {
        let seen = manifests.lock().expect("the manifests seen");
        let published = seen
            .iter()
            .filter_map(|(rv, kid)| Some((kid.clone()?, *rv)));
        published.rev().collect()
    };
    for (kid, secret_rv) in &recorded {
        for (ns, copy) in &copies {
            let copy_rv = first_carrying(copy, kid);
            assert!(
                copy_rv.is_some_and(|c| c < *secret_rv),
                "{kid} recorded published at version {secret_rv} but the copy in {ns} carried it \
                 only at {copy_rv:?}"
            );
        }
    }
    let checked: Vec<&String> = recorded.keys().collect();
    eprintln!(
        "tokens accepted from the copy, by kid: {verified:?}; pending keys checked: {checked:?}"
    );
    assert!(refused.is_empty(), "valid tokens refused: {refused:#?}");
    assert!(
        verified.len() >= 2,
        "fewer than two keys signed: {verified:?}"
    );
    assert!(!checked.is_empty(), "no pending key was seen published");

    // A namespace that stops matching loses its copy; the one named keeps it.
    label_namespace(&client, &selected, [(LABEL, None)]).await;
    eventually(
        "the copy to leave the unlabelled namespace",
        DEADLINE,
        || async {
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &selected);
            maps.get_opt(COPY).await.ok()?.is_none().then_some(())
        },
    )
    .await;
    assert!(document(&client, &named, COPY, COPY_KEY).await.is_some());

    a_copy_that_cannot_be_updated_holds_the_next_key_back(&client, &home, &spec, accepts).await;

    // The set deleted: its copies go with it; the foreign ConfigMap stays.
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &home);
    sets.delete("api", &DeleteParams::default())
        .await
        .expect("delete the set");
    eventually("the set and its copies to be gone", DEADLINE, || async {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &named);
        let copy_gone = maps.get_opt(COPY).await.ok()?.is_none();
        let set_gone = sets.get_opt("api").await.ok()?.is_none();
        (copy_gone && set_gone).then_some(())
    })
    .await;
    let kept = document(&client, &taken, COPY, COPY_KEY).await;
    assert_eq!(
        kept.as_deref(),
        Some("theirs"),
        "the foreign ConfigMap was touched"
    );
    let log = operator.log_text();
    assert!(
        !log.contains(" 403"),
        "the operator was refused a request:\n{log}"
    );
}
