//! Catalog work over a normal SQL session: preflight checks that tell the
//! user the exact fix, table discovery, publication management, slot
//! inspection, and per-table column and key metadata.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

use crate::config::{PostgresConfig, PublicationMode};
use crate::replication::{quote_ident, quote_literal};

/// A captured table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TableId {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub table: String,
}

impl TableId {
    /// `"schema"."table"` for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Column metadata from the catalog.
#[derive(Debug, Clone)]
pub struct CatalogColumn {
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub typmod: i32,
    /// NOT NULL.
    pub not_null: bool,
    /// The type's name (`pg_type.typname`: `int4`, `_text`, a domain's or an
    /// enum's own name).
    pub type_name: String,
    /// The `DEFAULT` expression as PostgreSQL prints it (`pg_get_expr`);
    /// None for no default and for generated columns.
    pub default_expr: Option<String>,
}

/// Table metadata from the catalog.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    /// Relation OID.
    pub oid: u32,
    /// Name.
    pub id: TableId,
    /// Columns in attnum order.
    pub columns: Vec<CatalogColumn>,
    /// Primary key columns (or the replica identity index), in key order.
    pub key: Vec<String>,
    /// REPLICA IDENTITY: d, n, f, i.
    pub replica_identity: char,
    /// A partitioned table: its rows live in its partitions.
    pub partitioned: bool,
}

impl CatalogTable {
    /// The columns as a relation message would give them.
    pub fn rel_columns(&self) -> Vec<crate::table::RelColumn> {
        self.columns
            .iter()
            .map(|c| crate::table::RelColumn {
                name: c.name.clone(),
                type_oid: c.type_oid,
                typmod: c.typmod,
            })
            .collect()
    }
}

/// Checks what logical replication needs, with the fix for each problem.
pub async fn preflight(client: &Client, cfg: &PostgresConfig) -> Result<u32> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
             r.rolreplication, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .context("reading server settings")?;
    let wal_level: String = row.get(0);
    let version: i32 = row.get(1);
    let can_replicate: bool = row.get(2);
    let superuser: bool = row.get(3);
    if version < 100000 {
        bail!("PostgreSQL {version} is too old: Sluice needs PostgreSQL 10 or later (pgoutput)");
    }
    if wal_level != "logical" {
        bail!(
            "wal_level is '{wal_level}' but logical decoding needs 'logical'. Fix: run \
             ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"
        );
    }
    if !can_replicate && !superuser {
        bail!(
            "user '{}' lacks the REPLICATION attribute needed to stream changes. Fix: run \
             ALTER ROLE {} REPLICATION;",
            cfg.conn.user,
            quote_ident(&cfg.conn.user)
        );
    }
    Ok(version as u32)
}

/// Every table (and partitioned table) the config captures, by name.
pub async fn discover_tables(client: &Client, cfg: &PostgresConfig) -> Result<Vec<TableId>> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .context("listing tables")?;
    let mut tables: Vec<TableId> = rows
        .iter()
        .map(|r| TableId {
            schema: r.get(0),
            table: r.get(1),
        })
        .filter(|t| cfg.table_included(&t.schema, &t.table))
        .collect();
    // Debezium snapshots tables in the order of table.include.list (the
    // first pattern a table matches), then by name.
    tables.sort_by_key(|t| (cfg.include_rank(&t.schema, &t.table), t.clone()));
    Ok(tables)
}

/// Loads columns, key and replica identity of a table by name.
pub async fn load_table(client: &Client, id: &TableId) -> Result<Option<CatalogTable>> {
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&id.schema, &id.table],
        )
        .await
        .with_context(|| format!("looking up table {id}"))?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let ident: String = row.get(1);
    load_table_by_oid(client, oid, id.clone(), ident.chars().next().unwrap_or('d'))
        .await
        .map(Some)
}

/// Loads a table's metadata by OID.
pub async fn load_table_by_oid(
    client: &Client,
    oid: u32,
    id: TableId,
    replica_identity: char,
) -> Result<CatalogTable> {
    let partitioned: bool = client
        .query_one("SELECT relkind = 'p' FROM pg_class WHERE oid = $1", &[&oid])
        .await
        .with_context(|| format!("reading the kind of {id}"))?
        .get(0);
    let generated = if client_supports_generated(client).await {
        "a.attgenerated <> ''"
    } else {
        "false"
    };
    let cols = client
        .query(
            &format!(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, t.typname::text, \
                 CASE WHEN {generated} THEN NULL ELSE pg_get_expr(d.adbin, d.adrelid) END \
                 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
            ),
            &[&oid],
        )
        .await
        .with_context(|| format!("reading columns of {id}"))?;
    let columns = cols
        .iter()
        .map(|r| CatalogColumn {
            name: r.get(0),
            type_oid: r.get(1),
            typmod: r.get(2),
            not_null: r.get(3),
            type_name: r.get(4),
            default_expr: r.get(5),
        })
        .collect();
    let key_rows = client
        .query(
            "SELECT a.attname::text, i.indisprimary FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident) \
             ORDER BY i.indisprimary DESC, k.ord",
            &[&oid],
        )
        .await
        .with_context(|| format!("reading the key of {id}"))?;
    let has_pk = key_rows.iter().any(|r| r.get::<_, bool>(1));
    let key = key_rows
        .iter()
        .filter(|r| r.get::<_, bool>(1) == has_pk)
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(CatalogTable {
        oid,
        id,
        columns,
        key,
        replica_identity,
        partitioned,
    })
}

/// Whether the server has generated columns (`pg_attribute.attgenerated`,
/// PostgreSQL 12+).
async fn client_supports_generated(client: &Client) -> bool {
    client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 120000",
            &[],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
}

/// The topmost partitioned table a partition belongs to, if `oid` is a
/// partition (changes to partitions are reported under their root).
pub async fn partition_root(client: &Client, oid: u32) -> Result<Option<u32>> {
    let row = client
        .query_one(
            "WITH RECURSIVE up(relid, depth) AS ( \
               SELECT $1::oid, 0 UNION ALL \
               SELECT i.inhparent, up.depth + 1 FROM pg_inherits i \
               JOIN pg_class c ON c.oid = i.inhrelid AND c.relispartition \
               JOIN up ON i.inhrelid = up.relid) \
             SELECT relid FROM up ORDER BY depth DESC LIMIT 1",
            &[&oid],
        )
        .await
        .context("looking up a partition's root table")?;
    let root: u32 = row.get(0);
    Ok((root != oid).then_some(root))
}

/// Looks up a table's name and replica identity by OID.
pub async fn table_by_oid(client: &Client, oid: u32) -> Result<Option<(TableId, char)>> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .context("looking up a relation")?;
    Ok(row.map(|r| {
        let ident: String = r.get(2);
        (
            TableId {
                schema: r.get(0),
                table: r.get(1),
            },
            ident.chars().next().unwrap_or('d'),
        )
    }))
}

/// Creates or checks the publication per `publication.autocreate.mode` and
/// checks that it covers every captured table.
pub async fn ensure_publication(
    client: &Client,
    cfg: &PostgresConfig,
    tables: &[TableId],
) -> Result<()> {
    let pubname = &cfg.publication_name;
    let existing = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[pubname],
        )
        .await
        .context("reading pg_publication")?;
    let list = tables
        .iter()
        .map(TableId::quoted)
        .collect::<Vec<_>>()
        .join(", ");
    let create = |sql: String| async move {
        client.batch_execute(&sql).await.with_context(|| {
            format!(
                "creating publication with '{sql}': the user needs CREATE on the database \
                 (and superuser for FOR ALL TABLES); or create it yourself and set \
                 publication.autocreate.mode=disabled"
            )
        })
    };
    match (existing, cfg.publication_mode) {
        (None, PublicationMode::AllTables) => {
            create(format!(
                "CREATE PUBLICATION {} FOR ALL TABLES",
                quote_ident(pubname)
            ))
            .await?;
            tracing::info!("created publication {pubname} FOR ALL TABLES");
            return Ok(());
        }
        (None, PublicationMode::Filtered) => {
            if tables.is_empty() {
                create(format!("CREATE PUBLICATION {}", quote_ident(pubname))).await?;
            } else {
                create(format!(
                    "CREATE PUBLICATION {} FOR TABLE {list}",
                    quote_ident(pubname)
                ))
                .await?;
            }
            tracing::info!("created publication {pubname} for {} tables", tables.len());
            return Ok(());
        }
        (None, PublicationMode::NoTables) => {
            create(format!("CREATE PUBLICATION {}", quote_ident(pubname))).await?;
            tracing::info!("created publication {pubname} with no tables");
        }
        (None, PublicationMode::Disabled) => {
            bail!(
            "publication '{pubname}' does not exist and publication.autocreate.mode is disabled. \
             Fix: run CREATE PUBLICATION {} FOR TABLE {};",
            quote_ident(pubname),
            if list.is_empty() { "<tables>".to_string() } else { list.clone() }
        )
        }
        (Some(row), mode) => {
            let all: bool = row.get(0);
            if all {
                return Ok(());
            }
            if mode == PublicationMode::Filtered && !tables.is_empty() {
                let covered = published_tables(client, pubname).await?;
                let wanted: BTreeSet<TableId> = tables.iter().cloned().collect();
                if covered != wanted {
                    client
                        .batch_execute(&format!(
                            "ALTER PUBLICATION {} SET TABLE {list}",
                            quote_ident(pubname)
                        ))
                        .await
                        .with_context(|| {
                            format!("updating publication {pubname} to the captured tables")
                        })?;
                    tracing::info!("updated publication {pubname} to {} tables", tables.len());
                }
                return Ok(());
            }
        }
    }
    let covered = published_tables(client, pubname).await?;
    let missing: Vec<&TableId> = tables.iter().filter(|t| !covered.contains(t)).collect();
    if !missing.is_empty() {
        let names = missing
            .iter()
            .map(|t| t.quoted())
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "publication '{pubname}' does not cover captured table(s) {names}, so their changes \
             would never arrive. Fix: run ALTER PUBLICATION {} ADD TABLE {names}; or narrow \
             table.include.list",
            quote_ident(pubname)
        );
    }
    Ok(())
}

async fn published_tables(client: &Client, pubname: &str) -> Result<BTreeSet<TableId>> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&pubname],
        )
        .await
        .context("reading pg_publication_tables")?;
    Ok(rows
        .iter()
        .map(|r| TableId {
            schema: r.get(0),
            table: r.get(1),
        })
        .collect())
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// Output plugin.
    pub plugin: Option<String>,
    /// Database.
    pub database: Option<String>,
    /// Whether a process streams from it now.
    pub active_pid: Option<i32>,
    /// Confirmed flush LSN.
    pub confirmed_flush: Option<u64>,
}

/// Reads the slot named `slot`.
pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots")?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush: r
            .get::<_, Option<String>>(3)
            .and_then(|s| sluice_pgoutput::parse_lsn(&s).ok()),
    }))
}

/// Drops a slot. The walsender of a replication connection that was just
/// closed can hold the slot for a moment after the client is gone, so a slot
/// that is still active is retried for a few seconds before giving up.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<()> {
    let mut attempt = 0;
    loop {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if attempt < 50
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("dropping replication slot {slot}"))
            }
        }
    }
}

/// Warns about captured tables whose updates and deletes PostgreSQL will
/// refuse or send without a key, with the fix.
pub fn key_warnings(tables: &HashMap<u32, CatalogTable>) -> Vec<String> {
    let mut out = Vec::new();
    for t in tables.values() {
        if t.key.is_empty() && t.replica_identity == 'd' {
            out.push(format!(
                "table {} has no primary key and REPLICA IDENTITY DEFAULT: its events have a null \
                 key, and PostgreSQL rejects UPDATE and DELETE on it while it is published. Fix: \
                 add a primary key, or run ALTER TABLE {} REPLICA IDENTITY FULL;",
                t.id,
                t.id.quoted()
            ));
        }
    }
    out.sort();
    out
}

/// Runs `heartbeat.action.query`.
pub async fn run_action_query(client: &Client, sql: &str) -> Result<()> {
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("running heartbeat.action.query {}", quote_literal(sql)))
}
