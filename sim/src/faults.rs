//! Network and host faults drawn from the seed: the fault plan, a list of (time, fault) that
//! is printed with every failure, and its application to a running turmoil simulation.
//!
//! Faults on one link never overlap (turmoil does not define hold combined with partition),
//! so the plan is a sequence of windows separated by healthy gaps. Client-side hostility
//! (clients vanishing mid-transaction, cancels, slow queries) is drawn by each client from
//! its own stream of the seed; see [`crate::workload`].

use crate::scenario::Scenario;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Name of the origin host.
pub const ORIGIN_HOST: &str = "origin";
/// Name of the proxy host.
pub const PROXY_HOST: &str = "proxy";
/// Name of the tunnel edge host (tunnel scenarios).
pub const EDGE_HOST: &str = "edge";

/// First fault no earlier than this (let clients connect first).
pub const FIRST_FAULT_AFTER: Duration = Duration::from_millis(500);
/// Healthy time between two faults.
pub const GAP: (Duration, Duration) = (Duration::from_millis(300), Duration::from_secs(3));
/// How long a stall (hold) lasts.
pub const HOLD: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(4));
/// How long a lossy partition lasts.
pub const PARTITION: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How long a crashed host stays down.
pub const DOWN: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(3));
/// How long a latency spike lasts.
pub const SPIKE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(4));
/// Latency during a spike.
pub const SPIKE_LATENCY: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(400));

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Messages between proxy and origin are held, then delivered (a stall TCP survives).
    HoldOrigin {
        /// How long.
        duration: Duration,
    },
    /// Messages between proxy and origin are dropped (lossy: turmoil has no retransmission,
    /// so connections that lose a segment stall for good, as TCP would until it gives up).
    PartitionOrigin {
        /// How long.
        duration: Duration,
    },
    /// A client's messages to and from the proxy are dropped (lossy).
    PartitionClient {
        /// Which client.
        client: usize,
        /// How long.
        duration: Duration,
    },
    /// The origin crashes (its sockets close) and restarts with its committed data.
    CrashOrigin {
        /// Time until it restarts.
        down_for: Duration,
    },
    /// The proxy crashes (every client and origin connection closes) and restarts empty.
    CrashProxy {
        /// Time until it restarts.
        down_for: Duration,
    },
    /// The proxy-origin link becomes slow.
    LatencySpike {
        /// How long.
        duration: Duration,
        /// Latency during the spike.
        latency: Duration,
    },
    /// The edge's Access stops accepting the proxy's service token (revoked), then accepts
    /// it again (re-issued); upgrades meanwhile get 403.
    RevokeToken {
        /// How long.
        duration: Duration,
    },
    /// The edge accepts a second token besides the proxy's (rotation under way), then the
    /// proxy's alone again: live tunnels and new upgrades must not notice.
    RotateToken {
        /// How long both are valid.
        duration: Duration,
    },
    /// The edge drops every live tunnel at once (mid-query for some).
    KillTunnels,
    /// The edge cannot reach the origin: upgrades get 502 from cloudflared.
    EdgeOriginDown {
        /// How long.
        duration: Duration,
    },
    /// The edge crashes (every tunnel closes) and restarts.
    CrashEdge {
        /// Time until it restarts.
        down_for: Duration,
    },
    /// Messages from `from` to `to` are dropped, the other direction flows (lossy).
    OneWayPartition {
        /// Sender whose messages are lost.
        from: String,
        /// Their destination.
        to: String,
        /// How long.
        duration: Duration,
    },
}

/// The kinds of fault, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// [`Fault::HoldOrigin`].
    HoldOrigin,
    /// [`Fault::PartitionOrigin`].
    PartitionOrigin,
    /// [`Fault::PartitionClient`].
    PartitionClient,
    /// [`Fault::CrashOrigin`].
    CrashOrigin,
    /// [`Fault::LatencySpike`].
    LatencySpike,
    /// [`Fault::CrashProxy`].
    CrashProxy,
    /// [`Fault::RevokeToken`].
    RevokeToken,
    /// [`Fault::RotateToken`].
    RotateToken,
    /// [`Fault::KillTunnels`].
    KillTunnels,
    /// [`Fault::EdgeOriginDown`].
    EdgeOriginDown,
    /// [`Fault::CrashEdge`].
    CrashEdge,
    /// [`Fault::OneWayPartition`].
    OneWayPartition,
    /// A client vanished mid-transaction (workload).
    ClientVanished,
    /// A client cancelled its own query (workload).
    Cancel,
    /// A client ran a query near or past the statement timeout (workload).
    SlowQuery,
    /// A client changed its session settings with a prepared SET (workload).
    SessionState,
}

impl FaultKind {
    /// Short name for tables and traces.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::HoldOrigin => "origin stall",
            FaultKind::PartitionOrigin => "origin partition",
            FaultKind::PartitionClient => "client partition",
            FaultKind::CrashOrigin => "origin crash",
            FaultKind::LatencySpike => "latency spike",
            FaultKind::CrashProxy => "proxy crash",
            FaultKind::RevokeToken => "token revoked",
            FaultKind::RotateToken => "token rotated",
            FaultKind::KillTunnels => "tunnels killed",
            FaultKind::EdgeOriginDown => "edge 502",
            FaultKind::CrashEdge => "edge crash",
            FaultKind::OneWayPartition => "one-way partition",
            FaultKind::ClientVanished => "client vanished",
            FaultKind::Cancel => "cancel",
            FaultKind::SlowQuery => "slow query",
            FaultKind::SessionState => "prepared SET",
        }
    }
}

impl Fault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::HoldOrigin { .. } => FaultKind::HoldOrigin,
            Fault::PartitionOrigin { .. } => FaultKind::PartitionOrigin,
            Fault::PartitionClient { .. } => FaultKind::PartitionClient,
            Fault::CrashOrigin { .. } => FaultKind::CrashOrigin,
            Fault::LatencySpike { .. } => FaultKind::LatencySpike,
            Fault::CrashProxy { .. } => FaultKind::CrashProxy,
            Fault::RevokeToken { .. } => FaultKind::RevokeToken,
            Fault::RotateToken { .. } => FaultKind::RotateToken,
            Fault::KillTunnels => FaultKind::KillTunnels,
            Fault::EdgeOriginDown { .. } => FaultKind::EdgeOriginDown,
            Fault::CrashEdge { .. } => FaultKind::CrashEdge,
            Fault::OneWayPartition { .. } => FaultKind::OneWayPartition,
        }
    }

    /// How long the fault lasts.
    pub fn duration(&self) -> Duration {
        match *self {
            Fault::HoldOrigin { duration }
            | Fault::PartitionOrigin { duration }
            | Fault::PartitionClient { duration, .. }
            | Fault::LatencySpike { duration, .. }
            | Fault::RevokeToken { duration }
            | Fault::RotateToken { duration }
            | Fault::EdgeOriginDown { duration }
            | Fault::OneWayPartition { duration, .. } => duration,
            Fault::CrashOrigin { down_for }
            | Fault::CrashProxy { down_for }
            | Fault::CrashEdge { down_for } => down_for,
            Fault::KillTunnels => Duration::ZERO,
        }
    }

    /// True when the fault can silently kill established connections.
    pub fn is_lossy(&self) -> bool {
        matches!(
            self,
            Fault::PartitionOrigin { .. }
                | Fault::PartitionClient { .. }
                | Fault::OneWayPartition { .. }
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::HoldOrigin { duration } => {
                write!(f, "hold proxy<->origin for {}", ms(*duration))
            }
            Fault::PartitionOrigin { duration } => {
                write!(f, "partition proxy<->origin for {}", ms(*duration))
            }
            Fault::PartitionClient { client, duration } => {
                write!(f, "partition client-{client}<->proxy for {}", ms(*duration))
            }
            Fault::CrashOrigin { down_for } => {
                write!(f, "crash origin, restart after {}", ms(*down_for))
            }
            Fault::CrashProxy { down_for } => {
                write!(f, "crash proxy, restart after {}", ms(*down_for))
            }
            Fault::LatencySpike { duration, latency } => write!(
                f,
                "latency proxy<->origin {} for {}",
                ms(*latency),
                ms(*duration)
            ),
            Fault::RevokeToken { duration } => {
                write!(f, "revoke the proxy's Access token for {}", ms(*duration))
            }
            Fault::RotateToken { duration } => write!(
                f,
                "rotate Access tokens (old and new valid) for {}",
                ms(*duration)
            ),
            Fault::KillTunnels => write!(f, "edge drops every live tunnel"),
            Fault::EdgeOriginDown { duration } => {
                write!(
                    f,
                    "edge cannot reach the origin (502) for {}",
                    ms(*duration)
                )
            }
            Fault::CrashEdge { down_for } => {
                write!(f, "crash edge, restart after {}", ms(*down_for))
            }
            Fault::OneWayPartition { from, to, duration } => {
                write!(f, "drop {from}->{to} (one way) for {}", ms(*duration))
            }
        }
    }
}

/// Milliseconds, for traces.
pub fn ms(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A fault at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts (simulated time since the start).
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

impl Scheduled {
    /// When it ends.
    pub fn end(&self) -> Duration {
        self.at + self.fault.duration()
    }
}

/// The seed's faults, in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The faults.
    pub faults: Vec<Scheduled>,
}

impl FaultPlan {
    /// Draws a plan for `scenario` from `rng`.
    pub fn generate(scenario: &Scenario, rng: &mut ChaCha8Rng) -> Self {
        let (min, max) = scenario.network_faults;
        let count = rng.gen_range(min..=max.max(min));
        let mut faults = Vec::new();
        let mut cursor = FIRST_FAULT_AFTER;
        for _ in 0..count {
            let at = cursor + between(rng, GAP);
            if at >= scenario.workload {
                break;
            }
            let fault = draw_fault(scenario, rng);
            cursor = at + fault.duration();
            faults.push(Scheduled { at, fault });
        }
        FaultPlan { faults }
    }

    /// The faults at `indices` (positions in this plan; out-of-range ones are ignored), in
    /// plan order: what shrinking and `--keep-faults` run instead of the whole plan.
    pub fn subset(&self, indices: &[usize]) -> FaultPlan {
        let faults = self
            .faults
            .iter()
            .enumerate()
            .filter(|(index, _)| indices.contains(index))
            .map(|(_, scheduled)| scheduled.clone())
            .collect();
        FaultPlan { faults }
    }

    /// Counts by kind.
    pub fn counts(&self) -> BTreeMap<FaultKind, u64> {
        let mut counts = BTreeMap::new();
        for scheduled in &self.faults {
            *counts.entry(scheduled.fault.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// True when a lossy fault's window (stretched by `grace`) overlaps `[start, end]`.
    pub fn lossy_overlap(&self, start: Duration, end: Duration, grace: Duration) -> bool {
        self.faults
            .iter()
            .filter(|s| s.fault.is_lossy())
            .any(|s| s.at <= end && start <= s.end() + grace)
    }

    /// One line per fault.
    pub fn render(&self) -> Vec<String> {
        if self.faults.is_empty() {
            return vec!["(no network faults)".into()];
        }
        self.faults
            .iter()
            .map(|s| format!("{:>8} {}", ms(s.at), s.fault))
            .collect()
    }
}

fn between(rng: &mut ChaCha8Rng, (low, high): (Duration, Duration)) -> Duration {
    let low = low.as_millis() as u64;
    let high = (high.as_millis() as u64).max(low);
    Duration::from_millis(rng.gen_range(low..=high))
}

fn draw_fault(scenario: &Scenario, rng: &mut ChaCha8Rng) -> Fault {
    const WEIGHTS: [(FaultKind, u32); 6] = [
        (FaultKind::HoldOrigin, 3),
        (FaultKind::CrashOrigin, 3),
        (FaultKind::LatencySpike, 2),
        (FaultKind::CrashProxy, 1),
        (FaultKind::PartitionOrigin, 1),
        (FaultKind::PartitionClient, 1),
    ];
    const TUNNEL_WEIGHTS: [(FaultKind, u32); 5] = [
        (FaultKind::RevokeToken, 2),
        (FaultKind::RotateToken, 1),
        (FaultKind::KillTunnels, 2),
        (FaultKind::EdgeOriginDown, 2),
        (FaultKind::CrashEdge, 2),
    ];
    let lossy = |kind: &FaultKind| {
        matches!(
            kind,
            FaultKind::PartitionOrigin | FaultKind::PartitionClient | FaultKind::OneWayPartition
        )
    };
    let tunnel: &[(FaultKind, u32)] = if scenario.tunnel {
        &TUNNEL_WEIGHTS
    } else {
        &[]
    };
    let one_way: &[(FaultKind, u32)] = &[(FaultKind::OneWayPartition, 1)];
    let allowed: Vec<(FaultKind, u32)> = WEIGHTS
        .iter()
        .chain(tunnel)
        .chain(if scenario.one_way_partitions {
            one_way
        } else {
            &[]
        })
        .copied()
        .filter(|(kind, _)| scenario.lossy_faults || !lossy(kind))
        .collect();
    let total: u32 = allowed.iter().map(|(_, w)| w).sum();
    let mut pick = rng.gen_range(0..total);
    let mut kind = FaultKind::HoldOrigin;
    for (candidate, weight) in allowed {
        if pick < weight {
            kind = candidate;
            break;
        }
        pick -= weight;
    }
    match kind {
        FaultKind::PartitionOrigin => Fault::PartitionOrigin {
            duration: between(rng, PARTITION),
        },
        FaultKind::PartitionClient => Fault::PartitionClient {
            client: rng.gen_range(0..scenario.clients.max(1)),
            duration: between(rng, PARTITION),
        },
        FaultKind::CrashOrigin => Fault::CrashOrigin {
            down_for: between(rng, DOWN),
        },
        FaultKind::CrashProxy => Fault::CrashProxy {
            down_for: between(rng, DOWN),
        },
        FaultKind::LatencySpike => Fault::LatencySpike {
            duration: between(rng, SPIKE),
            latency: between(rng, SPIKE_LATENCY),
        },
        FaultKind::RevokeToken => Fault::RevokeToken {
            duration: between(rng, DOWN),
        },
        FaultKind::RotateToken => Fault::RotateToken {
            duration: between(rng, SPIKE),
        },
        FaultKind::KillTunnels => Fault::KillTunnels,
        FaultKind::EdgeOriginDown => Fault::EdgeOriginDown {
            duration: between(rng, DOWN),
        },
        FaultKind::CrashEdge => Fault::CrashEdge {
            down_for: between(rng, DOWN),
        },
        FaultKind::OneWayPartition => {
            let hosts = scenario.hosts();
            let from = rng.gen_range(0..hosts.len());
            let mut to = rng.gen_range(0..hosts.len() - 1);
            if to >= from {
                to += 1;
            }
            Fault::OneWayPartition {
                from: hosts[from].clone(),
                to: hosts[to].clone(),
                duration: between(rng, PARTITION),
            }
        }
        _ => Fault::HoldOrigin {
            duration: between(rng, HOLD),
        },
    }
}

/// One step of applying a plan to the simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `sim.hold(a, b)`.
    Hold(String, String),
    /// `sim.release(a, b)`.
    Release(String, String),
    /// `sim.partition(a, b)`.
    Partition(String, String),
    /// `sim.repair(a, b)`.
    Repair(String, String),
    /// `sim.crash(host)`.
    Crash(String),
    /// `sim.bounce(host)`.
    Bounce(String),
    /// Fixed latency on a link.
    SetLatency(String, String, Duration),
    /// Back to the scenario's latency range on a link.
    RestoreLatency(String, String),
    /// `sim.partition_oneway(from, to)`.
    PartitionOneWay(String, String),
    /// `sim.repair_oneway(from, to)`.
    RepairOneWay(String, String),
    /// The edge's Access accepts these tokens.
    SetTokens(Tokens),
    /// The edge drops every live tunnel.
    KillTunnels,
    /// The edge can (true) or cannot (false) reach the origin.
    EdgeReachesOrigin(bool),
}

/// Which service tokens the edge accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// The proxy's.
    Proxy,
    /// None the proxy has (its token was revoked).
    Revoked,
    /// The proxy's and a new one (rotation).
    Rotating,
}

impl FaultPlan {
    /// The start and end actions of every fault, in time order (stable for equal times).
    /// `upstream` is the host the proxy reaches the origin through (the origin itself, or
    /// the tunnel edge): stalls, lossy partitions and latency spikes hit the proxy's link to it.
    pub fn timeline(&self, upstream: &str) -> Vec<(Duration, Action)> {
        let origin = || (PROXY_HOST.to_string(), upstream.to_string());
        let mut actions = Vec::new();
        for scheduled in &self.faults {
            let (start, end) = match &scheduled.fault {
                Fault::HoldOrigin { .. } => {
                    let (a, b) = origin();
                    (Action::Hold(a.clone(), b.clone()), Action::Release(a, b))
                }
                Fault::PartitionOrigin { .. } => {
                    let (a, b) = origin();
                    (
                        Action::Partition(a.clone(), b.clone()),
                        Action::Repair(a, b),
                    )
                }
                Fault::PartitionClient { client, .. } => {
                    let (a, b) = (crate::world::client_host(*client), PROXY_HOST.to_string());
                    (
                        Action::Partition(a.clone(), b.clone()),
                        Action::Repair(a, b),
                    )
                }
                Fault::CrashOrigin { .. } => (
                    Action::Crash(ORIGIN_HOST.into()),
                    Action::Bounce(ORIGIN_HOST.into()),
                ),
                Fault::CrashProxy { .. } => (
                    Action::Crash(PROXY_HOST.into()),
                    Action::Bounce(PROXY_HOST.into()),
                ),
                Fault::LatencySpike { latency, .. } => {
                    let (a, b) = origin();
                    (
                        Action::SetLatency(a.clone(), b.clone(), *latency),
                        Action::RestoreLatency(a, b),
                    )
                }
                Fault::RevokeToken { .. } => (
                    Action::SetTokens(Tokens::Revoked),
                    Action::SetTokens(Tokens::Proxy),
                ),
                Fault::RotateToken { .. } => (
                    Action::SetTokens(Tokens::Rotating),
                    Action::SetTokens(Tokens::Proxy),
                ),
                Fault::KillTunnels => {
                    actions.push((scheduled.at, Action::KillTunnels));
                    continue;
                }
                Fault::EdgeOriginDown { .. } => (
                    Action::EdgeReachesOrigin(false),
                    Action::EdgeReachesOrigin(true),
                ),
                Fault::CrashEdge { .. } => (
                    Action::Crash(EDGE_HOST.into()),
                    Action::Bounce(EDGE_HOST.into()),
                ),
                Fault::OneWayPartition { from, to, .. } => (
                    Action::PartitionOneWay(from.clone(), to.clone()),
                    Action::RepairOneWay(from.clone(), to.clone()),
                ),
            };
            actions.push((scheduled.at, start));
            actions.push((scheduled.end(), end));
        }
        actions.sort_by_key(|(at, _)| *at);
        actions
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Hold(a, b) => write!(f, "hold {a}<->{b}"),
            Action::Release(a, b) => write!(f, "release {a}<->{b}"),
            Action::Partition(a, b) => write!(f, "partition {a}<->{b}"),
            Action::Repair(a, b) => write!(f, "repair {a}<->{b}"),
            Action::Crash(host) => write!(f, "crash {host}"),
            Action::Bounce(host) => write!(f, "restart {host}"),
            Action::SetLatency(a, b, latency) => {
                write!(f, "latency {a}<->{b} = {}", ms(*latency))
            }
            Action::RestoreLatency(a, b) => write!(f, "latency {a}<->{b} restored"),
            Action::PartitionOneWay(a, b) => write!(f, "partition {a}->{b}"),
            Action::RepairOneWay(a, b) => write!(f, "repair {a}->{b}"),
            Action::SetTokens(tokens) => write!(f, "edge accepts tokens: {tokens:?}"),
            Action::KillTunnels => write!(f, "edge kills all tunnels"),
            Action::EdgeReachesOrigin(reachable) => {
                write!(f, "edge reaches origin: {reachable}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plans_are_seeded_and_do_not_overlap() {
        let scenario = Scenario::standard();
        for seed in 0..50 {
            let a = FaultPlan::generate(&scenario, &mut ChaCha8Rng::seed_from_u64(seed));
            let b = FaultPlan::generate(&scenario, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(a, b);
            for pair in a.faults.windows(2) {
                assert!(pair[0].end() <= pair[1].at, "{pair:?}");
            }
            assert!(a.faults.iter().all(|s| s.at < scenario.workload));
        }
    }
}
