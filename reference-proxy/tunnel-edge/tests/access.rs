//! Goal: the upgrade is answered exactly as Cloudflare Access + cloudflared answer it — 101 only
//! for a valid service token and a reachable origin, 403 for a missing or wrong token, the 302
//! login redirect for an application without a Service Auth policy, 502 with the cloudflared
//! meta header for an unreachable origin, 400 for requests that are not upgrades — that tokens
//! rotate without cutting open tunnels, and that a broken token file keeps the old tokens.
//! Method: an in-process edge with TLS on a loopback socket, a tokio-tungstenite client sending
//! cloudflared's request, and raw HTTP where tungstenite cannot (HEAD probe, subprotocols).
//! (Logs are checked in `logs.rs`.)

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tunnel_edge::{AccessControl, AccessPolicy, EdgeConfig, TokenSet};

async fn echo_edge(config: EdgeConfig) -> (TestEdge, tokio::task::JoinHandle<()>) {
    let (_, dialer, task) = echo_origin().await;
    (TestEdge::start(config, dialer).await, task)
}

async fn round_trip(client: &mut Client, payload: &[u8]) {
    client
        .send(Message::Binary(payload.to_vec().into()))
        .await
        .unwrap();
    let mut echoed = Vec::new();
    while echoed.len() < payload.len() {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => echoed.extend_from_slice(&data),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
    assert_eq!(echoed, payload);
}

#[tokio::test]
async fn a_valid_token_opens_a_tunnel_with_cloudflareds_101() {
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;
    let (mut client, response) = edge.connect(Some((TOKEN_ID, TOKEN_SECRET))).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut names: Vec<_> = response.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["connection", "sec-websocket-accept", "upgrade"]);
    round_trip(&mut client, b"hello through the tunnel").await;
    assert_eq!(edge.edge.stats().tunnels_opened, 1);
}

#[tokio::test]
async fn subprotocols_are_not_echoed() {
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;
    let mut stream = tls_stream(edge.address, edge.pki.ca_cert()).await;
    let request = upgrade_request("Sec-WebSocket-Protocol: postgres\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut byte)
            .await
            .unwrap();
        head.push(byte[0]);
    }
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\n\r\n"
    );
}

#[tokio::test]
async fn missing_or_wrong_tokens_get_403() {
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;
    assert_eq!(edge.refused_status(None).await, 403);
    assert_eq!(
        edge.refused_status(Some(("wrong.access", TOKEN_SECRET)))
            .await,
        403
    );
    assert_eq!(
        edge.refused_status(Some((TOKEN_ID, "wrong-secret"))).await,
        403
    );
    let stats = edge.edge.stats();
    assert_eq!(stats.refused_with(403), 3);
    assert_eq!(stats.tunnels_opened, 0);
}

#[tokio::test]
async fn login_only_redirects_to_the_access_login_page() {
    let (_, dialer, _origin) = echo_origin().await;
    let access = Arc::new(AccessControl::new(TokenSet::login_only()));
    let edge = TestEdge::start_with(EdgeConfig::default(), access, dialer).await;
    match edge.connect(Some((TOKEN_ID, TOKEN_SECRET))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 302);
            let location = response.headers()["location"].to_str().unwrap();
            assert!(
                location.starts_with("/cdn-cgi/access/login/localhost?"),
                "{location}"
            );
        }
        other => panic!("expected a 302, got {other:?}"),
    }
    let probe = edge
        .raw(b"HEAD / HTTP/1.1\r\nHost: localhost\r\nCf-Access-Metadata-Request: true\r\n\r\n")
        .await;
    assert!(probe.starts_with("HTTP/1.1 302 Found\r\n"), "{probe}");
    assert!(
        probe.contains("Location: /cdn-cgi/access/login/"),
        "{probe}"
    );
    assert!(
        probe.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {probe}"
    );
    assert_eq!(edge.edge.stats().refused_with(302), 2);
}

#[tokio::test]
async fn an_unreachable_origin_gets_502_from_cloudflared() {
    let dialer = Arc::new(reference_proxy::stream::TcpDialer::new(
        "127.0.0.1",
        closed_port(),
    ));
    let edge = TestEdge::start(EdgeConfig::default(), dialer).await;
    match edge.connect(Some((TOKEN_ID, TOKEN_SECRET))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 502);
            assert_eq!(
                response.headers()["cf-cloudflared-response-meta"],
                r#"{"src":"cloudflared"}"#
            );
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(edge.edge.stats().refused_with(502), 1);
}

#[tokio::test]
async fn an_origin_that_never_answers_gets_502_after_the_dial_timeout() {
    let config = EdgeConfig {
        dial_timeout: Duration::from_millis(200),
        ..EdgeConfig::default()
    };
    let edge = TestEdge::start(config, Arc::new(HangingDialer)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        edge.refused_status(Some((TOKEN_ID, TOKEN_SECRET))).await,
        502
    );
    assert!(started.elapsed() < PROMPTLY);
}

#[tokio::test]
async fn the_origin_is_not_dialled_for_refused_upgrades() {
    let mut origin = TestOrigin::start().await;
    let edge = TestEdge::start(EdgeConfig::default(), origin.dialer()).await;
    assert_eq!(edge.refused_status(None).await, 403);
    let _client = edge.tunnel().await;
    // The first connection the origin sees is the admitted tunnel's.
    let _first = origin.accept().await;
    assert_eq!(edge.edge.stats().tunnels_opened, 1);
}

#[tokio::test]
async fn requests_that_are_not_upgrades_get_400() {
    let (edge, _origin) = echo_edge(EdgeConfig::default()).await;
    let plain = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nCf-Access-Client-Id: {TOKEN_ID}\r\n\
         Cf-Access-Client-Secret: {TOKEN_SECRET}\r\n\r\n"
    );
    let response = edge.raw(plain.as_bytes()).await;
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );
    let garbage = edge.raw(b"\x16\x03\x01 this is not HTTP\r\n\r\n").await;
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    assert_eq!(edge.edge.stats().refused_with(400), 2);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let config = EdgeConfig {
        handshake_timeout: Duration::from_millis(300),
        ..EdgeConfig::default()
    };
    let (edge, _origin) = echo_edge(config).await;
    let mut stream = tls_stream(edge.address, edge.pki.ca_cert()).await;
    let mut buffer = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buffer);
    let _ = tokio::time::timeout(PROMPTLY, read)
        .await
        .expect("the edge hangs up on a silent client");
    assert!(buffer.is_empty());
    edge.wait_for("handshake failure counted", |s| s.handshake_failures == 1)
        .await;
}

#[tokio::test]
async fn rotation_admits_both_tokens_then_only_the_new_one_without_cutting_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    let both = "[[tokens]]\nid = \"old.access\"\nsecret = \"old-secret-1\"\n\
                [[tokens]]\nid = \"new.access\"\nsecret = \"new-secret-2\"\n";
    std::fs::write(&path, both).unwrap();
    let access = Arc::new(AccessControl::new(TokenSet::load(&path).unwrap()));
    let watcher = access.watch_file(path.clone());
    let (_, dialer, _origin) = echo_origin().await;
    let edge = TestEdge::start_with(EdgeConfig::default(), access.clone(), dialer).await;

    let (mut old_tunnel, _) = edge
        .connect(Some(("old.access", "old-secret-1")))
        .await
        .unwrap();
    let (mut new_tunnel, _) = edge
        .connect(Some(("new.access", "new-secret-2")))
        .await
        .unwrap();
    round_trip(&mut old_tunnel, b"before rotation").await;

    // Atomic replace, as a deployment would do it.
    let staged = dir.path().join("tokens.toml.new");
    std::fs::write(
        &staged,
        "[[tokens]]\nid = \"new.access\"\nsecret = \"new-secret-2\"\n",
    )
    .unwrap();
    std::fs::rename(&staged, &path).unwrap();
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while access.current().tokens().len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the file was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        edge.refused_status(Some(("old.access", "old-secret-1")))
            .await,
        403
    );
    let (mut newest, _) = edge
        .connect(Some(("new.access", "new-secret-2")))
        .await
        .unwrap();
    round_trip(&mut newest, b"after rotation").await;
    round_trip(&mut old_tunnel, b"the old tunnel survives the reload").await;
    round_trip(&mut new_tunnel, b"and so does the other").await;
    watcher.abort();
}

#[tokio::test]
async fn a_broken_token_file_keeps_the_previous_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        format!("[[tokens]]\nid = \"{TOKEN_ID}\"\nsecret = \"{TOKEN_SECRET}\"\n"),
    )
    .unwrap();
    let access = AccessControl::new(TokenSet::load(&path).unwrap());
    std::fs::write(&path, "[[tokens]\nid = ").unwrap();
    assert!(access.reload_from(&path).is_err());
    assert_eq!(access.current().token_ids(), [TOKEN_ID]);
    std::fs::write(&path, "policy = \"login-only\"\n").unwrap();
    access.reload_from(&path).unwrap();
    assert_eq!(access.current().policy(), AccessPolicy::LoginOnly);
}
