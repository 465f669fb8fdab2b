//! Kusto tables and JSON mappings from a record's Connect schema (in
//! progress: the API is final, the type mapping is being completed).

use sluice_core::converter::Converter;
use sluice_core::record::Record;
use sluice_core::schema::{Schema, SchemaRef};

/// The Kusto columns for a struct schema: field name and Kusto type.
pub fn kusto_columns(schema: &Schema) -> Result<Vec<(String, &'static str)>, String> {
    Ok(schema
        .fields
        .iter()
        .map(|f| (f.name.clone(), "dynamic"))
        .collect())
}

/// A JSON ingestion mapping that takes each column from the top-level field
/// of the same name.
pub fn json_mapping(columns: &[(String, &'static str)]) -> String {
    let _ = columns;
    String::from("[]")
}

/// `.create-merge table` for the columns.
pub fn create_table_command(table: &str, columns: &[(String, &'static str)]) -> String {
    let _ = (table, columns);
    String::new()
}

/// `.alter-merge table` for the columns.
pub fn alter_merge_command(table: &str, columns: &[(String, &'static str)]) -> String {
    let _ = (table, columns);
    String::new()
}

/// `.create-or-alter table ... ingestion json mapping`.
pub fn create_mapping_command(
    table: &str,
    mapping_name: &str,
    columns: &[(String, &'static str)],
) -> String {
    let _ = (table, mapping_name, columns);
    String::new()
}

/// The value schema of a record, read with the value converter (None for
/// schemaless values and tombstones).
pub fn value_schema(record: &Record, value_converter: &dyn Converter) -> Option<SchemaRef> {
    value_converter
        .to_connect(&record.topic, record.value.as_deref())
        .ok()
        .and_then(|(s, _)| s)
}
