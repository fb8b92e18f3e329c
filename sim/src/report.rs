//! What the simulator tells its user: the closing summary of a run, the account of each
//! failing seed (its violations, fault plan and replay command), and the readable trace file
//! written for it under `testdata/sim-failures/`.

use crate::faults::FaultKind;
use crate::invariants::Invariant;
use crate::runner::SeedReport;
use crate::scenario::Scenario;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directory (under the repository root) for failure traces; gitignored.
pub const FAILURE_DIR: &str = "testdata/sim-failures";

/// Violations shown per failing seed in the terminal (the file has them all).
pub const MAX_VIOLATIONS_SHOWN: usize = 5;

/// True when this build seeds tokio's `select!` RNG (see the crate docs on determinism).
pub fn tokio_rng_seeded() -> bool {
    cfg!(tokio_unstable)
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with a violation.
    pub failed: u64,
    /// Faults by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Checks by invariant.
    pub checks: BTreeMap<Invariant, u64>,
    /// Violations by invariant.
    pub violations: BTreeMap<Invariant, u64>,
    /// Timeouts excused by lossy partitions.
    pub excused_hangs: u64,
    /// Failed recoveries excused by half-open origin sessions.
    pub excused_recoveries: u64,
    /// Simulated time.
    pub sim_time: Duration,
    /// Client calls.
    pub calls: u64,
    /// Transfers: committed, aborted, unknown.
    pub transfers: [u64; 3],
}

impl Totals {
    /// Adds up reports.
    pub fn of(reports: &[SeedReport]) -> Self {
        let mut totals = Totals::default();
        for report in reports {
            totals.seeds += 1;
            totals.failed += u64::from(!report.passed());
            for (kind, count) in &report.fault_counts {
                *totals.faults.entry(*kind).or_insert(0) += count;
            }
            for (invariant, count) in &report.verdict.checks {
                *totals.checks.entry(*invariant).or_insert(0) += count;
            }
            for violation in &report.verdict.violations {
                *totals.violations.entry(violation.invariant).or_insert(0) += 1;
            }
            totals.excused_hangs += report.verdict.excused_hangs;
            totals.excused_recoveries += report.verdict.excused_recoveries;
            totals.sim_time += report.sim_time;
            totals.calls += report.calls as u64;
            for (total, count) in totals.transfers.iter_mut().zip(report.transfers) {
                *total += count;
            }
        }
        totals
    }
}

/// The closing summary table.
pub fn summary(
    scenario: &Scenario,
    faults: bool,
    reports: &[SeedReport],
    wall: Duration,
) -> String {
    let totals = Totals::of(reports);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nScenario {} (faults {}): {}",
        scenario.name,
        if faults { "on" } else { "off" },
        scenario.description
    );
    row(
        &mut out,
        "Seeds run",
        format!(
            "{} ({} passed, {} failed)",
            totals.seeds,
            totals.seeds - totals.failed,
            totals.failed
        ),
    );
    row(&mut out, "Client calls", group(totals.calls));
    row(
        &mut out,
        "Transfers",
        format!(
            "{} committed, {} aborted, {} outcome unknown to the client",
            group(totals.transfers[0]),
            group(totals.transfers[1]),
            group(totals.transfers[2])
        ),
    );
    let faults_line = if totals.faults.is_empty() {
        "none".to_string()
    } else {
        totals
            .faults
            .iter()
            .map(|(kind, count)| format!("{} {}", kind.name(), group(*count)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(&mut out, "Faults injected", faults_line);
    let _ = writeln!(out, "  Invariants{:>44}{:>10}", "checks", "violated");
    for invariant in Invariant::ALL {
        let checks = totals.checks.get(&invariant).copied().unwrap_or(0);
        let violated = totals.violations.get(&invariant).copied().unwrap_or(0);
        let mark = if violated > 0 { "  <-- FAILED" } else { "" };
        let _ = writeln!(
            out,
            "    {:<46}{:>10}{:>10}{mark}",
            invariant.describe(),
            group(checks),
            group(violated)
        );
    }
    if totals.excused_hangs > 0 {
        row(
            &mut out,
            "Stalled calls",
            format!(
                "{} after lossy partitions (turmoil drops segments for good; not counted as hangs)",
                group(totals.excused_hangs)
            ),
        );
    }
    if totals.excused_recoveries > 0 {
        row(
            &mut out,
            "Wedged origins",
            format!(
                "{} seeds where the origin stayed full of sessions whose close a lossy partition dropped (not counted against the proxy)",
                group(totals.excused_recoveries)
            ),
        );
    }
    let seeds = totals.seeds.max(1) as f64;
    row(
        &mut out,
        "Simulated time",
        format!(
            "{:.1} s ({:.1} s per seed)",
            totals.sim_time.as_secs_f64(),
            totals.sim_time.as_secs_f64() / seeds
        ),
    );
    row(
        &mut out,
        "Wall time",
        format!("{:.1} s", wall.as_secs_f64()),
    );
    row(
        &mut out,
        "Simulated : wall",
        format!(
            "{:.0} : 1 (on {} thread(s))",
            totals.sim_time.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            std::thread::available_parallelism().map_or(1, usize::from)
        ),
    );
    row(
        &mut out,
        "Seeds per second",
        format!("{:.1}", totals.seeds as f64 / wall.as_secs_f64().max(1e-9)),
    );
    row(
        &mut out,
        "Determinism",
        "seeded network, proxy, edge, origin and clients; measured exact (sim run --check-determinism)"
            .to_string(),
    );
    out
}

fn row(out: &mut String, label: &str, value: String) {
    let _ = writeln!(out, "  {label:<20}{value}");
}

/// `12345` → `12,345`.
pub fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The command that replays a seed (with its fault subset and planted bugs, if any).
pub fn replay_command(report: &SeedReport) -> String {
    crate::shrink::Reproducer::of(report).replay_command()
}

/// What the terminal shows for a failing seed.
pub fn failure(report: &SeedReport, file: Option<&Path>, reproduced: Option<bool>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nFAILED seed {} ({} violation(s)):",
        report.seed,
        report.verdict.violations.len()
    );
    for violation in report.verdict.violations.iter().take(MAX_VIOLATIONS_SHOWN) {
        let _ = writeln!(out, "  {violation}");
    }
    if report.verdict.violations.len() > MAX_VIOLATIONS_SHOWN {
        let _ = writeln!(
            out,
            "  ... {} more in the trace file",
            report.verdict.violations.len() - MAX_VIOLATIONS_SHOWN
        );
    }
    let _ = writeln!(out, "  fault plan{}:", kept_note(report));
    for line in report.plan.render() {
        let _ = writeln!(out, "    {line}");
    }
    if let Some(reproduced) = reproduced {
        let _ = writeln!(
            out,
            "  rerun of the seed: {}",
            if reproduced {
                "same trace (reproducible)"
            } else {
                "different trace in this process (a proxy crash drops tasks in an order set by process-wide task ids; `just sim-replay` in a fresh process replays the seed exactly)"
            }
        );
    }
    let _ = writeln!(out, "  replay: {}", replay_command(report));
    if let Some(file) = file {
        let _ = writeln!(out, "  trace:  {}", file.display());
    }
    out
}

fn kept_note(report: &SeedReport) -> String {
    let mut note = String::new();
    if let Some(keep) = &report.kept_faults {
        let _ = write!(
            note,
            " (only faults {} of the seed's plan)",
            crate::shrink::render_keep(keep)
        );
    }
    if !report.bugs.is_empty() {
        let names: Vec<&str> = report.bugs.iter().map(|bug| bug.name()).collect();
        let _ = write!(note, " [planted bugs: {}]", names.join(", "));
    }
    note
}

/// The full, readable account of a seed: header, violations, fault plan, trace.
pub fn trace_file_text(report: &SeedReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "seed {} scenario {} faults {}",
        report.seed,
        report.scenario,
        if report.faults { "on" } else { "off" }
    );
    let _ = writeln!(out, "replay: {}", replay_command(report));
    let _ = writeln!(out, "trace hash: {:016x}", report.trace_hash);
    let _ = writeln!(out, "\nviolations:");
    for violation in &report.verdict.violations {
        let _ = writeln!(out, "  {violation}");
    }
    let _ = writeln!(out, "\nfault plan{}:", kept_note(report));
    for line in report.plan.render() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "\ntrace (simulated time, what each client did and saw):"
    );
    for line in &report.trace {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Where failure traces go: `testdata/sim-failures` in the repository this binary was built
/// from, or under the working directory when that tree is gone.
pub fn failure_dir() -> PathBuf {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if repository.join("testdata").is_dir() {
        repository.join(FAILURE_DIR)
    } else {
        PathBuf::from(FAILURE_DIR)
    }
}

/// Writes a failing seed's trace file; returns its path.
pub fn write_failure(report: &SeedReport) -> std::io::Result<PathBuf> {
    let dir = failure_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("seed-{}-{}.txt", report.seed, report.scenario));
    std::fs::write(&path, trace_file_text(report))?;
    Ok(path.canonicalize().unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
