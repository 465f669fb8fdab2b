//! Hand-built pgoutput buffers for every message type.

mod common;

use bytes::Bytes;
use common::{encode, Buf};
use sluice_pgoutput::{
    Column, DecodeError, Decoder, LogicalMessage as M, Relation, TupleData, TupleValue,
};

fn text(s: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn decode(version: u32, b: Buf) -> Result<M, DecodeError> {
    Decoder::new(version).decode(&b.bytes())
}

/// Decodes inside a streamed block of xid 900.
fn decode_streamed(version: u32, b: Buf) -> Result<M, DecodeError> {
    let mut d = Decoder::new(version);
    d.decode(&Buf::new().u8(b'S').u32(900).u8(1).bytes())
        .unwrap();
    assert!(d.in_stream());
    d.decode(&b.bytes())
}

/// Every strict prefix of a valid message must be rejected without panicking.
fn assert_prefixes_fail(version: u32, streamed: bool, full: &[u8]) {
    for cut in 0..full.len() {
        let mut d = Decoder::new(version);
        if streamed {
            d.decode(&Buf::new().u8(b'S').u32(1).u8(0).bytes()).unwrap();
        }
        let r = d.decode(&Bytes::copy_from_slice(&full[..cut]));
        assert!(r.is_err(), "prefix of {cut} bytes decoded: {r:?}");
    }
}

#[test]
fn begin() {
    let b = Buf::new().u8(b'B').u64(0x16_B374_D848).i64(1234).u32(77);
    let full = b.0.clone();
    for v in [1, 2, 3, 4] {
        assert_eq!(
            decode(v, Buf(full.clone())).unwrap(),
            M::Begin {
                final_lsn: 0x16_B374_D848,
                commit_ts: 1234,
                xid: 77
            }
        );
    }
    assert_prefixes_fail(1, false, &full);
}

#[test]
fn commit() {
    let b = Buf::new().u8(b'C').u8(0).u64(10).u64(20).i64(-5);
    assert_eq!(
        decode(1, b).unwrap(),
        M::Commit {
            flags: 0,
            commit_lsn: 10,
            end_lsn: 20,
            commit_ts: -5
        }
    );
}

#[test]
fn origin() {
    let b = Buf::new().u8(b'O').u64(99).cstr("node_a");
    assert_eq!(
        decode(1, b).unwrap(),
        M::Origin {
            commit_lsn: 99,
            name: "node_a".into()
        }
    );
}

fn relation_body(b: Buf) -> Buf {
    b.u32(16384)
        .cstr("public")
        .cstr("orders")
        .u8(b'd')
        .u16(2)
        .u8(1)
        .cstr("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .cstr("note")
        .u32(1043)
        .i32(104)
}

fn expected_relation() -> Relation {
    Relation {
        id: 16384,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: b'd',
        columns: vec![
            Column {
                flags: 1,
                name: "id".into(),
                type_oid: 23,
                type_modifier: -1,
            },
            Column {
                flags: 0,
                name: "note".into(),
                type_oid: 1043,
                type_modifier: 104,
            },
        ],
    }
}

#[test]
fn relation_v1_and_streamed() {
    let m = decode(1, relation_body(Buf::new().u8(b'R'))).unwrap();
    assert_eq!(
        m,
        M::Relation {
            xid: None,
            relation: expected_relation()
        }
    );
    let M::Relation { relation, .. } = &m else {
        unreachable!()
    };
    assert!(relation.columns[0].is_key());
    assert!(!relation.columns[1].is_key());

    // Outside a streamed block protocol 2 has no xid either.
    assert_eq!(decode(2, relation_body(Buf::new().u8(b'R'))).unwrap(), m);

    let streamed = decode_streamed(2, relation_body(Buf::new().u8(b'R').u32(901))).unwrap();
    assert_eq!(
        streamed,
        M::Relation {
            xid: Some(901),
            relation: expected_relation()
        }
    );
    assert_prefixes_fail(2, true, &relation_body(Buf::new().u8(b'R').u32(901)).0);
}

#[test]
fn relation_pg_catalog_namespace_is_abbreviated() {
    let b = Buf::new()
        .u8(b'R')
        .u32(1)
        .cstr("")
        .cstr("t")
        .u8(b'n')
        .u16(0);
    let M::Relation { relation, .. } = decode(1, b).unwrap() else {
        panic!()
    };
    assert_eq!(relation.namespace, "pg_catalog");
    assert!(relation.columns.is_empty());
}

#[test]
fn type_message() {
    let b = Buf::new().u8(b'Y').u32(50001).cstr("public").cstr("mood");
    assert_eq!(
        decode(1, b).unwrap(),
        M::Type {
            xid: None,
            oid: 50001,
            namespace: "public".into(),
            name: "mood".into()
        }
    );
    let b = Buf::new()
        .u8(b'Y')
        .u32(902)
        .u32(50001)
        .cstr("")
        .cstr("int4");
    assert_eq!(
        decode_streamed(2, b).unwrap(),
        M::Type {
            xid: Some(902),
            oid: 50001,
            namespace: "pg_catalog".into(),
            name: "int4".into()
        }
    );
}

fn tuple_all_kinds(b: Buf) -> Buf {
    b.u16(4)
        .u8(b'n')
        .u8(b'u')
        .u8(b't')
        .u32(2)
        .raw(b"42")
        .u8(b'b')
        .u32(3)
        .raw(&[0, 1, 2])
}

fn expected_tuple() -> TupleData {
    TupleData {
        values: vec![
            TupleValue::Null,
            TupleValue::UnchangedToast,
            text("42"),
            TupleValue::Binary(Bytes::from_static(&[0, 1, 2])),
        ],
    }
}

#[test]
fn insert() {
    let buf = tuple_all_kinds(Buf::new().u8(b'I').u32(16384).u8(b'N')).bytes();
    let m = Decoder::new(1).decode(&buf).unwrap();
    assert_eq!(
        m,
        M::Insert {
            xid: None,
            relation_id: 16384,
            new: expected_tuple()
        }
    );
    // Values are slices of the input buffer, not copies.
    let M::Insert { new, .. } = m else {
        unreachable!()
    };
    let TupleValue::Text(t) = &new.values[2] else {
        unreachable!()
    };
    let start = t.as_ptr() as usize - buf.as_ptr() as usize;
    assert_eq!(&buf[start..start + 2], b"42");

    let streamed = tuple_all_kinds(Buf::new().u8(b'I').u32(903).u32(16384).u8(b'N'));
    assert_eq!(
        decode_streamed(2, streamed).unwrap(),
        M::Insert {
            xid: Some(903),
            relation_id: 16384,
            new: expected_tuple()
        }
    );
    assert_prefixes_fail(
        1,
        false,
        &tuple_all_kinds(Buf::new().u8(b'I').u32(16384).u8(b'N')).0,
    );
}

#[test]
fn update_variants() {
    let new_only = tuple_all_kinds(Buf::new().u8(b'U').u32(7).u8(b'N'));
    assert_eq!(
        decode(1, new_only).unwrap(),
        M::Update {
            xid: None,
            relation_id: 7,
            old: None,
            key: None,
            new: expected_tuple()
        }
    );
    let with_key = tuple_all_kinds(
        Buf::new()
            .u8(b'U')
            .u32(7)
            .u8(b'K')
            .u16(1)
            .u8(b't')
            .u32(1)
            .raw(b"1")
            .u8(b'N'),
    );
    assert_eq!(
        decode(1, with_key).unwrap(),
        M::Update {
            xid: None,
            relation_id: 7,
            old: None,
            key: Some(TupleData {
                values: vec![text("1")]
            }),
            new: expected_tuple()
        }
    );
    let with_old = tuple_all_kinds(
        Buf::new()
            .u8(b'U')
            .u32(904)
            .u32(7)
            .u8(b'O')
            .u16(1)
            .u8(b'n')
            .u8(b'N'),
    );
    assert_eq!(
        decode_streamed(2, with_old).unwrap(),
        M::Update {
            xid: Some(904),
            relation_id: 7,
            old: Some(TupleData {
                values: vec![TupleValue::Null]
            }),
            key: None,
            new: expected_tuple()
        }
    );
    // 'K' followed by something other than 'N'.
    let bad = Buf::new().u8(b'U').u32(7).u8(b'K').u16(0).u8(b'K').u16(0);
    let err = decode(1, bad).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::InvalidValue {
                message: "Update",
                field: "tuple type",
                offset: 8,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn delete_variants() {
    let key = Buf::new()
        .u8(b'D')
        .u32(7)
        .u8(b'K')
        .u16(1)
        .u8(b't')
        .u32(1)
        .raw(b"9");
    assert_eq!(
        decode(1, key).unwrap(),
        M::Delete {
            xid: None,
            relation_id: 7,
            old: None,
            key: Some(TupleData {
                values: vec![text("9")]
            })
        }
    );
    let old = tuple_all_kinds(Buf::new().u8(b'D').u32(905).u32(7).u8(b'O'));
    assert_eq!(
        decode_streamed(2, old).unwrap(),
        M::Delete {
            xid: Some(905),
            relation_id: 7,
            old: Some(expected_tuple()),
            key: None
        }
    );
    let err = decode(1, Buf::new().u8(b'D').u32(7).u8(b'N').u16(0)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidValue {
            message: "Delete",
            offset: 5,
            ..
        }
    ));
}

#[test]
fn truncate() {
    let b = Buf::new().u8(b'T').u32(2).u8(3).u32(10).u32(11);
    assert_eq!(
        decode(1, b).unwrap(),
        M::Truncate {
            xid: None,
            options: 3,
            relation_ids: vec![10, 11]
        }
    );
    let b = Buf::new().u8(b'T').u32(906).u32(1).u8(0).u32(10);
    assert_eq!(
        decode_streamed(2, b).unwrap(),
        M::Truncate {
            xid: Some(906),
            options: 0,
            relation_ids: vec![10]
        }
    );
    // A huge count with no ids behind it fails on the first missing id and
    // does not pre-allocate for the claimed count.
    let err = decode(1, Buf::new().u8(b'T').u32(u32::MAX).u8(0)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedEof {
            message: "Truncate",
            field: "relation id",
            offset: 6,
            ..
        }
    ));
}

#[test]
fn message() {
    let b = Buf::new()
        .u8(b'M')
        .u8(1)
        .u64(555)
        .cstr("sluice")
        .u32(5)
        .raw(b"hello");
    assert_eq!(
        decode(1, b).unwrap(),
        M::Message {
            xid: None,
            transactional: true,
            lsn: 555,
            prefix: "sluice".into(),
            content: Bytes::from_static(b"hello")
        }
    );
    let b = Buf::new().u8(b'M').u32(900).u8(0).u64(555).cstr("p").u32(0);
    assert_eq!(
        decode_streamed(2, b).unwrap(),
        M::Message {
            xid: Some(900),
            transactional: false,
            lsn: 555,
            prefix: "p".into(),
            content: Bytes::new()
        }
    );
}

#[test]
fn stream_control_messages() {
    let mut d = Decoder::new(2);
    assert_eq!(
        d.decode(&Buf::new().u8(b'S').u32(900).u8(1).bytes())
            .unwrap(),
        M::StreamStart {
            xid: 900,
            first_segment: true
        }
    );
    assert!(d.in_stream());
    assert_eq!(
        d.decode(&Buf::new().u8(b'E').bytes()).unwrap(),
        M::StreamStop
    );
    assert!(!d.in_stream());
    assert_eq!(
        d.decode(&Buf::new().u8(b'S').u32(900).u8(0).bytes())
            .unwrap(),
        M::StreamStart {
            xid: 900,
            first_segment: false
        }
    );
    d.decode(&Buf::new().u8(b'E').bytes()).unwrap();
    assert_eq!(
        d.decode(
            &Buf::new()
                .u8(b'c')
                .u32(900)
                .u8(0)
                .u64(1)
                .u64(2)
                .i64(3)
                .bytes()
        )
        .unwrap(),
        M::StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: 1,
            end_lsn: 2,
            commit_ts: 3
        }
    );
    assert_eq!(
        d.decode(&Buf::new().u8(b'A').u32(900).u32(901).bytes())
            .unwrap(),
        M::StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: None,
            abort_ts: None
        }
    );
    // Protocol 2 never has the parallel-apply abort fields.
    assert!(matches!(
        d.decode(&Buf::new().u8(b'A').u32(1).u32(1).u64(5).i64(6).bytes()),
        Err(DecodeError::TrailingBytes { offset: 9, .. })
    ));
}

#[test]
fn stream_abort_protocol_4() {
    let mut d = Decoder::new(4);
    // streaming = on: no extra fields.
    assert_eq!(
        d.decode(&Buf::new().u8(b'A').u32(9).u32(9).bytes())
            .unwrap(),
        M::StreamAbort {
            xid: 9,
            subxid: 9,
            abort_lsn: None,
            abort_ts: None
        }
    );
    // streaming = parallel: abort LSN and timestamp.
    assert_eq!(
        d.decode(&Buf::new().u8(b'A').u32(9).u32(10).u64(77).i64(-8).bytes())
            .unwrap(),
        M::StreamAbort {
            xid: 9,
            subxid: 10,
            abort_lsn: Some(77),
            abort_ts: Some(-8)
        }
    );
    let err = d
        .decode(&Buf::new().u8(b'A').u32(9).u32(10).u64(77).bytes())
        .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedEof {
            message: "Stream Abort",
            field: "abort timestamp",
            offset: 17,
            ..
        }
    ));
}

#[test]
fn two_phase_messages() {
    let gid = "pg_gid_1_2";
    assert_eq!(
        decode(3, Buf::new().u8(b'b').u64(1).u64(2).i64(3).u32(4).cstr(gid)).unwrap(),
        M::BeginPrepare {
            prepare_lsn: 1,
            end_lsn: 2,
            prepare_ts: 3,
            xid: 4,
            gid: gid.into()
        }
    );
    assert_eq!(
        decode(
            3,
            Buf::new()
                .u8(b'P')
                .u8(0)
                .u64(1)
                .u64(2)
                .i64(3)
                .u32(4)
                .cstr(gid)
        )
        .unwrap(),
        M::Prepare {
            flags: 0,
            prepare_lsn: 1,
            end_lsn: 2,
            prepare_ts: 3,
            xid: 4,
            gid: gid.into()
        }
    );
    assert_eq!(
        decode(
            3,
            Buf::new()
                .u8(b'K')
                .u8(0)
                .u64(5)
                .u64(6)
                .i64(7)
                .u32(4)
                .cstr(gid)
        )
        .unwrap(),
        M::CommitPrepared {
            flags: 0,
            commit_lsn: 5,
            end_lsn: 6,
            commit_ts: 7,
            xid: 4,
            gid: gid.into()
        }
    );
    assert_eq!(
        decode(
            4,
            Buf::new()
                .u8(b'r')
                .u8(0)
                .u64(2)
                .u64(8)
                .i64(3)
                .i64(9)
                .u32(4)
                .cstr(gid)
        )
        .unwrap(),
        M::RollbackPrepared {
            flags: 0,
            prepare_end_lsn: 2,
            rollback_end_lsn: 8,
            prepare_ts: 3,
            rollback_ts: 9,
            xid: 4,
            gid: gid.into()
        }
    );
    assert_eq!(
        decode(
            3,
            Buf::new()
                .u8(b'p')
                .u8(0)
                .u64(1)
                .u64(2)
                .i64(3)
                .u32(4)
                .cstr(gid)
        )
        .unwrap(),
        M::StreamPrepare {
            flags: 0,
            prepare_lsn: 1,
            end_lsn: 2,
            prepare_ts: 3,
            xid: 4,
            gid: gid.into()
        }
    );
}

#[test]
fn protocol_version_gates() {
    let cases: [(u32, Buf); 4] = [
        (1, Buf::new().u8(b'S').u32(1).u8(1)),
        (1, Buf::new().u8(b'c').u32(1).u8(0).u64(1).u64(2).i64(3)),
        (2, Buf::new().u8(b'b').u64(1).u64(2).i64(3).u32(4).cstr("g")),
        (
            2,
            Buf::new()
                .u8(b'p')
                .u8(0)
                .u64(1)
                .u64(2)
                .i64(3)
                .u32(4)
                .cstr("g"),
        ),
    ];
    for (version, b) in cases {
        let err = decode(version, b).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedByProtocolVersion { protocol_version, .. } if protocol_version == version),
            "{err:?}"
        );
    }
}

#[test]
fn stream_state_violations() {
    let mut d = Decoder::new(2);
    let err = d.decode(&Buf::new().u8(b'E').bytes()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedInStreamState {
            message: "Stream Stop",
            ..
        }
    ));
    d.decode(&Buf::new().u8(b'S').u32(1).u8(1).bytes()).unwrap();
    assert!(d.decode(&Buf::new().u8(b'S').u32(2).u8(1).bytes()).is_err());
    // The failed Stream Start did not change the state.
    assert!(d.in_stream());
    // A truncated Stream Start does not open a block either.
    let mut d = Decoder::new(2);
    assert!(d.decode(&Buf::new().u8(b'S').u32(2).bytes()).is_err());
    assert!(!d.in_stream());
}

/// A full streamed transaction interleaved with a regular one, as the server
/// sends it with protocol 2 and streaming = on.
#[test]
fn streamed_block_interleaved_with_regular_transaction() {
    let ins = |xid: Option<u32>, v: &str| M::Insert {
        xid,
        relation_id: 16384,
        new: TupleData {
            values: vec![text(v)],
        },
    };
    let rel = |xid| M::Relation {
        xid,
        relation: expected_relation(),
    };
    let sequence = vec![
        M::StreamStart {
            xid: 900,
            first_segment: true,
        },
        rel(Some(900)),
        ins(Some(900), "a"),
        ins(Some(901), "b"),
        M::StreamStop,
        M::Begin {
            final_lsn: 50,
            commit_ts: 1,
            xid: 950,
        },
        rel(None),
        ins(None, "c"),
        M::Commit {
            flags: 0,
            commit_lsn: 50,
            end_lsn: 60,
            commit_ts: 1,
        },
        M::StreamStart {
            xid: 900,
            first_segment: false,
        },
        ins(Some(902), "d"),
        M::StreamStop,
        M::StreamAbort {
            xid: 900,
            subxid: 902,
            abort_lsn: None,
            abort_ts: None,
        },
        M::StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: 70,
            end_lsn: 80,
            commit_ts: 2,
        },
    ];
    let mut d = Decoder::new(2);
    for msg in &sequence {
        let bytes = encode(msg);
        // The xid prefix is exactly what makes streamed changes longer.
        if let M::Insert { xid, .. } = msg {
            assert_eq!(bytes.len(), if xid.is_some() { 18 } else { 14 });
        }
        assert_eq!(&d.decode(&bytes).unwrap(), msg);
    }
    assert!(!d.in_stream());
}

#[test]
fn string_errors() {
    // Missing NUL terminator.
    let err = decode(1, Buf::new().u8(b'O').u64(1).raw(b"abc")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnterminatedString {
            message: "Origin",
            field: "name",
            offset: 9
        }
    );
    // Invalid UTF-8 in a column name.
    let b = Buf::new()
        .u8(b'R')
        .u32(1)
        .cstr("public")
        .cstr("t")
        .u8(b'd')
        .u16(1)
        .u8(0)
        .raw(&[b'a', 0xff, 0])
        .u32(23)
        .i32(-1);
    let err = decode(1, b).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            message: "Relation",
            field: "column name",
            offset: 18,
            valid_up_to: 1
        }
    );
    let shown = err.to_string();
    assert!(shown.contains("Relation") && shown.contains("column name") && shown.contains("18"));
}

#[test]
fn tuple_errors() {
    let bad_kind = Buf::new().u8(b'I').u32(1).u8(b'N').u16(1).u8(b'x');
    let err = decode(1, bad_kind).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidValue {
            message: "Insert",
            field: "tuple value kind",
            offset: 8,
            ..
        }
    ));
    assert!(err.to_string().contains("'x'"));

    // A length far beyond the message is rejected before slicing or allocating.
    let long = Buf::new()
        .u8(b'I')
        .u32(1)
        .u8(b'N')
        .u16(1)
        .u8(b't')
        .u32(0x7fff_ffff)
        .raw(b"ab");
    assert_eq!(
        decode(1, long).unwrap_err(),
        DecodeError::UnexpectedEof {
            message: "Insert",
            field: "tuple text value",
            offset: 13,
            needed: 0x7fff_ffff,
            available: 2
        }
    );
    // A negative length.
    let neg = Buf::new().u8(b'I').u32(1).u8(b'N').u16(1).u8(b'b').i32(-1);
    assert!(matches!(
        decode(1, neg).unwrap_err(),
        DecodeError::InvalidValue {
            field: "tuple binary value",
            offset: 9,
            ..
        }
    ));
    // Claimed 65535 columns with none present.
    let many = Buf::new().u8(b'I').u32(1).u8(b'N').u16(u16::MAX);
    assert!(matches!(
        decode(1, many).unwrap_err(),
        DecodeError::UnexpectedEof {
            field: "tuple value kind",
            offset: 8,
            ..
        }
    ));
    // Insert must carry 'N'.
    assert!(decode(1, Buf::new().u8(b'I').u32(1).u8(b'K').u16(0)).is_err());
}

#[test]
fn trailing_bytes_and_unknown_types() {
    let err = decode(1, Buf::new().u8(b'B').u64(1).i64(2).u32(3).u8(0)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TrailingBytes {
            message: "Begin",
            offset: 21,
            remaining: 1
        }
    );
    // A streamed change decoded without the stream state looks like it has
    // trailing bytes, which surfaces a desynchronised decoder.
    let b = Buf::new().u8(b'T').u32(906).u32(1).u8(0).u32(10);
    assert!(decode(2, b).is_err());
    assert!(matches!(
        decode(1, Buf::new().u8(b'Z')).unwrap_err(),
        DecodeError::UnknownMessageType { tag: b'Z', .. }
    ));
    assert!(matches!(
        Decoder::new(1).decode(&Bytes::new()).unwrap_err(),
        DecodeError::UnexpectedEof { offset: 0, .. }
    ));
}
