//! Sluice's core: the Kafka Connect data model (schemas and values), the
//! record types that flow between sources, the transport and sinks, the
//! converters that turn records into bytes exactly as Kafka Connect does, the
//! Debezium event schemas, and the traits every connector implements.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod binary;
pub mod config;
pub mod connector;
pub mod converter;
pub mod debezium;
pub mod error;
pub mod generation;
pub mod record;
pub mod schema;
pub mod signal;
pub mod telemetry;
pub mod value;

pub use error::{ErrorKind, TaskError};
pub use record::{Header, Record, SinkRecord, SourceOffset, SourceRecord};
pub use schema::{Field, Schema, SchemaBuilder, SchemaRef, SchemaType};
pub use value::Value;
