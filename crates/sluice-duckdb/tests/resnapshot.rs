//! PostgreSQL → Sluice worker (in-process transport, real PostgreSQL
//! source) → DuckDB, through crashes: a worker killed early in the initial
//! snapshot, rows deleted while it is down, and the snapshot taken again
//! leave DuckDB equal to PostgreSQL row by row; a column widened at the
//! source reaches DuckDB; large values flow through.
//!
//! The kill drops the worker's runtime with everything in flight (no
//! orderly stop, no final flush), as a `kill -9` leaves the files.
//! `SLUICE_RESNAPSHOT_ROWS` sets the size of the table killed mid-snapshot
//! (default 200,000).

use std::path::Path;
use std::time::Duration;

use duckdb::Connection;
use serde_json::{json, Value as Json};
use sluice_connect::config_files::{load_connector, load_props};
use sluice_connect::{Registry, Worker};
use tokio_util::sync::CancellationToken;

/// A worker on its own runtime so that it can be killed: dropping the
/// runtime drops every task mid-flight.
struct Killable {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(dir: &Path) -> Killable {
    // RUST_LOG=info shows the sink's and the source's steps.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let registry = Registry::new(vec![sluice_postgres::plugin(), sluice_duckdb::plugin()]);
    let props = load_props(&dir.join("worker.properties")).expect("worker props");
    let connectors = ["source", "duck"]
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

/// Writes the worker's and connectors' configuration into `dir`.
fn configure(dir: &Path, db: &str, port: u16, duck: &Path, extra_sink: Json) {
    let source = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": port.to_string(),
        "database.user": "postgres",
        "database.dbname": db,
        "topic.prefix": "test",
        "slot.name": format!("slot_{db}"),
        "publication.name": format!("pub_{db}"),
        "database.sslmode": "disable",
        "status.update.interval.ms": "500",
    });
    std::fs::write(
        dir.join("source.json"),
        json!({"name": "pg", "config": source}).to_string(),
    )
    .expect("write");
    let mut sink = json!({
        "connector.class": "duckdb",
        "topics.regex": "test\\.public\\..*",
        "duckdb.path": duck.display().to_string(),
        // Small transactions: the kill finds the snapshot half written.
        "flush.size.records": "500",
    });
    if let (Some(s), Some(e)) = (sink.as_object_mut(), extra_sink.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    std::fs::write(
        dir.join("duck.json"),
        json!({"name": "duck", "config": sink}).to_string(),
    )
    .expect("write");
    std::fs::write(
        dir.join("worker.properties"),
        format!(
            "offset.storage.file.filename={}\noffset.flush.interval.ms=100\n",
            dir.join("offsets.json").display()
        ),
    )
    .expect("write");
}

/// A database with `schema` applied, and a directory configured for a
/// worker that streams it into `sink.duckdb` (`extra_sink` added to the
/// sink's config).
struct Setup {
    pg: tokio_postgres::Client,
    dir: tempfile::TempDir,
    duck: std::path::PathBuf,
}

async fn setup(name: &str, schema: &str, extra_sink: Json) -> Setup {
    let c = sluice_testkit::shared();
    let db = c.create_database(name).await.expect("create database");
    let pg = c.connect(&db).await.expect("connect");
    pg.batch_execute(schema).await.expect("schema");
    let dir = tempfile::tempdir().expect("tempdir");
    let duck = dir.path().join("sink.duckdb");
    configure(dir.path(), &db, c.port(), &duck, extra_sink);
    Setup { pg, dir, duck }
}

/// The source takes a new snapshot at its next start.
fn snapshot_always(dir: &Path) {
    let source = dir.join("source.json");
    let mut cfg: Json =
        serde_json::from_slice(&std::fs::read(&source).expect("read")).expect("json");
    cfg["config"]["snapshot.mode"] = json!("always");
    std::fs::write(&source, cfg.to_string()).expect("write");
}

/// Opens the DuckDB file read-only (the sink's connection may be open).
fn read_only(db: &Path) -> Option<Connection> {
    let config = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)
        .ok()?;
    Connection::open_with_flags(db, config).ok()
}

fn count(db: &Path, table: &str) -> i64 {
    read_only(db)
        .and_then(|c| {
            c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .ok()
        })
        .unwrap_or(0)
}

fn strings(db: &Path, sql: &str) -> Vec<String> {
    let conn = Connection::open(db).expect("open duckdb");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

/// Whether the stored source offsets say a snapshot is complete: an
/// offset without `snapshot: true`, with an LSN.
fn snapshot_completed(offsets: &Path) -> bool {
    let text = std::fs::read_to_string(offsets).unwrap_or_default();
    let Ok(Json::Object(partitions)) = serde_json::from_str::<Json>(&text) else {
        return false;
    };
    !partitions.is_empty()
        && partitions
            .values()
            .all(|o| o.get("snapshot") != Some(&Json::Bool(true)) && o.get("lsn").is_some())
}

/// Waits until `sql` (one string) on the DuckDB file says `want`: the
/// sink itself wrote it (a source offset is stored once the transport has
/// a record, before any sink wrote it).
async fn wait_duck(db: &Path, sql: &str, want: &str) -> bool {
    sluice_testkit::eventually(Duration::from_secs(300), || {
        let db = db.to_path_buf();
        let sql = sql.to_owned();
        let want = want.to_owned();
        async move {
            read_only(&db)
                .and_then(|c| c.query_row(&sql, [], |r| r.get::<_, String>(0)).ok())
                .is_some_and(|got| got == want)
                .then_some(())
        }
    })
    .await
    .is_some()
}

/// Commits `sql` and returns its transaction id.
async fn commit(pg: &mut tokio_postgres::Client, sql: &str) -> i64 {
    let tx = pg.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    tx.batch_execute(sql).await.expect("change");
    tx.commit().await.expect("commit");
    xid
}

/// What the sink and the source stored, for failure messages.
fn state(dir: &Path, db: &Path) -> String {
    let snapshots = read_only(db)
        .and_then(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT concat_ws(' ', table_name, generation, method, opened_by, state, rows, removed) FROM __sluice_snapshots ORDER BY started_at",
                )
                .ok()?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .ok()?
                .filter_map(Result::ok)
                .collect::<Vec<_>>();
            Some(rows)
        })
        .unwrap_or_default();
    format!(
        "snapshots {snapshots:?}; rows big {} one {} small {}; offsets {}",
        count(db, "big"),
        count(db, "one"),
        count(db, "small"),
        std::fs::read_to_string(dir.join("offsets.json")).unwrap_or_default()
    )
}

async fn pg_rows(pg: &tokio_postgres::Client, table: &str) -> Vec<String> {
    pg.query(
        &format!("SELECT id::text || '|' || coalesce(v, 'NULL') FROM {table} ORDER BY id"),
        &[],
    )
    .await
    .expect("select")
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

fn duck_rows(db: &Path, table: &str) -> Vec<String> {
    strings(
        db,
        &format!("SELECT id::VARCHAR || '|' || coalesce(v, 'NULL') FROM {table} ORDER BY id"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_again_after_a_kill_removes_rows_deleted_meanwhile() {
    let rows: i64 = std::env::var("SLUICE_RESNAPSHOT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let Setup { mut pg, dir, duck } = setup(
        "resnap",
        &format!(
            "CREATE TABLE big (id int4 PRIMARY KEY, v text);
             INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, {rows}) g;
             CREATE TABLE one (id int4 PRIMARY KEY, v text); INSERT INTO one VALUES (1, 'only');
             CREATE TABLE small (id int4 PRIMARY KEY, v text);
             INSERT INTO small SELECT g, 's' || g FROM generate_series(1, 300) g;"
        ),
        json!({}),
    )
    .await;
    let d = dir.path();
    let offsets = d.join("offsets.json");

    // Killed early in the initial snapshot: the first rows in DuckDB come
    // long before the source has read the whole table.
    let w = start(d);
    let partial = sluice_testkit::eventually(Duration::from_secs(300), || {
        let duck = duck.clone();
        async move { (count(&duck, "big") >= 2_000).then_some(()) }
    })
    .await;
    w.kill();
    assert!(
        partial.is_some(),
        "DuckDB never got the first snapshot rows: {}",
        state(d, &duck)
    );
    let written = count(&duck, "big");
    assert!(
        written < rows && !snapshot_completed(&offsets),
        "the kill came after the snapshot ({written} of {rows} rows written)"
    );

    // While the worker is down: every 50th row deleted, one changed, one
    // added, and the one-row table emptied and filled again.
    pg.batch_execute(
        "DELETE FROM big WHERE id % 50 = 0; UPDATE big SET v = 'changed' WHERE id = 7;
         INSERT INTO big VALUES (-1, 'new'); DELETE FROM small WHERE id % 3 = 0;
         UPDATE one SET v = 'only again';",
    )
    .await
    .expect("changes while down");

    // The restart takes the snapshot again; a change after it shows when
    // everything before it is written.
    let w = start(d);
    commit(&mut pg, "INSERT INTO small VALUES (10000, 'after');").await;
    let caught_up = wait_duck(&duck, "SELECT v FROM small WHERE id = 10000", "after").await;
    w.kill();
    assert!(
        caught_up,
        "the change after the snapshot never reached DuckDB: {}",
        state(d, &duck)
    );

    for table in ["big", "one", "small"] {
        let expected = pg_rows(&pg, table).await;
        let got = duck_rows(&duck, table);
        assert_eq!(got.len(), expected.len(), "rows of {table}");
        let wrong: Vec<_> = got
            .iter()
            .zip(&expected)
            .filter(|(g, e)| g != e)
            .take(5)
            .collect();
        assert!(wrong.is_empty(), "{table}: first differences {wrong:?}");
    }
    // The interrupted snapshot's rows that PostgreSQL deleted meanwhile
    // were removed by the swap, and no staging table is left.
    let removed = strings(
        &duck,
        "SELECT coalesce(sum(removed), 0)::VARCHAR FROM __sluice_snapshots WHERE table_name = 'big' AND state = 'complete'",
    );
    let expected_removed = (1..=written).filter(|id| id % 50 == 0).count();
    let removed = removed[0].parse::<usize>().expect("number");
    assert!(
        removed > 0 && removed >= expected_removed,
        "removed {removed}, expected at least {expected_removed}"
    );
    assert_eq!(
        strings(
            &duck,
            "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, '__sluice_snapshot_')"
        ),
        Vec::<String>::new()
    );
}

/// A table emptied at the source while the worker was down has no record
/// in the next snapshot: the snapshot's last record names it, and its
/// DuckDB table is emptied in the same transaction, while a change
/// streamed into it after the snapshot stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_emptied_while_down_is_emptied_by_the_next_snapshot() {
    let Setup { mut pg, dir, duck } = setup(
        "emptied",
        "CREATE TABLE a (id int4 PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 50) g;
         CREATE TABLE gone (id int4 PRIMARY KEY, v text);
         INSERT INTO gone SELECT g, 'g' || g FROM generate_series(1, 40) g;
         CREATE TABLE never (id int4 PRIMARY KEY, v text);",
        json!({}),
    )
    .await;
    let d = dir.path();
    let w = start(d);
    assert!(
        wait_duck(&duck, "SELECT count(*)::VARCHAR FROM gone", "40").await,
        "the first snapshot never reached DuckDB: {}",
        state(d, &duck)
    );
    commit(&mut pg, "INSERT INTO gone VALUES (41, 'streamed');").await;
    assert!(wait_duck(&duck, "SELECT count(*)::VARCHAR FROM gone", "41").await);
    w.kill();

    // While the worker is down: the table emptied, one row of the other
    // deleted; the restart takes a new snapshot.
    pg.batch_execute("DELETE FROM gone; DELETE FROM a WHERE id = 7;")
        .await
        .expect("changes while down");
    snapshot_always(d);
    let w = start(d);
    let emptied = wait_duck(&duck, "SELECT count(*)::VARCHAR FROM gone", "0").await;
    commit(&mut pg, "INSERT INTO gone VALUES (100, 'after');").await;
    commit(&mut pg, "INSERT INTO a VALUES (1000, 'after');").await;
    assert!(emptied, "the emptied table never was: {}", state(d, &duck));
    let caught_up = wait_duck(&duck, "SELECT v FROM a WHERE id = 1000", "after").await;
    w.kill();
    assert!(
        caught_up,
        "the change after the snapshot never reached DuckDB: {}",
        state(d, &duck)
    );
    for table in ["a", "gone"] {
        assert_eq!(
            duck_rows(&duck, table),
            pg_rows(&pg, table).await,
            "rows of {table}; {}",
            state(d, &duck)
        );
    }
    assert_eq!(duck_rows(&duck, "gone"), ["100|after"]);
    let emptied = strings(
        &duck,
        "SELECT method || ' ' || state || ' ' || removed FROM __sluice_snapshots WHERE table_name = 'gone' AND method = 'empty'",
    );
    assert_eq!(emptied, ["empty complete 41"], "{}", state(d, &duck));
}

/// A snapshot that reads no row at all has no record to carry its end:
/// the first change of each table it found empty says so instead (and the
/// offsets keep that until it is sent), so the DuckDB table is emptied
/// before that change's row, and rows deleted while nobody streamed them
/// do not stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_any_row_empties_tables_at_their_next_change() {
    let Setup { mut pg, dir, duck } = setup(
        "allempty",
        "CREATE TABLE gone (id int4 PRIMARY KEY, v text);
         INSERT INTO gone SELECT g, 'g' || g FROM generate_series(1, 40) g;",
        json!({}),
    )
    .await;
    let d = dir.path();
    let w = start(d);
    assert!(
        wait_duck(&duck, "SELECT count(*)::VARCHAR FROM gone", "40").await,
        "the first snapshot never reached DuckDB: {}",
        state(d, &duck)
    );
    w.kill();

    pg.batch_execute("DELETE FROM gone;")
        .await
        .expect("changes while down");
    snapshot_always(d);
    let w = start(d);
    // The new snapshot is complete once its offset names the empty table.
    let offsets = d.join("offsets.json");
    let stored = sluice_testkit::eventually(Duration::from_secs(120), || {
        let offsets = offsets.clone();
        async move {
            std::fs::read_to_string(&offsets)
                .ok()
                .filter(|t| t.contains("sluice_snapshot_empty") && t.contains("public.gone"))
                .map(|_| ())
        }
    })
    .await;
    assert!(
        stored.is_some(),
        "the snapshot never completed: {}",
        state(d, &duck)
    );
    assert_eq!(
        count(&duck, "gone"),
        40,
        "no record came, nothing changed yet"
    );
    commit(&mut pg, "INSERT INTO gone VALUES (100, 'after');").await;
    commit(&mut pg, "INSERT INTO gone VALUES (101, 'after');").await;
    let caught_up = wait_duck(&duck, "SELECT count(*)::VARCHAR FROM gone", "2").await;
    w.kill();
    assert!(caught_up, "the table was not emptied: {}", state(d, &duck));
    assert_eq!(duck_rows(&duck, "gone"), ["100|after", "101|after"]);
    let emptied = strings(
        &duck,
        "SELECT method || ' ' || state || ' ' || removed FROM __sluice_snapshots WHERE table_name = 'gone' AND method = 'empty'",
    );
    assert_eq!(emptied, ["empty complete 40"], "{}", state(d, &duck));
    // The offsets no longer hold it: a restart does not empty it again.
    let text = std::fs::read_to_string(&offsets).expect("offsets");
    assert!(!text.contains("public.gone"), "{text}");
}

/// Records unwrapped by ExtractNewRecordState with its default delete
/// handling (a delete becomes a null value) and `add.fields=op,lsn,snapshot`:
/// streamed deletes delete, and a snapshot taken again removes the rows
/// deleted while the worker was down, as it does for envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwrapped_records_delete_and_reconcile() {
    let Setup { mut pg, dir, duck } = setup(
        "unwrapped",
        "CREATE TABLE a (id int4 PRIMARY KEY, v text);
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 500) g;",
        json!({
            "transforms": "unwrap",
            "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
            "transforms.unwrap.add.fields": "op,lsn,snapshot",
        }),
    )
    .await;
    let d = dir.path();
    let w = start(d);
    assert!(
        wait_duck(&duck, "SELECT count(*)::VARCHAR FROM a", "500").await,
        "the first snapshot never reached DuckDB: {}",
        state(d, &duck)
    );
    commit(&mut pg, "DELETE FROM a WHERE id <= 10;").await;
    let deleted = wait_duck(&duck, "SELECT count(*)::VARCHAR FROM a", "490").await;
    w.kill();
    assert!(
        deleted,
        "streamed deletes were not applied: {}",
        state(d, &duck)
    );

    // While the worker is down: every 7th row deleted; the restart takes a
    // new snapshot.
    pg.batch_execute("DELETE FROM a WHERE id % 7 = 0;")
        .await
        .expect("changes while down");
    snapshot_always(d);
    let w = start(d);
    commit(&mut pg, "INSERT INTO a VALUES (1000, 'after');").await;
    let caught_up = wait_duck(&duck, "SELECT v FROM a WHERE id = 1000", "after").await;
    w.kill();
    assert!(
        caught_up,
        "the change after the snapshot never reached DuckDB: {}",
        state(d, &duck)
    );
    assert_eq!(
        duck_rows(&duck, "a"),
        pg_rows(&pg, "a").await,
        "{}",
        state(d, &duck)
    );
    let removed = strings(
        &duck,
        "SELECT coalesce(sum(removed), 0)::VARCHAR FROM __sluice_snapshots WHERE table_name = 'a' AND state = 'complete'",
    );
    // Rows 11..=500 that are multiples of 7.
    assert_eq!(removed, ["70"], "{}", state(d, &duck));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_widened_column_takes_values_the_old_type_could_not_hold() {
    // date → int below is incompatible: without the sink's setting the
    // task stops (see the sink tests).
    let Setup { mut pg, dir, duck } = setup(
        "widen",
        "CREATE TABLE w (id int4 PRIMARY KEY, n int4, p numeric(6,2), f float4, vc varchar(5),
                         ts timestamp, d date, v text);
         INSERT INTO w VALUES (1, 5, 1234.56, 1.5, 'abc', '2024-01-02 03:04:05', '2024-01-02', 'x');",
        json!({"duckdb.type.incompatible": "varchar"}),
    )
    .await;
    let d = dir.path();
    let w = start(d);
    commit(&mut pg, "INSERT INTO w (id, n) VALUES (2, 6);").await;
    assert!(
        wait_duck(&duck, "SELECT n::VARCHAR FROM w WHERE id = 2", "6").await,
        "first change never reached DuckDB"
    );
    // Widen every kind, and make one change incompatible (date → int),
    // then values only the new types hold.
    commit(
        &mut pg,
        "ALTER TABLE w ALTER COLUMN n TYPE bigint, ALTER COLUMN p TYPE numeric(12,4),
           ALTER COLUMN f TYPE float8, ALTER COLUMN vc TYPE text,
           ALTER COLUMN ts TYPE timestamptz USING ts AT TIME ZONE 'UTC',
           ALTER COLUMN d TYPE int4 USING 7, ALTER COLUMN id TYPE int8;
         INSERT INTO w VALUES (1099511627776, 1099511627776, 12345678.1234, 0.1, 'longer than five',
                               '2024-05-06 07:08:09+00', 42, 'y');",
    )
    .await;
    assert!(
        wait_duck(&duck, "SELECT v FROM w WHERE n = 1099511627776", "y").await,
        "the widened change never reached DuckDB"
    );
    w.kill();
    let types = strings(
        &duck,
        "SELECT column_name || ' ' || data_type FROM duckdb_columns() WHERE table_name = 'w' ORDER BY column_index",
    );
    assert_eq!(
        types,
        [
            "id BIGINT",
            "n BIGINT",
            "p DECIMAL(12,4)",
            "f DOUBLE",
            "vc VARCHAR",
            "ts TIMESTAMP WITH TIME ZONE",
            "d VARCHAR",
            "v VARCHAR",
        ]
    );
    assert_eq!(
        strings(
            &duck,
            "SELECT concat_ws('|', id, n, p, f, vc, ts AT TIME ZONE 'UTC', d, v) FROM w ORDER BY id"
        ),
        [
            "1|5|1234.5600|1.5|abc|2024-01-02 03:04:05|2024-01-02|x",
            "2|6",
            "1099511627776|1099511627776|12345678.1234|0.1|longer than five|2024-05-06 07:08:09|42|y",
        ]
    );
}

/// Text and bytea values of `SLUICE_BIG_VALUE_MB` (default 20 and 100) MB
/// flow through the real pipeline into DuckDB, each in a row of its own,
/// and the process's peak RSS is printed. `1024` means PostgreSQL's largest
/// value, 1 GiB less 1 KiB (a field's limit is 1 GiB less its header, and
/// the walsender's message adds a few bytes). bytea travels as hex text in
/// pgoutput, twice its size in one message that must stay under 1 GiB, so
/// bytea rows stop at 511 MiB: a larger one cannot be decoded by
/// PostgreSQL's walsender, whoever reads the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_flow_through() {
    let sizes: Vec<usize> = std::env::var("SLUICE_BIG_VALUE_MB")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20, 100]);
    let Setup { mut pg, dir, duck } = setup(
        "bigval",
        "CREATE TABLE b (id int4 PRIMARY KEY, v text, raw bytea);",
        json!({}),
    )
    .await;
    let d = dir.path();
    let w = start(d);
    let mut expected = Vec::new();
    for (i, mb) in sizes.iter().enumerate() {
        let text = if *mb >= 1024 {
            (1 << 30) - 1024
        } else {
            mb << 20
        };
        let id = 2 * i as i32 + 1;
        commit(
            &mut pg,
            &format!("INSERT INTO b VALUES ({id}, repeat('x', {text}), NULL);"),
        )
        .await;
        expected.push(format!("{id}:{text}:"));
        if *mb < 512 {
            let id = id + 1;
            commit(
                &mut pg,
                &format!(
                    "INSERT INTO b VALUES ({id}, NULL, convert_to(repeat('y', {n}), 'UTF8'));",
                    n = mb << 20
                ),
            )
            .await;
            expected.push(format!("{id}::{}", mb << 20));
        }
    }
    assert!(
        wait_duck(
            &duck,
            "SELECT count(*)::VARCHAR FROM b",
            &expected.len().to_string()
        )
        .await,
        "big values never reached DuckDB"
    );
    w.kill();
    eprintln!(
        "values of {sizes:?} MB: peak RSS of the process {} MiB",
        peak_rss_mib()
    );
    let got = strings(
        &duck,
        "SELECT id || ':' || coalesce(length(v)::VARCHAR, '') || ':' || coalesce(octet_length(raw)::VARCHAR, '') FROM b ORDER BY id",
    );
    assert_eq!(got, expected);
}

/// This process's peak resident set (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
