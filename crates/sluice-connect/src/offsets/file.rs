//! Standalone mode's offset store (`offset.storage.file.filename`): every
//! connector's entries as one JSON document mapping each key, serialized
//! compactly as Kafka Connect's JsonConverter writes it, to its offset.
//!
//! The file is replaced atomically (temp file, fsync, rename, fsync of the
//! directory) because a source confirms its position upstream only after a
//! commit: a torn or lost file would make it skip data. A file that cannot be
//! read is an error, never a silent reset to "no offsets".

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use super::{OffsetStore, OffsetStoreError, OffsetTable, OffsetWrite};

/// Offsets in one file.
#[derive(Debug, Clone)]
pub struct FileOffsetStore {
    path: PathBuf,
    table: OffsetTable,
}

impl FileOffsetStore {
    /// A store over `path` (read by [`OffsetStore::load`]; a missing file is
    /// an empty store).
    pub fn new(path: &Path) -> Self {
        FileOffsetStore {
            path: path.to_path_buf(),
            table: OffsetTable::default(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now.
    pub fn read(path: &Path) -> Result<OffsetTable, OffsetStoreError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OffsetTable::default()),
            Err(source) => {
                return Err(OffsetStoreError::Io {
                    path: shown,
                    action: "reading",
                    source,
                })
            }
        };
        let corrupt = |message: String| OffsetStoreError::Corrupt {
            path: shown.clone(),
            message,
        };
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        let Value::Object(doc) = doc else {
            return Err(corrupt(
                "expected a JSON object mapping entry keys to offsets".into(),
            ));
        };
        let mut table = OffsetTable::default();
        for (key, value) in doc {
            let parsed: Value = serde_json::from_str(&key)
                .map_err(|e| corrupt(format!("entry key {key:?} is not JSON: {e}")))?;
            let (connector, partition) = match parsed {
                Value::Array(mut a) if a.len() == 2 => match (a.remove(0), a.remove(0)) {
                    (Value::String(c), Value::Object(p)) => (c, p),
                    _ => {
                        return Err(corrupt(format!(
                            "entry key {key:?} must be [\"<connector>\", {{<partition>}}]"
                        )))
                    }
                },
                _ => {
                    return Err(corrupt(format!(
                        "entry key {key:?} must be [\"<connector>\", {{<partition>}}]"
                    )))
                }
            };
            match value {
                // Kafka Connect writes a null offset to delete an entry.
                Value::Null => {}
                Value::Object(offset) => table.apply(&OffsetWrite {
                    connector,
                    partition,
                    offset: Some(offset),
                }),
                other => {
                    return Err(corrupt(format!(
                        "offset of entry {key} must be a JSON object, found {other}"
                    )))
                }
            }
        }
        Ok(table)
    }

    /// Writes `table` to `path` atomically and durably.
    pub fn save(path: &Path, table: &OffsetTable) -> Result<(), OffsetStoreError> {
        let shown = path.display().to_string();
        let io = |action: &'static str| {
            let shown = shown.clone();
            move |source| OffsetStoreError::Io {
                path: shown,
                action,
                source,
            }
        };
        let mut text =
            serde_json::to_string_pretty(&table.to_json()).map_err(|e| OffsetStoreError::Io {
                path: shown.clone(),
                action: "serializing",
                source: std::io::Error::other(e),
            })?;
        text.push('\n');
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "offsets".to_string());
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io("creating temporary file"))?;
        f.write_all(text.as_bytes())
            .map_err(io("writing temporary file"))?;
        f.sync_all().map_err(io("syncing temporary file"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io("renaming temporary file over it"))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing its directory"))?;
        Ok(())
    }
}

#[async_trait]
impl OffsetStore for FileOffsetStore {
    fn describe(&self) -> String {
        format!("offset file {}", self.path.display())
    }

    async fn load(&mut self) -> Result<(), OffsetStoreError> {
        let path = self.path.clone();
        self.table = tokio::task::spawn_blocking(move || FileOffsetStore::read(&path))
            .await
            .map_err(|e| OffsetStoreError::Io {
                path: self.path.display().to_string(),
                action: "reading (reader thread failed)",
                source: std::io::Error::other(e),
            })??;
        Ok(())
    }

    fn table(&self) -> &OffsetTable {
        &self.table
    }

    async fn write(&mut self, changes: Vec<OffsetWrite>) -> Result<(), OffsetStoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut next = self.table.clone();
        for c in &changes {
            next.apply(c);
        }
        let (path, snapshot) = (self.path.clone(), next.clone());
        // The write fsyncs: keep it off the async worker threads.
        tokio::task::spawn_blocking(move || FileOffsetStore::save(&path, &snapshot))
            .await
            .map_err(|e| OffsetStoreError::Io {
                path: self.path.display().to_string(),
                action: "writing (writer thread failed)",
                source: std::io::Error::other(e),
            })??;
        self.table = next;
        Ok(())
    }

    fn note_stored(&mut self, change: OffsetWrite) {
        self.table.apply(&change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::offsets::JsonObject;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    #[tokio::test]
    async fn write_reload_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("offsets.json");
        let mut store = FileOffsetStore::new(&path);
        store.load().await.expect("missing file is empty");
        let p = obj(serde_json::json!({"server": "s1"}));
        let w = |c: &str, o: Value| OffsetWrite {
            connector: c.into(),
            partition: p.clone(),
            offset: Some(obj(o)),
        };
        store
            .write(vec![
                w("a", serde_json::json!({"lsn": 10})),
                w("b", serde_json::json!({"lsn": 99})),
                w("a", serde_json::json!({"lsn": 20})),
            ])
            .await
            .expect("save");
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let text = std::fs::read_to_string(&path).expect("read");
        let doc: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc[r#"["a",{"server":"s1"}]"#]["lsn"], 20);
        let again = FileOffsetStore::read(&path).expect("reload");
        assert_eq!(
            again.get("a", &p),
            Some(&obj(serde_json::json!({"lsn": 20})))
        );
        let reader = again.reader("b");
        assert_eq!(reader.read(&p), Some(obj(serde_json::json!({"lsn": 99}))));
        assert_eq!(reader.read(&obj(serde_json::json!({"server": "s2"}))), None);
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("offsets.json");
        for (content, what) in [
            ("{\"[\\\"a\\\",{}]\": {\"lsn\": 1", "not valid JSON"),
            ("[]", "expected a JSON object"),
            ("{\"nope\": {}}", "is not JSON"),
            ("{\"[\\\"a\\\"]\": {}}", "must be [\"<connector>\""),
            ("{\"[\\\"a\\\",{}]\": 5}", "must be a JSON object"),
        ] {
            std::fs::write(&path, content).expect("write");
            let err = FileOffsetStore::read(&path).expect_err(content).to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(what), "{content}: {err}");
        }
        // A null offset is Kafka Connect's deletion marker, not corruption.
        std::fs::write(&path, "{\"[\\\"a\\\",{}]\": null}").expect("write");
        let store = FileOffsetStore::read(&path).expect("null is deletion");
        assert!(store.get("a", &JsonObject::new()).is_none());
    }
}
