//! CPU time from /proc (Linux), to see where the cores went during a run: pgbench (our reaped
//! children), the Postgres cluster (postmaster, live and exited backends), PgBouncer's
//! process, the proxy's runtime threads, and the whole machine (which also shows load from
//! outside the benchmark). Everything is best effort: without /proc the readings are `None`
//! and the report shows `-`.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second of /proc's times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// The numeric fields of a /proc `stat` file after the command name; index 0 is field 3
/// (the state letter, read as 0), so field N is at index N - 3.
fn stat_fields(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces and parentheses; the fields follow the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    Some(
        rest.split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime (fields 14 and 15).
fn own_cpu(fields: &[u64]) -> Option<Duration> {
    Some(ticks(fields.get(11)? + fields.get(12)?))
}

/// cutime + cstime (fields 16 and 17): CPU of the children a process has reaped.
fn reaped_cpu(fields: &[u64]) -> Option<Duration> {
    Some(ticks(fields.get(13)? + fields.get(14)?))
}

/// CPU time of the children this process has waited for (the pgbench runs).
pub fn reaped_children() -> Option<Duration> {
    reaped_cpu(&stat_fields(Path::new("/proc/self/stat"))?)
}

/// CPU time of this process's threads whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            let fields = stat_fields(&entry.path().join("stat")).unwrap_or_default();
            total += own_cpu(&fields).unwrap_or_default();
        }
    }
    Some(total)
}

/// Process ids in /proc.
fn pids() -> impl Iterator<Item = u64> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

fn stat_of(pid: u64) -> Option<Vec<u64>> {
    stat_fields(&Path::new("/proc").join(pid.to_string()).join("stat"))
}

/// The pid of the process named `name` whose command line contains `needle` (e.g. its
/// config file; the name check skips the fixture's watchdog, which names the same path).
pub fn find_process(name: &str, needle: &str) -> Option<u64> {
    pids().find(|pid| {
        let dir = Path::new("/proc").join(pid.to_string());
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        comm.trim_end() == name
            && std::fs::read(dir.join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
    })
}

/// CPU time of process `pid` (all its threads).
pub fn process(pid: u64) -> Option<Duration> {
    own_cpu(&stat_of(pid)?)
}

/// CPU time of a Postgres cluster: the postmaster (pid from `postmaster.pid` in `data_dir`),
/// the backends it has reaped and the children alive now. A backend that exits between two
/// readings moves from the live sum to the reaped one, so differences stay right.
pub fn postgres(data_dir: &Path) -> Option<Duration> {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let postmaster: u64 = pid_file.lines().next()?.trim().parse().ok()?;
    let fields = stat_of(postmaster)?;
    let mut total = own_cpu(&fields)? + reaped_cpu(&fields)?;
    for pid in pids() {
        if let Some(fields) = stat_of(pid)
            && fields.get(1) == Some(&postmaster)
        {
            total += own_cpu(&fields).unwrap_or_default();
        }
    }
    Some(total)
}

/// Busy CPU time of the whole machine, all cores (everything but idle and iowait).
pub fn machine_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(ticks(total.checked_sub(idle)?))
}
