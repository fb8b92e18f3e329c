//! Goal: the tunnel dialer speaks to a WSS edge exactly like `cloudflared access tcp` (the
//! upgrade request byte for byte, see /work/shared/reference/cloudflared-wire.md), explains
//! every refusal in words a Postgres user can act on, never hangs, verifies the edge's
//! certificate, and then carries bytes both ways.
//! Method: a tiny in-test WSS edge (BoringSSL acceptor with certificates from
//! `fixtures::TestPki`, raw HTTP handling, tungstenite in the server role for echoing) that
//! captures the request head and answers as each case needs.

use fixtures::TestPki;
use futures_util::{SinkExt, StreamExt};
use reference_proxy::stream::{BoxedStream, Dialer};
use reference_proxy::tunnel::{AccessToken, TunnelDialer, TunnelError, TunnelSettings, TunnelUrl};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_boring::SslStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const CLIENT_ID: &str = "test-client-id.access";
const CLIENT_SECRET: &str = "test-client-secret-0123456789";
/// Long enough for any healthy local handshake.
const GENEROUS_TIMEOUT: Duration = Duration::from_secs(10);
/// What the timeout cases configure.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// How late a timeout may fire on a loaded machine.
const TIMEOUT_SLACK: Duration = Duration::from_secs(3);
/// How long a silent edge stays silent.
const SILENCE: Duration = Duration::from_secs(60);
const MAX_MESSAGE_LEN: usize = 16 * 1024;
const MEBIBYTE: usize = 1024 * 1024;
/// Sent by the echo edge in the same write as its 101 (an unmasked binary frame "hi").
const GREETING_FRAME: [u8; 4] = [0x82, 0x02, b'h', b'i'];

/// How the test edge answers.
#[derive(Clone)]
enum Edge {
    /// Never starts TLS.
    SilentTcp,
    /// Completes TLS, then never answers the upgrade.
    SilentAfterTls,
    /// Answers the upgrade with this response head and closes.
    Respond(&'static str),
    /// Accepts the upgrade (greeting right behind the 101) and echoes binary messages,
    /// recording the largest one.
    Echo(Arc<AtomicUsize>),
}

struct TestEdge {
    addr: SocketAddr,
    /// Request heads, one per connection.
    requests: mpsc::UnboundedReceiver<String>,
}

async fn start_edge(cert: &Path, key: &Path, edge: Edge) -> TestEdge {
    let acceptor = acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (sender, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, edge, sender) = (acceptor.clone(), edge.clone(), sender.clone());
            tokio::spawn(async move { serve(tcp, &acceptor, edge, sender).await });
        }
    });
    TestEdge { addr, requests }
}

fn acceptor(cert: &Path, key: &Path) -> boring::ssl::SslAcceptor {
    use boring::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    builder.set_certificate_chain_file(cert).expect("cert");
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .expect("key");
    builder.build()
}

async fn serve(
    tcp: TcpStream,
    acceptor: &boring::ssl::SslAcceptor,
    edge: Edge,
    sender: mpsc::UnboundedSender<String>,
) {
    if let Edge::SilentTcp = edge {
        tokio::time::sleep(SILENCE).await;
        return;
    }
    let Ok(mut tls) = tokio_boring::accept(acceptor, tcp).await else {
        return; // the client rejected our certificate
    };
    let Some(head) = read_head(&mut tls).await else {
        return;
    };
    let _ = sender.send(head.clone());
    match edge {
        Edge::SilentTcp => {}
        Edge::SilentAfterTls => tokio::time::sleep(SILENCE).await,
        Edge::Respond(response) => {
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
        Edge::Echo(largest) => echo(tls, &head, &largest).await,
    }
}

/// Reads up to and including the blank line that ends the request head.
async fn read_head(tls: &mut SslStream<TcpStream>) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tls.read_u8().await.ok()?;
        head.push(byte);
    }
    String::from_utf8(head).ok()
}

fn header_value<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.split("\r\n")
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

async fn echo(mut tls: SslStream<TcpStream>, head: &str, largest: &AtomicUsize) {
    let key = header_value(head, "Sec-WebSocket-Key").expect("key");
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nUpgrade: websocket\r\n\r\n",
        derive_accept_key(key.as_bytes())
    )
    .into_bytes();
    response.extend_from_slice(&GREETING_FRAME);
    tls.write_all(&response).await.expect("101");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tls, Role::Server, None).await;
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Binary(data) = message {
            largest.fetch_max(data.len(), Ordering::Relaxed);
            if ws.send(Message::Binary(data)).await.is_err() {
                return;
            }
        }
    }
}

fn settings(addr: SocketAddr, ca: &Path) -> TunnelSettings {
    let url = TunnelUrl::parse(&format!("wss://localhost:{}", addr.port())).expect("url");
    TunnelSettings {
        token: Some(AccessToken {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        }),
        ca_file: Some(ca.to_path_buf()),
        handshake_timeout: GENEROUS_TIMEOUT,
        ..TunnelSettings::new(url)
    }
}

async fn dial(settings: TunnelSettings) -> io::Result<BoxedStream> {
    TunnelDialer::new(settings).expect("dialer").dial().await
}

/// The dial's error, which must carry a `TunnelError`.
async fn dial_error(settings: TunnelSettings) -> (io::ErrorKind, String) {
    match dial(settings).await {
        Ok(_) => panic!("the dial succeeded"),
        Err(error) => {
            let tunnel = TunnelError::from_io(&error).expect("a TunnelError inside");
            (error.kind(), tunnel.to_string())
        }
    }
}

fn pki() -> TestPki {
    TestPki::generate().expect("pki")
}

async fn echo_edge(pki: &TestPki) -> (TestEdge, Arc<AtomicUsize>) {
    let largest = Arc::new(AtomicUsize::new(0));
    let edge = Edge::Echo(largest.clone());
    let edge = start_edge(pki.server_cert(), pki.server_key(), edge).await;
    (edge, largest)
}

#[tokio::test]
async fn the_upgrade_request_is_cloudflared_s_byte_for_byte() {
    let pki = pki();
    let (mut edge, _) = echo_edge(&pki).await;
    let stream = dial(settings(edge.addr, pki.ca_cert()))
        .await
        .expect("dial");
    let head = edge.requests.recv().await.expect("request");
    drop(stream);

    assert!(head.ends_with("\r\n\r\n") && !head.replace("\r\n", "").contains('\n'));
    let key = header_value(&head, "Sec-WebSocket-Key").expect("key");
    let redacted = head
        .replace(key, "<redacted>")
        .replace(CLIENT_SECRET, "<redacted>")
        .replace(
            &format!("localhost:{}", edge.addr.port()),
            "localhost:<port>",
        )
        .replace(env!("CARGO_PKG_VERSION"), "<version>")
        .replace("\r\n", "\n");
    insta::with_settings!({
        snapshot_path => "../../testdata/snapshots/tunnel",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("upgrade_request", redacted);
    });

    let names: Vec<&str> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(": ").map(|(name, _)| name))
        .collect();
    let cloudflared = [
        "Host",
        "User-Agent",
        "Cf-Access-Client-Id",
        "Cf-Access-Client-Secret",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Upgrade",
    ];
    assert_eq!(names, cloudflared);
}

async fn refusal(response: &'static str) -> (io::ErrorKind, String) {
    let pki = pki();
    let edge = start_edge(pki.server_cert(), pki.server_key(), Edge::Respond(response)).await;
    dial_error(settings(edge.addr, pki.ca_cert())).await
}

#[tokio::test]
async fn a_403_blames_the_service_token() {
    let (kind, message) = refusal("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(kind, io::ErrorKind::PermissionDenied);
    assert_eq!(
        message,
        "the tunnel refused the Access service token (HTTP 403): check the token's client id and secret and that the Access application's policy includes it"
    );
}

#[tokio::test]
async fn a_302_to_the_login_page_asks_for_a_service_auth_policy() {
    let (_, message) = refusal(
        "HTTP/1.1 302 Found\r\nLocation: https://team.cloudflareaccess.com/cdn-cgi/access/login/localhost?kid=abc&redirect_url=%2F\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        message,
        "the Access application has no Service Auth policy (HTTP 302 to the login page): add a Service Auth policy that includes this service token"
    );
}

#[tokio::test]
async fn a_502_from_cloudflared_points_at_the_ingress_rule() {
    let (_, message) = refusal(
        "HTTP/1.1 502 Bad Gateway\r\nCf-Cloudflared-Response-Meta: {\"src\":\"cloudflared\"}\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(
        message,
        "the tunnel is up but cloudflared cannot reach the database (HTTP 502): check the tunnel's ingress rule and that the database accepts connections from cloudflared"
    );
}

#[tokio::test]
async fn other_statuses_are_a_bad_handshake() {
    let (_, message) =
        refusal("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(
        message,
        "unexpected HTTP 500 Internal Server Error from the tunnel (websocket: bad handshake)"
    );
}

async fn assert_times_out(edge: Edge) {
    let pki = pki();
    let edge = start_edge(pki.server_cert(), pki.server_key(), edge).await;
    let settings = TunnelSettings {
        handshake_timeout: SHORT_TIMEOUT,
        ..settings(edge.addr, pki.ca_cert())
    };
    let started = Instant::now();
    let (kind, message) = dial_error(settings).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= SHORT_TIMEOUT && elapsed < SHORT_TIMEOUT + TIMEOUT_SLACK,
        "{elapsed:?}"
    );
    assert_eq!(kind, io::ErrorKind::TimedOut);
    assert_eq!(message, "the tunnel handshake did not finish within 0.3 s");
}

#[tokio::test]
async fn a_silent_edge_times_out_during_tls() {
    assert_times_out(Edge::SilentTcp).await;
}

#[tokio::test]
async fn a_silent_edge_times_out_during_the_upgrade() {
    assert_times_out(Edge::SilentAfterTls).await;
}

#[tokio::test]
async fn an_unknown_ca_fails_tls_verification() {
    let pki = pki();
    let (edge, _) = echo_edge(&pki).await;
    let (_, message) = dial_error(settings(edge.addr, pki.other_ca_cert())).await;
    assert!(
        message.starts_with("TLS verification of the tunnel host localhost failed: "),
        "{message}"
    );
    assert!(message.contains("other-ca.crt"), "{message}");
}

#[tokio::test]
async fn a_certificate_for_another_host_fails_tls_verification() {
    let pki = pki();
    let edge = Edge::Echo(Arc::new(AtomicUsize::new(0)));
    let edge = start_edge(pki.wrong_host_cert(), pki.wrong_host_key(), edge).await;
    let (_, message) = dial_error(settings(edge.addr, pki.ca_cert())).await;
    assert!(
        message.starts_with("TLS verification of the tunnel host localhost failed: "),
        "{message}"
    );
    assert!(message.to_lowercase().contains("mismatch"), "{message}");
}

#[tokio::test]
async fn a_refused_connection_names_the_address() {
    let pki = pki();
    let unused = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = unused.local_addr().expect("addr");
    drop(unused);
    let url = TunnelUrl::parse(&format!("wss://127.0.0.1:{}", addr.port())).expect("url");
    let settings = TunnelSettings {
        url,
        ..settings(addr, pki.ca_cert())
    };
    let (kind, message) = dial_error(settings).await;
    assert_eq!(kind, io::ErrorKind::ConnectionRefused);
    let expected = format!("cannot reach the tunnel host 127.0.0.1:{}: ", addr.port());
    assert!(message.starts_with(&expected), "{message}");
}

#[tokio::test]
async fn bytes_flow_both_ways_including_a_mebibyte() {
    let pki = pki();
    let (edge, largest) = echo_edge(&pki).await;
    let stream = dial(settings(edge.addr, pki.ca_cert()))
        .await
        .expect("dial");
    let (mut reader, mut writer) = tokio::io::split(stream);

    let mut greeting = [0u8; 2];
    reader.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"hi");

    writer.write_all(b"SELECT 1").await.expect("write");
    writer.flush().await.expect("flush");
    let mut small = [0u8; 8];
    reader.read_exact(&mut small).await.expect("small echo");
    assert_eq!(&small, b"SELECT 1");

    let payload: Vec<u8> = (0..MEBIBYTE).map(|i| (i % 253) as u8).collect();
    let sent = payload.clone();
    let write = tokio::spawn(async move {
        writer.write_all(&sent).await.expect("write 1 MiB");
        writer.flush().await.expect("flush");
        writer
    });
    let mut echoed = vec![0u8; MEBIBYTE];
    reader.read_exact(&mut echoed).await.expect("read 1 MiB");
    assert!(echoed == payload, "the echoed mebibyte differs");
    drop(write.await.expect("writer"));
    assert!(largest.load(Ordering::Relaxed) <= MAX_MESSAGE_LEN);
}

#[tokio::test]
async fn describe_never_shows_the_secret() {
    let pki = pki();
    let addr: SocketAddr = "127.0.0.1:18443".parse().expect("addr");
    let dialer = TunnelDialer::new(settings(addr, pki.ca_cert())).expect("dialer");
    assert_eq!(dialer.describe(), "wss://localhost:18443/");
    let debug = format!("{dialer:?}");
    assert!(!debug.contains(CLIENT_SECRET), "{debug}");
}
