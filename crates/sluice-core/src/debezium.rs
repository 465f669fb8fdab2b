//! Debezium's PostgreSQL event schemas and values: the change-event
//! envelope, the `io.debezium.connector.postgresql.Source` block, the
//! transaction block, heartbeats, transaction metadata and logical decoding
//! message events.
//!
//! Two formats are built: Debezium 3.6's (3.6.3.Final, the default) and
//! Debezium 2.7's (2.7.3.Final), see [`Format`]. Field order, optionality,
//! names and versions follow Debezium's own sources (`SchemaFactory`,
//! `Envelope`, `AbstractSourceInfoStructMaker`,
//! `PostgresSourceInfoStructMaker`, `TableSchemaBuilder`,
//! `AbstractTransactionStructMaker`, `HeartbeatImpl`) and its measured
//! output, not its documentation, whose JSON examples are hand-written and
//! differ in places.
//!
//! Values mirror what Debezium puts in its Java `Struct`s, including the
//! fields it leaves unset (null): e.g. `source.snapshot` is left null for
//! ordinary streaming events and the JSON converter then writes the schema
//! default `"false"` (unless `replace.null.with.default=false`).

use std::sync::{Arc, OnceLock};

use crate::schema::{prim, Schema, SchemaBuilder, SchemaRef, SchemaType};
use crate::value::Value;

/// The Debezium event format Sluice produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// Debezium 3.6 (3.6.3.Final): the source block has a schema version
    /// (1), the full `snapshot` allowed list and `origin` / `origin_lsn`;
    /// change events carry the `__debezium.context.*` headers; `tsvector`
    /// is `io.debezium.data.Tsvector`; `time[]` elements follow
    /// `time.precision.mode`.
    #[default]
    V3_6,
    /// Debezium 2.7 (2.7.3.Final), the format of the 2.x line.
    V2_7,
}

impl Format {
    /// `source.version`.
    pub fn version(self) -> &'static str {
        match self {
            Format::V3_6 => DEBEZIUM_VERSION,
            Format::V2_7 => DEBEZIUM_2_7_VERSION,
        }
    }

    /// Reads `sluice.debezium.compatibility`: `3.6` or `2.7` (a full
    /// release such as `2.7.3.Final` is accepted too).
    pub fn parse(text: &str) -> Option<Format> {
        let t = text.trim();
        if t == "3.6" || t.starts_with("3.6.") {
            Some(Format::V3_6)
        } else if t == "2.7" || t.starts_with("2.7.") {
            Some(Format::V2_7)
        } else {
            None
        }
    }

    /// `3.6` or `2.7`.
    pub fn name(self) -> &'static str {
        match self {
            Format::V3_6 => "3.6",
            Format::V2_7 => "2.7",
        }
    }
}

/// The Debezium release whose events Sluice reproduces by default; written
/// in `source.version`.
pub const DEBEZIUM_VERSION: &str = "3.6.3.Final";

/// `source.version` under [`Format::V2_7`].
pub const DEBEZIUM_2_7_VERSION: &str = "2.7.3.Final";

/// `source.connector` for PostgreSQL.
pub const CONNECTOR_NAME: &str = "postgresql";

/// Name of the source block schema.
pub const SOURCE_SCHEMA_NAME: &str = "io.debezium.connector.postgresql.Source";

/// `Envelope.SCHEMA_VERSION` (bumped from 1 to 2 in Debezium 2.6 by DBZ-7107).
pub const ENVELOPE_SCHEMA_VERSION: i32 = 2;

/// The values Debezium 3.1+ allows in `source.snapshot`
/// (`SchemaFactory.snapshotRecordSchema`).
pub const SNAPSHOT_ALLOWED: &str =
    "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental";

/// The values Debezium 2.7 allows in `source.snapshot`
/// (`AbstractSourceInfoStructMaker.SNAPSHOT_RECORD_SCHEMA`). The field may
/// still carry `first`, `first_in_data_collection` and
/// `last_in_data_collection`, which `SnapshotRecord` has but the list lacks.
pub const SNAPSHOT_ALLOWED_2_7: &str = "true,last,false,incremental";

/// `io.debezium.data.Enum`.
pub const ENUM_LOGICAL_NAME: &str = "io.debezium.data.Enum";

/// The headers Debezium 3.2+ adds to every change event
/// (`DebeziumHeaderProducer`, `extended.headers.enabled`), in order.
pub const CONTEXT_HEADERS: [&str; 4] = [
    "__debezium.context.connectorLogicalName",
    "__debezium.context.taskId",
    "__debezium.context.connectorName",
    "__debezium.context.runId",
];

/// The header of the delete (and its tombstone) that a primary-key change
/// becomes: the new key.
pub const NEWKEY_HEADER: &str = "__debezium.newkey";

/// The header of the create that a primary-key change becomes: the old key.
pub const OLDKEY_HEADER: &str = "__debezium.oldkey";

/// An envelope's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Insert (`c`).
    Create,
    /// Update (`u`).
    Update,
    /// Delete (`d`).
    Delete,
    /// Snapshot read (`r`).
    Read,
    /// Truncate (`t`).
    Truncate,
    /// Logical decoding message (`m`).
    Message,
}

impl Op {
    /// The one-letter code Debezium writes.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }

    /// The operation for a code (case-insensitive, as `Operation.forCode`).
    pub fn from_code(code: &str) -> Option<Op> {
        Some(match code.to_ascii_lowercase().as_str() {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "m" => Op::Message,
            _ => return None,
        })
    }
}

fn shared(cell: &'static OnceLock<SchemaRef>, build: impl FnOnce() -> SchemaRef) -> SchemaRef {
    Arc::clone(cell.get_or_init(build))
}

/// The `source.snapshot` schema of Debezium 3.6: `io.debezium.data.Enum`
/// version 1, optional, default `"false"`.
pub fn snapshot_schema() -> SchemaRef {
    snapshot_schema_for(Format::V3_6)
}

/// The `source.snapshot` schema of a format.
pub fn snapshot_schema_for(format: Format) -> SchemaRef {
    static V36: OnceLock<SchemaRef> = OnceLock::new();
    static V27: OnceLock<SchemaRef> = OnceLock::new();
    let (cell, allowed) = match format {
        Format::V3_6 => (&V36, SNAPSHOT_ALLOWED),
        Format::V2_7 => (&V27, SNAPSHOT_ALLOWED_2_7),
    };
    shared(cell, || {
        SchemaBuilder::new(SchemaType::String)
            .name(ENUM_LOGICAL_NAME)
            .version(1)
            .parameter("allowed", allowed)
            .default_value(Value::String("false".into()))
            .optional()
            .build()
    })
}

/// `io.debezium.connector.postgresql.Source` of Debezium 3.6.
pub fn source_schema() -> SchemaRef {
    source_schema_for(Format::V3_6)
}

/// `io.debezium.connector.postgresql.Source`: version, connector, name,
/// ts_ms, snapshot, db, sequence, ts_us, ts_ns, schema, table, txId, lsn,
/// xmin; Debezium 3.6 adds origin and origin_lsn and gives the struct
/// schema version 1 (2.7 sets none).
pub fn source_schema_for(format: Format) -> SchemaRef {
    static V36: OnceLock<SchemaRef> = OnceLock::new();
    static V27: OnceLock<SchemaRef> = OnceLock::new();
    let cell = match format {
        Format::V3_6 => &V36,
        Format::V2_7 => &V27,
    };
    shared(cell, || {
        let mut b = SchemaBuilder::structure();
        if format == Format::V3_6 {
            b = b.version(1);
        }
        b = b
            .name(SOURCE_SCHEMA_NAME)
            .field("version", prim::string())
            .field("connector", prim::string())
            .field("name", prim::string())
            .field("ts_ms", prim::int64())
            .field("snapshot", snapshot_schema_for(format))
            .field("db", prim::string())
            .field("sequence", prim::opt_string())
            .field("ts_us", prim::opt_int64())
            .field("ts_ns", prim::opt_int64())
            .field("schema", prim::string())
            .field("table", prim::string())
            .field("txId", prim::opt_int64())
            .field("lsn", prim::opt_int64())
            .field("xmin", prim::opt_int64());
        if format == Format::V3_6 {
            b = b
                .field("origin", prim::opt_string())
                .field("origin_lsn", prim::opt_int64());
        }
        b.build()
    })
}

/// Values for one event's source block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo<'a> {
    /// `topic.prefix`.
    pub name: &'a str,
    /// Commit (or snapshot) time, ms since the epoch.
    pub ts_ms: i64,
    /// The same instant in µs.
    pub ts_us: i64,
    /// The same instant in ns.
    pub ts_ns: i64,
    /// `true`, `first`, `first_in_data_collection`, `last_in_data_collection`,
    /// `last`, `false` or `incremental`.
    pub snapshot: &'a str,
    /// Database name.
    pub db: &'a str,
    /// `source.sequence`, already formatted (see [`sequence_text`]).
    /// Debezium's PostgreSQL connector always fills it (at worst
    /// `[null,null]`), so pass `Some` to match it.
    pub sequence: Option<&'a str>,
    /// Schema of the table.
    pub schema: &'a str,
    /// Table name.
    pub table: &'a str,
    /// Transaction id.
    pub tx_id: Option<i64>,
    /// LSN of the event.
    pub lsn: Option<i64>,
    /// xmin (only with `xmin.fetch.interval.ms`).
    pub xmin: Option<i64>,
}

fn opt_i64(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Int64)
}

/// The source block's value of Debezium 3.6, without a replication origin.
pub fn source_value(info: &SourceInfo<'_>) -> Value {
    source_value_for(Format::V3_6, info, &Origin::default())
}

/// The replication origin of a transaction (pgoutput's ORIGIN message),
/// reported in `source.origin` / `source.origin_lsn` by Debezium 3.5+.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin<'a> {
    /// The origin's name.
    pub name: Option<&'a str>,
    /// The LSN of the commit on the origin server.
    pub lsn: Option<i64>,
}

/// The source block's value, as `PostgresSourceInfoStructMaker.struct`
/// fills it: `snapshot` stays null for `"false"` (Debezium only sets it
/// otherwise, so the converter writes the default), and txId / lsn / xmin
/// stay null for incremental-snapshot events.
pub fn source_value_for(format: Format, info: &SourceInfo<'_>, origin: &Origin<'_>) -> Value {
    let snapshot = if info.snapshot == "false" {
        Value::Null
    } else {
        Value::String(info.snapshot.to_string())
    };
    let incremental = info.snapshot == "incremental";
    let mut fields = Vec::with_capacity(16);
    fields.extend([
        Value::String(format.version().to_string()),
        Value::String(CONNECTOR_NAME.to_string()),
        Value::String(info.name.to_string()),
        Value::Int64(info.ts_ms),
        snapshot,
        Value::String(info.db.to_string()),
        info.sequence
            .map_or(Value::Null, |s| Value::String(s.to_string())),
        Value::Int64(info.ts_us),
        Value::Int64(info.ts_ns),
        Value::String(info.schema.to_string()),
        Value::String(info.table.to_string()),
        if incremental {
            Value::Null
        } else {
            opt_i64(info.tx_id)
        },
        if incremental {
            Value::Null
        } else {
            opt_i64(info.lsn)
        },
        if incremental {
            Value::Null
        } else {
            opt_i64(info.xmin)
        },
    ]);
    if format == Format::V3_6 {
        fields.push(
            origin
                .name
                .map_or(Value::Null, |n| Value::String(n.to_string())),
        );
        fields.push(opt_i64(origin.lsn));
    }
    Value::Struct(fields)
}

/// `source.sequence` as Debezium's `SourceInfo.sequence()` writes it: a JSON
/// array (Jackson, compact) of the last commit LSN and the event's LSN as
/// decimal strings of their signed 64-bit values, or `null`, e.g.
/// `["24023119","24023128"]` or `[null,"24023128"]`.
pub fn sequence_text(last_commit_lsn: Option<u64>, lsn: Option<u64>) -> String {
    use std::fmt::Write as _;
    // One buffer instead of three formatted strings: this runs for every
    // streamed event.
    fn part(out: &mut String, v: Option<u64>) {
        match v {
            // Lsn.asLong() is a Java long. Writing to a String cannot fail.
            Some(v) => {
                let _ = write!(out, "\"{}\"", v as i64);
            }
            None => out.push_str("null"),
        }
    }
    let mut out = String::with_capacity(48);
    out.push('[');
    part(&mut out, last_commit_lsn);
    out.push(',');
    part(&mut out, lsn);
    out.push(']');
    out
}

/// `event.block` (version 1, optional): id, total_order,
/// data_collection_order.
pub fn transaction_block_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .optional()
            .name("event.block")
            .version(1)
            .field("id", prim::string())
            .field("total_order", prim::int64())
            .field("data_collection_order", prim::int64())
            .build()
    })
}

/// An `event.block` value. Debezium's PostgreSQL transaction id is
/// `"<txId>:<LSN>"`.
pub fn transaction_block_value(id: &str, total_order: i64, data_collection_order: i64) -> Value {
    Value::Struct(vec![
        Value::String(id.to_string()),
        Value::Int64(total_order),
        Value::Int64(data_collection_order),
    ])
}

/// The optional copy of a row schema that `before` and `after` share.
fn optional_copy(value_schema: &SchemaRef) -> SchemaRef {
    if value_schema.optional {
        Arc::clone(value_schema)
    } else {
        let mut s: Schema = (**value_schema).clone();
        s.optional = true;
        Arc::new(s)
    }
}

/// The `<prefix>.<schema>.<table>.Envelope` schema of Debezium 3.6.
pub fn envelope_schema(envelope_name: &str, value_schema: &SchemaRef) -> SchemaRef {
    envelope_schema_for(Format::V3_6, envelope_name, value_schema)
}

/// The `<prefix>.<schema>.<table>.Envelope` schema (version 2), in
/// Debezium's field order: before, after, source, transaction, op, ts_ms,
/// ts_us, ts_ns. `TableSchemaBuilder` adds the transaction block before
/// `Envelope.Builder.build()` appends op and the timestamps, so it comes
/// right after source. `before` and `after` are the row schema made
/// optional (Debezium builds the `.Value` schema optional).
pub fn envelope_schema_for(
    format: Format,
    envelope_name: &str,
    value_schema: &SchemaRef,
) -> SchemaRef {
    let row = optional_copy(value_schema);
    SchemaBuilder::structure()
        .version(ENVELOPE_SCHEMA_VERSION)
        .name(envelope_name)
        .field("before", Arc::clone(&row))
        .field("after", row)
        .field("source", source_schema_for(format))
        .field("transaction", transaction_block_schema())
        .field("op", prim::string())
        .field("ts_ms", prim::opt_int64())
        .field("ts_us", prim::opt_int64())
        .field("ts_ns", prim::opt_int64())
        .build()
}

/// Builds an envelope value laid out by `envelope`'s fields (so any
/// envelope schema built by [`envelope_schema`] gets its order right).
/// Missing `before` / `after` / `transaction` are null, as Debezium leaves
/// them (a truncate has neither before nor after).
#[allow(clippy::too_many_arguments)]
pub fn envelope_value(
    envelope: &Schema,
    before: Option<Value>,
    after: Option<Value>,
    source: Value,
    op: Op,
    ts_ms: i64,
    ts_us: i64,
    ts_ns: i64,
    transaction: Option<Value>,
) -> Value {
    let mut before = before;
    let mut after = after;
    let mut source = Some(source);
    let mut transaction = transaction;
    let values = envelope
        .fields
        .iter()
        .map(|f| match f.name.as_str() {
            "before" => before.take().unwrap_or(Value::Null),
            "after" => after.take().unwrap_or(Value::Null),
            "source" => source.take().unwrap_or(Value::Null),
            "transaction" => transaction.take().unwrap_or(Value::Null),
            "op" => Value::String(op.code().to_string()),
            "ts_ms" => Value::Int64(ts_ms),
            "ts_us" => Value::Int64(ts_us),
            "ts_ns" => Value::Int64(ts_ns),
            _ => Value::Null,
        })
        .collect();
    Value::Struct(values)
}

/// The heartbeat topic: `__debezium-heartbeat.<prefix>`.
pub fn heartbeat_topic(prefix: &str) -> String {
    format!("__debezium-heartbeat.{prefix}")
}

/// `io.debezium.connector.common.ServerNameKey` (version 1): serverName.
pub fn heartbeat_key_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .name("io.debezium.connector.common.ServerNameKey")
            .version(1)
            .field("serverName", prim::string())
            .build()
    })
}

/// A heartbeat key: the topic prefix.
pub fn heartbeat_key(prefix: &str) -> Value {
    Value::Struct(vec![Value::String(prefix.to_string())])
}

/// `io.debezium.connector.common.Heartbeat` (version 1): ts_ms.
pub fn heartbeat_value_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .name("io.debezium.connector.common.Heartbeat")
            .version(1)
            .field("ts_ms", prim::int64())
            .build()
    })
}

/// A heartbeat value (the wall-clock time it was sent).
pub fn heartbeat_value(ts_ms: i64) -> Value {
    Value::Struct(vec![Value::Int64(ts_ms)])
}

/// The transaction metadata topic: `<prefix>.transaction`.
pub fn transaction_topic(prefix: &str) -> String {
    format!("{prefix}.transaction")
}

/// `io.debezium.connector.common.TransactionMetadataKey` (version 1): id.
pub fn transaction_key_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .name("io.debezium.connector.common.TransactionMetadataKey")
            .version(1)
            .field("id", prim::string())
            .build()
    })
}

/// `event.collection` (version 1, optional): data_collection, event_count.
pub fn transaction_collection_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .optional()
            .name("event.collection")
            .version(1)
            .field("data_collection", prim::string())
            .field("event_count", prim::int64())
            .build()
    })
}

/// `io.debezium.connector.common.TransactionMetadataValue` (version 1):
/// status, id, event_count (optional), data_collections (optional array of
/// `event.collection`), ts_ms — ts_ms comes last.
pub fn transaction_value_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .name("io.debezium.connector.common.TransactionMetadataValue")
            .version(1)
            .field("status", prim::string())
            .field("id", prim::string())
            .field("event_count", prim::opt_int64())
            .field(
                "data_collections",
                SchemaBuilder::array(transaction_collection_schema())
                    .optional()
                    .build(),
            )
            .field("ts_ms", prim::int64())
            .build()
    })
}

/// A transaction metadata key.
pub fn transaction_key(id: &str) -> Value {
    Value::Struct(vec![Value::String(id.to_string())])
}

/// A BEGIN event: event_count and data_collections null.
pub fn transaction_begin_value(id: &str, ts_ms: i64) -> Value {
    Value::Struct(vec![
        Value::String("BEGIN".into()),
        Value::String(id.to_string()),
        Value::Null,
        Value::Null,
        Value::Int64(ts_ms),
    ])
}

/// An END event with the total and per-table (`<schema>.<table>`) counts,
/// in the order given.
pub fn transaction_end_value(
    id: &str,
    ts_ms: i64,
    event_count: i64,
    per_collection: &[(String, i64)],
) -> Value {
    Value::Struct(vec![
        Value::String("END".into()),
        Value::String(id.to_string()),
        Value::Int64(event_count),
        Value::Array(
            per_collection
                .iter()
                .map(|(name, n)| Value::Struct(vec![Value::String(name.clone()), Value::Int64(*n)]))
                .collect(),
        ),
        Value::Int64(ts_ms),
    ])
}

/// Java's `String.hashCode` (UTF-16 code units, wrapping).
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The order in which a `java.util.HashMap<String, _>` with `capacity`
/// buckets iterates over `keys` given in insertion order: by bucket
/// (`(h ^ h >>> 16) & (capacity - 1)`), then by insertion. Debezium lists a
/// transaction's `data_collections` in this order (`TransactionContext`
/// keeps the counts in a HashMap). Returns indices into `keys`.
pub fn java_hash_map_order(keys: &[&str], capacity: usize) -> Vec<usize> {
    let mask = capacity.max(1) as u32 - 1;
    let mut idx: Vec<(u32, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let h = java_string_hash(k) as u32;
            ((h ^ (h >> 16)) & mask, i)
        })
        .collect();
    idx.sort();
    idx.into_iter().map(|(_, i)| i).collect()
}

/// The capacity a `java.util.HashMap` (default 16 buckets, load factor
/// 0.75) has grown to once it held `entries` entries.
pub fn java_hash_map_capacity(entries: usize) -> usize {
    let mut cap = 16;
    while entries > cap * 3 / 4 {
        cap *= 2;
    }
    cap
}

/// The logical decoding message topic: `<prefix>.message`.
pub fn message_topic(prefix: &str) -> String {
    format!("{prefix}.message")
}

/// `io.debezium.connector.postgresql.MessageKey` (version 1): prefix
/// (optional).
pub fn message_key_schema() -> SchemaRef {
    static CELL: OnceLock<SchemaRef> = OnceLock::new();
    shared(&CELL, || {
        SchemaBuilder::structure()
            .name("io.debezium.connector.postgresql.MessageKey")
            .version(1)
            .field("prefix", prim::opt_string())
            .build()
    })
}

/// `io.debezium.connector.postgresql.Message` (version 1): prefix and
/// content, both optional; content is bytes with `binary.handling.mode=bytes`
/// (the default) and a string for base64 / base64-url-safe / hex.
pub fn message_block_schema(content_as_string: bool) -> SchemaRef {
    static BYTES: OnceLock<SchemaRef> = OnceLock::new();
    static STRING: OnceLock<SchemaRef> = OnceLock::new();
    let build = move || {
        let content = if content_as_string {
            SchemaType::String
        } else {
            SchemaType::Bytes
        };
        SchemaBuilder::structure()
            .name("io.debezium.connector.postgresql.Message")
            .version(1)
            .field("prefix", prim::opt_string())
            .field("content", prim::of(content, true))
            .build()
    };
    shared(if content_as_string { &STRING } else { &BYTES }, build)
}

/// `io.debezium.connector.postgresql.MessageValue` of Debezium 3.6.
pub fn message_value_schema(content_as_string: bool) -> SchemaRef {
    message_value_schema_for(Format::V3_6, content_as_string)
}

/// `io.debezium.connector.postgresql.MessageValue` (version 1): op, ts_ms
/// (optional), source, transaction (Debezium 3.x), message.
pub fn message_value_schema_for(format: Format, content_as_string: bool) -> SchemaRef {
    static CELLS: [OnceLock<SchemaRef>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = usize::from(content_as_string) + if format == Format::V2_7 { 2 } else { 0 };
    shared(&CELLS[i], move || {
        let mut b = SchemaBuilder::structure()
            .name("io.debezium.connector.postgresql.MessageValue")
            .version(1)
            .field("op", prim::string())
            .field("ts_ms", prim::opt_int64())
            .field("source", source_schema_for(format));
        if format == Format::V3_6 {
            b = b.field("transaction", transaction_block_schema());
        }
        b.field("message", message_block_schema(content_as_string))
            .build()
    })
}

/// A logical decoding message key.
pub fn message_key(prefix: Option<&str>) -> Value {
    Value::Struct(vec![
        prefix.map_or(Value::Null, |p| Value::String(p.to_string()))
    ])
}

/// A logical decoding message value (`op` = `m`) of Debezium 3.6, without
/// a transaction block; `content` is `Value::Bytes` or, for the textual
/// binary handling modes, `Value::String`.
pub fn message_value(prefix: Option<&str>, content: Value, source: Value, ts_ms: i64) -> Value {
    message_value_for(Format::V3_6, prefix, content, source, ts_ms, None)
}

/// A logical decoding message value laid out for `format`'s schema.
pub fn message_value_for(
    format: Format,
    prefix: Option<&str>,
    content: Value,
    source: Value,
    ts_ms: i64,
    transaction: Option<Value>,
) -> Value {
    let mut fields = vec![
        Value::String(Op::Message.code().to_string()),
        Value::Int64(ts_ms),
        source,
    ];
    if format == Format::V3_6 {
        fields.push(transaction.unwrap_or(Value::Null));
    }
    fields.push(Value::Struct(vec![
        prefix.map_or(Value::Null, |p| Value::String(p.to_string())),
        content,
    ]));
    Value::Struct(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_map_order_is_javas() {
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash(""), 0);
        // As Debezium 3.6.3 listed a transaction's data collections (its
        // TransactionContext keeps them in a HashMap).
        let keys = [
            "public.m",
            "io.debezium.connector.postgresql.LogicalDecodingMessageMonitor$LogicalDecodingMessageId@61945826",
        ];
        assert_eq!(java_hash_map_order(&keys, 16), vec![1, 0]);
        assert_eq!(
            java_hash_map_order(&["public.a", "public.b"], 16),
            vec![0, 1]
        );
        assert_eq!(java_hash_map_capacity(12), 16);
        assert_eq!(java_hash_map_capacity(13), 32);
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("2.7"), Some(Format::V2_7));
        assert_eq!(Format::parse("3.6.3.Final"), Some(Format::V3_6));
        assert_eq!(Format::parse("1.9"), None);
        assert_eq!(Format::default().version(), "3.6.3.Final");
        let v36 = source_schema_for(Format::V3_6);
        let v27 = source_schema_for(Format::V2_7);
        assert_eq!((v36.version, v36.fields.len()), (Some(1), 16));
        assert_eq!((v27.version, v27.fields.len()), (None, 14));
    }
}
