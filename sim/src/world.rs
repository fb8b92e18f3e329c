//! One seed's world: a turmoil simulation with the fake origin, the real proxy and the
//! clients as hosts, every random choice derived from the seed, and the fault plan applied
//! as simulated time passes.
//!
//! Hosts: `origin` (the fake Postgres on 5432; crashes lose its sessions, never its committed
//! data), `proxy` (the reference proxy's own `build_context` + `serve` over turmoil sockets),
//! `client-<i>` (tokio-postgres workloads). The proxy gets its RNG and the fake its cancel keys
//! and salts from the seed; turmoil gets its seed for latencies and host order.

use crate::fake_pg::{FakePgConfig, FakePostgres, OriginStats, WireTap};
use crate::faults::{Action, EDGE_HOST, FaultPlan, ORIGIN_HOST, PROXY_HOST, Tokens};
use crate::net::{CountingDialer, GatedDialer, SessionCounter, TurmoilDialer, TurmoilListener};
use crate::scenario::Scenario;
use crate::trace::{Collected, Log};
use crate::workload::{self, ClientSpec, PROXY_PORT, ProbeSpec};
use elephant_auth::ScramSecret;
use elephant_protocol::display::fnv1a_64;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rand::SeedableRng;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use reference_proxy::config::ProxyConfig;
use reference_proxy::metrics::Metrics;
use reference_proxy::server::{SessionExecution, build_context, serve_with};
use reference_proxy::stream::Dialer;
use reference_proxy::tunnel::{AccessToken, TunnelDialer, TunnelSettings, TunnelTls, TunnelUrl};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tunnel_edge::{AccessControl, Edge, EdgeConfig, ServiceToken, TokenSet};

/// The origin's port.
pub const ORIGIN_PORT: u16 = 5432;
/// Role, password and database of the origin (and of the clients at the proxy).
pub const USER: &str = "app";
/// See [`USER`].
pub const PASSWORD: &str = "pw-sim-Kx7q2-origin";
/// See [`USER`].
pub const DATABASE: &str = "bank";
/// How long the proxy's `serve` waits for transactions when it stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The edge's port.
pub const EDGE_PORT: u16 = 443;
/// The proxy's Access service token id (the secret is derived from the seed).
pub const ACCESS_CLIENT_ID: &str = "sim-proxy.access";
/// The token that rotation adds.
pub const ROTATED_CLIENT_ID: &str = "sim-rotated.access";
/// The edge's limits, compressed like the scenario's timeouts.
pub const EDGE_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The proxy's limit for TCP + upgrade to the edge.
pub const TUNNEL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Host name of client `index`.
pub fn client_host(index: usize) -> String {
    format!("client-{index}")
}

/// A seed for one purpose, derived from the simulation seed (stable across versions of
/// `rand`, unlike drawing them in sequence from one generator).
pub fn derive(seed: u64, purpose: &str) -> u64 {
    fnv1a_64(format!("{seed}/{purpose}").as_bytes())
}

/// What a finished world reports.
pub struct Finished {
    /// The turmoil error, if the simulation did not complete.
    pub error: Option<String>,
    /// What the clients saw.
    pub collected: Collected,
    /// The origin's committed state.
    pub bank: crate::fake_pg::Bank,
    /// The origin's counters.
    pub origin: OriginStats,
    /// Most origin sessions the proxy held at once.
    pub proxy_max_sessions: usize,
    /// Origin sessions the proxy opened in total.
    pub proxy_sessions_opened: usize,
    /// Origin sessions the proxy holds at the end.
    pub proxy_sessions_now: usize,
    /// Simulated time elapsed.
    pub sim_time: Duration,
}

/// A built world, ready to run.
pub struct World {
    sim: turmoil::Sim<'static>,
    fake: FakePostgres,
    log: Log,
    counter: Arc<SessionCounter>,
    plan: FaultPlan,
    scenario: Scenario,
    edge: Option<EdgeHandles>,
}

/// What the fault plan needs to reach inside the tunnel edge: its Access control (shared by
/// every incarnation of the edge host, as a token store outlives a restart), the running
/// edge (to kill its tunnels), the switch of its origin dials, and the tokens.
#[derive(Clone)]
pub struct EdgeHandles {
    access: Arc<AccessControl>,
    running: Arc<Mutex<Option<Arc<Edge>>>>,
    origin_reachable: Arc<AtomicBool>,
    proxy_token: ServiceToken,
    rotated_token: ServiceToken,
}

impl EdgeHandles {
    fn new(seed: u64) -> Result<Self, String> {
        let proxy_token = ServiceToken::new(ACCESS_CLIENT_ID, token_secret(seed, "access-secret"));
        let rotated_token =
            ServiceToken::new(ROTATED_CLIENT_ID, token_secret(seed, "rotated-secret"));
        let set = TokenSet::service_auth(vec![proxy_token.clone()])
            .map_err(|e| format!("edge tokens: {e}"))?;
        Ok(EdgeHandles {
            access: Arc::new(AccessControl::new(set)),
            running: Arc::new(Mutex::new(None)),
            origin_reachable: Arc::new(AtomicBool::new(true)),
            proxy_token,
            rotated_token,
        })
    }

    fn set_tokens(&self, tokens: Tokens) {
        let list = match tokens {
            Tokens::Proxy => vec![self.proxy_token.clone()],
            Tokens::Revoked => vec![self.rotated_token.clone()],
            Tokens::Rotating => vec![self.rotated_token.clone(), self.proxy_token.clone()],
        };
        if let Ok(set) = TokenSet::service_auth(list) {
            self.access.replace(set);
        }
    }

    fn kill_tunnels(&self) {
        if let Ok(running) = self.running.lock()
            && let Some(edge) = running.as_ref()
        {
            edge.kill_all_tunnels();
        }
    }
}

impl World {
    /// Builds the world of `seed`. `faults` off means no network faults and no hostile
    /// clients.
    pub fn build(seed: u64, scenario: &Scenario, faults: bool) -> Result<World, String> {
        World::build_with(seed, scenario, faults, false, None)
    }

    /// [`World::build`], optionally with the fake origin's wire messages in the trace, and
    /// with only the faults at `keep_faults` (positions in the seed's plan) when given.
    /// Everything else — the clients' choices, the hostile operations, latencies — is drawn
    /// as in the full run, so a subset of faults replays the same seed with fewer faults.
    pub fn build_with(
        seed: u64,
        scenario: &Scenario,
        faults: bool,
        wire: bool,
        keep_faults: Option<&[usize]>,
    ) -> Result<World, String> {
        let mut plan = if faults {
            FaultPlan::generate(
                scenario,
                &mut ChaCha8Rng::seed_from_u64(derive(seed, "faults")),
            )
        } else {
            FaultPlan::default()
        };
        if let Some(keep) = keep_faults {
            plan = plan.subset(keep);
        }
        let mut sim = turmoil::Builder::new()
            .simulation_duration(scenario.run_limit())
            .tick_duration(scenario.tick)
            .min_message_latency(scenario.min_latency)
            .max_message_latency(scenario.max_latency)
            .enable_random_order()
            .rng_seed(derive(seed, "turmoil"))
            .build();
        let log = Log::default();
        let mut origin = origin_config(seed, scenario);
        if wire {
            let wire_log = log.clone();
            origin.wire_tap = Some(WireTap(Arc::new(move |line: &str| {
                wire_log.wire(workload::now(), line);
            })));
        }
        let fake = FakePostgres::new(origin);
        let counter = Arc::new(SessionCounter::default());
        add_origin(&mut sim, &fake);
        let edge = if scenario.tunnel {
            let handles = EdgeHandles::new(seed)?;
            add_edge(&mut sim, &handles);
            Some(handles)
        } else {
            None
        };
        add_proxy(&mut sim, seed, scenario, counter.clone(), edge.as_ref())?;
        for index in 0..scenario.clients {
            let spec = client_spec(seed, scenario, index, faults);
            sim.client(client_host(index), workload::run(spec, log.clone()));
        }
        let scripts = scenario.scripts.as_ref().map_err(|e| e.clone())?;
        for (offset, script) in scripts.iter().enumerate() {
            let spec = script_spec(scenario, scenario.clients + offset, script);
            let host = client_host(spec.index);
            sim.client(host, workload::scripted::run(spec, log.clone()));
        }
        sim.client(
            workload::PROBE_HOST,
            workload::probe(probe_spec(scenario, &plan), log.clone()),
        );
        Ok(World {
            sim,
            fake,
            log,
            counter,
            plan,
            scenario: scenario.clone(),
            edge,
        })
    }

    /// The fault plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Runs the simulation to its end, applying the fault plan on the way.
    pub fn run(mut self) -> Finished {
        let upstream = if self.edge.is_some() {
            EDGE_HOST
        } else {
            ORIGIN_HOST
        };
        let timeline = self.plan.timeline(upstream);
        let mut next = 0;
        let error = loop {
            let elapsed = self.sim.elapsed();
            while let Some((at, action)) = timeline.get(next).filter(|(at, _)| *at <= elapsed) {
                self.log.line(*at, format!("fault: {action}"));
                apply(&mut self.sim, action, &self.scenario, self.edge.as_ref());
                next += 1;
            }
            match self.sim.step() {
                Ok(true) => break None,
                Ok(false) => {}
                Err(error) => break Some(error.to_string()),
            }
        };
        Finished {
            error,
            collected: self.log.collect(),
            bank: self.fake.bank(),
            origin: self.fake.stats(),
            proxy_max_sessions: self.counter.max(),
            proxy_sessions_opened: self.counter.opened(),
            proxy_sessions_now: self.counter.now(),
            sim_time: self.sim.elapsed(),
        }
    }
}

fn apply(
    sim: &mut turmoil::Sim<'static>,
    action: &Action,
    scenario: &Scenario,
    edge: Option<&EdgeHandles>,
) {
    match action {
        Action::PartitionOneWay(a, b) => sim.partition_oneway(a.as_str(), b.as_str()),
        Action::RepairOneWay(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
        Action::SetTokens(tokens) => {
            if let Some(edge) = edge {
                edge.set_tokens(*tokens);
            }
        }
        Action::KillTunnels => {
            if let Some(edge) = edge {
                edge.kill_tunnels();
            }
        }
        Action::EdgeReachesOrigin(reachable) => {
            if let Some(edge) = edge {
                edge.origin_reachable.store(*reachable, Ordering::SeqCst);
            }
        }
        Action::Hold(a, b) => sim.hold(a.as_str(), b.as_str()),
        Action::Release(a, b) => sim.release(a.as_str(), b.as_str()),
        Action::Partition(a, b) => sim.partition(a.as_str(), b.as_str()),
        Action::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
        Action::Crash(host) => sim.crash(host.as_str()),
        Action::Bounce(host) => sim.bounce(host.as_str()),
        Action::SetLatency(a, b, latency) => sim.set_link_latency(a.as_str(), b.as_str(), *latency),
        Action::RestoreLatency(a, b) => {
            sim.set_link_latency(a.as_str(), b.as_str(), scenario.min_latency);
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), scenario.max_latency);
        }
    }
}

pub fn origin_config(seed: u64, scenario: &Scenario) -> FakePgConfig {
    FakePgConfig {
        user: USER.into(),
        password: PASSWORD.into(),
        auth: scenario.origin_auth,
        database: DATABASE.into(),
        max_connections: scenario.origin_max_connections,
        accounts: scenario.accounts,
        initial_balance: scenario.initial_balance,
        seed: derive(seed, "origin"),
        wire_tap: None,
    }
}

/// The fake origin: accepts connections until the host crashes; restarts keep the bank.
///
/// Sessions run inside the host's own future (a `FuturesUnordered`), not as separate tokio
/// tasks: when turmoil crashes the host it drops them in the order they were accepted,
/// whereas tokio would drop spawned tasks in an order derived from process-wide task ids,
/// which differs between two runs of a seed in one process.
pub fn add_origin(sim: &mut turmoil::Sim<'static>, fake: &FakePostgres) {
    let fake = fake.clone();
    sim.host(ORIGIN_HOST, move || serve_origin(fake.clone()));
}

async fn serve_origin(fake: FakePostgres) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", ORIGIN_PORT)).await?;
    let mut sessions = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let fake = fake.clone();
                sessions.push(async move { fake.serve_connection(stream).await });
            }
            Some(()) = sessions.next(), if !sessions.is_empty() => {}
        }
    }
}

/// The real tunnel edge (`tunnel_edge::Edge`, plain WebSocket: see
/// `reference_proxy::tunnel::TunnelTls`) on its own host, dialling the origin over turmoil.
/// A restart builds a new `Edge` with the same Access control.
pub fn add_edge(sim: &mut turmoil::Sim<'static>, handles: &EdgeHandles) {
    let handles = handles.clone();
    sim.host(EDGE_HOST, move || {
        let handles = handles.clone();
        async move {
            let origin: Arc<dyn Dialer> = Arc::new(GatedDialer::new(
                Arc::new(TurmoilDialer::uncounted(ORIGIN_HOST, ORIGIN_PORT)),
                handles.origin_reachable.clone(),
            ));
            let config = EdgeConfig {
                dial_timeout: EDGE_DIAL_TIMEOUT,
                ..EdgeConfig::default()
            };
            let edge = Arc::new(Edge::new(config, handles.access.clone(), origin, None));
            if let Ok(mut running) = handles.running.lock() {
                *running = Some(edge.clone());
            }
            serve_edge(edge).await
        }
    });
}

/// The edge's accept loop: each connection is the edge's own `Edge::handle` (cancel safe),
/// run inside the host's future rather than spawned by `Edge::serve`, for the reason
/// [`serve_origin`] gives: a crash then drops them in accept order, not in an order derived
/// from process-wide task ids.
async fn serve_edge(edge: Arc<Edge>) -> turmoil::Result {
    let mut listener = TurmoilListener::bind(EDGE_PORT).await?;
    let mut connections = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            accepted = reference_proxy::stream::Listener::accept(&mut listener) => {
                let (stream, peer) = accepted?;
                let edge = edge.clone();
                connections.push(async move { edge.handle(stream, peer).await });
            }
            Some(()) = connections.next(), if !connections.is_empty() => {}
        }
    }
}

/// The proxy's dialer to the origin: TCP over turmoil, or the proxy's real `TunnelDialer`
/// over turmoil to the edge; either way counted (see [`crate::net`]).
fn proxy_dialer(
    counter: Arc<SessionCounter>,
    edge: Option<&EdgeHandles>,
) -> Result<Arc<dyn Dialer>, String> {
    let Some(edge) = edge else {
        return Ok(Arc::new(TurmoilDialer::new(
            ORIGIN_HOST,
            ORIGIN_PORT,
            counter,
        )));
    };
    let url = TunnelUrl::parse(&format!("wss://{EDGE_HOST}:{EDGE_PORT}"))
        .map_err(|e| format!("tunnel url: {e}"))?;
    let mut settings = TunnelSettings::new(url);
    settings.token = Some(AccessToken {
        client_id: edge.proxy_token.id.clone(),
        client_secret: edge.proxy_token.secret.clone(),
    });
    settings.handshake_timeout = TUNNEL_HANDSHAKE_TIMEOUT;
    let transport = Arc::new(TurmoilDialer::uncounted(EDGE_HOST, EDGE_PORT));
    let tunnel = TunnelDialer::over(settings, transport, TunnelTls::Plaintext)
        .map_err(|e| format!("tunnel dialer: {e}"))?;
    Ok(Arc::new(CountingDialer::new(Arc::new(tunnel), counter)))
}

/// A service token secret drawn from the seed.
fn token_secret(seed: u64, purpose: &str) -> String {
    format!(
        "{:016x}{:016x}",
        derive(seed, purpose),
        derive(seed, &format!("{purpose}/2"))
    )
}

/// Shortest piece of a SCRAM secret looked for in logs (shorter ones could match by chance).
const MIN_SECRET_PIECE_LEN: usize = 12;

/// Everything secret in the world of `seed`, by kind: what no log line of the proxy or the
/// edge may contain ([`crate::invariants::Invariant::NoSecretInLogs`]). SCRAM nonces and
/// proofs are per exchange and never known here; their redaction is the codec's (its
/// `Display` shows SASL payloads by length only), tested there.
pub fn secrets(seed: u64, scenario: &Scenario) -> Vec<(&'static str, String)> {
    let mut secrets = vec![("the database password", PASSWORD.to_string())];
    if let Some(stored) = client_secret(seed, scenario) {
        for piece in stored
            .split(['$', ':'])
            .filter(|piece| piece.len() >= MIN_SECRET_PIECE_LEN)
        {
            secrets.push(("the clients' SCRAM secret", piece.to_string()));
        }
    }
    if scenario.tunnel {
        secrets.push((
            "the Access service token secret",
            token_secret(seed, "access-secret"),
        ));
        secrets.push((
            "the rotated service token secret",
            token_secret(seed, "rotated-secret"),
        ));
    }
    secrets
}

/// The clients' SCRAM secret at the proxy (`--client-user`), in Postgres's format.
fn client_secret(seed: u64, scenario: &Scenario) -> Option<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive(seed, "client-secret"));
    ScramSecret::generate(PASSWORD, &mut rng, scenario.client_scram_iterations)
        .ok()
        .map(|secret| secret.to_postgres_string())
}

/// The proxy's configuration, through its own command-line parser.
pub fn proxy_config(seed: u64, scenario: &Scenario) -> Result<ProxyConfig, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(derive(seed, "client-secret"));
    let secret = ScramSecret::generate(PASSWORD, &mut rng, scenario.client_scram_iterations)
        .map_err(|e| format!("client secret: {e}"))?;
    let args = [
        "reference-proxy".to_string(),
        "--origin".into(),
        format!(
            "postgres://{USER}:{PASSWORD}@{ORIGIN_HOST}:{ORIGIN_PORT}/{DATABASE}?sslmode=disable"
        ),
        "--pool-size".into(),
        scenario.pool_size.to_string(),
        "--acquire-timeout".into(),
        scenario.acquire_timeout_secs.to_string(),
        "--connect-timeout".into(),
        scenario.connect_timeout_secs.to_string(),
        "--statement-timeout".into(),
        scenario.statement_timeout_secs.to_string(),
        "--client-idle-timeout".into(),
        scenario.client_idle_timeout_secs.to_string(),
        "--health-check-after".into(),
        scenario.health_check_after_secs.to_string(),
        "--shutdown-grace".into(),
        SHUTDOWN_GRACE.as_secs().to_string(),
        "--auth-method".into(),
        "scram-sha-256".into(),
        "--client-user".into(),
        format!("{USER}:{}", secret.to_postgres_string()),
    ];
    reference_proxy::config::load_from_args(args).map_err(|e| format!("proxy configuration: {e}"))
}

/// The real proxy: `build_context` with the turmoil dialer and a seeded RNG, then `serve`.
pub fn add_proxy(
    sim: &mut turmoil::Sim<'static>,
    seed: u64,
    scenario: &Scenario,
    counter: Arc<SessionCounter>,
    edge: Option<&EdgeHandles>,
) -> Result<(), String> {
    let config = proxy_config(seed, scenario)?;
    let dialer = proxy_dialer(counter, edge)?;
    let rng_seed = derive(seed, "proxy");
    sim.host(PROXY_HOST, move || {
        let config = config.clone();
        let dialer = dialer.clone();
        async move {
            let metrics = Metrics::new()?;
            let (stop, shutdown) = watch::channel(false);
            let rng = Box::new(ChaCha20Rng::seed_from_u64(rng_seed));
            let ctx = build_context(&config, dialer, rng, metrics, shutdown)?;
            let listener = TurmoilListener::bind(PROXY_PORT).await?;
            // In place, not spawned: a host crash then drops the sessions in accept order.
            serve_with(ctx, listener, SHUTDOWN_GRACE, SessionExecution::InPlace).await;
            drop(stop);
            Ok(())
        }
    });
    Ok(())
}

fn client_spec(seed: u64, scenario: &Scenario, index: usize, faults: bool) -> ClientSpec {
    ClientSpec {
        index,
        seed: derive(seed, &client_host(index)),
        proxy_host: PROXY_HOST.into(),
        user: USER.into(),
        password: PASSWORD.into(),
        database: DATABASE.into(),
        accounts: scenario.accounts,
        initial_balance: scenario.initial_balance,
        until: scenario.workload,
        call_timeout: scenario.call_timeout,
        statement_timeout: Duration::from_secs(scenario.statement_timeout_secs),
        known_bugs: scenario.known_bugs,
        hostile_rate: if faults {
            scenario.hostile_op_rate
        } else {
            0.0
        },
    }
}

fn script_spec(
    scenario: &Scenario,
    index: usize,
    script: &workload::scripted::Script,
) -> workload::scripted::ScriptSpec {
    workload::scripted::ScriptSpec {
        index,
        script: script.clone(),
        proxy_host: PROXY_HOST.into(),
        user: USER.into(),
        password: PASSWORD.into(),
        database: DATABASE.into(),
        until: scenario.workload,
        call_timeout: scenario.call_timeout,
    }
}

fn probe_spec(scenario: &Scenario, plan: &FaultPlan) -> ProbeSpec {
    let faults_over = plan
        .faults
        .iter()
        .map(|s| s.end())
        .max()
        .unwrap_or_default();
    ProbeSpec {
        proxy_host: PROXY_HOST.into(),
        user: USER.into(),
        password: PASSWORD.into(),
        database: DATABASE.into(),
        start: scenario.workload.max(faults_over),
        deadline: scenario
            .recovery_deadline()
            .max(faults_over + scenario.call_timeout),
        call_timeout: scenario.call_timeout,
        total_balance: scenario.initial_balance * i64::from(scenario.accounts),
    }
}
