//! Connections to the origin Postgres: dial, TLS, startup handshake, cancel.
//!
//! An [`OriginConnector`] turns a [`Dialer`] (TCP, tunnel, simulated network) into ready,
//! authenticated [`OriginConnection`]s. It owns the origin credentials and TLS settings; the
//! pool owns the connections. Errors are [`OriginError`]s whose client-facing form follows
//! Hyperdrive's messages (`Server connection attempt failed: ...`, SQLSTATE 58000) unless the
//! origin itself refused us, in which case its ErrorResponse passes through unchanged.

use crate::prepared::OriginStatements;
use crate::stream::{BoxedStream, Dialer};
use crate::tls::{OriginTls, TlsError, negotiate_origin_tls};
use crate::tunnel::TunnelError;
use bytes::BytesMut;
use elephant_protocol::startup::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError, ServerSession,
};
use elephant_protocol::{
    BackendDecoder, BackendKeyData, BackendMessage, CancelRequest, DecodeError, DecoderLimits,
    ErrorFields, FrontendMessage,
};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// SQLSTATE of errors the proxy raises itself when no Postgres code fits (Hyperdrive's choice).
pub const PROXY_ERROR_SQLSTATE: &str = "58000";

/// Bytes read from a socket at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// How long a cancel request may take (dial, send, wait for the origin to close).
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an origin connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Nothing accepted the connection.
    #[error("Server connection attempt failed: connection_refused ({address}: {source})")]
    Refused {
        /// Where we dialled.
        address: String,
        /// The OS error.
        source: io::Error,
    },
    /// The WebSocket tunnel to the origin's network failed (Access refused, cloudflared cannot
    /// reach the database, handshake timeout, tunnel TLS verification).
    #[error("Server connection attempt failed: {0}")]
    Tunnel(String),
    /// The dial or the startup did not finish within the connect timeout.
    #[error("Server connection attempt failed: timeout after {0:?}")]
    Timeout(Duration),
    /// TLS to the origin failed.
    #[error("Server connection attempt failed: {0}")]
    Tls(#[from] TlsError),
    /// The origin refused the login (bad credentials, unknown database, too many connections).
    #[error("{}", .0.message().map(|m| m.to_string()).unwrap_or_default())]
    Rejected(ErrorFields),
    /// The startup handshake failed on our side.
    #[error("Server connection attempt failed: {0}")]
    Handshake(HandshakeError),
    /// The origin sent bytes that are not Postgres protocol.
    #[error("Server connection attempt failed: invalid data from the origin: {0}")]
    Protocol(#[from] DecodeError),
    /// The connection broke.
    #[error("Server connection attempt failed: {0}")]
    Io(#[from] io::Error),
}

impl OriginError {
    /// The ErrorResponse a client sees for this failure.
    pub fn to_error_fields(&self) -> ErrorFields {
        match self {
            OriginError::Rejected(fields) => fields.clone(),
            other => ErrorFields::new("FATAL", PROXY_ERROR_SQLSTATE, other.to_string()),
        }
    }
}

impl From<HandshakeError> for OriginError {
    fn from(error: HandshakeError) -> Self {
        match error {
            HandshakeError::Server(fields) => OriginError::Rejected(fields),
            other => OriginError::Handshake(other),
        }
    }
}

/// How the proxy logs in to the origin.
#[derive(Clone)]
pub struct OriginLogin {
    /// Role, password, database and startup parameters.
    pub handshake: ClientHandshakeConfig,
    /// TLS settings.
    pub tls: OriginTls,
    /// Limit for dial + TLS + startup.
    pub connect_timeout: Duration,
    /// Codec limits for messages from the origin.
    pub limits: DecoderLimits,
}

/// Makes authenticated origin connections.
#[derive(Clone)]
pub struct OriginConnector {
    dialer: Arc<dyn Dialer>,
    login: OriginLogin,
    next_id: Arc<AtomicU64>,
}

impl OriginConnector {
    /// A connector dialling with `dialer` and logging in with `login`.
    pub fn new(dialer: Arc<dyn Dialer>, login: OriginLogin) -> Self {
        OriginConnector {
            dialer,
            login,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Where the origin is, for logs.
    pub fn describe(&self) -> String {
        self.dialer.describe()
    }

    async fn open_stream(&self) -> Result<BoxedStream, OriginError> {
        let stream =
            self.dialer
                .dial()
                .await
                .map_err(|source| match TunnelError::from_io(&source) {
                    Some(tunnel) => OriginError::Tunnel(tunnel.to_string()),
                    None => OriginError::Refused {
                        address: self.dialer.describe(),
                        source,
                    },
                })?;
        Ok(negotiate_origin_tls(&self.login.tls, stream).await?)
    }

    /// Opens and authenticates a new connection, within the connect timeout.
    pub async fn connect(&self) -> Result<OriginConnection, OriginError> {
        let timeout = self.login.connect_timeout;
        tokio::time::timeout(timeout, self.connect_inner())
            .await
            .map_err(|_| OriginError::Timeout(timeout))?
    }

    async fn connect_inner(&self) -> Result<OriginConnection, OriginError> {
        let stream = self.open_stream().await?;
        let mut link = MessageStream::new(stream, self.login.limits);
        let (mut handshake, startup) = ClientHandshake::start(self.login.handshake.clone());
        link.send(&startup).await?;
        let session = loop {
            let message = link.receive().await?;
            match handshake.handle(message)? {
                ClientStep::Send(reply) => link.send(&reply).await?,
                ClientStep::Continue => {}
                ClientStep::Ready(session) => break session,
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(origin_connection = id, origin = %self.describe(), "origin connection ready");
        Ok(OriginConnection::new(id, link, session))
    }

    /// Asks the origin to cancel whatever `key`'s backend is running: a fresh connection, TLS
    /// as configured, a CancelRequest, then waiting until the origin closes it (by then the
    /// backend has been signalled).
    pub async fn cancel(&self, key: &BackendKeyData) -> Result<(), OriginError> {
        tokio::time::timeout(CANCEL_TIMEOUT, async {
            let mut stream = self.open_stream().await?;
            let mut bytes = BytesMut::new();
            let request = FrontendMessage::CancelRequest(CancelRequest {
                process_id: key.process_id,
                secret_key: key.secret_key.clone(),
            });
            request
                .encode(&mut bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            stream.write_all(&bytes).await?;
            stream.flush().await?;
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).await? > 0 {}
            Ok(())
        })
        .await
        .map_err(|_| OriginError::Timeout(CANCEL_TIMEOUT))?
    }
}

/// A stream with the backend codec on top: whole messages in, whole messages out.
pub struct MessageStream {
    stream: BoxedStream,
    buffer: BytesMut,
    decoder: BackendDecoder,
}

impl MessageStream {
    /// Wraps a stream.
    pub fn new(stream: BoxedStream, limits: DecoderLimits) -> Self {
        MessageStream {
            stream,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            decoder: BackendDecoder::new(limits),
        }
    }

    /// Writes one message and flushes.
    pub async fn send(&mut self, message: &FrontendMessage) -> Result<(), OriginError> {
        let mut bytes = BytesMut::new();
        message
            .encode(&mut bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads one whole message. Cancel safe: bytes read stay buffered.
    pub async fn receive(&mut self) -> Result<BackendMessage, OriginError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buffer)? {
                return Ok(message);
            }
            self.buffer.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "origin closed the connection",
                )
                .into());
            }
        }
    }

    /// The decoded-but-unread bytes and the stream, for the session's IO loop.
    pub fn parts_mut(&mut self) -> (&mut BoxedStream, &mut BytesMut, &mut BackendDecoder) {
        (&mut self.stream, &mut self.buffer, &mut self.decoder)
    }
}

/// One authenticated connection to the origin, owned by the pool or lent to one session.
pub struct OriginConnection {
    id: u64,
    /// The stream and its decoder.
    pub link: MessageStream,
    /// What the origin reported at startup (ParameterStatus, cancel key).
    pub session: ServerSession,
    /// Statements prepared on this connection on behalf of clients.
    pub statements: OriginStatements,
    /// When the connection last went back to the pool.
    pub idle_since: Instant,
    /// Settings a client applied with SET on top of the origin defaults (what RESET undoes).
    pub applied_settings: Vec<(String, String)>,
    /// The last lend may have changed session state: reset before the next one.
    pub needs_reset: bool,
    /// The last lend was a whole pinned session, which may have left SQL-level prepared
    /// statements: the reset also runs `DEALLOCATE ALL` (and forgets the proxy's statements).
    pub needs_full_reset: bool,
    /// The connection is unusable (broken stream, protocol desync): close instead of pooling.
    pub broken: bool,
}

impl OriginConnection {
    fn new(id: u64, link: MessageStream, session: ServerSession) -> Self {
        OriginConnection {
            id,
            link,
            session,
            statements: OriginStatements::default(),
            idle_since: Instant::now(),
            applied_settings: Vec::new(),
            needs_reset: false,
            needs_full_reset: false,
            broken: false,
        }
    }

    /// Process-unique id, for logs and metrics.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The origin's cancel key for this connection.
    pub fn backend_key(&self) -> Option<&BackendKeyData> {
        self.session.backend_key.as_ref()
    }
}
