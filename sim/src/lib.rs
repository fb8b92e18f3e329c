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
//! - [`runner`]: one seed or many; [`report`]: the summary table and failure files.
//!
//! ## Determinism
//!
//! Same seed, same trace — with one caveat. turmoil runs every host on a single thread with
//! simulated time, and seeds its own RNG, the proxy's and the fake's from the seed. But tokio
//! seeds the RNG that `tokio::select!` uses to pick among ready branches from the operating
//! system unless the whole build uses `--cfg tokio_unstable` (turmoil then seeds it per host).
//! The sim's own code uses `biased` selects; the proxy's selects are unbiased, so when two of
//! their branches become ready in the same instant the choice may differ between runs. The
//! trace records only protocol-level facts (calls, outcomes, rows, SQLSTATEs, simulated
//! times), which such a choice rarely changes; the determinism test runs seeds twice and
//! compares trace hashes. For bit-exact replay, build with
//! `RUSTFLAGS="--cfg tokio_unstable"`.

pub mod fake_pg;
pub mod faults;
pub mod invariants;
pub mod net;
pub mod raw;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod trace;
pub mod workload;
pub mod world;
