//! The worker's status page in a real browser: headless Chromium, driven
//! through chromedriver's WebDriver API, against `sluice connect` running
//! the PostgreSQL source and the file sink behind basic auth. The page must
//! show the connectors and the snapshot, draw charts that grow as changes
//! flow, and pause and resume a connector through the REST API.
//!
//! Needs `chromium` and `chromedriver` (Debian's chromium and
//! chromium-driver; `.ci/run` installs them), or CHROMIUM_BIN and
//! CHROMEDRIVER_BIN naming them.

mod browser;
mod common;

use std::time::{Duration, Instant};

use browser::Browser;
use common::{fresh_db, tail, Pipeline, LONG};
use serde_json::{json, Value as Json};

const USER: &str = "admin";
const PASSWORD: &str = "s3cret";

/// A connector's state through the REST API, as another client sees it.
async fn rest_state(url: &str, connector: &str) -> String {
    let resp = reqwest::Client::new()
        .get(format!("{url}/connectors/{connector}/status"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("status request");
    let body: Json = resp.json().await.expect("status JSON");
    body["connector"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_rest_state(url: &str, connector: &str, want: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + LONG;
    loop {
        let got = rest_state(url, connector).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{connector} is {got}, not {want}; worker log:\n{}",
            tail(&log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A script expression: the legend entry of `series` in chart `chart`, its
/// last and largest values and how many points have one, with the chart's
/// point count; null while the chart is not drawn.
fn legend(chart: &str, series: &str) -> String {
    format!(
        "(() => {{
         const c = document.querySelector('[data-chart=\"{chart}\"]');
         if (!c) return null;
         const svg = c.querySelector('svg');
         const s = [...c.querySelectorAll('.legend [data-series]')]
             .find((e) => e.dataset.series === {series:?});
         return {{points: Number(svg.dataset.points),
                  last: s ? s.dataset.last : null,
                  max: s ? s.dataset.max : null,
                  count: s ? Number(s.dataset.count) : 0}};
         }})()"
    )
}

fn number(v: &Json, key: &str) -> f64 {
    match &v[key] {
        Json::String(s) => s.parse().unwrap_or(0.0),
        Json::Number(n) => n.as_f64().unwrap_or(0.0),
        _ => 0.0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_page_in_a_browser() {
    let (db, pg) = fresh_db("statuspage").await;
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
    )
    .await
    .expect("create table");
    let mut p = Pipeline::new(&db, &[("slot.monitor.interval.ms", "200")]);
    let port = p.enable_rest();
    let worker = p.path("worker.properties");
    let mut props = std::fs::read_to_string(&worker).expect("read");
    props.push_str(&format!(
        "rest.basic.auth.user={USER}\nrest.basic.auth.password={PASSWORD}\n\
         sluice.rest.history.interval.ms=500\nsluice.rest.history.points=600\n"
    ));
    std::fs::write(&worker, props).expect("write");
    p.start();
    let url = format!("http://127.0.0.1:{port}");
    let log = || p.log_text();
    p.wait_until("the snapshot's 500 rows", LONG, |r| r.len() >= 500);

    // Without credentials the page, like the API, asks for them.
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{url}/ui"))
        .send()
        .await
        .expect("page request");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    // A Kafka Connect client asking `/` still gets the version JSON.
    let root: Json = http
        .get(format!("{url}/"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("root request")
        .json()
        .await
        .expect("root JSON");
    assert!(root["version"].is_string(), "{root}");
    // Another site's page may not change anything, signed in or not.
    let resp = http
        .put(format!("{url}/connectors/file-sink/pause"))
        .basic_auth(USER, Some(PASSWORD))
        .header("Origin", "http://elsewhere.example")
        .send()
        .await
        .expect("cross-origin pause");
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(rest_state(&url, "file-sink").await, "RUNNING");

    let browser = Browser::start().await;
    browser.sign_in(USER, PASSWORD).await;
    // A browser navigating to the worker's address gets the page.
    browser.goto(&format!("{url}/")).await;

    // Both connectors and their tasks, running.
    let rows = browser
        .wait_for(
            "both connectors and their tasks on the page",
            "return [...document.querySelectorAll('#connector-table tbody tr')]
                 .map((r) => [r.dataset.connector, r.dataset.task || '-',
                              r.querySelector('[data-role=state] [data-state]').dataset.state]);",
            log,
            |v| {
                v.as_array()
                    .is_some_and(|rows| rows.len() == 4 && rows.iter().all(|r| r[2] == "RUNNING"))
            },
        )
        .await;
    assert_eq!(
        rows,
        json!([
            ["file-sink", "-", "RUNNING"],
            ["file-sink", "0", "RUNNING"],
            ["pg-source", "-", "RUNNING"],
            ["pg-source", "0", "RUNNING"]
        ])
    );

    // The snapshot's table, read to its end.
    let bar = browser
        .wait_for(
            "the snapshot's progress bar",
            "const b = document.querySelector('.snapshot[data-connector=\"pg-source\"] .bar-row[data-table=\"public.items\"]');
             return b ? {percent: b.dataset.percent, text: b.innerText} : null;",
            log,
            |v| v["percent"] == "100.0",
        )
        .await;
    assert!(
        bar["text"]
            .as_str()
            .unwrap_or_default()
            .contains("500 rows"),
        "{bar}"
    );

    // The charts grow by a point every interval, and show the changes
    // flowing while rows are inserted.
    let throughput = format!("return {};", legend("throughput", "pg-source"));
    let before = browser
        .wait_for("two points of history", &throughput, log, |v| {
            number(v, "points") >= 2.0
        })
        .await;
    let inserting = {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut id: usize = 1000;
            while !s.is_cancelled() {
                pg.execute("INSERT INTO items VALUES ($1, 'streamed')", &[&(id as i32)])
                    .await
                    .expect("insert");
                id += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            id - 1000
        });
        (stop, task)
    };
    let source = browser
        .wait_for(
            "the source's throughput above zero",
            &throughput,
            log,
            |v| number(v, "points") > number(&before, "points") && number(v, "last") > 0.0,
        )
        .await;
    let sink = browser
        .wait_for(
            "the sink's throughput and latency",
            &format!(
                "return [{}, {}];",
                legend("throughput", "file-sink"),
                legend("latency", "file-sink p99"),
            ),
            log,
            |v| number(&v[0], "last") > 0.0 && number(&v[1], "max") > 0.0,
        )
        .await;
    // The source's lag and its slot's retained WAL are charted too.
    let source_figures = browser
        .wait_for(
            "the source's lag and slot WAL",
            &format!(
                "return [{}, {}];",
                legend("lag", "pg-source"),
                legend("wal", "pg-source")
            ),
            log,
            |v| number(&v[0], "count") >= 1.0 && number(&v[1], "count") >= 1.0,
        )
        .await;
    inserting.0.cancel();
    let inserted = inserting.1.await.expect("inserts");
    assert!(inserted > 0);
    assert!(number(&source, "count") >= 1.0, "{source}");
    p.wait_until("the streamed rows", LONG, |r| r.len() >= 500 + inserted);
    eprintln!("throughput {source}; sink {sink}; lag and WAL {source_figures}");

    // The history endpoint the charts read, as documented.
    let h: Json = http
        .get(format!("{url}/sluice/history"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("history request")
        .json()
        .await
        .expect("history JSON");
    assert_eq!(h["interval_ms"], 500);
    assert_eq!(h["capacity"], 600);
    let points = h["points"].as_array().expect("points");
    let last = points.last().expect("a point");
    assert_eq!(last["connectors"]["pg-source"]["kind"], "source");
    assert!(
        last["connectors"]["pg-source"]["records"]
            .as_u64()
            .is_some_and(|n| n >= 500),
        "{last}"
    );
    let since = last["t"].as_i64().expect("t");
    let later: Json = http
        .get(format!("{url}/sluice/history?since={since}"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("history request")
        .json()
        .await
        .expect("history JSON");
    assert!(later["points"]
        .as_array()
        .expect("points")
        .iter()
        .all(|p| p["t"].as_i64() > Some(since)));
    let resp = http
        .get(format!("{url}/sluice/history?since=yesterday"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("history request");
    assert_eq!(resp.status().as_u16(), 400);
    let err: Json = resp.json().await.expect("error JSON");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("since=yesterday")),
        "{err}"
    );

    // Pause, then resume, the sink from the page.
    browser
        .click("tr.connector[data-connector=\"file-sink\"] button[data-action=\"pause\"]")
        .await;
    wait_rest_state(&url, "file-sink", "PAUSED", log).await;
    let state_script = "const b = document.querySelector('tr.connector[data-connector=\"file-sink\"] [data-state]');
         return b ? b.dataset.state : null;";
    browser
        .wait_for("the page showing the sink paused", state_script, log, |v| {
            v == "PAUSED"
        })
        .await;
    assert_eq!(rest_state(&url, "pg-source").await, "RUNNING");
    browser
        .click("tr.connector[data-connector=\"file-sink\"] button[data-action=\"resume\"]")
        .await;
    wait_rest_state(&url, "file-sink", "RUNNING", log).await;
    browser
        .wait_for(
            "the page showing the sink running",
            state_script,
            log,
            |v| v == "RUNNING",
        )
        .await;
    let banner = browser
        .eval("const b = document.getElementById('banner'); return b.hidden ? '' : b.innerText;")
        .await;
    assert_eq!(banner, "", "the page reported an error");

    drop(browser);
    assert_eq!(p.stop(), Some(0), "{}", p.log_text());
}
