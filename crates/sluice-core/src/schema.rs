//! Kafka Connect schemas: the same types, names, versions, parameters and
//! optional flags that Kafka Connect's `SchemaBuilder` produces, so the JSON
//! converter can write them byte for byte as Kafka Connect does.

use std::sync::Arc;

use crate::value::Value;

/// A shared, immutable schema. Schemas are built once per table and shared by
/// every record of that table.
pub type SchemaRef = Arc<Schema>;

/// The Connect schema types (`org.apache.kafka.connect.data.Schema.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaType {
    /// 8-bit signed integer.
    Int8,
    /// 16-bit signed integer.
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit IEEE 754 float.
    Float32,
    /// 64-bit IEEE 754 float.
    Float64,
    /// Boolean.
    Boolean,
    /// UTF-8 string.
    String,
    /// Byte array.
    Bytes,
    /// Array of `items`.
    Array,
    /// Map from `keys` to `items`.
    Map,
    /// Struct with ordered `fields`.
    Struct,
}

impl SchemaType {
    /// The name the JSON converter writes in a schema's `type` attribute.
    pub fn json_name(self) -> &'static str {
        match self {
            SchemaType::Int8 => "int8",
            SchemaType::Int16 => "int16",
            SchemaType::Int32 => "int32",
            SchemaType::Int64 => "int64",
            SchemaType::Float32 => "float",
            SchemaType::Float64 => "double",
            SchemaType::Boolean => "boolean",
            SchemaType::String => "string",
            SchemaType::Bytes => "bytes",
            SchemaType::Array => "array",
            SchemaType::Map => "map",
            SchemaType::Struct => "struct",
        }
    }

    /// Parses a JSON converter `type` attribute.
    pub fn from_json_name(name: &str) -> Option<SchemaType> {
        Some(match name {
            "int8" => SchemaType::Int8,
            "int16" => SchemaType::Int16,
            "int32" => SchemaType::Int32,
            "int64" => SchemaType::Int64,
            "float" => SchemaType::Float32,
            "double" => SchemaType::Float64,
            "boolean" => SchemaType::Boolean,
            "string" => SchemaType::String,
            "bytes" => SchemaType::Bytes,
            "array" => SchemaType::Array,
            "map" => SchemaType::Map,
            "struct" => SchemaType::Struct,
            _ => return None,
        })
    }
}

/// A named field of a struct schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The field's schema.
    pub schema: SchemaRef,
}

/// A Connect schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// The type.
    pub ty: SchemaType,
    /// Whether null is allowed.
    pub optional: bool,
    /// Logical or semantic name (`org.apache.kafka.connect.data.Decimal`, ...).
    pub name: Option<String>,
    /// Schema version.
    pub version: Option<i32>,
    /// Documentation.
    pub doc: Option<String>,
    /// Parameters, in insertion order (Kafka Connect keeps a `LinkedHashMap`).
    pub parameters: Vec<(String, String)>,
    /// Default value.
    pub default: Option<Value>,
    /// Fields of a struct.
    pub fields: Vec<Field>,
    /// Key schema of a map.
    pub keys: Option<SchemaRef>,
    /// Element schema of an array, value schema of a map.
    pub items: Option<SchemaRef>,
}

impl Schema {
    /// A schema of the given type with nothing else set (required).
    pub fn of(ty: SchemaType) -> Schema {
        Schema {
            ty,
            optional: false,
            name: None,
            version: None,
            doc: None,
            parameters: Vec::new(),
            default: None,
            fields: Vec::new(),
            keys: None,
            items: None,
        }
    }

    /// The field named `name` and its position.
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// Field `name` of `value`, a struct of this schema: the field's
    /// schema and its value (None when there is no such field, or `value`
    /// is no struct).
    pub fn field_value<'a>(
        &'a self,
        value: &'a Value,
        name: &str,
    ) -> Option<(&'a SchemaRef, &'a Value)> {
        let (i, f) = self.field(name)?;
        let v = value.as_struct()?.get(i)?;
        Some((&f.schema, v))
    }

    /// The value of a parameter.
    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The name, or "" when unnamed.
    pub fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Fluent builder mirroring Kafka Connect's `SchemaBuilder`.
#[derive(Debug, Clone)]
pub struct SchemaBuilder {
    schema: Schema,
}

impl SchemaBuilder {
    /// Starts a schema of type `ty`.
    pub fn new(ty: SchemaType) -> SchemaBuilder {
        SchemaBuilder {
            schema: Schema::of(ty),
        }
    }
    /// `SchemaBuilder.struct()`.
    pub fn structure() -> SchemaBuilder {
        SchemaBuilder::new(SchemaType::Struct)
    }
    /// `SchemaBuilder.array(items)`.
    pub fn array(items: SchemaRef) -> SchemaBuilder {
        let mut b = SchemaBuilder::new(SchemaType::Array);
        b.schema.items = Some(items);
        b
    }
    /// `SchemaBuilder.map(keys, values)`.
    pub fn map(keys: SchemaRef, values: SchemaRef) -> SchemaBuilder {
        let mut b = SchemaBuilder::new(SchemaType::Map);
        b.schema.keys = Some(keys);
        b.schema.items = Some(values);
        b
    }
    /// Marks the schema optional.
    pub fn optional(mut self) -> Self {
        self.schema.optional = true;
        self
    }
    /// Sets optional to `opt`.
    pub fn optional_if(mut self, opt: bool) -> Self {
        self.schema.optional = opt;
        self
    }
    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.schema.name = Some(name.into());
        self
    }
    /// Sets the version.
    pub fn version(mut self, v: i32) -> Self {
        self.schema.version = Some(v);
        self
    }
    /// Sets the doc.
    pub fn doc(mut self, d: impl Into<String>) -> Self {
        self.schema.doc = Some(d.into());
        self
    }
    /// Adds a parameter.
    pub fn parameter(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.schema.parameters.push((k.into(), v.into()));
        self
    }
    /// Sets the default value.
    pub fn default_value(mut self, v: Value) -> Self {
        self.schema.default = Some(v);
        self
    }
    /// Adds a struct field.
    pub fn field(mut self, name: impl Into<String>, schema: SchemaRef) -> Self {
        self.schema.fields.push(Field {
            name: name.into(),
            schema,
        });
        self
    }
    /// Finishes the schema.
    pub fn build(self) -> SchemaRef {
        Arc::new(self.schema)
    }
    /// Finishes the schema without wrapping it.
    pub fn build_owned(self) -> Schema {
        self.schema
    }
}

/// Shorthands for primitive schemas.
pub mod prim {
    use super::*;
    /// Required or optional primitive schema of `ty`.
    pub fn of(ty: SchemaType, optional: bool) -> SchemaRef {
        SchemaBuilder::new(ty).optional_if(optional).build()
    }
    /// `Schema.STRING_SCHEMA`.
    pub fn string() -> SchemaRef {
        of(SchemaType::String, false)
    }
    /// `Schema.OPTIONAL_STRING_SCHEMA`.
    pub fn opt_string() -> SchemaRef {
        of(SchemaType::String, true)
    }
    /// `Schema.INT64_SCHEMA`.
    pub fn int64() -> SchemaRef {
        of(SchemaType::Int64, false)
    }
    /// `Schema.OPTIONAL_INT64_SCHEMA`.
    pub fn opt_int64() -> SchemaRef {
        of(SchemaType::Int64, true)
    }
}
