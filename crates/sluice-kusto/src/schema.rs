//! Kusto tables and JSON ingestion mappings from a record's Connect schema,
//! for `kusto.tables.create` (Sluice's own extension: the official connector
//! never creates tables).
//!
//! Each column's Kusto type is chosen for what the JSON batch writer
//! ([`crate::format`]) actually puts at `$.<field>`, so that a plain path
//! mapping ingests every value (the writer is the official connector's,
//! which writes logical types in their Connect physical form):
//!
//! | Connect schema | JSON written | Kusto type |
//! |---|---|---|
//! | int8, int16, int32 | number | `int` |
//! | int64 | number | `long` |
//! | float, double | number | `real` |
//! | boolean | `true`/`false` | `bool` |
//! | string, Debezium `Enum`, `EnumSet`, `Xml`, `ZonedTime`, `Interval` | string | `string` |
//! | bytes, Debezium `Bits` | base64 string | `string` |
//! | `Decimal` | base64 of the unscaled bytes (`decimal.format` BASE64, the writer's setting) | `string` |
//! | Connect `Date`, Debezium `Date` | days since the epoch | `int` |
//! | Connect `Time`, Debezium `Time` | ms since midnight | `int` |
//! | Debezium `MicroTime`, `NanoTime`, `MicroDuration` | number | `long` |
//! | Connect `Timestamp`, Debezium `Timestamp`, `MicroTimestamp`, `NanoTimestamp` | epoch ms / µs / ns | `long` |
//! | Debezium `ZonedTimestamp` | ISO-8601 string | `datetime` |
//! | Debezium `Uuid` | string | `guid` |
//! | Debezium `Json` | string holding JSON | `dynamic` |
//! | struct, map, array (incl. `VariableScaleDecimal`, geometries) | object / array | `dynamic` |
//!
//! A `decimal` column would stay empty for the base64 text, and a
//! `datetime` column for an epoch number (Kusto only converts those with a
//! mapping transform such as `DateTimeFromUnixMilliseconds`, which a plain
//! path mapping does not carry), hence `string` and `long` there: the data
//! is kept, and queries convert it (`unixtime_milliseconds_todatetime(ts)`,
//! `unixtime_microseconds_todatetime(micro)`, `datetime(1970-01-01) +
//! date * 1d`).

use sluice_core::converter::{
    DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME, TIME_LOGICAL_NAME,
};
use sluice_core::record::SinkRecord;
use sluice_core::schema::{Schema, SchemaRef, SchemaType};

/// The Kusto type for one field's schema.
fn kusto_type(s: &Schema) -> &'static str {
    match s.name.as_deref() {
        Some(DECIMAL_LOGICAL_NAME) => return "string",
        Some(DATE_LOGICAL_NAME | TIME_LOGICAL_NAME) => return "int",
        Some(TIMESTAMP_LOGICAL_NAME) => return "long",
        Some("io.debezium.time.ZonedTimestamp") if s.ty == SchemaType::String => return "datetime",
        Some("io.debezium.data.Uuid") if s.ty == SchemaType::String => return "guid",
        Some("io.debezium.data.Json") if s.ty == SchemaType::String => return "dynamic",
        _ => {}
    }
    match s.ty {
        SchemaType::Int8 | SchemaType::Int16 | SchemaType::Int32 => "int",
        SchemaType::Int64 => "long",
        SchemaType::Float32 | SchemaType::Float64 => "real",
        SchemaType::Boolean => "bool",
        SchemaType::String | SchemaType::Bytes => "string",
        SchemaType::Array | SchemaType::Map | SchemaType::Struct => "dynamic",
    }
}

/// The Kusto columns for a struct schema (a row, e.g. after Debezium's
/// `ExtractNewRecordState`): each field's name and Kusto type, in field
/// order. An error for schemas that are not structs, structs without
/// fields, and field names that repeat when compared as Kusto does
/// (case-sensitively, so only exact repeats).
pub fn kusto_columns(schema: &Schema) -> Result<Vec<(String, &'static str)>, String> {
    if schema.ty != SchemaType::Struct {
        return Err(format!(
            "a table needs a struct schema, but the record's schema is a {}",
            schema.ty.json_name()
        ));
    }
    if schema.fields.is_empty() {
        return Err(format!(
            "the struct schema {} has no fields to make columns of",
            schema.name_str()
        ));
    }
    let mut columns: Vec<(String, &'static str)> = Vec::with_capacity(schema.fields.len());
    for f in &schema.fields {
        if f.name.is_empty() {
            return Err("a field has an empty name, which cannot be a Kusto column".into());
        }
        if columns.iter().any(|(c, _)| *c == f.name) {
            return Err(format!("field '{}' appears twice", f.name));
        }
        columns.push((f.name.clone(), kusto_type(&f.schema)));
    }
    Ok(columns)
}

/// Whether a name can stand bare in a JSONPath (`$.name`).
fn plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes `s` for the inside of a single-quoted Kusto string literal (or
/// a `['…']` name, or a JSONPath `['…']` member): backslash escapes for
/// `\`, `'`, and control characters.
fn escape_single_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `['name']`, or `["name"]` for a name with a single quote (Kusto takes
/// both, and the double-quoted form needs no escape there); a name with both
/// quotes is single-quoted with escapes. Used for entity names and JSONPath
/// members alike.
fn bracketed(name: &str) -> String {
    let plain = !name.contains('\\') && !name.chars().any(|c| (c as u32) < 0x20);
    if plain && !name.contains('\'') {
        format!("['{name}']")
    } else if plain && !name.contains('"') {
        format!("[\"{name}\"]")
    } else {
        format!("['{}']", escape_single_quoted(name))
    }
}

/// A Kusto entity name, bracket-quoted.
fn quoted_name(name: &str) -> String {
    bracketed(name)
}

/// The JSONPath of a top-level field: `$.name`, or `$['odd name']`.
fn json_path(name: &str) -> String {
    if plain_identifier(name) {
        format!("$.{name}")
    } else {
        format!("${}", bracketed(name))
    }
}

/// A JSON ingestion mapping taking each column from the top-level field of
/// the same name: `[{"column":"c","Properties":{"path":"$.c"}},...]`, with
/// `$['name']` paths for names that are not plain identifiers.
pub fn json_mapping(columns: &[(String, &'static str)]) -> String {
    json_mapping_routed(&same_name_routes(columns))
}

fn same_name_routes(columns: &[(String, &'static str)]) -> Vec<(String, String)> {
    columns
        .iter()
        .map(|(name, _)| (name.clone(), name.clone()))
        .collect()
}

/// A JSON mapping whose columns take the values of fields of other names:
/// `(column, field)` pairs (a field whose type changed goes to a column of
/// its own).
pub fn json_mapping_routed(routes: &[(String, String)]) -> String {
    let items: Vec<serde_json::Value> = routes
        .iter()
        .map(|(column, field)| {
            serde_json::json!({
                "column": column,
                "Properties": {"path": json_path(field)},
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// [`create_mapping_command`] for a [routed](json_mapping_routed) mapping.
pub fn create_routed_mapping_command(
    table: &str,
    mapping_name: &str,
    routes: &[(String, String)],
) -> String {
    format!(
        ".create-or-alter table {} ingestion json mapping '{}' '{}'",
        quoted_name(table),
        escape_single_quoted(mapping_name),
        escape_single_quoted(&json_mapping_routed(routes))
    )
}

/// The `&'static` name of a Kusto type as `cslschema` shows it (unknown
/// names are `dynamic`, which takes any JSON).
pub fn static_type(name: &str) -> &'static str {
    const TYPES: &[&str] = &[
        "bool", "datetime", "decimal", "dynamic", "guid", "int", "long", "real", "string",
        "timespan",
    ];
    let lower = name.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "boolean" => "bool",
        "date" => "datetime",
        "double" => "real",
        "time" => "timespan",
        "uniqueid" => "guid",
        other => other,
    };
    TYPES
        .iter()
        .find(|t| **t == canonical)
        .copied()
        .unwrap_or("dynamic")
}

/// Parses a `cslschema` (`name:type, ...`; names may be `['quoted']`).
pub fn parse_cslschema(schema: &str) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let mut rest = schema.trim();
    while !rest.is_empty() {
        let (name, after) = if let Some(r) = rest.strip_prefix("['") {
            // A quoted name: up to the closing '] (quotes inside are \').
            let mut end = None;
            let bytes = r.as_bytes();
            let mut i = 0;
            while i + 1 < bytes.len() {
                if bytes[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if bytes[i] == b'\'' && bytes[i + 1] == b']' {
                    end = Some(i);
                    break;
                }
                i += 1;
            }
            let Some(end) = end else { break };
            (r[..end].replace("\\'", "'"), &r[end + 2..])
        } else {
            match rest.find(':') {
                Some(i) => (rest[..i].trim().to_string(), &rest[i..]),
                None => break,
            }
        };
        let Some(after) = after.trim_start().strip_prefix(':') else {
            break;
        };
        let (ty, next) = match after.find(',') {
            Some(i) => (&after[..i], &after[i + 1..]),
            None => (after, ""),
        };
        out.push((name, static_type(ty)));
        rest = next.trim();
    }
    out
}

fn column_list(columns: &[(String, &'static str)]) -> String {
    columns
        .iter()
        .map(|(name, ty)| format!("{}:{ty}", quoted_name(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `.create-merge table ['T'] (['c']:type, ...)`: creates the table, or
/// adds the missing columns to an existing one.
pub fn create_table_command(table: &str, columns: &[(String, &'static str)]) -> String {
    format!(
        ".create-merge table {} ({})",
        quoted_name(table),
        column_list(columns)
    )
}

/// `.alter-merge table ['T'] (['c']:type, ...)`: adds the columns an
/// existing table lacks.
pub fn alter_merge_command(table: &str, columns: &[(String, &'static str)]) -> String {
    format!(
        ".alter-merge table {} ({})",
        quoted_name(table),
        column_list(columns)
    )
}

/// `.create-or-alter table ['T'] ingestion json mapping 'name' '<json>'`,
/// the mapping of [`json_mapping`] as a Kusto string literal.
pub fn create_mapping_command(
    table: &str,
    mapping_name: &str,
    columns: &[(String, &'static str)],
) -> String {
    create_routed_mapping_command(table, mapping_name, &same_name_routes(columns))
}

/// The value schema of a record (None for schemaless values and
/// tombstones).
pub fn value_schema(record: &SinkRecord) -> Option<SchemaRef> {
    match &record.value {
        Some(v) if !v.is_null() => record.value_schema.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cslschema_is_read_back() {
        assert_eq!(
            parse_cslschema(
                "orderid:long, amount:int,['odd name']:string,['it\\'s']:System.Double"
            ),
            vec![
                ("orderid".to_string(), "long"),
                ("amount".to_string(), "int"),
                ("odd name".to_string(), "string"),
                ("it's".to_string(), "dynamic"),
            ]
        );
        assert_eq!(parse_cslschema(""), Vec::<(String, &str)>::new());
        assert_eq!(static_type("Double"), "real");
    }

    #[test]
    fn plain_identifiers() {
        assert!(plain_identifier("orderid"));
        assert!(plain_identifier("_a1"));
        assert!(!plain_identifier("1a"));
        assert!(!plain_identifier("a b"));
        assert!(!plain_identifier("a-b"));
        assert!(!plain_identifier(""));
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(escape_single_quoted(r"it's a\b"), r"it\'s a\\b");
        assert_eq!(escape_single_quoted("a\nb\u{1}"), "a\\nb\\u0001");
    }
}
