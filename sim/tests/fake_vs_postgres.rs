//! The fake Postgres against a real Postgres: the same protocol scripts, sent to both, must
//! produce the same messages — names, command tags, SQLSTATEs, row descriptions (names and
//! types), row values, transaction statuses. Error *wording* is printed for review but not
//! compared (Postgres adds positions and details the fake does not).
//!
//! This keeps the fake honest for everything the simulator relies on. It needs Postgres
//! binaries (the `fixtures` crate): without them it skips loudly, and fails under `CI=true`.

mod common;

use common::Raw;
use elephant_protocol::{BackendMessage, Bind, FrontendMessage, Parse, Target};
use fixtures::{Postgres, PostgresConfig, Role};
use sim::fake_pg::{FakeAuth, FakePostgres};

/// Accounts in both databases.
const ACCOUNTS: i32 = 4;

const SETUP: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL); \
     INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 4) g; \
     CREATE TABLE transfers (id bigint PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL); \
     GRANT ALL ON accounts, transfers TO trust_user;";

fn query(sql: &str) -> FrontendMessage {
    FrontendMessage::Query(sql.into())
}

fn parse(name: &str, sql: &str) -> FrontendMessage {
    FrontendMessage::Parse(Parse {
        name: name.into(),
        query: sql.into(),
        parameter_types: Vec::new(),
    })
}

fn bind(portal: &str, statement: &str, params: &[&str]) -> FrontendMessage {
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

fn execute(portal: &str, max_rows: i32) -> FrontendMessage {
    FrontendMessage::Execute {
        portal: portal.into(),
        max_rows,
    }
}

fn describe(target: Target, name: &str) -> FrontendMessage {
    FrontendMessage::Describe {
        target,
        name: name.into(),
    }
}

/// The scripts: each runs on a fresh connection, one batch (ending in Sync or Query) at a
/// time.
fn scripts() -> Vec<(&'static str, Vec<Vec<FrontendMessage>>)> {
    use FrontendMessage::Sync;
    vec![
        (
            "failed transaction block",
            vec![
                vec![query("BEGIN")],
                vec![query(
                    "UPDATE accounts SET balance = balance + 5 WHERE id = 1",
                )],
                vec![query("SELECT nonsense")],
                vec![query("SELECT 1")],
                vec![query("COMMIT")],
                vec![query("SELECT balance FROM accounts WHERE id = 1")],
            ],
        ),
        (
            "implicit transaction of a multi-statement query",
            vec![
                vec![query(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = 2; SELECT current_setting('no.such_setting')",
                )],
                vec![query("SELECT balance FROM accounts WHERE id = 2")],
                vec![query(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = 2; SELECT 1",
                )],
                vec![query(
                    "SELECT balance FROM accounts WHERE id = 2; SELECT sum(balance) FROM accounts",
                )],
            ],
        ),
        (
            "warnings and empty queries",
            vec![
                vec![query("COMMIT")],
                vec![query("ROLLBACK")],
                vec![query("BEGIN; BEGIN")],
                vec![query("ROLLBACK")],
                vec![query("")],
                vec![query(";")],
                vec![query("SET LOCAL statement_timeout = 100")],
            ],
        ),
        (
            "settings",
            vec![
                vec![query("SET application_name = 'changed'")],
                vec![query("BEGIN; SET application_name TO other; ROLLBACK")],
                vec![query("SHOW application_name")],
                vec![query(
                    "SET statement_timeout = 1500; SHOW statement_timeout",
                )],
                vec![query(
                    "SET statement_timeout = '2min'; SHOW statement_timeout",
                )],
                vec![query("RESET statement_timeout; SHOW statement_timeout")],
                vec![query("SET nonsense = 1")],
                vec![query(
                    "SET myapp.owner = 'me'; SELECT current_setting('myapp.owner')",
                )],
                vec![query(
                    "BEGIN; SET LOCAL myapp.owner = 'tx'; SHOW myapp.owner; COMMIT; SHOW myapp.owner",
                )],
                vec![query("SET server_version = '1'")],
                vec![query("SHOW DateStyle")],
                vec![query("RESET ALL; SHOW application_name")],
            ],
        ),
        (
            "the proxy's reset query",
            vec![
                vec![query(
                    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
                     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
                     SET \"application_name\" = 'c1';",
                )],
                vec![query("BEGIN; DISCARD ALL")],
                vec![query("ROLLBACK")],
                vec![query("DISCARD ALL")],
            ],
        ),
        (
            "constants and casts",
            vec![
                vec![query(
                    "SELECT 1, 'a', true, NULL, 2 AS two, '5'::int, 7::text, 3000000000",
                )],
                vec![
                    parse("", "SELECT $1::text, pg_sleep(0)"),
                    describe(Target::Statement, ""),
                    Sync,
                ],
            ],
        ),
        (
            "extended protocol errors",
            vec![
                vec![parse("s1", "SELECT 1"), Sync],
                vec![
                    parse("s1", "SELECT 2"),
                    bind("", "s1", &[]),
                    execute("", 0),
                    Sync,
                ],
                vec![bind("", "missing", &[]), Sync],
                vec![execute("nope", 0), Sync],
                vec![parse("", "SELECT 1; SELECT 2"), Sync],
                vec![
                    parse("b", "SELECT balance FROM accounts WHERE id = $1"),
                    bind("", "b", &[]),
                    Sync,
                ],
                vec![bind("", "b", &["x"]), Sync],
                vec![bind("", "b", &["3"]), execute("", 0), Sync],
            ],
        ),
        (
            "portals with a row limit",
            vec![
                vec![
                    parse("", "SELECT id, balance FROM accounts ORDER BY id"),
                    bind("p", "", &[]),
                    describe(Target::Portal, "p"),
                    execute("p", 3),
                    execute("p", 3),
                    FrontendMessage::Close {
                        target: Target::Portal,
                        name: "p".into(),
                    },
                    Sync,
                ],
                vec![query("BEGIN")],
                vec![
                    parse("all", "SELECT id, balance FROM accounts ORDER BY id"),
                    bind("q", "all", &[]),
                    execute("q", 2),
                    Sync,
                ],
                vec![execute("q", 2), Sync],
                vec![execute("q", 2), Sync],
                vec![query("COMMIT")],
                vec![execute("q", 2), Sync],
            ],
        ),
        (
            "prepared writes",
            vec![
                vec![
                    parse(
                        "u",
                        "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                    ),
                    describe(Target::Statement, "u"),
                    Sync,
                ],
                vec![bind("", "u", &["5", "3"]), execute("", 0), Sync],
                vec![bind("", "u", &["5", "99"]), execute("", 0), Sync],
                vec![
                    parse(
                        "i",
                        "INSERT INTO transfers (id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)",
                    ),
                    bind("", "i", &["1", "1", "2", "3"]),
                    execute("", 0),
                    Sync,
                ],
                vec![bind("", "i", &["1", "1", "2", "3"]), execute("", 0), Sync],
                vec![query("SELECT count(*) FROM transfers")],
                vec![
                    parse("set", "SET statement_timeout = '5s'"),
                    bind("", "set", &[]),
                    execute("", 0),
                    Sync,
                ],
            ],
        ),
        (
            "extended errors inside a transaction",
            vec![
                vec![query("BEGIN")],
                vec![
                    parse("", "SELEC 1"),
                    bind("", "", &[]),
                    execute("", 0),
                    Sync,
                ],
                vec![Sync],
                vec![parse("", "SELECT 1"), Sync],
                vec![query("ROLLBACK")],
                vec![parse("d", "SELECT 1"), Sync],
                vec![query("DEALLOCATE d")],
                vec![query("DEALLOCATE d")],
                vec![query("DEALLOCATE ALL")],
                vec![query("START TRANSACTION ISOLATION LEVEL REPEATABLE READ")],
                vec![query("END")],
            ],
        ),
        (
            "the reference proxy's settings protocol (set_config, pg_settings read-back)",
            vec![
                vec![query(
                    "SELECT pg_catalog.set_config('application_name', 'x1', false), \
                     pg_catalog.set_config('statement_timeout', '1234ms', false)",
                )],
                vec![query(reference_proxy::session::SETTINGS_SNAPSHOT_QUERY)],
                vec![query("SHOW statement_timeout")],
                vec![query("RESET ALL")],
                vec![query(reference_proxy::session::SETTINGS_SNAPSHOT_QUERY)],
            ],
        ),
        (
            "statement timeout and transaction status",
            vec![
                vec![query("SET statement_timeout = 50")],
                vec![query("SELECT pg_sleep(1)")],
                vec![query("BEGIN")],
                vec![query("SELECT pg_sleep(1)")],
                vec![query("ROLLBACK")],
            ],
        ),
    ]
}

/// What is compared of a message.
fn shape(message: &BackendMessage) -> String {
    match message {
        BackendMessage::ErrorResponse(fields) => format!(
            "ErrorResponse {}",
            fields.code().map(|c| c.to_string()).unwrap_or_default()
        ),
        BackendMessage::NoticeResponse(fields) => format!(
            "NoticeResponse {}",
            fields.code().map(|c| c.to_string()).unwrap_or_default()
        ),
        BackendMessage::RowDescription(fields) => {
            let columns: Vec<String> = fields
                .iter()
                .map(|f| format!("{}:{}", f.name, f.type_oid))
                .collect();
            format!("RowDescription {}", columns.join(", "))
        }
        other => other.to_string(),
    }
}

/// What one batch of one script got back.
struct Answer {
    script: &'static str,
    batch: String,
    messages: Vec<String>,
}

/// Runs every script, one fresh connection each.
async fn run_all<S, F>(mut connect: F) -> Vec<Answer>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: AsyncFnMut() -> Raw<S>,
{
    let mut answers = Vec::new();
    for (script, batches) in scripts() {
        let mut raw = connect().await;
        for batch in batches {
            let shown: Vec<String> = batch.iter().map(|m| m.to_string()).collect();
            raw.send(&batch).await;
            let messages = raw.until_ready().await.iter().map(shape).collect();
            answers.push(Answer {
                script,
                batch: shown.join(" | "),
                messages,
            });
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fake_answers_like_postgres() {
    let Some(pg) =
        Postgres::start_or_skip("the_fake_answers_like_postgres", PostgresConfig::default())
    else {
        return;
    };
    pg.psql(Role::Superuser, SETUP).expect("tables");
    let (host, port, database) = (pg.host().to_string(), pg.port(), pg.database().to_string());
    let user = pg.user(Role::Trust).to_string();
    let real = run_all(async || {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .expect("connects to Postgres");
        Raw::login_on(stream, &user, &database, &[]).await.0
    })
    .await;

    let mut config = common::config(FakeAuth::Trust);
    config.accounts = ACCOUNTS;
    let fake = FakePostgres::new(config);
    let ours = run_all(async || Raw::login(&fake, &[]).await.0).await;

    let mismatches: Vec<String> = real
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a.messages != b.messages)
        .map(|(a, b)| {
            format!(
                "[{}] {}\n  postgres: {}\n  fake:     {}",
                a.script,
                a.batch,
                a.messages.join(" / "),
                b.messages.join(" / ")
            )
        })
        .collect();
    assert_eq!(real.len(), ours.len());
    assert!(
        mismatches.is_empty(),
        "the fake differs from Postgres in {} batch(es):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
