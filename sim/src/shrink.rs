//! Shrinking: a failing seed's fault plan reduced to the fewest faults that still fail, and
//! the reproducer that records it.
//!
//! Why delta debugging over the plan and not over the seed: the seed fixes everything else
//! (latencies, the clients' choices, hostile operations), and each fault is drawn from its
//! own stream, so running the seed with a subset of its faults is the same world minus
//! those faults. A reader of a two-fault reproducer knows which two events matter.
//!
//! The algorithm is ddmin restricted to complements (Zeller): split the current fault list
//! into `n` chunks, keep the first complement that still fails (and coarsen), otherwise refine
//! until chunks are single faults; the result is 1-minimal — removing any one remaining
//! fault makes the failure go away. Before that it tries the seed with no network faults
//! and no hostile clients at all (`--faults off`), then with an empty plan. "Still fails"
//! means a violation of one of the invariants the original run violated, so shrinking does
//! not wander to another failure. Every attempt is one full run of the seed, bounded by
//! [`MAX_SHRINK_RUNS`].
//!
//! Without `--cfg tokio_unstable` a rerun may take another branch at a select tie (see the
//! crate docs), so an attempt can fail or pass by chance; the shrunk reproducer is therefore
//! run once more and reported as reproduced or not.
//!
//! Reproducers are one line of `testdata/sim/regression-seeds.txt`:
//! `SEED SCENARIO on|off [keep=I,J,...|keep=none] [bug=NAME ...]  # why`.

use crate::invariants::Invariant;
use crate::runner::{RunOptions, SeedReport, run_seed_with};
use crate::scenario::Scenario;
use reference_proxy::buggify::Bug;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Most runs one shrink may spend.
pub const MAX_SHRINK_RUNS: usize = 48;

/// The regression seed list, relative to the repository root.
pub const REGRESSION_SEEDS: &str = "testdata/sim/regression-seeds.txt";

/// A seed, its scenario, and what to run of it: enough to replay a failure exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproducer {
    /// The seed.
    pub seed: u64,
    /// Scenario name.
    pub scenario: String,
    /// Network faults and hostile clients.
    pub faults: bool,
    /// Positions in the seed's fault plan to run; `None`: the whole plan.
    pub keep_faults: Option<Vec<usize>>,
    /// Planted bugs (replayed only in `buggify` builds).
    pub bugs: Vec<Bug>,
}

impl Reproducer {
    /// The reproducer of a run.
    pub fn of(report: &SeedReport) -> Self {
        Reproducer {
            seed: report.seed,
            scenario: report.scenario.clone(),
            faults: report.faults,
            keep_faults: report.kept_faults.clone(),
            bugs: report.bugs.clone(),
        }
    }

    /// How to run it.
    pub fn options(&self, keep_trace: bool) -> RunOptions {
        RunOptions {
            faults: self.faults,
            keep_trace,
            wire: false,
            keep_faults: self.keep_faults.clone(),
            print_logs: None,
        }
    }

    /// Its scenario.
    pub fn scenario(&self) -> Option<Scenario> {
        Scenario::named(&self.scenario)
    }

    /// The exact command that replays it.
    pub fn replay_command(&self) -> String {
        let mut command = if self.bugs.is_empty() {
            format!("just sim-replay {}", self.seed)
        } else {
            // `just sim-replay` builds without planted bugs.
            format!(
                "cargo run --release -p sim --features buggify -- replay {}",
                self.seed
            )
        };
        if self.scenario != Scenario::standard().name {
            let _ = write!(command, " --scenario {}", self.scenario);
        }
        if !self.faults {
            command.push_str(" --faults off");
        }
        if let Some(keep) = &self.keep_faults {
            let _ = write!(command, " --keep-faults {}", render_keep(keep));
        }
        for bug in &self.bugs {
            let _ = write!(command, " --buggify {}", bug.name());
        }
        command
    }

    /// Its line in the regression seed list (without the comment).
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} {} {}",
            self.seed,
            self.scenario,
            if self.faults { "on" } else { "off" }
        );
        if let Some(keep) = &self.keep_faults {
            let _ = write!(line, " keep={}", render_keep(keep));
        }
        for bug in &self.bugs {
            let _ = write!(line, " bug={}", bug.name());
        }
        line
    }

    /// Parses a line of the regression seed list; `None` for comments, blank lines and
    /// malformed lines (the list's own test checks that every non-comment line parses).
    pub fn parse(line: &str) -> Option<(Reproducer, String)> {
        let (fields, why) = line.split_once('#').unwrap_or((line, ""));
        let mut fields = fields.split_whitespace();
        let seed = fields.next()?.parse().ok()?;
        let scenario = Scenario::named(fields.next()?)?.name.to_string();
        let faults = match fields.next()? {
            "on" => true,
            "off" => false,
            _ => return None,
        };
        let mut reproducer = Reproducer {
            seed,
            scenario,
            faults,
            keep_faults: None,
            bugs: Vec::new(),
        };
        for field in fields {
            if let Some(keep) = field.strip_prefix("keep=") {
                reproducer.keep_faults = Some(parse_keep(keep)?);
            } else if let Some(bug) = field.strip_prefix("bug=") {
                reproducer.bugs.push(Bug::named(bug)?);
            } else {
                return None;
            }
        }
        Some((reproducer, why.trim().to_string()))
    }
}

/// `[0, 2]` → `0,2`; `[]` → `none`.
pub fn render_keep(keep: &[usize]) -> String {
    if keep.is_empty() {
        return "none".into();
    }
    keep.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `0,2` → `[0, 2]`; `none` → `[]`.
pub fn parse_keep(text: &str) -> Option<Vec<usize>> {
    if text == "none" {
        return Some(Vec::new());
    }
    text.split(',').map(|index| index.parse().ok()).collect()
}

/// The outcome of shrinking one failing seed.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The smallest failing configuration found.
    pub reproducer: Reproducer,
    /// Its failing run.
    pub report: SeedReport,
    /// Faults in the seed's original plan.
    pub original_faults: usize,
    /// Runs spent.
    pub runs: usize,
}

impl Shrunk {
    /// Faults left in the reproducer.
    pub fn faults_left(&self) -> usize {
        self.report.plan.faults.len()
    }
}

/// Shrinks `failing` (a failed run of `scenario`) to a minimal fault plan.
pub fn shrink(failing: &SeedReport, scenario: &Scenario) -> Shrunk {
    let targets: BTreeSet<Invariant> = failing
        .verdict
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    let original = Reproducer::of(failing);
    let original_faults = failing.plan.faults.len();
    let mut attempt = Attempt {
        scenario,
        targets,
        runs: 0,
        best: (original.clone(), failing.clone()),
    };
    if original.faults
        && attempt.fails(Reproducer {
            faults: false,
            keep_faults: None,
            ..original.clone()
        })
    {
        return attempt.finish(original_faults);
    }
    let current: Vec<usize> = match &original.keep_faults {
        Some(keep) => keep.clone(),
        None => (0..original_faults).collect(),
    };
    let with = |keep: &[usize]| Reproducer {
        keep_faults: Some(keep.to_vec()),
        ..original.clone()
    };
    if !current.is_empty() && attempt.fails(with(&[])) {
        return attempt.finish(original_faults);
    }
    minimize(current, |keep| attempt.fails(with(keep)));
    attempt.finish(original_faults)
}

/// ddmin over complements: the smallest subsequence of `items` found for which `fails`
/// holds, assuming it holds for `items`. 1-minimal when the budget of `fails` (enforced by
/// the caller, whose `fails` answers false once spent) was not exhausted.
pub fn minimize(mut current: Vec<usize>, mut fails: impl FnMut(&[usize]) -> bool) -> Vec<usize> {
    let mut chunks = 2;
    while current.len() >= 2 {
        let size = current.len().div_ceil(chunks);
        let mut reduced = false;
        for start in (0..current.len()).step_by(size) {
            let complement: Vec<usize> = current
                .iter()
                .enumerate()
                .filter(|(position, _)| *position < start || *position >= start + size)
                .map(|(_, index)| *index)
                .collect();
            if fails(&complement) {
                current = complement;
                chunks = (chunks - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if chunks >= current.len() {
                break;
            }
            chunks = (chunks * 2).min(current.len());
        }
    }
    current
}

struct Attempt<'a> {
    scenario: &'a Scenario,
    targets: BTreeSet<Invariant>,
    runs: usize,
    best: (Reproducer, SeedReport),
}

impl Attempt<'_> {
    /// Runs `candidate`; true (and remembered as the best so far) when it fails alike.
    fn fails(&mut self, candidate: Reproducer) -> bool {
        if self.runs >= MAX_SHRINK_RUNS {
            return false;
        }
        self.runs += 1;
        let report = run_seed_with(candidate.seed, self.scenario, candidate.options(false));
        let alike = report
            .verdict
            .violations
            .iter()
            .any(|v| self.targets.contains(&v.invariant));
        if alike {
            self.best = (candidate, report);
        }
        alike
    }

    fn finish(self, original_faults: usize) -> Shrunk {
        let (reproducer, report) = self.best;
        Shrunk {
            reproducer,
            report,
            original_faults,
            runs: self.runs,
        }
    }
}

/// The regression seed list of the repository this binary was built from.
pub fn regression_seeds_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REGRESSION_SEEDS)
}

/// Every reproducer in the regression seed list, with its comment.
pub fn regression_seeds() -> std::io::Result<Vec<(Reproducer, String)>> {
    let text = std::fs::read_to_string(regression_seeds_path())?;
    Ok(text.lines().filter_map(Reproducer::parse).collect())
}

/// Adds a reproducer to the regression seed list unless it is there already; true when added.
pub fn record(reproducer: &Reproducer, why: &str) -> std::io::Result<bool> {
    let known = regression_seeds()?;
    if known.iter().any(|(existing, _)| existing == reproducer) {
        return Ok(false);
    }
    let mut text = std::fs::read_to_string(regression_seeds_path())?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(text, "{}  # {}", reproducer.line(), why.replace('\n', " "));
    std::fs::write(regression_seeds_path(), text)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let reproducer = Reproducer {
            seed: 17,
            scenario: "quick".into(),
            faults: true,
            keep_faults: Some(vec![0, 2]),
            bugs: vec![Bug::SkipResetOnReturn],
        };
        let line = format!("{}  # why", reproducer.line());
        assert_eq!(line, "17 quick on keep=0,2 bug=skip-reset  # why");
        assert_eq!(Reproducer::parse(&line), Some((reproducer, "why".into())));
        let plain = Reproducer::parse("13 standard on  # old format").map(|(r, _)| r);
        assert_eq!(plain.and_then(|r| r.keep_faults), None);
        assert_eq!(parse_keep("none"), Some(vec![]));
        assert_eq!(Reproducer::parse("13 standard on keep=x"), None);
        assert_eq!(Reproducer::parse("# comment"), None);
    }

    #[test]
    fn minimize_finds_the_faults_that_matter() {
        // Fails only when faults 1 and 5 both run (a crash and the partition after it).
        let needs = |keep: &[usize]| keep.contains(&1) && keep.contains(&5);
        let mut runs = 0;
        let found = minimize((0..8).collect(), |keep| {
            runs += 1;
            needs(keep)
        });
        assert_eq!(found, vec![1, 5]);
        assert!(runs <= 8 * 8, "{runs} runs");
        // Any one of several faults suffices: one is kept.
        assert_eq!(
            minimize((0..6).collect(), |keep| keep.contains(&3)
                || keep.contains(&4))
            .len(),
            1
        );
        assert_eq!(minimize(vec![2], |_| true), vec![2]);
    }

    #[test]
    fn replay_commands_are_exact() {
        let mut reproducer = Reproducer {
            seed: 5,
            scenario: "standard".into(),
            faults: true,
            keep_faults: Some(vec![]),
            bugs: Vec::new(),
        };
        assert_eq!(
            reproducer.replay_command(),
            "just sim-replay 5 --keep-faults none"
        );
        reproducer.bugs.push(Bug::CancelWrongConnection);
        assert_eq!(
            reproducer.replay_command(),
            "cargo run --release -p sim --features buggify -- replay 5 --keep-faults none --buggify cancel-wrong-connection"
        );
    }
}
