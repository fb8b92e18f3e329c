//! What every client session shares: the pool, the cancel keys, auth, TLS, limits, metrics.

use crate::cancel::CancelRegistry;
use crate::config::{PoolMode, SessionFeaturePolicies};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::tls::ClientTls;
use elephant_auth::{AuthMethod, StoredPassword};
use elephant_protocol::DecoderLimits;
use rand_core::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// When clients give their origin connection back, and what happens to session features.
    pub pooling: PoolingPolicy,
}

/// The pool mode and the session-feature policies, with the count of pinned connections.
#[derive(Debug)]
pub struct PoolingPolicy {
    /// `--pool-mode`.
    pub mode: PoolMode,
    /// `--session-feature`.
    pub features: SessionFeaturePolicies,
    /// `--max-pinned`.
    pub max_pinned: usize,
    pinned: AtomicUsize,
}

impl PoolingPolicy {
    /// A policy with nothing pinned yet.
    pub fn new(mode: PoolMode, features: SessionFeaturePolicies, max_pinned: usize) -> Self {
        PoolingPolicy {
            mode,
            features,
            max_pinned,
            pinned: AtomicUsize::new(0),
        }
    }

    /// Takes one of the `max_pinned` slots; false when all are taken.
    pub fn try_pin(&self) -> bool {
        self.pinned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pinned| {
                (pinned < self.max_pinned).then_some(pinned + 1)
            })
            .is_ok()
    }

    /// Gives back a slot taken by [`PoolingPolicy::try_pin`].
    pub fn unpin(&self) {
        let _ = self
            .pinned
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pinned| {
                pinned.checked_sub(1)
            });
    }

    /// Slots taken now.
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Acquire)
    }
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
