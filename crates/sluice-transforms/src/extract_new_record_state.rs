//! `io.debezium.transforms.ExtractNewRecordState` ("unwrap"), as Debezium
//! implements it (`ExtractNewRecordState`, `AbstractExtractNewRecordState`,
//! `DefaultDeleteHandlingStrategy`, and 2.7's `LegacyDeleteHandlingStrategy`):
//! replaces a change-event envelope by its `after` row, optionally with
//! metadata fields and headers.
//!
//! Debezium 3.2 removed the legacy options, so the transform follows the
//! release that wrote each event (its `source.version`):
//! - events of Debezium 3.x's format (Sluice's default): only
//!   `delete.tombstone.handling.mode` counts, default `tombstone` (a delete
//!   becomes a record with the row schema and a null value, tombstones are
//!   dropped); `drop.tombstones` and `delete.handling.mode` are ignored, with
//!   a warning when the transform is configured, as 3.6 ignores them;
//! - events of Debezium 1.x / 2.x's format (`sluice.debezium.compatibility=2.7`),
//!   as 2.7.3 did: with neither `delete.tombstone.handling.mode` nor the
//!   legacy keys set, the legacy strategy applies with its defaults: deletes
//!   **and** tombstones are dropped (`delete.handling.mode=drop`,
//!   `drop.tombstones=true`); once `delete.tombstone.handling.mode` is set,
//!   the legacy keys are ignored.
//!
//! A tombstone has no `source`: it follows the event before it (its delete).
//!
//! Points where the code differs from Debezium's documentation, followed
//! here as the code has them:
//! - `replace.null.with.default` is accepted and has no effect here (values
//!   are read without defaults, as `getWithoutDefault` does);
//! - truncate events (neither before nor after) are always dropped;
//! - records whose value schema is not named `*.Envelope` (heartbeats,
//!   transaction metadata, logical decoding messages) pass unchanged, but
//!   still receive `add.headers`;
//! - the output schema is a required copy of the `.Value` schema (Kafka's
//!   `copySchemaBasics` drops optionality), even when no field is added.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sluice_core::config::ConfigError;
use sluice_core::record::Header;
use sluice_core::schema::{Schema, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

use super::{
    copy_struct_basics, require_struct, with_default, ConnectRecord, Options, SchemaCache,
    Transform, TransformError,
};

/// The class name.
pub const CLASS: &str = "io.debezium.transforms.ExtractNewRecordState";

/// The field `rewrite` adds.
pub const DELETED_FIELD: &str = "__deleted";

/// `delete.tombstone.handling.mode`, or the legacy pair it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// `delete.tombstone.handling.mode`: drop, tombstone, rewrite,
    /// rewrite-with-tombstone.
    Current(TombstoneHandling),
    /// `delete.handling.mode` and `drop.tombstones`.
    Legacy {
        /// `delete.handling.mode`.
        deletes: LegacyDeletes,
        /// `drop.tombstones`.
        drop_tombstones: bool,
    },
}

/// `DeleteTombstoneHandling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TombstoneHandling {
    /// Drop deletes and tombstones.
    Drop,
    /// A delete becomes a tombstone; the original tombstone is dropped.
    Tombstone,
    /// A delete becomes its `before` row with `__deleted=true`; tombstones
    /// are dropped.
    Rewrite,
    /// As rewrite, keeping tombstones.
    RewriteWithTombstone,
    /// A delete becomes a tombstone (null schema and value); tombstones are
    /// dropped (Debezium 3.x).
    DeleteToTombstone,
}

/// `DeleteHandling` (deprecated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyDeletes {
    /// Deletes are dropped.
    Drop,
    /// A delete becomes `before` with `__deleted=true`.
    Rewrite,
    /// A delete becomes a record with a null value.
    None,
}

/// One `add.fields` / `add.headers` entry (`FieldReference`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRef {
    /// The envelope struct holding the field (`source`, `transaction`), or
    /// None for the envelope's own fields (`op`, `ts_ms`, ...).
    parent: Option<String>,
    field: String,
    new_name: String,
}

impl FieldRef {
    fn parse(prefix: &str, spec: &str) -> Option<FieldRef> {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() > 2 {
            return None;
        }
        let path: Vec<&str> = parts[0].split('.').collect();
        let field = if path.len() == 1 { path[0] } else { path[1] };
        let parent = if path.len() == 1 {
            match field {
                "id" | "total_order" | "data_collection_order" => Some("transaction"),
                "op" | "ts_ms" | "ts_us" | "ts_ns" => None,
                "updateDescription" => Some("updateDescription"),
                _ => Some("source"),
            }
            .map(str::to_string)
        } else {
            Some(path[0].to_string())
        };
        let new_name = match (parts.get(1), &parent) {
            (Some(n), _) => format!("{prefix}{n}"),
            (None, Some(p)) if path.len() > 1 => format!("{prefix}{p}_{field}"),
            _ => format!("{prefix}{field}"),
        };
        Some(FieldRef {
            parent,
            field: field.to_string(),
            new_name,
        })
    }

    /// The field's schema in the envelope (its parent struct first, then
    /// the envelope itself, for fields another transform added there).
    /// None when absent. Debezium fails with a NullPointerException when
    /// the parent struct itself is missing (e.g. `source.lsn` in
    /// `add.headers` on a heartbeat); Sluice skips the field instead.
    fn schema<'a>(&self, envelope: &'a Schema) -> Option<&'a Schema> {
        let parent = match &self.parent {
            Some(p) => &*envelope.field(p)?.1.schema,
            None => envelope,
        };
        parent
            .field(&self.field)
            .or_else(|| envelope.field(&self.field))
            .map(|(_, f)| &*f.schema)
    }

    /// The field's raw value (`getWithoutDefault`).
    fn value(&self, envelope: &Schema, values: &[Value]) -> Value {
        let (parent_schema, parent_values) = match &self.parent {
            Some(p) => match envelope.field(p) {
                Some((i, f)) => match values.get(i) {
                    Some(Value::Struct(v)) => (&*f.schema, v.as_slice()),
                    // e.g. `transaction` is null during snapshots.
                    _ => return Value::Null,
                },
                None => return Value::Null,
            },
            None => (envelope, values),
        };
        let found = match parent_schema.field(&self.field) {
            Some((i, _)) => parent_values.get(i),
            None => envelope.field(&self.field).and_then(|(i, _)| values.get(i)),
        };
        found.cloned().unwrap_or(Value::Null)
    }
}

/// `SchemaUtil.copySchemaBasics(schema).optional().build()`: the schema of
/// an added field — type, name, version, doc and parameters, made optional,
/// without the default.
fn added_field_schema(s: &Schema) -> SchemaRef {
    let mut b = match (s.ty, &s.items) {
        (SchemaType::Array, Some(items)) => SchemaBuilder::array(Arc::clone(items)),
        _ => SchemaBuilder::new(s.ty),
    };
    if let Some(n) = &s.name {
        b = b.name(n.clone());
    }
    if let Some(v) = s.version {
        b = b.version(v);
    }
    if let Some(d) = &s.doc {
        b = b.doc(d.clone());
    }
    for (k, v) in &s.parameters {
        b = b.parameter(k.clone(), v.clone());
    }
    b.optional().build()
}

/// A header value as Kafka's `SimpleHeaderConverter` writes it: strings
/// as-is, numbers and booleans as their text, anything else as JSON.
fn header_bytes(v: &Value) -> Option<Vec<u8>> {
    fn json(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int8(x) => (*x).into(),
            Value::Int16(x) => (*x).into(),
            Value::Int32(x) => (*x).into(),
            Value::Int64(x) => (*x).into(),
            Value::Float32(x) => f64::from(*x).into(),
            Value::Float64(x) => (*x).into(),
            Value::String(s) => s.clone().into(),
            Value::Bytes(b) => b.iter().map(|x| serde_json::Value::from(*x)).collect(),
            Value::Array(a) | Value::Struct(a) => a.iter().map(json).collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        other => json(other).to_string(),
                    };
                    (k, json(v))
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Bool(b) => Some(b.to_string().into_bytes()),
        other => match other.as_i64() {
            Some(i) => Some(i.to_string().into_bytes()),
            None => Some(json(other).to_string().into_bytes()),
        },
    }
}

/// Whether an envelope was written by Debezium 1.x or 2.x (its
/// `source.version`).
fn is_legacy_event(envelope: &Schema, values: &[Value]) -> bool {
    let Some((si, sf)) = envelope.field("source") else {
        return false;
    };
    let Some((vi, _)) = sf.schema.field("version") else {
        return false;
    };
    match values.get(si) {
        Some(Value::Struct(src)) => match src.get(vi) {
            Some(Value::String(v)) => v.starts_with("1.") || v.starts_with("2."),
            _ => false,
        },
        _ => false,
    }
}

/// The configured transform.
pub struct ExtractNewRecordState {
    /// The handling of Debezium 3.x events.
    current: TombstoneHandling,
    /// The handling of Debezium 1.x / 2.x events.
    mode: DeleteMode,
    /// The last envelope seen was in Debezium 1.x / 2.x's format (tombstones
    /// follow their delete).
    last_legacy: AtomicBool,
    add_fields: Vec<FieldRef>,
    add_headers: Vec<FieldRef>,
    route_by_field: Option<String>,
    drop_fields_header: Option<String>,
    drop_fields_from_key: bool,
    drop_fields_keep_schema_compatible: bool,
    /// (after schema, envelope) -> schema with `add.fields`.
    added: SchemaCache,
    /// row schema -> schema with `__deleted`.
    deleted: SchemaCache,
}

impl ExtractNewRecordState {
    /// Reads the options; every bad value names its key and what is allowed.
    pub fn from_options(opts: &Options<'_>) -> Result<Self, ConfigError> {
        let current = opts.one_of(
            "delete.tombstone.handling.mode",
            &[
                "drop",
                "tombstone",
                "rewrite",
                "rewrite-with-tombstone",
                "delete-to-tombstone",
            ],
            true,
        )?;
        let parse_mode = |m: &str| match m {
            "drop" => TombstoneHandling::Drop,
            "tombstone" => TombstoneHandling::Tombstone,
            "rewrite" => TombstoneHandling::Rewrite,
            "delete-to-tombstone" => TombstoneHandling::DeleteToTombstone,
            _ => TombstoneHandling::RewriteWithTombstone,
        };
        let legacy_keys: Vec<String> = ["drop.tombstones", "delete.handling.mode"]
            .iter()
            .filter(|k| opts.get(k).is_some())
            .map(|k| opts.key(k))
            .collect();
        if !legacy_keys.is_empty() {
            tracing::warn!(
                "{} were removed in Debezium 3.2 and are ignored for events in Debezium 3.x's format \
                 (Sluice's default); use {} instead. They still apply to events in Debezium 2.x's \
                 format (sluice.debezium.compatibility=2.7)",
                legacy_keys.join(" and "),
                opts.key("delete.tombstone.handling.mode")
            );
        }
        // The deprecated keys are validated even when unused, as Debezium's
        // field validation does.
        let drop_tombstones = opts.bool("drop.tombstones", true)?;
        let legacy = opts
            .one_of("delete.handling.mode", &["drop", "rewrite", "none"], true)?
            .unwrap_or("drop");
        let mode = match current {
            Some(m) => DeleteMode::Current(parse_mode(m)),
            None => DeleteMode::Legacy {
                deletes: match legacy {
                    "rewrite" => LegacyDeletes::Rewrite,
                    "none" => LegacyDeletes::None,
                    _ => LegacyDeletes::Drop,
                },
                drop_tombstones,
            },
        };
        let refs = |list: &str, prefix_key: &str| -> Result<Vec<FieldRef>, ConfigError> {
            let prefix = opts.get(prefix_key).unwrap_or("__");
            opts.list(list)
                .iter()
                .map(|spec| {
                    FieldRef::parse(prefix, spec).ok_or_else(|| {
                        opts.error(
                            list,
                            opts.get(list),
                            format!("Unexpected field name: {spec} (expected <field>, <struct>.<field> or <field>:<new name>)"),
                        )
                    })
                })
                .collect()
        };
        let add_fields = refs("add.fields", "add.fields.prefix")?;
        let add_headers = refs("add.headers", "add.headers.prefix")?;
        let non_blank = |k: &str| {
            opts.get(k)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string)
        };
        Ok(ExtractNewRecordState {
            current: current.map_or(TombstoneHandling::Tombstone, parse_mode),
            mode,
            last_legacy: AtomicBool::new(false),
            add_fields,
            add_headers,
            route_by_field: opts
                .get("route.by.field")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            drop_fields_header: non_blank("drop.fields.header.name"),
            drop_fields_from_key: opts.bool("drop.fields.from.key", false)?,
            drop_fields_keep_schema_compatible: opts
                .bool("drop.fields.keep.schema.compatible", true)?,
            added: SchemaCache::new(),
            deleted: SchemaCache::new(),
        })
    }

    /// The delete handling in force for events of Debezium 1.x / 2.x's
    /// format.
    pub fn mode(&self) -> DeleteMode {
        self.mode
    }

    /// The delete handling in force for events of Debezium 3.x's format.
    pub fn current_mode(&self) -> TombstoneHandling {
        self.current
    }

    /// The handling for an event: legacy for Debezium 1.x / 2.x events.
    fn mode_for(&self, legacy: bool) -> DeleteMode {
        if legacy {
            self.mode
        } else {
            DeleteMode::Current(self.current)
        }
    }

    fn rewrite(mode: DeleteMode) -> bool {
        matches!(
            mode,
            DeleteMode::Current(TombstoneHandling::Rewrite)
                | DeleteMode::Current(TombstoneHandling::RewriteWithTombstone)
                | DeleteMode::Legacy {
                    deletes: LegacyDeletes::Rewrite,
                    ..
                }
        )
    }

    fn keep_tombstone(mode: DeleteMode) -> bool {
        match mode {
            DeleteMode::Current(m) => m == TombstoneHandling::RewriteWithTombstone,
            DeleteMode::Legacy {
                drop_tombstones, ..
            } => !drop_tombstones,
        }
    }

    /// What a delete becomes: None (dropped), `Some(false)` (a null value
    /// with the row schema) or `Some(true)` (rewritten); a real tombstone
    /// is handled before.
    fn delete_keeps(mode: DeleteMode) -> Option<bool> {
        match mode {
            DeleteMode::Current(TombstoneHandling::Drop)
            | DeleteMode::Legacy {
                deletes: LegacyDeletes::Drop,
                ..
            } => None,
            DeleteMode::Current(TombstoneHandling::Tombstone)
            | DeleteMode::Current(TombstoneHandling::DeleteToTombstone)
            | DeleteMode::Legacy {
                deletes: LegacyDeletes::None,
                ..
            } => Some(false),
            _ => Some(true),
        }
    }

    /// `InsertField$Value` with `static.field=__deleted`: a required copy
    /// of the row schema plus an optional string; null fields read as their
    /// defaults (`Struct.get`).
    fn mark_deleted(
        &self,
        schema: &SchemaRef,
        row: Vec<Value>,
        deleted: &str,
    ) -> Result<(SchemaRef, Value), TransformError> {
        let out = self.deleted.get_or_build::<TransformError>(&[schema], || {
            let mut s = copy_struct_basics(schema);
            s.fields.clone_from(&schema.fields);
            s.fields.push(sluice_core::schema::Field {
                name: DELETED_FIELD.to_string(),
                schema: sluice_core::schema::prim::opt_string(),
            });
            Ok(Arc::new(s))
        })?;
        let mut values: Vec<Value> = row
            .into_iter()
            .zip(&schema.fields)
            .map(|(v, f)| with_default(v, &f.schema))
            .collect();
        values.push(Value::String(deleted.to_string()));
        Ok((out, Value::Struct(values)))
    }

    /// Adds the `add.fields` to the row (always rebuilding its schema as a
    /// required copy, as Debezium does even with no fields to add).
    fn add_fields(
        &self,
        row_schema: &SchemaRef,
        row: Value,
        envelope: &SchemaRef,
        env_values: &[Value],
    ) -> Result<(SchemaRef, Value), TransformError> {
        let mut values = require_struct(row, "source field insertion")?;
        let out = self
            .added
            .get_or_build::<TransformError>(&[row_schema, envelope], || {
                let mut s = copy_struct_basics(row_schema);
                s.fields.clone_from(&row_schema.fields);
                for r in &self.add_fields {
                    if let Some(fs) = r.schema(envelope) {
                        s.fields.push(sluice_core::schema::Field {
                            name: r.new_name.clone(),
                            schema: added_field_schema(fs),
                        });
                    }
                }
                Ok(Arc::new(s))
            })?;
        for r in &self.add_fields {
            if r.schema(envelope).is_some() {
                let v = r.value(envelope, env_values);
                // A repeated name overwrites, as `Struct.put` does.
                match out.field(&r.new_name) {
                    Some((i, _)) if i < values.len() => values[i] = v,
                    _ => values.push(v),
                }
            }
        }
        Ok((out, Value::Struct(values)))
    }

    fn headers(&self, envelope: Option<(&Schema, &[Value])>) -> Vec<Header> {
        let mut out = Vec::new();
        for r in &self.add_headers {
            match envelope {
                // A tombstone carries only the `op` header, as "d".
                None => {
                    if r.field == "op" {
                        out.push(Header {
                            key: r.new_name.clone(),
                            value: Some(b"d".to_vec()),
                        });
                    }
                }
                Some((schema, values)) => {
                    if r.schema(schema).is_some() {
                        out.push(Header {
                            key: r.new_name.clone(),
                            value: header_bytes(&r.value(schema, values)),
                        });
                    }
                }
            }
        }
        out
    }

    /// The field names listed in the drop-fields header (a list, as
    /// `SimpleHeaderConverter` writes one: a JSON array of strings).
    fn fields_to_drop(&self, record: &ConnectRecord) -> Result<Vec<String>, TransformError> {
        let Some(name) = &self.drop_fields_header else {
            return Ok(Vec::new());
        };
        let Some(bytes) = record.header(name).and_then(|h| h.value.as_deref()) else {
            return Ok(Vec::new());
        };
        serde_json::from_slice::<Vec<String>>(bytes).map_err(|_| {
            TransformError::new(format!(
                "header '{name}' must hold a list of field names (a JSON array of strings), found: {}",
                String::from_utf8_lossy(bytes)
            ))
        })
    }

    fn drop_fields(&self, mut record: ConnectRecord) -> Result<ConnectRecord, TransformError> {
        let names = self.fields_to_drop(&record)?;
        if names.is_empty() {
            return Ok(record);
        }
        let pick = |schema: &Schema| -> Vec<String> {
            if !self.drop_fields_keep_schema_compatible {
                return names.clone();
            }
            schema
                .fields
                .iter()
                .filter(|f| f.schema.optional && names.contains(&f.name))
                .map(|f| f.name.clone())
                .collect()
        };
        if self.drop_fields_from_key && record.key.is_some() {
            if let Some(ks) = &record.key_schema {
                let drop = pick(ks);
                if !drop.is_empty() {
                    let (s, v) = super::replace_field::exclude(ks, record.key.take(), &drop)?;
                    record.key_schema = Some(s);
                    record.key = v;
                }
            }
        }
        // ReplaceField leaves a null value (and its schema) as it is.
        if let (Some(vs), true) = (record.value_schema.clone(), record.value.is_some()) {
            let drop = pick(&vs);
            if !drop.is_empty() {
                let (s, v) = super::replace_field::exclude(&vs, record.value.take(), &drop)?;
                record.value_schema = Some(s);
                record.value = v;
            }
        }
        Ok(record)
    }

    fn route(
        &self,
        mut record: ConnectRecord,
        row_schema: &Schema,
        row: Option<&Value>,
        purpose: &str,
    ) -> Result<ConnectRecord, TransformError> {
        let Some(field) = &self.route_by_field else {
            return Ok(record);
        };
        let Some(Value::Struct(values)) = row else {
            return Err(TransformError::new(format!(
                "Only Struct objects supported for [{purpose}], found: null"
            )));
        };
        let (i, f) = row_schema
            .field(field)
            .ok_or_else(|| TransformError::new(format!("{field} is not a valid field name")))?;
        if f.schema.ty != SchemaType::String {
            return Err(TransformError::new(format!(
                "Field '{field}' is not of type STRING"
            )));
        }
        if let Some(Value::String(t)) = values.get(i) {
            if !t.trim().is_empty() {
                record.topic = Arc::from(t.as_str());
            }
        }
        Ok(record)
    }
}

impl Transform for ExtractNewRecordState {
    fn apply(&self, record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError> {
        let mut record = record;
        if !self.add_headers.is_empty() {
            let envelope = match (&record.value_schema, &record.value) {
                (_, None) => Some(None),
                (Some(s), Some(Value::Struct(v))) => Some(Some((&**s, v.as_slice()))),
                // Not a struct with a schema: nothing to read headers from
                // (Debezium would fail on the cast).
                _ => None,
            };
            if let Some(envelope) = envelope {
                let extra = self.headers(envelope);
                record.headers.extend(extra);
            }
        }
        if record.value.is_none() {
            let mode = self.mode_for(self.last_legacy.load(Ordering::Relaxed));
            return Ok(Self::keep_tombstone(mode).then_some(record));
        }
        let envelope = match &record.value_schema {
            Some(s) if s.name_str().ends_with(".Envelope") => Arc::clone(s),
            _ => return Ok(Some(record)),
        };
        let legacy = match &record.value {
            Some(Value::Struct(v)) => is_legacy_event(&envelope, v),
            _ => false,
        };
        self.last_legacy.store(legacy, Ordering::Relaxed);
        let mode = self.mode_for(legacy);
        let Some(value) = record.value.take() else {
            return Ok(None);
        };
        let mut env_values = require_struct(value, "field extraction")?;
        let field = |name: &str| {
            envelope
                .field(name)
                .map(|(i, f)| (i, Arc::clone(&f.schema)))
                .ok_or_else(|| TransformError::new(format!("Unknown field: {name}")))
        };
        let (after_i, after_schema) = field("after")?;
        let (before_i, before_schema) = field("before")?;
        let after = env_values
            .get_mut(after_i)
            .map(|v| std::mem::replace(v, Value::Null));
        let after = after.filter(|v| !v.is_null());
        match after {
            Some(row) => {
                // Create, update or snapshot read.
                let (schema, row) = if Self::rewrite(mode) {
                    let fields = require_struct(row, "field insertion")?;
                    self.mark_deleted(&after_schema, fields, "false")?
                } else {
                    (after_schema, row)
                };
                record = self.route(
                    record,
                    &schema,
                    Some(&row),
                    "Read record to set topic routing for CREATE / UPDATE",
                )?;
                let (schema, row) = self.add_fields(&schema, row, &envelope, &env_values)?;
                record.value_schema = Some(schema);
                record.value = Some(row);
                if self.drop_fields_header.is_some() {
                    record = self.drop_fields(record)?;
                }
                Ok(Some(record))
            }
            None => {
                let before = env_values.get(before_i).filter(|v| !v.is_null()).cloned();
                let Some(before) = before else {
                    // Neither before nor after: a truncate, always dropped.
                    return Ok(None);
                };
                let Some(rewrite) = Self::delete_keeps(mode) else {
                    return Ok(None);
                };
                if mode == DeleteMode::Current(TombstoneHandling::DeleteToTombstone) {
                    record.value_schema = None;
                    record.value = None;
                    return Ok(Some(record));
                }
                // Routing reads `before` of the original event.
                record = self.route(
                    record,
                    &before_schema,
                    Some(&before),
                    "Read record to set topic routing for DELETE",
                )?;
                if rewrite {
                    let (schema, row) = match before {
                        Value::Struct(fields) => {
                            self.mark_deleted(&before_schema, fields, "true")?
                        }
                        other => (Arc::clone(&before_schema), other),
                    };
                    record.value_schema = Some(schema);
                    record.value = Some(row);
                } else {
                    record.value_schema = Some(after_schema);
                    record.value = None;
                }
                if self.drop_fields_header.is_some() {
                    record = self.drop_fields(record)?;
                }
                if let (Some(s), Some(v)) = (record.value_schema.clone(), record.value.take()) {
                    let (s, v) = self.add_fields(&s, v, &envelope, &env_values)?;
                    record.value_schema = Some(s);
                    record.value = Some(v);
                }
                Ok(Some(record))
            }
        }
    }
}
