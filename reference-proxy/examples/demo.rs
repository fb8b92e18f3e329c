//! `just demo`: a real Postgres, the tunnel edge and the proxy in tunnel mode, on loopback.
//!
//! Client → proxy (127.0.0.1, SCRAM) → TLS → WebSocket with an Access service token → tunnel
//! edge (Access check, cloudflared framing) → TCP → Postgres, with Postgres TLS inside the
//! WebSocket. Prints a `psql` connection string and runs until Ctrl-C, then stops everything
//! (the fixtures remove the database and certificates).

// A demo's whole job is to print a connection string for a person to use.
#![allow(clippy::print_stdout)]

use fixtures::{Postgres, PostgresConfig, Role, TestPki};
use rand_core::SeedableRng;
use reference_proxy::config::load_from_args;
use reference_proxy::metrics::Metrics;
use reference_proxy::server::{build_context, origin_dialer, serve};
use reference_proxy::stream::TcpDialer;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};
use tunnel_edge::{AccessControl, Edge, EdgeConfig, EdgeTls, ServiceToken, TokenSet};

/// The demo's service token (a throwaway value; real ones come from Cloudflare Zero Trust).
const TOKEN_ID: &str = "demo.access";
const TOKEN_SECRET: &str = "demo-secret-change-me";

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

#[tokio::main]
async fn main() -> DemoResult<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let pki = TestPki::generate()?;
    let pg = Postgres::start(PostgresConfig::default().with_tls(&pki))?;
    let (edge_port, _stop_edge) = start_edge(&pg, &pki).await?;
    let ca = pki.ca_cert().display().to_string();
    let pg_ca = pg
        .tls()
        .ok_or("postgres TLS missing")?
        .ca()
        .display()
        .to_string();
    let origin = format!(
        "postgres://{}:{}@localhost:{}/{}?sslmode=verify-full&sslrootcert={pg_ca}",
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.port(),
        pg.database()
    );
    let tunnel = format!("wss://localhost:{edge_port}/");
    let config = load_from_args([
        "reference-proxy",
        "--origin",
        &origin,
        "--listen",
        "127.0.0.1:0",
        "--tunnel",
        &tunnel,
        "--tunnel-ca",
        &ca,
        "--access-client-id",
        TOKEN_ID,
        "--access-client-secret",
        TOKEN_SECRET,
        "--pool-size",
        "4",
    ])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:6432")
        .await
        .or(tokio::net::TcpListener::bind("127.0.0.1:0").await)?;
    let port = listener.local_addr()?.port();
    let (shutdown, stopping) = watch::channel(false);
    let mut seed = [0u8; 32];
    boring::rand::rand_bytes(&mut seed)?;
    let rng = Box::new(rand_chacha::ChaCha20Rng::from_seed(seed));
    let context = build_context(
        &config,
        origin_dialer(&config)?,
        rng,
        Metrics::new()?,
        stopping,
    )?;
    let proxy = tokio::spawn(serve(context, listener, config.timeouts.shutdown_grace));
    println!();
    println!(
        "elephant-tunnel demo: client -> proxy -> TLS(WebSocket + Access token) -> tunnel edge -> Postgres (TLS inside)"
    );
    println!(
        "  psql 'host=127.0.0.1 port={port} user={} password={} dbname={} sslmode=disable'",
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.database()
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    let _ = shutdown.send(true);
    let _ = proxy.await;
    println!("stopped");
    Ok(())
}

/// Starts the tunnel edge in front of `pg`; dropping the returned sender stops it.
async fn start_edge(pg: &Postgres, pki: &TestPki) -> DemoResult<(u16, oneshot::Sender<()>)> {
    let tls = EdgeTls::from_pem_files(pki.server_cert(), pki.server_key())?;
    let access = Arc::new(AccessControl::new(TokenSet::service_auth(vec![
        ServiceToken::new(TOKEN_ID, TOKEN_SECRET),
    ])?));
    let origin = Arc::new(TcpDialer::new("127.0.0.1", pg.port()));
    let edge = Arc::new(Edge::new(EdgeConfig::default(), access, origin, Some(tls)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(edge.serve(listener, async {
        let _ = stopped.await;
    }));
    Ok((port, stop))
}
