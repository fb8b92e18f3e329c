//! Goal: every snapshot file belongs to a transcript, so a renamed or deleted transcript
//! cannot leave a stale snapshot behind, and no unreviewed `.snap.new` is left over.
//! Method: list `testdata/snapshots/conformance/` and match each file against the corpus:
//! `NAME.snap` needs a transcript `NAME` that is not per-arm, `NAME@KIND.snap` a per-arm one
//! with KIND `direct` or `proxy` (scenario transcripts are never per-arm).

use conformance::snapshot::{SNAPSHOT_DIR, workspace_root};
use conformance::suite::corpus;

#[test]
fn every_snapshot_belongs_to_a_transcript() {
    let transcripts = corpus();
    let dir = workspace_root().join(SNAPSHOT_DIR);
    let mut problems = Vec::new();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("snapshot directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for file in &files {
        let Some(stem) = file.strip_suffix(".snap") else {
            problems.push(format!(
                "{file}: not a reviewed snapshot (run `just review`)"
            ));
            continue;
        };
        let (name, kind) = match stem.split_once('@') {
            Some((name, kind)) => (name, Some(kind)),
            None => (stem, None),
        };
        let owner = transcripts.iter().find(|t| t.name == name);
        let fits = match (owner, kind) {
            (None, _) => false,
            (Some(t), None) => !t.per_arm,
            (Some(t), Some(kind)) => t.per_arm && matches!(kind, "direct" | "proxy"),
        };
        if !fits {
            problems.push(format!(
                "{file}: no transcript in the corpus uses this snapshot"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "unreferenced snapshots in {}:\n{}",
        dir.display(),
        problems.join("\n")
    );
    assert!(
        !files.is_empty(),
        "no snapshots at all in {}",
        dir.display()
    );
}
