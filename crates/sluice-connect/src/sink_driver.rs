//! Drives one sink task: takes records from its queue in batches, `put`s
//! them, `flush`es when enough accumulated or a short interval passed, and
//! only after a successful flush acknowledges those records to their source
//! tasks' delivery trackers.
//!
//! Records that cannot be converted or transformed go through the
//! connector's error handling ([`crate::errors`]): they fail the task, or
//! are skipped (logged, counted, written to the dead letter queue) and
//! acknowledged with the rest. A failing `put` is retried with backoff for
//! `errors.retry.timeout`, then fails the task; nothing is acknowledged
//! that was not written.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::connector::SinkTask;
use sluice_core::converter::Converter;
use sluice_core::record::Record;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{DeliveryTracker, SinkTaskIndex};
use crate::errors::{ErrorHandler, Failure, Stage};
use crate::transforms::{ConnectRecord, TransformChain};
use crate::transport::QueueReceiver;

/// Most records handed to one `put`.
const MAX_BATCH: usize = 1024;

/// How a sink task is driven.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Flush at the latest this long after the first unflushed `put`.
    pub interval: Duration,
    /// Flush once this many records were put since the last flush.
    pub max_records: usize,
    /// Once the queue is drained, flush what was put if the last flush is
    /// at least this old (group commit): a trickle of changes is durable
    /// within milliseconds, while under load, when the queue never drains,
    /// flushes stay batched by `interval` and `max_records`. None: only
    /// those two.
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

/// A sink connector's transform chain and the converters its records are
/// read and rewritten with.
#[derive(Clone)]
pub struct SinkTransforms {
    /// The chain (never empty: an empty chain is no `SinkTransforms`).
    pub chain: Arc<TransformChain>,
    /// The connector's key converter.
    pub key_converter: Arc<dyn Converter>,
    /// The connector's value converter.
    pub value_converter: Arc<dyn Converter>,
}

impl SinkTransforms {
    /// Kafka Connect's `WorkerSinkTask.convertAndTransformRecord`: the
    /// converters read the record, the chain transforms it; then, since
    /// Sluice's sink tasks take serialized records, the same converters
    /// write it back. None when a transform dropped it.
    pub fn apply(&self, r: Record) -> anyhow::Result<Option<Record>> {
        self.apply_staged(r, false).map_err(|e| e.1.error)
    }

    /// [`SinkTransforms::apply`], telling on failure which stage failed and
    /// handing the record back as it came (its headers too when
    /// `keep_headers`, which costs a copy of them), for error reporting.
    /// (Boxed: failures are rare, and a large error type would slow every
    /// successful call.)
    pub fn apply_staged(
        &self,
        mut r: Record,
        keep_headers: bool,
    ) -> Result<Option<Record>, Box<(Record, Failure)>> {
        let (key_schema, key) = match self.key_converter.to_connect(&r.topic, r.key.as_deref()) {
            Ok(k) => k,
            Err(e) => return Err(Box::new((r, Failure::new(Stage::KeyConverter, e)))),
        };
        let (value_schema, value) = match self
            .value_converter
            .to_connect(&r.topic, r.value.as_deref())
        {
            Ok(v) => v,
            Err(e) => return Err(Box::new((r, Failure::new(Stage::ValueConverter, e)))),
        };
        let headers = if keep_headers {
            r.headers.clone()
        } else {
            std::mem::take(&mut r.headers)
        };
        let cr = ConnectRecord {
            topic: Arc::clone(&r.topic),
            partition: Some(r.partition),
            offset: Some(r.offset),
            key_schema,
            key,
            value_schema,
            value,
            timestamp_ms: Some(r.timestamp_ms),
            headers,
        };
        let out = match self.chain.apply(cr) {
            Ok(Some(out)) => out,
            Ok(None) => return Ok(None),
            Err(e) => {
                let alias = e.alias.clone();
                return Err(Box::new((r, Failure::transform(alias, e))));
            }
        };
        let key = match self.key_converter.from_connect(
            &out.topic,
            out.key_schema.as_deref(),
            out.key.as_ref(),
        ) {
            Ok(k) => k,
            Err(e) => return Err(Box::new((r, Failure::new(Stage::KeyConverter, e)))),
        };
        let value = match self.value_converter.from_connect(
            &out.topic,
            out.value_schema.as_deref(),
            out.value.as_ref(),
        ) {
            Ok(v) => v,
            Err(e) => return Err(Box::new((r, Failure::new(Stage::ValueConverter, e)))),
        };
        Ok(Some(Record {
            topic: out.topic,
            partition: out.partition.unwrap_or(r.partition),
            offset: r.offset,
            timestamp_ms: out.timestamp_ms.unwrap_or(r.timestamp_ms),
            key,
            value,
            headers: out.headers,
        }))
    }
}

/// One running sink task and its queue.
pub struct SinkDriver {
    /// Connector name.
    pub connector: String,
    /// Task number within the connector.
    pub task_id: u32,
    /// Index among all sink tasks of the worker (for acknowledgements).
    pub index: SinkTaskIndex,
    /// The task.
    pub task: Box<dyn SinkTask>,
    /// Its queue.
    pub queue: QueueReceiver,
    /// Cancelled once no source will send more: drain, flush, stop.
    pub stop: CancellationToken,
    /// When to flush.
    pub policy: FlushPolicy,
    /// The connector's transforms; None when it has none, so records reach
    /// `put` without being read and rewritten.
    pub transforms: Option<SinkTransforms>,
    /// While true (the connector is paused) the task takes nothing from its
    /// queue, so records wait there (bounded) and sources slow down.
    pub paused: Option<tokio::sync::watch::Receiver<bool>>,
    /// The connector's error handling (`errors.*`).
    pub errors: ErrorHandler,
    /// Notified when the task must write everything it holds now (its
    /// partitions are being revoked), even if it batches itself.
    pub flush_now: Arc<tokio::sync::Notify>,
}

/// Acknowledgements waiting for the next flush: per source tracker, the
/// highest sequence put.
#[derive(Default)]
struct Pending {
    acks: Vec<(Arc<DeliveryTracker>, u64)>,
    records: usize,
    since: Option<Instant>,
    /// The queue was empty after the last records were taken.
    drained: bool,
    /// When the task was last flushed (or asked what is durable).
    last_flush: Option<Instant>,
    /// For a task that batches itself: every record not acknowledged yet,
    /// in the order taken, so that only what the task reports durable is
    /// acknowledged (per tracker, a prefix of its sequence).
    entries: VecDeque<Entry>,
}

/// A record taken for a task that batches itself.
struct Entry {
    tracker: Arc<DeliveryTracker>,
    seq: u64,
    /// Where the task was given it; None when it never reached the task
    /// (dropped by a transform or skipped by the error handling): durable
    /// as soon as everything before it is.
    at: Option<(Arc<str>, i32, i64)>,
}

impl SinkDriver {
    /// Runs until stopped (Ok after a final flush) or the task fails.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // The dead letter queue topic exists before any record can need it.
        self.errors.prepare().await?;
        let mut pending = Pending::default();
        let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH);
        loop {
            if let Some(mut paused) = self.paused.clone() {
                if *paused.borrow() && !self.stop.is_cancelled() {
                    // What was taken before the pause is written and
                    // acknowledged; nothing more until resumed.
                    self.put(&mut batch, &mut pending).await?;
                    self.flush_all(&mut pending).await?;
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
            let stopping = tokio::select! {
                biased;
                d = self.queue.recv() => match d {
                    Some(d) => {
                        self.take(d, &mut batch, &mut pending);
                        pending.drained = false;
                        while batch.len() < MAX_BATCH {
                            match self.queue.try_recv() {
                                Some(d) => self.take(d, &mut batch, &mut pending),
                                None => {
                                    pending.drained = true;
                                    break;
                                }
                            }
                        }
                        false
                    }
                    None => true,
                },
                _ = sleep_until(deadline) => {
                    self.flush(&mut pending).await?;
                    false
                }
                _ = self.flush_now.notified() => {
                    self.put(&mut batch, &mut pending).await?;
                    self.flush_all(&mut pending).await?;
                    false
                }
                _ = self.stop.cancelled() => true,
            };
            if stopping {
                // Whatever is queued now is all there is: a source still
                // sending (or waiting for room) is refused, so the drain ends.
                self.queue.close();
                while let Some(d) = self.queue.try_recv() {
                    self.take(d, &mut batch, &mut pending);
                    if batch.len() >= MAX_BATCH {
                        self.put(&mut batch, &mut pending).await?;
                    }
                }
                self.put(&mut batch, &mut pending).await?;
                self.flush_all(&mut pending).await?;
                self.task
                    .stop()
                    .await
                    .with_context(|| self.what("stopping"))?;
                return Ok(());
            }
            self.put(&mut batch, &mut pending).await?;
            // Checked here too: with records always waiting, the timer
            // branch above would never be chosen. A task that batches
            // itself is asked on the interval only: its batches close on
            // their own size, not on the worker's record count.
            let idle_due = match self.policy.idle_gap.filter(|_| !self.task.batches_itself()) {
                Some(gap) if pending.drained => {
                    pending.last_flush.is_none_or(|f| f.elapsed() >= gap)
                }
                _ => false,
            };
            let due = idle_due
                || pending
                    .since
                    .is_some_and(|s| s.elapsed() >= self.policy.interval);
            if due || (!self.task.batches_itself() && pending.records >= self.policy.max_records) {
                self.flush(&mut pending).await?;
            }
        }
    }

    fn what(&self, action: &str) -> String {
        format!(
            "sink connector '{}' task {}: {action}",
            self.connector, self.task_id
        )
    }

    fn take(&self, d: crate::transport::Delivery, batch: &mut Vec<Record>, pending: &mut Pending) {
        let origin = d.origin;
        if self.task.batches_itself() {
            pending.entries.push_back(Entry {
                tracker: origin.tracker,
                seq: origin.seq,
                at: Some((
                    Arc::clone(&d.record.topic),
                    d.record.partition,
                    d.record.offset,
                )),
            });
            pending.records += 1;
            pending.since.get_or_insert_with(Instant::now);
            batch.push(d.record);
            return;
        }
        match pending
            .acks
            .iter_mut()
            .find(|(t, _)| Arc::ptr_eq(t, &origin.tracker))
        {
            Some((_, seq)) => *seq = (*seq).max(origin.seq),
            None => pending.acks.push((origin.tracker, origin.seq)),
        }
        pending.records += 1;
        pending.since.get_or_insert_with(Instant::now);
        batch.push(d.record);
    }

    async fn put(&mut self, batch: &mut Vec<Record>, pending: &mut Pending) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The batch's records are the last entries taken, in order.
        let first_entry = pending.entries.len().saturating_sub(batch.len());
        // Without transforms and without any errors.* key, records go to
        // `put` as they came: no conversion cost on the default path.
        if self.transforms.is_some() || self.errors.validates_records() {
            let keep = self.errors.keeps_originals();
            let mut kept = Vec::with_capacity(batch.len());
            let mut dlq = Vec::new();
            for (i, r) in batch.drain(..).enumerate() {
                let entry = if self.task.batches_itself() {
                    pending.entries.get_mut(first_entry + i)
                } else {
                    None
                };
                let outcome = match &self.transforms {
                    Some(t) => t.apply_staged(r, keep),
                    None => match self.errors.check_record(&r) {
                        Ok(()) => Ok(Some(r)),
                        Err(f) => Err(Box::new((r, f))),
                    },
                };
                if let Some(e) = entry {
                    e.at = match &outcome {
                        Ok(Some(r)) => Some((Arc::clone(&r.topic), r.partition, r.offset)),
                        _ => None,
                    };
                }
                match outcome {
                    Ok(Some(r)) => kept.push(r),
                    // A dropped record is still acknowledged at the next
                    // flush: it was consumed, as Kafka Connect commits its
                    // offset.
                    Ok(None) => {}
                    // Skipped records are acknowledged like dropped ones,
                    // once their dead letter queue copies are stored.
                    Err(rejected) => {
                        let (original, failure) = *rejected;
                        if let Some(d) = self.errors.report_sink(&original, failure).await? {
                            dlq.push(d);
                        }
                    }
                }
            }
            if !dlq.is_empty() {
                self.errors.await_dlq(dlq).await?;
            }
            *batch = kept;
            if batch.is_empty() {
                return Ok(());
            }
        }
        self.put_retrying(batch).await?;
        batch.clear();
        Ok(())
    }

    /// `put`s `batch`, retrying a failure with backoff for
    /// `errors.retry.timeout`. A stopping task does not wait for retries:
    /// its unwritten records stay unacknowledged and are delivered again.
    async fn put_retrying(&mut self, batch: &[Record]) -> anyhow::Result<()> {
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
                "sink connector '{}' task {}: put of {} records (first: topic '{}' partition {} offset {})",
                self.connector,
                self.task_id,
                batch.len(),
                first.topic,
                first.partition,
                first.offset
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
                return Err(err.context(format!(
                    "{what} failed{why}; its records are not acknowledged"
                )));
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

    /// Commits on the cadence: a task that batches itself reports what is
    /// durable; any other is flushed.
    async fn flush(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        pending.last_flush = Some(Instant::now());
        if !self.task.batches_itself() {
            return self.flush_all(pending).await;
        }
        if pending.entries.is_empty() {
            pending.since = None;
            return Ok(());
        }
        let durable: HashMap<(Arc<str>, i32), i64> = self
            .task
            .pre_commit()
            .await
            .with_context(|| self.what("pre-commit"))?
            .into_iter()
            .map(|p| ((p.topic, p.partition), p.offset))
            .collect();
        let mut acked = 0usize;
        while let Some(e) = pending.entries.front() {
            let done = match &e.at {
                None => true,
                Some((topic, partition, offset)) => durable
                    .get(&(Arc::clone(topic), *partition))
                    .is_some_and(|d| offset <= d),
            };
            if !done {
                break;
            }
            if let Some(e) = pending.entries.pop_front() {
                Self::note_ack(&mut pending.acks, e.tracker, e.seq);
                acked += 1;
            }
        }
        self.ack(pending, acked);
        pending.since = if pending.entries.is_empty() {
            None
        } else {
            Some(Instant::now())
        };
        Ok(())
    }

    fn note_ack(
        acks: &mut Vec<(Arc<DeliveryTracker>, u64)>,
        tracker: Arc<DeliveryTracker>,
        seq: u64,
    ) {
        match acks.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &tracker)) {
            Some((_, s)) => *s = (*s).max(seq),
            None => acks.push((tracker, seq)),
        }
    }

    fn ack(&self, pending: &mut Pending, records: usize) {
        for (tracker, seq) in pending.acks.drain(..) {
            tracker.ack(self.index, seq);
        }
        crate::metrics::connector(&self.connector).add_sunk(records as u64);
        pending.records -= records.min(pending.records);
    }

    /// Makes everything put so far durable and acknowledges it.
    async fn flush_all(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        pending.last_flush = Some(Instant::now());
        for e in pending.entries.drain(..) {
            Self::note_ack(&mut pending.acks, e.tracker, e.seq);
        }
        if pending.acks.is_empty() {
            pending.since = None;
            return Ok(());
        }
        self.task
            .flush()
            .await
            .with_context(|| self.what("flush"))?;
        let records = pending.records;
        self.ack(pending, records);
        pending.since = None;
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_files::ConnectorFile;
    use crate::connector_config::validate_connectors;
    use crate::registry::Registry;
    use crate::transport::{queue, Origin};
    use crate::worker_config::WorkerConfig;
    use async_trait::async_trait;
    use sluice_core::config::Props;
    use std::sync::Mutex;

    /// Fails its first `failures` puts, then keeps what it is given.
    struct Flaky {
        failures: usize,
        attempts: Arc<Mutex<usize>>,
        kept: Arc<Mutex<Vec<i64>>>,
    }

    #[async_trait]
    impl SinkTask for Flaky {
        async fn put(&mut self, records: &[Record]) -> anyhow::Result<()> {
            let mut attempts = self.attempts.lock().expect("lock");
            *attempts += 1;
            if *attempts <= self.failures {
                anyhow::bail!("the store is down (attempt {attempts})");
            }
            self.kept
                .lock()
                .expect("lock")
                .extend(records.iter().map(|r| r.offset));
            Ok(())
        }
        async fn flush(&mut self) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn props(kv: &[(&str, &str)]) -> Props {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    struct Run {
        tracker: Arc<DeliveryTracker>,
        attempts: Arc<Mutex<usize>>,
        kept: Arc<Mutex<Vec<i64>>>,
        stop: CancellationToken,
        handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    /// A sink `name` over a [`Flaky`] task, fed one record.
    /// A driver for a file-sink connector `name` (with `errors`) over
    /// `task`, flushing every 10 ms; its queue's sending half.
    fn driver(
        name: &str,
        task: Box<dyn SinkTask>,
        errors: &[(&str, &str)],
    ) -> (SinkDriver, crate::transport::QueueSender) {
        let registry = Registry::new(vec![crate::file_sink::plugin()]);
        let converter = crate::converters::BYTE_ARRAY_CONVERTER;
        let worker = WorkerConfig::from_props(&props(&[
            ("key.converter", converter),
            ("value.converter", converter),
        ]))
        .expect("worker")
        .0;
        let mut p = props(&[("name", name), ("connector.class", "file"), ("topics", "t")]);
        p.extend(props(errors));
        let (specs, _) = validate_connectors(
            &registry,
            &worker,
            &[ConnectorFile {
                path: "c.properties".into(),
                props: p,
            }],
        )
        .expect("valid");
        let (tx, rx) = queue(16, 1 << 20);
        let driver = SinkDriver {
            connector: name.to_string(),
            task_id: 0,
            index: 0,
            task,
            queue: rx,
            stop: CancellationToken::new(),
            policy: FlushPolicy {
                interval: Duration::from_millis(10),
                max_records: 1,
                idle_gap: None,
            },
            transforms: None,
            paused: None,
            errors: ErrorHandler::for_sink(&specs[0], 0, None),
            flush_now: Default::default(),
        };
        (driver, tx)
    }

    async fn run(name: &str, failures: usize, errors: &[(&str, &str)]) -> Run {
        let (attempts, kept): (Arc<Mutex<usize>>, Arc<Mutex<Vec<i64>>>) = Default::default();
        let task = Box::new(Flaky {
            failures,
            attempts: Arc::clone(&attempts),
            kept: Arc::clone(&kept),
        });
        let (driver, tx) = driver(name, task, errors);
        let stop = driver.stop.clone();
        let handle = tokio::spawn(driver.run());
        let tracker = Arc::new(DeliveryTracker::new(1));
        let seq = tracker.dispatch(&[0], None);
        let record = Record {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        tx.send(
            record,
            Origin {
                tracker: Arc::clone(&tracker),
                seq,
            },
        )
        .await
        .expect("queued");
        Run {
            tracker,
            attempts,
            kept,
            stop,
            handle,
        }
    }

    /// Batches itself: holds what it is given per partition and reports
    /// durable only the partitions `durable` lists; `flush` writes all.
    struct Batching {
        held: Vec<(Arc<str>, i32, i64)>,
        durable: Arc<Mutex<Vec<i32>>>,
        flushed: Arc<Mutex<usize>>,
    }

    #[async_trait]
    impl SinkTask for Batching {
        async fn put(&mut self, records: &[Record]) -> anyhow::Result<()> {
            self.held.extend(
                records
                    .iter()
                    .map(|r| (Arc::clone(&r.topic), r.partition, r.offset)),
            );
            Ok(())
        }
        async fn flush(&mut self) -> anyhow::Result<()> {
            *self.flushed.lock().expect("lock") += 1;
            self.held.clear();
            Ok(())
        }
        fn batches_itself(&self) -> bool {
            true
        }
        async fn pre_commit(
            &mut self,
        ) -> anyhow::Result<Vec<sluice_core::connector::PartitionOffset>> {
            let durable = self.durable.lock().expect("lock").clone();
            Ok(self
                .held
                .iter()
                .filter(|(_, p, _)| durable.contains(p))
                .map(|(t, p, o)| sluice_core::connector::PartitionOffset {
                    topic: Arc::clone(t),
                    partition: *p,
                    offset: *o,
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn a_task_that_batches_itself_is_acknowledged_only_as_far_as_it_reports() {
        let durable: Arc<Mutex<Vec<i32>>> = Default::default();
        let flushed: Arc<Mutex<usize>> = Default::default();
        let task = Box::new(Batching {
            held: Vec::new(),
            durable: Arc::clone(&durable),
            flushed: Arc::clone(&flushed),
        });
        let (driver, tx) = driver("batching", task, &[]);
        let stop = driver.stop.clone();
        let flush_now = Arc::clone(&driver.flush_now);
        let handle = tokio::spawn(driver.run());
        let tracker = Arc::new(DeliveryTracker::new(1));
        // Partition 0, then 1, then 0 again.
        for (partition, offset) in [(0, 10), (1, 20), (0, 11)] {
            let seq = tracker.dispatch(&[0], None);
            let record = Record {
                topic: Arc::from("t"),
                partition,
                offset,
                timestamp_ms: 0,
                key: None,
                value: Some(b"v".to_vec()),
                headers: Vec::new(),
            };
            let origin = Origin {
                tracker: Arc::clone(&tracker),
                seq,
            };
            tx.send(record, origin).await.expect("queued");
        }
        let wait_for = |n: u64| {
            let tracker = Arc::clone(&tracker);
            async move {
                let deadline = Instant::now() + Duration::from_secs(20);
                while tracker.delivered_up_to() < n {
                    assert!(Instant::now() < deadline, "never acknowledged up to {n}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // Nothing reported durable: nothing acknowledged, over many cadences.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tracker.delivered_up_to(), 0);
        // Partition 0 durable: only the first record, as the second
        // (partition 1) holds back everything after it.
        durable.lock().expect("lock").push(0);
        wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(tracker.delivered_up_to(), 1);
        assert_eq!(*flushed.lock().expect("lock"), 0, "never made to flush");
        // A revocation makes it write everything.
        flush_now.notify_one();
        wait_for(3).await;
        assert_eq!(*flushed.lock().expect("lock"), 1);
        stop.cancel();
        handle.await.expect("joined").expect("stopped cleanly");
    }

    #[tokio::test]
    async fn a_drained_queue_is_flushed_without_waiting_for_the_interval() {
        let (attempts, kept): (Arc<Mutex<usize>>, Arc<Mutex<Vec<i64>>>) = Default::default();
        let task = Box::new(Flaky {
            failures: 0,
            attempts,
            kept,
        });
        let (mut driver, tx) = driver("idle", task, &[]);
        // An interval no test waits for: only the idle flush can ack.
        driver.policy = FlushPolicy {
            interval: Duration::from_secs(3600),
            max_records: 1_000_000,
            idle_gap: Some(Duration::from_millis(10)),
        };
        let stop = driver.stop.clone();
        let handle = tokio::spawn(driver.run());
        let tracker = Arc::new(DeliveryTracker::new(1));
        for offset in 0..3 {
            let seq = tracker.dispatch(&[0], None);
            let record = Record {
                topic: Arc::from("t"),
                partition: 0,
                offset,
                timestamp_ms: 0,
                key: None,
                value: Some(b"v".to_vec()),
                headers: Vec::new(),
            };
            let origin = Origin {
                tracker: Arc::clone(&tracker),
                seq,
            };
            tx.send(record, origin).await.expect("queued");
            let deadline = Instant::now() + Duration::from_secs(20);
            while tracker.delivered_up_to() < seq {
                assert!(Instant::now() < deadline, "record {offset} never flushed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        stop.cancel();
        handle.await.expect("joined").expect("stopped cleanly");
    }

    #[tokio::test]
    async fn a_failing_put_is_retried_within_the_retry_timeout() {
        let r = run("retry-ok", 2, &[("errors.retry.timeout", "30000")]).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.tracker.delivered_up_to() < 1 {
            assert!(Instant::now() < deadline, "never acknowledged");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*r.attempts.lock().expect("lock"), 3);
        assert_eq!(*r.kept.lock().expect("lock"), vec![0]);
        assert_eq!(crate::errors::counts("retry-ok").retries, 2);
        r.stop.cancel();
        r.handle.await.expect("joined").expect("stopped cleanly");
    }

    #[tokio::test]
    async fn without_retries_a_failing_put_fails_the_task_unacknowledged() {
        let r = run("retry-none", 1, &[]).await;
        let err = tokio::time::timeout(Duration::from_secs(20), r.handle)
            .await
            .expect("fails at once")
            .expect("joined")
            .expect_err("put failed");
        let text = format!("{err:#}");
        assert!(
            text.contains("sink connector 'retry-none' task 0: put of 1 records (first: topic 't' partition 0 offset 0) failed")
                && text.contains("the store is down"),
            "{text}"
        );
        assert_eq!(r.tracker.delivered_up_to(), 0, "nothing acknowledged");
        assert!(r.kept.lock().expect("lock").is_empty());
    }
}
