//! Consumer positions: for each group (a sink connector), the next offset to
//! read of each topic partition it consumed, as Kafka keeps a consumer
//! group's committed offsets. One small JSON file per group, replaced
//! atomically, so a sink connector deleted and created again resumes where
//! it stopped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{write_atomically, LogError};

/// Committed positions of one group: (topic, partition) → next offset.
pub type Positions = BTreeMap<(String, u32), i64>;

/// The groups' committed positions, under `<log dir>/groups`.
#[derive(Debug, Clone)]
pub struct GroupStore {
    dir: PathBuf,
}

/// A group name as a file name: safe characters kept, others `%XX`.
fn file_name(group: &str) -> String {
    let mut out = String::with_capacity(group.len() + 5);
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') && !out.is_empty() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".json");
    out
}

impl GroupStore {
    pub(crate) fn open(dir: &Path) -> Result<GroupStore, LogError> {
        let dir = dir.join("groups");
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, "creating", e))?;
        Ok(GroupStore { dir })
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(file_name(group))
    }

    /// The committed positions of `group` (empty when it never committed).
    pub fn load(&self, group: &str) -> Result<Positions, LogError> {
        let path = self.path(group);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Positions::new()),
            Err(e) => return Err(LogError::io(&path, "reading", e)),
        };
        let corrupt = |m: String| LogError::Corrupt {
            path: path.display().to_string(),
            message: m,
        };
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let mut out = Positions::new();
        let entries = doc
            .get("positions")
            .and_then(|p| p.as_array())
            .ok_or_else(|| corrupt("no \"positions\" array".into()))?;
        for e in entries {
            let topic = e.get("topic").and_then(|v| v.as_str());
            let partition = e.get("partition").and_then(|v| v.as_u64());
            let offset = e.get("offset").and_then(|v| v.as_i64());
            match (topic, partition, offset) {
                (Some(t), Some(p), Some(o)) if p <= u64::from(u32::MAX) => {
                    out.insert((t.to_string(), p as u32), o);
                }
                _ => return Err(corrupt(format!("bad entry {e}"))),
            }
        }
        Ok(out)
    }

    /// Replaces `group`'s committed positions; durable when Ok.
    pub fn store(&self, group: &str, positions: &Positions) -> Result<(), LogError> {
        let entries: Vec<serde_json::Value> = positions
            .iter()
            .map(|((t, p), o)| serde_json::json!({"topic": t, "partition": p, "offset": o}))
            .collect();
        let doc = serde_json::json!({ "group": group, "positions": entries });
        write_atomically(&self.path(group), doc.to_string().as_bytes())
    }

    /// Forgets `group`.
    pub fn delete(&self, group: &str) -> Result<(), LogError> {
        let path = self.path(group);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(&path, "removing", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_per_group() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = GroupStore::open(dir.path()).expect("open");
        assert!(g.load("sink/a").expect("load").is_empty());
        let mut p = Positions::new();
        p.insert(("srv.public.t".into(), 0), 42);
        p.insert(("srv.public.u".into(), 3), 7);
        g.store("sink/a", &p).expect("store");
        g.store("other", &Positions::new()).expect("store");
        assert_eq!(g.load("sink/a").expect("load"), p);
        assert!(g.load("other").expect("load").is_empty());
        g.delete("sink/a").expect("delete");
        assert!(g.load("sink/a").expect("load").is_empty());
        assert_eq!(file_name(".x/y"), "%2Ex%2Fy.json");
    }
}
