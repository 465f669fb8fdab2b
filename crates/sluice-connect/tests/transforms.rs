//! Transforms: ExtractNewRecordState over Debezium-shaped envelopes under
//! every delete mode, Kafka's InsertField / ReplaceField / RegexRouter,
//! predicates, config errors, and the chain applied by a running worker.

use std::sync::Arc;

use sluice_connect::transforms::{ConnectRecord, TransformChain};
use sluice_core::config::Props;
use sluice_core::converter::{Converter, JsonConverter, JsonConverterConfig};
use sluice_core::debezium::{
    envelope_schema, envelope_schema_for, envelope_value, heartbeat_key, heartbeat_key_schema,
    heartbeat_value, heartbeat_value_schema, source_value, source_value_for, Format, Op, Origin,
    SourceInfo,
};
use sluice_core::record::Header;
use sluice_core::schema::{prim, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

const TOPIC: &str = "shop.retail.orders_info";

fn props(kv: &[(&str, &str)]) -> Props {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `shop.retail.orders_info.Value` as Debezium builds it (optional).
fn row_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .optional()
        .name("shop.retail.orders_info.Value")
        .field("orderid", prim::of(SchemaType::Int32, false))
        .field("custid", prim::of(SchemaType::Int32, false))
        .field("amount", prim::of(SchemaType::Int32, false))
        .field("city", prim::string())
        .field("purchase_time", prim::string())
        .build()
}

fn key_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name("shop.retail.orders_info.Key")
        .field("orderid", prim::of(SchemaType::Int32, false))
        .build()
}

fn row(orderid: i32, custid: i32, amount: i32) -> Value {
    Value::Struct(vec![
        Value::Int32(orderid),
        Value::Int32(custid),
        Value::Int32(amount),
        Value::String("Paris".into()),
        Value::String("2026-11-23 22:00:00".into()),
    ])
}

fn source(snapshot: &str) -> Value {
    source_value(&source_info(snapshot))
}

fn source_info(snapshot: &str) -> SourceInfo<'_> {
    SourceInfo {
        name: "shop",
        ts_ms: 1_700_000_000_123,
        ts_us: 1_700_000_000_123_000,
        ts_ns: 1_700_000_000_123_000_000,
        snapshot,
        db: "postgres",
        sequence: Some("[null,\"24023128\"]"),
        schema: "retail",
        table: "orders_info",
        tx_id: Some(771),
        lsn: Some(24_023_128),
        xmin: None,
    }
}

/// An event as Debezium 2.7 wrote it (`source.version` 2.7.3.Final).
fn event_2_7(op: Op, before: Option<Value>, after: Option<Value>) -> ConnectRecord {
    let env = envelope_schema_for(
        Format::V2_7,
        "shop.retail.orders_info.Envelope",
        &row_schema(),
    );
    let value = envelope_value(
        &env,
        before,
        after,
        source_value_for(Format::V2_7, &source_info("false"), &Origin::default()),
        op,
        1_700_000_000_456,
        1_700_000_000_456_000,
        1_700_000_000_456_000_000,
        None,
    );
    ConnectRecord {
        value_schema: Some(env),
        value: Some(value),
        ..event(op, None, None)
    }
}

fn delete_2_7() -> ConnectRecord {
    event_2_7(Op::Delete, Some(row(51, 306, 7500)), None)
}

/// A change event for orders_info: `before`/`after` as given.
fn event(op: Op, before: Option<Value>, after: Option<Value>) -> ConnectRecord {
    let env = envelope_schema("shop.retail.orders_info.Envelope", &row_schema());
    let value = envelope_value(
        &env,
        before,
        after,
        source("false"),
        op,
        1_700_000_000_456,
        1_700_000_000_456_000,
        1_700_000_000_456_000_000,
        None,
    );
    ConnectRecord {
        topic: Arc::from(TOPIC),
        partition: None,
        offset: None,
        key_schema: Some(key_schema()),
        key: Some(Value::Struct(vec![Value::Int32(51)])),
        value_schema: Some(env),
        value: Some(value),
        timestamp_ms: Some(1_700_000_000_500),
        headers: Vec::new(),
    }
}

fn create() -> ConnectRecord {
    event(Op::Create, None, Some(row(51, 306, 7000)))
}
fn update() -> ConnectRecord {
    event(
        Op::Update,
        Some(row(51, 306, 7000)),
        Some(row(51, 306, 7500)),
    )
}
fn delete() -> ConnectRecord {
    event(Op::Delete, Some(row(51, 306, 7500)), None)
}
fn truncate() -> ConnectRecord {
    event(Op::Truncate, None, None)
}
fn tombstone() -> ConnectRecord {
    ConnectRecord {
        value_schema: None,
        value: None,
        ..delete()
    }
}

fn unwrap_chain(extra: &[(&str, &str)]) -> TransformChain {
    let mut p = props(&[
        ("transforms", "unwrap"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
    ]);
    for (k, v) in extra {
        p.insert(format!("transforms.unwrap.{k}"), v.to_string());
    }
    TransformChain::from_props(&p).expect("valid chain")
}

fn json(schemas: bool) -> JsonConverter {
    let mut p = Props::new();
    p.insert("schemas.enable".into(), schemas.to_string());
    JsonConverter::new(JsonConverterConfig::from_props(&p, "x.").expect("json config"))
}

/// The value as the JSON converter writes it.
fn value_json(r: &ConnectRecord, schemas: bool) -> Option<String> {
    json(schemas)
        .from_connect(&r.topic, r.value_schema.as_deref(), r.value.as_ref())
        .expect("converts")
        .map(|b| String::from_utf8(b).expect("utf-8"))
}

const ROW_51: &str = r#"{"orderid":51,"custid":306,"amount":7000,"city":"Paris","purchase_time":"2026-11-23 22:00:00"}"#;

#[test]
fn create_and_update_become_the_after_row() {
    let chain = unwrap_chain(&[]);
    let out = chain.apply(create()).expect("ok").expect("kept");
    assert_eq!(value_json(&out, false).as_deref(), Some(ROW_51));
    let schema = out.value_schema.as_ref().expect("schema");
    // Debezium's copy of the `.Value` schema: same name, but required.
    assert_eq!(schema.name_str(), "shop.retail.orders_info.Value");
    assert!(!schema.optional);
    assert_eq!(out.topic.as_ref(), TOPIC);
    assert_eq!(out.key, Some(Value::Struct(vec![Value::Int32(51)])));
    let out = chain.apply(update()).expect("ok").expect("kept");
    assert!(value_json(&out, false)
        .expect("value")
        .contains(r#""amount":7500"#));
    let with_schema = value_json(&out, true).expect("value");
    assert!(
        with_schema.starts_with(
            r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"orderid"}"#
        ),
        "{with_schema}"
    );
    assert!(
        with_schema
            .contains(r#""optional":false,"name":"shop.retail.orders_info.Value"},"payload""#),
        "{with_schema}"
    );
}

#[test]
fn defaults_follow_the_events_debezium_release() {
    // Debezium 3.x events: delete.tombstone.handling.mode defaults to
    // tombstone (a delete keeps the row schema with a null value).
    let chain = unwrap_chain(&[]);
    let out = chain.apply(delete()).expect("ok").expect("kept");
    assert_eq!(out.value, None);
    assert!(out.value_schema.is_some());
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
    assert_eq!(chain.apply(truncate()).expect("ok"), None);
    // Debezium 2.7 events, with neither delete.tombstone.handling.mode nor
    // the legacy keys: the legacy defaults, delete.handling.mode=drop and
    // drop.tombstones=true.
    assert_eq!(chain.apply(delete_2_7()).expect("ok"), None);
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
}

#[test]
fn delete_to_tombstone_mode() {
    let chain = unwrap_chain(&[("delete.tombstone.handling.mode", "delete-to-tombstone")]);
    let out = chain.apply(delete()).expect("ok").expect("kept");
    assert_eq!((out.value_schema, out.value), (None, None));
    assert_eq!(out.key, Some(Value::Struct(vec![Value::Int32(51)])));
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
}

#[test]
fn tombstone_mode_turns_deletes_into_tombstones() {
    let chain = unwrap_chain(&[("delete.tombstone.handling.mode", "tombstone")]);
    let out = chain.apply(delete()).expect("ok").expect("kept");
    assert_eq!(out.value, None);
    assert_eq!(
        out.value_schema.as_ref().map(|s| s.name_str().to_string()),
        Some("shop.retail.orders_info.Value".to_string())
    );
    assert_eq!(out.key, Some(Value::Struct(vec![Value::Int32(51)])));
    // The original tombstone is dropped: the delete already is one.
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
    assert_eq!(chain.apply(truncate()).expect("ok"), None);
    assert!(chain.apply(create()).expect("ok").is_some());
}

#[test]
fn drop_mode_drops_deletes_and_tombstones() {
    let chain = unwrap_chain(&[("delete.tombstone.handling.mode", "drop")]);
    assert_eq!(chain.apply(delete()).expect("ok"), None);
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
    assert_eq!(
        value_json(&chain.apply(create()).expect("ok").expect("kept"), false).as_deref(),
        Some(ROW_51)
    );
}

#[test]
fn rewrite_marks_rows_deleted_or_not() {
    for mode in ["rewrite", "rewrite-with-tombstone", "REWRITE"] {
        let chain = unwrap_chain(&[("delete.tombstone.handling.mode", mode)]);
        let c = chain.apply(create()).expect("ok").expect("kept");
        assert_eq!(
            value_json(&c, false).as_deref(),
            Some(
                r#"{"orderid":51,"custid":306,"amount":7000,"city":"Paris","purchase_time":"2026-11-23 22:00:00","__deleted":"false"}"#
            ),
            "{mode}"
        );
        let d = chain.apply(delete()).expect("ok").expect("kept");
        assert_eq!(
            value_json(&d, false).as_deref(),
            Some(
                r#"{"orderid":51,"custid":306,"amount":7500,"city":"Paris","purchase_time":"2026-11-23 22:00:00","__deleted":"true"}"#
            ),
            "{mode}"
        );
        let schema = d.value_schema.as_ref().expect("schema");
        let (_, f) = schema.field("__deleted").expect("__deleted");
        assert!(f.schema.optional && f.schema.ty == SchemaType::String);
        let kept = chain.apply(tombstone()).expect("ok");
        assert_eq!(kept.is_some(), mode == "rewrite-with-tombstone", "{mode}");
        assert_eq!(chain.apply(truncate()).expect("ok"), None, "{mode}");
    }
}

#[test]
fn legacy_keys_and_their_precedence() {
    // Debezium 3.2 removed the legacy keys: 3.x events ignore them.
    let chain = unwrap_chain(&[("delete.handling.mode", "rewrite")]);
    let d = chain.apply(delete()).expect("ok").expect("kept");
    assert_eq!(d.value, None);

    // They apply to events of Debezium 2.x's format.
    let chain = unwrap_chain(&[
        ("delete.handling.mode", "none"),
        ("drop.tombstones", "false"),
    ]);
    let d = chain.apply(delete_2_7()).expect("ok").expect("kept");
    assert_eq!(d.value, None);
    assert!(chain.apply(tombstone()).expect("ok").is_some());

    let chain = unwrap_chain(&[("delete.handling.mode", "rewrite")]);
    let d = chain.apply(delete_2_7()).expect("ok").expect("kept");
    assert!(value_json(&d, false)
        .expect("value")
        .ends_with(r#""__deleted":"true"}"#));
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);

    // The new key wins outright; the legacy ones are then ignored.
    let chain = unwrap_chain(&[
        ("delete.tombstone.handling.mode", "tombstone"),
        ("delete.handling.mode", "rewrite"),
        ("drop.tombstones", "false"),
    ]);
    assert_eq!(
        chain.apply(delete()).expect("ok").expect("kept").value,
        None
    );
    assert_eq!(chain.apply(tombstone()).expect("ok"), None);
}

#[test]
fn add_fields_with_debezium_names_schemas_and_values() {
    let chain = unwrap_chain(&[
        ("delete.tombstone.handling.mode", "rewrite"),
        ("add.fields", "op,table,lsn,source.ts_ms,ts_ms"),
    ]);
    let out = chain.apply(create()).expect("ok").expect("kept");
    assert_eq!(
        value_json(&out, false).as_deref(),
        Some(
            r#"{"orderid":51,"custid":306,"amount":7000,"city":"Paris","purchase_time":"2026-11-23 22:00:00","__deleted":"false","__op":"c","__table":"orders_info","__lsn":24023128,"__source_ts_ms":1700000000123,"__ts_ms":1700000000456}"#
        )
    );
    let schema = out.value_schema.as_ref().expect("schema");
    for (name, ty) in [
        ("__op", SchemaType::String),
        ("__table", SchemaType::String),
        ("__lsn", SchemaType::Int64),
        ("__source_ts_ms", SchemaType::Int64),
    ] {
        let (_, f) = schema.field(name).expect(name);
        // Debezium copies the field's schema and makes it optional.
        assert!(f.schema.optional, "{name}");
        assert_eq!(f.schema.ty, ty, "{name}");
    }
    // A rewritten delete gets them too, with op "d".
    let d = chain.apply(delete()).expect("ok").expect("kept");
    let text = value_json(&d, false).expect("value");
    assert!(
        text.contains(r#""__deleted":"true","__op":"d","__table":"orders_info""#),
        "{text}"
    );
}

#[test]
fn add_fields_prefix_renames_and_null_transaction() {
    let chain = unwrap_chain(&[
        ("add.fields", "op:operation,source.snapshot,id"),
        ("add.fields.prefix", "meta_"),
    ]);
    let out = chain.apply(create()).expect("ok").expect("kept");
    // source.snapshot is left null for streaming events and read without
    // its default; the transaction block is null, so `id` is null.
    assert!(value_json(&out, false)
        .expect("value")
        .ends_with(r#""meta_operation":"c","meta_source_snapshot":null,"meta_id":null}"#));
}

#[test]
fn add_headers_and_the_tombstone_op_header() {
    let chain = unwrap_chain(&[
        ("delete.tombstone.handling.mode", "rewrite-with-tombstone"),
        ("add.headers", "op,source.lsn,table"),
    ]);
    let out = chain.apply(update()).expect("ok").expect("kept");
    assert_eq!(
        out.headers,
        vec![
            Header {
                key: "__op".into(),
                value: Some(b"u".to_vec())
            },
            Header {
                key: "__source_lsn".into(),
                value: Some(b"24023128".to_vec())
            },
            Header {
                key: "__table".into(),
                value: Some(b"orders_info".to_vec())
            },
        ]
    );
    let t = chain.apply(tombstone()).expect("ok").expect("kept");
    assert_eq!(
        t.headers,
        vec![Header {
            key: "__op".into(),
            value: Some(b"d".to_vec())
        }]
    );
}

#[test]
fn non_envelopes_pass_unchanged() {
    let chain = unwrap_chain(&[("add.fields", "op")]);
    let hb = ConnectRecord {
        topic: Arc::from("__debezium-heartbeat.shop"),
        partition: None,
        offset: None,
        key_schema: Some(heartbeat_key_schema()),
        key: Some(heartbeat_key("shop")),
        value_schema: Some(heartbeat_value_schema()),
        value: Some(heartbeat_value(1_700_000_000_000)),
        timestamp_ms: None,
        headers: Vec::new(),
    };
    assert_eq!(chain.apply(hb.clone()).expect("ok"), Some(hb.clone()));
    // Headers read from an envelope find nothing in a heartbeat.
    let chain = unwrap_chain(&[("add.headers", "op,source.lsn")]);
    assert_eq!(chain.apply(hb.clone()).expect("ok"), Some(hb));
}

#[test]
fn unused_transform_options_are_reported() {
    let warnings = sluice_connect::transforms::unused_options(&props(&[
        ("transforms", "unwrap"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        ("transforms.unwrap.delete.handling.mod", "rewrite"),
        ("transforms.unwrap.add.fields", "op"),
        ("transforms.unwrapp.type", "RegexRouter"),
    ]));
    assert_eq!(
        warnings,
        vec![
            "configuration 'transforms.unwrap.delete.handling.mod' is not used by io.debezium.transforms.ExtractNewRecordState",
            "configuration 'transforms.unwrapp.type' belongs to no transform listed in 'transforms'",
        ]
    );
}

#[test]
fn route_by_field_sets_the_topic() {
    let chain = unwrap_chain(&[
        ("route.by.field", "city"),
        ("delete.tombstone.handling.mode", "tombstone"),
    ]);
    assert_eq!(
        chain
            .apply(create())
            .expect("ok")
            .expect("kept")
            .topic
            .as_ref(),
        "Paris"
    );
    // Deletes route by their `before` row.
    assert_eq!(
        chain
            .apply(delete())
            .expect("ok")
            .expect("kept")
            .topic
            .as_ref(),
        "Paris"
    );
    let chain = unwrap_chain(&[("route.by.field", "amount")]);
    let err = chain.apply(create()).expect_err("not a string").to_string();
    assert!(err.contains("unwrap") && err.contains("amount"), "{err}");
}

#[test]
fn drop_fields_header_removes_optional_fields() {
    let schema = SchemaBuilder::structure()
        .optional()
        .name("shop.retail.orders_info.Value")
        .field("orderid", prim::of(SchemaType::Int32, false))
        .field("note", prim::opt_string())
        .build();
    let env = envelope_schema("shop.retail.orders_info.Envelope", &schema);
    let value = envelope_value(
        &env,
        None,
        Some(Value::Struct(vec![
            Value::Int32(51),
            Value::String("gift".into()),
        ])),
        source("false"),
        Op::Create,
        1,
        1,
        1,
        None,
    );
    let rec = ConnectRecord {
        value_schema: Some(env),
        value: Some(value),
        headers: vec![Header {
            key: "drop".into(),
            value: Some(br#"["note","orderid"]"#.to_vec()),
        }],
        ..create()
    };
    let chain = unwrap_chain(&[("drop.fields.header.name", "drop")]);
    let out = chain.apply(rec.clone()).expect("ok").expect("kept");
    // orderid is required, so with keep.schema.compatible (default) it stays.
    assert_eq!(
        value_json(&out, false).as_deref(),
        Some(r#"{"orderid":51}"#)
    );
    let chain = unwrap_chain(&[
        ("drop.fields.header.name", "drop"),
        ("drop.fields.keep.schema.compatible", "false"),
        ("drop.fields.from.key", "true"),
    ]);
    let out = chain.apply(rec.clone()).expect("ok").expect("kept");
    assert_eq!(value_json(&out, false).as_deref(), Some("{}"));
    assert_eq!(out.key, Some(Value::Struct(vec![])));
    // A delete turned tombstone keeps its value schema: there is no value
    // to drop fields from.
    let chain = unwrap_chain(&[
        ("drop.fields.header.name", "drop"),
        ("drop.fields.keep.schema.compatible", "false"),
        ("delete.tombstone.handling.mode", "tombstone"),
    ]);
    let before = rec
        .value
        .as_ref()
        .and_then(|v| v.as_struct())
        .map(|f| f[1].clone());
    let del = ConnectRecord {
        value: Some(envelope_value(
            rec.value_schema.as_deref().expect("schema"),
            before,
            None,
            source("false"),
            Op::Delete,
            1,
            1,
            1,
            None,
        )),
        ..rec
    };
    let out = chain.apply(del).expect("ok").expect("kept");
    assert_eq!(out.value, None);
    assert_eq!(out.value_schema.as_ref().map(|s| s.fields.len()), Some(2));
}

fn config_errors(kv: &[(&str, &str)]) -> String {
    TransformChain::from_props(&props(kv))
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn bad_configs_name_the_key_value_and_allowed_values() {
    let e = config_errors(&[
        ("transforms", "unwrap,missing,unknown"),
        ("transforms.unwrap.type", "ExtractNewRecordState"),
        (
            "transforms.unwrap.delete.tombstone.handling.mode",
            "delete-as-tombstone",
        ),
        ("transforms.unknown.type", "com.example.Nope"),
    ]);
    assert!(
        e.contains("'transforms.unwrap.delete.tombstone.handling.mode'")
            && e.contains("'delete-as-tombstone'")
            && e.contains("drop, tombstone, rewrite, rewrite-with-tombstone, delete-to-tombstone"),
        "{e}"
    );
    assert!(
        e.contains("'transforms.missing.type'") && e.contains("Missing required"),
        "{e}"
    );
    assert!(
        e.contains("'transforms.unknown.type'") && e.contains("com.example.Nope"),
        "{e}"
    );
    let e = config_errors(&[
        ("transforms", "u"),
        (
            "transforms.u.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        ("transforms.u.drop.tombstones", "maybe"),
    ]);
    assert!(
        e.contains("'transforms.u.drop.tombstones'") && e.contains("'maybe'"),
        "{e}"
    );
    let e = config_errors(&[
        ("transforms", "r"),
        (
            "transforms.r.type",
            "org.apache.kafka.connect.transforms.RegexRouter",
        ),
        ("transforms.r.regex", "(a"),
        ("transforms.r.replacement", "$1"),
    ]);
    assert!(
        e.contains("'transforms.r.regex'") && e.contains("'(a'"),
        "{e}"
    );
    let e = config_errors(&[
        ("transforms", "r"),
        (
            "transforms.r.type",
            "org.apache.kafka.connect.transforms.RegexRouter",
        ),
        ("transforms.r.regex", "(a)"),
        ("transforms.r.replacement", "$2"),
    ]);
    assert!(
        e.contains("'transforms.r.replacement'") && e.contains("No group 2"),
        "{e}"
    );
    let e = config_errors(&[
        ("transforms", "i"),
        (
            "transforms.i.type",
            "org.apache.kafka.connect.transforms.InsertField$Value",
        ),
        ("transforms.i.static.field", "src"),
    ]);
    assert!(e.contains("'transforms.i.static.value'"), "{e}");
    let e = config_errors(&[
        ("transforms", "f"),
        (
            "transforms.f.type",
            "org.apache.kafka.connect.transforms.ReplaceField$Value",
        ),
        ("transforms.f.renames", "a:b,c"),
    ]);
    assert!(
        e.contains("'transforms.f.renames'") && e.contains("Invalid rename mapping: c"),
        "{e}"
    );
    let e = config_errors(&[
        ("transforms", "r"),
        ("transforms.r.type", "RegexRouter"),
        ("transforms.r.regex", "a"),
        ("transforms.r.replacement", "b"),
        ("transforms.r.predicate", "nope"),
    ]);
    assert!(
        e.contains("'transforms.r.predicate'") && e.contains("'nope'"),
        "{e}"
    );
}

fn chain(kv: &[(&str, &str)]) -> TransformChain {
    TransformChain::from_props(&props(kv)).expect("valid chain")
}

#[test]
fn regex_router_uses_java_replacement_rules() {
    let c = chain(&[
        ("transforms", "r"),
        (
            "transforms.r.type",
            "org.apache.kafka.connect.transforms.RegexRouter",
        ),
        ("transforms.r.regex", r"shop\.retail\.(.*)"),
        ("transforms.r.replacement", r"out-$1\$"),
    ]);
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        "out-orders_info$"
    );
    let other = ConnectRecord {
        topic: Arc::from("x.retail.orders_info"),
        ..create()
    };
    assert_eq!(
        c.apply(other).expect("ok").expect("kept").topic.as_ref(),
        "x.retail.orders_info"
    );
    // `$10` with one group is group 1 then a literal 0, as in Java.
    let c = chain(&[
        ("transforms", "r"),
        ("transforms.r.type", "RegexRouter"),
        ("transforms.r.regex", r"shop\.(retail)\..*"),
        ("transforms.r.replacement", "$10"),
    ]);
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        "retail0"
    );
}

#[test]
fn insert_field_on_unwrapped_rows_and_schemaless_maps() {
    let c = chain(&[
        ("transforms", "unwrap,ins"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        (
            "transforms.ins.type",
            "org.apache.kafka.connect.transforms.InsertField$Value",
        ),
        ("transforms.ins.topic.field", "t!"),
        ("transforms.ins.timestamp.field", "ts"),
        ("transforms.ins.static.field", "origin"),
        ("transforms.ins.static.value", "sluice"),
        ("transforms.ins.partition.field", "p"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    let text = value_json(&out, false).expect("value");
    assert!(
        text.ends_with(
            r#""t":"shop.retail.orders_info","p":null,"ts":1700000000500,"origin":"sluice"}"#
        ),
        "{text}"
    );
    let schema = out.value_schema.as_ref().expect("schema");
    let (_, ts) = schema.field("ts").expect("ts");
    assert_eq!(
        ts.schema.name_str(),
        "org.apache.kafka.connect.data.Timestamp"
    );
    assert!(!schema.field("t").expect("t").1.schema.optional);

    // Sink side, schemaless: offset.field reads the sink record's offset.
    let c = chain(&[
        ("transforms", "ins"),
        ("transforms.ins.type", "InsertField$Value"),
        ("transforms.ins.offset.field", "off"),
    ]);
    let sink_rec = ConnectRecord {
        partition: Some(0),
        offset: Some(42),
        value_schema: None,
        value: Some(Value::Map(vec![(
            Value::String("a".into()),
            Value::Int64(1),
        )])),
        ..create()
    };
    let out = c.apply(sink_rec).expect("ok").expect("kept");
    assert_eq!(
        value_json(&out, false).as_deref(),
        Some(r#"{"a":1,"off":42}"#)
    );
    // A source record has no Kafka offset yet.
    let err = c
        .apply(ConnectRecord {
            value_schema: None,
            value: Some(Value::Map(vec![])),
            ..create()
        })
        .expect_err("no offset")
        .to_string();
    assert!(err.contains("'ins'") && err.contains("SinkRecord"), "{err}");
}

#[test]
fn replace_field_include_exclude_and_renames() {
    let c = chain(&[
        ("transforms", "unwrap,rf"),
        (
            "transforms.unwrap.type",
            "io.debezium.transforms.ExtractNewRecordState",
        ),
        (
            "transforms.rf.type",
            "org.apache.kafka.connect.transforms.ReplaceField$Value",
        ),
        ("transforms.rf.include", "orderid,custid,amount"),
        ("transforms.rf.exclude", "amount"),
        ("transforms.rf.renames", "orderid:id,custid:customer"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    assert_eq!(
        value_json(&out, false).as_deref(),
        Some(r#"{"id":51,"customer":306}"#)
    );
    // The deprecated names still work.
    let c = chain(&[
        ("transforms", "unwrap,rf"),
        ("transforms.unwrap.type", "ExtractNewRecordState"),
        ("transforms.rf.type", "ReplaceField$Value"),
        ("transforms.rf.blacklist", "city,purchase_time"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    assert_eq!(
        value_json(&out, false).as_deref(),
        Some(r#"{"orderid":51,"custid":306,"amount":7000}"#)
    );
    let c = chain(&[
        ("transforms", "rf"),
        ("transforms.rf.type", "ReplaceField$Key"),
        ("transforms.rf.renames", "orderid:id"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    assert_eq!(out.key_schema.as_ref().expect("key").fields[0].name, "id");
}

#[test]
fn predicates_gate_transforms() {
    let kv = [
        ("transforms", "r"),
        ("transforms.r.type", "RegexRouter"),
        ("transforms.r.regex", ".*"),
        ("transforms.r.replacement", "routed"),
        ("transforms.r.predicate", "orders"),
        ("predicates", "orders,tomb,hdr"),
        (
            "predicates.orders.type",
            "org.apache.kafka.connect.transforms.predicates.TopicNameMatches",
        ),
        ("predicates.orders.pattern", r".*\.orders_info"),
        ("predicates.tomb.type", "RecordIsTombstone"),
        ("predicates.hdr.type", "HasHeaderKey"),
        ("predicates.hdr.name", "h"),
    ];
    let c = chain(&kv);
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        "routed"
    );
    let other = ConnectRecord {
        topic: Arc::from("shop.retail.customers"),
        ..create()
    };
    assert_eq!(
        c.apply(other.clone())
            .expect("ok")
            .expect("kept")
            .topic
            .as_ref(),
        "shop.retail.customers"
    );
    let mut negated = props(&kv);
    negated.insert("transforms.r.negate".into(), "true".into());
    let c = TransformChain::from_props(&negated).expect("valid");
    assert_eq!(
        c.apply(other).expect("ok").expect("kept").topic.as_ref(),
        "routed"
    );
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        TOPIC
    );

    let mut tomb = props(&kv);
    tomb.insert("transforms.r.predicate".into(), "tomb".into());
    let c = TransformChain::from_props(&tomb).expect("valid");
    assert_eq!(
        c.apply(tombstone())
            .expect("ok")
            .expect("kept")
            .topic
            .as_ref(),
        "routed"
    );
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        TOPIC
    );

    let mut hdr = props(&kv);
    hdr.insert("transforms.r.predicate".into(), "hdr".into());
    let c = TransformChain::from_props(&hdr).expect("valid");
    let with_header = ConnectRecord {
        headers: vec![Header {
            key: "h".into(),
            value: None,
        }],
        ..create()
    };
    assert_eq!(
        c.apply(with_header)
            .expect("ok")
            .expect("kept")
            .topic
            .as_ref(),
        "routed"
    );
    assert_eq!(
        c.apply(create()).expect("ok").expect("kept").topic.as_ref(),
        TOPIC
    );
}

#[test]
fn timestamp_converter_between_string_unix_and_logical_types() {
    let base = [
        ("transforms", "unwrap,ts"),
        ("transforms.unwrap.type", "ExtractNewRecordState"),
        ("transforms.unwrap.add.fields", "source.ts_ms"),
        (
            "transforms.ts.type",
            "org.apache.kafka.connect.transforms.TimestampConverter$Value",
        ),
        ("transforms.ts.field", "__source_ts_ms"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut p = props(&base);
        p.extend(props(extra));
        TransformChain::from_props(&p).expect("valid chain")
    };
    let c = with(&[
        ("transforms.ts.target.type", "string"),
        ("transforms.ts.format", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    assert!(value_json(&out, false)
        .expect("value")
        .ends_with(r#""__source_ts_ms":"2023-11-14T22:13:20.123Z"}"#));
    let (_, f) = out
        .value_schema
        .as_ref()
        .expect("schema")
        .field("__source_ts_ms")
        .expect("field");
    // The added field was optional, so its new schema is too.
    assert!(f.schema.optional && f.schema.ty == SchemaType::String);

    // unix.precision reads an int64 input in the same unit it writes, so
    // ms stay ms (Kafka's behaviour); converting from a Timestamp first
    // gives seconds.
    let c = with(&[
        ("transforms.ts.target.type", "unix"),
        ("transforms.ts.unix.precision", "seconds"),
    ]);
    let out = c.apply(create()).expect("ok").expect("kept");
    assert!(value_json(&out, false)
        .expect("value")
        .ends_with(r#""__source_ts_ms":1700000000123}"#));
    let mut p = props(&base);
    p.extend(props(&[
        ("transforms", "unwrap,ts,secs"),
        ("transforms.ts.target.type", "Timestamp"),
        ("transforms.secs.type", "TimestampConverter$Value"),
        ("transforms.secs.field", "__source_ts_ms"),
        ("transforms.secs.target.type", "unix"),
        ("transforms.secs.unix.precision", "seconds"),
    ]));
    let c = TransformChain::from_props(&p).expect("valid chain");
    let out = c.apply(create()).expect("ok").expect("kept");
    assert!(value_json(&out, false)
        .expect("value")
        .ends_with(r#""__source_ts_ms":1700000000}"#));

    let c = with(&[("transforms.ts.target.type", "Date")]);
    let out = c.apply(create()).expect("ok").expect("kept");
    let schema = out.value_schema.as_ref().expect("schema");
    let (i, f) = schema.field("__source_ts_ms").expect("field");
    assert_eq!(f.schema.name_str(), "org.apache.kafka.connect.data.Date");
    // 2023-11-14 is day 19675 since the epoch.
    assert_eq!(
        out.value
            .as_ref()
            .and_then(|v| v.as_struct())
            .map(|v| v[i].clone()),
        Some(Value::Int32(19_675))
    );

    // Whole schemaless values, parsed from text.
    let c = chain(&[
        ("transforms", "ts"),
        ("transforms.ts.type", "TimestampConverter$Value"),
        ("transforms.ts.target.type", "unix"),
        ("transforms.ts.format", "dd/MM/yyyy HH:mm"),
    ]);
    let rec = ConnectRecord {
        value_schema: None,
        value: Some(Value::String("14/11/2023 22:13".into())),
        ..create()
    };
    let out = c.apply(rec).expect("ok").expect("kept");
    assert_eq!(out.value, Some(Value::Int64(1_699_999_980_000)));
    let bad = ConnectRecord {
        value_schema: None,
        value: Some(Value::String("2023-11-14".into())),
        ..create()
    };
    let err = c.apply(bad).expect_err("unparsable").to_string();
    assert!(
        err.contains("'ts'")
            && err.contains("(2023-11-14) does not match pattern (dd/MM/yyyy HH:mm)"),
        "{err}"
    );
}

#[test]
fn timestamp_converter_config_errors() {
    let base = [
        ("transforms", "ts"),
        ("transforms.ts.type", "TimestampConverter$Value"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut kv: Vec<(&str, &str)> = base.to_vec();
        kv.extend_from_slice(extra);
        config_errors(&kv)
    };
    let e = with(&[]);
    assert!(
        e.contains("'transforms.ts.target.type'") && e.contains("Missing"),
        "{e}"
    );
    // Kafka's ValidString is case-sensitive.
    let e = with(&[("transforms.ts.target.type", "date")]);
    assert!(
        e.contains("'date'") && e.contains("string, unix, Date, Time, Timestamp"),
        "{e}"
    );
    let e = with(&[("transforms.ts.target.type", "string")]);
    assert!(
        e.contains("'transforms.ts.format'") && e.contains("requires format"),
        "{e}"
    );
    let e = with(&[
        ("transforms.ts.target.type", "unix"),
        ("transforms.ts.unix.precision", "minutes"),
    ]);
    assert!(
        e.contains("'transforms.ts.unix.precision'") && e.contains("'minutes'"),
        "{e}"
    );
    let e = with(&[
        ("transforms.ts.target.type", "string"),
        ("transforms.ts.format", "yyyy-qq"),
    ]);
    assert!(
        e.contains("'yyyy-qq'") && e.contains("Illegal pattern character 'q'"),
        "{e}"
    );
}

// The chain inside a running worker: a small source emits Debezium change
// events for retail.orders_info; the file sink receives them through the
// in-process transport.

mod worker {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use async_trait::async_trait;
    use sluice_connect::{ConnectorFile, Registry, Worker, WorkerError};
    use sluice_core::config::{ConfigDef, ConfigErrors};
    use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SourceContext, SourceTask};
    use sluice_core::record::{SourceOffset, SourceRecord};
    use tokio_util::sync::CancellationToken;

    /// Emits create, update, delete and tombstone events for order 51, each
    /// with an offset, then idles until shut down.
    struct OrdersSource;

    impl ConnectorPlugin for OrdersSource {
        fn class(&self) -> &'static str {
            "test.OrdersSource"
        }
        fn aliases(&self) -> &'static [&'static str] {
            &["orders"]
        }
        fn kind(&self) -> ConnectorKind {
            ConnectorKind::Source
        }
        fn config_def(&self) -> ConfigDef {
            ConfigDef::new(Vec::new())
        }
        fn validate(&self, _props: &Props) -> Result<Vec<String>, ConfigErrors> {
            Ok(Vec::new())
        }
        fn task_configs(&self, props: &Props, _max_tasks: usize) -> Vec<Props> {
            vec![props.clone()]
        }
        fn create_source_task(&self, _props: &Props) -> anyhow::Result<Box<dyn SourceTask>> {
            Ok(Box::new(OrdersTask))
        }
    }

    struct OrdersTask;

    fn to_source(r: ConnectRecord, n: i64) -> SourceRecord {
        let mut partition = serde_json::Map::new();
        partition.insert("server".into(), "shop".into());
        let mut offset = serde_json::Map::new();
        offset.insert("lsn".into(), n.into());
        SourceRecord {
            topic: r.topic,
            key_schema: r.key_schema,
            key: r.key,
            value_schema: r.value_schema,
            value: r.value,
            timestamp_ms: r.timestamp_ms,
            headers: r.headers,
            offset: Some(Arc::new(SourceOffset { partition, offset })),
        }
    }

    #[async_trait]
    impl SourceTask for OrdersTask {
        async fn run(&mut self, ctx: SourceContext) -> anyhow::Result<()> {
            let events = [create(), update(), delete(), tombstone()];
            let batch = events
                .into_iter()
                .enumerate()
                .map(|(n, r)| to_source(r, n as i64))
                .collect();
            ctx.sender.send(batch).await?;
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        out: PathBuf,
        worker_props: Props,
        connectors: Vec<ConnectorFile>,
        registry: Registry,
    }

    fn setup(source_extra: &[(&str, &str)], sink_extra: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.txt");
        let worker_props = props(&[
            (
                "offset.storage.file.filename",
                &dir.path().join("offsets").display().to_string(),
            ),
            ("offset.flush.interval.ms", "20"),
            (
                "key.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            ("key.converter.schemas.enable", "false"),
            (
                "value.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            ("value.converter.schemas.enable", "false"),
        ]);
        let mut source = props(&[
            ("name", "orders-source"),
            ("connector.class", "orders"),
            ("transforms", "unwrap"),
            (
                "transforms.unwrap.type",
                "io.debezium.transforms.ExtractNewRecordState",
            ),
        ]);
        source.extend(props(source_extra));
        let mut sink = props(&[
            ("name", "orders-file"),
            ("connector.class", "FileStreamSink"),
            ("topics", TOPIC),
            ("file", &out.display().to_string()),
        ]);
        sink.extend(props(sink_extra));
        Setup {
            out,
            worker_props,
            connectors: vec![
                ConnectorFile {
                    path: PathBuf::from("orders-source.properties"),
                    props: source,
                },
                ConnectorFile {
                    path: PathBuf::from("orders-file.properties"),
                    props: sink,
                },
            ],
            registry: Registry::new(vec![
                sluice_connect::file_sink::plugin(),
                Arc::new(OrdersSource),
            ]),
            _dir: dir,
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    async fn run_until_lines(s: &Setup, n: usize) -> Vec<String> {
        let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid");
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(worker.run(shutdown.clone()));
        for _ in 0..500 {
            if lines(&s.out).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        run.await.expect("worker task").expect("clean stop");
        lines(&s.out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unwrapped_rows_reach_the_file_sink() {
        let s = setup(&[], &[]);
        let out = run_until_lines(&s, 3).await;
        // Debezium 3.x's default: the delete becomes a null value, its
        // tombstone is dropped.
        assert_eq!(
            out,
            vec![
                ROW_51.to_string(),
                r#"{"orderid":51,"custid":306,"amount":7500,"city":"Paris","purchase_time":"2026-11-23 22:00:00"}"#.to_string(),
                "null".to_string(),
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_transforms_run_between_converters_and_put() {
        let s = setup(
            &[
                (
                    "transforms.unwrap.delete.tombstone.handling.mode",
                    "rewrite-with-tombstone",
                ),
                ("transforms.unwrap.add.fields", "op"),
            ],
            &[
                ("transforms", "trim,ins"),
                (
                    "transforms.trim.type",
                    "org.apache.kafka.connect.transforms.ReplaceField$Value",
                ),
                ("transforms.trim.exclude", "city,purchase_time,amount"),
                (
                    "transforms.ins.type",
                    "org.apache.kafka.connect.transforms.InsertField$Value",
                ),
                ("transforms.ins.offset.field", "kafka_offset"),
            ],
        );
        let out = run_until_lines(&s, 4).await;
        assert_eq!(
            out,
            vec![
                r#"{"orderid":51,"custid":306,"__deleted":"false","__op":"c","kafka_offset":0}"#,
                r#"{"orderid":51,"custid":306,"__deleted":"false","__op":"u","kafka_offset":1}"#,
                r#"{"orderid":51,"custid":306,"__deleted":"true","__op":"d","kafka_offset":2}"#,
                "null",
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_transform_fails_the_task_naming_connector_alias_and_topic() {
        let s = setup(&[("transforms.unwrap.route.by.field", "amount")], &[]);
        let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid");
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            worker.run(CancellationToken::new()),
        )
        .await
        .expect("the worker stops on its own")
        .expect_err("task failure");
        let text = format!("{err:#}");
        assert!(matches!(err, WorkerError::TaskFailed(_)), "{text}");
        assert!(
            text.contains("orders-source")
                && text.contains("'unwrap'")
                && text.contains(TOPIC)
                && text.contains(r#"{"lsn":0}"#)
                && text.contains("amount"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_sink_transform_names_the_record_it_failed_on() {
        let s = setup(
            &[],
            &[
                ("transforms", "ts"),
                ("transforms.ts.type", "TimestampConverter$Value"),
                ("transforms.ts.field", "city"),
                ("transforms.ts.target.type", "unix"),
            ],
        );
        let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid");
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            worker.run(CancellationToken::new()),
        )
        .await
        .expect("the worker stops on its own")
        .expect_err("task failure");
        let text = format!("{err:#}");
        assert!(
            text.contains("sink connector 'orders-file'")
                && text.contains("transform 'ts'")
                && text.contains(&format!("topic '{TOPIC}' partition 0 offset 0")),
            "{text}"
        );
        // Nothing reached the file.
        assert!(lines(&s.out).is_empty());
    }

    #[test]
    fn bad_transform_configs_stop_start_up() {
        let s = setup(
            &[("transforms.unwrap.delete.handling.mode", "erase")],
            &[("transforms", "x")],
        );
        let Err(err) = Worker::new(&s.registry, &s.worker_props, &s.connectors) else {
            panic!("an invalid transform config was accepted");
        };
        let err = err.to_string();
        assert!(
            err.contains("orders-source")
                && err.contains("'transforms.unwrap.delete.handling.mode'")
                && err.contains("'erase'")
                && err.contains("drop, rewrite, none"),
            "{err}"
        );
        assert!(
            err.contains("orders-file") && err.contains("'transforms.x.type'"),
            "{err}"
        );
    }
}
