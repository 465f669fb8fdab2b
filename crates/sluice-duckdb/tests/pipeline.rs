//! PostgreSQL → Sluice worker (in-process transport, real PostgreSQL
//! source) → DuckDB: real column types and values, both modes, and a
//! restart in which the source re-sends events the sink already wrote.
//!
//! In-process, a source offset is stored once its record is in the local
//! log, not once a sink wrote it: the tests wait for DuckDB's rows.

use std::path::Path;
use std::time::Duration;

use duckdb::Connection;
use serde_json::{json, Value as Json};
use sluice_connect::config_files::{load_connector, load_props};
use sluice_connect::{Registry, Worker};
use tokio_util::sync::CancellationToken;

struct Pipeline {
    dir: tempfile::TempDir,
}

impl Pipeline {
    fn new(db: &str) -> Pipeline {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = sluice_testkit::shared();
        let source = json!({"name": "pg", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1",
            "database.port": c.port().to_string(),
            "database.user": "postgres",
            "database.dbname": db,
            "topic.prefix": "test",
            "slot.name": format!("slot_{db}"),
            "publication.name": format!("pub_{db}"),
            "database.sslmode": "disable",
            "status.update.interval.ms": "1000",
        }});
        let upsert = json!({"name": "duck-upsert", "config": {
            "connector.class": "duckdb",
            "topics": "test.public.kinds",
            "duckdb.path": dir.path().join("upsert.duckdb").display().to_string(),
        }});
        let append = json!({"name": "duck-append", "config": {
            "connector.class": "duckdb",
            "topics.regex": "test\\.public\\..*",
            "duckdb.path": dir.path().join("append.duckdb").display().to_string(),
            "duckdb.tables.topics.mapping": "[{'topic': 'test.public.kinds', 'table': 'kinds_log', 'mode': 'append'}]",
        }});
        for (name, v) in [("source", source), ("upsert", upsert), ("append", append)] {
            std::fs::write(dir.path().join(format!("{name}.json")), v.to_string()).expect("write");
        }
        std::fs::write(
            dir.path().join("worker.properties"),
            format!(
                "offset.storage.file.filename={}\noffset.flush.interval.ms=100\n\
                 key.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\n",
                dir.path().join("offsets.json").display()
            ),
        )
        .expect("write");
        Pipeline { dir }
    }

    fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.path().join(f)
    }

    /// Starts the worker.
    fn start(&self) -> Running {
        let registry = Registry::new(vec![sluice_postgres::plugin(), sluice_duckdb::plugin()]);
        let props = load_props(&self.path("worker.properties")).expect("worker props");
        let connectors = ["source", "upsert", "append"]
            .iter()
            .map(|n| load_connector(&self.path(&format!("{n}.json"))).expect("connector"))
            .collect::<Vec<_>>();
        let worker = Worker::new(&registry, &props, &connectors).expect("valid config");
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(worker.run(shutdown.clone()));
        Running {
            shutdown,
            run,
            offsets: self.path("offsets.json"),
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), sluice_connect::WorkerError>>,
    offsets: std::path::PathBuf,
}

impl Running {
    /// Waits until the committed source offset is past `lsn`: the events up
    /// to it are then in the local log (not necessarily in the sinks).
    async fn wait_offset(&self, lsn: i64) {
        let offsets = self.offsets.clone();
        let reached = sluice_testkit::eventually(Duration::from_secs(120), || {
            let offsets = offsets.clone();
            async move { (max_lsn(&offsets) > lsn).then_some(()) }
        })
        .await;
        assert!(
            reached.is_some(),
            "the source offset never passed LSN {lsn}"
        );
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.expect("worker task").expect("clean stop");
    }
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

/// A committed transaction: its id, and the WAL insert position right
/// after its commit.
#[derive(Clone, Copy)]
struct Committed {
    xid: i64,
    after: i64,
}

/// Runs `sql` in a transaction.
async fn change(pg: &mut tokio_postgres::Client, sql: &str) -> Committed {
    let tx = pg.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    tx.batch_execute(sql).await.expect("change");
    tx.commit().await.expect("commit");
    let after: i64 = pg
        .query_one("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8", &[])
        .await
        .expect("lsn")
        .get(0);
    Committed { xid, after }
}

/// Whether the stored source offset covers `c`: it is one of its events'
/// (`txId`), or a progress marker the source sent after the commit
/// (`lsn_commit` past it). A WAL position alone would not do: the slot may
/// move past a position while the transaction is still open.
fn covers(path: &Path, c: Committed) -> bool {
    fn walk(v: &Json, c: Committed) -> bool {
        match v {
            Json::Object(m) => {
                let tx = m.get("txId").and_then(Json::as_i64);
                let commit = m.get("lsn_commit").and_then(Json::as_i64);
                tx.is_some_and(|t| t >= c.xid)
                    || commit.is_some_and(|l| l >= c.after)
                    || m.values().any(|v| walk(v, c))
            }
            Json::Array(a) => a.iter().any(|v| walk(v, c)),
            Json::String(s) => serde_json::from_str::<Json>(s)
                .ok()
                .is_some_and(|inner| !inner.is_string() && walk(&inner, c)),
            _ => false,
        }
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<Json>(&t).ok())
        .is_some_and(|v| walk(&v, c))
}

/// Rows of `sql` (one string column) in DuckDB file `db`, read through a
/// read-only connection while the sink's own stays open; empty while the
/// file or the table is not there yet.
fn rows_now(db: &Path, sql: &str) -> Vec<String> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .expect("config");
    let Ok(conn) = Connection::open_with_flags(db, config) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// Waits until `sql` on DuckDB file `db` returns `expected`: the sink
/// wrote them.
async fn wait_rows(db: &Path, sql: &str, expected: &[&str]) {
    let reached = sluice_testkit::eventually(Duration::from_secs(120), || async {
        (rows_now(db, sql) == expected).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{} never returned {expected:?}; last: {:?}",
        db.display(),
        rows_now(db, sql)
    );
}

fn strings(db: &Path, sql: &str) -> Vec<String> {
    let conn = Connection::open(db).expect("open duckdb");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_land_in_duckdb_with_their_types_once() {
    let c = sluice_testkit::shared();
    let db = c.create_database("duck").await.expect("create database");
    let mut pg = c.connect(&db).await.expect("connect");
    pg.batch_execute(
        "CREATE TABLE kinds (
            id int4 PRIMARY KEY, i2 int2, i8 int8, n numeric(10,2), f4 float4, f8 float8,
            b bool, tx text, vc varchar(20), ba bytea, d date, tm time, ts timestamp,
            tstz timestamptz, j json, jb jsonb, u uuid, arr int[]);
         INSERT INTO kinds VALUES
           (1, -2, 9000000000, 12345.67, 1.5, 2.25, true, 'text', 'varchar', '\\xdead00',
            '2024-02-29', '12:34:56.5', '2024-02-29 12:34:56.000001', '2024-02-29 12:34:56+02',
            '{\"a\": 1}', '{\"b\": [1, 2]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, 'second', NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL);",
    )
    .await
    .expect("schema");
    let p = Pipeline::new(&db);
    let upsert = p.path("upsert.duckdb");
    let append = p.path("append.duckdb");
    let log_query = "SELECT concat_ws(',', id, __op, __deleted) FROM kinds_log ORDER BY __lsn, id";
    let running = p.start();
    // The snapshot is in the log once its offset is stored: the changes
    // below come after it.
    running.wait_offset(0).await;
    // Streamed changes, then a column added and one dropped at the source.
    change(
        &mut pg,
        "INSERT INTO kinds (id, tx) VALUES (3, 'three'); UPDATE kinds SET tx = 'first' WHERE id = 1; \
         DELETE FROM kinds WHERE id = 2;",
    )
    .await;
    change(
        &mut pg,
        "ALTER TABLE kinds ADD COLUMN extra text; ALTER TABLE kinds DROP COLUMN vc; \
         INSERT INTO kinds (id, tx, extra) VALUES (4, 'four', 'x4');",
    )
    .await;
    // Both sinks wrote everything (each reads the log in order: its last
    // change written means every earlier one was).
    wait_rows(
        &append,
        log_query,
        &[
            "1,r,false",
            "2,r,false",
            "3,c,false",
            "1,u,false",
            "2,d,true",
            "4,c,false",
        ],
    )
    .await;
    wait_rows(
        &upsert,
        "SELECT id || ':' || tx FROM kinds ORDER BY id",
        &["1:first", "3:three", "4:four"],
    )
    .await;
    running.stop().await;

    assert_eq!(
        strings(
            &upsert,
            "SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = 'kinds' ORDER BY column_index"
        ),
        [
            "id INTEGER", "i2 SMALLINT", "i8 BIGINT", "n DECIMAL(10,2)", "f4 FLOAT", "f8 DOUBLE",
            "b BOOLEAN", "tx VARCHAR", "vc VARCHAR", "ba BLOB", "d DATE", "tm TIME", "ts TIMESTAMP",
            "tstz TIMESTAMP WITH TIME ZONE", "j JSON", "jb JSON", "u UUID", "arr INTEGER[]",
            "extra VARCHAR",
        ]
    );
    assert_eq!(
        strings(
            &upsert,
            "SELECT concat_ws('|', id, i2, i8, n, f4, f8, b, tx, vc, hex(ba), d, tm, ts, \
             tstz AT TIME ZONE 'UTC', j->>'$.a', jb->>'$.b[1]', u, arr, coalesce(extra, '-')) \
             FROM kinds ORDER BY id"
        ),
        [
            "1|-2|9000000000|12345.67|1.5|2.25|true|first|varchar|DEAD00|2024-02-29|12:34:56.5|\
             2024-02-29 12:34:56.000001|2024-02-29 10:34:56|1|2|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|[1, NULL, 3]|-",
            "3|three|-",
            "4|four|x4",
        ]
    );
    let log = strings(&append, log_query);
    assert_eq!(
        log,
        [
            "1,r,false",
            "2,r,false",
            "3,c,false",
            "1,u,false",
            "2,d,true",
            "4,c,false"
        ]
    );

    // A restart resumes from the stored offset: no second snapshot, and
    // nothing written twice.
    let running = p.start();
    change(&mut pg, "INSERT INTO kinds (id, tx) VALUES (5, 'five');").await;
    change(&mut pg, "UPDATE kinds SET tx = 'five again' WHERE id = 5;").await;
    let expected = [
        "1,r,false",
        "2,r,false",
        "3,c,false",
        "1,u,false",
        "2,d,true",
        "4,c,false",
        "5,c,false",
        "5,u,false",
    ];
    wait_rows(&append, log_query, &expected).await;
    wait_rows(
        &upsert,
        "SELECT id || ':' || tx FROM kinds WHERE id = 5",
        &["5:five again"],
    )
    .await;
    running.stop().await;
    assert_eq!(strings(&append, log_query), expected);
    assert_eq!(
        strings(&upsert, "SELECT id || ':' || tx FROM kinds WHERE id = 5"),
        ["5:five again"]
    );
}

/// Runs a worker on its own runtime so that it can be killed: dropping the
/// runtime drops every task mid-flight, with no orderly stop.
struct Killable {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_killable(dir: &Path, connectors: &[&str]) -> Killable {
    let registry = Registry::new(vec![
        sluice_postgres::plugin(),
        sluice_duckdb::plugin(),
        sluice_connect::file_sink::plugin(),
    ]);
    let props = load_props(&dir.join("worker.properties")).expect("worker props");
    let connectors = connectors
        .iter()
        .map(|n| load_connector(&dir.join(format!("{n}.json"))).expect("connector"))
        .collect::<Vec<_>>();
    let worker = Worker::new(&registry, &props, &connectors).expect("valid config");
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let _run = rt.spawn(worker.run(CancellationToken::new()));
        let _ = killed.recv();
        // Blocking DuckDB calls in flight finish; nothing else runs again.
        rt.shutdown_timeout(Duration::from_secs(30));
    });
    Killable { kill, thread }
}

impl Killable {
    fn kill(self) {
        let _ = self.kill.send(());
        self.thread.join().expect("worker thread");
    }
}

/// Rows of the append table (read while the sink's connection is open).
fn log_rows(db: &Path) -> Vec<String> {
    rows_now(
        db,
        "SELECT concat_ws(',', id, v, __op) FROM k_log ORDER BY __lsn, id",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resent_after_a_kill_are_written_once() {
    let c = sluice_testkit::shared();
    let db = c
        .create_database("duckkill")
        .await
        .expect("create database");
    let mut pg = c.connect(&db).await.expect("connect");
    pg.batch_execute(
        "CREATE TABLE k (id int4 PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'one');",
    )
    .await
    .expect("schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let duck = d.join("log.duckdb");
    let events = d.join("events.jsonl");
    let write = |name: &str, v: Json| {
        std::fs::write(d.join(format!("{name}.json")), v.to_string()).expect("write");
    };
    write(
        "source",
        json!({"name": "pg", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1",
            "database.port": c.port().to_string(),
            "database.user": "postgres",
            "database.dbname": db,
            "topic.prefix": "test",
            "slot.name": format!("slot_{db}"),
            "publication.name": format!("pub_{db}"),
            "database.sslmode": "disable",
        }}),
    );
    // Every record is written to DuckDB as soon as it arrives.
    write(
        "duck",
        json!({"name": "duck", "config": {
            "connector.class": "duckdb",
            "topics": "test.public.k",
            "duckdb.path": duck.display().to_string(),
            "flush.size.records": "1",
            "duckdb.tables.topics.mapping": "[{'topic': 'test.public.k', 'table': 'k_log', 'mode': 'append'}]",
        }}),
    );
    write(
        "file",
        json!({"name": "file", "config": {
            "connector.class": "FileStreamSink", "topics": "test.public.k",
            "file": events.display().to_string(), "sluice.file.format": "record",
        }}),
    );
    // `flush_ms`: how often source offsets are stored.
    let worker_props = |flush_ms: u64| {
        std::fs::write(
            d.join("worker.properties"),
            format!(
                "offset.storage.file.filename={}\noffset.flush.interval.ms={flush_ms}\noffset.flush.timeout.ms=100\n\
                 key.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\n",
                d.join("offsets.json").display()
            ),
        )
        .expect("write");
    };
    worker_props(100);
    let offsets = d.join("offsets.json");
    let offset_past = |lsn: i64| {
        let offsets = offsets.clone();
        async move {
            sluice_testkit::eventually(Duration::from_secs(120), || {
                let offsets = offsets.clone();
                async move { (max_lsn(&offsets) > lsn).then_some(()) }
            })
            .await
            .is_some()
        }
    };

    // First run: the snapshot, committed.
    let w = start_killable(d, &["source", "duck"]);
    assert!(
        offset_past(0).await,
        "the snapshot's offset was never stored"
    );
    wait_rows(
        &duck,
        "SELECT concat_ws(',', id, v, __op) FROM k_log",
        &["1,one,r"],
    )
    .await;
    w.kill();

    // Second run: no source offset is stored in it (the interval is longer
    // than the run), while DuckDB writes the changes; then the worker is
    // killed.
    worker_props(3_600_000);
    let w = start_killable(d, &["source", "duck"]);
    let first = change(
        &mut pg,
        "INSERT INTO k VALUES (2, 'two'); UPDATE k SET v = 'uno' WHERE id = 1;",
    )
    .await;
    change(&mut pg, "INSERT INTO k VALUES (3, 'three');").await;
    let written = sluice_testkit::eventually(Duration::from_secs(120), || {
        let duck = duck.clone();
        async move { (log_rows(&duck).len() == 4).then_some(()) }
    })
    .await;
    w.kill();
    assert!(
        written.is_some(),
        "DuckDB never got the changes: {:?}",
        log_rows(&duck)
    );
    assert!(
        !covers(&offsets, first),
        "the killed run stored no source offset past the snapshot"
    );

    // Third run: the source sends the changes again, as the file sink (only
    // in this run, reading the log from its start) shows, and DuckDB keeps
    // one row per event.
    worker_props(100);
    let w = start_killable(d, &["source", "duck", "file"]);
    change(&mut pg, "INSERT INTO k VALUES (4, 'four');").await;
    let expected = ["1,one,r", "2,two,c", "1,uno,u", "3,three,c", "4,four,c"];
    // DuckDB reads the log in order: the last change written means the
    // re-sent ones before it were handled.
    let done = sluice_testkit::eventually(Duration::from_secs(120), || {
        let duck = duck.clone();
        async move {
            log_rows(&duck)
                .last()
                .is_some_and(|r| r == "4,four,c")
                .then_some(())
        }
    })
    .await;
    let seen = sluice_testkit::eventually(Duration::from_secs(120), || {
        let events = events.clone();
        async move { (read_lines(&events).len() >= 8).then_some(()) }
    })
    .await;
    w.kill();
    assert!(
        done.is_some(),
        "DuckDB never got the last change: {:?}",
        log_rows(&duck)
    );
    assert!(
        seen.is_some(),
        "the file sink wrote {:?}",
        read_lines(&events)
    );
    let in_log: Vec<String> = read_lines(&events)
        .iter()
        .filter_map(|r| r["value"]["payload"]["after"]["id"].as_i64())
        .map(|id| id.to_string())
        .collect();
    assert_eq!(
        in_log,
        ["1", "2", "1", "3", "2", "1", "3", "4"],
        "the log has the snapshot, the killed run's changes, the same changes re-sent, and the new one"
    );
    assert_eq!(log_rows(&duck), expected);
}

fn read_lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
