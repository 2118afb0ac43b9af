//! `history NAME`: the operator's record of a set's key transitions (status.history).

use jiff::Timestamp;
use kube::Client;
use serde_json::json;

use super::status::print_table;
use super::{CliError, Format, Scope, print_json, timeline};
use crate::api::HISTORY_LIMIT;

pub async fn run(
    client: &Client,
    name: &str,
    scope: &Scope,
    format: Format,
) -> Result<(), CliError> {
    let set = super::get_set(client, scope, name).await?;
    let history = set.status.map(|s| s.history).unwrap_or_default();
    match format {
        Format::Json => print_json(&json!(history)),
        Format::Text if history.is_empty() => println!(
            "JwtKeySet {} has no recorded transitions yet (is the operator running?).",
            set_ref_of(name, scope, client)
        ),
        Format::Text => {
            let now = Timestamp::now();
            println!(
                "JwtKeySet {}: the last {} key transitions the operator recorded (it keeps {HISTORY_LIMIT}); \
                 who asked for a change is in the API server's audit log.",
                set_ref_of(name, scope, client),
                history.len()
            );
            let rows: Vec<[String; 4]> = history
                .iter()
                .map(|e| {
                    [
                        format!(
                            "{} ({})",
                            timeline::absolute(e.time.0),
                            timeline::relative(e.time.0, now)
                        ),
                        e.event.clone(),
                        e.kid.clone().unwrap_or_else(|| "-".into()),
                        e.message.clone(),
                    ]
                })
                .collect();
            print_table(&["TIME", "EVENT", "KID", "MESSAGE"], &rows);
        }
    }
    Ok(())
}

fn set_ref_of(name: &str, scope: &Scope, client: &Client) -> String {
    format!("{}/{name}", super::namespace_of(client, scope))
}
