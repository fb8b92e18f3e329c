//! The edge's limits and timeouts.
//!
//! Why these defaults: every one mirrors the real `cloudflared` (54 s keepalive pings, 16 KiB
//! message limit and origin read buffer, 30 s origin connect timeout) so a client tested against
//! this edge behaves the same against Cloudflare. The handshake and response-write timeouts are
//! ours: `cloudflared` has none, and an edge that hangs forever on a silent client would leak
//! connections in long test runs.

use std::time::Duration;

/// Default keepalive: a Ping (plus an unsolicited empty Pong) every 54 s, like cloudflared.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(54);
/// cloudflared's message limit: inbound binary messages are truncated to this many bytes, and
/// the origin is read with a buffer of this size (one outbound frame per read).
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Default origin connect timeout (cloudflared's).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for TLS plus the upgrade request (ours; cloudflared has none).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for writing a handshake response to the client.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest WebSocket message accepted before truncation (larger ones end the tunnel: tungstenite
/// must buffer a whole message before it can be truncated).
pub const DEFAULT_MAX_RECEIVED_MESSAGE_LEN: usize = 64 << 20;
/// Largest single WebSocket frame accepted.
pub const DEFAULT_MAX_RECEIVED_FRAME_LEN: usize = 16 << 20;

/// How an [`Edge`](crate::Edge) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Where tunnels lead, for logs (empty: the dialer's own description is used).
    pub origin_description: String,
    /// Interval of the Ping + empty Pong keepalive sent on every tunnel.
    pub ping_interval: Duration,
    /// Inbound binary messages are truncated to this length; the origin read buffer size.
    pub max_message_len: usize,
    /// Limit for dialling the origin; on expiry the client gets 502.
    pub dial_timeout: Duration,
    /// Limit for the client's TLS handshake plus its upgrade request.
    pub handshake_timeout: Duration,
    /// Limit for writing the 101 or a refusal.
    pub response_timeout: Duration,
    /// tungstenite's `max_message_size` (must exceed `max_message_len` for truncation to happen).
    pub max_received_message_len: usize,
    /// tungstenite's `max_frame_size`.
    pub max_received_frame_len: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            origin_description: String::new(),
            ping_interval: DEFAULT_PING_INTERVAL,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_received_message_len: DEFAULT_MAX_RECEIVED_MESSAGE_LEN,
            max_received_frame_len: DEFAULT_MAX_RECEIVED_FRAME_LEN,
        }
    }
}
