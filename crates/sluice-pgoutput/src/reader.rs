//! Bounds-checked big-endian cursor over one message body.
//!
//! Every read names the field it reads so that a short or malformed message
//! produces a [`DecodeError`] pointing at the exact field and byte offset.

use bytes::Bytes;

use crate::error::{display_tag, DecodeError};

pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, pos: usize, message: &'static str) -> Self {
        Reader { buf, pos, message }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes `n` bytes as a slice of the underlying buffer, without copying.
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let available = self.remaining();
        if n > available {
            return Err(DecodeError::UnexpectedEof {
                message: self.message,
                field,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let start = self.pos;
        let slice = self
            .buf
            .get(start..start + n)
            .ok_or(DecodeError::UnexpectedEof {
                message: self.message,
                field,
                offset: start,
                needed: n,
                available,
            })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// Reads an Int32 length followed by that many bytes, returned as a
    /// zero-copy slice of the input. The length is checked against the bytes
    /// actually present before anything is sliced, so a hostile length can
    /// never cause a large allocation.
    pub(crate) fn counted_bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len_offset = self.pos;
        let len = self.i32(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::InvalidValue {
            message: self.message,
            field,
            offset: len_offset,
            value: len.to_string(),
            reason: "length must not be negative",
        })?;
        let start = self.pos;
        self.take(len, field)?;
        Ok(self.buf.slice(start..start + len))
    }

    /// Reads a NUL-terminated UTF-8 string.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString {
                message: self.message,
                field,
                offset: start,
            });
        };
        let raw = rest.get(..nul).unwrap_or_default();
        let s = std::str::from_utf8(raw).map_err(|e| DecodeError::InvalidUtf8 {
            message: self.message,
            field,
            offset: start,
            valid_up_to: e.valid_up_to(),
        })?;
        self.pos = start + nul + 1;
        Ok(s.to_owned())
    }

    /// Returns the remaining bytes as a zero-copy slice and consumes them.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    pub(crate) fn invalid(
        &self,
        field: &'static str,
        offset: usize,
        byte: u8,
        reason: &'static str,
    ) -> DecodeError {
        DecodeError::InvalidValue {
            message: self.message,
            field,
            offset,
            value: display_tag(byte),
            reason,
        }
    }

    /// Fails if unread bytes remain: leftover bytes mean the decoder and the
    /// server disagree on the layout, and silently ignoring them would hide
    /// a mis-decoded stream.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        let remaining = self.remaining();
        if remaining == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                offset: self.pos,
                remaining,
            })
        }
    }
}
