//! `GET /metrics`: the worker's figures in the Prometheus (OpenMetrics)
//! text format, read from the tasks' live figures at each scrape.
//!
//! Names follow what the systems Sluice replaces export, so dashboards
//! carry over:
//! - a PostgreSQL source's Debezium metrics, in snake case under
//!   `debezium_metrics_*` with `context="streaming"` or `"snapshot"` (what
//!   Debezium's JMX exporter configuration produces, in snake case);
//! - its replication slot: `sluice_slot_*`;
//! - Kafka Connect's task metrics: `kafka_connect_source_task_*`,
//!   `kafka_connect_sink_task_*`, `kafka_connect_task_error_*`,
//!   `kafka_connect_connector_task_status`;
//! - sinks: `sluice_sink_commit_to_durable_seconds` (a histogram), the
//!   backlog and lag of each sink connector, and each sink's own metrics
//!   under `sluice_<name>`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sluice_core::connector::ConnectorKind;
use sluice_core::telemetry::{now_us, MetricKind};

use crate::runtime::figures::TaskFigures;

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One task as a scrape sees it.
#[derive(Debug, Clone)]
pub struct TaskSample {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task: u32,
    /// Its state as the status API shows it (`RUNNING`, `FAILED`, ...).
    pub state: &'static str,
    /// Its figures.
    pub figures: Arc<TaskFigures>,
}

/// One connector as a scrape sees it.
#[derive(Debug, Clone)]
pub struct ConnectorSample {
    /// Name.
    pub name: String,
    /// Source or sink.
    pub kind: ConnectorKind,
    /// Its state (`RUNNING`, `PAUSED`, `STOPPED`).
    pub state: &'static str,
    /// Debezium's logical name (`topic.prefix`), for its metrics' `name`.
    pub server: String,
    /// A sink's records not yet committed (consumer lag), when the
    /// transport can tell.
    pub backlog: Option<u64>,
}

/// The whole worker as a scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct WorkerSample {
    /// The worker's id.
    pub worker_id: String,
    /// Its connectors.
    pub connectors: Vec<ConnectorSample>,
    /// The tasks it runs.
    pub tasks: Vec<TaskSample>,
    /// Bytes its local log keeps, if it has one.
    pub stored_bytes: Option<u64>,
    /// What deleted connectors left behind, by connector name.
    pub leftovers: Vec<(String, sluice_core::connector::Leftover)>,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples by label set.
struct Family {
    name: String,
    help: &'static str,
    kind: MetricKind,
    samples: Vec<(Labels, f64)>,
}

#[derive(Default)]
struct Families {
    all: Vec<Family>,
}

impl Families {
    fn add(&mut self, name: &str, help: &'static str, kind: MetricKind, labels: Labels, v: f64) {
        match self.all.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, v)),
            None => self.all.push(Family {
                name: name.to_string(),
                help,
                kind,
                samples: vec![(labels, v)],
            }),
        }
    }

    fn gauge(&mut self, name: &str, help: &'static str, labels: Labels, v: f64) {
        self.add(name, help, MetricKind::Gauge, labels, v);
    }

    /// A counter; `name` without `_total` (the encoder adds it).
    fn counter(&mut self, name: &str, help: &'static str, labels: Labels, v: f64) {
        self.add(name, help, MetricKind::Counter, labels, v);
    }
}

/// A histogram of one task.
struct Histogram {
    labels: Labels,
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

/// What one scrape encodes.
struct Scrape {
    families: Families,
    histograms: Vec<Histogram>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families.all {
            let metric_type = match f.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
            };
            let mut e = encoder.encode_descriptor(&f.name, f.help, None, metric_type)?;
            for (labels, v) in &f.samples {
                let family = e.encode_family(labels)?;
                match f.kind {
                    MetricKind::Counter => ConstCounter::new(*v).encode(family)?,
                    MetricKind::Gauge => ConstGauge::new(*v).encode(family)?,
                }
            }
        }
        if !self.histograms.is_empty() {
            let mut e = encoder.encode_descriptor(
                "sluice_sink_commit_to_durable_seconds",
                "From a change's commit in the source database to its being durable in the sink",
                None,
                MetricType::Histogram,
            )?;
            for h in &self.histograms {
                e.encode_family(&h.labels)?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
            }
        }
        Ok(())
    }
}

/// The worker's metrics in the OpenMetrics text format.
pub fn encode(sample: &WorkerSample) -> String {
    let scrape = Scrape {
        families: families(sample),
        histograms: histograms(sample),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn task_labels(t: &TaskSample) -> Labels {
    vec![
        ("connector", t.connector.clone()),
        ("task", t.task.to_string()),
    ]
}

fn families(sample: &WorkerSample) -> Families {
    let mut f = Families::default();
    let now = now_us();
    for c in &sample.connectors {
        let kind = match c.kind {
            ConnectorKind::Source => "source",
            ConnectorKind::Sink => "sink",
        };
        f.gauge(
            "kafka_connect_connector_status",
            "1 for the connector's state (status label), by connector",
            vec![
                ("connector", c.name.clone()),
                ("type", kind.to_string()),
                ("status", c.state.to_ascii_lowercase()),
            ],
            1.0,
        );
        let errors = crate::error_handling::counts(&c.name);
        let labels = || vec![("connector", c.name.clone())];
        f.counter(
            "kafka_connect_task_error_total_record_errors",
            "Records that failed a converter, a transform or the sink",
            labels(),
            errors.record_errors as f64,
        );
        f.counter(
            "kafka_connect_task_error_total_records_skipped",
            "Failed records skipped (errors.tolerance=all)",
            labels(),
            errors.records_skipped as f64,
        );
        f.counter(
            "kafka_connect_task_error_total_errors_logged",
            "Failures logged (errors.log.enable)",
            labels(),
            errors.errors_logged as f64,
        );
        f.counter(
            "kafka_connect_task_error_deadletterqueue_produce_requests",
            "Records written to the dead letter queue",
            labels(),
            errors.dlq_produced as f64,
        );
        f.counter(
            "kafka_connect_task_error_deadletterqueue_produce_failures",
            "Records the dead letter queue did not take",
            labels(),
            errors.dlq_failures as f64,
        );
        f.counter(
            "kafka_connect_task_error_total_retries",
            "Retries of failing operations",
            labels(),
            errors.retries as f64,
        );
        if let Some(b) = c.backlog {
            f.gauge(
                "sluice_sink_backlog_records",
                "Records the sink connector has not committed yet (its consumer lag)",
                labels(),
                b as f64,
            );
            if let Some(lag_ms) = sink_lag_ms(sample, &c.name, b, now) {
                f.gauge(
                    "sluice_sink_lag_milliseconds",
                    "While the sink connector is behind: the age of the newest change it made durable; 0 when it is not behind",
                    labels(),
                    lag_ms,
                );
            }
        }
    }
    for t in &sample.tasks {
        f.gauge(
            "kafka_connect_connector_task_status",
            "1 for the task's state (status label)",
            {
                let mut l = task_labels(t);
                l.push(("status", t.state.to_ascii_lowercase()));
                l
            },
            1.0,
        );
        match t.figures.kind {
            ConnectorKind::Source => source_task(&mut f, sample, t, now),
            ConnectorKind::Sink => sink_task(&mut f, t),
        }
    }
    if let Some(b) = sample.stored_bytes {
        f.gauge(
            "sluice_local_log_bytes",
            "Bytes the worker's local log keeps on disk",
            vec![("worker_id", sample.worker_id.clone())],
            b as f64,
        );
    }
    for (connector, l) in &sample.leftovers {
        let labels = vec![
            ("connector", connector.clone()),
            ("resource", l.resource.clone()),
        ];
        f.gauge(
            "sluice_deleted_connector_leftover",
            "1 for each thing a deleted connector left in an external system (a replication slot, a publication) until it is removed",
            labels.clone(),
            1.0,
        );
        if let Some(b) = l.retained_bytes {
            f.gauge(
                "sluice_deleted_connector_retained_bytes",
                "What a deleted connector's leftover keeps from being freed (a slot's retained WAL)",
                labels,
                b as f64,
            );
        }
    }
    f
}

/// A sink connector's lag while it is behind (`backlog` records): how old
/// (ms, at `now` µs since the epoch) the newest change it made durable is;
/// 0 once it has everything; None while behind with nothing durable yet.
pub(crate) fn sink_lag_ms(
    sample: &WorkerSample,
    connector: &str,
    backlog: u64,
    now: i64,
) -> Option<f64> {
    let newest = sample
        .tasks
        .iter()
        .filter(|t| t.connector == connector)
        .map(|t| {
            t.figures
                .sink
                .last_durable_commit_us
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .max()
        .unwrap_or(0);
    match (backlog, newest) {
        (0, _) => Some(0.0),
        (_, 0) => None,
        (_, t) => Some(((now - t).max(0) / 1000) as f64),
    }
}

fn source_task(f: &mut Families, sample: &WorkerSample, t: &TaskSample, now: i64) {
    use std::sync::atomic::Ordering::Relaxed;
    let tel = &t.figures.source;
    let server = sample
        .connectors
        .iter()
        .find(|c| c.name == t.connector)
        .map_or_else(String::new, |c| c.server.clone());
    let dbz = |context: &'static str| {
        let mut l = task_labels(t);
        l.push(("context", context.to_string()));
        l.push(("name", server.clone()));
        l
    };
    let c = tel.counts();
    let streamed = c.total - c.reads;
    let s = |name: &str| format!("debezium_metrics_{name}");
    let st = || dbz("streaming");
    f.gauge(
        &s("milli_seconds_behind_source"),
        "Milliseconds between the last change event's commit and the connector processing it (-1 before any)",
        st(),
        if c.last_commit_us > 0 && c.last_event_us > 0 {
            ((c.last_event_us - c.last_commit_us).max(0) / 1000) as f64
        } else {
            -1.0
        },
    );
    f.gauge(
        &s("total_number_of_events_seen"),
        "Change events streamed (snapshot reads excluded)",
        st(),
        streamed as f64,
    );
    f.gauge(
        &s("total_number_of_create_events_seen"),
        "Create events streamed",
        st(),
        c.creates as f64,
    );
    f.gauge(
        &s("total_number_of_update_events_seen"),
        "Update events streamed",
        st(),
        c.updates as f64,
    );
    f.gauge(
        &s("total_number_of_delete_events_seen"),
        "Delete events streamed",
        st(),
        c.deletes as f64,
    );
    f.gauge(
        &s("number_of_committed_transactions"),
        "Transactions streamed to their end",
        st(),
        c.transactions as f64,
    );
    f.gauge(
        &s("milli_seconds_since_last_event"),
        "Milliseconds since the last event (-1 before any)",
        st(),
        if c.last_event_us > 0 {
            ((now - c.last_event_us).max(0) / 1000) as f64
        } else {
            -1.0
        },
    );
    let capacity = t.figures.queue_capacity;
    f.gauge(
        &s("queue_total_capacity"),
        "Records the task may have on their way (max.queue.size)",
        st(),
        capacity as f64,
    );
    f.gauge(
        &s("queue_remaining_capacity"),
        "Of those, how many more it may hand on now",
        st(),
        capacity.saturating_sub(t.figures.in_flight()) as f64,
    );
    f.gauge(
        &s("connected"),
        "1 while the task is connected to the database",
        st(),
        if tel.connected.load(Relaxed) {
            1.0
        } else {
            0.0
        },
    );
    f.gauge(
        &s("source_event_position"),
        "LSN of the last event",
        st(),
        c.last_lsn as f64,
    );
    f.gauge(
        &s("last_transaction_id"),
        "Transaction id of the last event (-1 before any)",
        st(),
        c.last_txid as f64,
    );
    let snap = tel.snapshot();
    let sn = || dbz("snapshot");
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    f.gauge(
        &s("snapshot_running"),
        "1 while a snapshot runs",
        sn(),
        flag(snap.running),
    );
    f.gauge(
        &s("snapshot_completed"),
        "1 once the last snapshot completed",
        sn(),
        flag(snap.completed),
    );
    f.gauge(
        &s("snapshot_aborted"),
        "1 when the last snapshot stopped before its end",
        sn(),
        flag(snap.aborted),
    );
    f.gauge(
        &s("total_table_count"),
        "Tables the snapshot reads",
        sn(),
        snap.tables.len() as f64,
    );
    f.gauge(
        &s("remaining_table_count"),
        "Tables the snapshot has not finished",
        sn(),
        snap.tables.iter().filter(|t| !t.done).count() as f64,
    );
    f.gauge(
        &s("snapshot_duration_seconds"),
        "Seconds the snapshot has run (or ran)",
        sn(),
        snap.seconds(),
    );
    f.gauge(
        &s("total_number_of_events_seen"),
        "Snapshot reads",
        sn(),
        c.reads as f64,
    );
    for table in &snap.tables {
        let mut l = sn();
        l.push(("table", table.name.clone()));
        f.gauge(
            &s("rows_scanned"),
            "Rows of each table the snapshot read",
            l.clone(),
            table.rows_scanned as f64,
        );
        if let Some(e) = table.estimated_rows {
            f.gauge(
                "sluice_snapshot_estimated_rows",
                "PostgreSQL's estimate of each snapshot table's rows (pg_class.reltuples)",
                l,
                e as f64,
            );
        }
    }
    if let Some(slot) = tel.slot() {
        let mut l = task_labels(t);
        l.push(("slot", slot.name.clone()));
        if let Some(lsn) = slot.confirmed_flush_lsn {
            f.gauge(
                "sluice_slot_confirmed_flush_lsn",
                "The slot's confirmed_flush_lsn",
                l.clone(),
                lsn as f64,
            );
        }
        if let Some(b) = slot.retained_bytes {
            f.gauge(
                "sluice_slot_retained_wal_bytes",
                "WAL the replication slot keeps from being removed",
                l.clone(),
                b as f64,
            );
        }
        if let Some(w) = &slot.wal_status {
            let mut l = l.clone();
            l.push(("wal_status", w.clone()));
            f.gauge(
                "sluice_slot_wal_status",
                "1 for the slot's wal_status (reserved, extended, unreserved, lost)",
                l,
                1.0,
            );
        }
        if let Some(b) = slot.safe_wal_size {
            f.gauge(
                "sluice_slot_safe_wal_size_bytes",
                "WAL that can still be written before the slot is invalidated (max_slot_wal_keep_size)",
                l.clone(),
                b as f64,
            );
        }
    }
    let k = |name: &str| format!("kafka_connect_source_task_{name}");
    f.counter(
        &k("source_record_poll"),
        "Records the task produced",
        task_labels(t),
        tel.polled.load(Relaxed) as f64,
    );
    f.counter(
        &k("source_record_write"),
        "Records the transport stored",
        task_labels(t),
        t.figures.written() as f64,
    );
    f.gauge(
        &k("source_record_active_count"),
        "Records produced and not yet stored",
        task_labels(t),
        t.figures.in_flight() as f64,
    );
    if let Some(rate) = t.figures.poll_rate() {
        f.gauge(
            &k("source_record_poll_rate"),
            "Records produced per second (recent)",
            task_labels(t),
            rate,
        );
    }
    f.counter(
        &k("offset_commit_completion"),
        "Offset commits that stored the task's offsets",
        task_labels(t),
        tel.commits.load(Relaxed) as f64,
    );
    f.counter(
        &k("offset_commit_failure"),
        "Offset commits that failed",
        task_labels(t),
        tel.commit_failures.load(Relaxed) as f64,
    );
}

fn sink_task(f: &mut Families, t: &TaskSample) {
    use std::sync::atomic::Ordering::Relaxed;
    let tel = &t.figures.sink;
    let k = |name: &str| format!("kafka_connect_sink_task_{name}");
    f.counter(
        &k("sink_record_read"),
        "Records read from the transport",
        task_labels(t),
        tel.read.load(Relaxed) as f64,
    );
    f.counter(
        &k("sink_record_send"),
        "Records handed to the sink (after transforms)",
        task_labels(t),
        tel.sent.load(Relaxed) as f64,
    );
    f.counter(
        "sluice_sink_record_durable",
        "Records made durable (written, dropped by a transform or skipped)",
        task_labels(t),
        tel.durable.load(Relaxed) as f64,
    );
    f.gauge(
        &k("sink_record_active_count"),
        "Records read and not yet durable",
        task_labels(t),
        tel.pending.load(Relaxed) as f64,
    );
    if let Some(rate) = t.figures.poll_rate() {
        f.gauge(
            &k("sink_record_read_rate"),
            "Records read per second (recent)",
            task_labels(t),
            rate,
        );
    }
    f.counter(
        &k("offset_commit_completion"),
        "Position commits",
        task_labels(t),
        tel.commits.load(Relaxed) as f64,
    );
    f.counter(
        &k("offset_commit_failure"),
        "Position commits that failed (retried at the next)",
        task_labels(t),
        tel.commit_failures.load(Relaxed) as f64,
    );
    for (name, m) in tel.plugin.read() {
        let name = format!("sluice_{name}");
        match m.kind {
            MetricKind::Counter => f.counter(&name, m.help, task_labels(t), m.value),
            MetricKind::Gauge => f.gauge(&name, m.help, task_labels(t), m.value),
        }
    }
}

fn histograms(sample: &WorkerSample) -> Vec<Histogram> {
    sample
        .tasks
        .iter()
        .filter(|t| t.figures.kind == ConnectorKind::Sink)
        .map(|t| {
            let (sum, count, buckets) = t.figures.sink.latency.read();
            Histogram {
                labels: task_labels(t),
                sum,
                count,
                buckets,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_histograms_encode() {
        let source = Arc::new(TaskFigures::new(ConnectorKind::Source, 100));
        source.source.event(b'c', Some(1_000), Some(42), Some(7));
        source
            .source
            .snapshot_started(vec![("public.orders".into(), Some(10))]);
        source.source.snapshot_rows("public.orders", 4);
        let sink = Arc::new(TaskFigures::new(ConnectorKind::Sink, 0));
        sink.sink.latency.record_us(2_000, 3);
        sink.sink
            .plugin
            .add("duckdb_rows_applied", "Rows applied", 5.0);
        let sample = WorkerSample {
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
                    state: "PAUSED",
                    server: String::new(),
                    backlog: Some(0),
                },
            ],
            tasks: vec![
                TaskSample {
                    connector: "pg".into(),
                    task: 0,
                    state: "RUNNING",
                    figures: source,
                },
                TaskSample {
                    connector: "duck".into(),
                    task: 0,
                    state: "PAUSED",
                    figures: sink,
                },
            ],
            stored_bytes: Some(123),
            leftovers: vec![(
                "gone".into(),
                sluice_core::connector::Leftover {
                    resource: "slot_gone".into(),
                    retained_bytes: Some(4096),
                    note: "slot left".into(),
                },
            )],
        };
        let text = encode(&sample);
        for line in [
            "debezium_metrics_total_number_of_create_events_seen{connector=\"pg\",task=\"0\",context=\"streaming\",name=\"srv\"} 1",
            "debezium_metrics_rows_scanned{connector=\"pg\",task=\"0\",context=\"snapshot\",name=\"srv\",table=\"public.orders\"} 4",
            "sluice_deleted_connector_retained_bytes{connector=\"gone\",resource=\"slot_gone\"} 4096",
            "debezium_metrics_source_event_position{connector=\"pg\",task=\"0\",context=\"streaming\",name=\"srv\"} 42",
            "debezium_metrics_queue_remaining_capacity{connector=\"pg\",task=\"0\",context=\"streaming\",name=\"srv\"} 100",
            "kafka_connect_connector_status{connector=\"duck\",type=\"sink\",status=\"paused\"} 1",
            "sluice_duckdb_rows_applied_total{connector=\"duck\",task=\"0\"} 5",
            "sluice_sink_commit_to_durable_seconds_count{connector=\"duck\",task=\"0\"} 3",
            "sluice_sink_commit_to_durable_seconds_bucket{le=\"0.0025\",connector=\"duck\",task=\"0\"} 3",
            "sluice_sink_lag_milliseconds{connector=\"duck\"} 0",
            "sluice_local_log_bytes{worker_id=\"w\"} 123",
            "# TYPE kafka_connect_sink_task_sink_record_read counter",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
