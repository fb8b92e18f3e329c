//! One-line, human-readable renderings of messages, for logs, traces and snapshots.
//!
//! These are the project's trace format: the simulator's protocol traces, the conformance
//! suite's snapshots and the codec's captured vectors all render messages through here, so a
//! trace looks the same wherever it comes from. Secrets never appear: passwords, SASL payloads,
//! md5 salts and cancel keys are shown only by their length. Large values are shown by length and
//! a content hash (FNV-1a), so two traces still differ when the values do.

use crate::backend::{Authentication, BackendMessage, ErrorFields, FieldDescription};
use crate::frontend::{Bind, FrontendMessage, Target};
use bytes::Bytes;
use std::fmt::{self, Display, Formatter, Write};

/// Printable values up to this many bytes are shown whole; longer ones by a prefix, their
/// length and a hash. Binary values are always shown by length and hash.
pub const MAX_SHOWN_VALUE_LEN: usize = 200;

/// How much of a long printable value is shown before its length and hash.
pub const SHOWN_PREFIX_CHARS: usize = 60;

/// 64-bit FNV-1a: a stable, dependency-free content fingerprint for traces (not for security).
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Renders a value: printable text quoted (a prefix of it when long), binary by length and
/// hash.
pub fn show_value(bytes: &[u8]) -> String {
    let fingerprint = || format!("<{} bytes fnv={:016x}>", bytes.len(), fnv1a_64(bytes));
    match std::str::from_utf8(bytes) {
        Ok(text)
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t') =>
        {
            fingerprint()
        }
        Ok(text) if bytes.len() <= MAX_SHOWN_VALUE_LEN => format!("{text:?}"),
        Ok(text) => {
            let prefix: String = text.chars().take(SHOWN_PREFIX_CHARS).collect();
            format!("{prefix:?}...{}", fingerprint())
        }
        Err(_) => fingerprint(),
    }
}

fn show_nullable(value: &Option<Bytes>) -> String {
    value
        .as_deref()
        .map_or_else(|| "NULL".to_string(), show_value)
}

fn show_list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let shown: Vec<String> = items.iter().map(show).collect();
    format!("[{}]", shown.join(", "))
}

fn redacted(len: usize) -> String {
    format!("<redacted {len} bytes>")
}

fn target(target: Target) -> &'static str {
    match target {
        Target::Statement => "statement",
        Target::Portal => "portal",
    }
}

impl Display for FrontendMessage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            FrontendMessage::Startup(startup) => {
                write!(f, " {}.{}", startup.version.major, startup.version.minor)?;
                for (name, value) in &startup.parameters {
                    write!(f, " {name}={}", show_value(value.as_bytes()))?;
                }
                Ok(())
            }
            FrontendMessage::CancelRequest(cancel) => write!(
                f,
                " pid={} key={}",
                cancel.process_id,
                redacted(cancel.secret_key.len())
            ),
            FrontendMessage::Query(sql) => write!(f, " {}", show_value(sql.as_bytes())),
            FrontendMessage::Parse(parse) => write!(
                f,
                " name={} query={} types={:?}",
                show_value(parse.name.as_bytes()),
                show_value(parse.query.as_bytes()),
                parse.parameter_types
            ),
            FrontendMessage::Bind(bind) => write_bind(f, bind),
            FrontendMessage::Describe { target: t, name }
            | FrontendMessage::Close { target: t, name } => {
                write!(f, " {} {}", target(*t), show_value(name.as_bytes()))
            }
            FrontendMessage::Execute { portal, max_rows } => {
                write!(
                    f,
                    " portal={} max_rows={max_rows}",
                    show_value(portal.as_bytes())
                )
            }
            FrontendMessage::CopyData(data) => write!(f, " {}", show_value(data)),
            FrontendMessage::CopyFail(reason) => write!(f, " {}", show_value(reason.as_bytes())),
            FrontendMessage::FunctionCall(call) => write!(
                f,
                " oid={} formats={:?} args={} result_format={}",
                call.function_oid,
                call.argument_formats,
                show_list(&call.arguments, show_nullable),
                call.result_format
            ),
            FrontendMessage::Password(password) => write!(f, " {}", redacted(password.len())),
            FrontendMessage::SaslInitialResponse { mechanism, data } => write!(
                f,
                " {mechanism} {}",
                redacted(data.as_ref().map_or(0, Bytes::len))
            ),
            FrontendMessage::SaslResponse(data) | FrontendMessage::GssResponse(data) => {
                write!(f, " {}", redacted(data.len()))
            }
            FrontendMessage::Unknown { tag, body } => {
                write!(f, " type={} {}", crate::error::Tag(*tag), show_value(body))
            }
            FrontendMessage::SslRequest
            | FrontendMessage::GssEncRequest
            | FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::CopyDone
            | FrontendMessage::Terminate => Ok(()),
        }
    }
}

impl fmt::Debug for FrontendMessage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        Display::fmt(self, f)
    }
}

fn write_bind(f: &mut Formatter<'_>, bind: &Bind) -> fmt::Result {
    write!(
        f,
        " portal={} statement={} param_formats={:?} params={} result_formats={:?}",
        show_value(bind.portal.as_bytes()),
        show_value(bind.statement.as_bytes()),
        bind.parameter_formats,
        show_list(&bind.parameters, show_nullable),
        bind.result_formats
    )
}

fn show_field(field: &FieldDescription) -> String {
    format!(
        "{} type={} size={} mod={} format={} table={} column={}",
        show_value(field.name.as_bytes()),
        field.type_oid,
        field.type_size,
        field.type_modifier,
        field.format,
        field.table_oid,
        field.column_attribute
    )
}

/// Renders error/notice fields as `C=value` pairs in wire order.
pub fn show_error_fields(fields: &ErrorFields) -> String {
    let mut out = String::new();
    for (code, value) in &fields.fields {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}={}", *code as char, show_value(value.as_bytes()));
    }
    out
}

impl Display for BackendMessage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            BackendMessage::Authentication(auth) => write_authentication(f, auth),
            BackendMessage::BackendKeyData(key) => write!(
                f,
                " pid={} key={}",
                key.process_id,
                redacted(key.secret_key.len())
            ),
            BackendMessage::CommandComplete(tag) => write!(f, " {}", show_value(tag.as_bytes())),
            BackendMessage::CopyData(data) => write!(f, " {}", show_value(data)),
            BackendMessage::CopyInResponse(copy)
            | BackendMessage::CopyOutResponse(copy)
            | BackendMessage::CopyBothResponse(copy) => {
                write!(
                    f,
                    " format={} columns={:?}",
                    copy.format, copy.column_formats
                )
            }
            BackendMessage::DataRow(row) => {
                write!(f, " {}", show_list(row.values(), show_nullable))
            }
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                write!(f, " {}", show_error_fields(fields))
            }
            BackendMessage::FunctionCallResponse(value) => write!(f, " {}", show_nullable(value)),
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => write!(
                f,
                " newest_minor={newest_minor} unrecognized={unrecognized_options:?}"
            ),
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => write!(
                f,
                " pid={process_id} channel={} payload={}",
                show_value(channel.as_bytes()),
                show_value(payload.as_bytes())
            ),
            BackendMessage::ParameterDescription(types) => write!(f, " {types:?}"),
            BackendMessage::ParameterStatus { name, value } => {
                write!(f, " {name}={}", show_value(value.as_bytes()))
            }
            BackendMessage::ReadyForQuery(status) => write!(f, " {}", status.byte() as char),
            BackendMessage::RowDescription(fields) => {
                write!(f, " {}", show_list(fields, show_field))
            }
            BackendMessage::Unknown { tag, body } => {
                write!(f, " type={} {}", crate::error::Tag(*tag), show_value(body))
            }
            BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::CopyDone
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::NoData
            | BackendMessage::ParseComplete
            | BackendMessage::PortalSuspended => Ok(()),
        }
    }
}

fn write_authentication(f: &mut Formatter<'_>, auth: &Authentication) -> fmt::Result {
    match auth {
        Authentication::Md5Password { .. } => write!(f, " salt={}", redacted(4)),
        Authentication::Sasl { mechanisms } => write!(f, " {mechanisms:?}"),
        Authentication::GssContinue(data)
        | Authentication::SaslContinue(data)
        | Authentication::SaslFinal(data) => write!(f, " {}", redacted(data.len())),
        Authentication::Other { code, data } => write!(f, " code={code} {}", redacted(data.len())),
        _ => Ok(()),
    }
}
