//! The origin connection pool: at most `max` connections, lent one transaction at a time.
//!
//! Every connection, idle or lent, counts against `max` for its whole life (it holds a
//! semaphore permit), so the proxy never holds more origin connections than configured —
//! an invariant the simulator checks. A client asking for a connection gets an idle one
//! (checked first: a connection the origin closed while it sat idle, e.g. across a restart, is
//! discarded and replaced), a new one if there is room, or waits its turn up to the acquire
//! timeout and then gets Hyperdrive's `Failed to acquire a connection from the pool.`
//! (SQLSTATE 58000). A background task closes connections idle too long and keeps `min` open.

use crate::metrics::Metrics;
use crate::origin::{OriginConnection, OriginConnector, OriginError, PROXY_ERROR_SQLSTATE};
use elephant_protocol::{
    BackendMessage, ErrorFields, FrontendMessage, PgString, TransactionStatus,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Message of the pool-exhausted error, as Hyperdrive words it.
pub const POOL_EXHAUSTED_MESSAGE: &str = "Failed to acquire a connection from the pool.";

/// How often the maintenance task runs.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections kept open even when idle.
    pub min_connections: usize,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a connection.
    pub acquire_timeout: Duration,
    /// Idle connections above `min` are closed after this long.
    pub idle_timeout: Duration,
    /// An idle connection unused this long gets a round-trip check before it is lent.
    pub health_check_after: Duration,
}

/// Why no connection could be lent.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// Every connection stayed busy for the whole acquire timeout.
    #[error("{POOL_EXHAUSTED_MESSAGE}")]
    Exhausted,
    /// A new connection was needed and could not be made.
    #[error("{0}")]
    Connect(#[from] OriginError),
}

impl AcquireError {
    /// The ErrorResponse fields a client sees.
    pub fn to_error_fields(&self) -> ErrorFields {
        match self {
            AcquireError::Exhausted => ErrorFields::new("ERROR", PROXY_ERROR_SQLSTATE, POOL_EXHAUSTED_MESSAGE)
                .with(b'H', "All pooled server connections stayed busy for the acquire timeout; raise --pool-size or --acquire-timeout, or shorten transactions."),
            AcquireError::Connect(error) => {
                let mut fields = error.to_error_fields();
                // A failed connect is this request's failure, not the end of the client's session.
                for (code, value) in &mut fields.fields {
                    if (*code == b'S' || *code == b'V') && value == "FATAL" {
                        *value = PgString::from("ERROR");
                    }
                }
                fields
            }
        }
    }
}

/// A connection on loan, with its slot.
pub struct Lent {
    /// The connection.
    pub connection: OriginConnection,
    _permit: OwnedSemaphorePermit,
}

struct Idle {
    connection: OriginConnection,
    permit: OwnedSemaphorePermit,
}

struct PoolInner {
    connector: OriginConnector,
    settings: PoolSettings,
    slots: Arc<Semaphore>,
    idle: Mutex<VecDeque<Idle>>,
    returned: Notify,
    metrics: Arc<Metrics>,
    /// ParameterStatus values of the origin, from the first connection made.
    origin_parameters: Mutex<Option<Vec<(PgString, PgString)>>>,
}

/// A shared handle to the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// A pool; call [`Pool::spawn_maintenance`] to keep it tidy.
    pub fn new(connector: OriginConnector, settings: PoolSettings, metrics: Arc<Metrics>) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        Pool {
            inner: Arc::new(PoolInner {
                connector,
                settings,
                slots,
                idle: Mutex::new(VecDeque::new()),
                returned: Notify::new(),
                metrics,
                origin_parameters: Mutex::new(None),
            }),
        }
    }

    /// The connector (for cancel requests).
    pub fn connector(&self) -> &OriginConnector {
        &self.inner.connector
    }

    /// Origin ParameterStatus values, connecting once if none is known yet.
    pub async fn origin_parameters(&self) -> Result<Vec<(PgString, PgString)>, AcquireError> {
        if let Some(parameters) = self.known_parameters() {
            return Ok(parameters);
        }
        let lent = self.acquire().await?;
        self.release(lent, true);
        Ok(self.known_parameters().unwrap_or_default())
    }

    fn known_parameters(&self) -> Option<Vec<(PgString, PgString)>> {
        self.inner
            .origin_parameters
            .lock()
            .ok()
            .and_then(|p| p.clone())
    }

    /// Connections open now (idle + lent + connecting).
    pub fn open_connections(&self) -> usize {
        self.inner.settings.max_connections.max(1) - self.inner.slots.available_permits()
    }

    /// Lends a connection, waiting at most the acquire timeout. Cancel safe.
    pub async fn acquire(&self) -> Result<Lent, AcquireError> {
        let started = Instant::now();
        let deadline = started + self.inner.settings.acquire_timeout;
        let result = self.acquire_until(deadline).await;
        self.inner
            .metrics
            .acquire_wait_seconds
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self
                .inner
                .metrics
                .origin_connections
                .with_label_values(&["busy"])
                .inc(),
            Err(AcquireError::Exhausted) => {
                self.inner.metrics.acquire_timeouts_total.inc();
                self.inner
                    .metrics
                    .errors_total
                    .with_label_values(&["pool_exhausted"])
                    .inc();
            }
            Err(AcquireError::Connect(_)) => {
                self.inner
                    .metrics
                    .errors_total
                    .with_label_values(&["origin_connect"])
                    .inc();
            }
        }
        result
    }

    /// Lends a connection only if one is free now (idle, or room to open one); never waits
    /// for another client to finish.
    pub async fn try_acquire_now(&self) -> Option<Lent> {
        if let Some(lent) = self.take_idle().await {
            self.inner
                .metrics
                .origin_connections
                .with_label_values(&["busy"])
                .inc();
            return Some(lent);
        }
        let permit = self.inner.slots.clone().try_acquire_owned().ok()?;
        let lent = self.connect(permit).await.ok()?;
        self.inner
            .metrics
            .origin_connections
            .with_label_values(&["busy"])
            .inc();
        Some(lent)
    }

    async fn acquire_until(&self, deadline: Instant) -> Result<Lent, AcquireError> {
        loop {
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(lent) = self.take_idle().await {
                return Ok(lent);
            }
            if let Ok(permit) = self.inner.slots.clone().try_acquire_owned() {
                return self.connect(permit).await;
            }
            tokio::select! {
                // Fixed polling order: no draw from tokio's RNG, so a seeded simulation replays.
                biased;
                _ = &mut returned => {}
                permit = self.inner.slots.clone().acquire_owned() => {
                    let Ok(permit) = permit else { return Err(AcquireError::Exhausted) };
                    return self.connect(permit).await;
                }
                _ = tokio::time::sleep_until(deadline) => return Err(AcquireError::Exhausted),
            }
        }
    }

    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Lent, AcquireError> {
        match self.inner.connector.connect().await {
            Ok(connection) => {
                self.inner
                    .metrics
                    .origin_connects_total
                    .with_label_values(&["ok"])
                    .inc();
                if let Ok(mut parameters) = self.inner.origin_parameters.lock() {
                    parameters.get_or_insert_with(|| connection.session.parameters.clone());
                }
                Ok(Lent {
                    connection,
                    _permit: permit,
                })
            }
            Err(error) => {
                self.inner
                    .metrics
                    .origin_connects_total
                    .with_label_values(&["error"])
                    .inc();
                tracing::warn!(origin = %self.inner.connector.describe(), %error, "origin connection failed");
                Err(error.into())
            }
        }
    }

    /// Pops idle connections until one passes its check.
    async fn take_idle(&self) -> Option<Lent> {
        loop {
            let idle = self.inner.idle.lock().ok()?.pop_front()?;
            self.inner
                .metrics
                .origin_connections
                .with_label_values(&["idle"])
                .dec();
            let Idle {
                mut connection,
                permit,
            } = idle;
            if !still_open(&mut connection) {
                tracing::info!(
                    origin_connection = connection.id(),
                    "discarding origin connection closed while idle"
                );
                continue;
            }
            if connection.idle_since.elapsed() >= self.inner.settings.health_check_after
                && !round_trip_check(&mut connection).await
            {
                tracing::info!(
                    origin_connection = connection.id(),
                    "discarding origin connection that failed its health check"
                );
                continue;
            }
            return Some(Lent {
                connection,
                _permit: permit,
            });
        }
    }

    /// Returns a connection. `reusable` is false when its state is unknown (broken stream,
    /// transaction not finished): it is closed instead.
    pub fn release(&self, lent: Lent, reusable: bool) {
        self.inner
            .metrics
            .origin_connections
            .with_label_values(&["busy"])
            .dec();
        let Lent {
            mut connection,
            _permit: permit,
        } = lent;
        if !reusable || connection.broken {
            tracing::debug!(
                origin_connection = connection.id(),
                "closing origin connection"
            );
            drop(connection);
            drop(permit);
            self.inner.returned.notify_one();
            return;
        }
        connection.idle_since = Instant::now();
        connection.needs_reset &= !crate::buggify::enabled(crate::buggify::Bug::SkipResetOnReturn);
        if let Ok(mut idle) = self.inner.idle.lock() {
            idle.push_back(Idle { connection, permit });
            self.inner
                .metrics
                .origin_connections
                .with_label_values(&["idle"])
                .inc();
        }
        self.inner.returned.notify_one();
    }

    /// Starts the task that closes long-idle connections and keeps `min` open; it ends when
    /// the last pool handle is dropped.
    pub fn spawn_maintenance(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Pool { inner }.maintain().await;
            }
        });
    }

    async fn maintain(&self) {
        let settings = &self.inner.settings;
        if let Ok(mut idle) = self.inner.idle.lock() {
            let open = settings.max_connections.max(1) - self.inner.slots.available_permits();
            let removable = open.saturating_sub(settings.min_connections);
            let before = idle.len();
            let mut removed = 0;
            idle.retain(|entry| {
                let expired = entry.connection.idle_since.elapsed() >= settings.idle_timeout;
                let remove = expired && removed < removable;
                removed += usize::from(remove);
                !remove
            });
            let closed = before - idle.len();
            self.inner
                .metrics
                .origin_connections
                .with_label_values(&["idle"])
                .sub(closed as i64);
        }
        while self.open_connections() < settings.min_connections {
            let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                break;
            };
            match self.connect(permit).await {
                Ok(lent) => {
                    self.inner
                        .metrics
                        .origin_connections
                        .with_label_values(&["busy"])
                        .inc();
                    self.release(lent, true);
                }
                Err(_) => break,
            }
        }
    }
}

/// True unless the origin closed the connection or sent something while it sat idle (an idle
/// connection receives nothing unless the server is going away, e.g. a FATAL before restart).
fn still_open(connection: &mut OriginConnection) -> bool {
    let (stream, buffer, _) = connection.link.parts_mut();
    if !buffer.is_empty() {
        return false;
    }
    let mut context = Context::from_waker(std::task::Waker::noop());
    let mut probe = [0u8; 1];
    let mut read = ReadBuf::new(&mut probe);
    std::pin::Pin::new(stream)
        .poll_read(&mut context, &mut read)
        .is_pending()
}

/// One round trip on an idle connection: an empty query must come back as
/// EmptyQueryResponse + ReadyForQuery(idle).
async fn round_trip_check(connection: &mut OriginConnection) -> bool {
    let check = async {
        connection
            .link
            .send(&FrontendMessage::Query(PgString::default()))
            .await
            .ok()?;
        loop {
            match connection.link.receive().await.ok()? {
                BackendMessage::ReadyForQuery(TransactionStatus::Idle) => return Some(()),
                BackendMessage::EmptyQueryResponse | BackendMessage::NoticeResponse(_) => {}
                _ => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), check)
        .await
        .ok()
        .flatten()
        .is_some()
}
