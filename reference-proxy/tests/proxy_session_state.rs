//! Goal: session state through a pooling proxy is either correct or a clear error — never a
//! silent surprise. Settings follow their client across connections and never reach another;
//! session features (LISTEN, temporary tables, advisory locks, SQL PREPARE, WITH HOLD cursors,
//! SET SESSION AUTHORIZATION) are refused by default in transaction mode, work when pinned,
//! and always work in session mode; pinned clients are bounded and give their connection back.
//! Method: tokio-postgres and psql against a real Postgres 15, directly and through an
//! in-process proxy with small pools so that clients really share connections.

mod common;

use common::{TestProxy, postgres, run_client, sqlstate};
use fixtures::Postgres;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Connects through `conninfo`, forwarding NOTIFY payloads as `channel:payload`.
async fn connect_listening(conninfo: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .expect("connect");
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = sender.send(format!("{}:{}", n.channel(), n.payload()));
            }
        }
    });
    (client, receiver)
}

async fn setting(client: &Client, name: &str) -> String {
    client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .expect("current_setting")
        .get(0)
}

/// Holds one pooled connection in an open transaction, so the other client must use another.
async fn occupy(client: &Client) {
    client
        .batch_execute("BEGIN; SELECT 1")
        .await
        .expect("begin");
}

async fn release(client: &Client) {
    client.batch_execute("COMMIT").await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_outside_a_transaction_follow_the_client_to_another_connection() {
    let Some(pg) = postgres("settings_follow_the_client") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let alpha = proxy.connect(&pg).await;
    let beta = proxy.connect(&pg).await;
    // The proxy names its origin connections; that is what a client sees by default.
    let default_name = setting(&beta, "application_name").await;
    // Simple protocol, extended protocol (tokio-postgres prepares `execute`), set_config.
    alpha
        .batch_execute("SET search_path = alpha_schema, public; SET TimeZone = 'Asia/Tokyo'")
        .await
        .expect("simple SET");
    alpha
        .execute("SET statement_timeout = '7s'", &[])
        .await
        .expect("extended SET");
    alpha
        .query_one("SELECT set_config('application_name', 'alpha', false)", &[])
        .await
        .expect("set_config");
    for round in 0..3 {
        // Beta holds a connection in a transaction on even rounds: alpha lands elsewhere.
        if round % 2 == 0 {
            occupy(&beta).await;
        }
        assert_eq!(setting(&alpha, "search_path").await, "alpha_schema, public");
        assert_eq!(setting(&alpha, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(setting(&alpha, "statement_timeout").await, "7s");
        assert_eq!(setting(&alpha, "application_name").await, "alpha");
        if round % 2 == 0 {
            release(&beta).await;
        }
        assert_eq!(setting(&beta, "search_path").await, "\"$user\", public");
        assert_ne!(setting(&beta, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(setting(&beta, "statement_timeout").await, "1min");
        assert_eq!(setting(&beta, "application_name").await, default_name);
    }
    alpha
        .batch_execute("RESET statement_timeout; RESET search_path")
        .await
        .expect("reset");
    occupy(&beta).await;
    assert_eq!(setting(&alpha, "statement_timeout").await, "1min");
    assert_eq!(setting(&alpha, "search_path").await, "\"$user\", public");
    assert_eq!(setting(&alpha, "TimeZone").await, "Asia/Tokyo");
    release(&beta).await;
    assert!(proxy.metrics.settings_snapshots_total.get() >= 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_transaction_outcomes_like_postgres() {
    let Some(pg) = postgres("settings_follow_transaction_outcomes") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let client = proxy.connect(&pg).await;
    let other = proxy.connect(&pg).await;
    let default_name = setting(&client, "application_name").await;
    client
        .batch_execute("BEGIN; SET TimeZone = 'Europe/Paris'; COMMIT")
        .await
        .expect("committed SET");
    client
        .batch_execute("BEGIN; SET application_name = 'rolled_back'; ROLLBACK")
        .await
        .expect("rolled back SET");
    client
        .batch_execute("BEGIN; SET LOCAL search_path = nowhere; COMMIT")
        .await
        .expect("SET LOCAL");
    let failed = client
        .batch_execute("BEGIN; SET DateStyle = 'German'; SELECT 1/0")
        .await;
    assert_eq!(sqlstate(&failed.unwrap_err()).as_deref(), Some("22012"));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    occupy(&other).await;
    assert_eq!(setting(&client, "TimeZone").await, "Europe/Paris");
    assert_eq!(setting(&client, "application_name").await, default_name);
    assert_eq!(setting(&client, "search_path").await, "\"$user\", public");
    assert_eq!(setting(&client, "DateStyle").await, "ISO, MDY");
    release(&other).await;
    proxy.stop().await;
}

/// One statement per session feature, with its `--session-feature` name.
const FEATURES: [(&str, &str); 6] = [
    ("listen", "LISTEN jobs"),
    ("temp_tables", "CREATE TEMP TABLE scratch (x int)"),
    ("advisory_locks", "SELECT pg_advisory_lock(42)"),
    ("sql_prepare", "PREPARE q AS SELECT 1"),
    (
        "hold_cursors",
        "DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
    ),
    (
        "session_authorization",
        "SET SESSION AUTHORIZATION postgres",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_features_are_refused_by_default_in_transaction_mode() {
    let Some(pg) = postgres("session_features_are_refused_by_default") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let client = proxy.connect(&pg).await;
    for (name, sql) in FEATURES {
        // Outside a transaction, simple protocol.
        let error = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&error).as_deref(), Some("0A000"), "{sql}");
        let db = error.as_db_error().expect("an ErrorResponse");
        assert!(
            db.message().contains("transaction pooling mode"),
            "{}",
            db.message()
        );
        let hint = db.hint().unwrap_or_default();
        assert!(
            hint.contains(&format!("--session-feature {name}=pin")),
            "{hint}"
        );
        assert!(hint.contains("--pool-mode session"), "{hint}");
        // Extended protocol (Parse): refused too, and the session goes on.
        let error = client.execute(sql, &[]).await.unwrap_err();
        assert_eq!(
            sqlstate(&error).as_deref(),
            Some("0A000"),
            "{sql} (extended)"
        );
        assert!(!setting(&client, "TimeZone").await.is_empty());
    }
    // Inside a transaction the refusal aborts it, exactly as an error from Postgres would.
    client.batch_execute("BEGIN").await.expect("begin");
    let error = client.batch_execute("LISTEN jobs").await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("0A000"));
    let error = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("25P02"));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    let refused: u64 = FEATURES
        .iter()
        .map(|(name, _)| {
            proxy
                .metrics
                .session_feature_refusals_total
                .with_label_values(&[name])
                .get()
        })
        .sum();
    assert_eq!(refused, 13);
    // Nothing was pinned, nothing leaked: a transaction-scoped advisory lock is fine.
    client
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1); COMMIT")
        .await
        .expect("xact lock");
    assert_eq!(proxy.context.pooling.pinned(), 0);
    proxy.stop().await;
}

fn pin_all_flags() -> Vec<String> {
    FEATURES
        .iter()
        .flat_map(|(name, _)| ["--session-feature".to_string(), format!("{name}=pin")])
        .collect()
}

async fn start_pinning(pg: &Postgres, extra: &[&str]) -> TestProxy {
    let flags = pin_all_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    TestProxy::start(pg, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_features_work_across_transactions_and_are_reset_on_disconnect() {
    let Some(pg) = postgres("pinned_features_work") else {
        return;
    };
    let proxy = start_pinning(&pg, &["--pool-size", "2", "--max-pinned", "1"]).await;
    let (listener, mut notifications) = connect_listening(&proxy.conninfo(&pg)).await;
    let other = proxy.connect(&pg).await;
    listener
        .batch_execute("LISTEN jobs; CREATE TEMP TABLE scratch (x int); SELECT pg_advisory_lock(42); PREPARE q AS SELECT 41 + 1; DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)")
        .await
        .expect("session features while pinned");
    assert_eq!(proxy.context.pooling.pinned(), 1);
    assert_eq!(proxy.metrics.pinned_connections.get(), 1);
    // Later transactions run on the same connection: everything is still there.
    listener
        .batch_execute("INSERT INTO scratch VALUES (1)")
        .await
        .expect("temp table");
    let answer: i32 = listener
        .query_one("EXECUTE q", &[])
        .await
        .expect("execute")
        .get(0);
    assert_eq!(answer, 42);
    let fetched = listener
        .simple_query("FETCH ALL FROM c")
        .await
        .expect("fetch");
    let rows = fetched
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 3, "the held cursor's rows");
    other
        .batch_execute("NOTIFY jobs, 'first'")
        .await
        .expect("notify");
    let seen = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("notification within 10 s");
    assert_eq!(seen.as_deref(), Some("jobs:first"));
    let locked: bool = other
        .query_one("SELECT pg_try_advisory_xact_lock(42)", &[])
        .await
        .expect("try lock")
        .get(0);
    assert!(!locked, "the pinned client holds the lock");
    // The pinned limit: a second client that would pin gets a clear error and goes on.
    let error = other.batch_execute("LISTEN other").await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("53400"));
    let message = error.as_db_error().map(|e| e.message().to_string());
    assert!(message.unwrap_or_default().contains("--max-pinned"));
    other.batch_execute("SELECT 1").await.expect("still usable");
    // Disconnecting unpins and resets: the next user of the connection finds nothing.
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy.context.pooling.pinned() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never unpinned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.metrics.pinned_connections.get(), 0);
    // Two clients in open transactions at once hold both pooled connections.
    let a = proxy.connect(&pg).await;
    let b = proxy.connect(&pg).await;
    occupy(&a).await;
    occupy(&b).await;
    for client in [&a, &b] {
        let row = client
            .query_one(
                "SELECT to_regclass('scratch')::text, (SELECT count(*) FROM pg_prepared_statements WHERE name = 'q'), (SELECT count(*) FROM pg_cursors WHERE name = 'c'), (SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory')",
                &[],
            )
            .await
            .expect("inspect");
        assert_eq!(row.get::<_, Option<String>>(0), None, "temp table leaked");
        assert_eq!(row.get::<_, i64>(1), 0, "SQL PREPARE leaked");
        assert_eq!(row.get::<_, i64>(2), 0, "cursor leaked");
        assert!(row.get::<_, bool>(3), "advisory lock leaked");
    }
    release(&a).await;
    release(&b).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_full_of_pinned_clients_gives_others_the_pool_error_not_a_hang() {
    let Some(pg) = postgres("a_pool_full_of_pinned_clients") else {
        return;
    };
    let proxy = start_pinning(
        &pg,
        &[
            "--pool-size",
            "2",
            "--max-pinned",
            "2",
            "--acquire-timeout",
            "1",
        ],
    )
    .await;
    let first = proxy.connect(&pg).await;
    let second = proxy.connect(&pg).await;
    for (client, channel) in [(&first, "a"), (&second, "b")] {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .expect("pin");
    }
    assert_eq!(proxy.context.pooling.pinned(), 2);
    let third = proxy.connect(&pg).await;
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), third.batch_execute("SELECT 1"))
        .await
        .expect("an answer, not a hang")
        .unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("58000"));
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), async {
        while third.batch_execute("SELECT 1").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a connection frees up when a pinned client leaves");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_everything_a_session_does() {
    let Some(pg) = postgres("session_mode_keeps_everything") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-mode", "session", "--pool-size", "2"]).await;
    let (listener, mut notifications) = connect_listening(&proxy.conninfo(&pg)).await;
    let other = proxy.connect(&pg).await;
    listener
        .batch_execute("LISTEN jobs; CREATE TEMP TABLE scratch (x int); SET search_path = pg_temp, public; PREPARE q AS SELECT 2; SELECT pg_advisory_lock(7)")
        .await
        .expect("session features");
    listener
        .batch_execute("INSERT INTO scratch VALUES (1)")
        .await
        .expect("temp table in a later transaction");
    other
        .batch_execute("NOTIFY jobs, 'hi'")
        .await
        .expect("notify");
    let seen = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("notification");
    assert_eq!(seen.as_deref(), Some("jobs:hi"));
    assert_eq!(
        proxy
            .metrics
            .session_feature_refusals_total
            .with_label_values(&["listen"])
            .get(),
        0
    );
    assert_eq!(
        proxy.context.pooling.pinned(),
        0,
        "session mode takes no pin slots"
    );
    // A third client waits for one of the two connections: it gets one when a client leaves.
    let waiting = tokio::spawn({
        let conninfo = proxy.conninfo(&pg);
        async move {
            let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await?;
            tokio::spawn(connection);
            client
                .query_one(
                    "SELECT to_regclass('scratch')::text, pg_try_advisory_lock(7), (SELECT count(*) FROM pg_prepared_statements WHERE name = 'q')",
                    &[],
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "both connections are held by sessions"
    );
    drop(listener);
    let row = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the freed connection is lent")
        .expect("task")
        .expect("query");
    assert_eq!(row.get::<_, Option<String>>(0), None, "temp table leaked");
    assert!(row.get::<_, bool>(1), "advisory lock leaked");
    assert_eq!(row.get::<_, i64>(2), 0, "prepared statements leaked");
    proxy.stop().await;
}

/// A psql script using every session feature; in session mode its output must be
/// byte-identical through the proxy.
const SESSION_SCRIPT: &str = r#"
\set ON_ERROR_STOP 0
SET search_path = pg_temp, public;
CREATE TEMP TABLE notes (id int, body text);
INSERT INTO notes VALUES (1, 'one');
LISTEN jobs;
NOTIFY jobs, 'self';
SELECT pg_advisory_lock(5);
PREPARE fetch_note (int) AS SELECT body FROM notes WHERE id = $1;
EXECUTE fetch_note(1);
BEGIN;
DECLARE c CURSOR WITH HOLD FOR SELECT id FROM notes;
COMMIT;
FETCH ALL FROM c;
SHOW search_path;
SELECT pg_advisory_unlock(5);
DEALLOCATE fetch_note;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_session_features_session_mode_matches_direct_and_transaction_mode_explains() {
    let Some(pg) = postgres("psql_with_session_features") else {
        return;
    };
    let args = ["-X", "-q", "-v", "VERBOSITY=default"];
    let direct = run_client(&pg, "psql", pg.port(), &args, Some(SESSION_SCRIPT)).await;
    let session = TestProxy::start(&pg, &["--pool-mode", "session"]).await;
    let proxied = run_client(
        &pg,
        "psql",
        session.address.port(),
        &args,
        Some(SESSION_SCRIPT),
    )
    .await;
    let text = |out: &std::process::Output| {
        format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // psql prints the notification with the sender's pid, which differs by nature.
    let without_pids = |s: String| {
        s.lines()
            .map(|line| match line.find("from server process with PID") {
                Some(at) => line[..at].to_string(),
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_pids(text(&direct)),
        without_pids(text(&proxied)),
        "psql output differs through the proxy in session mode"
    );
    assert!(text(&direct).contains("Asynchronous notification \"jobs\""));
    session.stop().await;
    let transaction = TestProxy::start(&pg, &[]).await;
    let refused = run_client(
        &pg,
        "psql",
        transaction.address.port(),
        &args,
        Some(SESSION_SCRIPT),
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for feature in [
        "temporary tables",
        "LISTEN",
        "session-level advisory locks",
        "SQL PREPARE",
        "WITH HOLD cursors",
    ] {
        assert!(
            stderr.contains(&format!(
                "ERROR:  {feature} cannot be used through this proxy in transaction pooling mode"
            )),
            "{feature} not explained:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("HINT:  Ask the proxy's operator for --session-feature"),
        "{stderr}"
    );
    transaction.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_every_query_mode_in_session_mode() {
    let Some(pg) = postgres("pgbench_in_session_mode") else {
        return;
    };
    let init = run_client(&pg, "pgbench", pg.port(), &["-i", "-s", "1", "-q"], None).await;
    assert!(init.status.success(), "pgbench -i failed");
    let proxy = TestProxy::start(&pg, &["--pool-mode", "session", "--pool-size", "4"]).await;
    for mode in ["simple", "extended", "prepared"] {
        // One connection per client, and a new session per transaction (-C), so every
        // transaction runs on a connection another session just gave back (reset). More
        // clients per pgbench thread than connections would deadlock pgbench's synchronous
        // prepares in session mode, as with any session pooler.
        let args = ["-n", "-c", "4", "-j", "2", "-t", "40", "-C", "-M", mode];
        let output = run_client(&pg, "pgbench", proxy.address.port(), &args, None).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("160/160"),
            "pgbench -M {mode} -C in session mode:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(proxy.context.pool.open_connections() <= 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_the_origin_no_longer_accepts_closes_the_session_instead_of_dropping_it() {
    let Some(pg) = postgres("a_setting_the_origin_no_longer_accepts") else {
        return;
    };
    let user = pg.user(fixtures::Role::Scram).to_string();
    pg.psql(
        fixtures::Role::Superuser,
        &format!("CREATE ROLE reporting NOLOGIN; GRANT reporting TO {user}"),
    )
    .expect("role");
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let client = proxy.connect(&pg).await;
    client
        .batch_execute("SET ROLE reporting")
        .await
        .expect("set role");
    assert_eq!(setting(&client, "role").await, "reporting");
    pg.psql(
        fixtures::Role::Superuser,
        &format!("REVOKE reporting FROM {user}"),
    )
    .expect("revoke");
    // The next transaction cannot run as `reporting` any more: rather than run it as someone
    // else, the proxy ends the session with an error that says why.
    let error = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap_err();
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(
        message.contains("never runs with settings it did not choose"),
        "{message}"
    );
    assert_eq!(sqlstate(&error).as_deref(), Some("58000"));
    let fresh = proxy.connect(&pg).await;
    let name: String = fresh
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("a new session works")
        .get(0);
    assert_eq!(name, user);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_the_startup_value_as_in_postgres() {
    let Some(pg) = postgres("reset_returns_to_the_startup_value") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let conninfo = format!(
        "{} application_name=alpha options='-c TimeZone=Asia/Tokyo'",
        proxy.conninfo(&pg)
    );
    let direct_conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} application_name=alpha options='-c TimeZone=Asia/Tokyo'",
        pg.port(),
        pg.user(fixtures::Role::Scram),
        pg.password(fixtures::Role::Scram),
        pg.database()
    );
    for conninfo in [direct_conninfo, conninfo] {
        let (client, connection) = tokio_postgres::connect(&conninfo, NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute("SET TimeZone = 'UTC'; SET application_name = 'beta'")
            .await
            .expect("set");
        assert_eq!(setting(&client, "TimeZone").await, "UTC");
        client.batch_execute("RESET TimeZone").await.expect("reset");
        assert_eq!(
            setting(&client, "TimeZone").await,
            "Asia/Tokyo",
            "{conninfo}"
        );
        assert_eq!(setting(&client, "application_name").await, "beta");
        client.batch_execute("RESET ALL").await.expect("reset all");
        assert_eq!(
            setting(&client, "application_name").await,
            "alpha",
            "{conninfo}"
        );
        assert_eq!(setting(&client, "TimeZone").await, "Asia/Tokyo");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_settings_follow_the_client_too() {
    let Some(pg) = postgres("custom_settings_follow_the_client") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let client = proxy.connect(&pg).await;
    let other = proxy.connect(&pg).await;
    client
        .batch_execute("SET app.tenant_id = '42'")
        .await
        .expect("SET custom");
    client
        .query_one("SELECT set_config('myapp.user', 'bob', false)", &[])
        .await
        .expect("set_config custom");
    // A SET TRANSACTION characteristic must not be replayed (it is per transaction).
    client
        .batch_execute(
            "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE; SELECT 1; COMMIT",
        )
        .await
        .expect("SET TRANSACTION");
    for _ in 0..2 {
        occupy(&other).await;
        assert_eq!(setting(&client, "app.tenant_id").await, "42");
        assert_eq!(setting(&client, "myapp.user").await, "bob");
        release(&other).await;
        let seen: Option<String> = other
            .query_one("SELECT current_setting('app.tenant_id', true)", &[])
            .await
            .expect("other")
            .get(0);
        assert!(
            seen.is_none() || seen.as_deref() == Some(""),
            "{seen:?} leaked"
        );
    }
    client
        .batch_execute("RESET app.tenant_id")
        .await
        .expect("reset");
    occupy(&other).await;
    assert_eq!(setting(&client, "app.tenant_id").await, "");
    release(&other).await;
    proxy.stop().await;
}
