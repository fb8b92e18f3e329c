//! Goal: every kind of malformed, truncated, oversized or out-of-order input yields a typed
//! error whose message a user can act on, and never a panic or a hang.
//! Method: hand-built byte strings, one per failure, checked against the exact error.

use crate::error::{DecodeError, Direction, Tag};
use crate::limits::{MAX_STARTUP_PACKET_LEN, MIN_STARTUP_PACKET_LEN};
use crate::{
    BackendDecoder, DecoderLimits, EncryptionResponse, FrontendDecoder, FrontendMessage,
    FrontendPhase, StartupMessage, decode_encryption_response,
};
use bytes::{BufMut, BytesMut};

fn running() -> FrontendDecoder {
    FrontendDecoder::running(DecoderLimits::default())
}

fn frontend_error(decoder: &mut FrontendDecoder, bytes: &[u8]) -> DecodeError {
    decoder
        .decode(&mut BytesMut::from(bytes))
        .expect_err("input must be rejected")
}

fn backend_error(bytes: &[u8]) -> DecodeError {
    BackendDecoder::new(DecoderLimits::default())
        .decode(&mut BytesMut::from(bytes))
        .expect_err("input must be rejected")
}

fn encoded(message: &FrontendMessage) -> BytesMut {
    let mut bytes = BytesMut::new();
    message.encode(&mut bytes).expect("encodable");
    bytes
}

#[test]
fn second_startup_message_is_rejected_by_name() {
    let mut decoder = FrontendDecoder::new(DecoderLimits::default());
    let startup = FrontendMessage::Startup(StartupMessage::new([("user", "alice")]));
    let mut stream = encoded(&startup);
    stream.extend_from_slice(&encoded(&startup));
    assert_eq!(decoder.decode(&mut stream).map(|m| m.is_some()), Ok(true));
    assert_eq!(decoder.phase(), FrontendPhase::Running);
    let error = decoder.decode(&mut stream).expect_err("second startup");
    assert_eq!(
        error,
        DecodeError::StartupPacketAfterStartup {
            packet: "StartupMessage"
        }
    );
    assert_eq!(
        error.to_string(),
        "unexpected StartupMessage after the connection started: a connection starts up only once"
    );
    assert_eq!(error.sqlstate(), "08P01");
}

#[test]
fn ssl_request_after_startup_is_rejected_by_name() {
    let error = frontend_error(&mut running(), &encoded(&FrontendMessage::SslRequest));
    assert_eq!(
        error,
        DecodeError::StartupPacketAfterStartup {
            packet: "SSLRequest"
        }
    );
}

#[test]
fn ssl_request_then_startup_is_the_normal_order() {
    let mut decoder = FrontendDecoder::new(DecoderLimits::default());
    let mut stream = encoded(&FrontendMessage::SslRequest);
    stream.extend_from_slice(&encoded(&FrontendMessage::Startup(StartupMessage::new([
        ("user", "a"),
    ]))));
    assert_eq!(
        decoder.decode(&mut stream),
        Ok(Some(FrontendMessage::SslRequest))
    );
    assert_eq!(decoder.phase(), FrontendPhase::Startup);
    assert!(matches!(
        decoder.decode(&mut stream),
        Ok(Some(FrontendMessage::Startup(_)))
    ));
}

#[test]
fn message_type_zero_without_startup_code_is_invalid() {
    let error = frontend_error(&mut running(), b"\x00\x00\x00\x00\x05\x00\x00\x00\x00");
    assert_eq!(
        error,
        DecodeError::InvalidMessageType {
            direction: Direction::Frontend,
            tag: Tag(0)
        }
    );
}

#[test]
fn startup_packet_length_bounds_follow_postgres() {
    let mut too_long = BytesMut::new();
    too_long.put_u32(MAX_STARTUP_PACKET_LEN as u32 + 1);
    let error = frontend_error(
        &mut FrontendDecoder::new(DecoderLimits::default()),
        &too_long,
    );
    assert!(matches!(
        error,
        DecodeError::InvalidStartupLength { len: 10_001, .. }
    ));
    assert!(
        error
            .to_string()
            .contains("invalid length of startup packet")
    );

    let mut too_short = BytesMut::new();
    too_short.put_u32(MIN_STARTUP_PACKET_LEN as u32 - 1);
    let error = frontend_error(
        &mut FrontendDecoder::new(DecoderLimits::default()),
        &too_short,
    );
    assert!(matches!(
        error,
        DecodeError::InvalidStartupLength { len: 7, .. }
    ));
}

#[test]
fn startup_packet_of_exactly_the_limit_is_accepted() {
    let filler = "x".repeat(MAX_STARTUP_PACKET_LEN - 4 - 4 - "user\0".len() - 1 - 1);
    let startup = FrontendMessage::Startup(StartupMessage::new([("user", filler.as_str())]));
    let mut bytes = encoded(&startup);
    assert_eq!(bytes.len(), MAX_STARTUP_PACKET_LEN);
    let decoded = FrontendDecoder::new(DecoderLimits::default()).decode(&mut bytes);
    assert_eq!(decoded, Ok(Some(startup)));
}

#[test]
fn unsupported_protocol_versions_are_named() {
    let mut bytes = BytesMut::new();
    bytes.put_u32(9);
    bytes.put_u32(2 << 16);
    bytes.put_u8(0);
    let error = frontend_error(&mut FrontendDecoder::new(DecoderLimits::default()), &bytes);
    assert_eq!(
        error,
        DecodeError::UnsupportedProtocol { major: 2, minor: 0 }
    );
}

#[test]
fn lengths_below_four_are_rejected() {
    let error = backend_error(b"Z\x00\x00\x00\x03");
    assert_eq!(
        error,
        DecodeError::InvalidLength {
            direction: Direction::Backend,
            tag: Tag(b'Z'),
            len: 3
        }
    );
    assert_eq!(
        error.to_string(),
        "invalid backend message length 3 for message type 'Z'"
    );
}

#[test]
fn lengths_of_two_to_the_31_or_more_are_rejected_before_any_body_arrives() {
    for len in [0x8000_0000u32, 0xffff_ffff] {
        let mut bytes = BytesMut::from(&b"Q"[..]);
        bytes.put_u32(len);
        let error = frontend_error(&mut running(), &bytes);
        assert!(matches!(error, DecodeError::InvalidLength { len: l, .. } if l == u64::from(len)));
    }
}

#[test]
fn oversized_messages_are_rejected_before_buffering() {
    let mut decoder = FrontendDecoder::running(DecoderLimits::with_max_message_len(1024));
    let mut bytes = BytesMut::from(&b"Q"[..]);
    bytes.put_u32(1025);
    let error = decoder.decode(&mut bytes).expect_err("over the limit");
    assert_eq!(
        error.to_string(),
        "frontend message type 'Q' of 1025 bytes exceeds the maximum message size of 1024 bytes"
    );
}

#[test]
fn a_huge_announced_length_does_not_reserve_huge_memory() {
    let mut decoder = FrontendDecoder::running(DecoderLimits::default());
    let mut bytes = BytesMut::from(&b"d"[..]);
    bytes.put_u32((1 << 30) - 1);
    assert_eq!(decoder.decode(&mut bytes), Ok(None));
    assert!(bytes.capacity() <= crate::limits::MAX_RESERVE_CHUNK + 64);
}

#[test]
fn truncated_bodies_name_the_missing_field() {
    // Parse whose query string is not NUL-terminated.
    let error = frontend_error(&mut running(), b"P\x00\x00\x00\x08s\x00ab");
    assert_eq!(
        error.to_string(),
        "malformed Parse message: query is missing or truncated"
    );
    // Bind announcing two parameter values but carrying one.
    let error = frontend_error(
        &mut running(),
        b"B\x00\x00\x00\x11\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01x\x00\x00",
    );
    assert!(
        matches!(
            error,
            DecodeError::Truncated {
                message: "Bind",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let error = frontend_error(&mut running(), b"S\x00\x00\x00\x05!");
    assert_eq!(
        error,
        DecodeError::TrailingBytes {
            message: "Sync",
            extra: 1
        }
    );
}

#[test]
fn invalid_field_values_are_rejected() {
    let error = backend_error(b"Z\x00\x00\x00\x05X");
    assert_eq!(
        error.to_string(),
        "malformed ReadyForQuery message: invalid transaction status (expected 'I', 'T' or 'E', got 88)"
    );
    let error = frontend_error(&mut running(), b"D\x00\x00\x00\x06Xs\x00");
    assert!(matches!(
        error,
        DecodeError::InvalidValue {
            field: "target",
            ..
        }
    ));
    // A DataRow with a negative count.
    let error = backend_error(b"D\x00\x00\x00\x06\xff\xff");
    assert!(matches!(
        error,
        DecodeError::InvalidValue {
            message: "DataRow",
            ..
        }
    ));
    // A DataRow value length of -2.
    let error = backend_error(b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfe");
    assert!(matches!(
        error,
        DecodeError::InvalidValue {
            message: "DataRow",
            ..
        }
    ));
}

#[test]
fn cancel_keys_outside_4_to_256_bytes_are_rejected() {
    let mut bytes = BytesMut::new();
    bytes.put_u32(12);
    bytes.put_u32(crate::frontend::CANCEL_REQUEST_CODE);
    bytes.put_u32(7);
    let error = frontend_error(&mut FrontendDecoder::new(DecoderLimits::default()), &bytes);
    assert!(
        matches!(
            error,
            DecodeError::InvalidValue {
                field: "secret key",
                ..
            }
        ),
        "{error}"
    );
    let error = backend_error(b"K\x00\x00\x00\x09\x00\x00\x00\x01\x02");
    assert!(matches!(
        error,
        DecodeError::InvalidValue {
            field: "secret key",
            ..
        }
    ));
}

#[test]
fn encoding_refuses_what_the_wire_cannot_carry() {
    let mut bytes = BytesMut::from(&b"keep"[..]);
    let error = FrontendMessage::Query(crate::PgString::from("SELECT '\0'"))
        .encode(&mut bytes)
        .expect_err("interior NUL");
    assert!(error.to_string().contains("contains a NUL byte"));
    assert_eq!(
        &bytes[..],
        b"keep",
        "a failed encode leaves the buffer as it was"
    );
    let parse = FrontendMessage::Parse(crate::Parse {
        name: "".into(),
        query: "".into(),
        parameter_types: vec![0; 40_000],
    });
    assert!(matches!(
        parse.encode(&mut bytes),
        Err(crate::EncodeError::TooManyItems { count: 40_000, .. })
    ));
}

#[test]
fn encryption_responses_are_read_as_single_bytes() {
    let mut bytes = BytesMut::from(&b"SN"[..]);
    assert_eq!(
        decode_encryption_response(&mut bytes, b'S'),
        Ok(Some(EncryptionResponse::Accepted))
    );
    assert_eq!(
        decode_encryption_response(&mut bytes, b'S'),
        Ok(Some(EncryptionResponse::Refused))
    );
    assert_eq!(decode_encryption_response(&mut bytes, b'S'), Ok(None));
    let error = decode_encryption_response(&mut BytesMut::from(&b"E"[..]), b'S').expect_err("E");
    assert!(error.to_string().contains("expected 'S' or 'N'"));
}

#[test]
fn incomplete_messages_wait_for_more_bytes_without_consuming() {
    let mut decoder = running();
    let mut bytes = BytesMut::from(&b"Q\x00\x00\x00\x0dSELECT"[..]);
    assert_eq!(decoder.decode(&mut bytes), Ok(None));
    assert_eq!(bytes.len(), 11);
    bytes.extend_from_slice(b" 1\0");
    assert_eq!(
        decoder.decode(&mut bytes),
        Ok(Some(FrontendMessage::Query("SELECT 1".into())))
    );
}
