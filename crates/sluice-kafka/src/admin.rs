//! Topic administration: Sluice creates the topics it needs itself.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::config::{ClientRole, KafkaConfig};
use crate::context::{probe, SluiceContext};
use crate::error::{Error, Result};

/// The topic configuration of Kafka Connect's internal topics (configs,
/// offsets, status): compacted, so the latest value per key survives.
pub const COMPACTED: &[(&str, &str)] = &[("cleanup.policy", "compact")];

/// The partition count that asks the broker for its default
/// (`num.partitions`), as Kafka Connect's
/// `topic.creation.default.partitions=-1` does (KIP-158, KIP-464).
pub const BROKER_DEFAULT_PARTITIONS: i32 = -1;

/// The outcome of one CreateTopics request.
enum Created {
    Yes,
    Existed,
    /// The broker is older than 2.4 and takes no -1 (its default).
    Unsupported,
}

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

    /// Creates `name` unless it exists. `partitions` and
    /// `replication_factor` -1 take the broker's defaults (`num.partitions`,
    /// `default.replication.factor`). `configs` are topic settings such as
    /// [`COMPACTED`].
    ///
    /// A broker older than 2.4 takes no -1 partition count; then the count
    /// is read from the broker's `num.partitions` (DescribeConfigs), and
    /// when even that cannot be read, 1 is used with a warning, so a topic
    /// is still created rather than none.
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
        if partitions < 1 && partitions != BROKER_DEFAULT_PARTITIONS {
            return Err(Error::Topic {
                topic: name.to_string(),
                message: format!(
                    "partition count {partitions} must be at least 1, or -1 for the broker's default"
                ),
            });
        }
        if let Some(p) = self.partitions(name).await? {
            return Ok(TopicState::Existed { partitions: p });
        }
        let outcome = match self
            .create(name, partitions, replication_factor, configs)
            .await?
        {
            Created::Unsupported => {
                let count = match self.broker_default_partitions().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(
                            topic = name,
                            "the broker takes no default partition count (older than 2.4) and its num.partitions could not be read ({e}); creating the topic with 1 partition"
                        );
                        1
                    }
                };
                match self
                    .create(name, count, replication_factor, configs)
                    .await?
                {
                    Created::Unsupported => {
                        return Err(Error::Topic {
                            topic: name.to_string(),
                            message: format!(
                                "cannot create it ({count} partitions, replication factor {replication_factor}): the broker does not support the request"
                            ),
                        })
                    }
                    other => other,
                }
            }
            other => other,
        };
        match outcome {
            Created::Existed => {
                let partitions = self.partitions(name).await?.unwrap_or(partitions);
                Ok(TopicState::Existed { partitions })
            }
            _ => Ok(TopicState::Created),
        }
    }

    async fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        configs: &[(&str, &str)],
    ) -> Result<Created> {
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
        let results = match self.inner.create_topics([&nt], &opts).await {
            Ok(r) => r,
            Err(KafkaError::AdminOp(Code::UnsupportedFeature))
                if partitions == BROKER_DEFAULT_PARTITIONS =>
            {
                return Ok(Created::Unsupported)
            }
            Err(e) => return Err(Error::kafka("create topic")(e)),
        };
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(Created::Yes),
            Some(Err((_, Code::TopicAlreadyExists))) => Ok(Created::Existed),
            Some(Err((_, Code::UnsupportedFeature | Code::UnsupportedVersion)))
                if partitions == BROKER_DEFAULT_PARTITIONS =>
            {
                Ok(Created::Unsupported)
            }
            Some(Err((_, code))) => Err(Error::Topic {
                topic: name.to_string(),
                message: format!(
                    "cannot create it ({} partitions, replication factor {replication_factor}): {code}",
                    if partitions == BROKER_DEFAULT_PARTITIONS {
                        "the broker's default number of".to_string()
                    } else {
                        partitions.to_string()
                    }
                ),
            }),
            None => Err(Error::Topic {
                topic: name.to_string(),
                message: "the broker returned no result for the creation".into(),
            }),
        }
    }

    /// The `num.partitions` of a broker of the cluster.
    async fn broker_default_partitions(&self) -> Result<i32> {
        let (client, timeout) = (self.meta.clone(), self.timeout);
        let broker = tokio::task::spawn_blocking(move || {
            client.poll(Duration::ZERO);
            client.client().fetch_metadata(None, timeout)
        })
        .await
        .map_err(|_| Error::Closed("metadata"))?
        .map_err(Error::kafka("metadata"))?
        .brokers()
        .first()
        .map(|b| b.id())
        .ok_or(Error::Closed("metadata: no broker"))?;
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = self
            .inner
            .describe_configs(&[ResourceSpecifier::Broker(broker)], &opts)
            .await
            .map_err(Error::kafka("describe broker configs"))?;
        let not_found = |why: String| Error::Topic {
            topic: String::new(),
            message: format!("broker {broker}: num.partitions: {why}"),
        };
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| not_found("no answer".into()))?
            .map_err(|code| not_found(code.to_string()))?;
        let value = resource
            .get("num.partitions")
            .and_then(|e| e.value.clone())
            .ok_or_else(|| not_found("not reported".into()))?;
        value
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| not_found(format!("not a partition count: '{value}'")))
    }
}
