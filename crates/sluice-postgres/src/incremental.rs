//! Incremental snapshots, Debezium's (after Netflix's DBLog): a table is
//! read in chunks of `incremental.snapshot.chunk.size` rows in key order
//! while streaming goes on, each chunk between a low and a high watermark
//! written to the WAL. Changes streamed between the two watermarks win over
//! the chunk's rows of the same key (the chunk may or may not have seen
//! them); the rest of the chunk is emitted as `op: r` events with
//! `source.snapshot: "incremental"` when the high watermark arrives.
//!
//! The watermarks are transactional logical decoding messages (prefix
//! [`WATERMARK_PREFIX`]) rather than rows of the signal table: they arrive
//! in commit order like rows would, need no table, and are never emitted.
//!
//! With `read.only=true` nothing is written: the chunk is read in a
//! repeatable-read transaction whose snapshot says which transactions it
//! saw, and the window spans from the read to the WAL position taken after
//! it. Streamed changes of transactions the read did not see win; every
//! transaction it saw committed before that position, so once the stream
//! passes it the chunk's rows follow all the changes they include.
//! Progress (tables left, the last key emitted, the table's largest key) is
//! kept in the source offsets, so a restarted task resumes with the chunk
//! after the last one emitted.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sluice_core::signal::Signal;
use sluice_core::Value;
use sluice_pgtypes::TypeRegistry;

use crate::catalog::{self, TableId};
use crate::config::PostgresConfig;
use crate::copy::CopyRow;
use crate::replication::{quote_ident, quote_literal};
use crate::table::{Cell, TableSchema};

/// Prefix of the watermark messages (never emitted as events).
pub const WATERMARK_PREFIX: &str = "__sluice.incremental.snapshot";

/// The offset key holding an incremental snapshot's progress.
pub const OFFSET_KEY: &str = "sluice_incremental_snapshot";

/// A table an incremental snapshot reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `schema.table`.
    pub table: String,
    /// `additional-conditions`' filter for it (SQL, ANDed to the chunk query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `surrogate-key`: the column chunks are ordered by instead of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surrogate_key: Option<String>,
    /// The stream position at which the table's snapshot was asked for,
    /// which names it for sinks that reconcile the table with it; None
    /// when it reads part of the table (`additional-conditions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// What is kept in the offsets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The signal that started it.
    pub id: String,
    /// Tables still to read; the first is being read.
    pub tables: VecDeque<Target>,
    /// Chunk-key values (text) of the last row emitted of the first table.
    #[serde(default)]
    pub last_key: Option<Vec<String>>,
    /// The first table's largest chunk key when its reading began: rows
    /// inserted after that are streamed, not read.
    #[serde(default)]
    pub max_key: Option<Vec<String>>,
    /// `pause-snapshot` was signalled.
    #[serde(default)]
    pub paused: bool,
}

impl Progress {
    /// Passes on to the next table.
    fn next_table(&mut self) -> Option<Target> {
        self.last_key = None;
        self.max_key = None;
        self.tables.pop_front()
    }

    /// The progress stored in an offset, if any.
    pub fn from_offset(o: &serde_json::Map<String, Json>) -> Option<Progress> {
        let v = o.get(OFFSET_KEY)?;
        match serde_json::from_value(v.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(
                    "ignoring unreadable incremental snapshot progress in the offsets ({e}): {v}"
                );
                None
            }
        }
    }
}

/// How a window is bounded.
#[derive(Debug, Clone)]
enum Bounds {
    /// By watermark messages.
    Watermarks,
    /// By the read's snapshot and the WAL position after it (read-only).
    Snapshot(ReadSnapshot),
}

/// A transaction snapshot (`txid_current_snapshot()`) and the WAL position
/// after the read made under it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    /// The window closes once the stream reaches this LSN.
    close_at: u64,
}

impl ReadSnapshot {
    /// Parses `xmin:xmax:xip,...` as PostgreSQL prints a txid_snapshot.
    fn parse(text: &str, close_at: u64) -> Result<ReadSnapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let num = |s: Option<&str>| -> Result<u64> {
            s.and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| anyhow!("unreadable transaction snapshot '{text}'"))
        };
        let xmin = num(parts.next())?;
        let xmax = num(parts.next())?;
        let xip = match parts.next() {
            Some(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<std::result::Result<Vec<u64>, _>>()
                .map_err(|_| anyhow!("unreadable transaction snapshot '{text}'"))?,
            _ => Vec::new(),
        };
        Ok(ReadSnapshot {
            xmin,
            xmax,
            xip,
            close_at,
        })
    }

    /// Whether the committed transaction `xid` (32 bits, as pgoutput
    /// sends it) was visible to the read.
    fn saw(&self, xid: u32) -> bool {
        // Widen with the snapshot's epoch (a transaction streamed now is
        // within 2^31 of the snapshot's xmax).
        let base = self.xmax & !0xffff_ffff;
        let mut x = base | u64::from(xid);
        if x > self.xmax + (1 << 31) {
            x = x.saturating_sub(1 << 32);
        } else if x + (1 << 31) < self.xmax {
            x += 1 << 32;
        }
        x < self.xmin || (x < self.xmax && !self.xip.contains(&x))
    }
}

/// A chunk read between its watermarks.
struct Window {
    id: String,
    bounds: Bounds,
    /// The low watermark has been seen in the stream.
    open: bool,
    schema: Arc<TableSchema>,
    /// The chunk's rows in key order; None once a streamed change of the
    /// same key replaced it.
    rows: Vec<Option<(Option<Value>, Value)>>,
    /// Row index by key (its debug text).
    index: HashMap<String, usize>,
    /// Chunk key of the last row read.
    last_key: Option<Vec<String>>,
    /// Fewer rows than a chunk: the table ends with this chunk.
    last_chunk: bool,
}

/// What a watermark message meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Not this snapshot's current window (an old one, replayed).
    Other,
    /// The low watermark of the current chunk.
    Open,
    /// The high watermark: the chunk is to be emitted now.
    Close,
}

/// A chunk ready to be emitted.
pub struct Emit {
    /// Its table.
    pub schema: Arc<TableSchema>,
    /// Key and row of each row no streamed change replaced.
    pub rows: Vec<(Option<Value>, Value)>,
    /// The table's snapshot ends with this chunk: the generation its last
    /// row's `end` mark names.
    pub end: Option<u64>,
}

/// The running incremental snapshot of a stream.
#[derive(Default)]
pub struct Incremental {
    /// None while no incremental snapshot runs.
    pub progress: Option<Progress>,
    window: Option<Window>,
    /// Marks for sinks (see [`INCREMENTAL_SNAPSHOT_HEADER`]) waiting for
    /// their table's next record: (`schema.table`, mark).
    marks: Vec<(String, String)>,
    /// The last generation given, so that two snapshots asked for at one
    /// stream position are told apart.
    last_generation: u64,
}

pub use sluice_core::record::INCREMENTAL_SNAPSHOT_HEADER;

fn key_text(key: &Option<Value>) -> Option<String> {
    key.as_ref().map(|k| format!("{k:?}"))
}

impl Incremental {
    /// Resumes the progress stored in the offsets. Each table's `begin`
    /// mark is given again: the records that carried it may not have been
    /// delivered, and a sink that has the snapshot open already goes on.
    pub fn resume(progress: Option<Progress>) -> Self {
        let mut inc = Incremental {
            progress,
            ..Incremental::default()
        };
        let begun: Vec<(String, u64)> = inc
            .progress
            .iter()
            .flat_map(|p| p.tables.iter())
            .filter_map(|t| Some((t.table.clone(), t.generation?)))
            .collect();
        for (table, g) in begun {
            inc.last_generation = inc.last_generation.max(g);
            inc.mark(&table, "begin", g);
        }
        inc
    }

    fn mark(&mut self, table: &str, what: &str, generation: u64) {
        self.marks
            .push((table.to_owned(), format!("{what}:{generation}")));
    }

    /// A table's snapshot is over without an `end` mark (stopped, or the
    /// table could not be read).
    fn stopped(&mut self, t: &Target) {
        if let Some(g) = t.generation {
            self.mark(&t.table, "stop", g);
        }
    }

    /// The marks waiting for `table`'s next record, as the value of the
    /// [`INCREMENTAL_SNAPSHOT_HEADER`] header, or None.
    pub fn take_marks(&mut self, table: &TableId) -> Option<String> {
        if self.marks.is_empty() {
            return None;
        }
        let name = table.to_string();
        let mut taken = Vec::new();
        self.marks.retain(|(t, m)| {
            if *t == name {
                taken.push(m.clone());
                false
            } else {
                true
            }
        });
        (!taken.is_empty()).then(|| taken.join(","))
    }

    /// Gives `table`'s `end` mark to its next record (its last chunk had
    /// no row left to carry it).
    pub fn end_later(&mut self, table: &TableId, generation: u64) {
        self.mark(&table.to_string(), "end", generation);
    }

    /// Whether a chunk should be read now (a snapshot runs, is not paused,
    /// and no chunk is between its watermarks).
    pub fn wants_chunk(&self) -> bool {
        self.window.is_none() && self.progress.as_ref().is_some_and(|p| !p.paused)
    }

    /// A streamed change of `table` with `key` in transaction `xid`: it
    /// replaces the open chunk's row of the same key (in read-only mode,
    /// when the read did not see its transaction). `all`: a truncate,
    /// replacing every row.
    pub fn streamed(&mut self, table: &TableId, key: &Option<Value>, all: bool, xid: u32) {
        let Some(w) = self.window.as_mut() else {
            return;
        };
        if !w.open || &w.schema.id != table {
            return;
        }
        if let Bounds::Snapshot(s) = &w.bounds {
            if s.saw(xid) {
                return;
            }
        }
        if all {
            w.rows.iter_mut().for_each(|r| *r = None);
            return;
        }
        if let Some(i) = key_text(key).and_then(|k| w.index.get(&k).copied()) {
            w.rows[i] = None;
        }
    }

    /// Whether a read-only window closes at stream position `lsn`.
    pub fn closes_at(&self, lsn: u64) -> bool {
        matches!(&self.window, Some(Window { bounds: Bounds::Snapshot(s), .. }) if lsn >= s.close_at)
    }

    /// A watermark message's meaning.
    pub fn watermark(&mut self, content: &[u8]) -> Mark {
        let text = String::from_utf8_lossy(content);
        let Some(w) = self.window.as_mut() else {
            return Mark::Other;
        };
        match text.split_once(':') {
            Some(("open", id)) if id == w.id => {
                w.open = true;
                Mark::Open
            }
            Some(("close", id)) if id == w.id && w.open => Mark::Close,
            _ => Mark::Other,
        }
    }

    /// Takes the closed window's rows and moves the progress past them.
    pub fn close(&mut self) -> Option<Emit> {
        let w = self.window.take()?;
        let p = self.progress.as_mut()?;
        let mut end = None;
        if w.last_chunk {
            tracing::info!("incremental snapshot {}: table {} done", p.id, w.schema.id);
            end = p.next_table().and_then(|t| t.generation);
        } else {
            p.last_key = w.last_key;
        }
        let rows = w.rows.into_iter().flatten().collect();
        if p.tables.is_empty() {
            tracing::info!("incremental snapshot {} completed", p.id);
            self.progress = None;
        }
        Some(Emit {
            schema: w.schema,
            rows,
            end,
        })
    }

    /// Reads the next chunk between two watermarks on `control`. Tables
    /// that cannot be read (gone, no key) and empty ones are passed.
    pub async fn read_chunk(
        &mut self,
        cfg: &PostgresConfig,
        control: &tokio_postgres::Client,
        registry: &mut TypeRegistry,
    ) -> Result<()> {
        loop {
            if !self.wants_chunk() {
                return Ok(());
            }
            let Some(p) = self.progress.as_mut() else {
                return Ok(());
            };
            let Some(target) = p.tables.front().cloned() else {
                self.progress = None;
                return Ok(());
            };
            let Some(schema) = load_schema(cfg, control, registry, &target.table).await? else {
                p.next_table();
                self.stopped(&target);
                continue;
            };
            let key_cols = match chunk_key(&schema, &target) {
                Ok(k) => k,
                Err(why) => {
                    tracing::warn!(
                        "incremental snapshot {}: table {} skipped: {why}",
                        p.id,
                        target.table
                    );
                    p.next_table();
                    self.stopped(&target);
                    continue;
                }
            };
            if p.max_key.is_none() {
                p.max_key = max_key(control, &schema, &target, &key_cols).await?;
                if p.max_key.is_none() {
                    tracing::info!(
                        "incremental snapshot {}: table {} is empty",
                        p.id,
                        target.table
                    );
                    p.next_table();
                    // Read whole, without a row: what a sink still has
                    // of it and no change touched since is gone.
                    if let Some(g) = target.generation {
                        self.mark(&target.table, "end", g);
                    }
                    continue;
                }
                tracing::info!("incremental snapshot {}: reading {}", p.id, target.table);
            }
            let id = sluice_core::signal::new_id("chunk");
            if cfg.read_only {
                control
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .context("incremental snapshot: starting the chunk's read")?;
            } else {
                emit_watermark(control, "open", &id).await?;
            }
            // The snapshot is taken by the transaction's first query.
            let snapshot = if cfg.read_only {
                let row = control
                    .query_one("SELECT txid_current_snapshot()::text", &[])
                    .await
                    .context("incremental snapshot: reading the chunk's transaction snapshot")?;
                Some(row.get::<_, String>(0))
            } else {
                None
            };
            let rows = read_rows(
                control,
                &schema,
                &target,
                &key_cols,
                p.last_key.as_deref(),
                p.max_key.as_deref().unwrap_or_default(),
                cfg.incremental_chunk_size,
            )
            .await?;
            let bounds = match snapshot {
                Some(text) => {
                    let lsn: String = control
                        .query_one("SELECT pg_current_wal_lsn()::text", &[])
                        .await
                        .context("incremental snapshot: reading the WAL position after the chunk")?
                        .get(0);
                    control
                        .batch_execute("COMMIT")
                        .await
                        .context("incremental snapshot: ending the chunk's read")?;
                    let close_at = sluice_pgoutput::parse_lsn(&lsn)
                        .map_err(|e| anyhow!("unreadable WAL position '{lsn}': {e}"))?;
                    Bounds::Snapshot(ReadSnapshot::parse(&text, close_at)?)
                }
                None => Bounds::Watermarks,
            };
            let read_only = matches!(bounds, Bounds::Snapshot(_));
            let last_chunk = rows.rows.len() < cfg.incremental_chunk_size;
            tracing::debug!(
                "incremental snapshot {}: chunk of {} after {:?}: {} rows, up to {:?}",
                p.id,
                target.table,
                p.last_key,
                rows.rows.len(),
                rows.last_key
            );
            let mut index = HashMap::with_capacity(rows.rows.len());
            for (i, (k, _)) in rows.rows.iter().enumerate() {
                if let Some(t) = key_text(k) {
                    index.insert(t, i);
                }
            }
            self.window = Some(Window {
                id: id.clone(),
                bounds,
                // A read-only window is open from the read on.
                open: read_only,
                schema,
                rows: rows.rows.into_iter().map(Some).collect(),
                index,
                last_key: rows.last_key,
                last_chunk,
            });
            if !read_only {
                emit_watermark(control, "close", &id).await?;
            }
            return Ok(());
        }
    }

    /// Acts on a signal handled at stream position `at` (between
    /// transactions). A blocking snapshot is not this type's to take: its
    /// tables are returned for the stream to read while it pauses.
    pub fn signal(
        &mut self,
        sig: &Signal,
        captured: &[TableId],
        at: u64,
    ) -> Result<Option<Vec<Target>>> {
        let data = match &sig.data {
            Json::String(s) if !s.trim().is_empty() => serde_json::from_str(s)
                .with_context(|| format!("signal {}: its data is not JSON: {s}", sig.id))?,
            Json::String(_) => Json::Null,
            other => other.clone(),
        };
        match sig.kind.as_str() {
            "log" => {
                let msg = data.get("message").and_then(Json::as_str).unwrap_or("");
                tracing::info!("signal {}: {msg}", sig.id);
            }
            "execute-snapshot" => {
                let kind = data
                    .get("type")
                    .and_then(Json::as_str)
                    .unwrap_or("incremental")
                    .to_ascii_lowercase();
                if kind != "incremental" && kind != "blocking" {
                    return Err(anyhow!(
                        "signal {}: execute-snapshot of type '{kind}': expected incremental or blocking",
                        sig.id
                    ));
                }
                let mut targets = targets(&data, captured, &sig.id)?;
                if targets.is_empty() {
                    return Err(anyhow!(
                        "signal {}: execute-snapshot names no captured table in data-collections ({}); \
                         the tables must be in table.include.list",
                        sig.id,
                        data.get("data-collections").unwrap_or(&Json::Null)
                    ));
                }
                if kind == "blocking" {
                    return Ok(Some(targets));
                }
                let names: Vec<&str> = targets.iter().map(|t| t.table.as_str()).collect();
                tracing::info!(
                    "signal {}: incremental snapshot of {}",
                    sig.id,
                    names.join(", ")
                );
                if let Some(p) = &self.progress {
                    targets.retain(|t| !p.tables.iter().any(|q| q.table == t.table));
                }
                // A table read whole is named by a generation from here on:
                // its changes count as seen by the snapshot.
                for t in targets.iter_mut().filter(|t| t.filter.is_none()) {
                    let g = at.max(self.last_generation + 1);
                    self.last_generation = g;
                    t.generation = Some(g);
                    self.marks.push((t.table.clone(), format!("begin:{g}")));
                }
                match self.progress.as_mut() {
                    Some(p) => p.tables.extend(targets),
                    None => {
                        self.progress = Some(Progress {
                            id: sig.id.clone(),
                            tables: targets.into(),
                            ..Progress::default()
                        })
                    }
                }
            }
            "stop-snapshot" => {
                let Some(p) = self.progress.as_mut() else {
                    tracing::info!("signal {}: no incremental snapshot runs", sig.id);
                    return Ok(None);
                };
                let named = data
                    .get("data-collections")
                    .map(collections)
                    .unwrap_or_default();
                if named.is_empty() {
                    tracing::info!("signal {}: incremental snapshot {} stopped", sig.id, p.id);
                    let left = std::mem::take(&mut p.tables);
                    self.progress = None;
                    self.window = None;
                    left.iter().for_each(|t| self.stopped(t));
                    return Ok(None);
                }
                let matchers = matchers(&named)?;
                let before = p.tables.len();
                let current = p.tables.front().map(|t| t.table.clone());
                let (removed, kept): (Vec<Target>, Vec<Target>) = std::mem::take(&mut p.tables)
                    .into_iter()
                    .partition(|t| matchers.iter().any(|m| m.is_match(&t.table)));
                p.tables = kept.into();
                if current.as_ref() != p.tables.front().map(|t| &t.table) {
                    p.last_key = None;
                    p.max_key = None;
                    self.window = None;
                }
                tracing::info!(
                    "signal {}: {} table(s) removed from incremental snapshot {}",
                    sig.id,
                    before - p.tables.len(),
                    p.id
                );
                if p.tables.is_empty() {
                    self.progress = None;
                }
                removed.iter().for_each(|t| self.stopped(t));
            }
            // Debezium's own watermark rows, when a Debezium connector
            // shares the signal table.
            "snapshot-window-open" | "snapshot-window-close" => {}
            "pause-snapshot" => match self.progress.as_mut() {
                Some(p) => {
                    p.paused = true;
                    tracing::info!("signal {}: incremental snapshot {} paused", sig.id, p.id);
                }
                None => tracing::info!("signal {}: no incremental snapshot to pause", sig.id),
            },
            "resume-snapshot" => match self.progress.as_mut() {
                Some(p) => {
                    p.paused = false;
                    tracing::info!("signal {}: incremental snapshot {} resumed", sig.id, p.id);
                }
                None => tracing::info!("signal {}: no incremental snapshot to resume", sig.id),
            },
            other => {
                return Err(anyhow!(
                    "signal {}: unknown type '{other}': expected execute-snapshot, stop-snapshot, \
                     pause-snapshot, resume-snapshot or log",
                    sig.id
                ))
            }
        }
        Ok(None)
    }
}

/// `data-collections` as a list of names (an array, or one string).
fn collections(v: &Json) -> Vec<String> {
    match v {
        Json::Array(a) => a
            .iter()
            .filter_map(Json::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        Json::String(s) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

fn matchers(names: &[String]) -> Result<Vec<regex::Regex>> {
    names
        .iter()
        .map(|n| {
            regex::Regex::new(&format!("^(?:{n})$"))
                .with_context(|| format!("data-collections entry '{n}' is not a valid regex"))
        })
        .collect()
}

/// The tables an execute-snapshot names, in the order captured, with their
/// conditions and surrogate key.
fn targets(data: &Json, captured: &[TableId], id: &str) -> Result<Vec<Target>> {
    let names = data
        .get("data-collections")
        .map(collections)
        .unwrap_or_default();
    let matchers = matchers(&names)?;
    let mut conditions: Vec<(regex::Regex, String)> = Vec::new();
    if let Some(Json::Array(conds)) = data.get("additional-conditions") {
        for c in conds {
            let (Some(dc), Some(filter)) = (
                c.get("data-collection").and_then(Json::as_str),
                c.get("filter").and_then(Json::as_str),
            ) else {
                return Err(anyhow!(
                    "signal {id}: each additional-conditions entry needs \"data-collection\" and \"filter\": {c}"
                ));
            };
            let re = matchers_one(dc)?;
            conditions.push((re, filter.to_string()));
        }
    }
    let surrogate = data
        .get("surrogate-key")
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    for (m, n) in matchers.iter().zip(&names) {
        if !captured.iter().any(|t| m.is_match(&t.to_string())) {
            tracing::warn!(
                "signal {id}: data-collections entry '{n}' matches no captured table (add it to table.include.list first)"
            );
        }
    }
    // In the order the signal names them, as Debezium reads them.
    let mut tables: Vec<String> = Vec::new();
    for m in &matchers {
        for t in captured.iter().map(ToString::to_string) {
            if m.is_match(&t) && !tables.contains(&t) {
                tables.push(t);
            }
        }
    }
    Ok(tables
        .into_iter()
        .map(|t| Target {
            filter: conditions
                .iter()
                .find(|(re, _)| re.is_match(&t))
                .map(|(_, f)| f.clone()),
            surrogate_key: surrogate.clone(),
            generation: None,
            table: t,
        })
        .collect())
}

fn matchers_one(n: &str) -> Result<regex::Regex> {
    // Case-insensitive, as Debezium matches these.
    regex::Regex::new(&format!("(?i)^(?:{n})$")).with_context(|| {
        format!("additional-conditions data-collection '{n}' is not a valid regex")
    })
}

/// The columns chunks are ordered by.
fn chunk_key(schema: &TableSchema, target: &Target) -> std::result::Result<Vec<String>, String> {
    if let Some(s) = &target.surrogate_key {
        if schema.key_schema.is_none() {
            return Err(
                "it has no primary key (or message.key.columns): streamed changes could not be told apart from the chunk's rows".into(),
            );
        }
        if !schema.columns.iter().any(|c| &c.name == s) {
            return Err(format!("surrogate-key column '{s}' does not exist"));
        }
        return Ok(vec![s.clone()]);
    }
    if schema.key_positions.is_empty() {
        return Err(
            "it has no primary key; set message.key.columns for it, or give a surrogate-key".into(),
        );
    }
    Ok(schema
        .key_positions
        .iter()
        .map(|&i| schema.columns[i].name.clone())
        .collect())
}

/// The schema of `schema.table` as the catalog has it now.
pub(crate) async fn load_schema(
    cfg: &PostgresConfig,
    control: &tokio_postgres::Client,
    registry: &mut TypeRegistry,
    name: &str,
) -> Result<Option<Arc<TableSchema>>> {
    let Some((schema, table)) = name.split_once('.') else {
        return Ok(None);
    };
    let id = TableId {
        schema: schema.to_string(),
        table: table.to_string(),
    };
    let Some(ct) = catalog::load_table(control, &id).await? else {
        tracing::warn!("incremental snapshot: table {id} no longer exists; passed");
        return Ok(None);
    };
    let missing = registry.missing(ct.columns.iter().map(|c| c.type_oid));
    if !missing.is_empty() {
        registry
            .load(control, &missing)
            .await
            .context("loading column types")?;
    }
    let cols = ct.rel_columns();
    Ok(Some(Arc::new(TableSchema::build(
        cfg,
        registry,
        ct.oid,
        id,
        &cols,
        Some(&ct),
    )?)))
}

fn from_clause(schema: &TableSchema) -> String {
    let only = if schema.partitioned { "" } else { "ONLY " };
    format!("{only}{}", schema.id.quoted())
}

fn row_of(cols: &[String]) -> String {
    format!(
        "({})",
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn literals(values: &[String]) -> String {
    format!(
        "({})",
        values
            .iter()
            .map(|v| quote_literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The largest chunk key of the table (under its filter), as text.
async fn max_key(
    control: &tokio_postgres::Client,
    schema: &TableSchema,
    target: &Target,
    key: &[String],
) -> Result<Option<Vec<String>>> {
    // Aliased: ORDER BY a bare name would sort by an output column of that
    // name, the text.
    let select = key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}::text AS __sluice_key_{i}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let order = key
        .iter()
        .map(|c| format!("{} DESC", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = target
        .filter
        .as_ref()
        .map(|f| format!(" WHERE ({f})"))
        .unwrap_or_default();
    let sql = format!(
        "SELECT {select} FROM {}{filter} ORDER BY {order} LIMIT 1",
        from_clause(schema)
    );
    let row = control
        .query_opt(sql.as_str(), &[])
        .await
        .with_context(|| format!("incremental snapshot: {sql}"))?;
    Ok(row.map(|r| {
        (0..key.len())
            .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
            .collect()
    }))
}

struct Rows {
    rows: Vec<(Option<Value>, Value)>,
    last_key: Option<Vec<String>>,
}

#[allow(clippy::too_many_arguments)]
async fn read_rows(
    control: &tokio_postgres::Client,
    schema: &TableSchema,
    target: &Target,
    key: &[String],
    after: Option<&[String]>,
    max: &[String],
    limit: usize,
) -> Result<Rows> {
    let cols = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut conds = Vec::new();
    if let Some(f) = &target.filter {
        conds.push(format!("({f})"));
    }
    if let Some(a) = after {
        conds.push(format!("{} > {}", row_of(key), literals(a)));
    }
    conds.push(format!("{} <= {}", row_of(key), literals(max)));
    let order = key
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "COPY (SELECT {cols} FROM {} WHERE {} ORDER BY {order} LIMIT {limit}) TO STDOUT",
        from_clause(schema),
        conds.join(" AND ")
    );
    let stream = control
        .copy_out(sql.as_str())
        .await
        .with_context(|| format!("incremental snapshot: {sql}"))?;
    futures::pin_mut!(stream);
    let mut data = Vec::new();
    while let Some(part) = stream.next().await {
        data.extend_from_slice(&part.with_context(|| format!("reading {}", schema.id))?);
    }
    let key_index: Vec<usize> = key
        .iter()
        .filter_map(|k| schema.columns.iter().position(|c| &c.name == k))
        .collect();
    let mut row = CopyRow::default();
    let mut rows = Vec::new();
    let mut last_key = None;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        row.parse(line)
            .with_context(|| format!("parsing a COPY row of {}", schema.id))?;
        let cells: Vec<Cell<'_>> = row.cells().collect();
        let after = schema.row_value(cells.iter().copied())?;
        let k = schema.key_value(&cells)?;
        last_key = Some(
            key_index
                .iter()
                .map(|&i| match cells.get(i) {
                    Some(Cell::Text(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                })
                .collect(),
        );
        rows.push((k, after));
    }
    Ok(Rows { rows, last_key })
}

async fn emit_watermark(control: &tokio_postgres::Client, what: &str, id: &str) -> Result<()> {
    control
        .execute(
            "SELECT pg_logical_emit_message(true, $1, $2)",
            &[&WATERMARK_PREFIX, &format!("{what}:{id}")],
        )
        .await
        .with_context(|| {
            format!(
                "writing the incremental snapshot's {what} watermark (pg_logical_emit_message, \
                 PostgreSQL 14+; the connector's user needs EXECUTE on it)"
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<TableId> {
        names
            .iter()
            .map(|n| {
                let (s, t) = n.split_once('.').unwrap_or(("public", n));
                TableId {
                    schema: s.into(),
                    table: t.into(),
                }
            })
            .collect()
    }

    fn sig(kind: &str, data: Json) -> Signal {
        Signal {
            id: "s1".into(),
            kind: kind.into(),
            data,
        }
    }

    #[test]
    fn execute_snapshot_takes_captured_tables_with_their_conditions() {
        let captured = ids(&["public.a", "public.b", "inv.c"]);
        let mut inc = Incremental::default();
        inc.signal(
            &sig(
                "execute-snapshot",
                Json::String(
                    r#"{"data-collections": ["public.b", "inv\\..*", "public.zz"], "type": "INCREMENTAL",
                        "additional-conditions": [{"data-collection": "public.b", "filter": "id > 5"}]}"#
                        .into(),
                ),
            ),
            &captured,
            500,
        )
        .expect("signal");
        let p = inc.progress.clone().expect("running");
        let names: Vec<_> = p.tables.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(names, ["public.b", "inv.c"]);
        assert_eq!(p.tables[0].filter.as_deref(), Some("id > 5"));
        assert_eq!(p.tables[1].filter, None);
        assert!(inc.wants_chunk());
        inc.signal(&sig("pause-snapshot", Json::Null), &captured, 500)
            .expect("pause");
        assert!(!inc.wants_chunk());
        inc.signal(&sig("resume-snapshot", Json::Null), &captured, 500)
            .expect("resume");
        assert!(inc.wants_chunk());
        inc.signal(
            &sig(
                "stop-snapshot",
                serde_json::json!({"data-collections": ["public.b"]}),
            ),
            &captured,
            500,
        )
        .expect("stop");
        let names: Vec<_> = inc
            .progress
            .as_ref()
            .map(|p| p.tables.iter().map(|t| t.table.clone()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["inv.c"]);
        inc.signal(&sig("stop-snapshot", Json::Null), &captured, 500)
            .expect("stop all");
        assert!(inc.progress.is_none());
    }

    fn table(name: &str) -> TableId {
        ids(&[name]).remove(0)
    }

    #[test]
    fn tables_read_whole_are_marked_for_sinks_where_their_snapshot_begins_and_stops() {
        let captured = ids(&["public.a", "public.b", "public.c"]);
        let mut inc = Incremental::default();
        inc.signal(
            &sig(
                "execute-snapshot",
                serde_json::json!({"data-collections": ["public.a", "public.b", "public.c"],
                    "additional-conditions": [{"data-collection": "public.c", "filter": "id > 5"}]}),
            ),
            &captured,
            500,
        )
        .expect("signal");
        // Each table read whole has a generation of its own, from the
        // stream position; a filtered one has none and no marks.
        let p = inc.progress.clone().expect("running");
        let gens: Vec<_> = p.tables.iter().map(|t| t.generation).collect();
        assert_eq!(gens, [Some(500), Some(501), None]);
        assert_eq!(
            inc.take_marks(&table("public.a")).as_deref(),
            Some("begin:500")
        );
        assert_eq!(inc.take_marks(&table("public.a")), None, "taken once");
        assert_eq!(inc.take_marks(&table("public.c")), None);
        // Asked again while running: not added twice, no new mark.
        inc.signal(
            &sig(
                "execute-snapshot",
                serde_json::json!({"data-collections": ["public.a"]}),
            ),
            &captured,
            900,
        )
        .expect("again");
        assert_eq!(inc.take_marks(&table("public.a")), None);
        // Stopped: its begin and stop ride together on its next record.
        inc.signal(
            &sig(
                "stop-snapshot",
                serde_json::json!({"data-collections": ["public.b"]}),
            ),
            &captured,
            950,
        )
        .expect("stop");
        assert_eq!(
            inc.take_marks(&table("public.b")).as_deref(),
            Some("begin:501,stop:501")
        );
        // A restart gives the begin marks again, generations kept.
        let resumed = Incremental::resume(inc.progress.clone());
        let mut resumed = resumed;
        assert_eq!(
            resumed.take_marks(&table("public.a")).as_deref(),
            Some("begin:500")
        );
        resumed.end_later(&table("public.a"), 500);
        assert_eq!(
            resumed.take_marks(&table("public.a")).as_deref(),
            Some("end:500")
        );
    }

    #[test]
    fn bad_signals_say_what_is_wrong() {
        let captured = ids(&["public.a"]);
        let mut inc = Incremental::default();
        let e = inc
            .signal(
                &sig(
                    "execute-snapshot",
                    serde_json::json!({"data-collections": ["public.x"]}),
                ),
                &captured,
                500,
            )
            .expect_err("nothing captured");
        assert!(e.to_string().contains("table.include.list"), "{e}");
        let blocking = inc
            .signal(
                &sig(
                    "execute-snapshot",
                    serde_json::json!({"data-collections": ["public.a"], "type": "BLOCKING"}),
                ),
                &captured,
                500,
            )
            .expect("blocking");
        assert_eq!(blocking.map(|t| t.len()), Some(1));
        assert!(
            inc.progress.is_none(),
            "a blocking snapshot is not incremental"
        );
        let e = inc
            .signal(
                &sig(
                    "execute-snapshot",
                    serde_json::json!({"data-collections": ["public.a"], "type": "later"}),
                ),
                &captured,
                500,
            )
            .expect_err("unknown type");
        assert!(
            e.to_string().contains("expected incremental or blocking"),
            "{e}"
        );
        let e = inc
            .signal(&sig("snapshot-now", Json::Null), &captured, 500)
            .expect_err("unknown");
        assert!(e.to_string().contains("unknown type 'snapshot-now'"), "{e}");
        let e = inc
            .signal(
                &sig("execute-snapshot", Json::String("{not json".into())),
                &captured,
                500,
            )
            .expect_err("bad data");
        assert!(e.to_string().contains("not JSON"), "{e}");
    }

    #[test]
    fn a_read_snapshot_tells_the_transactions_it_saw() {
        let s = ReadSnapshot::parse("100:110:103,107", 5).expect("parse");
        assert!(s.saw(99) && s.saw(100) && s.saw(104) && s.saw(109));
        assert!(!s.saw(103) && !s.saw(107) && !s.saw(110) && !s.saw(500));
        // Past the 32-bit wrap: epoch 1.
        let s = ReadSnapshot::parse("4294967290:4294967300:", 5).expect("parse");
        assert!(s.saw(4_294_967_295u64 as u32));
        assert!(s.saw(2)); // 2^32 + 2
        assert!(!s.saw(4)); // 2^32 + 4 = xmax
        assert!(ReadSnapshot::parse("x:1:", 0).is_err());
    }

    #[test]
    fn progress_round_trips_through_an_offset() {
        let p = Progress {
            id: "s".into(),
            tables: vec![Target {
                table: "public.a".into(),
                filter: None,
                surrogate_key: None,
                generation: Some(7),
            }]
            .into(),
            last_key: Some(vec!["10".into()]),
            max_key: Some(vec!["99".into()]),
            paused: false,
        };
        let mut o = serde_json::Map::new();
        o.insert(OFFSET_KEY.into(), serde_json::to_value(&p).expect("json"));
        assert_eq!(Progress::from_offset(&o), Some(p));
    }
}
