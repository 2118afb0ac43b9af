//! `verify TOKEN`: finds the set and the key by the token's kid in the published JWKS (what
//! verifiers hold), checks the signature and the token's times, and says until when the key
//! stays published, or why the token does not verify.

use std::io::Read;
use std::process::ExitCode;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::jws::{self, Token};
use super::timeline::{self, KeyTimeline};
use super::{CliError, Format, Scope, print_json, set_ref};
use crate::api::JwtKeySet;
use crate::keys::{PublicJwk, kid_of_public_jwk};
use crate::layout;

/// The answer: whether the token verifies now, with which key, and why not.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Verdict {
    verifies: bool,
    kid: Option<String>,
    alg: String,
    /// `namespace/name` of the set whose key it is.
    key_set: Option<String>,
    key: Option<KeyTimeline>,
    token_expires_at: Option<Timestamp>,
    /// Why it does not verify (empty when it does).
    reasons: Vec<String>,
    /// What else is worth knowing (where the key was found, ...).
    notes: Vec<String>,
}

pub async fn run(
    client: &Client,
    token: &str,
    scope: &Scope,
    format: Format,
) -> Result<ExitCode, CliError> {
    let text = read_token(token)?;
    let token =
        jws::parse(&text).map_err(|e| CliError::Refused(format!("cannot read the token: {e}")))?;
    let mut verdict = Verdict {
        kid: token.kid.clone(),
        alg: token.alg.clone(),
        ..Verdict::default()
    };
    match &token.kid {
        None => verdict
            .reasons
            .push("the token's header has no kid: the operator's keys are found by kid".into()),
        Some(kid) => find_and_verify(client, scope, &token, kid, &mut verdict).await?,
    }
    check_times(&token, &mut verdict);
    verdict.verifies = verdict.reasons.is_empty();
    match format {
        Format::Json => print_json(&serde_json::to_value(&verdict).unwrap_or_default()),
        Format::Text => print_verdict(&verdict),
    }
    Ok(if verdict.verifies {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn read_token(token: &str) -> Result<String, CliError> {
    if token != "-" {
        return Ok(token.to_string());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::Other(format!("cannot read the token from standard input: {e}")))?;
    Ok(text.trim().to_string())
}

/// Looks for the kid in every set in scope, then verifies with the published JWK.
async fn find_and_verify(
    client: &Client,
    scope: &Scope,
    token: &Token,
    kid: &str,
    verdict: &mut Verdict,
) -> Result<(), CliError> {
    let sets = candidate_sets(client, scope, verdict).await?;
    for set in &sets {
        if let Some(found) = lookup(client, set, kid, verdict).await {
            verdict.key_set = Some(set_ref(set));
            verdict.key = timeline::of_set(set).into_iter().find(|k| k.kid == kid);
            match found {
                Found::Published(jwk) => {
                    if kid_of_public_jwk(&jwk).as_deref() != Some(kid) {
                        verdict.reasons.push(format!(
                            "the JWK published as {kid} is not the key that kid names (kid is \
                             its RFC 7638 thumbprint): the JWKS was edited by hand"
                        ));
                    } else if let Err(why) = jws::verify(token, &jwk) {
                        verdict.reasons.push(why);
                    }
                }
                Found::Gone(why) => verdict.reasons.push(why),
            }
            return Ok(());
        }
    }
    let looked = if sets.is_empty() {
        "no JwtKeySet".to_string()
    } else {
        sets.iter().map(set_ref).collect::<Vec<_>>().join(", ")
    };
    verdict.reasons.push(format!(
        "kid {kid} is in no JwtKeySet you can read (looked in: {looked}): the key is not the \
         operator's, or expired long ago; try -n NAMESPACE or -A"
    ));
    Ok(())
}

/// Every namespace you may list, or the one asked for; without -n or -A, all namespaces if
/// allowed, else the current context's.
async fn candidate_sets(
    client: &Client,
    scope: &Scope,
    verdict: &mut Verdict,
) -> Result<Vec<JwtKeySet>, CliError> {
    if scope.namespace.is_some() || scope.all_namespaces {
        return super::list_sets(client, scope).await;
    }
    let everywhere = Scope {
        namespace: None,
        all_namespaces: true,
    };
    match super::list_sets(client, &everywhere).await {
        Ok(sets) => Ok(sets),
        Err(_) => {
            let ns = super::namespace_of(client, scope);
            verdict.notes.push(format!(
                "you may not list JwtKeySets in all namespaces: looked in {ns} only"
            ));
            super::list_sets(client, scope).await
        }
    }
}

enum Found {
    /// In the published JWKS: what verifiers hold.
    Published(PublicJwk),
    /// The set knows the kid but does not publish it (revoked, or an HMAC key).
    Gone(String),
}

/// Whether `set` has the kid: in its JWKS ConfigMap, its status, its revocations or its history.
async fn lookup(
    client: &Client,
    set: &JwtKeySet,
    kid: &str,
    verdict: &mut Verdict,
) -> Option<Found> {
    let published = published_jwks(client, set, verdict).await;
    if let Some(jwk) = published.iter().flatten().find(|j| j.kid == kid) {
        return Some(Found::Published(jwk.clone()));
    }
    let status = set.status.clone().unwrap_or_default();
    let recorded = status.keys.iter().find(|k| k.kid == kid);
    if set.spec.revoked_kids.iter().any(|k| k == kid) {
        let until = super::revoke::effective_at(set, kid).map_or_else(
            || "until their cache expires (propagationDelay + verifierCacheTTL after it left the JWKS)".into(),
            |t| format!("until {} (status.revocations)", timeline::absolute(t)),
        );
        return Some(Found::Gone(format!(
            "key {kid} was revoked in JwtKeySet {} (spec.revokedKids); verifiers with a cached \
             JWKS accept it {until}",
            set_ref(set)
        )));
    }
    if let Some(key) = recorded {
        if key.public_jwk.is_none() {
            return Some(Found::Gone(format!(
                "key {kid} of JwtKeySet {} is an {} key: symmetric keys are never published; \
                 verify with the Secret's verify.jwks.json",
                set_ref(set),
                key.algorithm
            )));
        }
        if published.is_none() {
            verdict.notes.push(format!(
                "could not read the JWKS ConfigMap of {}: checked against status.keys",
                set_ref(set)
            ));
            return key.public_jwk.clone().map(Found::Published);
        }
        return Some(Found::Gone(format!(
            "key {kid} of JwtKeySet {} is not in its published JWKS yet",
            set_ref(set)
        )));
    }
    let left = status.history.iter().rev().find(|e| {
        e.kid.as_deref() == Some(kid)
            && matches!(
                e.event.as_str(),
                "KeyExpired" | "KeyRevoked" | "KeyDiscarded"
            )
    })?;
    Some(Found::Gone(format!(
        "key {kid} of JwtKeySet {} left the JWKS at {} ({}): {}",
        set_ref(set),
        timeline::absolute(left.time.0),
        left.event,
        left.message
    )))
}

/// The keys in the set's JWKS ConfigMap; `None` if it cannot be read.
async fn published_jwks(
    client: &Client,
    set: &JwtKeySet,
    verdict: &mut Verdict,
) -> Option<Vec<PublicJwk>> {
    let status = set.status.as_ref()?;
    let (name, key) = (status.config_map_name.as_ref()?, status.jwks_key.as_ref()?);
    let maps: Api<ConfigMap> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    match maps.get_opt(name).await {
        Ok(map) => Some(
            map.and_then(|m| m.data?.get(key).map(|d| layout::read_jwks(d)))
                .unwrap_or_default(),
        ),
        Err(e) => {
            verdict
                .notes
                .push(format!("ConfigMap {name} of {}: {e}", set_ref(set)));
            None
        }
    }
}

/// `exp` and `nbf` against the local clock, as a verifier without leeway checks them.
fn check_times(token: &Token, verdict: &mut Verdict) {
    let now = Timestamp::now();
    let at = |claim: &str| {
        token
            .time_claim(claim)
            .and_then(|s| Timestamp::from_second(s).ok())
    };
    verdict.token_expires_at = at("exp");
    if let Some(exp) = at("exp").filter(|exp| *exp <= now) {
        verdict.reasons.push(format!(
            "the token expired at {} ({})",
            timeline::absolute(exp),
            timeline::relative(exp, now)
        ));
    }
    if let Some(nbf) = at("nbf").filter(|nbf| *nbf > now) {
        verdict.reasons.push(format!(
            "the token is not valid before {} ({})",
            timeline::absolute(nbf),
            timeline::relative(nbf, now)
        ));
    }
}

fn print_verdict(v: &Verdict) {
    let now = Timestamp::now();
    let kid = v.kid.as_deref().unwrap_or("(none)");
    if v.verifies {
        println!(
            "VALID: the signature verifies with {} key {kid} of JwtKeySet {}.",
            v.alg,
            v.key_set.as_deref().unwrap_or("?")
        );
    } else {
        println!("NOT VALID: {} token, kid {kid}.", v.alg);
        for reason in &v.reasons {
            println!("  - {reason}");
        }
    }
    if let Some(key) = &v.key {
        println!(
            "Key {}: {}; published {}.",
            key.kid,
            key.state,
            timeline::when(key.published_at, now)
        );
        if key.state != "Retired" {
            println!(
                "  signs from {}, retires {}.",
                timeline::when(key.signs_from, now),
                timeline::when(key.retires_at, now)
            );
        }
        println!(
            "  stays in the published JWKS until {}.",
            timeline::when(key.expires_at, now)
        );
    }
    if let Some(exp) = v.token_expires_at {
        println!("The token expires {}.", timeline::when(Some(exp), now));
    }
    for note in &v.notes {
        println!("Note: {note}");
    }
}
