//! A captured table's Connect schemas (key, value, envelope) and the
//! conversion of its rows, from either pgoutput tuples or COPY fields, into
//! Connect values.

use std::sync::Arc;

use anyhow::{Context, Result};
use sluice_core::schema::{SchemaBuilder, SchemaRef, SchemaType};
use sluice_core::Value;
use sluice_pgtypes::{ColumnCodec, TypeRegistry};

use crate::catalog::{CatalogTable, TableId};
use crate::config::{FailureMode, PostgresConfig};

/// One cell of a row, whatever it came from.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// SQL NULL (or a column absent from an old-key tuple).
    Null,
    /// An unchanged TOASTed value that PostgreSQL did not send.
    UnchangedToast,
    /// Text-format value.
    Text(&'a [u8]),
}

/// A column of a captured table.
#[derive(Debug)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub typmod: i32,
    /// Decoder and schema.
    pub codec: ColumnCodec,
    /// Whether the column is in the value: the column include/exclude
    /// lists, and Debezium leaving out types it cannot map (unless
    /// `include.unknown.datatypes`).
    pub included: bool,
}

/// A captured table's schemas.
#[derive(Debug)]
pub struct TableSchema {
    /// Relation OID.
    pub oid: u32,
    /// Name.
    pub id: TableId,
    /// Topic `<prefix>.<schema>.<table>`.
    pub topic: Arc<str>,
    /// Columns, in the relation's order.
    pub columns: Vec<TableColumn>,
    /// Positions of the key columns.
    pub key_positions: Vec<usize>,
    /// `<prefix>.<schema>.<table>.Value`.
    pub value_schema: SchemaRef,
    /// `<prefix>.<schema>.<table>.Key`, when the table has a key.
    pub key_schema: Option<SchemaRef>,
    /// `<prefix>.<schema>.<table>.Envelope`.
    pub envelope: SchemaRef,
    /// A partitioned table (the snapshot reads it with its partitions).
    pub partitioned: bool,
    /// `event.converting.failure.handling.mode`.
    pub failure_mode: FailureMode,
}

/// Column as the relation (pgoutput or catalog) describes it.
#[derive(Debug, Clone)]
pub struct RelColumn {
    /// Name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub typmod: i32,
}

/// The value Debezium puts in a required field that has no value (a column
/// absent from an old-key tuple): zero, false, empty.
fn fallback(schema: &sluice_core::Schema) -> Value {
    match schema.ty {
        SchemaType::Int8 => Value::Int8(0),
        SchemaType::Int16 => Value::Int16(0),
        SchemaType::Int32 => Value::Int32(0),
        SchemaType::Int64 => Value::Int64(0),
        SchemaType::Float32 => Value::Float32(0.0),
        SchemaType::Float64 => Value::Float64(0.0),
        SchemaType::Boolean => Value::Bool(false),
        SchemaType::String => Value::String(String::new()),
        SchemaType::Bytes => {
            if schema.name.as_deref() == Some("org.apache.kafka.connect.data.Decimal") {
                Value::Bytes(vec![0])
            } else {
                Value::Bytes(Vec::new())
            }
        }
        SchemaType::Array => Value::Array(Vec::new()),
        SchemaType::Map => Value::Map(Vec::new()),
        SchemaType::Struct => {
            Value::Struct(schema.fields.iter().map(|f| fallback(&f.schema)).collect())
        }
    }
}

impl TableSchema {
    /// Builds the schemas of a table from its relation columns, using the
    /// catalog for nullability and the key.
    pub fn build(
        cfg: &PostgresConfig,
        registry: &TypeRegistry,
        oid: u32,
        id: TableId,
        rel_columns: &[RelColumn],
        catalog: Option<&CatalogTable>,
    ) -> Result<TableSchema> {
        let base = format!("{}.{}.{}", cfg.prefix, id.schema, id.table);
        let key_names: Vec<String> = match cfg.key_columns_for(&id.schema, &id.table) {
            Some(cols) => cols.to_vec(),
            None => catalog.map(|c| c.key.clone()).unwrap_or_default(),
        };
        let mut columns = Vec::with_capacity(rel_columns.len());
        for rc in rel_columns {
            let cat_col = catalog.and_then(|c| c.columns.iter().find(|cc| cc.name == rc.name));
            let not_null = cat_col.map(|cc| cc.not_null).unwrap_or(false);
            let is_key = key_names.iter().any(|k| k == &rc.name);
            let mut codec = ColumnCodec::new(
                registry,
                rc.type_oid,
                rc.typmod,
                !(not_null || is_key && catalog.is_some_and(|c| c.key.contains(&rc.name))),
                &cfg.type_modes,
            );
            if let Some(cc) = cat_col.filter(|cc| cc.type_oid == rc.type_oid) {
                if let Some(expr) = &cc.default_expr {
                    let jdbc = sluice_pgtypes::jdbc_type_name(&cc.type_name, Some(expr));
                    match codec.default_from_expression(&jdbc, expr) {
                        Ok(Some(v)) => codec.set_default(v),
                        Ok(None) => {}
                        // Debezium warns and leaves the field without a default.
                        Err(e) => tracing::warn!(
                            "table {id} column '{}': cannot use DEFAULT {expr} as the schema default \
                             of type {jdbc} ({e}); the field has no default, as in Debezium",
                            rc.name
                        ),
                    }
                }
            }
            let omitted = codec.debezium_omits();
            if omitted {
                tracing::debug!(
                    "table {id} column '{}' of type {} is left out of its events, as Debezium does; \
                     include.unknown.datatypes=true emits it",
                    rc.name,
                    codec.type_name()
                );
            }
            columns.push(TableColumn {
                name: rc.name.clone(),
                type_oid: rc.type_oid,
                typmod: rc.typmod,
                included: cfg.column_included(&id.schema, &id.table, &rc.name) && !omitted,
                codec,
            });
        }
        let mut key_positions = Vec::new();
        for k in &key_names {
            let pos = columns.iter().position(|c| &c.name == k).with_context(|| {
                format!("key column '{k}' of table {id} does not exist (check message.key.columns)")
            })?;
            key_positions.push(pos);
        }
        let mut vb = SchemaBuilder::structure().name(format!("{base}.Value"));
        for c in columns.iter().filter(|c| c.included) {
            vb = vb.field(c.name.clone(), c.codec.schema().clone());
        }
        let value_schema = vb.build();
        let key_schema = (!key_positions.is_empty()).then(|| {
            let mut kb = SchemaBuilder::structure().name(format!("{base}.Key"));
            for &p in &key_positions {
                kb = kb.field(columns[p].name.clone(), columns[p].codec.schema().clone());
            }
            kb.build()
        });
        let envelope = sluice_core::debezium::envelope_schema_for(
            cfg.format,
            &format!("{base}.Envelope"),
            &value_schema,
        );
        Ok(TableSchema {
            oid,
            topic: Arc::from(base),
            id,
            columns,
            key_positions,
            value_schema,
            key_schema,
            envelope,
            partitioned: catalog.is_some_and(|c| c.partitioned),
            failure_mode: cfg.failure_mode,
        })
    }

    /// A cell of a key or a row. A value that cannot be converted fails a
    /// key (as in Debezium, whatever the mode); in a row it follows
    /// `event.converting.failure.handling.mode`.
    fn cell_value(&self, i: usize, cell: Cell<'_>, in_key: bool) -> Result<Value> {
        let col = &self.columns[i];
        Ok(match cell {
            Cell::Null => {
                let schema = col.codec.schema();
                if schema.optional {
                    Value::Null
                } else if let Some(d) = &schema.default {
                    // A required column without a value reads as its default
                    // (JdbcValueConverters.convertValue), else a zero value.
                    d.clone()
                } else {
                    fallback(schema)
                }
            }
            Cell::UnchangedToast => col.codec.unchanged_toast(),
            Cell::Text(t) => match col.codec.decode_text(t) {
                Ok(v) => v,
                Err(e) if in_key || self.failure_mode == FailureMode::Fail => {
                    anyhow::bail!(
                        "table {} column '{}' (type {}): {e}. This value cannot be converted{}",
                        self.id,
                        col.name,
                        col.codec.type_name(),
                        if in_key {
                            ""
                        } else {
                            "; event.converting.failure.handling.mode=warn (the default) emits null for it with a warning"
                        }
                    )
                }
                Err(e) if self.failure_mode == FailureMode::Warn => {
                    tracing::warn!(
                        "table {} column '{}' (type {}): {e}; emitting null \
                         (event.converting.failure.handling.mode=warn)",
                        self.id,
                        col.name,
                        col.codec.type_name()
                    );
                    Value::Null
                }
                Err(e) => {
                    tracing::debug!(
                        "table {} column '{}' (type {}): {e}; emitting null \
                         (event.converting.failure.handling.mode=skip)",
                        self.id,
                        col.name,
                        col.codec.type_name()
                    );
                    Value::Null
                }
            },
        })
    }

    /// The row value (`before`/`after`) from cells in relation order.
    pub fn row_value<'a>(&self, cells: impl ExactSizeIterator<Item = Cell<'a>>) -> Result<Value> {
        if cells.len() != self.columns.len() {
            anyhow::bail!(
                "table {}: row has {} values but the relation has {} columns",
                self.id,
                cells.len(),
                self.columns.len()
            );
        }
        let mut out = Vec::with_capacity(self.columns.len());
        for (i, cell) in cells.enumerate() {
            if self.columns[i].included {
                out.push(self.cell_value(i, cell, false)?);
            }
        }
        Ok(Value::Struct(out))
    }

    /// The key value from cells in relation order (None without a key).
    pub fn key_value<'a>(&self, cells: &[Cell<'a>]) -> Result<Option<Value>> {
        if self.key_positions.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.key_positions.len());
        for &p in &self.key_positions {
            let cell = cells.get(p).copied().unwrap_or(Cell::Null);
            out.push(self.cell_value(p, cell, true)?);
        }
        Ok(Some(Value::Struct(out)))
    }

    /// Whether the relation's columns equal `cols` (names, types, modifiers).
    pub fn same_columns(&self, cols: &[RelColumn]) -> bool {
        self.columns.len() == cols.len()
            && self
                .columns
                .iter()
                .zip(cols)
                .all(|(a, b)| a.name == b.name && a.type_oid == b.type_oid && a.typmod == b.typmod)
    }
}
