//! The transport role: where source tasks' records are kept until sink
//! tasks have made them durable. Two implementations, with the same topic
//! semantics:
//!
//! - [`local::LocalTransport`] (no `bootstrap.servers`): a durable log on
//!   this machine, in Sluice's compact binary form, records kept
//!   structured end to end;
//! - [`kafka::KafkaTransport`]: a Kafka cluster, records serialized by the
//!   connectors' converters, as Kafka Connect writes them.
//!
//! A source task sends through a [`SourceOutput`]: each record is
//! registered with the task's [`DeliveryTracker`] before it is handed on and
//! acknowledged to it, in order, once the transport stored it durably; only
//! then may its source offset be committed. A sink task reads through a
//! [`SinkInput`] as a member of its connector's group, from the group's
//! committed positions (or the earliest retained record when it has none),
//! and commits the positions its sink made durable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::config::Props;
use sluice_core::record::{Record, SinkRecord, SourceOffset, SourceRecord};

use crate::connector_config::Subscription;
use crate::delivery::DeliveryTracker;

pub mod codec;
pub mod kafka;
pub mod local;
pub mod tail;

/// The form a transport carries records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordForm {
    /// Bytes made by the connectors' converters (Kafka).
    Serialized,
    /// Connect schemas and values, kept as the source made them.
    Structured,
}

/// What a source task sends, after its transforms.
#[derive(Debug, Clone)]
pub enum OutRecord {
    /// Converted by the connector's converters.
    Serialized(Record),
    /// As the transforms left it (its `offset` field is not used: the
    /// offset travels beside it).
    Structured(SourceRecord),
}

impl OutRecord {
    /// The record's topic.
    pub fn topic(&self) -> &Arc<str> {
        match self {
            OutRecord::Serialized(r) => &r.topic,
            OutRecord::Structured(r) => &r.topic,
        }
    }
}

/// One entry of a batch a source task sends: a record, or with `record`
/// None only a source offset reached (an offset-only marker, committed once
/// everything before it is delivered).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The record.
    pub record: Option<OutRecord>,
    /// The source position reached once it is delivered.
    pub offset: Option<Arc<SourceOffset>>,
}

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A record read by a sink task, in the transport's form.
#[derive(Debug, Clone)]
pub enum InRecord {
    /// Bytes, for the connector's converters to read.
    Serialized(Record),
    /// Already structured.
    Structured(SinkRecord),
}

impl InRecord {
    /// Where it was read.
    pub fn place(&self) -> (&Arc<str>, i32, i64) {
        match self {
            InRecord::Serialized(r) => (&r.topic, r.partition, r.offset),
            InRecord::Structured(r) => (&r.topic, r.partition, r.offset),
        }
    }
}

/// What a sink task's input has for it.
#[derive(Debug)]
pub enum Polled {
    /// Records, in order per partition.
    Records {
        /// The records.
        records: Vec<InRecord>,
        /// More were ready but left for the next poll (the input is not
        /// drained).
        more: bool,
    },
    /// These partitions go to another member: write what was taken of
    /// them, then [`SinkInput::release`] them.
    Revoked(Vec<TopicPartition>),
}

/// Told once, from whatever thread, when a source task's output failed: the
/// task must stop (nothing after the failure is acknowledged).
pub type OnFailure = Box<dyn FnOnce(anyhow::Error) + Send>;

/// What a source task's output is made for.
pub struct SourceOutputSpec {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task_id: u32,
    /// The connector's config (`topic.creation.*`, `producer.override.*`,
    /// `transaction.boundary`).
    pub props: Props,
    /// The task's delivery bookkeeping.
    pub tracker: Arc<DeliveryTracker>,
    /// Told the first delivery failure.
    pub on_failure: OnFailure,
}

/// What a sink task's input is made for.
pub struct SinkInputSpec {
    /// Connector name (the group).
    pub connector: String,
    /// Task number.
    pub task_id: u32,
    /// The connector's task count (the group's size).
    pub tasks: u32,
    /// What it reads.
    pub subscription: Subscription,
    /// The connector's config (`consumer.override.*`).
    pub props: Props,
}

/// A source task's way into the transport.
#[async_trait]
pub trait SourceOutput: Send + Sync {
    /// The form records must be sent in.
    fn form(&self) -> RecordForm;
    /// Sends a batch in order (see the module docs). An error means the
    /// task must stop: nothing sent after it will be acknowledged.
    async fn send(&self, batch: Vec<Outgoing>) -> anyhow::Result<()>;
    /// Whether the transport writes the task's source offsets itself,
    /// together with its records (exactly-once): the worker then only tells
    /// the task what was committed.
    fn stores_offsets(&self) -> bool {
        false
    }
    /// Waits (at most `grace`) until everything sent was acknowledged or
    /// failed, committing what is pending.
    async fn close(&self, grace: Duration);
}

/// A sink task's way out of the transport.
#[async_trait]
pub trait SinkInput: Send {
    /// The next records or assignment change; None once the input ended
    /// (the transport lost the task's membership for good).
    async fn poll(&mut self) -> anyhow::Result<Option<Polled>>;
    /// Commits the next offset to read of each partition given, all of
    /// whose records before it the sink made durable.
    async fn commit(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()>;
    /// Hands over partitions announced by [`Polled::Revoked`], with their
    /// final positions.
    async fn release(&mut self, positions: &[(TopicPartition, i64)]) -> anyhow::Result<()>;
    /// Leaves the group.
    async fn close(&mut self);
}

/// A transport.
#[async_trait]
pub trait Transport: Send + Sync {
    /// What it is, for logs ("local log at ./sluice-data", "Kafka at ...").
    fn describe(&self) -> String;
    /// Makes a source task's output.
    async fn source_output(&self, spec: SourceOutputSpec) -> anyhow::Result<Box<dyn SourceOutput>>;
    /// Makes a sink task's input.
    async fn sink_input(&self, spec: SinkInputSpec) -> anyhow::Result<Box<dyn SinkInput>>;
    /// A sink connector now exists (created or loaded): what it has not
    /// read must be kept.
    fn sink_connector_added(&self, connector: &str, subscription: &Subscription) {
        let _ = (connector, subscription);
    }
    /// A sink connector was deleted: its committed positions stay (a
    /// connector created again with its name resumes), but no longer hold
    /// retention back.
    fn sink_connector_removed(&self, connector: &str) {
        let _ = connector;
    }
    /// Records sink connector `connector` has not committed yet, over
    /// every partition it reads (its consumer lag); None when the
    /// transport cannot tell cheaply.
    fn backlog(&self, connector: &str) -> Option<u64> {
        let _ = connector;
        None
    }
    /// Bytes the transport keeps on this machine (the local log), if any.
    fn stored_bytes(&self) -> Option<u64> {
        None
    }
}
