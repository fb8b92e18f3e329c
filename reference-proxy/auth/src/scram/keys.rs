//! The key arithmetic of RFC 5802 §3, with SHA-256 as the hash (RFC 7677).
//!
//! ```text
//! SaltedPassword  := Hi(Normalize(password), salt, i)       (PBKDF2-HMAC-SHA-256)
//! ClientKey       := HMAC(SaltedPassword, "Client Key")
//! StoredKey       := H(ClientKey)
//! ServerKey       := HMAC(SaltedPassword, "Server Key")
//! ClientSignature := HMAC(StoredKey, AuthMessage)
//! ClientProof     := ClientKey XOR ClientSignature
//! ServerSignature := HMAC(ServerKey, AuthMessage)
//! ```
//!
//! Kept apart from the state machines so the RFC test vectors can check each step.

use std::borrow::Cow;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The length of every SCRAM-SHA-256 key, signature and proof, in bytes.
pub const KEY_LENGTH: usize = 32;

/// A SHA-256 sized key, signature or proof.
pub(crate) type Key = [u8; KEY_LENGTH];

/// The SHA-256 block size. HMAC zero-pads shorter keys to this length (RFC 2104 §2).
const HMAC_BLOCK_LENGTH: usize = 64;

const CLIENT_KEY_LABEL: &[u8] = b"Client Key";
const SERVER_KEY_LABEL: &[u8] = b"Server Key";

/// HMAC-SHA-256 keyed by a 32-byte key over the concatenation of `message_parts`.
///
/// The key is zero-padded to a full block by hand, which is exactly what HMAC does with a
/// short key; this makes construction infallible without an `expect`.
pub(crate) fn hmac_sha256(key: &Key, message_parts: &[&[u8]]) -> Key {
    let mut block = [0u8; HMAC_BLOCK_LENGTH];
    for (block_byte, key_byte) in block.iter_mut().zip(key) {
        *block_byte = *key_byte;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    for part in message_parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// Applies SASLprep (RFC 4013) to a password the way Postgres does: if the password is not
/// UTF-8 or SASLprep rejects it (prohibited characters), the raw bytes are used unchanged.
pub(crate) fn normalize_password(password: &[u8]) -> Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(password) else {
        return Cow::Borrowed(password);
    };
    match stringprep::saslprep(text) {
        Ok(Cow::Borrowed(prepared)) => Cow::Borrowed(prepared.as_bytes()),
        Ok(Cow::Owned(prepared)) => Cow::Owned(prepared.into_bytes()),
        Err(_) => Cow::Borrowed(password),
    }
}

/// `Hi(Normalize(password), salt, iterations)`: PBKDF2-HMAC-SHA-256 of the SASLprep'd
/// password.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut output = [0u8; KEY_LENGTH];
    pbkdf2::pbkdf2_hmac::<Sha256>(&normalize_password(password), salt, iterations, &mut output);
    output
}

/// `HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(salted_password: &Key) -> Key {
    hmac_sha256(salted_password, &[CLIENT_KEY_LABEL])
}

/// `HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn server_key(salted_password: &Key) -> Key {
    hmac_sha256(salted_password, &[SERVER_KEY_LABEL])
}

/// `H(ClientKey)`.
pub(crate) fn stored_key(client_key: &Key) -> Key {
    sha256(client_key)
}

/// `a XOR b`, which turns a ClientKey into a proof and a proof back into a ClientKey.
pub(crate) fn exclusive_or(left: &Key, right: &Key) -> Key {
    let mut output = [0u8; KEY_LENGTH];
    for ((output_byte, left_byte), right_byte) in output.iter_mut().zip(left).zip(right) {
        *output_byte = left_byte ^ right_byte;
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    /// RFC 7677 §3: user "user", password "pencil".
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_AUTH_MESSAGE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn rfc_7677_vector_proof_and_server_signature() {
        let salt = STANDARD.decode(RFC_SALT).unwrap();
        let salted = salted_password(b"pencil", &salt, 4096);
        let client = client_key(&salted);
        let stored = stored_key(&client);
        let client_signature = hmac_sha256(&stored, &[RFC_AUTH_MESSAGE.as_bytes()]);
        let proof = exclusive_or(&client, &client_signature);
        assert_eq!(STANDARD.encode(proof), RFC_PROOF);

        let server_signature = hmac_sha256(&server_key(&salted), &[RFC_AUTH_MESSAGE.as_bytes()]);
        assert_eq!(STANDARD.encode(server_signature), RFC_SERVER_SIGNATURE);

        // The server's check: recover ClientKey from the proof, hash it, compare.
        assert_eq!(stored_key(&exclusive_or(&proof, &client_signature)), stored);
    }

    #[test]
    fn hmac_matches_the_hmac_crate_for_split_messages() {
        let key = [7u8; KEY_LENGTH];
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        reference.update(b"hello, world");
        let expected: Key = reference.finalize().into_bytes().into();
        assert_eq!(hmac_sha256(&key, &[b"hello", b", ", b"world"]), expected);
    }

    #[test]
    fn saslprep_maps_non_ascii_space_and_falls_back_on_prohibited_input() {
        // U+00A0 NO-BREAK SPACE maps to an ASCII space.
        assert_eq!(&*normalize_password("a\u{a0}b".as_bytes()), b"a b");
        // U+00AD SOFT HYPHEN maps to nothing.
        assert_eq!(&*normalize_password("a\u{ad}b".as_bytes()), b"ab");
        // A control character is prohibited: the raw password is used.
        assert_eq!(&*normalize_password(b"a\x07b"), b"a\x07b");
        // Not UTF-8: the raw password is used.
        assert_eq!(&*normalize_password(b"\xff\xfe"), b"\xff\xfe");
    }
}
