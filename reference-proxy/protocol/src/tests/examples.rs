//! One hand-written example of every message type, in each direction.

use crate::PgString;
use crate::backend::{
    Authentication, BackendKeyData, BackendMessage, CopyResponse, DataRow, ErrorFields,
    FieldDescription, TransactionStatus, field,
};
use crate::frontend::{
    Bind, CancelRequest, FrontendMessage, FunctionCall, Parse, ProtocolVersion, StartupMessage,
    Target,
};
use bytes::Bytes;

/// Every frontend message kind; `covers_frontend` proves none is missing.
pub(crate) fn frontend_examples() -> Vec<FrontendMessage> {
    vec![
        FrontendMessage::Startup(StartupMessage::new([
            ("user", "alice"),
            ("database", "shop"),
            ("application_name", "psql"),
        ])),
        FrontendMessage::Startup(StartupMessage {
            version: ProtocolVersion::V3_2,
            parameters: vec![
                ("user".into(), "bob".into()),
                ("_pq_.test".into(), "1".into()),
            ],
        }),
        FrontendMessage::SslRequest,
        FrontendMessage::GssEncRequest,
        FrontendMessage::CancelRequest(CancelRequest {
            process_id: 4242,
            secret_key: Bytes::from_static(&[1, 2, 3, 4]),
        }),
        FrontendMessage::CancelRequest(CancelRequest {
            process_id: 7,
            secret_key: Bytes::from(vec![9u8; 32]),
        }),
        FrontendMessage::Query("SELECT 1; SELECT 2".into()),
        FrontendMessage::Parse(Parse {
            name: "s1".into(),
            query: "SELECT $1::int + $2".into(),
            parameter_types: vec![23, 0],
        }),
        FrontendMessage::Bind(Bind {
            portal: "p1".into(),
            statement: "s1".into(),
            parameter_formats: vec![0, 1],
            parameters: vec![Some(Bytes::from_static(b"41")), None],
            result_formats: vec![1],
        }),
        FrontendMessage::Describe {
            target: Target::Statement,
            name: "s1".into(),
        },
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "".into(),
        },
        FrontendMessage::Execute {
            portal: "p1".into(),
            max_rows: 10,
        },
        FrontendMessage::Close {
            target: Target::Portal,
            name: "p1".into(),
        },
        FrontendMessage::Sync,
        FrontendMessage::Flush,
        FrontendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        FrontendMessage::CopyDone,
        FrontendMessage::CopyFail("client gave up".into()),
        FrontendMessage::FunctionCall(FunctionCall {
            function_oid: 1598,
            argument_formats: vec![1],
            arguments: vec![Some(Bytes::from_static(&[0, 0, 0, 1])), None],
            result_format: 1,
        }),
        FrontendMessage::Terminate,
        FrontendMessage::Password("md5a3556571e93b0d20722ba62be61e8c2d".into()),
        FrontendMessage::SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: Some(Bytes::from_static(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO")),
        },
        FrontendMessage::SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: None,
        },
        FrontendMessage::SaslResponse(Bytes::from_static(b"c=biws,r=abc,p=xyz")),
        FrontendMessage::GssResponse(Bytes::from_static(&[0x60, 0x82])),
        FrontendMessage::Unknown {
            tag: b'!',
            body: Bytes::from_static(b"opaque"),
        },
    ]
}

/// Every backend message kind; `covers_backend` proves none is missing.
pub(crate) fn backend_examples() -> Vec<BackendMessage> {
    let auth = |a| BackendMessage::Authentication(a);
    vec![
        auth(Authentication::Ok),
        auth(Authentication::KerberosV5),
        auth(Authentication::CleartextPassword),
        auth(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
        auth(Authentication::Gss),
        auth(Authentication::GssContinue(Bytes::from_static(b"token"))),
        auth(Authentication::Sspi),
        auth(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
        }),
        auth(Authentication::SaslContinue(Bytes::from_static(
            b"r=abc,s=c2FsdA==,i=4096",
        ))),
        auth(Authentication::SaslFinal(Bytes::from_static(
            b"v=c2lnbmF0dXJl",
        ))),
        auth(Authentication::Other {
            code: 6,
            data: Bytes::new(),
        }),
        BackendMessage::BackendKeyData(BackendKeyData {
            process_id: 31337,
            secret_key: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        }),
        BackendMessage::BackendKeyData(BackendKeyData {
            process_id: 1,
            secret_key: Bytes::from(vec![7u8; 256]),
        }),
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::CommandComplete("INSERT 0 1".into()),
        BackendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        BackendMessage::CopyDone,
        BackendMessage::CopyInResponse(CopyResponse {
            format: 0,
            column_formats: vec![0, 0],
        }),
        BackendMessage::CopyOutResponse(CopyResponse {
            format: 1,
            column_formats: vec![1],
        }),
        BackendMessage::CopyBothResponse(CopyResponse {
            format: 0,
            column_formats: vec![],
        }),
        BackendMessage::DataRow(DataRow::new(vec![
            Some(Bytes::from_static(b"42")),
            None,
            Some(Bytes::new()),
        ])),
        BackendMessage::EmptyQueryResponse,
        BackendMessage::ErrorResponse(
            ErrorFields::new("ERROR", "42P01", "relation \"nope\" does not exist")
                .with(field::POSITION, "15")
                .with(field::FILE, "parse_relation.c")
                .with(field::LINE, "1392")
                .with(field::ROUTINE, "parserOpenTable"),
        ),
        BackendMessage::FunctionCallResponse(Some(Bytes::from_static(&[0, 0, 0, 2]))),
        BackendMessage::FunctionCallResponse(None),
        BackendMessage::NegotiateProtocolVersion {
            newest_minor: 0,
            unrecognized_options: vec!["_pq_.test".into()],
        },
        BackendMessage::NoData,
        BackendMessage::NoticeResponse(
            ErrorFields::new("NOTICE", "00000", "table \"t\" does not exist, skipping")
                .with(field::WHERE, "somewhere"),
        ),
        BackendMessage::NotificationResponse {
            process_id: 99,
            channel: "jobs".into(),
            payload: "{\"id\":1}".into(),
        },
        BackendMessage::ParameterDescription(vec![23, 25]),
        BackendMessage::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        BackendMessage::ParseComplete,
        BackendMessage::PortalSuspended,
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
        BackendMessage::ReadyForQuery(TransactionStatus::Failed),
        BackendMessage::RowDescription(vec![FieldDescription {
            name: PgString::from("id"),
            table_oid: 16384,
            column_attribute: 1,
            type_oid: 23,
            type_size: 4,
            type_modifier: -1,
            format: 0,
        }]),
        BackendMessage::Unknown {
            tag: b'?',
            body: Bytes::from_static(b"future"),
        },
    ]
}

/// Compile-time proof that `frontend_examples` names every variant: a new variant makes this
/// match non-exhaustive.
pub(crate) fn frontend_kind(message: &FrontendMessage) -> &'static str {
    match message {
        FrontendMessage::Startup(_) => "Startup",
        FrontendMessage::SslRequest => "SslRequest",
        FrontendMessage::GssEncRequest => "GssEncRequest",
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
        FrontendMessage::Password(_) => "Password",
        FrontendMessage::SaslInitialResponse { .. } => "SaslInitialResponse",
        FrontendMessage::SaslResponse(_) => "SaslResponse",
        FrontendMessage::GssResponse(_) => "GssResponse",
        FrontendMessage::Unknown { .. } => "Unknown",
    }
}

/// Number of arms in `frontend_kind`.
pub(crate) const FRONTEND_KINDS: usize = 22;

/// Same proof for backend messages, counting authentication kinds separately.
pub(crate) fn backend_kind(message: &BackendMessage) -> &'static str {
    match message {
        BackendMessage::Authentication(auth) => match auth {
            Authentication::Ok => "AuthOk",
            Authentication::KerberosV5 => "AuthKerberosV5",
            Authentication::CleartextPassword => "AuthCleartext",
            Authentication::Md5Password { .. } => "AuthMd5",
            Authentication::Gss => "AuthGss",
            Authentication::GssContinue(_) => "AuthGssContinue",
            Authentication::Sspi => "AuthSspi",
            Authentication::Sasl { .. } => "AuthSasl",
            Authentication::SaslContinue(_) => "AuthSaslContinue",
            Authentication::SaslFinal(_) => "AuthSaslFinal",
            Authentication::Other { .. } => "AuthOther",
        },
        BackendMessage::BackendKeyData(_) => "BackendKeyData",
        BackendMessage::BindComplete => "BindComplete",
        BackendMessage::CloseComplete => "CloseComplete",
        BackendMessage::CommandComplete(_) => "CommandComplete",
        BackendMessage::CopyData(_) => "CopyData",
        BackendMessage::CopyDone => "CopyDone",
        BackendMessage::CopyInResponse(_) => "CopyInResponse",
        BackendMessage::CopyOutResponse(_) => "CopyOutResponse",
        BackendMessage::CopyBothResponse(_) => "CopyBothResponse",
        BackendMessage::DataRow(_) => "DataRow",
        BackendMessage::EmptyQueryResponse => "EmptyQueryResponse",
        BackendMessage::ErrorResponse(_) => "ErrorResponse",
        BackendMessage::FunctionCallResponse(_) => "FunctionCallResponse",
        BackendMessage::NegotiateProtocolVersion { .. } => "NegotiateProtocolVersion",
        BackendMessage::NoData => "NoData",
        BackendMessage::NoticeResponse(_) => "NoticeResponse",
        BackendMessage::NotificationResponse { .. } => "NotificationResponse",
        BackendMessage::ParameterDescription(_) => "ParameterDescription",
        BackendMessage::ParameterStatus { .. } => "ParameterStatus",
        BackendMessage::ParseComplete => "ParseComplete",
        BackendMessage::PortalSuspended => "PortalSuspended",
        BackendMessage::ReadyForQuery(_) => "ReadyForQuery",
        BackendMessage::RowDescription(_) => "RowDescription",
        BackendMessage::Unknown { .. } => "Unknown",
    }
}

/// Number of arms in `backend_kind`.
pub(crate) const BACKEND_KINDS: usize = 35;
