//! Just enough SQL lexing to see what a statement does to the *session*, not the data.
//!
//! Transaction pooling hands a client a different origin connection for each transaction, so
//! anything a statement leaves behind on its connection after the transaction ends — a `SET`,
//! a `LISTEN`, a temporary table, a session advisory lock, an SQL `PREPARE`, a `WITH HOLD`
//! cursor — either follows the client (settings are tracked and re-applied), pins the client
//! to its connection, or is refused (see [`crate::session`] and README's pooling table).
//!
//! This module does not parse SQL. It splits a query string into statements at top-level `;`
//! (respecting quotes, dollar quotes and comments, so a `;` or a keyword inside a string never
//! counts) and looks at each statement's words. Being wrong must be safe: a statement it cannot
//! read (not UTF-8-clean ASCII words, say) is treated as possibly changing settings, which costs
//! one extra round trip, never correctness. Identifiers are compared case-insensitively;
//! quoted identifiers are never keywords.

/// A session-scoped feature that outlives the transaction that used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionFeature {
    /// `LISTEN channel`: notifications arrive on that connection only.
    Listen,
    /// `CREATE TEMP TABLE` (or view, sequence), `SELECT ... INTO TEMP`: visible only on that
    /// connection. `ON COMMIT DROP` tables are not session state and do not count.
    TempTables,
    /// `pg_advisory_lock` and friends (the session-level ones; `_xact_` locks end with the
    /// transaction and do not count).
    AdvisoryLocks,
    /// SQL-level `PREPARE name AS ...` (protocol-level Parse is handled by the proxy itself).
    SqlPrepare,
    /// `DECLARE ... CURSOR WITH HOLD`: the cursor outlives its transaction.
    HoldCursors,
    /// `SET SESSION AUTHORIZATION`: changes who the connection acts as.
    SessionAuthorization,
}

impl SessionFeature {
    /// Every feature, in the order README lists them.
    pub const ALL: [SessionFeature; 6] = [
        SessionFeature::Listen,
        SessionFeature::TempTables,
        SessionFeature::AdvisoryLocks,
        SessionFeature::SqlPrepare,
        SessionFeature::HoldCursors,
        SessionFeature::SessionAuthorization,
    ];

    /// The name used in configuration (`--session-feature listen=pin`) and metrics labels.
    pub fn config_name(self) -> &'static str {
        match self {
            SessionFeature::Listen => "listen",
            SessionFeature::TempTables => "temp_tables",
            SessionFeature::AdvisoryLocks => "advisory_locks",
            SessionFeature::SqlPrepare => "sql_prepare",
            SessionFeature::HoldCursors => "hold_cursors",
            SessionFeature::SessionAuthorization => "session_authorization",
        }
    }

    /// How users write it, for error messages.
    pub fn description(self) -> &'static str {
        match self {
            SessionFeature::Listen => "LISTEN",
            SessionFeature::TempTables => "temporary tables",
            SessionFeature::AdvisoryLocks => "session-level advisory locks",
            SessionFeature::SqlPrepare => "SQL PREPARE",
            SessionFeature::HoldCursors => "WITH HOLD cursors",
            SessionFeature::SessionAuthorization => "SET SESSION AUTHORIZATION",
        }
    }

    /// Parses a configuration name.
    pub fn from_config_name(name: &str) -> Option<SessionFeature> {
        SessionFeature::ALL
            .into_iter()
            .find(|feature| feature.config_name() == name)
    }
}

/// One lexical item of a statement, as far as this module cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An unquoted identifier or keyword, upper-cased.
    Word(String),
    /// A quoted identifier, `E''` string or dollar-quoted body: never a keyword.
    Quoted,
    /// A plain single-quoted string, its quotes removed: never a keyword.
    Literal(String),
    /// Any other character (`(`, `,`, `.`, `=` ...).
    Symbol(u8),
}

/// The statements of a query string, each as its tokens (empty statements dropped).
fn statements(sql: &[u8]) -> Vec<Vec<Token>> {
    let mut statements = Vec::new();
    let mut current = Vec::new();
    let mut lexer = Lexer { sql, at: 0 };
    while let Some(token) = lexer.next_token() {
        if token == Token::Symbol(b';') {
            if !current.is_empty() {
                statements.push(std::mem::take(&mut current));
            }
        } else {
            current.push(token);
        }
    }
    if !current.is_empty() {
        statements.push(current);
    }
    statements
}

struct Lexer<'a> {
    sql: &'a [u8],
    at: usize,
}

impl Lexer<'_> {
    fn peek(&self, offset: usize) -> Option<u8> {
        self.sql.get(self.at + offset).copied()
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let byte = self.peek(0)?;
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.at += 1,
                b'-' if self.peek(1) == Some(b'-') => self.skip_line_comment(),
                b'/' if self.peek(1) == Some(b'*') => self.skip_block_comment(),
                b'\'' => return Some(self.string_literal()),
                b'"' => return Some(self.quoted(b'"', false)),
                b'E' | b'e' if self.peek(1) == Some(b'\'') => {
                    self.at += 1;
                    return Some(self.quoted(b'\'', true));
                }
                b'$' => return Some(self.dollar()),
                byte if is_word_start(byte) => return Some(self.word()),
                byte => {
                    self.at += 1;
                    return Some(Token::Symbol(byte));
                }
            }
        }
    }

    fn skip_line_comment(&mut self) {
        while let Some(byte) = self.peek(0) {
            self.at += 1;
            if byte == b'\n' {
                return;
            }
        }
    }

    /// Block comments nest in Postgres.
    fn skip_block_comment(&mut self) {
        self.at += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.at += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
    }

    /// A plain `'...'` string: its text is kept (custom setting names in `set_config`).
    fn string_literal(&mut self) -> Token {
        let start = self.at + 1;
        let token = self.quoted(b'\'', false);
        let end = self.at.saturating_sub(1).max(start);
        let text = String::from_utf8_lossy(&self.sql[start..end.min(self.sql.len())]);
        match token {
            Token::Quoted => Token::Literal(text.replace("''", "'")),
            other => other,
        }
    }

    /// A quoted string or identifier; the quote doubled inside is an escaped quote, and with
    /// `backslash_escapes` (E'...') a backslash escapes the next byte.
    fn quoted(&mut self, quote: u8, backslash_escapes: bool) -> Token {
        self.at += 1;
        while let Some(byte) = self.peek(0) {
            self.at += 1;
            if backslash_escapes && byte == b'\\' {
                self.at += 1;
            } else if byte == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                } else {
                    return Token::Quoted;
                }
            }
        }
        Token::Quoted
    }

    /// `$tag$ ... $tag$` (tag possibly empty), or a positional parameter `$1`.
    fn dollar(&mut self) -> Token {
        let start = self.at;
        let mut end = start + 1;
        while self
            .sql
            .get(end)
            .is_some_and(|b| *b != b'$' && is_word_byte(*b))
        {
            end += 1;
        }
        if self.sql.get(end) != Some(&b'$') {
            self.at += 1;
            return Token::Symbol(b'$');
        }
        let tag = &self.sql[start..=end];
        let body = end + 1;
        self.at = match find(&self.sql[body..], tag) {
            Some(offset) => body + offset + tag.len(),
            None => self.sql.len(),
        };
        Token::Quoted
    }

    fn word(&mut self) -> Token {
        let start = self.at;
        while self.peek(0).is_some_and(is_word_byte) {
            self.at += 1;
        }
        let word = String::from_utf8_lossy(&self.sql[start..self.at]).to_ascii_uppercase();
        Token::Word(word)
    }
}

fn is_word_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

fn is_word_byte(byte: u8) -> bool {
    is_word_start(byte) || byte.is_ascii_digit() || byte == b'$'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The words of a statement, in order (quoted items and symbols dropped).
fn words(statement: &[Token]) -> Vec<&str> {
    statement
        .iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(word.as_str()),
            _ => None,
        })
        .collect()
}

fn first_word(statement: &[Token]) -> Option<&str> {
    match statement.first() {
        Some(Token::Word(word)) => Some(word.as_str()),
        _ => None,
    }
}

/// Functions that take session-level advisory locks (the `_xact_` ones end with the
/// transaction).
const SESSION_LOCK_FUNCTIONS: [&str; 4] = [
    "PG_ADVISORY_LOCK",
    "PG_ADVISORY_LOCK_SHARED",
    "PG_TRY_ADVISORY_LOCK",
    "PG_TRY_ADVISORY_LOCK_SHARED",
];

/// The first session-scoped feature any statement of `sql` uses, if any.
pub fn session_feature(sql: &[u8]) -> Option<SessionFeature> {
    statements(sql)
        .iter()
        .find_map(|statement| statement_feature(statement))
}

fn statement_feature(statement: &[Token]) -> Option<SessionFeature> {
    let words = words(statement);
    let calls_lock = statement.windows(2).any(|pair| {
        matches!(&pair[0], Token::Word(word) if SESSION_LOCK_FUNCTIONS.contains(&word.as_str()))
            && pair[1] == Token::Symbol(b'(')
    });
    if calls_lock {
        return Some(SessionFeature::AdvisoryLocks);
    }
    match first_word(statement)? {
        "LISTEN" => Some(SessionFeature::Listen),
        "PREPARE" if words.get(1) != Some(&"TRANSACTION") => Some(SessionFeature::SqlPrepare),
        "DECLARE" if declares_hold_cursor(&words) => Some(SessionFeature::HoldCursors),
        "CREATE" if creates_temp_object(&words) => Some(SessionFeature::TempTables),
        "SELECT" | "WITH" if selects_into_temp(&words) => Some(SessionFeature::TempTables),
        // `... DEFAULT` returns to the login user: nothing is left behind.
        "SET"
            if words.get(1..3) == Some(&["SESSION", "AUTHORIZATION"])
                && words.get(3) != Some(&"DEFAULT") =>
        {
            Some(SessionFeature::SessionAuthorization)
        }
        _ => None,
    }
}

/// `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR WITH HOLD FOR ...`
fn declares_hold_cursor(words: &[&str]) -> bool {
    let head: Vec<&str> = words.iter().copied().take_while(|w| *w != "FOR").collect();
    head.windows(2).any(|pair| pair == ["WITH", "HOLD"])
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} [UNLOGGED] {TABLE | VIEW |
/// SEQUENCE | RECURSIVE VIEW} ...`, unless the table is `ON COMMIT DROP`.
fn creates_temp_object(words: &[&str]) -> bool {
    let object = words.iter().position(|w| {
        matches!(
            *w,
            "TABLE" | "VIEW" | "SEQUENCE" | "RECURSIVE" | "FUNCTION" | "PROCEDURE"
        )
    });
    let head = &words[..object.unwrap_or(0)];
    // `CREATE TABLE pg_temp.t`: a temporary object named through the temp schema.
    let in_temp_schema = object.is_some_and(|at| {
        words.get(at + 1) == Some(&"PG_TEMP")
            || words.get(at + 1..at + 3) == Some(&["VIEW", "PG_TEMP"])
    });
    let temporary = in_temp_schema || head.iter().any(|w| matches!(*w, "TEMP" | "TEMPORARY"));
    let dropped_at_commit = words
        .windows(3)
        .any(|three| three == ["ON", "COMMIT", "DROP"]);
    temporary && !dropped_at_commit
}

/// `SELECT ... INTO [TEMP | TEMPORARY] [TABLE] name`.
fn selects_into_temp(words: &[&str]) -> bool {
    words
        .windows(2)
        .any(|pair| pair[0] == "INTO" && matches!(pair[1], "TEMP" | "TEMPORARY"))
}

/// True when `sql` may change a run-time setting that outlives the statement: `SET`
/// (not `SET LOCAL`), `RESET`, `DISCARD`, a `set_config(...)` call, or a `CALL` / `DO` (whose
/// body may do any of these). The proxy then asks the origin for the session's settings once
/// the transaction ends, so the client keeps them on its next connection.
pub fn may_change_settings(sql: &[u8]) -> bool {
    statements(sql).iter().any(|statement| {
        let calls_set_config = statement.windows(2).any(|pair| {
            matches!(&pair[0], Token::Word(word) if word == "SET_CONFIG")
                && pair[1] == Token::Symbol(b'(')
        });
        let words = words(statement);
        calls_set_config
            || match first_word(statement) {
                Some("SET") => words.get(1) != Some(&"LOCAL"),
                Some("RESET" | "DISCARD" | "CALL" | "DO") => true,
                _ => false,
            }
    })
}

/// Names of custom (dotted, `prefix.name`) settings that `sql` sets or resets: `SET [SESSION]
/// a.b ...`, `RESET a.b`, `set_config('a.b', ...)`. Postgres hides custom settings that no
/// extension defines from `pg_settings`, so the session asks for these by name when it reads
/// a client's settings back. Names are lower-cased, as Postgres folds them.
pub fn custom_setting_names(sql: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for statement in statements(sql) {
        if matches!(first_word(&statement), Some("SET" | "RESET")) {
            let at = if matches!(statement.get(1), Some(Token::Word(w)) if w == "SESSION") {
                2
            } else {
                1
            };
            if let (Some(Token::Word(prefix)), Some(Token::Symbol(b'.')), Some(Token::Word(name))) = (
                statement.get(at),
                statement.get(at + 1),
                statement.get(at + 2),
            ) {
                names.push(format!("{prefix}.{name}").to_ascii_lowercase());
            }
        }
        for window in statement.windows(3) {
            if let [
                Token::Word(function),
                Token::Symbol(b'('),
                Token::Literal(name),
            ] = window
                && function == "SET_CONFIG"
                && name.contains('.')
            {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(sql: &str) -> Option<SessionFeature> {
        session_feature(sql.as_bytes())
    }

    #[test]
    fn finds_each_session_feature() {
        use SessionFeature::*;
        let cases = [
            ("LISTEN jobs", Some(Listen)),
            ("  listen \"Jobs\";", Some(Listen)),
            ("UNLISTEN *", None),
            ("CREATE TEMP TABLE t (a int)", Some(TempTables)),
            ("create global temporary table t (a int)", Some(TempTables)),
            ("CREATE TEMPORARY VIEW v AS SELECT 1", Some(TempTables)),
            ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", None),
            ("CREATE TABLE temp (a int)", None),
            ("CREATE TEMP SEQUENCE s", Some(TempTables)),
            ("SELECT * INTO TEMP t FROM x", Some(TempTables)),
            ("SELECT * INTO t FROM x", None),
            ("SELECT pg_advisory_lock(1)", Some(AdvisoryLocks)),
            (
                "select pg_catalog.pg_try_advisory_lock_shared(1, 2)",
                Some(AdvisoryLocks),
            ),
            ("SELECT pg_advisory_xact_lock(1)", None),
            ("SELECT pg_advisory_unlock(1)", None),
            ("PREPARE q AS SELECT 1", Some(SqlPrepare)),
            ("PREPARE TRANSACTION 'x'", None),
            ("EXECUTE q", None),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", Some(HoldCursors)),
            ("DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", None),
            ("DECLARE c CURSOR FOR SELECT 'WITH HOLD'", None),
            ("SET SESSION AUTHORIZATION bob", Some(SessionAuthorization)),
            ("SET SESSION AUTHORIZATION DEFAULT", None),
            ("CREATE TABLE pg_temp.t (a int)", Some(TempTables)),
            (
                "create function pg_temp.f() returns int as 'select 1' language sql",
                Some(TempTables),
            ),
            ("CREATE TABLE public.t (a int)", None),
            ("SET SESSION search_path = a", None),
            ("SELECT 1; LISTEN x", Some(Listen)),
            ("SELECT 'LISTEN x'", None),
            ("SELECT $$; LISTEN x; $$", None),
            ("SELECT $tag$ $$; LISTEN x $tag$", None),
            ("-- LISTEN x\nSELECT 1", None),
            ("/* nested /* LISTEN x; */ still comment */ SELECT 1", None),
            ("SELECT E'it\\'s; LISTEN x'", None),
            ("SELECT \"pg_advisory_lock\"(1)", None),
        ];
        for (sql, expected) in cases {
            assert_eq!(feature(sql), expected, "{sql}");
        }
    }

    #[test]
    fn spots_statements_that_may_change_settings() {
        let changes = [
            "SET search_path = a",
            "set TimeZone to 'UTC'",
            "SET SESSION statement_timeout = '5s'",
            "RESET ALL",
            "RESET application_name",
            "DISCARD ALL",
            "SELECT set_config('x.y', 'z', false)",
            "SELECT 1; SET a.b = 1",
            "CALL p()",
            "DO $$ BEGIN PERFORM 1; END $$",
            "BEGIN; SET search_path = a; COMMIT",
        ];
        for sql in changes {
            assert!(may_change_settings(sql.as_bytes()), "{sql}");
        }
        let unchanged = [
            "SELECT 1",
            "UPDATE t SET a = 1",
            "INSERT INTO t VALUES ('SET x = 1')",
            "SET LOCAL search_path = a",
            "SELECT set_config", // a column called set_config, not a call
            "",
            ";;",
        ];
        for sql in unchanged {
            assert!(!may_change_settings(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn never_panics_on_unterminated_or_binary_input() {
        for sql in [
            &b"SELECT 'unterminated"[..],
            b"SELECT \"unterminated",
            b"SELECT $a$ unterminated",
            b"/* unterminated",
            b"SELECT E'\\",
            b"$",
            b"$1",
            b"\xff\xfe LISTEN",
            b"--",
            b"SET",
            b"SET SESSION",
            b"RESET app.",
            b"SELECT set_config('",
            b"SELECT set_config(",
        ] {
            let _ = session_feature(sql);
            let _ = may_change_settings(sql);
            let _ = custom_setting_names(sql);
        }
        // Every prefix of statements that exercise every branch (a cheap stand-in for fuzzing:
        // truncated input is where lexers overrun).
        let long = "SET SESSION app.x = 'v''q'; SELECT set_config('a.b', E'\\'', false), $t$ ; $t$ /* /* */ */ -- c\nDECLARE c CURSOR WITH HOLD FOR SELECT \"x\"; CREATE TEMP TABLE t (a int) ON COMMIT DROP";
        for end in 0..=long.len() {
            let sql = &long.as_bytes()[..end];
            let _ = session_feature(sql);
            let _ = may_change_settings(sql);
            let _ = custom_setting_names(sql);
        }
    }

    #[test]
    fn finds_custom_setting_names() {
        let cases: [(&str, &[&str]); 7] = [
            ("SET app.tenant_id = '42'", &["app.tenant_id"]),
            ("set session MyApp.User to 'x'", &["myapp.user"]),
            ("RESET app.tenant_id", &["app.tenant_id"]),
            ("SELECT set_config('app.role', 'r', false)", &["app.role"]),
            (
                "SELECT pg_catalog.set_config('search_path', 'a', false)",
                &[],
            ),
            ("SET search_path = a", &[]),
            ("SET LOCAL app.x = 1", &[]),
        ];
        for (sql, expected) in cases {
            assert_eq!(custom_setting_names(sql.as_bytes()), expected, "{sql}");
        }
    }

    #[test]
    fn config_names_round_trip() {
        for feature in SessionFeature::ALL {
            assert_eq!(
                SessionFeature::from_config_name(feature.config_name()),
                Some(feature)
            );
        }
        assert_eq!(SessionFeature::from_config_name("nope"), None);
    }
}
