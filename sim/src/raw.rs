//! A protocol-level client on elephant-protocol, for what tokio-postgres never sends: fixed
//! statement names chosen by the client (every client uses the same names for different
//! SQL), the unnamed statement bound in a later transaction than its Parse, and several
//! batches — one of them failing — pipelined in one write.
//!
//! It logs in with the same `ClientHandshake` the proxy uses towards its origin, and reads
//! whole batches: everything up to the ReadyForQuery that ends each one.

use crate::trace::Outcome;
use bytes::BytesMut;
use elephant_protocol::startup::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError,
};
use elephant_protocol::{
    BackendDecoder, BackendMessage, Bind, DecoderLimits, FrontendMessage, Parse, PgString, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read at a time.
pub const READ_CHUNK: usize = 8192;

/// Most messages one batch may answer with (the workload's answer with a handful).
pub const MAX_BATCH_MESSAGES: usize = 1024;

/// A raw connection to the proxy.
pub struct RawClient {
    stream: turmoil::net::TcpStream,
    buffer: BytesMut,
    decoder: BackendDecoder,
}

/// Login details.
#[derive(Debug, Clone)]
pub struct Login {
    /// Host to dial.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
    /// `application_name`.
    pub application_name: String,
}

fn closed<E>(_: E) -> Outcome {
    Outcome::Closed
}

impl RawClient {
    /// Connects and logs in; a refusal comes back as the server's error.
    pub async fn connect(login: &Login) -> Result<RawClient, Outcome> {
        let stream = turmoil::net::TcpStream::connect((login.host.as_str(), login.port))
            .await
            .map_err(closed)?;
        let mut client = RawClient {
            stream,
            buffer: BytesMut::new(),
            decoder: BackendDecoder::new(DecoderLimits::default()),
        };
        let (mut handshake, startup) = ClientHandshake::start(ClientHandshakeConfig {
            user: login.user.clone(),
            database: Some(login.database.clone()),
            password: Some(login.password.clone()),
            parameters: vec![("application_name".into(), login.application_name.clone())],
            tls_server_end_point: None,
        });
        client.send(&[startup]).await?;
        loop {
            let message = client.next().await?;
            match handshake.handle(message) {
                Ok(ClientStep::Send(reply)) => client.send(&[reply]).await?,
                Ok(ClientStep::Continue) => {}
                Ok(ClientStep::Ready(_)) => return Ok(client),
                Err(HandshakeError::Server(fields)) => return Err(db_outcome(&fields)),
                Err(error) => return Err(Outcome::Client(error.to_string())),
            }
        }
    }

    /// Writes messages in one go.
    pub async fn send(&mut self, messages: &[FrontendMessage]) -> Result<(), Outcome> {
        let mut bytes = BytesMut::new();
        for message in messages {
            message
                .encode(&mut bytes)
                .map_err(|e| Outcome::Client(e.to_string()))?;
        }
        self.stream.write_all(&bytes).await.map_err(closed)?;
        self.stream.flush().await.map_err(closed)
    }

    /// The next message.
    pub async fn next(&mut self) -> Result<BackendMessage, Outcome> {
        loop {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(error) => return Err(Outcome::Client(error.to_string())),
            }
            self.buffer.reserve(READ_CHUNK);
            if self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(closed)?
                == 0
            {
                return Err(Outcome::Closed);
            }
        }
    }

    /// Everything up to and including the next ReadyForQuery. A FATAL error ends it early.
    pub async fn batch(&mut self) -> Result<Vec<BackendMessage>, Outcome> {
        let mut messages = Vec::new();
        while messages.len() < MAX_BATCH_MESSAGES {
            let message = self.next().await?;
            let fatal = matches!(&message, BackendMessage::ErrorResponse(f) if f.severity().is_some_and(|s| s == "FATAL"));
            let done = matches!(message, BackendMessage::ReadyForQuery(_));
            messages.push(message);
            if done || fatal {
                return Ok(messages);
            }
        }
        Err(Outcome::Client(format!(
            "more than {MAX_BATCH_MESSAGES} messages without ReadyForQuery"
        )))
    }

    /// Says goodbye.
    pub async fn terminate(mut self) {
        let _ = self.send(&[FrontendMessage::Terminate]).await;
    }
}

/// The outcome of an ErrorResponse.
pub fn db_outcome(fields: &elephant_protocol::ErrorFields) -> Outcome {
    let text = |value: Option<&PgString>| value.map(|v| v.to_string()).unwrap_or_default();
    Outcome::Db {
        code: text(fields.code()),
        severity: text(fields.severity()),
        message: text(fields.message()),
    }
}

/// Parse.
pub fn parse(name: &str, sql: &str) -> FrontendMessage {
    FrontendMessage::Parse(Parse {
        name: name.into(),
        query: sql.into(),
        parameter_types: Vec::new(),
    })
}

/// Bind with text parameters and text results.
pub fn bind(portal: &str, statement: &str, params: &[&str]) -> FrontendMessage {
    FrontendMessage::Bind(Bind {
        portal: portal.into(),
        statement: statement.into(),
        parameter_formats: Vec::new(),
        parameters: params
            .iter()
            .map(|p| Some(bytes::Bytes::copy_from_slice(p.as_bytes())))
            .collect(),
        result_formats: Vec::new(),
    })
}

/// Execute without a row limit.
pub fn execute() -> FrontendMessage {
    FrontendMessage::Execute {
        portal: PgString::default(),
        max_rows: 0,
    }
}

/// Close a statement.
pub fn close(name: &str) -> FrontendMessage {
    FrontendMessage::Close {
        target: Target::Statement,
        name: name.into(),
    }
}

/// The text values of every DataRow in `messages`.
pub fn rows(messages: &[BackendMessage]) -> Vec<Vec<String>> {
    messages
        .iter()
        .filter_map(|message| match message {
            BackendMessage::DataRow(row) => Some(
                row.values()
                    .iter()
                    .map(|v| {
                        v.as_ref()
                            .map_or("NULL".into(), |b| String::from_utf8_lossy(b).into_owned())
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The first ErrorResponse in `messages`, as an outcome; `Ok` with the rows otherwise.
pub fn outcome(messages: &[BackendMessage]) -> Outcome {
    for message in messages {
        if let BackendMessage::ErrorResponse(fields) = message {
            return db_outcome(fields);
        }
    }
    let rows = rows(messages);
    Outcome::Ok(if rows.is_empty() {
        String::new()
    } else {
        format!("{rows:?}")
    })
}
