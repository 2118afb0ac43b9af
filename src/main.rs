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
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
