//! `sluice query --kql`: KQL on a DuckDB file (translated by sluice-kql),
//! or sent as it is to an Azure Data Explorer cluster's v2 query endpoint
//! with the Kusto sink's credentials, so one command serves both stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use duckdb::{AccessMode, Config, Connection};
use serde_json::{json, Value as Json};
use sluice_core::config::Props;
use sluice_kql::{Catalog, KqlError, RenderSpec, ResultSet};

/// Where the tables' names and types come from.
#[derive(Debug, Default, Clone)]
pub struct CatalogInputs {
    /// `.create table` commands (ADX table definitions).
    pub schema: Option<PathBuf>,
    /// The same, as text.
    pub schema_text: Option<String>,
    /// A Kusto sink connector config: topic → ADX table (and, for a
    /// cluster URL, the credentials).
    pub kusto_config: Option<PathBuf>,
    /// A DuckDB sink connector config: topic → DuckDB table.
    pub duckdb_config: Option<PathBuf>,
    /// `NAME=DUCKDB_TABLE` pairs.
    pub tables: Vec<String>,
}

/// A result and the chart its query asked for.
pub struct Answer {
    /// The rows.
    pub result: ResultSet,
    /// `render`'s chart, if any.
    pub render: Option<RenderSpec>,
    /// The SQL run (DuckDB only).
    pub sql: Option<String>,
}

fn connector_props(path: &Path) -> Result<Props> {
    sluice_connect::config_files::load_props(path)
        .with_context(|| format!("reading the connector config {}", path.display()))
}

/// Builds the catalog of `conn` with the user's mappings and definitions;
/// notes for the user (mappings that matched nothing) are returned.
pub fn catalog(conn: &Connection, inputs: &CatalogInputs) -> Result<(Catalog, Vec<String>)> {
    let mut catalog = sluice_kql::exec::catalog_from_duckdb(conn)?;
    let mut notes = Vec::new();
    if let Some(path) = &inputs.schema {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the ADX schema {}", path.display()))?;
        catalog
            .add_schema(&text)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(text) = &inputs.schema_text {
        catalog
            .add_schema(text)
            .map_err(|e| anyhow!("the ADX table definitions: {e}"))?;
    }
    if let Some(path) = &inputs.kusto_config {
        let props = connector_props(path)?;
        let text = props
            .get(sluice_kusto::config::MAPPING)
            .or_else(|| props.get("kusto.tables.topics.mapping"))
            .ok_or_else(|| {
                anyhow!(
                    "{}: no kusto.tables.topics.mapping (the Kusto sink's topic-to-table mapping)",
                    path.display()
                )
            })?;
        let mappings = sluice_kusto::config::parse_mappings(text).map_err(|e| {
            anyhow!(
                "{}: kusto.tables.topics.mapping: {}",
                path.display(),
                e.join("; ")
            )
        })?;
        let duck_mapping = match &inputs.duckdb_config {
            Some(p) => {
                let props = connector_props(p)?;
                let text = props
                    .get("duckdb.tables.topics.mapping")
                    .cloned()
                    .unwrap_or_default();
                sluice_duckdb::mapping::Mapping::parse(&text)
                    .map_err(|e| anyhow!("{}: duckdb.tables.topics.mapping: {e}", p.display()))?
            }
            None => sluice_duckdb::mapping::Mapping::default(),
        };
        let pairs: Vec<(String, String)> = mappings
            .iter()
            .map(|m| (m.topic.clone(), m.table.clone()))
            .collect();
        notes.extend(catalog.map_topics(&pairs, |t| duck_mapping.target(t).table));
    } else if inputs.duckdb_config.is_some() {
        bail!("--duckdb-config maps topics to DuckDB tables; give --kusto-config too, for the topics' ADX tables");
    }
    for pair in &inputs.tables {
        let (kql, duck) = pair
            .split_once('=')
            .filter(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("--table '{pair}': expected NAME=DUCKDB_TABLE, e.g. Orders=orders")
            })?;
        if !catalog.tables().iter().any(|t| t.name == duck.trim()) {
            let have: Vec<&str> = catalog.tables().iter().map(|t| t.name.as_str()).collect();
            bail!(
                "--table '{pair}': the file has no table '{}' (it has {})",
                duck.trim(),
                have.join(", ")
            );
        }
        catalog.add_alias(kql.trim(), duck.trim());
    }
    Ok((catalog, notes))
}

/// The KQL error with the query line and a caret under the place.
pub fn explain(query: &str, e: &KqlError) -> String {
    let line = query
        .lines()
        .nth(e.position.line.saturating_sub(1))
        .unwrap_or("");
    let width = query
        .get(e.span.start..e.span.end.min(query.len()))
        .map(|s| s.lines().next().unwrap_or("").chars().count())
        .unwrap_or(1)
        .max(1);
    format!(
        "{e}\n  {line}\n  {}{}",
        " ".repeat(e.position.column.saturating_sub(1)),
        "^".repeat(width)
    )
}

/// Runs KQL on a DuckDB file, read-only.
pub fn on_duckdb(
    file: &Path,
    query: &str,
    inputs: &CatalogInputs,
) -> Result<(Answer, Vec<String>)> {
    if !file.exists() {
        bail!("no DuckDB file at {}", file.display());
    }
    let config = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .context("configuring DuckDB")?;
    let conn = Connection::open_with_flags(file, config)
        .with_context(|| format!("opening {}", file.display()))?;
    on_connection(&conn, query, inputs)
}

/// Runs KQL on an open DuckDB database.
pub fn on_connection(
    conn: &Connection,
    query: &str,
    inputs: &CatalogInputs,
) -> Result<(Answer, Vec<String>)> {
    let (catalog, notes) = catalog(conn, inputs)?;
    let t =
        sluice_kql::translate(query, &catalog).map_err(|e| anyhow!("{}", explain(query, &e)))?;
    let result = sluice_kql::exec::run(conn, &t)?;
    Ok((
        Answer {
            result,
            render: t.render.clone(),
            sql: Some(t.sql),
        },
        notes,
    ))
}

/// Sends KQL to an Azure Data Explorer cluster (`POST {url}/v2/rest/query`)
/// with the Kusto sink connector's credentials.
pub fn on_cluster(
    url: &str,
    query: &str,
    inputs: &CatalogInputs,
    database: Option<&str>,
) -> Result<Answer> {
    let path = inputs.kusto_config.as_ref().ok_or_else(|| {
        anyhow!("querying a cluster needs --kusto-config (the Kusto sink connector config, for its credentials and database)")
    })?;
    let props = connector_props(path)?;
    let cfg = sluice_kusto::config::KustoConfig::from_props(&props)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let db = match database {
        Some(d) => d.to_string(),
        None => {
            let mut dbs: Vec<&str> = cfg.mappings.iter().map(|m| m.db.as_str()).collect();
            dbs.sort_unstable();
            dbs.dedup();
            match dbs.as_slice() {
                [one] => one.to_string(),
                _ => bail!(
                    "{}: the mapping names the databases {}; choose one with --database",
                    path.display(),
                    dbs.join(", ")
                ),
            }
        }
    };
    let env = sluice_kusto::auth::AzureEnv::from_process();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let provider = sluice_kusto::auth::TokenProvider::new(
            sluice_kusto::auth::Credential::from_config(&cfg, &env)?,
            url,
            &env,
        )?;
        let provider = match &cfg.proxy {
            Some((host, port)) => provider.with_proxy(host, *port)?,
            None => provider,
        };
        let http = sluice_kusto::http_client(&cfg)?;
        let client = sluice_kusto::client::KustoClient::new(url, Arc::new(provider), http)?;
        let body = serde_json::to_vec(&json!({
            "db": db,
            "csl": query,
            "properties": {"Options": {}, "Parameters": {}},
        }))?;
        let what = format!("{url}/v2/rest/query in database '{db}'");
        let bytes = client
            .send(&what, "/v2/rest/query", |http, full| {
                http.post(full)
                    .header("Content-Type", "application/json; charset=utf-8")
                    .header("Accept", "application/json")
                    .body(body.clone())
            })
            .await?;
        let json: Json = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the response is not JSON"))?;
        let response = sluice_kql::v2::parse(&json).map_err(|e| anyhow!("{what}: {e}"))?;
        Ok(Answer {
            result: response.result,
            render: response.render,
            sql: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_the_place() {
        let q = "Orders\n| mv-expand x";
        let e = sluice_kql::translate(q, &Catalog::new()).expect_err("refused");
        assert_eq!(
            explain(q, &e),
            format!("{e}\n  | mv-expand x\n    ^^^^^^^^^")
        );
    }
}
