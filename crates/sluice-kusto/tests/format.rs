//! The Kusto sink's batch encoder against the bytes the official connector
//! writes for the same records, and the table/mapping commands of
//! `kusto.tables.create`.
//!
//! Expected key orders of schemaless objects are those of a
//! `java.util.HashMap` filled in document order (checked with a JVM when
//! the tests were written); the other expected bytes follow Kafka's
//! JsonConverter (`schemas.enable=false`) and Jackson.

use std::sync::Arc;

use apache_avro::types::Value as Avro;
use sluice_core::converter::{
    ConvertError, Converter, JsonConverter, JsonConverterConfig, StringConverter, StringEncoding,
};
use sluice_core::debezium;
use sluice_core::record::{Record, SinkRecord};
use sluice_core::schema::{prim, Schema, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;
use sluice_kusto::format::BatchEncoder;
use sluice_kusto::schema::{
    alter_merge_command, create_mapping_command, create_table_command, json_mapping, kusto_columns,
    value_schema,
};

const TOPIC: &str = "myserver.retail.orders_info";

fn json_conv(schemas: bool) -> JsonConverter {
    JsonConverter::new(JsonConverterConfig {
        schemas_enable: schemas,
        ..JsonConverterConfig::default()
    })
}

fn string_conv() -> StringConverter {
    StringConverter::new(StringEncoding::Utf8)
}

/// `ByteArrayConverter`: bytes as they are, with an optional bytes schema.
struct BytesConv;

impl Converter for BytesConv {
    fn from_connect(
        &self,
        _topic: &str,
        _schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        Ok(match value {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        })
    }
    fn to_connect(
        &self,
        _topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError> {
        Ok((
            Some(prim::of(SchemaType::Bytes, true)),
            data.map(|d| Value::Bytes(d.to_vec())),
        ))
    }
}

fn record(offset: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
    Record {
        topic: Arc::from(TOPIC),
        partition: 1,
        offset,
        timestamp_ms: 1_602_228_190_000,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: Vec::new(),
    }
}

/// The record as the worker hands it to the sink: read with the
/// connector's converters.
fn read(r: &Record, key: &dyn Converter, value: &dyn Converter) -> SinkRecord {
    let (key_schema, key) = key
        .to_connect(&r.topic, r.key.as_deref())
        .unwrap_or_else(|e| panic!("key of offset {}: {}", r.offset, e.message));
    let (value_schema, value) = value
        .to_connect(&r.topic, r.value.as_deref())
        .unwrap_or_else(|e| panic!("value of offset {}: {}", r.offset, e.message));
    SinkRecord {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key_schema,
        key,
        value_schema,
        value,
        headers: r.headers.clone(),
    }
}

/// The scenario's row schema, as Debezium builds it for
/// `retail.orders_info` (`orderid` SERIAL has a default).
fn order_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name(format!("{TOPIC}.Value"))
        .field(
            "orderid",
            SchemaBuilder::new(SchemaType::Int32)
                .default_value(Value::Int32(0))
                .build(),
        )
        .field("custid", prim::of(SchemaType::Int32, false))
        .field("amount", prim::of(SchemaType::Int32, false))
        .field("city", prim::string())
        .field("purchase_time", prim::string())
        .build()
}

fn order_value(orderid: i32) -> Value {
    Value::Struct(vec![
        Value::Int32(orderid),
        Value::Int32(306),
        Value::Int32(183),
        Value::String("Austin".into()),
        Value::String("2020-10-09 07:23:10".into()),
    ])
}

/// The unwrapped event as the worker's JsonConverter (schemas.enable=true)
/// holds it.
fn order_with_schema(orderid: i32) -> Vec<u8> {
    let schema = order_schema();
    json_conv(true)
        .from_connect(TOPIC, Some(&schema), Some(&order_value(orderid)))
        .expect("serializes")
        .expect("not null")
}

const ORDER_SCHEMALESS: &[u8] = br#"{"orderid":51,"custid":306,"amount":183,"city":"Austin","purchase_time":"2020-10-09 07:23:10"}"#;
const ORDER_KEY: &[u8] = b"Struct{orderid=51}";

// ---------------------------------------------------------------------------
// json

#[test]
fn json_struct_is_a_compact_line_in_schema_order() {
    let mut enc = BatchEncoder::new("json").unwrap();
    assert_eq!(enc.kusto_format(), "multijson");
    let r = record(7, Some(ORDER_KEY), Some(&order_with_schema(51)));
    enc.push(&read(&r, &string_conv(), &json_conv(true)))
        .unwrap();
    assert_eq!(enc.records(), 1);
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{\"orderid\":51,\"custid\":306,\"amount\":183,\"city\":\"Austin\",\"purchase_time\":\"2020-10-09 07:23:10\"}\n"
    );
}

#[test]
fn json_schemaless_object_comes_out_in_java_hashmap_order() {
    let mut enc = BatchEncoder::new("JSON").unwrap();
    let r = record(7, Some(ORDER_KEY), Some(ORDER_SCHEMALESS));
    enc.push(&read(&r, &string_conv(), &json_conv(false)))
        .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{\"amount\":183,\"orderid\":51,\"city\":\"Austin\",\"custid\":306,\"purchase_time\":\"2020-10-09 07:23:10\"}\n"
    );
}

#[test]
fn json_schemaless_numbers_are_java_longs_and_doubles() {
    let mut enc = BatchEncoder::new("multijson").unwrap();
    let v = br#"{"price":2.50,"qty":1e3,"big":12345678901,"neg":-4,"tiny":1e-5,"flag":true,"none":null,"list":[1,"a\nb",{"b":1,"a":2}],"nested":{"z":1,"y":"\u0001"}}"#;
    enc.push(&read(
        &record(0, None, Some(v)),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{\"big\":12345678901,\"neg\":-4,\"flag\":true,\"price\":2.5,\"tiny\":1.0E-5,\"qty\":1000.0,\"none\":null,\"list\":[1,\"a\\nb\",{\"a\":2,\"b\":1}],\"nested\":{\"y\":\"\\u0001\",\"z\":1}}\n"
    );
}

fn envelope_parts() -> (SchemaRef, Value) {
    let row = order_schema();
    let envelope = debezium::envelope_schema(&format!("{TOPIC}.Envelope"), &row);
    let source = debezium::source_value(&debezium::SourceInfo {
        name: "myserver",
        ts_ms: 1_602_228_190_000,
        ts_us: 1_602_228_190_000_000,
        ts_ns: 1_602_228_190_000_000_000,
        snapshot: "false",
        db: "postgres",
        sequence: Some("[null,\"24023128\"]"),
        schema: "retail",
        table: "orders_info",
        tx_id: Some(555),
        lsn: Some(24_023_128),
        xmin: None,
    });
    let value = debezium::envelope_value(
        &envelope,
        None,
        Some(order_value(51)),
        source,
        debezium::Op::Create,
        1_602_228_190_123,
        1_602_228_190_123_000,
        1_602_228_190_123_000_000,
        None,
    );
    (envelope, value)
}

#[test]
fn json_full_debezium_envelope_without_unwrap() {
    let (schema, value) = envelope_parts();
    let bytes = json_conv(true)
        .from_connect(TOPIC, Some(&schema), Some(&value))
        .unwrap()
        .unwrap();
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(3, Some(ORDER_KEY), Some(&bytes)),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    // `source.snapshot` is null in the event and written as its default.
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        concat!(
            "{\"before\":null,",
            "\"after\":{\"orderid\":51,\"custid\":306,\"amount\":183,\"city\":\"Austin\",\"purchase_time\":\"2020-10-09 07:23:10\"},",
            "\"source\":{\"version\":\"3.6.3.Final\",\"connector\":\"postgresql\",\"name\":\"myserver\",\"ts_ms\":1602228190000,",
            "\"snapshot\":\"false\",\"db\":\"postgres\",\"sequence\":\"[null,\\\"24023128\\\"]\",\"ts_us\":1602228190000000,",
            "\"ts_ns\":1602228190000000000,\"schema\":\"retail\",\"table\":\"orders_info\",\"txId\":555,\"lsn\":24023128,\"xmin\":null,",
            "\"origin\":null,\"origin_lsn\":null},",
            "\"transaction\":null,\"op\":\"c\",\"ts_ms\":1602228190123,\"ts_us\":1602228190123000,\"ts_ns\":1602228190123000000}\n"
        )
    );
}

#[test]
fn json_schemaless_envelope_is_ordered_at_every_level() {
    let v = br#"{"before":null,"after":{"orderid":51,"city":"Austin"},"source":{"version":"2.7.3.Final","connector":"postgresql","name":"myserver","ts_ms":1,"snapshot":"false","db":"postgres","schema":"retail","table":"orders_info","txId":555,"lsn":7},"op":"c","ts_ms":2}"#;
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(v)),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        concat!(
            "{\"op\":\"c\",\"before\":null,\"after\":{\"orderid\":51,\"city\":\"Austin\"},",
            "\"source\":{\"schema\":\"retail\",\"connector\":\"postgresql\",\"lsn\":7,\"name\":\"myserver\",\"txId\":555,",
            "\"version\":\"2.7.3.Final\",\"ts_ms\":1,\"snapshot\":\"false\",\"db\":\"postgres\",\"table\":\"orders_info\"},",
            "\"ts_ms\":2}\n"
        )
    );
}

/// A row with the logical types Debezium and Connect use.
fn logical_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name("logical.Value")
        .field(
            "dec",
            SchemaBuilder::new(SchemaType::Bytes)
                .name("org.apache.kafka.connect.data.Decimal")
                .version(1)
                .parameter("scale", "2")
                .build(),
        )
        .field(
            "date",
            SchemaBuilder::new(SchemaType::Int32)
                .name("org.apache.kafka.connect.data.Date")
                .version(1)
                .build(),
        )
        .field(
            "time",
            SchemaBuilder::new(SchemaType::Int32)
                .name("org.apache.kafka.connect.data.Time")
                .version(1)
                .build(),
        )
        .field(
            "ts",
            SchemaBuilder::new(SchemaType::Int64)
                .name("org.apache.kafka.connect.data.Timestamp")
                .version(1)
                .build(),
        )
        .field(
            "micro",
            SchemaBuilder::new(SchemaType::Int64)
                .name("io.debezium.time.MicroTimestamp")
                .version(1)
                .build(),
        )
        .field(
            "zoned",
            SchemaBuilder::new(SchemaType::String)
                .name("io.debezium.time.ZonedTimestamp")
                .version(1)
                .optional()
                .build(),
        )
        .field(
            "uuid",
            SchemaBuilder::new(SchemaType::String)
                .name("io.debezium.data.Uuid")
                .version(1)
                .build(),
        )
        .field(
            "doc",
            SchemaBuilder::new(SchemaType::String)
                .name("io.debezium.data.Json")
                .version(1)
                .optional()
                .build(),
        )
        .build()
}

fn logical_value() -> Value {
    Value::Struct(vec![
        Value::Bytes(vec![0x30, 0x39]), // 123.45
        Value::Int32(18_544),           // 2020-10-09
        Value::Int32(26_590_000),       // 07:23:10
        Value::Int64(1_602_228_190_000),
        Value::Int64(1_602_228_190_123_456),
        Value::String("2020-10-09T07:23:10.123456Z".into()),
        Value::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::String("{\"a\":[1,2]}".into()),
    ])
}

fn logical_bytes() -> Vec<u8> {
    json_conv(true)
        .from_connect("t", Some(&logical_schema()), Some(&logical_value()))
        .unwrap()
        .unwrap()
}

#[test]
fn json_logical_types_in_their_physical_form() {
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(&logical_bytes())),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        concat!(
            "{\"dec\":\"MDk=\",\"date\":18544,\"time\":26590000,\"ts\":1602228190000,",
            "\"micro\":1602228190123456,\"zoned\":\"2020-10-09T07:23:10.123456Z\",",
            "\"uuid\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",\"doc\":\"{\\\"a\\\":[1,2]}\"}\n"
        )
    );
}

#[test]
fn tombstones_are_skipped_in_every_format() {
    for format in ["json", "csv", "avro"] {
        let mut enc = BatchEncoder::new(format).unwrap();
        enc.push(&read(
            &record(1, Some(ORDER_KEY), None),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap();
        enc.push(&read(
            &record(2, Some(ORDER_KEY), Some(b"null")),
            &string_conv(),
            &json_conv(false),
        ))
        .unwrap();
        enc.push(&read(
            &record(3, None, Some(br#"{"schema":null,"payload":null}"#)),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap();
        enc.push(&read(
            &record(4, None, None),
            &string_conv(),
            &string_conv(),
        ))
        .unwrap();
        assert_eq!(enc.records(), 0, "{format}");
        assert_eq!(enc.len_bytes(), 0, "{format}");
        assert!(enc.finish().unwrap().is_empty(), "{format}");
    }
}

#[test]
fn len_bytes_grows_with_pushes_and_finish_resets() {
    for format in ["json", "csv", "avro"] {
        let mut enc = BatchEncoder::new(format).unwrap();
        let (conv, value): (JsonConverter, Vec<u8>) = if format == "csv" {
            (json_conv(false), ORDER_SCHEMALESS.to_vec())
        } else {
            (json_conv(true), order_with_schema(1))
        };
        assert_eq!(enc.len_bytes(), 0);
        enc.push(&read(&record(1, None, Some(&value)), &string_conv(), &conv))
            .unwrap();
        let one = enc.len_bytes();
        assert!(one > 0, "{format}");
        enc.push(&read(&record(2, None, Some(&value)), &string_conv(), &conv))
            .unwrap();
        let two = enc.len_bytes();
        assert!(two > one, "{format}");
        assert_eq!(enc.records(), 2);
        let batch = enc.finish().unwrap();
        if format != "avro" {
            assert_eq!(batch.len(), two, "{format}");
        } else {
            assert!(batch.len() >= two, "{format}: {} < {two}", batch.len());
        }
        assert_eq!(enc.len_bytes(), 0, "{format}");
        assert_eq!(enc.records(), 0, "{format}");
        assert!(enc.finish().unwrap().is_empty(), "{format}");
        enc.push(&read(&record(3, None, Some(&value)), &string_conv(), &conv))
            .unwrap();
        assert_eq!(
            enc.len_bytes(),
            one,
            "{format}: the next batch starts afresh"
        );
    }
}

#[test]
fn the_first_record_chooses_the_writer_for_the_partition() {
    // A string first: the string writer, which prints a later object as
    // Java's Map.toString().
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(b"\"hello\"")),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    enc.finish().unwrap();
    enc.push(&read(
        &record(1, None, Some(br#"{"b":1,"a":[1,2.5]}"#)),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{a=[1, 2.5], b=1}\n"
    );

    // An object first: the JSON writer, which quotes a later string.
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(br#"{"b":1}"#)),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    enc.push(&read(
        &record(1, None, Some(b"\"hello\"")),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    enc.push(&read(
        &record(2, None, Some(b"42")),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{\"b\":1}\n\"hello\"\n42\n"
    );
}

#[test]
fn json_with_string_values_passes_them_through() {
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, Some(ORDER_KEY), Some(ORDER_SCHEMALESS)),
        &string_conv(),
        &string_conv(),
    ))
    .unwrap();
    let mut expected = ORDER_SCHEMALESS.to_vec();
    expected.push(b'\n');
    assert_eq!(enc.finish().unwrap(), expected);
}

#[test]
fn bytes_values_are_written_raw_with_a_newline() {
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(b"{\"a\":1}")),
        &string_conv(),
        &BytesConv,
    ))
    .unwrap();
    enc.push(&read(
        &record(1, None, Some(b"x,y")),
        &string_conv(),
        &BytesConv,
    ))
    .unwrap();
    assert_eq!(enc.finish().unwrap(), b"{\"a\":1}\nx,y\n".to_vec());
}

// ---------------------------------------------------------------------------
// csv

#[test]
fn csv_rows_are_the_string_values() {
    let mut enc = BatchEncoder::new("csv").unwrap();
    assert_eq!(enc.kusto_format(), "csv");
    enc.push(&read(
        &record(
            0,
            Some(ORDER_KEY),
            Some(b"51,306,183,Austin,2020-10-09 07:23:10"),
        ),
        &string_conv(),
        &string_conv(),
    ))
    .unwrap();
    enc.push(&read(
        &record(
            1,
            Some(ORDER_KEY),
            Some(b"52,7,100,\"New York\",2020-10-09 07:23:13"),
        ),
        &string_conv(),
        &string_conv(),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "51,306,183,Austin,2020-10-09 07:23:10\n52,7,100,\"New York\",2020-10-09 07:23:13\n"
    );
}

#[test]
fn csv_with_schemaless_objects_writes_json_lines_as_the_connector_does() {
    let mut enc = BatchEncoder::new("csv").unwrap();
    enc.push(&read(
        &record(0, Some(ORDER_KEY), Some(ORDER_SCHEMALESS)),
        &string_conv(),
        &json_conv(false),
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        "{\"amount\":183,\"orderid\":51,\"city\":\"Austin\",\"custid\":306,\"purchase_time\":\"2020-10-09 07:23:10\"}\n"
    );
}

#[test]
fn csv_rejects_struct_values() {
    let mut enc = BatchEncoder::new("csv").unwrap();
    let err = enc
        .push(&read(
            &record(5, Some(ORDER_KEY), Some(&order_with_schema(51))),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("offset 5"), "{err}");
    assert!(err.to_string().contains("Struct"), "{err}");
    assert_eq!(enc.records(), 0);
    assert_eq!(enc.len_bytes(), 0);
    // A Debezium envelope is a Struct too.
    let (schema, value) = envelope_parts();
    let bytes = json_conv(true)
        .from_connect(TOPIC, Some(&schema), Some(&value))
        .unwrap()
        .unwrap();
    assert!(enc
        .push(&read(
            &record(6, None, Some(&bytes)),
            &string_conv(),
            &json_conv(true)
        ))
        .is_err());
    // The failed records chose no writer: a string row still goes through.
    enc.push(&read(
        &record(7, None, Some(b"1,2")),
        &string_conv(),
        &string_conv(),
    ))
    .unwrap();
    assert_eq!(enc.finish().unwrap(), b"1,2\n".to_vec());
}

// ---------------------------------------------------------------------------
// avro

fn read_avro(bytes: &[u8]) -> (apache_avro::Schema, Vec<Avro>) {
    let reader = apache_avro::Reader::new(bytes).expect("an Avro object container file");
    let schema = reader.writer_schema().clone();
    let values = reader.map(|v| v.expect("a readable record")).collect();
    (schema, values)
}

fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}");
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name} in {record:?}"))
        .1
}

#[test]
fn avro_scenario_record_reads_back() {
    for format in ["avro", "apacheavro"] {
        let mut enc = BatchEncoder::new(format).unwrap();
        assert_eq!(enc.kusto_format(), format);
        enc.push(&read(
            &record(0, Some(ORDER_KEY), Some(&order_with_schema(51))),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap();
        enc.push(&read(
            &record(1, Some(ORDER_KEY), Some(&order_with_schema(52))),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap();
        let (schema, values) = read_avro(&enc.finish().unwrap());
        let apache_avro::Schema::Record(r) = &schema else {
            panic!("{schema:?}");
        };
        assert_eq!(r.name.fullname(None), format!("{TOPIC}.Value"));
        let names: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["orderid", "custid", "amount", "city", "purchase_time"]
        );
        assert_eq!(
            values,
            vec![
                Avro::Record(vec![
                    ("orderid".into(), Avro::Int(51)),
                    ("custid".into(), Avro::Int(306)),
                    ("amount".into(), Avro::Int(183)),
                    ("city".into(), Avro::String("Austin".into())),
                    (
                        "purchase_time".into(),
                        Avro::String("2020-10-09 07:23:10".into())
                    ),
                ]),
                Avro::Record(vec![
                    ("orderid".into(), Avro::Int(52)),
                    ("custid".into(), Avro::Int(306)),
                    ("amount".into(), Avro::Int(183)),
                    ("city".into(), Avro::String("Austin".into())),
                    (
                        "purchase_time".into(),
                        Avro::String("2020-10-09 07:23:10".into())
                    ),
                ]),
            ]
        );
    }
}

#[test]
fn avro_rejects_schemaless_and_string_values() {
    let mut enc = BatchEncoder::new("avro").unwrap();
    let err = enc
        .push(&read(
            &record(3, None, Some(ORDER_SCHEMALESS)),
            &string_conv(),
            &json_conv(false),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("offset 3"), "{err}");
    assert!(err.to_string().contains("Avro"), "{err}");
    assert!(enc
        .push(&read(
            &record(4, None, Some(b"a,b")),
            &string_conv(),
            &string_conv()
        ))
        .is_err());
    assert!(enc
        .push(&read(
            &record(5, None, Some(b"\x4f\x62\x6a\x01")),
            &string_conv(),
            &BytesConv
        ))
        .is_err());
    assert_eq!(enc.records(), 0);
    assert!(enc.finish().unwrap().is_empty());
}

#[test]
fn avro_full_envelope_defines_the_row_record_once() {
    let (schema, value) = envelope_parts();
    let bytes = json_conv(true)
        .from_connect(TOPIC, Some(&schema), Some(&value))
        .unwrap()
        .unwrap();
    let mut enc = BatchEncoder::new("avro").unwrap();
    enc.push(&read(
        &record(0, None, Some(&bytes)),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let (schema, values) = read_avro(&enc.finish().unwrap());
    let apache_avro::Schema::Record(r) = &schema else {
        panic!("{schema:?}");
    };
    assert_eq!(r.name.fullname(None), format!("{TOPIC}.Envelope"));
    let [v] = values.as_slice() else {
        panic!("{values:?}");
    };
    assert_eq!(field(v, "before"), &Avro::Union(0, Box::new(Avro::Null)));
    let Avro::Union(1, after) = field(v, "after") else {
        panic!("{v:?}");
    };
    assert_eq!(field(after, "orderid"), &Avro::Int(51));
    assert_eq!(field(after, "city"), &Avro::String("Austin".into()));
    let source = field(v, "source");
    assert_eq!(field(source, "name"), &Avro::String("myserver".into()));
    // The null snapshot takes its default, the first branch of [string, null].
    assert_eq!(
        field(source, "snapshot"),
        &Avro::Union(0, Box::new(Avro::String("false".into())))
    );
    assert_eq!(field(v, "op"), &Avro::String("c".into()));
    assert_eq!(
        field(v, "ts_ms"),
        &Avro::Union(1, Box::new(Avro::Long(1_602_228_190_123)))
    );
}

#[test]
fn avro_logical_types() {
    let mut enc = BatchEncoder::new("avro").unwrap();
    enc.push(&read(
        &record(0, None, Some(&logical_bytes())),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let (schema, values) = read_avro(&enc.finish().unwrap());
    let apache_avro::Schema::Record(r) = &schema else {
        panic!("{schema:?}");
    };
    let ty = |name: &str| {
        r.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.schema.clone())
            .unwrap()
    };
    assert!(
        matches!(ty("dec"), apache_avro::Schema::Decimal(d) if d.scale == 2 && d.precision == 64)
    );
    assert_eq!(ty("date"), apache_avro::Schema::Date);
    assert_eq!(ty("time"), apache_avro::Schema::TimeMillis);
    assert_eq!(ty("ts"), apache_avro::Schema::TimestampMillis);
    assert_eq!(ty("micro"), apache_avro::Schema::Long);
    let [v] = values.as_slice() else {
        panic!("{values:?}");
    };
    assert_eq!(
        field(v, "dec"),
        &Avro::Decimal(apache_avro::Decimal::from(vec![0x30, 0x39]))
    );
    assert_eq!(field(v, "date"), &Avro::Date(18_544));
    assert_eq!(field(v, "time"), &Avro::TimeMillis(26_590_000));
    assert_eq!(field(v, "ts"), &Avro::TimestampMillis(1_602_228_190_000));
    assert_eq!(field(v, "micro"), &Avro::Long(1_602_228_190_123_456));
    assert_eq!(
        field(v, "zoned"),
        &Avro::Union(
            1,
            Box::new(Avro::String("2020-10-09T07:23:10.123456Z".into()))
        )
    );
    assert_eq!(
        field(v, "uuid"),
        &Avro::String("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
}

#[test]
fn avro_batch_keeps_one_schema() {
    let mut enc = BatchEncoder::new("avro").unwrap();
    enc.push(&read(
        &record(0, None, Some(&order_with_schema(1))),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let len = enc.len_bytes();
    let err = enc
        .push(&read(
            &record(1, None, Some(&logical_bytes())),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("offset 1"), "{err}");
    assert!(err.to_string().contains("schema"), "{err}");
    assert_eq!(enc.len_bytes(), len);
    let (_, values) = read_avro(&enc.finish().unwrap());
    assert_eq!(values.len(), 1);
    // The next batch may have the other schema.
    enc.push(&read(
        &record(2, None, Some(&logical_bytes())),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let (_, values) = read_avro(&enc.finish().unwrap());
    assert_eq!(values.len(), 1);
}

#[test]
fn unsupported_formats_are_named() {
    for format in ["parquet", "orc", "protobuf", "sstream", "xml"] {
        let err = BatchEncoder::new(format).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(format), "{text}");
        assert!(text.contains("csv") && text.contains("avro"), "{text}");
    }
    assert_eq!(
        BatchEncoder::new("singlejson").unwrap().kusto_format(),
        "multijson"
    );
    assert_eq!(BatchEncoder::new("TSV").unwrap().kusto_format(), "tsv");
}

// ---------------------------------------------------------------------------
// kusto.tables.create

#[test]
fn kusto_columns_for_every_type() {
    let named = |ty: SchemaType, name: &str| SchemaBuilder::new(ty).name(name).build();
    let schema = SchemaBuilder::structure()
        .field("i8", prim::of(SchemaType::Int8, false))
        .field("i16", prim::of(SchemaType::Int16, false))
        .field("i32", prim::of(SchemaType::Int32, true))
        .field("i64", prim::of(SchemaType::Int64, false))
        .field("f32", prim::of(SchemaType::Float32, false))
        .field("f64", prim::of(SchemaType::Float64, false))
        .field("b", prim::of(SchemaType::Boolean, false))
        .field("s", prim::string())
        .field("raw", prim::of(SchemaType::Bytes, false))
        .field(
            "dec",
            SchemaBuilder::new(SchemaType::Bytes)
                .name("org.apache.kafka.connect.data.Decimal")
                .parameter("scale", "2")
                .build(),
        )
        .field(
            "date",
            named(SchemaType::Int32, "org.apache.kafka.connect.data.Date"),
        )
        .field(
            "time",
            named(SchemaType::Int32, "org.apache.kafka.connect.data.Time"),
        )
        .field(
            "ts",
            named(SchemaType::Int64, "org.apache.kafka.connect.data.Timestamp"),
        )
        .field(
            "dbz_date",
            named(SchemaType::Int32, "io.debezium.time.Date"),
        )
        .field(
            "dbz_ts",
            named(SchemaType::Int64, "io.debezium.time.Timestamp"),
        )
        .field(
            "micro",
            named(SchemaType::Int64, "io.debezium.time.MicroTimestamp"),
        )
        .field(
            "zoned",
            named(SchemaType::String, "io.debezium.time.ZonedTimestamp"),
        )
        .field("uuid", named(SchemaType::String, "io.debezium.data.Uuid"))
        .field("json", named(SchemaType::String, "io.debezium.data.Json"))
        .field("enum", named(SchemaType::String, "io.debezium.data.Enum"))
        .field("arr", SchemaBuilder::array(prim::string()).build())
        .field(
            "map",
            SchemaBuilder::map(prim::string(), prim::int64()).build(),
        )
        .field(
            "vsd",
            SchemaBuilder::structure()
                .name("io.debezium.data.VariableScaleDecimal")
                .field("scale", prim::of(SchemaType::Int32, false))
                .field("value", prim::of(SchemaType::Bytes, false))
                .build(),
        )
        .build();
    let cols = kusto_columns(&schema).unwrap();
    let expected = [
        ("i8", "int"),
        ("i16", "int"),
        ("i32", "int"),
        ("i64", "long"),
        ("f32", "real"),
        ("f64", "real"),
        ("b", "bool"),
        ("s", "string"),
        ("raw", "string"),
        ("dec", "string"),
        ("date", "int"),
        ("time", "int"),
        ("ts", "long"),
        ("dbz_date", "int"),
        ("dbz_ts", "long"),
        ("micro", "long"),
        ("zoned", "datetime"),
        ("uuid", "guid"),
        ("json", "dynamic"),
        ("enum", "string"),
        ("arr", "dynamic"),
        ("map", "dynamic"),
        ("vsd", "dynamic"),
    ];
    let got: Vec<(&str, &str)> = cols.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    assert_eq!(got, expected);

    assert!(kusto_columns(&prim::string()).is_err());
    assert!(kusto_columns(&SchemaBuilder::structure().build()).is_err());
}

#[test]
fn scenario_table_and_mapping() {
    let cols = kusto_columns(&order_schema()).unwrap();
    assert_eq!(
        create_table_command("Orders", &cols),
        ".create-merge table ['Orders'] (['orderid']:int, ['custid']:int, ['amount']:int, ['city']:string, ['purchase_time']:string)"
    );
    assert_eq!(
        alter_merge_command("Orders", &cols),
        ".alter-merge table ['Orders'] (['orderid']:int, ['custid']:int, ['amount']:int, ['city']:string, ['purchase_time']:string)"
    );
    assert_eq!(
        json_mapping(&cols),
        r#"[{"column":"orderid","Properties":{"path":"$.orderid"}},{"column":"custid","Properties":{"path":"$.custid"}},{"column":"amount","Properties":{"path":"$.amount"}},{"column":"city","Properties":{"path":"$.city"}},{"column":"purchase_time","Properties":{"path":"$.purchase_time"}}]"#
    );
    assert_eq!(
        create_mapping_command("Orders", "OrdersEventMapping", &cols[..1]),
        r#".create-or-alter table ['Orders'] ingestion json mapping 'OrdersEventMapping' '[{"column":"orderid","Properties":{"path":"$.orderid"}}]'"#
    );
}

/// Reads a Kusto single-quoted string literal (backslash escapes).
fn kusto_literal(text: &str) -> (String, &str) {
    let mut chars = text.char_indices();
    assert_eq!(chars.next(), Some((0, '\'')), "{text}");
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return (out, &text[i + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, c)) => out.push(c),
                None => panic!("dangling escape in {text}"),
            },
            c => out.push(c),
        }
    }
    panic!("unterminated literal {text}")
}

#[test]
fn odd_names_are_escaped() {
    let cols = vec![
        ("it's".to_string(), "string"),
        ("a b".to_string(), "int"),
        ("[x]".to_string(), "long"),
        ("say \"hi\"".to_string(), "string"),
        (r"back\slash".to_string(), "string"),
        ("it's \"both\"".to_string(), "string"),
    ];
    assert_eq!(
        create_table_command("My 'T'", &cols),
        r#".create-merge table ["My 'T'"] (["it's"]:string, ['a b']:int, ['[x]']:long, ['say "hi"']:string, ['back\\slash']:string, ['it\'s "both"']:string)"#
    );
    assert_eq!(
        alter_merge_command("T", &cols[1..2]),
        ".alter-merge table ['T'] (['a b']:int)"
    );
    let mapping = json_mapping(&cols);
    let parsed: serde_json::Value = serde_json::from_str(&mapping).unwrap();
    let paths: Vec<&str> = parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Properties"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            r#"$["it's"]"#,
            "$['a b']",
            "$['[x]']",
            r#"$['say "hi"']"#,
            r"$['back\\slash']",
            r#"$['it\'s "both"']"#,
        ]
    );
    let columns: Vec<&str> = parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["column"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        cols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
    );

    // The command's literals read back as the mapping name and JSON.
    let cmd = create_mapping_command("My 'T'", "m'1\\", &cols);
    let rest = cmd
        .strip_prefix(r#".create-or-alter table ["My 'T'"] ingestion json mapping "#)
        .unwrap_or_else(|| panic!("{cmd}"));
    let (name, rest) = kusto_literal(rest);
    assert_eq!(name, "m'1\\");
    let rest = rest.strip_prefix(' ').unwrap();
    let (json, rest) = kusto_literal(rest);
    assert_eq!(json, mapping);
    assert_eq!(rest, "");
    assert!(!cmd.contains('\n'));
}

#[test]
fn value_schema_reads_the_record() {
    let schema_of = |value: Option<&[u8]>, conv: &JsonConverter| {
        value_schema(&read(&record(0, None, value), &string_conv(), conv))
    };
    let s = schema_of(Some(&order_with_schema(1)), &json_conv(true)).unwrap();
    assert_eq!(s.name.as_deref(), Some("myserver.retail.orders_info.Value"));
    assert!(schema_of(Some(ORDER_SCHEMALESS), &json_conv(false)).is_none());
    assert!(schema_of(None, &json_conv(true)).is_none());
    // A null value with a schema is a tombstone too.
    assert!(schema_of(
        Some(br#"{"schema":{"type":"struct","fields":[],"optional":true},"payload":null}"#),
        &json_conv(true)
    )
    .is_none());
}

/// A row with every Connect type, nested ones included.
fn nested_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name("nested.Value")
        .field("i8", prim::of(SchemaType::Int8, false))
        .field("i16", prim::of(SchemaType::Int16, false))
        .field("f32", prim::of(SchemaType::Float32, false))
        .field("f64", prim::of(SchemaType::Float64, true))
        .field("ok", prim::of(SchemaType::Boolean, false))
        .field("raw", prim::of(SchemaType::Bytes, false))
        .field(
            "tags",
            SchemaBuilder::array(prim::string()).optional().build(),
        )
        .field(
            "counts",
            SchemaBuilder::map(prim::string(), prim::int64()).build(),
        )
        .field(
            "names",
            SchemaBuilder::map(prim::of(SchemaType::Int32, false), prim::string()).build(),
        )
        .field(
            "inner",
            SchemaBuilder::structure()
                .field("x", prim::of(SchemaType::Int32, false))
                .optional()
                .build(),
        )
        .build()
}

fn nested_value() -> Value {
    Value::Struct(vec![
        Value::Int8(-8),
        Value::Int16(300),
        Value::Float32(1.5),
        Value::Null,
        Value::Bool(true),
        Value::Bytes(vec![0, 255]),
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        Value::Map(vec![
            (Value::String("z".into()), Value::Int64(1)),
            (Value::String("y".into()), Value::Int64(2)),
        ]),
        Value::Map(vec![
            (Value::Int32(3), Value::String("t".into())),
            (Value::Int32(17), Value::String("s".into())),
        ]),
        Value::Null,
    ])
}

fn nested_bytes() -> Vec<u8> {
    json_conv(true)
        .from_connect("t", Some(&nested_schema()), Some(&nested_value()))
        .unwrap()
        .unwrap()
}

#[test]
fn json_nested_types_with_maps_in_hashmap_order() {
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(&nested_bytes())),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    // Map fields come from HashMaps too: "y" before "z", 17 before 3.
    assert_eq!(
        String::from_utf8(enc.finish().unwrap()).unwrap(),
        concat!(
            "{\"i8\":-8,\"i16\":300,\"f32\":1.5,\"f64\":null,\"ok\":true,\"raw\":\"AP8=\",",
            "\"tags\":[\"a\",\"b\"],\"counts\":{\"y\":2,\"z\":1},\"names\":[[17,\"s\"],[3,\"t\"]],\"inner\":null}\n"
        )
    );
}

#[test]
fn avro_nested_types_read_back() {
    let mut enc = BatchEncoder::new("avro").unwrap();
    enc.push(&read(
        &record(0, None, Some(&nested_bytes())),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let (_, values) = read_avro(&enc.finish().unwrap());
    let [v] = values.as_slice() else {
        panic!("{values:?}");
    };
    assert_eq!(field(v, "i8"), &Avro::Int(-8));
    assert_eq!(field(v, "i16"), &Avro::Int(300));
    assert_eq!(field(v, "f32"), &Avro::Float(1.5));
    assert_eq!(field(v, "f64"), &Avro::Union(0, Box::new(Avro::Null)));
    assert_eq!(field(v, "ok"), &Avro::Boolean(true));
    assert_eq!(field(v, "raw"), &Avro::Bytes(vec![0, 255]));
    assert_eq!(
        field(v, "tags"),
        &Avro::Union(
            1,
            Box::new(Avro::Array(vec![
                Avro::String("a".into()),
                Avro::String("b".into())
            ]))
        )
    );
    let Avro::Map(counts) = field(v, "counts") else {
        panic!("{v:?}");
    };
    assert_eq!(counts.get("z"), Some(&Avro::Long(1)));
    assert_eq!(counts.get("y"), Some(&Avro::Long(2)));
    let Avro::Array(names) = field(v, "names") else {
        panic!("{v:?}");
    };
    assert_eq!(
        names,
        &vec![
            Avro::Record(vec![
                ("key".into(), Avro::Int(17)),
                ("value".into(), Avro::String("s".into()))
            ]),
            Avro::Record(vec![
                ("key".into(), Avro::Int(3)),
                ("value".into(), Avro::String("t".into()))
            ]),
        ]
    );
    assert_eq!(field(v, "inner"), &Avro::Union(0, Box::new(Avro::Null)));
}

#[test]
fn csv_rejects_logical_type_structs_too() {
    // Logical types only exist with a schema, i.e. in Structs, which text
    // formats do not take.
    let mut enc = BatchEncoder::new("csv").unwrap();
    let err = enc
        .push(&read(
            &record(8, None, Some(&logical_bytes())),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("offset 8"), "{err}");
    assert_eq!(enc.records(), 0);
}

#[test]
fn a_record_failing_mid_line_leaves_the_batch_as_it_was() {
    // A map of structs: Jackson cannot serialize the Connect Struct inside.
    let schema = SchemaBuilder::map(
        prim::string(),
        SchemaBuilder::structure()
            .field("x", prim::of(SchemaType::Int32, false))
            .build(),
    )
    .build();
    let empty = json_conv(true)
        .from_connect(TOPIC, Some(&schema), Some(&Value::Map(vec![])))
        .unwrap()
        .unwrap();
    let full = json_conv(true)
        .from_connect(
            TOPIC,
            Some(&schema),
            Some(&Value::Map(vec![(
                Value::String("k".into()),
                Value::Struct(vec![Value::Int32(1)]),
            )])),
        )
        .unwrap()
        .unwrap();
    let mut enc = BatchEncoder::new("json").unwrap();
    enc.push(&read(
        &record(0, None, Some(&empty)),
        &string_conv(),
        &json_conv(true),
    ))
    .unwrap();
    let err = enc
        .push(&read(
            &record(1, None, Some(&full)),
            &string_conv(),
            &json_conv(true),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("Struct"), "{err}");
    assert_eq!(enc.records(), 1);
    assert_eq!(enc.finish().unwrap(), b"{}\n".to_vec());
}

#[test]
fn keys_and_headers_are_not_part_of_the_data() {
    let plain = record(7, None, Some(&order_with_schema(51)));
    let mut rich = record(7, Some(ORDER_KEY), Some(&order_with_schema(51)));
    rich.headers = vec![sluice_core::record::Header {
        key: "trace".into(),
        value: Some(b"abc".to_vec()),
    }];
    for format in ["json", "avro"] {
        let mut a = BatchEncoder::new(format).unwrap();
        a.push(&read(&plain, &string_conv(), &json_conv(true)))
            .unwrap();
        let mut b = BatchEncoder::new(format).unwrap();
        b.push(&read(&rich, &string_conv(), &json_conv(true)))
            .unwrap();
        assert_eq!(a.len_bytes(), b.len_bytes(), "{format}");
        if format == "json" {
            assert_eq!(a.finish().unwrap(), b.finish().unwrap());
        } else {
            assert_eq!(
                read_avro(&a.finish().unwrap()).1,
                read_avro(&b.finish().unwrap()).1
            );
        }
    }
}
