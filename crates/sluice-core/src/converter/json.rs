//! Kafka Connect's `org.apache.kafka.connect.json.JsonConverter`, byte for
//! byte: the `{"schema":…,"payload":…}` envelope, schemas in the attribute
//! order `JsonConverter.asJsonSchema` builds them, and values as Jackson
//! writes its tree (compact, Java number forms, Jackson's string escapes,
//! base64 bytes).
//!
//! Serialization writes straight into the output buffer; a schema's JSON is
//! rendered once and then copied (see [`SchemaCache`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::json_tree::{self, Json, Number};
use super::{bignum, javafmt, ConvertError, Converter};
use crate::config::{ConfigError, Props};
use crate::schema::{Field, Schema, SchemaRef, SchemaType};
use crate::value::Value;

/// `org.apache.kafka.connect.data.Decimal`'s logical name.
pub const DECIMAL_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Decimal";
/// `org.apache.kafka.connect.data.Date`'s logical name.
pub const DATE_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Date";
/// `org.apache.kafka.connect.data.Time`'s logical name.
pub const TIME_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Time";
/// `org.apache.kafka.connect.data.Timestamp`'s logical name.
pub const TIMESTAMP_LOGICAL_NAME: &str = "org.apache.kafka.connect.data.Timestamp";

/// How Decimal values are written (`decimal.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalFormat {
    /// Base64 of the unscaled two's-complement bytes (the default).
    Base64,
    /// A JSON number in `BigDecimal.toString()` form.
    Numeric,
}

/// `JsonConverterConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonConverterConfig {
    /// `schemas.enable` (default true): wrap values in the schema envelope.
    pub schemas_enable: bool,
    /// `decimal.format` (default BASE64).
    pub decimal_format: DecimalFormat,
    /// `replace.null.with.default` (default true): write a field's default
    /// instead of null, and read null as the default.
    pub replace_null_with_default: bool,
    /// `schemas.cache.size` (default 1000): schemas kept with their JSON,
    /// each way (writing renders a schema once; reading builds it once).
    pub schemas_cache_size: usize,
}

impl Default for JsonConverterConfig {
    fn default() -> Self {
        JsonConverterConfig {
            schemas_enable: true,
            decimal_format: DecimalFormat::Base64,
            replace_null_with_default: true,
            schemas_cache_size: 1000,
        }
    }
}

/// Parses a boolean the way Kafka's `ConfigDef` does (trimmed,
/// case-insensitive).
pub(crate) fn config_bool(
    props: &Props,
    key: &str,
    prefix: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match props.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ConfigError::new(
                format!("{prefix}{key}"),
                Some(v),
                "Expected value to be either true or false",
            )),
        },
    }
}

impl JsonConverterConfig {
    /// Reads the converter's own properties (prefix already removed);
    /// `key_prefix` (`key.converter.` / `value.converter.`) is only used to
    /// name keys in errors. Unknown keys are ignored, as Kafka does.
    pub fn from_props(props: &Props, key_prefix: &str) -> Result<Self, ConfigError> {
        let mut c = JsonConverterConfig {
            schemas_enable: config_bool(props, "schemas.enable", key_prefix, true)?,
            replace_null_with_default: config_bool(
                props,
                "replace.null.with.default",
                key_prefix,
                true,
            )?,
            ..JsonConverterConfig::default()
        };
        if let Some(v) = props.get("decimal.format") {
            c.decimal_format = match v.trim().to_ascii_uppercase().as_str() {
                "BASE64" => DecimalFormat::Base64,
                "NUMERIC" => DecimalFormat::Numeric,
                _ => {
                    return Err(ConfigError::new(
                        format!("{key_prefix}decimal.format"),
                        Some(v),
                        "String must be one of (case insensitive): BASE64, NUMERIC",
                    ))
                }
            };
        }
        if let Some(v) = props.get("schemas.cache.size") {
            let n: i64 = v.trim().parse().map_err(|_| {
                ConfigError::new(
                    format!("{key_prefix}schemas.cache.size"),
                    Some(v),
                    "Expected an integer",
                )
            })?;
            c.schemas_cache_size = usize::try_from(n.max(1)).unwrap_or(1);
        }
        Ok(c)
    }
}

/// A conversion error inside a value, with the path of fields that leads to
/// it (innermost first while it propagates).
#[derive(Debug)]
pub(crate) struct PathError {
    path: Vec<String>,
    message: String,
}

impl PathError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        PathError {
            path: Vec::new(),
            message: message.into(),
        }
    }
    /// The message without the path.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
    fn at(mut self, segment: impl Into<String>) -> Self {
        self.path.push(segment.into());
        self
    }
    pub(crate) fn into_convert(self, topic: &str) -> ConvertError {
        let message = if self.path.is_empty() {
            self.message
        } else {
            let mut p = String::new();
            for seg in self.path.iter().rev() {
                if !p.is_empty() && !seg.starts_with('[') {
                    p.push('.');
                }
                p.push_str(seg);
            }
            format!("field '{p}': {}", self.message)
        };
        ConvertError {
            topic: topic.to_string(),
            message,
        }
    }
}

/// Kafka's upper-case name of a schema type (`Schema.Type`), for messages.
fn type_name(ty: SchemaType) -> &'static str {
    match ty {
        SchemaType::Int8 => "INT8",
        SchemaType::Int16 => "INT16",
        SchemaType::Int32 => "INT32",
        SchemaType::Int64 => "INT64",
        SchemaType::Float32 => "FLOAT32",
        SchemaType::Float64 => "FLOAT64",
        SchemaType::Boolean => "BOOLEAN",
        SchemaType::String => "STRING",
        SchemaType::Bytes => "BYTES",
        SchemaType::Array => "ARRAY",
        SchemaType::Map => "MAP",
        SchemaType::Struct => "STRUCT",
    }
}

/// The variant name of a value, for messages.
pub fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int8(_) => "int8",
        Value::Int16(_) => "int16",
        Value::Int32(_) => "int32",
        Value::Int64(_) => "int64",
        Value::Float32(_) => "float",
        Value::Float64(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Struct(_) => "struct",
    }
}

/// The scale parameter of a Decimal schema.
pub(crate) fn decimal_scale(schema: &Schema) -> Result<i32, PathError> {
    let s = schema
        .parameter("scale")
        .ok_or_else(|| PathError::new("Invalid Decimal schema: scale parameter not found."))?;
    s.trim().parse::<i32>().map_err(|_| {
        PathError::new(format!(
            "Invalid scale parameter found in Decimal schema: '{s}'"
        ))
    })
}

// ---------------------------------------------------------------------------
// Writing

/// Appends an integer in decimal.
pub(crate) fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let negative = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a JSON string with Jackson's default escaping: `"` and `\`, the
/// short forms `\b \t \n \f \r`, other control characters as `\u00XX` with
/// upper-case hex; everything else (including `/`, DEL and non-ASCII) raw.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x0D => out.extend_from_slice(b"\\r"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends bytes as a quoted base64 string (Jackson's default variant:
/// standard alphabet, padded, no line feeds).
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = bytes.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends a Java float, quoting non-finite values as Jackson does
/// (`QUOTE_NON_NUMERIC_NUMBERS` is on by default).
fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        javafmt::write_float(out, v);
    } else {
        out.push(b'"');
        javafmt::write_float(out, v);
        out.push(b'"');
    }
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        javafmt::write_double(out, v);
    } else {
        out.push(b'"');
        javafmt::write_double(out, v);
        out.push(b'"');
    }
}

/// Serializer state shared by the schema and value writers.
struct Writer<'a> {
    cfg: &'a JsonConverterConfig,
}

impl Writer<'_> {
    /// `asJsonSchema`: type, items / keys+values / fields, optional, name,
    /// version, doc, parameters, default; `field` last for a struct field.
    fn schema(&self, out: &mut Vec<u8>, s: &Schema, field: Option<&str>) -> Result<(), PathError> {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(s.ty.json_name().as_bytes());
        out.push(b'"');
        match s.ty {
            SchemaType::Array => {
                out.extend_from_slice(b",\"items\":");
                let items = s
                    .items
                    .as_ref()
                    .ok_or_else(|| PathError::new("array schema without an items schema"))?;
                self.schema(out, items, None)?;
            }
            SchemaType::Map => {
                let (keys, values) = match (&s.keys, &s.items) {
                    (Some(k), Some(v)) => (k, v),
                    _ => return Err(PathError::new("map schema without keys and values schemas")),
                };
                out.extend_from_slice(b",\"keys\":");
                self.schema(out, keys, None)?;
                out.extend_from_slice(b",\"values\":");
                self.schema(out, values, None)?;
            }
            SchemaType::Struct => {
                out.extend_from_slice(b",\"fields\":[");
                for (i, f) in s.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.schema(out, &f.schema, Some(&f.name))
                        .map_err(|e| e.at(&f.name))?;
                }
                out.push(b']');
            }
            _ => {}
        }
        out.extend_from_slice(if s.optional {
            b",\"optional\":true"
        } else {
            b",\"optional\":false"
        });
        if let Some(name) = &s.name {
            out.extend_from_slice(b",\"name\":");
            write_str(out, name);
        }
        if let Some(v) = s.version {
            out.extend_from_slice(b",\"version\":");
            write_i64(out, i64::from(v));
        }
        if let Some(doc) = &s.doc {
            out.extend_from_slice(b",\"doc\":");
            write_str(out, doc);
        }
        if !s.parameters.is_empty() {
            out.extend_from_slice(b",\"parameters\":{");
            for (i, (k, v)) in s.parameters.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_str(out, v);
            }
            out.push(b'}');
        }
        if let Some(d) = s.default.as_ref().filter(|d| !d.is_null()) {
            out.extend_from_slice(b",\"default\":");
            self.value(out, Some(s), d).map_err(|e| e.at("(default)"))?;
        }
        if let Some(f) = field {
            out.extend_from_slice(b",\"field\":");
            write_str(out, f);
        }
        out.push(b'}');
        Ok(())
    }

    /// `convertToJson` for a null value.
    fn null(&self, out: &mut Vec<u8>, schema: Option<&Schema>) -> Result<(), PathError> {
        let Some(s) = schema else {
            out.extend_from_slice(b"null");
            return Ok(());
        };
        if self.cfg.replace_null_with_default {
            if let Some(d) = s.default.as_ref().filter(|d| !d.is_null()) {
                return self.value(out, Some(s), d);
            }
        }
        if s.optional {
            out.extend_from_slice(b"null");
            Ok(())
        } else {
            Err(PathError::new(format!(
                "null value for a required {} field that has no default value",
                type_name(s.ty)
            )))
        }
    }

    /// `convertToJson`.
    fn value(
        &self,
        out: &mut Vec<u8>,
        schema: Option<&Schema>,
        v: &Value,
    ) -> Result<(), PathError> {
        if v.is_null() {
            return self.null(out, schema);
        }
        let ty = match schema {
            Some(s) => {
                if s.name.as_deref() == Some(DECIMAL_LOGICAL_NAME) {
                    return self.decimal(out, s, v);
                }
                s.ty
            }
            None => match v {
                Value::Null => return self.null(out, None),
                Value::Bool(_) => SchemaType::Boolean,
                Value::Int8(_) => SchemaType::Int8,
                Value::Int16(_) => SchemaType::Int16,
                Value::Int32(_) => SchemaType::Int32,
                Value::Int64(_) => SchemaType::Int64,
                Value::Float32(_) => SchemaType::Float32,
                Value::Float64(_) => SchemaType::Float64,
                Value::String(_) => SchemaType::String,
                Value::Bytes(_) => SchemaType::Bytes,
                Value::Array(_) => SchemaType::Array,
                Value::Map(_) => SchemaType::Map,
                Value::Struct(_) => {
                    return Err(PathError::new("a struct value needs a struct schema"))
                }
            },
        };
        match (ty, v) {
            (SchemaType::Int8, Value::Int8(x)) => write_i64(out, i64::from(*x)),
            (SchemaType::Int16, Value::Int16(x)) => write_i64(out, i64::from(*x)),
            (SchemaType::Int32, Value::Int32(x)) => write_i64(out, i64::from(*x)),
            (SchemaType::Int64, Value::Int64(x)) => write_i64(out, *x),
            (SchemaType::Float32, Value::Float32(x)) => write_f32(out, *x),
            (SchemaType::Float64, Value::Float64(x)) => write_f64(out, *x),
            (SchemaType::Boolean, Value::Bool(b)) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" })
            }
            (SchemaType::String, Value::String(s)) => write_str(out, s),
            (SchemaType::Bytes, Value::Bytes(b)) => write_base64(out, b),
            (SchemaType::Array, Value::Array(items)) => {
                let item_schema = schema.and_then(|s| s.items.as_deref());
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, item_schema, item)
                        .map_err(|e| e.at(format!("[{i}]")))?;
                }
                out.push(b']');
            }
            (SchemaType::Map, Value::Map(entries)) => self.map(out, schema, entries)?,
            (SchemaType::Struct, Value::Struct(values)) => {
                let Some(s) = schema else {
                    return Err(PathError::new("a struct value needs a struct schema"));
                };
                if values.len() != s.fields.len() {
                    return Err(PathError::new(format!(
                        "struct value has {} fields but its schema {} has {}",
                        values.len(),
                        s.name_str(),
                        s.fields.len()
                    )));
                }
                out.push(b'{');
                for (i, (f, fv)) in s.fields.iter().zip(values).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, &f.name);
                    out.push(b':');
                    self.value(out, Some(&f.schema), fv)
                        .map_err(|e| e.at(&f.name))?;
                }
                out.push(b'}');
            }
            (ty, v) => {
                return Err(PathError::new(format!(
                    "Invalid type for {}: {} value",
                    type_name(ty),
                    value_kind(v)
                )))
            }
        }
        Ok(())
    }

    fn decimal(&self, out: &mut Vec<u8>, s: &Schema, v: &Value) -> Result<(), PathError> {
        let Value::Bytes(b) = v else {
            return Err(PathError::new(format!(
                "Invalid type for Decimal: expected the unscaled bytes but was a {} value",
                value_kind(v)
            )));
        };
        match self.cfg.decimal_format {
            DecimalFormat::Base64 => write_base64(out, b),
            DecimalFormat::Numeric => {
                if b.is_empty() {
                    return Err(PathError::new("Decimal value has no unscaled bytes"));
                }
                javafmt::write_big_decimal(out, b, decimal_scale(s)?);
            }
        }
        Ok(())
    }

    fn map(
        &self,
        out: &mut Vec<u8>,
        schema: Option<&Schema>,
        entries: &[(Value, Value)],
    ) -> Result<(), PathError> {
        let key_schema = schema.and_then(|s| s.keys.as_deref());
        let value_schema = schema.and_then(|s| s.items.as_deref());
        // String keys make a JSON object; any other key type an array of
        // [key, value] pairs. Without a schema, the keys decide.
        let object_mode = match key_schema {
            Some(k) => k.ty == SchemaType::String,
            None if schema.is_some() => false,
            None => entries.iter().all(|(k, _)| matches!(k, Value::String(_))),
        };
        if object_mode {
            out.push(b'{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let key = self.key_text(key_schema, k)?;
                write_str(out, &key);
                out.push(b':');
                self.value(out, value_schema, v)
                    .map_err(|e| e.at(key.into_owned()))?;
            }
            out.push(b'}');
        } else {
            out.push(b'[');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                self.value(out, key_schema, k)
                    .map_err(|e| e.at(format!("[{i}].key")))?;
                out.push(b',');
                self.value(out, value_schema, v)
                    .map_err(|e| e.at(format!("[{i}].value")))?;
                out.extend_from_slice(b"]");
            }
            out.push(b']');
        }
        Ok(())
    }

    /// An object-mode map key: Jackson's `asText()` of the converted key.
    fn key_text<'v>(
        &self,
        schema: Option<&'v Schema>,
        k: &'v Value,
    ) -> Result<Cow<'v, str>, PathError> {
        match k {
            Value::String(s) => Ok(Cow::Borrowed(s)),
            Value::Null => {
                if let Some(s) = schema {
                    if self.cfg.replace_null_with_default {
                        if let Some(Value::String(d)) = &s.default {
                            return Ok(Cow::Borrowed(d));
                        }
                    }
                    if !s.optional {
                        return Err(PathError::new(
                            "null map key for a required STRING key schema",
                        ));
                    }
                }
                Ok(Cow::Borrowed("null"))
            }
            other => Err(PathError::new(format!(
                "Invalid type for STRING: {} map key",
                value_kind(other)
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// Schema cache

/// Rendered schema JSON, keyed by the schema's address. The entry keeps a
/// shallow copy of the schema (which holds its child `Arc`s alive), so a hit
/// needs the top-level attributes equal and the children the same objects
/// (or, failing that, equal): an address reused by a different schema can
/// never return the wrong text.
struct SchemaCache {
    entries: HashMap<usize, (Schema, Arc<[u8]>)>,
    capacity: usize,
}

/// Schemas read by [`JsonConverter::to_connect`], by their JSON's bytes
/// (`None` for `"schema": null`).
struct ReadCache {
    entries: HashMap<Arc<[u8]>, Option<SchemaRef>>,
    capacity: usize,
    /// The last schema read: consecutive records mostly share one, and a
    /// byte comparison finds it without scanning or hashing.
    last: Option<(Arc<[u8]>, Option<SchemaRef>)>,
}

fn same_child(a: &SchemaRef, b: &SchemaRef) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

fn same_opt_child(a: &Option<SchemaRef>, b: &Option<SchemaRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same_child(a, b),
        _ => false,
    }
}

fn same_schema(a: &Schema, b: &Schema) -> bool {
    a.ty == b.ty
        && a.optional == b.optional
        && a.name == b.name
        && a.version == b.version
        && a.doc == b.doc
        && a.parameters == b.parameters
        && a.default == b.default
        && a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|(x, y): (&Field, &Field)| x.name == y.name && same_child(&x.schema, &y.schema))
        && same_opt_child(&a.keys, &b.keys)
        && same_opt_child(&a.items, &b.items)
}

// ---------------------------------------------------------------------------
// Reading

fn null_for(schema: &Schema, cfg: &JsonConverterConfig) -> Result<Value, PathError> {
    if cfg.replace_null_with_default {
        if let Some(d) = schema.default.as_ref().filter(|d| !d.is_null()) {
            return Ok(d.clone());
        }
    }
    if schema.optional {
        Ok(Value::Null)
    } else {
        Err(PathError::new(format!(
            "Invalid null value for required {} field",
            type_name(schema.ty)
        )))
    }
}

fn expect_kind(what: &str, j: &Json) -> PathError {
    PathError::new(format!("expected {what} but found {}", j.kind()))
}

/// Standard base64 as Jackson reads it: whitespace skipped, padding optional,
/// trailing bits ignored.
fn decode_base64(text: &str) -> Result<Vec<u8>, PathError> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let cleaned: Cow<'_, str> = if text.bytes().any(|b| b <= b' ') {
        Cow::Owned(text.chars().filter(|c| *c > ' ').collect())
    } else {
        Cow::Borrowed(text)
    };
    ENGINE
        .decode(cleaned.as_bytes())
        .map_err(|e| PathError::new(format!("invalid base64 bytes: {e}")))
}

fn decimal_from_json(schema: &Schema, j: &Json) -> Result<Value, PathError> {
    match j {
        Json::Num(n) => {
            let scale = decimal_scale(schema)?;
            let (negative, mut digits, num_scale) = n.decimal_parts();
            let target = i64::from(scale);
            if num_scale < target {
                let pad = target - num_scale;
                if pad > 100_000 {
                    return Err(PathError::new(format!(
                        "Decimal value {} is too far from the schema's scale {scale}",
                        n.text
                    )));
                }
                digits.extend(std::iter::repeat_n(b'0', pad as usize));
            } else if num_scale > target {
                // Our Decimal values carry the schema's scale, so extra
                // fractional digits must be zeros.
                let extra = usize::try_from(num_scale - target).unwrap_or(usize::MAX);
                let keep = digits.len().saturating_sub(extra);
                if digits[keep..].iter().any(|d| *d != b'0') {
                    return Err(PathError::new(format!(
                        "Decimal value {} has more fractional digits than the schema's scale {scale}",
                        n.text
                    )));
                }
                digits.truncate(keep);
            }
            let zero = digits.iter().all(|d| *d == b'0');
            Ok(Value::Bytes(bignum::decimal_to_twos_complement(
                negative && !zero,
                &digits,
            )))
        }
        Json::Str(s) => {
            let bytes = decode_base64(s)?;
            if bytes.is_empty() {
                return Err(PathError::new("Invalid bytes for Decimal field: no bytes"));
            }
            Ok(Value::Bytes(bytes))
        }
        other => Err(PathError::new(format!(
            "Invalid type for Decimal, underlying representation should be numeric or bytes but was {}",
            other.kind()
        ))),
    }
}

fn float_text(s: &str) -> Option<f64> {
    // Jackson writes non-finite floats as these strings; read them back.
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `convertToConnect`.
fn to_value(
    schema: Option<&Schema>,
    j: Option<&Json>,
    cfg: &JsonConverterConfig,
) -> Result<Value, PathError> {
    let Some(s) = schema else {
        return schemaless_value(j);
    };
    let j = match j {
        None | Some(Json::Null) => return null_for(s, cfg),
        Some(j) => j,
    };
    match s.name.as_deref() {
        Some(DECIMAL_LOGICAL_NAME) => return decimal_from_json(s, j),
        Some(DATE_LOGICAL_NAME) | Some(TIME_LOGICAL_NAME) => {
            return match j {
                Json::Num(n) => n.as_i32().map(Value::Int32).ok_or_else(|| {
                    PathError::new(format!("Invalid type for {}, underlying representation should be integer but was {}", s.name_str(), n.text))
                }),
                other => Err(PathError::new(format!(
                    "Invalid type for {}, underlying representation should be integer but was {}",
                    s.name_str(),
                    other.kind()
                ))),
            }
        }
        Some(TIMESTAMP_LOGICAL_NAME) => {
            return match j {
                Json::Num(n) if n.integral => Ok(Value::Int64(n.java_long())),
                other => Err(PathError::new(format!(
                    "Invalid type for Timestamp, underlying representation should be integral but was {}",
                    other.kind()
                ))),
            }
        }
        _ => {}
    }
    let num = |j: &Json| -> Result<Number, PathError> {
        match j {
            Json::Num(n) => Ok(n.clone()),
            other => Err(expect_kind("a number", other)),
        }
    };
    Ok(match s.ty {
        SchemaType::Boolean => match j {
            Json::Bool(b) => Value::Bool(*b),
            other => return Err(expect_kind("a boolean", other)),
        },
        // Java narrows with (byte) / (short) / (int) casts of intValue().
        SchemaType::Int8 => Value::Int8(num(j)?.java_long() as i8),
        SchemaType::Int16 => Value::Int16(num(j)?.java_long() as i16),
        SchemaType::Int32 => Value::Int32(num(j)?.java_long() as i32),
        SchemaType::Int64 => Value::Int64(num(j)?.java_long()),
        SchemaType::Float32 => match j {
            Json::Num(n) => Value::Float32(n.as_f32()),
            Json::Str(t) if float_text(t).is_some() => {
                Value::Float32(float_text(t).unwrap_or(f64::NAN) as f32)
            }
            other => return Err(expect_kind("a number", other)),
        },
        SchemaType::Float64 => match j {
            Json::Num(n) => Value::Float64(n.as_f64()),
            Json::Str(t) if float_text(t).is_some() => {
                Value::Float64(float_text(t).unwrap_or(f64::NAN))
            }
            other => return Err(expect_kind("a number", other)),
        },
        SchemaType::String => match j {
            Json::Str(t) => Value::String(t.clone()),
            other => return Err(expect_kind("a string", other)),
        },
        SchemaType::Bytes => match j {
            Json::Str(t) => Value::Bytes(decode_base64(t)?),
            other => return Err(expect_kind("a base64 string", other)),
        },
        SchemaType::Array => match j {
            Json::Arr(items) => {
                let item_schema = s.items.as_deref();
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(
                        to_value(item_schema, Some(item), cfg)
                            .map_err(|e| e.at(format!("[{i}]")))?,
                    );
                }
                Value::Array(out)
            }
            other => return Err(expect_kind("an array", other)),
        },
        SchemaType::Map => {
            let key_schema = s.keys.as_deref();
            let value_schema = s.items.as_deref();
            if key_schema.is_none_or(|k| k.ty == SchemaType::String) {
                let Json::Obj(members) = j else {
                    return Err(PathError::new(format!(
                        "Maps with string fields should be encoded as JSON objects, but found {}",
                        j.kind()
                    )));
                };
                let mut out = Vec::with_capacity(members.len());
                for (k, v) in members {
                    let key = match key_schema {
                        Some(ks) => to_value(Some(ks), Some(&Json::Str(k.clone())), cfg)?,
                        None => Value::String(k.clone()),
                    };
                    out.push((
                        key,
                        to_value(value_schema, Some(v), cfg).map_err(|e| e.at(k))?,
                    ));
                }
                Value::Map(out)
            } else {
                let Json::Arr(pairs) = j else {
                    return Err(PathError::new(format!(
                        "Maps with non-string fields should be encoded as JSON array of tuples, but found {}",
                        j.kind()
                    )));
                };
                let mut out = Vec::with_capacity(pairs.len());
                for (i, pair) in pairs.iter().enumerate() {
                    let Json::Arr(kv) = pair else {
                        return Err(PathError::new(format!(
                            "Found invalid map entry instead of array tuple: {}",
                            pair.kind()
                        ))
                        .at(format!("[{i}]")));
                    };
                    if kv.len() != 2 {
                        return Err(PathError::new(format!(
                            "Found invalid map entry, expected length 2 but found :{}",
                            kv.len()
                        ))
                        .at(format!("[{i}]")));
                    }
                    let k = to_value(key_schema, Some(&kv[0]), cfg)
                        .map_err(|e| e.at(format!("[{i}].key")))?;
                    let v = to_value(value_schema, Some(&kv[1]), cfg)
                        .map_err(|e| e.at(format!("[{i}].value")))?;
                    out.push((k, v));
                }
                Value::Map(out)
            }
        }
        SchemaType::Struct => {
            if !matches!(j, Json::Obj(_)) {
                return Err(PathError::new(format!(
                    "Structs should be encoded as JSON objects, but found {}",
                    j.kind()
                )));
            }
            let mut out = Vec::with_capacity(s.fields.len());
            for f in &s.fields {
                out.push(
                    to_value(Some(&f.schema), j.get(&f.name), cfg).map_err(|e| e.at(&f.name))?,
                );
            }
            Value::Struct(out)
        }
    })
}

/// `convertToConnect` without a schema: integers become int64, fractions
/// double, objects string-keyed maps.
fn schemaless_value(j: Option<&Json>) -> Result<Value, PathError> {
    Ok(match j {
        None | Some(Json::Null) => Value::Null,
        Some(Json::Bool(b)) => Value::Bool(*b),
        Some(Json::Num(n)) if n.integral => Value::Int64(n.java_long()),
        Some(Json::Num(n)) => Value::Float64(n.as_f64()),
        Some(Json::Str(s)) => Value::String(s.clone()),
        Some(Json::Arr(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(schemaless_value(Some(item)).map_err(|e| e.at(format!("[{i}]")))?);
            }
            Value::Array(out)
        }
        Some(Json::Obj(members)) => {
            let mut out = Vec::with_capacity(members.len());
            for (k, v) in members {
                out.push((
                    Value::String(k.clone()),
                    schemaless_value(Some(v)).map_err(|e| e.at(k))?,
                ));
            }
            Value::Map(out)
        }
    })
}

/// `asConnectSchema`; `None` for a JSON null.
fn to_schema(j: &Json, cfg: &JsonConverterConfig) -> Result<Option<SchemaRef>, PathError> {
    if matches!(j, Json::Null) {
        return Ok(None);
    }
    let ty_name = match j.get("type") {
        Some(Json::Str(t)) => t,
        _ => return Err(PathError::new("Schema must contain 'type' field")),
    };
    let ty = SchemaType::from_json_name(ty_name)
        .ok_or_else(|| PathError::new(format!("Unknown schema type: {ty_name}")))?;
    let mut s = Schema::of(ty);
    let required_child = |key: &str, what: &str| -> Result<SchemaRef, PathError> {
        match j.get(key) {
            Some(child) => to_schema(child, cfg)
                .map_err(|e| e.at(key))?
                .ok_or_else(|| PathError::new(format!("{what} schema cannot be null"))),
            None => Err(PathError::new(format!(
                "{} schema did not specify the {what} type",
                if ty == SchemaType::Array {
                    "Array"
                } else {
                    "Map"
                }
            ))),
        }
    };
    match ty {
        SchemaType::Array => s.items = Some(required_child("items", "element")?),
        SchemaType::Map => {
            s.keys = Some(required_child("keys", "key")?);
            s.items = Some(required_child("values", "value")?);
        }
        SchemaType::Struct => {
            let Some(Json::Arr(fields)) = j.get("fields") else {
                return Err(PathError::new(
                    "Struct schema's \"fields\" argument is not an array.",
                ));
            };
            for field in fields {
                let Some(Json::Str(name)) = field.get("field") else {
                    return Err(PathError::new(
                        "Struct schema's field name not specified properly",
                    ));
                };
                if s.fields.iter().any(|f| f.name == *name) {
                    return Err(PathError::new(format!(
                        "Cannot create field because of field name duplication {name}"
                    )));
                }
                let fs = to_schema(field, cfg)
                    .map_err(|e| e.at(name))?
                    .ok_or_else(|| PathError::new("field schema cannot be null").at(name))?;
                s.fields.push(Field {
                    name: name.clone(),
                    schema: fs,
                });
            }
        }
        _ => {}
    }
    s.optional = matches!(j.get("optional"), Some(Json::Bool(true)));
    if let Some(Json::Str(name)) = j.get("name") {
        s.name = Some(name.clone());
    }
    if let Some(Json::Num(n)) = j.get("version") {
        if n.integral {
            s.version = Some(n.java_long() as i32);
        }
    }
    if let Some(Json::Str(doc)) = j.get("doc") {
        s.doc = Some(doc.clone());
    }
    if let Some(Json::Obj(params)) = j.get("parameters") {
        for (k, v) in params {
            let Json::Str(v) = v else {
                return Err(PathError::new("Schema parameters must have string values."));
            };
            s.parameters.push((k.clone(), v.clone()));
        }
    }
    if let Some(d) = j.get("default") {
        let v = to_value(Some(&s), Some(d), cfg).map_err(|e| e.at("(default)"))?;
        if !v.is_null() {
            s.default = Some(v);
        }
    }
    Ok(Some(Arc::new(s)))
}

// ---------------------------------------------------------------------------
// The converter

/// `org.apache.kafka.connect.json.JsonConverter`.
pub struct JsonConverter {
    config: JsonConverterConfig,
    cache: Mutex<SchemaCache>,
    /// Schemas read, by the bytes of their JSON: a record whose schema is
    /// one seen before has only its payload parsed, and shares the schema.
    read_cache: Mutex<ReadCache>,
    /// Size of the last record written: the next record's buffer starts at
    /// about that size, so a typical record is written without the buffer
    /// growing (and being copied) on the way.
    size_hint: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for JsonConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonConverter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl JsonConverter {
    /// A converter with the given configuration.
    pub fn new(config: JsonConverterConfig) -> Self {
        let capacity = config.schemas_cache_size.max(1);
        let size_hint = if config.schemas_enable { 2048 } else { 256 };
        JsonConverter {
            config,
            cache: Mutex::new(SchemaCache {
                entries: HashMap::new(),
                capacity,
            }),
            read_cache: Mutex::new(ReadCache {
                entries: HashMap::new(),
                capacity,
                last: None,
            }),
            size_hint: std::sync::atomic::AtomicUsize::new(size_hint),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &JsonConverterConfig {
        &self.config
    }

    /// A schema's JSON as `JsonConverter.asJsonSchema` renders it.
    pub fn schema_json(&self, schema: &Schema) -> Result<String, ConvertError> {
        let mut out = Vec::new();
        Writer { cfg: &self.config }
            .schema(&mut out, schema, None)
            .map_err(|e| e.into_convert(""))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Appends the schema's JSON, rendering it only on a cache miss.
    fn append_schema(&self, out: &mut Vec<u8>, schema: &Schema) -> Result<(), PathError> {
        let key = schema as *const Schema as usize;
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .entries
                .get(&key)
                .filter(|(s, _)| same_schema(s, schema))
                .map(|(_, text)| Arc::clone(text))
        };
        if let Some(text) = cached {
            out.extend_from_slice(&text);
            return Ok(());
        }
        let start = out.len();
        Writer { cfg: &self.config }.schema(out, schema, None)?;
        let text: Arc<[u8]> = Arc::from(&out[start..]);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.entries.len() >= cache.capacity {
            // Schemas are per table, so a full cache means churn: start over
            // rather than track recency.
            cache.entries.clear();
        }
        cache.entries.insert(key, (schema.clone(), text));
        Ok(())
    }

    /// Serializes into `out` (appending); returns false, writing nothing,
    /// for a null without schema (Kafka's null bytes).
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        topic: &str,
        schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<bool, ConvertError> {
        let value = value.filter(|v| !v.is_null());
        if schema.is_none() && value.is_none() {
            return Ok(false);
        }
        let w = Writer { cfg: &self.config };
        let result = (|| {
            if self.config.schemas_enable {
                out.extend_from_slice(b"{\"schema\":");
                match schema {
                    Some(s) => self.append_schema(out, s)?,
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"payload\":");
            }
            match value {
                Some(v) => w.value(out, schema, v)?,
                None => w.null(out, schema)?,
            }
            if self.config.schemas_enable {
                out.push(b'}');
            }
            Ok(())
        })();
        result.map_err(|e: PathError| e.into_convert(topic))?;
        Ok(true)
    }
}

impl Converter for JsonConverter {
    fn from_connect(
        &self,
        topic: &str,
        schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        use std::sync::atomic::Ordering::Relaxed;
        // Records of one topic are alike in size; some headroom covers
        // longer text values without a second allocation.
        let hint = self.size_hint.load(Relaxed);
        let mut out = Vec::with_capacity(hint + hint / 8);
        if self.write(&mut out, topic, schema, value)? {
            if out.len() != hint {
                self.size_hint.store(out.len().clamp(64, 1 << 20), Relaxed);
            }
            Ok(Some(out))
        } else {
            Ok(None)
        }
    }

    fn to_connect(
        &self,
        topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError> {
        let Some(data) = data else {
            return Ok((None, None));
        };
        let start = if self.config.schemas_enable {
            json_tree::envelope_schema_start(data)
        } else {
            None
        };
        if let Some(start) = start {
            if let Some(read) = self.read_known_schema(data, start) {
                return Ok(read);
            }
        }
        let (schema, value) = self.read_whole(topic, data)?;
        let span = start.and_then(|_| json_tree::envelope_spans(data));
        if let Some((schema_span, _)) = span {
            let mut cache = self.read_cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.entries.len() >= cache.capacity {
                // Schemas are per table, so a full cache means churn.
                cache.entries.clear();
            }
            let bytes: Arc<[u8]> = data[schema_span].into();
            cache.entries.insert(Arc::clone(&bytes), schema.clone());
            cache.last = Some((bytes, schema.clone()));
        }
        Ok((schema, value))
    }
}

impl JsonConverter {
    /// Reads a record in the envelope's usual shape whose schema (from
    /// `start`) was read before: only its payload is parsed. None when the
    /// schema is new, the shape differs, or anything fails (the full
    /// reading then words the error as Kafka Connect does).
    fn read_known_schema(
        &self,
        data: &[u8],
        start: usize,
    ) -> Option<(Option<SchemaRef>, Option<Value>)> {
        let (len, schema) = {
            let mut cache = self.read_cache.lock().unwrap_or_else(|p| p.into_inner());
            match &cache.last {
                // A complete JSON value followed by the envelope's next
                // member ends where the cached bytes end.
                Some((bytes, schema))
                    if data[start..].starts_with(bytes)
                        && json_tree::envelope_payload_start(data, start + bytes.len())
                            .is_some() =>
                {
                    (bytes.len(), schema.clone())
                }
                _ => {
                    let (span, _) = json_tree::envelope_spans(data)?;
                    let (bytes, schema) = cache.entries.get_key_value(&data[span])?;
                    let (bytes, schema) = (Arc::clone(bytes), schema.clone());
                    let len = bytes.len();
                    cache.last = Some((bytes, schema.clone()));
                    (len, schema)
                }
            }
        };
        let p = json_tree::envelope_payload_start(data, start + len)?;
        let (payload, used) = json_tree::parse_at(&data[p..], 1).ok()?;
        if !json_tree::envelope_closes(data, p + used) {
            return None;
        }
        let value = to_value(schema.as_deref(), Some(&payload), &self.config).ok()?;
        Some((schema, (!value.is_null()).then_some(value)))
    }

    /// Reads a whole record: its JSON tree, then schema and value.
    fn read_whole(
        &self,
        topic: &str,
        data: &[u8],
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError> {
        let root = json_tree::parse(data).map_err(|e| ConvertError {
            topic: topic.to_string(),
            message: format!(
                "Converting byte[] to Kafka Connect data failed due to serialization error: {e}"
            ),
        })?;
        let cfg = &self.config;
        let (schema, value) = if cfg.schemas_enable {
            let envelope_ok = matches!(&root, Some(Json::Obj(m)) if m.len() == 2)
                && root.as_ref().and_then(|r| r.get("schema")).is_some()
                && root.as_ref().and_then(|r| r.get("payload")).is_some();
            let (Some(root), true) = (root.as_ref(), envelope_ok) else {
                return Err(ConvertError {
                    topic: topic.to_string(),
                    message: "JsonConverter with schemas.enable requires \"schema\" and \"payload\" fields and may not contain additional fields. If you are trying to deserialize plain JSON data, set schemas.enable=false in your converter configuration.".to_string(),
                });
            };
            let schema = root
                .get("schema")
                .map(|s| to_schema(s, cfg))
                .transpose()
                .map_err(|e| e.at("schema").into_convert(topic))?
                .flatten();
            let value = to_value(schema.as_deref(), root.get("payload"), cfg)
                .map_err(|e| e.into_convert(topic))?;
            (schema, value)
        } else {
            let value = to_value(None, root.as_ref(), cfg).map_err(|e| e.into_convert(topic))?;
            (None, value)
        };
        Ok((schema, (!value.is_null()).then_some(value)))
    }
}
