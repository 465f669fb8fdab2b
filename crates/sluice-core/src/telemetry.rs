//! What tasks tell about themselves besides their records, for metrics,
//! status and progress: a source's events, snapshot and replication slot
//! (Debezium's streaming and snapshot metrics), a sink's reads and writes.
//!
//! Updated on the hot path with relaxed atomics (or a short lock for the
//! rarely changing parts) and read whenever someone looks (a metrics scrape,
//! a status request, a progress line), so keeping them costs next to
//! nothing.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Microseconds since the Unix epoch by the system clock.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One table of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableProgress {
    /// `schema.table`.
    pub name: String,
    /// Rows read so far.
    pub rows_scanned: u64,
    /// PostgreSQL's estimate of its rows (`pg_class.reltuples`), if any.
    pub estimated_rows: Option<u64>,
    /// Whether all of it was read.
    pub done: bool,
}

/// A snapshot's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotProgress {
    /// Being taken now.
    pub running: bool,
    /// The last one completed.
    pub completed: bool,
    /// The last one was stopped before its end.
    pub aborted: bool,
    /// When it began (µs since the epoch).
    pub started_us: Option<i64>,
    /// When it ended.
    pub finished_us: Option<i64>,
    /// Its tables, in the order they are read.
    pub tables: Vec<TableProgress>,
}

impl SnapshotProgress {
    /// Rows read and the estimated total (tables without an estimate count
    /// what was read).
    pub fn rows(&self) -> (u64, u64) {
        let done: u64 = self.tables.iter().map(|t| t.rows_scanned).sum();
        let total: u64 = self
            .tables
            .iter()
            .map(|t| t.estimated_rows.unwrap_or(0).max(t.rows_scanned))
            .sum();
        (done, total)
    }

    /// Seconds it has run (or ran).
    pub fn seconds(&self) -> f64 {
        match (self.started_us, self.finished_us) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e6,
            (Some(a), None) => (now_us() - a) as f64 / 1e6,
            _ => 0.0,
        }
    }
}

/// A replication slot as the source last read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotFigures {
    /// Slot name.
    pub name: String,
    /// `confirmed_flush_lsn`.
    pub confirmed_flush_lsn: Option<u64>,
    /// WAL the slot retains, in bytes.
    pub retained_bytes: Option<i64>,
    /// `wal_status` (PostgreSQL 13+).
    pub wal_status: Option<String>,
    /// `safe_wal_size` (PostgreSQL 13+, with `max_slot_wal_keep_size`).
    pub safe_wal_size: Option<i64>,
    /// When it was read (µs since the epoch).
    pub read_us: i64,
}

/// A source task's figures.
#[derive(Debug, Default)]
pub struct SourceTelemetry {
    /// Connected to the source system.
    pub connected: AtomicBool,
    events: AtomicU64,
    creates: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    reads: AtomicU64,
    others: AtomicU64,
    transactions: AtomicU64,
    /// Commit time (µs) of the last streamed event.
    last_commit_us: AtomicI64,
    /// Wall clock (µs) when the last event was seen.
    last_event_us: AtomicI64,
    last_lsn: AtomicU64,
    last_txid: AtomicI64,
    snapshot: Mutex<SnapshotProgress>,
    slot: Mutex<Option<SlotFigures>>,
    /// Records handed to the worker (every kind).
    pub polled: AtomicU64,
    /// Offset commits that stored this task's offsets.
    pub commits: AtomicU64,
    /// Offset commits that failed while this task had offsets to store.
    pub commit_failures: AtomicU64,
    /// Wall clock (µs) of the last commit of its offsets; 0 before any.
    pub last_commit_at_us: AtomicI64,
    /// A warning or error about the source's health the status shows (a
    /// slot retaining too much WAL, a slot about to be invalidated).
    health: Mutex<Option<HealthNote>>,
}

/// Something about a task's health its status shows next to its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthNote {
    /// True: an error (the task will fail unless something is done); false:
    /// a warning.
    pub error: bool,
    /// What is wrong and what to do.
    pub message: String,
}

/// A source task's event counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Every event.
    pub total: u64,
    /// `op` c.
    pub creates: u64,
    /// `op` u.
    pub updates: u64,
    /// `op` d.
    pub deletes: u64,
    /// `op` r (snapshot reads).
    pub reads: u64,
    /// Other events (truncates, messages, heartbeats...).
    pub others: u64,
    /// Transactions seen to their end.
    pub transactions: u64,
    /// Commit time (µs) of the last streamed event; 0 before any.
    pub last_commit_us: i64,
    /// Wall clock (µs) of the last event; 0 before any.
    pub last_event_us: i64,
    /// LSN of the last event.
    pub last_lsn: u64,
    /// Transaction id of the last event; -1 before any.
    pub last_txid: i64,
}

impl SourceTelemetry {
    /// Counts one change event: its `op` (`c`, `u`, `d`, `r`, ...), its
    /// commit time (µs, streamed events), its LSN and transaction id
    /// (streamed events).
    pub fn event(&self, op: u8, commit_us: Option<i64>, lsn: Option<u64>, txid: Option<i64>) {
        self.events.fetch_add(1, Relaxed);
        match op {
            b'c' => &self.creates,
            b'u' => &self.updates,
            b'd' => &self.deletes,
            b'r' => &self.reads,
            _ => &self.others,
        }
        .fetch_add(1, Relaxed);
        self.last_event_us.store(now_us(), Relaxed);
        if let Some(c) = commit_us {
            self.last_commit_us.store(c, Relaxed);
        }
        if let Some(l) = lsn {
            self.last_lsn.store(l, Relaxed);
        }
        // A source hands on a transaction's changes once it committed:
        // every new transaction id is one more committed transaction.
        if let Some(t) = txid {
            if self.last_txid.swap(t, Relaxed) != t {
                self.transactions.fetch_add(1, Relaxed);
            }
        }
    }

    /// The event counters now.
    pub fn counts(&self) -> EventCounts {
        EventCounts {
            total: self.events.load(Relaxed),
            creates: self.creates.load(Relaxed),
            updates: self.updates.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            reads: self.reads.load(Relaxed),
            others: self.others.load(Relaxed),
            transactions: self.transactions.load(Relaxed),
            last_commit_us: self.last_commit_us.load(Relaxed),
            last_event_us: self.last_event_us.load(Relaxed),
            last_lsn: self.last_lsn.load(Relaxed),
            last_txid: match self.last_txid.load(Relaxed) {
                0 => -1,
                t => t,
            },
        }
    }

    /// A snapshot of `tables` (name, estimated rows) begins.
    pub fn snapshot_started(&self, tables: Vec<(String, Option<u64>)>) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        *s = SnapshotProgress {
            running: true,
            started_us: Some(now_us()),
            tables: tables
                .into_iter()
                .map(|(name, estimated_rows)| TableProgress {
                    name,
                    estimated_rows,
                    ..TableProgress::default()
                })
                .collect(),
            ..SnapshotProgress::default()
        };
    }

    /// `n` more rows of `table` were read.
    pub fn snapshot_rows(&self, table: &str, n: u64) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        match s.tables.iter_mut().find(|t| t.name == table) {
            Some(t) => t.rows_scanned += n,
            None => s.tables.push(TableProgress {
                name: table.to_string(),
                rows_scanned: n,
                ..TableProgress::default()
            }),
        }
    }

    /// All of `table` was read.
    pub fn snapshot_table_done(&self, table: &str) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = s.tables.iter_mut().find(|t| t.name == table) {
            t.done = true;
        }
    }

    /// The snapshot ended: `completed`, or stopped before its end.
    pub fn snapshot_finished(&self, completed: bool) {
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if !s.running {
            return;
        }
        s.running = false;
        s.completed = completed;
        s.aborted = !completed;
        s.finished_us = Some(now_us());
    }

    /// The snapshot's progress now.
    pub fn snapshot(&self) -> SnapshotProgress {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what the slot looks like now.
    pub fn set_slot(&self, figures: SlotFigures) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(figures);
    }

    /// Sets (or clears) the note the status shows.
    pub fn set_health(&self, note: Option<HealthNote>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = note;
    }

    /// The note the status shows, if any.
    pub fn health(&self) -> Option<HealthNote> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The slot as last read.
    pub fn slot(&self) -> Option<SlotFigures> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Upper bounds (seconds) of [`LatencyBuckets`]: 1 ms to 5 minutes.
pub const LATENCY_BOUNDS_S: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A cumulative latency histogram with Prometheus' shape (fixed upper
/// bounds, a sum and a count), shared lock-free between the task that
/// records and the scrape that reads.
#[derive(Debug, Default)]
pub struct LatencyBuckets {
    // One per bound, plus +Inf.
    counts: [AtomicU64; LATENCY_BOUNDS_S.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyBuckets {
    /// Adds `n` samples of `us` microseconds (negative: clocks of another
    /// host running ahead, counted as zero).
    pub fn record_us(&self, us: i64, n: u64) {
        let us = u64::try_from(us).unwrap_or(0);
        let s = us as f64 / 1e6;
        let i = LATENCY_BOUNDS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BOUNDS_S.len());
        self.counts[i].fetch_add(n, Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Relaxed);
    }

    /// Sum in seconds, count, and cumulative counts per bound (the last is
    /// +Inf, equal to the count).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            buckets.push((
                LATENCY_BOUNDS_S.get(i).copied().unwrap_or(f64::INFINITY),
                cumulative,
            ));
        }
        (self.sum_us.load(Relaxed) as f64 / 1e6, cumulative, buckets)
    }
}

/// Whether a plugin's metric only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows (exported with `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric a plugin keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginMetric {
    /// Its help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// Its value.
    pub value: f64,
}

/// A plugin's own metrics by name (snake case, prefixed by the exporter
/// with `sluice_`), e.g. a sink's batches, bytes and retries.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    entries: Mutex<std::collections::BTreeMap<&'static str, PluginMetric>>,
}

impl PluginMetrics {
    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &'static str, help: &'static str, n: f64) {
        let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        e.entry(name)
            .or_insert(PluginMetric {
                help,
                kind: MetricKind::Counter,
                value: 0.0,
            })
            .value += n;
    }

    /// Sets gauge `name`.
    pub fn set(&self, name: &'static str, help: &'static str, v: f64) {
        let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        e.insert(
            name,
            PluginMetric {
                help,
                kind: MetricKind::Gauge,
                value: v,
            },
        );
    }

    /// Every metric now.
    pub fn read(&self) -> Vec<(&'static str, PluginMetric)> {
        let e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        e.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

/// A sink task's figures (Kafka Connect's sink task metrics, and the
/// plugin's own; the error counters are the connector's, kept by the
/// worker's error handling).
#[derive(Debug, Default)]
pub struct SinkTelemetry {
    /// Records read from the transport.
    pub read: AtomicU64,
    /// Records handed to the sink (after transforms).
    pub sent: AtomicU64,
    /// Records made durable (written, dropped by a transform or skipped).
    pub durable: AtomicU64,
    /// Offset commits done.
    pub commits: AtomicU64,
    /// Offset commits that failed.
    pub commit_failures: AtomicU64,
    /// Wall clock (µs) of the last commit; 0 before any.
    pub last_commit_us: AtomicI64,
    /// Commit time (µs) of the newest change event made durable; 0 before.
    pub last_durable_commit_us: AtomicI64,
    /// Records read and not yet durable.
    pub pending: AtomicU64,
    /// From the source's commit to durable in this sink.
    pub latency: LatencyBuckets,
    /// The sink's own metrics.
    pub plugin: PluginMetrics,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_transactions_and_snapshot_progress() {
        let t = SourceTelemetry::default();
        t.event(b'r', None, Some(10), None);
        t.event(b'c', Some(5), Some(11), Some(7));
        t.event(b'u', Some(5), Some(12), Some(7));
        t.event(b'd', Some(6), Some(13), Some(8));
        let c = t.counts();
        assert_eq!(
            (c.total, c.creates, c.updates, c.deletes, c.reads),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(c.transactions, 2, "transactions 7 and 8");
        assert_eq!((c.last_commit_us, c.last_lsn, c.last_txid), (6, 13, 8));
        t.snapshot_started(vec![("s.a".into(), Some(100)), ("s.b".into(), None)]);
        t.snapshot_rows("s.a", 60);
        t.snapshot_rows("s.b", 5);
        assert_eq!(t.snapshot().rows(), (65, 105));
        t.snapshot_table_done("s.a");
        t.snapshot_finished(true);
        let s = t.snapshot();
        assert!(s.completed && !s.running && !s.aborted && s.tables[0].done);
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let b = LatencyBuckets::default();
        b.record_us(500, 2); // 0.5 ms
        b.record_us(20_000, 1); // 20 ms
        b.record_us(-5, 1);
        b.record_us(400_000_000, 1); // 400 s
        let (sum, count, buckets) = b.read();
        assert_eq!(count, 5);
        assert!((sum - 400.021).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 3));
        assert_eq!(buckets[4], (0.025, 4));
        assert_eq!(buckets[15], (300.0, 4));
        assert_eq!(buckets[16].1, 5);
        assert!(buckets[16].0.is_infinite());
    }

    #[test]
    fn plugin_metrics_add_and_set() {
        let m = PluginMetrics::default();
        m.add("batches", "b", 1.0);
        m.add("batches", "b", 2.0);
        m.set("queued", "q", 7.0);
        m.set("queued", "q", 3.0);
        let r = m.read();
        assert_eq!(r[0].0, "batches");
        assert_eq!(r[0].1.value, 3.0);
        assert_eq!((r[1].1.kind, r[1].1.value), (MetricKind::Gauge, 3.0));
    }
}
