//! jwt-key-rotator: a Kubernetes operator that rotates JWT signing keys.
//!
//! Layers (see design.md): `api` (the CRD and its validation), `keys` (cryptography, no I/O),
//! `lifecycle` (the pure rotation planner).

pub mod api;
pub mod controller;
pub mod http;
pub mod keys;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod reconcile;
pub mod store;
