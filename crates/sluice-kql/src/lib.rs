//! KQL (Kusto Query Language) over the embedded DuckDB store.
//!
//! Users keep the queries they run on Azure Data Explorer: a query is
//! parsed ([`parser`]), checked against the tables it names ([`catalog`]),
//! and translated to one DuckDB SELECT with KQL's semantics ([`translate`]):
//! KQL's null rules, integer division, `sort` descending by default,
//! `count_`/`avg_amount` column names, case-sensitive `==` and
//! case-insensitive `=~`/`has`, datetimes and timespans. What Sluice does
//! not translate is refused with the operator's or function's name and its
//! line:column, never answered differently. [`exec`] runs a translation on
//! a DuckDB connection and returns typed rows ([`value`]); [`render`] draws
//! `render`'s charts as text, SVG, HTML or PNG; [`v2`] reads Azure Data
//! Explorer's v2 query responses into the same result type, so one command
//! serves both stores.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let conn = duckdb::Connection::open("orders.duckdb")?;
//! let catalog = sluice_kql::exec::catalog_from_duckdb(&conn)?;
//! let t = sluice_kql::translate("Orders | summarize count() by city", &catalog)?;
//! let rows = sluice_kql::exec::run(&conn, &t)?;
//! # Ok(()) }
//! ```

pub(crate) mod ast;
pub mod catalog;
pub mod error;
pub mod exec;
pub(crate) mod lexer;
pub(crate) mod parser;
pub mod render;
mod sqlgen;
pub mod translate;
pub mod types;
pub mod v2;
pub mod value;

pub use catalog::Catalog;
pub use error::{ErrorKind, KqlError};
pub use render::RenderSpec;
pub use translate::{translate, translate_with, Column, Options, Translation};
pub use types::Type;
pub use value::{ResultSet, Value};
