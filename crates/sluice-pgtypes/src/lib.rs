//! PostgreSQL values in TEXT output format, decoded into exactly the Kafka
//! Connect schemas and values that Debezium's PostgreSQL connector (2.x)
//! produces for them.
//!
//! Sluice reads text both from pgoutput (streaming) and from
//! `COPY ... TO STDOUT` (snapshot, with COPY escaping already removed), on
//! sessions that set `DateStyle=ISO, MDY`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, `extra_float_digits=3`, `bytea_output=hex` and
//! `lc_monetary=C`, so one decoder per type serves both paths.
//!
//! Build a [`ColumnCodec`] once per column (from a [`TypeRegistry`] that knows
//! the column's type and the [`TypeModes`] of the connector), then call
//! [`ColumnCodec::decode_text`] for every value of that column.
//!
//! Where Debezium's streaming and snapshot paths disagree, or Debezium
//! misbehaves, this crate does the following (so callers know what to
//! expect):
//! - Columns Debezium leaves out of its events (types it cannot map, such as
//!   tsvector or box, and arrays it declares unsupported, such as interval[]
//!   or arrays of domains) still get a codec; [`ColumnCodec::debezium_omits`]
//!   says so, and the caller decides.
//! - `name` columns decode to their text (Debezium's snapshot value; its
//!   streaming path yields null for them).
//! - NaN and infinite numerics in `precise` mode are a [`TypeError`]: Debezium
//!   fails the connector on them too.
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
pub use modes::{BinaryMode, DecimalMode, HstoreMode, IntervalMode, TimePrecisionMode, TypeModes};
pub use registry::{oid, TypeInfo, TypeKind, TypeRegistry};
