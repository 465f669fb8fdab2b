//! `org.apache.kafka.connect.transforms.ReplaceField$Key` / `$Value`
//! (Kafka 3.7): keeps (`include`), drops (`exclude`, which wins) and
//! renames (`renames=old:new,...`) the fields of a struct or schemaless map.
//! The deprecated `whitelist` / `blacklist` are read when `include` /
//! `exclude` are not set.

use std::sync::Arc;

use sluice_core::config::ConfigError;
use sluice_core::schema::{Schema, SchemaRef};
use sluice_core::value::Value;

use super::{
    copy_struct_basics, require_map, require_struct, with_default, ConnectRecord, Options,
    SchemaCache, Transform, TransformError,
};

/// `ReplaceField$Key`.
pub const KEY_CLASS: &str = "org.apache.kafka.connect.transforms.ReplaceField$Key";
/// `ReplaceField$Value`.
pub const VALUE_CLASS: &str = "org.apache.kafka.connect.transforms.ReplaceField$Value";

const PURPOSE: &str = "field replacement";

/// The configured transform.
pub struct ReplaceField {
    on_key: bool,
    exclude: Vec<String>,
    include: Vec<String>,
    renames: Vec<(String, String)>,
    cache: SchemaCache,
}

impl ReplaceField {
    /// Reads the options (`on_key` picks `$Key`).
    pub fn from_options(opts: &Options<'_>, on_key: bool) -> Result<Self, ConfigError> {
        // `ConfigUtils.translateDeprecatedConfigs`: the new name wins.
        let list = |new: &str, old: &str| {
            if opts.get(new).is_some() {
                opts.list(new)
            } else {
                opts.list(old)
            }
        };
        let mut renames = Vec::new();
        for mapping in opts.list("renames") {
            let parts: Vec<&str> = mapping.split(':').collect();
            match parts.as_slice() {
                [from, to] if !from.is_empty() && !to.is_empty() => {
                    renames.push((from.to_string(), to.to_string()))
                }
                _ => {
                    return Err(opts.error(
                        "renames",
                        opts.get("renames"),
                        format!("Invalid rename mapping: {mapping} (expected a list of colon-delimited pairs, e.g. foo:bar,abc:xyz)"),
                    ))
                }
            }
        }
        Ok(ReplaceField {
            on_key,
            exclude: list("exclude", "blacklist"),
            include: list("include", "whitelist"),
            renames,
            cache: SchemaCache::new(),
        })
    }

    fn keep(&self, name: &str) -> bool {
        !self.exclude.iter().any(|e| e == name)
            && (self.include.is_empty() || self.include.iter().any(|i| i == name))
    }

    fn renamed<'a>(&'a self, name: &'a str) -> &'a str {
        self.renames
            .iter()
            .rev()
            .find(|(from, _)| from == name)
            .map_or(name, |(_, to)| to.as_str())
    }

    fn replace(
        &self,
        schema: Option<&SchemaRef>,
        value: Value,
    ) -> Result<(Option<SchemaRef>, Value), TransformError> {
        let Some(schema) = schema else {
            let entries = require_map(value, PURPOSE)?;
            let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let name = match &k {
                    Value::String(s) => s.as_str(),
                    _ => {
                        out.push((k, v));
                        continue;
                    }
                };
                if self.keep(name) {
                    let new = Value::String(self.renamed(name).to_string());
                    // A rename onto an existing key replaces it, as `put` does.
                    match out.iter_mut().find(|(k, _)| *k == new) {
                        Some(slot) => slot.1 = v,
                        None => out.push((new, v)),
                    }
                }
            }
            return Ok((None, Value::Map(out)));
        };
        let values = require_struct(value, PURPOSE)?;
        let out = self.cache.get_or_build::<TransformError>(&[schema], || {
            let mut s = copy_struct_basics(schema);
            for f in schema.fields.iter().filter(|f| self.keep(&f.name)) {
                s.fields.push(sluice_core::schema::Field {
                    name: self.renamed(&f.name).to_string(),
                    schema: Arc::clone(&f.schema),
                });
            }
            Ok(Arc::new(s))
        })?;
        let kept = values
            .into_iter()
            .zip(&schema.fields)
            .filter(|(_, f)| self.keep(&f.name))
            .map(|(v, f)| with_default(v, &f.schema))
            .collect();
        Ok((Some(out), Value::Struct(kept)))
    }
}

/// Drops `names` from a struct (Debezium's drop-fields feature uses
/// `ReplaceField` with `exclude` this way).
pub(crate) fn exclude(
    schema: &SchemaRef,
    value: Option<Value>,
    names: &[String],
) -> Result<(SchemaRef, Option<Value>), TransformError> {
    let keep = |f: &sluice_core::schema::Field| !names.contains(&f.name);
    let mut s: Schema = copy_struct_basics(schema);
    s.fields = schema.fields.iter().filter(|f| keep(f)).cloned().collect();
    let value = match value {
        None => None,
        Some(v) => Some(Value::Struct(
            require_struct(v, PURPOSE)?
                .into_iter()
                .zip(&schema.fields)
                .filter(|(_, f)| keep(f))
                .map(|(v, f)| with_default(v, &f.schema))
                .collect(),
        )),
    };
    Ok((Arc::new(s), value))
}

impl Transform for ReplaceField {
    fn apply(&self, mut record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError> {
        if self.on_key {
            if let Some(v) = record.key.take() {
                let (s, v) = self.replace(record.key_schema.as_ref(), v)?;
                record.key_schema = s;
                record.key = Some(v);
            }
        } else if let Some(v) = record.value.take() {
            let (s, v) = self.replace(record.value_schema.as_ref(), v)?;
            record.value_schema = s;
            record.value = Some(v);
        }
        Ok(Some(record))
    }
}
