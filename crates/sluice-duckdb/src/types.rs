//! From Connect schemas and values to DuckDB column types and to the
//! native values appended through DuckDB's Appender.
//!
//! Most values are appended in their native form ([`Cell`]): integers,
//! floats, booleans, strings, BLOBs, dates, times and timestamps go in as
//! themselves, without text in between. A few go in as text that DuckDB
//! casts on the way in (the Appender casts to the column's type): decimals
//! (exact decimal digits), zoned timestamps (ISO text), UUIDs, JSON, and
//! structs and maps (JSON text); lists go in as JSON text that the flush
//! casts (`CAST(CAST(text AS JSON) AS type[])`).
//!
//! Type rules:
//! - `org.apache.kafka.connect.data.Decimal`: `DECIMAL(p,s)` with p from the
//!   `connect.decimal.precision` parameter when `1 <= p <= 38` and
//!   `s <= p`; otherwise (no precision, or wider than DuckDB's 38 digits)
//!   `VARCHAR` holding the exact decimal text, so no digit is ever lost.
//! - `io.debezium.data.VariableScaleDecimal` (PostgreSQL `numeric` without
//!   a declared precision): `VARCHAR` with the exact decimal text, because
//!   each value may have a different scale and DOUBLE would round.
//! - `io.debezium.time.ZonedTime`: `VARCHAR` (the ISO text); DuckDB's
//!   TIMETZ would keep only an offset, which is what the text already says.
//! - Structs and maps: `JSON` (their fields as a JSON object; a map with
//!   non-string keys becomes an array of `[key, value]` pairs).
//! - Arrays: a DuckDB `LIST` of the element type (`INTEGER[]`), except
//!   arrays of structs or maps, which become `JSON`.

use anyhow::{anyhow, bail, Context as _};
use duckdb::types::{TimeUnit, ToSqlOutput, ValueRef};
use duckdb::ToSql;
use serde_json::Value as Json;
use sluice_core::schema::{Schema, SchemaType};
use sluice_core::value::Value;

const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";
const VARIABLE_SCALE_DECIMAL: &str = "io.debezium.data.VariableScaleDecimal";

/// How a Connect value is read: its schema name decides for logical types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logical {
    Plain,
    DateDays,
    TimeMillis,
    TimeMicros,
    TimeNanos,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    Decimal,
    VariableScaleDecimal,
}

fn logical(schema: &Schema) -> Logical {
    match schema.name.as_deref() {
        Some("org.apache.kafka.connect.data.Date") | Some("io.debezium.time.Date") => {
            Logical::DateDays
        }
        Some("org.apache.kafka.connect.data.Time") | Some("io.debezium.time.Time") => {
            Logical::TimeMillis
        }
        Some("io.debezium.time.MicroTime") => Logical::TimeMicros,
        Some("io.debezium.time.NanoTime") => Logical::TimeNanos,
        Some("org.apache.kafka.connect.data.Timestamp") | Some("io.debezium.time.Timestamp") => {
            Logical::TimestampMillis
        }
        Some("io.debezium.time.MicroTimestamp") => Logical::TimestampMicros,
        Some("io.debezium.time.NanoTimestamp") => Logical::TimestampNanos,
        Some(DECIMAL) => Logical::Decimal,
        Some(VARIABLE_SCALE_DECIMAL) => Logical::VariableScaleDecimal,
        _ => Logical::Plain,
    }
}

/// The DuckDB column type for a Connect schema (see the module docs).
pub fn duck_type(schema: &Schema) -> String {
    match logical(schema) {
        Logical::DateDays => return "DATE".into(),
        Logical::TimeMillis | Logical::TimeMicros | Logical::TimeNanos => return "TIME".into(),
        Logical::TimestampMillis | Logical::TimestampMicros | Logical::TimestampNanos => {
            return "TIMESTAMP".into()
        }
        Logical::Decimal => {
            let scale = schema
                .parameter("scale")
                .and_then(|s| s.trim().parse::<u32>().ok());
            let precision = schema
                .parameter("connect.decimal.precision")
                .and_then(|p| p.trim().parse::<u32>().ok());
            return match (precision, scale) {
                (Some(p), Some(s)) if (1..=38).contains(&p) && s <= p => {
                    format!("DECIMAL({p},{s})")
                }
                _ => "VARCHAR".into(),
            };
        }
        Logical::VariableScaleDecimal => return "VARCHAR".into(),
        Logical::Plain => {}
    }
    match schema.name.as_deref() {
        Some("io.debezium.time.ZonedTimestamp") => return "TIMESTAMPTZ".into(),
        Some("io.debezium.time.ZonedTime") => return "VARCHAR".into(),
        Some("io.debezium.data.Json") => return "JSON".into(),
        Some("io.debezium.data.Uuid") => return "UUID".into(),
        _ => {}
    }
    match schema.ty {
        SchemaType::Int8 => "TINYINT".into(),
        SchemaType::Int16 => "SMALLINT".into(),
        SchemaType::Int32 => "INTEGER".into(),
        SchemaType::Int64 => "BIGINT".into(),
        SchemaType::Float32 => "REAL".into(),
        SchemaType::Float64 => "DOUBLE".into(),
        SchemaType::Boolean => "BOOLEAN".into(),
        SchemaType::String => "VARCHAR".into(),
        SchemaType::Bytes => "BLOB".into(),
        SchemaType::Array => match schema.items.as_deref() {
            Some(items) if !matches!(items.ty, SchemaType::Struct | SchemaType::Map) => {
                let inner = duck_type(items);
                if inner == "JSON" {
                    "JSON".into()
                } else {
                    format!("{inner}[]")
                }
            }
            _ => "JSON".into(),
        },
        SchemaType::Map | SchemaType::Struct => "JSON".into(),
    }
}

/// One value as it is appended (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// TINYINT.
    I8(i8),
    /// SMALLINT.
    I16(i16),
    /// INTEGER.
    I32(i32),
    /// BIGINT.
    I64(i64),
    /// FLOAT.
    F32(f32),
    /// DOUBLE.
    F64(f64),
    /// Text, cast by DuckDB to the column's type when it is not VARCHAR.
    Text(String),
    /// BLOB.
    Blob(Vec<u8>),
    /// DATE, days since 1970-01-01.
    Date(i32),
    /// TIME, microseconds since midnight.
    Time(i64),
    /// TIMESTAMP, microseconds since the epoch.
    Timestamp(i64),
}

impl Cell {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// Bytes the value holds (for messages and memory accounting).
    pub fn size(&self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::Blob(b) => b.len(),
            _ => 8,
        }
    }

    /// A short rendering for messages (long values are cut).
    pub fn describe(&self) -> String {
        let text = match self {
            Cell::Null => "NULL".to_owned(),
            Cell::Bool(b) => b.to_string(),
            Cell::I8(v) => v.to_string(),
            Cell::I16(v) => v.to_string(),
            Cell::I32(v) => v.to_string(),
            Cell::I64(v) => v.to_string(),
            Cell::F32(v) => v.to_string(),
            Cell::F64(v) => v.to_string(),
            Cell::Text(s) => format!("'{s}'"),
            Cell::Blob(b) => format!("0x{}", hex(&b[..b.len().min(32)])),
            Cell::Date(d) => date_text(i64::from(*d)).unwrap_or_else(|_| format!("date {d}")),
            Cell::Time(t) => time_text(Some(*t)).unwrap_or_else(|_| format!("time {t}")),
            Cell::Timestamp(t) => {
                timestamp_text(Some(*t)).unwrap_or_else(|_| format!("timestamp {t}"))
            }
        };
        if text.len() > 80 {
            let mut end = 77;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &text[..end])
        } else {
            text
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Cell::Null => ValueRef::Null,
            Cell::Bool(b) => ValueRef::Boolean(*b),
            Cell::I8(v) => ValueRef::TinyInt(*v),
            Cell::I16(v) => ValueRef::SmallInt(*v),
            Cell::I32(v) => ValueRef::Int(*v),
            Cell::I64(v) => ValueRef::BigInt(*v),
            Cell::F32(v) => ValueRef::Float(*v),
            Cell::F64(v) => ValueRef::Double(*v),
            Cell::Text(s) => ValueRef::Text(s.as_bytes()),
            Cell::Blob(b) => ValueRef::Blob(b),
            Cell::Date(d) => ValueRef::Date32(*d),
            Cell::Time(t) => ValueRef::Time64(TimeUnit::Microsecond, *t),
            Cell::Timestamp(t) => ValueRef::Timestamp(TimeUnit::Microsecond, *t),
        }))
    }
}

/// The value to append for a column of type `duck_type(schema)`. Errors
/// say what was wrong; callers add the record and field.
pub fn cell(schema: &Schema, value: &Value) -> anyhow::Result<Cell> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let micros = |v: i64, per_micro: i64, mul: i64| -> anyhow::Result<i64> {
        if per_micro > 1 {
            Ok(v.div_euclid(per_micro))
        } else {
            v.checked_mul(mul)
                .ok_or_else(|| anyhow!("time value {v} overflows"))
        }
    };
    Ok(match (logical(schema), value) {
        (Logical::DateDays, v) => {
            let days = int(v)?;
            Cell::Date(
                i32::try_from(days)
                    .map_err(|_| anyhow!("date {days} days from 1970-01-01 is out of range"))?,
            )
        }
        (Logical::TimeMillis, v) => Cell::Time(checked_time(micros(int(v)?, 1, 1000)?)?),
        (Logical::TimeMicros, v) => Cell::Time(checked_time(int(v)?)?),
        (Logical::TimeNanos, v) => Cell::Time(checked_time(micros(int(v)?, 1000, 1)?)?),
        (Logical::TimestampMillis, v) => Cell::Timestamp(micros(int(v)?, 1, 1000)?),
        (Logical::TimestampMicros, v) => Cell::Timestamp(int(v)?),
        (Logical::TimestampNanos, v) => Cell::Timestamp(micros(int(v)?, 1000, 1)?),
        (Logical::Decimal, _) | (Logical::VariableScaleDecimal, _) => {
            match value_text(schema, value)? {
                Some(t) => Cell::Text(t),
                None => Cell::Null,
            }
        }
        (_, Value::Bool(b)) => Cell::Bool(*b),
        (_, Value::Int8(i)) => Cell::I8(*i),
        (_, Value::Int16(i)) => Cell::I16(*i),
        (_, Value::Int32(i)) => Cell::I32(*i),
        (_, Value::Int64(i)) => Cell::I64(*i),
        (_, Value::Float32(f)) => Cell::F32(*f),
        (_, Value::Float64(f)) => Cell::F64(*f),
        (_, Value::String(s)) => Cell::Text(s.clone()),
        (_, Value::Bytes(b)) => Cell::Blob(b.clone()),
        (_, Value::Array(_)) | (_, Value::Map(_)) | (_, Value::Struct(_)) => {
            Cell::Text(to_json(schema, value)?.to_string())
        }
        (_, Value::Null) => Cell::Null,
    })
}

fn checked_time(micros: i64) -> anyhow::Result<i64> {
    // PostgreSQL's 24:00:00 is a valid time; DuckDB's TIME takes it too.
    if !(0..=86_400_000_000).contains(&micros) {
        bail!("time of {micros} microseconds is outside one day");
    }
    Ok(micros)
}

/// The staged text of a value for a column of type `duck_type(schema)`;
/// None for null. Errors say what was wrong; callers add the record and
/// field.
pub fn value_text(schema: &Schema, value: &Value) -> anyhow::Result<Option<String>> {
    if value.is_null() {
        return Ok(None);
    }
    let text = match (logical(schema), value) {
        (Logical::DateDays, v) => date_text(int(v)?)?,
        (Logical::TimeMillis, v) => time_text(int(v)?.checked_mul(1000))?,
        (Logical::TimeMicros, v) => time_text(Some(int(v)?))?,
        (Logical::TimeNanos, v) => time_text(Some(int(v)?.div_euclid(1000)))?,
        (Logical::TimestampMillis, v) => timestamp_text(int(v)?.checked_mul(1000))?,
        (Logical::TimestampMicros, v) => timestamp_text(Some(int(v)?))?,
        (Logical::TimestampNanos, v) => timestamp_text(Some(int(v)?.div_euclid(1000)))?,
        (Logical::Decimal, Value::Bytes(b)) => {
            let scale = schema
                .parameter("scale")
                .ok_or_else(|| anyhow!("Decimal schema without a 'scale' parameter"))?
                .trim()
                .parse::<u32>()
                .context("Decimal 'scale' parameter is not a number")?;
            decimal_text(b, scale)
        }
        (Logical::VariableScaleDecimal, Value::Struct(fields)) => {
            let scale = schema
                .field("scale")
                .and_then(|(i, _)| fields.get(i))
                .and_then(Value::as_i64)
                .ok_or_else(|| anyhow!("VariableScaleDecimal without an int 'scale' field"))?;
            let bytes = match schema.field("value").and_then(|(i, _)| fields.get(i)) {
                Some(Value::Bytes(b)) => b,
                _ => bail!("VariableScaleDecimal without a bytes 'value' field"),
            };
            let scale = u32::try_from(scale)
                .map_err(|_| anyhow!("VariableScaleDecimal scale {scale} is negative"))?;
            decimal_text(bytes, scale)
        }
        (_, Value::Bool(b)) => b.to_string(),
        (_, Value::Int8(i)) => i.to_string(),
        (_, Value::Int16(i)) => i.to_string(),
        (_, Value::Int32(i)) => i.to_string(),
        (_, Value::Int64(i)) => i.to_string(),
        (_, Value::Float32(f)) => float_text(f64::from(*f)),
        (_, Value::Float64(f)) => float_text(*f),
        (_, Value::String(s)) => s.clone(),
        (_, Value::Bytes(b)) => hex(b),
        (_, Value::Array(_)) | (_, Value::Map(_)) | (_, Value::Struct(_)) => {
            to_json(schema, value)?.to_string()
        }
        (_, Value::Null) => return Ok(None),
    };
    Ok(Some(text))
}

/// A value as JSON, for lists (cast from JSON by DuckDB) and JSON columns.
fn to_json(schema: &Schema, value: &Value) -> anyhow::Result<Json> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int8(_) | Value::Int16(_) | Value::Int32(_) | Value::Int64(_)
            if logical(schema) == Logical::Plain =>
        {
            Json::from(value.as_i64().unwrap_or_default())
        }
        Value::Float32(f) => float_json(f64::from(*f)),
        Value::Float64(f) => float_json(*f),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(items) => {
            let item_schema = schema
                .items
                .as_deref()
                .ok_or_else(|| anyhow!("array schema without an items schema"))?;
            Json::Array(
                items
                    .iter()
                    .map(|v| to_json(item_schema, v))
                    .collect::<anyhow::Result<_>>()?,
            )
        }
        Value::Struct(fields) if logical(schema) == Logical::Plain => {
            let mut obj = serde_json::Map::new();
            for (f, v) in schema.fields.iter().zip(fields) {
                obj.insert(
                    f.name.clone(),
                    to_json(&f.schema, v).with_context(|| format!("struct field '{}'", f.name))?,
                );
            }
            Json::Object(obj)
        }
        Value::Map(entries) => {
            let (ks, vs) = match (schema.keys.as_deref(), schema.items.as_deref()) {
                (Some(k), Some(v)) => (k, v),
                _ => bail!("map schema without key and value schemas"),
            };
            if ks.ty == SchemaType::String {
                let mut obj = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.as_str().unwrap_or_default().to_owned();
                    obj.insert(key, to_json(vs, v)?);
                }
                Json::Object(obj)
            } else {
                Json::Array(
                    entries
                        .iter()
                        .map(|(k, v)| Ok(Json::Array(vec![to_json(ks, k)?, to_json(vs, v)?])))
                        .collect::<anyhow::Result<_>>()?,
                )
            }
        }
        // Logical types inside containers: their staged text, as a string.
        other => match value_text(schema, other)? {
            Some(t) => Json::String(t),
            None => Json::Null,
        },
    })
}

fn int(v: &Value) -> anyhow::Result<i64> {
    v.as_i64()
        .ok_or_else(|| anyhow!("expected an integer for a date/time value, got {v:?}"))
}

fn date_text(days: i64) -> anyhow::Result<String> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(|| anyhow!("epoch"))?;
    let d = chrono::Duration::try_days(days)
        .and_then(|d| epoch.checked_add_signed(d))
        .ok_or_else(|| anyhow!("date {days} days from 1970-01-01 is out of range"))?;
    Ok(d.format("%Y-%m-%d").to_string())
}

fn time_text(micros: Option<i64>) -> anyhow::Result<String> {
    let micros = micros.ok_or_else(|| anyhow!("time value overflows"))?;
    // PostgreSQL's 24:00:00 is a valid time; DuckDB accepts it too.
    if micros == 86_400_000_000 {
        return Ok("24:00:00".into());
    }
    if !(0..86_400_000_000).contains(&micros) {
        bail!("time of {micros} microseconds is outside one day");
    }
    let secs = micros / 1_000_000;
    Ok(format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros % 1_000_000
    ))
}

fn timestamp_text(micros: Option<i64>) -> anyhow::Result<String> {
    let micros = micros.ok_or_else(|| anyhow!("timestamp value overflows"))?;
    let t = chrono::DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| anyhow!("timestamp of {micros} microseconds is out of range"))?;
    Ok(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        f.to_string()
    }
}

fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(float_text(f)))
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for byte in b {
        s.push(char::from(DIGITS[usize::from(byte >> 4)]));
        s.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    s
}

/// Decimal text of a big-endian two's-complement unscaled value.
fn decimal_text(bytes: &[u8], scale: u32) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as big-endian bytes (two's complement negated when negative).
    let mut mag: Vec<u8> = if negative {
        let mut m: Vec<u8> = bytes.iter().map(|b| !b).collect();
        for b in m.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
        m
    } else {
        bytes.to_vec()
    };
    // Repeated division by 10 of the big-endian magnitude.
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (int_part, frac) = digits.split_at(digits.len() - scale);
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    s.push_str(&String::from_utf8_lossy(int_part));
    if scale > 0 {
        s.push('.');
        s.push_str(&String::from_utf8_lossy(frac));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::schema::SchemaBuilder;

    fn named(ty: SchemaType, name: &str) -> Schema {
        SchemaBuilder::new(ty).name(name).build_owned()
    }

    #[test]
    fn primitive_and_logical_types() {
        assert_eq!(duck_type(&Schema::of(SchemaType::Int8)), "TINYINT");
        assert_eq!(duck_type(&Schema::of(SchemaType::Int16)), "SMALLINT");
        assert_eq!(duck_type(&Schema::of(SchemaType::Int32)), "INTEGER");
        assert_eq!(duck_type(&Schema::of(SchemaType::Int64)), "BIGINT");
        assert_eq!(duck_type(&Schema::of(SchemaType::Float32)), "REAL");
        assert_eq!(duck_type(&Schema::of(SchemaType::Float64)), "DOUBLE");
        assert_eq!(duck_type(&Schema::of(SchemaType::Boolean)), "BOOLEAN");
        assert_eq!(duck_type(&Schema::of(SchemaType::String)), "VARCHAR");
        assert_eq!(duck_type(&Schema::of(SchemaType::Bytes)), "BLOB");
        assert_eq!(
            duck_type(&named(SchemaType::Int32, "io.debezium.time.Date")),
            "DATE"
        );
        assert_eq!(
            duck_type(&named(SchemaType::Int64, "io.debezium.time.MicroTime")),
            "TIME"
        );
        assert_eq!(
            duck_type(&named(SchemaType::Int64, "io.debezium.time.NanoTimestamp")),
            "TIMESTAMP"
        );
        assert_eq!(
            duck_type(&named(
                SchemaType::String,
                "io.debezium.time.ZonedTimestamp"
            )),
            "TIMESTAMPTZ"
        );
        assert_eq!(
            duck_type(&named(SchemaType::String, "io.debezium.data.Json")),
            "JSON"
        );
        assert_eq!(
            duck_type(&named(SchemaType::String, "io.debezium.data.Uuid")),
            "UUID"
        );
        assert_eq!(
            duck_type(&named(SchemaType::Struct, VARIABLE_SCALE_DECIMAL)),
            "VARCHAR"
        );
        let ints =
            SchemaBuilder::array(SchemaBuilder::new(SchemaType::Int32).build()).build_owned();
        assert_eq!(duck_type(&ints), "INTEGER[]");
        assert_eq!(duck_type(&SchemaBuilder::structure().build_owned()), "JSON");
    }

    #[test]
    fn decimal_precision_rule() {
        let dec = |p: Option<&str>, s: &str| {
            let mut b = SchemaBuilder::new(SchemaType::Bytes)
                .name(DECIMAL)
                .parameter("scale", s);
            if let Some(p) = p {
                b = b.parameter("connect.decimal.precision", p);
            }
            duck_type(&b.build_owned())
        };
        assert_eq!(dec(Some("10"), "2"), "DECIMAL(10,2)");
        assert_eq!(dec(Some("38"), "0"), "DECIMAL(38,0)");
        assert_eq!(dec(Some("39"), "2"), "VARCHAR");
        assert_eq!(dec(None, "2"), "VARCHAR");
    }

    #[test]
    fn values_as_duckdb_literals() {
        let date = named(SchemaType::Int32, "io.debezium.time.Date");
        assert_eq!(
            value_text(&date, &Value::Int32(19_723)).expect("date"),
            Some("2024-01-01".into())
        );
        let t = named(SchemaType::Int64, "io.debezium.time.MicroTime");
        assert_eq!(
            value_text(&t, &Value::Int64(3_723_000_456)).expect("time"),
            Some("01:02:03.000456".into())
        );
        let ts = named(SchemaType::Int64, "io.debezium.time.MicroTimestamp");
        assert_eq!(
            value_text(&ts, &Value::Int64(1_704_067_200_000_001)).expect("ts"),
            Some("2024-01-01 00:00:00.000001".into())
        );
        let dec = SchemaBuilder::new(SchemaType::Bytes)
            .name(DECIMAL)
            .parameter("scale", "2")
            .build_owned();
        // -12345 as two's complement: 0xCF 0xC7.
        assert_eq!(
            value_text(&dec, &Value::Bytes(vec![0xCF, 0xC7])).expect("dec"),
            Some("-123.45".into())
        );
        assert_eq!(
            value_text(&dec, &Value::Bytes(vec![0x05])).expect("dec"),
            Some("0.05".into())
        );
        assert_eq!(
            value_text(&Schema::of(SchemaType::Bytes), &Value::Bytes(vec![0, 0xff])).expect("b"),
            Some("00ff".into())
        );
        let ints =
            SchemaBuilder::array(SchemaBuilder::new(SchemaType::Int32).build()).build_owned();
        assert_eq!(
            value_text(&ints, &Value::Array(vec![Value::Int32(1), Value::Null])).expect("a"),
            Some("[1,null]".into())
        );
        assert_eq!(value_text(&ints, &Value::Null).expect("null"), None);
        assert!(value_text(&date, &Value::String("x".into())).is_err());
    }
}
