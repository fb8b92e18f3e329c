//! The fake Postgres, driven by tokio-postgres (as the simulator's clients and the proxy see it)
//! and by a raw protocol client (for exact tags, statuses and error codes).

mod common;

use common::{Raw, connect, connect_with, fake, pg_config, sqlstate};
use elephant_protocol::{Bind, FrontendMessage, Parse, Target};
use sim::fake_pg::{FakeAuth, FakePostgres, SERVER_VERSION};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

fn trust() -> FakePostgres {
    FakePostgres::new(common::config(FakeAuth::Trust))
}

fn contains(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|line| line.contains(needle))
}

fn values(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn scram_login_and_startup_parameters() {
    let fake = fake();
    let client = connect(&fake, "client-1").await;
    let rows = client
        .simple_query(
            "SHOW server_version; SELECT current_setting('application_name'); SHOW DateStyle",
        )
        .await
        .expect("runs");
    assert_eq!(values(&rows), vec![SERVER_VERSION, "client-1", "ISO, MDY"]);
    assert_eq!(fake.stats().sessions_started, 1);
}

#[tokio::test]
async fn startup_reports_parameters_like_postgres() {
    let (_, messages) = Raw::login(&trust(), &[("application_name", "app1")]).await;
    let lines = common::render(&messages);
    for expected in [
        "AuthenticationOk",
        "ParameterStatus application_name=\"app1\"",
        "ParameterStatus server_version=\"15.0 (elephant fake)\"",
        "ParameterStatus integer_datetimes=\"on\"",
        "ParameterStatus TimeZone=\"UTC\"",
        "BackendKeyData pid=10000",
        "ReadyForQuery I",
    ] {
        assert!(contains(&lines, expected), "{expected} in {lines:#?}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_database_are_fatal() {
    let fake = fake();
    let mut config = pg_config("x");
    config.password("wrong");
    let error = connect_with(&fake, &config).await.expect_err("refused");
    assert_eq!(sqlstate(&error), "28P01");
    let mut config = pg_config("x");
    config.dbname("other");
    let error = connect_with(&fake, &config).await.expect_err("refused");
    assert_eq!(sqlstate(&error), "3D000");
    assert_eq!(fake.stats().auth_failures, 1);
}

#[tokio::test]
async fn md5_login() {
    let fake = FakePostgres::new(common::config(FakeAuth::Md5));
    let client = connect(&fake, "md5").await;
    assert_eq!(
        values(&client.simple_query("SELECT 1").await.expect("ok")),
        vec!["1"]
    );
}

#[tokio::test]
async fn connection_limit() {
    let mut config = common::config(FakeAuth::Trust);
    config.max_connections = 2;
    let fake = FakePostgres::new(config);
    let _a = connect(&fake, "a").await;
    let _b = connect(&fake, "b").await;
    let error = connect_with(&fake, &pg_config("c"))
        .await
        .expect_err("limit");
    assert_eq!(sqlstate(&error), "53300");
    assert!(format!("{error:?}").contains("sorry, too many clients already"));
    drop(_a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    connect(&fake, "d").await;
    assert_eq!(fake.stats().max_sessions, 2);
}

#[tokio::test]
async fn transfers_commit_atomically() {
    let fake = fake();
    let client = connect(&fake, "bank").await;
    client
        .batch_execute(
            "BEGIN; UPDATE accounts SET balance = balance - 10 WHERE id = 1; \
             UPDATE accounts SET balance = balance + 10 WHERE id = 2; \
             INSERT INTO transfers VALUES (1, 1, 2, 10); COMMIT",
        )
        .await
        .expect("transfer");
    let bank = fake.bank();
    assert_eq!(bank.balances().get(&1), Some(&90));
    assert_eq!(bank.balances().get(&2), Some(&110));
    assert_eq!(bank.transfers().len(), 1);
    let sum: i64 = client
        .query_one("SELECT sum(balance) FROM accounts", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(sum, 400);
}

#[tokio::test]
async fn failed_transaction_blocks_until_rollback_and_commit_reports_rollback() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    assert!(contains(&raw.query("BEGIN").await, "ReadyForQuery T"));
    raw.query("UPDATE accounts SET balance = balance + 5 WHERE id = 1")
        .await;
    let failed = raw.query("SELECT nonsense").await;
    assert!(contains(&failed, "C=\"42703\""), "{failed:?}");
    assert!(contains(&failed, "ReadyForQuery E"));
    let blocked = raw.query("SELECT 1").await;
    assert!(contains(&blocked, "C=\"25P02\""), "{blocked:?}");
    let commit = raw.query("COMMIT").await;
    assert!(
        contains(&commit, "CommandComplete \"ROLLBACK\""),
        "{commit:?}"
    );
    assert!(contains(&commit, "ReadyForQuery I"));
    let balance = raw.query("SELECT balance FROM accounts WHERE id = 1").await;
    assert!(contains(&balance, "DataRow [\"100\"]"), "{balance:?}");
}

#[tokio::test]
async fn multi_statement_query_is_one_implicit_transaction() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    let lines = raw
        .query(
            "UPDATE accounts SET balance = balance + 1 WHERE id = 1; \
             SELECT current_setting('no.such_setting')",
        )
        .await;
    assert!(
        contains(&lines, "CommandComplete \"UPDATE 1\""),
        "{lines:?}"
    );
    assert!(contains(&lines, "C=\"42704\""), "{lines:?}");
    let balance = raw.query("SELECT balance FROM accounts WHERE id = 1").await;
    assert!(contains(&balance, "DataRow [\"100\"]"), "{balance:?}");
    let lines = raw
        .query("UPDATE accounts SET balance = balance + 1 WHERE id = 1; SELECT 1")
        .await;
    assert!(contains(&lines, "CommandComplete \"UPDATE 1\""));
    let balance = raw.query("SELECT balance FROM accounts WHERE id = 1").await;
    assert!(contains(&balance, "DataRow [\"101\"]"), "{balance:?}");
    let warning = raw.query("COMMIT").await;
    assert!(contains(&warning, "C=\"25P01\""), "{warning:?}");
}

#[tokio::test]
async fn set_reset_show_and_rollback_of_settings() {
    let (mut raw, _) = Raw::login(&trust(), &[("application_name", "start")]).await;
    let lines = raw.query("SET application_name = 'changed'").await;
    assert!(
        contains(&lines, "ParameterStatus application_name=\"changed\""),
        "{lines:?}"
    );
    raw.query("BEGIN; SET application_name TO other; ROLLBACK")
        .await;
    let lines = raw.query("SHOW application_name").await;
    assert!(contains(&lines, "DataRow [\"changed\"]"), "{lines:?}");
    let lines = raw.query("RESET ALL; SHOW application_name").await;
    assert!(contains(&lines, "DataRow [\"start\"]"), "{lines:?}");
    let lines = raw.query("SET nonsense = 1").await;
    assert!(contains(&lines, "C=\"42704\""), "{lines:?}");
    let lines = raw
        .query("BEGIN; SET LOCAL statement_timeout = '2s'; SHOW statement_timeout")
        .await;
    assert!(contains(&lines, "DataRow [\"2s\"]"), "{lines:?}");
    let lines = raw.query("COMMIT; SHOW statement_timeout").await;
    assert!(contains(&lines, "DataRow [\"0\"]"), "{lines:?}");
}

#[tokio::test]
async fn proxy_reset_query_is_accepted() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    let lines = raw
        .query(
            "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
             SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
             SET \"application_name\" = 'c1';",
        )
        .await;
    assert!(!contains(&lines, "ErrorResponse"), "{lines:?}");
    assert!(contains(&lines, "CommandComplete \"CLOSE CURSOR ALL\""));
    assert!(contains(&lines, "ReadyForQuery I"));
    let lines = raw.query("BEGIN; DISCARD ALL").await;
    assert!(contains(&lines, "C=\"25001\""), "{lines:?}");
}

#[tokio::test]
async fn prepared_statements_through_tokio_postgres() {
    let fake = fake();
    let client = connect(&fake, "prep").await;
    let read = client
        .prepare("SELECT balance FROM accounts WHERE id = $1")
        .await
        .expect("prepare");
    let balance: i32 = client.query_one(&read, &[&2i32]).await.expect("row").get(0);
    assert_eq!(balance, 100);
    let update = client
        .prepare("UPDATE accounts SET balance = balance + $1 WHERE id = $2")
        .await
        .expect("prepare");
    assert_eq!(
        client
            .execute(&update, &[&5i32, &3i32])
            .await
            .expect("update"),
        1
    );
    assert_eq!(
        client
            .execute(&update, &[&5i32, &99i32])
            .await
            .expect("update"),
        0
    );
    let echo: String = client
        .query_one("SELECT $1::text", &[&"token-7"])
        .await
        .expect("echo")
        .get(0);
    assert_eq!(echo, "token-7");
    let rows = client
        .query("SELECT id, balance FROM accounts ORDER BY id", &[])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 4);
    let insert = client
        .execute(
            "INSERT INTO transfers (id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)",
            &[&42i64, &1i32, &2i32, &3i32],
        )
        .await
        .expect("insert");
    assert_eq!(insert, 1);
    let duplicate = client
        .execute(
            "INSERT INTO transfers (id, from_id, to_id, amount) VALUES ($1, $2, $3, $4)",
            &[&42i64, &1i32, &2i32, &3i32],
        )
        .await
        .expect_err("duplicate");
    assert_eq!(sqlstate(&duplicate), "23505");
}

fn parse(name: &str, query: &str) -> FrontendMessage {
    FrontendMessage::Parse(Parse {
        name: name.into(),
        query: query.into(),
        parameter_types: Vec::new(),
    })
}

fn bind(portal: &str, statement: &str) -> FrontendMessage {
    FrontendMessage::Bind(Bind {
        portal: portal.into(),
        statement: statement.into(),
        parameter_formats: Vec::new(),
        parameters: Vec::new(),
        result_formats: Vec::new(),
    })
}

fn execute(portal: &str, max_rows: i32) -> FrontendMessage {
    FrontendMessage::Execute {
        portal: portal.into(),
        max_rows,
    }
}

#[tokio::test]
async fn extended_protocol_errors_skip_to_sync() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    raw.send(&[parse("s1", "SELECT 1"), FrontendMessage::Sync])
        .await;
    assert!(contains(
        &common::render(&raw.until_ready().await),
        "ParseComplete"
    ));
    raw.send(&[
        parse("s1", "SELECT 2"),
        bind("", "s1"),
        execute("", 0),
        FrontendMessage::Sync,
    ])
    .await;
    let lines = common::render(&raw.until_ready().await);
    assert_eq!(
        lines,
        vec![
            "ErrorResponse S=\"ERROR\" V=\"ERROR\" C=\"42P05\" M=\"prepared statement \\\"s1\\\" already exists\"",
            "ReadyForQuery I",
        ]
    );
    raw.send(&[bind("", "missing"), FrontendMessage::Sync])
        .await;
    let lines = common::render(&raw.until_ready().await);
    assert!(contains(&lines, "C=\"26000\""), "{lines:?}");
    raw.send(&[execute("nope", 0), FrontendMessage::Sync]).await;
    let lines = common::render(&raw.until_ready().await);
    assert!(contains(&lines, "C=\"34000\""), "{lines:?}");
}

#[tokio::test]
async fn execute_with_row_limit_suspends_the_portal() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    raw.send(&[
        parse("", "SELECT id, balance FROM accounts ORDER BY id"),
        bind("p", ""),
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "p".into(),
        },
        execute("p", 3),
        execute("p", 3),
        FrontendMessage::Close {
            target: Target::Portal,
            name: "p".into(),
        },
        FrontendMessage::Sync,
    ])
    .await;
    let lines = common::render(&raw.until_ready().await);
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        vec![
            "ParseComplete",
            "BindComplete",
            "RowDescription",
            "DataRow",
            "DataRow",
            "DataRow",
            "PortalSuspended",
            "DataRow",
            "CommandComplete",
            "CloseComplete",
            "ReadyForQuery",
        ]
    );
    assert!(contains(&lines, "CommandComplete \"SELECT 1\""));
}

#[tokio::test]
async fn cancel_interrupts_pg_sleep() {
    let fake = fake();
    let client = connect(&fake, "sleeper").await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    token
        .cancel_query_raw(common::open(&fake), tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let error = sleeper.await.expect("joins").expect_err("cancelled");
    assert_eq!(sqlstate(&error), "57014");
    assert!(format!("{error:?}").contains("canceling statement due to user request"));
    assert_eq!(fake.stats().cancels_delivered, 1);
}

#[tokio::test]
async fn statement_timeout_from_startup_options() {
    let fake = fake();
    let mut config = pg_config("slow");
    config.options("-c statement_timeout=100");
    let client = connect_with(&fake, &config).await.expect("connects");
    let error = client
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("times out");
    assert_eq!(sqlstate(&error), "57014");
    assert!(format!("{error:?}").contains("statement timeout"));
    let fine = client.simple_query("SELECT pg_sleep(0.01)").await;
    assert!(fine.is_ok());
}

#[tokio::test]
async fn unsupported_sql_says_so() {
    let fake = fake();
    let client = connect(&fake, "x").await;
    let error = client
        .simple_query("CREATE TABLE t (a int)")
        .await
        .expect_err("unsupported");
    assert_eq!(sqlstate(&error), "0A000");
    let error = client.simple_query("SELEC 1").await.expect_err("syntax");
    assert_eq!(sqlstate(&error), "42601");
}

#[tokio::test]
async fn garbage_gets_a_fatal_protocol_error() {
    let fake = trust();
    let mut raw = Raw::new(common::open(&fake));
    raw.send_bytes(&[0, 0, 0, 3, 1, 2, 3, 4]).await;
    let lines = common::render(&raw.until_ready().await);
    assert!(contains(&lines, "S=\"FATAL\""), "{lines:?}");
    assert!(contains(&lines, "C=\"08P01\""), "{lines:?}");
    let (mut raw, _) = Raw::login(&fake, &[]).await;
    raw.send_bytes(b"Z\x00\x00\x00\x04").await;
    let lines = common::render(&raw.until_ready().await);
    assert!(
        contains(&lines, "invalid frontend message type 90"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn execute_of_a_command_completes_once() {
    let (mut raw, _) = Raw::login(&trust(), &[]).await;
    raw.send(&[
        parse("set", "SET statement_timeout = '5s'"),
        bind("", "set"),
        execute("", 0),
        execute("", 0),
        FrontendMessage::Sync,
    ])
    .await;
    let lines = common::render(&raw.until_ready().await);
    assert_eq!(
        lines,
        vec![
            "ParseComplete",
            "BindComplete",
            "CommandComplete \"SET\"",
            "CommandComplete \"SET\"",
            "ReadyForQuery I",
        ]
    );
}

mod bad_input {
    //! Whatever a peer sends, the fake answers or hangs up; it never panics.

    use super::common::{self, Raw};
    use proptest::prelude::*;
    use sim::fake_pg::{FakeAuth, FakePostgres, parse_query};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// How long a case may take to be answered or closed.
    const CASE_LIMIT: Duration = Duration::from_secs(5);

    /// Sends `bytes` after a successful login and reads until the fake closes or goes quiet;
    /// the server task must not have panicked.
    fn survives(bytes: Vec<u8>, before_login: bool) -> Result<(), TestCaseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(async move {
            let fake = FakePostgres::new(common::config(FakeAuth::Trust));
            let (client, server) = tokio::io::duplex(common::DUPLEX_CAPACITY);
            let served = tokio::spawn(async move { fake.serve_connection(server).await });
            let mut stream = if before_login {
                client
            } else {
                let (raw, _) = Raw::login_on(client, common::USER, common::DATABASE, &[]).await;
                raw.into_inner()
            };
            tokio::io::AsyncWriteExt::write_all(&mut stream, &bytes)
                .await
                .ok();
            drop(tokio::io::AsyncWriteExt::shutdown(&mut stream).await);
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(CASE_LIMIT, stream.read_to_end(&mut sink)).await;
            drop(stream);
            let joined = tokio::time::timeout(CASE_LIMIT, served).await;
            prop_assert!(
                !matches!(joined, Ok(Err(ref e)) if e.is_panic()),
                "the fake panicked"
            );
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_bytes_after_login(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            survives(bytes, false)?;
        }

        #[test]
        fn random_bytes_before_login(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            survives(bytes, true)?;
        }

        #[test]
        fn random_typed_messages(tag in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![tag];
            bytes.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            bytes.extend_from_slice(&body);
            survives(bytes, false)?;
        }

        #[test]
        fn the_sql_parser_never_panics(sql in "\\PC{0,200}") {
            let _ = parse_query(&sql);
        }

        #[test]
        fn sql_like_text_never_panics(sql in "(SELECT|UPDATE|SET|BEGIN|;|\\$1|'|\"|::|\\(|\\)|,| |[a-z]{1,6}|[0-9]{1,12}|\\.)*") {
            let _ = parse_query(&sql);
        }
    }
}
