//! # reference-proxy: a Hyperdrive-style pooled Postgres proxy
//!
//! Clients speak Postgres to the proxy; the proxy lends them origin connections from a pool,
//! one transaction at a time, and makes that invisible: prepared statements follow the client
//! across connections, settings are re-applied, state is reset between borrowers, cancel
//! requests reach exactly the right backend. Every transport is a [`stream::BoxedStream`], so
//! TCP, TLS, a WebSocket tunnel or the simulator's network all plug in the same way.
//!
//! Module map (see ARCHITECTURE.md for the invariants):
//! - [`config`]: flags and TOML file → [`config::ProxyConfig`];
//! - [`server`]: assembling and running a proxy; [`context`]: what sessions share;
//! - [`client`]: one client connection (startup, then the IO loop); [`session`]: the
//!   transaction-pooling logic of a session, without IO; [`prepared`]: statement bookkeeping;
//! - [`pool`]: origin connections; [`origin`]: connecting, logging in and cancelling;
//!   [`cancel`]: the proxy's cancel keys;
//! - [`stream`], [`tls`]: transports; [`metrics`]: Prometheus.

pub mod buggify;
pub mod cancel;
pub mod client;
pub mod config;
pub mod context;
pub mod metrics;
pub mod origin;
pub mod pinning;
pub mod pool;
pub mod prepared;
pub mod server;
pub mod session;
pub mod sql;
pub mod stream;
pub mod tls;
pub mod tunnel;
