//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, as Postgres implements them.
//!
//! Postgres's SCRAM (RFC 5802 with the SHA-256 profile of RFC 7677, see the backend's
//! `auth-scram.c`) differs from the RFCs in a few ways this module reproduces, because the
//! proxy must accept exactly the clients Postgres accepts:
//!
//! - the user name in the client-first-message is ignored (libpq sends `n=,`); the role comes
//!   from the startup message;
//! - an authorization identity (`a=`) and mandatory extensions (`m=`) are refused;
//! - the only channel binding type is `tls-server-end-point`;
//! - the server nonce is 18 random bytes, base64-encoded;
//! - a server that offers `SCRAM-SHA-256-PLUS` refuses a client that says `y` ("I support
//!   channel binding but think the server does not"): that client was downgraded by someone
//!   in the middle.
//!
//! Layout:
//! - [`ScramSecret`]: the stored verifier (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`);
//! - [`ScramServer`]: the server-side state machine;
//! - [`ScramClient`]: a thin wrapper around postgres-protocol's client;
//! - `keys`: the key derivation and proof arithmetic of RFC 5802 §3;
//! - `attributes`: parsing of `name=value` attribute lists.

mod attributes;
mod client;
mod keys;
mod secret;
mod server;

pub use client::{ClientChannelBinding, ScramClient};
pub use keys::KEY_LENGTH;
pub use secret::{
    DEFAULT_ITERATIONS, DEFAULT_SALT_LENGTH, MAXIMUM_ITERATIONS, MAXIMUM_SECRET_LENGTH,
    MINIMUM_ITERATIONS, SCRAM_SECRET_PREFIX, ScramSecret, SecretError,
};
pub use server::{ChannelBindingPolicy, SERVER_NONCE_RANDOM_BYTES, ScramServer};

use crate::SqlState;

/// The SASL mechanism name of SCRAM-SHA-256 without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The SASL mechanism name of SCRAM-SHA-256 with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The only channel binding type Postgres supports (RFC 5929): a hash of the server's TLS
/// certificate.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
/// The longest SCRAM message either side accepts, in bytes. Real messages are under 200
/// bytes; the bound keeps a hostile peer from making us parse megabytes.
pub const MAXIMUM_MESSAGE_LENGTH: usize = 4096;
/// The largest iteration count postgres-protocol's client accepts from a server. Secrets with
/// more iterations work with libpq but not with [`ScramClient`].
pub const CLIENT_MAXIMUM_ITERATIONS: u32 = 100_000;

/// The four messages of a SCRAM exchange, named as in RFC 5802, used in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMessage {
    /// `gs2-header client-first-message-bare`, sent in `SASLInitialResponse`.
    ClientFirst,
    /// `r=nonce,s=salt,i=iterations`, sent in `AuthenticationSASLContinue`.
    ServerFirst,
    /// `c=binding,r=nonce,p=proof`, sent in `SASLResponse`.
    ClientFinal,
    /// `v=signature`, sent in `AuthenticationSASLFinal`.
    ServerFinal,
}

impl std::fmt::Display for ScramMessage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            ScramMessage::ClientFirst => "client-first-message",
            ScramMessage::ServerFirst => "server-first-message",
            ScramMessage::ClientFinal => "client-final-message",
            ScramMessage::ServerFinal => "server-final-message",
        })
    }
}

/// A failed SCRAM exchange, on either side. Messages never contain keys, proofs or
/// passwords; attribute names shown are always single ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message arrived that the exchange does not expect in its current state.
    #[error("SCRAM {message} is out of order: the exchange {state}")]
    OutOfOrder {
        /// The message that arrived or was asked for.
        message: ScramMessage,
        /// What the exchange was doing, e.g. "expects client-first-message".
        state: &'static str,
    },
    /// The client chose a SASL mechanism the server did not offer.
    #[error(
        "client selected an invalid SASL authentication mechanism; this server offers: {offered}"
    )]
    UnsupportedMechanism {
        /// The mechanisms the server advertised, comma-separated.
        offered: String,
    },
    /// A message was empty.
    #[error("malformed SCRAM {message}: the message is empty")]
    EmptyMessage {
        /// Which message.
        message: ScramMessage,
    },
    /// A message exceeded [`MAXIMUM_MESSAGE_LENGTH`].
    #[error(
        "malformed SCRAM {message}: {length} bytes is longer than the {MAXIMUM_MESSAGE_LENGTH} bytes accepted"
    )]
    MessageTooLong {
        /// Which message.
        message: ScramMessage,
        /// Its length in bytes.
        length: usize,
    },
    /// A message broke the SCRAM grammar.
    #[error("malformed SCRAM {message}: {problem}")]
    Malformed {
        /// Which message.
        message: ScramMessage,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A required attribute is absent.
    #[error("malformed SCRAM {message}: attribute \"{attribute}\" is missing")]
    MissingAttribute {
        /// Which message.
        message: ScramMessage,
        /// The attribute name.
        attribute: char,
    },
    /// A different attribute stands where a required one belongs.
    #[error("malformed SCRAM {message}: expected attribute \"{expected}\" but found \"{found}\"")]
    WrongAttribute {
        /// Which message.
        message: ScramMessage,
        /// The attribute the grammar requires here.
        expected: char,
        /// The attribute the peer sent.
        found: char,
    },
    /// A SCRAM attribute appears twice, or in the extension area where it does not belong.
    #[error("malformed SCRAM {message}: attribute \"{attribute}\" is duplicated or out of place")]
    RepeatedAttribute {
        /// Which message.
        message: ScramMessage,
        /// The attribute name.
        attribute: char,
    },
    /// The client asked for an authorization identity (`a=`), which Postgres does not support.
    #[error("client uses authorization identity, but it is not supported")]
    AuthorizationIdentityUnsupported,
    /// The client requires a mandatory extension (`m=`), which Postgres does not support.
    #[error("client requires an unsupported SCRAM extension")]
    MandatoryExtensionUnsupported,
    /// A nonce contains characters outside printable ASCII.
    #[error("malformed SCRAM {message}: the nonce contains non-printable characters")]
    NonPrintableNonce {
        /// Which message.
        message: ScramMessage,
    },
    /// The client chose `SCRAM-SHA-256-PLUS` but did not send `p=` in its GS2 header.
    #[error(
        "SCRAM channel binding negotiation error: the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data"
    )]
    MissingChannelBindingData,
    /// The client chose plain `SCRAM-SHA-256` but sent `p=` in its GS2 header.
    #[error(
        "SCRAM channel binding negotiation error: the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data"
    )]
    UnexpectedChannelBindingData,
    /// The client said `y` (supports channel binding, thinks the server does not) although
    /// this server offered `SCRAM-SHA-256-PLUS`: the mechanism list was likely tampered with.
    #[error(
        "SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not; however, this server does support channel binding (possible downgrade attack)"
    )]
    ChannelBindingDowngrade,
    /// The client asked for a channel binding type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type; only \"{TLS_SERVER_END_POINT}\" is supported")]
    UnsupportedChannelBindingType,
    /// The `c=` attribute of the client-final-message does not match the GS2 header and
    /// channel binding data negotiated in the client-first-message.
    #[error(
        "SCRAM channel binding check failed: the client's channel binding data does not match this connection"
    )]
    ChannelBindingMismatch,
    /// The nonce of the client-final-message is not the one of this exchange.
    #[error("invalid SCRAM response: the nonce does not match this exchange")]
    NonceMismatch,
    /// The proof attribute is not base64 of a 32-byte value.
    #[error("malformed SCRAM client-final-message: the proof is not base64 of 32 bytes")]
    MalformedProof,
    /// The client's proof is wrong: it does not know the password.
    #[error("SCRAM client proof does not match: password authentication failed")]
    ProofMismatch,
    /// Client side: the server's signature is wrong, so the server does not know the
    /// password's keys (it may be an impostor).
    #[error(
        "SCRAM server signature does not match: the server could not prove it knows the password"
    )]
    ServerSignatureMismatch,
    /// Client side: the server ended the exchange with an `e=` error attribute.
    #[error("SCRAM server reported an error: {error}")]
    ServerReportedError {
        /// The server's error value, e.g. `invalid-proof`.
        error: String,
    },
    /// Client side: the server offered no SCRAM mechanism this client can use.
    #[error(
        "server offered no usable SCRAM mechanism: it offered [{offered}], and SCRAM-SHA-256-PLUS needs TLS channel binding data"
    )]
    NoUsableMechanism {
        /// The mechanisms the server advertised, comma-separated.
        offered: String,
    },
    /// Client side: postgres-protocol rejected a server message.
    #[error("malformed SCRAM {message} from the server: {detail}")]
    MalformedServerMessage {
        /// Which message.
        message: ScramMessage,
        /// postgres-protocol's description of the problem.
        detail: String,
    },
}

impl ScramError {
    /// The SQLSTATE to send to the client with this error.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ScramError::ProofMismatch | ScramError::ServerReportedError { .. } => {
                SqlState::InvalidPassword
            }
            ScramError::ServerSignatureMismatch | ScramError::NoUsableMechanism { .. } => {
                SqlState::InvalidAuthorizationSpecification
            }
            ScramError::AuthorizationIdentityUnsupported
            | ScramError::MandatoryExtensionUnsupported => SqlState::FeatureNotSupported,
            ScramError::OutOfOrder { .. }
            | ScramError::UnsupportedMechanism { .. }
            | ScramError::EmptyMessage { .. }
            | ScramError::MessageTooLong { .. }
            | ScramError::Malformed { .. }
            | ScramError::MissingAttribute { .. }
            | ScramError::WrongAttribute { .. }
            | ScramError::RepeatedAttribute { .. }
            | ScramError::NonPrintableNonce { .. }
            | ScramError::MissingChannelBindingData
            | ScramError::UnexpectedChannelBindingData
            | ScramError::ChannelBindingDowngrade
            | ScramError::UnsupportedChannelBindingType
            | ScramError::ChannelBindingMismatch
            | ScramError::NonceMismatch
            | ScramError::MalformedProof
            | ScramError::MalformedServerMessage { .. } => SqlState::ProtocolViolation,
        }
    }
}
