//! A fake Postgres: a small, fully known database server for the simulator's origin, built on
//! `elephant-protocol` alone (the same codec and server handshake the proxy ships).
//!
//! Why a fake and not Postgres: the simulator runs thousands of seeds a minute in one process,
//! crashes and restarts the origin at will, and must know exactly what the database committed
//! to check the proxy's invariants. A real server gives none of that; a fake that is faithful
//! where a pooling proxy can tell the difference does.
//!
//! # What it supports (compare with real Postgres 15)
//!
//! Connection:
//! - SSLRequest / GSSENCRequest answered `N`; protocol 3.0 (a 3.x minor above 0 or `_pq_`
//!   options get NegotiateProtocolVersion); CancelRequest;
//! - authentication through [`elephant_protocol::startup::ServerHandshake`]: trust, md5, or
//!   SCRAM-SHA-256 against a stored secret (iteration count configurable, so the simulator does
//!   not spend its time in PBKDF2);
//! - `max_connections`: the next StartupMessage gets FATAL 53300 `sorry, too many clients
//!   already`; an unknown database FATAL 3D000; unknown startup parameters FATAL 42704;
//! - startup parameters and `options=-c name=value` become session defaults; ParameterStatus
//!   for `application_name`, `client_encoding`, `DateStyle`, `default_transaction_read_only`,
//!   `in_hot_standby`, `integer_datetimes`, `IntervalStyle`, `is_superuser`,
//!   `server_encoding`, `server_version` (`15.0 (elephant fake)`), `session_authorization`,
//!   `standard_conforming_strings`, `TimeZone`, re-sent before ReadyForQuery when they change;
//!   BackendKeyData from a seeded RNG.
//!
//! Protocol: simple Query (several statements separated by `;`, run as one implicit
//! transaction unless they contain BEGIN/COMMIT); extended protocol with named and unnamed
//! statements and portals, Parse / Bind / Describe (statement and portal) / Execute with a row
//! limit (PortalSuspended) / Close / Sync / Flush; after an error everything up to Sync is
//! skipped; errors 42P05 (statement exists), 26000 (statement missing), 34000 (portal
//! missing), 42P03 (portal exists), 08P01 (parameter or format count). FunctionCall and COPY
//! are refused (0A000).
//!
//! Transactions: BEGIN / START TRANSACTION (modes ignored), COMMIT / END, ROLLBACK / ABORT;
//! an error in a block makes later statements fail with 25P02 until ROLLBACK or COMMIT, and
//! COMMIT of a failed block reports ROLLBACK; ReadyForQuery carries I / T / E; warnings
//! 25001 / 25P01 for BEGIN in a block and COMMIT/ROLLBACK outside one. Settings changed by a
//! rolled-back transaction are restored; SET LOCAL ends with its transaction.
//!
//! SQL (anything else is 42601 or 0A000 with a message saying what is supported):
//! - `SET [SESSION|LOCAL] name {=|TO} value|DEFAULT`, `SET TIME ZONE ...`, `RESET name`,
//!   `RESET ALL`, `SHOW name`, `SET SESSION AUTHORIZATION DEFAULT`, `DISCARD ALL|TEMP|
//!   SEQUENCES|PLANS`, `CLOSE ALL`, `UNLISTEN *`, `DEALLOCATE [ALL|name]` — which covers the
//!   proxy's reset query;
//! - `SELECT` without FROM of constants, `$n`, casts (`::int`, `::bigint`, `::text`, `::bool`,
//!   `::float8`), `pg_sleep(n)` (cancellable, bounded by `statement_timeout` → 57014),
//!   `current_setting('name')`, `[pg_catalog.]set_config(name, value, is_local)`,
//!   `pg_backend_pid()`, `pg_advisory_unlock_all()`; the reference proxy's settings read-back
//!   (`SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' ...`);
//! - the bank: accounts `1..=N` exist from the start with the same balance; `SELECT balance
//!   FROM accounts WHERE id = x`, `SELECT id, balance FROM accounts [ORDER BY id]`, `UPDATE accounts SET balance = balance {+|-} x WHERE id = y`,
//!   `SELECT sum(balance) FROM accounts`, `INSERT INTO transfers [(id, from_id, to_id,
//!   amount)] VALUES (...)`, `SELECT count(*) FROM transfers`.
//!
//! Deliberately not modelled: row locks and lock waits (updates are relative, applied at
//! COMMIT), savepoints, cursors, LISTEN/NOTIFY, COPY, numeric, encodings other than UTF8, and
//! a backend noticing that its client vanished while it runs a query (it notices at its next
//! read or write, as Postgres does by default).

mod backend;
mod bank;
mod conn;
mod error;
mod plan;
mod settings;
mod sql;
mod startup;
mod types;

pub use bank::{Bank, MAX_TRANSFERS, PendingWrites, Transfer};
pub use conn::WireTap;
pub use error::PgError;
pub use settings::{SERVER_VERSION, show_milliseconds};
pub use sql::{Statement, parse_query};

use elephant_auth::{AuthMethod, ScramSecret, StoredPassword, md5_stored};
use elephant_protocol::startup::ServerAuthConfig;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// First process id the fake hands out (Postgres pids are never tiny).
pub const FIRST_PID: i32 = 10_000;

/// Length of the cancel secret (protocol 3.0).
pub const CANCEL_KEY_LEN: usize = 4;

/// Length of the key that keeps mock SCRAM exchanges stable.
pub const MOCK_KEY_LEN: usize = 32;

/// How the fake authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeAuth {
    /// No password.
    Trust,
    /// md5 challenge-response against an md5 hash.
    Md5,
    /// SCRAM-SHA-256 against a stored secret with this iteration count.
    Scram {
        /// PBKDF2 iterations (Postgres uses 4096; the simulator uses few to stay fast).
        iterations: u32,
    },
}

/// Configuration of one fake server.
#[derive(Debug, Clone)]
pub struct FakePgConfig {
    /// The one role.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Authentication method.
    pub auth: FakeAuth,
    /// The one database.
    pub database: String,
    /// Most concurrent sessions (cancel connections do not count).
    pub max_connections: usize,
    /// Accounts `1..=accounts` exist.
    pub accounts: i32,
    /// What each account holds at the start.
    pub initial_balance: i64,
    /// Seeds cancel keys, salts and nonces.
    pub seed: u64,
    /// Sees every message (for `sim replay --wire`); `None` in normal runs.
    pub wire_tap: Option<WireTap>,
}

/// Counters the simulator reads after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginStats {
    /// Sessions open now (StartupMessage received, not yet closed).
    pub sessions_now: usize,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Sessions that completed startup.
    pub sessions_started: u64,
    /// StartupMessages refused with 53300.
    pub refused_too_many: u64,
    /// Failed logins.
    pub auth_failures: u64,
    /// CancelRequests received.
    pub cancel_requests: u64,
    /// CancelRequests that interrupted a running `pg_sleep`.
    pub cancels_delivered: u64,
    /// Statements ended by `statement_timeout`.
    pub statement_timeouts: u64,
}

/// A backend that can be cancelled.
struct CancelEntry {
    secret: [u8; CANCEL_KEY_LEN],
    signal: Arc<Notify>,
}

/// What backends share, under one lock.
struct State {
    rng: ChaCha8Rng,
    next_pid: i32,
    next_connection: u64,
    backends: BTreeMap<i32, CancelEntry>,
    stats: OriginStats,
}

struct Shared {
    config: FakePgConfig,
    stored: Option<StoredPassword>,
    auth: ServerAuthConfig,
    bank: Mutex<Bank>,
    state: Mutex<State>,
}

/// A fake Postgres server: cheap to clone, one shared bank and connection table.
#[derive(Clone)]
pub struct FakePostgres {
    shared: Arc<Shared>,
}

/// Locks a mutex even if a panicking thread poisoned it (the fake's state stays consistent
/// because every critical section is a few assignments).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakePostgres {
    /// A server with a fresh bank.
    pub fn new(config: FakePgConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut mock_key = vec![0u8; MOCK_KEY_LEN];
        rng.fill_bytes(&mut mock_key);
        let (method, stored) = stored_password(&config, &mut rng);
        let bank = Bank::new(config.accounts, config.initial_balance);
        FakePostgres {
            shared: Arc::new(Shared {
                auth: ServerAuthConfig {
                    method,
                    mock_key,
                    tls_server_end_point: None,
                },
                stored,
                bank: Mutex::new(bank),
                state: Mutex::new(State {
                    rng,
                    next_pid: FIRST_PID,
                    next_connection: 1,
                    backends: BTreeMap::new(),
                    stats: OriginStats::default(),
                }),
                config,
            }),
        }
    }

    /// Serves one client connection to its end. Never panics on client input.
    pub async fn serve_connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        startup::serve(self.shared.clone(), stream).await;
    }

    /// The committed state of the bank.
    pub fn bank(&self) -> Bank {
        lock(&self.shared.bank).clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> OriginStats {
        lock(&self.shared.state).stats
    }

    /// The configuration.
    pub fn config(&self) -> &FakePgConfig {
        &self.shared.config
    }
}

fn stored_password(
    config: &FakePgConfig,
    rng: &mut ChaCha8Rng,
) -> (Option<AuthMethod>, Option<StoredPassword>) {
    match config.auth {
        FakeAuth::Trust => (None, None),
        FakeAuth::Md5 => (
            Some(AuthMethod::Md5),
            Some(StoredPassword::Md5(md5_stored(
                &config.user,
                &config.password,
            ))),
        ),
        FakeAuth::Scram { iterations } => (
            Some(AuthMethod::ScramSha256),
            ScramSecret::generate(&config.password, rng, iterations)
                .ok()
                .map(StoredPassword::Scram),
        ),
    }
}

impl Shared {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    fn with_bank<T>(&self, f: impl FnOnce(&mut Bank) -> T) -> T {
        f(&mut lock(&self.bank))
    }

    /// Registers a new backend: its process id, cancel secret and cancel signal.
    fn register_backend(&self) -> (i32, [u8; CANCEL_KEY_LEN], Arc<Notify>) {
        self.with_state(|state| {
            let pid = state.next_pid;
            state.next_pid = state.next_pid.checked_add(1).unwrap_or(FIRST_PID);
            let mut secret = [0u8; CANCEL_KEY_LEN];
            state.rng.fill_bytes(&mut secret);
            let signal = Arc::new(Notify::new());
            state.backends.insert(
                pid,
                CancelEntry {
                    secret,
                    signal: signal.clone(),
                },
            );
            state.stats.sessions_started += 1;
            (pid, secret, signal)
        })
    }

    /// A label for a new connection's wire lines.
    fn connection_label(&self) -> String {
        self.with_state(|state| {
            let number = state.next_connection;
            state.next_connection += 1;
            format!("origin conn {number}")
        })
    }

    fn unregister_backend(&self, pid: i32) {
        self.with_state(|state| {
            state.backends.remove(&pid);
        });
    }

    /// Handles a CancelRequest: signals the backend if the key matches (a backend that is
    /// not sleeping ignores the signal, like an idle Postgres backend).
    fn cancel(&self, pid: i32, secret: &[u8]) {
        self.with_state(|state| {
            state.stats.cancel_requests += 1;
            if let Some(entry) = state.backends.get(&pid)
                && entry.secret.as_slice() == secret
            {
                entry.signal.notify_waiters();
            }
        });
    }
}

/// A session slot: counted from StartupMessage until the connection closes.
struct Slot {
    shared: Arc<Shared>,
}

impl Slot {
    /// Takes a slot, or `None` when `max_connections` are in use.
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let max = shared.config.max_connections;
        shared.with_state(|state| {
            if state.stats.sessions_now >= max {
                state.stats.refused_too_many += 1;
                return None;
            }
            state.stats.sessions_now += 1;
            state.stats.max_sessions = state.stats.max_sessions.max(state.stats.sessions_now);
            Some(Slot {
                shared: shared.clone(),
            })
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.with_state(|state| {
            state.stats.sessions_now = state.stats.sessions_now.saturating_sub(1);
        });
    }
}
