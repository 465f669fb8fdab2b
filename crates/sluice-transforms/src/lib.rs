//! Kafka Connect's single message transforms (SMTs) and predicates, as a
//! connector configures them:
//!
//! ```properties
//! transforms=unwrap,route
//! transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState
//! transforms.unwrap.delete.tombstone.handling.mode=rewrite
//! transforms.route.type=org.apache.kafka.connect.transforms.RegexRouter
//! transforms.route.regex=dbserver1\.inventory\.(.*)
//! transforms.route.replacement=$1
//! transforms.route.predicate=isOrders
//! predicates=isOrders
//! predicates.isOrders.type=org.apache.kafka.connect.transforms.predicates.TopicNameMatches
//! predicates.isOrders.pattern=.*orders
//! ```
//!
//! Source connectors apply their chain to each record before conversion
//! (as Kafka Connect's `WorkerSourceTask` does); sink connectors apply theirs
//! after the converters have read the record and before `put`.
//!
//! Each transform works on a [`ConnectRecord`]: the structured record with
//! schemas, as Kafka's `ConnectRecord` has it. Returning `None` drops the
//! record, as a Java transform returning `null` does.

use std::sync::Arc;

use sluice_core::config::{split_list, ConfigError, Props};
use sluice_core::record::Header;
use sluice_core::schema::{Schema, SchemaRef};
use sluice_core::value::Value;

pub mod extract_new_record_state;
pub mod insert_field;
pub mod java_date_format;
pub mod predicates;
pub mod regex_router;
pub mod replace_field;
pub mod timestamp_converter;

use predicates::Predicate;

/// A record as transforms see it: Kafka's `ConnectRecord` (a `SourceRecord`
/// before conversion, or a `SinkRecord` after the sink's converters).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Kafka partition; None for source records, which get one only when
    /// produced.
    pub partition: Option<i32>,
    /// Offset within the partition; only sink records have one.
    pub offset: Option<i64>,
    /// Key schema (None when schemaless).
    pub key_schema: Option<SchemaRef>,
    /// Key; None for a null key.
    pub key: Option<Value>,
    /// Value schema (None when schemaless).
    pub value_schema: Option<SchemaRef>,
    /// Value; None for a tombstone.
    pub value: Option<Value>,
    /// Timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Headers, serialized as the worker's header converter
    /// (`SimpleHeaderConverter`) writes them.
    pub headers: Vec<Header>,
}

impl ConnectRecord {
    /// The value of header `key` (the last one added wins, as
    /// `Headers.lastWithName`).
    pub fn header(&self, key: &str) -> Option<&Header> {
        self.headers.iter().rev().find(|h| h.key == key)
    }
}

/// A transform failed on a record (Kafka's `DataException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

impl TransformError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        TransformError(message.into())
    }
}

/// `org.apache.kafka.connect.transforms.Transformation`.
pub trait Transform: Send + Sync {
    /// Transforms one record; `Ok(None)` drops it.
    fn apply(&self, record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError>;
}

/// One transform's options (`transforms.<alias>.*`, prefix removed), with
/// errors that name the full key.
pub struct Options<'a> {
    prefix: String,
    props: &'a Props,
}

impl<'a> Options<'a> {
    /// The options under `prefix` (e.g. `transforms.unwrap.`).
    pub fn new(prefix: impl Into<String>, props: &'a Props) -> Self {
        Options {
            prefix: prefix.into(),
            props,
        }
    }

    /// The full key of option `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The raw value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.props.get(&self.key(name)).map(String::as_str)
    }

    /// An error about option `name`.
    pub fn error(
        &self,
        name: &str,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.key(name), value, message)
    }

    /// A required, non-empty string.
    pub fn required(&self, name: &str) -> Result<&'a str, ConfigError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            Some(v) => Err(self.error(name, Some(v), "Must not be empty")),
            None => Err(ConfigError::missing(&self.key(name))),
        }
    }

    /// A boolean, `default` when unset.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.error(name, Some(v), "Expected a boolean: true or false")),
            },
        }
    }

    /// One of `allowed` (compared ignoring case, as Debezium's enums and
    /// Kafka's `ValidString` with case-insensitive values do), returned in
    /// its canonical spelling; None when unset.
    pub fn one_of(
        &self,
        name: &str,
        allowed: &[&'static str],
        ignore_case: bool,
    ) -> Result<Option<&'static str>, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let t = v.trim();
        allowed
            .iter()
            .find(|a| {
                if ignore_case {
                    a.eq_ignore_ascii_case(t)
                } else {
                    **a == t
                }
            })
            .map(|a| Some(*a))
            .ok_or_else(|| {
                self.error(
                    name,
                    Some(v),
                    format!("Allowed values are: {}", allowed.join(", ")),
                )
            })
    }

    /// A comma-separated list (empty when unset).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name).map(split_list).unwrap_or_default()
    }
}

/// The transform classes Sluice implements, by class name; the simple class
/// name (e.g. `InsertField$Value`) is accepted too, as Kafka Connect's
/// plugin aliases allow.
pub const TRANSFORM_CLASSES: &[&str] = &[
    extract_new_record_state::CLASS,
    insert_field::KEY_CLASS,
    insert_field::VALUE_CLASS,
    replace_field::KEY_CLASS,
    replace_field::VALUE_CLASS,
    regex_router::CLASS,
    timestamp_converter::KEY_CLASS,
    timestamp_converter::VALUE_CLASS,
];

/// The class `given` names (full or simple name), if Sluice has it.
fn resolve_class(given: &str, classes: &[&'static str]) -> Option<&'static str> {
    let g = given.trim();
    classes
        .iter()
        .find(|c| **c == g || c.rsplit('.').next() == Some(g))
        .copied()
}

fn build_transform(class: &str, opts: &Options<'_>) -> Result<Box<dyn Transform>, ConfigError> {
    Ok(match class {
        extract_new_record_state::CLASS => {
            Box::new(extract_new_record_state::ExtractNewRecordState::from_options(opts)?)
        }
        insert_field::KEY_CLASS => Box::new(insert_field::InsertField::from_options(opts, true)?),
        insert_field::VALUE_CLASS => {
            Box::new(insert_field::InsertField::from_options(opts, false)?)
        }
        replace_field::KEY_CLASS => {
            Box::new(replace_field::ReplaceField::from_options(opts, true)?)
        }
        replace_field::VALUE_CLASS => {
            Box::new(replace_field::ReplaceField::from_options(opts, false)?)
        }
        regex_router::CLASS => Box::new(regex_router::RegexRouter::from_options(opts)?),
        timestamp_converter::KEY_CLASS => Box::new(
            timestamp_converter::TimestampConverter::from_options(opts, true)?,
        ),
        timestamp_converter::VALUE_CLASS => Box::new(
            timestamp_converter::TimestampConverter::from_options(opts, false)?,
        ),
        other => {
            return Err(opts.error(
                "type",
                Some(other),
                "not a transform class Sluice implements",
            ))
        }
    })
}

/// The options a transform class reads (besides `type`, `predicate` and
/// `negate`), for warning about the rest, which Kafka silently ignores.
fn known_options(class: &str) -> &'static [&'static str] {
    match class {
        extract_new_record_state::CLASS => &[
            "delete.tombstone.handling.mode",
            "drop.tombstones",
            "delete.handling.mode",
            "route.by.field",
            "add.fields",
            "add.fields.prefix",
            "add.headers",
            "add.headers.prefix",
            "drop.fields.header.name",
            "drop.fields.from.key",
            "drop.fields.keep.schema.compatible",
            "replace.null.with.default",
        ],
        insert_field::KEY_CLASS | insert_field::VALUE_CLASS => &[
            "topic.field",
            "partition.field",
            "offset.field",
            "timestamp.field",
            "static.field",
            "static.value",
        ],
        replace_field::KEY_CLASS | replace_field::VALUE_CLASS => {
            &["exclude", "include", "blacklist", "whitelist", "renames"]
        }
        regex_router::CLASS => &["regex", "replacement"],
        timestamp_converter::KEY_CLASS | timestamp_converter::VALUE_CLASS => {
            &["field", "target.type", "format", "unix.precision"]
        }
        _ => &[],
    }
}

/// Warnings for `transforms.*` keys nothing reads: options a transform
/// does not have (often a misspelling, which Kafka would silently ignore)
/// and options of aliases missing from `transforms`.
pub fn unused_options(props: &Props) -> Vec<String> {
    let aliases = props
        .get("transforms")
        .map(|v| split_list(v))
        .unwrap_or_default();
    let mut out = Vec::new();
    for key in props.keys() {
        let Some(rest) = key.strip_prefix("transforms.") else {
            continue;
        };
        let Some(alias) = aliases.iter().find(|a| {
            rest.strip_prefix(a.as_str())
                .is_some_and(|r| r.starts_with('.'))
        }) else {
            out.push(format!(
                "configuration '{key}' belongs to no transform listed in 'transforms'"
            ));
            continue;
        };
        let option = &rest[alias.len() + 1..];
        if ["type", "predicate", "negate"].contains(&option) {
            continue;
        }
        let Some(class) = props
            .get(&format!("transforms.{alias}.type"))
            .and_then(|c| resolve_class(c, TRANSFORM_CLASSES))
        else {
            continue;
        };
        if !known_options(class).contains(&option) {
            out.push(format!("configuration '{key}' is not used by {class}"));
        }
    }
    out
}

struct Step {
    alias: String,
    transform: Box<dyn Transform>,
    /// The predicate gating this step and whether it is negated.
    predicate: Option<(Arc<Predicate>, bool)>,
}

/// A connector's transform chain, in `transforms` order.
#[derive(Default)]
pub struct TransformChain {
    steps: Vec<Step>,
}

impl std::fmt::Debug for TransformChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| &s.alias))
            .finish()
    }
}

/// A transform failed on a record: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transform '{alias}': {error}")]
pub struct ChainError {
    /// The alias of the failing transform.
    pub alias: String,
    /// What went wrong.
    pub error: TransformError,
}

impl TransformChain {
    /// Whether the chain does nothing (then the worker skips it entirely).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The aliases, in order.
    pub fn aliases(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.alias.as_str()).collect()
    }

    /// Builds the chain a connector config declares. Every problem is
    /// reported, each naming its `transforms.<alias>.<key>` or
    /// `predicates.<alias>.<key>`.
    pub fn from_props(props: &Props) -> Result<TransformChain, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let predicates = predicates::from_props(props, &mut errors);
        let aliases = props
            .get("transforms")
            .map(|v| split_list(v))
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        let mut steps = Vec::new();
        for alias in aliases {
            if !seen.insert(alias.clone()) {
                errors.push(ConfigError::new(
                    "transforms",
                    props.get("transforms").map(String::as_str),
                    format!("Duplicate alias provided: {alias}"),
                ));
                continue;
            }
            let opts = Options::new(format!("transforms.{alias}."), props);
            let class = match opts.get("type") {
                None => {
                    errors.push(ConfigError::missing(&opts.key("type")));
                    continue;
                }
                Some(c) => match resolve_class(c, TRANSFORM_CLASSES) {
                    Some(class) => class,
                    None => {
                        errors.push(opts.error(
                            "type",
                            Some(c),
                            format!(
                                "Class {} could not be found; transforms Sluice implements: {}",
                                c.trim(),
                                TRANSFORM_CLASSES.join(", ")
                            ),
                        ));
                        continue;
                    }
                },
            };
            let predicate = match opts.get("predicate").map(str::trim) {
                None | Some("") => None,
                Some(p) => match predicates.get(p) {
                    Some(pred) => match opts.bool("negate", false) {
                        Ok(negate) => Some((Arc::clone(pred), negate)),
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    },
                    None => {
                        errors.push(opts.error(
                            "predicate",
                            Some(p),
                            "no such predicate alias in 'predicates'",
                        ));
                        None
                    }
                },
            };
            if predicate.is_none() && opts.get("negate").is_some() {
                errors.push(opts.error(
                    "negate",
                    opts.get("negate"),
                    "only meaningful with a 'predicate'",
                ));
            }
            match build_transform(class, &opts) {
                Ok(transform) => steps.push(Step {
                    alias,
                    transform,
                    predicate,
                }),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(TransformChain { steps })
        } else {
            Err(errors)
        }
    }

    /// Runs the record through every transform; `Ok(None)` when one dropped
    /// it (later transforms then never see it).
    pub fn apply(&self, record: ConnectRecord) -> Result<Option<ConnectRecord>, ChainError> {
        let mut record = record;
        for step in &self.steps {
            if let Some((p, negate)) = &step.predicate {
                if p.test(&record) == *negate {
                    continue;
                }
            }
            match step.transform.apply(record) {
                Ok(Some(r)) => record = r,
                Ok(None) => return Ok(None),
                Err(error) => {
                    return Err(ChainError {
                        alias: step.alias.clone(),
                        error,
                    })
                }
            }
        }
        Ok(Some(record))
    }
}

// Helpers shared by the transforms.

/// `SchemaUtil.copySchemaBasics(source, SchemaBuilder.struct())`: name,
/// version, doc and parameters, but not optionality, default or fields — so
/// a transformed struct schema is required even when the input was optional,
/// exactly as Kafka's transforms make it.
pub(crate) fn copy_struct_basics(source: &Schema) -> Schema {
    let mut s = Schema::of(sluice_core::schema::SchemaType::Struct);
    s.name.clone_from(&source.name);
    s.version = source.version;
    s.doc.clone_from(&source.doc);
    s.parameters.clone_from(&source.parameters);
    s
}

/// `Struct.get(field)`: a null value reads as the field's default.
pub(crate) fn with_default(v: Value, schema: &Schema) -> Value {
    match (&v, &schema.default) {
        (Value::Null, Some(d)) => d.clone(),
        _ => v,
    }
}

/// Takes the struct fields out of a value (`requireStruct`).
pub(crate) fn require_struct(v: Value, purpose: &str) -> Result<Vec<Value>, TransformError> {
    match v {
        Value::Struct(f) => Ok(f),
        other => Err(TransformError::new(format!(
            "Only Struct objects supported for [{purpose}], found: {}",
            type_name(&other)
        ))),
    }
}

/// Takes the entries out of a schemaless map value (`requireMap`).
pub(crate) fn require_map(v: Value, purpose: &str) -> Result<Vec<(Value, Value)>, TransformError> {
    match v {
        Value::Map(m) => Ok(m),
        other => Err(TransformError::new(format!(
            "Only Map objects supported in absence of schema for [{purpose}], found: {}",
            type_name(&other)
        ))),
    }
}

/// The Java class name Kafka would report for a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::Int8(_) => "java.lang.Byte",
        Value::Int16(_) => "java.lang.Short",
        Value::Int32(_) => "java.lang.Integer",
        Value::Int64(_) => "java.lang.Long",
        Value::Float32(_) => "java.lang.Float",
        Value::Float64(_) => "java.lang.Double",
        Value::String(_) => "java.lang.String",
        Value::Bytes(_) => "[B",
        Value::Array(_) => "java.util.ArrayList",
        Value::Map(_) => "java.util.HashMap",
        Value::Struct(_) => "org.apache.kafka.connect.data.Struct",
    }
}

/// A small cache of derived schemas keyed by the identity of their inputs.
/// Holding the input `Arc`s keeps their addresses from being reused, so a
/// hit is always for the very same schemas. Sources share one schema per
/// table, so this turns per-record schema building into a lookup.
pub(crate) struct SchemaCache {
    entries: std::sync::Mutex<Vec<(Vec<SchemaRef>, SchemaRef)>>,
}

/// Distinct input schemas remembered; like Kafka's LRU caches of 16 and
/// Debezium's of 64, small: a connector sees few schemas at a time.
const SCHEMA_CACHE_SIZE: usize = 64;

impl SchemaCache {
    pub(crate) fn new() -> Self {
        SchemaCache {
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The schema derived from `inputs`, building it on a miss.
    pub(crate) fn get_or_build<E>(
        &self,
        inputs: &[&SchemaRef],
        build: impl FnOnce() -> Result<SchemaRef, E>,
    ) -> Result<SchemaRef, E> {
        let same = |k: &[SchemaRef]| {
            k.len() == inputs.len() && k.iter().zip(inputs).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        {
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, s)) = entries.iter().find(|(k, _)| same(k)) {
                return Ok(Arc::clone(s));
            }
        }
        let built = build()?;
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= SCHEMA_CACHE_SIZE {
            entries.remove(0);
        }
        entries.push((
            inputs.iter().map(|s| Arc::clone(s)).collect(),
            Arc::clone(&built),
        ));
        Ok(built)
    }
}
