//! The scripted scenario: the scripts of `testdata/sim/sessions/` run through the proxy next
//! to generated clients, under the standard faults. Every invariant must hold, every script
//! statement must have run as its script says at least once (so the test cannot pass with
//! scripts that never get anywhere), and a script that expects the wrong thing must be
//! reported: the checker bites.

use sim::invariants::Invariant;
use sim::report;
use sim::runner::{self, SeedReport};
use sim::scenario::Scenario;
use sim::workload::scripted::{self, Script};
use std::collections::BTreeSet;

/// Seeds with faults.
const SEEDS: u64 = 10;

/// Runs `seeds` of `scenario` keeping their traces, on a thread with the runner's stack.
fn run(scenario: &Scenario, seeds: std::ops::RangeInclusive<u64>, faults: bool) -> Vec<SeedReport> {
    let scenario = scenario.clone();
    std::thread::Builder::new()
        .stack_size(runner::WORKER_STACK_SIZE)
        .spawn(move || {
            seeds
                .map(|seed| runner::run_seed(seed, &scenario, faults, true))
                .collect()
        })
        .expect("thread")
        .join()
        .expect("seeds ran")
}

#[test]
fn scripted_seeds_keep_every_invariant_and_run_every_statement() {
    let scenario = Scenario::scripted();
    let scripts = scenario
        .scripts
        .clone()
        .expect("testdata/sim/sessions loads");
    assert!(scripts.len() >= 4, "{} scripts", scripts.len());
    let reports = run(&scenario, 1..=SEEDS, true);
    let failed: String = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| report::failure(r, None, None))
        .collect();
    assert!(failed.is_empty(), "{failed}");
    let totals = report::Totals::of(&reports);
    assert!(!totals.faults.is_empty(), "faults were injected");
    let seen: BTreeSet<(String, usize)> = reports
        .iter()
        .flat_map(|r| scripted::conformed(&r.trace))
        .collect();
    let missing: Vec<(String, usize)> = scripts
        .iter()
        .flat_map(Script::statements)
        .filter(|statement| !seen.contains(statement))
        .collect();
    assert!(
        missing.is_empty(),
        "script statements never run as scripted in {SEEDS} seeds: {missing:?}"
    );
}

/// One script that is wrong about what the proxy answers, run alone without faults: the
/// seed must fail with `invariant`, naming the statement.
fn bites(text: &str, invariant: Invariant, statement: &str) {
    let mut scenario = Scenario::scripted();
    scenario.scripts = Ok(vec![Script::parse("wrong.sql", text).expect("parses")]);
    let report = run(&scenario, 1..=1, false).remove(0);
    assert!(
        report
            .verdict
            .violations
            .iter()
            .any(|v| v.invariant == invariant && v.detail.contains(statement)),
        "no {invariant:?} violation for `{statement}`: {:?}",
        report.verdict.violations
    );
    let others: Vec<_> = report
        .verdict
        .violations
        .iter()
        .filter(|v| !v.detail.contains("wrong.sql"))
        .collect();
    assert!(others.is_empty(), "unrelated violations: {others:?}");
}

#[test]
fn a_wrong_expected_sqlstate_is_a_violation() {
    // SELEC is a syntax error (42601), not a duplicate key.
    bites(
        "SELECT 1\n-- expect: 23505\nSELEC 1\n",
        Invariant::ExpectedErrorsOnly,
        "wrong.sql:3 SELEC 1 (expect 23505)",
    );
}

#[test]
fn an_expected_error_that_does_not_happen_is_a_violation() {
    bites(
        "-- expect: 42601\nSELECT 1\n",
        Invariant::ExpectedErrorsOnly,
        "wrong.sql:2 SELECT 1 (expect 42601)",
    );
}

#[test]
fn a_wrong_value_is_a_violation() {
    bites(
        "-- value: someone-else\nSHOW application_name\n",
        Invariant::SessionIsolation,
        "wrong.sql:2 SHOW application_name",
    );
}

#[test]
fn without_faults_every_script_call_succeeds() {
    for report in run(&Scenario::scripted(), 100..=101, false) {
        assert!(report.passed(), "{}", report::failure(&report, None, None));
        assert_eq!(report.failed_calls, 0, "seed {}", report.seed);
    }
}
