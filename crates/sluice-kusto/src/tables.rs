//! What the sink checks and creates in the cluster.
//!
//! - Start-up validation: the ingestion endpoint answers and lets the
//!   principal ingest, each mapped database is reachable, and each table
//!   and named ingestion mapping exists (unless `kusto.tables.create` will
//!   create them). Every failure says what to fix: the key to change, or the
//!   Kusto command to run.
//! - `kusto.tables.create`: a table missing for a record's schema is
//!   created with `.create-merge table` (which also adds columns that appear
//!   later), and a named JSON mapping that does not exist is created from
//!   the same schema. Mappings the user made are never altered.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use sluice_core::schema::Schema;

use crate::client::{quote_name, ErrorKind, KustoClient, KustoError};
use crate::config::{KustoConfig, TopicMapping};
use crate::queued::QueuedIngestor;
use crate::schema;

/// Kusto's mapping kind for a format (`.show table T ingestion <kind>
/// mappings`).
pub fn mapping_kind(format: &str) -> &'static str {
    match format.to_ascii_lowercase().as_str() {
        "csv" | "tsv" | "scsv" | "sohsv" | "psv" | "txt" | "tsve" | "raw" => "csv",
        "avro" | "apacheavro" => "avro",
        "parquet" => "parquet",
        "orc" => "orc",
        "w3clogfile" => "w3clogfile",
        _ => "json",
    }
}

/// Turns a failure of a start-up check into a message that says what to fix.
pub fn explain(err: &KustoError, cfg: &KustoConfig, endpoint: &str, db: Option<&str>) -> String {
    let text = err.to_string();
    let fix = if text.contains("AADSTS90002") || text.contains("AADSTS900023") {
        format!(
            "the tenant in aad.auth.authority ('{}') does not exist. Fix: set aad.auth.authority to your Azure AD tenant id (a GUID) or domain",
            cfg.authority.as_deref().unwrap_or("")
        )
    } else if text.contains("AADSTS7000215")
        || text.contains("AADSTS700016")
        || text.contains("invalid_client")
    {
        "Azure AD refused the application's credentials. Fix: check aad.auth.appid and aad.auth.appkey (the secret's value, not its id), and that the secret has not expired".to_string()
    } else {
        match err.kind {
            ErrorKind::Forbidden => match db {
                Some(db) => format!(
                    "the principal may not use database '{db}'. Fix: run `.add database {} ingestors ('aadapp={};{}')` (and `viewers` for validation{}) on the cluster",
                    quote_name(db),
                    cfg.app_id.as_deref().unwrap_or("<app id>"),
                    cfg.authority.as_deref().unwrap_or("<tenant>"),
                    if cfg.create_tables { "; `admins` for kusto.tables.create" } else { "" },
                ),
                None => format!(
                    "the principal may not ingest through {endpoint}. Fix: add it as an ingestor of the target databases (`.add database <db> ingestors ('aadapp={};{}')`)",
                    cfg.app_id.as_deref().unwrap_or("<app id>"),
                    cfg.authority.as_deref().unwrap_or("<tenant>"),
                ),
            },
            ErrorKind::Unauthorized => "the cluster did not accept the token. Fix: check aad.auth.authority (the tenant of the cluster) and the credentials of aad.auth.strategy".to_string(),
            ErrorKind::NotFound => match db {
                Some(db) => format!("database '{db}' was not found. Fix: correct 'db' in kusto.tables.topics.mapping, or create the database"),
                None => format!("{endpoint} has no Kusto endpoint. Fix: check kusto.ingestion.url / kusto.query.url"),
            },
            ErrorKind::Transient | ErrorKind::Throttled if err.status.is_none() => format!(
                "the cluster at {endpoint} could not be reached. Fix: check kusto.ingestion.url (https://ingest-<cluster>.<region>.kusto.windows.net) and kusto.query.url, DNS and firewall, and proxy.host/proxy.port if a proxy is needed"
            ),
            _ => String::new(),
        }
    };
    if fix.is_empty() {
        text
    } else {
        format!("{text}\n  {fix}")
    }
}

/// Runs the start-up checks; returns warnings, or the first failure with
/// its fix.
pub async fn validate(
    cfg: &KustoConfig,
    engine: &KustoClient,
    queued: &QueuedIngestor,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let needs_queue = cfg.mappings.iter().any(|m| !m.streaming) || cfg.mappings.is_empty();
    if needs_queue || cfg.mappings.iter().any(|m| m.streaming) {
        // Streaming mappings fall back to queued ingestion too.
        if let Err(e) = queued.prepare().await {
            bail!(
                "start-up check of the ingestion endpoint {} failed: {}",
                cfg.ingestion_url,
                explain(&e, cfg, &cfg.ingestion_url, None)
            );
        }
    }
    let mut dbs_checked = BTreeSet::new();
    for m in cfg
        .mappings
        .iter()
        .filter(|m| m.topic != "*" || !m.db.is_empty())
    {
        if dbs_checked.insert(m.db.clone()) {
            if let Err(e) = engine.mgmt(&m.db, ".show tables").await {
                bail!(
                    "start-up check of database '{}' at {} failed: {}",
                    m.db,
                    cfg.query_url,
                    explain(&e, cfg, &cfg.query_url, Some(&m.db))
                );
            }
        }
        match check_table(cfg, engine, m).await {
            Ok(Some(w)) => warnings.push(w),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(warnings)
}

/// Checks one mapping's table and ingestion mapping.
async fn check_table(
    cfg: &KustoConfig,
    engine: &KustoClient,
    m: &TopicMapping,
) -> Result<Option<String>> {
    let exists = table_exists(engine, &m.db, &m.table).await.map_err(|e| {
        anyhow::anyhow!(
            "checking table '{}' in database '{}' failed: {}",
            m.table,
            m.db,
            explain(&e, cfg, &cfg.query_url, Some(&m.db))
        )
    })?;
    if !exists {
        if cfg.create_tables {
            return Ok(Some(format!(
                "table '{}' does not exist in database '{}' yet: it is created from the first record's schema (kusto.tables.create)",
                m.table, m.db
            )));
        }
        bail!(
            "table '{}' does not exist in database '{}' (topic '{}'). Fix: create it (`.create table {} (...)`), or set kusto.tables.create=true to create it from the records' schema",
            m.table,
            m.db,
            m.topic,
            quote_name(&m.table)
        );
    }
    let Some(name) = &m.mapping else {
        return Ok(None);
    };
    let kind = mapping_kind(&m.format);
    let csl = format!(
        ".show table {} ingestion {kind} mappings",
        quote_name(&m.table)
    );
    let table = engine.mgmt(&m.db, &csl).await.map_err(|e| {
        anyhow::anyhow!(
            "reading the ingestion mappings of table '{}' failed: {}",
            m.table,
            explain(&e, cfg, &cfg.query_url, Some(&m.db))
        )
    })?;
    let found = (0..table.rows.len()).any(|i| table.get_str(i, "Name") == Some(name.as_str()));
    if found {
        return Ok(None);
    }
    if cfg.create_tables && kind == "json" {
        return Ok(Some(format!(
            "ingestion mapping '{name}' does not exist on table '{}': it is created from the first record's schema (kusto.tables.create)",
            m.table
        )));
    }
    bail!(
        "ingestion mapping '{name}' ({kind}) does not exist on table '{}' in database '{}' (topic '{}'). Fix: create it (`.create table {} ingestion {kind} mapping '{name}' '[...]'`), correct 'mapping' in kusto.tables.topics.mapping{}",
        m.table,
        m.db,
        m.topic,
        quote_name(&m.table),
        if kind == "json" { ", or set kusto.tables.create=true to create it from the records' schema" } else { "" }
    )
}

async fn table_exists(engine: &KustoClient, db: &str, table: &str) -> Result<bool, KustoError> {
    let t = engine.mgmt(db, ".show tables").await?;
    Ok((0..t.rows.len()).any(|i| t.get_str(i, "TableName") == Some(table)))
}

/// Creates tables and mappings from record schemas (`kusto.tables.create`).
#[derive(Default)]
pub struct TableMaker {
    /// Columns known to exist, per (database, table), in creation order.
    known: HashMap<(String, String), Vec<(String, &'static str)>>,
    /// Mappings known to exist, per (database, table, name).
    mappings: BTreeSet<(String, String, String)>,
    /// The mappings Sluice created: they follow columns added later.
    ours: BTreeSet<(String, String, String)>,
}

impl TableMaker {
    /// Makes sure `m`'s table has a column for every field of `value_schema`
    /// and its named JSON mapping exists.
    pub async fn ensure(
        &mut self,
        engine: &KustoClient,
        m: &TopicMapping,
        value_schema: &Schema,
    ) -> Result<()> {
        let columns = schema::kusto_columns(value_schema).map_err(|e| {
            anyhow::anyhow!(
                "kusto.tables.create: the schema of topic '{}' has no Kusto table form: {e}",
                m.topic
            )
        })?;
        let key = (m.db.clone(), m.table.clone());
        let known = self.known.entry(key.clone()).or_default();
        let missing: Vec<(String, &'static str)> = columns
            .iter()
            .filter(|(c, _)| !known.iter().any(|(k, _)| k == c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let csl = if known.is_empty() {
                schema::create_table_command(&m.table, &columns)
            } else {
                schema::alter_merge_command(&m.table, &missing)
            };
            engine.mgmt(&m.db, &csl).await.map_err(|e| {
                anyhow::anyhow!(
                    "kusto.tables.create: creating or extending table '{}' in database '{}' failed: {e}",
                    m.table,
                    m.db
                )
            })?;
            tracing::info!(
                "table '{}' in database '{}' has column(s) {} (kusto.tables.create)",
                m.table,
                m.db,
                missing
                    .iter()
                    .map(|(c, _)| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            known.extend(missing.iter().cloned());
        }
        let all_columns = known.clone();
        if let Some(name) = &m.mapping {
            if mapping_kind(&m.format) == "json" {
                let mkey = (m.db.clone(), m.table.clone(), name.clone());
                if self.ours.contains(&mkey) && !missing.is_empty() {
                    let csl = schema::create_mapping_command(&m.table, name, &all_columns);
                    engine.mgmt(&m.db, &csl).await.map_err(|e| {
                        anyhow::anyhow!(
                            "kusto.tables.create: extending ingestion mapping '{name}' on table '{}' failed: {e}",
                            m.table
                        )
                    })?;
                } else if !self.mappings.contains(&mkey) {
                    let csl = format!(
                        ".show table {} ingestion json mappings",
                        quote_name(&m.table)
                    );
                    let t = engine.mgmt(&m.db, &csl).await?;
                    let exists =
                        (0..t.rows.len()).any(|i| t.get_str(i, "Name") == Some(name.as_str()));
                    if !exists {
                        let csl = schema::create_mapping_command(&m.table, name, &all_columns);
                        engine.mgmt(&m.db, &csl).await.map_err(|e| {
                            anyhow::anyhow!(
                                "kusto.tables.create: creating ingestion mapping '{name}' on table '{}' failed: {e}",
                                m.table
                            )
                        })?;
                        tracing::info!(
                            "created ingestion mapping '{name}' on table '{}' from the records' schema (kusto.tables.create)",
                            m.table
                        );
                        self.ours.insert(mkey.clone());
                    }
                    self.mappings.insert(mkey);
                }
            }
        }
        Ok(())
    }
}
