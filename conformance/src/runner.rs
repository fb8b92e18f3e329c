//! Runs a [`Transcript`] over any stream an arm can open and records what the backend said.
//!
//! Everything Postgres-shaped goes through `elephant-protocol` (ARCHITECTURE.md invariant 2):
//! messages are encoded with [`FrontendMessage::encode`], decoded with [`BackendDecoder`], and
//! the login is the codec's own [`ClientHandshake`]. Each connection has a reader task that
//! decodes continuously, so a transcript that writes a large COPY while the server is already
//! answering can never deadlock on full socket buffers; the transcript's `await` steps consume
//! the decoded messages in arrival order. Every wait is bounded by the transcript's timeout and
//! fails with what was received so far — a broken arm produces a readable failure, not a hang.
//!
//! The trace is one line per message in the project's trace format
//! (`elephant_protocol::display`): `F` for what was sent, `B` for what came back, `--` for
//! events (connection closed, cancel sent, hooks). Secrets are never rendered by that format.

use crate::transcript::{Located, Step, Transcript, Wait, generated};
use bytes::BytesMut;
use elephant_protocol::startup::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError,
};
use elephant_protocol::{
    BackendDecoder, BackendKeyData, BackendMessage, CancelRequest, DecoderLimits, FrontendMessage,
};
use futures_util::future::BoxFuture;
use reference_proxy::stream::{BoxedStream, Dialer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// Size of each CopyData message `copyrows` sends.
pub const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// Most connections one transcript may open (its own and `connect` steps).
pub const MAX_CONNECTIONS: usize = 8;

/// Credentials and startup parameters for every connection of a transcript.
#[derive(Debug, Clone)]
pub struct Login {
    /// Role name.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Database.
    pub database: String,
    /// Extra startup parameters.
    pub parameters: Vec<(String, String)>,
}

/// What an arm does for `hook NAME` steps.
pub type Hooks = Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One recorded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Connection name (`main` for the first).
    pub connection: String,
    /// Part of a login (between StartupMessage and the first ReadyForQuery).
    pub startup: bool,
    /// The rendering.
    pub text: String,
    /// The backend message behind a `B` line (the normalizer edits some fields before
    /// rendering, because long values are rendered only as a hash).
    pub message: Option<BackendMessage>,
}

/// A transcript that could not be run to its end.
#[derive(Debug, Clone)]
pub struct RunFailure {
    /// 1-based transcript line (0 for the login or the end).
    pub line: usize,
    /// What went wrong.
    pub message: String,
    /// What was recorded before.
    pub trace: Vec<Line>,
}

enum Event {
    Message(BackendMessage),
    Closed,
    Broken(String),
}

struct Connection {
    name: String,
    writer: WriteHalf<BoxedStream>,
    events: mpsc::UnboundedReceiver<Event>,
    key: Option<BackendKeyData>,
    closed: bool,
    terminated: bool,
}

/// The state of one transcript run.
struct Run<'a> {
    transcript: &'a Transcript,
    login: &'a Login,
    dialer: Arc<dyn Dialer>,
    hooks: Option<Hooks>,
    connections: Vec<Connection>,
    current: usize,
    trace: Vec<Line>,
    last_received: Vec<String>,
}

/// Runs `transcript` against the endpoint `dialer` opens, as `login`.
pub async fn run(
    transcript: &Transcript,
    login: &Login,
    dialer: Arc<dyn Dialer>,
    hooks: Option<Hooks>,
) -> Result<Vec<Line>, RunFailure> {
    let mut run = Run {
        transcript,
        login,
        dialer,
        hooks,
        connections: Vec::new(),
        current: 0,
        trace: Vec::new(),
        last_received: Vec::new(),
    };
    match run.execute().await {
        Ok(()) => Ok(run.trace),
        Err((line, message)) => Err(RunFailure {
            line,
            message,
            trace: run.trace,
        }),
    }
}

/// Runs setup SQL on its own connection, unrecorded; fails if the server reports an error.
pub async fn setup(
    sql: &str,
    login: &Login,
    dialer: Arc<dyn Dialer>,
    timeout: Duration,
) -> Result<(), String> {
    let mut connection = open(&*dialer, "setup").await?;
    let mut scratch = Vec::new();
    if !login_on(&mut connection, login, timeout, &mut scratch).await? {
        return Err(format!("setup login refused: {}", texts(&scratch)));
    }
    send(&mut connection, &FrontendMessage::Query(sql.into())).await?;
    let received = wait_for(&mut connection, &Wait::Ready(1), timeout, &mut scratch).await?;
    if let Some(error) = received.iter().find(|l| l.starts_with("B ErrorResponse")) {
        return Err(format!("setup `{sql}` failed: {error}"));
    }
    let _ = send(&mut connection, &FrontendMessage::Terminate).await;
    Ok(())
}

fn texts(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join(" / ")
}

impl Run<'_> {
    async fn execute(&mut self) -> Result<(), (usize, String)> {
        let timeout = self.transcript.timeout;
        if !self.connect("main").await.map_err(|e| (0, e))? {
            return self.after_refused_login();
        }
        let transcript = self.transcript;
        for Located { line, step } in &transcript.steps {
            self.step(step, timeout)
                .await
                .map_err(|message| (*line, message))?;
        }
        self.finish(timeout).await.map_err(|message| (0, message))
    }

    /// A refused login ends the session: only `expect` steps may follow.
    fn after_refused_login(&mut self) -> Result<(), (usize, String)> {
        self.last_received = self.trace.iter().map(|l| l.text.clone()).collect();
        let transcript = self.transcript;
        for Located { line, step } in &transcript.steps {
            match step {
                Step::Expect(text) => self.expect(text).map_err(|m| (*line, m))?,
                _ => return Err((*line, format!("login refused: {}", texts(&self.trace)))),
            }
        }
        Ok(())
    }

    /// Opens and logs in a connection named `name`, making it current; `Ok(false)` when the
    /// server refused the login (its answer is in the trace).
    async fn connect(&mut self, name: &str) -> Result<bool, String> {
        if self.connections.len() >= MAX_CONNECTIONS {
            return Err(format!("more than {MAX_CONNECTIONS} connections"));
        }
        if self.connections.iter().any(|c| c.name == name) {
            return Err(format!("connection `{name}` already exists"));
        }
        let mut connection = open(&*self.dialer, name).await?;
        let accepted = login_on(
            &mut connection,
            self.login,
            self.transcript.timeout,
            &mut self.trace,
        )
        .await?;
        self.connections.push(connection);
        self.current = self.connections.len() - 1;
        Ok(accepted)
    }

    async fn step(&mut self, step: &Step, timeout: Duration) -> Result<(), String> {
        match step {
            Step::Send(message) => self.send(message).await,
            Step::CopyRows { rows, width } => self.copy_rows(*rows, *width).await,
            Step::Await(wait) => {
                let connection = &mut self.connections[self.current];
                self.last_received = wait_for(connection, wait, timeout, &mut self.trace).await?;
                Ok(())
            }
            Step::Cancel(after) => self.cancel(*after),
            Step::Sleep(millis) => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                Ok(())
            }
            Step::Connect(name) => match self.connect(name).await? {
                true => Ok(()),
                false => Err(format!("login of `{name}` refused")),
            },
            Step::On(name) => {
                self.current = self
                    .connections
                    .iter()
                    .position(|c| &c.name == name)
                    .ok_or(format!("no connection `{name}`"))?;
                Ok(())
            }
            Step::Hook(name) => self.hook(name).await,
            Step::Expect(text) => self.expect(text),
        }
    }

    async fn send(&mut self, message: &FrontendMessage) -> Result<(), String> {
        let connection = &mut self.connections[self.current];
        record(&mut self.trace, connection, false, format!("F {message}"));
        if matches!(message, FrontendMessage::Terminate) {
            connection.terminated = true;
        }
        send(connection, message).await
    }

    async fn copy_rows(&mut self, rows: usize, width: usize) -> Result<(), String> {
        let filler = generated(width);
        let filler = String::from_utf8_lossy(&filler);
        let mut chunk = String::new();
        let (mut messages, mut total, mut hash) = (0usize, 0usize, Vec::new());
        let connection = &mut self.connections[self.current];
        for row in 0..rows {
            chunk.push_str(&format!("{row}\t{filler}\n"));
            if chunk.len() >= COPY_CHUNK_BYTES || row + 1 == rows {
                let data = bytes::Bytes::from(std::mem::take(&mut chunk));
                total += data.len();
                messages += 1;
                hash.extend_from_slice(&elephant_protocol::display::fnv1a_64(&data).to_be_bytes());
                send(connection, &FrontendMessage::CopyData(data)).await?;
            }
        }
        let fingerprint = elephant_protocol::display::fnv1a_64(&hash);
        let text = format!(
            "F CopyData x{messages} ({rows} generated rows of width {width}, {total} bytes, fnv={fingerprint:016x})"
        );
        record(&mut self.trace, connection, false, text);
        Ok(())
    }

    /// Schedules a CancelRequest for the current connection's backend key.
    fn cancel(&mut self, after: u64) -> Result<(), String> {
        let connection = &self.connections[self.current];
        let key = connection
            .key
            .clone()
            .ok_or("no BackendKeyData to cancel with")?;
        let text = format!("-- CancelRequest after {after}ms");
        record(&mut self.trace, connection, false, text);
        let dialer = self.dialer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let _ = send_cancel(&*dialer, &key).await;
        });
        Ok(())
    }

    async fn hook(&mut self, name: &str) -> Result<(), String> {
        let hooks = self.hooks.clone().ok_or("this arm has no hooks")?;
        let connection = &self.connections[self.current];
        record(
            &mut self.trace,
            connection,
            false,
            format!("-- hook {name}"),
        );
        hooks(name.to_string()).await
    }

    fn expect(&self, text: &str) -> Result<(), String> {
        if self.last_received.iter().any(|line| line.contains(text)) {
            return Ok(());
        }
        Err(format!(
            "expected a line containing `{text}` in what the last wait received:\n  {}",
            self.last_received.join("\n  ")
        ))
    }

    /// Terminates every connection still open and waits for the server to close each.
    async fn finish(&mut self, timeout: Duration) -> Result<(), String> {
        for connection in &mut self.connections {
            if connection.closed {
                continue;
            }
            if !connection.terminated {
                record(&mut self.trace, connection, false, "F Terminate".into());
                send(connection, &FrontendMessage::Terminate).await?;
            }
            wait_for(connection, &Wait::Closed, timeout, &mut self.trace).await?;
        }
        Ok(())
    }
}

fn record(trace: &mut Vec<Line>, connection: &Connection, startup: bool, text: String) {
    trace.push(Line {
        connection: connection.name.clone(),
        startup,
        text,
        message: None,
    });
}

fn record_message(
    trace: &mut Vec<Line>,
    connection: &Connection,
    startup: bool,
    message: &BackendMessage,
) -> String {
    let text = format!("B {message}");
    trace.push(Line {
        connection: connection.name.clone(),
        startup,
        text: text.clone(),
        message: Some(message.clone()),
    });
    text
}

/// Opens a stream and starts its reader task.
async fn open(dialer: &dyn Dialer, name: &str) -> Result<Connection, String> {
    let stream = dialer
        .dial()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", dialer.describe()))?;
    let (reader, writer) = tokio::io::split(stream);
    let (events, receiver) = mpsc::unbounded_channel();
    tokio::spawn(read_messages(reader, events));
    Ok(Connection {
        name: name.to_string(),
        writer,
        events: receiver,
        key: None,
        closed: false,
        terminated: false,
    })
}

/// Decodes backend messages until the stream ends; a reset counts as closed (whether the
/// kernel reports EOF or a reset after a peer vanished is not the protocol's business).
async fn read_messages(mut reader: ReadHalf<BoxedStream>, events: mpsc::UnboundedSender<Event>) {
    let mut decoder = BackendDecoder::new(DecoderLimits::default());
    let mut buffer = BytesMut::new();
    loop {
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(message)) => {
                    if events.send(Event::Message(message)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = events.send(Event::Broken(error.to_string()));
                    return;
                }
            }
        }
        match reader.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::Closed);
                return;
            }
            Ok(_) => {}
        }
    }
}

async fn send(connection: &mut Connection, message: &FrontendMessage) -> Result<(), String> {
    let mut bytes = BytesMut::new();
    message
        .encode(&mut bytes)
        .map_err(|e| format!("cannot encode {}: {e}", message.name()))?;
    // A server that already closed the connection makes writes fail; that is recorded when
    // the closing is read, so a failed write is not an error of the transcript.
    let _ = connection.writer.write_all(&bytes).await;
    let _ = connection.writer.flush().await;
    Ok(())
}

async fn send_cancel(dialer: &dyn Dialer, key: &BackendKeyData) -> std::io::Result<()> {
    let mut stream = dialer.dial().await?;
    let request = FrontendMessage::CancelRequest(CancelRequest {
        process_id: key.process_id,
        secret_key: key.secret_key.clone(),
    });
    let mut bytes = BytesMut::new();
    request
        .encode(&mut bytes)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    let mut sink = [0u8; 64];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Logs in with the codec's [`ClientHandshake`], recording every message both ways.
/// `Ok(false)`: the server refused (its ErrorResponse and the close are recorded).
async fn login_on(
    connection: &mut Connection,
    login: &Login,
    timeout: Duration,
    trace: &mut Vec<Line>,
) -> Result<bool, String> {
    let (mut handshake, startup) = ClientHandshake::start(ClientHandshakeConfig {
        user: login.user.clone(),
        database: Some(login.database.clone()),
        password: login.password.clone(),
        parameters: login.parameters.clone(),
        tls_server_end_point: None,
    });
    record(trace, connection, true, format!("F {startup}"));
    send(connection, &startup).await?;
    loop {
        let message = match next_event(connection, timeout, "the login to finish").await? {
            Event::Message(message) => message,
            Event::Closed => {
                connection.closed = true;
                record(trace, connection, true, "-- closed".into());
                return Ok(false);
            }
            Event::Broken(error) => return Err(format!("undecodable server bytes: {error}")),
        };
        record_message(trace, connection, true, &message);
        match handshake.handle(message) {
            Ok(ClientStep::Send(reply)) => {
                record(trace, connection, true, format!("F {reply}"));
                send(connection, &reply).await?;
            }
            Ok(ClientStep::Continue) => {}
            Ok(ClientStep::Ready(session)) => {
                connection.key = session.backend_key;
                return Ok(true);
            }
            Err(HandshakeError::Server(_)) => {
                wait_for(connection, &Wait::Closed, timeout, trace).await?;
                return Ok(false);
            }
            Err(error) => return Err(format!("login failed on the client side: {error}")),
        }
    }
}

async fn next_event(
    connection: &mut Connection,
    timeout: Duration,
    waiting_for: &str,
) -> Result<Event, String> {
    match tokio::time::timeout(timeout, connection.events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Ok(Event::Closed),
        Err(_) => Err(format!(
            "timed out after {timeout:?} waiting for {waiting_for} on connection `{}`",
            connection.name
        )),
    }
}

/// Reads until `wait` is satisfied, recording each message; returns the lines it received.
async fn wait_for(
    connection: &mut Connection,
    wait: &Wait,
    timeout: Duration,
    trace: &mut Vec<Line>,
) -> Result<Vec<String>, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut received = Vec::new();
    let mut matched = 0usize;
    while !satisfied(wait, matched) {
        if connection.closed {
            return Err(format!(
                "the server closed connection `{}` before {}; received: {}",
                connection.name,
                describe(wait),
                received.join(" / ")
            ));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = next_event(connection, remaining, &describe(wait))
            .await
            .map_err(|e| format!("{e}; received meanwhile: [{}]", received.join(" / ")))?;
        let text = match event {
            Event::Message(message) => {
                matched += usize::from(matches_wait(wait, &message));
                record_message(trace, connection, false, &message)
            }
            Event::Closed => {
                connection.closed = true;
                matched += usize::from(*wait == Wait::Closed);
                record(trace, connection, false, "-- closed".to_string());
                "-- closed".to_string()
            }
            Event::Broken(error) => return Err(format!("undecodable server bytes: {error}")),
        };
        received.push(text);
    }
    Ok(received)
}

fn satisfied(wait: &Wait, matched: usize) -> bool {
    match wait {
        Wait::Ready(n) | Wait::Messages(n) | Wait::Named(_, n) => matched >= *n,
        Wait::Closed => matched >= 1,
    }
}

fn matches_wait(wait: &Wait, message: &BackendMessage) -> bool {
    match wait {
        Wait::Ready(_) => matches!(message, BackendMessage::ReadyForQuery(_)),
        Wait::Messages(_) => true,
        Wait::Named(name, _) => message.name() == name,
        Wait::Closed => false,
    }
}

fn describe(wait: &Wait) -> String {
    match wait {
        Wait::Ready(n) => format!("{n} ReadyForQuery"),
        Wait::Messages(n) => format!("{n} message(s)"),
        Wait::Named(name, n) => format!("{n} {name}"),
        Wait::Closed => "the server to close the connection".into(),
    }
}
