//! Kafka Connect's `org.apache.kafka.connect.storage.StringConverter`: the
//! value's Java `toString()`, encoded with `converter.encoding`; reading gives
//! an optional string.

use std::sync::Arc;

use super::json::{
    config_bool, decimal_scale, DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME,
    TIME_LOGICAL_NAME,
};
use super::{javafmt, ConvertError, Converter};
use crate::config::{ConfigError, Props};
use crate::schema::{Schema, SchemaRef, SchemaType};
use crate::value::Value;

/// The character sets `converter.encoding` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringEncoding {
    /// UTF-8 (the default).
    Utf8,
    /// US-ASCII: other characters are written as `?`, as Java does.
    Ascii,
    /// ISO-8859-1: characters above U+00FF are written as `?`.
    Latin1,
}

impl StringEncoding {
    /// Parses a Java charset name or alias (case-insensitive).
    pub fn from_java_name(name: &str) -> Option<StringEncoding> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "utf-8" | "utf8" | "unicode-1-1-utf-8" => StringEncoding::Utf8,
            "us-ascii" | "ascii" | "iso646-us" | "ascii7" | "646" | "cp367" | "us" => {
                StringEncoding::Ascii
            }
            "iso-8859-1" | "iso8859-1" | "iso8859_1" | "iso_8859_1" | "iso_8859-1" | "latin1"
            | "l1" | "8859_1" | "cp819" | "ibm819" | "819" => StringEncoding::Latin1,
            _ => return None,
        })
    }
}

/// `org.apache.kafka.connect.storage.StringConverter`.
#[derive(Debug, Clone)]
pub struct StringConverter {
    encoding: StringEncoding,
    schema: SchemaRef,
}

impl StringConverter {
    /// A converter writing `encoding`.
    pub fn new(encoding: StringEncoding) -> Self {
        StringConverter {
            encoding,
            schema: crate::schema::prim::opt_string(),
        }
    }

    /// Reads `converter.encoding` (default UTF-8); `key_prefix` names keys in
    /// errors.
    pub fn from_props(props: &Props, key_prefix: &str) -> Result<Self, ConfigError> {
        // Accepted, as Kafka's ConverterConfig does, though it changes nothing here.
        let _ = config_bool(props, "schemas.enable", key_prefix, true);
        let encoding = match props.get("converter.encoding") {
            None => StringEncoding::Utf8,
            Some(v) => StringEncoding::from_java_name(v).ok_or_else(|| {
                ConfigError::new(
                    format!("{key_prefix}converter.encoding"),
                    Some(v),
                    "Unsupported encoding: allowed are UTF-8, US-ASCII and ISO-8859-1",
                )
            })?,
        };
        Ok(StringConverter::new(encoding))
    }

    /// The encoding.
    pub fn encoding(&self) -> StringEncoding {
        self.encoding
    }
}

/// Java's `Integer.toHexString` of a content hash: Java prints a `byte[]` as
/// `[B@<identity hash>`, which no other process can reproduce; a content
/// hash at least keeps the output stable.
fn array_identity(bytes: &[u8]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("[B@{h:x}")
}

/// `java.util.Date.toString()` in a JVM whose default time zone is UTC:
/// `EEE MMM dd HH:mm:ss zzz yyyy` (proleptic Gregorian).
pub fn java_date_string(epoch_ms: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch_ms.div_euclid(86_400_000);
    let ms_of_day = epoch_ms.rem_euclid(86_400_000);
    let secs = ms_of_day / 1000;
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
    let weekday = (days + 4).rem_euclid(7);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[weekday as usize],
        MONTHS[(m - 1) as usize],
        d,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        y
    )
}

/// Appends the Java `toString()` of the Connect value Kafka would hold for
/// `v` (logical types as their Java classes: Decimal as `BigDecimal`, Date /
/// Time / Timestamp as `java.util.Date`).
fn java_string(out: &mut String, schema: Option<&Schema>, v: &Value) -> Result<(), String> {
    let logical = schema.and_then(|s| s.name.as_deref());
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int8(x) => out.push_str(&x.to_string()),
        Value::Int16(x) => out.push_str(&x.to_string()),
        Value::Int32(x) => match logical {
            Some(DATE_LOGICAL_NAME) => out.push_str(&java_date_string(i64::from(*x) * 86_400_000)),
            Some(TIME_LOGICAL_NAME) => out.push_str(&java_date_string(i64::from(*x))),
            _ => out.push_str(&x.to_string()),
        },
        Value::Int64(x) => match logical {
            Some(TIMESTAMP_LOGICAL_NAME) => out.push_str(&java_date_string(*x)),
            _ => out.push_str(&x.to_string()),
        },
        Value::Float32(x) => out.push_str(&javafmt::float_to_string(*x)),
        Value::Float64(x) => out.push_str(&javafmt::double_to_string(*x)),
        Value::String(s) => out.push_str(s),
        Value::Bytes(b) => match (logical, schema) {
            (Some(DECIMAL_LOGICAL_NAME), Some(s)) => {
                let scale = decimal_scale(s).map_err(|e| e.message().to_string())?;
                out.push_str(&javafmt::big_decimal_to_string(b, scale));
            }
            _ => out.push_str(&array_identity(b)),
        },
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                java_string(out, item_schema, item)?;
            }
            out.push(']');
        }
        Value::Map(entries) => {
            let key_schema = schema.and_then(|s| s.keys.as_deref());
            let value_schema = schema.and_then(|s| s.items.as_deref());
            out.push('{');
            for (i, (k, val)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                java_string(out, key_schema, k)?;
                out.push('=');
                java_string(out, value_schema, val)?;
            }
            out.push('}');
        }
        Value::Struct(values) => {
            let Some(s) = schema.filter(|s| s.ty == SchemaType::Struct) else {
                return Err("a struct value needs a struct schema".into());
            };
            if values.len() != s.fields.len() {
                return Err(format!(
                    "struct value has {} fields but its schema {} has {}",
                    values.len(),
                    s.name_str(),
                    s.fields.len()
                ));
            }
            // Struct.toString: "Struct{a=1,b=x}", null fields left out.
            out.push_str("Struct{");
            let mut first = true;
            for (f, fv) in s.fields.iter().zip(values) {
                if fv.is_null() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&f.name);
                out.push('=');
                java_string(out, Some(&f.schema), fv)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

impl Converter for StringConverter {
    fn from_connect(
        &self,
        topic: &str,
        schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        let Some(v) = value.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        if let (Value::String(s), StringEncoding::Utf8) = (v, self.encoding) {
            return Ok(Some(s.as_bytes().to_vec()));
        }
        let mut text = String::new();
        java_string(&mut text, schema, v).map_err(|message| ConvertError {
            topic: topic.to_string(),
            message: format!("Failed to serialize to a string: {message}"),
        })?;
        Ok(Some(match self.encoding {
            StringEncoding::Utf8 => text.into_bytes(),
            StringEncoding::Ascii => text
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
            StringEncoding::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        }))
    }

    fn to_connect(
        &self,
        _topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError> {
        // Kafka answers an optional-string schema even for null bytes.
        let schema = Some(Arc::clone(&self.schema));
        let Some(data) = data else {
            return Ok((schema, None));
        };
        let text = match self.encoding {
            StringEncoding::Utf8 => String::from_utf8_lossy(data).into_owned(),
            StringEncoding::Ascii => data
                .iter()
                .map(|b| {
                    if b.is_ascii() {
                        char::from(*b)
                    } else {
                        '\u{FFFD}'
                    }
                })
                .collect(),
            StringEncoding::Latin1 => data.iter().map(|b| char::from(*b)).collect(),
        };
        Ok((schema, Some(Value::String(text))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_like_java_in_utc() {
        assert_eq!(java_date_string(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(
            java_date_string(1_478_267_490_123),
            "Fri Nov 04 13:51:30 UTC 2016"
        );
        assert_eq!(java_date_string(-1), "Wed Dec 31 23:59:59 UTC 1969");
        assert_eq!(
            java_date_string(951_782_400_000),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
    }
}
