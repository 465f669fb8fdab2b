//! The blocking side: one DuckDB connection, one transaction per flush
//! holding the rows, the snapshot steps and the positions they cover.
//!
//! A flush's rows go through DuckDB's Appender in their native types
//! ([`Cell`]): straight into the table when nothing needs merging (append
//! mode; snapshot reads into a table the snapshot fills), else into a
//! temporary staging table of the target's column types, merged set-wise:
//! one `DELETE ... USING` of every staged key's row, one `INSERT ...
//! SELECT` of the keys whose last event is an upsert.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use duckdb::{appender_params_from_iter, params, Connection};

use crate::evolution::{self, Change};
use crate::mapping::Mode;
use crate::snapshot::{Control, OpenSnapshot};
use crate::types::Cell;

const POSITIONS: &str = "__sluice_positions";
/// Snapshot bookkeeping: one row per table and snapshot (see the crate
/// docs).
pub(crate) const SNAPSHOTS: &str = "__sluice_snapshots";
const STAGE: &str = "__sluice_stage";
const LATEST: &str = "__sluice_latest";

/// The table a snapshot of `table` is read into before it replaces it.
pub(crate) fn staging_name(table: &str) -> String {
    format!("__sluice_snapshot_{table}")
}

/// The table that keeps the keys written to `table` while an incremental
/// snapshot of it runs.
pub(crate) fn seen_name(table: &str) -> String {
    format!("__sluice_seen_{table}")
}

/// A stored position: topic, partition, position and the transport offset
/// of its record (where it was stored).
pub(crate) type StoredPosition = (String, i32, Position, Option<i64>);

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
            // The stored change had no last commit (`source.sequence`
            // `[null, lsn]`: the first transaction after a snapshot, read
            // as (lsn, lsn)). A source that restarts in that transaction
            // sends its rest with a last commit at or before it (Debezium's
            // offset loader takes the last processed LSN): the same
            // transaction, so its LSN alone says what was written.
            (Position::Source(a, b, 1, d), Position::Source(w, x, 1, z)) if w == x && a <= w => {
                (b, d) <= (x, z)
            }
            (Position::Source(a, b, c, d), Position::Source(w, x, y, z)) => {
                (a, b, c, d) <= (w, x, y, z)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod position_tests {
    use super::Position::Source;

    #[test]
    fn changes_sent_again_after_a_restart_in_the_first_transaction_are_told_apart() {
        // Written: the first transaction after a snapshot up to LSN 500,
        // its sequence [null, 500].
        let done = Source(500, 500, 1, 0);
        // Sent again with the last processed LSN as the last commit.
        assert!(Source(400, 450, 1, 0).le(&done));
        assert!(Source(400, 500, 1, 0).le(&done));
        assert!(!Source(400, 501, 1, 0).le(&done));
        // Sent again as before, [null, lsn].
        assert!(Source(480, 480, 1, 0).le(&done));
        assert!(!Source(600, 600, 1, 0).le(&done));
        // The next transaction: its last commit is after the stored one.
        assert!(!Source(700, 650, 1, 0).le(&done));
        // Ordinary positions compare as (last commit, lsn).
        let done = Source(300, 500, 1, 0);
        assert!(Source(300, 400, 1, 0).le(&done));
        assert!(!Source(300, 600, 1, 0).le(&done));
        assert!(Source(200, 900, 1, 0).le(&done));
        // A snapshot's reads come before the changes streamed after it.
        assert!(Source(100, 100, 0, 7).le(&Source(150, 150, 1, 0)));
        assert!(!Source(150, 150, 1, 0).le(&Source(100, 100, 0, 7)));
    }
}

/// The columns a record's rows have: the key's first (upsert mode), then
/// the row's, then the metadata columns (append mode); types canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub names: Vec<String>,
    pub types: Vec<String>,
    /// The first `keys` columns are the primary key.
    pub keys: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowKind {
    Upsert,
    Delete,
    Append,
}

impl RowKind {
    fn code(self) -> i8 {
        match self {
            RowKind::Upsert => 0,
            RowKind::Delete => 1,
            RowKind::Append => 2,
        }
    }
}

/// Where a row came from, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub kind: RowKind,
    pub layout: Arc<Layout>,
    /// One per layout column.
    pub cells: Vec<Cell>,
    pub origin: Origin,
}

impl Row {
    /// The key as `name=value, ...`, for messages.
    pub(crate) fn key_text(&self) -> String {
        let parts: Vec<String> = (0..self.layout.keys)
            .map(|i| format!("{}={}", self.layout.names[i], self.cells[i].describe()))
            .collect();
        if parts.is_empty() {
            "(no key)".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One table's rows between two snapshot steps, in arrival order.
#[derive(Debug)]
pub(crate) struct TableRows {
    pub table: String,
    pub mode: Mode,
    pub rows: Vec<Row>,
}

#[derive(Debug)]
pub(crate) enum Step {
    Rows(TableRows),
    Control(Control),
}

/// What one flush writes, in order, and the positions it reaches.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub steps: Vec<Step>,
    /// Per table, the step its next rows join (until a snapshot step of
    /// that table closes it).
    open: HashMap<String, usize>,
    pub positions: HashMap<(Arc<str>, i32), Position>,
    /// The transport offset of the record each source position belongs
    /// to: it tells whether a record without a position of its own (a
    /// delete turned into a null value) was written.
    pub offsets: HashMap<(Arc<str>, i32), i64>,
    /// Bytes the rows hold (for the size trigger).
    pub bytes: usize,
}

impl Batch {
    pub(crate) fn push(&mut self, table: &str, mode: Mode, row: Row) {
        self.bytes += row.cells.iter().map(Cell::size).sum::<usize>() + 64;
        let i = match self.open.get(table) {
            Some(&i) => i,
            None => {
                self.steps.push(Step::Rows(TableRows {
                    table: table.to_owned(),
                    mode,
                    rows: Vec::new(),
                }));
                let i = self.steps.len() - 1;
                self.open.insert(table.to_owned(), i);
                i
            }
        };
        if let Step::Rows(t) = &mut self.steps[i] {
            t.rows.push(row);
        }
    }

    pub(crate) fn control(&mut self, c: Control) {
        self.open.remove(c.table());
        self.steps.push(Step::Control(c));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.positions.is_empty()
    }

    /// Removes the row at `(step, row)` (a record the sink skips).
    pub(crate) fn remove(&mut self, step: usize, row: usize) -> Option<Row> {
        match self.steps.get_mut(step) {
            Some(Step::Rows(t)) if row < t.rows.len() => Some(t.rows.remove(row)),
            _ => None,
        }
    }
}

/// A row DuckDB refused, with what is known about why.
#[derive(Debug)]
pub(crate) struct RowRejected {
    pub step: usize,
    pub row: usize,
    pub table: String,
    pub column: Option<String>,
    pub size: usize,
    pub key: String,
    pub origin: Origin,
    pub message: String,
}

impl std::fmt::Display for RowRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DuckDB refused the row of table '{}' with key {}",
            self.table, self.key
        )?;
        if let Some(c) = &self.column {
            write!(f, ", column '{c}' ({} bytes)", self.size)?;
        }
        write!(
            f,
            " (topic '{}' partition {} offset {}): {}",
            self.origin.topic, self.origin.partition, self.origin.offset, self.message
        )
    }
}

impl std::error::Error for RowRejected {}

/// How a table's open snapshot is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Into the staging table, which replaces the table when complete.
    Staging,
    /// Into the table itself: it was empty when the snapshot began, so
    /// nothing can be left over.
    Direct,
    /// Append mode: the snapshot's events are appended.
    Append,
    /// An incremental snapshot: rows go to the table, their keys to the
    /// table's seen-keys table.
    Incremental,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Staging => "staging",
            Method::Direct => "direct",
            Method::Append => "append",
            Method::Incremental => "incremental",
        }
    }
    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "staging" => Method::Staging,
            "direct" => Method::Direct,
            "append" => Method::Append,
            "incremental" => Method::Incremental,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct Physical {
    generation: i64,
    method: Method,
    rows: u64,
    /// Rows were added since the bookkeeping row was written.
    dirty: bool,
}

/// What a finished flush did, for logs and tests.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Snapshots completed: (table, rows, rows removed).
    pub completed: Vec<(String, u64, u64)>,
    /// Columns whose type changed: (table, column, from, to).
    pub altered: Vec<(String, String, String, String)>,
}

/// A table's columns: (name, canonical type), in order.
type Columns = Vec<(String, String)>;

pub(crate) struct Writer {
    conn: Connection,
    connector: String,
    /// `duckdb.type.incompatible=varchar` (the default): a column whose type changes
    /// incompatibly becomes VARCHAR instead of stopping the task.
    incompatible_to_text: bool,
    /// Open snapshots per table, as committed.
    snapshots: HashMap<String, Physical>,
    /// The file registered for the worker's read-only queries.
    _held: crate::stores::Held,
    /// Each table's columns as last read from the catalog (None: no such
    /// table). Reading `duckdb_columns()` on every flush cost as much CPU
    /// as appending its rows. Every DDL statement here forgets the tables
    /// it touches, a rollback all of them; a flush that fails after using
    /// the cache (another task of the connector may have changed a table)
    /// is tried once more with the catalog read again.
    columns: RefCell<HashMap<String, Option<Columns>>>,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether a type is appended as JSON text and cast by the flush.
fn is_list(ty: &str) -> bool {
    ty.ends_with(']')
}

/// The SQL turning staged column `expr` into a value of type `ty`.
fn cast(expr: &str, ty: &str) -> String {
    if is_list(ty) {
        // Lists are staged as JSON, whose strings and nulls DuckDB's JSON
        // cast reads exactly.
        format!("CAST(CAST({expr} AS JSON) AS {ty})")
    } else {
        expr.to_owned()
    }
}

/// Key cells in a hashable form, to tell whether a flush repeats a key.
#[derive(Hash, PartialEq, Eq)]
enum KeyPart<'a> {
    Null,
    Int(i64),
    Bits(u64),
    Bool(bool),
    Bytes(&'a [u8]),
}

fn key_part(c: &Cell) -> KeyPart<'_> {
    match c {
        Cell::Null => KeyPart::Null,
        Cell::Bool(b) => KeyPart::Bool(*b),
        Cell::I8(v) => KeyPart::Int(i64::from(*v)),
        Cell::I16(v) => KeyPart::Int(i64::from(*v)),
        Cell::I32(v) => KeyPart::Int(i64::from(*v)),
        Cell::I64(v) | Cell::Time(v) | Cell::Timestamp(v) => KeyPart::Int(*v),
        Cell::Date(v) => KeyPart::Int(i64::from(*v)),
        Cell::F32(v) => KeyPart::Bits(u64::from(v.to_bits())),
        Cell::F64(v) => KeyPart::Bits(v.to_bits()),
        Cell::Text(s) => KeyPart::Bytes(s.as_bytes()),
        Cell::Blob(b) => KeyPart::Bytes(b),
    }
}

/// A table of a batch: its name, mode, columns (name, type) and key
/// columns.
type TableColumns<'a> = (&'a str, Mode, Vec<(String, String)>, Vec<String>);

/// Why a transaction attempt stopped.
enum Failed {
    /// A direct append met a key already present: redo with merges.
    Conflict,
    Error(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed::Error(e.into())
    }
}

impl Writer {
    pub(crate) fn open(
        path: &str,
        connector: &str,
        incompatible_to_text: bool,
    ) -> anyhow::Result<Writer> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening DuckDB database '{path}' (duckdb.path)"))?;
        // Timestamps without a zone are UTC, as Debezium sends them; casts
        // between the two kinds must not depend on the machine's zone.
        conn.execute_batch("SET TimeZone = 'UTC'")
            .context("setting DuckDB's TimeZone to UTC")?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {POSITIONS} (connector VARCHAR NOT NULL, topic VARCHAR NOT NULL, kafka_partition INTEGER NOT NULL, kafka_offset BIGINT, lsn_commit BIGINT, lsn BIGINT, phase BIGINT, ordinal BIGINT, PRIMARY KEY (connector, topic, kafka_partition));
             CREATE TABLE IF NOT EXISTS {SNAPSHOTS} (connector VARCHAR NOT NULL, table_name VARCHAR NOT NULL, generation BIGINT NOT NULL, topic VARCHAR, kafka_partition INTEGER, mode VARCHAR, method VARCHAR, opened_by VARCHAR, state VARCHAR, rows BIGINT, removed BIGINT, started_at TIMESTAMP, ended_at TIMESTAMP, PRIMARY KEY (connector, table_name, generation))"
        ))
        .with_context(|| format!("creating {POSITIONS} and {SNAPSHOTS} in '{path}'"))?;
        let held = crate::stores::register(std::path::Path::new(path), &conn)?;
        let mut w = Writer {
            _held: held,
            conn,
            connector: connector.to_owned(),
            incompatible_to_text,
            snapshots: HashMap::new(),
            columns: RefCell::new(HashMap::new()),
        };
        for s in w.open_snapshots()? {
            w.snapshots.insert(
                s.table.clone(),
                Physical {
                    generation: s.generation,
                    method: s.method,
                    rows: s.rows,
                    dirty: false,
                },
            );
        }
        Ok(w)
    }

    /// The stored positions of this connector, each with the transport
    /// offset of its record where it was stored.
    pub(crate) fn positions(&self) -> anyhow::Result<Vec<StoredPosition>> {
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
            let pos = match (source, offset) {
                ([Some(c), Some(l), Some(p), Some(o)], _) => Position::Source(c, l, p, o),
                (_, Some(o)) => Position::Offset(o),
                _ => {
                    return Err(anyhow!(
                        "{POSITIONS}: row for topic '{topic}' partition {partition} has neither an offset nor a full source position"
                    ))
                }
            };
            out.push((topic, partition, pos, offset));
        }
        Ok(out)
    }

    /// Per table, the latest snapshot of this connector that completed.
    pub(crate) fn completed_snapshots(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT table_name, max(generation) FROM {SNAPSHOTS} WHERE connector = ? AND state = 'complete' AND method IS DISTINCT FROM 'incremental' GROUP BY table_name"
        ))?;
        let rows = stmt.query_map(params![self.connector], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// This connector's snapshots that have begun and not ended.
    pub(crate) fn open_snapshots(&self) -> anyhow::Result<Vec<OpenSnapshot>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT table_name, generation, topic, kafka_partition, method, opened_by, rows FROM {SNAPSHOTS} WHERE connector = ? AND state = 'open'"
        ))?;
        let rows = stmt.query_map(params![self.connector], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i32>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (table, generation, topic, partition, method, opened_by, rows) = row?;
            let method = method.as_deref().and_then(Method::parse).ok_or_else(|| {
                anyhow!("{SNAPSHOTS}: the open snapshot of table '{table}' has no known method")
            })?;
            out.push(OpenSnapshot {
                table,
                generation,
                topic: Arc::from(topic.unwrap_or_default().as_str()),
                partition: partition.unwrap_or(0),
                method,
                opened_by: opened_by.unwrap_or_default(),
                rows: u64::try_from(rows.unwrap_or(0)).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Writes a batch and its positions in one transaction. A row DuckDB
    /// refuses comes back as a [`RowRejected`] in the error chain.
    pub(crate) fn write(&mut self, batch: &Batch) -> anyhow::Result<Report> {
        let mut direct = true;
        let mut catalog_reread = false;
        loop {
            let cached = !self.columns.get_mut().is_empty();
            let mut snapshots = self.snapshots.clone();
            let mut report = Report::default();
            self.conn.execute_batch("BEGIN TRANSACTION")?;
            let failed = match self.write_in_transaction(batch, &mut snapshots, &mut report, direct)
            {
                Ok(()) => match self.conn.execute_batch("COMMIT") {
                    Ok(()) => {
                        for s in snapshots.values_mut() {
                            s.dirty = false;
                        }
                        self.snapshots = snapshots;
                        return Ok(report);
                    }
                    Err(e) => Failed::Error(
                        anyhow::Error::new(e).context("committing the DuckDB transaction"),
                    ),
                },
                Err(f) => f,
            };
            // The rollback undoes the attempt's DDL too.
            self.columns.get_mut().clear();
            if let Err(r) = self.conn.execute_batch("ROLLBACK") {
                tracing::debug!(error = %r, "DuckDB rollback after a failed flush");
            }
            match failed {
                // A key came twice (a key that is not the source table's
                // primary key): the same rows again, merged.
                Failed::Conflict if direct => direct = false,
                Failed::Conflict => return Err(anyhow!("a key conflict in a merged write")),
                // Another task of the connector may have changed a table
                // since this writer read its columns: once more, with
                // every table's columns read again.
                Failed::Error(e) if cached && !catalog_reread => {
                    tracing::debug!(error = %format!("{e:#}"), "DuckDB flush failed; retrying with the catalog read again");
                    catalog_reread = true;
                }
                Failed::Error(e) => return Err(e),
            }
        }
    }

    fn write_in_transaction(
        &self,
        batch: &Batch,
        snapshots: &mut HashMap<String, Physical>,
        report: &mut Report,
        direct: bool,
    ) -> Result<(), Failed> {
        self.prepare_schemas(batch, snapshots, report)?;
        for (si, step) in batch.steps.iter().enumerate() {
            match step {
                Step::Rows(t) => {
                    let mut seen = None;
                    let (physical, fresh) = match snapshots.get_mut(&t.table) {
                        Some(p) => {
                            p.rows += t.rows.len() as u64;
                            p.dirty = true;
                            match p.method {
                                Method::Staging => (staging_name(&t.table), true),
                                Method::Direct => (t.table.clone(), true),
                                Method::Append => (t.table.clone(), false),
                                Method::Incremental => {
                                    seen = Some(seen_name(&t.table));
                                    (t.table.clone(), false)
                                }
                            }
                        }
                        None => (t.table.clone(), false),
                    };
                    self.write_rows(si, t, &physical, fresh && direct, seen.as_deref(), report)
                        .map_err(|f| match f {
                            Failed::Error(e) => Failed::Error(
                                e.context(format!("writing DuckDB table '{physical}'")),
                            ),
                            c => c,
                        })?;
                }
                Step::Control(c) => self.control(c, batch, snapshots, report).map_err(|e| {
                    Failed::Error(e.context(format!("snapshot of table '{}'", c.table())))
                })?,
            }
        }
        for (table, p) in snapshots.iter() {
            if p.dirty {
                self.conn.execute(
                    &format!("UPDATE {SNAPSHOTS} SET rows = ? WHERE connector = ? AND table_name = ? AND generation = ?"),
                    params![p.rows as i64, self.connector, table, p.generation],
                )?;
            }
        }
        let mut stmt = self.conn.prepare(&format!(
            "INSERT OR REPLACE INTO {POSITIONS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))?;
        for (key, pos) in &batch.positions {
            let (topic, partition) = key;
            let (o, c, l, p, n) = match pos {
                Position::Offset(o) => (Some(*o), None, None, None, None),
                Position::Source(c, l, p, n) => (
                    batch.offsets.get(key).copied(),
                    Some(*c),
                    Some(*l),
                    Some(*p),
                    Some(*n),
                ),
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

    /// Carries out one snapshot step.
    fn control(
        &self,
        c: &Control,
        batch: &Batch,
        snapshots: &mut HashMap<String, Physical>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        match c {
            Control::Open {
                table,
                mode,
                generation,
                topic,
                partition,
                opened_by,
            } => {
                if let Some(old) = snapshots.remove(table.as_str()) {
                    if old.method == Method::Incremental {
                        self.drop_seen(table)?;
                    }
                    self.end(table, &old, "abandoned", None)?;
                }
                let method = match mode {
                    Mode::Append => Method::Append,
                    Mode::Upsert => {
                        if self.has_rows(table)? {
                            self.create_staging(table)?;
                            Method::Staging
                        } else {
                            Method::Direct
                        }
                    }
                };
                self.conn.execute(
                    &format!("INSERT OR REPLACE INTO {SNAPSHOTS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', 0, NULL, now()::TIMESTAMP, NULL)"),
                    params![
                        self.connector,
                        table,
                        generation,
                        topic.as_ref(),
                        partition,
                        match mode {
                            Mode::Append => "append",
                            Mode::Upsert => "upsert",
                        },
                        method.name(),
                        opened_by
                    ],
                )?;
                tracing::info!(
                    connector = %self.connector,
                    "DuckDB sink: snapshot {generation} of table '{table}' begins ({})",
                    match method {
                        Method::Staging => "read into a staging table that replaces the table when the snapshot of it is complete",
                        Method::Direct => "the table is empty: read into it directly",
                        Method::Append => "append mode: its events are appended",
                        Method::Incremental => "",
                    }
                );
                snapshots.insert(
                    table.clone(),
                    Physical {
                        generation: *generation,
                        method,
                        rows: 0,
                        dirty: false,
                    },
                );
            }
            Control::Complete { table, generation } => {
                let Some(p) = snapshots.remove(table.as_str()) else {
                    return Ok(());
                };
                if p.generation != *generation {
                    snapshots.insert(table.clone(), p);
                    return Ok(());
                }
                let removed = match p.method {
                    Method::Staging => Some(self.swap(table)?),
                    Method::Direct | Method::Append | Method::Incremental => None,
                };
                self.end(table, &p, "complete", removed)?;
                tracing::info!(
                    connector = %self.connector,
                    "DuckDB sink: snapshot {generation} of table '{table}' complete: {} rows{}",
                    p.rows,
                    removed.map_or_else(String::new, |r| format!(
                        "; {r} rows that the snapshot no longer has were removed"
                    ))
                );
                report
                    .completed
                    .push((table.clone(), p.rows, removed.unwrap_or(0)));
            }
            Control::Abandon { table, generation } => {
                let Some(p) = snapshots.remove(table.as_str()) else {
                    return Ok(());
                };
                if p.method == Method::Staging {
                    self.forget(&[&staging_name(table)]);
                    self.conn.execute_batch(&format!(
                        "DROP TABLE IF EXISTS {}",
                        ident(&staging_name(table))
                    ))?;
                }
                if p.method == Method::Incremental {
                    self.drop_seen(table)?;
                }
                self.end(table, &p, "abandoned", None)?;
                tracing::warn!(
                    connector = %self.connector,
                    "DuckDB sink: snapshot {generation} of table '{table}' never completed (a later snapshot began, or the snapshot ended without it); {} and nothing was removed: the next complete snapshot of the table reconciles it",
                    match p.method {
                        Method::Staging => format!("its {} rows were dropped with its staging table", p.rows),
                        Method::Direct | Method::Append | Method::Incremental => format!("its {} rows stay in the table", p.rows),
                    }
                );
            }
            Control::Empty { table, generation } => {
                let removed = if self.columns(table)?.is_some() {
                    self.conn
                        .execute(&format!("DELETE FROM {}", ident(table)), [])?
                        as u64
                } else {
                    0
                };
                self.conn.execute(
                    &format!("INSERT OR REPLACE INTO {SNAPSHOTS} VALUES (?, ?, ?, NULL, NULL, 'upsert', 'empty', NULL, 'complete', 0, ?, now()::TIMESTAMP, now()::TIMESTAMP)"),
                    params![self.connector, table, generation, removed as i64],
                )?;
                tracing::info!(
                    connector = %self.connector,
                    "DuckDB sink: snapshot {generation} read table '{table}' without a row: {removed} rows that the source no longer has were removed"
                );
                report.completed.push((table.clone(), 0, removed));
            }
            Control::Track {
                table,
                generation,
                topic,
                partition,
            } => self.track(table, *generation, topic, *partition, snapshots)?,
            Control::Reconcile { table, generation } => {
                let Some(p) = snapshots.remove(table.as_str()) else {
                    return Ok(());
                };
                if p.generation != *generation || p.method != Method::Incremental {
                    snapshots.insert(table.clone(), p);
                    return Ok(());
                }
                let removed = self.reconcile(table, batch)?;
                self.drop_seen(table)?;
                match removed {
                    Ok(removed) => {
                        self.end(table, &p, "complete", Some(removed))?;
                        tracing::info!(
                            connector = %self.connector,
                            "DuckDB sink: incremental snapshot {generation} of table '{table}' complete: {removed} rows that the source no longer has were removed ({} rows written while it ran)",
                            p.rows
                        );
                        report.completed.push((table.clone(), p.rows, removed));
                    }
                    Err(why) => {
                        self.end(table, &p, "incomplete", None)?;
                        tracing::warn!(
                            connector = %self.connector,
                            "DuckDB sink: incremental snapshot {generation} of table '{table}' complete, but {why}: no row was removed"
                        );
                    }
                }
            }
            Control::Untrack {
                table,
                generation,
                why,
            } => {
                let Some(p) = snapshots.remove(table.as_str()) else {
                    return Ok(());
                };
                if p.generation != *generation || p.method != Method::Incremental {
                    snapshots.insert(table.clone(), p);
                    return Ok(());
                }
                self.drop_seen(table)?;
                self.end(table, &p, "incomplete", None)?;
                tracing::warn!(
                    connector = %self.connector,
                    "DuckDB sink: incremental snapshot {generation} of table '{table}' ends unreconciled ({why}); no row was removed"
                );
            }
            Control::Merge { table, generation } => {
                let Some(p) = snapshots.remove(table.as_str()) else {
                    return Ok(());
                };
                if p.method == Method::Staging {
                    self.merge_staging(table)?;
                }
                if p.method == Method::Incremental {
                    self.drop_seen(table)?;
                }
                self.end(table, &p, "incomplete", None)?;
                tracing::warn!(
                    connector = %self.connector,
                    "DuckDB sink: snapshot {generation} of table '{table}' did not complete before changes streamed (or its records came from several partitions); its {} rows were upserted and no row was removed",
                    p.rows
                );
            }
        }
        Ok(())
    }

    fn end(
        &self,
        table: &str,
        p: &Physical,
        state: &str,
        removed: Option<u64>,
    ) -> anyhow::Result<()> {
        self.conn.execute(
            &format!("UPDATE {SNAPSHOTS} SET state = ?, rows = ?, removed = ?, ended_at = now()::TIMESTAMP WHERE connector = ? AND table_name = ? AND generation = ?"),
            params![
                state,
                p.rows as i64,
                removed.map(|r| r as i64),
                self.connector,
                table,
                p.generation
            ],
        )?;
        Ok(())
    }

    /// An incremental snapshot of `table` begins: a table for the keys
    /// written from now on, with the table's key columns.
    fn track(
        &self,
        table: &str,
        generation: i64,
        topic: &Arc<str>,
        partition: i32,
        snapshots: &mut HashMap<String, Physical>,
    ) -> anyhow::Result<()> {
        let known: Option<String> = {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT state FROM {SNAPSHOTS} WHERE connector = ? AND table_name = ? AND generation = ?"
            ))?;
            let mut rows = stmt.query(params![self.connector, table, generation])?;
            match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            }
        };
        if known.is_some() {
            // Its begin came again (the source restarted): it goes on, or
            // it ended already.
            return Ok(());
        }
        if let Some(old) = snapshots.remove(table) {
            if old.method == Method::Incremental {
                self.drop_seen(table)?;
            }
            self.end(table, &old, "abandoned", None)?;
        }
        let Some(cols) = self.columns(table)? else {
            tracing::info!(
                connector = %self.connector,
                "DuckDB sink: incremental snapshot {generation} of table '{table}' begins; the table does not exist yet, so it has no row to reconcile"
            );
            return Ok(());
        };
        let pk = self.primary_key(table)?;
        if pk.is_empty() {
            tracing::warn!(
                connector = %self.connector,
                "DuckDB sink: incremental snapshot {generation} of table '{table}' begins, but the table has no primary key: it is upserted and not reconciled"
            );
            return Ok(());
        }
        let defs = pk
            .iter()
            .map(|k| {
                let ty = cols
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, ty)| ty.as_str())
                    .ok_or_else(|| anyhow!("key column '{k}' missing"))?;
                Ok(format!("{} {ty}", ident(k)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let seen = seen_name(table);
        self.forget(&[&seen]);
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS {s}; CREATE TABLE {s} ({})",
                defs.join(", "),
                s = ident(&seen)
            ))
            .context("creating the table of the keys the incremental snapshot sees")?;
        self.conn.execute(
            &format!("INSERT INTO {SNAPSHOTS} VALUES (?, ?, ?, ?, ?, 'upsert', 'incremental', 'begin', 'open', 0, NULL, now()::TIMESTAMP, NULL)"),
            params![self.connector, table, generation, topic.as_ref(), partition],
        )?;
        tracing::info!(
            connector = %self.connector,
            "DuckDB sink: incremental snapshot {generation} of table '{table}' begins: the keys written to it are kept in {seen} until it ends"
        );
        snapshots.insert(
            table.to_owned(),
            Physical {
                generation,
                method: Method::Incremental,
                rows: 0,
                dirty: false,
            },
        );
        Ok(())
    }

    /// Removes the rows of `table` whose key the incremental snapshot did
    /// not see, and counts them; None when the table's topic has records
    /// in more than one partition (their relative order is unknown, so a
    /// key may have been written before the snapshot's begin was).
    fn reconcile(&self, table: &str, batch: &Batch) -> anyhow::Result<Result<u64, &'static str>> {
        if self.columns(&seen_name(table))?.is_none() {
            return Ok(Err("its records are not keyed by the table's primary key"));
        }
        let topic: Option<String> = self.conn.query_row(
            &format!("SELECT topic FROM {SNAPSHOTS} WHERE connector = ? AND table_name = ? AND state = 'open' AND method = 'incremental'"),
            params![self.connector, table],
            |r| r.get(0),
        )?;
        let topic = topic.unwrap_or_default();
        let mut partitions: HashSet<i32> = batch
            .positions
            .keys()
            .filter(|(t, _)| t.as_ref() == topic)
            .map(|(_, p)| *p)
            .collect();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT DISTINCT kafka_partition FROM {POSITIONS} WHERE connector = ? AND topic = ?"
        ))?;
        for p in stmt.query_map(params![self.connector, topic], |r| r.get::<_, i32>(0))? {
            partitions.insert(p?);
        }
        if partitions.len() > 1 {
            return Ok(Err(
                "the table's topic has records in several partitions, whose order against each other is unknown",
            ));
        }
        let pk = self.primary_key(table)?;
        let on: Vec<String> = pk
            .iter()
            .map(|k| format!("s.{k} = t.{k}", k = ident(k)))
            .collect();
        let removed = self.conn.execute(
            &format!(
                "DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})",
                ident(table),
                ident(&seen_name(table)),
                on.join(" AND ")
            ),
            [],
        )?;
        Ok(Ok(removed as u64))
    }

    /// Appends the staged keys to `seen`. Records keyed otherwise than the
    /// table (a table made by hand with another primary key) cannot be
    /// told apart by it: the keys table is dropped, and the snapshot ends
    /// without removing anything.
    fn track_keys(
        &self,
        seen: &str,
        keys: &[String],
        key_idx: &[usize],
        cols: &[String],
        exprs: &[String],
        source: &str,
    ) -> anyhow::Result<()> {
        let Some(have) = self.columns(seen)? else {
            return Ok(());
        };
        let same = have.len() == keys.len()
            && keys
                .iter()
                .all(|k| have.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)));
        if !same {
            tracing::warn!(
                connector = %self.connector,
                "DuckDB sink: records of '{seen}' are keyed by ({}), not by the table's primary key; the incremental snapshot will not remove rows",
                keys.join(", ")
            );
            self.forget(&[seen]);
            self.conn
                .execute_batch(&format!("DROP TABLE {}", ident(seen)))?;
            return Ok(());
        }
        let kc: Vec<&str> = key_idx.iter().map(|&i| cols[i].as_str()).collect();
        let ke: Vec<&str> = key_idx.iter().map(|&i| exprs[i].as_str()).collect();
        self.conn
            .execute_batch(&format!(
                "INSERT INTO {} ({}) SELECT {} FROM {source}",
                ident(seen),
                kc.join(", "),
                ke.join(", ")
            ))
            .context("keeping the keys the incremental snapshot sees")?;
        Ok(())
    }

    fn drop_seen(&self, table: &str) -> anyhow::Result<()> {
        let seen = seen_name(table);
        self.forget(&[&seen]);
        self.conn
            .execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(&seen)))?;
        Ok(())
    }

    fn has_rows(&self, table: &str) -> anyhow::Result<bool> {
        if self.columns(table)?.is_none() {
            return Ok(false);
        }
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT 1 FROM {} LIMIT 1", ident(table)))?;
        Ok(stmt.query([])?.next()?.is_some())
    }

    fn primary_key(&self, table: &str) -> anyhow::Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT unnest(constraint_column_names) FROM duckdb_constraints() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
        )?;
        let keys = stmt
            .query_map(params![table], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// A table with `table`'s columns and primary key, for a snapshot.
    fn create_staging(&self, table: &str) -> anyhow::Result<()> {
        let cols = self
            .columns(table)?
            .ok_or_else(|| anyhow!("table vanished"))?;
        let staging = ident(&staging_name(table));
        let mut defs: Vec<String> = cols
            .iter()
            .map(|(n, ty)| format!("{} {ty}", ident(n)))
            .collect();
        let pk = self.primary_key(table)?;
        if !pk.is_empty() {
            let pk: Vec<String> = pk.iter().map(|k| ident(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        }
        self.forget(&[&staging_name(table)]);
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} ({})",
                defs.join(", ")
            ))
            .context("creating the staging table")?;
        Ok(())
    }

    /// The staging table replaces the table; the rows it lacks are
    /// counted as removed.
    fn swap(&self, table: &str) -> anyhow::Result<u64> {
        let staging = staging_name(table);
        let pk = self.primary_key(table)?;
        let removed: i64 = if pk.is_empty() {
            0
        } else {
            let on: Vec<String> = pk
                .iter()
                .map(|k| format!("s.{} = t.{}", ident(k), ident(k)))
                .collect();
            self.conn.query_row(
                &format!(
                    "SELECT count(*) FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})",
                    ident(table),
                    ident(&staging),
                    on.join(" AND ")
                ),
                [],
                |r| r.get(0),
            )?
        };
        self.forget(&[table, &staging]);
        self.conn
            .execute_batch(&format!(
                "DROP TABLE {t}; ALTER TABLE {s} RENAME TO {t}",
                t = ident(table),
                s = ident(&staging)
            ))
            .context("replacing the table by its snapshot")?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// Upserts the staging table's rows into the table and drops it.
    fn merge_staging(&self, table: &str) -> anyhow::Result<()> {
        let staging = staging_name(table);
        let target = self
            .columns(table)?
            .ok_or_else(|| anyhow!("table vanished"))?;
        let staged = self.columns(&staging)?.unwrap_or_default();
        self.forget(&[table, &staging]);
        for (n, ty) in staged {
            if !target.iter().any(|(e, _)| e.eq_ignore_ascii_case(&n)) {
                self.conn.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {ty}",
                    ident(table),
                    ident(&n)
                ))?;
            }
        }
        self.conn.execute_batch(&format!(
            "INSERT OR REPLACE INTO {} BY NAME SELECT * FROM {s}; DROP TABLE {s}",
            ident(table),
            s = ident(&staging)
        ))?;
        Ok(())
    }

    /// Existing columns (name, canonical type) in order; None when the
    /// table does not exist.
    fn columns(&self, table: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
        if let Some(known) = self.columns.borrow().get(table) {
            return Ok(known.clone());
        }
        let read = self.read_columns(table)?;
        self.columns
            .borrow_mut()
            .insert(table.to_owned(), read.clone());
        Ok(read)
    }

    /// Forgets what [`Writer::columns`] knows of these tables: called
    /// before every DDL statement on them.
    fn forget(&self, tables: &[&str]) {
        // DuckDB's names are case-insensitive.
        self.columns
            .borrow_mut()
            .retain(|k, _| !tables.iter().any(|t| k.eq_ignore_ascii_case(t)));
    }

    /// `columns` read from DuckDB's catalog.
    fn read_columns(&self, table: &str) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        )?;
        let cols = stmt
            .query_map(params![table], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if cols.is_empty() {
            None
        } else {
            Some(
                cols.into_iter()
                    .map(|(n, t)| (n, evolution::canonical(&t)))
                    .collect(),
            )
        })
    }

    /// Changes the type of column `col` of `table`, rebuilding the table
    /// when an `ALTER` in place cannot do it safely.
    fn alter_type(&self, table: &str, col: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let t = ident(table);
        let c = ident(col);
        let pk = self.primary_key(table)?;
        let using = evolution::using(&c, from, to);
        self.forget(&[table]);
        // DuckDB cannot change the type of a column an index depends on (a
        // key column). And its write-ahead log keeps an ALTER's USING
        // expression, evaluated again when the log is replayed: one with a
        // function call (the zone conversion) makes the replay fail, so the
        // database would not open again after a crash. Both are done by
        // rebuilding the table, whose rows the log keeps as values.
        let plain_cast = using == format!("CAST({c} AS {to})");
        if plain_cast && !pk.iter().any(|k| k.eq_ignore_ascii_case(col)) {
            self.conn
                .execute_batch(&format!(
                    "ALTER TABLE {t} ALTER COLUMN {c} SET DATA TYPE {to} USING {using}"
                ))
                .context("ALTER TABLE ... SET DATA TYPE")?;
            return Ok(());
        }
        let cols = self
            .columns(table)?
            .ok_or_else(|| anyhow!("table vanished"))?;
        let tmp = ident(&format!("__sluice_rebuild_{table}"));
        let mut defs: Vec<String> = cols
            .iter()
            .map(|(n, ty)| {
                let ty = if n == col { to } else { ty.as_str() };
                format!("{} {ty}", ident(n))
            })
            .collect();
        if !pk.is_empty() {
            let pk: Vec<String> = pk.iter().map(|k| ident(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
        }
        let select: Vec<String> = cols
            .iter()
            .map(|(n, _)| {
                if n == col {
                    evolution::using(&ident(n), from, to)
                } else {
                    ident(n)
                }
            })
            .collect();
        self.conn
            .execute_batch(&format!(
                "CREATE TABLE {tmp} ({}); INSERT INTO {tmp} SELECT {} FROM {t}; DROP TABLE {t}; ALTER TABLE {tmp} RENAME TO {t}",
                defs.join(", "),
                select.join(", ")
            ))
            .with_context(|| format!("rebuilding the table with column '{col}' as {to}"))?;
        Ok(())
    }

    /// The type for column `column` of `table` whose values change from
    /// type `from` to `to` that neither holds the other's values: VARCHAR
    /// when `duckdb.type.incompatible=varchar`, else the error that stops
    /// the task.
    fn incompatible(
        &self,
        table: &str,
        column: &str,
        from: &str,
        to: &str,
    ) -> anyhow::Result<String> {
        if self.incompatible_to_text {
            return Ok("VARCHAR".to_owned());
        }
        Err(anyhow!(
            "column '{column}' of DuckDB table '{table}' is {from} but the source now sends {to}: neither type holds every value of the other, so DuckDB cannot widen the column, and duckdb.type.incompatible=fail stops here. Set duckdb.type.incompatible=varchar (the default) on the connector to turn the column into VARCHAR (old values kept as their text), or change the DuckDB column yourself (ALTER TABLE \"{table}\" ALTER COLUMN \"{column}\" TYPE ...) and restart the task"
        ))
    }

    /// Creates the table or brings its columns up to what the rows need;
    /// the table's columns (name, type) for the rows' columns, in order.
    fn prepare_table(
        &self,
        physical: &str,
        logical: &str,
        mode: Mode,
        wanted: &[(String, String)],
        keys: &[String],
        report: &mut Report,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let table = ident(physical);
        let existing = match self.columns(physical)? {
            None => {
                let mut defs: Vec<String> = wanted
                    .iter()
                    .map(|(n, ty)| format!("{} {ty}", ident(n)))
                    .collect();
                if mode == Mode::Upsert && !keys.is_empty() {
                    let pk: Vec<String> = keys.iter().map(|k| ident(k)).collect();
                    defs.push(format!("PRIMARY KEY ({})", pk.join(", ")));
                }
                self.forget(&[physical]);
                self.conn
                    .execute_batch(&format!("CREATE TABLE {table} ({})", defs.join(", ")))
                    .context("creating the table")?;
                return Ok(wanted.to_vec());
            }
            Some(e) => e,
        };
        let mut changed = false;
        for (n, ty) in wanted {
            match existing.iter().find(|(e, _)| e.eq_ignore_ascii_case(n)) {
                None => {
                    self.forget(&[physical]);
                    self.conn
                        .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {} {ty}", ident(n)))
                        .with_context(|| format!("adding column '{n}' ({ty})"))?;
                    changed = true;
                }
                Some((name, have)) => {
                    let to = match evolution::change(have, ty) {
                        Change::Keep => None,
                        Change::Alter(to) => Some(to),
                        Change::Incompatible => Some(self.incompatible(logical, name, have, ty)?),
                    };
                    if let Some(to) = to {
                        self.alter_type(physical, name, have, &to)
                            .with_context(|| {
                                format!("changing column '{name}' from {have} to {to}")
                            })?;
                        tracing::info!(
                            connector = %self.connector,
                            "DuckDB sink: column '{name}' of table '{logical}' changed from {have} to {to} (the source now sends {ty})"
                        );
                        report.altered.push((
                            logical.to_owned(),
                            name.clone(),
                            have.clone(),
                            to.clone(),
                        ));
                        changed = true;
                    }
                }
            }
        }
        let existing = if changed {
            self.columns(physical)?
                .ok_or_else(|| anyhow!("table vanished while being written"))?
        } else {
            existing
        };
        wanted
            .iter()
            .map(|(n, _)| {
                existing
                    .iter()
                    .find(|(e, _)| e.eq_ignore_ascii_case(n))
                    .cloned()
                    .ok_or_else(|| anyhow!("column '{n}' missing after ALTER TABLE"))
            })
            .collect()
    }

    /// Adds the columns of `t`'s rows to `wanted` (keys first, in arrival
    /// order, types widened to hold every row's) and their key columns to
    /// `keys`; returns each layout with the positions of its columns in
    /// `wanted`.
    fn union_columns(
        &self,
        t: &TableRows,
        wanted: &mut Vec<(String, String)>,
        keys: &mut Vec<String>,
    ) -> anyhow::Result<Vec<(Arc<Layout>, Vec<usize>)>> {
        let mut layouts: Vec<(Arc<Layout>, Vec<usize>)> = Vec::new();
        for row in &t.rows {
            if layouts.iter().any(|(l, _)| Arc::ptr_eq(l, &row.layout)) {
                continue;
            }
            let l = &row.layout;
            let mut map = Vec::with_capacity(l.names.len());
            for (i, (n, ty)) in l.names.iter().zip(&l.types).enumerate() {
                if i < l.keys && !keys.iter().any(|k| k.eq_ignore_ascii_case(n)) {
                    keys.push(n.clone());
                }
                match wanted.iter().position(|(w, _)| w.eq_ignore_ascii_case(n)) {
                    Some(p) => {
                        let u = match evolution::union(&wanted[p].1, ty) {
                            Some(u) => u,
                            None => self.incompatible(&t.table, n, &wanted[p].1, ty)?,
                        };
                        wanted[p].1 = u;
                        map.push(p);
                    }
                    None => {
                        wanted.push((n.clone(), ty.clone()));
                        map.push(wanted.len() - 1);
                    }
                }
            }
            layouts.push((Arc::clone(l), map));
        }
        Ok(layouts)
    }

    /// Brings every table the batch writes (and the staging table of its
    /// open snapshot) up to the columns and types of all its rows, before
    /// any row is written: DuckDB fails a transaction that alters a table
    /// after changing rows of it (an upsert then reports a duplicate key).
    fn prepare_schemas(
        &self,
        batch: &Batch,
        snapshots: &HashMap<String, Physical>,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let mut tables: Vec<TableColumns<'_>> = Vec::new();
        for step in &batch.steps {
            let Step::Rows(t) = step else { continue };
            if t.rows.is_empty() {
                continue;
            }
            let i = match tables.iter().position(|(n, ..)| *n == t.table) {
                Some(i) => i,
                None => {
                    tables.push((t.table.as_str(), t.mode, Vec::new(), Vec::new()));
                    tables.len() - 1
                }
            };
            let (_, _, wanted, keys) = &mut tables[i];
            self.union_columns(t, wanted, keys)?;
        }
        for (table, mode, wanted, keys) in &tables {
            self.prepare_table(table, table, *mode, wanted, keys, report)
                .with_context(|| format!("DuckDB table '{table}'"))?;
            if let Some(p) = snapshots.get(*table) {
                let staging = staging_name(table);
                if p.method == Method::Staging && self.columns(&staging)?.is_some() {
                    self.prepare_table(&staging, table, *mode, wanted, keys, report)
                        .with_context(|| format!("DuckDB table '{staging}'"))?;
                }
            }
        }
        Ok(())
    }

    /// Writes one table's rows (see the module docs). `fresh`: the table
    /// holds only rows of the snapshot being read, so snapshot reads with
    /// distinct keys are appended without a merge.
    fn write_rows(
        &self,
        si: usize,
        t: &TableRows,
        physical: &str,
        fresh: bool,
        seen: Option<&str>,
        report: &mut Report,
    ) -> Result<(), Failed> {
        if t.rows.is_empty() {
            return Ok(());
        }
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        let layouts = self.union_columns(t, &mut wanted, &mut keys)?;
        let target = self.prepare_table(physical, &t.table, t.mode, &wanted, &keys, report)?;
        let has_list = target.iter().any(|(_, ty)| is_list(ty));
        let all_upserts = t.rows.iter().all(|r| r.kind == RowKind::Upsert);
        let distinct = {
            let key_idx: Vec<usize> = keys
                .iter()
                .filter_map(|k| wanted.iter().position(|(w, _)| w.eq_ignore_ascii_case(k)))
                .collect();
            let mut seen: HashSet<Vec<KeyPart<'_>>> = HashSet::with_capacity(t.rows.len());
            let mut distinct = true;
            for row in &t.rows {
                let map = &layouts
                    .iter()
                    .find(|(l, _)| Arc::ptr_eq(l, &row.layout))
                    .ok_or_else(|| anyhow!("row layout missing"))?
                    .1;
                let key: Vec<KeyPart<'_>> = key_idx
                    .iter()
                    .map(|&w| {
                        map.iter()
                            .position(|&m| m == w)
                            .map_or(KeyPart::Null, |i| key_part(&row.cells[i]))
                    })
                    .collect();
                if !seen.insert(key) {
                    distinct = false;
                    break;
                }
            }
            distinct
        };
        let straight = !has_list
            && match t.mode {
                Mode::Append => true,
                Mode::Upsert => fresh && all_upserts && distinct,
            };
        let names: Vec<&str> = target.iter().map(|(n, _)| n.as_str()).collect();
        if straight {
            let mut app = self.conn.appender_with_columns(physical, &names)?;
            let appended = self
                .append(si, t, &layouts, &target, false, &mut app)
                .and_then(|()| app.flush().map_err(Failed::from));
            return match appended {
                Err(Failed::Error(e))
                    if t.mode == Mode::Upsert && format!("{e:#}").contains("constraint") =>
                {
                    Err(Failed::Conflict)
                }
                other => other,
            };
        }
        // Staging columns are positional (s0, s1, ...) so no field name can
        // clash with the bookkeeping ones.
        let stage_defs: Vec<String> = target
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                format!("s{i} {}", if is_list(ty) { "VARCHAR" } else { ty.as_str() })
            })
            .collect();
        self.conn.execute_batch(&format!(
            "CREATE OR REPLACE TEMP TABLE {STAGE} (seq BIGINT, kind TINYINT{}{})",
            if stage_defs.is_empty() { "" } else { ", " },
            stage_defs.join(", ")
        ))?;
        {
            let mut app = self
                .conn
                .appender_to_catalog_and_db(STAGE, "temp", "main")?;
            self.append(si, t, &layouts, &target, true, &mut app)?;
            app.flush().context("appending to the staging table")?;
        }
        let cols: Vec<String> = target.iter().map(|(n, _)| ident(n)).collect();
        let exprs: Vec<String> = target
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| cast(&format!("s{i}"), ty))
            .collect();
        let table = ident(physical);
        match t.mode {
            Mode::Append => {
                self.conn
                    .execute_batch(&format!(
                        "INSERT INTO {table} ({}) SELECT {} FROM {STAGE} ORDER BY seq",
                        cols.join(", "),
                        exprs.join(", ")
                    ))
                    .context("inserting the staged rows")?;
            }
            Mode::Upsert => {
                if keys.is_empty() {
                    return Err(Failed::Error(anyhow!("upsert mode without key columns")));
                }
                let key_idx: Vec<usize> = keys
                    .iter()
                    .map(|k| {
                        target
                            .iter()
                            .position(|(n, _)| n.eq_ignore_ascii_case(k))
                            .ok_or_else(|| anyhow!("key column '{k}' not staged"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let source = if distinct {
                    STAGE
                } else {
                    let partition: Vec<String> = key_idx.iter().map(|i| format!("s{i}")).collect();
                    self.conn.execute_batch(&format!(
                        "CREATE OR REPLACE TEMP TABLE {LATEST} AS SELECT * FROM {STAGE} QUALIFY row_number() OVER (PARTITION BY {} ORDER BY seq DESC) = 1",
                        partition.join(", ")
                    ))?;
                    LATEST
                };
                // Every staged key's row goes, then the keys whose last
                // event is an upsert come back with their new row. DuckDB
                // runs this about 4x faster than `INSERT ... ON CONFLICT DO
                // UPDATE`, and holds a large value fewer times over.
                let matches: Vec<String> = key_idx
                    .iter()
                    .map(|&i| format!("{table}.{} = l.s{i}", cols[i]))
                    .collect();
                self.conn
                    .execute_batch(&format!(
                        "DELETE FROM {table} USING {source} l WHERE {}",
                        matches.join(" AND ")
                    ))
                    .context("deleting the rows of the staged keys")?;
                let filter = if all_upserts { "" } else { " WHERE kind = 0" };
                self.conn
                    .execute_batch(&format!(
                        "INSERT INTO {table} ({}) SELECT {} FROM {source}{filter}",
                        cols.join(", "),
                        exprs.join(", ")
                    ))
                    .context("inserting the upserted rows")?;
                if let Some(seen) = seen {
                    self.track_keys(seen, &keys, &key_idx, &cols, &exprs, source)?;
                }
            }
        }
        Ok(())
    }

    /// Appends `t`'s rows to `app`: the target's columns in order, after
    /// `seq` and `kind` when `staged`.
    fn append(
        &self,
        si: usize,
        t: &TableRows,
        layouts: &[(Arc<Layout>, Vec<usize>)],
        target: &[(String, String)],
        staged: bool,
        app: &mut duckdb::Appender<'_>,
    ) -> Result<(), Failed> {
        let null = Cell::Null;
        let mut cells: Vec<&Cell> = Vec::with_capacity(target.len());
        let mut head: [Cell; 2] = [Cell::Null, Cell::Null];
        for (ri, row) in t.rows.iter().enumerate() {
            let map = &layouts
                .iter()
                .find(|(l, _)| Arc::ptr_eq(l, &row.layout))
                .ok_or_else(|| anyhow!("row layout missing"))?
                .1;
            cells.clear();
            cells.resize(target.len(), &null);
            for (i, &w) in map.iter().enumerate() {
                // Key values come first in a layout and win over a row
                // field of the same name.
                if cells[w].is_null() {
                    cells[w] = &row.cells[i];
                }
            }
            let result = if staged {
                head[0] = Cell::I64(ri as i64);
                head[1] = Cell::I8(row.kind.code());
                app.append_row(appender_params_from_iter(
                    head.iter().chain(cells.iter().copied()),
                ))
            } else {
                app.append_row(appender_params_from_iter(cells.iter().copied()))
            };
            if let Err(e) = result {
                let message = e.to_string();
                if !staged && t.mode == Mode::Upsert && message.contains("constraint") {
                    return Err(Failed::Conflict);
                }
                return Err(Failed::Error(anyhow::Error::new(
                    self.diagnose(si, ri, t, row, target, &cells, message),
                )));
            }
        }
        Ok(())
    }

    /// Which column of a refused row DuckDB cannot take, by casting each
    /// value to its column's type on its own.
    #[allow(clippy::too_many_arguments)]
    fn diagnose(
        &self,
        si: usize,
        ri: usize,
        t: &TableRows,
        row: &Row,
        target: &[(String, String)],
        cells: &[&Cell],
        message: String,
    ) -> RowRejected {
        let mut column = None;
        let mut size = 0;
        let mut message = message;
        for ((name, ty), cell) in target.iter().zip(cells) {
            if cell.is_null() || is_list(ty) {
                continue;
            }
            let probe =
                self.conn
                    .query_row(&format!("SELECT CAST(? AS {ty}) IS NULL"), [*cell], |r| {
                        r.get::<_, bool>(0)
                    });
            if let Err(e) = probe {
                column = Some(name.clone());
                size = cell.size();
                message = format!("{e} (value {})", cell.describe());
                break;
            }
        }
        RowRejected {
            step: si,
            row: ri,
            table: t.table.clone(),
            column,
            size,
            key: row.key_text(),
            origin: row.origin.clone(),
            message,
        }
    }
}
