//! A sink task's consumer: group `connect-<connector>`, manual commits of
//! what the sink made durable, and rebalance events that let the worker
//! flush and commit before a partition is given up.
//!
//! A dedicated thread polls librdkafka and hands [`ConsumerEvent`]s to the
//! async side through a bounded channel (back-pressure: when the worker
//! falls behind, the thread waits). On revocation the thread first hands
//! over the records it already polled, then a [`Revocation`], and waits for
//! the worker to answer with the offsets to commit before librdkafka gives
//! the partitions up, as Kafka Connect does in `onPartitionsRevoked`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::record::{Header, Record};
use tokio::sync::mpsc;

use crate::config::{ClientRole, KafkaConfig};
use crate::context::{probe, SluiceContext};
use crate::error::{Error, Result};

/// Consumer defaults, each overridable with `consumer.<key>`: Kafka Connect
/// starts sink tasks from the earliest offset when the group has none.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    // A member that died (kill -9) is noticed after its session times out;
    // librdkafka's 45 s would leave its partitions unread that long. Ten
    // seconds, with heartbeats every three, is Kafka Connect's worker
    // setting and still tolerates a long pause.
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "3000"),
    // Prefetch at most 16 MiB per consumer (librdkafka's default is 64 MiB,
    // above the Java consumer's fetch.max.bytes of 50 MiB): a sink reading
    // behind Kafka keeps the worker's memory small, and 16 MiB is still
    // thousands of records ahead of the sink.
    ("queued.max.messages.kbytes", "16384"),
];

/// The `group.instance.id` (KIP-345 static membership) of the member
/// `name` (a sink task, a worker): `<prefix>-<name>` when the user set
/// `consumer.group.instance.id=<prefix>`, so each member has its own id,
/// and None (dynamic membership) when it is unset or empty.
///
/// A static member that restarts rejoins as the same member and gets its
/// partitions back at once; a dynamic one waits until the coordinator
/// times out the member it replaces (`session.timeout.ms`). The price: a
/// static member does not leave the group when it stops, so a member
/// stopped for good keeps its partitions until that timeout, and only if
/// the broker expires static members at all. Kafka does; not every
/// Kafka-compatible broker does (tansu 0.6 expires a silent member only
/// when a dynamic member of its group calls, so in a group of static
/// members a dead worker would hold its partitions for ever), which is why
/// it is not the default. [`Consumer::join`] also falls back to dynamic
/// membership when the brokers lack static membership altogether.
pub fn static_member_id(cfg: &KafkaConfig, name: &str) -> Option<String> {
    let prefix = cfg
        .override_value(ClientRole::Consumer, "group.instance.id")
        .map(str::trim)
        .filter(|p| !p.is_empty())?;
    let id = format!("{prefix}-{name}");
    // Kafka takes the characters of a topic name, at most 249 of them.
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if id.len() > 249 {
        // Cutting it short could give two members one id, and the broker
        // would fence one of them.
        tracing::warn!(
            "consumer.group.instance.id: the member id '{id}' is longer than Kafka's 249 characters; this member joins dynamically"
        );
        return None;
    }
    Some(id)
}

/// The first JoinGroup version with `group.instance.id` (KIP-345, Kafka
/// 2.3).
const STATIC_MEMBERSHIP_JOIN_GROUP: i16 = 5;

/// Whether the brokers at each `bootstrap.servers` support static
/// membership, as probed once per process (brokers are not expected to
/// lose it while a worker runs).
static STATIC_SUPPORT: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();

/// The highest JoinGroup version in a librdkafka `feature` debug line of
/// the ApiVersions answer (`ApiKey JoinGroup (11) Versions 0..9`).
fn join_group_max_version(line: &str) -> Option<i16> {
    let versions = line.split("ApiKey JoinGroup (11) Versions ").nth(1)?;
    let max = versions.split("..").nth(1)?;
    let digits: String = max.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Context of the client that asks the brokers for their API versions:
/// librdkafka does not expose them, but logs them with `debug=feature`.
struct ApiVersionProbe {
    base: SluiceContext,
    /// The lowest JoinGroup maximum of the brokers that answered.
    join_group: Mutex<Option<i16>>,
}

impl ClientContext for ApiVersionProbe {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Some(v) = join_group_max_version(message) {
            let mut seen = self.join_group.lock().unwrap_or_else(|e| e.into_inner());
            *seen = Some(seen.map_or(v, |s| s.min(v)));
        } else if !matches!(level, RDKafkaLogLevel::Debug) {
            // The debug lines asked for are not worth showing; warnings
            // and connection failures are.
            self.base.log(level, fac, message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
}

impl ConsumerContext for ApiVersionProbe {}

/// The JoinGroup version the brokers of `cfg` support (the lowest among
/// those that answered), None when librdkafka did not ask them (with
/// `api.version.request=false` and a `broker.version.fallback` before
/// 0.10 it assumes the API of that old version).
fn probe_join_group_version(cfg: &KafkaConfig) -> Result<Option<i16>> {
    let mut config = cfg.client_config(ClientRole::Consumer, &[], &[("debug", "feature")]);
    // A group-less client: it joins nothing, it only connects.
    config.remove("group.instance.id");
    config.set_log_level(RDKafkaLogLevel::Debug);
    let client: BaseConsumer<ApiVersionProbe> = config
        .create_with_context(ApiVersionProbe {
            base: SluiceContext::default(),
            join_group: Mutex::new(None),
        })
        .map_err(Error::kafka("consumer creation"))?;
    let ctx = client.context().clone();
    probe(
        |t| {
            let _ = client.poll(Duration::ZERO);
            client.fetch_metadata(None, t)
        },
        &ctx.base,
        cfg.bootstrap(),
        cfg.connect_timeout,
    )?;
    // The ApiVersions answer came before the metadata; the log lines about
    // it may still wait in the client's queue.
    let _ = client.poll(Duration::from_millis(100));
    let seen = *ctx.join_group.lock().unwrap_or_else(|e| e.into_inner());
    Ok(seen)
}

/// Whether the brokers of `cfg` support static membership (JoinGroup v5).
/// When they do not, librdkafka would drop `group.instance.id` from its
/// requests yet still skip the LeaveGroup of a static member on close, so
/// a cleanly stopped member would hold its partitions until its session
/// times out: such a member had better be dynamic. Says so once, in one
/// line.
async fn static_membership_supported(cfg: &KafkaConfig) -> Result<bool> {
    let cache = STATIC_SUPPORT.get_or_init(|| Mutex::new(HashMap::new()));
    let known = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(cfg.bootstrap())
        .copied();
    if let Some(known) = known {
        return Ok(known);
    }
    let probe_cfg = cfg.clone();
    let version = tokio::task::spawn_blocking(move || probe_join_group_version(&probe_cfg))
        .await
        .map_err(|_| Error::Closed("connect"))??;
    let supported = version.is_some_and(|v| v >= STATIC_MEMBERSHIP_JOIN_GROUP);
    let first = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cfg.bootstrap().to_string(), supported)
        .is_none();
    if !supported && first {
        let seen = version.map_or_else(
            || "did not tell their API versions".to_string(),
            |v| format!("support JoinGroup up to v{v}"),
        );
        tracing::warn!(
            "consumer.group.instance.id is ignored: the brokers at {} {seen}, and static membership needs v{STATIC_MEMBERSHIP_JOIN_GROUP} (Kafka 2.3+); consumers join their groups dynamically",
            cfg.bootstrap()
        );
    }
    Ok(supported)
}

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
}

/// What the consumer subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Connect's `topics`: a list of topic names.
    Topics(Vec<String>),
    /// Connect's `topics.regex`: topics whose whole name matches (a leading
    /// `^` and trailing `$` are optional).
    Regex(String),
}

impl Subscription {
    fn patterns(&self) -> Vec<String> {
        match self {
            Subscription::Topics(t) => t.clone(),
            Subscription::Regex(r) => {
                let r = r.strip_prefix('^').unwrap_or(r);
                let r = r.strip_suffix('$').unwrap_or(r);
                vec![format!("^({r})$")]
            }
        }
    }
}

/// Offsets to commit: per partition, the offset of the next record to read
/// (the last durable record's offset + 1), as Kafka stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOffsets {
    map: BTreeMap<TopicPartition, i64>,
}

impl CommitOffsets {
    /// No offsets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `record` (and everything before it in its partition)
    /// is durable.
    pub fn mark(&mut self, record: &Record) {
        let tp = TopicPartition {
            topic: record.topic.clone(),
            partition: record.partition,
        };
        let next = record.offset + 1;
        let e = self.map.entry(tp).or_insert(next);
        *e = (*e).max(next);
    }

    /// Sets the next offset to read for a partition.
    pub fn set(&mut self, tp: TopicPartition, next_offset: i64) {
        self.map.insert(tp, next_offset);
    }

    /// The next offset to read for a partition.
    pub fn get(&self, tp: &TopicPartition) -> Option<i64> {
        self.map.get(tp).copied()
    }

    /// Removes and returns the offsets of `partitions`.
    pub fn take(&mut self, partitions: &[TopicPartition]) -> CommitOffsets {
        let mut out = CommitOffsets::new();
        for tp in partitions {
            if let Some(o) = self.map.remove(tp) {
                out.map.insert(tp.clone(), o);
            }
        }
        out
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The offsets, by partition.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.map.iter().map(|(k, v)| (k, *v))
    }

    fn to_tpl(&self) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.map.len());
        for (tp, off) in &self.map {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off))
                .map_err(Error::kafka("commit"))?;
        }
        Ok(tpl)
    }
}

/// Partitions the consumer is about to give up. The worker flushes the
/// sink for them and answers with [`Revocation::release`]; the consumer
/// commits those offsets and only then lets the partitions go. Dropping it
/// releases the partitions without a commit.
#[derive(Debug)]
pub struct Revocation {
    /// The partitions being revoked.
    pub partitions: Vec<TopicPartition>,
    reply: std_mpsc::SyncSender<CommitOffsets>,
}

impl Revocation {
    /// Commits `offsets` (of the revoked partitions) and lets them go.
    pub fn release(self, offsets: CommitOffsets) {
        let _ = self.reply.send(offsets);
    }
}

/// What the consumer hands the worker, in order.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Records, in order per partition.
    Records(Vec<Record>),
    /// Partitions newly assigned to this consumer.
    Assigned(Vec<TopicPartition>),
    /// Partitions about to be revoked; every record of them polled before
    /// was handed over in earlier events.
    Revoked(Revocation),
}

/// Tuning of [`Consumer::subscribe`].
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Most records in one [`ConsumerEvent::Records`].
    pub max_batch: usize,
    /// Events buffered between the polling thread and the worker.
    pub buffered_events: usize,
    /// How long a revocation waits for the worker's answer before giving
    /// the partitions up without a commit.
    pub revoke_timeout: Duration,
    /// librdkafka settings applied over the user's `consumer.*` overrides
    /// (e.g. the assignment strategy of the worker group).
    pub settings: Vec<(String, String)>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            max_batch: 500,
            buffered_events: 4,
            revoke_timeout: Duration::from_secs(60),
            settings: Vec::new(),
        }
    }
}

struct SinkContext {
    base: SluiceContext,
    tx: mpsc::Sender<ConsumerEvent>,
    /// Records polled but not yet handed over (so a revocation can hand
    /// them over first).
    pending: Mutex<Vec<Record>>,
    revoke_timeout: Duration,
}

impl SinkContext {
    /// Hands `event` to the worker, waiting while the channel is full.
    /// False once the worker is gone, and never blocks an async runtime
    /// thread (the librdkafka consumer may be dropped, and its final
    /// revocation run, there).
    fn deliver(&self, event: ConsumerEvent) -> bool {
        if self.tx.is_closed() || tokio::runtime::Handle::try_current().is_ok() {
            return false;
        }
        self.tx.blocking_send(event).is_ok()
    }

    fn hand_over_pending(&self) -> bool {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        batch.is_empty() || self.deliver(ConsumerEvent::Records(batch))
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message)
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason)
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: Arc::from(e.topic()),
            partition: e.partition(),
        })
        .collect()
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = partitions_of(tpl);
        if partitions.is_empty() || !self.hand_over_pending() {
            return;
        }
        tracing::debug!(?partitions, "partitions being revoked");
        let (reply, answer) = std_mpsc::sync_channel(1);
        if !self.deliver(ConsumerEvent::Revoked(Revocation { partitions, reply })) {
            return;
        }
        match answer.recv_timeout(self.revoke_timeout) {
            Ok(offsets) if !offsets.is_empty() => {
                let r = offsets.to_tpl().and_then(|tpl| {
                    consumer
                        .commit(&tpl, CommitMode::Sync)
                        .map_err(Error::kafka("commit"))
                });
                if let Err(e) = r {
                    tracing::warn!("commit on revocation failed: {e}");
                }
            }
            Ok(_) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {}
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "the worker did not answer a revocation within {:?}; giving the partitions up without a commit",
                    self.revoke_timeout
                );
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl);
                tracing::debug!(?partitions, "partitions assigned");
                if !partitions.is_empty() && self.hand_over_pending() {
                    self.deliver(ConsumerEvent::Assigned(partitions));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }
}

pub(crate) fn to_record(m: &BorrowedMessage<'_>, topics: &mut HashMap<String, Arc<str>>) -> Record {
    let topic = match topics.get(m.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = Arc::from(m.topic());
            topics.insert(m.topic().to_string(), t.clone());
            t
        }
    };
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// A sink task's consumer.
pub struct Consumer {
    /// Shared with the polling thread, which normally drops the last
    /// reference (leaving the group there, not on an async thread).
    inner: Option<Arc<BaseConsumer<SinkContext>>>,
    events: mpsc::Receiver<ConsumerEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    group: String,
}

impl Consumer {
    /// Joins group `connect-<connector>` (Kafka Connect's sink group) and
    /// subscribes. Waits (at most `cfg.connect_timeout`) until the cluster
    /// answers.
    pub async fn subscribe(
        cfg: &KafkaConfig,
        connector: &str,
        subscription: Subscription,
        options: ConsumerOptions,
    ) -> Result<Consumer> {
        Consumer::join(cfg, &format!("connect-{connector}"), subscription, options).await
    }

    /// Joins consumer group `group` and subscribes (what
    /// [`Consumer::subscribe`] does for a sink's group).
    ///
    /// With a `group.instance.id` among `options.settings` the consumer is
    /// a static member, unless the brokers lack static membership: it then
    /// joins dynamically (see [`static_member_id`]).
    pub async fn join(
        cfg: &KafkaConfig,
        group: &str,
        subscription: Subscription,
        mut options: ConsumerOptions,
    ) -> Result<Consumer> {
        let group = group.to_string();
        let patterns = subscription.patterns();
        if patterns.is_empty() || patterns.iter().any(String::is_empty) {
            return Err(Error::config("topics", "no topic to consume"));
        }
        if let Some(at) = options
            .settings
            .iter()
            .position(|(k, _)| k == "group.instance.id")
        {
            if static_membership_supported(cfg).await? {
                tracing::info!(
                    "joining consumer group '{group}' as static member '{}'",
                    options.settings[at].1
                );
            } else {
                options.settings.remove(at);
            }
        }
        let (tx, events) = mpsc::channel(options.buffered_events.max(1));
        let base = SluiceContext::default();
        let ctx = SinkContext {
            base: base.clone(),
            tx,
            pending: Mutex::new(Vec::new()),
            revoke_timeout: options.revoke_timeout,
        };
        let mut fixed: Vec<(&str, &str)> = options
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fixed.extend([
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
        ]);
        let mut config = cfg.client_config(ClientRole::Consumer, CONSUMER_DEFAULTS, &fixed);
        // The user's `consumer.group.instance.id` is a prefix that the
        // caller turns into this member's own id (see `static_member_id`);
        // as it stands it would make every member one and fence them.
        if !options
            .settings
            .iter()
            .any(|(k, _)| k == "group.instance.id")
        {
            config.remove("group.instance.id");
        }
        let inner: BaseConsumer<SinkContext> = config
            .create_with_context(ctx)
            .map_err(Error::kafka("consumer creation"))?;
        let bootstrap = cfg.bootstrap().to_string();
        let timeout = cfg.connect_timeout;
        // On failure the consumer is dropped (closed) on the blocking
        // thread, not on the caller's.
        let inner = tokio::task::spawn_blocking(move || {
            // Not subscribed yet: polling only serves log and error events
            // (so a connection failure can be reported with its cause).
            probe(
                |t| {
                    let _ = inner.poll(Duration::ZERO);
                    inner.fetch_metadata(None, t)
                },
                &base,
                &bootstrap,
                timeout,
            )
            .map(|()| Arc::new(inner))
        })
        .await
        .map_err(|_| Error::Closed("connect"))??;
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        inner.subscribe(&refs).map_err(Error::kafka("subscribe"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (c, stop, max) = (inner.clone(), stop.clone(), options.max_batch.max(1));
            std::thread::Builder::new()
                .name(format!("kafka-{group}"))
                .spawn({
                    let group = group.clone();
                    move || poll_loop(c, stop, max, &group)
                })
                .map_err(|_| Error::Closed("consumer thread start"))?
        };
        Ok(Consumer {
            inner: Some(inner),
            events,
            stop,
            thread: Some(thread),
            group,
        })
    }

    fn client(&self) -> Result<Arc<BaseConsumer<SinkContext>>> {
        self.inner.clone().ok_or(Error::Closed("consumer"))
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next event; None once the consumer stopped.
    pub async fn next_event(&mut self) -> Option<ConsumerEvent> {
        self.events.recv().await
    }

    /// Commits `offsets` (only what the sink made durable) and waits for
    /// the broker's acknowledgement.
    pub async fn commit(&self, offsets: &CommitOffsets) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = offsets.to_tpl()?;
        let c = self.client()?;
        tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|_| Error::Closed("commit"))?
            .map_err(Error::kafka("commit"))
    }

    /// The group's committed offsets for the partitions currently assigned.
    pub async fn committed(&self, timeout: Duration) -> Result<CommitOffsets> {
        let c = self.client()?;
        let tpl = tokio::task::spawn_blocking(move || c.committed(timeout))
            .await
            .map_err(|_| Error::Closed("committed"))?
            .map_err(Error::kafka("committed"))?;
        let mut out = CommitOffsets::new();
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.set(
                    TopicPartition {
                        topic: Arc::from(e.topic()),
                        partition: e.partition(),
                    },
                    o,
                );
            }
        }
        Ok(out)
    }

    /// Leaves the group and stops the polling thread. Commit first: records
    /// handed over but not committed are delivered again to the next owner.
    pub async fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.events.close();
        while self.events.try_recv().is_ok() {}
        self.inner = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // The thread notices, drops the librdkafka consumer (leaving the
        // group) and exits on its own.
        self.stop.store(true, Ordering::SeqCst);
        self.events.close();
    }
}

fn poll_loop(
    consumer: Arc<BaseConsumer<SinkContext>>,
    stop: Arc<AtomicBool>,
    max_batch: usize,
    group: &str,
) {
    let mut topics = HashMap::new();
    let ctx = consumer.context().clone();
    while !stop.load(Ordering::SeqCst) {
        let mut wait = Duration::from_millis(100);
        loop {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    let r = to_record(&m, &mut topics);
                    let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
                    pending.push(r);
                    if pending.len() >= max_batch {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(group, "consume error: {e}");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if !ctx.hand_over_pending() {
            break;
        }
    }
    // Leaving the group: revocation callbacks find the channel closed and
    // do not wait.
    drop(ctx);
    drop(consumer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_group_version_from_the_api_versions_log() {
        for (line, want) in [
            ("  ApiKey JoinGroup (11) Versions 0..9", Some(9)),
            (
                "[thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap:   ApiKey JoinGroup (11) Versions 0..4",
                Some(4),
            ),
            ("  ApiKey SyncGroup (14) Versions 0..5", None),
            ("Broker API support:", None),
            ("  ApiKey JoinGroup (11) Versions 0..", None),
        ] {
            assert_eq!(join_group_max_version(line), want, "{line}");
        }
    }
}
