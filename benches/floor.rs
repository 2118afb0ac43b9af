//! The floor that `benches/scale.sh` compares the operator with: a client that brings JwtKeySets
//! to Ready with only the writes they need and nothing the operator does to be safe (no reads
//! of what exists, no evidence, no Events): for each set one key, one Secret create, one
//! ConfigMap create (its JWKS) and one status write, `--workers` sets at a time.
//!
//! `cargo bench --bench floor -- --namespace NS --sets N [--alg ES256] [--workers 16]` brings
//! `set-1` ... `set-N` of NS (created beforehand) to Ready, with the operator's own rendering of
//! the Secret and the JWKS, so that both write the same objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use jwt_key_rotator::api::JwtKeySet;
use jwt_key_rotator::keys::{self, Algorithm};
use jwt_key_rotator::layout::{self, Materials};
use jwt_key_rotator::lifecycle::{KeyRecord, KeyState, MANIFEST_VERSION, Manifest};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

struct Args {
    namespace: String,
    sets: usize,
    alg: Algorithm,
    workers: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        namespace: String::new(),
        sets: 0,
        alg: Algorithm::ES256,
        workers: 16,
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
            "--alg" => args.alg = value()?.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
            "--workers" => args.workers = value()?.parse()?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(!args.namespace.is_empty(), "--namespace is required");
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let client = Client::try_default().await?;
    let sets: Api<JwtKeySet> = Api::namespaced(client.clone(), &args.namespace);
    // One LIST for the sets' uids (their owner references), as a watch would give them.
    let listed = sets.list(&ListParams::default()).await?;
    let by_name: BTreeMap<String, Arc<JwtKeySet>> = listed
        .items
        .into_iter()
        .map(|s| (s.name_any(), Arc::new(s)))
        .collect();
    let wanted: Vec<Arc<JwtKeySet>> = (1..=args.sets)
        .filter_map(|i| by_name.get(&format!("set-{i}")).cloned())
        .collect();
    anyhow::ensure!(wanted.len() == args.sets, "not every set-N exists");
    let started = std::time::Instant::now();
    let failures = futures::stream::iter(wanted)
        .map(|set| ready(client.clone(), set, args.alg))
        .buffer_unordered(args.workers)
        .filter_map(|r| async move { r.err() })
        .collect::<Vec<_>>()
        .await;
    eprintln!("floor: {} sets in {:?}", args.sets, started.elapsed());
    match failures.first() {
        Some(e) => anyhow::bail!("{} sets failed; first: {e}", failures.len()),
        None => Ok(()),
    }
}

/// One set made Ready: a key, its Secret, its JWKS, its status.
async fn ready(client: Client, set: Arc<JwtKeySet>, alg: Algorithm) -> anyhow::Result<()> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let key = Arc::new(tokio::task::block_in_place(|| keys::generate(alg, None))?);
    let now = Timestamp::now();
    let record = KeyRecord {
        kid: key.kid().to_string(),
        alg,
        rsa_bits: key.rsa_size().map(|s| s.bits() as u32),
        state: KeyState::Active,
        created_at: now,
        published_at: Some(now),
        activated_at: Some(now),
        retired_at: None,
        expires_at: None,
        public_jwk: key.public_jwk().cloned(),
        longest_retention: None,
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        keys: vec![record],
        ..Manifest::empty()
    };
    let mut materials = Materials::default();
    materials.insert(key.clone());
    let meta = |object: String| ObjectMeta {
        name: Some(object),
        namespace: Some(ns.clone()),
        owner_references: set.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    let secret = Secret {
        metadata: meta(format!("{name}-signing-keys")),
        data: Some(layout::render_secret(&manifest, &materials)?),
        ..Secret::default()
    };
    let jwks = layout::render_jwks(&manifest.public_jwks());
    let map = ConfigMap {
        metadata: meta(format!("{name}-jwks")),
        data: Some(BTreeMap::from([("jwks.json".to_string(), jwks)])),
        ..ConfigMap::default()
    };
    let pp = PostParams::default();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&pp, &secret)
        .await?;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&pp, &map)
        .await?;
    let status = json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "status": {
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KeysReady",
                "message": format!("{alg} key {} signs", key.kid()),
                "lastTransitionTime": Timestamp::from_second(now.as_second())?,
            }],
            "activeKid": key.kid(),
            "keyCount": 1,
        },
    });
    Api::<JwtKeySet>::namespaced(client, &ns)
        .patch_status(
            &name,
            &PatchParams::apply("floor").force(),
            &Patch::Apply(&status),
        )
        .await?;
    Ok(())
}
