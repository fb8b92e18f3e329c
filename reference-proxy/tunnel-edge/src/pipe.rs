//! Moving bytes between an upgraded WebSocket and the origin, exactly as `cloudflared` does.
//!
//! Why these quirks are reproduced rather than fixed: a tunnel client that works here must work
//! against Cloudflare, so the edge is as unforgiving as the real one.
//! - Inbound: only binary messages carry data; text messages are dropped silently; a message
//!   longer than the limit (16 KiB) is cut to the limit and the rest is lost. Fragmented messages
//!   are reassembled by tungstenite, which also enforces client masking and answers pings.
//! - Outbound: every origin read (buffer of the message limit) becomes one binary frame.
//! - Keepalive: every ping interval a Ping plus an unsolicited empty Pong; pongs are not
//!   checked and there is no idle timeout.
//! - End: when either side reaches EOF (or fails) both are dropped — no half-close and no Close
//!   frame. Only a Close sent by the client is answered with a Close before the drop.
//!
//! The two directions run as two futures in one task, each owning its halves, so a slow client
//! never stops the origin from being read for pings and vice versa a slow origin never stops
//! control frames from being answered.

use crate::stats::TunnelTotals;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use reference_proxy::stream::BoxedStream;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long the reply to a client's Close may take to flush before the connection is dropped.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Shortest keepalive interval (a zero interval would be a busy loop).
const MIN_PING_INTERVAL: Duration = Duration::from_millis(1);

/// An upgraded client connection.
pub(crate) type Ws = WebSocketStream<BoxedStream>;

/// Why a tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TunnelEnd {
    /// The client sent a Close frame (answered with a Close).
    ClientClosed,
    /// The client's connection ended without a Close frame.
    ClientEof,
    /// Reading or writing the client failed (including protocol errors such as unmasked frames).
    ClientError(String),
    /// The origin closed its connection.
    OriginEof,
    /// Reading or writing the origin failed.
    OriginError(String),
    /// [`Edge::kill_all_tunnels`](crate::Edge::kill_all_tunnels) or shutdown.
    Killed,
}

impl fmt::Display for TunnelEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelEnd::ClientClosed => f.write_str("client sent Close"),
            TunnelEnd::ClientEof => f.write_str("client EOF"),
            TunnelEnd::ClientError(error) => write!(f, "client error: {error}"),
            TunnelEnd::OriginEof => f.write_str("origin EOF"),
            TunnelEnd::OriginError(error) => write!(f, "origin error: {error}"),
            TunnelEnd::Killed => f.write_str("killed by the edge"),
        }
    }
}

/// Per-tunnel counters, readable after the pipe ends however it ended.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub to_origin: AtomicU64,
    pub from_origin: AtomicU64,
    pub truncated: AtomicU64,
    pub discarded_text: AtomicU64,
    peer_closed: AtomicBool,
}

impl Counters {
    /// What the tunnel moved so far.
    pub fn totals(&self) -> TunnelTotals {
        TunnelTotals {
            bytes_to_origin: self.to_origin.load(Ordering::Relaxed),
            bytes_from_origin: self.from_origin.load(Ordering::Relaxed),
            truncated_messages: self.truncated.load(Ordering::Relaxed),
            discarded_text_messages: self.discarded_text.load(Ordering::Relaxed),
        }
    }
}

/// The limits a pipe runs with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipeSettings {
    pub max_message_len: usize,
    pub ping_interval: Duration,
}

/// Pipes until either side ends or `killed` completes.
pub(crate) async fn run(
    ws: Ws,
    origin: BoxedStream,
    settings: PipeSettings,
    killed: impl Future<Output = ()>,
    counters: &Counters,
) -> TunnelEnd {
    let (mut sink, mut stream) = ws.split();
    let (origin_read, origin_write) = tokio::io::split(origin);
    let end = {
        let upstream = client_to_origin(&mut stream, origin_write, settings, counters);
        let downstream = origin_to_client(origin_read, &mut sink, settings, counters);
        // Fixed polling order: no draw from tokio's RNG, so a seeded simulation replays.
        tokio::select! {
            biased;
            () = killed => TunnelEnd::Killed,
            end = upstream => end,
            end = downstream => end,
        }
    };
    if counters.peer_closed.load(Ordering::Relaxed) {
        // Answer the client's Close even when the other direction ended the pipe first.
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, sink.flush()).await;
    }
    end
}

/// Client messages to the origin: binary only, truncated to the limit.
async fn client_to_origin<W: AsyncWrite + Unpin>(
    stream: &mut SplitStream<Ws>,
    mut origin: W,
    settings: PipeSettings,
    counters: &Counters,
) -> TunnelEnd {
    while let Some(message) = stream.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => data,
            Ok(Message::Text(_)) => {
                counters.discarded_text.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("text message discarded");
                continue;
            }
            Ok(Message::Close(_)) => {
                // tungstenite queued the Close reply; the next read flushes it and ends.
                counters.peer_closed.store(true, Ordering::Relaxed);
                continue;
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            // How every cloudflared client ends a tunnel: TCP closed, no Close frame.
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return TunnelEnd::ClientEof;
            }
            Err(error) => return TunnelEnd::ClientError(error.to_string()),
        };
        let kept = data.len().min(settings.max_message_len);
        if kept < data.len() {
            counters.truncated.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                len = data.len(),
                kept,
                "binary message truncated to the message limit"
            );
        }
        if let Err(error) = write_flush(&mut origin, &data[..kept]).await {
            return TunnelEnd::OriginError(error.to_string());
        }
        counters.to_origin.fetch_add(kept as u64, Ordering::Relaxed);
    }
    if counters.peer_closed.load(Ordering::Relaxed) {
        TunnelEnd::ClientClosed
    } else {
        TunnelEnd::ClientEof
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(origin: &mut W, data: &[u8]) -> std::io::Result<()> {
    origin.write_all(data).await?;
    origin.flush().await
}

/// Origin reads to the client, one binary frame per read, with the Ping + Pong keepalive.
async fn origin_to_client<R: AsyncRead + Unpin>(
    mut origin: R,
    sink: &mut SplitSink<Ws, Message>,
    settings: PipeSettings,
    counters: &Counters,
) -> TunnelEnd {
    let mut buffer = vec![0u8; settings.max_message_len.max(1)];
    let period = settings.ping_interval.max(MIN_PING_INTERVAL);
    let mut pings = tokio::time::interval_at(Instant::now() + period, period);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Fixed polling order (no draw from tokio's RNG); the keepalive first, as it is ready
        // only once per period and so never starves the reads.
        let sent = tokio::select! {
            biased;
            _ = pings.tick() => send_keepalive(sink).await,
            read = origin.read(&mut buffer) => match read {
                Ok(0) => return TunnelEnd::OriginEof,
                Ok(len) => {
                    counters.from_origin.fetch_add(len as u64, Ordering::Relaxed);
                    sink.send(Message::Binary(Bytes::copy_from_slice(&buffer[..len]))).await
                }
                Err(error) => return TunnelEnd::OriginError(error.to_string()),
            },
        };
        if let Err(error) = sent {
            return TunnelEnd::ClientError(error.to_string());
        }
    }
}

/// A Ping and an unsolicited empty Pong, as cloudflared sends them.
async fn send_keepalive(
    sink: &mut SplitSink<Ws, Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    sink.feed(Message::Ping(Bytes::new())).await?;
    sink.send(Message::Pong(Bytes::new())).await
}
