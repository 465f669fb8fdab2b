//! `io.sluice.connect.NullSinkConnector` (alias `null`): consumes records and
//! discards them, counting. It is the sink of benchmarks: what it measures is
//! the cost of everything before the sink.
//!
//! Besides counting records, tombstones and bytes, it measures each change
//! event's latency: from the PostgreSQL commit time the event carries
//! (`source.ts_us`, or `source.ts_ms` where there is no `ts_us`) to the
//! `flush` that made it durable here (the worker acknowledges a record only
//! after the flush). Snapshot reads are counted but carry no commit time, so
//! they have no latency. Values the JSON converter did not write (or that
//! are no Debezium envelope) are counted without latency.
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
use sluice_core::record::Record;

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
    /// Key and value bytes.
    bytes: u64,
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

/// Position of the last occurrence of `needle` (not empty) in `hay`. Looks
/// for the first byte before comparing, which is several times cheaper than
/// comparing every window: this runs on every record.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut end = hay.len();
    while let Some(i) = hay[..end].iter().rposition(|&b| b == first) {
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        end = i;
    }
    None
}

/// Position of the first occurrence of `needle` (not empty) in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut start = 0;
    while let Some(i) = hay[start..].iter().position(|&b| b == first) {
        if hay[start + i..].starts_with(needle) {
            return Some(start + i);
        }
        start += i + 1;
    }
    None
}

/// The decimal integer at the start of `s`.
fn leading_int(s: &[u8]) -> Option<(i64, usize)> {
    let len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = std::str::from_utf8(s.get(..len)?).ok()?;
    Some((text.parse().ok()?, len))
}

/// The PostgreSQL commit time (µs since the epoch) of a Debezium change
/// event as the JSON converter wrote it (with or without its schema), or
/// None for a snapshot read or anything else.
///
/// The envelope's `source` block comes after `before` and `after`, and a
/// JSON string cannot hold an unescaped `"`, so the last `"source":{` is the
/// envelope's whatever the row's columns hold.
fn commit_time_us(value: &[u8]) -> Option<i64> {
    let start = rfind(value, b"\"source\":{")?;
    let source = &value[start..];
    let ts_ms_at = find(source, b"\"ts_ms\":")? + b"\"ts_ms\":".len();
    let (ts_ms, len) = leading_int(&source[ts_ms_at..])?;
    let rest = &source[ts_ms_at + len..];
    // Debezium's source block: ts_ms, then snapshot ("false" while streaming).
    if !rest.starts_with(b",\"snapshot\":\"false\"") {
        return None;
    }
    // ts_us (Debezium 2.x) follows within the block, before schema and table.
    let block_end = find(rest, b"\"schema\":").unwrap_or(rest.len());
    let ts_us = find(&rest[..block_end], b"\"ts_us\":")
        .and_then(|at| leading_int(&rest[at + b"\"ts_us\":".len()..]))
        .map(|(us, _)| us);
    Some(ts_us.unwrap_or(ts_ms.saturating_mul(1000)))
}

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
    async fn put(&mut self, records: &[Record]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = now_us();
        self.stats.first_put_us.get_or_insert(now);
        self.stats.last_put_us = Some(now);
        for r in records {
            self.stats.records += 1;
            let measured = self.stats.records > self.warmup;
            self.stats.bytes +=
                (r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len)) as u64;
            let Some(value) = &r.value else {
                self.stats.tombstones += 1;
                continue;
            };
            if let Some(ts) = measured.then(|| commit_time_us(value)).flatten() {
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
            "null sink {} task {}: {} records ({} tombstones, {} bytes) put in {:.3} s from the first to the last put = {:.0} records/s, {} flushed; commit-to-flush latency {}",
            self.connector,
            self.task_id,
            s.records,
            s.tombstones,
            s.bytes,
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

    fn rec(offset: i64, value: Option<&str>) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: 0,
            key: Some(b"{\"id\":1}".to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    fn task(props: &[(&str, &str)]) -> Box<dyn SinkTask> {
        let props: Props = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conv: Arc<dyn sluice_core::converter::Converter> =
            Arc::new(crate::converters::ByteArrayConverter);
        plugin()
            .create_sink_task(
                &props,
                SinkContext {
                    connector: "n".into(),
                    task_id: 0,
                    key_converter: Arc::clone(&conv),
                    value_converter: conv,
                },
            )
            .expect("task")
    }

    fn event(snapshot: &str, ts_ms: i64, ts_us: Option<i64>, after: &str) -> String {
        let ts_us = ts_us.map_or(String::new(), |us| {
            format!(",\"ts_us\":{us},\"ts_ns\":null")
        });
        format!(
            "{{\"schema\":{{\"type\":\"struct\",\"fields\":[{{\"field\":\"source\"}}]}},\"payload\":{{\"before\":null,\"after\":{after},\"source\":{{\"version\":\"2.7.0.Final\",\"connector\":\"postgresql\",\"name\":\"p\",\"ts_ms\":{ts_ms},\"snapshot\":\"{snapshot}\",\"db\":\"d\",\"sequence\":null{ts_us},\"schema\":\"s\",\"table\":\"t\",\"txId\":1,\"lsn\":2,\"xmin\":null}},\"transaction\":null,\"op\":\"c\",\"ts_ms\":99,\"ts_us\":99000}}}}"
        )
    }

    #[test]
    fn finds_first_and_last_occurrences() {
        assert_eq!(find(b"abcabc", b"bc"), Some(1));
        assert_eq!(rfind(b"abcabc", b"bc"), Some(4));
        assert_eq!(find(b"abcab", b"abc"), Some(0));
        assert_eq!(rfind(b"abcab", b"abc"), Some(0));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(rfind(b"", b"a"), None);
        assert_eq!(find(b"aaa", b""), None);
    }

    #[test]
    fn commit_time_comes_from_the_envelope_source_block() {
        // A column holding a struct named source, with its own ts fields,
        // does not fool it.
        let after = "{\"source\":{\"ts_ms\":5,\"snapshot\":\"false\",\"ts_us\":5000},\"note\":\"\\\"source\\\":{\"}";
        assert_eq!(
            commit_time_us(
                event(
                    "false",
                    1_700_000_000_123,
                    Some(1_700_000_000_123_456),
                    after
                )
                .as_bytes()
            ),
            Some(1_700_000_000_123_456)
        );
        // Without ts_us (older event layouts): ts_ms in µs.
        assert_eq!(
            commit_time_us(event("false", 1_700_000_000_123, None, "null").as_bytes()),
            Some(1_700_000_000_123_000)
        );
        // Snapshot reads and non-envelopes have no commit time.
        assert_eq!(
            commit_time_us(event("true", 1, Some(1000), "null").as_bytes()),
            None
        );
        assert_eq!(
            commit_time_us(event("last", 1, Some(1000), "null").as_bytes()),
            None
        );
        assert_eq!(commit_time_us(b"{\"a\":1}"), None);
        assert_eq!(commit_time_us(b"\"source\":{\"ts_ms\":x"), None);
    }

    #[tokio::test]
    async fn counts_records_and_writes_stats_at_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stats.json");
        let shown = path.display().to_string();
        let mut t = task(&[("sluice.null.stats.file", &shown)]);
        // An empty flush writes nothing.
        t.flush().await.expect("flush");
        assert!(!path.exists());
        let commit = now_us() - 2_000_000;
        let change = event("false", commit / 1000, Some(commit), "{\"id\":1}");
        let read = event("true", commit / 1000, Some(commit), "{\"id\":2}");
        t.put(&[
            rec(0, Some(&change)),
            rec(1, Some(&change)),
            rec(2, None),
            rec(3, Some(&read)),
        ])
        .await
        .expect("put");
        t.flush().await.expect("flush");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 4);
        assert_eq!(stats["flushed_records"], 4);
        assert_eq!(stats["tombstones"], 1);
        let bytes = 4 * 8 + 2 * change.len() + read.len();
        assert_eq!(stats["bytes"], bytes);
        assert!(
            stats["first_put_us"].as_i64().expect("first")
                <= stats["last_flush_us"].as_i64().expect("last")
        );
        // Two change events, each committed two seconds before the flush.
        assert_eq!(stats["latency"]["count"], 2);
        let p50 = stats["latency"]["p50_ms"].as_f64().expect("p50");
        assert!(p50 >= 2000.0, "latency {p50} ms below the 2 s since commit");
        t.put(&[rec(4, Some("not json"))]).await.expect("put");
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
        ]);
        let commit = now_us();
        let change = event("false", commit / 1000, Some(commit), "{\"id\":1}");
        t.put(&[rec(0, Some(&change)), rec(1, None), rec(2, Some(&change))])
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
        ]);
        t.put(&[rec(0, Some(&change))]).await.expect("put");
        t.flush().await.expect("flush");
        let stats: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("stats")).expect("json");
        assert_eq!(stats["records"], 1);
        assert_eq!(stats["latency"], serde_json::Value::Null);
        let props: Props = [("sluice.null.latency.warmup.records", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conv: Arc<dyn sluice_core::converter::Converter> =
            Arc::new(crate::converters::ByteArrayConverter);
        let err = plugin()
            .create_sink_task(
                &props,
                SinkContext {
                    connector: "n".into(),
                    task_id: 0,
                    key_converter: Arc::clone(&conv),
                    value_converter: conv,
                },
            )
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
