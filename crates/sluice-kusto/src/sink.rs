//! The Kusto sink task.
//!
//! Records are serialized into one batch per topic partition, in the
//! mapping's format. A batch is closed when it reaches `flush.size.bytes`
//! (uncompressed) or is `flush.interval.ms` old, gzipped, and ingested:
//! queued by default (blob + queue message), or streamed to the engine for
//! `'streaming': true` mappings, falling back to queued ingestion when the
//! engine cannot stream it. The task batches itself: the worker commits a
//! partition's offsets only up to the last record of a batch ADX accepted
//! (queued: the queue message is posted; with
//! `kusto.ingestion.status.check=true`, the ingestion reported success).
//!
//! Failures of a batch are retried with exponential backoff and jitter
//! while they are transient (throttling, 5xx, network), for at most
//! `errors.retry.max.time.ms`; then `behavior.on.error` decides: `fail`
//! stops the task (nothing of the batch is committed, so it is delivered
//! again), `log` and `ignore` go on after writing the batch's records to the
//! misc dead-letter queue when one is configured. A record that cannot be
//! serialized goes to the errors dead-letter queue, or is handled by
//! `behavior.on.error` when there is none.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;
use sluice_core::connector::{PartitionOffset, SinkContext, SinkTask};
use sluice_core::generation::{self as snapshot_generation, Place};
use sluice_core::record::{Record, SinkRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::{KustoClient, KustoError};
use crate::config::{
    BehaviorOnError, KustoConfig, TopicMapping, ERRORS_DLQ_PREFIX, MISC_DLQ_PREFIX,
};
use crate::dlq::DeadLetters;
use crate::format::BatchEncoder;
use crate::generations::{self, Generations};
use crate::journal::Journal;
use crate::queued::{IngestionStatus, QueuedBatch, QueuedIngestor};
use crate::streaming;
use crate::tables::TableMaker;

/// The first retry waits this long; each next one twice as long, up to
/// `errors.retry.backoff.time.ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

type Tp = (Arc<str>, i32);

/// One topic partition's open batch.
struct Batch {
    mapping: TopicMapping,
    encoder: BatchEncoder,
    first: Option<i64>,
    last: i64,
    opened: Instant,
    /// The records, kept only when a misc dead-letter queue may need them.
    records: Vec<SinkRecord>,
    /// With dedup: the journaled range a replayed batch must cover exactly.
    replay: Option<(i64, i64)>,
    /// The snapshot generation of its records (see [`generations`]).
    generation: Option<i64>,
    /// The generation whose table snapshot its last read ends.
    ends_snapshot: Option<i64>,
    /// The topics whose tables that snapshot read without a row (the
    /// header of the snapshot's final record).
    empty_topics: Vec<String>,
    /// The highest LSN of its streamed changes.
    streamed_lsn: Option<i64>,
}

/// The outcome of the start-up checks, shared with the task.
type Checks = watch::Receiver<Option<Result<(), String>>>;

/// The Kusto sink task.
pub struct KustoSinkTask {
    cfg: Arc<KustoConfig>,
    ctx: SinkContext,
    engine: KustoClient,
    queued: QueuedIngestor,
    batches: HashMap<Tp, Batch>,
    /// Last offset given per topic partition.
    given: HashMap<Tp, i64>,
    /// Encoders of closed batches, reused per topic partition: like the
    /// official connector's writer, an encoder keeps the form its first
    /// record chose.
    spare: HashMap<Tp, BatchEncoder>,
    /// First offset of a batch that failed for good (behavior.on.error=
    /// fail): nothing from there on is ever reported durable.
    failed: HashMap<Tp, i64>,
    journal: Option<Journal>,
    errors_dlq: Option<DeadLetters>,
    misc_dlq: Option<DeadLetters>,
    dlq_ready: bool,
    tables: TableMaker,
    generations: Generations,
    checks: Checks,
    checked: bool,
}

impl KustoSinkTask {
    /// A task for `cfg`. Start-up checks run in the background at once;
    /// the first `put` waits for them and fails the task with their fix.
    pub fn new(cfg: KustoConfig, ctx: SinkContext) -> Result<KustoSinkTask> {
        Self::with_env(cfg, ctx, &crate::auth::AzureEnv::from_process())
    }

    /// A task whose Azure AD endpoints and workload identity settings come
    /// from `env` instead of the process environment.
    pub fn with_env(
        cfg: KustoConfig,
        ctx: SinkContext,
        env: &crate::auth::AzureEnv,
    ) -> Result<KustoSinkTask> {
        let cfg = Arc::new(cfg);
        let (engine, dm) = crate::connect_clients(&cfg, env)?;
        let queued = QueuedIngestor::new(dm).with_status_reporting(cfg.status_check);
        let journal = if cfg.dedup {
            let dir = cfg
                .temp_dir
                .join("sluice-kusto")
                .join(file_safe(&ctx.connector))
                .join(format!("task-{}", ctx.task_id));
            Some(Journal::open(&dir)?)
        } else {
            None
        };
        let (tx, rx) = watch::channel(None);
        {
            let cfg = Arc::clone(&cfg);
            let engine = engine.clone();
            let queued = queued.clone();
            let name = ctx.connector.clone();
            tokio::spawn(async move {
                let outcome = match crate::tables::validate(&cfg, &engine, &queued).await {
                    Ok(warnings) => {
                        for w in warnings {
                            tracing::warn!("sink connector '{name}': {w}");
                        }
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!("sink connector '{name}': {e:#}");
                        Err(format!("{e:#}"))
                    }
                };
                let _ = tx.send(Some(outcome));
            });
        }
        Ok(KustoSinkTask {
            cfg,
            ctx,
            engine,
            queued,
            batches: HashMap::new(),
            given: HashMap::new(),
            spare: HashMap::new(),
            failed: HashMap::new(),
            journal,
            errors_dlq: None,
            misc_dlq: None,
            dlq_ready: false,
            tables: TableMaker::default(),
            generations: Generations::default(),
            checks: rx,
            checked: false,
        })
    }

    async fn ready(&mut self) -> Result<()> {
        if !self.checked {
            let outcome = self
                .checks
                .wait_for(Option::is_some)
                .await
                .map_err(|_| anyhow!("the start-up checks stopped before they finished"))?
                .clone();
            if let Some(Err(e)) = outcome {
                return Err(anyhow!("{e}"));
            }
            self.checked = true;
        }
        if !self.dlq_ready {
            if let Some(d) = &self.cfg.errors_dlq {
                if d.bootstrap_servers.is_some() {
                    self.errors_dlq = Some(DeadLetters::connect(d, ERRORS_DLQ_PREFIX).await?);
                }
            }
            if let Some(d) = &self.cfg.misc_dlq {
                self.misc_dlq = Some(DeadLetters::connect(d, MISC_DLQ_PREFIX).await?);
            }
            self.dlq_ready = true;
        }
        Ok(())
    }

    /// A record as bytes again, written with the connector's converters,
    /// for a dead-letter queue (what cannot be written shows as null).
    fn serialized(&self, r: &SinkRecord) -> Record {
        Record {
            topic: Arc::clone(&r.topic),
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: self
                .ctx
                .key_converter
                .from_connect(&r.topic, r.key_schema.as_deref(), r.key.as_ref())
                .ok()
                .flatten(),
            value: self
                .ctx
                .value_converter
                .from_connect(&r.topic, r.value_schema.as_deref(), r.value.as_ref())
                .ok()
                .flatten(),
            headers: r.headers.clone(),
        }
    }

    /// A record the sink cannot write: the errors dead-letter queue takes
    /// it, or `behavior.on.error` decides.
    async fn reject(&mut self, record: &SinkRecord, why: String) -> Result<()> {
        if let Some(d) = &self.errors_dlq {
            d.send(
                std::slice::from_ref(&self.serialized(record)),
                &self.ctx.connector,
                self.ctx.task_id,
                &why,
            )
            .await?;
            tracing::warn!(
                "sink connector '{}': {why}; the record went to the dead-letter queue",
                self.ctx.connector
            );
            return Ok(());
        }
        match self.cfg.behavior_on_error {
            BehaviorOnError::Fail => Err(anyhow!(
                "{why}. Set errors.deadletterqueue.bootstrap.servers and errors.deadletterqueue.topic.name to keep such records aside, or behavior.on.error=log to skip them"
            )),
            BehaviorOnError::Log => {
                tracing::error!(
                    "sink connector '{}': {why}; skipped (behavior.on.error=log)",
                    self.ctx.connector
                );
                Ok(())
            }
            BehaviorOnError::Ignore => {
                tracing::warn!(
                    "sink connector '{}': {why}; skipped (behavior.on.error=ignore)",
                    self.ctx.connector
                );
                Ok(())
            }
        }
    }

    fn new_batch(
        &mut self,
        mapping: &TopicMapping,
        tp: &Tp,
        offset: i64,
        generation: Option<i64>,
    ) -> Result<Batch> {
        let replay = match &mut self.journal {
            Some(j) => j.range_of(&tp.0, tp.1, offset)?,
            None => None,
        };
        let encoder = match self.spare.remove(tp) {
            Some(e) => e,
            None => {
                BatchEncoder::new(&mapping.format).map_err(|e| anyhow!("topic '{}': {e}", tp.0))?
            }
        };
        Ok(Batch {
            mapping: mapping.clone(),
            encoder,
            first: None,
            last: offset,
            opened: Instant::now(),
            records: Vec::new(),
            replay,
            generation,
            ends_snapshot: None,
            empty_topics: Vec::new(),
            streamed_lsn: None,
        })
    }

    /// The snapshot generation `r` belongs to, for a queued mapping: a
    /// read names it; a change streamed first after a start learns it
    /// from the table's extents. A new generation closes the partition's
    /// open batch first, so a batch holds one generation.
    async fn generation_of(
        &mut self,
        r: &SinkRecord,
        tp: &Tp,
        mapping: &TopicMapping,
        place: Option<Place<'_>>,
    ) -> Result<Option<i64>> {
        if mapping.streaming {
            return Ok(None);
        }
        match place {
            Some(Place::Read { generation, .. })
                if self.generations.current(tp) != Some(generation) =>
            {
                tracing::info!(
                    "sink connector '{}': snapshot {generation} of topic '{}' partition {} begins (offset {}); its batches are tagged '{}'",
                    self.ctx.connector,
                    tp.0,
                    tp.1,
                    r.offset,
                    generations::tag(&tp.0, tp.1, generation)
                );
                self.generations.set(tp, Some(generation));
            }
            Some(Place::Streamed { .. }) if !self.generations.asked(tp) => {
                let known =
                    generations::extents(&self.engine, &mapping.db, &mapping.table, &tp.0, tp.1)
                        .await;
                match known {
                    Ok(found) => {
                        let g = found
                            .iter()
                            .map(|(_, g)| *g)
                            .chain(self.generations.floor(&tp.0))
                            .max()
                            .unwrap_or(0);
                        self.generations.set(tp, Some(g));
                    }
                    Err(e) if self.cfg.reconcile => {
                        return Err(anyhow!(e).context(format!(
                            "{}: reading the snapshot generation of topic '{}' partition {} from the extents of table '{}' in database '{}'. Fix: grant the principal viewer rights on the database, or set {}=false",
                            crate::config::SNAPSHOT_RECONCILE,
                            tp.0,
                            tp.1,
                            mapping.table,
                            mapping.db,
                            crate::config::SNAPSHOT_RECONCILE
                        )))
                    }
                    Err(e) => {
                        tracing::warn!(
                            "sink connector '{}': the snapshot generation of topic '{}' partition {} could not be read from table '{}' ({e}); its batches are not tagged with one until its next snapshot",
                            self.ctx.connector,
                            tp.0,
                            tp.1,
                            mapping.table
                        );
                        self.generations.set(tp, None);
                    }
                }
            }
            _ => {}
        }
        if let Some(Place::Streamed { lsn }) = place {
            self.generations.note_streamed(tp, lsn);
        }
        let generation = self.generations.current(tp);
        if self
            .batches
            .get(tp)
            .is_some_and(|b| b.first.is_some() && b.generation != generation)
        {
            self.ingest(tp).await?;
        }
        Ok(generation)
    }

    /// A record that belongs to `tp`'s current generation is not in the
    /// table: that generation's snapshot can no longer reconcile it.
    fn lost_from_generation(&mut self, tp: &Tp) {
        if let Some(g) = self.generations.current(tp) {
            self.generations.mark_incomplete(tp, g);
        }
    }

    /// After the batch that ends `generation`'s snapshot of `tp` is in
    /// the table: drops the partition's older generations, and those of
    /// the topics the snapshot read without a row.
    async fn reconcile(
        &mut self,
        tp: &Tp,
        mapping: &TopicMapping,
        generation: i64,
        empty_topics: &[String],
    ) -> Result<()> {
        if self.generations.is_incomplete(tp, generation) {
            tracing::warn!(
                "sink connector '{}': snapshot {generation} of topic '{}' partition {} is complete, but some of its records did not reach table '{}' (behavior.on.error or a dead-letter queue); older generations are kept ({})",
                self.ctx.connector,
                tp.0,
                tp.1,
                mapping.table,
                crate::config::SNAPSHOT_RECONCILE
            );
            for topic in empty_topics {
                self.generations.advance(topic, generation);
            }
            return Ok(());
        }
        let dropped = generations::drop_older(
            &self.engine,
            &mapping.db,
            &mapping.table,
            &tp.0,
            tp.1,
            generation,
        )
        .await
        .map_err(|e| {
            anyhow!(e).context(format!(
                "{}: dropping the extents of topic '{}' partition {} older than snapshot {generation} from table '{}' in database '{}' (the principal needs table admin rights)",
                crate::config::SNAPSHOT_RECONCILE,
                tp.0,
                tp.1,
                mapping.table,
                mapping.db
            ))
        })?;
        self.ctx.telemetry.plugin.add(
            "kusto_reconcile_dropped_extents",
            "Extents of older snapshot generations dropped (kusto.snapshot.reconcile)",
            dropped as f64,
        );
        tracing::info!(
            "sink connector '{}': snapshot {generation} of topic '{}' partition {} is complete in table '{}': {dropped} extent(s) of older generations dropped",
            self.ctx.connector,
            tp.0,
            tp.1,
            mapping.table
        );
        self.empty(generation, empty_topics).await
    }

    /// Snapshot `generation` read the tables of `topics` without a row:
    /// drops their older generations, one command per table.
    async fn empty(&mut self, generation: i64, topics: &[String]) -> Result<()> {
        // (db, table) -> topics, in the order first named.
        let mut tables: Vec<((String, String), Vec<String>)> = Vec::new();
        for topic in topics {
            let Some(mapping) = self.cfg.mapping_for(topic).cloned() else {
                tracing::debug!(
                    "sink connector '{}': snapshot {generation} read topic '{topic}' without a row; this connector maps no table to it",
                    self.ctx.connector
                );
                continue;
            };
            if mapping.streaming {
                continue;
            }
            match self.generations.emptied(topic, generation) {
                generations::Emptied::Drop => {}
                generations::Emptied::Read {
                    partition,
                    generation: g,
                } => {
                    tracing::info!(
                        "sink connector '{}': snapshot {generation} read topic '{topic}' without a row, but its partition {partition} is already in generation {g}; nothing of table '{}' is dropped for it",
                        self.ctx.connector,
                        mapping.table
                    );
                    continue;
                }
                generations::Emptied::StreamedPast { partition, lsn } => {
                    tracing::warn!(
                        "sink connector '{}': snapshot {generation} read topic '{topic}' without a row, but a change streamed after it (LSN {lsn}, partition {partition}) was already taken under an older generation; the older generations of table '{}' are kept, rows the source no longer has included, until the topic's next snapshot ({})",
                        self.ctx.connector,
                        mapping.table,
                        crate::config::SNAPSHOT_RECONCILE
                    );
                    self.generations.advance(topic, generation);
                    continue;
                }
            }
            // An open batch of an older generation would land after the
            // drop and keep rows the snapshot says are gone.
            let open: Vec<Tp> = self
                .batches
                .keys()
                .filter(|(t, _)| t.as_ref() == topic.as_str())
                .cloned()
                .collect();
            for open_tp in open {
                self.ingest_boxed(&open_tp).await?;
            }
            self.generations.advance(topic, generation);
            let key = (mapping.db.clone(), mapping.table.clone());
            match tables.iter_mut().find(|(k, _)| *k == key) {
                Some((_, ts)) => ts.push(topic.clone()),
                None => tables.push((key, vec![topic.clone()])),
            }
        }
        for ((db, table), topics) in tables {
            let what = || {
                format!(
                    "{}: dropping the extents of topic(s) '{}' older than snapshot {generation}, which read them without a row, from table '{table}' in database '{db}' (the principal needs table admin rights)",
                    crate::config::SNAPSHOT_RECONCILE,
                    topics.join("', '")
                )
            };
            let mut ids = Vec::new();
            for topic in &topics {
                let found = generations::topic_extents(&self.engine, &db, &table, topic)
                    .await
                    .map_err(|e| anyhow!(e).context(what()))?;
                let (older, kept) = generations::split_emptied(found, generation);
                ids.extend(older);
                if let Some(lsn) = kept.iter().filter_map(|e| e.lsn).max() {
                    tracing::warn!(
                        "sink connector '{}': snapshot {generation} read topic '{topic}' without a row, but {} extent(s) of its older generations in table '{table}' hold changes streamed after it (up to LSN {lsn}); they are kept, with any rows of theirs the source no longer has, until the topic's next snapshot ({})",
                        self.ctx.connector,
                        kept.len(),
                        crate::config::SNAPSHOT_RECONCILE
                    );
                }
            }
            let dropped = generations::drop_extents(&self.engine, &db, &table, &ids)
                .await
                .map_err(|e| anyhow!(e).context(what()))?;
            self.ctx.telemetry.plugin.add(
                "kusto_reconcile_dropped_extents",
                "Extents of older snapshot generations dropped (kusto.snapshot.reconcile)",
                dropped as f64,
            );
            tracing::info!(
                "sink connector '{}': snapshot {generation} read topic(s) '{}' without a row: {dropped} extent(s) of their older generations dropped from table '{table}'",
                self.ctx.connector,
                topics.join("', '")
            );
        }
        Ok(())
    }

    /// [`Self::ingest`] behind a pointer: the drops after one batch may
    /// ingest another first.
    fn ingest_boxed<'a>(
        &'a mut self,
        tp: &'a Tp,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.ingest(tp))
    }

    async fn put_one(&mut self, r: &SinkRecord) -> Result<()> {
        let tp: Tp = (Arc::clone(&r.topic), r.partition);
        self.given.insert(tp.clone(), r.offset);
        let Some(mapping) = self.cfg.mapping_for(&r.topic).cloned() else {
            let why = format!(
                "record {}/{}@{}: no entry of kusto.tables.topics.mapping for topic '{}' (add one, or a '*' entry)",
                r.topic, r.partition, r.offset, r.topic
            );
            return self.reject(r, why).await;
        };
        if self.cfg.create_tables {
            if let Some(schema) = crate::schema::value_schema(r) {
                self.tables.ensure(&self.engine, &mapping, &schema).await?;
            }
        }
        let place = match (&r.value_schema, &r.value) {
            (Some(s), Some(v)) => snapshot_generation::place(s, v),
            _ => None,
        };
        if self.cfg.reconcile && !matches!(place, Some(Place::Read { .. })) {
            // The table's first change since a snapshot that read it
            // without a row: that snapshot may have had no last record, or
            // it went to a topic this task does not read.
            if let Some(g) = generations::empty_generation(r) {
                self.empty(g, &[r.topic.to_string()]).await?;
            }
        }
        let generation = self.generation_of(r, &tp, &mapping, place).await?;
        // A replayed batch ends exactly where the journal says; a record
        // past it starts the next batch.
        if let Some(b) = self.batches.get(&tp) {
            if b.replay.is_some_and(|(_, last)| r.offset > last) {
                self.ingest(&tp).await?;
            }
        }
        if !self.batches.contains_key(&tp) {
            let b = self.new_batch(&mapping, &tp, r.offset, generation)?;
            self.batches.insert(tp.clone(), b);
        }
        let keep = self.misc_dlq.is_some();
        let pushed = {
            let b = self.batches.get_mut(&tp).context("batch vanished")?;
            b.encoder.push(r)
        };
        if let Err(e) = pushed {
            self.lost_from_generation(&tp);
            return self.reject(r, e.to_string()).await;
        }
        let b = self.batches.get_mut(&tp).context("batch vanished")?;
        match place {
            Some(Place::Read { generation, marker }) if snapshot_generation::ends_table(marker) => {
                b.ends_snapshot = Some(generation);
                if let Some(topics) = generations::empty_topics(r) {
                    b.empty_topics = topics;
                }
            }
            Some(Place::Streamed { lsn }) => {
                b.streamed_lsn = Some(b.streamed_lsn.map_or(lsn, |l| l.max(lsn)));
            }
            _ => {}
        }
        if b.first.is_none() {
            b.first = Some(r.offset);
            b.opened = Instant::now();
        }
        b.last = r.offset;
        if keep {
            b.records.push(r.clone());
        }
        let full = match b.replay {
            Some((_, last)) => r.offset >= last,
            None => b.encoder.len_bytes() as u64 >= self.cfg.flush_size_bytes,
        };
        if full {
            self.ingest(&tp).await?;
        }
        Ok(())
    }

    /// Closes and ingests `tp`'s batch.
    async fn ingest(&mut self, tp: &Tp) -> Result<()> {
        let Some(mut b) = self.batches.remove(tp) else {
            return Ok(());
        };
        let Some(first) = b.first else {
            self.spare.insert(tp.clone(), b.encoder);
            return Ok(());
        };
        let last = b.last;
        let records = b.encoder.records();
        let raw = b.encoder.finish().map_err(|e| {
            anyhow!(
                "closing the batch of topic '{}' partition {}: {e}",
                tp.0,
                tp.1
            )
        })?;
        let kusto_format = b.encoder.kusto_format();
        self.spare.insert(tp.clone(), b.encoder);
        if raw.is_empty() {
            return Ok(());
        }
        let raw_size = raw.len();
        let gz = gzip(&raw).context("compressing a batch")?;
        drop(raw);
        let m = &b.mapping;
        // The tag names the exact offsets; a replay covers the same ones.
        let (tag_first, tag_last) = b.replay.unwrap_or((first, last));
        let dedup_value = format!("{}/{}/{}-{}", tp.0, tp.1, tag_first, tag_last);
        if let Some(j) = &mut self.journal {
            j.record(&tp.0, tp.1, tag_first, tag_last)?;
        }
        let what = format!(
            "batch of {records} record(s) of topic '{}' partition {} (offsets {first}..{last}) to table '{}' in database '{}'",
            tp.0, tp.1, m.table, m.db
        );
        let queued_batch = QueuedBatch {
            db: m.db.clone(),
            table: m.table.clone(),
            format: kusto_format.to_string(),
            mapping: m.mapping.clone(),
            gzipped: Bytes::from(gz),
            raw_size: raw_size as u64,
            tags: {
                let mut tags = Vec::new();
                if self.cfg.dedup {
                    tags.push(format!("ingest-by:{dedup_value}"));
                }
                if let Some(g) = b.generation {
                    tags.push(generations::tag(&tp.0, tp.1, g));
                }
                // Kept in ADX, the LSN outlives this task: a snapshot that
                // read the table empty spares the extent when the change is
                // younger than the snapshot, whoever ingested it and when.
                // Only with reconcile on: every such tag is extent metadata
                // that merged extents carry along.
                if let Some(lsn) = b.streamed_lsn.filter(|_| self.cfg.reconcile) {
                    tags.push(generations::lsn_tag(lsn));
                }
                tags
            },
            ingest_if_not_exists: if self.cfg.dedup {
                vec![dedup_value.clone()]
            } else {
                Vec::new()
            },
            blob_name_hint: format!("{}__{}__{}__{}__{first}-{last}", m.db, m.table, tp.0, tp.1),
        };
        let outcome = self.deliver(&queued_batch, m.streaming, &what).await;
        match outcome {
            Ok(streamed) => {
                tracing::debug!("sink connector '{}': ingested {what}", self.ctx.connector);
                crate::metrics::note_batch(&self.ctx.connector, records as u64, raw_size as u64);
                let p = &self.ctx.telemetry.plugin;
                p.add("kusto_batches", "Batches ADX accepted", 1.0);
                if streamed {
                    p.add(
                        "kusto_streaming_batches",
                        "Batches sent by streaming ingestion",
                        1.0,
                    );
                } else {
                    p.add(
                        "kusto_queued_batches",
                        "Batches sent by queued ingestion (blob and queue message)",
                        1.0,
                    );
                }
                p.add(
                    "kusto_records",
                    "Records in the batches ADX accepted",
                    records as f64,
                );
                p.add(
                    "kusto_bytes",
                    "Uncompressed bytes of the batches ADX accepted",
                    raw_size as f64,
                );
                p.add(
                    "kusto_gzipped_bytes",
                    "Bytes sent for the batches ADX accepted (gzip)",
                    queued_batch.gzipped.len() as f64,
                );
                match b.ends_snapshot {
                    Some(g) if self.cfg.reconcile && !streamed => {
                        self.reconcile(tp, &b.mapping, g, &b.empty_topics).await
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => {
                if let Some(g) = b.generation {
                    self.generations.mark_incomplete(tp, g);
                }
                let outcome = self.batch_failed(&what, e, &mut b.records).await;
                if outcome.is_err() {
                    let f = self.failed.entry(tp.clone()).or_insert(first);
                    *f = (*f).min(first);
                }
                outcome
            }
        }
    }

    async fn batch_failed(
        &mut self,
        what: &str,
        e: anyhow::Error,
        records: &mut Vec<SinkRecord>,
    ) -> Result<()> {
        self.ctx.telemetry.plugin.add(
            "kusto_failed_batches",
            "Batches that failed for good (after retries, or permanently)",
            1.0,
        );
        let why = format!("ingesting the {what} failed: {e:#}");
        match self.cfg.behavior_on_error {
            BehaviorOnError::Fail => Err(anyhow!(
                "{why}. Nothing of it is committed: it is delivered again when the task restarts (behavior.on.error=fail)"
            )),
            behavior => {
                let to_dlq = match &self.misc_dlq {
                    Some(d) => {
                        let serialized: Vec<Record> =
                            records.iter().map(|r| self.serialized(r)).collect();
                        d.send(&serialized, &self.ctx.connector, self.ctx.task_id, &why)
                            .await?;
                        " and its records went to the misc dead-letter queue"
                    }
                    None => "; no misc.deadletterqueue.* is set, so its records are only in Kafka",
                };
                if behavior == BehaviorOnError::Log {
                    tracing::error!("sink connector '{}': {why}{to_dlq} (behavior.on.error=log)", self.ctx.connector);
                } else {
                    tracing::warn!("sink connector '{}': {why}{to_dlq} (behavior.on.error=ignore)", self.ctx.connector);
                }
                crate::metrics::note_failed_batch(&self.ctx.connector);
                records.clear();
                Ok(())
            }
        }
    }

    /// Sends one batch, retrying transient failures within
    /// `errors.retry.max.time.ms`; true when it went by streaming
    /// ingestion.
    async fn deliver(&self, batch: &QueuedBatch, streaming: bool, what: &str) -> Result<bool> {
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut stream = streaming && batch.raw_size as usize <= streaming::STREAMING_MAX_BYTES;
        if streaming && !stream {
            tracing::info!(
                "sink connector '{}': the {what} is over the streaming limit ({} bytes): sent queued",
                self.ctx.connector,
                streaming::STREAMING_MAX_BYTES
            );
        }
        loop {
            attempt += 1;
            let result = if stream {
                match streaming::ingest_streaming(
                    &self.engine,
                    &batch.db,
                    &batch.table,
                    &batch.format,
                    batch.mapping.as_deref(),
                    batch.gzipped.clone(),
                    batch.raw_size as usize,
                )
                .await
                {
                    Err(e) if streaming::falls_back_to_queued(&e) => {
                        tracing::warn!(
                            "sink connector '{}': streaming the {what} failed ({e}); falling back to queued ingestion",
                            self.ctx.connector
                        );
                        stream = false;
                        continue;
                    }
                    other => other,
                }
            } else {
                self.post_queued(batch).await
            };
            let err = match result {
                Ok(()) => return Ok(stream),
                Err(e) => e,
            };
            if !err.is_retriable() {
                return Err(anyhow!(err).context(format!("permanent error (attempt {attempt})")));
            }
            let cap = self.cfg.retry_backoff.max(FIRST_BACKOFF);
            let exp = FIRST_BACKOFF
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(cap);
            // Full jitter in the upper half: spread retries of many tasks.
            let jittered = exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            let delay = err.retry_after.map_or(jittered, |r| r.max(jittered));
            if started.elapsed() + delay > self.cfg.retry_max_time {
                return Err(anyhow!(err).context(format!(
                    "gave up after {attempt} attempt(s) in {} ms (errors.retry.max.time.ms={})",
                    started.elapsed().as_millis(),
                    self.cfg.retry_max_time.as_millis()
                )));
            }
            self.ctx.telemetry.plugin.add(
                "kusto_retries",
                "Ingestion attempts retried after a transient failure",
                1.0,
            );
            tracing::warn!(
                "sink connector '{}': the {what} failed (attempt {attempt}): {err}; retrying in {} ms",
                self.ctx.connector,
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn post_queued(&self, batch: &QueuedBatch) -> Result<(), KustoError> {
        let posted = self.queued.ingest(batch).await?;
        if !self.cfg.status_check {
            return Ok(());
        }
        match self
            .queued
            .wait_for_status(&posted, self.cfg.retry_max_time)
            .await?
        {
            IngestionStatus::Succeeded | IngestionStatus::Skipped => Ok(()),
            IngestionStatus::Failed { details, permanent } => Err(KustoError {
                kind: if permanent {
                    crate::client::ErrorKind::Permanent
                } else {
                    crate::client::ErrorKind::Transient
                },
                status: None,
                message: details,
                what: format!(
                    "ingestion {} (kusto.ingestion.status.check)",
                    posted.ingestion_id
                ),
                retry_after: None,
            }),
            IngestionStatus::Pending => Err(KustoError {
                kind: crate::client::ErrorKind::Permanent,
                status: None,
                message: format!(
                    "no final status within {} ms",
                    self.cfg.retry_max_time.as_millis()
                ),
                what: format!(
                    "ingestion {} (kusto.ingestion.status.check)",
                    posted.ingestion_id
                ),
                retry_after: None,
            }),
        }
    }
}

#[async_trait]
impl SinkTask for KustoSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> Result<()> {
        self.ready().await?;
        for r in records {
            self.put_one(r).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batches.is_empty() {
            return Ok(());
        }
        self.ready().await?;
        let tps: Vec<Tp> = self.batches.keys().cloned().collect();
        for tp in tps {
            self.ingest(&tp).await?;
        }
        Ok(())
    }

    fn batches_itself(&self) -> bool {
        true
    }

    async fn pre_commit(&mut self) -> Result<Vec<PartitionOffset>> {
        let interval = self.cfg.flush_interval;
        let due: Vec<Tp> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                let age = b.opened.elapsed();
                // A replayed batch waits for the rest of its range, but not
                // forever: records can be gone (retention).
                match b.replay {
                    Some(_) => age >= interval * 2,
                    None => age >= interval,
                }
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.ingest(&tp).await?;
        }
        Ok(self
            .given
            .iter()
            .map(|(tp, given)| {
                let mut durable = match self.batches.get(tp).and_then(|b| b.first) {
                    Some(first) => first - 1,
                    None => *given,
                };
                if let Some(f) = self.failed.get(tp) {
                    durable = durable.min(f - 1);
                }
                PartitionOffset {
                    topic: Arc::clone(&tp.0),
                    partition: tp.1,
                    offset: durable,
                }
            })
            .collect())
    }

    async fn stop(&mut self) -> Result<()> {
        Ok(())
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
