//! Goal: bytes move between the WebSocket and the origin exactly as cloudflared moves them —
//! binary messages only (text dropped), inbound messages cut to 16 KiB, fragments reassembled,
//! one binary frame per origin read, Ping + empty Pong keepalives, a client Close echoed, and
//! no half-close: EOF on either side (or `kill_all_tunnels`) drops both.
//! Method: an in-process edge with TLS, an origin whose sockets the test holds, and a
//! tokio-tungstenite client (raw frames where the quirk needs them).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tunnel_edge::EdgeConfig;

/// cloudflared's message limit.
const LIMIT: usize = 16_384;

async fn setup(config: EdgeConfig) -> (TestEdge, Client, TcpStream, TestOrigin) {
    let mut origin = TestOrigin::start().await;
    let edge = TestEdge::start(config, origin.dialer()).await;
    let client = edge.tunnel().await;
    let upstream = origin.accept().await;
    (edge, client, upstream, origin)
}

fn binary(data: impl Into<Bytes>) -> Message {
    Message::Binary(data.into())
}

/// The next data message from the edge (skipping keepalives).
async fn next_data(client: &mut Client) -> Bytes {
    loop {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => return data,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// Asserts the client's connection ends without a Close frame from the edge.
async fn expect_dropped_without_close(client: &mut Client) {
    loop {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(None | Some(Err(_))) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Close(frame)))) => panic!("unexpected Close frame {frame:?}"),
            Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
            Err(_) => panic!("the tunnel was not closed"),
        }
    }
}

#[tokio::test]
async fn bytes_flow_both_ways() {
    let (edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    client.send(binary(&b"SELECT 1"[..])).await.unwrap();
    assert_eq!(read_exact(&mut upstream, 8).await, b"SELECT 1");
    upstream.write_all(b"one row").await.unwrap();
    assert_eq!(next_data(&mut client).await, &b"one row"[..]);

    // Larger volumes in both directions, each message within the limit.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in payload.chunks(LIMIT) {
        client.send(binary(chunk.to_vec())).await.unwrap();
    }
    assert_eq!(read_exact(&mut upstream, payload.len()).await, payload);
    upstream.write_all(&payload).await.unwrap();
    let mut received = Vec::new();
    while received.len() < payload.len() {
        let data = next_data(&mut client).await;
        assert!(
            data.len() <= LIMIT,
            "one frame per origin read of at most 16 KiB"
        );
        received.extend_from_slice(&data);
    }
    assert_eq!(received, payload);
    drop(client);
    expect_eof(&mut upstream).await;
    edge.wait_for("tunnel closed", |s| s.live_tunnels == 0)
        .await;
    let stats = edge.edge.stats();
    assert_eq!(stats.bytes_to_origin, 8 + payload.len() as u64);
    assert_eq!(stats.bytes_from_origin, 7 + payload.len() as u64);
}

#[tokio::test]
async fn text_messages_are_silently_discarded() {
    let (edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    client.send(Message::text("dropped")).await.unwrap();
    client.send(binary(&b"kept"[..])).await.unwrap();
    assert_eq!(read_exact(&mut upstream, 4).await, b"kept");
    drop(client);
    expect_eof(&mut upstream).await;
    edge.wait_for("text counted", |s| s.discarded_text_messages == 1)
        .await;
}

#[tokio::test]
async fn messages_over_16_kib_are_truncated() {
    let (edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    client.send(binary(big.clone())).await.unwrap();
    client.send(binary(&b"next"[..])).await.unwrap();
    let arrived = read_exact(&mut upstream, LIMIT + 4).await;
    assert_eq!(&arrived[..LIMIT], &big[..LIMIT]);
    assert_eq!(
        &arrived[LIMIT..],
        b"next",
        "the tail of the big message was dropped"
    );
    drop(client);
    expect_eof(&mut upstream).await;
    edge.wait_for("truncation counted", |s| s.truncated_messages == 1)
        .await;
}

#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    let (_edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    let parts: [&[u8]; 3] = [b"frag", b"ment", b"ed!"];
    client
        .send(Message::Frame(Frame::message(
            parts[0],
            OpCode::Data(Data::Binary),
            false,
        )))
        .await
        .unwrap();
    client
        .send(Message::Frame(Frame::message(
            parts[1],
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
    client
        .send(Message::Frame(Frame::message(
            parts[2],
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
    assert_eq!(read_exact(&mut upstream, 11).await, b"fragmented!");
}

#[tokio::test]
async fn keepalives_are_a_ping_and_an_empty_pong() {
    let config = EdgeConfig {
        ping_interval: Duration::from_millis(200),
        ..EdgeConfig::default()
    };
    let (_edge, mut client, _upstream, _origin) = setup(config).await;
    let (mut pinged, mut ponged) = (false, false);
    while !(pinged && ponged) {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pinged = true,
            Ok(Some(Ok(Message::Pong(data)))) => {
                assert!(data.is_empty(), "the unsolicited pong is empty");
                ponged = true;
            }
            other => panic!("expected keepalives, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_pings_are_answered() {
    let (_edge, mut client, _upstream, _origin) = setup(EdgeConfig::default()).await;
    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match tokio::time::timeout(PROMPTLY, client.next()).await {
        Ok(Some(Ok(Message::Pong(data)))) => assert_eq!(data, &b"are you there"[..]),
        other => panic!("expected the pong, got {other:?}"),
    }
}

#[tokio::test]
async fn origin_eof_closes_the_websocket_without_a_close_frame() {
    let (edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    upstream.write_all(b"last words").await.unwrap();
    drop(upstream);
    assert_eq!(next_data(&mut client).await, &b"last words"[..]);
    expect_dropped_without_close(&mut client).await;
    edge.wait_for("tunnel closed", |s| s.tunnels_closed == 1)
        .await;
}

#[tokio::test]
async fn client_eof_closes_the_origin_connection() {
    let (edge, client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    drop(client);
    expect_eof(&mut upstream).await;
    edge.wait_for("tunnel closed", |s| s.live_tunnels == 0)
        .await;
}

#[tokio::test]
async fn a_client_close_is_echoed_and_the_origin_closed() {
    let (_edge, mut client, mut upstream, _origin) = setup(EdgeConfig::default()).await;
    client.close(None).await.unwrap();
    let mut echoed = false;
    while let Ok(Some(message)) = tokio::time::timeout(PROMPTLY, client.next()).await {
        match message {
            Ok(Message::Close(_)) => echoed = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(echoed, "the edge answers Close with Close");
    expect_eof(&mut upstream).await;
}

#[tokio::test]
async fn kill_all_tunnels_drops_every_live_tunnel() {
    let mut origin = TestOrigin::start().await;
    let edge = TestEdge::start(EdgeConfig::default(), origin.dialer()).await;
    let mut first = edge.tunnel().await;
    let mut first_up = origin.accept().await;
    let mut second = edge.tunnel().await;
    let mut second_up = origin.accept().await;
    edge.wait_for("two live", |s| s.live_tunnels == 2).await;

    edge.edge.kill_all_tunnels();
    expect_dropped_without_close(&mut first).await;
    expect_dropped_without_close(&mut second).await;
    expect_eof(&mut first_up).await;
    expect_eof(&mut second_up).await;
    edge.wait_for("none live", |s| {
        s.live_tunnels == 0 && s.tunnels_closed == 2
    })
    .await;

    let mut after = edge.tunnel().await;
    let mut after_up = origin.accept().await;
    after.send(binary(&b"still serving"[..])).await.unwrap();
    assert_eq!(read_exact(&mut after_up, 13).await, b"still serving");
}

#[tokio::test]
async fn unmasked_client_frames_end_the_tunnel() {
    let mut origin = TestOrigin::start().await;
    let edge = TestEdge::start(EdgeConfig::default(), origin.dialer()).await;
    let mut stream = tls_stream(edge.address, edge.pki.ca_cert()).await;
    stream
        .write_all(upgrade_request("").as_bytes())
        .await
        .unwrap();
    let mut upstream = origin.accept().await;
    let mut head = [0u8; 129];
    stream.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    // FIN + binary, length 3, mask bit clear.
    stream
        .write_all(&[0x82, 0x03, b'a', b'b', b'c'])
        .await
        .unwrap();
    expect_eof(&mut upstream).await;
}

#[tokio::test]
async fn frames_sent_right_behind_the_request_are_not_lost() {
    let mut origin = TestOrigin::start().await;
    let edge = TestEdge::start(EdgeConfig::default(), origin.dialer()).await;
    let mut stream = tls_stream(edge.address, edge.pki.ca_cert()).await;
    let mut bytes = upgrade_request("").into_bytes();
    // FIN + binary, masked, length 5, all-zero mask key (XOR with zero leaves the payload).
    bytes.extend_from_slice(&[0x82, 0x85, 0, 0, 0, 0]);
    bytes.extend_from_slice(b"early");
    stream.write_all(&bytes).await.unwrap();
    let mut upstream = origin.accept().await;
    assert_eq!(read_exact(&mut upstream, 5).await, b"early");
}
