//! The worker's dashboard in a real browser: headless Chromium against
//! `sluice connect` running the scenario's pipeline into DuckDB. The page
//! draws the scenario's charts from KQL run on the file the worker writes,
//! and they change once new orders arrive; a dashboard file replaces them
//! with the user's own tiles.

mod browser;
mod common;
mod worker;

use browser::Browser;
use common::fresh_db;
use serde_json::{json, Value as Json};
use worker::Worker;

async fn insert(pg: &tokio_postgres::Client, n: i64, city: &str) {
    pg.execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT g % 10, 100 + g % 7, $2, '2020-10-09 07:' || lpad((g % 60)::text, 2, '0') || ':10'
         FROM generate_series(1, $1::bigint) g",
        &[&n, &city],
    )
    .await
    .expect("insert");
}

/// The SVG text of every tile, by tile id.
const TILES: &str = "return Array.from(document.querySelectorAll('section.tile')).map(t => ({id: t.id, rows: Number(t.dataset.rows || 0), svg: (t.querySelector('.chart svg') || {outerHTML: ''}).outerHTML}))";

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_draws_the_scenario_charts_and_they_change_with_new_orders() {
    let (db, pg) = fresh_db("dashboard").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 60, "Austin").await;
    insert(&pg, 30, "Chicago").await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let file = w.path("orders.duckdb").display().to_string();
    let sink = common::orders_duckdb_sink("duck", &file, "myserver");
    assert_eq!(w.post("/connectors", &sink).await.0, 201);
    let source = common::orders_source("pg", &db, "myserver", "dashboard");
    assert_eq!(w.post("/connectors", &source).await.0, 201);

    let browser = Browser::start().await;
    browser
        .goto(&format!("http://127.0.0.1:{}/dashboard", w.port))
        .await;
    let log = || w.log();
    // The scenario's four charts, each an SVG with the cities in it.
    let drawn = browser
        .wait_for("the scenario's four charts", TILES, log, |v| {
            v.as_array().is_some_and(|tiles| {
                tiles.len() == 4
                    && tiles.iter().all(|t| {
                        t["rows"].as_u64().unwrap_or(0) > 0
                            && t["svg"].as_str().is_some_and(|s| s.starts_with("<svg"))
                    })
            })
        })
        .await;
    let sales = |v: &Json| v[1]["svg"].as_str().unwrap_or_default().to_string();
    let before = sales(&drawn);
    assert!(
        before.contains("Austin") && before.contains("Chicago") && !before.contains("Seattle"),
        "{before}"
    );
    let title = browser
        .eval("return document.querySelector('#tile-1 h2').textContent")
        .await;
    assert_eq!(title, "Sales by city");

    // New orders: the page redraws with them, without a reload.
    insert(&pg, 45, "Seattle").await;
    let after = browser
        .wait_for("Seattle in the sales chart", TILES, log, |v| {
            sales(v).contains("Seattle")
        })
        .await;
    assert_ne!(sales(&after), before);
    assert_eq!(
        after[2]["rows"], 3,
        "orders by city: three cities now: {after}"
    );
    drop(browser);

    // The user's own tiles, from the dashboard file the worker names.
    assert_eq!(w.stop(), Some(0));
    std::fs::write(
        w.path("dashboard.json"),
        json!({
            "title": "Shop",
            "refresh.seconds": 1,
            "file": file,
            "tables": ["Orders=orders"],
            "tiles": [
                {"title": "Big orders", "kql": "Orders | where amount >= 105 | summarize n = count() by city | render barchart"},
                {"title": "Cities", "kql": "Orders | distinct city | sort by city asc"}
            ]
        })
        .to_string(),
    )
    .expect("dashboard file");
    let props = w.path("worker.properties");
    let text = std::fs::read_to_string(&props).expect("properties");
    std::fs::write(
        &props,
        format!(
            "{text}\nsluice.dashboard.file={}\n",
            w.path("dashboard.json").display()
        ),
    )
    .expect("properties");
    w.start(&[]).await;
    let (code, d) = w.get("/sluice/dashboard").await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["title"], "Shop");
    assert_eq!(d["tiles"][0]["title"], "Big orders");
    let deadline = std::time::Instant::now() + common::LONG;
    loop {
        let (code, t) = w.get("/sluice/dashboard/tiles/1").await;
        if code == 200 && t["rows"] == 3 {
            assert!(t["svg"].is_null(), "no render, no chart: {t}");
            assert_eq!(t["table"][2]["city"], "Seattle", "{t}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{code} {t}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let (code, t) = w.get("/sluice/dashboard/tiles/0").await;
    assert_eq!(code, 200, "{t}");
    assert!(
        t["svg"].as_str().is_some_and(|s| s.contains("Seattle")),
        "{t}"
    );
    let (code, t) = w.get("/sluice/dashboard/tiles/7").await;
    assert_eq!(code, 400);
    assert!(
        t["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no tile 7"),
        "{t}"
    );
    assert_eq!(w.stop(), Some(0));
}
