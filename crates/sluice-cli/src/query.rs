//! `sluice query FILE "SQL"`: runs SQL against a DuckDB file (what the
//! DuckDB sink writes) and prints the result as an aligned table, CSV or
//! JSON.
//!
//! DuckDB renders the values itself (each column cast to VARCHAR for the
//! table and CSV, `to_json` for JSON), so dates, decimals, lists and structs
//! print exactly as DuckDB's own shell shows them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use duckdb::{AccessMode, Config, Connection};

/// `sluice query` arguments.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs SQL against a DuckDB file, e.g. the one `sluice demo` or the DuckDB sink \
wrote, and prints the result. The file is opened read-only unless --write is given."
)]
pub struct QueryArgs {
    /// The DuckDB database file.
    pub file: PathBuf,
    /// The SQL to run (one statement).
    pub sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Open the file for writing (to run statements that change it), creating it if missing.
    #[arg(long)]
    pub write: bool,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// RFC 4180 CSV with a header line.
    Csv,
    /// A JSON array of objects, one per row.
    Json,
}

/// Runs the query and prints its result; the exit code.
pub fn run(args: &QueryArgs) -> u8 {
    match query(&args.file, &args.sql, args.format, args.write) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("sluice query: {e:#}");
            1
        }
    }
}

/// A result set, every value as DuckDB renders it (None: NULL).
struct Table {
    columns: Vec<String>,
    numeric: Vec<bool>,
    rows: Vec<Vec<Option<String>>>,
}

/// Runs `sql` against `file` and renders the result in `format`.
pub fn query(file: &Path, sql: &str, format: Format, write: bool) -> Result<String> {
    if !file.exists() && !write {
        bail!("no DuckDB file at {} (--write creates one)", file.display());
    }
    let mode = if write {
        AccessMode::ReadWrite
    } else {
        AccessMode::ReadOnly
    };
    let config = Config::default()
        .access_mode(mode)
        .context("configuring DuckDB")?;
    let conn = Connection::open_with_flags(file, config)
        .with_context(|| format!("opening {}", file.display()))?;
    let sql = sql.trim().trim_end_matches(';');
    if sql.is_empty() {
        bail!("no SQL given");
    }
    // Statements that return no rows (DDL, INSERT, SET, ...) cannot be
    // wrapped in a SELECT: they run as they are.
    let types = match describe(&conn, sql) {
        Ok(t) => t,
        Err(_) => {
            conn.execute_batch(sql).context("running the statement")?;
            return Ok("OK\n".to_string());
        }
    };
    match format {
        Format::Json => json(&conn, sql),
        Format::Table | Format::Csv => {
            let table = fetch_text(&conn, sql, types)?;
            Ok(if format == Format::Csv {
                csv(&table)
            } else {
                aligned(&table)
            })
        }
    }
}

/// Column names and whether each is numeric (right-aligned in tables).
fn describe(conn: &Connection, sql: &str) -> Result<Vec<(String, bool)>> {
    let mut stmt = conn.prepare(&format!("DESCRIBE SELECT * FROM ({sql})"))?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, ty) = row?;
        let ty = ty.to_ascii_uppercase();
        let numeric = [
            "TINYINT",
            "SMALLINT",
            "INTEGER",
            "BIGINT",
            "HUGEINT",
            "UTINYINT",
            "USMALLINT",
            "UINTEGER",
            "UBIGINT",
            "UHUGEINT",
            "FLOAT",
            "DOUBLE",
            "DECIMAL",
        ]
        .iter()
        .any(|t| ty == *t || ty.starts_with(&format!("{t}(")));
        out.push((name, numeric));
    }
    Ok(out)
}

fn fetch_text(conn: &Connection, sql: &str, types: Vec<(String, bool)>) -> Result<Table> {
    let mut stmt = conn
        .prepare(&format!("SELECT COLUMNS(*)::VARCHAR FROM ({sql})"))
        .context("preparing the query")?;
    let n = types.len();
    let mut rows = Vec::new();
    let mut result = stmt.query([]).context("running the query")?;
    while let Some(r) = result.next().context("reading a row")? {
        let mut row = Vec::with_capacity(n);
        for i in 0..n {
            row.push(r.get::<_, Option<String>>(i).context("reading a value")?);
        }
        rows.push(row);
    }
    let (columns, numeric) = types.into_iter().unzip();
    Ok(Table {
        columns,
        numeric,
        rows,
    })
}

fn json(conn: &Connection, sql: &str) -> Result<String> {
    let mut stmt = conn
        .prepare(&format!("SELECT to_json(t)::VARCHAR FROM ({sql}) t"))
        .context("preparing the query")?;
    let mut result = stmt.query([]).context("running the query")?;
    let mut out = String::from("[");
    let mut first = true;
    while let Some(r) = result.next().context("reading a row")? {
        let obj: String = r.get(0).context("reading a row")?;
        out.push_str(if first { "\n  " } else { ",\n  " });
        out.push_str(&obj);
        first = false;
    }
    out.push_str(if first { "]\n" } else { "\n]\n" });
    Ok(out)
}

/// Width of `s` in terminal columns (chars; good enough for the text DuckDB
/// prints).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn aligned(t: &Table) -> String {
    const NULL: &str = "NULL";
    let mut widths: Vec<usize> = t.columns.iter().map(|c| width(c)).collect();
    for row in &t.rows {
        for (i, v) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(v.as_deref().unwrap_or(NULL)));
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut parts = Vec::with_capacity(cells.len());
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(width(c));
            parts.push(if t.numeric[i] {
                format!("{}{c}", " ".repeat(pad))
            } else {
                format!("{c}{}", " ".repeat(pad))
            });
        }
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, t.columns.iter().map(String::as_str).collect());
    let _ = writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for row in &t.rows {
        line(
            &mut out,
            row.iter().map(|v| v.as_deref().unwrap_or(NULL)).collect(),
        );
    }
    let _ = writeln!(
        out,
        "({} row{})",
        t.rows.len(),
        if t.rows.len() == 1 { "" } else { "s" }
    );
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(t: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        t.columns
            .iter()
            .map(|c| csv_field(c))
            .collect::<Vec<_>>()
            .join(",")
    );
    for row in &t.rows {
        // NULL is an empty field, as DuckDB's own CSV writer prints it.
        let _ = writeln!(
            out,
            "{}",
            row.iter()
                .map(|v| v.as_deref().map(csv_field).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.duckdb");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE orders (orderid INTEGER, city VARCHAR, amount DECIMAL(10,2), day DATE);
             INSERT INTO orders VALUES (1, 'Austin', 183.50, DATE '2020-10-09'),
                                       (2, 'New York', 7.25, NULL),
                                       (3, 'Say \"hi\", ok', 100, DATE '2021-01-01');",
        )
        .expect("seed");
        (dir, path)
    }

    #[test]
    fn table_output_aligns_numbers_right_and_text_left() {
        let (_d, path) = db();
        let out = query(
            &path,
            "SELECT orderid, city, amount, day FROM orders ORDER BY orderid;",
            Format::Table,
            false,
        )
        .expect("query");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "orderid  city          amount  day");
        assert_eq!(lines[2], "      1  Austin        183.50  2020-10-09");
        assert_eq!(lines[3], "      2  New York        7.25  NULL");
        assert_eq!(lines.last(), Some(&"(3 rows)"));
    }

    #[test]
    fn csv_quotes_and_json_keeps_types() {
        let (_d, path) = db();
        let out = query(
            &path,
            "SELECT orderid, city FROM orders WHERE orderid = 3",
            Format::Csv,
            false,
        )
        .expect("csv");
        assert_eq!(out, "orderid,city\n3,\"Say \"\"hi\"\", ok\"\n");
        let out = query(
            &path,
            "SELECT orderid, amount, day FROM orders WHERE orderid <= 2 ORDER BY 1",
            Format::Json,
            false,
        )
        .expect("json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v[0]["orderid"], 1);
        assert_eq!(v[0]["day"], "2020-10-09");
        assert!(v[1]["day"].is_null());
        assert_eq!(v[1]["amount"].as_f64(), Some(7.25));
    }

    #[test]
    fn errors_name_the_problem() {
        let (_d, path) = db();
        let err = query(&path, "SELECT nope FROM orders", Format::Table, false)
            .expect_err("bad column")
            .to_string();
        assert!(err.contains("running the statement"), "{err}");
        let err = query(
            &path,
            "INSERT INTO orders VALUES (9, 'x', 1, NULL)",
            Format::Table,
            false,
        )
        .expect_err("read-only");
        assert!(
            format!("{err:#}").to_lowercase().contains("read-only"),
            "{err:#}"
        );
        assert_eq!(
            query(
                &path,
                "INSERT INTO orders VALUES (9, 'x', 1, NULL)",
                Format::Table,
                true
            )
            .expect("write"),
            "OK\n"
        );
        let missing = path.with_file_name("missing.duckdb");
        let err = query(&missing, "SELECT 1", Format::Table, false).expect_err("missing");
        assert!(err.to_string().contains("no DuckDB file"), "{err}");
    }
}
