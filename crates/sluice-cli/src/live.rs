//! Queries on a DuckDB file while a worker writes it.
//!
//! DuckDB lets no other process open a file a worker's sink holds, so the
//! worker answers queries on it itself: `POST /sluice/query` on its REST
//! listener runs SQL or KQL, read-only, on a new connection to the database
//! the sink has open (a consistent snapshot; ingestion goes on). `sluice
//! query` sends its query there when the file is locked: to `--worker URL`,
//! or to the worker the file's side file names (see
//! [`sluice_duckdb::stores`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value as JsonValue};
use sluice_duckdb::stores;

use crate::kql;
use crate::query::{self, Format, QueryArgs};

/// The worker's query route.
pub fn routes() -> Router {
    Router::new().route("/sluice/query", post(handle))
}

/// What a worker's answer carries.
struct Reply {
    output: String,
    out: Option<Vec<u8>>,
    sql: Option<String>,
    notes: Vec<String>,
}

async fn handle(Json(req): Json<JsonValue>) -> Response {
    let args = match args_from(&req) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
    };
    let held = stores::held().contains(&stores::key(Path::new(&args.file)));
    if !held {
        let list: Vec<String> = stores::held()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "no sink of this worker holds {} (it holds: {})",
                args.file,
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            ),
        );
    }
    match tokio::task::spawn_blocking(move || answer(&args)).await {
        Ok(Ok(r)) => (
            StatusCode::OK,
            axum::Json(json!({
                "output": r.output,
                "out": r.out.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
                "sql": r.sql,
                "notes": r.notes,
            })),
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &format!("{e:#}")),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the query stopped: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": status.as_u16(), "message": message})),
    )
        .into_response()
}

/// Runs the query on a new connection to the held database, in a
/// read-only transaction that is rolled back.
fn answer(args: &QueryArgs) -> Result<Reply> {
    let file = Path::new(&args.file);
    let conn = stores::connect(file)
        .ok_or_else(|| anyhow!("no sink of this worker holds {}", file.display()))??;
    conn.execute_batch("BEGIN TRANSACTION READ ONLY")
        .context("starting a read-only transaction")?;
    let result = if args.kql {
        let inputs = args.catalog_inputs();
        kql::on_connection(&conn, &args.sql, &inputs).and_then(|(answer, notes)| {
            let (output, out) = query::present(args, &answer)?;
            Ok(Reply {
                output,
                out,
                sql: answer.sql,
                notes,
            })
        })
    } else {
        one_statement(&args.sql)
            .and_then(|()| query::query_on(&conn, &args.sql, args.format, false))
            .map(|output| Reply {
                output,
                out: None,
                sql: None,
                notes: Vec::new(),
            })
    };
    let _ = conn.execute_batch("ROLLBACK");
    result
}

/// Refuses SQL with more than one statement: DuckDB would run all but the
/// last of them while preparing it. A `;` counts outside quotes, quoted
/// identifiers, dollar quotes and comments; one at the end is allowed.
fn one_statement(sql: &str) -> Result<()> {
    let b = sql.trim().trim_end_matches(';').as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // $tag$ ... $tag$
                let tag_end = b[i + 1..].iter().position(|&c| c == b'$');
                if let Some(t) = tag_end.filter(|&t| b[i + 1..i + 1 + t].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')) {
                    let tag = &b[i..i + t + 2];
                    let body = i + t + 2;
                    i = b[body..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(b.len(), |p| body + p + tag.len() - 1);
                }
            }
            b';' => bail!(
                "one statement at a time: a worker answers a single query (a ';' at byte {i} starts another)"
            ),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn args_from(req: &JsonValue) -> Result<QueryArgs> {
    let text = |k: &str| req.get(k).and_then(JsonValue::as_str).map(str::to_owned);
    let path = |k: &str| text(k).map(PathBuf::from);
    let format = match text("format").as_deref() {
        None | Some("table") => Format::Table,
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(other) => bail!("format: '{other}' is none of table, csv, json"),
    };
    Ok(QueryArgs {
        file: text("file").ok_or_else(|| anyhow!("file: the DuckDB file to query is missing"))?,
        sql: text("query").ok_or_else(|| anyhow!("query: the query is missing"))?,
        kql: req.get("kql").and_then(JsonValue::as_bool).unwrap_or(false),
        format,
        write: false,
        schema: path("schema"),
        kusto_config: path("kusto_config"),
        duckdb_config: path("duckdb_config"),
        tables: req
            .get("tables")
            .and_then(JsonValue::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        database: None,
        // Only its extension matters here: the bytes go back.
        out: path("out"),
        show_sql: false,
        worker: None,
    })
}

/// Whether opening a file failed because another process holds it.
pub fn is_lock_conflict(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("Could not set lock") || text.contains("Conflicting lock")
}

/// The worker to ask about `args.file`: `--worker`, else the one its side
/// file names.
pub fn worker_for(args: &QueryArgs) -> Option<String> {
    args.worker
        .clone()
        .or_else(|| stores::worker_of(&stores::key(Path::new(&args.file))))
}

fn absolute(p: &Path) -> String {
    stores::key(p).display().to_string()
}

/// Sends the query to the worker at `url`; what to print.
pub fn remote(args: &QueryArgs, url: &str) -> Result<String> {
    if args.write {
        bail!(
            "{} is held by the worker at {url}: it answers queries, but --write needs the worker stopped",
            args.file
        );
    }
    let mut req = json!({
        "file": absolute(Path::new(&args.file)),
        "query": args.sql,
        "kql": args.kql,
        "format": match args.format {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        },
        "tables": args.tables,
    });
    for (k, v) in [
        ("schema", &args.schema),
        ("kusto_config", &args.kusto_config),
        ("duckdb_config", &args.duckdb_config),
    ] {
        if let Some(p) = v {
            req[k] = json!(absolute(p));
        }
    }
    if let Some(out) = &args.out {
        req["out"] = json!(out.display().to_string());
    }
    let endpoint = format!("{}/sluice/query", url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client")?;
    let (status, body) = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(&endpoint)
            .json(&req)
            .send()
            .await
            .with_context(|| format!("sending the query to the worker at {endpoint}"))?;
        let status = resp.status();
        let body: JsonValue = resp
            .json()
            .await
            .with_context(|| format!("reading the worker's answer from {endpoint}"))?;
        anyhow::Ok((status, body))
    })?;
    if !status.is_success() {
        bail!(
            "the worker at {url} (which holds {}): {}",
            args.file,
            body.get("message")
                .and_then(JsonValue::as_str)
                .unwrap_or("no message")
        );
    }
    for n in body
        .get("notes")
        .and_then(JsonValue::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = n.as_str() {
            eprintln!("sluice query: note: {n}");
        }
    }
    if args.show_sql {
        if let Some(sql) = body.get("sql").and_then(JsonValue::as_str) {
            eprintln!("{sql}");
        }
    }
    if let (Some(path), Some(b64)) = (&args.out, body.get("out").and_then(JsonValue::as_str)) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("decoding the chart the worker sent")?;
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(body
        .get("output")
        .and_then(JsonValue::as_str)
        .unwrap_or_default()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::one_statement;

    #[test]
    fn only_single_statements_pass() {
        for ok in [
            "SELECT 1",
            "SELECT 1;",
            "SELECT ';' AS x",
            "SELECT \"a;b\" FROM t",
            "SELECT 1 -- ; comment",
            "SELECT /* ; */ 1",
            "SELECT $$;$$",
            "SELECT $q$ ; $q$",
        ] {
            assert!(one_statement(ok).is_ok(), "{ok}");
        }
        for bad in [
            "SELECT 1; SELECT 2",
            "SELECT 1); COPY (SELECT 1) TO 'x'; SELECT * FROM (SELECT 1",
            "SELECT 'a'; DROP TABLE t",
            "SELECT 1 /* x */; DELETE FROM t",
        ] {
            assert!(one_statement(bad).is_err(), "{bad}");
        }
    }
}
