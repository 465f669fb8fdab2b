//! The in-process transport used when the worker has no `bootstrap.servers`:
//! source records are converted exactly as Kafka Connect's WorkerSourceTask
//! converts them before producing, given a topic offset (one partition per
//! topic, partition 0), and handed to every sink connector subscribed to the
//! topic, to the task Kafka's partitioner would pick for the key.
//!
//! Each sink task reads from a queue bounded by record count and by bytes, so
//! a slow sink slows the sources instead of growing memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context as _;
use async_trait::async_trait;
use sluice_core::connector::RecordSender;
use sluice_core::converter::Converter;
use sluice_core::record::{Record, SourceOffset, SourceRecord};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::connector_config::Subscription;
use crate::delivery::{DeliveryTracker, SinkTaskIndex};
use crate::errors::{ErrorHandler, Failure, Stage};
use crate::kafka_transport::KafkaSourceOutput;
use crate::murmur2::task_for_key;
use crate::transforms::{ConnectRecord, TransformChain};

/// Where a record came from, so its sink task can acknowledge it.
#[derive(Clone)]
pub struct Origin {
    /// The source task's delivery state.
    pub tracker: Arc<DeliveryTracker>,
    /// The record's sequence number in that source task.
    pub seq: u64,
}

/// A record in a sink task's queue.
pub struct Delivery {
    /// The serialized record.
    pub record: Record,
    /// Its source task and sequence number.
    pub origin: Origin,
    // Returns the record's bytes to the queue's budget when dequeued.
    _permit: OwnedSemaphorePermit,
}

/// The bytes a record holds while queued, for the byte bound.
fn footprint(r: &Record) -> usize {
    const OVERHEAD: usize = 64;
    OVERHEAD
        + r.topic.len()
        + r.key.as_ref().map_or(0, Vec::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len) + 16)
            .sum::<usize>()
}

/// The sending half of a sink task's queue.
#[derive(Clone)]
pub struct QueueSender {
    tx: mpsc::Sender<Delivery>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

/// The receiving half of a sink task's queue; dropping it (a failed sink)
/// makes senders fail fast instead of waiting forever.
pub struct QueueReceiver {
    rx: mpsc::Receiver<Delivery>,
    bytes: Arc<Semaphore>,
}

/// The sink task is gone; its records will never be acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct QueueClosed;

/// A queue bounded by `max_records` and `max_bytes`.
pub fn queue(max_records: usize, max_bytes: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(max_records.max(1));
    // Semaphore permits are counted in u32 per acquire; bound the budget so
    // any single record's request fits.
    let max_bytes = max_bytes.clamp(1, u32::MAX as usize);
    let bytes = Arc::new(Semaphore::new(max_bytes));
    (
        QueueSender {
            tx,
            bytes: Arc::clone(&bytes),
            max_bytes,
        },
        QueueReceiver { rx, bytes },
    )
}

impl QueueSender {
    /// Enqueues a record, waiting while the queue is full.
    pub async fn send(&self, record: Record, origin: Origin) -> Result<(), QueueClosed> {
        // A record larger than the whole budget takes all of it, so it still
        // passes (alone) rather than blocking forever.
        let want = footprint(&record).min(self.max_bytes) as u32;
        let permit = Arc::clone(&self.bytes)
            .acquire_many_owned(want)
            .await
            .map_err(|_| QueueClosed)?;
        self.tx
            .send(Delivery {
                record,
                origin,
                _permit: permit,
            })
            .await
            .map_err(|_| QueueClosed)
    }
}

impl QueueReceiver {
    /// Refuses further records (waiting senders fail at once) while those
    /// already queued can still be received.
    pub fn close(&mut self) {
        self.bytes.close();
        self.rx.close();
    }
    /// The next record; None once every sender is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
    /// The next record if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        self.bytes.close();
        self.rx.close();
    }
}

/// A sink connector's place in the routing table.
pub struct SinkRoute {
    /// Connector name.
    pub connector: String,
    /// What it reads.
    pub subscription: Subscription,
    /// Its tasks' global indices and queues, in task order.
    pub tasks: Vec<(SinkTaskIndex, QueueSender)>,
}

struct TopicState {
    next_offset: i64,
}

/// The sink connectors reading a topic.
type Routes = Arc<Vec<Arc<SinkRoute>>>;

struct Topic {
    /// Held while a record is numbered and enqueued, so records reach every
    /// queue in topic-offset order.
    state: Arc<tokio::sync::Mutex<TopicState>>,
    /// Read per record; kept apart from `state` so that changing the routes
    /// never waits for a sender (which may be waiting for room in a paused
    /// sink's queue).
    routes: RwLock<Routes>,
}

/// Routes converted records from sources to the sink tasks that read them.
/// Sink connectors may be added and removed while sources run; the routes
/// of every topic already seen are then recomputed.
pub struct Router {
    sinks: RwLock<Vec<Arc<SinkRoute>>>,
    topics: Mutex<HashMap<Arc<str>, Arc<Topic>>>,
    warned: Mutex<HashSet<Arc<str>>>,
    /// Kafka Connect's active topics: per connector, the topics a source
    /// wrote to or a sink was routed.
    active: Mutex<HashMap<String, BTreeSet<Arc<str>>>>,
}

impl Router {
    /// A router over the given sink connectors.
    pub fn new(sinks: Vec<SinkRoute>) -> Self {
        Router {
            sinks: RwLock::new(sinks.into_iter().map(Arc::new).collect()),
            topics: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            active: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn note_active(&self, connector: &str, topic: &Arc<str>) {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        match active.get_mut(connector) {
            Some(set) => {
                if !set.contains(topic) {
                    set.insert(Arc::clone(topic));
                }
            }
            None => {
                active.insert(connector.to_string(), BTreeSet::from([Arc::clone(topic)]));
            }
        }
    }

    /// The topics connector `connector` used since it was created or its
    /// topics were last reset, sorted.
    pub fn active_topics(&self, connector: &str) -> Vec<String> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(connector)
            .map(|set| set.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }

    /// Forgets the topics `connector` used.
    pub fn reset_active_topics(&self, connector: &str) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connector);
    }

    fn sinks(&self) -> Vec<Arc<SinkRoute>> {
        self.sinks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets (or with None removes) sink connector `connector`'s route. Topics
    /// already seen keep their old routes until [`Router::recompute`].
    pub fn set_route(&self, connector: &str, route: Option<SinkRoute>) {
        let mut sinks = self.sinks.write().unwrap_or_else(PoisonError::into_inner);
        sinks.retain(|s| s.connector != connector);
        sinks.extend(route.map(Arc::new));
    }

    /// Recomputes the routes of every topic seen so far. A topic first seen
    /// concurrently is either created from the new sink list or is in the
    /// snapshot taken here, since the list changes before the snapshot.
    /// Records after this go by the new routes; a record being enqueued
    /// right now finishes by the routes it started with.
    pub fn recompute(&self) {
        let sinks = self.sinks();
        let topics: Vec<(Arc<str>, Arc<Topic>)> = self
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        for (topic, t) in topics {
            let routes = self.routes_for(&sinks, &topic);
            if !routes.is_empty() {
                // A later removal should warn again.
                self.warned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&topic);
            }
            *t.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
        }
    }

    fn routes_for(&self, sinks: &[Arc<SinkRoute>], topic: &Arc<str>) -> Vec<Arc<SinkRoute>> {
        let routes: Vec<Arc<SinkRoute>> = sinks
            .iter()
            .filter(|s| s.subscription.matches(topic))
            .cloned()
            .collect();
        for r in &routes {
            self.note_active(&r.connector, topic);
        }
        routes
    }

    fn topic(&self, topic: &Arc<str>) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = topics.get(topic) {
            return Arc::clone(t);
        }
        let routes = self.routes_for(&self.sinks(), topic);
        if routes.is_empty()
            && self
                .warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(Arc::clone(topic))
        {
            tracing::warn!(
                topic = %topic,
                "no sink connector subscribes to topic '{topic}': its records are not stored anywhere"
            );
        } else if !routes.is_empty() {
            let names: Vec<&str> = routes.iter().map(|s| s.connector.as_str()).collect();
            tracing::debug!(topic = %topic, sinks = ?names, "routing new topic");
        }
        let t = Arc::new(Topic {
            state: Arc::new(tokio::sync::Mutex::new(TopicState { next_offset: 0 })),
            routes: RwLock::new(Arc::new(routes)),
        });
        topics.insert(Arc::clone(topic), Arc::clone(&t));
        t
    }
}

/// The [`RecordSender`] of one source task.
pub struct SourceSender {
    connector: String,
    task_id: u32,
    router: Arc<Router>,
    tracker: Arc<DeliveryTracker>,
    key_converter: Arc<dyn Converter>,
    value_converter: Arc<dyn Converter>,
    /// The connector's transforms; None when it has none.
    transforms: Option<Arc<TransformChain>>,
    /// The connector's error handling; None fails the task on the first
    /// record that cannot be transformed or converted.
    errors: Option<ErrorHandler>,
    /// With the Kafka transport: where records go instead of the router
    /// (which then only notes active topics).
    kafka: Option<KafkaSourceOutput>,
    // `send` takes &self; records of one task must still be dispatched in
    // order, so concurrent calls are serialized.
    serial: tokio::sync::Mutex<()>,
    /// The connector's counters.
    metrics: Arc<crate::metrics::ConnectorMetrics>,
    /// While true (the connector is paused) `send` waits, so the task
    /// stops producing; cancelling the token ends the wait.
    paused: Option<(
        tokio::sync::watch::Receiver<bool>,
        tokio_util::sync::CancellationToken,
    )>,
}

impl SourceSender {
    /// A sender for source task `task_id` of `connector`.
    pub fn new(
        connector: String,
        task_id: u32,
        router: Arc<Router>,
        tracker: Arc<DeliveryTracker>,
        key_converter: Arc<dyn Converter>,
        value_converter: Arc<dyn Converter>,
    ) -> Self {
        SourceSender {
            metrics: crate::metrics::connector(&connector),
            connector,
            task_id,
            router,
            tracker,
            key_converter,
            value_converter,
            transforms: None,
            errors: None,
            kafka: None,
            serial: tokio::sync::Mutex::new(()),
            paused: None,
        }
    }

    /// Makes `send` wait while `paused` is true, unless `stop` is cancelled
    /// (a stopping worker lets the last records through).
    pub fn with_pause(
        mut self,
        paused: tokio::sync::watch::Receiver<bool>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.paused = Some((paused, stop));
        self
    }

    /// Produces records to Kafka through `output` instead of routing them
    /// in-process.
    pub fn with_kafka(mut self, output: KafkaSourceOutput) -> Self {
        self.kafka = Some(output);
        self
    }

    /// Handles records that fail a transform or conversion as the
    /// connector's `errors.*` settings say (with `errors.tolerance=all`
    /// they are skipped, their source offsets still committed).
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

    /// Runs the chain over one record, as `WorkerSourceTask` does before
    /// converting. A dropped record that carried an offset becomes an
    /// offset-only marker: Kafka Connect still commits a filtered record's
    /// offset. On failure: the record's topic and offset, and why.
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
            // Nothing to deliver, and without an offset no progress to
            // record either.
            None => offset.map(SourceRecord::offset_only),
        })
    }

    /// A record that failed: fails the task, or (tolerated) is reported and
    /// leaves only its offset behind, which counts as processed once every
    /// record before it is delivered.
    fn tolerate(
        &self,
        topic: &str,
        offset: Option<Arc<SourceOffset>>,
        failure: Failure,
        converted: &mut Vec<(Record, Option<Arc<SourceOffset>>)>,
    ) -> anyhow::Result<()> {
        match &self.errors {
            Some(h) => h.report_source(topic, offset.as_ref(), failure)?,
            None => {
                let Failure { stage, error, .. } = failure;
                return Err(error.context(format!(
                    "source connector '{}' task {}: stage {stage} failed on a record for topic '{topic}' (source offset {})",
                    self.connector,
                    self.task_id,
                    offset.as_ref().map_or("none".to_string(), |o| {
                        serde_json::Value::Object(o.offset.clone()).to_string()
                    })
                )));
            }
        }
        if offset.is_some() {
            converted.push((empty_record(), offset));
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl RecordSender for SourceSender {
    async fn send(&self, records: Vec<SourceRecord>) -> anyhow::Result<()> {
        let _serial = self.serial.lock().await;
        if let Some((paused, stop)) = &self.paused {
            let mut paused = paused.clone();
            tokio::select! {
                // An error means the worker dropped the connector: go on.
                _ = paused.wait_for(|p| !*p) => {}
                _ = stop.cancelled() => {}
            }
        }
        let sourced = records.iter().filter(|r| !r.is_offset_only()).count() as u64;
        // Convert the whole batch first: a conversion error fails the task
        // before any of the batch is dispatched.
        let mut converted: Vec<(Record, Option<Arc<SourceOffset>>)> =
            Vec::with_capacity(records.len());
        for r in records {
            let r = match &self.transforms {
                Some(chain) => match self.transform(chain, r) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err((topic, offset, failure)) => {
                        self.tolerate(&topic, offset, failure, &mut converted)?;
                        continue;
                    }
                },
                None => r,
            };
            match self.convert(&r) {
                Ok(rec) => converted.push((rec, r.offset)),
                Err(failure) => self.tolerate(&r.topic, r.offset, failure, &mut converted)?,
            }
        }
        if let Some(kafka) = &self.kafka {
            for (rec, offset) in converted {
                if rec.topic.is_empty() {
                    // In a transaction the marker's offset is written with
                    // the records before it.
                    kafka
                        .send_offset(&self.tracker, offset.as_ref())
                        .await
                        .with_context(|| {
                            format!("connector '{}' task {}", self.connector, self.task_id)
                        })?;
                    continue;
                }
                self.router.note_active(&self.connector, &rec.topic);
                kafka
                    .send(&self.tracker, rec, offset.as_ref())
                    .await
                    .with_context(|| {
                        format!("connector '{}' task {}", self.connector, self.task_id)
                    })?;
            }
            self.metrics.add_sourced(sourced);
            return Ok(());
        }
        let mut current: Option<(
            Arc<str>,
            Arc<Topic>,
            tokio::sync::OwnedMutexGuard<TopicState>,
        )> = None;
        // (route, task within the route's connector), reused across records.
        let mut dests: Vec<(usize, usize)> = Vec::new();
        let mut indices: Vec<SinkTaskIndex> = Vec::new();
        for (mut rec, offset) in converted {
            if rec.topic.is_empty() {
                // An offset-only marker: no destination, so it is delivered
                // as soon as everything dispatched before it is.
                self.tracker.dispatch(&[], offset.as_ref());
                continue;
            }
            // The topic lock is held while the record is enqueued so records
            // reach every queue in topic-offset order, even with several
            // source tasks writing one topic.
            let (topic, state) = match &mut current {
                Some((name, t, g)) if *name == rec.topic => (&*t, g),
                _ => {
                    current = None;
                    let t = self.router.topic(&rec.topic);
                    self.router.note_active(&self.connector, &rec.topic);
                    let guard = Arc::clone(&t.state).lock_owned().await;
                    let (_, t, g) = current.insert((Arc::clone(&rec.topic), t, guard));
                    (&*t, g)
                }
            };
            rec.offset = state.next_offset;
            state.next_offset += 1;
            // Taken per record: the routes may change between records.
            let routes: Routes =
                Arc::clone(&topic.routes.read().unwrap_or_else(PoisonError::into_inner));
            dests.clear();
            indices.clear();
            for (route, sink) in routes.iter().enumerate() {
                if sink.tasks.is_empty() {
                    continue;
                }
                let task = task_for_key(rec.key.as_deref(), sink.tasks.len());
                dests.push((route, task));
                indices.push(sink.tasks[task].0);
            }
            let seq = self.tracker.dispatch(&indices, offset.as_ref());
            let origin = Origin {
                tracker: Arc::clone(&self.tracker),
                seq,
            };
            for (i, &(route, task)) in dests.iter().enumerate() {
                let r = if i + 1 == dests.len() {
                    std::mem::replace(&mut rec, empty_record())
                } else {
                    rec.clone()
                };
                let queue = &routes[route].tasks[task].1;
                if queue.send(r, origin.clone()).await.is_err() {
                    // The sink task failed and the worker is stopping; the
                    // record stays unacknowledged, so its offset is never
                    // committed.
                    tracing::debug!(connector = %self.connector, "dropping a record for a stopped sink task");
                }
            }
        }
        self.metrics.add_sourced(sourced);
        Ok(())
    }
}

fn empty_record() -> Record {
    Record {
        topic: Arc::from(""),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: None,
        value: None,
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    fn rec(value_len: usize) -> Record {
        Record {
            value: Some(vec![b'x'; value_len]),
            ..empty_record()
        }
    }

    fn origin() -> Origin {
        Origin {
            tracker: Arc::new(DeliveryTracker::new(1)),
            seq: 1,
        }
    }

    #[tokio::test]
    async fn queue_is_bounded_by_records() {
        let (tx, mut rx) = queue(2, 1 << 20);
        for _ in 0..2 {
            tx.send(rec(1), origin())
                .now_or_never()
                .expect("room")
                .expect("open");
        }
        let mut third = Box::pin(tx.send(rec(1), origin()));
        assert!(
            (&mut third).now_or_never().is_none(),
            "a full queue makes the sender wait"
        );
        assert!(rx.recv().await.is_some());
        third.await.expect("room after a receive");
    }

    #[tokio::test]
    async fn queue_is_bounded_by_bytes() {
        let (tx, mut rx) = queue(100, 1000);
        tx.send(rec(600), origin())
            .now_or_never()
            .expect("room")
            .expect("open");
        let mut second = Box::pin(tx.send(rec(600), origin()));
        assert!(
            (&mut second).now_or_never().is_none(),
            "over the byte budget waits"
        );
        let first = rx.recv().await.expect("first");
        drop(first);
        second
            .await
            .expect("budget returned once the first left the queue");
        // A record bigger than the whole budget still passes, alone.
        drop(rx.recv().await);
        tx.send(rec(5000), origin())
            .now_or_never()
            .expect("alone")
            .expect("open");
    }

    #[tokio::test]
    async fn a_dropped_receiver_fails_waiting_senders() {
        let (tx, rx) = queue(1, 1 << 20);
        tx.send(rec(1), origin()).await.expect("open");
        let waiting = tx.send(rec(1), origin());
        drop(rx);
        assert!(waiting.await.is_err());
    }
}
