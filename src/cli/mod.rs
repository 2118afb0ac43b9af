//! The commands for people who operate key sets: `status`, `rotate`, `revoke`, `verify` and
//! `history`, in the operator's own binary and as the kubectl plugin `kubectl jwtks` (the
//! binary installed, or linked, as `kubectl-jwtks`).
//!
//! Each command prints for people by default and JSON with `-o json`. It talks to the API
//! server as the user running it (KUBECONFIG, its current context and namespace), so the API
//! server's audit log names that user. No command reads a Secret: key material never passes
//! through here.

mod error;
mod history;
mod jws;
mod revoke;
mod rotate;
mod status;
mod timeline;
mod verify;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::JwtKeySet;
pub use error::CliError;

/// The name the binary has as a kubectl plugin: `kubectl jwtks ...` runs `kubectl-jwtks ...`.
pub const PLUGIN_NAME: &str = "kubectl-jwtks";

#[derive(Subcommand)]
pub enum Command {
    /// Show key sets and their keys on a timeline: published, signs from, retires, expires.
    Status {
        /// One set; all sets in the namespace when omitted.
        name: Option<String>,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
    /// Start a rotation now: a new key is published and signs after publishLead.
    Rotate {
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
    /// Revoke a key: it leaves the Secret and the JWKS at once (asks first unless --yes).
    Revoke {
        name: String,
        /// A kid is base64url and may start with `-`: it is never taken for an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
    /// Check a JWT against the published JWKS: which set and key, whether it verifies now,
    /// until when, and why not. Exits 0 only if it verifies.
    Verify {
        /// The token (compact JWS), or `-` to read it from standard input (keeps it out of
        /// shell history and process lists).
        token: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
    /// Show the operator's record of a set's key transitions (status.history).
    History {
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        output: Output,
    },
}

/// Which namespace(s) a command looks in.
#[derive(Args, Clone)]
pub struct Scope {
    /// The namespace (default: the current context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Every namespace you may list (status, verify).
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Output format: text for people, json for scripts.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs one command; prints its error (naming the object and what to do) on failure.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return failed(&CliError::Other(format!("cannot start: {e}"))),
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => failed(&e),
    }
}

fn failed(e: &CliError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn dispatch(command: Command) -> Result<ExitCode, CliError> {
    let client = Client::try_default().await.map_err(CliError::NoCluster)?;
    let ok = ExitCode::SUCCESS;
    match command {
        Command::Status {
            name,
            scope,
            output,
        } => status::run(&client, name.as_deref(), &scope, output.format)
            .await
            .map(|()| ok),
        Command::Rotate {
            name,
            scope,
            output,
        } => rotate::run(&client, &name, &scope, output.format)
            .await
            .map(|()| ok),
        Command::Revoke {
            name,
            kid,
            yes,
            scope,
            output,
        } => revoke::run(&client, &name, &kid, yes, &scope, output.format)
            .await
            .map(|()| ok),
        Command::Verify {
            token,
            scope,
            output,
        } => verify::run(&client, &token, &scope, output.format).await,
        Command::History {
            name,
            scope,
            output,
        } => history::run(&client, &name, &scope, output.format)
            .await
            .map(|()| ok),
    }
}

/// The namespace a command on one named set works in.
fn namespace_of(client: &Client, scope: &Scope) -> String {
    scope
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// One set, by name, in the scope's namespace.
async fn get_set(client: &Client, scope: &Scope, name: &str) -> Result<JwtKeySet, CliError> {
    let ns = namespace_of(client, scope);
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    sets.get(name)
        .await
        .map_err(|e| CliError::api(e, "get", &format!("JwtKeySet {ns}/{name}")))
}

/// The sets in scope: every namespace with `-A`, else one namespace.
async fn list_sets(client: &Client, scope: &Scope) -> Result<Vec<JwtKeySet>, CliError> {
    let (sets, what): (Api<JwtKeySet>, String) = if scope.all_namespaces {
        (
            Api::all(client.clone()),
            "JwtKeySets in all namespaces".into(),
        )
    } else {
        let ns = namespace_of(client, scope);
        (
            Api::namespaced(client.clone(), &ns),
            format!("JwtKeySets in namespace {ns}"),
        )
    };
    let mut list = sets
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::api(e, "list", &what))?
        .items;
    list.sort_by_key(|s| (s.namespace(), s.name_any()));
    Ok(list)
}

/// Writes name their field manager, so managedFields say which tool made them.
fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(PLUGIN_NAME.into()),
        ..Default::default()
    }
}

/// `namespace/name` of a set, as every message names it.
fn set_ref(set: &JwtKeySet) -> String {
    format!("{}/{}", set.namespace().unwrap_or_default(), set.name_any())
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: super::Command,
    }

    #[test]
    fn a_kid_that_starts_with_a_hyphen_is_a_kid() {
        let cli = Cli::try_parse_from(["kubectl-jwtks", "revoke", "web", "-rXb3", "--yes"]);
        match cli.map(|c| c.command) {
            Ok(super::Command::Revoke { kid, yes, .. }) => {
                assert_eq!((kid.as_str(), yes), ("-rXb3", true))
            }
            Ok(_) => panic!("not revoke"),
            Err(e) => panic!("{e}"),
        }
    }
}
