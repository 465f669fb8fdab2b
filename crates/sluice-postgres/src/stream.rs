//! Streaming: pgoutput messages become Debezium events, transaction by
//! transaction.
//!
//! Records are handed to the worker at each commit (and in batches of
//! `max.batch.size` inside large transactions). Each batch's last record
//! carries the offset reached; a transaction's final record carries a
//! `COMMIT` offset whose `lsn_commit` is the transaction's end LSN, the only
//! LSN ever confirmed to the slot, and only once the worker reports it
//! durable. On resume (restart or reconnect), transactions that committed
//! before the stored `lsn_commit` are skipped, and so are the already
//! delivered events of a partly delivered transaction.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use sluice_core::connector::RecordSender;
use sluice_core::debezium::{self, Format, Op};
use sluice_core::{Header, SourceRecord, Value};
use sluice_pgoutput::{Decoder, LogicalMessage, Relation, TupleData, TupleValue};
use sluice_pgtypes::TypeRegistry;

use crate::catalog::{self, TableId};
use crate::config::PostgresConfig;
use crate::events::{EventFactory, Position, Resume, TxBlock};
use crate::incremental::{self, Incremental, Mark};
use crate::table::{Cell, RelColumn, TableSchema};

/// Micros between 1970-01-01 and 2000-01-01.
const PG_EPOCH: i64 = sluice_pgoutput::PG_EPOCH_OFFSET_MICROS;

struct Txn {
    xid: u32,
    final_lsn: u64,
    ts_us: i64,
    /// Skip every event (committed before the resume point).
    skip_all: bool,
    /// Skip events at or before this LSN (partly delivered before).
    skip_until: Option<u64>,
    /// Events emitted so far (for transaction metadata).
    total_order: i64,
    per_table: Vec<(String, i64)>,
    began: bool,
    /// LSN of the last event put in `pending`.
    last_lsn: Option<u64>,
    /// LSN of the BEGIN message (pgoutput sends it at the transaction's
    /// first change); None for a streamed transaction replayed at its
    /// commit, whose first change gives it.
    begin_lsn: Option<u64>,
    /// The BEGIN transaction metadata event was emitted.
    meta_begun: bool,
    /// The transaction's replication origin (pgoutput's ORIGIN message).
    origin: Option<(Arc<str>, u64)>,
}

/// Turns decoded messages into records.
pub struct ChangeStream {
    cfg: Arc<PostgresConfig>,
    events: EventFactory,
    control: tokio_postgres::Client,
    /// Types known so far.
    pub registry: TypeRegistry,
    tables: HashMap<u32, Option<Arc<TableSchema>>>,
    txn: Option<Txn>,
    pending: Vec<SourceRecord>,
    sender: Arc<dyn RecordSender>,
    /// End LSN of the last transaction whose records were all sent.
    pub last_commit_end: u64,
    /// xid and LSN of the last sent event of the open transaction.
    pub sent_partial: Option<(u32, u64)>,
    resume: Resume,
    /// When progress without events was last recorded.
    last_marker: Option<std::time::Instant>,
    /// The last commit seen, as `source.sequence` shows it: Debezium starts
    /// with none after a snapshot and takes every transaction's end LSN,
    /// captured or not (and a non-transactional message's LSN).
    seq_last_commit: Option<u64>,
    /// The commit time of the last transaction seen (µs since the epoch), the
    /// `source` time of non-transactional messages.
    last_commit_ts: i64,
    /// Buckets of Debezium's per-transaction counts map (a Java HashMap that
    /// is cleared, never shrunk): it orders END's `data_collections`.
    tx_map_capacity: usize,
    /// The running incremental snapshot, if any.
    incremental: Incremental,
    /// Tables snapshots read without a row, until their next change.
    empty: crate::snapshot::EmptyTables,
    /// The incremental snapshot's progress from before a chunk was put in
    /// `pending`, while it waits there: a new connection replays the
    /// chunk's transaction, whose watermarks no longer open a window, so
    /// the chunk is read again from here.
    unsent_chunk: Option<Option<incremental::Progress>>,
    /// The empty tables whose marks records in `pending` took.
    unsent_empty: Vec<(String, u64)>,
    /// Signals to act on once the open transaction is handled.
    signals_due: Vec<sluice_core::signal::Signal>,
    /// The signal table's relation id, once its RELATION message came.
    signal_rel: Option<u32>,
    /// The task's shutdown, which ends a blocking snapshot too.
    shutdown: tokio_util::sync::CancellationToken,
}

/// How often progress without events (filtered transactions, idle WAL) is
/// recorded, so the slot advances without a marker per transaction.
const MARKER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn tuple_cells(t: &TupleData) -> Vec<Cell<'_>> {
    t.values
        .iter()
        .map(|v| match v {
            TupleValue::Null => Cell::Null,
            TupleValue::UnchangedToast => Cell::UnchangedToast,
            TupleValue::Text(b) | TupleValue::Binary(b) => Cell::Text(b),
        })
        .collect()
}

impl ChangeStream {
    /// A new stream state.
    pub fn new(
        cfg: Arc<PostgresConfig>,
        control: tokio_postgres::Client,
        registry: TypeRegistry,
        sender: Arc<dyn RecordSender>,
        resume: Resume,
        last_commit_end: u64,
    ) -> Self {
        ChangeStream {
            events: EventFactory::new(&cfg),
            cfg,
            control,
            registry,
            tables: HashMap::new(),
            txn: None,
            pending: Vec::new(),
            sender,
            last_commit_end,
            sent_partial: None,
            seq_last_commit: if resume.after_snapshot {
                None
            } else {
                resume.sequence_commit
            },
            resume,
            last_marker: None,
            last_commit_ts: crate::events::now_micros(),
            tx_map_capacity: debezium::java_hash_map_capacity(0),
            incremental: Incremental::default(),
            empty: crate::snapshot::EmptyTables::default(),
            unsent_chunk: None,
            unsent_empty: Vec::new(),
            signals_due: Vec::new(),
            signal_rel: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The task's shutdown token.
    pub fn set_shutdown(&mut self, shutdown: tokio_util::sync::CancellationToken) {
        self.shutdown = shutdown;
    }

    /// Goes on with the incremental snapshot stored in the offsets.
    pub fn resume_incremental(&mut self, progress: Option<incremental::Progress>) {
        self.incremental = Incremental::resume(progress);
    }

    /// Goes on with the tables snapshots read without a row whose next
    /// change is still to say so (stored in the offsets).
    pub fn resume_empty(&mut self, empty: crate::snapshot::EmptyTables) {
        self.empty = empty;
    }

    /// Those tables, for a reconnect.
    pub fn empty_tables(&self) -> crate::snapshot::EmptyTables {
        self.empty.clone()
    }

    /// The incremental snapshot's progress, for a reconnect.
    pub fn incremental_progress(&self) -> Option<incremental::Progress> {
        self.incremental.progress.clone()
    }

    /// A signal from any channel: acted on now, or after the open
    /// transaction when one is open. A signal that cannot be acted on is
    /// logged and changes nothing.
    pub async fn signal(&mut self, sig: sluice_core::signal::Signal) -> Result<()> {
        self.signals_due.push(sig);
        if self.txn.is_none() {
            self.after_transaction().await?;
        }
        Ok(())
    }

    /// Acts on the signals received and reads the incremental snapshot's
    /// next chunk when one is due: between transactions, so its watermarks
    /// follow everything handled so far.
    pub async fn after_transaction(&mut self) -> Result<()> {
        if !self.signals_due.is_empty() {
            let captured = catalog::discover_tables(&self.control, &self.cfg).await?;
            for sig in std::mem::take(&mut self.signals_due) {
                match self
                    .incremental
                    .signal(&sig, &captured, self.last_commit_end)
                {
                    Ok(Some(tables)) => self.blocking_snapshot(&sig.id, tables).await?,
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{e:#}"),
                }
            }
        }
        if self.incremental.wants_chunk() {
            self.incremental
                .read_chunk(&self.cfg, &self.control, &mut self.registry)
                .await?;
        }
        Ok(())
    }

    /// A blocking snapshot: streaming pauses (this runs between
    /// transactions), the tables are read as the initial snapshot reads
    /// them, under a snapshot exported now, with the markers Debezium gives
    /// them (`first` ... `last`), and streaming goes on where it paused. The
    /// records carry the streaming offset: a restart resumes streaming and
    /// does not take the snapshot again (as in Debezium).
    async fn blocking_snapshot(
        &mut self,
        id: &str,
        targets: Vec<incremental::Target>,
    ) -> Result<()> {
        let mut tables = Vec::new();
        for t in &targets {
            if t.filter.is_some() || t.surrogate_key.is_some() {
                tracing::warn!(
                    "signal {id}: additional-conditions and surrogate-key apply to incremental snapshots only; {} is read whole",
                    t.table
                );
            }
            if let Some(schema) =
                incremental::load_schema(&self.cfg, &self.control, &mut self.registry, &t.table)
                    .await?
            {
                tables.push(schema);
            }
        }
        let names: Vec<String> = tables.iter().map(|t| t.id.to_string()).collect();
        tracing::info!(
            "signal {id}: blocking snapshot of {}; streaming pauses",
            names.join(", ")
        );
        let holder = self.cfg.conn.connect().await?;
        holder
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .context("starting the blocking snapshot's transaction")?;
        let snapshot_name: String = holder
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .context("exporting the blocking snapshot")?
            .get(0);
        let version: String = holder
            .query_one("SHOW server_version_num", &[])
            .await
            .context("reading the server version")?
            .get(0);
        let at = self.last_commit_end;
        let offset = self.resume_offset();
        let started = std::time::Instant::now();
        let stats = crate::snapshot::run(
            &self.cfg,
            crate::snapshot::SnapshotJob {
                tables,
                snapshot_name,
                lsn: at,
                server_version: version.trim().parse().unwrap_or(0),
                streaming: Some((offset, self.seq_last_commit)),
            },
            &self.events,
            &self.sender,
            &self.shutdown,
        )
        .await
        .with_context(|| format!("blocking snapshot of signal {id}"))?;
        let _ = holder.batch_execute("COMMIT").await;
        self.empty.add(&stats.empty, at);
        tracing::info!(
            "signal {id}: blocking snapshot done: {} rows from {} tables in {:.1}s; streaming resumes",
            stats.rows,
            stats.tables,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The offset of everything handled so far, between transactions: a
    /// restart resumes after the last complete transaction.
    fn resume_offset(&self) -> Arc<sluice_core::SourceOffset> {
        let at = self.last_commit_end;
        self.with_progress(self.events.stream_offset(
            at,
            at,
            self.seq_last_commit,
            at,
            0,
            crate::events::now_micros(),
            "COMMIT",
            None,
        ))
    }

    /// An offset with the incremental snapshot's progress, when one runs,
    /// and the empty tables still to be told.
    fn with_progress(&self, off: Arc<sluice_core::SourceOffset>) -> Arc<sluice_core::SourceOffset> {
        let off = self.empty.into_offset(off);
        let Some(p) = &self.incremental.progress else {
            return off;
        };
        let mut off = Arc::unwrap_or_clone(off);
        if let Ok(v) = serde_json::to_value(p) {
            off.offset.insert(incremental::OFFSET_KEY.into(), v);
        }
        Arc::new(off)
    }

    /// The control session (for heartbeat queries).
    pub fn control(&self) -> &tokio_postgres::Client {
        &self.control
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Resume point for a reconnect in this process.
    pub fn resume_point(&self) -> Resume {
        Resume {
            snapshot_completed: None,
            complete_end: Some(self.last_commit_end),
            partial: self.sent_partial,
            after_snapshot: false,
            sequence_commit: self.seq_last_commit,
        }
    }

    /// Forgets per-connection state before a reconnect. What records never
    /// sent had taken is given back: a chunk is read again, a table's
    /// empty mark waits for its next record again.
    pub fn reset_connection_state(&mut self) {
        self.txn = None;
        self.pending.clear();
        if let Some(progress) = self.unsent_chunk.take() {
            self.incremental = Incremental::resume(progress);
        }
        for (table, lsn) in std::mem::take(&mut self.unsent_empty) {
            self.empty.add(&[table], lsn);
        }
        self.resume = self.resume_point();
    }

    /// Handles one decoded message at `wal_start`.
    pub async fn handle(&mut self, wal_start: u64, msg: LogicalMessage) -> Result<()> {
        if matches!(
            msg,
            LogicalMessage::Insert { .. }
                | LogicalMessage::Update { .. }
                | LogicalMessage::Delete { .. }
                | LogicalMessage::Truncate { .. }
        ) {
            // Every change PostgreSQL sends, captured or not, opens the
            // transaction's metadata (Debezium emits BEGIN/END for
            // transactions whose changes are all filtered out).
            self.begin_metadata(wal_start);
        }
        match msg {
            LogicalMessage::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => self.begin(xid, final_lsn, commit_ts, Some(wal_start)),
            LogicalMessage::Commit { end_lsn, .. } => self.commit(end_lsn, wal_start).await?,
            LogicalMessage::Relation { relation, .. } => self.relation(relation).await?,
            LogicalMessage::Origin { commit_lsn, name } => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.origin = Some((Arc::from(name.as_str()), commit_lsn));
                }
            }
            LogicalMessage::Message {
                transactional,
                lsn,
                prefix,
                content,
                ..
            } => self.message(transactional, lsn, &prefix, &content).await?,
            LogicalMessage::Insert {
                relation_id, new, ..
            } => {
                if self.signal_rel == Some(relation_id) {
                    self.signal_row(&new, wal_start);
                }
                if let Some(t) = self.table_for(relation_id, wal_start)? {
                    if !self.cfg.skipped.create {
                        let cells = tuple_cells(&new);
                        let after = t.row_value(cells.iter().copied())?;
                        let key = t.key_value(&cells)?;
                        self.emit(
                            &t,
                            Op::Create,
                            key,
                            None,
                            Some(after),
                            wal_start,
                            Vec::new(),
                        )
                        .await?;
                    }
                }
            }
            LogicalMessage::Update {
                relation_id,
                old,
                key,
                new,
                ..
            } => {
                if let Some(t) = self.table_for(relation_id, wal_start)? {
                    self.update(&t, old, key, new, wal_start).await?;
                }
            }
            LogicalMessage::Delete {
                relation_id,
                old,
                key,
                ..
            } => {
                if let Some(t) = self.table_for(relation_id, wal_start)? {
                    if !self.cfg.skipped.delete {
                        let tuple = old.or(key).ok_or_else(|| {
                            anyhow!(
                                "delete on {} at LSN {} carries no old row",
                                t.id,
                                sluice_pgoutput::format_lsn(wal_start)
                            )
                        })?;
                        let cells = tuple_cells(&tuple);
                        let before = t.row_value(cells.iter().copied())?;
                        let k = t.key_value(&cells)?;
                        self.emit(&t, Op::Delete, k, Some(before), None, wal_start, Vec::new())
                            .await?;
                    }
                }
            }
            LogicalMessage::Truncate { relation_ids, .. } if !self.cfg.skipped.truncate => {
                for rel in relation_ids {
                    if let Some(t) = self.table_for(rel, wal_start)? {
                        self.emit(&t, Op::Truncate, None, None, None, wal_start, Vec::new())
                            .await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A row inserted into the signal table (columns id, type, data, by
    /// position as Debezium reads them): acted on after its transaction.
    fn signal_row(&mut self, row: &TupleData, lsn: u64) {
        if let Some(txn) = &self.txn {
            if txn.skip_all || txn.skip_until.is_some_and(|l| lsn <= l) {
                return;
            }
        }
        let text = |i: usize| match row.values.get(i) {
            Some(TupleValue::Text(b)) | Some(TupleValue::Binary(b)) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        };
        let (Some(id), Some(kind)) = (text(0), text(1)) else {
            tracing::warn!(
                "a row of the signal table at LSN {} has no id or type; ignored",
                sluice_pgoutput::format_lsn(lsn)
            );
            return;
        };
        let data = text(2).map_or(serde_json::Value::Null, serde_json::Value::String);
        tracing::info!("signal {id} ({kind}) from the signal table");
        self.signals_due
            .push(sluice_core::signal::Signal { id, kind, data });
    }

    /// A transaction starts: `begin_lsn` is the BEGIN message's LSN, None
    /// for a streamed transaction replayed at its commit.
    fn begin(&mut self, xid: u32, final_lsn: u64, commit_ts: i64, begin_lsn: Option<u64>) {
        let skip_all = self.resume.complete_end.is_some_and(|ce| final_lsn < ce);
        let skip_until = match self.resume.partial {
            Some((x, l)) if x == xid => Some(l),
            _ => None,
        };
        self.txn = Some(Txn {
            xid,
            final_lsn,
            ts_us: commit_ts + PG_EPOCH,
            skip_all,
            // A partly delivered transaction already had its BEGIN event.
            meta_begun: !self.cfg.transaction_metadata || skip_all || skip_until.is_some(),
            skip_until,
            total_order: 0,
            per_table: Vec::new(),
            began: false,
            last_lsn: None,
            begin_lsn,
            origin: None,
        });
    }

    /// A streamed transaction, replayed from its spill at its commit.
    pub fn begin_streamed(&mut self, xid: u32, commit_lsn: u64, commit_ts: i64) {
        self.begin(xid, commit_lsn, commit_ts, None);
    }

    /// The BEGIN transaction metadata event, once per transaction:
    /// `"<txId>:<LSN of the BEGIN message>"`.
    fn begin_metadata(&mut self, first_lsn: u64) {
        let Some(txn) = self.txn.as_mut() else { return };
        if txn.meta_begun {
            return;
        }
        txn.meta_begun = true;
        let id = format!("{}:{}", txn.xid, txn.begin_lsn.unwrap_or(first_lsn));
        let v = debezium::transaction_begin_value(&id, txn.ts_us / 1000);
        self.pending.push(self.events.transaction_event(v, &id));
    }

    async fn commit(&mut self, end_lsn: u64, wal_start: u64) -> Result<()> {
        self.commit_transaction(end_lsn, wal_start).await?;
        self.close_read_only_window(end_lsn).await?;
        self.after_transaction().await
    }

    /// Emits a read-only chunk once the stream reached the WAL position
    /// taken after its read (between transactions). Its `source.sequence`
    /// names the last commit and this position; a sink that deduplicates
    /// by it places an incremental read right after that commit.
    async fn close_read_only_window(&mut self, lsn: u64) -> Result<()> {
        if self.txn.is_some() || !self.incremental.closes_at(lsn) {
            return Ok(());
        }
        let Some(chunk) = self.incremental.close() else {
            return Ok(());
        };
        let pos = Position {
            ts_us: crate::events::now_micros(),
            tx_id: None,
            lsn: Some(lsn),
            last_commit: self.seq_last_commit,
            snapshot: "incremental",
            origin: None,
        };
        let mut batch = Vec::with_capacity(chunk.rows.len() + 1);
        chunk_events(&self.events, &mut self.incremental, chunk, &pos, &mut batch);
        let off = self.resume_offset();
        match batch.last_mut() {
            Some(last) => last.offset = Some(off),
            None => batch.push(SourceRecord::offset_only(off)),
        }
        self.sender.send(batch).await?;
        self.after_transaction().await
    }

    async fn commit_transaction(&mut self, end_lsn: u64, wal_start: u64) -> Result<()> {
        if self.txn.is_none() {
            return Err(anyhow!(
                "COMMIT without BEGIN at LSN {}",
                sluice_pgoutput::format_lsn(end_lsn)
            ));
        }
        // A transaction without changes (PostgreSQL before 15 sends those)
        // still has its BEGIN and END.
        self.begin_metadata(wal_start);
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        self.seq_last_commit = Some(end_lsn);
        self.last_commit_ts = txn.ts_us;
        if txn.skip_all {
            return Ok(());
        }
        if self.pending.is_empty() && !txn.began {
            // Nothing captured in this transaction: record the progress
            // anyway (throttled) so the slot does not hold WAL for it.
            return self.advance(end_lsn).await;
        }
        if self.cfg.transaction_metadata {
            // END's id is the COMMIT message's LSN (the transaction's end).
            let id = format!("{}:{}", txn.xid, wal_start);
            self.tx_map_capacity = self
                .tx_map_capacity
                .max(debezium::java_hash_map_capacity(txn.per_table.len()));
            let names: Vec<&str> = txn.per_table.iter().map(|(n, _)| n.as_str()).collect();
            let per_table: Vec<(String, i64)> =
                debezium::java_hash_map_order(&names, self.tx_map_capacity)
                    .into_iter()
                    .map(|i| txn.per_table[i].clone())
                    .collect();
            let v =
                debezium::transaction_end_value(&id, txn.ts_us / 1000, txn.total_order, &per_table);
            let rec = self.events.transaction_event(v, &id);
            self.pending.push(rec);
        }
        let tx_id_text = self
            .cfg
            .transaction_metadata
            .then(|| format!("{}:{}", txn.xid, txn.final_lsn));
        let off = self.with_progress(self.events.stream_offset(
            end_lsn,
            end_lsn,
            self.seq_last_commit,
            txn.last_lsn.unwrap_or(end_lsn),
            txn.xid,
            txn.ts_us,
            "COMMIT",
            tx_id_text.as_deref(),
        ));
        if let Some(last) = self.pending.last_mut() {
            last.offset = Some(off);
        }
        self.flush().await?;
        self.last_commit_end = end_lsn;
        self.sent_partial = None;
        // The resume point is passed once a transaction completed after it.
        self.resume = Resume {
            snapshot_completed: None,
            complete_end: Some(end_lsn),
            partial: self.resume.partial.filter(|(x, _)| *x != txn.xid),
            after_snapshot: false,
            sequence_commit: self.seq_last_commit,
        };
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.sender.send(batch).await?;
        self.unsent_chunk = None;
        self.unsent_empty.clear();
        Ok(())
    }

    async fn relation(&mut self, rel: Relation) -> Result<()> {
        // A partition's changes belong to its (captured) root table, unless
        // the partition itself is what the config captures.
        let mut id = TableId {
            schema: rel.namespace.clone(),
            table: rel.name.clone(),
        };
        let mut catalog_oid = rel.id;
        // The signal table is captured whatever the include lists say, and
        // its rows are emitted like any table's (as Debezium does).
        let signal_table =
            self.cfg.signal_source_channel && self.cfg.signal_table.as_ref() == Some(&id);
        if signal_table {
            self.signal_rel = Some(rel.id);
        }
        if !signal_table && !self.cfg.table_included(&id.schema, &id.table) {
            let root = match catalog::partition_root(&self.control, rel.id).await? {
                Some(root) => catalog::table_by_oid(&self.control, root)
                    .await?
                    .map(|(root_id, _)| (root, root_id)),
                None => None,
            };
            match root {
                Some((root, root_id))
                    if self.cfg.table_included(&root_id.schema, &root_id.table) =>
                {
                    catalog_oid = root;
                    id = root_id;
                }
                _ => {
                    self.tables.insert(rel.id, None);
                    return Ok(());
                }
            }
        }
        let cols: Vec<RelColumn> = rel
            .columns
            .iter()
            .map(|c| RelColumn {
                name: c.name.clone(),
                type_oid: c.type_oid,
                typmod: c.type_modifier,
            })
            .collect();
        if let Some(Some(t)) = self.tables.get(&rel.id) {
            if t.same_columns(&cols) && t.id == id {
                return Ok(());
            }
        }
        let missing = self.registry.missing(cols.iter().map(|c| c.type_oid));
        if !missing.is_empty() {
            self.registry
                .load(&self.control, &missing)
                .await
                .context("loading column types")?;
        }
        let ident = rel.replica_identity as char;
        let cat = catalog::load_table_by_oid(&self.control, catalog_oid, id.clone(), ident).await?;
        let schema = TableSchema::build(&self.cfg, &self.registry, rel.id, id, &cols, Some(&cat))?;
        if self.tables.get(&rel.id).is_some_and(Option::is_some) {
            tracing::info!(
                "schema of {} changed; following events use the new schema",
                schema.id
            );
        }
        self.tables.insert(rel.id, Some(Arc::new(schema)));
        Ok(())
    }

    /// The table of a change, or None when it is not captured or the event
    /// was already delivered before a restart.
    fn table_for(&mut self, rel: u32, lsn: u64) -> Result<Option<Arc<TableSchema>>> {
        if let Some(txn) = &self.txn {
            if txn.skip_all || txn.skip_until.is_some_and(|l| lsn <= l) {
                return Ok(None);
            }
        }
        match self.tables.get(&rel) {
            Some(t) => Ok(t.clone()),
            None => Err(anyhow!(
                "change for relation {rel} at LSN {} arrived before its RELATION message",
                sluice_pgoutput::format_lsn(lsn)
            )),
        }
    }

    async fn update(
        &mut self,
        t: &Arc<TableSchema>,
        old: Option<TupleData>,
        key: Option<TupleData>,
        new: TupleData,
        lsn: u64,
    ) -> Result<()> {
        let new_cells = tuple_cells(&new);
        let after = t.row_value(new_cells.iter().copied())?;
        let new_key = t.key_value(&new_cells)?;
        let old_tuple = old.as_ref().or(key.as_ref());
        let (before, old_key) = match old_tuple {
            Some(o) => {
                let cells = tuple_cells(o);
                let before = if old.is_some() {
                    Some(t.row_value(cells.iter().copied())?)
                } else {
                    None
                };
                (before, t.key_value(&cells)?)
            }
            None => (None, None),
        };
        let key_changed = match (&old_key, &new_key) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        if key_changed {
            // As Debezium: a key change is a delete of the old key (with its
            // tombstone) and a create of the new one; the delete carries the
            // new key in __debezium.newkey, the create the old one in
            // __debezium.oldkey.
            let before_row = match before {
                Some(b) => b,
                None => {
                    let cells = old_tuple.map(tuple_cells).unwrap_or_default();
                    t.row_value(cells.iter().copied())?
                }
            };
            let key_header = |name: &str, key: &Option<Value>| -> Vec<Header> {
                let bytes = key.as_ref().and_then(|k| {
                    sluice_core::converter::simple_header_bytes(t.key_schema.as_deref(), k)
                });
                vec![Header {
                    key: name.to_string(),
                    value: bytes,
                }]
            };
            let newkey = key_header(debezium::NEWKEY_HEADER, &new_key);
            let oldkey = key_header(debezium::OLDKEY_HEADER, &old_key);
            if !self.cfg.skipped.delete {
                self.emit(t, Op::Delete, old_key, Some(before_row), None, lsn, newkey)
                    .await?;
            }
            if !self.cfg.skipped.create {
                self.emit(t, Op::Create, new_key, None, Some(after), lsn, oldkey)
                    .await?;
            }
        } else if !self.cfg.skipped.update {
            self.emit(t, Op::Update, new_key, before, Some(after), lsn, Vec::new())
                .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &mut self,
        t: &Arc<TableSchema>,
        op: Op,
        key: Option<Value>,
        before: Option<Value>,
        after: Option<Value>,
        lsn: u64,
        mut headers: Vec<Header>,
    ) -> Result<()> {
        // A change streamed while a chunk is between its watermarks is
        // newer than (or as new as) the chunk's row of the same key.
        let xid = self.txn.as_ref().map_or(0, |t| t.xid);
        self.incremental
            .streamed(&t.id, &key, op == Op::Truncate, xid);
        // A truncate event carries no headers: its marks wait for the next.
        let marks = if op == Op::Truncate {
            None
        } else {
            self.incremental.take_marks(&t.id)
        };
        if let Some(marks) = marks {
            headers.push(Header {
                key: incremental::INCREMENTAL_SNAPSHOT_HEADER.into(),
                value: Some(marks.into_bytes()),
            });
        }
        if op != Op::Truncate && !self.empty.is_empty() {
            let name = t.id.to_string();
            if let Some(lsn) = self.empty.take(&name) {
                self.unsent_empty.push((name, lsn));
                headers.push(Header {
                    key: sluice_core::record::SNAPSHOT_EMPTY_HEADER.into(),
                    value: Some(lsn.to_string().into_bytes()),
                });
            }
        }
        self.begin_metadata(lsn);
        let Some(txn) = self.txn.as_mut() else {
            return Err(anyhow!(
                "change outside a transaction at LSN {}",
                sluice_pgoutput::format_lsn(lsn)
            ));
        };
        let meta = self.cfg.transaction_metadata;
        // Debezium's transaction id changes with every event:
        // "<txId>:<LSN of the event>".
        let tx_id_text = format!("{}:{}", txn.xid, lsn);
        txn.began = true;
        let block = if meta {
            txn.total_order += 1;
            let name = format!("{}.{}", t.id.schema, t.id.table);
            let dco = match txn.per_table.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    txn.per_table.push((name, 1));
                    1
                }
            };
            Some(TxBlock {
                id: tx_id_text.clone(),
                total_order: txn.total_order,
                data_collection_order: dco,
            })
        } else {
            None
        };
        let pos = Position {
            ts_us: txn.ts_us,
            tx_id: Some(i64::from(txn.xid)),
            lsn: Some(lsn),
            last_commit: self.seq_last_commit,
            snapshot: "false",
            origin: txn.origin.clone(),
        };
        if op == Op::Truncate {
            self.events
                .truncate(&mut self.pending, t, &pos, block.as_ref());
        } else {
            self.events.change(
                &mut self.pending,
                t,
                op,
                key,
                before,
                after,
                &pos,
                block.as_ref(),
                headers,
            );
        }
        txn.last_lsn = Some(lsn);
        if self.pending.len() >= self.cfg.max_batch_size {
            let (xid, ts) = (txn.xid, txn.ts_us);
            let off = self.with_progress(self.events.stream_offset(
                lsn,
                self.last_commit_end,
                self.seq_last_commit,
                lsn,
                xid,
                ts,
                op_message_type(op),
                meta.then_some(tx_id_text.as_str()),
            ));
            if let Some(last) = self.pending.last_mut() {
                last.offset = Some(off);
            }
            self.flush().await?;
            self.sent_partial = Some((xid, lsn));
        }
        Ok(())
    }

    /// A logical decoding message: inside its transaction when
    /// transactional, else on its own at its LSN, with the last commit's
    /// time (Debezium's source block then has no transaction id).
    async fn message(
        &mut self,
        transactional: bool,
        lsn: u64,
        prefix: &str,
        content: &[u8],
    ) -> Result<()> {
        if prefix == incremental::WATERMARK_PREFIX {
            return self.watermark(transactional, lsn, content);
        }
        if !self.cfg.message_prefix_included(prefix) {
            return Ok(());
        }
        if transactional {
            if let Some(txn) = &self.txn {
                if txn.skip_all || txn.skip_until.is_some_and(|l| lsn <= l) {
                    return Ok(());
                }
            } else {
                return Err(anyhow!(
                    "transactional logical decoding message outside a transaction at LSN {}",
                    sluice_pgoutput::format_lsn(lsn)
                ));
            }
            self.begin_metadata(lsn);
            let Some(txn) = self.txn.as_mut() else {
                return Ok(());
            };
            txn.began = true;
            // Debezium 3.x counts a message in its transaction, each one a
            // data collection of its own named after a Java object (2.7 did
            // not count them).
            let block =
                (self.cfg.transaction_metadata && self.cfg.format == Format::V3_6).then(|| {
                    txn.total_order += 1;
                    txn.per_table.push((message_collection(lsn), 1));
                    TxBlock {
                        id: format!("{}:{}", txn.xid, lsn),
                        total_order: txn.total_order,
                        data_collection_order: 1,
                    }
                });
            let pos = Position {
                ts_us: txn.ts_us,
                tx_id: Some(i64::from(txn.xid)),
                lsn: Some(lsn),
                last_commit: self.seq_last_commit,
                snapshot: "false",
                origin: txn.origin.clone(),
            };
            txn.last_lsn = Some(lsn);
            let rec = self.events.message(
                prefix,
                content,
                self.cfg.type_modes.binary,
                &pos,
                block.as_ref(),
            );
            self.pending.push(rec);
            return Ok(());
        }
        if self.txn.is_some() || lsn <= self.last_commit_end {
            // Already delivered before a restart (or, impossibly, inside a
            // transaction: pgoutput sends these between transactions).
            return Ok(());
        }
        self.seq_last_commit = Some(lsn);
        let pos = Position {
            ts_us: self.last_commit_ts,
            tx_id: None,
            lsn: Some(lsn),
            last_commit: self.seq_last_commit,
            snapshot: "false",
            origin: None,
        };
        let rec = self
            .events
            .message(prefix, content, self.cfg.type_modes.binary, &pos, None);
        self.sender.send(vec![rec]).await
    }

    /// An incremental snapshot's watermark: the high one emits what is left
    /// of its chunk, in the watermark's transaction.
    fn watermark(&mut self, transactional: bool, lsn: u64, content: &[u8]) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Ok(());
        };
        if !transactional || txn.skip_all || txn.skip_until.is_some_and(|l| lsn <= l) {
            return Ok(());
        }
        if self.incremental.watermark(content) != Mark::Close {
            return Ok(());
        }
        let before = self.incremental.progress.clone();
        let Some(chunk) = self.incremental.close() else {
            return Ok(());
        };
        self.unsent_chunk.get_or_insert(before);
        let pos = Position {
            ts_us: crate::events::now_micros(),
            tx_id: Some(i64::from(txn.xid)),
            lsn: Some(lsn),
            last_commit: self.seq_last_commit,
            snapshot: "incremental",
            origin: None,
        };
        chunk_events(
            &self.events,
            &mut self.incremental,
            chunk,
            &pos,
            &mut self.pending,
        );
        if let Some(txn) = self.txn.as_mut() {
            txn.last_lsn = Some(lsn);
        }
        Ok(())
    }

    /// Records that everything before `lsn` was seen while no transaction
    /// is open, with an offset-only marker (at most once per second): once
    /// the records before it are delivered, the slot may advance to `lsn`.
    pub async fn advance(&mut self, lsn: u64) -> Result<()> {
        if self.txn.is_none() {
            self.close_read_only_window(lsn).await?;
        }
        if self.txn.as_ref().is_some_and(|t| !t.skip_all) || lsn <= self.last_commit_end {
            return Ok(());
        }
        if self
            .last_marker
            .is_some_and(|t| t.elapsed() < MARKER_INTERVAL)
        {
            return Ok(());
        }
        self.last_marker = Some(std::time::Instant::now());
        let off = self.with_progress(self.events.stream_offset(
            lsn,
            lsn,
            self.seq_last_commit,
            lsn,
            0,
            crate::events::now_micros(),
            "COMMIT",
            None,
        ));
        self.sender
            .send(vec![SourceRecord::offset_only(off)])
            .await?;
        self.last_commit_end = lsn;
        // A transaction delivered in part before a restart (the stored
        // offset) may still come: keep skipping what was delivered of it.
        self.resume = Resume {
            snapshot_completed: None,
            complete_end: Some(lsn),
            partial: self.resume.partial,
            after_snapshot: false,
            sequence_commit: self.seq_last_commit,
        };
        Ok(())
    }

    /// A heartbeat record carrying a COMMIT offset at `lsn`, when no
    /// transaction is open: lets the slot advance while nothing captured
    /// changes.
    pub async fn heartbeat(&mut self, lsn: u64) -> Result<()> {
        if self.txn.is_some() {
            return Ok(());
        }
        let lsn = lsn.max(self.last_commit_end);
        let off = self.with_progress(self.events.stream_offset(
            lsn,
            lsn,
            self.seq_last_commit,
            lsn,
            0,
            crate::events::now_micros(),
            "COMMIT",
            None,
        ));
        let rec = self
            .events
            .heartbeat(&self.cfg.heartbeat_topics_prefix, off);
        self.sender.send(vec![rec]).await?;
        self.last_commit_end = lsn;
        Ok(())
    }
}

/// An incremental snapshot chunk's rows as `r` events at `pos`. The
/// table's waiting marks ride on the first, the `end` of its snapshot on
/// the last (or on the table's next record when no row is left).
fn chunk_events(
    events: &EventFactory,
    inc: &mut incremental::Incremental,
    chunk: incremental::Emit,
    pos: &Position,
    out: &mut Vec<SourceRecord>,
) {
    let n = chunk.rows.len();
    if n == 0 {
        if let Some(g) = chunk.end {
            inc.end_later(&chunk.schema.id, g);
        }
        return;
    }
    for (i, (key, after)) in chunk.rows.into_iter().enumerate() {
        let mut marks: Vec<String> = Vec::new();
        if i == 0 {
            marks.extend(inc.take_marks(&chunk.schema.id));
        }
        if i + 1 == n {
            marks.extend(chunk.end.map(|g| format!("end:{g}")));
        }
        let headers = if marks.is_empty() {
            Vec::new()
        } else {
            vec![Header {
                key: incremental::INCREMENTAL_SNAPSHOT_HEADER.into(),
                value: Some(marks.join(",").into_bytes()),
            }]
        };
        events.change(
            out,
            &chunk.schema,
            Op::Read,
            key,
            None,
            Some(after),
            pos,
            None,
            headers,
        );
    }
}

/// The data collection Debezium 3.x counts a logical decoding message under:
/// `LogicalDecodingMessageId`'s `toString`, a class name and an identity hash
/// that no other process can reproduce (a value from the message's LSN here).
fn message_collection(lsn: u64) -> String {
    let hash = ((lsn ^ (lsn >> 31)) as u32 & 0x7fff_ffff).max(1);
    format!("io.debezium.connector.postgresql.LogicalDecodingMessageMonitor$LogicalDecodingMessageId@{hash:x}")
}

fn op_message_type(op: Op) -> &'static str {
    match op {
        Op::Create => "INSERT",
        Op::Update => "UPDATE",
        Op::Delete => "DELETE",
        Op::Truncate => "TRUNCATE",
        _ => "INSERT",
    }
}

/// Feeds spilled messages of a committed streamed transaction through a
/// decoder that is told it is inside a stream (their xid fields are set).
pub fn stream_decoder(protocol: u32, xid: u32) -> Result<Decoder> {
    let mut d = Decoder::new(protocol);
    let mut start = vec![b'S'];
    start.extend_from_slice(&xid.to_be_bytes());
    start.push(1);
    d.decode(&Bytes::from(start))
        .map_err(|e| anyhow!("initialising the stream decoder: {e}"))?;
    Ok(d)
}
