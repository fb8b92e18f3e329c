//! Shared harness: an in-process edge on a real loopback socket with TLS from a throwaway PKI,
//! origins the test controls, a tokio-tungstenite client that speaks like `cloudflared access
//! tcp`, a raw HTTP client for requests tungstenite cannot make, and a log capture.
#![allow(dead_code)]

use boring::ssl::{SslConnector, SslMethod};
use fixtures::TestPki;
use reference_proxy::stream::{BoxedStream, Dialer, TcpDialer};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_boring::SslStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tunnel_edge::{AccessControl, Edge, EdgeConfig, EdgeTls, ServiceToken, TokenSet};

/// The token most tests use.
pub const TOKEN_ID: &str = "a1b2c3.access";
/// Its secret (tests assert it never shows up in logs).
pub const TOKEN_SECRET: &str = "s3cr3t-5f0e8a9b7c6d-never-log-me";
/// How long a test waits for something that should happen promptly.
pub const PROMPTLY: Duration = Duration::from_secs(5);
/// What the client sends as User-Agent (the real cloudflared's).
pub const USER_AGENT: &str = "cloudflared/2026.8.2";

/// A client-side tunnel.
pub type Client = WebSocketStream<SslStream<TcpStream>>;

/// An edge serving on 127.0.0.1 with TLS.
pub struct TestEdge {
    pub address: SocketAddr,
    pub edge: Arc<Edge>,
    pub pki: TestPki,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestEdge {
    /// An edge admitting [`TOKEN_ID`]/[`TOKEN_SECRET`] in front of `origin`.
    pub async fn start(config: EdgeConfig, origin: Arc<dyn Dialer>) -> TestEdge {
        let set = TokenSet::service_auth(vec![ServiceToken::new(TOKEN_ID, TOKEN_SECRET)]).unwrap();
        Self::start_with(config, Arc::new(AccessControl::new(set)), origin).await
    }

    /// An edge with the given Access check.
    pub async fn start_with(
        config: EdgeConfig,
        access: Arc<AccessControl>,
        origin: Arc<dyn Dialer>,
    ) -> TestEdge {
        let pki = TestPki::generate().expect("test PKI");
        let tls = EdgeTls::from_pem_files(pki.server_cert(), pki.server_key()).expect("TLS");
        let edge = Arc::new(Edge::new(config, access, origin, Some(tls)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(Arc::clone(&edge).serve(listener, async {
            let _ = stop.await;
        }));
        TestEdge {
            address,
            edge,
            pki,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Opens a tunnel presenting `token` (id, secret).
    pub async fn connect(
        &self,
        token: Option<(&str, &str)>,
    ) -> Result<(Client, Response), tokio_tungstenite::tungstenite::Error> {
        connect_tls(self.address, self.pki.ca_cert(), token).await
    }

    /// Opens a tunnel with the standard token, panicking on failure.
    pub async fn tunnel(&self) -> Client {
        self.connect(Some((TOKEN_ID, TOKEN_SECRET)))
            .await
            .expect("tunnel upgrade")
            .0
    }

    /// The status a refused upgrade got (panics if it was admitted).
    pub async fn refused_status(&self, token: Option<(&str, &str)>) -> u16 {
        match self.connect(token).await {
            Ok(_) => panic!("the upgrade was admitted"),
            Err(error) => http_status(&error).unwrap_or_else(|| panic!("not HTTP: {error}")),
        }
    }

    /// Sends `request` over TLS and returns everything the edge writes until it closes.
    pub async fn raw(&self, request: &[u8]) -> String {
        let mut stream = tls_stream(self.address, self.pki.ca_cert()).await;
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let read = tokio::time::timeout(PROMPTLY, stream.read_to_end(&mut response)).await;
        read.expect("the edge closes after a refusal").ok();
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Stops serving and waits for the serve task.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Polls the edge's stats until `done` holds.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&tunnel_edge::EdgeStats) -> bool) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let stats = self.edge.stats();
            if done(&stats) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The status code of a non-101 handshake answer.
pub fn http_status(error: &tokio_tungstenite::tungstenite::Error) -> Option<u16> {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// TLS to the edge, verifying its certificate against the test CA (SNI `localhost`).
pub async fn tls_stream(address: SocketAddr, ca: &Path) -> SslStream<TcpStream> {
    let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
    builder.set_ca_file(ca).unwrap();
    let config = builder.build().configure().unwrap();
    let tcp = TcpStream::connect(address).await.unwrap();
    tokio_boring::connect(config, "localhost", tcp)
        .await
        .expect("TLS to the edge")
}

/// The upgrade request as cloudflared sends it.
pub async fn connect_tls(
    address: SocketAddr,
    ca: &Path,
    token: Option<(&str, &str)>,
) -> Result<(Client, Response), tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("wss://localhost:{}/", address.port())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("User-Agent", HeaderValue::from_static(USER_AGENT));
    if let Some((id, secret)) = token {
        headers.insert("Cf-Access-Client-Id", HeaderValue::from_str(id).unwrap());
        headers.insert(
            "Cf-Access-Client-Secret",
            HeaderValue::from_str(secret).unwrap(),
        );
    }
    let stream = tls_stream(address, ca).await;
    tokio_tungstenite::client_async(request, stream).await
}

/// A raw upgrade request with the standard token and extra header lines.
pub fn upgrade_request(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {USER_AGENT}\r\n\
         Cf-Access-Client-Id: {TOKEN_ID}\r\nCf-Access-Client-Secret: {TOKEN_SECRET}\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n{extra}\r\n"
    )
}

/// An origin whose accepted connections are handed to the test.
pub struct TestOrigin {
    pub address: SocketAddr,
    connections: mpsc::UnboundedReceiver<TcpStream>,
    task: JoinHandle<()>,
}

impl TestOrigin {
    pub async fn start() -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (sender, connections) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if sender.send(stream).is_err() {
                    return;
                }
            }
        });
        TestOrigin {
            address,
            connections,
            task,
        }
    }

    /// A dialer for this origin.
    pub fn dialer(&self) -> Arc<dyn Dialer> {
        Arc::new(TcpDialer::new("127.0.0.1", self.address.port()))
    }

    /// The next connection the edge opened.
    pub async fn accept(&mut self) -> TcpStream {
        tokio::time::timeout(PROMPTLY, self.connections.recv())
            .await
            .expect("the edge dials the origin")
            .expect("origin listener alive")
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An origin that echoes every connection.
pub async fn echo_origin() -> (SocketAddr, Arc<dyn Dialer>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let dialer: Arc<dyn Dialer> = Arc::new(TcpDialer::new("127.0.0.1", address.port()));
    (address, dialer, task)
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A dialer that never connects (for the dial timeout).
pub struct HangingDialer;

impl Dialer for HangingDialer {
    fn dial(&self) -> futures_util::future::BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(std::future::pending())
    }

    fn describe(&self) -> String {
        "a black hole".into()
    }
}

/// Reads exactly `len` bytes from an origin connection.
pub async fn read_exact(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buffer = vec![0; len];
    tokio::time::timeout(PROMPTLY, stream.read_exact(&mut buffer))
        .await
        .expect("origin data in time")
        .expect("origin read");
    buffer
}

/// Waits for EOF (or reset) on an origin connection, failing on data.
pub async fn expect_eof(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROMPTLY, stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(_)) => panic!("unexpected data {byte:?} instead of EOF"),
        Err(_) => panic!("the origin connection was not closed"),
    }
}

/// Everything written through the tracing subscriber it is installed in.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

/// Serializes the tests that read the process-wide log capture.
static CAPTURE_USERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl LogCapture {
    /// The process-wide capture of every event at every level, emptied, with exclusive use of it
    /// until the guard drops. Global rather than a thread-local default: tracing caches per
    /// callsite whether anyone listens, and with tests running on parallel threads a scoped
    /// subscriber misses events.
    pub async fn global() -> (LogCapture, tokio::sync::MutexGuard<'static, ()>) {
        static GLOBAL: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        let guard = CAPTURE_USERS.lock().await;
        let capture = GLOBAL.get_or_init(|| {
            let capture = LogCapture::default();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(capture.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            capture
        });
        capture.0.lock().unwrap().clear();
        (capture.clone(), guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
