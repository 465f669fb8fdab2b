//! `org.apache.kafka.connect.transforms.InsertField$Key` / `$Value`
//! (Kafka 3.7): adds the record's topic, partition, offset (sink records
//! only), timestamp and/or a static string to a struct or schemaless map.
//! A field name ending in `!` is required, `?` (the default) optional.

use std::sync::Arc;

use sluice_core::config::ConfigError;
use sluice_core::converter::TIMESTAMP_LOGICAL_NAME;
use sluice_core::schema::{prim, Field, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

use super::{
    copy_struct_basics, require_map, require_struct, with_default, ConnectRecord, Options,
    SchemaCache, Transform, TransformError,
};

/// `InsertField$Key`.
pub const KEY_CLASS: &str = "org.apache.kafka.connect.transforms.InsertField$Key";
/// `InsertField$Value`.
pub const VALUE_CLASS: &str = "org.apache.kafka.connect.transforms.InsertField$Value";

const PURPOSE: &str = "field insertion";

/// `InsertionSpec`: a field name and whether it is optional.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    optional: bool,
}

impl Spec {
    fn parse(v: Option<&str>) -> Option<Spec> {
        let v = v?;
        Some(if let Some(n) = v.strip_suffix('?') {
            Spec {
                name: n.to_string(),
                optional: true,
            }
        } else if let Some(n) = v.strip_suffix('!') {
            Spec {
                name: n.to_string(),
                optional: false,
            }
        } else {
            Spec {
                name: v.to_string(),
                optional: true,
            }
        })
    }
}

/// The configured transform.
pub struct InsertField {
    on_key: bool,
    topic: Option<Spec>,
    partition: Option<Spec>,
    offset: Option<Spec>,
    timestamp: Option<Spec>,
    static_field: Option<(Spec, String)>,
    cache: SchemaCache,
}

impl InsertField {
    /// Reads the options (`on_key` picks `$Key`).
    pub fn from_options(opts: &Options<'_>, on_key: bool) -> Result<Self, ConfigError> {
        let static_field = match Spec::parse(opts.get("static.field")) {
            None => None,
            Some(spec) => match opts.get("static.value") {
                Some(v) => Some((spec, v.to_string())),
                None => {
                    return Err(opts.error(
                        "static.value",
                        None,
                        format!("No value specified for static field: {}", spec.name),
                    ))
                }
            },
        };
        let t = InsertField {
            on_key,
            topic: Spec::parse(opts.get("topic.field")),
            partition: Spec::parse(opts.get("partition.field")),
            offset: Spec::parse(opts.get("offset.field")),
            timestamp: Spec::parse(opts.get("timestamp.field")),
            static_field,
            cache: SchemaCache::new(),
        };
        if t.topic.is_none()
            && t.partition.is_none()
            && t.offset.is_none()
            && t.timestamp.is_none()
            && t.static_field.is_none()
        {
            return Err(opts.error(
                "topic.field",
                None,
                "No field insertion configured: set at least one of topic.field, partition.field, offset.field, timestamp.field, static.field",
            ));
        }
        Ok(t)
    }

    /// The (name, value) pairs to insert, in Kafka's order. `with_schema`
    /// decides the timestamp's form: a `Timestamp` (ms) either way, as the
    /// in-memory value is the same long.
    fn insertions(&self, r: &ConnectRecord) -> Result<Vec<(&str, Value)>, TransformError> {
        let mut out = Vec::new();
        if let Some(s) = &self.topic {
            out.push((s.name.as_str(), Value::String(r.topic.to_string())));
        }
        if let (Some(s), Some(p)) = (&self.partition, r.partition) {
            out.push((s.name.as_str(), Value::Int32(p)));
        }
        if let Some(s) = &self.offset {
            let o = r.offset.ok_or_else(|| {
                TransformError::new(format!(
                    "Only SinkRecord supported for [{PURPOSE}] (offset.field), found a source record"
                ))
            })?;
            out.push((s.name.as_str(), Value::Int64(o)));
        }
        if let (Some(s), Some(ts)) = (&self.timestamp, r.timestamp_ms) {
            out.push((s.name.as_str(), Value::Int64(ts)));
        }
        if let Some((s, v)) = &self.static_field {
            out.push((s.name.as_str(), Value::String(v.clone())));
        }
        Ok(out)
    }

    fn updated_schema(&self, schema: &SchemaRef) -> SchemaRef {
        let mut s = copy_struct_basics(schema);
        s.fields.clone_from(&schema.fields);
        let mut add = |spec: &Option<Spec>, ty: SchemaType| {
            if let Some(spec) = spec {
                s.fields.push(Field {
                    name: spec.name.clone(),
                    schema: prim::of(ty, spec.optional),
                });
            }
        };
        add(&self.topic, SchemaType::String);
        add(&self.partition, SchemaType::Int32);
        add(&self.offset, SchemaType::Int64);
        if let Some(spec) = &self.timestamp {
            s.fields.push(Field {
                name: spec.name.clone(),
                schema: SchemaBuilder::new(SchemaType::Int64)
                    .name(TIMESTAMP_LOGICAL_NAME)
                    .version(1)
                    .optional_if(spec.optional)
                    .build(),
            });
        }
        if let Some((spec, _)) = &self.static_field {
            s.fields.push(Field {
                name: spec.name.clone(),
                schema: prim::of(SchemaType::String, spec.optional),
            });
        }
        Arc::new(s)
    }

    fn insert(
        &self,
        r: &ConnectRecord,
        schema: Option<&SchemaRef>,
        value: Value,
    ) -> Result<(Option<SchemaRef>, Value), TransformError> {
        let adds = self.insertions(r)?;
        let Some(schema) = schema else {
            let mut m = require_map(value, PURPOSE)?;
            for (name, v) in adds {
                let k = Value::String(name.to_string());
                match m.iter_mut().find(|(key, _)| *key == k) {
                    Some(slot) => slot.1 = v,
                    None => m.push((k, v)),
                }
            }
            return Ok((None, Value::Map(m)));
        };
        let fields = require_struct(value, PURPOSE)?;
        let out = self
            .cache
            .get_or_build::<TransformError>(&[schema], || Ok(self.updated_schema(schema)))?;
        let mut values: Vec<Value> = fields
            .into_iter()
            .zip(&schema.fields)
            .map(|(v, f)| with_default(v, &f.schema))
            .collect();
        values.resize(out.fields.len(), Value::Null);
        for (name, v) in adds {
            if let Some((i, _)) = out.field(name) {
                values[i] = v;
            }
        }
        for (v, f) in values.iter().zip(&out.fields) {
            if v.is_null() && !f.schema.optional {
                return Err(TransformError::new(format!(
                    "Invalid value: null used for required field: \"{}\", schema type: {}",
                    f.name,
                    f.schema.ty.json_name().to_ascii_uppercase()
                )));
            }
        }
        Ok((Some(out), Value::Struct(values)))
    }
}

impl Transform for InsertField {
    fn apply(&self, mut record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError> {
        if self.on_key {
            if let Some(v) = record.key.take() {
                let schema = record.key_schema.clone();
                let (s, v) = self.insert(&record, schema.as_ref(), v)?;
                record.key_schema = s;
                record.key = Some(v);
            }
        } else if let Some(v) = record.value.take() {
            let schema = record.value_schema.clone();
            let (s, v) = self.insert(&record, schema.as_ref(), v)?;
            record.value_schema = s;
            record.value = Some(v);
        }
        Ok(Some(record))
    }
}
