//! The worker's recent history for the status page: a ring buffer of
//! samples taken at a fixed interval (by default every 5 s, 720 points: one
//! hour), so a page loaded now can draw the last hour at once.
//!
//! Each point holds, per connector, what the page charts: throughput, a
//! sink's commit-to-durable latency over the interval, lag, a sink's
//! backlog and the WAL a source's slot retains. Rates and latency
//! quantiles are computed from the change of the tasks' cumulative
//! counters since the previous point, so they describe that interval and
//! not the whole life of the worker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sluice_core::connector::ConnectorKind;
use sluice_core::telemetry::now_us;
use tokio_util::sync::CancellationToken;

use super::WorkerHandle;
use crate::exporter::WorkerSample;

/// The default interval between two points.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The default number of points kept (one hour at the default interval).
pub const DEFAULT_POINTS: usize = 720;

/// One connector at one point of the history. Fields a connector of the
/// other kind does not have, or that are not known yet, are left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectorPoint {
    /// `source` or `sink`.
    pub kind: &'static str,
    /// `RUNNING`, `PAUSED` or `STOPPED`.
    pub state: &'static str,
    /// Records its tasks produced (a source) or read (a sink) so far.
    pub records: u64,
    /// Records per second over the interval before this point (None for
    /// the first point, or when the counters went back, as they do when a
    /// connector is deleted and created again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<f64>,
    /// A sink's commit-to-durable latency over the interval: the upper
    /// bound (ms) of the histogram bucket holding the median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_ms: Option<f64>,
    /// The same for the 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
    /// Lag in milliseconds: a source's time between its last event's
    /// commit and its processing; a sink's age of the newest change it made
    /// durable while it is behind (0 when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<f64>,
    /// A sink's records not yet committed (its consumer lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog_records: Option<u64>,
    /// WAL a source's replication slot retains, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_wal_bytes: Option<i64>,
}

/// One point of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// When it was taken, in milliseconds since the Unix epoch.
    pub t: i64,
    /// Each connector, by name.
    pub connectors: BTreeMap<String, ConnectorPoint>,
}

/// What `GET /sluice/history` answers.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// Milliseconds between points.
    pub interval_ms: u64,
    /// Points kept at most.
    pub capacity: usize,
    /// The points asked for, oldest first.
    pub points: Vec<Point>,
}

/// A connector's cumulative counters at the previous point.
#[derive(Debug, Clone)]
struct Previous {
    at: Instant,
    records: u64,
    /// A sink's latency histogram: cumulative counts per bucket bound.
    latency: Vec<(f64, u64)>,
}

#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<Point>,
    previous: BTreeMap<String, Previous>,
}

/// The ring buffer of points, shared between the sampler and the REST API.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    capacity: usize,
    ring: Mutex<Ring>,
}

impl History {
    /// An empty history of `capacity` points taken every `interval`.
    pub fn new(interval: Duration, capacity: usize) -> History {
        History {
            interval,
            capacity: capacity.max(1),
            ring: Mutex::new(Ring::default()),
        }
    }

    /// The interval between points.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The points taken after `since` (milliseconds since the Unix epoch),
    /// or all of them.
    pub fn view(&self, since: Option<i64>) -> HistoryView {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        HistoryView {
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            capacity: self.capacity,
            points: ring
                .points
                .iter()
                .filter(|p| since.is_none_or(|s| p.t > s))
                .cloned()
                .collect(),
        }
    }

    /// Adds a point made of `sample`, taken at `at` (`t` milliseconds since
    /// the Unix epoch), dropping the oldest point when full.
    pub fn record(&self, sample: &WorkerSample, at: Instant, t: i64) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let mut connectors = BTreeMap::new();
        let mut previous = BTreeMap::new();
        for c in &sample.connectors {
            let tasks: Vec<_> = sample
                .tasks
                .iter()
                .filter(|t| t.connector == c.name)
                .collect();
            let records: u64 = tasks
                .iter()
                .map(|t| match c.kind {
                    ConnectorKind::Source => t.figures.source.polled.load(Relaxed),
                    ConnectorKind::Sink => t.figures.sink.read.load(Relaxed),
                })
                .sum();
            let latency = match c.kind {
                ConnectorKind::Sink => sum_buckets(
                    tasks
                        .iter()
                        .map(|t| t.figures.sink.latency.read().2)
                        .collect(),
                ),
                ConnectorKind::Source => Vec::new(),
            };
            let before = ring.previous.get(&c.name);
            let records_per_second = before.and_then(|b| {
                let secs = at.checked_duration_since(b.at)?.as_secs_f64();
                let n = records.checked_sub(b.records)?;
                (secs > 0.0).then(|| n as f64 / secs)
            });
            let (p50, p99) = match (c.kind, before) {
                (ConnectorKind::Sink, Some(b)) => {
                    let delta = bucket_delta(&latency, &b.latency);
                    (quantile(&delta, 0.5), quantile(&delta, 0.99))
                }
                _ => (None, None),
            };
            let point = match c.kind {
                ConnectorKind::Source => {
                    let (lag, wal) = source_lag_and_wal(&tasks);
                    ConnectorPoint {
                        kind: "source",
                        state: c.state,
                        records,
                        records_per_second,
                        latency_p50_ms: None,
                        latency_p99_ms: None,
                        lag_ms: lag,
                        backlog_records: None,
                        retained_wal_bytes: wal,
                    }
                }
                ConnectorKind::Sink => ConnectorPoint {
                    kind: "sink",
                    state: c.state,
                    records,
                    records_per_second,
                    latency_p50_ms: p50,
                    latency_p99_ms: p99,
                    lag_ms: c
                        .backlog
                        .and_then(|b| crate::exporter::sink_lag_ms(sample, &c.name, b, now_us())),
                    backlog_records: c.backlog,
                    retained_wal_bytes: None,
                },
            };
            previous.insert(
                c.name.clone(),
                Previous {
                    at,
                    records,
                    latency,
                },
            );
            connectors.insert(c.name.clone(), point);
        }
        ring.previous = previous;
        if ring.points.len() >= self.capacity {
            ring.points.pop_front();
        }
        ring.points.push_back(Point { t, connectors });
    }

    /// Takes a point every interval from `handle` until `shutdown` is
    /// cancelled. A worker that does not answer (starting or stopping) is
    /// skipped for that interval.
    pub async fn run(&self, handle: WorkerHandle, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match handle.sample().await {
                Ok(sample) => self.record(&sample, Instant::now(), now_us() / 1000),
                Err(e) => tracing::debug!("status page history: no sample this time: {e}"),
            }
        }
    }
}

/// The tasks' largest lag behind the source and the WAL their slots retain.
fn source_lag_and_wal(tasks: &[&crate::exporter::TaskSample]) -> (Option<f64>, Option<i64>) {
    let mut lag: Option<f64> = None;
    let mut wal: Option<i64> = None;
    for t in tasks {
        let c = t.figures.source.counts();
        if c.last_commit_us > 0 && c.last_event_us > 0 {
            let ms = ((c.last_event_us - c.last_commit_us).max(0) / 1000) as f64;
            lag = Some(lag.map_or(ms, |l| l.max(ms)));
        }
        if let Some(b) = t.figures.source.slot().and_then(|s| s.retained_bytes) {
            wal = Some(wal.unwrap_or(0) + b);
        }
    }
    (lag, wal)
}

/// Cumulative bucket counts of several histograms of the same bounds,
/// added up.
fn sum_buckets(all: Vec<Vec<(f64, u64)>>) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for buckets in all {
        if out.is_empty() {
            out = buckets;
            continue;
        }
        for (o, (_, c)) in out.iter_mut().zip(buckets) {
            o.1 += c;
        }
    }
    out
}

/// `now - before` bucket by bucket; a histogram that went back (its
/// connector was created again) counts from zero.
fn bucket_delta(now: &[(f64, u64)], before: &[(f64, u64)]) -> Vec<(f64, u64)> {
    if before.len() != now.len() || now.iter().zip(before).any(|(n, b)| n.1 < b.1) {
        return now.to_vec();
    }
    now.iter()
        .zip(before)
        .map(|(n, b)| (n.0, n.1 - b.1))
        .collect()
}

/// The quantile `q` of cumulative `buckets` (whose last is +Inf, holding
/// the count), as the upper bound in ms of the bucket it falls in; None
/// without samples or when it falls beyond the last finite bound.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let count = buckets.last()?.1;
    super::figures::quantile_ms(buckets, count, q)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exporter::{ConnectorSample, TaskSample};
    use crate::runtime::figures::TaskFigures;

    fn sample(source: &Arc<TaskFigures>, sink: &Arc<TaskFigures>) -> WorkerSample {
        WorkerSample {
            worker_id: "w".into(),
            connectors: vec![
                ConnectorSample {
                    name: "pg".into(),
                    kind: ConnectorKind::Source,
                    state: "RUNNING",
                    server: "srv".into(),
                    backlog: None,
                },
                ConnectorSample {
                    name: "duck".into(),
                    kind: ConnectorKind::Sink,
                    state: "RUNNING",
                    server: String::new(),
                    backlog: Some(0),
                },
            ],
            tasks: vec![
                TaskSample {
                    connector: "pg".into(),
                    task: 0,
                    state: "RUNNING",
                    figures: Arc::clone(source),
                },
                TaskSample {
                    connector: "duck".into(),
                    task: 0,
                    state: "RUNNING",
                    figures: Arc::clone(sink),
                },
            ],
            stored_bytes: None,
            leftovers: Vec::new(),
        }
    }

    #[test]
    fn rates_and_latency_describe_the_interval() {
        let source = Arc::new(TaskFigures::new(ConnectorKind::Source, 10));
        let sink = Arc::new(TaskFigures::new(ConnectorKind::Sink, 0));
        let h = History::new(Duration::from_secs(5), 10);
        let t0 = Instant::now();
        // Slow commits before the first point do not count afterwards.
        sink.sink.latency.record_us(20_000_000, 100);
        h.record(&sample(&source, &sink), t0, 1_000);
        source.source.polled.fetch_add(50, Relaxed);
        sink.sink.read.fetch_add(20, Relaxed);
        sink.sink.latency.record_us(2_000, 99);
        sink.sink.latency.record_us(80_000, 1);
        h.record(&sample(&source, &sink), t0 + Duration::from_secs(5), 6_000);
        let v = h.view(None);
        assert_eq!(v.points.len(), 2);
        assert_eq!(v.interval_ms, 5_000);
        let first = &v.points[0].connectors;
        assert_eq!(first["pg"].records_per_second, None);
        assert_eq!(first["duck"].latency_p50_ms, None);
        let second = &v.points[1].connectors;
        assert_eq!(second["pg"].records, 50);
        assert_eq!(second["pg"].records_per_second, Some(10.0));
        assert_eq!(second["duck"].records_per_second, Some(4.0));
        assert_eq!(second["duck"].latency_p50_ms, Some(2.5));
        assert_eq!(second["duck"].latency_p99_ms, Some(2.5));
        assert_eq!(second["duck"].backlog_records, Some(0));
        assert_eq!(second["duck"].lag_ms, Some(0.0));
        assert_eq!(second["pg"].kind, "source");
        assert_eq!(second["pg"].backlog_records, None);
    }

    #[test]
    fn keeps_the_newest_points_and_answers_since() {
        let source = Arc::new(TaskFigures::new(ConnectorKind::Source, 10));
        let sink = Arc::new(TaskFigures::new(ConnectorKind::Sink, 0));
        let h = History::new(Duration::from_millis(100), 3);
        let t0 = Instant::now();
        for i in 0..5u64 {
            h.record(
                &sample(&source, &sink),
                t0 + Duration::from_millis(100 * i),
                (i as i64) * 100,
            );
        }
        let ts: Vec<i64> = h.view(None).points.iter().map(|p| p.t).collect();
        assert_eq!(ts, [200, 300, 400]);
        let ts: Vec<i64> = h.view(Some(300)).points.iter().map(|p| p.t).collect();
        assert_eq!(ts, [400]);
    }

    #[test]
    fn a_connector_created_again_has_no_negative_rate() {
        let old = Arc::new(TaskFigures::new(ConnectorKind::Source, 10));
        let sink = Arc::new(TaskFigures::new(ConnectorKind::Sink, 0));
        old.source.polled.fetch_add(100, Relaxed);
        let h = History::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        h.record(&sample(&old, &sink), t0, 0);
        let new = Arc::new(TaskFigures::new(ConnectorKind::Source, 10));
        new.source.polled.fetch_add(3, Relaxed);
        h.record(&sample(&new, &sink), t0 + Duration::from_secs(1), 1_000);
        let v = h.view(None);
        assert_eq!(v.points[1].connectors["pg"].records_per_second, None);
        assert_eq!(v.points[1].connectors["pg"].records, 3);
    }
}
