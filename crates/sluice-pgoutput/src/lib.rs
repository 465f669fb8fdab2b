//! Decoder for PostgreSQL's pgoutput logical replication protocol.
//!
//! Three layers:
//! - [`parse_copy_data`] / [`encode_standby_status_update`]: the streaming
//!   replication messages exchanged in CopyBoth mode (XLogData, keepalive,
//!   Standby status update).
//! - [`Decoder`]: pgoutput messages carried in XLogData, protocol versions 1
//!   to 4, including streamed in-progress transactions and two-phase commit.
//! - [`spill::StreamedTxns`]: a bounded-memory buffer holding streamed
//!   transactions until they commit or abort.
//!
//! Decoding never panics on malformed input and never allocates based on an
//! unchecked length field; errors name the message, field and byte offset.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::indexing_slicing)
)]
#![warn(missing_docs)]

mod error;
mod logical;
mod lsn;
mod reader;
mod replication;
pub mod spill;

pub use error::DecodeError;
pub use logical::{
    Column, Decoder, LogicalMessage, Relation, TupleData, TupleValue, COLUMN_FLAG_KEY,
    PROTO_VERSION_PARALLEL_STREAMING, PROTO_VERSION_STREAMING, PROTO_VERSION_TWO_PHASE,
    TRUNCATE_CASCADE, TRUNCATE_RESTART_IDENTITY,
};
pub use lsn::{
    format_lsn, parse_lsn, pg_micros_to_unix_micros, unix_micros_to_pg_micros, Lsn,
    PG_EPOCH_OFFSET_MICROS,
};
pub use replication::{encode_standby_status_update, parse_copy_data, ReplicationMessage};
pub use spill::{SpillError, StreamedTxns};
