//! Golden tests: Debezium PostgreSQL events (2.7 and 3.6 formats) through
//! the JSON converter, compared as exact text with what Debezium + Kafka
//! Connect write.

use std::collections::BTreeMap;

use sluice_core::converter::{converter_from_config, Converter};
use sluice_core::debezium::{self, Format, Op, Origin, SourceInfo};
use sluice_core::schema::{prim, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::Value;

fn json(props: &[(&str, &str)]) -> std::sync::Arc<dyn Converter> {
    let p: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    converter_from_config("org.apache.kafka.connect.json.JsonConverter", &p, false)
        .expect("valid converter config")
}

fn text(c: &dyn Converter, schema: &SchemaRef, value: &Value) -> String {
    let bytes = c
        .from_connect(
            "PostgreSQL_server.public.customers",
            Some(schema),
            Some(value),
        )
        .expect("converts")
        .expect("not null");
    String::from_utf8(bytes).expect("utf-8")
}

fn customers_value_schema() -> SchemaRef {
    SchemaBuilder::structure()
        .name("PostgreSQL_server.public.customers.Value")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .field("first_name", prim::string())
        .field("last_name", prim::string())
        .field("email", prim::string())
        .build()
}

const ROW_FIELDS: &str = r#"[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":false,"field":"first_name"},{"type":"string","optional":false,"field":"last_name"},{"type":"string","optional":false,"field":"email"}]"#;

fn expected_envelope_schema() -> String {
    format!(
        concat!(
            r#"{{"type":"struct","fields":["#,
            r#"{{"type":"struct","fields":{rows},"optional":true,"name":"PostgreSQL_server.public.customers.Value","field":"before"}},"#,
            r#"{{"type":"struct","fields":{rows},"optional":true,"name":"PostgreSQL_server.public.customers.Value","field":"after"}},"#,
            r#"{{"type":"struct","fields":["#,
            r#"{{"type":"string","optional":false,"field":"version"}},"#,
            r#"{{"type":"string","optional":false,"field":"connector"}},"#,
            r#"{{"type":"string","optional":false,"field":"name"}},"#,
            r#"{{"type":"int64","optional":false,"field":"ts_ms"}},"#,
            r#"{{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{{"allowed":"true,last,false,incremental"}},"default":"false","field":"snapshot"}},"#,
            r#"{{"type":"string","optional":false,"field":"db"}},"#,
            r#"{{"type":"string","optional":true,"field":"sequence"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_us"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_ns"}},"#,
            r#"{{"type":"string","optional":false,"field":"schema"}},"#,
            r#"{{"type":"string","optional":false,"field":"table"}},"#,
            r#"{{"type":"int64","optional":true,"field":"txId"}},"#,
            r#"{{"type":"int64","optional":true,"field":"lsn"}},"#,
            r#"{{"type":"int64","optional":true,"field":"xmin"}}"#,
            r#"],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}},"#,
            r#"{{"type":"struct","fields":[{{"type":"string","optional":false,"field":"id"}},{{"type":"int64","optional":false,"field":"total_order"}},{{"type":"int64","optional":false,"field":"data_collection_order"}}],"optional":true,"name":"event.block","version":1,"field":"transaction"}},"#,
            r#"{{"type":"string","optional":false,"field":"op"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_ms"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_us"}},"#,
            r#"{{"type":"int64","optional":true,"field":"ts_ns"}}"#,
            r#"],"optional":false,"name":"PostgreSQL_server.public.customers.Envelope","version":2}}"#
        ),
        rows = ROW_FIELDS
    )
}

fn create_event() -> (SchemaRef, Value) {
    create_event_in(Format::V2_7)
}

fn create_event_in(format: Format) -> (SchemaRef, Value) {
    let envelope = debezium::envelope_schema_for(
        format,
        "PostgreSQL_server.public.customers.Envelope",
        &customers_value_schema(),
    );
    let seq = debezium::sequence_text(Some(24023119), Some(24023128));
    let source = debezium::source_value_for(
        format,
        &SourceInfo {
            name: "PostgreSQL_server",
            ts_ms: 1559033904863,
            ts_us: 1559033904863123,
            ts_ns: 1559033904863123000,
            snapshot: "false",
            db: "postgres",
            sequence: Some(&seq),
            schema: "public",
            table: "customers",
            tx_id: Some(555),
            lsn: Some(24023128),
            xmin: None,
        },
        &Origin::default(),
    );
    let after = Value::Struct(vec![
        Value::Int32(1),
        Value::String("Anne".into()),
        Value::String("Kretchmar".into()),
        Value::String("annek@noanswer.org".into()),
    ]);
    let value = debezium::envelope_value(
        &envelope,
        None,
        Some(after),
        source,
        Op::Create,
        1559033904863,
        1559033904863841,
        1559033904863841257,
        None,
    );
    (envelope, value)
}

const CREATE_PAYLOAD: &str = concat!(
    r#"{"before":null,"after":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"annek@noanswer.org"},"#,
    r#""source":{"version":"2.7.3.Final","connector":"postgresql","name":"PostgreSQL_server","ts_ms":1559033904863,"snapshot":"false","db":"postgres","sequence":"[\"24023119\",\"24023128\"]","ts_us":1559033904863123,"ts_ns":1559033904863123000,"schema":"public","table":"customers","txId":555,"lsn":24023128,"xmin":null},"#,
    r#""transaction":null,"op":"c","ts_ms":1559033904863,"ts_us":1559033904863841,"ts_ns":1559033904863841257}"#
);

#[test]
fn customers_create_event_with_schemas() {
    let (schema, value) = create_event();
    let got = text(&*json(&[]), &schema, &value);
    let want = format!(
        r#"{{"schema":{},"payload":{}}}"#,
        expected_envelope_schema(),
        CREATE_PAYLOAD
    );
    assert_eq!(got, want);
    // A second conversion (schema cache hit) is identical.
    assert_eq!(text(&*json(&[]), &schema, &value), want);
    serde_json::from_str::<serde_json::Value>(&got).expect("valid JSON");
}

/// Debezium 3.6.3's source block, as its JsonConverter output shows it: a
/// schema version, the full snapshot list, and origin / origin_lsn.
#[test]
fn customers_create_event_in_3_6() {
    let (schema, value) = create_event_in(Format::V3_6);
    let got = text(&*json(&[]), &schema, &value);
    let want_schema = expected_envelope_schema()
        .replace(
            "true,last,false,incremental",
            "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental",
        )
        .replace(
            r#"{"type":"int64","optional":true,"field":"xmin"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"}"#,
            r#"{"type":"int64","optional":true,"field":"xmin"},{"type":"string","optional":true,"field":"origin"},{"type":"int64","optional":true,"field":"origin_lsn"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}"#,
        );
    let want_payload = CREATE_PAYLOAD
        .replace("2.7.3.Final", "3.6.3.Final")
        .replace(
            r#""xmin":null}"#,
            r#""xmin":null,"origin":null,"origin_lsn":null}"#,
        );
    assert_eq!(
        got,
        format!(r#"{{"schema":{want_schema},"payload":{want_payload}}}"#)
    );
    // The default format is 3.6's.
    let default = debezium::envelope_schema(
        "PostgreSQL_server.public.customers.Envelope",
        &customers_value_schema(),
    );
    assert_eq!(default, schema);
}

#[test]
fn customers_create_event_without_schemas() {
    let (schema, value) = create_event();
    let got = text(&*json(&[("schemas.enable", "false")]), &schema, &value);
    assert_eq!(got, CREATE_PAYLOAD);
}

#[test]
fn snapshot_null_without_default_replacement() {
    // Kafka 3.x with replace.null.with.default=false writes the null
    // Debezium left in source.snapshot.
    let (schema, value) = create_event();
    let got = text(
        &*json(&[
            ("schemas.enable", "false"),
            ("replace.null.with.default", "false"),
        ]),
        &schema,
        &value,
    );
    assert!(got.contains(r#""snapshot":null,"#), "{got}");
}

#[test]
fn key_heartbeat_and_transaction_events() {
    let c = json(&[]);
    let key_schema = SchemaBuilder::structure()
        .name("PostgreSQL_server.public.customers.Key")
        .field("id", SchemaBuilder::new(SchemaType::Int32).build())
        .build();
    assert_eq!(
        text(&*c, &key_schema, &Value::Struct(vec![Value::Int32(1)])),
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false,"name":"PostgreSQL_server.public.customers.Key"},"payload":{"id":1}}"#
    );
    assert_eq!(
        debezium::heartbeat_topic("PostgreSQL_server"),
        "__debezium-heartbeat.PostgreSQL_server"
    );
    assert_eq!(
        text(
            &*c,
            &debezium::heartbeat_key_schema(),
            &debezium::heartbeat_key("PostgreSQL_server")
        ),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"serverName"}],"optional":false,"name":"io.debezium.connector.common.ServerNameKey","version":1},"payload":{"serverName":"PostgreSQL_server"}}"#
    );
    assert_eq!(
        text(
            &*c,
            &debezium::heartbeat_value_schema(),
            &debezium::heartbeat_value(1700000000000)
        ),
        r#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"ts_ms"}],"optional":false,"name":"io.debezium.connector.common.Heartbeat","version":1},"payload":{"ts_ms":1700000000000}}"#
    );
    assert_eq!(
        debezium::transaction_topic("PostgreSQL_server"),
        "PostgreSQL_server.transaction"
    );
    let tx_value_schema = r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"status"},{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":true,"field":"event_count"},{"type":"array","items":{"type":"struct","fields":[{"type":"string","optional":false,"field":"data_collection"},{"type":"int64","optional":false,"field":"event_count"}],"optional":true,"name":"event.collection","version":1},"optional":true,"field":"data_collections"},{"type":"int64","optional":false,"field":"ts_ms"}],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue","version":1}"#;
    assert_eq!(
        text(
            &*c,
            &debezium::transaction_value_schema(),
            &debezium::transaction_begin_value("571:53195832", 1)
        ),
        format!(
            r#"{{"schema":{tx_value_schema},"payload":{{"status":"BEGIN","id":"571:53195832","event_count":null,"data_collections":null,"ts_ms":1}}}}"#
        )
    );
    let end = debezium::transaction_end_value(
        "571:53195832",
        2,
        3,
        &[
            ("public.customers".to_string(), 2),
            ("public.orders".to_string(), 1),
        ],
    );
    assert_eq!(
        text(
            &*json(&[("schemas.enable", "false")]),
            &debezium::transaction_value_schema(),
            &end
        ),
        r#"{"status":"END","id":"571:53195832","event_count":3,"data_collections":[{"data_collection":"public.customers","event_count":2},{"data_collection":"public.orders","event_count":1}],"ts_ms":2}"#
    );
    assert_eq!(
        text(
            &*c,
            &debezium::transaction_key_schema(),
            &debezium::transaction_key("571:53195832")
        ),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"}],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataKey","version":1},"payload":{"id":"571:53195832"}}"#
    );
}

#[test]
fn update_with_transaction_block_and_truncate() {
    let envelope = debezium::envelope_schema_for(
        Format::V2_7,
        "PostgreSQL_server.public.customers.Envelope",
        &customers_value_schema(),
    );
    let row = |email: &str| {
        Value::Struct(vec![
            Value::Int32(1),
            Value::String("Anne".into()),
            Value::String("Kretchmar".into()),
            Value::String(email.into()),
        ])
    };
    let source = debezium::source_value_for(
        Format::V2_7,
        &SourceInfo {
            name: "p",
            ts_ms: 1,
            ts_us: 1000,
            ts_ns: 1000000,
            snapshot: "incremental",
            db: "postgres",
            sequence: None,
            schema: "public",
            table: "customers",
            tx_id: Some(9),
            lsn: Some(10),
            xmin: Some(11),
        },
        &Origin::default(),
    );
    let v = debezium::envelope_value(
        &envelope,
        Some(row("a@b")),
        Some(row("c@d")),
        source.clone(),
        Op::Update,
        2,
        2000,
        2000000,
        Some(debezium::transaction_block_value("9:10", 3, 1)),
    );
    let got = text(&*json(&[("schemas.enable", "false")]), &envelope, &v);
    assert_eq!(
        got,
        concat!(
            r#"{"before":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"a@b"},"after":{"id":1,"first_name":"Anne","last_name":"Kretchmar","email":"c@d"},"#,
            r#""source":{"version":"2.7.3.Final","connector":"postgresql","name":"p","ts_ms":1,"snapshot":"incremental","db":"postgres","sequence":null,"ts_us":1000,"ts_ns":1000000,"schema":"public","table":"customers","txId":null,"lsn":null,"xmin":null},"#,
            r#""transaction":{"id":"9:10","total_order":3,"data_collection_order":1},"op":"u","ts_ms":2,"ts_us":2000,"ts_ns":2000000}"#
        )
    );
    let t = debezium::envelope_value(
        &envelope,
        None,
        None,
        source,
        Op::Truncate,
        2,
        2000,
        2000000,
        None,
    );
    let got = text(&*json(&[("schemas.enable", "false")]), &envelope, &t);
    assert!(
        got.starts_with(r#"{"before":null,"after":null,"source":{"#),
        "{got}"
    );
    assert!(
        got.ends_with(r#""transaction":null,"op":"t","ts_ms":2,"ts_us":2000,"ts_ns":2000000}"#),
        "{got}"
    );
}

#[test]
fn sequence_format() {
    assert_eq!(
        debezium::sequence_text(Some(24023119), Some(24023128)),
        r#"["24023119","24023128"]"#
    );
    assert_eq!(debezium::sequence_text(None, Some(5)), r#"[null,"5"]"#);
    assert_eq!(debezium::sequence_text(None, None), "[null,null]");
}

#[test]
fn envelope_reads_back_identically() {
    let (schema, value) = create_event();
    let c = json(&[]);
    let bytes = c
        .from_connect("t", Some(&schema), Some(&value))
        .expect("converts")
        .expect("bytes");
    let (s2, v2) = c.to_connect("t", Some(&bytes)).expect("reads");
    let s2 = s2.expect("schema");
    // The snapshot null reads back as its default, as in Kafka.
    let mut want = value.clone();
    if let Value::Struct(f) = &mut want {
        if let Value::Struct(src) = &mut f[2] {
            src[4] = Value::String("false".into());
        }
    }
    assert_eq!(*s2, *schema);
    assert_eq!(v2, Some(want));
    let again = c
        .from_connect("t", Some(&s2), v2.as_ref())
        .expect("converts")
        .expect("bytes");
    assert_eq!(again, bytes);
}

#[test]
fn logical_decoding_message_schema() {
    let c = json(&[]);
    let v = debezium::message_value(Some("audit"), Value::Bytes(b"hi".to_vec()), Value::Null, 5);
    // The source block is required: a null source is refused.
    assert!(c
        .from_connect(
            "p.message",
            Some(&debezium::message_value_schema(false)),
            Some(&v)
        )
        .is_err());
    assert_eq!(debezium::message_topic("p"), "p.message");
    assert_eq!(
        text(
            &*c,
            &debezium::message_key_schema(),
            &debezium::message_key(Some("audit"))
        ),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"field":"prefix"}],"optional":false,"name":"io.debezium.connector.postgresql.MessageKey","version":1},"payload":{"prefix":"audit"}}"#
    );
    let block = debezium::message_block_schema(false);
    assert_eq!(
        text(
            &*c,
            &block,
            &Value::Struct(vec![
                Value::String("audit".into()),
                Value::Bytes(b"hi".to_vec())
            ])
        ),
        r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":true,"field":"prefix"},{"type":"bytes","optional":true,"field":"content"}],"optional":false,"name":"io.debezium.connector.postgresql.Message","version":1},"payload":{"prefix":"audit","content":"aGk="}}"#
    );
}
