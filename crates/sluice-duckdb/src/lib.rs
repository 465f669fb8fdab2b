//! The DuckDB sink connector (`duckdb`): Debezium change events into DuckDB
//! tables, exactly once.
//!
//! # Linking DuckDB
//!
//! The `duckdb` crate is linked against DuckDB's official shared library
//! (`libduckdb.so` 1.5.x) instead of being built from source (the crate's
//! `bundled` feature compiles DuckDB's C++ for most of an hour) or
//! downloaded from GitHub at build time. The library comes from the npm
//! package `@duckdb/node-bindings-linux-x64@1.5.6-r.1`, which ships DuckDB's
//! release build; `libduckdb-sys` uses its pre-generated bindings, so no
//! header is needed. This crate's `build.rs` looks for it in
//! `$DUCKDB_LIB_DIR`, else in `$HOME/.cache/sluice-duckdb` (or
//! `$SLUICE_DUCKDB_PREFIX`), running `npm install` there when it is
//! missing, so a fresh clone builds with plain `cargo build` once npm is
//! installed. It copies the library into the profile's output directory
//! (`target/<profile>/`, next to the binaries), links against that copy and
//! gives this crate's tests a `$ORIGIN/..` rpath; `sluice-cli`'s build script
//! gives the `sluice` binary `$ORIGIN`. Binaries thus run without
//! `LD_LIBRARY_PATH` and keep running when the build's caches move, as long
//! as the library travels with them.
//!
//! # Properties
//!
//! - `duckdb.path` (required): the database file.
//! - `topics` / `topics.regex`: the worker's subscription.
//! - `duckdb.tables.topics.mapping`: JSON array of `{topic, table, mode}`
//!   (single quotes accepted); unlisted topics go to the table named after
//!   the topic's last dot-separated segment, mode `upsert`.
//! - `flush.size.records` (default 10000): records buffered before they
//!   are written without waiting for the worker's flush.
//! - `flush.interval.ms` (default 10000): buffered records older than this
//!   are written at the next `put`, without waiting for the worker's flush
//!   (which comes every `offset.flush.interval.ms` and always writes).
//! - `duckdb.dedup` (`source` | `offset` | `none`, default `source`).
//!
//! A connector runs one task whatever `tasks.max` says: a DuckDB file takes
//! one writing process, and one writer keeps each table's rows in order.
//!
//! # Modes
//!
//! `upsert` keeps each key's current row (primary key = the record key's
//! fields): creates, updates and snapshot reads upsert, deletes delete, and
//! so does a null value that keeps the row's schema (the delete as
//! `ExtractNewRecordState` writes it by default,
//! `delete.tombstone.handling.mode=tombstone`). Tombstones (null values
//! without a schema) are counted and ignored because the delete event
//! before them already removed the row. `append` writes one row per
//! change event with the row's columns (the `after` image, or `before` for
//! a delete) and `__op`, `__lsn`, `__source_ts_ms`, `__deleted`. Debezium
//! envelopes (`before`/`after`/`op`/`source`) are read directly; records
//! already unwrapped by `ExtractNewRecordState` are rows themselves, with
//! its optional `__deleted`, `__op`, `__lsn` and `__source_ts_ms` fields
//! read as metadata. Truncate events (`op` `t`) fail the task: they cannot
//! be applied row by row and are never dropped silently.
//!
//! Tables are created when missing; a field that appears later is added
//! with `ALTER TABLE ... ADD COLUMN`; a field that disappears stays as a
//! column and is NULL in later rows. Column types follow [`types`]; when
//! the source changes a column's type, [`evolution`] decides: a widening
//! (`int` → `bigint`, more numeric precision, `float4` → `float8`,
//! `timestamp` → `timestamptz`, anything → text) alters the DuckDB column
//! (a key column by rebuilding the table), a narrowing keeps the wider
//! column (every new value fits), and an incompatible change (`date` →
//! `int`) turns the column into `VARCHAR` (old values as their text), so
//! no value is lost; `duckdb.type.incompatible=fail` stops the task
//! instead, with an error naming the table, the column and both types.
//!
//! # Snapshots
//!
//! A snapshot (the initial one, one taken again after an interrupted one,
//! after a lost slot, or with `snapshot.mode=always` / `when_needed`)
//! leaves each upsert table equal to the snapshot: rows that PostgreSQL no
//! longer has are removed, even though no delete event was ever sent for
//! them. The records say where a snapshot of a table begins and ends
//! (`source.snapshot`: `first` / `first_in_data_collection` on a table's
//! first read, `last_in_data_collection` / `last` on its last; `source.lsn`
//! names the snapshot):
//!
//! - At a table's first snapshot read, an upsert table that has rows gets a
//!   staging table, `__sluice_snapshot_<table>`, with its columns and key;
//!   the snapshot's reads go there. An empty (or new) table takes the reads
//!   directly: nothing in it can be stale.
//! - At the table's last read, in the flush's one transaction, the staging
//!   table replaces the table (rows the snapshot did not have are gone;
//!   their number is logged and stored).
//! - A snapshot that never completes removes nothing: when a later snapshot
//!   begins (or completes) its staging table is dropped (rows it read
//!   straight into an empty table stay) and the table stays as it was
//!   until that snapshot completes; if changes stream instead (the snapshot
//!   was given up), its rows are upserted into the table.
//! - `__sluice_snapshots(connector, table_name, generation, topic,
//!   kafka_partition, mode, method, opened_by, state, rows, removed,
//!   started_at, ended_at)` records each table's snapshots: `generation`
//!   is the snapshot's LSN, `state` `open`, `complete`, `abandoned` or
//!   `incomplete`. For append tables it is the marker of a new generation:
//!   the snapshot's rows are appended as before (`__op` `r`, `__lsn` the
//!   generation), and the latest complete generation of a table is
//!   `SELECT max(generation) FROM __sluice_snapshots WHERE table_name = 't'
//!   AND state = 'complete'`.
//!
//! A table that had no rows at the source when the snapshot read it
//! produces no record at all: the snapshot's last record names its topic
//! in the header [`SNAPSHOT_EMPTY_TOPICS_HEADER`], and its upsert table
//! is emptied in the same transaction (`method` `empty` in
//! `__sluice_snapshots`), unless a change streamed after the snapshot was
//! already written to it (its rows are then kept, with a warning). The
//! table's first change after the snapshot carries the snapshot's LSN in
//! the header [`SNAPSHOT_EMPTY_HEADER`]: the table is emptied before that
//! change's row, unless the snapshot's end did it already. That covers a
//! snapshot in which no table had a row (it has no last record) and a sink
//! that reads only the empty table's topic. A read of an older snapshot
//! that arrives after the table's newer one completed is stale and not
//! written.
//!
//! Records unwrapped by `ExtractNewRecordState` are reconciled the same
//! way when they carry the snapshot markers and the LSN
//! (`add.fields=op,lsn,snapshot`, read from `__op`, `__lsn` and
//! `__snapshot`, or their `source.`-prefixed names); without them they are
//! upserted and nothing is removed.
//!
//! Limits: a table whose
//! snapshot arrives through several partitions (a topic with more than
//! one) cannot tell its end from the order of its records: it is upserted,
//! with a warning, and nothing is removed.
//!
//! Incremental snapshots (by signal) are merged into the stream: their
//! reads carry neither a snapshot LSN nor an end. Sluice's source marks
//! them in the header [`INCREMENTAL_SNAPSHOT_HEADER`] of the table's
//! records instead: at `begin`, an upsert table gets
//! `__sluice_seen_<table>` (its key columns), and every flush appends the
//! keys it writes to the table there; at `end` (the table was read whole),
//! the rows whose key is not there are deleted in the same transaction,
//! and the keys dropped. Every row the source has at the end was read by a
//! chunk or written by a change after the begin, so nothing the source
//! has is removed. `stop`, a snapshot of the whole table, another begin, or
//! records from another partition end it without removing anything
//! (`method` `incremental`, `state` `incomplete` in `__sluice_snapshots`).
//!
//! # Exactly once
//!
//! Each flush writes its rows, its snapshot steps and the positions it
//! covers, in `__sluice_positions(connector, topic, kafka_partition, ...)`,
//! in one DuckDB transaction; on start the task reads them back and skips
//! records at or below them (logging how many). Which position:
//!
//! - `source` (default): the Debezium source position — `source.sequence`
//!   `["<lsn_commit>","<lsn>"]` (or `source.lsn`, or the unwrapped
//!   `__lsn`), then the phase (snapshot reads before streamed changes: the
//!   first streamed change can carry the snapshot's LSN), plus an ordinal
//!   telling records at an equal position apart (the snapshot's reads all
//!   share one LSN: their transport offset). Incremental-snapshot reads carry no LSN, so they need
//!   `offset` or `none`. It survives every way a record comes twice: the
//!   source re-sends what it had not seen acknowledged with the same LSNs,
//!   and a transport re-delivers what the sink had written but not yet
//!   committed as read. A record without a source position fails the task,
//!   naming it; a delete that came as a null value takes the place right
//!   after the record before it, and after a restart is known written when
//!   its transport offset is at or below that of the last stored position
//!   (stored with it).
//! - `offset`: transport offsets per topic-partition (Kafka's, or the
//!   in-process log's, which survive restarts too), for non-Debezium data.
//! - `none`: at least once.
//!
//! # Writing
//!
//! Values go in through DuckDB's Appender in their native types (see
//! [`types`]), with no text in between for numbers, strings, BLOBs and
//! times. Append-mode rows, and snapshot reads into a table the snapshot
//! fills, are appended to the table itself; other upsert rows go to a
//! temporary staging table of the target's types and are merged set-wise:
//! one `DELETE ... USING` removes every staged key's row, one `INSERT ...
//! SELECT` puts back the keys whose last event in the flush is an upsert.
//! One transaction per flush; a put writes without waiting for the
//! worker's flush after `flush.size.records` records or 64 MiB of
//! values. DuckDB calls run on `spawn_blocking`, one flush at a time,
//! while the next one is buffered.
//!
//! # Values DuckDB refuses
//!
//! Values of any size PostgreSQL holds (text and bytea up to 1 GB) are
//! written as they are. A row DuckDB still refuses fails the task with a
//! message naming the table, the key, the column, the value's size and
//! DuckDB's reason; with `errors.tolerance=all` on the connector it is
//! logged at WARN and skipped instead, and the rest of the flush is
//! written.

pub mod evolution;
pub mod mapping;
mod snapshot;
pub mod stores;
pub mod types;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_trait::async_trait;
use sluice_core::config::{ConfigDef, ConfigError, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SinkContext, SinkTask};
use sluice_core::error::{definite, transient};
use sluice_core::record::{
    SinkRecord, INCREMENTAL_SNAPSHOT_HEADER, SNAPSHOT_EMPTY_HEADER, SNAPSHOT_EMPTY_TOPICS_HEADER,
};
use sluice_core::schema::{Schema, SchemaRef, SchemaType};
use sluice_core::value::Value;

use mapping::{Mapping, Mode};
use snapshot::{NotEmptied, Tracker};
use types::Cell;
use writer::{Batch, Layout, Origin, Position, Row, RowKind, RowRejected, Writer};

/// The connector's class name.
pub const CLASS: &str = "io.sluice.connect.duckdb.DuckDbSinkConnector";

const DEFAULT_FLUSH_SIZE: usize = 10_000;
const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10_000;

/// The DuckDB sink plugin.
pub fn plugin() -> Arc<dyn ConnectorPlugin> {
    Arc::new(DuckDbSink)
}

struct DuckDbSink;

/// Which position makes replays idempotent (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// Debezium source position (lsn_commit, lsn, phase, ordinal).
    Source,
    /// Kafka offsets.
    Offset,
    /// No deduplication.
    None,
}

impl ConnectorPlugin for DuckDbSink {
    fn class(&self) -> &'static str {
        CLASS
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["duckdb", "DuckDbSink", "DuckDbSinkConnector"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new("duckdb.path", ConfigType::String, "The DuckDB database file."),
            ConfigKey::new(
                "duckdb.tables.topics.mapping",
                ConfigType::String,
                "JSON array of {topic, table, mode} (mode 'upsert' or 'append'); unlisted topics go to the table named after the topic's last segment, mode upsert.",
            )
            .default(""),
            ConfigKey::new(
                "flush.size.records",
                ConfigType::String,
                "Records buffered before they are written, without waiting for the worker's flush.",
            )
            .default("10000"),
            ConfigKey::new(
                "flush.interval.ms",
                ConfigType::String,
                "Buffered records older than this are written at the next put, without waiting for the worker's flush.",
            )
            .default("10000"),
            ConfigKey::new(
                "duckdb.dedup",
                ConfigType::Enum,
                "What makes replays idempotent: 'source' (Debezium source LSNs; works with the in-process transport and over Kafka), 'offset' (transport offsets: Kafka's or the in-process log's), 'none'.",
            )
            .default("source")
            .allowed(&["source", "offset", "none"]),
            ConfigKey::new(
                "duckdb.type.incompatible",
                ConfigType::Enum,
                "What a column becomes when the source changes its type to one that neither holds nor is held by the column's (date to int, bigint to float8): 'fail' stops the task naming table, column and types; 'varchar' turns the column into VARCHAR, old values as their text.",
            )
            .default("fail")
            .allowed(&["fail", "varchar"]),
        ])
    }
    fn validate(&self, props: &Props) -> Result<Vec<String>, ConfigErrors> {
        Settings::from_props(props).map(|_| Vec::new())
    }
    fn create_sink_task(
        &self,
        props: &Props,
        ctx: SinkContext,
    ) -> anyhow::Result<Box<dyn SinkTask>> {
        // The declared keys' own checks (types, allowed values), then ours.
        self.config_def().parse(props, &[])?;
        let settings = Settings::from_props(props)?;
        Ok(Box::new(DuckDbSinkTask {
            writer: None,
            settings,
            ctx,
            batch: Batch::default(),
            buffered: 0,
            oldest: None,
            committed: HashMap::new(),
            committed_offsets: HashMap::new(),
            seen: HashMap::new(),
            skipped: 0,
            stale_reads: 0,
            tombstones: 0,
            rejected: 0,
            layouts: HashMap::new(),
            tracker: Tracker::default(),
            failed: None,
            inflight: None,
        }))
    }
}

struct Settings {
    path: String,
    mapping: Mapping,
    flush_size: usize,
    flush_interval: Duration,
    dedup: Dedup,
    /// `errors.tolerance=all`: rows DuckDB refuses are logged and skipped.
    tolerate: bool,
    /// `duckdb.type.incompatible=varchar`.
    incompatible_to_text: bool,
    /// The topics the connector reads (`topics` / `topics.regex`): a
    /// snapshot's empty tables are emptied only among them.
    reads: Reads,
}

/// `topics` or `topics.regex`, as the worker subscribes.
enum Reads {
    Topics(HashSet<String>),
    /// Matched against whole names, as Java's `Pattern.matches`.
    Regex(Option<regex::Regex>),
}

impl Reads {
    fn from_props(props: &Props) -> Reads {
        match props
            .get("topics.regex")
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
        {
            // The worker validated the pattern; one it cannot take here
            // matches nothing.
            Some(r) => Reads::Regex(regex::Regex::new(&format!("^(?:{r})$")).ok()),
            None => Reads::Topics(
                props
                    .get("topics")
                    .map(|t| t.split(',').map(|s| s.trim().to_owned()).collect())
                    .unwrap_or_default(),
            ),
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Reads::Topics(t) => t.contains(topic),
            Reads::Regex(r) => r.as_ref().is_some_and(|r| r.is_match(topic)),
        }
    }
}

impl Settings {
    fn from_props(props: &Props) -> Result<Settings, ConfigErrors> {
        let mut errors = Vec::new();
        let get = |k: &str| props.get(k).map(|v| v.trim().to_owned());
        let path = match get("duckdb.path") {
            Some(p) if !p.is_empty() => p,
            _ => {
                errors.push(ConfigError::missing("duckdb.path"));
                String::new()
            }
        };
        let mapping = match get("duckdb.tables.topics.mapping") {
            None => Mapping::default(),
            Some(text) => Mapping::parse(&text).unwrap_or_else(|e| {
                errors.push(ConfigError::new(
                    "duckdb.tables.topics.mapping",
                    Some(&text),
                    e,
                ));
                Mapping::default()
            }),
        };
        let flush_size = match get("flush.size.records") {
            None => DEFAULT_FLUSH_SIZE,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    errors.push(ConfigError::new(
                        "flush.size.records",
                        Some(&v),
                        "must be a positive integer",
                    ));
                    DEFAULT_FLUSH_SIZE
                }
            },
        };
        let flush_interval = match get("flush.interval.ms") {
            None => Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    errors.push(ConfigError::new(
                        "flush.interval.ms",
                        Some(&v),
                        "must be a non-negative integer",
                    ));
                    Duration::from_millis(DEFAULT_FLUSH_INTERVAL_MS)
                }
            },
        };
        let dedup = match get("duckdb.dedup").as_deref() {
            None | Some("source") => Dedup::Source,
            Some("offset") => Dedup::Offset,
            Some("none") => Dedup::None,
            Some(other) => {
                errors.push(ConfigError::new(
                    "duckdb.dedup",
                    Some(other),
                    "allowed: source, offset, none",
                ));
                Dedup::Source
            }
        };
        let incompatible_to_text = match get("duckdb.type.incompatible").as_deref() {
            Some("fail") => false,
            None | Some("varchar") => true,
            Some(other) => {
                errors.push(ConfigError::new(
                    "duckdb.type.incompatible",
                    Some(other),
                    "allowed: fail, varchar",
                ));
                false
            }
        };
        if errors.is_empty() {
            Ok(Settings {
                incompatible_to_text,
                path,
                mapping,
                flush_size,
                flush_interval,
                dedup,
                tolerate: get("errors.tolerance").as_deref() == Some("all"),
                reads: Reads::from_props(props),
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

type PartitionKey = (Arc<str>, i32);

/// Bytes of buffered values after which a put writes without waiting for
/// the worker's flush, so a few large values never pile up in memory.
const FLUSH_BYTES: usize = 64 << 20;

/// The layouts known, by the schemas that make them (held, so a pointer
/// is never reused while it is a key).
type LayoutKey = (usize, usize, bool, bool);

/// A layout with the schemas it was made from (held so that their
/// addresses, the key, stay taken).
type CachedLayout = (Option<SchemaRef>, Option<SchemaRef>, Arc<Layout>);

struct DuckDbSinkTask {
    writer: Option<Arc<Mutex<Writer>>>,
    settings: Settings,
    ctx: SinkContext,
    batch: Batch,
    buffered: usize,
    /// When the oldest buffered record arrived.
    oldest: Option<Instant>,
    /// Positions durably written (read at start, advanced by each flush).
    committed: HashMap<PartitionKey, Position>,
    /// The transport offset of each committed source position's record,
    /// where it was stored.
    committed_offsets: HashMap<PartitionKey, i64>,
    /// The last position seen per partition (for ordinals), written or not.
    seen: HashMap<PartitionKey, Position>,
    skipped: u64,
    /// Reads of a snapshot older than the table's latest complete one.
    stale_reads: u64,
    tombstones: u64,
    /// Records DuckDB refused and `errors.tolerance=all` skipped.
    rejected: u64,
    layouts: HashMap<LayoutKey, CachedLayout>,
    tracker: Tracker,
    /// Set when a write failed: the state in memory may be ahead of the
    /// database, so the task must be started again.
    failed: Option<String>,
    /// The flush DuckDB is writing while the next one is built, and when
    /// it began.
    inflight: Option<(InflightWrite, Instant)>,
}

/// A flush being written on the blocking pool: its batch comes back with
/// the outcome.
type InflightWrite = tokio::task::JoinHandle<(writer::Batch, anyhow::Result<writer::Report>)>;

/// Record coordinates for error messages.
fn at(r: &SinkRecord) -> String {
    format!(
        "record topic '{}' partition {} offset {}",
        r.topic, r.partition, r.offset
    )
}

/// The append-mode metadata columns.
const APPEND_META: [(&str, &str); 4] = [
    ("__op", "VARCHAR"),
    ("__lsn", "BIGINT"),
    ("__source_ts_ms", "BIGINT"),
    ("__deleted", "BOOLEAN"),
];

fn build_layout(
    key: Option<&Schema>,
    row: Option<&Schema>,
    append: bool,
    unwrapped: bool,
) -> Layout {
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut keys = 0;
    if let (Some(k), false) = (key, append) {
        for f in &k.fields {
            names.push(f.name.clone());
            types.push(evolution::canonical(&types::duck_type(&f.schema)));
        }
        keys = names.len();
    }
    if let Some(r) = row {
        for f in &r.fields {
            if unwrapped && META_FIELDS.contains(&f.name.as_str()) {
                continue;
            }
            if append && APPEND_META.iter().any(|(m, _)| *m == f.name) {
                continue;
            }
            names.push(f.name.clone());
            types.push(evolution::canonical(&types::duck_type(&f.schema)));
        }
    }
    if append {
        for (n, ty) in APPEND_META {
            names.push(n.to_owned());
            types.push(ty.to_owned());
        }
    }
    Layout { names, types, keys }
}

impl DuckDbSinkTask {
    async fn writer(&mut self) -> anyhow::Result<Arc<Mutex<Writer>>> {
        if let Some(w) = &self.writer {
            return Ok(Arc::clone(w));
        }
        let path = self.settings.path.clone();
        let connector = self.ctx.connector.clone();
        let to_text = self.settings.incompatible_to_text;
        let (writer, positions, (open, completed)) = tokio::task::spawn_blocking(move || {
            let w = Writer::open(&path, &connector, to_text)?;
            let p = w.positions()?;
            let o = w.open_snapshots()?;
            let c = w.completed_snapshots()?;
            anyhow::Ok((w, p, (o, c)))
        })
        .await
        .context("DuckDB writer thread")?
        .map_err(classify)?;
        for (topic, partition, pos, offset) in positions {
            let key: PartitionKey = (Arc::from(topic.as_str()), partition);
            if let Some(o) = offset {
                self.committed_offsets.insert(key.clone(), o);
            }
            self.committed.insert(key, pos);
        }
        for s in &open {
            tracing::info!(
                connector = %self.ctx.connector,
                "DuckDB sink: snapshot {} of table '{}' is in progress ({} rows so far); it goes on",
                s.generation,
                s.table,
                s.rows
            );
        }
        self.tracker = Tracker::resume(&open, &completed);
        let w = Arc::new(Mutex::new(writer));
        self.writer = Some(Arc::clone(&w));
        Ok(w)
    }

    /// The record's position for deduplication, if the mode uses one.
    fn position(&self, r: &SinkRecord, meta: &Meta) -> anyhow::Result<Option<Position>> {
        Ok(match self.settings.dedup {
            Dedup::None => None,
            Dedup::Offset => Some(Position::Offset(r.offset)),
            Dedup::Source => {
                let (commit, lsn) = meta.source_position.ok_or_else(|| {
                    anyhow!(
                        "{}: no Debezium source position (source.lsn / source.sequence / __lsn) to deduplicate by; set duckdb.dedup=offset (Kafka transport) or none",
                        at(r)
                    )
                })?;
                let key = (Arc::clone(&r.topic), r.partition);
                let phase = if meta.op.as_deref() == Some("r") {
                    0
                } else {
                    1
                };
                // A snapshot's reads all share its LSN: they are told apart
                // by their transport offset, which a re-delivery keeps (an
                // ordinal counted from the first record seen would restart
                // at 0 when reading resumes mid-snapshot, and skip rows never
                // written). A source never re-sends a snapshot's reads: an
                // interrupted snapshot starts over at a new LSN.
                let ordinal = if phase == 0 {
                    r.offset
                } else {
                    match self.seen.get(&key) {
                        Some(Position::Source(c, l, p, o))
                            if (*c, *l, *p) == (commit, lsn, phase) =>
                        {
                            o + 1
                        }
                        _ => 0,
                    }
                };
                // An incremental snapshot's read sits right after the commit
                // its sequence names, before every change of the transactions
                // after it (whose changes may have LSNs before its own).
                let lsn = if phase == 0 && meta.snapshot.as_deref() == Some("incremental") {
                    0
                } else {
                    lsn
                };
                Some(Position::Source(commit, lsn, phase, ordinal))
            }
        })
    }

    fn layout(
        &mut self,
        key: Option<&SchemaRef>,
        row: Option<&SchemaRef>,
        append: bool,
        unwrapped: bool,
    ) -> Arc<Layout> {
        let ptr = |s: Option<&SchemaRef>| s.map_or(0, |s| Arc::as_ptr(s) as usize);
        let k = (ptr(key), ptr(row), append, unwrapped);
        if let Some((_, _, l)) = self.layouts.get(&k) {
            return Arc::clone(l);
        }
        if self.layouts.len() >= 4096 {
            self.layouts.clear();
        }
        let l = Arc::new(build_layout(
            key.map(|s| s.as_ref()),
            row.map(|s| s.as_ref()),
            append,
            unwrapped,
        ));
        self.layouts
            .insert(k, (key.cloned(), row.cloned(), Arc::clone(&l)));
        l
    }

    fn add(&mut self, r: &SinkRecord) -> anyhow::Result<()> {
        let (schema, value) = (r.value_schema.as_ref(), r.value.as_ref());
        if value.is_none() {
            if schema.is_some() && self.settings.mapping.target(&r.topic).mode == Mode::Upsert {
                // A null value with the row's schema: a delete that
                // ExtractNewRecordState turned into a null value (its
                // default, `delete.tombstone.handling.mode=tombstone`).
                return self.add_null_delete(r);
            }
            // Tombstones follow deletes, which already carry the change.
            self.tombstones += 1;
            return Ok(());
        }
        let (Some(schema), Some(value)) = (schema, value) else {
            bail!(
                "{}: the value has no schema; the DuckDB sink needs schemas (value.converter.schemas.enable=true)",
                at(r)
            );
        };
        let event = read_event(schema, value).with_context(|| at(r))?;
        let position = self.position(r, &event.meta)?;
        let pkey = (Arc::clone(&r.topic), r.partition);
        if self.written_before(&pkey, position.as_ref()) {
            return Ok(());
        }
        let target = self.settings.mapping.target(&r.topic);
        let append = target.mode == Mode::Append;
        let mut cells = Vec::new();
        let key_schema = if append {
            None
        } else {
            let (Some(kschema), Some(Value::Struct(kfields))) = (&r.key_schema, &r.key) else {
                bail!(
                    "{}: upsert mode needs a struct key with a schema (table '{}'); use mode 'append' for keyless topics",
                    at(r),
                    target.table
                );
            };
            push_key_cells(r, kschema, kfields, &mut cells)?;
            Some(kschema)
        };
        let row_schema = event.row.map(|(s, _)| s);
        if let Some((rschema, rvalue)) = event.row {
            let fields = rvalue.as_struct().unwrap_or_default();
            for (f, v) in rschema.fields.iter().zip(fields) {
                if event.unwrapped && META_FIELDS.contains(&f.name.as_str()) {
                    continue;
                }
                if append && APPEND_META.iter().any(|(m, _)| *m == f.name) {
                    continue;
                }
                cells.push(
                    types::cell(&f.schema, v)
                        .with_context(|| format!("{}: field '{}'", at(r), f.name))?,
                );
            }
        }
        if append {
            let m = &event.meta;
            cells.push(m.op.clone().map_or(Cell::Null, Cell::Text));
            cells.push(m.lsn.map_or(Cell::Null, Cell::I64));
            cells.push(m.source_ts_ms.map_or(Cell::Null, Cell::I64));
            cells.push(Cell::Bool(m.deleted));
        }
        let layout = self.layout(key_schema, row_schema, append, event.unwrapped);
        if layout.names.len() != cells.len() {
            bail!(
                "{}: the value has {} fields where its schema has {}",
                at(r),
                cells.len(),
                layout.names.len()
            );
        }
        let kind = match (target.mode, event.meta.deleted) {
            (Mode::Append, _) => RowKind::Append,
            (Mode::Upsert, true) => RowKind::Delete,
            (Mode::Upsert, false) => RowKind::Upsert,
        };
        self.empty_before(r, &target);
        let mut steps = self.tracker.record(
            &target.table,
            target.mode,
            &r.topic,
            r.partition,
            event.meta.op.as_deref(),
            event.meta.snapshot.as_deref(),
            event.meta.lsn,
        );
        self.incremental_marks(r, &target, &mut steps);
        if steps.stale {
            // A read of an older snapshot than the table's latest complete
            // one, arriving late: the newer snapshot superseded it.
            self.stale_reads += 1;
            return Ok(());
        }
        self.push_row(r, &target, steps, kind, layout, cells);
        if event.meta.snapshot.as_deref() == Some("last") {
            if let Some(generation) = event.meta.lsn {
                self.empty_tables(r, generation);
            }
        }
        self.buffered_up_to(pkey, position, r.offset);
        Ok(())
    }

    /// Notes the record's position as seen; whether it is at or below the
    /// partition's stored position (written before; then counted).
    fn written_before(&mut self, pkey: &PartitionKey, position: Option<&Position>) -> bool {
        let Some(pos) = position else {
            return false;
        };
        self.seen.insert(pkey.clone(), pos.clone());
        let done = self.committed.get(pkey).is_some_and(|done| pos.le(done));
        if done {
            self.skipped += 1;
        }
        done
    }

    /// The record's row into the batch, between its snapshot steps.
    fn push_row(
        &mut self,
        r: &SinkRecord,
        target: &mapping::Target,
        steps: snapshot::Steps,
        kind: RowKind,
        layout: Arc<Layout>,
        cells: Vec<Cell>,
    ) {
        for c in steps.before {
            self.batch.control(c);
        }
        let origin = Origin {
            topic: Arc::clone(&r.topic),
            partition: r.partition,
            offset: r.offset,
        };
        self.batch.push(
            &target.table,
            target.mode,
            Row {
                kind,
                layout,
                cells,
                origin,
            },
        );
        for c in steps.after {
            self.batch.control(c);
        }
    }

    /// A record is in the batch: its position (and transport offset) is
    /// what the batch reaches on its partition.
    fn buffered_up_to(&mut self, pkey: PartitionKey, position: Option<Position>, offset: i64) {
        if let Some(pos) = position {
            self.batch.offsets.insert(pkey.clone(), offset);
            self.batch.positions.insert(pkey, pos);
        }
        self.buffered += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// A delete that came as a null value with the row's schema: the key's
    /// row is deleted. Such a record carries no source position: in
    /// `source` dedup it takes the place right after the record before it
    /// on its partition, and after a restart, a record at or below the
    /// transport offset of the last position written was written already.
    fn add_null_delete(&mut self, r: &SinkRecord) -> anyhow::Result<()> {
        let pkey: PartitionKey = (Arc::clone(&r.topic), r.partition);
        let position = match self.settings.dedup {
            Dedup::None => None,
            Dedup::Offset => Some(Position::Offset(r.offset)),
            Dedup::Source => {
                let previous = match self.seen.get(&pkey) {
                    Some(p) => Some(p),
                    None => {
                        if self
                            .committed_offsets
                            .get(&pkey)
                            .is_some_and(|o| r.offset <= *o)
                        {
                            self.skipped += 1;
                            return Ok(());
                        }
                        self.committed.get(&pkey)
                    }
                };
                Some(match previous {
                    Some(Position::Source(c, l, p, o)) => {
                        Position::Source(*c, *l, (*p).max(1), o + 1)
                    }
                    _ => Position::Source(0, 0, 1, r.offset),
                })
            }
        };
        if self.written_before(&pkey, position.as_ref()) {
            return Ok(());
        }
        let target = self.settings.mapping.target(&r.topic);
        let (Some(kschema), Some(Value::Struct(kfields)), Some(rschema)) =
            (&r.key_schema, &r.key, &r.value_schema)
        else {
            bail!(
                "{}: a delete (a null value) in upsert mode needs a struct key with a schema (table '{}'); use mode 'append' for keyless topics",
                at(r),
                target.table
            );
        };
        let mut cells = Vec::with_capacity(kfields.len() + rschema.fields.len());
        push_key_cells(r, kschema, kfields, &mut cells)?;
        for f in &rschema.fields {
            if !META_FIELDS.contains(&f.name.as_str()) {
                cells.push(Cell::Null);
            }
        }
        let layout = self.layout(Some(kschema), Some(rschema), false, true);
        let mut steps = self.tracker.record(
            &target.table,
            target.mode,
            &r.topic,
            r.partition,
            Some("d"),
            None,
            None,
        );
        self.incremental_marks(r, &target, &mut steps);
        self.push_row(r, &target, steps, RowKind::Delete, layout, cells);
        self.buffered_up_to(pkey, position, r.offset);
        Ok(())
    }

    /// The first change of a table since a snapshot that read it without
    /// a row says so (header [`SNAPSHOT_EMPTY_HEADER`]): the upsert table is
    /// emptied before its row, unless that snapshot's end did it already.
    fn empty_before(&mut self, r: &SinkRecord, target: &mapping::Target) {
        if target.mode != Mode::Upsert {
            return;
        }
        let Some(generation) = r
            .header_str(SNAPSHOT_EMPTY_HEADER)
            .and_then(|v| v.trim().parse::<i64>().ok())
        else {
            return;
        };
        let steps = self.tracker.emptied(&target.table, generation);
        self.empty_steps(&target.table, generation, steps);
    }

    /// Carries out what emptying `table` for snapshot `generation` came to.
    fn empty_steps(
        &mut self,
        table: &str,
        generation: i64,
        steps: Result<Vec<snapshot::Control>, NotEmptied>,
    ) {
        match steps {
            Ok(steps) => {
                for c in steps {
                    self.batch.control(c);
                }
            }
            Err(NotEmptied::ReadInSnapshot) => {}
            Err(NotEmptied::StreamedPast(_)) => tracing::warn!(
                connector = %self.ctx.connector,
                "DuckDB sink: snapshot {generation} read table '{table}' without a row, but changes streamed after it were written first; its rows are kept (any the source no longer has stay until its next snapshot)"
            ),
        }
    }

    /// The steps the record's incremental snapshot marks ask for, if it
    /// has any.
    fn incremental_marks(
        &mut self,
        r: &SinkRecord,
        target: &mapping::Target,
        steps: &mut snapshot::Steps,
    ) {
        let Some(marks) = r.header_str(INCREMENTAL_SNAPSHOT_HEADER) else {
            return;
        };
        self.tracker.marks(
            &target.table,
            target.mode,
            &r.topic,
            r.partition,
            marks,
            steps,
        );
    }

    /// The snapshot `generation` ends with `r`, whose header names the
    /// topics of tables it read without a row: their upsert tables are
    /// emptied in the same transaction, unless a change streamed after the
    /// snapshot was already written to one (then its rows are kept, with
    /// a warning: which of them the source still has cannot be told).
    fn empty_tables(&mut self, r: &SinkRecord, generation: i64) {
        let Some(topics) = r.header_str(SNAPSHOT_EMPTY_TOPICS_HEADER) else {
            return;
        };
        for topic in topics.split(',').filter(|t| !t.is_empty()) {
            let target = self.settings.mapping.target(topic);
            if target.mode != Mode::Upsert || !self.settings.reads.matches(topic) {
                continue;
            }
            // A change of the topic's partitions past the snapshot, already
            // written or in this batch.
            let streamed_past = self
                .committed
                .iter()
                .chain(self.seen.iter())
                .filter(|((t, _), _)| t.as_ref() == topic)
                .any(
                    |(_, p)| matches!(p, Position::Source(c, l, 1, _) if (*c).max(*l) > generation),
                );
            let steps = if streamed_past {
                Err(NotEmptied::StreamedPast(generation))
            } else {
                self.tracker.emptied(&target.table, generation)
            };
            self.empty_steps(&target.table, generation, steps);
        }
    }

    /// Writes everything buffered and waits until DuckDB has it.
    async fn write(&mut self) -> anyhow::Result<()> {
        self.start_write().await?;
        self.finish_write().await
    }

    /// Hands the buffered rows to DuckDB's thread and returns while it
    /// writes them, once the flush before has been written: decoding the
    /// next records overlaps DuckDB's work, and at most one flush is in
    /// flight (the driver's flush waits for it before offsets commit).
    async fn start_write(&mut self) -> anyhow::Result<()> {
        self.finish_write().await?;
        if let Some(why) = &self.failed {
            return Err(transient(anyhow!(
                "an earlier DuckDB write of this task failed ({why}); the task starts again to read its state from the database"
            )));
        }
        let writer = self.writer().await?;
        if self.skipped > 0 {
            tracing::info!(
                connector = %self.ctx.connector,
                skipped = self.skipped,
                "DuckDB sink: records at or below the stored positions were already written; not written again"
            );
            self.skipped = 0;
        }
        if self.stale_reads > 0 {
            tracing::info!(
                connector = %self.ctx.connector,
                stale = self.stale_reads,
                "DuckDB sink: reads of an earlier snapshot than the table's latest complete one arrived late; not written"
            );
            self.stale_reads = 0;
        }
        if self.tombstones > 0 {
            tracing::debug!(
                tombstones = self.tombstones,
                "DuckDB sink: tombstones carry no row change"
            );
            self.tombstones = 0;
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.buffered = 0;
        self.oldest = None;
        self.inflight = Some((spawn_write(writer, batch), Instant::now()));
        Ok(())
    }

    /// Waits for the flush in flight, if any, and settles its outcome: a
    /// row DuckDB refused is set aside under `errors.tolerance=all` and
    /// the rest written again; anything else fails the task.
    async fn finish_write(&mut self) -> anyhow::Result<()> {
        let Some((handle, started)) = self.inflight.take() else {
            return Ok(());
        };
        let (mut batch, mut result) = handle.await.context("DuckDB writer thread")?;
        loop {
            let e = match result {
                Ok(report) => {
                    self.note_flush(&batch, &report, started.elapsed());
                    break;
                }
                Err(e) => e,
            };
            let rejected = e
                .chain()
                .find_map(|c| c.downcast_ref::<RowRejected>())
                .map(|r| (r.step, r.row, r.to_string()));
            match rejected {
                Some((step, row, what)) if self.settings.tolerate => {
                    tracing::warn!(
                        connector = %self.ctx.connector,
                        "{what}; skipped (errors.tolerance=all)"
                    );
                    self.rejected += 1;
                    if batch.remove(step, row).is_none() {
                        self.failed = Some(what.clone());
                        bail!("{what}; the refused row could not be set aside");
                    }
                }
                Some((_, _, what)) => {
                    self.failed = Some(what.clone());
                    return Err(definite(anyhow!(
                        "{what}. The task stops here: set errors.tolerance=all on the connector to skip records DuckDB cannot take (each is logged), or change the column or value at the source"
                    )));
                }
                None => {
                    self.failed = Some(format!("{e:#}"));
                    return Err(classify(e));
                }
            }
            let writer = self.writer().await?;
            (batch, result) = spawn_write(writer, batch)
                .await
                .context("DuckDB writer thread")?;
        }
        self.committed.extend(batch.positions);
        self.committed_offsets.extend(batch.offsets);
        Ok(())
    }
}

impl DuckDbSinkTask {
    /// The sink's own metrics for one written flush.
    fn note_flush(&self, batch: &writer::Batch, report: &writer::Report, took: Duration) {
        let rows: usize = batch
            .steps
            .iter()
            .map(|s| match s {
                writer::Step::Rows(t) => t.rows.len(),
                writer::Step::Control(_) => 0,
            })
            .sum();
        let p = &self.ctx.telemetry.plugin;
        p.add(
            "duckdb_rows_applied",
            "Row changes written to DuckDB (inserted, upserted or deleted)",
            rows as f64,
        );
        p.add("duckdb_flushes", "DuckDB transactions committed", 1.0);
        p.add(
            "duckdb_flush_seconds",
            "Time spent writing and committing DuckDB transactions",
            took.as_secs_f64(),
        );
        p.set(
            "duckdb_last_flush_seconds",
            "How long the last DuckDB transaction took to write and commit",
            took.as_secs_f64(),
        );
        let removed: u64 = report.completed.iter().map(|(_, _, r)| r).sum();
        if !report.completed.is_empty() {
            p.add(
                "duckdb_snapshots_reconciled",
                "Table snapshots completed and swapped in",
                report.completed.len() as f64,
            );
            p.add(
                "duckdb_rows_removed_by_reconcile",
                "Rows a complete snapshot no longer had, removed at its end",
                removed as f64,
            );
        }
    }
}

/// Writes `batch` in one transaction on the blocking pool; the batch comes
/// back with the outcome.
fn spawn_write(writer: Arc<Mutex<Writer>>, batch: writer::Batch) -> InflightWrite {
    tokio::task::spawn_blocking(move || {
        let result = match writer.lock() {
            Ok(mut w) => w.write(&batch),
            Err(_) => Err(anyhow!("DuckDB writer poisoned by an earlier failure")),
        };
        (batch, result)
    })
}

/// DuckDB's I/O errors (a full disk, a file another process holds) may
/// pass; anything else is definite.
fn classify(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("IO Error") || text.contains("Could not set lock") {
        transient(e)
    } else {
        e
    }
}

/// The key's fields as cells; a null one is an error naming the record.
fn push_key_cells(
    r: &SinkRecord,
    schema: &Schema,
    fields: &[Value],
    cells: &mut Vec<Cell>,
) -> anyhow::Result<()> {
    for (f, v) in schema.fields.iter().zip(fields) {
        let c = types::cell(&f.schema, v)
            .with_context(|| format!("{}: key field '{}'", at(r), f.name))?;
        if c.is_null() {
            bail!("{}: key field '{}' is null", at(r), f.name);
        }
        cells.push(c);
    }
    Ok(())
}

/// ExtractNewRecordState's added fields read as metadata, not columns.
const META_FIELDS: &[&str] = &["__deleted", "__op", "__lsn", "__source_ts_ms"];

/// What an event says beyond its row.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub op: Option<String>,
    pub lsn: Option<i64>,
    pub source_ts_ms: Option<i64>,
    pub deleted: bool,
    pub source_position: Option<(i64, i64)>,
    /// `source.snapshot`, when set.
    pub snapshot: Option<String>,
}

struct Event<'a> {
    row: Option<(&'a SchemaRef, &'a Value)>,
    meta: Meta,
    unwrapped: bool,
}

fn read_event<'a>(schema: &'a SchemaRef, value: &'a Value) -> anyhow::Result<Event<'a>> {
    if schema.ty != SchemaType::Struct {
        bail!("the value is not a struct (schema type {:?})", schema.ty);
    }
    let is_envelope = schema.field("op").is_some()
        && schema.field("source").is_some()
        && (schema.field("after").is_some() || schema.field("before").is_some());
    if !is_envelope {
        let mut meta = Meta::default();
        if let Some((_, v)) = schema.field_value(value, "__op") {
            meta.op = v.as_str().map(str::to_owned);
        }
        // `add.fields=lsn,snapshot` names them `__lsn` and `__snapshot`;
        // `source.lsn,source.snapshot`, `__source_lsn` and
        // `__source_snapshot`.
        if let Some((_, v)) = schema
            .field_value(value, "__lsn")
            .or_else(|| schema.field_value(value, "__source_lsn"))
        {
            meta.lsn = v.as_i64();
            meta.source_position = meta.lsn.map(|l| (l, l));
        }
        if let Some((_, v)) = schema
            .field_value(value, "__snapshot")
            .or_else(|| schema.field_value(value, "__source_snapshot"))
        {
            meta.snapshot = v.as_str().map(str::to_owned);
        }
        if let Some((_, v)) = schema.field_value(value, "__source_ts_ms") {
            meta.source_ts_ms = v.as_i64();
        }
        meta.deleted = match schema.field_value(value, "__deleted") {
            Some((_, Value::Bool(b))) => *b,
            Some((_, Value::String(s))) => s == "true",
            _ => false,
        } || meta.op.as_deref() == Some("d");
        return Ok(Event {
            row: Some((schema, value)),
            meta,
            unwrapped: true,
        });
    }
    let op = schema
        .field_value(value, "op")
        .and_then(|(_, v)| v.as_str())
        .ok_or_else(|| anyhow!("Debezium envelope without an 'op' string"))?
        .to_owned();
    let mut meta = Meta {
        deleted: op == "d",
        ..Meta::default()
    };
    if let Some((ss, sv)) = schema.field_value(value, "source") {
        meta.lsn = ss.field_value(sv, "lsn").and_then(|(_, v)| v.as_i64());
        meta.source_ts_ms = ss.field_value(sv, "ts_ms").and_then(|(_, v)| v.as_i64());
        meta.snapshot = ss
            .field_value(sv, "snapshot")
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned);
        let sequence = ss
            .field_value(sv, "sequence")
            .and_then(|(_, v)| v.as_str())
            .and_then(|s| serde_json::from_str::<Vec<Option<String>>>(s).ok());
        let lsn = meta.lsn;
        meta.source_position = match sequence.as_deref() {
            Some([commit, l]) => {
                let parse = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<i64>().ok());
                match (parse(commit), parse(l).or(lsn)) {
                    (Some(c), Some(l)) => Some((c, l)),
                    (None, Some(l)) => Some((l, l)),
                    _ => None,
                }
            }
            _ => lsn.map(|l| (l, l)),
        };
    }
    let row = match op.as_str() {
        "c" | "u" | "r" => schema.field_value(value, "after"),
        "d" => schema.field_value(value, "before"),
        "t" => bail!("truncate events (op 't') cannot be applied by the DuckDB sink; exclude them at the source (skipped.operations=t)"),
        other => bail!("unknown Debezium op '{other}'"),
    };
    let row = match row {
        Some((s, v)) if !v.is_null() => Some((s, v)),
        _ if op == "d" => None,
        _ => bail!("'{op}' event without an 'after' row"),
    };
    meta.op = Some(op);
    Ok(Event {
        row,
        meta,
        unwrapped: false,
    })
}

#[async_trait]
impl SinkTask for DuckDbSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()> {
        // The stored positions must be known before the first record is
        // judged a replay or not.
        self.writer().await?;
        for r in records {
            self.add(r)?;
            if self.buffered >= self.settings.flush_size || self.batch.bytes >= FLUSH_BYTES {
                self.start_write().await?;
            }
        }
        if self
            .oldest
            .is_some_and(|t| t.elapsed() >= self.settings.flush_interval)
        {
            self.start_write().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write().await
    }

    /// A flush already handed to DuckDB is finished; rows still buffered
    /// are not written (their records were not committed, and are read
    /// again).
    async fn stop(&mut self) -> anyhow::Result<()> {
        self.finish_write().await
    }
}
