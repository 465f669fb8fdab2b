//! The blocking side: one DuckDB connection, one transaction per flush
//! holding the rows and the positions they cover.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use duckdb::{appender_params_from_iter, params, Connection};

use crate::mapping::Mode;

const POSITIONS: &str = "__sluice_positions";
const STAGE: &str = "__sluice_stage";
const LATEST: &str = "__sluice_latest";

/// How far a topic-partition has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    /// The Kafka offset of the last record written.
    Offset(i64),
    /// Debezium (lsn_commit, lsn), the phase (0 for snapshot reads, 1 for
    /// streamed changes: the first streamed change can carry the snapshot's
    /// own LSN) and the ordinal among equal positions.
    Source(i64, i64, i64, i64),
}

impl Position {
    /// Whether `self` is at or below `done` (so already written). Positions
    /// of different kinds never compare: the dedup mode changed.
    pub(crate) fn le(&self, done: &Position) -> bool {
        match (self, done) {
            (Position::Offset(a), Position::Offset(b)) => a <= b,
            (Position::Source(a, b, c, d), Position::Source(w, x, y, z)) => {
                (a, b, c, d) <= (w, x, y, z)
            }
            _ => false,
        }
    }
}

/// One staged column value.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    /// The DuckDB type for a new column.
    pub ty: String,
    /// Staged text (see `types`); None for NULL.
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    Upsert,
    Delete,
    Append,
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub kind: RowKind,
    /// Key fields (upsert mode): the primary key.
    pub key: Vec<Column>,
    pub columns: Vec<Column>,
}

#[derive(Debug, Default)]
pub(crate) struct TableBatch {
    name: String,
    mode: Option<Mode>,
    rows: Vec<Row>,
}

/// Rows per table, in arrival order, and the positions they reach.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    tables: Vec<TableBatch>,
    index: HashMap<String, usize>,
    pub positions: HashMap<(Arc<str>, i32), Position>,
}

impl Batch {
    pub(crate) fn push(&mut self, table: &str, mode: Mode, row: Row) {
        let i = *self.index.entry(table.to_owned()).or_insert_with(|| {
            self.tables.push(TableBatch {
                name: table.to_owned(),
                mode: Some(mode),
                rows: Vec::new(),
            });
            self.tables.len() - 1
        });
        self.tables[i].rows.push(row);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.positions.is_empty()
    }
}

pub(crate) struct Writer {
    conn: Connection,
    connector: String,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL turning staged text `expr` into a value of type `ty`.
fn cast(expr: &str, ty: &str) -> String {
    if ty.eq_ignore_ascii_case("BLOB") {
        format!("from_hex({expr})")
    } else if ty.ends_with(']') {
        // Lists are staged as JSON, whose strings and nulls DuckDB's JSON
        // cast reads exactly.
        format!("CAST(CAST({expr} AS JSON) AS {ty})")
    } else {
        format!("CAST({expr} AS {ty})")
    }
}

impl Writer {
    pub(crate) fn open(path: &str, connector: &str) -> anyhow::Result<Writer> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening DuckDB database '{path}' (duckdb.path)"))?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {POSITIONS} (connector VARCHAR NOT NULL, topic VARCHAR NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset BIGINT, lsn_commit BIGINT, lsn BIGINT, phase BIGINT, ordinal BIGINT, PRIMARY KEY (connector, topic, kafka_partition))"
        ))
        .with_context(|| format!("creating {POSITIONS} in '{path}'"))?;
        Ok(Writer {
            conn,
            connector: connector.to_owned(),
        })
    }

    /// The stored positions of this connector.
    pub(crate) fn positions(&self) -> anyhow::Result<Vec<(String, i32, Position)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT topic, kafka_partition, kafka_offset, lsn_commit, lsn, phase, ordinal FROM {POSITIONS} WHERE connector = ?"
        ))?;
        let rows = stmt.query_map(params![self.connector], |r| {
            let topic: String = r.get(0)?;
            let partition: i32 = r.get(1)?;
            let offset: Option<i64> = r.get(2)?;
            let source: [Option<i64>; 4] = [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?];
            Ok((topic, partition, offset, source))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (topic, partition, offset, source) = row?;
            let pos = match (offset, source) {
                (Some(o), _) => Position::Offset(o),
                (None, [Some(c), Some(l), Some(p), Some(o)]) => Position::Source(c, l, p, o),
                _ => {
                    return Err(anyhow!(
                        "{POSITIONS}: row for topic '{topic}' partition {partition} has neither an offset nor a full source position"
                    ))
                }
            };
            out.push((topic, partition, pos));
        }
        Ok(out)
    }

    /// Writes a batch and its positions in one transaction.
    pub(crate) fn write(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        match self.write_in_transaction(&batch) {
            Ok(()) => self
                .conn
                .execute_batch("COMMIT")
                .context("committing the DuckDB transaction"),
            Err(e) => {
                if let Err(r) = self.conn.execute_batch("ROLLBACK") {
                    tracing::warn!(error = %r, "DuckDB rollback after a failed flush");
                }
                Err(e)
            }
        }
    }

    fn write_in_transaction(&self, batch: &Batch) -> anyhow::Result<()> {
        for t in &batch.tables {
            self.write_table(t)
                .with_context(|| format!("writing DuckDB table '{}'", t.name))?;
        }
        let mut stmt = self.conn.prepare(&format!(
            "INSERT OR REPLACE INTO {POSITIONS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))?;
        for ((topic, partition), pos) in &batch.positions {
            let (o, c, l, p, n) = match pos {
                Position::Offset(o) => (Some(*o), None, None, None, None),
                Position::Source(c, l, p, n) => (None, Some(*c), Some(*l), Some(*p), Some(*n)),
            };
            stmt.execute(params![
                self.connector,
                topic.as_ref(),
                partition,
                o,
                c,
                l,
                p,
                n
            ])
            .with_context(|| {
                format!("storing the position of topic '{topic}' partition {partition}")
            })?;
        }
        Ok(())
    }

    /// Existing columns (lower-cased name → (name, type)); None when the
    /// table does not exist.
    fn columns(&self, table: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let mut stmt = self.conn.prepare(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        )?;
        let cols = stmt
            .query_map(params![table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if cols.is_empty() { None } else { Some(cols) })
    }

    fn write_table(&self, t: &TableBatch) -> anyhow::Result<()> {
        let mode = t.mode.unwrap_or(Mode::Upsert);
        let table = ident(&t.name);
        // The union of the batch's columns, keys first, in arrival order.
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        for row in &t.rows {
            for c in &row.key {
                if !keys.iter().any(|k| k.eq_ignore_ascii_case(&c.name)) {
                    keys.push(c.name.clone());
                }
            }
            for c in row.key.iter().chain(&row.columns) {
                if !wanted.iter().any(|(n, _)| n.eq_ignore_ascii_case(&c.name)) {
                    wanted.push((c.name.clone(), c.ty.clone()));
                }
            }
        }
        match self.columns(&t.name)? {
            None => {
                let mut defs: Vec<String> = wanted
                    .iter()
                    .map(|(n, ty)| format!("{} {ty}", ident(n)))
                    .collect();
                if mode == Mode::Upsert && !keys.is_empty() {
                    let pk: Vec<String> = keys.iter().map(|k| ident(k)).collect();
                    defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
                }
                self.conn
                    .execute_batch(&format!("CREATE TABLE {table} ({})", defs.join(", ")))
                    .context("creating the table")?;
            }
            Some(existing) => {
                for (n, ty) in &wanted {
                    if !existing.iter().any(|(e, _)| e.eq_ignore_ascii_case(n)) {
                        self.conn
                            .execute_batch(&format!(
                                "ALTER TABLE {table} ADD COLUMN {} {ty}",
                                ident(n)
                            ))
                            .with_context(|| format!("adding column '{n}' ({ty})"))?;
                    }
                }
            }
        }
        let existing = self
            .columns(&t.name)?
            .ok_or_else(|| anyhow!("table vanished while being written"))?;
        // Target type of each wanted column, as the table has it now.
        let target: Vec<(String, String)> = wanted
            .iter()
            .map(|(n, _)| {
                existing
                    .iter()
                    .find(|(e, _)| e.eq_ignore_ascii_case(n))
                    .cloned()
                    .ok_or_else(|| anyhow!("column '{n}' missing after ALTER TABLE"))
            })
            .collect::<anyhow::Result<_>>()?;

        // Staging columns are positional (s0, s1, ...) so no field name can
        // clash with the bookkeeping ones.
        let stage_defs: Vec<String> = (0..target.len()).map(|i| format!("s{i} VARCHAR")).collect();
        self.conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS temp.{STAGE}; CREATE TEMP TABLE {STAGE} (seq VARCHAR, kind VARCHAR{}{})",
            if stage_defs.is_empty() { "" } else { ", " },
            stage_defs.join(", ")
        ))?;
        {
            let mut app = self
                .conn
                .appender_to_catalog_and_db(STAGE, "temp", "main")?;
            let mut values: Vec<Option<String>> = Vec::with_capacity(target.len() + 2);
            for (seq, row) in t.rows.iter().enumerate() {
                values.clear();
                values.push(Some(seq.to_string()));
                values.push(Some(
                    match row.kind {
                        RowKind::Upsert => "u",
                        RowKind::Delete => "d",
                        RowKind::Append => "a",
                    }
                    .to_owned(),
                ));
                for (n, _) in &target {
                    // Key struct values win over the row's (same column).
                    let v = row
                        .key
                        .iter()
                        .chain(&row.columns)
                        .find(|c| c.name.eq_ignore_ascii_case(n))
                        .and_then(|c| c.text.clone());
                    values.push(v);
                }
                app.append_row(appender_params_from_iter(values.iter()))?;
            }
            app.flush()?;
        }
        let names: Vec<String> = target.iter().map(|(n, _)| ident(n)).collect();
        let casts: Vec<String> = target
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| cast(&format!("s{i}"), ty))
            .collect();
        let stage_index = |name: &str| {
            target
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| anyhow!("key column '{name}' not staged"))
        };
        match mode {
            Mode::Append => {
                self.conn
                    .execute_batch(&format!(
                        "INSERT INTO {table} ({}) SELECT {} FROM {STAGE} ORDER BY CAST(seq AS BIGINT)",
                        names.join(", "),
                        casts.join(", ")
                    ))
                    .context("inserting the staged rows")?;
            }
            Mode::Upsert => {
                if keys.is_empty() {
                    return Err(anyhow!("upsert mode without key columns"));
                }
                let key_idx: Vec<usize> = keys
                    .iter()
                    .map(|k| stage_index(k))
                    .collect::<anyhow::Result<_>>()?;
                let partition: Vec<String> = key_idx.iter().map(|i| format!("s{i}")).collect();
                self.conn.execute_batch(&format!(
                    "DROP TABLE IF EXISTS temp.{LATEST}; CREATE TEMP TABLE {LATEST} AS SELECT * FROM {STAGE} QUALIFY row_number() OVER (PARTITION BY {} ORDER BY CAST(seq AS BIGINT) DESC) = 1",
                    partition.join(", ")
                ))?;
                let matches: Vec<String> = key_idx
                    .iter()
                    .map(|&i| {
                        format!(
                            "{table}.{} = {}",
                            names[i],
                            cast(&format!("l.s{i}"), &target[i].1)
                        )
                    })
                    .collect();
                self.conn
                    .execute_batch(&format!(
                        "DELETE FROM {table} USING {LATEST} l WHERE l.kind = 'd' AND {}",
                        matches.join(" AND ")
                    ))
                    .context("deleting rows")?;
                let updates: Vec<String> = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !key_idx.contains(i))
                    .map(|(_, n)| format!("{n} = excluded.{n}"))
                    .collect();
                let on_conflict = if updates.is_empty() {
                    "DO NOTHING".to_owned()
                } else {
                    format!("DO UPDATE SET {}", updates.join(", "))
                };
                let pk: Vec<String> = key_idx.iter().map(|&i| names[i].clone()).collect();
                self.conn
                    .execute_batch(&format!(
                        "INSERT INTO {table} ({}) SELECT {} FROM {LATEST} WHERE kind = 'u' ON CONFLICT ({}) {on_conflict}",
                        names.join(", "),
                        casts.join(", "),
                        pk.join(", ")
                    ))
                    .context("upserting rows")?;
                self.conn
                    .execute_batch(&format!("DROP TABLE temp.{LATEST}"))?;
            }
        }
        self.conn
            .execute_batch(&format!("DROP TABLE temp.{STAGE}"))?;
        Ok(())
    }
}
