//! What the WebSocket tunnel costs: the same proxy configuration reaching the same TLS-enabled
//! Postgres directly (Postgres TLS over TCP) and through the tunnel (Postgres TLS inside binary
//! WebSocket messages inside TLS to the in-process tunnel edge, which stands in for the
//! Cloudflare edge, Access and cloudflared and dials Postgres over loopback TCP).
//!
//! Two workloads, each through both proxies, interleaved so drift on the machine hits both:
//! `pgbench -S` (simple and prepared) and bulk COPY in both directions with tokio-postgres
//! (`COPY (SELECT repeat('x', 1000) ...) TO STDOUT` and `COPY ... FROM STDIN` into an unlogged
//! table, the same bytes each way). As a reference without any proxy, the bench's own client
//! (the proxy's origin connector: TLS, SCRAM) runs the same COPYs straight to Postgres.
//!
//! Around every run it reads CPU time: the client (pgbench or the bench runtime's thread), the
//! Postgres cluster, the proxy's runtime threads and the edge's runtime threads, so a slow
//! tunnel shows where the cycles went. The edge runs on this machine too, so the tunnel column
//! pays for the edge's TLS and WebSocket work out of the same cores; a real edge and
//! cloudflared would run elsewhere.

use crate::pgbench::{self, Outcome};
use crate::proxy::RunningProxy;
use crate::{Options, POOL_SIZE, PROXY_THREADS, cpu, progress, verdict};
use bytes::Bytes;
use elephant_protocol::{BackendMessage, FrontendMessage};
use fixtures::{Postgres, PostgresConfig, Role, TestPki};
use futures_util::{SinkExt, StreamExt, pin_mut};
use reference_proxy::origin::{MessageStream, OriginConnector};
use reference_proxy::server::origin_login;
use reference_proxy::stream::{Dialer, TcpDialer};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tunnel_edge::{AccessControl, Edge, EdgeConfig, EdgeTls, ServiceToken, TokenSet};

/// The Access service token the edge admits and the tunnel proxy sends.
const TOKEN_ID: &str = "bench.access";
const TOKEN_SECRET: &str = "bench-tunnel-secret-5e1f";
/// Name of the edge runtime's threads (to read their CPU time).
pub const EDGE_THREADS: &str = "edge";
/// Name of the bench runtime's threads (the COPY clients).
pub const BENCH_THREADS: &str = "bench";
/// Bytes of `x` in one COPY row; the row is these and a newline.
const PAYLOAD_LEN: usize = 1000;
const ROW_LEN: usize = PAYLOAD_LEN + 1;
/// Rows per CopyData message sent by the COPY FROM clients (about 1 MB).
const ROWS_PER_CHUNK: usize = 1000;
/// The table COPY FROM fills (unlogged: the WAL is not what is measured).
const COPY_TABLE: &str = "bench_copy";

/// The tunnel edge, serving on 127.0.0.1 with TLS from its own test PKI, in front of one origin.
pub struct RunningEdge {
    port: u16,
    edge: Arc<Edge>,
    pki: TestPki,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningEdge {
    /// Starts an edge on `runtime` that admits [`TOKEN_ID`] and tunnels to 127.0.0.1:`origin_port`.
    pub fn start(runtime: &Runtime, origin_port: u16) -> Result<RunningEdge, String> {
        let pki = TestPki::generate().map_err(|e| format!("edge certificates: {e}"))?;
        let tls = EdgeTls::from_pem_files(pki.server_cert(), pki.server_key())
            .map_err(|e| format!("edge TLS: {e}"))?;
        let tokens = TokenSet::service_auth(vec![ServiceToken::new(TOKEN_ID, TOKEN_SECRET)])
            .map_err(|e| format!("edge tokens: {e}"))?;
        let edge = Arc::new(Edge::new(
            EdgeConfig::default(),
            Arc::new(AccessControl::new(tokens)),
            Arc::new(TcpDialer::new("127.0.0.1", origin_port)),
            Some(tls),
        ));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("edge listener: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("edge listener: {e}"))?
            .port();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(edge.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningEdge {
            port,
            edge,
            pki,
            stop,
            task,
        })
    }

    /// The proxy flags that reach the origin through this edge.
    fn flags(&self) -> Vec<String> {
        vec![
            "--tunnel".to_string(),
            format!("wss://localhost:{}/", self.port),
            "--tunnel-ca".to_string(),
            self.pki.ca_cert().display().to_string(),
            "--access-client-id".to_string(),
            TOKEN_ID.to_string(),
            "--access-client-secret".to_string(),
            TOKEN_SECRET.to_string(),
        ]
    }

    /// Stops accepting, ends the live tunnels and waits (bounded) for the edge to finish.
    fn stop(self, runtime: &Runtime) {
        let _ = self.stop.send(());
        runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        });
    }
}

/// CPU time spent during one or more runs, and their wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    wall: Duration,
    /// The whole machine, busy.
    machine: Option<Duration>,
    /// pgbench, or the bench runtime's thread (the COPY client).
    client: Option<Duration>,
    /// The Postgres cluster.
    postgres: Option<Duration>,
    /// The proxy's runtime threads.
    proxy: Option<Duration>,
    /// The edge's runtime threads.
    edge: Option<Duration>,
}

impl Spent {
    /// Runs `work`, reading the counters around it; `client` reads the client's CPU time.
    fn measure<T>(
        pg: &Postgres,
        client: impl Fn() -> Option<Duration>,
        work: impl FnOnce() -> T,
    ) -> (T, Spent) {
        let read = || {
            [
                cpu::machine_busy(),
                client(),
                cpu::postgres(pg.data_dir()),
                cpu::threads_named(PROXY_THREADS),
                cpu::threads_named(EDGE_THREADS),
            ]
        };
        let before = read();
        let start = Instant::now();
        let value = work();
        let wall = start.elapsed();
        let after = read();
        let delta = |i: usize| after[i]?.checked_sub(before[i]?);
        let spent = Spent {
            wall,
            machine: delta(0),
            client: delta(1),
            postgres: delta(2),
            proxy: delta(3),
            edge: delta(4),
        };
        (value, spent)
    }

    /// Both spans together.
    fn add(self, other: Spent) -> Spent {
        if self.wall.is_zero() {
            return other;
        }
        let sum = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        Spent {
            wall: self.wall + other.wall,
            machine: sum(self.machine, other.machine),
            client: sum(self.client, other.client),
            postgres: sum(self.postgres, other.postgres),
            proxy: sum(self.proxy, other.proxy),
            edge: sum(self.edge, other.edge),
        }
    }

    /// CPU time as cores busy on average over the wall time.
    fn cores(&self, time: Option<Duration>) -> Option<f64> {
        let wall = self.wall.as_secs_f64();
        (wall > 0.0).then(|| time.map(|t| t.as_secs_f64() / wall))?
    }

    /// Busy time not charged to the client, Postgres, the proxy or the edge (interrupts, other
    /// load on the machine).
    fn other(&self) -> Option<Duration> {
        let ours = self.client? + self.postgres? + self.proxy? + self.edge?;
        Some(self.machine?.saturating_sub(ours))
    }
}

/// How a row's value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// pgbench transactions per second.
    Tps,
    /// COPY payload, decimal megabytes per second.
    MegabytesPerSecond,
}

/// One workload through one path: its value (median over the repetitions) and the CPU of all
/// repetitions.
#[derive(Debug, Clone)]
pub struct Measured {
    value: Result<f64, String>,
    spent: Spent,
    /// Transactions or megabytes done over all repetitions (for CPU per unit).
    work: f64,
}

impl Measured {
    fn from_samples(samples: &[Sample]) -> Measured {
        let mut spent = Spent::default();
        let mut rates = Vec::new();
        let mut work = 0.0;
        let mut error = None;
        for (sample, cost) in samples {
            spent = spent.add(*cost);
            match sample {
                Ok(transfer) => {
                    rates.push(transfer.megabytes_per_second());
                    work += transfer.bytes as f64 / 1e6;
                }
                Err(e) => error = Some(e.clone()),
            }
        }
        let value = match error {
            Some(error) => Err(error),
            None => median(&mut rates).ok_or_else(|| "no samples".to_string()),
        };
        Measured { value, spent, work }
    }

    fn from_pgbench(outcome: Outcome, spent: Spent) -> Measured {
        let (value, work) = match outcome {
            Outcome::Tps(tps) => (Ok(tps), tps * spent.wall.as_secs_f64()),
            Outcome::Failed(line) => (Err(line), 0.0),
        };
        Measured { value, spent, work }
    }

    fn value(&self) -> Option<f64> {
        self.value.as_ref().ok().copied()
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// One line of the comparison.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: &'static str,
    pub unit: Unit,
    pub direct: Measured,
    pub tunnel: Measured,
}

impl Row {
    /// tunnel / direct TLS.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.tunnel.value()? / self.direct.value()?)
    }
}

/// Results of the tunnel phase.
pub struct TunnelResults {
    pub rows: Vec<Row>,
    /// COPY out and COPY in straight to Postgres over TLS, no proxy (MB/s, median).
    pub no_proxy: [Result<f64, String>; 2],
    /// Megabytes per COPY.
    pub copy_megabytes: f64,
    /// COPY repetitions per path and direction.
    pub copy_runs: usize,
    /// Seconds per pgbench run.
    pub seconds: u64,
    /// Upgrades the edge answered with 101 (one per pooled origin connection, plus cancels).
    pub tunnels_opened: u64,
    /// Payload bytes the edge moved each way (to Postgres, from Postgres).
    pub edge_bytes: (u64, u64),
}

/// Rows each COPY moves.
fn copy_rows(options: &Options) -> usize {
    options.copy_megabytes * 1_000_000 / ROW_LEN
}

/// Runs the phase on its own TLS-enabled cluster.
pub fn phase(
    options: &Options,
    proxy_runtime: &Runtime,
    edge_runtime: &Runtime,
    bench_runtime: &Runtime,
) -> Result<TunnelResults, String> {
    progress("starting Postgres with TLS (tunnel vs direct TLS)");
    let pki = TestPki::generate().map_err(|e| format!("test certificates: {e}"))?;
    let pg = Postgres::start(PostgresConfig::default().with_tls(&pki))
        .map_err(|e| format!("Postgres with TLS: {e}"))?;
    progress("pgbench -i -s 10 -q (direct)");
    let init = pgbench::run(&pg, pg.port(), &["-i", "-s", "10", "-q"])?;
    if !init.status.success() {
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr).trim()
        ));
    }
    pg.psql(
        Role::Scram,
        &format!("CREATE UNLOGGED TABLE {COPY_TABLE} (payload text)"),
    )
    .map_err(|e| format!("create the COPY table: {e}"))?;

    progress("starting the tunnel edge and two proxies (direct TLS, through the tunnel)");
    let edge = RunningEdge::start(edge_runtime, pg.port())?;
    // Postgres TLS on both paths: inside the tunnel it is end to end, through the edge.
    let origin = format!("{}?sslmode=require", pg.url(Role::Scram));
    let direct = RunningProxy::start(proxy_runtime, &origin, POOL_SIZE, &[], None)
        .map_err(|e| format!("direct-TLS proxy: {e}"))?;
    let flags = edge.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tunnel = RunningProxy::start(proxy_runtime, &origin, POOL_SIZE, &flags, None)
        .map_err(|e| format!("tunnel proxy: {e}"))?;
    let ports = [direct.address.port(), tunnel.address.port()];

    progress("warm-up: pgbench simple through each proxy, 2 s");
    for port in ports {
        if let Outcome::Failed(line) = pgbench::select_only(&pg, port, "simple", 2) {
            progress(&format!("  warm-up via port {port} failed: {line}"));
        }
    }

    let mut rows = Vec::new();
    for (label, mode) in [
        ("pgbench -S simple", "simple"),
        ("pgbench -S prepared", "prepared"),
    ] {
        let mut measured = Vec::new();
        for (path, port) in ["direct TLS", "tunnel"].iter().zip(ports) {
            progress(&format!("running pgbench {mode} via the proxy, {path}..."));
            let (outcome, spent) = Spent::measure(&pg, cpu::reaped_children, || {
                pgbench::select_only(&pg, port, mode, options.seconds)
            });
            match &outcome {
                Outcome::Tps(tps) => progress(&format!("  {mode} {path}: {tps:.0} tps")),
                Outcome::Failed(line) => progress(&format!("  {mode} {path}: failed: {line}")),
            }
            measured.push(Measured::from_pgbench(outcome, spent));
        }
        let [direct, tunnel] =
            <[Measured; 2]>::try_from(measured).map_err(|_| "two paths measured".to_string())?;
        rows.push(Row {
            label,
            unit: Unit::Tps,
            direct,
            tunnel,
        });
    }

    let copy = copy_phase(options, &pg, &origin, ports, bench_runtime)?;
    rows.extend(copy.rows);

    direct.stop(proxy_runtime);
    tunnel.stop(proxy_runtime);
    // Let the edge see the tunnels end, so their bytes are counted.
    std::thread::sleep(Duration::from_millis(200));
    let stats = edge.edge.stats();
    edge.stop(edge_runtime);
    drop(pg);
    Ok(TunnelResults {
        rows,
        no_proxy: copy.no_proxy,
        copy_megabytes: (copy_rows(options) * ROW_LEN) as f64 / 1e6,
        copy_runs: options.copy_runs,
        seconds: options.seconds,
        tunnels_opened: stats.tunnels_opened,
        edge_bytes: (stats.bytes_to_origin, stats.bytes_from_origin),
    })
}

struct CopyResults {
    rows: Vec<Row>,
    no_proxy: [Result<f64, String>; 2],
}

/// COPY out and in through both proxies, `copy_runs` times each, alternating which path goes
/// first; then the same straight to Postgres.
fn copy_phase(
    options: &Options,
    pg: &Postgres,
    origin: &str,
    ports: [u16; 2],
    bench_runtime: &Runtime,
) -> Result<CopyResults, String> {
    let rows = copy_rows(options);
    let conninfo = |port: u16| {
        format!(
            "host=127.0.0.1 port={port} user={} password={} dbname={} sslmode=disable",
            pg.user(Role::Scram),
            pg.password(Role::Scram),
            pg.database()
        )
    };
    let clients = bench_runtime.block_on(async {
        let mut clients = Vec::new();
        for port in ports {
            let (client, connection) =
                tokio_postgres::connect(&conninfo(port), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("connect through the proxy on port {port}: {e}"))?;
            tokio::spawn(connection);
            clients.push(client);
        }
        Ok::<_, String>(clients)
    })?;
    // [path][direction]: direction 0 = COPY out, 1 = COPY in.
    let mut samples: [[Vec<Sample>; 2]; 2] = Default::default();
    for run in 0..options.copy_runs {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for path in order {
            let client = &clients[path];
            let name = ["direct TLS", "tunnel"][path];
            progress(&format!(
                "COPY {:.0} MB out and in via the proxy, {name} (run {} of {})...",
                (rows * ROW_LEN) as f64 / 1e6,
                run + 1,
                options.copy_runs
            ));
            let (out, spent) = Spent::measure(
                pg,
                || cpu::threads_named(BENCH_THREADS),
                || bench_runtime.block_on(copy_out(client, rows)),
            );
            report_transfer("out", name, &out);
            samples[path][0].push((out, spent));
            let (into, spent) = Spent::measure(
                pg,
                || cpu::threads_named(BENCH_THREADS),
                || bench_runtime.block_on(copy_in(client, rows)),
            );
            report_transfer("in", name, &into);
            samples[path][1].push((into, spent));
            bench_runtime
                .block_on(client.batch_execute(&format!("TRUNCATE {COPY_TABLE}")))
                .map_err(|e| format!("TRUNCATE: {e}"))?;
        }
    }
    drop(clients);
    let [direct, tunnel] = samples;
    let [direct_out, direct_in] = direct;
    let [tunnel_out, tunnel_in] = tunnel;
    let copy_rows = vec![
        Row {
            label: "COPY out (MB/s)",
            unit: Unit::MegabytesPerSecond,
            direct: Measured::from_samples(&direct_out),
            tunnel: Measured::from_samples(&tunnel_out),
        },
        Row {
            label: "COPY in  (MB/s)",
            unit: Unit::MegabytesPerSecond,
            direct: Measured::from_samples(&direct_in),
            tunnel: Measured::from_samples(&tunnel_in),
        },
    ];

    progress("COPY out and in straight to Postgres over TLS, no proxy...");
    let no_proxy = bench_runtime.block_on(no_proxy_copies(options, origin, pg.port(), rows));
    Ok(CopyResults {
        rows: copy_rows,
        no_proxy,
    })
}

fn report_transfer(direction: &str, path: &str, transfer: &Result<Transfer, String>) {
    match transfer {
        Ok(t) => progress(&format!(
            "  COPY {direction} {path}: {:.1} MB/s",
            t.megabytes_per_second()
        )),
        Err(error) => progress(&format!("  COPY {direction} {path}: failed: {error}")),
    }
}

/// One COPY run and the CPU it took.
type Sample = (Result<Transfer, String>, Spent);

/// Bytes moved and the time it took.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    bytes: u64,
    elapsed: Duration,
}

impl Transfer {
    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn copy_out_query(rows: usize) -> String {
    format!("COPY (SELECT repeat('x', {PAYLOAD_LEN}) FROM generate_series(1, {rows})) TO STDOUT")
}

fn copy_in_query() -> String {
    format!("COPY {COPY_TABLE} FROM STDIN")
}

/// `ROWS_PER_CHUNK` rows of COPY text.
fn copy_chunk() -> Bytes {
    let mut row = "x".repeat(PAYLOAD_LEN);
    row.push('\n');
    Bytes::from(row.repeat(ROWS_PER_CHUNK))
}

/// The chunks that make up `rows` rows.
fn chunks(rows: usize) -> impl Iterator<Item = Bytes> {
    let chunk = copy_chunk();
    let full = rows / ROWS_PER_CHUNK;
    let rest = rows % ROWS_PER_CHUNK;
    let last = (rest > 0).then(|| chunk.slice(..rest * ROW_LEN));
    std::iter::repeat_n(chunk, full).chain(last)
}

fn check_bytes(bytes: u64, rows: usize) -> Result<(), String> {
    let expected = (rows * ROW_LEN) as u64;
    if bytes == expected {
        Ok(())
    } else {
        Err(format!("COPY moved {bytes} bytes, expected {expected}"))
    }
}

/// COPY TO STDOUT through tokio-postgres, timed from the query to the last byte.
async fn copy_out(client: &tokio_postgres::Client, rows: usize) -> Result<Transfer, String> {
    let query = copy_out_query(rows);
    let start = Instant::now();
    let stream = client
        .copy_out(query.as_str())
        .await
        .map_err(|e| format!("COPY out: {e}"))?;
    pin_mut!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.map_err(|e| format!("COPY out: {e}"))?.len() as u64;
    }
    let elapsed = start.elapsed();
    check_bytes(bytes, rows)?;
    Ok(Transfer { bytes, elapsed })
}

/// COPY FROM STDIN through tokio-postgres in ~1 MB messages, timed from the query to the
/// server's row count.
async fn copy_in(client: &tokio_postgres::Client, rows: usize) -> Result<Transfer, String> {
    let query = copy_in_query();
    let start = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>(query.as_str())
        .await
        .map_err(|e| format!("COPY in: {e}"))?;
    pin_mut!(sink);
    let mut bytes = 0u64;
    for chunk in chunks(rows) {
        bytes += chunk.len() as u64;
        sink.send(chunk)
            .await
            .map_err(|e| format!("COPY in: {e}"))?;
    }
    let stored = sink.finish().await.map_err(|e| format!("COPY in: {e}"))?;
    let elapsed = start.elapsed();
    if stored != rows as u64 {
        return Err(format!("COPY in stored {stored} rows, expected {rows}"));
    }
    check_bytes(bytes, rows)?;
    Ok(Transfer { bytes, elapsed })
}

/// The same COPYs with the proxy's origin connector straight to Postgres (TLS, SCRAM), no
/// proxy in between: medians of `copy_runs` runs each way.
async fn no_proxy_copies(
    options: &Options,
    origin: &str,
    port: u16,
    rows: usize,
) -> [Result<f64, String>; 2] {
    let connect = async {
        let config =
            reference_proxy::config::load_from_args(["reference-proxy", "--origin", origin])
                .map_err(|e| format!("origin URL: {e}"))?;
        let login = origin_login(&config).map_err(|e| format!("origin TLS: {e}"))?;
        let dialer: Arc<dyn Dialer> = Arc::new(TcpDialer::new("127.0.0.1", port));
        OriginConnector::new(dialer, login)
            .connect()
            .await
            .map_err(|e| format!("connect to Postgres: {e}"))
    };
    let mut connection = match connect.await {
        Ok(connection) => connection,
        Err(error) => return [Err(error.clone()), Err(error)],
    };
    let link = &mut connection.link;
    let mut out = Vec::new();
    let mut into = Vec::new();
    let mut failure = [None, None];
    for _ in 0..options.copy_runs {
        match origin_copy_out(link, rows).await {
            Ok(t) => out.push(t.megabytes_per_second()),
            Err(e) => failure[0] = Some(e),
        }
        match origin_copy_in(link, rows).await {
            Ok(t) => into.push(t.megabytes_per_second()),
            Err(e) => failure[1] = Some(e),
        }
        if let Err(e) = origin_simple(link, &format!("TRUNCATE {COPY_TABLE}")).await {
            failure[1] = Some(e);
        }
        if failure.iter().any(Option::is_some) {
            break;
        }
    }
    let _ = link.send(&FrontendMessage::Terminate).await;
    let [out_failure, in_failure] = failure;
    let summarise = |mut rates: Vec<f64>, failure: Option<String>| match failure {
        Some(error) => Err(error),
        None => median(&mut rates).ok_or_else(|| "no samples".to_string()),
    };
    [summarise(out, out_failure), summarise(into, in_failure)]
}

fn server_error(fields: &elephant_protocol::backend::ErrorFields) -> String {
    fields.message().map(|m| m.to_string()).unwrap_or_default()
}

/// Runs one simple query to its ReadyForQuery.
async fn origin_simple(link: &mut MessageStream, sql: &str) -> Result<(), String> {
    link.send(&FrontendMessage::Query(sql.into()))
        .await
        .map_err(|e| e.to_string())?;
    origin_wait_ready(link).await
}

async fn origin_copy_out(link: &mut MessageStream, rows: usize) -> Result<Transfer, String> {
    let start = Instant::now();
    link.send(&FrontendMessage::Query(copy_out_query(rows).into()))
        .await
        .map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    let mut error = None;
    loop {
        match link.receive().await.map_err(|e| e.to_string())? {
            BackendMessage::CopyData(data) => bytes += data.len() as u64,
            BackendMessage::ErrorResponse(fields) => error = Some(server_error(&fields)),
            BackendMessage::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    if let Some(error) = error {
        return Err(format!("COPY out: {error}"));
    }
    check_bytes(bytes, rows)?;
    Ok(Transfer { bytes, elapsed })
}

async fn origin_copy_in(link: &mut MessageStream, rows: usize) -> Result<Transfer, String> {
    let start = Instant::now();
    link.send(&FrontendMessage::Query(copy_in_query().into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match link.receive().await.map_err(|e| e.to_string())? {
            BackendMessage::CopyInResponse(_) => break,
            BackendMessage::ErrorResponse(fields) => {
                let error = server_error(&fields);
                let _ = origin_wait_ready(link).await;
                return Err(format!("COPY in: {error}"));
            }
            _ => {}
        }
    }
    let mut bytes = 0u64;
    for chunk in chunks(rows) {
        bytes += chunk.len() as u64;
        link.send(&FrontendMessage::CopyData(chunk))
            .await
            .map_err(|e| e.to_string())?;
    }
    link.send(&FrontendMessage::CopyDone)
        .await
        .map_err(|e| e.to_string())?;
    origin_wait_ready(link)
        .await
        .map_err(|e| format!("COPY in: {e}"))?;
    let elapsed = start.elapsed();
    check_bytes(bytes, rows)?;
    Ok(Transfer { bytes, elapsed })
}

/// Reads to ReadyForQuery; the first error, if any.
async fn origin_wait_ready(link: &mut MessageStream) -> Result<(), String> {
    let mut error = None;
    loop {
        match link.receive().await.map_err(|e| e.to_string())? {
            BackendMessage::ErrorResponse(fields) => error = Some(server_error(&fields)),
            BackendMessage::ReadyForQuery(_) => return error.map_or(Ok(()), Err),
            _ => {}
        }
    }
}

/// Target from the tunnel issue: tunnel ≥ 0.7× direct TLS.
pub const TUNNEL_TARGET: f64 = 0.7;

/// The report section: the comparison table, the no-proxy reference, where the CPU went.
pub fn section(out: &mut String, results: &TunnelResults) {
    let _ = writeln!(
        out,
        "through the tunnel (TLS(WebSocket(TLS))) vs direct TLS to the origin, both via the proxy"
    );
    let _ = writeln!(
        out,
        "(pgbench -S 32 clients -j 2, pool {POOL_SIZE}, {} s per run; COPY {:.0} MB each way, \
         median of {} run{}; the edge runs on this machine too)",
        results.seconds,
        results.copy_megabytes,
        results.copy_runs,
        if results.copy_runs == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "{:<22} {:>10} {:>9} {:>16}",
        "", "direct TLS", "tunnel", "tunnel/direct"
    );
    for row in &results.rows {
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>9} {:>16}",
            row.label,
            row.direct.shown(row.unit),
            row.tunnel.shown(row.unit),
            row.ratio()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}×")),
        );
        for (path, measured) in [("direct TLS", &row.direct), ("tunnel", &row.tunnel)] {
            if let Err(error) = &measured.value {
                let _ = writeln!(out, "  {} via {path} failed: {error}", row.label);
            }
        }
    }
    let verdicts: Vec<&str> = [
        "COPY out",
        "COPY in",
        "pgbench -S simple",
        "pgbench -S prepared",
    ]
    .iter()
    .map(|label| verdict(ratio_of(results, label), TUNNEL_TARGET))
    .collect();
    let _ = writeln!(
        out,
        "target: tunnel ≥ {TUNNEL_TARGET}× direct TLS (COPY out / COPY in / pgbench simple / \
         pgbench prepared): {}",
        verdicts.join(" / ")
    );
    let shown = |value: &Result<f64, String>| match value {
        Ok(v) => format!("{v:.1} MB/s"),
        Err(error) => format!("failed ({error})"),
    };
    let _ = writeln!(
        out,
        "(no proxy, the bench's client straight to Postgres over TLS: COPY out {}, COPY in {})",
        shown(&results.no_proxy[0]),
        shown(&results.no_proxy[1]),
    );
    let (to_origin, from_origin) = results.edge_bytes;
    let _ = writeln!(
        out,
        "(the edge opened {} tunnels and moved {:.0} MB to Postgres, {:.0} MB from it)",
        results.tunnels_opened,
        to_origin as f64 / 1e6,
        from_origin as f64 / 1e6,
    );
    let _ = writeln!(
        out,
        "CPU during the tunnel-section runs, in cores (client = pgbench or the COPY client; \
         other = busy cores not charged to the rest), and the proxy's and edge's CPU per unit"
    );
    let _ = writeln!(
        out,
        "{:<22} {:<11} {:>6} {:>8} {:>6} {:>6} {:>6} {:>12} {:>12}",
        "", "via", "client", "postgres", "proxy", "edge", "other", "proxy/unit", "edge/unit"
    );
    let cores = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |c| format!("{c:.2}"));
    for row in &results.rows {
        for (path, measured) in [("direct TLS", &row.direct), ("tunnel", &row.tunnel)] {
            let spent = &measured.spent;
            let [proxy_unit, edge_unit] = per_unit(measured, row.unit);
            let _ = writeln!(
                out,
                "{:<22} {:<11} {:>6} {:>8} {:>6} {:>6} {:>6} {:>12} {:>12}",
                row.label,
                path,
                cores(spent.cores(spent.client)),
                cores(spent.cores(spent.postgres)),
                cores(spent.cores(spent.proxy)),
                cores(spent.cores(spent.edge)),
                cores(spent.cores(spent.other())),
                proxy_unit.unwrap_or_else(|| "-".to_string()),
                edge_unit.unwrap_or_else(|| "-".to_string()),
            );
        }
    }
}

/// tunnel / direct TLS of the row whose label starts with `label`.
pub fn ratio_of(results: &TunnelResults, label: &str) -> Option<f64> {
    results
        .rows
        .iter()
        .find(|row| row.label.starts_with(label))
        .and_then(Row::ratio)
}

/// CPU of the proxy and of the edge per unit of work: µs per transaction, ms per MB.
fn per_unit(measured: &Measured, unit: Unit) -> [Option<String>; 2] {
    let (scale, name) = match unit {
        Unit::Tps => (1e6, "µs/tx"),
        Unit::MegabytesPerSecond => (1e3, "ms/MB"),
    };
    let per = |time: Option<Duration>| {
        let time = time?.as_secs_f64();
        (measured.work > 0.0).then(|| format!("{:.1} {name}", time / measured.work * scale))
    };
    [per(measured.spent.proxy), per(measured.spent.edge)]
}

impl Measured {
    fn shown(&self, unit: Unit) -> String {
        match (&self.value, unit) {
            (Ok(v), Unit::Tps) => format!("{v:.0}"),
            (Ok(v), Unit::MegabytesPerSecond) => format!("{v:.1}"),
            (Err(_), _) => "failed".to_string(),
        }
    }
}
