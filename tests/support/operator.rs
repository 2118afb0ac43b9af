//! The operator binary, run out of cluster against the test control plane, as a user runs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `jwt-key-rotator run` process; killed when dropped.
pub struct Operator {
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator watching `namespace` with the admin kubeconfig.
    pub fn start(namespace: &str) -> Operator {
        Self::start_with(
            vec![
                "run".into(),
                "--namespace".into(),
                namespace.into(),
                // Tests run operators side by side: each picks a free port.
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
            ],
            vec![],
        )
    }

    /// Starts the operator with these arguments and extra environment.
    pub fn start_with(mut args: Vec<String>, env: Vec<(String, String)>) -> Operator {
        // Tests run operators side by side: unless a test chooses, each serves the JWKS on a
        // free port rather than all on the default one.
        if args.first().is_some_and(|a| a == "run")
            && !args.iter().any(|a| a.starts_with("--jwks-addr"))
        {
            args.extend(["--jwks-addr".into(), "127.0.0.1:0".into()]);
        }
        let plane = super::control_plane();
        let log = std::env::temp_dir().join(format!(
            "jwt-rotator-operator-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut operator = Operator {
            child: None,
            args,
            env: [(
                "KUBECONFIG".to_string(),
                plane.kubeconfig.display().to_string(),
            )]
            .into_iter()
            .chain(env)
            .collect(),
            log,
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_jwt-key-rotator"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,jwt_key_rotator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start the operator binary");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs, as when a node dies.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        child.wait().ok()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the running process.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The address the operator serves /metrics, /healthz and /readyz on, from its log.
    pub async fn metrics_addr(&self) -> std::net::SocketAddr {
        super::eventually(
            "the operator to log its metrics address",
            std::time::Duration::from_secs(30),
            || async {
                let log = self.log_text();
                let line = log.lines().rev().find(|l| l.contains("serving /metrics"))?;
                let addr = line.split("address=").nth(1)?.split_whitespace().next()?;
                addr.trim_matches('"').parse().ok()
            },
        )
        .await
    }

    /// The operator's log so far, for assertions and failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
