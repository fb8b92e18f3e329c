//! # elephant-auth: Postgres authentication, sans IO
//!
//! The reference proxy authenticates its clients the way Postgres does (cleartext password,
//! md5, SCRAM-SHA-256 with and without channel binding) and authenticates itself to the
//! upstream server with SCRAM. The deterministic network simulator runs the very same code, so
//! this crate must not touch the outside world.
//!
//! ## Layering
//!
//! This crate only ever sees the *payloads* of authentication messages: the bytes inside a
//! `SASLInitialResponse`, `SASLResponse` or `PasswordMessage`, and the bytes that go inside an
//! `AuthenticationSASLContinue` or `AuthenticationSASLFinal`. Framing those payloads into
//! Postgres messages is the job of `elephant-protocol`; deciding which method a role must use
//! (the `pg_hba.conf` part) is the job of the proxy.
//!
//! - [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) as Postgres speaks
//!   them: the stored secret format, a server state machine and a thin client wrapper;
//! - [`md5`]: the legacy md5 challenge-response;
//! - [`password`]: a role's stored password (`rolpassword`), which exchange each method leads
//!   to, and cleartext verification;
//! - this file: [`AuthError`], the one error type a caller turns into an `ErrorResponse`, and
//!   the [`SqlState`] to send with it.
//!
//! ## Determinism
//!
//! Nothing here reads a clock, spawns a task or asks the operating system for randomness.
//! Every random value (SCRAM server nonces, salts, md5 salts) is drawn from a caller-supplied
//! [`rand_core::RngCore`], so a simulator seeding that generator replays an exchange exactly.
//! The one exception is [`scram::ScramClient`]: it wraps postgres-protocol's client, which
//! draws its client nonce from its own thread-local generator. Simulator traces must therefore
//! redact SASL payloads sent by that client.
//!
//! ## A server-side SCRAM exchange
//!
//! ```
//! use elephant_auth::{
//!     AuthMethod, ChannelBindingPolicy, ClientChannelBinding, PasswordExchange, ScramClient,
//!     ScramServer, StoredPassword,
//! };
//! use rand_chacha::ChaCha8Rng;
//! use rand_core::SeedableRng;
//!
//! let mut rng = ChaCha8Rng::seed_from_u64(7); // the simulator's seeded generator
//! let stored = StoredPassword::parse("SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=")?;
//! assert_eq!(stored.exchange_for(AuthMethod::Md5), PasswordExchange::Scram);
//! let policy = ChannelBindingPolicy::from_tls_server_end_point(None);
//! let mut server = match stored.scram_secret(&mut rng) {
//!     Ok(secret) => ScramServer::new(secret, &mut rng, policy),
//!     Err(_) => ScramServer::new_mock("alice", b"per-server mock key", &mut rng, policy),
//! };
//! // AuthenticationSASL advertises server.mechanisms(); the client answers:
//! let mut client = ScramClient::new(b"secret", ClientChannelBinding::NotSupported);
//! let client_first = client.client_first()?;
//! let server_first = server.handle_client_first(client.mechanism(), &client_first)?;
//! let client_final = client.handle_server_first(&server_first)?;
//! let server_final = server.handle_client_final(&client_final)?; // AuthenticationSASLFinal
//! client.handle_server_final(&server_final)?;
//! assert!(server.is_authenticated());
//! # Ok::<(), elephant_auth::AuthError>(())
//! ```
//!
//! ## Secrets
//!
//! Passwords, md5 hashes, SCRAM keys and proofs never appear in `Debug` output or in error
//! messages, and they are compared in constant time.

pub mod md5;
pub mod password;
pub mod scram;

pub use crate::md5::{Md5Salt, md5_response, md5_stored, verify_md5};
pub use password::{AuthMethod, PasswordExchange, StoredPassword, verify_cleartext};
pub use scram::{
    ChannelBindingPolicy, ClientChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramClient,
    ScramError, ScramMessage, ScramSecret, ScramServer, SecretError,
};

/// A Postgres error code (SQLSTATE) to send in the `ErrorResponse` that ends a failed
/// authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlState {
    /// `28P01` invalid_password: the client does not know the password.
    InvalidPassword,
    /// `28000` invalid_authorization_specification: the role cannot authenticate this way
    /// (for example its stored secret is unusable for the chosen method).
    InvalidAuthorizationSpecification,
    /// `08P01` protocol_violation: the peer sent a malformed or out-of-order message.
    ProtocolViolation,
    /// `0A000` feature_not_supported: the peer asked for a SCRAM feature Postgres does not
    /// implement (authorization identity, mandatory extensions).
    FeatureNotSupported,
}

impl SqlState {
    /// The five-character code, as sent in the `C` field of an `ErrorResponse`.
    pub const fn code(self) -> &'static str {
        match self {
            SqlState::InvalidPassword => "28P01",
            SqlState::InvalidAuthorizationSpecification => "28000",
            SqlState::ProtocolViolation => "08P01",
            SqlState::FeatureNotSupported => "0A000",
        }
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.code())
    }
}

/// Any authentication failure. Every message is safe to show to the client: it names what
/// went wrong and never contains a password, hash, key or proof.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A SCRAM exchange failed.
    #[error(transparent)]
    Scram(#[from] ScramError),
    /// A stored password or SCRAM secret could not be parsed or created.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The client sent a wrong password (cleartext) or a wrong md5 response.
    #[error("password authentication failed for user \"{user}\"")]
    PasswordMismatch {
        /// The role name from the startup message.
        user: String,
    },
    /// The client sent an empty password. Postgres refuses those outright, because libpq
    /// treats an empty password as no password at all.
    #[error("empty password returned by client")]
    EmptyPassword,
    /// The password message contained a NUL byte before its end.
    #[error("invalid password packet: the password contains a NUL byte")]
    PasswordContainsNul,
    /// The md5 response is not `md5` followed by 32 lowercase hexadecimal digits.
    #[error(
        "malformed md5 password response: expected \"md5\" followed by 32 lowercase hexadecimal digits"
    )]
    MalformedMd5Response,
    /// md5 authentication was attempted for a role whose password is stored as a SCRAM
    /// secret, from which no md5 hash can be derived.
    #[error(
        "md5 authentication is not possible for user \"{user}\" because the password is stored as a SCRAM secret; use SCRAM-SHA-256 (see StoredPassword::exchange_for)"
    )]
    Md5NotPossibleWithScramSecret {
        /// The role name from the startup message.
        user: String,
    },
    /// SCRAM authentication was attempted for a role whose password is stored as an md5
    /// hash, from which no SCRAM secret can be derived.
    #[error(
        "SCRAM authentication is not possible because the password is stored as an md5 hash; re-set the password with password_encryption = scram-sha-256"
    )]
    ScramNotPossibleWithMd5Hash,
}

impl AuthError {
    /// The SQLSTATE to send to the client with this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            AuthError::Scram(error) => error.sqlstate(),
            AuthError::Secret(error) => error.sqlstate(),
            AuthError::PasswordMismatch { .. } | AuthError::EmptyPassword => {
                SqlState::InvalidPassword
            }
            AuthError::PasswordContainsNul | AuthError::MalformedMd5Response => {
                SqlState::ProtocolViolation
            }
            AuthError::Md5NotPossibleWithScramSecret { .. }
            | AuthError::ScramNotPossibleWithMd5Hash => SqlState::InvalidAuthorizationSpecification,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_codes_match_postgres() {
        assert_eq!(SqlState::InvalidPassword.code(), "28P01");
        assert_eq!(SqlState::InvalidAuthorizationSpecification.code(), "28000");
        assert_eq!(SqlState::ProtocolViolation.code(), "08P01");
        assert_eq!(SqlState::FeatureNotSupported.code(), "0A000");
        assert_eq!(SqlState::ProtocolViolation.to_string(), "08P01");
    }

    #[test]
    fn password_errors_carry_the_expected_sqlstate() {
        let mismatch = AuthError::PasswordMismatch {
            user: "alice".to_owned(),
        };
        assert_eq!(mismatch.sqlstate(), SqlState::InvalidPassword);
        assert_eq!(
            mismatch.to_string(),
            "password authentication failed for user \"alice\""
        );
        assert_eq!(
            AuthError::from(ScramError::ProofMismatch).sqlstate(),
            SqlState::InvalidPassword
        );
        assert_eq!(
            AuthError::MalformedMd5Response.sqlstate(),
            SqlState::ProtocolViolation
        );
    }
}
