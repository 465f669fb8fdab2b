//! Distributed mode's offset store: `offset.storage.topic`, records keyed
//! `["<connector>",{<partition>}]` with the offset object as JSON (null:
//! deleted), as Kafka Connect's `KafkaOffsetBackingStore` writes them.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sluice_core::record::Record;

use super::{entry_key, JsonObject, OffsetStore, OffsetStoreError, OffsetTable, OffsetWrite};
use crate::distributed::InternalTopics;

/// Offsets in the offsets topic.
pub struct TopicOffsetStore {
    topics: Arc<InternalTopics>,
    table: OffsetTable,
}

impl TopicOffsetStore {
    /// A store over the worker's internal topics.
    pub fn new(topics: Arc<InternalTopics>) -> Self {
        TopicOffsetStore {
            topics,
            table: OffsetTable::default(),
        }
    }

    fn topic_error(&self, e: impl std::fmt::Display) -> OffsetStoreError {
        OffsetStoreError::Topic {
            topic: self.topics.config.offset_topic.clone(),
            message: format!("{e:#}"),
        }
    }
}

/// The offsets topic record for `connector`'s `partition`.
pub fn offset_record(
    connector: &str,
    partition: &JsonObject,
    offset: Option<&JsonObject>,
) -> (String, Option<Vec<u8>>) {
    (
        entry_key(connector, partition),
        offset.map(|o| Value::Object(o.clone()).to_string().into_bytes()),
    )
}

/// Decodes an offsets topic record: key `["<connector>",{..}]`, value the
/// offset object or null (deleted).
pub fn decode_offset_record(r: &Record) -> Result<OffsetWrite, String> {
    let where_ = || {
        format!(
            "offsets topic record at partition {} offset {}",
            r.partition, r.offset
        )
    };
    let Some(key) = r.key.as_deref() else {
        return Err(format!("{} has no key", where_()));
    };
    let (connector, partition) = match serde_json::from_slice::<Value>(key) {
        Ok(Value::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
            (Value::String(c), Value::Object(p)) => (c.clone(), p.clone()),
            _ => return Err(format!("{}: key is not [\"<connector>\",{{..}}]", where_())),
        },
        _ => return Err(format!("{}: key is not [\"<connector>\",{{..}}]", where_())),
    };
    let offset = match r.value.as_deref() {
        None => None,
        Some(v) => match serde_json::from_slice::<Value>(v) {
            Ok(Value::Object(o)) => Some(o),
            Ok(Value::Null) => None,
            _ => return Err(format!("{}: value is not a JSON object", where_())),
        },
    };
    Ok(OffsetWrite {
        connector,
        partition,
        offset,
    })
}

#[async_trait]
impl OffsetStore for TopicOffsetStore {
    fn describe(&self) -> String {
        format!("offsets topic '{}'", self.topics.config.offset_topic)
    }

    async fn load(&mut self) -> Result<(), OffsetStoreError> {
        let records = self
            .topics
            .offsets
            .catch_up()
            .await
            .map_err(|e| self.topic_error(e))?;
        for r in records {
            match decode_offset_record(&r) {
                Ok(w) => self.table.apply(&w),
                Err(e) => tracing::warn!("ignoring {e}"),
            }
        }
        Ok(())
    }

    fn table(&self) -> &OffsetTable {
        &self.table
    }

    async fn write(&mut self, changes: Vec<OffsetWrite>) -> Result<(), OffsetStoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Last change per key wins; one record each.
        let mut records: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for c in &changes {
            let (k, v) = offset_record(&c.connector, &c.partition, c.offset.as_ref());
            records.retain(|(key, _)| *key != k);
            records.push((k, v));
        }
        let topic = self.topics.config.offset_topic.clone();
        self.topics
            .write(&topic, records)
            .await
            .map_err(|e| self.topic_error(e))?;
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

    #[test]
    fn offset_records_round_trip() {
        let part: JsonObject = serde_json::from_str(r#"{"server":"s"}"#).expect("json");
        let off: JsonObject = serde_json::from_str(r#"{"lsn":42}"#).expect("json");
        let (k, v) = offset_record("pg", &part, Some(&off));
        assert_eq!(k, r#"["pg",{"server":"s"}]"#);
        let rec = |value: Option<Vec<u8>>| Record {
            topic: Arc::from("offsets"),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(k.clone().into_bytes()),
            value,
            headers: Vec::new(),
        };
        let w = decode_offset_record(&rec(v)).expect("decodes");
        assert_eq!((w.connector.as_str(), &w.partition), ("pg", &part));
        assert_eq!(w.offset, Some(off));
        assert_eq!(
            decode_offset_record(&rec(None)).expect("tombstone").offset,
            None
        );
        let mut bad = rec(Some(b"[1]".to_vec()));
        bad.key = Some(b"nope".to_vec());
        assert!(decode_offset_record(&bad).is_err());
    }
}
