//! The legacy md5 password exchange (`AuthenticationMD5Password`).
//!
//! Postgres stores `"md5" + hex(md5(password || user))` and challenges the client with a
//! 4-byte salt; the client answers `"md5" + hex(md5(hex(md5(password || user)) || salt))`.
//! The stored hash is therefore password-equivalent: whoever holds it can log in. It is
//! deprecated in Postgres 18, but still common, so the proxy must speak it.

use ::md5::{Digest, Md5};
use rand_core::RngCore;
use subtle::ConstantTimeEq;

use crate::AuthError;
use crate::password::{StoredPassword, check_password_message};

/// The prefix of every md5 hash and md5 response.
pub const MD5_PREFIX: &str = "md5";
/// The number of hexadecimal digits after the prefix.
pub const MD5_HEX_DIGITS: usize = 32;
/// The length of a stored md5 hash or an md5 response: prefix plus hex digits.
pub const MD5_HASH_LENGTH: usize = MD5_PREFIX.len() + MD5_HEX_DIGITS;
/// The length of the salt sent in `AuthenticationMD5Password`.
pub const MD5_SALT_LENGTH: usize = 4;

/// The random salt of one md5 challenge. Not secret: it travels in clear text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Md5Salt([u8; MD5_SALT_LENGTH]);

impl Md5Salt {
    /// Draws a fresh salt from the caller's generator.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut bytes = [0u8; MD5_SALT_LENGTH];
        rng.fill_bytes(&mut bytes);
        Md5Salt(bytes)
    }

    /// The salt bytes, as sent in `AuthenticationMD5Password`.
    pub fn bytes(self) -> [u8; MD5_SALT_LENGTH] {
        self.0
    }
}

impl From<[u8; MD5_SALT_LENGTH]> for Md5Salt {
    fn from(bytes: [u8; MD5_SALT_LENGTH]) -> Self {
        Md5Salt(bytes)
    }
}

impl From<Md5Salt> for [u8; MD5_SALT_LENGTH] {
    fn from(salt: Md5Salt) -> Self {
        salt.0
    }
}

/// What Postgres stores for `password` with `password_encryption = md5`:
/// `"md5" + hex(md5(password || user))`.
pub fn md5_stored(user: &str, password: &str) -> String {
    postgres_protocol::password::md5(password.as_bytes(), user)
}

/// What a client sends in its `PasswordMessage` in answer to a challenge with `salt`.
pub fn md5_response(user: &str, password: &str, salt: [u8; MD5_SALT_LENGTH]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

/// Whether `text` has the shape of an md5 hash: `md5` and 32 lowercase hex digits, exactly
/// the test Postgres's `get_password_type` applies.
pub fn is_md5_hash(text: &[u8]) -> bool {
    text.len() == MD5_HASH_LENGTH
        && text.starts_with(MD5_PREFIX.as_bytes())
        && text
            .iter()
            .skip(MD5_PREFIX.len())
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a client's md5 response (the `PasswordMessage` body without its trailing NUL)
/// against the role's stored password, in constant time.
///
/// Works with an md5-hashed or plain stored password. A SCRAM secret cannot answer an md5
/// challenge; Postgres uses SCRAM for such roles instead (see
/// [`StoredPassword::exchange_for`]).
pub fn verify_md5(
    stored: &StoredPassword,
    user: &str,
    salt: [u8; MD5_SALT_LENGTH],
    client_response: &[u8],
) -> Result<(), AuthError> {
    check_password_message(client_response)?;
    if !is_md5_hash(client_response) {
        return Err(AuthError::MalformedMd5Response);
    }
    let expected = match stored {
        StoredPassword::Md5(hash) => salted_response(hash, salt),
        StoredPassword::Plain(password) => md5_response(user, password, salt),
        StoredPassword::Scram(_) => {
            return Err(AuthError::Md5NotPossibleWithScramSecret {
                user: user.to_owned(),
            });
        }
    };
    if bool::from(expected.as_bytes().ct_eq(client_response)) {
        Ok(())
    } else {
        Err(AuthError::PasswordMismatch {
            user: user.to_owned(),
        })
    }
}

/// `"md5" + hex(md5(password || user))` for a password that may not be UTF-8.
pub(crate) fn md5_stored_bytes(user: &str, password: &[u8]) -> String {
    format!("{MD5_PREFIX}{}", md5_hex(&[password, user.as_bytes()]))
}

/// The response expected for a stored hash: `"md5" + hex(md5(<hex of stored hash> || salt))`.
fn salted_response(stored_hash: &str, salt: [u8; MD5_SALT_LENGTH]) -> String {
    let hex = stored_hash.get(MD5_PREFIX.len()..).unwrap_or_default();
    format!("{MD5_PREFIX}{}", md5_hex(&[hex.as_bytes(), &salt]))
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: [u8; 4] = [0x2a, 0x3d, 0x8f, 0xe0];

    #[test]
    fn stored_hash_matches_postgres() {
        // postgres-protocol's test vector, and `SELECT 'md5' || md5('secret' || 'foo')`.
        assert_eq!(
            md5_stored("foo", "secret"),
            "md54ab2c5d00339c4b2a4e921d2dc4edec7"
        );
        assert_eq!(
            md5_stored_bytes("foo", b"secret"),
            "md54ab2c5d00339c4b2a4e921d2dc4edec7"
        );
    }

    #[test]
    fn response_matches_postgres_protocol_vector() {
        assert_eq!(
            md5_response("md5_user", "password", SALT),
            "md562af4dd09bbb41884907a838a3233294"
        );
        let stored = md5_stored("md5_user", "password");
        assert_eq!(
            salted_response(&stored, SALT),
            "md562af4dd09bbb41884907a838a3233294"
        );
    }

    #[test]
    fn verifies_against_md5_and_plain_stored_passwords() {
        let response = md5_response("alice", "pw", SALT);
        let hashed = StoredPassword::Md5(md5_stored("alice", "pw"));
        let plain = StoredPassword::Plain("pw".to_owned());
        assert!(verify_md5(&hashed, "alice", SALT, response.as_bytes()).is_ok());
        assert!(verify_md5(&plain, "alice", SALT, response.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_wrong_responses() {
        let hashed = StoredPassword::Md5(md5_stored("alice", "pw"));
        let wrong_password = md5_response("alice", "nope", SALT);
        let wrong_salt = md5_response("alice", "pw", [0; 4]);
        let wrong_user = md5_response("bob", "pw", SALT);
        for response in [wrong_password, wrong_salt, wrong_user] {
            assert!(matches!(
                verify_md5(&hashed, "alice", SALT, response.as_bytes()),
                Err(AuthError::PasswordMismatch { .. })
            ));
        }
    }

    #[test]
    fn rejects_malformed_responses() {
        let hashed = StoredPassword::Md5(md5_stored("alice", "pw"));
        let upper = md5_response("alice", "pw", SALT).to_uppercase();
        for response in [b"pw".as_slice(), b"md5", upper.as_bytes()] {
            assert!(matches!(
                verify_md5(&hashed, "alice", SALT, response),
                Err(AuthError::MalformedMd5Response)
            ));
        }
        assert!(matches!(
            verify_md5(&hashed, "alice", SALT, b""),
            Err(AuthError::EmptyPassword)
        ));
    }

    #[test]
    fn scram_secrets_cannot_answer_md5() {
        let secret = crate::ScramSecret::from_password("pw", b"salt", 16).unwrap();
        let response = md5_response("alice", "pw", SALT);
        let error = verify_md5(
            &StoredPassword::Scram(secret),
            "alice",
            SALT,
            response.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(
            error,
            AuthError::Md5NotPossibleWithScramSecret { .. }
        ));
        assert_eq!(
            error.sqlstate(),
            crate::SqlState::InvalidAuthorizationSpecification
        );
    }

    #[test]
    fn salts_come_from_the_rng() {
        use rand_chacha::ChaCha8Rng;
        use rand_core::SeedableRng;
        let first = Md5Salt::generate(&mut ChaCha8Rng::seed_from_u64(7));
        let again = Md5Salt::generate(&mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(first, again);
        assert_eq!(<[u8; 4]>::from(first), first.bytes());
    }

    #[test]
    fn recognises_md5_hashes() {
        assert!(is_md5_hash(b"md54ab2c5d00339c4b2a4e921d2dc4edec7"));
        assert!(!is_md5_hash(b"md54AB2c5d00339c4b2a4e921d2dc4edec7"));
        assert!(!is_md5_hash(b"md54ab2c5d00339c4b2a4e921d2dc4edec"));
        assert!(!is_md5_hash(b"md5rocks"));
    }
}
