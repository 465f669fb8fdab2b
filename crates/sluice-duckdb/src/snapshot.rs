//! Snapshots reconcile the tables: what `source.snapshot` says about each
//! snapshot read, turned into the steps a flush carries out (see the crate
//! docs, "Snapshots").
//!
//! Debezium marks a snapshot's reads: `first` (the first record of the
//! snapshot), `first_in_data_collection` (a later table's first),
//! `last_in_data_collection` (a table's last), `last` (the snapshot's
//! last, which is also its table's last), `true` in between; streamed
//! changes carry `false` or null. A table of one row is marked by its
//! position alone (`first`, `last_in_data_collection` or `last`); a table
//! without rows has no record at all. Every read of one snapshot carries
//! the LSN of its consistent point (`source.lsn`), which tells snapshots
//! apart.
//!
//! An incremental snapshot's reads are merged into the stream and carry
//! none of that; its records carry Sluice's own marks instead (header
//! [`INCREMENTAL_SNAPSHOT_HEADER`]): from its `begin` on, every key written
//! to the table is kept in a side table, and at its `end` the rows whose
//! key is not there are removed: the snapshot read every row the source
//! had (or a change since its begin wrote it), so those rows are gone.
//!
//! [`INCREMENTAL_SNAPSHOT_HEADER`]: sluice_core::record::INCREMENTAL_SNAPSHOT_HEADER

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_core::generation::{ends_table, is_snapshot_marker};

use crate::mapping::Mode;
use crate::writer::Method;

/// A snapshot step, carried out in the flush's transaction in order with
/// the rows around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    /// A snapshot of `table` begins: its reads go to a staging table (or
    /// straight into the table when it is empty, or appended in append
    /// mode) until it completes.
    Open {
        table: String,
        mode: Mode,
        generation: i64,
        topic: Arc<str>,
        partition: i32,
        opened_by: String,
    },
    /// The table's snapshot is complete: the staging table replaces it.
    Complete { table: String, generation: i64 },
    /// The snapshot never completed: its staging rows are dropped and the
    /// table stays as it was.
    Abandon { table: String, generation: i64 },
    /// The snapshot did not complete but changes stream: its rows are
    /// upserted into the table, nothing is removed.
    Merge { table: String, generation: i64 },
    /// The complete snapshot read the table's source without a row (the
    /// snapshot's final record says so): every row the table has is gone.
    Empty { table: String, generation: i64 },
    /// An incremental snapshot of `table` begins: from here on, the keys
    /// of every row written to it are kept.
    Track {
        table: String,
        generation: i64,
        topic: Arc<str>,
        partition: i32,
    },
    /// The incremental snapshot read the whole table: rows whose key was
    /// neither read nor written since its begin are removed.
    Reconcile { table: String, generation: i64 },
    /// The incremental snapshot of `table` ends without reading it whole:
    /// nothing is removed.
    Untrack {
        table: String,
        generation: i64,
        why: &'static str,
    },
}

impl Control {
    pub(crate) fn table(&self) -> &str {
        match self {
            Control::Open { table, .. }
            | Control::Complete { table, .. }
            | Control::Abandon { table, .. }
            | Control::Merge { table, .. }
            | Control::Empty { table, .. }
            | Control::Track { table, .. }
            | Control::Reconcile { table, .. }
            | Control::Untrack { table, .. } => table,
        }
    }
}

/// A snapshot of a table that began and has not ended, as stored.
#[derive(Debug, Clone)]
pub(crate) struct OpenSnapshot {
    pub table: String,
    pub generation: i64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub method: Method,
    pub opened_by: String,
    pub rows: u64,
}

#[derive(Debug, Clone)]
struct Open {
    generation: i64,
    topic: Arc<str>,
    partition: i32,
    opened_by: String,
    rows: u64,
}

impl Open {
    /// Opened by the snapshot's `first` record and nothing since: the
    /// table may have had that one row only (its end is then not marked).
    fn maybe_single(&self) -> bool {
        self.opened_by == "first" && self.rows == 1
    }
}

/// What a record means for the table's snapshot.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    /// Before the record's row.
    pub before: Vec<Control>,
    /// After it.
    pub after: Vec<Control>,
    /// A read of a snapshot older than one the table completed since (it
    /// arrived late, through another partition): its row is stale and is
    /// not written.
    pub stale: bool,
}

/// Why an emptied table is not emptied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotEmptied {
    /// Reads of it in this very snapshot arrived: not empty after all.
    ReadInSnapshot,
    /// A change streamed after the snapshot was already written to it.
    StreamedPast(i64),
}

/// An incremental snapshot being tracked: where its marks come from.
#[derive(Debug, Clone)]
struct Tracked {
    generation: i64,
    topic: Arc<str>,
    partition: i32,
}

/// The snapshots in progress, per table.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    open: HashMap<String, Open>,
    /// Incremental snapshots between their begin and end, per table.
    tracked: HashMap<String, Tracked>,
    /// (table, generation) seen from its middle or from several partitions:
    /// written without reconciliation.
    unreconciled: HashSet<(String, i64)>,
    /// Per table, the latest snapshot it completed: reads of older ones
    /// are stale.
    completed: HashMap<String, i64>,
    /// Per table, the highest LSN of a streamed change written.
    streamed: HashMap<String, i64>,
}

impl Tracker {
    /// Resumes the snapshots stored as open, with each table's latest
    /// complete one.
    pub(crate) fn resume(stored: &[OpenSnapshot], completed: &[(String, i64)]) -> Tracker {
        let mut t = Tracker {
            completed: completed.iter().cloned().collect(),
            ..Tracker::default()
        };
        for s in stored {
            if s.method == Method::Incremental {
                t.tracked.insert(
                    s.table.clone(),
                    Tracked {
                        generation: s.generation,
                        topic: Arc::clone(&s.topic),
                        partition: s.partition,
                    },
                );
                continue;
            }
            t.open.insert(
                s.table.clone(),
                Open {
                    generation: s.generation,
                    topic: Arc::clone(&s.topic),
                    partition: s.partition,
                    opened_by: s.opened_by.clone(),
                    rows: s.rows,
                },
            );
        }
        t
    }

    /// The steps around one record of `table`: a snapshot read when `op`
    /// is `r` and `marker` is a snapshot marker, with `generation` the
    /// snapshot's LSN; anything else is a streamed change.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        table: &str,
        mode: Mode,
        topic: &Arc<str>,
        partition: i32,
        op: Option<&str>,
        marker: Option<&str>,
        generation: Option<i64>,
    ) -> Steps {
        let mut steps = Steps::default();
        if let Some(t) = self.tracked.get(table) {
            if t.partition != partition || t.topic != *topic {
                tracing::warn!(
                    "DuckDB sink: the incremental snapshot of table '{table}' arrives through several partitions ({}-{} and {topic}-{partition}); no row is removed at its end",
                    t.topic,
                    t.partition
                );
                steps.before.push(Control::Untrack {
                    table: table.to_owned(),
                    generation: t.generation,
                    why: "its records come through several partitions",
                });
                self.tracked.remove(table);
            }
        }
        let read = match (op, marker, generation) {
            (Some("r"), Some(m), Some(g)) if is_snapshot_marker(m) => Some((m, g)),
            _ => None,
        };
        if let Some((_, g)) = read {
            if self.completed.get(table).is_some_and(|done| g < *done) {
                steps.stale = true;
                return steps;
            }
        }
        let Some((marker, generation)) = read else {
            if let Some(lsn) = generation {
                let top = self.streamed.entry(table.to_owned()).or_insert(lsn);
                *top = (*top).max(lsn);
            }
            // A streamed change: the table's snapshot is over. One that
            // began with the snapshot's first record and got no other
            // had that row only; any other did not complete.
            if let Some(o) = self.open.remove(table) {
                steps.before.push(if o.maybe_single() {
                    Control::Complete {
                        table: table.to_owned(),
                        generation: o.generation,
                    }
                } else {
                    Control::Merge {
                        table: table.to_owned(),
                        generation: o.generation,
                    }
                });
            }
            return steps;
        };
        if let Some(o) = self.open.get(table) {
            if o.generation != generation {
                // An earlier snapshot was interrupted; this one starts over.
                steps.before.push(Control::Abandon {
                    table: table.to_owned(),
                    generation: o.generation,
                });
                self.open.remove(table);
            } else if o.partition != partition || o.topic != *topic {
                // Records of one table in several partitions arrive in no
                // particular order: when its snapshot ends cannot be told.
                tracing::warn!(
                    "DuckDB sink: the snapshot of table '{table}' arrives through several partitions ({} and {topic}-{partition}); it is upserted without removing rows",
                    o.partition
                );
                steps.before.push(Control::Merge {
                    table: table.to_owned(),
                    generation,
                });
                self.open.remove(table);
                self.unreconciled.insert((table.to_owned(), generation));
            }
        }
        let key = (table.to_owned(), generation);
        if !self.open.contains_key(table) && !self.unreconciled.contains(&key) {
            if marker == "true" {
                tracing::warn!(
                    "DuckDB sink: snapshot {generation} of table '{table}' is seen from its middle (its first record was not received); it is upserted without removing rows"
                );
                self.unreconciled.insert(key);
            } else {
                // A snapshot of the whole table supersedes an incremental
                // one (the writer drops its keys).
                self.tracked.remove(table);
                steps.before.push(Control::Open {
                    table: table.to_owned(),
                    mode,
                    generation,
                    topic: Arc::clone(topic),
                    partition,
                    opened_by: marker.to_owned(),
                });
                self.open.insert(
                    table.to_owned(),
                    Open {
                        generation,
                        topic: Arc::clone(topic),
                        partition,
                        opened_by: marker.to_owned(),
                        rows: 0,
                    },
                );
            }
        }
        if let Some(o) = self.open.get_mut(table) {
            o.rows += 1;
        }
        if ends_table(marker) && self.open.remove(table).is_some() {
            self.completed.insert(table.to_owned(), generation);
            steps.after.push(Control::Complete {
                table: table.to_owned(),
                generation,
            });
        }
        if marker == "last" {
            // The whole snapshot is complete: a table opened by its first
            // record alone had that row only; snapshots of other
            // generations still open never completed.
            let mut ended: Vec<(String, Open)> = self
                .open
                .iter()
                .filter(|(_, o)| o.generation != generation || o.maybe_single())
                .map(|(t, o)| (t.clone(), o.clone()))
                .collect();
            ended.sort_by(|a, b| a.0.cmp(&b.0));
            for (t, o) in ended {
                self.open.remove(&t);
                if o.generation == generation {
                    self.completed.insert(t.clone(), generation);
                }
                steps.after.push(if o.generation == generation {
                    Control::Complete {
                        table: t,
                        generation,
                    }
                } else {
                    Control::Abandon {
                        table: t,
                        generation: o.generation,
                    }
                });
            }
            self.unreconciled.retain(|(_, g)| *g == generation);
        }
        steps
    }

    /// The steps an incremental snapshot's marks (the header's value) ask
    /// for, added to `steps`: `begin` before the record's row, `end` after
    /// it. Append tables keep every event and are not reconciled.
    pub(crate) fn marks(
        &mut self,
        table: &str,
        mode: Mode,
        topic: &Arc<str>,
        partition: i32,
        marks: &str,
        steps: &mut Steps,
    ) {
        if mode != Mode::Upsert {
            return;
        }
        for mark in marks.split(',') {
            let Some((what, g)) = mark.trim().split_once(':') else {
                continue;
            };
            let Ok(generation) = g.parse::<i64>() else {
                continue;
            };
            let current = self.tracked.get(table).map(|t| t.generation);
            match what {
                "begin" if current == Some(generation) => {}
                "begin" => {
                    if let Some(old) = current {
                        steps.before.push(Control::Untrack {
                            table: table.to_owned(),
                            generation: old,
                            why: "another incremental snapshot of the table began",
                        });
                    }
                    steps.before.push(Control::Track {
                        table: table.to_owned(),
                        generation,
                        topic: Arc::clone(topic),
                        partition,
                    });
                    self.tracked.insert(
                        table.to_owned(),
                        Tracked {
                            generation,
                            topic: Arc::clone(topic),
                            partition,
                        },
                    );
                }
                "end" if current == Some(generation) => {
                    self.tracked.remove(table);
                    steps.after.push(Control::Reconcile {
                        table: table.to_owned(),
                        generation,
                    });
                }
                "stop" if current == Some(generation) => {
                    self.tracked.remove(table);
                    steps.before.push(Control::Untrack {
                        table: table.to_owned(),
                        generation,
                        why: "it was stopped before reading the whole table",
                    });
                }
                _ => {}
            }
        }
    }

    /// The steps for `table`, which the complete snapshot `generation` read
    /// without a row (its final record said so), or why there is none.
    pub(crate) fn emptied(
        &mut self,
        table: &str,
        generation: i64,
    ) -> Result<Vec<Control>, NotEmptied> {
        if self.completed.get(table) == Some(&generation)
            || self
                .open
                .get(table)
                .is_some_and(|o| o.generation == generation)
        {
            return Err(NotEmptied::ReadInSnapshot);
        }
        if let Some(lsn) = self.streamed.get(table).filter(|l| **l > generation) {
            return Err(NotEmptied::StreamedPast(*lsn));
        }
        let mut steps = Vec::new();
        if let Some(o) = self.open.remove(table) {
            // An older snapshot of it, still open, never completed.
            steps.push(Control::Abandon {
                table: table.to_owned(),
                generation: o.generation,
            });
        }
        self.completed.insert(table.to_owned(), generation);
        steps.push(Control::Empty {
            table: table.to_owned(),
            generation,
        });
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(t: &str) -> Arc<str> {
        Arc::from(format!("srv.public.{t}").as_str())
    }

    fn read(tr: &mut Tracker, table: &str, marker: &str, g: i64) -> Steps {
        tr.record(
            table,
            Mode::Upsert,
            &topic(table),
            0,
            Some("r"),
            Some(marker),
            Some(g),
        )
    }

    fn stream(tr: &mut Tracker, table: &str) -> Steps {
        tr.record(
            table,
            Mode::Upsert,
            &topic(table),
            0,
            Some("c"),
            Some("false"),
            Some(900),
        )
    }

    fn names(cs: &[Control]) -> Vec<String> {
        cs.iter()
            .map(|c| match c {
                Control::Open { table, .. } => format!("open {table}"),
                Control::Complete { table, .. } => format!("complete {table}"),
                Control::Abandon { table, .. } => format!("abandon {table}"),
                Control::Merge { table, .. } => format!("merge {table}"),
                Control::Empty { table, .. } => format!("empty {table}"),
                Control::Track { table, .. } => format!("track {table}"),
                Control::Reconcile { table, .. } => format!("reconcile {table}"),
                Control::Untrack { table, .. } => format!("untrack {table}"),
            })
            .collect()
    }

    #[test]
    fn tables_open_at_their_first_read_and_complete_at_their_last() {
        let mut tr = Tracker::default();
        assert_eq!(names(&read(&mut tr, "a", "first", 100).before), ["open a"]);
        assert!(names(&read(&mut tr, "a", "true", 100).before).is_empty());
        assert_eq!(
            names(&read(&mut tr, "a", "last_in_data_collection", 100).after),
            ["complete a"]
        );
        // A table of one row in the middle: open and complete at once.
        let s = read(&mut tr, "b", "last_in_data_collection", 100);
        assert_eq!(
            (names(&s.before), names(&s.after)),
            (vec!["open b".to_string()], vec!["complete b".to_string()])
        );
        assert_eq!(
            names(&read(&mut tr, "c", "first_in_data_collection", 100).before),
            ["open c"]
        );
        assert_eq!(
            names(&read(&mut tr, "c", "last", 100).after),
            ["complete c"]
        );
        assert!(names(&stream(&mut tr, "a").before).is_empty());
    }

    #[test]
    fn a_first_table_of_one_row_completes_with_the_snapshot_or_its_next_change() {
        let mut tr = Tracker::default();
        read(&mut tr, "a", "first", 100);
        read(&mut tr, "b", "first_in_data_collection", 100);
        let s = read(&mut tr, "b", "last", 100);
        assert_eq!(names(&s.after), ["complete b", "complete a"]);
        let mut tr = Tracker::default();
        read(&mut tr, "a", "first", 100);
        assert_eq!(names(&stream(&mut tr, "a").before), ["complete a"]);
    }

    #[test]
    fn interrupted_snapshots_are_abandoned_or_merged_never_completed() {
        let mut tr = Tracker::default();
        read(&mut tr, "a", "first", 100);
        read(&mut tr, "a", "true", 100);
        read(&mut tr, "z", "first_in_data_collection", 100);
        // A new snapshot (another LSN) starts over.
        let s = read(&mut tr, "a", "first", 200);
        assert_eq!(names(&s.before), ["abandon a", "open a"]);
        // Its end abandons what the old one left open.
        let s = read(&mut tr, "a", "last", 200);
        assert_eq!(names(&s.after), ["complete a", "abandon z"]);
        // A snapshot that streams before its end: rows kept, none removed.
        let mut tr = Tracker::default();
        read(&mut tr, "a", "first", 100);
        read(&mut tr, "a", "true", 100);
        assert_eq!(names(&stream(&mut tr, "a").before), ["merge a"]);
        // Seen from its middle: no reconciliation.
        let mut tr = Tracker::default();
        assert!(names(&read(&mut tr, "a", "true", 100).before).is_empty());
        assert!(names(&read(&mut tr, "a", "last", 100).after).is_empty());
    }

    #[test]
    fn a_table_the_snapshot_found_empty_is_emptied_unless_read_or_streamed_past() {
        let mut tr = Tracker::default();
        read(&mut tr, "a", "first", 100);
        read(&mut tr, "a", "last", 100);
        assert_eq!(names(&tr.emptied("e", 100).unwrap()), ["empty e"]);
        // Read in this snapshot after all: not empty.
        assert_eq!(tr.emptied("a", 100), Err(NotEmptied::ReadInSnapshot));
        // A change past the snapshot was written first: kept.
        let mut tr = Tracker::default();
        stream(&mut tr, "e");
        assert_eq!(tr.emptied("e", 100), Err(NotEmptied::StreamedPast(900)));
        // An older snapshot of it still open is abandoned first.
        let mut tr = Tracker::default();
        read(&mut tr, "e", "first", 50);
        assert_eq!(
            names(&tr.emptied("e", 100).unwrap()),
            ["abandon e", "empty e"]
        );
    }

    fn marks(tr: &mut Tracker, table: &str, partition: i32, m: &str) -> (Vec<String>, Vec<String>) {
        let mut steps = tr.record(
            table,
            Mode::Upsert,
            &topic(table),
            partition,
            Some("r"),
            Some("incremental"),
            Some(900),
        );
        tr.marks(table, Mode::Upsert, &topic(table), partition, m, &mut steps);
        (names(&steps.before), names(&steps.after))
    }

    #[test]
    fn incremental_marks_track_a_table_from_its_begin_and_reconcile_it_at_its_end() {
        let mut tr = Tracker::default();
        assert_eq!(marks(&mut tr, "a", 0, "begin:7").0, ["track a"]);
        // Given again after a restart: goes on.
        assert!(marks(&mut tr, "a", 0, "begin:7").0.is_empty());
        // Another generation's end is not this one's.
        assert!(marks(&mut tr, "a", 0, "end:6").1.is_empty());
        assert_eq!(marks(&mut tr, "a", 0, "end:7").1, ["reconcile a"]);
        assert!(marks(&mut tr, "a", 0, "end:7").1.is_empty(), "once");
        // Begin and end on one record: around its row.
        let (b, a) = marks(&mut tr, "b", 0, "begin:8,end:8");
        assert_eq!(
            (b, a),
            (vec!["track b".to_string()], vec!["reconcile b".to_string()])
        );
        // A new begin replaces an open one; a stop removes nothing.
        marks(&mut tr, "c", 0, "begin:1");
        assert_eq!(
            marks(&mut tr, "c", 0, "begin:2").0,
            ["untrack c", "track c"]
        );
        assert_eq!(marks(&mut tr, "c", 0, "stop:2").0, ["untrack c"]);
        // Records of the table from another partition: untracked.
        marks(&mut tr, "d", 0, "begin:3");
        assert_eq!(marks(&mut tr, "d", 1, "").0, ["untrack d"]);
        assert!(marks(&mut tr, "d", 0, "end:3").1.is_empty());
        // A snapshot of the whole table supersedes it.
        marks(&mut tr, "e", 0, "begin:4");
        read(&mut tr, "e", "first", 100);
        assert!(marks(&mut tr, "e", 0, "end:4").1.is_empty());
        // Append tables are not reconciled.
        let mut steps = Steps::default();
        tr.marks("f", Mode::Append, &topic("f"), 0, "begin:5", &mut steps);
        assert!(steps.before.is_empty());
    }

    #[test]
    fn reads_of_a_snapshot_older_than_the_tables_complete_one_are_stale() {
        let mut tr = Tracker::resume(&[], &[("e".to_string(), 100)]);
        assert!(read(&mut tr, "e", "first", 50).stale);
        assert!(read(&mut tr, "e", "true", 50).stale);
        assert!(!read(&mut tr, "e", "first", 200).stale);
        let mut tr = Tracker::default();
        tr.emptied("e", 100).unwrap();
        assert!(read(&mut tr, "e", "last", 60).stale);
        assert!(stream(&mut tr, "e").before.is_empty());
    }
}
