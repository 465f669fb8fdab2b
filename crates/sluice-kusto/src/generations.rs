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
//!
//! The `drop-by:` prefix is Kusto's convention for tags meant for
//! dropping: extents with different such tags are never merged together,
//! so a generation stays its own set of extents.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::client::{quote_name, quote_string, ErrorKind, KustoClient, KustoError};

/// Every generation tag starts with this.
pub const TAG_PREFIX: &str = "drop-by:sluice/";

/// The tags of `topic`'s `partition` start with this.
pub fn partition_prefix(topic: &str, partition: i32) -> String {
    format!("{TAG_PREFIX}{topic}/{partition}/")
}

/// The tag of one generation of a topic partition.
pub fn tag(topic: &str, partition: i32, generation: i64) -> String {
    format!("{}{generation}", partition_prefix(topic, partition))
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
}

/// Each topic partition's generation, as its records tell it.
#[derive(Default)]
pub struct Generations {
    parts: HashMap<Tp, Part>,
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
        p.current = generation;
        p.asked = true;
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
    if older.is_empty() {
        return Ok(0);
    }
    let csl = format!(
        ".drop extents ({}) from {}",
        older.join(", "),
        quote_name(table)
    );
    engine.mgmt(db, &csl).await?;
    Ok(older.len())
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
}
