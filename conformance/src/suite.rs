//! The corpus and the drivers that run it through an arm and check every trace.

use crate::real::{RealArm, Route, login};
use crate::runner::{self, Login};
use crate::snapshot::{Checker, workspace_root};
use crate::transcript::{self, Transcript};
use fixtures::{Postgres, PostgresConfig, TestPki};
use reference_proxy::stream::Dialer;
use std::path::PathBuf;
use std::sync::Arc;

/// Transcript directory, relative to the workspace root.
pub const TRANSCRIPT_DIR: &str = "testdata/conformance/transcripts";

/// Every transcript, sorted by name; panics with the file and line of a mistake.
pub fn corpus() -> Vec<Transcript> {
    let dir: PathBuf = workspace_root().join(TRANSCRIPT_DIR);
    transcript::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The snapshot a transcript's trace is compared with in an arm of `kind` (`direct` or
/// `proxy`): one shared snapshot, or one per kind for `per-arm` transcripts.
pub fn snapshot_name(transcript: &Transcript, kind: &str) -> String {
    if transcript.per_arm {
        format!("{}@{kind}", transcript.name)
    } else {
        transcript.name.clone()
    }
}

/// Runs setup and transcript over `dialer` and checks the trace.
pub async fn run_and_check(
    checker: &mut Checker,
    transcript: &Transcript,
    login: &Login,
    dialer: Arc<dyn Dialer>,
    hooks: Option<runner::Hooks>,
    snapshot: &str,
) {
    for sql in &transcript.setup {
        if let Err(error) = runner::setup(sql, login, dialer.clone(), transcript.timeout).await {
            checker.fail(format!("{snapshot}: setup failed: {error}"));
            return;
        }
    }
    let result = runner::run(transcript, login, dialer, hooks).await;
    checker.check(snapshot, result);
}

/// The bank every arm has: the simulator's fake Postgres is born with these tables (accounts
/// `1..=4` holding 100 each, no transfers), so transcripts that read them can be compared with
/// the fake too. Created once per Postgres, before any transcript.
pub const BANK_SQL: &str = "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL); \
     INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 4) g; \
     CREATE TABLE transfers (id bigint PRIMARY KEY, from_id int NOT NULL, to_id int NOT NULL, \
     amount int NOT NULL); GRANT ALL ON accounts, transfers TO PUBLIC;";

/// Starts the native Postgres every real arm uses (TLS on, for Postgres TLS inside the
/// tunnel); `None` when the binaries are missing (skips loudly; fails under `CI=true`).
pub fn postgres(test: &str) -> Option<(Postgres, TestPki)> {
    let pki = TestPki::generate().expect("test PKI");
    let pg = Postgres::start_or_skip(test, PostgresConfig::default().with_tls(&pki))?;
    pg.psql(fixtures::Role::Superuser, BANK_SQL)
        .expect("the bank tables");
    Some((pg, pki))
}

/// Runs every ordinary transcript (no scenario) meant for `route` against a fresh Postgres.
pub async fn run_real_arm(route: Route) {
    let Some((pg, _pki)) = postgres(&format!("conformance_{}", route.name())) else {
        return;
    };
    let mut arm = RealArm::new(&pg, route).await.expect("arm starts");
    let mut checker = Checker::new(route.name());
    for transcript in corpus() {
        if transcript.scenario.is_some() || !transcript.runs_in(route.name()) {
            continue;
        }
        let snapshot = snapshot_name(&transcript, route.kind());
        let dialer = match arm.dialer(&transcript).await {
            Ok(dialer) => dialer,
            Err(error) => {
                checker.fail(format!("{snapshot}: {error}"));
                continue;
            }
        };
        let login = login(&pg, &transcript);
        run_and_check(&mut checker, &transcript, &login, dialer, None, &snapshot).await;
    }
    checker.finish();
}
