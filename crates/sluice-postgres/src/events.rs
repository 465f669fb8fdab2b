//! Builds Debezium change events (key, envelope, offsets) from decoded rows.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value as Json};
use sluice_core::debezium::{self, Format, Op, Origin, SourceInfo};
use sluice_core::{Header, SourceOffset, SourceRecord, Value};

use crate::config::PostgresConfig;
use crate::table::TableSchema;

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Where an event sits in the source: what goes into `source` and into the
/// stored offset.
#[derive(Debug, Clone)]
pub struct Position {
    /// Commit (or snapshot) time, µs since the Unix epoch.
    pub ts_us: i64,
    /// Transaction id.
    pub tx_id: Option<i64>,
    /// LSN of the event.
    pub lsn: Option<u64>,
    /// End LSN of the last completely delivered transaction.
    pub last_commit: Option<u64>,
    /// `source.snapshot`.
    pub snapshot: &'static str,
    /// The transaction's replication origin (name, commit LSN on the origin).
    pub origin: Option<(Arc<str>, u64)>,
}

/// Record building, shared by snapshot and streaming.
#[derive(Debug, Clone)]
pub struct EventFactory {
    prefix: String,
    db: String,
    tombstones: bool,
    partition: Map<String, Json>,
    format: Format,
    /// `__debezium.context.*`, added to every change event and tombstone.
    context_headers: Arc<[Header]>,
}

/// A Debezium run id: a time-ordered UUID (version 7), new for each start of
/// a task, as `UUIDUtils.generateNewUUID` makes it.
pub fn new_run_id() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let msb: u64 = (ms << 16) | (rng.gen::<u64>() & 0x0fff) | 0x7000;
    let lsb: u64 = (rng.gen::<u64>() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        msb >> 32,
        (msb >> 16) & 0xffff,
        msb & 0xffff,
        lsb >> 48,
        lsb & 0xffff_ffff_ffff
    )
}

/// The transaction block of an event, when transaction metadata is on.
#[derive(Debug, Clone)]
pub struct TxBlock {
    /// `"<txId>:<lsn>"`.
    pub id: String,
    /// Order of the event within the transaction.
    pub total_order: i64,
    /// Order within its table.
    pub data_collection_order: i64,
}

impl EventFactory {
    /// A factory for a connector config.
    pub fn new(cfg: &PostgresConfig) -> Self {
        let context_headers: Vec<Header> = if cfg.context_headers {
            let values = [
                cfg.prefix.as_str(),
                "0",
                debezium::CONNECTOR_NAME,
                cfg.run_id.as_str(),
            ];
            debezium::CONTEXT_HEADERS
                .iter()
                .zip(values)
                .map(|(k, v)| Header {
                    key: (*k).to_string(),
                    value: Some(v.as_bytes().to_vec()),
                })
                .collect()
        } else {
            Vec::new()
        };
        EventFactory {
            prefix: cfg.prefix.clone(),
            db: cfg.conn.dbname.clone(),
            tombstones: cfg.tombstones_on_delete,
            partition: cfg.partition(),
            format: cfg.format,
            context_headers: context_headers.into(),
        }
    }

    /// The event format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The source partition.
    pub fn partition(&self) -> &Map<String, Json> {
        &self.partition
    }

    fn source(&self, schema: &str, table: &str, pos: &Position) -> Value {
        let seq = debezium::sequence_text(pos.last_commit, pos.lsn);
        let origin = Origin {
            name: pos.origin.as_ref().map(|(n, _)| &**n),
            lsn: pos.origin.as_ref().map(|(_, l)| *l as i64),
        };
        debezium::source_value_for(
            self.format,
            &SourceInfo {
                name: &self.prefix,
                ts_ms: pos.ts_us.div_euclid(1000),
                ts_us: pos.ts_us,
                ts_ns: pos.ts_us.saturating_mul(1000),
                snapshot: pos.snapshot,
                db: &self.db,
                sequence: Some(&seq),
                schema,
                table,
                tx_id: pos.tx_id,
                lsn: pos.lsn.map(|l| l as i64),
                xmin: None,
            },
            &origin,
        )
    }

    /// A change event (and, for deletes, its tombstone) into `out`.
    /// `headers` are the event's own (a primary-key change's
    /// `__debezium.newkey` / `oldkey`); the context headers follow them, and
    /// a tombstone carries its delete's headers.
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &self,
        out: &mut Vec<SourceRecord>,
        table: &TableSchema,
        op: Op,
        key: Option<Value>,
        before: Option<Value>,
        after: Option<Value>,
        pos: &Position,
        tx: Option<&TxBlock>,
        headers: Vec<Header>,
    ) {
        let mut headers = headers;
        headers.extend(self.context_headers.iter().cloned());
        let now = now_micros();
        let transaction = tx.map(|t| {
            debezium::transaction_block_value(&t.id, t.total_order, t.data_collection_order)
        });
        let value = debezium::envelope_value(
            &table.envelope,
            before,
            after,
            self.source(&table.id.schema, &table.id.table, pos),
            op,
            now / 1000,
            now,
            now.saturating_mul(1000),
            transaction,
        );
        let tombstone = matches!(op, Op::Delete) && self.tombstones;
        let tombstone_headers = if tombstone {
            headers.clone()
        } else {
            Vec::new()
        };
        out.push(SourceRecord {
            topic: table.topic.clone(),
            key_schema: table.key_schema.clone(),
            key: key.clone(),
            value_schema: Some(table.envelope.clone()),
            value: Some(value),
            timestamp_ms: None,
            headers,
            offset: None,
        });
        if tombstone {
            out.push(SourceRecord {
                topic: table.topic.clone(),
                key_schema: table.key_schema.clone(),
                key,
                value_schema: None,
                value: None,
                timestamp_ms: None,
                headers: tombstone_headers,
                offset: None,
            });
        }
    }

    /// A truncate event for a table (null key).
    pub fn truncate(
        &self,
        out: &mut Vec<SourceRecord>,
        table: &TableSchema,
        pos: &Position,
        tx: Option<&TxBlock>,
    ) {
        self.change(
            out,
            table,
            Op::Truncate,
            None,
            None,
            None,
            pos,
            tx,
            Vec::new(),
        );
        if let Some(last) = out.last_mut() {
            last.key_schema = None;
        }
    }

    /// A heartbeat record.
    pub fn heartbeat(&self, topic_prefix: &str, offset: Arc<SourceOffset>) -> SourceRecord {
        let ts = now_micros() / 1000;
        SourceRecord {
            topic: Arc::from(format!("{topic_prefix}.{}", self.prefix)),
            key_schema: Some(debezium::heartbeat_key_schema()),
            key: Some(debezium::heartbeat_key(&self.prefix)),
            value_schema: Some(debezium::heartbeat_value_schema()),
            value: Some(debezium::heartbeat_value(ts)),
            timestamp_ms: None,
            headers: Vec::new(),
            offset: Some(offset),
        }
    }

    /// A logical decoding message event (`pg_logical_emit_message`) on
    /// `<prefix>.message`: `content` as `binary.handling.mode` says. Such
    /// events carry no schema or table, and no context headers.
    pub fn message(
        &self,
        prefix: &str,
        content: &[u8],
        binary: sluice_pgtypes::BinaryMode,
        pos: &Position,
        tx: Option<&TxBlock>,
    ) -> SourceRecord {
        use base64::Engine as _;
        use sluice_pgtypes::BinaryMode;
        let content = match binary {
            BinaryMode::Bytes => Value::Bytes(content.to_vec()),
            BinaryMode::Base64 => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(content))
            }
            BinaryMode::Base64UrlSafe => {
                Value::String(base64::engine::general_purpose::URL_SAFE.encode(content))
            }
            BinaryMode::Hex => Value::String(content.iter().map(|b| format!("{b:02x}")).collect()),
        };
        let as_string = binary != BinaryMode::Bytes;
        let transaction = tx.map(|t| {
            debezium::transaction_block_value(&t.id, t.total_order, t.data_collection_order)
        });
        let value = debezium::message_value_for(
            self.format,
            Some(prefix),
            content,
            self.source("", "", pos),
            now_micros() / 1000,
            transaction,
        );
        SourceRecord {
            topic: Arc::from(debezium::message_topic(&self.prefix)),
            key_schema: Some(debezium::message_key_schema()),
            key: Some(debezium::message_key(Some(prefix))),
            value_schema: Some(debezium::message_value_schema_for(self.format, as_string)),
            value: Some(value),
            timestamp_ms: None,
            headers: Vec::new(),
            offset: None,
        }
    }

    /// Transaction BEGIN or END metadata event.
    pub fn transaction_event(&self, value: Value, id: &str) -> SourceRecord {
        SourceRecord {
            topic: Arc::from(debezium::transaction_topic(&self.prefix)),
            key_schema: Some(debezium::transaction_key_schema()),
            key: Some(debezium::transaction_key(id)),
            value_schema: Some(debezium::transaction_value_schema()),
            value: Some(value),
            timestamp_ms: None,
            headers: Vec::new(),
            offset: None,
        }
    }

    /// A streaming offset, with Debezium's keys (one argument per key).
    #[allow(clippy::too_many_arguments)]
    pub fn stream_offset(
        &self,
        lsn_proc: u64,
        lsn_commit: u64,
        sequence_commit: Option<u64>,
        lsn: u64,
        tx_id: u32,
        ts_usec: i64,
        message_type: &str,
        transaction_id: Option<&str>,
    ) -> Arc<SourceOffset> {
        let mut o = Map::new();
        o.insert(
            "transaction_id".into(),
            transaction_id.map_or(Json::Null, |t| json!(t)),
        );
        o.insert("lsn_proc".into(), json!(lsn_proc));
        o.insert("messageType".into(), json!(message_type));
        o.insert("lsn_commit".into(), json!(lsn_commit));
        o.insert("lsn".into(), json!(lsn));
        o.insert("txId".into(), json!(tx_id));
        o.insert("ts_usec".into(), json!(ts_usec));
        if sequence_commit != Some(lsn_commit) {
            o.insert(SEQUENCE_COMMIT.into(), json!(sequence_commit));
        }
        Arc::new(SourceOffset {
            partition: self.partition.clone(),
            offset: o,
        })
    }

    /// A snapshot offset.
    pub fn snapshot_offset(
        &self,
        lsn: u64,
        tx_id: i64,
        ts_usec: i64,
        last: bool,
    ) -> Arc<SourceOffset> {
        let mut o = Map::new();
        o.insert("last_snapshot_record".into(), json!(last));
        o.insert("lsn".into(), json!(lsn));
        o.insert("txId".into(), json!(tx_id));
        o.insert("ts_usec".into(), json!(ts_usec));
        o.insert("snapshot".into(), json!(true));
        if last {
            o.insert("lsn_commit".into(), json!(lsn));
        }
        Arc::new(SourceOffset {
            partition: self.partition.clone(),
            offset: o,
        })
    }
}

/// The offset key keeping the last commit `source.sequence` showed when it
/// differs from `lsn_commit` (null before the first commit after a
/// snapshot; older than `lsn_commit` after progress without events): a
/// transaction sent again after a restart carries the same sequence as
/// before, so a sink that deduplicates by it recognises what it has.
pub const SEQUENCE_COMMIT: &str = "sluice_sequence_commit";

/// What a stored offset says about where to resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// Snapshot state: None = no snapshot offsets, Some(false) = a snapshot
    /// was interrupted, Some(true) = a snapshot completed.
    pub snapshot_completed: Option<bool>,
    /// End LSN of the last completely delivered transaction: transactions
    /// committed before it are skipped, and it is safe to confirm.
    pub complete_end: Option<u64>,
    /// A transaction delivered only up to an LSN: (xid, last delivered LSN).
    pub partial: Option<(u32, u64)>,
    /// Streaming follows a snapshot taken by this process: no commit has
    /// been seen yet (`source.sequence` starts with null).
    pub after_snapshot: bool,
    /// The last commit `source.sequence` showed at the offset (None: null,
    /// as after a snapshot): where the sequence goes on from.
    pub sequence_commit: Option<u64>,
}

impl Resume {
    /// Reads a stored offset: Sluice's own, or one Debezium 2.x / 3.x wrote
    /// (the same keys: `lsn`, `lsn_proc`, `lsn_commit`, `txId`,
    /// `messageType`, and while a snapshot runs `snapshot`, which 3.x writes
    /// as a string, `last_snapshot_record` and 3.x's `snapshot_completed`).
    pub fn from_offset(o: &Map<String, Json>) -> Resume {
        let u = |k: &str| o.get(k).and_then(Json::as_u64);
        let snapshot = o
            .get("snapshot")
            .is_some_and(|v| v.as_bool() == Some(true) || v.is_string());
        // Sluice's own key when the sequence differs from lsn_commit.
        let stored_sequence = o.get(SEQUENCE_COMMIT).map(Json::as_u64);
        if snapshot {
            let last = o
                .get("snapshot_completed")
                .and_then(Json::as_bool)
                .or_else(|| o.get("last_snapshot_record").and_then(Json::as_bool))
                == Some(true);
            return Resume {
                snapshot_completed: Some(last),
                complete_end: if last {
                    u("lsn_commit").or(u("lsn"))
                } else {
                    None
                },
                partial: None,
                after_snapshot: false,
                // No commit was seen during a snapshot.
                sequence_commit: stored_sequence.flatten(),
            };
        }
        // Debezium's loader reads a missing lsn_commit as lsn_proc (it writes
        // none before its first commit after a snapshot): every transaction
        // committed before the last processed event was delivered.
        let complete_end = u("lsn_commit").or_else(|| u("lsn_proc"));
        let partial = match o.get("messageType").and_then(Json::as_str) {
            Some("COMMIT") | None => None,
            Some(_) => match (u("txId"), u("lsn_proc")) {
                (Some(x), Some(l)) => Some((x as u32, l)),
                _ => None,
            },
        };
        Resume {
            snapshot_completed: None,
            complete_end,
            partial,
            after_snapshot: false,
            sequence_commit: stored_sequence.unwrap_or(complete_end),
        }
    }

    /// The LSN that may be confirmed to the slot for this offset.
    pub fn confirmable(o: &Map<String, Json>) -> Option<u64> {
        Resume::from_offset(o).complete_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(text: &str) -> Map<String, Json> {
        serde_json::from_str(text).expect("offset JSON")
    }

    #[test]
    fn debezium_3_6_streaming_offset_without_a_commit() {
        // What Debezium 3.6.3 stored in Kafka Connect's offsets topic after
        // its first streamed event following the snapshot.
        let r = Resume::from_offset(&offset(
            r#"{"lsn_proc":169237184,"messageType":"UPDATE","lsn":169237184,"txId":796,"ts_usec":1796601861360578}"#,
        ));
        assert_eq!(r.snapshot_completed, None);
        assert_eq!(r.complete_end, Some(169_237_184));
        assert_eq!(r.partial, Some((796, 169_237_184)));
    }

    #[test]
    fn debezium_commit_and_snapshot_offsets() {
        let r = Resume::from_offset(&offset(
            r#"{"transaction_id":null,"lsn_proc":300,"messageType":"COMMIT","lsn_commit":300,"lsn":280,"txId":9,"ts_usec":1}"#,
        ));
        assert_eq!((r.complete_end, r.partial), (Some(300), None));
        // 3.x: snapshot as a string, with snapshot_completed.
        let done = Resume::from_offset(&offset(
            r#"{"last_snapshot_record":true,"lsn":100,"txId":7,"ts_usec":1,"snapshot":"INITIAL","snapshot_completed":true}"#,
        ));
        assert_eq!(
            (done.snapshot_completed, done.complete_end),
            (Some(true), Some(100))
        );
        let running = Resume::from_offset(&offset(
            r#"{"last_snapshot_record":false,"lsn":100,"txId":7,"ts_usec":1,"snapshot":"INITIAL","snapshot_completed":false}"#,
        ));
        assert_eq!(running.snapshot_completed, Some(false));
        // 2.7: snapshot as a boolean.
        let old = Resume::from_offset(&offset(
            r#"{"last_snapshot_record":true,"lsn":100,"txId":7,"ts_usec":1,"snapshot":true}"#,
        ));
        assert_eq!(old.snapshot_completed, Some(true));
    }

    fn factory() -> EventFactory {
        let props = sluice_core::config::props_from(&[
            ("database.hostname", "localhost"),
            ("database.user", "u"),
            ("database.dbname", "d"),
            ("topic.prefix", "p"),
        ]);
        let (cfg, _) = crate::config::PostgresConfig::parse(&props).expect("config");
        EventFactory::new(&cfg)
    }

    #[test]
    fn a_restart_goes_on_with_the_sequence_the_events_showed() {
        let f = factory();
        // The first transaction after a snapshot, delivered in part: its
        // events showed a null last commit, and so do they when sent again.
        let partial = f.stream_offset(500, 400, None, 500, 7, 1, "INSERT", None);
        let r = Resume::from_offset(&partial.offset);
        assert_eq!((r.complete_end, r.partial), (Some(400), Some((7, 500))));
        assert_eq!(r.sequence_commit, None);
        // Progress without events moved lsn_commit past the last commit.
        let marker = f.stream_offset(900, 900, Some(350), 900, 0, 1, "COMMIT", None);
        let r = Resume::from_offset(&marker.offset);
        assert_eq!((r.complete_end, r.sequence_commit), (Some(900), Some(350)));
        // A transaction's end: the two agree and the key is left out, as
        // Debezium writes it.
        let commit = f.stream_offset(950, 950, Some(950), 940, 8, 1, "COMMIT", None);
        assert!(!commit.offset.contains_key(SEQUENCE_COMMIT));
        assert_eq!(
            Resume::from_offset(&commit.offset).sequence_commit,
            Some(950)
        );
        // Debezium's own offsets: its loader's reading.
        let r = Resume::from_offset(&offset(
            r#"{"lsn_proc":169237184,"messageType":"UPDATE","lsn":169237184,"txId":796,"ts_usec":1}"#,
        ));
        assert_eq!(r.sequence_commit, Some(169_237_184));
        // A completed snapshot: no commit seen yet.
        let done = Resume::from_offset(&f.snapshot_offset(100, 7, 1, true).offset);
        assert_eq!((done.complete_end, done.sequence_commit), (Some(100), None));
    }
}
