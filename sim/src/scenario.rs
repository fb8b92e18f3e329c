//! Named scenarios: the shape of the simulated world (how many clients, pool and origin
//! sizes, timeouts, latencies, how long the workload runs) that a seed then fills in.
//!
//! Time scales are compressed (a 3 s statement timeout instead of 60 s) so that every
//! timeout, fault and recovery path is exercised within a few simulated seconds per seed, and
//! the simulator can run hundreds of seeds a minute.

use crate::fake_pg::FakeAuth;
use crate::workload::scripted::{self, Script};
use std::time::Duration;

/// A world's shape.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// What it exercises.
    pub description: &'static str,
    /// Client hosts.
    pub clients: usize,
    /// The proxy's `--pool-size`.
    pub pool_size: usize,
    /// The fake origin's `max_connections`.
    pub origin_max_connections: usize,
    /// Bank accounts.
    pub accounts: i32,
    /// Balance of each account at the start.
    pub initial_balance: i64,
    /// How the origin authenticates the proxy.
    pub origin_auth: FakeAuth,
    /// PBKDF2 iterations of the client users' SCRAM secrets at the proxy.
    pub client_scram_iterations: u32,
    /// Clients start new operations for this long.
    pub workload: Duration,
    /// Longest wait for any single client call before it counts as a hang.
    pub call_timeout: Duration,
    /// The proxy's `--statement-timeout` (whole seconds: the flag's unit).
    pub statement_timeout_secs: u64,
    /// The proxy's `--acquire-timeout`.
    pub acquire_timeout_secs: u64,
    /// The proxy's `--connect-timeout`.
    pub connect_timeout_secs: u64,
    /// The proxy's `--client-idle-timeout`.
    pub client_idle_timeout_secs: u64,
    /// The proxy's `--health-check-after`.
    pub health_check_after_secs: u64,
    /// Network latency range of every link.
    pub min_latency: Duration,
    /// See `min_latency`.
    pub max_latency: Duration,
    /// Simulated time per step.
    pub tick: Duration,
    /// Network faults per seed when faults are on.
    pub network_faults: (usize, usize),
    /// Lossy partitions (turmoil drops segments for good) may be drawn.
    pub lossy_faults: bool,
    /// Probability that a client operation is a hostile one (abandon, cancel, slow query)
    /// when faults are on.
    pub hostile_op_rate: f64,
    /// Clients do what exposed proxy bugs the simulator found (see `tests/regressions.rs`):
    /// binding the unnamed statement in a later transaction than its Parse. Both bugs are
    /// fixed; the flag stays so a scenario can leave the behaviour out when studying others.
    pub known_bugs: bool,
    /// The proxy reaches the origin through the real tunnel edge (`tunnel_edge::Edge`) on
    /// its own host, over the proxy's real `TunnelDialer`; tunnel faults may be drawn.
    pub tunnel: bool,
    /// One-way partitions between any two hosts may be drawn (lossy faults must be on).
    pub one_way_partitions: bool,
    /// Scripted sessions ([`crate::workload::scripted`]): one more client per script, after
    /// the generated ones; empty for every scenario but `scripted`. An error (a script that
    /// does not parse) makes building the world fail.
    pub scripts: Result<Vec<Script>, String>,
}

/// Recovery may take this long beyond the client idle timeout.
pub const RECOVERY_SLACK: Duration = Duration::from_secs(30);

/// Extra simulated time after the workload for stragglers and the turmoil run limit.
pub const RUN_LIMIT_SLACK: Duration = Duration::from_secs(30);

impl Scenario {
    /// The scenario `just sim` runs.
    pub fn standard() -> Self {
        Scenario {
            name: "standard",
            description: "8 clients, pool of 4, transfers and reads; origin stalls, partitions, origin and proxy crashes, latency spikes; clients that vanish, cancel, time out and change settings",
            clients: 8,
            pool_size: 4,
            origin_max_connections: 12,
            accounts: 6,
            initial_balance: 100,
            origin_auth: FakeAuth::Scram { iterations: 16 },
            client_scram_iterations: 16,
            workload: Duration::from_secs(12),
            call_timeout: Duration::from_secs(20),
            statement_timeout_secs: 2,
            acquire_timeout_secs: 3,
            connect_timeout_secs: 2,
            client_idle_timeout_secs: 30,
            health_check_after_secs: 1,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(20),
            tick: Duration::from_millis(5),
            network_faults: (1, 4),
            lossy_faults: true,
            hostile_op_rate: 0.15,
            known_bugs: true,
            tunnel: false,
            one_way_partitions: false,
            scripts: Ok(Vec::new()),
        }
    }

    /// Many clients on a tiny pool and an origin with fewer slots than the pool.
    pub fn pool_pressure() -> Self {
        Scenario {
            name: "pool-pressure",
            description: "16 clients on a pool of 2, origin max_connections 2: acquire timeouts, and 53300 while the origin still runs statements of connections the proxy closed",
            clients: 16,
            pool_size: 2,
            origin_max_connections: 2,
            network_faults: (0, 2),
            ..Scenario::standard()
        }
    }

    /// Network faults only, no hostile clients, md5 to the origin.
    pub fn network_only() -> Self {
        Scenario {
            name: "network",
            description: "well-behaved clients, md5 to the origin, 3 to 6 network faults per seed",
            origin_auth: FakeAuth::Md5,
            network_faults: (3, 6),
            hostile_op_rate: 0.0,
            one_way_partitions: true,
            ..Scenario::standard()
        }
    }

    /// The standard scenario through the tunnel edge, with the edge's faults.
    pub fn tunnel() -> Self {
        Scenario {
            name: "tunnel",
            description: "the standard scenario with proxy -> tunnel edge -> origin: Access token revoked and rotated, tunnels killed mid-query, the edge answering 502, edge crashes, one-way partitions",
            tunnel: true,
            one_way_partitions: true,
            network_faults: (2, 5),
            ..Scenario::standard()
        }
    }

    /// The benchmark: the standard faulted scenario with 10 clients and about 60
    /// simulated seconds per seed (`sim run --scenario bench`).
    pub fn bench() -> Self {
        Scenario {
            name: "bench",
            description: "the benchmark: the standard scenario with 10 clients and a 50 s workload (about 60 simulated seconds per seed)",
            clients: 10,
            workload: Duration::from_secs(50),
            network_faults: (4, 12),
            ..Scenario::standard()
        }
    }

    /// The standard faults with 3 generated clients and one scripted client per script of
    /// `testdata/sim/sessions/` (`sim run --scenario scripted`).
    pub fn scripted() -> Self {
        Scenario {
            name: "scripted",
            description: "the standard faults with 3 generated clients plus one client per script of testdata/sim/sessions/, each run over and over and checked statement by statement",
            clients: 3,
            workload: Duration::from_secs(8),
            scripts: scripted::load_default(),
            ..Scenario::standard()
        }
    }

    /// Scripted clients (0 when the scripts did not load).
    pub fn script_clients(&self) -> usize {
        self.scripts.as_ref().map_or(0, Vec::len)
    }

    /// Every host of the world (clients, proxy, edge when tunnelled, origin).
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = (0..self.clients + self.script_clients())
            .map(crate::world::client_host)
            .collect();
        hosts.push(crate::faults::PROXY_HOST.into());
        if self.tunnel {
            hosts.push(crate::faults::EDGE_HOST.into());
        }
        hosts.push(crate::faults::ORIGIN_HOST.into());
        hosts
    }

    /// A short version of the standard scenario for debug-build tests.
    pub fn quick() -> Self {
        Scenario {
            name: "quick",
            description: "the standard scenario with 4 clients and a 4 s workload (for tests)",
            clients: 4,
            pool_size: 2,
            workload: Duration::from_secs(4),
            tick: Duration::from_millis(5),
            network_faults: (1, 2),
            ..Scenario::standard()
        }
    }

    /// When the recovery probe gives up: after the workload, the proxy must serve a fresh
    /// client again within this long (client idle timeout + cleanup + reconnects).
    pub fn recovery_deadline(&self) -> Duration {
        self.workload + Duration::from_secs(self.client_idle_timeout_secs) + RECOVERY_SLACK
    }

    /// Every scenario, for `--scenario` and its help.
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario::standard(),
            Scenario::pool_pressure(),
            Scenario::network_only(),
            Scenario::tunnel(),
            Scenario::bench(),
            Scenario::quick(),
            Scenario::scripted(),
        ]
    }

    /// The scenario called `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::all().into_iter().find(|s| s.name == name)
    }

    /// The turmoil run limit: the workload, the longest call, and slack.
    pub fn run_limit(&self) -> Duration {
        self.recovery_deadline() + self.call_timeout + RUN_LIMIT_SLACK
    }
}
