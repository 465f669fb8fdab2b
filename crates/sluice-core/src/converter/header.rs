//! Kafka Connect's `SimpleHeaderConverter` (the worker's default header
//! converter): a header value becomes the text `Values.convertToString`
//! gives it. Strings travel as they are; numbers and booleans as Java prints
//! them; bytes as base64; lists, maps and structs in Connect's own
//! JSON-like form (`{"id":4}`), where strings inside are quoted with only
//! backslashes and double quotes escaped.

use base64::Engine as _;

use super::javafmt;
use super::json::{
    decimal_scale, DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME,
    TIME_LOGICAL_NAME,
};
use crate::schema::Schema;
use crate::value::Value;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The header bytes `SimpleHeaderConverter.fromConnectHeader` writes for a
/// value; None for null.
pub fn simple_header_bytes(schema: Option<&Schema>, value: &Value) -> Option<Vec<u8>> {
    if value.is_null() {
        return None;
    }
    let mut out = String::new();
    append(&mut out, schema, value, false);
    Some(out.into_bytes())
}

/// `Values.append(sb, value, embedded)`.
fn append(out: &mut String, schema: Option<&Schema>, value: &Value, embedded: bool) {
    let logical = schema.and_then(|s| s.name.as_deref());
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int8(x) => out.push_str(&x.to_string()),
        Value::Int16(x) => out.push_str(&x.to_string()),
        Value::Int32(x) => match logical {
            Some(DATE_LOGICAL_NAME) => date(out, i64::from(*x) * MILLIS_PER_DAY),
            Some(TIME_LOGICAL_NAME) => date(out, i64::from(*x)),
            _ => out.push_str(&x.to_string()),
        },
        Value::Int64(x) => match logical {
            Some(TIMESTAMP_LOGICAL_NAME) => date(out, *x),
            _ => out.push_str(&x.to_string()),
        },
        Value::Float32(x) => out.push_str(&javafmt::float_to_string(*x)),
        Value::Float64(x) => out.push_str(&javafmt::double_to_string(*x)),
        Value::String(s) => {
            if embedded {
                out.push('"');
                for c in s.chars() {
                    if c == '\\' || c == '"' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(s);
            }
        }
        Value::Bytes(b) => match (logical, schema.map(decimal_scale)) {
            // A Decimal is a BigDecimal in Connect: a Number, printed bare.
            (Some(DECIMAL_LOGICAL_NAME), Some(Ok(scale))) => {
                out.push_str(&javafmt::big_decimal_to_string(b, scale));
            }
            _ => {
                let text = base64::engine::general_purpose::STANDARD.encode(b);
                if embedded {
                    out.push('"');
                    out.push_str(&text);
                    out.push('"');
                } else {
                    out.push_str(&text);
                }
            }
        },
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                append(out, item_schema, item, true);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            let key_schema = schema.and_then(|s| s.keys.as_deref());
            let value_schema = schema.and_then(|s| s.items.as_deref());
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                append(out, key_schema, k, true);
                out.push(':');
                append(out, value_schema, v, true);
            }
            out.push('}');
        }
        Value::Struct(values) => {
            out.push('{');
            let fields = schema.map(|s| s.fields.as_slice()).unwrap_or(&[]);
            for (i, (f, v)) in fields.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                append(out, None, &Value::String(f.name.clone()), true);
                out.push(':');
                // Struct.get: a null field reads as its schema's default.
                let v = match (v, &f.schema.default) {
                    (Value::Null, Some(d)) => d,
                    _ => v,
                };
                append(out, Some(&f.schema), v, true);
            }
            out.push('}');
        }
    }
}

/// `Values.dateFormatFor(date).format(date)` in a JVM whose time zone is UTC:
/// a time of day before the first day's end, a date at midnight, a
/// timestamp otherwise.
fn date(out: &mut String, epoch_ms: i64) {
    let days = epoch_ms.div_euclid(MILLIS_PER_DAY);
    let ms = epoch_ms.rem_euclid(MILLIS_PER_DAY);
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    );
    if epoch_ms < MILLIS_PER_DAY {
        out.push_str(&time);
        return;
    }
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    out.push_str(&format!("{y:04}-{m:02}-{d:02}"));
    if ms != 0 {
        out.push('T');
        out.push_str(&time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{prim, SchemaBuilder, SchemaType};

    #[test]
    fn key_struct_as_connect_prints_it() {
        let key = SchemaBuilder::structure()
            .field("id", prim::of(SchemaType::Int32, false))
            .field("name", prim::opt_string())
            .build();
        let v = Value::Struct(vec![Value::Int32(4), Value::String("a\"b\\c".into())]);
        assert_eq!(
            simple_header_bytes(Some(&key), &v).unwrap(),
            br#"{"id":4,"name":"a\"b\\c"}"#.to_vec()
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(
            simple_header_bytes(None, &Value::String("x y".into())).unwrap(),
            b"x y".to_vec()
        );
        assert_eq!(simple_header_bytes(None, &Value::Null), None);
        assert_eq!(
            simple_header_bytes(None, &Value::Float64(1e10)).unwrap(),
            b"1.0E10".to_vec()
        );
        let ts = SchemaBuilder::new(SchemaType::Int64)
            .name(TIMESTAMP_LOGICAL_NAME)
            .build();
        assert_eq!(
            simple_header_bytes(Some(&ts), &Value::Int64(1_478_267_490_123)).unwrap(),
            b"2016-11-04T13:51:30.123Z".to_vec()
        );
    }
}
