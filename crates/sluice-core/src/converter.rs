//! Converters turn structured records into bytes and back, exactly as Kafka
//! Connect's `JsonConverter` and `StringConverter` do.

use std::sync::Arc;

use crate::config::Props;
use crate::schema::{Schema, SchemaRef};
use crate::value::Value;

mod bignum;
mod header;
pub mod javafmt;
mod json;
mod json_tree;
mod string;

pub use header::simple_header_bytes;
pub use json::{
    value_kind, write_str as write_json_string, DecimalFormat, JsonConverter, JsonConverterConfig,
    DATE_LOGICAL_NAME, DECIMAL_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME, TIME_LOGICAL_NAME,
};
pub use string::{java_date_string, StringConverter, StringEncoding};

/// The Java class of Kafka Connect's JSON converter.
pub const JSON_CONVERTER_CLASS: &str = "org.apache.kafka.connect.json.JsonConverter";
/// The Java class of Kafka Connect's string converter.
pub const STRING_CONVERTER_CLASS: &str = "org.apache.kafka.connect.storage.StringConverter";

/// A conversion failure, naming the topic and what was wrong.
#[derive(Debug, thiserror::Error)]
#[error("converting record of topic '{topic}': {message}")]
pub struct ConvertError {
    /// Topic of the record.
    pub topic: String,
    /// What went wrong.
    pub message: String,
}

/// `org.apache.kafka.connect.storage.Converter`.
pub trait Converter: Send + Sync {
    /// Serializes a value; None for null (a tombstone or null key).
    // Named after Kafka's `Converter.fromConnectData`.
    #[allow(clippy::wrong_self_convention)]
    fn from_connect(
        &self,
        topic: &str,
        schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ConvertError>;
    /// Deserializes bytes; (None, None) for null.
    fn to_connect(
        &self,
        topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError>;
}

/// Which converter a class name or alias selects. Kafka Connect accepts the
/// class name, its simple name and the simple name without the `Converter`
/// suffix; the lower-case short forms are Sluice's own.
fn converter_kind(class: &str) -> Option<bool> {
    let c = class.trim();
    if c == JSON_CONVERTER_CLASS
        || ["JsonConverter", "Json"].contains(&c)
        || c.eq_ignore_ascii_case("json")
    {
        Some(true)
    } else if c == STRING_CONVERTER_CLASS
        || ["StringConverter", "String"].contains(&c)
        || c.eq_ignore_ascii_case("string")
    {
        Some(false)
    } else {
        None
    }
}

/// Builds a converter from its class name and its own properties (the
/// `key.converter.` / `value.converter.` prefixed keys, prefix removed).
pub fn converter_from_config(
    class: &str,
    props: &Props,
    is_key: bool,
) -> Result<Arc<dyn Converter>, crate::config::ConfigError> {
    let key = if is_key {
        "key.converter"
    } else {
        "value.converter"
    };
    let prefix = format!("{key}.");
    match converter_kind(class) {
        Some(true) => Ok(Arc::new(JsonConverter::new(JsonConverterConfig::from_props(
            props, &prefix,
        )?))),
        Some(false) => Ok(Arc::new(StringConverter::from_props(props, &prefix)?)),
        None => Err(crate::config::ConfigError::new(
            key,
            Some(class),
            format!(
                "Class {} could not be found; allowed converters are {JSON_CONVERTER_CLASS} (alias json) and {STRING_CONVERTER_CLASS} (alias string)",
                class.trim()
            ),
        )),
    }
}
