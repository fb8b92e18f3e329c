//! Goal: the `reference-proxy` binary works as documented: `--help` names every flag, it
//! serves clients and Prometheus metrics, stops cleanly on SIGTERM, and its logs (at debug
//! level) never contain a password.
//! Method: run the compiled binary against a real Postgres, talk to it with tokio-postgres and
//! a raw HTTP request, signal it, and read its stderr.

mod common;

use common::postgres;
use fixtures::Role;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_reference-proxy");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn help_explains_every_flag() {
    let output = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--listen",
        "--origin",
        "--pool-size",
        "--pool-min",
        "--connect-timeout",
        "--acquire-timeout",
        "--idle-timeout",
        "--statement-timeout",
        "--client-idle-timeout",
        "--health-check-after",
        "--shutdown-grace",
        "--auth-method",
        "--client-user",
        "--allow-cleartext-without-tls",
        "--tls-cert",
        "--tls-key",
        "--metrics",
        "--max-message-size",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn a_bad_origin_url_is_a_clear_startup_error() {
    let output = Command::new(BINARY)
        .args(["--origin", "mysql://x@y/z"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--origin"), "{stderr}");
}

async fn http_get(port: u16, path: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect metrics");
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    socket
        .read_to_string(&mut response)
        .await
        .expect("response");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_clients_and_metrics_and_stops_on_sigterm() {
    let Some(pg) = postgres("the_binary_serves_clients_and_metrics_and_stops_on_sigterm") else {
        return;
    };
    let (listen, metrics) = (free_port(), free_port());
    let mut child = Command::new(BINARY)
        .args([
            "--origin",
            &format!("{}?sslmode=disable", pg.url(Role::Scram)),
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--metrics",
            &format!("127.0.0.1:{metrics}"),
            "--client-user",
            "app:client-secret-123",
        ])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let conninfo = format!(
        "host=127.0.0.1 port={listen} user=app password=client-secret-123 dbname={} sslmode=disable",
        pg.database()
    );
    let mut client = None;
    for _ in 0..100 {
        if let Ok((c, connection)) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = client.expect("the proxy accepted a client");
    let value: i32 = client
        .query_one("SELECT 7", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(value, 7);
    let wrong = conninfo.replace("client-secret-123", "not-it-456");
    assert!(
        tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
            .await
            .is_err()
    );
    let page = http_get(metrics, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("elephant_proxy_clients_connected 1"),
        "{page}"
    );
    assert!(
        page.contains("elephant_proxy_client_auth_failures_total 1"),
        "{page}"
    );
    assert!(
        page.contains("elephant_proxy_origin_connections{state=\"idle\"} 1"),
        "{page}"
    );
    drop(client);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let status = child.wait().expect("wait");
        let mut logs = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut logs);
        }
        (status, logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(20), exit)
        .await
        .expect("stopped in time")
        .expect("task");
    assert!(status.success(), "exit status {status:?}\n{logs}");
    assert!(logs.contains("shutdown requested"), "{logs}");
    for secret in ["client-secret-123", "not-it-456", pg.password(Role::Scram)] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
}
