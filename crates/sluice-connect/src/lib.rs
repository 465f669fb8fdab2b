//! Sluice's Kafka Connect-compatible worker runtime, standalone mode.
//!
//! How a worker is built and run:
//! 1. a [`Registry`] of connector plugins (`connector.class` lookup);
//! 2. worker properties ([`config_files::load_props`]) and connector configs
//!    ([`config_files::load_connector`]);
//! 3. [`Worker::new`] validates everything, reporting every error at once;
//! 4. [`Worker::run`] runs until its shutdown token is cancelled or a task
//!    fails.
//!
//! Records flow in-process: source records are converted
//! ([`transport`]), routed to sink tasks by key, acknowledged after the sink
//! flushes ([`sink_driver`]), tracked per source task ([`delivery`]), and the
//! delivered offsets committed to the offset file ([`offset_file`],
//! [`committer`]) before sources hear of them.
//!
//! While it runs, a [`WorkerHandle`] ([`Worker::handle`]) creates, changes,
//! pauses, stops, restarts and deletes connectors; [`rest`] serves Kafka
//! Connect's REST API over it.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod committer;
pub mod config_files;
pub mod connector_config;
pub mod converters;
pub mod delivery;
pub mod distributed;
pub mod errors;
pub mod file_sink;
pub mod kafka_transport;
pub mod metrics;
pub mod murmur2;
pub mod null_sink;
pub mod offset_file;
pub mod properties;
pub mod registry;
pub mod rest;
pub mod sink_driver;
pub mod transforms;
pub mod transport;
pub mod worker;
pub mod worker_config;

/// The Kafka client library of the Kafka transport (for tools and tests).
pub use sluice_kafka;

pub use config_files::ConnectorFile;
pub use connector_config::ConfigReport;
pub use registry::Registry;
pub use worker::{Worker, WorkerError, WorkerHandle};
pub use worker_config::WorkerConfig;
