//! Workloads, for real: the operator installed by Helm as a pod on the test node keeps an RSA,
//! an EC and an HMAC set rotating; for each, a signer pod mounts the Secret as the README shows
//! (`items`: `kid` and `private.pem`, or `secret` for HMAC) and signs with whatever it finds
//! there, and a verifier pod mounts the JWKS ConfigMap (HMAC: the Secret's `verify.jwks.json`)
//! and verifies every token the signer issued while it is valid; for the EC set, a second
//! verifier pod in another namespace mounts the set's JWKS copy (`spec.jwks.copies`) and
//! verifies them too. The kubelet refreshes the volumes on its own, independently. Across
//! several rotations not one valid token may be refused, and the delay from each API write to
//! the file changing in each pod is measured and checked against the sets' `propagationDelay`.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use jwt_key_rotator::copies::ACCEPT_LABEL;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};
use support::node;

/// The sets' timings: short, so that three rotations take about a minute, and consistent with
/// the test kubelet's 2 s sync period (a mounted file follows within 1.5 sync periods plus a
/// sync's own time; `propagationDelay` leaves room for a loaded machine).
const ROTATION_INTERVAL_S: u64 = 20;
const PUBLISH_LEAD_S: u64 = 8;
const PROPAGATION_DELAY_S: u64 = 6;
const TOKEN_TTL_S: u64 = 10;
const ROTATIONS: usize = 3;
const POD_DEADLINE: Duration = Duration::from_secs(120);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What one set's run observed.
#[derive(Default)]
struct Observed {
    /// Tokens signed and how often each was verified (all accepted).
    tokens: usize,
    verifications: usize,
    /// Kids that signed a token, in order of first use.
    signing_kids: Vec<String>,
    /// Delays (ms) from an API write to the file changing in the pod.
    signer_delays_ms: Vec<u64>,
    verifier_delays_ms: Vec<u64>,
    /// Verifications by a pod in another namespace mounting the set's JWKS copy (ES256).
    copy_verifications: usize,
}

/// A file's contents as the pods' `watch` reports it: the kids it holds.
type Kids = Vec<String>;

/// When the API server's watch told us of each new content of a file: (ms, kids).
type ApiWrites = Arc<Mutex<Vec<(u64, Kids)>>>;

fn kids_of_jwks(text: &str) -> Kids {
    let jwks: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// Records each distinct content of `key` in ConfigMap or Secret `name`, with when it was seen.
fn record_writes<K>(api: Api<K>, name: &str, read: fn(&K) -> Option<Kids>) -> ApiWrites
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let writes: ApiWrites = Arc::default();
    let out = writes.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(Ok(event)) = events.next().await {
            let objects = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                _ => vec![],
            };
            for object in objects {
                let Some(kids) = read(&object) else { continue };
                let mut writes = out.lock().unwrap();
                if writes.last().map(|(_, k)| k) != Some(&kids) {
                    writes.push((now_ms(), kids));
                }
            }
        }
    });
    writes
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(key)?.0;
    String::from_utf8(bytes.clone()).ok()
}

/// The changes a pod's `watch` logged for FILE: (ms, kids).
fn pod_changes(namespace: &str, pod: &str, file: &str) -> Vec<(u64, Kids)> {
    node::logs(namespace, pod)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["file"] == file)
        .map(|v| {
            let kids = v["kids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            (v["at_ms"].as_u64().unwrap_or_default(), kids)
        })
        .collect()
}

/// For each API write after the pod first read the file, the delay until the pod held that
/// content or a later one (the kubelet may skip a content that a newer write replaced
/// before its next sync).
fn delays(writes: &[(u64, Kids)], changes: &[(u64, Kids)], what: &str) -> Vec<u64> {
    let first_seen = changes.first().map(|(t, _)| *t).unwrap_or(u64::MAX);
    writes
        .iter()
        .enumerate()
        .filter(|(_, (written, _))| *written > first_seen)
        .map(|(i, (written, kids))| {
            let this_or_later = &writes[i..];
            let (seen, _) = changes
                .iter()
                .find(|(_, k)| this_or_later.iter().any(|(_, w)| w == k))
                .unwrap_or_else(|| {
                    panic!("{what}: the pod never saw {kids:?} (written at {written}) or newer")
                });
            // Contents never recur (kids are fresh), so the first sight is of this write;
            // a sight before the watch reported the write counts as no delay.
            seen.saturating_sub(*written)
        })
        .collect()
}

/// `kubectl exec` off the runtime's threads: blocking them would hold up the watches that time
/// the API writes.
async fn exec(namespace: &str, pod: &str, args: &[&str]) -> support::Output {
    let (namespace, pod) = (namespace.to_string(), pod.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node::exec(&namespace, &pod, &args)
    })
    .await
    .expect("kubectl exec task")
}

fn pod(name: &str, args: Vec<String>, volume: Value, mount: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": name,
                "image": node::image("workload"),
                "imagePullPolicy": "Never",
                "args": args,
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "keys", "mountPath": mount, "readOnly": true}],
            }],
            "volumes": [volume],
        }
    }))
    .expect("pod manifest")
}

/// One set, its signer and its verifier, through `ROTATIONS` rotations.
async fn rotate_under_load(client: Client, algorithm: &'static str) -> Observed {
    let hmac = algorithm.starts_with("HS");
    let ns = node::restricted_namespace(&client, &format!("workload-{}", algorithm.to_lowercase()))
        .await;
    let name = "tokens";
    let secret_name = format!("{name}-signing-keys");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let signer_writes = record_writes(secrets.clone(), &secret_name, |s| {
        secret_text(s, "kid").map(|k| vec![k.trim().to_string()])
    });
    let verifier_writes = if hmac {
        record_writes(secrets.clone(), &secret_name, |s| {
            secret_text(s, "verify.jwks.json").map(|t| kids_of_jwks(&t))
        })
    } else {
        record_writes(maps.clone(), &format!("{name}-jwks"), |m| {
            m.data.as_ref()?.get("jwks.json").map(|t| kids_of_jwks(t))
        })
    };
    // The EC set is copied into a verifier namespace of its own, whose pod mounts the copy.
    let copy_ns = match algorithm {
        "ES256" => Some(accepting_namespace(&client, "workload-es256-copy").await),
        _ => None,
    };
    let copies = match &copy_ns {
        Some(n) => json!({"copies": {"namespaces": [n]}}),
        None => json!({}),
    };
    support::apply_set(
        &client,
        &ns,
        name,
        json!({
            "jwks": copies,
            "algorithm": algorithm,
            "rotationInterval": format!("{ROTATION_INTERVAL_S}s"),
            "publishLead": format!("{PUBLISH_LEAD_S}s"),
            // The verifier pods re-read the mounted JWKS: no cache beyond propagationDelay.
            "verifierCacheTTL": "0s",
            "propagationDelay": format!("{PROPAGATION_DELAY_S}s"),
            "tokenTTL": format!("{TOKEN_TTL_S}s"),
            "clockSkew": "1s",
        }),
    )
    .await;
    support::eventually(
        &format!("{ns}: Secret {secret_name}"),
        POD_DEADLINE,
        || async { secrets.get_opt(&secret_name).await.ok()? },
    )
    .await;

    // The README's signer: the Secret mounted with `items`, only what it signs with.
    let key_item = if hmac { "secret" } else { "private.pem" };
    let signer = pod(
        "signer",
        vec!["watch".into(), "/var/run/jwt-keys/kid".into()],
        json!({"name": "keys", "secret": {"secretName": secret_name,
               "items": [{"key": "kid", "path": "kid"}, {"key": key_item, "path": key_item}]}}),
        "/var/run/jwt-keys",
    );
    let (jwks_volume, jwks_file) = if hmac {
        (
            json!({"name": "keys", "secret": {"secretName": secret_name,
                   "items": [{"key": "verify.jwks.json", "path": "verify.jwks.json"}]}}),
            "/var/run/jwks/verify.jwks.json",
        )
    } else {
        (
            json!({"name": "keys", "configMap": {"name": format!("{name}-jwks")}}),
            "/var/run/jwks/jwks.json",
        )
    };
    let verifier = pod(
        "verifier",
        vec!["watch".into(), jwks_file.into()],
        jwks_volume,
        "/var/run/jwks",
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for p in [&signer, &verifier] {
        pods.create(&PostParams::default(), p)
            .await
            .unwrap_or_else(|e| panic!("{ns}: create pod: {e}"));
    }
    node::wait_pod_ready(&client, &ns, "signer", POD_DEADLINE).await;
    node::wait_pod_ready(&client, &ns, "verifier", POD_DEADLINE).await;
    if let Some(copy_ns) = &copy_ns {
        let copy_pods: Api<Pod> = Api::namespaced(client.clone(), copy_ns);
        copy_pods
            .create(&PostParams::default(), &verifier)
            .await
            .unwrap_or_else(|e| panic!("{copy_ns}: create pod: {e}"));
        node::wait_pod_ready(&client, copy_ns, "verifier", POD_DEADLINE).await;
    }

    // Sign, then verify every token still valid, until the signer has used ROTATIONS + 1 keys.
    let mut observed = Observed::default();
    let mut valid: Vec<(u64, String)> = vec![]; // (expiry ms, token)
    let deadline =
        Instant::now() + Duration::from_secs(ROTATION_INTERVAL_S * (ROTATIONS as u64 + 2) + 60);
    while observed.signing_kids.len() <= ROTATIONS {
        assert!(
            Instant::now() < deadline,
            "{ns}: only {} keys signed before the deadline",
            observed.signing_kids.len()
        );
        let signed = exec(
            &ns,
            "signer",
            &[
                "/jwt-workload",
                "sign",
                "/var/run/jwt-keys",
                algorithm,
                &TOKEN_TTL_S.to_string(),
                "alice",
            ],
        )
        .await;
        assert!(
            signed.success,
            "{ns}: signing failed: {}{}",
            signed.stdout, signed.stderr
        );
        let token = signed.stdout.trim().to_string();
        let issued = now_ms();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        if observed.signing_kids.last() != Some(&kid) {
            observed.signing_kids.push(kid);
        }
        observed.tokens += 1;
        // The token's exp is whole seconds: it is valid until then, less a second of margin
        // for the time this exec takes.
        valid.push((issued + TOKEN_TTL_S * 1000 - 1500, token));
        valid.retain(|(expiry, _)| *expiry > now_ms());
        let mut args = vec!["/jwt-workload", "verify", jwks_file];
        args.extend(valid.iter().map(|(_, t)| t.as_str()));
        let verified = exec(&ns, "verifier", &args).await;
        assert!(
            verified.success,
            "{ns}: the verifier refused a valid token:\n{}{}\nsigning kids so far: {:?}",
            verified.stdout, verified.stderr, observed.signing_kids
        );
        observed.verifications += valid.len();
        if let Some(copy_ns) = &copy_ns {
            let verified = exec(copy_ns, "verifier", &args).await;
            assert!(
                verified.success,
                "{copy_ns}: the verifier of the copy refused a valid token:\n{}{}\nsigning kids so far: {:?}",
                verified.stdout, verified.stderr, observed.signing_kids
            );
            observed.copy_verifications += valid.len();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let signer_changes = pod_changes(&ns, "signer", "/var/run/jwt-keys/kid");
    let verifier_changes = pod_changes(&ns, "verifier", jwks_file);
    observed.signer_delays_ms = delays(
        &signer_writes.lock().unwrap(),
        &signer_changes,
        &format!("{ns} signer"),
    );
    observed.verifier_delays_ms = delays(
        &verifier_writes.lock().unwrap(),
        &verifier_changes,
        &format!("{ns} verifier"),
    );
    observed
}

/// A restricted namespace that accepts JWKS copies.
async fn accepting_namespace(client: &Client, prefix: &str) -> String {
    let ns = node::restricted_namespace(client, prefix).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels = json!({"metadata": {"labels": {ACCEPT_LABEL: "true"}}});
    namespaces
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap_or_else(|e| panic!("label {ns}: {e}"));
    ns
}

fn median_max(values: &[u64]) -> (u64, u64) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    (
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_valid_token_is_refused_across_rotations_of_mounted_keys() {
    let client = support::client().await;
    let release_ns = node::restricted_namespace(&client, "workload-operator").await;
    node::helm_install_operator("rotator", &release_ns, &[]);
    node::wait_deployment_available(
        &client,
        &release_ns,
        "rotator-jwt-key-rotator",
        1,
        POD_DEADLINE,
    )
    .await;

    let runs: BTreeMap<&str, Observed> =
        futures::future::join_all(["RS256", "ES256", "HS256"].map(|alg| {
            let client = client.clone();
            async move {
                (
                    alg,
                    tokio::spawn(rotate_under_load(client, alg)).await.unwrap(),
                )
            }
        }))
        .await
        .into_iter()
        .collect();

    let mut report = format!(
        "propagation on the test node (kubelet syncFrequency {}s; sets: propagationDelay {PROPAGATION_DELAY_S}s, publishLead {PUBLISH_LEAD_S}s)\n",
        support::KUBELET_SYNC_FREQUENCY.as_secs()
    );
    let (mut all_signer, mut all_verifier) = (vec![], vec![]);
    for (alg, observed) in &runs {
        let (sm, sx) = median_max(&observed.signer_delays_ms);
        let (vm, vx) = median_max(&observed.verifier_delays_ms);
        report += &format!(
            "  {alg}: {} keys signed {} tokens, {} verifications (+{} from a copy in another namespace), none refused; signer delay median {sm} ms max {sx} ms ({} writes); verifier delay median {vm} ms max {vx} ms ({} writes)\n",
            observed.signing_kids.len(),
            observed.tokens,
            observed.verifications,
            observed.copy_verifications,
            observed.signer_delays_ms.len(),
            observed.verifier_delays_ms.len()
        );
        all_signer.extend(&observed.signer_delays_ms);
        all_verifier.extend(&observed.verifier_delays_ms);
        assert!(
            observed.signing_kids.len() > ROTATIONS,
            "{alg}: {:?}",
            observed.signing_kids
        );
        assert!(
            *alg != "ES256" || observed.copy_verifications > 0,
            "ES256: nothing verified from the copy"
        );
        assert!(
            observed.signer_delays_ms.len() >= ROTATIONS,
            "{alg}: too few signer refreshes measured"
        );
        assert!(
            observed.verifier_delays_ms.len() >= ROTATIONS,
            "{alg}: too few verifier refreshes measured"
        );
    }
    let (sm, sx) = median_max(&all_signer);
    let (vm, vx) = median_max(&all_verifier);
    report += &format!(
        "  all: signer median {sm} ms, max {sx} ms; verifier median {vm} ms, max {vx} ms\n"
    );
    eprint!("{report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_TARGET_TMPDIR"), "/propagation.txt"),
        &report,
    );
    assert!(
        sx <= PROPAGATION_DELAY_S * 1000 && vx <= PROPAGATION_DELAY_S * 1000,
        "a mounted file took longer than propagationDelay to follow:\n{report}"
    );
    node::helm_uninstall("rotator", &release_ns);
}
