//! The one stream type the proxy's pool and sessions see.
//!
//! Every connection — a client's TCP socket, an origin's TCP or TLS socket, a WebSocket tunnel,
//! the simulator's turmoil socket — is boxed as a [`BoxedStream`]. The pool and the session code
//! are written against it alone, so new transports (and the simulator's network) plug in without
//! touching them: implement [`Dialer`] and hand it to the pool.

use futures_util::future::BoxFuture;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// Anything that can carry Postgres bytes.
pub trait ProxyStream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> ProxyStream for T {}

/// A connection of any transport.
pub type BoxedStream = Box<dyn ProxyStream>;

/// Opens raw byte streams to the origin (before Postgres TLS, which [`crate::tls`] adds).
pub trait Dialer: Send + Sync + 'static {
    /// Opens one new stream. Cancel safe: dropping the future abandons the attempt.
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>>;

    /// Where this dialer connects, for logs and error messages (never contains secrets).
    fn describe(&self) -> String;
}

/// Dials the origin over plain TCP.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    host: String,
    port: u16,
}

impl TcpDialer {
    /// A dialer for `host:port` (host may be a name or an IP literal).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        TcpDialer {
            host: host.into(),
            port,
        }
    }
}

impl Dialer for TcpDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Accepts client connections (TCP here; the simulator plugs in its own network).
pub trait Listener: Send + 'static {
    /// Waits for the next client; returns its stream and a peer description for logs.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxedStream, String)>>;
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxedStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxedStream, peer.to_string()))
        })
    }
}
