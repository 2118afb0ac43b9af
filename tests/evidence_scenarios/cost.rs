//! What the protections cost in API requests; runs alone (`GATE`).

use super::*;

/// The resources a set's reconcile reads or writes.
const SET_RESOURCES: [&str; 5] = [
    "secrets",
    "configmaps",
    "jwtkeysets",
    "jwtkeysets/status",
    "events",
];

/// `apiserver_request_total` from the control plane's /metrics, summed by (verb, resource) over
/// `SET_RESOURCES` (all namespaces, every client).
fn api_requests() -> BTreeMap<(String, String), f64> {
    let out = support::kubectl(&["get", "--raw", "/metrics"]);
    assert!(out.success, "GET /metrics: {}", out.stderr);
    let mut totals = BTreeMap::new();
    for line in out.stdout.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let sub = label("subresource");
        let resource = match sub.as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        if !SET_RESOURCES.contains(&resource.as_str()) {
            continue;
        }
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *totals.entry((label("verb"), resource)).or_insert(0.0) += n;
    }
    totals
}

type Requests = BTreeMap<(String, String), f64>;

fn difference(after: &Requests, before: &Requests) -> Requests {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn minus(mut requests: Requests, verb: &str, resource: &str, n: f64) -> Requests {
    let key = (verb.to_string(), resource.to_string());
    if let Some(v) = requests.get_mut(&key) {
        *v -= n;
    }
    requests.retain(|_, v| *v > 0.0);
    requests
}

fn writes(requests: &Requests) -> f64 {
    let read = ["GET", "LIST", "WATCH"];
    requests
        .iter()
        .filter(|((verb, _), _)| !read.contains(&verb.as_str()))
        .map(|(_, v)| v)
        .sum()
}

fn table(requests: &Requests, per: f64) -> String {
    let cells: Vec<String> = requests
        .iter()
        .filter(|((verb, _), _)| verb != "WATCH")
        .map(|((verb, resource), n)| format!("{verb} {resource}: {:.1}", n / per))
        .collect();
    if cells.is_empty() {
        "none".into()
    } else {
        cells.join(", ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_protections_cost_in_api_requests_per_reconcile() {
    let _alone = GATE.write().await;
    let set = Set::ready_alone("cost", QUIET).await;
    let mut reconciles = reconciles_settled(&set, 0.0).await;

    // The background: the same resources, nobody touching the set, for 5 s.
    let before = api_requests();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = difference(&api_requests(), &before);
    eprintln!("[cost] background over 5 s: {}", table(&idle, 1.0));

    // Ten reconciles with nothing due: an annotation that is not the rotate one.
    let before = api_requests();
    for i in 0..10 {
        set.annotate("example.com/touched", &format!("t{i}")).await;
        reconciles = set.reconciled_after(reconciles).await;
    }
    let steady = minus(
        difference(&api_requests(), &before),
        "PATCH",
        "jwtkeysets",
        10.0,
    );
    eprintln!(
        "[cost] per steady-state reconcile: {}",
        table(&steady, 10.0)
    );
    assert_eq!(
        writes(&steady),
        0.0,
        "a steady state writes nothing: {steady:?}"
    );
    let gets = |r: &Requests, resource: &str| {
        r.get(&("GET".to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        gets(&steady, "secrets") == 0.0 && gets(&steady, "configmaps") == 0.0,
        "reconciles read the Secret and the ConfigMap from the watch cache: {steady:?}"
    );

    // Repairs: what one edit costs, from the edit until the operator is idle again.
    let original = set.secret_data().await;
    let kid = set.active_kid().await;
    let newline = format!("{kid}\n");
    let repairs: [(&str, &[u8]); 2] = [
        ("kid with a trailing newline", newline.as_bytes()),
        ("manifest.json emptied", b"{}"),
    ];
    for (what, bytes) in repairs {
        let key = if what.starts_with("kid") {
            "kid"
        } else {
            "manifest.json"
        };
        let before = api_requests();
        set.set_secret_file(key, bytes).await;
        reconciles = reconciles_settled(&set, reconciles).await;
        let repair = minus(
            difference(&api_requests(), &before),
            "PATCH",
            "secrets",
            1.0,
        );
        eprintln!("[cost] repairing \"{what}\": {}", table(&repair, 1.0));
        assert_eq!(
            set.secret_data().await,
            original,
            "{what} repaired byte-identical"
        );
    }
    let before = api_requests();
    set.remove_secret_files(&["private.pem", "public.pem"])
        .await;
    reconciles_settled(&set, reconciles).await;
    let repair = minus(
        difference(&api_requests(), &before),
        "PATCH",
        "secrets",
        1.0,
    );
    eprintln!(
        "[cost] repairing \"private.pem and public.pem deleted\": {}",
        table(&repair, 1.0)
    );
    assert_eq!(set.secret_data().await, original);
}

fn count(requests: &Requests, verb: &str, resource: &str) -> f64 {
    requests
        .get(&(verb.to_string(), resource.to_string()))
        .copied()
        .unwrap_or(0.0)
}

/// A new set costs the writes it needs and no more (issue 11): its Secret created once, its
/// ConfigMap created once, its status written once (the history with it), and one read: a GET
/// of the Secret, since someone else's Secret of that name must block the set before anything
/// is published. Events aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_set_costs_one_secret_create_one_config_map_create_and_one_status_write() {
    let _alone = GATE.write().await;
    let set = Set::not_applied("new-cost").await;
    let before = api_requests();
    set.apply(QUIET.spec()).await;
    set.ready().await;
    reconciles_settled(&set, 0.0).await;
    let spent = minus(
        difference(&api_requests(), &before),
        "APPLY",
        "jwtkeysets",
        1.0,
    );
    eprintln!("[cost] a new set: {}", table(&spent, 1.0));
    let writes_of = |resource: &str| -> BTreeMap<&str, f64> {
        ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
            .into_iter()
            .map(|verb| (verb, count(&spent, verb, resource)))
            .filter(|(_, n)| *n > 0.0)
            .collect()
    };
    assert_eq!(writes_of("secrets"), BTreeMap::from([("POST", 1.0)]));
    assert_eq!(writes_of("configmaps"), BTreeMap::from([("POST", 1.0)]));
    assert_eq!(
        writes_of("jwtkeysets/status"),
        BTreeMap::from([("APPLY", 1.0)]),
        "one status write, the history with it: {spent:?}"
    );
    let reads = count(&spent, "GET", "secrets") + count(&spent, "GET", "configmaps");
    assert!(reads <= 1.0, "reads of the Secret and ConfigMap: {spent:?}");
}
