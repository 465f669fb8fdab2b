//! Sluice's local durable log: what the in-process transport keeps records
//! in when no Kafka cluster is configured, with Kafka's topic semantics on
//! one machine.
//!
//! - A topic has partitions; a partition is a directory of segment files,
//!   each a sequence of checksummed frames ([`frame`]), each frame a batch of
//!   records with consecutive offsets. The payload of a frame is opaque
//!   here: the transport encodes its records.
//! - One writer thread appends and syncs ([`Appender`]): requests are
//!   appended in the order they arrive, then synced together (group
//!   commit), and only then completed, in order. Readers see only synced
//!   frames, so a consumer never reads a record a crash could take back.
//! - On open, each partition's last segment is cut after its last valid
//!   frame: a torn write was never acknowledged.
//! - Consumer groups keep their positions in [`GroupStore`].
//! - Retention deletes whole old segments by age and by size, but never one
//!   that a live group (see [`Log::set_retention_floor`]) has not read.
//! - `max_bytes` caps the whole log: an append beyond it fails (transient),
//!   as a full disk does, and nothing of it is acknowledged.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub mod frame;
mod groups;
mod partition;
mod reader;
mod writer;

pub use groups::{GroupStore, Positions};
pub use reader::{Frame, PartitionReader};
pub use writer::{Appended, Appender, Placed, ProducerId};

use partition::PartitionState;

/// Where the log lives and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The log's directory.
    pub dir: PathBuf,
    /// A segment is closed and a new one begun once it holds this many
    /// bytes.
    pub segment_bytes: u64,
    /// Segments whose last write is older are deleted (once read by every
    /// live group). None: kept regardless of age.
    pub retention: Option<Duration>,
    /// A partition keeps at most about this many bytes (whole segments;
    /// unread ones are kept). None: no size limit.
    pub retention_bytes: Option<u64>,
    /// The whole log may hold at most this many bytes; appends beyond fail.
    /// None: only the disk limits it.
    pub max_bytes: Option<u64>,
}

impl LogConfig {
    /// Defaults for `dir`: 64 MiB segments, kept one day or up to 4 GiB per
    /// partition, no overall cap.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            retention: Some(Duration::from_secs(24 * 3600)),
            retention_bytes: Some(4 << 30),
            max_bytes: None,
        }
    }
}

/// A log failure, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing a file failed.
    #[error("local log: {action} {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log reached its configured `max_bytes`.
    #[error("local log {dir} is full: it holds {used} bytes and may hold {limit} (local.log.max.bytes); records wait until sinks have read enough for retention to free space, or the limit is raised")]
    Full {
        /// The log's directory.
        dir: String,
        /// Bytes held.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// A file does not hold what the log wrote.
    #[error("local log: {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Another process has the log open.
    #[error("local log {dir} is in use by another process (another worker with the same local.log.dir, or the same offset file in the same directory): give each worker its own local.log.dir")]
    Locked {
        /// The log's directory.
        dir: String,
    },
    /// A topic or partition that does not exist.
    #[error("local log: no topic '{topic}' partition {partition}")]
    NoPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The writer has stopped (the log is closing, or an earlier write of
    /// the same producer failed).
    #[error("local log: {0}")]
    Stopped(String),
}

impl LogError {
    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    }

    /// Whether retrying later may succeed: a full disk or log, an I/O
    /// error, a stopped writer. Corrupt files and unknown partitions are
    /// definite.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            LogError::Corrupt { .. } | LogError::NoPartition { .. } | LogError::Locked { .. }
        )
    }

    /// Whether this is a full disk or log.
    pub fn is_full(&self) -> bool {
        match self {
            LogError::Full { .. } => true,
            LogError::Io { source, .. } => {
                source.raw_os_error() == Some(libc::ENOSPC)
                    || source.raw_os_error() == Some(libc::EDQUOT)
            }
            _ => false,
        }
    }
}

/// Writes `path` whole or not at all: a temporary file, synced, renamed
/// over it, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LogError::io(path, "writing", e)
    })
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A topic name as a directory name: safe characters kept, others `%XX`.
fn dir_name(topic: &str) -> String {
    let mut out = String::with_capacity(topic.len());
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn topic_of(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) struct Topic {
    pub(crate) partitions: Vec<Arc<PartitionState>>,
}

/// Returns the lowest offset a live group still needs of a partition (None:
/// no live group reads it).
pub type RetentionFloor = Box<dyn Fn(&str, u32) -> Option<i64> + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) cfg: LogConfig,
    pub(crate) topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Bumped when a topic is created.
    pub(crate) topics_changed: watch::Sender<u64>,
    /// Bumped after every sync that made records visible.
    pub(crate) synced: watch::Sender<u64>,
    /// Bytes of all segments.
    pub(crate) used: AtomicU64,
    pub(crate) floor: RwLock<Option<RetentionFloor>>,
    /// One retention pass at a time (the writer and readers' commits both
    /// run it).
    pub(crate) retention: std::sync::Mutex<()>,
    create: std::sync::Mutex<()>,
    /// Held (locked) while the log is open, so that no other process
    /// writes it.
    _lock: std::fs::File,
}

impl Inner {
    pub(crate) fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionState>, LogError> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize).cloned())
            .ok_or_else(|| LogError::NoPartition {
                topic: topic.to_string(),
                partition,
            })
    }
}

/// The log: its topics, a writer and readers.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    appender: Appender,
    groups: GroupStore,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens the log in `cfg.dir` (created if missing), recovering every
    /// partition, and starts its writer thread.
    pub fn open(cfg: LogConfig) -> Result<Log, LogError> {
        let topics_dir = cfg.dir.join("topics");
        std::fs::create_dir_all(&topics_dir)
            .map_err(|e| LogError::io(&topics_dir, "creating", e))?;
        let lock_path = cfg.dir.join("LOCK");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, "opening", e))?;
        // A log closed in this process a moment ago is released once its
        // writer thread ends: wait a little for it, not for another process.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LogError::Locked {
                        dir: cfg.dir.display().to_string(),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(LogError::io(&lock_path, "locking", e))
                }
            }
        }
        let groups = GroupStore::open(&cfg.dir)?;
        let mut topics = BTreeMap::new();
        let mut used = 0u64;
        let entries =
            std::fs::read_dir(&topics_dir).map_err(|e| LogError::io(&topics_dir, "listing", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(&topics_dir, "listing", e))?;
            let Some(name) = entry.file_name().to_str().and_then(topic_of) else {
                continue;
            };
            let dir = entry.path();
            let count_file = dir.join("partitions");
            let count = match std::fs::read_to_string(&count_file) {
                Ok(t) => t.trim().parse::<u32>().map_err(|_| LogError::Corrupt {
                    path: count_file.display().to_string(),
                    message: format!("not a partition count: {t:?}"),
                })?,
                // Created but its count never written: nothing was appended.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LogError::io(&count_file, "reading", e)),
            };
            let mut partitions = Vec::with_capacity(count as usize);
            for p in 0..count {
                let part = PartitionState::open(&dir.join(p.to_string()))?;
                used += part
                    .read()
                    .segments
                    .iter()
                    .map(|s| s.durable_len)
                    .sum::<u64>();
                partitions.push(Arc::new(part));
            }
            topics.insert(name, Arc::new(Topic { partitions }));
        }
        let inner = Arc::new(Inner {
            cfg,
            topics: RwLock::new(topics),
            topics_changed: watch::channel(0).0,
            synced: watch::channel(0).0,
            used: AtomicU64::new(used),
            floor: RwLock::new(None),
            retention: std::sync::Mutex::new(()),
            create: std::sync::Mutex::new(()),
            _lock: lock,
        });
        let appender = writer::start(Arc::clone(&inner))?;
        Ok(Log {
            inner,
            appender,
            groups,
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.cfg.dir
    }

    /// The topics and their partition counts.
    pub fn topics(&self) -> Vec<(String, u32)> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, t)| (n.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Partitions of `topic`, if it exists.
    pub fn partitions(&self, topic: &str) -> Option<u32> {
        self.inner
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .map(|t| t.partitions.len() as u32)
    }

    /// Creates `topic` with `partitions` partitions unless it exists; its
    /// partition count.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        if let Some(n) = self.partitions(topic) {
            return Ok(n);
        }
        let _serial = self
            .inner
            .create
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = self.partitions(topic) {
            return Ok(n);
        }
        let partitions = partitions.max(1);
        let dir = self.inner.cfg.dir.join("topics").join(dir_name(topic));
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            parts.push(Arc::new(PartitionState::open(&dir.join(p.to_string()))?));
        }
        // The count is written last: a topic without it was never used.
        write_atomically(&dir.join("partitions"), partitions.to_string().as_bytes())?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(|e| LogError::io(parent, "syncing", e))?;
        }
        self.inner
            .topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.to_string(), Arc::new(Topic { partitions: parts }));
        self.inner.topics_changed.send_modify(|v| *v += 1);
        Ok(partitions)
    }

    /// Told whenever a topic is created.
    pub fn topic_changes(&self) -> watch::Receiver<u64> {
        self.inner.topics_changed.subscribe()
    }

    /// Told whenever newly synced records became readable.
    pub fn sync_changes(&self) -> watch::Receiver<u64> {
        self.inner.synced.subscribe()
    }

    /// The writer.
    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    /// A reader of `topic` `partition` from `offset` on (moved up to the
    /// first record kept when `offset` is older).
    pub fn reader(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<PartitionReader, LogError> {
        Ok(PartitionReader::new(
            self.inner.partition(topic, partition)?,
            offset,
        ))
    }

    /// (first kept offset, offset after the last synced record) of a
    /// partition.
    pub fn bounds(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogError> {
        let s = self.inner.partition(topic, partition)?.read();
        Ok((s.log_start, s.durable_end))
    }

    /// Bytes the log holds.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The consumer groups' positions.
    pub fn groups(&self) -> &GroupStore {
        &self.groups
    }

    /// Sets what retention must keep: segments at or after the offset
    /// `floor` returns for a partition stay.
    pub fn set_retention_floor(&self, floor: RetentionFloor) {
        *self
            .inner
            .floor
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(floor);
    }

    /// Applies retention now (it also runs after writes, at most once a
    /// second); call it when readers moved on, so space returns even while
    /// nothing is written.
    pub fn enforce_retention(&self) -> Result<(), LogError> {
        writer::enforce_retention(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_of_the_same_log_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = Log::open(LogConfig::new(dir.path())).expect("open");
        let err = Log::open(LogConfig::new(dir.path())).expect_err("locked");
        assert!(matches!(err, LogError::Locked { .. }), "{err}");
        drop(first);
        Log::open(LogConfig::new(dir.path())).expect("free once closed");
    }

    #[test]
    fn topic_names_map_to_directories_and_back() {
        for t in [
            "myserver.retail.orders_info",
            "a/b",
            ".hidden",
            "ünï",
            "x%y",
        ] {
            let d = dir_name(t);
            assert!(!d.contains('/') && !d.starts_with('.'), "{d}");
            assert_eq!(topic_of(&d).as_deref(), Some(t));
        }
    }
}
