use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Every key still held, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
}

/// One key's state and times. Never contains key material.
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
    pub created_at: Time,
    /// When the key was first seen by verifiers (in the JWKS, or for HMAC in the Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Time>,
    /// When the key started signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Time>,
    /// When the key stopped signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Time>,
    /// When a retired key leaves the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}
