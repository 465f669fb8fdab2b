//! Converters turn structured records into bytes and back, exactly as Kafka
//! Connect's `JsonConverter` and `StringConverter` do.

use std::sync::Arc;

use crate::config::Props;
use crate::schema::{Schema, SchemaRef};
use crate::value::Value;

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

/// Builds a converter from its class name and its own properties (the
/// `key.converter.` / `value.converter.` prefixed keys, prefix removed).
pub fn converter_from_config(
    class: &str,
    props: &Props,
    is_key: bool,
) -> Result<Arc<dyn Converter>, crate::config::ConfigError> {
    let _ = (props, is_key);
    Err(crate::config::ConfigError::new(
        if is_key {
            "key.converter"
        } else {
            "value.converter"
        },
        Some(class),
        "converter not implemented yet",
    ))
}
