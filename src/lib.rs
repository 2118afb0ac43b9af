//! jwt-key-rotator: a Kubernetes operator that rotates JWT signing keys.
//!
//! Layers (see design.md): `api` (the CRD), `keys` (cryptography, no I/O),
//! `lifecycle` (the pure rotation planner).

pub mod keys;
