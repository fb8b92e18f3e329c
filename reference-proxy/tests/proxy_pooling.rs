//! Goal: transaction pooling never leaks one client's state to another, survives origin
//! restarts and vanishing clients, and fails cleanly when the pool is exhausted.
//! Method: several tokio-postgres clients through a proxy with a pool of one or two
//! connections against a real Postgres, so every transaction switches clients on the same
//! origin connection.

mod common;

use common::{Raw, TestProxy, postgres, sqlstate};
use elephant_protocol::{BackendMessage, Bind, FrontendMessage, Parse, Target};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_search_path_and_temp_tables_never_reach_the_next_client() {
    let Some(pg) = postgres("settings_search_path_and_temp_tables_never_reach_the_next_client")
    else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    // A temporary table made inside a transaction that drops it at commit is allowed in
    // transaction mode (it cannot outlive the transaction); check it does not.
    let creator = proxy.connect(&pg).await;
    creator
        .batch_execute("BEGIN; CREATE TEMP TABLE leaked_temp (x int) ON COMMIT DROP; COMMIT")
        .await
        .expect("transaction-scoped temp table");
    let first = proxy.connect(&pg).await;
    let second = proxy.connect(&pg).await;
    first
        .batch_execute("SET search_path = leaked_schema; SET statement_timeout = '123s'; SET application_name = 'leaky'")
        .await
        .expect("session changes");
    let row = second
        .query_one("SELECT current_setting('search_path'), current_setting('statement_timeout'), current_setting('application_name'), to_regclass('leaked_temp')::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "\"$user\", public");
    assert_ne!(row.get::<_, String>(1), "123s");
    assert_ne!(row.get::<_, String>(2), "leaky");
    assert_eq!(row.get::<_, Option<String>>(3), None, "temp table leaked");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_follow_the_client_to_every_connection() {
    let Some(pg) = postgres("startup_settings_follow_the_client_to_every_connection") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let conninfo = format!(
        "{} application_name=alpha options='-c TimeZone=Asia/Tokyo'",
        proxy.conninfo(&pg)
    );
    let (alpha, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let beta = proxy.connect(&pg).await;
    for _ in 0..3 {
        let row = alpha
            .query_one(
                "SELECT current_setting('application_name'), current_setting('TimeZone')",
                &[],
            )
            .await
            .expect("alpha");
        assert_eq!(row.get::<_, String>(0), "alpha");
        assert_eq!(row.get::<_, String>(1), "Asia/Tokyo");
        let zone: String = beta
            .query_one("SELECT current_setting('TimeZone')", &[])
            .await
            .expect("beta")
            .get(0);
        assert_ne!(zone, "Asia/Tokyo", "alpha's setting leaked to beta");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_transaction_is_rolled_back_before_reuse() {
    let Some(pg) = postgres("an_abandoned_transaction_is_rolled_back_before_reuse") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let setup = proxy.connect(&pg).await;
    setup
        .batch_execute("CREATE TABLE ledger (id int)")
        .await
        .expect("create");
    {
        let quitter = proxy.connect(&pg).await;
        quitter
            .batch_execute("BEGIN; INSERT INTO ledger VALUES (1)")
            .await
            .expect("open transaction");
        // Dropped here, mid-transaction: the socket closes without COMMIT.
    }
    let next = proxy.connect(&pg).await;
    let count: i64 = next
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0, "the abandoned insert must have been rolled back");
    let status: String = next
        .query_one("SELECT current_setting('transaction_isolation')", &[])
        .await
        .expect("usable")
        .get(0);
    assert!(!status.is_empty());
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_58000_and_recovers() {
    let Some(pg) = postgres("an_exhausted_pool_answers_58000_and_recovers") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1", "--acquire-timeout", "1"]).await;
    let holder = proxy.connect(&pg).await;
    let waiter = proxy.connect(&pg).await;
    holder
        .batch_execute("BEGIN")
        .await
        .expect("hold the only connection");
    let error = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("pool exhausted");
    assert_eq!(sqlstate(&error).as_deref(), Some("58000"));
    assert_eq!(
        error.as_db_error().map(|e| e.message()),
        Some("Failed to acquire a connection from the pool.")
    );
    holder.batch_execute("COMMIT").await.expect("release");
    waiter
        .simple_query("SELECT 1")
        .await
        .expect("served once the connection is free");
    assert!(
        proxy
            .metrics
            .render()
            .contains("elephant_proxy_pool_acquire_timeouts_total 1")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_only_the_cancelling_clients_query() {
    let Some(pg) = postgres("cancel_reaches_only_the_cancelling_clients_query") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let victim = proxy.connect(&pg).await;
    let bystander = proxy.connect(&pg).await;
    let token = victim.cancel_token();
    let bystander_query =
        tokio::spawn(async move { bystander.query_one("SELECT pg_sleep(1.5)::text", &[]).await });
    let victim_query =
        tokio::spawn(async move { victim.query_one("SELECT pg_sleep(30)::text", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request sent");
    let cancelled = tokio::time::timeout(Duration::from_secs(10), victim_query)
        .await
        .expect("cancel took effect")
        .expect("task");
    assert_eq!(
        sqlstate(&cancelled.expect_err("cancelled")).as_deref(),
        Some("57014")
    );
    let survived = bystander_query.await.expect("task");
    assert!(
        survived.is_ok(),
        "the other client's query was hit: {survived:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_idle_client_cancels_nothing() {
    let Some(pg) = postgres("cancelling_an_idle_client_cancels_nothing") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let idle = proxy.connect(&pg).await;
    let busy = proxy.connect(&pg).await;
    let query = tokio::spawn(async move { busy.query_one("SELECT pg_sleep(1)::text", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    idle.cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel request sent");
    assert!(
        query.await.expect("task").is_ok(),
        "an idle client's cancel hit another client's query"
    );
    assert!(
        proxy
            .metrics
            .render()
            .contains("elephant_proxy_cancel_requests_total{outcome=\"idle\"} 1")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_an_origin_restart() {
    let Some(mut pg) = postgres("the_pool_recovers_after_an_origin_restart") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let client = proxy.connect(&pg).await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("before restart");
    pg.restart().expect("restart postgres");
    // The pooled connection died with the old server; the proxy notices before lending it.
    let rows = client
        .simple_query("SELECT 2")
        .await
        .expect("after restart");
    assert_eq!(rows.len(), 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_ends_a_slow_statement_with_57014() {
    let Some(pg) = postgres("statement_timeout_ends_a_slow_statement_with_57014") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--statement-timeout", "1"]).await;
    let client = proxy.connect(&pg).await;
    let error = client
        .simple_query("SELECT pg_sleep(5)")
        .await
        .expect_err("timeout");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"));
    assert!(
        error
            .as_db_error()
            .is_some_and(|e| e.message().contains("statement timeout")),
        "{error:?}"
    );
    client
        .simple_query("SELECT 1")
        .await
        .expect("session goes on");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_a_clear_error() {
    let Some(pg) = postgres("an_unreachable_origin_is_a_clear_error") else {
        return;
    };
    let mut pg = pg;
    let proxy = TestProxy::start(&pg, &[]).await;
    pg.stop().expect("stop postgres");
    let error = tokio_postgres::connect(&proxy.conninfo(&pg), tokio_postgres::NoTls)
        .await
        .err()
        .expect("no origin");
    let db = error
        .as_db_error()
        .expect("an ErrorResponse, not a dropped connection");
    assert_eq!(db.code().code(), "58000");
    assert!(
        db.message()
            .starts_with("Server connection attempt failed: connection_refused"),
        "{}",
        db.message()
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_keeps_its_connection_until_sync() {
    // Goal: a client that sends Parse/Bind/Flush and executes the portal later (as Flush-based
    // drivers do) keeps its origin connection in between, even when another client is waiting.
    let Some(pg) = postgres("an_open_batch_keeps_its_connection_until_sync") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1", "--acquire-timeout", "5"]).await;
    let mut raw = Raw::login(&proxy, &pg).await;
    raw.send(&FrontendMessage::Parse(Parse {
        name: "".into(),
        query: "SELECT 42".into(),
        parameter_types: vec![],
    }))
    .await;
    raw.send(&FrontendMessage::Bind(Bind {
        portal: "held".into(),
        statement: "".into(),
        parameter_formats: vec![],
        parameters: vec![],
        result_formats: vec![],
    }))
    .await;
    raw.send(&FrontendMessage::Flush).await;
    assert!(matches!(
        raw.receive().await,
        Some(BackendMessage::ParseComplete)
    ));
    assert!(matches!(
        raw.receive().await,
        Some(BackendMessage::BindComplete)
    ));
    let other = proxy.connect(&pg).await;
    let waiting =
        tokio::spawn(async move { other.simple_query("SELECT 1").await.map(|rows| rows.len()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.send(&FrontendMessage::Execute {
        portal: "held".into(),
        max_rows: 0,
    })
    .await;
    raw.send(&FrontendMessage::Close {
        target: Target::Portal,
        name: "held".into(),
    })
    .await;
    raw.send(&FrontendMessage::Sync).await;
    let mut answers = Vec::new();
    while let Some(message) = raw.receive().await {
        let done = matches!(message, BackendMessage::ReadyForQuery(_));
        answers.push(message.to_string());
        if done {
            break;
        }
    }
    assert_eq!(
        answers,
        vec![
            "DataRow [\"42\"]",
            "CommandComplete \"SELECT 1\"",
            "CloseComplete",
            "ReadyForQuery I"
        ]
    );
    assert_eq!(
        waiting
            .await
            .expect("task")
            .expect("served after the batch"),
        3
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_set_never_reaches_the_next_client() {
    // Found by the simulator (seed 13): a SET run as a prepared statement changed the session
    // without any SQL text passing in that transaction, so the connection went back unreset.
    let Some(pg) = postgres("a_prepared_set_never_reaches_the_next_client") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let setter = proxy.connect(&pg).await;
    let other = proxy.connect(&pg).await;
    let set = setter
        .prepare("SET statement_timeout = '1234ms'")
        .await
        .expect("prepare");
    setter
        .execute(&set, &[])
        .await
        .expect("execute the prepared SET");
    let seen: String = other
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .expect("query")
        .get(0);
    assert_ne!(seen, "1234ms", "a prepared SET leaked to another client");
    proxy.stop().await;
}
