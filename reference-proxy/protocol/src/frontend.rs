//! Frontend (client to server) messages: their types, how their bodies decode, how they encode.
//!
//! The startup family (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) has no type
//! byte and is told apart by the 4-byte code after the length; every later message is typed.
//! The `'p'` type is shared by PasswordMessage, SASLInitialResponse, SASLResponse and
//! GSSResponse: which one it is depends on what the server asked for, so decoding it takes an
//! [`AuthResponseKind`] (the [`crate::FrontendDecoder`] tracks it).

use crate::error::{DecodeError, EncodeError};
use crate::limits::{MAX_CANCEL_KEY_LEN, MIN_CANCEL_KEY_LEN};
use crate::pg_string::PgString;
use crate::wire::{Reader, put_count, put_cstr, put_nullable_bytes, write_message};
use bytes::{BufMut, Bytes, BytesMut};

/// Code of an SSLRequest: 1234 in the major half, 5679 in the minor half.
pub const SSL_REQUEST_CODE: u32 = (1234 << 16) | 5679;
/// Code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = (1234 << 16) | 5680;
/// Code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = (1234 << 16) | 5678;

/// A protocol version as sent in a StartupMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Major version; only 3 is spoken.
    pub major: u16,
    /// Minor version: 0 for Postgres up to 17, 2 for Postgres 18's protocol 3.2.
    pub minor: u16,
}

impl ProtocolVersion {
    /// Protocol 3.0, spoken by every Postgres since 7.4.
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };
    /// Protocol 3.2 (Postgres 18): longer cancel keys. (3.1 was never used.)
    pub const V3_2: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

    /// The version as the single Int32 the wire carries.
    pub fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }

    /// Splits an Int32 protocol code.
    pub fn from_code(code: u32) -> Self {
        ProtocolVersion {
            major: (code >> 16) as u16,
            minor: (code & 0xffff) as u16,
        }
    }
}

/// StartupMessage: protocol version and the connection parameters (`user`, `database`,
/// `options`, `application_name`, `_pq_.*` protocol options, ...), in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Requested protocol version.
    pub version: ProtocolVersion,
    /// Parameter names and values, in wire order.
    pub parameters: Vec<(PgString, PgString)>,
}

impl StartupMessage {
    /// A protocol 3.0 startup message with the given parameters.
    pub fn new<'a>(parameters: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        StartupMessage {
            version: ProtocolVersion::V3_0,
            parameters: parameters
                .into_iter()
                .map(|(name, value)| (PgString::from(name), PgString::from(value)))
                .collect(),
        }
    }

    /// The value of one parameter, if present.
    pub fn parameter(&self, name: &str) -> Option<&PgString> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// CancelRequest: the target backend's process id and secret key (4 bytes in protocol 3.0, up
/// to 256 in 3.2). The key is a secret: Debug output redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// Process id from BackendKeyData.
    pub process_id: i32,
    /// Secret key from BackendKeyData.
    pub secret_key: Bytes,
}

impl std::fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelRequest")
            .field("process_id", &self.process_id)
            .field(
                "secret_key",
                &format_args!("<{} bytes>", self.secret_key.len()),
            )
            .finish()
    }
}

/// Whether Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `'S'`: a prepared statement.
    Statement,
    /// `'P'`: a portal.
    Portal,
}

impl Target {
    fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
        match reader.u8("target")? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            other => Err(reader.invalid("target", format!("expected 'S' or 'P', got {other}"))),
        }
    }

    /// The wire byte.
    pub fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// Parse: create a prepared statement (empty name = the unnamed statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    /// Statement name.
    pub name: PgString,
    /// Query text.
    pub query: PgString,
    /// Parameter type OIDs the client fixes (0 = let the server infer).
    pub parameter_types: Vec<u32>,
}

/// Bind: create a portal from a prepared statement and parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Portal name (empty = the unnamed portal).
    pub portal: PgString,
    /// Statement name.
    pub statement: PgString,
    /// Parameter format codes (0 text, 1 binary): none, one for all, or one each.
    pub parameter_formats: Vec<i16>,
    /// Parameter values; `None` is SQL NULL.
    pub parameters: Vec<Option<Bytes>>,
    /// Result column format codes, same convention.
    pub result_formats: Vec<i16>,
}

/// FunctionCall: the legacy fast-path function call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    /// OID of the function.
    pub function_oid: u32,
    /// Argument format codes.
    pub argument_formats: Vec<i16>,
    /// Argument values; `None` is SQL NULL.
    pub arguments: Vec<Option<Bytes>>,
    /// Result format code.
    pub result_format: i16,
}

/// Which kind of `'p'` message the server is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthResponseKind {
    /// PasswordMessage (cleartext or md5 hash): after AuthenticationCleartextPassword / MD5.
    #[default]
    Password,
    /// SASLInitialResponse: after AuthenticationSASL.
    SaslInitial,
    /// SASLResponse: after AuthenticationSASLContinue.
    Sasl,
    /// GSSResponse: after AuthenticationGSS / SSPI / GSSContinue.
    Gss,
}

/// Every message a client sends.
///
/// Debug and Display redact secrets: passwords, SASL payloads and cancel keys.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontendMessage {
    /// StartupMessage (no type byte).
    Startup(StartupMessage),
    /// SSLRequest (no type byte).
    SslRequest,
    /// GSSENCRequest (no type byte).
    GssEncRequest,
    /// CancelRequest (no type byte), sent on a fresh connection.
    CancelRequest(CancelRequest),
    /// `'Q'` simple query: one or more statements separated by semicolons.
    Query(PgString),
    /// `'P'` Parse.
    Parse(Parse),
    /// `'B'` Bind.
    Bind(Bind),
    /// `'D'` Describe a statement or portal.
    Describe {
        /// What is described.
        target: Target,
        /// Its name.
        name: PgString,
    },
    /// `'E'` Execute a portal, returning at most `max_rows` rows (0 = all).
    Execute {
        /// Portal name.
        portal: PgString,
        /// Row limit; 0 means no limit.
        max_rows: i32,
    },
    /// `'C'` Close a statement or portal.
    Close {
        /// What is closed.
        target: Target,
        /// Its name.
        name: PgString,
    },
    /// `'S'` Sync: end of an extended-protocol batch.
    Sync,
    /// `'H'` Flush: send what is pending without ending the batch.
    Flush,
    /// `'d'` CopyData.
    CopyData(Bytes),
    /// `'c'` CopyDone.
    CopyDone,
    /// `'f'` CopyFail with the reason.
    CopyFail(PgString),
    /// `'F'` FunctionCall.
    FunctionCall(FunctionCall),
    /// `'X'` Terminate.
    Terminate,
    /// `'p'` PasswordMessage: a cleartext password or `md5...` hash.
    Password(PgString),
    /// `'p'` SASLInitialResponse: the chosen mechanism and the client-first message (`None`
    /// encodes as length -1).
    SaslInitialResponse {
        /// Mechanism name, e.g. `SCRAM-SHA-256`.
        mechanism: PgString,
        /// Initial client response.
        data: Option<Bytes>,
    },
    /// `'p'` SASLResponse: a later client SASL message.
    SaslResponse(Bytes),
    /// `'p'` GSSResponse: an opaque GSSAPI/SSPI token.
    GssResponse(Bytes),
    /// Any other type byte: passed through as raw bytes.
    Unknown {
        /// The type byte.
        tag: u8,
        /// The body, without type byte and length.
        body: Bytes,
    },
}

impl FrontendMessage {
    /// The message name the protocol documentation uses.
    pub fn name(&self) -> &'static str {
        match self {
            FrontendMessage::Startup(_) => "StartupMessage",
            FrontendMessage::SslRequest => "SSLRequest",
            FrontendMessage::GssEncRequest => "GSSENCRequest",
            FrontendMessage::CancelRequest(_) => "CancelRequest",
            FrontendMessage::Query(_) => "Query",
            FrontendMessage::Parse(_) => "Parse",
            FrontendMessage::Bind(_) => "Bind",
            FrontendMessage::Describe { .. } => "Describe",
            FrontendMessage::Execute { .. } => "Execute",
            FrontendMessage::Close { .. } => "Close",
            FrontendMessage::Sync => "Sync",
            FrontendMessage::Flush => "Flush",
            FrontendMessage::CopyData(_) => "CopyData",
            FrontendMessage::CopyDone => "CopyDone",
            FrontendMessage::CopyFail(_) => "CopyFail",
            FrontendMessage::FunctionCall(_) => "FunctionCall",
            FrontendMessage::Terminate => "Terminate",
            FrontendMessage::Password(_) => "PasswordMessage",
            FrontendMessage::SaslInitialResponse { .. } => "SASLInitialResponse",
            FrontendMessage::SaslResponse(_) => "SASLResponse",
            FrontendMessage::GssResponse(_) => "GSSResponse",
            FrontendMessage::Unknown { .. } => "Unknown",
        }
    }

    /// The type byte, or `None` for the untyped startup family.
    pub fn tag(&self) -> Option<u8> {
        Some(match self {
            FrontendMessage::Startup(_)
            | FrontendMessage::SslRequest
            | FrontendMessage::GssEncRequest
            | FrontendMessage::CancelRequest(_) => return None,
            FrontendMessage::Query(_) => b'Q',
            FrontendMessage::Parse(_) => b'P',
            FrontendMessage::Bind(_) => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail(_) => b'f',
            FrontendMessage::FunctionCall(_) => b'F',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::Password(_)
            | FrontendMessage::SaslInitialResponse { .. }
            | FrontendMessage::SaslResponse(_)
            | FrontendMessage::GssResponse(_) => b'p',
            FrontendMessage::Unknown { tag, .. } => *tag,
        })
    }

    /// Appends the message, framed, to `dst`. On error `dst` is left as it was.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let name = self.name();
        write_message(dst, self.tag(), name, |dst| self.encode_body(dst, name))
    }

    fn encode_body(&self, dst: &mut BytesMut, name: &'static str) -> Result<(), EncodeError> {
        match self {
            FrontendMessage::Startup(startup) => encode_startup(dst, startup)?,
            FrontendMessage::SslRequest => dst.put_u32(SSL_REQUEST_CODE),
            FrontendMessage::GssEncRequest => dst.put_u32(GSSENC_REQUEST_CODE),
            FrontendMessage::CancelRequest(cancel) => encode_cancel(dst, cancel)?,
            FrontendMessage::Query(sql) => put_cstr(dst, sql, name, "query")?,
            FrontendMessage::Parse(parse) => encode_parse(dst, parse)?,
            FrontendMessage::Bind(bind) => encode_bind(dst, bind)?,
            FrontendMessage::Describe { target, name: n }
            | FrontendMessage::Close { target, name: n } => {
                dst.put_u8(target.byte());
                put_cstr(dst, n, name, "name")?;
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cstr(dst, portal, name, "portal")?;
                dst.put_i32(*max_rows);
            }
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::CopyDone
            | FrontendMessage::Terminate => {}
            FrontendMessage::CopyData(data)
            | FrontendMessage::SaslResponse(data)
            | FrontendMessage::GssResponse(data) => dst.put_slice(data),
            FrontendMessage::Unknown { body, .. } => dst.put_slice(body),
            FrontendMessage::CopyFail(reason) => put_cstr(dst, reason, name, "reason")?,
            FrontendMessage::FunctionCall(call) => encode_function_call(dst, call)?,
            FrontendMessage::Password(password) => put_cstr(dst, password, name, "password")?,
            FrontendMessage::SaslInitialResponse { mechanism, data } => {
                put_cstr(dst, mechanism, name, "mechanism")?;
                put_nullable_bytes(dst, data.as_ref(), name)?;
            }
        }
        Ok(())
    }

    /// Decodes the body of a startup-family packet (everything after the length word).
    pub fn decode_startup_packet(body: Bytes) -> Result<FrontendMessage, DecodeError> {
        let mut reader = Reader::new(body, "startup packet");
        let code = reader.u32("protocol code")?;
        let message = match code {
            SSL_REQUEST_CODE => FrontendMessage::SslRequest,
            GSSENC_REQUEST_CODE => FrontendMessage::GssEncRequest,
            CANCEL_REQUEST_CODE => return decode_cancel(reader),
            code => return decode_startup(reader, ProtocolVersion::from_code(code)),
        };
        reader.finish()?;
        Ok(message)
    }

    /// Decodes the body of a typed message. `auth` says which `'p'` message is expected.
    pub fn decode_typed(
        tag: u8,
        body: Bytes,
        auth: AuthResponseKind,
    ) -> Result<FrontendMessage, DecodeError> {
        let mut reader = Reader::new(body, typed_name(tag, auth));
        let message = match tag {
            b'Q' => FrontendMessage::Query(reader.cstr("query")?),
            b'P' => FrontendMessage::Parse(decode_parse(&mut reader)?),
            b'B' => FrontendMessage::Bind(decode_bind(&mut reader)?),
            b'D' => FrontendMessage::Describe {
                target: Target::decode(&mut reader)?,
                name: reader.cstr("name")?,
            },
            b'E' => FrontendMessage::Execute {
                portal: reader.cstr("portal")?,
                max_rows: reader.i32("max_rows")?,
            },
            b'C' => FrontendMessage::Close {
                target: Target::decode(&mut reader)?,
                name: reader.cstr("name")?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'd' => FrontendMessage::CopyData(reader.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail(reader.cstr("reason")?),
            b'F' => FrontendMessage::FunctionCall(decode_function_call(&mut reader)?),
            b'X' => FrontendMessage::Terminate,
            b'p' => decode_auth_response(&mut reader, auth)?,
            tag => FrontendMessage::Unknown {
                tag,
                body: reader.rest(),
            },
        };
        reader.finish()?;
        Ok(message)
    }
}

fn typed_name(tag: u8, auth: AuthResponseKind) -> &'static str {
    match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'F' => "FunctionCall",
        b'X' => "Terminate",
        b'p' => match auth {
            AuthResponseKind::Password => "PasswordMessage",
            AuthResponseKind::SaslInitial => "SASLInitialResponse",
            AuthResponseKind::Sasl => "SASLResponse",
            AuthResponseKind::Gss => "GSSResponse",
        },
        _ => "Unknown",
    }
}

fn decode_startup(
    mut reader: Reader,
    version: ProtocolVersion,
) -> Result<FrontendMessage, DecodeError> {
    if version.major != 3 || version.minor > ProtocolVersion::V3_2.minor {
        return Err(DecodeError::UnsupportedProtocol {
            major: version.major,
            minor: version.minor,
        });
    }
    let mut parameters = Vec::new();
    loop {
        let name = reader.cstr("parameter name")?;
        if name.is_empty() {
            break;
        }
        let value = reader.cstr("parameter value")?;
        parameters.push((name, value));
    }
    reader.finish()?;
    Ok(FrontendMessage::Startup(StartupMessage {
        version,
        parameters,
    }))
}

fn encode_startup(dst: &mut BytesMut, startup: &StartupMessage) -> Result<(), EncodeError> {
    dst.put_u32(startup.version.code());
    for (name, value) in &startup.parameters {
        if name.is_empty() {
            return Err(EncodeError::InvalidValue {
                message: "StartupMessage",
                field: "parameter name",
                detail: "empty name would end the parameter list".into(),
            });
        }
        put_cstr(dst, name, "StartupMessage", "parameter name")?;
        put_cstr(dst, value, "StartupMessage", "parameter value")?;
    }
    dst.put_u8(0);
    Ok(())
}

fn check_cancel_key_len(len: usize) -> Result<(), String> {
    if (MIN_CANCEL_KEY_LEN..=MAX_CANCEL_KEY_LEN).contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "{len} bytes, allowed {MIN_CANCEL_KEY_LEN} to {MAX_CANCEL_KEY_LEN}"
        ))
    }
}

fn decode_cancel(mut reader: Reader) -> Result<FrontendMessage, DecodeError> {
    let process_id = reader.i32("process id")?;
    let secret_key = reader.rest();
    check_cancel_key_len(secret_key.len())
        .map_err(|detail| reader.invalid("secret key", detail))?;
    Ok(FrontendMessage::CancelRequest(CancelRequest {
        process_id,
        secret_key,
    }))
}

fn encode_cancel(dst: &mut BytesMut, cancel: &CancelRequest) -> Result<(), EncodeError> {
    check_cancel_key_len(cancel.secret_key.len()).map_err(|detail| EncodeError::InvalidValue {
        message: "CancelRequest",
        field: "secret key",
        detail,
    })?;
    dst.put_u32(CANCEL_REQUEST_CODE);
    dst.put_i32(cancel.process_id);
    dst.put_slice(&cancel.secret_key);
    Ok(())
}

fn decode_parse(reader: &mut Reader) -> Result<Parse, DecodeError> {
    let name = reader.cstr("statement name")?;
    let query = reader.cstr("query")?;
    let count = reader.count("parameter type count")?;
    let mut parameter_types = Vec::with_capacity(count.min(reader.remaining() / 4));
    for _ in 0..count {
        parameter_types.push(reader.u32("parameter type")?);
    }
    Ok(Parse {
        name,
        query,
        parameter_types,
    })
}

fn encode_parse(dst: &mut BytesMut, parse: &Parse) -> Result<(), EncodeError> {
    put_cstr(dst, &parse.name, "Parse", "statement name")?;
    put_cstr(dst, &parse.query, "Parse", "query")?;
    put_count(dst, parse.parameter_types.len(), "Parse", "parameter types")?;
    for oid in &parse.parameter_types {
        dst.put_u32(*oid);
    }
    Ok(())
}

pub(crate) fn decode_formats(
    reader: &mut Reader,
    field: &'static str,
) -> Result<Vec<i16>, DecodeError> {
    let count = reader.count(field)?;
    let mut formats = Vec::with_capacity(count.min(reader.remaining() / 2));
    for _ in 0..count {
        formats.push(reader.i16(field)?);
    }
    Ok(formats)
}

pub(crate) fn encode_formats(
    dst: &mut BytesMut,
    formats: &[i16],
    message: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_count(dst, formats.len(), message, field)?;
    for format in formats {
        dst.put_i16(*format);
    }
    Ok(())
}

fn decode_values(
    reader: &mut Reader,
    field: &'static str,
) -> Result<Vec<Option<Bytes>>, DecodeError> {
    let count = reader.count(field)?;
    let mut values = Vec::with_capacity(count.min(reader.remaining() / 4));
    for _ in 0..count {
        values.push(reader.nullable_bytes(field)?);
    }
    Ok(values)
}

fn encode_values(
    dst: &mut BytesMut,
    values: &[Option<Bytes>],
    message: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_count(dst, values.len(), message, field)?;
    for value in values {
        put_nullable_bytes(dst, value.as_ref(), message)?;
    }
    Ok(())
}

fn decode_bind(reader: &mut Reader) -> Result<Bind, DecodeError> {
    Ok(Bind {
        portal: reader.cstr("portal")?,
        statement: reader.cstr("statement name")?,
        parameter_formats: decode_formats(reader, "parameter formats")?,
        parameters: decode_values(reader, "parameter values")?,
        result_formats: decode_formats(reader, "result formats")?,
    })
}

fn encode_bind(dst: &mut BytesMut, bind: &Bind) -> Result<(), EncodeError> {
    put_cstr(dst, &bind.portal, "Bind", "portal")?;
    put_cstr(dst, &bind.statement, "Bind", "statement name")?;
    encode_formats(dst, &bind.parameter_formats, "Bind", "parameter formats")?;
    encode_values(dst, &bind.parameters, "Bind", "parameter values")?;
    encode_formats(dst, &bind.result_formats, "Bind", "result formats")
}

fn decode_function_call(reader: &mut Reader) -> Result<FunctionCall, DecodeError> {
    Ok(FunctionCall {
        function_oid: reader.u32("function oid")?,
        argument_formats: decode_formats(reader, "argument formats")?,
        arguments: decode_values(reader, "arguments")?,
        result_format: reader.i16("result format")?,
    })
}

fn encode_function_call(dst: &mut BytesMut, call: &FunctionCall) -> Result<(), EncodeError> {
    dst.put_u32(call.function_oid);
    encode_formats(
        dst,
        &call.argument_formats,
        "FunctionCall",
        "argument formats",
    )?;
    encode_values(dst, &call.arguments, "FunctionCall", "arguments")?;
    dst.put_i16(call.result_format);
    Ok(())
}

fn decode_auth_response(
    reader: &mut Reader,
    auth: AuthResponseKind,
) -> Result<FrontendMessage, DecodeError> {
    Ok(match auth {
        AuthResponseKind::Password => FrontendMessage::Password(reader.cstr("password")?),
        AuthResponseKind::SaslInitial => FrontendMessage::SaslInitialResponse {
            mechanism: reader.cstr("mechanism")?,
            data: reader.nullable_bytes("initial response")?,
        },
        AuthResponseKind::Sasl => FrontendMessage::SaslResponse(reader.rest()),
        AuthResponseKind::Gss => FrontendMessage::GssResponse(reader.rest()),
    })
}
