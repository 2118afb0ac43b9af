//! One JwtKeySet under test: its namespace, the real operator watching it, reads of its objects,
//! and the hand edits a person, a backup tool or another writer makes to them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::time::Duration;

use jwt_key_rotator::api::{JwtKeySet, JwtKeySetStatus};
use jwt_key_rotator::lifecycle::Manifest;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::{self, Operator, eventually};
use crate::workload::{Edited, JWKS_KEY, Timing, Workload};

pub const NAME: &str = "web";
pub const SECRET: &str = "web-signing-keys";
pub const CONFIG_MAP: &str = "web-jwks";
/// Generous: the machine is small and shared; the properties hold however long waiting takes.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// The message of the operator's audit log line, one per transition or repair (`src/audit.rs`);
/// its `event` field is the Event's reason and it carries the full note.
const AUDIT_LINE: &str = "key transition";

pub struct Set {
    pub label: String,
    pub client: Client,
    pub ns: String,
    pub sets: Api<JwtKeySet>,
    pub secrets: Api<Secret>,
    pub maps: Api<ConfigMap>,
    pub operator: Operator,
}

impl Set {
    /// A namespace, the operator, the set Ready, and the workload signing and verifying.
    pub async fn start(label: &str, timing: Timing) -> (Set, Workload) {
        let set = Set::ready_alone(label, timing).await;
        let workload = Workload::start(&set.client, &set.ns, NAME, timing, label);
        (set, workload)
    }

    /// A namespace, the operator, and the set Ready; no workload.
    pub async fn ready_alone(label: &str, timing: Timing) -> Set {
        let set = Set::not_applied(label).await;
        set.apply(timing.spec()).await;
        set.ready().await;
        set
    }

    /// A namespace and the operator watching it, the set not applied yet.
    pub async fn not_applied(label: &str) -> Set {
        let client = support::client().await;
        let ns = support::namespace(&client, label).await;
        Set {
            label: label.to_string(),
            sets: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client.clone(), &ns),
            maps: Api::namespaced(client.clone(), &ns),
            operator: Operator::start(&ns),
            client,
            ns,
        }
    }

    pub async fn apply(&self, spec: Value) {
        support::apply_set(&self.client, &self.ns, NAME, spec).await;
    }

    /// Waits until the set reports `Ready` with `status` and `reason` for its current generation.
    pub async fn condition(&self, status: &str, reason: &str) -> JwtKeySet {
        let what = format!("[{}] Ready={status} ({reason})", self.label);
        eventually(&what, DEADLINE, || async {
            let set = self.sets.get(NAME).await.ok()?;
            let s = set.status.as_ref()?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            let current = c.observed_generation == set.metadata.generation;
            (c.status == status && c.reason == reason && current).then_some(set)
        })
        .await
    }

    pub async fn ready(&self) -> JwtKeySetStatus {
        let set = self.condition("True", "KeysReady").await;
        set.status.expect("a Ready set has a status")
    }

    pub async fn secret_data(&self) -> BTreeMap<String, ByteString> {
        let secret = self.secrets.get(SECRET).await.expect("get the Secret");
        secret.data.unwrap_or_default()
    }

    pub async fn active_kid(&self) -> String {
        let data = self.secret_data().await;
        let kid = data.get("kid").expect("the Secret names its active kid");
        String::from_utf8(kid.0.clone()).expect("kid is text")
    }

    pub async fn manifest(&self) -> Manifest {
        let data = self.secret_data().await;
        let bytes = &data.get("manifest.json").expect("manifest.json").0;
        Manifest::from_json(bytes).expect("the operator's manifest reads")
    }

    pub async fn jwks_data(&self) -> BTreeMap<String, String> {
        let map = self.maps.get(CONFIG_MAP).await.expect("get the ConfigMap");
        map.data.unwrap_or_default()
    }

    pub async fn jwks_kids(&self) -> BTreeSet<String> {
        let doc = self.jwks_data().await.remove(JWKS_KEY).unwrap_or_default();
        let set: Value = serde_json::from_str(&doc).unwrap_or_default();
        set["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str().map(str::to_string))
            .collect()
    }

    // ---- edits, as people and tools make them -------------------------------------------

    /// A JSON patch of the Secret, as `kubectl patch --type=json` sends it.
    pub async fn patch_secret(&self, ops: Value) -> Edited {
        let patch = serde_json::from_value(ops).expect("a JSON patch");
        let written = self
            .secrets
            .patch(SECRET, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .expect("patch the Secret");
        Edited::secret(written.resource_version().unwrap_or_default())
    }

    /// Sets one data entry of the Secret to these bytes.
    pub async fn set_secret_file(&self, key: &str, bytes: &[u8]) -> Edited {
        let value = ByteString(bytes.to_vec());
        let path = format!("/data/{key}");
        self.patch_secret(json!([{"op": "add", "path": path, "value": value}]))
            .await
    }

    /// Removes data entries from the Secret, as `kubectl edit` would.
    pub async fn remove_secret_files(&self, keys: &[&str]) -> Edited {
        let ops: Vec<Value> = keys
            .iter()
            .map(|k| json!({"op": "remove", "path": format!("/data/{k}")}))
            .collect();
        self.patch_secret(Value::Array(ops)).await
    }

    /// Rewrites manifest.json through `edit` (a person with `kubectl edit` and a base64 tool).
    pub async fn edit_manifest(&self, edit: impl FnOnce(&mut Value)) -> Edited {
        let data = self.secret_data().await;
        let mut manifest: Value =
            serde_json::from_slice(&data["manifest.json"].0).expect("a JSON manifest");
        edit(&mut manifest);
        let text = serde_json::to_vec_pretty(&manifest).expect("JSON");
        self.set_secret_file("manifest.json", &text).await
    }

    /// Puts this data back into the Secret, as a backup tool restoring a copy does (a replace).
    pub async fn restore_secret(&self, data: &BTreeMap<String, ByteString>) -> Edited {
        let mut secret = self.secrets.get(SECRET).await.expect("get the Secret");
        secret.data = Some(data.clone());
        let written = self
            .secrets
            .replace(SECRET, &PostParams::default(), &secret)
            .await
            .expect("replace the Secret");
        Edited::secret(written.resource_version().unwrap_or_default())
    }

    /// Puts this data back into the ConfigMap (a replace).
    pub async fn restore_map(&self, data: &BTreeMap<String, String>) -> Edited {
        let mut map = self.maps.get(CONFIG_MAP).await.expect("get the ConfigMap");
        map.data = Some(data.clone());
        let written = self
            .maps
            .replace(CONFIG_MAP, &PostParams::default(), &map)
            .await
            .expect("replace the ConfigMap");
        Edited::map(written.resource_version().unwrap_or_default())
    }

    pub async fn delete_secret(&self) -> Edited {
        self.secrets
            .delete(SECRET, &DeleteParams::default())
            .await
            .expect("delete the Secret");
        Edited::default()
    }

    /// Sets an annotation of the JwtKeySet (a metadata change: the spec's generation stays).
    pub async fn annotate(&self, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.sets
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate the JwtKeySet");
    }

    /// Asks for a rotation, as README's `kubectl annotate ... rotate=...` does.
    pub async fn rotate(&self, value: &str) {
        self.annotate("jwt.keyrotator.dev/rotate", value).await;
    }

    // ---- what the operator reports ------------------------------------------------------

    /// How many times the operator reported `reason` about the set: the Event recorder folds
    /// repeats into one Event's series.
    pub async fn events(&self, reason: &str) -> usize {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list Events");
        list.items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
            .sum()
    }

    /// The notes of the Events of `reason` about the set.
    pub async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list Events");
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Waits until `reason` was reported at least `count` times.
    pub async fn wait_events(&self, reason: &str, count: usize) -> usize {
        let what = format!("[{}] {count} {reason} Event(s)", self.label);
        eventually(&what, DEADLINE, || async {
            let n = self.events(reason).await;
            (n >= count).then_some(n)
        })
        .await
    }

    /// The operator's audit log lines of `reason` (they carry the full note, which
    /// an Event series does not repeat).
    pub fn logged(&self, reason: &str) -> Vec<String> {
        let needle = format!("event=\"{reason}\"");
        let alt = format!("event={reason} ");
        self.operator
            .log_text()
            .lines()
            .filter(|l| l.contains(AUDIT_LINE) && (l.contains(&needle) || l.contains(&alt)))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the status names `kid` as the active key (it follows the Secret by a write).
    pub async fn status_names(&self, kid: &str) {
        let what = format!("[{}] the status to name {kid} active", self.label);
        eventually(&what, DEADLINE, || async {
            let set = self.sets.get(NAME).await.ok()?;
            (set.status?.active_kid.as_deref() == Some(kid)).then_some(())
        })
        .await;
    }

    /// Waits until `status.keys` lists `kid` in `state`.
    pub async fn status_lists(&self, kid: &str, state: &str) {
        let what = format!("[{}] the status to list {kid} as {state}", self.label);
        eventually(&what, DEADLINE, || async {
            let set = self.sets.get(NAME).await.ok()?;
            let keys = set.status?.keys;
            keys.iter()
                .any(|k| k.kid == kid && k.state == state)
                .then_some(())
        })
        .await;
    }

    /// How many times the Secret changed over `window`, as seen polling it every 20 ms (a
    /// lower bound).
    pub async fn secret_changes_over(&self, window: Duration) -> usize {
        let started = std::time::Instant::now();
        let mut last = None;
        let mut changes = 0;
        while started.elapsed() < window {
            let secret = self.secrets.get(SECRET).await.expect("get the Secret");
            let version = secret.resource_version();
            if last.is_some() && last != version {
                changes += 1;
            }
            last = version;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        changes
    }

    /// Prints how many key events of each reason the operator logged.
    pub fn print_key_events(&self) {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for line in self.operator.log_text().lines() {
            if !line.contains(AUDIT_LINE) {
                continue;
            }
            let reason = line
                .split("event=\"")
                .nth(1)
                .and_then(|r| r.split('"').next());
            *counts.entry(reason.unwrap_or("?").to_string()).or_default() += 1;
        }
        eprintln!("[{}] key events logged: {counts:?}", self.label);
    }

    /// `jwt_key_rotator_reconciles_total` of the set, from the operator's /metrics.
    pub async fn reconciles(&self) -> f64 {
        let addr = self.operator.metrics_addr().await;
        let series = format!(
            "jwt_key_rotator_reconciles_total{{namespace=\"{}\",name=\"{NAME}\"}}",
            self.ns
        );
        let body = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .expect("the scrape's thread");
        body.lines()
            .find(|l| l.starts_with(&series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until the operator completed a reconcile more than `before`.
    pub async fn reconciled_after(&self, before: f64) -> f64 {
        let what = format!("[{}] a reconcile after {before}", self.label);
        eventually(&what, DEADLINE, || async {
            let n = self.reconciles().await;
            (n > before).then_some(n)
        })
        .await
    }
}

/// A plain HTTP/1.0 GET on loopback; the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the operator");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// A ValidatingAdmissionPolicy refusing every write to this namespace's JwtKeySet status with
/// `message`: the status stays what it was while the Secret moves on (as when the status write
/// fails, or has not landed yet). Removed when dropped.
pub struct StatusRefused {
    name: String,
}

impl StatusRefused {
    pub async fn install(set: &Set, message: &str) -> StatusRefused {
        let name = format!("refuse-status-{}", set.ns);
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["jwt.keyrotator.dev"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["jwtkeysets/status"],
                }]},
                "validations": [{"expression": "false", "message": message}],
            },
        }))
        .expect("a policy");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": set.ns,
                }}},
            },
        }))
        .expect("a binding");
        let policies: Api<ValidatingAdmissionPolicy> = Api::all(set.client.clone());
        let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(set.client.clone());
        let refused = StatusRefused { name };
        policies
            .create(&PostParams::default(), &policy)
            .await
            .expect("create the policy");
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .expect("create the binding");
        // In force once a status write of ours is refused.
        let generation = set
            .sets
            .get(NAME)
            .await
            .expect("the set")
            .metadata
            .generation;
        let patch = json!({"status": {"observedGeneration": generation}});
        support::eventually("status writes refused", DEADLINE, || async {
            let write = set
                .sets
                .patch_status(NAME, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            write.is_err().then_some(())
        })
        .await;
        refused
    }
}

impl Drop for StatusRefused {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            support::kubectl(&["delete", kind, &self.name, "--ignore-not-found"]);
        }
    }
}
