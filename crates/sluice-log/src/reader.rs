//! Reading a partition: frames in offset order, only as far as they were
//! synced.

use std::fs::File;
use std::sync::Arc;

use crate::frame::{self, BODY_PREFIX};
use crate::partition::PartitionState;
use crate::LogError;

/// A frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Records in it.
    pub count: u32,
    /// Records before this many are below the position the reader was
    /// asked for (the reader began inside this frame): skip them.
    pub skip: u32,
    /// The records, as the producer encoded them.
    pub payload: Vec<u8>,
}

struct Cursor {
    base: i64,
    file: File,
    pos: u64,
}

/// Reads one partition from a position on. Blocking file I/O: call it off
/// the async threads.
pub struct PartitionReader {
    part: Arc<PartitionState>,
    next: i64,
    cursor: Option<Cursor>,
    skipped: u64,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("dir", &self.part.dir)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    pub(crate) fn new(part: Arc<PartitionState>, from: i64) -> Self {
        PartitionReader {
            part,
            next: from,
            cursor: None,
            skipped: 0,
        }
    }

    /// The offset of the next record to read.
    pub fn position(&self) -> i64 {
        self.next
    }

    /// Records that were no longer kept when this reader reached them
    /// (retention deleted them first), in total.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Reads whole frames from the position on, up to about `max_bytes`
    /// (at least one frame when any is readable); empty when nothing new was
    /// synced.
    pub fn read(&mut self, max_bytes: usize) -> Result<Vec<Frame>, LogError> {
        let shared = self.part.read();
        if self.next < shared.log_start {
            self.skipped += (shared.log_start - self.next) as u64;
            tracing::warn!(
                partition = %self.part.dir.display(),
                "records {}..{} were deleted by retention before they were read",
                self.next,
                shared.log_start
            );
            self.next = shared.log_start;
            self.cursor = None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while self.next < shared.durable_end && bytes < max_bytes {
            let Some(seg) = shared
                .segments
                .iter()
                .rev()
                .find(|s| s.base <= self.next)
                .cloned()
            else {
                break;
            };
            if self.next >= seg.end {
                // Segments are contiguous: the next one would start here.
                break;
            }
            if self.cursor.as_ref().is_none_or(|c| c.base != seg.base) {
                let file =
                    File::open(&seg.path).map_err(|e| LogError::io(&seg.path, "opening", e))?;
                self.cursor = Some(Cursor {
                    base: seg.base,
                    file,
                    pos: 0,
                });
            }
            let Some(c) = self.cursor.as_mut() else { break };
            let corrupt = |pos: u64| LogError::Corrupt {
                path: seg.path.display().to_string(),
                message: format!(
                    "no valid frame at byte {pos} (below the synced length {})",
                    seg.durable_len
                ),
            };
            // The header first: frames before the position are stepped over
            // without reading their bodies.
            let head = frame::read_at(&mut c.file, c.pos, seg.durable_len, false, None)
                .map_err(|e| LogError::io(&seg.path, "reading", e))?
                .ok_or_else(|| corrupt(c.pos))?;
            if head.end_offset() <= self.next {
                c.pos += head.len;
                continue;
            }
            let mut body = Vec::new();
            let info = frame::read_at(&mut c.file, c.pos, seg.durable_len, true, Some(&mut body))
                .map_err(|e| LogError::io(&seg.path, "reading", e))?
                .ok_or_else(|| corrupt(c.pos))?;
            c.pos += info.len;
            let skip = (self.next - info.base_offset).max(0) as u32;
            body.drain(..BODY_PREFIX);
            bytes += body.len();
            out.push(Frame {
                base_offset: info.base_offset,
                count: info.count,
                skip,
                payload: body,
            });
            self.next = info.end_offset();
        }
        Ok(out)
    }
}
