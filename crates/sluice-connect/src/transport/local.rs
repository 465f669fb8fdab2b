//! The in-process transport: Kafka's topic semantics on one machine, over
//! [`sluice_log`].
//!
//! - A source task's records are appended to their topic's log, in
//!   Sluice's binary form ([`super::codec`]); they count as delivered (and
//!   their source offsets become committable, so the source may confirm
//!   its position upstream) once the log synced them.
//! - Each sink connector is a group: its tasks share the topic partitions
//!   it subscribes to (each partition to one task, by a stable hash), read
//!   from the group's committed positions, or from the earliest retained
//!   record when the group never committed (so a sink created after its
//!   source misses nothing), and commit what their sink made durable.
//!   Positions survive restarts and the connector's deletion.
//! - Retention never deletes what an existing sink connector has not read.
//! - Topics get `topic.creation.default.partitions` partitions (default
//!   1); records are spread over them by their key.
//! - A sink reading at the log's tail takes the records the source just
//!   wrote as they were, without decoding their bytes ([`super::tail`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sluice_core::error::{definite, transient};
use sluice_core::record::SinkRecord;
use sluice_log::{Appended, Log, LogConfig, LogError, PartitionReader, Positions, ProducerId};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::codec::{Decoder, Encoder, SchemaRegistry};
use super::tail::{Tail, TAIL_BYTES};
use super::{
    InRecord, OutRecord, Outgoing, Polled, RecordForm, SinkInput, SinkInputSpec, SourceOutput,
    SourceOutputSpec, TopicPartition, Transport,
};
use crate::connector_config::Subscription;
use crate::delivery::{Completion, DeliveryTracker, InOrderAcks};
use crate::murmur2::{murmur2, to_positive};
use crate::transport::kafka::TopicCreation;

/// Most bytes of frames one poll reads. Decoded, a record takes several
/// times its bytes: this bounds what a sink holds at once (a few thousand
/// records of the scenario's table are still one batch).
const POLL_BYTES: usize = 1 << 20;

/// A batch's records go into frames of about this size, so that a log
/// limited in size takes them a frame at a time.
const FRAME_BYTES: usize = 256 << 10;

/// A log error as a task error of the right kind.
fn task_error(e: LogError) -> anyhow::Error {
    if e.is_transient() {
        transient(e)
    } else {
        definite(e)
    }
}

#[derive(Default)]
struct Groups {
    /// Sink connectors that exist, and what they read.
    live: HashMap<String, Subscription>,
    /// Committed positions per connector (loaded when it is added).
    positions: HashMap<String, Positions>,
}

impl Groups {
    /// The lowest position a live connector still needs of a partition.
    fn floor(&self, topic: &str, partition: u32) -> Option<i64> {
        self.live
            .iter()
            .filter(|(_, sub)| sub.matches(topic))
            .map(|(name, _)| {
                self.positions
                    .get(name)
                    .and_then(|p| p.get(&(topic.to_string(), partition)))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
    }

    /// Sink connectors that read `topic`.
    fn readers_of(&self, topic: &str) -> Vec<Arc<str>> {
        self.live
            .iter()
            .filter(|(_, sub)| sub.matches(topic))
            .map(|(name, _)| Arc::from(name.as_str()))
            .collect()
    }
}

/// The in-process transport over a local log.
pub struct LocalTransport {
    log: Log,
    schemas: Arc<SchemaRegistry>,
    groups: Arc<Mutex<Groups>>,
    tail: Arc<Tail>,
}

impl Drop for LocalTransport {
    fn drop(&mut self) {
        let (taken, missed) = (self.tail.taken(), self.tail.missed());
        if taken + missed > 0 {
            tracing::info!(
                "local log: sinks took {taken} frame(s) as their source wrote them, decoded {missed}"
            );
        }
    }
}

impl std::fmt::Debug for LocalTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTransport")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl LocalTransport {
    /// Opens the log described by `cfg` (recovering it after a crash).
    pub fn open(cfg: LogConfig) -> anyhow::Result<LocalTransport> {
        let dir = cfg.dir.clone();
        let log = Log::open(cfg)
            .with_context(|| format!("opening the local log at {}", dir.display()))?;
        let schemas = Arc::new(SchemaRegistry::open(&dir.join("schemas"))?);
        let groups: Arc<Mutex<Groups>> = Default::default();
        let g = Arc::clone(&groups);
        log.set_retention_floor(Box::new(move |topic, partition| {
            g.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .floor(topic, partition)
        }));
        Ok(LocalTransport {
            log,
            schemas,
            groups,
            tail: Arc::new(Tail::new(TAIL_BYTES)),
        })
    }

    /// The log (for tools and tests).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log's structured tail (for tests).
    pub fn tail(&self) -> &Tail {
        &self.tail
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn describe(&self) -> String {
        format!("local log at {}", self.log.dir().display())
    }

    async fn source_output(&self, spec: SourceOutputSpec) -> anyhow::Result<Box<dyn SourceOutput>> {
        let creation = TopicCreation::from_connector_props(&spec.props)?;
        let partitions = u32::try_from(creation.partitions).unwrap_or(1).max(1);
        let (acks, acker) = InOrderAcks::start(Arc::clone(&spec.tracker), spec.on_failure);
        Ok(Box::new(LocalOutput {
            log: self.log.clone(),
            producer: self.log.appender().producer(),
            tracker: spec.tracker,
            acks: Mutex::new(Some(acks)),
            acker: tokio::sync::Mutex::new(Some(acker)),
            encoder: Mutex::new(Encoder::new(Arc::clone(&self.schemas))),
            tail: Arc::clone(&self.tail),
            groups: Arc::clone(&self.groups),
            partitions,
            topics: Mutex::new(HashMap::new()),
        }))
    }

    async fn sink_input(&self, spec: SinkInputSpec) -> anyhow::Result<Box<dyn SinkInput>> {
        self.sink_connector_added(&spec.connector, &spec.subscription);
        let mut input = LocalInput {
            log: self.log.clone(),
            groups: Arc::clone(&self.groups),
            decoder: Some(Decoder::new(Arc::clone(&self.schemas))),
            tail: Arc::clone(&self.tail),
            readers: BTreeMap::new(),
            topics_rx: self.log.topic_changes(),
            synced_rx: self.log.sync_changes(),
            reassign: false,
            inflight: None,
            spec,
        };
        input.assign()?;
        Ok(Box::new(input))
    }

    fn sink_connector_added(&self, connector: &str, subscription: &Subscription) {
        let mut g = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        g.live.insert(connector.to_string(), subscription.clone());
        if !g.positions.contains_key(connector) {
            match self.log.groups().load(connector) {
                Ok(p) => {
                    g.positions.insert(connector.to_string(), p);
                }
                // Its positions will be rewritten at its first commit;
                // meanwhile it reads from the start (at least once).
                Err(e) => tracing::warn!(connector, "reading its committed positions: {e}"),
            }
        }
    }

    fn sink_connector_removed(&self, connector: &str) {
        let mut g = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        g.live.remove(connector);
    }

    fn backlog(&self, connector: &str) -> Option<u64> {
        let g = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let sub = g.live.get(connector)?;
        let positions = g.positions.get(connector);
        let mut total = 0u64;
        for (topic, n) in self.log.topics() {
            if !sub.matches(&topic) {
                continue;
            }
            for p in 0..n {
                let Ok((start, end)) = self.log.bounds(&topic, p) else {
                    continue;
                };
                let at = positions
                    .and_then(|pos| pos.get(&(topic.clone(), p)))
                    .copied()
                    .unwrap_or(start)
                    .max(start);
                total += u64::try_from(end - at).unwrap_or(0);
            }
        }
        Some(total)
    }

    fn stored_bytes(&self) -> Option<u64> {
        Some(self.log.used_bytes())
    }
}

/// A source task's output into the local log.
struct LocalOutput {
    log: Log,
    producer: ProducerId,
    tracker: Arc<DeliveryTracker>,
    acks: Mutex<Option<InOrderAcks>>,
    acker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    encoder: Mutex<Encoder>,
    tail: Arc<Tail>,
    groups: Arc<Mutex<Groups>>,
    partitions: u32,
    /// Partition counts of the topics written so far.
    topics: Mutex<HashMap<Arc<str>, u32>>,
}

impl LocalOutput {
    fn partitions_of(&self, topic: &Arc<str>) -> anyhow::Result<u32> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&n) = topics.get(topic) {
            return Ok(n);
        }
        let n = self
            .log
            .create_topic(topic, self.partitions)
            .map_err(task_error)?;
        topics.insert(Arc::clone(topic), n);
        Ok(n)
    }
}

#[async_trait]
impl SourceOutput for LocalOutput {
    fn form(&self) -> RecordForm {
        RecordForm::Structured
    }

    async fn send(&self, batch: Vec<Outgoing>) -> anyhow::Result<()> {
        // Frames of this batch, one per topic partition, in the order the
        // partitions first appear.
        let mut frames: Vec<PendingFrame> = Vec::new();
        let mut last_seq = 0;
        {
            let mut encoder = self.encoder.lock().unwrap_or_else(PoisonError::into_inner);
            let mut key_bytes = Vec::new();
            for o in batch {
                last_seq = self.tracker.dispatch(o.offset.as_ref());
                let r = match o.record {
                    None => continue,
                    Some(OutRecord::Structured(r)) => r,
                    Some(OutRecord::Serialized(r)) => {
                        return Err(definite(anyhow::anyhow!(
                            "the local transport takes structured records, got serialized ones for topic '{}'",
                            r.topic
                        )))
                    }
                };
                let n = self.partitions_of(&r.topic)?;
                let partition = if n <= 1 {
                    0
                } else {
                    key_bytes.clear();
                    if let Some(k) = &r.key {
                        sluice_core::binary::encode_value(&mut key_bytes, k);
                    }
                    (to_positive(murmur2(&key_bytes)) as u32) % n
                };
                // The partition's last frame, unless it is full.
                let i = match frames
                    .iter()
                    .rposition(|f| f.partition == partition && f.topic == r.topic)
                {
                    Some(i) if frames[i].payload.len() < FRAME_BYTES => i,
                    _ => {
                        let readers = self
                            .groups
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .readers_of(&r.topic);
                        let takers = self.tail.keeping_up(readers);
                        frames.push(PendingFrame {
                            topic: Arc::clone(&r.topic),
                            partition,
                            payload: Vec::new(),
                            count: 0,
                            records: (!takers.is_empty()).then(Vec::new),
                            takers,
                        });
                        frames.len() - 1
                    }
                };
                let frame = &mut frames[i];
                let timestamp_ms = r.timestamp_ms.unwrap_or_else(now_ms);
                encoder
                    .encode(
                        &mut frame.payload,
                        timestamp_ms,
                        r.key_schema.as_ref(),
                        r.key.as_ref(),
                        r.value_schema.as_ref(),
                        r.value.as_ref(),
                        &r.headers,
                    )
                    .map_err(|e| {
                        definite(e.context(format!("encoding a record for topic '{}'", r.topic)))
                    })?;
                frame.count += 1;
                if !self.tail.fits(frame.payload.len()) {
                    // Too large to keep: its records go now, not after the
                    // write (a value of hundreds of MB is not held twice).
                    frame.records = None;
                }
                if let Some(records) = frame.records.as_mut() {
                    records.push(SinkRecord {
                        topic: r.topic,
                        partition: 0,
                        offset: 0,
                        timestamp_ms,
                        key_schema: r.key_schema,
                        key: r.key,
                        value_schema: r.value_schema,
                        value: r.value,
                        headers: r.headers,
                    });
                }
            }
        }
        // The writer completes one producer's appends in order and refuses
        // the rest after a failure: the last frame's outcome is the batch's.
        let mut last: Option<oneshot::Receiver<Result<(), LogError>>> = None;
        for f in frames {
            let (tx, rx) = oneshot::channel();
            let (placed, forget) = match f.records {
                Some(records) => {
                    // The sinks reading at the tail take what they are
                    // about to read before the source runs further ahead.
                    self.tail.room(f.payload.len()).await;
                    let at = Arc::new(AtomicI64::new(-1));
                    let (tail, topic, takers, bytes) = (
                        Arc::clone(&self.tail),
                        Arc::clone(&f.topic),
                        f.takers.clone(),
                        f.payload.len(),
                    );
                    let at_placed = Arc::clone(&at);
                    let placed: sluice_log::Placed = Box::new(move |a: Appended| {
                        at_placed.store(a.base_offset, Ordering::Release);
                        tail.put(&topic, f.partition, a.base_offset, records, takers, bytes);
                    });
                    (Some(placed), Some((Arc::clone(&self.tail), at)))
                }
                None => (None, None),
            };
            let (topic, partition) = (Arc::clone(&f.topic), f.partition);
            self.log
                .appender()
                .append_placed(
                    self.producer,
                    f.topic,
                    f.partition,
                    f.payload,
                    f.count,
                    placed,
                    move |res| {
                        if let (Err(_), Some((tail, at))) = (&res, forget) {
                            let base = at.load(Ordering::Acquire);
                            if base >= 0 {
                                tail.forget(&topic, partition, base);
                            }
                        }
                        let _ = tx.send(res.map(|_| ()));
                    },
                )
                .await
                .map_err(task_error)?;
            last = Some(rx);
        }
        let done: Completion = match last {
            None => Box::pin(async { Ok(()) }),
            Some(rx) => Box::pin(async move {
                match rx.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(task_error(e)),
                    Err(_) => Err(transient(anyhow::anyhow!("the local log's writer stopped"))),
                }
            }),
        };
        let acks = self
            .acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match acks {
            Some(a) => a
                .push(last_seq, done)
                .await
                .map_err(|e| transient(anyhow::anyhow!("local log: {e}"))),
            None => Err(definite(anyhow::anyhow!("the output is closed"))),
        }
    }

    async fn close(&self, grace: Duration) {
        // Dropping the last sender lets the acker end once what is queued
        // resolved.
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = self.acker.lock().await.take() {
            let abort = h.abort_handle();
            if tokio::time::timeout(grace, h).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// A frame being filled for one topic partition.
struct PendingFrame {
    topic: Arc<str>,
    partition: u32,
    payload: Vec<u8>,
    count: u32,
    /// Sink connectors reading the topic.
    takers: Vec<Arc<str>>,
    /// Its records, for the log's structured tail (None: not kept).
    records: Option<Vec<SinkRecord>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which of `tasks` tasks reads `topic` `partition`: stable as topics come
/// and go, so no partition ever moves while the tasks run.
fn owner(topic: &str, partition: u32, tasks: u32) -> u32 {
    (to_positive(murmur2(topic.as_bytes())) as u32).wrapping_add(partition) % tasks.max(1)
}

/// A sink task's input from the local log.
struct LocalInput {
    log: Log,
    groups: Arc<Mutex<Groups>>,
    /// Moved into the blocking reader and back.
    decoder: Option<Decoder>,
    tail: Arc<Tail>,
    readers: BTreeMap<TopicPartition, PartitionReader>,
    topics_rx: watch::Receiver<u64>,
    synced_rx: watch::Receiver<u64>,
    /// A topic was created since the last assignment.
    reassign: bool,
    /// A read whose poll was dropped before it ended.
    inflight: Option<JoinHandle<ReadState>>,
    spec: SinkInputSpec,
}

impl LocalInput {
    /// Adds readers for the partitions of matching topics this task owns.
    fn assign(&mut self) -> anyhow::Result<()> {
        self.topics_rx.borrow_and_update();
        for (topic, n) in self.log.topics() {
            if !self.spec.subscription.matches(&topic) {
                continue;
            }
            for p in 0..n {
                if owner(&topic, p, self.spec.tasks) != self.spec.task_id {
                    continue;
                }
                let tp = TopicPartition {
                    topic: Arc::from(topic.as_str()),
                    partition: p as i32,
                };
                if self.readers.contains_key(&tp) {
                    continue;
                }
                let committed = self
                    .groups
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .positions
                    .get(&self.spec.connector)
                    .and_then(|pos| pos.get(&(topic.clone(), p)))
                    .copied();
                let (start, _) = self.log.bounds(&topic, p).map_err(task_error)?;
                let from = committed.unwrap_or(start);
                tracing::debug!(
                    connector = %self.spec.connector,
                    task = self.spec.task_id,
                    "reading {tp} from offset {from}{}",
                    if committed.is_some() { " (committed)" } else { " (the earliest kept)" }
                );
                let reader = self.log.reader(&topic, p, from).map_err(task_error)?;
                self.readers.insert(tp, reader);
            }
        }
        Ok(())
    }

    /// Reads what was synced since the last call; whether a reader stopped
    /// at its byte budget. Cancel-safe: the read runs on a blocking thread
    /// that owns the readers; a poll dropped while it runs leaves it in
    /// `inflight`, and the next poll takes its result, so no record read is
    /// ever lost.
    async fn read(&mut self) -> anyhow::Result<(Vec<InRecord>, bool)> {
        if self.inflight.is_none() {
            let mut readers = std::mem::take(&mut self.readers);
            let mut decoder = self
                .decoder
                .take()
                .context("the local input's decoder is gone")?;
            let per_reader = POLL_BYTES / readers.len().max(1);
            let tail = Arc::clone(&self.tail);
            let group = self.spec.connector.clone();
            self.inflight = Some(tokio::task::spawn_blocking(move || {
                let result = read_frames(&mut readers, &mut decoder, &tail, &group, per_reader);
                (readers, decoder, result)
            }));
        }
        let Some(handle) = self.inflight.as_mut() else {
            anyhow::bail!("the local input's read vanished");
        };
        let joined = handle.await;
        self.inflight = None;
        let (readers, decoder, result) = joined.context("the local log's reader thread failed")?;
        // Assignments wait for reads (see `poll`); a reader added
        // meanwhile never replaces one that has read on.
        let added = std::mem::replace(&mut self.readers, readers);
        for (tp, r) in added {
            self.readers.entry(tp).or_insert(r);
        }
        self.decoder = Some(decoder);
        let (records, more) = result?;
        Ok((
            records.into_iter().map(InRecord::Structured).collect(),
            more,
        ))
    }
}

type ReadResult = anyhow::Result<(Vec<SinkRecord>, bool)>;

/// What a read hands back: the readers, the decoder, what was read.
type ReadState = (
    BTreeMap<TopicPartition, PartitionReader>,
    Decoder,
    ReadResult,
);

/// Reads what every reader has, up to `per_reader` bytes each: the
/// records the tail kept, the others decoded.
fn read_frames(
    readers: &mut BTreeMap<TopicPartition, PartitionReader>,
    decoder: &mut Decoder,
    tail: &Tail,
    group: &str,
    per_reader: usize,
) -> ReadResult {
    let mut out: Vec<SinkRecord> = Vec::new();
    let mut more = false;
    for (tp, reader) in readers.iter_mut() {
        let frames = reader.read(per_reader).map_err(task_error)?;
        more |= frames.iter().map(|f| f.payload.len()).sum::<usize>() >= per_reader;
        for f in frames {
            if let Some(records) = tail.take(
                group,
                &tp.topic,
                tp.partition as u32,
                f.base_offset,
                f.count,
            ) {
                out.extend(records.into_iter().skip(f.skip as usize));
                continue;
            }
            decoder
                .decode(&tp.topic, tp.partition, &f, &mut out)
                .map_err(|e| {
                    definite(e.context(format!(
                        "local log: reading {tp} at offset {}",
                        f.base_offset
                    )))
                })?;
        }
    }
    Ok((out, more))
}

#[async_trait]
impl SinkInput for LocalInput {
    async fn poll(&mut self) -> anyhow::Result<Option<Polled>> {
        loop {
            // Not while a read owns the readers: it would add them again.
            if self.inflight.is_none() && std::mem::take(&mut self.reassign) {
                self.assign()?;
            }
            // Marked seen before reading: a sync after this wakes the wait.
            self.synced_rx.borrow_and_update();
            let (records, more) = self.read().await?;
            if !records.is_empty() {
                return Ok(Some(Polled::Records { records, more }));
            }
            tokio::select! {
                r = self.synced_rx.changed() => if r.is_err() { return Ok(None) },
                r = self.topics_rx.changed() => {
                    if r.is_err() {
                        return Ok(None);
                    }
                    self.reassign = true;
                }
            }
        }
    }

    async fn commit(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let snapshot = {
            let mut g = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = g.positions.entry(self.spec.connector.clone()).or_default();
            for (tp, off) in positions {
                let key = (tp.topic.to_string(), tp.partition as u32);
                let e = mine.entry(key).or_insert(*off);
                *e = (*e).max(*off);
            }
            mine.clone()
        };
        let log = self.log.clone();
        let group = self.spec.connector.clone();
        tokio::task::spawn_blocking(move || {
            log.groups().store(&group, &snapshot)?;
            // What every group has read may go now (space returns even
            // while sources are stopped by a full log).
            log.enforce_retention()
        })
        .await
        .context("the position writer thread failed")?
        .map_err(task_error)
    }

    async fn release(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()> {
        // Partitions never move between local tasks; commit what is final.
        self.commit(positions).await
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_owners_spread() {
        let mut per_task = [0u32; 3];
        for t in 0..60 {
            let topic = format!("srv.public.t{t}");
            let owners: Vec<u32> = (0..3).map(|p| owner(&topic, p, 3)).collect();
            for o in &owners {
                per_task[*o as usize] += 1;
            }
            // One partition, one task: always task 0 of one.
            assert_eq!(owner(&topic, 0, 1), 0);
        }
        assert!(per_task.iter().all(|&n| n > 30), "{per_task:?}");
    }
}
