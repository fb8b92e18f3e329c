//! Typed errors of the edge.
//!
//! Why several small enums rather than one: each caller handles a different set — the token
//! loader keeps the old token set on any [`TokenFileError`], a connection's [`HandshakeError`]
//! only ends that connection, and [`StartupError`] ends the binary. None of them ever carries a
//! service-token secret: messages name the token by position and quote no token file content.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// A service token (from `--service-token` or a token file) that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// `--service-token` without the `:` between id and secret.
    #[error("a service token must be written ID:SECRET (the ':' is missing)")]
    MissingSeparator,
    /// An empty client id.
    #[error("service token {index}: the client id is empty")]
    EmptyId {
        /// Position of the token (1-based).
        index: usize,
    },
    /// An empty client secret.
    #[error("service token {index}: the client secret is empty")]
    EmptySecret {
        /// Position of the token (1-based).
        index: usize,
    },
    /// An id or secret that cannot travel in an HTTP header, so it could never match.
    #[error(
        "service token {index}: the client {field} must be printable ASCII without spaces \
         (it travels in an HTTP header)"
    )]
    NotHeaderSafe {
        /// Position of the token (1-based).
        index: usize,
        /// `id` or `secret`.
        field: &'static str,
    },
}

/// A token file that cannot be loaded (the previous token set stays in force).
#[derive(Debug, Error)]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("the token file {path} is invalid (line {line}): {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong, with quoted values redacted.
        message: String,
    },
    /// A token in the file is unusable.
    #[error("the token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Which token and why.
        source: TokenError,
    },
}

/// The TLS certificate or key cannot be loaded.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// BoringSSL refused to build an acceptor.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
    /// A PEM file cannot be loaded.
    #[error("cannot load the TLS {what} from {path}: {detail}")]
    Load {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// BoringSSL's reason.
        detail: String,
    },
}

/// Why one client connection ended before a tunnel was established (or a response written).
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// TLS + request did not complete within the handshake timeout.
    #[error("the client did not complete TLS and the upgrade request in time")]
    Timeout,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The client closed the connection before sending a whole request head.
    #[error("the client closed the connection before the request was complete")]
    ClosedEarly,
    /// The request head exceeds the limit.
    #[error("the request head exceeds {limit} bytes")]
    RequestTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not parseable as HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// Reading or writing the client socket failed.
    #[error("client I/O error: {0}")]
    Io(#[from] io::Error),
}

/// The `tunnel-edge` binary cannot start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// `--service-token` is unusable.
    #[error("--service-token: {0}")]
    ServiceToken(TokenError),
    /// `--tokens` cannot be loaded.
    #[error("--tokens: {0}")]
    TokenFile(TokenFileError),
    /// `--cert` / `--key` cannot be loaded.
    #[error("--cert/--key: {0}")]
    Tls(TlsSetupError),
    /// The listening socket cannot be bound.
    #[error("--listen {address}: cannot listen: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// Why.
        source: io::Error,
    },
}
