//! `revoke NAME KID`: adds the kid to spec.revokedKids, keeping the entries there. The operator
//! then removes the key from the Secret and the JWKS at once.

use std::io::{BufRead, IsTerminal, Write};

use jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{CliError, Format, Scope, print_json, set_ref, timeline};
use crate::api::JwtKeySet;

/// Someone else changed the set between our read and our write this many times: give up.
const ATTEMPTS: usize = 3;

pub async fn run(
    client: &Client,
    name: &str,
    kid: &str,
    yes: bool,
    scope: &Scope,
    format: Format,
) -> Result<(), CliError> {
    let set = super::get_set(client, scope, name).await?;
    let already = set.spec.revoked_kids.iter().any(|k| k == kid);
    if !already {
        let state = state_of(&set, kid)?;
        eprintln!("{}", warning(&set, kid, &state));
        if !yes {
            confirm(&set, kid)?;
        }
        add_revoked_kid(client, set.clone(), kid).await?;
    }
    report(&set, kid, already, format);
    Ok(())
}

/// The key's state, or a refusal naming the keys the set has.
fn state_of(set: &JwtKeySet, kid: &str) -> Result<String, CliError> {
    let keys = set.status.iter().flat_map(|s| &s.keys);
    if let Some(key) = keys.clone().find(|k| k.kid == kid) {
        return Ok(key.state.clone());
    }
    let known: Vec<String> = keys.map(|k| format!("{} ({})", k.kid, k.state)).collect();
    Err(CliError::Refused(format!(
        "{kid} is not a key of JwtKeySet {} (its keys: {}). `kubectl jwtks status {} -n {}` \
         lists them; to revoke a kid the operator does not list, add it to spec.revokedKids \
         with kubectl edit",
        set_ref(set),
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
        set.name_any(),
        set.namespace().unwrap_or_default()
    )))
}

/// What revoking does, and what it cannot do: caches keep accepting the key for a while.
fn warning(set: &JwtKeySet, kid: &str, state: &str) -> String {
    let spec = &set.spec;
    let takeover = if state == "Active" {
        " It is the active key: another key signs at once."
    } else {
        ""
    };
    format!(
        "Revoking {state} key {kid} of JwtKeySet {}.\n\
         - It leaves the Secret and the published JWKS at once.{takeover} Verifiers that fetch \
         the JWKS after that refuse tokens it signed.\n\
         - Revocation cannot beat caches: a verifier sees the JWKS up to propagationDelay ({}) \
         late and keeps the copy it fetched for up to verifierCacheTTL ({}), and accepts tokens \
         signed with it until then. Restart verifiers that must refuse it sooner.",
        set_ref(set),
        spec.propagation_delay,
        spec.verifier_cache_ttl
    )
}

/// Asks on the terminal; without one, refuses (scripts say --yes).
fn confirm(set: &JwtKeySet, kid: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Refused(format!(
            "not revoked: {kid} of JwtKeySet {} needs confirmation and standard input is not a \
             terminal; pass --yes to revoke without asking",
            set_ref(set)
        )));
    }
    eprint!("Type 'revoke' to revoke it: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == "revoke" {
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "not revoked: {kid} of JwtKeySet {} (the answer was not 'revoke')",
        set_ref(set)
    )))
}

/// A merge patch that carries the resourceVersion it read: a concurrent change to the list
/// makes the API server answer 409, and we read again instead of dropping someone's entry.
async fn add_revoked_kid(client: &Client, mut set: JwtKeySet, kid: &str) -> Result<(), CliError> {
    let what = format!("JwtKeySet {}", set_ref(&set));
    let sets: Api<JwtKeySet> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    for _ in 0..ATTEMPTS {
        let mut kids = set.spec.revoked_kids.clone();
        if kids.iter().any(|k| k == kid) {
            return Ok(());
        }
        kids.push(kid.to_string());
        let patch = json!({
            "metadata": {"resourceVersion": set.resource_version()},
            "spec": {"revokedKids": kids},
        });
        match sets
            .patch(
                &set.name_any(),
                &super::patch_params(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                set = sets
                    .get(&set.name_any())
                    .await
                    .map_err(|e| CliError::api(e, "get", &what))?;
            }
            Err(e) => return Err(CliError::api(e, "patch", &what)),
        }
    }
    Err(CliError::Refused(format!(
        "not revoked: {what} kept changing while this command wrote it; run it again"
    )))
}

fn report(set: &JwtKeySet, kid: &str, already: bool, format: Format) {
    // The status has the time once the operator took the key out; until then, from now.
    let recorded = effective_at(set, kid);
    let horizon = set.validate().ok().map(|v| v.policy.cache_horizon());
    let estimate = horizon.and_then(|h| Timestamp::now().checked_add(h).ok());
    let refused_by = recorded.or(estimate);
    match format {
        Format::Json => print_json(&json!({
            "namespace": set.namespace(), "name": set.name_any(), "kid": kid,
            "revoked": true, "alreadyRevoked": already,
            "refusedByEveryVerifierBy": refused_by,
        })),
        Format::Text if already => println!(
            "{kid} was already revoked in JwtKeySet {} (spec.revokedKids): nothing to do.{}",
            set_ref(set),
            recorded.map_or(String::new(), |t| format!(
                " Every verifier refuses it from {}.",
                timeline::absolute(t)
            ))
        ),
        Format::Text => {
            println!(
                "Revoked {kid} in JwtKeySet {} (spec.revokedKids).",
                set_ref(set)
            );
            if let Some(t) = refused_by {
                println!(
                    "Every verifier refuses it by about {} (propagationDelay + verifierCacheTTL \
                     after it leaves the JWKS; status.revocations has the exact time); check \
                     with: kubectl jwtks status {} -n {}",
                    timeline::absolute(t),
                    set.name_any(),
                    set.namespace().unwrap_or_default()
                );
            }
        }
    }
}

/// When the status says every verifier refuses `kid` (status.revocations).
pub(super) fn effective_at(set: &JwtKeySet, kid: &str) -> Option<Timestamp> {
    set.status
        .iter()
        .flat_map(|s| &s.revocations)
        .find(|r| r.kid == kid)
        .map(|r| r.effective_at)
}
