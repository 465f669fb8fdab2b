//! Watching a running worker as an operator does: `GET /metrics` scraped
//! and parsed while a real snapshot and stream run into DuckDB (values move
//! as they should, the sink's lag rises while it is paused and falls
//! after), the same metrics on the `metrics.listeners` port, snapshot and
//! streaming lines in the log, and the WAL guard on a real slot held back
//! by a paused source: a warning past `slot.retained.wal.warn.bytes`, an
//! error in status before `max_slot_wal_keep_size` would invalidate it,
//! both gone once the source catches up.

mod common;
mod worker;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{cluster, fresh_db, insert_orders as insert, tail, LONG};
use serde_json::{json, Value as Json};
use worker::Worker;

/// One sample of a scrape: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics text format (what this test needs of it).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => panic!("bad sample line {line:?}"),
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while let Some((k, after)) = rest.split_once("=\"") {
                    let mut v = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, n)) = chars.next() {
                                    v.push(n);
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => v.push(c),
                        }
                    }
                    labels.insert(k.trim_start_matches(',').to_string(), v);
                    rest = &after[end..];
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(w: &Worker) -> Vec<Sample> {
    let (code, text) = w
        .text(&format!("http://127.0.0.1:{}/metrics", w.port))
        .await;
    assert_eq!(code, 200, "GET /metrics: {text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    parse(&text)
}

/// Scrapes until `pred` holds; every scrape on the way.
async fn scrape_until(
    w: &Worker,
    what: &str,
    pred: impl Fn(&[Sample]) -> bool,
) -> Vec<Vec<Sample>> {
    let deadline = Instant::now() + LONG;
    let mut seen = Vec::new();
    loop {
        let s = scrape(w).await;
        let done = pred(&s);
        seen.push(s);
        if done {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; last scrape:\n{:#?}\n{}",
            seen.last().map(|s| s
                .iter()
                .filter(|x| !x.name.contains("bucket"))
                .collect::<Vec<_>>()),
            tail(&w.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn source(db: &str, port: u16, slot: &str, extra: &[(&str, &str)]) -> Json {
    let mut config = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": port.to_string(),
        "database.user": "postgres",
        "database.dbname": db,
        "topic.prefix": "myserver",
        "table.include.list": "retail.orders_info",
        "slot.name": slot,
        "publication.name": format!("pub_{slot}"),
        "publication.autocreate.mode": "filtered",
        "database.sslmode": "disable",
    });
    for (k, v) in extra {
        config[*k] = Json::String((*v).to_string());
    }
    json!({"name": "pg", "config": config})
}

fn duck_sink(w: &Worker) -> Json {
    json!({"name": "duck", "config": {
        "connector.class": "duckdb",
        "duckdb.path": w.path("orders.duckdb").display().to_string(),
        "topics": "myserver.retail.orders_info",
        "duckdb.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info', 'table': 'orders', 'mode': 'upsert'}]"
    }})
}

const ROWS: i64 = 200_000;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_a_snapshot_a_stream_and_a_paused_sink() {
    let (db, pg) = fresh_db("observe").await;
    pg.batch_execute(common::ORDERS).await.expect("table");
    insert(&pg, ROWS).await;
    pg.batch_execute("ANALYZE retail.orders_info")
        .await
        .expect("analyze");
    let mport = sluice_testkit::free_port().expect("port");
    let mut w = Worker::new(&format!(
        "metrics.listeners=http://127.0.0.1:{mport}\n\
         sluice.progress.interval.ms=100\nsluice.summary.interval.ms=1000\n"
    ));
    w.start(&[]).await;
    let c = |n: &'static str| vec![("connector", "pg"), ("context", n)];
    let (code, body) = w
        .post(
            "/connectors",
            &source(&db, cluster().port(), "observe_slot", &[]),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = w.post("/connectors", &duck_sink(&w)).await;
    assert_eq!(code, 201, "{body}");

    // The snapshot: rows scanned only grow, to the table's size.
    let scrapes = scrape_until(&w, "the snapshot's completion", |s| {
        value(s, "debezium_metrics_snapshot_completed", &c("snapshot")) == Some(1.0)
    })
    .await;
    let scanned: Vec<f64> = scrapes
        .iter()
        .filter_map(|s| {
            value(
                s,
                "debezium_metrics_rows_scanned",
                &[("connector", "pg"), ("table", "retail.orders_info")],
            )
        })
        .collect();
    assert!(
        scanned.windows(2).all(|w| w[0] <= w[1]),
        "rows scanned went down: {scanned:?}"
    );
    let last = scrapes.last().expect("a scrape");
    assert_eq!(scanned.last().copied(), Some(ROWS as f64));
    for (name, want) in [
        ("debezium_metrics_snapshot_running", 0.0),
        ("debezium_metrics_snapshot_aborted", 0.0),
        ("debezium_metrics_total_table_count", 1.0),
        ("debezium_metrics_remaining_table_count", 0.0),
        ("debezium_metrics_total_number_of_events_seen", ROWS as f64),
    ] {
        assert_eq!(value(last, name, &c("snapshot")), Some(want), "{name}");
    }
    assert_eq!(
        value(
            last,
            "sluice_snapshot_estimated_rows",
            &[("table", "retail.orders_info")]
        ),
        Some(ROWS as f64),
        "pg_class.reltuples after ANALYZE"
    );
    assert!(
        value(
            last,
            "debezium_metrics_snapshot_duration_seconds",
            &c("snapshot")
        ) > Some(0.0)
    );
    // The log said how far it was while it ran.
    let log = w.log();
    assert!(
        log.contains("snapshot ") && log.contains(&format!("of ~{ROWS} rows")),
        "no snapshot progress line:\n{}",
        tail(&log, 30)
    );
    // The REST status carries the snapshot too.
    let (_, status) = w.get("/connectors/pg/status").await;
    assert_eq!(status["tasks"][0]["snapshot"]["rows_scanned"], json!(ROWS));
    assert_eq!(status["tasks"][0]["snapshot"]["completed"], json!(true));

    // Streaming: 100 inserts are 100 creates, delivered to DuckDB.
    insert(&pg, 100).await;
    let streamed = scrape_until(&w, "100 streamed creates delivered", |s| {
        value(
            s,
            "debezium_metrics_total_number_of_create_events_seen",
            &c("streaming"),
        ) == Some(100.0)
            && value(
                s,
                "sluice_sink_record_durable_total",
                &[("connector", "duck")],
            ) == Some((ROWS + 100) as f64)
    })
    .await;
    let s = streamed.last().expect("scrape");
    assert_eq!(
        value(s, "debezium_metrics_connected", &c("streaming")),
        Some(1.0)
    );
    assert_eq!(
        value(
            s,
            "debezium_metrics_number_of_committed_transactions",
            &c("streaming")
        ),
        Some(1.0),
        "one INSERT statement, one transaction"
    );
    assert!(value(s, "debezium_metrics_last_transaction_id", &c("streaming")) > Some(0.0));
    assert!(value(s, "debezium_metrics_source_event_position", &c("streaming")) > Some(0.0));
    assert!(
        value(
            s,
            "sluice_sink_commit_to_durable_seconds_count",
            &[("connector", "duck")]
        ) >= Some(100.0),
        "the latency histogram counts the streamed changes"
    );
    assert!(
        value(
            s,
            "kafka_connect_source_task_source_record_write_total",
            &[("connector", "pg")]
        ) >= Some((ROWS + 100) as f64)
    );
    assert_eq!(
        value(
            s,
            "kafka_connect_connector_task_status",
            &[("connector", "duck"), ("status", "running")]
        ),
        Some(1.0)
    );
    assert!(value(s, "sluice_local_log_bytes", &[]) > Some(0.0));
    // Committed too (positions are committed every half second).
    scrape_until(&w, "the sink's positions committed", |s| {
        value(s, "sluice_sink_backlog_records", &[("connector", "duck")]) == Some(0.0)
    })
    .await;

    // A paused sink falls behind: its backlog is the changes since, its
    // lag grows with the clock; resumed, both return to 0.
    let (code, _) = w.put("/connectors/duck/pause", &json!({})).await;
    assert_eq!(code, 202);
    w.wait_task("duck", &["PAUSED"]).await;
    insert(&pg, 50).await;
    let behind = scrape_until(&w, "the paused sink's backlog", |s| {
        value(s, "sluice_sink_backlog_records", &[("connector", "duck")]) == Some(50.0)
    })
    .await;
    let lag1 = value(
        behind.last().expect("scrape"),
        "sluice_sink_lag_milliseconds",
        &[("connector", "duck")],
    )
    .expect("lag while behind");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lag2 = value(
        &scrape(&w).await,
        "sluice_sink_lag_milliseconds",
        &[("connector", "duck")],
    )
    .expect("lag while behind");
    assert!(
        lag2 >= lag1 + 1000.0,
        "the lag grows while paused: {lag1} then {lag2}"
    );
    let (code, _) = w.put("/connectors/duck/resume", &json!({})).await;
    assert_eq!(code, 202);
    scrape_until(&w, "the resumed sink catching up", |s| {
        value(s, "sluice_sink_backlog_records", &[("connector", "duck")]) == Some(0.0)
            && value(s, "sluice_sink_lag_milliseconds", &[("connector", "duck")]) == Some(0.0)
            && value(
                s,
                "sluice_sink_record_durable_total",
                &[("connector", "duck")],
            ) == Some((ROWS + 150) as f64)
    })
    .await;

    // The metrics port serves the same families, without the REST API.
    let (code, text) = w.text(&format!("http://127.0.0.1:{mport}/metrics")).await;
    assert_eq!(code, 200);
    assert!(text.contains("debezium_metrics_total_number_of_create_events_seen{"));
    let (code, _) = w
        .text(&format!("http://127.0.0.1:{mport}/connectors"))
        .await;
    assert_eq!(code, 404, "the metrics port serves metrics only");

    // The streaming summary made it to the log.
    let deadline = Instant::now() + LONG;
    while !w.log().contains("streamed ") {
        assert!(
            Instant::now() < deadline,
            "no streaming summary:\n{}",
            tail(&w.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.stop(), Some(0), "{}", tail(&w.log(), 30));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wal_guard_warns_then_errors_before_the_slot_is_lost() {
    // A cluster of its own: a bounded slot.
    let pgc = sluice_testkit::PgCluster::start_with(&[("max_slot_wal_keep_size", "128MB")])
        .expect("cluster");
    let admin = pgc.connect("postgres").await.expect("admin");
    admin
        .batch_execute("CREATE DATABASE guard")
        .await
        .expect("db");
    let pg = pgc.connect("guard").await.expect("connect");
    pg.batch_execute(common::ORDERS).await.expect("table");
    insert(&pg, 10).await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let (code, body) = w
        .post(
            "/connectors",
            &source(
                "guard",
                pgc.port(),
                "guard_slot",
                &[
                    ("slot.retained.wal.warn.bytes", "20000000"),
                    ("slot.monitor.interval.ms", "100"),
                ],
            ),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = w.post("/connectors", &duck_sink(&w)).await;
    assert_eq!(code, 201, "{body}");
    let wait_durable = |n: f64| {
        let w = &w;
        async move {
            scrape_until(w, "the changes in DuckDB", |s| {
                value(
                    s,
                    "sluice_sink_record_durable_total",
                    &[("connector", "duck")],
                ) == Some(n)
            })
            .await
        }
    };
    wait_durable(10.0).await;
    // Held back: the source is paused while the database writes on.
    let (code, _) = w.put("/connectors/pg/pause", &json!({})).await;
    assert_eq!(code, 202);
    w.wait_task("pg", &["PAUSED"]).await;
    let mut warned = false;
    let mut errored = None;
    for round in 0..14 {
        // A change and a new WAL segment: about 16 MB more retained.
        insert(&pg, 1).await;
        pg.batch_execute("SELECT pg_switch_wal()")
            .await
            .expect("switch");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let (_, st) = w.get("/connectors/pg/status").await;
            let task = &st["tasks"][0];
            let wal_status = task["streaming"]["slot"]["wal_status"]
                .as_str()
                .unwrap_or("");
            assert_ne!(
                wal_status, "lost",
                "the slot was lost before any error: {st}"
            );
            match task["health"]["level"].as_str() {
                Some("warning") => {
                    let msg = task["health"]["message"].as_str().unwrap_or("");
                    assert!(msg.contains("slot.retained.wal.warn.bytes"), "{msg}");
                    warned = true;
                }
                Some("error") => {
                    errored = Some(st.clone());
                    break;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if errored.is_some() {
            eprintln!("error after {} segments", round + 1);
            break;
        }
    }
    assert!(
        warned,
        "no warning before the error\n{}",
        tail(&w.log(), 20)
    );
    let st = errored.unwrap_or_else(|| panic!("no error in status\n{}", tail(&w.log(), 20)));
    let task = &st["tasks"][0];
    let msg = task["health"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("about to be invalidated") && msg.contains("max_slot_wal_keep_size"),
        "{msg}"
    );
    assert_eq!(
        task["trace"].as_str(),
        Some(msg),
        "tools that read trace see it"
    );
    let samples = scrape(&w).await;
    assert!(
        value(
            &samples,
            "sluice_slot_retained_wal_bytes",
            &[("slot", "guard_slot")]
        ) > Some(64.0 * 1048576.0)
    );
    assert!(value(
        &samples,
        "sluice_slot_safe_wal_size_bytes",
        &[("slot", "guard_slot")]
    )
    .is_some());
    let log = w.log();
    assert!(
        log.contains("over slot.retained.wal.warn.bytes"),
        "{}",
        tail(&log, 20)
    );
    assert!(
        log.contains("about to be invalidated"),
        "{}",
        tail(&log, 20)
    );

    // Resumed, the source catches up: nothing lost, the notes go.
    let (code, _) = w.put("/connectors/pg/resume", &json!({})).await;
    assert_eq!(code, 202);
    let deadline = Instant::now() + LONG;
    loop {
        let (_, st) = w.get("/connectors/pg/status").await;
        if st["tasks"][0].get("health").is_none() && st["tasks"][0]["state"] == "RUNNING" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the note stayed after catching up: {st}\n{}",
            tail(&w.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inserted: i64 = pg
        .query_one("SELECT count(*) FROM retail.orders_info", &[])
        .await
        .expect("count")
        .get(0);
    wait_durable(inserted as f64).await;
    assert_eq!(w.stop(), Some(0), "{}", tail(&w.log(), 30));
}
