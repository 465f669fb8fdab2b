//! Standalone mode's offset store (`offset.storage.file.filename`): Kafka
//! Connect's logical entries — key `["<connector>",{<partition>}]`, value the
//! offset object — kept as one JSON document mapping each key, serialized
//! compactly as Kafka Connect's JsonConverter writes it, to its offset.
//!
//! The file is replaced atomically (temp file, fsync, rename, fsync of the
//! directory) because a source confirms its position upstream only after a
//! commit: a torn or lost file would make it skip data. A file that cannot be
//! read is an error, never a silent reset to "no offsets".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use sluice_core::connector::OffsetReader;

/// A JSON object.
pub type JsonObject = Map<String, Value>;

/// A problem with the offset file, naming it.
#[derive(Debug, thiserror::Error)]
pub enum OffsetFileError {
    /// Reading or writing failed.
    #[error("offset file '{path}': {action}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The offsets topic could not be written.
    #[error("offsets topic '{topic}': {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What failed.
        message: String,
    },
    /// The content is not an offset document.
    #[error("offset file '{path}' is corrupt: {message} (fix or move the file; Sluice does not reset offsets on its own)")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The entry key Kafka Connect uses: `["<connector>",<partition>]`, compact.
pub fn entry_key(connector: &str, partition: &JsonObject) -> String {
    Value::Array(vec![
        Value::String(connector.to_string()),
        Value::Object(partition.clone()),
    ])
    .to_string()
}

#[derive(Debug, Clone)]
struct Entry {
    connector: String,
    partition: JsonObject,
    offset: JsonObject,
}

/// The offsets of all connectors, as loaded from and saved to one file.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Entries changed since [`OffsetStore::take_changes`]: entry key →
    /// new offset (None: removed). A topic-backed store writes just these.
    changes: std::collections::BTreeMap<String, Option<JsonObject>>,
}

impl OffsetStore {
    /// Loads `path`; a missing file is an empty store.
    pub fn load(path: &Path) -> Result<OffsetStore, OffsetFileError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(OffsetStore {
                    path: path.to_path_buf(),
                    entries: Vec::new(),
                    changes: Default::default(),
                })
            }
            Err(source) => {
                return Err(OffsetFileError::Io {
                    path: shown,
                    action: "reading",
                    source,
                })
            }
        };
        let corrupt = |message: String| OffsetFileError::Corrupt {
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
        let mut entries = Vec::with_capacity(doc.len());
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
                Value::Object(offset) => entries.push(Entry {
                    connector,
                    partition,
                    offset,
                }),
                other => {
                    return Err(corrupt(format!(
                        "offset of entry {key} must be a JSON object, found {other}"
                    )))
                }
            }
        }
        Ok(OffsetStore {
            path: path.to_path_buf(),
            entries,
            changes: Default::default(),
        })
    }

    /// An empty store kept in memory (distributed mode loads it from the
    /// offsets topic); `label` names it in messages.
    pub fn memory(label: &str) -> OffsetStore {
        OffsetStore {
            path: PathBuf::from(label),
            entries: Vec::new(),
            changes: Default::default(),
        }
    }

    /// The entries changed since the last call (entry key → offset, None
    /// when removed), forgetting them.
    pub fn take_changes(&mut self) -> std::collections::BTreeMap<String, Option<JsonObject>> {
        std::mem::take(&mut self.changes)
    }

    /// Puts back changes that could not be written, unless changed again
    /// since.
    pub fn restore_changes(
        &mut self,
        changes: std::collections::BTreeMap<String, Option<JsonObject>>,
    ) {
        for (k, v) in changes {
            self.changes.entry(k).or_insert(v);
        }
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored offset of `connector`'s `partition`.
    pub fn get(&self, connector: &str, partition: &JsonObject) -> Option<&JsonObject> {
        self.entries
            .iter()
            .find(|e| e.connector == connector && e.partition == *partition)
            .map(|e| &e.offset)
    }

    /// Records an offset (in memory; [`OffsetStore::save`] makes it durable).
    pub fn set(&mut self, connector: &str, partition: &JsonObject, offset: &JsonObject) {
        self.changes
            .insert(entry_key(connector, partition), Some(offset.clone()));
        match self
            .entries
            .iter_mut()
            .find(|e| e.connector == connector && e.partition == *partition)
        {
            Some(e) => e.offset = offset.clone(),
            None => self.entries.push(Entry {
                connector: connector.to_string(),
                partition: partition.clone(),
                offset: offset.clone(),
            }),
        }
    }

    /// Records an offset that is already durable elsewhere (written by the
    /// task's own transaction): nothing to write for it.
    pub fn set_stored(&mut self, connector: &str, partition: &JsonObject, offset: &JsonObject) {
        self.set(connector, partition, offset);
        self.changes.remove(&entry_key(connector, partition));
    }

    /// Forgets the offset of `connector`'s `partition` (all its partitions
    /// when `partition` is None); true when something was removed.
    pub fn remove(&mut self, connector: &str, partition: Option<&JsonObject>) -> bool {
        let before = self.entries.len();
        let changes = &mut self.changes;
        self.entries.retain(|e| {
            let keep = e.connector != connector || partition.is_some_and(|p| e.partition != *p);
            if !keep {
                changes.insert(entry_key(&e.connector, &e.partition), None);
            }
            keep
        });
        self.entries.len() != before
    }

    /// A snapshot of `connector`'s offsets for its tasks to read at start.
    pub fn reader(&self, connector: &str) -> Arc<dyn OffsetReader> {
        Arc::new(ConnectorOffsets {
            entries: self
                .entries
                .iter()
                .filter(|e| e.connector == connector)
                .map(|e| (e.partition.clone(), e.offset.clone()))
                .collect(),
        })
    }

    /// The document as written to the file.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.entries
                .iter()
                .map(|e| {
                    (
                        entry_key(&e.connector, &e.partition),
                        Value::Object(e.offset.clone()),
                    )
                })
                .collect(),
        )
    }

    /// Writes the store to its file atomically and durably.
    pub fn save(&self) -> Result<(), OffsetFileError> {
        let shown = self.path.display().to_string();
        let io = |action: &'static str| {
            let shown = shown.clone();
            move |source| OffsetFileError::Io {
                path: shown,
                action,
                source,
            }
        };
        let mut text =
            serde_json::to_string_pretty(&self.to_json()).map_err(|e| OffsetFileError::Io {
                path: shown.clone(),
                action: "serializing",
                source: std::io::Error::other(e),
            })?;
        text.push('\n');
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "offsets".to_string());
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io("creating temporary file"))?;
        f.write_all(text.as_bytes())
            .map_err(io("writing temporary file"))?;
        f.sync_all().map_err(io("syncing temporary file"))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(io("renaming temporary file over it"))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing its directory"))?;
        Ok(())
    }
}

struct ConnectorOffsets {
    entries: Vec<(JsonObject, JsonObject)>,
}

impl OffsetReader for ConnectorOffsets {
    fn read(&self, partition: &JsonObject) -> Option<JsonObject> {
        self.entries
            .iter()
            .find(|(p, _)| p == partition)
            .map(|(_, o)| o.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> JsonObject {
        match v {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn key_is_kafka_connects_compact_form() {
        let p = obj(serde_json::json!({"server": "myserver"}));
        assert_eq!(
            entry_key("pg-orders-source", &p),
            r#"["pg-orders-source",{"server":"myserver"}]"#
        );
    }

    #[test]
    fn write_reload_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("offsets.json");
        let mut store = OffsetStore::load(&path).expect("missing file is empty");
        let p = obj(serde_json::json!({"server": "s1"}));
        store.set("a", &p, &obj(serde_json::json!({"lsn": 10})));
        store.set("b", &p, &obj(serde_json::json!({"lsn": 99})));
        store.set("a", &p, &obj(serde_json::json!({"lsn": 20})));
        store.save().expect("save");
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
        let again = OffsetStore::load(&path).expect("reload");
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
            let err = OffsetStore::load(&path).expect_err(content).to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(what), "{content}: {err}");
        }
        // A null offset is Kafka Connect's deletion marker, not corruption.
        std::fs::write(&path, "{\"[\\\"a\\\",{}]\": null}").expect("write");
        let store = OffsetStore::load(&path).expect("null is deletion");
        assert!(store.get("a", &JsonObject::new()).is_none());
    }
}
