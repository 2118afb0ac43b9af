use super::algorithm::Algorithm;

/// Why a key could not be made. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{alg} key generation failed: {reason}")]
    Generate { alg: Algorithm, reason: String },
    #[error("{alg} key encoding failed: {reason}")]
    Encode { alg: Algorithm, reason: String },
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
}
