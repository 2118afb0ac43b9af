use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, PublicJwk};
use crate::lifecycle::{KeyRecord, KeyState, Revocation};

/// What the operator last did with the set, in words a person can act on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtKeySetStatus {
    /// `Ready` tells whether the Secret and JWKS are in place and current, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The kid of the key that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_kid: Option<String>,
    /// When the next key is due to take over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// How many keys are held (pending, active and retired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i32>,
    /// The Secret holding the keys; spec.secretName cannot move once it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The ConfigMap publishing the JWKS; spec.jwks.configMapName cannot move once it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// The ConfigMap data key verifiers mount; spec.jwks.key cannot move once it is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_key: Option<String>,
    /// Every key still held, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    /// The operator's record of the last key transitions and repairs, oldest first (at most
    /// `HISTORY_LIMIT`): it outlives Events, which expire after an hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// Every kid of spec.revokedKids: when it left the published JWKS and when every verifier
    /// refuses it. Revocation cannot beat caches: until `effectiveAt`, a verifier holding an
    /// older copy of the JWKS still accepts tokens signed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revocations: Vec<RevocationStatus>,
    /// The last value of the rotate annotation honoured, so that a manifest emptied or restored
    /// does not rotate a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_request: Option<String>,
}

/// When a revoked key stops being accepted, as far as the operator can know.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// The revoked key ID, as listed in spec.revokedKids.
    pub kid: String,
    /// When the operator knew that no published JWKS (nor, for HMAC keys, the Secret) held it.
    #[schemars(schema_with = "date_time")]
    pub unpublished_at: Timestamp,
    /// unpublishedAt + propagationDelay + verifierCacheTTL: from then on no verifier accepts
    /// it. Until then, one that fetched the JWKS before may (revocation cannot beat caches).
    #[schemars(schema_with = "date_time")]
    pub effective_at: Timestamp,
}

impl From<&Revocation> for RevocationStatus {
    fn from(r: &Revocation) -> Self {
        RevocationStatus {
            kid: r.kid.clone(),
            unpublished_at: r.unpublished_at,
            effective_at: r.effective_at,
        }
    }
}

impl From<&RevocationStatus> for Revocation {
    fn from(r: &RevocationStatus) -> Self {
        Revocation {
            kid: r.kid.clone(),
            unpublished_at: r.unpublished_at,
            effective_at: r.effective_at,
        }
    }
}

/// How many entries `status.history` keeps: the newest win.
pub const HISTORY_LIMIT: usize = 50;

/// One key transition or repair, as the operator recorded it. Never contains key material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When the operator made the change (whole seconds).
    pub time: Time,
    /// What happened, as the Event's reason: KeyCreated, KeyPublished, KeyActivated,
    /// KeyRetired, KeyExpired, KeyRevoked, KeyDiscarded, KeyMaterialLost, KeyRecovered, ...
    pub event: String,
    /// The key it happened to, if it concerns one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Why, in words a person can act on.
    pub message: String,
}

/// One key's state and times: the operator's own record of the keys it created (only it writes
/// the status), weighed against what the Secret and the JWKS say. Never contains private material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// The key ID: the RFC 7638 thumbprint of the public key, as in the JWT header.
    pub kid: String,
    /// Pending (published, not signing yet), Active (signing) or Retired (published only).
    pub state: String,
    /// The JWS algorithm of the key.
    pub algorithm: String,
    /// When the key was generated and stored.
    #[schemars(schema_with = "date_time")]
    pub created_at: Timestamp,
    /// When the key was first seen by verifiers (in the JWKS, or for HMAC in the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub published_at: Option<Timestamp>,
    /// When the key started signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub activated_at: Option<Timestamp>,
    /// When the key stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub retired_at: Option<Timestamp>,
    /// When a retired key leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_time")]
    pub expires_at: Option<Timestamp>,
    /// The RSA modulus size in bits, for RSA keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rsa_bits")]
    pub rsa_bits: Option<u32>,
    /// The public JWK, so that a key stays publishable whatever happens to the Secret and the
    /// ConfigMap (asymmetric keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "public_jwk")]
    pub public_jwk: Option<PublicJwk>,
    /// The longest retention in force while the key signed (ISO 8601 duration): tokens signed
    /// under a longer tokenTTL outlive a later, shorter one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration")]
    pub longest_retention: Option<jiff::SignedDuration>,
}

impl From<&KeyRecord> for KeyStatus {
    fn from(k: &KeyRecord) -> Self {
        KeyStatus {
            kid: k.kid.clone(),
            state: k.state.as_str().into(),
            algorithm: k.alg.as_str().into(),
            created_at: k.created_at,
            published_at: k.published_at,
            activated_at: k.activated_at,
            retired_at: k.retired_at,
            expires_at: k.expires_at,
            rsa_bits: k.rsa_bits,
            public_jwk: k.public_jwk.clone(),
            longest_retention: k.longest_retention,
        }
    }
}

impl KeyStatus {
    /// The record this status entry remembers; `None` when it names an unknown state or
    /// algorithm (then the other evidence decides).
    pub fn to_record(&self) -> Option<KeyRecord> {
        let state = match self.state.as_str() {
            "Pending" => KeyState::Pending,
            "Active" => KeyState::Active,
            "Retired" => KeyState::Retired,
            _ => return None,
        };
        let alg: Algorithm = self.algorithm.parse().ok()?;
        Some(KeyRecord {
            kid: self.kid.clone(),
            alg,
            rsa_bits: self.rsa_bits,
            state,
            created_at: self.created_at,
            published_at: self.published_at,
            activated_at: self.activated_at,
            retired_at: self.retired_at,
            expires_at: self.expires_at,
            public_jwk: self.public_jwk.clone(),
            longest_retention: self.longest_retention,
        })
    }
}

/// Full precision (RFC 3339 with fractions), so the record compares equal to the manifest's.
fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "date-time" })
}

/// A plain integer: API servers know no "uint32" format, and a float `minimum` would make
/// server-side apply see the CRD changed.
fn rsa_bits(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer" })
}

fn duration(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string" })
}

fn public_jwk(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let member = schemars::json_schema!({ "type": "string" });
    schemars::json_schema!({
        "description": "A public JWK (RFC 7517): kty, crv, x, y, n, e, kid, alg, use.",
        "type": "object",
        "properties": {
            "kty": member, "crv": member, "x": member, "y": member, "n": member, "e": member,
            "kid": member, "alg": member, "use": member
        },
        "required": ["kty", "kid", "alg", "use"]
    })
}
