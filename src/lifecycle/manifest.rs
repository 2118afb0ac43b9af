use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::keys::{Algorithm, PublicJwk, RsaKeySize};

use super::policy::Policy;

pub const MANIFEST_VERSION: u32 = 1;

/// Where a key is in its life; ordered as a key moves through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyState {
    /// Private part stored, public part published, not signing yet.
    Pending,
    /// The one key that signs.
    Active,
    /// Private part deleted (asymmetric keys), public part still published.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Pending => "Pending",
            KeyState::Active => "Active",
            KeyState::Retired => "Retired",
        }
    }
}

/// One key as the durable record knows it. Holds no private material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub kid: String,
    pub alg: Algorithm,
    /// RSA modulus size in bits, for RSA keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_bits: Option<u32>,
    pub state: KeyState,
    pub created_at: Timestamp,
    /// When the key was first seen in the document verifiers read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    /// Retention fixed when the retirement was confirmed (see `confirm_retired`); a later,
    /// longer retention extends it, never shortens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The public JWK; `None` for symmetric keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<PublicJwk>,
    /// The longest retention in force while the key signed: a token signed under a longer
    /// tokenTTL outlives a later, shorter one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_retention: Option<SignedDuration>,
}

impl KeyRecord {
    /// Whether this key is of the kind the policy asks for (algorithm and RSA size).
    pub fn matches(&self, policy: &Policy) -> bool {
        self.alg == policy.algorithm && self.rsa_bits == policy.rsa_size.map(|s| s.bits() as u32)
    }

    pub fn rsa_size(&self) -> Option<RsaKeySize> {
        self.rsa_bits.and_then(RsaKeySize::from_bits)
    }

    /// When a retired key may leave the JWKS under `policy`: never earlier than the expiry fixed
    /// at retirement, nor than `retiredAt + retention` under the current policy.
    pub fn expiry(&self, policy: &Policy) -> Option<Timestamp> {
        let retired_at = self.retired_at?;
        let now_rule = add(retired_at, self.retention(policy));
        Some(
            self.expires_at
                .map_or(now_rule, |fixed| fixed.max(now_rule)),
        )
    }

    /// How long the key stays published after it stops signing: the policy's retention, or the
    /// longest one in force while it signed.
    pub fn retention(&self, policy: &Policy) -> SignedDuration {
        policy
            .retention()
            .max(self.longest_retention.unwrap_or(SignedDuration::ZERO))
    }

    /// Whether the Secret still holds this key's private part. Retired asymmetric keys lose it;
    /// retired symmetric keys keep it, since verifiers need the secret to check old tokens.
    pub fn keeps_private_material(&self) -> bool {
        self.state != KeyState::Retired || self.alg.is_symmetric()
    }
}

/// The durable record of a set's keys, stored as `manifest.json` in the Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub version: u32,
    /// Oldest first.
    pub keys: Vec<KeyRecord>,
    /// The last rotate-annotation value honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_request: Option<String>,
    /// A manual rotation in progress: the active key is due at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_rotation_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest.json is not valid JSON for manifest version {MANIFEST_VERSION}: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest.json has version {0}; this operator understands version {MANIFEST_VERSION}")]
    Version(u32),
}

impl Manifest {
    pub fn empty() -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            ..Manifest::default()
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes)?;
        if manifest.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(manifest.version));
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        // Plain data: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn active(&self) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.state == KeyState::Active)
    }

    pub fn get(&self, kid: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Public JWKs of every asymmetric key held, oldest first: what verifiers must see.
    pub fn public_jwks(&self) -> crate::keys::Jwks {
        crate::keys::Jwks {
            keys: self
                .keys
                .iter()
                .filter_map(|k| k.public_jwk.clone())
                .collect(),
        }
    }
}

impl Manifest {
    /// A retirement takes effect when the Secret stops naming the key as active: when the write
    /// that retired it was acknowledged, a little after it was planned. Counting the retention
    /// from then keeps the key published for its full retention; until then `expires_at` stays
    /// unset, and a retirement never confirmed (the process died) counts from the next read.
    /// Returns whether anything moved.
    pub fn confirm_retired(
        &mut self,
        kids: &std::collections::BTreeSet<String>,
        written_at: Timestamp,
        policy: &Policy,
    ) -> bool {
        let mut changed = false;
        for k in self.keys.iter_mut() {
            if k.state != KeyState::Retired || !kids.contains(&k.kid) {
                continue;
            }
            let at = k.retired_at.map_or(written_at, |r| r.max(written_at));
            let expires = add(at, k.retention(policy));
            let expires_at = Some(k.expires_at.map_or(expires, |e| e.max(expires)));
            if k.retired_at != Some(at) || k.expires_at != expires_at {
                k.retired_at = Some(at);
                k.expires_at = expires_at;
                changed = true;
            }
        }
        changed
    }
}

/// `t + d`, saturating instead of overflowing on absurd clocks.
pub(crate) fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}
