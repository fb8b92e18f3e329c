//! The invariants a seed is judged by, checked from what the clients saw, what the origin
//! committed and what the proxy held.
//!
//! Each check is counted, so the summary can say how much was verified and not only what
//! failed. The checks and why they are the right ones:
//! - **durability / atomicity**: every COMMIT a client saw succeed is in the origin's
//!   committed state; nothing a client saw fail, rolled back or abandoned is; every committed
//!   transfer is one a client attempted, with the same accounts and amount; and each
//!   account's balance is its initial balance plus exactly the committed transfers (so no
//!   statement of a transaction was applied without the others, or in someone else's);
//! - **conservation**: the total balance never changes;
//! - **pool bound**: the proxy never held more origin sessions than `--pool-size`;
//! - **no hang**: every call ended within the call timeout, unless a lossy partition (which
//!   stalls TCP streams for good in turmoil) could explain it;
//! - **expected errors only**: a client may see timeouts, cancels, pool and connection
//!   errors, never a protocol error, a prepared-statement mix-up or a client-side decode
//!   failure;
//! - **cancel isolation**: "canceling statement due to user request" only ever reaches the
//!   query its own client cancelled;
//! - client-side checks (session isolation, one backend per transaction, statement
//!   timeout), reported by the workload as they happen;
//! - **recovery**: once the workload and the faults are over, a fresh client gets an answer
//!   through the proxy again (no leaked pool slot, no stuck session), and the total it reads
//!   is the bank's;
//! - the proxy never panics and the simulation finishes.

use crate::fake_pg::Bank;
use crate::faults::FaultPlan;
use crate::trace::{CallRecord, Collected, Fate, Outcome, TransferRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// SQLSTATEs a client may legitimately see through the proxy in a hostile world.
pub const EXPECTED_ERRORS: &[(&str, &str)] = &[
    (
        "57014",
        "query canceled (statement timeout or cancel request)",
    ),
    (
        "58000",
        "proxy: pool exhausted, origin unreachable, or origin lost",
    ),
    ("53300", "origin: too many connections"),
    ("57P01", "proxy or origin shutting down"),
    ("57P05", "idle session timeout"),
];

/// Marker in the SQL of the one query a client cancels.
pub const CANCEL_TARGET: &str = "/* cancel target */";

/// Message of a cancel-request error.
pub const USER_CANCEL_MESSAGE: &str = "canceling statement due to user request";

/// One invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// An acknowledged COMMIT is in the origin.
    CommitDurable,
    /// A failed or abandoned transaction left nothing behind.
    AbortedNotApplied,
    /// Every committed transfer was attempted by a client, as recorded.
    NoPhantomWrites,
    /// Balances equal initial balances plus committed transfers.
    TransfersAtomic,
    /// The total balance is unchanged.
    BalanceConserved,
    /// Origin sessions held by the proxy never exceed the pool size.
    PoolBound,
    /// Every call ends within its timeout.
    NoHang,
    /// Only expected errors.
    ExpectedErrorsOnly,
    /// A cancel reaches only the cancelled query.
    CancelIsolation,
    /// A session sees only its own settings and values.
    SessionIsolation,
    /// Settings a client made (a SET that succeeded) are the ones its later queries run under,
    /// on whichever origin connection serves them, through faults.
    SettingsFollowClient,
    /// A transaction stays on one origin backend.
    OneBackendPerTransaction,
    /// Slow statements end at the statement timeout.
    StatementTimeout,
    /// After the workload and the faults, a fresh client is served again.
    Recovers,
    /// Nothing panicked.
    NoPanic,
    /// The simulation finished within its time limit.
    SimulationCompletes,
    /// No password, service-token secret or SCRAM secret in any log line of the proxy or
    /// the edge.
    NoSecretInLogs,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 17] = [
        Invariant::CommitDurable,
        Invariant::AbortedNotApplied,
        Invariant::NoPhantomWrites,
        Invariant::TransfersAtomic,
        Invariant::BalanceConserved,
        Invariant::PoolBound,
        Invariant::NoHang,
        Invariant::ExpectedErrorsOnly,
        Invariant::CancelIsolation,
        Invariant::SessionIsolation,
        Invariant::SettingsFollowClient,
        Invariant::OneBackendPerTransaction,
        Invariant::StatementTimeout,
        Invariant::Recovers,
        Invariant::NoPanic,
        Invariant::SimulationCompletes,
        Invariant::NoSecretInLogs,
    ];

    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Invariant::CommitDurable => "acknowledged COMMITs are durable",
            Invariant::AbortedNotApplied => "failed/abandoned transactions leave nothing",
            Invariant::NoPhantomWrites => "no committed write nobody made",
            Invariant::TransfersAtomic => "balances match committed transfers",
            Invariant::BalanceConserved => "total balance conserved",
            Invariant::PoolBound => "origin sessions <= pool size",
            Invariant::NoHang => "every call ends within its timeout",
            Invariant::ExpectedErrorsOnly => "only expected errors",
            Invariant::CancelIsolation => "cancels hit only their own query",
            Invariant::SessionIsolation => "sessions see only their own data",
            Invariant::SettingsFollowClient => "a client's SETs follow it across connections",
            Invariant::OneBackendPerTransaction => "one origin backend per transaction",
            Invariant::StatementTimeout => "statement timeout enforced",
            Invariant::Recovers => "proxy serves again after the faults",
            Invariant::NoPanic => "no panic",
            Invariant::SimulationCompletes => "simulation completes",
            Invariant::NoSecretInLogs => "no secret in any log line",
        }
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which.
    pub invariant: Invariant,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.invariant, self.detail)
    }
}

/// The result of checking one seed.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Checks made, by invariant.
    pub checks: BTreeMap<Invariant, u64>,
    /// What failed.
    pub violations: Vec<Violation>,
    /// Calls that timed out but overlapped a lossy partition (not violations).
    pub excused_hangs: u64,
    /// Failed recoveries explained by half-open origin sessions after a lossy partition.
    pub excused_recoveries: u64,
}

impl Verdict {
    fn check(&mut self, invariant: Invariant, ok: bool, detail: impl FnOnce() -> String) {
        *self.checks.entry(invariant).or_insert(0) += 1;
        if !ok {
            self.violations.push(Violation {
                invariant,
                detail: detail(),
            });
        }
    }

    /// Records a violation found elsewhere (a client, the runner).
    pub fn violate(&mut self, invariant: Invariant, detail: String) {
        self.check(invariant, false, || detail);
    }

    /// Records a passed check made elsewhere.
    pub fn passed(&mut self, invariant: Invariant, count: u64) {
        *self.checks.entry(invariant).or_insert(0) += count;
    }
}

/// What the checks look at.
pub struct Evidence<'a> {
    /// What the clients saw.
    pub collected: &'a Collected,
    /// The origin's committed state.
    pub bank: &'a Bank,
    /// Accounts in the bank.
    pub accounts: i32,
    /// Most origin sessions the proxy held at once.
    pub proxy_max_sessions: usize,
    /// The proxy's pool size.
    pub pool_size: usize,
    /// The seed's network faults.
    pub plan: &'a FaultPlan,
    /// The call timeout (also the grace after a lossy partition).
    pub call_timeout: Duration,
    /// Sessions the origin still counts that the proxy no longer holds at the end: half-open
    /// connections whose close was lost in a partition (turmoil retransmits nothing, and has
    /// no keepalive to find them).
    pub origin_zombies: usize,
}

/// Runs every check on one seed's evidence.
pub fn check(evidence: &Evidence<'_>) -> Verdict {
    let mut verdict = Verdict::default();
    check_transfers(evidence, &mut verdict);
    check_balances(evidence, &mut verdict);
    verdict.check(
        Invariant::PoolBound,
        evidence.proxy_max_sessions <= evidence.pool_size,
        || {
            format!(
                "the proxy held {} origin sessions at once with --pool-size {}",
                evidence.proxy_max_sessions, evidence.pool_size
            )
        },
    );
    for call in &evidence.collected.calls {
        check_call(evidence, call, &mut verdict);
    }
    for observation in &evidence.collected.observations {
        if observation.invariant == Invariant::Recovers && zombies_explain(evidence) {
            verdict.excused_recoveries += 1;
            continue;
        }
        verdict.violate(observation.invariant, observation.detail.clone());
    }
    verdict
}

/// A proxy that cannot get an origin connection because the origin is full of sessions the
/// proxy already closed — closes lost with the segments a lossy partition dropped — is not
/// the proxy's fault: real TCP would retransmit those closes once the partition healed.
fn zombies_explain(evidence: &Evidence<'_>) -> bool {
    evidence.origin_zombies > 0
        && evidence.plan.faults.iter().any(|s| match &s.fault {
            crate::faults::Fault::PartitionOrigin { .. } => true,
            // A one-way loss on the way to the origin loses closes just the same (clients
            // are not on that way).
            crate::faults::Fault::OneWayPartition { from, to, .. } => {
                !from.starts_with("client-") && !to.starts_with("client-")
            }
            _ => false,
        })
}

fn check_transfers(evidence: &Evidence<'_>, verdict: &mut Verdict) {
    let committed = evidence.bank.transfers();
    let mut attempted = BTreeSet::new();
    for record in &evidence.collected.transfers {
        attempted.insert(record.id);
        let stored = committed.get(&record.id);
        match record.fate {
            Fate::Committed => verdict.check(Invariant::CommitDurable, stored.is_some(), || {
                format!("{} was acknowledged but is not in the origin", show(record))
            }),
            Fate::Aborted => verdict.check(Invariant::AbortedNotApplied, stored.is_none(), || {
                format!("{} failed for its client but was committed", show(record))
            }),
            Fate::Unknown => {}
        }
        if let Some(stored) = stored {
            let same =
                (stored.from, stored.to, stored.amount) == (record.from, record.to, record.amount);
            verdict.check(Invariant::NoPhantomWrites, same, || {
                format!("{} was committed as {stored:?}", show(record))
            });
        }
    }
    for id in committed.keys() {
        verdict.check(Invariant::NoPhantomWrites, attempted.contains(id), || {
            format!("transfer {id} is committed but no client attempted it")
        });
    }
}

fn show(record: &TransferRecord) -> String {
    format!(
        "transfer {} ({}->{} amount {}, client-{})",
        record.id, record.from, record.to, record.amount, record.client
    )
}

fn check_balances(evidence: &Evidence<'_>, verdict: &mut Verdict) {
    let bank = evidence.bank;
    let initial = bank.initial_balance();
    let mut expected: BTreeMap<i32, i64> =
        (1..=evidence.accounts).map(|id| (id, initial)).collect();
    for transfer in bank.transfers().values() {
        *expected.entry(transfer.from).or_insert(initial) -= i64::from(transfer.amount);
        *expected.entry(transfer.to).or_insert(initial) += i64::from(transfer.amount);
    }
    for (id, balance) in bank.balances() {
        let want = expected.get(id).copied().unwrap_or(initial);
        verdict.check(Invariant::TransfersAtomic, *balance == want, || {
            format!("account {id} holds {balance}; its committed transfers say {want}")
        });
    }
    let total: i64 = bank.balances().values().sum();
    let want = initial * i64::from(evidence.accounts);
    verdict.check(Invariant::BalanceConserved, total == want, || {
        format!("total balance is {total}, expected {want}")
    });
}

fn check_call(evidence: &Evidence<'_>, call: &CallRecord, verdict: &mut Verdict) {
    let hung = call.outcome == Outcome::Timeout;
    if hung
        && evidence
            .plan
            .lossy_overlap(call.start, call.end, evidence.call_timeout)
    {
        verdict.excused_hangs += 1;
    } else {
        verdict.check(Invariant::NoHang, !hung, || {
            format!(
                "client-{} `{}` got no answer in {} (started at {})",
                call.client,
                call.what,
                crate::faults::ms(call.end - call.start),
                crate::faults::ms(call.start)
            )
        });
    }
    match &call.outcome {
        Outcome::Db { code, message, .. } => {
            let expected = EXPECTED_ERRORS.iter().any(|(c, _)| c == code);
            verdict.check(Invariant::ExpectedErrorsOnly, expected, || {
                format!(
                    "client-{} `{}` got unexpected error {code}: {message}",
                    call.client, call.what
                )
            });
            if message == USER_CANCEL_MESSAGE {
                verdict.check(
                    Invariant::CancelIsolation,
                    call.what.contains(CANCEL_TARGET),
                    || {
                        format!(
                            "client-{} `{}` was cancelled but nobody cancelled it",
                            call.client, call.what
                        )
                    },
                );
            }
        }
        Outcome::Client(error) => verdict.violate(
            Invariant::ExpectedErrorsOnly,
            format!(
                "client-{} `{}`: tokio-postgres: {error}",
                call.client, call.what
            ),
        ),
        _ => verdict.passed(Invariant::ExpectedErrorsOnly, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_pg::PendingWrites;
    use crate::faults::{Fault, Scheduled};
    use crate::trace::Observation;

    const ACCOUNTS: i32 = 3;

    fn bank_with(transfers: &[(i64, i32, i32, i32)]) -> Bank {
        let mut bank = Bank::new(ACCOUNTS, 100);
        for (id, from, to, amount) in transfers {
            let mut pending = PendingWrites::default();
            bank.update(i64::from(*from), -i64::from(*amount), &mut pending)
                .expect("update");
            bank.update(i64::from(*to), i64::from(*amount), &mut pending)
                .expect("update");
            bank.insert(
                crate::fake_pg::Transfer {
                    id: *id,
                    from: *from,
                    to: *to,
                    amount: *amount,
                },
                &mut pending,
            )
            .expect("insert");
            bank.commit(pending).expect("commit");
        }
        bank
    }

    fn record(id: i64, fate: Fate) -> TransferRecord {
        TransferRecord {
            id,
            from: 1,
            to: 2,
            amount: 5,
            fate,
            client: 0,
        }
    }

    fn call(outcome: Outcome, what: &str) -> CallRecord {
        CallRecord {
            client: 0,
            what: what.into(),
            start: Duration::from_secs(1),
            end: Duration::from_secs(21),
            outcome,
        }
    }

    fn verdict(
        collected: &Collected,
        bank: &Bank,
        max_sessions: usize,
        plan: &FaultPlan,
    ) -> Verdict {
        check(&Evidence {
            collected,
            bank,
            accounts: ACCOUNTS,
            proxy_max_sessions: max_sessions,
            pool_size: 2,
            plan,
            call_timeout: Duration::from_secs(20),
            origin_zombies: 0,
        })
    }

    fn violated(verdict: &Verdict) -> Vec<Invariant> {
        verdict.violations.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_consistent_seed_passes() {
        let collected = Collected {
            transfers: vec![
                record(1, Fate::Committed),
                record(2, Fate::Aborted),
                record(3, Fate::Unknown),
            ],
            ..Collected::default()
        };
        let bank = bank_with(&[(1, 1, 2, 5), (3, 1, 2, 5)]);
        let verdict = verdict(&collected, &bank, 2, &FaultPlan::default());
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.checks.get(&Invariant::CommitDurable), Some(&1));
    }

    #[test]
    fn lost_commits_applied_aborts_and_phantoms_are_caught() {
        let collected = Collected {
            transfers: vec![record(1, Fate::Committed), record(2, Fate::Aborted)],
            ..Collected::default()
        };
        let bank = bank_with(&[(2, 1, 2, 5), (9, 2, 3, 1)]);
        let found = violated(&verdict(&collected, &bank, 2, &FaultPlan::default()));
        assert!(found.contains(&Invariant::CommitDurable));
        assert!(found.contains(&Invariant::AbortedNotApplied));
        assert!(found.contains(&Invariant::NoPhantomWrites));
    }

    #[test]
    fn pool_hangs_errors_and_cancels_are_caught() {
        let collected = Collected {
            calls: vec![
                call(Outcome::Timeout, "SELECT 1"),
                call(
                    Outcome::Db {
                        code: "08P01".into(),
                        severity: "FATAL".into(),
                        message: "protocol".into(),
                    },
                    "SELECT 1",
                ),
                call(
                    Outcome::Db {
                        code: "57014".into(),
                        severity: "ERROR".into(),
                        message: USER_CANCEL_MESSAGE.into(),
                    },
                    "SELECT pg_sleep(1)",
                ),
            ],
            observations: vec![Observation {
                invariant: Invariant::SessionIsolation,
                detail: "saw another session".into(),
            }],
            ..Collected::default()
        };
        let bank = bank_with(&[]);
        let found = violated(&verdict(&collected, &bank, 3, &FaultPlan::default()));
        for invariant in [
            Invariant::PoolBound,
            Invariant::NoHang,
            Invariant::ExpectedErrorsOnly,
            Invariant::CancelIsolation,
            Invariant::SessionIsolation,
        ] {
            assert!(found.contains(&invariant), "{invariant:?} in {found:?}");
        }
    }

    #[test]
    fn hangs_during_lossy_partitions_are_excused() {
        let collected = Collected {
            calls: vec![call(Outcome::Timeout, "SELECT 1")],
            ..Collected::default()
        };
        let plan = FaultPlan {
            faults: vec![Scheduled {
                at: Duration::from_secs(5),
                fault: Fault::PartitionOrigin {
                    duration: Duration::from_secs(1),
                },
            }],
        };
        let verdict = verdict(&collected, &bank_with(&[]), 1, &plan);
        assert!(verdict.violations.is_empty());
        assert_eq!(verdict.excused_hangs, 1);
    }

    #[test]
    fn unbalanced_books_are_caught() {
        let mut bank = bank_with(&[]);
        let mut pending = PendingWrites::default();
        bank.update(1, 7, &mut pending).expect("update");
        bank.commit(pending).expect("commit");
        let found = violated(&verdict(
            &Collected::default(),
            &bank,
            1,
            &FaultPlan::default(),
        ));
        assert!(found.contains(&Invariant::TransfersAtomic));
        assert!(found.contains(&Invariant::BalanceConserved));
    }
}
