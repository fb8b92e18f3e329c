//! One client connection, from accept to close: startup, then the transaction-pooling loop.
//!
//! One task per client drives both sockets from a single poll function ([`Client::poll_io`]):
//! it writes pending bytes to both sides and reads from whichever side has room, so a client
//! that pipelines while the origin streams results can never deadlock the two (each direction
//! stops reading only when its outgoing buffer passes [`HIGH_WATER`]). All protocol decisions
//! are made by [`Session`]; this file only moves bytes, lends and returns connections, and
//! turns failures into ErrorResponses.

mod io;
mod startup;

pub use startup::{StartedClient, StartupError, client_settings, start_client};

use crate::cancel::{ActiveCancels, CancelTarget};
use crate::config::{PoolMode, SessionPolicy};
use crate::context::ProxyContext;
use crate::origin::{CANCEL_TIMEOUT, PROXY_ERROR_SQLSTATE, READ_CHUNK};
use crate::pinning;
use crate::pool::Lent;
use crate::session::{Outbox, Session, SessionError};
use crate::sql::SessionFeature;
use crate::stream::BoxedStream;
use bytes::{Buf, BytesMut};
use elephant_protocol::{
    BackendMessage, DecodeError, ErrorFields, FrontendDecoder, FrontendMessage, TransactionStatus,
};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::Instrument;

/// A client must finish startup (TLS, authentication) within this time, like Postgres's
/// `authentication_timeout`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A direction stops reading while more than this many bytes wait to be written the other way.
pub const HIGH_WATER: usize = 256 * 1024;

/// How long the proxy may spend ending a vanished client's transaction before it closes the
/// origin connection instead of returning it to the pool.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What woke the session loop.
enum Event {
    ClientBytes,
    OriginBytes,
    ClientClosed,
    OriginClosed(std::io::Error),
    ClientFailed(std::io::Error),
}

/// How a session ended.
enum End {
    /// Terminate, or the client closed its socket.
    ClientLeft,
    /// The proxy closed it after sending this error.
    Closed(ErrorFields),
}

/// A lent connection plus what cancel requests need to reach it.
struct Attached {
    lent: Lent,
    cancels: Arc<ActiveCancels>,
}

/// Serves one client connection to the end. Never panics on client input; every failure
/// ends in an ErrorResponse (when the socket still works) and a closed connection.
pub async fn serve_client(ctx: Arc<ProxyContext>, stream: BoxedStream, peer: String) {
    ctx.metrics.client_connections_total.inc();
    ctx.metrics.clients_connected.inc();
    let span = tracing::info_span!("client", %peer, user = tracing::field::Empty, pid = tracing::field::Empty);
    async {
        let mut shutdown = ctx.shutdown.clone();
        let started = tokio::select! {
            // Fixed polling order: no draw from tokio's RNG, so a seeded simulation replays.
            biased;
            started = tokio::time::timeout(STARTUP_TIMEOUT, start_client(&ctx, stream)) => started,
            _ = shutdown.wait_for(|stopping| *stopping) => {
                tracing::debug!("shutdown during client startup");
                return;
            }
        };
        let Ok(started) = started else {
            tracing::info!(
                timeout_seconds = STARTUP_TIMEOUT.as_secs(),
                "client did not finish startup in time"
            );
            return;
        };
        match started {
            Ok(started) => {
                tracing::Span::current().record("user", started.user.as_str());
                tracing::Span::current().record("pid", started.key.process_id);
                let pid = started.key.process_id;
                run_session(&ctx, started).await;
                ctx.cancels.unregister(pid);
            }
            Err(StartupError::CancelHandled) => {}
            Err(error) => tracing::info!(%error, "client startup ended"),
        }
    }
    .instrument(span)
    .await;
    ctx.metrics.clients_connected.dec();
}

async fn run_session(ctx: &ProxyContext, started: StartedClient) {
    let mut session = Session::new(started.settings);
    if ctx.pooling.mode == PoolMode::Session {
        session.pin();
    }
    let mut client = Client {
        ctx,
        stream: started.stream,
        buffer: started.buffer,
        decoder: started.decoder,
        session,
        pin_slot: None,
        out: Outbox::default(),
        attached: None,
        pid: started.key.process_id,
        discard_until_sync: false,
        client_flush_needed: false,
        origin_flush_needed: false,
        last_activity: Instant::now(),
        closing: false,
    };
    let end = client.run().await;
    client.finish(end).await;
}

struct Client<'a> {
    ctx: &'a ProxyContext,
    stream: BoxedStream,
    buffer: BytesMut,
    decoder: FrontendDecoder,
    session: Session,
    /// The session feature that pinned this client, holding one `--max-pinned` slot.
    pin_slot: Option<SessionFeature>,
    out: Outbox,
    attached: Option<Attached>,
    pid: i32,
    /// After a failed acquire inside an extended batch, drop client messages up to Sync.
    discard_until_sync: bool,
    client_flush_needed: bool,
    origin_flush_needed: bool,
    last_activity: Instant,
    /// Shutting down: close as soon as no transaction is running.
    closing: bool,
}

impl Client<'_> {
    async fn run(&mut self) -> End {
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            if self.closing && (self.attached.is_none() || self.session.idle()) {
                return End::Closed(ErrorFields::new(
                    "FATAL",
                    "57P01",
                    "terminating connection due to administrator command",
                ));
            }
            let idle_deadline = self.ctx.client_idle_timeout.map(|t| self.last_activity + t);
            let event = tokio::select! {
                // Fixed polling order: no draw from tokio's RNG, so a seeded simulation replays.
                biased;
                event = poll_fn(|cx| self.poll_io(cx)) => event,
                _ = sleep_until_option(idle_deadline) => {
                    return End::Closed(ErrorFields::new("FATAL", "57P05", "terminating connection due to idle-session timeout"));
                }
                changed = shutdown.changed(), if !self.closing => {
                    self.closing = changed.is_err() || *shutdown.borrow();
                    continue;
                }
            };
            let step = match event {
                Event::ClientBytes => self.client_messages().await,
                Event::OriginBytes => self.origin_messages().await,
                Event::ClientClosed => return End::ClientLeft,
                Event::ClientFailed(error) => {
                    tracing::debug!(%error, "client connection failed");
                    self.ctx
                        .metrics
                        .errors_total
                        .with_label_values(&["client_io"])
                        .inc();
                    return End::ClientLeft;
                }
                Event::OriginClosed(error) => {
                    tracing::warn!(%error, "origin connection lost mid-transaction");
                    self.ctx
                        .metrics
                        .errors_total
                        .with_label_values(&["origin_io"])
                        .inc();
                    if let Some(attached) = self.attached.as_mut() {
                        attached.lent.connection.broken = true;
                    }
                    return End::Closed(origin_lost());
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes what is pending on both sides and reads from a side with room; ready when new
    /// bytes arrived or a side closed.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Err(error) = poll_drain(
            cx,
            &mut self.stream,
            &mut self.out.to_client,
            &mut self.client_flush_needed,
        ) {
            return Poll::Ready(Event::ClientFailed(error));
        }
        if let Some(attached) = self.attached.as_mut() {
            let (stream, buffer, _) = attached.lent.connection.link.parts_mut();
            if let Err(error) = poll_drain(
                cx,
                stream,
                &mut self.out.to_origin,
                &mut self.origin_flush_needed,
            ) {
                return Poll::Ready(Event::OriginClosed(error));
            }
            if self.out.to_client.len() < HIGH_WATER {
                match poll_fill(cx, stream, buffer) {
                    Poll::Ready(Ok(0)) => {
                        let eof = std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "origin closed the connection",
                        );
                        return Poll::Ready(Event::OriginClosed(eof));
                    }
                    Poll::Ready(Ok(read)) => {
                        self.ctx
                            .metrics
                            .bytes_total
                            .with_label_values(&["origin_to_client"])
                            .inc_by(read as u64);
                        return Poll::Ready(Event::OriginBytes);
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Event::OriginClosed(error)),
                    Poll::Pending => {}
                }
            }
        }
        if self.out.to_origin.len() < HIGH_WATER {
            match poll_fill(cx, &mut self.stream, &mut self.buffer) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Event::ClientClosed),
                Poll::Ready(Ok(read)) => {
                    self.ctx
                        .metrics
                        .bytes_total
                        .with_label_values(&["client_to_origin"])
                        .inc_by(read as u64);
                    return Poll::Ready(Event::ClientBytes);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Event::ClientFailed(error)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Handles every whole message the client has sent so far.
    async fn client_messages(&mut self) -> Result<(), End> {
        self.last_activity = Instant::now();
        loop {
            let message = match self.decoder.decode(&mut self.buffer) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.protocol_violation(&error)),
            };
            self.client_message(message).await?;
        }
    }

    async fn client_message(&mut self, message: FrontendMessage) -> Result<(), End> {
        tracing::trace!(%message, "from client");
        self.count_query(&message);
        if matches!(message, FrontendMessage::Terminate) {
            return Err(End::ClientLeft);
        }
        if self.discard_until_sync {
            if matches!(message, FrontendMessage::Sync) {
                self.discard_until_sync = false;
                let ready = BackendMessage::ReadyForQuery(TransactionStatus::Idle);
                ready
                    .encode(&mut self.out.to_client)
                    .map_err(|e| self.session_failed(SessionError::from(e)))?;
            }
            return Ok(());
        }
        let mut pin_for = None;
        if let Some(feature) =
            pinning::feature_to_decide(&self.ctx.pooling, &self.session, &message)
        {
            match self.ctx.pooling.features.get(feature) {
                SessionPolicy::Pin if self.ctx.pooling.try_pin() => pin_for = Some(feature),
                SessionPolicy::Pin => {
                    let max = self.ctx.pooling.max_pinned;
                    return self
                        .refuse(feature, &message, pinning::pin_limit_reached(feature, max))
                        .await;
                }
                SessionPolicy::Refuse => {
                    return self
                        .refuse(feature, &message, pinning::refused(feature))
                        .await;
                }
            }
        }
        if self.attached.is_none() && self.session.needs_origin(&message) {
            if pin_for.is_some() {
                let attached = self.attach(&message).await;
                if !matches!(attached, Ok(true)) {
                    // No connection to pin (or the session ends): give the slot back.
                    self.ctx.pooling.unpin();
                    attached?;
                    return Ok(());
                }
            } else if self.session.can_defer(&message) {
                match self.ctx.pool.try_acquire_now().await {
                    Some(lent) => self.attach_lent(lent)?,
                    None => {
                        let deferred = self.session.defer_parse(message, &mut self.out);
                        return deferred.map_err(|error| self.session_failed(error));
                    }
                }
            } else if !self.attach(&message).await? {
                return Ok(());
            }
        }
        if let Some(feature) = pin_for {
            self.pin(feature);
        }
        let result = match self.attached.as_mut() {
            Some(attached) => {
                self.session
                    .client_message(message, &mut attached.lent.connection, &mut self.out)
            }
            None => self.session.answer_locally(message, &mut self.out),
        };
        result.map_err(|error| self.session_failed(error))?;
        let prepares = self.session.take_origin_prepares();
        self.ctx
            .metrics
            .prepared_statements_prepared_total
            .inc_by(prepares);
        self.release_if_finished().await;
        Ok(())
    }

    /// Keeps the attached connection for the rest of the session (a slot is already taken).
    fn pin(&mut self, feature: SessionFeature) {
        self.session.pin();
        self.pin_slot = Some(feature);
        self.ctx.metrics.pinned_connections.inc();
        self.ctx
            .metrics
            .session_feature_pins_total
            .with_label_values(&[feature.config_name()])
            .inc();
        tracing::info!(
            feature = feature.config_name(),
            pinned = self.ctx.pooling.pinned(),
            "client pinned to its origin connection until it disconnects"
        );
    }

    /// Answers a statement that uses a refused session feature with `fields`.
    async fn refuse(
        &mut self,
        feature: SessionFeature,
        message: &FrontendMessage,
        fields: ErrorFields,
    ) -> Result<(), End> {
        self.ctx
            .metrics
            .session_feature_refusals_total
            .with_label_values(&[feature.config_name()])
            .inc();
        tracing::info!(
            feature = feature.config_name(),
            sqlstate = fields.get(b'C').map(|c| c.to_string()).unwrap_or_default(),
            "session feature refused"
        );
        let connection = self.attached.as_mut().map(|a| &mut a.lent.connection);
        let refused = self
            .session
            .refuse(fields, message, connection, &mut self.out);
        refused.map_err(|error| self.session_failed(error))?;
        self.release_if_finished().await;
        Ok(())
    }

    /// Borrows an origin connection for the transaction `first` starts. `Ok(false)`: none
    /// could be had; the client got an error for this request and the session goes on.
    async fn attach(&mut self, first: &FrontendMessage) -> Result<bool, End> {
        match self.ctx.pool.acquire().await {
            Ok(lent) => {
                self.attach_lent(lent)?;
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(%error, "no origin connection for the client");
                let fields = error.to_error_fields();
                let encoded = BackendMessage::ErrorResponse(fields).encode(&mut self.out.to_client);
                encoded.map_err(|e| self.session_failed(SessionError::from(e)))?;
                // The failed request is over; the client may try again. A simple query (or a
                // Sync) ends with ReadyForQuery; an extended batch is skipped up to its Sync.
                match first {
                    FrontendMessage::Query(_)
                    | FrontendMessage::FunctionCall(_)
                    | FrontendMessage::Sync => {
                        let ready = BackendMessage::ReadyForQuery(self.session.status());
                        ready
                            .encode(&mut self.out.to_client)
                            .map_err(|e| self.session_failed(SessionError::from(e)))?;
                    }
                    _ => self.discard_until_sync = true,
                }
                Ok(false)
            }
        }
    }

    fn count_query(&self, message: &FrontendMessage) {
        let protocol = match message {
            FrontendMessage::Query(_) => "simple",
            FrontendMessage::Execute { .. } => "extended",
            FrontendMessage::FunctionCall(_) => "function_call",
            _ => return,
        };
        self.ctx
            .metrics
            .queries_total
            .with_label_values(&[protocol])
            .inc();
    }

    /// Makes `lent` this session's connection for the current transaction.
    fn attach_lent(&mut self, mut lent: Lent) -> Result<(), End> {
        self.ctx.metrics.transactions_total.inc();
        let cancels = Arc::new(ActiveCancels::default());
        if let Some(origin_key) = lent.connection.backend_key().cloned() {
            let target = CancelTarget {
                origin_key,
                active: cancels.clone(),
            };
            self.ctx.cancels.set_target(self.pid, Some(target));
        }
        tracing::debug!(
            origin_connection = lent.connection.id(),
            "origin connection attached"
        );
        self.session
            .attach(&mut lent.connection, &mut self.out)
            .map_err(|error| self.session_failed(error))?;
        self.attached = Some(Attached { lent, cancels });
        Ok(())
    }

    /// Handles every whole message the origin has sent so far.
    async fn origin_messages(&mut self) -> Result<(), End> {
        loop {
            let Some(attached) = self.attached.as_mut() else {
                return Ok(());
            };
            let connection = &mut attached.lent.connection;
            let (_, buffer, decoder) = connection.link.parts_mut();
            let message = match decoder.decode(buffer) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, "invalid data from the origin");
                    connection.broken = true;
                    return Err(End::Closed(origin_lost()));
                }
            };
            tracing::trace!(%message, "from origin");
            if let Err(error) = self
                .session
                .origin_message(message, connection, &mut self.out)
            {
                connection.broken = true;
                return Err(self.session_failed(error));
            }
            if self.session.transaction_finished() {
                self.release_if_finished().await;
                return Ok(());
            }
        }
    }

    /// Returns the connection once the transaction is over and no cancel is in flight.
    async fn release_if_finished(&mut self) {
        if !self.session.transaction_finished() || !self.out.to_origin.is_empty() {
            return;
        }
        if self.attached.is_some() && self.session.wants_settings_snapshot() {
            // The connection stays attached until the snapshot's answer arrives.
            if let Err(error) = self.session.request_settings_snapshot(&mut self.out) {
                tracing::warn!(%error, "cannot ask the origin for the session's settings");
            }
            self.ctx.metrics.settings_snapshots_total.inc();
            return;
        }
        let Some(mut attached) = self.attached.take() else {
            return;
        };
        self.ctx.cancels.set_target(self.pid, None);
        let settled = attached.cancels.settle(CANCEL_TIMEOUT).await;
        self.session.detach(&mut attached.lent.connection);
        tracing::debug!(
            origin_connection = attached.lent.connection.id(),
            "origin connection released"
        );
        self.ctx.pool.release(attached.lent, settled);
    }

    fn protocol_violation(&mut self, error: &DecodeError) -> End {
        self.ctx
            .metrics
            .errors_total
            .with_label_values(&["protocol"])
            .inc();
        tracing::info!(%error, "client protocol violation");
        End::Closed(ErrorFields::new(
            "FATAL",
            error.sqlstate(),
            error.to_string(),
        ))
    }

    fn session_failed(&mut self, error: SessionError) -> End {
        self.ctx
            .metrics
            .errors_total
            .with_label_values(&["protocol"])
            .inc();
        tracing::warn!(%error, "session failed");
        End::Closed(ErrorFields::new(
            "FATAL",
            error.sqlstate(),
            error.to_string(),
        ))
    }

    /// Ends the session: error to the client if any, transaction cleanup, connection back.
    async fn finish(&mut self, end: End) {
        if let End::Closed(fields) = end
            && !fields.fields.is_empty()
        {
            let _ = BackendMessage::ErrorResponse(fields).encode(&mut self.out.to_client);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.stream.write_all(&self.out.to_client).await;
            let _ = self.stream.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        self.out.to_client.clear();
        self.cleanup_origin().await;
        if self.pin_slot.take().is_some() {
            self.ctx.pooling.unpin();
            self.ctx.metrics.pinned_connections.dec();
        }
    }

    /// Ends the vanished client's transaction on its origin connection, then returns the
    /// connection (or closes it when that cannot be done cleanly).
    async fn cleanup_origin(&mut self) {
        let Some(mut attached) = self.attached.take() else {
            return;
        };
        self.ctx.cancels.set_target(self.pid, None);
        let connection = &mut attached.lent.connection;
        let mut reusable = !connection.broken;
        if reusable && !self.session.idle() {
            reusable = tokio::time::timeout(
                CLEANUP_TIMEOUT,
                drain_abandoned(&mut self.session, connection, &mut self.out),
            )
            .await
            .unwrap_or(false);
        }
        reusable &= attached.cancels.settle(CANCEL_TIMEOUT).await;
        self.session.detach(connection);
        tracing::debug!(
            origin_connection = connection.id(),
            reusable,
            "origin connection returned after client left"
        );
        self.ctx.pool.release(attached.lent, reusable);
    }
}

/// Rolls back and drains an abandoned transaction; true if the connection ended idle.
async fn drain_abandoned(
    session: &mut Session,
    connection: &mut crate::origin::OriginConnection,
    out: &mut Outbox,
) -> bool {
    if session.abandon(out).is_err() {
        return false;
    }
    let (stream, _, _) = connection.link.parts_mut();
    if stream.write_all(&out.to_origin).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    out.to_origin.clear();
    while !session.idle() {
        let Ok(message) = connection.link.receive().await else {
            return false;
        };
        if session.origin_message(message, connection, out).is_err() {
            return false;
        }
        out.to_client.clear();
    }
    session.status() == TransactionStatus::Idle && !connection.broken
}

fn origin_lost() -> ErrorFields {
    ErrorFields::new("FATAL", PROXY_ERROR_SQLSTATE, "server connection lost: the origin closed the connection in the middle of a transaction")
        .with(b'D', "The outcome of the statement in progress is unknown: it may or may not have been committed.")
        .with(b'H', "Reconnect and check whether the last transaction took effect before retrying it.")
}

async fn sleep_until_option(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Writes as much of `pending` as the stream takes now; flushes once it is empty.
fn poll_drain(
    cx: &mut Context<'_>,
    stream: &mut BoxedStream,
    pending: &mut BytesMut,
    flush_needed: &mut bool,
) -> std::io::Result<()> {
    while !pending.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, pending) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(written)) => {
                pending.advance(written);
                *flush_needed = true;
            }
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => return Ok(()),
        }
    }
    if *flush_needed {
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => *flush_needed = false,
            Poll::Ready(Err(error)) => return Err(error),
            Poll::Pending => {}
        }
    }
    Ok(())
}

/// Reads one chunk into `buffer`.
fn poll_fill(
    cx: &mut Context<'_>,
    stream: &mut BoxedStream,
    buffer: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    if buffer.capacity() - buffer.len() < READ_CHUNK / 2 {
        buffer.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buffer)
}
