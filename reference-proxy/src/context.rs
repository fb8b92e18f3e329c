//! What every client session shares: the pool, the cancel keys, auth, TLS, limits, metrics.

use crate::cancel::CancelRegistry;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::tls::ClientTls;
use elephant_auth::{AuthMethod, StoredPassword};
use elephant_protocol::DecoderLimits;
use rand_core::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How clients authenticate to the proxy.
pub struct ClientAuth {
    /// `None` = trust.
    pub method: Option<AuthMethod>,
    /// Known users and their passwords (plain or as Postgres stores them).
    pub users: HashMap<String, StoredPassword>,
    /// Allow cleartext passwords on connections without TLS.
    pub allow_cleartext_without_tls: bool,
    /// Secret that makes mock SCRAM exchanges for unknown users stable.
    pub mock_key: Vec<u8>,
}

/// Shared state of one running proxy.
pub struct ProxyContext {
    /// Origin connections.
    pub pool: Pool,
    /// Issued cancel keys.
    pub cancels: CancelRegistry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// TLS for clients that send SSLRequest (`None`: answer `N`).
    pub client_tls: Option<ClientTls>,
    /// Client authentication.
    pub auth: ClientAuth,
    /// The database clients must ask for (the origin's).
    pub database: String,
    /// Codec limits for client messages.
    pub limits: DecoderLimits,
    /// Clients silent this long are disconnected.
    pub client_idle_timeout: Option<Duration>,
    /// Becomes true when the proxy starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Randomness for cancel keys, salts and nonces (seeded by the simulator).
    pub rng: Mutex<Box<dyn RngCore + Send>>,
}

impl ProxyContext {
    /// Runs `f` with the shared RNG.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        match self.rng.lock() {
            Ok(mut rng) => f(rng.as_mut()),
            Err(poisoned) => f(poisoned.into_inner().as_mut()),
        }
    }
}
