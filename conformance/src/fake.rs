//! The simulator's arms: the fake Postgres of `sim::fake_pg` directly, and the real proxy in
//! front of it, all inside one turmoil simulation.
//!
//! Why inside turmoil even for the direct arm: the fake is what the simulator trusts, so it is
//! checked on the network the simulator uses; and simulated time makes the waits of
//! transcripts the fake cannot answer cost nothing, so the exclusion list can be verified on
//! every run (an excluded transcript that starts to match fails the suite: the list only
//! shrinks).
//!
//! The fake serves one role per server, so there is one fake host per role the fake supports
//! (scram, md5, trust), configured with the fixtures role's name and password and the fixtures
//! database, and one proxy host per role and set of extra flags.

use crate::real::auth_flags;
use crate::runner::{self, Line, Login, RunFailure};
use crate::snapshot::{Checker, workspace_root};
use crate::suite::{corpus, snapshot_name};
use crate::transcript::{RoleName, Transcript};
use fixtures::Role;
use rand_core::SeedableRng;
use reference_proxy::metrics::Metrics;
use reference_proxy::server::{build_context, serve};
use reference_proxy::stream::Dialer;
use sim::fake_pg::{FakeAuth, FakePgConfig, FakePostgres};
use sim::net::{SessionCounter, TurmoilDialer, TurmoilListener};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The exclusion list, relative to the workspace root.
pub const EXCLUSIONS_FILE: &str = "testdata/conformance/fake-exclusions.txt";
/// Port of every fake host.
const FAKE_PORT: u16 = 5432;
/// Port of every proxy host.
const PROXY_PORT: u16 = 6432;
/// Simulated time the whole corpus may take.
const SIMULATED_LIMIT: Duration = Duration::from_secs(4 * 3600);
/// PBKDF2 iterations of the fake's SCRAM secret: Postgres's own count, so the SASL messages
/// have the lengths Postgres's have.
const SCRAM_ITERATIONS: u32 = 4096;

/// One entry of the exclusion list: transcript names or `prefix*` patterns (comma-separated),
/// and why.
#[derive(Debug, Clone)]
pub struct Exclusion {
    /// Names or `prefix*` patterns, comma-separated.
    pub pattern: String,
    /// Why the fake does not match there.
    pub reason: String,
}

impl Exclusion {
    /// Whether this entry covers the transcript `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.pattern
            .split(',')
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

/// Reads the exclusion list; every entry must have a reason.
pub fn exclusions() -> Vec<Exclusion> {
    let path = workspace_root().join(EXCLUSIONS_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(index, line)| {
            let (pattern, reason) =
                line.trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or_else(|| {
                        panic!("{}:{}: an entry needs a reason", path.display(), index + 1)
                    });
            Exclusion {
                pattern: pattern.to_string(),
                reason: reason.trim().to_string(),
            }
        })
        .collect()
}

fn fake_auth(role: RoleName) -> Option<FakeAuth> {
    match role {
        RoleName::Scram => Some(FakeAuth::Scram {
            iterations: SCRAM_ITERATIONS,
        }),
        RoleName::Md5 => Some(FakeAuth::Md5),
        RoleName::Trust => Some(FakeAuth::Trust),
        RoleName::Cleartext => None,
    }
}

fn fixture_user(role: RoleName) -> Role {
    crate::real::fixture_role(role)
}

fn fake_host(role: RoleName) -> String {
    format!("fake-{}", role.as_str())
}

fn login(transcript: &Transcript) -> Login {
    let role = fixture_user(transcript.role);
    let user = role
        .fixed_name()
        .unwrap_or(fixtures::DEFAULT_SUPERUSER)
        .to_string();
    Login {
        user: transcript.user.clone().unwrap_or(user),
        password: Some(
            transcript
                .password
                .clone()
                .unwrap_or_else(|| role.password().to_string()),
        ),
        database: fixtures::DEFAULT_DATABASE.to_string(),
        parameters: transcript.startup_parameters(),
    }
}

async fn serve_fake(fake: FakePostgres) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", FAKE_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let fake = fake.clone();
        tokio::spawn(async move { fake.serve_connection(stream).await });
    }
}

fn add_fake(sim: &mut turmoil::Sim<'static>, role: RoleName, auth: FakeAuth) {
    let fixture = fixture_user(role);
    let fake = FakePostgres::new(FakePgConfig {
        user: fixture.fixed_name().unwrap_or_default().to_string(),
        password: fixture.password().to_string(),
        auth,
        database: fixtures::DEFAULT_DATABASE.to_string(),
        max_connections: 100,
        accounts: 4,
        initial_balance: 100,
        seed: 6,
        wire_tap: None,
    });
    sim.host(fake_host(role), move || serve_fake(fake.clone()));
}

/// Adds a proxy host in front of the fake of `role`, with `extra` flags.
fn add_proxy(sim: &mut turmoil::Sim<'static>, host: &str, role: RoleName, extra: &[String]) {
    let fixture = fixture_user(role);
    let origin = format!(
        "postgres://{}:{}@{}:{FAKE_PORT}/{}?sslmode=disable",
        fixture.fixed_name().unwrap_or_default(),
        fixture.password(),
        fake_host(role),
        fixtures::DEFAULT_DATABASE
    );
    let mut argv = vec!["reference-proxy".to_string(), "--origin".into(), origin];
    argv.extend(auth_flags(role));
    argv.extend(extra.iter().cloned());
    let config = reference_proxy::config::load_from_args(argv).expect("valid proxy flags");
    let fake = fake_host(role);
    sim.host(host, move || {
        let (config, fake) = (config.clone(), fake.clone());
        async move {
            let metrics = Metrics::new()?;
            let (_stop, shutdown) = watch::channel(false);
            let counter = Arc::new(SessionCounter::default());
            let dialer = Arc::new(TurmoilDialer::new(fake, FAKE_PORT, counter));
            let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(6));
            let context = build_context(&config, dialer, rng, metrics, shutdown)?;
            serve(
                context,
                TurmoilListener::bind(PROXY_PORT).await?,
                Duration::from_secs(1),
            )
            .await;
            Ok(())
        }
    });
}

/// One run's outcome: (transcript name, arm, snapshot, result).
type Outcome = (String, &'static str, String, Result<Vec<Line>, RunFailure>);

/// Runs the corpus (minus scenarios and cleartext logins, which the fake cannot serve) in both
/// fake arms and checks it against the snapshots and the exclusion list.
pub fn run_fake_arms() {
    let (transcripts, unservable): (Vec<Transcript>, Vec<Transcript>) = corpus()
        .into_iter()
        .filter(|t| t.scenario.is_none())
        .partition(|t| fake_auth(t.role).is_some());
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SIMULATED_LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .build();
    for role in [RoleName::Scram, RoleName::Md5, RoleName::Trust] {
        add_fake(&mut sim, role, fake_auth(role).expect("supported"));
    }
    let mut proxies: BTreeMap<(RoleName, Vec<String>), String> = BTreeMap::new();
    for t in &transcripts {
        let key = (t.role, t.proxy_args.clone());
        if !proxies.contains_key(&key) {
            let host = format!("proxy-{}", proxies.len());
            add_proxy(&mut sim, &host, t.role, &t.proxy_args);
            proxies.insert(key, host);
        }
    }
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let (shared, list) = (outcomes.clone(), transcripts.clone());
    sim.client("conformance", async move {
        for t in &list {
            let proxy = proxies[&(t.role, t.proxy_args.clone())].clone();
            for (arm, host, port) in [
                ("fake", fake_host(t.role), FAKE_PORT),
                ("fake-proxy", proxy, PROXY_PORT),
            ] {
                let kind = if arm == "fake" { "direct" } else { "proxy" };
                let dialer: Arc<dyn Dialer> = Arc::new(TurmoilDialer::new(
                    host,
                    port,
                    Arc::new(SessionCounter::default()),
                ));
                let result = run_one(t, dialer).await;
                let outcome = (t.name.clone(), arm, snapshot_name(t, kind), result);
                shared.lock().expect("outcomes").push(outcome);
            }
        }
        Ok(())
    });
    if let Err(error) = sim.run() {
        panic!("the simulation failed: {error}");
    }
    let mut outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    for t in unservable {
        // Not run: the fake has no cleartext method. They must be on the list like any other
        // transcript the fake cannot answer.
        let failure = RunFailure {
            line: 0,
            message: format!("the fake cannot log in role {}", t.role.as_str()),
            trace: Vec::new(),
        };
        outcomes.push((t.name.clone(), "fake", t.name.clone(), Err(failure)));
    }
    check(outcomes, &exclusions());
}

async fn run_one(t: &Transcript, dialer: Arc<dyn Dialer>) -> Result<Vec<Line>, RunFailure> {
    let login = login(t);
    for sql in &t.setup {
        if let Err(message) = runner::setup(sql, &login, dialer.clone(), t.timeout).await {
            return Err(RunFailure {
                line: 0,
                message: format!("setup failed: {message}"),
                trace: Vec::new(),
            });
        }
    }
    runner::run(t, &login, dialer, None).await
}

/// Included transcripts must match; excluded ones must still differ in some arm (else the
/// entry is stale); every entry must cover some transcript.
fn check(outcomes: Vec<Outcome>, exclusions: &[Exclusion]) {
    let mut checker = Checker::new("fake");
    let mut excluded_matches: BTreeMap<String, bool> = BTreeMap::new();
    for (name, arm, snapshot, result) in outcomes {
        match exclusions.iter().find(|e| e.covers(&name)) {
            None => {
                let mut arm_checker = Checker::new(arm);
                arm_checker.check(&snapshot, result);
                checker.absorb(arm_checker);
            }
            Some(_) => {
                let matched = result.is_ok_and(|lines| Checker::matches(&snapshot, &lines));
                *excluded_matches.entry(name).or_insert(true) &= matched;
            }
        }
    }
    for (name, matched) in &excluded_matches {
        if *matched {
            checker.fail(format!(
                "{name} is excluded in {EXCLUSIONS_FILE} but now matches in both fake arms: \
                 remove or narrow its entry"
            ));
        }
    }
    for pattern in exclusions.iter().flat_map(|e| e.pattern.split(',')) {
        let single = Exclusion {
            pattern: pattern.to_string(),
            reason: String::new(),
        };
        if !excluded_matches.keys().any(|name| single.covers(name)) {
            checker.fail(format!(
                "{EXCLUSIONS_FILE}: `{pattern}` covers no transcript the fake arms run"
            ));
        }
    }
    checker.finish();
}
