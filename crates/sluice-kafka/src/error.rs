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
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { op, source }
    }
}

/// The transport's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
