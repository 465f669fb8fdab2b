//! The dashboard: KQL tiles drawn as charts on the worker's REST listener
//! (`/dashboard`), redrawn as changes arrive.
//!
//! Tiles come from the file the worker key `sluice.dashboard.file` names
//! (JSON, see [`Config`]); without one, the worker shows the scenario's
//! charts on the DuckDB file its sinks hold that has an `orders` table.
//! Each tile is KQL run read-only on that file (through the sink's open
//! database, as `POST /sluice/query` runs it) and drawn by the same
//! renderer as `sluice query --out chart.svg`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::json;
use sluice_duckdb::stores;
use sluice_kql::render::{self, ChartKind};

use crate::kql::{self, CatalogInputs};

/// The ADX table of the reference scenario, as its users define it.
const SCENARIO_SCHEMA: &str = ".create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)";

/// The scenario's charts, as its users run them on Azure Data Explorer.
const SCENARIO_TILES: [(&str, &str); 4] = [
    (
        "Average sale by city",
        "Orders | summarize avg_sales = avg(amount) by city | render columnchart",
    ),
    (
        "Sales by city",
        "Orders | summarize total = sum(amount) by city | sort by total | render piechart",
    ),
    (
        "Orders by city",
        "Orders | summarize orders = count() by city | sort by orders | render linechart",
    ),
    (
        "Orders per 10 minutes of the day",
        "Orders | extend hour = floor(purchase_time % 1d , 10m) | summarize event_count=count() by hour | sort by hour asc | render timechart",
    ),
];

/// The dashboard file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shown above the tiles.
    #[serde(default = "default_title")]
    pub title: String,
    /// How often the page redraws the tiles.
    #[serde(default = "default_refresh", rename = "refresh.seconds")]
    pub refresh_seconds: u64,
    /// The DuckDB file; by default the one this worker's sinks hold (if
    /// one).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// ADX table definitions (`.create table ...`), a file.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// The Kusto sink's connector config (its topic-to-table mapping).
    #[serde(default, rename = "kusto.config")]
    pub kusto_config: Option<PathBuf>,
    /// The DuckDB sink's connector config.
    #[serde(default, rename = "duckdb.config")]
    pub duckdb_config: Option<PathBuf>,
    /// `NAME=DUCKDB_TABLE` pairs.
    #[serde(default)]
    pub tables: Vec<String>,
    /// The tiles, in order.
    pub tiles: Vec<Tile>,
}

/// One tile: a title and its KQL (ending in `render ...` for a chart).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tile {
    /// Shown above the chart.
    pub title: String,
    /// The query.
    pub kql: String,
}

fn default_title() -> String {
    "Dashboard".into()
}

fn default_refresh() -> u64 {
    5
}

impl Config {
    /// Reads and checks a dashboard file; paths in it are relative to it.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the dashboard file {}", path.display()))?;
        let mut c: Config = serde_json::from_str(&text).with_context(|| {
            format!(
                "the dashboard file {} (sluice.dashboard.file): expected {{\"title\", \"refresh.seconds\", \"file\", \"schema\", \"kusto.config\", \"duckdb.config\", \"tables\", \"tiles\": [{{\"title\", \"kql\"}}]}}",
                path.display()
            )
        })?;
        if c.refresh_seconds == 0 {
            bail!(
                "the dashboard file {}: refresh.seconds must be at least 1",
                path.display()
            );
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut c.file,
            &mut c.schema,
            &mut c.kusto_config,
            &mut c.duckdb_config,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    /// The scenario's charts on `file`.
    fn scenario(file: Option<PathBuf>) -> Config {
        Config {
            title: "Orders".into(),
            refresh_seconds: default_refresh(),
            file,
            schema: None,
            kusto_config: None,
            duckdb_config: None,
            tables: vec!["Orders=orders".into()],
            tiles: SCENARIO_TILES
                .iter()
                .map(|(t, q)| Tile {
                    title: (*t).into(),
                    kql: (*q).into(),
                })
                .collect(),
        }
    }
}

struct Shared {
    /// The dashboard file, read again at each request so edits show.
    file: Option<PathBuf>,
    /// Without one: the DuckDB file of the scenario's charts (else the one
    /// with an `orders` table the sinks hold).
    store: Option<PathBuf>,
}

/// The dashboard's routes; `file` is `sluice.dashboard.file`.
pub fn routes(file: Option<PathBuf>) -> Router {
    routes_on(file, None)
}

/// The dashboard's routes, the scenario's charts drawn from `store` when
/// no dashboard file is given (`sluice demo`'s file, also once its worker
/// stopped).
pub fn routes_on(file: Option<PathBuf>, store: Option<PathBuf>) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/sluice/dashboard", get(describe))
        .route("/sluice/dashboard/tiles/{i}", get(tile))
        .with_state(Arc::new(Shared { file, store }))
}

async fn page() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(include_str!("dashboard.html")),
    )
        .into_response()
}

fn config(shared: &Shared) -> Result<(Config, Option<String>)> {
    match &shared.file {
        Some(path) => Ok((Config::load(path)?, None)),
        None if shared.store.is_some() => Ok((Config::scenario(shared.store.clone()), None)),
        None => {
            let with_orders = stores::held().into_iter().find(|p| has_orders(p));
            let note = with_orders.is_none().then(|| {
                "No dashboard file (worker key sluice.dashboard.file) and no DuckDB file with an 'orders' table held by this worker's sinks: nothing to draw yet.".to_string()
            });
            Ok((Config::scenario(with_orders), note))
        }
    }
}

fn has_orders(path: &Path) -> bool {
    let Some(Ok(conn)) = stores::connect(path) else {
        return false;
    };
    conn.query_row(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .unwrap_or(false)
}

fn failure(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({"error_code": status.as_u16(), "message": message})),
    )
        .into_response()
}

async fn describe(State(shared): State<Arc<Shared>>) -> Response {
    match tokio::task::spawn_blocking(move || config(&shared)).await {
        Ok(Ok((c, note))) => axum::Json(json!({
            "title": c.title,
            "refresh_seconds": c.refresh_seconds,
            "file": c.file.map(|f| f.display().to_string()),
            "note": note,
            "tiles": c.tiles.iter().enumerate().map(|(i, t)| json!({
                "id": i, "title": t.title, "kql": t.kql,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(Err(e)) => failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn tile(State(shared): State<Arc<Shared>>, UrlPath(i): UrlPath<usize>) -> Response {
    match tokio::task::spawn_blocking(move || draw(&shared, i)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => failure(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Runs tile `i` and draws it: its SVG (for a chart) and its rows as text.
fn draw(shared: &Shared, i: usize) -> Result<serde_json::Value> {
    let (c, _) = config(shared)?;
    let t = c
        .tiles
        .get(i)
        .ok_or_else(|| anyhow!("the dashboard has {} tiles, no tile {i}", c.tiles.len()))?;
    let file = c
        .file
        .clone()
        .ok_or_else(|| anyhow!("no DuckDB file to query (set \"file\" in the dashboard file)"))?;
    let inputs = CatalogInputs {
        schema: c.schema.clone(),
        schema_text: (shared.file.is_none()).then(|| SCENARIO_SCHEMA.to_string()),
        kusto_config: c.kusto_config.clone(),
        duckdb_config: c.duckdb_config.clone(),
        tables: c.tables.clone(),
    };
    let answer = match stores::connect(&file) {
        Some(conn) => {
            let conn = conn?;
            conn.execute_batch("BEGIN TRANSACTION READ ONLY")
                .context("starting a read-only transaction")?;
            let a = kql::on_connection(&conn, &t.kql, &inputs);
            let _ = conn.execute_batch("ROLLBACK");
            a?.0
        }
        None => kql::on_duckdb(&file, &t.kql, &inputs)?.0,
    };
    let chart = match &answer.render {
        Some(spec) if spec.kind != ChartKind::Table => {
            Some(render::build(spec, &answer.result).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    Ok(json!({
        "title": t.title,
        "kql": t.kql,
        "rows": answer.result.rows.len(),
        "svg": chart.as_ref().map(render::svg::render),
        "table": answer.result.to_json_rows(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dashboard_file_is_read_with_its_paths_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("dash.json");
        std::fs::write(
            &path,
            r#"{"title": "Shop", "file": "shop.duckdb", "schema": "orders.kql",
                "tiles": [{"title": "Rows", "kql": "Orders | count"}]}"#,
        )
        .expect("write");
        let c = Config::load(&path).expect("load");
        assert_eq!(c.title, "Shop");
        assert_eq!(c.refresh_seconds, 5);
        assert_eq!(c.file, Some(dir.path().join("shop.duckdb")));
        assert_eq!(c.schema, Some(dir.path().join("orders.kql")));
        assert_eq!(c.tiles.len(), 1);
        std::fs::write(&path, r#"{"tiles": [{"title": "x", "query": "y"}]}"#).expect("write");
        let e = format!("{:#}", Config::load(&path).expect_err("unknown key"));
        assert!(e.contains("query") && e.contains("kql"), "{e}");
    }
}
