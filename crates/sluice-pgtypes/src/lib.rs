//! PostgreSQL values in TEXT output format, decoded into exactly the Kafka
//! Connect schemas and values that Debezium's PostgreSQL connector (3.6 by
//! default, 2.7 with [`Format::V2_7`]) produces for them.
//!
//! Sluice reads text both from pgoutput (streaming) and from
//! `COPY ... TO STDOUT` (snapshot, with COPY escaping already removed), on
//! sessions that set `DateStyle=ISO, MDY`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex` and
//! `lc_monetary=C`, so one decoder per type serves both paths.
//!
//! Build a [`ColumnCodec`] once per column (from a [`TypeRegistry`] that knows
//! the column's type and the [`TypeModes`] of the connector), then call
//! [`ColumnCodec::decode_text`] for every value of that column;
//! [`ColumnCodec::default_from_expression`] reads a column's `DEFAULT` into
//! the schema default Debezium gives it.
//!
//! Where Debezium's streaming and snapshot paths disagree, or Debezium loses
//! data, this crate does the following (so callers know what to expect):
//! - Columns Debezium leaves out of its events (types it cannot map, such as
//!   box or pg_lsn, and arrays it declares unsupported, such as interval[] or
//!   arrays of domains) still get a codec; [`ColumnCodec::debezium_omits`]
//!   says so, and the caller decides. With `include.unknown.datatypes` the
//!   unknown scalar types decode to the bytes of their text instead.
//! - `name` columns decode to their text (Debezium's snapshot value; its
//!   streaming path yields null for them).
//! - Values Debezium cannot convert (NaN and infinite numerics in `precise`
//!   mode, a NULL element of an enum array) are a [`TypeError`]: the caller
//!   applies `event.converting.failure.handling.mode`.
//! - Elements of MicroTime arrays keep their microseconds (Debezium truncates
//!   them to milliseconds); `bit(n)[]` decodes to an array of `Bits` (Debezium
//!   declares a single `Bits` field and fails on every value).
//! - Multi-dimensional arrays give one null per sub-array, which is what
//!   Debezium's element converters make of them for non-string elements.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod array;
mod codec;
#[cfg(test)]
mod codec_tests;
mod datetime;
mod default;
mod error;
mod hstore;
mod interval;
mod md5;
mod modes;
mod numeric;
mod registry;
mod schemas;

pub use codec::ColumnCodec;
pub use default::{jdbc_type_name, DefaultError};
pub use error::TypeError;
pub use modes::{
    BinaryMode, DecimalMode, Format, HstoreMode, IntervalMode, TimePrecisionMode, TypeModes,
};
pub use registry::{oid, TypeInfo, TypeKind, TypeRegistry};
