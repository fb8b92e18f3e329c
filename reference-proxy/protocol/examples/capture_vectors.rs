//! Captures real Postgres wire traffic as codec test vectors (`just capture-vectors`).
//!
//! Starts a native Postgres (fixtures), puts a recording relay in front of it, and drives real
//! clients (psql, pgbench) through the relay. Every chunk read from either side is written, in
//! order, to `<out>/<scenario>.pgwire` as `F <hex>` (client to server) or `B <hex>` (server to
//! client) lines. `tests/vectors.rs` decodes those files with the codec and snapshots the result.
//!
//! The vectors hold the fixture's fixed test passwords (never a real secret); SCRAM nonces,
//! process ids and cancel keys differ on every capture, so recapturing changes the snapshots.

use fixtures::{Postgres, PostgresConfig, Role};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Largest single read the relay records as one chunk.
const RELAY_READ_LEN: usize = 64 * 1024;

/// One connection's recorded chunks, in order: direction (`F`/`B`) and bytes.
type Chunks = Vec<(char, Vec<u8>)>;
type Log = Arc<Mutex<Chunks>>;

/// Copies one direction of a connection, recording each chunk.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: char, log: Log) {
    let mut buffer = vec![0u8; RELAY_READ_LEN];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if let Ok(mut log) = log.lock() {
            log.push((direction, buffer[..read].to_vec()));
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Relays one client connection to `upstream_port`, returning the recorded chunks.
fn relay_connection(client: TcpStream, upstream_port: u16) -> Chunks {
    let log: Log = Arc::default();
    let server = TcpStream::connect(("127.0.0.1", upstream_port)).expect("connect to postgres");
    let pumps = [
        (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
            'F',
        ),
        (server, client, 'B'),
    ]
    .map(|(from, to, direction)| {
        let log = log.clone();
        thread::spawn(move || pump(from, to, direction, log))
    });
    for pump in pumps {
        let _ = pump.join();
    }
    log.lock().map(|log| log.clone()).unwrap_or_default()
}

/// Relays client connections until `done` is set, one after another (clients here connect
/// sequentially), returning each connection's recorded chunks.
fn relay_all(
    listener: TcpListener,
    upstream_port: u16,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<Chunks>> {
    thread::spawn(move || {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let mut connections = Vec::new();
        while !done.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).expect("blocking stream");
                    connections.push(relay_connection(client, upstream_port));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        connections
    })
}

/// One recorded client session.
struct Scenario {
    name: &'static str,
    role: Role,
    program: &'static str,
    arguments: Vec<String>,
    stdin: Option<&'static str>,
}

fn scenarios(workdir: &Path) -> Vec<Scenario> {
    let pgbench_script = workdir.join("extended.sql");
    std::fs::write(
        &pgbench_script,
        "\\set id 7\nSELECT :id::int AS id, 'seven'::text AS name, NULL::text AS missing;\n",
    )
    .expect("write pgbench script");
    let psql = |name, role, sql: &str, stdin| Scenario {
        name,
        role,
        program: "psql",
        arguments: vec![
            "-X".into(),
            "-v".into(),
            "ON_ERROR_STOP=0".into(),
            "-c".into(),
            sql.into(),
        ],
        stdin,
    };
    vec![
        psql("startup_scram", Role::Scram, "SELECT 1 AS one", None),
        psql("startup_md5", Role::Md5, "SELECT current_user", None),
        psql(
            "startup_cleartext",
            Role::Cleartext,
            "SELECT current_user",
            None,
        ),
        Scenario {
            name: "extended_query",
            role: Role::Scram,
            program: "pgbench",
            arguments: vec![
                "-n".into(),
                "-M".into(),
                "prepared".into(),
                "-t".into(),
                "2".into(),
                "-f".into(),
                pgbench_script.display().to_string(),
            ],
            stdin: None,
        },
        Scenario {
            name: "copy",
            role: Role::Scram,
            program: "psql",
            arguments: vec!["-X".into(), "-v".into(), "ON_ERROR_STOP=1".into()],
            stdin: Some(
                "CREATE TEMP TABLE t (id int, name text);\n\
                 COPY t FROM STDIN;\n1\tone\n2\t\\N\n\\.\n\
                 COPY t TO STDOUT;\n\
                 COPY t TO STDOUT (FORMAT binary);\n",
            ),
        },
        psql(
            "error",
            Role::Scram,
            "SELECT 1; SELECT * FROM no_such_table; SELECT 2",
            None,
        ),
    ]
}

fn run_client(pg: &Postgres, scenario: &Scenario, port: u16) {
    let program = pg.bin_dir().join(scenario.program);
    let mut command = Command::new(&program);
    command
        .args(&scenario.arguments)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", pg.user(scenario.role))
        .env("PGPASSWORD", pg.password(scenario.role))
        .env("PGDATABASE", pg.database())
        .env("PGSSLMODE", "prefer")
        .env("PGCLIENTENCODING", "UTF8")
        .env("PGAPPNAME", "capture")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(scenario.stdin.unwrap_or("").as_bytes());
    }
    let _ = child.wait();
}

fn render(connections: &[Chunks]) -> String {
    let mut out = String::from(
        "# Captured by `just capture-vectors` from a real Postgres session; F = client to server,\n\
         # B = server to client, one line per read, bytes in hex; `connection` starts a new one.\n",
    );
    for chunks in connections {
        out.push_str("connection\n");
        for (direction, bytes) in chunks {
            let _ = write!(out, "{direction} ");
            for byte in bytes {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\n');
        }
    }
    out
}

fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/vectors".into())
        .into();
    std::fs::create_dir_all(&out).expect("create output directory");
    let pg = Postgres::start(PostgresConfig::default()).expect("start postgres");
    let workdir = tempfile::tempdir().expect("tempdir");
    for scenario in scenarios(workdir.path()) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let done = Arc::new(AtomicBool::new(false));
        let relay = relay_all(listener, pg.port(), done.clone());
        run_client(&pg, &scenario, port);
        done.store(true, Ordering::SeqCst);
        let connections = relay.join().expect("relay thread");
        let path = out.join(format!("{}.pgwire", scenario.name));
        std::fs::write(&path, render(&connections)).expect("write vector");
        eprintln!(
            "captured {} ({} connections)",
            path.display(),
            connections.len()
        );
    }
}
