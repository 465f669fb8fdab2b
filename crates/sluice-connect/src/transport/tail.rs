//! The local log's tail, kept structured: the records of frames a source
//! output just wrote, handed to the sink inputs that read those frames
//! next, so that a sink keeping up with its source never decodes what was
//! encoded a moment before.
//!
//! The log stays the only source of truth: a frame is put here when the
//! writer placed it, before any reader can see it, and a reader that finds
//! no entry (it was pushed out, the reader lags behind or started later)
//! decodes the frame's bytes as always. An entry waits for each sink
//! connector that read its topic, and kept up, when it was put: it is
//! cloned for all but the last of them, which takes the records
//! themselves.
//!
//! The tail is bounded by the encoded size of its frames ([`TAIL_BYTES`]).
//! When it is full, a source waits (at most [`STALLED`] after the oldest
//! frame was put) for the sinks to take what they are about to read: a
//! source never runs far ahead of the sinks that keep up, and a sink that
//! stopped reading (or reads far behind) is not waited for: its frames are
//! pushed out and new ones no longer wait for it until it caught up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_core::record::SinkRecord;
use tokio::sync::Notify;
// The runtime's clock, so that tests may pause it.
use tokio::time::Instant;

/// Most encoded bytes of frames the tail keeps.
pub const TAIL_BYTES: usize = 2 << 20;

/// A sink connector that left a frame untaken this long is behind: the
/// source no longer waits for it.
pub const STALLED: Duration = Duration::from_millis(500);

type Tp = (Arc<str>, u32);

struct Entry {
    records: Vec<SinkRecord>,
    /// Sink connectors still to take it.
    takers: Vec<Arc<str>>,
    bytes: usize,
    put_at: Instant,
}

#[derive(Default)]
struct Frames {
    /// Per topic partition, by the frame's base offset.
    parts: HashMap<Tp, BTreeMap<i64, Entry>>,
    /// Frames in the order they were put (some since taken).
    order: VecDeque<(Tp, i64)>,
    bytes: usize,
}

impl Frames {
    fn remove(&mut self, tp: &Tp, base: i64) -> Option<Entry> {
        let e = self.parts.get_mut(tp)?.remove(&base)?;
        self.bytes -= e.bytes;
        Some(e)
    }

    /// The oldest frame kept, after dropping what was taken.
    fn oldest(&mut self) -> Option<&Entry> {
        while let Some((tp, base)) = self.order.front() {
            if self.parts.get(tp).is_some_and(|p| p.contains_key(base)) {
                let (tp, base) = (tp.clone(), *base);
                return self.parts.get(&tp).and_then(|p| p.get(&base));
            }
            self.order.pop_front();
        }
        None
    }

    /// Forgets the order of frames taken since: behind a frame left for a
    /// connector that stopped reading, they would pile up for as long as it
    /// is kept.
    fn compact(&mut self) {
        let kept: usize = self.parts.values().map(BTreeMap::len).sum();
        if self.order.len() > 2 * kept + 64 {
            let parts = &self.parts;
            self.order
                .retain(|(tp, base)| parts.get(tp).is_some_and(|p| p.contains_key(base)));
        }
    }

    /// Pushes out the oldest frames until `bytes` more fit in `budget`.
    fn make_room(&mut self, bytes: usize, budget: usize) {
        while self.bytes + bytes > budget {
            let Some((tp, base)) = self.order.pop_front() else {
                break;
            };
            self.remove(&tp, base);
        }
    }

    /// `group` read on past a partition's frames before `base`.
    fn passed(&mut self, group: &str, tp: &Tp, base: i64) -> bool {
        let Some(part) = self.parts.get_mut(tp) else {
            return false;
        };
        let mut gone = Vec::new();
        for (b, e) in part.range_mut(..base) {
            e.takers.retain(|g| &**g != group);
            if e.takers.is_empty() {
                gone.push(*b);
            }
        }
        for b in &gone {
            self.remove(tp, *b);
        }
        !gone.is_empty()
    }
}

/// The structured tail of the local log (see the module docs).
pub struct Tail {
    budget: usize,
    frames: Mutex<Frames>,
    /// Told whenever frames leave.
    room: Notify,
    taken: AtomicU64,
    missed: AtomicU64,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("budget", &self.budget)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Tail {
    /// A tail keeping at most `budget` encoded bytes of frames.
    pub fn new(budget: usize) -> Tail {
        Tail {
            budget,
            frames: Mutex::default(),
            room: Notify::new(),
            taken: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Frames> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a frame of `bytes` encoded bytes may be kept at all.
    pub fn fits(&self, bytes: usize) -> bool {
        bytes <= self.budget
    }

    /// Of the sink connectors `readers`, those keeping up: none of them
    /// left a frame untaken for [`STALLED`].
    pub fn keeping_up(&self, mut readers: Vec<Arc<str>>) -> Vec<Arc<str>> {
        if readers.is_empty() {
            return readers;
        }
        let mut frames = self.lock();
        frames.oldest();
        let now = Instant::now();
        let mut behind: HashSet<&str> = HashSet::new();
        for (tp, base) in &frames.order {
            let Some(e) = frames.parts.get(tp).and_then(|p| p.get(base)) else {
                continue;
            };
            if now.duration_since(e.put_at) < STALLED {
                break;
            }
            behind.extend(e.takers.iter().map(|g| &**g));
        }
        readers.retain(|g| !behind.contains(&**g));
        readers
    }

    /// Waits until a frame of `bytes` fits, for as long as the oldest frame
    /// kept is younger than [`STALLED`] (then the frame pushes it out).
    pub async fn room(&self, bytes: usize) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let budget = self.budget;
                let mut frames = self.lock();
                if frames.bytes + bytes <= budget {
                    return;
                }
                match frames.oldest() {
                    None => return,
                    Some(e) => match STALLED.checked_sub(e.put_at.elapsed()) {
                        Some(left) if !left.is_zero() => left,
                        _ => return,
                    },
                }
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Keeps the records of the frame written at `base` of `topic`
    /// `partition` (`bytes` encoded), for sink connectors `takers`. Their
    /// partitions and offsets are set here. Older frames are pushed out to
    /// make room; a frame larger than the whole budget is not kept.
    pub fn put(
        &self,
        topic: &Arc<str>,
        partition: u32,
        base: i64,
        mut records: Vec<SinkRecord>,
        takers: Vec<Arc<str>>,
        bytes: usize,
    ) {
        let tp = (Arc::clone(topic), partition);
        let mut frames = self.lock();
        // A frame whose sync failed was cut and its offsets are reused:
        // what was kept for them is never handed out.
        frames.remove(&tp, base);
        if takers.is_empty() || !self.fits(bytes) {
            return;
        }
        frames.make_room(bytes, self.budget);
        for (i, r) in records.iter_mut().enumerate() {
            r.partition = partition as i32;
            r.offset = base + i as i64;
        }
        frames.bytes += bytes;
        frames.order.push_back((tp.clone(), base));
        frames.compact();
        frames.parts.entry(tp).or_default().insert(
            base,
            Entry {
                records,
                takers,
                bytes,
                put_at: Instant::now(),
            },
        );
    }

    /// Forgets the frame at `base` (its sync failed: it was cut again).
    pub fn forget(&self, topic: &Arc<str>, partition: u32, base: i64) {
        let gone = self
            .lock()
            .remove(&(Arc::clone(topic), partition), base)
            .is_some();
        if gone {
            self.room.notify_waiters();
        }
    }

    /// The records of the frame at `base` holding `count` records, for
    /// sink connector `group`, when kept for it; the group's frames before
    /// it are let go (it read past them).
    pub fn take(
        &self,
        group: &str,
        topic: &Arc<str>,
        partition: u32,
        base: i64,
        count: u32,
    ) -> Option<Vec<SinkRecord>> {
        let tp = (Arc::clone(topic), partition);
        let (records, freed) = {
            let mut frames = self.lock();
            let mut freed = frames.passed(group, &tp, base);
            let records = match frames.parts.get_mut(&tp).and_then(|p| p.get_mut(&base)) {
                None => None,
                // Not the frame this entry was put for: never trusted.
                Some(e) if e.records.len() != count as usize => {
                    frames.remove(&tp, base);
                    freed = true;
                    None
                }
                Some(e) => match e.takers.iter().position(|g| &**g == group) {
                    None => None,
                    Some(i) => {
                        e.takers.swap_remove(i);
                        if e.takers.is_empty() {
                            freed = true;
                            frames.remove(&tp, base).map(|e| e.records)
                        } else {
                            Some(e.records.clone())
                        }
                    }
                },
            };
            (records, freed)
        };
        if freed {
            self.room.notify_waiters();
        }
        match &records {
            Some(_) => self.taken.fetch_add(1, Ordering::Relaxed),
            None => self.missed.fetch_add(1, Ordering::Relaxed),
        };
        records
    }

    /// Frames handed out instead of decoded, since the start.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Frames asked for and not kept (decoded instead), since the start.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// Encoded bytes kept.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<SinkRecord> {
        (0..n)
            .map(|_| SinkRecord {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
                timestamp_ms: 0,
                key_schema: None,
                key: None,
                value_schema: None,
                value: None,
                headers: Vec::new(),
            })
            .collect()
    }

    fn groups(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn frames_are_handed_to_each_taker_then_gone() {
        let tail = Tail::new(100);
        let t: Arc<str> = Arc::from("t");
        tail.put(&t, 1, 10, records(3), groups(&["a", "b"]), 30);
        let first = tail.take("a", &t, 1, 10, 3).expect("kept");
        assert_eq!(
            first
                .iter()
                .map(|r| (r.partition, r.offset))
                .collect::<Vec<_>>(),
            [(1, 10), (1, 11), (1, 12)]
        );
        assert!(tail.take("a", &t, 1, 10, 3).is_none(), "a had it");
        assert!(tail.take("b", &t, 1, 10, 3).is_some());
        assert!(tail.take("b", &t, 1, 10, 3).is_none());
        assert_eq!(tail.bytes(), 0);
        assert_eq!((tail.taken(), tail.missed()), (2, 2));
    }

    #[test]
    fn bounded_passed_frames_dropped_and_mismatches_refused() {
        let tail = Tail::new(100);
        let t: Arc<str> = Arc::from("t");
        let a = || groups(&["a"]);
        tail.put(&t, 0, 0, records(2), a(), 60);
        // Over the budget: the oldest frame makes room.
        tail.put(&t, 0, 2, records(2), a(), 60);
        assert_eq!(tail.bytes(), 60);
        assert!(tail.take("a", &t, 0, 0, 2).is_none());
        // Larger than the whole budget: never kept.
        tail.put(&t, 1, 0, records(1), a(), 101);
        assert!(tail.take("a", &t, 1, 0, 1).is_none());
        // Reading on past a frame lets it go.
        tail.put(&t, 0, 3, records(1), a(), 10);
        assert!(tail.take("a", &t, 0, 3, 1).is_some());
        assert!(tail.take("a", &t, 0, 2, 2).is_none(), "passed");
        assert_eq!(tail.bytes(), 0);
        tail.put(&t, 0, 4, records(2), a(), 10);
        assert!(tail.take("a", &t, 0, 4, 3).is_none(), "count differs");
        assert_eq!(tail.bytes(), 0);
        tail.put(&t, 0, 6, records(2), a(), 10);
        tail.forget(&t, 0, 6);
        assert!(tail.take("a", &t, 0, 6, 2).is_none());
        // Nobody to take it: not kept.
        tail.put(&t, 0, 8, records(1), Vec::new(), 10);
        assert_eq!(tail.bytes(), 0);
        // A frame put again at the same offsets replaces the old one.
        tail.put(&t, 0, 9, records(1), a(), 10);
        tail.put(&t, 0, 9, records(2), Vec::new(), 10);
        assert_eq!(tail.bytes(), 0);
    }

    #[test]
    fn a_group_passing_frames_frees_only_its_share() {
        let tail = Tail::new(1000);
        let t: Arc<str> = Arc::from("t");
        tail.put(&t, 0, 0, records(1), groups(&["a", "b"]), 10);
        tail.put(&t, 0, 1, records(1), groups(&["a", "b"]), 10);
        // a decoded offset 0 elsewhere and takes 1: offset 0 stays for b.
        assert!(tail.take("a", &t, 0, 1, 1).is_some());
        assert!(tail.take("b", &t, 0, 0, 1).is_some());
        assert!(tail.take("b", &t, 0, 1, 1).is_some());
        assert_eq!(tail.bytes(), 0);
    }

    #[test]
    fn a_frame_left_for_a_stopped_reader_does_not_pile_up_the_others() {
        let tail = Tail::new(1 << 20);
        let t: Arc<str> = Arc::from("t");
        tail.put(&t, 0, 0, records(1), groups(&["stopped"]), 10);
        for base in 1..10_000 {
            tail.put(&t, 1, base, records(1), groups(&["a"]), 10);
            assert!(tail.take("a", &t, 1, base, 1).is_some());
        }
        let frames = tail.lock();
        assert!(frames.order.len() <= 2 + 64, "{}", frames.order.len());
        assert_eq!(frames.bytes, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_tail_waits_for_takers_then_for_no_one_stalled() {
        let tail = Arc::new(Tail::new(100));
        let t: Arc<str> = Arc::from("t");
        tail.put(&t, 0, 0, records(1), groups(&["a", "b"]), 80);
        assert_eq!(tail.keeping_up(groups(&["a", "b"])).len(), 2);
        // Room comes when the frame is taken by both.
        let waiter = {
            let tail = Arc::clone(&tail);
            tokio::spawn(async move { tail.room(50).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(tail.take("a", &t, 0, 0, 1).is_some());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "b has not taken it");
        assert!(tail.take("b", &t, 0, 0, 1).is_some());
        tokio::time::timeout(Duration::from_millis(1), waiter)
            .await
            .expect("room once taken")
            .expect("joined");
        // b never takes: the source waits STALLED at most, and b is left out
        // of new frames from then on.
        tail.put(&t, 0, 1, records(1), groups(&["a", "b"]), 80);
        assert!(tail.take("a", &t, 0, 1, 1).is_some());
        let started = tokio::time::Instant::now();
        tail.room(50).await;
        assert!(started.elapsed() >= STALLED - Duration::from_millis(1));
        assert_eq!(&*tail.keeping_up(groups(&["a", "b"])), &groups(&["a"])[..]);
    }
}
