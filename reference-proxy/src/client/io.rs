//! Message IO on a client stream during startup (before the session loop takes over).

use crate::origin::READ_CHUNK;
use crate::stream::BoxedStream;
use bytes::BytesMut;
use elephant_protocol::{BackendMessage, DecodeError, FrontendDecoder, FrontendMessage};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why reading from or writing to the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientIoError {
    /// The client broke the protocol.
    #[error("{0}")]
    Protocol(#[from] DecodeError),
    /// The connection failed or closed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one whole message from the client. Cancel safe.
pub async fn read_message(
    stream: &mut BoxedStream,
    buffer: &mut BytesMut,
    decoder: &mut FrontendDecoder,
) -> Result<FrontendMessage, ClientIoError> {
    loop {
        if let Some(message) = decoder.decode(buffer)? {
            return Ok(message);
        }
        buffer.reserve(READ_CHUNK);
        if stream.read_buf(buffer).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed the connection",
            )
            .into());
        }
    }
}

/// Encodes and writes messages, then flushes.
pub async fn write_messages(
    stream: &mut BoxedStream,
    messages: &[BackendMessage],
) -> Result<(), ClientIoError> {
    let mut bytes = BytesMut::new();
    for message in messages {
        message
            .encode(&mut bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    }
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    Ok(())
}
