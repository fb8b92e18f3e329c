//! Peer-controlled bytes never panic any parser or state machine, and a tampered message
//! never authenticates.

use elephant_auth::{
    ChannelBindingPolicy, ClientChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramClient,
    ScramSecret, ScramServer, StoredPassword, verify_cleartext, verify_md5,
};
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

const TEST_ITERATIONS: u32 = 16;
const CERTIFICATE_HASH: &[u8] = &[0xab; 32];

fn secret() -> ScramSecret {
    ScramSecret::from_password("pw", b"salt", TEST_ITERATIONS).unwrap()
}

fn policy(choice: u8) -> ChannelBindingPolicy {
    match choice % 3 {
        0 => ChannelBindingPolicy::NotOffered,
        1 => ChannelBindingPolicy::Offered {
            tls_server_end_point: CERTIFICATE_HASH.to_vec(),
        },
        _ => ChannelBindingPolicy::Required {
            tls_server_end_point: CERTIFICATE_HASH.to_vec(),
        },
    }
}

fn new_server(policy_choice: u8) -> ScramServer {
    ScramServer::new(
        secret(),
        &mut ChaCha8Rng::seed_from_u64(0),
        policy(policy_choice),
    )
}

/// Mostly SCRAM-looking bytes, so the fuzzing reaches past the first check.
fn scram_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "[nyp=a-z,=A-Z0-9+/~\\-]{0,120}".prop_map(String::into_bytes),
        "(n|y|p=tls-server-end-point|p=x),(a=x)?,(m=x,)?n=[a-z]*,r=[!-~]{0,30}(,[a-z]=[a-z]*)*"
            .prop_map(String::into_bytes),
    ]
}

fn client_final_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "c=(biws|eSws|[A-Za-z0-9+/=]{0,80}),r=[!-~]{0,60}(,[a-z]=[a-z]*)*(,p=[A-Za-z0-9+/=]{0,60})?"
            .prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn arbitrary_client_first_never_panics(
        policy_choice in any::<u8>(),
        plus in any::<bool>(),
        message in scram_like_bytes(),
    ) {
        let mechanism = if plus { SCRAM_SHA_256_PLUS } else { SCRAM_SHA_256 };
        let mut server = new_server(policy_choice);
        let _ = server.handle_client_first(mechanism, &message);
        prop_assert!(!server.is_authenticated());
    }

    #[test]
    fn arbitrary_client_final_never_panics_nor_authenticates(
        policy_choice in any::<u8>(),
        message in client_final_like_bytes(),
    ) {
        let mut server = new_server(policy_choice);
        let mechanism = server.mechanisms()[0];
        let client_first: &[u8] = if mechanism == SCRAM_SHA_256_PLUS {
            b"p=tls-server-end-point,,n=,r=fuzz"
        } else {
            b"n,,n=,r=fuzz"
        };
        server.handle_client_first(mechanism, client_first).unwrap();
        prop_assert!(server.handle_client_final(&message).is_err());
        prop_assert!(!server.is_authenticated());
    }

    #[test]
    fn any_single_byte_change_to_client_final_fails(
        index in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let mut server = new_server(0);
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        let client_first = client.client_first().unwrap();
        let server_first = server.handle_client_first(SCRAM_SHA_256, &client_first).unwrap();
        let mut client_final = client.handle_server_first(&server_first).unwrap();
        let position = index.index(client_final.len());
        prop_assume!(client_final[position] != replacement);
        client_final[position] = replacement;
        prop_assert!(server.handle_client_final(&client_final).is_err());
    }

    #[test]
    fn arbitrary_server_messages_never_panic_the_client(
        server_first in scram_like_bytes(),
        server_final in scram_like_bytes(),
    ) {
        let mut client = ScramClient::new(b"pw", ClientChannelBinding::NotSupported);
        client.client_first().unwrap();
        let _ = client.handle_server_first(&server_first);
        prop_assert!(client.handle_server_final(&server_final).is_err());
    }

    #[test]
    fn arbitrary_stored_passwords_never_panic(text in ".{0,200}", tail in "[A-Za-z0-9+/=:$]{0,120}") {
        let _ = StoredPassword::parse(&text);
        let _ = ScramSecret::parse(&text);
        let _ = ScramSecret::parse(&format!("SCRAM-SHA-256${tail}"));
    }

    #[test]
    fn arbitrary_password_messages_never_panic(received in proptest::collection::vec(any::<u8>(), 0..64)) {
        let forms = [
            StoredPassword::Scram(secret()),
            StoredPassword::Md5(elephant_auth::md5_stored("alice", "pw")),
            StoredPassword::Md5("md5short".to_owned()),
            StoredPassword::Plain("pw".to_owned()),
        ];
        for stored in &forms {
            let _ = verify_cleartext(stored, "alice", &received);
            let _ = verify_md5(stored, "alice", [1, 2, 3, 4], &received);
        }
    }
}
