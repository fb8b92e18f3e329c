//! Connection startup as two sans-IO state machines, one per side of a proxy.
//!
//! - [`ClientHandshake`] is the client end (the proxy connecting to its origin, a test client):
//!   it writes a StartupMessage, answers whatever authentication the server asks for
//!   (cleartext, md5, SCRAM-SHA-256 with or without channel binding), and collects the session
//!   the server describes (ParameterStatus, BackendKeyData) until the first ReadyForQuery.
//! - [`ServerHandshake`] is the server end (the proxy accepting a client, the simulator's fake
//!   Postgres): given the client's StartupMessage, the configured method and the role's stored
//!   password, it asks for and verifies credentials, ending in AuthenticationOk or in an
//!   ErrorResponse to send before closing.
//!
//! Neither touches a socket, a clock or an OS random source: the caller moves messages between
//! them and the network, and passes in the RNG that draws nonces and salts. TLS negotiation
//! (SSLRequest) is the caller's business because it changes the stream, not the messages.

mod client;
mod options;
mod server;

pub use client::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError, ServerSession,
};
pub use options::{InvalidOption, parse_startup_options};
pub use server::{ServerAuthConfig, ServerHandshake, ServerHandshakeError, ServerStep};
