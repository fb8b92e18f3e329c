//! A stand-in for the Cloudflare edge, Cloudflare Access and `cloudflared`, in one process.
//!
//! Why it exists: Hyperdrive reaches a private database through a Cloudflare Tunnel — TLS to the
//! edge, a WebSocket upgrade that Access admits only with a valid service token, raw Postgres
//! bytes inside binary WebSocket messages, and `cloudflared` in the private network turning them
//! back into TCP. The reference proxy's tunnel egress must be tested against that path without a
//! Cloudflare account, so this crate reproduces the observable wire behaviour of the real thing
//! (see `/work/shared/reference/cloudflared-wire.md`): the same status codes and headers for
//! refusals, the origin dialled before the 101, text messages dropped, inbound messages truncated
//! to 16 KiB, one binary frame per origin read, Ping plus unsolicited Pong keepalives, and no
//! half-close. The real `cloudflared access tcp` client works against it.
//!
//! Why it is a library as well as a binary: tests and the deterministic simulator drive an
//! [`Edge`] directly, plugging in their own [`Listener`](reference_proxy::stream::Listener) and
//! [`Dialer`](reference_proxy::stream::Dialer), read its [`EdgeStats`], and cut every live
//! tunnel at once with [`Edge::kill_all_tunnels`].
//!
//! Map:
//! - [`access`]: service tokens, the Access policy, the constant-time check, reloading the token
//!   file.
//! - [`config`]: the edge's limits and timeouts.
//! - [`edge`]: accepting connections, the upgrade (Access check, origin dial, response).
//! - `upgrade`: reading the upgrade request and writing the handful of responses.
//! - `pipe`: moving bytes between the WebSocket and the origin, cloudflared-style.
//! - [`stats`]: counters for tests and the simulator.
//! - [`tls`]: the BoringSSL acceptor.
//! - [`cli`]: the `tunnel-edge` binary's flags and startup.

pub mod access;
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
mod pipe;
pub mod stats;
pub mod tls;
mod upgrade;

pub use access::{
    AccessControl, AccessDecision, AccessPolicy, CLIENT_ID_HEADER, CLIENT_SECRET_HEADER,
    ServiceToken, TOKEN_FILE_POLL_INTERVAL, TokenSet,
};
pub use config::EdgeConfig;
pub use edge::Edge;
pub use error::{HandshakeError, StartupError, TlsSetupError, TokenError, TokenFileError};
pub use stats::EdgeStats;
pub use tls::EdgeTls;

/// The `http` crate as tungstenite uses it (request headers for [`AccessControl::check`]).
pub use tokio_tungstenite::tungstenite::http;
