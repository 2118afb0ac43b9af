//! jwt-key-rotator: a Kubernetes operator that rotates JWT signing keys.
//!
//! Layers (see design.md): `api` (the CRD and its validation), `keys` (cryptography, no I/O),
//! `lifecycle` (the core: weighing evidence, planning, the convergence loop; pure), `layout`
//! (the Secret and JWKS encodings), `objects` (one set's objects as the core's abstract
//! cluster), `reconcile` and `report` (the shell: the Kubernetes API, status, Events),, `audit`
//! (the record of key transitions: log lines and `status.history`), `cli` (the commands for
//! people: status, rotate, revoke, verify, history).

pub mod api;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod copies;
pub mod http;
pub mod jwks_http;
pub mod keys;
pub mod layout;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod objects;
pub mod reconcile;
pub mod report;
