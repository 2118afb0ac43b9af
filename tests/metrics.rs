//! /metrics, /healthz and /readyz scraped from the running operator: the rotation counter and
//! the next-rotation gauge agree with what happened in the cluster, a deleted set's series go
//! with it, and slow clients neither swell the operator nor keep its probes waiting.

mod support;

use std::time::{Duration, Instant};

use jwt_key_rotator::api::JwtKeySet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use std::io::{Read, Write};
use support::{Operator, eventually};
use tokio::io::AsyncWriteExt;

/// A plain HTTP/1.0 GET on loopback: (status code, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the operator");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sample(body: &str, metric: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(metric))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_rotations_and_count_down_to_the_next_one() {
    let client = support::client().await;
    let (ns, _operator, addr) = ready_operator(&client, "metrics").await;
    assert_eq!(get(addr, "/healthz").await.0, 200);

    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    support::apply_set(
        &client,
        &ns,
        "web",
        json!({"algorithm": "ES256", "rotationInterval": "3s", "publishLead": "1s",
                                 "propagationDelay": "0s", "verifierCacheTTL": "0s", "tokenTTL": "1s", "clockSkew": "0s"}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let active = || async {
        let s = secrets.get_opt("web-signing-keys").await.ok()??;
        String::from_utf8(s.data?.get("kid")?.0.clone()).ok()
    };
    // Watch the active kid change twice: two rotations after the bootstrap key.
    let mut kids = vec![eventually("the first key", Duration::from_secs(30), active).await];
    let started = Instant::now();
    while kids.len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "two rotations within 30s: {kids:?}"
        );
        if let Some(kid) = active().await
            && kids.last() != Some(&kid)
        {
            kids.push(kid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let series = format!("{{namespace=\"{ns}\",name=\"web\"}}");
    // Scrape between rotations, still tracking every active kid. The operator reports a
    // rotation after its last write for it, so a scrape right after a new kid appears may be a
    // moment behind: it is retried until it catches up, and may never run ahead.
    let (body, scraped_at) = loop {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "no scrape caught up with the rotations seen: {kids:?}"
        );
        let Some(before) = active().await else {
            continue;
        };
        if kids.last() != Some(&before) {
            kids.push(before.clone());
        }
        let (status, body) = get(addr, "/metrics").await;
        let scraped_at = jiff::Timestamp::now();
        if status != 200 || active().await.as_ref() != Some(&before) {
            continue;
        }
        let counted = sample(&body, &format!("jwt_key_rotator_rotations_total{series}"))
            .expect("rotation counter");
        let seen = (kids.len() - 1) as f64;
        assert!(counted <= seen, "counted {counted} rotations, saw {kids:?}");
        if counted == seen {
            break (body, scraped_at);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let counted = sample(&body, &format!("jwt_key_rotator_rotations_total{series}"))
        .expect("rotation counter");
    let reconciles = sample(&body, &format!("jwt_key_rotator_reconciles_total{series}"))
        .expect("reconcile counter");
    let set = sets.get("web").await.unwrap();
    let status = set.status.unwrap();
    let activated: Vec<_> = status
        .keys
        .iter()
        .filter(|k| k.activated_at.is_some())
        .collect();
    assert_eq!(
        counted,
        (kids.len() - 1) as f64,
        "rotations counted vs seen: {kids:?}"
    );
    // Every rotation is one more key that has been active: bootstrap + rotations.
    let kid_now = status.active_kid.clone().unwrap();
    assert!(activated.iter().any(|k| k.kid == kid_now));
    let until = sample(
        &body,
        &format!("jwt_key_rotator_seconds_until_next_rotation{series}"),
    )
    .expect("countdown gauge");
    let next = status.next_rotation_time.unwrap().0;
    let expected = next.duration_since(scraped_at).as_secs_f64();
    assert!(
        (until - expected).abs() < 1.5,
        "gauge {until}s vs nextRotationTime in {expected}s"
    );
    assert!(
        (-0.5..=3.0).contains(&until),
        "within one rotation interval: {until}"
    );
    assert_eq!(sample(&body, "jwt_key_rotator_leader"), Some(1.0));
    assert!(reconciles >= counted);
    eprintln!(
        "scraped: rotations_total={counted} reconciles_total={reconciles} seconds_until_next_rotation={until:.2}"
    );
}

/// Starts an operator watching a new namespace, and waits until it is ready.
async fn ready_operator(
    client: &kube::Client,
    prefix: &str,
) -> (String, Operator, std::net::SocketAddr) {
    let ns = support::namespace(client, prefix).await;
    let operator = Operator::start(&ns);
    let addr = operator.metrics_addr().await;
    eventually("/readyz", Duration::from_secs(30), || async {
        (get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    (ns, operator, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_sets_series_vanish_at_the_next_scrape() {
    let client = support::client().await;
    let (ns, _operator, addr) = ready_operator(&client, "metrics-deleted").await;
    support::apply_set(&client, &ns, "web", json!({"algorithm": "ES256"})).await;
    let series = format!("{{namespace=\"{ns}\",name=\"web\"}}");
    let countdown = format!("jwt_key_rotator_seconds_until_next_rotation{series}");
    eventually("the set's countdown", Duration::from_secs(30), || async {
        get(addr, "/metrics")
            .await
            .1
            .contains(&countdown)
            .then_some(())
    })
    .await;
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &ns);
    sets.delete("web", &Default::default()).await.unwrap();
    eventually(
        "the set to leave the API",
        Duration::from_secs(30),
        || async { sets.get_opt("web").await.ok()?.is_none().then_some(()) },
    )
    .await;
    let gone = Instant::now();
    // Far less than the 15 s a periodic pruner took: only the watch event's latency.
    eventually(
        "every series of the set to go",
        Duration::from_secs(5),
        || async { (!get(addr, "/metrics").await.1.contains(&series)).then_some(()) },
    )
    .await;
    eprintln!(
        "series gone {:?} after the set left the API",
        gone.elapsed()
    );
}

/// A process's VmRSS or VmHWM (peak), in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            let value = l.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

const SLOW_CLIENTS: usize = 2000;
/// Where they stall: half inside the 8 KiB head limit, so only the connection cap and the
/// header timeout free what each holds; half past it, which the head limit refuses.
const STALLED_HEAD_BYTES: [usize; 2] = [4 * 1024, 64 * 1024];
/// Memory the operator may gain while they hang. The cap holds 64 connections of about
/// 20 KiB; without the limits these clients held over 100 MiB (README, "The HTTP endpoint").
const MEMORY_GROWTH_BOUND_KIB: u64 = 12 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_neither_swell_the_operator_nor_keep_healthz_waiting() {
    let client = support::client().await;
    let (_ns, operator, addr) = ready_operator(&client, "slow-clients").await;
    let pid = operator.pid().expect("the operator runs");
    let before = memory_kib(pid, "VmRSS");
    let half_heads = STALLED_HEAD_BYTES.map(|bytes| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}",
            "a".repeat(bytes)
        )
    });
    let mut stalled = Vec::with_capacity(SLOW_CLIENTS);
    for half_a_head in half_heads.iter().cycle().take(SLOW_CLIENTS) {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the operator");
        // The operator may already have closed it to make room: that is the cap at work.
        let _ = stream.write_all(half_a_head.as_bytes()).await;
        stalled.push(stream);
    }
    let during = memory_kib(pid, "VmRSS");
    let asked = Instant::now();
    let (status, _) = get(addr, "/healthz").await;
    let answered_in = asked.elapsed();
    let peak = memory_kib(pid, "VmHWM");
    eprintln!(
        "{SLOW_CLIENTS} slow clients: VmRSS {before} KiB before, {during} KiB while they hang \
         (VmHWM {peak} KiB); /healthz answered {status} in {answered_in:?}"
    );
    assert_eq!(status, 200, "/healthz while {SLOW_CLIENTS} clients hang");
    assert!(
        during.saturating_sub(before) < MEMORY_GROWTH_BOUND_KIB,
        "VmRSS grew from {before} KiB to {during} KiB with {SLOW_CLIENTS} slow clients"
    );
    drop(stalled);
}
