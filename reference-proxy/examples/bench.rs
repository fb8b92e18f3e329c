//! Benchmark: the reference proxy against Postgres directly and against PgBouncer.
//!
//! One run, on this machine:
//!
//! 1. `pgbench -S` (32 clients, 2 threads, pool 8) in the simple, extended and prepared query
//!    modes, directly to Postgres, through PgBouncer (transaction pooling, pool 8) and through
//!    the proxy (pool 8, on its own 2-worker runtime), as TPS and ratios;
//! 2. time to first row of a new client connection when the origin is 20 ms away (a delay
//!    relay, 10 ms each way): a direct SCRAM+TLS login versus a fresh client of a proxy whose
//!    pool is already warm;
//! 3. the WebSocket tunnel's cost (module `tunnel`): on a TLS-enabled cluster, the same proxy
//!    configuration with Postgres TLS straight over TCP versus inside the tunnel
//!    (TLS(WebSocket(TLS)) through the in-process tunnel edge): `pgbench -S` simple and
//!    prepared, and bulk COPY out and in (100 MB, 20 MB with `--quick`) as MB/s, against the
//!    issue's target of tunnel ≥ 0.7× direct TLS.
//!
//! Next to the TPS it reads CPU time from /proc (pgbench, the Postgres cluster, the pooler, and
//! busy time elsewhere on the machine), so a slow pooler shows whether it ran out of CPU or
//! waited, and a noisy run (other load on the machine) shows as such. The phases use separate
//! clusters: PgBouncer's fixture speaks TLS to a TLS-enabled cluster, which would
//! make its pgbench runs unlike the proxy's plain ones.
//!
//! It prints a table and one MET / MISSED line per target, and exits 0 whether or not the
//! targets are met (speed is measured here, never asserted in tests); it exits 1 only when it
//! cannot set up (no Postgres, pgbench -i failing).
//!
//! `cargo run --release -p reference-proxy --example bench [-- --quick]`; env `BENCH_SECONDS`
//! sets the length of each pgbench run (default 10, 2 with `--quick`), `--quick` also cuts the
//! connection timings from 30 to 10 runs and the COPYs to one run of 20 MB (else three of
//! 100 MB, median). `RUST_LOG` sets the proxy's log filter (default `warn`, to stderr).

#![allow(clippy::print_stdout)] // A benchmark's job is to print its results.

#[path = "bench/cpu.rs"]
mod cpu;
#[path = "bench/pgbench.rs"]
mod pgbench;
#[path = "bench/proxy.rs"]
mod proxy;
#[path = "bench/relay.rs"]
mod relay;
#[path = "bench/ttfr.rs"]
mod ttfr;
#[path = "bench/tunnel.rs"]
mod tunnel;

use fixtures::{PgBouncer, PgBouncerConfig, Postgres, PostgresConfig, Role, TestPki};
use pgbench::Outcome;
use proxy::RunningProxy;
use reference_proxy::origin::OriginConnector;
use reference_proxy::server::origin_login;
use reference_proxy::stream::Dialer;
use relay::{DelayRelay, RelayDialer};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use ttfr::Summary;

/// The query modes pgbench runs in.
const MODES: [&str; 3] = ["simple", "extended", "prepared"];
/// Pool size of PgBouncer and the proxy.
const POOL_SIZE: usize = 8;
/// Name of the proxy runtime's threads (to read their CPU time).
const PROXY_THREADS: &str = "proxy";
/// Delay of the relay in each direction.
const ONE_WAY: Duration = Duration::from_millis(10);

/// Targets from the issue.
const PGBOUNCER_TARGET: f64 = 1.2;
const PREPARED_TARGET: f64 = 0.6;
const TTFR_TARGET: f64 = 5.0;

struct Options {
    seconds: u64,
    ttfr_runs: usize,
    /// Size of each bulk COPY in the tunnel comparison, in MB.
    copy_megabytes: usize,
    /// COPY runs per path and direction.
    copy_runs: usize,
}

impl Options {
    fn from_env() -> Result<Options, String> {
        let mut quick = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                other => return Err(format!("unknown argument {other:?} (only --quick)")),
            }
        }
        let seconds = match std::env::var("BENCH_SECONDS") {
            Ok(value) => value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("BENCH_SECONDS={value:?} is not a positive integer"))?,
            Err(_) if quick => 2,
            Err(_) => 10,
        };
        Ok(Options {
            seconds,
            ttfr_runs: if quick { 10 } else { 30 },
            copy_megabytes: if quick { 20 } else { 100 },
            copy_runs: if quick { 1 } else { 3 },
        })
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = Options::from_env().and_then(|options| run(&options));
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

fn runtime(workers: usize, name: &str) -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("{name} runtime: {e}"))
}

/// One pgbench run and the CPU it took, in cores (CPU seconds per second of the run).
struct Run {
    outcome: Outcome,
    /// The whole machine, busy (the benchmark and anything else running).
    machine_cores: Option<f64>,
    /// pgbench itself.
    pgbench_cores: Option<f64>,
    /// The Postgres cluster (postmaster and backends).
    postgres_cores: Option<f64>,
    /// The pooler (PgBouncer's process, the proxy's runtime threads); `None` direct.
    pooler_cores: Option<f64>,
}

/// CPU counters read before and after a run.
struct CpuReading {
    machine: Option<Duration>,
    pgbench: Option<Duration>,
    postgres: Option<Duration>,
    pooler: Option<Duration>,
}

impl CpuReading {
    fn take(pg: &Postgres, pooler: &impl Fn() -> Option<Duration>) -> CpuReading {
        CpuReading {
            machine: cpu::machine_busy(),
            pgbench: cpu::reaped_children(),
            postgres: cpu::postgres(pg.data_dir()),
            pooler: pooler(),
        }
    }
}

impl Run {
    /// Runs `bench`, reading the CPU counters around it.
    fn measure(
        pg: &Postgres,
        pooler_cpu: impl Fn() -> Option<Duration>,
        bench: impl FnOnce() -> Outcome,
    ) -> Run {
        let before = CpuReading::take(pg, &pooler_cpu);
        let start = std::time::Instant::now();
        let outcome = bench();
        let wall = start.elapsed().as_secs_f64();
        let after = CpuReading::take(pg, &pooler_cpu);
        let cores = |before: Option<Duration>, after: Option<Duration>| {
            Some(after?.checked_sub(before?)?.as_secs_f64() / wall)
        };
        Run {
            outcome,
            machine_cores: cores(before.machine, after.machine),
            pgbench_cores: cores(before.pgbench, after.pgbench),
            postgres_cores: cores(before.postgres, after.postgres),
            pooler_cores: cores(before.pooler, after.pooler),
        }
    }

    fn failed(error: String) -> Run {
        Run {
            outcome: Outcome::Failed(error),
            machine_cores: None,
            pgbench_cores: None,
            postgres_cores: None,
            pooler_cores: None,
        }
    }

    /// Busy cores not charged to pgbench, Postgres or the pooler: interrupt (softirq) time and
    /// load from outside the benchmark (other processes on the machine), which makes a run
    /// less trustworthy when it is high.
    fn other_cores(&self) -> Option<f64> {
        let ours =
            self.pgbench_cores? + self.postgres_cores? + self.pooler_cores.unwrap_or_default();
        Some((self.machine_cores? - ours).max(0.0))
    }
}

/// Results of the pgbench phase.
struct PgbenchResults {
    /// Per mode: direct, PgBouncer, proxy.
    rows: Vec<(&'static str, [Run; 3])>,
    /// Origin connections the proxy had open at the end.
    proxy_connections: usize,
}

/// Results of the connection-time phase.
struct TtfrResults {
    direct: Result<Summary, String>,
    proxied: Result<Summary, String>,
    runs: usize,
    /// The one-way delay the relay actually applied, on average.
    measured_one_way: Option<Duration>,
}

fn run(options: &Options) -> Result<String, String> {
    // The proxy gets 2 workers like a small deployment; the harness (relay, timing clients)
    // has its own single worker so it never runs on the proxy's threads.
    // The tunnel edge (standing in for Cloudflare and cloudflared) gets its own 2 workers.
    let proxy_runtime = runtime(2, PROXY_THREADS)?;
    let bench_runtime = runtime(1, tunnel::BENCH_THREADS)?;
    let edge_runtime = runtime(2, tunnel::EDGE_THREADS)?;
    let pgbench = pgbench_phase(options, &proxy_runtime)?;
    let ttfr = ttfr_phase(options, &proxy_runtime, &bench_runtime)?;
    let tunnel = tunnel::phase(options, &proxy_runtime, &edge_runtime, &bench_runtime)?;
    Ok(report(options, &pgbench, &ttfr, &tunnel))
}

fn pgbench_phase(options: &Options, proxy_runtime: &Runtime) -> Result<PgbenchResults, String> {
    progress("starting Postgres");
    let pg = Postgres::start(PostgresConfig::default()).map_err(|e| format!("Postgres: {e}"))?;
    progress("pgbench -i -s 10 -q (direct)");
    let init = pgbench::run(&pg, pg.port(), &["-i", "-s", "10", "-q"])?;
    if !init.status.success() {
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        ));
    }
    progress("starting PgBouncer");
    let bouncer = if fixtures::pgbouncer_bin().is_none() {
        Err("PgBouncer is not installed (apt-get install pgbouncer, or set PGBOUNCER_BIN)".into())
    } else {
        PgBouncer::start(
            &pg,
            PgBouncerConfig {
                pool_mode: "transaction",
                default_pool_size: u32::try_from(POOL_SIZE).unwrap_or(8),
                ..Default::default()
            },
        )
        .map_err(|e| format!("PgBouncer did not start: {e}"))
    };
    progress("starting the proxy");
    let origin = format!("{}?sslmode=disable", pg.url(Role::Scram));
    let proxy = RunningProxy::start(proxy_runtime, &origin, POOL_SIZE, &[], None)
        .map_err(|e| format!("proxy: {e}"))?;

    let bouncer_pid = bouncer
        .as_ref()
        .ok()
        .and_then(|b| cpu::find_process("pgbouncer", &b.dir().to_string_lossy()));

    // A short unreported run first, so the first measured one does not pay for cold caches.
    progress("warm-up: pgbench simple direct, 2 s");
    let _ = pgbench::select_only(&pg, pg.port(), "simple", 2);

    let mut rows = Vec::new();
    for mode in MODES {
        progress(&format!("running pgbench {mode} direct..."));
        let direct = Run::measure(
            &pg,
            || None,
            || pgbench::select_only(&pg, pg.port(), mode, options.seconds),
        );
        let bounced = match &bouncer {
            Ok(bouncer) => {
                progress(&format!("running pgbench {mode} via PgBouncer..."));
                Run::measure(
                    &pg,
                    || cpu::process(bouncer_pid?),
                    || pgbench::select_only(&pg, bouncer.port(), mode, options.seconds),
                )
            }
            Err(error) => Run::failed(error.clone()),
        };
        progress(&format!("running pgbench {mode} via proxy..."));
        let proxied = Run::measure(
            &pg,
            || cpu::threads_named(PROXY_THREADS),
            || pgbench::select_only(&pg, proxy.address.port(), mode, options.seconds),
        );
        for (target, run) in [
            ("direct", &direct),
            ("PgBouncer", &bounced),
            ("proxy", &proxied),
        ] {
            match &run.outcome {
                Outcome::Tps(tps) => progress(&format!("  {mode} {target}: {tps:.0} tps")),
                Outcome::Failed(line) => progress(&format!("  {mode} {target}: failed: {line}")),
            }
        }
        rows.push((mode, [direct, bounced, proxied]));
    }
    let proxy_connections = proxy.context.pool.open_connections();
    proxy.stop(proxy_runtime);
    drop(bouncer);
    drop(pg);
    Ok(PgbenchResults {
        rows,
        proxy_connections,
    })
}

fn ttfr_phase(
    options: &Options,
    proxy_runtime: &Runtime,
    bench_runtime: &Runtime,
) -> Result<TtfrResults, String> {
    progress("starting Postgres with TLS");
    let pki = TestPki::generate().map_err(|e| format!("test certificates: {e}"))?;
    let pg = Postgres::start(PostgresConfig::default().with_tls(&pki))
        .map_err(|e| format!("Postgres with TLS: {e}"))?;
    let origin_address = SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port()));
    let relay = bench_runtime
        .block_on(DelayRelay::start(origin_address, ONE_WAY))
        .map_err(|e| format!("delay relay: {e}"))?;
    let dialer: Arc<dyn Dialer> = Arc::new(RelayDialer::new(&relay, ONE_WAY * 2));
    let origin = format!("{}?sslmode=require", pg.url(Role::Scram));

    // The direct client: the proxy's own origin connector (dial, TLS per sslmode, SCRAM).
    let config =
        reference_proxy::config::load_from_args(["reference-proxy", "--origin", origin.as_str()])
            .map_err(|e| format!("origin URL: {e}"))?;
    let login = origin_login(&config).map_err(|e| format!("origin TLS: {e}"))?;
    let connector = OriginConnector::new(dialer.clone(), login);

    let proxy = RunningProxy::start(proxy_runtime, &origin, POOL_SIZE, &[], Some(dialer))
        .map_err(|e| format!("proxy: {e}"))?;
    let conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=disable",
        proxy.address.port(),
        pg.user(Role::Scram),
        pg.password(Role::Scram),
        pg.database()
    );

    let runs = options.ttfr_runs;
    let (direct, proxied) = bench_runtime.block_on(async {
        progress("warming the proxy's pool (one query)");
        let warm = ttfr::proxied_once(&conninfo).await;
        let warm_direct = ttfr::direct_once(&connector).await;
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        let mut direct_error = warm_direct.err();
        let mut proxied_error = warm.err();
        progress(&format!(
            "timing {runs} new connections each, direct and via the warm proxy (interleaved)..."
        ));
        for _ in 0..runs {
            if direct_error.is_none() {
                match ttfr::direct_once(&connector).await {
                    Ok(elapsed) => direct.push(elapsed),
                    Err(error) => direct_error = Some(error),
                }
            }
            if proxied_error.is_none() {
                match ttfr::proxied_once(&conninfo).await {
                    Ok(elapsed) => proxied.push(elapsed),
                    Err(error) => proxied_error = Some(error),
                }
            }
        }
        let summarise = |samples: &[Duration], error: Option<String>| match error {
            Some(error) => Err(error),
            None => Summary::of(samples).ok_or_else(|| "no samples".to_string()),
        };
        (
            summarise(&direct, direct_error),
            summarise(&proxied, proxied_error),
        )
    });
    proxy.stop(proxy_runtime);
    let measured_one_way = relay.mean_delay();
    drop(relay);
    drop(pg);
    Ok(TtfrResults {
        direct,
        proxied,
        runs,
        measured_one_way,
    })
}

fn tps_cell(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Tps(tps) => format!("{tps:.0}"),
        Outcome::Failed(_) => "failed".to_string(),
    }
}

fn ratio(numerator: &Outcome, denominator: &Outcome) -> Option<f64> {
    Some(numerator.tps()? / denominator.tps()?)
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}×"))
}

fn verdict(value: Option<f64>, target: f64) -> &'static str {
    match value {
        Some(value) if value >= target => "MET",
        Some(_) => "MISSED",
        None => "MISSED (no measurement)",
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn report(
    options: &Options,
    pgbench: &PgbenchResults,
    ttfr: &TtfrResults,
    tunnel: &tunnel::TunnelResults,
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgbench -S, 32 clients (-j 2), pool {POOL_SIZE}, {} s each (machine: {cores} cores, \
         shared by pgbench, Postgres, PgBouncer and the proxy)",
        options.seconds
    );
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>11} {:>10} {:>17} {:>14}",
        "mode", "direct", "pgbouncer", "proxy", "proxy/pgbouncer", "proxy/direct"
    );
    let mut failures = Vec::new();
    for (mode, [direct, bounced, proxied]) in &pgbench.rows {
        let (direct, bounced, proxied) = (&direct.outcome, &bounced.outcome, &proxied.outcome);
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>11} {:>10} {:>17} {:>14}",
            mode,
            tps_cell(direct),
            tps_cell(bounced),
            tps_cell(proxied),
            ratio_cell(ratio(proxied, bounced)),
            ratio_cell(ratio(proxied, direct)),
        );
        for (target, outcome) in [
            ("direct", direct),
            ("pgbouncer", bounced),
            ("proxy", proxied),
        ] {
            if let Outcome::Failed(line) = outcome {
                failures.push(format!("  {mode} via {target} failed: {line}"));
            }
        }
    }
    for line in &failures {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "(TPS without initial connection time; the proxy held {} origin connections at the end)",
        pgbench.proxy_connections
    );
    cpu_section(&mut out, pgbench);

    let _ = writeln!(
        out,
        "time to first row of a new connection, +{} ms RTT to the origin ({} ms each way, TCP \
         connect charged one RTT), {} runs",
        (ONE_WAY * 2).as_millis(),
        ONE_WAY.as_millis(),
        ttfr.runs
    );
    let rtt = ttfr.measured_one_way.map(|one_way| one_way * 2);
    let describe = |summary: &Result<Summary, String>| match summary {
        Ok(s) => {
            let trips = rtt
                .filter(|rtt| !rtt.is_zero())
                .map(|rtt| format!(", = {:.1} RTT", s.median.as_secs_f64() / rtt.as_secs_f64()))
                .unwrap_or_default();
            format!("median {} (p90 {}{trips})", millis(s.median), millis(s.p90))
        }
        Err(error) => format!("failed: {error}"),
    };
    let speedup = match (&ttfr.direct, &ttfr.proxied) {
        (Ok(direct), Ok(proxied)) if !proxied.median.is_zero() => {
            Some(direct.median.as_secs_f64() / proxied.median.as_secs_f64())
        }
        _ => None,
    };
    let _ = writeln!(
        out,
        "direct SCRAM+TLS: {}   via warm proxy pool: {}   speedup {}",
        describe(&ttfr.direct),
        describe(&ttfr.proxied),
        speedup.map_or_else(|| "-".to_string(), |s| format!("{s:.1}×")),
    );
    if let Some(one_way) = ttfr.measured_one_way {
        let _ = writeln!(
            out,
            "(relay applied {} each way on average; RTT counts include the charged TCP connect)",
            millis(one_way)
        );
    }

    tunnel::section(&mut out, tunnel);

    let row = |mode: &str| pgbench.rows.iter().find(|(m, _)| *m == mode);
    let versus_bouncer = |mode: &str| {
        row(mode).and_then(|(_, [_, bounced, proxied])| ratio(&proxied.outcome, &bounced.outcome))
    };
    let prepared = row("prepared")
        .and_then(|(_, [direct, _, proxied])| ratio(&proxied.outcome, &direct.outcome));
    let _ = writeln!(out, "targets:");
    for (label, value, target) in [
        (
            "proxy ≥ 1.2× pgbouncer (simple)",
            versus_bouncer("simple"),
            PGBOUNCER_TARGET,
        ),
        (
            "proxy ≥ 1.2× pgbouncer (extended)",
            versus_bouncer("extended"),
            PGBOUNCER_TARGET,
        ),
        (
            "prepared via proxy ≥ 0.6× direct",
            prepared,
            PREPARED_TARGET,
        ),
        (
            "new-connection time to first row ≥ 5× faster",
            speedup,
            TTFR_TARGET,
        ),
        (
            "tunnel ≥ 0.7× direct TLS (COPY out)",
            tunnel::ratio_of(tunnel, "COPY out"),
            tunnel::TUNNEL_TARGET,
        ),
        (
            "tunnel ≥ 0.7× direct TLS (COPY in)",
            tunnel::ratio_of(tunnel, "COPY in"),
            tunnel::TUNNEL_TARGET,
        ),
        (
            "tunnel ≥ 0.7× direct TLS (pgbench simple)",
            tunnel::ratio_of(tunnel, "pgbench -S simple"),
            tunnel::TUNNEL_TARGET,
        ),
        (
            "tunnel ≥ 0.7× direct TLS (pgbench prepared)",
            tunnel::ratio_of(tunnel, "pgbench -S prepared"),
            tunnel::TUNNEL_TARGET,
        ),
    ] {
        let shown = value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}×"));
        let _ = writeln!(out, "  {label:<46} {shown:>7}  {}", verdict(value, target));
    }
    out
}

/// Where the cores went during each run, and each pooler's CPU per transaction.
fn cpu_section(out: &mut String, pgbench: &PgbenchResults) {
    let cores = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |c| format!("{c:.2}"));
    let per_transaction = |run: &Run| match (run.pooler_cores, run.outcome.tps()) {
        (Some(used), Some(tps)) if tps > 0.0 => format!("{:.0} µs", used / tps * 1e6),
        _ => "-".to_string(),
    };
    let _ = writeln!(
        out,
        "CPU during each run, in cores (other = busy cores not charged to pgbench, Postgres or the \
         pooler: interrupt time and other load on the machine)"
    );
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:>8} {:>9} {:>7} {:>7} {:>14}",
        "mode", "via", "pgbench", "postgres", "pooler", "other", "pooler CPU/tx"
    );
    for (mode, runs) in &pgbench.rows {
        for (via, run) in ["direct", "pgbouncer", "proxy"].iter().zip(runs) {
            let _ = writeln!(
                out,
                "{:<10} {:<10} {:>8} {:>9} {:>7} {:>7} {:>14}",
                mode,
                via,
                cores(run.pgbench_cores),
                cores(run.postgres_cores),
                cores(run.pooler_cores),
                cores(run.other_cores()),
                per_transaction(run),
            );
        }
    }
}
