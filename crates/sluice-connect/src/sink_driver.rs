//! Drives one sink task: takes records from its queue in batches, `put`s
//! them, `flush`es when enough accumulated or a short interval passed, and
//! only after a successful flush acknowledges those records to their source
//! tasks' delivery trackers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::connector::SinkTask;
use sluice_core::converter::Converter;
use sluice_core::record::Record;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::delivery::{DeliveryTracker, SinkTaskIndex};
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
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            interval: Duration::from_secs(1),
            max_records: 10_000,
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
        let (key_schema, key) = self.key_converter.to_connect(&r.topic, r.key.as_deref())?;
        let (value_schema, value) = self
            .value_converter
            .to_connect(&r.topic, r.value.as_deref())?;
        let cr = ConnectRecord {
            topic: Arc::clone(&r.topic),
            partition: Some(r.partition),
            offset: Some(r.offset),
            key_schema,
            key,
            value_schema,
            value,
            timestamp_ms: Some(r.timestamp_ms),
            headers: r.headers,
        };
        let Some(out) = self.chain.apply(cr)? else {
            return Ok(None);
        };
        let key = self.key_converter.from_connect(
            &out.topic,
            out.key_schema.as_deref(),
            out.key.as_ref(),
        )?;
        let value = self.value_converter.from_connect(
            &out.topic,
            out.value_schema.as_deref(),
            out.value.as_ref(),
        )?;
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
}

/// Acknowledgements waiting for the next flush: per source tracker, the
/// highest sequence put.
#[derive(Default)]
struct Pending {
    acks: Vec<(Arc<DeliveryTracker>, u64)>,
    records: usize,
    since: Option<Instant>,
}

impl SinkDriver {
    /// Runs until stopped (Ok after a final flush) or the task fails.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut pending = Pending::default();
        let mut batch: Vec<Record> = Vec::with_capacity(MAX_BATCH);
        loop {
            if let Some(mut paused) = self.paused.clone() {
                if *paused.borrow() && !self.stop.is_cancelled() {
                    // What was taken before the pause is written and
                    // acknowledged; nothing more until resumed.
                    self.put(&mut batch).await?;
                    self.flush(&mut pending).await?;
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
            let deadline = pending.since.map(|s| s + self.policy.interval);
            let stopping = tokio::select! {
                biased;
                d = self.queue.recv() => match d {
                    Some(d) => {
                        self.take(d, &mut batch, &mut pending);
                        while batch.len() < MAX_BATCH {
                            match self.queue.try_recv() {
                                Some(d) => self.take(d, &mut batch, &mut pending),
                                None => break,
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
                _ = self.stop.cancelled() => true,
            };
            if stopping {
                // Whatever is queued now is all there is: a source still
                // sending (or waiting for room) is refused, so the drain ends.
                self.queue.close();
                while let Some(d) = self.queue.try_recv() {
                    self.take(d, &mut batch, &mut pending);
                    if batch.len() >= MAX_BATCH {
                        self.put(&mut batch).await?;
                    }
                }
                self.put(&mut batch).await?;
                self.flush(&mut pending).await?;
                self.task
                    .stop()
                    .await
                    .with_context(|| self.what("stopping"))?;
                return Ok(());
            }
            self.put(&mut batch).await?;
            // Checked here too: with records always waiting, the timer
            // branch above would never be chosen.
            let due = pending
                .since
                .is_some_and(|s| s.elapsed() >= self.policy.interval);
            if due || pending.records >= self.policy.max_records {
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

    async fn put(&mut self, batch: &mut Vec<Record>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(t) = &self.transforms {
            let mut kept = Vec::with_capacity(batch.len());
            for r in batch.drain(..) {
                let (topic, partition, offset) = (Arc::clone(&r.topic), r.partition, r.offset);
                // A dropped record is still acknowledged at the next flush:
                // it was consumed, as Kafka Connect commits its offset.
                if let Some(r) = t.apply(r).with_context(|| {
                    format!(
                        "sink connector '{}' task {}: transforming the record at topic '{topic}' partition {partition} offset {offset}",
                        self.connector, self.task_id
                    )
                })? {
                    kept.push(r);
                }
            }
            *batch = kept;
            if batch.is_empty() {
                return Ok(());
            }
        }
        self.task.put(batch).await.with_context(|| {
            let first = &batch[0];
            format!(
                "sink connector '{}' task {}: put of {} records (first: topic '{}' offset {})",
                self.connector,
                self.task_id,
                batch.len(),
                first.topic,
                first.offset
            )
        })?;
        batch.clear();
        Ok(())
    }

    async fn flush(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        if pending.acks.is_empty() {
            pending.since = None;
            return Ok(());
        }
        self.task
            .flush()
            .await
            .with_context(|| self.what("flush"))?;
        for (tracker, seq) in pending.acks.drain(..) {
            tracker.ack(self.index, seq);
        }
        pending.records = 0;
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
