//! The JWKS over HTTP on the real control plane: the operator binary serves what the ConfigMap
//! publishes, with the headers verifiers and caches need, OpenID discovery for an issuer, a
//! standby replica serving as the leader does, and real verifier libraries fetching over HTTP
//! with their caches on (PyJWT's PyJWKClient, panva/jose's createRemoteJWKSet) refusing no
//! token across rotations.
//!
//! Needs `python3`/`node` with what `tests/interop/setup.sh` installs (tests/run.sh runs it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::{Value, json};
use support::verifier::{Verifier, interop, sign_es256};
use support::{Operator, apply_set, client, eventually, namespace};

const DEADLINE: Duration = Duration::from_secs(60);

/// A response: status, headers (lower-case names) and body.
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request on its own connection, as a verifier's client sends it.
fn get(addr: SocketAddr, method: &str, path: &str, extra: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to the JWKS port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !extra
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send the request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)?.parse().ok());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status: status.expect("a status code"),
        headers,
        body: body.to_string(),
    }
}

/// The address the operator serves the JWKS on, from its log.
async fn jwks_addr(operator: &Operator) -> SocketAddr {
    eventually("the operator to log its JWKS address", DEADLINE, || async {
        let log = operator.log_text();
        let line = log.lines().rev().find(|l| l.contains("serving the JWKS"))?;
        let addr = line.split("address=").nth(1)?.split_whitespace().next()?;
        addr.trim_matches('"').parse().ok()
    })
    .await
}

fn operator(ns: &str, extra: &[&str]) -> Operator {
    let mut args: Vec<String> = ["run", "--namespace", ns, "--metrics-addr", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    args.extend(["--jwks-addr".into(), "127.0.0.1:0".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Operator::start_with(args, vec![])
}

/// The kids the set's ConfigMap publishes now.
async fn published(maps: &Api<ConfigMap>, name: &str) -> Option<BTreeSet<String>> {
    let map = maps.get_opt(&format!("{name}-jwks")).await.ok()??;
    let doc: Value = serde_json::from_str(map.data?.get("jwks.json")?).ok()?;
    Some(kids(&doc))
}

/// The kids the set's ConfigMap publishes, once it publishes any.
async fn first_published(maps: &Api<ConfigMap>, name: &str) -> BTreeSet<String> {
    eventually("the ConfigMap to publish the keys", DEADLINE, || async {
        published(maps, name).await.filter(|k| !k.is_empty())
    })
    .await
}

fn kids(doc: &Value) -> BTreeSet<String> {
    let keys = doc["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .filter_map(|k| k["kid"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_served_with_cache_headers_etags_and_discovery_and_never_a_private_member() {
    let client = client().await;
    let ns = namespace(&client, "jwks-http").await;
    let op = operator(&ns, &[]);
    let addr = jwks_addr(&op).await;
    let issuer = format!("http://{addr}/team-a");
    // max-age: the lead's slack beyond propagationDelay + verifierCacheTTL (40s - 5s - 10s),
    // at most verifierCacheTTL: 10.
    let timing = json!({"rotationInterval": "1h", "publishLead": "40s", "propagationDelay": "5s",
        "verifierCacheTTL": "10s", "tokenTTL": "5m", "clockSkew": "1m"});
    let mut spec = timing.clone();
    spec["algorithm"] = "ES256".into();
    spec["jwks"] = json!({"http": {"issuer": issuer}});
    apply_set(&client, &ns, "api", spec).await;
    let mut hs = timing.clone();
    hs["algorithm"] = "HS256".into();
    hs["jwks"] = json!({"http": {}});
    apply_set(&client, &ns, "hmac", hs).await;
    let mut unasked = timing.clone();
    unasked["algorithm"] = "ES256".into();
    apply_set(&client, &ns, "unasked", unasked).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let want = first_published(&maps, "api").await;

    let path = format!("/jwks/{ns}/api.json");
    let reply = eventually(
        "the JWKS served as the ConfigMap publishes it",
        DEADLINE,
        || {
            let reply = get(addr, "GET", &path, &[]);
            let body: Value = serde_json::from_str(&reply.body).unwrap_or_default();
            std::future::ready((reply.status == 200 && kids(&body) == want).then_some(reply))
        },
    )
    .await;
    assert_eq!(reply.headers["content-type"], "application/jwk-set+json");
    assert_eq!(
        reply.headers["cache-control"],
        "public, max-age=10, must-revalidate"
    );
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    let etag = reply.headers["etag"].clone();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // A hand edit puts a private member and a key whose kid is not its thumbprint in the
    // ConfigMap: neither is served (the operator undoes the edit at once, so this loop may not
    // catch the moment; src/jwks_http.rs tests the same on the catalog itself).
    let map = maps.get("api-jwks").await.unwrap();
    let mut doc: Value = serde_json::from_str(&map.data.unwrap()["jwks.json"]).unwrap();
    doc["keys"][0]["d"] = "a-private-scalar".into();
    let forged = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "forged",
        "alg": "ES256", "use": "sig"});
    doc["keys"].as_array_mut().unwrap().push(forged);
    let patch = json!({"data": {"jwks.json": doc.to_string()}});
    maps.patch(
        "api-jwks",
        &Default::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let reply = get(addr, "GET", &path, &[]);
        assert!(!reply.body.contains("a-private-scalar"), "{}", reply.body);
        assert!(!reply.body.contains("forged"), "{}", reply.body);
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same document: 304 without a body, for the ETag alone or among others, weak or not.
    // Sound keys' public members only: the document served is the same bytes as before.
    let reply = eventually("the served document", DEADLINE, || {
        let reply = get(addr, "GET", &path, &[]);
        std::future::ready((reply.headers.get("etag") == Some(&etag)).then_some(reply))
    })
    .await;
    assert_eq!(reply.status, 200);
    for held in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let reply = get(addr, "GET", &path, &[("If-None-Match", &held)]);
        assert_eq!(reply.status, 304, "If-None-Match: {held}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.headers["etag"], etag);
        assert_eq!(
            reply.headers["cache-control"],
            "public, max-age=10, must-revalidate"
        );
    }
    let reply = get(addr, "GET", &path, &[("If-None-Match", "\"other\"")]);
    assert_eq!(reply.status, 200);
    let reply = get(addr, "HEAD", &path, &[]);
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    assert_eq!(get(addr, "POST", &path, &[]).status, 405);

    // Discovery, on the issuer's host, names the issuer's JWKS, which serves the same keys.
    let reply = get(addr, "GET", "/team-a/.well-known/openid-configuration", &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    let discovery: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(discovery["issuer"], issuer);
    let jwks_uri = format!("{issuer}/.well-known/jwks.json");
    assert_eq!(discovery["jwks_uri"], jwks_uri);
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let reply = get(addr, "GET", "/team-a/.well-known/jwks.json", &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(kids(&serde_json::from_str(&reply.body).unwrap()), want);
    // Another host, another issuer path, a set that did not ask, a symmetric set: nothing.
    let other_host = [("Host", "elsewhere.example")];
    let reply = get(
        addr,
        "GET",
        "/team-a/.well-known/openid-configuration",
        &other_host,
    );
    assert_eq!(reply.status, 404);
    // Two Host headers are ambiguous (RFC 9112, section 3.2): refused, not guessed at.
    let two_hosts = [
        ("Host", addr.to_string()),
        ("Host", "elsewhere.example".to_string()),
    ];
    let two_hosts: Vec<(&str, &str)> = two_hosts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = get(
        addr,
        "GET",
        "/team-a/.well-known/openid-configuration",
        &two_hosts,
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        get(addr, "GET", "/team-b/.well-known/jwks.json", &[]).status,
        404
    );
    assert_eq!(
        get(addr, "GET", &format!("/jwks/{ns}/unasked.json"), &[]).status,
        404
    );
    assert_eq!(
        get(addr, "GET", &format!("/jwks/{ns}/hmac.json"), &[]).status,
        404
    );
    let log = op.log_text();
    assert!(!log.contains("a-private-scalar"));

    // A set created later naming the same issuer takes nothing over: the oldest keeps it.
    let mut twin = timing.clone();
    twin["algorithm"] = "ES256".into();
    twin["jwks"] = json!({"http": {"issuer": issuer}});
    apply_set(&client, &ns, "twin", twin).await;
    let twin_path = format!("/jwks/{ns}/twin.json");
    let twin_keys = eventually("the twin to be served at its own path", DEADLINE, || {
        let reply = get(addr, "GET", &twin_path, &[]);
        let body: Value = serde_json::from_str(&reply.body).unwrap_or_default();
        std::future::ready((reply.status == 200 && !kids(&body).is_empty()).then(|| kids(&body)))
    })
    .await;
    assert_ne!(twin_keys, want);
    let reply = get(addr, "GET", "/team-a/.well-known/jwks.json", &[]);
    assert_eq!(kids(&serde_json::from_str(&reply.body).unwrap()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_serves_the_same_jwks_as_the_leader() {
    let client = client().await;
    let ns = namespace(&client, "jwks-standby").await;
    let lease = [
        "--leader-election",
        "--lease-namespace",
        &ns,
        "--lease-duration",
        "3s",
    ];
    let lease = [
        &lease[..],
        &["--lease-renew-deadline", "2s", "--lease-retry-period", "1s"],
    ];
    let lease = lease.concat();
    let (first, second) = (operator(&ns, &lease), operator(&ns, &lease));
    let addrs = [jwks_addr(&first).await, jwks_addr(&second).await];
    let spec = json!({"algorithm": "ES256", "rotationInterval": "1h", "publishLead": "40s",
        "propagationDelay": "5s", "verifierCacheTTL": "10s", "jwks": {"http": {}}});
    apply_set(&client, &ns, "api", spec).await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let want = first_published(&maps, "api").await;
    // One of the two holds the Lease and reconciles; the other only watches: both serve.
    let path = format!("/jwks/{ns}/api.json");
    for addr in addrs {
        eventually("each replica to serve the published keys", DEADLINE, || {
            let reply = get(addr, "GET", &path, &[]);
            let body: Value = serde_json::from_str(&reply.body).unwrap_or_default();
            std::future::ready((reply.status == 200 && kids(&body) == want).then_some(()))
        })
        .await;
    }
    // And one of them did only stand by.
    let leaders = [&first, &second]
        .iter()
        .filter(|op| op.log_text().contains("acquired the leader Lease"))
        .count();
    assert_eq!(leaders, 1, "exactly one replica leads, the other stands by");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwkclient_and_jose_fetching_over_http_with_their_caches_on_refuse_no_token_across_rotations()
 {
    let client = client().await;
    let ns = namespace(&client, "jwks-verifiers").await;
    let op = operator(&ns, &[]);
    let addr = jwks_addr(&op).await;
    // Verifiers keep their copy 4s and never refetch early for an unknown kid: a new key must
    // be published propagationDelay + verifierCacheTTL (1s + 4s) before it signs.
    let cache = 4;
    let spec = json!({"algorithm": "ES256", "rotationInterval": "16s", "publishLead": "6s",
        "propagationDelay": "1s", "verifierCacheTTL": format!("{cache}s"), "tokenTTL": "10s",
        "clockSkew": "1s", "jwks": {"http": {}}});
    apply_set(&client, &ns, "api", spec).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let first = eventually("the first key to sign", DEADLINE, || async {
        sign_es256(&secrets.get_opt("api-signing-keys").await.ok()??)
    })
    .await;
    let url = format!("http://{addr}/jwks/{ns}/api.json");
    eventually("the endpoint to serve the set", DEADLINE, || {
        let path = format!("/jwks/{ns}/api.json");
        std::future::ready((get(addr, "GET", &path, &[]).status == 200).then_some(()))
    })
    .await;
    let mut python = Command::new(interop().join(".venv/bin/python"));
    python.arg(interop().join("remote_verify.py"));
    let mut node = Command::new("node");
    node.arg(interop().join("remote_verify.mjs"));
    let mut verifiers = [("PyJWKClient", python), ("jose", node)].map(|(name, mut cmd)| {
        cmd.args([url.as_str(), &cache.to_string()]);
        Verifier::start(name, cmd)
    });
    // Three rotations: a token every 200ms, signed with what the Secret holds at that moment.
    let (mut verified, mut refused) = (BTreeMap::<String, usize>::new(), Vec::new());
    let mut token = first;
    let until = Instant::now() + Duration::from_secs(52);
    while Instant::now() < until {
        for verifier in verifiers.iter_mut() {
            let verdict = verifier.verify(&token);
            match verdict.strip_prefix("ok ") {
                Some(kid) => *verified.entry(kid.to_string()).or_default() += 1,
                None => refused.push(format!("{}: {verdict}", verifier.name)),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(next) = secrets.get_opt("api-signing-keys").await.ok().flatten() {
            token = sign_es256(&next).unwrap_or(token);
        }
    }
    eprintln!("tokens each verifier accepted, by kid: {verified:?}");
    assert!(refused.is_empty(), "valid tokens refused: {refused:#?}");
    assert!(
        verified.len() >= 3,
        "fewer than three keys signed in 52s of 16s rotations: {verified:?}"
    );
}
