//! Running seeds: one seed end to end (build, run, check, report), and many seeds on all
//! cores. Seeds are independent simulations on their own threads, so running them in
//! parallel changes nothing about any one of them.
//!
//! A panic anywhere in a seed — in the proxy's tasks, the fake, turmoil — is caught, counted
//! as a violation of [`Invariant::NoPanic`] with its message, and does not stop the other
//! seeds. A process-wide panic hook keeps such panics off the terminal while a seed runs and
//! hands them to the seed's report instead.

use crate::faults::{FaultKind, FaultPlan};
use crate::invariants::{self, Evidence, Invariant, Verdict};
use crate::scenario::Scenario;
use crate::trace::{self, Fate, LogCapture};
use crate::world::World;
use reference_proxy::buggify::{self, Bug};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Stack of each worker thread (the proxy, turmoil and tokio-postgres nest deep futures).
pub const WORKER_STACK_SIZE: usize = 32 * 1024 * 1024;

/// Most panic messages kept per seed.
pub const MAX_PANICS_KEPT: usize = 16;

/// How one seed went.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Scenario name.
    pub scenario: String,
    /// Whether faults were on.
    pub faults: bool,
    /// The network fault plan that ran (a subset of the seed's when `kept_faults` is set).
    pub plan: FaultPlan,
    /// Positions in the seed's plan of the faults that ran, when not all of them did.
    pub kept_faults: Option<Vec<usize>>,
    /// Bugs planted in the proxy while the seed ran (`buggify` builds only).
    pub bugs: Vec<Bug>,
    /// Faults injected (network and client-side), by kind.
    pub fault_counts: BTreeMap<FaultKind, u64>,
    /// Checks and violations.
    pub verdict: Verdict,
    /// The trace (kept only when asked for, or when the seed failed).
    pub trace: Vec<String>,
    /// Hash of the whole trace.
    pub trace_hash: u64,
    /// Simulated time.
    pub sim_time: Duration,
    /// Wall-clock time.
    pub wall_time: Duration,
    /// Client calls made.
    pub calls: usize,
    /// Calls that did not succeed (errors, closed connections, timeouts).
    pub failed_calls: usize,
    /// Transfers by what their client saw: committed, aborted, unknown.
    pub transfers: [u64; 3],
    /// Most origin sessions the proxy held at once.
    pub proxy_max_sessions: usize,
    /// Most sessions the origin saw at once.
    pub origin_max_sessions: usize,
}

impl SeedReport {
    /// True when no invariant was violated.
    pub fn passed(&self) -> bool {
        self.verdict.violations.is_empty()
    }
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static HOOK: Once = Once::new();

/// Routes panics on threads that run a seed into that seed's report.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                PANICS.with(|panics| {
                    let mut panics = panics.borrow_mut();
                    if panics.len() < MAX_PANICS_KEPT {
                        panics.push(info.to_string());
                    }
                });
            } else {
                previous(info);
            }
        }));
    });
}

/// How to run one seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Network faults and hostile clients.
    pub faults: bool,
    /// Keep the trace even when the seed passes.
    pub keep_trace: bool,
    /// Put the fake origin's wire messages in the trace.
    pub wire: bool,
    /// Run only these faults of the seed's plan (positions in it); `None`: all.
    pub keep_faults: Option<Vec<usize>>,
    /// Print the proxy's and the edge's logs (this `tracing` filter) to stderr after the
    /// run; `None`: capture them at [`trace::DEFAULT_LOG_FILTER`] for the secrets check only.
    pub print_logs: Option<String>,
}

/// Runs one seed. `keep_trace` keeps the trace even when the seed passes.
pub fn run_seed(seed: u64, scenario: &Scenario, faults: bool, keep_trace: bool) -> SeedReport {
    run_seed_with(
        seed,
        scenario,
        RunOptions {
            faults,
            keep_trace,
            wire: false,
            keep_faults: None,
            print_logs: None,
        },
    )
}

/// Runs one seed with `options`.
pub fn run_seed_with(seed: u64, scenario: &Scenario, options: RunOptions) -> SeedReport {
    let RunOptions {
        faults,
        keep_trace,
        wire,
        keep_faults,
        print_logs,
    } = options;
    install_panic_hook();
    CAPTURING.with(|c| c.set(true));
    PANICS.with(|p| p.borrow_mut().clear());
    let started = Instant::now();
    let logs = LogCapture::default();
    let filter = print_logs.as_deref().unwrap_or(trace::DEFAULT_LOG_FILTER);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        tracing::subscriber::with_default(logs.subscriber(filter), || {
            simulate(seed, scenario, faults, wire, keep_faults.as_deref())
        })
    }));
    let panics = PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()));
    CAPTURING.with(|c| c.set(false));
    let mut report = match result {
        Ok(report) => report,
        Err(_) => crashed(seed, scenario, faults),
    };
    check_logs(&logs, seed, scenario, &mut report.verdict);
    if print_logs.is_some() {
        let mut stderr = std::io::stderr().lock();
        let _ = std::io::Write::write_all(&mut stderr, logs.text().as_bytes());
    }
    report.kept_faults = keep_faults;
    report.bugs = buggify::planted();
    report.wall_time = started.elapsed();
    if panics.is_empty() {
        report.verdict.passed(Invariant::NoPanic, 1);
    }
    for panic in panics {
        report.verdict.violate(Invariant::NoPanic, panic);
    }
    if report.passed() && !keep_trace {
        report.trace = Vec::new();
    }
    report
}

/// [`Invariant::NoSecretInLogs`]: no secret of the world in the captured log text. The
/// violation names the kind of secret and the line's position, never the secret.
fn check_logs(logs: &LogCapture, seed: u64, scenario: &Scenario, verdict: &mut Verdict) {
    let text = logs.text();
    for (kind, secret) in crate::world::secrets(seed, scenario) {
        match text.lines().position(|line| line.contains(secret.as_str())) {
            None => verdict.passed(Invariant::NoSecretInLogs, 1),
            Some(line) => verdict.violate(
                Invariant::NoSecretInLogs,
                format!(
                    "{kind} appears in log line {} (replay with --proxy-log to see it)",
                    line + 1
                ),
            ),
        }
    }
}

fn simulate(
    seed: u64,
    scenario: &Scenario,
    faults: bool,
    wire: bool,
    keep_faults: Option<&[usize]>,
) -> SeedReport {
    let world = match World::build_with(seed, scenario, faults, wire, keep_faults) {
        Ok(world) => world,
        Err(error) => {
            let mut report = crashed(seed, scenario, faults);
            report.verdict.violate(
                Invariant::SimulationCompletes,
                format!("setup failed: {error}"),
            );
            return report;
        }
    };
    let plan = world.plan().clone();
    let finished = world.run();
    let collected = &finished.collected;
    let mut verdict = invariants::check(&Evidence {
        collected,
        bank: &finished.bank,
        accounts: scenario.accounts,
        proxy_max_sessions: finished.proxy_max_sessions,
        pool_size: scenario.pool_size,
        plan: &plan,
        call_timeout: scenario.call_timeout,
        origin_zombies: finished
            .origin
            .sessions_now
            .saturating_sub(finished.proxy_sessions_now),
    });
    for (invariant, count) in &collected.checks {
        verdict.passed(*invariant, *count);
    }
    match &finished.error {
        None => verdict.passed(Invariant::SimulationCompletes, 1),
        Some(error) => verdict.violate(Invariant::SimulationCompletes, error.clone()),
    }
    let mut fault_counts = plan.counts();
    for kind in &collected.hostile {
        *fault_counts.entry(*kind).or_insert(0) += 1;
    }
    let mut transfers = [0u64; 3];
    for record in &collected.transfers {
        let slot = match record.fate {
            Fate::Committed => 0,
            Fate::Aborted => 1,
            Fate::Unknown => 2,
        };
        transfers[slot] += 1;
    }
    let mut trace = collected.lines.clone();
    trace.extend(summary_lines(&finished));
    SeedReport {
        seed,
        scenario: scenario.name.into(),
        faults,
        plan,
        kept_faults: None,
        bugs: Vec::new(),
        fault_counts,
        verdict,
        trace,
        trace_hash: collected.hash,
        sim_time: finished.sim_time,
        wall_time: Duration::ZERO,
        calls: collected.calls.len(),
        failed_calls: collected
            .calls
            .iter()
            .filter(|c| !c.outcome.is_ok())
            .count(),
        transfers,
        proxy_max_sessions: finished.proxy_max_sessions,
        origin_max_sessions: finished.origin.max_sessions,
    }
}

fn summary_lines(finished: &crate::world::Finished) -> Vec<String> {
    let origin = &finished.origin;
    vec![
        format!(
            "end: simulated {}, origin committed {} transactions ({} transfers)",
            crate::faults::ms(finished.sim_time),
            finished.bank.commits(),
            finished.bank.transfers().len()
        ),
        format!(
            "end: balances {:?}",
            finished.bank.balances().values().collect::<Vec<_>>()
        ),
        format!(
            "end: proxy held at most {} origin sessions ({} opened); origin saw at most {} ({} started, {} refused with 53300, {} cancel requests, {} delivered, {} statement timeouts)",
            finished.proxy_max_sessions,
            finished.proxy_sessions_opened,
            origin.max_sessions,
            origin.sessions_started,
            origin.refused_too_many,
            origin.cancel_requests,
            origin.cancels_delivered,
            origin.statement_timeouts
        ),
    ]
}

fn crashed(seed: u64, scenario: &Scenario, faults: bool) -> SeedReport {
    SeedReport {
        seed,
        scenario: scenario.name.into(),
        faults,
        plan: FaultPlan::default(),
        kept_faults: None,
        bugs: Vec::new(),
        fault_counts: BTreeMap::new(),
        verdict: Verdict::default(),
        trace: Vec::new(),
        trace_hash: 0,
        sim_time: Duration::ZERO,
        wall_time: Duration::ZERO,
        calls: 0,
        failed_calls: 0,
        transfers: [0; 3],
        proxy_max_sessions: 0,
        origin_max_sessions: 0,
    }
}

/// Runs `seeds` on `threads` worker threads, calling `done` after each seed (from the worker
/// thread). Reports come back in seed order.
pub fn run_seeds(
    seeds: &[u64],
    scenario: &Scenario,
    faults: bool,
    threads: usize,
    done: &(dyn Fn(&SeedReport) + Sync),
) -> Vec<SeedReport> {
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<SeedReport>>> =
        seeds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let worker = std::thread::Builder::new()
                .name("sim-worker".into())
                .stack_size(WORKER_STACK_SIZE)
                .spawn_scoped(scope, || {
                    loop {
                        let index = next.fetch_add(1, Ordering::SeqCst);
                        let Some(seed) = seeds.get(index) else {
                            return;
                        };
                        let report = run_seed(*seed, scenario, faults, false);
                        done(&report);
                        if let Ok(mut slot) = slots[index].lock() {
                            *slot = Some(report);
                        }
                    }
                });
            if let Err(error) = worker {
                eprintln!("sim: could not start a worker thread: {error}");
            }
        }
    });
    slots
        .into_iter()
        .filter_map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The secrets check bites: a log line carrying the password or the token secret is a
    /// violation, one carrying neither is not.
    #[test]
    fn secrets_in_log_lines_are_violations() {
        let scenario = Scenario::tunnel();
        let secrets = crate::world::secrets(7, &scenario);
        assert!(secrets.len() >= 4, "{} secrets", secrets.len());
        for (kind, secret) in &secrets {
            let logs = LogCapture::default();
            tracing::subscriber::with_default(logs.subscriber("sim=info"), || {
                tracing::info!(value = %secret, "leaking {kind}");
            });
            let mut verdict = Verdict::default();
            check_logs(&logs, 7, &scenario, &mut verdict);
            assert_eq!(verdict.violations.len(), 1, "{kind}");
            assert!(!verdict.violations[0].detail.contains(secret.as_str()));
        }
        let logs = LogCapture::default();
        tracing::subscriber::with_default(logs.subscriber("sim=info"), || {
            tracing::info!(password = "<redacted>", "nothing secret");
        });
        let mut verdict = Verdict::default();
        check_logs(&logs, 7, &scenario, &mut verdict);
        assert!(verdict.violations.is_empty());
        assert!(logs.text().contains("nothing secret"));
    }
}
