//! Goal: the proxy is transparent for everyday client traffic against a real Postgres 15.
//! Method: tokio-postgres through an in-process proxy (transaction pooling, small pools to
//! force connection switches) — simple and extended queries, prepared statements across
//! pooled connections, pipelining with errors, COPY, binary formats, NULLs.

mod common;

use common::{TestProxy, postgres, sqlstate};
use futures_util::{SinkExt, StreamExt, pin_mut};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_work() {
    let Some(pg) = postgres("simple_and_extended_queries_work") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let client = proxy.connect(&pg).await;
    let rows = client
        .simple_query("SELECT 1 AS one; SELECT 'two'")
        .await
        .expect("simple query");
    assert_eq!(
        rows.len(),
        6,
        "two RowDescriptions, rows and CommandCompletes: {rows:?}"
    );
    let row = client
        .query_one("SELECT $1::int + 1, $2::text, NULL::int", &[&41i32, &"x"])
        .await
        .expect("extended");
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "x");
    assert_eq!(row.get::<_, Option<i32>>(2), None);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("user")
        .get(0);
    assert_eq!(user, pg.user(fixtures::Role::Scram));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_clients_across_pooled_connections() {
    let Some(pg) = postgres("prepared_statements_follow_clients_across_pooled_connections") else {
        return;
    };
    // Two origin connections, three clients each preparing statements named s0, s1, ...
    // (tokio-postgres's names collide between clients by design).
    let proxy = TestProxy::start(&pg, &["--pool-size", "2"]).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(proxy.connect(&pg).await);
    }
    let mut statements = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let sql = format!("SELECT $1::int * {}", index + 2);
        statements.push(client.prepare(&sql).await.expect("prepare"));
    }
    for round in 0..20i32 {
        for (index, client) in clients.iter().enumerate() {
            let value: i32 = client
                .query_one(&statements[index], &[&round])
                .await
                .expect("execute")
                .get(0);
            assert_eq!(
                value,
                round * (index as i32 + 2),
                "client {index} got another client's statement"
            );
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_a_pipeline_fail_only_their_query() {
    let Some(pg) = postgres("errors_in_a_pipeline_fail_only_their_query") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let client = proxy.connect(&pg).await;
    let good = client.prepare("SELECT $1::int").await.expect("prepare");
    let (first, bad, last) = tokio::join!(
        client.query_one(&good, &[&1i32]),
        client.query_one("SELECT 1/0", &[]),
        client.query_one(&good, &[&3i32]),
    );
    assert_eq!(first.expect("first").get::<_, i32>(0), 1);
    assert_eq!(
        sqlstate(&bad.expect_err("division by zero")).as_deref(),
        Some("22012")
    );
    assert_eq!(last.expect("last").get::<_, i32>(0), 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back() {
    let Some(pg) = postgres("transactions_commit_and_roll_back") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let mut client = proxy.connect(&pg).await;
    client
        .batch_execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")
        .await
        .expect("create");
    let transaction = client.transaction().await.expect("begin");
    transaction
        .execute("INSERT INTO accounts VALUES (1, 100)", &[])
        .await
        .expect("insert");
    transaction.commit().await.expect("commit");
    let transaction = client.transaction().await.expect("begin");
    transaction
        .execute("INSERT INTO accounts VALUES (2, 200)", &[])
        .await
        .expect("insert");
    transaction.rollback().await.expect("rollback");
    let count: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
    // A failed transaction stays failed until ROLLBACK, through the proxy as directly.
    client.batch_execute("BEGIN").await.expect("begin");
    let error = client
        .batch_execute("SELECT * FROM missing_table")
        .await
        .expect_err("missing table");
    assert_eq!(sqlstate(&error).as_deref(), Some("42P01"));
    let error = client
        .batch_execute("SELECT 1")
        .await
        .expect_err("aborted transaction");
    assert_eq!(sqlstate(&error).as_deref(), Some("25P02"));
    client.batch_execute("ROLLBACK").await.expect("rollback");
    client
        .batch_execute("SELECT 1")
        .await
        .expect("usable again");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_round_trip() {
    let Some(pg) = postgres("copy_in_and_out_round_trip") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--pool-size", "1"]).await;
    let client = proxy.connect(&pg).await;
    client
        .batch_execute("CREATE TABLE items (id int, name text)")
        .await
        .expect("create");
    let sink = client
        .copy_in("COPY items FROM STDIN")
        .await
        .expect("copy in");
    pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\titem number {i}\n"));
    }
    sink.send(bytes::Bytes::from(data.clone()))
        .await
        .expect("send");
    let copied = sink.finish().await.expect("finish");
    assert_eq!(copied, 5000);
    let stream = client
        .copy_out("COPY items TO STDOUT")
        .await
        .expect("copy out");
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(String::from_utf8(out).expect("utf8"), data);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_gets_28p01_and_others_keep_working() {
    let Some(pg) = postgres("wrong_password_gets_28p01_and_others_keep_working") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &[]).await;
    let good = proxy.connect(&pg).await;
    let wrong = proxy
        .conninfo(&pg)
        .replace(pg.password(fixtures::Role::Scram), "wrong");
    let error = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(sqlstate(&error).as_deref(), Some("28P01"), "{error}");
    let message = error
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_default();
    assert_eq!(
        message,
        format!(
            "password authentication failed for user \"{}\"",
            pg.user(fixtures::Role::Scram)
        )
    );
    good.simple_query("SELECT 1").await.expect("still served");
    proxy.stop().await;
}
