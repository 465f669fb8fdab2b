//! Delivery bookkeeping: which of a source task's records the transport has
//! stored durably, and so which source offsets may be committed.
//!
//! Each record a source task sends gets the next sequence number when it is
//! handed to the transport ([`DeliveryTracker::dispatch`]); the transport
//! acknowledges sequence numbers in order ([`DeliveryTracker::ack`],
//! usually through an [`InOrderAcks`]), so one number says what is
//! delivered: every record up to it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use sluice_core::record::SourceOffset;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::{now_us, LatencyHistogram, LatencySummary};

struct State {
    /// Sequence of the last record dispatched.
    last: u64,
    /// Every record up to this one is delivered.
    acked: u64,
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
        let upto = self.acked;
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

/// One source task's delivery state, shared by its sender, the transport
/// (acks) and the offset committer.
pub struct DeliveryTracker {
    state: Mutex<State>,
}

impl Default for DeliveryTracker {
    fn default() -> Self {
        DeliveryTracker::new()
    }
}

impl DeliveryTracker {
    /// A tracker with nothing dispatched.
    pub fn new() -> Self {
        DeliveryTracker {
            state: Mutex::new(State {
                last: 0,
                acked: 0,
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

    /// Registers the next record with the offset it carries; its sequence
    /// number (1, 2, ...). Called before the record is handed on, so an ack
    /// never precedes it.
    pub fn dispatch(&self, offset: Option<&Arc<SourceOffset>>) -> u64 {
        let mut st = self.lock();
        if st.stats.first_dispatch_us.is_none() {
            st.stats.first_dispatch_us = Some(now_us());
        }
        st.last += 1;
        let seq = st.last;
        if let Some(o) = offset {
            st.had_offsets = true;
            st.offsets.push_back((seq, Arc::clone(o)));
        }
        seq
    }

    /// Every record up to `seq` is delivered.
    pub fn ack(&self, seq: u64) {
        let mut st = self.lock();
        st.acked = st.acked.max(seq.min(st.last));
        st.observe();
    }

    /// The sequence of the last record dispatched.
    pub fn last_dispatched(&self) -> u64 {
        self.lock().last
    }

    /// The delivery figures so far.
    pub fn stats(&self) -> DeliveryStats {
        self.lock().stats.clone()
    }

    /// The highest sequence number up to which every record is delivered.
    pub fn delivered_up_to(&self) -> u64 {
        self.lock().acked
    }

    /// Removes and returns, oldest first, the offsets of records that are now
    /// delivered. The last one per source partition is what to commit.
    pub fn take_committable(&self) -> Vec<Arc<SourceOffset>> {
        let mut st = self.lock();
        let upto = st.acked;
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

/// A completion the transport resolves once what it covers is durable.
pub type Completion = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Acknowledges sequence numbers to a tracker in the order they were
/// queued, each once its completion resolved: a number is acknowledged only
/// when every earlier one is. The first failure is told to `on_failure` and
/// nothing after it is acknowledged.
#[derive(Clone)]
pub struct InOrderAcks {
    tx: mpsc::Sender<(u64, Completion)>,
}

/// Completions waiting to be acknowledged per source task.
const ACK_QUEUE: usize = 65_536;

impl InOrderAcks {
    /// Starts acknowledging to `tracker`; the handle ends once every
    /// [`InOrderAcks`] clone is dropped and what was queued resolved, or at
    /// the first failure.
    pub fn start(
        tracker: Arc<DeliveryTracker>,
        on_failure: impl FnOnce(anyhow::Error) + Send + 'static,
    ) -> (InOrderAcks, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(u64, Completion)>(ACK_QUEUE);
        let handle = tokio::spawn(async move {
            while let Some((seq, done)) = rx.recv().await {
                match done.await {
                    Ok(()) => tracker.ack(seq),
                    Err(e) => {
                        on_failure(e);
                        return;
                    }
                }
            }
        });
        (InOrderAcks { tx }, handle)
    }

    /// Queues `done`, which covers every record up to `seq`. Err when
    /// acknowledging stopped after a failure.
    pub async fn push(&self, seq: u64, done: Completion) -> Result<(), AcksStopped> {
        self.tx.send((seq, done)).await.map_err(|_| AcksStopped)
    }
}

/// Acknowledging stopped after a delivery failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("deliveries stopped after an earlier failure")]
pub struct AcksStopped;

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

    fn off(n: i64) -> Arc<SourceOffset> {
        let mut o = serde_json::Map::new();
        o.insert("n".into(), n.into());
        Arc::new(SourceOffset {
            partition: serde_json::Map::new(),
            offset: o,
        })
    }

    #[test]
    fn offsets_are_released_in_order() {
        let t = DeliveryTracker::new();
        t.dispatch(Some(&off(1)));
        t.dispatch(None);
        t.dispatch(Some(&off(3)));
        assert!(t.take_committable().is_empty());
        t.ack(2);
        let got = t.take_committable();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset.get("n"), Some(&1.into()));
        t.ack(3);
        let got = t.take_committable();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset.get("n"), Some(&3.into()));
        // Never past what was dispatched.
        t.ack(99);
        assert_eq!(t.delivered_up_to(), 3);
    }

    #[test]
    fn latency_is_taken_once_per_streamed_record_when_delivered() {
        let t = DeliveryTracker::new();
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
        t.dispatch(Some(&off(true)));
        t.dispatch(Some(&off(false)));
        t.ack(1);
        assert_eq!(t.stats().delivered, 1);
        assert!(t.stats().latency_summary().is_none());
        t.ack(2);
        t.ack(2);
        let stats = t.stats();
        assert_eq!(stats.delivered, 2);
        let latency = stats.latency_summary().expect("latency");
        assert_eq!(latency.count, 1);
        assert!(latency.p50_ms >= 3000.0, "{latency}");
    }

    #[tokio::test]
    async fn completions_resolving_out_of_order_are_acknowledged_in_order() {
        let tracker = Arc::new(DeliveryTracker::new());
        let (told_tx, told) = tokio::sync::oneshot::channel();
        let (acks, handle) = InOrderAcks::start(Arc::clone(&tracker), move |e| {
            let _ = told_tx.send(e.to_string());
        });
        let mut senders = Vec::new();
        for _ in 0..4 {
            let seq = tracker.dispatch(None);
            let (s, r) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
            senders.push(s);
            acks.push(
                seq,
                Box::pin(async move { r.await.unwrap_or_else(|_| Err(anyhow::anyhow!("gone"))) }),
            )
            .await
            .expect("queued");
        }
        let mut s = senders.into_iter();
        let (a, b, c, d) = (
            s.next().expect("1"),
            s.next().expect("2"),
            s.next().expect("3"),
            s.next().expect("4"),
        );
        let settle = || async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        };
        let _ = b.send(Ok(()));
        settle().await;
        assert_eq!(tracker.delivered_up_to(), 0, "the first is not done");
        let _ = a.send(Ok(()));
        settle().await;
        assert_eq!(tracker.delivered_up_to(), 2);
        let _ = d.send(Ok(()));
        let _ = c.send(Err(anyhow::anyhow!("broker gone")));
        handle.await.expect("acker");
        assert_eq!(tracker.delivered_up_to(), 2, "nothing after a failure");
        assert_eq!(told.await.expect("told"), "broker gone");
    }
}
