//! Bytes to messages and back for one fake backend, through `elephant-protocol` only.
//!
//! Output is buffered the way Postgres buffers it: nothing reaches the socket until
//! ReadyForQuery, a Flush message, or [`OUTPUT_FLUSH_THRESHOLD`] bytes — so a client (or a
//! proxy) that forgets Sync/Flush waits here exactly as it would against Postgres.

use super::error::PgError;
use bytes::BytesMut;
use elephant_protocol::{
    AuthResponseKind, BackendMessage, DecodeError, DecoderLimits, FrontendDecoder, FrontendMessage,
};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Output is written out once this many bytes are buffered (Postgres's `PQ_SEND_BUFFER_SIZE`).
pub const OUTPUT_FLUSH_THRESHOLD: usize = 8192;

/// Bytes read from the socket at a time.
pub const READ_CHUNK: usize = 8192;

/// Largest message the fake accepts from a client (1 MiB: the workload's are tiny).
pub const MAX_CLIENT_MESSAGE_LEN: usize = 1 << 20;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol (answered with a FATAL 08P01 when possible).
    #[error("{0}")]
    Protocol(#[from] DecodeError),
    /// The fake sent a FATAL error and closes the connection.
    #[error("{}", .0.message)]
    Fatal(PgError),
}

/// A framed connection.
pub struct Conn<S> {
    stream: S,
    input: BytesMut,
    decoder: FrontendDecoder,
    output: BytesMut,
    tap: Option<(WireTap, String)>,
}

/// Receives one line per message the fake receives or sends (rendered by
/// elephant-protocol's Display, which redacts secrets), for `sim replay --wire`.
#[derive(Clone)]
pub struct WireTap(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for WireTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireTap")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a fresh connection (expecting the startup family).
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrontendDecoder::new(DecoderLimits::with_max_message_len(
                MAX_CLIENT_MESSAGE_LEN,
            )),
            output: BytesMut::new(),
            tap: None,
        }
    }

    /// Reports every message to `tap`, prefixed with `label`.
    pub fn tap(&mut self, tap: Option<WireTap>, label: String) {
        self.tap = tap.map(|tap| (tap, label));
    }

    fn record(&self, arrow: &str, message: &dyn std::fmt::Display) {
        if let Some((tap, label)) = &self.tap {
            (tap.0)(&format!("{label} {arrow} {message}"));
        }
    }

    /// The next message, `None` when the peer closed the connection.
    pub async fn read(&mut self) -> Result<Option<FrontendMessage>, ConnError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.input)? {
                self.record("<-", &message);
                return Ok(Some(message));
            }
            self.input.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Says which `'p'` message comes next during authentication.
    pub fn expect_auth_response(&mut self, kind: AuthResponseKind) {
        self.decoder.expect_auth_response(kind);
    }

    /// Buffers a message.
    pub fn send(&mut self, message: &BackendMessage) -> Result<(), ConnError> {
        self.record("->", message);
        message.encode(&mut self.output).map_err(|error| {
            ConnError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                error.to_string(),
            ))
        })
    }

    /// Buffers an ErrorResponse.
    pub fn send_error(&mut self, error: &PgError) -> Result<(), ConnError> {
        self.send(&BackendMessage::ErrorResponse(error.to_fields()))
    }

    /// Writes one raw byte (the answer to SSLRequest / GSSENCRequest).
    pub async fn send_byte(&mut self, byte: u8) -> Result<(), ConnError> {
        self.flush().await?;
        self.stream.write_all(&[byte]).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Writes out the buffered output if it passed the threshold.
    pub async fn flush_if_full(&mut self) -> Result<(), ConnError> {
        if self.output.len() >= OUTPUT_FLUSH_THRESHOLD {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends a FATAL error and ends the connection.
    pub async fn fatal(&mut self, error: PgError) -> ConnError {
        let error = PgError {
            severity: "FATAL",
            ..error
        };
        if self.send_error(&error).is_ok() {
            let _ = self.flush().await;
        }
        let _ = self.stream.shutdown().await;
        ConnError::Fatal(error)
    }
}
