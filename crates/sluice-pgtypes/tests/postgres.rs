//! Decodes every mapped type as a real PostgreSQL prints it under Sluice's
//! session settings, with the registry loaded from the catalog, and checks
//! Debezium's values and schemas.
//!
//! The text comes from the simple-query protocol, i.e. from each type's
//! output function, as in pgoutput and COPY. (`col::text` is not the same:
//! casts print `true` for booleans, trim `char(n)` and add `/32` to inet.)

use sluice_core::value::Value;
use sluice_pgtypes::{ColumnCodec, DecimalMode, TypeModes, TypeRegistry};

const SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; \
    SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; \
    SET bytea_output = 'hex'; SET lc_monetary = 'C'";

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// Days since the epoch, for readable expectations.
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// One column: name, SQL type, SQL value, expected value, schema name and
/// parameters (None: do not check the name).
struct Col {
    name: &'static str,
    ty: &'static str,
    value: &'static str,
    expect: Value,
    schema: Option<&'static str>,
    params: &'static [(&'static str, &'static str)],
    needs: Option<&'static str>,
}

fn col(name: &'static str, ty: &'static str, value: &'static str, expect: Value) -> Col {
    Col {
        name,
        ty,
        value,
        expect,
        schema: None,
        params: &[],
        needs: None,
    }
}

impl Col {
    fn named(mut self, schema: &'static str) -> Col {
        self.schema = Some(schema);
        self
    }
    fn params(mut self, params: &'static [(&'static str, &'static str)]) -> Col {
        self.params = params;
        self
    }
    fn needs(mut self, ext: &'static str) -> Col {
        self.needs = Some(ext);
        self
    }
}

fn columns() -> Vec<Col> {
    let ts = 1_478_267_490_123_456i64;
    let mut wkb = vec![1u8, 1, 0, 0, 0];
    wkb.extend_from_slice(&1.0f64.to_le_bytes());
    wkb.extend_from_slice(&(-2.5f64).to_le_bytes());
    vec![
        col("c_bool", "bool", "true", Value::Bool(true)),
        col("c_bit1", "bit(1)", "B'1'", Value::Bool(true)),
        col(
            "c_bit12",
            "bit(12)",
            "B'000100000101'",
            Value::Bytes(vec![5, 1]),
        )
        .named("io.debezium.data.Bits")
        .params(&[("length", "12")]),
        col("c_varbit", "varbit", "B'101'", Value::Bytes(vec![5]))
            .named("io.debezium.data.Bits")
            .params(&[("length", "2147483647")]),
        col("c_int2", "int2", "-32768", Value::Int16(-32768)),
        col("c_int4", "int4", "2147483647", Value::Int32(i32::MAX)),
        col(
            "c_int8",
            "int8",
            "-9223372036854775808",
            Value::Int64(i64::MIN),
        ),
        col("c_oid", "oid", "4000000000", Value::Int64(4_000_000_000)),
        col("c_float4", "float4", "3.3", Value::Float32(3.3)),
        col(
            "c_float4_inf",
            "float4",
            "'-Infinity'",
            Value::Float32(f32::NEG_INFINITY),
        ),
        col("c_float8", "float8", "4.44", Value::Float64(4.44)),
        col("c_float8_big", "float8", "1e300", Value::Float64(1e300)),
        col("c_num32", "numeric(3,2)", "1.1", Value::Bytes(vec![110]))
            .named("org.apache.kafka.connect.data.Decimal")
            .params(&[("scale", "2"), ("connect.decimal.precision", "3")]),
        col(
            "c_num_neg",
            "numeric(12,4)",
            "-22.22",
            Value::Bytes(vec![0xfc, 0x9c, 0x08]),
        )
        .params(&[("scale", "4"), ("connect.decimal.precision", "12")]),
        col(
            "c_num_var",
            "numeric",
            "10.1111",
            Value::Struct(vec![Value::Int32(4), Value::Bytes(vec![0x01, 0x8a, 0xf7])]),
        )
        .named("io.debezium.data.VariableScaleDecimal"),
        col(
            "c_num_var_int",
            "numeric",
            "22.000",
            Value::Struct(vec![Value::Int32(0), Value::Bytes(vec![22])]),
        ),
        col(
            "c_money",
            "money",
            "'$1,234.11'",
            Value::Bytes(vec![0x01, 0xe2, 0x13]),
        )
        .named("org.apache.kafka.connect.data.Decimal")
        .params(&[("scale", "2")]),
        col(
            "c_money_neg",
            "money",
            "-1234.11",
            Value::Bytes(vec![0xfe, 0x1d, 0xed]),
        ),
        col("c_char", "char(4)", "'ab'", s("ab  ")),
        col("c_varchar", "varchar(10)", "'žš'", s("žš")),
        col("c_text", "text", "'some text'", s("some text")),
        col("c_name", "name", "'nm'", s("nm")),
        col("c_inet", "inet", "'192.168.0.1'", s("192.168.0.1")),
        col("c_cidr", "cidr", "'10.0.0.0/8'", s("10.0.0.0/8")),
        col(
            "c_macaddr",
            "macaddr",
            "'08:00:2b:01:02:03'",
            s("08:00:2b:01:02:03"),
        ),
        col(
            "c_macaddr8",
            "macaddr8",
            "'08:00:2b:01:02:03:04:05'",
            s("08:00:2b:01:02:03:04:05"),
        ),
        col("c_int4range", "int4range", "'[1,10)'", s("[1,10)")),
        col(
            "c_tstzrange",
            "tstzrange",
            "'[2017-06-05 11:29:12.549426+00,)'",
            s("[\"2017-06-05 11:29:12.549426+00\",)"),
        ),
        col(
            "c_json",
            "json",
            r#"'{"bar": "baz"}'"#,
            s(r#"{"bar": "baz"}"#),
        )
        .named("io.debezium.data.Json"),
        col(
            "c_jsonb",
            "jsonb",
            r#"'{"bar": "baz"}'"#,
            s(r#"{"bar": "baz"}"#),
        )
        .named("io.debezium.data.Json"),
        col(
            "c_xml",
            "xml",
            "'<foo>bar</foo><foo>bar</foo>'",
            s("<foo>bar</foo><foo>bar</foo>"),
        )
        .named("io.debezium.data.Xml"),
        col(
            "c_uuid",
            "uuid",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        )
        .named("io.debezium.data.Uuid"),
        col("c_enum", "mood", "'happy'", s("happy"))
            .named("io.debezium.data.Enum")
            // Debezium lists labels in catalog order: 'meh', added BEFORE 'ok',
            // comes last.
            .params(&[("allowed", "sad,ok,happy,meh")]),
        col(
            "c_domain",
            "money_amount",
            "12.5",
            Value::Bytes(vec![0x04, 0xe2]),
        )
        .named("org.apache.kafka.connect.data.Decimal")
        .params(&[("scale", "2"), ("connect.decimal.precision", "10")]),
        col("c_domain_int", "posint", "7", Value::Int32(7)),
        col(
            "c_point",
            "point",
            "'(1,-2.5)'",
            Value::Struct(vec![
                Value::Float64(1.0),
                Value::Float64(-2.5),
                Value::Bytes(wkb),
                Value::Null,
            ]),
        )
        .named("io.debezium.data.geometry.Point"),
        col("c_date", "date", "'2016-11-04'", Value::Int32(17109)).named("io.debezium.time.Date"),
        col(
            "c_date_bc",
            "date",
            "'0001-12-31 BC'",
            Value::Int32(days(0, 12, 31) as i32),
        ),
        col(
            "c_date_big",
            "date",
            "'10000-01-01'",
            Value::Int32(days(10000, 1, 1) as i32),
        ),
        col(
            "c_date_inf",
            "date",
            "'infinity'",
            Value::Int32(-2_147_472_692),
        ),
        col("c_time", "time", "'13:51:30'", Value::Int64(49_890_000_000))
            .named("io.debezium.time.MicroTime"),
        col(
            "c_time3",
            "time(3)",
            "'13:51:30.123'",
            Value::Int32(49_890_123),
        )
        .named("io.debezium.time.Time"),
        col(
            "c_time24",
            "time",
            "'24:00:00'",
            Value::Int64(86_400_000_000),
        ),
        col(
            "c_timetz",
            "timetz",
            "'13:51:30.123789+02:00'",
            s("11:51:30.123789Z"),
        )
        .named("io.debezium.time.ZonedTime"),
        col(
            "c_ts",
            "timestamp",
            "'2016-11-04T13:51:30.123456'",
            Value::Int64(ts),
        )
        .named("io.debezium.time.MicroTimestamp"),
        col(
            "c_ts3",
            "timestamp(3)",
            "'2016-11-04T13:51:30.123456'",
            Value::Int64(1_478_267_490_123),
        )
        .named("io.debezium.time.Timestamp"),
        col(
            "c_ts_bc",
            "timestamp",
            "'4713-12-31T23:59:59.999999 BC'",
            Value::Int64(days(-4712, 12, 31) * 86_400_000_000 + 86_399_999_999),
        ),
        col(
            "c_ts_inf",
            "timestamp",
            "'infinity'",
            Value::Int64(9_223_372_036_825_200_000),
        ),
        col(
            "c_tstz",
            "timestamptz",
            "'2016-11-04T13:51:30.123456+02:00'",
            s("2016-11-04T11:51:30.123456Z"),
        )
        .named("io.debezium.time.ZonedTimestamp"),
        col(
            "c_tstz_big",
            "timestamptz",
            "'21016-11-04T13:51:30.000000+07:00'",
            s("+21016-11-04T06:51:30.000000Z"),
        ),
        col("c_tstz_inf", "timestamptz", "'-infinity'", s("-infinity")),
        col(
            "c_interval",
            "interval",
            "'P1Y2M3DT4H5M6.78S'",
            Value::Int64(37_091_106_780_000),
        )
        .named("io.debezium.time.MicroDuration"),
        col(
            "c_interval_neg",
            "interval",
            "'-1 day -02:00:00.5'",
            Value::Int64(-(86_400_000_000 + 7_200_500_000)),
        ),
        col(
            "c_bytea",
            "bytea",
            r"'\x010203'",
            Value::Bytes(vec![1, 2, 3]),
        ),
        col(
            "c_hstore",
            "hstore",
            r#"'"b"=>NULL, "a"=>"1"'"#,
            s(r#"{"a":"1","b":null}"#),
        )
        .named("io.debezium.data.Json")
        .needs("hstore"),
        col("c_citext", "citext", "'Hello World'", s("Hello World")).needs("citext"),
        col("c_ltree", "ltree", "'a.b.c'", s("a.b.c"))
            .named("io.debezium.data.Ltree")
            .needs("ltree"),
        col(
            "c_int4_arr",
            "int4[]",
            "'{1,2,NULL}'",
            Value::Array(vec![Value::Int32(1), Value::Int32(2), Value::Null]),
        ),
        col(
            "c_text_arr",
            "text[]",
            r#"E'{"a b","c\\"d",NULL,"",x}'"#,
            Value::Array(vec![s("a b"), s("c\"d"), Value::Null, s(""), s("x")]),
        ),
        col(
            "c_num_arr",
            "numeric(5,2)[]",
            "'{1.1,2.2}'",
            Value::Array(vec![Value::Bytes(vec![110]), Value::Bytes(vec![0, 220])]),
        ),
        col(
            "c_enum_arr",
            "mood[]",
            "'{sad,happy}'",
            Value::Array(vec![s("sad"), s("happy")]),
        ),
        col(
            "c_bytea_arr",
            "bytea[]",
            r"ARRAY['\x000102'::bytea, '\x030405'::bytea]",
            Value::Array(vec![
                Value::Bytes(vec![0, 1, 2]),
                Value::Bytes(vec![3, 4, 5]),
            ]),
        ),
        col(
            "c_tstz_arr",
            "timestamptz[]",
            "'{2020-04-01 11:51:02+00,2020-04-01 12:51:03+00}'",
            Value::Array(vec![
                s("2020-04-01T11:51:02.000000Z"),
                s("2020-04-01T12:51:03.000000Z"),
            ]),
        ),
        col(
            "c_date_arr",
            "date[]",
            "'{2016-11-04,NULL}'",
            Value::Array(vec![Value::Int32(17109), Value::Null]),
        ),
        col("c_empty_arr", "int8[]", "'{}'", Value::Array(vec![])),
        // Debezium's RecordsStreamProducerIT.shouldStreamTimeArrayTypesAsKnownTypes.
        col(
            "c_time_arr",
            "time[]",
            "'{00:01:02,01:02:03}'",
            Value::Array(vec![Value::Int64(62_000_000), Value::Int64(3_723_000_000)]),
        ),
        col(
            "c_timetz_arr",
            "timetz[]",
            "'{13:51:02+0200,14:51:03+0200}'",
            Value::Array(vec![s("11:51:02Z"), s("12:51:03Z")]),
        ),
        col(
            "c_ts_arr",
            "timestamp[]",
            "'{2020-04-01 00:01:02,2020-04-01 01:02:03}'",
            Value::Array(vec![
                Value::Int64(days(2020, 4, 1) * 86_400_000_000 + 62_000_000),
                Value::Int64(days(2020, 4, 1) * 86_400_000_000 + 3_723_000_000),
            ]),
        ),
        col(
            "c_uuid_arr",
            "uuid[]",
            "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
            Value::Array(vec![s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]),
        ),
        col(
            "c_jsonb_arr",
            "jsonb[]",
            r#"ARRAY['{"a": [1, 2]}'::jsonb]"#,
            Value::Array(vec![s(r#"{"a": [1, 2]}"#)]),
        ),
        col(
            "c_hstore_arr",
            "hstore[]",
            r#"ARRAY['"k"=>"v"'::hstore]"#,
            Value::Array(vec![s(r#"{"k":"v"}"#)]),
        )
        .needs("hstore"),
        col(
            "c_int_2d",
            "int4[][]",
            "'{{1,2},{3,4}}'",
            Value::Array(vec![Value::Null, Value::Null]),
        ),
        col(
            "c_box_arr",
            "box[]",
            "'{((1,1),(0,0));((2,2),(1,1))}'",
            Value::Array(vec![s("(1,1),(0,0)"), s("(2,2),(1,1)")]),
        ),
        col(
            "c_tsvector",
            "tsvector",
            "'a fat cat'",
            s("'a' 'cat' 'fat'"),
        ),
    ]
}

#[tokio::test]
async fn decodes_what_postgres_prints() {
    let pg = sluice_testkit::shared();
    let db = pg.create_database("pgtypes").await.expect("database");
    let client = pg.connect(&db).await.expect("connect");
    client
        .batch_execute(SESSION)
        .await
        .expect("session settings");

    let mut have = Vec::new();
    for ext in ["hstore", "citext", "ltree"] {
        if client
            .batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {ext}"))
            .await
            .is_ok()
        {
            have.push(ext);
        } else {
            eprintln!("extension {ext} not available, its column is skipped");
        }
    }
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok';
             CREATE DOMAIN money_amount AS numeric(10,2);
             CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);",
        )
        .await
        .expect("types");

    let cols: Vec<Col> = columns()
        .into_iter()
        .filter(|c| c.needs.is_none_or(|e| have.contains(&e)))
        .collect();
    let defs: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {}", c.name, c.ty))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE all_types (id int PRIMARY KEY, {});
             INSERT INTO all_types VALUES (1, {});",
            defs.join(", "),
            cols.iter().map(|c| c.value).collect::<Vec<_>>().join(", ")
        ))
        .await
        .expect("table");

    let attrs = client
        .query(
            "SELECT attname::text, atttypid, atttypmod, attnotnull FROM pg_attribute
             WHERE attrelid = 'all_types'::regclass AND attnum > 1 AND NOT attisdropped
             ORDER BY attnum",
            &[],
        )
        .await
        .expect("attributes");
    let oids: Vec<u32> = attrs.iter().map(|r| r.get::<_, u32>(1)).collect();
    let mut registry = TypeRegistry::new();
    registry.load(&client, &oids).await.expect("registry");
    assert!(registry.missing(oids.iter().copied()).is_empty());

    let select: Vec<&str> = cols.iter().map(|c| c.name).collect();
    let messages = client
        .simple_query(&format!("SELECT {} FROM all_types", select.join(", ")))
        .await
        .expect("select");
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("one row");

    let modes = TypeModes::default();
    let mut failures = Vec::new();
    for (i, (c, attr)) in cols.iter().zip(&attrs).enumerate() {
        assert_eq!(attr.get::<_, String>(0), c.name);
        let codec = ColumnCodec::new(
            &registry,
            attr.get(1),
            attr.get(2),
            !attr.get::<_, bool>(3),
            &modes,
        );
        let text = row.get(i).expect("not null");
        match codec.decode_text(text.as_bytes()) {
            Ok(v) if v == c.expect => {}
            Ok(v) => failures.push(format!(
                "{}: {text:?} gave {v:?}, want {:?}",
                c.name, c.expect
            )),
            Err(e) => failures.push(format!("{}: {e}", c.name)),
        }
        assert!(codec.schema().optional, "{}", c.name);
        if let Some(name) = c.schema {
            if codec.schema().name_str() != name {
                failures.push(format!(
                    "{}: schema {:?}, want {name}",
                    c.name,
                    codec.schema().name
                ));
            }
        }
        if !c.params.is_empty() {
            let want: Vec<(String, String)> = c
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if codec.schema().parameters != want {
                failures.push(format!(
                    "{}: params {:?}, want {want:?}",
                    c.name,
                    codec.schema().parameters
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Special numeric values in string mode, and the column mapping of
    // types Debezium leaves out.
    let string = TypeModes {
        decimal: DecimalMode::String,
        ..TypeModes::default()
    };
    let row = client
        .query_one(
            "SELECT 'NaN'::numeric(5,2)::text, 'Infinity'::numeric::text",
            &[],
        )
        .await
        .expect("specials");
    let num = ColumnCodec::new(&registry, 1700, ((5 << 16) | 2) + 4, true, &string);
    assert_eq!(
        num.decode_text(row.get::<_, String>(0).as_bytes()).unwrap(),
        s("NAN")
    );
    assert_eq!(
        num.decode_text(row.get::<_, String>(1).as_bytes()).unwrap(),
        s("POSITIVE_INFINITY")
    );
    // tsvector: io.debezium.data.Tsvector since Debezium 3.3; 2.7 left it out.
    let tsv = cols.iter().position(|c| c.name == "c_tsvector").unwrap();
    let tsv_codec = ColumnCodec::new(&registry, attrs[tsv].get(1), -1, true, &modes);
    assert!(!tsv_codec.debezium_omits());
    assert_eq!(tsv_codec.schema().name_str(), "io.debezium.data.Tsvector");
    let v27 = TypeModes {
        format: sluice_core::debezium::Format::V2_7,
        ..TypeModes::default()
    };
    let tsv_codec = ColumnCodec::new(&registry, attrs[tsv].get(1), -1, true, &v27);
    assert!(tsv_codec.debezium_omits());
}
