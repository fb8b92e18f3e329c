//! Reading and writing the protocol's primitive types: Int8/16/32, C strings, byte runs.
//!
//! [`Reader`] walks a frozen message body and hands out zero-copy slices of it; every read is
//! bounds-checked and fails with [`DecodeError::Truncated`] naming the message and field, so no
//! peer-controlled length can cause a panic. [`write_message`] frames a body with its type byte
//! and a back-patched length word, the way `postgres-protocol` does.

use crate::error::{DecodeError, EncodeError};
use crate::limits::MAX_LENGTH_WORD;
use crate::pg_string::PgString;
use bytes::{BufMut, Bytes, BytesMut};

/// A cursor over one message body.
pub(crate) struct Reader {
    body: Bytes,
    position: usize,
    message: &'static str,
}

impl Reader {
    pub(crate) fn new(body: Bytes, message: &'static str) -> Self {
        Reader {
            body,
            position: 0,
            message,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.body.len() - self.position
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            message: self.message,
            field,
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::InvalidValue {
            message: self.message,
            field,
            detail: detail.into(),
        }
    }

    pub(crate) fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(self.truncated(field));
        }
        let slice = self.body.slice(self.position..self.position + len);
        self.position += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        let slice = self
            .body
            .get(self.position..self.position + N)
            .ok_or_else(|| self.truncated(field))?;
        out.copy_from_slice(slice);
        self.position += N;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// An Int16 count that must not be negative.
    pub(crate) fn count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let count = self.i16(field)?;
        usize::try_from(count).map_err(|_| self.invalid(field, format!("negative count {count}")))
    }

    /// A NUL-terminated string; the NUL is consumed and not part of the result.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<PgString, DecodeError> {
        let rest = &self.body[self.position..];
        let end = memchr::memchr(0, rest).ok_or_else(|| self.truncated(field))?;
        let value = self.body.slice(self.position..self.position + end);
        self.position += end + 1;
        Ok(PgString::from_bytes(value))
    }

    /// An Int32 length followed by that many bytes; length -1 means NULL.
    pub(crate) fn nullable_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Bytes>, DecodeError> {
        let len = self.i32(field)?;
        match len {
            -1 => Ok(None),
            len if len < 0 => Err(self.invalid(field, format!("length {len}"))),
            len => self.bytes(len as usize, field).map(Some),
        }
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> Bytes {
        let rest = self.body.slice(self.position..);
        self.position = self.body.len();
        rest
    }

    /// Fails unless every byte of the body was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                message: self.message,
                extra,
            }),
        }
    }
}

/// Writes one framed message: the type byte (if any), a length word, then the body written by
/// `body`, back-patching the length once the body is known.
pub(crate) fn write_message(
    dst: &mut BytesMut,
    tag: Option<u8>,
    message: &'static str,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = dst.len();
    if let Some(tag) = tag {
        dst.put_u8(tag);
    }
    let length_at = dst.len();
    dst.put_i32(0);
    if let Err(error) = body(dst) {
        dst.truncate(start);
        return Err(error);
    }
    let len = dst.len() - length_at;
    if len as u64 > MAX_LENGTH_WORD {
        dst.truncate(start);
        return Err(EncodeError::TooLong { message, len });
    }
    dst[length_at..length_at + 4].copy_from_slice(&(len as i32).to_be_bytes());
    Ok(())
}

/// Writes a C string, refusing interior NULs.
pub(crate) fn put_cstr(
    dst: &mut BytesMut,
    value: &PgString,
    message: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    if value.contains_nul() {
        return Err(EncodeError::InteriorNul { message, field });
    }
    dst.put_slice(value.as_bytes());
    dst.put_u8(0);
    Ok(())
}

/// Writes an Int16 count, refusing counts the wire cannot express.
pub(crate) fn put_count(
    dst: &mut BytesMut,
    count: usize,
    message: &'static str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let max = i16::MAX as usize;
    if count > max {
        return Err(EncodeError::TooManyItems {
            message,
            field,
            count,
            max,
        });
    }
    dst.put_i16(count as i16);
    Ok(())
}

/// Writes an Int32 length and the bytes, or -1 for NULL.
pub(crate) fn put_nullable_bytes(
    dst: &mut BytesMut,
    value: Option<&Bytes>,
    message: &'static str,
) -> Result<(), EncodeError> {
    match value {
        None => dst.put_i32(-1),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
                message,
                len: bytes.len(),
            })?;
            dst.put_i32(len);
            dst.put_slice(bytes);
        }
    }
    Ok(())
}
