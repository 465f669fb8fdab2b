//! Azure Data Explorer (Kusto) sink, compatible with the Kafka Connect
//! Kusto sink (`com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector`).
//!
//! This crate holds the foundation the sink is built on:
//!
//! - [`config`]: the connector's properties, the official connector's names
//!   (including the 1.x `kusto.url`) and defaults, parsed into a typed
//!   [`config::KustoConfig`] with every problem reported together.
//! - [`auth`]: Azure AD tokens for the cluster (client credentials, managed
//!   identity, workload identity, or a static token), cached and refreshed
//!   before they expire.
//!
//! The connector is not registered with the worker yet: it is offered to
//! users only once it ingests.

pub mod auth;
pub mod client;
pub mod config;
pub mod format;
pub mod queued;
pub mod schema;
pub mod streaming;
