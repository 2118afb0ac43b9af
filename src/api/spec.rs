use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::keys::Algorithm;

use super::status::JwtKeySetStatus;

/// Setting this annotation to a new value starts a rotation through the safe path.
pub const ROTATE_ANNOTATION: &str = "jwt.keyrotator.dev/rotate";

/// Go duration strings as `kubectl` and metav1.Duration know them: "90s", "1h30m", "720h".
/// At most 9 digits per number: larger numbers overflow duration arithmetic.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h))+$";
/// A DNS subdomain name (RFC 1123), as Secret and ConfigMap names must be.
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS label (RFC 1123), as namespace names must be.
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A ConfigMap data key.
pub(crate) const CONFIG_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// An http(s) URL with a host, without query, fragment, user info or trailing slash.
pub(crate) const ISSUER_PATTERN: &str =
    r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$";
/// An RFC 7638 SHA-256 thumbprint, base64url without padding.
pub(crate) const KID_PATTERN: &str = r"^[A-Za-z0-9_-]{43}$";

/// The admission message of the signing-lead rule, with the numbers (as `validate()` says it).
const SIGNING_LEAD_MESSAGE: &str = "'publishLead (' + self.publishLead + ') must be at least \
    propagationDelay + verifierCacheTTL (' + self.propagationDelay + ' + ' + \
    self.verifierCacheTTL + '): a key signs only once every verifier can hold it, and a verifier \
    sees the JWKS propagationDelay late and keeps a copy for verifierCacheTTL'";

/// A set of JWT signing keys that the operator generates, rotates and publishes.
///
/// The private key that signs now is kept in a Secret for signing workloads to mount; the
/// public keys every verifier may still meet are published as a JWKS in a ConfigMap.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "jwt.keyrotator.dev",
    version = "v1alpha1",
    kind = "JwtKeySet",
    namespaced,
    shortname = "jwtks",
    status = "JwtKeySetStatus",
    doc = "A set of JWT signing keys, rotated on schedule; see spec for the rules they live by.",
    printcolumn = r#"{"name":"Algorithm","type":"string","jsonPath":".spec.algorithm"}"#,
    printcolumn = r#"{"name":"Active kid","type":"string","jsonPath":".status.activeKid"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keyCount"}"#,
    printcolumn = r#"{"name":"Next rotation","type":"string","jsonPath":".status.nextRotationTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!has(self.keySize) || self.algorithm.startsWith('RS') || self.algorithm.startsWith('PS')")
        .message("keySize is only allowed with RSA algorithms (RS256, RS384, RS512, PS256, PS384, PS512)")
        .field_path(".keySize"),
    validation = Rule::new("duration(self.publishLead) < duration(self.rotationInterval)")
        .message("publishLead must be shorter than rotationInterval: a new key is published publishLead before it must sign")
        .field_path(".publishLead"),
    validation = Rule::new("duration(self.publishLead) >= duration(self.propagationDelay) + duration(self.verifierCacheTTL)")
        .message(Message::Expression(SIGNING_LEAD_MESSAGE.into()))
        .field_path(".publishLead"),
    validation = Rule::new("duration(self.propagationDelay).getSeconds() + duration(self.tokenTTL).getSeconds() + duration(self.clockSkew).getSeconds() <= 16 * duration(self.rotationInterval).getSeconds()")
        .message("propagationDelay + tokenTTL + clockSkew must be at most 16 times rotationInterval: a retired key stays published that long, and a set holds at most 20 keys")
        .field_path(".tokenTTL")
)]
#[serde(rename_all = "camelCase")]
pub struct JwtKeySetSpec {
    /// JWS algorithm of the keys (RFC 7518). RS256 by default: it is the one algorithm every
    /// JWT and OpenID Connect verifier must accept. HS256/384/512 keys are symmetric: they are
    /// never published in a JWKS ConfigMap; verifiers read them from the Secret.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,

    /// RSA modulus size in bits: 2048, 3072 or 4096 (default 2048). Only for RS* and PS*.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "key_size_schema")]
    pub key_size: Option<u32>,

    /// How long a key signs before the next one takes over, as a Go duration ("720h").
    #[serde(default = "default_rotation_interval")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub rotation_interval: String,

    /// The longest lifetime of a token signed with these keys ("1h"). A retired key stays
    /// published until every token it may have signed has expired.
    #[serde(rename = "tokenTTL", default = "default_token_ttl")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub token_ttl: String,

    /// How long a new key is published in the JWKS before it starts signing ("24h"): at least
    /// propagationDelay + verifierCacheTTL, so that every verifier holds it before its first token.
    #[serde(default = "default_publish_lead")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub publish_lead: String,

    /// How long a change to a mounted Secret or ConfigMap may take to reach a pod ("5m").
    /// A pod may go on signing with a retired key for this long.
    #[serde(default = "default_propagation_delay")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub propagation_delay: String,

    /// The longest time a verifier may keep a copy of the JWKS before fetching it again ("10m",
    /// the common library default). A new key signs only after it has been published for
    /// propagationDelay + verifierCacheTTL (publishLead must be at least that), and a revoked key
    /// is refused by every verifier only that long after it left the JWKS.
    #[serde(rename = "verifierCacheTTL", default = "default_verifier_cache_ttl")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub verifier_cache_ttl: String,

    /// Tolerated clock difference between signers and verifiers ("5m").
    #[serde(default = "default_clock_skew")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 64))]
    pub clock_skew: String,

    /// Name of the Secret holding the private keys. Default: `<name>-signing-keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub secret_name: Option<String>,

    /// Where the public JWKS is published (not used by HS* algorithms).
    #[serde(default)]
    pub jwks: JwksSpec,

    /// Key IDs to revoke at once: removed from the Secret and the JWKS immediately; if the
    /// active key is revoked, a new key takes over immediately. Tokens signed with a revoked
    /// key stop verifying.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "kid_list_schema")]
    pub revoked_kids: Vec<String>,

    /// What happens to the Secret and ConfigMap when the JwtKeySet is deleted: Delete (the
    /// default) lets garbage collection remove them; Retain keeps them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Where the public JWKS is published.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksSpec {
    /// Name of the ConfigMap holding the JWKS. Default: `<name>-jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub config_map_name: Option<String>,

    /// The ConfigMap data key holding the JWKS document.
    #[serde(default = "default_jwks_key")]
    #[schemars(pattern(CONFIG_KEY_PATTERN), length(max = 253))]
    pub key: String,

    /// Serve the JWKS over HTTP too, from every operator replica: at
    /// `/jwks/<namespace>/<name>.json`, and with an issuer at `<issuer>/.well-known/jwks.json`
    /// with its OpenID discovery document. `http: {}` serves it without an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<JwksHttpSpec>,

    /// Copies of the JWKS ConfigMap in other namespaces, for verifiers that mount it there
    /// (a gateway's local JWKS, a service in another team's namespace). Copies carry the
    /// public keys only, follow every change of the JWKS in the same write, and leave a
    /// namespace that stops matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<JwksCopiesSpec>,
}

/// Where copies of the JWKS go, and under what name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksCopiesSpec {
    /// Name of the ConfigMap in each namespace. Default: the JWKS ConfigMap's name. A
    /// ConfigMap of that name that the operator did not create is never touched: it is
    /// reported (condition CopiesReady, Event CopyConflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DNS_SUBDOMAIN_PATTERN), length(max = 253))]
    pub config_map_name: Option<String>,

    /// The data key holding the JWKS document in each copy. Default: `jwks.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(CONFIG_KEY_PATTERN), length(max = 253))]
    pub key: Option<String>,

    /// Namespaces to copy into, by name. With an operator watching every namespace, a
    /// namespace receives copies only when labelled `jwt.keyrotator.dev/accept-jwks-copies:
    /// "true"`: a JwtKeySet may not write into a namespace it merely names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "namespace_list_schema")]
    pub namespaces: Vec<String>,

    /// Namespaces to copy into, by label (as trust-manager's `namespaceSelector`), among those
    /// that accept copies (labelled `jwt.keyrotator.dev/accept-jwks-copies: "true"`); `{}`
    /// selects all of them. Only when the operator watches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// How the JWKS is served over HTTP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwksHttpSpec {
    /// The `iss` of the tokens these keys sign, an http(s) URL without query or fragment
    /// ("https://auth.example.com/team-a"). Requests for that host get
    /// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery) naming
    /// `<issuer>/.well-known/jwks.json` as its `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(ISSUER_PATTERN), length(max = 2048))]
    pub issuer: Option<String>,
}

impl Default for JwksSpec {
    fn default() -> Self {
        JwksSpec {
            config_map_name: None,
            key: default_jwks_key(),
            http: None,
            copies: None,
        }
    }
}

/// What happens to the Secret and ConfigMap when the JwtKeySet is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Garbage collection deletes them with the JwtKeySet.
    #[default]
    Delete,
    /// They are kept (without owner references) when the JwtKeySet is deleted.
    Retain,
}

fn default_algorithm() -> Algorithm {
    Algorithm::RS256
}
fn default_rotation_interval() -> String {
    "720h".into()
}
fn default_token_ttl() -> String {
    "1h".into()
}
fn default_publish_lead() -> String {
    "24h".into()
}
fn default_propagation_delay() -> String {
    "5m".into()
}
fn default_verifier_cache_ttl() -> String {
    "10m".into()
}
fn default_clock_skew() -> String {
    "5m".into()
}
fn default_jwks_key() -> String {
    "jwks.json".into()
}

fn key_size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "RSA modulus size in bits: 2048, 3072 or 4096 (default 2048). Only for RS* and PS*.",
        "type": "integer",
        "enum": [2048, 3072, 4096]
    })
}

fn kid_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Key IDs to revoke at once: removed from the Secret and the JWKS immediately; if the active key is revoked, a new key takes over immediately. Tokens signed with a revoked key stop verifying.",
        "type": "array",
        "items": { "type": "string", "pattern": KID_PATTERN },
        "x-kubernetes-list-type": "set"
    })
}

fn namespace_list_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Namespaces to copy into, by name.",
        "type": "array",
        "maxItems": 1000,
        "items": { "type": "string", "pattern": DNS_LABEL_PATTERN, "maxLength": 63 },
        "x-kubernetes-list-type": "set"
    })
}
