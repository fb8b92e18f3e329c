//! Goal: the two startup state machines interoperate for every method, through real encoded
//! bytes, and every failure ends in the ErrorResponse Postgres would send.
//! Method: run a ClientHandshake (postgres-protocol's SCRAM client inside) against a
//! ServerHandshake in memory, moving each message through the encoder and the decoders exactly
//! as a network would, with a seeded RNG.

use bytes::BytesMut;
use elephant_auth::{AuthMethod, StoredPassword, md5_stored};
use elephant_protocol::startup::{
    ClientHandshake, ClientHandshakeConfig, ClientStep, HandshakeError, ServerAuthConfig,
    ServerHandshake, ServerHandshakeError, ServerStep,
};
use elephant_protocol::{
    AuthResponseKind, BackendDecoder, BackendMessage, DecoderLimits, FrontendDecoder,
    FrontendMessage, TransactionStatus,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// Moves a message through bytes, the way the network would.
fn via_wire_backend(message: &BackendMessage) -> BackendMessage {
    let mut bytes = BytesMut::new();
    message.encode(&mut bytes).expect("encodable");
    BackendDecoder::new(DecoderLimits::default())
        .decode(&mut bytes)
        .expect("decodable")
        .expect("whole")
}

fn via_wire_frontend(message: &FrontendMessage, decoder: &mut FrontendDecoder) -> FrontendMessage {
    let mut bytes = BytesMut::new();
    message.encode(&mut bytes).expect("encodable");
    decoder
        .decode(&mut bytes)
        .expect("decodable")
        .expect("whole")
}

fn client_config(user: &str, password: Option<&str>) -> ClientHandshakeConfig {
    ClientHandshakeConfig {
        user: user.into(),
        database: Some("shop".into()),
        password: password.map(str::to_string),
        parameters: vec![("application_name".into(), "handshake-test".into())],
        tls_server_end_point: None,
    }
}

fn server_config(method: Option<AuthMethod>) -> ServerAuthConfig {
    ServerAuthConfig {
        method,
        mock_key: b"test mock key".to_vec(),
        tls_server_end_point: None,
    }
}

/// How a simulated login ended.
#[derive(Debug)]
enum Outcome {
    /// The client reached ReadyForQuery.
    Ready,
    /// The server refused; this is the ErrorResponse it sent (and the client saw).
    ServerRefused(ServerHandshakeError, HandshakeError),
    /// The client gave up on its own.
    ClientFailed(HandshakeError),
}

fn login(
    config: ClientHandshakeConfig,
    server: ServerAuthConfig,
    stored: Option<StoredPassword>,
) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut decoder = FrontendDecoder::new(DecoderLimits::default());
    let (mut client, startup) = ClientHandshake::start(config);
    let FrontendMessage::Startup(startup) = via_wire_frontend(&startup, &mut decoder) else {
        panic!("first message must be the startup message");
    };
    let (mut handshake, mut step) =
        ServerHandshake::start(&startup, &server, stored, &mut rng).expect("user given");
    // Every exchange is bounded: at most 4 round trips exist (SCRAM).
    for _round in 0..8 {
        let to_client = match step {
            ServerStep::Send { message, expect } => {
                decoder.expect_auth_response(expect);
                vec![message]
            }
            ServerStep::Authenticated(mut messages) => {
                messages.push(BackendMessage::ReadyForQuery(TransactionStatus::Idle));
                messages
            }
        };
        let mut reply = None;
        for message in to_client {
            match client.handle(via_wire_backend(&message)) {
                Ok(ClientStep::Ready(_)) => return Outcome::Ready,
                Ok(ClientStep::Send(message)) => reply = Some(message),
                Ok(ClientStep::Continue) => {}
                Err(error) => return Outcome::ClientFailed(error),
            }
        }
        let reply = reply.expect("client must answer an authentication request");
        step = match handshake.handle(via_wire_frontend(&reply, &mut decoder)) {
            Ok(step) => step,
            Err(error) => {
                let seen_by_client = client
                    .handle(via_wire_backend(&error.error_response()))
                    .expect_err("an ErrorResponse ends the client handshake");
                return Outcome::ServerRefused(error, seen_by_client);
            }
        };
    }
    panic!("handshake did not finish in 8 rounds");
}

fn assert_refused_with(outcome: Outcome, sqlstate: &str, message: &str) {
    let Outcome::ServerRefused(error, seen) = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert_eq!(error.sqlstate(), sqlstate, "{error}");
    assert_eq!(error.to_string(), message);
    let HandshakeError::Server(fields) = seen else {
        panic!("client must see the server's ErrorResponse, saw {seen}");
    };
    assert_eq!(
        fields.code().map(|c| c.to_string()).as_deref(),
        Some(sqlstate)
    );
    assert_eq!(
        fields.severity().map(|s| s.to_string()).as_deref(),
        Some("FATAL")
    );
}

#[test]
fn scram_login_with_stored_secret_and_with_plain_password() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let secret = elephant_auth::ScramSecret::generate("s3cret", &mut rng, 4096).expect("secret");
    for stored in [
        StoredPassword::Scram(secret),
        StoredPassword::Plain("s3cret".into()),
    ] {
        let outcome = login(
            client_config("alice", Some("s3cret")),
            server_config(Some(AuthMethod::ScramSha256)),
            Some(stored),
        );
        assert!(matches!(outcome, Outcome::Ready), "{outcome:?}");
    }
}

#[test]
fn md5_login_with_md5_hash_and_plain_password() {
    for stored in [
        StoredPassword::Md5(md5_stored("bob", "pw")),
        StoredPassword::Plain("pw".into()),
    ] {
        let outcome = login(
            client_config("bob", Some("pw")),
            server_config(Some(AuthMethod::Md5)),
            Some(stored),
        );
        assert!(matches!(outcome, Outcome::Ready), "{outcome:?}");
    }
}

#[test]
fn md5_method_with_a_scram_secret_falls_back_to_scram_like_postgres() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let secret = elephant_auth::ScramSecret::generate("pw", &mut rng, 4096).expect("secret");
    let outcome = login(
        client_config("bob", Some("pw")),
        server_config(Some(AuthMethod::Md5)),
        Some(StoredPassword::Scram(secret)),
    );
    assert!(matches!(outcome, Outcome::Ready), "{outcome:?}");
}

#[test]
fn cleartext_and_trust_logins() {
    let outcome = login(
        client_config("carol", Some("pw")),
        server_config(Some(AuthMethod::Cleartext)),
        Some(StoredPassword::Plain("pw".into())),
    );
    assert!(matches!(outcome, Outcome::Ready), "{outcome:?}");
    let outcome = login(client_config("dave", None), server_config(None), None);
    assert!(matches!(outcome, Outcome::Ready), "{outcome:?}");
}

#[test]
fn wrong_passwords_fail_with_28p01_for_every_method() {
    let scram = login(
        client_config("alice", Some("wrong")),
        server_config(Some(AuthMethod::ScramSha256)),
        Some(StoredPassword::Plain("right".into())),
    );
    let Outcome::ServerRefused(error, _) = scram else {
        panic!("{scram:?}")
    };
    assert_eq!(error.sqlstate(), "28P01", "{error}");
    let md5 = login(
        client_config("bob", Some("wrong")),
        server_config(Some(AuthMethod::Md5)),
        Some(StoredPassword::Plain("right".into())),
    );
    assert_refused_with(
        md5,
        "28P01",
        "password authentication failed for user \"bob\"",
    );
    let cleartext = login(
        client_config("carol", Some("wrong")),
        server_config(Some(AuthMethod::Cleartext)),
        Some(StoredPassword::Plain("right".into())),
    );
    assert_refused_with(
        cleartext,
        "28P01",
        "password authentication failed for user \"carol\"",
    );
}

#[test]
fn unknown_roles_fail_exactly_like_wrong_passwords() {
    let unknown = login(
        client_config("mallory", Some("guess")),
        server_config(Some(AuthMethod::Md5)),
        None,
    );
    assert_refused_with(
        unknown,
        "28P01",
        "password authentication failed for user \"mallory\"",
    );
    let unknown = login(
        client_config("mallory", Some("guess")),
        server_config(Some(AuthMethod::ScramSha256)),
        None,
    );
    let Outcome::ServerRefused(error, _) = unknown else {
        panic!("{unknown:?}")
    };
    assert_eq!(error.sqlstate(), "28P01");
}

#[test]
fn a_client_without_a_password_says_so() {
    let outcome = login(
        client_config("alice", None),
        server_config(Some(AuthMethod::ScramSha256)),
        Some(StoredPassword::Plain("x".into())),
    );
    let Outcome::ClientFailed(error) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        error.to_string(),
        "the server requested SCRAM-SHA-256 authentication, but no password was provided"
    );
}

#[test]
fn a_startup_message_without_user_is_refused() {
    let startup = elephant_protocol::StartupMessage::new([("database", "x")]);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let error = ServerHandshake::start(&startup, &server_config(None), None, &mut rng)
        .expect_err("no user");
    assert_eq!(error.sqlstate(), "28000");
    assert_eq!(
        error.to_string(),
        "no PostgreSQL user name specified in startup packet"
    );
}

/// Rewrites a SCRAM client-final message in flight.
type Tamper = fn(&str) -> String;

/// Goal: a SASL exchange with a wrong nonce, a wrong proof or a lying channel-binding flag
/// fails with a clear error. Method: tamper with the client-final message in flight.
#[test]
fn tampered_scram_client_final_messages_are_refused() {
    let cases: [(&str, Tamper, &str); 3] = [
        ("nonce", |m| m.replacen("r=", "r=X", 1), "08P01"),
        (
            "proof",
            |m| {
                let (head, proof) = m.rsplit_once("p=").expect("proof");
                let flipped = if proof.starts_with('A') { "B" } else { "A" };
                format!("{head}p={flipped}{}", &proof[1..])
            },
            "28P01",
        ),
        (
            "channel binding",
            |m| m.replacen("c=biws", "c=eSws", 1),
            "08P01",
        ),
    ];
    for (what, tamper, sqlstate) in cases {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut client, startup) = ClientHandshake::start(client_config("alice", Some("pw")));
        let FrontendMessage::Startup(startup) = startup else {
            unreachable!()
        };
        let stored = Some(StoredPassword::Plain("pw".into()));
        let (mut server, step) = ServerHandshake::start(
            &startup,
            &server_config(Some(AuthMethod::ScramSha256)),
            stored,
            &mut rng,
        )
        .expect("start");
        let ServerStep::Send { message, .. } = step else {
            panic!("SASL expected")
        };
        let Ok(ClientStep::Send(initial)) = client.handle(message) else {
            panic!("initial")
        };
        let Ok(ServerStep::Send { message, .. }) = server.handle(initial) else {
            panic!("continue")
        };
        let Ok(ClientStep::Send(FrontendMessage::SaslResponse(data))) = client.handle(message)
        else {
            panic!("final")
        };
        let tampered = tamper(std::str::from_utf8(&data).expect("ascii"));
        let error = server
            .handle(FrontendMessage::SaslResponse(tampered.into_bytes().into()))
            .expect_err(what);
        assert_eq!(error.sqlstate(), sqlstate, "{what}: {error}");
        assert!(!error.to_string().contains("pw"), "{what}: {error}");
    }
}

#[test]
fn a_server_skipping_the_scram_final_message_is_not_trusted() {
    let (mut client, _) = ClientHandshake::start(client_config("alice", Some("pw")));
    let sasl = elephant_protocol::Authentication::Sasl {
        mechanisms: vec!["SCRAM-SHA-256".into()],
    };
    assert!(matches!(
        client.handle(BackendMessage::Authentication(sasl)),
        Ok(ClientStep::Send(_))
    ));
    let error = client
        .handle(BackendMessage::Authentication(
            elephant_protocol::Authentication::Ok,
        ))
        .expect_err("AuthenticationOk without SCRAM proof");
    assert!(
        error.to_string().contains("unexpected AuthenticationOk"),
        "{error}"
    );
}

#[test]
fn a_second_startup_message_during_scram_is_a_protocol_violation() {
    let mut decoder = FrontendDecoder::new(DecoderLimits::default());
    let (_, startup) = ClientHandshake::start(client_config("alice", Some("pw")));
    let mut bytes = BytesMut::new();
    startup.encode(&mut bytes).expect("encodable");
    startup.encode(&mut bytes).expect("encodable");
    assert!(matches!(
        decoder.decode(&mut bytes),
        Ok(Some(FrontendMessage::Startup(_)))
    ));
    decoder.expect_auth_response(AuthResponseKind::SaslInitial);
    let error = decoder.decode(&mut bytes).expect_err("second startup");
    assert_eq!(error.sqlstate(), "08P01");
    assert!(
        error
            .to_string()
            .contains("unexpected StartupMessage after the connection started")
    );
}

#[test]
fn the_client_answers_a_query_instead_of_a_password_with_a_protocol_violation() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let startup = elephant_protocol::StartupMessage::new([("user", "alice")]);
    let (mut server, _) = ServerHandshake::start(
        &startup,
        &server_config(Some(AuthMethod::Cleartext)),
        None,
        &mut rng,
    )
    .expect("start");
    let error = server
        .handle(FrontendMessage::Query("SELECT 1".into()))
        .expect_err("not a password");
    assert_eq!(error.sqlstate(), "08P01");
    assert_eq!(
        error.to_string(),
        "expected a password response, received Query"
    );
}

/// Goal: the server side is deterministic for a given seed (the simulator depends on it).
#[test]
fn server_messages_are_a_function_of_the_seed() {
    let run = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let startup = elephant_protocol::StartupMessage::new([("user", "alice")]);
        let (_, step) = ServerHandshake::start(
            &startup,
            &server_config(Some(AuthMethod::Md5)),
            Some(StoredPassword::Plain("x".into())),
            &mut rng,
        )
        .expect("start");
        let ServerStep::Send { message, .. } = step else {
            panic!()
        };
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes).expect("encodable");
        bytes
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}
