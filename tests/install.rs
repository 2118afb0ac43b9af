//! Installing the operator: the Helm chart linted, rendered, installed, upgraded and
//! uninstalled with the real `helm` CLI and its defaults (server-side apply), its RBAC proven
//! least-privilege by running the operator binary with exactly the chart's ServiceAccount
//! token, arguments and environment, its admission policy proven to confine that identity's
//! writes to its own objects, and deploy/ kept equal to the chart's defaults.
//!
//! `helm` and `kubectl` are the ones tests/control-plane/setup.sh builds; without them these
//! tests fail, saying so.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use jwt_key_rotator::api::JwtKeySet;
use jwt_key_rotator::reconcile::{MANAGED_BY_LABEL, MANAGER, RETAIN_FINALIZER};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;
use serde_json::{Value, json};
use support::node::{self, helm};
use support::{Operator, eventually};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jwt-key-rotator");
const RENDER_DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helm/render_deploy.py");
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The install tests each run an operator out of cluster; one of them watches every
/// namespace, and would reconcile the other test's sets too. They take turns.
static ONE_OPERATOR_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `test` on a runtime of its own while no other install test runs an operator.
fn one_operator_at_a_time(test: impl std::future::Future<Output = ()>) {
    let _turn = ONE_OPERATOR_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

// ---- Helm ----------------------------------------------------------------------------------

/// `helm template` of the chart with these `--set` values, as YAML documents.
fn template(release: &str, namespace: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    for set in sets {
        args.extend(["--set", set]);
    }
    let text = helm(&args)?;
    let mut documents = vec![];
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).expect("helm template prints YAML");
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// `helm install` or `helm upgrade` of the chart into the test control plane, with Helm's
/// defaults: server-side apply, and no waiting for the Deployment. These installs run the
/// operator out of cluster (the chart's image is left as it is, and never starts).
fn release_with(verb: &str, release: &str, namespace: &str, sets: &[&str]) {
    let kubeconfig = support::control_plane().kubeconfig.display().to_string();
    let mut args = vec![
        verb,
        release,
        CHART,
        "--namespace",
        namespace,
        "--kubeconfig",
        &kubeconfig,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args).unwrap_or_else(|e| panic!("helm {verb} {release} failed:\n{e}"));
}

fn install(name: &str, namespace: &str, sets: &[&str]) {
    release_with("install", name, namespace, sets);
}

fn uninstall(release: &str, namespace: &str) {
    let kubeconfig = support::control_plane().kubeconfig.display().to_string();
    helm(&[
        "uninstall",
        release,
        "--namespace",
        namespace,
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap_or_else(|e| panic!("helm uninstall {release} failed:\n{e}"));
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart rendered no {kind} {name}"))
}

fn kinds(documents: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = documents
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["namespace"].as_str().unwrap_or("")
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn app_version() -> String {
    let text = std::fs::read_to_string(format!("{CHART}/Chart.yaml")).expect("Chart.yaml");
    let chart: Value = serde_norway::from_str(&text).expect("Chart.yaml is YAML");
    chart["appVersion"]
        .as_str()
        .expect("Chart.yaml has appVersion")
        .to_string()
}

/// Exactly the API access the operator's code uses: what the ClusterRole (cluster mode) and
/// each watched namespace's Role (namespaced mode) grant.
fn operator_rules() -> Value {
    json!([
        {"apiGroups": ["jwt.keyrotator.dev"], "resources": ["jwtkeysets"], "verbs": ["list", "watch", "patch"]},
        {"apiGroups": ["jwt.keyrotator.dev"], "resources": ["jwtkeysets/status"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "update"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

/// The cluster mode's rules: the operator's, and namespaces' labels (for copies by selector).
fn cluster_rules() -> Value {
    let mut rules = operator_rules();
    if let Some(rules) = rules.as_array_mut() {
        rules.push(
            json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}),
        );
    }
    rules
}

/// The leader-election rules, in the release namespace only.
fn lease_rules(lease: &str) -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease], "verbs": ["get", "update"]},
    ])
}

// ---- a ServiceAccount's identity ------------------------------------------------------------

/// A kubeconfig file for the control plane that authenticates with a fresh token of
/// ServiceAccount `namespace/name` (TokenRequest API), and a client using it.
async fn service_account_identity(
    admin: &Client,
    namespace: &str,
    name: &str,
) -> (PathBuf, Client) {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for ServiceAccount {namespace}/{name}: {e}"))
        .status
        .expect("TokenRequest status")
        .token;
    // The control plane's cluster entry (server, CA) as it is, with the token as the user.
    let admin_path = &support::control_plane().kubeconfig;
    let admin_config: Value =
        serde_norway::from_str(&std::fs::read_to_string(admin_path).expect("admin kubeconfig"))
            .expect("admin kubeconfig is YAML");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": admin_config["clusters"][0]["cluster"]}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name, "namespace": namespace}}],
        "current-context": name,
    });
    let path = std::env::temp_dir().join(format!(
        "jwt-rotator-sa-{}-{namespace}-{name}.kubeconfig",
        std::process::id()
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig).unwrap())
        .expect("write kubeconfig");
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).expect("read back the ServiceAccount kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("ServiceAccount kubeconfig");
    (
        path,
        Client::try_from(config).expect("ServiceAccount client"),
    )
}

/// Fails unless `result` is the API server's 403 Forbidden.
fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!(
            "{what}: expected 403 Forbidden for the operator's ServiceAccount, got {other:?}"
        ),
    }
}

// ---- the admission policy ------------------------------------------------------------------

/// Fails unless `result` is a refusal by the chart's ValidatingAdmissionPolicy whose message
/// contains `message`.
fn assert_refused_by_policy<T: std::fmt::Debug>(
    what: &str,
    message: &str,
    result: Result<T, kube::Error>,
) {
    match result {
        Err(kube::Error::Api(status))
            if status.code == 403
                && status.message.contains("ValidatingAdmissionPolicy")
                && status.message.contains(message) => {}
        other => {
            panic!("{what}: expected the admission policy's refusal ({message}), got {other:?}")
        }
    }
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

/// The operator's identity may create and update its own ConfigMaps (labelled as its own),
/// and none other: neither create a foreign one, nor change one, nor relabel one into its
/// ownership, nor strip its own of their label. RBAC alone would allow every one of these.
async fn writes_are_confined_to_own_objects(admin: &Client, as_operator: &Client, ns: &str) {
    const OWN: (&str, &str) = (MANAGED_BY_LABEL, MANAGER);
    let maps: Api<ConfigMap> = Api::namespaced(as_operator.clone(), ns);
    let admin_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    // The API server loads a new policy within moments of its creation.
    eventually(
        "the admission policy to take effect",
        READY_DEADLINE,
        || async {
            match maps
                .create(&PostParams::default(), &config_map("probe", &[]))
                .await
            {
                Ok(_) => {
                    admin_maps
                        .delete("probe", &DeleteParams::default())
                        .await
                        .ok()?;
                    None
                }
                Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
                Err(e) => panic!("creating a foreign ConfigMap as the operator: {e}"),
            }
        },
    )
    .await;
    assert_refused_by_policy(
        "create a foreign ConfigMap",
        "may create only",
        maps.create(&PostParams::default(), &config_map("foreign", &[]))
            .await,
    );
    let foreign = admin_maps
        .create(&PostParams::default(), &config_map("foreign", &[]))
        .await
        .unwrap();
    let mut changed = foreign.clone();
    changed.data = Some([("k".to_string(), "planted".to_string())].into());
    assert_refused_by_policy(
        "update a foreign ConfigMap",
        "may update or delete only its own",
        maps.replace("foreign", &PostParams::default(), &changed)
            .await,
    );
    let mut relabelled = foreign;
    relabelled.metadata.labels = Some([(OWN.0.to_string(), OWN.1.to_string())].into());
    assert_refused_by_policy(
        "relabel a foreign ConfigMap into its ownership",
        "may update or delete only its own",
        maps.replace("foreign", &PostParams::default(), &relabelled)
            .await,
    );

    let own = maps
        .create(&PostParams::default(), &config_map("own", &[OWN]))
        .await
        .expect("the operator creates a ConfigMap labelled as its own");
    let mut updated = own.clone();
    updated.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = maps
        .replace("own", &PostParams::default(), &updated)
        .await
        .expect("the operator updates its own ConfigMap");
    let mut stripped = updated;
    stripped.metadata.labels = None;
    assert_refused_by_policy(
        "strip its own ConfigMap of its label",
        "may not give up",
        maps.replace("own", &PostParams::default(), &stripped).await,
    );
    assert_eq!(
        admin_maps.get("foreign").await.unwrap().data,
        Some([("k".to_string(), "v".to_string())].into()),
        "the foreign ConfigMap is as it was"
    );
}

// ---- the operator as the chart runs it ------------------------------------------------------

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// GET `path` from the operator's HTTP endpoint: the status code, if it answered.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Starts the operator binary exactly as the installed Deployment would: its container's
/// arguments (the metrics address moved to a free loopback port) and environment (the
/// downward-API values filled in; RUST_LOG aside, which the test harness sets to debug),
/// authenticated as its ServiceAccount. Returns the operator, its metrics port and its pod name.
fn start_as_deployed(
    deployment: &Deployment,
    kubeconfig: &Path,
    pod_namespace: &str,
) -> (Operator, u16, String) {
    let pod = &deployment
        .spec
        .as_ref()
        .expect("Deployment spec")
        .template
        .spec
        .as_ref()
        .expect("pod spec");
    let container = &pod.containers[0];
    let port = free_port();
    let mut args = container.args.clone().expect("the operator's arguments");
    let metrics = args
        .iter_mut()
        .find(|a| a.starts_with("--metrics-addr="))
        .expect("the Deployment sets --metrics-addr");
    *metrics = format!("--metrics-addr=127.0.0.1:{port}");
    for jwks in args.iter_mut().filter(|a| a.starts_with("--jwks-addr=")) {
        *jwks = "--jwks-addr=127.0.0.1:0".into();
    }
    let pod_name = format!(
        "{}-install-test",
        deployment.metadata.name.as_deref().unwrap_or("operator")
    );
    let mut env = vec![("KUBECONFIG".to_string(), kubeconfig.display().to_string())];
    for var in container.env.iter().flatten() {
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        let value = match (field, &var.value) {
            (Some("metadata.name"), _) => pod_name.clone(),
            (Some("metadata.namespace"), _) => pod_namespace.to_string(),
            (Some(other), _) => panic!("env {} from unexpected field {other}", var.name),
            (None, Some(value)) => value.clone(),
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), value));
    }
    (Operator::start_with(args, env), port, pod_name)
}

/// Waits until the API server enforces the freshly installed RBAC for the ServiceAccount (its
/// authorizer caches RoleBindings): the operator's first request must not race it, since any
/// refusal in the operator's log fails the test.
async fn wait_rbac_effective(as_operator: &Client, watched: &str, lease_ns: &str, lease: &str) {
    eventually(
        "the chart's RBAC to take effect",
        Duration::from_secs(30),
        || async {
            let sets: Api<JwtKeySet> = Api::namespaced(as_operator.clone(), watched);
            let leases: Api<Lease> = Api::namespaced(as_operator.clone(), lease_ns);
            let allowed = sets.list(&ListParams::default()).await.is_ok()
                && leases.get_opt(lease).await.is_ok();
            allowed.then_some(())
        },
    )
    .await;
}

/// Applies a JwtKeySet from a file under deploy/examples/ into `namespace`, as a platform
/// team would (admin rights); returns its name.
async fn apply_example(admin: &Client, namespace: &str, file: &str) -> String {
    let path = format!("{REPO}/deploy/examples/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let object: DynamicObject =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = object.metadata.name.clone().expect("example has a name");
    let api: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &ApiResource::erase::<JwtKeySet>(&()),
    );
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {file} in {namespace}: {e}"));
    name
}

/// Fails the test at once when the operator was refused a request (a 403 in its log): the
/// chart's RBAC lacks a rule. The operator's log is printed when the test fails.
fn assert_never_forbidden(operator: &dyn OperatorLog) {
    let log = operator.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the operator was refused requests with the chart's RBAC:\n{}",
        refused.join("\n")
    );
}

/// Where an operator's log is read: the process run out of cluster here, or a pod.
trait OperatorLog {
    fn log(&self) -> String;
}
impl OperatorLog for Operator {
    fn log(&self) -> String {
        self.log_text()
    }
}
/// An operator pod, whose log is checked when the test has waited (not at each poll).
struct OperatorPod;
impl OperatorLog for OperatorPod {
    fn log(&self) -> String {
        String::new()
    }
}

/// Waits until the set is Ready (KeysReady) for its generation, its Secret and (unless HS*)
/// ConfigMap exist and an Event about it was recorded: everything the operator writes.
async fn wait_ready(admin: &Client, namespace: &str, name: &str, operator: &dyn OperatorLog) {
    let sets: Api<JwtKeySet> = Api::namespaced(admin.clone(), namespace);
    let what = format!("JwtKeySet {namespace}/{name} Ready=True (KeysReady)");
    let set = eventually(&what, READY_DEADLINE, || {
        assert_never_forbidden(operator);
        async {
            let set = sets.get(name).await.ok()?;
            let c = set
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "True"
                && c.reason == "KeysReady"
                && c.observed_generation == set.metadata.generation)
                .then_some(set)
        }
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), namespace);
    let secret_name = set
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{name}-signing-keys"));
    assert!(
        secrets.get_opt(&secret_name).await.unwrap().is_some(),
        "{namespace}/{name} is Ready but Secret {secret_name} is missing"
    );
    if !set.spec.algorithm.to_string().starts_with("HS") {
        let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
        assert!(
            maps.get_opt(&format!("{name}-jwks"))
                .await
                .unwrap()
                .is_some(),
            "{namespace}/{name} is Ready but its JWKS ConfigMap is missing"
        );
    }
    let events: Api<Event> = Api::namespaced(admin.clone(), namespace);
    let what = format!("an Event about {namespace}/{name}");
    eventually(&what, READY_DEADLINE, || {
        assert_never_forbidden(operator);
        async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
                .then_some(())
        }
    })
    .await;
}

/// Waits until the operator holds its leader Lease: proof that the lease rules suffice.
async fn wait_leader(
    admin: &Client,
    namespace: &str,
    lease: &str,
    identity: &str,
    operator: &dyn OperatorLog,
) {
    let leases: Api<Lease> = Api::namespaced(admin.clone(), namespace);
    let what = format!("Lease {namespace}/{lease} held by {identity}");
    eventually(&what, READY_DEADLINE, || {
        assert_never_forbidden(operator);
        async {
            let lease = leases.get_opt(lease).await.ok()??;
            (lease.spec?.holder_identity.as_deref() == Some(identity)).then_some(())
        }
    })
    .await;
}

/// Waits until /readyz answers 200 (the Deployment's readiness probe) and checks /healthz
/// (its liveness probe) and /metrics.
async fn wait_probes(port: u16, operator: &dyn OperatorLog) {
    eventually(
        "the operator's /readyz to answer 200",
        READY_DEADLINE,
        || {
            assert_never_forbidden(operator);
            async move { (http_status(port, "/readyz") == Some(200)).then_some(()) }
        },
    )
    .await;
    assert_eq!(http_status(port, "/healthz"), Some(200), "/healthz");
    assert_eq!(http_status(port, "/metrics"), Some(200), "/metrics");
}

// ---- the tests ------------------------------------------------------------------------------

#[test]
fn chart_lints_and_its_crd_is_the_generated_one() {
    let lint = helm(&["lint", CHART, "--strict"])
        .unwrap_or_else(|e| panic!("helm lint --strict failed:\n{e}"));
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let generated =
        std::fs::read(format!("{REPO}/crds/jwtkeysets.jwt.keyrotator.dev.yaml")).unwrap();
    let in_chart =
        std::fs::read(format!("{CHART}/crds/jwtkeysets.jwt.keyrotator.dev.yaml")).unwrap();
    assert!(
        generated == in_chart,
        "charts/jwt-key-rotator/crds/ differs from crds/; copy it:\n  \
         cp crds/jwtkeysets.jwt.keyrotator.dev.yaml charts/jwt-key-rotator/crds/"
    );

    // values.yaml documents every value: a comment line right above each key.
    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap();
    let lines: Vec<&str> = values.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let key = line.trim_start();
        let is_key = key.starts_with(|c: char| c.is_ascii_alphabetic()) && key.contains(':');
        let documented = i > 0 && lines[i - 1].trim_start().starts_with('#');
        assert!(
            !is_key || documented,
            "values.yaml line {}: {line:?} has no comment above it",
            i + 1
        );
    }

    // values.schema.json refuses bad values, naming them.
    let refused: &[(&[&str], &str)] = &[
        (&["replicaCount=0"], "at '/replicaCount': minimum"),
        (
            &["replicaCount=two"],
            "at '/replicaCount': got string, want integer",
        ),
        (
            &["rbac.mode=bogus"],
            "at '/rbac/mode': value must be one of 'cluster', 'namespaced'",
        ),
        (
            &["rbac.mode=namespaced"],
            "at '/rbac/watchNamespaces': minItems",
        ),
        (
            &["rbac.mode=namespaced", "rbac.watchNamespaces={Team_A}"],
            "at '/rbac/watchNamespaces/0'",
        ),
        (
            &["replicaCount=2", "leaderElection.enabled=false"],
            "at '/leaderElection/enabled'",
        ),
        (
            &["leaderElection.leaseDuration=15"],
            "at '/leaderElection/leaseDuration'",
        ),
        (&["logFormat=xml"], "at '/logFormat'"),
        (&["image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (&["metrics.port=70000"], "at '/metrics/port'"),
        (
            &["serviceAccount.create=false"],
            "at '/serviceAccount/name'",
        ),
        (
            &["replicas=2"],
            "additional properties 'replicas' not allowed",
        ),
    ];
    for (sets, message) in refused {
        let err = template("r", "ns", sets)
            .err()
            .unwrap_or_else(|| panic!("--set {sets:?} was accepted"));
        assert!(
            err.contains(message),
            "--set {sets:?}: expected {message:?} in:\n{err}"
        );
    }
    // lint checks the values it is given against the schema too.
    let err = helm(&["lint", CHART, "--set", "rbac.mode=bogus"])
        .expect_err("lint accepted rbac.mode=bogus");
    assert!(err.contains("/rbac/mode"), "{err}");
    // Good combinations render.
    template(
        "r",
        "ns",
        &["replicaCount=2", "podDisruptionBudget.enabled=true"],
    )
    .unwrap();
    template(
        "r",
        "ns",
        &["rbac.mode=namespaced", "rbac.watchNamespaces={a,b}"],
    )
    .unwrap();
}

#[test]
fn chart_renders_what_its_values_say() {
    // Defaults: cluster mode, leader election, one replica.
    let docs = template("jwt-key-rotator", "ops", &[]).unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole/",
            "ClusterRoleBinding/",
            "Deployment/ops",
            "Role/ops",
            "RoleBinding/ops",
            "Service/ops",
            "Service/ops",
            "ServiceAccount/ops",
            "ValidatingAdmissionPolicy/",
            "ValidatingAdmissionPolicyBinding/",
        ]
    );
    let policy = find(
        &docs,
        "ValidatingAdmissionPolicy",
        "jwt-key-rotator-own-objects-only",
    );
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == 'system:serviceaccount:ops:jwt-key-rotator'"
    );
    assert_eq!(
        find(
            &docs,
            "ValidatingAdmissionPolicyBinding",
            "jwt-key-rotator-own-objects-only"
        )["spec"],
        json!({"policyName": "jwt-key-rotator-own-objects-only", "validationActions": ["Deny"]})
    );
    assert_eq!(
        find(&docs, "ClusterRole", "jwt-key-rotator")["rules"],
        cluster_rules()
    );
    let binding = find(&docs, "ClusterRoleBinding", "jwt-key-rotator");
    assert_eq!(binding["roleRef"]["name"], "jwt-key-rotator");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "jwt-key-rotator", "namespace": "ops"}])
    );
    assert_eq!(
        find(&docs, "Role", "jwt-key-rotator-leader-election")["rules"],
        lease_rules("jwt-key-rotator")
    );

    let deployment = find(&docs, "Deployment", "jwt-key-rotator");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(pod["serviceAccountName"], "jwt-key-rotator");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(
        container["image"],
        format!("jwt-key-rotator:{}", app_version())
    );
    assert_eq!(
        container["args"],
        json!([
            "run",
            "--log-format=json",
            "--metrics-addr=0.0.0.0:8080",
            "--max-concurrent-reconciles=64",
            "--jwks-addr=0.0.0.0:8081",
            "--leader-election",
            "--lease-name=jwt-key-rotator",
            "--lease-namespace=ops",
            "--lease-duration=15s",
            "--lease-renew-deadline=10s",
            "--lease-retry-period=2s",
        ])
    );
    assert_eq!(
        container["env"],
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "RUST_LOG", "value": "info"},
        ])
    );
    assert_eq!(
        container["ports"],
        json!([
            {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
            {"name": "jwks", "containerPort": 8081, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}})
    );
    // The `restricted` Pod Security Standard.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        container["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        })
    );
    let service = find(&docs, "Service", "jwt-key-rotator-metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // Every replica serves the JWKS: its Service selects them all, standbys too.
    let jwks = find(&docs, "Service", "jwt-key-rotator-jwks");
    assert_eq!(jwks["spec"]["ports"][0]["targetPort"], "jwks");
    assert_eq!(
        jwks["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    // Its Ingress routes each issuer host whole to that Service; without the JWKS port, the
    // operator serves none.
    let ingress = [
        "jwks.ingress.enabled=true",
        "jwks.ingress.hosts={auth.example.com}",
    ];
    let docs = template("jwt-key-rotator", "ops", &ingress).unwrap();
    let rule = &find(&docs, "Ingress", "jwt-key-rotator-jwks")["spec"]["rules"][0];
    assert_eq!(rule["host"], "auth.example.com");
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    assert_eq!(
        backend,
        &json!({"name": "jwt-key-rotator-jwks", "port": {"name": "http"}})
    );
    let docs = template("jwt-key-rotator", "ops", &["jwks.enabled=false"]).unwrap();
    assert!(!kinds(&docs).contains(&"Ingress/ops".to_string()));
    let deployment = find(&docs, "Deployment", "jwt-key-rotator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"].as_array().unwrap();
    assert!(args.contains(&json!("--jwks-addr=none")), "{args:?}");
    assert_eq!(container["ports"].as_array().unwrap().len(), 1);
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["name"] != "jwt-key-rotator-jwks")
    );

    // Namespaced mode: a Role per watched namespace, one --namespace per entry, no cluster rights.
    let docs = template(
        "rot",
        "ops",
        &[
            "rbac.mode=namespaced",
            "rbac.watchNamespaces={team-a,team-b}",
        ],
    )
    .unwrap();
    assert_eq!(
        kinds(&docs),
        [
            "Deployment/ops",
            "Role/ops",
            "Role/team-a",
            "Role/team-b",
            "RoleBinding/ops",
            "RoleBinding/team-a",
            "RoleBinding/team-b",
            "Service/ops",
            "Service/ops",
            "ServiceAccount/ops",
            "ValidatingAdmissionPolicy/",
            "ValidatingAdmissionPolicyBinding/",
        ]
    );
    for namespace in ["team-a", "team-b"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == namespace)
            .unwrap();
        assert_eq!(role["rules"], operator_rules(), "Role in {namespace}");
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == namespace)
            .unwrap();
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "rot-jwt-key-rotator", "namespace": "ops"}])
        );
    }
    let args = &find(&docs, "Deployment", "rot-jwt-key-rotator")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert_eq!(args[0], "run");
    assert_eq!(args[1], "--namespace=team-a");
    assert_eq!(args[2], "--namespace=team-b");

    // Without leader election: no lease rights, no lease arguments.
    let docs = template("rot", "ops", &["leaderElection.enabled=false"]).unwrap();
    assert!(
        !kinds(&docs).iter().any(|k| k.starts_with("Role")),
        "{:?}",
        kinds(&docs)
    );
    let args = &find(&docs, "Deployment", "rot-jwt-key-rotator")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        !args
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--lease")),
        "{args}"
    );
    assert!(
        !args
            .as_array()
            .unwrap()
            .contains(&json!("--leader-election")),
        "{args}"
    );

    // The admission policy is on by default, and can be left out.
    let docs = template("rot", "ops", &["admissionPolicy.enabled=false"]).unwrap();
    assert!(
        !kinds(&docs)
            .iter()
            .any(|k| k.starts_with("ValidatingAdmission")),
        "{:?}",
        kinds(&docs)
    );

    // The optional objects.
    let docs = template(
        "rot",
        "ops",
        &[
            "replicaCount=2",
            "podDisruptionBudget.enabled=true",
            "metrics.serviceMonitor.enabled=true",
        ],
    )
    .unwrap();
    let pdb = find(&docs, "PodDisruptionBudget", "rot-jwt-key-rotator");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let monitor = find(&docs, "ServiceMonitor", "rot-jwt-key-rotator");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        find(&docs, "Deployment", "rot-jwt-key-rotator")["spec"]["replicas"],
        2
    );
}

#[test]
fn cluster_mode_install_grants_exactly_what_the_operator_needs() {
    one_operator_at_a_time(cluster_mode_install());
}

async fn cluster_mode_install() {
    let admin = support::client().await;
    let release_ns = support::namespace(&admin, "helm-cluster").await;
    let keys_ns = support::namespace(&admin, "helm-cluster-keys").await;
    let release = "rotator-cluster";
    let fullname = "rotator-cluster-jwt-key-rotator";
    install(release, &release_ns, &[]);

    let deployment: Deployment = Api::namespaced(admin.clone(), &release_ns)
        .get(fullname)
        .await
        .unwrap();
    let account = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let (kubeconfig, as_operator) = service_account_identity(&admin, &release_ns, &account).await;
    wait_rbac_effective(&as_operator, &keys_ns, &release_ns, fullname).await;
    let (operator, port, pod_name) = start_as_deployed(&deployment, &kubeconfig, &release_ns);

    // With exactly the chart's rights: leader, ready, and a set in another namespace Ready,
    // with its Secret, ConfigMap, status and Events written and the finalizer of
    // deletionPolicy: Retain patched in; never refused anything.
    wait_leader(&admin, &release_ns, fullname, &pod_name, &operator).await;
    wait_probes(port, &operator).await;
    let name = apply_example(&admin, &keys_ns, "eddsa.yaml").await;
    wait_ready(&admin, &keys_ns, &name, &operator).await;
    let set: JwtKeySet = Api::namespaced(admin.clone(), &keys_ns)
        .get(&name)
        .await
        .unwrap();
    assert!(
        set.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == RETAIN_FINALIZER),
        "deletionPolicy: Retain, but no finalizer: {:?}",
        set.metadata.finalizers
    );
    assert_never_forbidden(&operator);
    writes_are_confined_to_own_objects(&admin, &as_operator, &keys_ns).await;

    // Nothing more: whatever the operator does not do is refused.
    let secrets: Api<Secret> = Api::namespaced(as_operator.clone(), &keys_ns);
    assert_forbidden(
        "delete the set's Secret",
        secrets
            .delete(&format!("{name}-signing-keys"), &DeleteParams::default())
            .await,
    );
    // ConfigMaps it may delete (a JWKS copy no longer wanted), but only its own: the admission
    // policy refuses the rest, as RBAC cannot select by label.
    let maps: Api<ConfigMap> = Api::namespaced(as_operator.clone(), &keys_ns);
    assert_refused_by_policy(
        "delete a foreign ConfigMap",
        "may update or delete only its own",
        maps.delete("foreign", &DeleteParams::default()).await,
    );
    let sets: Api<JwtKeySet> = Api::namespaced(as_operator.clone(), &keys_ns);
    assert_forbidden("get a JwtKeySet", sets.get(&name).await);
    assert_forbidden(
        "delete a JwtKeySet",
        sets.delete(&name, &DeleteParams::default()).await,
    );
    assert_forbidden(
        "list Pods",
        Api::<Pod>::all(as_operator.clone())
            .list(&ListParams::default())
            .await,
    );
    // Namespaces: listed and watched (their labels, for copies by selector), nothing else.
    let namespaces = Api::<Namespace>::all(as_operator.clone());
    assert_forbidden("get a Namespace", namespaces.get(&keys_ns).await);
    assert_forbidden(
        "delete a Namespace",
        namespaces.delete(&keys_ns, &DeleteParams::default()).await,
    );
    assert_forbidden(
        "list ClusterRoles",
        Api::<ClusterRole>::all(as_operator.clone())
            .list(&ListParams::default())
            .await,
    );
    let lease = |name: &str| Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec::default()),
    };
    assert_forbidden(
        "create a Lease outside the release namespace",
        Api::<Lease>::namespaced(as_operator.clone(), &keys_ns)
            .create(&PostParams::default(), &lease("x"))
            .await,
    );
    let leases: Api<Lease> = Api::namespaced(as_operator.clone(), &release_ns);
    leases
        .get(fullname)
        .await
        .expect("the operator reads its own Lease");
    assert_forbidden(
        "get another Lease",
        leases.get("kube-controller-manager").await,
    );
    assert_forbidden("list Leases", leases.list(&ListParams::default()).await);
    assert_forbidden(
        "delete its Lease",
        leases.delete(fullname, &DeleteParams::default()).await,
    );

    drop(operator);
    // helm upgrade applies the new values.
    release_with("upgrade", release, &release_ns, &["logLevel=debug"]);
    let upgraded: Deployment = Api::namespaced(admin.clone(), &release_ns)
        .get(fullname)
        .await
        .unwrap();
    let env = &upgraded.spec.unwrap().template.spec.unwrap().containers[0].env;
    assert!(
        env.iter()
            .flatten()
            .any(|v| v.name == "RUST_LOG" && v.value.as_deref() == Some("debug")),
        "helm upgrade --set logLevel=debug left {env:?}"
    );
    uninstall(release, &release_ns);
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(
        roles.get_opt(fullname).await.unwrap().is_none(),
        "uninstall left ClusterRole {fullname}"
    );
    let _ = std::fs::remove_file(kubeconfig);
}

#[test]
fn namespaced_mode_install_confines_the_operator_to_its_namespaces() {
    one_operator_at_a_time(namespaced_mode_install());
}

async fn namespaced_mode_install() {
    let admin = support::client().await;
    let release_ns = support::namespace(&admin, "helm-ns").await;
    let team_a = support::namespace(&admin, "helm-ns-a").await;
    let team_b = support::namespace(&admin, "helm-ns-b").await;
    let outside = support::namespace(&admin, "helm-ns-outside").await;
    let release = "rotator-ns";
    let fullname = "rotator-ns-jwt-key-rotator";
    let watch = format!("rbac.watchNamespaces={{{team_a},{team_b}}}");
    install(release, &release_ns, &["rbac.mode=namespaced", &watch]);

    // The Roles are where the chart says, and nowhere else.
    for namespace in [&team_a, &team_b] {
        let role = Api::<Role>::namespaced(admin.clone(), namespace)
            .get(fullname)
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&role.rules).unwrap(),
            operator_rules(),
            "Role in {namespace}"
        );
    }
    assert!(
        Api::<Role>::namespaced(admin.clone(), &outside)
            .get_opt(fullname)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ClusterRole>::all(admin.clone())
            .get_opt(fullname)
            .await
            .unwrap()
            .is_none()
    );

    let deployment: Deployment = Api::namespaced(admin.clone(), &release_ns)
        .get(fullname)
        .await
        .unwrap();
    let account = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .service_account_name
        .clone()
        .unwrap();
    let (kubeconfig, as_operator) = service_account_identity(&admin, &release_ns, &account).await;
    // A set outside the watched namespaces, there before the operator starts.
    let ignored = apply_example(&admin, &outside, "es256.yaml").await;
    wait_rbac_effective(&as_operator, &team_a, &release_ns, fullname).await;
    let (operator, port, pod_name) = start_as_deployed(&deployment, &kubeconfig, &release_ns);
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&format!("--namespace={team_a}"))
            && args.contains(&format!("--namespace={team_b}")),
        "{args:?}"
    );

    wait_leader(&admin, &release_ns, fullname, &pod_name, &operator).await;
    wait_probes(port, &operator).await;
    let a = apply_example(&admin, &team_a, "es256.yaml").await;
    let b = apply_example(&admin, &team_b, "hs256.yaml").await;
    wait_ready(&admin, &team_a, &a, &operator).await;
    wait_ready(&admin, &team_b, &b, &operator).await;
    copies_stay_in_the_watched_namespaces(&admin, &as_operator, [&team_a, &team_b, &outside]).await;
    assert_never_forbidden(&operator);
    // By now the operator has long seen everything it watches: the outside set, created
    // first, was never touched.
    let untouched: JwtKeySet = Api::namespaced(admin.clone(), &outside)
        .get(&ignored)
        .await
        .unwrap();
    assert!(
        untouched.status.is_none(),
        "the operator wrote the status of a set outside its namespaces"
    );
    assert!(
        Api::<Secret>::namespaced(admin.clone(), &outside)
            .get_opt(&format!("{ignored}-signing-keys"))
            .await
            .unwrap()
            .is_none(),
        "the operator wrote a Secret outside its namespaces"
    );

    // Confined: nothing outside the watched namespaces, nothing cluster-wide.
    assert_forbidden(
        "list Secrets outside the watched namespaces",
        Api::<Secret>::namespaced(as_operator.clone(), &outside)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list Secrets in every namespace",
        Api::<Secret>::all(as_operator.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list JwtKeySets outside the watched namespaces",
        Api::<JwtKeySet>::namespaced(as_operator.clone(), &outside)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list JwtKeySets in every namespace",
        Api::<JwtKeySet>::all(as_operator.clone())
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list ConfigMaps in the release namespace",
        Api::<ConfigMap>::namespaced(as_operator.clone(), &release_ns)
            .list(&ListParams::default())
            .await,
    );
    Api::<Secret>::namespaced(as_operator.clone(), &team_a)
        .list(&ListParams::default())
        .await
        .expect("the operator lists Secrets in a watched namespace");

    drop(operator);
    uninstall(release, &release_ns);
    for namespace in [&team_a, &team_b] {
        assert!(
            Api::<Role>::namespaced(admin.clone(), namespace)
                .get_opt(fullname)
                .await
                .unwrap()
                .is_none(),
            "uninstall left the Role in {namespace}"
        );
    }
    let _ = std::fs::remove_file(kubeconfig);
}

/// A set asking for JWKS copies in a watched namespace, in one outside and by label: namespaced
/// mode writes the first, never tries the others (its RBAC would refuse them), and says so.
async fn copies_stay_in_the_watched_namespaces(
    admin: &Client,
    as_operator: &Client,
    [home, watched, outside]: [&String; 3],
) {
    let spec = json!({"algorithm": "ES256", "jwks": {"copies": {
        "namespaces": [watched, outside], "namespaceSelector": {}}}});
    support::apply_set(admin, home, "copied", spec).await;
    let sets: Api<JwtKeySet> = Api::namespaced(admin.clone(), home);
    let (reason, message) = eventually("CopiesReady", Duration::from_secs(60), || async {
        let status = sets.get_opt("copied").await.ok()??.status?;
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "CopiesReady")?;
        Some((c.reason.clone(), c.message.clone()))
    })
    .await;
    assert_eq!(reason, "CopyRefused", "{message}");
    assert!(
        message.contains(&format!(
            "{outside} (outside the namespaces this operator watches)"
        )) && message.contains("namespaceSelector (needs an operator that watches every"),
        "{message}"
    );
    let copy = Api::<ConfigMap>::namespaced(admin.clone(), watched)
        .get_opt("copied-jwks")
        .await
        .unwrap();
    assert!(copy.is_some(), "no copy in the watched namespace {watched}");
    let absent = Api::<ConfigMap>::namespaced(admin.clone(), outside)
        .get_opt("copied-jwks")
        .await
        .unwrap();
    assert!(absent.is_none(), "a copy outside the watched namespaces");
    assert_forbidden(
        "create a ConfigMap outside the watched namespaces",
        Api::<ConfigMap>::namespaced(as_operator.clone(), outside)
            .create(
                &PostParams::default(),
                &config_map("copied-jwks", &[(MANAGED_BY_LABEL, MANAGER)]),
            )
            .await,
    );
}

#[tokio::test]
async fn deploy_manifests_match_the_chart_defaults() {
    // deploy/ is `helm template` of the chart's defaults, split per template (+ Namespace,
    // CRD copy, kustomization.yaml).
    let out = Command::new("python3")
        .arg(RENDER_DEPLOY)
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("could not run python3 {RENDER_DEPLOY}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let crd = std::fs::read(format!("{REPO}/crds/jwtkeysets.jwt.keyrotator.dev.yaml")).unwrap();
    assert!(
        crd == std::fs::read(format!("{REPO}/deploy/crd.yaml")).unwrap(),
        "deploy/crd.yaml differs from crds/"
    );

    // `kubectl apply -k deploy/` is accepted by the API server without a warning (but the one
    // for objects that exist already, not created by `kubectl apply`: the Namespace and the
    // CRD). A server-side dry run creates nothing, so the objects' namespace must exist already.
    let admin = support::client().await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some("jwt-key-rotator".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace jwt-key-rotator: {e}"),
    }
    let kubectl = |args: &[&str]| {
        let out = support::kubectl(args);
        let warned = out
            .stderr
            .lines()
            .any(|l| l.starts_with("Warning") && !l.contains("last-applied-configuration"));
        assert!(
            out.success && !warned,
            "kubectl {}:\n{}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    };
    let applied = kubectl(&["apply", "-k", "deploy/", "--dry-run=server"]);
    let objects: BTreeSet<&str> = applied
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for object in [
        "namespace/jwt-key-rotator",
        "customresourcedefinition.apiextensions.k8s.io/jwtkeysets.jwt.keyrotator.dev",
        "serviceaccount/jwt-key-rotator",
        "clusterrole.rbac.authorization.k8s.io/jwt-key-rotator",
        "clusterrolebinding.rbac.authorization.k8s.io/jwt-key-rotator",
        "role.rbac.authorization.k8s.io/jwt-key-rotator-leader-election",
        "rolebinding.rbac.authorization.k8s.io/jwt-key-rotator-leader-election",
        "service/jwt-key-rotator-metrics",
        "deployment.apps/jwt-key-rotator",
        "validatingadmissionpolicy.admissionregistration.k8s.io/jwt-key-rotator-own-objects-only",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/jwt-key-rotator-own-objects-only",
    ] {
        assert!(
            objects.contains(object),
            "kubectl apply -k deploy/ did not apply {object}:\n{applied}"
        );
    }

    // The example JwtKeySets pass the API server's schema too.
    let examples_ns = support::namespace(&admin, "deploy-examples").await;
    let applied = kubectl(&[
        "apply",
        "-f",
        "deploy/examples/",
        "-n",
        &examples_ns,
        "--dry-run=server",
    ]);
    let count = std::fs::read_dir(format!("{REPO}/deploy/examples"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert_eq!(
        applied
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count(),
        count,
        "{applied}"
    );
}

// ---- the operator as a pod on the test node --------------------------------------------------

const POD_DEADLINE: Duration = Duration::from_secs(120);

/// The release's pods, by their chart labels.
fn selector(release: &str) -> String {
    format!("app.kubernetes.io/name=jwt-key-rotator,app.kubernetes.io/instance={release}")
}

/// The Lease's holder (the leader's POD_NAME), once there is one.
async fn lease_holder(admin: &Client, namespace: &str, lease: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(admin.clone(), namespace);
    leases.get_opt(lease).await.ok()??.spec?.holder_identity
}

/// Fails unless no container of the release restarted and none was refused anything.
async fn assert_pods_healthy(admin: &Client, namespace: &str, release: &str) {
    for pod in node::ready_pods(admin, namespace, &selector(release)).await {
        let name = pod.metadata.name.clone().unwrap();
        let restarts: i32 = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(
            restarts,
            0,
            "pod {name} restarted:\n{}",
            node::logs(namespace, &name)
        );
        let log = node::logs(namespace, &name);
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "pod {name} was refused requests:\n{log}"
        );
    }
}

/// Uninstalls the release and waits until its pods are gone, so that no operator of it is
/// left reconciling when the next install test takes its turn.
async fn uninstall_and_wait(admin: &Client, release: &str, namespace: &str) {
    node::helm_uninstall(release, namespace);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let selector = selector(release);
    eventually("the release's pods to be gone", POD_DEADLINE, || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
}

#[test]
fn helm_install_runs_the_operator_as_a_pod_in_a_restricted_namespace() {
    one_operator_at_a_time(operator_pod());
}

async fn operator_pod() {
    let admin = support::client().await;
    let release_ns = node::restricted_namespace(&admin, "helm-pod").await;
    let keys_ns = support::namespace(&admin, "helm-pod-keys").await;
    let (release, fullname) = ("rotator-pod", "rotator-pod-jwt-key-rotator");
    node::helm_install_operator(release, &release_ns, &[]);
    let took =
        node::wait_deployment_available(&admin, &release_ns, fullname, 1, POD_DEADLINE).await;
    eprintln!("helm install: Deployment Available after {took:.1?}");
    let pods = node::ready_pods(&admin, &release_ns, &selector(release)).await;
    assert_eq!(pods.len(), 1, "one Ready pod");
    let pod = &pods[0];
    let pod_name = pod.metadata.name.clone().unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let container = &spec.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(node::image("jwt-key-rotator").as_str())
    );

    // In-cluster configuration: no kubeconfig anywhere, only the projected ServiceAccount
    // token the kubelet mounts; holding the Lease under its pod name proves it talks to the
    // API server with it (through the `kubernetes` Service).
    assert!(
        !container
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "KUBECONFIG"),
        "{:?}",
        container.env
    );
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .any(|v| v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.service_account_token.is_some())
            })),
        "no projected ServiceAccount token volume: {:?}",
        spec.volumes
    );
    wait_leader(&admin, &release_ns, fullname, &pod_name, &OperatorPod).await;

    // The kubelet's own probes: /healthz (liveness) and /readyz (readiness) answered it.
    eventually(
        "the kubelet to probe the pod's /healthz and /readyz",
        POD_DEADLINE,
        || {
            let pod_name = pod_name.clone();
            async move {
                let live = node::probe_count(&pod_name, "Liveness", "successful");
                let ready = node::probe_count(&pod_name, "Readiness", "successful");
                (live >= 1 && ready >= 1).then_some(())
            }
        },
    )
    .await;
    assert_eq!(node::probe_count(&pod_name, "Liveness", "failed"), 0);

    // Its whole job, from inside the pod: a set in another namespace Ready, its Secret, JWKS,
    // status and Events written.
    let name = apply_example(&admin, &keys_ns, "es256.yaml").await;
    wait_ready(&admin, &keys_ns, &name, &OperatorPod).await;
    assert_pods_healthy(&admin, &release_ns, release).await;
    uninstall_and_wait(&admin, release, &release_ns).await;
}

#[test]
fn deleting_the_leader_pod_hands_over_to_the_standby() {
    one_operator_at_a_time(leader_pod_deleted());
}

async fn leader_pod_deleted() {
    let admin = support::client().await;
    let release_ns = node::restricted_namespace(&admin, "helm-ha").await;
    let keys_ns = support::namespace(&admin, "helm-ha-keys").await;
    let (release, fullname) = ("rotator-ha", "rotator-ha-jwt-key-rotator");
    node::helm_install_operator(
        release,
        &release_ns,
        &["replicaCount=2", "podDisruptionBudget.enabled=true"],
    );
    node::wait_deployment_available(&admin, &release_ns, fullname, 2, POD_DEADLINE).await;
    let leader = eventually("a leader", POD_DEADLINE, || {
        lease_holder(&admin, &release_ns, fullname)
    })
    .await;
    let name = apply_example(&admin, &keys_ns, "es256.yaml").await;
    wait_ready(&admin, &keys_ns, &name, &OperatorPod).await;

    // Delete the leader's pod as a person or a node drain would (graceful: SIGTERM, and the
    // operator releases its Lease on the way out).
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &release_ns);
    let deleted_at = std::time::Instant::now();
    pods.delete(&leader, &DeleteParams::default())
        .await
        .expect("delete the leader's pod");
    let new_leader = eventually("the standby to take the Lease", POD_DEADLINE, || async {
        lease_holder(&admin, &release_ns, fullname)
            .await
            .filter(|h| *h != leader)
    })
    .await;
    let handover = deleted_at.elapsed();
    // The Deployment replaces the pod: two Ready pods again, the deleted one not among them
    // (its status alone still counts the old pod for a moment after the deletion).
    let ready: Vec<String> = eventually(
        "a replacement pod Ready beside the new leader",
        POD_DEADLINE,
        || async {
            let ready: Vec<String> = node::ready_pods(&admin, &release_ns, &selector(release))
                .await
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            (ready.len() == 2 && !ready.contains(&leader)).then_some(ready)
        },
    )
    .await;
    let replaced = deleted_at.elapsed();
    node::wait_deployment_available(&admin, &release_ns, fullname, 2, POD_DEADLINE).await;
    eprintln!(
        "leader pod {leader} deleted: {new_leader} holds the Lease after {handover:.2?}; \
         a replacement pod is Ready after {replaced:.2?}"
    );
    assert!(ready.contains(&new_leader), "{ready:?}");
    assert!(!ready.contains(&leader), "{ready:?}");

    // The new leader does the job: a rotation requested now is carried out.
    let sets: Api<JwtKeySet> = Api::namespaced(admin.clone(), &keys_ns);
    let before = sets.get(&name).await.unwrap().status.unwrap().keys.len();
    let patch = json!({"metadata": {"annotations": {"jwt.keyrotator.dev/rotate": "handover"}}});
    sets.patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually(
        "the new leader to start the requested rotation",
        POD_DEADLINE,
        || async {
            let keys = sets.get(&name).await.ok()?.status?.keys.len();
            (keys > before).then_some(())
        },
    )
    .await;
    assert_pods_healthy(&admin, &release_ns, release).await;
    uninstall_and_wait(&admin, release, &release_ns).await;
}
