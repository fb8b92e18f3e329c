//! One fake backend after startup: the simple and extended query protocols, transactions,
//! prepared statements and portals, and statement execution against the shared bank.
//!
//! Message handlers write their answers into a `Vec<BackendMessage>` and return a
//! [`PgError`] on failure; [`Backend::run`] turns errors into ErrorResponses, applies
//! Postgres's recovery rule (a failed extended-protocol message makes the backend skip
//! everything up to Sync) and sends ReadyForQuery. Only `pg_sleep` makes a handler wait, and it
//! is the one place a CancelRequest or `statement_timeout` can interrupt.

use super::Shared;
use super::bank::{PendingWrites, Transfer};
use super::conn::{Conn, ConnError};
use super::error::{Notice, PgError};
use super::plan::{self, Column, EvalContext};
use super::settings::Settings;
use super::sql::{DiscardTarget, Expr, Statement, parse_query};
use super::types::{FORMAT_BINARY, FORMAT_TEXT, PgType, Value, decode_parameter};
use elephant_protocol::{
    BackendMessage, Bind, DataRow, FieldDescription, FrontendMessage, Parse, PgString, Target,
    TransactionStatus,
};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Most prepared statements one backend keeps.
pub const MAX_PREPARED_STATEMENTS: usize = 10_000;

/// Most open portals one backend keeps.
pub const MAX_PORTALS: usize = 1_000;

/// What startup hands to the running backend.
pub(super) struct Session {
    /// Process id (also the cancel key's id).
    pub pid: i32,
    /// Signalled by a matching CancelRequest.
    pub cancel: Arc<Notify>,
    /// Settings after startup.
    pub settings: Settings,
}

/// Where the backend is with respect to transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxState {
    /// No transaction.
    Idle,
    /// A transaction started by a statement outside BEGIN (ends at the end of the Query
    /// message or at Sync).
    Implicit,
    /// Inside BEGIN ... COMMIT.
    Explicit,
    /// Inside a block that had an error.
    Failed,
}

/// A parsed statement kept by Parse.
#[derive(Debug)]
struct Prepared {
    /// `None` for an empty query.
    statement: Option<Statement>,
    param_types: Vec<PgType>,
    columns: Vec<Column>,
}

/// How far a portal's execution got.
#[derive(Debug)]
enum PortalState {
    /// Not executed yet.
    Ready,
    /// Rows computed, some not yet sent.
    Rows(VecDeque<Vec<Value>>),
    /// Finished; re-executing reports this tag.
    Done(String),
}

#[derive(Debug)]
struct Portal {
    prepared: Arc<Prepared>,
    params: Vec<Value>,
    formats: Vec<i16>,
    state: PortalState,
}

/// What a statement produced.
struct Outcome {
    rows: Vec<Vec<Value>>,
    tag: String,
    notices: Vec<Notice>,
}

impl Outcome {
    fn tag(tag: impl Into<String>) -> Self {
        Outcome {
            rows: Vec::new(),
            tag: tag.into(),
            notices: Vec::new(),
        }
    }

    fn rows(rows: Vec<Vec<Value>>) -> Self {
        let tag = format!("SELECT {}", rows.len());
        Outcome {
            rows,
            tag,
            notices: Vec::new(),
        }
    }

    fn with_notice(mut self, notice: Notice) -> Self {
        self.notices.push(notice);
        self
    }
}

/// A running backend.
pub(super) struct Backend {
    shared: Arc<Shared>,
    pid: i32,
    cancel: Arc<Notify>,
    settings: Settings,
    state: TxState,
    pending: PendingWrites,
    /// Settings at the start of the transaction (restored by rollback).
    snapshot: Option<Settings>,
    /// Parameters changed with SET LOCAL in this transaction.
    local: Vec<String>,
    statements: BTreeMap<PgString, Arc<Prepared>>,
    portals: BTreeMap<PgString, Portal>,
    /// After an error in an extended-protocol message: ignore everything up to Sync.
    skipping: bool,
    /// Reportable parameters as last sent.
    reported: Vec<(String, String)>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.unregister_backend(self.pid);
    }
}

impl Backend {
    pub(super) fn new(shared: Arc<Shared>, session: Session) -> Self {
        let reported = session.settings.reported();
        Backend {
            shared,
            pid: session.pid,
            cancel: session.cancel,
            settings: session.settings,
            state: TxState::Idle,
            pending: PendingWrites::default(),
            snapshot: None,
            local: Vec::new(),
            statements: BTreeMap::new(),
            portals: BTreeMap::new(),
            skipping: false,
            reported,
        }
    }

    /// Serves messages until Terminate, the peer closing, or a FATAL error.
    pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<(), ConnError> {
        loop {
            let message = match conn.read().await {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(ConnError::Protocol(error)) => {
                    let fatal = PgError::fatal(error.sqlstate(), error.to_string());
                    return Err(conn.fatal(fatal).await);
                }
                Err(error) => return Err(error),
            };
            let mut out = Vec::new();
            let step = match self.handle(message, &mut out).await {
                Ok(step) => step,
                Err(fatal) => return Err(conn.fatal(fatal).await),
            };
            for message in &out {
                conn.send(message)?;
            }
            match step {
                Step::Terminate => return Ok(()),
                Step::Flush => conn.flush().await?,
                Step::Continue => conn.flush_if_full().await?,
            }
        }
    }

    /// Handles one message; `Err` is a FATAL error that ends the connection.
    async fn handle(
        &mut self,
        message: FrontendMessage,
        out: &mut Vec<BackendMessage>,
    ) -> Result<Step, PgError> {
        match message {
            FrontendMessage::Terminate => return Ok(Step::Terminate),
            FrontendMessage::Sync => {
                self.sync(out);
                return Ok(Step::Flush);
            }
            FrontendMessage::Flush => return Ok(Step::Flush),
            // Postgres accepts and ignores COPY messages outside COPY.
            FrontendMessage::CopyData(_)
            | FrontendMessage::CopyDone
            | FrontendMessage::CopyFail(_) => {}
            _ if self.skipping => {}
            FrontendMessage::Query(sql) => {
                self.simple_query(&sql.to_string_lossy(), out).await;
                self.ready(out);
                return Ok(Step::Flush);
            }
            FrontendMessage::FunctionCall(_) => {
                let error = PgError::not_supported(
                    "fast-path function calls are not supported by the fake Postgres",
                );
                self.fail(&error, out);
                self.ready(out);
                return Ok(Step::Flush);
            }
            message @ (FrontendMessage::Parse(_)
            | FrontendMessage::Bind(_)
            | FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Close { .. }) => {
                if let Err(error) = self.extended(message, out).await {
                    self.fail(&error, out);
                    self.skipping = true;
                }
            }
            other => {
                let tag = other.tag().map_or(0, u32::from);
                return Err(PgError::fatal(
                    "08P01",
                    format!("invalid frontend message type {tag}"),
                ));
            }
        }
        Ok(Step::Continue)
    }

    async fn extended(
        &mut self,
        message: FrontendMessage,
        out: &mut Vec<BackendMessage>,
    ) -> Result<(), PgError> {
        match message {
            FrontendMessage::Parse(parse) => self.parse(parse, out),
            FrontendMessage::Bind(bind) => self.bind(bind, out),
            FrontendMessage::Describe {
                target: Target::Statement,
                name,
            } => self.describe_statement(&name, out),
            FrontendMessage::Describe {
                target: Target::Portal,
                name,
            } => self.describe_portal(&name, out),
            FrontendMessage::Execute { portal, max_rows } => {
                self.execute(&portal, max_rows, out).await
            }
            FrontendMessage::Close { target, name } => {
                match target {
                    Target::Statement => self.statements.remove(&name).map(|_| ()),
                    Target::Portal => self.portals.remove(&name).map(|_| ()),
                };
                out.push(BackendMessage::CloseComplete);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Transactions.
    // -----------------------------------------------------------------------------------------

    fn status(&self) -> TransactionStatus {
        match self.state {
            TxState::Idle | TxState::Implicit => TransactionStatus::Idle,
            TxState::Explicit => TransactionStatus::InTransaction,
            TxState::Failed => TransactionStatus::Failed,
        }
    }

    fn begin_implicit(&mut self) {
        if self.state == TxState::Idle {
            self.state = TxState::Implicit;
            self.snapshot = Some(self.settings.clone());
            self.local.clear();
        }
    }

    /// Ends the transaction: SET LOCAL values and portals go, the state is idle.
    fn end_transaction(&mut self) {
        if let Some(snapshot) = self.snapshot.take() {
            self.settings.restore_from(&snapshot, &self.local);
        }
        self.local.clear();
        self.portals.clear();
        self.state = TxState::Idle;
    }

    fn commit(&mut self) -> Result<(), PgError> {
        let pending = std::mem::take(&mut self.pending);
        self.end_transaction();
        self.shared.with_bank(|bank| bank.commit(pending))
    }

    fn rollback(&mut self) {
        self.pending = PendingWrites::default();
        if let Some(snapshot) = self.snapshot.take() {
            self.settings = snapshot;
        }
        self.end_transaction();
    }

    /// Reports an error and applies its effect on the transaction.
    fn fail(&mut self, error: &PgError, out: &mut Vec<BackendMessage>) {
        out.push(BackendMessage::ErrorResponse(error.to_fields()));
        match self.state {
            TxState::Implicit => self.rollback(),
            TxState::Explicit => {
                self.pending = PendingWrites::default();
                self.state = TxState::Failed;
            }
            TxState::Idle | TxState::Failed => {}
        }
    }

    fn sync(&mut self, out: &mut Vec<BackendMessage>) {
        self.skipping = false;
        if self.state == TxState::Implicit
            && let Err(error) = self.commit()
        {
            out.push(BackendMessage::ErrorResponse(error.to_fields()));
        }
        self.ready(out);
    }

    /// ParameterStatus for reportable parameters that changed, then ReadyForQuery.
    fn ready(&mut self, out: &mut Vec<BackendMessage>) {
        let now = self.settings.reported();
        for (name, value) in &now {
            if !self.reported.contains(&(name.clone(), value.clone())) {
                out.push(BackendMessage::ParameterStatus {
                    name: PgString::from(name.as_str()),
                    value: PgString::from(value.as_str()),
                });
            }
        }
        self.reported = now;
        out.push(BackendMessage::ReadyForQuery(self.status()));
    }

    fn check_not_failed(&self, statement: Option<&Statement>) -> Result<(), PgError> {
        let allowed = statement.is_none_or(Statement::ends_transaction);
        if self.state == TxState::Failed && !allowed {
            return Err(PgError::in_failed_transaction());
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Simple query.
    // -----------------------------------------------------------------------------------------

    async fn simple_query(&mut self, sql: &str, out: &mut Vec<BackendMessage>) {
        let deadline = self.deadline();
        let statements = match parse_query(sql) {
            Ok(statements) => statements,
            Err(error) => return self.fail(&error, out),
        };
        if statements.is_empty() {
            out.push(BackendMessage::EmptyQueryResponse);
            return;
        }
        let single = statements.len() == 1;
        for statement in &statements {
            if let Err(error) = self
                .simple_statement(statement, single, deadline, out)
                .await
            {
                return self.fail(&error, out);
            }
        }
        if self.state == TxState::Implicit
            && let Err(error) = self.commit()
        {
            out.push(BackendMessage::ErrorResponse(error.to_fields()));
        }
    }

    async fn simple_statement(
        &mut self,
        statement: &Statement,
        single: bool,
        deadline: Option<Instant>,
        out: &mut Vec<BackendMessage>,
    ) -> Result<(), PgError> {
        self.check_not_failed(Some(statement))?;
        self.begin_implicit();
        let columns = plan::columns(statement, &self.settings, &[])?;
        let formats = vec![FORMAT_TEXT; columns.len()];
        if !columns.is_empty() {
            // Postgres describes the result before it runs the statement, so a statement that
            // fails while running still sends its RowDescription first.
            out.push(row_description(&columns, &formats));
        }
        self.sleep_for(statement, &[], deadline).await?;
        let outcome = self.run_statement(statement, &[], &[], single)?;
        push_notices(&outcome.notices, out);
        for row in &outcome.rows {
            out.push(data_row(row, &columns, &formats));
        }
        out.push(BackendMessage::CommandComplete(PgString::from(
            outcome.tag.as_str(),
        )));
        Ok(())
    }

    /// When the statement starting now must end (`statement_timeout`).
    fn deadline(&self) -> Option<Instant> {
        self.settings
            .statement_timeout()
            .map(|timeout| Instant::now() + timeout)
    }

    // -----------------------------------------------------------------------------------------
    // Extended protocol.
    // -----------------------------------------------------------------------------------------

    fn parse(&mut self, parse: Parse, out: &mut Vec<BackendMessage>) -> Result<(), PgError> {
        let mut statements = parse_query(&parse.query.to_string_lossy())?;
        if statements.len() > 1 {
            return Err(PgError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let statement = statements.pop();
        self.check_not_failed(statement.as_ref())?;
        if !parse.name.is_empty() && self.statements.contains_key(&parse.name) {
            return Err(PgError::new(
                "42P05",
                format!("prepared statement \"{}\" already exists", parse.name),
            ));
        }
        if self.statements.len() >= MAX_PREPARED_STATEMENTS {
            return Err(PgError::program_limit(format!(
                "the fake Postgres keeps at most {MAX_PREPARED_STATEMENTS} prepared statements per connection"
            )));
        }
        let param_types = plan::parameter_types(statement.as_ref(), &parse.parameter_types)?;
        let columns = match &statement {
            Some(statement) => plan::columns(statement, &self.settings, &param_types)?,
            None => Vec::new(),
        };
        self.begin_implicit();
        let prepared = Prepared {
            statement,
            param_types,
            columns,
        };
        self.statements.insert(parse.name, Arc::new(prepared));
        out.push(BackendMessage::ParseComplete);
        Ok(())
    }

    fn statement(&self, name: &PgString) -> Result<Arc<Prepared>, PgError> {
        self.statements.get(name).cloned().ok_or_else(|| {
            let message = if name.is_empty() {
                "unnamed prepared statement does not exist".to_string()
            } else {
                format!("prepared statement \"{name}\" does not exist")
            };
            PgError::new("26000", message)
        })
    }

    fn bind(&mut self, bind: Bind, out: &mut Vec<BackendMessage>) -> Result<(), PgError> {
        let prepared = self.statement(&bind.statement)?;
        let params = bind_parameters(&bind, &prepared, &bind.statement)?;
        self.check_not_failed(prepared.statement.as_ref())?;
        let formats = result_formats(&bind.result_formats, prepared.columns.len())?;
        if !bind.portal.is_empty() && self.portals.contains_key(&bind.portal) {
            return Err(PgError::new(
                "42P03",
                format!("portal \"{}\" already exists", bind.portal),
            ));
        }
        if self.portals.len() >= MAX_PORTALS {
            return Err(PgError::program_limit(format!(
                "the fake Postgres keeps at most {MAX_PORTALS} portals per connection"
            )));
        }
        self.begin_implicit();
        let portal = Portal {
            prepared,
            params,
            formats,
            state: PortalState::Ready,
        };
        self.portals.insert(bind.portal, portal);
        out.push(BackendMessage::BindComplete);
        Ok(())
    }

    fn describe_statement(
        &mut self,
        name: &PgString,
        out: &mut Vec<BackendMessage>,
    ) -> Result<(), PgError> {
        let prepared = self.statement(name)?;
        if !prepared.columns.is_empty() {
            self.check_not_failed(None)?;
        }
        let oids = prepared.param_types.iter().map(|t| t.oid()).collect();
        out.push(BackendMessage::ParameterDescription(oids));
        out.push(describe_columns(
            &prepared.columns,
            &vec![FORMAT_TEXT; prepared.columns.len()],
        ));
        Ok(())
    }

    fn describe_portal(
        &mut self,
        name: &PgString,
        out: &mut Vec<BackendMessage>,
    ) -> Result<(), PgError> {
        let portal = self.portal(name)?;
        out.push(describe_columns(&portal.prepared.columns, &portal.formats));
        Ok(())
    }

    fn portal(&self, name: &PgString) -> Result<&Portal, PgError> {
        self.portals
            .get(name)
            .ok_or_else(|| PgError::new("34000", format!("portal \"{name}\" does not exist")))
    }

    async fn execute(
        &mut self,
        name: &PgString,
        max_rows: i32,
        out: &mut Vec<BackendMessage>,
    ) -> Result<(), PgError> {
        let portal = self.portal(name)?;
        let prepared = portal.prepared.clone();
        let Some(statement) = prepared.statement.as_ref() else {
            out.push(BackendMessage::EmptyQueryResponse);
            return Ok(());
        };
        self.check_not_failed(Some(statement))?;
        if matches!(portal.state, PortalState::Ready) {
            let params = portal.params.clone();
            self.begin_implicit();
            let deadline = self.deadline();
            self.sleep_for(statement, &params, deadline).await?;
            let outcome = self.run_statement(statement, &params, &prepared.param_types, true)?;
            push_notices(&outcome.notices, out);
            if prepared.columns.is_empty() {
                out.push(BackendMessage::CommandComplete(PgString::from(
                    outcome.tag.as_str(),
                )));
                if let Some(portal) = self.portals.get_mut(name) {
                    portal.state = PortalState::Done(outcome.tag);
                }
                return Ok(());
            }
            if let Some(portal) = self.portals.get_mut(name) {
                portal.state = PortalState::Rows(outcome.rows.into());
            }
        }
        if let Some(portal) = self.portals.get_mut(name) {
            send_rows(portal, max_rows, out);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Statements.
    // -----------------------------------------------------------------------------------------

    /// Sleeps for the statement's `pg_sleep` calls unless cancelled or timed out.
    async fn sleep_for(
        &self,
        statement: &Statement,
        params: &[Value],
        deadline: Option<Instant>,
    ) -> Result<(), PgError> {
        let ctx = self.eval_context(params);
        let duration = plan::sleep_time(statement, &ctx)?;
        if duration.is_zero() {
            return Ok(());
        }
        self.sleep(duration, deadline).await
    }

    async fn sleep(&self, duration: Duration, deadline: Option<Instant>) -> Result<(), PgError> {
        let cancelled = self.cancel.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        let timed_out = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                self.shared.with_state(|state| state.stats.cancels_delivered += 1);
                Err(PgError::new("57014", "canceling statement due to user request"))
            }
            _ = timed_out => {
                self.shared.with_state(|state| state.stats.statement_timeouts += 1);
                Err(PgError::new("57014", "canceling statement due to statement timeout"))
            }
            _ = tokio::time::sleep(duration) => Ok(()),
        }
    }

    fn eval_context<'a>(&'a self, params: &'a [Value]) -> EvalContext<'a> {
        EvalContext {
            params,
            settings: &self.settings,
            pid: self.pid,
        }
    }

    /// Evaluates `expr` as an integer (bank ids and amounts).
    fn int_value(&self, expr: &Expr, params: &[Value], what: &str) -> Result<Option<i64>, PgError> {
        let ctx = self.eval_context(params);
        plan::eval(expr, &ctx)?.cast(PgType::Int8)?.as_int(what)
    }

    /// Runs one statement (its sleep, if any, already done). `single`: the statement is
    /// the whole query (not part of a multi-statement simple Query).
    fn run_statement(
        &mut self,
        statement: &Statement,
        params: &[Value],
        param_types: &[PgType],
        single: bool,
    ) -> Result<Outcome, PgError> {
        match statement {
            Statement::Begin { start } => Ok(self.begin(*start)),
            Statement::Commit => self.commit_statement(),
            Statement::Rollback => Ok(self.rollback_statement()),
            Statement::Select(items) => {
                let calls = plan::set_config_calls(items, &self.eval_context(params))?;
                for (name, value, local) in calls {
                    self.settings
                        .set(&name, &super::sql::SetValue::Value(value))?;
                    if local {
                        self.local.push(name);
                    }
                }
                let ctx = self.eval_context(params);
                let row = items
                    .iter()
                    .map(|item| {
                        let ty = plan::expr_type(&item.expr, param_types)?;
                        plan::eval(&item.expr, &ctx)?.cast(ty)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Outcome::rows(vec![row]))
            }
            Statement::SelectBalance(_)
            | Statement::SelectAccounts
            | Statement::SelectSum
            | Statement::CountTransfers
            | Statement::UpdateBalance { .. }
            | Statement::InsertTransfer(_) => self.run_bank_statement(statement, params),
            _ => self.run_session_statement(statement, single),
        }
    }

    /// SET, RESET, SHOW, DISCARD, CLOSE ALL, UNLISTEN, DEALLOCATE.
    fn run_session_statement(
        &mut self,
        statement: &Statement,
        single: bool,
    ) -> Result<Outcome, PgError> {
        match statement {
            Statement::Set { name, value, local } => self.set(name, value, *local, single),
            Statement::ResetSessionAuthorization => {
                self.settings.reset_session_authorization();
                Ok(Outcome::tag("SET"))
            }
            Statement::Reset(name) => {
                self.settings.reset(name)?;
                Ok(Outcome::tag("RESET"))
            }
            Statement::ResetAll => {
                self.settings.reset_all();
                Ok(Outcome::tag("RESET"))
            }
            Statement::SessionSettings => Ok(Outcome::rows(
                self.settings
                    .session_sourced()
                    .into_iter()
                    .map(|(name, setting)| vec![Value::Text(name), Value::Text(setting)])
                    .collect(),
            )),
            Statement::Show(name) => {
                let (_, value) = self.settings.get(name)?;
                let mut outcome = Outcome::rows(vec![vec![Value::Text(value.to_string())]]);
                outcome.tag = "SHOW".into();
                Ok(outcome)
            }
            Statement::Discard(target) => self.discard(*target, single),
            Statement::CloseAll => {
                self.portals.clear();
                Ok(Outcome::tag("CLOSE CURSOR ALL"))
            }
            Statement::Deallocate(name) => self.deallocate(name.as_deref()),
            _ => Ok(Outcome::tag("UNLISTEN")),
        }
    }

    fn set(
        &mut self,
        name: &str,
        value: &super::sql::SetValue,
        local: bool,
        single: bool,
    ) -> Result<Outcome, PgError> {
        if local && self.state != TxState::Explicit && single {
            return Ok(Outcome::tag("SET").with_notice(Notice::warning(
                "25P01",
                "SET LOCAL can only be used in transaction blocks",
            )));
        }
        self.settings.set(name, value)?;
        if local {
            self.local.push(name.to_string());
        }
        Ok(Outcome::tag("SET"))
    }

    /// The statements on accounts and transfers.
    fn run_bank_statement(
        &mut self,
        statement: &Statement,
        params: &[Value],
    ) -> Result<Outcome, PgError> {
        let pending = &self.pending;
        let rows = match statement {
            Statement::SelectBalance(id) => {
                let id = self.int_value(id, params, "account id")?;
                let balance = id.and_then(|id| self.shared.with_bank(|b| b.balance(id, pending)));
                balance.map(|b| vec![Value::Int(b)]).into_iter().collect()
            }
            Statement::SelectAccounts => self
                .shared
                .with_bank(|bank| bank.accounts(pending))
                .into_iter()
                .map(|(id, balance)| vec![Value::Int(i64::from(id)), Value::Int(balance)])
                .collect(),
            Statement::SelectSum => {
                vec![vec![Value::Int(self.shared.with_bank(|b| b.sum(pending)))]]
            }
            Statement::CountTransfers => {
                let count = self.shared.with_bank(|b| b.transfer_count(pending));
                vec![vec![Value::Int(i64::try_from(count).unwrap_or(i64::MAX))]]
            }
            Statement::UpdateBalance { delta, id } => return self.update(delta, id, params),
            Statement::InsertTransfer(values) => return self.insert_transfer(values, params),
            _ => Vec::new(),
        };
        Ok(Outcome::rows(rows))
    }

    fn update(&mut self, delta: &Expr, id: &Expr, params: &[Value]) -> Result<Outcome, PgError> {
        let delta = self.int_value(delta, params, "amount")?;
        let id = self.int_value(id, params, "account id")?;
        let updated = match (delta, id) {
            (Some(delta), Some(id)) => {
                let pending = &mut self.pending;
                self.shared
                    .with_bank(|bank| bank.update(id, delta, pending))?
            }
            _ => 0,
        };
        Ok(Outcome::tag(format!("UPDATE {updated}")))
    }

    fn begin(&mut self, start: bool) -> Outcome {
        let tag = if start { "START TRANSACTION" } else { "BEGIN" };
        if self.state == TxState::Explicit {
            return Outcome::tag(tag).with_notice(Notice::warning(
                "25001",
                "there is already a transaction in progress",
            ));
        }
        self.begin_implicit();
        self.state = TxState::Explicit;
        Outcome::tag(tag)
    }

    fn commit_statement(&mut self) -> Result<Outcome, PgError> {
        match self.state {
            TxState::Explicit => {
                self.commit()?;
                Ok(Outcome::tag("COMMIT"))
            }
            TxState::Failed => {
                self.rollback();
                Ok(Outcome::tag("ROLLBACK"))
            }
            TxState::Idle | TxState::Implicit => {
                self.commit()?;
                Ok(Outcome::tag("COMMIT").with_notice(no_transaction()))
            }
        }
    }

    fn rollback_statement(&mut self) -> Outcome {
        let outside = matches!(self.state, TxState::Idle | TxState::Implicit);
        self.rollback();
        let outcome = Outcome::tag("ROLLBACK");
        if outside {
            outcome.with_notice(no_transaction())
        } else {
            outcome
        }
    }

    fn discard(&mut self, target: DiscardTarget, single: bool) -> Result<Outcome, PgError> {
        let tag = match target {
            DiscardTarget::All => "DISCARD ALL",
            DiscardTarget::Temp => "DISCARD TEMP",
            DiscardTarget::Sequences => "DISCARD SEQUENCES",
            DiscardTarget::Plans => "DISCARD PLANS",
        };
        if target == DiscardTarget::All {
            if !single || matches!(self.state, TxState::Explicit | TxState::Failed) {
                return Err(PgError::new(
                    "25001",
                    "DISCARD ALL cannot run inside a transaction block",
                ));
            }
            self.settings.reset_all();
            self.settings.reset_session_authorization();
            self.statements.clear();
            self.portals.clear();
        }
        Ok(Outcome::tag(tag))
    }

    fn deallocate(&mut self, name: Option<&str>) -> Result<Outcome, PgError> {
        let Some(name) = name else {
            self.statements.clear();
            return Ok(Outcome::tag("DEALLOCATE ALL"));
        };
        if self.statements.remove(&PgString::from(name)).is_none() {
            return Err(PgError::new(
                "26000",
                format!("prepared statement \"{name}\" does not exist"),
            ));
        }
        Ok(Outcome::tag("DEALLOCATE"))
    }

    fn insert_transfer(
        &mut self,
        values: &[Expr; 4],
        params: &[Value],
    ) -> Result<Outcome, PgError> {
        let mut row = [0i64; 4];
        for (index, expr) in values.iter().enumerate() {
            let column = super::sql::TRANSFER_COLUMNS[index];
            row[index] = self
                .int_value(expr, params, column)?
                .ok_or_else(|| {
                    PgError::new(
                        "23502",
                        format!("null value in column \"{column}\" of relation \"transfers\" violates not-null constraint"),
                    )
                })?;
        }
        let narrow = |value: i64| {
            i32::try_from(value).map_err(|_| PgError::new("22003", "integer out of range"))
        };
        let transfer = Transfer {
            id: row[0],
            from: narrow(row[1])?,
            to: narrow(row[2])?,
            amount: narrow(row[3])?,
        };
        let pending = &mut self.pending;
        self.shared
            .with_bank(|bank| bank.insert(transfer, pending))?;
        Ok(Outcome::tag("INSERT 0 1"))
    }
}

/// What the connection loop does after a message.
enum Step {
    Continue,
    Flush,
    Terminate,
}

fn no_transaction() -> Notice {
    Notice::warning("25P01", "there is no transaction in progress")
}

fn push_notices(notices: &[Notice], out: &mut Vec<BackendMessage>) {
    out.extend(
        notices
            .iter()
            .map(|n| BackendMessage::NoticeResponse(n.to_fields())),
    );
}

/// Decodes Bind's parameters with the statement's types.
fn bind_parameters(
    bind: &Bind,
    prepared: &Prepared,
    statement: &PgString,
) -> Result<Vec<Value>, PgError> {
    let count = bind.parameters.len();
    let formats = &bind.parameter_formats;
    if !(formats.is_empty() || formats.len() == 1 || formats.len() == count) {
        return Err(PgError::protocol(format!(
            "bind message has {} parameter formats but {count} parameters",
            formats.len()
        )));
    }
    if count != prepared.param_types.len() {
        return Err(PgError::protocol(format!(
            "bind message supplies {count} parameters, but prepared statement \"{statement}\" requires {}",
            prepared.param_types.len()
        )));
    }
    bind.parameters
        .iter()
        .zip(&prepared.param_types)
        .enumerate()
        .map(|(index, (value, ty))| {
            let format = match formats.len() {
                0 => FORMAT_TEXT,
                1 => formats.first().copied().unwrap_or(FORMAT_TEXT),
                _ => formats.get(index).copied().unwrap_or(FORMAT_TEXT),
            };
            check_format(format)?;
            decode_parameter(value.as_ref(), *ty, format, index)
        })
        .collect()
}

fn check_format(format: i16) -> Result<(), PgError> {
    if format == FORMAT_TEXT || format == FORMAT_BINARY {
        Ok(())
    } else {
        Err(PgError::new(
            "22023",
            format!("unsupported format code: {format}"),
        ))
    }
}

/// One format per result column from Bind's list (none = text, one = all).
fn result_formats(requested: &[i16], columns: usize) -> Result<Vec<i16>, PgError> {
    for format in requested {
        check_format(*format)?;
    }
    match requested.len() {
        0 => Ok(vec![FORMAT_TEXT; columns]),
        1 => Ok(vec![
            requested.first().copied().unwrap_or(FORMAT_TEXT);
            columns
        ]),
        n if n == columns => Ok(requested.to_vec()),
        n => Err(PgError::protocol(format!(
            "bind message has {n} result formats but query has {columns} columns"
        ))),
    }
}

/// Sends up to `max_rows` rows (0 = all) of a portal; PortalSuspended when the limit was hit.
fn send_rows(portal: &mut Portal, max_rows: i32, out: &mut Vec<BackendMessage>) {
    let limit = usize::try_from(max_rows).ok().filter(|n| *n > 0);
    let columns = &portal.prepared.columns;
    let rows = match &mut portal.state {
        PortalState::Rows(rows) => rows,
        PortalState::Done(tag) => {
            out.push(BackendMessage::CommandComplete(PgString::from(
                tag.as_str(),
            )));
            return;
        }
        PortalState::Ready => return,
    };
    let mut sent = 0;
    while limit.is_none_or(|limit| sent < limit) {
        let Some(row) = rows.pop_front() else { break };
        out.push(data_row(&row, columns, &portal.formats));
        sent += 1;
    }
    if limit == Some(sent) {
        out.push(BackendMessage::PortalSuspended);
        return;
    }
    out.push(BackendMessage::CommandComplete(PgString::from(format!(
        "SELECT {sent}"
    ))));
    portal.state = PortalState::Done("SELECT 0".into());
}

fn describe_columns(columns: &[Column], formats: &[i16]) -> BackendMessage {
    if columns.is_empty() {
        BackendMessage::NoData
    } else {
        row_description(columns, formats)
    }
}

fn row_description(columns: &[Column], formats: &[i16]) -> BackendMessage {
    let fields = columns
        .iter()
        .zip(formats)
        .map(|(column, format)| {
            let (table_oid, column_attribute) = column.table.unwrap_or((0, 0));
            FieldDescription {
                name: PgString::from(column.name.as_str()),
                table_oid,
                column_attribute,
                type_oid: column.ty.oid(),
                type_size: column.ty.size(),
                type_modifier: -1,
                format: *format,
            }
        })
        .collect();
    BackendMessage::RowDescription(fields)
}

fn data_row(row: &[Value], columns: &[Column], formats: &[i16]) -> BackendMessage {
    let values = row
        .iter()
        .zip(columns.iter().zip(formats))
        .map(|(value, (column, format))| value.encode(column.ty, *format))
        .collect();
    BackendMessage::DataRow(DataRow::new(values))
}
