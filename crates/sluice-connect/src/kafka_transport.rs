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
//! Exactly-once source delivery (KIP-618, worker
//! `exactly.once.source.support=enabled`): [`KafkaSourceOutput::new_transactional`]
//! gives the task its own transactional producer (`transactional.id` =
//! `<group.id>-<connector>-<task id>`, see [`transactional_id`]). Its records
//! and, per source partition, the latest source offset they carry (written
//! to the offsets topic in Kafka Connect's format) are committed in one
//! Kafka transaction; only then are the records acknowledged to the
//! tracker, so the source confirms nothing that is not durably in Kafka,
//! and a `read_committed` consumer sees records and offsets together or not
//! at all. Transactions end as the connector's `transaction.boundary` says
//! ([`TransactionBoundary`]).
//!
//! Sink side: each sink task consumes as group `connect-<connector>` and
//! feeds the same [`SinkDriver`] as in-process through a local queue; the
//! driver's acknowledgements (after `flush`) decide which Kafka offsets are
//! committed. On revocation, what was flushed of the revoked partitions is
//! committed before they are let go.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use sluice_core::config::Props;
use sluice_core::record::{Record, SourceOffset};
use sluice_kafka::{
    Admin, ClientRole, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Delivery,
    KafkaConfig, Producer, TopicPartition, TransactionalProducer,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::connector_config::Subscription;
use crate::delivery::{DeliveryTracker, SinkTaskIndex};
use crate::offset_file::entry_key;
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
    admin: Arc<Admin>,
    creation: TopicCreation,
    ensured: tokio::sync::Mutex<HashSet<Arc<str>>>,
    failure: Arc<Mutex<Option<String>>>,
    mode: Mode,
}

enum Mode {
    /// Records count as delivered once acknowledged by the brokers.
    Idempotent {
        producer: Producer,
        acks: mpsc::Sender<(u64, Delivery)>,
    },
    /// Records count as delivered once their transaction is committed.
    Transactional {
        txn: Arc<Txn>,
        /// Dropping the output tells the commit loop to commit what is
        /// pending and end.
        _close: DropGuard,
    },
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
                admin: Arc::clone(&clients.admin),
                creation,
                ensured: tokio::sync::Mutex::new(HashSet::new()),
                failure,
                mode: Mode::Idempotent {
                    producer: clients.producer.clone(),
                    acks,
                },
            },
            acker,
        )
    }

    /// The exactly-once output of a source task (KIP-618): connects the
    /// task's own transactional producer (fencing any earlier one with the
    /// same `transactional.id`, whose open transaction is then aborted) and
    /// spawns the loop that ends each transaction as `settings` say. The
    /// returned handle ends once the output is dropped and what was pending
    /// is committed (or that failed), or once a commit failed.
    ///
    /// `tracker` must be the one later passed to [`send`](Self::send): a
    /// record is acknowledged to it only after its transaction committed,
    /// together with the offsets-topic records of the source offsets it
    /// covers. `on_failure` is told at once when a commit fails (the
    /// transaction is then aborted when Kafka allows it, or was aborted by
    /// the coordinator when the producer was fenced); the source restarts
    /// from the last committed offset, and the aborted records are
    /// invisible to `read_committed` consumers. The offsets topic must
    /// exist.
    ///
    /// Offset-only markers should go through [`send_offset`](Self::send_offset)
    /// so their offsets are written in the transaction too; the offsets
    /// the tracker later releases are already in the offsets topic, so the
    /// committer only has to tell the source.
    ///
    /// How a worker with `exactly.once.source.support=enabled` starts a
    /// source task's output:
    ///
    /// ```no_run
    /// # async fn demo(
    /// #     clients: sluice_connect::kafka_transport::KafkaClients,
    /// #     connector_props: sluice_core::config::Props,
    /// #     tracker: std::sync::Arc<sluice_connect::delivery::DeliveryTracker>,
    /// #     record: sluice_core::record::Record,
    /// #     offset: std::sync::Arc<sluice_core::record::SourceOffset>,
    /// # ) -> anyhow::Result<()> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use sluice_connect::kafka_transport::*;
    ///
    /// let boundary = TransactionBoundary::from_connector_props(&connector_props)?;
    /// let settings = TxnSettings::new(
    ///     "connect-cluster",  // worker group.id
    ///     "pg",               // connector name
    ///     0,                  // task id
    ///     "connect-offsets",  // worker offset.storage.topic
    ///     boundary,
    ///     Duration::from_secs(60), // worker offset.flush.interval.ms
    /// );
    /// let (output, committer) = KafkaSourceOutput::new_transactional(
    ///     &clients,
    ///     TopicCreation::from_connector_props(&connector_props)?,
    ///     Arc::clone(&tracker),
    ///     Box::new(|error| eprintln!("task failed: {error}")),
    ///     settings,
    /// )
    /// .await?;
    /// output.send(&tracker, record, Some(&offset)).await?;
    /// drop(output); // commits what is pending
    /// committer.await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn new_transactional(
        clients: &KafkaClients,
        creation: TopicCreation,
        tracker: Arc<DeliveryTracker>,
        on_failure: Box<dyn FnOnce(String) + Send>,
        settings: TxnSettings,
    ) -> anyhow::Result<(KafkaSourceOutput, JoinHandle<()>)> {
        let label = format!(
            "source connector '{}' task {}",
            settings.connector, settings.task_id
        );
        let mut config = (*clients.config).clone();
        // A transaction stays open up to a commit interval (plus the
        // commit): with the client default (60 s) and Kafka Connect's
        // default interval (60 s) the coordinator would abort some.
        if config
            .override_value(ClientRole::Producer, "transaction.timeout.ms")
            .is_none()
        {
            let ms = (settings.commit_interval.as_millis() * 2)
                .clamp(TXN_TIMEOUT_MIN_MS, TXN_TIMEOUT_MAX_MS);
            config
                .set_override(
                    ClientRole::Producer,
                    "transaction.timeout.ms",
                    &ms.to_string(),
                )
                .with_context(|| format!("{label}: setting transaction.timeout.ms"))?;
        }
        let producer = Producer::connect_transactional(&config, &settings.transactional_id)
            .await
            .with_context(|| {
                format!(
                    "{label}: starting its transactional producer (transactional.id '{}')",
                    settings.transactional_id
                )
            })?;
        let failure = Arc::new(Mutex::new(None));
        let txn = Arc::new(Txn {
            producer,
            tracker,
            open: tokio::sync::Mutex::new(OpenTxn::default()),
            full: Notify::new(),
            failure: Arc::clone(&failure),
            on_failure: Mutex::new(Some(on_failure)),
            label,
            settings,
        });
        let close = CancellationToken::new();
        let committer = tokio::spawn(run_commits(Arc::clone(&txn), close.clone()));
        Ok((
            KafkaSourceOutput {
                admin: Arc::clone(&clients.admin),
                creation,
                ensured: tokio::sync::Mutex::new(HashSet::new()),
                failure,
                mode: Mode::Transactional {
                    txn,
                    _close: close.drop_guard(),
                },
            },
            committer,
        ))
    }

    /// Whether records go out in Kafka transactions.
    pub fn is_transactional(&self) -> bool {
        matches!(self.mode, Mode::Transactional { .. })
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
    /// source offset it carries) before it is sent. In transactional mode
    /// the record joins the open transaction (one is begun if none is).
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
        let (producer, acks) = match &self.mode {
            Mode::Idempotent { producer, acks } => (producer, acks),
            Mode::Transactional { txn, .. } => {
                return txn.send(tracker, Some(&record), offset).await;
            }
        };
        let seq = tracker.dispatch(&[PRODUCER], offset);
        let delivery = producer
            .send(&record)
            .await
            .with_context(|| format!("producing to Kafka topic '{}'", record.topic))?;
        if acks.send((seq, delivery)).await.is_err() {
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

    /// Registers a source offset that comes without a record (an
    /// offset-only marker, e.g. a filtered record's). Without transactions
    /// it is delivered as soon as every record before it is; in
    /// transactional mode it is written to the offsets topic with the open
    /// transaction (one is begun if none is), so the offset moves only
    /// together with the records before it.
    pub async fn send_offset(
        &self,
        tracker: &DeliveryTracker,
        offset: Option<&Arc<SourceOffset>>,
    ) -> anyhow::Result<()> {
        match &self.mode {
            Mode::Transactional { txn, .. } if offset.is_some() => {
                if let Some(f) = self.failed() {
                    anyhow::bail!("{f}");
                }
                txn.send(tracker, None, offset).await
            }
            _ => {
                tracker.dispatch(&[], offset);
                Ok(())
            }
        }
    }
}

/// Records per transaction with `transaction.boundary=poll`: Sluice's
/// sources push records rather than being polled, so a "poll" ends at this
/// many records (Debezium's default `max.batch.size`) or at the worker's
/// `offset.flush.interval.ms`, whichever comes first.
pub const POLL_MAX_RECORDS: usize = 2048;

/// Bounds of the `transaction.timeout.ms` Sluice sets (twice the commit
/// interval) unless `producer.transaction.timeout.ms` is given: the client
/// default, and the brokers' default `transaction.max.timeout.ms`.
const TXN_TIMEOUT_MIN_MS: u128 = 60_000;
const TXN_TIMEOUT_MAX_MS: u128 = 900_000;

/// How often a commit that did not complete in time is tried again before
/// the transaction is aborted.
const COMMIT_RETRIES: u32 = 3;

/// `transactional.id` of a source task's producer, as Kafka Connect names it:
/// `<group.id>-<connector>-<task id>`.
pub fn transactional_id(group_id: &str, connector: &str, task_id: u32) -> String {
    format!("{group_id}-{connector}-{task_id}")
}

/// A source connector's `transaction.boundary`, as far as Sluice supports
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionBoundary {
    /// `poll` (the default): a transaction per [`POLL_MAX_RECORDS`] records
    /// or per `offset.flush.interval.ms`, whichever comes first.
    Poll,
    /// `interval`: a transaction per `transaction.boundary.interval.ms`
    /// (None: the worker's `offset.flush.interval.ms`).
    Interval(Option<Duration>),
}

impl TransactionBoundary {
    /// Reads `transaction.boundary` and `transaction.boundary.interval.ms`.
    /// `connector` is refused: in Kafka Connect it needs a connector that
    /// defines its own transactions, which Sluice's PostgreSQL source does
    /// not (Kafka Connect refuses it for such connectors too).
    pub fn from_connector_props(props: &Props) -> anyhow::Result<TransactionBoundary> {
        const KEY: &str = "transaction.boundary";
        const INTERVAL: &str = "transaction.boundary.interval.ms";
        let boundary = props
            .get(KEY)
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "poll".to_string());
        let interval = match props.get(INTERVAL).map(|v| v.trim()) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|ms| *ms >= 1)
                    .map(Duration::from_millis)
                    .with_context(|| {
                        format!("'{INTERVAL}' must be a positive number of milliseconds, not '{v}'")
                    })?,
            ),
        };
        match boundary.as_str() {
            "poll" => {
                if interval.is_some() {
                    tracing::warn!("'{INTERVAL}' has no effect with '{KEY}=poll'");
                }
                Ok(TransactionBoundary::Poll)
            }
            "interval" => Ok(TransactionBoundary::Interval(interval)),
            "connector" => anyhow::bail!(
                "'{KEY}=connector' is not supported: the connector does not define its own \
                 transaction boundaries; use 'poll' (the default) or 'interval'"
            ),
            other => anyhow::bail!(
                "'{KEY}' must be one of poll, interval, connector (not supported), not '{other}'"
            ),
        }
    }
}

/// How a source task's transactions are named and ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnSettings {
    /// The producer's `transactional.id` (see [`transactional_id`]).
    pub transactional_id: String,
    /// The worker's `offset.storage.topic`, where source offsets go inside
    /// each transaction.
    pub offsets_topic: String,
    /// The connector's name (the first element of offset keys).
    pub connector: String,
    /// The task's id (for messages).
    pub task_id: u32,
    /// How often the open transaction is committed.
    pub commit_interval: Duration,
    /// Commit as soon as this many records are in the open transaction
    /// (None: only at the interval).
    pub max_records: Option<usize>,
}

impl TxnSettings {
    /// Settings of task `task_id` of `connector` in the worker group
    /// `group_id`, for the connector's `boundary` and the worker's
    /// `offset.flush.interval.ms`.
    pub fn new(
        group_id: &str,
        connector: &str,
        task_id: u32,
        offsets_topic: &str,
        boundary: TransactionBoundary,
        offset_flush_interval: Duration,
    ) -> TxnSettings {
        let (commit_interval, max_records) = match boundary {
            TransactionBoundary::Poll => (offset_flush_interval, Some(POLL_MAX_RECORDS)),
            TransactionBoundary::Interval(i) => (i.unwrap_or(offset_flush_interval), None),
        };
        TxnSettings {
            transactional_id: transactional_id(group_id, connector, task_id),
            offsets_topic: offsets_topic.to_string(),
            connector: connector.to_string(),
            task_id,
            commit_interval,
            max_records,
        }
    }
}

/// Told the task's failure.
type OnFailure = Box<dyn FnOnce(String) + Send>;

/// A source task's transactional producer and its open transaction.
struct Txn {
    producer: TransactionalProducer,
    settings: TxnSettings,
    /// The task's tracker: records are acknowledged to it after commits.
    tracker: Arc<DeliveryTracker>,
    /// Held by `send` while a record joins the transaction and by the
    /// commit for its whole length, so nothing joins between the offset
    /// records and the commit.
    open: tokio::sync::Mutex<OpenTxn>,
    /// Told when the open transaction reached `max_records`.
    full: Notify,
    failure: Arc<Mutex<Option<String>>>,
    on_failure: Mutex<Option<OnFailure>>,
    /// "source connector 'x' task n".
    label: String,
}

/// What the open transaction holds.
#[derive(Default)]
struct OpenTxn {
    begun: bool,
    /// Records and offset-only markers that joined it.
    pending: usize,
    /// The tracker sequence of the last of them.
    last_seq: u64,
    /// The latest source offset per source partition, by offsets-topic key.
    offsets: BTreeMap<String, Arc<SourceOffset>>,
    deliveries: Vec<Delivery>,
}

impl Txn {
    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the task's failure and tells the worker (once).
    fn fail(&self, msg: String) {
        tracing::error!("{msg}");
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(msg.clone());
        let told = self
            .on_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tell) = told {
            tell(msg);
        }
    }

    /// How a producer error reads in the task's failure.
    fn describe(&self, what: &str, e: &sluice_kafka::Error) -> String {
        match e {
            sluice_kafka::Error::Fenced { op, reason, .. } => format!(
                "fenced: another worker took over task {}-{} (a newer producer registered \
                 transactional.id '{}'; {what}: {op}: {reason})",
                self.settings.connector, self.settings.task_id, self.settings.transactional_id
            ),
            _ => format!("{}: {what}: {e}", self.label),
        }
    }

    /// Adds a record (or, with `record` None, only `offset`) to the open
    /// transaction.
    async fn send(
        &self,
        tracker: &DeliveryTracker,
        record: Option<&Record>,
        offset: Option<&Arc<SourceOffset>>,
    ) -> anyhow::Result<()> {
        let mut open = self.open.lock().await;
        // A commit may have failed while this waited for the lock.
        if let Some(f) = self.failed() {
            anyhow::bail!("{f}");
        }
        if !open.begun {
            self.producer
                .begin()
                .map_err(|e| anyhow::anyhow!(self.describe("beginning a transaction", &e)))?;
            open.begun = true;
        }
        let seq = tracker.dispatch(&[PRODUCER], offset);
        if let Some(record) = record {
            let delivery = self.producer.send(record).await.map_err(|e| {
                anyhow::anyhow!(
                    self.describe(&format!("producing to Kafka topic '{}'", record.topic), &e)
                )
            })?;
            open.deliveries.push(delivery);
        }
        open.last_seq = seq;
        open.pending += 1;
        if let Some(o) = offset {
            open.offsets.insert(
                entry_key(&self.settings.connector, &o.partition),
                Arc::clone(o),
            );
        }
        if self
            .settings
            .max_records
            .is_some_and(|max| open.pending >= max.max(1))
        {
            self.full.notify_one();
        }
        Ok(())
    }

    /// Writes the open transaction's source offsets to the offsets topic,
    /// commits it, then acknowledges its records to the tracker. On error
    /// the transaction is aborted when Kafka allows it; the returned
    /// message is the task's failure.
    async fn commit(&self) -> Result<(), String> {
        let mut open = self.open.lock().await;
        if !open.begun {
            return Ok(());
        }
        let offsets = std::mem::take(&mut open.offsets);
        for (key, offset) in offsets {
            let record = Record {
                topic: Arc::from(self.settings.offsets_topic.as_str()),
                partition: 0,
                offset: 0,
                timestamp_ms: 0,
                key: Some(key.into_bytes()),
                value: Some(
                    serde_json::Value::Object(offset.offset.clone())
                        .to_string()
                        .into_bytes(),
                ),
                headers: Vec::new(),
            };
            match self.producer.send(&record).await {
                Ok(d) => open.deliveries.push(d),
                Err(e) => {
                    let what = format!(
                        "writing source offsets to '{}'",
                        self.settings.offsets_topic
                    );
                    return Err(self.abandon(&what, e).await);
                }
            }
        }
        let mut retries = 0;
        loop {
            match self.producer.commit().await {
                Ok(()) => break,
                Err(e @ sluice_kafka::Error::TxnRetriable { .. }) if retries < COMMIT_RETRIES => {
                    retries += 1;
                    tracing::warn!("{}: {e}; retrying ({retries}/{COMMIT_RETRIES})", self.label);
                }
                Err(e) => {
                    // librdkafka's commit error only says that deliveries
                    // failed; the first one says which and why.
                    let what = match first_failed_delivery(&mut open.deliveries) {
                        Some(cause) => format!("committing the transaction ({cause})"),
                        None => "committing the transaction".to_string(),
                    };
                    return Err(self.abandon(&what, e).await);
                }
            }
        }
        // All resolved by the commit (it flushes); a failure here would
        // contradict it, so nothing is acknowledged then.
        for delivery in std::mem::take(&mut open.deliveries) {
            if let Err(e) = delivery.await {
                return Err(format!(
                    "{}: a record of a committed transaction reports a failed delivery: {e}",
                    self.label
                ));
            }
        }
        self.tracker.ack(PRODUCER, open.last_seq);
        tracing::debug!(
            "{}: committed a transaction of {} record(s)",
            self.label,
            open.pending
        );
        *open = OpenTxn::default();
        Ok(())
    }

    /// Aborts the open transaction after `e` (unless the producer can no
    /// longer abort) and says what happened.
    async fn abandon(&self, what: &str, e: sluice_kafka::Error) -> String {
        let msg = self.describe(what, &e);
        if matches!(
            e,
            sluice_kafka::Error::Fenced { .. } | sluice_kafka::Error::TxnFatal { .. }
        ) {
            // The coordinator aborts a fenced producer's transaction; a
            // fatal one cannot abort.
            return msg;
        }
        match self.producer.abort().await {
            Ok(()) => format!(
                "{msg}; the transaction was aborted (the task restarts from its last committed offset)"
            ),
            Err(abort) => format!(
                "{msg}; aborting the transaction failed too: {}",
                self.describe("aborting", &abort)
            ),
        }
    }
}

/// The error of the first delivery that already failed, if any.
fn first_failed_delivery(deliveries: &mut [Delivery]) -> Option<String> {
    deliveries
        .iter_mut()
        .find_map(|d| match futures::FutureExt::now_or_never(d) {
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        })
}

/// Ends `txn`'s transactions as its settings say until `close` (then
/// commits what is pending and ends) or until a commit fails.
async fn run_commits(txn: Arc<Txn>, close: CancellationToken) {
    let period = txn.settings.commit_interval.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            biased;
            _ = close.cancelled() => true,
            _ = txn.full.notified() => {
                tick.reset();
                false
            }
            _ = tick.tick() => false,
        };
        if txn.failed().is_some() {
            return;
        }
        if let Err(msg) = txn.commit().await {
            txn.fail(msg);
            return;
        }
        if last {
            return;
        }
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
        Subscription::Regex(r) => {
            // The connector's regex is anchored as `^(?:<topics.regex>)$` for
            // whole-name matching; librdkafka's POSIX regexes know no `(?:`
            // (subscribing failed with "Invalid argument"), and the Kafka
            // client anchors the user's pattern itself.
            let text = r.as_str();
            let user = text
                .strip_prefix("^(?:")
                .and_then(|t| t.strip_suffix(")$"))
                .unwrap_or(text);
            sluice_kafka::Subscription::Regex(user.to_string())
        }
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
    // A task that batches itself writes its batches when told to; that
    // can take a few round trips to the external system.
    let revoke_wait = driver.policy.interval + Duration::from_secs(30);
    let flush_now = Arc::clone(&driver.flush_now);
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
                    // interval, or now when the task batches itself), then
                    // hand over what is durable.
                    flush_now.notify_one();
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

    #[test]
    fn topics_regex_reaches_the_consumer_without_the_matcher_anchors() {
        let anchored = regex::Regex::new(r"^(?:bench\..*|other)$").expect("regex");
        assert_eq!(
            consumer_subscription(&Subscription::Regex(anchored)),
            sluice_kafka::Subscription::Regex(r"bench\..*|other".to_string())
        );
        let bare = regex::Regex::new("orders.*").expect("regex");
        assert_eq!(
            consumer_subscription(&Subscription::Regex(bare)),
            sluice_kafka::Subscription::Regex("orders.*".to_string())
        );
    }

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
    fn transaction_boundaries_and_settings() {
        let props = |kv: &[(&str, &str)]| -> Props {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let flush = Duration::from_secs(60);
        let poll = TransactionBoundary::from_connector_props(&Props::new()).unwrap();
        assert_eq!(poll, TransactionBoundary::Poll);
        let s = TxnSettings::new("cluster", "pg", 3, "connect-offsets", poll, flush);
        assert_eq!(s.transactional_id, "cluster-pg-3");
        assert_eq!(s.commit_interval, flush);
        assert_eq!(s.max_records, Some(POLL_MAX_RECORDS));

        let interval = TransactionBoundary::from_connector_props(&props(&[
            ("transaction.boundary", " Interval "),
            ("transaction.boundary.interval.ms", "2500"),
        ]))
        .unwrap();
        assert_eq!(
            interval,
            TransactionBoundary::Interval(Some(Duration::from_millis(2500)))
        );
        let s = TxnSettings::new("cluster", "pg", 0, "connect-offsets", interval, flush);
        assert_eq!(s.commit_interval, Duration::from_millis(2500));
        assert_eq!(s.max_records, None);
        // Without its own interval, `interval` takes offset.flush.interval.ms.
        let bare = TransactionBoundary::from_connector_props(&props(&[(
            "transaction.boundary",
            "interval",
        )]))
        .unwrap();
        let s = TxnSettings::new("cluster", "pg", 0, "connect-offsets", bare, flush);
        assert_eq!(s.commit_interval, flush);

        for (kv, needle) in [
            (
                vec![("transaction.boundary", "connector")],
                "'transaction.boundary=connector' is not supported",
            ),
            (vec![("transaction.boundary", "batch")], "not 'batch'"),
            (
                vec![
                    ("transaction.boundary", "interval"),
                    ("transaction.boundary.interval.ms", "0"),
                ],
                "'transaction.boundary.interval.ms' must be a positive number",
            ),
        ] {
            let err = TransactionBoundary::from_connector_props(&props(&kv))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
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
