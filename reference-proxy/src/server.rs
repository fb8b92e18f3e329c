//! Assembling a proxy from its configuration and running it: accept loop, metrics endpoint,
//! graceful shutdown.
//!
//! [`build_context`] is transport-agnostic (it takes a [`Dialer`] and an RNG), so the simulator
//! builds the very same proxy over its own network; [`serve`] takes any [`Listener`]. [`run`]
//! is what the binary calls: TCP, OS-seeded randomness, signals.

use crate::cancel::CancelRegistry;
use crate::client::serve_client;
use crate::config::{ClientAuthMethod, ProxyConfig};
use crate::context::{ClientAuth, PoolingPolicy, ProxyContext};
use crate::metrics::Metrics;
use crate::origin::{OriginConnector, OriginLogin};
use crate::pool::{Pool, PoolSettings};
use crate::stream::{Dialer, Listener, TcpDialer};
use crate::tls::{ClientTls, OriginTls, TlsError};
use crate::tunnel::{TunnelDialer, TunnelError, TunnelSettings};
use elephant_auth::{AuthMethod, StoredPassword};
use elephant_protocol::DecoderLimits;
use elephant_protocol::startup::ClientHandshakeConfig;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rand_core::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest time accepted connections may take to finish after the grace period before the
/// process exits anyway.
pub const FORCED_EXIT_DELAY: Duration = Duration::from_secs(1);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// A client password entry is malformed.
    #[error("client user \"{user}\": {detail}")]
    ClientUser {
        /// The user.
        user: String,
        /// What is wrong.
        detail: String,
    },
    /// The tunnel settings are invalid (URL, CA file, token).
    #[error("--tunnel: {0}")]
    Tunnel(#[from] TunnelError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A socket could not be opened.
    #[error("{what} {address}: {source}")]
    Bind {
        /// Which socket.
        what: &'static str,
        /// Address.
        address: String,
        /// OS error.
        source: std::io::Error,
    },
}

/// The origin login the proxy uses for every pooled connection.
pub fn origin_login(config: &ProxyConfig) -> Result<OriginLogin, TlsError> {
    let origin = &config.origin;
    let mut options = origin.options.clone().unwrap_or_default();
    if let Some(timeout) = config.timeouts.statement {
        // Postgres enforces the statement limit itself (SQLSTATE 57014); RESET ALL returns to it.
        options.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
    }
    // No application_name of the proxy's own unless the origin URL names one: a client that
    // sends none must see what Postgres shows it (empty), also after `RESET`.
    let mut parameters = Vec::new();
    if let Some(name) = &origin.application_name {
        parameters.push(("application_name".to_string(), name.clone()));
    }
    if !options.trim().is_empty() {
        parameters.push(("options".to_string(), options.trim().to_string()));
    }
    Ok(OriginLogin {
        handshake: ClientHandshakeConfig {
            user: origin.user.clone(),
            database: Some(origin.database.clone()),
            password: origin.password.clone(),
            parameters,
            tls_server_end_point: None,
        },
        tls: OriginTls::from_origin(origin)?,
        connect_timeout: config.timeouts.connect,
        limits: DecoderLimits::with_max_message_len(config.max_message_size),
    })
}

fn client_auth(config: &ProxyConfig, rng: &mut dyn RngCore) -> Result<ClientAuth, StartError> {
    let method = match config.client_auth.method {
        ClientAuthMethod::ScramSha256 => Some(AuthMethod::ScramSha256),
        ClientAuthMethod::Md5 => Some(AuthMethod::Md5),
        ClientAuthMethod::Cleartext => Some(AuthMethod::Cleartext),
        ClientAuthMethod::Trust => None,
    };
    let mut users = HashMap::new();
    for user in &config.client_auth.users {
        let stored =
            StoredPassword::parse(&user.password).map_err(|error| StartError::ClientUser {
                user: user.name.clone(),
                detail: error.to_string(),
            })?;
        users.insert(user.name.clone(), stored);
    }
    let mut mock_key = vec![0u8; 32];
    rng.fill_bytes(&mut mock_key);
    Ok(ClientAuth {
        method,
        users,
        allow_cleartext_without_tls: config.client_auth.allow_cleartext_without_tls,
        mock_key,
    })
}

/// Builds a proxy's shared state. `dialer` reaches the origin; `rng` draws every random value.
pub fn build_context(
    config: &ProxyConfig,
    dialer: Arc<dyn Dialer>,
    mut rng: Box<dyn RngCore + Send>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<ProxyContext>, StartError> {
    let connector = OriginConnector::new(dialer, origin_login(config)?);
    let settings = PoolSettings {
        min_connections: config.pool.min_connections,
        max_connections: config.pool.max_connections,
        acquire_timeout: config.timeouts.acquire,
        idle_timeout: config.timeouts.idle_origin,
        health_check_after: config.timeouts.health_check_after,
    };
    let pool = Pool::new(connector, settings, metrics.clone());
    pool.spawn_maintenance();
    let client_tls = match &config.tls {
        Some(tls) => Some(ClientTls::load(&tls.cert, &tls.key)?),
        None => None,
    };
    let auth = client_auth(config, rng.as_mut())?;
    Ok(Arc::new(ProxyContext {
        pool,
        cancels: CancelRegistry::default(),
        metrics,
        client_tls,
        auth,
        database: config.origin.database.clone(),
        limits: DecoderLimits::with_max_message_len(config.max_message_size),
        client_idle_timeout: config.timeouts.client_idle,
        shutdown,
        rng: Mutex::new(rng),
        pooling: PoolingPolicy::new(
            config.pool.mode,
            config.session_features,
            config.pool.max_pinned,
        ),
    }))
}

/// Where client sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionExecution {
    /// One tokio task per client (the binary): sessions use every worker thread.
    #[default]
    Spawned,
    /// Polled inside [`serve`]'s own future. For a single-threaded runtime that must replay
    /// exactly (the simulator): when a runtime is dropped (a simulated host crash), tokio drops
    /// spawned tasks in an order derived from process-wide task ids, so the sessions' closes
    /// would go out in an order that depends on what else ran in the process. The session
    /// code is the same either way.
    InPlace,
}

/// The running client sessions, spawned or in place.
enum Sessions {
    Spawned(JoinSet<()>),
    InPlace(FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>),
}

impl Sessions {
    fn new(execution: SessionExecution) -> Self {
        match execution {
            SessionExecution::Spawned => Sessions::Spawned(JoinSet::new()),
            SessionExecution::InPlace => Sessions::InPlace(FuturesUnordered::new()),
        }
    }

    fn start(&mut self, session: impl Future<Output = ()> + Send + 'static) {
        match self {
            Sessions::Spawned(tasks) => {
                tasks.spawn(session);
            }
            Sessions::InPlace(futures) => futures.push(Box::pin(session)),
        }
    }

    /// Waits for one session to end; `None` when there are none.
    async fn next(&mut self) -> Option<()> {
        match self {
            Sessions::Spawned(tasks) => tasks.join_next().await.map(|_| ()),
            Sessions::InPlace(futures) => futures.next().await,
        }
    }

    fn len(&self) -> usize {
        match self {
            Sessions::Spawned(tasks) => tasks.len(),
            Sessions::InPlace(futures) => futures.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every session (their connections close as they are dropped).
    fn abort_all(&mut self) {
        match self {
            Sessions::Spawned(tasks) => tasks.abort_all(),
            Sessions::InPlace(futures) => futures.clear(),
        }
    }
}

/// Accepts clients until `shutdown` turns true, then waits up to `grace` for their running
/// transactions (sessions close themselves once idle), then drops the rest.
pub async fn serve(ctx: Arc<ProxyContext>, listener: impl Listener, grace: Duration) {
    serve_with(ctx, listener, grace, SessionExecution::Spawned).await;
}

/// [`serve`], with the sessions run as `execution` says.
pub async fn serve_with(
    ctx: Arc<ProxyContext>,
    mut listener: impl Listener,
    grace: Duration,
    execution: SessionExecution,
) {
    let mut shutdown = ctx.shutdown.clone();
    let mut sessions = Sessions::new(execution);
    loop {
        tokio::select! {
            // Fixed polling order: no draw from tokio's RNG, so a seeded simulation replays.
            biased;
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.start(serve_client(ctx.clone(), stream, peer));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(()) = sessions.next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        sessions = sessions.len(),
        grace_seconds = grace.as_secs(),
        "shutting down: waiting for transactions to finish"
    );
    let drained =
        tokio::time::timeout(grace, async { while sessions.next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "grace period over: closing remaining connections"
        );
        sessions.abort_all();
        let _ = tokio::time::timeout(FORCED_EXIT_DELAY, async {
            while sessions.next().await.is_some() {}
        })
        .await;
    }
}

/// How the binary reaches the origin: through the WebSocket tunnel when `--tunnel` is set,
/// else straight over TCP.
pub fn origin_dialer(config: &ProxyConfig) -> Result<Arc<dyn Dialer>, StartError> {
    match &config.tunnel {
        Some(tunnel) => {
            let dialer = TunnelDialer::new(TunnelSettings::from_config(tunnel)?)?;
            tracing::info!(tunnel = %dialer.describe(), "origin reached through a WebSocket tunnel");
            Ok(Arc::new(dialer))
        }
        None => Ok(Arc::new(TcpDialer::new(
            config.origin.host.clone(),
            config.origin.port,
        ))),
    }
}

/// Runs the proxy described by `config` on real sockets until SIGTERM or Ctrl-C.
pub async fn run(config: ProxyConfig) -> Result<(), StartError> {
    let metrics = Metrics::new()?;
    let (shutdown_sender, shutdown) = watch::channel(false);
    let rng = Box::new(os_seeded_rng()?);
    let dialer = origin_dialer(&config)?;
    let ctx = build_context(&config, dialer, rng, metrics.clone(), shutdown.clone())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "listen on",
            address: config.listen.to_string(),
            source,
        })?;
    tracing::info!(listen = %config.listen, origin = %config.origin.redacted_url(), pool_size = config.pool.max_connections, "reference-proxy listening");
    if let Some(address) = config.metrics {
        let metrics_listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| StartError::Bind {
                what: "metrics endpoint on",
                address: address.to_string(),
                source,
            })?;
        let mut stop = shutdown.clone();
        tokio::spawn(crate::metrics::serve(
            metrics_listener,
            metrics.clone(),
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            },
        ));
        tracing::info!(%address, "metrics endpoint listening");
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = shutdown_sender.send(true);
    });
    serve(ctx, listener, config.timeouts.shutdown_grace).await;
    Ok(())
}

/// A ChaCha20 generator seeded from the operating system (through BoringSSL's RNG).
fn os_seeded_rng() -> Result<rand_chacha::ChaCha20Rng, StartError> {
    let mut seed = [0u8; 32];
    boring::rand::rand_bytes(&mut seed)
        .map_err(|e| StartError::Tls(TlsError::Setup(e.to_string())))?;
    Ok(rand_chacha::ChaCha20Rng::from_seed(seed))
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
