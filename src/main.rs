use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", jwt_key_rotator::api::crd_yaml()?),
    }
    Ok(())
}
