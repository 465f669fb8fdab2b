//! What a change event says about the snapshot it belongs to, for sinks
//! that tell one snapshot generation from the next.
//!
//! A snapshot's reads carry `op` `r`, a `source.snapshot` marker and the
//! snapshot's LSN in `source.lsn`: that LSN names the generation. Records
//! unwrapped by `ExtractNewRecordState` carry the same facts when its
//! `add.fields` includes `op`, `lsn` and `snapshot` (as `__op`, `__lsn`,
//! `__snapshot`, or `__source_lsn` and `__source_snapshot`).

use crate::schema::{Schema, SchemaType};
use crate::value::Value;

/// Whether a `source.snapshot` value marks a snapshot read (`false` and
/// `incremental` do not: an incremental snapshot's reads are merged into
/// the stream and replace nothing).
pub fn is_snapshot_marker(marker: &str) -> bool {
    matches!(
        marker,
        "first" | "first_in_data_collection" | "true" | "last_in_data_collection" | "last"
    )
}

/// Whether a snapshot marker ends its table's snapshot.
pub fn ends_table(marker: &str) -> bool {
    matches!(marker, "last_in_data_collection" | "last")
}

/// Where an event stands with respect to snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// A read of the snapshot taken at LSN `generation`; `marker` is its
    /// `source.snapshot` value.
    Read {
        /// The snapshot's LSN.
        generation: i64,
        /// `first`, `true`, `last_in_data_collection`, ...
        marker: &'a str,
    },
    /// A change streamed after some snapshot (its `source.lsn`).
    Streamed {
        /// The change's LSN.
        lsn: i64,
    },
}

/// The event's place, or None when the value is no Debezium event (or an
/// unwrapped one without an LSN).
pub fn place<'a>(schema: &'a Schema, value: &'a Value) -> Option<Place<'a>> {
    if schema.ty != SchemaType::Struct {
        return None;
    }
    let (op, lsn, marker) = if schema.field("op").is_some() && schema.field("source").is_some() {
        let (ss, sv) = schema.field_value(value, "source")?;
        (
            schema
                .field_value(value, "op")
                .and_then(|(_, v)| v.as_str()),
            ss.field_value(sv, "lsn").and_then(|(_, v)| v.as_i64()),
            ss.field_value(sv, "snapshot").and_then(|(_, v)| v.as_str()),
        )
    } else {
        let first = |a: &str, b: &str| {
            schema
                .field_value(value, a)
                .or_else(|| schema.field_value(value, b))
        };
        (
            schema
                .field_value(value, "__op")
                .and_then(|(_, v)| v.as_str()),
            first("__lsn", "__source_lsn").and_then(|(_, v)| v.as_i64()),
            first("__snapshot", "__source_snapshot").and_then(|(_, v)| v.as_str()),
        )
    };
    let lsn = lsn?;
    match (op, marker) {
        (Some("r"), Some(m)) if is_snapshot_marker(m) => Some(Place::Read {
            generation: lsn,
            marker: m,
        }),
        _ => Some(Place::Streamed { lsn }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{prim, SchemaBuilder, SchemaRef};

    fn envelope(op: &str, snapshot: Option<&str>, lsn: i64) -> (SchemaRef, Value) {
        let source = SchemaBuilder::structure()
            .field("lsn", prim::opt_int64())
            .field("snapshot", prim::opt_string())
            .build();
        let schema = SchemaBuilder::structure()
            .field("source", source)
            .field("op", prim::string())
            .build();
        let source = Value::Struct(vec![
            Value::Int64(lsn),
            snapshot.map_or(Value::Null, |s| Value::String(s.into())),
        ]);
        (
            schema,
            Value::Struct(vec![source, Value::String(op.into())]),
        )
    }

    #[test]
    fn reads_and_streamed_changes_are_told_apart() {
        let (s, v) = envelope("r", Some("first"), 42);
        assert_eq!(
            place(&s, &v),
            Some(Place::Read {
                generation: 42,
                marker: "first"
            })
        );
        let (s, v) = envelope("r", Some("incremental"), 50);
        assert_eq!(place(&s, &v), Some(Place::Streamed { lsn: 50 }));
        let (s, v) = envelope("u", Some("false"), 60);
        assert_eq!(place(&s, &v), Some(Place::Streamed { lsn: 60 }));
    }

    #[test]
    fn unwrapped_records_with_their_added_fields() {
        let schema = SchemaBuilder::structure()
            .field("id", prim::of(SchemaType::Int32, false))
            .field("__op", prim::opt_string())
            .field("__source_lsn", prim::opt_int64())
            .field("__source_snapshot", prim::opt_string())
            .build();
        let v = Value::Struct(vec![
            Value::Int32(1),
            Value::String("r".into()),
            Value::Int64(7),
            Value::String("last".into()),
        ]);
        assert_eq!(
            place(&schema, &v),
            Some(Place::Read {
                generation: 7,
                marker: "last"
            })
        );
        assert!(ends_table("last") && !ends_table("true"));
        let plain = SchemaBuilder::structure()
            .field("id", prim::of(SchemaType::Int32, false))
            .build();
        assert_eq!(place(&plain, &Value::Struct(vec![Value::Int32(1)])), None);
    }
}
