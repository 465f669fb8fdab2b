//! Choosing a connector's key and value converters: the connector's own
//! `key.converter`/`value.converter` when it sets one, else the worker's, as
//! Kafka Connect's `Worker` does.
//!
//! Sluice's JSON and String converters live in `sluice-core`; the one
//! converter resolved here is Kafka's `ByteArrayConverter`, a plain
//! pass-through of bytes.

use std::sync::Arc;

use sluice_core::config::{ConfigError, Props};
use sluice_core::converter::{converter_from_config, ConvertError, Converter};
use sluice_core::schema::{prim, Schema, SchemaRef, SchemaType};
use sluice_core::value::Value;

use crate::worker_config::ConverterSpec;

/// Kafka's class name for the pass-through converter.
pub const BYTE_ARRAY_CONVERTER: &str = "org.apache.kafka.connect.converters.ByteArrayConverter";

/// Builds a converter from its spec; `is_key` selects key or value mode.
pub fn build(spec: &ConverterSpec, is_key: bool) -> Result<Arc<dyn Converter>, ConfigError> {
    if spec.class == BYTE_ARRAY_CONVERTER || spec.class == "ByteArrayConverter" {
        return Ok(Arc::new(ByteArrayConverter));
    }
    converter_from_config(&spec.class, &spec.props, is_key)
}

/// The converter a connector uses for `prefix` (`key.converter` or
/// `value.converter`): the connector's if it names a class, else the worker's.
/// Like Kafka Connect, a connector's prefixed options apply only together
/// with its own class; the returned warning says when they are ignored.
pub fn for_connector(
    connector: &Props,
    worker: &ConverterSpec,
    prefix: &str,
) -> (ConverterSpec, Option<String>) {
    if let Some(own) = ConverterSpec::from_props(connector, prefix) {
        return (own, None);
    }
    let dotted = format!("{prefix}.");
    let ignored: Vec<&str> = connector
        .keys()
        .filter(|k| k.starts_with(&dotted))
        .map(String::as_str)
        .collect();
    let warning = (!ignored.is_empty()).then(|| {
        format!(
            "{} ignored: the connector does not set '{prefix}', so the worker's converter and its options apply",
            ignored.join(", ")
        )
    });
    (worker.clone(), warning)
}

/// `org.apache.kafka.connect.converters.ByteArrayConverter`.
#[derive(Debug, Clone, Copy)]
pub struct ByteArrayConverter;

impl Converter for ByteArrayConverter {
    fn from_connect(
        &self,
        topic: &str,
        schema: Option<&Schema>,
        value: Option<&Value>,
    ) -> Result<Option<Vec<u8>>, ConvertError> {
        if let Some(s) = schema {
            if s.ty != SchemaType::Bytes {
                return Err(ConvertError {
                    topic: topic.to_string(),
                    message: format!(
                        "Invalid schema type for ByteArrayConverter: {}",
                        s.ty.json_name()
                    ),
                });
            }
        }
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(other) => Err(ConvertError {
                topic: topic.to_string(),
                message: format!(
                    "ByteArrayConverter is not compatible with objects of type {other:?}"
                ),
            }),
        }
    }

    fn to_connect(
        &self,
        _topic: &str,
        data: Option<&[u8]>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), ConvertError> {
        Ok((
            Some(prim::of(SchemaType::Bytes, true)),
            data.map(|d| Value::Bytes(d.to_vec())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    #[test]
    fn connector_overrides_worker_only_with_its_own_class() {
        let worker = ConverterSpec {
            class: "org.apache.kafka.connect.json.JsonConverter".into(),
            props: props(&[("schemas.enable", "true")]),
        };
        let (spec, warning) = for_connector(
            &props(&[
                (
                    "value.converter",
                    "org.apache.kafka.connect.storage.StringConverter",
                ),
                ("value.converter.encoding", "UTF-8"),
            ]),
            &worker,
            "value.converter",
        );
        assert!(warning.is_none());
        assert_eq!(
            spec.class,
            "org.apache.kafka.connect.storage.StringConverter"
        );
        assert_eq!(spec.props, props(&[("encoding", "UTF-8")]));

        let (spec, warning) = for_connector(
            &props(&[("value.converter.schemas.enable", "false")]),
            &worker,
            "value.converter",
        );
        assert_eq!(spec, worker);
        let warning = warning.expect("prefixed options without a class are ignored");
        assert!(
            warning.contains("value.converter.schemas.enable"),
            "{warning}"
        );
    }

    #[test]
    fn byte_array_converter_passes_bytes_through() {
        let c = build(
            &ConverterSpec {
                class: BYTE_ARRAY_CONVERTER.into(),
                props: Props::new(),
            },
            false,
        )
        .map_err(|e| e.to_string())
        .expect("known class");
        let bytes = prim::of(SchemaType::Bytes, false);
        assert_eq!(
            c.from_connect("t", Some(&bytes), Some(&Value::Bytes(vec![0, 255])))
                .expect("bytes"),
            Some(vec![0, 255])
        );
        assert_eq!(c.from_connect("t", None, None).expect("null"), None);
        let err = c
            .from_connect("t", Some(&prim::string()), Some(&Value::String("x".into())))
            .expect_err("not bytes");
        assert!(err.to_string().contains("'t'"), "{err}");
    }
}
