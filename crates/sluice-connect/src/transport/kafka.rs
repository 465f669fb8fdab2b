//! The Kafka transport, used when the worker has `bootstrap.servers`.
//!
//! Source side: a source task's records are converted by its connector's
//! converters, then produced with the idempotent producer (the key picks the
//! partition). A record counts as delivered when the broker acknowledged it;
//! deliveries of different partitions can complete out of order, so they are
//! acknowledged to the task's [`DeliveryTracker`] strictly in order
//! ([`InOrderAcks`]): an offset is committed only once every earlier record
//! is stored in Kafka. Topics are created when missing with the connector's
//! `topic.creation.default.*` settings.
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
//! Sink side: each sink task consumes as group `connect-<connector>`
//! ([`KafkaInput`]); the sink driver commits what its sink made durable,
//! and on revocation hands the revoked partitions over with their final
//! positions.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sluice_core::config::Props;
use sluice_core::error::{definite, transient};
use sluice_core::record::{Record, SourceOffset};
use sluice_kafka::{
    static_member_id, Admin, ClientRole, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions,
    Delivery, KafkaConfig, Producer, Revocation, TransactionalProducer,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    InRecord, OnFailure, OutRecord, Outgoing, Polled, RecordForm, SinkInput, SinkInputSpec,
    SourceOutput, SourceOutputSpec, TopicPartition, Transport,
};
use crate::connector_config::Subscription;
use crate::delivery::{Completion, DeliveryTracker, InOrderAcks};
use crate::offsets::entry_key;

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

/// The exactly-once settings of a distributed worker with
/// `exactly.once.source.support=enabled`.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    /// The worker's `group.id`.
    pub group_id: String,
    /// The worker's `offset.storage.topic`.
    pub offsets_topic: String,
    /// The worker's `offset.flush.interval.ms`.
    pub commit_interval: Duration,
}

/// The Kafka transport.
pub struct KafkaTransport {
    clients: KafkaClients,
    exactly_once: Option<ExactlyOnce>,
}

impl KafkaTransport {
    /// A transport over connected `clients`; with `exactly_once`, source
    /// tasks write in transactions.
    pub fn new(clients: KafkaClients, exactly_once: Option<ExactlyOnce>) -> Self {
        KafkaTransport {
            clients,
            exactly_once,
        }
    }

    /// The worker's clients.
    pub fn clients(&self) -> &KafkaClients {
        &self.clients
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    fn describe(&self) -> String {
        self.clients.config.to_string()
    }

    async fn source_output(&self, spec: SourceOutputSpec) -> anyhow::Result<Box<dyn SourceOutput>> {
        let label = format!(
            "source connector '{}' task {}",
            spec.connector, spec.task_id
        );
        let creation = TopicCreation::from_connector_props(&spec.props).map_err(definite)?;
        let overridden = client_overrides(&self.clients.config, &spec.props, ClientRole::Producer)
            .map_err(definite)?;
        let mut clients = self.clients.clone();
        if !Arc::ptr_eq(&overridden, &self.clients.config) {
            clients.producer = Producer::connect(&overridden)
                .await
                .map_err(|e| transient(anyhow::Error::new(e)))
                .with_context(|| format!("{label}: its producer (producer.override.*)"))?;
            clients.config = overridden;
        }
        match &self.exactly_once {
            Some(eos) => {
                let boundary =
                    TransactionBoundary::from_connector_props(&spec.props).map_err(definite)?;
                let settings = TxnSettings::new(
                    &eos.group_id,
                    &spec.connector,
                    spec.task_id,
                    &eos.offsets_topic,
                    boundary,
                    eos.commit_interval,
                );
                let id = settings.transactional_id.clone();
                let out = KafkaSourceOutput::new_transactional(
                    &clients,
                    creation,
                    spec.tracker,
                    spec.on_failure,
                    settings,
                )
                .await
                .map_err(transient)?;
                tracing::info!(
                    "{label}: exactly-once: records and offsets in transactions of transactional.id '{id}'"
                );
                Ok(Box::new(out))
            }
            None => Ok(Box::new(KafkaSourceOutput::new(
                &clients,
                creation,
                spec.tracker,
                spec.on_failure,
            ))),
        }
    }

    async fn sink_input(&self, spec: SinkInputSpec) -> anyhow::Result<Box<dyn SinkInput>> {
        let label = format!("sink connector '{}' task {}", spec.connector, spec.task_id);
        let config = client_overrides(&self.clients.config, &spec.props, ClientRole::Consumer)
            .map_err(definite)?;
        // With `consumer.group.instance.id` set, a static member per task:
        // a worker restarted after a crash reads its partitions at once
        // (`Consumer::join` falls back to dynamic membership on brokers
        // without it). Not the default: see `static_member_id`.
        let member = format!("connect-{}-{}", spec.connector, spec.task_id);
        let options = ConsumerOptions {
            settings: static_member_id(&config, &member)
                .map(|id| vec![("group.instance.id".to_string(), id)])
                .unwrap_or_default(),
            ..ConsumerOptions::default()
        };
        let consumer = Consumer::subscribe(
            &config,
            &spec.connector,
            consumer_subscription(&spec.subscription),
            options,
        )
        .await
        .map_err(|e| transient(anyhow::Error::new(e)))
        .with_context(|| format!("{label}: joining consumer group"))?;
        Ok(Box::new(KafkaInput {
            consumer: Some(consumer),
            revoked: None,
            label,
        }))
    }
}

/// Records in one consumer event from which more are assumed to be
/// waiting.
const FULL_POLL: usize = 500;

/// A sink task's consumer.
struct KafkaInput {
    consumer: Option<Consumer>,
    /// A revocation announced and not yet released.
    revoked: Option<Revocation>,
    label: String,
}

fn kafka_tp(tp: &TopicPartition) -> sluice_kafka::TopicPartition {
    sluice_kafka::TopicPartition {
        topic: Arc::clone(&tp.topic),
        partition: tp.partition,
    }
}

fn commit_offsets(positions: &[(TopicPartition, i64)]) -> CommitOffsets {
    let mut offsets = CommitOffsets::new();
    for (tp, off) in positions {
        offsets.set(kafka_tp(tp), *off);
    }
    offsets
}

#[async_trait]
impl SinkInput for KafkaInput {
    async fn poll(&mut self) -> anyhow::Result<Option<Polled>> {
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        loop {
            match consumer.next_event().await {
                None => return Ok(None),
                Some(ConsumerEvent::Records(records)) => {
                    // A full fetch batch: more is likely waiting.
                    let more = records.len() >= FULL_POLL;
                    return Ok(Some(Polled::Records {
                        records: records.into_iter().map(InRecord::Serialized).collect(),
                        more,
                    }));
                }
                Some(ConsumerEvent::Assigned(parts)) => {
                    tracing::info!("{}: assigned {} partition(s)", self.label, parts.len());
                }
                Some(ConsumerEvent::Revoked(rev)) => {
                    let parts = rev
                        .partitions
                        .iter()
                        .map(|tp| TopicPartition {
                            topic: Arc::clone(&tp.topic),
                            partition: tp.partition,
                        })
                        .collect();
                    if let Some(old) = self.revoked.replace(rev) {
                        old.release(CommitOffsets::new());
                    }
                    return Ok(Some(Polled::Revoked(parts)));
                }
            }
        }
    }

    async fn commit(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()> {
        let Some(consumer) = self.consumer.as_ref() else {
            return Ok(());
        };
        if positions.is_empty() {
            return Ok(());
        }
        consumer
            .commit(&commit_offsets(positions))
            .await
            .map_err(|e| transient(anyhow::Error::new(e)))
            .with_context(|| format!("{}: committing Kafka offsets", self.label))
    }

    async fn release(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()> {
        if let Some(rev) = self.revoked.take() {
            tracing::info!(
                "{}: releasing {} partition(s)",
                self.label,
                rev.partitions.len()
            );
            rev.release(commit_offsets(positions));
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(rev) = self.revoked.take() {
            rev.release(CommitOffsets::new());
        }
        if let Some(c) = self.consumer.take() {
            c.close().await;
        }
    }
}

/// The worker's Kafka settings with a connector's `producer.override.*` or
/// `consumer.override.*` applied (the same Arc when it has none).
pub fn client_overrides(
    base: &Arc<KafkaConfig>,
    props: &Props,
    role: ClientRole,
) -> anyhow::Result<Arc<KafkaConfig>> {
    let prefix = match role {
        ClientRole::Producer => "producer.override.",
        ClientRole::Consumer => "consumer.override.",
        ClientRole::Admin => "admin.override.",
    };
    let mut overrides = props
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k, v)))
        .peekable();
    if overrides.peek().is_none() {
        return Ok(Arc::clone(base));
    }
    let mut cfg = (**base).clone();
    for (k, v) in overrides {
        cfg.set_override(role, k, v)
            .map_err(|e| anyhow::anyhow!("'{prefix}{k}': {e}"))?;
    }
    Ok(Arc::new(cfg))
}

/// One source task's way into Kafka.
pub struct KafkaSourceOutput {
    admin: Arc<Admin>,
    creation: TopicCreation,
    ensured: tokio::sync::Mutex<HashSet<Arc<str>>>,
    tracker: Arc<DeliveryTracker>,
    mode: Mode,
}

enum Mode {
    /// Records count as delivered once acknowledged by the brokers.
    Idempotent {
        producer: Producer,
        acks: Mutex<Option<InOrderAcks>>,
        acker: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    },
    /// Records count as delivered once their transaction is committed.
    Transactional {
        txn: Arc<Txn>,
        /// Dropped at close: the commit loop commits what is pending and
        /// ends.
        close: Mutex<Option<DropGuard>>,
        committer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    },
}

impl KafkaSourceOutput {
    /// The output of a source task whose deliveries `tracker` records.
    /// `on_failure` is told the first delivery failure at once (the task
    /// may not send again for a while).
    pub fn new(
        clients: &KafkaClients,
        creation: TopicCreation,
        tracker: Arc<DeliveryTracker>,
        on_failure: OnFailure,
    ) -> KafkaSourceOutput {
        let (acks, acker) = InOrderAcks::start(Arc::clone(&tracker), on_failure);
        KafkaSourceOutput {
            admin: Arc::clone(&clients.admin),
            creation,
            ensured: tokio::sync::Mutex::new(HashSet::new()),
            tracker,
            mode: Mode::Idempotent {
                producer: clients.producer.clone(),
                acks: Mutex::new(Some(acks)),
                acker: tokio::sync::Mutex::new(Some(acker)),
            },
        }
    }

    /// The exactly-once output of a source task (KIP-618): connects the
    /// task's own transactional producer (fencing any earlier one with the
    /// same `transactional.id`, whose open transaction is then aborted) and
    /// spawns the loop that ends each transaction as `settings` say.
    ///
    /// A record is acknowledged to `tracker` only after its transaction
    /// committed, together with the offsets-topic records of the source
    /// offsets it covers. `on_failure` is told at once when a commit fails
    /// (the transaction is then aborted when Kafka allows it, or was
    /// aborted by the coordinator when the producer was fenced); the source
    /// restarts from the last committed offset, and the aborted records are
    /// invisible to `read_committed` consumers. The offsets topic must
    /// exist.
    pub async fn new_transactional(
        clients: &KafkaClients,
        creation: TopicCreation,
        tracker: Arc<DeliveryTracker>,
        on_failure: OnFailure,
        settings: TxnSettings,
    ) -> anyhow::Result<KafkaSourceOutput> {
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
        let txn = Arc::new(Txn {
            producer,
            tracker: Arc::clone(&tracker),
            open: tokio::sync::Mutex::new(OpenTxn::default()),
            full: Notify::new(),
            failure: Mutex::new(None),
            on_failure: Mutex::new(Some(on_failure)),
            label,
            settings,
        });
        let close = CancellationToken::new();
        let committer = tokio::spawn(run_commits(Arc::clone(&txn), close.clone()));
        Ok(KafkaSourceOutput {
            admin: Arc::clone(&clients.admin),
            creation,
            ensured: tokio::sync::Mutex::new(HashSet::new()),
            tracker,
            mode: Mode::Transactional {
                txn,
                close: Mutex::new(Some(close.drop_guard())),
                committer: tokio::sync::Mutex::new(Some(committer)),
            },
        })
    }

    /// Whether records go out in Kafka transactions.
    pub fn is_transactional(&self) -> bool {
        matches!(self.mode, Mode::Transactional { .. })
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
            .map_err(|e| transient(anyhow::Error::new(e)))
            .with_context(|| format!("creating Kafka topic '{topic}'"))?;
        tracing::debug!(topic = %topic, ?state, "Kafka topic ready");
        ensured.insert(Arc::clone(topic));
        Ok(())
    }

    /// Produces one converted record (or with None only registers
    /// `offset`), registered with the tracker before it is sent. In
    /// transactional mode the record and the offset join the open
    /// transaction (one is begun if none is).
    async fn send_one(
        &self,
        record: Option<&Record>,
        offset: Option<&Arc<SourceOffset>>,
    ) -> anyhow::Result<()> {
        if let Some(r) = record {
            self.ensure_topic(&r.topic).await?;
        }
        match &self.mode {
            Mode::Transactional { txn, .. } => {
                if record.is_none() && offset.is_none() {
                    self.tracker.dispatch(None);
                    return Ok(());
                }
                txn.send(record, offset).await
            }
            Mode::Idempotent { producer, acks, .. } => {
                let acks = acks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                    .ok_or_else(|| definite(anyhow::anyhow!("the output is closed")))?;
                let seq = self.tracker.dispatch(offset);
                let done: Completion = match record {
                    None => Box::pin(async { Ok(()) }),
                    Some(r) => {
                        let topic = Arc::clone(&r.topic);
                        let delivery = producer
                            .send(r)
                            .await
                            .map_err(|e| transient(anyhow::Error::new(e)))
                            .with_context(|| format!("producing to Kafka topic '{topic}'"))?;
                        Box::pin(async move {
                            delivery.await.map(|_| ()).map_err(|e| {
                                transient(anyhow::Error::new(e))
                                    .context(format!("producing to Kafka topic '{topic}'"))
                            })
                        })
                    }
                };
                acks.push(seq, done)
                    .await
                    .map_err(|e| transient(anyhow::anyhow!("producing to Kafka: {e}")))
            }
        }
    }
}

#[async_trait]
impl SourceOutput for KafkaSourceOutput {
    fn form(&self) -> RecordForm {
        RecordForm::Serialized
    }

    async fn send(&self, batch: Vec<Outgoing>) -> anyhow::Result<()> {
        if let Mode::Transactional { txn, .. } = &self.mode {
            if let Some(f) = txn.failed() {
                return Err(definite(anyhow::anyhow!("{f}")));
            }
        }
        for o in batch {
            match o.record {
                None => self.send_one(None, o.offset.as_ref()).await?,
                Some(OutRecord::Serialized(r)) => self.send_one(Some(&r), o.offset.as_ref()).await?,
                Some(OutRecord::Structured(r)) => {
                    return Err(definite(anyhow::anyhow!(
                        "the Kafka transport takes records converted by the connector's converters, got a structured one for topic '{}'",
                        r.topic
                    )))
                }
            }
        }
        Ok(())
    }

    fn stores_offsets(&self) -> bool {
        self.is_transactional()
    }

    async fn close(&self, grace: Duration) {
        match &self.mode {
            Mode::Idempotent {
                producer,
                acks,
                acker,
            } => {
                if let Err(e) = producer.flush(grace).await {
                    tracing::warn!("flushing the Kafka producer: {e}");
                }
                acks.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(h) = acker.lock().await.take() {
                    let abort = h.abort_handle();
                    if tokio::time::timeout(grace, h).await.is_err() {
                        abort.abort();
                    }
                }
            }
            Mode::Transactional {
                close, committer, ..
            } => {
                close.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(h) = committer.lock().await.take() {
                    let abort = h.abort_handle();
                    if tokio::time::timeout(grace, h).await.is_err() {
                        abort.abort();
                    }
                }
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
    failure: Mutex<Option<String>>,
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

    /// Records the task's failure and tells the worker (once). A fenced
    /// producer means another worker runs the task now: retrying here
    /// would only fence it back, so that failure is definite.
    fn fail(&self, msg: String, fenced: bool) {
        tracing::error!("{msg}");
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(msg.clone());
        let told = self
            .on_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tell) = told {
            let e = anyhow::anyhow!(msg);
            tell(if fenced { definite(e) } else { transient(e) });
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
        record: Option<&Record>,
        offset: Option<&Arc<SourceOffset>>,
    ) -> anyhow::Result<()> {
        let mut open = self.open.lock().await;
        // A commit may have failed while this waited for the lock.
        if let Some(f) = self.failed() {
            return Err(definite(anyhow::anyhow!("{f}")));
        }
        if !open.begun {
            self.producer.begin().map_err(|e| {
                transient(anyhow::anyhow!(self.describe("beginning a transaction", &e)))
            })?;
            open.begun = true;
        }
        let seq = self.tracker.dispatch(offset);
        if let Some(record) = record {
            let delivery = self.producer.send(record).await.map_err(|e| {
                transient(anyhow::anyhow!(self.describe(
                    &format!("producing to Kafka topic '{}'", record.topic),
                    &e
                )))
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
    async fn commit(&self) -> Result<(), (String, bool)> {
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
                    let fenced = matches!(e, sluice_kafka::Error::Fenced { .. });
                    return Err((self.abandon(&what, e).await, fenced));
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
                    let fenced = matches!(e, sluice_kafka::Error::Fenced { .. });
                    return Err((self.abandon(&what, e).await, fenced));
                }
            }
        }
        // All resolved by the commit (it flushes); a failure here would
        // contradict it, so nothing is acknowledged then.
        for delivery in std::mem::take(&mut open.deliveries) {
            if let Err(e) = delivery.await {
                return Err((
                    format!(
                        "{}: a record of a committed transaction reports a failed delivery: {e}",
                        self.label
                    ),
                    false,
                ));
            }
        }
        self.tracker.ack(open.last_seq);
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
        if let Err((msg, fenced)) = txn.commit().await {
            txn.fail(msg, fenced);
            return;
        }
        if last {
            return;
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

#[cfg(test)]
mod tests {
    use super::*;

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
