//! The fake's only data: bank accounts and a log of transfers, shared by every backend of one
//! fake server and kept across its restarts (committed data is durable, as after a Postgres
//! crash and recovery).
//!
//! Transactions buffer their writes in a [`PendingWrites`] and apply them atomically at COMMIT;
//! a rollback, an error or a vanished connection simply drops the buffer. Updates are relative
//! (`balance = balance + x`), so concurrent transactions never conflict and no locking is
//! modelled: the fake is exactly as isolated as the workload needs to check atomicity and
//! durability, and no more.

use super::error::PgError;
use std::collections::BTreeMap;

/// Most transfers the log keeps (the workload writes a few hundred per seed).
pub const MAX_TRANSFERS: usize = 1_000_000;

/// One row of `transfers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Transfer {
    /// Unique id chosen by the client.
    pub id: i64,
    /// Debited account.
    pub from: i32,
    /// Credited account.
    pub to: i32,
    /// Amount moved.
    pub amount: i32,
}

/// Committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bank {
    balances: BTreeMap<i32, i64>,
    initial_balance: i64,
    transfers: BTreeMap<i64, Transfer>,
    commits: u64,
}

/// Writes of one open transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingWrites {
    deltas: BTreeMap<i32, i64>,
    transfers: Vec<Transfer>,
}

impl PendingWrites {
    /// True when the transaction wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.transfers.is_empty()
    }
}

impl Bank {
    /// Accounts `1..=accounts`, each holding `initial_balance`.
    pub fn new(accounts: i32, initial_balance: i64) -> Self {
        Bank {
            balances: (1..=accounts).map(|id| (id, initial_balance)).collect(),
            initial_balance,
            transfers: BTreeMap::new(),
            commits: 0,
        }
    }

    /// The balance `pending` would see, `None` for an unknown account.
    pub fn balance(&self, id: i64, pending: &PendingWrites) -> Option<i64> {
        let id = i32::try_from(id).ok()?;
        let committed = self.balances.get(&id)?;
        Some(committed + pending.deltas.get(&id).copied().unwrap_or(0))
    }

    /// Every account and its balance as `pending` sees it, by id.
    pub fn accounts(&self, pending: &PendingWrites) -> Vec<(i32, i64)> {
        self.balances
            .iter()
            .map(|(id, balance)| (*id, balance + pending.deltas.get(id).copied().unwrap_or(0)))
            .collect()
    }

    /// `sum(balance)` as `pending` sees it.
    pub fn sum(&self, pending: &PendingWrites) -> i64 {
        self.balances.values().sum::<i64>() + pending.deltas.values().sum::<i64>()
    }

    /// `count(*)` of transfers as `pending` sees it.
    pub fn transfer_count(&self, pending: &PendingWrites) -> usize {
        self.transfers.len() + pending.transfers.len()
    }

    /// `UPDATE accounts SET balance = balance + delta WHERE id = id`: rows updated.
    pub fn update(&self, id: i64, delta: i64, pending: &mut PendingWrites) -> Result<u64, PgError> {
        let Some(current) = self.balance(id, pending) else {
            return Ok(0);
        };
        if i32::try_from(current + delta).is_err() {
            return Err(PgError::new("22003", "integer out of range"));
        }
        if let Ok(id) = i32::try_from(id) {
            *pending.deltas.entry(id).or_insert(0) += delta;
        }
        Ok(1)
    }

    /// `INSERT INTO transfers`: fails on a duplicate id like a primary key.
    pub fn insert(&self, transfer: Transfer, pending: &mut PendingWrites) -> Result<(), PgError> {
        let duplicate = self.transfers.contains_key(&transfer.id)
            || pending.transfers.iter().any(|t| t.id == transfer.id);
        if duplicate {
            return Err(duplicate_key(transfer.id));
        }
        if self.transfer_count(pending) >= MAX_TRANSFERS {
            return Err(PgError::new(
                "53100",
                format!("the fake Postgres keeps at most {MAX_TRANSFERS} transfers"),
            ));
        }
        pending.transfers.push(transfer);
        Ok(())
    }

    /// Applies a transaction's writes atomically.
    pub fn commit(&mut self, pending: PendingWrites) -> Result<(), PgError> {
        if let Some(t) = pending
            .transfers
            .iter()
            .find(|t| self.transfers.contains_key(&t.id))
        {
            return Err(duplicate_key(t.id));
        }
        for (id, delta) in pending.deltas {
            if let Some(balance) = self.balances.get_mut(&id) {
                *balance += delta;
            }
        }
        for transfer in pending.transfers {
            self.transfers.insert(transfer.id, transfer);
        }
        self.commits += 1;
        Ok(())
    }

    /// Committed balances by account id.
    pub fn balances(&self) -> &BTreeMap<i32, i64> {
        &self.balances
    }

    /// Committed transfers by id.
    pub fn transfers(&self) -> &BTreeMap<i64, Transfer> {
        &self.transfers
    }

    /// What every account held at the start.
    pub fn initial_balance(&self) -> i64 {
        self.initial_balance
    }

    /// Transactions committed with writes or without.
    pub fn commits(&self) -> u64 {
        self.commits
    }
}

fn duplicate_key(id: i64) -> PgError {
    PgError::new(
        "23505",
        format!("duplicate key value violates unique constraint \"transfers_pkey\" (id {id})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_invisible_until_commit() {
        let mut bank = Bank::new(3, 100);
        let mut pending = PendingWrites::default();
        assert_eq!(bank.update(1, -10, &mut pending), Ok(1));
        assert_eq!(bank.update(9, 10, &mut pending), Ok(0));
        assert_eq!(bank.balance(1, &pending), Some(90));
        assert_eq!(bank.balance(1, &PendingWrites::default()), Some(100));
        bank.commit(pending).expect("commit");
        assert_eq!(bank.sum(&PendingWrites::default()), 290);
    }

    #[test]
    fn duplicate_transfer_ids_fail() {
        let bank = Bank::new(2, 100);
        let mut pending = PendingWrites::default();
        let transfer = Transfer {
            id: 7,
            from: 1,
            to: 2,
            amount: 5,
        };
        bank.insert(transfer, &mut pending).expect("first");
        assert_eq!(
            bank.insert(transfer, &mut pending).map_err(|e| e.code),
            Err("23505")
        );
    }
}
