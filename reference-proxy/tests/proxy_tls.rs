//! Goal: TLS works at both ends: libpq clients verify the proxy's certificate (and bind SCRAM
//! to it), and the proxy honours every origin `sslmode`, client certificates, and reports
//! verification failures clearly.
//! Method: certificates generated per run (fixtures::TestPki), a real Postgres with TLS on,
//! psql as the TLS client, tokio-postgres (plain) for origin-side checks.

mod common;

use common::{TestProxy, sqlstate};
use fixtures::{Postgres, PostgresConfig, Role, TestPki, TlsFiles};
use std::process::Output;

fn tls_postgres(test: &str, pki: &TestPki) -> Option<Postgres> {
    Postgres::start_or_skip(test, PostgresConfig::default().with_tls(pki))
}

fn psql(pg: &Postgres, conninfo: &str, sql: &str) -> Output {
    std::process::Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-A", "-t", "-d", conninfo, "-c", sql])
        .env_clear()
        .output()
        .expect("run psql")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libpq_clients_verify_the_proxy_and_bind_scram_to_its_certificate() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) =
        Postgres::start_or_skip("libpq_clients_verify_the_proxy", PostgresConfig::default())
    else {
        return;
    };
    let cert = pki.server_cert().display().to_string();
    let key = pki.server_key().display().to_string();
    let proxy = TestProxy::start(&pg, &["--tls-cert", &cert, "--tls-key", &key]).await;
    let port = proxy.address.port();
    let base = format!(
        "host=localhost port={port} user={} password={} dbname={} sslrootcert={}",
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.database(),
        pki.ca_cert().display()
    );
    let sql = "SELECT 'tls works'";
    let verified = psql(
        &pg,
        &format!("{base} sslmode=verify-full channel_binding=require"),
        sql,
    );
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert_eq!(stdout(&verified), "tls works");
    let wrong_ca = format!("{base} sslmode=verify-full").replace(
        &pki.ca_cert().display().to_string(),
        &pki.other_ca_cert().display().to_string(),
    );
    let refused = psql(&pg, &wrong_ca, sql);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("certificate verify failed"),
        "{}",
        stderr(&refused)
    );
    let plain = psql(&pg, &format!("{base} sslmode=disable"), sql);
    assert!(
        plain.status.success(),
        "plaintext stays allowed: {}",
        stderr(&plain)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_passwords_are_refused_without_tls() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) = Postgres::start_or_skip(
        "cleartext_passwords_are_refused_without_tls",
        PostgresConfig::default(),
    ) else {
        return;
    };
    let cert = pki.server_cert().display().to_string();
    let key = pki.server_key().display().to_string();
    let proxy = TestProxy::start(
        &pg,
        &[
            "--auth-method",
            "password",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await;
    let base = format!(
        "host=localhost port={} user={} password={} dbname={}",
        proxy.address.port(),
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.database()
    );
    let plain = psql(&pg, &format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("cleartext password authentication requires TLS"),
        "{}",
        stderr(&plain)
    );
    let secured = psql(&pg, &format!("{base} sslmode=require"), "SELECT 1");
    assert!(secured.status.success(), "{}", stderr(&secured));
    proxy.stop().await;
}

/// Starts a proxy for `origin` and runs one query through it, returning the query's outcome.
async fn query_through(
    pg: &Postgres,
    origin: &str,
    extra: &[&str],
) -> Result<String, tokio_postgres::Error> {
    let proxy = TestProxy::start_with_origin(origin, extra)
        .await
        .expect("proxy starts");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app-secret dbname={} sslmode=disable",
        proxy.address.port(),
        pg.database()
    );
    let result = async {
        let (client, connection) =
            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.get::<_, String>(0))
    }
    .await;
    proxy.stop().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_origin_sslmode_behaves_like_libpq() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) = tls_postgres("every_origin_sslmode_behaves_like_libpq", &pki) else {
        return;
    };
    let app = ["--client-user", "app:app-secret"];
    let ca = pg.tls().expect("tls").ca().display().to_string();
    let scram = |host: &str, query: &str| {
        format!(
            "postgres://scram_user:scram_pw@{host}:{}/{}?{query}",
            pg.port(),
            pg.database()
        )
    };
    for (mode, host, query, expect_tls) in [
        (
            "disable",
            "127.0.0.1",
            "sslmode=disable".to_string(),
            "false",
        ),
        ("prefer", "127.0.0.1", "sslmode=prefer".to_string(), "true"),
        (
            "require",
            "127.0.0.1",
            "sslmode=require".to_string(),
            "true",
        ),
        (
            "verify-ca",
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            "true",
        ),
        (
            "verify-full",
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "true",
        ),
    ] {
        let ssl = query_through(&pg, &scram(host, &query), &app)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert_eq!(ssl, expect_tls, "sslmode={mode}");
    }
    // A role only allowed over TLS is refused without it, with Postgres's own message.
    let tls_only = format!(
        "postgres://tls_only_user:tls_only_pw@127.0.0.1:{}/{}?sslmode=disable",
        pg.port(),
        pg.database()
    );
    let error = query_through(&pg, &tls_only, &app)
        .await
        .expect_err("no TLS");
    assert_eq!(sqlstate(&error).as_deref(), Some("28000"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_authenticate_the_proxy_to_the_origin() {
    let pki = TestPki::generate().expect("pki");
    let Some(pg) = tls_postgres(
        "client_certificates_authenticate_the_proxy_to_the_origin",
        &pki,
    ) else {
        return;
    };
    let (cert, key) = pki.client_cert("cert_user").expect("client cert");
    let ca = pg.tls().expect("tls").ca().display().to_string();
    let origin = format!(
        "postgres://cert_user@localhost:{}/{}?sslmode=verify-full&sslrootcert={ca}&sslcert={}&sslkey={}",
        pg.port(),
        pg.database(),
        cert.display(),
        key.display()
    );
    let ssl = query_through(&pg, &origin, &["--client-user", "app:app-secret"])
        .await
        .expect("mTLS login");
    assert_eq!(ssl, "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_failures_are_reported_clearly() {
    let pki = TestPki::generate().expect("pki");
    let files = TlsFiles::new(pki.wrong_host_cert(), pki.wrong_host_key(), pki.ca_cert());
    let Some(pg) = Postgres::start_or_skip(
        "verification_failures_are_reported_clearly",
        PostgresConfig::default().with_tls_files(files),
    ) else {
        return;
    };
    let app = ["--client-user", "app:app-secret"];
    let url = |query: String| {
        format!(
            "postgres://scram_user:scram_pw@127.0.0.1:{}/{}?{query}",
            pg.port(),
            pg.database()
        )
    };
    // The certificate names wrong.example: verify-ca accepts it, verify-full does not.
    let ca = pki.ca_cert().display().to_string();
    let ssl = query_through(
        &pg,
        &url(format!("sslmode=verify-ca&sslrootcert={ca}")),
        &app,
    )
    .await
    .expect("verify-ca");
    assert_eq!(ssl, "true");
    let error = query_through(
        &pg,
        &url(format!("sslmode=verify-full&sslrootcert={ca}")),
        &app,
    )
    .await
    .expect_err("hostname mismatch");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&error).as_deref(), Some("58000"));
    assert!(
        message.starts_with(
            "Server connection attempt failed: TLS handshake failed: certificate verify failed"
        ),
        "{message}"
    );
    assert!(
        message.contains("mismatch") && message.contains("not valid for \"127.0.0.1\""),
        "{message}"
    );
    let other = pki.other_ca_cert().display().to_string();
    let error = query_through(
        &pg,
        &url(format!("sslmode=verify-ca&sslrootcert={other}")),
        &app,
    )
    .await
    .expect_err("unknown CA");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("certificate verify failed"), "{message}");
}
