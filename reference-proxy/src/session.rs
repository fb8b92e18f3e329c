//! The transaction-pooling session: what the proxy does with each message, without IO.
//!
//! A [`Session`] belongs to one client for its whole life; an origin connection is attached
//! only while a transaction runs. The session rewrites the client's stream so that it works on
//! whichever connection it gets — prepared statements are re-prepared under their origin names
//! (see [`crate::prepared`]), the connection is reset (and the client's settings applied) before
//! the client's first message — and routes the origin's answers back, dropping the answers to
//! what the proxy injected and synthesizing the answers to what it kept for itself.
//!
//! The key structure is the [`Pending`] queue: one entry per message sent to the origin that
//! will be answered, in order. Postgres answers in order, so the head of the queue always says
//! whose answer the next origin message is. After an error in an extended-protocol batch,
//! Postgres skips everything up to Sync; the queue does the same.
//!
//! The driver ([`crate::client`]) calls [`Session::client_message`] and
//! [`Session::origin_message`], writes the [`Outbox`], and returns the connection to the pool
//! when [`Session::transaction_finished`] says so.

use crate::origin::OriginConnection;
use crate::prepared::{
    ClientStatements, MAX_STATEMENTS_PER_CLIENT, Preparation, StatementDefinition,
};
use bytes::BytesMut;
use elephant_protocol::backend::field;
use elephant_protocol::{
    BackendMessage, Bind, ErrorFields, FrontendMessage, Parse, PgString, Target, TransactionStatus,
};
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// Statements that undo what a session may have changed on a connection, except protocol-level
/// prepared statements, which the proxy manages itself (so `DEALLOCATE ALL`, and thus
/// `DISCARD ALL`, would be wrong): this is `DISCARD ALL` without `DEALLOCATE ALL`.
pub const RESET_QUERY: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
     SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;";

/// Appended to [`RESET_QUERY`] for a connection coming back from a pinned session, which may
/// have used SQL-level `PREPARE` (the proxy's own statements go too, and are forgotten).
pub const FULL_RESET_EXTRA: &str = " DEALLOCATE ALL;";

/// Reads back the settings a session changed (`SET`, `set_config`, its startup options as the
/// proxy applied them), so they follow the client to its next connection. `role` is not
/// listed in `pg_settings` (it is hidden from `SHOW ALL`), so it is asked for separately.
pub const SETTINGS_SNAPSHOT_QUERY: &str = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
     UNION ALL SELECT 'role', pg_catalog.current_setting('role') \
     WHERE pg_catalog.current_setting('role') <> 'none' ORDER BY 1";

/// Sent in place of a refused statement while a transaction is open, so that the origin fails
/// (and aborts the transaction) exactly where Postgres would have; its syntax error is replaced
/// by the proxy's own ErrorResponse.
const REFUSED_STATEMENT: &str = "elephant_tunnel_refused_statement";

/// Name bound when a client refers to a statement it never prepared: it never exists on the
/// origin, so the origin produces the genuine "does not exist" error (renamed back).
const UNDEFINED_STATEMENT: &str = "et_undefined";

/// What the origin's answer to a sent message looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parse: ParseComplete.
    Parse,
    /// Bind: BindComplete.
    Bind,
    /// Describe of a statement: ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// Describe of a portal: RowDescription or NoData.
    DescribePortal,
    /// Execute: rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Close: CloseComplete.
    Close,
    /// Sync: ReadyForQuery.
    Sync,
    /// A simple Query: everything up to ReadyForQuery.
    SimpleQuery,
    /// FunctionCall: FunctionCallResponse, then ReadyForQuery.
    FunctionCall,
    /// Not a request: marks where the client ended a COPY FROM STDIN (CopyDone or CopyFail).
    /// Postgres ignores Sync while copying in, so Syncs between a COPY's start and this
    /// marker get no answer.
    CopyEnd,
}

impl Expect {
    /// True when `message` is the last answer to this kind of message.
    fn completed_by(self, message: &BackendMessage) -> bool {
        use BackendMessage as B;
        match self {
            Expect::Parse => matches!(message, B::ParseComplete),
            Expect::Bind => matches!(message, B::BindComplete),
            Expect::DescribeStatement | Expect::DescribePortal => {
                matches!(message, B::RowDescription(_) | B::NoData)
            }
            Expect::Execute => matches!(
                message,
                B::CommandComplete(_) | B::EmptyQueryResponse | B::PortalSuspended
            ),
            Expect::Close => matches!(message, B::CloseComplete),
            Expect::Sync | Expect::SimpleQuery | Expect::FunctionCall => {
                matches!(message, B::ReadyForQuery(_))
            }
            Expect::CopyEnd => false,
        }
    }

    /// True for entries that end an error-skipping run (the server answers them even after an
    /// error).
    fn survives_errors(self) -> bool {
        matches!(
            self,
            Expect::Sync | Expect::SimpleQuery | Expect::FunctionCall
        )
    }
}

/// What to do with answers to one sent message.
#[derive(Debug)]
enum Disposition {
    /// Pass them to the client, renaming origin statement names in error messages back to the
    /// client's names.
    Forward { renames: Vec<(PgString, PgString)> },
    /// Pass them to the client, but replace the origin's ErrorResponse by this one (a refused
    /// statement, see [`REFUSED_STATEMENT`]).
    ReplaceError(ErrorFields),
    /// The proxy's settings snapshot ([`SETTINGS_SNAPSHOT_QUERY`]): keep the rows, answer
    /// nothing.
    CaptureSettings(Vec<(String, String)>),
    /// The proxy sent this message itself: drop the answers.
    Swallow,
    /// The proxy answered the client itself: emit this when the entry reaches the head.
    Synthetic(BackendMessage),
    /// Nothing to answer: dropped when it reaches the head.
    Marker,
}

/// Bookkeeping to undo if the origin rejects the message.
#[derive(Debug)]
enum Undo {
    /// A statement believed prepared on the connection is not.
    ForgetOrigin(PgString),
    /// A statement the client believed it defined is not.
    ForgetClient(PgString),
}

/// One message sent to the origin (or answered locally) that awaits its answer.
#[derive(Debug)]
pub struct Pending {
    expect: Expect,
    disposition: Disposition,
    undo: Vec<Undo>,
}

/// Bytes to write, produced by the session.
#[derive(Debug, Default)]
pub struct Outbox {
    /// For the origin connection.
    pub to_origin: BytesMut,
    /// For the client.
    pub to_client: BytesMut,
}

/// A failure that ends the session (the client gets an ErrorResponse, then is disconnected).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client sent a message that is invalid at this point.
    #[error("{0}")]
    ClientProtocol(String),
    /// The origin sent something no pending request can explain: the connection is out of sync
    /// and must be closed.
    #[error(
        "unexpected {0} from the origin server; the server connection is out of sync and was closed"
    )]
    OriginDesync(&'static str),
    /// A message could not be encoded (a bug, or a client-supplied value that cannot be sent).
    #[error("{0}")]
    Encode(#[from] elephant_protocol::EncodeError),
    /// A named limit was exceeded.
    #[error("{0}")]
    Limit(String),
    /// The origin failed the proxy's reset or settings snapshot: the client's settings on the
    /// connection are unknown, so its session ends rather than run with settings it did not
    /// choose.
    #[error(
        "the server connection could not apply or report this session's settings ({0}); the session is closed so that it never runs with settings it did not choose"
    )]
    SettingsLost(String),
}

impl SessionError {
    /// SQLSTATE for the ErrorResponse.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::ClientProtocol(_) => "08P01",
            SessionError::OriginDesync(_) | SessionError::Encode(_) => {
                crate::origin::PROXY_ERROR_SQLSTATE
            }
            SessionError::Limit(_) => "53000",
            SessionError::SettingsLost(_) => crate::origin::PROXY_ERROR_SQLSTATE,
        }
    }
}

/// One client's session state.
#[derive(Debug)]
pub struct Session {
    statements: ClientStatements,
    pending: VecDeque<Pending>,
    /// After an error in an extended batch, messages up to the client's Sync are skipped by
    /// the origin; nothing of theirs gets answered.
    skipping_until_sync: bool,
    /// The proxy itself failed a message of an extended batch without an origin connection:
    /// like Postgres, ignore everything up to Sync.
    skipping_locally: bool,
    status: TransactionStatus,
    /// The origin has received messages of an extended-protocol batch not yet ended by Sync:
    /// it holds a portal or an implicit transaction, so the connection cannot change hands.
    batch_open: bool,
    copy_in: bool,
    /// The client's settings, applied on every connection it uses: its startup options at
    /// first, then what the origin reported after each transaction that may have changed them.
    settings: Vec<(String, String)>,
    /// The settings of the client's startup packet: what `RESET` returns to in Postgres.
    startup_settings: Vec<(String, String)>,
    /// A statement of the current lend may have changed a setting: read them back before the
    /// connection goes back to the pool.
    settings_may_have_changed: bool,
    /// Custom (`prefix.name`) settings the client set or reset: `pg_settings` does not list
    /// them, so the read-back asks for each by name.
    custom_settings: BTreeSet<String>,
    /// The client keeps its origin connection until it disconnects (session pool mode, or a
    /// session feature under the `pin` policy).
    pinned: bool,
    /// The origin is copying in and the client has not ended the COPY yet: its Syncs and
    /// Flushes are ignored by Postgres.
    syncs_ignored_until_copy_end: bool,
    /// The current lend may have changed session state.
    dirty: bool,
    /// Query count, for metrics.
    queries: u64,
    /// Parses sent to origin connections for named statements since last taken, for metrics.
    origin_prepares: u64,
}

impl Session {
    /// A session whose client asked for `settings` at startup.
    pub fn new(settings: Vec<(String, String)>) -> Self {
        Session {
            statements: ClientStatements::default(),
            pending: VecDeque::new(),
            skipping_until_sync: false,
            skipping_locally: false,
            status: TransactionStatus::Idle,
            batch_open: false,
            copy_in: false,
            startup_settings: settings.clone(),
            custom_settings: settings
                .iter()
                .filter(|(name, _)| name.contains('.'))
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect(),
            settings,
            settings_may_have_changed: false,
            pinned: false,
            syncs_ignored_until_copy_end: false,
            dirty: false,
            queries: 0,
            origin_prepares: 0,
        }
    }

    /// The transaction status the client last saw.
    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    /// True while the client is in COPY FROM STDIN.
    pub fn in_copy_in(&self) -> bool {
        self.copy_in
    }

    /// Queries started so far.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// Parses sent to origin connections for named statements since the last call.
    pub fn take_origin_prepares(&mut self) -> u64 {
        std::mem::take(&mut self.origin_prepares)
    }

    /// True when the current transaction is over and every answer has arrived: the origin
    /// connection can go back to the pool — unless the session is pinned, or its settings
    /// must be read back first ([`Session::wants_settings_snapshot`]).
    pub fn transaction_finished(&self) -> bool {
        self.idle() && !self.pinned
    }

    /// True when no transaction, batch, COPY or answer is outstanding on the connection.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.status == TransactionStatus::Idle
            && !self.copy_in
            && !self.batch_open
    }

    /// Keeps the client on its origin connection from now until it disconnects.
    pub fn pin(&mut self) {
        self.pinned = true;
    }

    /// True once [`Session::pin`] was called.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// True when the finished transaction may have changed settings, which must be read back
    /// ([`Session::request_settings_snapshot`]) before the connection is released.
    pub fn wants_settings_snapshot(&self) -> bool {
        self.settings_may_have_changed && !self.pinned && self.idle()
    }

    /// Asks the origin for the session's settings; the answer replaces the client's settings
    /// ([`Disposition::CaptureSettings`]).
    pub fn request_settings_snapshot(&mut self, out: &mut Outbox) -> Result<(), SessionError> {
        self.settings_may_have_changed = false;
        // A simple query destroys the origin's unnamed statement.
        self.statements.unnamed_invalidated();
        FrontendMessage::Query(PgString::from(settings_snapshot_query(
            &self.custom_settings,
        )))
        .encode(&mut out.to_origin)?;
        self.push(
            Expect::SimpleQuery,
            Disposition::CaptureSettings(Vec::new()),
        );
        Ok(())
    }

    /// True when a statement from the client would be executed (not skipped after an error):
    /// only then is it checked for session features.
    pub fn executes_statements(&self) -> bool {
        !self.skipping_locally && !self.skipping_until_sync
    }

    /// Answers a refused Query or Parse with `fields`. Without a connection the proxy answers
    /// as Postgres does for a failing statement outside a transaction; with one, the origin is
    /// made to fail at the same place ([`REFUSED_STATEMENT`]) so the transaction and the
    /// batch end exactly as they would have.
    pub fn refuse(
        &mut self,
        fields: ErrorFields,
        message: &FrontendMessage,
        connection: Option<&mut OriginConnection>,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let simple = matches!(message, FrontendMessage::Query(_));
        if connection.is_none() {
            // Postgres drops the unnamed statement for any simple query and any unnamed Parse,
            // even one that fails.
            if simple || matches!(message, FrontendMessage::Parse(p) if p.name.is_empty()) {
                self.statements.unnamed_destroyed();
            }
            BackendMessage::ErrorResponse(fields).encode(&mut out.to_client)?;
            if simple {
                self.push(
                    Expect::SimpleQuery,
                    Disposition::Synthetic(BackendMessage::ReadyForQuery(self.status)),
                );
            } else {
                self.skipping_locally = true;
            }
            return self.emit_synthetic(out);
        }
        // The substitute below destroys the origin's unnamed statement; the client's own
        // unnamed statement is gone only if it sent a simple query or an unnamed Parse.
        if simple || matches!(message, FrontendMessage::Parse(p) if p.name.is_empty()) {
            self.statements.unnamed_destroyed();
        } else {
            self.statements.unnamed_invalidated();
        }
        if simple {
            FrontendMessage::Query(PgString::from(REFUSED_STATEMENT)).encode(&mut out.to_origin)?;
            self.push(Expect::SimpleQuery, Disposition::ReplaceError(fields));
            self.batch_open = false;
        } else {
            parse_message(
                &StatementDefinition::new(PgString::from(REFUSED_STATEMENT), Vec::new()),
                PgString::default(),
            )
            .encode(&mut out.to_origin)?;
            self.push(Expect::Parse, Disposition::ReplaceError(fields));
            self.batch_open = true;
        }
        Ok(())
    }

    /// True when answering `message` needs an origin connection; otherwise
    /// [`Session::answer_locally`] handles it.
    pub fn needs_origin(&self, message: &FrontendMessage) -> bool {
        if self.skipping_locally {
            return false;
        }
        match message {
            FrontendMessage::Terminate => false,
            FrontendMessage::Close {
                target: Target::Statement,
                ..
            } => false,
            FrontendMessage::Sync | FrontendMessage::Flush => !self.pending.is_empty(),
            _ => true,
        }
    }

    /// True for a named Parse outside any transaction and batch: the proxy may acknowledge it
    /// itself and prepare it on the origin at first use ([`Session::defer_parse`]) when no
    /// connection is free. Clients that prepare synchronously while other sessions hold
    /// every connection in open transactions (pgbench `-M prepared` with more clients per
    /// thread than pooled connections) would otherwise wait for each other forever.
    pub fn can_defer(&self, message: &FrontendMessage) -> bool {
        !self.pinned
            && matches!(message, FrontendMessage::Parse(parse) if !parse.name.is_empty())
            && self.pending.is_empty()
            && self.status == TransactionStatus::Idle
            && !self.skipping_until_sync
            && !self.skipping_locally
    }

    /// Acknowledges a named Parse without an origin connection (see [`Session::can_defer`]).
    /// The statement is prepared on whichever connection first needs it; if it does not
    /// parse, that error reaches the client at its first Bind or Describe instead of here.
    pub fn defer_parse(
        &mut self,
        message: FrontendMessage,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let FrontendMessage::Parse(parse) = message else {
            return Err(SessionError::ClientProtocol(
                "only Parse can be deferred".into(),
            ));
        };
        if self.statements.contains(&parse.name) {
            let fields = ErrorFields::new(
                "ERROR",
                "42P05",
                format!("prepared statement \"{}\" already exists", parse.name),
            );
            BackendMessage::ErrorResponse(fields).encode(&mut out.to_client)?;
            self.skipping_locally = true;
            return Ok(());
        }
        if self.statements.len() >= MAX_STATEMENTS_PER_CLIENT {
            return Err(SessionError::Limit(format!(
                "too many prepared statements: a client may hold at most {MAX_STATEMENTS_PER_CLIENT}; close unused ones"
            )));
        }
        let definition = Arc::new(StatementDefinition::new(parse.query, parse.parameter_types));
        self.statements.insert(parse.name, definition);
        self.push(
            Expect::Parse,
            Disposition::Synthetic(BackendMessage::ParseComplete),
        );
        self.emit_synthetic(out)
    }

    /// Handles a message that needs no origin connection (only valid when
    /// [`Session::needs_origin`] is false and no connection is attached).
    pub fn answer_locally(
        &mut self,
        message: FrontendMessage,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        if self.skipping_locally {
            // Like Postgres after an error in an extended batch: ignore everything up to
            // Sync, which ends the skipping and is answered.
            if matches!(message, FrontendMessage::Sync) {
                self.skipping_locally = false;
                self.push(
                    Expect::Sync,
                    Disposition::Synthetic(BackendMessage::ReadyForQuery(self.status)),
                );
            }
            return self.emit_synthetic(out);
        }
        match message {
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } => {
                self.close_statement(name);
            }
            FrontendMessage::Sync => self.push(
                Expect::Sync,
                Disposition::Synthetic(BackendMessage::ReadyForQuery(self.status)),
            ),
            _ => {}
        }
        self.emit_synthetic(out)
    }

    /// Prepares a newly lent connection for this client: resets what the previous user may
    /// have changed and applies this client's settings, pipelined ahead of the client's own
    /// messages (its answers are swallowed).
    pub fn attach(
        &mut self,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        self.dirty = false;
        // Another session may have parsed its own unnamed statement on this connection since
        // this client last used it (found by the simulator): prepare ours again before use.
        self.statements.unnamed_invalidated();
        let settings_differ = connection.applied_settings != self.settings;
        if !connection.needs_reset && !connection.needs_full_reset && !settings_differ {
            return Ok(());
        }
        let mut sql = String::new();
        if connection.needs_full_reset {
            sql.push_str(RESET_QUERY);
            sql.push_str(FULL_RESET_EXTRA);
            connection.statements.clear();
            connection.needs_full_reset = false;
        } else if (connection.needs_reset || !connection.applied_settings.is_empty())
            && !crate::buggify::enabled(crate::buggify::Bug::SkipResetOnReturn)
        {
            sql.push_str(RESET_QUERY);
        }
        sql.push_str(&apply_settings_query(&self.settings));
        FrontendMessage::Query(PgString::from(sql)).encode(&mut out.to_origin)?;
        self.push(Expect::SimpleQuery, Disposition::Swallow);
        self.statements.unnamed_invalidated();
        connection.applied_settings = self.settings.clone();
        connection.needs_reset = false;
        Ok(())
    }

    /// Called when the connection goes back to the pool: remembers whether it needs a reset.
    pub fn detach(&mut self, connection: &mut OriginConnection) {
        connection.needs_reset |= self.dirty || self.pinned;
        connection.needs_full_reset |= self.pinned;
        self.dirty = false;
    }

    fn push(&mut self, expect: Expect, disposition: Disposition) {
        self.push_with_undo(expect, disposition, Vec::new());
    }

    fn push_with_undo(&mut self, expect: Expect, disposition: Disposition, undo: Vec<Undo>) {
        self.pending.push_back(Pending {
            expect,
            disposition,
            undo,
        });
    }

    fn forward(&mut self, expect: Expect) {
        self.push(
            expect,
            Disposition::Forward {
                renames: Vec::new(),
            },
        );
    }

    /// Emits every synthetic answer (and drops every marker) that has reached the head.
    fn emit_synthetic(&mut self, out: &mut Outbox) -> Result<(), SessionError> {
        while let Some(Pending {
            disposition: Disposition::Synthetic(_) | Disposition::Marker,
            ..
        }) = self.pending.front()
        {
            let Some(entry) = self.pending.pop_front() else {
                break;
            };
            if let Disposition::Synthetic(message) = entry.disposition {
                if let BackendMessage::ReadyForQuery(status) = &message {
                    self.status = *status;
                }
                message.encode(&mut out.to_client)?;
            }
        }
        Ok(())
    }

    /// The origin entered COPY FROM STDIN for the head entry: the Syncs the client sent after
    /// it, up to its CopyDone/CopyFail, will be ignored by Postgres, so expect no answer.
    fn copy_in_started(&mut self) {
        self.copy_in = true;
        let mut index = 1;
        while index < self.pending.len() {
            match self.pending[index].expect {
                Expect::CopyEnd => return,
                Expect::Sync => {
                    self.pending.remove(index);
                }
                _ => index += 1,
            }
        }
        self.syncs_ignored_until_copy_end = true;
    }

    /// Translates one client message onto the attached origin connection.
    pub fn client_message(
        &mut self,
        message: FrontendMessage,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let sent_before = out.to_origin.len();
        let ends_batch = matches!(
            message,
            FrontendMessage::Sync | FrontendMessage::Query(_) | FrontendMessage::FunctionCall(_)
        );
        let neutral = matches!(message, FrontendMessage::Flush);
        self.translate(message, connection, out)?;
        if ends_batch {
            self.batch_open = false;
        } else if !neutral && out.to_origin.len() > sent_before {
            self.batch_open = true;
        }
        Ok(())
    }

    fn translate(
        &mut self,
        message: FrontendMessage,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        if self.skipping_until_sync {
            return self.client_message_while_skipping(message, out);
        }
        match message {
            FrontendMessage::Query(sql) => self.simple_query(sql, out)?,
            FrontendMessage::Parse(parse) => self.parse(parse, connection, out)?,
            FrontendMessage::Bind(bind) => self.bind(bind, connection, out)?,
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } => {
                let renames = self.use_statement(&name, connection, out)?;
                let origin_name = renames
                    .first()
                    .map_or(name.clone(), |(origin, _)| origin.clone());
                FrontendMessage::Describe {
                    target: Target::Statement,
                    name: origin_name,
                }
                .encode(&mut out.to_origin)?;
                self.push(Expect::DescribeStatement, Disposition::Forward { renames });
            }
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            } => self.close_statement(name),
            FrontendMessage::Sync if self.syncs_ignored_until_copy_end => {
                self.pass(message, None, out)?
            }
            FrontendMessage::Sync => self.pass(message, Some(Expect::Sync), out)?,
            message @ (FrontendMessage::CopyDone | FrontendMessage::CopyFail(_)) => {
                self.syncs_ignored_until_copy_end = false;
                self.pass(message, None, out)?;
                self.push(Expect::CopyEnd, Disposition::Marker);
            }
            FrontendMessage::FunctionCall(_) => {
                self.queries += 1;
                self.dirty = true;
                self.pass(message, Some(Expect::FunctionCall), out)?;
            }
            message @ FrontendMessage::Describe {
                target: Target::Portal,
                ..
            } => self.pass(message, Some(Expect::DescribePortal), out)?,
            message @ FrontendMessage::Close {
                target: Target::Portal,
                ..
            } => self.pass(message, Some(Expect::Close), out)?,
            message @ FrontendMessage::Execute { .. } => {
                self.queries += 1;
                self.pass(message, Some(Expect::Execute), out)?
            }
            message @ (FrontendMessage::Flush | FrontendMessage::CopyData(_)) => {
                self.pass(message, None, out)?
            }
            other => {
                return Err(SessionError::ClientProtocol(format!(
                    "unexpected {} message after startup",
                    other.name()
                )));
            }
        }
        self.emit_synthetic(out)
    }

    /// Forwards a message unchanged, expecting `expect` as its answer.
    fn pass(
        &mut self,
        message: FrontendMessage,
        expect: Option<Expect>,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        message.encode(&mut out.to_origin)?;
        if let Some(expect) = expect {
            self.forward(expect);
        }
        Ok(())
    }

    /// After an error the origin skips to Sync: forward raw, record nothing, answer nothing.
    fn client_message_while_skipping(
        &mut self,
        message: FrontendMessage,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        match message {
            FrontendMessage::Sync => {
                self.skipping_until_sync = false;
                self.pass(message, Some(Expect::Sync), out)?;
            }
            FrontendMessage::Close {
                target: Target::Statement,
                ..
            } => {}
            FrontendMessage::Query(_) | FrontendMessage::FunctionCall(_) => {
                return Err(SessionError::ClientProtocol(
                    "a simple query arrived in the middle of an extended-protocol batch that failed; send Sync first".into(),
                ));
            }
            message => message.encode(&mut out.to_origin)?,
        }
        self.emit_synthetic(out)
    }

    fn simple_query(&mut self, sql: PgString, out: &mut Outbox) -> Result<(), SessionError> {
        self.queries += 1;
        self.dirty |= may_change_session_state(&sql);
        self.settings_may_have_changed |= crate::sql::may_change_settings(sql.as_bytes());
        self.custom_settings
            .extend(crate::sql::custom_setting_names(sql.as_bytes()));
        // A simple query destroys the unnamed statement on the connection it runs on.
        self.statements.unnamed_destroyed();
        FrontendMessage::Query(sql).encode(&mut out.to_origin)?;
        self.forward(Expect::SimpleQuery);
        Ok(())
    }

    fn parse(
        &mut self,
        parse: Parse,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let definition = Arc::new(StatementDefinition::new(
            parse.query.clone(),
            parse.parameter_types.clone(),
        ));
        if parse.name.is_empty() {
            self.statements.set_unnamed(definition, connection.id());
            FrontendMessage::Parse(parse).encode(&mut out.to_origin)?;
            self.forward(Expect::Parse);
            return Ok(());
        }
        if self.statements.contains(&parse.name) {
            return self.duplicate_statement(parse.name, connection, out);
        }
        if self.statements.len() >= MAX_STATEMENTS_PER_CLIENT {
            return Err(SessionError::Limit(format!(
                "too many prepared statements: a client may hold at most {MAX_STATEMENTS_PER_CLIENT}; close unused ones"
            )));
        }
        self.statements
            .insert(parse.name.clone(), definition.clone());
        match connection.statements.prepare(&definition) {
            Preparation::Ready => {
                self.push(
                    Expect::Parse,
                    Disposition::Synthetic(BackendMessage::ParseComplete),
                );
            }
            Preparation::Prepare { close_first } => {
                self.origin_prepares += 1;
                self.close_on_origin(close_first, out)?;
                parse_message(&definition, definition.origin_name.clone())
                    .encode(&mut out.to_origin)?;
                self.push_with_undo(
                    Expect::Parse,
                    Disposition::Forward {
                        renames: vec![(definition.origin_name.clone(), parse.name.clone())],
                    },
                    vec![
                        Undo::ForgetOrigin(definition.origin_name.clone()),
                        Undo::ForgetClient(parse.name),
                    ],
                );
            }
        }
        Ok(())
    }

    /// A Parse reusing a name the client already has: let the origin produce the genuine
    /// "already exists" error by parsing again under the existing statement's origin name.
    fn duplicate_statement(
        &mut self,
        name: PgString,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let mut renames = self.use_statement(&name, connection, out)?;
        let origin_name = renames
            .first()
            .map_or(name.clone(), |(origin, _)| origin.clone());
        let definition = self.statements.get(&name).cloned();
        if let Some(definition) = definition {
            parse_message(&definition, origin_name).encode(&mut out.to_origin)?;
        }
        renames.truncate(1);
        self.push(Expect::Parse, Disposition::Forward { renames });
        Ok(())
    }

    /// Makes the client's statement `name` usable on this connection (injecting a Parse if
    /// needed) and returns the rename (origin name → client name) for answers.
    fn use_statement(
        &mut self,
        name: &PgString,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<Vec<(PgString, PgString)>, SessionError> {
        if name.is_empty() {
            if let Some(definition) = self.statements.unnamed_to_reprepare(connection.id()) {
                parse_message(&definition, PgString::default()).encode(&mut out.to_origin)?;
                self.push(Expect::Parse, Disposition::Swallow);
            }
            return Ok(Vec::new());
        }
        let Some(definition) = self.statements.get(name).cloned() else {
            return Ok(vec![(PgString::from(UNDEFINED_STATEMENT), name.clone())]);
        };
        if let Preparation::Prepare { close_first } = connection.statements.prepare(&definition) {
            self.origin_prepares += 1;
            self.close_on_origin(close_first, out)?;
            parse_message(&definition, definition.origin_name.clone())
                .encode(&mut out.to_origin)?;
            self.push_with_undo(
                Expect::Parse,
                Disposition::Forward {
                    renames: vec![(definition.origin_name.clone(), name.clone())],
                },
                vec![Undo::ForgetOrigin(definition.origin_name.clone())],
            );
            // The client did not send this Parse: its success must not reach the client, its
            // failure must (the client's own message would fail the same way).
            if let Some(last) = self.pending.back_mut() {
                last.disposition = Disposition::Swallow;
            }
        }
        Ok(vec![(definition.origin_name.clone(), name.clone())])
    }

    fn close_on_origin(
        &mut self,
        names: Vec<PgString>,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        for name in names {
            FrontendMessage::Close {
                target: Target::Statement,
                name,
            }
            .encode(&mut out.to_origin)?;
            self.push(Expect::Close, Disposition::Swallow);
        }
        Ok(())
    }

    fn bind(
        &mut self,
        bind: Bind,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        // A prepared SET (or any statement that may change session state) taints the
        // connection each time it runs, not only when it was parsed.
        if let Some(definition) = self.statements.definition(&bind.statement) {
            self.dirty |= definition.may_change_session;
            self.settings_may_have_changed |= definition.may_change_settings;
            if definition.may_change_settings {
                let names = crate::sql::custom_setting_names(definition.query.as_bytes());
                self.custom_settings.extend(names);
            }
        }
        let renames = self.use_statement(&bind.statement, connection, out)?;
        let statement = renames
            .first()
            .map_or(bind.statement.clone(), |(origin, _)| origin.clone());
        FrontendMessage::Bind(Bind { statement, ..bind }).encode(&mut out.to_origin)?;
        self.push(Expect::Bind, Disposition::Forward { renames });
        Ok(())
    }

    fn close_statement(&mut self, name: PgString) {
        // Statements stay prepared on origin connections for other clients; only the client's
        // name goes away. Postgres answers CloseComplete even for unknown names.
        if name.is_empty() {
            self.statements.unnamed_destroyed();
        } else {
            self.statements.remove(&name);
        }
        self.push(
            Expect::Close,
            Disposition::Synthetic(BackendMessage::CloseComplete),
        );
    }

    /// Routes one origin message. Returns an error when the connection is out of sync.
    pub fn origin_message(
        &mut self,
        message: BackendMessage,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        let swallowing = matches!(
            self.pending.front(),
            Some(Pending {
                disposition: Disposition::Swallow | Disposition::CaptureSettings(_),
                ..
            })
        );
        match &message {
            BackendMessage::NoticeResponse(_) | BackendMessage::NotificationResponse { .. } => {
                if !swallowing {
                    message.encode(&mut out.to_client)?;
                }
                return Ok(());
            }
            BackendMessage::ParameterStatus { .. } => {
                if !swallowing {
                    self.dirty = true;
                    self.settings_may_have_changed = true;
                    message.encode(&mut out.to_client)?;
                }
                return Ok(());
            }
            BackendMessage::DataRow(row) => self.capture_setting(row),
            BackendMessage::ErrorResponse(fields) => {
                return self.origin_error(fields.clone(), connection, out);
            }
            BackendMessage::CommandComplete(tag) => {
                self.copy_in = false;
                // The proxy's own full reset forgot the statements when it was sent (and
                // later Parses in the pipeline are real): only a client's DEALLOCATE counts.
                if !swallowing {
                    note_deallocation(tag, connection);
                }
            }
            BackendMessage::CopyInResponse(_) => self.copy_in_started(),
            _ => {}
        }
        let Some(head) = self.pending.front() else {
            return Err(SessionError::OriginDesync(message.name()));
        };
        let completes = head.expect.completed_by(&message);
        if !swallowing {
            message.encode(&mut out.to_client)?;
        }
        if completes {
            if let BackendMessage::ReadyForQuery(status) = message {
                self.status = status;
                self.copy_in = false;
            }
            if let Some(Pending {
                disposition: Disposition::CaptureSettings(settings),
                ..
            }) = self.pending.pop_front()
            {
                connection.applied_settings = settings.clone();
                self.settings = self.with_startup_defaults(settings);
            }
        }
        self.emit_synthetic(out)
    }

    /// The snapshot plus every startup setting it lacks: in Postgres `RESET` (or `RESET ALL`,
    /// `DISCARD ALL`) returns a setting to its startup value, while on the origin it returned
    /// to the connection's default (the proxy applied the startup value with `set_config`).
    fn with_startup_defaults(&self, mut settings: Vec<(String, String)>) -> Vec<(String, String)> {
        for (name, value) in &self.startup_settings {
            if !settings.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                settings.push((name.clone(), value.clone()));
            }
        }
        settings
    }

    /// Keeps one `(name, setting)` row of the settings snapshot.
    fn capture_setting(&mut self, row: &elephant_protocol::backend::DataRow) {
        let Some(Pending {
            disposition: Disposition::CaptureSettings(settings),
            ..
        }) = self.pending.front_mut()
        else {
            return;
        };
        if let [Some(name), Some(value)] = row.values() {
            // Per-transaction settings (`SET TRANSACTION ...` leaves them `session`-sourced)
            // must not be replayed: they cannot be set once a transaction has a snapshot.
            if name.starts_with(b"transaction_") {
                return;
            }
            settings.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }

    fn origin_error(
        &mut self,
        fields: ErrorFields,
        connection: &mut OriginConnection,
        out: &mut Outbox,
    ) -> Result<(), SessionError> {
        self.copy_in = false;
        let Some(head) = self.pending.pop_front() else {
            // An error nobody asked for (e.g. the origin shutting down): pass it on.
            BackendMessage::ErrorResponse(fields).encode(&mut out.to_client)?;
            return Ok(());
        };
        for undo in &head.undo {
            match undo {
                Undo::ForgetOrigin(name) => connection.statements.forget(name),
                Undo::ForgetClient(name) => self.statements.remove(name),
            }
        }
        let renames = match &head.disposition {
            Disposition::Forward { renames } => renames.as_slice(),
            _ => &[],
        };
        // Errors of injected messages still reach the client: its own next message would have
        // failed the same way. Errors of the proxy's reset and settings snapshot do not.
        let is_proxy_query = head.expect == Expect::SimpleQuery
            && matches!(
                head.disposition,
                Disposition::Swallow | Disposition::CaptureSettings(_)
            );
        if is_proxy_query {
            // The reset (with the client's settings) or the settings snapshot failed: the
            // client's statements would run with settings it did not choose.
            connection.broken = true;
            let reason = fields
                .get(field::MESSAGE)
                .map(|m| m.to_string())
                .unwrap_or_default();
            return Err(SessionError::SettingsLost(reason));
        } else if let Disposition::ReplaceError(refusal) = &head.disposition {
            BackendMessage::ErrorResponse(refusal.clone()).encode(&mut out.to_client)?;
        } else {
            BackendMessage::ErrorResponse(rename(fields, renames)).encode(&mut out.to_client)?;
        }
        if head.expect.survives_errors() {
            // The entry ends at its ReadyForQuery, which is still to come.
            self.pending.push_front(head);
            return Ok(());
        }
        self.skip_to_sync();
        self.emit_synthetic(out)
    }

    /// Drops every entry the origin will not answer after an extended-protocol error.
    fn skip_to_sync(&mut self) {
        while let Some(entry) = self.pending.front() {
            if entry.expect.survives_errors() {
                return;
            }
            self.pending.pop_front();
        }
        self.skipping_until_sync = true;
    }

    /// Frames what must be sent to end the client's transaction after it vanished: fail a
    /// COPY in progress, end any extended batch, roll back. Answers are swallowed.
    pub fn abandon(&mut self, out: &mut Outbox) -> Result<(), SessionError> {
        // Answers the proxy would have made itself are simply dropped; the origin's are awaited
        // and swallowed.
        self.pending.retain(|entry| {
            !matches!(
                entry.disposition,
                Disposition::Synthetic(_) | Disposition::Marker
            )
        });
        for entry in &mut self.pending {
            entry.disposition = Disposition::Swallow;
        }
        self.batch_open = false;
        if self.copy_in {
            FrontendMessage::CopyFail(PgString::from("client disconnected"))
                .encode(&mut out.to_origin)?;
        }
        FrontendMessage::Sync.encode(&mut out.to_origin)?;
        self.push(Expect::Sync, Disposition::Swallow);
        FrontendMessage::Query(PgString::from("ROLLBACK")).encode(&mut out.to_origin)?;
        self.push(Expect::SimpleQuery, Disposition::Swallow);
        self.skipping_until_sync = false;
        self.dirty = true;
        out.to_client.clear();
        Ok(())
    }
}

/// After a client's `DEALLOCATE ALL` or `DISCARD ALL`, forget what the connection had.
fn note_deallocation(tag: &PgString, connection: &mut OriginConnection) {
    let tag = tag.as_bytes();
    if tag == b"DEALLOCATE ALL" || tag == b"DISCARD ALL" {
        // The origin dropped every prepared statement, including the proxy's.
        connection.statements.clear();
    }
}

fn parse_message(definition: &StatementDefinition, name: PgString) -> FrontendMessage {
    FrontendMessage::Parse(Parse {
        name,
        query: definition.query.clone(),
        parameter_types: definition.parameter_types.clone(),
    })
}

/// Replaces origin statement names by the client's in an error's message and detail.
fn rename(mut fields: ErrorFields, renames: &[(PgString, PgString)]) -> ErrorFields {
    if renames.is_empty() {
        return fields;
    }
    for (code, value) in &mut fields.fields {
        if *code != field::MESSAGE && *code != field::DETAIL {
            continue;
        }
        let mut text = value.to_string();
        for (origin, client) in renames {
            text = text.replace(&format!("\"{origin}\""), &format!("\"{client}\""));
        }
        *value = PgString::from(text);
    }
    fields
}

/// Conservative check: false only for statements that provably leave no session state
/// behind (plain DML and transaction control without function calls or several statements).
/// True means the connection gets a reset before its next lend.
pub fn may_change_session_state(sql: &PgString) -> bool {
    let Some(text) = sql.as_str() else {
        return true;
    };
    let trimmed = text.trim().trim_end_matches(';').trim();
    if trimmed.contains(';')
        || trimmed.contains('(')
        || trimmed.starts_with("--")
        || trimmed.starts_with("/*")
    {
        return true;
    }
    let first_word = trimmed
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    let lower = trimmed.to_ascii_lowercase();
    let harmless = matches!(
        first_word.as_str(),
        "SELECT"
            | "INSERT"
            | "UPDATE"
            | "DELETE"
            | "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "ABORT"
            | "VALUES"
            | "TABLE"
    );
    !harmless || lower.contains(" into ") && first_word == "SELECT"
}

/// [`SETTINGS_SNAPSHOT_QUERY`], plus each custom setting in `custom` that exists on the
/// connection (Postgres hides custom settings no extension defines from `pg_settings`).
fn settings_snapshot_query(custom: &BTreeSet<String>) -> String {
    if custom.is_empty() {
        return SETTINGS_SNAPSHOT_QUERY.to_string();
    }
    let names: Vec<String> = custom.iter().map(|name| quote_literal(name)).collect();
    let base = SETTINGS_SNAPSHOT_QUERY.trim_end_matches(" ORDER BY 1");
    format!(
        "{base} UNION SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[{}]::text[]) AS n \
         WHERE pg_catalog.current_setting(n, true) IS NOT NULL ORDER BY 1",
        names.join(", ")
    )
}

/// `SELECT set_config(...)` applying `settings` for the session, or nothing when there are
/// none. `set_config` takes the value as the setting's own text (a list setting such as
/// `search_path` keeps its elements), where `SET name = 'literal'` would make it one element.
pub fn apply_settings_query(settings: &[(String, String)]) -> String {
    if settings.is_empty() {
        return String::new();
    }
    let calls: Vec<String> = settings
        .iter()
        .map(|(name, value)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(name),
                quote_literal(value)
            )
        })
        .collect();
    format!(" SELECT {};", calls.join(", "))
}

/// Quotes a literal for SQL (`'value'`, doubling embedded quotes; standard_conforming_strings
/// is on in every supported Postgres).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
