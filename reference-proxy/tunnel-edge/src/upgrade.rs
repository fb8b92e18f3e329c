//! The HTTP/1.1 part of a tunnel: reading the upgrade request, writing the 101 or a refusal.
//!
//! Why by hand and not with tungstenite's server handshake: cloudflared dials the origin
//! *before* it answers 101 and answers 502 when that fails, and tungstenite's handshake callback
//! is synchronous, so it cannot wait for a dial. Its handshake also drops a non-GET request (the
//! client's `HEAD` login probe) without any response. The request is therefore parsed with
//! `httparse`, and the few responses the edge ever sends are written here, byte for byte as the
//! real edge sends them (101 with exactly `Connection`, `Sec-WebSocket-Accept`, `Upgrade`).

use crate::error::HandshakeError;
use std::fmt::Write as _;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};

/// Longest accepted request head (request line plus headers).
pub(crate) const MAX_REQUEST_HEAD_LEN: usize = 16 * 1024;
/// Most headers accepted in one request.
const MAX_REQUEST_HEADERS: usize = 64;
/// Bytes read from the client per attempt while looking for the end of the head.
const READ_CHUNK_LEN: usize = 4096;
/// Length of a valid `Sec-WebSocket-Key` (16 random bytes in base64).
const WEBSOCKET_KEY_LEN: usize = 24;
/// The only WebSocket version there is.
const WEBSOCKET_VERSION: &str = "13";
/// Path prefix of the Access login redirect; cloudflared's client recognises a 302 by it.
pub const ACCESS_LOGIN_PATH: &str = "/cdn-cgi/access/login";
/// `kid` (Access application audience) put in the login redirect.
const LOGIN_KID: &str = "tunnel-edge";
/// Host named in the login redirect when the request has no usable `Host`.
const FALLBACK_HOST: &str = "tunnel-edge";
/// Header by which a client recognises a 502 as "the tunnel could not reach the origin".
pub const CLOUDFLARED_META_HEADER: &str = "Cf-Cloudflared-Response-Meta";
/// Its value.
pub const CLOUDFLARED_META_VALUE: &str = r#"{"src":"cloudflared"}"#;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: String,
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: HeaderMap,
}

/// Reads up to the end of the request head; returns it and any bytes read past it (the
/// beginning of the client's WebSocket frames).
pub(crate) async fn read_request_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(RequestHead, Vec<u8>), HandshakeError> {
    let mut buffer = Vec::with_capacity(READ_CHUNK_LEN);
    let mut chunk = [0u8; READ_CHUNK_LEN];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(HandshakeError::ClosedEarly);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some((len, head)) = try_parse(&buffer)? {
            let leftover = buffer.split_off(len);
            return Ok((head, leftover));
        }
        if buffer.len() >= MAX_REQUEST_HEAD_LEN {
            return Err(HandshakeError::RequestTooLarge {
                limit: MAX_REQUEST_HEAD_LEN,
            });
        }
    }
}

/// Parses a complete head at the start of `buffer` (`None`: not complete yet).
fn try_parse(buffer: &[u8]) -> Result<Option<(usize, RequestHead)>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(HandshakeError::Malformed(error.to_string())),
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| HandshakeError::Malformed("invalid header name".into()))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| HandshakeError::Malformed("invalid header value".into()))?;
        headers.append(name, value);
    }
    let head = RequestHead {
        method: request.method.unwrap_or_default().to_owned(),
        path: request.path.unwrap_or_default().to_owned(),
        minor_version: request.version.unwrap_or_default(),
        headers,
    };
    Ok(Some((len, head)))
}

impl RequestHead {
    /// A `HEAD` request (whose response carries no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The `Sec-WebSocket-Key` of a valid WebSocket upgrade request, or why it is not one.
    pub fn websocket_key(&self) -> Result<&str, &'static str> {
        if self.method != "GET" {
            return Err("not a GET request");
        }
        if self.minor_version < 1 {
            return Err("HTTP/1.0 cannot upgrade");
        }
        let has_token = |name: HeaderName, token: &str| {
            self.headers.get_all(name).iter().any(|value| {
                value.to_str().is_ok_and(|text| {
                    text.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
            })
        };
        if !has_token(CONNECTION, "upgrade") {
            return Err("no Connection: Upgrade");
        }
        if !has_token(UPGRADE, "websocket") {
            return Err("no Upgrade: websocket");
        }
        if self
            .headers
            .get(SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(WEBSOCKET_VERSION.as_bytes())
        {
            return Err("Sec-WebSocket-Version is not 13");
        }
        self.headers
            .get(SEC_WEBSOCKET_KEY)
            .and_then(|value| value.to_str().ok())
            .filter(|key| is_valid_key(key))
            .ok_or("missing or invalid Sec-WebSocket-Key")
    }

    /// The `Host` header's host name without the port, reduced to host-name characters.
    fn host_name(&self) -> String {
        let raw = self
            .headers
            .get(HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let without_port = match raw.rfind(':') {
            Some(colon) if !raw[colon..].contains(']') => &raw[..colon],
            _ => raw,
        };
        let clean: String = without_port
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
            .collect();
        if clean.is_empty() {
            FALLBACK_HOST.to_owned()
        } else {
            clean
        }
    }
}

/// 22 base64 characters followed by `==` (16 bytes).
fn is_valid_key(key: &str) -> bool {
    key.len() == WEBSOCKET_KEY_LEN
        && key.ends_with("==")
        && key.as_bytes()[..WEBSOCKET_KEY_LEN - 2]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The responses the edge refuses an upgrade with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// Not a WebSocket upgrade (or not HTTP at all).
    BadRequest,
    /// Access: missing or unknown service token.
    Forbidden,
    /// Access: the application has no Service Auth policy.
    LoginRedirect,
    /// The origin could not be dialled.
    BadGateway,
}

impl RefusalKind {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::BadRequest => 400,
            RefusalKind::Forbidden => 403,
            RefusalKind::LoginRedirect => 302,
            RefusalKind::BadGateway => 502,
        }
    }

    fn status_line(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "HTTP/1.1 400 Bad Request",
            RefusalKind::Forbidden => "HTTP/1.1 403 Forbidden",
            RefusalKind::LoginRedirect => "HTTP/1.1 302 Found",
            RefusalKind::BadGateway => "HTTP/1.1 502 Bad Gateway",
        }
    }

    fn body(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "Bad Request: expected a WebSocket upgrade\n",
            RefusalKind::Forbidden => {
                "Forbidden: a valid Cloudflare Access service token is required\n"
            }
            RefusalKind::LoginRedirect => "",
            RefusalKind::BadGateway => "Bad Gateway: the tunnel could not reach the origin\n",
        }
    }
}

/// The full response for a refusal; `head` (when the request was parsed) supplies the login
/// redirect's host and path and says whether a body may be sent.
pub(crate) fn refusal_response(kind: RefusalKind, head: Option<&RequestHead>) -> Vec<u8> {
    let body = kind.body();
    let mut text = String::with_capacity(256);
    text.push_str(kind.status_line());
    text.push_str("\r\n");
    if kind == RefusalKind::LoginRedirect {
        let _ = write!(text, "Location: {}\r\n", login_location(head));
    }
    if kind == RefusalKind::BadGateway {
        let _ = write!(
            text,
            "{CLOUDFLARED_META_HEADER}: {CLOUDFLARED_META_VALUE}\r\n"
        );
    }
    if !body.is_empty() {
        text.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    let _ = write!(
        text,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head.is_some_and(RequestHead::is_head) {
        text.push_str(body);
    }
    text.into_bytes()
}

/// `/cdn-cgi/access/login/<host>?kid=…&redirect_url=<path>`.
fn login_location(head: Option<&RequestHead>) -> String {
    let host = head.map_or_else(|| FALLBACK_HOST.to_owned(), RequestHead::host_name);
    let path = head.map_or("/", |h| h.path.as_str());
    format!(
        "{ACCESS_LOGIN_PATH}/{host}?kid={LOGIN_KID}&redirect_url={}",
        percent_encode(path)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The 101 exactly as cloudflared sends it (no subprotocol, no extensions).
pub(crate) fn switching_protocols(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\
         Upgrade: websocket\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE_REQUEST: &str = "GET / HTTP/1.1\r\nHost: localhost:18443\r\n\
        User-Agent: cloudflared/2026.8.2\r\nCf-Access-Client-Id: id\r\n\
        Cf-Access-Client-Secret: secret\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Upgrade: websocket\r\n\r\n";

    fn parse(text: &str) -> RequestHead {
        try_parse(text.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn the_cloudflared_request_is_an_upgrade() {
        let head = parse(UPGRADE_REQUEST);
        assert_eq!(head.websocket_key(), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(head.host_name(), "localhost");
        assert_eq!(head.headers.get("cf-access-client-id").unwrap(), "id");
    }

    #[test]
    fn a_partial_head_needs_more_bytes() {
        assert!(
            try_parse(&UPGRADE_REQUEST.as_bytes()[..40])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_101_matches_rfc_6455() {
        let response = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    #[test]
    fn plain_gets_and_heads_are_not_upgrades() {
        let head = parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.websocket_key().is_err());
        let probe = parse("HEAD / HTTP/1.1\r\nHost: x\r\nCf-Access-Metadata-Request: true\r\n\r\n");
        assert!(probe.is_head());
        assert!(probe.websocket_key().is_err());
    }

    #[test]
    fn the_login_redirect_names_the_host_and_has_no_body_for_head() {
        let probe = parse("HEAD /db?x=1 HTTP/1.1\r\nHost: db.example.com:443\r\n\r\n");
        let response =
            String::from_utf8(refusal_response(RefusalKind::LoginRedirect, Some(&probe))).unwrap();
        assert!(response.starts_with("HTTP/1.1 302 Found\r\n"), "{response}");
        assert!(
            response.contains(
                "Location: /cdn-cgi/access/login/db.example.com?kid=tunnel-edge&redirect_url=%2Fdb%3Fx%3D1\r\n"
            ),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\n"), "{response}");
    }

    #[test]
    fn the_502_carries_the_cloudflared_meta_header() {
        let response = String::from_utf8(refusal_response(RefusalKind::BadGateway, None)).unwrap();
        assert!(response.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(response.contains("Cf-Cloudflared-Response-Meta: {\"src\":\"cloudflared\"}\r\n"));
    }
}
