//! Goal: the `tunnel-edge` binary works as documented: `--help` names every flag, bad flags are
//! clear startup errors naming the flag, it serves TLS tunnels and announces its address on
//! stdout, reloads its token file on SIGHUP without cutting tunnels, exits cleanly on SIGTERM,
//! and its logs never contain a secret.
//! Method: run the compiled binary with a throwaway PKI and an echo origin, talk to it with the
//! cloudflared-like client, signal it with `kill`, and read its stderr from a file.

mod common;

use common::*;
use fixtures::TestPki;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_tunnel-edge");
const STARTUP_LINE: &str = "tunnel-edge listening on ";

#[test]
fn help_explains_every_flag() {
    let output = std::process::Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--origin",
        "--cert",
        "--key",
        "--service-token",
        "--tokens",
        "--login-only",
        "--ping-interval",
        "--dial-timeout",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn a_bad_origin_scheme_is_a_startup_error_naming_the_flag() {
    let output = std::process::Command::new(BINARY)
        .args(["--origin", "postgres://db:5432", "--login-only"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--origin"), "{stderr}");
    assert!(stderr.contains("tcp://"), "{stderr}");
}

#[test]
fn a_bad_service_token_is_reported_without_echoing_it() {
    let output = std::process::Command::new(BINARY)
        .args([
            "--origin",
            "tcp://127.0.0.1:5432",
            "--listen",
            "127.0.0.1:0",
            "--service-token",
            "no-colon-secret-value",
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--service-token"), "{stderr}");
    assert!(!stderr.contains("no-colon-secret-value"), "{stderr}");
}

/// The running binary and where its stderr goes.
struct Running {
    child: Child,
    address: SocketAddr,
    log: tempfile::NamedTempFile,
}

async fn spawn(pki: &TestPki, origin: SocketAddr, extra: &[&str]) -> Running {
    let log = tempfile::NamedTempFile::new().unwrap();
    let origin = format!("tcp://{origin}");
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--origin", &origin])
        .arg("--cert")
        .arg(pki.server_cert())
        .arg("--key")
        .arg(pki.server_key())
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tunnel-edge");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PROMPTLY, lines.next_line())
        .await
        .expect("startup line in time")
        .unwrap()
        .expect("a startup line");
    let address = line
        .strip_prefix(STARTUP_LINE)
        .unwrap_or_else(|| panic!("unexpected stdout: {line}"))
        .parse()
        .unwrap();
    Running {
        child,
        address,
        log,
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn echo(client: &mut Client, payload: &'static [u8]) {
    client.send(Message::Binary(payload.into())).await.unwrap();
    loop {
        match tokio::time::timeout(PROMPTLY, client.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => return assert_eq!(data, payload),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

async fn stop(mut running: Running) -> String {
    signal(&running.child, "TERM");
    let status = tokio::time::timeout(PROMPTLY, running.child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    std::fs::read_to_string(running.log.path()).unwrap()
}

#[tokio::test]
async fn serves_tls_tunnels_and_stops_on_sigterm() {
    let pki = TestPki::generate().unwrap();
    let (origin, _, _echo) = echo_origin().await;
    let token = format!("{TOKEN_ID}:{TOKEN_SECRET}");
    let running = spawn(&pki, origin, &["--service-token", &token]).await;

    let (mut client, _) = connect_tls(
        running.address,
        pki.ca_cert(),
        Some((TOKEN_ID, TOKEN_SECRET)),
    )
    .await
    .expect("tunnel");
    echo(&mut client, b"through the binary").await;
    let denied = connect_tls(running.address, pki.ca_cert(), None).await;
    assert_eq!(denied.err().as_ref().and_then(http_status), Some(403));
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let logs = stop(running).await;
    assert!(logs.contains("tunnel closed"), "{logs}");
    assert!(logs.contains("tunnel upgrade refused"), "{logs}");
    assert!(!logs.contains(TOKEN_SECRET), "secret in logs:\n{logs}");
}

/// Rewrites `path` with `text` (same length as before) and restores its modification time, so
/// only a SIGHUP can notice.
fn rewrite_unnoticed(path: &Path, text: &str) {
    let before = std::fs::metadata(path).unwrap();
    assert_eq!(before.len(), text.len() as u64);
    std::fs::write(path, text).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_token_file_without_cutting_tunnels() {
    let pki = TestPki::generate().unwrap();
    let (origin, _, _echo) = echo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.toml");
    std::fs::write(
        &path,
        "[[tokens]]\nid = \"old.access\"\nsecret = \"secret-A\"\n",
    )
    .unwrap();
    let tokens = path.to_str().unwrap();
    let running = spawn(&pki, origin, &["--tokens", tokens]).await;
    let ca = pki.ca_cert();

    let (mut old_tunnel, _) = connect_tls(running.address, ca, Some(("old.access", "secret-A")))
        .await
        .expect("old token admitted");
    rewrite_unnoticed(
        &path,
        "[[tokens]]\nid = \"new.access\"\nsecret = \"secret-B\"\n",
    );
    signal(&running.child, "HUP");

    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let attempt = connect_tls(running.address, ca, Some(("new.access", "secret-B"))).await;
        if attempt.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = connect_tls(running.address, ca, Some(("old.access", "secret-A"))).await;
    assert_eq!(refused.err().as_ref().and_then(http_status), Some(403));
    echo(&mut old_tunnel, b"still open after the reload").await;

    let logs = stop(running).await;
    assert!(logs.contains("service tokens loaded"), "{logs}");
    assert!(
        !logs.contains("secret-A") && !logs.contains("secret-B"),
        "{logs}"
    );
}
