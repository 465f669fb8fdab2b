//! The source side's producer: idempotent, acks from all in-sync replicas,
//! keys partitioned like the Java client, lz4-compressed batches; and its
//! transactional form ([`TransactionalProducer`]) for exactly-once source
//! delivery, where a task's records and its source offsets are committed in
//! one Kafka transaction.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaError, RDKafkaErrorCode};
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
    // The Java producer's buffer.memory default (32 MiB): without it
    // librdkafka buffers up to 1 GiB, and 200,000 Debezium events with
    // their schemas (about 3 KiB each) took the worker past 450 MiB.
    ("queue.buffering.max.kbytes", "32768"),
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

/// How long a transaction call (init, commit, abort) may take unless
/// [`TransactionalProducer::set_timeout`] says otherwise: Kafka's default
/// `transaction.timeout.ms`, after which the coordinator aborts anyway.
pub const TXN_OP_TIMEOUT: Duration = Duration::from_secs(60);

impl Producer {
    /// Creates a transactional producer with `transactional_id` and
    /// registers it with the transaction coordinator (`init_transactions`),
    /// which fences any earlier producer with the same id and completes or
    /// aborts the transaction it left open. Waits at most
    /// `cfg.connect_timeout` for the cluster to answer, then at most
    /// [`TXN_OP_TIMEOUT`] for the registration.
    pub async fn connect_transactional(
        cfg: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<TransactionalProducer> {
        let mut fixed: Vec<(&str, &str)> = PRODUCER_FIXED.to_vec();
        fixed.push(("transactional.id", transactional_id));
        let ctx = SluiceContext::default();
        let inner: FutureProducer<SluiceContext> = cfg
            .client_config(ClientRole::Producer, PRODUCER_DEFAULTS, &fixed)
            .create_with_context(ctx.clone())
            .map_err(Error::kafka("transactional producer creation"))?;
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
        let txn = TransactionalProducer {
            producer: Producer { inner },
            transactional_id: Arc::from(transactional_id),
            timeout: TXN_OP_TIMEOUT,
        };
        txn.blocking("init_transactions", |p, t| p.init_transactions(t))
            .await?;
        Ok(txn)
    }
}

/// A producer whose records become visible to `read_committed` consumers
/// only when the transaction they were sent in is committed. Cheap to
/// clone; all clones share one librdkafka client and so one transaction.
///
/// Use: [`begin`](Self::begin), [`send`](Self::send) any number of
/// records, then [`commit`](Self::commit) (or [`abort`](Self::abort));
/// repeat. Errors tell what to do next: [`Error::TxnAbortable`] means abort
/// and begin again, [`Error::TxnRetriable`] means the same call may be
/// repeated, [`Error::Fenced`] and [`Error::TxnFatal`] mean this producer
/// is done for.
#[derive(Clone)]
pub struct TransactionalProducer {
    producer: Producer,
    transactional_id: Arc<str>,
    timeout: Duration,
}

impl TransactionalProducer {
    /// The producer's `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Sets how long `commit` and `abort` may take (default
    /// [`TXN_OP_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Begins a transaction (a local step: the coordinator learns of it
    /// with the first record sent).
    pub fn begin(&self) -> Result<()> {
        self.producer
            .inner
            .begin_transaction()
            .map_err(|e| self.txn_error("begin_transaction", e))
    }

    /// Sends `record` within the open transaction (see [`Producer::send`]).
    /// Once the producer is fenced or failed for good, this reports
    /// [`Error::Fenced`] or [`Error::TxnFatal`] rather than the bare
    /// delivery error.
    pub async fn send(&self, record: &Record) -> Result<Delivery> {
        match self.producer.send(record).await {
            Ok(d) => Ok(d),
            Err(e) => Err(self.fatal_error("send").unwrap_or(e)),
        }
    }

    /// Delivers every record sent in the transaction, then commits it.
    /// Afterwards a new transaction may begin.
    pub async fn commit(&self) -> Result<()> {
        self.blocking("commit_transaction", |p, t| p.commit_transaction(t))
            .await
    }

    /// Aborts the open transaction: its records stay invisible to
    /// `read_committed` consumers. Afterwards a new transaction may begin.
    pub async fn abort(&self) -> Result<()> {
        self.blocking("abort_transaction", |p, t| p.abort_transaction(t))
            .await
    }

    /// Records sent but not yet delivered or failed.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight()
    }

    /// The error the producer failed with for good, if it did (fencing
    /// included).
    pub fn fatal_error(&self, op: &'static str) -> Option<Error> {
        let (code, reason) = self.producer.inner.client().fatal_error()?;
        Some(if is_fencing(code) {
            Error::Fenced {
                transactional_id: self.transactional_id.to_string(),
                op,
                reason,
            }
        } else {
            Error::TxnFatal {
                transactional_id: self.transactional_id.to_string(),
                op,
                reason,
            }
        })
    }

    /// Runs a blocking transaction call off the async threads.
    async fn blocking(
        &self,
        op: &'static str,
        call: impl FnOnce(&FutureProducer<SluiceContext>, Timeout) -> Result<(), KafkaError>
            + Send
            + 'static,
    ) -> Result<()> {
        let p = self.producer.inner.clone();
        let timeout = Timeout::After(self.timeout);
        tokio::task::spawn_blocking(move || call(&p, timeout))
            .await
            .map_err(|_| Error::Closed(op))?
            .map_err(|e| self.txn_error(op, e))
    }

    fn txn_error(&self, op: &'static str, e: KafkaError) -> Error {
        let id = || self.transactional_id.to_string();
        match e {
            KafkaError::Transaction(re) => {
                if is_fencing(re.code()) {
                    return Error::Fenced {
                        transactional_id: id(),
                        op,
                        reason: describe(&re),
                    };
                }
                if re.txn_requires_abort() {
                    Error::TxnAbortable {
                        transactional_id: id(),
                        op,
                        source: Box::new(KafkaError::Transaction(re)),
                    }
                } else if re.is_fatal() {
                    // The call's error may be a generic "fatal" one; the
                    // client keeps the original cause.
                    self.fatal_error(op).unwrap_or_else(|| Error::TxnFatal {
                        transactional_id: id(),
                        op,
                        reason: describe(&re),
                    })
                } else if re.is_retriable() {
                    Error::TxnRetriable {
                        transactional_id: id(),
                        op,
                        source: Box::new(KafkaError::Transaction(re)),
                    }
                } else {
                    Error::Kafka {
                        op,
                        source: KafkaError::Transaction(re),
                    }
                }
            }
            // `commit_transaction` first flushes; running out of time
            // there leaves the transaction open and the commit repeatable.
            KafkaError::Flush(_) => Error::TxnRetriable {
                transactional_id: id(),
                op,
                source: Box::new(e),
            },
            other => Error::Kafka { op, source: other },
        }
    }
}

/// Error codes meaning a newer producer with the same `transactional.id`
/// took over (librdkafka raises its own `_FENCED` for the broker's
/// `PRODUCER_FENCED` and, for transactional producers,
/// `INVALID_PRODUCER_EPOCH`).
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

fn describe(e: &RDKafkaError) -> String {
    let s = e.to_string();
    if s.is_empty() {
        format!("{:?}", e.code())
    } else {
        s
    }
}
