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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        }
    }

    /// How long the fault lasts.
    pub fn duration(&self) -> Duration {
        match *self {
            Fault::HoldOrigin { duration }
            | Fault::PartitionOrigin { duration }
            | Fault::PartitionClient { duration, .. }
            | Fault::LatencySpike { duration, .. } => duration,
            Fault::CrashOrigin { down_for } | Fault::CrashProxy { down_for } => down_for,
        }
    }

    /// True when the fault can silently kill established connections.
    pub fn is_lossy(&self) -> bool {
        matches!(
            self,
            Fault::PartitionOrigin { .. } | Fault::PartitionClient { .. }
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
        }
    }
}

/// Milliseconds, for traces.
pub fn ms(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A fault at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            .map(|(_, scheduled)| *scheduled)
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
    let allowed: Vec<(FaultKind, u32)> = WEIGHTS
        .into_iter()
        .filter(|(kind, _)| {
            scenario.lossy_faults
                || !matches!(
                    kind,
                    FaultKind::PartitionOrigin | FaultKind::PartitionClient
                )
        })
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
}

impl FaultPlan {
    /// The start and end actions of every fault, in time order (stable for equal times).
    pub fn timeline(&self) -> Vec<(Duration, Action)> {
        let origin = || (PROXY_HOST.to_string(), ORIGIN_HOST.to_string());
        let mut actions = Vec::new();
        for scheduled in &self.faults {
            let (start, end) = match scheduled.fault {
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
                    let (a, b) = (crate::world::client_host(client), PROXY_HOST.to_string());
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
                        Action::SetLatency(a.clone(), b.clone(), latency),
                        Action::RestoreLatency(a, b),
                    )
                }
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
