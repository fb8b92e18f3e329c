//! The clients: tokio-postgres sessions through the proxy doing bank transfers and reads,
//! and — when faults are on — behaving badly (vanishing mid-transaction, cancelling, running
//! queries past the statement timeout).
//!
//! Every call is bounded by the scenario's call timeout and recorded with its outcome, so the
//! invariants can be checked afterwards from what clients saw. Checks that only a client can
//! make are made on the spot: a session must only ever see its own `application_name` and its
//! own parameters echoed back, a transaction must stay on one origin backend, and a slow query
//! must not outlive the statement timeout.

use crate::faults::FaultKind;
use crate::invariants::{CANCEL_TARGET, Invariant};
use crate::trace::{CallRecord, Fate, Log, Observation, Outcome, TransferRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{NoTls, SimpleQueryMessage, Statement};

mod probe;
mod raw_ops;
pub mod scripted;

pub use probe::{PROBE_HOST, PROBE_RETRY, ProbeSpec, probe};

/// The proxy's port.
pub const PROXY_PORT: u16 = 6432;
/// Longest pause between two operations of a client.
pub const MAX_THINK_TIME: Duration = Duration::from_millis(30);
/// Pause after a failed connection attempt.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Transfer ids are `(client + 1) * TRANSFER_ID_STRIDE + sequence`.
pub const TRANSFER_ID_STRIDE: i64 = 1_000_000;
/// Largest amount moved by one transfer.
pub const MAX_AMOUNT: i32 = 20;
/// Delay range before a client cancels its own slow query.
/// (Some cancels arrive after the query ended: they must then hit nothing.)
pub const CANCEL_DELAY: (u64, u64) = (20, 2500);
/// Fraction of the statement timeout the cancelled query sleeps.
pub const CANCEL_TARGET_SLEEP: f64 = 0.75;
/// Fraction of the statement timeout a statement that must time out sleeps.
pub const OVERLONG_SLEEP: f64 = 1.5;
/// Fraction of the statement timeout the statement a client vanishes during sleeps.
pub const INTERRUPTED_SLEEP: f64 = 0.6;
/// How long a client waits for its connection task after a polite close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The SQL the clients send.
pub mod sql {
    /// Read one balance.
    pub const READ: &str = "SELECT balance FROM accounts WHERE id = $1";
    /// Move money.
    pub const UPDATE: &str = "UPDATE accounts SET balance = balance + $1 WHERE id = $2";
    /// Log a transfer.
    pub const INSERT: &str =
        "INSERT INTO transfers (id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)";
    /// Which origin backend serves us.
    pub const PID: &str = "SELECT pg_backend_pid()";
    /// Who the origin thinks we are, and the statement timeout it applies.
    pub const WHOAMI: &str =
        "SELECT current_setting('application_name'), current_setting('statement_timeout')";
    /// What a hostile client prepares and runs later, on whatever connection it then has.
    pub const SET_TIMEOUT: &str = "SET statement_timeout = '1234ms'";
    /// How `SHOW statement_timeout` shows [`SET_TIMEOUT`]'s value.
    pub const SET_TIMEOUT_SHOWN: &str = "1234ms";
    /// Echo a value through a prepared statement.
    pub const ECHO: &str = "SELECT $1::text";
    /// Every account, for portal fetches.
    pub const ACCOUNTS: &str = "SELECT id, balance FROM accounts ORDER BY id";
}

/// `application_name` of the odd clients.
pub const SHARED_APPLICATION_NAME: &str = "shared-app";

/// A slow query shorter than the statement timeout by this much must not time out.
pub const TIMEOUT_MARGIN: Duration = Duration::from_millis(200);

/// Rows per Execute when a client fetches through a portal.
pub const PORTAL_BATCH: i32 = 2;

/// What one client needs to know.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Index (host `client-<index>`, application_name `client-<index>`).
    pub index: usize,
    /// Seed of this client's choices.
    pub seed: u64,
    /// Host name of the proxy.
    pub proxy_host: String,
    /// Login.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
    /// Accounts `1..=accounts` exist.
    pub accounts: i32,
    /// What each account held at the start.
    pub initial_balance: i64,
    /// Start operations until this simulated time.
    pub until: Duration,
    /// Bound of every call.
    pub call_timeout: Duration,
    /// The proxy's statement timeout.
    pub statement_timeout: Duration,
    /// Probability of a hostile operation (0 when faults are off).
    pub hostile_rate: f64,
    /// Whether to do what exposes the open proxy bugs (see [`Scenario::known_bugs`]).
    ///
    /// [`Scenario::known_bugs`]: crate::scenario::Scenario::known_bugs
    pub known_bugs: bool,
}

impl ClientSpec {
    /// What all accounts hold together.
    pub fn total_balance(&self) -> i64 {
        self.initial_balance * i64::from(self.accounts)
    }

    /// The client's name in traces and tokens.
    pub fn label(&self) -> String {
        format!("client-{}", self.index)
    }

    /// The client's `application_name`: its own for even clients, one shared by all odd
    /// clients (so that state leaking between sessions with identical settings, which the
    /// proxy does not reset between them, is seen too).
    pub fn application_name(&self) -> String {
        if self.index.is_multiple_of(2) {
            self.label()
        } else {
            SHARED_APPLICATION_NAME.to_string()
        }
    }
}

/// Simulated time now.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// A proxy connection as the clients open it.
pub(crate) type ProxyConnection =
    tokio_postgres::Connection<turmoil::net::TcpStream, tokio_postgres::tls::NoTlsStream>;

/// Opens a tokio-postgres session to the proxy within `timeout`: the connect call's outcome,
/// and the session when it succeeded.
pub(crate) async fn connect_to_proxy(
    config: tokio_postgres::Config,
    host: &str,
    timeout: Duration,
) -> (Outcome, Option<(tokio_postgres::Client, ProxyConnection)>) {
    let host = host.to_string();
    let connecting = async move {
        match turmoil::net::TcpStream::connect((host.as_str(), PROXY_PORT)).await {
            Ok(stream) => config
                .connect_raw(stream, NoTls)
                .await
                .map_err(|error| classify(&error)),
            Err(_) => Err(Outcome::Closed),
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(connected)) => (Outcome::Ok(String::new()), Some(connected)),
        Ok(Err(outcome)) => (outcome, None),
        Err(_) => (Outcome::Timeout, None),
    }
}

/// Runs one client until its workload time is over.
pub async fn run(spec: ClientSpec, log: Log) -> turmoil::Result {
    let mut client = Client {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        spec,
        log,
        conn: None,
        op: 0,
        transfers: 0,
        expected_timeout: None,
    };
    while now() < client.spec.until {
        client.op += 1;
        client.step().await;
        let think = client.rng.gen_range(0..=MAX_THINK_TIME.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    if let Some(conn) = client.conn.take() {
        conn.close().await;
    }
    Ok(())
}

/// A connection to the proxy and the statements prepared on it. The client is shared (`Rc`)
/// with the call in flight, so the [`Client`] can record results while a call is pending.
struct Conn {
    client: Rc<tokio_postgres::Client>,
    task: JoinHandle<()>,
    read: Option<Statement>,
    update: Option<Statement>,
    insert: Option<Statement>,
    echo: Option<Statement>,
    set: Option<Statement>,
}

impl Conn {
    /// Terminates politely and waits for the connection task to end.
    async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(CLOSE_GRACE, self.task).await;
    }

    /// Drops the socket without a word (no Terminate, no ROLLBACK).
    fn vanish(self) {
        self.task.abort();
    }
}

/// The operations a client chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    TransferSteps,
    TransferBatch,
    TransferPrepared,
    ReadPrepared,
    ReadSimple,
    WhoAmI,
    Echo,
    ReadTyped,
    Pipelined,
    PortalFetch,
    Reconnect,
    SlowQuery,
    SlowInTransaction,
    Cancel,
    Vanish,
    VanishWhileRunning,
    PreparedSet,
    RawStatements,
}

const OPS: [(Op, u32); 12] = [
    (Op::TransferSteps, 3),
    (Op::TransferBatch, 2),
    (Op::TransferPrepared, 3),
    (Op::ReadPrepared, 2),
    (Op::ReadSimple, 1),
    (Op::ReadTyped, 1),
    (Op::Pipelined, 1),
    (Op::PortalFetch, 1),
    (Op::WhoAmI, 2),
    (Op::Echo, 2),
    (Op::Reconnect, 1),
    (Op::RawStatements, 1),
];

const HOSTILE_OPS: [Op; 6] = [
    Op::SlowQuery,
    Op::SlowInTransaction,
    Op::Cancel,
    Op::Vanish,
    Op::VanishWhileRunning,
    Op::PreparedSet,
];

/// A transfer being attempted.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    id: i64,
    from: i32,
    to: i32,
    amount: i32,
}

struct Client {
    spec: ClientSpec,
    log: Log,
    rng: ChaCha8Rng,
    conn: Option<Conn>,
    op: u64,
    transfers: i64,
    /// This client changed its own session settings (hostile SET).
    /// The statement_timeout this client's queries must run under: its startup value after a
    /// connect, the value of its last successful SET after that, `None` when a SET's outcome
    /// is unknown (the call failed or timed out).
    expected_timeout: Option<String>,
}

/// Turns a tokio-postgres error into what the trace records.
pub(crate) fn classify(error: &tokio_postgres::Error) -> Outcome {
    if let Some(db) = error.as_db_error() {
        return Outcome::Db {
            code: db.code().code().to_string(),
            severity: db.severity().to_string(),
            message: db.message().to_string(),
        };
    }
    let text = error.to_string();
    if error.is_closed()
        || text == "error communicating with the server"
        || text == "error connecting to server"
    {
        return Outcome::Closed;
    }
    Outcome::Client(text)
}

/// Runs `future` within `limit` and classifies how it ended.
async fn timed<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    describe: impl FnOnce(&T) -> String,
) -> (Outcome, Option<T>) {
    match tokio::time::timeout(limit, future).await {
        Err(_) => (Outcome::Timeout, None),
        Ok(Ok(value)) => (Outcome::Ok(describe(&value)), Some(value)),
        Ok(Err(error)) => (classify(&error), None),
    }
}

/// Every value of the first row.
fn row_values(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

impl Client {
    fn name(&self) -> String {
        self.spec.label()
    }

    /// Runs `future` within the call timeout and records it. A call that leaves the
    /// connection unusable drops it.
    async fn call<T>(
        &mut self,
        what: impl Into<String>,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
        describe: impl FnOnce(&T) -> String,
    ) -> (Outcome, Option<T>) {
        let start = now();
        let (outcome, value) = timed(self.spec.call_timeout, future, describe).await;
        self.record_call(what, start, outcome.clone());
        (outcome, value)
    }

    /// Logs a finished call; one that leaves the connection unusable drops it.
    fn record_call(&mut self, what: impl Into<String>, start: Duration, outcome: Outcome) {
        if outcome.connection_lost()
            && let Some(conn) = self.conn.take()
        {
            conn.vanish();
        }
        self.log.call(CallRecord {
            client: self.spec.index,
            what: what.into(),
            start,
            end: now(),
            outcome,
        });
    }

    /// A simple query on the current connection (which must exist).
    async fn simple(&mut self, sql: &str) -> (Outcome, Option<Vec<SimpleQueryMessage>>) {
        let Some(conn) = self.conn.as_ref() else {
            return (Outcome::Closed, None);
        };
        let client = conn.client.clone();
        self.call(
            sql.to_string(),
            async move { client.simple_query(sql).await },
            |rows| first_value(rows).unwrap_or_default(),
        )
        .await
    }

    async fn step(&mut self) {
        if self.conn.is_none() && !self.connect().await {
            tokio::time::sleep(RECONNECT_BACKOFF).await;
            return;
        }
        match self.choose() {
            Op::TransferSteps => self.transfer_steps().await,
            Op::TransferBatch => self.transfer_batch().await,
            Op::TransferPrepared => self.transfer_prepared().await,
            Op::ReadPrepared => self.read_prepared().await,
            Op::ReadSimple => self.read_simple().await,
            Op::WhoAmI => self.who_am_i().await,
            Op::Echo => self.echo().await,
            Op::ReadTyped => self.read_typed().await,
            Op::Pipelined => self.pipelined().await,
            Op::PortalFetch => self.portal_fetch().await,
            Op::SlowInTransaction => self.slow_in_transaction().await,
            Op::VanishWhileRunning => self.vanish_while_running().await,
            Op::PreparedSet => self.prepared_set().await,
            Op::RawStatements => self.raw_statements().await,
            Op::Reconnect => {
                if let Some(conn) = self.conn.take() {
                    conn.close().await;
                }
            }
            Op::SlowQuery => self.slow_query().await,
            Op::Cancel => self.cancel().await,
            Op::Vanish => self.vanish().await,
        }
    }

    fn choose(&mut self) -> Op {
        if self.spec.hostile_rate > 0.0 && self.rng.gen_bool(self.spec.hostile_rate) {
            return HOSTILE_OPS[self.rng.gen_range(0..HOSTILE_OPS.len())];
        }
        let total: u32 = OPS.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.gen_range(0..total);
        for (op, weight) in OPS {
            if pick < weight {
                return op;
            }
            pick -= weight;
        }
        Op::ReadSimple
    }

    async fn connect(&mut self) -> bool {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.spec.user)
            .password(&self.spec.password)
            .dbname(&self.spec.database)
            .application_name(self.spec.application_name());
        let start = now();
        let (outcome, connected) =
            connect_to_proxy(config, &self.spec.proxy_host, self.spec.call_timeout).await;
        self.record_call("connect", start, outcome);
        let Some((client, connection)) = connected else {
            return false;
        };
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        self.expected_timeout = Some(self.startup_timeout());
        self.conn = Some(Conn {
            client: Rc::new(client),
            task,
            read: None,
            update: None,
            insert: None,
            echo: None,
            set: None,
        });
        true
    }

    /// The statement in `slot`, prepared on first use.
    async fn prepared(
        &mut self,
        slot: fn(&mut Conn) -> &mut Option<Statement>,
        sql: &'static str,
    ) -> Option<Statement> {
        let conn = self.conn.as_mut()?;
        if let Some(statement) = slot(conn) {
            return Some(statement.clone());
        }
        let client = conn.client.clone();
        let (_, statement) = self
            .call(
                format!("prepare {sql}"),
                async move { client.prepare(sql).await },
                |_| String::new(),
            )
            .await;
        let statement = statement?;
        if let Some(conn) = self.conn.as_mut() {
            *slot(conn) = Some(statement.clone());
        }
        Some(statement)
    }

    fn new_transfer(&mut self) -> Transfer {
        self.transfers += 1;
        let accounts = self.spec.accounts.max(2);
        let from = self.rng.gen_range(1..=accounts);
        let mut to = self.rng.gen_range(1..accounts);
        if to >= from {
            to += 1;
        }
        Transfer {
            id: (self.spec.index as i64 + 1) * TRANSFER_ID_STRIDE + self.transfers,
            from,
            to,
            amount: self.rng.gen_range(1..=MAX_AMOUNT),
        }
    }

    fn record(&self, transfer: Transfer, fate: Fate) {
        self.log.transfer(
            now(),
            TransferRecord {
                id: transfer.id,
                from: transfer.from,
                to: transfer.to,
                amount: transfer.amount,
                fate,
                client: self.spec.index,
            },
        );
    }

    /// What a COMMIT's outcome says about the transaction.
    fn commit_fate(outcome: &Outcome) -> Fate {
        match outcome {
            Outcome::Ok(_) => Fate::Committed,
            Outcome::Db { severity, .. } if severity != "FATAL" => Fate::Aborted,
            _ => Fate::Unknown,
        }
    }

    /// After a failed statement in a transaction: roll back if the connection still works.
    async fn abort(&mut self, transfer: Transfer) {
        if self.conn.is_some() {
            self.simple("ROLLBACK").await;
        }
        self.record(transfer, Fate::Aborted);
    }

    /// BEGIN, the writes as separate simple queries with backend checks, COMMIT.
    async fn transfer_steps(&mut self) {
        let t = self.new_transfer();
        let statements = [
            "BEGIN".to_string(),
            sql::PID.to_string(),
            format!(
                "UPDATE accounts SET balance = balance - {} WHERE id = {}",
                t.amount, t.from
            ),
            format!(
                "UPDATE accounts SET balance = balance + {} WHERE id = {}",
                t.amount, t.to
            ),
            format!(
                "INSERT INTO transfers (id, from_id, to_id, amount) VALUES ({}, {}, {}, {})",
                t.id, t.from, t.to, t.amount
            ),
            sql::PID.to_string(),
        ];
        let mut pids = Vec::new();
        for statement in &statements {
            let (outcome, rows) = self.simple(statement).await;
            if !outcome.is_ok() {
                return self.abort(t).await;
            }
            if statement == sql::PID {
                pids.push(rows.as_deref().and_then(first_value));
            }
        }
        self.log.checked(Invariant::OneBackendPerTransaction);
        if pids.first() != pids.last() {
            let detail = format!(
                "client-{} transfer {}: origin backend changed inside a transaction ({pids:?})",
                self.spec.index, t.id
            );
            self.observe(Invariant::OneBackendPerTransaction, detail);
        }
        let (outcome, _) = self.simple("COMMIT").await;
        self.record(t, Self::commit_fate(&outcome));
    }

    /// The whole transfer as one multi-statement simple query.
    async fn transfer_batch(&mut self) {
        let t = self.new_transfer();
        let batch = format!(
            "BEGIN; UPDATE accounts SET balance = balance - {a} WHERE id = {f}; \
             UPDATE accounts SET balance = balance + {a} WHERE id = {to}; \
             INSERT INTO transfers VALUES ({id}, {f}, {to}, {a}); COMMIT",
            a = t.amount,
            f = t.from,
            to = t.to,
            id = t.id
        );
        let (outcome, _) = self.simple(&batch).await;
        let fate = Self::commit_fate(&outcome);
        if fate == Fate::Aborted && self.conn.is_some() {
            self.simple("ROLLBACK").await;
        }
        self.record(t, fate);
    }

    /// BEGIN, prepared UPDATEs and INSERT (extended protocol), COMMIT.
    async fn transfer_prepared(&mut self) {
        let t = self.new_transfer();
        let update = self.prepared(|c| &mut c.update, sql::UPDATE).await;
        let insert = self.prepared(|c| &mut c.insert, sql::INSERT).await;
        let (Some(update), Some(insert)) = (update, insert) else {
            return self.record(t, Fate::Aborted);
        };
        if !self.simple("BEGIN").await.0.is_ok() {
            return self.abort(t).await;
        }
        let writes: [(String, Statement, Vec<Param>); 3] = [
            (
                format!("execute update(-{}, {})", t.amount, t.from),
                update.clone(),
                vec![Param::Int(-t.amount), Param::Int(t.from)],
            ),
            (
                format!("execute update({}, {})", t.amount, t.to),
                update,
                vec![Param::Int(t.amount), Param::Int(t.to)],
            ),
            (
                format!(
                    "execute insert({}, {}, {}, {})",
                    t.id, t.from, t.to, t.amount
                ),
                insert,
                vec![
                    Param::Big(t.id),
                    Param::Int(t.from),
                    Param::Int(t.to),
                    Param::Int(t.amount),
                ],
            ),
        ];
        for (what, statement, params) in writes {
            if !self.execute(what, statement, params).await.is_ok() {
                return self.abort(t).await;
            }
        }
        let (outcome, _) = self.simple("COMMIT").await;
        self.record(t, Self::commit_fate(&outcome));
    }

    async fn execute(&mut self, what: String, statement: Statement, params: Vec<Param>) -> Outcome {
        let Some(conn) = self.conn.as_ref() else {
            return Outcome::Closed;
        };
        let client = conn.client.clone();
        let future = async move {
            let refs: Vec<&SqlParam> = params.iter().map(Param::as_sql).collect();
            client.execute(&statement, &refs).await
        };
        self.call(what, future, |rows| format!("{rows} row(s)"))
            .await
            .0
    }

    async fn read_prepared(&mut self) {
        let Some(read) = self.prepared(|c| &mut c.read, sql::READ).await else {
            return;
        };
        let id = self.rng.gen_range(1..=self.spec.accounts);
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let client = conn.client.clone();
        let future = async move { client.query_opt(&read, &[&id]).await };
        self.call(format!("read balance {id} (prepared)"), future, |row| {
            row.as_ref()
                .map(|r| r.get::<_, i32>(0).to_string())
                .unwrap_or_else(|| "no row".into())
        })
        .await;
    }

    async fn read_simple(&mut self) {
        let id = self.rng.gen_range(1..=self.spec.accounts);
        self.simple(&format!("SELECT balance FROM accounts WHERE id = {id}"))
            .await;
    }

    /// The origin must see this client's own application_name.
    async fn who_am_i(&mut self) {
        let (outcome, rows) = self.simple(sql::WHOAMI).await;
        if !outcome.is_ok() {
            return;
        }
        let values = rows.as_deref().map(row_values).unwrap_or_default();
        let expected = [
            self.spec.application_name(),
            crate::fake_pg::show_milliseconds(self.spec.statement_timeout.as_millis() as u64),
        ];
        let name = values.first().cloned().unwrap_or_default();
        self.log.checked(Invariant::SessionIsolation);
        if name != expected[0] {
            let detail = format!(
                "{} expected application_name {:?} from `{}` and got {name:?}",
                self.name(),
                expected[0],
                sql::WHOAMI,
            );
            self.observe(Invariant::SessionIsolation, detail);
        }
        let Some(want) = self.expected_timeout.clone() else {
            return;
        };
        let seen = values.get(1).cloned().unwrap_or_default();
        let invariant = if want == expected[1] {
            // Still its startup value: another session's SET would show up here.
            Invariant::SessionIsolation
        } else {
            Invariant::SettingsFollowClient
        };
        self.log.checked(invariant);
        if seen != want {
            let detail = format!(
                "{} expected statement_timeout {want:?} (its own last setting) from `{}` and got {seen:?}",
                self.name(),
                sql::WHOAMI,
            );
            self.observe(invariant, detail);
        }
    }

    /// The statement_timeout a new session of this client starts with.
    fn startup_timeout(&self) -> String {
        crate::fake_pg::show_milliseconds(self.spec.statement_timeout.as_millis() as u64)
    }

    /// Prepares a SET in one transaction and runs it in a later one, on whichever
    /// connection the client then has. Afterwards this client's own settings are its
    /// business; nobody else may ever see them.
    async fn prepared_set(&mut self) {
        self.log.hostile(FaultKind::SessionState);
        let Some(set) = self.prepared(|c| &mut c.set, sql::SET_TIMEOUT).await else {
            return;
        };
        let outcome = self
            .execute(format!("execute `{}`", sql::SET_TIMEOUT), set, Vec::new())
            .await;
        self.expected_timeout = outcome.is_ok().then(|| sql::SET_TIMEOUT_SHOWN.to_string());
    }

    /// A value sent through a prepared statement must come back to its sender.
    async fn echo(&mut self) {
        let Some(echo) = self.prepared(|c| &mut c.echo, sql::ECHO).await else {
            return;
        };
        let token = format!("{}-op-{}", self.name(), self.op);
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let client = conn.client.clone();
        let sent = token.clone();
        let future = async move { client.query_one(&echo, &[&sent]).await };
        let (_, row) = self
            .call(format!("echo {token}"), future, |row| {
                row.get::<_, String>(0)
            })
            .await;
        if let Some(row) = row {
            let seen: String = row.get(0);
            self.log.checked(Invariant::SessionIsolation);
            if seen != token {
                let detail = format!("{} sent \"{token}\" and got back \"{seen}\"", self.name());
                self.observe(Invariant::SessionIsolation, detail);
            }
        }
    }

    /// `pg_sleep` around the statement timeout: longer ones must end in 57014.
    async fn slow_query(&mut self) {
        self.log.hostile(FaultKind::SlowQuery);
        let limit = self.spec.statement_timeout.as_millis() as u64;
        let millis = self.rng.gen_range(limit / 4..=limit * 2);
        let seconds = millis as f64 / 1000.0;
        let (outcome, _) = self.simple(&format!("SELECT pg_sleep({seconds:.3})")).await;
        let too_long = Duration::from_millis(millis) > self.spec.statement_timeout;
        if too_long && !outcome.connection_lost() {
            self.log.checked(Invariant::StatementTimeout);
        }
        let early = Duration::from_millis(millis) + TIMEOUT_MARGIN < self.spec.statement_timeout;
        let startup_timeout = Some(self.startup_timeout());
        if early && self.expected_timeout == startup_timeout && !outcome.connection_lost() {
            self.log.checked(Invariant::StatementTimeout);
            if outcome.code() == Some("57014")
                && !matches!(&outcome, Outcome::Db { message, .. } if message == crate::invariants::USER_CANCEL_MESSAGE)
            {
                let detail = format!(
                    "{} was stopped after {millis} ms of sleep although the statement timeout is {limit} ms (a setting leaked into its session?)",
                    self.name()
                );
                self.observe(Invariant::StatementTimeout, detail);
            }
        }
        if outcome.is_ok() && too_long {
            let detail = format!(
                "{} slept {millis} ms although the statement timeout is {limit} ms",
                self.name()
            );
            self.observe(Invariant::StatementTimeout, detail);
        }
    }

    /// Cancels its own `pg_sleep` through the proxy; waits for the cancel to finish before
    /// doing anything else, so a cancel can only ever hit that query.
    async fn cancel(&mut self) {
        self.log.hostile(FaultKind::Cancel);
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let token = conn.client.cancel_token();
        let delay = Duration::from_millis(self.rng.gen_range(CANCEL_DELAY.0..=CANCEL_DELAY.1));
        let host = self.spec.proxy_host.clone();
        let timeout = self.spec.call_timeout;
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let send = async {
                let stream = turmoil::net::TcpStream::connect((host.as_str(), PROXY_PORT)).await;
                match stream {
                    Ok(stream) => token.cancel_query_raw(stream, NoTls).await.is_ok(),
                    Err(_) => false,
                }
            };
            tokio::time::timeout(timeout, send).await.unwrap_or(false)
        });
        let seconds = self.spec.statement_timeout.as_secs_f64() * CANCEL_TARGET_SLEEP;
        self.simple(&format!("SELECT pg_sleep({seconds:.3}) {CANCEL_TARGET}"))
            .await;
        let _ = canceller.await;
    }

    /// BEGIN, a write, then the socket just closes: the proxy must roll it back.
    async fn vanish(&mut self) {
        self.log.hostile(FaultKind::ClientVanished);
        let t = self.new_transfer();
        let steps = [
            "BEGIN".to_string(),
            format!(
                "UPDATE accounts SET balance = balance - {} WHERE id = {}",
                t.amount, t.from
            ),
            format!(
                "INSERT INTO transfers VALUES ({}, {}, {}, {})",
                t.id, t.from, t.to, t.amount
            ),
        ];
        for statement in &steps {
            if !self.simple(statement).await.0.is_ok() {
                break;
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.vanish();
        }
        self.log
            .line(now(), format!("{} vanished mid-transaction", self.name()));
        self.record(t, Fate::Aborted);
    }

    /// A read through the unnamed statement (Parse, Bind, Execute, Sync in one round trip).
    async fn read_typed(&mut self) {
        let id = self.rng.gen_range(1..=self.spec.accounts);
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let client = conn.client.clone();
        let future = async move {
            client
                .query_typed(sql::READ, &[(&id, tokio_postgres::types::Type::INT4)])
                .await
        };
        self.call(format!("read balance {id} (unnamed)"), future, |rows| {
            rows.first()
                .map(|r| r.get::<_, i32>(0).to_string())
                .unwrap_or_else(|| "no row".into())
        })
        .await;
    }

    /// Two reads and an echo in flight at once on one connection.
    async fn pipelined(&mut self) {
        let read = self.prepared(|c| &mut c.read, sql::READ).await;
        let echo = self.prepared(|c| &mut c.echo, sql::ECHO).await;
        let (Some(read), Some(echo), Some(conn)) = (read, echo, self.conn.as_ref()) else {
            return;
        };
        let (a, b) = (
            self.rng.gen_range(1..=self.spec.accounts),
            self.rng.gen_range(1..=self.spec.accounts),
        );
        let token = format!("{}-pipelined-{}", self.name(), self.op);
        let sent = token.clone();
        let client = conn.client.clone();
        let future = async move {
            let first_params: [&SqlParam; 1] = [&a];
            let second_params: [&SqlParam; 1] = [&b];
            let echo_params: [&SqlParam; 1] = [&sent];
            let (first, second, echoed) = tokio::join!(
                client.query_opt(&read, &first_params),
                client.query_opt(&read, &second_params),
                client.query_one(&echo, &echo_params),
            );
            Ok((first?, second?, echoed?.get::<_, String>(0)))
        };
        let (_, value) = self
            .call(
                format!("pipelined reads {a}, {b} and echo"),
                future,
                |(x, y, e)| {
                    let show = |row: &Option<tokio_postgres::Row>| {
                        row.as_ref()
                            .map_or("no row".to_string(), |r| r.get::<_, i32>(0).to_string())
                    };
                    format!("{} {} {e}", show(x), show(y))
                },
            )
            .await;
        if let Some((_, _, echoed)) = value {
            self.log.checked(Invariant::SessionIsolation);
            if echoed != token {
                let detail = format!(
                    "{} pipelined \"{token}\" and got back \"{echoed}\"",
                    self.name()
                );
                self.observe(Invariant::SessionIsolation, detail);
            }
        }
    }

    /// In a transaction, all accounts through a portal, [`PORTAL_BATCH`] rows per Execute
    /// (PortalSuspended in between); they must add up to the bank's total.
    async fn portal_fetch(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let start = now();
        let (outcome, value) = match Rc::get_mut(&mut conn.client) {
            Some(client) => {
                timed(
                    self.spec.call_timeout,
                    fetch_all(client),
                    |(rows, sum, fetches)| format!("{rows} rows in {fetches} fetches, sum {sum}"),
                )
                .await
            }
            None => (Outcome::Client("connection is shared".into()), None),
        };
        self.conn = Some(conn);
        self.record_call("portal fetch of all accounts", start, outcome);
        if let Some((rows, sum, _)) = value {
            let total = self.spec.total_balance();
            self.log.checked(Invariant::BalanceConserved);
            if sum != total || rows != self.spec.accounts as usize {
                let detail = format!(
                    "{} read {rows} accounts holding {sum} in one transaction; the bank holds {total} in {}",
                    self.name(),
                    self.spec.accounts
                );
                self.observe(Invariant::BalanceConserved, detail);
            }
        }
    }

    /// A transfer whose transaction runs into the statement timeout; the client then ends it
    /// with COMMIT (which must report ROLLBACK) or ROLLBACK. Nothing may be committed.
    async fn slow_in_transaction(&mut self) {
        self.log.hostile(FaultKind::SlowQuery);
        let t = self.new_transfer();
        let seconds = self.spec.statement_timeout.as_secs_f64() * OVERLONG_SLEEP;
        let steps = [
            "BEGIN".to_string(),
            format!(
                "UPDATE accounts SET balance = balance - {} WHERE id = {}",
                t.amount, t.from
            ),
            format!(
                "INSERT INTO transfers VALUES ({}, {}, {}, {})",
                t.id, t.from, t.to, t.amount
            ),
            format!("SELECT pg_sleep({seconds:.3})"),
        ];
        for statement in &steps {
            let (outcome, _) = self.simple(statement).await;
            if statement.starts_with("SELECT pg_sleep") && !outcome.connection_lost() {
                self.log.checked(Invariant::StatementTimeout);
                if outcome.is_ok() {
                    let detail = format!(
                        "{} slept {seconds:.3} s in a transaction past the statement timeout",
                        self.name()
                    );
                    self.observe(Invariant::StatementTimeout, detail);
                }
            }
            if !outcome.is_ok() {
                break;
            }
        }
        if self.conn.is_some() {
            let end = if self.rng.gen_bool(0.5) {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            self.simple(end).await;
        }
        self.record(t, Fate::Aborted);
    }

    /// BEGIN, a write, a long statement; the client vanishes while it runs.
    async fn vanish_while_running(&mut self) {
        self.log.hostile(FaultKind::ClientVanished);
        let t = self.new_transfer();
        let insert = format!(
            "INSERT INTO transfers VALUES ({}, {}, {}, {})",
            t.id, t.from, t.to, t.amount
        );
        let mut ok = true;
        for statement in ["BEGIN", insert.as_str()] {
            ok = ok && self.simple(statement).await.0.is_ok();
        }
        if ok && let Some(conn) = self.conn.as_ref() {
            let client = conn.client.clone();
            let patience = Duration::from_millis(self.rng.gen_range(10..=500));
            let seconds = self.spec.statement_timeout.as_secs_f64() * INTERRUPTED_SLEEP;
            let sleep = format!("SELECT pg_sleep({seconds:.3})");
            let _ = tokio::time::timeout(patience, client.simple_query(&sleep)).await;
        }
        if let Some(conn) = self.conn.take() {
            conn.vanish();
        }
        self.log.line(
            now(),
            format!("{} vanished while a statement ran", self.name()),
        );
        self.record(t, Fate::Aborted);
    }

    fn observe(&self, invariant: Invariant, detail: String) {
        self.log.observe(now(), Observation { invariant, detail });
    }
}

/// BEGIN, a portal over every account fetched [`PORTAL_BATCH`] rows at a time, COMMIT:
/// (rows, sum of balances, Executes).
async fn fetch_all(
    client: &mut tokio_postgres::Client,
) -> Result<(usize, i64, usize), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let portal = transaction.bind(sql::ACCOUNTS, &[]).await?;
    let (mut rows, mut sum, mut fetches) = (0, 0i64, 0);
    loop {
        let batch = transaction.query_portal(&portal, PORTAL_BATCH).await?;
        fetches += 1;
        rows += batch.len();
        sum += batch
            .iter()
            .map(|r| i64::from(r.get::<_, i32>(1)))
            .sum::<i64>();
        if batch.len() < PORTAL_BATCH as usize {
            break;
        }
    }
    transaction.commit().await?;
    Ok((rows, sum, fetches))
}

/// A query parameter as tokio-postgres takes it.
type SqlParam = dyn tokio_postgres::types::ToSql + Sync;

/// A parameter value for the prepared writes.
#[derive(Debug, Clone, Copy)]
enum Param {
    Int(i32),
    Big(i64),
}

impl Param {
    fn as_sql(&self) -> &SqlParam {
        match self {
            Param::Int(value) => value,
            Param::Big(value) => value,
        }
    }
}
