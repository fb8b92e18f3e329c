//! The proxy's transports over turmoil's simulated network: a [`Dialer`] to the origin host
//! and a [`Listener`] for clients, plus the count of origin sessions the proxy holds.
//!
//! Pool-size invariant (ARCHITECTURE.md, invariant 7) is checked here, on the proxy's side of
//! the wire, because only there is it exact: the origin learns that a connection closed one
//! network latency later, and a backend busy in a query does not notice at all, so the
//! origin's own count may briefly exceed the pool without any fault of the proxy. Every
//! stream the dialer opens is wrapped in a [`Counted`] stream; the first bytes written say what
//! it is — a CancelRequest connection (which Postgres does not count against
//! `max_connections` and the proxy does not count against its pool) or a session.

use futures_util::future::BoxFuture;
use reference_proxy::stream::{BoxedStream, Dialer, Listener};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Length of a CancelRequest packet.
const CANCEL_REQUEST_LEN: usize = 16;
/// The CancelRequest code (1234 5678).
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Origin sessions the proxy holds open, now and at most.
#[derive(Debug, Default)]
pub struct SessionCounter {
    now: AtomicUsize,
    max: AtomicUsize,
    opened: AtomicUsize,
}

impl SessionCounter {
    fn open(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn close(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sessions open now.
    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// Most sessions ever open at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Sessions opened in total.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

/// What a dialled stream turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing written yet.
    Unknown,
    /// A session (counted until dropped).
    Session,
    /// A cancel request (not counted).
    Cancel,
}

/// A stream counted as an origin session from its first non-cancel write until it is dropped.
pub struct Counted<S> {
    inner: S,
    kind: Kind,
    counter: Arc<SessionCounter>,
}

impl<S> Counted<S> {
    fn new(inner: S, counter: Arc<SessionCounter>) -> Self {
        Counted {
            inner,
            kind: Kind::Unknown,
            counter,
        }
    }

    fn classify(&mut self, first: &[u8]) {
        if self.kind != Kind::Unknown || first.is_empty() {
            return;
        }
        if is_cancel_request(first) {
            self.kind = Kind::Cancel;
        } else {
            self.kind = Kind::Session;
            self.counter.open();
        }
    }
}

fn is_cancel_request(bytes: &[u8]) -> bool {
    let word = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    word(0..4) == Some(CANCEL_REQUEST_LEN as u32) && word(4..8) == Some(CANCEL_REQUEST_CODE)
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        if self.kind == Kind::Session {
            self.counter.close();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.classify(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Dials a host over turmoil.
pub struct TurmoilDialer {
    host: String,
    port: u16,
    counter: Option<Arc<SessionCounter>>,
}

impl TurmoilDialer {
    /// A dialer for `host:port` that counts sessions in `counter`.
    pub fn new(host: impl Into<String>, port: u16, counter: Arc<SessionCounter>) -> Self {
        TurmoilDialer {
            host: host.into(),
            port,
            counter: Some(counter),
        }
    }

    /// A dialer for `host:port` that counts nothing (the tunnel's transport, whose Postgres
    /// sessions [`CountingDialer`] counts one layer up; the edge's dials to the origin).
    pub fn uncounted(host: impl Into<String>, port: u16) -> Self {
        TurmoilDialer {
            host: host.into(),
            port,
            counter: None,
        }
    }
}

impl Dialer for TurmoilDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            Ok(match &self.counter {
                Some(counter) => Box::new(Counted::new(stream, counter.clone())) as BoxedStream,
                None => Box::new(stream) as BoxedStream,
            })
        })
    }

    fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Counts the Postgres sessions carried by another dialer's streams (the tunnel's: the
/// first bytes written into a tunnel stream are Postgres's, not HTTP's).
pub struct CountingDialer {
    inner: Arc<dyn Dialer>,
    counter: Arc<SessionCounter>,
}

impl CountingDialer {
    /// Counts `inner`'s sessions in `counter`.
    pub fn new(inner: Arc<dyn Dialer>, counter: Arc<SessionCounter>) -> Self {
        CountingDialer { inner, counter }
    }
}

impl Dialer for CountingDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            let stream = self.inner.dial().await?;
            Ok(Box::new(Counted::new(stream, self.counter.clone())) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// A dialer that can be switched off: then every dial is refused at once (the edge's view
/// of an origin it cannot reach, which it answers with 502).
pub struct GatedDialer {
    inner: Arc<dyn Dialer>,
    open: Arc<AtomicBool>,
}

impl GatedDialer {
    /// `inner` while `open` holds.
    pub fn new(inner: Arc<dyn Dialer>, open: Arc<AtomicBool>) -> Self {
        GatedDialer { inner, open }
    }
}

impl Dialer for GatedDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            if !self.open.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "origin unreachable from the edge (simulated)",
                ));
            }
            self.inner.dial().await
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Accepts clients on a turmoil listener.
pub struct TurmoilListener {
    inner: turmoil::net::TcpListener,
}

impl TurmoilListener {
    /// Binds `0.0.0.0:port` on the current simulated host.
    pub async fn bind(port: u16) -> io::Result<Self> {
        let inner = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        Ok(TurmoilListener { inner })
    }
}

impl Listener for TurmoilListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxedStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            let peer = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.to_string());
            Ok((Box::new(stream) as BoxedStream, peer))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_requests_are_recognised() {
        let mut packet = Vec::new();
        packet.extend_from_slice(&16u32.to_be_bytes());
        packet.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
        packet.extend_from_slice(&[0; 8]);
        assert!(is_cancel_request(&packet));
        assert!(!is_cancel_request(&[0, 0, 0, 8, 4, 210, 22, 47]));
    }
}
