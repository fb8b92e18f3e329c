//! Errors the fake reports to its clients, in Postgres's shape (severity, SQLSTATE, message).
//!
//! Every failure on protocol or SQL input becomes a [`PgError`] and then an ErrorResponse;
//! nothing a peer sends can make the fake panic.

use elephant_protocol::ErrorFields;
use elephant_protocol::backend::field;

/// An error to send as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// `ERROR` or `FATAL` (a FATAL ends the connection after it is sent).
    pub severity: &'static str,
    /// SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// Optional hint.
    pub hint: Option<String>,
}

impl PgError {
    /// An `ERROR` with this SQLSTATE.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: "ERROR",
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// A `FATAL` error: the connection closes after it.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: "FATAL",
            ..PgError::new(code, message)
        }
    }

    /// 42601 syntax error.
    pub fn syntax(message: impl Into<String>) -> Self {
        PgError::new("42601", message)
    }

    /// 0A000 feature not supported (what the fake does not implement).
    pub fn not_supported(message: impl Into<String>) -> Self {
        PgError::new("0A000", message)
    }

    /// 54000 program limit exceeded (one of the fake's named limits).
    pub fn program_limit(message: impl Into<String>) -> Self {
        PgError::new("54000", message)
    }

    /// 08P01 protocol violation.
    pub fn protocol(message: impl Into<String>) -> Self {
        PgError::new("08P01", message)
    }

    /// 25P02: a statement in a failed transaction block.
    pub fn in_failed_transaction() -> Self {
        PgError::new(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// True for FATAL errors.
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL"
    }

    /// The ErrorResponse fields.
    pub fn to_fields(&self) -> ErrorFields {
        let fields = ErrorFields::new(self.severity, self.code, self.message.clone());
        match &self.hint {
            Some(hint) => fields.with(field::HINT, hint.clone()),
            None => fields,
        }
    }
}

/// A NoticeResponse the fake sends (warnings such as "there is no transaction in progress").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// SQLSTATE.
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl Notice {
    /// A WARNING notice.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Notice {
            code,
            message: message.into(),
        }
    }

    /// The NoticeResponse fields.
    pub fn to_fields(&self) -> ErrorFields {
        ErrorFields::new("WARNING", self.code, self.message.clone())
    }
}
