//! The sink's own dead-letter queues, as the official connector has them:
//! `errors.deadletterqueue.*` for records that cannot be serialized, and
//! `misc.deadletterqueue.*` for the records of batches ADX did not take
//! (network, service or temporary-file failures) when `behavior.on.error`
//! lets the task go on. Each names its own Kafka cluster
//! (`bootstrap.servers`, `security.protocol`, `sasl.*`).
//!
//! A dead-lettered record keeps its key, value and headers, and gains
//! Kafka Connect's `__connect.errors.*` context headers, so the tools users
//! have for the worker's own dead-letter queue read these too.

use std::time::Duration;

use anyhow::{Context, Result};
use sluice_core::config::Props;
use sluice_core::record::{Header, Record};
use sluice_kafka::{KafkaConfig, Producer};

use crate::config::DeadLetterQueue;

/// How long a dead-letter write may take before the task fails: a record
/// is only let go once its copy is stored.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected dead-letter queue.
pub struct DeadLetters {
    topic: String,
    /// The config key prefix, for messages.
    prefix: &'static str,
    producer: Producer,
}

impl DeadLetters {
    /// Connects to the queue's cluster. `prefix` is `errors.deadletterqueue.`
    /// or `misc.deadletterqueue.`.
    pub async fn connect(dlq: &DeadLetterQueue, prefix: &'static str) -> Result<DeadLetters> {
        let bootstrap = dlq.bootstrap_servers.clone().with_context(|| {
            format!("{prefix}bootstrap.servers is required for the sink's dead-letter queue")
        })?;
        let mut props = Props::new();
        props.insert("bootstrap.servers".to_string(), bootstrap);
        for (k, v) in &dlq.producer {
            props.insert(k.clone(), v.clone());
        }
        let cfg = KafkaConfig::from_worker_props(&props)
            .with_context(|| format!("{prefix}*: not a valid Kafka client configuration"))?;
        // Created when missing (broker defaults), so a first failure is
        // never lost to a missing topic on clusters without auto-creation.
        let admin = sluice_kafka::Admin::connect(&cfg).await.with_context(|| {
            format!("connecting to the dead-letter queue cluster ({prefix}bootstrap.servers)")
        })?;
        admin
            .ensure_topic(&dlq.topic, -1, -1, &[])
            .await
            .with_context(|| {
                format!(
                    "creating the dead-letter queue topic '{}' ({prefix}topic.name)",
                    dlq.topic
                )
            })?;
        let producer = Producer::connect(&cfg).await.with_context(|| {
            format!("connecting to the dead-letter queue cluster ({prefix}bootstrap.servers)")
        })?;
        Ok(DeadLetters {
            topic: dlq.topic.clone(),
            prefix,
            producer,
        })
    }

    /// Stores copies of `records` with `reason`; returns once every copy is
    /// acknowledged by the cluster.
    pub async fn send(
        &self,
        records: &[Record],
        connector: &str,
        task: u32,
        reason: &str,
    ) -> Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = r.headers.clone();
            headers.extend(context_headers(r, connector, task, reason));
            let copy = Record {
                topic: self.topic.as_str().into(),
                partition: -1,
                offset: -1,
                timestamp_ms: r.timestamp_ms,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            };
            deliveries.push(
                self.producer
                    .send(&copy)
                    .await
                    .with_context(|| self.what(r))?,
            );
        }
        for (d, r) in deliveries.into_iter().zip(records) {
            tokio::time::timeout(DELIVERY_TIMEOUT, d)
                .await
                .map_err(|_| anyhow::anyhow!("timed out after {DELIVERY_TIMEOUT:?}"))
                .and_then(|r| r.map_err(anyhow::Error::from))
                .with_context(|| self.what(r))?;
        }
        Ok(())
    }

    fn what(&self, r: &Record) -> String {
        format!(
            "writing record topic '{}' partition {} offset {} to the dead-letter queue '{}' ({}topic.name)",
            r.topic, r.partition, r.offset, self.topic, self.prefix
        )
    }
}

fn context_headers(r: &Record, connector: &str, task: u32, reason: &str) -> Vec<Header> {
    let h = |k: &str, v: String| Header {
        key: format!("__connect.errors.{k}"),
        value: Some(v.into_bytes()),
    };
    vec![
        h("topic", r.topic.to_string()),
        h("partition", r.partition.to_string()),
        h("offset", r.offset.to_string()),
        h("connector.name", connector.to_string()),
        h("task.id", task.to_string()),
        h("stage", "TASK_PUT".to_string()),
        h("class.name", crate::CLASS.to_string()),
        h("exception.message", reason.to_string()),
    ]
}
