//! Query results: typed values as KQL prints them.

use chrono::DateTime;
use serde_json::Value as Json;

use crate::translate::Column;
use crate::types::Type;

/// One value of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null (never for strings).
    Null,
    /// A bool.
    Bool(bool),
    /// An int or a long.
    Long(i64),
    /// A real.
    Real(f64),
    /// A decimal, as exact text.
    Decimal(String),
    /// A string.
    String(String),
    /// A datetime: microseconds since the epoch, UTC.
    DateTime(i64),
    /// A timespan: microseconds.
    TimeSpan(i64),
    /// A dynamic value.
    Dynamic(Json),
}

impl Value {
    /// The value as a number on a chart axis (datetimes and timespans in
    /// microseconds), if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Long(v) | Value::DateTime(v) | Value::TimeSpan(v) => Some(*v as f64),
            Value::Real(v) => Some(*v),
            Value::Decimal(s) => s.parse().ok(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    /// The value as JSON, as Azure Data Explorer's v2 response carries it:
    /// datetimes and timespans as KQL's text, decimals as text.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Long(v) => Json::from(*v),
            Value::Real(v) => serde_json::Number::from_f64(*v)
                .map(Json::Number)
                .unwrap_or_else(|| Json::String(format_real(*v))),
            Value::Decimal(s) | Value::String(s) => Json::String(s.clone()),
            Value::DateTime(_) | Value::TimeSpan(_) => Json::String(self.to_string()),
            Value::Dynamic(j) => j.clone(),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Real(v) => f.write_str(&format_real(*v)),
            Value::Decimal(s) | Value::String(s) => f.write_str(s),
            Value::DateTime(us) => f.write_str(&format_datetime(*us)),
            Value::TimeSpan(us) => f.write_str(&format_timespan(*us)),
            Value::Dynamic(j) => write!(f, "{j}"),
        }
    }
}

/// A real as KQL prints it: shortest round-trip digits, no `.0` on whole
/// numbers.
pub fn format_real(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v}")
    }
}

/// A datetime as KQL prints it: `2020-10-09T07:23:10Z`, with the fraction
/// of a second when there is one.
pub fn format_datetime(us: i64) -> String {
    match DateTime::from_timestamp_micros(us) {
        Some(d) => {
            let frac = us.rem_euclid(1_000_000);
            let base = d.format("%Y-%m-%dT%H:%M:%S").to_string();
            if frac == 0 {
                format!("{base}Z")
            } else {
                let digits = format!("{frac:06}");
                format!("{base}.{}Z", digits.trim_end_matches('0'))
            }
        }
        None => format!("{us}us"),
    }
}

/// A timespan as KQL prints it: `[-][d.]hh:mm:ss[.fffffff]`
/// (`00:10:00`, `1.00:00:00`, `00:00:01.5000000`).
pub fn format_timespan(us: i64) -> String {
    let neg = us < 0;
    let a = us.unsigned_abs();
    let days = a / 86_400_000_000;
    let h = (a / 3_600_000_000) % 24;
    let m = (a / 60_000_000) % 60;
    let s = (a / 1_000_000) % 60;
    let frac = a % 1_000_000;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{:07}", frac * 10));
    }
    out
}

/// Parses KQL's datetime text (`2020-10-09T07:23:10Z` and the other ISO
/// forms) to microseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    crate::sqlgen::datetime_literal(s).ok().flatten()
}

/// Parses KQL's timespan text (`1.00:00:00`, `00:10:00.5`) to
/// microseconds.
pub fn parse_timespan(s: &str) -> Option<i64> {
    crate::sqlgen::timespan_literal(s).ok().flatten()
}

/// A query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    /// The columns.
    pub columns: Vec<Column>,
    /// The rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The rows as JSON objects (column name → value), in order.
    pub fn to_json_rows(&self) -> Json {
        Json::Array(
            self.rows
                .iter()
                .map(|r| {
                    let mut m = serde_json::Map::new();
                    for (c, v) in self.columns.iter().zip(r) {
                        m.insert(c.name.clone(), v.to_json());
                    }
                    Json::Object(m)
                })
                .collect(),
        )
    }

    /// Reads a value of type `ty` from JSON as ADX's v2 response carries
    /// it.
    pub fn value_from_json(ty: Type, v: &Json) -> Value {
        match (ty, v) {
            (_, Json::Null) if ty != Type::String => Value::Null,
            (Type::String, Json::Null) => Value::String(String::new()),
            (Type::String, Json::String(s)) => Value::String(s.clone()),
            (Type::String, other) => Value::String(other.to_string()),
            (Type::Bool, Json::Bool(b)) => Value::Bool(*b),
            (Type::Int | Type::Long, Json::Number(n)) => n
                .as_i64()
                .map(Value::Long)
                .unwrap_or_else(|| Value::Real(n.as_f64().unwrap_or(f64::NAN))),
            (Type::Real, Json::Number(n)) => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
            (Type::Real, Json::String(s)) => match s.as_str() {
                "NaN" => Value::Real(f64::NAN),
                "Infinity" => Value::Real(f64::INFINITY),
                "-Infinity" => Value::Real(f64::NEG_INFINITY),
                _ => Value::String(s.clone()),
            },
            (Type::Decimal, Json::String(s)) => Value::Decimal(s.clone()),
            (Type::Decimal, Json::Number(n)) => Value::Decimal(n.to_string()),
            (Type::DateTime, Json::String(s)) => parse_datetime(s)
                .map(Value::DateTime)
                .unwrap_or_else(|| Value::String(s.clone())),
            (Type::TimeSpan, Json::String(s)) => parse_timespan(s)
                .map(Value::TimeSpan)
                .unwrap_or_else(|| Value::String(s.clone())),
            (Type::Dynamic, Json::String(s)) => serde_json::from_str(s)
                .map(Value::Dynamic)
                .unwrap_or_else(|_| Value::Dynamic(v.clone())),
            (Type::Dynamic, other) => Value::Dynamic(other.clone()),
            (_, other) => Value::String(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kql_text_forms() {
        assert_eq!(format_timespan(600_000_000), "00:10:00");
        assert_eq!(format_timespan(86_400_000_000), "1.00:00:00");
        assert_eq!(format_timespan(1_500_000), "00:00:01.5000000");
        assert_eq!(format_timespan(-90_000_000), "-00:01:30");
        assert_eq!(
            format_datetime(1_602_228_190_000_000),
            "2020-10-09T07:23:10Z"
        );
        assert_eq!(
            format_datetime(1_602_228_190_500_000),
            "2020-10-09T07:23:10.5Z"
        );
        assert_eq!(format_real(149.5), "149.5");
        assert_eq!(format_real(150.0), "150");
        assert_eq!(parse_timespan("1.00:00:00"), Some(86_400_000_000));
        assert_eq!(
            parse_datetime("2020-10-09T07:23:10Z"),
            Some(1_602_228_190_000_000)
        );
    }
}
