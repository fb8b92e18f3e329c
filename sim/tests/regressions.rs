//! Reproductions of proxy bugs the simulator found: a scripted session (deterministic, no
//! faults) and the seeds listed in `testdata/sim/regression-seeds.txt`.
//!
//! A reproduction is `#[ignore]`d while the bug it reproduces is open; run it with
//! `cargo test -p sim --test regressions -- --ignored`, and un-ignore it with the fix.

use elephant_protocol::FrontendMessage;
use sim::fake_pg::FakePostgres;
use sim::net::SessionCounter;
use sim::raw::{self, Login, RawClient};
use sim::runner::run_seed_with;
use sim::scenario::Scenario;
use sim::shrink::Reproducer;
use sim::world::{self, DATABASE, PASSWORD, USER};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the scripted session may take in simulated time.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);
/// How often the victim looks whether the attacker is done.
const POLL: Duration = Duration::from_millis(10);
/// Both clients use this `application_name`, so the proxy sees identical settings.
const SAME_SETTINGS: &str = "same-app";

async fn connect() -> Result<tokio_postgres::Client, Box<dyn std::error::Error>> {
    let stream = turmoil::net::TcpStream::connect(("proxy", sim::workload::PROXY_PORT)).await?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(USER)
        .password(PASSWORD)
        .dbname(DATABASE)
        .application_name(SAME_SETTINGS);
    let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn statement_timeout(client: &tokio_postgres::Client) -> String {
    let rows = client
        .simple_query("SHOW statement_timeout")
        .await
        .expect("SHOW works");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// Client A prepares `SET statement_timeout = '1234ms'` in one transaction and executes it
/// in a later one. The proxy used to decide whether a connection needs a reset from the SQL
/// text of Parse and Query messages only, so the second transaction — a Bind/Execute of an
/// existing statement — did not mark the connection dirty, and it went back to the pool with
/// A's setting; client B, with the same startup settings and a pool of one, then got that
/// connection without a reset and ran with A's statement_timeout. (Fixed in 6e85bba.)
#[test]
fn prepared_set_does_not_leak_into_the_next_session() {
    let scenario = Scenario {
        pool_size: 1,
        ..Scenario::quick()
    };
    let seed = 1;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SCRIPT_LIMIT)
        .rng_seed(seed)
        .build();
    let fake = FakePostgres::new(world::origin_config(seed, &scenario));
    world::add_origin(&mut sim, &fake);
    world::add_proxy(
        &mut sim,
        seed,
        &scenario,
        Arc::new(SessionCounter::default()),
        None,
    )
    .expect("proxy configuration");
    let attacker_done = Arc::new(AtomicBool::new(false));
    let seen = Rc::new(std::cell::RefCell::new(String::new()));

    let done = attacker_done.clone();
    sim.client("client-a", async move {
        let client = connect().await?;
        let set = client.prepare("SET statement_timeout = '1234ms'").await?;
        client.execute(&set, &[]).await?;
        done.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    });
    let victim_saw = seen.clone();
    sim.client("client-b", async move {
        while !attacker_done.load(Ordering::SeqCst) {
            tokio::time::sleep(POLL).await;
        }
        let client = connect().await?;
        *victim_saw.borrow_mut() = statement_timeout(&client).await;
        Ok(())
    });
    sim.run().expect("the scripted session runs");
    let expected = sim::fake_pg::show_milliseconds(scenario.statement_timeout_secs * 1000);
    assert_eq!(
        *seen.borrow(),
        expected,
        "client B saw client A's statement_timeout"
    );
}

/// Client A parses the unnamed statement in one transaction and binds it in a later one.
/// In between, client B — same startup settings, so the proxy runs no reset when the one
/// pooled connection changes hands — parses *its* unnamed statement on that connection. The
/// proxy remembers only which connection A's unnamed statement was last prepared on, not
/// that someone else has used that connection since, so it does not prepare A's statement
/// again: A's Bind runs B's SQL.
#[test]
fn unnamed_statement_is_never_another_sessions() {
    let scenario = Scenario {
        pool_size: 1,
        ..Scenario::quick()
    };
    let seed = 1;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(SCRIPT_LIMIT)
        .rng_seed(seed)
        .build();
    let fake = FakePostgres::new(world::origin_config(seed, &scenario));
    world::add_origin(&mut sim, &fake);
    world::add_proxy(
        &mut sim,
        seed,
        &scenario,
        Arc::new(SessionCounter::default()),
        None,
    )
    .expect("proxy configuration");
    let step = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let seen = Rc::new(std::cell::RefCell::new(Vec::new()));

    let (a_step, a_seen) = (step.clone(), seen.clone());
    sim.client("client-a", async move {
        let mut a = RawClient::connect(&login())
            .await
            .map_err(|e| format!("{e:?}"))?;
        exchange(
            &mut a,
            vec![raw::parse("", "SELECT 'a' AS owner"), FrontendMessage::Sync],
        )
        .await?;
        a_step.store(1, Ordering::SeqCst);
        wait_for(&a_step, 2).await;
        let answer = exchange(
            &mut a,
            vec![
                raw::bind("", "", &[]),
                raw::execute(),
                FrontendMessage::Sync,
            ],
        )
        .await?;
        *a_seen.borrow_mut() = raw::rows(&answer);
        Ok(())
    });
    sim.client("client-b", async move {
        wait_for(&step, 1).await;
        let mut b = RawClient::connect(&login())
            .await
            .map_err(|e| format!("{e:?}"))?;
        exchange(
            &mut b,
            vec![raw::parse("", "SELECT 'b' AS owner"), FrontendMessage::Sync],
        )
        .await?;
        step.store(2, Ordering::SeqCst);
        Ok(())
    });
    sim.run().expect("the scripted session runs");
    assert_eq!(
        *seen.borrow(),
        vec![vec!["a".to_string()]],
        "client A's Bind of its unnamed statement ran client B's statement"
    );
}

fn login() -> Login {
    Login {
        host: "proxy".into(),
        port: sim::workload::PROXY_PORT,
        user: USER.into(),
        password: PASSWORD.into(),
        database: DATABASE.into(),
        application_name: SAME_SETTINGS.into(),
    }
}

async fn wait_for(step: &std::sync::atomic::AtomicU8, value: u8) {
    while step.load(Ordering::SeqCst) < value {
        tokio::time::sleep(POLL).await;
    }
}

async fn exchange(
    client: &mut RawClient,
    messages: Vec<FrontendMessage>,
) -> Result<Vec<elephant_protocol::BackendMessage>, Box<dyn std::error::Error>> {
    client.send(&messages).await.map_err(|e| format!("{e:?}"))?;
    Ok(client.batch().await.map_err(|e| format!("{e:?}"))?)
}

/// Every line of `testdata/sim/regression-seeds.txt` (see [`sim::shrink`] for the format).
fn regression_seeds() -> Vec<(Reproducer, String)> {
    sim::shrink::regression_seeds().expect("regression seed list")
}

#[test]
fn regression_seed_list_parses() {
    let text = std::fs::read_to_string(sim::shrink::regression_seeds_path()).expect("list");
    for line in text.lines() {
        let entry = line.split('#').next().unwrap_or("").trim();
        assert!(
            entry.is_empty() || Reproducer::parse(line).is_some(),
            "malformed line: {line}"
        );
    }
    assert!(!regression_seeds().is_empty());
}

/// The listed seeds, with the fault subset each records, pass with every client behaviour
/// that once exposed a proxy bug. Lines that name a planted bug (`bug=`) were found with that
/// bug planted; here they run without it, as a correct proxy must pass them
/// (`tests/bites.rs` replays them with the bug).
#[test]
fn regression_seeds_pass() {
    reference_proxy::buggify::plant(&[]).expect("no bugs planted");
    let mut failed = Vec::new();
    for (entry, why) in regression_seeds() {
        let scenario = Scenario {
            known_bugs: true,
            ..entry.scenario().expect("known scenario")
        };
        let report = run_seed_with(entry.seed, &scenario, entry.options(false));
        if !report.passed() {
            failed.push(format!(
                "{} ({why}): {}",
                entry.line(),
                sim::report::failure(&report, None, None)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
