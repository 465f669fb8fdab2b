//! Incremental snapshots and signals, end to end: a worker process, real
//! PostgreSQL, the DuckDB sink. (The events themselves are compared with
//! Debezium's in the parity suite's `incremental` case.)

mod common;
mod worker;

use std::time::{Duration, Instant};

use common::{fresh_db, insert_orders as insert, tail, LONG};
use serde_json::json;
use worker::{converge, duck_rows, pg_rows, Worker};

const SIGNAL_TABLE: &str = "CREATE TABLE retail.debezium_signal (
    id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))";

/// The scenario's source, streaming only (no initial snapshot), with the
/// signal table and small chunks.
fn source(db: &str, slot: &str, chunk: usize) -> serde_json::Value {
    let mut s = common::orders_source("pg-orders-source", db, "myserver", slot);
    s["config"]["snapshot.mode"] = json!("no_data");
    s["config"]["signal.data.collection"] = json!("retail.debezium_signal");
    s["config"]["incremental.snapshot.chunk.size"] = json!(chunk.to_string());
    s
}

/// The scenario's source and a DuckDB sink of its table as the worker's
/// config files; starts the worker with them. The files and the DuckDB
/// file.
async fn start_with_duckdb(
    w: &mut Worker,
    source: &serde_json::Value,
) -> ([&'static str; 2], std::path::PathBuf) {
    let duck = w.path("orders.duckdb");
    std::fs::write(w.path("source.json"), source.to_string()).expect("write");
    std::fs::write(
        w.path("sink.json"),
        common::orders_duckdb_sink("duck", &duck.display().to_string(), "myserver").to_string(),
    )
    .expect("write");
    let files = ["source.json", "sink.json"];
    w.start(&files).await;
    (files, duck)
}

async fn wait_log(w: &Worker, what: &str, times: usize) {
    let deadline = Instant::now() + LONG;
    while w.log().matches(what).count() < times {
        assert!(
            Instant::now() < deadline,
            "never logged {what:?} ({times}x):\n{}",
            tail(&w.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inserts, updates and deletes in small transactions until cancelled;
/// returns how many statements ran.
fn load(
    db: &str,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<i64>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    let db = db.to_string();
    let task = tokio::spawn(async move {
        let pg = common::cluster().connect(&db).await.expect("connect");
        let mut i: i64 = 0;
        while !stopping.is_cancelled() {
            i += 1;
            let sql = match i % 10 {
                0..=3 => "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
                          SELECT g, 150, 'Seattle', '2020-10-09 08:00:00' FROM generate_series(1, 5) g"
                    .to_string(),
                4..=7 => format!(
                    "UPDATE retail.orders_info SET amount = amount + 1, city = 'Denver' \
                     WHERE orderid IN (SELECT orderid FROM retail.orders_info WHERE orderid % 97 = {} LIMIT 20)",
                    i % 97
                ),
                _ => format!(
                    "DELETE FROM retail.orders_info WHERE orderid IN \
                     (SELECT orderid FROM retail.orders_info WHERE orderid % 89 = {} LIMIT 5)",
                    i % 89
                ),
            };
            pg.batch_execute(&sql).await.expect("load");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        i
    });
    (stop, task)
}

/// Rows DuckDB has and PostgreSQL does not (as after deletes nobody
/// streamed: a lost slot), written while the worker is stopped: order ids
/// above a million, and one row with wrong values.
fn stale_rows(duck: &std::path::Path, n: i64) {
    let conn = duckdb::Connection::open(duck).expect("open DuckDB");
    conn.execute_batch(&format!(
        "INSERT INTO orders (orderid, custid, amount, city, purchase_time) \
           SELECT orderid + 1000000, custid, amount, city, purchase_time \
           FROM orders ORDER BY orderid LIMIT {n};
         UPDATE orders SET amount = -1, city = 'nowhere' WHERE orderid = (SELECT min(orderid) FROM orders);"
    ))
    .expect("stale rows");
}

/// The watermark algorithm under load: a table of 100,000 rows read in
/// chunks while inserts, updates and deletes hit it, the worker killed
/// twice in the middle and its replication connection dropped twice: DuckDB ends equal to PostgreSQL row by row (a read
/// that came after a streamed change of its key would bring back an old
/// row; a lost chunk would leave rows out; a row the reconciliation at its
/// end removed although a change wrote it would be missing). DuckDB also
/// held rows PostgreSQL no longer has before it began: they are gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_snapshot_under_load_and_kill_9_leaves_duckdb_equal_to_postgres() {
    let (db, pg) = fresh_db("incload").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    insert(&pg, 100_000).await;
    let mut w = Worker::new("");
    let (files, duck) = start_with_duckdb(&mut w, &source(&db, "inc_load", 200)).await;
    wait_log(&w, "streaming changes", 1).await;
    let (stop_load, load) = load(&db);
    // The streamed changes create DuckDB's table; stale rows join them
    // while the worker is stopped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.stop(), Some(0), "clean stop\n{}", tail(&w.log(), 40));
    stale_rows(&duck, 30);
    let started = w.log().matches("streaming changes").count();
    w.start(&files).await;
    wait_log(&w, "streaming changes", started + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('inc-1', 'execute-snapshot', \
         '{\"data-collections\": [\"retail.orders_info\"], \"type\": \"incremental\"}')",
    )
    .await
    .expect("signal");
    wait_log(
        &w,
        "incremental snapshot inc-1: reading retail.orders_info",
        1,
    )
    .await;
    // Killed twice while it reads: it resumes after the last chunk it
    // emitted (the progress is in the offsets).
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !w.log().contains("incremental snapshot inc-1 completed"),
            "the snapshot ended before the kill: make the table bigger"
        );
        w.kill9();
        w.start(&files).await;
    }
    // Its replication connection dropped twice while it reads: the source
    // connects again, and a chunk not yet sent is read again.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        pg.batch_execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = 'inc_load' AND active_pid IS NOT NULL",
        )
        .await
        .expect("terminate the walsender");
    }
    wait_log(&w, "incremental snapshot inc-1 completed", 1).await;
    stop_load.cancel();
    let statements = load.await.expect("load task");
    let rows = converge(&mut w, &files, &pg, &duck).await;
    eprintln!(
        "incremental snapshot under load: {statements} statements, 2 kills, {rows} rows equal"
    );
}

/// Sluice's REST channel drives an incremental snapshot: additional
/// conditions limit it, pause holds it, resume finishes it, stop ends
/// another; the signal table's rows are events of its own topic.
#[tokio::test(flavor = "multi_thread")]
async fn rest_signals_start_pause_resume_and_stop_incremental_snapshots() {
    let (db, pg) = fresh_db("increst").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    insert(&pg, 20_000).await;
    let mut w = Worker::new("");
    let duck = w.path("orders.duckdb");
    w.start(&[]).await;
    let (code, body) = w.post("/connectors", &source(&db, "inc_rest", 50)).await;
    assert_eq!(code, 201, "{body}");
    let sink = common::orders_duckdb_sink("duck", &duck.display().to_string(), "myserver");
    let (code, body) = w.post("/connectors", &sink).await;
    assert_eq!(code, 201, "{body}");
    let records = w.path("records.jsonl");
    let file_sink = json!({"name": "records", "config": {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "file": records.display().to_string(),
        "topics.regex": "myserver\\..*",
        "sluice.file.format": "record",
    }});
    let (code, body) = w.post("/connectors", &file_sink).await;
    assert_eq!(code, 201, "{body}");
    wait_log(&w, "streaming changes", 1).await;

    // Errors name what is wrong.
    let (code, body) = w
        .post(
            "/connectors/nope/signals",
            &json!({"type": "log", "data": {}}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = w
        .post("/connectors/pg-orders-source/signals", &json!({"data": {}}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("type"), "{body}");

    let signal = |kind: &str, data: serde_json::Value| json!({"type": kind, "data": data});
    let (code, body) = w
        .post(
            "/connectors/pg-orders-source/signals",
            &signal(
                "execute-snapshot",
                json!({"data-collections": ["retail.orders_info"],
                       "additional-conditions": [{"data-collection": "retail.orders_info", "filter": "orderid <= 5000"}]}),
            ),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_string();
    let (code, _) = w
        .post(
            "/connectors/pg-orders-source/signals",
            &signal("pause-snapshot", json!({})),
        )
        .await;
    assert_eq!(code, 202);
    wait_log(&w, &format!("incremental snapshot {id} paused"), 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !w.log()
            .contains(&format!("incremental snapshot {id} completed")),
        "a paused snapshot went on:\n{}",
        tail(&w.log(), 30)
    );
    let (code, _) = w
        .post(
            "/connectors/pg-orders-source/signals",
            &signal("resume-snapshot", json!({})),
        )
        .await;
    assert_eq!(code, 202);
    wait_log(&w, &format!("incremental snapshot {id} completed"), 1).await;
    // The log action, through the signal table.
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('log-1', 'log', '{\"message\": \"hello from the signal table\"}')",
    )
    .await
    .expect("signal row");
    wait_log(&w, "hello from the signal table", 1).await;
    // Its row is an event of the signal table's topic, as Debezium emits it.
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(&records)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("\"myserver.retail.debezium_signal\"") && l.contains("log-1"))
    {
        assert!(
            Instant::now() < deadline,
            "the signal table's row never reached its topic"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = w.wait_task("pg-orders-source", &["RUNNING"]).await;
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");

    // Exactly the rows the condition selects, nothing else (no initial
    // snapshot, no changes).
    assert_eq!(w.stop(), Some(0));
    let want: Vec<String> = pg_rows(&pg).await.into_iter().take(5000).collect();
    let got = duck_rows(&duck, "orders").unwrap_or_default();
    let text = std::fs::read_to_string(&records).unwrap_or_default();
    let reads: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["topic"] == "myserver.retail.orders_info")
        .collect();
    let ids: Vec<i64> = reads
        .iter()
        .filter_map(|r| r["value"]["payload"]["after"]["orderid"].as_i64())
        .collect();
    let mut gaps = Vec::new();
    for w in ids.windows(2) {
        if w[1] != w[0] + 1 {
            gaps.push((w[0], w[1]));
        }
    }
    assert_eq!(
        reads.len(),
        5000,
        "records read: {}, ids {:?}..{:?}, gaps {:?}, duck {}\n{}",
        reads.len(),
        ids.first(),
        ids.last(),
        &gaps[..gaps.len().min(20)],
        got.len(),
        tail(&w.log(), 60)
    );
    assert!(
        reads.iter().all(|r| r["value"]["payload"]["op"] == "r"
            && r["value"]["payload"]["source"]["snapshot"] == "incremental"),
        "{:?}",
        reads.first()
    );
    assert_eq!(
        got.len(),
        want.len(),
        "first difference: {:?}",
        got.iter().zip(&want).find(|(a, b)| a != b)
    );
    assert!(
        got == want,
        "first difference: {:?}",
        got.iter().zip(&want).find(|(a, b)| a != b)
    );

    // A stop-snapshot ends a paused snapshot for good.
    w.start(&[]).await;
    wait_log(&w, "streaming changes", 2).await;
    let (code, body) = w
        .post(
            "/connectors/pg-orders-source/signals",
            &signal(
                "execute-snapshot",
                json!({"data-collections": ["retail\\.orders.*"]}),
            ),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let second = body["id"].as_str().expect("an id").to_string();
    w.post(
        "/connectors/pg-orders-source/signals",
        &signal("pause-snapshot", json!({})),
    )
    .await;
    w.post(
        "/connectors/pg-orders-source/signals",
        &signal("stop-snapshot", json!({"type": "incremental"})),
    )
    .await;
    wait_log(&w, &format!("incremental snapshot {second} stopped"), 1).await;
    w.post(
        "/connectors/pg-orders-source/signals",
        &signal("resume-snapshot", json!({})),
    )
    .await;
    wait_log(&w, "no incremental snapshot to resume", 1).await;
    assert_eq!(w.stop(), Some(0));
}

/// A blocking snapshot signalled through the signal table while changes
/// keep coming: streaming pauses for it and goes on after; DuckDB ends
/// equal to PostgreSQL (the snapshot's rows are newer than the changes
/// streamed after it resumes, which bring them up to date).
#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_snapshot_under_load_leaves_duckdb_equal_to_postgres() {
    let (db, pg) = fresh_db("incblock").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    insert(&pg, 30_000).await;
    let mut w = Worker::new("");
    let (files, duck) = start_with_duckdb(&mut w, &source(&db, "inc_block", 1024)).await;
    wait_log(&w, "streaming changes", 1).await;
    let (stop_load, load) = load(&db);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('block-1', 'execute-snapshot', \
         '{\"data-collections\": [\"retail.orders_info\"], \"type\": \"blocking\"}')",
    )
    .await
    .expect("signal");
    wait_log(&w, "signal block-1: blocking snapshot done", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_load.cancel();
    let statements = load.await.expect("load task");
    let rows = converge(&mut w, &files, &pg, &duck).await;
    eprintln!("blocking snapshot under load: {statements} statements, {rows} rows equal");
}

/// A snapshot of one table by signal (`type` `blocking`) reconciles it:
/// rows DuckDB holds that PostgreSQL no longer has (deleted while nobody
/// streamed them, as after a lost slot) are gone at its end, and a row
/// that went wrong is read again.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_snapshot_by_signal_removes_rows_the_source_no_longer_has() {
    let (db, pg) = fresh_db("increcon").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    insert(&pg, 2_000).await;
    let mut w = Worker::new("");
    let mut src = source(&db, "inc_recon", 1024);
    src["config"]["snapshot.mode"] = json!("initial");
    let (files, duck) = start_with_duckdb(&mut w, &src).await;
    let rows = converge(&mut w, &files, &pg, &duck).await;
    assert_eq!(rows, 2_000);

    // While the worker is down, DuckDB gets what PostgreSQL does not have.
    {
        let conn = duckdb::Connection::open(&duck).expect("open DuckDB");
        conn.execute_batch(
            "INSERT INTO orders (orderid, custid, amount, city, purchase_time) \
               SELECT orderid + 1000000, custid, amount, city, purchase_time \
               FROM orders WHERE orderid <= 25;
             UPDATE orders SET amount = -1, city = 'nowhere' WHERE orderid = 7;",
        )
        .expect("stale rows");
    }
    assert_eq!(duck_rows(&duck, "orders").map(|r| r.len()), Some(2_025));

    let started = w.log().matches("streaming changes").count();
    w.start(&files).await;
    wait_log(&w, "streaming changes", started + 1).await;
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('recon-1', 'execute-snapshot', \
         '{\"data-collections\": [\"retail.orders_info\"], \"type\": \"blocking\"}')",
    )
    .await
    .expect("signal");
    wait_log(&w, "signal recon-1: blocking snapshot done", 1).await;
    wait_log(
        &w,
        "25 rows that the snapshot no longer has were removed",
        1,
    )
    .await;
    // A change after it still streams in.
    insert(&pg, 1).await;
    let rows = converge(&mut w, &files, &pg, &duck).await;
    assert_eq!(rows, 2_001, "DuckDB equals PostgreSQL, its stale rows gone");
}

/// An incremental snapshot by signal reconciles the table as a blocking
/// one does, without pausing the stream: rows DuckDB holds that PostgreSQL
/// no longer has are gone at its end, a wrong row is read again, and the
/// bookkeeping says how many went. A table PostgreSQL has no row of is
/// reconciled at its next change (there is no read to carry the end).
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_snapshot_by_signal_removes_rows_the_source_no_longer_has() {
    let (db, pg) = fresh_db("incstale").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    insert(&pg, 2_000).await;
    let mut w = Worker::new("");
    let mut src = source(&db, "inc_stale", 300);
    src["config"]["snapshot.mode"] = json!("initial");
    let (files, duck) = start_with_duckdb(&mut w, &src).await;
    assert_eq!(converge(&mut w, &files, &pg, &duck).await, 2_000);
    stale_rows(&duck, 25);
    assert_eq!(duck_rows(&duck, "orders").map(|r| r.len()), Some(2_025));

    let started = w.log().matches("streaming changes").count();
    w.start(&files).await;
    wait_log(&w, "streaming changes", started + 1).await;
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('stale-1', 'execute-snapshot', \
         '{\"data-collections\": [\"retail.orders_info\"]}')",
    )
    .await
    .expect("signal");
    wait_log(
        &w,
        "complete: 25 rows that the source no longer has were removed",
        1,
    )
    .await;
    insert(&pg, 1).await;
    assert_eq!(converge(&mut w, &files, &pg, &duck).await, 2_001);
    {
        let conn = duckdb::Connection::open(&duck).expect("open DuckDB");
        let (state, removed): (String, i64) = conn
            .query_row(
                "SELECT state, removed FROM __sluice_snapshots WHERE method = 'incremental'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the incremental snapshot's bookkeeping");
        assert_eq!((state.as_str(), removed), ("complete", 25));
        let seen: i64 = conn
            .query_row(
                "SELECT count(*) FROM duckdb_tables() WHERE starts_with(table_name, '__sluice_seen_')",
                [],
                |r| r.get(0),
            )
            .expect("tables");
        assert_eq!(seen, 0, "the keys it saw are dropped at its end");
    }

    // PostgreSQL's table emptied (streamed), DuckDB's with stale rows: the
    // snapshot finds no row, and the table's next change carries its end.
    stale_rows(&duck, 10);
    let started = w.log().matches("streaming changes").count();
    w.start(&files).await;
    wait_log(&w, "streaming changes", started + 1).await;
    pg.batch_execute("DELETE FROM retail.orders_info")
        .await
        .expect("delete");
    pg.batch_execute(
        "INSERT INTO retail.debezium_signal VALUES ('stale-2', 'execute-snapshot', \
         '{\"data-collections\": [\"retail.orders_info\"]}')",
    )
    .await
    .expect("signal");
    wait_log(
        &w,
        "incremental snapshot stale-2: table retail.orders_info is empty",
        1,
    )
    .await;
    insert(&pg, 3).await;
    wait_log(
        &w,
        "complete: 10 rows that the source no longer has were removed",
        1,
    )
    .await;
    assert_eq!(converge(&mut w, &files, &pg, &duck).await, 3);
}

/// A table added to `table.include.list` of a running connector (a config
/// PUT, with a filtered publication) and then signalled: just that table is
/// read, while the other keeps streaming.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_added_to_a_running_connector_is_snapshotted_alone() {
    let (db, pg) = fresh_db("incadd").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute(SIGNAL_TABLE).await.expect("signal table");
    pg.batch_execute(
        "CREATE TABLE retail.customers (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO retail.customers SELECT g, 'customer ' || g FROM generate_series(1, 3000) g;",
    )
    .await
    .expect("customers");
    insert(&pg, 100).await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let mut src = source(&db, "inc_add", 1024);
    src["config"]["publication.autocreate.mode"] = json!("filtered");
    src["config"]["snapshot.mode"] = json!("initial");
    let (code, body) = w.post("/connectors", &src).await;
    assert_eq!(code, 201, "{body}");
    let records = w.path("records.jsonl");
    let file_sink = json!({"name": "records", "config": {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
        "file": records.display().to_string(),
        "topics.regex": "myserver\\.retail\\.(orders_info|customers)",
        "sluice.file.format": "record",
    }});
    let (code, body) = w.post("/connectors", &file_sink).await;
    assert_eq!(code, 201, "{body}");
    wait_log(&w, "streaming changes", 1).await;

    // The longer list: the task restarts with it.
    let mut config = src["config"].clone();
    config["table.include.list"] = json!("retail.orders_info,retail.customers");
    let (code, body) = w.put("/connectors/pg-orders-source/config", &config).await;
    assert_eq!(code, 200, "{body}");
    wait_log(&w, "streaming changes", 2).await;
    let (code, body) = w
        .post(
            "/connectors/pg-orders-source/signals",
            // Chunks ordered by a column that is not the key.
            &json!({"id": "add-1", "type": "execute-snapshot",
                    "data": {"data-collections": ["retail.customers"], "surrogate-key": "name"}}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    // Orders keep streaming meanwhile.
    insert(&pg, 10).await;
    wait_log(&w, "incremental snapshot add-1 completed", 1).await;
    pg.batch_execute("UPDATE retail.customers SET name = 'renamed' WHERE id = 1")
        .await
        .expect("update");
    insert(&pg, 1).await;
    let deadline = Instant::now() + LONG;
    let count = |what: &str, op: &str| {
        std::fs::read_to_string(&records)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["topic"] == what && r["value"]["payload"]["op"] == op)
            .count()
    };
    while count("myserver.retail.orders_info", "c") < 11
        || count("myserver.retail.customers", "u") < 1
    {
        assert!(
            Instant::now() < deadline,
            "orders created {}, customers updated {}\n{}",
            count("myserver.retail.orders_info", "c"),
            count("myserver.retail.customers", "u"),
            tail(&w.log(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The initial snapshot read the orders only; the signal, the customers
    // only, each row once, in the order of the surrogate key.
    assert_eq!(count("myserver.retail.orders_info", "r"), 100);
    assert_eq!(count("myserver.retail.customers", "r"), 3000);
    let names: Vec<String> = std::fs::read_to_string(&records)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["topic"] == "myserver.retail.customers" && r["value"]["payload"]["op"] == "r")
        .filter_map(|r| {
            r["value"]["payload"]["after"]["name"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 3000, "each row once");
    // The reads came in the surrogate key's order (PostgreSQL's collation
    // sorts the same names).
    let sorted: Vec<String> = pg
        .query("SELECT n FROM unnest($1::text[]) n ORDER BY n", &[&names])
        .await
        .expect("sorted names")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(sorted == names, "the reads are not in surrogate-key order");
    assert_eq!(w.stop(), Some(0));
}

/// Debezium's kafka signal channel: a signal sent to `signal.kafka.topic`
/// before the task streams (it waits) and one keyed for another connector
/// (ignored); the worker itself transports in process.
#[tokio::test(flavor = "multi_thread")]
async fn the_kafka_signal_channel_starts_an_incremental_snapshot() {
    use sluice_connect::sluice_kafka::{Admin, KafkaConfig, Producer};
    let tansu = sluice_testkit::tansu::Tansu::start();
    let (db, pg) = fresh_db("inckafka").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 2_000).await;
    let mut kcfg = KafkaConfig::new(tansu.bootstrap());
    kcfg.connect_timeout = Duration::from_secs(20);
    let admin = Admin::connect(&kcfg).await.expect("admin");
    admin
        .ensure_topic("myserver-signal", 1, 1, &[])
        .await
        .expect("signal topic");
    let producer = Producer::connect(&kcfg).await.expect("producer");
    let send = |key: &str, value: serde_json::Value| {
        let record = sluice_core::Record {
            topic: "myserver-signal".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_string().into_bytes()),
            headers: Vec::new(),
        };
        let producer = producer.clone();
        async move {
            producer
                .send(&record)
                .await
                .expect("send")
                .await
                .expect("delivered");
        }
    };
    // Sent before the connector exists.
    send(
        "another-prefix",
        json!({"type": "log", "data": {"message": "not for this connector"}}),
    )
    .await;
    send(
        "myserver",
        json!({"type": "execute-snapshot", "data": {"data-collections": ["retail.orders_info"]}}),
    )
    .await;
    let mut w = Worker::new("");
    let mut src = common::orders_source("pg-orders-source", &db, "myserver", "inc_kafka");
    src["config"]["snapshot.mode"] = json!("no_data");
    src["config"]["signal.enabled.channels"] = json!("source,kafka");
    src["config"]["signal.kafka.bootstrap.servers"] = json!(tansu.bootstrap());
    let (files, duck) = start_with_duckdb(&mut w, &src).await;
    // The record's offset is the signal's id, as in Debezium.
    wait_log(&w, "incremental snapshot 1 completed", 1).await;
    assert!(
        !w.log().contains("not for this connector"),
        "a signal keyed for another connector was taken"
    );
    // The group committed it: a restart does not take it again.
    assert_eq!(w.stop(), Some(0));
    w.start(&files).await;
    send(
        "myserver",
        json!({"type": "log", "data": {"message": "second signal"}}),
    )
    .await;
    wait_log(&w, "second signal", 1).await;
    assert_eq!(
        w.log().matches("incremental snapshot 1 completed").count(),
        1,
        "the first signal was taken again after the restart"
    );
    let rows = converge(&mut w, &files, &pg, &duck).await;
    assert_eq!(rows, 2_000);
}

/// `read.only=true`: chunks bounded by their read's transaction snapshot
/// and the WAL position after it, nothing written to the database (a probe
/// slot sees no watermark), DuckDB equal to PostgreSQL under load.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_incremental_snapshot_writes_nothing_and_loses_nothing() {
    let (db, pg) = fresh_db("incro").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 20_000).await;
    pg.batch_execute("SELECT pg_create_logical_replication_slot('inc_ro_probe', 'test_decoding')")
        .await
        .expect("probe slot");
    let mut w = Worker::new("");
    let mut src = common::orders_source("pg-orders-source", &db, "myserver", "inc_ro");
    src["config"]["snapshot.mode"] = json!("no_data");
    src["config"]["read.only"] = json!("true");
    src["config"]["incremental.snapshot.chunk.size"] = json!("400");
    let (files, duck) = start_with_duckdb(&mut w, &src).await;
    wait_log(&w, "streaming changes", 1).await;
    let (stop_load, load) = load(&db);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = w
        .post(
            "/connectors/pg-orders-source/signals",
            &json!({"id": "ro-1", "type": "execute-snapshot",
                    "data": {"data-collections": ["retail.orders_info"]}}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    wait_log(&w, "incremental snapshot ro-1 completed", 1).await;
    stop_load.cancel();
    let statements = load.await.expect("load task");
    let rows = converge(&mut w, &files, &pg, &duck).await;
    let watermarks: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_logical_slot_peek_changes('inc_ro_probe', NULL, NULL) \
             WHERE data LIKE 'message:%__sluice%'",
            &[],
        )
        .await
        .expect("probe")
        .get(0);
    pg.batch_execute("SELECT pg_drop_replication_slot('inc_ro_probe')")
        .await
        .expect("drop probe");
    assert_eq!(watermarks, 0, "read.only wrote watermarks");
    eprintln!(
        "read-only incremental snapshot under load: {statements} statements, {rows} rows equal"
    );
}
