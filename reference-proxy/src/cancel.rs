//! Cancel requests: the proxy's keys, and forwarding to exactly the right origin backend.
//!
//! Clients get a proxy-issued BackendKeyData (the origin's keys are per origin connection and
//! change with every transaction). A CancelRequest carrying a proxy key is forwarded to the
//! origin backend that client is using *right now*, and to nothing if the client holds no
//! origin connection. To make sure a cancel can never hit the next borrower of that backend,
//! the session does not return the connection to the pool while a cancel for it is in flight
//! (see [`ActiveCancels`]); the in-flight cancel completes when the origin has signalled the
//! backend and closed the cancel connection.

use crate::metrics::Metrics;
use crate::origin::OriginConnector;
use bytes::Bytes;
use elephant_protocol::{BackendKeyData, CancelRequest};
use rand_core::RngCore;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

/// Length of the cancel keys the proxy issues (protocol 3.0 keys are 4 bytes).
pub const PROXY_CANCEL_KEY_LEN: usize = 4;

/// Cancels in flight against one lent origin connection.
#[derive(Debug, Default)]
pub struct ActiveCancels {
    in_flight: AtomicUsize,
    finished: Notify,
}

impl ActiveCancels {
    /// Waits until no cancel is in flight, at most `limit`. False on timeout: the connection's
    /// state is then unknown and it must not be reused.
    pub async fn settle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let finished = self.finished.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                finished.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// What a session exposes to cancel requests while it holds an origin connection.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The origin backend's key.
    pub origin_key: BackendKeyData,
    /// Cancels in flight against it.
    pub active: Arc<ActiveCancels>,
}

#[derive(Debug)]
struct Registered {
    secret_key: Bytes,
    target: Option<CancelTarget>,
}

/// The proxy's table of issued cancel keys.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, Registered>>,
    next_process_id: Mutex<i32>,
}

/// What happened to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Forwarded to the origin backend the session is using.
    Forwarded,
    /// The session exists but holds no origin connection: nothing to cancel.
    Idle,
    /// No session has this key (or the secret is wrong): ignored, as Postgres does.
    UnknownKey,
    /// Forwarding failed.
    Failed,
}

impl CancelOutcome {
    fn label(self) -> &'static str {
        match self {
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::Idle => "idle",
            CancelOutcome::UnknownKey => "unknown_key",
            CancelOutcome::Failed => "failed",
        }
    }
}

impl CancelRegistry {
    /// Issues a key for a new session. The process id is a counter, the secret random.
    pub fn register(&self, rng: &mut dyn RngCore) -> BackendKeyData {
        let mut secret = [0u8; PROXY_CANCEL_KEY_LEN];
        rng.fill_bytes(&mut secret);
        let process_id = match self.next_process_id.lock() {
            Ok(mut next) => {
                *next = next.checked_add(1).filter(|id| *id > 0).unwrap_or(1);
                *next
            }
            Err(_) => 1,
        };
        let key = BackendKeyData {
            process_id,
            secret_key: Bytes::copy_from_slice(&secret),
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(
                process_id,
                Registered {
                    secret_key: key.secret_key.clone(),
                    target: None,
                },
            );
        }
        key
    }

    /// Forgets a session's key (it disconnected).
    pub fn unregister(&self, process_id: i32) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(&process_id);
        }
    }

    /// Records which origin backend the session now uses (`None`: none).
    pub fn set_target(&self, process_id: i32, target: Option<CancelTarget>) {
        if let Ok(mut sessions) = self.sessions.lock()
            && let Some(registered) = sessions.get_mut(&process_id)
        {
            registered.target = target;
        }
    }

    /// Finds the target for a request, comparing the secret in constant time.
    fn lookup(&self, request: &CancelRequest) -> Result<Option<CancelTarget>, CancelOutcome> {
        let sessions = self.sessions.lock().map_err(|_| CancelOutcome::Failed)?;
        let registered = sessions
            .get(&request.process_id)
            .ok_or(CancelOutcome::UnknownKey)?;
        let matches: bool = registered.secret_key.len() == request.secret_key.len()
            && bool::from(
                registered
                    .secret_key
                    .as_ref()
                    .ct_eq(request.secret_key.as_ref()),
            );
        if !matches {
            return Err(CancelOutcome::UnknownKey);
        }
        let mut target = registered.target.clone();
        if crate::buggify::enabled(crate::buggify::Bug::CancelWrongConnection) {
            target = crate::buggify::other_target(
                request.process_id,
                sessions.iter().map(|(id, r)| (*id, r.target.clone())),
            );
        }
        if let Some(target) = &target {
            // Counted while still under the lock, so the session cannot release the
            // connection between the lookup and the forward.
            target.active.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        Ok(target)
    }

    /// Handles one CancelRequest from a client.
    pub async fn cancel(
        &self,
        request: &CancelRequest,
        connector: &OriginConnector,
        metrics: &Metrics,
    ) -> CancelOutcome {
        let outcome = match self.lookup(request) {
            Err(outcome) => outcome,
            Ok(None) => CancelOutcome::Idle,
            Ok(Some(target)) => {
                let result = connector.cancel(&target.origin_key).await;
                target.active.in_flight.fetch_sub(1, Ordering::SeqCst);
                target.active.finished.notify_waiters();
                match result {
                    Ok(()) => CancelOutcome::Forwarded,
                    Err(error) => {
                        tracing::warn!(%error, "forwarding a cancel request failed");
                        CancelOutcome::Failed
                    }
                }
            }
        };
        metrics
            .cancels_total
            .with_label_values(&[outcome.label()])
            .inc();
        tracing::info!(
            process_id = request.process_id,
            outcome = outcome.label(),
            "cancel request"
        );
        outcome
    }
}
