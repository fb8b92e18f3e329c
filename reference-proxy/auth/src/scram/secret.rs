//! The SCRAM secret (verifier) a server stores instead of the password.
//!
//! Postgres keeps it in `pg_authid.rolpassword` as
//! `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`. The
//! proxy reads secrets in that format so they can be copied from a real server, and writes
//! it so fixtures can be loaded into one. StoredKey and ServerKey are password-equivalent
//! for anyone who can watch an exchange, so they are redacted from `Debug` and compared in
//! constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand_core::RngCore;
use subtle::ConstantTimeEq;

use super::keys::{self, KEY_LENGTH, Key};
use crate::SqlState;

/// The text every stored SCRAM-SHA-256 secret starts with, including the `$` separator.
pub const SCRAM_SECRET_PREFIX: &str = "SCRAM-SHA-256$";
/// Postgres's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The salt length Postgres draws for new secrets, in bytes.
pub const DEFAULT_SALT_LENGTH: usize = 16;
/// The smallest iteration count accepted. Postgres accepts any positive count in a stored
/// secret, so a stricter floor would lock out roles a real server admits.
pub const MINIMUM_ITERATIONS: u32 = 1;
/// The largest iteration count accepted: Postgres stores it in an `int`.
pub const MAXIMUM_ITERATIONS: u32 = i32::MAX.unsigned_abs();
/// The longest stored secret accepted, in bytes. A default secret is about 130 bytes; the
/// bound leaves room for long salts while keeping parsing cheap.
pub const MAXIMUM_SECRET_LENGTH: usize = 1024;

const SECTION_SEPARATOR: char = '$';
const FIELD_SEPARATOR: char = ':';
const REDACTED: &str = "<redacted>";

/// A stored password or SCRAM secret that cannot be used. Messages describe the shape that
/// was expected and never quote the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The stored password is the empty string.
    #[error("the stored password is empty; set a password for the role")]
    Empty,
    /// The stored password exceeds [`MAXIMUM_SECRET_LENGTH`].
    #[error(
        "the stored password is {length} bytes long, more than the {MAXIMUM_SECRET_LENGTH} bytes accepted"
    )]
    TooLong {
        /// Its length in bytes.
        length: usize,
    },
    /// The text starts like a SCRAM secret but does not follow the format.
    #[error(
        "malformed SCRAM secret: {problem}; expected SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"
    )]
    Malformed {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The iteration count is outside [`MINIMUM_ITERATIONS`]..=[`MAXIMUM_ITERATIONS`].
    #[error(
        "SCRAM iteration count {iterations} is outside the accepted range {MINIMUM_ITERATIONS}..={MAXIMUM_ITERATIONS}"
    )]
    IterationsOutOfRange {
        /// The rejected count (saturated at `u64::MAX` when it does not even fit).
        iterations: u64,
    },
    /// The salt is empty.
    #[error("the SCRAM salt is empty; a secret needs a random salt, e.g. 16 bytes")]
    EmptySalt,
}

impl SecretError {
    /// The SQLSTATE to send if this error ends an authentication: the role's configuration,
    /// not the client, is at fault.
    pub fn sqlstate(&self) -> SqlState {
        SqlState::InvalidAuthorizationSpecification
    }
}

/// A SCRAM-SHA-256 secret: what the server needs to verify a client and prove itself,
/// without knowing the password.
#[derive(Clone)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl ScramSecret {
    /// Builds a secret from its parts, checking the iteration count and salt.
    pub fn from_parts(
        iterations: u32,
        salt: Vec<u8>,
        stored_key: [u8; KEY_LENGTH],
        server_key: [u8; KEY_LENGTH],
    ) -> Result<Self, SecretError> {
        check_iterations(u64::from(iterations))?;
        if salt.is_empty() {
            return Err(SecretError::EmptySalt);
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Derives the secret of `password` with the given salt and iteration count, exactly as
    /// Postgres's `CREATE ROLE ... PASSWORD` does (SASLprep, falling back to the raw password
    /// when SASLprep fails).
    pub fn from_password(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SecretError> {
        Self::from_password_bytes(password.as_bytes(), salt, iterations)
    }

    /// Like [`ScramSecret::from_password`] for a password that may not be UTF-8 (Postgres
    /// passwords are byte strings).
    pub fn from_password_bytes(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SecretError> {
        check_iterations(u64::from(iterations))?;
        if salt.is_empty() {
            return Err(SecretError::EmptySalt);
        }
        let salted_password = keys::salted_password(password, salt, iterations);
        Ok(ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys::stored_key(&keys::client_key(&salted_password)),
            server_key: keys::server_key(&salted_password),
        })
    }

    /// Derives the secret of `password` with a fresh [`DEFAULT_SALT_LENGTH`]-byte salt drawn
    /// from `rng`.
    pub fn generate(
        password: &str,
        rng: &mut dyn RngCore,
        iterations: u32,
    ) -> Result<Self, SecretError> {
        let mut salt = [0u8; DEFAULT_SALT_LENGTH];
        rng.fill_bytes(&mut salt);
        Self::from_password(password, &salt, iterations)
    }

    /// Parses Postgres's stored format
    /// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if text.len() > MAXIMUM_SECRET_LENGTH {
            return Err(SecretError::TooLong { length: text.len() });
        }
        let body = text
            .strip_prefix(SCRAM_SECRET_PREFIX)
            .ok_or(SecretError::Malformed {
                problem: "it does not start with \"SCRAM-SHA-256$\"",
            })?;
        let (iterations_and_salt, keys) =
            body.split_once(SECTION_SEPARATOR)
                .ok_or(SecretError::Malformed {
                    problem: "the \"$\" between salt and keys is missing",
                })?;
        let (iterations, salt) =
            iterations_and_salt
                .split_once(FIELD_SEPARATOR)
                .ok_or(SecretError::Malformed {
                    problem: "the \":\" between iteration count and salt is missing",
                })?;
        let (stored_key, server_key) =
            keys.split_once(FIELD_SEPARATOR)
                .ok_or(SecretError::Malformed {
                    problem: "the \":\" between StoredKey and ServerKey is missing",
                })?;
        let salt = STANDARD.decode(salt).map_err(|_| SecretError::Malformed {
            problem: "the salt is not valid base64",
        })?;
        Self::from_parts(
            parse_iterations(iterations)?,
            salt,
            decode_key(stored_key, "StoredKey is not base64 of 32 bytes")?,
            decode_key(server_key, "ServerKey is not base64 of 32 bytes")?,
        )
    }

    /// Formats the secret the way Postgres stores it (the inverse of [`ScramSecret::parse`]).
    pub fn to_postgres_string(&self) -> String {
        format!(
            "{SCRAM_SECRET_PREFIX}{}{FIELD_SEPARATOR}{}{SECTION_SEPARATOR}{}{FIELD_SEPARATOR}{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key),
        )
    }

    /// Whether `password` is the password this secret was derived from. Compares ServerKey
    /// in constant time, as Postgres's `scram_verify_plain_password` does.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let salted_password = keys::salted_password(password, &self.salt, self.iterations);
        keys::server_key(&salted_password)
            .ct_eq(&self.server_key)
            .into()
    }

    /// The PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt (public: it is sent to every client in the server-first-message).
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// `H(ClientKey)`, against which client proofs are checked. Secret.
    pub fn stored_key(&self) -> &[u8; KEY_LENGTH] {
        &self.stored_key
    }

    /// `HMAC(SaltedPassword, "Server Key")`, with which the server signs. Secret.
    pub fn server_key(&self) -> &[u8; KEY_LENGTH] {
        &self.server_key
    }

    /// A secret for a role that does not exist or has no usable SCRAM secret, following
    /// Postgres's `scram_mock_salt`: the salt is derived from the user name and a per-server
    /// key, so repeated attempts see a stable salt and cannot tell the role is missing.
    pub(crate) fn mock(username: &str, mock_key: &[u8]) -> Self {
        let digest = keys::sha256(&[username.as_bytes(), mock_key].concat());
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: digest.iter().copied().take(DEFAULT_SALT_LENGTH).collect(),
            stored_key: [0; KEY_LENGTH],
            server_key: [0; KEY_LENGTH],
        }
    }
}

impl PartialEq for ScramSecret {
    /// Constant time in the keys.
    fn eq(&self, other: &Self) -> bool {
        let same_keys =
            self.stored_key.ct_eq(&other.stored_key) & self.server_key.ct_eq(&other.server_key);
        bool::from(same_keys) && self.iterations == other.iterations && self.salt == other.salt
    }
}

impl Eq for ScramSecret {}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("stored_key", &REDACTED)
            .field("server_key", &REDACTED)
            .finish()
    }
}

fn check_iterations(iterations: u64) -> Result<u32, SecretError> {
    u32::try_from(iterations)
        .ok()
        .filter(|count| (MINIMUM_ITERATIONS..=MAXIMUM_ITERATIONS).contains(count))
        .ok_or(SecretError::IterationsOutOfRange { iterations })
}

fn parse_iterations(text: &str) -> Result<u32, SecretError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(SecretError::Malformed {
            problem: "the iteration count is not a decimal number",
        });
    }
    // Only digits remain, so parsing can fail only by overflow.
    let iterations = text.parse::<u64>().unwrap_or(u64::MAX);
    check_iterations(iterations)
}

fn decode_key(text: &str, problem: &'static str) -> Result<Key, SecretError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| Key::try_from(bytes).ok())
        .ok_or(SecretError::Malformed { problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From postgres-protocol's own test: password "secret", salt 1..=16, 4096 iterations.
    const SECRET_OF_SECRET: &str = "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
    const SALT_ONE_TO_SIXTEEN: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    #[test]
    fn derives_the_same_secret_as_postgres_protocol() {
        let secret = ScramSecret::from_password("secret", &SALT_ONE_TO_SIXTEEN, 4096).unwrap();
        assert_eq!(secret.to_postgres_string(), SECRET_OF_SECRET);
    }

    #[test]
    fn parse_round_trips_and_verifies_the_password() {
        let secret = ScramSecret::parse(SECRET_OF_SECRET).unwrap();
        assert_eq!(secret.iterations(), 4096);
        assert_eq!(secret.salt(), SALT_ONE_TO_SIXTEEN);
        assert_eq!(secret.to_postgres_string(), SECRET_OF_SECRET);
        assert!(secret.verify_password(b"secret"));
        assert!(!secret.verify_password(b"Secret"));
        assert_eq!(
            secret,
            ScramSecret::from_password("secret", &SALT_ONE_TO_SIXTEEN, 4096).unwrap()
        );
    }

    #[test]
    fn parses_a_secret_from_postgres_protocols_random_salt_generator() {
        let text = postgres_protocol::password::scram_sha_256(b"hunter2");
        let secret = ScramSecret::parse(&text).unwrap();
        assert_eq!(secret.to_postgres_string(), text);
        assert!(secret.verify_password(b"hunter2"));
    }

    #[test]
    fn non_ascii_passwords_are_saslprepped() {
        // U+00A0 NO-BREAK SPACE is mapped to a space by SASLprep.
        let prepped = ScramSecret::from_password("pass\u{a0}word", b"salt", 16).unwrap();
        let plain = ScramSecret::from_password("pass word", b"salt", 16).unwrap();
        assert_eq!(prepped, plain);
    }

    #[test]
    fn generate_draws_the_salt_from_the_rng() {
        use rand_chacha::ChaCha8Rng;
        use rand_core::SeedableRng;
        let first = ScramSecret::generate("pw", &mut ChaCha8Rng::seed_from_u64(1), 8).unwrap();
        let again = ScramSecret::generate("pw", &mut ChaCha8Rng::seed_from_u64(1), 8).unwrap();
        let other = ScramSecret::generate("pw", &mut ChaCha8Rng::seed_from_u64(2), 8).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.salt().len(), DEFAULT_SALT_LENGTH);
        assert_ne!(first.salt(), other.salt());
        assert!(first.verify_password(b"pw"));
    }

    #[test]
    fn rejects_malformed_secrets() {
        let cases = [
            "",
            "md5abc",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096",
            "SCRAM-SHA-256$4096:AQID",
            "SCRAM-SHA-256$4096:AQID$abc",
            "SCRAM-SHA-256$x:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$+4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:!!!$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$AQID:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=",
            "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=$",
        ];
        for case in cases {
            assert!(
                matches!(ScramSecret::parse(case), Err(SecretError::Malformed { .. })),
                "{case}"
            );
        }
    }

    #[test]
    fn rejects_out_of_range_iterations_and_empty_salt() {
        let keys = "$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA=";
        let zero = format!("SCRAM-SHA-256$0:AQIDBAUGBwgJCgsMDQ4PEA=={keys}");
        assert_eq!(
            ScramSecret::parse(&zero),
            Err(SecretError::IterationsOutOfRange { iterations: 0 })
        );
        let huge = format!("SCRAM-SHA-256$99999999999999999999999:AQIDBAUGBwgJCgsMDQ4PEA=={keys}");
        assert_eq!(
            ScramSecret::parse(&huge),
            Err(SecretError::IterationsOutOfRange {
                iterations: u64::MAX
            })
        );
        let above_int = format!("SCRAM-SHA-256$2147483648:AQIDBAUGBwgJCgsMDQ4PEA=={keys}");
        assert!(ScramSecret::parse(&above_int).is_err());
        let no_salt = format!("SCRAM-SHA-256$4096:{keys}");
        assert_eq!(ScramSecret::parse(&no_salt), Err(SecretError::EmptySalt));
        assert_eq!(
            ScramSecret::from_password("pw", b"", 4096),
            Err(SecretError::EmptySalt)
        );
        assert!(ScramSecret::from_password("pw", b"salt", 0).is_err());
        let long = "S".repeat(MAXIMUM_SECRET_LENGTH + 1);
        assert!(matches!(
            ScramSecret::parse(&long),
            Err(SecretError::TooLong { .. })
        ));
    }

    #[test]
    fn debug_redacts_the_keys() {
        let secret = ScramSecret::parse(SECRET_OF_SECRET).unwrap();
        let debug = format!("{secret:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("8rrDg00O"));
        assert!(!debug.contains("05L1f"));
        assert!(debug.contains("4096"));
    }

    #[test]
    fn mock_secrets_are_stable_per_user() {
        let first = ScramSecret::mock("alice", b"cluster key");
        assert_eq!(first, ScramSecret::mock("alice", b"cluster key"));
        assert_ne!(
            first.salt(),
            ScramSecret::mock("bob", b"cluster key").salt()
        );
        assert_eq!(first.salt().len(), DEFAULT_SALT_LENGTH);
    }
}
