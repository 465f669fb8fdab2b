//! Errors produced while decoding replication traffic.

use thiserror::Error;

/// Why a replication message could not be decoded.
///
/// Every variant names the message (`message`, e.g. `"Insert"`), the field
/// being read (`field`, e.g. `"relation id"`) and the byte offset within the
/// message body at which that field starts, so a bad frame can be located in a
/// hex dump of the traffic without re-running the decoder.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ended before a field could be read completely.
    #[error("{message} message: field `{field}` at byte offset {offset}: needs {needed} bytes but only {available} remain")]
    UnexpectedEof {
        /// Message being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// Byte offset of the field within the message.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message at `offset`.
        available: usize,
    },
    /// A NUL-terminated string field had no terminating NUL before the end of the message.
    #[error(
        "{message} message: string field `{field}` at byte offset {offset} has no terminating NUL"
    )]
    UnterminatedString {
        /// Message being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// Byte offset of the field within the message.
        offset: usize,
    },
    /// A string field is not valid UTF-8 (Sluice requires a UTF-8 server encoding).
    #[error("{message} message: string field `{field}` at byte offset {offset} is not valid UTF-8 (error after {valid_up_to} valid bytes)")]
    InvalidUtf8 {
        /// Message being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// Byte offset of the field within the message.
        offset: usize,
        /// Number of valid UTF-8 bytes before the first invalid one.
        valid_up_to: usize,
    },
    /// A field holds a value the protocol does not allow at this place.
    #[error("{message} message: field `{field}` at byte offset {offset} has invalid value {value}: {reason}")]
    InvalidValue {
        /// Message being decoded.
        message: &'static str,
        /// Field being read.
        field: &'static str,
        /// Byte offset of the field within the message.
        offset: usize,
        /// The offending value, rendered for humans (bytes as `'X'` or `0xNN`).
        value: String,
        /// What was expected instead.
        reason: &'static str,
    },
    /// The first byte does not identify any known message.
    #[error("{context} message: field `message type` at byte offset 0: unknown message type {}", display_tag(*.tag))]
    UnknownMessageType {
        /// Which protocol layer was being decoded (`"CopyData"` or `"logical replication"`).
        context: &'static str,
        /// The unknown type byte (at offset 0).
        tag: u8,
    },
    /// The message was decoded completely but bytes were left over, which means
    /// the decoder's view of the protocol (version, streaming state) differs
    /// from the server's.
    #[error("{message} message: {remaining} unexpected trailing bytes at byte offset {offset}")]
    TrailingBytes {
        /// Message being decoded.
        message: &'static str,
        /// Offset of the first unread byte.
        offset: usize,
        /// Number of unread bytes.
        remaining: usize,
    },
    /// The message is not allowed with the negotiated protocol version.
    #[error("{message} message (byte offset 0) requires protocol version {required} or later, but the decoder was created for version {protocol_version}")]
    UnsupportedByProtocolVersion {
        /// Message being decoded.
        message: &'static str,
        /// Minimum protocol version that defines the message.
        required: u32,
        /// Version the decoder was created with.
        protocol_version: u32,
    },
    /// The message contradicts the streaming state (e.g. Stream Start inside a streamed block).
    #[error("{message} message (byte offset 0): {reason}")]
    UnexpectedInStreamState {
        /// Message being decoded.
        message: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A textual LSN could not be parsed.
    #[error("invalid LSN {input:?}: expected two hexadecimal numbers of 1 to 8 digits separated by '/', problem at character offset {offset}")]
    InvalidLsn {
        /// The input given to [`crate::parse_lsn`].
        input: String,
        /// Character offset where parsing failed.
        offset: usize,
    },
}

/// Renders a type byte the way PostgreSQL's documentation names it (`'I'`),
/// falling back to hex for non-printable bytes.
pub(crate) fn display_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}' (0x{tag:02x})", tag as char)
    } else {
        format!("0x{tag:02x}")
    }
}
