//! Seeds of the standard scenario must keep every invariant; without faults nothing may even
//! fail. The scenario is the standard one (the test profile optimizes, so 48 seeds take a
//! few seconds).

use sim::faults::FaultKind;
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

/// Goal: the proxy keeps every invariant through the tunnel edge's own faults, and clients
/// learn what went wrong with the tunnel. Method: seeds of the tunnel scenario (the real
/// `tunnel_edge::Edge` between the proxy's real `TunnelDialer` and the fake origin); their
/// traces must hold a proxy error that names the tunnel problem (502 from cloudflared, or
/// Access refusing the token) whenever such a fault was drawn.
#[test]
fn tunnel_faults_keep_every_invariant_and_are_named() {
    const TUNNEL_SEEDS: u64 = 12;
    let scenario = Scenario::tunnel();
    let seeds: Vec<u64> = (1..=TUNNEL_SEEDS).collect();
    let reports: Vec<SeedReport> = seeds
        .iter()
        .map(|seed| runner::run_seed(*seed, &scenario, true, true))
        .collect();
    let failed = failures(&reports);
    assert!(failed.is_empty(), "{failed}");
    let totals = report::Totals::of(&reports);
    let tunnel_kinds = [
        FaultKind::RevokeToken,
        FaultKind::KillTunnels,
        FaultKind::EdgeOriginDown,
        FaultKind::CrashEdge,
    ];
    for kind in tunnel_kinds {
        assert!(totals.faults.contains_key(&kind), "{kind:?} was drawn");
    }
    let named = reports.iter().flat_map(|r| &r.trace).any(|line| {
        line.contains("58000")
            && (line.contains("cloudflared cannot reach the database") || line.contains("Access"))
    });
    assert!(named, "a client saw a tunnel error that names the problem");
}
