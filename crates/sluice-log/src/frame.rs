//! The on-disk frame: one appended batch of records.
//!
//! ```text
//! [body length: u32 LE][CRC-32 of the body: u32 LE]
//! body: [base offset: i64 LE][record count: u32 LE][payload ...]
//! ```
//!
//! A segment file is a sequence of frames. A frame whose length runs past
//! the end of the file, or whose checksum does not match, is where a crash
//! interrupted a write: recovery cuts the file there.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

/// Bytes before the body.
pub const HEADER: usize = 8;
/// Bytes of the body before the payload.
pub const BODY_PREFIX: usize = 12;

/// Appends the frame of `payload` (holding `count` records from
/// `base_offset` on) to `out`.
pub fn encode(out: &mut Vec<u8>, base_offset: i64, count: u32, payload: &[u8]) {
    out.reserve(HEADER + BODY_PREFIX + payload.len());
    out.extend_from_slice(&head(base_offset, count, payload));
    out.extend_from_slice(payload);
}

/// The bytes of the frame of `payload` before the payload itself (its
/// checksum covers the payload), so that a large payload can be written
/// after them without being copied into one buffer.
pub fn head(base_offset: i64, count: u32, payload: &[u8]) -> [u8; HEADER + BODY_PREFIX] {
    let body_len = BODY_PREFIX + payload.len();
    let mut h = [0u8; HEADER + BODY_PREFIX];
    h[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    h[8..16].copy_from_slice(&base_offset.to_le_bytes());
    h[16..20].copy_from_slice(&count.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[HEADER..]);
    crc.update(payload);
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// The largest payload a frame can hold.
pub const MAX_PAYLOAD: usize = u32::MAX as usize - BODY_PREFIX;

/// A frame's header and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// File position of the frame.
    pub pos: u64,
    /// Total bytes of the frame (header and body).
    pub len: u64,
    /// Offset of its first record.
    pub base_offset: i64,
    /// Records in it.
    pub count: u32,
}

impl FrameInfo {
    /// The offset after its last record.
    pub fn end_offset(&self) -> i64 {
        self.base_offset + i64::from(self.count)
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads the frame at `pos` of a file `file_len` bytes long, checking its
/// checksum when `verify`; Ok(None) when no whole valid frame starts there
/// (the end of the file, or a torn or corrupt write). With `body` the body
/// is read into it (payload from [`BODY_PREFIX`] on).
pub fn read_at(
    f: &mut File,
    pos: u64,
    file_len: u64,
    verify: bool,
    body: Option<&mut Vec<u8>>,
) -> io::Result<Option<FrameInfo>> {
    if pos + (HEADER + BODY_PREFIX) as u64 > file_len {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(pos))?;
    let mut head = [0u8; HEADER + BODY_PREFIX];
    if !read_full(f, &mut head)? {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if body_len < BODY_PREFIX as u64 || pos + HEADER as u64 + body_len > file_len {
        return Ok(None);
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&head[8..16]);
    let base_offset = i64::from_le_bytes(b8);
    let count = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    let info = FrameInfo {
        pos,
        len: HEADER as u64 + body_len,
        base_offset,
        count,
    };
    if !verify && body.is_none() {
        return Ok(Some(info));
    }
    let mut scratch = Vec::new();
    let buf = body.unwrap_or(&mut scratch);
    buf.clear();
    buf.extend_from_slice(&head[HEADER..]);
    let rest = (body_len as usize) - BODY_PREFIX;
    let start = buf.len();
    buf.resize(start + rest, 0);
    if !read_full(f, &mut buf[start..])? {
        return Ok(None);
    }
    if verify && crc32fast::hash(buf) != crc {
        return Ok(None);
    }
    Ok(Some(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn frames_read_back_and_torn_ones_do_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.log");
        let mut bytes = Vec::new();
        let mut split = head(10, 2, b"hello").to_vec();
        split.extend_from_slice(b"hello");
        encode(&mut bytes, 10, 2, b"hello");
        assert_eq!(bytes, split, "a frame written as head then payload");
        encode(&mut bytes, 12, 1, b"world!");
        let whole = bytes.len() as u64;
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .expect("write");
        let mut f = File::open(&path).expect("open");
        let mut body = Vec::new();
        let a = read_at(&mut f, 0, whole, true, Some(&mut body))
            .expect("io")
            .expect("frame");
        assert_eq!((a.base_offset, a.count, a.end_offset()), (10, 2, 12));
        assert_eq!(&body[BODY_PREFIX..], b"hello");
        let b = read_at(&mut f, a.len, whole, true, None)
            .expect("io")
            .expect("frame");
        assert_eq!(b.base_offset, 12);
        assert_eq!(a.len + b.len, whole);
        // Any cut through the second frame makes it unreadable.
        for cut in a.len..whole {
            assert!(read_at(&mut f, a.len, cut, true, None)
                .expect("io")
                .is_none());
        }
        // A flipped payload bit fails the checksum.
        bytes[(a.len + 22) as usize] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let mut f = File::open(&path).expect("open");
        assert!(read_at(&mut f, a.len, whole, true, None)
            .expect("io")
            .is_none());
        assert!(read_at(&mut f, a.len, whole, false, None)
            .expect("io")
            .is_some());
    }
}
