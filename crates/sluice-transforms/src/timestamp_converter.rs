//! `org.apache.kafka.connect.transforms.TimestampConverter$Key` / `$Value`
//! (Kafka 3.7): converts a timestamp (the whole key/value, or one `field`
//! of it) between `string` (a `SimpleDateFormat` `format`, UTC), `unix`
//! (`unix.precision` seconds / milliseconds / microseconds / nanoseconds),
//! `Date`, `Time` and `Timestamp`.
//!
//! Connect's Date, Time and Timestamp travel in their physical forms here
//! (days, ms of day, ms since the epoch). Without a schema Kafka would put
//! a `java.util.Date` in the map, which the JSON converter then refuses;
//! Sluice writes the physical number instead.

use std::sync::Arc;

use sluice_core::config::ConfigError;
use sluice_core::converter::{DATE_LOGICAL_NAME, TIMESTAMP_LOGICAL_NAME, TIME_LOGICAL_NAME};
use sluice_core::schema::{Field, Schema, SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::value::Value;

use super::java_date_format::JavaDateFormat;
use super::{
    copy_struct_basics, require_map, require_struct, type_name, with_default, ConnectRecord,
    Options, SchemaCache, Transform, TransformError,
};

/// `TimestampConverter$Key`.
pub const KEY_CLASS: &str = "org.apache.kafka.connect.transforms.TimestampConverter$Key";
/// `TimestampConverter$Value`.
pub const VALUE_CLASS: &str = "org.apache.kafka.connect.transforms.TimestampConverter$Value";

const PURPOSE: &str = "converting timestamp formats";
const DAY_MS: i64 = 86_400_000;

/// A timestamp representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Formatted text.
    String,
    /// A number since the epoch, in `unix.precision` units.
    Unix,
    /// `org.apache.kafka.connect.data.Date` (days).
    Date,
    /// `org.apache.kafka.connect.data.Time` (ms of day).
    Time,
    /// `org.apache.kafka.connect.data.Timestamp` (ms).
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

/// The configured transform.
pub struct TimestampConverter {
    on_key: bool,
    field: String,
    target: Kind,
    format: Option<JavaDateFormat>,
    precision: Precision,
    cache: SchemaCache,
}

fn logical(name: &str, ty: SchemaType, optional: bool) -> SchemaRef {
    SchemaBuilder::new(ty)
        .name(name)
        .version(1)
        .optional_if(optional)
        .build()
}

impl Kind {
    fn schema(self, optional: bool) -> SchemaRef {
        match self {
            Kind::String => sluice_core::schema::prim::of(SchemaType::String, optional),
            Kind::Unix => sluice_core::schema::prim::of(SchemaType::Int64, optional),
            Kind::Date => logical(DATE_LOGICAL_NAME, SchemaType::Int32, optional),
            Kind::Time => logical(TIME_LOGICAL_NAME, SchemaType::Int32, optional),
            Kind::Timestamp => logical(TIMESTAMP_LOGICAL_NAME, SchemaType::Int64, optional),
        }
    }

    /// `timestampTypeFromSchema`.
    fn of_schema(s: &Schema) -> Result<Kind, TransformError> {
        Ok(match (s.name.as_deref(), s.ty) {
            (Some(TIMESTAMP_LOGICAL_NAME), _) => Kind::Timestamp,
            (Some(DATE_LOGICAL_NAME), _) => Kind::Date,
            (Some(TIME_LOGICAL_NAME), _) => Kind::Time,
            (_, SchemaType::String) => Kind::String,
            (_, SchemaType::Int64) => Kind::Unix,
            (_, ty) => {
                return Err(TransformError::new(format!(
                    "Schema of type {} does not correspond to a known timestamp type format",
                    ty.json_name()
                )))
            }
        })
    }
}

impl TimestampConverter {
    /// Reads the options (`on_key` picks `$Key`).
    pub fn from_options(opts: &Options<'_>, on_key: bool) -> Result<Self, ConfigError> {
        let target = match opts.one_of(
            "target.type",
            &["string", "unix", "Date", "Time", "Timestamp"],
            false,
        )? {
            None => return Err(ConfigError::missing(&opts.key("target.type"))),
            Some("string") => Kind::String,
            Some("unix") => Kind::Unix,
            Some("Date") => Kind::Date,
            Some("Time") => Kind::Time,
            Some(_) => Kind::Timestamp,
        };
        let precision = match opts.one_of(
            "unix.precision",
            &["nanoseconds", "microseconds", "milliseconds", "seconds"],
            false,
        )? {
            Some("seconds") => Precision::Seconds,
            Some("microseconds") => Precision::Micros,
            Some("nanoseconds") => Precision::Nanos,
            _ => Precision::Millis,
        };
        let pattern = opts.get("format").filter(|f| !f.trim().is_empty());
        let format = match pattern {
            None if target == Kind::String => {
                return Err(opts.error(
                    "format",
                    None,
                    "TimestampConverter requires format option to be specified when using string timestamps",
                ))
            }
            None => None,
            Some(p) => Some(JavaDateFormat::new(p).map_err(|e| {
                opts.error(
                    "format",
                    Some(p),
                    format!("TimestampConverter requires a SimpleDateFormat-compatible pattern for string timestamps: {e}"),
                )
            })?),
        };
        Ok(TimestampConverter {
            on_key,
            field: opts.get("field").unwrap_or("").to_string(),
            target,
            format,
            precision,
            cache: SchemaCache::new(),
        })
    }

    fn format(&self) -> Result<&JavaDateFormat, TransformError> {
        self.format.as_ref().ok_or_else(|| {
            TransformError::new("a string timestamp needs the 'format' option to be read")
        })
    }

    /// `toRaw`: ms since the epoch. `kind` None infers it from the value.
    fn to_raw(&self, v: &Value, kind: Option<Kind>) -> Result<i64, TransformError> {
        let kind = match kind {
            Some(k) => k,
            None => match v {
                Value::Int64(_) => Kind::Unix,
                Value::String(_) => Kind::String,
                other => {
                    return Err(TransformError::new(format!(
                        "TimestampConverter does not support {} objects as timestamps",
                        type_name(other)
                    )))
                }
            },
        };
        match (kind, v) {
            (Kind::String, Value::String(s)) => self.format()?.parse(s).map_err(TransformError),
            (Kind::Unix, Value::Int64(n)) => Ok(match self.precision {
                Precision::Seconds => n.saturating_mul(1000),
                Precision::Millis => *n,
                Precision::Micros => n / 1000,
                Precision::Nanos => n / 1_000_000,
            }),
            (Kind::Date, Value::Int32(d)) => Ok(i64::from(*d) * DAY_MS),
            (Kind::Time, Value::Int32(ms)) => Ok(i64::from(*ms)),
            (Kind::Timestamp, Value::Int64(ms)) => Ok(*ms),
            (k, other) => Err(TransformError::new(format!(
                "Expected {} timestamp, but found {}",
                match k {
                    Kind::String => "string (java.lang.String)",
                    Kind::Unix => "Unix (java.lang.Long)",
                    _ => "a java.util.Date",
                },
                type_name(other)
            ))),
        }
    }

    /// `toType`.
    fn to_type(&self, ms: i64) -> Result<Value, TransformError> {
        Ok(match self.target {
            Kind::String => Value::String(self.format()?.format(ms)),
            Kind::Unix => Value::Int64(match self.precision {
                Precision::Seconds => ms / 1000,
                Precision::Millis => ms,
                Precision::Micros => ms.saturating_mul(1000),
                Precision::Nanos => ms.saturating_mul(1_000_000),
            }),
            Kind::Date => {
                Value::Int32(i32::try_from(ms.div_euclid(DAY_MS)).map_err(|_| {
                    TransformError::new(format!("{ms} ms is out of the Date range"))
                })?)
            }
            Kind::Time => Value::Int32(ms.rem_euclid(DAY_MS) as i32),
            Kind::Timestamp => Value::Int64(ms),
        })
    }

    fn convert(&self, v: Value, kind: Option<Kind>) -> Result<Value, TransformError> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let raw = self.to_raw(&v, kind)?;
        self.to_type(raw)
    }

    fn apply_to(
        &self,
        schema: Option<&SchemaRef>,
        value: Option<Value>,
    ) -> Result<(Option<SchemaRef>, Option<Value>), TransformError> {
        let Some(schema) = schema else {
            let Some(v) = value else {
                return Ok((None, None));
            };
            if self.field.is_empty() {
                return Ok((None, Some(self.convert(v, None)?)));
            }
            let mut m = require_map(v, PURPOSE)?;
            let key = Value::String(self.field.clone());
            match m.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => {
                    let old = std::mem::replace(&mut slot.1, Value::Null);
                    slot.1 = self.convert(old, None)?;
                }
                // HashMap.get of a missing key is null, put back as null.
                None => m.push((key, Value::Null)),
            }
            return Ok((None, Some(Value::Map(m))));
        };
        if self.field.is_empty() {
            let kind = Kind::of_schema(schema)?;
            let v = match value {
                Some(v) => Some(self.convert(v, Some(kind))?),
                None => None,
            };
            return Ok((Some(self.target.schema(schema.optional)), v));
        }
        let out = self.cache.get_or_build::<TransformError>(&[schema], || {
            let mut s = copy_struct_basics(schema);
            s.optional = schema.optional;
            for f in &schema.fields {
                s.fields.push(Field {
                    name: f.name.clone(),
                    schema: if f.name == self.field {
                        self.target.schema(f.schema.optional)
                    } else {
                        Arc::clone(&f.schema)
                    },
                });
            }
            Ok(Arc::new(s))
        })?;
        let Some(v) = value else {
            return Ok((Some(out), None));
        };
        let mut values = Vec::with_capacity(schema.fields.len());
        for (v, f) in require_struct(v, PURPOSE)?.into_iter().zip(&schema.fields) {
            let v = with_default(v, &f.schema);
            values.push(if f.name == self.field {
                self.convert(v, Some(Kind::of_schema(&f.schema)?))?
            } else {
                v
            });
        }
        Ok((Some(out), Some(Value::Struct(values))))
    }
}

impl Transform for TimestampConverter {
    fn apply(&self, mut record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError> {
        if self.on_key {
            let (s, v) = self.apply_to(record.key_schema.as_ref(), record.key.take())?;
            record.key_schema = s;
            record.key = v;
        } else {
            let (s, v) = self.apply_to(record.value_schema.as_ref(), record.value.take())?;
            record.value_schema = s;
            record.value = v;
        }
        Ok(Some(record))
    }
}
