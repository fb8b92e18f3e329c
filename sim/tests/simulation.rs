//! Seeds of the standard scenario must keep every invariant; without faults nothing may even
//! fail. The scenario is the standard one (the test profile optimizes, so 48 seeds take a
//! few seconds).

use sim::report;
use sim::runner::{self, SeedReport};
use sim::scenario::Scenario;

/// Seeds with faults.
const FAULT_SEEDS: u64 = 40;
/// Seeds without faults.
const CLEAN_SEEDS: u64 = 8;

/// The standard scenario, including the client behaviour that once exposed proxy bugs (see
/// `regressions.rs`; both are fixed).
fn scenario() -> Scenario {
    Scenario::standard()
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn run(first: u64, count: u64, faults: bool) -> Vec<SeedReport> {
    let seeds: Vec<u64> = (first..first + count).collect();
    runner::run_seeds(&seeds, &scenario(), faults, threads(), &|_| {})
}

fn failures(reports: &[SeedReport]) -> String {
    reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| report::failure(r, None, None))
        .collect()
}

#[test]
fn seeds_with_faults_keep_every_invariant() {
    let reports = run(1, FAULT_SEEDS, true);
    assert_eq!(reports.len() as u64, FAULT_SEEDS);
    let failed = failures(&reports);
    assert!(failed.is_empty(), "{failed}");
    let totals = report::Totals::of(&reports);
    assert!(totals.transfers[0] > 0, "some transfers commit");
    assert!(totals.transfers[1] > 0, "some transfers are aborted");
    assert!(!totals.faults.is_empty(), "faults were injected");
}

#[test]
fn without_faults_every_call_succeeds() {
    let reports = run(1_000, CLEAN_SEEDS, false);
    let failed = failures(&reports);
    assert!(failed.is_empty(), "{failed}");
    for report in &reports {
        assert_eq!(
            report.failed_calls, 0,
            "seed {} had failed calls",
            report.seed
        );
        assert_eq!(report.transfers[1] + report.transfers[2], 0);
        assert!(report.transfers[0] > 0);
    }
}
