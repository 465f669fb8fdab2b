//! `sluice query FILE "SQL"`: runs SQL against a DuckDB file (what the
//! DuckDB sink writes) and prints the result as an aligned table, CSV or
//! JSON. `sluice query --kql FILE_OR_URL "KQL"` runs KQL instead: on the
//! DuckDB file through sluice-kql, or on an Azure Data Explorer cluster;
//! `render` draws its chart in the terminal or to `--out` (SVG, HTML, PNG).
//!
//! DuckDB renders SQL results itself (each column cast to VARCHAR for the
//! table and CSV, `to_json` for JSON), so dates, decimals, lists and structs
//! print exactly as DuckDB's own shell shows them; KQL results print as KQL
//! prints its types (`2020-10-09T07:23:10Z`, `00:10:00`).
//!
//! Output stops quietly when the reader goes away (`sluice query ... |
//! head`): a broken pipe is not an error.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use duckdb::{AccessMode, Config, Connection};
use sluice_kql::render::{self, ChartKind};
use sluice_kql::{ResultSet, Type};

use crate::kql::{self, CatalogInputs};

/// `sluice query` arguments.
#[derive(Debug, Args)]
#[command(
    long_about = "Runs SQL against a DuckDB file, e.g. the one `sluice demo` or the DuckDB sink \
wrote, and prints the result. The file is opened read-only unless --write is given.

With --kql the query is KQL: on a DuckDB file it is translated to DuckDB SQL with KQL's \
semantics (the ADX table names and types users know: see --schema, --kusto-config, --table); \
given a cluster URL (https://<cluster>.<region>.kusto.windows.net) it is sent to Azure Data \
Explorer with the Kusto sink connector's credentials (--kusto-config). A query ending in \
`render` draws its chart in the terminal, or to --out FILE (.svg, .html, .png)."
)]
pub struct QueryArgs {
    /// The DuckDB database file (with --kql, also a cluster URL).
    #[arg(value_name = "FILE_OR_URL")]
    pub file: String,
    /// The query: SQL (one statement), or KQL with --kql.
    #[arg(value_name = "QUERY")]
    pub sql: String,
    /// The query is KQL.
    #[arg(long)]
    pub kql: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Open the file for writing (to run statements that change it), creating it if missing (SQL only).
    #[arg(long)]
    pub write: bool,
    /// KQL: ADX table definitions (`.create table Orders (orderid: string, ...)`), so columns read with the ADX types.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// KQL: a Kusto sink connector config; its kusto.tables.topics.mapping maps ADX tables to the topics' DuckDB tables, and for a cluster URL its credentials are used.
    #[arg(long, value_name = "FILE")]
    pub kusto_config: Option<PathBuf>,
    /// KQL: the DuckDB sink connector config (its duckdb.tables.topics.mapping); by default a topic's table is its last segment.
    #[arg(long, value_name = "FILE")]
    pub duckdb_config: Option<PathBuf>,
    /// KQL: the ADX table NAME is the DuckDB table DUCKDB_TABLE (repeatable).
    #[arg(long = "table", value_name = "NAME=DUCKDB_TABLE")]
    pub tables: Vec<String>,
    /// KQL on a cluster: the database (default: the one the Kusto config maps to).
    #[arg(long)]
    pub database: Option<String>,
    /// KQL: write the chart (or, for .html, the chart and the table) to FILE: .svg, .html, .png or .txt.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// KQL on a DuckDB file: print the translated SQL to standard error.
    #[arg(long)]
    pub show_sql: bool,
    /// Ask the worker whose REST listener is at URL (it answers read-only
    /// queries on the DuckDB files its sinks hold). By default a file a
    /// running worker holds is queried through that worker.
    #[arg(long, value_name = "URL")]
    pub worker: Option<String>,
}

impl QueryArgs {
    /// The catalog options (`--schema`, `--kusto-config`, `--duckdb-config`,
    /// `--table`).
    pub fn catalog_inputs(&self) -> CatalogInputs {
        CatalogInputs {
            schema: self.schema.clone(),
            kusto_config: self.kusto_config.clone(),
            duckdb_config: self.duckdb_config.clone(),
            tables: self.tables.clone(),
            schema_text: None,
        }
    }
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
    let local = || {
        if args.kql {
            run_kql(args)
        } else {
            query(Path::new(&args.file), &args.sql, args.format, args.write)
        }
    };
    let out = match &args.worker {
        Some(url) => crate::live::remote(args, url),
        None => match local() {
            Err(e) if !is_url(&args.file) && crate::live::is_lock_conflict(&e) => {
                match crate::live::worker_for(args) {
                    Some(url) => crate::live::remote(args, &url),
                    None => Err(e.context(
                        "another process holds the file; if it is a Sluice worker with a REST listener, add --worker URL to query through it",
                    )),
                }
            }
            other => other,
        },
    };
    match out {
        Ok(out) => emit(&out),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sluice query: {e:#}");
            1
        }
    }
}

/// Writes `out` to standard output; a reader that went away (EPIPE) ends
/// the command quietly with success, as `head` expects.
fn emit(out: &str) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sluice query: writing the result: {e}");
            1
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// The KQL mode: the rows (and the chart) as text; `--out` written.
pub fn run_kql(args: &QueryArgs) -> Result<String> {
    if args.write {
        bail!("--write is for SQL; KQL queries only read");
    }
    let inputs = args.catalog_inputs();
    let answer = if is_url(&args.file) {
        if args.schema.is_some() || !args.tables.is_empty() || args.duckdb_config.is_some() {
            bail!("--schema, --table and --duckdb-config describe a DuckDB file; a cluster knows its own tables");
        }
        kql::on_cluster(&args.file, &args.sql, &inputs, args.database.as_deref())?
    } else {
        if args.database.is_some() {
            bail!("--database is for a cluster URL");
        }
        let (answer, notes) = kql::on_duckdb(Path::new(&args.file), &args.sql, &inputs)?;
        for n in notes {
            let _ = writeln!(std::io::stderr(), "sluice query: note: {n}");
        }
        answer
    };
    if args.show_sql {
        if let Some(sql) = &answer.sql {
            let _ = writeln!(std::io::stderr(), "{sql}");
        }
    }
    let (text, out) = present(args, &answer)?;
    if let (Some(path), Some(bytes)) = (&args.out, out) {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(text)
}

/// The answer as printed, and the bytes `--out` asks for.
pub fn present(args: &QueryArgs, answer: &kql::Answer) -> Result<(String, Option<Vec<u8>>)> {
    let chart = match &answer.render {
        Some(spec) if spec.kind != ChartKind::Table => {
            Some(render::build(spec, &answer.result).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let out = match &args.out {
        Some(path) => Some(out_bytes(path, &args.sql, chart.as_ref(), &answer.result)?),
        None => None,
    };
    let text = match args.format {
        Format::Json => kql_json(&answer.result),
        Format::Csv => csv(&kql_table(&answer.result)),
        Format::Table => {
            let mut s = String::new();
            // The chart goes to the terminal unless it went to a file.
            if let (Some(c), None) = (&chart, &args.out) {
                s.push_str(&render::text::render(c));
                s.push('\n');
            }
            s.push_str(&aligned(&kql_table(&answer.result), ""));
            s
        }
    };
    Ok((text, out))
}

fn out_bytes(
    path: &Path,
    query: &str,
    chart: Option<&render::Chart>,
    result: &ResultSet,
) -> Result<Vec<u8>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let need_chart = || -> Result<&render::Chart> {
        chart.ok_or_else(|| anyhow::anyhow!("--out {}: the query has no chart to draw (end it with `| render columnchart`, ...); .html writes the table alone", path.display()))
    };
    let bytes: Vec<u8> = match ext.as_str() {
        "svg" => render::svg::render(need_chart()?).into_bytes(),
        "html" | "htm" => render::svg::html(query, chart, result).into_bytes(),
        "txt" => render::text::render(need_chart()?).into_bytes(),
        "png" => render::png::from_svg(&render::svg::render(need_chart()?))
            .map_err(anyhow::Error::msg)?,
        other => bail!(
            "--out {}: unknown extension '{other}' (use .svg, .html, .png or .txt)",
            path.display()
        ),
    };
    Ok(bytes)
}

fn kql_table(r: &ResultSet) -> Table {
    Table {
        columns: r.columns.iter().map(|c| c.name.clone()).collect(),
        numeric: r
            .columns
            .iter()
            .map(|c| c.ty.is_numeric() || c.ty == Type::TimeSpan)
            .collect(),
        rows: r
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|v| match v {
                        sluice_kql::Value::Null => None,
                        v => Some(v.to_string()),
                    })
                    .collect()
            })
            .collect(),
    }
}

fn kql_json(r: &ResultSet) -> String {
    let rows = match r.to_json_rows() {
        serde_json::Value::Array(a) => a,
        _ => Vec::new(),
    };
    let mut out = String::from("[");
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&row.to_string());
    }
    out.push_str(if rows.is_empty() { "]\n" } else { "\n]\n" });
    out
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
    query_on(&conn, sql, format, true)
}

/// Runs `sql` on `conn` and renders the result in `format`. Statements
/// that return no rows run only if `statements` allows them (a worker's
/// read-only queries do not).
pub fn query_on(conn: &Connection, sql: &str, format: Format, statements: bool) -> Result<String> {
    let sql = sql.trim().trim_end_matches(';');
    if sql.is_empty() {
        bail!("no SQL given");
    }
    // Statements that return no rows (DDL, INSERT, SET, ...) cannot be
    // wrapped in a SELECT: they run as they are.
    let types = match describe(conn, sql) {
        Ok(t) => t,
        Err(e) if !statements => {
            return Err(e.context(
                "only one query that returns rows can run on a file a worker holds (stop the worker for other statements)",
            ))
        }
        Err(_) => {
            conn.execute_batch(sql).context("running the statement")?;
            return Ok("OK\n".to_string());
        }
    };
    match format {
        Format::Json => json(conn, sql),
        Format::Table | Format::Csv => {
            let table = fetch_text(conn, sql, types)?;
            Ok(if format == Format::Csv {
                csv(&table)
            } else {
                aligned(&table, "NULL")
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

/// An aligned table; `null` stands for NULL values.
fn aligned(t: &Table, null: &str) -> String {
    let mut widths: Vec<usize> = t.columns.iter().map(|c| width(c)).collect();
    for row in &t.rows {
        for (i, v) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(v.as_deref().unwrap_or(null)));
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
            row.iter().map(|v| v.as_deref().unwrap_or(null)).collect(),
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
