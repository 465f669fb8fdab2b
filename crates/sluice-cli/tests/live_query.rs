//! `sluice query` on a DuckDB file while a worker writes it: the worker
//! holds the file (DuckDB lets no other process open it), so the query goes
//! to the worker's REST listener and is answered there, read-only, while
//! ingestion goes on. Real PostgreSQL, a real worker process, real DuckDB.

mod common;
mod worker;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fresh_db, sluice_bin, LONG};
use worker::Worker;

async fn insert(pg: &tokio_postgres::Client, n: i64, city: &str) {
    pg.execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT g % 10, 100 + g % 7, $2, '2020-10-09 07:23:10' FROM generate_series(1, $1::bigint) g",
        &[&n, &city],
    )
    .await
    .expect("insert");
}

/// `sluice query ARGS...`: exit code, standard output, standard error.
fn query(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sluice_bin())
        .arg("query")
        .args(args)
        .output()
        .expect("run sluice query");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asks until the answer contains `want` (the sink catches up).
async fn until(args: &[&str], want: &str) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let (code, out, err) = query(args);
        if code == 0 && out.contains(want) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "sluice query {args:?} never answered {want:?}: exit {code}\n{out}\n{err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_the_worker_writes_is_queried_through_the_worker_while_ingestion_goes_on() {
    let (db, pg) = fresh_db("livequery").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 100, "Austin").await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let duck = w.path("orders.duckdb");
    let file = duck.display().to_string();
    let sink = common::orders_duckdb_sink("duck", &file, "shop");
    assert_eq!(w.post("/connectors", &sink).await.0, 201);
    let source = common::orders_source("pg", &db, "shop", "live_query");
    assert_eq!(w.post("/connectors", &source).await.0, 201);

    // The snapshot, then changes streamed while the worker runs: the file
    // stays the worker's, and each answer is current.
    let sql = "SELECT count(*) AS n, sum(amount) AS total FROM orders";
    until(&[&file, sql], "100").await;
    // DuckDB itself refuses a second process: that is why the worker answers.
    let direct = duckdb::Connection::open_with_flags(
        &duck,
        duckdb::Config::default()
            .access_mode(duckdb::AccessMode::ReadOnly)
            .expect("config"),
    );
    assert!(direct.is_err(), "the worker should hold the file");
    insert(&pg, 50, "Boston").await;
    let out = until(&[&file, "SELECT count(*) AS n FROM orders"], "150").await;
    assert!(out.contains('n'), "{out}");
    // KQL, with a chart, through the worker; the chart comes back as a file.
    let svg = w.path("cities.svg");
    let out = until(
        &[
            "--kql",
            &file,
            "orders | summarize n = count() by city | sort by city asc | render columnchart",
            "--out",
            &svg.display().to_string(),
        ],
        "Boston",
    )
    .await;
    assert!(
        out.contains("Austin") && out.contains("100") && out.contains("50"),
        "{out}"
    );
    let drawn = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(
        drawn.starts_with("<svg") || drawn.contains("<svg"),
        "{drawn}"
    );
    // JSON output keeps numbers as numbers.
    let (code, out, err) = query(&[
        "--format",
        "json",
        &file,
        "SELECT count(*) AS n FROM orders WHERE city = 'Boston'",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"n\":50"), "{out}");

    // Read-only: statements that change the file are refused, and nothing
    // was changed.
    let (code, _, err) = query(&[&file, "DELETE FROM orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("only one query that returns rows"), "{err}");
    let (code, _, err) = query(&[
        &file,
        &format!(
            "SELECT 1); COPY (SELECT 1) TO '{}'; SELECT * FROM (SELECT 1",
            w.path("x.csv").display()
        ),
    ]);
    assert_ne!(code, 0, "a second statement must not run");
    assert!(!w.path("x.csv").exists(), "{err}");
    let (code, _, err) = query(&["--write", &file, "DELETE FROM orders"]);
    assert_ne!(code, 0);
    assert!(err.contains("--write needs the worker stopped"), "{err}");
    until(&[&file, "SELECT count(*) AS n FROM orders"], "150").await;

    // A file the worker does not hold is named in the answer.
    let other = w.path("other.duckdb").display().to_string();
    let url = format!("http://127.0.0.1:{}", w.port);
    let (code, _, err) = query(&["--worker", &url, &other, "SELECT 1"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no sink of this worker holds") && err.contains("orders.duckdb"),
        "{err}"
    );

    // Once the worker stops, the file opens directly again and the side
    // file naming the worker is gone.
    assert_eq!(w.stop(), Some(0));
    assert!(!Path::new(&format!("{file}.sluice-worker")).exists());
    let (code, out, err) = query(&[&file, "SELECT count(*) AS n FROM orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("150"), "{out}");
}
