//! Connect values. A struct value holds its fields positionally, in the order
//! of its schema's fields, so building one per row costs one allocation.

/// A Connect value. Logical types travel in their physical form: a Decimal is
/// `Bytes` (big-endian two's-complement unscaled value), a Date is `Int32`
/// days, and so on; the schema's name says how to read them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Null (for optional schemas).
    Null,
    /// Boolean.
    Bool(bool),
    /// int8.
    Int8(i8),
    /// int16.
    Int16(i16),
    /// int32.
    Int32(i32),
    /// int64.
    Int64(i64),
    /// float.
    Float32(f32),
    /// double.
    Float64(f64),
    /// string.
    String(String),
    /// bytes.
    Bytes(Vec<u8>),
    /// array.
    Array(Vec<Value>),
    /// map, in insertion order.
    Map(Vec<(Value, Value)>),
    /// struct, positional by the schema's fields.
    Struct(Vec<Value>),
}

impl Value {
    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// The fields, when this is a struct.
    pub fn as_struct(&self) -> Option<&[Value]> {
        match self {
            Value::Struct(f) => Some(f),
            _ => None,
        }
    }
    /// Any integer widened to i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int8(v) => Some(v.into()),
            Value::Int16(v) => Some(v.into()),
            Value::Int32(v) => Some(v.into()),
            Value::Int64(v) => Some(v),
            _ => None,
        }
    }
}
