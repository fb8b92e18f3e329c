//! # elephant-protocol: the Postgres wire protocol, sans IO
//!
//! The one codec of elephant-tunnel. The reference proxy, the simulator's fake Postgres and the
//! conformance runner all speak Postgres through this crate; if any of them grew protocol logic
//! of its own, the simulator would prove nothing about the proxy.
//!
//! "Sans IO" is the design rule, learned from quinn-proto and rust-postgres's
//! postgres-protocol: this crate depends on no async runtime, opens no socket, reads no clock
//! and draws no random numbers of its own. Bytes go in ([`FrontendDecoder`],
//! [`BackendDecoder`]), messages come out; messages go in ([`FrontendMessage::encode`],
//! [`BackendMessage::encode`]), bytes come out. State machines that need randomness (SCRAM
//! nonces, cancel keys) take it from the caller, so a seeded simulator replays exactly.
//!
//! Layout:
//! - [`frontend`] / [`backend`]: every message of protocol 3.0–3.2 in each direction, its
//!   decoding and encoding;
//! - [`codec`]: the incremental decoders over a `BytesMut`;
//! - [`limits`]: every bound the codec enforces, named;
//! - [`error`]: [`DecodeError`] (peer's fault, maps to SQLSTATE 08P01) and [`EncodeError`].

pub mod backend;
pub mod codec;
pub mod display;
pub mod error;
pub mod frontend;
pub mod limits;
mod pg_string;
pub mod startup;
mod wire;

pub use backend::{
    Authentication, BackendKeyData, BackendMessage, CopyResponse, DataRow, ErrorFields,
    FieldDescription, TransactionStatus,
};
pub use codec::{
    BackendDecoder, EncryptionResponse, FrontendDecoder, FrontendPhase, decode_encryption_response,
};
pub use error::{DecodeError, Direction, EncodeError};
pub use frontend::{
    AuthResponseKind, Bind, CancelRequest, FrontendMessage, FunctionCall, Parse, ProtocolVersion,
    StartupMessage, Target,
};
pub use limits::DecoderLimits;
pub use pg_string::PgString;

#[cfg(test)]
mod tests;
