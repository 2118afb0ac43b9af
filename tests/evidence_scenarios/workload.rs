//! A signing workload and its verifiers, as pods are, watching one set while a test edits the
//! set's objects by hand.
//!
//! Every 50 ms the workload reads the Secret and then the JWKS ConfigMap. Every fourth read it
//! signs a token with the Secret's `kid` and `private.pem` (trimmed, as a careful pod reads a
//! file), and a second token with the Secret as it was `propagationDelay` ago (a pod whose
//! mounted volume lags). Every read verifies each live token against the JWKS, choosing the key
//! by the token's kid, as a verifier does.
//!
//! The test's own edits are known by the resourceVersion they left. What the test wrote is not
//! the operator's work, so:
//! - a JWKS the test wrote may fail tokens (counted as `against_edit`, never a violation);
//! - a token signed from a Secret the test wrote (or deleted) must verify once the operator has
//!   written the Secret again, not before: a pod may sign with a restored key before the
//!   operator can publish it;
//! - only what the operator wrote teaches the checker records and activations.
//!
//! Everything else is a violation: a token that fails on a JWKS the operator wrote, a key that
//! leaves the JWKS before its retention ends, a key that signs less than `publishLead` after it
//! was (continuously) published, unless the test declared an emergency.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, decode, encode};
use jwt_key_rotator::lifecycle::{KeyRecord, KeyState, Manifest};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub const SAMPLE_PERIOD: Duration = Duration::from_millis(50);
/// A token is signed (by each signer) every this many samples.
const SIGN_EVERY: usize = 4;
/// Tokens live `tokenTTL`, but at most this long: a shorter token is as valid a use of the keys,
/// and verifying fewer live tokens keeps the checker light on a loaded machine.
const LONGEST_TOKEN: SignedDuration = SignedDuration::from_secs(10);
/// The data key verifiers mount.
pub const JWKS_KEY: &str = "jwks.json";

/// The timing rules of a set under test.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub rotation_interval: SignedDuration,
    pub publish_lead: SignedDuration,
    pub propagation_delay: SignedDuration,
    pub token_ttl: SignedDuration,
    pub clock_skew: SignedDuration,
}

impl Timing {
    pub const fn secs(rotation: i64, lead: i64, propagation: i64, ttl: i64, skew: i64) -> Timing {
        Timing {
            rotation_interval: SignedDuration::from_secs(rotation),
            publish_lead: SignedDuration::from_secs(lead),
            propagation_delay: SignedDuration::from_secs(propagation),
            token_ttl: SignedDuration::from_secs(ttl),
            clock_skew: SignedDuration::from_secs(skew),
        }
    }

    /// How long a retired key must stay published (design.md).
    pub fn retention(&self) -> SignedDuration {
        self.propagation_delay + self.token_ttl + self.clock_skew
    }

    pub fn spec(&self) -> Value {
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

/// What a test's edit left behind, so the checker can tell the test's writes from the
/// operator's.
#[derive(Clone, Debug, Default)]
pub struct Edited {
    pub secret_version: Option<String>,
    pub map_version: Option<String>,
}

impl Edited {
    pub fn secret(version: String) -> Edited {
        Edited {
            secret_version: Some(version),
            ..Edited::default()
        }
    }
    pub fn map(version: String) -> Edited {
        Edited {
            map_version: Some(version),
            ..Edited::default()
        }
    }
    pub fn and(self, other: Edited) -> Edited {
        Edited {
            secret_version: other.secret_version.or(self.secret_version),
            map_version: other.map_version.or(self.map_version),
        }
    }
}

/// The Secret as a signing pod reads it. Holds a private key: never printed.
struct SecretView {
    version: String,
    kid: Option<String>,
    private_pem: Option<Vec<u8>>,
    manifest: Result<Manifest, String>,
}

/// The JWKS as a verifier reads it: each key by kid, with its JSON (to remember verifications).
struct JwksView {
    version: String,
    keys: BTreeMap<String, (Jwk, String)>,
    unreadable: Option<String>,
}

impl JwksView {
    fn kids(&self) -> BTreeSet<String> {
        self.keys.keys().cloned().collect()
    }
}

/// One read of both objects; each pair brackets the instant the API server read the object.
struct Sample {
    secret_at: (Timestamp, Timestamp),
    jwks_at: (Timestamp, Timestamp),
    secret: Option<SecretView>,
    jwks: Option<Arc<JwksView>>,
}

async fn sample(
    secrets: &Api<Secret>,
    maps: &Api<ConfigMap>,
    secret_name: &str,
    map_name: &str,
) -> Result<Sample, String> {
    let sent = Timestamp::now();
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| format!("get Secret: {e}"))?;
    let secret_at = (sent, Timestamp::now());
    let sent = Timestamp::now();
    let map = maps
        .get_opt(map_name)
        .await
        .map_err(|e| format!("get ConfigMap: {e}"))?;
    let jwks_at = (sent, Timestamp::now());
    Ok(Sample {
        secret_at,
        jwks_at,
        secret: secret.map(secret_view),
        jwks: map.map(|m| Arc::new(jwks_view(m))),
    })
}

fn secret_view(secret: Secret) -> SecretView {
    let version = secret.resource_version().unwrap_or_default();
    let data = secret.data.unwrap_or_default();
    let file = |key: &str| data.get(key).map(|b| b.0.clone());
    let kid = file("kid")
        .map(|k| String::from_utf8_lossy(&k).trim().to_string())
        .filter(|k| !k.is_empty());
    let manifest = match file("manifest.json") {
        Some(bytes) => Manifest::from_json(&bytes).map_err(|e| e.to_string()),
        None => Err("no manifest.json".into()),
    };
    SecretView {
        version,
        kid,
        private_pem: file("private.pem"),
        manifest,
    }
}

fn jwks_view(map: ConfigMap) -> JwksView {
    let version = map.resource_version().unwrap_or_default();
    let doc = map.data.unwrap_or_default().remove(JWKS_KEY);
    let parsed = doc
        .ok_or_else(|| format!("no {JWKS_KEY}"))
        .and_then(|d| serde_json::from_str::<JwkSet>(&d).map_err(|e| e.to_string()));
    let (keys, unreadable) = match parsed {
        Ok(set) => (
            set.keys
                .into_iter()
                .filter_map(|k| {
                    let kid = k.common.key_id.clone()?;
                    let text = serde_json::to_string(&k).ok()?;
                    Some((kid, (k, text)))
                })
                .collect(),
            None,
        ),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    JwksView {
        version,
        keys,
        unreadable,
    }
}

fn sign(kid: &str, pem: &[u8], iat: Timestamp, exp: Timestamp) -> Result<String, String> {
    let key = EncodingKey::from_ec_pem(pem).map_err(|e| format!("private.pem of {kid}: {e}"))?;
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let claims = json!({ "sub": "workload", "iat": iat.as_second(), "exp": exp.as_second() });
    encode(&header, &claims, &key).map_err(|e| format!("signing with {kid}: {e}"))
}

fn verify(jwt: &str, jwk: &Jwk) -> Result<(), String> {
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    // Which tokens must verify is decided by `alive_until`; `exp` has one-second resolution.
    validation.validate_exp = false;
    decode::<Value>(jwt, &key, &validation)
        .map(drop)
        .map_err(|e| e.to_string())
}

struct Token {
    id: usize,
    jwt: String,
    kid: String,
    signer: &'static str,
    alive_until: Timestamp,
    /// Signed from a Secret the test wrote (or a lagging copy of one).
    from_edit: bool,
}

/// A kid, its `private.pem`, and whether it came from a Secret the test wrote.
type SigningKey = (String, Vec<u8>, bool);

/// A key that started signing, as sampling saw it.
#[derive(Clone, Debug)]
pub struct Activation {
    pub kid: String,
    /// Request time of the last operator-written Secret that did not name it (None: the first).
    pub after: Option<Timestamp>,
    /// Response time of the first that did.
    pub by: Timestamp,
    /// At most this long after its current continuous publication began (None: unknown).
    pub lead_at_most: Option<SignedDuration>,
    /// Declared by the test as an emergency (no lead expected).
    pub unled: bool,
}

/// What the workload saw, for the test's assertions. No key material.
#[derive(Default)]
pub struct Checker {
    timing: Timing,
    token_life: SignedDuration,
    edited_secrets: BTreeSet<String>,
    edited_maps: BTreeSet<String>,
    revoked: BTreeSet<String>,
    foreign: BTreeSet<String>,
    unled_allowed: usize,
    pub samples: usize,
    pub signed: usize,
    pub verifications: usize,
    /// Failures on a JWKS the test wrote: the test's doing, not the operator's.
    pub against_edit: usize,
    /// Verifications put off because the token came from a Secret the test wrote and the
    /// operator had not written the Secret since.
    pub deferred: usize,
    pub unsignable: usize,
    /// Samples that read a Secret (or its absence) and a JWKS the test left behind.
    pub saw_edited_secret: usize,
    pub saw_edited_jwks: usize,
    pub read_errors: Vec<String>,
    /// (what, first seen, how many times).
    violations: Vec<(String, String, usize)>,
    tokens: Vec<Token>,
    next_token: usize,
    verified: HashSet<(usize, String)>,
    /// The last record of each kid in a manifest the operator wrote.
    pub records: BTreeMap<String, KeyRecord>,
    pub manifest: Option<Manifest>,
    /// Per published kid, the window in which its current continuous publication began.
    runs: BTreeMap<String, (Option<Timestamp>, Timestamp)>,
    /// Pending keys a JWKS the test wrote left out, until they are published again: the
    /// operator's first JWKS write after the edit keeps them out until the Secret records
    /// them unpublished (they then wait a full lead), so the two disagree for a write.
    left_out_by_edit: BTreeSet<String>,
    /// The test wrote a JWKS that no sample has seen yet: the operator may have rewritten it
    /// before any did, and its rewrite leaves out what the edit left out (as above).
    map_edit_unseen: bool,
    previous_jwks_sent: Option<Timestamp>,
    /// The kids of the last JWKS the operator wrote, and when it was read (request time).
    pub operator_published: Option<BTreeSet<String>>,
    pub operator_jwks_read: Option<Timestamp>,
    /// Every kid an operator-written JWKS held.
    pub ever_published: BTreeSet<String>,
    pub signing: Option<String>,
    /// When the last Secret the operator wrote was read (request time).
    pub operator_secret_read: Option<Timestamp>,
    pub activations: Vec<Activation>,
    /// Kids that left an operator-written JWKS, each after its retention, and when.
    pub expired: Vec<(String, Timestamp)>,
    /// Kids that signed tokens, by signer.
    pub signed_with: BTreeSet<(&'static str, String)>,
    /// The Secret as read, for the lagging signer: (request time, kid, PEM, from an edit).
    history: VecDeque<(Timestamp, Option<SigningKey>)>,
    /// The JWKS as read, for the caching verifier: (request time, document, by the test).
    cached: VecDeque<(Timestamp, Arc<JwksView>, bool)>,
    /// Fresh tokens checked by a verifier whose JWKS is `propagationDelay` old, and of those
    /// the ones that failed because the test declared an emergency (a key that signs at once).
    pub cached_verifications: usize,
    pub cached_failed_in_emergency: usize,
}

impl Checker {
    /// Records a violation: `what` names it (no times: a persistent violation repeats every
    /// sample and is counted), `detail` says when and how it was first seen.
    fn violation(&mut self, what: String, detail: String) {
        match self.violations.iter_mut().find(|v| v.0 == what) {
            Some(v) => v.2 += 1,
            None => self.violations.push((what, detail, 1)),
        }
    }

    fn keep_until(&self, kid: &str) -> Option<Timestamp> {
        let record = self.records.get(kid)?;
        record.retired_at.map(|at| at + self.timing.retention())
    }

    fn edited(&mut self, edited: Edited) {
        self.edited_secrets.extend(edited.secret_version);
        self.map_edit_unseen |= edited.map_version.is_some();
        self.edited_maps.extend(edited.map_version);
    }

    fn observe(&mut self, s: Sample) {
        self.samples += 1;
        // An absent Secret is the test's doing: the operator never deletes it.
        let secret_by_test = s
            .secret
            .as_ref()
            .is_none_or(|v| self.edited_secrets.contains(&v.version));
        let map_by_test = s
            .jwks
            .as_ref()
            .is_some_and(|j| self.edited_maps.contains(&j.version));
        self.saw_edited_secret += usize::from(secret_by_test);
        self.saw_edited_jwks += usize::from(map_by_test);
        if let Some(jwks) = &s.jwks {
            self.publication(jwks, map_by_test, &s);
            self.cache(jwks.clone(), map_by_test, s.jwks_at.0);
            let runs = &self.runs;
            self.left_out_by_edit.retain(|kid| !runs.contains_key(kid));
            let edit_unseen = std::mem::take(&mut self.map_edit_unseen);
            if map_by_test || edit_unseen {
                let pending = self
                    .records
                    .values()
                    .filter(|r| r.state == KeyState::Pending);
                let left_out = pending.filter(|r| !runs.contains_key(&r.kid));
                let left_out: Vec<String> = left_out.map(|r| r.kid.clone()).collect();
                self.left_out_by_edit.extend(left_out);
            }
        } else {
            let what = "the JWKS ConfigMap is missing".to_string();
            self.violation(what, format!("read by {}", s.jwks_at.1));
        }
        if let Some(secret) = s.secret.as_ref().filter(|_| !secret_by_test) {
            self.operator_secret(secret, &s, map_by_test);
        }
        if self.samples % SIGN_EVERY == 1 {
            self.sign(&s, secret_by_test);
        }
        self.verify_all(&s, secret_by_test, map_by_test);
        self.previous_jwks_sent = Some(s.jwks_at.0);
    }

    /// What verifiers hold now, and whether the operator dropped a key too early.
    fn publication(&mut self, jwks: &JwksView, by_test: bool, s: &Sample) {
        let seen = s.jwks_at.1;
        let kids = jwks.kids();
        for kid in &kids {
            let since = (self.previous_jwks_sent, seen);
            self.runs.entry(kid.clone()).or_insert(since);
        }
        self.runs.retain(|kid, _| kids.contains(kid));
        if by_test {
            return;
        }
        if let Some(e) = &jwks.unreadable {
            self.violation(
                "the operator's JWKS is unreadable".into(),
                format!("{seen}: {e}"),
            );
        }
        for kid in kids.intersection(&self.foreign.clone()) {
            let what = format!("foreign key {kid} published by the operator");
            self.violation(what, format!("read by {seen}"));
        }
        let previous = self.operator_published.replace(kids.clone());
        self.operator_jwks_read = Some(s.jwks_at.0);
        for kid in previous.iter().flat_map(|p| p.difference(&kids)) {
            // Revoked on purpose, or never signed (a pending key whose material was lost): no
            // token can need it.
            let signed = self.signed_with.iter().any(|(_, k)| k == kid)
                || self.activations.iter().any(|a| &a.kid == kid);
            if self.revoked.contains(kid) || !signed {
                continue;
            }
            match self.keep_until(kid) {
                // Read by `seen`: if the retention had not ended then, the key left too early.
                Some(until) if until <= seen => self.expired.push((kid.clone(), seen)),
                until => self.violation(
                    format!("{kid} left the JWKS before its retention ended"),
                    format!("gone by {seen}; retention ends {until:?} (None: never retired)"),
                ),
            }
        }
        self.ever_published.extend(kids);
    }

    /// A Secret the operator wrote: its manifest and who signs.
    fn operator_secret(&mut self, secret: &SecretView, s: &Sample, map_by_test: bool) {
        let seen = s.secret_at.1;
        let (Some(kid), Some(_)) = (&secret.kid, &secret.private_pem) else {
            let what = "the operator's Secret lacks kid or private.pem".to_string();
            self.violation(what, format!("read by {seen}"));
            return;
        };
        match &secret.manifest {
            Ok(m) => {
                let active: Vec<&str> = m
                    .keys
                    .iter()
                    .filter(|k| k.state == KeyState::Active)
                    .map(|k| k.kid.as_str())
                    .collect();
                if active != [kid.as_str()] {
                    self.violation(
                        "the Secret's kid is not the manifest's one active key".into(),
                        format!("{seen}: kid {kid}, manifest Active {active:?}"),
                    );
                }
                for k in &m.keys {
                    self.records.insert(k.kid.clone(), k.clone());
                }
                if !map_by_test {
                    self.manifest_published(m, s);
                }
                self.manifest = Some(m.clone());
            }
            Err(e) => self.violation(
                "the operator's manifest is unreadable".into(),
                format!("{seen}: {e}"),
            ),
        }
        if self.signing.as_ref() != Some(kid) {
            self.activation(kid.clone(), s, map_by_test);
        }
        self.signing = Some(kid.clone());
        self.operator_secret_read = Some(s.secret_at.0);
    }

    /// Every key of the manifest verifiers may have seen stays in the JWKS read after it.
    fn manifest_published(&mut self, m: &Manifest, s: &Sample) {
        let seen = s.jwks_at.1;
        let kids = self.runs.keys().cloned().collect::<BTreeSet<_>>();
        for k in &m.keys {
            // A revoked key may leave between the Secret's read and the JWKS's: the operator
            // writes both in that window, and a revocation owes verifiers nothing.
            if self.revoked.contains(&k.kid) {
                continue;
            }
            let may_be_gone = self.keep_until(&k.kid).is_some_and(|until| until <= seen);
            let seen_by_verifiers = k.published_at.is_some() || k.state != KeyState::Pending;
            if k.state == KeyState::Pending && self.left_out_by_edit.contains(&k.kid) {
                continue;
            }
            if seen_by_verifiers && !may_be_gone && !kids.contains(&k.kid) {
                let (state, kid) = (k.state, &k.kid);
                let what = format!("{state:?} key {kid} of the manifest not in the JWKS");
                self.violation(what, format!("read by {seen}"));
            }
        }
    }

    fn activation(&mut self, kid: String, s: &Sample, map_by_test: bool) {
        let by = s.secret_at.1;
        let after = self.operator_secret_read;
        let run = self.runs.get(&kid).copied();
        if run.is_none() && !map_by_test {
            let what = format!("active kid {kid} is not in the JWKS");
            self.violation(what, format!("read by {by}"));
        }
        let lead_at_most = run.and_then(|(lo, _)| Some(by.duration_since(lo?)));
        let short = lead_at_most.is_some_and(|most| most < self.timing.publish_lead);
        let mut unled = false;
        if after.is_some() && short {
            if self.unled_allowed > 0 {
                self.unled_allowed -= 1;
                unled = true;
            } else {
                let most = lead_at_most.map(|d| d.as_millis());
                self.violation(
                    format!("{kid} signed less than publishLead after its publication"),
                    format!("seen signing by {by}, at most {most:?} ms after"),
                );
            }
        }
        self.activations.push(Activation {
            kid,
            after,
            by,
            lead_at_most,
            unled,
        });
    }

    /// Keeps the JWKS read since `propagationDelay` (and a second) ago.
    fn cache(&mut self, jwks: Arc<JwksView>, by_test: bool, read_at: Timestamp) {
        self.cached.push_back((read_at, jwks, by_test));
        let keep = self.timing.propagation_delay + SignedDuration::from_secs(1);
        while self.cached.len() > 1 && self.cached[1].0 <= read_at - keep {
            self.cached.pop_front();
        }
    }

    /// A verifier that fetched the JWKS `propagationDelay` before the token was signed (the
    /// first read sent after that instant: never older than such a verifier's copy).
    fn cached_verify(&mut self, kid: &str, jwt: &str, signed_at: Timestamp) {
        let delay = self.timing.propagation_delay;
        let since = signed_at - delay;
        let found = self.cached.iter().find(|(at, _, _)| *at >= since);
        let Some((read_at, jwks, by_test)) = found.cloned() else {
            return;
        };
        if delay.is_zero() || read_at >= signed_at {
            return;
        }
        self.cached_verifications += 1;
        let result = match jwks.keys.get(kid) {
            None => Err(format!("kid {kid} not in the JWKS {:?}", jwks.kids())),
            Some((jwk, _)) => verify(jwt, jwk),
        };
        let Err(e) = result else { return };
        let emergency = self.activations.iter().any(|a| a.kid == kid && a.unled);
        if by_test {
            self.against_edit += 1;
        } else if emergency {
            self.cached_failed_in_emergency += 1;
        } else {
            let ms = delay.as_millis();
            self.violation(
                format!("tokens of {kid} fail at a verifier whose JWKS is {ms} ms old"),
                format!("signed at {signed_at}, JWKS read at {read_at}: {e}"),
            );
        }
    }

    /// The fresh signer signs with the Secret just read; the lagging one with the Secret as it
    /// was `propagationDelay` ago.
    fn sign(&mut self, s: &Sample, secret_by_test: bool) {
        let now = s.secret_at.0;
        let key = s.secret.as_ref().and_then(|v| {
            let (kid, pem) = (v.kid.clone()?, v.private_pem.clone()?);
            Some((kid, pem, secret_by_test))
        });
        match &key {
            Some((kid, pem, from_edit)) => {
                let until = now + self.token_life;
                let jwt = self.sign_one("fresh", kid, pem, now, until, *from_edit);
                // Tokens signed with a key a test put back are not the operator's doing.
                if let Some(jwt) = jwt.filter(|_| !from_edit) {
                    self.cached_verify(kid, &jwt, now);
                }
            }
            None => self.unsignable += 1,
        }
        let delay = self.timing.propagation_delay;
        if delay.is_zero() {
            return;
        }
        self.history.push_back((now, key));
        let due = now - delay;
        while self.history.len() > 1 && self.history[1].0 <= due {
            self.history.pop_front();
        }
        if let Some((read_at, Some((kid, pem, from_edit)))) = self.history.front().cloned()
            && read_at <= due
        {
            // As if signed `delay` after the read: the pod's view is that late at most.
            let until = read_at + delay + self.token_life;
            self.sign_one("lagging", &kid, &pem, now, until, from_edit);
        }
    }

    fn sign_one(
        &mut self,
        signer: &'static str,
        kid: &str,
        pem: &[u8],
        iat: Timestamp,
        alive_until: Timestamp,
        from_edit: bool,
    ) -> Option<String> {
        match sign(kid, pem, iat, alive_until) {
            Ok(jwt) => {
                self.signed += 1;
                self.next_token += 1;
                self.signed_with.insert((signer, kid.to_string()));
                self.tokens.push(Token {
                    id: self.next_token,
                    jwt: jwt.clone(),
                    kid: kid.to_string(),
                    signer,
                    alive_until,
                    from_edit,
                });
                Some(jwt)
            }
            // A Secret the test edited may hold what no pod can sign with.
            Err(_) if from_edit => {
                self.unsignable += 1;
                None
            }
            Err(e) => {
                self.violation(
                    "the operator's Secret cannot sign".into(),
                    format!("{iat}: {e}"),
                );
                None
            }
        }
    }

    fn verify_all(&mut self, s: &Sample, secret_by_test: bool, map_by_test: bool) {
        let seen = s.jwks_at.1;
        let revoked = self.revoked.clone();
        self.tokens
            .retain(|t| t.alive_until > seen && !revoked.contains(&t.kid));
        let Some(jwks) = &s.jwks else { return };
        let mut failures = Vec::new();
        for t in &self.tokens {
            if t.from_edit && secret_by_test {
                self.deferred += 1;
                continue;
            }
            self.verifications += 1;
            let result = match jwks.keys.get(&t.kid) {
                None => Err(format!("kid {} not in the JWKS {:?}", t.kid, jwks.kids())),
                Some((_, text)) if self.verified.contains(&(t.id, text.clone())) => Ok(()),
                Some((jwk, text)) => verify(&t.jwt, jwk).map(|()| {
                    self.verified.insert((t.id, text.clone()));
                }),
            };
            if let Err(e) = result {
                failures.push((t.signer, t.kid.clone(), t.alive_until, e));
            }
        }
        for (signer, kid, until, e) in failures {
            if map_by_test {
                self.against_edit += 1;
            } else {
                self.violation(
                    format!("{signer} tokens of {kid} fail on the operator's JWKS"),
                    format!("read by {seen}, a token alive until {until}: {e}"),
                );
            }
        }
    }
}

/// The workload, sampling until `finish`. Edits go through it, so that the checker knows them.
pub struct Workload {
    label: String,
    checker: Arc<Mutex<Checker>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Workload {
    pub fn start(client: &Client, ns: &str, set: &str, timing: Timing, label: &str) -> Workload {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let (secret_name, map_name) = (format!("{set}-signing-keys"), format!("{set}-jwks"));
        let checker = Arc::new(Mutex::new(Checker {
            timing,
            token_life: timing.token_ttl.min(LONGEST_TOKEN),
            ..Checker::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (checker.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                {
                    // Held while reading: an edit never lands between the two reads.
                    let mut c = shared.lock().await;
                    match sample(&secrets, &maps, &secret_name, &map_name).await {
                        Ok(s) => c.observe(s),
                        Err(e) => c.read_errors.push(format!("{}: {e}", Timestamp::now())),
                    }
                }
                tokio::time::sleep(SAMPLE_PERIOD).await;
            }
        });
        Workload {
            label: label.to_string(),
            checker,
            stop,
            task,
        }
    }

    /// Runs the test's edit between two samples; returns when it was sent.
    pub async fn edit(&self, what: &str, edit: impl Future<Output = Edited>) -> Timestamp {
        let mut c = self.checker.lock().await;
        let at = Timestamp::now();
        let edited = edit.await;
        c.edited(edited);
        eprintln!("[{}] {at}: edit: {what}", self.label);
        at
    }

    /// The test revokes `kid`: it may leave the JWKS at once; its tokens stop counting.
    pub async fn revoke(&self, kid: &str) {
        self.checker.lock().await.revoked.insert(kid.to_string());
    }

    /// The next activation may skip the lead (the test makes the active key unusable).
    pub async fn allow_emergency(&self) {
        self.checker.lock().await.unled_allowed += 1;
    }

    /// A key the operator must never publish.
    pub async fn foreign(&self, kid: &str) {
        self.checker.lock().await.foreign.insert(kid.to_string());
    }

    pub async fn with<R>(&self, f: impl FnOnce(&Checker) -> R) -> R {
        f(&*self.checker.lock().await)
    }

    /// Waits until `check` holds of what the workload saw, failing after `deadline`.
    pub async fn until<T>(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&Checker) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = self.with(&check).await {
                return v;
            }
            assert!(
                started.elapsed() < deadline,
                "[{}] timed out after {deadline:?} waiting for {what}",
                self.label
            );
            tokio::time::sleep(SAMPLE_PERIOD).await;
        }
    }

    /// Waits until the workload has read the objects `n` more times (tokens signed before are
    /// verified against what follows).
    pub async fn observe(&self, n: usize) {
        let from = self.with(|c| c.samples).await;
        let what = format!("{n} more samples");
        let deadline = SAMPLE_PERIOD * (n as u32) * 20;
        self.until(&what, deadline, |c| (c.samples >= from + n).then_some(()))
            .await;
    }

    /// Stops, prints what was seen, and fails on any violation.
    pub async fn finish(self) -> Checker {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the workload's task");
        let c = Arc::try_unwrap(self.checker)
            .ok()
            .expect("the only reference")
            .into_inner();
        let label = &self.label;
        eprintln!(
            "[{label}] {} samples ({} read the test's Secret or its absence, {} the test's JWKS); \
             {} tokens signed, {} verifications + {} by a verifier with a {} ms old JWKS, 0 \
             allowed to fail; {} failed at the cached verifier after a declared emergency; {} \
             failed on JWKS the test wrote, {} put off until the operator rewrote a Secret the \
             test wrote, {} samples with nothing to sign",
            c.samples,
            c.saw_edited_secret,
            c.saw_edited_jwks,
            c.signed,
            c.verifications,
            c.cached_verifications,
            c.timing.propagation_delay.as_millis(),
            c.cached_failed_in_emergency,
            c.against_edit,
            c.deferred,
            c.unsignable
        );
        for a in &c.activations {
            let lead = a.lead_at_most.map(|d| d.as_millis());
            eprintln!(
                "[{label}] activation {} seen by {} (lead at most {lead:?} ms{})",
                a.kid,
                a.by,
                if a.unled { ", emergency" } else { "" }
            );
        }
        eprintln!(
            "[{label}] left the JWKS after their retention: {:?}",
            c.expired
        );
        if !c.read_errors.is_empty() {
            eprintln!("[{label}] read errors (not counted): {:?}", c.read_errors);
        }
        let violations: Vec<String> = c
            .violations
            .iter()
            .map(|(what, first, n)| format!("{what} ({n}x; first: {first})"))
            .collect();
        assert!(
            violations.is_empty(),
            "[{label}] violations: {violations:#?}"
        );
        assert!(c.signed >= 10, "[{label}] too few tokens: {}", c.signed);
        c
    }
}

/// The checker is every scenario's main assertion: these feed it what a broken operator would
/// leave and check that it objects, and that it does not blame the operator for the test's edits.
mod checker_self_test {
    use super::*;
    use jwt_key_rotator::keys::{Algorithm, KeyMaterial, generate};

    const T: Timing = Timing::secs(3600, 2, 0, 3, 0);

    fn key() -> KeyMaterial {
        generate(Algorithm::ES256, None).expect("a key")
    }

    fn record(k: &KeyMaterial, state: KeyState, published: Timestamp) -> Value {
        json!({"kid": k.kid(), "alg": "ES256", "state": state.as_str(),
               "createdAt": published, "publishedAt": published,
               "activatedAt": (state == KeyState::Active).then_some(published)})
    }

    fn secret(version: &str, active: &KeyMaterial, records: Vec<Value>) -> SecretView {
        let manifest = json!({"version": 1, "keys": records}).to_string();
        SecretView {
            version: version.into(),
            kid: Some(active.kid().to_string()),
            private_pem: active.private_pem().map(|p| p.as_bytes().to_vec()),
            manifest: Manifest::from_json(manifest.as_bytes()).map_err(|e| e.to_string()),
        }
    }

    fn jwks(version: &str, keys: &[&KeyMaterial]) -> Arc<JwksView> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| serde_json::to_value(k.public_jwk().expect("public")).expect("JSON"))
            .collect();
        let mut map = ConfigMap::default();
        map.metadata.resource_version = Some(version.into());
        let doc = json!({ "keys": keys }).to_string();
        map.data = Some([(JWKS_KEY.to_string(), doc)].into());
        Arc::new(jwks_view(map))
    }

    fn at(s: &mut Checker, secret: SecretView, jwks: Arc<JwksView>, now: Timestamp) {
        s.observe(Sample {
            secret_at: (now, now),
            jwks_at: (now, now),
            secret: Some(secret),
            jwks: Some(jwks),
        });
    }

    fn checker() -> Checker {
        Checker {
            timing: T,
            token_life: T.token_ttl,
            ..Checker::default()
        }
    }

    fn violations(c: &Checker) -> Vec<String> {
        c.violations.iter().map(|v| v.0.clone()).collect()
    }

    #[test]
    fn a_key_dropped_while_its_tokens_live_is_a_violation() {
        let (a, now) = (key(), Timestamp::now());
        let mut c = checker();
        let records = || vec![record(&a, KeyState::Active, now)];
        at(&mut c, secret("s1", &a, records()), jwks("m1", &[&a]), now);
        assert!(
            c.signed >= 1 && violations(&c).is_empty(),
            "{:?}",
            violations(&c)
        );
        let later = now + SignedDuration::from_millis(50);
        at(&mut c, secret("s1", &a, records()), jwks("m2", &[]), later);
        let v = violations(&c);
        assert!(
            v.iter().any(|v| v.contains("fail on the operator's JWKS")),
            "{v:?}"
        );
    }

    #[test]
    fn the_same_on_a_jwks_the_test_wrote_is_the_test_s_doing() {
        let (a, now) = (key(), Timestamp::now());
        let mut c = checker();
        let records = || vec![record(&a, KeyState::Active, now)];
        at(&mut c, secret("s1", &a, records()), jwks("m1", &[&a]), now);
        c.edited(Edited::map("m2".into()));
        let later = now + SignedDuration::from_millis(50);
        at(&mut c, secret("s1", &a, records()), jwks("m2", &[]), later);
        assert!(violations(&c).is_empty(), "{:?}", violations(&c));
        assert!(c.against_edit >= 1);
    }

    #[test]
    fn a_key_that_signs_before_its_lead_is_a_violation() {
        let (a, b, now) = (key(), key(), Timestamp::now());
        let mut c = checker();
        let records = vec![record(&a, KeyState::Active, now)];
        at(&mut c, secret("s1", &a, records), jwks("m1", &[&a]), now);
        // B published and signing in the same instant: 50 ms of lead where 2 s are owed.
        let later = now + SignedDuration::from_millis(50);
        let records = vec![
            record(&a, KeyState::Retired, now),
            record(&b, KeyState::Active, later),
        ];
        at(
            &mut c,
            secret("s2", &b, records),
            jwks("m2", &[&a, &b]),
            later,
        );
        let v = violations(&c);
        assert!(
            v.iter().any(|v| v.contains("less than publishLead")),
            "{v:?}"
        );
    }

    #[test]
    fn a_foreign_key_the_operator_publishes_is_a_violation() {
        let (a, f, now) = (key(), key(), Timestamp::now());
        let mut c = checker();
        c.foreign.insert(f.kid().to_string());
        let records = vec![record(&a, KeyState::Active, now)];
        at(
            &mut c,
            secret("s1", &a, records),
            jwks("m1", &[&a, &f]),
            now,
        );
        let v = violations(&c);
        assert!(v.iter().any(|v| v.contains("foreign key")), "{v:?}");
    }
}
