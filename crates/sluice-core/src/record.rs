//! Records: what a source task emits ([`SourceRecord`], structured, with the
//! offset it has reached), what a Kafka topic holds ([`Record`], serialized
//! by the converters), and what a sink task is given ([`SinkRecord`],
//! structured again, with its place in its topic).

use std::sync::Arc;

use crate::schema::SchemaRef;
use crate::value::Value;

/// The header a snapshot's final record (`source.snapshot` `last`) carries
/// when tables of the snapshot had no rows: their topics, comma-separated
/// (a comma is never part of a topic's name). Such a table has no record
/// at all, so without it a sink that reconciles its tables with a snapshot
/// could not tell that the rows it still has for them are gone.
pub const SNAPSHOT_EMPTY_TOPICS_HEADER: &str = "sluice.snapshot.empty.topics";

/// The header that marks where an incremental snapshot of a table begins
/// and ends, for sinks that reconcile a table with it: comma-separated
/// marks `begin:<generation>` (changes of the table from this record on
/// count as seen), `end:<generation>` (the table was read whole: after
/// this record, rows neither read nor changed since its begin are gone
/// from the source) and `stop:<generation>` (the snapshot of the table was
/// stopped or could not be read: nothing is to be removed). A mark rides
/// on the table's next record, so it may come late, never early. The
/// generation is the stream position at which the snapshot was asked for.
pub const INCREMENTAL_SNAPSHOT_HEADER: &str = "sluice.snapshot.incremental";

/// The header on the first change of a table after a snapshot that read it
/// without a row: the snapshot's LSN (its generation). The snapshot's last
/// record names such tables' topics already ([`SNAPSHOT_EMPTY_TOPICS_HEADER`]),
/// but there is no last record when no table had a row, and a sink that
/// reads only the empty table's topic never sees it.
pub const SNAPSHOT_EMPTY_HEADER: &str = "sluice.snapshot.empty";

/// A record header (`org.apache.kafka.connect.header.Header`), already
/// serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value bytes, or null.
    pub value: Option<Vec<u8>>,
}

/// A source partition and offset, as Kafka Connect stores them:
/// `partition` is e.g. `{"server":"myserver"}`, `offset` is the connector's
/// position (Debezium's `lsn`, `txId`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOffset {
    /// The source partition.
    pub partition: serde_json::Map<String, serde_json::Value>,
    /// The offset within that partition.
    pub offset: serde_json::Map<String, serde_json::Value>,
}

/// A record produced by a source task, before conversion.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Destination topic.
    pub topic: Arc<str>,
    /// Key schema (None when the key is schemaless null).
    pub key_schema: Option<SchemaRef>,
    /// Key value; None for a null key.
    pub key: Option<Value>,
    /// Value schema.
    pub value_schema: Option<SchemaRef>,
    /// Value; None for a tombstone.
    pub value: Option<Value>,
    /// Record timestamp in ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Headers (already serialized).
    pub headers: Vec<Header>,
    /// The source position reached once this record is delivered. A record
    /// without an offset is delivered as part of the next one that has one.
    pub offset: Option<Arc<SourceOffset>>,
}

/// A serialized record as it sits in a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition (a sequence number in-process).
    pub offset: i64,
    /// Record timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Serialized key; None for null.
    pub key: Option<Vec<u8>>,
    /// Serialized value; None for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: Vec<Header>,
}

impl SourceRecord {
    /// A record that carries only an offset: it reaches no topic, but the
    /// worker commits its offset once every record sent before it was
    /// delivered. Sources use it to record progress that produced no event
    /// (e.g. a snapshot of empty tables).
    pub fn offset_only(offset: Arc<SourceOffset>) -> SourceRecord {
        SourceRecord {
            topic: Arc::from(""),
            key_schema: None,
            key: None,
            value_schema: None,
            value: None,
            timestamp_ms: None,
            headers: Vec::new(),
            offset: Some(offset),
        }
    }

    /// Whether this is an [`SourceRecord::offset_only`] marker.
    pub fn is_offset_only(&self) -> bool {
        self.topic.is_empty()
    }
}

/// A record as a sink task receives it (Kafka Connect's `SinkRecord`): the
/// structured key and value, read back by the connector's converters (or
/// kept structured by an in-process transport), after the connector's
/// transforms.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkRecord {
    /// Topic (after the connector's transforms).
    pub topic: Arc<str>,
    /// Partition within the topic.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Key schema (None when schemaless).
    pub key_schema: Option<SchemaRef>,
    /// Key; None for a null key.
    pub key: Option<Value>,
    /// Value schema (None when schemaless).
    pub value_schema: Option<SchemaRef>,
    /// Value; None for a tombstone.
    pub value: Option<Value>,
    /// Headers.
    pub headers: Vec<Header>,
}

impl SinkRecord {
    /// The text of the first header named `key`, when it has a UTF-8 value.
    pub fn header_str(&self, key: &str) -> Option<&str> {
        let h = self.headers.iter().find(|h| h.key == key)?;
        std::str::from_utf8(h.value.as_deref()?).ok()
    }

    /// "topic 't' partition p offset o", for messages.
    pub fn position(&self) -> String {
        format!(
            "topic '{}' partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}
