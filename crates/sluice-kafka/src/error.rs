//! Errors of the Kafka transport. None of them carries a secret: config
//! errors name the key and, for non-secret keys only, the value.

use rdkafka::error::KafkaError;

/// An error of the Kafka transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A worker property is invalid or not supported.
    #[error("invalid Kafka setting {key}: {message}")]
    Config {
        /// The worker property (e.g. `producer.acks`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The brokers could not be reached in time.
    #[error("cannot reach Kafka at {bootstrap} within {timeout_ms} ms: {reason}")]
    Unreachable {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// How long Sluice waited.
        timeout_ms: u64,
        /// The last error librdkafka reported.
        reason: String,
    },
    /// A topic could not be created or checked.
    #[error("topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What went wrong.
        message: String,
    },
    /// A record was not delivered.
    #[error("delivery to {topic} failed: {source}")]
    Delivery {
        /// The destination topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Any other client operation failed.
    #[error("Kafka {op} failed: {source}")]
    Kafka {
        /// The operation (e.g. `commit`).
        op: &'static str,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The client was shut down while an operation was under way.
    #[error("Kafka client closed during {0}")]
    Closed(&'static str),
    /// A newer producer with the same `transactional.id` registered with the
    /// transaction coordinator: this producer may never write again (its
    /// open transaction is aborted by the coordinator).
    #[error("fenced: another producer with transactional.id '{transactional_id}' took over ({op}: {reason})")]
    Fenced {
        /// The shared `transactional.id`.
        transactional_id: String,
        /// The operation that found out (e.g. `commit_transaction`).
        op: &'static str,
        /// librdkafka's description.
        reason: String,
    },
    /// The open transaction failed (e.g. a record could not be delivered)
    /// and must be aborted; the producer can begin a new one afterwards.
    #[error("Kafka transaction of '{transactional_id}' must be aborted ({op} failed: {source})")]
    TxnAbortable {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The operation that failed.
        op: &'static str,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaError>,
    },
    /// The transactional producer is unusable for good (other than fenced,
    /// e.g. not authorized for its `transactional.id`).
    #[error("transactional producer '{transactional_id}' failed for good ({op}: {reason})")]
    TxnFatal {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The operation that failed.
        op: &'static str,
        /// librdkafka's description.
        reason: String,
    },
    /// A transaction call did not complete in time (e.g. the coordinator
    /// was unavailable); the same call may be made again.
    #[error("Kafka transaction {op} of '{transactional_id}' did not complete and may be retried: {source}")]
    TxnRetriable {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The operation that did not complete.
        op: &'static str,
        /// librdkafka's error.
        #[source]
        source: Box<KafkaError>,
    },
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Whether a newer producer with the same `transactional.id` took over.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Fenced { .. })
    }

    /// Whether the open transaction must be aborted before the producer can
    /// go on.
    pub fn requires_abort(&self) -> bool {
        matches!(self, Error::TxnAbortable { .. })
    }

    pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { op, source }
    }
}

/// The transport's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
