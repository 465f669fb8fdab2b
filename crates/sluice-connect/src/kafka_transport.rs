//! The Kafka transport, used when the worker has `bootstrap.servers`
//! (Kafka Connect's standalone mode against a real cluster; source offsets
//! stay in `offset.storage.file.filename`).
//!
//! Source side: a source task's records are converted as in-process, then
//! produced with the idempotent producer (the key picks the partition). The
//! producer is the single "sink" of every source task's
//! [`DeliveryTracker`], at index [`PRODUCER`]: a record counts as delivered
//! when the broker acknowledged it, and since deliveries of different
//! partitions can complete out of order, sequence numbers are acknowledged
//! strictly in order, so an offset is committed only once every earlier
//! record is stored in Kafka. Topics are created when missing with the
//! connector's `topic.creation.default.*` settings.
//!
//! Sink side: each sink task consumes as group `connect-<connector>` and
//! feeds the same [`SinkDriver`] as in-process through a local queue; the
//! driver's acknowledgements (after `flush`) decide which Kafka offsets are
//! committed. On revocation, what was flushed of the revoked partitions is
//! committed before they are let go.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::config::Props;
use sluice_core::record::{Record, SourceOffset};
use sluice_kafka::{
    Admin, ClientRole, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Delivery,
    KafkaConfig, Producer, TopicPartition,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connector_config::Subscription;
use crate::delivery::{DeliveryTracker, SinkTaskIndex};
use crate::sink_driver::SinkDriver;
use crate::transport::{Origin, QueueSender, Router};

/// The tracker index of the producer in a source task's [`DeliveryTracker`]
/// (sink tasks in Kafka mode have their own trackers and indices from 1).
pub const PRODUCER: SinkTaskIndex = 0;

/// Deliveries waiting to be acknowledged per source task.
const ACK_QUEUE: usize = 65_536;

/// How often a sink task commits what its sink flushed.
const SINK_COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// The consumers' metadata refresh unless `consumer.<key>` sets it: how
/// soon a sink sees a topic created after it subscribed.
pub const SINK_METADATA_REFRESH: (&str, &str) = ("topic.metadata.refresh.interval.ms", "5000");

/// Kafka Connect's `topic.creation.default.*` of a source connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCreation {
    /// `topic.creation.default.partitions` (default 1).
    pub partitions: i32,
    /// `topic.creation.default.replication.factor` (default 1; -1 is the
    /// broker's default).
    pub replication_factor: i32,
    /// Other `topic.creation.default.*` keys (`cleanup.policy`, ...):
    /// topic settings.
    pub configs: Vec<(String, String)>,
}

impl TopicCreation {
    /// Reads a connector's `topic.creation.default.*` properties.
    pub fn from_connector_props(props: &Props) -> anyhow::Result<TopicCreation> {
        const PREFIX: &str = "topic.creation.default.";
        let int = |key: &str| -> anyhow::Result<i32> {
            match props.get(&format!("{PREFIX}{key}")) {
                None => Ok(1),
                Some(v) => v.trim().parse::<i32>().ok().filter(|n| *n == -1 || *n >= 1).with_context(|| {
                    format!("'{PREFIX}{key}' must be a positive integer or -1 (broker default), not '{v}'")
                }),
            }
        };
        let partitions = int("partitions")?;
        let replication_factor = int("replication.factor")?;
        let configs = props
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(PREFIX)?;
                (!matches!(
                    name,
                    "partitions" | "replication.factor" | "include" | "exclude"
                ))
                .then(|| (name.to_string(), v.trim().to_string()))
            })
            .collect();
        Ok(TopicCreation {
            partitions,
            replication_factor,
            configs,
        })
    }
}

/// The worker's Kafka clients.
#[derive(Clone)]
pub struct KafkaClients {
    /// Client settings (consumers are made per sink task).
    pub config: Arc<KafkaConfig>,
    /// The worker's producer, shared by its source tasks.
    pub producer: Producer,
    /// For topic creation.
    pub admin: Arc<Admin>,
}

impl KafkaClients {
    /// Connects the producer and admin client (fails when the cluster does
    /// not answer).
    pub async fn connect(mut config: KafkaConfig) -> sluice_kafka::Result<KafkaClients> {
        // A sink may subscribe before a source created its topic; without
        // this a consumer would notice the topic only at librdkafka's
        // default metadata refresh, 5 minutes later.
        if config
            .override_value(ClientRole::Consumer, SINK_METADATA_REFRESH.0)
            .is_none()
        {
            config.set_override(
                ClientRole::Consumer,
                SINK_METADATA_REFRESH.0,
                SINK_METADATA_REFRESH.1,
            )?;
        }
        let admin = Admin::connect(&config).await?;
        let producer = Producer::connect(&config).await?;
        Ok(KafkaClients {
            config: Arc::new(config),
            producer,
            admin: Arc::new(admin),
        })
    }
}

/// One source task's way into Kafka.
pub struct KafkaSourceOutput {
    producer: Producer,
    admin: Arc<Admin>,
    creation: TopicCreation,
    ensured: tokio::sync::Mutex<HashSet<Arc<str>>>,
    acks: mpsc::Sender<(u64, Delivery)>,
    failure: Arc<Mutex<Option<String>>>,
}

impl KafkaSourceOutput {
    /// The output of a source task whose deliveries `tracker` records; the
    /// returned handle ends once the output is dropped and every record sent
    /// through it was acknowledged or failed. `on_failure` is told the first
    /// delivery failure at once (the task may not send again for a while).
    pub fn new(
        clients: &KafkaClients,
        creation: TopicCreation,
        tracker: Arc<DeliveryTracker>,
        on_failure: Box<dyn FnOnce(String) + Send>,
    ) -> (KafkaSourceOutput, JoinHandle<()>) {
        let (acks, rx) = mpsc::channel(ACK_QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let acker = tokio::spawn(ack_in_order(rx, tracker, Arc::clone(&failure), on_failure));
        (
            KafkaSourceOutput {
                producer: clients.producer.clone(),
                admin: Arc::clone(&clients.admin),
                creation,
                ensured: tokio::sync::Mutex::new(HashSet::new()),
                acks,
                failure,
            },
            acker,
        )
    }

    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn ensure_topic(&self, topic: &Arc<str>) -> anyhow::Result<()> {
        let mut ensured = self.ensured.lock().await;
        if ensured.contains(topic) {
            return Ok(());
        }
        let configs: Vec<(&str, &str)> = self
            .creation
            .configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let state = self
            .admin
            .ensure_topic(
                topic,
                self.creation.partitions,
                self.creation.replication_factor,
                &configs,
            )
            .await
            .with_context(|| format!("creating Kafka topic '{topic}'"))?;
        tracing::debug!(topic = %topic, ?state, "Kafka topic ready");
        ensured.insert(Arc::clone(topic));
        Ok(())
    }

    /// Produces one converted record, registered with `tracker` (with the
    /// source offset it carries) before it is sent.
    pub async fn send(
        &self,
        tracker: &DeliveryTracker,
        record: Record,
        offset: Option<&Arc<SourceOffset>>,
    ) -> anyhow::Result<()> {
        if let Some(f) = self.failed() {
            anyhow::bail!("{f}");
        }
        self.ensure_topic(&record.topic).await?;
        let seq = tracker.dispatch(&[PRODUCER], offset);
        let delivery = self
            .producer
            .send(&record)
            .await
            .with_context(|| format!("producing to Kafka topic '{}'", record.topic))?;
        if self.acks.send((seq, delivery)).await.is_err() {
            let f = self.failed().unwrap_or_else(|| {
                format!(
                    "producing to Kafka topic '{}': acknowledgements stopped",
                    record.topic
                )
            });
            anyhow::bail!("{f}");
        }
        Ok(())
    }
}

/// Acknowledges deliveries to `tracker` in sequence order: each delivery is
/// awaited in the order it was sent, so a sequence number is acknowledged
/// only once every lower one is. The first failure is recorded in `failure`
/// and nothing later is acknowledged.
async fn ack_in_order<D>(
    mut rx: mpsc::Receiver<(u64, D)>,
    tracker: Arc<DeliveryTracker>,
    failure: Arc<Mutex<Option<String>>>,
    on_failure: Box<dyn FnOnce(String) + Send>,
) where
    D: std::future::Future<Output = sluice_kafka::Result<sluice_kafka::Delivered>>,
{
    while let Some((seq, delivery)) = rx.recv().await {
        match delivery.await {
            Ok(_) => tracker.ack(PRODUCER, seq),
            Err(e) => {
                let msg = format!("producing to Kafka: {e}");
                *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(msg.clone());
                on_failure(msg);
                return;
            }
        }
    }
}

/// A sink connector's subscription as the Kafka consumer takes it.
pub fn consumer_subscription(sub: &Subscription) -> sluice_kafka::Subscription {
    match sub {
        Subscription::Topics(t) => {
            let mut topics: Vec<String> = t.iter().cloned().collect();
            topics.sort();
            sluice_kafka::Subscription::Topics(topics)
        }
        Subscription::Regex(r) => sluice_kafka::Subscription::Regex(r.as_str().to_string()),
    }
}

/// Records handed to the sink driver whose Kafka offsets are not yet
/// committable: (sequence in `tracker`, partition, record offset).
struct Pending {
    tracker: Arc<DeliveryTracker>,
    index: SinkTaskIndex,
    last_seq: u64,
    queue: VecDeque<(u64, TopicPartition, i64)>,
    durable: CommitOffsets,
    changed: bool,
}

impl Pending {
    /// Moves what the driver acknowledged into `durable`.
    fn advance(&mut self) {
        let upto = self.tracker.delivered_up_to();
        while self.queue.front().is_some_and(|(s, _, _)| *s <= upto) {
            if let Some((_, tp, off)) = self.queue.pop_front() {
                self.durable.set(tp, off + 1);
                self.changed = true;
            }
        }
    }

    fn all_acked(&self) -> bool {
        self.tracker.delivered_up_to() >= self.last_seq
    }

    async fn commit(&mut self, consumer: &Consumer, label: &str) {
        self.advance();
        if !self.changed || self.durable.is_empty() {
            return;
        }
        match consumer.commit(&self.durable).await {
            Ok(()) => self.changed = false,
            Err(e) => tracing::warn!("{label}: committing Kafka offsets (retried): {e}"),
        }
    }
}

/// Runs a sink task over Kafka: consumes as group `connect-<connector>`,
/// feeds `driver` through `tx` (its queue's sending half), commits what the
/// driver flushed. Ends when the driver ends (stopped: Ok after a final
/// commit; failed: its error).
pub async fn run_sink(
    driver: SinkDriver,
    tx: QueueSender,
    router: Arc<Router>,
    config: Arc<KafkaConfig>,
    subscription: sluice_kafka::Subscription,
) -> anyhow::Result<()> {
    let label = format!(
        "sink connector '{}' task {}",
        driver.connector, driver.task_id
    );
    let stop = driver.stop.clone();
    let connector = driver.connector.clone();
    let revoke_wait = driver.policy.interval + Duration::from_secs(2);
    let mut pending = Pending {
        tracker: Arc::new(DeliveryTracker::new(driver.index + 1)),
        index: driver.index,
        last_seq: 0,
        queue: VecDeque::new(),
        durable: CommitOffsets::new(),
        changed: false,
    };
    let mut consumer = Consumer::subscribe(
        &config,
        &driver.connector,
        subscription,
        ConsumerOptions::default(),
    )
    .await
    .with_context(|| format!("{label}: joining consumer group"))?;
    let mut drive = tokio::spawn(driver.run());
    let mut tick = tokio::time::interval(SINK_COMMIT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut feeding = true;
    let mut lost = false;
    // Topics already reported to `router` as the connector's active topics.
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    let result = loop {
        tokio::select! {
            r = &mut drive => break r.unwrap_or_else(|e| Err(anyhow::anyhow!("{label} panicked: {e}"))),
            _ = stop.cancelled(), if feeding => feeding = false,
            _ = tick.tick() => pending.commit(&consumer, &label).await,
            ev = consumer.next_event(), if feeding => match ev {
                None => {
                    feeding = false;
                    lost = true;
                    stop.cancel();
                }
                Some(ConsumerEvent::Records(records)) => {
                    for r in records {
                        if !seen.contains(&r.topic) {
                            router.note_active(&connector, &r.topic);
                            seen.insert(Arc::clone(&r.topic));
                        }
                        let tp = TopicPartition { topic: Arc::clone(&r.topic), partition: r.partition };
                        let off = r.offset;
                        let seq = pending.tracker.dispatch(&[pending.index], None);
                        pending.last_seq = seq;
                        pending.queue.push_back((seq, tp, off));
                        let origin = Origin { tracker: Arc::clone(&pending.tracker), seq };
                        if tx.send(r, origin).await.is_err() {
                            // The driver stopped taking records.
                            feeding = false;
                            break;
                        }
                    }
                }
                Some(ConsumerEvent::Assigned(parts)) => {
                    tracing::info!("{label}: assigned {} partition(s)", parts.len());
                }
                Some(ConsumerEvent::Revoked(rev)) => {
                    // Let the driver flush what it has (it flushes within its
                    // interval), then hand over what is durable.
                    let deadline = tokio::time::Instant::now() + revoke_wait;
                    while !pending.all_acked() && !drive.is_finished()
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    pending.advance();
                    let revoked: HashSet<&TopicPartition> = rev.partitions.iter().collect();
                    // Records of revoked partitions not flushed yet are the
                    // next owner's to deliver again; never commit them here.
                    pending.queue.retain(|(_, tp, _)| !revoked.contains(tp));
                    let offsets = pending.durable.take(&rev.partitions);
                    tracing::info!("{label}: releasing {} partition(s)", rev.partitions.len());
                    rev.release(offsets);
                }
            },
        }
    };
    drop(tx);
    pending.commit(&consumer, &label).await;
    consumer.close().await;
    if lost && result.is_ok() {
        anyhow::bail!("{label}: the Kafka consumer stopped");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_kafka::Delivered;
    use tokio::sync::oneshot;

    type Ack = oneshot::Sender<sluice_kafka::Result<Delivered>>;

    async fn delivery(
        rx: oneshot::Receiver<sluice_kafka::Result<Delivered>>,
    ) -> sluice_kafka::Result<Delivered> {
        rx.await.unwrap_or(Err(sluice_kafka::Error::Closed("test")))
    }

    fn ok() -> sluice_kafka::Result<Delivered> {
        Ok(Delivered {
            partition: 0,
            offset: 0,
        })
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn deliveries_completing_out_of_order_are_acknowledged_in_order() {
        let tracker = Arc::new(DeliveryTracker::new(1));
        let (tx, rx) = mpsc::channel(16);
        let failure = Arc::new(Mutex::new(None));
        let acker = tokio::spawn(ack_in_order(
            rx,
            Arc::clone(&tracker),
            Arc::clone(&failure),
            Box::new(|_| {}),
        ));
        let mut senders: Vec<Ack> = Vec::new();
        for _ in 0..3 {
            let seq = tracker.dispatch(&[PRODUCER], None);
            let (s, r) = oneshot::channel();
            senders.push(s);
            tx.send((seq, delivery(r))).await.unwrap();
        }
        let mut senders = senders.into_iter();
        let (first, second, third) = (
            senders.next().unwrap(),
            senders.next().unwrap(),
            senders.next().unwrap(),
        );
        // The third (another partition) is stored first: nothing counts yet.
        let _ = third.send(ok());
        settle().await;
        assert_eq!(tracker.delivered_up_to(), 0);
        let _ = first.send(ok());
        settle().await;
        assert_eq!(tracker.delivered_up_to(), 1);
        let _ = second.send(ok());
        settle().await;
        assert_eq!(tracker.delivered_up_to(), 3);
        drop(tx);
        acker.await.unwrap();
        assert!(failure.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failed_delivery_stops_acknowledging_and_is_reported() {
        let tracker = Arc::new(DeliveryTracker::new(1));
        let (tx, rx) = mpsc::channel(16);
        let failure = Arc::new(Mutex::new(None));
        let (told_tx, told) = oneshot::channel();
        let acker = tokio::spawn(ack_in_order(
            rx,
            Arc::clone(&tracker),
            Arc::clone(&failure),
            Box::new(move |e| {
                let _ = told_tx.send(e);
            }),
        ));
        for result in [ok(), Err(sluice_kafka::Error::Closed("delivery")), ok()] {
            let seq = tracker.dispatch(&[PRODUCER], None);
            let (s, r) = oneshot::channel();
            let _ = s.send(result);
            let _ = tx.send((seq, delivery(r))).await;
        }
        acker.await.unwrap();
        assert_eq!(
            tracker.delivered_up_to(),
            1,
            "nothing after the failure counts"
        );
        let told = told.await.expect("told");
        assert!(told.starts_with("producing to Kafka:"), "{told}");
        assert_eq!(failure.lock().unwrap().as_deref(), Some(told.as_str()));
    }

    #[test]
    fn topic_creation_defaults_and_settings() {
        let props = |kv: &[(&str, &str)]| -> Props {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let d = TopicCreation::from_connector_props(&Props::new()).unwrap();
        assert_eq!((d.partitions, d.replication_factor), (1, 1));
        assert!(d.configs.is_empty());
        let c = TopicCreation::from_connector_props(&props(&[
            ("topic.creation.default.partitions", "3"),
            ("topic.creation.default.replication.factor", "-1"),
            ("topic.creation.default.cleanup.policy", "compact"),
        ]))
        .unwrap();
        assert_eq!((c.partitions, c.replication_factor), (3, -1));
        assert_eq!(
            c.configs,
            vec![("cleanup.policy".to_string(), "compact".to_string())]
        );
        let err = TopicCreation::from_connector_props(&props(&[(
            "topic.creation.default.partitions",
            "0",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("topic.creation.default.partitions"), "{err}");
    }
}
