//! Test-only pgoutput encoder, written independently of the decoder from the
//! protocol documentation, used to build inputs and check round trips.

#![allow(dead_code)]

use bytes::Bytes;
use sluice_pgoutput::{LogicalMessage, Relation, TupleData, TupleValue};

/// Byte-buffer builder with the protocol's big-endian primitives.
#[derive(Default)]
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn new() -> Self {
        Buf(Vec::new())
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// NUL-terminated string.
    pub fn cstr(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

fn opt_xid(b: Buf, xid: &Option<u32>) -> Buf {
    match xid {
        Some(x) => b.u32(*x),
        None => b,
    }
}

/// pgoutput abbreviates pg_catalog as the empty string.
fn namespace(b: Buf, ns: &str) -> Buf {
    if ns == "pg_catalog" {
        b.cstr("")
    } else {
        b.cstr(ns)
    }
}

pub fn tuple(mut b: Buf, t: &TupleData) -> Buf {
    b = b.u16(t.values.len() as u16);
    for v in &t.values {
        b = match v {
            TupleValue::Null => b.u8(b'n'),
            TupleValue::UnchangedToast => b.u8(b'u'),
            TupleValue::Text(d) => b.u8(b't').u32(d.len() as u32).raw(d),
            TupleValue::Binary(d) => b.u8(b'b').u32(d.len() as u32).raw(d),
        };
    }
    b
}

fn relation(mut b: Buf, r: &Relation) -> Buf {
    b = b.u32(r.id);
    b = namespace(b, &r.namespace);
    b = b
        .cstr(&r.name)
        .u8(r.replica_identity)
        .u16(r.columns.len() as u16);
    for c in &r.columns {
        b = b
            .u8(c.flags)
            .cstr(&c.name)
            .u32(c.type_oid)
            .i32(c.type_modifier);
    }
    b
}

/// Encodes a message exactly as pgoutput would put it in XLogData.
pub fn encode(msg: &LogicalMessage) -> Bytes {
    use LogicalMessage as M;
    let b = Buf::new();
    let b = match msg {
        M::Begin {
            final_lsn,
            commit_ts,
            xid,
        } => b.u8(b'B').u64(*final_lsn).i64(*commit_ts).u32(*xid),
        M::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_ts,
        } => b
            .u8(b'C')
            .u8(*flags)
            .u64(*commit_lsn)
            .u64(*end_lsn)
            .i64(*commit_ts),
        M::Origin { commit_lsn, name } => b.u8(b'O').u64(*commit_lsn).cstr(name),
        M::Relation { xid, relation: r } => relation(opt_xid(b.u8(b'R'), xid), r),
        M::Type {
            xid,
            oid,
            namespace: ns,
            name,
        } => namespace(opt_xid(b.u8(b'Y'), xid).u32(*oid), ns).cstr(name),
        M::Insert {
            xid,
            relation_id,
            new,
        } => tuple(opt_xid(b.u8(b'I'), xid).u32(*relation_id).u8(b'N'), new),
        M::Update {
            xid,
            relation_id,
            old,
            key,
            new,
        } => {
            let mut b = opt_xid(b.u8(b'U'), xid).u32(*relation_id);
            if let Some(o) = old {
                b = tuple(b.u8(b'O'), o);
            }
            if let Some(k) = key {
                b = tuple(b.u8(b'K'), k);
            }
            tuple(b.u8(b'N'), new)
        }
        M::Delete {
            xid,
            relation_id,
            old,
            key,
        } => {
            let mut b = opt_xid(b.u8(b'D'), xid).u32(*relation_id);
            if let Some(o) = old {
                b = tuple(b.u8(b'O'), o);
            }
            if let Some(k) = key {
                b = tuple(b.u8(b'K'), k);
            }
            b
        }
        M::Truncate {
            xid,
            options,
            relation_ids,
        } => {
            let mut b = opt_xid(b.u8(b'T'), xid)
                .u32(relation_ids.len() as u32)
                .u8(*options);
            for id in relation_ids {
                b = b.u32(*id);
            }
            b
        }
        M::Message {
            xid,
            transactional,
            lsn,
            prefix,
            content,
        } => opt_xid(b.u8(b'M'), xid)
            .u8(u8::from(*transactional))
            .u64(*lsn)
            .cstr(prefix)
            .u32(content.len() as u32)
            .raw(content),
        M::StreamStart { xid, first_segment } => b.u8(b'S').u32(*xid).u8(u8::from(*first_segment)),
        M::StreamStop => b.u8(b'E'),
        M::StreamCommit {
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_ts,
        } => b
            .u8(b'c')
            .u32(*xid)
            .u8(*flags)
            .u64(*commit_lsn)
            .u64(*end_lsn)
            .i64(*commit_ts),
        M::StreamAbort {
            xid,
            subxid,
            abort_lsn,
            abort_ts,
        } => {
            let mut b = b.u8(b'A').u32(*xid).u32(*subxid);
            if let (Some(l), Some(t)) = (abort_lsn, abort_ts) {
                b = b.u64(*l).i64(*t);
            }
            b
        }
        M::BeginPrepare {
            prepare_lsn,
            end_lsn,
            prepare_ts,
            xid,
            gid,
        } => b
            .u8(b'b')
            .u64(*prepare_lsn)
            .u64(*end_lsn)
            .i64(*prepare_ts)
            .u32(*xid)
            .cstr(gid),
        M::Prepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_ts,
            xid,
            gid,
        } => b
            .u8(b'P')
            .u8(*flags)
            .u64(*prepare_lsn)
            .u64(*end_lsn)
            .i64(*prepare_ts)
            .u32(*xid)
            .cstr(gid),
        M::CommitPrepared {
            flags,
            commit_lsn,
            end_lsn,
            commit_ts,
            xid,
            gid,
        } => b
            .u8(b'K')
            .u8(*flags)
            .u64(*commit_lsn)
            .u64(*end_lsn)
            .i64(*commit_ts)
            .u32(*xid)
            .cstr(gid),
        M::RollbackPrepared {
            flags,
            prepare_end_lsn,
            rollback_end_lsn,
            prepare_ts,
            rollback_ts,
            xid,
            gid,
        } => b
            .u8(b'r')
            .u8(*flags)
            .u64(*prepare_end_lsn)
            .u64(*rollback_end_lsn)
            .i64(*prepare_ts)
            .i64(*rollback_ts)
            .u32(*xid)
            .cstr(gid),
        M::StreamPrepare {
            flags,
            prepare_lsn,
            end_lsn,
            prepare_ts,
            xid,
            gid,
        } => b
            .u8(b'p')
            .u8(*flags)
            .u64(*prepare_lsn)
            .u64(*end_lsn)
            .i64(*prepare_ts)
            .u32(*xid)
            .cstr(gid),
    };
    b.bytes()
}
