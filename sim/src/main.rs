//! `sim`: run many seeds of a scenario and report, or replay one seed with its trace.
//!
//! `just sim` runs `sim run`: 200 seeds of the standard scenario on every core, a progress
//! bar, a closing table, and for each failing seed its violations, fault plan, replay command
//! and a trace file under `testdata/sim-failures/`. The exit status is 1 when any invariant
//! was violated.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use reference_proxy::buggify::{self, Bug};
use sim::report;
use sim::runner::{self, SeedReport};
use sim::scenario::Scenario;
use sim::shrink;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

/// Default number of seeds of `sim run`.
const DEFAULT_SEEDS: u64 = 200;
/// Failing seeds rerun to check that they reproduce.
const MAX_RERUNS: usize = 5;
/// Exit status when an invariant was violated.
const EXIT_VIOLATION: u8 = 1;
/// Exit status for bad arguments (clap uses 2 as well).
const EXIT_USAGE: u8 = 2;
/// Failing seeds shrunk per run (each shrink reruns the seed up to
/// `shrink::MAX_SHRINK_RUNS` times).
const MAX_SHRINKS: usize = 3;

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Deterministic simulation of the reference proxy against a fake Postgres on a hostile network",
    after_help = "Scenarios: standard (default), pool-pressure, network, tunnel, bench, quick, scripted. `sim scenarios` describes them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Run many seeds and report.
    Run {
        /// How many seeds.
        #[arg(long, default_value_t = DEFAULT_SEEDS)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 1)]
        start_seed: u64,
        /// Scenario name.
        #[arg(long, default_value = "standard")]
        scenario: String,
        /// Network faults and hostile clients.
        #[arg(long, value_enum, default_value = "on")]
        faults: OnOff,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Plant a known pooler bug in the proxy (repeatable; needs `--features buggify`):
        /// skip-reset, cancel-wrong-connection, stale-unnamed-statement.
        #[arg(long, value_name = "BUG", value_parser = parse_bug)]
        buggify: Vec<Bug>,
        /// Do not shrink failing seeds' fault plans.
        #[arg(long)]
        no_shrink: bool,
        /// Do not add shrunk reproducers to testdata/sim/regression-seeds.txt.
        #[arg(long)]
        no_record: bool,
        /// Run every seed a second time and report which traces differ, with the fault
        /// kinds of the differing seeds (see the crate docs on determinism).
        #[arg(long)]
        check_determinism: bool,
    },
    /// Run one seed and print its trace.
    Replay {
        /// The seed.
        seed: u64,
        /// Scenario name.
        #[arg(long, default_value = "standard")]
        scenario: String,
        /// Network faults and hostile clients.
        #[arg(long, value_enum, default_value = "on")]
        faults: OnOff,
        /// Also print the proxy's own logs (a tracing filter such as `reference_proxy=debug`),
        /// stamped with simulated time.
        #[arg(long, value_name = "FILTER")]
        proxy_log: Option<String>,
        /// Also show every message the fake origin received and sent.
        #[arg(long)]
        wire: bool,
        /// Run only these faults of the seed's plan: positions, comma-separated, or `none`
        /// (what a shrunk reproducer prints).
        #[arg(long, value_name = "I,J,...", value_parser = parse_keep)]
        keep_faults: Option<KeepFaults>,
        /// Plant a known pooler bug in the proxy (repeatable; needs `--features buggify`).
        #[arg(long, value_name = "BUG", value_parser = parse_bug)]
        buggify: Vec<Bug>,
    },
    /// List the scenarios.
    Scenarios,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            seeds,
            start_seed,
            scenario,
            faults,
            threads,
            buggify,
            no_shrink,
            no_record,
            check_determinism,
        } => match (scenario_named(&scenario), plant(&buggify)) {
            (Some(scenario), true) => {
                let options = RunArgs {
                    start: start_seed,
                    count: seeds,
                    faults: faults == OnOff::On,
                    threads,
                    shrink: !no_shrink,
                    record: !no_record,
                    check_determinism,
                };
                run(&scenario, &options)
            }
            _ => ExitCode::from(EXIT_USAGE),
        },
        Command::Replay {
            seed,
            scenario,
            faults,
            proxy_log,
            wire,
            keep_faults,
            buggify,
        } => match (scenario_named(&scenario), plant(&buggify)) {
            (Some(scenario), true) => {
                let options = runner::RunOptions {
                    faults: faults == OnOff::On,
                    keep_trace: true,
                    wire,
                    keep_faults: keep_faults.map(|keep| keep.0),
                    print_logs: proxy_log,
                };
                replay(&scenario, seed, options)
            }
            _ => ExitCode::from(EXIT_USAGE),
        },
        Command::Scenarios => {
            for scenario in Scenario::all() {
                say(&format!("{:<15} {}", scenario.name, scenario.description));
            }
            ExitCode::SUCCESS
        }
    }
}

/// Prints to stdout (the one place the binary talks to its user).
fn say(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn scenario_named(name: &str) -> Option<Scenario> {
    let found = Scenario::named(name);
    if found.is_none() {
        let names: Vec<&str> = Scenario::all().iter().map(|s| s.name).collect();
        eprintln!(
            "sim: unknown scenario {name:?}; choose one of {}",
            names.join(", ")
        );
    }
    found
}

fn progress(seeds: u64) -> ProgressBar {
    let bar = ProgressBar::new(seeds);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} seeds ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    Bug::named(name).ok_or_else(|| {
        let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
        format!("unknown bug {name:?}; choose one of {}", names.join(", "))
    })
}

/// `--keep-faults`: one value holding the list (clap would read `Option<Vec<_>>` as a
/// repeated flag of single positions).
#[derive(Debug, Clone)]
struct KeepFaults(Vec<usize>);

fn parse_keep(text: &str) -> Result<KeepFaults, String> {
    shrink::parse_keep(text)
        .map(KeepFaults)
        .ok_or_else(|| format!("{text:?}: expected fault positions such as 0,2, or none"))
}

/// Plants the asked-for bugs for the whole process; false (with a message) when this build
/// cannot.
fn plant(bugs: &[Bug]) -> bool {
    match buggify::plant(bugs) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("sim: {error}: `cargo run --release -p sim --features buggify -- ...`");
            false
        }
    }
}

/// What `sim run` was asked to do.
struct RunArgs {
    start: u64,
    count: u64,
    faults: bool,
    threads: Option<usize>,
    shrink: bool,
    record: bool,
    check_determinism: bool,
}

fn run(scenario: &Scenario, args: &RunArgs) -> ExitCode {
    let RunArgs {
        start,
        count,
        faults,
        threads,
        ..
    } = *args;
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    say(&format!(
        "sim: {count} seeds from {start} of scenario {} (faults {}) on {threads} thread(s){}",
        scenario.name,
        if faults { "on" } else { "off" },
        planted_note()
    ));
    let seeds: Vec<u64> = (start..start.saturating_add(count)).collect();
    let bar = progress(count);
    let failed = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    let reports = runner::run_seeds(&seeds, scenario, faults, threads, &|report| {
        if !report.passed() {
            let failures = failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            bar.set_message(format!("{failures} FAILED (latest: seed {})", report.seed));
        }
        bar.inc(1);
    });
    let wall = started.elapsed();
    bar.finish_and_clear();
    let failures: Vec<&SeedReport> = reports.iter().filter(|r| !r.passed()).collect();
    for (index, report) in failures.iter().enumerate() {
        let reproduced = (index < MAX_RERUNS).then(|| {
            runner::run_seed(report.seed, scenario, faults, false).trace_hash == report.trace_hash
        });
        let file = match report::write_failure(report) {
            Ok(path) => Some(path),
            Err(error) => {
                eprintln!(
                    "sim: could not write the trace of seed {}: {error}",
                    report.seed
                );
                None
            }
        };
        say(&report::failure(report, file.as_deref(), reproduced));
        if args.shrink && index < MAX_SHRINKS {
            shrink_and_record(report, scenario, args.record);
        }
    }
    say(&report::summary(scenario, faults, &reports, wall));
    if args.check_determinism {
        say(&determinism(scenario, faults, threads, &reports));
    }
    if failures.is_empty() {
        say("All invariants held.");
        ExitCode::SUCCESS
    } else {
        if let Some(first) = failures.iter().map(|r| r.seed).min() {
            say(&format!(
                "First failing seed: {first} ({} seed(s) into the run).",
                first - start + 1
            ));
        }
        say(&format!(
            "{} seed(s) violated invariants; replay one with `{}`.",
            failures.len(),
            report::replay_command(failures[0])
        ));
        ExitCode::from(EXIT_VIOLATION)
    }
}

/// Reruns every seed and compares traces: how many replayed exactly, and which fault kinds
/// the diverging seeds had (the evidence behind the crate docs' determinism section).
fn determinism(scenario: &Scenario, faults: bool, threads: usize, first: &[SeedReport]) -> String {
    let seeds: Vec<u64> = first.iter().map(|r| r.seed).collect();
    let second = runner::run_seeds(&seeds, scenario, faults, threads, &|_| {});
    let mut same = 0;
    let mut diverged: Vec<u64> = Vec::new();
    let mut kinds: std::collections::BTreeMap<&'static str, (u64, u64)> = Default::default();
    for (a, b) in first.iter().zip(&second) {
        let equal = a.trace_hash == b.trace_hash;
        if equal {
            same += 1;
        } else {
            diverged.push(a.seed);
        }
        for kind in a.fault_counts.keys() {
            let entry = kinds.entry(kind.name()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(!equal);
        }
    }
    let mut out = format!(
        "Determinism: {same}/{} seeds replayed to the same trace (tokio RNG seeded: {})",
        first.len(),
        report::tokio_rng_seeded()
    );
    for (kind, (seeds, differing)) in kinds {
        out.push_str(&format!(
            "\n  seeds with {kind:<18} {seeds:>5}, of which diverged {differing:>5}"
        ));
    }
    if !diverged.is_empty() {
        let shown: Vec<String> = diverged.iter().take(20).map(u64::to_string).collect();
        out.push_str(&format!("\n  diverged: {}", shown.join(" ")));
    }
    out
}

fn planted_note() -> String {
    let planted = buggify::planted();
    if planted.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = planted.iter().map(|bug| bug.name()).collect();
    format!(", planted bugs: {}", names.join(", "))
}

/// Shrinks a failing seed's fault plan, prints the reproducer, and records it.
fn shrink_and_record(report: &SeedReport, scenario: &Scenario, record: bool) {
    let shrunk = shrink::shrink(report, scenario);
    let reproducer = &shrunk.reproducer;
    let rerun = runner::run_seed_with(reproducer.seed, scenario, reproducer.options(false));
    let reproduced = rerun.verdict.violations.iter().any(|v| {
        shrunk
            .report
            .verdict
            .violations
            .iter()
            .any(|w| w.invariant == v.invariant)
    });
    let mut text = format!(
        "  shrunk in {} run(s): {} of {} fault(s){} -> {}",
        shrunk.runs,
        shrunk.faults_left(),
        shrunk.original_faults,
        if reproducer.faults {
            ""
        } else {
            " (faults off)"
        },
        if reproduced {
            "fails again on rerun"
        } else {
            "did not fail on rerun in this process (a proxy crash replays exactly only in a fresh process; see the sim crate docs)"
        }
    );
    for line in shrunk.report.plan.render() {
        text.push_str(&format!("\n    {line}"));
    }
    if let Some(violation) = shrunk.report.verdict.violations.first() {
        text.push_str(&format!("\n  shrunk violation: {violation}"));
    }
    text.push_str(&format!("\n  reproducer: {}", reproducer.replay_command()));
    say(&text);
    if !record {
        return;
    }
    let why = shrunk
        .report
        .verdict
        .violations
        .first()
        .map(|v| format!("{:?} (found by sim run)", v.invariant))
        .unwrap_or_default();
    match shrink::record(reproducer, &why) {
        Ok(true) => say(&format!(
            "  recorded in {}: {}",
            shrink::REGRESSION_SEEDS,
            reproducer.line()
        )),
        Ok(false) => {}
        Err(error) => eprintln!("sim: could not record the reproducer: {error}"),
    }
}

fn replay(scenario: &Scenario, seed: u64, options: runner::RunOptions) -> ExitCode {
    let faults = options.faults;
    let report = runner::run_seed_with(seed, scenario, options);
    say(&report::trace_file_text(&report));
    say(&report::summary(
        scenario,
        faults,
        std::slice::from_ref(&report),
        report.wall_time,
    ));
    if report.passed() {
        say(&format!("Seed {seed}: all invariants held."));
        ExitCode::SUCCESS
    } else {
        if let Ok(path) = report::write_failure(&report) {
            say(&format!("Trace written to {}", path.display()));
        }
        ExitCode::from(EXIT_VIOLATION)
    }
}
