//! Snapshot generations in ADX tables.
//!
//! ADX tables are append-only: a new snapshot of a table (after a lost
//! slot, `snapshot.mode=always`, a snapshot restarted after a crash) adds
//! its reads beside everything ingested before, including rows the source
//! has deleted since. So each queued batch of change events is tagged with
//! its topic partition's snapshot generation,
//! `drop-by:sluice/<topic>/<partition>/<generation>`, the generation being
//! the LSN of the latest snapshot the partition carried (`0` before any).
//!
//! - The tag is the marker of each generation in append tables:
//!   `T | where extent_tags() has "drop-by:sluice/<topic>/0/<lsn>"` reads
//!   one generation. A batch never mixes two generations.
//! - A partition whose first record after a start is a streamed change
//!   learns its generation from the table's own extents
//!   (`.show table T extents where tags contains ...`).
//! - With `kusto.snapshot.reconcile=true` (and the status check, so each
//!   batch is known to be in the table), once the batch that ends a
//!   table's snapshot (`source.snapshot` `last_in_data_collection` or
//!   `last`) is ingested, the partition's extents of older generations
//!   are dropped in one `.drop extents` command: the table then holds the
//!   snapshot and what streamed after it. Nothing is dropped for a
//!   snapshot some of whose records were skipped (`behavior.on.error`, a
//!   dead-letter queue): it is incomplete.
//! - With reconcile on, each batch holding streamed changes is also tagged
//!   with the highest LSN among them, `sluice-lsn:<lsn>` (off, no such
//!   metadata is kept for extents). It is not a `drop-by:` tag, so
//!   it does not keep a generation's extents apart; ADX gives a merged
//!   extent the union of its parts' tags, so an extent that holds a change
//!   streamed after LSN `L` carries an LSN tag above `L`, merged or not.
//! - A table the snapshot read without a row has no record to end its
//!   snapshot: the snapshot's final record (`last`, of another table)
//!   names its topic in the header `sluice.snapshot.empty.topics`. Once
//!   that record's batch is ingested, the extents of the topic's older
//!   generations, of any of its partitions, are dropped from the topic's
//!   table (one `.drop extents` per table), so the table is empty as the
//!   source's was. The topic's open batches are ingested first, or they
//!   would land after the drop. An older extent with an LSN tag above the
//!   snapshot's LSN holds a change made after the snapshot (its partition
//!   had not seen the snapshot yet, so it went under an older generation):
//!   it is kept, with a warning, and with it whatever rows of its own the
//!   source no longer has, until the topic's next snapshot. The tags are
//!   in ADX, so this holds whoever ingested the change and when: before a
//!   restart, or by another task of the connector. When this task itself
//!   took such a change under an older generation, the topic's older
//!   extents are all kept, with a warning. Nothing is dropped either when
//!   reads of the topic in that snapshot (or a later one) arrived, or when
//!   the snapshot is incomplete in the final record's partition. Either
//!   way the topic's partitions go on in the snapshot's generation (a
//!   partition not seen yet too), so what streams next is tagged with it
//!   and a later drop of older generations spares it.
//! - Restarts: the drops run before the batch's offsets can be committed,
//!   so a task stopped between the ingestion and the drops is given the
//!   ending record again, its batch is ingested again (skipped by ADX with
//!   `kusto.ingestion.dedup`) and the drops run then; what they already
//!   dropped is gone, what was tagged with the snapshot since stays, and
//!   so does every extent with an LSN tag above it. A partition of an
//!   emptied topic first seen after a restart learns its generation from
//!   extents: the newest left, `0` when none are, until its next
//!   snapshot. What it writes then carries LSN tags, so a later drop for
//!   an empty read weighs it as above.
//!
//! The `drop-by:` prefix is Kusto's convention for tags meant for
//! dropping: extents with different such tags are never merged together,
//! so a generation stays its own set of extents.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_core::record::{SinkRecord, SNAPSHOT_EMPTY_HEADER, SNAPSHOT_EMPTY_TOPICS_HEADER};

use crate::client::{quote_name, quote_string, ErrorKind, KustoClient, KustoError};

/// Every generation tag starts with this.
pub const TAG_PREFIX: &str = "drop-by:sluice/";

/// The tags of `topic`'s partitions start with this.
pub fn topic_prefix(topic: &str) -> String {
    format!("{TAG_PREFIX}{topic}/")
}

/// The tags of `topic`'s `partition` start with this.
pub fn partition_prefix(topic: &str, partition: i32) -> String {
    format!("{}{partition}/", topic_prefix(topic))
}

/// The topic names of the header `sluice.snapshot.empty.topics`, when
/// `r` carries it.
pub fn empty_topics(r: &SinkRecord) -> Option<Vec<String>> {
    let mut topics: Vec<String> = r
        .header_str(SNAPSHOT_EMPTY_TOPICS_HEADER)?
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    topics.sort();
    topics.dedup();
    Some(topics)
}

/// The snapshot that read `r`'s table without a row, when `r` is the
/// table's first change since (header `sluice.snapshot.empty`).
pub fn empty_generation(r: &SinkRecord) -> Option<i64> {
    r.header_str(SNAPSHOT_EMPTY_HEADER)?.trim().parse().ok()
}

/// The tag of one generation of a topic partition.
pub fn tag(topic: &str, partition: i32, generation: i64) -> String {
    format!("{}{generation}", partition_prefix(topic, partition))
}

/// Every LSN tag starts with this. Not a `drop-by:` tag: it must not keep
/// a generation's extents from merging.
pub const LSN_TAG_PREFIX: &str = "sluice-lsn:";

/// The tag of a batch whose streamed changes go up to `lsn`.
pub fn lsn_tag(lsn: i64) -> String {
    format!("{LSN_TAG_PREFIX}{lsn}")
}

type Tp = (Arc<str>, i32);

#[derive(Default)]
struct Part {
    /// The partition's generation: None until a record tells it.
    current: Option<i64>,
    /// The table's extents were asked for the generation (once per start).
    asked: bool,
    /// Generations some of whose records were not ingested.
    incomplete: HashSet<i64>,
    /// The highest LSN of a change streamed under `current`: a snapshot
    /// that read the table empty must not drop a change made after it.
    streamed: Option<i64>,
}

/// What a snapshot that read a topic's table without a row may do with
/// the topic's older generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emptied {
    /// Drop them.
    Drop,
    /// A partition carries reads of this snapshot or a later one: the
    /// snapshot's own records settle the table.
    Read {
        /// The partition.
        partition: i32,
        /// Its generation.
        generation: i64,
    },
    /// A change streamed after the snapshot was taken under an older
    /// generation: dropping would lose it.
    StreamedPast {
        /// The partition.
        partition: i32,
        /// The change's LSN.
        lsn: i64,
    },
}

/// Each topic partition's generation, as its records tell it.
#[derive(Default)]
pub struct Generations {
    parts: HashMap<Tp, Part>,
    /// Per topic, the latest snapshot that read its table without a row:
    /// a partition not seen before starts there, as its extents of older
    /// generations are gone.
    floors: HashMap<Arc<str>, i64>,
}

impl Generations {
    /// The partition's generation, when known.
    pub fn current(&self, tp: &Tp) -> Option<i64> {
        self.parts.get(tp).and_then(|p| p.current)
    }

    /// Whether the table's extents were already asked for the partition's
    /// generation.
    pub fn asked(&self, tp: &Tp) -> bool {
        self.parts.get(tp).is_some_and(|p| p.asked)
    }

    /// The partition's records from now on belong to `generation`
    /// (`asked`: learnt from the table, or there is nothing to ask).
    pub fn set(&mut self, tp: &Tp, generation: Option<i64>) {
        let p = self.parts.entry(tp.clone()).or_default();
        if p.current != generation {
            p.streamed = None;
        }
        p.current = generation;
        p.asked = true;
    }

    /// A change streamed at `lsn` belongs to the partition's current
    /// generation.
    pub fn note_streamed(&mut self, tp: &Tp, lsn: i64) {
        let p = self.parts.entry(tp.clone()).or_default();
        p.streamed = Some(p.streamed.map_or(lsn, |s| s.max(lsn)));
    }

    /// The generation a partition of `topic` not seen before starts from,
    /// at least.
    pub fn floor(&self, topic: &str) -> Option<i64> {
        self.floors.get(topic).copied()
    }

    /// Whether snapshot `generation`, which read `topic`'s table without a
    /// row, may drop the topic's older generations, from what this task
    /// was given.
    pub fn emptied(&self, topic: &str, generation: i64) -> Emptied {
        let mut parts: Vec<(i32, &Part)> = self
            .parts
            .iter()
            .filter(|((t, _), _)| t.as_ref() == topic)
            .map(|((_, partition), p)| (*partition, p))
            .collect();
        parts.sort_by_key(|(partition, _)| *partition);
        for (partition, p) in &parts {
            if let Some(g) = p.current.filter(|g| *g >= generation) {
                return Emptied::Read {
                    partition: *partition,
                    generation: g,
                };
            }
        }
        for (partition, p) in &parts {
            if let Some(lsn) = p.streamed.filter(|lsn| *lsn > generation) {
                return Emptied::StreamedPast {
                    partition: *partition,
                    lsn,
                };
            }
        }
        Emptied::Drop
    }

    /// `topic`'s partitions behind `generation` go on in it: a later
    /// batch is tagged with it, and a later snapshot weighs only what
    /// streamed since.
    pub fn advance(&mut self, topic: &str, generation: i64) {
        for ((t, _), p) in self.parts.iter_mut() {
            if t.as_ref() == topic && p.current.is_none_or(|g| g < generation) {
                p.current = Some(generation);
                p.asked = true;
                p.streamed = None;
            }
        }
        let floor = self.floors.entry(Arc::from(topic)).or_insert(generation);
        *floor = (*floor).max(generation);
    }

    /// Some record of `generation` of the partition did not reach the
    /// table.
    pub fn mark_incomplete(&mut self, tp: &Tp, generation: i64) {
        self.parts
            .entry(tp.clone())
            .or_default()
            .incomplete
            .insert(generation);
    }

    /// Whether some record of `generation` did not reach the table.
    pub fn is_incomplete(&self, tp: &Tp, generation: i64) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|p| p.incomplete.contains(&generation))
    }
}

/// The generations of `topic`'s `partition` present in the table:
/// (extent id, generation) for each of its tagged extents. A table that
/// does not exist has none.
pub async fn extents(
    engine: &KustoClient,
    db: &str,
    table: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<(String, i64)>, KustoError> {
    let prefix = partition_prefix(topic, partition);
    let csl = format!(
        ".show table {} extents where tags contains {}",
        quote_name(table),
        quote_string(&prefix)
    );
    let t = match engine.mgmt(db, &csl).await {
        Ok(t) => t,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for row in 0..t.rows.len() {
        let (Some(id), Some(tags)) = (t.get_str(row, "ExtentId"), t.get_str(row, "Tags")) else {
            continue;
        };
        // Tags are separated by line breaks; a tag never holds whitespace
        // (topic names cannot).
        let generation = tags
            .split_whitespace()
            .filter_map(|tag| tag.strip_prefix(prefix.as_str()))
            .find_map(|g| g.parse::<i64>().ok());
        if let Some(g) = generation {
            out.push((id.to_owned(), g));
        }
    }
    Ok(out)
}

/// One extent of a topic's older generations, as its tags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicExtent {
    /// The extent's id.
    pub id: String,
    /// The partition of its generation tag.
    pub partition: i32,
    /// Its generation.
    pub generation: i64,
    /// The highest LSN of its LSN tags: the latest change streamed into
    /// it (none when it holds only reads).
    pub lsn: Option<i64>,
}

/// What the `Tags` of an extent say about `topic`: None when it carries
/// no generation tag of the topic.
pub fn topic_extent(id: &str, tags: &str, topic: &str) -> Option<TopicExtent> {
    let prefix = topic_prefix(topic);
    // `contains` ignores case; topic names do not.
    let (partition, generation) = tags
        .split_whitespace()
        .filter_map(|tag| tag.strip_prefix(prefix.as_str()))
        .find_map(|rest| {
            let (p, g) = rest.split_once('/')?;
            Some((p.parse::<i32>().ok()?, g.parse::<i64>().ok()?))
        })?;
    // A merged extent carries the LSN tags of all its parts. One that
    // cannot be read counts as past any snapshot: keeping rows is the
    // side that loses nothing.
    let lsn = tags
        .split_whitespace()
        .filter_map(|tag| tag.strip_prefix(LSN_TAG_PREFIX))
        .map(|l| l.parse::<i64>().unwrap_or(i64::MAX))
        .max();
    Some(TopicExtent {
        id: id.to_owned(),
        partition,
        generation,
        lsn,
    })
}

/// Splits `topic`'s extents for snapshot `generation`, which read the
/// topic's table without a row: the ids of older generations to drop, and
/// the older extents to keep because they hold a change streamed after the
/// snapshot (an LSN tag above `generation`). Extents of `generation` or a
/// later one are in neither.
pub fn split_emptied(
    extents: Vec<TopicExtent>,
    generation: i64,
) -> (Vec<String>, Vec<TopicExtent>) {
    let mut drop = Vec::new();
    let mut keep = Vec::new();
    for e in extents.into_iter().filter(|e| e.generation < generation) {
        if e.lsn.is_some_and(|lsn| lsn > generation) {
            keep.push(e);
        } else {
            drop.push(e.id);
        }
    }
    (drop, keep)
}

/// `topic`'s extents in the table, of any partition, with their
/// generations and LSNs. A table that does not exist has none.
pub async fn topic_extents(
    engine: &KustoClient,
    db: &str,
    table: &str,
    topic: &str,
) -> Result<Vec<TopicExtent>, KustoError> {
    let csl = format!(
        ".show table {} extents where tags contains {}",
        quote_name(table),
        quote_string(&topic_prefix(topic))
    );
    let t = match engine.mgmt(db, &csl).await {
        Ok(t) => t,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok((0..t.rows.len())
        .filter_map(|row| topic_extent(t.get_str(row, "ExtentId")?, t.get_str(row, "Tags")?, topic))
        .collect())
}

/// Drops the table's extents `ids` in one command; returns how many.
pub async fn drop_extents(
    engine: &KustoClient,
    db: &str,
    table: &str,
    ids: &[String],
) -> Result<usize, KustoError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let csl = format!(
        ".drop extents ({}) from {}",
        ids.join(", "),
        quote_name(table)
    );
    engine.mgmt(db, &csl).await?;
    Ok(ids.len())
}

/// Drops the partition's extents of generations older than `generation`;
/// returns how many were dropped.
pub async fn drop_older(
    engine: &KustoClient,
    db: &str,
    table: &str,
    topic: &str,
    partition: i32,
    generation: i64,
) -> Result<usize, KustoError> {
    let older: Vec<String> = extents(engine, db, table, topic, partition)
        .await?
        .into_iter()
        .filter(|(_, g)| *g < generation)
        .map(|(id, _)| id)
        .collect();
    drop_extents(engine, db, table, &older).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_topic_partition_and_generation() {
        assert_eq!(
            tag("pg.public.orders", 3, 23_456_789),
            "drop-by:sluice/pg.public.orders/3/23456789"
        );
        assert!(tag("t", 0, 5).starts_with(&partition_prefix("t", 0)));
        // Partition 1's prefix is no prefix of partition 10's tags.
        assert!(!tag("t", 10, 5).starts_with(&partition_prefix("t", 1)));
    }

    #[test]
    fn incomplete_generations_are_kept_per_partition() {
        let mut g = Generations::default();
        let a: Tp = (Arc::from("t"), 0);
        let b: Tp = (Arc::from("t"), 1);
        assert_eq!(g.current(&a), None);
        assert!(!g.asked(&a));
        g.set(&a, Some(7));
        g.mark_incomplete(&a, 7);
        assert_eq!(g.current(&a), Some(7));
        assert!(g.asked(&a));
        assert!(g.is_incomplete(&a, 7) && !g.is_incomplete(&b, 7) && !g.is_incomplete(&a, 8));
    }

    #[test]
    fn an_empty_read_spares_changes_streamed_past_it_and_newer_reads() {
        let mut g = Generations::default();
        let a0: Tp = (Arc::from("a"), 0);
        let a1: Tp = (Arc::from("a"), 1);
        let other: Tp = (Arc::from("ab"), 0);
        assert_eq!(g.emptied("a", 200), Emptied::Drop);
        g.set(&a0, Some(100));
        g.note_streamed(&a0, 150);
        g.set(&other, Some(100));
        g.note_streamed(&other, 900);
        assert_eq!(g.emptied("a", 200), Emptied::Drop);
        g.set(&a1, Some(100));
        g.note_streamed(&a1, 250);
        g.note_streamed(&a1, 210);
        assert_eq!(
            g.emptied("a", 200),
            Emptied::StreamedPast {
                partition: 1,
                lsn: 250
            }
        );
        // A new generation starts its streamed changes afresh.
        g.set(&a1, Some(120));
        assert_eq!(g.emptied("a", 200), Emptied::Drop);
        g.set(&a1, Some(200));
        assert_eq!(
            g.emptied("a", 200),
            Emptied::Read {
                partition: 1,
                generation: 200
            }
        );
    }

    #[test]
    fn an_emptied_topic_goes_on_in_the_snapshots_generation() {
        let mut g = Generations::default();
        let a0: Tp = (Arc::from("a"), 0);
        let a1: Tp = (Arc::from("a"), 1);
        g.set(&a0, Some(100));
        g.note_streamed(&a0, 300);
        g.set(&a1, Some(400));
        g.advance("a", 200);
        assert_eq!(g.current(&a0), Some(200));
        assert_eq!(g.current(&a1), Some(400));
        assert_eq!(g.floor("a"), Some(200));
        assert_eq!(g.floor("b"), None);
        g.advance("a", 150);
        assert_eq!(g.floor("a"), Some(200));
        assert_eq!(g.current(&a0), Some(200));
        // What streamed before the move is no longer weighed.
        assert_eq!(
            g.emptied("a", 250),
            Emptied::Read {
                partition: 1,
                generation: 400
            }
        );
        g.set(&a1, Some(100));
        assert_eq!(g.emptied("a", 250), Emptied::Drop);
    }

    #[test]
    fn the_empty_topics_header_is_read_as_a_list() {
        let mut r = SinkRecord {
            topic: Arc::from("a"),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key_schema: None,
            key: None,
            value_schema: None,
            value: None,
            headers: Vec::new(),
        };
        assert_eq!(empty_topics(&r), None);
        r.headers.push(sluice_core::record::Header {
            key: SNAPSHOT_EMPTY_TOPICS_HEADER.to_owned(),
            value: Some(b"s.public.b,s.public.a,,s.public.b".to_vec()),
        });
        assert_eq!(
            empty_topics(&r),
            Some(vec!["s.public.a".to_owned(), "s.public.b".to_owned()])
        );
    }

    #[test]
    fn an_extents_tags_give_its_generation_and_latest_streamed_lsn() {
        let t = "myserver.public.b";
        let tags = format!(
            "ingest-by:{t}/1/4-9\r\n{}\r\n{}\r\n{}",
            tag(t, 1, 100),
            lsn_tag(150),
            lsn_tag(250)
        );
        assert_eq!(
            topic_extent("e1", &tags, t),
            Some(TopicExtent {
                id: "e1".to_owned(),
                partition: 1,
                generation: 100,
                lsn: Some(250),
            })
        );
        let reads = tag(t, 0, 100);
        assert_eq!(topic_extent("e2", &reads, t).map(|e| e.lsn), Some(None));
        let odd = format!("{}\r\n{LSN_TAG_PREFIX}x", tag(t, 0, 100));
        assert_eq!(
            topic_extent("e3", &odd, t).map(|e| e.lsn),
            Some(Some(i64::MAX))
        );
        // Another topic's generation, or another case of the name.
        assert_eq!(
            topic_extent("e4", &tag("myserver.public.bb", 0, 1), t),
            None
        );
        assert_eq!(topic_extent("e5", &tag("MYSERVER.public.b", 0, 1), t), None);
    }

    #[test]
    fn an_empty_read_drops_older_extents_but_those_streamed_past_it() {
        let e = |id: &str, generation: i64, lsn: Option<i64>| TopicExtent {
            id: id.to_owned(),
            partition: 0,
            generation,
            lsn,
        };
        let (drop, keep) = split_emptied(
            vec![
                e("reads", 100, None),
                e("before", 100, Some(150)),
                e("at", 100, Some(200)),
                e("after", 100, Some(250)),
                e("same", 200, None),
                e("later", 300, Some(350)),
            ],
            200,
        );
        assert_eq!(drop, ["reads", "before", "at"]);
        assert_eq!(keep, [e("after", 100, Some(250))]);
    }
}
