//! Delivery bookkeeping: which of a source task's records every sink task
//! they went to has made durable, and so which source offsets may be
//! committed.
//!
//! Each record a source task sends gets the next sequence number. A sink task
//! receives one source's records in sequence order and acknowledges them in
//! that order after its `flush`, so per (source task, sink task) pair three
//! numbers suffice: the highest sequence dispatched to that sink task, the
//! highest it acknowledged, and the first sequence it has outstanding. A pair
//! with nothing outstanding holds nothing back; a pair with records
//! outstanding holds the committable point just below its first outstanding
//! record. When an acknowledgement covers only part of what is outstanding,
//! the first outstanding record is only known to be above the
//! acknowledgement, so the bound is conservative until the next full
//! acknowledgement; it never runs ahead of an unacknowledged record. O(1) per
//! record and sink task it goes to; O(sink tasks) per commit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use sluice_core::record::SourceOffset;

use crate::metrics::{now_us, LatencyHistogram, LatencySummary};

/// A sink task's index among all sink tasks of the worker.
pub type SinkTaskIndex = usize;

#[derive(Debug, Clone, Copy, Default)]
struct Pair {
    dispatched: u64,
    acked: u64,
    /// Sequence of the first record this sink task has not acknowledged
    /// (meaningful while `acked < dispatched`).
    first_outstanding: u64,
}

/// The watermarks of one source task across all sink tasks.
#[derive(Debug, Clone)]
pub struct Watermarks {
    last: u64,
    pairs: Vec<Pair>,
}

impl Watermarks {
    /// Watermarks for a worker with `sink_tasks` sink tasks.
    pub fn new(sink_tasks: usize) -> Self {
        Watermarks {
            last: 0,
            pairs: vec![Pair::default(); sink_tasks],
        }
    }

    /// Registers the next record as dispatched to `sinks` (possibly none);
    /// returns its sequence number (1, 2, ...). Must be called before the
    /// record is handed to those sink tasks, so an ack never precedes it.
    pub fn dispatch(&mut self, sinks: &[SinkTaskIndex]) -> u64 {
        self.last += 1;
        for &s in sinks {
            // Sink tasks created at runtime get indices past the end.
            if s >= self.pairs.len() {
                self.pairs.resize(s + 1, Pair::default());
            }
            let p = &mut self.pairs[s];
            if p.acked >= p.dispatched {
                p.first_outstanding = self.last;
            }
            p.dispatched = self.last;
        }
        self.last
    }

    /// Sink task `sink` made every record of this source up to `seq` durable.
    pub fn ack(&mut self, sink: SinkTaskIndex, seq: u64) {
        let Some(p) = self.pairs.get_mut(sink) else {
            // Nothing was ever dispatched to it.
            return;
        };
        p.acked = p.acked.max(seq.min(p.dispatched));
        if p.acked < p.dispatched {
            p.first_outstanding = p.first_outstanding.max(p.acked + 1);
        }
    }

    /// Stops waiting on sink task `sink` (its connector was deleted or
    /// restarted): what it had not acknowledged no longer holds back the
    /// committable point. Those records are not written anywhere by it, as
    /// in Kafka Connect, where a deleted sink simply stops consuming.
    pub fn forget(&mut self, sink: SinkTaskIndex) {
        if let Some(p) = self.pairs.get_mut(sink) {
            p.acked = p.dispatched;
        }
    }

    /// The highest S such that every record with sequence <= S is delivered.
    pub fn delivered_up_to(&self) -> u64 {
        self.pairs
            .iter()
            .filter(|p| p.acked < p.dispatched)
            .map(|p| p.first_outstanding - 1)
            .min()
            .unwrap_or(self.last)
    }
}

struct State {
    marks: Watermarks,
    /// Offsets of dispatched records not yet known delivered, oldest first.
    offsets: VecDeque<(u64, Arc<SourceOffset>)>,
    /// How many entries at the front of `offsets` were seen delivered
    /// (their latency taken) but not taken for a commit yet.
    observed: usize,
    /// Whether any record carried a source offset.
    had_offsets: bool,
    stats: DeliveryStats,
}

/// A source task's delivery figures: how many of its records were delivered
/// (made durable by every sink they went to, or acknowledged by Kafka), over
/// what time, and how long after their PostgreSQL commit.
#[derive(Debug, Clone, Default)]
pub struct DeliveryStats {
    /// Records delivered (offset-only markers included).
    pub delivered: u64,
    /// Wall clock (µs since the epoch) when the first record was handed to
    /// the worker.
    pub first_dispatch_us: Option<i64>,
    /// Wall clock (µs since the epoch) when the first record was delivered.
    pub first_us: Option<i64>,
    /// Wall clock when the last record was delivered.
    pub last_us: Option<i64>,
    /// From the commit time a streamed record's offset carries (`ts_usec`,
    /// Debezium's) to its delivery; snapshot reads have none.
    pub latency: LatencyHistogram,
}

impl DeliveryStats {
    /// The latency percentiles, if any record had a commit time.
    pub fn latency_summary(&self) -> Option<LatencySummary> {
        (self.latency.count() > 0).then(|| self.latency.summary())
    }
}

/// The commit time of a streamed record, from its Debezium offset.
fn commit_time_us(offset: &SourceOffset) -> Option<i64> {
    if offset.offset.contains_key("snapshot") {
        return None;
    }
    offset.offset.get("ts_usec")?.as_i64()
}

impl State {
    /// Takes note of what became delivered since the last look.
    fn observe(&mut self) {
        let upto = self.marks.delivered_up_to();
        if upto <= self.stats.delivered {
            return;
        }
        let now = now_us();
        self.stats.delivered = upto;
        self.stats.first_us.get_or_insert(now);
        self.stats.last_us = Some(now);
        while let Some((seq, offset)) = self.offsets.get(self.observed) {
            if *seq > upto {
                break;
            }
            if let Some(ts) = commit_time_us(offset) {
                self.stats.latency.record_us(now - ts);
            }
            self.observed += 1;
        }
    }
}

/// One source task's delivery state, shared by its sender, the sink drivers
/// (acks) and the offset committer.
pub struct DeliveryTracker {
    state: Mutex<State>,
}

impl DeliveryTracker {
    /// A tracker for a worker with `sink_tasks` sink tasks.
    pub fn new(sink_tasks: usize) -> Self {
        DeliveryTracker {
            state: Mutex::new(State {
                marks: Watermarks::new(sink_tasks),
                offsets: VecDeque::new(),
                observed: 0,
                had_offsets: false,
                stats: DeliveryStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere
        // must not stop offsets from being committed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a record (see [`Watermarks::dispatch`]) with the offset it
    /// carries.
    pub fn dispatch(&self, sinks: &[SinkTaskIndex], offset: Option<&Arc<SourceOffset>>) -> u64 {
        let mut st = self.lock();
        if st.stats.first_dispatch_us.is_none() {
            st.stats.first_dispatch_us = Some(now_us());
        }
        let seq = st.marks.dispatch(sinks);
        if let Some(o) = offset {
            st.had_offsets = true;
            st.offsets.push_back((seq, Arc::clone(o)));
        }
        seq
    }

    /// See [`Watermarks::ack`].
    pub fn ack(&self, sink: SinkTaskIndex, seq: u64) {
        let mut st = self.lock();
        st.marks.ack(sink, seq);
        st.observe();
    }

    /// See [`Watermarks::forget`].
    pub fn forget(&self, sink: SinkTaskIndex) {
        let mut st = self.lock();
        st.marks.forget(sink);
        st.observe();
    }

    /// The delivery figures so far.
    pub fn stats(&self) -> DeliveryStats {
        self.lock().stats.clone()
    }

    /// The highest sequence number up to which every record is delivered.
    pub fn delivered_up_to(&self) -> u64 {
        self.lock().marks.delivered_up_to()
    }

    /// Removes and returns, oldest first, the offsets of records that are now
    /// delivered. The last one per source partition is what to commit.
    pub fn take_committable(&self) -> Vec<Arc<SourceOffset>> {
        let mut st = self.lock();
        let upto = st.marks.delivered_up_to();
        let mut out = Vec::new();
        while st.offsets.front().is_some_and(|(seq, _)| *seq <= upto) {
            if let Some((_, o)) = st.offsets.pop_front() {
                out.push(o);
                st.observed = st.observed.saturating_sub(1);
            }
        }
        out
    }
}

impl Drop for DeliveryTracker {
    /// The source task's delivery figures, once, when it is gone (the
    /// benchmark reads them from this line).
    fn drop(&mut self) {
        let st = self.lock();
        let stats = &st.stats;
        // Trackers without source offsets (a Kafka sink task's bookkeeping
        // of what it consumed) have nothing to say about a source.
        if stats.delivered == 0 || !st.had_offsets {
            return;
        }
        let secs = match (stats.first_dispatch_us, stats.last_us) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
            _ => 0.0,
        };
        let latency = stats
            .latency_summary()
            .map_or_else(|| "n/a".to_string(), |l| l.to_string());
        tracing::info!(
            "delivery: {} records of a source task delivered in {:.3} s from the first record sent; commit-to-delivery latency {}",
            stats.delivered,
            secs,
            latency
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_without_sinks_are_delivered_at_once() {
        let mut w = Watermarks::new(2);
        w.dispatch(&[]);
        w.dispatch(&[]);
        assert_eq!(w.delivered_up_to(), 2);
        w.dispatch(&[1]);
        // Records 1 and 2 went nowhere: only record 3 is outstanding.
        assert_eq!(w.delivered_up_to(), 2);
        w.ack(1, 3);
        assert_eq!(w.delivered_up_to(), 3);
    }

    #[test]
    fn offsets_are_released_in_order() {
        let t = DeliveryTracker::new(1);
        let off = |n: i64| {
            let mut o = serde_json::Map::new();
            o.insert("n".into(), n.into());
            Arc::new(SourceOffset {
                partition: serde_json::Map::new(),
                offset: o,
            })
        };
        t.dispatch(&[0], Some(&off(1)));
        t.dispatch(&[0], None);
        t.dispatch(&[0], Some(&off(3)));
        assert!(t.take_committable().is_empty());
        t.ack(0, 2);
        let got = t.take_committable();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset.get("n"), Some(&1.into()));
        t.ack(0, 3);
        let got = t.take_committable();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset.get("n"), Some(&3.into()));
    }

    #[test]
    fn latency_is_taken_once_per_streamed_record_when_delivered() {
        let t = DeliveryTracker::new(2);
        let committed = now_us() - 3_000_000;
        let off = |snapshot: bool| {
            let mut o = serde_json::Map::new();
            o.insert("ts_usec".into(), committed.into());
            if snapshot {
                o.insert("snapshot".into(), true.into());
            }
            Arc::new(SourceOffset {
                partition: serde_json::Map::new(),
                offset: o,
            })
        };
        t.dispatch(&[0], Some(&off(true)));
        t.dispatch(&[0, 1], Some(&off(false)));
        t.dispatch(&[1], Some(&off(false)));
        t.ack(0, 2);
        // Record 2 still waits for sink task 1; the snapshot read has no
        // commit time.
        assert_eq!(t.stats().delivered, 1);
        assert!(t.stats().latency_summary().is_none());
        t.ack(1, 2);
        assert_eq!(t.take_committable().len(), 2);
        t.ack(1, 3);
        t.ack(1, 3);
        let stats = t.stats();
        assert_eq!(stats.delivered, 3);
        assert!(stats.first_dispatch_us <= stats.first_us);
        assert!(stats.first_us <= stats.last_us);
        let latency = stats.latency_summary().expect("latency");
        assert_eq!(latency.count, 2);
        assert!(latency.p50_ms >= 3000.0, "{latency}");
        assert_eq!(t.take_committable().len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Dispatch the next record to this subset (bitmask) of sink tasks.
        Dispatch(u8),
        /// Sink task `.0` acks this many more of its received records.
        Ack(usize, usize),
    }

    fn ops(sinks: usize) -> impl Strategy<Value = Vec<Op>> {
        let mask = (1u8 << sinks) - 1;
        proptest::collection::vec(
            prop_oneof![
                (0..=mask).prop_map(Op::Dispatch),
                (0..sinks, 0usize..4).prop_map(|(s, n)| Op::Ack(s, n)),
            ],
            0..200,
        )
    }

    proptest! {
        /// Whatever the interleaving, the committable point never covers a
        /// record some sink task it went to has not acknowledged, and once
        /// everything is acknowledged, everything is committable.
        #[test]
        fn never_commits_an_unacked_record((sinks, ops) in (1usize..5).prop_flat_map(|s| (Just(s), ops(s)))) {
            let mut w = Watermarks::new(sinks);
            // Ground truth: per record its sinks; per sink its received
            // sequences in order and how many it acked.
            let mut dests: Vec<Vec<usize>> = Vec::new();
            let mut received: Vec<Vec<u64>> = vec![Vec::new(); sinks];
            let mut acked: Vec<usize> = vec![0; sinks];
            for op in ops {
                match op {
                    Op::Dispatch(mask) => {
                        let d: Vec<usize> = (0..sinks).filter(|s| mask & (1 << s) != 0).collect();
                        let seq = w.dispatch(&d);
                        for &s in &d { received[s].push(seq); }
                        dests.push(d);
                    }
                    Op::Ack(s, n) => {
                        acked[s] = (acked[s] + n).min(received[s].len());
                        if acked[s] > 0 {
                            w.ack(s, received[s][acked[s] - 1]);
                        }
                    }
                }
                let upto = w.delivered_up_to();
                prop_assert!(upto as usize <= dests.len());
                for seq in 1..=upto {
                    for &s in &dests[(seq - 1) as usize] {
                        let done = received[s][..acked[s]].contains(&seq);
                        prop_assert!(done, "record {} committable but sink {} has not acked it", seq, s);
                    }
                }
            }
            for (s, got) in received.iter().enumerate() {
                if let Some(&last) = got.last() { w.ack(s, last); }
            }
            prop_assert_eq!(w.delivered_up_to() as usize, dests.len());
        }
    }
}
