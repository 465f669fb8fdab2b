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
//! tombstones (null values) are counted and ignored because the delete
//! event before them already removed the row. `append` writes one row per
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
//! column and is NULL in later rows. Column types follow [`types`].
//!
//! # Exactly once
//!
//! Each flush writes its rows and the positions it covers, in
//! `__sluice_positions(connector, topic, kafka_partition, ...)`, in one
//! DuckDB transaction; on start the task reads them back and skips records
//! at or below them (logging how many). Which position:
//!
//! - `source` (default): the Debezium source position — `source.sequence`
//!   `["<lsn_commit>","<lsn>"]` (or `source.lsn`, or the unwrapped
//!   `__lsn`), then the phase (snapshot reads before streamed changes: the
//!   first streamed change can carry the snapshot's LSN), plus an ordinal
//!   counting records at an equal position (the snapshot's reads all share
//!   one LSN). Incremental-snapshot reads carry no LSN, so they need
//!   `offset` or `none`. It survives both transports:
//!   Sluice's in-process transport numbers a topic's records from 0 again
//!   after every restart, so Kafka offsets would wrongly skip new events
//!   there, while the source re-sends what was not acknowledged with the
//!   same LSNs; over Kafka, re-delivered records carry the same LSNs too.
//!   A record without a source position fails the task, naming it.
//! - `offset`: Kafka offsets per topic-partition, for non-Debezium data on
//!   a worker running over Kafka.
//! - `none`: at least once.
//!
//! Rows go in through DuckDB's Appender into a temporary all-VARCHAR
//! staging table, then one `INSERT ... SELECT` (with `ON CONFLICT DO
//! UPDATE` in upsert mode, after one `DELETE ... USING` for keys whose last
//! event is a delete) per table and flush. DuckDB calls run on
//! `spawn_blocking`.

pub mod mapping;
pub mod types;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use async_trait::async_trait;
use sluice_core::config::{ConfigDef, ConfigError, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SinkContext, SinkTask};
use sluice_core::record::SinkRecord;
use sluice_core::schema::{Schema, SchemaType};
use sluice_core::value::Value;

use mapping::{Mapping, Mode};
use writer::{Batch, Column, Position, Row, RowKind, Writer};

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
                "What makes replays idempotent: 'source' (Debezium source LSNs; works with the in-process transport and over Kafka), 'offset' (Kafka offsets), 'none'.",
            )
            .default("source")
            .allowed(&["source", "offset", "none"]),
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
            seen: HashMap::new(),
            skipped: 0,
            tombstones: 0,
        }))
    }
}

struct Settings {
    path: String,
    mapping: Mapping,
    flush_size: usize,
    flush_interval: Duration,
    dedup: Dedup,
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
        if errors.is_empty() {
            Ok(Settings {
                path,
                mapping,
                flush_size,
                flush_interval,
                dedup,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

type PartitionKey = (Arc<str>, i32);

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
    /// The last position seen per partition (for ordinals), written or not.
    seen: HashMap<PartitionKey, Position>,
    skipped: u64,
    tombstones: u64,
}

/// Record coordinates for error messages.
fn at(r: &SinkRecord) -> String {
    format!(
        "record topic '{}' partition {} offset {}",
        r.topic, r.partition, r.offset
    )
}

impl DuckDbSinkTask {
    async fn writer(&mut self) -> anyhow::Result<Arc<Mutex<Writer>>> {
        if let Some(w) = &self.writer {
            return Ok(Arc::clone(w));
        }
        let path = self.settings.path.clone();
        let connector = self.ctx.connector.clone();
        let (writer, positions) = tokio::task::spawn_blocking(move || {
            let w = Writer::open(&path, &connector)?;
            let p = w.positions()?;
            anyhow::Ok((w, p))
        })
        .await
        .context("DuckDB writer thread")??;
        for (topic, partition, pos) in positions {
            self.committed
                .insert((Arc::from(topic.as_str()), partition), pos);
        }
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
                let ordinal = match self.seen.get(&key) {
                    Some(Position::Source(c, l, p, o)) if (*c, *l, *p) == (commit, lsn, phase) => {
                        o + 1
                    }
                    _ => 0,
                };
                Some(Position::Source(commit, lsn, phase, ordinal))
            }
        })
    }

    fn add(&mut self, r: &SinkRecord) -> anyhow::Result<()> {
        let (schema, value) = (r.value_schema.as_ref(), r.value.as_ref());
        if value.is_none() {
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
        if let Some(pos) = &position {
            self.seen.insert(pkey.clone(), pos.clone());
            if let Some(done) = self.committed.get(&pkey) {
                if pos.le(done) {
                    self.skipped += 1;
                    return Ok(());
                }
            }
        }
        let target = self.settings.mapping.target(&r.topic);
        let mut key_columns = Vec::new();
        if target.mode == Mode::Upsert {
            let (Some(kschema), Some(Value::Struct(kfields))) = (&r.key_schema, &r.key) else {
                bail!(
                    "{}: upsert mode needs a struct key with a schema (table '{}'); use mode 'append' for keyless topics",
                    at(r),
                    target.table
                );
            };
            for (f, v) in kschema.fields.iter().zip(kfields) {
                let text = types::value_text(&f.schema, v)
                    .with_context(|| format!("{}: key field '{}'", at(r), f.name))?;
                if text.is_none() {
                    bail!("{}: key field '{}' is null", at(r), f.name);
                }
                key_columns.push(Column {
                    name: f.name.clone(),
                    ty: types::duck_type(&f.schema),
                    text,
                });
            }
        }
        let mut columns = Vec::new();
        if let Some((rschema, rvalue)) = event.row {
            let fields = rvalue.as_struct().unwrap_or_default();
            for (f, v) in rschema.fields.iter().zip(fields) {
                if event.unwrapped && META_FIELDS.contains(&f.name.as_str()) {
                    continue;
                }
                let text = types::value_text(&f.schema, v)
                    .with_context(|| format!("{}: field '{}'", at(r), f.name))?;
                columns.push(Column {
                    name: f.name.clone(),
                    ty: types::duck_type(&f.schema),
                    text,
                });
            }
        }
        if target.mode == Mode::Append {
            let m = &event.meta;
            let meta_columns = [
                ("__op", "VARCHAR", m.op.clone()),
                ("__lsn", "BIGINT", m.lsn.map(|l| l.to_string())),
                (
                    "__source_ts_ms",
                    "BIGINT",
                    m.source_ts_ms.map(|t| t.to_string()),
                ),
                ("__deleted", "BOOLEAN", Some(m.deleted.to_string())),
            ];
            for (name, ty, text) in meta_columns {
                columns.retain(|c| c.name != name);
                columns.push(Column {
                    name: name.into(),
                    ty: ty.into(),
                    text,
                });
            }
        }
        let kind = match (target.mode, event.meta.deleted) {
            (Mode::Append, _) => RowKind::Append,
            (Mode::Upsert, true) => RowKind::Delete,
            (Mode::Upsert, false) => RowKind::Upsert,
        };
        self.batch.push(
            &target.table,
            target.mode,
            Row {
                kind,
                key: key_columns,
                columns,
            },
        );
        if let Some(pos) = position {
            self.batch.positions.insert(pkey, pos);
        }
        self.buffered += 1;
        self.oldest.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn write(&mut self) -> anyhow::Result<()> {
        let writer = self.writer().await?;
        if self.skipped > 0 {
            tracing::info!(
                connector = %self.ctx.connector,
                skipped = self.skipped,
                "DuckDB sink: records at or below the stored positions were already written; not written again"
            );
            self.skipped = 0;
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
        let written: Vec<(PartitionKey, Position)> = batch
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.buffered = 0;
        self.oldest = None;
        tokio::task::spawn_blocking(move || {
            let mut w = writer
                .lock()
                .map_err(|_| anyhow!("DuckDB writer poisoned by an earlier failure"))?;
            w.write(batch)
        })
        .await
        .context("DuckDB writer thread")??;
        self.committed.extend(written);
        Ok(())
    }
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
}

struct Event<'a> {
    row: Option<(&'a Schema, &'a Value)>,
    meta: Meta,
    unwrapped: bool,
}

fn field<'a>(schema: &'a Schema, value: &'a Value, name: &str) -> Option<(&'a Schema, &'a Value)> {
    let (i, f) = schema.field(name)?;
    let v = value.as_struct()?.get(i)?;
    Some((&f.schema, v))
}

fn read_event<'a>(schema: &'a Schema, value: &'a Value) -> anyhow::Result<Event<'a>> {
    if schema.ty != SchemaType::Struct {
        bail!("the value is not a struct (schema type {:?})", schema.ty);
    }
    let is_envelope = schema.field("op").is_some()
        && schema.field("source").is_some()
        && (schema.field("after").is_some() || schema.field("before").is_some());
    if !is_envelope {
        let mut meta = Meta::default();
        if let Some((_, v)) = field(schema, value, "__op") {
            meta.op = v.as_str().map(str::to_owned);
        }
        if let Some((_, v)) = field(schema, value, "__lsn") {
            meta.lsn = v.as_i64();
            meta.source_position = meta.lsn.map(|l| (l, l));
        }
        if let Some((_, v)) = field(schema, value, "__source_ts_ms") {
            meta.source_ts_ms = v.as_i64();
        }
        meta.deleted = match field(schema, value, "__deleted") {
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
    let op = field(schema, value, "op")
        .and_then(|(_, v)| v.as_str())
        .ok_or_else(|| anyhow!("Debezium envelope without an 'op' string"))?
        .to_owned();
    let mut meta = Meta {
        deleted: op == "d",
        ..Meta::default()
    };
    if let Some((ss, sv)) = field(schema, value, "source") {
        meta.lsn = field(ss, sv, "lsn").and_then(|(_, v)| v.as_i64());
        meta.source_ts_ms = field(ss, sv, "ts_ms").and_then(|(_, v)| v.as_i64());
        let sequence = field(ss, sv, "sequence")
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
        "c" | "u" | "r" => field(schema, value, "after"),
        "d" => field(schema, value, "before"),
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
            if self.buffered >= self.settings.flush_size {
                self.write().await?;
            }
        }
        if self
            .oldest
            .is_some_and(|t| t.elapsed() >= self.settings.flush_interval)
        {
            self.write().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write().await
    }
}
