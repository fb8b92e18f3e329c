//! Counters of what the edge did, for tests and the simulator.
//!
//! Why a snapshot struct behind a mutex rather than a metrics registry: the edge is a test
//! instrument, its readers want to assert "exactly one 403, no tunnel left open" at a point in
//! time, and a consistent snapshot of a few integers is the simplest thing that supports that.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// A snapshot of the edge's counters since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Upgrades answered with 101.
    pub tunnels_opened: u64,
    /// Tunnels that have ended (for any reason, [`Edge::kill_all_tunnels`](crate::Edge) included).
    pub tunnels_closed: u64,
    /// Tunnels open right now.
    pub live_tunnels: u64,
    /// Refused upgrades by HTTP status (400, 302, 403, 502).
    pub refused: BTreeMap<u16, u64>,
    /// Connections that ended before any response (TLS failure, timeout, early close).
    pub handshake_failures: u64,
    /// Payload bytes written to origins by ended tunnels (after truncation).
    pub bytes_to_origin: u64,
    /// Payload bytes read from origins by ended tunnels.
    pub bytes_from_origin: u64,
    /// Inbound binary messages cut to the message limit.
    pub truncated_messages: u64,
    /// Inbound text messages dropped.
    pub discarded_text_messages: u64,
}

impl EdgeStats {
    /// How many upgrades were refused with `status`.
    pub fn refused_with(&self, status: u16) -> u64 {
        self.refused.get(&status).copied().unwrap_or(0)
    }

    /// Total refused upgrades.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// What one ended tunnel contributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TunnelTotals {
    pub bytes_to_origin: u64,
    pub bytes_from_origin: u64,
    pub truncated_messages: u64,
    pub discarded_text_messages: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    inner: Mutex<EdgeStats>,
}

impl StatsRecorder {
    pub fn snapshot(&self) -> EdgeStats {
        self.lock().clone()
    }

    pub fn tunnel_opened(&self) {
        let mut stats = self.lock();
        stats.tunnels_opened += 1;
        stats.live_tunnels += 1;
    }

    pub fn tunnel_closed(&self, totals: TunnelTotals) {
        let mut stats = self.lock();
        stats.tunnels_closed += 1;
        stats.live_tunnels = stats.live_tunnels.saturating_sub(1);
        stats.bytes_to_origin += totals.bytes_to_origin;
        stats.bytes_from_origin += totals.bytes_from_origin;
        stats.truncated_messages += totals.truncated_messages;
        stats.discarded_text_messages += totals.discarded_text_messages;
    }

    pub fn refused(&self, status: u16) {
        *self.lock().refused.entry(status).or_default() += 1;
    }

    pub fn handshake_failed(&self) {
        self.lock().handshake_failures += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EdgeStats> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
