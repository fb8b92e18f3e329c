//! The fake's SQL: a tokenizer and a recursive-descent parser for exactly the statements listed
//! in the [module docs](super), nothing more.
//!
//! Why a parser of our own: the simulator needs a database whose behaviour it fully knows and
//! controls, and the workload only needs a few shapes of statement. Anything outside the
//! subset is refused with an error a reader can act on (42601 for what is not SQL at all,
//! 0A000 for SQL the fake does not implement), never guessed at.

use super::error::PgError;
use super::types::PgType;

/// Longest SQL text the fake parses (Postgres accepts up to 1 GB; the workload sends a few
/// hundred bytes, so anything larger is a bug or an attack on the fake).
pub const MAX_SQL_LEN: usize = 64 * 1024;

/// Most statements one simple Query may carry.
pub const MAX_STATEMENTS_PER_QUERY: usize = 64;

/// Highest `$n` parameter number (Postgres: 65535, the Bind message's Int16 count).
pub const MAX_PARAMETER_NUMBER: usize = 65_535;

/// Most items in a SELECT list.
pub const MAX_SELECT_ITEMS: usize = 64;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// An unquoted word, lower-cased (keywords and identifiers alike).
    Word(String),
    /// A double-quoted identifier, case kept.
    Quoted(String),
    /// A string literal, quotes removed.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A literal with a decimal point or exponent, kept as text.
    Decimal(String),
    /// `$n`.
    Param(usize),
    /// Punctuation: `( ) , ; = + - * . ::` and friends.
    Symbol(&'static str),
}

/// A scalar expression in the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal integer.
    Int(i64),
    /// A literal with a decimal point (only meaningful as a number argument).
    Decimal(String),
    /// A string literal.
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// `NULL`.
    Null,
    /// `$n` (1-based).
    Param(usize),
    /// `expr::type`.
    Cast(Box<Expr>, PgType),
    /// `-expr`.
    Negate(Box<Expr>),
    /// A function call among the supported ones.
    Call(Function, Vec<Expr>),
}

/// Functions the fake evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `pg_sleep(seconds)`.
    PgSleep,
    /// `current_setting(name)`.
    CurrentSetting,
    /// `pg_backend_pid()`.
    PgBackendPid,
    /// `pg_advisory_unlock_all()`.
    PgAdvisoryUnlockAll,
    /// `set_config(name, value, is_local)`: SET as a function (the proxy applies a client's
    /// settings with it).
    SetConfig,
}

impl Function {
    /// The function's SQL name (also its result column's name).
    pub fn name(self) -> &'static str {
        match self {
            Function::PgSleep => "pg_sleep",
            Function::CurrentSetting => "current_setting",
            Function::PgBackendPid => "pg_backend_pid",
            Function::PgAdvisoryUnlockAll => "pg_advisory_unlock_all",
            Function::SetConfig => "set_config",
        }
    }

    fn from_name(name: &str) -> Option<Function> {
        Some(match name {
            "pg_sleep" => Function::PgSleep,
            "current_setting" => Function::CurrentSetting,
            "pg_backend_pid" => Function::PgBackendPid,
            "pg_advisory_unlock_all" => Function::PgAdvisoryUnlockAll,
            "set_config" => Function::SetConfig,
            _ => return None,
        })
    }

    fn arity(self) -> usize {
        match self {
            Function::PgSleep | Function::CurrentSetting => 1,
            Function::PgBackendPid | Function::PgAdvisoryUnlockAll => 0,
            Function::SetConfig => 3,
        }
    }
}

/// One item of a FROM-less SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    /// The expression.
    pub expr: Expr,
    /// `AS alias`.
    pub alias: Option<String>,
}

/// What a `SET` assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetValue {
    /// `DEFAULT`.
    Default,
    /// A value (a list is joined with `", "`, as Postgres shows it).
    Value(String),
}

/// What `DISCARD` throws away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardTarget {
    /// `DISCARD ALL`.
    All,
    /// `DISCARD TEMP` / `TEMPORARY`.
    Temp,
    /// `DISCARD SEQUENCES`.
    Sequences,
    /// `DISCARD PLANS`.
    Plans,
}

/// The columns of the `transfers` table, in table order.
pub const TRANSFER_COLUMNS: [&str; 4] = ["id", "from_id", "to_id", "amount"];

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `BEGIN` / `START TRANSACTION` (modifiers accepted and ignored).
    Begin {
        /// Which spelling, for the command tag.
        start: bool,
    },
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SET [SESSION|LOCAL] name {=|TO} value`, `SET TIME ZONE value`.
    Set {
        /// Parameter name as written (case-insensitive lookup).
        name: String,
        /// The value.
        value: SetValue,
        /// `SET LOCAL`.
        local: bool,
    },
    /// `SET SESSION AUTHORIZATION DEFAULT` / `RESET SESSION AUTHORIZATION`.
    ResetSessionAuthorization,
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL`.
    ResetAll,
    /// `SHOW name`.
    Show(String),
    /// `DISCARD ...`.
    Discard(DiscardTarget),
    /// `CLOSE ALL`.
    CloseAll,
    /// `UNLISTEN *` / `UNLISTEN channel`.
    Unlisten,
    /// `DEALLOCATE [PREPARE] name`; `None` is `DEALLOCATE ALL`.
    Deallocate(Option<String>),
    /// `SELECT item, ...` without FROM.
    Select(Vec<SelectItem>),
    /// `SELECT balance FROM accounts WHERE id = expr`.
    SelectBalance(Expr),
    /// `SELECT id, balance FROM accounts [ORDER BY id]`.
    SelectAccounts,
    /// `SELECT sum(balance) FROM accounts`.
    SelectSum,
    /// `SELECT count(*) FROM transfers`.
    CountTransfers,
    /// `SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'`, optionally
    /// `UNION ALL SELECT 'role', ... ORDER BY 1`: the reference proxy's read-back of a
    /// session's settings (the fake has no roles, so the `role` branch yields nothing).
    SessionSettings,
    /// `UPDATE accounts SET balance = balance {+|-} expr WHERE id = expr`.
    UpdateBalance {
        /// The amount added (already negated for `-`).
        delta: Expr,
        /// The account.
        id: Expr,
    },
    /// `INSERT INTO transfers [(cols)] VALUES (id, from_id, to_id, amount)`, values in table order.
    InsertTransfer([Expr; 4]),
}

impl Statement {
    /// True for statements allowed in a failed transaction block.
    pub fn ends_transaction(&self) -> bool {
        matches!(self, Statement::Commit | Statement::Rollback)
    }
}

/// Splits and parses a whole query string. An empty result means an empty query.
pub fn parse_query(sql: &str) -> Result<Vec<Statement>, PgError> {
    if sql.len() > MAX_SQL_LEN {
        return Err(PgError::program_limit(format!(
            "query text is {} bytes; the fake Postgres parses at most {MAX_SQL_LEN}",
            sql.len()
        )));
    }
    let tokens = tokenize(sql)?;
    let mut statements = Vec::new();
    for chunk in tokens.split(|t| *t == Token::Symbol(";")) {
        if chunk.is_empty() {
            continue;
        }
        if statements.len() == MAX_STATEMENTS_PER_QUERY {
            return Err(PgError::program_limit(format!(
                "a query may hold at most {MAX_STATEMENTS_PER_QUERY} statements in the fake Postgres"
            )));
        }
        statements.push(Parser::new(chunk).statement()?);
    }
    Ok(statements)
}

// ---------------------------------------------------------------------------------------------
// Tokenizer.
// ---------------------------------------------------------------------------------------------

const SYMBOLS: [&str; 12] = ["::", "(", ")", ",", ";", "=", "+", "-", "*", ".", "<", ">"];

/// Splits SQL text into tokens, skipping whitespace and comments.
pub fn tokenize(sql: &str) -> Result<Vec<Token>, PgError> {
    let mut tokens = Vec::new();
    let mut rest = sql;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if rest.starts_with("--") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("/*") {
            let end = rest
                .find("*/")
                .ok_or_else(|| PgError::syntax("unterminated /* comment"))?;
            rest = &rest[end + 2..];
        } else {
            let (token, len) = next_token(rest)?;
            tokens.push(token);
            rest = &rest[len..];
        }
    }
    Ok(tokens)
}

fn next_token(text: &str) -> Result<(Token, usize), PgError> {
    let first = text.chars().next().unwrap_or(' ');
    if first == '\'' {
        let (value, len) = quoted(text, '\'')?;
        return Ok((Token::Str(value), len));
    }
    if first == '"' {
        let (value, len) = quoted(text, '"')?;
        if value.is_empty() {
            return Err(PgError::syntax("zero-length delimited identifier"));
        }
        return Ok((Token::Quoted(value), len));
    }
    if first == '$' {
        return parameter(text);
    }
    if first.is_ascii_digit() {
        return number(text);
    }
    if first.is_alphabetic() || first == '_' {
        let len = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(text.len());
        return Ok((Token::Word(text[..len].to_lowercase()), len));
    }
    for symbol in SYMBOLS {
        if text.starts_with(symbol) {
            return Ok((Token::Symbol(symbol), symbol.len()));
        }
    }
    Err(PgError::syntax(format!(
        "syntax error at or near \"{first}\""
    )))
}

/// A `'...'` or `"..."` token with doubled quotes as escapes; returns the value and the
/// consumed length.
fn quoted(text: &str, quote: char) -> Result<(String, usize), PgError> {
    let mut value = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((index, c)) = chars.next() {
        if c != quote {
            value.push(c);
            continue;
        }
        if chars.peek().map(|(_, next)| *next) == Some(quote) {
            chars.next();
            value.push(quote);
            continue;
        }
        return Ok((value, index + 1));
    }
    Err(PgError::syntax(if quote == '\'' {
        "unterminated quoted string"
    } else {
        "unterminated quoted identifier"
    }))
}

fn parameter(text: &str) -> Result<(Token, usize), PgError> {
    let digits = text[1..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len() - 1);
    let number: usize = text[1..1 + digits]
        .parse()
        .map_err(|_| PgError::syntax("syntax error at or near \"$\""))?;
    if number == 0 || number > MAX_PARAMETER_NUMBER {
        return Err(PgError::new(
            "42P02",
            format!("there is no parameter ${number}"),
        ));
    }
    Ok((Token::Param(number), 1 + digits))
}

fn number(text: &str) -> Result<(Token, usize), PgError> {
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E'))
        .unwrap_or(text.len());
    let literal = &text[..len];
    if literal.contains(['.', 'e', 'E']) {
        if literal.parse::<f64>().is_err() {
            return Err(PgError::syntax(format!(
                "trailing junk after numeric literal at or near \"{literal}\""
            )));
        }
        return Ok((Token::Decimal(literal.to_string()), len));
    }
    let value = literal.parse::<i64>().map_err(|_| {
        PgError::not_supported(format!(
            "integer literal {literal} does not fit in bigint (numeric is not supported by the fake Postgres)"
        ))
    })?;
    Ok((Token::Int(value), len))
}

// ---------------------------------------------------------------------------------------------
// Parser.
// ---------------------------------------------------------------------------------------------

struct Parser<'a> {
    tokens: &'a [Token],
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(tokens: &'a [Token]) -> Self {
        Parser {
            tokens,
            position: 0,
        }
    }

    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.position);
        self.position += usize::from(token.is_some());
        token
    }

    fn at_end(&self) -> bool {
        self.position >= self.tokens.len()
    }

    /// A syntax error at the current token, worded like Postgres's.
    fn error_here(&self) -> PgError {
        match self.peek() {
            Some(token) => {
                PgError::syntax(format!("syntax error at or near \"{}\"", show_token(token)))
            }
            None => PgError::syntax("syntax error at end of input"),
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w == word) {
            self.position += 1;
            return true;
        }
        false
    }

    fn expect_word(&mut self, word: &str) -> Result<(), PgError> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.position += 1;
            return true;
        }
        false
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), PgError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn expect_end(&self) -> Result<(), PgError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    /// An identifier: an unquoted word (lower-cased) or a quoted name (kept).
    fn identifier(&mut self) -> Result<String, PgError> {
        match self.peek() {
            Some(Token::Word(w) | Token::Quoted(w)) => {
                self.position += 1;
                Ok(w.clone())
            }
            _ => Err(self.error_here()),
        }
    }

    /// A possibly qualified setting name (`search_path`, `myapp.user_id`).
    fn setting_name(&mut self) -> Result<String, PgError> {
        let mut name = self.identifier()?;
        while self.eat_symbol(".") {
            name.push('.');
            name.push_str(&self.identifier()?);
        }
        Ok(name)
    }

    fn statement(&mut self) -> Result<Statement, PgError> {
        let Some(Token::Word(first)) = self.next() else {
            self.position = 0;
            return Err(self.error_here());
        };
        let statement = match first.as_str() {
            "begin" => self.transaction_start(false)?,
            "start" => {
                self.expect_word("transaction")?;
                self.transaction_start(true)?
            }
            "commit" | "end" => self.transaction_end(Statement::Commit)?,
            "rollback" | "abort" => self.transaction_end(Statement::Rollback)?,
            "set" => self.set()?,
            "reset" => self.reset()?,
            "show" => self.show()?,
            "discard" => self.discard()?,
            "close" => self.close()?,
            "unlisten" => self.unlisten()?,
            "deallocate" => self.deallocate()?,
            "select" => self.select()?,
            "update" => self.update()?,
            "insert" => self.insert()?,
            other => return Err(unsupported_command(other)),
        };
        self.expect_end()?;
        Ok(statement)
    }

    /// Skips transaction modes (`ISOLATION LEVEL ...`, `READ WRITE`, ...): the fake has one.
    fn transaction_start(&mut self, start: bool) -> Result<Statement, PgError> {
        if !start && !self.eat_word("work") {
            self.eat_word("transaction");
        }
        while let Some(token) = self.peek() {
            match token {
                Token::Word(_) | Token::Symbol(",") => self.position += 1,
                _ => return Err(self.error_here()),
            }
        }
        Ok(Statement::Begin { start })
    }

    fn transaction_end(&mut self, statement: Statement) -> Result<Statement, PgError> {
        if !self.eat_word("work") {
            self.eat_word("transaction");
        }
        if self.eat_word("and") {
            return Err(PgError::not_supported(
                "COMMIT/ROLLBACK AND CHAIN is not supported by the fake Postgres",
            ));
        }
        Ok(statement)
    }

    fn set(&mut self) -> Result<Statement, PgError> {
        let local = self.eat_word("local");
        if !local {
            self.eat_word("session");
        }
        if self.eat_word("authorization") {
            self.expect_word("default")?;
            return Ok(Statement::ResetSessionAuthorization);
        }
        if self.eat_word("time") {
            self.expect_word("zone")?;
            let value = self.set_value()?;
            return Ok(Statement::Set {
                name: "TimeZone".into(),
                value,
                local,
            });
        }
        if matches!(self.peek(), Some(Token::Word(w)) if w == "transaction" || w == "characteristics")
        {
            return Err(PgError::not_supported(
                "SET TRANSACTION is not supported by the fake Postgres",
            ));
        }
        let name = self.setting_name()?;
        if !self.eat_word("to") {
            self.expect_symbol("=")?;
        }
        let value = self.set_value()?;
        Ok(Statement::Set { name, value, local })
    }

    /// `DEFAULT`, or one or more comma-separated values.
    fn set_value(&mut self) -> Result<SetValue, PgError> {
        if self.eat_word("default") {
            return Ok(SetValue::Default);
        }
        let mut parts = vec![self.set_value_part()?];
        while self.eat_symbol(",") {
            parts.push(self.set_value_part()?);
        }
        Ok(SetValue::Value(parts.join(", ")))
    }

    fn set_value_part(&mut self) -> Result<String, PgError> {
        let negative = self.eat_symbol("-");
        let sign = if negative { "-" } else { "" };
        match self.next() {
            Some(Token::Str(s) | Token::Word(s) | Token::Quoted(s)) if !negative => Ok(s.clone()),
            Some(Token::Int(i)) => Ok(format!("{sign}{i}")),
            Some(Token::Decimal(d)) => Ok(format!("{sign}{d}")),
            _ => {
                self.position = self.position.saturating_sub(1);
                Err(self.error_here())
            }
        }
    }

    fn reset(&mut self) -> Result<Statement, PgError> {
        if self.eat_word("all") {
            return Ok(Statement::ResetAll);
        }
        if self.eat_word("session") {
            self.expect_word("authorization")?;
            return Ok(Statement::ResetSessionAuthorization);
        }
        if self.eat_word("time") {
            self.expect_word("zone")?;
            return Ok(Statement::Reset("TimeZone".into()));
        }
        Ok(Statement::Reset(self.setting_name()?))
    }

    fn show(&mut self) -> Result<Statement, PgError> {
        if self.eat_word("all") {
            return Err(PgError::not_supported(
                "SHOW ALL is not supported by the fake Postgres",
            ));
        }
        if self.eat_word("time") {
            self.expect_word("zone")?;
            return Ok(Statement::Show("TimeZone".into()));
        }
        Ok(Statement::Show(self.setting_name()?))
    }

    fn discard(&mut self) -> Result<Statement, PgError> {
        let target = match self.next() {
            Some(Token::Word(w)) if w == "all" => DiscardTarget::All,
            Some(Token::Word(w)) if w == "temp" || w == "temporary" => DiscardTarget::Temp,
            Some(Token::Word(w)) if w == "sequences" => DiscardTarget::Sequences,
            Some(Token::Word(w)) if w == "plans" => DiscardTarget::Plans,
            _ => {
                self.position = self.position.saturating_sub(1);
                return Err(self.error_here());
            }
        };
        Ok(Statement::Discard(target))
    }

    fn close(&mut self) -> Result<Statement, PgError> {
        if self.eat_word("all") {
            return Ok(Statement::CloseAll);
        }
        Err(PgError::not_supported(
            "CLOSE of a named cursor is not supported by the fake Postgres (only CLOSE ALL)",
        ))
    }

    fn unlisten(&mut self) -> Result<Statement, PgError> {
        if !self.eat_symbol("*") {
            self.identifier()?;
        }
        Ok(Statement::Unlisten)
    }

    fn deallocate(&mut self) -> Result<Statement, PgError> {
        self.eat_word("prepare");
        if self.eat_word("all") {
            return Ok(Statement::Deallocate(None));
        }
        Ok(Statement::Deallocate(Some(self.identifier()?)))
    }

    fn select(&mut self) -> Result<Statement, PgError> {
        if self.eat_word("balance") {
            self.expect_word("from")?;
            self.expect_word("accounts")?;
            return Ok(Statement::SelectBalance(self.where_id()?));
        }
        if matches!(self.tokens, [_, Token::Word(id), Token::Symbol(","), Token::Word(b), ..] if id == "id" && b == "balance")
        {
            self.position += 3;
            self.expect_word("from")?;
            self.expect_word("accounts")?;
            if self.eat_word("order") {
                self.expect_word("by")?;
                self.expect_word("id")?;
            }
            return Ok(Statement::SelectAccounts);
        }
        if self.eat_word("sum") {
            self.expect_symbol("(")?;
            self.expect_word("balance")?;
            self.expect_symbol(")")?;
            self.expect_word("from")?;
            self.expect_word("accounts")?;
            return Ok(Statement::SelectSum);
        }
        if self.session_settings()? {
            return Ok(Statement::SessionSettings);
        }
        if self.eat_word("count") {
            self.expect_symbol("(")?;
            self.expect_symbol("*")?;
            self.expect_symbol(")")?;
            self.expect_word("from")?;
            self.expect_word("transfers")?;
            return Ok(Statement::CountTransfers);
        }
        let mut items = vec![self.select_item()?];
        while self.eat_symbol(",") {
            if items.len() == MAX_SELECT_ITEMS {
                return Err(PgError::program_limit(format!(
                    "the fake Postgres accepts at most {MAX_SELECT_ITEMS} select items"
                )));
            }
            items.push(self.select_item()?);
        }
        if self.eat_word("from") {
            return Err(PgError::not_supported(
                "the fake Postgres supports SELECT ... FROM only as `SELECT balance FROM accounts WHERE id = ...`, `SELECT id, balance FROM accounts ORDER BY id`, `SELECT sum(balance) FROM accounts` and `SELECT count(*) FROM transfers`",
            ));
        }
        Ok(Statement::Select(items))
    }

    /// The reference proxy's settings read-back ([`Statement::SessionSettings`]); false when
    /// the SELECT is something else (nothing consumed).
    fn session_settings(&mut self) -> Result<bool, PgError> {
        let words = |w: &str| Token::Word(w.into());
        let head = [
            words("name"),
            Token::Symbol(","),
            words("setting"),
            words("from"),
            words("pg_catalog"),
            Token::Symbol("."),
            words("pg_settings"),
            words("where"),
            words("source"),
            Token::Symbol("="),
            Token::Str("session".into()),
        ];
        let rest = self.tokens.get(self.position..).unwrap_or_default();
        if !rest.starts_with(&head) {
            return Ok(false);
        }
        self.position += head.len();
        if self.eat_word("union") {
            self.expect_word("all")?;
            self.expect_word("select")?;
            if self.next() != Some(&Token::Str("role".into())) {
                return Err(PgError::not_supported(
                    "the fake Postgres reads back settings only with the reference proxy's own query",
                ));
            }
            // The role branch: `current_setting('role') WHERE current_setting('role') <>
            // 'none'`; the fake has no SET ROLE, so it never yields a row.
            while let Some(token) = self.peek() {
                if *token == words("order") {
                    break;
                }
                self.position += 1;
            }
        }
        if self.eat_word("order") {
            self.expect_word("by")?;
            if self.next() != Some(&Token::Int(1)) {
                return Err(PgError::not_supported(
                    "the settings read-back is ordered by its first column only",
                ));
            }
        }
        Ok(true)
    }

    fn select_item(&mut self) -> Result<SelectItem, PgError> {
        let expr = self.expr()?;
        let alias = if self.eat_word("as") {
            Some(self.identifier()?)
        } else {
            match self.peek() {
                Some(Token::Quoted(name)) => {
                    self.position += 1;
                    Some(name.clone())
                }
                _ => None,
            }
        };
        Ok(SelectItem { expr, alias })
    }

    fn where_id(&mut self) -> Result<Expr, PgError> {
        self.expect_word("where")?;
        self.expect_word("id")?;
        self.expect_symbol("=")?;
        self.expr()
    }

    fn update(&mut self) -> Result<Statement, PgError> {
        if !self.eat_word("accounts") {
            return Err(PgError::not_supported(
                "the fake Postgres supports UPDATE only as `UPDATE accounts SET balance = balance + $1 WHERE id = $2`",
            ));
        }
        self.expect_word("set")?;
        self.expect_word("balance")?;
        self.expect_symbol("=")?;
        self.expect_word("balance")?;
        let negative = if self.eat_symbol("+") {
            false
        } else {
            self.expect_symbol("-")?;
            true
        };
        let amount = self.primary()?;
        let delta = if negative {
            Expr::Negate(Box::new(amount))
        } else {
            amount
        };
        let id = self.where_id()?;
        Ok(Statement::UpdateBalance { delta, id })
    }

    fn insert(&mut self) -> Result<Statement, PgError> {
        self.expect_word("into")?;
        if !self.eat_word("transfers") {
            return Err(PgError::not_supported(
                "the fake Postgres supports INSERT only into transfers (id, from_id, to_id, amount)",
            ));
        }
        let columns = if self.eat_symbol("(") {
            let names = self.comma_list(|p| p.identifier())?;
            self.expect_symbol(")")?;
            names
        } else {
            TRANSFER_COLUMNS.iter().map(|c| c.to_string()).collect()
        };
        self.expect_word("values")?;
        self.expect_symbol("(")?;
        let values = self.comma_list(|p| p.expr())?;
        self.expect_symbol(")")?;
        order_transfer_values(&columns, values).map(Statement::InsertTransfer)
    }

    fn comma_list<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, PgError>,
    ) -> Result<Vec<T>, PgError> {
        let mut items = vec![item(self)?];
        while self.eat_symbol(",") {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// `[-] primary`.
    fn expr(&mut self) -> Result<Expr, PgError> {
        let negative = self.eat_symbol("-");
        let expr = self.primary()?;
        Ok(if negative {
            Expr::Negate(Box::new(expr))
        } else {
            expr
        })
    }

    /// A literal, parameter, parenthesized expression or call, then any `:: type` casts.
    fn primary(&mut self) -> Result<Expr, PgError> {
        let expr = match self.next() {
            Some(Token::Int(i)) => Expr::Int(*i),
            Some(Token::Decimal(d)) => Expr::Decimal(d.clone()),
            Some(Token::Str(s)) => Expr::Str(s.clone()),
            Some(Token::Param(n)) => Expr::Param(*n),
            Some(Token::Word(w)) if w == "true" => Expr::Bool(true),
            Some(Token::Word(w)) if w == "false" => Expr::Bool(false),
            Some(Token::Word(w)) if w == "null" => Expr::Null,
            Some(Token::Symbol("(")) => {
                let inner = self.expr()?;
                self.expect_symbol(")")?;
                inner
            }
            Some(Token::Word(schema))
                if schema == "pg_catalog"
                    && matches!(
                        self.tokens.get(self.position..),
                        Some([Token::Symbol("."), Token::Word(_), Token::Symbol("("), ..])
                    ) =>
            {
                let Some(Token::Word(name)) = self.tokens.get(self.position + 1).cloned() else {
                    return Err(self.error_here());
                };
                self.position += 3;
                self.call(&name)?
            }
            Some(Token::Word(name)) if self.eat_symbol("(") => self.call(name)?,
            Some(Token::Word(name)) => {
                return Err(PgError::new(
                    "42703",
                    format!("column \"{name}\" does not exist"),
                ));
            }
            _ => {
                self.position = self.position.saturating_sub(1);
                return Err(self.error_here());
            }
        };
        let mut expr = expr;
        while self.eat_symbol("::") {
            expr = Expr::Cast(Box::new(expr), self.type_name()?);
        }
        Ok(expr)
    }

    fn call(&mut self, name: &str) -> Result<Expr, PgError> {
        let Some(function) = Function::from_name(name) else {
            return Err(PgError::new(
                "42883",
                format!(
                    "function {name} does not exist (the fake Postgres knows pg_sleep, current_setting, pg_backend_pid, pg_advisory_unlock_all)"
                ),
            ));
        };
        let args = if self.eat_symbol(")") {
            Vec::new()
        } else {
            let args = self.comma_list(|p| p.expr())?;
            self.expect_symbol(")")?;
            args
        };
        if args.len() != function.arity() {
            return Err(PgError::new(
                "42883",
                format!(
                    "function {}() takes {} argument(s), got {}",
                    function.name(),
                    function.arity(),
                    args.len()
                ),
            ));
        }
        Ok(Expr::Call(function, args))
    }

    fn type_name(&mut self) -> Result<PgType, PgError> {
        let name = self.identifier()?;
        if name == "double" {
            self.expect_word("precision")?;
            return Ok(PgType::Float8);
        }
        PgType::from_name(&name).ok_or_else(|| {
            PgError::new(
                "42704",
                format!("type \"{name}\" does not exist (the fake Postgres knows int, bigint, text, boolean, double precision)"),
            )
        })
    }
}

/// Puts INSERT values into table order, checking the column list.
fn order_transfer_values(columns: &[String], values: Vec<Expr>) -> Result<[Expr; 4], PgError> {
    if columns.len() != values.len() {
        return Err(PgError::syntax(if columns.len() > values.len() {
            "INSERT has more target columns than expressions"
        } else {
            "INSERT has more expressions than target columns"
        }));
    }
    let mut ordered: [Option<Expr>; 4] = Default::default();
    for (column, value) in columns.iter().zip(values) {
        let Some(index) = TRANSFER_COLUMNS.iter().position(|c| c == column) else {
            return Err(PgError::new(
                "42703",
                format!("column \"{column}\" of relation \"transfers\" does not exist"),
            ));
        };
        if ordered[index].replace(value).is_some() {
            return Err(PgError::new(
                "42701",
                format!("column \"{column}\" specified more than once"),
            ));
        }
    }
    let [Some(id), Some(from), Some(to), Some(amount)] = ordered else {
        return Err(PgError::new(
            "23502",
            "the fake Postgres needs all of id, from_id, to_id, amount in INSERT INTO transfers",
        ));
    };
    Ok([id, from, to, amount])
}

fn unsupported_command(word: &str) -> PgError {
    const KNOWN_SQL: &[&str] = &[
        "create",
        "drop",
        "alter",
        "delete",
        "truncate",
        "copy",
        "prepare",
        "execute",
        "explain",
        "declare",
        "fetch",
        "move",
        "listen",
        "notify",
        "lock",
        "vacuum",
        "analyze",
        "grant",
        "revoke",
        "savepoint",
        "release",
        "with",
        "values",
        "table",
        "call",
        "do",
        "prepare",
    ];
    if KNOWN_SQL.contains(&word) {
        return PgError::not_supported(format!(
            "{} is not supported by the fake Postgres",
            word.to_uppercase()
        ));
    }
    PgError::syntax(format!("syntax error at or near \"{word}\""))
}

fn show_token(token: &Token) -> String {
    match token {
        Token::Word(w) => w.clone(),
        Token::Quoted(q) => q.clone(),
        Token::Str(s) => format!("'{s}'"),
        Token::Int(i) => i.to_string(),
        Token::Decimal(d) => d.clone(),
        Token::Param(n) => format!("${n}"),
        Token::Symbol(s) => (*s).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut statements = parse_query(sql).expect("parses");
        assert_eq!(statements.len(), 1, "{sql}");
        statements.remove(0)
    }

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let statements =
            parse_query("SELECT 'a;b'; -- c;\n SET x.y = 'v;w' ; /* ; */ SELECT 2;;").expect("ok");
        assert_eq!(statements.len(), 3);
        assert!(parse_query("  ;; ").expect("ok").is_empty());
    }

    #[test]
    fn proxy_reset_query_parses() {
        let statements = parse_query(
            "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
             SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; \
             SET \"application_name\" = 'c''1';",
        )
        .expect("ok");
        assert_eq!(statements.len(), 8);
        assert_eq!(
            statements[7],
            Statement::Set {
                name: "application_name".into(),
                value: SetValue::Value("c'1".into()),
                local: false
            }
        );
    }

    #[test]
    fn bank_statements() {
        assert_eq!(
            one("UPDATE accounts SET balance = balance - $1 WHERE id = $2"),
            Statement::UpdateBalance {
                delta: Expr::Negate(Box::new(Expr::Param(1))),
                id: Expr::Param(2)
            }
        );
        assert_eq!(
            one("select balance from accounts where id = 3"),
            Statement::SelectBalance(Expr::Int(3))
        );
        assert_eq!(
            one("SELECT sum(balance) FROM accounts"),
            Statement::SelectSum
        );
        assert!(matches!(
            one("INSERT INTO transfers (amount, id, to_id, from_id) VALUES ($1, $2, $3, $4)"),
            Statement::InsertTransfer([
                Expr::Param(2),
                Expr::Param(4),
                Expr::Param(3),
                Expr::Param(1)
            ])
        ));
    }

    #[test]
    fn errors_name_the_problem() {
        let error = parse_query("SELEC 1").expect_err("bad");
        assert_eq!(error.code, "42601");
        let error = parse_query("CREATE TABLE t ()").expect_err("unsupported");
        assert_eq!(error.code, "0A000");
        let error = parse_query("SELECT 'open").expect_err("bad");
        assert_eq!(error.message, "unterminated quoted string");
        let error = parse_query("SELECT 1 2").expect_err("bad");
        assert_eq!(error.message, "syntax error at or near \"2\"");
    }

    #[test]
    fn casts_aliases_and_functions() {
        assert_eq!(
            one("SELECT $1::text AS echo, pg_sleep(0.5), current_setting('application_name')"),
            Statement::Select(vec![
                SelectItem {
                    expr: Expr::Cast(Box::new(Expr::Param(1)), PgType::Text),
                    alias: Some("echo".into())
                },
                SelectItem {
                    expr: Expr::Call(Function::PgSleep, vec![Expr::Decimal("0.5".into())]),
                    alias: None
                },
                SelectItem {
                    expr: Expr::Call(
                        Function::CurrentSetting,
                        vec![Expr::Str("application_name".into())]
                    ),
                    alias: None
                },
            ])
        );
    }
}
