//! Sluice's Kafka Connect-compatible worker.
//!
//! How a worker is built and run:
//! 1. a [`Registry`] of connector plugins (`connector.class` lookup);
//! 2. worker properties ([`config_files::load_props`]) and connector configs
//!    ([`config_files::load_connector`]);
//! 3. [`Worker::new`] validates everything, reporting every error at once;
//! 4. [`Worker::run`] runs until its shutdown token is cancelled.
//!
//! Where things are:
//! - [`runtime`]: connectors' and tasks' lives (start, retry, stop,
//!   restart), whatever the mode; [`runtime::WorkerHandle`] is what the
//!   [`rest`] API drives;
//! - [`transport`]: where records wait between source and sink tasks (a
//!   local log, or Kafka);
//! - [`offsets`]: where source offsets are kept (a file, or a topic), and
//!   [`committer`]: when they are written;
//! - [`distributed`]: a worker of a group (config, status and offsets
//!   topics, and the group's assignments);
//! - [`source_sender`] and [`sink_driver`]: a source task's way out and a
//!   sink task's loop; [`delivery`]: which records are stored;
//! - [`error_handling`]: the `errors.*` handling of bad records; [`transforms`]
//!   (the `sluice-transforms` crate): single message transforms;
//! - [`file_sink`], [`null_sink`]: the built-in sinks.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod committer;
pub mod config_files;
pub mod connector_config;
pub mod converters;
pub mod delivery;
pub mod distributed;
pub mod error_handling;
pub mod exporter;
pub mod file_sink;
pub mod metrics;
pub mod murmur2;
pub mod null_sink;
pub mod offsets;
pub mod properties;
pub mod registry;
pub mod rest;
pub mod runtime;
pub mod signal_channel;
pub mod sink_driver;
pub mod source_sender;
pub mod topics;
pub mod transport;
pub mod worker_config;

/// The Kafka client library of the Kafka transport (for tools and tests).
pub use sluice_kafka;
/// The single message transforms connectors configure (`transforms.*`).
pub use sluice_transforms as transforms;

pub use config_files::ConnectorFile;
pub use connector_config::ConfigReport;
pub use registry::Registry;
pub use runtime::{Worker, WorkerError, WorkerHandle};
pub use worker_config::WorkerConfig;
