//! The client end of connection startup (see the module docs of [`crate::startup`]).

use crate::backend::{
    Authentication, BackendKeyData, BackendMessage, ErrorFields, TransactionStatus,
};
use crate::frontend::{FrontendMessage, StartupMessage};
use crate::pg_string::PgString;
use bytes::Bytes;
use elephant_auth::{ClientChannelBinding, ScramClient, ScramError, md5_response};
use std::fmt;

/// What the client presents to the server.
#[derive(Clone, Default)]
pub struct ClientHandshakeConfig {
    /// Role name (`user` startup parameter).
    pub user: String,
    /// Database name; the server defaults it to the user name when `None`.
    pub database: Option<String>,
    /// Password, if the server may ask for one. Never shown by Debug.
    pub password: Option<String>,
    /// More startup parameters (`application_name`, `options`, `client_encoding`, ...).
    pub parameters: Vec<(String, String)>,
    /// The TLS `tls-server-end-point` channel-binding data (hash of the server certificate)
    /// when the connection runs over TLS; enables SCRAM-SHA-256-PLUS.
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl fmt::Debug for ClientHandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshakeConfig")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("parameters", &self.parameters)
            .field("channel_binding", &self.tls_server_end_point.is_some())
            .finish()
    }
}

impl ClientHandshakeConfig {
    fn startup_message(&self) -> StartupMessage {
        let mut parameters = vec![("user", self.user.as_str())];
        if let Some(database) = &self.database {
            parameters.push(("database", database.as_str()));
        }
        parameters.extend(
            self.parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        StartupMessage::new(parameters)
    }
}

/// What the caller must do after feeding a message to [`ClientHandshake::handle`].
#[derive(Debug)]
pub enum ClientStep {
    /// Write this message to the server, then keep reading.
    Send(FrontendMessage),
    /// Keep reading.
    Continue,
    /// The server sent ReadyForQuery: the connection is ready.
    Ready(ServerSession),
}

/// What the server told the client during startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSession {
    /// ParameterStatus values, in the order received.
    pub parameters: Vec<(PgString, PgString)>,
    /// Cancel key, if the server sent one.
    pub backend_key: Option<BackendKeyData>,
    /// Notices sent during startup.
    pub notices: Vec<ErrorFields>,
    /// Status from the first ReadyForQuery (always idle for a real server).
    pub transaction_status: TransactionStatus,
    /// Set when the server answered with NegotiateProtocolVersion: (newest minor, options).
    pub negotiated: Option<(i32, Vec<PgString>)>,
}

impl ServerSession {
    /// The value of one ParameterStatus.
    pub fn parameter(&self, name: &str) -> Option<&PgString> {
        self.parameters
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// Why a startup failed. Messages never contain the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server refused the connection with this ErrorResponse (pass it on unchanged).
    #[error("server rejected the connection: {}", .0.message().map(|m| m.to_string()).unwrap_or_default())]
    Server(ErrorFields),
    /// The server asked for a password and none is configured.
    #[error("the server requested {method} authentication, but no password was provided")]
    PasswordRequired {
        /// The method the server asked for.
        method: &'static str,
    },
    /// The server asked for an authentication method this client does not implement.
    #[error("the server requested {method} authentication, which is not supported")]
    UnsupportedAuthentication {
        /// The method the server asked for.
        method: &'static str,
    },
    /// SCRAM failed on the client side (for example the server's signature is wrong: the
    /// server does not know the password, so it may be an impostor).
    #[error("SCRAM authentication failed: {0}")]
    Scram(#[from] ScramError),
    /// The server sent a message that does not belong at this point of the startup.
    #[error("unexpected {message} from the server during startup ({state})")]
    Unexpected {
        /// Name of the message received.
        message: &'static str,
        /// What the client was waiting for.
        state: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingAuthentication,
    AwaitingPasswordResult,
    AwaitingSaslContinue,
    AwaitingSaslFinal,
    AwaitingSaslOk,
    AwaitingReady,
    Done,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::AwaitingAuthentication => "waiting for an authentication request",
            State::AwaitingPasswordResult => "waiting for the password to be accepted",
            State::AwaitingSaslContinue => "waiting for the SCRAM server-first message",
            State::AwaitingSaslFinal => "waiting for the SCRAM server-final message",
            State::AwaitingSaslOk => "waiting for AuthenticationOk after SCRAM",
            State::AwaitingReady => "waiting for ReadyForQuery",
            State::Done => "startup already finished",
        }
    }
}

/// The client end of a connection startup.
pub struct ClientHandshake {
    config: ClientHandshakeConfig,
    state: State,
    scram: Option<ScramClient>,
    session: ServerSession,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("config", &self.config)
            .field("state", &self.state)
            .finish()
    }
}

impl ClientHandshake {
    /// Starts a handshake; send the returned StartupMessage first.
    pub fn start(config: ClientHandshakeConfig) -> (Self, FrontendMessage) {
        let startup = FrontendMessage::Startup(config.startup_message());
        let handshake = ClientHandshake {
            config,
            state: State::AwaitingAuthentication,
            scram: None,
            session: ServerSession {
                parameters: Vec::new(),
                backend_key: None,
                notices: Vec::new(),
                transaction_status: TransactionStatus::Idle,
                negotiated: None,
            },
        };
        (handshake, startup)
    }

    /// Feeds one server message; an error ends the handshake.
    pub fn handle(&mut self, message: BackendMessage) -> Result<ClientStep, HandshakeError> {
        match message {
            BackendMessage::ErrorResponse(fields) => Err(HandshakeError::Server(fields)),
            BackendMessage::NoticeResponse(fields) => {
                self.session.notices.push(fields);
                Ok(ClientStep::Continue)
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } if self.state == State::AwaitingAuthentication => {
                self.session.negotiated = Some((newest_minor, unrecognized_options));
                Ok(ClientStep::Continue)
            }
            BackendMessage::Authentication(auth) => self.authentication(auth),
            message if self.state == State::AwaitingReady => self.session_message(message),
            other => Err(self.unexpected(other.name())),
        }
    }

    fn unexpected(&self, message: &'static str) -> HandshakeError {
        HandshakeError::Unexpected {
            message,
            state: self.state.describe(),
        }
    }

    fn password(&self, method: &'static str) -> Result<&str, HandshakeError> {
        self.config
            .password
            .as_deref()
            .ok_or(HandshakeError::PasswordRequired { method })
    }

    fn authentication(&mut self, auth: Authentication) -> Result<ClientStep, HandshakeError> {
        match (self.state, auth) {
            (
                State::AwaitingAuthentication
                | State::AwaitingPasswordResult
                | State::AwaitingSaslOk,
                Authentication::Ok,
            ) => {
                self.state = State::AwaitingReady;
                Ok(ClientStep::Continue)
            }
            (State::AwaitingAuthentication, Authentication::CleartextPassword) => {
                let password = self.password("cleartext password")?.to_string();
                self.state = State::AwaitingPasswordResult;
                Ok(ClientStep::Send(FrontendMessage::Password(PgString::from(
                    password,
                ))))
            }
            (State::AwaitingAuthentication, Authentication::Md5Password { salt }) => {
                let hash = md5_response(&self.config.user, self.password("md5")?, salt);
                self.state = State::AwaitingPasswordResult;
                Ok(ClientStep::Send(FrontendMessage::Password(PgString::from(
                    hash,
                ))))
            }
            (State::AwaitingAuthentication, Authentication::Sasl { mechanisms }) => {
                self.sasl_start(&mechanisms)
            }
            (State::AwaitingSaslContinue, Authentication::SaslContinue(server_first)) => {
                let scram = self.scram.as_mut().ok_or(HandshakeError::Unexpected {
                    message: "AuthenticationSASLContinue",
                    state: "no SCRAM exchange in progress",
                })?;
                let client_final = scram.handle_server_first(&server_first)?;
                self.state = State::AwaitingSaslFinal;
                Ok(ClientStep::Send(FrontendMessage::SaslResponse(
                    Bytes::from(client_final),
                )))
            }
            (State::AwaitingSaslFinal, Authentication::SaslFinal(server_final)) => {
                let scram = self.scram.as_mut().ok_or(HandshakeError::Unexpected {
                    message: "AuthenticationSASLFinal",
                    state: "no SCRAM exchange in progress",
                })?;
                scram.handle_server_final(&server_final)?;
                self.state = State::AwaitingSaslOk;
                Ok(ClientStep::Continue)
            }
            (_, Authentication::Gss | Authentication::Sspi | Authentication::GssContinue(_)) => {
                Err(HandshakeError::UnsupportedAuthentication {
                    method: "GSSAPI/SSPI",
                })
            }
            (_, Authentication::KerberosV5) => Err(HandshakeError::UnsupportedAuthentication {
                method: "Kerberos V5",
            }),
            (_, other) => Err(self.unexpected(other.name())),
        }
    }

    fn sasl_start(&mut self, mechanisms: &[PgString]) -> Result<ClientStep, HandshakeError> {
        let password = self.password("SCRAM-SHA-256")?.to_string();
        let offered: Vec<&str> = mechanisms.iter().filter_map(PgString::as_str).collect();
        let binding =
            ClientChannelBinding::negotiate(&offered, self.config.tls_server_end_point.clone())?;
        let mechanism = binding.mechanism();
        let mut scram = ScramClient::new(password.as_bytes(), binding);
        let client_first = scram.client_first()?;
        self.scram = Some(scram);
        self.state = State::AwaitingSaslContinue;
        Ok(ClientStep::Send(FrontendMessage::SaslInitialResponse {
            mechanism: PgString::from(mechanism),
            data: Some(Bytes::from(client_first)),
        }))
    }

    fn session_message(&mut self, message: BackendMessage) -> Result<ClientStep, HandshakeError> {
        match message {
            BackendMessage::ParameterStatus { name, value } => {
                self.session.parameters.push((name, value));
                Ok(ClientStep::Continue)
            }
            BackendMessage::BackendKeyData(key) => {
                self.session.backend_key = Some(key);
                Ok(ClientStep::Continue)
            }
            BackendMessage::ReadyForQuery(status) => {
                self.state = State::Done;
                self.session.transaction_status = status;
                Ok(ClientStep::Ready(self.session.clone()))
            }
            other => Err(self.unexpected(other.name())),
        }
    }
}
