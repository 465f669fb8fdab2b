//! Sluice's PostgreSQL source: a consistent snapshot read in parallel chunks
//! under the replication slot's exported snapshot, then pgoutput streaming,
//! emitting events identical to Debezium's PostgreSQL connector.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod catalog;
pub mod checks;
pub mod config;
pub mod conn;
pub mod copy;
pub mod error;
pub mod events;
pub mod incremental;
pub mod replication;
pub mod slot_guard;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod table;

use std::sync::Arc;

use async_trait::async_trait;
use sluice_core::config::{ConfigDef, ConfigError, ConfigErrors, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, Leftover, RetryPolicy, SourceTask};

/// The connector plugin.
#[derive(Debug, Default)]
pub struct PostgresConnector;

#[async_trait]
impl ConnectorPlugin for PostgresConnector {
    fn class(&self) -> &'static str {
        "io.debezium.connector.postgresql.PostgresConnector"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["postgres", "postgresql", "PostgresConnector"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_def(&self) -> ConfigDef {
        config::config_def()
    }
    fn validate(&self, props: &Props) -> Result<Vec<String>, ConfigErrors> {
        config::PostgresConfig::parse(props).map(|(_, w)| w)
    }
    async fn check_external(&self, props: &Props) -> Vec<ConfigError> {
        checks::check_external(props).await
    }
    async fn left_behind(&self, props: &Props) -> Vec<Leftover> {
        checks::left_behind(props).await
    }
    /// Debezium's `errors.max.retries` (-1: without limit) and
    /// `retriable.restart.connector.wait.ms` (the longest backoff).
    fn retry_policy(&self, props: &Props) -> RetryPolicy {
        match config::PostgresConfig::parse(props) {
            Ok((cfg, _)) => RetryPolicy {
                max_retries: u32::try_from(cfg.max_retries).ok(),
                max_backoff: cfg.retry_max_wait,
            },
            Err(_) => RetryPolicy::default(),
        }
    }
    fn create_source_task(&self, props: &Props) -> anyhow::Result<Box<dyn SourceTask>> {
        // Warnings were reported when the worker validated the config.
        let (cfg, _warnings) = config::PostgresConfig::parse(props)?;
        Ok(Box::new(source::PostgresSourceTask::new(cfg)))
    }
}

/// The plugin, for the worker's registry.
pub fn plugin() -> Arc<dyn ConnectorPlugin> {
    Arc::new(PostgresConnector)
}
