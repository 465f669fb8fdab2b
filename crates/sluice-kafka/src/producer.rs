//! The source side's producer: idempotent, acks from all in-sync replicas,
//! keys partitioned like the Java client, lz4-compressed batches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as RdHeader, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use sluice_core::record::Record;

use crate::config::{ClientRole, KafkaConfig};
use crate::context::{probe, SluiceContext};
use crate::error::{Error, Result};

/// Throughput defaults, each overridable with `producer.<key>`.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("batch.size", "1000000"),
    ("queue.buffering.max.messages", "200000"),
];

/// Settings Sluice always applies to the producer (overrides refused):
/// idempotence keeps per-partition order and drops duplicates on retry;
/// `murmur2_random` places keyed records on the partitions the Java
/// client's default partitioner would choose.
pub const PRODUCER_FIXED: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("max.in.flight.requests.per.connection", "5"),
    ("partitioner", "murmur2_random"),
];

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

/// Resolves once the brokers acknowledged the record (or it failed for
/// good: librdkafka retries transient errors itself until
/// `message.timeout.ms`).
pub struct Delivery {
    topic: Arc<str>,
    inner: DeliveryFuture,
}

impl Future for Delivery {
    type Output = Result<Delivered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let topic = self.topic.clone();
        Pin::new(&mut self.inner).poll(cx).map(|r| match r {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((source, _msg))) => Err(Error::Delivery {
                topic: topic.to_string(),
                source,
            }),
            Err(_canceled) => Err(Error::Closed("delivery")),
        })
    }
}

/// An idempotent Kafka producer. Cheap to clone; all clones share one
/// librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<SluiceContext>,
}

impl Producer {
    /// Creates the producer and waits (at most `cfg.connect_timeout`) until
    /// the cluster answers, so a wrong `bootstrap.servers` fails here with
    /// [`Error::Unreachable`] rather than at the first send.
    pub async fn connect(cfg: &KafkaConfig) -> Result<Producer> {
        let ctx = SluiceContext::default();
        let inner: FutureProducer<SluiceContext> = cfg
            .client_config(ClientRole::Producer, PRODUCER_DEFAULTS, PRODUCER_FIXED)
            .create_with_context(ctx.clone())
            .map_err(Error::kafka("producer creation"))?;
        let p = inner.clone();
        let bootstrap = cfg.bootstrap().to_string();
        let timeout = cfg.connect_timeout;
        tokio::task::spawn_blocking(move || {
            probe(
                |t| p.client().fetch_metadata(None, t),
                &ctx,
                &bootstrap,
                timeout,
            )
        })
        .await
        .map_err(|_| Error::Closed("connect"))??;
        Ok(Producer { inner })
    }

    /// Enqueues `record` (its topic, key, value, headers and timestamp, when
    /// positive; its partition and offset are ignored: the partitioner
    /// picks the partition from the key). Waits while the local queue is full. The
    /// returned [`Delivery`] resolves when the record is acknowledged;
    /// records of one key are delivered in the order they were sent.
    pub async fn send(&self, record: &Record) -> Result<Delivery> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in &record.headers {
            headers = headers.insert(RdHeader {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        loop {
            let mut fr: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).headers(headers.clone());
            if let Some(k) = &record.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                fr = fr.payload(v.as_slice());
            }
            // 0 or less: not set, the producer stamps the current time (a
            // zero timestamp would put the record past any time retention).
            if record.timestamp_ms > 0 {
                fr = fr.timestamp(record.timestamp_ms);
            }
            match self.inner.send_result(fr) {
                Ok(inner) => {
                    return Ok(Delivery {
                        topic: record.topic.clone(),
                        inner,
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((source, _)) => {
                    return Err(Error::Delivery {
                        topic: record.topic.to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits (at most `timeout`) until every record sent so far is
    /// delivered or failed.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let p = self.inner.clone();
        tokio::task::spawn_blocking(move || p.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| Error::Closed("flush"))?
            .map_err(Error::kafka("flush"))
    }

    /// Records sent but not yet delivered or failed.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
