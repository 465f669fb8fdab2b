//! Azure Data Explorer (Kusto) sink, compatible with the Kafka Connect
//! Kusto sink (`com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector`):
//! the same class name and properties (including the 1.x `kusto.url`),
//! the same serialized records, so existing tables and ingestion mappings
//! keep working.
//!
//! - [`config`]: the connector's properties and defaults, parsed into a
//!   typed [`config::KustoConfig`] with every problem reported together.
//! - [`auth`]: Azure AD tokens (client credentials, managed identity,
//!   workload identity, or a static token), cached and refreshed.
//! - [`client`]: the Kusto REST API (management and query) with Kusto's
//!   errors classified for retries.
//! - [`format`] and [`schema`]: records serialized as the official
//!   connector does; Kusto columns for a record schema.
//! - [`queued`] and [`streaming`]: the two ingestion paths.
//! - [`sink`]: the task (batches per topic partition, retries,
//!   `behavior.on.error`, dead-letter queues ([`dlq`]), deduplication
//!   ([`journal`]), table creation and start-up checks ([`tables`])).
//! - [`generations`]: each batch tagged with its snapshot generation, and
//!   older generations dropped once a snapshot is complete
//!   (`kusto.snapshot.reconcile`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sluice_core::config::{ConfigDef, ConfigErrors, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SinkContext, SinkTask};

pub mod auth;
pub mod client;
pub mod config;
pub mod dlq;
pub mod format;
pub mod generations;
pub mod journal;
pub mod metrics;
pub mod queued;
pub mod schema;
pub mod sink;
pub mod streaming;
pub mod tables;

/// The official connector's class name.
pub const CLASS: &str = "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector";

/// The Kusto sink plugin.
pub fn plugin() -> Arc<dyn ConnectorPlugin> {
    Arc::new(KustoSink)
}

struct KustoSink;

impl ConnectorPlugin for KustoSink {
    fn class(&self) -> &'static str {
        CLASS
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["kusto", "KustoSinkConnector", "KustoSink", "adx"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_def(&self) -> ConfigDef {
        config::config_def()
    }
    fn validate(&self, props: &Props) -> Result<Vec<String>, ConfigErrors> {
        let cfg = config::KustoConfig::from_props(props)?;
        // Formats Kusto ingests but Sluice cannot write are refused here,
        // not at the first record.
        let unsupported: Vec<sluice_core::config::ConfigError> = cfg
            .mappings
            .iter()
            .filter_map(|m| {
                format::BatchEncoder::new(&m.format).err().map(|e| {
                    sluice_core::config::ConfigError {
                        key: config::MAPPING.to_string(),
                        value: Some(m.format.clone()),
                        message: format!("topic '{}': {e}", m.topic),
                    }
                })
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(ConfigErrors(unsupported));
        }
        let mut warnings = Vec::new();
        if props.contains_key(config::INGESTION_URL_1X)
            && !props.contains_key(config::INGESTION_URL)
        {
            warnings.push(format!(
                "{} is the 1.x name of {}; both are accepted",
                config::INGESTION_URL_1X,
                config::INGESTION_URL
            ));
        }
        if cfg.dedup {
            for m in cfg.mappings.iter().filter(|m| m.streaming) {
                warnings.push(format!(
                    "topic '{}' uses streaming ingestion, which cannot tag extents: {} applies to its batches only when they fall back to queued ingestion",
                    m.topic,
                    config::DEDUP
                ));
            }
        }
        Ok(warnings)
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        // Tasks share the topics' partitions through the consumer group.
        vec![props.clone(); max_tasks.max(1)]
    }
    fn create_sink_task(&self, props: &Props, ctx: SinkContext) -> Result<Box<dyn SinkTask>> {
        let cfg = config::KustoConfig::from_props(props).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Box::new(sink::KustoSinkTask::new(cfg, ctx)?))
    }
}

/// The HTTP client every request of the sink goes through (through
/// `proxy.host`/`proxy.port` when set).
pub fn http_client(cfg: &config::KustoConfig) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(10 * 60))
        .user_agent(concat!("Sluice/", env!("CARGO_PKG_VERSION")));
    if let Some((host, port)) = &cfg.proxy {
        let url = if host.contains("://") {
            format!("{host}:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        b = b.proxy(
            reqwest::Proxy::all(&url)
                .with_context(|| format!("proxy.host/proxy.port: '{url}' is not a valid proxy"))?,
        );
    }
    b.build().context("building the HTTP client")
}

/// Clients for the engine (`kusto.query.url`) and the data-management
/// endpoint (`kusto.ingestion.url`), each with tokens for its own URL.
pub fn connect_clients(
    cfg: &config::KustoConfig,
    env: &auth::AzureEnv,
) -> Result<(client::KustoClient, client::KustoClient)> {
    let http = http_client(cfg)?;
    let provider = |url: &str| -> Result<Arc<auth::TokenProvider>> {
        let p = auth::TokenProvider::new(auth::Credential::from_config(cfg, env)?, url, env)?;
        let p = match &cfg.proxy {
            Some((host, port)) => p.with_proxy(host, *port)?,
            None => p,
        };
        Ok(Arc::new(p))
    };
    let engine = client::KustoClient::new(&cfg.query_url, provider(&cfg.query_url)?, http.clone())
        .map_err(|e| anyhow::anyhow!("kusto.query.url: {e}"))?;
    let dm = client::KustoClient::new(&cfg.ingestion_url, provider(&cfg.ingestion_url)?, http)
        .map_err(|e| anyhow::anyhow!("kusto.ingestion.url: {e}"))?;
    Ok((engine, dm))
}
