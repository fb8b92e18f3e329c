//! Incremental decoders: turn a growing `BytesMut` into whole messages.
//!
//! `decode` returns `Ok(None)` while a message is incomplete and never consumes a partial one,
//! so callers append bytes as they arrive and call again. Each complete frame is split off the
//! buffer and frozen; decoded bodies are slices of it (zero-copy). The length word is checked
//! against the limits *before* waiting for the body, so an oversized or negative length fails at
//! once instead of making the caller buffer up to it; buffer space for a partial message is
//! reserved at most [`MAX_RESERVE_CHUNK`] at a time.

use crate::backend::BackendMessage;
use crate::error::{DecodeError, Direction, Tag};
use crate::frontend::{
    AuthResponseKind, CANCEL_REQUEST_CODE, FrontendMessage, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};
use crate::limits::{
    DecoderLimits, MAX_LENGTH_WORD, MAX_RESERVE_CHUNK, MAX_STARTUP_PACKET_LEN, MIN_MESSAGE_LEN,
    MIN_STARTUP_PACKET_LEN,
};
use bytes::{Bytes, BytesMut};

/// Where a client connection is in its life, as far as framing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendPhase {
    /// Before the StartupMessage: only untyped startup-family packets are valid.
    Startup,
    /// After the StartupMessage: only typed messages are valid.
    Running,
}

/// Decodes what a client sends: the untyped startup family, then typed messages.
#[derive(Debug, Clone)]
pub struct FrontendDecoder {
    limits: DecoderLimits,
    phase: FrontendPhase,
    auth_response: AuthResponseKind,
}

impl FrontendDecoder {
    /// A decoder for a new connection (expecting the startup family).
    pub fn new(limits: DecoderLimits) -> Self {
        FrontendDecoder {
            limits,
            phase: FrontendPhase::Startup,
            auth_response: AuthResponseKind::Password,
        }
    }

    /// A decoder for a connection whose startup already happened elsewhere.
    pub fn running(limits: DecoderLimits) -> Self {
        FrontendDecoder {
            phase: FrontendPhase::Running,
            ..FrontendDecoder::new(limits)
        }
    }

    /// The current phase.
    pub fn phase(&self) -> FrontendPhase {
        self.phase
    }

    /// Tells the decoder which `'p'` message the server now waits for; call it when sending an
    /// authentication request. After a SASLInitialResponse it moves to SASLResponse by itself.
    pub fn expect_auth_response(&mut self, kind: AuthResponseKind) {
        self.auth_response = kind;
    }

    /// Decodes the next whole message, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<FrontendMessage>, DecodeError> {
        match self.phase {
            FrontendPhase::Startup => self.decode_startup(buf),
            FrontendPhase::Running => self.decode_running(buf),
        }
    }

    fn decode_startup(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrontendMessage>, DecodeError> {
        let Some(body) = take_startup_frame(buf)? else {
            return Ok(None);
        };
        let message = FrontendMessage::decode_startup_packet(body)?;
        if matches!(message, FrontendMessage::Startup(_)) {
            self.phase = FrontendPhase::Running;
        }
        Ok(Some(message))
    }

    fn decode_running(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<FrontendMessage>, DecodeError> {
        if buf.first() == Some(&0) {
            return Err(classify_late_startup_packet(buf));
        }
        let Some((tag, body)) = take_typed_frame(buf, Direction::Frontend, &self.limits)? else {
            return Ok(None);
        };
        let message = FrontendMessage::decode_typed(tag, body, self.auth_response)?;
        if matches!(message, FrontendMessage::SaslInitialResponse { .. }) {
            self.auth_response = AuthResponseKind::Sasl;
        }
        Ok(Some(message))
    }
}

/// Decodes what a server sends (all typed messages).
///
/// The single-byte answers to SSLRequest / GSSENCRequest are not messages; read them with
/// [`decode_encryption_response`] before handing the stream to this decoder.
#[derive(Debug, Clone)]
pub struct BackendDecoder {
    limits: DecoderLimits,
}

impl BackendDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: DecoderLimits) -> Self {
        BackendDecoder { limits }
    }

    /// Decodes the next whole message, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BackendMessage>, DecodeError> {
        let Some((tag, body)) = take_typed_frame(buf, Direction::Backend, &self.limits)? else {
            return Ok(None);
        };
        BackendMessage::decode(tag, body).map(Some)
    }
}

/// The server's one-byte answer to an SSLRequest or GSSENCRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionResponse {
    /// `'S'` (SSL) or `'G'` (GSS): proceed with the handshake.
    Accepted,
    /// `'N'`: continue unencrypted or hang up.
    Refused,
}

/// Reads the one-byte answer to SSLRequest (`accept` = `b'S'`) or GSSENCRequest (`b'G'`). A
/// server that does not understand the request may answer with an ErrorResponse (`'E'`), which
/// is reported as an error; the caller should then read it with [`BackendDecoder`].
pub fn decode_encryption_response(
    buf: &mut BytesMut,
    accept: u8,
) -> Result<Option<EncryptionResponse>, DecodeError> {
    let Some(&byte) = buf.first() else {
        return Ok(None);
    };
    let response = match byte {
        b'N' => EncryptionResponse::Refused,
        byte if byte == accept => EncryptionResponse::Accepted,
        other => {
            return Err(DecodeError::InvalidValue {
                message: "encryption response",
                field: "answer",
                detail: format!("expected '{}' or 'N', got {}", accept as char, Tag(other)),
            });
        }
    };
    let _ = buf.split_to(1);
    Ok(Some(response))
}

/// Reads a length word at the start of `buf` (only called once 4 bytes are present).
fn length_word(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u64::from(u32::from_be_bytes(word))
}

/// Splits one untyped startup-family packet off `buf`, returning its body after the length.
fn take_startup_frame(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = length_word(buf);
    if len < MIN_STARTUP_PACKET_LEN as u64 || len > MAX_STARTUP_PACKET_LEN as u64 {
        return Err(DecodeError::InvalidStartupLength {
            len,
            min: MIN_STARTUP_PACKET_LEN,
            max: MAX_STARTUP_PACKET_LEN,
        });
    }
    let len = len as usize;
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len).freeze();
    Ok(Some(frame.split_off(4)))
}

/// Splits one typed message off `buf`, returning its type byte and body.
fn take_typed_frame(
    buf: &mut BytesMut,
    direction: Direction,
    limits: &DecoderLimits,
) -> Result<Option<(u8, Bytes)>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = length_word(&buf[1..]);
    if len < MIN_MESSAGE_LEN as u64 || len > MAX_LENGTH_WORD {
        return Err(DecodeError::InvalidLength {
            direction,
            tag: Tag(tag),
            len,
        });
    }
    if len > limits.max_message_len as u64 {
        return Err(DecodeError::MessageTooLarge {
            direction,
            tag: Tag(tag),
            len,
            max: limits.max_message_len,
        });
    }
    let frame_len = 1 + len as usize;
    if buf.len() < frame_len {
        buf.reserve((frame_len - buf.len()).min(MAX_RESERVE_CHUNK));
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_len).freeze();
    Ok(Some((tag, frame.split_off(5))))
}

/// Names the startup-family packet a client sent after startup (type byte 0 can only be the
/// high byte of an untyped packet's length), for a clear error.
fn classify_late_startup_packet(buf: &[u8]) -> DecodeError {
    let code = buf.get(4..8).map(|code| {
        let mut word = [0u8; 4];
        word.copy_from_slice(code);
        u32::from_be_bytes(word)
    });
    let packet = match code {
        Some(SSL_REQUEST_CODE) => "SSLRequest",
        Some(GSSENC_REQUEST_CODE) => "GSSENCRequest",
        Some(CANCEL_REQUEST_CODE) => "CancelRequest",
        Some(code) if code >> 16 == 3 => "StartupMessage",
        _ => {
            return DecodeError::InvalidMessageType {
                direction: Direction::Frontend,
                tag: Tag(0),
            };
        }
    };
    DecodeError::StartupPacketAfterStartup { packet }
}
