//! The tunnel egress: reaching an origin in a private network through a Cloudflare Tunnel,
//! the way Hyperdrive does.
//!
//! Why a tunnel: the database has no public address. `cloudflared` runs next to it and keeps
//! an outbound connection to Cloudflare's edge; a client reaches it by opening a WebSocket to
//! the tunnel's public hostname, behind Cloudflare Access, which admits requests carrying a
//! service token (`Cf-Access-Client-Id` / `Cf-Access-Client-Secret`). Raw Postgres bytes
//! travel in binary WebSocket messages, and the database still speaks TLS, so the layering is
//!
//! ```text
//! Postgres TLS  (crate::tls, negotiated with SSLRequest on top of what the dialer returns)
//!   WebSocket   (websocket: binary messages <= 16 KiB <-> byte stream)
//!     TLS       (egress: BoringSSL to the edge, verified, SNI = tunnel host)
//!       TCP     (egress: to the tunnel host, port 443 by default)
//! ```
//!
//! Both halves must interoperate with the real cloudflared and the real edge, so they follow
//! the observed wire behaviour in `/work/shared/reference/cloudflared-wire.md` (header order,
//! message sizes, text messages ignored, no Close frame, no half-close); the submodule docs
//! say where and why.
//!
//! - [`egress`]: [`TunnelDialer`], a [`crate::stream::Dialer`] that does TCP + TLS + upgrade
//!   within a handshake timeout and explains every failure as a [`TunnelError`] (carried inside
//!   the `io::Error` the dialer returns; see [`TunnelError::from_io`]).
//! - [`websocket`]: [`WebSocketStream`], a WebSocket as an `AsyncRead + AsyncWrite` byte stream.

pub mod egress;
pub mod websocket;

pub use egress::{
    AccessToken, DEFAULT_HANDSHAKE_TIMEOUT, TunnelDialer, TunnelError, TunnelSettings, TunnelTls,
    TunnelUrl, default_user_agent, upgrade, upgrade_request, upgrade_request_headers,
};
pub use websocket::{MAX_MESSAGE_LEN, WebSocketStream, websocket_config};
