//! The audit trail of key transitions: each transition or repair the operator reports becomes
//! a structured log line (target `audit`, one JSON object a line with `--log-format json`) for
//! log pipelines, and an entry in the set's bounded `status.history` for `history` and
//! `kubectl get -o yaml`. Who asked for a change is the API server's audit log's to say.
//! Nothing here ever holds key material: only kids, reasons and the notes of Events.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::{HISTORY_LIMIT, HistoryEntry, JwtKeySet};

/// The field manager that owns `status.history`, and nothing else: the rest of the status is
/// derived anew each pass, the history accumulates, so they are written apart.
pub const HISTORY_MANAGER: &str = "jwt-key-rotator-history";

/// Someone else wrote the set between our read and our write this many times: give up.
const ATTEMPTS: usize = 3;

/// One transition or repair of one set, as reported.
pub struct Record<'a> {
    /// The Event reason: `KeyCreated`, `KeyRevoked`, ...
    pub event: &'a str,
    pub kid: Option<&'a str>,
    pub message: &'a str,
}

/// Logs each record (target `audit`) and returns them as history entries.
pub fn log(
    namespace: &str,
    name: &str,
    now: Timestamp,
    records: &[Record<'_>],
) -> Vec<HistoryEntry> {
    let time = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    records
        .iter()
        .map(|r| {
            tracing::info!(
                target: "audit",
                namespace,
                set = name,
                event = r.event,
                kid = r.kid.unwrap_or(""),
                cause = r.message,
                time = %time.0,
                "key transition"
            );
            HistoryEntry {
                time: time.clone(),
                event: r.event.to_string(),
                kid: r.kid.map(str::to_string),
                message: r.message.to_string(),
            }
        })
        .collect()
}

/// Appends `entries` to the set's `status.history`. It reads the set from the API server, not
/// the watch cache: a stale copy would drop the entries written since. The write carries the
/// resourceVersion it read, so a concurrent append is never lost either.
pub async fn append_history(
    client: &Client,
    namespace: &str,
    name: &str,
    entries: &[HistoryEntry],
) -> Result<(), kube::Error> {
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), namespace);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = sets.get_status(name).await?;
        let history = appended(
            current
                .status
                .as_ref()
                .map(|s| &s.history[..])
                .unwrap_or_default(),
            entries,
        );
        let patch = json!({
            "apiVersion": "jwt.keyrotator.dev/v1alpha1",
            "kind": "JwtKeySet",
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {"history": history},
        });
        let params = PatchParams::apply(HISTORY_MANAGER).force();
        match sets
            .patch_status(name, &params, &Patch::Apply(&patch))
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => continue,
            written => return written.map(|_| ()),
        }
    }
}

/// `history` with `new` appended, keeping the newest `HISTORY_LIMIT` entries.
pub fn appended(history: &[HistoryEntry], new: &[HistoryEntry]) -> Vec<HistoryEntry> {
    let all = history.iter().chain(new);
    let excess = (history.len() + new.len()).saturating_sub(HISTORY_LIMIT);
    all.skip(excess).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(events: impl IntoIterator<Item = String>) -> Vec<HistoryEntry> {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let events: Vec<String> = events.into_iter().collect();
        let records: Vec<Record<'_>> = events
            .iter()
            .map(|event| Record {
                event,
                kid: Some("kid"),
                message: "note",
            })
            .collect();
        log("ns", "set", now, &records)
    }

    #[test]
    fn history_keeps_the_newest_entries_up_to_the_limit() {
        let mut history = vec![];
        for i in 0..HISTORY_LIMIT + 7 {
            history = appended(&history, &entries([format!("E{i}")]));
        }
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].event, "E7");
        assert_eq!(
            history[HISTORY_LIMIT - 1].event,
            format!("E{}", HISTORY_LIMIT + 6)
        );
        let many = appended(
            &history,
            &entries((0..HISTORY_LIMIT + 1).map(|i| format!("N{i}"))),
        );
        assert_eq!(many.len(), HISTORY_LIMIT);
        assert_eq!(many[0].event, "N1");
    }

    #[test]
    fn entries_are_stamped_to_the_second_and_carry_kid_and_message() {
        let entry = &entries(["KeyRevoked".to_string()])[0];
        assert_eq!(entry.time.0.to_string(), "2023-11-14T22:13:20Z");
        assert_eq!(
            (entry.kid.as_deref(), entry.message.as_str()),
            (Some("kid"), "note")
        );
    }
}
