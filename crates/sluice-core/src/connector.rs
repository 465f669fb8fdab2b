//! The roles a connector plays, as small traits: a source task pushes
//! [`SourceRecord`]s into the worker and learns which offsets became durable;
//! a sink task takes structured [`SinkRecord`]s and makes them durable on
//! flush; a [`ConnectorPlugin`] validates configs (also against the external
//! system) and makes tasks.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::converter::Converter;
use crate::record::{SinkRecord, SourceOffset, SourceRecord};

/// Where a source task sends its records. Sending waits when the transport
/// is full (back-pressure).
#[async_trait]
pub trait RecordSender: Send + Sync {
    /// Hands a batch of records, in order, to the worker.
    async fn send(&self, records: Vec<SourceRecord>) -> anyhow::Result<()>;
}

/// Reads offsets the worker has stored for a source partition. The worker
/// starts a source task only after it read its offset store completely, so
/// `None` means "nothing stored", never "not read yet".
pub trait OffsetReader: Send + Sync {
    /// The stored offset for `partition`, if any.
    fn read(
        &self,
        partition: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<serde_json::Map<String, serde_json::Value>>;
}

/// Stores a source offset at once, outside the delivery of records, for a
/// task that must remember something before it acts on the external system
/// (e.g. that it is about to create a replication slot of its own). Only
/// for use before the task sends records: an offset stored this way must
/// not run ahead of records still in flight.
#[async_trait]
pub trait OffsetWriter: Send + Sync {
    /// Stores `offset`; durable once this returns Ok.
    async fn store_now(&self, offset: &SourceOffset) -> anyhow::Result<()>;
}

/// What a running task tells the worker about itself besides its records.
#[derive(Debug, Clone, Default)]
pub struct TaskReporter {
    healthy: Arc<std::sync::atomic::AtomicBool>,
}

impl TaskReporter {
    /// A reporter nobody reads (tests, tools).
    pub fn new() -> Self {
        TaskReporter::default()
    }
    /// The task is connected and working: a retry budget spent on an
    /// earlier outage is given back.
    pub fn healthy(&self) {
        self.healthy
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// Whether [`TaskReporter::healthy`] was called since the last
    /// [`TaskReporter::take_healthy`]; clears it.
    pub fn take_healthy(&self) -> bool {
        self.healthy
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What a running source task is given.
pub struct SourceContext {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task_id: u32,
    /// Record sink.
    pub sender: Arc<dyn RecordSender>,
    /// Stored offsets at start.
    pub offsets: Arc<dyn OffsetReader>,
    /// Stores an offset at once (see [`OffsetWriter`]).
    pub offset_writer: Arc<dyn OffsetWriter>,
    /// Tells the worker the task is healthy.
    pub reporter: TaskReporter,
    /// The task's figures (its snapshot, its slot) for metrics and status;
    /// the worker counts its events itself.
    pub telemetry: Arc<crate::telemetry::SourceTelemetry>,
    /// The latest offset the worker has durably committed (after every record
    /// up to it was accepted downstream). The task may then release the
    /// corresponding source resources (e.g. confirm an LSN).
    pub committed: watch::Receiver<Option<Arc<SourceOffset>>>,
    /// Cancelled when the task must stop.
    pub shutdown: CancellationToken,
}

/// A running source task.
#[async_trait]
pub trait SourceTask: Send {
    /// Runs until shutdown (Ok), completion (Ok), or failure (Err).
    async fn run(&mut self, ctx: SourceContext) -> anyhow::Result<()>;
}

/// What a sink task is given.
#[derive(Clone)]
pub struct SinkContext {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task_id: u32,
    /// The connector's key converter, for a sink that writes keys as bytes
    /// (records arrive already read).
    pub key_converter: Arc<dyn Converter>,
    /// The connector's value converter, for a sink that writes values as
    /// bytes.
    pub value_converter: Arc<dyn Converter>,
    /// Tells the worker the task is healthy.
    pub reporter: TaskReporter,
    /// The task's figures; the sink adds its own metrics to
    /// [`SinkTelemetry::plugin`](crate::telemetry::SinkTelemetry::plugin).
    pub telemetry: Arc<crate::telemetry::SinkTelemetry>,
}

/// The offset of the last durable record of a topic partition, as a sink
/// task that closes its own batches reports it from
/// [`SinkTask::pre_commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Topic (as the task was given it, after the connector's transforms).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset of the last record of this partition that is durable.
    pub offset: i64,
}

/// A running sink task.
#[async_trait]
pub trait SinkTask: Send {
    /// Takes records, in order per partition. They need not be durable yet.
    /// A failure's [kind](crate::error::ErrorKind) says whether retrying
    /// the same records may succeed.
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()>;
    /// Makes everything `put` so far durable; the worker acknowledges those
    /// records only after this returns Ok.
    async fn flush(&mut self) -> anyhow::Result<()>;
    /// True for a sink that closes its own batches (by size or age) and
    /// should not be made to write a partial batch at every commit: the
    /// worker then calls [`SinkTask::pre_commit`] on its commit cadence
    /// instead of `flush`, and `flush` only when the task stops, is paused
    /// or gives up its partitions.
    fn batches_itself(&self) -> bool {
        false
    }
    /// For a task that [batches itself](SinkTask::batches_itself): writes
    /// the batches that are due and reports, per topic partition it was
    /// given records of, the last offset that is durable. A partition with
    /// nothing pending reports the last offset it was given. Records not
    /// covered stay unacknowledged and are asked about again. Only called
    /// when `batches_itself` is true.
    async fn pre_commit(&mut self) -> anyhow::Result<Vec<PartitionOffset>> {
        self.flush().await?;
        Ok(Vec::new())
    }
    /// Releases resources.
    async fn stop(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Whether a connector reads from (source) or writes to (sink) an external
/// system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    /// Produces records.
    Source,
    /// Consumes records.
    Sink,
}

/// How the worker retries a task that failed with a
/// [transient](crate::error::ErrorKind::Transient) error: it restarts it
/// after a backoff (doubling from one second up to `max_backoff`) at most
/// `max_retries` times in a row (None: without limit). Both reset once the
/// task reports itself healthy again, so each outage gets the whole budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Restarts in a row before the task is FAILED; None: unlimited.
    pub max_retries: Option<u32>,
    /// The longest wait between two restarts.
    pub max_backoff: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: Some(10),
            max_backoff: std::time::Duration::from_secs(60),
        }
    }
}

/// Something a deleted connector left in the external system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is, by name (for example the replication slot's name).
    pub resource: String,
    /// Bytes it keeps from being freed (a slot's retained WAL), when
    /// known.
    pub retained_bytes: Option<i64>,
    /// One line saying what is left, what it costs and how to remove it.
    pub note: String,
}

/// A connector implementation the worker can run, chosen by
/// `connector.class` (a Java class name or a short alias).
#[async_trait]
pub trait ConnectorPlugin: Send + Sync {
    /// The Java class name users put in `connector.class`.
    fn class(&self) -> &'static str;
    /// Other accepted names (short aliases such as `postgres`).
    fn aliases(&self) -> &'static [&'static str];
    /// Source or sink.
    fn kind(&self) -> ConnectorKind;
    /// Plugin version.
    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
    /// The declared configuration keys.
    fn config_def(&self) -> crate::config::ConfigDef;
    /// Checks a connector config (beyond the declared keys' own checks) and
    /// returns warnings; errors name the key, the value and what is allowed.
    fn validate(
        &self,
        props: &crate::config::Props,
    ) -> Result<Vec<String>, crate::config::ConfigErrors>;
    /// Tries the config against the world (connects, logs in, looks for
    /// what the config names) and reports each problem on the key it is
    /// about. Called by `PUT /connector-plugins/{p}/config/validate` and
    /// before a connector is created; a config that passed [`validate`]
    /// only. The default checks nothing.
    ///
    /// [`validate`]: ConnectorPlugin::validate
    async fn check_external(
        &self,
        props: &crate::config::Props,
    ) -> Vec<crate::config::ConfigError> {
        let _ = props;
        Vec::new()
    }
    /// What a connector with this config leaves in the external system
    /// once it is deleted (a replication slot retaining WAL, say), each
    /// with how to remove it; empty when nothing is left. Called when the
    /// connector is deleted, then again periodically while anything is
    /// left, so the worker keeps reporting it. Must only read.
    async fn left_behind(&self, props: &crate::config::Props) -> Vec<Leftover> {
        let _ = props;
        Vec::new()
    }
    /// How transient task failures are retried.
    fn retry_policy(&self, props: &crate::config::Props) -> RetryPolicy {
        let _ = props;
        RetryPolicy::default()
    }
    /// Splits the connector config into at most `max_tasks` task configs.
    fn task_configs(
        &self,
        props: &crate::config::Props,
        max_tasks: usize,
    ) -> Vec<crate::config::Props> {
        let _ = max_tasks;
        vec![props.clone()]
    }
    /// Creates a source task from a task config.
    fn create_source_task(
        &self,
        props: &crate::config::Props,
    ) -> anyhow::Result<Box<dyn SourceTask>> {
        let _ = props;
        anyhow::bail!("{} is not a source connector", self.class())
    }
    /// Creates a sink task from a task config.
    fn create_sink_task(
        &self,
        props: &crate::config::Props,
        ctx: SinkContext,
    ) -> anyhow::Result<Box<dyn SinkTask>> {
        let _ = (props, ctx);
        anyhow::bail!("{} is not a sink connector", self.class())
    }
}
