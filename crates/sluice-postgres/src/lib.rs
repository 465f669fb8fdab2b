//! Sluice's PostgreSQL source: a consistent snapshot read in parallel chunks
//! under the replication slot's exported snapshot, then pgoutput streaming,
//! emitting events identical to Debezium's PostgreSQL connector.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod catalog;
pub mod config;
pub mod conn;
pub mod copy;
pub mod error;
pub mod events;
pub mod replication;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod table;

use std::sync::Arc;

use sluice_core::config::{ConfigDef, ConfigErrors, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SourceTask};

/// The connector plugin.
#[derive(Debug, Default)]
pub struct PostgresConnector;

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
