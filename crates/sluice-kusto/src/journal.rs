//! The batch journal behind `kusto.ingestion.dedup`.
//!
//! A batch is tagged `ingest-by:<topic>/<partition>/<first>-<last>` and
//! posted with `ingestIfNotExists` on the same value, so ADX ingests it once
//! however often it is posted. That only helps if a batch replayed after a
//! crash covers exactly the same offsets as the one posted before it, and
//! batches are closed by size *or age*: the age is not reproducible. So the
//! range of every batch is appended to this journal (and synced) before the
//! batch is posted; after a restart, records that fall in a journaled range
//! are batched into exactly that range again, whatever their age.
//!
//! One file per topic partition under `tempdir.path`, one `first last` line
//! per batch. Ranges below everything the sink may still be given are
//! dropped when the file is rewritten, so it stays small.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Lines kept when a journal file is compacted.
const KEEP: usize = 1_000;
/// A file is compacted once it holds this many lines.
const COMPACT_AT: usize = 10_000;

/// The journal of one sink task.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    parts: HashMap<(String, i32), Part>,
}

#[derive(Debug)]
struct Part {
    file: File,
    path: PathBuf,
    /// first -> last of every journaled batch.
    ranges: BTreeMap<i64, i64>,
    lines: usize,
}

impl Journal {
    /// The journal under `dir` (created when missing).
    pub fn open(dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the batch journal directory {}", dir.display()))?;
        Ok(Journal {
            dir: dir.to_owned(),
            parts: HashMap::new(),
        })
    }

    fn part(&mut self, topic: &str, partition: i32) -> Result<&mut Part> {
        let key = (topic.to_owned(), partition);
        if !self.parts.contains_key(&key) {
            let path = self
                .dir
                .join(format!("{}-{partition}.batches", file_safe(topic)));
            let mut ranges = BTreeMap::new();
            let mut lines = 0;
            if path.exists() {
                let f = File::open(&path)
                    .with_context(|| format!("reading the batch journal {}", path.display()))?;
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    let line = line
                        .with_context(|| format!("reading the batch journal {}", path.display()))?;
                    // A torn last line (a crash while appending) is
                    // ignored: its batch was never posted.
                    if let Some((a, b)) = parse_line(&line) {
                        ranges.insert(a, b);
                        lines = n + 1;
                    }
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening the batch journal {}", path.display()))?;
            self.parts.insert(
                key.clone(),
                Part {
                    file,
                    path,
                    ranges,
                    lines,
                },
            );
        }
        self.parts
            .get_mut(&key)
            .context("batch journal entry vanished")
    }

    /// The journaled batch that holds `offset`, if any: `(first, last)`.
    pub fn range_of(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<(i64, i64)>> {
        let part = self.part(topic, partition)?;
        Ok(part
            .ranges
            .range(..=offset)
            .next_back()
            .filter(|(_, last)| **last >= offset)
            .map(|(first, last)| (*first, *last)))
    }

    /// Records a batch before it is posted; durable when this returns.
    pub fn record(&mut self, topic: &str, partition: i32, first: i64, last: i64) -> Result<()> {
        let part = self.part(topic, partition)?;
        if part.ranges.get(&first) == Some(&last) {
            return Ok(());
        }
        writeln!(part.file, "{first} {last}")
            .and_then(|()| part.file.sync_data())
            .with_context(|| format!("writing the batch journal {}", part.path.display()))?;
        part.ranges.insert(first, last);
        part.lines += 1;
        if part.lines >= COMPACT_AT {
            compact(part)?;
        }
        Ok(())
    }
}

fn parse_line(line: &str) -> Option<(i64, i64)> {
    let (a, b) = line.trim().split_once(' ')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a <= b).then_some((a, b))
}

/// Keeps the latest [`KEEP`] ranges: a replay starts at the last committed
/// offset, which is long past older batches.
fn compact(part: &mut Part) -> Result<()> {
    let drop = part.ranges.len().saturating_sub(KEEP);
    let keep: BTreeMap<i64, i64> = part
        .ranges
        .iter()
        .skip(drop)
        .map(|(a, b)| (*a, *b))
        .collect();
    let tmp = part.path.with_extension("batches.tmp");
    let mut text = String::new();
    for (a, b) in &keep {
        text.push_str(&format!("{a} {b}\n"));
    }
    let write = || -> std::io::Result<File> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &part.path)?;
        OpenOptions::new().append(true).open(&part.path)
    };
    part.file =
        write().with_context(|| format!("compacting the batch journal {}", part.path.display()))?;
    part.lines = keep.len();
    part.ranges = keep;
    Ok(())
}

/// A file name for a topic: Kafka topic names are `[a-zA-Z0-9._-]`, but the
/// in-process transport allows more.
fn file_safe(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_survive_a_reopen_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path()).expect("open");
        j.record("db.retail.orders", 0, 0, 9).expect("record");
        j.record("db.retail.orders", 0, 10, 25).expect("record");
        j.record("db.retail.orders", 1, 0, 3).expect("record");
        drop(j);
        let path = dir.path().join("db.retail.orders-0.batches");
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"26 4").expect("torn write");
        drop(f);
        let mut j = Journal::open(dir.path()).expect("reopen");
        assert_eq!(
            j.range_of("db.retail.orders", 0, 12).expect("read"),
            Some((10, 25))
        );
        assert_eq!(
            j.range_of("db.retail.orders", 0, 9).expect("read"),
            Some((0, 9))
        );
        assert_eq!(j.range_of("db.retail.orders", 0, 26).expect("read"), None);
        assert_eq!(
            j.range_of("db.retail.orders", 1, 3).expect("read"),
            Some((0, 3))
        );
        assert_eq!(j.range_of("other", 0, 3).expect("read"), None);
    }

    #[test]
    fn compaction_keeps_the_latest_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::open(dir.path()).expect("open");
        for i in 0..(COMPACT_AT as i64 + 5) {
            j.record("t", 0, i * 2, i * 2 + 1).expect("record");
        }
        let last = (COMPACT_AT as i64 + 4) * 2;
        assert_eq!(
            j.range_of("t", 0, last).expect("read"),
            Some((last, last + 1))
        );
        assert_eq!(
            j.range_of("t", 0, 0).expect("read"),
            None,
            "old ranges dropped"
        );
        drop(j);
        let text = std::fs::read_to_string(dir.path().join("t-0.batches")).expect("read");
        assert!(text.lines().count() <= KEEP + 5, "{}", text.lines().count());
    }
}
