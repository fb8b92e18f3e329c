//! The transcript format (`*.pgtx`): one scripted Postgres session, readable as text.
//!
//! Why a small line format of our own rather than YAML or TOML: a transcript is mostly a list of
//! protocol messages, and one message per line (`parse s1 SELECT $1::int`) reads like the
//! protocol documentation, diffs well in review, and needs no quoting of SQL. The grammar is in
//! `conformance/README.md`; this module turns a file into a [`Transcript`] and reports every
//! mistake with its file and line.

use bytes::Bytes;
use elephant_protocol::{Bind, FrontendMessage, Parse, Target};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default bound on every wait of a transcript.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest value `gen(N)` / `copyrows` may generate, so a typo cannot exhaust memory.
pub const MAX_GENERATED_BYTES: usize = 64 << 20;

/// The role a transcript logs in as; each maps to a fixtures role with its own auth method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleName {
    /// `scram_user`, SCRAM-SHA-256 (the default).
    Scram,
    /// `md5_user`, md5.
    Md5,
    /// `cleartext_user`, cleartext password.
    Cleartext,
    /// `trust_user`, no password.
    Trust,
}

impl RoleName {
    /// Every role, for arms that build one endpoint per role.
    pub const ALL: [RoleName; 4] = [
        RoleName::Scram,
        RoleName::Md5,
        RoleName::Cleartext,
        RoleName::Trust,
    ];

    fn parse(word: &str) -> Option<RoleName> {
        match word {
            "scram" => Some(RoleName::Scram),
            "md5" => Some(RoleName::Md5),
            "cleartext" => Some(RoleName::Cleartext),
            "trust" => Some(RoleName::Trust),
            _ => None,
        }
    }

    /// The word used in transcripts.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Scram => "scram",
            RoleName::Md5 => "md5",
            RoleName::Cleartext => "cleartext",
            RoleName::Trust => "trust",
        }
    }
}

/// What to wait for from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// This many ReadyForQuery messages.
    Ready(usize),
    /// This many messages of any kind.
    Messages(usize),
    /// This many messages with this name (`CopyInResponse`, `PortalSuspended`, ...).
    Named(String, usize),
    /// The server closes the connection.
    Closed,
}

/// One step of a transcript.
#[derive(Debug, Clone)]
pub enum Step {
    /// Send one message.
    Send(FrontendMessage),
    /// Send `rows` generated text rows (`<n>\t<width x's>\n`) as CopyData in 64 KiB chunks.
    CopyRows {
        /// Rows to generate.
        rows: usize,
        /// Width of the second column.
        width: usize,
    },
    /// Wait for the backend.
    Await(Wait),
    /// After this many milliseconds, send a CancelRequest for the current connection.
    Cancel(u64),
    /// Pause.
    Sleep(u64),
    /// Open another connection under this name (logged in like the first) and make it current.
    Connect(String),
    /// Make a named connection current (`main` is the first).
    On(String),
    /// Ask the arm to do something outside the protocol (e.g. kill the tunnel).
    Hook(String),
    /// The lines received by the previous wait must include one containing this text.
    Expect(String),
}

/// A step with its line number, for error messages.
#[derive(Debug, Clone)]
pub struct Located {
    /// 1-based line in the transcript file.
    pub line: usize,
    /// The step.
    pub step: Step,
}

/// A parsed transcript.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// File stem: the snapshot name.
    pub name: String,
    /// Where it came from.
    pub path: PathBuf,
    /// Login role.
    pub role: RoleName,
    /// Login user instead of the role's own (for unknown-role cases).
    pub user: Option<String>,
    /// Password instead of the role's own (for wrong-password cases).
    pub password: Option<String>,
    /// Extra startup parameters.
    pub startup: Vec<(String, String)>,
    /// Send only `user` and `database` (no default `application_name`).
    pub bare_startup: bool,
    /// Extra flags for the proxy this transcript runs through.
    pub proxy_args: Vec<String>,
    /// Arms the transcript is not meant for.
    pub not_for: Vec<String>,
    /// Snapshotted per arm kind instead of required to equal the direct arm.
    pub per_arm: bool,
    /// An Access/tunnel scenario: the transcript runs only in the access arm, which builds it.
    pub scenario: Option<String>,
    /// Bound on each wait.
    pub timeout: Duration,
    /// SQL run (unrecorded) on a separate connection before the transcript.
    pub setup: Vec<String>,
    /// What to do.
    pub steps: Vec<Located>,
}

/// The `application_name` every login sends unless the transcript says `bare-startup` or
/// sets its own: drivers send one, and a proxy must report it back as Postgres does.
pub const DEFAULT_APPLICATION_NAME: &str = "conformance";

impl Transcript {
    /// The startup parameters to send besides `user` and `database`.
    pub fn startup_parameters(&self) -> Vec<(String, String)> {
        let mut parameters = self.startup.clone();
        if !self.bare_startup && !parameters.iter().any(|(n, _)| n == "application_name") {
            parameters.insert(
                0,
                ("application_name".into(), DEFAULT_APPLICATION_NAME.into()),
            );
        }
        parameters
    }

    /// Whether the arm named `arm` should run this transcript.
    pub fn runs_in(&self, arm: &str) -> bool {
        !self.not_for.iter().any(|a| a == arm)
    }
}

/// A mistake in a transcript file.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", path.display())]
pub struct ParseError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads every `*.pgtx` file of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Transcript>, ParseError> {
    let fail = |message: String| ParseError {
        path: dir.to_path_buf(),
        line: 0,
        message,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pgtx"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| ParseError {
                path: path.clone(),
                line: 0,
                message: e.to_string(),
            })?;
            parse(path, &text)
        })
        .collect()
}

/// Parses one transcript.
pub fn parse(path: &Path, text: &str) -> Result<Transcript, ParseError> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut transcript = Transcript {
        name,
        path: path.to_path_buf(),
        role: RoleName::Scram,
        user: None,
        password: None,
        startup: Vec::new(),
        bare_startup: false,
        proxy_args: Vec::new(),
        not_for: Vec::new(),
        per_arm: false,
        scenario: None,
        timeout: DEFAULT_TIMEOUT,
        setup: Vec::new(),
        steps: Vec::new(),
    };
    for (line, content) in logical_lines(text) {
        let error = |message: String| ParseError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let (verb, rest) = split_word(&content);
        if header(&mut transcript, verb, rest).map_err(error)? {
            if !transcript.steps.is_empty() {
                return Err(error(format!("`{verb}` belongs before the first step")));
            }
            continue;
        }
        let step = step(verb, rest).map_err(error)?;
        transcript.steps.push(Located { line, step });
    }
    Ok(transcript)
}

/// Non-comment lines with their line numbers; an indented line continues the previous one
/// (joined with a newline), so long SQL can span lines.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        match lines.last_mut() {
            Some((_, previous)) if indented => {
                previous.push('\n');
                previous.push_str(trimmed);
            }
            _ => lines.push((index + 1, trimmed.to_string())),
        }
    }
    lines
}

fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

/// Applies a header directive; `Ok(false)` when `verb` is not one.
fn header(t: &mut Transcript, verb: &str, rest: &str) -> Result<bool, String> {
    match verb {
        "role" => t.role = RoleName::parse(rest).ok_or(format!("unknown role `{rest}`"))?,
        "user" => t.user = Some(rest.to_string()),
        "password" => t.password = Some(rest.to_string()),
        "startup" => {
            let (name, value) = rest.split_once('=').ok_or("startup wants NAME=VALUE")?;
            t.startup.push((name.to_string(), value.to_string()));
        }
        "proxy-args" => t
            .proxy_args
            .extend(rest.split_whitespace().map(str::to_string)),
        "not-for" => t
            .not_for
            .extend(rest.split_whitespace().map(str::to_string)),
        "per-arm" => t.per_arm = true,
        "bare-startup" => t.bare_startup = true,
        "scenario" => t.scenario = Some(rest.to_string()),
        "timeout" => t.timeout = Duration::from_millis(millis(rest)?),
        "setup" => t.setup.push(rest.to_string()),
        _ => return Ok(false),
    }
    Ok(true)
}

fn millis(text: &str) -> Result<u64, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(n) => (n, 1),
        None => (text.strip_suffix('s').unwrap_or(text), 1000),
    };
    number
        .parse::<u64>()
        .map(|n| n * scale)
        .map_err(|_| format!("`{text}` is not a duration (e.g. 300ms, 5s)"))
}

fn step(verb: &str, rest: &str) -> Result<Step, String> {
    let send = |message| Ok(Step::Send(message));
    match verb {
        "query" => send(FrontendMessage::Query(rest.into())),
        "parse" => send(parse_message(rest)?),
        "bind" => send(bind_message(rest)?),
        "describe" => {
            let (target, name) = target_and_name(rest)?;
            send(FrontendMessage::Describe { target, name })
        }
        "close" => {
            let (target, name) = target_and_name(rest)?;
            send(FrontendMessage::Close { target, name })
        }
        "execute" => send(execute_message(rest)?),
        "sync" => send(FrontendMessage::Sync),
        "flush" => send(FrontendMessage::Flush),
        "copydone" => send(FrontendMessage::CopyDone),
        "copyfail" => send(FrontendMessage::CopyFail(rest.into())),
        "terminate" => send(FrontendMessage::Terminate),
        "copydata" => send(FrontendMessage::CopyData(
            single_value(rest)?.ok_or("copydata takes a value, not NULL")?,
        )),
        "copyrows" => {
            let numbers = numbers(rest, 2)?;
            Ok(Step::CopyRows {
                rows: numbers[0],
                width: numbers[1],
            })
        }
        "await" => Ok(Step::Await(wait(rest)?)),
        "cancel" => Ok(Step::Cancel(millis(rest)?)),
        "sleep" => Ok(Step::Sleep(millis(rest)?)),
        "connect" => Ok(Step::Connect(identifier(rest)?)),
        "on" => Ok(Step::On(identifier(rest)?)),
        "hook" => Ok(Step::Hook(identifier(rest)?)),
        "expect" if !rest.is_empty() => Ok(Step::Expect(rest.to_string())),
        other => Err(format!("unknown step `{other}`")),
    }
}

fn identifier(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(format!("expected one name, got `{text}`"));
    }
    Ok(text.to_string())
}

fn numbers(text: &str, count: usize) -> Result<Vec<usize>, String> {
    let parsed: Result<Vec<usize>, _> = text.split_whitespace().map(str::parse).collect();
    match parsed {
        Ok(values) if values.len() == count => Ok(values),
        _ => Err(format!("expected {count} numbers, got `{text}`")),
    }
}

fn wait(text: &str) -> Result<Wait, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let count = |index: usize| -> Result<usize, String> {
        words
            .get(index)
            .map_or(Ok(1), |n| n.parse().map_err(|_| format!("bad count `{n}`")))
    };
    match words.first().copied() {
        Some("ready") => Ok(Wait::Ready(count(1)?)),
        Some("closed") => Ok(Wait::Closed),
        Some(word) if word.chars().all(|c| c.is_ascii_digit()) => Ok(Wait::Messages(count(0)?)),
        Some(word) if word.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => {
            Ok(Wait::Named(word.to_string(), count(1)?))
        }
        _ => Err(format!(
            "await wants `ready [N]`, `N`, `MessageName [N]` or `closed`, got `{text}`"
        )),
    }
}

fn target_and_name(text: &str) -> Result<(Target, elephant_protocol::PgString), String> {
    let (kind, name) = split_word(text);
    let target = match kind {
        "statement" => Target::Statement,
        "portal" => Target::Portal,
        _ => return Err(format!("expected `statement` or `portal`, got `{kind}`")),
    };
    Ok((target, object_name(name)?.into()))
}

/// A statement or portal name: a bare word, or `""` for the unnamed one.
fn object_name(word: &str) -> Result<String, String> {
    match word {
        "\"\"" => Ok(String::new()),
        "" => Err("missing name (write \"\" for the unnamed one)".into()),
        w if w.contains(char::is_whitespace) => Err(format!("bad name `{w}`")),
        w => Ok(w.to_string()),
    }
}

fn parse_message(rest: &str) -> Result<FrontendMessage, String> {
    let (name, rest) = split_word(rest);
    let (types, query) = match rest.strip_prefix("types=") {
        Some(list) => {
            let (list, query) = split_word(list);
            let types: Result<Vec<u32>, _> = list.split(',').map(str::parse).collect();
            (types.map_err(|_| format!("bad types `{list}`"))?, query)
        }
        None => (Vec::new(), rest),
    };
    Ok(FrontendMessage::Parse(Parse {
        name: object_name(name)?.into(),
        query: query.into(),
        parameter_types: types,
    }))
}

fn execute_message(rest: &str) -> Result<FrontendMessage, String> {
    let (portal, rows) = split_word(rest);
    let max_rows = if rows.is_empty() {
        0
    } else {
        rows.parse()
            .map_err(|_| format!("bad row limit `{rows}`"))?
    };
    Ok(FrontendMessage::Execute {
        portal: object_name(portal)?.into(),
        max_rows,
    })
}

/// `bind PORTAL STATEMENT [value...] [formats=F,..] [results=F,..]`.
fn bind_message(rest: &str) -> Result<FrontendMessage, String> {
    let tokens = tokenize(rest)?;
    let [portal, statement, values @ ..] = tokens.as_slice() else {
        return Err("bind wants PORTAL STATEMENT [values...]".into());
    };
    let mut bind = Bind {
        portal: object_name(portal)?.into(),
        statement: object_name(statement)?.into(),
        parameter_formats: Vec::new(),
        parameters: Vec::new(),
        result_formats: Vec::new(),
    };
    for token in values {
        if let Some(list) = token.strip_prefix("formats=") {
            bind.parameter_formats = formats(list)?;
        } else if let Some(list) = token.strip_prefix("results=") {
            bind.result_formats = formats(list)?;
        } else {
            bind.parameters.push(value(token)?);
        }
    }
    Ok(FrontendMessage::Bind(bind))
}

fn formats(list: &str) -> Result<Vec<i16>, String> {
    list.split(',')
        .map(|f| f.parse().map_err(|_| format!("bad format code `{f}`")))
        .collect()
}

fn single_value(text: &str) -> Result<Option<Bytes>, String> {
    match tokenize(text)?.as_slice() {
        [one] => value(one),
        _ => Err(format!("expected one value, got `{text}`")),
    }
}

/// Splits on whitespace, keeping `'...'` (with `''` for a quote) together.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if quoted && chars.peek() == Some(&'\'') => {
                current.push_str("''");
                chars.next();
            }
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated quote in `{text}`"));
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

/// A parameter or CopyData value: `NULL`, `'text'` (`''` is a quote; `\n`, `\t`, `\\`
/// escapes), `x'hex'`, or `gen(N)` (N generated printable bytes).
fn value(token: &str) -> Result<Option<Bytes>, String> {
    if token == "NULL" {
        return Ok(None);
    }
    if let Some(hex) = token.strip_prefix("x'").and_then(|t| t.strip_suffix('\'')) {
        return hex_bytes(hex).map(|b| Some(Bytes::from(b)));
    }
    if let Some(count) = token.strip_prefix("gen(").and_then(|t| t.strip_suffix(')')) {
        let count: usize = count
            .parse()
            .map_err(|_| format!("bad size in `{token}`"))?;
        if count > MAX_GENERATED_BYTES {
            return Err(format!("`{token}` is over {MAX_GENERATED_BYTES} bytes"));
        }
        return Ok(Some(Bytes::from(generated(count))));
    }
    let text = token
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .ok_or(format!(
            "`{token}` is not a value (NULL, 'text', x'hex', gen(N))"
        ))?;
    Ok(Some(Bytes::from(unescape(&text.replace("''", "'")))))
}

/// `count` printable bytes with a repeating pattern that is not all one character (so a
/// shifted or truncated copy shows up in the fingerprint).
pub fn generated(count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36])
        .collect()
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn hex_bytes(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in `{hex}`"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(format!("bad hex `{hex}`"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Transcript {
        parse(Path::new("t.pgtx"), text).expect("valid transcript")
    }

    #[test]
    fn headers_steps_and_continuations() {
        let t = parsed(
            "# goal\nrole md5\nproxy-args --pool-size 2\nnot-for fake\n\nquery SELECT 1;\n  SELECT 2\nawait ready\n",
        );
        assert_eq!(t.role, RoleName::Md5);
        assert_eq!(t.proxy_args, ["--pool-size", "2"]);
        assert!(!t.runs_in("fake"));
        assert_eq!(t.steps.len(), 2);
        assert_eq!(t.steps[0].line, 6);
        match &t.steps[0].step {
            Step::Send(FrontendMessage::Query(sql)) => {
                assert_eq!(sql.to_string(), "SELECT 1;\nSELECT 2")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_values_and_formats() {
        let t = parsed("bind p \"\" 'it''s' NULL x'00ff' formats=0,0,1 results=1\n");
        let Step::Send(FrontendMessage::Bind(bind)) = &t.steps[0].step else {
            panic!("not a bind");
        };
        assert_eq!(bind.portal.to_string(), "p");
        assert_eq!(bind.statement.to_string(), "");
        assert_eq!(
            bind.parameters,
            vec![
                Some(Bytes::from_static(b"it's")),
                None,
                Some(Bytes::from_static(&[0, 255]))
            ]
        );
        assert_eq!(bind.parameter_formats, [0, 0, 1]);
        assert_eq!(bind.result_formats, [1]);
    }

    #[test]
    fn mistakes_name_the_line() {
        let error = parse(Path::new("x.pgtx"), "query SELECT 1\nawait soon\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.to_string().contains("x.pgtx:2"), "{error}");
        let late = parse(Path::new("x.pgtx"), "sync\nrole md5\n").unwrap_err();
        assert!(late.message.contains("before the first step"), "{late}");
    }
}
