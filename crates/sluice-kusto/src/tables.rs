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
///
/// A field whose type changed (a PostgreSQL `ALTER COLUMN ... TYPE`) is
/// not forced into its old column, where Kusto would drop the values that
/// do not fit, nor is the column altered (Kusto does not convert the rows
/// it holds): its values go to a new column `<field>_<type>` (`amount_long`)
/// and Sluice's mapping routes the field there; the old rows keep theirs.
#[derive(Default)]
pub struct TableMaker {
    /// Columns the table has, per (database, table), read from the engine
    /// once and kept up to date.
    known: HashMap<(String, String), Vec<(String, &'static str)>>,
    /// Mappings known to exist, per (database, table, name).
    mappings: BTreeSet<(String, String, String)>,
    /// The mappings Sluice created, with the (column, field) routes last
    /// written: they follow new columns and type changes.
    ours: HashMap<(String, String, String), Vec<(String, String)>>,
    /// The fields last made sure of, per topic: the same again needs
    /// nothing (this runs for every record).
    done: HashMap<String, Vec<(String, &'static str)>>,
}

impl TableMaker {
    /// The columns of `m`'s table as the engine has them (none when the
    /// table does not exist yet).
    async fn load(&mut self, engine: &KustoClient, m: &TopicMapping) -> Result<()> {
        let key = (m.db.clone(), m.table.clone());
        if self.known.contains_key(&key) {
            return Ok(());
        }
        let mut columns = Vec::new();
        if table_exists(engine, &m.db, &m.table).await? {
            let csl = format!(".show table {} cslschema", quote_name(&m.table));
            let t = engine.mgmt(&m.db, &csl).await.map_err(|e| {
                anyhow::anyhow!(
                    "kusto.tables.create: reading the columns of table '{}' in database '{}' failed: {e}",
                    m.table,
                    m.db
                )
            })?;
            columns = schema::parse_cslschema(t.get_str(0, "Schema").unwrap_or_default());
        }
        self.known.insert(key, columns);
        Ok(())
    }

    /// Makes sure `m`'s table has a column for every field of `value_schema`
    /// and its named JSON mapping exists and routes each field.
    pub async fn ensure(
        &mut self,
        engine: &KustoClient,
        m: &TopicMapping,
        value_schema: &Schema,
    ) -> Result<()> {
        let fields = schema::kusto_columns(value_schema).map_err(|e| {
            anyhow::anyhow!(
                "kusto.tables.create: the schema of topic '{}' has no Kusto table form: {e}",
                m.topic
            )
        })?;
        if self.done.get(&m.topic) == Some(&fields) {
            return Ok(());
        }
        self.ensure_fields(engine, m, &fields).await?;
        self.done.insert(m.topic.clone(), fields);
        Ok(())
    }

    async fn ensure_fields(
        &mut self,
        engine: &KustoClient,
        m: &TopicMapping,
        fields: &[(String, &'static str)],
    ) -> Result<()> {
        self.load(engine, m).await?;
        let key = (m.db.clone(), m.table.clone());
        let known = self.known.entry(key).or_default();
        let mut missing: Vec<(String, &'static str)> = Vec::new();
        let mut routes: Vec<(String, String)> = Vec::with_capacity(fields.len());
        let mut rerouted = Vec::new();
        for (field, ty) in fields {
            let column = match known.iter().find(|(c, _)| c == field) {
                None => {
                    missing.push((field.clone(), ty));
                    field.clone()
                }
                Some((_, existing)) if existing == ty => field.clone(),
                Some((_, existing)) => {
                    let alt = format!("{field}_{ty}");
                    match known.iter().find(|(c, _)| *c == alt) {
                        Some((_, t)) if t == ty => {}
                        Some((_, t)) => bail!(
                            "kusto.tables.create: field '{field}' of topic '{}' is now {ty}, but table '{}' has '{field}' as {existing} and '{alt}' as {t}: \
                             add a {ty} column for it (.alter-merge table {} (['{field}_new']:{ty})) and map the field there",
                            m.topic,
                            m.table,
                            quote_name(&m.table)
                        ),
                        None => missing.push((alt.clone(), ty)),
                    }
                    rerouted.push((field.clone(), *existing, *ty, alt.clone()));
                    alt
                }
            };
            routes.push((column, field.clone()));
        }
        if !missing.is_empty() {
            let csl = if known.is_empty() {
                schema::create_table_command(&m.table, &missing)
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
        let Some(name) = &m.mapping else {
            for (field, old, new, alt) in &rerouted {
                tracing::warn!(
                    "table '{}': field '{field}' of topic '{}' is now {new} but its column is {old}, and without a mapping Kusto puts it there \
                     (values that do not fit are lost); set 'mapping' in kusto.tables.topics.mapping so Sluice routes it to '{alt}'",
                    m.table,
                    m.topic
                );
            }
            return Ok(());
        };
        if mapping_kind(&m.format) != "json" {
            return Ok(());
        }
        let mkey = (m.db.clone(), m.table.clone(), name.clone());
        if let Some(written) = self.ours.get(&mkey) {
            if *written != routes {
                let csl = schema::create_routed_mapping_command(&m.table, name, &routes);
                engine.mgmt(&m.db, &csl).await.map_err(|e| {
                    anyhow::anyhow!(
                        "kusto.tables.create: updating ingestion mapping '{name}' on table '{}' failed: {e}",
                        m.table
                    )
                })?;
                for (field, old, new, alt) in &rerouted {
                    tracing::warn!(
                        "table '{}': field '{field}' of topic '{}' changed type ({old} -> {new}); its values now go to column '{alt}' \
                         (mapping '{name}'), the rows before keep '{field}': query coalesce({alt}, {field})",
                        m.table,
                        m.topic
                    );
                }
                self.ours.insert(mkey, routes);
            }
            return Ok(());
        }
        if !self.mappings.contains(&mkey) {
            let csl = format!(
                ".show table {} ingestion json mappings",
                quote_name(&m.table)
            );
            let t = engine.mgmt(&m.db, &csl).await?;
            let exists = (0..t.rows.len()).any(|i| t.get_str(i, "Name") == Some(name.as_str()));
            if !exists {
                let csl = schema::create_routed_mapping_command(&m.table, name, &routes);
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
                self.ours.insert(mkey.clone(), routes);
                self.mappings.insert(mkey);
                return Ok(());
            }
            self.mappings.insert(mkey);
        }
        for (field, old, new, _) in &rerouted {
            tracing::warn!(
                "table '{}': field '{field}' of topic '{}' is now {new} but its column is {old}; mapping '{name}' is yours, so Sluice leaves it as it is \
                 (values that do not fit the column are lost): map the field to a {new} column",
                m.table,
                m.topic
            );
        }
        Ok(())
    }
}
