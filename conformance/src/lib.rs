//! # conformance: the same Postgres session, everywhere, compared as traces
//!
//! A proxy is transparent when every session looks to its client as it would directly
//! against Postgres, apart from what a proxy necessarily changes. This crate checks exactly
//! that: scripted sessions ([`transcript`], `testdata/conformance/transcripts/*.pgtx`) run
//! against real Postgres directly, through the reference proxy over TCP, client TLS and the
//! tunnel edge ([`real`]), against the simulator's fake Postgres directly and through the real
//! proxy inside turmoil ([`fake`]), and through failing tunnels and Access policies
//! ([`access`]). The [`runner`] records what the backend says in the project's one trace
//! format, the [`normalize`]r removes what legitimately differs (and nothing else), and each
//! normalized trace must equal its reviewed insta snapshot ([`snapshot`]) — the same snapshot
//! for every arm, so every arm equals every other.
//!
//! Why snapshots rather than comparing arms pairwise at run time: each arm runs in its own
//! test (nextest runs them in parallel processes), and the reviewed snapshot is also the
//! documentation of what Postgres does, readable in a pull request.

pub mod access;
pub mod container;
pub mod fake;
pub mod normalize;
pub mod real;
pub mod runner;
pub mod snapshot;
pub mod suite;
pub mod transcript;
