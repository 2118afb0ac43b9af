//! Pods on the test node: the chart installed with the real `helm` (the operator as a pod,
//! from the image `tests/image/build.sh` built), restricted namespaces, and the kubectl verbs
//! that reach into pods (exec, logs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use super::{Output, eventually};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/jwt-key-rotator");

/// Runs the real `helm ARGS`: its stdout, or what it printed when it fails. Helm's own
/// configuration and cache stay under the target directory.
pub fn helm(args: &[&str]) -> Result<String, String> {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    let helm = HELM.get_or_init(|| super::tool("helm"));
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm");
    let out = Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", helm.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The full reference of an image `tests/image/build.sh` built: `jwt-key-rotator`,
/// `workload` or `pause`.
pub fn image(name: &str) -> String {
    let dir =
        std::env::var("JWT_ROTATOR_IMAGES").unwrap_or_else(|_| format!("{REPO}/target/images"));
    let path = format!("{dir}/{name}.ref");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (tests/image/build.sh builds it)"))
        .trim()
        .to_string()
}

/// `helm install RELEASE` of the chart into `namespace` with the operator's image built here
/// and these extra `--set` values; Helm's defaults otherwise (server-side apply, no --wait).
pub fn helm_install_operator(release: &str, namespace: &str, sets: &[&str]) {
    let image = image("jwt-key-rotator");
    let (repository, tag) = image.rsplit_once(':').expect("image reference with a tag");
    let kubeconfig = super::control_plane().kubeconfig.display().to_string();
    let repository = format!("image.repository={repository}");
    let tag = format!("image.tag={tag}");
    let mut args = vec![
        "install",
        release,
        CHART,
        "--namespace",
        namespace,
        "--kubeconfig",
        &kubeconfig,
        "--set",
        &repository,
        "--set",
        &tag,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args).unwrap_or_else(|e| panic!("helm install {release} failed:\n{e}"));
}

pub fn helm_uninstall(release: &str, namespace: &str) {
    let kubeconfig = super::control_plane().kubeconfig.display().to_string();
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

/// A fresh namespace whose pods must meet the `restricted` Pod Security Standard.
pub async fn restricted_namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_string(),
                    "restricted".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create restricted test namespace");
    created.metadata.name.expect("generated namespace name")
}

/// Waits until the Deployment has `replicas` available pods of its current generation, all
/// updated; returns how long that took.
pub async fn wait_deployment_available(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    deadline: Duration,
) -> Duration {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let what = format!("Deployment {namespace}/{name}: {replicas} available replicas");
    eventually(&what, deadline, || async {
        let d = api.get(name).await.ok()?;
        let status = d.status.as_ref()?;
        let available = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True");
        (available
            && status.observed_generation == d.metadata.generation
            && status.available_replicas == Some(replicas)
            && status.updated_replicas == Some(replicas)
            && status.replicas == Some(replicas))
        .then_some(())
    })
    .await;
    started.elapsed()
}

/// The Deployment's pods that are Running and Ready, by name.
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    pods.items.into_iter().filter(is_ready).collect()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until pod `namespace/name` is Ready.
pub async fn wait_pod_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let what = format!("pod {namespace}/{name} Ready");
    eventually(&what, deadline, || async {
        api.get(name).await.ok().filter(is_ready)
    })
    .await
}

/// `kubectl exec -n NAMESPACE POD -- ARGS`: through the API server and the kubelet into the
/// container, as a person would.
pub fn exec(namespace: &str, pod: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", "-n", namespace, pod, "--"];
    all.extend(args);
    super::kubectl(&all)
}

/// `kubectl logs -n NAMESPACE POD`.
pub fn logs(namespace: &str, pod: &str) -> String {
    let out = super::kubectl(&["logs", "-n", namespace, pod]);
    assert!(
        out.success,
        "kubectl logs {namespace}/{pod}: {}",
        out.stderr
    );
    out.stdout
}

/// The kubelet's probe counters (its /metrics/probes, through the API server's node proxy):
/// how many times it ran `probe_type` (Liveness, Readiness) with `result` on `pod`.
pub fn probe_count(pod: &str, probe_type: &str, result: &str) -> u64 {
    let node = node_name();
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/probes");
    let out = super::kubectl(&["get", "--raw", &path]);
    assert!(out.success, "kubectl get --raw {path}: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.starts_with("prober_probe_total{"))
        .filter(|l| {
            l.contains(&format!("pod=\"{pod}\""))
                && l.contains(&format!("probe_type=\"{probe_type}\""))
                && l.contains(&format!("result=\"{result}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The name of the test cluster's node.
pub fn node_name() -> String {
    let kubeconfig = &super::control_plane().kubeconfig;
    let env = kubeconfig.with_file_name("env");
    let text = std::fs::read_to_string(&env).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("NODE_NAME="))
        .filter(|n| !n.is_empty())
        .unwrap_or("jwt-rotator-node")
        .to_string()
}
