//! The worker runtime as a user meets it: a standalone `sluice connect`
//! with its REST API, the scenario's connectors posted in the scenario's
//! order, sinks deleted and created again, kill -9 in the middle of a
//! stream, a failing connector next to a healthy one, a slot of someone
//! else's, secrets going round, a full local log. Real PostgreSQL, real
//! processes, real DuckDB.

mod common;
mod worker;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cluster, fresh_db, insert_orders as insert, tail, LONG};
use serde_json::{json, Value as Json};
use worker::{converge, Worker};

const TOPIC: &str = "myserver.retail.orders_info";

/// Users that must give their password (scram-sha-256), whatever else the
/// test cluster trusts: their pg_hba lines go first.
async fn password_users() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let admin = cluster().connect("postgres").await.expect("admin");
        admin
            .batch_execute(
                "SET password_encryption = 'scram-sha-256';
                 CREATE ROLE rt_user LOGIN REPLICATION PASSWORD 'right';
                 CREATE ROLE rt_secret LOGIN REPLICATION PASSWORD 's3cr3t-value';",
            )
            .await
            .expect("roles");
        let hba: String = admin
            .query_one("SHOW hba_file", &[])
            .await
            .expect("hba")
            .get(0);
        let old = std::fs::read_to_string(&hba).expect("read hba");
        std::fs::write(
            &hba,
            format!("host all,replication rt_user,rt_secret 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .expect("write hba");
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .expect("reload");
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
}

/// Lets `user` read the scenario's table of the current database.
async fn grant(pg: &tokio_postgres::Client, user: &str) {
    pg.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA retail TO {user}; GRANT SELECT ON ALL TABLES IN SCHEMA retail TO {user};"
    ))
    .await
    .expect("grant");
}

/// The scenario's source config (Debezium 1.x names, as users post it).
fn source(db: &str, slot: &str, extra: &[(&str, &str)]) -> Json {
    let mut config = json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": cluster().port().to_string(),
        "database.user": "postgres",
        "database.dbname": db,
        "database.server.name": "myserver",
        "plugin.name": "wal2json",
        "table.whitelist": "retail.orders_info",
        "slot.name": slot,
        "publication.name": format!("pub_{slot}"),
        "database.sslmode": "disable",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter"
    });
    for (k, v) in extra {
        config[*k] = Json::String((*v).to_string());
    }
    json!({"name": "pg-orders-source", "config": config})
}

/// A DuckDB sink of the scenario's topic into table `orders`.
fn duck_sink(name: &str, path: &Path) -> Json {
    json!({"name": name, "config": {
        "connector.class": "duckdb",
        "duckdb.path": path.display().to_string(),
        "topics": TOPIC,
        "duckdb.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info', 'table': 'orders', 'mode': 'upsert'}]"
    }})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scenarios_order_source_first_loses_nothing() {
    let (db, pg) = fresh_db("rtorder").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 500).await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    // The source first: its snapshot has no sink to go to yet.
    let (code, body) = w.post("/connectors", &source(&db, "rt_order", &[])).await;
    assert_eq!(code, 201, "{body}");
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    insert(&pg, 100).await;
    // Let the source deliver (and commit) what it read before any sink exists.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let duck = w.path("orders.duckdb");
    let (code, body) = w.post("/connectors", &duck_sink("duck", &duck)).await;
    assert_eq!(code, 201, "{body}");
    assert!(
        !w.log().contains("no sink connector subscribes"),
        "{}",
        w.log()
    );
    insert(&pg, 50).await;
    // Created over REST: remembered, so the restarts of converge keep it.
    let n = converge(&mut w, &[], &pg, &duck).await;
    assert_eq!(n, 650);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_deleted_and_created_again_misses_nothing() {
    let (db, pg) = fresh_db("rtrecreate").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 200).await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let duck = w.path("orders.duckdb");
    let (code, _) = w.post("/connectors", &duck_sink("duck", &duck)).await;
    assert_eq!(code, 201);
    let (code, _) = w
        .post("/connectors", &source(&db, "rt_recreate", &[]))
        .await;
    assert_eq!(code, 201);
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    insert(&pg, 100).await;
    let (code, body) = w.delete("/connectors/duck").await;
    assert!(code == 204 || code == 200, "{code} {body}");
    // Changes while no sink exists.
    insert(&pg, 100).await;
    pg.execute(
        "UPDATE retail.orders_info SET amount = amount + 1000 WHERE orderid % 7 = 0",
        &[],
    )
    .await
    .expect("update");
    pg.execute("DELETE FROM retail.orders_info WHERE orderid % 11 = 0", &[])
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, _) = w.post("/connectors", &duck_sink("duck", &duck)).await;
    assert_eq!(code, 201);
    insert(&pg, 50).await;
    converge(&mut w, &[], &pg, &duck).await;
}

#[tokio::test(flavor = "multi_thread")]
/// The crash loop: twenty kill -9 at irregular moments, the first ones
/// during the initial snapshot (taken again after each, and reconciled),
/// inserts, updates and deletes all along; then DuckDB's table is compared
/// with PostgreSQL's row by row.
async fn kill_9_twenty_times_from_the_snapshot_on_leaves_duckdb_equal_to_postgres() {
    let (db, pg) = fresh_db("rtkill").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 30_000).await;
    let mut w = Worker::new("");
    let duck = w.path("orders.duckdb");
    std::fs::write(
        w.path("source.json"),
        source(&db, "rt_kill", &[]).to_string(),
    )
    .expect("write");
    std::fs::write(w.path("sink.json"), duck_sink("duck", &duck).to_string()).expect("write");
    let files = ["source.json", "sink.json"];
    w.start(&files).await;
    // Inserts, updates and deletes in small transactions, all along.
    let load_db = db.clone();
    let stop_load = tokio_util::sync::CancellationToken::new();
    let stopping = stop_load.clone();
    let load = tokio::spawn(async move {
        let pg = cluster().connect(&load_db).await.expect("connect");
        let mut i: i64 = 0;
        while !stopping.is_cancelled() {
            i += 1;
            let sql = match i % 10 {
                0..=5 => "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
                          SELECT g, 150, 'Seattle', '2020-10-09 08:00:00' FROM generate_series(1, 5) g"
                    .to_string(),
                6..=8 => format!(
                    "UPDATE retail.orders_info SET amount = amount + 1 WHERE orderid % 13 = {}",
                    i % 13
                ),
                _ => format!(
                    "DELETE FROM retail.orders_info WHERE orderid IN (SELECT orderid FROM retail.orders_info WHERE orderid % 17 = {} LIMIT 3)",
                    i % 17
                ),
            };
            pg.batch_execute(&sql).await.expect("load");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        i
    });
    // Deterministic but irregular moments.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut during_snapshot = 0;
    let count = |w: &Worker, what: &str| w.log().matches(what).count();
    let mut snapshots_begun = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if round < 3 {
            // The first kills land inside a snapshot: once this run's
            // snapshot has begun, a little later.
            let deadline = Instant::now() + LONG;
            while count(&w, "snapshot of 1 table(s)") <= snapshots_begun {
                assert!(Instant::now() < deadline, "{}", tail(&w.log(), 20));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            snapshots_begun = count(&w, "snapshot of 1 table(s)");
            tokio::time::sleep(Duration::from_millis(50 + seed % 300)).await;
        } else {
            if round == 3 {
                // Then one snapshot completes, and the rest land while
                // changes stream.
                let deadline = Instant::now() + LONG;
                while count(&w, "snapshot done") == 0 {
                    assert!(Instant::now() < deadline, "{}", tail(&w.log(), 20));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300 + seed % 1500)).await;
        }
        // In a snapshot: this run's began after the last one done.
        let log = w.log();
        if log.rfind("snapshot of 1 table(s)") > log.rfind("snapshot done") {
            during_snapshot += 1;
        }
        w.kill9();
        w.start(&files).await;
        eprintln!("kill -9 number {} done", round + 1);
    }
    assert!(
        during_snapshot > 0,
        "no kill landed in the initial snapshot: make the table bigger"
    );
    stop_load.cancel();
    let statements = load.await.expect("load task");
    let caught_up = Instant::now();
    let rows = converge(&mut w, &files, &pg, &duck).await;
    eprintln!(
        "crash loop: 20 kills ({during_snapshot} during the initial snapshot), {statements} statements, \
         {rows} rows compared, 0 missing, 0 extra, 0 wrong; equal within {:.1} s of the last kill (checked by stopping the worker at growing intervals)",
        caught_up.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_connector_is_failed_in_its_status_while_a_healthy_one_flows() {
    let (db, pg) = fresh_db("rtfail").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    password_users().await;
    grant(&pg, "rt_user").await;
    pg.batch_execute("CREATE PUBLICATION pub_rt_fail_bad FOR ALL TABLES;")
        .await
        .expect("publication");
    insert(&pg, 20).await;
    let mut w = Worker::new("");
    w.start(&[]).await;
    let duck = w.path("orders.duckdb");
    assert_eq!(
        w.post("/connectors", &duck_sink("duck", &duck)).await.0,
        201
    );
    assert_eq!(
        w.post("/connectors", &source(&db, "rt_fail_good", &[]))
            .await
            .0,
        201
    );
    // A second source with a password that the database refuses: created
    // (the check is its own concern) only when validation is bypassed, so
    // PUT it and let its task find out.
    let mut bad = source(
        &db,
        "rt_fail_bad",
        &[
            ("database.user", "rt_user"),
            ("database.password", "wrong"),
            ("database.server.name", "other"),
            ("publication.autocreate.mode", "disabled"),
        ],
    );
    bad["name"] = "bad-source".into();
    let (code, body) = w.post("/connectors", &bad).await;
    assert_eq!(code, 400, "creating it tries the login first: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database.password") && message.contains("refused the login"),
        "{body}"
    );
    assert!(
        !message.contains("wrong"),
        "the secret is not echoed: {body}"
    );
    // A worker started with it on the command line runs it, and reports it.
    std::fs::write(w.path("bad.json"), bad.to_string()).expect("write");
    w.stop();
    w.start(&["bad.json"]).await;
    let st = w.wait_task("bad-source", &["FAILED"]).await;
    let trace = st["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(
        trace.contains("bad-source") && trace.contains("password authentication failed"),
        "{st}"
    );
    // The healthy pipeline keeps flowing meanwhile.
    insert(&pg, 30).await;
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    let (_, sink) = w.get("/connectors/duck/status").await;
    assert_eq!(sink["tasks"][0]["state"], "RUNNING", "{sink}");
    // Fixed at the database; a restart of the failed task works.
    pg.batch_execute(
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE rt_user PASSWORD 'wrong'",
    )
    .await
    .expect("alter role");
    let (code, body) = w
        .post(
            "/connectors/bad-source/restart?includeTasks=true&onlyFailed=true",
            &json!({}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    w.wait_task("bad-source", &["RUNNING"]).await;
    converge(&mut w, &["bad.json"], &pg, &duck).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_of_someone_else_is_left_intact_with_a_clear_error() {
    let (db, pg) = fresh_db("rtforeign").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    pg.batch_execute("SELECT pg_create_logical_replication_slot('rt_foreign', 'pgoutput')")
        .await
        .expect("slot");
    let lsn_before: String = pg
        .query_one(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'rt_foreign'",
            &[],
        )
        .await
        .expect("slot lsn")
        .get(0);
    let mut w = Worker::new("");
    w.start(&[]).await;
    assert_eq!(
        w.post("/connectors", &source(&db, "rt_foreign", &[]))
            .await
            .0,
        201
    );
    let st = w.wait_task("pg-orders-source", &["FAILED"]).await;
    let trace = st["tasks"][0]["trace"].as_str().unwrap_or_default();
    for part in [
        "replication slot 'rt_foreign' already exists",
        &format!("database '{db}'"),
        "plugin 'pgoutput'",
        "another slot.name",
        "SELECT pg_drop_replication_slot('rt_foreign');",
    ] {
        assert!(trace.contains(part), "{part:?} not in {trace}");
    }
    assert!(!w.log().contains("dropping"), "{}", w.log());
    let lsn_after: String = pg
        .query_one(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'rt_foreign'",
            &[],
        )
        .await
        .expect("the slot is still there")
        .get(0);
    assert_eq!(lsn_before, lsn_after, "and untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_secret_put_back_keeps_the_stored_one() {
    let (db, pg) = fresh_db("rtsecret").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    password_users().await;
    grant(&pg, "rt_secret").await;
    pg.batch_execute("CREATE PUBLICATION pub_rt_secret FOR ALL TABLES")
        .await
        .expect("publication");
    let mut w = Worker::new("");
    w.start(&[]).await;
    let s = source(
        &db,
        "rt_secret",
        &[
            ("database.user", "rt_secret"),
            ("database.password", "s3cr3t-value"),
            ("publication.autocreate.mode", "disabled"),
        ],
    );
    assert_eq!(w.post("/connectors", &s).await.0, 201);
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    // The usual edit: GET, change one key, PUT back.
    let (code, mut config) = w.get("/connectors/pg-orders-source/config").await;
    assert_eq!(code, 200);
    assert_eq!(config["database.password"], "[hidden]", "{config}");
    config["snapshot.fetch.size"] = "5000".into();
    let (code, body) = w.put("/connectors/pg-orders-source/config", &config).await;
    assert_eq!(code, 200, "{body}");
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    insert(&pg, 3).await;
    // Remembered with the real secret: it logs in after a restart too.
    w.stop();
    w.start(&[]).await;
    let st = w
        .wait_task("pg-orders-source", &["RUNNING", "FAILED"])
        .await;
    assert_eq!(
        st["tasks"][0]["state"],
        "RUNNING",
        "{st}\n{}",
        tail(&w.log(), 30)
    );
    let stored = std::fs::read_to_string(w.path("connect.connectors.json")).expect("file");
    assert!(
        stored.contains("s3cr3t-value") && !stored.contains("[hidden]"),
        "{stored}"
    );
    assert!(!w.log().contains("s3cr3t-value"), "never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_created_connectors_survive_a_restart_and_delete_says_what_it_leaves() {
    let (db, pg) = fresh_db("rtremember").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    insert(&pg, 5).await;
    // Leftovers are checked again at the summary interval.
    let mut w = Worker::new("sluice.summary.interval.ms=500\n");
    w.start(&[]).await;
    assert_eq!(
        w.post("/connectors", &source(&db, "rt_remember", &[]))
            .await
            .0,
        201
    );
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    assert_eq!(w.stop(), Some(0));
    w.start(&[]).await;
    let (_, list) = w.get("/connectors").await;
    assert_eq!(list, json!(["pg-orders-source"]));
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    let (code, body) = w.delete("/connectors/pg-orders-source").await;
    assert_eq!(code, 200, "{body}");
    let left = body["left_behind"].to_string();
    assert!(
        left.contains("replication slot 'rt_remember'")
            && left.contains("SELECT pg_drop_replication_slot('rt_remember');"),
        "{body}"
    );
    // While the slot is there, the worker keeps saying so: in the log
    // and in its metrics, with the WAL the slot retains.
    let metrics_url = format!("http://127.0.0.1:{}/metrics", w.port);
    let reported = sluice_testkit::eventually(LONG, || async {
        let (_, m) = w.text(&metrics_url).await;
        let still = w.log().contains("still left by the deleted connector: replication slot 'rt_remember'");
        (still && m.contains("sluice_deleted_connector_retained_bytes{connector=\"pg-orders-source\",resource=\"rt_remember\"}"))
            .then_some(m)
    })
    .await;
    assert!(reported.is_some(), "{}", tail(&w.log(), 20));
    // The slot dropped by hand: no longer reported; the publication is.
    pg.execute("SELECT pg_drop_replication_slot('rt_remember')", &[])
        .await
        .expect("drop slot");
    let slot_gone = sluice_testkit::eventually(LONG, || async {
        let (_, m) = w.text(&metrics_url).await;
        (!m.contains("resource=\"rt_remember\"")
            && m.contains("sluice_deleted_connector_leftover{connector=\"pg-orders-source\",resource=\"pub_rt_remember\"} 1"))
        .then_some(())
    })
    .await;
    assert!(slot_gone.is_some(), "{}", tail(&w.log(), 20));
    // Everything removed: the worker says so once and reports nothing.
    pg.batch_execute("DROP PUBLICATION pub_rt_remember")
        .await
        .expect("drop publication");
    let gone = sluice_testkit::eventually(LONG, || async {
        let (_, m) = w.text(&metrics_url).await;
        (w.log()
            .contains("what the deleted connector left behind is gone")
            && !m.contains("sluice_deleted_connector"))
        .then_some(())
    })
    .await;
    assert!(gone.is_some(), "{}", tail(&w.log(), 20));
    assert_eq!(w.stop(), Some(0));
    w.start(&[]).await;
    assert_eq!(w.get("/connectors").await.1, json!([]), "deleted for good");
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_tries_the_database_and_names_each_key() {
    let (db, pg) = fresh_db("rtvalidate").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    let mut w = Worker::new("");
    w.start(&[]).await;
    let validate = |config: Json| {
        let w = &w;
        async move {
            let (code, body) = w
                .put(
                    "/connector-plugins/PostgresConnector/config/validate",
                    &config,
                )
                .await;
            assert_eq!(code, 200, "{body}");
            let mut errors = Vec::new();
            for c in body["configs"].as_array().into_iter().flatten() {
                for e in c["value"]["errors"].as_array().into_iter().flatten() {
                    errors.push((
                        c["value"]["name"].as_str().unwrap_or_default().to_string(),
                        e.as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
            errors
        }
    };
    let mut base = source(&db, "rt_validate", &[])["config"].clone();
    base["name"] = "pg-orders-source".into();
    assert_eq!(validate(base.clone()).await, vec![], "a good config");
    let mut wrong_port = base.clone();
    wrong_port["database.port"] = sluice_testkit::free_port()
        .expect("free port")
        .to_string()
        .into();
    let errors = validate(wrong_port).await;
    assert!(
        errors
            .iter()
            .any(|(k, e)| k == "database.hostname" && e.contains("cannot reach PostgreSQL")),
        "{errors:?}"
    );
    let mut no_table = base.clone();
    no_table["table.whitelist"] = "retail.ordrs_info".into();
    let errors = validate(no_table).await;
    assert!(
        errors.iter().any(|(k, e)| k == "table.whitelist"
            && e.contains("matches no table")
            && e.contains("retail.orders_info")),
        "{errors:?}"
    );
    let mut misspelt = base.clone();
    misspelt["table.include.lst"] = "retail.orders_info".into();
    let errors = validate(misspelt).await;
    assert!(
        errors
            .iter()
            .any(|(k, e)| k == "table.include.lst"
                && e.contains("did you mean 'table.include.list'")),
        "{errors:?}"
    );
}

/// The source stops in the middle of a transaction and sends the rest
/// again after its restart: the events sent again carry the same
/// `source.sequence` as before, so the DuckDB sink, which skips what it
/// already wrote by that position, takes them (it once skipped them: the
/// first transaction after a snapshot showed a null last commit, and the
/// restarted source showed the stored one).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_local_log_is_a_clear_error_and_nothing_is_lost_once_space_returns() {
    let (db, pg) = fresh_db("rtfull").await;
    pg.batch_execute(common::ORDERS).await.expect("schema");
    // Small segments, deleted as soon as every sink read them, in a log
    // that may hold 1 MiB.
    let mut w = Worker::new(
        "local.log.max.bytes=1048576\nlocal.log.segment.bytes=65536\nlocal.log.retention.bytes=1\n",
    );
    w.start(&[]).await;
    let duck = w.path("orders.duckdb");
    assert_eq!(
        w.post("/connectors", &duck_sink("duck", &duck)).await.0,
        201
    );
    // The sink waits: the log fills up.
    assert_eq!(w.put("/connectors/duck/pause", &json!({})).await.0, 202);
    assert_eq!(
        w.post(
            "/connectors",
            &source(
                &db,
                "rt_full",
                &[("retriable.restart.connector.wait.ms", "1000")]
            )
        )
        .await
        .0,
        201
    );
    w.wait_task("pg-orders-source", &["RUNNING"]).await;
    while !w.log().contains("streaming changes") {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    insert(&pg, 5000).await;
    let st = w
        .wait_task("pg-orders-source", &["RESTARTING", "FAILED"])
        .await;
    let trace = st["tasks"][0]["trace"].as_str().unwrap_or_default();
    assert!(
        trace.contains("is full") && trace.contains("local.log.max.bytes"),
        "{st}"
    );
    // Space returns: the sink reads, retention frees the log, the source
    // goes on from what was stored.
    assert_eq!(w.put("/connectors/duck/resume", &json!({})).await.0, 202);
    insert(&pg, 10).await;
    let rows = converge(&mut w, &[], &pg, &duck).await;
    assert_eq!(rows, 5010);
}
