//! Same seed, same trace, in one process, with and without faults — proxy crashes
//! included (the proxy runs its sessions in place in the simulator; see the sim crate docs).

use sim::faults::Fault;
use sim::runner::{SeedReport, run_seed};
use sim::scenario::Scenario;

const SEEDS: [u64; 4] = [1, 2, 3, 4];

fn twice(seed: u64, faults: bool) -> (SeedReport, SeedReport) {
    let scenario = Scenario::quick();
    (
        run_seed(seed, &scenario, faults, true),
        run_seed(seed, &scenario, faults, true),
    )
}

fn before_first_fault(report: &SeedReport) -> Vec<String> {
    report
        .trace
        .iter()
        .take_while(|line| !line.contains("fault:"))
        .cloned()
        .collect()
}

#[test]
fn same_seed_same_trace_without_faults() {
    for seed in SEEDS {
        let (a, b) = twice(seed, false);
        assert!(!a.trace.is_empty());
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
    }
}

#[test]
fn same_seed_same_faults() {
    for seed in SEEDS {
        let (a, b) = twice(seed, true);
        assert_eq!(a.plan, b.plan, "seed {seed}");
        assert_eq!(
            before_first_fault(&a),
            before_first_fault(&b),
            "seed {seed}"
        );
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
    }
}

/// A proxy crash was the last source of in-process divergence (see the sim crate docs).
fn crashes_proxy(report: &SeedReport) -> bool {
    report
        .plan
        .faults
        .iter()
        .any(|s| matches!(s.fault, Fault::CrashProxy { .. }))
}

/// Goal: the tunnel edge adds no nondeterminism (its kill switch and pipe selects once drew
/// from tokio's unseeded RNG). Method: tunnel seeds whose plans kill tunnels or revoke the
/// token, run twice in this process must give identical traces.
#[test]
fn tunnel_seeds_replay_exactly() {
    let scenario = Scenario::tunnel();
    let mut compared = 0;
    for seed in 1..=40 {
        let a = run_seed(seed, &scenario, true, false);
        let edge_faults = a.plan.faults.iter().any(|s| {
            matches!(
                s.fault,
                Fault::KillTunnels | Fault::RevokeToken { .. } | Fault::CrashEdge { .. }
            )
        });
        if !edge_faults {
            continue;
        }
        let b = run_seed(seed, &scenario, true, false);
        assert_eq!(a.trace_hash, b.trace_hash, "tunnel seed {seed}");
        compared += 1;
        if compared == 6 {
            break;
        }
    }
    assert!(compared >= 3, "only {compared} tunnel seeds compared");
}

#[test]
fn different_seeds_differ() {
    let scenario = Scenario::quick();
    let a = run_seed(1, &scenario, false, false);
    let b = run_seed(2, &scenario, false, false);
    assert_ne!(a.trace_hash, b.trace_hash);
}

/// Goal: a proxy crash replays exactly (its sessions used to be dropped in an order set by
/// process-wide task ids). Method: standard seeds whose plans crash the proxy, run twice in
/// this process, must give identical traces.
#[test]
fn proxy_crash_seeds_replay_exactly() {
    let scenario = Scenario::quick();
    let mut compared = 0;
    for seed in 1..=60 {
        let a = run_seed(seed, &scenario, true, false);
        if !crashes_proxy(&a) {
            continue;
        }
        let b = run_seed(seed, &scenario, true, false);
        assert_eq!(a.trace_hash, b.trace_hash, "proxy-crash seed {seed}");
        compared += 1;
        if compared == 4 {
            break;
        }
    }
    assert!(compared >= 2, "only {compared} proxy-crash seeds compared");
}
