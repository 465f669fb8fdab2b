//! Bounded-memory buffer for streamed (in-progress) transactions.
//!
//! With protocol version 2 and `streaming = on`, PostgreSQL sends the changes
//! of a large transaction in blocks (Stream Start ... Stream Stop) before it
//! knows whether the transaction will commit, interleaved with other
//! transactions. Sluice may only emit events once Stream Commit arrives, and
//! must emit nothing for an aborted transaction, so the raw messages are held
//! here per top-level xid. Memory across all transactions is capped; the
//! rest goes to one anonymous temporary file per transaction, which the OS
//! deletes when it is closed (also if the process dies).
//!
//! # Subtransaction aborts
//!
//! Inside a streamed block the xid in Relation/Type/Insert/Update/Delete/
//! Truncate messages is the xid of the *subtransaction* that made the change
//! (pgoutput sends `change->txn->xid`), while Stream Abort carries the
//! top-level xid and the aborted `subxid`. A subtransaction abort therefore
//! discards the first buffered message of `subxid` and *everything after it*,
//! which is what PostgreSQL's own subscriber does (it truncates its spool
//! file at that point). That is correct because one backend runs the
//! transaction: while a subtransaction is open every change belongs to it or
//! to its children, and once it has ended it can only be rolled back together
//! with an ancestor that is still open, whose abort covers all later changes
//! too. When `ROLLBACK TO SAVEPOINT` aborts nested subtransactions, PostgreSQL
//! sends one Stream Abort per aborted subxid that had streamed changes; each
//! truncates at its own first message, so their order does not matter.
//! A subxid with no buffered message is a no-op.
//!
//! One limit inherited from the protocol: transactional logical decoding
//! messages (`'M'`) carry the top-level xid even when emitted inside a
//! subtransaction, so one emitted in an aborted subtransaction *before* that
//! subtransaction's first data change is kept.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;
use thiserror::Error;

use crate::lsn::Lsn;

/// Bookkeeping charged per in-memory record on top of its payload, so that
/// many tiny messages cannot exceed the limit through per-record overhead.
/// Twice the record size covers the slack of a `Vec` that grows by doubling.
const RECORD_OVERHEAD: usize = 2 * std::mem::size_of::<MemRecord>();

/// Spill record header: WAL start (8 bytes) and payload length (4 bytes).
const RECORD_HEADER: usize = 8 + 4;

/// Buffer size of each spill file's writer and reader.
const IO_BUFFER: usize = 64 * 1024;

/// Failure of the spill buffer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpillError {
    /// Reading or writing a spill file failed.
    #[error("spill file of transaction {xid}: {operation} failed: {source}")]
    Io {
        /// Top-level transaction id.
        xid: u32,
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A message is too large for the spill record format (4 GiB).
    #[error("transaction {xid}: message of {len} bytes is too large to buffer")]
    RecordTooLarge {
        /// Top-level transaction id.
        xid: u32,
        /// Message length.
        len: usize,
    },
    /// A spill file did not contain what was written to it.
    #[error("spill file of transaction {xid} is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        /// Top-level transaction id.
        xid: u32,
        /// Offset in the spill file.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An earlier I/O failure left this transaction's buffer incomplete, so
    /// it can no longer be replayed faithfully.
    #[error("transaction {xid} cannot be replayed: an earlier spill operation failed: {reason}")]
    Poisoned {
        /// Top-level transaction id.
        xid: u32,
        /// The earlier failure.
        reason: String,
    },
}

#[derive(Debug)]
struct MemRecord {
    lsn: Lsn,
    data: Bytes,
}

fn cost(data_len: usize) -> usize {
    data_len.saturating_add(RECORD_OVERHEAD)
}

/// Where a subtransaction's first message is, so its abort can cut there.
#[derive(Debug)]
struct SubxactMark {
    subxid: u32,
    first_seq: u64,
    /// Byte offset in the spill file, once the record has been spilled.
    file_offset: Option<u64>,
}

#[derive(Debug)]
struct SpillFile {
    writer: BufWriter<File>,
    len: u64,
}

/// One transaction's records, numbered by `seq` in arrival order. Records
/// `[0, spilled)` are in the file and `[spilled, next_seq)` in `memory`:
/// keeping memory as the *suffix* lets eviction simply append to the file,
/// preserving order without ever rewriting it.
#[derive(Debug, Default)]
struct Txn {
    file: Option<SpillFile>,
    spilled: u64,
    memory: Vec<MemRecord>,
    memory_bytes: usize,
    next_seq: u64,
    marks: Vec<SubxactMark>,
    mark_index: HashMap<u32, usize>,
    poisoned: Option<String>,
}

/// Buffers the raw messages of streamed transactions per top-level xid,
/// keeping at most `memory_limit_bytes` in memory across all of them.
#[derive(Debug)]
pub struct StreamedTxns {
    dir: Option<PathBuf>,
    memory_limit: usize,
    memory_used: usize,
    txns: HashMap<u32, Txn>,
}

impl StreamedTxns {
    /// Creates an empty buffer. Spill files go to `dir`, or to the system
    /// temporary directory when `None`.
    pub fn new(dir: Option<PathBuf>, memory_limit_bytes: usize) -> Self {
        StreamedTxns {
            dir,
            memory_limit: memory_limit_bytes,
            memory_used: 0,
            txns: HashMap::new(),
        }
    }

    /// Bytes currently charged against the memory limit (payloads plus a
    /// fixed per-record overhead). Never exceeds the limit.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// The memory limit given to [`StreamedTxns::new`].
    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// Number of transactions with buffered messages.
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    /// True when no transaction has buffered messages.
    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    /// Number of spill files currently open.
    pub fn spill_files(&self) -> usize {
        self.txns.values().filter(|t| t.file.is_some()).count()
    }

    /// Total bytes in spill files.
    pub fn spilled_bytes(&self) -> u64 {
        self.txns
            .values()
            .filter_map(|t| t.file.as_ref().map(|f| f.len))
            .sum()
    }

    /// Buffers one raw pgoutput message received inside a streamed block of
    /// top-level transaction `xid`.
    ///
    /// The subtransaction is read from the message itself: for Relation,
    /// Type, Insert, Update, Delete, Truncate and Message, bytes 1..5 hold
    /// the streamed xid (protocol >= 2); other messages are attributed to
    /// `xid`. The payload is copied so the accounting reflects what is really
    /// retained rather than a slice pinning a larger receive buffer.
    pub fn push(&mut self, xid: u32, wal_start: Lsn, data: &Bytes) -> Result<(), SpillError> {
        let subxid = streamed_change_xid(data).unwrap_or(xid);
        self.push_subxact(xid, subxid, wal_start, data)
    }

    /// Like [`StreamedTxns::push`], with the subtransaction given explicitly
    /// (use `subxid == xid` for the top-level transaction).
    pub fn push_subxact(
        &mut self,
        xid: u32,
        subxid: u32,
        wal_start: Lsn,
        data: &Bytes,
    ) -> Result<(), SpillError> {
        if u32::try_from(data.len()).is_err() {
            return Err(SpillError::RecordTooLarge {
                xid,
                len: data.len(),
            });
        }
        let record_cost = cost(data.len());
        if record_cost > self.memory_limit {
            // Too big to ever sit in memory: the transaction's memory suffix
            // must reach the file first so the file stays in arrival order.
            self.evict(xid)?;
        } else {
            while self.memory_used.saturating_add(record_cost) > self.memory_limit {
                let Some(victim) = self.largest_in_memory() else {
                    break;
                };
                self.evict(victim)?;
            }
        }
        let txn = self.txns.entry(xid).or_default();
        if let Some(reason) = &txn.poisoned {
            return Err(SpillError::Poisoned {
                xid,
                reason: reason.clone(),
            });
        }
        let seq = txn.next_seq;
        if subxid != xid && !txn.mark_index.contains_key(&subxid) {
            txn.mark_index.insert(subxid, txn.marks.len());
            txn.marks.push(SubxactMark {
                subxid,
                first_seq: seq,
                file_offset: None,
            });
        }
        if record_cost > self.memory_limit {
            let dir = self.dir.clone();
            let result: Result<(), SpillError> = (|| {
                let file = open_file(&mut txn.file, dir.as_ref(), xid)?;
                if let Some(mark) = txn.marks.last_mut() {
                    if mark.first_seq == seq {
                        mark.file_offset = Some(file.len);
                    }
                }
                write_record(file, xid, wal_start, data)
            })();
            if let Err(e) = result {
                txn.poisoned = Some(e.to_string());
                return Err(e);
            }
            txn.spilled += 1;
        } else {
            txn.memory.push(MemRecord {
                lsn: wal_start,
                data: Bytes::copy_from_slice(data),
            });
            txn.memory_bytes += record_cost;
            self.memory_used += record_cost;
        }
        txn.next_seq += 1;
        Ok(())
    }

    /// Handles Stream Abort: with `subxid == xid` the whole transaction is
    /// dropped; otherwise the subtransaction's messages and everything
    /// buffered after its first message are dropped (see the module docs).
    ///
    /// Cutting a spill file can fail; the transaction is then marked broken
    /// and its [`StreamedTxns::commit`] returns [`SpillError::Poisoned`]
    /// rather than replaying changes that were meant to be discarded.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if subxid == xid {
            if let Some(txn) = self.txns.remove(&xid) {
                self.memory_used -= txn.memory_bytes;
            }
            return;
        }
        let Some(txn) = self.txns.get_mut(&xid) else {
            return;
        };
        let Some(&mark_pos) = txn.mark_index.get(&subxid) else {
            return;
        };
        let Some(&SubxactMark {
            first_seq,
            file_offset,
            ..
        }) = txn.marks.get(mark_pos)
        else {
            return;
        };
        let freed = if first_seq >= txn.spilled {
            let keep = usize::try_from(first_seq - txn.spilled).unwrap_or(usize::MAX);
            let freed: usize = txn
                .memory
                .get(keep..)
                .unwrap_or_default()
                .iter()
                .map(|r| cost(r.data.len()))
                .sum();
            txn.memory.truncate(keep);
            freed
        } else {
            let freed = txn.memory_bytes;
            txn.memory = Vec::new();
            let cut = match (&mut txn.file, file_offset) {
                (Some(file), Some(offset)) => truncate_file(file, offset),
                _ => Err(io::Error::other(
                    "spilled subtransaction has no file offset",
                )),
            };
            if let Err(source) = cut {
                txn.poisoned = Some(
                    SpillError::Io {
                        xid,
                        operation: "truncating after subtransaction abort",
                        source,
                    }
                    .to_string(),
                );
            }
            txn.spilled = first_seq;
            freed
        };
        txn.memory_bytes -= freed;
        self.memory_used -= freed;
        txn.next_seq = first_seq;
        for mark in txn.marks.drain(mark_pos..) {
            txn.mark_index.remove(&mark.subxid);
        }
        if txn.next_seq == 0 && txn.poisoned.is_none() {
            // Nothing left: release the file descriptor now.
            self.txns.remove(&xid);
        }
    }

    /// Handles Stream Commit: removes the transaction and returns its
    /// messages as `(wal_start, message)` in arrival order. The spill file is
    /// deleted when the returned iterator is dropped. An xid with nothing
    /// buffered yields an empty iterator.
    ///
    /// The transaction's in-memory messages move into the iterator and stop
    /// counting against the limit, so replay one commit before buffering
    /// more data (the replication stream is sequential, so this is natural).
    pub fn commit(&mut self, xid: u32) -> Result<Replay, SpillError> {
        let Some(txn) = self.txns.remove(&xid) else {
            return Ok(Replay::empty(xid));
        };
        self.memory_used -= txn.memory_bytes;
        if let Some(reason) = txn.poisoned {
            return Err(SpillError::Poisoned { xid, reason });
        }
        let file = match txn.file {
            Some(spill) => {
                let len = spill.len;
                let mut file = spill.writer.into_inner().map_err(|e| SpillError::Io {
                    xid,
                    operation: "flushing",
                    source: e.into_error(),
                })?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|source| SpillError::Io {
                        xid,
                        operation: "rewinding",
                        source,
                    })?;
                Some(FileReplay {
                    reader: BufReader::with_capacity(IO_BUFFER, file),
                    offset: 0,
                    len,
                    records_left: txn.spilled,
                })
            }
            None => None,
        };
        Ok(Replay {
            xid,
            file,
            memory: txn.memory.into_iter(),
            failed: false,
        })
    }

    fn largest_in_memory(&self) -> Option<u32> {
        self.txns
            .iter()
            .filter(|(_, t)| t.memory_bytes > 0)
            .max_by_key(|(_, t)| t.memory_bytes)
            .map(|(&xid, _)| xid)
    }

    /// Appends `xid`'s in-memory records to its spill file.
    fn evict(&mut self, xid: u32) -> Result<(), SpillError> {
        let Some(txn) = self.txns.get_mut(&xid) else {
            return Ok(());
        };
        if txn.memory.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut txn.memory);
        let freed = std::mem::take(&mut txn.memory_bytes);
        self.memory_used -= freed;
        let first_unspilled_mark = txn.marks.partition_point(|m| m.first_seq < txn.spilled);
        let result: Result<(), SpillError> = (|| {
            let file = open_file(&mut txn.file, self.dir.as_ref(), xid)?;
            let mut marks = txn
                .marks
                .get_mut(first_unspilled_mark..)
                .unwrap_or_default()
                .iter_mut()
                .peekable();
            for (i, record) in records.iter().enumerate() {
                let seq = txn.spilled + i as u64;
                if let Some(mark) = marks.next_if(|m| m.first_seq == seq) {
                    mark.file_offset = Some(file.len);
                }
                write_record(file, xid, record.lsn, &record.data)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                txn.spilled += records.len() as u64;
                Ok(())
            }
            Err(e) => {
                // The records are gone from memory and only partly on disk.
                txn.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// The xid carried by a change message inside a streamed block, if any.
fn streamed_change_xid(data: &[u8]) -> Option<u32> {
    match data.first()? {
        b'R' | b'Y' | b'I' | b'U' | b'D' | b'T' | b'M' => {
            let bytes: [u8; 4] = data.get(1..5)?.try_into().ok()?;
            Some(u32::from_be_bytes(bytes))
        }
        _ => None,
    }
}

fn open_file<'a>(
    slot: &'a mut Option<SpillFile>,
    dir: Option<&PathBuf>,
    xid: u32,
) -> Result<&'a mut SpillFile, SpillError> {
    if slot.is_none() {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|source| SpillError::Io {
            xid,
            operation: "creating",
            source,
        })?;
        *slot = Some(SpillFile {
            writer: BufWriter::with_capacity(IO_BUFFER, file),
            len: 0,
        });
    }
    slot.as_mut().ok_or(SpillError::Corrupt {
        xid,
        offset: 0,
        reason: "spill file vanished",
    })
}

fn write_record(file: &mut SpillFile, xid: u32, lsn: Lsn, data: &[u8]) -> Result<(), SpillError> {
    let len = u32::try_from(data.len()).map_err(|_| SpillError::RecordTooLarge {
        xid,
        len: data.len(),
    })?;
    let io = |source| SpillError::Io {
        xid,
        operation: "writing",
        source,
    };
    file.writer.write_all(&lsn.to_be_bytes()).map_err(io)?;
    file.writer.write_all(&len.to_be_bytes()).map_err(io)?;
    file.writer.write_all(data).map_err(io)?;
    file.len += (RECORD_HEADER + data.len()) as u64;
    Ok(())
}

fn truncate_file(file: &mut SpillFile, offset: u64) -> io::Result<()> {
    file.writer.flush()?;
    file.writer.get_ref().set_len(offset)?;
    file.writer.seek(SeekFrom::Start(offset))?;
    file.len = offset;
    Ok(())
}

#[derive(Debug)]
struct FileReplay {
    reader: BufReader<File>,
    offset: u64,
    len: u64,
    records_left: u64,
}

/// Messages of a committed streamed transaction, in arrival order, as
/// `(wal_start, message)`. Returned by [`StreamedTxns::commit`]; dropping it
/// deletes the spill file. After the first error it yields nothing more.
#[derive(Debug)]
pub struct Replay {
    xid: u32,
    file: Option<FileReplay>,
    memory: std::vec::IntoIter<MemRecord>,
    failed: bool,
}

impl Replay {
    fn empty(xid: u32) -> Replay {
        Replay {
            xid,
            file: None,
            memory: Vec::new().into_iter(),
            failed: false,
        }
    }

    fn next_from_file(&mut self) -> Option<Result<(Lsn, Bytes), SpillError>> {
        let xid = self.xid;
        let fr = self.file.as_mut()?;
        if fr.records_left == 0 {
            self.file = None;
            return None;
        }
        let corrupt = |offset, reason| SpillError::Corrupt {
            xid,
            offset,
            reason,
        };
        let io = |source| SpillError::Io {
            xid,
            operation: "reading",
            source,
        };
        let mut header = [0u8; RECORD_HEADER];
        if fr.len - fr.offset < RECORD_HEADER as u64 {
            return Some(Err(corrupt(fr.offset, "truncated record header")));
        }
        if let Err(e) = fr.reader.read_exact(&mut header) {
            return Some(Err(io(e)));
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&header[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[8..]);
        let lsn = u64::from_be_bytes(lsn);
        let len = u32::from_be_bytes(len);
        let body_offset = fr.offset + RECORD_HEADER as u64;
        // Check the length against the file before allocating for it.
        if u64::from(len) > fr.len - body_offset {
            return Some(Err(corrupt(fr.offset, "record length exceeds file")));
        }
        let mut data = vec![0u8; len as usize];
        if let Err(e) = fr.reader.read_exact(&mut data) {
            return Some(Err(io(e)));
        }
        fr.offset = body_offset + u64::from(len);
        fr.records_left -= 1;
        Some(Ok((lsn, Bytes::from(data))))
    }
}

impl Iterator for Replay {
    type Item = Result<(Lsn, Bytes), SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(item) = self.next_from_file() {
            if item.is_err() {
                self.failed = true;
                self.file = None;
            }
            return Some(item);
        }
        self.memory.next().map(|r| Ok((r.lsn, r.data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_streamed_xid() {
        assert_eq!(streamed_change_xid(b"I\0\0\x01\x02rest"), Some(0x102));
        assert_eq!(streamed_change_xid(b"I\0\0"), None);
        assert_eq!(streamed_change_xid(b"S\0\0\x01\x02"), None);
        assert_eq!(streamed_change_xid(b""), None);
    }
}
