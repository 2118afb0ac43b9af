//! The HTTP endpoint, served in-process: stalled and idle clients are cut off, connections are
//! capped, only GET and HEAD are served, and a large /metrics response arrives whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use jwt_key_rotator::api::JwtKeySet;
use jwt_key_rotator::http::{self, Endpoints, Limits};
use jwt_key_rotator::metrics::Metrics;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any limit a test sets, so a limit that is not enforced fails the test.
const DEADLINE: Duration = Duration::from_secs(20);
/// A request head cut off mid-header, as a slow client leaves it.
const HALF_A_HEAD: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
/// What completes it.
const REST_OF_THE_HEAD: &str = "1\r\nConnection: close\r\n\r\n";

fn limits(max_connections: usize, header_read_timeout: Duration) -> Limits {
    Limits {
        max_connections,
        header_read_timeout,
        connection_lifetime: Duration::from_secs(120),
    }
}

async fn server(metrics: Metrics, limits: Limits) -> SocketAddr {
    let endpoints = Endpoints {
        metrics: Arc::new(metrics),
        ready: Arc::new(AtomicBool::new(true)),
    };
    http::serve(([127, 0, 0, 1], 0).into(), Arc::new(endpoints), limits)
        .await
        .expect("bind the HTTP endpoint")
}

async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(HALF_A_HEAD.as_bytes())
        .await
        .expect("send half a head");
    stream
}

/// Everything the server sends until it closes the connection, or None if it stays open
/// past `DEADLINE`.
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

/// Sends `request` whole on a new connection: the response, read to the server's close.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    until_closed(&mut stream)
        .await
        .expect("the server answers and closes")
}

fn status(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_client_stalled_mid_header_is_disconnected_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let addr = server(Metrics::new(), limits(64, timeout)).await;
    let connected = Instant::now();
    let mut client = stalled(addr).await;
    assert!(
        until_closed(&mut client).await.is_some(),
        "still open after {DEADLINE:?}"
    );
    let held = connected.elapsed();
    assert!(held >= timeout, "closed after {held:?}, before the timeout");
    eprintln!("stalled client disconnected after {held:?} (header timeout {timeout:?})");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let addr = server(Metrics::new(), limits(64, timeout)).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let answered = Instant::now();
    let response = until_closed(&mut client).await.expect("closed when idle");
    assert_eq!(status(&response), Some(200), "{response}");
    assert!(answered.elapsed() >= timeout, "closed before the timeout");
}

#[tokio::test]
async fn connections_beyond_the_cap_close_the_oldest_and_the_newest_are_served() {
    let cap = 4;
    let addr = server(Metrics::new(), limits(cap, DEADLINE * 3)).await;
    let mut clients = Vec::new();
    for _ in 0..cap + 2 {
        clients.push(stalled(addr).await);
    }
    // The two oldest make room for the two newest, long before any timeout.
    for (i, oldest) in clients.iter_mut().take(2).enumerate() {
        assert!(
            until_closed(oldest).await.is_some(),
            "connection {i} still open with {} beyond the cap",
            cap + 2
        );
    }
    // The others are still held and answer once their request is complete.
    for (i, held) in clients.iter_mut().enumerate().skip(2) {
        held.write_all(REST_OF_THE_HEAD.as_bytes())
            .await
            .expect("send the rest");
        let response = until_closed(held).await.unwrap_or_default();
        assert_eq!(status(&response), Some(200), "connection {i}: {response}");
    }
}

#[tokio::test]
async fn only_get_and_head_are_served() {
    let addr = server(Metrics::new(), Limits::default()).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let response = exchange(
            addr,
            &format!(
                "{method} /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
            ),
        )
        .await;
        assert_eq!(status(&response), Some(405), "{method}: {response}");
        assert!(
            response.to_ascii_lowercase().contains("allow: get, head"),
            "{method}: {response}"
        );
    }
    let get = exchange(addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&get), Some(200), "{get}");
    assert!(get.ends_with("ok\n"), "{get}");
    let head = exchange(addr, "HEAD /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&head), Some(200), "{head}");
    assert!(
        head.ends_with("\r\n\r\n"),
        "a HEAD response has no body: {head}"
    );
}

#[tokio::test]
async fn a_metrics_response_much_larger_than_the_head_buffer_arrives_whole() {
    let metrics = Metrics::new();
    let mut cache = Writer::default();
    let _observing = metrics.observe(vec![cache.as_reader()]);
    for i in 0..2000 {
        let set: JwtKeySet = serde_json::from_value(json!({
            "apiVersion": "jwt.keyrotator.dev/v1alpha1",
            "kind": "JwtKeySet",
            "metadata": {"name": format!("set-{i}"), "namespace": "ns"},
            "spec": {},
        }))
        .expect("a JwtKeySet");
        cache.apply_watcher_event(&Event::Apply(set));
    }
    let addr = server(metrics, Limits::default()).await;
    let response = exchange(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")?
                .parse()
                .ok()
        })
        .expect("content-length");
    assert!(length > 100_000, "{length} bytes");
    assert_eq!(body.len(), length);
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("name=\"set-1999\""));
}
