//! The codec's two error types: what can go wrong reading bytes, and writing them.
//!
//! Every [`DecodeError`] means the peer broke the protocol. A proxy answers it with an
//! `ErrorResponse` carrying [`DecodeError::SQLSTATE`] (08P01 protocol_violation) and closes
//! the connection; the Display text is written for that client to read.

use std::fmt;

/// Which side of the protocol a message belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Frontend => "frontend",
            Direction::Backend => "backend",
        })
    }
}

/// Renders a message type byte for humans: printable ASCII as itself, anything else as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag(pub u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// The peer sent bytes that are not a valid protocol message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A startup packet's length word is outside `MIN_STARTUP_PACKET_LEN..=MAX_STARTUP_PACKET_LEN`.
    #[error("invalid length of startup packet: {len} bytes (allowed: {min} to {max})")]
    InvalidStartupLength {
        /// The length word received.
        len: u64,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A startup packet carried a protocol code this codec does not speak.
    #[error(
        "unsupported frontend protocol {major}.{minor}: this server speaks protocol 3.0 to 3.2"
    )]
    UnsupportedProtocol {
        /// Requested major version.
        major: u16,
        /// Requested minor version.
        minor: u16,
    },
    /// A typed message's length word is below 4 or at/above 2^31.
    #[error("invalid {direction} message length {len} for message type {tag}")]
    InvalidLength {
        /// Direction of the message.
        direction: Direction,
        /// Message type byte.
        tag: Tag,
        /// The length word received.
        len: u64,
    },
    /// A typed message is longer than the configured maximum.
    #[error(
        "{direction} message type {tag} of {len} bytes exceeds the maximum message size of {max} bytes"
    )]
    MessageTooLarge {
        /// Direction of the message.
        direction: Direction,
        /// Message type byte.
        tag: Tag,
        /// The length word received.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// A message body ended before a field it must contain.
    #[error("malformed {message} message: {field} is missing or truncated")]
    Truncated {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A message body has bytes after its last field.
    #[error("malformed {message} message: {extra} unexpected bytes after the last field")]
    TrailingBytes {
        /// Message name.
        message: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("malformed {message} message: invalid {field} ({detail})")]
    InvalidValue {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A startup-family packet arrived after the connection had already started up.
    #[error("unexpected {packet} after the connection started: a connection starts up only once")]
    StartupPacketAfterStartup {
        /// Which startup packet it was.
        packet: &'static str,
    },
    /// A message type byte that is invalid in this direction (only `0` is invalid outright;
    /// other unknown types pass through as raw messages).
    #[error("invalid {direction} message type {tag}")]
    InvalidMessageType {
        /// Direction of the message.
        direction: Direction,
        /// Message type byte.
        tag: Tag,
    },
}

impl DecodeError {
    /// SQLSTATE a server sends for any of these errors: 08P01 protocol_violation.
    pub const SQLSTATE: &'static str = "08P01";

    /// The SQLSTATE to put into the ErrorResponse that reports this error.
    pub fn sqlstate(&self) -> &'static str {
        Self::SQLSTATE
    }
}

/// A message could not be written because one of its fields cannot be expressed on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string field contains a NUL byte, which would end the C string early.
    #[error("cannot encode {message}: {field} contains a NUL byte")]
    InteriorNul {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// A list has more entries than its Int16 count can express.
    #[error("cannot encode {message}: {count} {field} exceed the protocol maximum of {max}")]
    TooManyItems {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// Items given.
        count: usize,
        /// Largest count the wire format allows.
        max: usize,
    },
    /// The encoded message would be longer than an Int32 length word can express.
    #[error("cannot encode {message}: {len} bytes exceed the protocol maximum message size")]
    TooLong {
        /// Message name.
        message: &'static str,
        /// Encoded length.
        len: usize,
    },
    /// A field is outside what the protocol allows (for example a cancel key of 300 bytes).
    #[error("cannot encode {message}: invalid {field} ({detail})")]
    InvalidValue {
        /// Message name.
        message: &'static str,
        /// Field name.
        field: &'static str,
        /// What was wrong.
        detail: String,
    },
}
