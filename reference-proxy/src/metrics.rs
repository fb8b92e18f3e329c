//! Prometheus metrics for the proxy, and the tiny HTTP endpoint that serves them.
//!
//! # Why a private registry
//!
//! Every [`Metrics`] owns its own [`prometheus::Registry`] instead of using the
//! process-global default one. Integration tests start several proxies in one
//! process; with the global registry the second proxy would fail to register
//! metrics with the same names, and the proxies would share counters.
//!
//! # Why the labelled series are created up front
//!
//! A `*Vec` metric only shows up in the exposition once one of its label
//! combinations has been touched. [`Metrics::new`] touches every known label
//! value (see the `*_LABEL_VALUES` constants), so dashboards and alerts see
//! zero-valued series from the first scrape instead of "no data".
//!
//! # Why a hand-written HTTP server
//!
//! The endpoint answers two fixed `GET` requests. A full HTTP stack (hyper and
//! friends) would be most of the dependency tree for that. [`serve`] reads only
//! the request head (bounded to [`MAX_REQUEST_HEAD_BYTES`], under
//! [`REQUEST_READ_TIMEOUT`]), parses the request line, writes one response with
//! `Content-Length` and `Connection: close`, and closes. That is all Prometheus
//! and health checkers need, and every resource a client can make us hold is
//! bounded: bytes, time, and concurrently open connections
//! ([`MAX_CONCURRENT_CONNECTIONS`]).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Prefix of every metric name.
const NAMESPACE: &str = "elephant_proxy";

/// Upper bounds (seconds) of the pool acquire wait histogram: 100 µs to 30 s,
/// roughly ×2.5 per step (the usual 1-2.5-5 series).
const ACQUIRE_WAIT_BUCKETS_SECONDS: [f64; 17] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Known values of `elephant_proxy_origin_connections{state}`.
const ORIGIN_STATE_LABEL_VALUES: [&str; 2] = ["busy", "idle"];
/// Known values of `elephant_proxy_origin_connects_total{result}`.
const CONNECT_RESULT_LABEL_VALUES: [&str; 2] = ["ok", "error"];
/// Known values of `elephant_proxy_queries_total{protocol}`.
const PROTOCOL_LABEL_VALUES: [&str; 3] = ["simple", "extended", "function_call"];
/// Known values of `elephant_proxy_errors_total{kind}` (other kinds may be used too).
const ERROR_KIND_LABEL_VALUES: [&str; 8] = [
    "protocol",
    "auth",
    "pool_exhausted",
    "origin_connect",
    "origin_io",
    "statement_timeout",
    "client_io",
    "tls",
];
/// Known values of `elephant_proxy_bytes_total{direction}`.
const DIRECTION_LABEL_VALUES: [&str; 2] = ["client_to_origin", "origin_to_client"];
/// Known values of `elephant_proxy_cancel_requests_total{outcome}`.
const CANCEL_OUTCOME_LABEL_VALUES: [&str; 4] = ["forwarded", "idle", "unknown_key", "failed"];
/// Known values of the `feature` label (`crate::sql::SessionFeature::config_name`).
const SESSION_FEATURE_LABEL_VALUES: [&str; 6] = [
    "listen",
    "temp_tables",
    "advisory_locks",
    "sql_prepare",
    "hold_cursors",
    "session_authorization",
];

/// Largest request head (request line plus headers plus the blank line) we read.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// Time a client has to send its whole request head, from accept.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time we allow for writing the response to a client.
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, how long we keep reading (and discarding) what the client
/// still sends, so that closing does not reset the connection and destroy
/// the response before the client has read it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes discarded while draining.
const DRAIN_MAX_BYTES: usize = 64 * 1024;
/// Connections handled at once; further clients wait in the listen backlog.
pub const MAX_CONCURRENT_CONNECTIONS: usize = 64;
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// End of an HTTP request head.
const HEAD_TERMINATOR: &[u8] = b"\r\n\r\n";
/// End of one line of the request head.
const LINE_TERMINATOR: &[u8] = b"\r\n";

/// `Content-Type` of the metrics exposition.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of every other response.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Methods the two endpoints accept.
const ALLOWED_METHODS: &str = "GET, HEAD";
/// Path of the metrics exposition.
const METRICS_PATH: &str = "/metrics";
/// Path of the liveness check.
const HEALTH_PATH: &str = "/healthz";

/// All metrics of one proxy, registered in a registry of their own.
///
/// Labelled metrics are used as `m.queries_total.with_label_values(&["simple"]).inc()`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `elephant_proxy_clients_connected`: client connections open now.
    pub clients_connected: IntGauge,
    /// `elephant_proxy_client_connections_total`: client connections accepted.
    pub client_connections_total: IntCounter,
    /// `elephant_proxy_client_auth_failures_total`: clients that failed authentication.
    pub client_auth_failures_total: IntCounter,
    /// `elephant_proxy_origin_connections{state="busy"|"idle"}`: pooled origin connections.
    pub origin_connections: IntGaugeVec,
    /// `elephant_proxy_origin_connects_total{result="ok"|"error"}`: origin connect attempts.
    pub origin_connects_total: IntCounterVec,
    /// `elephant_proxy_pool_acquire_wait_seconds`: time waited for an origin connection.
    pub acquire_wait_seconds: Histogram,
    /// `elephant_proxy_pool_acquire_timeouts_total`: acquires that gave up waiting.
    pub acquire_timeouts_total: IntCounter,
    /// `elephant_proxy_transactions_total`: origin connections lent to a client.
    pub transactions_total: IntCounter,
    /// `elephant_proxy_queries_total{protocol="simple"|"extended"|"function_call"}`.
    pub queries_total: IntCounterVec,
    /// `elephant_proxy_errors_total{kind=...}`: errors by kind.
    pub errors_total: IntCounterVec,
    /// `elephant_proxy_bytes_total{direction="client_to_origin"|"origin_to_client"}`.
    pub bytes_total: IntCounterVec,
    /// `elephant_proxy_cancel_requests_total{outcome="forwarded"|"idle"|"unknown_key"|"failed"}`.
    pub cancels_total: IntCounterVec,
    /// `elephant_proxy_origin_prepares_total`: `Parse` sent to an origin connection
    /// for a statement cached by name.
    pub prepared_statements_prepared_total: IntCounter,
    /// `elephant_proxy_pinned_connections`: origin connections held by pinned clients now
    /// (transaction mode; limited by `--max-pinned`).
    pub pinned_connections: IntGauge,
    /// `elephant_proxy_session_feature_pins_total{feature}`: clients pinned, by the feature
    /// that pinned them.
    pub session_feature_pins_total: IntCounterVec,
    /// `elephant_proxy_session_feature_refusals_total{feature}`: statements refused, by
    /// feature (policy `refuse`, or the pinned limit reached).
    pub session_feature_refusals_total: IntCounterVec,
    /// `elephant_proxy_settings_snapshots_total`: times the proxy read a client's settings
    /// back from the origin after a transaction that may have changed them.
    pub settings_snapshots_total: IntCounter,
}

impl Metrics {
    /// Creates every metric and registers it in a new private registry.
    pub fn new() -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            clients_connected: register(
                r,
                IntGauge::with_opts(opts("clients_connected", "Client connections open now"))?,
            )?,
            client_connections_total: counter(
                r,
                "client_connections_total",
                "Client connections accepted",
            )?,
            client_auth_failures_total: counter(
                r,
                "client_auth_failures_total",
                "Client connections that failed authentication",
            )?,
            origin_connections: gauge_vec(
                r,
                "origin_connections",
                "Origin connections in the pool, by state",
                "state",
                &ORIGIN_STATE_LABEL_VALUES,
            )?,
            origin_connects_total: counter_vec(
                r,
                "origin_connects_total",
                "Attempts to open an origin connection, by result",
                "result",
                &CONNECT_RESULT_LABEL_VALUES,
            )?,
            acquire_wait_seconds: acquire_wait_histogram(r)?,
            acquire_timeouts_total: counter(
                r,
                "pool_acquire_timeouts_total",
                "Pool acquires that timed out waiting for an origin connection",
            )?,
            transactions_total: counter(
                r,
                "transactions_total",
                "Origin connections lent to a client (one per transaction)",
            )?,
            queries_total: counter_vec(
                r,
                "queries_total",
                "Client queries, by protocol",
                "protocol",
                &PROTOCOL_LABEL_VALUES,
            )?,
            errors_total: counter_vec(
                r,
                "errors_total",
                "Errors, by kind",
                "kind",
                &ERROR_KIND_LABEL_VALUES,
            )?,
            bytes_total: counter_vec(
                r,
                "bytes_total",
                "Bytes relayed, by direction",
                "direction",
                &DIRECTION_LABEL_VALUES,
            )?,
            cancels_total: counter_vec(
                r,
                "cancel_requests_total",
                "Cancel requests received, by outcome",
                "outcome",
                &CANCEL_OUTCOME_LABEL_VALUES,
            )?,
            prepared_statements_prepared_total: counter(
                r,
                "origin_prepares_total",
                "Parse messages sent to an origin connection for a statement cached by name",
            )?,
            pinned_connections: register(
                r,
                IntGauge::with_opts(opts(
                    "pinned_connections",
                    "Origin connections held by pinned clients (transaction mode)",
                ))?,
            )?,
            session_feature_pins_total: counter_vec(
                r,
                "session_feature_pins_total",
                "Clients pinned to their origin connection, by session feature",
                "feature",
                &SESSION_FEATURE_LABEL_VALUES,
            )?,
            session_feature_refusals_total: counter_vec(
                r,
                "session_feature_refusals_total",
                "Statements refused for using a session feature, by feature",
                "feature",
                &SESSION_FEATURE_LABEL_VALUES,
            )?,
            settings_snapshots_total: counter(
                r,
                "settings_snapshots_total",
                "Settings read back from the origin after a transaction that may have changed them",
            )?,
            registry,
        };
        Ok(Arc::new(metrics))
    }

    /// All metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(%error, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Options for a metric named `elephant_proxy_<name>`.
fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

/// Registers `collector` in `registry` and hands it back.
fn register<C>(registry: &Registry, collector: C) -> Result<C, prometheus::Error>
where
    C: Collector + Clone + 'static,
{
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    register(registry, IntCounter::with_opts(opts(name, help))?)
}

/// A counter with one label, every value in `known` created at zero.
fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    known: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = register(registry, IntCounterVec::new(opts(name, help), &[label])?)?;
    for value in known {
        vec.get_metric_with_label_values(&[value])?;
    }
    Ok(vec)
}

/// A gauge with one label, every value in `known` created at zero.
fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    known: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let vec = register(registry, IntGaugeVec::new(opts(name, help), &[label])?)?;
    for value in known {
        vec.get_metric_with_label_values(&[value])?;
    }
    Ok(vec)
}

fn acquire_wait_histogram(registry: &Registry) -> Result<Histogram, prometheus::Error> {
    let opts = HistogramOpts::new(
        "pool_acquire_wait_seconds",
        "Time spent waiting for an origin connection from the pool",
    )
    .namespace(NAMESPACE)
    .buckets(ACQUIRE_WAIT_BUCKETS_SECONDS.to_vec());
    register(registry, Histogram::with_opts(opts)?)
}

/// Serves `GET /metrics` and `GET /healthz` on `listener` until `shutdown` completes.
///
/// `HEAD` is accepted wherever `GET` is. Any other path answers 404, any
/// other method on a known path 405, a malformed request 400, and a request
/// head over [`MAX_REQUEST_HEAD_BYTES`] 431. A client that has not sent its
/// whole head within [`REQUEST_READ_TIMEOUT`] is disconnected without an
/// answer. Each connection runs in its own task and is closed after one
/// response. Accept errors are logged and retried; they do not end the server.
/// Connections still being answered when `shutdown` completes are left to
/// finish on their own (each is bounded by the timeouts above).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with_read_timeout(listener, metrics, shutdown, REQUEST_READ_TIMEOUT).await
}

/// [`serve`] with a chosen request read timeout (tests use a short one, as
/// tokio's `test-util` clock control is not enabled in this crate).
async fn serve_with_read_timeout(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
    read_timeout: Duration,
) -> io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_CONNECTIONS));
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = accept_with_slot(&listener, &slots) => match accepted {
                Ok((stream, slot)) => {
                    let metrics = Arc::clone(&metrics);
                    tokio::spawn(async move {
                        handle_connection(stream, &metrics, read_timeout).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// Waits for a free connection slot, then for a client. Cancel-safe.
async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> io::Result<(TcpStream, OwnedSemaphorePermit)> {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|_closed| io::Error::other("connection semaphore closed"))?;
    let (stream, _peer) = listener.accept().await?;
    Ok((stream, slot))
}

/// Reads one request, answers it, closes. Errors only end this connection.
async fn handle_connection(mut stream: TcpStream, metrics: &Metrics, read_timeout: Duration) {
    let head = match tokio::time::timeout(read_timeout, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => {
            tracing::debug!(%error, "metrics endpoint: reading request failed");
            return;
        }
        Err(_elapsed) => {
            tracing::debug!("metrics endpoint: request head timed out");
            return;
        }
    };
    let response = match head {
        Head::Complete(bytes) => match parse_request(&bytes) {
            Ok(request) => route(&request, metrics),
            Err(error) => {
                tracing::debug!(%error, "metrics endpoint: malformed request");
                Response::text(Status::BadRequest, "bad request\n")
            }
        },
        Head::TooLarge => Response::text(Status::HeadTooLarge, "request head too large\n"),
        Head::Closed {
            received_any: false,
        } => return,
        Head::Closed { received_any: true } => {
            Response::text(Status::BadRequest, "incomplete request\n")
        }
    };
    respond(&mut stream, &response).await;
}

/// Writes `response`, closes our side, and drains what the client still sends.
async fn respond(stream: &mut TcpStream, response: &Response) {
    let bytes = response.to_bytes();
    let written = tokio::time::timeout(RESPONSE_WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => drain(stream).await,
        Ok(Err(error)) => tracing::debug!(%error, "metrics endpoint: writing response failed"),
        Err(_elapsed) => tracing::debug!("metrics endpoint: writing response timed out"),
    }
}

/// Discards client input until end of stream, within the drain limits, so
/// that closing the socket with unread input does not send a reset.
async fn drain(stream: &mut TcpStream) {
    let mut sink = tokio::io::sink();
    let mut limited = stream.take(DRAIN_MAX_BYTES as u64);
    // Outcome irrelevant: we close either way.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, tokio::io::copy(&mut limited, &mut sink)).await;
}

/// Outcome of reading a request head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head, without its terminating blank line.
    Complete(Vec<u8>),
    /// [`MAX_REQUEST_HEAD_BYTES`] read without finding the end of the head.
    TooLarge,
    /// The client closed before finishing the head.
    Closed { received_any: bool },
}

/// Reads until the end of the request head, at most [`MAX_REQUEST_HEAD_BYTES`].
async fn read_head<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST_HEAD_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(Head::Closed {
                received_any: filled > 0,
            });
        }
        let search_from = filled.saturating_sub(HEAD_TERMINATOR.len() - 1);
        filled += n;
        if let Some(end) = find(&buf[search_from..filled], HEAD_TERMINATOR) {
            buf.truncate(search_from + end);
            return Ok(Head::Complete(buf));
        }
    }
    Ok(Head::TooLarge)
}

/// Position of the first occurrence of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The parts of a request the endpoint routes on.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target without its query string.
    path: &'a str,
}

/// Why a request head was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ParseError {
    #[error("request line is not UTF-8")]
    NotUtf8,
    #[error("request line is not `METHOD TARGET VERSION`")]
    RequestLineShape,
    #[error("invalid method")]
    Method,
    #[error("target is not an absolute path")]
    Target,
    #[error("unsupported HTTP version")]
    Version,
    #[error("malformed header line")]
    Header,
}

/// Parses a request head (without the terminating blank line).
fn parse_request(head: &[u8]) -> Result<Request<'_>, ParseError> {
    let (line, headers) = match find(head, LINE_TERMINATOR) {
        Some(end) => (&head[..end], &head[end + LINE_TERMINATOR.len()..]),
        None => (head, &head[head.len()..]),
    };
    let line = std::str::from_utf8(line).map_err(|_| ParseError::NotUtf8)?;
    let request = parse_request_line(line)?;
    check_headers(headers)?;
    Ok(request)
}

fn parse_request_line(line: &str) -> Result<Request<'_>, ParseError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::RequestLineShape);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(ParseError::Method);
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::Target);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ParseError::Version);
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    Ok(Request { method, path })
}

/// Every header line must be `name: value` with a token name (no obsolete
/// line folding). Values are not interpreted.
fn check_headers(headers: &[u8]) -> Result<(), ParseError> {
    let mut rest = headers;
    while !rest.is_empty() {
        let (line, next) = match find(rest, LINE_TERMINATOR) {
            Some(end) => (&rest[..end], &rest[end + LINE_TERMINATOR.len()..]),
            None => (rest, &rest[rest.len()..]),
        };
        check_header_line(line)?;
        rest = next;
    }
    Ok(())
}

fn check_header_line(line: &[u8]) -> Result<(), ParseError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::Header)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(ParseError::Header);
    }
    Ok(())
}

/// `tchar` of RFC 9110.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Picks the response for a parsed request.
fn route(request: &Request<'_>, metrics: &Metrics) -> Response {
    let body = match request.path {
        METRICS_PATH => Body::Metrics,
        HEALTH_PATH => Body::Health,
        _ => return Response::text(Status::NotFound, "not found\n"),
    };
    let head_only = match request.method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response = Response::text(Status::MethodNotAllowed, "method not allowed\n");
            response.allow = Some(ALLOWED_METHODS);
            return response;
        }
    };
    let mut response = match body {
        Body::Metrics => Response {
            content_type: METRICS_CONTENT_TYPE,
            ..Response::text(Status::Ok, metrics.render())
        },
        Body::Health => Response::text(Status::Ok, "ok\n"),
    };
    response.head_only = head_only;
    response
}

/// What a known path serves.
enum Body {
    Metrics,
    Health,
}

/// Status codes the endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
        }
    }
}

/// One response, always closing the connection.
struct Response {
    status: Status,
    content_type: &'static str,
    body: String,
    /// Value of an `Allow` header, for 405.
    allow: Option<&'static str>,
    /// Answering `HEAD`: send the headers (with the body's length) only.
    head_only: bool,
}

impl Response {
    fn text(status: Status, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT_CONTENT_TYPE,
            body: body.into(),
            allow: None,
            head_only: false,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status.code(),
            self.status.reason(),
            self.content_type,
            self.body.len(),
        );
        if let Some(allow) = self.allow {
            head.push_str("Allow: ");
            head.push_str(allow);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    /// Safety net for tests running in real time.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    const ALL_NAMES: [&str; 13] = [
        "elephant_proxy_clients_connected",
        "elephant_proxy_client_connections_total",
        "elephant_proxy_client_auth_failures_total",
        "elephant_proxy_origin_connections",
        "elephant_proxy_origin_connects_total",
        "elephant_proxy_pool_acquire_wait_seconds",
        "elephant_proxy_pool_acquire_timeouts_total",
        "elephant_proxy_transactions_total",
        "elephant_proxy_queries_total",
        "elephant_proxy_errors_total",
        "elephant_proxy_bytes_total",
        "elephant_proxy_cancel_requests_total",
        "elephant_proxy_origin_prepares_total",
    ];

    struct Server {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start() -> Server {
        start_with_read_timeout(REQUEST_READ_TIMEOUT).await
    }

    async fn start_with_read_timeout(read_timeout: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_with_read_timeout(
            listener,
            Arc::clone(&metrics),
            shutdown,
            read_timeout,
        ));
        Server {
            addr,
            metrics,
            stop,
            task,
        }
    }

    /// Sends `raw`, returns everything the server sends until it closes.
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let io = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(raw).await.unwrap();
            let mut out = Vec::new();
            stream.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        };
        tokio::time::timeout(TEST_TIMEOUT, io).await.unwrap()
    }

    fn status_line(response: &str) -> &str {
        response.split("\r\n").next().unwrap()
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").unwrap().1
    }

    #[test]
    fn render_has_help_and_type_for_every_metric() {
        let m = Metrics::new().unwrap();
        m.clients_connected.set(3);
        m.client_connections_total.inc();
        m.origin_connections.with_label_values(&["busy"]).set(2);
        m.acquire_wait_seconds.observe(0.002);
        m.queries_total.with_label_values(&["extended"]).inc_by(5);
        m.errors_total.with_label_values(&["some_new_kind"]).inc();
        m.bytes_total
            .with_label_values(&["client_to_origin"])
            .inc_by(100);
        let text = m.render();
        for name in ALL_NAMES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        assert!(text.contains("# TYPE elephant_proxy_clients_connected gauge"));
        assert!(text.contains("# TYPE elephant_proxy_pool_acquire_wait_seconds histogram"));
        assert!(text.contains("elephant_proxy_clients_connected 3"));
        assert!(text.contains("elephant_proxy_origin_connections{state=\"busy\"} 2"));
        assert!(text.contains("elephant_proxy_origin_connections{state=\"idle\"} 0"));
        assert!(text.contains("elephant_proxy_queries_total{protocol=\"extended\"} 5"));
        assert!(text.contains("elephant_proxy_errors_total{kind=\"some_new_kind\"} 1"));
        assert!(text.contains("elephant_proxy_cancel_requests_total{outcome=\"unknown_key\"} 0"));
        assert!(text.contains("elephant_proxy_pool_acquire_wait_seconds_bucket{le=\"0.0001\"} 0"));
        assert!(text.contains("elephant_proxy_pool_acquire_wait_seconds_bucket{le=\"30\"} 1"));
    }

    #[test]
    fn two_registries_do_not_conflict() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.transactions_total.inc_by(7);
        assert!(a.render().contains("elephant_proxy_transactions_total 7"));
        assert!(b.render().contains("elephant_proxy_transactions_total 0"));
    }

    #[test]
    fn parses_request_lines() {
        let ok = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*").unwrap();
        assert_eq!(
            ok,
            Request {
                method: "GET",
                path: "/metrics"
            }
        );
        assert!(parse_request(b"GET /healthz HTTP/1.0").is_ok());
        let bad: [(&[u8], ParseError); 7] = [
            (b"hello", ParseError::RequestLineShape),
            (b"GET  /metrics HTTP/1.1", ParseError::RequestLineShape),
            (b"G(T /metrics HTTP/1.1", ParseError::Method),
            (b"GET metrics HTTP/1.1", ParseError::Target),
            (b"GET /metrics HTTP/2.0", ParseError::Version),
            (b"GET /\xff HTTP/1.1", ParseError::NotUtf8),
            (b"GET / HTTP/1.1\r\n folded", ParseError::Header),
        ];
        for (head, expected) in bad {
            assert_eq!(parse_request(head), Err(expected), "{head:?}");
        }
    }

    #[tokio::test]
    async fn read_head_finds_terminator_split_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_head(&mut server).await.unwrap() });
        client.write_all(b"GET / HTTP/1.1\r\n\r").await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"\nextra").await.unwrap();
        assert_eq!(
            reader.await.unwrap(),
            Head::Complete(b"GET / HTTP/1.1".to_vec())
        );
    }

    #[tokio::test]
    async fn serves_metrics() {
        let server = start().await;
        server.metrics.client_connections_total.inc_by(42);
        let response = exchange(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert!(response.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(response.contains("Connection: close\r\n"));
        let body = body(&response);
        assert!(response.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains("elephant_proxy_client_connections_total 42"));
    }

    #[tokio::test]
    async fn head_request_gets_headers_only() {
        let server = start().await;
        let response = exchange(server.addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert!(response.contains("Content-Length: 3\r\n"));
        assert_eq!(body(&response), "");
    }

    #[tokio::test]
    async fn serves_healthz() {
        let server = start().await;
        let response = exchange(server.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        assert_eq!(body(&response), "ok\n");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let server = start().await;
        let response = exchange(server.addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&response), "HTTP/1.1 404 Not Found");
    }

    #[tokio::test]
    async fn other_method_is_405() {
        let server = start().await;
        let request = b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let response = exchange(server.addr, request).await;
        assert_eq!(status_line(&response), "HTTP/1.1 405 Method Not Allowed");
        assert!(response.contains("Allow: GET, HEAD\r\n"));
    }

    #[tokio::test]
    async fn garbage_is_400() {
        let server = start().await;
        let response = exchange(server.addr, b"\x16\x03\x01 garbage\r\n\r\n").await;
        assert_eq!(status_line(&response), "HTTP/1.1 400 Bad Request");
    }

    #[tokio::test]
    async fn half_request_then_close_is_400() {
        let server = start().await;
        let io = async {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            stream.shutdown().await.unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).await.unwrap();
            out
        };
        let response = tokio::time::timeout(TEST_TIMEOUT, io).await.unwrap();
        assert_eq!(status_line(&response), "HTTP/1.1 400 Bad Request");
    }

    #[tokio::test]
    async fn oversized_head_is_431() {
        let server = start().await;
        let mut request = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        request.resize(MAX_REQUEST_HEAD_BYTES + 1024, b'a');
        let response = exchange(server.addr, &request).await;
        assert_eq!(
            status_line(&response),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }

    /// Real clock with a short timeout: tokio's `test-util` (needed for a
    /// paused clock) is not enabled in this crate.
    #[tokio::test]
    async fn silent_client_is_closed_after_read_timeout() {
        const SHORT: Duration = Duration::from_millis(200);
        let server = start_with_read_timeout(SHORT).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(TEST_TIMEOUT, stream.read_to_end(&mut out));
        let n = read.await.unwrap().unwrap();
        assert_eq!(n, 0);
        assert!(started.elapsed() >= SHORT);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let server = start().await;
        let addr = server.addr;
        server.stop.send(()).unwrap();
        let result = tokio::time::timeout(TEST_TIMEOUT, server.task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok());
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
