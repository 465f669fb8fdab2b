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

/// A running sink task.
#[async_trait]
pub trait SinkTask: Send {
    /// Takes records, in order per partition. They need not be durable yet.
    async fn put(&mut self, records: &[Record]) -> anyhow::Result<()>;
    /// Makes everything `put` so far durable; the worker acknowledges those
    /// records only after this returns Ok.
    async fn flush(&mut self) -> anyhow::Result<()>;
    /// Releases resources.
    async fn stop(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
