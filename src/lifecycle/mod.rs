//! The lifecycle planner: every rotation rule of the project, and nothing else.
//!
//! `plan(policy, manifest, observed, now, mint)` is pure: the same inputs give the same plan.
//! It reads no clock and does no I/O; new keys come from the `mint` function it is handed, so
//! tests drive it with deterministic keys and arbitrary clocks.

mod manifest;
mod planner;
mod policy;

pub use manifest::{KeyRecord, KeyState, MANIFEST_VERSION, Manifest, ManifestError};
pub use planner::{Activation, NewKey, Observed, Plan, Transition, plan};
pub use policy::Policy;
