//! A role's stored password, and what each authentication method can do with it.
//!
//! Postgres keeps one string per role in `pg_authid.rolpassword`: a SCRAM secret, an md5
//! hash, or (in old clusters, and in proxy configuration files) the plain password. Which
//! exchange a connection runs depends on both the configured method and that string;
//! [`StoredPassword::exchange_for`] encodes Postgres's rules so the proxy does not have to.
//!
//! The stored string is password-equivalent in every form, so `Debug` never shows it.

use std::fmt;

use rand_core::RngCore;
use subtle::ConstantTimeEq;

use crate::AuthError;
use crate::md5::{is_md5_hash, md5_stored_bytes};
use crate::scram::{DEFAULT_ITERATIONS, MAXIMUM_SECRET_LENGTH, SCRAM_SECRET_PREFIX};
use crate::scram::{ScramSecret, SecretError};

const REDACTED: &str = "<redacted>";

/// A role's stored password, as in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// `SCRAM-SHA-256$...`: works with SCRAM and cleartext.
    Scram(ScramSecret),
    /// `md5` followed by 32 lowercase hex digits: works with md5 and cleartext.
    Md5(String),
    /// Anything else is the password itself: works with every method.
    Plain(String),
}

/// The password authentication method configured for a connection (the `pg_hba.conf`
/// method names `password`, `md5` and `scram-sha-256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `password`: the client sends its password in clear text.
    Cleartext,
    /// `md5`: md5 challenge-response, or SCRAM if the role has a SCRAM secret.
    Md5,
    /// `scram-sha-256`: SCRAM only.
    ScramSha256,
}

/// The exchange to run with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordExchange {
    /// Send `AuthenticationCleartextPassword`; check with [`verify_cleartext`].
    Cleartext,
    /// Send `AuthenticationMD5Password`; check with [`crate::verify_md5`].
    Md5,
    /// Send `AuthenticationSASL`; run a [`crate::ScramServer`] with
    /// [`StoredPassword::scram_secret`], or a mock one if that fails.
    Scram,
}

impl StoredPassword {
    /// Classifies a `rolpassword` string the way Postgres's `get_password_type` does, except
    /// that text starting with `SCRAM-SHA-256$` must be a valid secret (Postgres would
    /// silently treat a broken one as a plain password; here it is an error to fix).
    pub fn parse(rolpassword: &str) -> Result<Self, SecretError> {
        if rolpassword.is_empty() {
            return Err(SecretError::Empty);
        }
        if rolpassword.len() > MAXIMUM_SECRET_LENGTH {
            return Err(SecretError::TooLong {
                length: rolpassword.len(),
            });
        }
        if rolpassword.starts_with(SCRAM_SECRET_PREFIX) {
            return ScramSecret::parse(rolpassword).map(StoredPassword::Scram);
        }
        if is_md5_hash(rolpassword.as_bytes()) {
            return Ok(StoredPassword::Md5(rolpassword.to_owned()));
        }
        Ok(StoredPassword::Plain(rolpassword.to_owned()))
    }

    /// The `rolpassword` string (the inverse of [`StoredPassword::parse`]). Secret.
    pub fn to_postgres_string(&self) -> String {
        match self {
            StoredPassword::Scram(secret) => secret.to_postgres_string(),
            StoredPassword::Md5(hash) => hash.clone(),
            StoredPassword::Plain(password) => password.clone(),
        }
    }

    /// Which exchange to run for `method`, by Postgres's rules:
    /// - cleartext works with any stored form (the received password is hashed to match);
    /// - md5 runs md5 for an md5 hash or plain password, and falls back to SCRAM for a SCRAM
    ///   secret (no md5 hash can be derived from one);
    /// - SCRAM always runs SCRAM; for an md5 hash it is a mock exchange that fails, like
    ///   Postgres's.
    pub fn exchange_for(&self, method: AuthMethod) -> PasswordExchange {
        match (method, self) {
            (AuthMethod::Cleartext, _) => PasswordExchange::Cleartext,
            (AuthMethod::Md5, StoredPassword::Md5(_) | StoredPassword::Plain(_)) => {
                PasswordExchange::Md5
            }
            (AuthMethod::Md5, StoredPassword::Scram(_)) | (AuthMethod::ScramSha256, _) => {
                PasswordExchange::Scram
            }
        }
    }

    /// The SCRAM secret to run an exchange against.
    ///
    /// For a plain password a secret is derived on the fly with a salt drawn from `rng` and
    /// [`DEFAULT_ITERATIONS`] (what Postgres 10 did for plain passwords). An md5 hash has no
    /// SCRAM secret: the caller should run [`crate::ScramServer::new_mock`], which fails the
    /// way a wrong password does, as Postgres does.
    pub fn scram_secret(&self, rng: &mut dyn RngCore) -> Result<ScramSecret, AuthError> {
        match self {
            StoredPassword::Scram(secret) => Ok(secret.clone()),
            StoredPassword::Plain(password) => {
                Ok(ScramSecret::generate(password, rng, DEFAULT_ITERATIONS)?)
            }
            StoredPassword::Md5(_) => Err(AuthError::ScramNotPossibleWithMd5Hash),
        }
    }
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredPassword::Scram(secret) => formatter.debug_tuple("Scram").field(secret).finish(),
            StoredPassword::Md5(_) => formatter.debug_tuple("Md5").field(&REDACTED).finish(),
            StoredPassword::Plain(_) => formatter.debug_tuple("Plain").field(&REDACTED).finish(),
        }
    }
}

/// Checks a cleartext password (the `PasswordMessage` body without its trailing NUL)
/// against the role's stored password, in constant time. A SCRAM secret is checked by
/// deriving the ServerKey from the received password, an md5 hash by hashing it with the
/// user name, as Postgres does.
pub fn verify_cleartext(
    stored: &StoredPassword,
    user: &str,
    received: &[u8],
) -> Result<(), AuthError> {
    check_password_message(received)?;
    let matches = match stored {
        StoredPassword::Scram(secret) => secret.verify_password(received),
        StoredPassword::Md5(hash) => {
            let computed = md5_stored_bytes(user, received);
            computed.as_bytes().ct_eq(hash.as_bytes()).into()
        }
        StoredPassword::Plain(password) => password.as_bytes().ct_eq(received).into(),
    };
    if matches {
        Ok(())
    } else {
        Err(AuthError::PasswordMismatch {
            user: user.to_owned(),
        })
    }
}

/// The checks Postgres's `recv_password_packet` applies to any password message: not empty,
/// no NUL before the end.
pub(crate) fn check_password_message(received: &[u8]) -> Result<(), AuthError> {
    if received.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    if received.contains(&0) {
        return Err(AuthError::PasswordContainsNul);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::md5::md5_stored;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn scram(password: &str) -> StoredPassword {
        StoredPassword::Scram(ScramSecret::from_password(password, b"salty", 64).unwrap())
    }

    #[test]
    fn parses_each_form() {
        let secret = scram("pw");
        assert_eq!(
            StoredPassword::parse(&secret.to_postgres_string()).unwrap(),
            secret
        );
        let hash = md5_stored("alice", "pw");
        assert_eq!(
            StoredPassword::parse(&hash).unwrap(),
            StoredPassword::Md5(hash.clone())
        );
        assert_eq!(
            StoredPassword::parse("md5rocks").unwrap(),
            StoredPassword::Plain("md5rocks".to_owned())
        );
        assert_eq!(StoredPassword::parse(""), Err(SecretError::Empty));
        assert!(matches!(
            StoredPassword::parse("SCRAM-SHA-256$broken"),
            Err(SecretError::Malformed { .. })
        ));
        for stored in [
            secret,
            StoredPassword::Md5(hash),
            StoredPassword::Plain("x".into()),
        ] {
            assert_eq!(
                StoredPassword::parse(&stored.to_postgres_string()).unwrap(),
                stored
            );
        }
    }

    #[test]
    fn exchange_rules_follow_postgres() {
        let secret = scram("pw");
        let hash = StoredPassword::Md5(md5_stored("alice", "pw"));
        let plain = StoredPassword::Plain("pw".to_owned());
        for stored in [&secret, &hash, &plain] {
            assert_eq!(
                stored.exchange_for(AuthMethod::Cleartext),
                PasswordExchange::Cleartext
            );
            assert_eq!(
                stored.exchange_for(AuthMethod::ScramSha256),
                PasswordExchange::Scram
            );
        }
        assert_eq!(
            secret.exchange_for(AuthMethod::Md5),
            PasswordExchange::Scram
        );
        assert_eq!(hash.exchange_for(AuthMethod::Md5), PasswordExchange::Md5);
        assert_eq!(plain.exchange_for(AuthMethod::Md5), PasswordExchange::Md5);
    }

    #[test]
    fn scram_secret_for_each_form() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let secret = scram("pw");
        assert_eq!(
            secret.scram_secret(&mut rng).unwrap(),
            match &secret {
                StoredPassword::Scram(inner) => inner.clone(),
                _ => unreachable!(),
            }
        );
        let derived = StoredPassword::Plain("pw".to_owned())
            .scram_secret(&mut rng)
            .unwrap();
        assert!(derived.verify_password(b"pw"));
        assert_eq!(derived.iterations(), DEFAULT_ITERATIONS);
        assert!(matches!(
            StoredPassword::Md5(md5_stored("a", "pw")).scram_secret(&mut rng),
            Err(AuthError::ScramNotPossibleWithMd5Hash)
        ));
    }

    #[test]
    fn cleartext_verifies_against_every_form() {
        let forms = [
            scram("pw"),
            StoredPassword::Md5(md5_stored("alice", "pw")),
            StoredPassword::Plain("pw".to_owned()),
        ];
        for stored in &forms {
            assert!(
                verify_cleartext(stored, "alice", b"pw").is_ok(),
                "{stored:?}"
            );
            let error = verify_cleartext(stored, "alice", b"wrong").unwrap_err();
            assert_eq!(
                error.to_string(),
                "password authentication failed for user \"alice\""
            );
            assert_eq!(error.sqlstate(), crate::SqlState::InvalidPassword);
            assert!(matches!(
                verify_cleartext(stored, "alice", b""),
                Err(AuthError::EmptyPassword)
            ));
            assert!(matches!(
                verify_cleartext(stored, "alice", b"p\0w"),
                Err(AuthError::PasswordContainsNul)
            ));
        }
        // The md5 hash includes the user name.
        assert!(verify_cleartext(&forms[1], "bob", b"pw").is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let hash = md5_stored("alice", "hunter2");
        for stored in [
            StoredPassword::Plain("hunter2".to_owned()),
            StoredPassword::Md5(hash.clone()),
            scram("hunter2"),
        ] {
            let debug = format!("{stored:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(!debug.contains(&hash[3..]), "{debug}");
            assert!(debug.contains(REDACTED), "{debug}");
        }
    }
}
