//! The writer thread: appends frames in the order requests arrive, syncs
//! what it appended (group commit), and only then makes it readable and
//! completes the requests, in order.
//!
//! A producer (one source task) whose append failed has every later append
//! refused until it starts over with a new [`ProducerId`], so its records
//! never land out of order around a gap.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::partition::{segment_name, PartitionState, SegmentMeta};
use crate::{frame, sync_dir, Inner, LogError};

/// Payloads up to this size are copied behind their frame's head and
/// written in one call; larger ones are written after it from where they
/// are.
const COPY_PAYLOAD_BELOW: usize = 1 << 20;

/// Requests waiting for the writer.
const QUEUE: usize = 1024;
/// Bytes of payload waiting for the writer.
const QUEUE_BYTES: usize = 64 << 20;
/// Requests appended before one sync.
const GROUP: usize = 4096;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(1);

/// One producer of appends (a source task's run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerId(u64);

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Records in it.
    pub count: u32,
}

type Done = Box<dyn FnOnce(Result<Appended, LogError>) + Send>;

/// Told where a frame was written, before it is synced or readable.
pub type Placed = Box<dyn FnOnce(Appended) + Send>;

struct Request {
    topic: Arc<str>,
    partition: u32,
    payload: Vec<u8>,
    count: u32,
    producer: ProducerId,
    placed: Option<Placed>,
    done: Done,
    _room: OwnedSemaphorePermit,
}

/// Hands appends to the writer thread.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Request>,
    room: Arc<Semaphore>,
    producers: Arc<AtomicU64>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender").finish_non_exhaustive()
    }
}

impl Appender {
    /// A new producer.
    pub fn producer(&self) -> ProducerId {
        ProducerId(self.producers.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues `payload` (`count` records) for `topic` `partition`, waiting
    /// while the writer is behind. `done` is called from the writer thread
    /// once the frame is synced (with where it landed) or failed; calls for
    /// one producer come in the order of its appends.
    pub async fn append(
        &self,
        producer: ProducerId,
        topic: Arc<str>,
        partition: u32,
        payload: Vec<u8>,
        count: u32,
        done: impl FnOnce(Result<Appended, LogError>) + Send + 'static,
    ) -> Result<(), LogError> {
        self.append_placed(producer, topic, partition, payload, count, None, done)
            .await
    }

    /// As [`Appender::append`], and `placed` is told where the frame was
    /// written before any reader can see it (then `done` once it is synced;
    /// a frame whose sync failed is cut again and its offsets reused, which
    /// `done`'s error says).
    #[allow(clippy::too_many_arguments)]
    pub async fn append_placed(
        &self,
        producer: ProducerId,
        topic: Arc<str>,
        partition: u32,
        payload: Vec<u8>,
        count: u32,
        placed: Option<Placed>,
        done: impl FnOnce(Result<Appended, LogError>) + Send + 'static,
    ) -> Result<(), LogError> {
        if payload.len() > frame::MAX_PAYLOAD {
            return Err(LogError::Stopped(format!(
                "a batch of {} bytes for topic '{topic}' exceeds the largest frame ({} bytes)",
                payload.len(),
                frame::MAX_PAYLOAD
            )));
        }
        let want = payload.len().clamp(1, QUEUE_BYTES) as u32;
        let room = Arc::clone(&self.room)
            .acquire_many_owned(want)
            .await
            .map_err(|_| LogError::Stopped("the writer stopped".into()))?;
        self.tx
            .send(Request {
                topic,
                partition,
                payload,
                count,
                producer,
                placed,
                done: Box::new(done),
                _room: room,
            })
            .await
            .map_err(|_| LogError::Stopped("the writer stopped".into()))
    }
}

pub(crate) fn start(inner: Arc<Inner>) -> Result<Appender, LogError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dir = inner.cfg.dir.clone();
    std::thread::Builder::new()
        .name("sluice-log-writer".into())
        .spawn(move || Writer::new(inner).run(rx))
        .map_err(|e| LogError::io(&dir, "starting the writer thread for", e))?;
    Ok(Appender {
        tx,
        room: Arc::new(Semaphore::new(QUEUE_BYTES)),
        producers: Arc::new(AtomicU64::new(1)),
    })
}

/// The segment being appended to in a partition.
struct Active {
    part: Arc<PartitionState>,
    file: File,
    path: PathBuf,
    base: i64,
    /// Bytes written / synced.
    len: u64,
    synced_len: u64,
    /// Offset after the last record written / synced.
    next: i64,
    synced_next: i64,
}

struct Writer {
    inner: Arc<Inner>,
    active: HashMap<(Arc<str>, u32), Active>,
    failed: HashMap<ProducerId, String>,
    last_retention: Instant,
    buf: Vec<u8>,
}

impl Writer {
    fn new(inner: Arc<Inner>) -> Self {
        Writer {
            inner,
            active: HashMap::new(),
            failed: HashMap::new(),
            last_retention: Instant::now(),
            buf: Vec::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
            if self.last_retention.elapsed() >= RETENTION_EVERY {
                self.last_retention = Instant::now();
                if let Err(e) = enforce_retention(&self.inner) {
                    tracing::warn!("local log retention: {e}");
                }
            }
        }
        // Every appender is gone: nothing left to sync.
    }

    /// Closes a full segment (synced, so readers may read it to its end)
    /// and begins the next.
    fn roll(&mut self, topic: &Arc<str>, partition: u32) -> Result<(), LogError> {
        let a = active(&self.inner, &mut self.active, topic, partition)?;
        a.file
            .sync_data()
            .map_err(|e| LogError::io(&a.path, "syncing", e))?;
        a.synced_len = a.len;
        a.synced_next = a.next;
        let (old_base, len, next) = (a.base, a.len, a.next);
        let path = a.part.dir.join(segment_name(next));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, "creating", e))?;
        sync_dir(&a.part.dir).map_err(|e| LogError::io(&a.part.dir, "syncing", e))?;
        a.part.update(|s| {
            if let Some(seg) = s.segments.iter_mut().find(|g| g.base == old_base) {
                seg.durable_len = len;
                seg.end = next;
                seg.modified = SystemTime::now();
            }
            s.durable_end = s.durable_end.max(next);
            s.segments.push(SegmentMeta {
                base: next,
                path: path.clone(),
                durable_len: 0,
                end: next,
                modified: SystemTime::now(),
            });
        });
        a.file = file;
        a.path = path;
        a.base = next;
        a.len = 0;
        a.synced_len = 0;
        a.synced_next = next;
        Ok(())
    }

    /// Appends one request's frame (not synced yet).
    fn write(&mut self, r: &Request) -> Result<Appended, LogError> {
        let frame_len = (frame::HEADER + frame::BODY_PREFIX + r.payload.len()) as u64;
        if let Some(limit) = self.inner.cfg.max_bytes {
            let used = self.inner.used.load(Ordering::Relaxed);
            if used + frame_len > limit {
                return Err(LogError::Full {
                    dir: self.inner.cfg.dir.display().to_string(),
                    used,
                    limit,
                });
            }
        }
        let segment_bytes = self.inner.cfg.segment_bytes;
        let needs_roll = {
            let a = active(&self.inner, &mut self.active, &r.topic, r.partition)?;
            a.len > 0 && a.len + frame_len > segment_bytes
        };
        if needs_roll {
            self.roll(&r.topic, r.partition)?;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let a = active(&self.inner, &mut self.active, &r.topic, r.partition)?;
        let base_offset = a.next;
        // A large payload is written after its frame's head, not copied
        // next to it: a value of hundreds of MB costs no second copy, and
        // the buffer kept between writes stays small.
        let written = if r.payload.len() <= COPY_PAYLOAD_BELOW {
            frame::encode(&mut buf, base_offset, r.count, &r.payload);
            a.file.write_all_at(&buf, a.len).map(|()| buf.len())
        } else {
            let head = frame::head(base_offset, r.count, &r.payload);
            a.file
                .write_all_at(&head, a.len)
                .and_then(|()| a.file.write_all_at(&r.payload, a.len + head.len() as u64))
                .map(|()| head.len() + r.payload.len())
        };
        let len = match written {
            Ok(len) => len,
            Err(e) => {
                // Whatever part of the frame reached the file is cut again.
                let _ = a.file.set_len(a.len);
                let path = a.path.clone();
                self.buf = buf;
                return Err(LogError::io(&path, "writing", e));
            }
        };
        a.len += len as u64;
        a.next += i64::from(r.count);
        self.inner.used.fetch_add(len as u64, Ordering::Relaxed);
        self.buf = buf;
        Ok(Appended {
            base_offset,
            count: r.count,
        })
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let mut written: Vec<(Done, ProducerId, Appended)> = Vec::with_capacity(group.len());
        let mut touched: Vec<(Arc<str>, u32)> = Vec::new();
        // Completed after the appends before them, so that a producer
        // hears of its appends in order.
        let mut refused: Vec<(Done, LogError)> = Vec::new();
        for mut r in group {
            if let Some(why) = self.failed.get(&r.producer) {
                let why = why.clone();
                refused.push((
                    r.done,
                    LogError::Stopped(format!("an earlier append of this producer failed: {why}")),
                ));
                continue;
            }
            match self.write(&r) {
                Ok(a) => {
                    if let Some(placed) = r.placed.take() {
                        placed(a);
                    }
                    let key = (Arc::clone(&r.topic), r.partition);
                    if !touched.contains(&key) {
                        touched.push(key);
                    }
                    written.push((r.done, r.producer, a));
                }
                Err(e) => {
                    self.failed.insert(r.producer, e.to_string());
                    refused.push((r.done, e));
                }
            }
        }
        if let Err(e) = self.sync(&touched) {
            let why = e.to_string();
            for (done, producer, _) in written {
                self.failed.insert(producer, why.clone());
                done(Err(LogError::Stopped(format!(
                    "syncing the log failed: {why}"
                ))));
            }
            self.rewind(&touched);
        } else {
            self.publish(&touched);
            for (done, _, a) in written {
                done(Ok(a));
            }
        }
        for (done, e) in refused {
            done(Err(e));
        }
    }

    fn sync(&mut self, touched: &[(Arc<str>, u32)]) -> Result<(), LogError> {
        for key in touched {
            if let Some(a) = self.active.get(key) {
                if a.len > a.synced_len {
                    a.file
                        .sync_data()
                        .map_err(|e| LogError::io(&a.path, "syncing", e))?;
                }
            }
        }
        Ok(())
    }

    /// After a failed sync: what was not synced is cut off again.
    fn rewind(&mut self, touched: &[(Arc<str>, u32)]) {
        for key in touched {
            if let Some(a) = self.active.get_mut(key) {
                if a.len > a.synced_len {
                    let _ = a.file.set_len(a.synced_len);
                    self.inner
                        .used
                        .fetch_sub(a.len - a.synced_len, Ordering::Relaxed);
                    a.len = a.synced_len;
                    a.next = a.synced_next;
                }
            }
        }
    }

    /// Makes what was synced readable.
    fn publish(&mut self, touched: &[(Arc<str>, u32)]) {
        if touched.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for key in touched {
            if let Some(a) = self.active.get_mut(key) {
                a.synced_len = a.len;
                a.synced_next = a.next;
                let (base, len, next) = (a.base, a.len, a.next);
                a.part.update(|s| {
                    if let Some(seg) = s.segments.iter_mut().rev().find(|g| g.base == base) {
                        seg.durable_len = len;
                        seg.end = next;
                        seg.modified = now;
                    }
                    s.durable_end = s.durable_end.max(next);
                });
            }
        }
        self.inner.synced.send_modify(|v| *v += 1);
    }
}

/// The active segment of a partition, opened on first use.
fn active<'a>(
    inner: &Inner,
    map: &'a mut HashMap<(Arc<str>, u32), Active>,
    topic: &Arc<str>,
    partition: u32,
) -> Result<&'a mut Active, LogError> {
    let key = (Arc::clone(topic), partition);
    if !map.contains_key(&key) {
        let part = inner.partition(topic, partition)?;
        let shared = part.read();
        let (base, len, next, path) = match shared.segments.last() {
            Some(s) => (s.base, s.durable_len, s.end, s.path.clone()),
            None => {
                let base = shared.durable_end;
                let path = part.dir.join(segment_name(base));
                (base, 0, base, path)
            }
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, "opening", e))?;
        if shared.segments.is_empty() {
            sync_dir(&part.dir).map_err(|e| LogError::io(&part.dir, "syncing", e))?;
            part.update(|s| {
                s.segments.push(SegmentMeta {
                    base,
                    path: path.clone(),
                    durable_len: 0,
                    end: base,
                    modified: SystemTime::now(),
                })
            });
        }
        map.insert(
            key.clone(),
            Active {
                part,
                file,
                path,
                base,
                len,
                synced_len: len,
                next,
                synced_next: next,
            },
        );
    }
    map.get_mut(&key)
        .ok_or_else(|| LogError::Stopped("active segment vanished".into()))
}

/// Deletes old segments of every partition as the retention settings say,
/// never the one appended to and never one a live group has not read.
pub(crate) fn enforce_retention(inner: &Inner) -> Result<(), LogError> {
    let _one_at_a_time = inner
        .retention
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = &inner.cfg;
    if cfg.retention.is_none() && cfg.retention_bytes.is_none() {
        return Ok(());
    }
    let topics: Vec<(String, Arc<crate::Topic>)> = inner
        .topics
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(n, t)| (n.clone(), Arc::clone(t)))
        .collect();
    let floor = inner
        .floor
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = SystemTime::now();
    for (name, topic) in topics {
        for (p, part) in topic.partitions.iter().enumerate() {
            let keep_from = floor.as_ref().and_then(|f| f(&name, p as u32));
            let shared = part.read();
            let mut total: u64 = shared.segments.iter().map(|s| s.durable_len).sum();
            let mut doomed = Vec::new();
            for seg in shared
                .segments
                .iter()
                .take(shared.segments.len().saturating_sub(1))
            {
                let read_by_all = keep_from.is_none_or(|f| seg.end <= f);
                let too_old = cfg
                    .retention
                    .is_some_and(|r| now.duration_since(seg.modified).unwrap_or_default() > r);
                let too_big = cfg.retention_bytes.is_some_and(|b| total > b);
                if !(read_by_all && (too_old || too_big)) {
                    break;
                }
                total -= seg.durable_len;
                doomed.push(seg.clone());
            }
            if doomed.is_empty() {
                continue;
            }
            for seg in &doomed {
                match std::fs::remove_file(&seg.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(LogError::io(&seg.path, "deleting", e)),
                }
                inner.used.fetch_sub(seg.durable_len, Ordering::Relaxed);
                tracing::debug!(segment = %seg.path.display(), "retention deleted a segment");
            }
            let gone = doomed.len();
            part.update(|s| {
                s.segments.drain(..gone.min(s.segments.len()));
                if let Some(first) = s.segments.first() {
                    s.log_start = first.base;
                }
            });
        }
    }
    Ok(())
}
