//! # sim: the deterministic simulator of the reference proxy
//!
//! `just sim` answers one question: does the proxy keep its promises on a hostile network?
//! It runs the proxy's real code — `reference_proxy::server::build_context` and `serve`,
//! never a copy — on turmoil's simulated network, in front of a fake Postgres built on the
//! same protocol codec, with clients that transfer money and check what they see. Everything
//! random (latencies, faults, the proxy's RNG, the fake's cancel keys, the clients' choices)
//! comes from one seed, so a failing seed replays.
//!
//! Modules:
//! - [`fake_pg`]: the fake origin (its docs list the SQL and protocol it supports);
//! - [`net`]: turmoil `Dialer` / `Listener` for the proxy, and the origin-session count;
//! - [`scenario`]: world shapes; [`faults`]: the seed's fault plan; [`world`]: the hosts;
//! - [`workload`]: the clients (tokio-postgres, and [`raw`] for what tokio-postgres never
//!   sends); [`trace`]: what they saw; [`invariants`]: the checks;
//! - [`runner`]: one seed or many; [`report`]: the summary table and failure files;
//! - [`shrink`]: a failing fault plan reduced to a minimal one, and the reproducer line of
//!   `testdata/sim/regression-seeds.txt`.
//!
//! ## Determinism
//!
//! Same seed, same trace — exactly, in a build with `RUSTFLAGS="--cfg tokio_unstable"`, and
//! mostly otherwise. turmoil runs every host on one thread in simulated time and seeds its own
//! RNG (latencies, host order); the proxy's RNG, the fake's cancel keys and salts and every
//! client's choices are derived from the seed; all maps the sim iterates are ordered; the fake
//! origin drops its sessions in accept order when it crashes (tokio would drop spawned tasks
//! in an order derived from process-wide task ids). What remains is tokio's own RNG, which
//! picks among the ready branches of an unbiased `tokio::select!` — the proxy's pool and
//! session loops use such selects — and which tokio seeds from the operating system unless
//! built with `--cfg tokio_unstable` (turmoil then seeds it per host from the seed).
//!
//! Measured on this code: with `--cfg tokio_unstable`, every seed tried gave the same trace
//! hash on every run, in one process and across processes. Without it, seeds without faults
//! are stable, while about a third of seeds with faults take a different branch at some
//! tie (typically when several clients wait on the pool as an origin comes back) and diverge
//! from there. The trace holds protocol-level facts only (calls, outcomes, rows, SQLSTATEs,
//! simulated times; never SASL payloads, cancel secrets or tokio-postgres's process-wide
//! statement names), so nothing else makes it differ. `sim run` reruns each failing seed and
//! says whether it reproduced.

pub mod fake_pg;
pub mod faults;
pub mod invariants;
pub mod net;
pub mod raw;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod trace;
pub mod workload;
pub mod world;
