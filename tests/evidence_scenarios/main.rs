//! Issue 8's scenarios on the real control plane, with the real operator binary: everything
//! people, backup tools and other writers do to a set's objects, while a workload signs tokens
//! with the Secret's key and verifies them against the JWKS as pods do (`workload`). Not one
//! token may break on what the operator publishes, and each scenario asserts its own outcome
//! (the Event named, the same kid still signing, the key republished, the lead waited).
//!
//! The scenarios run side by side against one control plane, each set in a namespace of its own
//! watched by an operator of its own. One test measures what the operator's reads cost the API
//! server; it runs alone (`GATE`).

#[path = "../support/mod.rs"]
mod support;

mod set;
mod workload;

mod bounds;
mod cosmetic;
mod cost;
mod inconsistent;
mod jwks_key;
mod manifest;
mod operations;
mod planted;
mod reports;
mod restore;
mod status_lag;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::keys::{Algorithm, generate};
use jwt_key_rotator::lifecycle::{KeyRecord, KeyState, Manifest};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use set::{DEADLINE, NAME, Set, StatusRefused};
use workload::{Checker, Edited, JWKS_KEY, Timing, Workload};

/// The cost measurement takes it for writing: no other test's requests may land in its window.
static GATE: RwLock<()> = RwLock::const_new(());

/// A set that does not rotate on its own during a test: what changes is the test's doing.
const QUIET: Timing = Timing::secs(3600, 2, 1, 3, 1);

/// Samples the workload takes after each repair: a second of tokens signed before it, verified
/// after it.
const AFTER_REPAIR: usize = 20;

/// Waits until the operator has written the Secret and the JWKS since `at`, and `check` holds;
/// then lets the workload go on for `AFTER_REPAIR` samples.
async fn operator_since<T>(
    w: &Workload,
    what: &str,
    at: Timestamp,
    check: impl Fn(&Checker) -> Option<T>,
) -> T {
    let value = w
        .until(what, DEADLINE, |c| {
            let secret = c.operator_secret_read.is_some_and(|t| t > at);
            let jwks = c.operator_jwks_read.is_some_and(|t| t > at);
            if secret && jwks { check(c) } else { None }
        })
        .await;
    w.observe(AFTER_REPAIR).await;
    value
}

fn active_of(m: &Manifest) -> Option<&KeyRecord> {
    m.keys.iter().find(|k| k.state == KeyState::Active)
}

fn pending_published(m: &Manifest) -> Option<&KeyRecord> {
    m.keys
        .iter()
        .find(|k| k.state == KeyState::Pending && k.published_at.is_some())
}

/// The kid that signs once a key other than `other` signs.
async fn next_signer(w: &Workload, other: &str) -> String {
    let what = format!("a key other than {other} to sign");
    w.until(&what, DEADLINE, |c| {
        c.signing.clone().filter(|k| k != other)
    })
    .await
}

/// When `kid` left an operator-written JWKS after `since` (waiting for it); the workload has
/// checked that this was after its retention.
async fn left_jwks(w: &Workload, kid: &str, since: Timestamp) -> Timestamp {
    let what = format!("{kid} to leave the JWKS after its retention");
    w.until(&what, DEADLINE, |c| {
        let after = |(k, at): &&(String, Timestamp)| k == kid && *at > since;
        c.expired.iter().find(after).map(|(_, at)| *at)
    })
    .await
}

/// Runs `edit` with the operator stopped, and lets the workload use what the edit left for a
/// second before the operator may react: pods mount what a backup tool restores.
async fn edit_while_stopped(
    set: &Set,
    w: &Workload,
    what: &str,
    edit: impl std::future::Future<Output = Edited>,
) -> Timestamp {
    set.operator.signal("STOP");
    let at = w.edit(what, edit).await;
    w.observe(AFTER_REPAIR).await;
    set.operator.signal("CONT");
    at
}

fn sleep_until(t: Timestamp) -> tokio::time::Sleep {
    let wait = t.duration_since(Timestamp::now()).max(SignedDuration::ZERO);
    tokio::time::sleep(wait.unsigned_abs())
}

/// Waits until the operator has reconciled after `before` and then stayed idle for a second.
async fn reconciles_settled(set: &Set, before: f64) -> f64 {
    let mut n = set.reconciled_after(before).await;
    let started = std::time::Instant::now();
    loop {
        let label = &set.label;
        assert!(
            started.elapsed() < DEADLINE,
            "[{label}] still reconciling after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let again = set.reconciles().await;
        if again == n {
            return n;
        }
        n = again;
    }
}
