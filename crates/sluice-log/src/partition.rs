//! One topic partition on disk: a directory of segment files named by the
//! offset of their first record, and what readers may see of them (only
//! what was synced).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use crate::frame;
use crate::LogError;

/// A segment as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// Offset of its first record.
    pub base: i64,
    /// Its file.
    pub path: PathBuf,
    /// Bytes synced (readers stop there).
    pub durable_len: u64,
    /// Offset after its last synced record.
    pub end: i64,
    /// Last write (for retention by age).
    pub modified: SystemTime,
}

/// What readers may see of a partition.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    /// Oldest first; the last one is the one appended to.
    pub segments: Vec<SegmentMeta>,
    /// Offset of the first record still kept.
    pub log_start: i64,
    /// Offset after the last synced record.
    pub durable_end: i64,
}

/// A topic partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub dir: PathBuf,
    pub shared: RwLock<Shared>,
}

/// The file name of the segment starting at `base`.
pub(crate) fn segment_name(base: i64) -> String {
    format!("{base:020}.log")
}

impl PartitionState {
    pub(crate) fn read(&self) -> Shared {
        self.shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Shared)) {
        let mut s = self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
    }

    /// Opens (creating if missing) the partition in `dir`, cutting its last
    /// segment after the last whole, valid frame: what a crash left half
    /// written was never acknowledged.
    pub(crate) fn open(dir: &Path) -> Result<PartitionState, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, "creating", e))?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| LogError::io(dir, "listing", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io(dir, "listing", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") {
                // A half-written file of an atomic replace.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment_name(base));
            let meta = std::fs::metadata(&path).map_err(|e| LogError::io(&path, "reading", e))?;
            let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
            let last = i + 1 == bases.len();
            let (len, end) = if last {
                recover(&path, base, meta.len())?
            } else {
                // Rolled segments were synced before the next one was used;
                // the next one's base is this one's end.
                (meta.len(), bases[i + 1])
            };
            segments.push(SegmentMeta {
                base,
                path,
                durable_len: len,
                end,
                modified,
            });
        }
        let log_start = segments.first().map_or(0, |s| s.base);
        let durable_end = segments.last().map_or(0, |s| s.end);
        Ok(PartitionState {
            dir: dir.to_path_buf(),
            shared: RwLock::new(Shared {
                segments,
                log_start,
                durable_end,
            }),
        })
    }
}

/// Validates the segment at `path` frame by frame and cuts it after the
/// last valid frame; its valid length and end offset.
fn recover(path: &Path, base: i64, len: u64) -> Result<(u64, i64), LogError> {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io(path, "opening", e))?;
    let mut pos = 0u64;
    let mut end = base;
    loop {
        match frame::read_at(&mut f, pos, len, true, None) {
            Ok(Some(info)) if info.base_offset == end => {
                pos += info.len;
                end = info.end_offset();
            }
            Ok(_) => break,
            Err(e) => return Err(LogError::io(path, "reading", e)),
        }
    }
    if pos < len {
        tracing::warn!(
            segment = %path.display(),
            "cutting {} bytes written after the last complete frame (an interrupted write, never acknowledged)",
            len - pos
        );
        f.set_len(pos)
            .and_then(|()| f.sync_all())
            .map_err(|e| LogError::io(path, "truncating", e))?;
    }
    Ok((pos, end))
}
