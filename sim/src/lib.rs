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
//!   sends), including [`workload::scripted`]: scripted sessions from `testdata/sim/sessions/`
//!   (`sim run --scenario scripted`); [`trace`]: what they saw; [`invariants`]: the checks;
//! - [`runner`]: one seed or many; [`report`]: the summary table and failure files;
//! - [`shrink`]: a failing fault plan reduced to a minimal one, and the reproducer line of
//!   `testdata/sim/regression-seeds.txt`.
//!
//! ## Determinism
//!
//! Same seed, same trace — measured with `sim run --check-determinism` (every seed run twice
//! in one process, trace hashes compared). turmoil runs every host on one thread in
//! simulated time and seeds its own RNG (latencies, host order); the proxy's RNG, the fake's
//! cancel keys and salts, the service tokens and every client's choices are derived from the
//! seed; all maps the sim iterates are ordered; the proxy's and the edge's selects poll in a
//! fixed order (`biased`), so tokio's unseeded select RNG picks nothing; the fake origin and
//! the edge keep their connections in the host's own future (a crash drops them in accept
//! order); the edge's kill switch is a `Notify`, not a `watch` (a watch parks each waiter on
//! one of 8 lists picked by tokio's thread RNG, which made the order killed tunnels close vary).
//!
//! The last divergence was **a proxy crash**: turmoil crashes a host by dropping its tokio
//! runtime, and a current-thread runtime drops its tasks in an order sharded by task id —
//! ids come from a process-wide counter — so the proxy's spawned session tasks closed their
//! sockets in an order that depended on what else had run in the process (before the fix, 16
//! of 60 standard seeds diverged in-process, exactly the 16 with a proxy crash). The proxy now
//! runs its sessions in place in the simulator
//! (`reference_proxy::server::SessionExecution::InPlace`: the same session code, polled in
//! `serve`'s own future instead of spawned), so a crash drops them in accept order. Measured
//! after the fix: `sim run --seeds 60 --check-determinism` → 60/60 seeds replayed to the same
//! trace (16 with a proxy crash), `--scenario tunnel --seeds 40` → 40/40 (7 with a proxy
//! crash), without `--cfg tokio_unstable`.
//!
//! The trace holds protocol-level facts only (calls, outcomes, rows, SQLSTATEs, simulated
//! times; never SASL payloads, cancel secrets or tokio-postgres's process-wide statement
//! names), so nothing else makes it differ.
//!
//! ## Planted bugs and shrinking
//!
//! `--features buggify` compiles `reference_proxy::buggify`'s hooks in; `sim run --buggify
//! BUG` plants one for the run, and `tests/bites.rs` shows each is caught (see that file for
//! the seeds it takes). A failing seed's fault plan is shrunk ([`shrink`]) and its reproducer
//! appended to `testdata/sim/regression-seeds.txt`, which the normal test run replays.
//!
//! ## The tunnel
//!
//! Scenario `tunnel` puts the real `tunnel_edge::Edge` on its own host between the proxy's real
//! `TunnelDialer` (over turmoil streams via `TunnelDialer::over`) and the fake origin, without
//! TLS on the proxy–edge hop (`TunnelTls::Plaintext`: BoringSSL's handshake randomness comes
//! from the OS and cannot be seeded, and it costs more CPU than a simulated transaction; the
//! TLS layer is tested on the real network by `reference-proxy`'s tunnel tests). Its faults:
//! Access token revoked and rotated, every tunnel killed mid-query, the edge answering 502,
//! edge crash and restart, plus one-way partitions between any two hosts.

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
