//! Spill buffer: bounded memory, replay order, aborts.

mod common;

use bytes::Bytes;
use common::Buf;
use proptest::prelude::*;
use sluice_pgoutput::{SpillError, StreamedTxns};

/// A streamed Insert of `xid` (the subtransaction) carrying `n` as text.
fn insert(subxid: u32, n: u64) -> Bytes {
    let v = n.to_string();
    Buf::new()
        .u8(b'I')
        .u32(subxid)
        .u32(16384)
        .u8(b'N')
        .u16(1)
        .u8(b't')
        .u32(v.len() as u32)
        .raw(v.as_bytes())
        .bytes()
}

fn replay(t: &mut StreamedTxns, xid: u32) -> Vec<(u64, Bytes)> {
    t.commit(xid)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn memory_only_commit_replays_in_order() {
    let mut t = StreamedTxns::new(None, 1 << 20);
    for i in 0..10 {
        t.push(7, i, &insert(7, i)).unwrap();
    }
    assert_eq!(t.spill_files(), 0);
    let got = replay(&mut t, 7);
    assert_eq!(got.len(), 10);
    for (i, (lsn, data)) in got.iter().enumerate() {
        assert_eq!(*lsn, i as u64);
        assert_eq!(data, &insert(7, i as u64));
    }
    assert_eq!(t.memory_used(), 0);
    assert!(t.is_empty());
    // Nothing buffered: empty replay, not an error.
    assert_eq!(t.commit(12345).unwrap().count(), 0);
}

#[test]
fn hundred_thousand_messages_stay_under_a_small_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 16 * 1024;
    let mut t = StreamedTxns::new(Some(dir.path().to_path_buf()), limit);
    // Three interleaved transactions; 1001 will be aborted.
    let xids = [1000u32, 1001, 1002];
    let mut peak = 0;
    for i in 0..100_000u64 {
        let xid = xids[(i % 3) as usize];
        t.push(xid, i, &insert(xid, i)).unwrap();
        assert!(t.memory_used() <= limit, "{} > {limit}", t.memory_used());
        peak = peak.max(t.memory_used());
    }
    assert!(
        peak > limit / 2,
        "memory should actually be used, peak {peak}"
    );
    assert!(t.spill_files() >= 1);
    assert!(t.spilled_bytes() > 1_000_000);

    t.abort(1001, 1001);
    assert_eq!(t.len(), 2);

    for xid in [1000u32, 1002] {
        let mut expected = (0..100_000u64).filter(|i| xids[(i % 3) as usize] == xid);
        let mut count = 0;
        for item in t.commit(xid).unwrap() {
            let (lsn, data) = item.unwrap();
            let want = expected.next().unwrap();
            assert_eq!(lsn, want);
            assert_eq!(data, insert(xid, want));
            count += 1;
        }
        assert!(expected.next().is_none());
        assert!(count > 33_000);
    }
    assert!(t.is_empty());
    assert_eq!(t.memory_used(), 0);
    assert_eq!(t.spill_files(), 0);
    assert_eq!(t.spilled_bytes(), 0);
    // Spill files are anonymous: nothing is ever left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn top_level_abort_discards_everything() {
    let mut t = StreamedTxns::new(None, 200);
    for i in 0..1000 {
        t.push(5, i, &insert(5, i)).unwrap();
        t.push(6, i, &insert(6, i)).unwrap();
    }
    t.abort(5, 5);
    assert_eq!(t.commit(5).unwrap().count(), 0);
    assert_eq!(replay(&mut t, 6).len(), 1000);
}

#[test]
fn subtransaction_abort_in_memory_and_spilled() {
    for limit in [1 << 20, 300, 0] {
        let mut t = StreamedTxns::new(None, limit);
        // top 10, then savepoint 11 (with nested 12), rolled back, then 13.
        t.push(10, 1, &insert(10, 1)).unwrap();
        t.push(10, 2, &insert(11, 2)).unwrap();
        t.push(10, 3, &insert(12, 3)).unwrap();
        t.push(10, 4, &insert(11, 4)).unwrap();
        // Unknown subxid (no streamed changes): no-op.
        t.abort(10, 99);
        // PostgreSQL aborts the nested subxid first, then its parent.
        t.abort(10, 12);
        t.abort(10, 11);
        t.push(10, 5, &insert(13, 5)).unwrap();
        t.push(10, 6, &insert(10, 6)).unwrap();
        // A later, unrelated abort of a rolled-back-and-reused subxid.
        t.push(10, 7, &insert(14, 7)).unwrap();
        t.abort(10, 14);
        let lsns: Vec<u64> = replay(&mut t, 10).into_iter().map(|(l, _)| l).collect();
        assert_eq!(lsns, vec![1, 5, 6], "limit {limit}");
        assert_eq!(t.memory_used(), 0);
    }
}

#[test]
fn oversized_record_keeps_order() {
    let mut t = StreamedTxns::new(None, 1000);
    t.push(1, 1, &insert(1, 1)).unwrap();
    let big = Bytes::from(vec![b'E'; 5000]);
    t.push(1, 2, &big).unwrap();
    t.push(1, 3, &insert(1, 3)).unwrap();
    assert!(t.memory_used() <= 1000);
    let got = replay(&mut t, 1);
    assert_eq!(
        got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(got[1].1, big);
}

#[test]
fn spill_directory_errors_are_reported() {
    let mut t = StreamedTxns::new(Some("/nonexistent/sluice/spill".into()), 0);
    let err = t.push(42, 1, &insert(42, 1)).unwrap_err();
    assert!(matches!(err, SpillError::Io { xid: 42, .. }));
    assert!(err.to_string().contains("42"));
}

#[derive(Debug, Clone)]
enum Op {
    Push { xid: u32, sub: u32, len: usize },
    Abort { xid: u32, sub: u32 },
    Commit { xid: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3, 0u32..4, 0usize..300).prop_map(|(xid, sub, len)| Op::Push { xid, sub, len }),
        2 => (0u32..3, 0u32..4).prop_map(|(xid, sub)| Op::Abort { xid, sub }),
        1 => (0u32..3).prop_map(|xid| Op::Commit { xid }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The buffer behaves like a simple in-memory model under any sequence of
    /// pushes, aborts and commits, for any memory limit.
    #[test]
    fn matches_model(limit in 0usize..2000, ops in proptest::collection::vec(op(), 0..120)) {
        // Subtransaction ids are xid * 10 + sub; sub 0 is the top level.
        let full = |xid: u32, sub: u32| if sub == 0 { xid } else { xid * 10 + sub + 100 };
        let mut t = StreamedTxns::new(None, limit);
        let mut model: std::collections::HashMap<u32, Vec<(u32, u64, Bytes)>> = Default::default();
        let mut lsn = 0u64;
        for op in ops {
            match op {
                Op::Push { xid, sub, len } => {
                    lsn += 1;
                    let data = Bytes::from(vec![(lsn % 251) as u8; len]);
                    let subxid = full(xid, sub);
                    t.push_subxact(xid, subxid, lsn, &data).unwrap();
                    model.entry(xid).or_default().push((subxid, lsn, data));
                }
                Op::Abort { xid, sub } => {
                    let subxid = full(xid, sub);
                    t.abort(xid, subxid);
                    if subxid == xid {
                        model.remove(&xid);
                    } else if let Some(v) = model.get_mut(&xid) {
                        if let Some(pos) = v.iter().position(|r| r.0 == subxid) {
                            v.truncate(pos);
                        }
                    }
                }
                Op::Commit { xid } => {
                    let got: Vec<(u64, Bytes)> = t.commit(xid).unwrap().collect::<Result<_, _>>().unwrap();
                    let want: Vec<(u64, Bytes)> = model
                        .remove(&xid)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, l, d)| (l, d))
                        .collect();
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert!(t.memory_used() <= limit);
        }
    }
}
