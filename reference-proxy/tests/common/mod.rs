//! Shared harness: a real Postgres (fixtures) and an in-process reference proxy in front of it.
#![allow(dead_code)]

use bytes::BytesMut;
use elephant_protocol::startup::{ClientHandshake, ClientHandshakeConfig, ClientStep};
use elephant_protocol::{BackendDecoder, BackendMessage, DecoderLimits, FrontendMessage};
use fixtures::{Postgres, PostgresConfig, Role};
use rand_core::SeedableRng;
use reference_proxy::config::load_from_args;
use reference_proxy::context::ProxyContext;
use reference_proxy::metrics::Metrics;
use reference_proxy::server::{build_context, origin_dialer, serve};
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy running inside the test process.
pub struct TestProxy {
    pub address: SocketAddr,
    pub context: Arc<ProxyContext>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TestProxy {
    /// Starts a proxy for `pg` (origin role `Role::Scram`, no TLS), with extra flags.
    pub async fn start(pg: &Postgres, extra: &[&str]) -> TestProxy {
        let origin = format!("{}?sslmode=disable", pg.url(Role::Scram));
        Self::start_with_origin(&origin, extra)
            .await
            .expect("valid test configuration")
    }

    /// Starts a proxy for the origin URL `origin` with extra flags; a configuration error is
    /// returned as text.
    pub async fn start_with_origin(origin: &str, extra: &[&str]) -> Result<TestProxy, String> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut args = vec![
            "reference-proxy",
            "--origin",
            origin,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let config = load_from_args(args).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let metrics = Metrics::new().map_err(|e| e.to_string())?;
        let (shutdown, receiver) = watch::channel(false);
        let dialer = origin_dialer(&config).map_err(|e| e.to_string())?;
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(7));
        let context = build_context(&config, dialer, rng, metrics.clone(), receiver)
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(serve(
            context.clone(),
            listener,
            config.timeouts.shutdown_grace,
        ));
        Ok(TestProxy {
            address,
            context,
            metrics,
            shutdown,
            task,
        })
    }

    /// A libpq-style connection string for the proxy, as the origin's SCRAM user.
    pub fn conninfo(&self, pg: &Postgres) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
            self.address.port(),
            pg.user(Role::Scram),
            pg.password(Role::Scram),
            pg.database()
        )
    }

    /// Connects tokio-postgres through the proxy; the connection task runs in the background.
    pub async fn connect(&self, pg: &Postgres) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(pg), tokio_postgres::NoTls)
                .await
                .expect("connect through the proxy");
        tokio::spawn(connection);
        client
    }

    /// Stops accepting and waits for the proxy task (bounded).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Runs a Postgres client program from the fixture's binaries against host/port.
pub async fn run_client(
    pg: &Postgres,
    program: &str,
    port: u16,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new(pg.bin_dir().join(program));
    command
        .args(args)
        .env_clear()
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", pg.user(Role::Scram))
        .env("PGPASSWORD", pg.password(Role::Scram))
        .env("PGDATABASE", pg.database())
        .env("PGSSLMODE", "disable")
        .env("PGCLIENTENCODING", "UTF8")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(mut pipe) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = pipe.write_all(stdin.unwrap_or("").as_bytes()).await;
    }
    child.wait_with_output().await.expect("client finished")
}

/// Starts Postgres, or skips (loudly; fails under CI=true).
pub fn postgres(test: &str) -> Option<Postgres> {
    Postgres::start_or_skip(test, PostgresConfig::default())
}

/// The SQLSTATE of a tokio-postgres error, if it carries one.
pub fn sqlstate(error: &tokio_postgres::Error) -> Option<String> {
    error.as_db_error().map(|db| db.code().code().to_string())
}

/// Bound on any wait for the proxy's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in raw connection.
pub struct Raw {
    socket: TcpStream,
    buffer: BytesMut,
    decoder: BackendDecoder,
}

impl Raw {
    pub async fn login(proxy: &TestProxy, pg: &Postgres) -> Raw {
        let socket = TcpStream::connect(proxy.address).await.expect("connect");
        let mut raw = Raw {
            socket,
            buffer: BytesMut::new(),
            decoder: BackendDecoder::new(DecoderLimits::default()),
        };
        let (mut handshake, startup) = ClientHandshake::start(ClientHandshakeConfig {
            user: pg.user(Role::Scram).into(),
            database: Some(pg.database().into()),
            password: Some(pg.password(Role::Scram).into()),
            ..ClientHandshakeConfig::default()
        });
        raw.send(&startup).await;
        loop {
            match handshake
                .handle(raw.receive().await.expect("startup answer"))
                .expect("login")
            {
                ClientStep::Send(message) => raw.send(&message).await,
                ClientStep::Continue => {}
                ClientStep::Ready(_) => return raw,
            }
        }
    }

    pub async fn send(&mut self, message: &FrontendMessage) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("encodable");
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` once the proxy closed the connection.
    pub async fn receive(&mut self) -> Option<BackendMessage> {
        tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                if let Some(message) = self
                    .decoder
                    .decode(&mut self.buffer)
                    .expect("valid proxy bytes")
                {
                    return Some(message);
                }
                match self.socket.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the proxy answered in time (no hang)")
    }

    /// Expects an ErrorResponse with `sqlstate`, then a closed connection; returns its message.
    pub async fn expect_fatal(&mut self, sqlstate: &str) -> String {
        let message = match self.receive().await {
            Some(BackendMessage::ErrorResponse(fields)) => {
                assert_eq!(
                    fields.code().map(|c| c.to_string()).as_deref(),
                    Some(sqlstate),
                    "{fields:?}"
                );
                fields.message().map(|m| m.to_string()).unwrap_or_default()
            }
            other => panic!("expected an ErrorResponse, got {other:?}"),
        };
        assert!(
            self.receive().await.is_none(),
            "the connection must be closed after a protocol violation"
        );
        message
    }
}
