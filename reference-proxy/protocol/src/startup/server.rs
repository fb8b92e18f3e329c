//! The server end of connection startup (see the module docs of [`crate::startup`]).

use crate::backend::{Authentication, BackendMessage, ErrorFields};
use crate::frontend::{AuthResponseKind, FrontendMessage, StartupMessage};
use crate::pg_string::PgString;
use bytes::Bytes;
use elephant_auth::{
    AuthError, AuthMethod, ChannelBindingPolicy, Md5Salt, PasswordExchange, ScramServer,
    StoredPassword, verify_cleartext, verify_md5,
};
use rand_core::RngCore;
use std::fmt;

/// How the server authenticates a connection (the proxy's or fake Postgres's `pg_hba` line).
#[derive(Clone)]
pub struct ServerAuthConfig {
    /// `None` = trust (no password asked); otherwise the password method.
    pub method: Option<AuthMethod>,
    /// Key that makes mock SCRAM salts for unknown roles stable per server, so a client cannot
    /// tell an unknown role from a wrong password. Keep it secret and constant per process.
    pub mock_key: Vec<u8>,
    /// TLS channel-binding data when the client connection runs over TLS (offers
    /// SCRAM-SHA-256-PLUS).
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl fmt::Debug for ServerAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuthConfig")
            .field("method", &self.method)
            .field("channel_binding", &self.tls_server_end_point.is_some())
            .finish_non_exhaustive()
    }
}

/// What the caller does after each step of [`ServerHandshake`].
#[derive(Debug)]
pub enum ServerStep {
    /// Send this message and read the client's answer with the decoder expecting `expect`.
    Send {
        /// Message to send.
        message: BackendMessage,
        /// What the next `'p'` message from the client is.
        expect: AuthResponseKind,
    },
    /// The client is authenticated: send these messages (ends with AuthenticationOk), then the
    /// session's ParameterStatus, BackendKeyData and ReadyForQuery.
    Authenticated(Vec<BackendMessage>),
}

/// Why a client could not log in. [`ServerHandshakeError::error_response`] is what to send
/// before closing the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerHandshakeError {
    /// The StartupMessage has no `user` parameter.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// Authentication failed (wrong password, malformed SASL message, ...).
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// The client sent something other than the expected authentication response.
    #[error("expected {expected} response, received {received}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What arrived.
        received: &'static str,
    },
}

impl ServerHandshakeError {
    /// The SQLSTATE Postgres uses for this failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ServerHandshakeError::NoUser => "28000",
            ServerHandshakeError::Auth(error) => error.sqlstate().code(),
            ServerHandshakeError::Unexpected { .. } => "08P01",
        }
    }

    /// The FATAL ErrorResponse to send before closing the connection.
    pub fn error_response(&self) -> BackendMessage {
        BackendMessage::ErrorResponse(ErrorFields::new("FATAL", self.sqlstate(), self.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingPassword,
    AwaitingMd5 { salt: [u8; 4] },
    AwaitingSaslInitial,
    AwaitingSaslResponse,
    Done,
}

/// The server end of a connection startup.
pub struct ServerHandshake {
    user: String,
    stored: Option<StoredPassword>,
    state: State,
    scram: Option<ScramServer>,
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("user", &self.user)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ServerHandshake {
    /// Begins authenticating the client that sent `startup`. `stored` is the role's stored
    /// password, `None` for an unknown role (which then fails exactly like a wrong password).
    pub fn start(
        startup: &StartupMessage,
        config: &ServerAuthConfig,
        stored: Option<StoredPassword>,
        rng: &mut dyn RngCore,
    ) -> Result<(Self, ServerStep), ServerHandshakeError> {
        let user = startup
            .parameter("user")
            .filter(|user| !user.is_empty())
            .ok_or(ServerHandshakeError::NoUser)?
            .to_string();
        let mut handshake = ServerHandshake {
            user,
            stored,
            state: State::Done,
            scram: None,
        };
        let step = match config.method {
            None => {
                ServerStep::Authenticated(vec![BackendMessage::Authentication(Authentication::Ok)])
            }
            Some(method) => handshake.request_password(method, config, rng),
        };
        Ok((handshake, step))
    }

    /// The role name the client logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn request_password(
        &mut self,
        method: AuthMethod,
        config: &ServerAuthConfig,
        rng: &mut dyn RngCore,
    ) -> ServerStep {
        // An unknown role runs the exchange its method implies and fails at the end, so the
        // client learns nothing about which roles exist.
        let exchange = match &self.stored {
            Some(stored) => stored.exchange_for(method),
            None if method == AuthMethod::Cleartext => PasswordExchange::Cleartext,
            None if method == AuthMethod::Md5 => PasswordExchange::Md5,
            None => PasswordExchange::Scram,
        };
        let (state, request, expect) = match exchange {
            PasswordExchange::Cleartext => (
                State::AwaitingPassword,
                Authentication::CleartextPassword,
                AuthResponseKind::Password,
            ),
            PasswordExchange::Md5 => {
                let salt = Md5Salt::generate(rng).bytes();
                (
                    State::AwaitingMd5 { salt },
                    Authentication::Md5Password { salt },
                    AuthResponseKind::Password,
                )
            }
            PasswordExchange::Scram => {
                let scram = self.scram_server(config, rng);
                let mechanisms = scram
                    .mechanisms()
                    .iter()
                    .map(|m| PgString::from(*m))
                    .collect();
                self.scram = Some(scram);
                (
                    State::AwaitingSaslInitial,
                    Authentication::Sasl { mechanisms },
                    AuthResponseKind::SaslInitial,
                )
            }
        };
        self.state = state;
        ServerStep::Send {
            message: BackendMessage::Authentication(request),
            expect,
        }
    }

    fn scram_server(&self, config: &ServerAuthConfig, rng: &mut dyn RngCore) -> ScramServer {
        let policy =
            ChannelBindingPolicy::from_tls_server_end_point(config.tls_server_end_point.clone());
        let secret = self.stored.as_ref().map(|stored| stored.scram_secret(rng));
        match secret {
            Some(Ok(secret)) => ScramServer::new(secret, rng, policy),
            _ => ScramServer::new_mock(&self.user, &config.mock_key, rng, policy),
        }
    }

    /// Feeds the client's next message; an error ends the handshake (send its
    /// [`ServerHandshakeError::error_response`] and close).
    pub fn handle(&mut self, message: FrontendMessage) -> Result<ServerStep, ServerHandshakeError> {
        let result = match (self.state, message) {
            (State::AwaitingPassword, FrontendMessage::Password(password)) => {
                self.check_cleartext(&password)
            }
            (State::AwaitingMd5 { salt }, FrontendMessage::Password(response)) => {
                self.check_md5(salt, &response)
            }
            (
                State::AwaitingSaslInitial,
                FrontendMessage::SaslInitialResponse { mechanism, data },
            ) => self.scram_first(&mechanism, data.unwrap_or_default()),
            (State::AwaitingSaslResponse, FrontendMessage::SaslResponse(data)) => {
                self.scram_final(&data)
            }
            (state, other) => Err(ServerHandshakeError::Unexpected {
                expected: expected_name(state),
                received: other.name(),
            }),
        };
        if result.is_err() {
            self.state = State::Done;
        }
        // Postgres words every wrong-credentials failure the same way, whatever the method.
        result.map_err(|error| match error {
            ServerHandshakeError::Auth(auth)
                if auth.sqlstate() == elephant_auth::SqlState::InvalidPassword =>
            {
                ServerHandshakeError::Auth(AuthError::PasswordMismatch {
                    user: self.user.clone(),
                })
            }
            other => other,
        })
    }

    fn stored_or_fail(&self) -> Result<&StoredPassword, ServerHandshakeError> {
        self.stored.as_ref().ok_or_else(|| {
            ServerHandshakeError::Auth(AuthError::PasswordMismatch {
                user: self.user.clone(),
            })
        })
    }

    fn authenticated(
        &mut self,
        mut messages: Vec<BackendMessage>,
    ) -> Result<ServerStep, ServerHandshakeError> {
        self.state = State::Done;
        messages.push(BackendMessage::Authentication(Authentication::Ok));
        Ok(ServerStep::Authenticated(messages))
    }

    fn check_cleartext(&mut self, password: &PgString) -> Result<ServerStep, ServerHandshakeError> {
        verify_cleartext(self.stored_or_fail()?, &self.user, password.as_bytes())?;
        self.authenticated(Vec::new())
    }

    fn check_md5(
        &mut self,
        salt: [u8; 4],
        response: &PgString,
    ) -> Result<ServerStep, ServerHandshakeError> {
        verify_md5(
            self.stored_or_fail()?,
            &self.user,
            salt,
            response.as_bytes(),
        )?;
        self.authenticated(Vec::new())
    }

    fn scram(&mut self) -> Result<&mut ScramServer, ServerHandshakeError> {
        self.scram.as_mut().ok_or(ServerHandshakeError::Unexpected {
            expected: "a SCRAM exchange",
            received: "SASL message",
        })
    }

    fn scram_first(
        &mut self,
        mechanism: &PgString,
        data: Bytes,
    ) -> Result<ServerStep, ServerHandshakeError> {
        let mechanism = mechanism.to_string();
        let server_first = self
            .scram()?
            .handle_client_first(&mechanism, &data)
            .map_err(AuthError::from)?;
        self.state = State::AwaitingSaslResponse;
        Ok(ServerStep::Send {
            message: BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from(
                server_first,
            ))),
            expect: AuthResponseKind::Sasl,
        })
    }

    fn scram_final(&mut self, data: &[u8]) -> Result<ServerStep, ServerHandshakeError> {
        let server_final = self
            .scram()?
            .handle_client_final(data)
            .map_err(AuthError::from)?;
        let final_message =
            BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from(server_final)));
        self.authenticated(vec![final_message])
    }
}

fn expected_name(state: State) -> &'static str {
    match state {
        State::AwaitingPassword | State::AwaitingMd5 { .. } => "a password",
        State::AwaitingSaslInitial => "a SASL initial",
        State::AwaitingSaslResponse => "a SASL",
        State::Done => "no further authentication",
    }
}
