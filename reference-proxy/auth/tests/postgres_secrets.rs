//! Secrets produced by a real Postgres (15.18, `CREATE ROLE ... PASSWORD`), to check that
//! parsing, derivation and SASLprep agree with the server byte for byte.

use elephant_auth::{
    ChannelBindingPolicy, ClientChannelBinding, SCRAM_SHA_256, ScramClient, ScramSecret,
    ScramServer, StoredPassword, md5_stored, verify_cleartext,
};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// `CREATE ROLE r1 PASSWORD 'pencil'` with `password_encryption = 'scram-sha-256'`.
const PENCIL: &str = "SCRAM-SHA-256$4096:hlQ8VOPFObISMZd2AEF1vQ==$o4Xp2G6yyjebyJALu/gTSoO8G8XSYideOSWXVzNh+/w=:sn3yhlKsgABOXq1rXvAN8p/aKcAjXzlZCEk6GCWc7Ys=";
/// `CREATE ROLE r2 PASSWORD E'pass\u00a0word'`: a no-break space, mapped to a space by
/// SASLprep.
const NO_BREAK_SPACE: &str = "SCRAM-SHA-256$4096:JAeP/IbUGrzUOL8wSroTEA==$iu7wzgm4ECSBC8bZmMu70EKUaBZqKDDzgkJ3Hl/kJlk=:T1RE7lymj0zD53SKsTcZlVvL+yHtnUlQ+S514SGHkxU=";
/// `CREATE ROLE r3 PASSWORD E'\uff46\uff55\uff4c\uff4c'`: fullwidth "full", NFKC-normalised
/// to ASCII by SASLprep.
const FULLWIDTH: &str = "SCRAM-SHA-256$4096:Rd7XnDQ69r86z8kXDLCiMw==$DBfoqaA90PVa0tuE5vUJDTsG/S3Dq5kCN6HjTuINp6A=:Tt5fsqupaWhxnjEzLIEy9o0SHumhJSR16r5V5AwuBtI=";
/// `CREATE ROLE r4 PASSWORD 'pencil'` with `password_encryption = 'md5'`.
const MD5_PENCIL: &str = "md5c043aaf65f9e1e388121dd6662a7b111";

#[test]
fn parse_round_trips_a_postgres_secret() {
    let secret = ScramSecret::parse(PENCIL).unwrap();
    assert_eq!(secret.iterations(), 4096);
    assert_eq!(secret.to_postgres_string(), PENCIL);
}

#[test]
fn derivation_matches_postgres() {
    let parsed = ScramSecret::parse(PENCIL).unwrap();
    let derived = ScramSecret::from_password("pencil", parsed.salt(), 4096).unwrap();
    assert_eq!(derived.to_postgres_string(), PENCIL);
}

#[test]
fn saslprep_matches_postgres() {
    let no_break_space = ScramSecret::parse(NO_BREAK_SPACE).unwrap();
    assert!(no_break_space.verify_password("pass\u{a0}word".as_bytes()));
    assert!(no_break_space.verify_password(b"pass word"));
    assert!(!no_break_space.verify_password(b"password"));

    let fullwidth = ScramSecret::parse(FULLWIDTH).unwrap();
    assert!(fullwidth.verify_password("\u{ff46}\u{ff55}\u{ff4c}\u{ff4c}".as_bytes()));
    assert!(fullwidth.verify_password(b"full"));
}

#[test]
fn md5_hash_matches_postgres() {
    assert_eq!(md5_stored("r4", "pencil"), MD5_PENCIL);
    let stored = StoredPassword::parse(MD5_PENCIL).unwrap();
    assert!(verify_cleartext(&stored, "r4", b"pencil").is_ok());
}

#[test]
fn exchange_against_a_postgres_secret() {
    let secret = ScramSecret::parse(PENCIL).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut server = ScramServer::new(secret, &mut rng, ChannelBindingPolicy::NotOffered);
    let mut client = ScramClient::new(b"pencil", ClientChannelBinding::NotSupported);
    let client_first = client.client_first().unwrap();
    let server_first = server
        .handle_client_first(SCRAM_SHA_256, &client_first)
        .unwrap();
    let client_final = client.handle_server_first(&server_first).unwrap();
    let server_final = server.handle_client_final(&client_final).unwrap();
    client.handle_server_final(&server_final).unwrap();
    assert!(server.is_authenticated() && client.is_authenticated());
}
