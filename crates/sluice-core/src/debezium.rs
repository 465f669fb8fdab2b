//! Debezium's event schemas and envelope (filled in by the codec work).
