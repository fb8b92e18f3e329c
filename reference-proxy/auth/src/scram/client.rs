//! The client side of a SCRAM exchange: a thin wrapper around postgres-protocol's
//! [`ScramSha256`], the implementation tokio-postgres uses against real servers.
//!
//! The wrapper adds what the proxy needs around it: mechanism negotiation, a typed error
//! instead of `io::Error`, message length limits, and a state machine that refuses calls out
//! of order instead of panicking (postgres-protocol's `message()` panics once finished).
//!
//! Determinism caveat: postgres-protocol draws the client nonce from its own thread-local
//! generator, which no caller can seed. This is the one non-deterministic value in this
//! crate; simulator traces must redact the SASL payloads this client sends (and the
//! server-first-message, which echoes the nonce).

use std::fmt;
use std::io;

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::attributes::check_message;
use super::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramError, ScramMessage};

/// The message postgres-protocol reports when the server signature does not verify.
const SIGNATURE_MISMATCH_DETAIL: &str = "SCRAM verification error";
/// The prefix postgres-protocol puts before a server's `e=` error value.
const SERVER_ERROR_PREFIX: &str = "SCRAM error: ";

/// What this client tells the server about channel binding.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientChannelBinding {
    /// `n`: this client cannot bind (no TLS, or no certificate hash available).
    NotSupported,
    /// `y`: this client could bind, but the server did not offer `SCRAM-SHA-256-PLUS`. A
    /// server that did offer it will refuse this as a downgrade.
    NotOfferedByServer,
    /// `p=tls-server-end-point`: bind to the TLS connection, with the hash of the server's
    /// certificate (RFC 5929 §4.1).
    TlsServerEndPoint(Vec<u8>),
}

impl ClientChannelBinding {
    /// Chooses like libpq: bind when the server offers `SCRAM-SHA-256-PLUS` and this
    /// connection has `tls-server-end-point` data; otherwise use plain `SCRAM-SHA-256`,
    /// saying `y` if binding would have been possible.
    pub fn negotiate(
        server_mechanisms: &[&str],
        tls_server_end_point: Option<Vec<u8>>,
    ) -> Result<Self, ScramError> {
        let offers_plus = server_mechanisms.contains(&SCRAM_SHA_256_PLUS);
        let offers_plain = server_mechanisms.contains(&SCRAM_SHA_256);
        match tls_server_end_point {
            Some(data) if offers_plus => Ok(ClientChannelBinding::TlsServerEndPoint(data)),
            Some(_) if offers_plain => Ok(ClientChannelBinding::NotOfferedByServer),
            None if offers_plain => Ok(ClientChannelBinding::NotSupported),
            _ => Err(ScramError::NoUsableMechanism {
                offered: server_mechanisms.join(", "),
            }),
        }
    }

    /// The SASL mechanism name to send in `SASLInitialResponse`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            ClientChannelBinding::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            ClientChannelBinding::NotSupported | ClientChannelBinding::NotOfferedByServer => {
                SCRAM_SHA_256
            }
        }
    }

    fn into_postgres_protocol(self) -> ChannelBinding {
        match self {
            ClientChannelBinding::NotSupported => ChannelBinding::unsupported(),
            ClientChannelBinding::NotOfferedByServer => ChannelBinding::unrequested(),
            ClientChannelBinding::TlsServerEndPoint(data) => {
                ChannelBinding::tls_server_end_point(data)
            }
        }
    }
}

impl fmt::Debug for ClientChannelBinding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientChannelBinding::NotSupported => formatter.write_str("NotSupported"),
            ClientChannelBinding::NotOfferedByServer => formatter.write_str("NotOfferedByServer"),
            ClientChannelBinding::TlsServerEndPoint(data) => formatter
                .debug_struct("TlsServerEndPoint")
                .field("length", &data.len())
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    AwaitingServerFirst,
    AwaitingServerFinal,
    Authenticated,
    Failed,
}

impl State {
    fn description(self) -> &'static str {
        match self {
            State::Initial => "has not sent client-first-message yet",
            State::AwaitingServerFirst => "expects server-first-message",
            State::AwaitingServerFinal => "expects server-final-message",
            State::Authenticated => "has already completed",
            State::Failed => "has already failed",
        }
    }
}

/// The client side of one SCRAM-SHA-256(-PLUS) exchange.
pub struct ScramClient {
    inner: ScramSha256,
    mechanism: &'static str,
    state: State,
}

impl ScramClient {
    /// Prepares an exchange for `password` (SASLprep'd by postgres-protocol, falling back to
    /// the raw bytes like Postgres).
    pub fn new(password: &[u8], channel_binding: ClientChannelBinding) -> Self {
        let mechanism = channel_binding.mechanism();
        ScramClient {
            inner: ScramSha256::new(password, channel_binding.into_postgres_protocol()),
            mechanism,
            state: State::Initial,
        }
    }

    /// The SASL mechanism name to send in `SASLInitialResponse`.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The client-first-message to send in `SASLInitialResponse`. Callable once.
    pub fn client_first(&mut self) -> Result<Vec<u8>, ScramError> {
        self.expect_state(State::Initial, ScramMessage::ClientFirst)?;
        self.state = State::AwaitingServerFirst;
        Ok(self.inner.message().to_vec())
    }

    /// Handles the server-first-message (`AuthenticationSASLContinue`) and returns the
    /// client-final-message to send in `SASLResponse`.
    pub fn handle_server_first(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        self.expect_state(State::AwaitingServerFirst, ScramMessage::ServerFirst)?;
        self.state = State::Failed;
        check_message(server_first, ScramMessage::ServerFirst)?;
        self.inner
            .update(server_first)
            .map_err(|error| map_error(&error, ScramMessage::ServerFirst))?;
        self.state = State::AwaitingServerFinal;
        Ok(self.inner.message().to_vec())
    }

    /// Handles the server-final-message (`AuthenticationSASLFinal`). `Ok` means the server
    /// proved it knows the password's keys.
    pub fn handle_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        self.expect_state(State::AwaitingServerFinal, ScramMessage::ServerFinal)?;
        self.state = State::Failed;
        check_message(server_final, ScramMessage::ServerFinal)?;
        self.inner
            .finish(server_final)
            .map_err(|error| map_error(&error, ScramMessage::ServerFinal))?;
        self.state = State::Authenticated;
        Ok(())
    }

    /// Whether the server has proved itself.
    pub fn is_authenticated(&self) -> bool {
        self.state == State::Authenticated
    }

    fn expect_state(&mut self, expected: State, message: ScramMessage) -> Result<(), ScramError> {
        if self.state == expected {
            return Ok(());
        }
        let state = self.state.description();
        self.state = State::Failed;
        Err(ScramError::OutOfOrder { message, state })
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.description())
            .finish_non_exhaustive()
    }
}

/// Turns postgres-protocol's `io::Error` into a [`ScramError`]. Its messages describe the
/// server's message and never contain the password or keys.
fn map_error(error: &io::Error, message: ScramMessage) -> ScramError {
    let detail = error.to_string();
    if detail == SIGNATURE_MISMATCH_DETAIL {
        return ScramError::ServerSignatureMismatch;
    }
    if let Some(server_error) = detail.strip_prefix(SERVER_ERROR_PREFIX) {
        return ScramError::ServerReportedError {
            error: server_error.to_owned(),
        };
    }
    ScramError::MalformedServerMessage { message, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_libpq() {
        let both = [SCRAM_SHA_256_PLUS, SCRAM_SHA_256];
        let plain = [SCRAM_SHA_256];
        let plus_only = [SCRAM_SHA_256_PLUS];
        let data = Some(vec![9; 32]);
        assert_eq!(
            ClientChannelBinding::negotiate(&both, data.clone()),
            Ok(ClientChannelBinding::TlsServerEndPoint(vec![9; 32]))
        );
        assert_eq!(
            ClientChannelBinding::negotiate(&plain, data.clone()),
            Ok(ClientChannelBinding::NotOfferedByServer)
        );
        assert_eq!(
            ClientChannelBinding::negotiate(&both, None),
            Ok(ClientChannelBinding::NotSupported)
        );
        assert!(matches!(
            ClientChannelBinding::negotiate(&plus_only, None),
            Err(ScramError::NoUsableMechanism { .. })
        ));
        assert!(ClientChannelBinding::negotiate(&["PLAIN"], data).is_err());
    }

    #[test]
    fn client_first_has_the_gs2_header_of_the_binding() {
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        assert!(client.client_first().unwrap().starts_with(b"n,,n=,r="));
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotOfferedByServer);
        assert!(client.client_first().unwrap().starts_with(b"y,,n=,r="));
        let mut client =
            ScramClient::new(b"pw", ClientChannelBinding::TlsServerEndPoint(vec![1, 2]));
        assert_eq!(client.mechanism(), SCRAM_SHA_256_PLUS);
        assert!(
            client
                .client_first()
                .unwrap()
                .starts_with(b"p=tls-server-end-point,,n=,r=")
        );
    }

    #[test]
    fn calls_out_of_order_fail_instead_of_panicking() {
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        assert!(matches!(
            client.handle_server_final(b"v=abc"),
            Err(ScramError::OutOfOrder { .. })
        ));
        assert!(matches!(
            client.client_first(),
            Err(ScramError::OutOfOrder {
                state: "has already failed",
                ..
            })
        ));
    }

    #[test]
    fn server_errors_are_typed() {
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        let client_first = String::from_utf8(client.client_first().unwrap()).unwrap();
        let nonce = client_first.strip_prefix("n,,n=,r=").unwrap();
        let server_first = format!("r={nonce}server,s=c2FsdA==,i=16");
        client.handle_server_first(server_first.as_bytes()).unwrap();
        assert_eq!(
            client.handle_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerReportedError {
                error: "invalid-proof".to_owned()
            })
        );
    }

    #[test]
    fn a_server_nonce_not_extending_ours_is_rejected() {
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        client.client_first().unwrap();
        assert!(matches!(
            client.handle_server_first(b"r=someone-else,s=c2FsdA==,i=16"),
            Err(ScramError::MalformedServerMessage {
                message: ScramMessage::ServerFirst,
                ..
            })
        ));
    }

    #[test]
    fn debug_shows_no_password() {
        let client = ScramClient::new(b"hunter2", ClientChannelBinding::NotSupported);
        let debug = format!("{client:?}");
        assert!(!debug.contains("hunter2"));
        assert!(debug.contains("SCRAM-SHA-256"));
    }
}
