//! Goal: the codec reads real Postgres 15 traffic exactly: every byte captured from real
//! clients (psql, pgbench) and a real server decodes, re-encodes to the identical bytes, and
//! renders to a reviewed trace.
//! Method: replay each `testdata/vectors/*.pgwire` capture chunk by chunk through the decoders
//! (the way a proxy sees it, switching the `'p'` kind when the server asks for a password or
//! SASL), compare the re-encoded streams with the captured ones, and snapshot the trace with
//! insta under `testdata/snapshots/codec/`. Recapture with `just capture-vectors`.

use bytes::BytesMut;
use elephant_protocol::{
    AuthResponseKind, Authentication, BackendDecoder, BackendMessage, DecoderLimits,
    EncryptionResponse, FrontendDecoder, FrontendMessage, decode_encryption_response,
};
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One connection of a capture: chunks in arrival order, `true` = frontend.
type Connection = Vec<(bool, Vec<u8>)>;

fn parse_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex byte"))
        .collect()
}

fn load(name: &str) -> Vec<Connection> {
    let path = workspace_root()
        .join("testdata/vectors")
        .join(format!("{name}.pgwire"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut connections: Vec<Connection> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match line.split_once(' ') {
            None if line == "connection" => connections.push(Vec::new()),
            Some(("F", hex)) => connections
                .last_mut()
                .expect("connection")
                .push((true, parse_hex(hex))),
            Some(("B", hex)) => connections
                .last_mut()
                .expect("connection")
                .push((false, parse_hex(hex))),
            _ => panic!("bad vector line: {line}"),
        }
    }
    connections
}

/// Replays a connection through the decoders, as a proxy in the middle would.
struct Replay {
    frontend: FrontendDecoder,
    backend: BackendDecoder,
    frontend_buffer: BytesMut,
    backend_buffer: BytesMut,
    awaiting_ssl_answer: bool,
    trace: Vec<String>,
    frontend_reencoded: BytesMut,
    backend_reencoded: BytesMut,
}

impl Replay {
    fn new() -> Self {
        Replay {
            frontend: FrontendDecoder::new(DecoderLimits::default()),
            backend: BackendDecoder::new(DecoderLimits::default()),
            frontend_buffer: BytesMut::new(),
            backend_buffer: BytesMut::new(),
            awaiting_ssl_answer: false,
            trace: Vec::new(),
            frontend_reencoded: BytesMut::new(),
            backend_reencoded: BytesMut::new(),
        }
    }

    fn frontend_chunk(&mut self, chunk: &[u8]) {
        self.frontend_buffer.extend_from_slice(chunk);
        while let Some(message) = self
            .frontend
            .decode(&mut self.frontend_buffer)
            .expect("valid frontend bytes")
        {
            assert!(
                !matches!(message, FrontendMessage::Unknown { .. }),
                "undecoded: {message}"
            );
            self.awaiting_ssl_answer |= matches!(message, FrontendMessage::SslRequest);
            message
                .encode(&mut self.frontend_reencoded)
                .expect("re-encodes");
            self.trace.push(format!("F {message}"));
        }
    }

    fn backend_chunk(&mut self, chunk: &[u8]) {
        self.backend_buffer.extend_from_slice(chunk);
        if self.awaiting_ssl_answer {
            let answer = decode_encryption_response(&mut self.backend_buffer, b'S')
                .expect("valid SSL answer")
                .expect("one byte");
            assert_eq!(
                answer,
                EncryptionResponse::Refused,
                "the fixture runs without TLS"
            );
            self.backend_reencoded.extend_from_slice(b"N");
            self.trace.push("B SSL answer N".to_string());
            self.awaiting_ssl_answer = false;
        }
        while let Some(message) = self
            .backend
            .decode(&mut self.backend_buffer)
            .expect("valid backend bytes")
        {
            assert!(
                !matches!(message, BackendMessage::Unknown { .. }),
                "undecoded: {message}"
            );
            if let BackendMessage::Authentication(auth) = &message {
                self.expect_auth_response(auth);
            }
            message
                .encode(&mut self.backend_reencoded)
                .expect("re-encodes");
            self.trace.push(format!("B {message}"));
        }
    }

    fn expect_auth_response(&mut self, auth: &Authentication) {
        match auth {
            Authentication::CleartextPassword | Authentication::Md5Password { .. } => self
                .frontend
                .expect_auth_response(AuthResponseKind::Password),
            Authentication::Sasl { .. } => self
                .frontend
                .expect_auth_response(AuthResponseKind::SaslInitial),
            _ => {}
        }
    }
}

/// Replays every connection of a capture and returns the trace, checking byte identity.
fn replay(name: &str) -> Vec<String> {
    let mut trace = Vec::new();
    for (index, connection) in load(name).iter().enumerate() {
        let mut replay = Replay::new();
        let (mut frontend_stream, mut backend_stream) = (Vec::new(), Vec::new());
        for (is_frontend, chunk) in connection {
            if *is_frontend {
                frontend_stream.extend_from_slice(chunk);
                replay.frontend_chunk(chunk);
            } else {
                backend_stream.extend_from_slice(chunk);
                replay.backend_chunk(chunk);
            }
        }
        assert!(
            replay.frontend_buffer.is_empty() && replay.backend_buffer.is_empty(),
            "{name}: leftover bytes"
        );
        assert_eq!(
            &replay.frontend_reencoded[..],
            &frontend_stream[..],
            "{name}: client bytes differ"
        );
        assert_eq!(
            &replay.backend_reencoded[..],
            &backend_stream[..],
            "{name}: server bytes differ"
        );
        trace.push(format!("connection {index}"));
        trace.extend(replay.trace);
    }
    trace
}

/// Snapshots a trace, first checking it contains the messages the scenario is about.
fn check(name: &str, must_contain: &[&str]) {
    let trace = replay(name);
    for wanted in must_contain {
        assert!(
            trace.iter().any(|line| line.contains(wanted)),
            "{name}: no {wanted} in\n{}",
            trace.join("\n")
        );
    }
    insta::with_settings!({
        snapshot_path => workspace_root().join("testdata/snapshots/codec"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_yaml_snapshot!(name, trace);
    });
}

#[test]
fn scram_startup_from_psql() {
    check(
        "startup_scram",
        &[
            "F SSLRequest",
            "F StartupMessage 3.0",
            "B AuthenticationSASL [\"SCRAM-SHA-256\"]",
            "F SASLInitialResponse SCRAM-SHA-256",
            "B AuthenticationSASLContinue",
            "F SASLResponse",
            "B AuthenticationSASLFinal",
            "B AuthenticationOk",
            "B ParameterStatus server_version",
            "B BackendKeyData",
            "B ReadyForQuery I",
            "F Query \"SELECT 1 AS one\"",
            "B DataRow [\"1\"]",
            "F Terminate",
        ],
    );
}

#[test]
fn md5_startup_from_psql() {
    check(
        "startup_md5",
        &[
            "B AuthenticationMD5Password",
            "F PasswordMessage <redacted 35 bytes>",
            "B AuthenticationOk",
        ],
    );
}

#[test]
fn cleartext_startup_from_psql() {
    check(
        "startup_cleartext",
        &[
            "B AuthenticationCleartextPassword",
            "F PasswordMessage",
            "B AuthenticationOk",
        ],
    );
}

#[test]
fn extended_query_from_pgbench() {
    check(
        "extended_query",
        &[
            "F Parse",
            "F Bind",
            "F Execute",
            "F Sync",
            "B ParseComplete",
            "B BindComplete",
            "B DataRow [\"7\", \"seven\", NULL]",
        ],
    );
}

#[test]
fn copy_in_and_out_from_psql() {
    check(
        "copy",
        &[
            "B CopyInResponse",
            "F CopyData",
            "F CopyDone",
            "B CopyOutResponse",
            "B CopyData",
            "B CopyDone",
            "B CommandComplete \"COPY 2\"",
        ],
    );
}

#[test]
fn errors_from_psql() {
    check(
        "error",
        &[
            "B ErrorResponse",
            "C=\"42P01\"",
            "relation \\\"no_such_table\\\" does not exist",
        ],
    );
}

/// Goal: no secret reaches the reviewed snapshots. Method: search every snapshot for the
/// fixture passwords.
#[test]
fn snapshots_hold_no_passwords() {
    let directory = workspace_root().join("testdata/snapshots/codec");
    let entries = std::fs::read_dir(&directory).expect("codec snapshots are committed");
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for password in ["scram_pw", "md5_pw", "cleartext_pw"] {
            assert!(
                !text.contains(password),
                "{} holds {password}",
                entry.path().display()
            );
        }
    }
}
