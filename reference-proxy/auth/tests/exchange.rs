//! Full SCRAM exchanges between postgres-protocol's client (through `ScramClient`) and
//! `ScramServer`, honest and tampered with.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use elephant_auth::scram::MAXIMUM_MESSAGE_LENGTH;
use elephant_auth::{
    AuthError, AuthMethod, ChannelBindingPolicy, ClientChannelBinding, PasswordExchange,
    SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramClient, ScramError, ScramSecret, ScramServer, SqlState,
    StoredPassword,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// Few iterations keep the tests fast; the count does not change the protocol.
const TEST_ITERATIONS: u32 = 64;
const CERTIFICATE_HASH: &[u8] = &[0xab; 32];

fn server(password: &str, policy: ChannelBindingPolicy) -> ScramServer {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let secret = ScramSecret::generate(password, &mut rng, TEST_ITERATIONS).unwrap();
    ScramServer::new(secret, &mut rng, policy)
}

fn offered() -> ChannelBindingPolicy {
    ChannelBindingPolicy::from_tls_server_end_point(Some(CERTIFICATE_HASH.to_vec()))
}

/// Runs a whole exchange, letting `tamper` rewrite the client-final-message.
fn exchange_with(
    mut server: ScramServer,
    client_password: &str,
    binding: ClientChannelBinding,
    tamper: impl FnOnce(String) -> String,
) -> Result<(), ScramError> {
    let mut client = ScramClient::new(client_password.as_bytes(), binding);
    let client_first = client.client_first()?;
    let server_first = server.handle_client_first(client.mechanism(), &client_first)?;
    let client_final = client.handle_server_first(&server_first)?;
    let client_final = tamper(String::from_utf8(client_final).unwrap());
    let server_final = server.handle_client_final(client_final.as_bytes())?;
    assert!(server.is_authenticated());
    client.handle_server_final(&server_final)?;
    assert!(client.is_authenticated());
    Ok(())
}

fn exchange(
    server: ScramServer,
    client_password: &str,
    binding: ClientChannelBinding,
) -> Result<(), ScramError> {
    exchange_with(server, client_password, binding, |message| message)
}

/// Replaces the value of attribute `name` in a client-final-message.
fn replace_attribute(message: &str, name: char, value: &str) -> String {
    message
        .split(',')
        .map(|field| {
            if field.starts_with(name) && field.as_bytes().get(1) == Some(&b'=') {
                format!("{name}={value}")
            } else {
                field.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn attribute(message: &str, name: char) -> String {
    message
        .split(',')
        .find_map(|field| field.strip_prefix(&format!("{name}=")))
        .unwrap()
        .to_owned()
}

#[test]
fn honest_exchange_succeeds() {
    let result = exchange(
        server("correct horse", ChannelBindingPolicy::NotOffered),
        "correct horse",
        ClientChannelBinding::NotSupported,
    );
    assert_eq!(result, Ok(()));
}

#[test]
fn wrong_password_fails_with_invalid_password() {
    let error = exchange(
        server("correct horse", ChannelBindingPolicy::NotOffered),
        "battery staple",
        ClientChannelBinding::NotSupported,
    )
    .unwrap_err();
    assert_eq!(error, ScramError::ProofMismatch);
    assert_eq!(error.sqlstate(), SqlState::InvalidPassword);
    assert_eq!(
        error.to_string(),
        "SCRAM client proof does not match: password authentication failed"
    );
}

#[test]
fn tampered_nonce_fails() {
    let error = exchange_with(
        server("pw", ChannelBindingPolicy::NotOffered),
        "pw",
        ClientChannelBinding::NotSupported,
        |message| {
            let nonce = attribute(&message, 'r');
            replace_attribute(&message, 'r', &format!("{nonce}x"))
        },
    )
    .unwrap_err();
    assert_eq!(error, ScramError::NonceMismatch);
    assert_eq!(error.sqlstate(), SqlState::ProtocolViolation);
}

#[test]
fn tampered_proof_fails() {
    let error = exchange_with(
        server("pw", ChannelBindingPolicy::NotOffered),
        "pw",
        ClientChannelBinding::NotSupported,
        |message| {
            let mut proof = STANDARD.decode(attribute(&message, 'p')).unwrap();
            proof[0] ^= 1;
            replace_attribute(&message, 'p', &STANDARD.encode(proof))
        },
    )
    .unwrap_err();
    assert_eq!(error, ScramError::ProofMismatch);
}

#[test]
fn channel_binding_downgrade_is_refused() {
    // The client could bind, but a man in the middle stripped PLUS from the mechanism list,
    // so the client says "y". The server did offer PLUS and refuses.
    let error = exchange(
        server("pw", offered()),
        "pw",
        ClientChannelBinding::NotOfferedByServer,
    )
    .unwrap_err();
    assert_eq!(error, ScramError::ChannelBindingDowngrade);
    assert_eq!(error.sqlstate(), SqlState::ProtocolViolation);
}

#[test]
fn channel_binding_with_matching_data_succeeds() {
    let binding = ClientChannelBinding::negotiate(
        &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
        Some(CERTIFICATE_HASH.to_vec()),
    )
    .unwrap();
    assert_eq!(binding.mechanism(), SCRAM_SHA_256_PLUS);
    assert_eq!(exchange(server("pw", offered()), "pw", binding), Ok(()));
}

#[test]
fn channel_binding_with_other_certificate_fails() {
    // The client sees a different certificate: someone terminated TLS in between.
    let error = exchange(
        server("pw", offered()),
        "pw",
        ClientChannelBinding::TlsServerEndPoint(vec![0xcd; 32]),
    )
    .unwrap_err();
    assert_eq!(error, ScramError::ChannelBindingMismatch);
}

#[test]
fn client_without_channel_binding_may_use_plain_scram_when_plus_is_offered() {
    assert_eq!(
        exchange(
            server("pw", offered()),
            "pw",
            ClientChannelBinding::NotSupported
        ),
        Ok(())
    );
}

#[test]
fn required_channel_binding_refuses_plain_scram() {
    let policy = ChannelBindingPolicy::Required {
        tls_server_end_point: CERTIFICATE_HASH.to_vec(),
    };
    let error = exchange(
        server("pw", policy.clone()),
        "pw",
        ClientChannelBinding::NotSupported,
    )
    .unwrap_err();
    assert!(matches!(error, ScramError::UnsupportedMechanism { .. }));
    assert_eq!(
        exchange(
            server("pw", policy),
            "pw",
            ClientChannelBinding::TlsServerEndPoint(CERTIFICATE_HASH.to_vec())
        ),
        Ok(())
    );
}

#[test]
fn plus_is_refused_when_not_offered() {
    let error = exchange(
        server("pw", ChannelBindingPolicy::NotOffered),
        "pw",
        ClientChannelBinding::TlsServerEndPoint(CERTIFICATE_HASH.to_vec()),
    )
    .unwrap_err();
    assert!(matches!(error, ScramError::UnsupportedMechanism { .. }));
}

#[test]
fn p_flag_with_plain_mechanism_is_refused() {
    let mut server = server("pw", offered());
    let mut client = ScramClient::new(
        b"pw",
        ClientChannelBinding::TlsServerEndPoint(CERTIFICATE_HASH.to_vec()),
    );
    let client_first = client.client_first().unwrap();
    assert_eq!(
        server.handle_client_first(SCRAM_SHA_256, &client_first),
        Err(ScramError::UnexpectedChannelBindingData)
    );
}

#[test]
fn plus_mechanism_without_p_flag_is_refused() {
    let mut server = server("pw", offered());
    let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
    let client_first = client.client_first().unwrap();
    assert_eq!(
        server.handle_client_first(SCRAM_SHA_256_PLUS, &client_first),
        Err(ScramError::MissingChannelBindingData)
    );
}

#[test]
fn unsupported_channel_binding_type_is_refused() {
    let mut server = server("pw", offered());
    assert_eq!(
        server.handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-unique,,n=,r=abc"),
        Err(ScramError::UnsupportedChannelBindingType)
    );
}

#[test]
fn client_detects_a_forged_server_signature() {
    let mut server = server("pw", ChannelBindingPolicy::NotOffered);
    let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
    let client_first = client.client_first().unwrap();
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, &client_first)
        .unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    server.handle_client_final(&client_final).unwrap();
    let forged = format!("v={}", STANDARD.encode([0u8; 32]));
    let error = client.handle_server_final(forged.as_bytes()).unwrap_err();
    assert_eq!(error, ScramError::ServerSignatureMismatch);
    assert!(!client.is_authenticated());
}

#[test]
fn mock_exchange_fails_like_a_wrong_password() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let server = ScramServer::new_mock(
        "nobody",
        b"per-cluster mock key",
        &mut rng,
        ChannelBindingPolicy::NotOffered,
    );
    assert_eq!(
        exchange(server, "anything", ClientChannelBinding::NotSupported),
        Err(ScramError::ProofMismatch)
    );
}

#[test]
fn plain_stored_password_runs_scram_with_a_derived_secret() {
    let stored = StoredPassword::parse("s3cret").unwrap();
    assert_eq!(
        stored.exchange_for(AuthMethod::ScramSha256),
        PasswordExchange::Scram
    );
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let secret = stored.scram_secret(&mut rng).unwrap();
    let server = ScramServer::new(secret, &mut rng, ChannelBindingPolicy::NotOffered);
    assert_eq!(
        exchange(server, "s3cret", ClientChannelBinding::NotSupported),
        Ok(())
    );
}

#[test]
fn md5_stored_password_cannot_run_scram() {
    let stored = StoredPassword::parse(&elephant_auth::md5_stored("alice", "pw")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let error = stored.scram_secret(&mut rng).unwrap_err();
    assert!(matches!(error, AuthError::ScramNotPossibleWithMd5Hash));
}

#[test]
fn saslprep_agrees_between_client_and_server() {
    // U+00A0 NO-BREAK SPACE normalises to a plain space on both sides.
    assert_eq!(
        exchange(
            server("pass word", ChannelBindingPolicy::NotOffered),
            "pass\u{a0}word",
            ClientChannelBinding::NotSupported
        ),
        Ok(())
    );
}

#[test]
fn non_utf8_passwords_work() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let password = b"caf\xe9";
    let secret = ScramSecret::from_password_bytes(password, b"salt", TEST_ITERATIONS).unwrap();
    let mut server = ScramServer::new(secret, &mut rng, ChannelBindingPolicy::NotOffered);
    let mut client = ScramClient::new(password, ClientChannelBinding::NotSupported);
    let client_first = client.client_first().unwrap();
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, &client_first)
        .unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    let server_final = server.handle_client_final(&client_final).unwrap();
    client.handle_server_final(&server_final).unwrap();
}

#[test]
fn server_nonce_is_deterministic_for_a_seed() {
    let first = server("pw", ChannelBindingPolicy::NotOffered)
        .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=clientnonce")
        .unwrap();
    let again = server("pw", ChannelBindingPolicy::NotOffered)
        .handle_client_first(SCRAM_SHA_256, b"n,,n=,r=clientnonce")
        .unwrap();
    assert_eq!(first, again);
    let text = String::from_utf8(first).unwrap();
    let nonce = attribute(&text, 'r');
    // Client nonce plus 24 base64 characters (18 random bytes), as Postgres.
    assert_eq!(nonce.len(), "clientnonce".len() + 24);
}

#[test]
fn over_long_messages_are_refused() {
    let mut long = b"n,,n=,r=".to_vec();
    long.resize(MAXIMUM_MESSAGE_LENGTH + 1, b'a');
    let error = server("pw", ChannelBindingPolicy::NotOffered)
        .handle_client_first(SCRAM_SHA_256, &long)
        .unwrap_err();
    assert!(matches!(error, ScramError::MessageTooLong { .. }));
    assert_eq!(error.sqlstate(), SqlState::ProtocolViolation);
}

#[test]
fn error_messages_never_contain_the_proof() {
    let mut captured_proof = String::new();
    let error = exchange_with(
        server("pw", ChannelBindingPolicy::NotOffered),
        "wrong",
        ClientChannelBinding::NotSupported,
        |message| {
            captured_proof = attribute(&message, 'p');
            message
        },
    )
    .unwrap_err();
    assert!(!error.to_string().contains(&captured_proof));
    assert!(!format!("{error:?}").contains(&captured_proof));
}
