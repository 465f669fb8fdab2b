//! The roles a connector plays, as small traits: a source task pushes
//! [`SourceRecord`]s into the worker and learns which offsets became durable;
//! a sink task takes serialized [`Record`]s and makes them durable on flush.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::converter::Converter;
use crate::record::{Record, SourceOffset, SourceRecord};

/// Where a source task sends its records. Sending waits when the transport
/// is full (back-pressure).
#[async_trait]
pub trait RecordSender: Send + Sync {
    /// Hands a batch of records, in order, to the worker.
    async fn send(&self, records: Vec<SourceRecord>) -> anyhow::Result<()>;
}

/// Reads offsets the worker has stored for a source partition.
pub trait OffsetReader: Send + Sync {
    /// The stored offset for `partition`, if any.
    fn read(
        &self,
        partition: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<serde_json::Map<String, serde_json::Value>>;
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
    /// Key converter (to read record keys).
    pub key_converter: Arc<dyn Converter>,
    /// Value converter (to read record values).
    pub value_converter: Arc<dyn Converter>,
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
    async fn put(&mut self, records: &[Record]) -> anyhow::Result<()>;
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

/// A connector implementation the worker can run, chosen by
/// `connector.class` (a Java class name or a short alias).
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
