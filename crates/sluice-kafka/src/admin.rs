//! Topic administration: Sluice creates the topics it needs itself.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode as Code;
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::config::{ClientRole, KafkaConfig};
use crate::context::{probe, SluiceContext};
use crate::error::{Error, Result};

/// The topic configuration of Kafka Connect's internal topics (configs,
/// offsets, status): compacted, so the latest value per key survives.
pub const COMPACTED: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// What [`Admin::ensure_topic`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// The topic was created.
    Created,
    /// The topic already existed with this many partitions (its settings
    /// were left as they are).
    Existed {
        /// Its partition count.
        partitions: i32,
    },
}

/// An admin client.
pub struct Admin {
    inner: Arc<AdminClient<SluiceContext>>,
    /// For metadata: unlike the admin client, its event queue is served
    /// (by `poll`), so connection failures are reported with their cause.
    meta: Arc<BaseProducer<SluiceContext>>,
    timeout: Duration,
}

impl Admin {
    /// Creates the admin client and waits (at most `cfg.connect_timeout`)
    /// until the cluster answers.
    pub async fn connect(cfg: &KafkaConfig) -> Result<Admin> {
        let ctx = SluiceContext::default();
        let inner: AdminClient<SluiceContext> = cfg
            .client_config(ClientRole::Admin, &[], &[])
            .create_with_context(ctx.clone())
            .map_err(Error::kafka("admin client creation"))?;
        let meta: BaseProducer<SluiceContext> = cfg
            .client_config(ClientRole::Admin, &[], &[])
            .create_with_context(ctx.clone())
            .map_err(Error::kafka("admin client creation"))?;
        let admin = Admin {
            inner: Arc::new(inner),
            meta: Arc::new(meta),
            timeout: cfg.connect_timeout,
        };
        let bootstrap = cfg.bootstrap().to_string();
        let (client, timeout) = (admin.meta.clone(), admin.timeout);
        tokio::task::spawn_blocking(move || {
            probe(
                |t| {
                    client.poll(Duration::ZERO);
                    client.client().fetch_metadata(None, t)
                },
                &ctx,
                &bootstrap,
                timeout,
            )
        })
        .await
        .map_err(|_| Error::Closed("connect"))??;
        Ok(admin)
    }

    /// The partition count of `topic`, or None when it does not exist.
    pub async fn partitions(&self, topic: &str) -> Result<Option<i32>> {
        // Metadata for all topics: asking for one topic by name would let a
        // broker with auto.create.topics.enable create it with its defaults.
        let (client, timeout) = (self.meta.clone(), self.timeout);
        let md = tokio::task::spawn_blocking(move || {
            client.poll(Duration::ZERO);
            client.client().fetch_metadata(None, timeout)
        })
        .await
        .map_err(|_| Error::Closed("metadata"))?
        .map_err(Error::kafka("metadata"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None => Ok(Some(t.partitions().len() as i32)),
            Some(e) if Code::from(e) == Code::UnknownTopicOrPartition => Ok(None),
            Some(e) => Err(Error::Topic {
                topic: topic.to_string(),
                message: format!("metadata error: {}", Code::from(e)),
            }),
        }
    }

    /// Creates `name` unless it exists. `replication_factor` -1 takes the
    /// broker default. `configs` are topic settings such as [`COMPACTED`].
    pub async fn ensure_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: &[(&str, &str)],
    ) -> Result<TopicState> {
        if name.is_empty() {
            return Err(Error::Topic {
                topic: String::new(),
                message: "empty topic name".into(),
            });
        }
        if partitions < 1 {
            return Err(Error::Topic {
                topic: name.to_string(),
                message: format!("partition count {partitions} must be at least 1"),
            });
        }
        if let Some(p) = self.partitions(name).await? {
            return Ok(TopicState::Existed { partitions: p });
        }
        let mut nt = NewTopic::new(
            name,
            partitions,
            TopicReplication::Fixed(replication_factor),
        );
        for (k, v) in configs {
            nt = nt.set(k, v);
        }
        let opts = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        let results = self
            .inner
            .create_topics([&nt], &opts)
            .await
            .map_err(Error::kafka("create topic"))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(TopicState::Created),
            Some(Err((_, Code::TopicAlreadyExists))) => {
                let partitions = self.partitions(name).await?.unwrap_or(partitions);
                Ok(TopicState::Existed { partitions })
            }
            Some(Err((_, code))) => Err(Error::Topic {
                topic: name.to_string(),
                message: format!(
                    "cannot create it ({partitions} partitions, replication factor {replication_factor}): {code}"
                ),
            }),
            None => Err(Error::Topic {
                topic: name.to_string(),
                message: "the broker returned no result for the creation".into(),
            }),
        }
    }
}
