//! Reporting a pass: the status (the `Ready` condition, the keys, the names written, the
//! history), Events and audit records for every key transition and every repair, and the
//! metrics. Never any key material.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use crate::api::{
    HistoryEntry, JwtKeySet, JwtKeySetStatus, KeyStatus, RevocationStatus, ValidSpec,
};
use crate::audit::{self, Record};
use crate::copies::{ACCEPT_LABEL, Copies, Problem};
use crate::lifecycle::{self, Activation, Converged, Finding, Manifest, Moved, Transition};
use crate::reconcile::{self, Context, Error, MANAGER};

/// Why a set is not Ready, as the condition's reason. Nothing is written but the status.
pub enum Blocked {
    InvalidSpec(String),
    Moved(Moved),
    SecretConflict(String),
    ConfigMapConflict(String),
    Evidence(lifecycle::Blocked),
    /// A write or read the API server refused, or another failure; retried with back-off.
    Failing(String),
}

impl Blocked {
    fn reason(&self) -> &'static str {
        match self {
            Blocked::InvalidSpec(_) | Blocked::Moved(_) => "InvalidSpec",
            Blocked::SecretConflict(_) => "SecretConflict",
            Blocked::ConfigMapConflict(_) => "ConfigMapConflict",
            Blocked::Evidence(_) => "SecretUnreadable",
            Blocked::Failing(_) => "ReconcileError",
        }
    }

    fn message(&self) -> String {
        match self {
            Blocked::InvalidSpec(e) => format!("spec refused, nothing was changed: {e}"),
            Blocked::Moved(m) => format!(
                "spec refused, nothing was changed: {}: cannot change from {:?} to {:?}: workloads \
                 mount {:?}, and its keys would be orphaned. Set it back, or delete and re-create \
                 the JwtKeySet",
                m.field, m.from, m.to, m.from
            ),
            Blocked::SecretConflict(name) => format!(
                "Secret {name} exists and is not managed by this JwtKeySet; it is left untouched. \
                 Delete or rename it, or set spec.secretName to another name"
            ),
            Blocked::ConfigMapConflict(name) => format!(
                "ConfigMap {name} exists and is not managed by this JwtKeySet; it is left untouched. \
                 Delete or rename it, or set spec.jwks.configMapName to another name"
            ),
            Blocked::Evidence(e) => format!("nothing is rotated or rewritten: {e}"),
            Blocked::Failing(e) => format!("reconciling failed and is retried: {e}"),
        }
    }
}

/// Ready=False with a reason and an Event; nothing else is written.
pub async fn blocked(set: &JwtKeySet, ctx: &Context, blocked: Blocked) -> Result<Action, Error> {
    let reason = blocked.reason();
    let message = blocked.message();
    let mut status = set.status.clone().unwrap_or_default();
    let unchanged = status.conditions.iter().any(|c| {
        c.type_ == "Ready" && c.status == "False" && c.reason == reason && c.message == message
    });
    if !unchanged {
        warn!(set = %set.name_any(), reason, %message, "not ready");
        publish(
            ctx,
            set,
            EventType::Warning,
            reason,
            "Refuse",
            message.clone(),
        )
        .await;
    }
    status.conditions = vec![condition(
        set,
        READY,
        "False",
        reason,
        message,
        (ctx.clock)(),
    )];
    status.observed_generation = set.meta().generation;
    write_status(set, ctx, status, &[]).await?;
    // Conflicting objects may be outside our watches (not labelled): look again now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Reports a pass that converged: Events, status and metrics. `unpublished` holds the kids the
/// pass found published or took out of the JWKS (`lifecycle::unpublished_by_pass`).
pub async fn converged(
    set: &JwtKeySet,
    valid: &ValidSpec,
    ctx: &Context,
    converged: &Converged,
    unpublished: &BTreeSet<String>,
    copies: Option<&Copies>,
) -> Result<(), Error> {
    // The history entries go with the status below: one status write for the pass.
    let entries = announce(set, ctx, &converged.transitions, &converged.findings).await;
    let now = (ctx.clock)();
    let plan = &converged.plan;
    if plan.held_at_limit && !already_held(set) {
        let note = held_note(&plan.manifest);
        publish(
            ctx,
            set,
            EventType::Warning,
            "KeyLimitReached",
            "Rotate",
            note,
        )
        .await;
    }
    let ready = ready_condition(set, converged, valid.policy.algorithm.as_str(), now);
    let mut status = status_for(set, valid, &plan.manifest, plan.next_rotation_at, ready);
    if let Some(copies) = copies {
        let copied = copies_condition(set, copies, now);
        if copied.status == "False" && !already_said(set, &copied) {
            let note = copied.message.clone();
            publish(ctx, set, EventType::Warning, &copied.reason, "Copy", note).await;
        }
        status.conditions.push(copied);
    }
    // After the pass's writes: `now` is no earlier than the JWKS write that took a key out.
    status.revocations = revocations(set, valid, unpublished, now);
    write_status(set, ctx, status, &entries).await?;
    let (ns, name) = (set.namespace().unwrap_or_default(), set.name_any());
    // The gauges are read from the status just written, in the watch cache.
    ctx.metrics.reconciled(&ns, &name);
    for _ in 0..rotations(&converged.transitions) {
        ctx.metrics.rotated(&ns, &name);
    }
    Ok(())
}

/// What counts as a rotation: a key taking over from another (scheduled, requested or in an
/// emergency); the first key of a set is none.
pub fn rotations(transitions: &[Transition]) -> usize {
    transitions
        .iter()
        .filter(|t| matches!(t, Transition::Activated { why, .. } if *why != Activation::Bootstrap))
        .count()
}

fn already_held(set: &JwtKeySet) -> bool {
    set.status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.type_ == "Ready" && c.reason == "RotationHeld")
}

fn held_note(manifest: &Manifest) -> String {
    format!(
        "rotation is due but waits: the set holds {} keys, the most it may ({}); the active key \
         signs on until the oldest retired key expires",
        manifest.keys.len(),
        lifecycle::MAX_KEYS
    )
}

/// Kubernetes serializes times to whole seconds: the condition is computed at that precision,
/// so that what we compare with (read back from the server) can be equal and a steady state
/// writes nothing.
fn whole_seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn ready_condition(set: &JwtKeySet, converged: &Converged, alg: &str, now: Timestamp) -> Condition {
    let manifest = &converged.plan.manifest;
    let active = manifest.active().map(|k| k.kid.as_str()).unwrap_or("none");
    let next = converged
        .plan
        .next_rotation_at
        .map(|t| format!("; next rotation at {}", whole_seconds(t).0))
        .unwrap_or_default();
    if converged.plan.held_at_limit {
        let note = held_note(manifest);
        return condition(
            set,
            READY,
            "True",
            "RotationHeld",
            format!("{alg} key {active} signs; {note}"),
            now,
        );
    }
    let held = manifest.keys.len();
    let message = format!("{alg} key {active} signs; {held} key(s) held and published{next}");
    condition(set, READY, "True", "KeysReady", message, now)
}

/// The most namespaces a `CopiesReady` message names (the rest are counted).
const NAMED_NAMESPACES: usize = 10;

/// `CopiesReady`: whether every namespace `spec.jwks.copies` asks for holds a current copy.
fn copies_condition(set: &JwtKeySet, copies: &Copies, now: Timestamp) -> Condition {
    let name = &copies.spec.config_map_name;
    let mut problems: Vec<String> = copies
        .problems
        .iter()
        .map(|(ns, problem)| match problem {
            Problem::Foreign => {
                format!("{ns} (a ConfigMap {name} there is not a copy of this set: left untouched)")
            }
            Problem::NotWatched => format!("{ns} (outside the namespaces this operator watches)"),
            Problem::NotAccepted => {
                format!("{ns} (the namespace does not accept copies: label it {ACCEPT_LABEL}=true)")
            }
            Problem::Missing => format!("{ns} (no such namespace)"),
            Problem::Refused => format!("{ns} (the API server refused the write)"),
            Problem::Failed(why) => format!("{ns} (the write failed, retried: {why})"),
        })
        .collect();
    if copies.selector_ignored {
        problems
            .push("namespaceSelector (needs an operator that watches every namespace)".to_string());
    }
    if problems.is_empty() {
        let message = format!(
            "ConfigMap {name} is current in {} namespace(s){}",
            copies.current().len(),
            named(copies.current().iter().cloned().collect())
        );
        return condition(set, COPIES_READY, "True", "Copied", message, now);
    }
    let foreign = copies.problems.values().any(|p| *p == Problem::Foreign);
    let reason = if foreign {
        "CopyConflict"
    } else {
        "CopyRefused"
    };
    let message = format!(
        "no current copy in {}",
        named(problems).trim_start_matches(": ")
    );
    condition(set, COPIES_READY, "False", reason, message, now)
}

/// ": a, b, c" with at most `NAMED_NAMESPACES` named and the rest counted.
fn named(items: Vec<String>) -> String {
    if items.is_empty() {
        return String::new();
    }
    let more = items.len().saturating_sub(NAMED_NAMESPACES);
    let mut text = format!(": {}", items[..items.len() - more].join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Whether the set already shows this condition (its Event was published then).
fn already_said(set: &JwtKeySet, wanted: &Condition) -> bool {
    set.status.iter().flat_map(|s| &s.conditions).any(|c| {
        c.type_ == wanted.type_ && c.status == wanted.status && c.message == wanted.message
    })
}

const READY: &str = "Ready";
const COPIES_READY: &str = "CopiesReady";

fn condition(
    set: &JwtKeySet,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let previous = set
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    // Kubernetes convention: lastTransitionTime moves only when status changes.
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => whole_seconds(now),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: set.meta().generation,
        last_transition_time,
    }
}

fn status_for(
    set: &JwtKeySet,
    valid: &ValidSpec,
    manifest: &Manifest,
    next_rotation: Option<Timestamp>,
    ready: Condition,
) -> JwtKeySetStatus {
    JwtKeySetStatus {
        conditions: vec![ready],
        observed_generation: set.meta().generation,
        active_kid: manifest.active().map(|k| k.kid.clone()),
        next_rotation_time: next_rotation.map(whole_seconds),
        key_count: Some(manifest.keys.len() as i32),
        secret_name: Some(valid.secret_name.clone()),
        config_map_name: Some(valid.config_map_name.clone()),
        jwks_key: Some(valid.jwks_key.clone()),
        keys: manifest.keys.iter().map(KeyStatus::from).collect(),
        history: set
            .status
            .as_ref()
            .map(|s| s.history.clone())
            .unwrap_or_default(),
        rotation_request: manifest.rotation_request.clone(),
        revocations: Vec::new(),
    }
}

/// `status.revocations` after this pass: when each revoked kid is refused by every verifier.
fn revocations(
    set: &JwtKeySet,
    valid: &ValidSpec,
    unpublished: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<RevocationStatus> {
    let remembered: Vec<lifecycle::Revocation> = set
        .status
        .iter()
        .flat_map(|s| &s.revocations)
        .map(lifecycle::Revocation::from)
        .collect();
    lifecycle::revocations(&valid.policy, &remembered, unpublished, now)
        .iter()
        .map(RevocationStatus::from)
        .collect()
}

/// Someone else wrote the set between our read and our status write this many times: give up.
const STATUS_ATTEMPTS: usize = 3;

/// Writes the status, with `entries` appended to `status.history`, only when it differs from
/// what the set shows: a steady state writes nothing. The write carries the resourceVersion of
/// the set read (the watch cache's): `status.history` accumulates, so a stale copy must not
/// drop entries written since; on a conflict the status is read from the API server and the
/// write tried again.
async fn write_status(
    set: &JwtKeySet,
    ctx: &Context,
    status: JwtKeySetStatus,
    entries: &[HistoryEntry],
) -> Result<(), Error> {
    let (ns, name) = (set.namespace().unwrap_or_default(), set.name_any());
    let mut current = std::borrow::Cow::Borrowed(set);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let history = current.status.as_ref().map_or(&[][..], |s| &s.history);
        let wanted = JwtKeySetStatus {
            history: audit::appended(history, entries),
            ..status.clone()
        };
        if current.status.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let rv = current.resource_version();
        match apply_status(ctx, (&ns, &name), rv, &wanted).await {
            Err(Error::Conflict(_)) if attempt < STATUS_ATTEMPTS => {
                let sets: Api<JwtKeySet> = Api::namespaced(ctx.client.clone(), &ns);
                current = std::borrow::Cow::Owned(sets.get_status(&name).await?);
            }
            written => return written,
        }
    }
}

/// Applies the whole status (the history with it: a field left out of an apply is removed),
/// conditionally on `rv`.
async fn apply_status(
    ctx: &Context,
    (ns, name): (&str, &str),
    rv: Option<String>,
    status: &JwtKeySetStatus,
) -> Result<(), Error> {
    ctx.fence.check()?;
    let mut patch = json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "status": status,
    });
    if let Some(rv) = &rv {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let sets: Api<JwtKeySet> = Api::namespaced(ctx.client.clone(), ns);
    let written = sets
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(reconcile::conflict_or)?;
    ctx.wrote_status(rv, &written);
    Ok(())
}

pub async fn publish(
    ctx: &Context,
    set: &JwtKeySet,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    if ctx.fence.check().is_err() {
        return;
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(fit_note(note)),
        action: action.into(),
        secondary: None,
    };
    let recorder = recorder_for(ctx, set, &event);
    if let Err(e) = recorder.publish(&event, &set.object_ref(&())).await {
        warn!(set = %set.name_any(), reason, error = %e, "could not publish event");
    }
}

/// Distinct Events are remembered this many at a time; past it the memory starts again (a
/// repeat then makes a new Event instead of counting in a series: no harm). Each recorder keeps
/// its last Event, about 6 KiB with its map (a heap profile of 1,000 new sets): 128 of them
/// hold well under a MiB, and repeats (a failing set's retries) are still folded.
const RECORDERS: usize = 128;

/// The recorder of this Event's (set, reason, note), so that only repeats fold into a series.
fn recorder_for(ctx: &Context, set: &JwtKeySet, event: &Event) -> Recorder {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (set.uid(), &event.reason, &event.note, &event.action).hash(&mut hasher);
    let key = hasher.finish();
    let mut recorders = ctx
        .recorders
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if recorders.len() >= RECORDERS && !recorders.contains_key(&key) {
        recorders.clear();
    }
    recorders
        .entry(key)
        .or_insert_with(|| Recorder::new(ctx.client.clone(), ctx.reporter.clone()))
        .clone()
}

/// The API server refuses an Event whose note exceeds 1 KiB, and a refused Event tells nobody
/// anything: a long message (a webhook's refusal, say) is cut at a character boundary.
fn fit_note(mut note: String) -> String {
    const MAX: usize = 1024;
    const CUT: &str = " [...]";
    if note.len() > MAX {
        let mut end = MAX - CUT.len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str(CUT);
    }
    note
}

/// An Event and an audit record (log line, `status.history`) for each transition and each
/// repair of the evidence, for a pass that writes no status after it (one that failed).
pub async fn events(
    set: &JwtKeySet,
    ctx: &Context,
    transitions: &[Transition],
    findings: &[Finding],
) {
    let entries = announce(set, ctx, transitions, findings).await;
    let (ns, name) = (set.namespace().unwrap_or_default(), set.name_any());
    if !entries.is_empty()
        && ctx.fence.check().is_ok()
        && let Err(e) = audit::append_history(&ctx.client, &ns, &name, &entries).await
    {
        warn!(set = %name, namespace = %ns, error = %e, "could not record status.history");
    }
}

/// An Event and an audit log line for each transition and each repair of the evidence; returns
/// them as entries for `status.history`.
async fn announce(
    set: &JwtKeySet,
    ctx: &Context,
    transitions: &[Transition],
    findings: &[Finding],
) -> Vec<HistoryEntry> {
    let notes: Vec<(EventType, &str, Option<&str>, String)> = findings
        .iter()
        .map(|f| {
            let (type_, reason, note) = finding_event(f);
            (type_, reason, finding_kid(f), note)
        })
        .chain(transitions.iter().map(|t| {
            let (type_, reason, note) = transition_event(t);
            (type_, reason, Some(transition_kid(t)), note)
        }))
        .collect();
    let records: Vec<Record<'_>> = notes
        .iter()
        .map(|(_, event, kid, message)| Record {
            event,
            kid: *kid,
            message,
        })
        .collect();
    let (ns, name) = (set.namespace().unwrap_or_default(), set.name_any());
    let entries = audit::log(&ns, &name, (ctx.clock)(), &records);
    for (type_, reason, _, note) in notes {
        // Every new key is published as it is created: an Event for each would be noise.
        if reason != "KeyPublished" {
            publish(ctx, set, type_, reason, "Rotate", note).await;
        }
    }
    entries
}

fn transition_kid(t: &Transition) -> &str {
    match t {
        Transition::Created { kid }
        | Transition::Published { kid }
        | Transition::Activated { kid, .. }
        | Transition::Retired { kid, .. }
        | Transition::Expired { kid }
        | Transition::Revoked { kid, .. }
        | Transition::Discarded { kid }
        | Transition::Lost { kid, .. } => kid,
    }
}

fn finding_kid(f: &Finding) -> Option<&str> {
    match f {
        Finding::RecordCorrected { kid, .. }
        | Finding::Recovered { kid }
        | Finding::Unrecorded { kid, .. }
        | Finding::Unpublishable { kid }
        | Finding::TwoActive { retired: kid, .. } => Some(kid),
        Finding::SecretMissing
        | Finding::ManifestUnusable { .. }
        | Finding::FileUnreadable { .. } => None,
    }
}

fn finding_event(f: &Finding) -> (EventType, &'static str, String) {
    let warn = EventType::Warning;
    match f {
        Finding::SecretMissing => (
            warn,
            "SecretRecreated",
            "the Secret was missing: keys still recorded or published stay published for their \
             retention; a key whose material was only in the Secret cannot sign any more"
                .into(),
        ),
        Finding::ManifestUnusable { reason } => (
            warn,
            "ManifestRebuilt",
            format!(
                "{reason}: the keys were recovered from status.keys, the key material and the \
                 published JWKS"
            ),
        ),
        Finding::RecordCorrected { kid, what } => (
            warn,
            "RecordCorrected",
            format!("record of key {kid}: {what}"),
        ),
        Finding::Recovered { kid } => (
            warn,
            "KeyRecovered",
            format!(
                "key {kid} was published and in the Secret but in no record: recovered; it signs \
                 on if signers use it and no other key does, else it is kept as retired, \
                 published for a full retention"
            ),
        ),
        Finding::Unrecorded { kid, place } => (
            warn,
            "UnrecordedKey",
            format!(
                "key {kid} in {place} was not created by this set (or expired and was \
                 forgotten): it is not published"
            ),
        ),
        Finding::FileUnreadable { file } => (
            warn,
            "SecretRepaired",
            format!("{file} held no readable key: written again from the key material"),
        ),
        Finding::Unpublishable { kid } => (
            warn,
            "KeyUnpublishable",
            format!("retired key {kid} has no public part left anywhere: it cannot be published"),
        ),
        Finding::TwoActive { kept, retired } => (
            warn,
            "TwoActiveKeys",
            format!(
                "keys {kept} and {retired} both claimed to be active: {kept} signs, {retired} \
                 retired and stays published for its retention"
            ),
        ),
    }
}

fn transition_event(t: &Transition) -> (EventType, &'static str, String) {
    let normal = EventType::Normal;
    match t {
        Transition::Published { kid } => (
            normal,
            "KeyPublished",
            format!("key {kid} is in the published JWKS"),
        ),
        Transition::Created { kid } => (normal, "KeyCreated", format!("generated key {kid}")),
        Transition::Activated { kid, why } => match why {
            Activation::Bootstrap => (normal, "KeyActivated", format!("first key {kid} signs")),
            Activation::Scheduled => (
                normal,
                "KeyActivated",
                format!("key {kid} took over on schedule"),
            ),
            Activation::Emergency => (
                EventType::Warning,
                "KeyActivated",
                format!("key {kid} signs at once: the set had no usable active key"),
            ),
        },
        Transition::Retired { kid, expires_at } => (
            normal,
            "KeyRetired",
            format!("key {kid} stopped signing; stays published until {expires_at}"),
        ),
        Transition::Expired { kid } => (
            normal,
            "KeyExpired",
            format!("key {kid} left the JWKS: no token it signed is still valid"),
        ),
        Transition::Revoked { kid, was_active } => (
            EventType::Warning,
            "KeyRevoked",
            format!(
                "key {kid} revoked (listed in spec.revokedKids) and removed from the Secret and the JWKS{}",
                if *was_active {
                    "; it was the active key"
                } else {
                    ""
                }
            ),
        ),
        Transition::Discarded { kid } => (
            normal,
            "KeyDiscarded",
            format!("pending key {kid} dropped: the spec asks for another kind of key"),
        ),
        Transition::Lost { kid, state } => (
            EventType::Warning,
            "KeyMaterialLost",
            format!(
                "the Secret no longer holds the private part of {} key {kid} in any encoding",
                state.as_str().to_lowercase()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::fit_note;

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_accepts() {
        let short = "key abc took over on schedule".to_string();
        assert_eq!(fit_note(short.clone()), short);
        // A refusal of 3,000 bytes in two-byte characters: cut at a character boundary.
        let long = "é".repeat(1500);
        let fitted = fit_note(long);
        assert!(fitted.len() <= 1024, "{} bytes", fitted.len());
        assert!(fitted.starts_with("éé") && fitted.ends_with(" [...]"));
    }
}
