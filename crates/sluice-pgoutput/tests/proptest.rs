//! Property tests: no input can make the decoders panic, and every
//! well-formed message survives an encode/decode round trip.

mod common;

use bytes::Bytes;
use common::encode;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use sluice_pgoutput::{
    parse_copy_data, Column, Decoder, LogicalMessage as M, Relation, ReplicationMessage, TupleData,
    TupleValue,
};

const TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrpwkXZ\0";

fn stream_start() -> Bytes {
    encode(&M::StreamStart {
        xid: 1,
        first_segment: true,
    })
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ .é日\"-]{0,12}"
}

fn namespace() -> impl Strategy<Value = String> {
    // The empty namespace means pg_catalog on the wire, so it cannot round-trip.
    "[a-z_][a-z0-9_]{0,10}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = TupleData> {
    let value = prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        payload().prop_map(TupleValue::Text),
        payload().prop_map(TupleValue::Binary),
    ];
    proptest::collection::vec(value, 0..8).prop_map(|values| TupleData { values })
}

fn xid(streamed: bool) -> BoxedStrategy<Option<u32>> {
    if streamed {
        any::<u32>().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}

fn relation() -> impl Strategy<Value = Relation> {
    let column = (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| Column {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    );
    (
        any::<u32>(),
        namespace(),
        name(),
        prop::sample::select(vec![b'd', b'n', b'f', b'i']),
        proptest::collection::vec(column, 0..6),
    )
        .prop_map(
            |(id, namespace, name, replica_identity, columns)| Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            },
        )
}

/// Messages valid for `version`, in or out of a streamed block. Stream
/// Start/Stop are exercised by the sequence tests instead, because they
/// change the decoder state.
fn message(version: u32, streamed: bool) -> BoxedStrategy<M> {
    let mut arms: Vec<BoxedStrategy<M>> = vec![
        (any::<u64>(), any::<i64>(), any::<u32>())
            .prop_map(|(final_lsn, commit_ts, xid)| M::Begin {
                final_lsn,
                commit_ts,
                xid,
            })
            .boxed(),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>())
            .prop_map(|(flags, commit_lsn, end_lsn, commit_ts)| M::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_ts,
            })
            .boxed(),
        (any::<u64>(), name())
            .prop_map(|(commit_lsn, name)| M::Origin { commit_lsn, name })
            .boxed(),
        (xid(streamed), relation())
            .prop_map(|(xid, relation)| M::Relation { xid, relation })
            .boxed(),
        (xid(streamed), any::<u32>(), namespace(), name())
            .prop_map(|(xid, oid, namespace, name)| M::Type {
                xid,
                oid,
                namespace,
                name,
            })
            .boxed(),
        (xid(streamed), any::<u32>(), tuple())
            .prop_map(|(xid, relation_id, new)| M::Insert {
                xid,
                relation_id,
                new,
            })
            .boxed(),
        (
            xid(streamed),
            any::<u32>(),
            prop_oneof![
                Just((None, None)),
                tuple().prop_map(|t| (Some(t), None)),
                tuple().prop_map(|t| (None, Some(t))),
            ],
            tuple(),
        )
            .prop_map(|(xid, relation_id, (old, key), new)| M::Update {
                xid,
                relation_id,
                old,
                key,
                new,
            })
            .boxed(),
        (
            xid(streamed),
            any::<u32>(),
            prop_oneof![
                tuple().prop_map(|t| (Some(t), None)),
                tuple().prop_map(|t| (None, Some(t))),
            ],
        )
            .prop_map(|(xid, relation_id, (old, key))| M::Delete {
                xid,
                relation_id,
                old,
                key,
            })
            .boxed(),
        (
            xid(streamed),
            0u8..4,
            proptest::collection::vec(any::<u32>(), 0..6),
        )
            .prop_map(|(xid, options, relation_ids)| M::Truncate {
                xid,
                options,
                relation_ids,
            })
            .boxed(),
        (
            xid(streamed),
            any::<bool>(),
            any::<u64>(),
            name(),
            payload(),
        )
            .prop_map(|(xid, transactional, lsn, prefix, content)| M::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content,
            })
            .boxed(),
    ];
    if version >= 2 {
        arms.push(
            (
                any::<u32>(),
                any::<u8>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
            )
                .prop_map(
                    |(xid, flags, commit_lsn, end_lsn, commit_ts)| M::StreamCommit {
                        xid,
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_ts,
                    },
                )
                .boxed(),
        );
        let parallel = if version >= 4 {
            proptest::option::of((any::<u64>(), any::<i64>())).boxed()
        } else {
            Just(None).boxed()
        };
        arms.push(
            (any::<u32>(), any::<u32>(), parallel)
                .prop_map(|(xid, subxid, extra)| M::StreamAbort {
                    xid,
                    subxid,
                    abort_lsn: extra.map(|e| e.0),
                    abort_ts: extra.map(|e| e.1),
                })
                .boxed(),
        );
    }
    if version >= 3 {
        type Prep = (u8, u64, u64, i64, u32, String);
        let prep = || {
            (
                any::<u8>(),
                any::<u64>(),
                any::<u64>(),
                any::<i64>(),
                any::<u32>(),
                name(),
            )
        };
        arms.push(
            prep()
                .prop_map(
                    |(_, prepare_lsn, end_lsn, prepare_ts, xid, gid): Prep| M::BeginPrepare {
                        prepare_lsn,
                        end_lsn,
                        prepare_ts,
                        xid,
                        gid,
                    },
                )
                .boxed(),
        );
        arms.push(
            prep()
                .prop_map(
                    |(flags, prepare_lsn, end_lsn, prepare_ts, xid, gid)| M::Prepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_ts,
                        xid,
                        gid,
                    },
                )
                .boxed(),
        );
        arms.push(
            prep()
                .prop_map(
                    |(flags, commit_lsn, end_lsn, commit_ts, xid, gid)| M::CommitPrepared {
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_ts,
                        xid,
                        gid,
                    },
                )
                .boxed(),
        );
        arms.push(
            (prep(), any::<i64>())
                .prop_map(
                    |(
                        (flags, prepare_end_lsn, rollback_end_lsn, prepare_ts, xid, gid),
                        rollback_ts,
                    )| {
                        M::RollbackPrepared {
                            flags,
                            prepare_end_lsn,
                            rollback_end_lsn,
                            prepare_ts,
                            rollback_ts,
                            xid,
                            gid,
                        }
                    },
                )
                .boxed(),
        );
        arms.push(
            prep()
                .prop_map(
                    |(flags, prepare_lsn, end_lsn, prepare_ts, xid, gid)| M::StreamPrepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_ts,
                        xid,
                        gid,
                    },
                )
                .boxed(),
        );
    }
    Union::new(arms).boxed()
}

/// (protocol version, inside a streamed block, message).
fn case() -> impl Strategy<Value = (u32, bool, M)> {
    (1u32..=4, any::<bool>()).prop_flat_map(|(version, streamed)| {
        let streamed = streamed && version >= 2;
        (Just(version), Just(streamed), message(version, streamed))
    })
}

fn decoder(version: u32, streamed: bool) -> Decoder {
    let mut d = Decoder::new(version);
    if streamed {
        d.decode(&stream_start()).unwrap();
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        version in 0u32..6,
        streamed in any::<bool>(),
        tag in prop::sample::select(TAGS.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut d = Decoder::new(version);
        if streamed && version >= 2 {
            d.decode(&stream_start()).unwrap();
        }
        let mut raw = vec![tag];
        raw.extend_from_slice(&body);
        let _ = d.decode(&Bytes::from(raw));
        let _ = d.decode(&Bytes::from(body));
    }

    #[test]
    fn arbitrary_copy_data_never_panics(
        tag in prop::sample::select(TAGS.to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut raw = vec![tag];
        raw.extend_from_slice(&body);
        let _ = parse_copy_data(Bytes::from(raw));
        let _ = parse_copy_data(Bytes::from(body));
    }

    #[test]
    fn round_trip((version, streamed, msg) in case()) {
        let bytes = encode(&msg);
        let decoded = decoder(version, streamed).decode(&bytes);
        prop_assert_eq!(decoded.as_ref(), Ok(&msg));
    }

    #[test]
    fn truncated_or_extended_messages_are_errors((version, streamed, msg) in case()) {
        let bytes = encode(&msg);
        // With protocol 4 the parallel-apply fields of Stream Abort are
        // optional, so the 9-byte prefix and 16 extra bytes are valid there.
        let optional_tail = matches!(msg, M::StreamAbort { .. }) && version >= 4;
        for cut in 0..bytes.len() {
            if optional_tail && cut == 9 {
                continue;
            }
            prop_assert!(decoder(version, streamed).decode(&bytes.slice(..cut)).is_err());
        }
        if !optional_tail {
            let mut longer = bytes.to_vec();
            longer.push(0);
            prop_assert!(decoder(version, streamed).decode(&Bytes::from(longer)).is_err());
        }
    }

    #[test]
    fn xlogdata_round_trip(
        wal_start in any::<u64>(),
        wal_end in any::<u64>(),
        server_time in any::<i64>(),
        data in payload(),
    ) {
        let mut raw = vec![b'w'];
        raw.extend_from_slice(&wal_start.to_be_bytes());
        raw.extend_from_slice(&wal_end.to_be_bytes());
        raw.extend_from_slice(&server_time.to_be_bytes());
        raw.extend_from_slice(&data);
        prop_assert_eq!(
            parse_copy_data(Bytes::from(raw)).unwrap(),
            ReplicationMessage::XLogData { wal_start, wal_end, server_time, data }
        );
    }

    #[test]
    fn lsn_text_round_trip(lsn in any::<u64>()) {
        prop_assert_eq!(sluice_pgoutput::parse_lsn(&sluice_pgoutput::format_lsn(lsn)).unwrap(), lsn);
    }
}
