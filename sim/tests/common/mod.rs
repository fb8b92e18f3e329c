//! Helpers shared by the sim crate's tests: a fake Postgres on in-memory streams, reached with
//! tokio-postgres or with a raw protocol client built on elephant-protocol.

#![allow(dead_code)]

use bytes::BytesMut;
use elephant_protocol::{
    BackendDecoder, BackendMessage, DecoderLimits, FrontendMessage, StartupMessage,
};
use sim::fake_pg::{FakeAuth, FakePgConfig, FakePostgres};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// Bytes buffered by each in-memory connection.
pub const DUPLEX_CAPACITY: usize = 64 * 1024;

pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";
pub const DATABASE: &str = "bank";

pub fn config(auth: FakeAuth) -> FakePgConfig {
    FakePgConfig {
        user: USER.into(),
        password: PASSWORD.into(),
        auth,
        database: DATABASE.into(),
        max_connections: 10,
        accounts: 4,
        initial_balance: 100,
        seed: 7,
        wire_tap: None,
    }
}

pub fn fake() -> FakePostgres {
    FakePostgres::new(config(FakeAuth::Scram { iterations: 16 }))
}

/// A new in-memory connection to `fake`; the server side runs in a task.
pub fn open(fake: &FakePostgres) -> DuplexStream {
    let (client, server) = tokio::io::duplex(DUPLEX_CAPACITY);
    let fake = fake.clone();
    tokio::spawn(async move { fake.serve_connection(server).await });
    client
}

pub fn pg_config(application_name: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .user(USER)
        .password(PASSWORD)
        .dbname(DATABASE)
        .application_name(application_name);
    config
}

/// A tokio-postgres client of `fake`.
pub async fn connect_with(
    fake: &FakePostgres,
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config
        .connect_raw(open(fake), tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

pub async fn connect(fake: &FakePostgres, application_name: &str) -> tokio_postgres::Client {
    connect_with(fake, &pg_config(application_name))
        .await
        .expect("connects to the fake")
}

/// The SQLSTATE of a tokio-postgres error.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no code: {error}"))
}

/// A protocol-level client: sends messages, reads until a stop condition.
pub struct Raw<S = DuplexStream> {
    stream: S,
    buffer: BytesMut,
    decoder: BackendDecoder,
}

impl Raw<DuplexStream> {
    /// Logs in with trust auth (the fake must use FakeAuth::Trust) and reads to ReadyForQuery.
    pub async fn login(
        fake: &FakePostgres,
        parameters: &[(&str, &str)],
    ) -> (Raw<DuplexStream>, Vec<BackendMessage>) {
        Raw::login_on(open(fake), USER, DATABASE, parameters).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S) -> Self {
        Raw {
            stream,
            buffer: BytesMut::new(),
            decoder: BackendDecoder::new(DecoderLimits::default()),
        }
    }

    /// Logs in over `stream` without a password (trust) and reads to ReadyForQuery.
    pub async fn login_on(
        stream: S,
        user: &str,
        database: &str,
        parameters: &[(&str, &str)],
    ) -> (Raw<S>, Vec<BackendMessage>) {
        let mut raw = Raw::new(stream);
        let mut all = vec![("user", user), ("database", database)];
        all.extend_from_slice(parameters);
        raw.send(&[FrontendMessage::Startup(StartupMessage::new(all))])
            .await;
        let messages = raw.until_ready().await;
        (raw, messages)
    }

    /// The stream, for writing raw bytes.
    pub fn into_inner(self) -> S {
        self.stream
    }

    pub async fn send(&mut self, messages: &[FrontendMessage]) {
        let mut bytes = BytesMut::new();
        for message in messages {
            message.encode(&mut bytes).expect("encodes");
        }
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writes");
    }

    /// The next message, `None` at end of stream.
    pub async fn next(&mut self) -> Option<BackendMessage> {
        loop {
            if let Some(message) = self
                .decoder
                .decode(&mut self.buffer)
                .expect("valid backend message")
            {
                return Some(message);
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Messages up to and including ReadyForQuery (or the end of the stream).
    pub async fn until_ready(&mut self) -> Vec<BackendMessage> {
        let mut messages = Vec::new();
        while let Some(message) = self.next().await {
            let ready = matches!(message, BackendMessage::ReadyForQuery(_));
            messages.push(message);
            if ready {
                break;
            }
        }
        messages
    }

    /// Runs a simple query and renders the answer one message per line.
    pub async fn query(&mut self, sql: &str) -> Vec<String> {
        self.send(&[FrontendMessage::Query(sql.into())]).await;
        render(&self.until_ready().await)
    }
}

/// One line per message, through elephant-protocol's Display (the project's trace format).
pub fn render(messages: &[BackendMessage]) -> Vec<String> {
    messages.iter().map(|m| m.to_string()).collect()
}
