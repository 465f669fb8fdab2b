//! Drives one sink task: polls its [`SinkInput`], reads serialized records
//! with the connector's converters (structured ones come as they are),
//! applies the connector's transforms, `put`s the result, `flush`es when
//! enough accumulated or a short interval passed, and commits to the input
//! the positions the sink made durable.
//!
//! Every driver measures its sink's delivery: how many records became
//! durable, from the first record taken to the last made durable, and each
//! change event's latency from its PostgreSQL commit (`source.ts_us`) to the
//! flush (or pre-commit) that made it durable. The figures are logged when
//! the task stops and, with the connector key `sluice.sink.stats.file`,
//! written to that JSON file at every flush (task N > 0 writes `<file>.N`).
//!
//! Records that cannot be converted or transformed go through the
//! connector's error handling ([`crate::error_handling`]): they fail the task, or
//! are skipped (logged, counted, written to the dead letter queue) and
//! their positions committed with the rest. A failing `put` is retried
//! with backoff for `errors.retry.timeout`, then fails the task; nothing is
//! committed that was not written.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::connector::{SinkTask, TaskReporter};
use sluice_core::converter::Converter;
use sluice_core::error::transient;
use sluice_core::record::{Record, SinkRecord};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error_handling::{ErrorHandler, Failure, Stage};
use crate::metrics::{event_commit_time_us, now_us, LatencyHistogram, LatencySummary};
use crate::topics::ActiveTopics;
use crate::transforms::{ConnectRecord, TransformChain};
use crate::transport::{InRecord, Polled, SinkInput, TopicPartition};
use sluice_core::telemetry::SinkTelemetry;
use std::sync::atomic::Ordering::Relaxed;

/// Most records handed to one `put`.
const MAX_BATCH: usize = 4096;

/// How often positions made durable are committed to the input.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// How a sink task is driven.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Flush at the latest this long after the first unflushed `put`.
    pub interval: Duration,
    /// Flush once this many records were put since the last flush.
    pub max_records: usize,
    /// Once the input has nothing more for now, flush what was put if the
    /// last flush is at least this old (group commit): a trickle of changes
    /// is durable within milliseconds, while under load, when records keep
    /// coming, flushes stay batched by `interval` and `max_records`. None:
    /// only those two.
    pub idle_gap: Option<Duration>,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            interval: Duration::from_secs(1),
            max_records: 10_000,
            idle_gap: Some(Duration::from_millis(10)),
        }
    }
}

/// One running sink task and its input.
pub struct SinkDriver {
    /// Connector name.
    pub connector: String,
    /// Task number within the connector.
    pub task_id: u32,
    /// The task.
    pub task: Box<dyn SinkTask>,
    /// Where its records come from.
    pub input: Box<dyn SinkInput>,
    /// Cancelled when the task must stop: flush, commit, stop.
    pub stop: CancellationToken,
    /// When to flush.
    pub policy: FlushPolicy,
    /// The connector's key converter (reads serialized keys).
    pub key_converter: Arc<dyn Converter>,
    /// The connector's value converter (reads serialized values).
    pub value_converter: Arc<dyn Converter>,
    /// The connector's transforms; None when it has none.
    pub transforms: Option<Arc<TransformChain>>,
    /// While true (the connector is paused) the task takes nothing.
    pub paused: Option<tokio::sync::watch::Receiver<bool>>,
    /// The connector's error handling (`errors.*`).
    pub errors: ErrorHandler,
    /// Where the connector's active topics are noted.
    pub active: Arc<ActiveTopics>,
    /// Told when the task works.
    pub reporter: TaskReporter,
    /// Where the task's figures are kept (for metrics and status).
    pub telemetry: Arc<SinkTelemetry>,
    /// `sluice.sink.stats.file`: where the delivery figures are written.
    pub stats_file: Option<std::path::PathBuf>,
}

/// The connector key naming the file a sink's delivery figures go to.
pub const STATS_FILE: &str = "sluice.sink.stats.file";

/// A sink task's delivery figures, as written to its stats file.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SinkStats {
    /// Records made durable (written, dropped by a transform or skipped).
    pub durable: u64,
    /// Wall clock (µs since the epoch) when the first record was taken.
    pub first_take_us: Option<i64>,
    /// Wall clock when records were last made durable.
    pub last_durable_us: Option<i64>,
    /// Commit-to-durable latency of the change events made durable.
    pub latency: Option<LatencySummary>,
}

/// What became of one record read: taken (None: dropped by a transform), or
/// rejected with the record as consumed and why.
type ReadOutcome = Result<Option<SinkRecord>, Box<(Record, Failure)>>;

/// Positions: per topic partition, the next offset.
type Positions = BTreeMap<TopicPartition, i64>;

#[derive(Default)]
struct Pending {
    /// Records put (or dropped) since the last flush.
    records: usize,
    since: Option<Instant>,
    /// The input had nothing more after the last poll.
    drained: bool,
    last_flush: Option<Instant>,
    /// Positions of what was taken (put, dropped or skipped), not yet
    /// flushed.
    taken: Positions,
    /// For a task that batches itself: per partition, every record not yet
    /// durable, oldest first, whether it reached the task (a dropped or
    /// skipped one is durable as soon as everything before it is), and its
    /// commit time.
    entries: BTreeMap<TopicPartition, VecDeque<(i64, bool, Option<i64>)>>,
    /// Commit times of what was taken and is not durable yet (run-length).
    commit_times: Vec<(i64, u32)>,
    /// Positions made durable and not committed yet.
    durable: Positions,
    last_commit: Option<Instant>,
    stats: SinkStats,
    latency: LatencyHistogram,
}

impl SinkDriver {
    fn what(&self, action: &str) -> String {
        format!(
            "sink connector '{}' task {}: {action}",
            self.connector, self.task_id
        )
    }

    /// Runs until stopped (Ok after a final flush and commit) or the task
    /// fails.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // The dead letter queue topic exists before any record can need it.
        self.errors.prepare().await?;
        let mut pending = Pending::default();
        let result = self.drive(&mut pending).await;
        self.input.close().await;
        self.report(&pending.stats);
        result
    }

    /// Logs the delivery figures (the benchmark reads this line).
    fn report(&self, stats: &SinkStats) {
        if stats.durable == 0 {
            return;
        }
        let secs = match (stats.first_take_us, stats.last_durable_us) {
            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
            _ => 0.0,
        };
        tracing::info!(
            "sink delivery: {} records of sink connector '{}' task {} durable in {secs:.3} s from the first record taken; commit-to-durable latency {}",
            stats.durable,
            self.connector,
            self.task_id,
            stats
                .latency
                .map_or_else(|| "n/a".to_string(), |l| l.to_string())
        );
    }

    fn write_stats(&self, stats: &SinkStats) {
        let Some(path) = &self.stats_file else { return };
        let path = if self.task_id == 0 {
            path.clone()
        } else {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{}", self.task_id));
            p.into()
        };
        let Ok(text) = serde_json::to_vec(stats) else {
            return;
        };
        // Written aside and renamed, so a reader never sees half a file.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::warn!("writing sink statistics to '{}': {e}", path.display());
        }
    }

    async fn drive(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        let mut batch: Vec<SinkRecord> = Vec::with_capacity(1024);
        loop {
            if let Some(mut paused) = self.paused.clone() {
                if *paused.borrow() && !self.stop.is_cancelled() {
                    // What was taken before the pause is written and
                    // committed; nothing more until resumed.
                    self.put(&mut batch).await?;
                    self.flush_all(pending).await?;
                    self.commit(pending, true).await?;
                    tokio::select! {
                        r = paused.wait_for(|p| !*p) => {
                            if r.is_err() {
                                // The worker dropped the switch: no more pauses.
                                self.paused = None;
                            }
                        }
                        _ = self.stop.cancelled() => {}
                    }
                    continue;
                }
            }
            let mut deadline = pending.since.map(|s| s + self.policy.interval);
            // A task that batches itself decides on its own when to write.
            let idle_gap = self.policy.idle_gap.filter(|_| !self.task.batches_itself());
            if let (Some(gap), true, Some(d)) = (idle_gap, pending.drained, deadline) {
                let idle = pending.last_flush.map_or_else(Instant::now, |f| f + gap);
                deadline = Some(d.min(idle));
            }
            let commit_at = pending
                .last_commit
                .map_or_else(Instant::now, |c| c + COMMIT_INTERVAL);
            let commit_due = !pending.durable.is_empty();
            // A pause takes effect at once, not after the next records.
            let mut pause = self.paused.clone();
            let paused = async move {
                match pause.as_mut() {
                    Some(p) => {
                        if p.wait_for(|p| *p).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                _ = paused => continue,
                polled = self.input.poll() => match polled? {
                    Some(Polled::Records { records, more }) => {
                        self.take(records, &mut batch, pending).await?;
                        pending.drained = !more;
                    }
                    Some(Polled::Revoked(parts)) => self.revoke(parts, &mut batch, pending).await?,
                    None => {
                        return Err(transient(anyhow::anyhow!(
                            "{}",
                            self.what("its input ended (the transport lost its membership)")
                        )));
                    }
                },
                _ = sleep_until(deadline) => {
                    self.put(&mut batch).await?;
                    self.flush(pending).await?;
                }
                _ = tokio::time::sleep_until(commit_at), if commit_due => {}
            }
            self.put(&mut batch).await?;
            // Checked here too: with records always waiting, the timer
            // branch above would never be chosen. A task that batches
            // itself is asked on the interval only: its batches close on
            // their own size, not on the worker's record count.
            let idle_due = match self.policy.idle_gap.filter(|_| !self.task.batches_itself()) {
                Some(gap) if pending.drained && pending.records > 0 => {
                    pending.last_flush.is_none_or(|f| f.elapsed() >= gap)
                }
                _ => false,
            };
            let due = idle_due
                || pending
                    .since
                    .is_some_and(|s| s.elapsed() >= self.policy.interval);
            if due || (!self.task.batches_itself() && pending.records >= self.policy.max_records) {
                self.flush(pending).await?;
            }
            self.commit(pending, false).await?;
        }
        // Stopping: what was taken is written; the rest stays in the
        // transport for the next run.
        self.put(&mut batch).await?;
        self.flush_all(pending).await?;
        self.commit(pending, true).await?;
        self.task
            .stop()
            .await
            .with_context(|| self.what("stopping"))?;
        Ok(())
    }

    /// Reads, transforms and batches `records`.
    async fn take(
        &mut self,
        records: Vec<InRecord>,
        batch: &mut Vec<SinkRecord>,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        let batching = self.task.batches_itself();
        let mut dlq = Vec::new();
        self.telemetry.read.fetch_add(records.len() as u64, Relaxed);
        self.telemetry
            .pending
            .fetch_add(records.len() as u64, Relaxed);
        for r in records {
            let (topic, partition, offset) = r.place();
            let tp = TopicPartition {
                topic: Arc::clone(topic),
                partition,
            };
            self.active.note(&self.connector, topic);
            pending.stats.first_take_us.get_or_insert_with(now_us);
            let (outcome, committed_at) = self.read(r);
            if let Some(ts) = committed_at {
                match pending.commit_times.last_mut() {
                    Some((last, n)) if *last == ts => *n += 1,
                    _ => pending.commit_times.push((ts, 1)),
                }
            }
            let reached = match outcome {
                Ok(Some(sr)) => {
                    batch.push(sr);
                    true
                }
                // Dropped by a transform: consumed, as Kafka Connect
                // commits its offset.
                Ok(None) => false,
                Err(rejected) => {
                    let (original, failure) = *rejected;
                    if let Some(d) = self.errors.report_sink(&original, failure).await? {
                        dlq.push(d);
                    }
                    false
                }
            };
            pending.taken.insert(tp.clone(), offset + 1);
            if batching {
                pending
                    .entries
                    .entry(tp)
                    .or_default()
                    .push_back((offset, reached, committed_at));
            }
            pending.records += 1;
            pending.since.get_or_insert_with(Instant::now);
            if batch.len() >= MAX_BATCH {
                self.put(batch).await?;
            }
        }
        if !dlq.is_empty() {
            // Skipped records count as consumed only once their dead
            // letter queue copies are stored.
            self.errors.await_dlq(dlq).await?;
        }
        Ok(())
    }

    /// One record as the sink gets it: read by the converters when it came
    /// serialized, then through the transforms; with the commit time of the
    /// change event it was. On failure: the record as consumed, and why.
    fn read(&self, r: InRecord) -> (ReadOutcome, Option<i64>) {
        let (sr, original) = match self.read_record(r) {
            Ok(read) => read,
            Err(rejected) => return (Err(rejected), None),
        };
        let committed_at = sr
            .value
            .as_ref()
            .and_then(|v| event_commit_time_us(sr.value_schema.as_deref(), v));
        let outcome = match &self.transforms {
            None => Ok(Some(sr)),
            Some(chain) => self.transform(chain, sr, original),
        };
        (outcome, committed_at)
    }

    /// A record read by the converters when it came serialized, with its
    /// bytes when the dead letter queue may need them.
    #[allow(clippy::type_complexity)]
    fn read_record(
        &self,
        r: InRecord,
    ) -> Result<(SinkRecord, Option<Record>), Box<(Record, Failure)>> {
        match r {
            InRecord::Serialized(raw) => {
                let (key_schema, key) = match self
                    .key_converter
                    .to_connect(&raw.topic, raw.key.as_deref())
                {
                    Ok(k) => k,
                    Err(e) => return Err(Box::new((raw, Failure::new(Stage::KeyConverter, e)))),
                };
                let (value_schema, value) = match self
                    .value_converter
                    .to_connect(&raw.topic, raw.value.as_deref())
                {
                    Ok(v) => v,
                    Err(e) => return Err(Box::new((raw, Failure::new(Stage::ValueConverter, e)))),
                };
                // The bytes as consumed, for the dead letter queue should a
                // transform fail (a copy only when there is one).
                let original = (self.transforms.is_some() && self.errors.keeps_originals())
                    .then(|| raw.clone());
                let sr = SinkRecord {
                    topic: raw.topic,
                    partition: raw.partition,
                    offset: raw.offset,
                    timestamp_ms: raw.timestamp_ms,
                    key_schema,
                    key,
                    value_schema,
                    value,
                    headers: raw.headers,
                };
                Ok((sr, original))
            }
            InRecord::Structured(sr) => Ok((sr, None)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn transform(
        &self,
        chain: &TransformChain,
        sr: SinkRecord,
        original: Option<Record>,
    ) -> Result<Option<SinkRecord>, Box<(Record, Failure)>> {
        let (partition, offset) = (sr.partition, sr.offset);
        let cr = ConnectRecord {
            topic: sr.topic,
            partition: Some(sr.partition),
            offset: Some(sr.offset),
            key_schema: sr.key_schema,
            key: sr.key,
            value_schema: sr.value_schema,
            value: sr.value,
            timestamp_ms: Some(sr.timestamp_ms),
            headers: sr.headers,
        };
        let described = original.is_none().then(|| self.as_record(&cr));
        match chain.apply(cr) {
            Ok(Some(out)) => Ok(Some(SinkRecord {
                topic: out.topic,
                partition: out.partition.unwrap_or(partition),
                offset,
                timestamp_ms: out.timestamp_ms.unwrap_or(0),
                key_schema: out.key_schema,
                key: out.key,
                value_schema: out.value_schema,
                value: out.value,
                headers: out.headers,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                let alias = e.alias.clone();
                let record = original.or(described).unwrap_or_else(|| Record {
                    topic: Arc::from(""),
                    partition,
                    offset,
                    timestamp_ms: 0,
                    key: None,
                    value: None,
                    headers: Vec::new(),
                });
                Err(Box::new((record, Failure::transform(alias, e))))
            }
        }
    }

    /// A structured record written with the connector's converters, for
    /// error reports (best effort: what cannot be written shows as null).
    fn as_record(&self, cr: &ConnectRecord) -> Record {
        Record {
            topic: Arc::clone(&cr.topic),
            partition: cr.partition.unwrap_or(0),
            offset: cr.offset.unwrap_or(0),
            timestamp_ms: cr.timestamp_ms.unwrap_or(0),
            key: self
                .key_converter
                .from_connect(&cr.topic, cr.key_schema.as_deref(), cr.key.as_ref())
                .ok()
                .flatten(),
            value: self
                .value_converter
                .from_connect(&cr.topic, cr.value_schema.as_deref(), cr.value.as_ref())
                .ok()
                .flatten(),
            headers: cr.headers.clone(),
        }
    }

    /// Partitions go to another member: write what was taken, hand them
    /// over with their final positions.
    async fn revoke(
        &mut self,
        parts: Vec<TopicPartition>,
        batch: &mut Vec<SinkRecord>,
        pending: &mut Pending,
    ) -> anyhow::Result<()> {
        self.put(batch).await?;
        self.flush_all(pending).await?;
        let positions: Vec<(TopicPartition, i64)> = parts
            .iter()
            .filter_map(|tp| pending.durable.remove(tp).map(|o| (tp.clone(), o)))
            .collect();
        for tp in &parts {
            pending.taken.remove(tp);
            pending.entries.remove(tp);
        }
        self.input.release(&positions).await
    }

    async fn put(&mut self, batch: &mut Vec<SinkRecord>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.put_retrying(batch).await?;
        self.telemetry.sent.fetch_add(batch.len() as u64, Relaxed);
        batch.clear();
        Ok(())
    }

    /// `put`s `batch`, retrying a failure with backoff for
    /// `errors.retry.timeout`. A stopping task does not wait for retries:
    /// its unwritten records are not committed and are read again.
    async fn put_retrying(&mut self, batch: &[SinkRecord]) -> anyhow::Result<()> {
        let mut attempt = 0u32;
        let mut first_failure: Option<Instant> = None;
        loop {
            let err = match self.task.put(batch).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            attempt += 1;
            let started = *first_failure.get_or_insert_with(Instant::now);
            let first = &batch[0];
            let what = format!(
                "sink connector '{}' task {}: put of {} records (first: {})",
                self.connector,
                self.task_id,
                batch.len(),
                first.position()
            );
            let delay = if self.stop.is_cancelled() {
                None
            } else {
                self.errors.policy().retry_delay(attempt, started.elapsed())
            };
            let Some(delay) = delay else {
                let why = if attempt == 1 {
                    String::new()
                } else {
                    format!(
                        " after {attempt} attempts in {} ms (errors.retry.timeout)",
                        started.elapsed().as_millis()
                    )
                };
                return Err(
                    err.context(format!("{what} failed{why}; its records are not committed"))
                );
            };
            tracing::warn!(
                connector = %self.connector,
                task = self.task_id,
                "{what} failed (attempt {attempt}), retrying in {} ms: {err:#}",
                delay.as_millis()
            );
            self.errors.note_retry();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// On the cadence: a task that batches itself reports what is durable;
    /// any other is flushed.
    async fn flush(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        pending.last_flush = Some(Instant::now());
        if !self.task.batches_itself() {
            return self.flush_all(pending).await;
        }
        if pending.entries.values().all(VecDeque::is_empty) {
            pending.since = None;
            return Ok(());
        }
        let durable: BTreeMap<(Arc<str>, i32), i64> = self
            .task
            .pre_commit()
            .await
            .with_context(|| self.what("pre-commit"))?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect();
        let mut done = 0usize;
        let now = now_us();
        for (tp, queue) in pending.entries.iter_mut() {
            let upto = durable.get(&(Arc::clone(&tp.topic), tp.partition));
            let mut last = None;
            while let Some(&(offset, reached, committed_at)) = queue.front() {
                if reached && upto.is_none_or(|d| offset > *d) {
                    break;
                }
                last = Some(offset);
                if let Some(ts) = committed_at {
                    pending.latency.record_us(now - ts);
                    self.telemetry.latency.record_us(now - ts, 1);
                    self.telemetry.last_durable_commit_us.fetch_max(ts, Relaxed);
                }
                queue.pop_front();
                done += 1;
            }
            if let Some(o) = last {
                pending.durable.insert(tp.clone(), o + 1);
            }
        }
        pending.entries.retain(|_, q| !q.is_empty());
        self.acknowledge(pending, done);
        pending.since = if pending.entries.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        Ok(())
    }

    fn acknowledge(&self, pending: &mut Pending, records: usize) {
        crate::metrics::connector(&self.connector).add_sunk(records as u64);
        pending.records -= records.min(pending.records);
        if records > 0 {
            let t = &self.telemetry;
            t.durable.fetch_add(records as u64, Relaxed);
            let _ = t
                .pending
                .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(records as u64)));
            self.reporter.healthy();
            let stats = &mut pending.stats;
            stats.durable += records as u64;
            stats.last_durable_us = Some(now_us());
            if pending.latency.count() > 0 {
                stats.latency = Some(pending.latency.summary());
            }
            self.write_stats(&pending.stats);
        }
    }

    /// Makes everything put so far durable.
    async fn flush_all(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        pending.last_flush = Some(Instant::now());
        pending.entries.clear();
        if pending.taken.is_empty() {
            pending.since = None;
            return Ok(());
        }
        self.task
            .flush()
            .await
            .with_context(|| self.what("flush"))?;
        let records = pending.records;
        for (tp, next) in std::mem::take(&mut pending.taken) {
            pending.durable.insert(tp, next);
        }
        let now = now_us();
        for (ts, n) in pending.commit_times.drain(..) {
            for _ in 0..n {
                pending.latency.record_us(now - ts);
            }
            self.telemetry.latency.record_us(now - ts, u64::from(n));
            self.telemetry.last_durable_commit_us.fetch_max(ts, Relaxed);
        }
        self.acknowledge(pending, records);
        pending.since = None;
        Ok(())
    }

    /// Commits durable positions to the input, at most every
    /// [`COMMIT_INTERVAL`] unless `now`.
    async fn commit(&mut self, pending: &mut Pending, now: bool) -> anyhow::Result<()> {
        if pending.durable.is_empty() {
            return Ok(());
        }
        if !now
            && pending
                .last_commit
                .is_some_and(|c| c.elapsed() < COMMIT_INTERVAL)
        {
            return Ok(());
        }
        let positions: Vec<(TopicPartition, i64)> =
            std::mem::take(&mut pending.durable).into_iter().collect();
        pending.last_commit = Some(Instant::now());
        let result = self.input.commit(&positions).await;
        match &result {
            Ok(()) => {
                self.telemetry.commits.fetch_add(1, Relaxed);
                self.telemetry.last_commit_us.store(now_us(), Relaxed);
            }
            Err(_) => {
                self.telemetry.commit_failures.fetch_add(1, Relaxed);
            }
        }
        if let Err(e) = result {
            // Kept for the next commit: nothing is lost by committing late.
            for (tp, o) in positions {
                pending.durable.entry(tp).or_insert(o);
            }
            tracing::warn!(
                connector = %self.connector,
                task = self.task_id,
                "committing positions (retried): {e:#}"
            );
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
