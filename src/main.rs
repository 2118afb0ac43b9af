use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

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
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let parsed: kube::core::Duration = value.parse().map_err(|e| format!("{value:?}: {e}"))?;
    if parsed.is_negative() {
        return Err(format!("{value:?} is negative"));
    }
    Ok(parsed.into())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", jwt_key_rotator::api::crd_yaml()?),
        Command::Run {
            namespaces,
            log_format,
            ..
        } => {
            init_logging(log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                jwt_key_rotator::controller::run(
                    client,
                    namespaces,
                    Arc::new(jiff::Timestamp::now),
                )
                .await;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}
