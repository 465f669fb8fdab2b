//! JsonConverter / StringConverter behaviour: exact bytes for the fine print
//! (escaping, Java number forms, null handling, maps), configuration errors,
//! and property tests (round trip, no panic on arbitrary bytes).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sluice_core::converter::{
    converter_from_config, javafmt, Converter, DecimalFormat, JsonConverter, JsonConverterConfig,
    StringConverter, StringEncoding,
};
use sluice_core::schema::{prim, Schema, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::Value;

fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn conv(schemas: bool, decimal: DecimalFormat, replace: bool) -> JsonConverter {
    JsonConverter::new(JsonConverterConfig {
        schemas_enable: schemas,
        decimal_format: decimal,
        replace_null_with_default: replace,
        schemas_cache_size: 1000,
    })
}

fn out(c: &dyn Converter, schema: Option<&Schema>, v: Option<&Value>) -> Option<String> {
    c.from_connect("t", schema, v)
        .expect("converts")
        .map(|b| String::from_utf8(b).expect("utf-8"))
}

#[test]
fn java_double_table() {
    let cases: &[(f64, &str)] = &[
        (0.1, "0.1"),
        (1.0, "1.0"),
        (100.0, "100.0"),
        (123.456, "123.456"),
        (1e7, "1.0E7"),
        (9999999.0, "9999999.0"),
        (9999999.999, "9999999.999"),
        (12345678.0, "1.2345678E7"),
        (0.001, "0.001"),
        (0.0009999, "9.999E-4"),
        (1.0e-4, "1.0E-4"),
        (1e-5, "1.0E-5"),
        (1e10, "1.0E10"),
        (-1.5e-7, "-1.5E-7"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (f64::MAX, "1.7976931348623157E308"),
        (f64::MIN, "-1.7976931348623157E308"),
        (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
        (f64::from_bits(1), "4.9E-324"),
        // JDK 19+ picks the closest two-digit decimal when the shortest has
        // one digit (older JDKs print 1.0E-323 here).
        (f64::from_bits(2), "9.9E-324"),
        (f64::from_bits(3), "1.5E-323"),
        (2.0e-3, "0.002"),
        (1.0e23, "1.0E23"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
    ];
    for (v, want) in cases {
        assert_eq!(javafmt::double_to_string(*v), *want, "{v:e}");
    }
}

#[test]
fn java_float_table() {
    let cases: &[(f32, &str)] = &[
        (0.1, "0.1"),
        (1.0, "1.0"),
        (2.71, "2.71"),
        (1e7, "1.0E7"),
        (16777216.0, "1.6777216E7"),
        (1e-5, "1.0E-5"),
        (0.001, "0.001"),
        (1.0e-4, "1.0E-4"),
        (1e10, "1.0E10"),
        (-0.0, "-0.0"),
        (f32::MAX, "3.4028235E38"),
        (f32::from_bits(1), "1.4E-45"),
        (f32::NAN, "NaN"),
        (f32::NEG_INFINITY, "-Infinity"),
    ];
    for (v, want) in cases {
        assert_eq!(javafmt::float_to_string(*v), *want, "{v:e}");
    }
}

#[test]
fn floats_in_json_and_non_finite_quoted() {
    let c = conv(false, DecimalFormat::Base64, true);
    let s = SchemaBuilder::array(prim::of(SchemaType::Float64, false)).build();
    let v = Value::Array(vec![
        Value::Float64(1.0),
        Value::Float64(1e-5),
        Value::Float64(f64::NAN),
        Value::Float64(f64::NEG_INFINITY),
    ]);
    assert_eq!(
        out(&c, Some(&s), Some(&v)).as_deref(),
        Some(r#"[1.0,1.0E-5,"NaN","-Infinity"]"#)
    );
    let (_, back) = c
        .to_connect("t", Some(b"[1.0E-5, \"Infinity\"]"))
        .expect("reads");
    assert!(matches!(back, Some(Value::Array(_))));
}

#[test]
fn strings_escaped_like_jackson() {
    let c = conv(false, DecimalFormat::Base64, true);
    let s = prim::string();
    let v = Value::String("a\"b\\c/d\u{1}\u{1f}\u{7f}\n\t\r\u{8}\u{c}é😀\u{2028}".into());
    assert_eq!(
        out(&c, Some(&s), Some(&v)).as_deref(),
        Some("\"a\\\"b\\\\c/d\\u0001\\u001F\u{7f}\\n\\t\\r\\b\\fé😀\u{2028}\"")
    );
}

#[test]
fn nulls_defaults_and_tombstones() {
    let c = conv(true, DecimalFormat::Base64, true);
    // No schema and no value: null bytes (a tombstone).
    assert_eq!(out(&c, None, None), None);
    // A value without schema.
    assert_eq!(
        out(&c, None, Some(&Value::Int32(5))).as_deref(),
        Some(r#"{"schema":null,"payload":5}"#)
    );
    // A null with an optional schema.
    let opt = prim::opt_string();
    assert_eq!(
        out(&c, Some(&opt), None).as_deref(),
        Some(r#"{"schema":{"type":"string","optional":true},"payload":null}"#)
    );
    let nc = conv(false, DecimalFormat::Base64, true);
    assert_eq!(out(&nc, Some(&opt), None).as_deref(), Some("null"));
    // Defaults replace nulls unless replace.null.with.default=false.
    let with_default = SchemaBuilder::new(SchemaType::Int32)
        .optional()
        .default_value(Value::Int32(7))
        .build();
    let st = SchemaBuilder::structure()
        .field("a", with_default)
        .field("b", prim::opt_int64())
        .build();
    let v = Value::Struct(vec![Value::Null, Value::Null]);
    assert_eq!(
        out(&nc, Some(&st), Some(&v)).as_deref(),
        Some(r#"{"a":7,"b":null}"#)
    );
    let keep = conv(false, DecimalFormat::Base64, false);
    assert_eq!(
        out(&keep, Some(&st), Some(&v)).as_deref(),
        Some(r#"{"a":null,"b":null}"#)
    );
    assert_eq!(
        out(&c, Some(&st), Some(&v)).as_deref(),
        Some(
            r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":true,"default":7,"field":"a"},{"type":"int64","optional":true,"field":"b"}],"optional":false},"payload":{"a":7,"b":null}}"#
        )
    );
    // A required field without default that is null is an error naming it.
    let req = SchemaBuilder::structure()
        .name("row")
        .field("id", prim::int64())
        .build();
    let err = c
        .from_connect(
            "topic1",
            Some(&req),
            Some(&Value::Struct(vec![Value::Null])),
        )
        .expect_err("required null");
    let msg = err.to_string();
    assert!(msg.contains("topic1") && msg.contains("'id'"), "{msg}");
}

#[test]
fn maps_bytes_decimals() {
    let c = conv(false, DecimalFormat::Base64, true);
    let sm = SchemaBuilder::map(prim::string(), prim::int64()).build();
    let v = Value::Map(vec![
        (Value::String("x".into()), Value::Int64(1)),
        (Value::String("y".into()), Value::Int64(2)),
    ]);
    assert_eq!(
        out(&c, Some(&sm), Some(&v)).as_deref(),
        Some(r#"{"x":1,"y":2}"#)
    );
    let im = SchemaBuilder::map(prim::int64(), prim::string()).build();
    let v = Value::Map(vec![(Value::Int64(1), Value::String("a".into()))]);
    assert_eq!(
        out(&c, Some(&im), Some(&v)).as_deref(),
        Some(r#"[[1,"a"]]"#)
    );
    let b = prim::of(SchemaType::Bytes, false);
    assert_eq!(
        out(&c, Some(&b), Some(&Value::Bytes(vec![0, 1, 2, 255]))).as_deref(),
        Some(r#""AAEC/w==""#)
    );
    let dec = SchemaBuilder::new(SchemaType::Bytes)
        .name("org.apache.kafka.connect.data.Decimal")
        .version(1)
        .parameter("scale", "2")
        .build();
    // 1.10 at scale 2 is unscaled 110 = 0x6e.
    let v = Value::Bytes(vec![0x6e]);
    assert_eq!(out(&c, Some(&dec), Some(&v)).as_deref(), Some(r#""bg==""#));
    let n = conv(true, DecimalFormat::Numeric, true);
    let text = out(&n, Some(&dec), Some(&v)).expect("bytes");
    assert_eq!(
        text,
        r#"{"schema":{"type":"bytes","optional":false,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{"scale":"2"}},"payload":1.10}"#
    );
    let (_, back) = n.to_connect("t", Some(text.as_bytes())).expect("reads");
    assert_eq!(back, Some(v.clone()));
    // A shorter number is rescaled to the schema's scale.
    let (_, back) = n
        .to_connect("t", Some(text.replace("1.10", "1.1").as_bytes()))
        .expect("reads");
    assert_eq!(back, Some(v));
}

#[test]
fn reading_errors_name_topic_and_problem() {
    let c = conv(true, DecimalFormat::Base64, true);
    for (bytes, needle) in [
        (&b"{\"payload\":1}"[..], "schemas.enable"),
        (b"{\"schema\":{\"type\":\"int9\"},\"payload\":1}", "Unknown schema type"),
        (b"{\"schema\":{\"type\":\"int32\"},\"payload\":null}", "null"),
        (b"{\"schema\":{\"type\":\"struct\",\"fields\":[{\"type\":\"string\",\"field\":\"a\"}]},\"payload\":{\"a\":1}}", "'a'"),
        (b"{nope", "invalid JSON"),
    ] {
        let e = c.to_connect("orders", Some(bytes)).expect_err("invalid");
        let msg = e.to_string();
        assert!(msg.contains("orders") && msg.contains(needle), "{msg}");
    }
    assert_eq!(c.to_connect("t", None).expect("null"), (None, None));
    let plain = conv(false, DecimalFormat::Base64, true);
    assert_eq!(
        plain
            .to_connect("t", Some(b"{\"a\":[1,2.5,\"x\"]}"))
            .expect("reads"),
        (
            None,
            Some(Value::Map(vec![(
                Value::String("a".into()),
                Value::Array(vec![
                    Value::Int64(1),
                    Value::Float64(2.5),
                    Value::String("x".into())
                ])
            )]))
        )
    );
}

#[test]
fn converter_config_and_errors() {
    for class in [
        "org.apache.kafka.connect.json.JsonConverter",
        "JsonConverter",
        "json",
    ] {
        assert!(
            converter_from_config(class, &props(&[]), true).is_ok(),
            "{class}"
        );
    }
    for class in [
        "org.apache.kafka.connect.storage.StringConverter",
        "StringConverter",
        "string",
    ] {
        assert!(
            converter_from_config(class, &props(&[]), false).is_ok(),
            "{class}"
        );
    }
    let e = converter_from_config("io.confluent.connect.avro.AvroConverter", &props(&[]), true)
        .err()
        .expect("unknown class");
    let msg = e.to_string();
    assert!(
        msg.contains("key.converter")
            && msg.contains("AvroConverter")
            && msg.contains("org.apache.kafka.connect.json.JsonConverter")
            && msg.contains("org.apache.kafka.connect.storage.StringConverter"),
        "{msg}"
    );
    let e = converter_from_config("json", &props(&[("schemas.enable", "yes")]), false)
        .err()
        .expect("bad bool");
    assert_eq!(e.key, "value.converter.schemas.enable");
    let e = converter_from_config("json", &props(&[("decimal.format", "hex")]), false)
        .err()
        .expect("bad format");
    assert!(e.to_string().contains("BASE64"), "{e}");
    let c = converter_from_config(
        "json",
        &props(&[
            ("schemas.enable", "FALSE"),
            ("decimal.format", "numeric"),
            ("schemas.cache.size", "5"),
        ]),
        false,
    )
    .expect("valid");
    assert_eq!(
        out(&*c, Some(&prim::int64()), Some(&Value::Int64(3))).as_deref(),
        Some("3")
    );
    let e = converter_from_config("string", &props(&[("converter.encoding", "EBCDIC")]), false)
        .err()
        .expect("bad encoding");
    assert_eq!(e.key, "value.converter.converter.encoding");
}

#[test]
fn string_converter_prints_java_to_string() {
    let c = StringConverter::new(StringEncoding::Utf8);
    let st = SchemaBuilder::structure()
        .name("r")
        .field("id", prim::int64())
        .field("n", prim::opt_string())
        .field("f", prim::of(SchemaType::Float64, false))
        .field("tags", SchemaBuilder::array(prim::string()).build())
        .build();
    let v = Value::Struct(vec![
        Value::Int64(1),
        Value::Null,
        Value::Float64(1e7),
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
    ]);
    assert_eq!(
        out(&c, Some(&st), Some(&v)).as_deref(),
        Some("Struct{id=1,f=1.0E7,tags=[a, b]}")
    );
    assert_eq!(
        out(&c, None, Some(&Value::String("héllo".into()))).as_deref(),
        Some("héllo")
    );
    assert_eq!(out(&c, None, None), None);
    let (s, v) = c.to_connect("t", Some("héllo".as_bytes())).expect("reads");
    assert_eq!(s.as_deref(), Some(&*prim::opt_string()));
    assert_eq!(v, Some(Value::String("héllo".into())));
    let (s, v) = c.to_connect("t", None).expect("null");
    assert!(s.is_some() && v.is_none());
    let latin = StringConverter::new(StringEncoding::Latin1);
    assert_eq!(
        latin
            .from_connect("t", None, Some(&Value::String("é€".into())))
            .expect("ok"),
        Some(vec![0xe9, b'?'])
    );
}

// ---------------------------------------------------------------------------
// Property tests

fn minimal_twos_complement(v: i128) -> Vec<u8> {
    let b = v.to_be_bytes();
    let mut start = 0;
    while start + 1 < b.len()
        && ((b[start] == 0 && b[start + 1] & 0x80 == 0)
            || (b[start] == 0xff && b[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    b[start..].to_vec()
}

fn no_nan_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan())
}

fn no_nan_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN never equals itself", |f| !f.is_nan())
}

/// A non-null value for `schema`.
fn arb_present(schema: &SchemaRef) -> BoxedStrategy<Value> {
    match schema.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => {
            return any::<i128>()
                .prop_map(|v| Value::Bytes(minimal_twos_complement(v)))
                .boxed()
        }
        Some("org.apache.kafka.connect.data.Date" | "org.apache.kafka.connect.data.Time") => {
            return any::<i32>().prop_map(Value::Int32).boxed()
        }
        _ => {}
    }
    match schema.ty {
        SchemaType::Int8 => any::<i8>().prop_map(Value::Int8).boxed(),
        SchemaType::Int16 => any::<i16>().prop_map(Value::Int16).boxed(),
        SchemaType::Int32 => any::<i32>().prop_map(Value::Int32).boxed(),
        SchemaType::Int64 => any::<i64>().prop_map(Value::Int64).boxed(),
        SchemaType::Float32 => no_nan_f32().prop_map(Value::Float32).boxed(),
        SchemaType::Float64 => no_nan_f64().prop_map(Value::Float64).boxed(),
        SchemaType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        SchemaType::String => any::<String>().prop_map(Value::String).boxed(),
        SchemaType::Bytes => any::<Vec<u8>>().prop_map(Value::Bytes).boxed(),
        SchemaType::Array => {
            let items = Arc::clone(schema.items.as_ref().expect("items"));
            prop::collection::vec(arb_value(&items), 0..4)
                .prop_map(Value::Array)
                .boxed()
        }
        SchemaType::Map => {
            let keys = Arc::clone(schema.keys.as_ref().expect("keys"));
            let values = Arc::clone(schema.items.as_ref().expect("values"));
            prop::collection::vec((arb_present(&keys), arb_value(&values)), 0..4)
                .prop_map(|pairs| {
                    // Distinct keys, as a Java map has.
                    let mut seen: Vec<Value> = Vec::new();
                    let mut out = Vec::new();
                    for (k, v) in pairs {
                        if !seen.contains(&k) {
                            seen.push(k.clone());
                            out.push((k, v));
                        }
                    }
                    Value::Map(out)
                })
                .boxed()
        }
        SchemaType::Struct => schema
            .fields
            .iter()
            .map(|f| arb_value(&f.schema))
            .collect::<Vec<_>>()
            .prop_map(Value::Struct)
            .boxed(),
    }
}

fn arb_value(schema: &SchemaRef) -> BoxedStrategy<Value> {
    if schema.optional {
        prop_oneof![1 => Just(Value::Null), 3 => arb_present(schema)].boxed()
    } else {
        arb_present(schema)
    }
}

fn arb_leaf_schema() -> BoxedStrategy<SchemaRef> {
    let plain = (
        prop::sample::select(vec![
            SchemaType::Int8,
            SchemaType::Int16,
            SchemaType::Int32,
            SchemaType::Int64,
            SchemaType::Float32,
            SchemaType::Float64,
            SchemaType::Boolean,
            SchemaType::String,
            SchemaType::Bytes,
        ]),
        any::<bool>(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of("[ -~]{0,8}"),
        prop::collection::vec(("[a-z.]{1,6}", any::<String>()), 0..3),
    )
        .prop_map(|(ty, optional, name, version, doc, params)| {
            let mut b = SchemaBuilder::new(ty).optional_if(optional);
            if let Some(n) = name {
                b = b.name(n);
            }
            if let Some(v) = version {
                b = b.version(v);
            }
            if let Some(d) = doc {
                b = b.doc(d);
            }
            let mut keys: Vec<String> = Vec::new();
            for (k, v) in params {
                if !keys.contains(&k) {
                    keys.push(k.clone());
                    b = b.parameter(k, v);
                }
            }
            b.build()
        });
    let logical = (0..4usize, -5i32..20, any::<bool>()).prop_map(|(kind, scale, optional)| {
        let b = match kind {
            0 => SchemaBuilder::new(SchemaType::Bytes)
                .name("org.apache.kafka.connect.data.Decimal")
                .version(1)
                .parameter("scale", scale.to_string()),
            1 => SchemaBuilder::new(SchemaType::Int32)
                .name("org.apache.kafka.connect.data.Date")
                .version(1),
            2 => SchemaBuilder::new(SchemaType::Int32)
                .name("org.apache.kafka.connect.data.Time")
                .version(1),
            _ => SchemaBuilder::new(SchemaType::Int64)
                .name("org.apache.kafka.connect.data.Timestamp")
                .version(1),
        };
        b.optional_if(optional).build()
    });
    let base = prop_oneof![3 => plain, 1 => logical].boxed();
    // Some schemas carry a default value.
    base.prop_flat_map(|s| {
        let with_default = arb_present(&s).prop_map({
            let s = Arc::clone(&s);
            move |d| {
                let mut copy: Schema = (*s).clone();
                copy.default = Some(d);
                Arc::new(copy)
            }
        });
        prop_oneof![3 => Just(s), 1 => with_default]
    })
    .boxed()
}

fn arb_schema() -> impl Strategy<Value = SchemaRef> {
    arb_leaf_schema().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            (inner.clone(), any::<bool>())
                .prop_map(|(i, o)| SchemaBuilder::array(i).optional_if(o).build()),
            (
                prop::sample::select(vec![
                    SchemaType::String,
                    SchemaType::Int32,
                    SchemaType::Int64
                ]),
                inner.clone(),
                any::<bool>()
            )
                .prop_map(|(k, v, o)| SchemaBuilder::map(prim::of(k, false), v)
                    .optional_if(o)
                    .build()),
            (
                prop::collection::vec((any::<String>(), inner), 0..5),
                proptest::option::of(any::<String>()),
                any::<bool>()
            )
                .prop_map(|(fields, name, o)| {
                    let mut b = SchemaBuilder::structure().optional_if(o);
                    if let Some(n) = name {
                        b = b.name(n);
                    }
                    let mut names: Vec<String> = Vec::new();
                    for (n, s) in fields {
                        if !names.contains(&n) {
                            names.push(n.clone());
                            b = b.field(n, s);
                        }
                    }
                    b.build()
                }),
        ]
    })
}

/// What reading back gives: nulls become defaults when replacement is on.
fn expected(schema: &Schema, v: &Value, replace: bool) -> Value {
    match v {
        Value::Null => match (&schema.default, replace) {
            (Some(d), true) => d.clone(),
            _ => Value::Null,
        },
        Value::Array(items) => {
            let s = schema.items.as_deref().expect("items");
            Value::Array(items.iter().map(|i| expected(s, i, replace)).collect())
        }
        Value::Map(entries) => {
            let ks = schema.keys.as_deref().expect("keys");
            let vs = schema.items.as_deref().expect("values");
            Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (expected(ks, k, replace), expected(vs, v, replace)))
                    .collect(),
            )
        }
        Value::Struct(values) => Value::Struct(
            schema
                .fields
                .iter()
                .zip(values)
                .map(|(f, v)| expected(&f.schema, v, replace))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_with_schemas(
        (schema, value) in arb_schema().prop_flat_map(|s| {
            let v = arb_value(&s);
            (Just(s), v)
        }),
        numeric in any::<bool>(),
        replace in any::<bool>(),
    ) {
        let c = conv(true, if numeric { DecimalFormat::Numeric } else { DecimalFormat::Base64 }, replace);
        let bytes = c.from_connect("t", Some(&schema), Some(&value));
        // Without replacement a required field whose value is null but
        // that has a default cannot be written; otherwise it must succeed.
        let bytes = match bytes {
            Ok(b) => b.expect("a schema gives bytes"),
            Err(e) => {
                prop_assert!(!replace && e.to_string().contains("required"), "{e}");
                return Ok(());
            }
        };
        // What we write is valid JSON.
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
        let (s2, v2) = c.to_connect("t", Some(&bytes)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s2 = s2.expect("schema");
        prop_assert_eq!(&*s2, &*schema);
        let want = expected(&schema, &value, replace);
        prop_assert_eq!(v2.clone().unwrap_or(Value::Null), want);
        // Read again, the schema is known by its bytes: the same reading,
        // sharing the schema.
        let (s3, v3) = c.to_connect("t", Some(&bytes)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s3 = s3.expect("schema");
        prop_assert!(Arc::ptr_eq(&s2, &s3));
        prop_assert_eq!(v3, v2);
        // Writing what we read gives the same bytes (through a fresh Arc,
        // so the schema cache is exercised on a different address).
        let again = c.from_connect("t", Some(&s2), Some(&expected(&schema, &value, replace)))
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .expect("bytes");
        if replace {
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in any::<Vec<u8>>(), schemas in any::<bool>()) {
        let c = conv(schemas, DecimalFormat::Base64, true);
        let _ = c.to_connect("t", Some(&data));
        let s = StringConverter::new(StringEncoding::Utf8);
        let _ = s.to_connect("t", Some(&data));
    }

    #[test]
    fn corrupted_records_never_panic(
        (schema, value) in arb_schema().prop_flat_map(|s| {
            let v = arb_value(&s);
            (Just(s), v)
        }),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let c = conv(true, DecimalFormat::Numeric, true);
        if let Ok(Some(mut bytes)) = c.from_connect("t", Some(&schema), Some(&value)) {
            // Its schema known, a corrupted record reads as it reads fresh.
            let _ = c.to_connect("t", Some(&bytes));
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let warm = c.to_connect("t", Some(&bytes));
            let fresh = conv(true, DecimalFormat::Numeric, true).to_connect("t", Some(&bytes));
            match (warm, fresh) {
                (Ok(w), Ok(f)) => prop_assert_eq!(w, f),
                (Err(w), Err(f)) => prop_assert_eq!(w.message, f.message),
                (w, f) => prop_assert!(false, "warm {:?}, fresh {:?}", w, f),
            }
            let _ = conv(false, DecimalFormat::Base64, false).to_connect("t", Some(&bytes));
        }
    }

    #[test]
    fn doubles_parse_back_exactly(v in no_nan_f64()) {
        let t = javafmt::double_to_string(v);
        let back: f64 = t.parse().map_err(|e| TestCaseError::fail(format!("{t}: {e}")))?;
        prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", t);
    }

    #[test]
    fn floats_parse_back_exactly(v in no_nan_f32()) {
        let t = javafmt::float_to_string(v);
        let back: f32 = t.parse().map_err(|e| TestCaseError::fail(format!("{t}: {e}")))?;
        prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", t);
    }
}

/// A record whose schema was read before has only its payload parsed: it
/// reads exactly as a first reading does (same schema, shared; same value;
/// same error), whatever the spacing, escapes or member order.
#[test]
fn a_schema_read_before_is_shared_and_reads_the_same() {
    let records: &[&str] = &[
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":true,"field":"n\"a}m{e"}],"optional":false,"name":"a.b.Value"},"payload":{"id":1,"n\"a}m{e":"x"}}"#,
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":true,"field":"n\"a}m{e"}],"optional":false,"name":"a.b.Value"},"payload":{"id":2,"n\"a}m{e":"y \"}\\ z"}}"#,
        r#" { "schema" : {"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":true,"field":"n\"a}m{e"}],"optional":false,"name":"a.b.Value"} , "payload" : {"id":3,"n\"a}m{e":null} } trailing"#,
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":true,"field":"n\"a}m{e"}],"optional":false,"name":"a.b.Value"},"payload":null}"#,
        r#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"},{"type":"string","optional":true,"field":"n\"a}m{e"}],"optional":false,"name":"a.b.Value"},"payload":{"id":"not a number"}}"#,
        r#"{"payload":{"id":4},"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}],"optional":false}}"#,
        r#"{"schema":null,"payload":{"a":[1,2.5,{"b":"c"}]}}"#,
        r#"{"schema":null,"payload":{"a":[1,2.5,{"b":"c"}]}}"#,
        r#"{"schema":{"type":"int64","optional":false},"payload":12345678901}"#,
        r#"{"schema":{"type":"int64","optional":false},"payload":12345678901,"extra":1}"#,
        r#"{"schema":{"type":"int64","optional":false},"payload":}"#,
    ];
    let fresh =
        |r: &str| conv(true, DecimalFormat::Base64, true).to_connect("t", Some(r.as_bytes()));
    let warm = conv(true, DecimalFormat::Base64, true);
    for r in records {
        warm.to_connect("t", Some(r.as_bytes())).ok();
    }
    let mut shared = 0;
    for r in records {
        let first = fresh(r);
        let again = warm.to_connect("t", Some(r.as_bytes()));
        match (&first, &again) {
            (Ok((s1, v1)), Ok((s2, v2))) => {
                assert_eq!(s1, s2, "schema of {r}");
                assert_eq!(v1, v2, "value of {r}");
                let once = warm.to_connect("t", Some(r.as_bytes())).expect("reads");
                if let (Some(a), Some(b)) = (&once.0, s2) {
                    shared += usize::from(Arc::ptr_eq(a, b));
                }
            }
            (Err(e1), Err(e2)) => assert_eq!(e1.message, e2.message, "error of {r}"),
            _ => panic!("{r}: first {first:?}, again {again:?}"),
        }
    }
    // The records read without error whose schema comes first: the three
    // structs and the int64 (a null payload for a required struct is an
    // error; a payload before the schema is read whole each time).
    assert_eq!(shared, 4);
}
