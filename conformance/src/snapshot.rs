//! Comparing normalized traces with their reviewed snapshots, collecting every difference of an
//! arm before failing once.
//!
//! Why our own comparison in front of insta: insta's assertion panics at the first mismatch,
//! and an arm that breaks usually breaks many transcripts at once — the reader wants all of
//! them, each with a line diff, in one failure. So each trace is compared with the snapshot
//! file's body here (diffed with `similar`), and only a mismatch calls insta, inside
//! `catch_unwind`, so that insta still writes its `.snap.new` for `cargo insta review` (or
//! updates the file under `INSTA_UPDATE=always`; CI runs with `INSTA_UPDATE=no`).

use crate::runner::{Line, RunFailure};
use similar::TextDiff;
use std::path::{Path, PathBuf};

/// Snapshot directory, relative to the workspace root.
pub const SNAPSHOT_DIR: &str = "testdata/snapshots/conformance";

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The snapshot file of `name`.
pub fn snapshot_file(name: &str) -> PathBuf {
    workspace_root()
        .join(SNAPSHOT_DIR)
        .join(format!("{name}.snap"))
}

/// The body of an insta snapshot file (after its `---` metadata header), if it exists.
pub fn read_snapshot(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(snapshot_file(name)).ok()?;
    let rest = text.strip_prefix("---\n")?;
    let (_, body) = rest.split_once("\n---\n")?;
    Some(body.to_string())
}

/// Every password and token secret the arms use: none may ever appear in a trace (the trace
/// format renders passwords, SASL payloads and cancel keys only by length).
fn secrets() -> Vec<&'static str> {
    let mut secrets: Vec<&'static str> = fixtures::Role::ALL
        .iter()
        .map(|role| role.password())
        .filter(|password| !password.is_empty())
        .collect();
    secrets.extend([crate::real::TOKEN_SECRET, crate::access::NEW_TOKEN_SECRET]);
    secrets
}

/// Collects the failures of one arm.
pub struct Checker {
    arm: String,
    checked: usize,
    failures: Vec<String>,
}

impl Checker {
    /// A checker for the arm called `arm` (used in messages).
    pub fn new(arm: &str) -> Self {
        Checker {
            arm: arm.to_string(),
            checked: 0,
            failures: Vec::new(),
        }
    }

    /// Compares one run with the snapshot `snapshot` (a transcript name, with `@kind` for
    /// per-arm snapshots); returns whether it matched.
    pub fn check(&mut self, snapshot: &str, result: Result<Vec<Line>, RunFailure>) -> bool {
        self.checked += 1;
        match result {
            Ok(lines) => {
                let trace = crate::normalize::normalize(&lines);
                if let Some(secret) = secrets().into_iter().find(|s| trace.contains(s)) {
                    self.failures.push(format!(
                        "[{}] {snapshot}: a secret ({} characters) appears in the trace",
                        self.arm,
                        secret.len()
                    ));
                    return false;
                }
                self.compare(snapshot, &trace)
            }
            Err(failure) => {
                self.fail_run(snapshot, failure);
                false
            }
        }
    }

    /// Records a failure that is not a trace difference (setup, exclusion list, ...).
    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Takes over another checker's results (one report for several arms).
    pub fn absorb(&mut self, other: Checker) {
        self.checked += other.checked;
        self.failures.extend(other.failures);
    }

    /// Whether a normalized trace equals the snapshot, without recording anything.
    pub fn matches(snapshot: &str, lines: &[Line]) -> bool {
        read_snapshot(snapshot)
            .is_some_and(|body| body.trim_end() == crate::normalize::normalize(lines).trim_end())
    }

    fn compare(&mut self, snapshot: &str, actual: &str) -> bool {
        let expected = read_snapshot(snapshot);
        if expected
            .as_deref()
            .is_some_and(|body| body.trim_end() == actual.trim_end())
        {
            return true;
        }
        let diff = match &expected {
            Some(body) => line_diff(body.trim_end(), actual.trim_end()),
            None => format!("no snapshot yet; the trace is:\n{actual}"),
        };
        self.failures.push(format!(
            "[{}] {snapshot}: the normalized trace differs from {}\n{diff}",
            self.arm,
            snapshot_file(snapshot).display()
        ));
        write_pending(snapshot, actual);
        false
    }

    fn fail_run(&mut self, snapshot: &str, failure: RunFailure) {
        let trace: Vec<String> = failure
            .trace
            .iter()
            .map(|l| crate::normalize::normalize_line(&l.text))
            .collect();
        let at = match failure.line {
            0 => String::new(),
            line => format!(" (transcript line {line})"),
        };
        self.failures.push(format!(
            "[{}] {snapshot}: could not run{at}: {}\n  trace so far:\n    {}",
            self.arm,
            failure.message,
            trace.join("\n    ")
        ));
    }

    /// Panics with every failure if there was any.
    pub fn finish(self) {
        assert!(
            self.checked > 0 || !self.failures.is_empty(),
            "[{}] no transcript was checked",
            self.arm
        );
        if !self.failures.is_empty() {
            panic!(
                "{} of {} transcript run(s) failed in arm {}:\n\n{}",
                self.failures.len(),
                self.checked,
                self.arm,
                self.failures.join("\n\n")
            );
        }
    }
}

/// A unified line diff: `-` expected (the snapshot), `+` actual.
pub fn line_diff(expected: &str, actual: &str) -> String {
    let (expected, actual) = (format!("{expected}\n"), format!("{actual}\n"));
    TextDiff::from_lines(&expected, &actual)
        .unified_diff()
        .context_radius(3)
        .header("snapshot", "this run")
        .to_string()
}

/// Lets insta write its pending snapshot (`.snap.new`, or the file itself under
/// `INSTA_UPDATE=always`); insta's own panic is caught because the checker reports.
fn write_pending(snapshot: &str, actual: &str) {
    let directory = workspace_root().join(SNAPSHOT_DIR);
    let actual = actual.to_string();
    let name = snapshot.to_string();
    let _ = std::panic::catch_unwind(move || {
        insta::with_settings!({
            snapshot_path => directory,
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, actual);
        });
    });
}
