//! # sim: the deterministic simulator of the reference proxy
//!
//! Runs the proxy's real code over turmoil's simulated network against a fake Postgres,
//! under faults drawn from a seed, and checks invariants a correct pooled proxy must keep.

pub mod fake_pg;
