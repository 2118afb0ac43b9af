//! The controller's promises, checked from outside while it rotates keys for real.
//!
//! An observer reads the Secret and then the JWKS ConfigMap every 50 ms, as closely as a pod
//! could notice a change, and checks the rules of a key's life at every read. Every fourth read
//! it also signs a token with the Secret's key, as a pod does; every read verifies each token
//! still alive against the JWKS, as a verifier does. Whatever the operator goes through, no
//! token may ever fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
use jwt_key_rotator::api::{JwtKeySet, JwtKeySetStatus};
use jwt_key_rotator::lifecycle::{KeyRecord, KeyState, Manifest};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const NAME: &str = "web";
const SECRET: &str = "web-signing-keys";
const CONFIG_MAP: &str = "web-jwks";
const SAMPLE_PERIOD: Duration = Duration::from_millis(50);
/// A token is signed every this many samples (every ~200 ms).
const SIGN_EVERY: usize = 4;

/// The timing rules of the set under test.
#[derive(Clone, Copy, Debug, Default)]
struct Timing {
    rotation_interval: SignedDuration,
    publish_lead: SignedDuration,
    propagation_delay: SignedDuration,
    token_ttl: SignedDuration,
    clock_skew: SignedDuration,
}

impl Timing {
    fn secs(rotation: i64, lead: i64, propagation: i64, ttl: i64, skew: i64) -> Timing {
        let s = SignedDuration::from_secs;
        let (rotation_interval, publish_lead) = (s(rotation), s(lead));
        let (propagation_delay, token_ttl, clock_skew) = (s(propagation), s(ttl), s(skew));
        Timing {
            rotation_interval,
            publish_lead,
            propagation_delay,
            token_ttl,
            clock_skew,
        }
    }

    /// How long a retired key must stay published (design.md).
    fn retention(&self) -> SignedDuration {
        self.propagation_delay + self.token_ttl + self.clock_skew
    }

    fn spec(&self) -> Value {
        let go = |d: SignedDuration| format!("{}s", d.as_secs());
        json!({
            "algorithm": "ES256",
            "rotationInterval": go(self.rotation_interval),
            "publishLead": go(self.publish_lead),
            "propagationDelay": go(self.propagation_delay),
            "tokenTTL": go(self.token_ttl),
            "clockSkew": go(self.clock_skew),
            // The verifiers of these tests read the mounted JWKS: nothing caches it longer.
            "verifierCacheTTL": "0s",
        })
    }
}

async fn create_set(client: &Client, ns: &str, timing: Timing) {
    let resource = ApiResource::erase::<JwtKeySet>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "jwt.keyrotator.dev/v1alpha1",
        "kind": "JwtKeySet",
        "metadata": { "name": NAME },
        "spec": timing.spec(),
    }))
    .expect("test object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create the JwtKeySet");
}

/// The status, if it says Ready=True (KeysReady) for the current generation.
async fn ready_status(client: &Client, ns: &str) -> Result<JwtKeySetStatus, String> {
    let api: Api<JwtKeySet> = Api::namespaced(client.clone(), ns);
    let set = api
        .get(NAME)
        .await
        .map_err(|e| format!("get JwtKeySet: {e}"))?;
    let status = set.status.clone().ok_or("no status")?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let ready = ready.ok_or("no Ready condition")?;
    let current = status.observed_generation == set.metadata.generation;
    match ready.status == "True" && ready.reason == "KeysReady" && current {
        true => Ok(status),
        false => Err(format!(
            "not ready: {ready:?}, {:?}",
            status.observed_generation
        )),
    }
}

async fn wait_ready(client: &Client, ns: &str, deadline: Duration) {
    let ready = || async { ready_status(client, ns).await.ok() };
    support::eventually("the set to be Ready (KeysReady)", deadline, ready).await;
}

fn data<'a>(secret: &'a Secret, key: &str) -> Result<&'a [u8], String> {
    let bytes = secret.data.as_ref().and_then(|d| d.get(key));
    bytes
        .map(|b| b.0.as_slice())
        .ok_or_else(|| format!("the Secret has no {key}"))
}

/// Every read must succeed: the API server is local and the objects, once Ready, never go away.
async fn read_jwks(api: &Api<ConfigMap>) -> Result<JwkSet, String> {
    let map = api
        .get(CONFIG_MAP)
        .await
        .map_err(|e| format!("get ConfigMap: {e}"))?;
    let text = map.data.as_ref().and_then(|d| d.get("jwks.json"));
    let text = text.ok_or("the ConfigMap has no jwks.json")?;
    serde_json::from_str(text).map_err(|e| format!("jwks.json: {e}"))
}

fn kids(jwks: &JwkSet) -> BTreeSet<String> {
    jwks.keys
        .iter()
        .filter_map(|k| k.common.key_id.clone())
        .collect()
}

fn active_kids(manifest: &Manifest) -> Vec<&str> {
    let active = manifest.keys.iter().filter(|k| k.state == KeyState::Active);
    active.map(|k| k.kid.as_str()).collect()
}

/// One sample. The Secret is read before the ConfigMap: a key is published before it becomes
/// active and stays published after it retires, so a JWKS read *later* must hold the kid the
/// Secret named (the opposite order would race a legitimate activation). Each `(sent, received)`
/// pair brackets the instant the API server read that object.
struct Sample {
    secret_at: (Timestamp, Timestamp),
    jwks_at: (Timestamp, Timestamp),
    kid: String,
    private_pem: Vec<u8>,
    manifest: Manifest,
    jwks: JwkSet,
}

async fn sample(secrets: &Api<Secret>, maps: &Api<ConfigMap>) -> Result<Sample, String> {
    let sent = Timestamp::now();
    let secret = secrets
        .get(SECRET)
        .await
        .map_err(|e| format!("get Secret: {e}"))?;
    let secret_at = (sent, Timestamp::now());
    let sent = Timestamp::now();
    let jwks = read_jwks(maps).await?;
    let jwks_at = (sent, Timestamp::now());
    let manifest =
        Manifest::from_json(data(&secret, "manifest.json")?).map_err(|e| e.to_string())?;
    Ok(Sample {
        secret_at,
        jwks_at,
        kid: String::from_utf8_lossy(data(&secret, "kid")?).into_owned(),
        private_pem: data(&secret, "private.pem")?.to_vec(),
        manifest,
        jwks,
    })
}

/// A token as a pod signs it, with the key the Secret held at `read_at`. That key was active at
/// some instant after `read_at`, so it must stay published at least until `alive_until`.
struct Token {
    jwt: String,
    read_at: Timestamp,
    alive_until: Timestamp,
}

fn sign(s: &Sample, ttl: SignedDuration) -> Result<Token, String> {
    let (kid, read_at) = (&s.kid, s.secret_at.0);
    let key = EncodingKey::from_ec_pem(&s.private_pem).map_err(|e| format!("{kid} PEM: {e}"))?;
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.clone());
    let alive_until = read_at + ttl;
    let claims = json!({ "sub": "t", "iat": read_at.as_second(), "exp": alive_until.as_second() });
    let jwt = encode(&header, &claims, &key).map_err(|e| format!("signing with {kid}: {e}"))?;
    Ok(Token {
        jwt,
        read_at,
        alive_until,
    })
}

/// Verifies as a verifier does: the header's kid picks the key from the JWKS.
fn verify(jwt: &str, jwks: &JwkSet) -> Result<(), String> {
    let kid = decode_header(jwt)
        .map_err(|e| e.to_string())?
        .kid
        .unwrap_or_default();
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS {:?}", kids(jwks)))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK {kid}: {e}"))?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    // Which tokens must verify is decided by `alive_until` (the tokens' lifetime as the test
    // knows it); `exp` itself has one-second resolution and would add scheduling noise.
    validation.validate_exp = false;
    decode::<Value>(jwt, &key, &validation)
        .map(drop)
        .map_err(|e| format!("{kid}: {e}"))
}

/// When an event happened, as far as sampling can tell: after `.0` (request time of the last
/// sample that did not show it; `None` if it predates the first sample) and by `.1` (response
/// time of the first sample that did).
type Window = (Option<Timestamp>, Timestamp);

#[derive(Default)]
struct Checker {
    timing: Timing,
    samples: usize,
    started: Option<Timestamp>,
    violations: Vec<String>,
    signed: usize,
    verifications: usize,
    alive: Vec<Token>,
    /// The last manifest record seen of every kid, kept after the key leaves the manifest.
    records: BTreeMap<String, KeyRecord>,
    published: BTreeMap<String, Window>,
    activated: BTreeMap<String, Window>,
    active_order: Vec<String>,
    /// Kids that left the JWKS, each after its retention (or it is a violation).
    expired: Vec<String>,
    /// Request times of the previous sample's two reads, and the kids its JWKS held.
    previous: Option<(Timestamp, Timestamp, BTreeSet<String>)>,
    /// Per kid, the request time of the last sample whose Secret named it as the active key.
    last_active_read: BTreeMap<String, Timestamp>,
}

impl Checker {
    fn violation(&mut self, message: String) {
        // Each distinct violation once: a persistent one would otherwise repeat every sample.
        if self.violations.len() < 40 && !self.violations.contains(&message) {
            self.violations.push(message);
        }
    }

    /// The instant before which a retired key must stay published.
    fn keep_until(&self, record: &KeyRecord) -> Option<Timestamp> {
        record.retired_at.map(|at| at + self.timing.retention())
    }

    fn observe(&mut self, s: Sample) {
        self.samples += 1;
        self.started.get_or_insert(s.secret_at.0);
        let (seen, kid, jwks) = (s.jwks_at.1, s.kid.as_str(), kids(&s.jwks));
        let active = active_kids(&s.manifest);
        if active != [kid] {
            self.violation(format!(
                "{seen}: Secret kid {kid}, manifest Active {active:?}"
            ));
        }
        if !jwks.contains(kid) {
            self.violation(format!("{seen}: active kid {kid} not in the JWKS {jwks:?}"));
        }
        for k in &s.manifest.keys {
            // Once verifiers may have seen a key, it stays published until its retention ends.
            let may_be_gone = self.keep_until(k).is_some_and(|until| until <= seen);
            let seen_by_verifiers = k.published_at.is_some() || k.state != KeyState::Pending;
            if seen_by_verifiers && !may_be_gone && !jwks.contains(&k.kid) {
                let (state, kid) = (k.state, &k.kid);
                self.violation(format!("{seen}: {state:?} key {kid} not in the JWKS"));
            }
            if let (Some(until), Some(expires)) = (self.keep_until(k), k.expires_at)
                && expires < until
            {
                let kid = &k.kid;
                self.violation(format!("{kid} expiresAt {expires} < retiredAt + retention"));
            }
            // The key is stored in the Secret before it is published (design.md's write order),
            // so it cannot have been published at the instant it was created.
            if let Some(published) = k.published_at
                && published <= k.created_at
            {
                let (kid, created) = (&k.kid, k.created_at);
                self.violation(format!(
                    "{kid}: publishedAt {published} <= createdAt {created}"
                ));
            }
            self.records.insert(k.kid.clone(), k.clone());
        }
        let previous = self.previous.take();
        for kid in previous
            .iter()
            .flat_map(|(_, _, before)| before.difference(&jwks))
        {
            match self.records.get(kid).and_then(|r| self.keep_until(r)) {
                // The read happened by `seen`: if the retention had not ended by then, the key
                // certainly left too early.
                Some(until) if until <= seen => self.expired.push(kid.clone()),
                until => self.violation(format!("{seen}: {kid} left the JWKS; due {until:?}")),
            }
        }
        let lo = |i: usize| previous.as_ref().map(|p| if i == 0 { p.0 } else { p.1 });
        for kid in &jwks {
            self.published.entry(kid.clone()).or_insert((lo(1), seen));
        }
        self.last_active_read.insert(s.kid.clone(), s.secret_at.0);
        if !self.activated.contains_key(&s.kid) {
            self.activated.insert(s.kid.clone(), (lo(0), s.secret_at.1));
            self.active_order.push(s.kid.clone());
        }
        // The signer and the verifiers: a new token now and then, and every live token checked.
        if self.samples % SIGN_EVERY == 1 {
            match sign(&s, self.timing.token_ttl) {
                Ok(token) => {
                    self.signed += 1;
                    self.alive.push(token);
                }
                Err(e) => self.violation(format!("{seen}: cannot sign: {e}")),
            }
        }
        self.alive.retain(|t| t.alive_until > seen);
        for i in 0..self.alive.len() {
            self.verifications += 1;
            if let Err(e) = verify(&self.alive[i].jwt, &s.jwks) {
                let age = seen.duration_since(self.alive[i].read_at).as_millis();
                self.violation(format!("{seen}: a token {age} ms old fails: {e}"));
            }
        }
        self.previous = Some((s.secret_at.0, s.jwks_at.0, jwks));
    }

    /// A key must be published for at least publishLead before it signs. Checked with the
    /// manifest's own timestamps (exact), and with what sampling saw; the latter needs no
    /// tolerance: it fails only when the observed windows prove the lead was too short.
    fn check_leads(&mut self) -> Vec<String> {
        let (lead, mut lines) = (self.timing.publish_lead, Vec::new());
        for (kid, (active_lo, active_hi)) in self.activated.clone() {
            // Activated before the first sample: the bootstrap key, which has nothing to wait for.
            let Some(active_lo) = active_lo else { continue };
            // Never published: already a violation at the sample that saw it active.
            let Some(&(published_lo, published_hi)) = self.published.get(&kid) else {
                continue;
            };
            let record = self.records.get(&kid);
            let Some((p, a)) = record.and_then(|r| Some((r.published_at?, r.activated_at?))) else {
                self.violation(format!(
                    "manifest lacks publishedAt/activatedAt: {record:?}"
                ));
                continue;
            };
            if a.duration_since(p) < lead {
                self.violation(format!("manifest: {kid} published {p}, activated {a}"));
            }
            // The manifest may not claim a publication before a read that found the key absent,
            // nor an activation after a read that found it active.
            if let Some(lo) = published_lo
                && p < lo
            {
                self.violation(format!(
                    "manifest: {kid} publishedAt {p} precedes a read sent at {lo} that did not find it in the JWKS"
                ));
            }
            if a > active_hi {
                let hi = active_hi;
                self.violation(format!(
                    "manifest: {kid} activatedAt {a} follows a read by {hi} that found it active"
                ));
            }
            let manifest = a.duration_since(p).as_millis();
            let Some(published_lo) = published_lo else {
                continue;
            };
            let most = active_hi.duration_since(published_lo).as_millis();
            let least = active_lo.duration_since(published_hi).as_millis();
            if most < lead.as_millis() {
                self.violation(format!(
                    "{kid} became active at most {most} ms after publication"
                ));
            }
            lines.push(format!(
                "{kid}: published->active {manifest} ms (seen: {least}..{most})"
            ));
        }
        // Not asserted, for the record: the last read that still found a key active was sent
        // this long after its retiredAt (positive: retention is counted from before the key
        // actually stopped signing).
        for (kid, read) in &self.last_active_read {
            if let Some(retired) = self.records.get(kid).and_then(|r| r.retired_at) {
                let after = read.duration_since(retired).as_millis();
                lines.push(format!(
                    "{kid}: last read as active {after} ms after retiredAt"
                ));
            }
        }
        lines
    }

    /// For each activation after the first: activatedAt - (previous activatedAt + interval).
    fn lateness(&self) -> Vec<i128> {
        let mut at: Vec<Timestamp> = self
            .records
            .values()
            .filter_map(|r| r.activated_at)
            .collect();
        at.sort();
        let due = |w: &[Timestamp]| w[1].duration_since(w[0] + self.timing.rotation_interval);
        at.windows(2).map(|w| due(w).as_millis()).collect()
    }
}

/// The observer, running until `finish`, with its progress visible to the test.
struct Observer {
    stop: Arc<AtomicBool>,
    active_kids: Arc<AtomicUsize>,
    expired: Arc<AtomicUsize>,
    task: JoinHandle<Checker>,
}

impl Observer {
    fn start(client: &Client, ns: &str, timing: Timing) -> Observer {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let stop = Arc::new(AtomicBool::new(false));
        let (active_kids, expired) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (stopped, counted_kids, counted_expired) =
            (stop.clone(), active_kids.clone(), expired.clone());
        let task = tokio::spawn(async move {
            let mut checker = Checker {
                timing,
                ..Checker::default()
            };
            while !stopped.load(Ordering::Relaxed) {
                match sample(&secrets, &maps).await {
                    Ok(s) => checker.observe(s),
                    Err(e) => checker.violation(format!("{}: {e}", Timestamp::now())),
                }
                counted_kids.store(checker.active_order.len(), Ordering::Relaxed);
                counted_expired.store(checker.expired.len(), Ordering::Relaxed);
                tokio::time::sleep(SAMPLE_PERIOD).await;
            }
            checker
        });
        Observer {
            stop,
            active_kids,
            expired,
            task,
        }
    }

    fn active_kids(&self) -> usize {
        self.active_kids.load(Ordering::Relaxed)
    }

    /// Waits until this many distinct active kids and expired kids were seen; false on timeout.
    async fn reached(&self, active_kids: usize, expired: usize, deadline: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if self.active_kids() >= active_kids && self.expired.load(Ordering::Relaxed) >= expired
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops, prints what was seen (the lead wants the lateness figures), fails on any violation.
    async fn finish(self, label: &str) -> Checker {
        self.stop.store(true, Ordering::Relaxed);
        let mut c = self.task.await.expect("observer task");
        let leads = c.check_leads();
        let span = c
            .started
            .map(|t| Timestamp::now().duration_since(t).as_millis());
        let period = span.unwrap_or(0) / c.samples.max(1) as i128;
        eprintln!(
            "[{label}] {} samples, one per {period} ms on average",
            c.samples
        );
        eprintln!(
            "[{label}] {} tokens signed, {} verifications",
            c.signed, c.verifications
        );
        eprintln!(
            "[{label}] active kids: {:?}; left the JWKS: {:?}",
            c.active_order, c.expired
        );
        leads.iter().for_each(|line| eprintln!("[{label}] {line}"));
        let mut late = c.lateness();
        eprintln!("[{label}] rotation lateness (activatedAt - due), ms, in order: {late:?}");
        late.sort();
        if let (Some(min), Some(max)) = (late.first(), late.last()) {
            let median = late[late.len() / 2];
            eprintln!("[{label}] rotation lateness ms: min {min}, median {median}, max {max}");
        }
        assert!(
            c.violations.is_empty(),
            "{label}: violations: {:#?}",
            c.violations
        );
        assert!(
            c.signed >= 20 && c.verifications > c.signed,
            "{label}: too few tokens"
        );
        c
    }
}

/// With nothing in flight, the manifest and the JWKS agree exactly and one key is active.
async fn assert_settled(client: &Client, ns: &str, deadline: Duration) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let settled = async || -> Result<(), String> {
        let status = ready_status(client, ns).await?;
        let s = sample(&secrets, &maps).await?;
        let again = secrets.get(SECRET).await.map_err(|e| e.to_string())?;
        let again =
            Manifest::from_json(data(&again, "manifest.json")?).map_err(|e| e.to_string())?;
        if again != s.manifest {
            return Err("the Secret changed while reading".into());
        }
        let active = active_kids(&s.manifest);
        if active != [s.kid.as_str()] || status.active_kid.as_deref() != Some(s.kid.as_str()) {
            return Err(format!(
                "kid {}, status {:?}, manifest {active:?}",
                s.kid, status.active_kid
            ));
        }
        let asymmetric = s.manifest.keys.iter().filter(|k| k.public_jwk.is_some());
        let held: BTreeSet<String> = asymmetric.map(|k| k.kid.clone()).collect();
        match held == kids(&s.jwks) {
            true => Ok(()),
            false => Err(format!("manifest keys {held:?}, JWKS {:?}", kids(&s.jwks))),
        }
    };
    let started = Instant::now();
    loop {
        match settled().await {
            Ok(()) => return,
            Err(why) => assert!(
                started.elapsed() < deadline,
                "not settled in {deadline:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator's warnings and errors, for the record.
fn print_log_summary(label: &str, operator: &support::Operator) {
    let log = operator.log_text();
    let notable = |l: &&str| l.contains("WARN") || l.contains("ERROR") || l.contains("panic");
    let notable: Vec<&str> = log.lines().filter(notable).collect();
    eprintln!(
        "[{label}] operator log: {} lines, {} notable",
        log.lines().count(),
        notable.len()
    );
    notable
        .iter()
        .take(15)
        .for_each(|line| eprintln!("[{label}]   {line}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_lifecycle_never_breaks_a_token() {
    let timing = Timing::secs(6, 2, 1, 2, 1);
    let client = support::client().await;
    let ns = support::namespace(&client, "lifecycle").await;
    let operator = support::Operator::start(&ns);
    create_set(&client, &ns, timing).await;
    wait_ready(&client, &ns, Duration::from_secs(60)).await;

    let started = Instant::now();
    let observer = Observer::start(&client, &ns, timing);
    // The bootstrap key and three rotations, and one retired key gone after its retention.
    let reached = observer.reached(4, 1, Duration::from_secs(30)).await;
    eprintln!("[lifecycle] observed for {:?}", started.elapsed());
    let checker = observer.finish("lifecycle").await;
    print_log_summary("lifecycle", &operator);
    assert!(
        reached,
        "not 4 active kids and 1 expired in 30s: {:?}",
        checker.active_order
    );
    assert_settled(&client, &ns, Duration::from_secs(10)).await;
}

/// xorshift64*: enough randomness for kill timing, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let fresh = now.map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        let seed = std::env::var("LIFECYCLE_SEED")
            .ok()
            .and_then(|s| s.parse().ok());
        let seed = seed.unwrap_or(fresh);
        eprintln!("[sigkill] seed {seed} (LIFECYCLE_SEED={seed} replays the kill timing)");
        Rng(seed)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_millis(lo + r % (hi - lo + 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_rotations_loses_nothing() {
    let timing = Timing::secs(4, 1, 0, 2, 0);
    let mut rng = Rng::seeded();
    let client = support::client().await;
    let ns = support::namespace(&client, "sigkill").await;
    let mut operator = support::Operator::start(&ns);
    create_set(&client, &ns, timing).await;
    wait_ready(&client, &ns, Duration::from_secs(60)).await;

    let started = Instant::now();
    let observer = Observer::start(&client, &ns, timing);
    // Kill at random moments until 20 kills have landed across at least three rotations.
    let (mut kills, mut died_alone) = (0, 0);
    let limit = Duration::from_secs(120);
    while (kills < 20 || observer.active_kids() < 4) && started.elapsed() < limit {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        died_alone += usize::from(!operator.is_running());
        operator.restart();
        kills += 1;
    }
    let during = observer.active_kids();
    eprintln!(
        "[sigkill] {kills} kills in {:?}, {during} active kids",
        started.elapsed()
    );
    // Left alone, the last operator must carry on rotating.
    let wait = Duration::from_secs(2 * timing.rotation_interval.as_secs() as u64 + 10);
    let resumed = observer.reached(during + 1, 1, wait).await;
    let checker = observer.finish("sigkill").await;
    print_log_summary("sigkill", &operator);
    assert_eq!(
        died_alone, 0,
        "the operator exited on its own {died_alone} times"
    );
    assert!(
        kills >= 20 && during >= 4,
        "{kills} kills, {during} active kids in {limit:?}"
    );
    assert!(
        resumed,
        "no rotation after the kills stopped: {:?}",
        checker.active_order
    );
    assert_settled(&client, &ns, Duration::from_secs(20)).await;
}
