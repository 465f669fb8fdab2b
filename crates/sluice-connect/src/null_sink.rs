//! `io.sluice.connect.NullSinkConnector` (alias `null`): consumes records and
//! discards them, counting. It is the sink of benchmarks: what it measures is
//! the cost of everything before the sink.
//!
//! Besides counting records and tombstones, it measures each change
//! event's latency: from the PostgreSQL commit time the event carries
//! (`source.ts_us`, or `source.ts_ms` where there is no `ts_us`) to the
//! `flush` that made it durable here (the worker commits a record's
//! position only after the flush). Snapshot reads are counted but carry no
//! commit time, so they have no latency. Values that are no Debezium
//! envelope (or came without a schema) are counted without latency.
//!
//! `sluice.null.stats.file` names a JSON file rewritten (atomically) at each
//! flush and at stop with the counts, the wall-clock times of the first and
//! last `put` and of the last flush, and the latency percentiles; the same figures
//! are logged when the task stops.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use sluice_core::config::{ConfigDef, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SinkContext, SinkTask};
use sluice_core::record::SinkRecord;

use crate::metrics::{now_us, LatencyHistogram, LatencySummary};

/// The null sink's class name.
pub const CLASS: &str = "io.sluice.connect.NullSinkConnector";

/// The key of the statistics file.
const STATS_FILE: &str = "sluice.null.stats.file";
/// The key that turns the latency measurement off.
const LATENCY: &str = "sluice.null.latency.enable";
/// The key of the records counted but left out of the latency.
const WARMUP: &str = "sluice.null.latency.warmup.records";

/// The null sink plugin.
pub fn plugin() -> Arc<dyn ConnectorPlugin> {
    Arc::new(NullSink)
}

struct NullSink;

impl ConnectorPlugin for NullSink {
    fn class(&self) -> &'static str {
        CLASS
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["null", "NullSink", "NullSinkConnector"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new(
                STATS_FILE,
                ConfigType::String,
                "JSON file rewritten at each flush with the records counted, the times of the first and last put and of the last flush (µs since the epoch) and the commit-to-flush latency; task N > 0 writes '<file>.N'. Absent: the figures are only logged at stop.",
            ),
            ConfigKey::new(
                LATENCY,
                ConfigType::Bool,
                "Measure each change event's commit-to-flush latency (reads the commit time from the event's bytes); false: only count, the least a sink can cost.",
            )
            .default("true"),
            ConfigKey::new(
                WARMUP,
                ConfigType::Int,
                "The first records a task takes are counted but left out of the latency, so a warm-up change (one that waited for topics and consumer groups to be set up) does not show as latency of the load.",
            )
            .default("0"),
        ])
    }
    fn validate(&self, _props: &Props) -> Result<Vec<String>, ConfigErrors> {
        Ok(Vec::new())
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        vec![props.clone(); max_tasks.max(1)]
    }
    fn create_sink_task(
        &self,
        props: &Props,
        ctx: SinkContext,
    ) -> anyhow::Result<Box<dyn SinkTask>> {
        let parsed = self.config_def().parse(props, &[])?;
        let stats_file = parsed
            .get(STATS_FILE)
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match ctx.task_id {
                0 => PathBuf::from(p),
                n => PathBuf::from(format!("{p}.{n}")),
            });
        let latency = !matches!(parsed.get(LATENCY), Some("false"));
        let warmup = match parsed.get(WARMUP) {
            _ if !latency => u64::MAX,
            None => 0,
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!("{WARMUP}: '{v}' is not a number of records (0 or more)")
            })?,
        };
        Ok(Box::new(NullSinkTask {
            connector: ctx.connector,
            task_id: ctx.task_id,
            stats_file,
            warmup,
            stats: Stats::default(),
            pending: Vec::new(),
            latency: LatencyHistogram::default(),
        }))
    }
}

/// What the task counted, as written to the statistics file.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct Stats {
    /// Records taken by `put`.
    records: u64,
    /// Records with a null value.
    tombstones: u64,
    /// Records made durable by a flush.
    flushed_records: u64,
    /// Wall clock (µs since the epoch) of the first put with records.
    first_put_us: Option<i64>,
    /// Wall clock of the last put with records: the pipeline's throughput
    /// is measured from the first to the last put, since the worker's flush
    /// schedule, not the sink, decides when the last flush comes.
    last_put_us: Option<i64>,
    /// Wall clock of the last flush that covered records.
    last_flush_us: Option<i64>,
    /// Commit-to-flush latency of the flushed change events.
    latency: Option<LatencySummary>,
}

struct NullSinkTask {
    connector: String,
    task_id: u32,
    stats_file: Option<PathBuf>,
    /// Records (from the first) left out of the latency.
    warmup: u64,
    stats: Stats,
    /// Commit times (µs) of the records put since the last flush, one entry
    /// per run of equal times (a transaction's events share one), so memory
    /// stays small between flushes.
    pending: Vec<(i64, u64)>,
    latency: LatencyHistogram,
}

use crate::metrics::event_commit_time_us as commit_time_us;

impl NullSinkTask {
    fn write_stats(&self) -> anyhow::Result<()> {
        let Some(path) = &self.stats_file else {
            return Ok(());
        };
        let text = serde_json::to_vec(&self.stats).context("encoding null sink statistics")?;
        // Written aside and renamed, so a reader never sees half a file.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, text).with_context(|| {
            format!(
                "writing null sink statistics to '{}'",
                PathBuf::from(&tmp).display()
            )
        })?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming null sink statistics to '{}'", path.display()))?;
        Ok(())
    }
}

#[async_trait]
impl SinkTask for NullSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = now_us();
        self.stats.first_put_us.get_or_insert(now);
        self.stats.last_put_us = Some(now);
        for r in records {
            self.stats.records += 1;
            let measured = self.stats.records > self.warmup;
            let Some(value) = &r.value else {
                self.stats.tombstones += 1;
                continue;
            };
            if let Some(ts) = measured
                .then(|| commit_time_us(r.value_schema.as_deref(), value))
                .flatten()
            {
                match self.pending.last_mut() {
                    Some((last, n)) if *last == ts => *n += 1,
                    _ => self.pending.push((ts, 1)),
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let now = now_us();
        for (ts, n) in self.pending.drain(..) {
            for _ in 0..n {
                self.latency.record_us(now - ts);
            }
        }
        if self.stats.flushed_records < self.stats.records {
            self.stats.flushed_records = self.stats.records;
            self.stats.last_flush_us = Some(now);
            if self.latency.count() > 0 {
                self.stats.latency = Some(self.latency.summary());
            }
            self.write_stats()?;
        }
        Ok(())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        let s = &self.stats;
        let secs = match (s.first_put_us, s.last_put_us) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
            _ => 0.0,
        };
        let rate = if secs > 0.0 {
            s.records as f64 / secs
        } else {
            0.0
        };
        tracing::info!(
            "null sink {} task {}: {} records ({} tombstones) put in {:.3} s from the first to the last put = {:.0} records/s, {} flushed; commit-to-flush latency {}",
            self.connector,
            self.task_id,
            s.records,
            s.tombstones,
            secs,
            rate,
            s.flushed_records,
            s.latency.map_or_else(|| "n/a".to_string(), |l| l.to_string()),
        );
        self.write_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::debezium::{source_schema, source_value, SourceInfo};
    use sluice_core::schema::{prim, SchemaBuilder, SchemaRef};
    use sluice_core::value::Value;

    fn envelope() -> SchemaRef {
        let row = SchemaBuilder::structure()
            .name("p.s.t.Value")
            .optional()
            .field("id", prim::int64())
            .build();
        SchemaBuilder::structure()
            .name("p.s.t.Envelope")
            .field("before", row.clone())
            .field("after", row)
            .field("source", source_schema())
            .field("op", prim::string())
            .build()
    }

    fn event(snapshot: &str, ts_us: i64) -> Value {
        let source = source_value(&SourceInfo {
            name: "p",
            ts_ms: ts_us / 1000,
            ts_us,
            ts_ns: ts_us * 1000,
            snapshot,
            db: "d",
            sequence: Some("[null,\"1\"]"),
            schema: "s",
            table: "t",
            tx_id: Some(1),
            lsn: Some(2),
            xmin: None,
        });
        Value::Struct(vec![
            Value::Null,
            Value::Struct(vec![Value::Int64(1)]),
            source,
            Value::String("c".into()),
        ])
    }

    fn rec(offset: i64, value: Option<Value>) -> SinkRecord {
        SinkRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: 0,
            key_schema: None,
            key: None,
            value_schema: value.as_ref().map(|_| envelope()),
            value,
            headers: Vec::new(),
        }
    }

    fn task(props: &[(&str, &str)]) -> anyhow::Result<Box<dyn SinkTask>> {
        let props: Props = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conv: Arc<dyn sluice_core::converter::Converter> =
            Arc::new(crate::converters::ByteArrayConverter);
        plugin().create_sink_task(
            &props,
            SinkContext {
                connector: "n".into(),
                task_id: 0,
                key_converter: Arc::clone(&conv),
                value_converter: conv,
                reporter: Default::default(),
                telemetry: Default::default(),
            },
        )
    }

    #[test]
    fn commit_time_comes_from_the_envelope_source_block() {
        let schema = envelope();
        let t = 1_700_000_000_123_456;
        assert_eq!(commit_time_us(Some(&schema), &event("false", t)), Some(t));
        // Snapshot reads, schemaless values and non-envelopes have none.
        assert_eq!(commit_time_us(Some(&schema), &event("true", t)), None);
        assert_eq!(commit_time_us(Some(&schema), &event("last", t)), None);
        assert_eq!(commit_time_us(None, &event("false", t)), None);
        assert_eq!(commit_time_us(Some(&prim::int64()), &Value::Int64(1)), None);
    }

    #[tokio::test]
    async fn counts_records_and_writes_stats_at_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.json");
        let shown = path.display().to_string();
        let mut t = task(&[("sluice.null.stats.file", &shown)]).expect("task");
        // An empty flush writes nothing.
        t.flush().await.expect("flush");
        assert!(!path.exists());
        let commit = now_us() - 2_000_000;
        t.put(&[
            rec(0, Some(event("false", commit))),
            rec(1, Some(event("false", commit))),
            rec(2, None),
            rec(3, Some(event("true", commit))),
        ])
        .await
        .expect("put");
        t.flush().await.expect("flush");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 4);
        assert_eq!(stats["flushed_records"], 4);
        assert_eq!(stats["tombstones"], 1);
        assert!(
            stats["first_put_us"].as_i64().expect("first")
                <= stats["last_flush_us"].as_i64().expect("last")
        );
        // Two change events, each committed two seconds before the flush.
        assert_eq!(stats["latency"]["count"], 2);
        let p50 = stats["latency"]["p50_ms"].as_f64().expect("p50");
        assert!(p50 >= 2000.0, "latency {p50} ms below the 2 s since commit");
        t.put(&[rec(4, Some(Value::Int64(7)))]).await.expect("put");
        t.stop().await.expect("stop");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 5);
        // Not flushed: counted, not durable.
        assert_eq!(stats["flushed_records"], 4);
        assert_eq!(stats["latency"]["count"], 2);
    }

    #[tokio::test]
    async fn warmup_records_and_disabled_latency_are_counted_without_latency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.json");
        let shown = path.display().to_string();
        let mut t = task(&[
            ("sluice.null.stats.file", &shown),
            ("sluice.null.latency.warmup.records", "2"),
        ])
        .expect("task");
        let commit = now_us();
        t.put(&[
            rec(0, Some(event("false", commit))),
            rec(1, None),
            rec(2, Some(event("false", commit))),
        ])
        .await
        .expect("put");
        t.flush().await.expect("flush");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 3);
        assert_eq!(stats["latency"]["count"], 1);
        // Counting only.
        let path = dir.path().join("count-only.json");
        let shown = path.display().to_string();
        let mut t = task(&[
            ("sluice.null.stats.file", &shown),
            ("sluice.null.latency.enable", "false"),
        ])
        .expect("task");
        t.put(&[rec(0, Some(event("false", commit)))])
            .await
            .expect("put");
        t.flush().await.expect("flush");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 1);
        assert_eq!(stats["latency"], serde_json::Value::Null);
        let err = task(&[("sluice.null.latency.warmup.records", "x")])
            .err()
            .expect("a bad warm-up count is refused");
        assert!(
            err.to_string()
                .contains("sluice.null.latency.warmup.records"),
            "{err}"
        );
    }

    #[test]
    fn registered_as_null_sink() {
        let p = plugin();
        assert_eq!(p.class(), CLASS);
        assert!(p.aliases().contains(&"null"));
        assert_eq!(p.kind(), ConnectorKind::Sink);
    }
}
