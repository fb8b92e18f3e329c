//! Running pgbench against a host/port and reading its result.

use fixtures::{Postgres, Role};
use std::process::{Command, Output, Stdio};

/// What one pgbench run gave.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Transactions per second, without initial connection time.
    Tps(f64),
    /// The run failed; the first error line.
    Failed(String),
}

impl Outcome {
    /// The TPS if the run succeeded.
    pub fn tps(&self) -> Option<f64> {
        match self {
            Outcome::Tps(tps) => Some(*tps),
            Outcome::Failed(_) => None,
        }
    }
}

/// Runs `pgbench` from the cluster's binaries against 127.0.0.1:`port` as the SCRAM role,
/// with a clean environment (only PATH and the libpq variables).
pub fn run(pg: &Postgres, port: u16, args: &[&str]) -> Result<Output, String> {
    let mut command = Command::new(pg.bin_dir().join("pgbench"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", pg.user(Role::Scram))
        .env("PGPASSWORD", pg.password(Role::Scram))
        .env("PGDATABASE", pg.database())
        .env("PGSSLMODE", "disable")
        .env("PGCLIENTENCODING", "UTF8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.output().map_err(|e| format!("spawn pgbench: {e}"))
}

/// `pgbench -n -S -c 32 -j 2 -T seconds -M mode` against `port`.
pub fn select_only(pg: &Postgres, port: u16, mode: &str, seconds: u64) -> Outcome {
    let seconds = seconds.to_string();
    let args = [
        "-n", "-S", "-c", "32", "-j", "2", "-T", &seconds, "-M", mode,
    ];
    match run(pg, port, &args) {
        Ok(output) => parse(&output),
        Err(error) => Outcome::Failed(error),
    }
}

/// The TPS of a successful run, else its first error line.
pub fn parse(output: &Output) -> Outcome {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tps = stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("tps = ")?;
        if !rest.contains("without initial connection time") {
            return None;
        }
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    match tps {
        Some(tps) if output.status.success() => Outcome::Tps(tps),
        _ => Outcome::Failed(first_error_line(&stderr, &stdout, output)),
    }
}

/// The server's message if pgbench printed one (`ERROR:  ...` / `FATAL:  ...`, cut from the
/// line: pgbench's threads may interleave their prefixes), else pgbench's own first error line,
/// else its first line.
fn first_error_line(stderr: &str, stdout: &str, output: &Output) -> String {
    let lines = || stderr.lines().chain(stdout.lines()).map(str::trim);
    let server = lines().find_map(|line| {
        ["ERROR:", "FATAL:"]
            .iter()
            .filter_map(|tag| line.find(tag))
            .min()
            .map(|at| line[at..].split_whitespace().collect::<Vec<_>>().join(" "))
    });
    server
        .or_else(|| {
            lines()
                .find(|line| line.contains("error"))
                .map(str::to_string)
        })
        .or_else(|| lines().find(|line| !line.is_empty()).map(str::to_string))
        .unwrap_or_else(|| format!("pgbench exited with {}", output.status))
}
