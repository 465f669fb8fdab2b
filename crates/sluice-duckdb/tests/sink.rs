//! The DuckDB sink task fed with records serialized by the real JSON
//! converter from Debezium-shaped envelopes (built with `sluice_core`'s own
//! Debezium schema builders) and read back by it, as the worker hands them
//! to a sink over Kafka, checked against a real DuckDB file.

use std::sync::Arc;

use duckdb::Connection;
use sluice_core::config::Props;
use sluice_core::connector::{SinkContext, SinkTask};
use sluice_core::converter::{Converter, JsonConverter, JsonConverterConfig};
use sluice_core::debezium::{self, Op, SourceInfo};
use sluice_core::record::{Record, SinkRecord};
use sluice_core::schema::{SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

const TOPIC: &str = "myserver.public.items";

fn converter() -> Arc<dyn Converter> {
    Arc::new(JsonConverter::new(JsonConverterConfig::default()))
}

/// A record as the worker gives it to the sink: read from the topic with
/// the connector's converters.
fn read(r: Record) -> SinkRecord {
    let conv = converter();
    let (key_schema, key) = conv
        .to_connect(&r.topic, r.key.as_deref())
        .unwrap_or_else(|e| panic!("key of offset {}: {}", r.offset, e.message));
    let (value_schema, value) = conv
        .to_connect(&r.topic, r.value.as_deref())
        .unwrap_or_else(|e| panic!("value of offset {}: {}", r.offset, e.message));
    SinkRecord {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key_schema,
        key,
        value_schema,
        value,
        headers: r.headers,
    }
}

fn task(db: &std::path::Path, extra: &[(&str, &str)]) -> Box<dyn SinkTask> {
    let mut props: Props = [
        ("connector.class", "duckdb"),
        ("topics", TOPIC),
        ("duckdb.path", db.to_str().expect("utf-8 path")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    sluice_duckdb::plugin()
        .create_sink_task(
            &props,
            SinkContext {
                connector: "duck".into(),
                task_id: 0,
                key_converter: converter(),
                value_converter: converter(),
                reporter: Default::default(),
                telemetry: Default::default(),
            },
        )
        .expect("sink task")
}

fn opt(ty: SchemaType) -> SchemaRef {
    SchemaBuilder::new(ty).optional().build()
}

fn named(ty: SchemaType, name: &str) -> SchemaRef {
    SchemaBuilder::new(ty).name(name).optional().build()
}

/// A table with one column of each PostgreSQL type the sink must map, as
/// Debezium's PostgreSQL connector encodes them by default.
fn row_schema(with_note: bool, with_extra: bool) -> SchemaRef {
    let mut b = SchemaBuilder::structure()
        .name("myserver.public.items.Value")
        .optional()
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("i2", opt(SchemaType::Int16))
        .field("i8", opt(SchemaType::Int64))
        .field(
            "price",
            SchemaBuilder::new(SchemaType::Bytes)
                .name("org.apache.kafka.connect.data.Decimal")
                .version(1)
                .parameter("scale", "2")
                .parameter("connect.decimal.precision", "10")
                .optional()
                .build(),
        )
        .field("f4", opt(SchemaType::Float32))
        .field("f8", opt(SchemaType::Float64))
        .field("flag", opt(SchemaType::Boolean));
    if with_note {
        b = b.field("note", opt(SchemaType::String));
    }
    b = b
        .field("raw", opt(SchemaType::Bytes))
        .field("day", named(SchemaType::Int32, "io.debezium.time.Date"))
        .field(
            "at_time",
            named(SchemaType::Int64, "io.debezium.time.MicroTime"),
        )
        .field(
            "at",
            named(SchemaType::Int64, "io.debezium.time.MicroTimestamp"),
        )
        .field(
            "at_tz",
            named(SchemaType::String, "io.debezium.time.ZonedTimestamp"),
        )
        .field("doc", named(SchemaType::String, "io.debezium.data.Json"))
        .field("uid", named(SchemaType::String, "io.debezium.data.Uuid"))
        .field(
            "tags",
            SchemaBuilder::array(opt(SchemaType::Int32))
                .optional()
                .build(),
        );
    if with_extra {
        b = b.field("extra", opt(SchemaType::String));
    }
    b.build()
}

fn key_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name("myserver.public.items.Key")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .build()
}

fn row(schema: &SchemaRef, id: i32, note: &str) -> Value {
    let values = schema
        .fields
        .iter()
        .map(|f| match f.name.as_str() {
            "id" => Value::Int32(id),
            "i2" => Value::Int16(-7),
            "i8" => Value::Int64(9_000_000_000),
            // 12345.67 unscaled = 1234567 = 0x12D687.
            "price" => Value::Bytes(vec![0x12, 0xD6, 0x87]),
            "f4" => Value::Float32(1.5),
            "f8" => Value::Float64(2.25),
            "flag" => Value::Bool(true),
            "note" => Value::String(note.to_string()),
            "raw" => Value::Bytes(vec![0xde, 0xad, 0x00]),
            // 2024-02-29
            "day" => Value::Int32(19_782),
            "at_time" => Value::Int64(45_296_000_001),
            // 2024-02-29 12:34:56.000001
            "at" => Value::Int64(1_709_210_096_000_001),
            "at_tz" => Value::String("2024-02-29T12:34:56.5Z".into()),
            "doc" => Value::String("{\"a\": [1, 2]}".into()),
            "uid" => Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
            "tags" => Value::Array(vec![Value::Int32(1), Value::Null, Value::Int32(3)]),
            "extra" => Value::String(format!("x{id}")),
            _ => Value::Null,
        })
        .collect();
    Value::Struct(values)
}

/// Serializes one event as the source side of a pipeline would.
struct Events {
    row_schema: SchemaRef,
    offset: i64,
    /// `source.snapshot` of reads.
    marker: &'static str,
}

impl Events {
    fn new(row_schema: SchemaRef) -> Self {
        Events {
            row_schema,
            offset: 0,
            marker: "true",
        }
    }

    fn record(&mut self, op: Op, id: i32, note: &str, lsn: i64) -> SinkRecord {
        let conv = converter();
        let envelope =
            debezium::envelope_schema("myserver.public.items.Envelope", &self.row_schema);
        let sequence = debezium::sequence_text(Some(lsn as u64 - 1), Some(lsn as u64));
        let source = debezium::source_value(&SourceInfo {
            name: "myserver",
            ts_ms: 1_700_000_000_000,
            ts_us: 1_700_000_000_000_000,
            ts_ns: 1_700_000_000_000_000_000,
            snapshot: if op == Op::Read { self.marker } else { "false" },
            db: "db",
            sequence: Some(&sequence),
            schema: "public",
            table: "items",
            tx_id: Some(1),
            lsn: Some(lsn),
            xmin: None,
        });
        let image = row(&self.row_schema, id, note);
        let (before, after) = match op {
            Op::Delete => (Some(image), None),
            _ => (None, Some(image)),
        };
        let value = debezium::envelope_value(&envelope, before, after, source, op, 1, 1, 1, None);
        let key = Value::Struct(vec![Value::Int32(id)]);
        let record = Record {
            topic: Arc::from(TOPIC),
            partition: 0,
            offset: self.offset,
            timestamp_ms: 0,
            key: conv
                .from_connect(TOPIC, Some(&key_schema()), Some(&key))
                .expect("key"),
            value: conv
                .from_connect(TOPIC, Some(&envelope), Some(&value))
                .expect("value"),
            headers: Vec::new(),
        };
        self.offset += 1;
        read(record)
    }

    fn tombstone(&mut self, id: i32) -> SinkRecord {
        let key = Value::Struct(vec![Value::Int32(id)]);
        let record = Record {
            topic: Arc::from(TOPIC),
            partition: 0,
            offset: self.offset,
            timestamp_ms: 0,
            key: converter()
                .from_connect(TOPIC, Some(&key_schema()), Some(&key))
                .expect("key"),
            value: None,
            headers: Vec::new(),
        };
        self.offset += 1;
        read(record)
    }
}

/// A record of `TOPIC` partition 0 keyed by `id` (key_schema), its value
/// converted with `schema`, as the worker reads it back.
fn keyed(
    conv: &Arc<dyn Converter>,
    offset: i64,
    id: i32,
    schema: &SchemaRef,
    value: Option<&Value>,
) -> SinkRecord {
    read(Record {
        topic: Arc::from(TOPIC),
        partition: 0,
        offset,
        timestamp_ms: 0,
        key: conv
            .from_connect(
                TOPIC,
                Some(&key_schema()),
                Some(&Value::Struct(vec![Value::Int32(id)])),
            )
            .expect("key"),
        value: conv
            .from_connect(TOPIC, Some(schema), value)
            .expect("value"),
        headers: Vec::new(),
    })
}

fn query_strings(db: &std::path::Path, sql: &str) -> Vec<String> {
    let conn = Connection::open(db).expect("open duckdb");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

fn column_types(db: &std::path::Path, table: &str) -> Vec<String> {
    query_strings(
        db,
        &format!(
            "SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = '{table}' ORDER BY column_index"
        ),
    )
}

#[tokio::test]
async fn upsert_mode_keeps_current_rows_with_duckdb_types() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mut t = task(&db, &[]);
    let mut ev = Events::new(row_schema(true, false));
    let batch = vec![
        ev.record(Op::Read, 1, "one", 100),
        ev.record(Op::Read, 2, "two", 100),
        ev.record(Op::Create, 3, "three", 200),
        ev.record(Op::Update, 1, "one again", 300),
        ev.record(Op::Delete, 2, "two", 400),
        ev.tombstone(2),
        // A key deleted and created again within one flush ends up present.
        ev.record(Op::Delete, 3, "three", 500),
        ev.record(Op::Create, 3, "three reborn", 600),
    ];
    t.put(&batch).await.expect("put");
    t.flush().await.expect("flush");
    assert_eq!(
        column_types(&db, "items"),
        [
            "id INTEGER",
            "i2 SMALLINT",
            "i8 BIGINT",
            "price DECIMAL(10,2)",
            "f4 FLOAT",
            "f8 DOUBLE",
            "flag BOOLEAN",
            "note VARCHAR",
            "raw BLOB",
            "day DATE",
            "at_time TIME",
            "at TIMESTAMP",
            "at_tz TIMESTAMP WITH TIME ZONE",
            "doc JSON",
            "uid UUID",
            "tags INTEGER[]",
        ]
    );
    assert_eq!(
        query_strings(&db, "SELECT id || ':' || note FROM items ORDER BY id"),
        ["1:one again", "3:three reborn"]
    );
    let conn = Connection::open(&db).expect("open");
    let values: String = conn
        .query_row(
            "SELECT concat_ws('|', i2, i8, price, f4, f8, flag, hex(raw), day, at_time, \"at\", \
             at_tz AT TIME ZONE 'UTC', doc->>'$.a[1]', uid, tags) FROM items WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .expect("values");
    assert_eq!(
        values,
        "-7|9000000000|12345.67|1.5|2.25|true|DEAD00|2024-02-29|12:34:56.000001|\
         2024-02-29 12:34:56.000001|2024-02-29 12:34:56.5|2|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|[1, NULL, 3]"
    );
    let pk: String = conn
        .query_row(
            "SELECT array_to_string(constraint_column_names, ',') FROM duckdb_constraints() \
             WHERE table_name = 'items' AND constraint_type = 'PRIMARY KEY'",
            [],
            |r| r.get(0),
        )
        .expect("primary key");
    assert_eq!(pk, "id");
}

#[tokio::test]
async fn append_mode_writes_every_event_with_its_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mapping = format!("[{{'topic': '{TOPIC}', 'table': 'item_log', 'mode': 'append'}}]");
    let mut t = task(&db, &[("duckdb.tables.topics.mapping", &mapping)]);
    let mut ev = Events::new(row_schema(true, false));
    t.put(&[
        ev.record(Op::Create, 1, "a", 100),
        ev.record(Op::Update, 1, "b", 200),
        ev.record(Op::Delete, 1, "b", 300),
        ev.tombstone(1),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(
        query_strings(
            &db,
            "SELECT concat_ws(',', id, note, __op, __lsn, __source_ts_ms, __deleted) FROM item_log ORDER BY __lsn"
        ),
        [
            "1,a,c,100,1700000000000,false",
            "1,b,u,200,1700000000000,false",
            "1,b,d,300,1700000000000,true",
        ]
    );
    // No primary key in append mode: the same id appears three times.
    assert!(query_strings(
        &db,
        "SELECT constraint_type FROM duckdb_constraints() WHERE table_name = 'item_log' AND constraint_type = 'PRIMARY KEY'"
    )
    .is_empty());
}

#[tokio::test]
async fn added_columns_are_altered_in_and_dropped_ones_fill_with_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mut t = task(&db, &[]);
    let mut ev = Events::new(row_schema(true, false));
    t.put(&[ev.record(Op::Create, 1, "first", 100)])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    // ALTER TABLE items ADD COLUMN extra, then DROP COLUMN note, at the source.
    ev.row_schema = row_schema(true, true);
    t.put(&[ev.record(Op::Create, 2, "second", 200)])
        .await
        .expect("put");
    ev.row_schema = row_schema(false, true);
    t.put(&[ev.record(Op::Create, 3, "unused", 300)])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    let types = column_types(&db, "items");
    assert_eq!(types.last().map(String::as_str), Some("extra VARCHAR"));
    assert!(types.contains(&"note VARCHAR".to_string()));
    assert_eq!(
        query_strings(
            &db,
            "SELECT concat_ws(',', id, coalesce(note, 'NULL'), coalesce(extra, 'NULL')) FROM items ORDER BY id"
        ),
        ["1,first,NULL", "2,second,x2", "3,NULL,x3"]
    );
}

#[tokio::test]
async fn replay_after_a_kill_writes_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mapping = format!(
        "[{{'topic': '{TOPIC}', 'table': 'log', 'mode': 'append'}}, {{'topic': 'other.public.items', 'table': 'items'}}]"
    );
    let schema = row_schema(true, false);
    let events = |ev: &mut Events| {
        vec![
            ev.record(Op::Read, 1, "snap", 50),
            ev.record(Op::Read, 2, "snap", 50),
            ev.record(Op::Create, 3, "c", 100),
            ev.record(Op::Update, 1, "u", 200),
            ev.record(Op::Delete, 2, "snap", 300),
            ev.record(Op::Create, 4, "late", 400),
        ]
    };
    // The first run flushes the first four events, then is killed (dropped
    // without stop) after taking the rest without a flush.
    let all = events(&mut Events::new(Arc::clone(&schema)));
    let mut first = task(&db, &[("duckdb.tables.topics.mapping", &mapping)]);
    first.put(&all[..4]).await.expect("put");
    first.flush().await.expect("flush");
    first.put(&all[4..]).await.expect("put unflushed");
    drop(first);
    // In-process transport: the restarted source re-sends from its last
    // committed position and offsets start at 0 again.
    let replay = events(&mut Events::new(Arc::clone(&schema)));
    let mut second = task(&db, &[("duckdb.tables.topics.mapping", &mapping)]);
    second.put(&replay).await.expect("replay");
    second.flush().await.expect("flush");
    assert_eq!(
        query_strings(
            &db,
            "SELECT concat_ws(',', id, __op, __lsn) FROM log ORDER BY __lsn, id"
        ),
        ["1,r,50", "2,r,50", "3,c,100", "1,u,200", "2,d,300", "4,c,400"]
    );
    // A third run that sees only events already written writes nothing.
    let mut third = task(&db, &[("duckdb.tables.topics.mapping", &mapping)]);
    third
        .put(&events(&mut Events::new(schema)))
        .await
        .expect("replay");
    third.flush().await.expect("flush");
    assert_eq!(
        query_strings(&db, "SELECT count(*)::VARCHAR FROM log"),
        ["6"]
    );
}

#[tokio::test]
async fn replay_in_upsert_mode_converges_and_offset_dedup_uses_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let schema = row_schema(true, false);
    let events = |ev: &mut Events| {
        vec![
            ev.record(Op::Create, 1, "a", 100),
            ev.record(Op::Create, 2, "b", 200),
            ev.record(Op::Update, 1, "a2", 300),
            ev.record(Op::Delete, 2, "b", 400),
        ]
    };
    let all = events(&mut Events::new(Arc::clone(&schema)));
    let mut first = task(&db, &[("duckdb.dedup", "offset")]);
    first.put(&all[..2]).await.expect("put");
    first.flush().await.expect("flush");
    drop(first);
    // Over Kafka the consumer resumes at its committed offset or earlier;
    // here it re-reads everything from offset 0.
    let mut second = task(&db, &[("duckdb.dedup", "offset")]);
    second.put(&all).await.expect("replay");
    second.flush().await.expect("flush");
    assert_eq!(
        query_strings(&db, "SELECT id || ':' || note FROM items ORDER BY id"),
        ["1:a2"]
    );
    let offsets = query_strings(
        &db,
        "SELECT topic || '/' || kafka_partition || '@' || kafka_offset FROM __sluice_positions",
    );
    assert_eq!(offsets, [format!("{TOPIC}/0@3")]);
}

#[tokio::test]
async fn unwrapped_records_and_errors_that_name_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let conv = converter();
    // ExtractNewRecordState with delete.handling.mode=rewrite and
    // add.fields=op,lsn.
    let schema = SchemaBuilder::structure()
        .name("myserver.public.items.Value")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("name", opt(SchemaType::String))
        .field("__op", opt(SchemaType::String))
        .field("__lsn", opt(SchemaType::Int64))
        .field("__deleted", opt(SchemaType::String))
        .build();
    let rec = |offset: i64, id: i32, name: &str, op: &str, lsn: i64| {
        let value = Value::Struct(vec![
            Value::Int32(id),
            Value::String(name.into()),
            Value::String(op.into()),
            Value::Int64(lsn),
            Value::String((op == "d").to_string()),
        ]);
        keyed(&conv, offset, id, &schema, Some(&value))
    };
    let mut t = task(&db, &[]);
    t.put(&[
        rec(0, 1, "a", "c", 10),
        rec(1, 2, "b", "c", 20),
        rec(2, 2, "b", "d", 30),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(
        query_strings(&db, "SELECT id || ':' || name FROM items"),
        ["1:a"]
    );
    // Metadata fields are not columns.
    assert_eq!(column_types(&db, "items"), ["id INTEGER", "name VARCHAR"]);

    // Source dedup needs a source position; its absence is an error naming
    // the record, never a silent skip.
    let plain = SchemaBuilder::structure()
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .build();
    let bad = read(Record {
        topic: Arc::from(TOPIC),
        partition: 3,
        offset: 42,
        timestamp_ms: 0,
        key: None,
        value: conv
            .from_connect(
                TOPIC,
                Some(&plain),
                Some(&Value::Struct(vec![Value::Int32(1)])),
            )
            .expect("value"),
        headers: Vec::new(),
    });
    let err = format!(
        "{:#}",
        t.put(std::slice::from_ref(&bad)).await.expect_err("no lsn")
    );
    assert!(
        err.contains(TOPIC)
            && err.contains("partition 3")
            && err.contains("offset 42")
            && err.contains("duckdb.dedup"),
        "{err}"
    );
    // Upsert needs a key.
    let mut t = task(&db, &[("duckdb.dedup", "none")]);
    let err = format!("{:#}", t.put(&[bad]).await.expect_err("no key"));
    assert!(
        err.contains("offset 42") && err.contains("struct key"),
        "{err}"
    );
}

/// ExtractNewRecordState's default (`delete.tombstone.handling.mode=tombstone`)
/// turns a delete into a null value with the row's schema: it deletes the
/// key's row, and a restart that replays it after the key came back does
/// not delete the row again.
#[tokio::test]
async fn a_delete_unwrapped_to_a_null_value_deletes_its_row_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let conv = converter();
    // add.fields=op,lsn
    let schema = SchemaBuilder::structure()
        .name("myserver.public.items.Value")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("name", opt(SchemaType::String))
        .field("__op", opt(SchemaType::String))
        .field("__lsn", opt(SchemaType::Int64))
        .build();
    // A delete's null value has the envelope's optional `after` schema.
    let after = SchemaBuilder::structure()
        .name("myserver.public.items.Value")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("name", opt(SchemaType::String))
        .optional()
        .build();
    let record = |offset: i64, id: i32, row: Option<(&str, &str, i64)>| {
        let value = row.map(|(name, op, lsn)| {
            Value::Struct(vec![
                Value::Int32(id),
                Value::String(name.into()),
                Value::String(op.into()),
                Value::Int64(lsn),
            ])
        });
        keyed(
            &conv,
            offset,
            id,
            if value.is_some() { &schema } else { &after },
            value.as_ref(),
        )
    };
    let delete = record(2, 2, None);
    assert!(
        delete.value.is_none() && delete.value_schema.is_some(),
        "a null value that keeps its schema"
    );
    // Read with the task dropped: its connection may hold the last write.
    let rows = || query_strings(&db, "SELECT id || ':' || name FROM items ORDER BY id");
    let run = |records: Vec<SinkRecord>| {
        let db = db.clone();
        async move {
            let mut t = task(&db, &[]);
            t.put(&records).await.expect("put");
            t.flush().await.expect("flush");
        }
    };

    run(vec![
        record(0, 1, Some(("a", "c", 10))),
        record(1, 2, Some(("b", "c", 20))),
        delete.clone(),
    ])
    .await;
    assert_eq!(rows(), ["1:a"]);
    let after = || {
        vec![
            record(3, 2, Some(("b again", "c", 40))),
            record(4, 3, Some(("c", "c", 50))),
        ]
    };
    run(after()).await;
    assert_eq!(rows(), ["1:a", "2:b again", "3:c"]);
    // Restarted, the transport delivers the delete and what followed it
    // again: all of it was written, so the delete is not applied again
    // (which would leave key 2 deleted: its insert is at or below the
    // stored position and is skipped).
    let mut replay = vec![delete];
    replay.extend(after());
    run(replay).await;
    assert_eq!(rows(), ["1:a", "2:b again", "3:c"]);
    // A delete not written yet is the first record after a restart.
    run(vec![record(5, 1, None)]).await;
    assert_eq!(rows(), ["2:b again", "3:c"]);
}

#[test]
fn config_errors_name_the_key() {
    let props: Props = [
        (
            "duckdb.tables.topics.mapping",
            "[{'topic': 't', 'mode': 'merge'}]",
        ),
        ("duckdb.dedup", "lsn"),
        ("flush.size.records", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let errs = sluice_duckdb::plugin()
        .validate(&props)
        .expect_err("invalid")
        .to_string();
    for key in [
        "duckdb.path",
        "duckdb.tables.topics.mapping",
        "duckdb.dedup",
        "flush.size.records",
    ] {
        assert!(errs.contains(key), "{key} missing in {errs}");
    }
}

#[tokio::test]
async fn flush_size_and_interval_write_before_the_workers_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mut ev = Events::new(row_schema(true, false));
    let records: Vec<SinkRecord> = (1..=5)
        .map(|i| ev.record(Op::Create, i, "n", 100 * i64::from(i)))
        .collect();
    // Two full batches of two are handed to DuckDB during put (the second
    // may still be being written when put returns; stopping the task
    // finishes it); the fifth record waits for a flush that never comes.
    let mut t = task(&db, &[("flush.size.records", "2")]);
    t.put(&records).await.expect("put");
    t.stop().await.expect("stop");
    drop(t);
    assert_eq!(
        query_strings(&db, "SELECT id::VARCHAR FROM items ORDER BY id"),
        ["1", "2", "3", "4"]
    );
    // An interval of 0 writes whatever a put buffered at its end.
    let mut t = task(&db, &[("flush.interval.ms", "0")]);
    t.put(&records[4..]).await.expect("put");
    t.stop().await.expect("stop");
    drop(t);
    assert_eq!(
        query_strings(&db, "SELECT count(*)::VARCHAR FROM items"),
        ["5"]
    );
}

/// A record of an unwrapped row `{id, n}` whose `n` has schema `n`.
fn typed(offset: i64, id: i32, n: SchemaRef, value: Value) -> SinkRecord {
    let conv = converter();
    let schema = SchemaBuilder::structure()
        .name("myserver.public.items.Value")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("n", n)
        .build();
    keyed(
        &conv,
        offset,
        id,
        &schema,
        Some(&Value::Struct(vec![Value::Int32(id), value])),
    )
}

/// Writes `r` with a task of its own (closed before the file is read: two
/// DuckDB instances of one file in one process must not both be open).
async fn write_one(
    db: &std::path::Path,
    extra: &[(&str, &str)],
    r: SinkRecord,
) -> anyhow::Result<()> {
    let mut settings = vec![("duckdb.dedup", "none")];
    settings.extend_from_slice(extra);
    let mut t = task(db, &settings);
    t.put(&[r]).await?;
    t.flush().await
}

#[tokio::test]
async fn a_widened_type_alters_the_column_and_an_incompatible_one_stops_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let date = || named(SchemaType::Int32, "io.debezium.time.Date");
    let rows = || query_strings(&db, "SELECT id || ':' || n FROM items ORDER BY id");
    // int → bigint, then a value only bigint holds.
    write_one(
        &db,
        &[],
        typed(0, 1, opt(SchemaType::Int32), Value::Int32(5)),
    )
    .await
    .expect("int");
    write_one(
        &db,
        &[],
        typed(1, 2, opt(SchemaType::Int64), Value::Int64(1 << 40)),
    )
    .await
    .expect("widened");
    assert_eq!(column_types(&db, "items"), ["id INTEGER", "n BIGINT"]);
    assert_eq!(rows(), ["1:5", "2:1099511627776"]);
    // A narrowing keeps the wider column.
    write_one(
        &db,
        &[],
        typed(2, 3, opt(SchemaType::Int16), Value::Int16(7)),
    )
    .await
    .expect("narrowed");
    assert_eq!(column_types(&db, "items"), ["id INTEGER", "n BIGINT"]);
    assert_eq!(rows(), ["1:5", "2:1099511627776", "3:7"]);

    // bigint → date: neither holds the other. With
    // duckdb.type.incompatible=fail the error names the table, the column,
    // both types and the setting, and nothing is written.
    let err = write_one(
        &db,
        &[("duckdb.type.incompatible", "fail")],
        typed(3, 4, date(), Value::Int32(19_000)),
    )
    .await
    .expect_err("incompatible");
    let err = format!("{err:#}");
    assert!(
        err.contains("'items'")
            && err.contains("'n'")
            && err.contains("BIGINT")
            && err.contains("DATE")
            && err.contains("duckdb.type.incompatible=varchar"),
        "{err}"
    );
    assert_eq!(column_types(&db, "items"), ["id INTEGER", "n BIGINT"]);
    assert_eq!(rows(), ["1:5", "2:1099511627776", "3:7"]);

    // By default, the column becomes text and keeps every value.
    write_one(&db, &[], typed(3, 4, date(), Value::Int32(19_000)))
        .await
        .expect("as text");
    assert_eq!(column_types(&db, "items"), ["id INTEGER", "n VARCHAR"]);
    assert_eq!(rows(), ["1:5", "2:1099511627776", "3:7", "4:2022-01-08"]);
}

#[tokio::test]
async fn a_snapshot_end_and_changes_with_a_new_column_in_one_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let mut t = task(&db, &[]);
    let mut ev = Events::new(row_schema(true, false));
    ev.marker = "first";
    t.put(&[ev.record(Op::Read, 1, "text", 100)])
        .await
        .expect("put");
    t.flush().await.expect("snapshot");
    // One flush: the snapshot's last read, then an insert, an update (of a
    // row with a LIST column) and a delete, then a column added and one
    // dropped at the source and an insert with the new columns. DuckDB
    // refuses to alter a table after rows of it changed in the same
    // transaction: the columns are added first.
    ev.marker = "last";
    t.put(&[
        ev.record(Op::Read, 2, "second", 100),
        ev.record(Op::Create, 3, "three", 200),
        ev.record(Op::Update, 1, "first", 201),
        ev.record(Op::Delete, 2, "second", 202),
    ])
    .await
    .expect("put");
    ev.row_schema = row_schema(false, true);
    t.put(&[ev.record(Op::Create, 4, "four", 300)])
        .await
        .expect("put");
    t.flush().await.expect("changes");
    drop(t);
    assert_eq!(
        query_strings(
            &db,
            "SELECT concat_ws(',', id, coalesce(note, 'NULL'), coalesce(extra, 'NULL'), tags) FROM items ORDER BY id"
        ),
        [
            "1,first,NULL,[1, NULL, 3]",
            "3,three,NULL,[1, NULL, 3]",
            "4,NULL,x4,[1, NULL, 3]"
        ]
    );
    assert_eq!(
        query_strings(
            &db,
            "SELECT concat_ws(',', table_name, state, rows) FROM __sluice_snapshots"
        ),
        ["items,complete,2"]
    );
}

#[tokio::test]
async fn flushes_report_rows_applied_and_flush_time_as_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("sink.duckdb");
    let props: Props = [
        ("connector.class", "duckdb"),
        ("topics", TOPIC),
        ("duckdb.path", db.to_str().expect("utf-8 path")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let telemetry: Arc<sluice_core::telemetry::SinkTelemetry> = Default::default();
    let mut t = sluice_duckdb::plugin()
        .create_sink_task(
            &props,
            SinkContext {
                connector: "duck".into(),
                task_id: 0,
                key_converter: converter(),
                value_converter: converter(),
                reporter: Default::default(),
                telemetry: Arc::clone(&telemetry),
            },
        )
        .expect("sink task");
    let metric = |name: &str| {
        telemetry
            .plugin
            .read()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, m)| m.value)
    };
    let mut ev = Events::new(row_schema(true, false));
    t.put(&[
        ev.record(Op::Create, 1, "one", 100),
        ev.record(Op::Create, 2, "two", 100),
        ev.record(Op::Update, 1, "one again", 200),
    ])
    .await
    .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(metric("duckdb_rows_applied"), 3.0);
    assert_eq!(metric("duckdb_flushes"), 1.0);
    assert!(metric("duckdb_flush_seconds") > 0.0);
    t.put(&[ev.record(Op::Delete, 2, "two", 300)])
        .await
        .expect("put");
    t.flush().await.expect("flush");
    assert_eq!(metric("duckdb_rows_applied"), 4.0);
    assert_eq!(metric("duckdb_flushes"), 2.0);
}
