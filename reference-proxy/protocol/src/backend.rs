//! Backend (server to client) messages: their types, how their bodies decode, how they encode.
//!
//! Bodies stay zero-copy where they can be large (`DataRow`, `CopyData`): the decoded message
//! holds a slice of the received frame, validated once at decode time so later accessors
//! cannot fail or panic.

use crate::error::{DecodeError, EncodeError};
use crate::frontend::{decode_formats, encode_formats};
use crate::limits::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN};
use crate::pg_string::PgString;
use crate::wire::{Reader, put_count, put_cstr, put_nullable_bytes, write_message};
use bytes::{BufMut, Bytes, BytesMut};

/// An Authentication (`'R'`) request or result.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// 0: authentication succeeded.
    Ok,
    /// 2: Kerberos V5 (long obsolete; kept so it passes through).
    KerberosV5,
    /// 3: send the password in cleartext.
    CleartextPassword,
    /// 5: send md5(md5(password || user) || salt).
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// 7: start GSSAPI.
    Gss,
    /// 8: GSSAPI or SSPI continuation data (opaque).
    GssContinue(Bytes),
    /// 9: start SSPI.
    Sspi,
    /// 10: start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256-PLUS`, `SCRAM-SHA-256`.
        mechanisms: Vec<PgString>,
    },
    /// 11: SASL challenge (server-first message).
    SaslContinue(Bytes),
    /// 12: SASL outcome (server-final message).
    SaslFinal(Bytes),
    /// Any other code: kept as raw bytes.
    Other {
        /// The authentication code.
        code: i32,
        /// Everything after the code.
        data: Bytes,
    },
}

impl Authentication {
    fn code(&self) -> i32 {
        match self {
            Authentication::Ok => 0,
            Authentication::KerberosV5 => 2,
            Authentication::CleartextPassword => 3,
            Authentication::Md5Password { .. } => 5,
            Authentication::Gss => 7,
            Authentication::GssContinue(_) => 8,
            Authentication::Sspi => 9,
            Authentication::Sasl { .. } => 10,
            Authentication::SaslContinue(_) => 11,
            Authentication::SaslFinal(_) => 12,
            Authentication::Other { code, .. } => *code,
        }
    }

    /// The message name the protocol documentation uses.
    pub fn name(&self) -> &'static str {
        match self {
            Authentication::Ok => "AuthenticationOk",
            Authentication::KerberosV5 => "AuthenticationKerberosV5",
            Authentication::CleartextPassword => "AuthenticationCleartextPassword",
            Authentication::Md5Password { .. } => "AuthenticationMD5Password",
            Authentication::Gss => "AuthenticationGSS",
            Authentication::GssContinue(_) => "AuthenticationGSSContinue",
            Authentication::Sspi => "AuthenticationSSPI",
            Authentication::Sasl { .. } => "AuthenticationSASL",
            Authentication::SaslContinue(_) => "AuthenticationSASLContinue",
            Authentication::SaslFinal(_) => "AuthenticationSASLFinal",
            Authentication::Other { .. } => "Authentication",
        }
    }
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authentication::Md5Password { .. } => f.write_str("Md5Password { salt: <redacted> }"),
            Authentication::GssContinue(data)
            | Authentication::SaslContinue(data)
            | Authentication::SaslFinal(data)
            | Authentication::Other { data, .. } => {
                write!(f, "{} {{ data: <{} bytes> }}", self.name(), data.len())
            }
            Authentication::Sasl { mechanisms } => f
                .debug_struct("Sasl")
                .field("mechanisms", mechanisms)
                .finish(),
            other => f.write_str(other.name()),
        }
    }
}

/// BackendKeyData: what a client needs to cancel this session's queries. The key is a secret
/// (4 bytes in protocol 3.0, up to 256 in 3.2); Debug redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    /// Backend process id.
    pub process_id: i32,
    /// Cancel secret.
    pub secret_key: Bytes,
}

impl std::fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKeyData")
            .field("process_id", &self.process_id)
            .field(
                "secret_key",
                &format_args!("<{} bytes>", self.secret_key.len()),
            )
            .finish()
    }
}

/// Field codes of ErrorResponse and NoticeResponse, from "Error and Notice Message Fields".
pub mod field {
    /// Severity, localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (9.6+).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary message.
    pub const MESSAGE: u8 = b'M';
    /// Detail.
    pub const DETAIL: u8 = b'D';
    /// Hint.
    pub const HINT: u8 = b'H';
    /// Cursor position in the query.
    pub const POSITION: u8 = b'P';
    /// Position in an internal query.
    pub const INTERNAL_POSITION: u8 = b'p';
    /// The internal query.
    pub const INTERNAL_QUERY: u8 = b'q';
    /// Context (call stack).
    pub const WHERE: u8 = b'W';
    /// Schema name.
    pub const SCHEMA: u8 = b's';
    /// Table name.
    pub const TABLE: u8 = b't';
    /// Column name.
    pub const COLUMN: u8 = b'c';
    /// Data type name.
    pub const DATA_TYPE: u8 = b'd';
    /// Constraint name.
    pub const CONSTRAINT: u8 = b'n';
    /// Source file.
    pub const FILE: u8 = b'F';
    /// Source line.
    pub const LINE: u8 = b'L';
    /// Source routine.
    pub const ROUTINE: u8 = b'R';
}

/// The fields of an ErrorResponse or NoticeResponse, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// (field code, value) pairs; the code is never 0.
    pub fields: Vec<(u8, PgString)>,
}

impl ErrorFields {
    /// An error with the three fields every Postgres error carries, plus the non-localized
    /// severity, in the order Postgres writes them.
    pub fn new(severity: &str, sqlstate: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            fields: vec![
                (field::SEVERITY, PgString::from(severity)),
                (field::SEVERITY_NONLOCALIZED, PgString::from(severity)),
                (field::CODE, PgString::from(sqlstate)),
                (field::MESSAGE, PgString::from(message.into())),
            ],
        }
    }

    /// Adds one field.
    pub fn with(mut self, code: u8, value: impl Into<String>) -> Self {
        self.fields.push((code, PgString::from(value.into())));
        self
    }

    /// The first value of a field.
    pub fn get(&self, code: u8) -> Option<&PgString> {
        self.fields.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The SQLSTATE (`C` field).
    pub fn code(&self) -> Option<&PgString> {
        self.get(field::CODE)
    }

    /// The primary message (`M` field).
    pub fn message(&self) -> Option<&PgString> {
        self.get(field::MESSAGE)
    }

    /// The severity, preferring the non-localized `V` field.
    pub fn severity(&self) -> Option<&PgString> {
        self.get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY))
    }

    fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        let mut fields = Vec::new();
        loop {
            let code = reader.u8("field code")?;
            if code == 0 {
                return Ok(ErrorFields { fields });
            }
            fields.push((code, reader.cstr("field value")?));
        }
    }

    fn encode(&self, dst: &mut BytesMut, message: &'static str) -> Result<(), EncodeError> {
        for (code, value) in &self.fields {
            if *code == 0 {
                return Err(EncodeError::InvalidValue {
                    message,
                    field: "field code",
                    detail: "code 0 would end the field list".into(),
                });
            }
            dst.put_u8(*code);
            put_cstr(dst, value, message, "field value")?;
        }
        dst.put_u8(0);
        Ok(())
    }
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block (queries rejected until it ends).
    Failed,
}

impl TransactionStatus {
    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: PgString,
    /// OID of the source table, or 0.
    pub table_oid: u32,
    /// Attribute number of the source column, or 0.
    pub column_attribute: i16,
    /// OID of the data type.
    pub type_oid: u32,
    /// Type size (`pg_type.typlen`); negative means variable width.
    pub type_size: i16,
    /// Type modifier (`pg_attribute.atttypmod`).
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary.
    pub format: i16,
}

/// A DataRow: column values as slices of the received frame. Validated at decode time, so
/// [`DataRow::values`] never fails.
#[derive(Clone, PartialEq, Eq)]
pub struct DataRow {
    values: Vec<Option<Bytes>>,
}

impl DataRow {
    /// A row from column values (`None` is SQL NULL).
    pub fn new(values: Vec<Option<Bytes>>) -> Self {
        DataRow { values }
    }

    /// Column values; `None` is SQL NULL.
    pub fn values(&self) -> &[Option<Bytes>] {
        &self.values
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for a row with no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for DataRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for value in &self.values {
            match value {
                None => list.entry(&format_args!("NULL")),
                Some(bytes) if bytes.len() > 64 => {
                    list.entry(&format_args!("<{} bytes>", bytes.len()))
                }
                Some(bytes) => list.entry(&String::from_utf8_lossy(bytes)),
            };
        }
        list.finish()
    }
}

/// CopyInResponse, CopyOutResponse and CopyBothResponse share this body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// Overall format: 0 text, 1 binary.
    pub format: i8,
    /// Per-column format codes.
    pub column_formats: Vec<i16>,
}

/// Every message a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendMessage {
    /// `'R'` Authentication request or result.
    Authentication(Authentication),
    /// `'K'` BackendKeyData.
    BackendKeyData(BackendKeyData),
    /// `'2'` BindComplete.
    BindComplete,
    /// `'3'` CloseComplete.
    CloseComplete,
    /// `'C'` CommandComplete with its tag (e.g. `SELECT 3`, `INSERT 0 1`).
    CommandComplete(PgString),
    /// `'d'` CopyData.
    CopyData(Bytes),
    /// `'c'` CopyDone.
    CopyDone,
    /// `'G'` CopyInResponse.
    CopyInResponse(CopyResponse),
    /// `'H'` CopyOutResponse.
    CopyOutResponse(CopyResponse),
    /// `'W'` CopyBothResponse (replication).
    CopyBothResponse(CopyResponse),
    /// `'D'` DataRow.
    DataRow(DataRow),
    /// `'I'` EmptyQueryResponse.
    EmptyQueryResponse,
    /// `'E'` ErrorResponse.
    ErrorResponse(ErrorFields),
    /// `'V'` FunctionCallResponse; `None` is SQL NULL.
    FunctionCallResponse(Option<Bytes>),
    /// `'v'` NegotiateProtocolVersion.
    NegotiateProtocolVersion {
        /// Newest minor version the server supports for the requested major version.
        newest_minor: i32,
        /// Protocol options (`_pq_.*`) the server did not recognise.
        unrecognized_options: Vec<PgString>,
    },
    /// `'n'` NoData.
    NoData,
    /// `'N'` NoticeResponse.
    NoticeResponse(ErrorFields),
    /// `'A'` NotificationResponse.
    NotificationResponse {
        /// Process id of the notifying backend.
        process_id: i32,
        /// Channel name.
        channel: PgString,
        /// Payload.
        payload: PgString,
    },
    /// `'t'` ParameterDescription: parameter type OIDs.
    ParameterDescription(Vec<u32>),
    /// `'S'` ParameterStatus.
    ParameterStatus {
        /// Parameter name.
        name: PgString,
        /// New value.
        value: PgString,
    },
    /// `'1'` ParseComplete.
    ParseComplete,
    /// `'s'` PortalSuspended: Execute's row limit was reached.
    PortalSuspended,
    /// `'Z'` ReadyForQuery.
    ReadyForQuery(TransactionStatus),
    /// `'T'` RowDescription.
    RowDescription(Vec<FieldDescription>),
    /// Any other type byte: passed through as raw bytes.
    Unknown {
        /// The type byte.
        tag: u8,
        /// The body.
        body: Bytes,
    },
}

impl BackendMessage {
    /// The type byte.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::BackendKeyData(_) => b'K',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::CommandComplete(_) => b'C',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::FunctionCallResponse(_) => b'V',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
            BackendMessage::NoData => b'n',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::ParameterDescription(_) => b't',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::Unknown { tag, .. } => *tag,
        }
    }

    /// The message name the protocol documentation uses.
    pub fn name(&self) -> &'static str {
        match self {
            BackendMessage::Authentication(auth) => auth.name(),
            other => tag_name(other.tag()),
        }
    }

    /// Appends the message, framed, to `dst`. On error `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let name = self.name();
        write_message(dst, Some(self.tag()), name, |dst| {
            self.encode_body(dst, name)
        })
    }

    fn encode_body(&self, dst: &mut BytesMut, name: &'static str) -> Result<(), EncodeError> {
        match self {
            BackendMessage::Authentication(auth) => encode_authentication(dst, auth)?,
            BackendMessage::BackendKeyData(key) => {
                check_key_len(key.secret_key.len()).map_err(|detail| {
                    EncodeError::InvalidValue {
                        message: name,
                        field: "secret key",
                        detail,
                    }
                })?;
                dst.put_i32(key.process_id);
                dst.put_slice(&key.secret_key);
            }
            BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::CopyDone
            | BackendMessage::EmptyQueryResponse
            | BackendMessage::NoData
            | BackendMessage::ParseComplete
            | BackendMessage::PortalSuspended => {}
            BackendMessage::CommandComplete(tag) => put_cstr(dst, tag, name, "command tag")?,
            BackendMessage::CopyData(data) => dst.put_slice(data),
            BackendMessage::Unknown { body, .. } => dst.put_slice(body),
            BackendMessage::CopyInResponse(copy)
            | BackendMessage::CopyOutResponse(copy)
            | BackendMessage::CopyBothResponse(copy) => {
                dst.put_i8(copy.format);
                encode_formats(dst, &copy.column_formats, name, "column formats")?;
            }
            BackendMessage::DataRow(row) => {
                put_count(dst, row.values.len(), name, "columns")?;
                for value in &row.values {
                    put_nullable_bytes(dst, value.as_ref(), name)?;
                }
            }
            BackendMessage::ErrorResponse(fields) | BackendMessage::NoticeResponse(fields) => {
                fields.encode(dst, name)?
            }
            BackendMessage::FunctionCallResponse(value) => {
                put_nullable_bytes(dst, value.as_ref(), name)?
            }
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            } => {
                dst.put_i32(*newest_minor);
                let count = i32::try_from(unrecognized_options.len()).map_err(|_| {
                    EncodeError::TooManyItems {
                        message: name,
                        field: "options",
                        count: unrecognized_options.len(),
                        max: i32::MAX as usize,
                    }
                })?;
                dst.put_i32(count);
                for option in unrecognized_options {
                    put_cstr(dst, option, name, "option")?;
                }
            }
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            } => {
                dst.put_i32(*process_id);
                put_cstr(dst, channel, name, "channel")?;
                put_cstr(dst, payload, name, "payload")?;
            }
            BackendMessage::ParameterDescription(types) => {
                put_count(dst, types.len(), name, "parameter types")?;
                for oid in types {
                    dst.put_u32(*oid);
                }
            }
            BackendMessage::ParameterStatus { name: key, value } => {
                put_cstr(dst, key, name, "name")?;
                put_cstr(dst, value, name, "value")?;
            }
            BackendMessage::ReadyForQuery(status) => dst.put_u8(status.byte()),
            BackendMessage::RowDescription(fields) => encode_row_description(dst, fields)?,
        }
        Ok(())
    }

    /// Decodes the body of a message with type byte `tag`.
    pub fn decode(tag: u8, body: Bytes) -> Result<BackendMessage, DecodeError> {
        let mut reader = Reader::new(body, tag_name(tag));
        let message = match tag {
            b'R' => BackendMessage::Authentication(decode_authentication(&mut reader)?),
            b'K' => decode_backend_key_data(&mut reader)?,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'C' => BackendMessage::CommandComplete(reader.cstr("command tag")?),
            b'd' => BackendMessage::CopyData(reader.rest()),
            b'c' => BackendMessage::CopyDone,
            b'G' => BackendMessage::CopyInResponse(decode_copy_response(&mut reader)?),
            b'H' => BackendMessage::CopyOutResponse(decode_copy_response(&mut reader)?),
            b'W' => BackendMessage::CopyBothResponse(decode_copy_response(&mut reader)?),
            b'D' => BackendMessage::DataRow(decode_data_row(&mut reader)?),
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(&mut reader)?),
            b'V' => BackendMessage::FunctionCallResponse(reader.nullable_bytes("result")?),
            b'v' => decode_negotiate_protocol_version(&mut reader)?,
            b'n' => BackendMessage::NoData,
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(&mut reader)?),
            b'A' => BackendMessage::NotificationResponse {
                process_id: reader.i32("process id")?,
                channel: reader.cstr("channel")?,
                payload: reader.cstr("payload")?,
            },
            b't' => decode_parameter_description(&mut reader)?,
            b'S' => BackendMessage::ParameterStatus {
                name: reader.cstr("name")?,
                value: reader.cstr("value")?,
            },
            b'1' => BackendMessage::ParseComplete,
            b's' => BackendMessage::PortalSuspended,
            b'Z' => BackendMessage::ReadyForQuery(decode_transaction_status(&mut reader)?),
            b'T' => BackendMessage::RowDescription(decode_row_description(&mut reader)?),
            tag => BackendMessage::Unknown {
                tag,
                body: reader.rest(),
            },
        };
        reader.finish()?;
        Ok(message)
    }
}

fn tag_name(tag: u8) -> &'static str {
    match tag {
        b'R' => "Authentication",
        b'K' => "BackendKeyData",
        b'2' => "BindComplete",
        b'3' => "CloseComplete",
        b'C' => "CommandComplete",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'G' => "CopyInResponse",
        b'H' => "CopyOutResponse",
        b'W' => "CopyBothResponse",
        b'D' => "DataRow",
        b'I' => "EmptyQueryResponse",
        b'E' => "ErrorResponse",
        b'V' => "FunctionCallResponse",
        b'v' => "NegotiateProtocolVersion",
        b'n' => "NoData",
        b'N' => "NoticeResponse",
        b'A' => "NotificationResponse",
        b't' => "ParameterDescription",
        b'S' => "ParameterStatus",
        b'1' => "ParseComplete",
        b's' => "PortalSuspended",
        b'Z' => "ReadyForQuery",
        b'T' => "RowDescription",
        _ => "Unknown",
    }
}

fn decode_authentication(reader: &mut Reader) -> Result<Authentication, DecodeError> {
    Ok(match reader.i32("authentication code")? {
        0 => Authentication::Ok,
        2 => Authentication::KerberosV5,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = reader.bytes(4, "salt")?;
            let mut array = [0u8; 4];
            array.copy_from_slice(&salt);
            Authentication::Md5Password { salt: array }
        }
        7 => Authentication::Gss,
        8 => Authentication::GssContinue(reader.rest()),
        9 => Authentication::Sspi,
        10 => Authentication::Sasl {
            mechanisms: decode_mechanisms(reader)?,
        },
        11 => Authentication::SaslContinue(reader.rest()),
        12 => Authentication::SaslFinal(reader.rest()),
        code => Authentication::Other {
            code,
            data: reader.rest(),
        },
    })
}

fn decode_mechanisms(reader: &mut Reader) -> Result<Vec<PgString>, DecodeError> {
    let mut mechanisms = Vec::new();
    loop {
        let mechanism = reader.cstr("mechanism")?;
        if mechanism.is_empty() {
            return Ok(mechanisms);
        }
        mechanisms.push(mechanism);
    }
}

fn encode_authentication(dst: &mut BytesMut, auth: &Authentication) -> Result<(), EncodeError> {
    dst.put_i32(auth.code());
    match auth {
        Authentication::Md5Password { salt } => dst.put_slice(salt),
        Authentication::GssContinue(data)
        | Authentication::SaslContinue(data)
        | Authentication::SaslFinal(data)
        | Authentication::Other { data, .. } => dst.put_slice(data),
        Authentication::Sasl { mechanisms } => {
            for mechanism in mechanisms {
                if mechanism.is_empty() {
                    return Err(EncodeError::InvalidValue {
                        message: "AuthenticationSASL",
                        field: "mechanism",
                        detail: "empty name would end the list".into(),
                    });
                }
                put_cstr(dst, mechanism, "AuthenticationSASL", "mechanism")?;
            }
            dst.put_u8(0);
        }
        _ => {}
    }
    Ok(())
}

fn check_key_len(len: usize) -> Result<(), String> {
    if (MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "{len} bytes, allowed {MIN_CANCEL_KEY_LEN} to {MAX_CANCEL_KEY_LEN}"
        ))
    }
}

fn decode_backend_key_data(reader: &mut Reader) -> Result<BackendMessage, DecodeError> {
    let process_id = reader.i32("process id")?;
    let secret_key = reader.rest();
    check_key_len(secret_key.len()).map_err(|detail| reader.invalid("secret key", detail))?;
    Ok(BackendMessage::BackendKeyData(BackendKeyData {
        process_id,
        secret_key,
    }))
}

fn decode_copy_response(reader: &mut Reader) -> Result<CopyResponse, DecodeError> {
    let format = reader.u8("format")? as i8;
    Ok(CopyResponse {
        format,
        column_formats: decode_formats(reader, "column formats")?,
    })
}

fn decode_data_row(reader: &mut Reader) -> Result<DataRow, DecodeError> {
    let count = reader.count("column count")?;
    let mut values = Vec::with_capacity(count.min(reader.remaining() / 4));
    for _ in 0..count {
        values.push(reader.nullable_bytes("column value")?);
    }
    Ok(DataRow { values })
}

fn decode_negotiate_protocol_version(reader: &mut Reader) -> Result<BackendMessage, DecodeError> {
    let newest_minor = reader.i32("newest minor version")?;
    let count = reader.i32("option count")?;
    let count =
        usize::try_from(count).map_err(|_| reader.invalid("option count", format!("{count}")))?;
    // Each option needs at least its NUL, so the body bounds a legitimate count.
    if count > reader.remaining() {
        return Err(reader.invalid(
            "option count",
            format!("{count} options in {} bytes", reader.remaining()),
        ));
    }
    let mut unrecognized_options = Vec::with_capacity(count);
    for _ in 0..count {
        unrecognized_options.push(reader.cstr("option")?);
    }
    Ok(BackendMessage::NegotiateProtocolVersion {
        newest_minor,
        unrecognized_options,
    })
}

fn decode_parameter_description(reader: &mut Reader) -> Result<BackendMessage, DecodeError> {
    let count = reader.count("parameter count")?;
    let mut types = Vec::with_capacity(count.min(reader.remaining() / 4));
    for _ in 0..count {
        types.push(reader.u32("parameter type")?);
    }
    Ok(BackendMessage::ParameterDescription(types))
}

fn decode_transaction_status(reader: &mut Reader) -> Result<TransactionStatus, DecodeError> {
    match reader.u8("transaction status")? {
        b'I' => Ok(TransactionStatus::Idle),
        b'T' => Ok(TransactionStatus::InTransaction),
        b'E' => Ok(TransactionStatus::Failed),
        other => Err(reader.invalid(
            "transaction status",
            format!("expected 'I', 'T' or 'E', got {other}"),
        )),
    }
}

fn decode_row_description(reader: &mut Reader) -> Result<Vec<FieldDescription>, DecodeError> {
    let count = reader.count("field count")?;
    // Each field takes at least 19 bytes (an empty name's NUL plus 18 fixed bytes).
    let mut fields = Vec::with_capacity(count.min(reader.remaining() / 19));
    for _ in 0..count {
        fields.push(FieldDescription {
            name: reader.cstr("field name")?,
            table_oid: reader.u32("table oid")?,
            column_attribute: reader.i16("column attribute")?,
            type_oid: reader.u32("type oid")?,
            type_size: reader.i16("type size")?,
            type_modifier: reader.i32("type modifier")?,
            format: reader.i16("format")?,
        });
    }
    Ok(fields)
}

fn encode_row_description(
    dst: &mut BytesMut,
    fields: &[FieldDescription],
) -> Result<(), EncodeError> {
    put_count(dst, fields.len(), "RowDescription", "fields")?;
    for field in fields {
        put_cstr(dst, &field.name, "RowDescription", "field name")?;
        dst.put_u32(field.table_oid);
        dst.put_i16(field.column_attribute);
        dst.put_u32(field.type_oid);
        dst.put_i16(field.type_size);
        dst.put_i32(field.type_modifier);
        dst.put_i16(field.format);
    }
    Ok(())
}
