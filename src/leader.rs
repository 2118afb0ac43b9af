//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! reconciles. Written here because the crates that do this target an older kube.
//!
//! Safety rests on two clocks: a standby takes over only after the holder's record has not
//! changed for `lease_duration` on the standby's own monotonic clock, and a leader stops
//! writing once it has not renewed for `renew_deadline` (< `lease_duration`) on its own. So the
//! old leader's last write comes before the new leader's first.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Whether this replica may write now. Without leader election it always may.
#[derive(Default)]
pub struct Fence {
    /// `None`: no leader election. `Some(t)`: writes are allowed until `t`.
    valid_until: Mutex<Option<Option<Instant>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("this replica does not hold the leader Lease: not writing")]
pub struct NotLeader;

impl Fence {
    /// A fence for a replica under leader election: closed until the Lease is acquired.
    pub fn closed() -> Self {
        Fence {
            valid_until: Mutex::new(Some(None)),
        }
    }

    pub fn check(&self) -> Result<(), NotLeader> {
        let guard = self.valid_until.lock().map_err(|_| NotLeader)?;
        match *guard {
            None => Ok(()),
            Some(Some(until)) if Instant::now() < until => Ok(()),
            Some(_) => Err(NotLeader),
        }
    }

    fn open_until(&self, until: Instant) {
        if let Ok(mut guard) = self.valid_until.lock() {
            *guard = Some(Some(until));
        }
    }

    fn close(&self) {
        if let Ok(mut guard) = self.valid_until.lock() {
            *guard = Some(None);
        }
    }
}

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What a replica last saw of the Lease, and when (on its own monotonic clock).
struct Seen {
    record: (Option<String>, Option<Timestamp>),
    at: Instant,
    /// The holder's own lease duration: a holder configured longer than us is waited out.
    holder_duration: Duration,
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    seen: Option<Seen>,
}

impl Elector {
    /// Tries to take or renew the Lease; true when this replica holds it now.
    async fn try_acquire(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let me = self.cfg.identity.clone();
        let duration_secs =
            i32::try_from(self.cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.as_ref().map(|t| t.0));
        let holder_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.cfg.lease_duration, Duration::from_secs)
            .max(self.cfg.lease_duration);
        let changed = self.seen.as_ref().is_none_or(|s| s.record != record);
        if changed {
            self.seen = Some(Seen {
                record,
                at: Instant::now(),
                holder_duration,
            });
        }
        let mine = holder.as_deref() == Some(me.as_str());
        let expired = holder.is_none()
            || self
                .seen
                .as_ref()
                .is_some_and(|s| s.at.elapsed() >= s.holder_duration);
        if !mine && !expired {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_secs);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `try_acquire`, bounded: a hung request must not hold up renewals or shutdown.
    async fn attempt(&mut self) -> Result<bool, String> {
        match tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.cfg.renew_deadline)),
        }
    }

    /// Gives the Lease up so a standby takes over without waiting for it to expire.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.cfg.name, "released the leader Lease"),
            Err(e) => {
                warn!(lease = %self.cfg.name, error = %e, "could not release the leader Lease")
            }
        }
    }
}

/// Runs `work` only while this replica holds the Lease; stops it at once when the Lease is lost
/// (and stands by again), and returns when `shutdown` completes.
pub async fn run_while_leader<W, Fut>(
    client: Client,
    cfg: LeaseConfig,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    work: W,
) where
    W: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut elector = Elector {
        api: Api::namespaced(client, &cfg.namespace),
        cfg: cfg.clone(),
        seen: None,
    };
    tokio::pin!(shutdown);
    info!(lease = %cfg.name, namespace = %cfg.namespace, identity = %cfg.identity, "standing by for the leader Lease");
    loop {
        // Standby.
        let acquired_at = loop {
            // The fence is measured from when the request left, not when the answer came: the
            // server may have committed it (and a standby seen it) long before a slow reply.
            let sent = Instant::now();
            match elector.attempt().await {
                Ok(true) => break sent,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "trying the leader Lease"),
            }
            // Try again after the retry period, or the moment the holder's Lease expires if
            // that comes first: a dead leader is replaced within one lease duration of its last
            // renewal being seen, not one retry period later.
            let pause = elector
                .seen
                .as_ref()
                .map(|s| (s.at + s.holder_duration).saturating_duration_since(Instant::now()))
                .map_or(cfg.retry_period, |until_expiry| {
                    until_expiry.min(cfg.retry_period)
                })
                // Never a busy loop against the API server.
                .max(Duration::from_millis(50));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {}
            }
        };
        let mut renewed = acquired_at;
        fence.open_until(renewed + cfg.renew_deadline);
        metrics.set_leader(true);
        info!(lease = %cfg.name, "acquired the leader Lease: reconciling");
        let mut task = tokio::spawn(work());
        // Leader: renew until shutdown, loss, or the work ends.
        let stop = loop {
            tokio::select! {
                _ = &mut shutdown => break Stop::Shutdown,
                _ = &mut task => break Stop::WorkEnded,
                _ = tokio::time::sleep(cfg.retry_period) => {}
            }
            let sent = Instant::now();
            match elector.attempt().await {
                Ok(true) => {
                    renewed = sent;
                    fence.open_until(renewed + cfg.renew_deadline);
                }
                Ok(false)
                    if elector
                        .seen
                        .as_ref()
                        .is_some_and(|s| s.record.0.as_deref() != Some(cfg.identity.as_str())) =>
                {
                    break Stop::Lost("another replica holds the Lease");
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "renewing the leader Lease"),
            }
            if renewed.elapsed() >= cfg.renew_deadline {
                break Stop::Lost("could not renew the Lease within the renew deadline");
            }
        };
        fence.close();
        metrics.set_leader(false);
        match stop {
            Stop::Shutdown => {
                // The fence is closed, so the work cannot write any more: hand the Lease over at
                // once, then give the work a moment to wind down (writes are crash-safe anyway).
                elector.release().await;
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await;
                task.abort();
                return;
            }
            Stop::WorkEnded => {
                elector.release().await;
                return;
            }
            Stop::Lost(why) => {
                task.abort();
                let _ = task.await;
                warn!(lease = %cfg.name, why, "lost the leader Lease: stopped reconciling, standing by");
            }
        }
    }
}

/// How long a stopping replica waits for in-flight reconciles before it exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

enum Stop {
    Shutdown,
    WorkEnded,
    Lost(&'static str),
}
