//! Goal: every tunnel leaves one access-log line (token id, peer, 101, bytes each way, duration,
//! why it ended), every refused upgrade one line (status, reason), the stats agree with them,
//! and no service-token secret — configured or presented — appears in logs or `Debug` output.
//! Method: an in-process edge with TLS, an echo origin, and a process-wide tracing capture at
//! TRACE level (tests here take turns on it).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_edge::{AccessControl, EdgeConfig, TokenSet};

async fn echo_edge(config: EdgeConfig) -> (TestEdge, tokio::task::JoinHandle<()>) {
    let (_, dialer, task) = echo_origin().await;
    (TestEdge::start(config, dialer).await, task)
}

async fn round_trip(client: &mut Client, payload: &[u8]) {
    client
        .send(Message::Binary(payload.to_vec().into()))
        .await
        .unwrap();
    match tokio::time::timeout(PROMPTLY, client.next()).await {
        Ok(Some(Ok(Message::Binary(data)))) => assert_eq!(data, payload),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn access_log_and_stats_reflect_outcomes_and_never_the_secret() {
    let (capture, _exclusive) = LogCapture::global().await;
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;

    let mut client = edge.tunnel().await;
    round_trip(&mut client, b"0123456789").await;
    client.close(None).await.unwrap();
    drop(client);
    assert_eq!(
        edge.refused_status(Some((TOKEN_ID, "not-the-secret")))
            .await,
        403
    );
    edge.wait_for("tunnel closed", |s| s.tunnels_closed == 1)
        .await;

    let stats = edge.edge.stats();
    assert_eq!(stats.tunnels_opened, 1);
    assert_eq!(stats.live_tunnels, 0);
    assert_eq!(stats.refused_with(403), 1);
    assert_eq!(stats.refused_total(), 1);
    assert_eq!(stats.bytes_to_origin, 10);
    assert_eq!(stats.bytes_from_origin, 10);

    let logs = capture.text();
    let closed = logs
        .lines()
        .find(|line| line.contains("tunnel closed"))
        .unwrap_or_else(|| panic!("no access log line in:\n{logs}"));
    for field in [
        &format!("token_id={TOKEN_ID}"),
        "status=101",
        "bytes_to_origin=10",
        "bytes_from_origin=10",
        "duration_ms=",
        "peer=127.0.0.1:",
    ] {
        assert!(closed.contains(field), "{field} missing from: {closed}");
    }
    let refused = logs
        .lines()
        .find(|line| line.contains("tunnel upgrade refused"))
        .unwrap_or_else(|| panic!("no refusal line in:\n{logs}"));
    assert!(refused.contains("status=403"), "{refused}");
    assert!(
        !logs.contains(TOKEN_SECRET),
        "the secret leaked into the logs:\n{logs}"
    );
    assert!(
        !logs.contains("not-the-secret"),
        "a presented secret was logged:\n{logs}"
    );
    for debug in [
        format!("{:?}", edge.edge),
        format!("{:?}", edge.edge.access()),
        format!("{:?}", edge.edge.access().current()),
    ] {
        assert!(!debug.contains(TOKEN_SECRET), "{debug}");
    }
}

#[tokio::test]
async fn a_client_that_just_disconnects_is_logged_as_client_eof() {
    let (capture, _exclusive) = LogCapture::global().await;
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;
    let mut client = edge.tunnel().await;
    round_trip(&mut client, b"bye").await;
    drop(client);
    edge.wait_for("tunnel closed", |s| s.tunnels_closed == 1)
        .await;
    let logs = capture.text();
    let closed = logs
        .lines()
        .find(|line| line.contains("tunnel closed"))
        .unwrap_or_else(|| panic!("no access log line in:\n{logs}"));
    assert!(closed.contains("end=client EOF"), "{closed}");
}

#[tokio::test]
async fn token_reloads_log_ids_but_never_secrets() {
    let (capture, _exclusive) = LogCapture::global().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    let text = format!("[[tokens]]\nid = \"{TOKEN_ID}\"\nsecret = \"{TOKEN_SECRET}\"\n");
    std::fs::write(&path, text).unwrap();
    let access = AccessControl::new(TokenSet::login_only());
    access.reload_from(&path).unwrap();
    std::fs::write(
        &path,
        format!("[[tokens]]\nid = \"x\"\nsecret = {TOKEN_SECRET}\n"),
    )
    .unwrap();
    let error = access.reload_from(&path).unwrap_err();
    tracing::error!(%error, "reload failed");
    let logs = capture.text();
    assert!(logs.contains(TOKEN_ID), "{logs}");
    assert!(!logs.contains(TOKEN_SECRET), "{logs}");
}
