//! Scripted sessions: a client that runs a fixed script of SQL through the proxy, over and
//! over until the workload ends, and checks each statement's outcome against the script.
//!
//! # Script format (`testdata/sim/sessions/*.sql`)
//!
//! - one SQL statement per line, sent as one simple Query (tokio-postgres `simple_query`);
//! - blank lines and `--` comment lines are ignored, except:
//! - `-- expect: SQLSTATE` on the line before a statement: that statement must fail with
//!   this SQLSTATE;
//! - `-- value: TEXT` on the line before a statement: it must succeed and return TEXT as the
//!   first value of its first row (for `SHOW`: a session seeing another's settings, or losing
//!   its own, is a violation of [`Invariant::SessionIsolation`]);
//! - `-- reconnect`: close the connection politely and open a new one (every connection
//!   starts with `application_name` `script-` and the file name without `.sql`);
//! - `:id` in a statement stands for a transfer id unique to this run of the script (the same
//!   within one run), so a script can commit transfers and still run again.
//!
//! Only SQL the fake origin supports may appear (see [`crate::fake_pg`]). A script that
//! commits writes must keep the books the invariants check: every committed
//! `INSERT INTO transfers VALUES (:id, from, to, amount)` together with its two `UPDATE`s,
//! and no other committed balance change.
//!
//! # Checks
//!
//! Every statement is a call in the trace (`script NAME:LINE SQL`), so the generated
//! workload's invariants apply to it: no hang, only expected errors. A statement marked
//! `-- expect: X` that fails with X is recorded as a success (`ok expected X: message`), so
//! the invariants do not count the script's own errors; one that succeeds is a violation of
//! [`Invariant::ExpectedErrorsOnly`], one that fails with another code is recorded as that
//! error (a violation unless it is one the faults explain). A statement without a mark must
//! succeed; its failure is recorded as it came, and judged the same way. When a failure is
//! explained (a lost connection, a timeout, 58000 from the proxy, 53300, 57014, 57P01 …) the
//! rest of the run is skipped: the client closes its connection (the proxy must roll back an
//! open block) and starts the script again on a new one, so every run starts from a fresh
//! session or from where the previous complete run left it. A run that ends inside a block
//! is rolled back.
//!
//! Transfers a script inserts are recorded with their fate, like the generated workload's:
//! committed when the transaction's COMMIT succeeded in a block that did not fail (or the
//! INSERT succeeded outside a block), aborted when its block failed, was rolled back or
//! abandoned, unknown when the answer that would tell was lost; an INSERT refused as a
//! duplicate (23505) records nothing. So durability and atomicity cover script transfers too.

use super::{CLOSE_GRACE, RECONNECT_BACKOFF, TRANSFER_ID_STRIDE, classify, now};
use crate::invariants::Invariant;
use crate::trace::{CallRecord, Fate, Log, Observation, Outcome, TransferRecord};
use std::collections::BTreeSet;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Where the scenario `scripted` finds its scripts.
pub const SESSIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sim/sessions");

/// SQLSTATE of a duplicate transfer id.
pub const DUPLICATE_KEY: &str = "23505";

/// Pause between two statements of a script.
pub const STATEMENT_PAUSE: Duration = Duration::from_millis(5);

/// Pause between two runs of a script.
pub const RUN_PAUSE: Duration = Duration::from_millis(20);

/// What a script line does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this statement; it must fail with `expect` when given, succeed otherwise.
    Statement {
        /// Line number in the file (1-based).
        line: usize,
        /// The SQL (with `:id` not yet substituted).
        sql: String,
        /// The SQLSTATE it must fail with.
        expect: Option<String>,
        /// The first value of the first row it must return.
        value: Option<String>,
    },
    /// Close the connection and open a new one.
    Reconnect,
}

/// A parsed script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// File name (`transfer.sql`).
    pub name: String,
    /// Its steps in order.
    pub steps: Vec<Step>,
}

impl Script {
    /// Parses a script's text.
    pub fn parse(name: &str, text: &str) -> Result<Script, String> {
        let mut steps = Vec::new();
        let mut expect: Option<(usize, String)> = None;
        let mut value: Option<(usize, String)> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix("--") {
                let comment = comment.trim();
                if let Some(code) = comment.strip_prefix("expect:") {
                    let code = code.trim();
                    let valid = code.len() == 5
                        && code
                            .chars()
                            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
                    if !valid {
                        return Err(format!("{name}:{line}: `{code}` is not a SQLSTATE"));
                    }
                    if let Some((at, _)) = &expect {
                        return Err(format!("{name}:{line}: a second expect (first at {at})"));
                    }
                    expect = Some((line, code.to_string()));
                } else if let Some(text) = comment.strip_prefix("value:") {
                    if let Some((at, _)) = &value {
                        return Err(format!("{name}:{line}: a second value (first at {at})"));
                    }
                    value = Some((line, text.trim().to_string()));
                } else if comment == "reconnect" {
                    if let Some((at, _)) = expect.as_ref().or(value.as_ref()) {
                        return Err(format!("{name}:{at}: expect or value before a reconnect"));
                    }
                    steps.push(Step::Reconnect);
                }
                continue;
            }
            steps.push(Step::Statement {
                line,
                sql: trimmed.to_string(),
                expect: expect.take().map(|(_, code)| code),
                value: value.take().map(|(_, text)| text),
            });
            if let Some(Step::Statement {
                line,
                expect: Some(_),
                value: Some(_),
                ..
            }) = steps.last()
            {
                return Err(format!("{name}:{line}: both an expected error and a value"));
            }
        }
        if let Some((at, _)) = expect.or(value) {
            return Err(format!(
                "{name}:{at}: expect or value without a statement after it"
            ));
        }
        if !steps.iter().any(|s| matches!(s, Step::Statement { .. })) {
            return Err(format!("{name}: no statement"));
        }
        Ok(Script {
            name: name.to_string(),
            steps,
        })
    }

    /// The `(script, line)` of every statement.
    pub fn statements(&self) -> Vec<(String, usize)> {
        self.steps
            .iter()
            .filter_map(|step| match step {
                Step::Statement { line, .. } => Some((self.name.clone(), *line)),
                Step::Reconnect => None,
            })
            .collect()
    }
}

/// Every `*.sql` script in `dir`, in file-name order.
pub fn load(dir: &Path) -> Result<Vec<Script>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("scripts in {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    paths.sort();
    let mut scripts = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        scripts.push(Script::parse(&name, &text)?);
    }
    if scripts.is_empty() {
        return Err(format!("no *.sql script in {}", dir.display()));
    }
    Ok(scripts)
}

/// The scripts of [`SESSIONS_DIR`].
pub fn load_default() -> Result<Vec<Script>, String> {
    load(Path::new(SESSIONS_DIR))
}

/// The `(script, line)` of every script statement that a trace shows conforming to its script
/// (`-> ok`: succeeded, or failed with the expected SQLSTATE).
pub fn conformed(trace: &[String]) -> BTreeSet<(String, usize)> {
    let mut seen = BTreeSet::new();
    for line in trace {
        let Some((_, rest)) = line.split_once(" script ") else {
            continue;
        };
        if !line.contains(" -> ok") {
            continue;
        }
        let Some((location, _)) = rest.split_once(' ') else {
            continue;
        };
        if let Some((name, number)) = location.rsplit_once(':')
            && let Ok(number) = number.parse()
        {
            seen.insert((name.to_string(), number));
        }
    }
    seen
}

/// What one scripted client needs to know.
#[derive(Debug, Clone)]
pub struct ScriptSpec {
    /// Index (host `client-<index>`; after the generated clients').
    pub index: usize,
    /// The script.
    pub script: Script,
    /// Host name of the proxy.
    pub proxy_host: String,
    /// Login.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
    /// Start runs until this simulated time.
    pub until: Duration,
    /// Bound of every call.
    pub call_timeout: Duration,
}

/// The `application_name` a script's client connects with: `script-` and the file name
/// without `.sql` (`settings.sql` → `script-settings`), so a script can check it.
pub fn application_name(script: &str) -> String {
    format!("script-{}", script.trim_end_matches(".sql"))
}

/// A transfer a script inserted.
#[derive(Debug, Clone, Copy)]
struct Inserted {
    id: i64,
    from: i32,
    to: i32,
    amount: i32,
}

/// The four values of `INSERT INTO transfers ... VALUES (id, from, to, amount)`.
fn inserted_transfer(sql: &str) -> Option<Inserted> {
    let lower = sql.to_ascii_lowercase();
    if !lower.starts_with("insert into transfers") {
        return None;
    }
    let values = &lower[lower.rfind("values")?..];
    let inner = values.get(values.find('(')? + 1..values.rfind(')')?)?;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let [id, from, to, amount] = parts.as_slice() else {
        return None;
    };
    Some(Inserted {
        id: id.parse().ok()?,
        from: from.parse().ok()?,
        to: to.parse().ok()?,
        amount: amount.parse().ok()?,
    })
}

/// The first word of a statement, upper-cased.
fn keyword(sql: &str) -> String {
    sql.split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches(';')
        .to_ascii_uppercase()
}

/// What became of one statement, for the run.
enum Verdict {
    /// As the script says: go on.
    AsScripted,
    /// Not as scripted: the rest of the run is skipped.
    Abandon,
}

struct Conn {
    client: Rc<tokio_postgres::Client>,
    task: JoinHandle<()>,
}

struct ScriptClient {
    spec: ScriptSpec,
    log: Log,
    conn: Option<Conn>,
    run: i64,
    in_block: bool,
    block_failed: bool,
    pending: Vec<Inserted>,
}

/// Runs one scripted client until its workload time is over.
pub async fn run(spec: ScriptSpec, log: Log) -> turmoil::Result {
    let mut client = ScriptClient {
        spec,
        log,
        conn: None,
        run: 0,
        in_block: false,
        block_failed: false,
        pending: Vec::new(),
    };
    while now() < client.spec.until {
        client.run += 1;
        client.run_once().await;
        tokio::time::sleep(RUN_PAUSE).await;
    }
    client.close().await;
    Ok(())
}

impl ScriptClient {
    fn name(&self) -> String {
        format!("client-{}", self.spec.index)
    }

    async fn run_once(&mut self) {
        let steps = self.spec.script.steps.clone();
        for step in &steps {
            if now() >= self.spec.until {
                break;
            }
            if self.conn.is_none() && !self.connect().await {
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                break;
            }
            match step {
                Step::Reconnect => self.close().await,
                Step::Statement {
                    line,
                    sql,
                    expect,
                    value,
                } => {
                    let sql = sql.replace(":id", &self.transfer_id().to_string());
                    let verdict = self
                        .statement(*line, &sql, expect.as_deref(), value.as_deref())
                        .await;
                    if let Verdict::Abandon = verdict {
                        // The session is not where the script left it (a SET may have run
                        // and a later statement not): the next run starts on a new one.
                        self.close().await;
                        break;
                    }
                    tokio::time::sleep(STATEMENT_PAUSE).await;
                }
            }
        }
        if self.in_block {
            self.rollback().await;
        }
    }

    /// Closes the connection politely (Terminate): an open block is the proxy's to roll back.
    async fn close(&mut self) {
        self.abandon_block(Fate::Aborted);
        if let Some(conn) = self.conn.take() {
            drop(conn.client);
            let _ = tokio::time::timeout(CLOSE_GRACE, conn.task).await;
        }
    }

    fn transfer_id(&self) -> i64 {
        (self.spec.index as i64 + 1) * TRANSFER_ID_STRIDE + self.run
    }

    async fn connect(&mut self) -> bool {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.spec.user)
            .password(&self.spec.password)
            .dbname(&self.spec.database)
            .application_name(application_name(&self.spec.script.name));
        let start = now();
        let (outcome, connected) =
            super::connect_to_proxy(config, &self.spec.proxy_host, self.spec.call_timeout).await;
        self.record("connect".into(), start, outcome);
        let Some((client, connection)) = connected else {
            return false;
        };
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        self.conn = Some(Conn {
            client: Rc::new(client),
            task,
        });
        true
    }

    /// Sends `sql`; returns its raw outcome and when it started.
    async fn send(&mut self, sql: &str) -> (Outcome, Duration) {
        let start = now();
        let Some(conn) = self.conn.as_ref() else {
            return (Outcome::Closed, start);
        };
        let client = conn.client.clone();
        let outcome =
            match tokio::time::timeout(self.spec.call_timeout, client.simple_query(sql)).await {
                Err(_) => Outcome::Timeout,
                Ok(Ok(messages)) => Outcome::Ok(
                    messages
                        .iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => {
                                row.get(0).map(str::to_string)
                            }
                            _ => None,
                        })
                        .unwrap_or_default(),
                ),
                Ok(Err(error)) => classify(&error),
            };
        (outcome, start)
    }

    /// Logs a call; one that leaves the connection unusable drops it, and with it the open
    /// transaction (which the proxy must roll back).
    fn record(&mut self, what: String, start: Duration, outcome: Outcome) {
        if outcome.connection_lost() {
            self.abandon_block(Fate::Aborted);
            if let Some(conn) = self.conn.take() {
                conn.task.abort();
            }
        }
        self.log.call(CallRecord {
            client: self.spec.index,
            what,
            start,
            end: now(),
            outcome,
        });
    }

    /// Runs one script statement, checks and records it.
    async fn statement(
        &mut self,
        line: usize,
        sql: &str,
        expect: Option<&str>,
        value: Option<&str>,
    ) -> Verdict {
        let what = match expect {
            Some(code) => format!(
                "script {}:{line} {sql} (expect {code})",
                self.spec.script.name
            ),
            None => format!("script {}:{line} {sql}", self.spec.script.name),
        };
        let (outcome, start) = self.send(sql).await;
        let keyword = keyword(sql);
        let inserted = inserted_transfer(sql);
        // The transaction bookkeeping, from what the statement did (before the connection
        // may be dropped by `record`).
        match (&outcome, keyword.as_str()) {
            (Outcome::Ok(_), "BEGIN" | "START") => {
                self.in_block = true;
                self.block_failed = false;
            }
            (_, "COMMIT" | "END") if self.in_block => {
                let fate = match &outcome {
                    Outcome::Ok(_) if !self.block_failed => Fate::Committed,
                    Outcome::Ok(_) => Fate::Aborted,
                    Outcome::Db { severity, .. } if severity != "FATAL" => Fate::Aborted,
                    _ => Fate::Unknown,
                };
                self.abandon_block(fate);
            }
            (_, "ROLLBACK" | "ABORT") if self.in_block => self.abandon_block(Fate::Aborted),
            (Outcome::Db { severity, .. }, _) if severity != "FATAL" && self.in_block => {
                self.block_failed = true;
            }
            _ => {}
        }
        if let Some(t) = inserted {
            match (&outcome, self.in_block) {
                (Outcome::Ok(_), true) => self.pending.push(t),
                (Outcome::Ok(_), false) => self.transfer(t, Fate::Committed),
                // A duplicate id inserted nothing (and may name a committed transfer).
                (outcome, _) if outcome.code() == Some(DUPLICATE_KEY) => {}
                // Whatever else happened inside a block, the block will not commit.
                (_, true) => self.transfer(t, Fate::Aborted),
                // Outside one, a lost answer may hide a commit.
                (_, false) => self.transfer(t, Fate::Unknown),
            }
        }
        match expect {
            Some(code) => {
                if let Outcome::Db {
                    code: got,
                    severity,
                    message,
                } = &outcome
                    && got == code
                    && severity != "FATAL"
                {
                    self.log.checked(Invariant::ExpectedErrorsOnly);
                    let shown = Outcome::Ok(format!("expected {code}: {message}"));
                    self.record(what, start, shown);
                    return Verdict::AsScripted;
                }
                if outcome.is_ok() {
                    self.log.checked(Invariant::ExpectedErrorsOnly);
                    let detail = format!(
                        "{} `{what}` succeeded; the script expects it to fail with {code}",
                        self.name()
                    );
                    self.log.observe(
                        now(),
                        Observation {
                            invariant: Invariant::ExpectedErrorsOnly,
                            detail,
                        },
                    );
                }
                // Another error: recorded as it came, so the invariants judge it (a fault's
                // error is expected, any other code is not).
                self.record(what, start, outcome);
                Verdict::Abandon
            }
            None => {
                let ok = outcome.is_ok();
                if let (Outcome::Ok(seen), Some(want)) = (&outcome, value) {
                    self.log.checked(Invariant::SessionIsolation);
                    if seen != want {
                        let detail = format!(
                            "{} `{what}` returned {seen:?}; the script expects {want:?}",
                            self.name()
                        );
                        self.log.observe(
                            now(),
                            Observation {
                                invariant: Invariant::SessionIsolation,
                                detail,
                            },
                        );
                        self.record(what, start, outcome);
                        return Verdict::Abandon;
                    }
                }
                self.record(what, start, outcome);
                // A failure is judged through its call record: a fault's error (lost
                // connection, timeout, 58000, 53300, 57014, 57P01 …) is expected, any other
                // is a violation. Either way the run stops here.
                if ok {
                    Verdict::AsScripted
                } else {
                    Verdict::Abandon
                }
            }
        }
    }

    /// The open block ends (or is lost): its inserted transfers get `fate`.
    fn abandon_block(&mut self, fate: Fate) {
        for t in std::mem::take(&mut self.pending) {
            self.transfer(t, fate);
        }
        self.in_block = false;
        self.block_failed = false;
    }

    /// Ends an open block after the run stopped early or left it open.
    async fn rollback(&mut self) {
        if self.conn.is_some() {
            let (outcome, start) = self.send("ROLLBACK").await;
            let what = format!("script {}: ROLLBACK after the run", self.spec.script.name);
            self.record(what, start, outcome);
        }
        self.abandon_block(Fate::Aborted);
    }

    fn transfer(&self, t: Inserted, fate: Fate) {
        self.log.transfer(
            now(),
            TransferRecord {
                id: t.id,
                from: t.from,
                to: t.to,
                amount: t.amount,
                fate,
                client: self.spec.index,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse() {
        let script = Script::parse(
            "t.sql",
            "-- a comment\n\nBEGIN\n-- expect: 42601\nSELECT nonsense\n-- reconnect\nSHOW application_name\n",
        )
        .expect("parses");
        assert_eq!(script.steps.len(), 4);
        assert_eq!(
            script.steps[1],
            Step::Statement {
                line: 5,
                sql: "SELECT nonsense".into(),
                expect: Some("42601".into()),
                value: None,
            }
        );
        assert_eq!(script.steps[2], Step::Reconnect);
        assert!(Script::parse("t.sql", "-- expect: 42601\n").is_err());
        assert!(Script::parse("t.sql", "-- expect: nope\nSELECT 1\n").is_err());
    }

    #[test]
    fn the_shipped_scripts_parse() {
        let scripts = load_default().expect("testdata/sim/sessions");
        assert!(scripts.len() >= 4, "{} scripts", scripts.len());
    }

    #[test]
    fn inserted_transfers_are_read_back() {
        let t = inserted_transfer("INSERT INTO transfers VALUES (7000001, 1, 2, 5)").expect("t");
        assert_eq!((t.id, t.from, t.to, t.amount), (7_000_001, 1, 2, 5));
        assert!(inserted_transfer("SELECT count(*) FROM transfers").is_none());
    }

    #[test]
    fn conforming_lines_are_found() {
        let trace = vec![
            "   1.000 client-9 script a.sql:3 SELECT 1 -> ok 1 (5ms)".to_string(),
            "   1.000 client-9 script a.sql:4 SELECT x (expect 42601) -> error 42601 x (5ms)"
                .to_string(),
        ];
        let seen = conformed(&trace);
        assert_eq!(seen.len(), 1);
        assert!(seen.contains(&("a.sql".to_string(), 3)));
    }
}
