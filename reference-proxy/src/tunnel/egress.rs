//! The tunnel dialer: TCP, then TLS to the edge, then the WebSocket upgrade with the Access
//! service token, exactly as `cloudflared access tcp` does it.
//!
//! Why it is written this way:
//! - **Wire compatibility.** The upgrade request carries cloudflared's header set in
//!   cloudflared's order and spelling (`Host`, `User-Agent`, then alphabetically
//!   `Cf-Access-Client-Id`, `Cf-Access-Client-Secret`, `Connection`, `Sec-WebSocket-Key`,
//!   `Sec-WebSocket-Version`, `Upgrade`). tungstenite's client handshake cannot produce that: it
//!   always writes `Host, Connection, Upgrade, Sec-WebSocket-Version, Sec-WebSocket-Key` first
//!   and lower-cases every other header name (`http::HeaderName`). So this module writes the
//!   request itself ([`upgrade_request`]), parses the answer with tungstenite's own response
//!   parser, checks it like tungstenite does (status 101, `Upgrade: websocket`, `Connection`
//!   containing `upgrade`, the `Sec-WebSocket-Accept` derived from our key), and hands the
//!   stream, with any bytes read past the response head, to tungstenite in the client role
//!   (which masks outbound frames).
//! - **TLS is mandatory**, whatever the URL scheme (`wss://`, `https://` and `http://` are all
//!   dialled with TLS, as cloudflared does). SNI is the host without the port; the chain is
//!   verified against the system roots (BoringSSL's default paths, so `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` apply) or only the CA in `ca_file`, and the hostname (or IP) is checked. No
//!   ALPN is offered. Postgres TLS is negotiated later, inside the WebSocket
//!   ([`crate::tls`]), so the dialer returns the raw tunnel byte stream.
//! - **A handshake timeout**: cloudflared has none and hangs on a silent edge; here TCP + TLS +
//!   upgrade together are bounded by [`TunnelSettings::handshake_timeout`].
//! - **Errors a Postgres user can act on.** Every failure is a [`TunnelError`] whose `Display`
//!   says what to check (token, Access policy, ingress rule, CA, ...). [`Dialer::dial`] must
//!   return `io::Error`, so the `TunnelError` travels inside it: get it back with
//!   `error.get_ref().and_then(|e| e.downcast_ref::<TunnelError>())`. The `io::ErrorKind`
//!   is also set meaningfully ([`TunnelError::io_kind`]).
//! - **Composable transport.** [`TunnelDialer::new`] dials TCP to the tunnel host;
//!   [`TunnelDialer::over`] takes the byte stream to the edge from any other [`Dialer`] and
//!   runs the same upgrade, Access and framing code on it. The simulator uses it to carry
//!   tunnels over its simulated network with [`TunnelTls::Plaintext`]: BoringSSL draws its
//!   handshake randomness from the operating system (a seed cannot fix it) and a handshake
//!   costs more CPU than a whole simulated transaction, so the sim leaves the outer TLS layer
//!   to the real-network tests. A production configuration ([`TunnelDialer::new`], the only
//!   path from `--tunnel`) always verifies TLS.
//! - **The secret never leaks**: `AccessToken`'s `Debug` redacts it, logs and
//!   [`Dialer::describe`] never contain it, and no error message quotes a request header.

use crate::config::TunnelConfig;
use crate::stream::{BoxedStream, Dialer};
use crate::tunnel::websocket::WebSocketStream;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use futures_util::future::BoxFuture;
use std::fmt;
use std::io;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::{Response, generate_key};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::http::{HeaderMap, StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::Role;

/// Port dialled when the URL names none (TLS, whatever the scheme).
pub const DEFAULT_PORT: u16 = 443;
/// Request path when the URL names none.
pub const DEFAULT_PATH: &str = "/";
/// Default limit for TCP + TLS + WebSocket upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest HTTP response head accepted from the edge.
pub const MAX_RESPONSE_HEAD_LEN: usize = 16 * 1024;
/// Bytes read at a time while waiting for the response head.
const RESPONSE_READ_CHUNK: usize = 4096;
/// Where Access redirects a request it would ask a human to log in for.
pub const ACCESS_LOGIN_PATH_PREFIX: &str = "/cdn-cgi/access/login";
/// Header the edge adds to responses that cloudflared (not the edge) produced.
pub const CLOUDFLARED_META_HEADER: &str = "Cf-Cloudflared-Response-Meta";
/// The `src` of [`CLOUDFLARED_META_HEADER`] when cloudflared itself answered.
const CLOUDFLARED_META_SOURCE: &str = r#""src":"cloudflared""#;
/// The only WebSocket version there is.
const WEBSOCKET_VERSION: &str = "13";
/// Schemes accepted in a tunnel URL; all of them are dialled with TLS.
const TLS_SCHEMES: [&str; 3] = ["wss", "https", "http"];

/// Why the tunnel could not be set up or dialled. Each message is what a Postgres client reads
/// in the ErrorResponse, so it says what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The tunnel URL is not `wss://host[:port][/path][?query]`.
    #[error("invalid tunnel URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// A value that goes into an upgrade request header cannot be sent.
    #[error("invalid {what}: {problem}")]
    InvalidHeaderValue {
        /// Which setting.
        what: &'static str,
        /// Why it cannot be sent.
        problem: &'static str,
    },
    /// Only one half of the Access service token is configured.
    #[error(
        "the Access service token is incomplete: set both the client id and the client secret, or neither"
    )]
    IncompleteToken,
    /// The CA file for the tunnel host could not be loaded.
    #[error("cannot load the tunnel CA file {path}: {detail}")]
    CaFile {
        /// Its path.
        path: PathBuf,
        /// BoringSSL's reason.
        detail: String,
    },
    /// BoringSSL could not be configured.
    #[error("cannot set up TLS for the tunnel: {0}")]
    TlsSetup(String),
    /// The TCP connection to the edge failed (refused, unreachable, name not found).
    #[error("cannot reach the tunnel host {address}: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The OS error.
        source: io::Error,
    },
    /// The edge's certificate did not verify (unknown CA, wrong name, expired).
    #[error("TLS verification of the tunnel host {host} failed: {reason}")]
    TlsVerify {
        /// The host whose certificate was checked.
        host: String,
        /// BoringSSL's verdict, with a hint.
        reason: String,
    },
    /// The TLS handshake failed for another reason (protocol, connection lost).
    #[error("TLS handshake with the tunnel host {host} failed: {detail}")]
    TlsHandshake {
        /// The tunnel host.
        host: String,
        /// BoringSSL's reason.
        detail: String,
    },
    /// The connection failed while sending the upgrade or reading the answer.
    #[error(
        "the connection to the tunnel host {host} failed during the WebSocket upgrade: {source}"
    )]
    UpgradeIo {
        /// The tunnel host.
        host: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The edge closed the connection without answering the upgrade.
    #[error(
        "the tunnel host {host} closed the connection without answering the WebSocket upgrade (websocket: bad handshake)"
    )]
    ClosedDuringUpgrade {
        /// The tunnel host.
        host: String,
    },
    /// The answer to the upgrade is not HTTP.
    #[error(
        "the tunnel sent a malformed HTTP response to the WebSocket upgrade: {detail} (websocket: bad handshake)"
    )]
    MalformedResponse {
        /// The parser's complaint.
        detail: String,
    },
    /// The answer's head is longer than [`MAX_RESPONSE_HEAD_LEN`].
    #[error("the tunnel's HTTP response head exceeds {limit} bytes (websocket: bad handshake)")]
    ResponseTooLarge {
        /// The limit.
        limit: usize,
    },
    /// HTTP 403: Access rejected the request.
    #[error("{}", access_denied_message(*.token_sent))]
    AccessDenied {
        /// Whether a service token was presented.
        token_sent: bool,
    },
    /// A redirect to the Access login page: no Service Auth policy admits tokens.
    #[error(
        "the Access application has no Service Auth policy (HTTP {status} to the login page): add a Service Auth policy that includes this service token"
    )]
    NoServiceAuthPolicy {
        /// The redirect status (302).
        status: u16,
    },
    /// HTTP 502 from cloudflared: the tunnel is up, the database is not reachable from it.
    #[error(
        "the tunnel is up but cloudflared cannot reach the database (HTTP 502): check the tunnel's ingress rule and that the database accepts connections from cloudflared"
    )]
    OriginUnreachable,
    /// Any other non-101 status.
    #[error("unexpected HTTP {status} {reason} from the tunnel (websocket: bad handshake)")]
    UnexpectedStatus {
        /// The status code.
        status: u16,
        /// Its reason phrase (`-` when the code has none).
        reason: String,
    },
    /// A 101 that is not a valid WebSocket upgrade.
    #[error(
        "the tunnel answered HTTP 101 but not with a valid WebSocket upgrade: {reason} (websocket: bad handshake)"
    )]
    BadUpgrade {
        /// Which check failed.
        reason: &'static str,
    },
    /// TCP + TLS + upgrade took longer than the handshake timeout.
    #[error("the tunnel handshake did not finish within {} s", .timeout.as_secs_f64())]
    Timeout {
        /// The limit.
        timeout: Duration,
    },
}

fn access_denied_message(token_sent: bool) -> &'static str {
    if token_sent {
        "the tunnel refused the Access service token (HTTP 403): check the token's client id and secret and that the Access application's policy includes it"
    } else {
        "the tunnel requires an Access service token (HTTP 403): configure the token's client id and secret"
    }
}

impl TunnelError {
    /// The `io::ErrorKind` this error travels as.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            TunnelError::Connect { source, .. } | TunnelError::UpgradeIo { source, .. } => {
                source.kind()
            }
            TunnelError::Timeout { .. } => io::ErrorKind::TimedOut,
            TunnelError::AccessDenied { .. } | TunnelError::NoServiceAuthPolicy { .. } => {
                io::ErrorKind::PermissionDenied
            }
            TunnelError::ClosedDuringUpgrade { .. } => io::ErrorKind::UnexpectedEof,
            TunnelError::InvalidUrl { .. }
            | TunnelError::InvalidHeaderValue { .. }
            | TunnelError::IncompleteToken => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        }
    }

    /// Finds a `TunnelError` carried in an `io::Error` returned by [`TunnelDialer`].
    pub fn from_io(error: &io::Error) -> Option<&TunnelError> {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<TunnelError>())
    }
}

impl From<TunnelError> for io::Error {
    fn from(error: TunnelError) -> Self {
        io::Error::new(error.io_kind(), error)
    }
}

/// Where the tunnel is: `wss://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelUrl {
    /// Host name or IP address; an IPv6 address is stored without brackets.
    pub host: String,
    /// TCP port, default [`DEFAULT_PORT`].
    pub port: u16,
    /// Request target, default [`DEFAULT_PATH`].
    pub path_and_query: String,
}

impl TunnelUrl {
    /// Parses `wss://host[:port][/path][?query]`; `https://` and `http://` are accepted and
    /// dialled with TLS too (as cloudflared does). IPv6 addresses go in brackets.
    pub fn parse(url: &str) -> Result<Self, TunnelError> {
        parse_url(url.trim()).map_err(|reason| TunnelError::InvalidUrl {
            url: url.to_string(),
            reason,
        })
    }

    /// The `Host` header value: `host[:port]`, the port omitted when it is 443.
    pub fn host_header(&self) -> String {
        if self.port == DEFAULT_PORT {
            self.bracketed_host()
        } else {
            self.authority()
        }
    }

    /// `host:port`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// `wss://host:port/path`, for logs (the query is left out: it may carry parameters that
    /// do not belong in logs).
    pub fn describe(&self) -> String {
        let path = self
            .path_and_query
            .split('?')
            .next()
            .unwrap_or(DEFAULT_PATH);
        format!("wss://{}{}", self.authority(), path)
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

impl fmt::Display for TunnelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn parse_url(url: &str) -> Result<TunnelUrl, String> {
    let rest = strip_scheme(url)?;
    if rest.contains('#') {
        return Err("a fragment (#...) is not allowed".into());
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    if authority.contains('@') {
        return Err(
            "credentials in the URL are not supported: configure the Access service token instead"
                .into(),
        );
    }
    let (host, port) = split_host_port(authority)?;
    Ok(TunnelUrl {
        host,
        port,
        path_and_query: parse_target(target)?,
    })
}

fn strip_scheme(url: &str) -> Result<&str, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("missing scheme: write wss://host[:port][/path]".into());
    };
    if TLS_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Ok(rest);
    }
    if scheme.eq_ignore_ascii_case("ws") {
        return Err(
            "plain ws:// is not supported: the tunnel is always reached over TLS, write wss://"
                .into(),
        );
    }
    Err(format!(
        "unsupported scheme {scheme:?}: write wss://host[:port][/path] (https:// and http:// are accepted too, and dialled with TLS)"
    ))
}

fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address must be closed with ']'")?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("expected ':port' after ']'")?,
            ),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err(
                    "an IPv6 address must be written in brackets, e.g. wss://[::1]:8443".into(),
                );
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    check_host(host)?;
    Ok((host.to_string(), port.map_or(Ok(DEFAULT_PORT), parse_port)?))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    match host.chars().find(|c| !allowed(*c)) {
        Some(bad) => Err(format!(
            "the host contains {bad:?}, which is not allowed in a host name"
        )),
        None => Ok(()),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{port:?} is not a port number (1-65535)")),
        Ok(port) => Ok(port),
    }
}

fn parse_target(target: &str) -> Result<String, String> {
    if let Some(bad) = target.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the path contains {bad:?}: spaces, control and non-ASCII characters must be percent-encoded"
        ));
    }
    Ok(match target {
        "" => DEFAULT_PATH.to_string(),
        query if query.starts_with('?') => format!("{DEFAULT_PATH}{query}"),
        path => path.to_string(),
    })
}

/// A Cloudflare Access service token. `Debug` redacts the secret; it is only ever written into
/// the upgrade request.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Sent as `Cf-Access-Client-Id`.
    pub client_id: String,
    /// Sent as `Cf-Access-Client-Secret`.
    pub client_secret: String,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// Everything the dialer needs.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// Where the tunnel is.
    pub url: TunnelUrl,
    /// The Access service token, if the tunnel host is behind Access.
    pub token: Option<AccessToken>,
    /// Trust only this PEM CA file for the tunnel host instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Limit for TCP + TLS + upgrade, default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// Sent as `User-Agent`, default [`default_user_agent`].
    pub user_agent: String,
}

/// `reference-proxy/<crate version>`.
pub fn default_user_agent() -> String {
    format!("reference-proxy/{}", env!("CARGO_PKG_VERSION"))
}

impl TunnelSettings {
    /// Settings for `url` with every default: no token, system roots, 10 s, our user agent.
    pub fn new(url: TunnelUrl) -> Self {
        TunnelSettings {
            url,
            token: None,
            ca_file: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            user_agent: default_user_agent(),
        }
    }

    /// Settings from the proxy configuration (`--tunnel` and friends).
    pub fn from_config(config: &TunnelConfig) -> Result<Self, TunnelError> {
        let token = match (&config.access_client_id, &config.access_client_secret) {
            (Some(id), Some(secret)) => Some(AccessToken {
                client_id: id.clone(),
                client_secret: secret.clone(),
            }),
            (None, None) => None,
            _ => return Err(TunnelError::IncompleteToken),
        };
        Ok(TunnelSettings {
            token,
            ca_file: config.ca.clone(),
            handshake_timeout: config.handshake_timeout,
            ..TunnelSettings::new(TunnelUrl::parse(&config.url)?)
        })
    }

    /// Rejects values that cannot go into a request header.
    fn validate(&self) -> Result<(), TunnelError> {
        check_header_value("User-Agent", &self.user_agent)?;
        if let Some(token) = &self.token {
            check_header_value("Access client id", &token.client_id)?;
            check_header_value("Access client secret", &token.client_secret)?;
        }
        Ok(())
    }
}

fn check_header_value(what: &'static str, value: &str) -> Result<(), TunnelError> {
    let problem = if value.is_empty() {
        "it is empty"
    } else if !value.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        "it must be printable ASCII without line breaks (it is sent in an HTTP header)"
    } else {
        return Ok(());
    };
    Err(TunnelError::InvalidHeaderValue { what, problem })
}

/// The upgrade request's headers, in the order they are sent (cloudflared's: `Host`,
/// `User-Agent`, then alphabetical).
pub fn upgrade_request_headers(settings: &TunnelSettings, key: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        ("Host", settings.url.host_header()),
        ("User-Agent", settings.user_agent.clone()),
    ];
    if let Some(token) = &settings.token {
        headers.push(("Cf-Access-Client-Id", token.client_id.clone()));
        headers.push(("Cf-Access-Client-Secret", token.client_secret.clone()));
    }
    headers.extend([
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Key", key.to_string()),
        ("Sec-WebSocket-Version", WEBSOCKET_VERSION.to_string()),
        ("Upgrade", "websocket".to_string()),
    ]);
    headers
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The complete upgrade request head, as sent.
pub fn upgrade_request(settings: &TunnelSettings, key: &str) -> Vec<u8> {
    let mut request = format!("GET {} HTTP/1.1\r\n", settings.url.path_and_query);
    for (name, value) in upgrade_request_headers(settings, key) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Performs the WebSocket upgrade on an already secured stream and returns the byte stream.
/// [`TunnelDialer`] calls it after TLS; tests may call it on any stream.
pub async fn upgrade<S>(
    mut stream: S,
    settings: &TunnelSettings,
) -> Result<WebSocketStream<S>, TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let host = &settings.url.host;
    let io_error = |source| TunnelError::UpgradeIo {
        host: host.clone(),
        source,
    };
    let key = generate_key();
    stream
        .write_all(&upgrade_request(settings, &key))
        .await
        .map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let (response, rest) = read_response_head(&mut stream, host).await?;
    check_response(&response, &key, settings.token.is_some())?;
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Client).await)
}

/// Reads until a complete response head; returns it and the bytes read past it.
async fn read_response_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    host: &str,
) -> Result<(Response, Vec<u8>), TunnelError> {
    let mut head = Vec::with_capacity(RESPONSE_READ_CHUNK);
    let mut chunk = [0u8; RESPONSE_READ_CHUNK];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|source| TunnelError::UpgradeIo {
                host: host.to_string(),
                source,
            })?;
        if read == 0 {
            return Err(TunnelError::ClosedDuringUpgrade {
                host: host.to_string(),
            });
        }
        head.extend_from_slice(&chunk[..read]);
        let parsed = Response::try_parse(&head).map_err(|e| TunnelError::MalformedResponse {
            detail: e.to_string(),
        })?;
        if let Some((len, response)) = parsed {
            return Ok((response, head.split_off(len)));
        }
        if head.len() > MAX_RESPONSE_HEAD_LEN {
            return Err(TunnelError::ResponseTooLarge {
                limit: MAX_RESPONSE_HEAD_LEN,
            });
        }
    }
}

/// Accepts exactly a valid 101; maps everything else to the error that explains it.
fn check_response(response: &Response, key: &str, token_sent: bool) -> Result<(), TunnelError> {
    let status = response.status();
    let headers = response.headers();
    match status.as_u16() {
        101 => check_switch(headers, key),
        403 => Err(TunnelError::AccessDenied { token_sent }),
        _ if status.is_redirection() && redirects_to_access_login(headers) => {
            Err(TunnelError::NoServiceAuthPolicy {
                status: status.as_u16(),
            })
        }
        502 if from_cloudflared(headers) => Err(TunnelError::OriginUnreachable),
        _ => Err(unexpected_status(status)),
    }
}

fn unexpected_status(status: StatusCode) -> TunnelError {
    TunnelError::UnexpectedStatus {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("-").to_string(),
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn redirects_to_access_login(headers: &HeaderMap) -> bool {
    header(headers, "Location")
        .and_then(|location| location.parse::<Uri>().ok())
        .is_some_and(|uri| uri.path().starts_with(ACCESS_LOGIN_PATH_PREFIX))
}

fn from_cloudflared(headers: &HeaderMap) -> bool {
    header(headers, CLOUDFLARED_META_HEADER).is_some_and(|meta| {
        let compact: String = meta.chars().filter(|c| !c.is_whitespace()).collect();
        compact.contains(CLOUDFLARED_META_SOURCE)
    })
}

/// The RFC 6455 checks of a 101 answer (the ones cloudflared's client makes).
fn check_switch(headers: &HeaderMap, key: &str) -> Result<(), TunnelError> {
    let bad = |reason| Err(TunnelError::BadUpgrade { reason });
    if !header(headers, "Upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return bad("the Upgrade header is not \"websocket\"");
    }
    let upgrade_token = |v: &str| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    };
    if !header(headers, "Connection").is_some_and(upgrade_token) {
        return bad("the Connection header does not contain \"upgrade\"");
    }
    let expected = derive_accept_key(key.as_bytes());
    if header(headers, "Sec-WebSocket-Accept").map(str::trim) != Some(expected.as_str()) {
        return bad("the Sec-WebSocket-Accept header does not match our key");
    }
    if headers.contains_key("Sec-WebSocket-Extensions") {
        return bad("the server chose a WebSocket extension we did not offer");
    }
    Ok(())
}

/// Dials the origin through a Cloudflare-style tunnel: TCP, TLS, WebSocket upgrade.
#[derive(Clone)]
pub struct TunnelDialer {
    settings: TunnelSettings,
    tls: TunnelTls,
    /// Where the bytes to the edge go; `None`: TCP to the URL's host and port.
    transport: Option<Arc<dyn Dialer>>,
}

/// TLS between the proxy and the edge.
#[derive(Clone)]
pub enum TunnelTls {
    /// Verified TLS, as cloudflared does (every configuration the proxy's flags can express).
    Verified(SslConnector),
    /// None: the WebSocket runs directly on the transport's stream. Only for a transport that
    /// is not a network a third party can see (the simulator's); see the module docs.
    Plaintext,
}

impl fmt::Debug for TunnelDialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelDialer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TunnelDialer {
    /// Checks the settings and loads the trust roots (so a bad CA file fails at startup).
    pub fn new(settings: TunnelSettings) -> Result<Self, TunnelError> {
        settings.validate()?;
        let connector = build_connector(&settings)?;
        Ok(TunnelDialer {
            settings,
            tls: TunnelTls::Verified(connector),
            transport: None,
        })
    }

    /// A dialer whose streams to the edge come from `transport` (instead of TCP to the URL's
    /// host), with `tls` on top; the upgrade, the Access token and the framing are the same.
    pub fn over(
        settings: TunnelSettings,
        transport: Arc<dyn Dialer>,
        tls: TunnelTls,
    ) -> Result<Self, TunnelError> {
        settings.validate()?;
        Ok(TunnelDialer {
            settings,
            tls,
            transport: Some(transport),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &TunnelSettings {
        &self.settings
    }

    /// TCP + TLS + upgrade, without the timeout.
    async fn open(&self) -> Result<BoxedStream, TunnelError> {
        let stream: BoxedStream = match &self.transport {
            None => Box::new(self.connect_tcp().await?),
            Some(transport) => transport
                .dial()
                .await
                .map_err(|source| TunnelError::Connect {
                    address: self.settings.url.authority(),
                    source,
                })?,
        };
        let stream: BoxedStream = match &self.tls {
            TunnelTls::Verified(connector) => Box::new(self.connect_tls(connector, stream).await?),
            TunnelTls::Plaintext => stream,
        };
        let websocket = upgrade(stream, &self.settings).await?;
        Ok(Box::new(websocket))
    }

    async fn connect_tcp(&self) -> Result<TcpStream, TunnelError> {
        let url = &self.settings.url;
        let connect_error = |source| TunnelError::Connect {
            address: url.authority(),
            source,
        };
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        Ok(tcp)
    }

    async fn connect_tls<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        connector: &SslConnector,
        tcp: S,
    ) -> Result<tokio_boring::SslStream<S>, TunnelError> {
        let host = self.settings.url.host.as_str();
        // SNI (skipped for IP literals) and hostname/IP verification are BoringSSL defaults.
        let config = connector
            .configure()
            .map_err(|e| TunnelError::TlsSetup(e.to_string()))?;
        tokio_boring::connect(config, host, tcp)
            .await
            .map_err(|error| self.tls_error(&error))
    }

    fn tls_error<S>(&self, error: &tokio_boring::HandshakeError<S>) -> TunnelError {
        let host = self.settings.url.host.clone();
        match error.ssl().and_then(|ssl| ssl.verify_result().err()) {
            Some(failure) => TunnelError::TlsVerify {
                reason: verify_hint(
                    failure.error_string(),
                    &host,
                    self.settings.ca_file.as_ref(),
                ),
                host,
            },
            None => TunnelError::TlsHandshake {
                host,
                detail: error.to_string(),
            },
        }
    }
}

/// BoringSSL's verdict plus what to do about it.
fn verify_hint(reason: &str, host: &str, ca_file: Option<&PathBuf>) -> String {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("mismatch") {
        return format!("{reason} (the certificate is not valid for \"{host}\")");
    }
    if !(lower.contains("issuer") || lower.contains("self signed") || lower.contains("self-signed"))
    {
        return reason.to_string();
    }
    match ca_file {
        Some(path) => format!(
            "{reason} (the certificate is not signed by the CA in {})",
            path.display()
        ),
        None => format!(
            "{reason} (the certificate is not signed by a trusted CA; for a private CA configure the tunnel CA file)"
        ),
    }
}

fn build_connector(settings: &TunnelSettings) -> Result<SslConnector, TunnelError> {
    let setup = |e: boring::error::ErrorStack| TunnelError::TlsSetup(e.to_string());
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(setup)?;
    match &settings.ca_file {
        Some(path) => builder.set_ca_file(path).map_err(|e| TunnelError::CaFile {
            path: path.clone(),
            detail: e.to_string(),
        })?,
        None => builder.set_default_verify_paths().map_err(setup)?,
    }
    builder.set_verify(SslVerifyMode::PEER);
    Ok(builder.build())
}

impl Dialer for TunnelDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            let timeout = self.settings.handshake_timeout;
            let url = self.settings.url.describe();
            let outcome = match tokio::time::timeout(timeout, self.open()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(TunnelError::Timeout { timeout }),
            };
            match &outcome {
                Ok(_) => tracing::debug!(tunnel = %url, "tunnel connection open"),
                Err(error) => tracing::warn!(tunnel = %url, %error, "tunnel dial failed"),
            }
            outcome.map_err(io::Error::from)
        })
    }

    fn describe(&self) -> String {
        self.settings.url.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> TunnelUrl {
        TunnelUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn parse_error(url: &str) -> String {
        match TunnelUrl::parse(url) {
            Ok(parsed) => panic!("{url} parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn urls_default_to_port_443_and_the_root_path() {
        let url = parse("wss://db.example.com");
        assert_eq!(url.host, "db.example.com");
        assert_eq!(url.port, 443);
        assert_eq!(url.path_and_query, "/");
        assert_eq!(url.host_header(), "db.example.com");
        assert_eq!(url.describe(), "wss://db.example.com:443/");
    }

    #[test]
    fn https_and_http_are_dialled_with_tls_on_443() {
        for url in [
            "https://db.example.com",
            "http://db.example.com",
            "WSS://db.example.com",
        ] {
            assert_eq!(parse(url).port, 443, "{url}");
        }
    }

    #[test]
    fn port_path_and_query_are_kept() {
        let url = parse("wss://localhost:18443/tunnel/pg?x=1&y=2");
        assert_eq!(url.port, 18443);
        assert_eq!(url.path_and_query, "/tunnel/pg?x=1&y=2");
        assert_eq!(url.host_header(), "localhost:18443");
        assert_eq!(url.describe(), "wss://localhost:18443/tunnel/pg");
        assert_eq!(parse("wss://h?q=1").path_and_query, "/?q=1");
    }

    #[test]
    fn ipv6_goes_in_brackets() {
        let url = parse("wss://[::1]:8443/x");
        assert_eq!(url.host, "::1");
        assert_eq!(url.authority(), "[::1]:8443");
        assert_eq!(parse("wss://[2001:db8::1]").host_header(), "[2001:db8::1]");
        assert!(parse_error("wss://::1:8443").contains("brackets"));
        assert!(parse_error("wss://[::1").contains("']'"));
        assert!(parse_error("wss://[nothost]").contains("IPv6"));
    }

    #[test]
    fn bad_urls_say_how_to_write_them() {
        assert!(parse_error("db.example.com").contains("missing scheme"));
        assert!(parse_error("ws://db.example.com").contains("write wss://"));
        assert!(parse_error("tcp://db.example.com").contains("unsupported scheme"));
        assert!(parse_error("wss://").contains("host is missing"));
        assert!(parse_error("wss://h:0").contains("port"));
        assert!(parse_error("wss://h:70000").contains("port"));
        assert!(parse_error("wss://h:").contains("port"));
        assert!(parse_error("wss://user:pw@h").contains("credentials"));
        assert!(parse_error("wss://h/a b").contains("percent-encoded"));
        assert!(parse_error("wss://h/#frag").contains("fragment"));
        assert!(parse_error("wss://h$x").contains("host"));
    }

    fn settings(token: Option<AccessToken>) -> TunnelSettings {
        TunnelSettings {
            token,
            user_agent: "cloudflared/2026.8.2".into(),
            ..TunnelSettings::new(parse("wss://localhost:18443"))
        }
    }

    fn token() -> AccessToken {
        AccessToken {
            client_id: "id.access".into(),
            client_secret: "s3cret".into(),
        }
    }

    #[test]
    fn the_request_matches_cloudflared() {
        let request = upgrade_request(&settings(Some(token())), "KEY==");
        let expected = "GET / HTTP/1.1\r\nHost: localhost:18443\r\nUser-Agent: cloudflared/2026.8.2\r\n\
            Cf-Access-Client-Id: id.access\r\nCf-Access-Client-Secret: s3cret\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: KEY==\r\nSec-WebSocket-Version: 13\r\n\
            Upgrade: websocket\r\n\r\n";
        assert_eq!(String::from_utf8(request).unwrap(), expected);
    }

    #[test]
    fn without_a_token_no_access_headers_are_sent() {
        let names: Vec<String> = upgrade_request_headers(&settings(None), "k")
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let expected = [
            "Host",
            "User-Agent",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Upgrade",
        ];
        assert_eq!(names, expected);
    }

    #[test]
    fn the_secret_is_redacted_and_header_values_are_checked() {
        let debug = format!("{:?}", settings(Some(token())));
        assert!(
            debug.contains("id.access") && !debug.contains("s3cret"),
            "{debug}"
        );
        let mut bad = settings(Some(token()));
        if let Some(token) = bad.token.as_mut() {
            token.client_secret = "a\r\nX-Injected: 1".into();
        }
        let error = TunnelDialer::new(bad).unwrap_err().to_string();
        assert!(
            error.contains("Access client secret") && !error.contains("Injected"),
            "{error}"
        );
    }

    fn response(head: &str) -> Response {
        let parsed = Response::try_parse(head.as_bytes()).unwrap();
        parsed.expect("complete").1
    }

    #[test]
    fn a_101_must_be_a_real_upgrade() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_response(&response(good), key, true).is_ok());
        let wrong_key = good.replace("s3pP", "AAAA");
        let error = check_response(&response(&wrong_key), key, true).unwrap_err();
        assert!(
            error.to_string().contains("Sec-WebSocket-Accept"),
            "{error}"
        );
        let no_upgrade = good.replace("Upgrade: websocket\r\n", "");
        assert!(check_response(&response(&no_upgrade), key, true).is_err());
    }

    #[test]
    fn statuses_map_to_actionable_errors() {
        let check = |head: &str, token| check_response(&response(head), "k", token).unwrap_err();
        let denied = check("HTTP/1.1 403 Forbidden\r\n\r\n", false).to_string();
        assert!(
            denied.contains("requires an Access service token"),
            "{denied}"
        );
        let relative = "HTTP/1.1 302 Found\r\nLocation: /cdn-cgi/access/login/h?x=1\r\n\r\n";
        assert!(matches!(
            check(relative, true),
            TunnelError::NoServiceAuthPolicy { status: 302 }
        ));
        let elsewhere = "HTTP/1.1 302 Found\r\nLocation: https://example.com/\r\n\r\n";
        assert!(matches!(
            check(elsewhere, true),
            TunnelError::UnexpectedStatus { status: 302, .. }
        ));
        let edge_502 = "HTTP/1.1 502 Bad Gateway\r\n\r\n";
        assert!(matches!(
            check(edge_502, true),
            TunnelError::UnexpectedStatus { status: 502, .. }
        ));
        let odd = check("HTTP/1.1 599 Whatever\r\n\r\n", true).to_string();
        assert_eq!(
            odd,
            "unexpected HTTP 599 - from the tunnel (websocket: bad handshake)"
        );
    }

    #[test]
    fn timeouts_print_in_seconds() {
        let error = TunnelError::Timeout {
            timeout: Duration::from_millis(250),
        };
        assert_eq!(
            error.to_string(),
            "the tunnel handshake did not finish within 0.25 s"
        );
        let error = TunnelError::Timeout {
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        assert_eq!(
            error.to_string(),
            "the tunnel handshake did not finish within 10 s"
        );
        let io = io::Error::from(error);
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            TunnelError::from_io(&io),
            Some(TunnelError::Timeout { .. })
        ));
    }
}
