//! Same seed, same trace. Without faults this holds in every build. With faults it holds
//! exactly only when tokio's `select!` RNG is seeded (`--cfg tokio_unstable`); otherwise the
//! fault plan and everything before the first fault must still be identical.

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
        if cfg!(tokio_unstable) {
            assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        }
    }
}

#[test]
fn different_seeds_differ() {
    let scenario = Scenario::quick();
    let a = run_seed(1, &scenario, false, false);
    let b = run_seed(2, &scenario, false, false);
    assert_ne!(a.trace_hash, b.trace_hash);
}
