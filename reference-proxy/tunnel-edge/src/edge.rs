//! The edge: accepting connections and turning each into a tunnel or a refusal.
//!
//! Why this order of steps: it is the order of the real path. The Cloudflare edge terminates TLS,
//! Access checks the service token (403, or the 302 login redirect), and only an admitted request
//! reaches `cloudflared`, which dials the origin *before* answering 101 — so a client learns that
//! the database is unreachable from a 502 on the upgrade rather than from a tunnel that closes at
//! once. Requests that are not WebSocket upgrades get 400.
//!
//! Every connection ends in exactly one access-log line: `tunnel closed` (token id, peer, 101,
//! bytes each way, duration) or `tunnel upgrade refused` (status, reason); connections that never
//! sent a whole request are logged at debug level and counted as handshake failures.

use crate::access::{AccessControl, AccessDecision, CLIENT_ID_HEADER, CLIENT_SECRET_HEADER};
use crate::config::EdgeConfig;
use crate::error::HandshakeError;
use crate::pipe::{self, Counters, PipeSettings, TunnelEnd};
use crate::stats::{EdgeStats, StatsRecorder};
use crate::tls::EdgeTls;
use crate::upgrade::{self, RefusalKind, RequestHead};
use reference_proxy::stream::{BoxedStream, Dialer, Listener};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// Read buffer of an upgraded connection: a 16 KiB message and its frame header.
pub const WEBSOCKET_READ_BUFFER_SIZE: usize = 20 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How long `serve` waits for connections to wind down after shutdown before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A Cloudflare edge + Access + cloudflared stand-in serving one origin.
pub struct Edge {
    config: EdgeConfig,
    access: Arc<AccessControl>,
    origin: Arc<dyn Dialer>,
    tls: Option<EdgeTls>,
    stats: StatsRecorder,
    /// Bumped by [`Edge::kill_all_tunnels`]; every connection watches it.
    kill: KillSwitch,
    next_tunnel: AtomicU64,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config)
            .field("origin", &self.origin.describe())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Who a connection is, for logs.
struct Conn<'a> {
    peer: &'a str,
    started: Instant,
}

impl Edge {
    /// An edge admitting clients per `access` and tunnelling them to `origin`; `tls: None`
    /// serves plain WebSocket (for the simulator). An empty `config.origin_description` is
    /// replaced by the dialer's description, and `max_received_message_len` is raised to at
    /// least `max_message_len` (a message must be received whole before it can be truncated).
    pub fn new(
        mut config: EdgeConfig,
        access: Arc<AccessControl>,
        origin: Arc<dyn Dialer>,
        tls: Option<EdgeTls>,
    ) -> Self {
        if config.origin_description.is_empty() {
            config.origin_description = origin.describe();
        }
        config.max_received_message_len =
            config.max_received_message_len.max(config.max_message_len);
        config.max_received_frame_len = config.max_received_frame_len.max(1);
        Edge {
            config,
            access,
            origin,
            tls,
            stats: StatsRecorder::default(),
            kill: KillSwitch::default(),
            next_tunnel: AtomicU64::new(1),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// The Access check (replace its token set to rotate tokens).
    pub fn access(&self) -> &Arc<AccessControl> {
        &self.access
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EdgeStats {
        self.stats.snapshot()
    }

    /// Drops every live tunnel now (both sockets closed, no Close frame), as if the edge died
    /// mid-transaction. Connections still in their handshake are dropped as soon as they would
    /// become tunnels. New connections afterwards are served normally.
    pub fn kill_all_tunnels(&self) {
        self.kill.kill();
    }

    /// Accepts connections from `listener` until `shutdown` completes, each in its own task;
    /// then stops accepting, kills live tunnels (also those served by direct [`Edge::handle`]
    /// calls) and waits up to a short grace period for them to be logged before aborting the
    /// rest. Cancel safe: dropping the future stops accepting and aborts every connection task.
    pub async fn serve(
        self: Arc<Self>,
        mut listener: impl Listener,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let edge = Arc::clone(&self);
                        tasks.spawn(async move { edge.handle(stream, peer).await });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        self.kill_all_tunnels();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tasks.abort_all();
        }
    }

    /// Serves one already-accepted connection to its end: TLS (when configured), the upgrade
    /// request, the Access check, the origin dial, the 101 or a refusal, then the tunnel.
    /// Cancel safe: dropping the future closes both sockets, and a tunnel dropped this way is
    /// still counted closed and logged (`end=abandoned`).
    pub async fn handle(&self, stream: BoxedStream, peer: String) {
        let kill = self.kill.generation();
        let conn = Conn {
            peer: &peer,
            started: Instant::now(),
        };
        let deadline = conn.started + self.config.handshake_timeout;
        let mut client = match tokio::time::timeout_at(deadline, self.accept_tls(stream)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return self.handshake_failed(&conn, &error),
            Err(_) => return self.handshake_failed(&conn, &HandshakeError::Timeout),
        };
        let read = tokio::time::timeout_at(deadline, upgrade::read_request_head(&mut client));
        match read.await.unwrap_or(Err(HandshakeError::Timeout)) {
            Ok((head, leftover)) => self.upgrade(client, head, leftover, &conn, kill).await,
            Err(
                error @ (HandshakeError::Malformed(_) | HandshakeError::RequestTooLarge { .. }),
            ) => {
                let reason = error.to_string();
                self.refuse(client, None, RefusalKind::BadRequest, &reason, &conn)
                    .await;
            }
            Err(error) => self.handshake_failed(&conn, &error),
        }
    }

    async fn accept_tls(&self, stream: BoxedStream) -> Result<BoxedStream, HandshakeError> {
        match &self.tls {
            Some(tls) => tls.accept(stream).await,
            None => Ok(stream),
        }
    }

    /// Access check, upgrade check, origin dial, 101, tunnel.
    async fn upgrade(
        &self,
        mut client: BoxedStream,
        head: RequestHead,
        leftover: Vec<u8>,
        conn: &Conn<'_>,
        kill: u64,
    ) {
        let token_id = match self.access.check(&head.headers) {
            AccessDecision::Allow { token_id } => token_id,
            AccessDecision::Deny => {
                let reason = deny_reason(&head);
                return self
                    .refuse(client, Some(&head), RefusalKind::Forbidden, reason, conn)
                    .await;
            }
            AccessDecision::LoginRedirect => {
                let reason = "the Access application has no Service Auth policy";
                return self
                    .refuse(
                        client,
                        Some(&head),
                        RefusalKind::LoginRedirect,
                        reason,
                        conn,
                    )
                    .await;
            }
        };
        let key = match head.websocket_key() {
            Ok(key) => key.to_owned(),
            Err(reason) => {
                return self
                    .refuse(client, Some(&head), RefusalKind::BadRequest, reason, conn)
                    .await;
            }
        };
        let origin = match self.dial_origin().await {
            Ok(origin) => origin,
            Err(reason) => {
                return self
                    .refuse(client, Some(&head), RefusalKind::BadGateway, &reason, conn)
                    .await;
            }
        };
        if let Err(error) = self
            .respond(&mut client, &upgrade::switching_protocols(&key))
            .await
        {
            return self.handshake_failed(conn, &error);
        }
        let ws = WebSocketStream::from_partially_read(
            client,
            leftover,
            Role::Server,
            Some(self.websocket_config()),
        )
        .await;
        self.run_tunnel(ws, origin, token_id, conn, kill).await;
    }

    async fn dial_origin(&self) -> Result<BoxedStream, String> {
        let description = &self.config.origin_description;
        match tokio::time::timeout(self.config.dial_timeout, self.origin.dial()).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(format!("cannot reach the origin {description}: {error}")),
            Err(_) => Err(format!(
                "the origin {description} did not accept within {} ms",
                self.config.dial_timeout.as_millis()
            )),
        }
    }

    /// Writes a handshake response within the response timeout.
    async fn respond(
        &self,
        client: &mut BoxedStream,
        response: &[u8],
    ) -> Result<(), HandshakeError> {
        let write = async {
            client.write_all(response).await?;
            client.flush().await
        };
        match tokio::time::timeout(self.config.response_timeout, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(HandshakeError::Timeout),
        }
    }

    /// Answers with a refusal, closes the connection, logs and counts it.
    async fn refuse(
        &self,
        mut client: BoxedStream,
        head: Option<&RequestHead>,
        kind: RefusalKind,
        reason: &str,
        conn: &Conn<'_>,
    ) {
        let status = kind.status();
        self.stats.refused(status);
        tracing::info!(
            peer = %conn.peer,
            status,
            reason,
            duration_ms = duration_ms(conn.started),
            "tunnel upgrade refused"
        );
        let response = upgrade::refusal_response(kind, head);
        if self.respond(&mut client, &response).await.is_ok() {
            let _ = tokio::time::timeout(self.config.response_timeout, client.shutdown()).await;
        }
    }

    fn handshake_failed(&self, conn: &Conn<'_>, error: &HandshakeError) {
        self.stats.handshake_failed();
        tracing::debug!(peer = %conn.peer, %error, "connection ended before the upgrade");
    }

    fn websocket_config(&self) -> WebSocketConfig {
        // tungstenite zero-fills the free part of its read buffer before every read; its 128 KiB
        // default made that memset the edge's top cost per small message (measured by `just
        // bench`). One cloudflared-sized message plus headers is enough.
        WebSocketConfig::default()
            .read_buffer_size(WEBSOCKET_READ_BUFFER_SIZE)
            .max_message_size(Some(self.config.max_received_message_len))
            .max_frame_size(Some(self.config.max_received_frame_len))
            .accept_unmasked_frames(false)
    }

    /// Pipes an upgraded connection until it ends, then writes its access-log line.
    async fn run_tunnel(
        &self,
        ws: pipe::Ws,
        origin: BoxedStream,
        token_id: String,
        conn: &Conn<'_>,
        kill: u64,
    ) {
        let mut record = TunnelRecord {
            edge: self,
            id: self.next_tunnel.fetch_add(1, Ordering::Relaxed),
            token_id,
            peer: conn.peer,
            started: conn.started,
            counters: Counters::default(),
            end: None,
        };
        self.stats.tunnel_opened();
        tracing::debug!(
            tunnel = record.id,
            token_id = %record.token_id,
            peer = %conn.peer,
            "tunnel opened"
        );
        let settings = PipeSettings {
            max_message_len: self.config.max_message_len,
            ping_interval: self.config.ping_interval,
        };
        let killed = self.kill.killed_after(kill);
        let end = pipe::run(ws, origin, settings, killed, &record.counters).await;
        record.end = Some(end);
    }
}

/// Why Access said no, for the log.
fn deny_reason(head: &RequestHead) -> &'static str {
    let has = |name| head.headers.contains_key(name);
    if has(CLIENT_ID_HEADER) && has(CLIENT_SECRET_HEADER) {
        "unknown service token"
    } else {
        "no Cf-Access-Client-Id / Cf-Access-Client-Secret"
    }
}

/// [`Edge::kill_all_tunnels`]'s signal: a generation counter and a `Notify`. Not a `watch`
/// channel: a watch parks each waiter on one of 8 lists picked by tokio's thread RNG (seeded
/// from the OS), so the order in which killed tunnels wake and close would differ between
/// two runs of one simulated seed; `Notify` wakes its waiters in a fixed order.
#[derive(Debug, Default)]
struct KillSwitch {
    generation: AtomicU64,
    notify: Notify,
}

impl KillSwitch {
    /// The current generation; a tunnel started now is killed by the next [`Self::kill`].
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Completes once a kill happened after generation `seen`.
    async fn killed_after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.generation() != seen {
                return;
            }
            notified.await;
        }
    }
}

fn duration_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One live tunnel; dropping it (however the tunnel ended, even by task abort) counts it closed
/// and writes the access-log line.
struct TunnelRecord<'a> {
    edge: &'a Edge,
    id: u64,
    token_id: String,
    peer: &'a str,
    started: Instant,
    counters: Counters,
    end: Option<TunnelEnd>,
}

impl Drop for TunnelRecord<'_> {
    fn drop(&mut self) {
        let totals = self.counters.totals();
        self.edge.stats.tunnel_closed(totals);
        let end = self
            .end
            .as_ref()
            .map_or_else(|| "abandoned".to_owned(), ToString::to_string);
        tracing::info!(
            tunnel = self.id,
            token_id = %self.token_id,
            peer = %self.peer,
            status = 101,
            bytes_to_origin = totals.bytes_to_origin,
            bytes_from_origin = totals.bytes_from_origin,
            truncated_messages = totals.truncated_messages,
            discarded_text_messages = totals.discarded_text_messages,
            duration_ms = duration_ms(self.started),
            origin = %self.edge.config.origin_description,
            end = %end,
            "tunnel closed"
        );
    }
}
