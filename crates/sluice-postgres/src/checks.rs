//! Trying a connector config against the database before it runs (what
//! Debezium's validation does): can Sluice reach the server, log in, use
//! logical replication, and do the table filters match tables? Each problem
//! is reported on the key it is about, with the fix. And when a connector
//! is deleted: what it leaves behind (its slot and publication), with the
//! SQL to remove them.

use std::time::Duration;

use sluice_core::config::{closest, ConfigError, Props};
use sluice_core::connector::Leftover;
use tokio_postgres::Client;

use crate::catalog;
use crate::config::{PostgresConfig, PublicationMode};
use crate::error::{sqlstate, TlsRefused};
use crate::replication::{quote_ident, quote_literal};

/// How long the checks wait for the server.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The key a connection failure is about, and what to say.
fn connection_problem(cfg: &PostgresConfig, e: &anyhow::Error) -> ConfigError {
    let at = format!("{}:{}", cfg.conn.host, cfg.conn.port);
    let (key, value, msg) = match sqlstate(e).as_deref() {
        Some("28P01") | Some("28000") => (
            "database.password",
            None,
            format!(
                "PostgreSQL at {at} refused the login of user '{}': {e:#}. Check database.user and database.password (or pg_hba.conf)",
                cfg.conn.user
            ),
        ),
        Some("3D000") => (
            "database.dbname",
            Some(cfg.conn.dbname.clone()),
            format!("database '{}' does not exist at {at}: {e:#}", cfg.conn.dbname),
        ),
        _ if e.chain().any(|c| c.downcast_ref::<TlsRefused>().is_some()) => (
            "database.sslmode",
            None,
            format!("{e:#}"),
        ),
        _ => (
            "database.hostname",
            Some(cfg.conn.host.clone()),
            format!(
                "cannot reach PostgreSQL at {at}: {e:#}. Check database.hostname and database.port, and that the server accepts TCP connections from this host"
            ),
        ),
    };
    ConfigError::new(key, value.as_deref(), msg)
}

/// Connects, or the problem on its key.
async fn connect(cfg: &PostgresConfig) -> Result<Client, ConfigError> {
    match tokio::time::timeout(CHECK_TIMEOUT, cfg.conn.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(connection_problem(cfg, &e)),
        Err(_) => Err(ConfigError::new(
            "database.hostname",
            Some(&cfg.conn.host),
            format!(
                "no answer from PostgreSQL at {}:{} within {} s: check database.hostname, database.port and firewalls",
                cfg.conn.host,
                cfg.conn.port,
                CHECK_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Every table of the database as `schema.table`.
async fn all_tables(client: &Client) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT n.nspname::text || '.' || c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The names a filter pattern most likely meant.
fn suggestions(pattern: &str, names: &[String]) -> String {
    let near = closest(
        pattern,
        names.iter().map(String::as_str),
        pattern.len() / 2 + 2,
    );
    let near: Vec<&str> = near.into_iter().take(3).collect();
    if near.is_empty() {
        let some: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        if some.is_empty() {
            "the database has no tables yet".to_string()
        } else {
            format!("tables there include: {}", some.join(", "))
        }
    } else {
        format!("did you mean {}?", near.join(", "))
    }
}

/// Tries `props` (a config that passed its static validation) against the
/// database.
pub async fn check_external(props: &Props) -> Vec<ConfigError> {
    let cfg = match PostgresConfig::parse(props) {
        Ok((c, _)) => c,
        // Static validation reports these.
        Err(_) => return Vec::new(),
    };
    let client = match connect(&cfg).await {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    if let Err(e) = catalog::preflight(&client, &cfg).await {
        let key = if e.to_string().contains("REPLICATION attribute") {
            "database.user"
        } else {
            "database.hostname"
        };
        problems.push(ConfigError::new(key, None, format!("{e:#}")));
    }
    let names = match all_tables(&client).await {
        Ok(n) => n,
        Err(e) => {
            problems.push(ConfigError::new(
                "database.dbname",
                None,
                format!(
                    "listing the tables of database '{}': {e:#}",
                    cfg.conn.dbname
                ),
            ));
            return problems;
        }
    };
    // Each include pattern must match some table: a typo would otherwise
    // capture nothing (or, for a misspelt key, everything).
    for key in ["table.include.list", "table.whitelist"] {
        let Some(list) = props.get(key) else { continue };
        for pattern in sluice_core::config::split_list(list) {
            let Ok(re) = regex::Regex::new(&format!("^(?:{pattern})$")) else {
                continue;
            };
            if !names.iter().any(|n| re.is_match(n)) {
                problems.push(ConfigError::new(
                    key,
                    Some(list),
                    format!(
                        "'{pattern}' matches no table of database '{}' (names are schema.table, matched whole); {}",
                        cfg.conn.dbname,
                        suggestions(&pattern, &names)
                    ),
                ));
            }
        }
    }
    for key in ["schema.include.list", "schema.whitelist"] {
        let Some(list) = props.get(key) else { continue };
        let schemas: Vec<String> = {
            let mut s: Vec<String> = names
                .iter()
                .filter_map(|n| n.split_once('.').map(|(s, _)| s.to_string()))
                .collect();
            s.dedup();
            s
        };
        for pattern in sluice_core::config::split_list(list) {
            let Ok(re) = regex::Regex::new(&format!("^(?:{pattern})$")) else {
                continue;
            };
            if !schemas.iter().any(|n| re.is_match(n)) {
                problems.push(ConfigError::new(
                    key,
                    Some(list),
                    format!(
                        "'{pattern}' matches no schema with tables in database '{}'; {}",
                        cfg.conn.dbname,
                        suggestions(&pattern, &schemas)
                    ),
                ));
            }
        }
    }
    if cfg.publication_mode == PublicationMode::Disabled {
        match client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&cfg.publication_name],
            )
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(ConfigError::new(
                "publication.name",
                Some(&cfg.publication_name),
                format!(
                    "publication '{}' does not exist and publication.autocreate.mode=disabled: create it (CREATE PUBLICATION {} FOR ALL TABLES;) or set publication.autocreate.mode=all_tables",
                    cfg.publication_name,
                    quote_ident(&cfg.publication_name)
                ),
            )),
            Err(e) => problems.push(ConfigError::new(
                "publication.name",
                None,
                format!("reading publications: {e}"),
            )),
        }
    }
    match catalog::slot_info(&client, &cfg.slot_name).await {
        Ok(Some(s)) if s.plugin.as_deref() != Some("pgoutput") => {
            problems.push(ConfigError::new(
                "slot.name",
                Some(&cfg.slot_name),
                format!(
                    "replication slot '{}' exists with plugin '{}', but Sluice decodes pgoutput: choose another slot.name, or drop it once no consumer needs it (SELECT pg_drop_replication_slot({});)",
                    cfg.slot_name,
                    s.plugin.as_deref().unwrap_or("?"),
                    quote_literal(&cfg.slot_name)
                ),
            ));
        }
        Ok(Some(s)) if s.database.as_deref() != Some(cfg.conn.dbname.as_str()) => {
            problems.push(ConfigError::new(
                "slot.name",
                Some(&cfg.slot_name),
                format!(
                    "replication slot '{}' belongs to database '{}', not '{}': choose another slot.name",
                    cfg.slot_name,
                    s.database.as_deref().unwrap_or("?"),
                    cfg.conn.dbname
                ),
            ));
        }
        _ => {}
    }
    problems
}

/// What a deleted connector leaves in the database, with the SQL that
/// removes it. With `slot.drop.on.stop=true` its task dropped the slot
/// when it stopped; one still there is reported.
pub async fn left_behind(props: &Props) -> Vec<Leftover> {
    let Ok((cfg, _)) = PostgresConfig::parse(props) else {
        return Vec::new();
    };
    let client = match tokio::time::timeout(CHECK_TIMEOUT, cfg.conn.connect()).await {
        Ok(Ok(c)) => c,
        _ => {
            return vec![Leftover {
                resource: cfg.slot_name.clone(),
                retained_bytes: None,
                note: format!(
                    "could not reach PostgreSQL at {}:{} to check what connector {} left: its replication slot '{}' may still retain WAL; once nothing needs it: SELECT pg_drop_replication_slot({});",
                    cfg.conn.host,
                    cfg.conn.port,
                    cfg.name,
                    cfg.slot_name,
                    quote_literal(&cfg.slot_name)
                ),
            }]
        }
    };
    let mut notes = Vec::new();
    let slot = client
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot_name],
        )
        .await;
    if let Ok(Some(row)) = slot {
        let retained: Option<i64> = row.get(0);
        notes.push(Leftover {
            resource: cfg.slot_name.clone(),
            retained_bytes: retained,
            note: format!(
                "replication slot '{}' of deleted connector {} is left in place and retains WAL ({} now, growing until it is dropped). If no connector will resume from it: SELECT pg_drop_replication_slot({}); (or set slot.drop.on.stop=true to drop it when a connector stops)",
                cfg.slot_name,
                cfg.name,
                retained.map_or_else(|| "unknown size".into(), size_text),
                quote_literal(&cfg.slot_name)
            ),
        });
    }
    if cfg.publication_mode != PublicationMode::Disabled {
        if let Ok(Some(_)) = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&cfg.publication_name],
            )
            .await
        {
            notes.push(Leftover {
                resource: cfg.publication_name.clone(),
                retained_bytes: None,
                note: format!(
                    "publication '{}' is left in place (it costs nothing without a slot reading it); to remove it: DROP PUBLICATION {};",
                    cfg.publication_name,
                    quote_ident(&cfg.publication_name)
                ),
            });
        }
    }
    notes
}

/// Bytes as PostgreSQL's `pg_size_pretty` writes them.
fn size_text(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v.abs() >= 10_240.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", v.round() as i64, UNITS[unit])
}

/// A slot's health as PostgreSQL 13+ reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHealth {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that can still be written before the slot is in
    /// danger of invalidation (None: no `max_slot_wal_keep_size`).
    pub safe_wal_size: Option<i64>,
    /// Bytes of WAL the slot retains.
    pub retained_bytes: Option<i64>,
}

/// The health of slot `slot`; None when it does not exist (or the server,
/// before PostgreSQL 13, does not report it).
pub async fn slot_health(client: &Client, slot: &str) -> anyhow::Result<Option<SlotHealth>> {
    use anyhow::Context as _;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .context("reading the server version")?
        .get(0);
    if version < 130000 {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT wal_status::text, safe_wal_size::bigint, \
             pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .with_context(|| format!("reading the health of replication slot {slot}"))?;
    Ok(row.map(|r| SlotHealth {
        wal_status: r.get(0),
        safe_wal_size: r.get(1),
        retained_bytes: r.get(2),
    }))
}
