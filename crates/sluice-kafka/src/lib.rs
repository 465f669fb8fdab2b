//! Sluice's Kafka transport over librdkafka (bundled): client settings from
//! Kafka Connect worker properties ([`KafkaConfig`]), an idempotent
//! [`Producer`] whose sends resolve when acknowledged, topic creation
//! ([`Admin`]) and a sink task's group [`Consumer`] with manual commits and
//! rebalance events.
//!
//! How a worker plugs it in:
//!
//! ```no_run
//! # async fn demo(worker_props: sluice_core::config::Props, record: sluice_core::record::Record) -> sluice_kafka::Result<()> {
//! use sluice_kafka::*;
//!
//! let cfg = KafkaConfig::from_worker_props(&worker_props)?;
//! // Internal topics, created when missing.
//! let admin = Admin::connect(&cfg).await?;
//! admin.ensure_topic("connect-offsets", 25, 3, COMPACTED).await?;
//!
//! // Source side: send, and count the record delivered once acknowledged.
//! let producer = Producer::connect(&cfg).await?;
//! let delivery = producer.send(&record).await?; // waits only while the queue is full
//! let Delivered { partition, offset } = delivery.await?;
//! # let _ = (partition, offset);
//!
//! // Sink side: put, flush, then commit only what was flushed.
//! let mut consumer = Consumer::subscribe(
//!     &cfg,
//!     "my-sink",
//!     Subscription::Topics(vec!["orders".into()]),
//!     ConsumerOptions::default(),
//! )
//! .await?;
//! let mut durable = CommitOffsets::new();
//! while let Some(event) = consumer.next_event().await {
//!     match event {
//!         ConsumerEvent::Records(records) => {
//!             // task.put(&records); task.flush(); then:
//!             for r in &records {
//!                 durable.mark(r);
//!             }
//!             consumer.commit(&durable).await?;
//!         }
//!         ConsumerEvent::Assigned(_partitions) => {}
//!         ConsumerEvent::Revoked(revocation) => {
//!             // task.flush() first, then hand over what is durable.
//!             let offsets = durable.take(&revocation.partitions);
//!             revocation.release(offsets);
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod config;
pub mod consumer;
mod context;
pub mod error;
pub mod producer;
pub mod reader;

pub use admin::{Admin, TopicState, COMPACTED};
pub use config::{parse_jaas, ClientRole, JaasLogin, KafkaConfig};
pub use consumer::{
    static_member_id, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Revocation,
    Subscription, TopicPartition, CONSUMER_DEFAULTS,
};
pub use error::{Error, Result};
pub use producer::{
    Delivered, Delivery, Producer, TransactionalProducer, PRODUCER_DEFAULTS, PRODUCER_FIXED,
    TXN_OP_TIMEOUT,
};
pub use reader::TopicReader;
