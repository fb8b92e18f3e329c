//! Goal: whatever a client sends, it ends in a proper ErrorResponse with the right SQLSTATE
//! and a closed connection — never a panic, a hang, or harm to other clients — and secrets
//! never reach the logs.
//! Method: a raw socket speaking the protocol through our own codec (so it can send what no
//! driver would), next to a well-behaved tokio-postgres client on the same proxy.

mod common;

use bytes::{BufMut, BytesMut};
use common::{ANSWER_TIMEOUT, Raw, TestProxy, postgres};
use elephant_protocol::FrontendMessage;
use fixtures::{Postgres, Role};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn still_serves(proxy: &TestProxy, pg: &Postgres) {
    let client = proxy.connect(pg).await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("other clients are still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lengths_are_protocol_violations() {
    let Some(pg) = postgres("malformed_lengths_are_protocol_violations") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &[]).await;
    for bytes in [
        &b"Q\x00\x00\x00\x03"[..],
        &b"Q\x80\x00\x00\x00"[..],
        &b"S\x00\x00\x00\x05!"[..],
    ] {
        let mut raw = Raw::login(&proxy, &pg).await;
        raw.send_bytes(bytes).await;
        let message = raw.expect_fatal("08P01").await;
        assert!(message.contains("message"), "{message}");
    }
    still_serves(&proxy, &pg).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_by_name() {
    let Some(pg) = postgres("oversized_messages_are_refused_by_name") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--max-message-size", "10000"]).await;
    let mut raw = Raw::login(&proxy, &pg).await;
    let mut bytes = BytesMut::from(&b"Q"[..]);
    bytes.put_u32(20_000);
    raw.send_bytes(&bytes).await;
    let message = raw.expect_fatal("08P01").await;
    assert_eq!(
        message,
        "frontend message type 'Q' of 20000 bytes exceeds the maximum message size of 10000 bytes"
    );
    still_serves(&proxy, &pg).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_startup_message_is_refused() {
    let Some(pg) = postgres("a_second_startup_message_is_refused") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &[]).await;
    let mut raw = Raw::login(&proxy, &pg).await;
    raw.send(&FrontendMessage::Startup(
        elephant_protocol::StartupMessage::new([("user", "again")]),
    ))
    .await;
    let message = raw.expect_fatal("08P01").await;
    assert!(
        message.contains("unexpected StartupMessage after the connection started"),
        "{message}"
    );
    let mut raw = Raw::login(&proxy, &pg).await;
    raw.send(&FrontendMessage::SslRequest).await;
    raw.expect_fatal("08P01").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_problems_get_postgres_errors() {
    let Some(pg) = postgres("startup_problems_get_postgres_errors") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &[]).await;
    // Oversized startup packet.
    let mut socket = TcpStream::connect(proxy.address).await.expect("connect");
    let mut bytes = BytesMut::new();
    bytes.put_u32(10_001);
    bytes.put_u32(196_608);
    socket.write_all(&bytes).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_TIMEOUT, socket.read_to_end(&mut answer))
        .await
        .expect("answered")
        .ok();
    assert!(
        String::from_utf8_lossy(&answer).contains("invalid length of startup packet"),
        "{answer:?}"
    );
    // Unknown database.
    let conninfo = proxy
        .conninfo(&pg)
        .replace(&format!("dbname={}", pg.database()), "dbname=nope");
    let error = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let db = error.as_db_error().expect("ErrorResponse");
    assert_eq!(db.code().code(), "3D000");
    assert_eq!(db.message(), "database \"nope\" does not exist");
    // A GSSENCRequest is refused with 'N' and the client continues (libpq gssencmode=prefer).
    let mut socket = TcpStream::connect(proxy.address).await.expect("connect");
    let mut request = BytesMut::new();
    FrontendMessage::GssEncRequest
        .encode(&mut request)
        .expect("encodable");
    socket.write_all(&request).await.expect("write");
    assert_eq!(socket.read_u8().await.expect("answer"), b'N');
    still_serves(&proxy, &pg).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_transactions_finish() {
    let Some(pg) = postgres("graceful_shutdown_lets_open_transactions_finish") else {
        return;
    };
    let proxy = TestProxy::start(&pg, &["--shutdown-grace", "10"]).await;
    let busy = proxy.connect(&pg).await;
    let idle = proxy.connect(&pg).await;
    busy.batch_execute(
        "CREATE TABLE shutdown_log (x int); BEGIN; INSERT INTO shutdown_log VALUES (1)",
    )
    .await
    .expect("open transaction");
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = idle
        .simple_query("SELECT 1")
        .await
        .expect_err("idle sessions are closed at once");
    assert!(
        error.is_closed()
            || error
                .as_db_error()
                .is_some_and(|e| e.code().code() == "57P01"),
        "{error:?}"
    );
    busy.batch_execute("COMMIT")
        .await
        .expect("the open transaction may finish");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("proxy stopped")
        .expect("task");
    let committed = pg
        .psql(Role::Scram, "SELECT count(*) FROM shutdown_log")
        .expect("psql");
    assert_eq!(committed, "1");
}
