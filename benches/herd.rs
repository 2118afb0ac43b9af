//! The thundering herd that `benches/scale.sh` measures (`HERD=1`): sets created together rotate
//! together. This client watches their Secrets from the moment all are Ready until every set's
//! first key has been replaced on schedule and has expired, and prints how late each activation
//! was.
//!
//! Where the truth lives: a set's Secret is what signers mount, and its manifest is the durable
//! record the operator plans from (the status is derived from it, and written after it). So the
//! *due* time is read there, `activatedAt` of the first key + `rotationInterval`, and the
//! *activation* is the Secret write that names the new key active, timed when its watch event
//! reaches this client (an upper bound: the write was committed before). The new key's own
//! `activatedAt` (the operator's clock when it planned the write) is printed beside it.
//!
//! A fleet created together is due over the seconds its creation took. `--freeze PID` makes the
//! herd a true one: once every set's next key is published, the operator (PID) is stopped
//! (SIGSTOP) until every set is due, then continued (SIGCONT): all of them fall due in the same
//! instant, and lateness is counted from it.
//!
//! `cargo bench --bench herd -- --namespace NS --sets N --interval SECS --lead SECS`
//! (`--timeout SECS`, default 900; `--freeze PID`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use jwt_key_rotator::layout::MANIFEST;
use jwt_key_rotator::lifecycle::{KeyState, Manifest};
use jwt_key_rotator::reconcile::{KEY_SET_LABEL, MANAGED_BY_LABEL, MANAGER};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

struct Args {
    namespace: String,
    sets: usize,
    interval: SignedDuration,
    lead: SignedDuration,
    timeout: Duration,
    freeze: Option<u32>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        namespace: String::new(),
        sets: 0,
        interval: SignedDuration::ZERO,
        lead: SignedDuration::ZERO,
        timeout: Duration::from_secs(900),
        freeze: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || {
            given
                .next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--namespace" => args.namespace = value()?,
            "--sets" => args.sets = value()?.parse()?,
            "--interval" => args.interval = SignedDuration::from_secs(value()?.parse()?),
            "--lead" => args.lead = SignedDuration::from_secs(value()?.parse()?),
            "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
            "--freeze" => args.freeze = Some(value()?.parse()?),
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!args.namespace.is_empty(), "--namespace is required");
    anyhow::ensure!(args.interval > args.lead, "--interval must exceed --lead");
    Ok(args)
}

/// One set's rotation as seen through its Secret.
#[derive(Default)]
struct Track {
    /// The first active key: its kid, and when it is due to hand over.
    first: Option<(String, Timestamp)>,
    rotated: Option<Rotation>,
    /// When the next key's lead ends, once it is published.
    next_ready: Option<Timestamp>,
    /// The first key has left the JWKS: the rotation's last write was made.
    expired: bool,
}

#[derive(Clone)]
struct Rotation {
    due: Timestamp,
    /// What lateness counts from: the due time, or when a frozen operator was continued.
    since: Timestamp,
    /// When the Secret naming the new key active reached this client.
    seen: Timestamp,
    /// When the API server says it was written (its managedFields, to the second).
    written: Option<Timestamp>,
    /// The new key's `activatedAt`, `createdAt` and publication + `publishLead`.
    stamped: Timestamp,
    created: Timestamp,
    ready: Option<Timestamp>,
}

impl Track {
    fn observe(
        &mut self,
        manifest: &Manifest,
        written: Option<Timestamp>,
        args: &Args,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let Some(active) = manifest.active() else {
            return Ok(());
        };
        let Some((first, due)) = self.first.clone() else {
            anyhow::ensure!(
                manifest.keys.iter().all(|k| k.state != KeyState::Retired),
                "a set had rotated before the watch began: start it sooner"
            );
            let activated = active.activated_at.unwrap_or(active.created_at);
            self.first = Some((active.kid.clone(), activated + args.interval));
            return Ok(());
        };
        self.next_ready = manifest
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Pending)
            .find_map(|k| k.published_at)
            .map(|p| p + args.lead)
            .or(self.next_ready);
        if self.rotated.is_none() && active.kid != first {
            self.rotated = Some(Rotation {
                due,
                since: due,
                seen: now,
                written,
                stamped: active.activated_at.unwrap_or(now),
                created: active.created_at,
                ready: active.published_at.map(|p| p + args.lead),
            });
        }
        self.expired = self.rotated.is_some() && manifest.get(&first).is_none();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let client = Client::try_default().await?;
    let secrets: Api<Secret> = Api::namespaced(client, &args.namespace);
    let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let mut changes = watcher(secrets, ours).applied_objects().boxed();
    let mut tracks: BTreeMap<String, Track> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut resumed = None;
    let done = |tracks: &BTreeMap<String, Track>| {
        tracks.len() >= args.sets && tracks.values().all(|t| t.expired)
    };
    while !done(&tracks) {
        let next = tokio::time::timeout_at(deadline, changes.try_next()).await;
        let Ok(next) = next else {
            anyhow::bail!(
                "timed out: {} of {} sets done",
                count_done(&tracks),
                args.sets
            )
        };
        let Some(secret) = next? else {
            anyhow::bail!("the watch ended")
        };
        let now = Timestamp::now();
        let Some(set) = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(KEY_SET_LABEL))
        else {
            continue;
        };
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(MANIFEST)) else {
            continue;
        };
        let manifest = Manifest::from_json(&bytes.0)?;
        tracks.entry(set.clone()).or_default().observe(
            &manifest,
            last_written(&secret),
            &args,
            now,
        )?;
        if let Some(pid) = args.freeze
            && resumed.is_none()
            && let Some(due) = all_due(&tracks, args.sets)
        {
            resumed = Some(freeze(pid, due).await?);
        }
    }
    report(&tracks, args.lead, resumed);
    Ok(())
}

/// The latest write time the API server recorded in the object's managedFields.
fn last_written(secret: &Secret) -> Option<Timestamp> {
    let fields = secret.metadata.managed_fields.iter().flatten();
    fields.filter_map(|f| f.time.as_ref().map(|t| t.0)).max()
}

/// When every set is due with its next key ready, once all of those keys are published.
fn all_due(tracks: &BTreeMap<String, Track>, sets: usize) -> Option<Timestamp> {
    if tracks.len() < sets {
        return None;
    }
    tracks.values().try_fold(Timestamp::MIN, |latest, t| {
        let due = t.first.as_ref()?.1.max(t.next_ready?);
        Some(latest.max(due))
    })
}

/// Stops the operator until every set is due (and a second more), continues it, and says when.
async fn freeze(pid: u32, due: Timestamp) -> anyhow::Result<Timestamp> {
    signal(pid, "-STOP")?;
    let wait = due.duration_since(Timestamp::now()) + SignedDuration::from_secs(1);
    eprintln!("herd: operator stopped for {wait:?}, until every set is due");
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let resumed = Timestamp::now();
    signal(pid, "-CONT")?;
    Ok(resumed)
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
    Ok(())
}

fn count_done(tracks: &BTreeMap<String, Track>) -> usize {
    tracks.values().filter(|t| t.expired).count()
}

fn report(tracks: &BTreeMap<String, Track>, lead: SignedDuration, resumed: Option<Timestamp>) {
    let mut rotations: Vec<Rotation> = tracks.values().filter_map(|t| t.rotated.clone()).collect();
    if let Some(resumed) = resumed {
        // Frozen, every set fell due when the operator was continued: lateness counts from then.
        println!("herd: the operator was stopped until every set was due, then continued");
        rotations
            .iter_mut()
            .for_each(|r| r.since = r.due.max(resumed));
    }
    let rotations: Vec<&Rotation> = rotations.iter().collect();
    let dues: Vec<i64> = rotations.iter().map(|r| r.due.as_second()).collect();
    let busiest = dues
        .iter()
        .fold(BTreeMap::<i64, usize>::new(), |mut m, s| {
            *m.entry(*s).or_default() += 1;
            m
        })
        .into_values()
        .max()
        .unwrap_or(0);
    let spread = |v: &[i64]| v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0);
    println!(
        "herd, {} rotations: due times spread over {} s, at most {busiest} due in one second",
        rotations.len(),
        spread(&dues)
    );
    let ms = |d: SignedDuration| d.as_millis() as i64;
    line(
        "activation late, seen (Secret watch event - due)",
        &rotations,
        |r| ms(r.seen.duration_since(r.since)),
    );
    line(
        "activation late, written (managedFields time, to the second)",
        &rotations,
        |r| r.written.map_or(0, |w| ms(w.duration_since(r.since))),
    );
    line(
        "activation late, stamped (activatedAt - due)",
        &rotations,
        |r| ms(r.stamped.duration_since(r.since)),
    );
    line(
        "lead ends after due (publishedAt + publishLead - due)",
        &rotations,
        |r| r.ready.map_or(0, |ready| ms(ready.duration_since(r.due))),
    );
    line(
        "new key created before due, less publishLead",
        &rotations,
        |r| ms(r.due.duration_since(r.created) - lead),
    );
}

/// p50, p99 and max of one measure over the rotations, in milliseconds.
fn line(what: &str, rotations: &[&Rotation], measure: impl Fn(&Rotation) -> i64) {
    let mut v: Vec<i64> = rotations.iter().map(|r| measure(r)).collect();
    v.sort_unstable();
    let at = |q: f64| v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1));
    let show = |x: Option<&i64>| x.map_or("-".to_string(), |x| format!("{x}"));
    println!(
        "  {what}: min {} p50 {} p99 {} max {} ms",
        show(v.first()),
        show(at(0.50)),
        show(at(0.99)),
        show(v.last())
    );
}
