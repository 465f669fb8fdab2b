//! The scenario's seven KQL queries, unchanged, on the DuckDB file a real
//! pipeline wrote: PostgreSQL (the scenario's table, known orders) → the
//! PostgreSQL source with the scenario's Debezium 1.x config → the DuckDB
//! sink (unwrapped rows, as the ADX sink writes them) → `sluice query --kql`
//! with the scenario's ADX table definition and Kusto sink config. The
//! queries run while the pipeline runs (a `sluice connect` process holds
//! the file and answers them), and once more after it stopped. The
//! expected answers are worked out by hand from the orders below.

mod common;
mod worker;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value as Json};
use worker::Worker;

/// (custid, amount, city, purchase_time) of the orders written before the
/// pipeline starts (read by the snapshot); orderid is their position.
const SNAPSHOT: &[(i32, i32, &str, &str)] = &[
    (101, 150, "New York", "2020-10-09 07:23:10"),
    (102, 120, "Seattle", "2020-10-09 07:25:00"),
    (103, 199, "New York", "2020-10-09 07:31:00"),
    (104, 100, "Austin", "2020-10-09 07:39:59"),
    (105, 180, "Chicago", "2020-10-09 13:05:00"),
    (106, 110, "New Delhi", "2020-10-09 13:15:00"),
    (107, 130, "Cleveland", "2020-10-09 23:59:59"),
    (108, 160, "Austin", "2020-10-10 00:00:00"),
    (109, 140, "New York", "2020-10-10 07:20:00"),
    (110, 170, "Seattle", "2020-10-10 13:10:00"),
];
/// Orders inserted while the pipeline streams (orderid 11 and 12).
const STREAMED: &[(i32, i32, &str, &str)] = &[
    (111, 190, "Chicago", "2020-10-10 07:35:00"),
    (112, 125, "Austin", "2020-10-10 13:19:59"),
];

const SCHEMA: &str = "\
.create table Orders (orderid: string, custid: string, city: string, amount: int, purchase_time: datetime)
.create table Orders ingestion json mapping 'OrdersEventMapping' '[{\"column\":\"orderid\",\"Properties\":{\"path\":\"$.orderid\"}},{\"column\":\"custid\",\"Properties\":{\"path\":\"$.custid\"}},{\"column\":\"city\",\"Properties\":{\"path\":\"$.city\"}},{\"column\":\"amount\",\"Properties\":{\"path\":\"$.amount\"}},{\"column\":\"purchase_time\",\"Properties\":{\"path\":\"$.purchase_time\"}}]'
.alter table Orders policy ingestionbatching @'{\"MaximumBatchingTimeSpan\":\"00:00:30\", \"MaximumNumberOfItems\": 500, \"MaximumRawDataSizeMB\": 1024}'
";

fn insert_sql(rows: &[(i32, i32, &str, &str)]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|(c, a, city, t)| format!("({c}, {a}, '{city}', '{t}')"))
        .collect();
    format!(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES {};",
        values.join(", ")
    )
}

/// The largest LSN-named number in the offset file (0 when there is none).
fn max_lsn(path: &Path) -> i64 {
    fn walk(v: &Json, best: &mut i64) {
        match v {
            Json::Object(m) => {
                for (k, v) in m {
                    if k.starts_with("lsn") {
                        if let Some(n) = v.as_i64() {
                            *best = (*best).max(n);
                        }
                    }
                    walk(v, best);
                }
            }
            Json::Array(a) => a.iter().for_each(|v| walk(v, best)),
            Json::String(s) => {
                if let Ok(inner) = serde_json::from_str::<Json>(s) {
                    if !inner.is_string() {
                        walk(&inner, best);
                    }
                }
            }
            _ => {}
        }
    }
    let mut best = 0;
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(v) = serde_json::from_str::<Json>(&text) {
            walk(&v, &mut best);
        }
    }
    best
}

/// Whether the stored source offset covers the transaction `xid` that
/// committed before WAL position `after`: one of its streamed events, or a
/// progress marker past its commit. (A snapshot's offset carries the next
/// transaction id, which may be `xid` itself: it does not count.)
fn covers(path: &Path, xid: i64, after: i64) -> bool {
    fn walk(v: &Json, xid: i64, after: i64) -> bool {
        match v {
            Json::Object(m) => {
                let snapshot = m.get("snapshot").and_then(Json::as_bool) == Some(true);
                let tx = m.get("txId").and_then(Json::as_i64).filter(|_| !snapshot);
                let commit = m.get("lsn_commit").and_then(Json::as_i64);
                tx.is_some_and(|t| t >= xid)
                    || commit.is_some_and(|l| l >= after)
                    || m.values().any(|v| walk(v, xid, after))
            }
            Json::Array(a) => a.iter().any(|v| walk(v, xid, after)),
            Json::String(s) => serde_json::from_str::<Json>(s)
                .ok()
                .is_some_and(|inner| !inner.is_string() && walk(&inner, xid, after)),
            _ => false,
        }
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .is_some_and(|v| walk(&v, xid, after))
}

/// Waits up to two minutes for `what`; whether it holds.
async fn stored(what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !what() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    what()
}

/// Fills a DuckDB file through the pipeline, which goes on running; the
/// worker's directory holds the schema and the scenario's Kusto sink
/// config too.
async fn pipeline() -> Worker {
    let c = sluice_testkit::shared();
    let db = c
        .create_database("kql_scenario")
        .await
        .expect("create database");
    let pg = c.connect(&db).await.expect("connect");
    pg.batch_execute(
        "CREATE SCHEMA retail;
         CREATE TABLE retail.orders_info (
             orderid SERIAL NOT NULL PRIMARY KEY, custid INTEGER NOT NULL, amount INTEGER NOT NULL,
             city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);",
    )
    .await
    .expect("schema");
    pg.batch_execute(&insert_sql(SNAPSHOT)).await.expect("seed");

    let mut files = Worker::new("offset.flush.interval.ms=100\n");
    // The scenario's source config (Debezium 1.x names), pointed at the
    // test cluster.
    let source = json!({"name": "pg-orders-source", "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1", "database.port": c.port().to_string(),
        "database.user": "postgres", "database.password": "",
        "database.dbname": db, "database.server.name": "myserver",
        "plugin.name": "wal2json", "table.whitelist": "retail.orders_info",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "slot.name": format!("slot_{db}"), "publication.name": format!("pub_{db}"),
        "database.sslmode": "disable", "status.update.interval.ms": "1000",
    }});
    // The DuckDB sink with its defaults: each order's current row, exactly
    // once, in the table named after the topic's last segment
    // (orders_info).
    let sink = json!({"name": "orders-duckdb-sink", "config": {
        "connector.class": "duckdb", "topics": "myserver.retail.orders_info",
        "duckdb.path": files.path("orders.duckdb").display().to_string(),
    }});
    // The scenario's Kusto sink config, as users post it.
    let adx = json!({"name": "adx-orders-sink", "config": {
        "connector.class": "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector",
        "flush.size.bytes": 10000, "flush.interval.ms": 30000, "tasks.max": 2,
        "topics": "myserver.retail.orders_info",
        "kusto.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info','db': 'retail', 'table': 'Orders','format': 'json', 'mapping':'OrdersEventMapping'}]",
        "aad.auth.authority": "tenant", "kusto.url": "https://ingest-cluster.westeurope.kusto.windows.net",
        "aad.auth.appid": "app", "aad.auth.appkey": "secret",
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "transforms": "unwrap", "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
    }});
    for (name, v) in [("source", source), ("sink", sink), ("adx-orders-sink", adx)] {
        std::fs::write(files.path(&format!("{name}.json")), v.to_string()).expect("write");
    }
    std::fs::write(files.path("orders.kql"), SCHEMA).expect("write schema");
    files.start(&["source.json", "sink.json"]).await;
    let offsets = files.path("connect.offsets");
    // The snapshot's offset is stored once the sink flushed it.
    if !stored(|| max_lsn(&offsets) > 0).await {
        panic!(
            "the snapshot was never stored; offsets: {:?}\n{}",
            std::fs::read_to_string(&offsets),
            common::tail(&files.log(), 40)
        );
    }
    // Then orders arrive while the pipeline streams.
    let mut pg = pg;
    let tx = pg.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    tx.batch_execute(&insert_sql(STREAMED))
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    let after: i64 = pg
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
        .await
        .expect("lsn")
        .get(0);
    assert!(
        stored(|| covers(&offsets, xid, after)).await,
        "the streamed orders were never stored: {:?}",
        std::fs::read_to_string(&offsets)
    );
    // Stored at the source is not yet written by the sink: wait until the
    // DuckDB sink committed every record of the topic in the local log.
    let groups = files.path("connect-log").join("groups");
    let total = (SNAPSHOT.len() + STREAMED.len()) as i64;
    assert!(
        stored(|| sink_committed(&groups, "duckdb") >= total).await,
        "the DuckDB sink never committed {total} records: {:?}",
        std::fs::read_dir(&groups).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    files
}

/// The records a sink connector whose group name contains `name`
/// committed in the local log (the sum of its next offsets).
fn sink_committed(groups: &Path, name: &str) -> i64 {
    let Ok(dir) = std::fs::read_dir(groups) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(name))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Json>(&t).ok())
        .map(|doc| {
            doc["positions"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p["offset"].as_i64()).sum::<i64>())
                .unwrap_or(0)
        })
        .sum()
}

/// Runs `sluice query --kql` with the scenario's schema and Kusto config;
/// the JSON rows.
fn kql(files: &Worker, query: &str) -> Vec<Json> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("query")
        .arg("--kql")
        .arg(files.path("orders.duckdb"))
        .arg("--schema")
        .arg(files.path("orders.kql"))
        .arg("--kusto-config")
        .arg(files.path("adx-orders-sink.json"))
        .args(["--format", "json"])
        .arg(query)
        .output()
        .expect("run sluice query");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{query}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    match serde_json::from_str::<Json>(&stdout) {
        Ok(Json::Array(rows)) => rows,
        other => panic!("{query}: not a JSON array: {other:?}\n{stdout}"),
    }
}

fn sorted(mut rows: Vec<Json>) -> Vec<Json> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenarios_seven_queries_give_adx_answers() {
    let mut files = pipeline().await;
    // The worker holds the file: DuckDB lets no other process open it, and
    // the queries below go to the worker.
    assert!(files.path("orders.duckdb.sluice-worker").exists());

    // 1. Every column, in the ADX table's order and types: orderid and
    //    custid are strings, purchase_time a datetime.
    assert_eq!(
        sorted(kql(&files, "Orders | where city == 'New York'")),
        sorted(vec![
            json!({"orderid": "1", "custid": "101", "city": "New York", "amount": 150, "purchase_time": "2020-10-09T07:23:10Z"}),
            json!({"orderid": "3", "custid": "103", "city": "New York", "amount": 199, "purchase_time": "2020-10-09T07:31:00Z"}),
            json!({"orderid": "9", "custid": "109", "city": "New York", "amount": 140, "purchase_time": "2020-10-10T07:20:00Z"}),
        ])
    );
    let keys: Vec<String> = kql(&files, "Orders | where city == 'New York'")[0]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["orderid", "custid", "city", "amount", "purchase_time"]
    );

    // 2. `sort by` is descending.
    assert_eq!(
        kql(
            &files,
            "Orders | where city == 'New York' | project amount, purchase_time | sort by amount"
        ),
        vec![
            json!({"amount": 199, "purchase_time": "2020-10-09T07:31:00Z"}),
            json!({"amount": 150, "purchase_time": "2020-10-09T07:23:10Z"}),
            json!({"amount": 140, "purchase_time": "2020-10-10T07:20:00Z"}),
        ]
    );

    // 3. The average is a real, not an integer division.
    let avg = kql(
        &files,
        "Orders | summarize avg_sales = avg(amount) by city | render columnchart",
    );
    let avg: Vec<(String, f64)> = sorted(avg)
        .iter()
        .map(|r| {
            (
                r["city"].as_str().unwrap_or("").to_string(),
                r["avg_sales"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    assert_eq!(
        avg,
        [
            ("Austin".to_string(), 385.0 / 3.0),
            ("Chicago".to_string(), 185.0),
            ("Cleveland".to_string(), 130.0),
            ("New Delhi".to_string(), 110.0),
            ("New York".to_string(), 163.0),
            ("Seattle".to_string(), 145.0),
        ]
    );

    // 4. Totals, largest first.
    assert_eq!(
        kql(
            &files,
            "Orders | summarize total = sum(amount) by city | sort by total | render piechart"
        ),
        vec![
            json!({"city": "New York", "total": 489}),
            json!({"city": "Austin", "total": 385}),
            json!({"city": "Chicago", "total": 370}),
            json!({"city": "Seattle", "total": 290}),
            json!({"city": "Cleveland", "total": 130}),
            json!({"city": "New Delhi", "total": 110}),
        ]
    );

    // 5. Counts, largest first (ties in any order).
    let counts = kql(
        &files,
        "Orders | summarize orders = count() by city | sort by orders | render linechart",
    );
    let n: Vec<i64> = counts
        .iter()
        .map(|r| r["orders"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(n, [3, 3, 2, 2, 1, 1]);
    assert_eq!(
        sorted(counts),
        sorted(vec![
            json!({"city": "New York", "orders": 3}),
            json!({"city": "Austin", "orders": 3}),
            json!({"city": "Seattle", "orders": 2}),
            json!({"city": "Chicago", "orders": 2}),
            json!({"city": "New Delhi", "orders": 1}),
            json!({"city": "Cleveland", "orders": 1}),
        ])
    );

    // 6. Time of day in 10-minute bins: timespans, printed as KQL does.
    assert_eq!(
        kql(
            &files,
            "Orders | extend hour = floor(purchase_time % 1d , 10m) | summarize event_count=count() by hour | sort by hour asc | render timechart"
        ),
        vec![
            json!({"hour": "00:00:00", "event_count": 1}),
            json!({"hour": "07:20:00", "event_count": 3}),
            json!({"hour": "07:30:00", "event_count": 3}),
            json!({"hour": "13:00:00", "event_count": 1}),
            json!({"hour": "13:10:00", "event_count": 3}),
            json!({"hour": "23:50:00", "event_count": 1}),
        ]
    );

    // 7. By time of day and city.
    assert_eq!(
        sorted(kql(
            &files,
            "Orders | extend hour = floor(purchase_time % 1d , 10m) | where city in (\"New Delhi\",\"Seattle\",\"New York\",\"Austin\",\"Chicago\",\"Cleveland\") | summarize event_count=count() by hour, city | render columnchart"
        )),
        sorted(vec![
            json!({"hour": "00:00:00", "city": "Austin", "event_count": 1}),
            json!({"hour": "07:20:00", "city": "New York", "event_count": 2}),
            json!({"hour": "07:20:00", "city": "Seattle", "event_count": 1}),
            json!({"hour": "07:30:00", "city": "New York", "event_count": 1}),
            json!({"hour": "07:30:00", "city": "Austin", "event_count": 1}),
            json!({"hour": "07:30:00", "city": "Chicago", "event_count": 1}),
            json!({"hour": "13:00:00", "city": "Chicago", "event_count": 1}),
            json!({"hour": "13:10:00", "city": "New Delhi", "event_count": 1}),
            json!({"hour": "13:10:00", "city": "Seattle", "event_count": 1}),
            json!({"hour": "13:10:00", "city": "Austin", "event_count": 1}),
            json!({"hour": "23:50:00", "city": "Cleveland", "event_count": 1}),
        ])
    );

    // Without the Kusto config, `Orders` names no table of this file
    // (the sink wrote `orders_info`): refused, with what the file has.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["query", "--kql"])
        .arg(files.path("orders.duckdb"))
        .arg("Orders | count")
        .output()
        .expect("run sluice query");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("table 'Orders' is not known") && stderr.contains("orders_info"),
        "{stderr}"
    );
    // Without the schema, the DuckDB types show: amount is an int, and
    // purchase_time is text, so `%` on it is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["query", "--kql", "--table", "Orders=orders_info"])
        .arg(files.path("orders.duckdb"))
        .arg("Orders | extend hour = floor(purchase_time % 1d , 10m)")
        .output()
        .expect("run sluice query");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("'%' is not defined for string and timespan") && stderr.contains("1:30"),
        "{stderr}"
    );

    // Once the worker stops, the same query opens the file itself and
    // gives the same answer.
    let live = kql(
        &files,
        "Orders | summarize total = sum(amount) by city | sort by total | render piechart",
    );
    assert_eq!(files.stop(), Some(0));
    assert!(!files.path("orders.duckdb.sluice-worker").exists());
    assert_eq!(
        kql(
            &files,
            "Orders | summarize total = sum(amount) by city | sort by total | render piechart"
        ),
        live
    );
}
