//! The PostgreSQL source task: checks, publication and slot management, the
//! snapshot decision, streaming, offset confirmation, and retries.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use sluice_core::connector::{SourceContext, SourceTask};
use sluice_pgoutput::{format_lsn, ReplicationMessage};
use sluice_pgtypes::TypeRegistry;

use crate::catalog::{self, CatalogTable};
use crate::config::{PostgresConfig, SnapshotMode};
use crate::error::{classify, PgError};
use crate::events::{EventFactory, Resume};
use crate::replication::{quote_literal, ReplicationConn};
use crate::snapshot::{self, SnapshotJob};
use crate::stream::{stream_decoder, ChangeStream};
use crate::table::TableSchema;

/// The source task.
pub struct PostgresSourceTask {
    cfg: Arc<PostgresConfig>,
}

impl PostgresSourceTask {
    /// A task for a checked config.
    pub fn new(cfg: PostgresConfig) -> Self {
        PostgresSourceTask { cfg: Arc::new(cfg) }
    }
}

/// State kept across reconnects within one process.
struct RunState {
    /// Where to resume (None until known).
    resume: Option<Resume>,
    /// Whether a snapshot is still to be taken in this process.
    snapshot_pending: bool,
    /// End LSN of the last fully sent transaction.
    last_commit_end: u64,
    /// Whether offsets were stored for this connector: only then is a slot
    /// of its name its own.
    has_offsets: bool,
    /// The incremental snapshot under way, as the offsets keep it.
    incremental: Option<crate::incremental::Progress>,
    /// Tables a snapshot read without a row whose first change since is
    /// still to say so.
    empty: crate::snapshot::EmptyTables,
}

fn slot_busy(slot: &str, pid: i32) -> anyhow::Error {
    anyhow::Error::new(PgError {
        severity: "ERROR".into(),
        code: "55006".into(),
        message: format!(
            "replication slot \"{slot}\" is active for PID {pid}: another process streams from it. \
             Stop that process, or run SELECT pg_terminate_backend({pid}); or use another slot.name"
        ),
        detail: None,
        hint: None,
    })
}

#[async_trait]
impl SourceTask for PostgresSourceTask {
    /// One session: connect, snapshot when needed, stream until shutdown.
    /// A failure is returned with its [kind](sluice_core::error::ErrorKind):
    /// the worker restarts the task after a transient one (a lost
    /// connection, a restarting server, a slot still held by an old
    /// session) within `errors.max.retries`, and a new session resumes
    /// from the committed offsets.
    async fn run(&mut self, ctx: SourceContext) -> Result<()> {
        let cfg = self.cfg.clone();
        let stored = ctx.offsets.read(&cfg.partition());
        let resume = stored.as_ref().map(Resume::from_offset);
        let snapshot_pending = match (cfg.snapshot_mode, resume) {
            (SnapshotMode::Always, _) => true,
            (SnapshotMode::NoData, _) => false,
            (_, None) => true,
            (_, Some(r)) => r.snapshot_completed == Some(false),
        };
        if let Some(r) = &resume {
            if r.snapshot_completed == Some(false) {
                tracing::warn!(
                    "the previous snapshot of {} was interrupted; it restarts from a clean state",
                    cfg.name
                );
            }
        }
        let mut state = RunState {
            resume: if snapshot_pending { None } else { resume },
            snapshot_pending,
            last_commit_end: resume.and_then(|r| r.complete_end).unwrap_or(0),
            has_offsets: stored.is_some(),
            // A new initial snapshot reads every table anyway.
            incremental: if snapshot_pending {
                None
            } else {
                stored
                    .as_ref()
                    .and_then(crate::incremental::Progress::from_offset)
            },
            empty: if snapshot_pending {
                crate::snapshot::EmptyTables::default()
            } else {
                stored
                    .as_ref()
                    .and_then(crate::snapshot::EmptyTables::from_offset)
                    .unwrap_or_default()
            },
        };
        match self.session(&ctx, &mut state).await {
            Ok(()) => {}
            Err(e) if ctx.shutdown.is_cancelled() => {
                tracing::debug!("stopping after shutdown: {e:#}");
            }
            Err(e) => return Err(classify(e)),
        }
        if cfg.slot_drop_on_stop {
            if let Ok(c) = cfg.conn.connect().await {
                match catalog::drop_slot(&c, &cfg.slot_name).await {
                    Ok(()) => tracing::info!(
                        "dropped replication slot {} (slot.drop.on.stop)",
                        cfg.slot_name
                    ),
                    Err(e) => tracing::warn!("could not drop slot {}: {e:#}", cfg.slot_name),
                }
            }
        }
        Ok(())
    }
}

/// The error for a slot of this connector's name that it did not create.
fn foreign_slot(cfg: &PostgresConfig, s: &catalog::SlotInfo) -> anyhow::Error {
    let holder = match s.active_pid {
        Some(pid) => {
            format!("in use by PID {pid} (SELECT * FROM pg_stat_activity WHERE pid = {pid})")
        }
        None => "not in use".to_string(),
    };
    sluice_core::error::definite(anyhow!(
        "replication slot '{}' already exists (database '{}', plugin '{}', {holder}) and this connector has no stored offsets, \
         so it is not a slot Sluice created for connector {}: another pipeline's position would be lost if it were dropped. \
         Choose another slot.name, or, if nothing needs that slot, drop it: SELECT pg_drop_replication_slot({});",
        cfg.slot_name,
        s.database.as_deref().unwrap_or("?"),
        s.plugin.as_deref().unwrap_or("?"),
        cfg.name,
        quote_literal(&cfg.slot_name)
    ))
}

/// The snapshot's tables (`schema.table`) with PostgreSQL's estimate of
/// their rows (`pg_class.reltuples`; None for a table never analyzed or
/// when the estimate cannot be read: progress then counts what was read).
async fn estimated_rows(
    client: &tokio_postgres::Client,
    tables: &[Arc<TableSchema>],
) -> Vec<(String, Option<u64>)> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let estimates: HashMap<u32, f32> = match client
        .query(
            "SELECT oid, reltuples FROM pg_class WHERE oid = ANY($1)",
            &[&oids],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) => {
            tracing::debug!("reading the tables' row estimates: {e}");
            HashMap::new()
        }
    };
    tables
        .iter()
        .map(|t| {
            let estimate = estimates
                .get(&t.oid)
                .copied()
                .filter(|r| *r >= 0.0)
                .map(|r| r as u64);
            (t.id.to_string(), estimate)
        })
        .collect()
}

/// Clears the telemetry's connected flag when a session ends, however it
/// ends.
struct Disconnected<'a>(&'a sluice_core::telemetry::SourceTelemetry);

impl Drop for Disconnected<'_> {
    fn drop(&mut self) {
        self.0.connected.store(false, Relaxed);
    }
}

impl PostgresSourceTask {
    async fn session(&self, ctx: &SourceContext, state: &mut RunState) -> Result<()> {
        let cfg = &self.cfg;
        let control = cfg.conn.connect().await?;
        let version = catalog::preflight(&control, cfg).await?;
        // Watches the slot's WAL for as long as this session runs.
        let _guard = crate::slot_guard::spawn(cfg, Arc::clone(&ctx.telemetry));
        ctx.telemetry.connected.store(true, Relaxed);
        let _disconnected = Disconnected(&ctx.telemetry);
        let tables = catalog::discover_tables(&control, cfg).await?;
        if tables.is_empty() {
            tracing::warn!(
                "connector {}: no table matches the include/exclude lists yet; changes to tables created later are captured",
                cfg.name
            );
        }
        let mut cat: HashMap<u32, CatalogTable> = HashMap::new();
        for t in &tables {
            if let Some(ct) = catalog::load_table(&control, t).await? {
                cat.insert(ct.oid, ct);
            }
        }
        for w in catalog::key_warnings(&cat) {
            tracing::warn!("{w}");
        }
        // The signal table's inserts must reach the stream too.
        let mut published = tables.clone();
        if let Some(sig) = cfg
            .signal_table
            .as_ref()
            .filter(|_| cfg.signal_source_channel)
        {
            if !published.contains(sig) {
                if catalog::load_table(&control, sig).await?.is_some() {
                    published.push(sig.clone());
                } else {
                    tracing::warn!(
                        "signal.data.collection {sig} does not exist: signals can come only through the worker's REST action until it is created (CREATE TABLE {} (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048)))",
                        sig.quoted()
                    );
                }
            }
        }
        catalog::ensure_publication(&control, cfg, &published).await?;
        let mut registry = TypeRegistry::new();
        let oids: Vec<u32> = cat
            .values()
            .flat_map(|t| t.columns.iter().map(|c| c.type_oid))
            .collect();
        let missing = registry.missing(oids);
        if !missing.is_empty() {
            registry
                .load(&control, &missing)
                .await
                .context("loading column types")?;
        }
        let slot = catalog::slot_info(&control, &cfg.slot_name).await?;
        if let Some(s) = &slot {
            if !state.has_offsets {
                return Err(foreign_slot(cfg, s));
            }
            if s.plugin.as_deref() != Some("pgoutput") {
                bail!(
                    "replication slot '{}' exists with plugin '{}', but Sluice decodes pgoutput. Fix: \
                     drop it (SELECT pg_drop_replication_slot({});) once no consumer needs it, or set \
                     slot.name to another slot",
                    cfg.slot_name,
                    s.plugin.as_deref().unwrap_or("?"),
                    quote_literal(&cfg.slot_name)
                );
            }
            if s.database.as_deref() != Some(cfg.conn.dbname.as_str()) {
                bail!(
                    "replication slot '{}' belongs to database '{}', not '{}': set slot.name to a slot of this database",
                    cfg.slot_name,
                    s.database.as_deref().unwrap_or("?"),
                    cfg.conn.dbname
                );
            }
            if let Some(pid) = s.active_pid {
                return Err(slot_busy(&cfg.slot_name, pid));
            }
        }
        // A slot PostgreSQL invalidated (it fell more than
        // max_slot_wal_keep_size behind) cannot stream again: a new slot and
        // a new snapshot, when the mode allows one.
        let health = crate::checks::slot_health(&control, &cfg.slot_name).await?;
        let mut slot = slot;
        if let (Some(s), Some(h)) = (&slot, &health) {
            if h.wal_status.as_deref() == Some("lost") {
                if matches!(
                    cfg.snapshot_mode,
                    SnapshotMode::WhenNeeded | SnapshotMode::Always
                ) {
                    tracing::warn!(
                        "replication slot {} was invalidated by PostgreSQL (wal_status=lost: it fell more than max_slot_wal_keep_size behind, and the changes since {} are gone); dropping it and taking a new snapshot (snapshot.mode={})",
                        cfg.slot_name,
                        s.confirmed_flush.map_or_else(|| "?".into(), format_lsn),
                        if cfg.snapshot_mode == SnapshotMode::Always { "always" } else { "when_needed" }
                    );
                    catalog::drop_slot(&control, &cfg.slot_name).await?;
                    slot = None;
                    state.snapshot_pending = true;
                    state.resume = None;
                } else {
                    return Err(sluice_core::error::definite(anyhow!(
                        "replication slot '{}' was invalidated by PostgreSQL (wal_status=lost): it fell more than max_slot_wal_keep_size behind and the changes since {} are gone. \
                         Choices: set snapshot.mode=when_needed to drop it and take a new snapshot (upserting sinks are made equal to it), \
                         or raise max_slot_wal_keep_size and drop the slot (SELECT pg_drop_replication_slot({});) and the connector's offsets before starting again",
                        cfg.slot_name,
                        s.confirmed_flush.map_or_else(|| "?".into(), format_lsn),
                        quote_literal(&cfg.slot_name)
                    )));
                }
            } else if h.wal_status.as_deref() == Some("unreserved") {
                tracing::warn!(
                    "replication slot {} retains more WAL than max_slot_wal_keep_size allows (wal_status=unreserved): PostgreSQL will invalidate it at the next checkpoint unless it catches up; sinks are behind or the connector is stopped",
                    cfg.slot_name
                );
            }
        }
        // when_needed: a stored position the slot can no longer serve means
        // a new snapshot.
        if cfg.snapshot_mode == SnapshotMode::WhenNeeded && !state.snapshot_pending {
            let stored = state.resume.and_then(|r| r.complete_end).unwrap_or(0);
            let lost = match &slot {
                None => true,
                Some(s) => s.confirmed_flush.is_some_and(|c| c > stored && stored > 0),
            };
            if lost {
                tracing::warn!("stored offsets cannot be resumed from slot {}; taking a new snapshot (when_needed)", cfg.slot_name);
                state.snapshot_pending = true;
                state.resume = None;
            }
        }
        if slot.is_none() && !state.snapshot_pending {
            if let Some(r) = state.resume {
                if r.complete_end.is_some() && cfg.snapshot_mode != SnapshotMode::NoData {
                    bail!(
                        "replication slot '{}' is missing but stored offsets say streaming had reached LSN {}: \
                         changes since then are lost. Fix: set snapshot.mode=when_needed to take a new snapshot, \
                         or remove the connector's offsets",
                        cfg.slot_name,
                        format_lsn(r.complete_end.unwrap_or(0))
                    );
                }
            }
        }
        let mut repl = ReplicationConn::connect(&cfg.conn).await?;
        let events = EventFactory::new(cfg);
        if slot.is_none() && !state.has_offsets {
            // Remembered before the slot exists: after a crash right after
            // creating it, the next run knows the slot is this connector's
            // (its offsets say the snapshot did not finish).
            let mut marker = serde_json::Map::new();
            if state.snapshot_pending {
                marker.insert("snapshot".into(), true.into());
                marker.insert("last_snapshot_record".into(), false.into());
            }
            marker.insert("sluice_slot".into(), cfg.slot_name.clone().into());
            ctx.offset_writer
                .store_now(&sluice_core::record::SourceOffset {
                    partition: cfg.partition(),
                    offset: marker,
                })
                .await
                .context("remembering the replication slot about to be created")?;
            state.has_offsets = true;
        }
        if state.snapshot_pending {
            if slot.is_some() {
                // This connector's own slot (it has offsets): a consistent
                // snapshot needs the exported snapshot of a new slot.
                tracing::info!(
                    "dropping this connector's slot {} to take a consistent snapshot",
                    cfg.slot_name
                );
                catalog::drop_slot(&control, &cfg.slot_name).await?;
            }
            let created = repl.create_slot(&cfg.slot_name, true).await?;
            ctx.reporter.healthy();
            let snapshot_name = created
                .snapshot_name
                .clone()
                .ok_or_else(|| anyhow!("CREATE_REPLICATION_SLOT exported no snapshot"))?;
            tracing::info!(
                "created slot {} at {}; snapshot of {} table(s)",
                cfg.slot_name,
                format_lsn(created.consistent_point),
                tables.len()
            );
            let mut schemas = Vec::new();
            // In the order discovered: table.include.list order, as Debezium.
            // The signal table is streamed, never snapshotted (as Debezium).
            let ordered = tables
                .iter()
                .filter(|id| cfg.signal_table.as_ref() != Some(*id))
                .filter_map(|id| cat.values().find(|c| &c.id == id));
            for ct in ordered {
                let cols = ct.rel_columns();
                schemas.push(Arc::new(TableSchema::build(
                    cfg,
                    &registry,
                    ct.oid,
                    ct.id.clone(),
                    &cols,
                    Some(ct),
                )?));
            }
            let estimates = estimated_rows(&control, &schemas).await;
            ctx.telemetry.snapshot_started(estimates);
            let started = std::time::Instant::now();
            let stats = snapshot::run(
                cfg,
                SnapshotJob {
                    tables: schemas,
                    snapshot_name,
                    lsn: created.consistent_point,
                    server_version: version,
                    streaming: None,
                },
                &events,
                &ctx.sender,
                &ctx.shutdown,
            )
            .await;
            ctx.telemetry
                .snapshot_finished(stats.is_ok() && !ctx.shutdown.is_cancelled());
            let stats = stats?;
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                "snapshot done: {} rows from {} tables in {:.1}s ({:.0} rows/s)",
                stats.rows,
                stats.tables,
                secs,
                stats.rows as f64 / secs.max(1e-9)
            );
            state.snapshot_pending = false;
            state.empty = crate::snapshot::EmptyTables::default();
            state.empty.add(&stats.empty, created.consistent_point);
            state.last_commit_end = created.consistent_point;
            state.resume = Some(Resume {
                snapshot_completed: None,
                complete_end: Some(created.consistent_point),
                partial: None,
                after_snapshot: true,
                sequence_commit: None,
            });
            if cfg.snapshot_mode == SnapshotMode::InitialOnly {
                tracing::info!("snapshot.mode=initial_only: not streaming");
                return Ok(());
            }
        } else if slot.is_none() {
            let created = repl.create_slot(&cfg.slot_name, false).await?;
            tracing::info!(
                "created slot {} at {}",
                cfg.slot_name,
                format_lsn(created.consistent_point)
            );
        }
        if cfg.snapshot_mode == SnapshotMode::InitialOnly {
            return Ok(());
        }
        // Streaming.
        let protocol = if cfg.stream_in_progress && version >= 140000 {
            2
        } else {
            1
        };
        let mut options = vec![
            ("proto_version", protocol.to_string()),
            (
                "publication_names",
                format!("\"{}\"", cfg.publication_name.replace('"', "\"\"")),
            ),
        ];
        if protocol >= 2 {
            options.push(("streaming", "on".into()));
        }
        if version >= 140000 {
            // Logical decoding messages, as Debezium asks for them.
            options.push(("messages", "true".into()));
        }
        let opts: Vec<(&str, String)> = options.iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut stream = repl
            .start_replication(&cfg.slot_name, 0, &opts, cfg.status_interval)
            .await?;
        tracing::info!(
            "streaming changes from slot {} (pgoutput protocol {protocol})",
            cfg.slot_name
        );
        ctx.reporter.healthy();
        let mut changes = ChangeStream::new(
            cfg.clone(),
            control,
            registry,
            ctx.sender.clone(),
            state.resume.unwrap_or_default(),
            state.last_commit_end,
        );
        changes.resume_incremental(state.incremental.take());
        changes.resume_empty(std::mem::take(&mut state.empty));
        changes.set_shutdown(ctx.shutdown.clone());
        let mut signals = sluice_core::signal::register(&cfg.name);
        // A resumed incremental snapshot goes on with its next chunk.
        changes.after_transaction().await?;
        let mut decoder = sluice_pgoutput::Decoder::new(protocol);
        let mut spill = sluice_pgoutput::spill::StreamedTxns::new(
            cfg.spill_dir.as_ref().map(std::path::PathBuf::from),
            cfg.spill_memory_bytes,
        );
        let mut committed = ctx.committed.clone();
        let mut heartbeat = cfg.heartbeat_interval.map(tokio::time::interval);
        if let Some(h) = heartbeat.as_mut() {
            h.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            h.tick().await;
        }
        let mut idle_lsn: u64 = 0;
        let mut stream_top: Option<u32> = None;
        let partition = cfg.partition();
        let result: Result<()> = async {
            loop {
                tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    changed = committed.changed() => {
                        if changed.is_err() { return Ok(()); }
                        let off = committed.borrow_and_update().clone();
                        if let Some(off) = off {
                            if off.partition == partition {
                                if let Some(lsn) = Resume::confirmable(&off.offset) {
                                    stream.confirm(lsn);
                                }
                            }
                        }
                    }
                    Some(sig) = signals.receiver.recv() => {
                        changes.signal(sig).await?;
                    }
                    _ = async { match heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending::<()>().await } } => {
                        if let Some(q) = &cfg.heartbeat_action_query {
                            if let Err(e) = catalog::run_action_query(changes.control(), q).await {
                                tracing::warn!("{e:#}");
                            }
                        }
                        if !changes.in_transaction() && spill.is_empty() {
                            changes.heartbeat(idle_lsn).await?;
                        }
                    }
                    msg = stream.recv() => {
                        match msg? {
                            ReplicationMessage::PrimaryKeepalive { wal_end, .. } => {
                                stream.set_received(wal_end);
                                if !changes.in_transaction() {
                                    idle_lsn = idle_lsn.max(wal_end);
                                    if spill.is_empty() {
                                        changes.advance(wal_end).await?;
                                    }
                                }
                            }
                            ReplicationMessage::XLogData { wal_start, wal_end, data, .. } => {
                                stream.set_received(wal_end);
                                let in_stream = decoder.in_stream();
                                let msg = decoder.decode(&data).map_err(|e| anyhow!(
                                    "undecodable pgoutput message at LSN {}: {e}", format_lsn(wal_start)))?;
                                use sluice_pgoutput::LogicalMessage as M;
                                match msg {
                                    M::StreamStart { xid, .. } => stream_top = Some(xid),
                                    M::StreamStop => stream_top = None,
                                    M::StreamAbort { xid, subxid, .. } => spill.abort(xid, subxid),
                                    M::StreamCommit { xid, commit_lsn, end_lsn, commit_ts, .. } => {
                                        changes.begin_streamed(xid, commit_lsn, commit_ts);
                                        let mut d = stream_decoder(protocol, xid)?;
                                        for item in spill.commit(xid).map_err(|e| anyhow!("reading spilled transaction {xid}: {e}"))? {
                                            let (lsn, bytes) = item.map_err(|e| anyhow!("reading spilled transaction {xid}: {e}"))?;
                                            let m = d.decode(&bytes).map_err(|e| anyhow!("undecodable spilled message at LSN {}: {e}", format_lsn(lsn)))?;
                                            changes.handle(lsn, m).await?;
                                        }
                                        changes.handle(end_lsn, M::Commit { flags: 0, commit_lsn, end_lsn, commit_ts }).await?;
                                    }
                                    _ if in_stream => {
                                        let xid = stream_top.ok_or_else(|| anyhow!(
                                            "streamed message outside a stream block at LSN {}", format_lsn(wal_start)))?;
                                        spill.push(xid, wal_start, &data).map_err(|e| anyhow!("spilling transaction {xid}: {e}"))?;
                                    }
                                    other => {
                                        if let M::Commit { end_lsn, .. } = &other {
                                            idle_lsn = idle_lsn.max(*end_lsn);
                                        }
                                        changes.handle(wal_start, other).await?;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        .await;
        changes.reset_connection_state();
        state.last_commit_end = changes.last_commit_end;
        state.resume = Some(changes.resume_point());
        state.incremental = changes.incremental_progress();
        state.empty = changes.empty_tables();
        stream.close().await;
        if let Err(e) = result {
            // PostgreSQL ends the stream of a slot it invalidates: the next
            // session finds it lost and acts on snapshot.mode.
            if let Ok(c) = cfg.conn.connect().await {
                if let Ok(Some(h)) = crate::checks::slot_health(&c, &cfg.slot_name).await {
                    if h.wal_status.as_deref() == Some("lost") {
                        return Err(sluice_core::error::transient(e.context(format!(
                            "replication slot {} was invalidated while streaming",
                            cfg.slot_name
                        ))));
                    }
                }
            }
            return Err(e);
        }
        result
    }
}
