//! [`PgString`]: a protocol string as the peer sent it.
//!
//! Postgres strings on the wire are NUL-terminated bytes in the client encoding, which is not
//! always UTF-8. A proxy must forward them unchanged, so the codec keeps the bytes (a zero-copy
//! slice of the received frame) and offers a UTF-8 view on demand.

use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

/// A protocol string without its terminating NUL. Decoded values never contain a NUL byte;
/// values built by callers are checked when encoded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PgString(Bytes);

impl PgString {
    /// Wraps bytes as a protocol string.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        PgString(bytes.into())
    }

    /// The raw bytes, without the terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes as a cheap clone of the underlying buffer.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The string as UTF-8, or `None` when the peer used another encoding.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The string as UTF-8, replacing invalid sequences: for logs and traces only.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Length in bytes, without the terminating NUL.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the bytes contain a NUL, which makes the string impossible to encode.
    pub fn contains_nul(&self) -> bool {
        memchr::memchr(0, &self.0).is_some()
    }
}

impl From<&str> for PgString {
    fn from(value: &str) -> Self {
        PgString(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl From<String> for PgString {
    fn from(value: String) -> Self {
        PgString(Bytes::from(value))
    }
}

impl PartialEq<str> for PgString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for PgString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for PgString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string_lossy(), f)
    }
}

impl fmt::Display for PgString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}
