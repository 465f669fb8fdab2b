//! The offset store role: where source offsets are kept, in Kafka Connect's
//! logical shape (key `["<connector>",{<partition>}]`, value the offset
//! object). Three implementations:
//!
//! - [`file::FileOffsetStore`]: `offset.storage.file.filename`, one JSON
//!   document replaced atomically (standalone workers);
//! - [`topic::TopicOffsetStore`]: `offset.storage.topic` (distributed
//!   workers), in Kafka Connect's record format;
//! - [`MemoryOffsetStore`]: nothing durable, for tests and tools.
//!
//! A store is [loaded](OffsetStore::load) whole before any source task
//! reads it, and a load that cannot read everything is an error, never "no
//! offsets": a source that wrongly believed it had none would start over
//! (and, for PostgreSQL, refuse the slot it finds).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sluice_core::connector::OffsetReader;

pub mod file;
pub mod topic;

/// A JSON object.
pub type JsonObject = Map<String, Value>;

/// The entry key Kafka Connect uses: `["<connector>",<partition>]`, compact.
pub fn entry_key(connector: &str, partition: &JsonObject) -> String {
    Value::Array(vec![
        Value::String(connector.to_string()),
        Value::Object(partition.clone()),
    ])
    .to_string()
}

/// A problem reading or writing offsets, naming where.
#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    /// Reading or writing a file failed.
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
    /// The offsets topic could not be read or written.
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

impl OffsetStoreError {
    /// Whether trying again later may succeed (a corrupt file will not).
    pub fn is_transient(&self) -> bool {
        !matches!(self, OffsetStoreError::Corrupt { .. })
    }
}

/// One change: `offset` None removes the entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetWrite {
    /// Connector name.
    pub connector: String,
    /// Source partition.
    pub partition: JsonObject,
    /// New offset, or None to forget it.
    pub offset: Option<JsonObject>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    connector: String,
    partition: JsonObject,
    offset: JsonObject,
}

/// The offsets of all connectors, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OffsetTable {
    entries: Vec<Entry>,
}

impl OffsetTable {
    /// The stored offset of `connector`'s `partition`.
    pub fn get(&self, connector: &str, partition: &JsonObject) -> Option<&JsonObject> {
        self.entries
            .iter()
            .find(|e| e.connector == connector && e.partition == *partition)
            .map(|e| &e.offset)
    }

    /// Applies one change.
    pub fn apply(&mut self, w: &OffsetWrite) {
        match &w.offset {
            Some(o) => self.set(&w.connector, &w.partition, o),
            None => {
                self.entries
                    .retain(|e| e.connector != w.connector || e.partition != w.partition);
            }
        }
    }

    fn set(&mut self, connector: &str, partition: &JsonObject, offset: &JsonObject) {
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

    /// `connector`'s (partition, offset) pairs.
    pub fn of(&self, connector: &str) -> Vec<(JsonObject, JsonObject)> {
        self.entries
            .iter()
            .filter(|e| e.connector == connector)
            .map(|e| (e.partition.clone(), e.offset.clone()))
            .collect()
    }

    /// A snapshot of `connector`'s offsets for its tasks to read at start.
    pub fn reader(&self, connector: &str) -> Arc<dyn OffsetReader> {
        Arc::new(ConnectorOffsets {
            entries: self.of(connector),
        })
    }

    /// The whole table as one JSON object (entry key → offset), as the
    /// offset file holds it.
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

/// Where source offsets are kept.
#[async_trait]
pub trait OffsetStore: Send {
    /// What it is, for messages.
    fn describe(&self) -> String;
    /// Reads everything the store holds now (what other workers wrote
    /// included). Err when it could not read all of it.
    async fn load(&mut self) -> Result<(), OffsetStoreError>;
    /// What was loaded and written.
    fn table(&self) -> &OffsetTable;
    /// Writes `changes`; durable when this returns Ok.
    async fn write(&mut self, changes: Vec<OffsetWrite>) -> Result<(), OffsetStoreError>;
    /// Records offsets a task already wrote itself (in its transactions):
    /// the table learns them, nothing is written.
    fn note_stored(&mut self, change: OffsetWrite);
}

/// Offsets kept in memory only.
#[derive(Debug, Default)]
pub struct MemoryOffsetStore {
    table: OffsetTable,
}

impl MemoryOffsetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl OffsetStore for MemoryOffsetStore {
    fn describe(&self) -> String {
        "offsets in memory".into()
    }
    async fn load(&mut self) -> Result<(), OffsetStoreError> {
        Ok(())
    }
    fn table(&self) -> &OffsetTable {
        &self.table
    }
    async fn write(&mut self, changes: Vec<OffsetWrite>) -> Result<(), OffsetStoreError> {
        for c in &changes {
            self.table.apply(c);
        }
        Ok(())
    }
    fn note_stored(&mut self, change: OffsetWrite) {
        self.table.apply(&change);
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

    #[tokio::test]
    async fn the_memory_store_applies_writes_and_removals() {
        let mut s = MemoryOffsetStore::new();
        let p = obj(serde_json::json!({"server": "s"}));
        let w = |c: &str, o: Option<Value>| OffsetWrite {
            connector: c.into(),
            partition: p.clone(),
            offset: o.map(obj),
        };
        s.write(vec![
            w("a", Some(serde_json::json!({"lsn": 1}))),
            w("b", Some(serde_json::json!({"lsn": 2}))),
            w("a", Some(serde_json::json!({"lsn": 3}))),
        ])
        .await
        .expect("write");
        assert_eq!(
            s.table().get("a", &p),
            Some(&obj(serde_json::json!({"lsn": 3})))
        );
        assert_eq!(
            s.table().reader("b").read(&p),
            Some(obj(serde_json::json!({"lsn": 2})))
        );
        s.write(vec![w("a", None)]).await.expect("remove");
        assert!(s.table().get("a", &p).is_none());
        assert_eq!(s.table().of("b").len(), 1);
    }
}
