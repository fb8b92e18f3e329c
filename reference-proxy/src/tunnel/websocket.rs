//! A WebSocket seen as a plain byte stream, the way `cloudflared access tcp` uses it.
//!
//! Why: the proxy's pool, Postgres TLS and sessions only know [`AsyncRead`] + [`AsyncWrite`]
//! ([`crate::stream::BoxedStream`]). A Cloudflare Tunnel carries the Postgres bytes as WebSocket
//! binary messages, so this adapter turns messages into bytes and back, following what the
//! real cloudflared does on the wire (see `/work/shared/reference/cloudflared-wire.md`):
//!
//! - **Outbound**, every `poll_write` becomes ONE binary message of at most
//!   [`MAX_MESSAGE_LEN`] bytes: cloudflared on the tunnel side truncates larger messages,
//!   silently dropping the rest. The write returns how much it took, so `write_all` loops.
//!   Each message goes to the wire at once ([`WRITE_BUFFER_SIZE`] is 0, as cloudflared writes
//!   every local read immediately); `poll_flush` is still honoured.
//! - **Backpressure**: at most one message waits in tungstenite's write buffer (bounded by
//!   [`MAX_WRITE_BUFFER_SIZE`]); while it cannot be written, `poll_write` returns `Pending`.
//! - **Inbound**, binary messages of any size and fragmentation (up to
//!   [`MAX_INBOUND_MESSAGE_LEN`]) are read as one byte stream; a partially consumed message
//!   stays buffered. Text messages are discarded, as cloudflared does. Pings are answered with
//!   a pong carrying the same payload: tungstenite queues it and flushes it on the next read
//!   attempt, which this adapter makes right after handing over the ping, so a caller that
//!   only reads still answers pings.
//! - **End**: a Close frame is echoed (as cloudflared does) and then reads return EOF; a peer
//!   that just closes the connection (cloudflared never sends Close) is EOF too.
//! - **Shutdown**: cloudflared has no half-close and sends no Close frame when its local side
//!   ends, so by default `poll_shutdown` flushes pending messages and shuts the underlying
//!   stream down without a Close frame. [`WebSocketStream::close_frame_on_shutdown`] opts into
//!   the RFC 6455 Close frame for peers that want one.

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Largest binary message sent: cloudflared truncates messages over 16 KiB.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// Bytes tungstenite collects before writing to the stream: 0 = every message goes out at once.
pub const WRITE_BUFFER_SIZE: usize = 0;

/// Hard cap of tungstenite's write buffer: one full message plus its header and queued control
/// frames (pong, close) fit; more would mean unbounded buffering, which `poll_write` prevents by
/// returning `Pending` first.
pub const MAX_WRITE_BUFFER_SIZE: usize = 2 * MAX_MESSAGE_LEN;

/// Size of tungstenite's read buffer (allocated per connection; TLS records are ≤ 16 KiB).
pub const READ_BUFFER_SIZE: usize = 32 * 1024;

/// Largest inbound message after reassembly (tungstenite's default; a peer sending more is
/// misbehaving, and the proxy's own Postgres message limit is far below it).
pub const MAX_INBOUND_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Largest single inbound frame payload (tungstenite's default).
pub const MAX_INBOUND_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The tungstenite configuration every tunnel WebSocket uses: bounded buffers in both
/// directions.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(WRITE_BUFFER_SIZE)
        .max_write_buffer_size(MAX_WRITE_BUFFER_SIZE)
        .max_message_size(Some(MAX_INBOUND_MESSAGE_LEN))
        .max_frame_size(Some(MAX_INBOUND_FRAME_LEN))
}

/// Where the read side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Messages may still arrive.
    Open,
    /// The peer sent Close; our echo is being flushed, then reads return EOF.
    EchoingClose,
    /// Reads return EOF.
    Eof,
}

/// A WebSocket carrying a byte stream in binary messages (see the module docs).
#[derive(Debug)]
pub struct WebSocketStream<S> {
    inner: tokio_tungstenite::WebSocketStream<S>,
    /// The unread rest of the current inbound message.
    pending: Bytes,
    read_state: ReadState,
    close_on_shutdown: bool,
}

// The proxy boxes every connection as `Send + Sync + Unpin`; keep this type eligible.
const _: () = {
    const fn assert_proxy_stream<T: Send + Sync + Unpin + 'static>() {}
    assert_proxy_stream::<WebSocketStream<tokio::net::TcpStream>>();
    assert_proxy_stream::<WebSocketStream<tokio_boring::SslStream<tokio::net::TcpStream>>>();
    assert_proxy_stream::<WebSocketStream<tokio::io::DuplexStream>>();
};

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocketStream<S> {
    /// Wraps a stream whose WebSocket handshake is already done, with [`websocket_config`].
    pub async fn from_raw_socket(stream: S, role: Role) -> Self {
        let config = Some(websocket_config());
        let inner = tokio_tungstenite::WebSocketStream::from_raw_socket(stream, role, config).await;
        Self::from_websocket(inner)
    }

    /// Like [`WebSocketStream::from_raw_socket`], with bytes already read past the handshake
    /// (the start of the first frames).
    pub async fn from_partially_read(stream: S, already_read: Vec<u8>, role: Role) -> Self {
        let config = Some(websocket_config());
        let inner = tokio_tungstenite::WebSocketStream::from_partially_read(
            stream,
            already_read,
            role,
            config,
        )
        .await;
        Self::from_websocket(inner)
    }

    /// Wraps an existing tokio-tungstenite stream. Its configuration is kept as is: build it
    /// with [`websocket_config`] to keep the write buffer bounded.
    pub fn from_websocket(inner: tokio_tungstenite::WebSocketStream<S>) -> Self {
        WebSocketStream {
            inner,
            pending: Bytes::new(),
            read_state: ReadState::Open,
            close_on_shutdown: false,
        }
    }

    /// Send a Close frame on `poll_shutdown` (default: no, as cloudflared).
    pub fn close_frame_on_shutdown(mut self, send_close: bool) -> Self {
        self.close_on_shutdown = send_close;
        self
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// Copies buffered message bytes into `buf`; false when nothing is buffered.
    fn copy_pending(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        true
    }

    /// Takes one inbound message: data is buffered, Close starts the echo, the rest is dropped
    /// (tungstenite has already queued the pong for a ping; the next poll flushes it).
    fn accept_message(&mut self, message: Message) {
        match message {
            Message::Binary(data) => self.pending = data,
            Message::Close(_) => self.read_state = ReadState::EchoingClose,
            Message::Text(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    /// Flushes the echo of the peer's Close; any outcome ends the read side.
    fn poll_echo_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A failed echo changes nothing for the reader: the peer is leaving either way.
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        self.read_state = ReadState::Eof;
        Poll::Ready(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.copy_pending(buf) {
                return Poll::Ready(Ok(()));
            }
            match this.read_state {
                ReadState::Eof => return Poll::Ready(Ok(())),
                ReadState::EchoingClose => {
                    ready!(this.poll_echo_close(cx));
                    continue;
                }
                ReadState::Open => {}
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(message)) => this.accept_message(message),
                None => this.read_state = ReadState::Eof,
                Some(Err(error)) => match read_error(error) {
                    Some(error) => return Poll::Ready(Err(error)),
                    None => this.read_state = ReadState::Eof,
                },
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(write_error)?;
        let taken = buf.len().min(MAX_MESSAGE_LEN);
        let message = Message::Binary(Bytes::copy_from_slice(&buf[..taken]));
        Pin::new(&mut this.inner)
            .start_send(message)
            .map_err(write_error)?;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_flush(cx)
            .map_err(write_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let sent = if this.close_on_shutdown {
            ready!(Pin::new(&mut this.inner).poll_close(cx))
        } else {
            ready!(Pin::new(&mut this.inner).poll_flush(cx))
        };
        sent.map_err(write_error)?;
        Pin::new(this.inner.get_mut()).poll_shutdown(cx)
    }
}

/// An inbound error as the reader sees it: `None` when it just means the peer is gone.
fn read_error(error: WsError) -> Option<io::Error> {
    match error {
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Io(error) => Some(error),
        WsError::Capacity(error) => Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the tunnel sent a WebSocket message over the size limit: {error}"),
        )),
        other => Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error on the tunnel: {other}"),
        )),
    }
}

/// An outbound error as the writer sees it.
fn write_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel WebSocket is closed")
        }
        other => io::Error::other(format!("WebSocket error on the tunnel: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

    type Server = tokio_tungstenite::WebSocketStream<DuplexStream>;

    const DUPLEX_BUFFER: usize = 64 * 1024;

    async fn pair_with_buffer(buffer: usize) -> (WebSocketStream<DuplexStream>, Server) {
        let (client, server) = tokio::io::duplex(buffer);
        let client = WebSocketStream::from_raw_socket(client, Role::Client).await;
        let server =
            tokio_tungstenite::WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        (client, server)
    }

    async fn pair() -> (WebSocketStream<DuplexStream>, Server) {
        pair_with_buffer(DUPLEX_BUFFER).await
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn next_binary(server: &mut Server) -> Bytes {
        loop {
            match server.next().await.expect("open").expect("message") {
                Message::Binary(data) => return data,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bytes_round_trip() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(&next_binary(&mut server).await[..], b"hello");
        server.send(Message::binary(&b"world"[..])).await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
    }

    #[tokio::test]
    async fn a_large_write_becomes_messages_of_at_most_16_kib() {
        let (mut client, mut server) = pair().await;
        let data = pattern(100 * 1024);
        let first = client.write(&data).await.unwrap();
        assert_eq!(first, MAX_MESSAGE_LEN);
        let writer = tokio::spawn(async move {
            client.write_all(&data[first..]).await.unwrap();
            client.flush().await.unwrap();
            client
        });
        let expected = pattern(100 * 1024);
        let mut received = Vec::new();
        while received.len() < expected.len() {
            let message = next_binary(&mut server).await;
            assert!(message.len() <= MAX_MESSAGE_LEN, "{} bytes", message.len());
            received.extend_from_slice(&message);
        }
        assert_eq!(received, expected);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_fragmented_message_is_read_whole() {
        let (mut client, mut server) = pair().await;
        let binary = OpCode::Data(Data::Binary);
        let cont = OpCode::Data(Data::Continue);
        for frame in [
            Frame::message(&b"abc"[..], binary, false),
            Frame::message(&b"def"[..], cont, false),
            Frame::message(&b"gh"[..], cont, true),
        ] {
            server.feed(Message::Frame(frame)).await.unwrap();
        }
        server.flush().await.unwrap();
        let mut buf = [0u8; 8];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abcdefgh");
    }

    #[tokio::test]
    async fn one_byte_reads_lose_nothing() {
        let (mut client, mut server) = pair().await;
        server.send(Message::binary(&b"first"[..])).await.unwrap();
        server.send(Message::binary(&b"-second"[..])).await.unwrap();
        let mut received = Vec::new();
        let mut byte = [0u8; 1];
        while received.len() < 12 {
            assert_eq!(client.read(&mut byte).await.unwrap(), 1);
            received.push(byte[0]);
        }
        assert_eq!(&received, b"first-second");
    }

    #[tokio::test]
    async fn text_messages_are_skipped() {
        let (mut client, mut server) = pair().await;
        server.send(Message::text("ignored")).await.unwrap();
        server
            .send(Message::binary(&[1u8, 2, 3][..]))
            .await
            .unwrap();
        let mut buf = [0u8; 3];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_ping_gets_a_pong_with_the_same_payload_while_only_reading() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4];
            client.read_exact(&mut buf).await.map(|_| buf)
        });
        server
            .send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        match server.next().await.expect("open").expect("message") {
            Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("expected a pong, got {other:?}"),
        }
        server.send(Message::binary(&b"done"[..])).await.unwrap();
        assert_eq!(&reader.await.unwrap().unwrap(), b"done");
    }

    #[tokio::test]
    async fn close_is_echoed_and_becomes_eof() {
        let (mut client, mut server) = pair().await;
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        server.send(Message::Close(Some(close))).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        match server.next().await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
            other => panic!("expected the close echo, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn peer_eof_is_eof() {
        let (mut client, server) = pair().await;
        drop(server);
        let mut buf = [0u8; 16];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn shutdown_sends_no_close_frame_by_default() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(&next_binary(&mut server).await[..], b"last");
        match server.next().await {
            None | Some(Err(_)) => {}
            Some(Ok(message)) => panic!("expected plain EOF, got {message:?}"),
        }
    }

    #[tokio::test]
    async fn shutdown_can_send_a_close_frame() {
        let (client, mut server) = pair().await;
        let mut client = client.close_frame_on_shutdown(true);
        client.shutdown().await.unwrap();
        assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
    }

    #[tokio::test]
    async fn a_tiny_pipe_still_carries_a_mebibyte_both_ways() {
        const TOTAL: usize = 1024 * 1024;
        const TINY_BUFFER: usize = 64;
        let (client, mut server) = pair_with_buffer(TINY_BUFFER).await;
        let echo = tokio::spawn(async move {
            while let Some(Ok(message)) = server.next().await {
                if let Message::Binary(data) = message {
                    assert!(data.len() <= MAX_MESSAGE_LEN);
                    server.send(Message::Binary(data)).await.unwrap();
                }
            }
        });
        let (mut reader, mut writer) = tokio::io::split(client);
        let write = tokio::spawn(async move {
            writer.write_all(&pattern(TOTAL)).await.unwrap();
            writer.flush().await.unwrap();
            writer
        });
        let mut received = vec![0u8; TOTAL];
        reader.read_exact(&mut received).await.unwrap();
        assert!(received == pattern(TOTAL), "echoed bytes differ");
        drop(write.await.unwrap());
        drop(reader);
        echo.await.unwrap();
    }

    #[tokio::test]
    async fn a_stalled_peer_makes_writes_wait_instead_of_buffering() {
        const TINY_BUFFER: usize = 64;
        const STALL: std::time::Duration = std::time::Duration::from_millis(50);
        let (mut client, _server) = pair_with_buffer(TINY_BUFFER).await;
        let chunk = pattern(MAX_MESSAGE_LEN);
        let mut accepted = 0;
        while let Ok(written) = tokio::time::timeout(STALL, client.write(&chunk)).await {
            accepted += written.unwrap();
            assert!(
                accepted <= MAX_WRITE_BUFFER_SIZE,
                "{accepted} bytes buffered"
            );
        }
        assert_eq!(accepted, MAX_MESSAGE_LEN);
    }

    #[test]
    fn write_errors_after_close_read_as_broken_pipe() {
        let error = write_error(WsError::Protocol(ProtocolError::SendAfterClosing));
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(read_error(WsError::ConnectionClosed).is_none());
    }
}
