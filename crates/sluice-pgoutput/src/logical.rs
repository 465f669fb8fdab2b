//! Decoder for pgoutput logical replication messages (protocol versions 1-4).

use bytes::Bytes;

use crate::error::DecodeError;
use crate::lsn::Lsn;
use crate::reader::Reader;

/// First protocol version with streaming of in-progress transactions (PostgreSQL 14).
pub const PROTO_VERSION_STREAMING: u32 = 2;
/// First protocol version with two-phase commit decoding (PostgreSQL 15).
pub const PROTO_VERSION_TWO_PHASE: u32 = 3;
/// First protocol version with parallel streaming apply (PostgreSQL 16), which
/// adds the abort LSN and timestamp to Stream Abort when `streaming = parallel`.
pub const PROTO_VERSION_PARALLEL_STREAMING: u32 = 4;

/// Column flag bit: the column is part of the replica identity (key).
pub const COLUMN_FLAG_KEY: u8 = 1;
/// Truncate option bit: `CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: `RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// A decoded pgoutput message.
///
/// Timestamps are micros since 2000-01-01 (see
/// [`PG_EPOCH_OFFSET_MICROS`](crate::PG_EPOCH_OFFSET_MICROS)). `xid` fields
/// typed `Option<u32>` are `Some` only inside a streamed block (between
/// Stream Start and Stream Stop); there they carry the xid of the
/// (sub)transaction that made the change, not necessarily the top-level one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    /// `'B'`: start of a (non-streamed) transaction.
    Begin {
        /// LSN of the commit record of the transaction.
        final_lsn: Lsn,
        /// Commit timestamp.
        commit_ts: i64,
        /// Top-level transaction id.
        xid: u32,
    },
    /// `'C'`: end of a (non-streamed) transaction.
    Commit {
        /// Flags, currently always 0.
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End LSN of the transaction; the position to confirm once it is processed.
        end_lsn: Lsn,
        /// Commit timestamp.
        commit_ts: i64,
    },
    /// `'O'`: the transaction originated on another node (replication origin).
    Origin {
        /// LSN of the commit on the origin server.
        commit_lsn: Lsn,
        /// Origin name.
        name: String,
    },
    /// `'R'`: describes a relation before the first change to it (and again after schema changes).
    Relation {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// The relation.
        relation: Relation,
    },
    /// `'Y'`: describes a non-built-in data type used by a following Relation.
    Type {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// Type OID.
        oid: u32,
        /// Namespace; the empty wire value is reported as `pg_catalog`.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// `'I'`: a row was inserted.
    Insert {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// OID of the relation, as in a previous Relation message.
        relation_id: u32,
        /// The new row.
        new: TupleData,
    },
    /// `'U'`: a row was updated.
    Update {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// OID of the relation, as in a previous Relation message.
        relation_id: u32,
        /// Full old row (`'O'`), sent with `REPLICA IDENTITY FULL`.
        old: Option<TupleData>,
        /// Old key columns (`'K'`), sent when the key changed (other columns are null).
        key: Option<TupleData>,
        /// The new row.
        new: TupleData,
    },
    /// `'D'`: a row was deleted. Exactly one of `old` and `key` is set.
    Delete {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// OID of the relation, as in a previous Relation message.
        relation_id: u32,
        /// Full old row (`'O'`), with `REPLICA IDENTITY FULL`.
        old: Option<TupleData>,
        /// Old key columns (`'K'`).
        key: Option<TupleData>,
    },
    /// `'T'`: one or more relations were truncated.
    Truncate {
        /// (Sub)transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// Bit set of [`TRUNCATE_CASCADE`] and [`TRUNCATE_RESTART_IDENTITY`].
        options: u8,
        /// OIDs of the truncated relations.
        relation_ids: Vec<u32>,
    },
    /// `'M'`: a `pg_logical_emit_message` message (only with `messages = true`).
    Message {
        /// Transaction xid, only inside a streamed block.
        xid: Option<u32>,
        /// The message was emitted transactionally.
        transactional: bool,
        /// LSN of the message.
        lsn: Lsn,
        /// Prefix given by the emitter.
        prefix: String,
        /// Content, a zero-copy slice of the input.
        content: Bytes,
    },
    /// `'S'`: start of a block of changes of an in-progress transaction (protocol >= 2).
    StreamStart {
        /// Top-level transaction id.
        xid: u32,
        /// This is the first block streamed for this transaction.
        first_segment: bool,
    },
    /// `'E'`: end of a streamed block.
    StreamStop,
    /// `'c'`: a streamed transaction committed.
    StreamCommit {
        /// Top-level transaction id.
        xid: u32,
        /// Flags, currently always 0.
        flags: u8,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End LSN of the transaction.
        end_lsn: Lsn,
        /// Commit timestamp.
        commit_ts: i64,
    },
    /// `'A'`: a streamed transaction, or one of its subtransactions, aborted.
    StreamAbort {
        /// Top-level transaction id.
        xid: u32,
        /// Aborted subtransaction; equal to `xid` when the whole transaction aborted.
        subxid: u32,
        /// LSN of the abort; only with protocol 4 and `streaming = parallel`.
        abort_lsn: Option<Lsn>,
        /// Abort timestamp; only with protocol 4 and `streaming = parallel`.
        abort_ts: Option<i64>,
    },
    /// `'b'`: start of a prepared transaction (protocol >= 3, `two_phase`).
    BeginPrepare {
        /// LSN of the prepare record.
        prepare_lsn: Lsn,
        /// End LSN of the prepared transaction.
        end_lsn: Lsn,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction identifier given to `PREPARE TRANSACTION`.
        gid: String,
    },
    /// `'P'`: end of a prepared transaction's changes.
    Prepare {
        /// Flags, currently always 0.
        flags: u8,
        /// LSN of the prepare record.
        prepare_lsn: Lsn,
        /// End LSN of the prepared transaction.
        end_lsn: Lsn,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction identifier.
        gid: String,
    },
    /// `'K'`: `COMMIT PREPARED`.
    CommitPrepared {
        /// Flags, currently always 0.
        flags: u8,
        /// LSN of the commit-prepared record.
        commit_lsn: Lsn,
        /// End LSN of the commit-prepared transaction.
        end_lsn: Lsn,
        /// Commit timestamp.
        commit_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction identifier.
        gid: String,
    },
    /// `'r'`: `ROLLBACK PREPARED`.
    RollbackPrepared {
        /// Flags, currently always 0.
        flags: u8,
        /// End LSN of the prepared transaction.
        prepare_end_lsn: Lsn,
        /// End LSN of the rollback-prepared transaction.
        rollback_end_lsn: Lsn,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Rollback timestamp.
        rollback_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction identifier.
        gid: String,
    },
    /// `'p'`: a streamed transaction was prepared (protocol >= 3).
    StreamPrepare {
        /// Flags, currently always 0.
        flags: u8,
        /// LSN of the prepare record.
        prepare_lsn: Lsn,
        /// End LSN of the prepared transaction.
        end_lsn: Lsn,
        /// Prepare timestamp.
        prepare_ts: i64,
        /// Transaction id.
        xid: u32,
        /// Global transaction identifier.
        gid: String,
    },
}

impl LogicalMessage {
    /// The xid carried in the message when it is a streamed change
    /// (Relation, Type, Insert, Update, Delete, Truncate, Message inside a
    /// streamed block), which is the subtransaction that made the change.
    pub fn streamed_xid(&self) -> Option<u32> {
        match self {
            LogicalMessage::Relation { xid, .. }
            | LogicalMessage::Type { xid, .. }
            | LogicalMessage::Insert { xid, .. }
            | LogicalMessage::Update { xid, .. }
            | LogicalMessage::Delete { xid, .. }
            | LogicalMessage::Truncate { xid, .. }
            | LogicalMessage::Message { xid, .. } => *xid,
            _ => None,
        }
    }
}

/// A relation (table) description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub id: u32,
    /// Namespace (schema); the empty wire value is reported as `pg_catalog`.
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// `relreplident`: `b'd'` default, `b'n'` nothing, `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    /// Published columns, in the order tuple values are sent.
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Flags; bit [`COLUMN_FLAG_KEY`] marks replica identity columns.
    pub flags: u8,
    /// Column name.
    pub name: String,
    /// Data type OID.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

impl Column {
    /// The column is part of the replica identity (the key Debezium reports).
    pub fn is_key(&self) -> bool {
        self.flags & COLUMN_FLAG_KEY != 0
    }
}

/// The values of one row, in column order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData {
    /// One value per column.
    pub values: Vec<TupleValue>,
}

/// One column value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: a TOASTed value that was not changed and therefore not sent.
    UnchangedToast,
    /// `'t'`: the value in the type's text output format (zero-copy slice of the input).
    Text(Bytes),
    /// `'b'`: the value in the type's binary send format (zero-copy slice of the input).
    Binary(Bytes),
}

/// Stateful pgoutput decoder for one replication connection.
///
/// Decoding depends on state: inside a streamed block the change messages
/// carry an extra xid, so messages must be fed in the order they arrive.
#[derive(Debug, Clone)]
pub struct Decoder {
    protocol_version: u32,
    in_stream: bool,
}

impl Decoder {
    /// Creates a decoder for the `proto_version` given to `START_REPLICATION`.
    pub fn new(protocol_version: u32) -> Decoder {
        Decoder {
            protocol_version,
            in_stream: false,
        }
    }

    /// The protocol version this decoder was created with.
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// True between a Stream Start and the matching Stream Stop.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes one pgoutput message (the `data` of an XLogData message).
    ///
    /// Byte slices in the result (tuple values, message content) share
    /// `data`'s buffer. On error the streaming state is left unchanged.
    pub fn decode(&mut self, data: &Bytes) -> Result<LogicalMessage, DecodeError> {
        let tag = Reader::new(data, 0, "logical replication").u8("message type")?;
        // Only these messages carry the extra xid, and only while streaming.
        let streamed_xid = self.in_stream && self.protocol_version >= PROTO_VERSION_STREAMING;
        let msg = match tag {
            b'B' => decode_begin(data)?,
            b'C' => decode_commit(data)?,
            b'O' => decode_origin(data)?,
            b'R' => decode_relation(data, streamed_xid)?,
            b'Y' => decode_type(data, streamed_xid)?,
            b'I' => decode_insert(data, streamed_xid)?,
            b'U' => decode_update(data, streamed_xid)?,
            b'D' => decode_delete(data, streamed_xid)?,
            b'T' => decode_truncate(data, streamed_xid)?,
            b'M' => decode_message(data, streamed_xid)?,
            b'S' => {
                self.require("Stream Start", PROTO_VERSION_STREAMING)?;
                if self.in_stream {
                    return Err(DecodeError::UnexpectedInStreamState {
                        message: "Stream Start",
                        reason: "a streamed block is already open (missing Stream Stop)",
                    });
                }
                let msg = decode_stream_start(data)?;
                self.in_stream = true;
                msg
            }
            b'E' => {
                self.require("Stream Stop", PROTO_VERSION_STREAMING)?;
                if !self.in_stream {
                    return Err(DecodeError::UnexpectedInStreamState {
                        message: "Stream Stop",
                        reason: "no streamed block is open (missing Stream Start)",
                    });
                }
                Reader::new(data, 1, "Stream Stop").finish()?;
                self.in_stream = false;
                LogicalMessage::StreamStop
            }
            b'c' => {
                self.require("Stream Commit", PROTO_VERSION_STREAMING)?;
                decode_stream_commit(data)?
            }
            b'A' => {
                self.require("Stream Abort", PROTO_VERSION_STREAMING)?;
                decode_stream_abort(data, self.protocol_version)?
            }
            b'b' => {
                self.require("Begin Prepare", PROTO_VERSION_TWO_PHASE)?;
                decode_begin_prepare(data)?
            }
            b'P' => {
                self.require("Prepare", PROTO_VERSION_TWO_PHASE)?;
                let p = decode_prepare_like(data, "Prepare")?;
                LogicalMessage::Prepare {
                    flags: p.flags,
                    prepare_lsn: p.lsn,
                    end_lsn: p.end_lsn,
                    prepare_ts: p.ts,
                    xid: p.xid,
                    gid: p.gid,
                }
            }
            b'K' => {
                self.require("Commit Prepared", PROTO_VERSION_TWO_PHASE)?;
                let p = decode_prepare_like(data, "Commit Prepared")?;
                LogicalMessage::CommitPrepared {
                    flags: p.flags,
                    commit_lsn: p.lsn,
                    end_lsn: p.end_lsn,
                    commit_ts: p.ts,
                    xid: p.xid,
                    gid: p.gid,
                }
            }
            b'r' => {
                self.require("Rollback Prepared", PROTO_VERSION_TWO_PHASE)?;
                decode_rollback_prepared(data)?
            }
            b'p' => {
                self.require("Stream Prepare", PROTO_VERSION_TWO_PHASE)?;
                let p = decode_prepare_like(data, "Stream Prepare")?;
                LogicalMessage::StreamPrepare {
                    flags: p.flags,
                    prepare_lsn: p.lsn,
                    end_lsn: p.end_lsn,
                    prepare_ts: p.ts,
                    xid: p.xid,
                    gid: p.gid,
                }
            }
            other => {
                return Err(DecodeError::UnknownMessageType {
                    context: "logical replication",
                    tag: other,
                })
            }
        };
        Ok(msg)
    }

    fn require(&self, message: &'static str, required: u32) -> Result<(), DecodeError> {
        if self.protocol_version >= required {
            Ok(())
        } else {
            Err(DecodeError::UnsupportedByProtocolVersion {
                message,
                required,
                protocol_version: self.protocol_version,
            })
        }
    }
}

fn optional_xid(r: &mut Reader<'_>, present: bool) -> Result<Option<u32>, DecodeError> {
    if present {
        r.u32("xid").map(Some)
    } else {
        Ok(None)
    }
}

/// PostgreSQL abbreviates `pg_catalog` as the empty string to save bytes;
/// expanding it here keeps callers from having to know that convention.
fn namespace(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let ns = r.string("namespace")?;
    Ok(if ns.is_empty() {
        "pg_catalog".to_owned()
    } else {
        ns
    })
}

fn decode_begin(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Begin");
    let final_lsn = r.u64("final LSN")?;
    let commit_ts = r.i64("commit timestamp")?;
    let xid = r.u32("xid")?;
    r.finish()?;
    Ok(LogicalMessage::Begin {
        final_lsn,
        commit_ts,
        xid,
    })
}

fn decode_commit(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Commit");
    let flags = r.u8("flags")?;
    let commit_lsn = r.u64("commit LSN")?;
    let end_lsn = r.u64("end LSN")?;
    let commit_ts = r.i64("commit timestamp")?;
    r.finish()?;
    Ok(LogicalMessage::Commit {
        flags,
        commit_lsn,
        end_lsn,
        commit_ts,
    })
}

fn decode_origin(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Origin");
    let commit_lsn = r.u64("commit LSN")?;
    let name = r.string("name")?;
    r.finish()?;
    Ok(LogicalMessage::Origin { commit_lsn, name })
}

/// Smallest encoding of one column in a Relation message: flags, an empty
/// name (its NUL), type OID and type modifier.
const MIN_COLUMN_BYTES: usize = 1 + 1 + 4 + 4;

fn decode_relation(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Relation");
    let xid = optional_xid(&mut r, streamed)?;
    let id = r.u32("relation id")?;
    let namespace = namespace(&mut r)?;
    let name = r.string("relation name")?;
    let replica_identity = r.u8("replica identity")?;
    let ncols = usize::from(r.u16("column count")?);
    // Cap the pre-allocation by what the remaining bytes can hold so a
    // corrupt count cannot reserve memory the message does not back.
    let mut columns = Vec::with_capacity(ncols.min(r.remaining() / MIN_COLUMN_BYTES));
    for _ in 0..ncols {
        let flags = r.u8("column flags")?;
        let name = r.string("column name")?;
        let type_oid = r.u32("column type oid")?;
        let type_modifier = r.i32("column type modifier")?;
        columns.push(Column {
            flags,
            name,
            type_oid,
            type_modifier,
        });
    }
    r.finish()?;
    Ok(LogicalMessage::Relation {
        xid,
        relation: Relation {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        },
    })
}

fn decode_type(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Type");
    let xid = optional_xid(&mut r, streamed)?;
    let oid = r.u32("type oid")?;
    let namespace = namespace(&mut r)?;
    let name = r.string("type name")?;
    r.finish()?;
    Ok(LogicalMessage::Type {
        xid,
        oid,
        namespace,
        name,
    })
}

fn decode_tuple(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    let ncols = usize::from(r.u16("tuple column count")?);
    // Every value takes at least its kind byte, which bounds the allocation.
    let mut values = Vec::with_capacity(ncols.min(r.remaining()));
    for _ in 0..ncols {
        let kind_offset = r.pos();
        let kind = r.u8("tuple value kind")?;
        let value = match kind {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => TupleValue::Text(r.counted_bytes("tuple text value")?),
            b'b' => TupleValue::Binary(r.counted_bytes("tuple binary value")?),
            other => {
                return Err(r.invalid(
                    "tuple value kind",
                    kind_offset,
                    other,
                    "expected 'n', 'u', 't' or 'b'",
                ))
            }
        };
        values.push(value);
    }
    Ok(TupleData { values })
}

fn expect_new_tuple(r: &mut Reader<'_>, byte: u8, offset: usize) -> Result<(), DecodeError> {
    if byte == b'N' {
        Ok(())
    } else {
        Err(r.invalid("tuple type", offset, byte, "expected 'N' (new tuple)"))
    }
}

fn decode_insert(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Insert");
    let xid = optional_xid(&mut r, streamed)?;
    let relation_id = r.u32("relation id")?;
    let offset = r.pos();
    let marker = r.u8("tuple type")?;
    expect_new_tuple(&mut r, marker, offset)?;
    let new = decode_tuple(&mut r)?;
    r.finish()?;
    Ok(LogicalMessage::Insert {
        xid,
        relation_id,
        new,
    })
}

fn decode_update(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Update");
    let xid = optional_xid(&mut r, streamed)?;
    let relation_id = r.u32("relation id")?;
    let mut old = None;
    let mut key = None;
    let mut offset = r.pos();
    let mut marker = r.u8("tuple type")?;
    match marker {
        b'O' | b'K' => {
            let tuple = decode_tuple(&mut r)?;
            if marker == b'O' {
                old = Some(tuple);
            } else {
                key = Some(tuple);
            }
            offset = r.pos();
            marker = r.u8("tuple type")?;
            expect_new_tuple(&mut r, marker, offset)?;
        }
        b'N' => {}
        other => {
            return Err(r.invalid(
                "tuple type",
                offset,
                other,
                "expected 'O' (old tuple), 'K' (old key) or 'N' (new tuple)",
            ))
        }
    }
    let new = decode_tuple(&mut r)?;
    r.finish()?;
    Ok(LogicalMessage::Update {
        xid,
        relation_id,
        old,
        key,
        new,
    })
}

fn decode_delete(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Delete");
    let xid = optional_xid(&mut r, streamed)?;
    let relation_id = r.u32("relation id")?;
    let offset = r.pos();
    let marker = r.u8("tuple type")?;
    let (old, key) = match marker {
        b'O' => (Some(decode_tuple(&mut r)?), None),
        b'K' => (None, Some(decode_tuple(&mut r)?)),
        other => {
            return Err(r.invalid(
                "tuple type",
                offset,
                other,
                "expected 'O' (old tuple) or 'K' (old key)",
            ))
        }
    };
    r.finish()?;
    Ok(LogicalMessage::Delete {
        xid,
        relation_id,
        old,
        key,
    })
}

fn decode_truncate(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Truncate");
    let xid = optional_xid(&mut r, streamed)?;
    let count = r.u32("relation count")?;
    let options = r.u8("options")?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        relation_ids.push(r.u32("relation id")?);
    }
    r.finish()?;
    Ok(LogicalMessage::Truncate {
        xid,
        options,
        relation_ids,
    })
}

fn decode_message(data: &Bytes, streamed: bool) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Message");
    let xid = optional_xid(&mut r, streamed)?;
    let flags = r.u8("flags")?;
    let lsn = r.u64("LSN")?;
    let prefix = r.string("prefix")?;
    let content = r.counted_bytes("content")?;
    r.finish()?;
    Ok(LogicalMessage::Message {
        xid,
        transactional: flags & 1 != 0,
        lsn,
        prefix,
        content,
    })
}

fn decode_stream_start(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Stream Start");
    let xid = r.u32("xid")?;
    let first_segment = r.u8("first segment")? == 1;
    r.finish()?;
    Ok(LogicalMessage::StreamStart { xid, first_segment })
}

fn decode_stream_commit(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Stream Commit");
    let xid = r.u32("xid")?;
    let flags = r.u8("flags")?;
    let commit_lsn = r.u64("commit LSN")?;
    let end_lsn = r.u64("end LSN")?;
    let commit_ts = r.i64("commit timestamp")?;
    r.finish()?;
    Ok(LogicalMessage::StreamCommit {
        xid,
        flags,
        commit_lsn,
        end_lsn,
        commit_ts,
    })
}

fn decode_stream_abort(data: &Bytes, protocol_version: u32) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Stream Abort");
    let xid = r.u32("xid")?;
    let subxid = r.u32("subtransaction xid")?;
    // With protocol 4 the abort LSN and timestamp are only sent when the
    // subscription asked for `streaming = parallel`, which the decoder cannot
    // know, so their presence is inferred from the message length.
    let (abort_lsn, abort_ts) =
        if protocol_version >= PROTO_VERSION_PARALLEL_STREAMING && r.remaining() > 0 {
            (Some(r.u64("abort LSN")?), Some(r.i64("abort timestamp")?))
        } else {
            (None, None)
        };
    r.finish()?;
    Ok(LogicalMessage::StreamAbort {
        xid,
        subxid,
        abort_lsn,
        abort_ts,
    })
}

fn decode_begin_prepare(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Begin Prepare");
    let prepare_lsn = r.u64("prepare LSN")?;
    let end_lsn = r.u64("end LSN")?;
    let prepare_ts = r.i64("prepare timestamp")?;
    let xid = r.u32("xid")?;
    let gid = r.string("gid")?;
    r.finish()?;
    Ok(LogicalMessage::BeginPrepare {
        prepare_lsn,
        end_lsn,
        prepare_ts,
        xid,
        gid,
    })
}

/// Shared layout of Prepare, Commit Prepared and Stream Prepare.
struct PrepareLike {
    flags: u8,
    lsn: Lsn,
    end_lsn: Lsn,
    ts: i64,
    xid: u32,
    gid: String,
}

fn decode_prepare_like(data: &Bytes, message: &'static str) -> Result<PrepareLike, DecodeError> {
    let mut r = Reader::new(data, 1, message);
    let flags = r.u8("flags")?;
    let lsn = r.u64(if message == "Commit Prepared" {
        "commit LSN"
    } else {
        "prepare LSN"
    })?;
    let end_lsn = r.u64("end LSN")?;
    let ts = r.i64(if message == "Commit Prepared" {
        "commit timestamp"
    } else {
        "prepare timestamp"
    })?;
    let xid = r.u32("xid")?;
    let gid = r.string("gid")?;
    r.finish()?;
    Ok(PrepareLike {
        flags,
        lsn,
        end_lsn,
        ts,
        xid,
        gid,
    })
}

fn decode_rollback_prepared(data: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data, 1, "Rollback Prepared");
    let flags = r.u8("flags")?;
    let prepare_end_lsn = r.u64("prepare end LSN")?;
    let rollback_end_lsn = r.u64("rollback end LSN")?;
    let prepare_ts = r.i64("prepare timestamp")?;
    let rollback_ts = r.i64("rollback timestamp")?;
    let xid = r.u32("xid")?;
    let gid = r.string("gid")?;
    r.finish()?;
    Ok(LogicalMessage::RollbackPrepared {
        flags,
        prepare_end_lsn,
        rollback_end_lsn,
        prepare_ts,
        rollback_ts,
        xid,
        gid,
    })
}
