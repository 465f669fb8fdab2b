//! Sluice's Kafka transport over librdkafka (bundled): client settings from
//! Kafka Connect worker properties ([`KafkaConfig`]), an idempotent
//! [`Producer`] whose sends resolve when acknowledged, topic creation
//! ([`Admin`]) and a sink task's group [`Consumer`] with manual commits and
//! rebalance events.

pub mod admin;
pub mod config;
pub mod consumer;
mod context;
pub mod error;
pub mod producer;

pub use admin::{Admin, TopicState, COMPACTED};
pub use config::{parse_jaas, ClientRole, JaasLogin, KafkaConfig};
pub use consumer::{
    CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Revocation, Subscription,
    TopicPartition,
};
pub use error::{Error, Result};
pub use producer::{Delivered, Delivery, Producer};
