//! A compact binary form of Connect [`Value`]s and [`Schema`]s, for records
//! kept on local disk by Sluice itself (never on a Kafka topic, where the
//! converters decide the bytes).
//!
//! Values are self-describing: each starts with a one-byte tag, so a value
//! reads back without its schema and a value that does not match its schema
//! still round-trips. Integers are zigzag varints, floats little-endian,
//! strings and byte arrays length-prefixed. A Debezium change event of the
//! scenario's table takes about 150 bytes this way, against about 3 KB as
//! JSON with its schema; the schema is written once, elsewhere, and named by
//! an id.
//!
//! Decoding never panics on bad input: truncated or corrupt bytes are a
//! [`DecodeError`], and nesting is bounded.

use std::sync::Arc;

use crate::schema::{Field, Schema, SchemaRef, SchemaType};
use crate::value::Value;

/// Deepest nesting of arrays, maps and structs accepted when decoding.
const MAX_DEPTH: u32 = 128;

/// Bytes that are not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt binary record data: {0}")]
pub struct DecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INT8: u8 = 3;
    pub const INT16: u8 = 4;
    pub const INT32: u8 = 5;
    pub const INT64: u8 = 6;
    pub const FLOAT32: u8 = 7;
    pub const FLOAT64: u8 = 8;
    pub const STRING: u8 = 9;
    pub const BYTES: u8 = 10;
    pub const ARRAY: u8 = 11;
    pub const MAP: u8 = 12;
    pub const STRUCT: u8 = 13;
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
pub fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| DecodeError("unexpected end of data".into()))?;
        self.buf = rest;
        Ok(b)
    }

    /// `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return err(format!(
                "a length of {n} bytes runs past the end ({} left)",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// An unsigned varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        err("a varint longer than 10 bytes")
    }

    /// A zigzag varint.
    pub fn zigzag(&mut self) -> Result<i64, DecodeError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A length that must fit what is left (each element takes at least
    /// one byte), so a corrupt count cannot make a huge allocation.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return err(format!(
                "a count of {n} exceeds the {} bytes left",
                self.buf.len()
            ));
        }
        Ok(n as usize)
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError("length overflow".into()))?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| DecodeError(format!("invalid UTF-8: {e}")))
    }
}

/// Appends the encoding of `v`.
pub fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(tag::NULL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Int8(i) => {
            out.push(tag::INT8);
            out.push(*i as u8);
        }
        Value::Int16(i) => {
            out.push(tag::INT16);
            put_zigzag(out, i64::from(*i));
        }
        Value::Int32(i) => {
            out.push(tag::INT32);
            put_zigzag(out, i64::from(*i));
        }
        Value::Int64(i) => {
            out.push(tag::INT64);
            put_zigzag(out, *i);
        }
        Value::Float32(f) => {
            out.push(tag::FLOAT32);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Float64(f) => {
            out.push(tag::FLOAT64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            out.push(tag::STRING);
            put_bytes(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(tag::BYTES);
            put_bytes(out, b);
        }
        Value::Array(items) => {
            out.push(tag::ARRAY);
            put_varint(out, items.len() as u64);
            for i in items {
                encode_value(out, i);
            }
        }
        Value::Map(entries) => {
            out.push(tag::MAP);
            put_varint(out, entries.len() as u64);
            for (k, v) in entries {
                encode_value(out, k);
                encode_value(out, v);
            }
        }
        Value::Struct(fields) => {
            out.push(tag::STRUCT);
            put_varint(out, fields.len() as u64);
            for f in fields {
                encode_value(out, f);
            }
        }
    }
}

/// Reads one value.
pub fn decode_value(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    value_at(r, 0)
}

fn value_at(r: &mut Reader<'_>, depth: u32) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return err(format!("values nested deeper than {MAX_DEPTH}"));
    }
    let t = r.u8()?;
    Ok(match t {
        tag::NULL => Value::Null,
        tag::FALSE => Value::Bool(false),
        tag::TRUE => Value::Bool(true),
        tag::INT8 => Value::Int8(r.u8()? as i8),
        tag::INT16 => Value::Int16(
            i16::try_from(r.zigzag()?).map_err(|_| DecodeError("int16 out of range".into()))?,
        ),
        tag::INT32 => Value::Int32(
            i32::try_from(r.zigzag()?).map_err(|_| DecodeError("int32 out of range".into()))?,
        ),
        tag::INT64 => Value::Int64(r.zigzag()?),
        tag::FLOAT32 => {
            let b = r.take(4)?;
            Value::Float32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        tag::FLOAT64 => {
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Float64(f64::from_le_bytes(a))
        }
        tag::STRING => Value::String(r.str()?.to_owned()),
        tag::BYTES => Value::Bytes(r.bytes()?.to_vec()),
        tag::ARRAY => {
            let n = r.count()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value_at(r, depth + 1)?);
            }
            Value::Array(items)
        }
        tag::MAP => {
            let n = r.count()?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let k = value_at(r, depth + 1)?;
                let v = value_at(r, depth + 1)?;
                entries.push((k, v));
            }
            Value::Map(entries)
        }
        tag::STRUCT => {
            let n = r.count()?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                fields.push(value_at(r, depth + 1)?);
            }
            Value::Struct(fields)
        }
        other => return err(format!("unknown value tag {other}")),
    })
}

fn type_code(t: SchemaType) -> u8 {
    match t {
        SchemaType::Int8 => 0,
        SchemaType::Int16 => 1,
        SchemaType::Int32 => 2,
        SchemaType::Int64 => 3,
        SchemaType::Float32 => 4,
        SchemaType::Float64 => 5,
        SchemaType::Boolean => 6,
        SchemaType::String => 7,
        SchemaType::Bytes => 8,
        SchemaType::Array => 9,
        SchemaType::Map => 10,
        SchemaType::Struct => 11,
    }
}

fn type_of(code: u8) -> Result<SchemaType, DecodeError> {
    Ok(match code {
        0 => SchemaType::Int8,
        1 => SchemaType::Int16,
        2 => SchemaType::Int32,
        3 => SchemaType::Int64,
        4 => SchemaType::Float32,
        5 => SchemaType::Float64,
        6 => SchemaType::Boolean,
        7 => SchemaType::String,
        8 => SchemaType::Bytes,
        9 => SchemaType::Array,
        10 => SchemaType::Map,
        11 => SchemaType::Struct,
        other => return err(format!("unknown schema type {other}")),
    })
}

mod flag {
    pub const OPTIONAL: u8 = 1;
    pub const NAME: u8 = 2;
    pub const VERSION: u8 = 4;
    pub const DOC: u8 = 8;
    pub const DEFAULT: u8 = 16;
    pub const KEYS: u8 = 32;
    pub const ITEMS: u8 = 64;
}

/// Appends the encoding of `s` (every attribute, so two schemas encode
/// alike exactly when they are equal).
pub fn encode_schema(out: &mut Vec<u8>, s: &Schema) {
    let Schema {
        ty,
        optional,
        name,
        version,
        doc,
        parameters,
        default,
        fields,
        keys,
        items,
    } = s;
    out.push(type_code(*ty));
    let mut flags = 0;
    for (set, f) in [
        (*optional, flag::OPTIONAL),
        (name.is_some(), flag::NAME),
        (version.is_some(), flag::VERSION),
        (doc.is_some(), flag::DOC),
        (default.is_some(), flag::DEFAULT),
        (keys.is_some(), flag::KEYS),
        (items.is_some(), flag::ITEMS),
    ] {
        if set {
            flags |= f;
        }
    }
    out.push(flags);
    if let Some(n) = name {
        put_bytes(out, n.as_bytes());
    }
    if let Some(v) = version {
        put_zigzag(out, i64::from(*v));
    }
    if let Some(d) = doc {
        put_bytes(out, d.as_bytes());
    }
    put_varint(out, parameters.len() as u64);
    for (k, v) in parameters {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
    if let Some(d) = default {
        encode_value(out, d);
    }
    put_varint(out, fields.len() as u64);
    for f in fields {
        put_bytes(out, f.name.as_bytes());
        encode_schema(out, &f.schema);
    }
    if let Some(k) = keys {
        encode_schema(out, k);
    }
    if let Some(i) = items {
        encode_schema(out, i);
    }
}

/// Reads one schema.
pub fn decode_schema(r: &mut Reader<'_>) -> Result<SchemaRef, DecodeError> {
    schema_at(r, 0)
}

fn schema_at(r: &mut Reader<'_>, depth: u32) -> Result<SchemaRef, DecodeError> {
    if depth > MAX_DEPTH {
        return err(format!("schemas nested deeper than {MAX_DEPTH}"));
    }
    let ty = type_of(r.u8()?)?;
    let flags = r.u8()?;
    let has = |f: u8| flags & f != 0;
    let name = if has(flag::NAME) {
        Some(r.str()?.to_owned())
    } else {
        None
    };
    let version = if has(flag::VERSION) {
        Some(i32::try_from(r.zigzag()?).map_err(|_| DecodeError("version out of range".into()))?)
    } else {
        None
    };
    let doc = if has(flag::DOC) {
        Some(r.str()?.to_owned())
    } else {
        None
    };
    let n = r.count()?;
    let mut parameters = Vec::with_capacity(n);
    for _ in 0..n {
        parameters.push((r.str()?.to_owned(), r.str()?.to_owned()));
    }
    let default = if has(flag::DEFAULT) {
        Some(value_at(r, depth + 1)?)
    } else {
        None
    };
    let n = r.count()?;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?.to_owned();
        fields.push(Field {
            name,
            schema: schema_at(r, depth + 1)?,
        });
    }
    let keys = if has(flag::KEYS) {
        Some(schema_at(r, depth + 1)?)
    } else {
        None
    };
    let items = if has(flag::ITEMS) {
        Some(schema_at(r, depth + 1)?)
    } else {
        None
    };
    Ok(Arc::new(Schema {
        ty,
        optional: has(flag::OPTIONAL),
        name,
        version,
        doc,
        parameters,
        default,
        fields,
        keys,
        items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debezium;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i8>().prop_map(Value::Int8),
            any::<i16>().prop_map(Value::Int16),
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            any::<f32>().prop_map(Value::Float32),
            any::<f64>().prop_map(Value::Float64),
            ".*".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..8)
                    .prop_map(Value::Map),
                proptest::collection::vec(inner, 0..8).prop_map(Value::Struct),
            ]
        })
    }

    /// Equality that treats NaNs of the same bits as equal.
    fn same(a: &Value, b: &Value) -> bool {
        let mut x = Vec::new();
        let mut y = Vec::new();
        encode_value(&mut x, a);
        encode_value(&mut y, b);
        x == y
    }

    proptest! {
        #[test]
        fn values_round_trip(v in value()) {
            let mut buf = Vec::new();
            encode_value(&mut buf, &v);
            let mut r = Reader::new(&buf);
            let back = decode_value(&mut r).expect("decodes");
            prop_assert!(r.is_empty());
            prop_assert!(same(&v, &back), "{v:?} != {back:?}");
        }

        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_value(&mut Reader::new(&bytes));
            let _ = decode_schema(&mut Reader::new(&bytes));
        }

        #[test]
        fn every_truncation_is_an_error(v in value()) {
            let mut buf = Vec::new();
            encode_value(&mut buf, &v);
            for cut in 0..buf.len() {
                prop_assert!(decode_value(&mut Reader::new(&buf[..cut])).is_err());
            }
        }
    }

    #[test]
    fn debezium_schemas_round_trip_equal() {
        use crate::schema::{prim, SchemaBuilder};
        let row = SchemaBuilder::structure()
            .name("srv.public.t.Value")
            .optional()
            .field("id", prim::int64())
            .field(
                "amount",
                SchemaBuilder::new(SchemaType::Bytes)
                    .name("org.apache.kafka.connect.data.Decimal")
                    .version(1)
                    .parameter("scale", "2")
                    .default_value(Value::Bytes(vec![0]))
                    .optional()
                    .build(),
            )
            .build();
        let envelope = SchemaBuilder::structure()
            .name("srv.public.t.Envelope")
            .version(2)
            .field("before", row.clone())
            .field("after", row)
            .field("source", debezium::source_schema())
            .build();
        let mut buf = Vec::new();
        encode_schema(&mut buf, &envelope);
        let back = decode_schema(&mut Reader::new(&buf)).expect("decodes");
        assert_eq!(*back, *envelope);
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut buf = vec![tag::ARRAY];
        put_varint(&mut buf, u64::MAX / 2);
        let e = decode_value(&mut Reader::new(&buf)).expect_err("corrupt");
        assert!(e.0.contains("exceeds"), "{e}");
    }
}
