//! `status [NAME]`: the sets, whether they are ready, and their keys on a timeline.

use jiff::Timestamp;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::timeline::{self, KeyTimeline};
use super::{CliError, Format, Scope, print_json, set_ref};
use crate::api::JwtKeySet;

pub async fn run(
    client: &Client,
    name: Option<&str>,
    scope: &Scope,
    format: Format,
) -> Result<(), CliError> {
    let sets = match name {
        Some(name) => vec![super::get_set(client, scope, name).await?],
        None => super::list_sets(client, scope).await?,
    };
    let now = Timestamp::now();
    match format {
        Format::Json => print_json(&json!(sets.iter().map(summary).collect::<Vec<_>>())),
        Format::Text if sets.is_empty() => println!("No JwtKeySets found."),
        Format::Text => {
            for (i, set) in sets.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_set(set, now);
            }
        }
    }
    Ok(())
}

/// The Ready condition: (status, reason, message).
fn ready(set: &JwtKeySet) -> (String, String, String) {
    set.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| {
            let note = "the operator has not reported on this set yet: is it running?";
            ("Unknown".into(), "NotReported".into(), note.into())
        })
}

fn summary(set: &JwtKeySet) -> serde_json::Value {
    let (status, reason, message) = ready(set);
    let s = set.status.clone().unwrap_or_default();
    json!({
        "namespace": set.namespace(),
        "name": set.name_any(),
        "algorithm": set.spec.algorithm.as_str(),
        "ready": {"status": status, "reason": reason, "message": message},
        "activeKid": s.active_kid,
        "nextRotationTime": s.next_rotation_time.map(|t| t.0),
        "secretName": s.secret_name,
        "configMapName": s.config_map_name,
        "keys": timeline::of_set(set),
        "revocations": s.revocations,
    })
}

fn print_set(set: &JwtKeySet, now: Timestamp) {
    let (status, reason, message) = ready(set);
    let next = set
        .status
        .as_ref()
        .and_then(|s| s.next_rotation_time.as_ref())
        .map(|t| t.0);
    println!(
        "{}  {}  Ready={status} ({reason})",
        set_ref(set),
        set.spec.algorithm.as_str()
    );
    println!("  {message}");
    println!("  next rotation: {}", timeline::when(next, now));
    print_revocations(set, now);
    let keys = timeline::of_set(set);
    if keys.is_empty() {
        return;
    }
    let header = [
        "KID",
        "STATE",
        "PUBLISHED",
        "SIGNS FROM",
        "RETIRES",
        "LEAVES JWKS",
    ];
    let rows: Vec<[String; 6]> = keys.iter().map(|k| row(k, now)).collect();
    print_table(&header, &rows);
}

/// Revocation cannot beat caches: say until when a revoked key may still be accepted.
fn print_revocations(set: &JwtKeySet, now: Timestamp) {
    let recorded = set.status.iter().flat_map(|s| &s.revocations);
    for kid in &set.spec.revoked_kids {
        match recorded.clone().find(|r| r.kid == *kid) {
            Some(r) => println!(
                "  revoked {kid}: out of the JWKS since {}; verifiers with a cached JWKS accept \
                 it until {}",
                timeline::when(Some(r.unpublished_at), now),
                timeline::when(Some(r.effective_at), now)
            ),
            None => {
                println!("  revoked {kid}: the operator has not yet reported it out of the JWKS")
            }
        }
    }
}

fn row(k: &KeyTimeline, now: Timestamp) -> [String; 6] {
    let rel = |t: Option<Timestamp>| t.map_or("-".into(), |t| timeline::relative(t, now));
    [
        k.kid.clone(),
        k.state.clone(),
        rel(k.published_at),
        rel(k.signs_from),
        rel(k.retires_at),
        rel(k.expires_at),
    ]
}

/// Columns padded to their widest cell, indented under the set's line.
pub(super) fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
