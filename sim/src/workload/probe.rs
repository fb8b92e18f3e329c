//! The recovery probe: after the workload and the faults, a fresh client must be served.

use super::{PROXY_PORT, classify, first_value, now};
use crate::invariants::Invariant;
use crate::trace::{Log, Observation, Outcome};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Host name of the recovery probe.
pub const PROBE_HOST: &str = "probe";
/// Pause between two attempts of the probe.
pub const PROBE_RETRY: Duration = Duration::from_millis(500);

/// What the recovery probe needs to know.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Host name of the proxy.
    pub proxy_host: String,
    /// Login.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database.
    pub database: String,
    /// First attempt at this simulated time (after the workload and the faults).
    pub start: Duration,
    /// Give up (a violation) after this simulated time.
    pub deadline: Duration,
    /// Bound of one attempt.
    pub call_timeout: Duration,
    /// What the bank must hold in total.
    pub total_balance: i64,
}

/// After the workload: a fresh client must get `SELECT sum(balance)` answered through the
/// proxy, and the sum must be the bank's total.
pub async fn probe(spec: ProbeSpec, log: Log) -> turmoil::Result {
    tokio::time::sleep(spec.start.saturating_sub(now())).await;
    let first = now();
    let mut last = String::from("no attempt");
    while now() <= spec.deadline {
        match tokio::time::timeout(spec.call_timeout, probe_once(&spec)).await {
            Ok(Ok(sum)) => {
                log.line(now(), format!("probe: proxy answers, total balance {sum}"));
                log.checked(Invariant::Recovers);
                log.checked(Invariant::BalanceConserved);
                if sum != spec.total_balance {
                    let detail = format!(
                        "the probe read a total balance of {sum} through the proxy; the bank holds {}",
                        spec.total_balance
                    );
                    log.observe(
                        now(),
                        Observation {
                            invariant: Invariant::BalanceConserved,
                            detail,
                        },
                    );
                }
                return Ok(());
            }
            Ok(Err(outcome)) => last = format!("{outcome:?}"),
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(PROBE_RETRY).await;
    }
    let detail = format!(
        "no fresh client got an answer through the proxy from {} to {}; last attempt: {last}",
        crate::faults::ms(first),
        crate::faults::ms(spec.deadline)
    );
    log.observe(
        now(),
        Observation {
            invariant: Invariant::Recovers,
            detail,
        },
    );
    Ok(())
}

async fn probe_once(spec: &ProbeSpec) -> Result<i64, Outcome> {
    let stream = turmoil::net::TcpStream::connect((spec.proxy_host.as_str(), PROXY_PORT))
        .await
        .map_err(|_| Outcome::Closed)?;
    let mut config = tokio_postgres::Config::new();
    config
        .user(&spec.user)
        .password(&spec.password)
        .dbname(&spec.database)
        .application_name(PROBE_HOST);
    let (client, connection) = config
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| classify(&e))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let rows = client
        .simple_query("SELECT sum(balance) FROM accounts")
        .await
        .map_err(|e| classify(&e));
    drop(client);
    let _ = task.await;
    let sum = first_value(&rows?).unwrap_or_default();
    sum.parse::<i64>()
        .map_err(|_| Outcome::Client(format!("sum {sum:?} is not a number")))
}
