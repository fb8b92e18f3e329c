//! Every limit the codec enforces, named, with the place Postgres defines it.
//!
//! A limit that is not written down here does not exist: the decoders read their bounds from
//! these constants (or from [`DecoderLimits`], which starts from them), so a reviewer can check
//! every bound in one file.

/// Largest startup-family packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest), in
/// bytes including the length word. Postgres: `MAX_STARTUP_PACKET_LENGTH` in
/// `src/include/libpq/pqcomm.h`; larger packets are refused with "invalid length of startup
/// packet".
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// Smallest startup-family packet: the length word plus the 4-byte protocol code.
pub const MIN_STARTUP_PACKET_LEN: usize = 8;

/// Smallest value of a typed message's length word: the word counts itself.
pub const MIN_MESSAGE_LEN: usize = 4;

/// Length words at or above 2^31 are rejected: the protocol defines lengths as Int32, and
/// Postgres treats a negative length as corruption.
pub const MAX_LENGTH_WORD: u64 = (1 << 31) - 1;

/// Default largest typed message, in bytes counted by the length word. Postgres lets a backend
/// message (a `DataRow`, a `CopyData`) reach `PQ_LARGE_MESSAGE_LIMIT` (1 GiB - 1,
/// `src/include/libpq/libpq.h`); a proxy that refused less would break valid sessions, so this
/// is the default, and deployments lower it with [`DecoderLimits::max_message_len`].
pub const DEFAULT_MAX_MESSAGE_LEN: usize = (1 << 30) - 1;

/// The decoders reserve buffer space for a partly received message at most this much at a time,
/// so a length word that promises a huge message costs memory only as its bytes really arrive.
pub const MAX_RESERVE_CHUNK: usize = 64 * 1024;

/// Smallest and largest cancel key. Protocol 3.0 keys are 4 bytes; protocol 3.2 (Postgres 18)
/// allows variable-length keys of up to 256 bytes (`MAX_CANCEL_KEY_LENGTH`).
pub const MIN_CANCEL_KEY_LEN: usize = 4;
/// See [`MIN_CANCEL_KEY_LEN`].
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// The limits a decoder enforces; everything not configurable here is a constant above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Largest typed message accepted, as counted by its length word (which includes itself).
    /// Clamped to [`MAX_LENGTH_WORD`].
    pub max_message_len: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        }
    }
}

impl DecoderLimits {
    /// Limits with the given maximum message length (clamped to what the protocol can express).
    pub fn with_max_message_len(max_message_len: usize) -> Self {
        let ceiling = usize::try_from(MAX_LENGTH_WORD).unwrap_or(usize::MAX);
        DecoderLimits {
            max_message_len: max_message_len.clamp(MIN_MESSAGE_LEN, ceiling),
        }
    }
}
