//! Goal: a real Postgres session runs through the tunnel — the SSLRequest is answered ('N' by a
//! cluster without TLS, 'S' by one with TLS) and a trust login plus a simple query complete.
//! Method: a real Postgres (fixtures, skipped loudly when the binaries are missing) behind an
//! in-process edge; the client speaks raw protocol bytes inside binary WebSocket messages.

mod common;

use common::*;
use fixtures::{Postgres, PostgresConfig, Role, TestPki};
use futures_util::{SinkExt, StreamExt};
use reference_proxy::stream::TcpDialer;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;
use tunnel_edge::EdgeConfig;

/// The SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// Protocol 3.0.
const PROTOCOL_3_0: u32 = 196_608;

async fn edge_for(pg: &Postgres) -> TestEdge {
    let dialer = Arc::new(TcpDialer::new(pg.host(), pg.port()));
    TestEdge::start(EdgeConfig::default(), dialer).await
}

async fn one_byte_answer(client: &mut Client) -> u8 {
    loop {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) if data.len() == 1 => return data[0],
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected the one-byte SSLRequest answer, got {other:?}"),
        }
    }
}

fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    for (key, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    message.extend_from_slice(&body);
    message
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut message = vec![b'Q'];
    message.extend_from_slice(&u32::try_from(sql.len() + 5).unwrap().to_be_bytes());
    message.extend_from_slice(sql.as_bytes());
    message.push(0);
    message
}

/// Backend messages (type, body) up to and including the next ReadyForQuery.
async fn until_ready(client: &mut Client, pending: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut messages = Vec::new();
    loop {
        while pending.len() >= 5 {
            let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]) as usize;
            if pending.len() < 1 + len {
                break;
            }
            let kind = pending[0];
            let body = pending[5..1 + len].to_vec();
            pending.drain(..1 + len);
            assert_ne!(kind, b'E', "error: {}", String::from_utf8_lossy(&body));
            messages.push((kind, body));
            if kind == b'Z' {
                return messages;
            }
        }
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => pending.extend_from_slice(&data),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected backend messages, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_postgres_session_runs_through_the_tunnel() {
    let Some(pg) =
        Postgres::start_or_skip("tunnel_edge_postgres_session", PostgresConfig::default())
    else {
        return;
    };
    let edge = edge_for(&pg).await;
    let mut client = edge.tunnel().await;
    client
        .send(Message::Binary(SSL_REQUEST.to_vec().into()))
        .await
        .unwrap();
    assert_eq!(one_byte_answer(&mut client).await, b'N');

    let user = pg.user(Role::Trust).to_owned();
    let startup = startup_message(&user, pg.database());
    client.send(Message::Binary(startup.into())).await.unwrap();
    let mut pending = Vec::new();
    let login = until_ready(&mut client, &mut pending).await;
    assert_eq!(login[0], (b'R', vec![0, 0, 0, 0]), "AuthenticationOk");

    let query = query_message("SELECT 41 + 1");
    client.send(Message::Binary(query.into())).await.unwrap();
    let result = until_ready(&mut client, &mut pending).await;
    let row = result
        .iter()
        .find(|(kind, _)| *kind == b'D')
        .expect("a DataRow");
    assert!(row.1.ends_with(b"42"), "{row:?}");
    drop(client);
    edge.wait_for("tunnel closed", |s| s.live_tunnels == 0)
        .await;
}

#[tokio::test]
async fn a_tls_cluster_accepts_the_ssl_request_through_the_tunnel() {
    let pki = TestPki::generate().expect("PKI");
    let config = PostgresConfig::default().with_tls(&pki);
    let Some(pg) = Postgres::start_or_skip("tunnel_edge_postgres_tls", config) else {
        return;
    };
    let edge = edge_for(&pg).await;
    let mut client = edge.tunnel().await;
    client
        .send(Message::Binary(SSL_REQUEST.to_vec().into()))
        .await
        .unwrap();
    assert_eq!(one_byte_answer(&mut client).await, b'S');
}
