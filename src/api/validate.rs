use std::collections::BTreeSet;
use std::str::FromStr;

use jiff::SignedDuration;
use kube::ResourceExt;
use kube::core::Selector;

use crate::keys::RsaKeySize;
use crate::lifecycle::{MAX_KEYS, MAX_RETENTION_INTERVALS, Policy};

use super::spec::{DeletionPolicy, JwtKeySet, ROTATE_ANNOTATION};

/// Durations above this are refused: nobody means a century, and time arithmetic stays exact.
const MAX_DURATION: SignedDuration = SignedDuration::from_hours(24 * 365 * 10);

/// A spec the controller refuses, naming the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSpec {
    /// The JSON path of the offending field, e.g. `spec.publishLead`.
    pub field: String,
    pub problem: String,
}

fn invalid(field: &str, problem: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A spec that passed every rule: the planner's policy and the names of what to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSpec {
    pub policy: Policy,
    pub secret_name: String,
    /// Used while the set holds asymmetric keys; symmetric keys are never published.
    pub config_map_name: String,
    pub jwks_key: String,
    pub deletion_policy: DeletionPolicy,
    /// `spec.jwks.http.issuer`, when the JWKS is served over HTTP with discovery.
    pub issuer: Option<String>,
    /// `spec.jwks.copies`, with its defaults applied.
    pub copies: Option<ValidCopies>,
}

/// Where copies of the JWKS go (`spec.jwks.copies`), checked, with its defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidCopies {
    pub config_map_name: String,
    pub key: String,
    pub namespaces: BTreeSet<String>,
    /// `None`: by name only. An empty selector selects every namespace.
    pub selector: Option<Selector>,
}

/// Parses a Go duration ("90s", "1h30m"), refusing values the parser would overflow on.
///
/// kube's parser panics on numbers too large for its float arithmetic; every run of digits is
/// therefore capped at 9 (the schema's pattern says the same), which bounds any value to a few
/// hundred thousand years: far inside what the arithmetic handles.
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    let longest_number = value
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > MAX_DIGITS || value.len() > 64 {
        return Err(format!("{value:?} is too long"));
    }
    let parsed = kube::core::Duration::from_str(value).map_err(|e| {
        format!("{value:?} is not a duration like \"90s\", \"1h30m\" or \"720h\" ({e})")
    })?;
    if parsed.is_negative() {
        return Err(format!("{value:?} is negative"));
    }
    Ok(parsed.into())
}

/// The most digits in one number of a duration (see `parse_duration`).
const MAX_DIGITS: usize = 9;

fn duration(field: &str, value: &str, min: SignedDuration) -> Result<SignedDuration, InvalidSpec> {
    let parsed = parse_duration(value).map_err(|problem| invalid(field, problem))?;
    let d = SignedDuration::try_from(parsed)
        .map_err(|_| invalid(field, format!("{value:?} is too long")))?;
    if d < min {
        return Err(invalid(
            field,
            format!("{value:?} is shorter than the minimum {min:#}"),
        ));
    }
    if d > MAX_DURATION {
        return Err(invalid(
            field,
            format!("{value:?} is longer than the maximum {MAX_DURATION:#}"),
        ));
    }
    Ok(d)
}

fn dns_subdomain(field: &str, value: &str) -> Result<(), InvalidSpec> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if value.len() > 253 || !value.split('.').all(label_ok) {
        return Err(invalid(
            field,
            format!(
                "{value:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"
            ),
        ));
    }
    Ok(())
}

/// A key signs only once every verifier can hold it: it reaches a verifier propagationDelay
/// late, and a verifier that fetched the JWKS just before keeps that copy for verifierCacheTTL.
fn signing_lead_covers_caches(
    spec: &super::spec::JwtKeySetSpec,
    publish_lead: SignedDuration,
    propagation_delay: SignedDuration,
    verifier_cache_ttl: SignedDuration,
) -> Result<(), InvalidSpec> {
    let needed = propagation_delay.saturating_add(verifier_cache_ttl);
    if publish_lead >= needed {
        return Ok(());
    }
    Err(invalid(
        "spec.publishLead",
        format!(
            "{:?} must be at least spec.propagationDelay + spec.verifierCacheTTL ({:?} + {:?} = \
             {needed:#}): a key signs only once every verifier can hold it, and a verifier sees \
             the JWKS propagationDelay late and keeps a copy for verifierCacheTTL",
            spec.publish_lead, spec.propagation_delay, spec.verifier_cache_ttl
        ),
    ))
}

/// What is wrong with an issuer URL, as the schema's `ISSUER_PATTERN` says it: an http(s) URL
/// with a host, and no query, fragment, user info, empty path segment or trailing slash.
fn issuer_problem(issuer: &str) -> Result<(), &'static str> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_ok = |b: u8| b.is_ascii_alphanumeric() || b".:[]-".contains(&b);
    if host.is_empty() || !host.bytes().all(host_ok) {
        return Err("has no valid host (user info is not allowed)");
    }
    let path_ok = |b: u8| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@%-".contains(&b);
    let segments_ok = path.is_empty()
        || path[1..]
            .split('/')
            .all(|s| !s.is_empty() && s.bytes().all(path_ok));
    if !segments_ok {
        return Err("has a query, a fragment, an empty path segment or a trailing slash");
    }
    if issuer.len() > 2048 {
        return Err("is longer than 2048 characters");
    }
    Ok(())
}

fn config_key(field: &str, key: &str) -> Result<(), InvalidSpec> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !ok {
        return Err(invalid(
            field,
            format!("{key:?} is not a valid ConfigMap key (letters, digits, '-', '_' and '.')"),
        ));
    }
    Ok(())
}

fn valid_copies(
    spec: &super::spec::JwtKeySetSpec,
    config_map_name: &str,
    jwks_key: &str,
) -> Result<Option<ValidCopies>, InvalidSpec> {
    let Some(copies) = &spec.jwks.copies else {
        return Ok(None);
    };
    let name = copies.config_map_name.as_deref().unwrap_or(config_map_name);
    dns_subdomain("spec.jwks.copies.configMapName", name)?;
    let key = copies.key.as_deref().unwrap_or(jwks_key);
    config_key("spec.jwks.copies.key", key)?;
    for (i, ns) in copies.namespaces.iter().enumerate() {
        if ns.len() > 63 || ns.contains('.') {
            return Err(invalid(
                &format!("spec.jwks.copies.namespaces[{i}]"),
                format!("{ns:?} is not a namespace name (a DNS label, at most 63 characters)"),
            ));
        }
        dns_subdomain(&format!("spec.jwks.copies.namespaces[{i}]"), ns)?;
    }
    let selector = match &copies.namespace_selector {
        None => None,
        Some(s) => Some(
            Selector::try_from(s.clone())
                .map_err(|e| invalid("spec.jwks.copies.namespaceSelector", e.to_string()))?,
        ),
    };
    Ok(Some(ValidCopies {
        config_map_name: name.to_string(),
        key: key.to_string(),
        namespaces: copies.namespaces.iter().cloned().collect(),
        selector,
    }))
}

impl JwtKeySet {
    /// The names of the Secret and the JWKS ConfigMap, with their defaults applied.
    pub fn object_names(&self) -> (String, String) {
        let name = self.name_any();
        let secret = self
            .spec
            .secret_name
            .clone()
            .unwrap_or_else(|| format!("{name}-signing-keys"));
        let config_map = self
            .spec
            .jwks
            .config_map_name
            .clone()
            .unwrap_or_else(|| format!("{name}-jwks"));
        (secret, config_map)
    }

    /// Checks every rule of the schema and its CEL rules, and returns what the controller needs.
    /// A refused spec changes nothing: the caller reports it and writes nothing else.
    pub fn validate(&self) -> Result<ValidSpec, InvalidSpec> {
        let spec = &self.spec;
        let one_second = SignedDuration::from_secs(1);
        let rotation_interval =
            duration("spec.rotationInterval", &spec.rotation_interval, one_second)?;
        let token_ttl = duration("spec.tokenTTL", &spec.token_ttl, one_second)?;
        let publish_lead = duration("spec.publishLead", &spec.publish_lead, one_second)?;
        let propagation_delay = duration(
            "spec.propagationDelay",
            &spec.propagation_delay,
            SignedDuration::ZERO,
        )?;
        let clock_skew = duration("spec.clockSkew", &spec.clock_skew, SignedDuration::ZERO)?;
        let verifier_cache_ttl = duration(
            "spec.verifierCacheTTL",
            &spec.verifier_cache_ttl,
            SignedDuration::ZERO,
        )?;
        if publish_lead >= rotation_interval {
            return Err(invalid(
                "spec.publishLead",
                format!(
                    "{:?} must be shorter than spec.rotationInterval ({:?}): a new key is published publishLead before it must sign",
                    spec.publish_lead, spec.rotation_interval
                ),
            ));
        }
        signing_lead_covers_caches(spec, publish_lead, propagation_delay, verifier_cache_ttl)?;

        // Whole seconds, as the CEL rule counts them.
        let retention = propagation_delay.as_secs() + token_ttl.as_secs() + clock_skew.as_secs();
        if retention > MAX_RETENTION_INTERVALS * rotation_interval.as_secs() {
            return Err(invalid(
                "spec.tokenTTL",
                format!(
                    "propagationDelay + tokenTTL + clockSkew ({retention}s) must be at most \
                     {MAX_RETENTION_INTERVALS} times spec.rotationInterval ({:?}): a retired key \
                     stays published that long, and a set holds at most {MAX_KEYS} keys",
                    spec.rotation_interval
                ),
            ));
        }

        let rsa_size = match (spec.algorithm.is_rsa(), spec.key_size) {
            (true, None) => Some(RsaKeySize::DEFAULT),
            (true, Some(bits)) => Some(RsaKeySize::from_bits(bits).ok_or_else(|| {
                invalid(
                    "spec.keySize",
                    format!("{bits} is not one of 2048, 3072, 4096"),
                )
            })?),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(invalid(
                    "spec.keySize",
                    format!(
                        "is only allowed with RSA algorithms, not {}",
                        spec.algorithm
                    ),
                ));
            }
        };

        let mut revoked_kids = BTreeSet::new();
        for (i, kid) in spec.revoked_kids.iter().enumerate() {
            let well_formed = kid.len() == 43
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !well_formed {
                return Err(invalid(
                    &format!("spec.revokedKids[{i}]"),
                    format!(
                        "{kid:?} is not a key ID (43 base64url characters, as in status.keys[].kid)"
                    ),
                ));
            }
            revoked_kids.insert(kid.clone());
        }

        let name = self.name_any();
        if name.len() > 63 {
            return Err(invalid(
                "metadata.name",
                format!(
                    "{name:?} is longer than 63 characters: it labels the Secret and ConfigMap, and label values are at most 63"
                ),
            ));
        }
        let (secret_name, config_map_name) = self.object_names();
        dns_subdomain("spec.secretName", &secret_name)?;
        dns_subdomain("spec.jwks.configMapName", &config_map_name)?;
        let jwks_key = spec.jwks.key.clone();
        config_key("spec.jwks.key", &jwks_key)?;

        let http = spec.jwks.http.as_ref();
        let issuer = http.and_then(|h| h.issuer.clone());
        if let Some(issuer) = &issuer
            && let Err(problem) = issuer_problem(issuer)
        {
            return Err(invalid(
                "spec.jwks.http.issuer",
                format!("{issuer:?} {problem}"),
            ));
        }

        let copies = valid_copies(spec, &config_map_name, &jwks_key)?;

        Ok(ValidSpec {
            policy: Policy {
                algorithm: spec.algorithm,
                rsa_size,
                rotation_interval,
                publish_lead,
                propagation_delay,
                token_ttl,
                clock_skew,
                verifier_cache_ttl,
                revoked_kids,
                rotation_request: self.annotations().get(ROTATE_ANNOTATION).cloned(),
                // HS* too: a set switched to it is served while its old public keys are.
                served_over_http: http.is_some(),
            },
            secret_name,
            config_map_name,
            jwks_key,
            deletion_policy: spec.deletion_policy,
            issuer,
            copies,
        })
    }
}
