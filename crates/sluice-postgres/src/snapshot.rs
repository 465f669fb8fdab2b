//! The initial snapshot: every captured table read under the slot's exported
//! snapshot, so it shows exactly the data at the slot's consistent point and
//! streaming continues with no gap and no duplicate.
//!
//! A table is split into ranges of heap blocks (`ctid` ranges, a TID range
//! scan on PostgreSQL 14+), read in parallel by several sessions that all
//! import the same snapshot. Each reader decodes its rows into events and
//! hands them over in bounded batches, so memory stays bounded whatever the
//! table size. The coordinator marks `source.snapshot` (first, last, ...) as
//! Debezium does and attaches snapshot offsets.

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use sluice_core::connector::RecordSender;
use sluice_core::debezium::Op;
use sluice_core::{SourceRecord, Value};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::config::PostgresConfig;
use crate::copy::CopyRow;
use crate::events::{now_micros, EventFactory, Position};
use crate::replication::quote_literal;
use crate::table::TableSchema;

/// What the snapshot reads.
pub struct SnapshotJob {
    /// Tables in the order they are snapshotted.
    pub tables: Vec<Arc<TableSchema>>,
    /// The exported snapshot to import.
    pub snapshot_name: String,
    /// The slot's consistent point.
    pub lsn: u64,
    /// Server version number.
    pub server_version: u32,
    /// A blocking snapshot taken while streaming: every batch carries this
    /// streaming offset instead of snapshot offsets (a restart resumes
    /// streaming where it paused), and `source.sequence` shows this last
    /// commit.
    pub streaming: Option<(Arc<sluice_core::SourceOffset>, Option<u64>)>,
}

/// The offset key of the tables snapshots read without a row whose first
/// change since has not been sent yet.
pub const EMPTY_OFFSET_KEY: &str = "sluice_snapshot_empty";

/// Tables a snapshot read without a row, each until its first change since
/// carries [`SNAPSHOT_EMPTY_HEADER`](sluice_core::record::SNAPSHOT_EMPTY_HEADER)
/// (kept in the offsets until then).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmptyTables {
    /// (`schema.table`, the snapshot's LSN).
    pub tables: Vec<(String, u64)>,
}

impl EmptyTables {
    /// The tables stored in an offset, if any.
    pub fn from_offset(o: &serde_json::Map<String, serde_json::Value>) -> Option<EmptyTables> {
        let v = o.get(EMPTY_OFFSET_KEY)?;
        match serde_json::from_value(v.clone()) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("ignoring unreadable {EMPTY_OFFSET_KEY} in the offsets ({e}): {v}");
                None
            }
        }
    }

    /// Adds a snapshot's empty tables; an older snapshot's entry for one
    /// of them is replaced.
    pub fn add(&mut self, tables: &[String], lsn: u64) {
        self.tables.retain(|(t, _)| !tables.contains(t));
        self.tables.extend(tables.iter().map(|t| (t.clone(), lsn)));
    }

    /// Takes `table`'s entry: the snapshot's LSN.
    pub fn take(&mut self, table: &str) -> Option<u64> {
        let i = self.tables.iter().position(|(t, _)| t == table)?;
        Some(self.tables.remove(i).1)
    }

    /// Whether no table waits.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// `off` with these tables, when any wait.
    pub fn into_offset(
        &self,
        off: Arc<sluice_core::SourceOffset>,
    ) -> Arc<sluice_core::SourceOffset> {
        if self.is_empty() {
            return off;
        }
        let mut off = Arc::unwrap_or_clone(off);
        if let Ok(v) = serde_json::to_value(self) {
            off.offset.insert(EMPTY_OFFSET_KEY.into(), v);
        }
        Arc::new(off)
    }
}

/// Totals of a finished snapshot.
#[derive(Debug, Default, Clone)]
pub struct SnapshotStats {
    /// Rows read.
    pub rows: u64,
    /// Tables read.
    pub tables: usize,
    /// Tables read without a row (`schema.table`).
    pub empty: Vec<String>,
}

#[derive(Debug, Clone)]
struct Chunk {
    /// Block range [from, to); `to` None = to the end.
    from: u64,
    to: Option<u64>,
}

async fn open_reader(cfg: &PostgresConfig, snapshot: &str) -> Result<tokio_postgres::Client> {
    let c = cfg.conn.connect().await?;
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {};",
        quote_literal(snapshot)
    ))
    .await
    .context("importing the exported snapshot (did the replication connection close?)")?;
    Ok(c)
}

/// Index of `source` in the envelope and of `snapshot` in the source block.
fn snapshot_field(table: &TableSchema) -> Option<(usize, usize)> {
    let (si, sf) = table.envelope.field("source")?;
    let (ni, _) = sf.schema.field("snapshot")?;
    Some((si, ni))
}

fn mark(rec: &mut SourceRecord, idx: Option<(usize, usize)>, what: &str) {
    let Some((si, ni)) = idx else { return };
    if let Some(Value::Struct(env)) = rec.value.as_mut() {
        if let Some(Value::Struct(src)) = env.get_mut(si) {
            if let Some(slot) = src.get_mut(ni) {
                *slot = Value::String(what.to_string());
            }
        }
    }
}

/// Runs the snapshot and sends every row as an `r` event.
pub async fn run(
    cfg: &PostgresConfig,
    job: SnapshotJob,
    events: &EventFactory,
    sender: &Arc<dyn RecordSender>,
    shutdown: &CancellationToken,
) -> Result<SnapshotStats> {
    let threads = cfg.snapshot_threads.max(1);
    let mut readers = Vec::with_capacity(threads);
    for _ in 0..threads {
        readers.push(open_reader(cfg, &job.snapshot_name).await?);
    }
    let first = &readers[0];
    let tx_row = first
        .query_one(
            "SELECT txid_snapshot_xmax(txid_current_snapshot())::int8",
            &[],
        )
        .await
        .context("reading the snapshot's transaction id")?;
    let tx_id: i64 = tx_row.get(0);
    // Plan chunks per table by its size in blocks.
    let tid_range_scan = job.server_version >= 140000;
    let mut plans: Vec<Vec<Chunk>> = Vec::with_capacity(job.tables.len());
    for t in job.tables.iter() {
        let row = first
            .query_one(
                "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int8)::int8",
                &[&t.oid],
            )
            .await
            .with_context(|| format!("sizing table {}", t.id))?;
        let blocks: i64 = row.get(0);
        let blocks = blocks.max(0) as u64;
        let mut chunks = Vec::new();
        if !tid_range_scan || threads == 1 || blocks < cfg.snapshot_chunk_blocks * 2 {
            chunks.push(Chunk { from: 0, to: None });
        } else {
            let per = (blocks / (threads as u64 * 4)).max(cfg.snapshot_chunk_blocks);
            let mut from = 0;
            while from < blocks {
                let to = from + per;
                chunks.push(Chunk {
                    from,
                    to: (to < blocks).then_some(to),
                });
                from = to;
            }
        }
        plans.push(chunks);
    }
    let readers: Vec<Arc<tokio_postgres::Client>> = readers.into_iter().map(Arc::new).collect();
    let mut stats = SnapshotStats::default();
    // One record is always held back: the last record of a table is only
    // known when its readers finish, and the record that completes the
    // snapshot (offset `last_snapshot_record`) only at the very end.
    let mut held: Option<SourceRecord> = None;
    // Tables read without a row: the final record names their topics.
    let mut empty_topics: Vec<String> = Vec::new();
    let lsn = job.lsn;
    let table_count = job.tables.len();
    let streaming = job.streaming.clone();
    let last_commit = streaming.as_ref().and_then(|(_, c)| *c);
    let offset = |last: bool| match &streaming {
        Some((o, _)) => Arc::clone(o),
        None => events.snapshot_offset(lsn, tx_id, now_micros(), last),
    };
    for (ti, chunks) in plans.into_iter().enumerate() {
        let table = job.tables[ti].clone();
        let idx = snapshot_field(&table);
        let (first_table, last_table) = (ti == 0, ti + 1 == table_count);
        tracing::info!("snapshot of {}: {} chunk(s)", table.id, chunks.len());
        let queue = Arc::new(Mutex::new(chunks.into_iter().collect::<VecDeque<_>>()));
        // One batch in flight per reader, plus the one each reader fills: memory
        // is bounded by (2 x readers + 1) x max.batch.size records.
        let (tx, mut rx) = mpsc::channel::<Result<Vec<SourceRecord>>>(threads);
        let mut workers = Vec::new();
        for reader in &readers {
            let reader = reader.clone();
            let queue = queue.clone();
            let tx = tx.clone();
            let table = table.clone();
            let events = events.clone();
            // Hand-over batches follow max.batch.size, as Debezium's queue does.
            let fetch = cfg.max_batch_size.min(cfg.snapshot_fetch_size);
            let shutdown = shutdown.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().await.pop_front();
                    let Some(chunk) = next else { break };
                    if shutdown.is_cancelled() {
                        break;
                    }
                    if let Err(e) = read_chunk(
                        &reader,
                        &table,
                        &chunk,
                        &events,
                        (lsn, last_commit),
                        tx_id,
                        fetch,
                        &tx,
                    )
                    .await
                    {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }));
        }
        drop(tx);
        let mut table_rows = 0u64;
        let mut in_table: Option<SourceRecord> = None;
        while let Some(batch) = rx.recv().await {
            let batch =
                batch.with_context(|| format!("reading table {} for the snapshot", table.id))?;
            let mut out = Vec::with_capacity(batch.len() + 1);
            if let Some(h) = held.take() {
                out.push(h);
            }
            for rec in batch {
                if let Some(mut prev) = in_table.replace(rec) {
                    table_rows += 1;
                    mark(
                        &mut prev,
                        idx,
                        marker(first_table, last_table, table_rows == 1, false),
                    );
                    out.push(prev);
                }
            }
            if let Some(last) = out.last_mut() {
                last.offset = Some(offset(false));
            }
            if !out.is_empty() {
                sender.send(out).await?;
            }
            if shutdown.is_cancelled() {
                anyhow::bail!("snapshot interrupted by shutdown");
            }
        }
        for w in workers {
            w.await.context("snapshot reader task failed")?;
        }
        if shutdown.is_cancelled() {
            anyhow::bail!("snapshot interrupted by shutdown");
        }
        if let Some(mut last) = in_table.take() {
            table_rows += 1;
            mark(
                &mut last,
                idx,
                marker(first_table, last_table, table_rows == 1, true),
            );
            if let Some(h) = held.take() {
                let mut h = h;
                h.offset = Some(offset(false));
                sender.send(vec![h]).await?;
            }
            held = Some(last);
        }
        tracing::info!("snapshot of {}: {table_rows} rows", table.id);
        if table_rows == 0 {
            empty_topics.push(table.topic.to_string());
            stats.empty.push(table.id.to_string());
        }
        stats.rows += table_rows;
        stats.tables += 1;
    }
    // The empty tables' first changes say so too: the final record may be
    // none, or on a topic a sink does not read.
    let mut empty = EmptyTables::default();
    empty.add(&stats.empty, lsn);
    let offset = |last: bool| empty.into_offset(offset(last));
    if let Some(mut h) = held.take() {
        // As Debezium: the final record is always "last", even when it comes
        // from a table before an empty last table.
        let idx = job
            .tables
            .iter()
            .find(|t| t.topic == h.topic)
            .and_then(|t| snapshot_field(t));
        mark(&mut h, idx, "last");
        if !empty_topics.is_empty() {
            h.headers.push(sluice_core::record::Header {
                key: sluice_core::record::SNAPSHOT_EMPTY_TOPICS_HEADER.to_string(),
                value: Some(empty_topics.join(",").into_bytes()),
            });
        }
        h.offset = Some(offset(true));
        sender.send(vec![h]).await?;
    } else {
        // Nothing to read: the completion still needs an offset, or a
        // restart would take the snapshot again.
        let done = offset(true);
        sender.send(vec![SourceRecord::offset_only(done)]).await?;
    }
    for r in readers {
        let _ = r.batch_execute("COMMIT").await;
    }
    Ok(stats)
}

/// Debezium's `source.snapshot` marker for a record, from whether its table
/// is the first or last of the snapshot and the record the first or last of
/// its table.
pub fn marker(
    first_table: bool,
    last_table: bool,
    first_in_table: bool,
    last_in_table: bool,
) -> &'static str {
    if last_in_table && last_table {
        "last"
    } else if first_in_table && first_table {
        "first"
    } else if last_in_table {
        "last_in_data_collection"
    } else if first_in_table {
        "first_in_data_collection"
    } else {
        "true"
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_chunk(
    client: &tokio_postgres::Client,
    table: &TableSchema,
    chunk: &Chunk,
    events: &EventFactory,
    (lsn, last_commit): (u64, Option<u64>),
    tx_id: i64,
    fetch: usize,
    tx: &mpsc::Sender<Result<Vec<SourceRecord>>>,
) -> Result<()> {
    let cols = table
        .columns
        .iter()
        .map(|c| crate::replication::quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    // ONLY: a table that others inherit from is read without their rows
    // (they are tables of their own); a partitioned table has no rows of its
    // own, so it is read with its partitions.
    let only = if table.partitioned { "" } else { "ONLY " };
    let mut sql = format!("COPY (SELECT {cols} FROM {only}{}", table.id.quoted());
    if chunk.from > 0 || chunk.to.is_some() {
        sql.push_str(&format!(" WHERE ctid >= '({},0)'::tid", chunk.from));
        if let Some(to) = chunk.to {
            sql.push_str(&format!(" AND ctid < '({to},0)'::tid"));
        }
    }
    sql.push_str(") TO STDOUT");
    let stream = client
        .copy_out(sql.as_str())
        .await
        .with_context(|| format!("starting {sql}"))?;
    futures::pin_mut!(stream);
    let mut row = CopyRow::default();
    let mut batch = Vec::with_capacity(fetch.min(16384) + 1);
    let mut carry: Vec<u8> = Vec::new();
    while let Some(data) = stream.next().await {
        let data = data.with_context(|| format!("reading {}", table.id))?;
        let mut buf: &[u8] = &data;
        if !carry.is_empty() {
            carry.extend_from_slice(buf);
            buf = &[];
        }
        let owned;
        let input: &[u8] = if carry.is_empty() {
            buf
        } else {
            owned = std::mem::take(&mut carry);
            &owned[..]
        };
        let mut rest = input;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            row.parse(line)
                .with_context(|| format!("parsing a COPY row of {}", table.id))?;
            let cells: Vec<_> = row.cells().collect();
            let after = table.row_value(cells.iter().copied())?;
            let key = table.key_value(&cells)?;
            let pos = Position {
                ts_us: now_micros(),
                tx_id: Some(tx_id),
                lsn: Some(lsn),
                last_commit,
                snapshot: "true",
                origin: None,
            };
            events.change(
                &mut batch,
                table,
                Op::Read,
                key,
                None,
                Some(after),
                &pos,
                None,
                Vec::new(),
            );
            if batch.len() >= fetch {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(fetch.min(16384) + 1));
                if tx.send(Ok(full)).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !rest.is_empty() {
            carry = rest.to_vec();
        }
    }
    if !carry.is_empty() {
        anyhow::bail!("COPY output of {} ended in the middle of a row", table.id);
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tables_wait_in_the_offsets_until_their_first_change_takes_them() {
        let mut e = EmptyTables::default();
        let base = Arc::new(sluice_core::SourceOffset {
            partition: serde_json::Map::new(),
            offset: serde_json::Map::new(),
        });
        assert!(e.into_offset(Arc::clone(&base)).offset.is_empty());
        e.add(&["public.a".into(), "public.b".into()], 100);
        // A later snapshot that finds one of them empty again replaces it.
        e.add(&["public.b".into()], 200);
        let off = e.into_offset(base);
        let back = EmptyTables::from_offset(&off.offset).expect("stored");
        assert_eq!(back, e);
        assert_eq!(e.take("public.b"), Some(200));
        assert_eq!(e.take("public.b"), None, "taken once");
        assert_eq!(e.take("public.a"), Some(100));
        assert!(e.is_empty());
        let mut bad = serde_json::Map::new();
        bad.insert(EMPTY_OFFSET_KEY.into(), serde_json::json!("nonsense"));
        assert_eq!(EmptyTables::from_offset(&bad), None);
    }
}
