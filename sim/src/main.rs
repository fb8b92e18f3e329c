//! `sim`: run many seeds of a scenario and report, or replay one seed with its trace.
//!
//! `just sim` runs `sim run`: 200 seeds of the standard scenario on every core, a progress
//! bar, a closing table, and for each failing seed its violations, fault plan, replay command
//! and a trace file under `testdata/sim-failures/`. The exit status is 1 when any invariant
//! was violated.

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sim::report;
use sim::runner::{self, SeedReport};
use sim::scenario::Scenario;
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

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Deterministic simulation of the reference proxy against a fake Postgres on a hostile network",
    after_help = "Scenarios: standard (default), pool-pressure, network, quick. `sim scenarios` describes them."
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
        } => match scenario_named(&scenario) {
            Some(scenario) => run(&scenario, start_seed, seeds, faults == OnOff::On, threads),
            None => ExitCode::from(EXIT_USAGE),
        },
        Command::Replay {
            seed,
            scenario,
            faults,
            proxy_log,
            wire,
        } => match scenario_named(&scenario) {
            Some(scenario) => {
                let options = runner::RunOptions {
                    faults: faults == OnOff::On,
                    keep_trace: true,
                    wire,
                };
                replay(&scenario, seed, options, proxy_log)
            }
            None => ExitCode::from(EXIT_USAGE),
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

fn run(
    scenario: &Scenario,
    start: u64,
    count: u64,
    faults: bool,
    threads: Option<usize>,
) -> ExitCode {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    say(&format!(
        "sim: {count} seeds from {start} of scenario {} (faults {}) on {threads} thread(s)",
        scenario.name,
        if faults { "on" } else { "off" }
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
    }
    say(&report::summary(scenario, faults, &reports, wall));
    if failures.is_empty() {
        say("All invariants held.");
        ExitCode::SUCCESS
    } else {
        say(&format!(
            "{} seed(s) violated invariants; replay one with `{}`.",
            failures.len(),
            report::replay_command(failures[0])
        ));
        ExitCode::from(EXIT_VIOLATION)
    }
}

fn replay(
    scenario: &Scenario,
    seed: u64,
    options: runner::RunOptions,
    proxy_log: Option<String>,
) -> ExitCode {
    if let Some(filter) = proxy_log {
        sim::trace::install_proxy_logging(&filter);
    }
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
