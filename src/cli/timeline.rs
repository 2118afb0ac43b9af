//! A set's keys on a timeline: when each was published, signs (or will), retires and leaves
//! the JWKS, from the operator's record (status.keys, status.nextRotationTime) and the spec.
//! Times still to come for pending and active keys follow from the spec as it is now.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::api::{JwtKeySet, KeyStatus};

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyTimeline {
    pub kid: String,
    pub state: String,
    pub algorithm: String,
    pub published_at: Option<Timestamp>,
    /// When it started signing, or (pending) when it is due to.
    pub signs_from: Option<Timestamp>,
    /// When it stopped signing, or is due to.
    pub retires_at: Option<Timestamp>,
    /// When it leaves the JWKS: after this no verifier that refreshed accepts it.
    pub expires_at: Option<Timestamp>,
}

/// Every key of the set, oldest first.
pub fn of_set(set: &JwtKeySet) -> Vec<KeyTimeline> {
    let Some(status) = &set.status else {
        return vec![];
    };
    let policy = set.validate().ok().map(|v| v.policy);
    let next_rotation = status.next_rotation_time.as_ref().map(|t| t.0);
    let interval = policy.as_ref().map(|p| p.rotation_interval);
    let retention = |k: &KeyStatus| {
        let now = policy.as_ref().map(|p| p.retention());
        match (now, k.longest_retention) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };
    status
        .keys
        .iter()
        .map(|k| {
            let (signs_from, retires_at) = match k.state.as_str() {
                "Pending" => (next_rotation, add(next_rotation, interval)),
                "Active" => (k.activated_at, next_rotation),
                _ => (k.activated_at, k.retired_at),
            };
            let expires_at = k.expires_at.or_else(|| add(retires_at, retention(k)));
            KeyTimeline {
                kid: k.kid.clone(),
                state: k.state.clone(),
                algorithm: k.algorithm.clone(),
                published_at: k.published_at,
                signs_from,
                retires_at,
                expires_at,
            }
        })
        .collect()
}

fn add(t: Option<Timestamp>, d: Option<SignedDuration>) -> Option<Timestamp> {
    t?.checked_add(d?).ok()
}

/// A time to the second, as people read it: `2026-05-01 10:00:00Z`.
pub fn absolute(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .strftime("%Y-%m-%d %H:%M:%SZ")
        .to_string()
}

/// How far `t` is from `now`, in its two largest units: `in 23h 59m`, `5m 2s ago`, `now`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let seconds = t.as_second() - now.as_second();
    if seconds == 0 {
        return "now".into();
    }
    let mut left = seconds.unsigned_abs();
    let mut parts = vec![];
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if left >= size && parts.len() < 2 {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        } else if !parts.is_empty() {
            break;
        }
    }
    let span = parts.join(" ");
    if seconds > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `2026-05-01 10:00:00Z (in 3h 2m)`, or `-` when unknown.
pub fn when(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => format!("{} ({})", absolute(t), relative(t, now)),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_as_people_say_them() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        assert_eq!(relative(at(0), now), "now");
        assert_eq!(relative(at(5), now), "in 5s");
        assert_eq!(relative(at(-302), now), "5m 2s ago");
        assert_eq!(relative(at(86_400 + 3_600 * 3 + 59), now), "in 1d 3h");
        assert_eq!(relative(at(3_600 + 7), now), "in 1h");
        assert_eq!(absolute(at(0)), "2023-11-14 22:13:20Z");
    }
}
