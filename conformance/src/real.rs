//! Arms against a real Postgres (native, from `fixtures`): direct, and through the reference
//! proxy over TCP, over client TLS, and through the tunnel edge.
//!
//! The proxy and the edge run in-process through their library APIs (`load_from_args`,
//! `origin_dialer`, `build_context`, `serve`; `tunnel_edge::Edge`), the same calls their own
//! binaries make, so what is tested is the shipped code. One proxy is started per login role
//! and set of extra flags and shared by every transcript that needs it: a role's auth method
//! must be the proxy's client method too, and the proxy logs in to Postgres as that same role,
//! so the session a client sees (`session_authorization`, `is_superuser`) is the direct one.

use crate::runner::Login;
use crate::transcript::{RoleName, Transcript};
use fixtures::{Postgres, Role, TestPki};
use futures_util::future::BoxFuture;
use rand_core::SeedableRng;
use reference_proxy::config::{load_from_args, parse_origin_url};
use reference_proxy::server::{build_context, origin_dialer, serve};
use reference_proxy::stream::{BoxedStream, Dialer, TcpDialer};
use reference_proxy::tls::{OriginTls, negotiate_origin_tls};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tunnel_edge::{AccessControl, Edge, EdgeConfig, EdgeTls, ServiceToken, TokenSet};

/// The Access service token the tunnel arm's edge accepts.
pub const TOKEN_ID: &str = "conformance.access";
/// Its secret (test-only; never appears in traces: the proxy never reports it).
pub const TOKEN_SECRET: &str = "conformance-tunnel-secret";

/// The fixtures role behind a transcript role.
pub fn fixture_role(role: RoleName) -> Role {
    match role {
        RoleName::Scram => Role::Scram,
        RoleName::Md5 => Role::Md5,
        RoleName::Cleartext => Role::Cleartext,
        RoleName::Trust => Role::Trust,
    }
}

/// How a transcript logs in to `pg` (or to a proxy in front of it).
pub fn login(pg: &Postgres, transcript: &Transcript) -> Login {
    let role = fixture_role(transcript.role);
    Login {
        user: transcript
            .user
            .clone()
            .unwrap_or_else(|| pg.user(role).to_string()),
        password: Some(
            transcript
                .password
                .clone()
                .unwrap_or_else(|| pg.password(role).to_string()),
        ),
        database: pg.database().to_string(),
        parameters: transcript.startup_parameters(),
    }
}

/// Proxy flags that make the proxy ask clients for the role's own auth method.
pub fn auth_flags(role: RoleName) -> Vec<String> {
    let flags: &[&str] = match role {
        RoleName::Scram => &["--auth-method", "scram-sha-256"],
        RoleName::Md5 => &["--auth-method", "md5"],
        RoleName::Cleartext => &["--auth-method", "password", "--allow-cleartext-without-tls"],
        RoleName::Trust => &["--auth-method", "trust"],
    };
    flags.iter().map(|f| f.to_string()).collect()
}

/// An in-process reference proxy.
pub struct RunningProxy {
    /// Where clients connect.
    pub port: u16,
    shutdown: watch::Sender<bool>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts a proxy for `origin` with `args` on an ephemeral loopback port.
pub async fn start_proxy(origin: &str, args: &[String]) -> Result<RunningProxy, String> {
    let mut argv = vec![
        "reference-proxy".to_string(),
        "--origin".into(),
        origin.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    argv.extend_from_slice(args);
    let config = load_from_args(argv).map_err(|e| format!("proxy flags {args:?}: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let metrics = reference_proxy::metrics::Metrics::new().map_err(|e| e.to_string())?;
    let (shutdown, receiver) = watch::channel(false);
    let dialer = origin_dialer(&config).map_err(|e| e.to_string())?;
    let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(6));
    let context =
        build_context(&config, dialer, rng, metrics, receiver).map_err(|e| e.to_string())?;
    tokio::spawn(serve(context, listener, Duration::from_secs(1)));
    Ok(RunningProxy { port, shutdown })
}

/// The origin URL for a role, as the proxy reaches Postgres (`host` and `query` vary by arm).
pub fn origin_url(pg: &Postgres, role: RoleName, host: &str, query: &str) -> String {
    let role = fixture_role(role);
    format!(
        "postgres://{}:{}@{host}:{}/{}?{query}",
        pg.user(role),
        pg.password(role),
        pg.port(),
        pg.database()
    )
}

/// Dials the proxy and negotiates client TLS, verifying its certificate as libpq's
/// `sslmode=verify-full` does (the proxy's own origin-TLS code is the client here).
pub struct TlsDialer {
    tcp: TcpDialer,
    tls: OriginTls,
}

impl TlsDialer {
    /// A dialer for `localhost:port` trusting `ca`.
    pub fn new(port: u16, ca: &std::path::Path) -> Result<Self, String> {
        let url = format!(
            "postgres://client@localhost:{port}/db?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let origin = parse_origin_url(&url).map_err(|e| e.to_string())?;
        Ok(TlsDialer {
            tcp: TcpDialer::new("127.0.0.1", port),
            tls: OriginTls::from_origin(&origin).map_err(|e| e.to_string())?,
        })
    }
}

impl Dialer for TlsDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            let stream = self.tcp.dial().await?;
            negotiate_origin_tls(&self.tls, stream)
                .await
                .map_err(|e| io::Error::other(e.to_string()))
        })
    }

    fn describe(&self) -> String {
        format!("TLS to {}", self.tcp.describe())
    }
}

/// How an arm reaches Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to Postgres.
    Direct,
    /// Through the proxy over TCP.
    Proxy,
    /// Through the proxy, client TLS.
    ProxyTls,
    /// Through the proxy, which reaches Postgres through the tunnel edge.
    Tunnel,
}

impl Route {
    /// The arm's name, as `not-for` uses it.
    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Proxy => "proxy",
            Route::ProxyTls => "proxy-tls",
            Route::Tunnel => "tunnel",
        }
    }

    /// Which per-arm snapshot this arm uses (`@direct` or `@proxy`).
    pub fn kind(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            _ => "proxy",
        }
    }
}

/// One arm against one Postgres: the proxies (and edge) it started, keyed by role and flags.
pub struct RealArm<'a> {
    pg: &'a Postgres,
    route: Route,
    pki: TestPki,
    edge_port: Option<u16>,
    proxies: BTreeMap<(RoleName, Vec<String>), RunningProxy>,
    _edge_stop: Option<oneshot::Sender<()>>,
}

impl<'a> RealArm<'a> {
    /// Builds the arm (the tunnel arm starts its edge here).
    pub async fn new(pg: &'a Postgres, route: Route) -> Result<RealArm<'a>, String> {
        let pki = TestPki::generate().map_err(|e| e.to_string())?;
        let mut arm = RealArm {
            pg,
            route,
            pki,
            edge_port: None,
            proxies: BTreeMap::new(),
            _edge_stop: None,
        };
        if route == Route::Tunnel {
            let tokens = TokenSet::service_auth(vec![ServiceToken::new(TOKEN_ID, TOKEN_SECRET)])
                .map_err(|e| e.to_string())?;
            let (port, stop, _) = start_edge(&arm.pki, pg.port(), tokens).await?;
            arm.edge_port = Some(port);
            arm._edge_stop = Some(stop);
        }
        Ok(arm)
    }

    /// The dialer a transcript's connections use (starting its proxy on first use).
    pub async fn dialer(&mut self, transcript: &Transcript) -> Result<Arc<dyn Dialer>, String> {
        if self.route == Route::Direct {
            return Ok(Arc::new(TcpDialer::new(self.pg.host(), self.pg.port())));
        }
        let key = (transcript.role, transcript.proxy_args.clone());
        if !self.proxies.contains_key(&key) {
            let proxy = self.start_proxy(transcript).await?;
            self.proxies.insert(key.clone(), proxy);
        }
        let port = self.proxies[&key].port;
        Ok(match self.route {
            Route::ProxyTls => Arc::new(TlsDialer::new(port, self.pki.ca_cert())?),
            _ => Arc::new(TcpDialer::new("127.0.0.1", port)),
        })
    }

    async fn start_proxy(&self, transcript: &Transcript) -> Result<RunningProxy, String> {
        let mut args = auth_flags(transcript.role);
        let origin = match (self.route, self.edge_port) {
            (Route::Tunnel, Some(edge)) => {
                args.extend(tunnel_flags(
                    edge,
                    &self.pki,
                    Some((TOKEN_ID, TOKEN_SECRET)),
                ));
                // Postgres TLS inside the tunnel: TLS(WS(TLS(TCP))), as Hyperdrive runs it.
                origin_url(self.pg, transcript.role, "127.0.0.1", "sslmode=require")
            }
            _ => origin_url(self.pg, transcript.role, "127.0.0.1", "sslmode=disable"),
        };
        if self.route == Route::ProxyTls {
            args.extend([
                "--tls-cert".to_string(),
                self.pki.server_cert().display().to_string(),
                "--tls-key".to_string(),
                self.pki.server_key().display().to_string(),
            ]);
        }
        args.extend(transcript.proxy_args.iter().cloned());
        start_proxy(&origin, &args).await
    }
}

/// Proxy flags for a tunnel through the edge on `edge_port`, with an optional token.
pub fn tunnel_flags(edge_port: u16, pki: &TestPki, token: Option<(&str, &str)>) -> Vec<String> {
    let mut flags = vec![
        "--tunnel".to_string(),
        format!("wss://localhost:{edge_port}/"),
        "--tunnel-ca".to_string(),
        pki.ca_cert().display().to_string(),
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

/// Starts an edge with `pki`'s server certificate in front of `origin_port`; returns its port,
/// the sender that stops it when dropped, and the edge.
pub async fn start_edge(
    pki: &TestPki,
    origin_port: u16,
    tokens: TokenSet,
) -> Result<(u16, oneshot::Sender<()>, Arc<Edge>), String> {
    let tls =
        EdgeTls::from_pem_files(pki.server_cert(), pki.server_key()).map_err(|e| e.to_string())?;
    let access = Arc::new(AccessControl::new(tokens));
    let origin = Arc::new(TcpDialer::new("127.0.0.1", origin_port));
    let edge = Arc::new(Edge::new(EdgeConfig::default(), access, origin, Some(tls)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(edge.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    Ok((port, stop, edge))
}
