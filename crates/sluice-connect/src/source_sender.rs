//! A source task's [`RecordSender`]: applies the connector's transforms to
//! each record (as Kafka Connect's `WorkerSourceTask` does), converts it
//! with the connector's converters when the transport stores bytes, and
//! hands the batch to the task's [`SourceOutput`].
//!
//! It also counts the Debezium change events it sends (by `op`, with their
//! commit time, LSN and transaction) and the snapshot's rows per table in the
//! task's [`SourceTelemetry`].
//!
//! A record that fails a transform or a converter follows the connector's
//! `errors.*` settings: it fails the task, or is skipped and leaves only its
//! source offset behind (committed once everything before it is delivered),
//! as Kafka Connect commits a skipped record's offset.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_core::connector::RecordSender;
use sluice_core::converter::Converter;
use sluice_core::record::{Record, SourceOffset, SourceRecord};
use sluice_core::schema::Schema;
use sluice_core::telemetry::SourceTelemetry;
use sluice_core::value::Value;
use tokio_util::sync::CancellationToken;

use crate::error_handling::{ErrorHandler, Failure, Stage};
use crate::metrics::ConnectorMetrics;
use crate::topics::ActiveTopics;
use crate::transforms::{ConnectRecord, TransformChain};
use crate::transport::{OutRecord, Outgoing, RecordForm, SourceOutput};

/// The [`RecordSender`] of one source task.
pub struct SourceSender {
    connector: String,
    task_id: u32,
    output: Arc<dyn SourceOutput>,
    form: RecordForm,
    key_converter: Arc<dyn Converter>,
    value_converter: Arc<dyn Converter>,
    /// The connector's transforms; None when it has none.
    transforms: Option<Arc<TransformChain>>,
    /// The connector's error handling; None fails the task on the first
    /// record that cannot be transformed or converted.
    errors: Option<ErrorHandler>,
    active: Arc<ActiveTopics>,
    // `send` takes &self; records of one task must still be handed on in
    // order, so concurrent calls are serialized (and share the cache of
    // where envelope fields are).
    serial: tokio::sync::Mutex<FieldCache>,
    telemetry: Arc<SourceTelemetry>,
    metrics: Arc<ConnectorMetrics>,
    /// While true (the connector is paused) `send` waits, so the task
    /// stops producing; cancelling the token ends the wait.
    paused: Option<(tokio::sync::watch::Receiver<bool>, CancellationToken)>,
}

impl SourceSender {
    /// A sender for source task `task_id` of `connector` into `output`.
    pub fn new(
        connector: String,
        task_id: u32,
        output: Arc<dyn SourceOutput>,
        key_converter: Arc<dyn Converter>,
        value_converter: Arc<dyn Converter>,
        active: Arc<ActiveTopics>,
    ) -> Self {
        SourceSender {
            metrics: crate::metrics::connector(&connector),
            form: output.form(),
            connector,
            task_id,
            output,
            key_converter,
            value_converter,
            transforms: None,
            errors: None,
            active,
            serial: tokio::sync::Mutex::new(FieldCache::default()),
            telemetry: Arc::new(SourceTelemetry::default()),
            paused: None,
        }
    }

    /// Counts events in `telemetry` (the task's).
    pub fn with_telemetry(mut self, telemetry: Arc<SourceTelemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Makes `send` wait while `paused` is true, unless `stop` is cancelled.
    pub fn with_pause(
        mut self,
        paused: tokio::sync::watch::Receiver<bool>,
        stop: CancellationToken,
    ) -> Self {
        self.paused = Some((paused, stop));
        self
    }

    /// Handles records that fail a transform or conversion as the
    /// connector's `errors.*` settings say.
    pub fn with_errors(mut self, errors: ErrorHandler) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Applies `chain` to every record before conversion (an empty chain
    /// is skipped entirely).
    pub fn with_transforms(mut self, chain: Arc<TransformChain>) -> Self {
        self.transforms = (!chain.is_empty()).then_some(chain);
        self
    }

    /// Runs the chain over one record. A dropped record that carried an
    /// offset becomes an offset-only marker: Kafka Connect still commits a
    /// filtered record's offset. On failure: the record's topic and offset,
    /// and why.
    #[allow(clippy::type_complexity)]
    fn transform(
        &self,
        chain: &TransformChain,
        r: SourceRecord,
    ) -> Result<Option<SourceRecord>, (Arc<str>, Option<Arc<SourceOffset>>, Failure)> {
        if r.is_offset_only() {
            return Ok(Some(r));
        }
        let SourceRecord {
            topic,
            key_schema,
            key,
            value_schema,
            value,
            timestamp_ms,
            headers,
            offset,
        } = r;
        let cr = ConnectRecord {
            topic: Arc::clone(&topic),
            partition: None,
            offset: None,
            key_schema,
            key,
            value_schema,
            value,
            timestamp_ms,
            headers,
        };
        let out = match chain.apply(cr) {
            Ok(out) => out,
            Err(e) => {
                let alias = e.alias.clone();
                return Err((topic, offset, Failure::transform(alias, e)));
            }
        };
        Ok(match out {
            Some(t) => Some(SourceRecord {
                topic: t.topic,
                key_schema: t.key_schema,
                key: t.key,
                value_schema: t.value_schema,
                value: t.value,
                timestamp_ms: t.timestamp_ms,
                headers: t.headers,
                offset,
            }),
            None => offset.map(SourceRecord::offset_only),
        })
    }

    /// A record that failed: fails the task, or (tolerated) is reported and
    /// leaves only its offset behind.
    fn tolerate(
        &self,
        topic: &str,
        offset: Option<Arc<SourceOffset>>,
        failure: Failure,
        out: &mut Vec<Outgoing>,
    ) -> anyhow::Result<()> {
        match &self.errors {
            Some(h) => h.report_source(topic, offset.as_ref(), failure)?,
            None => {
                let Failure { stage, error, .. } = failure;
                return Err(sluice_core::error::definite(error.context(format!(
                    "source connector '{}' task {}: stage {stage} failed on a record for topic '{topic}' (source offset {})",
                    self.connector,
                    self.task_id,
                    offset.as_ref().map_or("none".to_string(), |o| {
                        serde_json::Value::Object(o.offset.clone()).to_string()
                    })
                ))));
            }
        }
        if offset.is_some() {
            out.push(Outgoing {
                record: None,
                offset,
            });
        }
        Ok(())
    }

    fn convert(&self, r: &SourceRecord) -> Result<Record, Failure> {
        let key = self
            .key_converter
            .from_connect(&r.topic, r.key_schema.as_deref(), r.key.as_ref())
            .map_err(|e| Failure::new(Stage::KeyConverter, e))?;
        let value = self
            .value_converter
            .from_connect(&r.topic, r.value_schema.as_deref(), r.value.as_ref())
            .map_err(|e| Failure::new(Stage::ValueConverter, e))?;
        Ok(Record {
            topic: Arc::clone(&r.topic),
            partition: 0,
            offset: 0,
            // A producer stamps records without a timestamp with its clock.
            timestamp_ms: r.timestamp_ms.unwrap_or_else(now_ms),
            key,
            value,
            headers: r.headers.clone(),
        })
    }
}

/// Where a Debezium envelope's fields are, per value schema (by identity:
/// sources share one schema per table).
#[derive(Default)]
struct FieldCache {
    by_schema: Vec<(Arc<Schema>, Option<Envelope>)>,
}

/// Positions of the fields the telemetry reads.
#[derive(Clone, Copy)]
struct Envelope {
    op: usize,
    source: usize,
    ts_us: Option<usize>,
    ts_ms: Option<usize>,
    lsn: Option<usize>,
    tx_id: Option<usize>,
    snapshot: Option<usize>,
    schema: Option<usize>,
    table: Option<usize>,
}

impl Envelope {
    fn of(s: &Schema) -> Option<Envelope> {
        let (op, _) = s.field("op")?;
        let (source, f) = s.field("source")?;
        let src = &f.schema;
        let at = |n: &str| src.field(n).map(|(i, _)| i);
        Some(Envelope {
            op,
            source,
            ts_us: at("ts_us"),
            ts_ms: at("ts_ms"),
            lsn: at("lsn"),
            tx_id: at("txId"),
            snapshot: at("snapshot"),
            schema: at("schema"),
            table: at("table"),
        })
    }
}

impl FieldCache {
    fn envelope(&mut self, s: &Arc<Schema>) -> Option<Envelope> {
        if let Some((_, e)) = self.by_schema.iter().find(|(k, _)| Arc::ptr_eq(k, s)) {
            return *e;
        }
        let e = Envelope::of(s);
        if self.by_schema.len() >= 256 {
            self.by_schema.clear();
        }
        self.by_schema.push((Arc::clone(s), e));
        e
    }

    /// Counts the Debezium events of a batch.
    fn count(&mut self, records: &[SourceRecord], t: &SourceTelemetry) {
        // Snapshot rows per table, added once per batch.
        let mut scanned: Vec<(String, u64)> = Vec::new();
        let mut done: Vec<String> = Vec::new();
        for r in records {
            let (Some(schema), Some(Value::Struct(v))) = (&r.value_schema, &r.value) else {
                continue;
            };
            let Some(e) = self.envelope(schema) else {
                continue;
            };
            let op = v
                .get(e.op)
                .and_then(Value::as_str)
                .map_or(b'?', |o| o.as_bytes().first().copied().unwrap_or(b'?'));
            let Some(src) = v.get(e.source).and_then(Value::as_struct) else {
                continue;
            };
            let get = |i: Option<usize>| i.and_then(|i| src.get(i));
            let snapshot = match get(e.snapshot) {
                Some(Value::String(s)) if s != "false" => Some(s.as_str()),
                _ => None,
            };
            let commit_us = if snapshot.is_none() {
                get(e.ts_us)
                    .and_then(Value::as_i64)
                    .or_else(|| get(e.ts_ms).and_then(Value::as_i64).map(|ms| ms * 1000))
            } else {
                None
            };
            let lsn = get(e.lsn).and_then(Value::as_i64).map(|l| l as u64);
            let txid = if snapshot.is_none() {
                get(e.tx_id).and_then(Value::as_i64)
            } else {
                None
            };
            t.event(op, commit_us, lsn, txid);
            if op == b'r' {
                let table = match (get(e.schema), get(e.table)) {
                    (Some(Value::String(s)), Some(Value::String(n))) => format!("{s}.{n}"),
                    _ => continue,
                };
                if matches!(snapshot, Some("last" | "last_in_data_collection")) {
                    done.push(table.clone());
                }
                match scanned.iter_mut().find(|(n, _)| *n == table) {
                    Some((_, k)) => *k += 1,
                    None => scanned.push((table, 1)),
                }
            }
        }
        for (table, n) in scanned {
            t.snapshot_rows(&table, n);
        }
        for table in done {
            t.snapshot_table_done(&table);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl RecordSender for SourceSender {
    async fn send(&self, records: Vec<SourceRecord>) -> anyhow::Result<()> {
        let mut fields = self.serial.lock().await;
        self.telemetry
            .polled
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        fields.count(&records, &self.telemetry);
        if let Some((paused, stop)) = &self.paused {
            let mut paused = paused.clone();
            tokio::select! {
                // An error means the worker dropped the connector: go on.
                _ = paused.wait_for(|p| !*p) => {}
                _ = stop.cancelled() => {}
            }
        }
        let sourced = records.iter().filter(|r| !r.is_offset_only()).count() as u64;
        // The whole batch is prepared first: a failure fails the task
        // before any of it is handed on.
        let mut out: Vec<Outgoing> = Vec::with_capacity(records.len());
        let mut last_topic: Option<Arc<str>> = None;
        for r in records {
            let r = match &self.transforms {
                Some(chain) => match self.transform(chain, r) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err((topic, offset, failure)) => {
                        self.tolerate(&topic, offset, failure, &mut out)?;
                        continue;
                    }
                },
                None => r,
            };
            if r.is_offset_only() {
                out.push(Outgoing {
                    record: None,
                    offset: r.offset,
                });
                continue;
            }
            if last_topic.as_ref() != Some(&r.topic) {
                self.active.note(&self.connector, &r.topic);
                last_topic = Some(Arc::clone(&r.topic));
            }
            match self.form {
                RecordForm::Structured => {
                    let offset = r.offset.clone();
                    out.push(Outgoing {
                        record: Some(OutRecord::Structured(r)),
                        offset,
                    });
                }
                RecordForm::Serialized => match self.convert(&r) {
                    Ok(rec) => out.push(Outgoing {
                        record: Some(OutRecord::Serialized(rec)),
                        offset: r.offset,
                    }),
                    Err(failure) => self.tolerate(&r.topic, r.offset, failure, &mut out)?,
                },
            }
        }
        self.output.send(out).await?;
        self.metrics.add_sourced(sourced);
        Ok(())
    }
}
