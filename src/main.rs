use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use futures::FutureExt;
use jwt_key_rotator::leader::{self, Fence, LeaseConfig};
use jwt_key_rotator::metrics::Metrics;
use jwt_key_rotator::reconcile::Clock;
use jwt_key_rotator::{cli, controller, http, jwks_http};
use tracing::info;

/// Rotates JWT signing keys for JwtKeySets and publishes their JWKS.
#[derive(Parser)]
#[command(name = "jwt-key-rotator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the JwtKeySet CustomResourceDefinition (YAML).
    Crd,
    /// Run the controller (uses KUBECONFIG, or the in-cluster service account).
    Run {
        /// Watch only this namespace (repeat for several); all namespaces by default.
        #[arg(long = "namespace", short = 'n')]
        namespaces: Vec<String>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Address serving /metrics (Prometheus), /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Address serving the JWKS of sets with `spec.jwks.http` (every replica serves);
        /// "none" serves nothing.
        #[arg(long, default_value = "0.0.0.0:8081", value_parser = parse_optional_addr)]
        jwks_addr: OptionalAddr,
        /// Reconcile only while holding a coordination.k8s.io/v1 Lease (for several replicas).
        #[arg(long)]
        leader_election: bool,
        /// Name of the Lease.
        #[arg(long, default_value = "jwt-key-rotator")]
        lease_name: String,
        /// Namespace of the Lease (default: $POD_NAMESPACE, else "default").
        #[arg(long)]
        lease_namespace: Option<String>,
        /// How long a leader's Lease is valid without renewal; a standby takes over after it.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        lease_duration: std::time::Duration,
        /// A leader that could not renew for this long stops reconciling (< lease duration).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        lease_renew_deadline: std::time::Duration,
        /// How often the Lease is renewed, or tried by a standby.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        lease_retry_period: std::time::Duration,
        /// Sets reconciled at once (per namespace watched); the others wait their turn, in due
        /// order. Memory grows with it; see the README's Performance section.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        max_concurrent_reconciles: u16,
    },
    #[command(flatten)]
    Operate(cli::Command),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C). The handlers are
/// installed here, at once: a signal that arrives before anyone awaits this is not lost (nor
/// does it kill the process with the default action).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        info!("shutdown requested");
    })
}

/// A command-line duration; lease timings above an hour are refused as mistakes.
fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let parsed = jwt_key_rotator::api::parse_duration(value)?;
    if parsed > std::time::Duration::from_secs(3600) {
        return Err(format!("{value:?} is longer than an hour"));
    }
    Ok(parsed)
}

/// An address to listen on, or none.
#[derive(Clone, Copy)]
struct OptionalAddr(Option<std::net::SocketAddr>);

fn parse_optional_addr(value: &str) -> Result<OptionalAddr, String> {
    if value == "none" {
        return Ok(OptionalAddr(None));
    }
    let addr = value.parse().map_err(|e| format!("{value:?}: {e}"))?;
    Ok(OptionalAddr(Some(addr)))
}

/// Every replica serves the JWKS, the standbys too, from watches of its own; it is ready (and
/// its Service sends it requests) once they have listed.
async fn serve_jwks(
    client: &kube::Client,
    namespaces: &[String],
    addr: OptionalAddr,
    ready: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let OptionalAddr(Some(addr)) = addr else {
        ready.store(true, Ordering::Relaxed);
        return Ok(());
    };
    let (catalog, watching) = jwks_http::watch(client, namespaces);
    tokio::spawn(watching);
    http::serve(addr, catalog.clone(), http::Limits::public()).await?;
    tokio::spawn(async move {
        catalog.listed().await;
        ready.store(true, Ordering::Relaxed);
    });
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in log files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The command line; as the kubectl plugin (`kubectl-jwtks`, run by `kubectl jwtks ...`), its
/// help names itself so.
fn parse_command_line() -> Cli {
    let program = std::env::args_os().next().unwrap_or_default();
    let plugin = std::path::Path::new(&program)
        .file_name()
        .is_some_and(|name| name == cli::PLUGIN_NAME);
    let mut command = Cli::command();
    if plugin {
        command = command.bin_name("kubectl jwtks");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    match parse_command_line().command {
        Command::Operate(command) => return Ok(cli::run(command)),
        Command::Crd => print!("{}", jwt_key_rotator::api::crd_yaml()?),
        Command::Run {
            namespaces,
            log_format,
            metrics_addr,
            jwks_addr,
            leader_election,
            lease_name,
            lease_namespace,
            lease_duration,
            lease_renew_deadline,
            lease_retry_period,
            max_concurrent_reconciles: concurrency,
        } => {
            init_logging(log_format);
            if !(lease_retry_period < lease_renew_deadline && lease_renew_deadline < lease_duration)
            {
                anyhow::bail!(
                    "--lease-retry-period ({lease_retry_period:?}) < --lease-renew-deadline ({lease_renew_deadline:?}) < --lease-duration ({lease_duration:?}) must hold"
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let shutdown = shutdown_signal()?.boxed().shared();
                let metrics = Arc::new(Metrics::new());
                let ready = Arc::new(AtomicBool::new(false));
                let endpoints = http::Endpoints {
                    metrics: metrics.clone(),
                    ready: ready.clone(),
                };
                http::serve(metrics_addr, Arc::new(endpoints), http::Limits::default()).await?;
                let client = kube::Client::try_default().await?;
                let version = client.apiserver_version().await?;
                info!(server = %version.git_version, "connected to the Kubernetes API server");
                serve_jwks(&client, &namespaces, jwks_addr, ready.clone()).await?;
                let clock: Clock = Arc::new(jiff::Timestamp::now);
                if !leader_election {
                    metrics.set_leader(true);
                    let fence = Arc::new(Fence::default());
                    let stopping = shutdown.clone();
                    tokio::select! {
                        _ = controller::run(client, namespaces, clock, fence, metrics, concurrency, shutdown) => {}
                        // Never hang on the way out: writes are crash-safe, so a bounded grace is enough.
                        _ = async { stopping.await; tokio::time::sleep(leader::SHUTDOWN_GRACE).await } => {
                            tracing::warn!("in-flight work did not finish within the shutdown grace; exiting");
                        }
                    }
                    return anyhow::Ok(());
                }
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                    let host =
                        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    format!("{}-{}", host.trim(), std::process::id())
                });
                let lease = LeaseConfig {
                    name: lease_name,
                    namespace: lease_namespace
                        .or_else(|| std::env::var("POD_NAMESPACE").ok())
                        .unwrap_or_else(|| "default".into()),
                    identity,
                    lease_duration,
                    renew_deadline: lease_renew_deadline,
                    retry_period: lease_retry_period,
                };
                let fence = Arc::new(Fence::closed());
                let work = {
                    let (fence, metrics, shutdown, client) = (
                        fence.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                        client.clone(),
                    );
                    move || {
                        controller::run(
                            client.clone(),
                            namespaces.clone(),
                            clock.clone(),
                            fence.clone(),
                            metrics.clone(),
                            concurrency,
                            shutdown.clone(),
                        )
                    }
                };
                leader::run_while_leader(client, lease, fence, metrics, shutdown, work).await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
