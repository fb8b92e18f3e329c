//! Goal: the commands the simulator prints for a failure actually run. A shrunk reproducer is
//! printed as `just sim-replay SEED --keep-faults ...`; that flag once failed to parse (clap
//! read `Option<Vec<usize>>` as a repeated flag).
//! Method: run the built `sim` binary with the printed forms and check it replays.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("run the sim binary")
}

#[test]
fn replay_accepts_the_reproducer_forms_it_prints() {
    for keep in ["none", "0", "0,1"] {
        let output = sim(&["replay", "1", "--scenario", "quick", "--keep-faults", keep]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "replay 1 --keep-faults {keep} failed:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn replay_rejects_a_malformed_fault_list_with_a_message() {
    let output = sim(&["replay", "1", "--keep-faults", "x,y"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected fault positions"), "{stderr}");
}
