//! Goal: the proxy reaches Postgres through the WebSocket tunnel — TLS(WS(TLS(TCP))) — with
//! pooling, prepared statements and cancel unchanged, and every Access or tunnel failure
//! reaches the client as an error it can act on, with no later client getting a wrong answer.
//! Method: a real Postgres (with and without TLS), the in-process tunnel edge (Access checks,
//! cloudflared framing) in front of it, and the in-process proxy dialling the edge.

mod common;

use common::{TestProxy, sqlstate};
use fixtures::{Postgres, PostgresConfig, Role, TestPki};
use futures_util::{SinkExt, StreamExt, pin_mut};
use md5::{Digest, Md5};
use reference_proxy::stream::TcpDialer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tunnel_edge::{AccessControl, Edge, EdgeConfig, EdgeTls, ServiceToken, TokenSet};

const TOKEN_ID: &str = "3f1c.access";
const TOKEN_SECRET: &str = "tunnel-secret-0a9b8c7d";

/// An edge on 127.0.0.1 in front of `pg`, with TLS from its own PKI.
struct TunnelEdge {
    port: u16,
    edge: Arc<Edge>,
    access: Arc<AccessControl>,
    pki: TestPki,
    _stop: oneshot::Sender<()>,
}

impl TunnelEdge {
    async fn start(pg: &Postgres, set: TokenSet) -> TunnelEdge {
        Self::start_to(pg.port(), set).await
    }

    async fn start_to(origin_port: u16, set: TokenSet) -> TunnelEdge {
        let pki = TestPki::generate().expect("pki");
        let tls = EdgeTls::from_pem_files(pki.server_cert(), pki.server_key()).expect("edge tls");
        let access = Arc::new(AccessControl::new(set));
        let origin = Arc::new(TcpDialer::new("127.0.0.1", origin_port));
        let edge = Arc::new(Edge::new(
            EdgeConfig::default(),
            access.clone(),
            origin,
            Some(tls),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(edge.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        TunnelEdge {
            port,
            edge,
            access,
            pki,
            _stop: stop,
        }
    }

    /// Proxy flags to use this edge with the given token.
    fn flags(&self, token: Option<(&str, &str)>) -> Vec<String> {
        let mut flags = vec![
            "--tunnel".to_string(),
            format!("wss://localhost:{}/", self.port),
            "--tunnel-ca".to_string(),
            self.pki.ca_cert().display().to_string(),
        ];
        if let Some((id, secret)) = token {
            flags.extend([
                "--access-client-id".to_string(),
                id.to_string(),
                "--access-client-secret".to_string(),
                secret.to_string(),
            ]);
        }
        flags
    }
}

fn token_set(tokens: &[(&str, &str)]) -> TokenSet {
    TokenSet::service_auth(
        tokens
            .iter()
            .map(|(id, secret)| ServiceToken::new(*id, *secret))
            .collect(),
    )
    .expect("token set")
}

/// Origin URL for `pg` as seen from inside the tunnel.
fn origin_url(pg: &Postgres, host: &str, query: &str) -> String {
    format!(
        "postgres://{}:{}@{host}:{}/{}?{query}",
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.port(),
        pg.database()
    )
}

async fn start_proxy(origin: &str, flags: &[String], extra: &[&str]) -> TestProxy {
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    TestProxy::start_with_origin(origin, &args)
        .await
        .expect("proxy starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_prepared_statements_and_cancel_work_through_the_tunnel() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) = Postgres::start_or_skip(
        "queries_through_the_tunnel",
        PostgresConfig::default().with_tls(&pki),
    ) else {
        return;
    };
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let ca = pg.tls().expect("tls").ca().display().to_string();
    for (label, origin) in [
        (
            "no Postgres TLS inside",
            origin_url(&pg, "127.0.0.1", "sslmode=disable"),
        ),
        (
            "Postgres verify-full inside",
            origin_url(
                &pg,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
        ),
    ] {
        let proxy = start_proxy(
            &origin,
            &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))),
            &["--pool-size", "2"],
        )
        .await;
        let client = proxy.connect(&pg).await;
        let ssl: String = client
            .query_one(
                "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect(label)
            .get(0);
        assert_eq!(
            ssl,
            if label.starts_with("no") {
                "false"
            } else {
                "true"
            },
            "{label}"
        );
        let statement = client.prepare("SELECT $1::int * 2").await.expect("prepare");
        for i in 0..20i32 {
            let doubled: i32 = client
                .query_one(&statement, &[&i])
                .await
                .expect("execute")
                .get(0);
            assert_eq!(doubled, i * 2);
        }
        let token = client.cancel_token();
        let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel sent");
        let cancelled = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("cancelled in time")
            .expect("task");
        assert_eq!(
            sqlstate(&cancelled.expect_err("cancelled")).as_deref(),
            Some("57014"),
            "{label}"
        );
        proxy.stop().await;
    }
    assert!(
        edge.edge.stats().tunnels_opened >= 3,
        "cancel requests open their own tunnel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_runs_through_the_tunnel() {
    let Some(pg) = Postgres::start_or_skip(
        "pgbench_prepared_runs_through_the_tunnel",
        PostgresConfig::default(),
    ) else {
        return;
    };
    let init = std::process::Command::new(pg.bin_dir().join("pgbench"))
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            pg.user(Role::Scram),
            pg.database(),
        ])
        .env("PGPASSWORD", pg.password(Role::Scram))
        .output()
        .expect("pgbench -i");
    assert!(init.status.success());
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let proxy = start_proxy(
        &origin_url(&pg, "127.0.0.1", "sslmode=disable"),
        &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))),
        &["--pool-size", "4"],
    )
    .await;
    let port = proxy.address.port().to_string();
    let (user, password, database) = (
        pg.user(Role::Scram).to_string(),
        pg.password(Role::Scram).to_string(),
        pg.database().to_string(),
    );
    let bin = pg.bin_dir().join("pgbench");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args([
                "-n",
                "-c",
                "8",
                "-j",
                "2",
                "-t",
                "20",
                "-M",
                "prepared",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                &user,
                &database,
            ])
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .output()
            .expect("pgbench")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("160/160"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    proxy.stop().await;
}

/// Connects a client through a proxy using `flags`, returning the error message it gets.
async fn connect_error(pg: &Postgres, origin: &str, flags: &[String]) -> (String, String) {
    let proxy = start_proxy(origin, flags, &[]).await;
    let error = tokio_postgres::connect(&proxy.conninfo(pg), tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    let db = error
        .as_db_error()
        .map(|e| (e.code().code().to_string(), e.message().to_string()));
    proxy.stop().await;
    db.unwrap_or_else(|| panic!("expected an ErrorResponse, got {error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_failure_is_explained_to_the_client() {
    let Some(pg) = Postgres::start_or_skip(
        "every_access_failure_is_explained_to_the_client",
        PostgresConfig::default(),
    ) else {
        return;
    };
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let origin = origin_url(&pg, "127.0.0.1", "sslmode=disable");
    let cases = [
        ("no token", None, "HTTP 403"),
        (
            "wrong id",
            Some(("nope.access", TOKEN_SECRET)),
            "refused the Access service token (HTTP 403)",
        ),
        (
            "wrong secret",
            Some((TOKEN_ID, "not-the-secret")),
            "refused the Access service token (HTTP 403)",
        ),
    ];
    for (label, token, expected) in cases {
        let (code, message) = connect_error(&pg, &origin, &edge.flags(token)).await;
        assert_eq!(code, "58000", "{label}");
        assert!(
            message.starts_with("Server connection attempt failed:") && message.contains(expected),
            "{label}: {message}"
        );
        assert!(
            !message.contains(TOKEN_SECRET),
            "{label}: the secret reached the client"
        );
    }
    edge.access.replace(TokenSet::login_only());
    let (_, message) =
        connect_error(&pg, &origin, &edge.flags(Some((TOKEN_ID, TOKEN_SECRET)))).await;
    assert!(
        message.contains("no Service Auth policy (HTTP 302"),
        "{message}"
    );
    assert!(edge.edge.stats().refused_with(403) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_revocation_apply_to_new_tunnels_only() {
    let Some(pg) = Postgres::start_or_skip(
        "rotation_and_revocation_apply_to_new_tunnels_only",
        PostgresConfig::default(),
    ) else {
        return;
    };
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let origin = origin_url(&pg, "127.0.0.1", "sslmode=disable");
    let old = start_proxy(
        &origin,
        &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))),
        &["--pool-size", "1"],
    )
    .await;
    let old_client = old.connect(&pg).await;
    old_client
        .simple_query("SELECT 1")
        .await
        .expect("old token works");
    // Rotation: both tokens valid at once.
    edge.access.replace(token_set(&[
        (TOKEN_ID, TOKEN_SECRET),
        ("new.access", "new-secret"),
    ]));
    let new = start_proxy(
        &origin,
        &edge.flags(Some(("new.access", "new-secret"))),
        &[],
    )
    .await;
    new.connect(&pg)
        .await
        .simple_query("SELECT 1")
        .await
        .expect("new token works");
    // Revocation of the old token: its live pooled tunnel keeps working, new tunnels are refused.
    edge.access
        .replace(token_set(&[("new.access", "new-secret")]));
    old_client
        .simple_query("SELECT 2")
        .await
        .expect("a live tunnel survives the reload");
    let (_, message) =
        connect_error(&pg, &origin, &edge.flags(Some((TOKEN_ID, TOKEN_SECRET)))).await;
    assert!(message.contains("HTTP 403"), "{message}");
    old.stop().await;
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_failures_are_clear_errors() {
    let Some(pg) = Postgres::start_or_skip(
        "tunnel_failures_are_clear_errors",
        PostgresConfig::default(),
    ) else {
        return;
    };
    let origin = origin_url(&pg, "127.0.0.1", "sslmode=disable");
    // The database behind the tunnel is down: cloudflared answers 502.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dead = TunnelEdge::start_to(closed_port, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let (_, message) =
        connect_error(&pg, &origin, &dead.flags(Some((TOKEN_ID, TOKEN_SECRET)))).await;
    assert!(
        message.contains("cloudflared cannot reach the database (HTTP 502)"),
        "{message}"
    );
    // The tunnel host's certificate is not signed by the CA the proxy trusts.
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let mut flags = edge.flags(Some((TOKEN_ID, TOKEN_SECRET)));
    flags[3] = edge.pki.other_ca_cert().display().to_string();
    let (_, message) = connect_error(&pg, &origin, &flags).await;
    assert!(
        message.contains("TLS verification of the tunnel host"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_dropped_mid_transaction_fails_that_client_and_nobody_else() {
    let Some(pg) = Postgres::start_or_skip(
        "a_tunnel_dropped_mid_transaction",
        PostgresConfig::default(),
    ) else {
        return;
    };
    pg.psql(Role::Scram, "CREATE TABLE dropped (x int)")
        .expect("setup");
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let proxy = start_proxy(
        &origin_url(&pg, "127.0.0.1", "sslmode=disable"),
        &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))),
        &["--pool-size", "2"],
    )
    .await;
    let victim = proxy.connect(&pg).await;
    victim
        .batch_execute("BEGIN; INSERT INTO dropped VALUES (1)")
        .await
        .expect("open transaction");
    edge.edge.kill_all_tunnels();
    let error = victim
        .batch_execute("COMMIT")
        .await
        .expect_err("the tunnel is gone");
    assert!(
        error.is_closed()
            || error
                .as_db_error()
                .is_some_and(|e| e.message().starts_with("server connection lost")),
        "{error:?}"
    );
    // The pool recovers with new tunnels, and the interrupted transaction did not commit.
    let next = proxy.connect(&pg).await;
    let count: i64 = next
        .query_one("SELECT count(*) FROM dropped", &[])
        .await
        .expect("recovered")
        .get(0);
    assert_eq!(count, 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_copy_crosses_tls_in_websocket_in_tls_intact() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) = Postgres::start_or_skip(
        "a_100_mb_copy_crosses_the_tunnel",
        PostgresConfig::default().with_tls(&pki),
    ) else {
        return;
    };
    pg.psql(Role::Scram, "CREATE TABLE bulk (id int, payload text)")
        .expect("setup");
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let origin = origin_url(&pg, "127.0.0.1", "sslmode=require");
    let proxy = start_proxy(&origin, &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))), &[]).await;
    let client = proxy.connect(&pg).await;
    const ROWS: usize = 100_000;
    let payload = "x".repeat(1000);
    let mut sent = Md5::new();
    let sink = client
        .copy_in("COPY bulk FROM STDIN")
        .await
        .expect("copy in");
    pin_mut!(sink);
    let mut chunk = String::new();
    for id in 0..ROWS {
        chunk.push_str(&format!("{id}\t{payload}{id}\n"));
        if chunk.len() > 1 << 20 || id + 1 == ROWS {
            sent.update(chunk.as_bytes());
            sink.send(bytes::Bytes::from(std::mem::take(&mut chunk)))
                .await
                .expect("send");
        }
    }
    assert_eq!(sink.finish().await.expect("finish"), ROWS as u64);
    let sent = format!("{:x}", sent.finalize());
    let stored: String = client
        .query_one(
            "SELECT md5(string_agg(id || E'\\t' || payload || E'\\n', '' ORDER BY id)) FROM bulk",
            &[],
        )
        .await
        .expect("server checksum")
        .get(0);
    assert_eq!(
        stored, sent,
        "the origin stored different bytes than the client sent"
    );
    let stream = client
        .copy_out("COPY (SELECT * FROM bulk ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    pin_mut!(stream);
    let mut received = Md5::new();
    let mut total = 0usize;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes.expect("chunk");
        total += bytes.len();
        received.update(&bytes);
    }
    assert!(total > 100_000_000, "{total} bytes");
    assert_eq!(
        format!("{:x}", received.finalize()),
        sent,
        "the client received different bytes than were stored"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_through_the_tunnel() {
    let Some(pg) =
        Postgres::start_or_skip("psql_works_through_the_tunnel", PostgresConfig::default())
    else {
        return;
    };
    let edge = TunnelEdge::start(&pg, token_set(&[(TOKEN_ID, TOKEN_SECRET)])).await;
    let proxy = start_proxy(
        &origin_url(&pg, "127.0.0.1", "sslmode=disable"),
        &edge.flags(Some((TOKEN_ID, TOKEN_SECRET))),
        &[],
    )
    .await;
    let bin = pg.bin_dir().join("psql");
    let conninfo = proxy.conninfo(&pg);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args([
                "-X",
                "-A",
                "-t",
                "-d",
                &conninfo,
                "-c",
                "SELECT 'psql through the tunnel'",
            ])
            .env_clear()
            .output()
            .expect("psql")
    })
    .await
    .expect("task");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "psql through the tunnel"
    );
    proxy.stop().await;
}
