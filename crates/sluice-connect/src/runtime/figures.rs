//! A task's live figures as the worker keeps them across the task's
//! restarts: what the task itself reports (its [`SourceTelemetry`] or
//! [`SinkTelemetry`]) and what the worker sees of its delivery.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_core::connector::ConnectorKind;
use sluice_core::telemetry::{now_us, SinkTelemetry, SourceTelemetry};

use crate::delivery::DeliveryTracker;

/// The figures of one task.
pub struct TaskFigures {
    /// Source or sink.
    pub kind: ConnectorKind,
    /// A source task's own figures (unused for a sink).
    pub source: Arc<SourceTelemetry>,
    /// A sink task's figures (unused for a source).
    pub sink: Arc<SinkTelemetry>,
    /// The current attempt's delivery tracker (a source's).
    tracker: Mutex<Option<Arc<DeliveryTracker>>>,
    /// Records earlier attempts delivered.
    written_before: AtomicU64,
    /// Records an attempt may have in flight (`max.queue.size`).
    pub queue_capacity: u64,
    /// The last sample of the record count and the rate it gave.
    rate: Mutex<RateWindow>,
}

/// A record count sampled at most every [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct RateWindow {
    at: Option<Instant>,
    count: u64,
    rate: Option<f64>,
}

/// The shortest interval a rate is computed over.
const RATE_WINDOW: Duration = Duration::from_secs(2);

impl std::fmt::Debug for TaskFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFigures")
            .field("kind", &self.kind)
            .field("written", &self.written())
            .finish_non_exhaustive()
    }
}

impl TaskFigures {
    /// Figures for a task of `kind` whose connector allows
    /// `queue_capacity` records in flight.
    pub fn new(kind: ConnectorKind, queue_capacity: u64) -> Self {
        TaskFigures {
            kind,
            source: Arc::default(),
            sink: Arc::default(),
            tracker: Mutex::new(None),
            written_before: AtomicU64::new(0),
            queue_capacity,
            rate: Mutex::new(RateWindow::default()),
        }
    }

    /// A source attempt starts delivering through `tracker`.
    pub(crate) fn attach(&self, tracker: Arc<DeliveryTracker>) {
        let mut t = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = t.replace(tracker) {
            self.written_before
                .fetch_add(old.delivered_up_to(), Relaxed);
        }
    }

    /// Records the transport stored durably (Kafka Connect's
    /// `source-record-write-total`).
    pub fn written(&self) -> u64 {
        let t = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        self.written_before.load(Relaxed) + t.as_ref().map_or(0, |t| t.delivered_up_to())
    }

    /// Records handed on and not yet stored.
    pub fn in_flight(&self) -> u64 {
        let t = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
        t.as_ref().map_or(0, |t| {
            t.last_dispatched().saturating_sub(t.delivered_up_to())
        })
    }

    /// Records per second a source produced (a sink read) between two
    /// readings at least two seconds apart; None until there were two.
    pub fn poll_rate(&self) -> Option<f64> {
        let count = match self.kind {
            ConnectorKind::Source => self.source.polled.load(Relaxed),
            ConnectorKind::Sink => self.sink.read.load(Relaxed),
        };
        let mut w = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match w.at {
            None => {
                w.at = Some(now);
                w.count = count;
            }
            Some(at) if now.duration_since(at) >= RATE_WINDOW => {
                let secs = now.duration_since(at).as_secs_f64();
                w.rate = Some(count.saturating_sub(w.count) as f64 / secs);
                w.at = Some(now);
                w.count = count;
            }
            Some(_) => {}
        }
        w.rate
    }
}

/// A task's figures as its status shows them.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetails {
    /// A warning or error about its health while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// A source's last (or running) snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotView>,
    /// A source's streaming.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming: Option<StreamingView>,
    /// A sink's delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkView>,
}

/// A health note.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `warning` or `error`.
    pub level: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// A snapshot's progress.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotView {
    /// Running now.
    pub running: bool,
    /// Completed.
    pub completed: bool,
    /// Stopped before its end.
    pub aborted: bool,
    /// Rows read.
    pub rows_scanned: u64,
    /// Rows expected (PostgreSQL's estimates, or what was read).
    pub rows_estimated: u64,
    /// Seconds it has run (or ran).
    pub seconds: f64,
    /// Per table.
    pub tables: Vec<TableView>,
}

/// One snapshot table.
#[derive(Debug, Clone, Serialize)]
pub struct TableView {
    /// `schema.table`.
    pub name: String,
    /// Rows read.
    pub rows_scanned: u64,
    /// PostgreSQL's estimate.
    pub rows_estimated: Option<u64>,
    /// Read to its end.
    pub done: bool,
}

/// A source's streaming figures.
#[derive(Debug, Clone, Serialize)]
pub struct StreamingView {
    /// Connected to the database.
    pub connected: bool,
    /// Change events streamed.
    pub events: u64,
    /// Records produced per second recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<f64>,
    /// Milliseconds between the last event's commit and its processing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind_source_ms: Option<i64>,
    /// Milliseconds since the last event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_last_event_ms: Option<i64>,
    /// LSN of the last event (`0/16B3748`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_lsn: Option<String>,
    /// The replication slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotView>,
}

/// A replication slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// Name.
    pub name: String,
    /// `confirmed_flush_lsn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_flush_lsn: Option<String>,
    /// WAL it retains, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_wal_bytes: Option<i64>,
    /// `wal_status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_status: Option<String>,
    /// `safe_wal_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_wal_size: Option<i64>,
}

/// A sink task's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct SinkView {
    /// Records read.
    pub records_read: u64,
    /// Records made durable.
    pub records_durable: u64,
    /// Records read and not yet durable.
    pub records_pending: u64,
    /// Records read per second recently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<f64>,
    /// Commit-to-durable latency: p50 and p99 upper bounds (ms) of the
    /// histogram's buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    /// See `latency_p50_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
}

fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The smallest bucket bound (ms) at least `q` of the samples are under.
pub(crate) fn quantile_ms(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = (q * count as f64).ceil() as u64;
    buckets
        .iter()
        .find(|(_, c)| *c >= rank)
        .map(|(b, _)| {
            if b.is_finite() {
                b * 1000.0
            } else {
                f64::INFINITY
            }
        })
        .filter(|v| v.is_finite())
}

impl TaskFigures {
    /// What the status shows of this task.
    pub fn details(&self) -> TaskDetails {
        match self.kind {
            ConnectorKind::Source => {
                let t = &self.source;
                let snap = t.snapshot();
                let c = t.counts();
                let (rows, estimated) = snap.rows();
                TaskDetails {
                    health: t.health().map(|h| Health {
                        level: if h.error { "error" } else { "warning" },
                        message: h.message,
                    }),
                    snapshot: snap.started_us.map(|_| SnapshotView {
                        running: snap.running,
                        completed: snap.completed,
                        aborted: snap.aborted,
                        rows_scanned: rows,
                        rows_estimated: estimated,
                        seconds: snap.seconds(),
                        tables: snap
                            .tables
                            .iter()
                            .map(|t| TableView {
                                name: t.name.clone(),
                                rows_scanned: t.rows_scanned,
                                rows_estimated: t.estimated_rows,
                                done: t.done,
                            })
                            .collect(),
                    }),
                    streaming: Some(StreamingView {
                        connected: t.connected.load(Relaxed),
                        events: c.total - c.reads,
                        records_per_second: self.poll_rate(),
                        behind_source_ms: (c.last_commit_us > 0 && c.last_event_us > 0)
                            .then(|| (c.last_event_us - c.last_commit_us).max(0) / 1000),
                        since_last_event_ms: (c.last_event_us > 0)
                            .then(|| (now_us() - c.last_event_us).max(0) / 1000),
                        last_lsn: (c.last_lsn > 0).then(|| lsn_text(c.last_lsn)),
                        slot: t.slot().map(|s| SlotView {
                            name: s.name,
                            confirmed_flush_lsn: s.confirmed_flush_lsn.map(lsn_text),
                            retained_wal_bytes: s.retained_bytes,
                            wal_status: s.wal_status,
                            safe_wal_size: s.safe_wal_size,
                        }),
                    }),
                    sink: None,
                }
            }
            ConnectorKind::Sink => {
                let t = &self.sink;
                let (_, count, buckets) = t.latency.read();
                TaskDetails {
                    health: None,
                    snapshot: None,
                    streaming: None,
                    sink: Some(SinkView {
                        records_read: t.read.load(Relaxed),
                        records_durable: t.durable.load(Relaxed),
                        records_pending: t.pending.load(Relaxed),
                        records_per_second: self.poll_rate(),
                        latency_p50_ms: quantile_ms(&buckets, count, 0.5),
                        latency_p99_ms: quantile_ms(&buckets, count, 0.99),
                    }),
                }
            }
        }
    }
}
