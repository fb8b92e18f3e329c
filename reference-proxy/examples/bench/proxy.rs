//! The reference proxy, in process, on its own runtime (as the tests' harness runs it).

use rand_core::SeedableRng;
use reference_proxy::config::load_from_args;
use reference_proxy::context::ProxyContext;
use reference_proxy::metrics::Metrics;
use reference_proxy::server::{build_context, origin_dialer, serve};
use reference_proxy::stream::Dialer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A proxy serving on loopback.
pub struct RunningProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    /// Its shared state (pool, metrics).
    pub context: Arc<ProxyContext>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningProxy {
    /// Starts a proxy on `runtime` for the origin URL `origin`, pool of `pool_size`, with the
    /// `extra` command-line flags (e.g. `--tunnel ...`), reaching the origin through `dialer`
    /// (when `None`, the dialer the flags ask for, as the binary builds it: plain TCP to the
    /// URL's host and port, or the WebSocket tunnel).
    pub fn start(
        runtime: &Runtime,
        origin: &str,
        pool_size: usize,
        extra: &[&str],
        dialer: Option<Arc<dyn Dialer>>,
    ) -> Result<RunningProxy, String> {
        let pool_size = pool_size.to_string();
        let mut args = vec![
            "reference-proxy",
            "--origin",
            origin,
            "--listen",
            "127.0.0.1:0",
            "--pool-size",
            &pool_size,
        ];
        args.extend_from_slice(extra);
        let config = load_from_args(args).map_err(|e| e.to_string())?;
        let dialer = match dialer {
            Some(dialer) => dialer,
            None => origin_dialer(&config).map_err(|e| e.to_string())?,
        };
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            let metrics = Metrics::new().map_err(|e| e.to_string())?;
            let (shutdown, receiver) = watch::channel(false);
            let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(7));
            let context = build_context(&config, dialer, rng, metrics, receiver)
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(serve(
                context.clone(),
                listener,
                config.timeouts.shutdown_grace,
            ));
            Ok(RunningProxy {
                address,
                context,
                shutdown,
                task,
            })
        })
    }

    /// Stops accepting and waits (bounded) for the proxy to finish.
    pub fn stop(self, runtime: &Runtime) {
        let _ = self.shutdown.send(true);
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        });
    }
}
