//! Debezium's `kafka` signal channel, run by the worker beside a source
//! task: records of `signal.kafka.topic` whose key is the connector's
//! `topic.prefix` are signals (`{"type": ..., "data": {...}}`, the record's
//! offset as their id), handed to the task through
//! [`sluice_core::signal`]. The channel's consumer group commits a record
//! once the task took it, so a signal sent while the task was down (or
//! still in its initial snapshot) is acted on when it streams.

use std::time::Duration;

use sluice_core::config::Props;
use sluice_core::signal::{self, Signal};
use sluice_kafka::consumer::{CommitOffsets, ConsumerEvent, ConsumerOptions, Subscription};
use sluice_kafka::{Consumer, KafkaConfig};
use tokio_util::sync::CancellationToken;

/// What the channel needs from a connector's config.
#[derive(Debug, Clone)]
pub struct KafkaChannel {
    /// `signal.kafka.topic` (default `<topic.prefix>-signal`).
    pub topic: String,
    /// `signal.kafka.groupId` (default `kafka-signal`).
    pub group: String,
    /// The key signals for this connector carry: its `topic.prefix`.
    pub key: String,
    /// The channel's Kafka client settings.
    pub kafka: KafkaConfig,
}

impl KafkaChannel {
    /// The channel a connector's config asks for: None unless
    /// `signal.enabled.channels` lists `kafka`; an error names the key
    /// that is missing or wrong.
    pub fn from_props(props: &Props) -> anyhow::Result<Option<KafkaChannel>> {
        let wanted = props
            .get("signal.enabled.channels")
            .is_some_and(|c| c.split(',').any(|c| c.trim() == "kafka"));
        if !wanted {
            return Ok(None);
        }
        let prefix = props
            .get("topic.prefix")
            .or_else(|| props.get("database.server.name"))
            .cloned()
            .unwrap_or_default();
        let bootstrap = props
            .get("signal.kafka.bootstrap.servers")
            .cloned()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "signal.enabled.channels has kafka but signal.kafka.bootstrap.servers is not set: \
                     set it to the brokers of signal.kafka.topic"
                )
            })?;
        // signal.consumer.* configure the channel's consumer, as in
        // Debezium; security keys apply to the whole client.
        let mut client = Props::new();
        client.insert("bootstrap.servers".into(), bootstrap);
        for (k, v) in props {
            let Some(rest) = k.strip_prefix("signal.consumer.") else {
                continue;
            };
            let common = ["security.", "sasl.", "ssl."]
                .iter()
                .any(|p| rest.starts_with(p));
            let key = if common {
                rest.to_string()
            } else {
                format!("consumer.{rest}")
            };
            client.insert(key, v.clone());
        }
        let kafka = KafkaConfig::from_worker_props(&client)
            .map_err(|e| anyhow::anyhow!("the kafka signal channel's settings: {e}"))?;
        Ok(Some(KafkaChannel {
            topic: props
                .get("signal.kafka.topic")
                .cloned()
                .unwrap_or_else(|| format!("{prefix}-signal")),
            group: props
                .get("signal.kafka.groupId")
                .cloned()
                .unwrap_or_else(|| "kafka-signal".into()),
            key: prefix,
            kafka,
        }))
    }

    /// Reads signals for `connector` until `stop`; connection problems are
    /// logged and retried.
    pub async fn run(self, connector: String, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.session(&connector, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        connector = %connector,
                        "kafka signal channel ({} on {}): {e:#}; trying again in 5 s",
                        self.topic,
                        self.kafka.bootstrap()
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    }

    async fn session(&self, connector: &str, stop: &CancellationToken) -> anyhow::Result<()> {
        let options = ConsumerOptions {
            settings: vec![("auto.offset.reset".into(), "earliest".into())],
            ..ConsumerOptions::default()
        };
        let mut consumer = Consumer::join(
            &self.kafka,
            &self.group,
            Subscription::Topics(vec![self.topic.clone()]),
            options,
        )
        .await?;
        tracing::info!(
            connector = %connector,
            "kafka signal channel: reading {} (group {})",
            self.topic,
            self.group
        );
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = consumer.next_event() => e,
            };
            match event {
                None => anyhow::bail!("the consumer stopped"),
                Some(ConsumerEvent::Assigned(_)) => {}
                Some(ConsumerEvent::Revoked(rev)) => rev.release(CommitOffsets::new()),
                Some(ConsumerEvent::Records(records)) => {
                    let mut done = CommitOffsets::new();
                    for r in &records {
                        if let Some(sig) = self.signal_of(connector, r) {
                            if !deliver(connector, sig, stop).await {
                                break;
                            }
                        }
                        done.mark(r);
                    }
                    if !done.is_empty() {
                        consumer.commit(&done).await?;
                    }
                }
            }
        }
        consumer.close().await;
        Ok(())
    }

    /// The signal a record carries for this connector, if any.
    fn signal_of(&self, connector: &str, r: &sluice_core::record::Record) -> Option<Signal> {
        let key = r.key.as_deref().map(String::from_utf8_lossy);
        if key.as_deref() != Some(self.key.as_str()) {
            tracing::debug!(
                connector = %connector,
                "kafka signal channel: record at offset {} has key {key:?}, not {}: not for this connector",
                r.offset,
                self.key
            );
            return None;
        }
        let value = r.value.as_deref().unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            data: serde_json::Value,
        }
        match serde_json::from_slice::<Body>(value) {
            Ok(b) => Some(Signal {
                id: r.offset.to_string(),
                kind: b.kind,
                data: b.data,
            }),
            Err(e) => {
                tracing::warn!(
                    connector = %connector,
                    "kafka signal channel: the record at {}/{} offset {} is not a signal ({e}): expected {{\"type\": \"execute-snapshot\", \"data\": {{...}}}}; skipped",
                    r.topic,
                    r.partition,
                    r.offset
                );
                None
            }
        }
    }
}

/// Hands `sig` to the connector's task, waiting while it does not take
/// signals yet (starting, or in its initial snapshot); false on stop.
async fn deliver(connector: &str, sig: Signal, stop: &CancellationToken) -> bool {
    let mut waited = false;
    loop {
        match signal::send(connector, sig.clone()) {
            Ok(()) => return true,
            Err(_) => {
                if !waited {
                    tracing::info!(
                        connector = %connector,
                        "kafka signal channel: signal {} waits until the task streams",
                        sig.id
                    );
                    waited = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Props {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_channel_follows_debeziums_keys_and_defaults() {
        assert!(
            KafkaChannel::from_props(&props(&[("topic.prefix", "shop")]))
                .expect("no channel")
                .is_none()
        );
        let e = KafkaChannel::from_props(&props(&[
            ("topic.prefix", "shop"),
            ("signal.enabled.channels", "source,kafka"),
        ]))
        .expect_err("no bootstrap");
        assert!(
            e.to_string().contains("signal.kafka.bootstrap.servers"),
            "{e}"
        );
        let c = KafkaChannel::from_props(&props(&[
            ("topic.prefix", "shop"),
            ("signal.enabled.channels", "source,kafka"),
            ("signal.kafka.bootstrap.servers", "k:9092"),
        ]))
        .expect("channel")
        .expect("wanted");
        assert_eq!(
            (c.topic.as_str(), c.group.as_str(), c.key.as_str()),
            ("shop-signal", "kafka-signal", "shop")
        );
        assert_eq!(c.kafka.bootstrap(), "k:9092");
    }
}
