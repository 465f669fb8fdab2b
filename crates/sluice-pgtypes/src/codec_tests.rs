//! Codec tests against the values Debezium's own tests expect
//! (`AbstractRecordsProducerTest`, `PostgresValueConverterIT`).

use sluice_core::schema::SchemaType;
use sluice_core::value::Value;

use crate::datetime::days_from_civil;
use crate::registry::{oid, TypeInfo, TypeKind};
use crate::*;

fn codec_with(oid: u32, typmod: i32, modes: &TypeModes) -> ColumnCodec {
    ColumnCodec::new(&TypeRegistry::new(), oid, typmod, true, modes)
}

fn codec(oid: u32, typmod: i32) -> ColumnCodec {
    codec_with(oid, typmod, &TypeModes::default())
}

fn dec(oid: u32, typmod: i32, text: &str) -> Value {
    codec(oid, typmod).decode_text(text.as_bytes()).unwrap()
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// numeric(p,s) type modifier.
fn numeric_mod(p: i32, s: i32) -> i32 {
    ((p << 16) | s) + 4
}

fn params(c: &ColumnCodec) -> Vec<(String, String)> {
    c.schema().parameters.clone()
}

#[test]
fn booleans_and_bits() {
    assert_eq!(dec(oid::BOOL, -1, "t"), Value::Bool(true));
    assert_eq!(dec(oid::BOOL, -1, "f"), Value::Bool(false));
    let bit1 = codec(oid::BIT, 1);
    assert_eq!(bit1.schema().ty, SchemaType::Boolean);
    assert_eq!(bit1.decode_text(b"1").unwrap(), Value::Bool(true));
    assert_eq!(bit1.decode_text(b"0").unwrap(), Value::Bool(false));
    // bitbin_table expectations.
    let bs = codec(oid::BIT, 2);
    assert_eq!(bs.schema().name_str(), "io.debezium.data.Bits");
    assert_eq!(bs.schema().version, Some(1));
    assert_eq!(params(&bs), vec![("length".to_string(), "2".to_string())]);
    assert_eq!(bs.decode_text(b"11").unwrap(), Value::Bytes(vec![3]));
    assert_eq!(dec(oid::BIT, 7, "1000000"), Value::Bytes(vec![64]));
    assert_eq!(dec(oid::BIT, 2, "00"), Value::Bytes(vec![]));
    assert_eq!(
        dec(oid::BIT, 24, "000000110000001000000001"),
        Value::Bytes(vec![1, 2, 3])
    );
    let bvl = format!("1{}", "0".repeat(63));
    assert_eq!(
        dec(oid::BIT, 64, &bvl),
        Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 0x80])
    );
    let unlimited = codec(oid::VARBIT, -1);
    assert_eq!(unlimited.schema().parameter("length"), Some("2147483647"));
    assert_eq!(
        unlimited.decode_text(b"101").unwrap(),
        Value::Bytes(vec![5])
    );
    assert_eq!(
        unlimited
            .decode_text(b"111011010001000110000001000000001")
            .unwrap(),
        Value::Bytes(vec![1, 2, 35, 0xda, 1])
    );
}

#[test]
fn integers_and_floats() {
    assert_eq!(dec(oid::INT2, -1, "-32768"), Value::Int16(-32768));
    assert_eq!(dec(oid::INT4, -1, "123456"), Value::Int32(123456));
    assert_eq!(
        dec(oid::INT8, -1, "1234567890123"),
        Value::Int64(1234567890123)
    );
    assert_eq!(dec(oid::OID, -1, "4000000000"), Value::Int64(4_000_000_000));
    assert_eq!(codec(oid::OID, -1).schema().ty, SchemaType::Int64);
    assert_eq!(dec(oid::FLOAT4, -1, "3.3"), Value::Float32(3.3));
    assert_eq!(dec(oid::FLOAT8, -1, "4.44"), Value::Float64(4.44));
    assert_eq!(dec(oid::FLOAT8, -1, "1e+20"), Value::Float64(1e20));
    assert_eq!(
        dec(oid::FLOAT4, -1, "Infinity"),
        Value::Float32(f32::INFINITY)
    );
    assert_eq!(
        dec(oid::FLOAT8, -1, "-Infinity"),
        Value::Float64(f64::NEG_INFINITY)
    );
    match dec(oid::FLOAT8, -1, "NaN") {
        Value::Float64(f) => assert!(f.is_nan()),
        v => panic!("{v:?}"),
    }
    for bad in ["", "x", "1.5", "99999"] {
        assert!(
            codec(oid::INT2, -1).decode_text(bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
    assert!(codec(oid::FLOAT8, -1).decode_text(b"inf").is_err());
}

#[test]
fn numerics_precise() {
    let d = codec(oid::NUMERIC, numeric_mod(3, 2));
    assert_eq!(
        d.schema().name_str(),
        "org.apache.kafka.connect.data.Decimal"
    );
    assert_eq!(d.schema().version, Some(1));
    assert_eq!(
        params(&d),
        vec![
            ("scale".to_string(), "2".to_string()),
            ("connect.decimal.precision".to_string(), "3".to_string())
        ]
    );
    assert_eq!(d.decode_text(b"1.10").unwrap(), Value::Bytes(vec![110]));
    // Unscaled value rescaled to the column's scale (1.1 -> 1.10).
    assert_eq!(d.decode_text(b"1.1").unwrap(), Value::Bytes(vec![110]));
    assert_eq!(d.decode_text(b"-1.28").unwrap(), Value::Bytes(vec![0x80]));
    assert!(d.decode_text(b"NaN").is_err());
    assert!(d.decode_text(b"Infinity").is_err());
    assert!(d.decode_text(b"1.2.3").is_err());
    let n = codec(oid::NUMERIC, numeric_mod(6, 4));
    assert_eq!(
        n.decode_text(b"22.2200").unwrap(),
        Value::Bytes(222200i32.to_be_bytes()[1..].to_vec())
    );

    let vs = codec(oid::NUMERIC, -1);
    assert_eq!(
        vs.schema().name_str(),
        "io.debezium.data.VariableScaleDecimal"
    );
    assert_eq!(vs.schema().doc.as_deref(), Some("Variable scaled decimal"));
    assert_eq!(vs.schema().fields[0].name, "scale");
    assert_eq!(vs.schema().fields[1].name, "value");
    assert_eq!(
        vs.decode_text(b"10.1111").unwrap(),
        Value::Struct(vec![Value::Int32(4), Value::Bytes(vec![0x01, 0x8a, 0xf7])])
    );
    assert_eq!(
        vs.decode_text(b"22").unwrap(),
        Value::Struct(vec![Value::Int32(0), Value::Bytes(vec![22])])
    );
    // Trailing zeros are stripped, but the scale never goes negative.
    assert_eq!(
        vs.decode_text(b"100.500").unwrap(),
        Value::Struct(vec![Value::Int32(1), Value::Bytes(vec![0x03, 0xed])])
    );
    assert_eq!(
        vs.decode_text(b"100").unwrap(),
        Value::Struct(vec![Value::Int32(0), Value::Bytes(vec![100])])
    );
    assert!(vs.decode_text(b"NaN").is_err());
}

#[test]
fn numerics_double_and_string() {
    let string = TypeModes {
        decimal: DecimalMode::String,
        ..TypeModes::default()
    };
    let double = TypeModes {
        decimal: DecimalMode::Double,
        ..TypeModes::default()
    };
    let d = codec_with(oid::NUMERIC, numeric_mod(3, 2), &string);
    assert_eq!(d.schema().ty, SchemaType::String);
    assert!(d.schema().name.is_none());
    assert_eq!(d.decode_text(b"1.1").unwrap(), s("1.10"));
    assert_eq!(d.decode_text(b"NaN").unwrap(), s("NAN"));
    assert_eq!(d.decode_text(b"Infinity").unwrap(), s("POSITIVE_INFINITY"));
    assert_eq!(d.decode_text(b"-Infinity").unwrap(), s("NEGATIVE_INFINITY"));
    let vs = codec_with(oid::NUMERIC, -1, &string);
    assert_eq!(vs.decode_text(b"10.1111").unwrap(), s("10.1111"));
    assert_eq!(vs.decode_text(b"22.2200").unwrap(), s("22.2200"));

    let dd = codec_with(oid::NUMERIC, -1, &double);
    assert_eq!(dd.schema().ty, SchemaType::Float64);
    assert_eq!(dd.decode_text(b"22.2222").unwrap(), Value::Float64(22.2222));
    match dd.decode_text(b"NaN").unwrap() {
        Value::Float64(f) => assert!(f.is_nan()),
        v => panic!("{v:?}"),
    }
    assert_eq!(
        dd.decode_text(b"-Infinity").unwrap(),
        Value::Float64(f64::NEG_INFINITY)
    );
}

#[test]
fn money() {
    let m = codec(oid::MONEY, -1);
    assert_eq!(
        m.schema().name_str(),
        "org.apache.kafka.connect.data.Decimal"
    );
    // money carries the scale only, no precision parameter.
    assert_eq!(params(&m), vec![("scale".to_string(), "2".to_string())]);
    assert_eq!(
        m.decode_text(b"$1,234.11").unwrap(),
        Value::Bytes(123411i32.to_be_bytes()[1..].to_vec())
    );
    assert_eq!(
        m.decode_text(b"-$1,234.11").unwrap(),
        Value::Bytes((-123411i32).to_be_bytes()[1..].to_vec())
    );
    assert_eq!(m.decode_text(b"-$1.00").unwrap(), Value::Bytes(vec![0x9c]));
    assert!(m.decode_text(b"1.00").is_err());
    assert!(m.decode_text(b"$").is_err());
    let string = TypeModes {
        decimal: DecimalMode::String,
        ..TypeModes::default()
    };
    let ms = codec_with(oid::MONEY, -1, &string);
    assert_eq!(ms.decode_text(b"-$1,234.11").unwrap(), s("-1234.11"));
    let double = TypeModes {
        decimal: DecimalMode::Double,
        ..TypeModes::default()
    };
    let md = codec_with(oid::MONEY, -1, &double);
    assert_eq!(
        md.decode_text(b"$1,234.11").unwrap(),
        Value::Float64(1234.11)
    );
    let digits = TypeModes {
        money_fraction_digits: 1,
        ..TypeModes::default()
    };
    let m1 = codec_with(oid::MONEY, -1, &digits);
    assert_eq!(m1.decode_text(b"$1.25").unwrap(), Value::Bytes(vec![13]));
}

#[test]
fn strings_and_named_strings() {
    for o in [
        oid::TEXT,
        oid::VARCHAR,
        oid::BPCHAR,
        oid::CHAR,
        oid::NAME,
        oid::INET,
        oid::CIDR,
        oid::MACADDR,
        oid::MACADDR8,
        oid::INT4RANGE,
        oid::TSTZRANGE,
    ] {
        let c = codec(o, -1);
        assert_eq!(c.schema().ty, SchemaType::String, "{o}");
        assert!(c.schema().name.is_none(), "{o}");
        assert!(!c.debezium_omits(), "{o}");
    }
    assert_eq!(dec(oid::BPCHAR, 8, "cdef    "), s("cdef    "));
    assert_eq!(dec(oid::VARCHAR, -1, "\u{17e}\u{161}"), s("\u{17e}\u{161}"));
    for (o, name) in [
        (oid::JSON, "io.debezium.data.Json"),
        (oid::JSONB, "io.debezium.data.Json"),
        (oid::XML, "io.debezium.data.Xml"),
        (oid::UUID, "io.debezium.data.Uuid"),
    ] {
        let c = codec(o, -1);
        assert_eq!(c.schema().name_str(), name);
        assert_eq!(c.schema().version, Some(1));
    }
    assert_eq!(
        dec(oid::UUID, -1, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(
        dec(oid::JSONB, -1, r#"{"bar": "baz"}"#),
        s(r#"{"bar": "baz"}"#)
    );
    assert!(codec(oid::TEXT, -1).decode_text(&[0xff, 0xfe]).is_err());
}

#[test]
fn dates() {
    let d = codec(oid::DATE, -1);
    assert_eq!(d.schema().name_str(), "io.debezium.time.Date");
    assert_eq!(d.schema().ty, SchemaType::Int32);
    assert_eq!(d.decode_text(b"2016-11-04").unwrap(), Value::Int32(17109));
    assert_eq!(
        d.decode_text(b"0001-12-31 BC").unwrap(),
        Value::Int32(days_from_civil(0, 12, 31) as i32)
    );
    assert_eq!(
        d.decode_text(b"10000-01-01").unwrap(),
        Value::Int32(days_from_civil(10000, 1, 1) as i32)
    );
    // Debezium's stand-ins for the infinities are the dates -5877611-06-21
    // and -5877611-06-22 (PostgresValueConverter), so both come out as
    // large negative day numbers, +infinity the smaller one.
    assert_eq!(
        d.decode_text(b"infinity").unwrap(),
        Value::Int32(-2_147_472_692)
    );
    assert_eq!(
        d.decode_text(b"-infinity").unwrap(),
        Value::Int32(-2_147_472_691)
    );
    let connect = TypeModes {
        time_precision: TimePrecisionMode::Connect,
        ..TypeModes::default()
    };
    let dc = codec_with(oid::DATE, -1, &connect);
    assert_eq!(dc.schema().name_str(), "org.apache.kafka.connect.data.Date");
    assert_eq!(dc.decode_text(b"2016-11-04").unwrap(), Value::Int32(17109));
}

#[test]
fn times() {
    let t = codec(oid::TIME, -1);
    assert_eq!(t.schema().name_str(), "io.debezium.time.MicroTime");
    assert_eq!(
        t.decode_text(b"13:51:30").unwrap(),
        Value::Int64(49_890_000_000)
    );
    assert_eq!(
        t.decode_text(b"24:00:00").unwrap(),
        Value::Int64(86_400_000_000)
    );
    let tp = codec(oid::TIME, 3);
    assert_eq!(tp.schema().name_str(), "io.debezium.time.Time");
    assert_eq!(tp.schema().ty, SchemaType::Int32);
    assert_eq!(
        tp.decode_text(b"13:51:30.123").unwrap(),
        Value::Int32(49_890_123)
    );
    let atm = TypeModes {
        time_precision: TimePrecisionMode::AdaptiveTimeMicroseconds,
        ..TypeModes::default()
    };
    assert_eq!(
        codec_with(oid::TIME, 3, &atm).schema().name_str(),
        "io.debezium.time.MicroTime"
    );
    let connect = TypeModes {
        time_precision: TimePrecisionMode::Connect,
        ..TypeModes::default()
    };
    let tc = codec_with(oid::TIME, -1, &connect);
    assert_eq!(tc.schema().name_str(), "org.apache.kafka.connect.data.Time");
    assert_eq!(
        tc.decode_text(b"13:51:30.123456").unwrap(),
        Value::Int32(49_890_123)
    );
    assert!(t.decode_text(b"25:00:00").is_err());

    let tz = codec(oid::TIMETZ, -1);
    assert_eq!(tz.schema().name_str(), "io.debezium.time.ZonedTime");
    assert_eq!(
        tz.decode_text(b"13:51:30.123789+02").unwrap(),
        s("11:51:30.123789Z")
    );
    assert_eq!(
        tz.decode_text(b"13:51:30.123+02").unwrap(),
        s("11:51:30.123Z")
    );
    assert_eq!(tz.decode_text(b"12:51:03+01").unwrap(), s("11:51:03Z"));
}

#[test]
fn timestamps() {
    let ts = codec(oid::TIMESTAMP, -1);
    assert_eq!(ts.schema().name_str(), "io.debezium.time.MicroTimestamp");
    assert_eq!(
        ts.decode_text(b"2016-11-04 13:51:30.123456").unwrap(),
        Value::Int64(1_478_267_490_123_456)
    );
    assert_eq!(
        ts.decode_text(b"1936-10-25 22:10:12.608").unwrap(),
        Value::Int64(-1_047_174_587_392_000)
    );
    assert_eq!(
        ts.decode_text(b"294247-01-01 23:59:59.999999").unwrap(),
        Value::Int64(9_223_371_331_200_000_000 - 1)
    );
    assert_eq!(
        ts.decode_text(b"infinity").unwrap(),
        Value::Int64(9_223_372_036_825_200_000)
    );
    assert_eq!(
        ts.decode_text(b"-infinity").unwrap(),
        Value::Int64(-9_223_372_036_832_400_000)
    );
    let ms = codec(oid::TIMESTAMP, 3);
    assert_eq!(ms.schema().name_str(), "io.debezium.time.Timestamp");
    assert_eq!(
        ms.decode_text(b"2016-11-04 13:51:30.123").unwrap(),
        Value::Int64(1_478_267_490_123)
    );
    assert_eq!(
        ms.decode_text(b"21016-11-04 13:51:30.124").unwrap(),
        Value::Int64(days_from_civil(21016, 11, 4) * 86_400_000 + 49_890_124)
    );
    let connect = TypeModes {
        time_precision: TimePrecisionMode::Connect,
        ..TypeModes::default()
    };
    let tc = codec_with(oid::TIMESTAMP, -1, &connect);
    assert_eq!(
        tc.schema().name_str(),
        "org.apache.kafka.connect.data.Timestamp"
    );
    assert_eq!(
        tc.decode_text(b"2016-11-04 13:51:30.123456").unwrap(),
        Value::Int64(1_478_267_490_123)
    );

    let tz = codec(oid::TIMESTAMPTZ, -1);
    assert_eq!(tz.schema().name_str(), "io.debezium.time.ZonedTimestamp");
    assert_eq!(
        tz.decode_text(b"2016-11-04 11:51:30.123456+00").unwrap(),
        s("2016-11-04T11:51:30.123456Z")
    );
    assert_eq!(
        tz.decode_text(b"2016-11-04 13:51:30.123456+02").unwrap(),
        s("2016-11-04T11:51:30.123456Z")
    );
    assert_eq!(
        tz.decode_text(b"21016-11-04 06:51:30+00").unwrap(),
        s("+21016-11-04T06:51:30.000000Z")
    );
    assert_eq!(
        tz.decode_text(b"4714-12-31 23:59:59.999999+00 BC").unwrap(),
        s("-4713-12-31T23:59:59.999999Z")
    );
    assert_eq!(tz.decode_text(b"infinity").unwrap(), s("infinity"));
    assert_eq!(tz.decode_text(b"-infinity").unwrap(), s("-infinity"));
    assert_eq!(
        codec(oid::TIMESTAMPTZ, 0)
            .decode_text(b"2016-11-04 11:51:30+00")
            .unwrap(),
        s("2016-11-04T11:51:30Z")
    );
    assert_eq!(
        codec(oid::TIMESTAMPTZ, 3)
            .decode_text(b"2016-11-04 11:51:30.1+00")
            .unwrap(),
        s("2016-11-04T11:51:30.100Z")
    );
}

#[test]
fn intervals() {
    let i = codec(oid::INTERVAL, -1);
    assert_eq!(i.schema().name_str(), "io.debezium.time.MicroDuration");
    assert_eq!(i.schema().ty, SchemaType::Int64);
    assert_eq!(
        i.decode_text(b"P1Y2M3DT4H5M6.78S").unwrap(),
        Value::Int64(37_091_106_780_000)
    );
    assert_eq!(i.decode_text(b"PT0S").unwrap(), Value::Int64(0));
    let string = TypeModes {
        interval: IntervalMode::String,
        ..TypeModes::default()
    };
    let is = codec_with(oid::INTERVAL, -1, &string);
    assert_eq!(is.schema().name_str(), "io.debezium.time.Interval");
    assert_eq!(
        is.decode_text(b"P1Y2M3DT4H5M6.78S").unwrap(),
        s("P1Y2M3DT4H5M6.78S")
    );
    assert!(i.decode_text(b"1 year").is_err());
}

#[test]
fn bytea_modes() {
    assert_eq!(
        dec(oid::BYTEA, -1, "\\x010203"),
        Value::Bytes(vec![1, 2, 3])
    );
    assert_eq!(codec(oid::BYTEA, -1).schema().ty, SchemaType::Bytes);
    let expect = [
        (BinaryMode::Base64, "AQID/w=="),
        (BinaryMode::Base64UrlSafe, "AQID_w=="),
        (BinaryMode::Hex, "010203ff"),
    ];
    for (mode, want) in expect {
        let m = TypeModes {
            binary: mode,
            ..TypeModes::default()
        };
        let c = codec_with(oid::BYTEA, -1, &m);
        assert_eq!(c.schema().ty, SchemaType::String);
        assert_eq!(c.decode_text(b"\\x010203FF").unwrap(), s(want));
    }
    assert!(codec(oid::BYTEA, -1).decode_text(b"\\x0").is_err());
    assert!(codec(oid::BYTEA, -1).decode_text(b"abc").is_err());
}

#[test]
fn points() {
    let p = codec(oid::POINT, -1);
    let sch = p.schema();
    assert_eq!(sch.name_str(), "io.debezium.data.geometry.Point");
    assert_eq!(sch.doc.as_deref(), Some("Geometry (POINT)"));
    let names: Vec<&str> = sch.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["x", "y", "wkb", "srid"]);
    assert!(!sch.fields[0].schema.optional);
    assert!(sch.fields[2].schema.optional);
    let mut wkb = vec![1, 1, 0, 0, 0];
    wkb.extend_from_slice(&1.0f64.to_le_bytes());
    wkb.extend_from_slice(&(-2.5f64).to_le_bytes());
    assert_eq!(
        p.decode_text(b"(1,-2.5)").unwrap(),
        Value::Struct(vec![
            Value::Float64(1.0),
            Value::Float64(-2.5),
            Value::Bytes(wkb),
            Value::Null
        ])
    );
    assert!(p.decode_text(b"(1)").is_err());
}

fn registry_with_extras() -> TypeRegistry {
    let mut r = TypeRegistry::new();
    let mut add = |oid, name: &str, kind| {
        r.insert(TypeInfo {
            oid,
            name: name.to_string(),
            namespace: "public".to_string(),
            kind,
        })
    };
    add(
        90001,
        "mood",
        TypeKind::Enum {
            labels: vec!["sad".into(), "ok".into(), "happy".into()],
        },
    );
    add(
        90002,
        "_mood",
        TypeKind::Array {
            elem_oid: 90001,
            delim: b',',
        },
    );
    add(
        90003,
        "money_amount",
        TypeKind::Domain {
            base_oid: oid::NUMERIC,
            base_typmod: numeric_mod(10, 2),
        },
    );
    add(90004, "hstore", TypeKind::Base);
    add(
        90005,
        "_hstore",
        TypeKind::Array {
            elem_oid: 90004,
            delim: b',',
        },
    );
    add(90006, "citext", TypeKind::Base);
    add(90007, "ltree", TypeKind::Base);
    add(
        90008,
        "_ltree",
        TypeKind::Array {
            elem_oid: 90007,
            delim: b',',
        },
    );
    add(
        90009,
        "_money_amount",
        TypeKind::Array {
            elem_oid: 90003,
            delim: b',',
        },
    );
    add(
        90010,
        "posint",
        TypeKind::Domain {
            base_oid: oid::INT4,
            base_typmod: -1,
        },
    );
    add(90011, "geometry", TypeKind::Base);
    add(
        90012,
        "_geometry",
        TypeKind::Array {
            elem_oid: 90011,
            delim: b':',
        },
    );
    add(90013, "geography", TypeKind::Base);
    r
}

#[test]
fn catalog_types() {
    let r = registry_with_extras();
    let m = TypeModes::default();
    let e = ColumnCodec::new(&r, 90001, -1, true, &m);
    assert_eq!(e.schema().name_str(), "io.debezium.data.Enum");
    assert_eq!(e.schema().parameter("allowed"), Some("sad,ok,happy"));
    assert_eq!(e.decode_text(b"ok").unwrap(), s("ok"));
    let ea = ColumnCodec::new(&r, 90002, -1, true, &m);
    let items = ea.schema().items.clone().unwrap();
    assert_eq!(items.name_str(), "io.debezium.data.Enum");
    assert!(!items.optional, "Debezium leaves enum array items required");
    assert_eq!(
        ea.decode_text(b"{sad,happy}").unwrap(),
        Value::Array(vec![s("sad"), s("happy")])
    );
    let d = ColumnCodec::new(&r, 90003, -1, false, &m);
    assert_eq!(d.schema().parameter("scale"), Some("2"));
    assert_eq!(
        d.schema().parameter("connect.decimal.precision"),
        Some("10")
    );
    assert!(!d.schema().optional);
    assert_eq!(
        d.decode_text(b"12.50").unwrap(),
        Value::Bytes(vec![0x04, 0xe2])
    );
    let di = ColumnCodec::new(&r, 90010, -1, true, &m);
    assert_eq!(di.decode_text(b"7").unwrap(), Value::Int32(7));
    assert!(ColumnCodec::new(&r, 90009, -1, true, &m).debezium_omits());
    assert_eq!(
        ColumnCodec::new(&r, 90006, -1, true, &m)
            .decode_text(b"Hello")
            .unwrap(),
        s("Hello")
    );
    let lt = ColumnCodec::new(&r, 90007, -1, true, &m);
    assert_eq!(lt.schema().name_str(), "io.debezium.data.Ltree");
    let lta = ColumnCodec::new(&r, 90008, -1, true, &m);
    assert_eq!(
        lta.decode_text(b"{a.b,c.d}").unwrap(),
        Value::Array(vec![s("a.b"), s("c.d")])
    );
    assert_eq!(lta.decode_text(b"{}").unwrap(), Value::Array(vec![s("")]));

    let h = ColumnCodec::new(&r, 90004, -1, true, &m);
    assert_eq!(h.schema().name_str(), "io.debezium.data.Json");
    assert_eq!(
        h.decode_text(br#""b"=>NULL, "a"=>"1""#).unwrap(),
        s(r#"{"a":"1","b":null}"#)
    );
    assert_eq!(h.decode_text(b"").unwrap(), s("{}"));
    let map = TypeModes {
        hstore: HstoreMode::Map,
        ..TypeModes::default()
    };
    let hm = ColumnCodec::new(&r, 90004, -1, true, &map);
    assert_eq!(hm.schema().ty, SchemaType::Map);
    assert!(!hm.schema().keys.as_ref().unwrap().optional);
    assert!(hm.schema().items.as_ref().unwrap().optional);
    assert_eq!(
        hm.decode_text(br#""a"=>"1", "b"=>NULL"#).unwrap(),
        Value::Map(vec![(s("a"), s("1")), (s("b"), Value::Null)])
    );
}

#[test]
fn unknown_types() {
    // Debezium 3.3+ maps tsvector; 2.7 had no mapping for it.
    let c = codec(3614, -1);
    assert_eq!(c.schema().name_str(), "io.debezium.data.Tsvector");
    assert!(!c.debezium_omits());
    assert_eq!(c.decode_text(b"'a' 'b'").unwrap(), s("'a' 'b'"));
    let r = TypeRegistry::new();
    let v27 = TypeModes {
        format: crate::modes::Format::V2_7,
        ..TypeModes::default()
    };
    let old = ColumnCodec::new(&r, 3614, -1, true, &v27);
    assert!(old.debezium_omits());
    // Left out by default; the bytes of the text with include.unknown.datatypes.
    let u = codec(603, -1); // box
    assert!(u.debezium_omits());
    let included = TypeModes {
        include_unknown: true,
        ..TypeModes::default()
    };
    let b = ColumnCodec::new(&r, 603, -1, true, &included);
    assert!(!b.debezium_omits());
    assert_eq!(b.schema().ty, SchemaType::Bytes);
    // pgjdbc's PGbox prints its coordinates as Java doubles.
    assert_eq!(
        b.decode_text(b"(1,1),(0,0.5)").unwrap(),
        Value::Bytes(b"(1.0,1.0),(0.0,0.5)".to_vec())
    );
    let lsn = ColumnCodec::new(&r, 3220, -1, true, &included);
    assert_eq!(
        lsn.decode_text(b"0/16B3748").unwrap(),
        Value::Bytes(b"0/16B3748".to_vec())
    );
    let u = codec(123_456, -1);
    assert_eq!(u.type_name(), "oid 123456");
}

#[test]
fn arrays() {
    let a = codec(oid::INT4_ARRAY, -1);
    assert_eq!(a.schema().ty, SchemaType::Array);
    assert!(a.schema().optional);
    let items = a.schema().items.clone().unwrap();
    assert_eq!(items.ty, SchemaType::Int32);
    assert!(items.optional);
    assert_eq!(
        a.decode_text(b"{1,2,NULL}").unwrap(),
        Value::Array(vec![Value::Int32(1), Value::Int32(2), Value::Null])
    );
    assert_eq!(a.decode_text(b"{}").unwrap(), Value::Array(vec![]));
    assert_eq!(
        a.decode_text(b"{{1,2},{3,4}}").unwrap(),
        Value::Array(vec![Value::Null, Value::Null])
    );
    assert!(a.decode_text(b"{1,x}").is_err());
    let t = codec(oid::TEXT_ARRAY, -1);
    assert_eq!(
        t.decode_text(br#"{"a b","c\"d",NULL,"NULL"}"#).unwrap(),
        Value::Array(vec![s("a b"), s("c\"d"), Value::Null, s("NULL")])
    );
    let n = codec(oid::NUMERIC_ARRAY, numeric_mod(5, 2));
    assert_eq!(
        n.schema().items.as_ref().unwrap().parameter("scale"),
        Some("2")
    );
    assert_eq!(
        n.decode_text(b"{1.10,2.20}").unwrap(),
        Value::Array(vec![Value::Bytes(vec![110]), Value::Bytes(vec![0, 220])])
    );
    // time[] elements follow time.precision.mode (Debezium 3.1+)...
    let ti = codec(oid::TIME_ARRAY, 3);
    assert_eq!(
        ti.schema().items.as_ref().unwrap().name_str(),
        "io.debezium.time.Time"
    );
    assert_eq!(
        ti.decode_text(b"{00:01:02,01:02:03}").unwrap(),
        Value::Array(vec![Value::Int32(62_000), Value::Int32(3_723_000)])
    );
    // ...and were MicroTime whatever the precision in 2.7.
    let v27 = TypeModes {
        format: crate::modes::Format::V2_7,
        ..TypeModes::default()
    };
    let ti = ColumnCodec::new(&TypeRegistry::new(), oid::TIME_ARRAY, 3, true, &v27);
    assert_eq!(
        ti.schema().items.as_ref().unwrap().name_str(),
        "io.debezium.time.MicroTime"
    );
    assert_eq!(
        ti.decode_text(b"{00:01:02,01:02:03}").unwrap(),
        Value::Array(vec![Value::Int64(62_000_000), Value::Int64(3_723_000_000)])
    );
    let tz = codec(oid::TIMESTAMPTZ_ARRAY, -1);
    assert_eq!(
        tz.decode_text(br#"{"2020-04-01 11:51:02+00"}"#).unwrap(),
        Value::Array(vec![s("2020-04-01T11:51:02.000000Z")])
    );
    let b = codec(oid::BYTEA_ARRAY, -1);
    assert_eq!(
        b.decode_text(br#"{"\\x000102","\\x030405"}"#).unwrap(),
        Value::Array(vec![
            Value::Bytes(vec![0, 1, 2]),
            Value::Bytes(vec![3, 4, 5])
        ])
    );
    assert!(codec(oid::INTERVAL_ARRAY, -1).debezium_omits());
    assert!(!codec(oid::UUID_ARRAY, -1).debezium_omits());
}

#[test]
fn toast_placeholders() {
    let p = "__debezium_unavailable_value";
    assert_eq!(codec(oid::TEXT, -1).unchanged_toast(), s(p));
    assert_eq!(codec(oid::JSONB, -1).unchanged_toast(), s(p));
    assert_eq!(
        codec(oid::BYTEA, -1).unchanged_toast(),
        Value::Bytes(p.as_bytes().to_vec())
    );
    let hex = TypeModes {
        binary: BinaryMode::Hex,
        ..TypeModes::default()
    };
    assert_eq!(codec_with(oid::BYTEA, -1, &hex).unchanged_toast(), s(p));
    let b64 = TypeModes {
        binary: BinaryMode::Base64,
        ..TypeModes::default()
    };
    assert_eq!(
        codec_with(oid::BYTEA, -1, &b64).unchanged_toast(),
        Value::Null
    );
    assert_eq!(
        codec(oid::TEXT_ARRAY, -1).unchanged_toast(),
        Value::Array(vec![s(p)])
    );
    assert_eq!(
        codec(oid::VARCHAR_ARRAY, -1).unchanged_toast(),
        Value::Array(vec![s(p)])
    );
    assert_eq!(
        codec(oid::BYTEA_ARRAY, -1).unchanged_toast(),
        Value::Array(vec![Value::Bytes(p.as_bytes().to_vec())])
    );
    assert_eq!(
        codec(oid::INT4_ARRAY, -1).unchanged_toast(),
        Value::Array(p.bytes().map(|b| Value::Int32(i32::from(b))).collect())
    );
    assert_eq!(
        codec(oid::INT8_ARRAY, -1).unchanged_toast(),
        Value::Array(p.bytes().map(|b| Value::Int64(i64::from(b))).collect())
    );
    match codec(oid::UUID_ARRAY, -1).unchanged_toast() {
        Value::Array(v) => assert_eq!(v, vec![s(&crate::md5::name_uuid_from_bytes(p.as_bytes()))]),
        v => panic!("{v:?}"),
    }
    let r = registry_with_extras();
    let h = ColumnCodec::new(&r, 90004, -1, true, &TypeModes::default());
    assert_eq!(h.unchanged_toast(), s(&format!(r#"{{"{p}":"{p}"}}"#)));
    // Types Debezium has no placeholder for get the text placeholder.
    assert_eq!(codec(oid::INT2_ARRAY, -1).unchanged_toast(), s(p));
}

#[test]
fn errors_name_type_and_text() {
    let e = codec(oid::DATE, -1).decode_text(b"yesterday").unwrap_err();
    assert_eq!(e.type_name(), "date");
    assert_eq!(e.text(), "yesterday");
    let msg = e.to_string();
    assert!(msg.contains("date") && msg.contains("yesterday"), "{msg}");
    let long = "x".repeat(1000);
    let e = codec(oid::INT4, -1)
        .decode_text(long.as_bytes())
        .unwrap_err();
    assert!(e.text().chars().count() <= 65);
}

#[test]
fn postgis() {
    let r = registry_with_extras();
    let m = TypeModes::default();
    let g = ColumnCodec::new(&r, 90011, -1, false, &m);
    assert_eq!(g.schema().name_str(), "io.debezium.data.geometry.Geometry");
    assert_eq!(g.schema().doc.as_deref(), Some("Geometry"));
    // Debezium's Geometry schema is optional whatever the column says.
    assert!(g.schema().optional);
    let hex = "0101000020E6100000000000000000F03F0000000000000040";
    let ewkb = crate::codec::decode_hex(hex.as_bytes()).unwrap();
    assert_eq!(
        g.decode_text(hex.as_bytes()).unwrap(),
        Value::Struct(vec![Value::Bytes(ewkb), Value::Int32(4326)])
    );
    let plain = "0101000000000000000000F03F0000000000000040";
    match g.decode_text(plain.as_bytes()).unwrap() {
        Value::Struct(f) => assert_eq!(f[1], Value::Null),
        v => panic!("{v:?}"),
    }
    assert!(g.decode_text(b"0101").is_err());
    let geog = ColumnCodec::new(&r, 90013, -1, false, &m);
    assert_eq!(
        geog.schema().name_str(),
        "io.debezium.data.geometry.Geography"
    );
    assert!(!geog.schema().optional);
    let ga = ColumnCodec::new(&r, 90012, -1, true, &m);
    assert_eq!(
        ga.decode_text(format!("{{{hex}:{plain}}}").as_bytes())
            .unwrap(),
        Value::Array(vec![
            Value::Struct(vec![
                Value::Bytes(crate::codec::decode_hex(hex.as_bytes()).unwrap()),
                Value::Int32(4326)
            ]),
            Value::Struct(vec![
                Value::Bytes(crate::codec::decode_hex(plain.as_bytes()).unwrap()),
                Value::Null
            ]),
        ])
    );
}
