//! Two operator replicas with leader election against one API server: exactly one reconciles,
//! rotations happen once per due time, the standby takes over within the lease duration when
//! the leader dies, and a leader that lost the Lease (frozen, then thawed) writes nothing.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jwt_key_rotator::lifecycle::{KeyState, Manifest};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::{Operator, eventually};

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(500);

fn replica(ns: &str) -> Operator {
    replica_with_lease(ns, "3s", "2s")
}

fn replica_with_lease(ns: &str, duration: &str, renew_deadline: &str) -> Operator {
    Operator::start_with(
        [
            "run",
            "--namespace",
            ns,
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-election",
            "--lease-namespace",
            ns,
            "--lease-duration",
            duration,
            "--lease-renew-deadline",
            renew_deadline,
            "--lease-retry-period",
            "500ms",
        ]
        .map(String::from)
        .to_vec(),
        vec![],
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("jwt-key-rotator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// The replica whose identity (host-pid) holds the Lease.
fn which(replicas: &[Operator], holder: &str) -> Option<usize> {
    replicas.iter().position(|r| {
        r.pid()
            .is_some_and(|pid| holder.ends_with(&format!("-{pid}")))
    })
}

struct Checker {
    secrets: Api<Secret>,
    maps: Api<ConfigMap>,
    kids_seen: BTreeSet<String>,
    actives: Vec<String>,
}

impl Checker {
    /// One sample: the active kid is published, one key is active, and the manifest agrees.
    async fn sample(&mut self) {
        let Ok(secret) = self.secrets.get("web-signing-keys").await else {
            return;
        };
        let data = secret.data.unwrap_or_default();
        let manifest = Manifest::from_json(&data["manifest.json"].0).unwrap();
        let active: Vec<_> = manifest
            .keys
            .iter()
            .filter(|k| k.state == KeyState::Active)
            .collect();
        assert_eq!(
            active.len(),
            1,
            "exactly one active key: {:?}",
            manifest.keys
        );
        let kid = active[0].kid.clone();
        let jwks = self.maps.get("web-jwks").await.unwrap().data.unwrap()["jwks.json"].clone();
        assert!(jwks.contains(&kid), "active kid {kid} not in the JWKS");
        self.kids_seen
            .extend(manifest.keys.iter().map(|k| k.kid.clone()));
        if self.actives.last() != Some(&kid) {
            self.actives.push(kid);
        }
    }

    async fn run_for(&mut self, period: Duration) {
        let started = Instant::now();
        while started.elapsed() < period {
            self.sample().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_rotate_once_per_due_time_and_the_standby_takes_over_when_the_leader_dies() {
    let client = support::client().await;
    let ns = support::namespace(&client, "ha").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut replicas = vec![replica(&ns), replica(&ns)];
    let first_holder = eventually("a leader", Duration::from_secs(30), || holder(&leases)).await;
    let leader = which(&replicas, &first_holder).expect("the holder is one of the replicas");

    let spec = json!({"algorithm": "ES256", "rotationInterval": "4s", "publishLead": "1s",
                      "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "2s", "clockSkew": "0s"});
    support::apply_set(&client, &ns, "web", spec).await;
    let mut checker = Checker {
        secrets: Api::namespaced(client.clone(), &ns),
        maps: Api::namespaced(client.clone(), &ns),
        kids_seen: BTreeSet::new(),
        actives: vec![],
    };
    eventually(
        "the set to be published",
        Duration::from_secs(30),
        || async {
            let secret = checker.secrets.get_opt("web-signing-keys").await.ok()??;
            let map = checker.maps.get_opt("web-jwks").await.ok()??;
            (secret.data.is_some() && map.data.is_some()).then_some(())
        },
    )
    .await;
    checker.run_for(Duration::from_secs(13)).await;
    assert!(
        checker.actives.len() >= 3,
        "rotations under two replicas: {:?}",
        checker.actives
    );

    // Kill the leader: the standby holds the Lease within the lease duration (plus one retry).
    let killed_at = Instant::now();
    replicas[leader].kill9();
    let new_holder = eventually(
        "the standby to take the Lease",
        Duration::from_secs(20),
        || async { holder(&leases).await.filter(|h| *h != first_holder) },
    )
    .await;
    let handover = killed_at.elapsed();
    eprintln!(
        "handover after SIGKILL of the leader: {} ms",
        handover.as_millis()
    );
    assert!(
        handover <= LEASE_DURATION + RETRY + Duration::from_secs(3),
        "handover took {handover:?}"
    );
    assert_eq!(which(&replicas, &new_holder), Some(1 - leader));
    let before = checker.actives.len();
    checker.run_for(Duration::from_secs(10)).await;
    assert!(
        checker.actives.len() >= before + 2,
        "rotations go on under the new leader: {:?}",
        checker.actives
    );

    // Exactly one key per due time: every key ever seen was created once and activated (or is
    // the current pending one); two leaders would have minted and discarded extras.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let count = |reason: &'static str| {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.unwrap().items;
            list.into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .map(|e| e.series.map_or(1, |s| s.count) as usize)
                .sum::<usize>()
        }
    };
    // Events trail the Secret writes by a moment: compare once both have settled.
    let settle = Instant::now();
    let (created, seen) = loop {
        checker.sample().await;
        let (created, seen) = (count("KeyCreated").await, checker.kids_seen.len());
        if created == seen || settle.elapsed() > Duration::from_secs(10) {
            break (created, seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pending_now = seen - checker.actives.len();
    assert!(
        pending_now <= 1,
        "more keys than activations: {seen} seen, {} activated",
        checker.actives.len()
    );
    assert!(
        created <= seen,
        "{created} keys created but {seen} ever held: a second writer minted keys"
    );
    // The SIGKILL may land between a key's Secret write and its Event: at most one goes missing.
    assert!(
        created + 1 >= seen,
        "KeyCreated Events {created} vs keys seen {seen}"
    );
    assert_eq!(count("KeyDiscarded").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_lost_the_lease_while_frozen_writes_nothing_when_it_thaws() {
    let client = support::client().await;
    let ns = support::namespace(&client, "frozen").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut replicas = vec![replica(&ns), replica(&ns)];
    let first = eventually("a leader", Duration::from_secs(30), || holder(&leases)).await;
    let leader = which(&replicas, &first).unwrap();
    support::apply_set(
        &client,
        &ns,
        "web",
        json!({"algorithm": "EdDSA", "rotationInterval": "3s", "publishLead": "1s",
                                 "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "1s", "clockSkew": "0s"}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    eventually("the Secret", Duration::from_secs(30), || async {
        secrets.get_opt("web-signing-keys").await.ok()?
    })
    .await;

    replicas[leader].signal("STOP");
    eventually(
        "the standby to take over",
        Duration::from_secs(20),
        || async { holder(&leases).await.filter(|h| *h != first) },
    )
    .await;
    // Let the new leader rotate, so the frozen replica's view is stale.
    let kid = |s: Secret| String::from_utf8(s.data.unwrap()["kid"].0.clone()).unwrap();
    let stale_kid = kid(secrets.get("web-signing-keys").await.unwrap());
    let fresh_kid = eventually(
        "a rotation by the new leader",
        Duration::from_secs(20),
        || async {
            let k = kid(secrets.get("web-signing-keys").await.ok()?);
            (k != stale_kid).then_some(k)
        },
    )
    .await;
    let frozen_log_len = replicas[leader].log_text().len();
    replicas[leader].signal("CONT");
    // A stale write would roll the record back: the new leader's key would vanish from the
    // manifest, or the active pointer go back to a key the new leader already retired.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let secret = secrets.get("web-signing-keys").await.unwrap();
        let manifest =
            Manifest::from_json(&secret.data.clone().unwrap()["manifest.json"].0).unwrap();
        let current = kid(secret);
        assert_ne!(
            current, stale_kid,
            "the thawed replica rolled the active key back"
        );
        if let Some(k) = manifest.get(&fresh_kid) {
            assert_ne!(
                k.state,
                KeyState::Pending,
                "{fresh_kid} went back to Pending"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = replicas[leader].log_text()[frozen_log_len..].to_string();
    assert!(
        after.contains("lost the leader Lease"),
        "the thawed replica noticed:\n{after}"
    );
    eprintln!(
        "thawed replica: {} write attempts refused by its fence before it stood by",
        after.matches("does not hold the leader Lease").count() / 2
    );
    assert!(replicas[leader].is_running());
    replicas.clear();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_without_waiting_for_expiry() {
    let client = support::client().await;
    let ns = support::namespace(&client, "graceful").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // A long lease, so that a released Lease (taken at the standby's next try) is told apart
    // from an expired one beyond doubt.
    let mut replicas = vec![
        replica_with_lease(&ns, "10s", "5s"),
        replica_with_lease(&ns, "10s", "5s"),
    ];
    let first = eventually("a leader", Duration::from_secs(30), || holder(&leases)).await;
    let leader = which(&replicas, &first).unwrap();
    let stopped_at = Instant::now();
    let status = replicas[leader]
        .terminate()
        .expect("the leader was running");
    let exited = stopped_at.elapsed();
    assert!(
        status.success(),
        "SIGTERM ends the operator cleanly: {status:?}"
    );
    assert!(exited < Duration::from_secs(10), "shutdown took {exited:?}");
    eventually(
        "the standby to take the released Lease",
        Duration::from_secs(10),
        || async { holder(&leases).await.filter(|h| *h != first) },
    )
    .await;
    let handover = stopped_at.elapsed();
    eprintln!(
        "graceful shutdown: exit after {} ms, handover after {} ms",
        exited.as_millis(),
        handover.as_millis()
    );
    // A released Lease is taken at the standby's next try, well before it would have expired.
    assert!(
        handover < Duration::from_secs(5),
        "handover took {handover:?} (lease: 10s)"
    );
}
