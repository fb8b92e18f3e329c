//! Parsing of SCRAM attribute lists: comma-separated `<letter>=<value>` fields.
//!
//! Works on bytes, not `str`: Postgres does not require the (ignored) user name to be UTF-8,
//! and every value we do use (nonce, base64) is checked to be ASCII on its own.

use super::{MAXIMUM_MESSAGE_LENGTH, ScramError, ScramMessage};

/// Attribute names defined by RFC 5802. An optional extension may not reuse one of these:
/// when one shows up in the extension area it is a duplicate or misplaced attribute.
const RESERVED_ATTRIBUTE_NAMES: &[u8] = b"acemnprsiv";

const SEPARATOR: u8 = b',';
const FIRST_PRINTABLE: u8 = 0x21;
const LAST_PRINTABLE: u8 = 0x7e;

/// One `name=value` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attribute<'a> {
    pub(crate) name: u8,
    pub(crate) value: &'a [u8],
}

/// Rejects messages that are empty, longer than [`MAXIMUM_MESSAGE_LENGTH`] or contain a NUL
/// byte (Postgres reads SASL payloads as C strings and refuses embedded NULs).
pub(crate) fn check_message(bytes: &[u8], message: ScramMessage) -> Result<(), ScramError> {
    if bytes.is_empty() {
        return Err(ScramError::EmptyMessage { message });
    }
    if bytes.len() > MAXIMUM_MESSAGE_LENGTH {
        return Err(ScramError::MessageTooLong {
            message,
            length: bytes.len(),
        });
    }
    if bytes.contains(&0) {
        return Err(ScramError::Malformed {
            message,
            problem: "the message contains a NUL byte",
        });
    }
    Ok(())
}

/// Splits a message into its comma-separated fields.
pub(crate) fn fields(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|byte| *byte == SEPARATOR)
}

/// Parses one `<letter>=<value>` field.
pub(crate) fn parse_attribute(
    field: &[u8],
    message: ScramMessage,
) -> Result<Attribute<'_>, ScramError> {
    match field {
        [name, b'=', value @ ..] if name.is_ascii_alphabetic() => {
            Ok(Attribute { name: *name, value })
        }
        [] => Err(ScramError::Malformed {
            message,
            problem: "empty attribute (two consecutive commas or a trailing comma)",
        }),
        _ => Err(ScramError::Malformed {
            message,
            problem: "expected an attribute of the form <letter>=<value>",
        }),
    }
}

/// Takes the next field, which must be attribute `name`, and returns its value.
pub(crate) fn expect_attribute<'a>(
    fields: &mut impl Iterator<Item = &'a [u8]>,
    name: u8,
    message: ScramMessage,
) -> Result<&'a [u8], ScramError> {
    let field = fields.next().ok_or(ScramError::MissingAttribute {
        message,
        attribute: char::from(name),
    })?;
    let attribute = parse_attribute(field, message)?;
    if attribute.name != name {
        return Err(ScramError::WrongAttribute {
            message,
            expected: char::from(name),
            found: char::from(attribute.name),
        });
    }
    Ok(attribute.value)
}

/// Parses an optional extension field: any letter not defined by RFC 5802. Postgres ignores
/// extensions; a reserved name here is a duplicate or misplaced attribute.
pub(crate) fn parse_extension(field: &[u8], message: ScramMessage) -> Result<(), ScramError> {
    let attribute = parse_attribute(field, message)?;
    if is_reserved(attribute.name) {
        return Err(ScramError::RepeatedAttribute {
            message,
            attribute: char::from(attribute.name),
        });
    }
    Ok(())
}

/// Whether `name` is an attribute defined by RFC 5802.
pub(crate) fn is_reserved(name: u8) -> bool {
    RESERVED_ATTRIBUTE_NAMES.contains(&name)
}

/// Checks a nonce: non-empty, printable ASCII, no comma (RFC 5802 `printable`).
pub(crate) fn check_nonce(nonce: &[u8], message: ScramMessage) -> Result<(), ScramError> {
    if nonce.is_empty() {
        return Err(ScramError::Malformed {
            message,
            problem: "the nonce is empty",
        });
    }
    let printable = nonce
        .iter()
        .all(|byte| (FIRST_PRINTABLE..=LAST_PRINTABLE).contains(byte) && *byte != SEPARATOR);
    if !printable {
        return Err(ScramError::NonPrintableNonce { message });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: ScramMessage = ScramMessage::ClientFirst;

    #[test]
    fn parses_attributes_with_equals_signs_in_the_value() {
        let attribute = parse_attribute(b"c=biws==", MESSAGE).unwrap();
        assert_eq!(attribute.name, b'c');
        assert_eq!(attribute.value, b"biws==");
    }

    #[test]
    fn rejects_fields_that_are_not_attributes() {
        for field in [&b""[..], b"=x", b"1=x", b"r", b"rr=x"] {
            assert!(matches!(
                parse_attribute(field, MESSAGE),
                Err(ScramError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn expect_attribute_reports_missing_and_wrong_attributes() {
        let mut none = fields(b"").skip(1);
        assert_eq!(
            expect_attribute(&mut none, b'r', MESSAGE),
            Err(ScramError::MissingAttribute {
                message: MESSAGE,
                attribute: 'r'
            })
        );
        let mut wrong = fields(b"x=1");
        assert_eq!(
            expect_attribute(&mut wrong, b'r', MESSAGE),
            Err(ScramError::WrongAttribute {
                message: MESSAGE,
                expected: 'r',
                found: 'x'
            })
        );
    }

    #[test]
    fn extensions_may_not_reuse_reserved_names() {
        assert_eq!(parse_extension(b"x=anything", MESSAGE), Ok(()));
        assert_eq!(
            parse_extension(b"r=again", MESSAGE),
            Err(ScramError::RepeatedAttribute {
                message: MESSAGE,
                attribute: 'r'
            })
        );
    }

    #[test]
    fn nonces_must_be_printable() {
        assert_eq!(check_nonce(b"abc~!+/", MESSAGE), Ok(()));
        assert!(check_nonce(b"", MESSAGE).is_err());
        assert_eq!(
            check_nonce(b"ab c", MESSAGE),
            Err(ScramError::NonPrintableNonce { message: MESSAGE })
        );
        assert!(check_nonce("é".as_bytes(), MESSAGE).is_err());
    }

    #[test]
    fn messages_are_bounded_and_nul_free() {
        assert!(check_message(b"n,,n=,r=x", MESSAGE).is_ok());
        assert!(matches!(
            check_message(b"", MESSAGE),
            Err(ScramError::EmptyMessage { .. })
        ));
        assert!(matches!(
            check_message(&[b'a'; MAXIMUM_MESSAGE_LENGTH + 1], MESSAGE),
            Err(ScramError::MessageTooLong { .. })
        ));
        assert!(matches!(
            check_message(b"n,,\0", MESSAGE),
            Err(ScramError::Malformed { .. })
        ));
    }
}
