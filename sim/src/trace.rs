//! What happened in one seed, as the clients saw it: every call and its outcome, every fault,
//! and what each transfer's client believes became of it. The rendered lines are the seed's
//! trace; their hash is what determinism is checked against.
//!
//! The trace holds protocol-level facts only — statements, SQLSTATEs, row values, simulated
//! times — never SASL payloads, cancel secrets or tokio-postgres's statement names (a process
//! wide counter), so two runs of one seed produce the same lines whatever else ran in the
//! process.

use elephant_protocol::display::fnv1a_64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Most trace lines kept per seed (the rest are counted, and still hashed).
pub const MAX_TRACE_LINES: usize = 200_000;

/// How a client call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded; the detail is what it returned, if anything.
    Ok(String),
    /// The server (origin or proxy) sent an ErrorResponse.
    Db {
        /// SQLSTATE.
        code: String,
        /// `ERROR` or `FATAL`.
        severity: String,
        /// Message.
        message: String,
    },
    /// The connection was closed or broke.
    Closed,
    /// tokio-postgres itself failed (unexpected message, bad data): never acceptable.
    Client(String),
    /// No answer within the call timeout.
    Timeout,
}

impl Outcome {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Outcome::Db { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for a success.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// True when the connection can no longer be trusted (closed, FATAL, timed out).
    pub fn connection_lost(&self) -> bool {
        match self {
            Outcome::Db { severity, .. } => severity == "FATAL",
            Outcome::Closed | Outcome::Client(_) | Outcome::Timeout => true,
            Outcome::Ok(_) => false,
        }
    }

    fn render(&self) -> String {
        match self {
            Outcome::Ok(detail) if detail.is_empty() => "ok".into(),
            Outcome::Ok(detail) => format!("ok {detail}"),
            Outcome::Db {
                code,
                severity,
                message,
            } => format!("{} {code} {message}", severity.to_lowercase()),
            Outcome::Closed => "closed".into(),
            Outcome::Client(error) => format!("client error: {error}"),
            Outcome::Timeout => "TIMEOUT".into(),
        }
    }
}

/// What the client knows about a transfer's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// COMMIT succeeded: it must be in the origin's committed state.
    Committed,
    /// It failed before COMMIT, was rolled back, or was abandoned: it must not be.
    Aborted,
    /// COMMIT was sent and no definite answer came back: either is fine.
    Unknown,
}

/// One transfer a client attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferRecord {
    /// Unique id (also the `transfers` primary key).
    pub id: i64,
    /// Debited account.
    pub from: i32,
    /// Credited account.
    pub to: i32,
    /// Amount.
    pub amount: i32,
    /// What the client saw.
    pub fate: Fate,
    /// Which client.
    pub client: usize,
}

/// A client call, for the no-hang and error checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Client index.
    pub client: usize,
    /// What was called.
    pub what: String,
    /// When it started.
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
    /// How.
    pub outcome: Outcome,
}

/// Something a client found wrong on the spot (another session's data, a transaction that
/// changed backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Which invariant.
    pub invariant: crate::invariants::Invariant,
    /// What was seen.
    pub detail: String,
}

#[derive(Debug, Default)]
struct Inner {
    lines: Vec<String>,
    dropped_lines: u64,
    hash: u64,
    calls: Vec<CallRecord>,
    transfers: Vec<TransferRecord>,
    observations: Vec<Observation>,
    hostile: Vec<crate::faults::FaultKind>,
    checks: std::collections::BTreeMap<crate::invariants::Invariant, u64>,
}

/// The shared log of one seed.
#[derive(Debug, Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<Inner>>,
}

/// Everything the log collected.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Trace lines (at most [`MAX_TRACE_LINES`]).
    pub lines: Vec<String>,
    /// Lines beyond the limit.
    pub dropped_lines: u64,
    /// FNV-1a over every line.
    pub hash: u64,
    /// Every call.
    pub calls: Vec<CallRecord>,
    /// Every transfer.
    pub transfers: Vec<TransferRecord>,
    /// Client-side findings.
    pub observations: Vec<Observation>,
    /// Hostile client operations performed.
    pub hostile: Vec<crate::faults::FaultKind>,
    /// Checks the clients made on the spot.
    pub checks: std::collections::BTreeMap<crate::invariants::Invariant, u64>,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a trace line stamped with the simulated time.
    pub fn line(&self, at: Duration, text: impl AsRef<str>) {
        let line = format!("{:>8} {}", crate::faults::ms(at), text.as_ref());
        let mut inner = self.lock();
        inner.hash = fnv1a_64(format!("{:016x}{line}\n", inner.hash).as_bytes());
        if inner.lines.len() < MAX_TRACE_LINES {
            inner.lines.push(line);
        } else {
            inner.dropped_lines += 1;
        }
    }

    /// Appends a wire line (what the fake origin received or sent). Wire lines are kept for
    /// reading but left out of the trace hash, so `--wire` does not change it.
    pub fn wire(&self, at: Duration, text: &str) {
        let line = format!("{:>8}     {text}", crate::faults::ms(at));
        let mut inner = self.lock();
        if inner.lines.len() < MAX_TRACE_LINES {
            inner.lines.push(line);
        } else {
            inner.dropped_lines += 1;
        }
    }

    /// Records a finished call.
    pub fn call(&self, record: CallRecord) {
        let text = format!(
            "client-{} {} -> {} ({})",
            record.client,
            record.what,
            record.outcome.render(),
            crate::faults::ms(record.end - record.start)
        );
        self.line(record.end, text);
        self.lock().calls.push(record);
    }

    /// Records a transfer's fate.
    pub fn transfer(&self, at: Duration, record: TransferRecord) {
        self.line(
            at,
            format!(
                "client-{} transfer {} {}->{} amount {}: {:?}",
                record.client, record.id, record.from, record.to, record.amount, record.fate
            ),
        );
        self.lock().transfers.push(record);
    }

    /// Records a client-side finding.
    pub fn observe(&self, at: Duration, observation: Observation) {
        self.line(
            at,
            format!(
                "VIOLATION {:?}: {}",
                observation.invariant, observation.detail
            ),
        );
        self.lock().observations.push(observation);
    }

    /// Counts a check a client made on the spot.
    pub fn checked(&self, invariant: crate::invariants::Invariant) {
        *self.lock().checks.entry(invariant).or_insert(0) += 1;
    }

    /// Counts a hostile operation.
    pub fn hostile(&self, kind: crate::faults::FaultKind) {
        self.lock().hostile.push(kind);
    }

    /// Takes everything collected.
    pub fn collect(&self) -> Collected {
        let mut inner = self.lock();
        Collected {
            lines: std::mem::take(&mut inner.lines),
            dropped_lines: inner.dropped_lines,
            hash: inner.hash,
            calls: std::mem::take(&mut inner.calls),
            transfers: std::mem::take(&mut inner.transfers),
            observations: std::mem::take(&mut inner.observations),
            hostile: std::mem::take(&mut inner.hostile),
            checks: std::mem::take(&mut inner.checks),
        }
    }
}

/// Most bytes of log output kept per seed (the rest is counted, not kept or checked).
pub const MAX_LOG_BYTES: usize = 64 * 1024 * 1024;

/// What the proxy's and the edge's `tracing` logs wrote during one run, captured by a
/// subscriber scoped to the run (turmoil polls every host on the thread that runs the seed,
/// so a thread-local default subscriber sees every event of this seed and no other's).
/// Checked for secrets ([`crate::invariants::Invariant::NoSecretInLogs`]) and printed by
/// `sim replay --proxy-log`.
#[derive(Clone, Default)]
pub struct LogCapture {
    inner: Arc<Mutex<CapturedLog>>,
}

#[derive(Default)]
struct CapturedLog {
    text: Vec<u8>,
    dropped: usize,
}

impl LogCapture {
    /// Everything captured, as text.
    pub fn text(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&inner.text).into_owned()
    }

    /// Bytes over [`MAX_LOG_BYTES`] that were not kept.
    pub fn dropped(&self) -> usize {
        self.inner.lock().map_or(0, |inner| inner.dropped)
    }

    /// A subscriber writing the events `filter` selects into this capture, stamped with
    /// simulated time.
    pub fn subscriber(&self, filter: &str) -> impl tracing::Subscriber + Send + Sync + 'static {
        let filter = tracing_subscriber::EnvFilter::try_new(filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(SimClock)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }
}

/// What the capture records by default: everything the proxy and the edge log at debug.
pub const DEFAULT_LOG_FILTER: &str = "reference_proxy=debug,tunnel_edge=debug";

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = MAX_LOG_BYTES.saturating_sub(inner.text.len());
        let kept = buf.len().min(room);
        inner
            .text
            .extend_from_slice(buf.get(..kept).unwrap_or_default());
        inner.dropped += buf.len() - kept;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A `tracing` timer that prints simulated time.
struct SimClock;

impl tracing_subscriber::fmt::time::FormatTime for SimClock {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(elapsed) => write!(w, "{:>8}", crate::faults::ms(elapsed)),
            None => write!(w, "{:>8}", "-"),
        }
    }
}
