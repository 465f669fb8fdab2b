//! Every misconfiguration gets a message naming the key, the value and what
//! is allowed, or the exact SQL that fixes the database.

mod common;

use std::time::Duration;

use common::*;

/// Runs the source alone until the worker stops: with no REST listener it
/// stops (exit code 1) once its only task failed. Next to a running sink
/// it would keep running, the failure shown in the task's status.
fn run_to_exit(p: &mut Pipeline) -> (Option<i32>, String) {
    p.start_source_only();
    let code = p.wait_exit(Duration::from_secs(60));
    (code, p.log_text())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_reported_before_anything_starts() {
    let (db, _pg) = fresh_db("badkeys").await;
    let mut p = Pipeline::new(
        &db,
        &[
            ("snapshot.mode", "sometimes"),
            ("table.include.list", "retail.(orders"),
            ("some.unknown.key", "1"),
        ],
    );
    p.set_source("topic.prefix", "");
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("snapshot.mode") && log.contains("sometimes") && log.contains("initial"),
        "{log}"
    );
    assert!(
        log.contains("table.include.list") && log.contains("retail.(orders"),
        "{log}"
    );
    assert!(log.contains("topic.prefix"), "{log}");
    assert!(
        log.contains("some.unknown.key"),
        "unknown keys are warned about: {log}"
    );
    // Nothing started: no slot was created.
    let admin = cluster().connect("postgres").await.unwrap();
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&p.slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_required_key_is_named() {
    let (db, _pg) = fresh_db("missing").await;
    let mut p = Pipeline::new(&db, &[]);
    let path = p.path("source.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    j["config"].as_object_mut().unwrap().remove("database.user");
    std::fs::write(&path, j.to_string()).unwrap();
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("database.user"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal2json_runs_on_pgoutput_with_one_warning_unless_the_slot_uses_another_plugin() {
    let (db, pg) = fresh_db("wal2json").await;
    pg.batch_execute("CREATE TABLE w (id int PRIMARY KEY); INSERT INTO w VALUES (1);")
        .await
        .unwrap();
    let mut p = Pipeline::new(&db, &[("plugin.name", "wal2json")]);
    p.start();
    p.wait_events("test.public.w", 1, LONG);
    let log = p.log_text();
    assert_eq!(log.matches("plugin.name=wal2json").count(), 1, "{log}");
    p.stop();

    let (db2, pg2) = fresh_db("otherplugin").await;
    let slot = format!("slot_{db2}");
    pg2.execute(
        "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
        &[&slot],
    )
    .await
    .unwrap();
    let mut p2 = Pipeline::new(&db2, &[("plugin.name", "wal2json")]);
    let (code, log) = run_to_exit(&mut p2);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("test_decoding") && log.contains("pg_drop_replication_slot"),
        "{log}"
    );
    // A slot Sluice did not create is never dropped.
    let plugin: String = pg2
        .query_one(
            "SELECT plugin::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plugin, "test_decoding");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_replication_privilege_tells_the_fix() {
    let (db, pg) = fresh_db("noreplpriv").await;
    pg.batch_execute("CREATE ROLE plain_user LOGIN; CREATE TABLE t (id int PRIMARY KEY);")
        .await
        .ok();
    let mut p = Pipeline::new(&db, &[]);
    p.set_source("database.user", "plain_user");
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ALTER ROLE \"plain_user\" REPLICATION"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publication_not_covering_a_table_tells_the_fix() {
    let (db, pg) = fresh_db("pubcover").await;
    let pubname = format!("pub_{db}");
    pg.batch_execute(&format!(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE PUBLICATION {pubname} FOR TABLE a;"
    ))
    .await
    .unwrap();
    let mut p = Pipeline::new(&db, &[("publication.autocreate.mode", "disabled")]);
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "ALTER PUBLICATION \"{pubname}\" ADD TABLE \"public\".\"b\""
        )),
        "{log}"
    );

    let (db2, _pg2) = fresh_db("pubmissing").await;
    let mut p2 = Pipeline::new(&db2, &[("publication.autocreate.mode", "disabled")]);
    let (code, log) = run_to_exit(&mut p2);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("CREATE PUBLICATION"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_not_logical_tells_the_fix() {
    let replica = sluice_testkit::PgCluster::start_with(&[("wal_level", "replica")]).unwrap();
    let mut p = Pipeline::new("postgres", &[]);
    p.set_source("database.port", &replica.port().to_string());
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ALTER SYSTEM SET wal_level = logical"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_database_is_retried_then_fails_with_the_reason() {
    let mut p = Pipeline::new(
        "postgres",
        &[
            ("errors.max.retries", "2"),
            ("retriable.restart.connector.wait.ms", "200"),
        ],
    );
    let port = sluice_testkit::free_port().unwrap();
    p.set_source("database.port", &port.to_string());
    let (code, log) = run_to_exit(&mut p);
    assert_eq!(code, Some(1), "{log}");
    // A lost connection is transient: restarted within errors.max.retries,
    // then reported with what to do.
    for attempt in ["(attempt 1 of 2)", "(attempt 2 of 2)"] {
        let line = log
            .lines()
            .find(|l| l.contains(attempt))
            .unwrap_or_else(|| panic!("no restart {attempt}: {log}"));
        assert!(
            line.contains("source connector 'pg-source' task 0 failed: ")
                && line.contains(&format!("127.0.0.1:{port}")),
            "{line}"
        );
    }
    assert!(!log.contains("(attempt 3"), "{log}");
    let gave_up = log
        .lines()
        .find(|l| l.contains("gave up after 2 restarts"))
        .unwrap_or_else(|| panic!("no final failure line: {log}"));
    assert!(gave_up.contains(&format!("127.0.0.1:{port}")), "{gave_up}");
    assert!(
        gave_up.contains("POST /connectors/pg-source/restart"),
        "{gave_up}"
    );
}
