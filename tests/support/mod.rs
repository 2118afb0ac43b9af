//! Test support: a real Kubernetes control plane (etcd + kube-apiserver +
//! kube-controller-manager, configured as a kubeadm cluster is) per test binary, envtest-style,
//! and the real `kubectl` and `helm` built beside it. The binaries in [`NODE_TESTS`] get one
//! node too (`up.sh --node`: kube-scheduler, containerd, the kubelet, kube-proxy), which runs
//! the images `tests/image/build.sh` builds (the operator's among them).
//!
//! The control plane comes from `tests/control-plane/up.sh` (binaries built once by
//! `setup.sh`). It is started on first use and torn down when this process exits, however it
//! exits: `up.sh` holds the read end of a pipe whose write end lives here, and tears everything
//! down at EOF. Set `JWT_ROTATOR_TEST_KUBECONFIG` to use an existing cluster instead.
//! A control plane that cannot start fails every test that needs it: nothing is skipped.
#![allow(dead_code)]

pub mod node;
mod operator;
pub mod verifier;

#[allow(unused_imports)]
pub use operator::Operator;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const START_DEADLINE: Duration = Duration::from_secs(240);

/// The test binaries whose cluster has a node that runs pods: the others need none, and start
/// faster without.
pub const NODE_TESTS: &[&str] = &["install", "workloads"];

/// The kubelet's syncFrequency on the test node: how often it refreshes mounted Secrets and
/// ConfigMaps (the kubelet's default is 1m). Short, so that rotations propagate in seconds.
pub const KUBELET_SYNC_FREQUENCY: Duration = Duration::from_secs(2);

/// Whether this test binary's cluster has a node.
pub fn has_node() -> bool {
    NODE_TESTS.contains(&env!("CARGO_CRATE_NAME"))
}

pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    /// Keeps `up.sh` alive; dropped (closed) only when the process exits.
    _lifeline: Option<Mutex<(Child, ChildStdin)>>,
}

static PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, started on first use, with the CRD installed.
pub fn control_plane() -> &'static ControlPlane {
    match PLANE.get_or_init(start) {
        Ok(plane) => plane,
        Err(message) => panic!("no Kubernetes control plane for the tests:\n{message}"),
    }
}

static APISERVER_ARGS: OnceLock<String> = OnceLock::new();

/// The control plane of this test binary, its kube-apiserver started with these extra flags
/// (an audit policy, an encryption configuration). Every test of the binary calls this first,
/// with the same flags: the first call starts the plane.
pub fn control_plane_with(apiserver_args: &[String]) -> &'static ControlPlane {
    let _ = APISERVER_ARGS.set(apiserver_args.join("\n"));
    control_plane()
}

/// A control plane of the caller's own, beside the binary's shared one, its kube-apiserver
/// started with these extra flags and the CRD installed; torn down when dropped.
pub fn own_control_plane(apiserver_args: &[String]) -> ControlPlane {
    match start_local(&apiserver_args.join("\n")).and_then(with_crd) {
        Ok(plane) => plane,
        Err(message) => panic!("no Kubernetes control plane for the test:\n{message}"),
    }
}

/// The plane's `env` file (written by up.sh): `ETCD_ENDPOINT`, `KUBECONFIG`, ...
pub fn plane_env(plane: &ControlPlane, name: &str) -> String {
    let path = plane.kubeconfig.with_file_name("env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} (a control plane of up.sh's): {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {}", path.display()))
        .to_string()
}

/// An admin client of `plane`, bound to the calling test's runtime.
pub async fn client_of(plane: &ControlPlane) -> Client {
    let config = config_from(&plane.kubeconfig).await;
    Client::try_from(config.unwrap_or_else(|e| panic!("{e}"))).expect("client from kubeconfig")
}

fn start() -> Result<ControlPlane, String> {
    let plane = match std::env::var_os("JWT_ROTATOR_TEST_KUBECONFIG") {
        Some(path) => ControlPlane {
            kubeconfig: PathBuf::from(path),
            _lifeline: None,
        },
        None => start_local(APISERVER_ARGS.get().map_or("", String::as_str))?,
    };
    with_crd(plane)
}

fn with_crd(plane: ControlPlane) -> Result<ControlPlane, String> {
    // The CRD is installed from a runtime of its own: tests each run their own runtime.
    let kubeconfig = plane.kubeconfig.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(install_crd(&kubeconfig))
    })
    .join()
    .map_err(|_| "installing the CRD panicked".to_string())??;
    Ok(plane)
}

fn start_local(apiserver_args: &str) -> Result<ControlPlane, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("jwt-rotator-cp-{}-{nanos}", std::process::id()));
    let script = Path::new(REPO).join("tests/control-plane/up.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg(&dir).arg("--lifeline-stdin");
    if has_node() {
        build_images()?;
        command.arg("--node").env(
            "JWT_ROTATOR_KUBELET_SYNC_FREQUENCY",
            format!("{}s", KUBELET_SYNC_FREQUENCY.as_secs()),
        );
    }
    let mut child = command
        .env("JWT_ROTATOR_CP_REMOVE_DIR", "1")
        .env("JWT_ROTATOR_CP_APISERVER_ARGS", apiserver_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe to up.sh")?;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(stderr) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = log.lock() {
                    log.push(line);
                }
            }
        });
    }
    let tail = |log: &Arc<Mutex<Vec<String>>>| {
        let log = log.lock().map(|l| l.clone()).unwrap_or_default();
        log[log.len().saturating_sub(40)..].join("\n")
    };
    let started = Instant::now();
    while !dir.join("ready").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} exited with {status} before the control plane was ready \
                 (run tests/control-plane/setup.sh once to build it):\n{}",
                script.display(),
                tail(&log)
            ));
        }
        if started.elapsed() > START_DEADLINE {
            let _ = child.kill();
            return Err(format!(
                "control plane not ready after {START_DEADLINE:?}:\n{}",
                tail(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ControlPlane {
        kubeconfig: dir.join("kubeconfig"),
        _lifeline: Some(Mutex::new((child, stdin))),
    })
}

/// Builds the node's images (`tests/image/build.sh`: incremental, a few seconds when nothing
/// changed), so that the node runs the operator as it is now. The script gets the caller's
/// environment less what `cargo test` adds (CARGO_*, LD_LIBRARY_PATH, ...): with those, its
/// cargo would see a changed environment and rebuild from scratch, and again in the shell.
fn build_images() -> Result<(), String> {
    let script = Path::new(REPO).join("tests/image/build.sh");
    let mut command = Command::new("bash");
    command.arg(&script).env_clear();
    const KEEP: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LANG",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "JWT_ROTATOR_IMAGES",
        "JWT_ROTATOR_CACHE",
    ];
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| KEEP.contains(&n)) {
            command.env(name, value);
        }
    }
    let started = std::time::Instant::now();
    let out = command
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if out.status.success() {
        eprintln!("tests/image/build.sh: {:.1?}", started.elapsed());
        Ok(())
    } else {
        Err(format!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn config_from(kubeconfig: &Path) -> Result<Config, String> {
    let kc =
        Kubeconfig::read_from(kubeconfig).map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", kubeconfig.display()))
}

/// The field manager of everything the test support applies.
pub const FIELD_MANAGER: &str = "jwt-key-rotator-tests";

/// Installs `crds/` as a user's `kubectl apply --server-side -f crds/` does.
async fn install_crd(kubeconfig: &Path) -> Result<(), String> {
    let client = Client::try_from(config_from(kubeconfig).await?).map_err(|e| e.to_string())?;
    let path = Path::new(REPO).join("crds/jwtkeysets.jwt.keyrotator.dev.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .map_err(|e| format!("server-side apply of CRD {name}: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api, &name, conditions::is_crd_established()),
    )
    .await
    .map_err(|_| format!("CRD {name} not established within 60s"))?
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The path of a tool that `tests/control-plane/setup.sh` built: `kubectl`, `helm`, ...
pub fn tool(name: &str) -> PathBuf {
    let script = Path::new(REPO).join("tests/control-plane/which.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{name} is not built: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// What a command printed: its exit status, stdout and stderr.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl ARGS` (the one built beside the control plane) against the test control
/// plane, from the repository's root.
pub fn kubectl(args: &[&str]) -> Output {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    let kubectl = KUBECTL.get_or_init(|| tool("kubectl"));
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(args)
        .current_dir(REPO)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", kubectl.display()));
    Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The admin client configuration of the control plane.
pub async fn config() -> Config {
    let plane = control_plane();
    match config_from(&plane.kubeconfig).await {
        Ok(config) => config,
        Err(e) => panic!("kubeconfig of the test control plane: {e}"),
    }
}

/// An admin client of the control plane, bound to the calling test's runtime.
pub async fn client() -> Client {
    Client::try_from(config().await).expect("client from the test kubeconfig")
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let created = api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    created.metadata.name.expect("generated namespace name")
}

/// Applies (server-side, as `kubectl apply --server-side` would) a JwtKeySet with this spec.
pub async fn apply_set(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    use kube::api::{ApiResource, DynamicObject};
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<jwt_key_rotator::api::JwtKeySet>(&()),
    );
    let object = serde_json::json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "metadata": { "name": name },
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("tests").force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply JwtKeySet {name}: {e}"));
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
