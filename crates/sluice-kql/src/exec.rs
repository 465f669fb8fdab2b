//! Runs translations on a DuckDB database: the catalog of its tables, and
//! typed results.

use duckdb::Connection;
use serde_json::Value as Json;

use crate::catalog::{Catalog, DuckTable};
use crate::translate::{cname, Translation, ORD};
use crate::types::Type;
use crate::value::{ResultSet, Value};

/// Why a translated query could not run.
#[derive(Debug)]
pub struct ExecError {
    /// What was being done.
    pub context: String,
    /// DuckDB's error.
    pub source: duckdb::Error,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for ExecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err(context: &str) -> impl Fn(duckdb::Error) -> ExecError + '_ {
    move |source| ExecError {
        context: context.to_string(),
        source,
    }
}

/// The tables and views of the database's `main` schema, with their
/// DuckDB column types.
pub fn catalog_from_duckdb(conn: &Connection) -> Result<Catalog, ExecError> {
    let ctx = "listing the DuckDB tables";
    let mut stmt = conn
        .prepare(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() \
             WHERE schema_name = 'main' AND database_name = current_database() \
             ORDER BY table_name, column_index",
        )
        .map_err(err(ctx))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(err(ctx))?;
    let mut catalog = Catalog::new();
    let mut current: Option<DuckTable> = None;
    for row in rows {
        let (table, column, ty) = row.map_err(err(ctx))?;
        match &mut current {
            Some(t) if t.name == table => t.columns.push((column, ty)),
            _ => {
                if let Some(t) = current.take() {
                    catalog.add_table(t);
                }
                current = Some(DuckTable {
                    name: table,
                    columns: vec![(column, ty)],
                });
            }
        }
    }
    if let Some(t) = current {
        catalog.add_table(t);
    }
    Ok(catalog)
}

/// Runs a translation and reads its rows as KQL values.
pub fn run(conn: &Connection, t: &Translation) -> Result<ResultSet, ExecError> {
    let list: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let x = format!("t.{}", cname(i));
            match c.ty {
                Type::Bool | Type::Real | Type::String => x,
                Type::Int | Type::Long | Type::TimeSpan => format!("CAST({x} AS BIGINT)"),
                Type::DateTime => format!("epoch_us({x})"),
                Type::Decimal | Type::Dynamic => format!("CAST({x} AS VARCHAR)"),
            }
        })
        .collect();
    let list = if list.is_empty() {
        "NULL".to_string()
    } else {
        list.join(", ")
    };
    let order = if t.ordered {
        format!(" ORDER BY t.{ORD}")
    } else {
        String::new()
    };
    let sql = format!("SELECT {list} FROM ({}) AS t{order}", t.body);
    let ctx = "running the translated query";
    let mut stmt = conn.prepare(&sql).map_err(err(ctx))?;
    let mut rows = stmt.query([]).map_err(err(ctx))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err("reading a row"))? {
        let mut row = Vec::with_capacity(t.columns.len());
        for (i, c) in t.columns.iter().enumerate() {
            let read = "reading a value";
            let v = match c.ty {
                Type::Bool => r
                    .get::<_, Option<bool>>(i)
                    .map_err(err(read))?
                    .map(Value::Bool),
                Type::Int | Type::Long => r
                    .get::<_, Option<i64>>(i)
                    .map_err(err(read))?
                    .map(Value::Long),
                Type::TimeSpan => r
                    .get::<_, Option<i64>>(i)
                    .map_err(err(read))?
                    .map(Value::TimeSpan),
                Type::DateTime => r
                    .get::<_, Option<i64>>(i)
                    .map_err(err(read))?
                    .map(Value::DateTime),
                Type::Real => r
                    .get::<_, Option<f64>>(i)
                    .map_err(err(read))?
                    .map(Value::Real),
                Type::Decimal => r
                    .get::<_, Option<String>>(i)
                    .map_err(err(read))?
                    .map(Value::Decimal),
                Type::String => Some(Value::String(
                    r.get::<_, Option<String>>(i)
                        .map_err(err(read))?
                        .unwrap_or_default(),
                )),
                Type::Dynamic => r
                    .get::<_, Option<String>>(i)
                    .map_err(err(read))?
                    .map(|s| Value::Dynamic(serde_json::from_str(&s).unwrap_or(Json::String(s)))),
            };
            row.push(v.unwrap_or(Value::Null));
        }
        out.push(row);
    }
    Ok(ResultSet {
        columns: t.columns.clone(),
        rows: out,
    })
}
