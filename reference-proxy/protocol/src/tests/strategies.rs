//! proptest strategies that generate every message kind with arbitrary field values.

use crate::PgString;
use crate::backend::{
    Authentication, BackendKeyData, BackendMessage, CopyResponse, DataRow, ErrorFields,
    FieldDescription, TransactionStatus,
};
use crate::frontend::{
    Bind, CancelRequest, FrontendMessage, FunctionCall, Parse, ProtocolVersion, StartupMessage,
    Target,
};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const KNOWN_FRONTEND_TAGS: &[u8] = b"QPBDECSHdcfFXp";
const KNOWN_BACKEND_TAGS: &[u8] = b"RK23CdcGHWDIEVvnNAtS1sZT";
const KNOWN_AUTH_CODES: &[i32] = &[0, 2, 3, 5, 7, 8, 9, 10, 11, 12];

pub(crate) fn pg_string() -> impl Strategy<Value = PgString> {
    vec(1u8..=255, 0..24).prop_map(PgString::from_bytes)
}

fn non_empty_pg_string() -> impl Strategy<Value = PgString> {
    vec(1u8..=255, 1..24).prop_map(PgString::from_bytes)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn nullable_values() -> impl Strategy<Value = Vec<Option<Bytes>>> {
    vec(option::of(bytes(40)), 0..6)
}

fn formats() -> impl Strategy<Value = Vec<i16>> {
    vec(any::<i16>(), 0..5)
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Statement), Just(Target::Portal)]
}

fn cancel_key() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 4..=256).prop_map(Bytes::from)
}

/// Startup-family packets (no type byte).
pub(crate) fn startup_family() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        startup_message().prop_map(FrontendMessage::Startup),
        Just(FrontendMessage::SslRequest),
        Just(FrontendMessage::GssEncRequest),
        (any::<i32>(), cancel_key()).prop_map(|(process_id, secret_key)| {
            FrontendMessage::CancelRequest(CancelRequest {
                process_id,
                secret_key,
            })
        }),
    ]
}

pub(crate) fn startup_message() -> impl Strategy<Value = StartupMessage> {
    (0u16..=2, vec((non_empty_pg_string(), pg_string()), 0..6)).prop_map(|(minor, parameters)| {
        StartupMessage {
            version: ProtocolVersion { major: 3, minor },
            parameters,
        }
    })
}

/// Typed frontend messages other than the `'p'` family, whose decoding depends on context.
pub(crate) fn typed_frontend() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        pg_string().prop_map(FrontendMessage::Query),
        (pg_string(), pg_string(), vec(any::<u32>(), 0..5)).prop_map(|(name, query, types)| {
            FrontendMessage::Parse(Parse {
                name,
                query,
                parameter_types: types,
            })
        }),
        (
            pg_string(),
            pg_string(),
            formats(),
            nullable_values(),
            formats()
        )
            .prop_map(
                |(portal, statement, parameter_formats, parameters, result_formats)| {
                    FrontendMessage::Bind(Bind {
                        portal,
                        statement,
                        parameter_formats,
                        parameters,
                        result_formats,
                    })
                }
            ),
        (target(), pg_string())
            .prop_map(|(target, name)| FrontendMessage::Describe { target, name }),
        (pg_string(), any::<i32>())
            .prop_map(|(portal, max_rows)| FrontendMessage::Execute { portal, max_rows }),
        (target(), pg_string()).prop_map(|(target, name)| FrontendMessage::Close { target, name }),
        Just(FrontendMessage::Sync),
        Just(FrontendMessage::Flush),
        bytes(100).prop_map(FrontendMessage::CopyData),
        Just(FrontendMessage::CopyDone),
        pg_string().prop_map(FrontendMessage::CopyFail),
        (any::<u32>(), formats(), nullable_values(), any::<i16>()).prop_map(
            |(function_oid, argument_formats, arguments, result_format)| {
                FrontendMessage::FunctionCall(FunctionCall {
                    function_oid,
                    argument_formats,
                    arguments,
                    result_format,
                })
            }
        ),
        Just(FrontendMessage::Terminate),
        (1u8..=255, bytes(40))
            .prop_filter("unknown tags only", |(tag, _)| !KNOWN_FRONTEND_TAGS
                .contains(tag))
            .prop_map(|(tag, body)| FrontendMessage::Unknown { tag, body }),
    ]
}

/// The `'p'` family: each needs the decoder to expect its kind.
pub(crate) fn auth_response() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        pg_string().prop_map(FrontendMessage::Password),
        (pg_string(), option::of(bytes(60)))
            .prop_map(|(mechanism, data)| FrontendMessage::SaslInitialResponse { mechanism, data }),
        bytes(60).prop_map(FrontendMessage::SaslResponse),
        bytes(60).prop_map(FrontendMessage::GssResponse),
    ]
}

/// Any frontend message at all.
pub(crate) fn any_frontend() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![startup_family(), typed_frontend(), auth_response()]
}

fn authentication() -> impl Strategy<Value = Authentication> {
    prop_oneof![
        Just(Authentication::Ok),
        Just(Authentication::KerberosV5),
        Just(Authentication::CleartextPassword),
        any::<[u8; 4]>().prop_map(|salt| Authentication::Md5Password { salt }),
        Just(Authentication::Gss),
        bytes(40).prop_map(Authentication::GssContinue),
        Just(Authentication::Sspi),
        vec(non_empty_pg_string(), 0..4).prop_map(|mechanisms| Authentication::Sasl { mechanisms }),
        bytes(80).prop_map(Authentication::SaslContinue),
        bytes(80).prop_map(Authentication::SaslFinal),
        (any::<i32>(), bytes(20))
            .prop_filter("unknown codes only", |(code, _)| !KNOWN_AUTH_CODES
                .contains(code))
            .prop_map(|(code, data)| Authentication::Other { code, data }),
    ]
}

fn error_fields() -> impl Strategy<Value = ErrorFields> {
    vec((1u8..=255, pg_string()), 0..8).prop_map(|fields| ErrorFields { fields })
}

fn field_description() -> impl Strategy<Value = FieldDescription> {
    (
        pg_string(),
        any::<u32>(),
        any::<i16>(),
        any::<u32>(),
        any::<i16>(),
        any::<i32>(),
        any::<i16>(),
    )
        .prop_map(
            |(name, table_oid, column_attribute, type_oid, type_size, type_modifier, format)| {
                FieldDescription {
                    name,
                    table_oid,
                    column_attribute,
                    type_oid,
                    type_size,
                    type_modifier,
                    format,
                }
            },
        )
}

fn copy_response() -> impl Strategy<Value = CopyResponse> {
    (any::<i8>(), formats()).prop_map(|(format, column_formats)| CopyResponse {
        format,
        column_formats,
    })
}

fn transaction_status() -> impl Strategy<Value = TransactionStatus> {
    prop_oneof![
        Just(TransactionStatus::Idle),
        Just(TransactionStatus::InTransaction),
        Just(TransactionStatus::Failed),
    ]
}

/// Any backend message at all.
pub(crate) fn any_backend() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        (any::<i32>(), cancel_key()).prop_map(|(process_id, secret_key)| {
            BackendMessage::BackendKeyData(BackendKeyData {
                process_id,
                secret_key,
            })
        }),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        pg_string().prop_map(BackendMessage::CommandComplete),
        bytes(100).prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        copy_response().prop_map(BackendMessage::CopyInResponse),
        copy_response().prop_map(BackendMessage::CopyOutResponse),
        copy_response().prop_map(BackendMessage::CopyBothResponse),
        nullable_values().prop_map(|values| BackendMessage::DataRow(DataRow::new(values))),
        Just(BackendMessage::EmptyQueryResponse),
        error_fields().prop_map(BackendMessage::ErrorResponse),
        option::of(bytes(20)).prop_map(BackendMessage::FunctionCallResponse),
        (any::<i32>(), vec(pg_string(), 0..4)).prop_map(|(newest_minor, unrecognized_options)| {
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized_options,
            }
        }),
        Just(BackendMessage::NoData),
        error_fields().prop_map(BackendMessage::NoticeResponse),
        (any::<i32>(), pg_string(), pg_string()).prop_map(|(process_id, channel, payload)| {
            BackendMessage::NotificationResponse {
                process_id,
                channel,
                payload,
            }
        }),
        vec(any::<u32>(), 0..5).prop_map(BackendMessage::ParameterDescription),
        (pg_string(), pg_string())
            .prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::PortalSuspended),
        transaction_status().prop_map(BackendMessage::ReadyForQuery),
        vec(field_description(), 0..4).prop_map(BackendMessage::RowDescription),
        (1u8..=255, bytes(40))
            .prop_filter("unknown tags only", |(tag, _)| !KNOWN_BACKEND_TAGS
                .contains(tag))
            .prop_map(|(tag, body)| BackendMessage::Unknown { tag, body }),
    ]
}

/// A plausible client byte stream: optional SSLRequest, a StartupMessage, an authentication
/// exchange (password or SASL), then typed messages.
pub(crate) fn frontend_session() -> impl Strategy<Value = Vec<FrontendMessage>> {
    (
        any::<bool>(),
        startup_message(),
        prop_oneof![
            pg_string().prop_map(|password| vec![FrontendMessage::Password(password)]),
            (pg_string(), option::of(bytes(60)), vec(bytes(60), 0..3)).prop_map(
                |(mechanism, data, responses)| {
                    let mut messages =
                        vec![FrontendMessage::SaslInitialResponse { mechanism, data }];
                    messages.extend(responses.into_iter().map(FrontendMessage::SaslResponse));
                    messages
                }
            ),
        ],
        vec(typed_frontend(), 0..20),
    )
        .prop_map(|(ssl, startup, auth, typed)| {
            let mut messages = Vec::new();
            if ssl {
                messages.push(FrontendMessage::SslRequest);
            }
            messages.push(FrontendMessage::Startup(startup));
            messages.extend(auth);
            messages.extend(typed);
            messages
        })
}
