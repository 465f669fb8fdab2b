//! Arbitrary input never panics any codec, in any mode.

use proptest::prelude::*;
use sluice_pgtypes::{
    oid, BinaryMode, ColumnCodec, DecimalMode, HstoreMode, IntervalMode, TimePrecisionMode,
    TypeInfo, TypeKind, TypeModes, TypeRegistry,
};

fn registry() -> TypeRegistry {
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
            labels: vec!["a".into(), "b".into()],
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
        "dnum",
        TypeKind::Domain {
            base_oid: oid::NUMERIC,
            base_typmod: (10 << 16 | 2) + 4,
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
    add(90006, "ltree", TypeKind::Base);
    add(
        90007,
        "_ltree",
        TypeKind::Array {
            elem_oid: 90006,
            delim: b',',
        },
    );
    add(
        90008,
        "_dnum",
        TypeKind::Array {
            elem_oid: 90003,
            delim: b',',
        },
    );
    add(90009, "geometry", TypeKind::Base);
    r
}

/// Every (type, typmod) pair worth fuzzing.
fn columns() -> Vec<(u32, i32)> {
    let mut v = Vec::new();
    let scalars = [
        oid::BOOL,
        oid::BYTEA,
        oid::CHAR,
        oid::NAME,
        oid::INT8,
        oid::INT2,
        oid::INT4,
        oid::TEXT,
        oid::OID,
        oid::JSON,
        oid::XML,
        oid::POINT,
        oid::CIDR,
        oid::FLOAT4,
        oid::FLOAT8,
        oid::MACADDR8,
        oid::MONEY,
        oid::MACADDR,
        oid::INET,
        oid::BPCHAR,
        oid::VARCHAR,
        oid::DATE,
        oid::TIME,
        oid::TIMESTAMP,
        oid::TIMESTAMPTZ,
        oid::INTERVAL,
        oid::TIMETZ,
        oid::BIT,
        oid::VARBIT,
        oid::NUMERIC,
        oid::UUID,
        oid::JSONB,
        oid::INT4RANGE,
        oid::TSTZRANGE,
        3614,
        oid::BOOL_ARRAY,
        oid::BYTEA_ARRAY,
        oid::INT2_ARRAY,
        oid::INT4_ARRAY,
        oid::TEXT_ARRAY,
        oid::INT8_ARRAY,
        oid::FLOAT8_ARRAY,
        oid::NUMERIC_ARRAY,
        oid::DATE_ARRAY,
        oid::TIME_ARRAY,
        oid::TIMESTAMP_ARRAY,
        oid::TIMESTAMPTZ_ARRAY,
        oid::TIMETZ_ARRAY,
        oid::INTERVAL_ARRAY,
        oid::UUID_ARRAY,
        oid::JSONB_ARRAY,
        oid::POINT_ARRAY,
        oid::MONEY_ARRAY,
        1020,
        90001,
        90002,
        90003,
        90004,
        90005,
        90006,
        90007,
        90008,
        90009,
        424242,
    ];
    for o in scalars {
        v.push((o, -1));
    }
    for typmod in [0, 1, 3, 5, 64] {
        for o in [
            oid::TIME,
            oid::TIMESTAMP,
            oid::TIMESTAMPTZ,
            oid::BIT,
            oid::VARBIT,
        ] {
            v.push((o, typmod));
        }
    }
    for (p, s) in [(3, 2), (10, 0), (38, 10), (1000, 999)] {
        v.push((oid::NUMERIC, (p << 16 | s) + 4));
        v.push((oid::NUMERIC_ARRAY, (p << 16 | s) + 4));
    }
    v
}

fn all_modes() -> Vec<TypeModes> {
    let mut out = vec![TypeModes::default()];
    for decimal in [DecimalMode::Double, DecimalMode::String] {
        out.push(TypeModes {
            decimal,
            ..TypeModes::default()
        });
    }
    for time_precision in [
        TimePrecisionMode::AdaptiveTimeMicroseconds,
        TimePrecisionMode::Connect,
    ] {
        out.push(TypeModes {
            time_precision,
            ..TypeModes::default()
        });
    }
    for binary in [
        BinaryMode::Base64,
        BinaryMode::Base64UrlSafe,
        BinaryMode::Hex,
    ] {
        out.push(TypeModes {
            binary,
            ..TypeModes::default()
        });
    }
    out.push(TypeModes {
        interval: IntervalMode::String,
        hstore: HstoreMode::Map,
        money_fraction_digits: 0,
        ..TypeModes::default()
    });
    out
}

fn codecs() -> Vec<ColumnCodec> {
    let r = registry();
    let mut out = Vec::new();
    for m in all_modes() {
        for &(o, t) in &columns() {
            out.push(ColumnCodec::new(&r, o, t, true, &m));
        }
    }
    out
}

/// Text made of the characters PostgreSQL output uses, so that inputs get
/// past the first checks more often than random bytes do.
fn pg_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[-+0-9.:, {}()"\\xTPYMDHSBCZNaNfinityUL$=>tef;\[\]]{0,40}"#)
        .expect("valid regex")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for c in codecs() {
            let _ = c.decode_text(&bytes);
        }
    }

    #[test]
    fn pg_like_text_never_panics(text in pg_like()) {
        for c in codecs() {
            let _ = c.decode_text(text.as_bytes());
        }
    }

    #[test]
    fn numeric_lookalikes_never_panic(
        int in "[0-9]{1,40}", frac in "[0-9]{0,40}", neg in any::<bool>()
    ) {
        let text = format!("{}{}{}{}", if neg { "-" } else { "" }, int, if frac.is_empty() { "" } else { "." }, frac);
        for c in codecs() {
            let _ = c.decode_text(text.as_bytes());
        }
    }
}
