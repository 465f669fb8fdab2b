//! The streaming replication sub-protocol carried in CopyData messages once
//! `START_REPLICATION` has switched the connection into CopyBoth mode.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::lsn::Lsn;
use crate::reader::Reader;

/// A server-to-client message inside a CopyData frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `'w'`: a chunk of WAL; for logical replication, exactly one pgoutput message.
    XLogData {
        /// WAL position of the start of `data`.
        wal_start: Lsn,
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at transmission, micros since 2000-01-01.
        server_time: i64,
        /// The payload, a zero-copy slice of the CopyData body.
        data: Bytes,
    },
    /// `'k'`: a keepalive.
    PrimaryKeepalive {
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at transmission, micros since 2000-01-01.
        server_time: i64,
        /// The server wants a Standby status update soon to avoid a timeout disconnect.
        reply_requested: bool,
    },
}

/// Decodes the body of a CopyData message received in CopyBoth mode.
///
/// `buf` must start at the sub-protocol type byte (`'w'` or `'k'`), i.e. the
/// CopyData framing (`'d'`, Int32 length) is already removed.
pub fn parse_copy_data(buf: Bytes) -> Result<ReplicationMessage, DecodeError> {
    let mut r = Reader::new(&buf, 0, "CopyData");
    let tag = r.u8("message type")?;
    match tag {
        b'w' => {
            let mut r = Reader::new(&buf, 1, "XLogData");
            let wal_start = r.u64("WAL start")?;
            let wal_end = r.u64("WAL end")?;
            let server_time = r.i64("server time")?;
            let data = r.rest();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time,
                data,
            })
        }
        b'k' => {
            let mut r = Reader::new(&buf, 1, "Primary keepalive");
            let wal_end = r.u64("WAL end")?;
            let server_time = r.i64("server time")?;
            let reply_offset = r.pos();
            let reply = r.u8("reply requested")?;
            let reply_requested = match reply {
                0 => false,
                1 => true,
                other => {
                    return Err(r.invalid(
                        "reply requested",
                        reply_offset,
                        other,
                        "expected 0 or 1",
                    ))
                }
            };
            r.finish()?;
            Ok(ReplicationMessage::PrimaryKeepalive {
                wal_end,
                server_time,
                reply_requested,
            })
        }
        other => Err(DecodeError::UnknownMessageType {
            context: "CopyData",
            tag: other,
        }),
    }
}

/// Length of a Standby status update body.
const STANDBY_STATUS_UPDATE_LEN: usize = 1 + 8 * 4 + 1;

/// Builds the body of a Standby status update (`'r'`), ready to be wrapped in
/// a CopyData message.
///
/// `written`, `flushed` and `applied` are the positions the client has
/// received, durably stored and applied; for logical replication the server
/// uses `flushed` to advance the slot's `confirmed_flush_lsn`.
/// `client_time_pg_micros` is the client's clock in micros since 2000-01-01.
pub fn encode_standby_status_update(
    written: Lsn,
    flushed: Lsn,
    applied: Lsn,
    client_time_pg_micros: i64,
    reply_requested: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(STANDBY_STATUS_UPDATE_LEN);
    out.push(b'r');
    out.extend_from_slice(&written.to_be_bytes());
    out.extend_from_slice(&flushed.to_be_bytes());
    out.extend_from_slice(&applied.to_be_bytes());
    out.extend_from_slice(&client_time_pg_micros.to_be_bytes());
    out.push(u8::from(reply_requested));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xlogdata() {
        let mut b = vec![b'w'];
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&2u64.to_be_bytes());
        b.extend_from_slice(&(-3i64).to_be_bytes());
        b.extend_from_slice(b"BODY");
        let buf = Bytes::from(b);
        let msg = parse_copy_data(buf.clone()).unwrap();
        let ReplicationMessage::XLogData {
            wal_start,
            wal_end,
            server_time,
            data,
        } = msg
        else {
            panic!("not xlogdata")
        };
        assert_eq!((wal_start, wal_end, server_time), (1, 2, -3));
        assert_eq!(&data[..], b"BODY");
        // Zero-copy: the payload points into the original buffer.
        assert_eq!(data.as_ptr(), buf[25..].as_ptr());
    }

    #[test]
    fn keepalive() {
        let mut b = vec![b'k'];
        b.extend_from_slice(&0x10u64.to_be_bytes());
        b.extend_from_slice(&7i64.to_be_bytes());
        b.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(b.clone())).unwrap(),
            ReplicationMessage::PrimaryKeepalive {
                wal_end: 0x10,
                server_time: 7,
                reply_requested: true
            }
        );
        b.push(0);
        assert!(matches!(
            parse_copy_data(Bytes::from(b)),
            Err(DecodeError::TrailingBytes { offset: 18, .. })
        ));
    }

    #[test]
    fn short_and_unknown() {
        let err = parse_copy_data(Bytes::from_static(b"w\0\0")).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnexpectedEof {
                message: "XLogData",
                field: "WAL start",
                offset: 1,
                needed: 8,
                available: 2
            }
        );
        assert!(err.to_string().contains("XLogData"));
        assert!(err.to_string().contains("WAL start"));
        assert!(matches!(
            parse_copy_data(Bytes::new()),
            Err(DecodeError::UnexpectedEof { .. })
        ));
        assert!(matches!(
            parse_copy_data(Bytes::from_static(b"x")),
            Err(DecodeError::UnknownMessageType { tag: b'x', .. })
        ));
    }

    #[test]
    fn standby_status_update_layout() {
        let b = encode_standby_status_update(1, 2, 3, 4, true);
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &1u64.to_be_bytes());
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(&b[17..25], &3u64.to_be_bytes());
        assert_eq!(&b[25..33], &4i64.to_be_bytes());
        assert_eq!(b[33], 1);
    }
}
