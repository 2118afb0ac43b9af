//! The lifecycle core: every rotation rule of the project, and nothing else.
//!
//! `weigh` turns what was read from the cluster (evidence, never truth) into a manifest;
//! `plan` applies the rules of a key's life to it; `converge` is the loop that plans, writes
//! through an abstract `Cluster` and plans again.
//!
//! `plan(policy, manifest, observed, now, mint)` is pure: the same inputs give the same plan.
//! It reads no clock and does no I/O; new keys come from the `mint` function it is handed, so
//! tests drive it with deterministic keys and arbitrary clocks.

mod converge;
mod evidence;
mod manifest;
mod planner;
mod policy;
mod revocation;

pub use converge::{Cluster, Converged, MAX_ROUNDS, Stopped, converge};
pub use evidence::{
    Blocked, Evidence, Finding, FoundKey, ManifestRead, SecretEvidence, Slot, StoredTimes, Weighed,
    weigh,
};
pub use manifest::{KeyRecord, KeyState, MANIFEST_VERSION, Manifest, ManifestError};
pub use planner::{Activation, NewKey, Observed, Plan, Transition, plan};
pub use policy::{
    MAX_KEYS, MAX_RETENTION_INTERVALS, Moved, ObjectNames, Policy, WrittenNames, moved,
};
pub use revocation::{Revocation, revocations, unpublished_by_pass};
