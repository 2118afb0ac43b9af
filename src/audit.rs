//! The audit trail of key transitions: each transition or repair the operator reports becomes
//! a structured log line (target `audit`, one JSON object a line with `--log-format json`) for
//! log pipelines, and an entry in the set's bounded `status.history` for `history` and
//! `kubectl get -o yaml`. Who asked for a change is the API server's audit log's to say.
//! Nothing here ever holds key material: only kids, reasons and the notes of Events.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{HISTORY_LIMIT, HistoryEntry};

/// One transition or repair of one set, as reported.
pub struct Record<'a> {
    /// The Event reason: `KeyCreated`, `KeyRevoked`, ...
    pub event: &'a str,
    pub kid: Option<&'a str>,
    pub message: &'a str,
}

/// Entries reported but not yet written to their set's `status.history`. The next status
/// write of the set takes them in, and gives them back if it fails, so that a pass whose
/// writes failed half-way still leaves its record for the next status write.
#[derive(Default)]
pub struct Pending(Mutex<HashMap<String, Vec<HistoryEntry>>>);

impl Pending {
    /// Logs each record (target `audit`) and queues it for the set `namespace/name`.
    pub fn record(&self, namespace: &str, name: &str, now: Timestamp, records: &[Record<'_>]) {
        let time = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
        let entries = records.iter().map(|r| {
            tracing::info!(
                target: "audit",
                namespace,
                set = name,
                event = r.event,
                kid = r.kid.unwrap_or(""),
                message = r.message,
                time = %time.0,
                "key transition"
            );
            HistoryEntry {
                time: time.clone(),
                event: r.event.to_string(),
                kid: r.kid.map(str::to_string),
                message: r.message.to_string(),
            }
        });
        let entries: Vec<HistoryEntry> = entries.collect();
        if let Ok(mut pending) = self.0.lock() {
            pending
                .entry(key(namespace, name))
                .or_default()
                .extend(entries);
        }
    }

    /// The entries queued for the set, removed from the queue.
    pub fn take(&self, namespace: &str, name: &str) -> Vec<HistoryEntry> {
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key(namespace, name)))
            .unwrap_or_default()
    }

    /// Puts entries taken for a write that failed back in front of the queue.
    pub fn give_back(&self, namespace: &str, name: &str, mut entries: Vec<HistoryEntry>) {
        if entries.is_empty() {
            return;
        }
        if let Ok(mut pending) = self.0.lock() {
            let queued = pending.entry(key(namespace, name)).or_default();
            entries.append(queued);
            *queued = entries;
        }
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `history` with `new` appended, keeping the newest `HISTORY_LIMIT` entries.
pub fn appended(history: &[HistoryEntry], new: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let mut all: Vec<HistoryEntry> = history.iter().cloned().chain(new).collect();
    let excess = all.len().saturating_sub(HISTORY_LIMIT);
    all.drain(..excess);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str) -> Record<'_> {
        Record {
            event,
            kid: Some("kid"),
            message: "note",
        }
    }

    #[test]
    fn history_keeps_the_newest_entries_up_to_the_limit() {
        let pending = Pending::default();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut history = vec![];
        for i in 0..HISTORY_LIMIT + 7 {
            let event = format!("E{i}");
            pending.record("ns", "set", now, &[record(&event)]);
            history = appended(&history, pending.take("ns", "set"));
        }
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0].event, "E7");
        assert_eq!(
            history[HISTORY_LIMIT - 1].event,
            format!("E{}", HISTORY_LIMIT + 6)
        );
    }

    #[test]
    fn entries_of_a_failed_write_come_back_before_later_ones() {
        let pending = Pending::default();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        pending.record("ns", "set", now, &[record("First")]);
        let taken = pending.take("ns", "set");
        pending.record("ns", "set", now, &[record("Second")]);
        pending.give_back("ns", "set", taken);
        let events: Vec<String> = pending
            .take("ns", "set")
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["First", "Second"]);
        assert!(pending.take("ns", "set").is_empty());
        assert!(pending.take("ns", "other").is_empty());
    }
}
