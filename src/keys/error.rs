use super::algorithm::Algorithm;

/// Why a key could not be made or read back. Messages never contain key bytes: every reason
/// is this module's own words (a member's name, a size, a key type), never the input.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{alg} key generation failed: {reason}")]
    Generate { alg: Algorithm, reason: String },
    #[error("{alg} key encoding failed: {reason}")]
    Encode { alg: Algorithm, reason: String },
    #[error("not a usable {alg} private key: {reason}")]
    Malformed { alg: Algorithm, reason: String },
    #[error("{alg} needs {expected} key, but this is {found} key")]
    WrongKeyType {
        alg: Algorithm,
        expected: &'static str,
        found: String,
    },
    #[error("{alg}: an RSA modulus of {bits} bits; the operator uses 2048, 3072 or 4096 bits")]
    RsaSize { alg: Algorithm, bits: usize },
    #[error("{alg} needs a secret of at least {min} bytes, this one has {len}")]
    HmacTooShort {
        alg: Algorithm,
        len: usize,
        min: usize,
    },
    #[error("{alg} private JWK: member `{member}` does not belong to the key it holds")]
    Inconsistent {
        alg: Algorithm,
        member: &'static str,
    },
}

impl KeyError {
    pub(crate) fn malformed(alg: Algorithm, reason: impl Into<String>) -> Self {
        KeyError::Malformed {
            alg,
            reason: reason.into(),
        }
    }
}
