//! Snapshot modes, slot lifecycle, key columns and heartbeat queries.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn slot_exists(slot: &str) -> bool {
    let admin = cluster().connect("postgres").await.unwrap();
    admin
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

fn ops_of(p: &Pipeline, topic: &str) -> Vec<String> {
    p.records()
        .iter()
        .filter(|r| r["topic"] == topic && !r["value"].is_null())
        .map(|r| payload(r)["op"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_only_snapshots_and_does_not_stream() {
    let (db, pg) = fresh_db("initialonly").await;
    pg.batch_execute("CREATE TABLE io (id int PRIMARY KEY); INSERT INTO io VALUES (1), (2);")
        .await
        .unwrap();
    let mut p = Pipeline::new(&db, &[("snapshot.mode", "initial_only")]);
    p.start();
    p.wait_events("test.public.io", 2, LONG);
    p.wait_until("task finished", LONG, |_| {
        p.log_text().contains("not streaming")
    });
    pg.batch_execute("INSERT INTO io VALUES (3)").await.unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ops_of(&p, "test.public.io"), vec!["r", "r"]);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn always_takes_a_new_snapshot_on_every_start() {
    let (db, pg) = fresh_db("always").await;
    pg.batch_execute("CREATE TABLE al (id int PRIMARY KEY); INSERT INTO al VALUES (1);")
        .await
        .unwrap();
    let mut p = Pipeline::new(&db, &[("snapshot.mode", "always")]);
    p.start();
    p.wait_events("test.public.al", 1, LONG);
    assert_eq!(p.stop(), Some(0));
    p.start();
    p.wait_events("test.public.al", 2, LONG);
    assert_eq!(ops_of(&p, "test.public.al"), vec!["r", "r"]);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_slot_is_an_error_unless_when_needed() {
    let (db, pg) = fresh_db("whenneeded").await;
    pg.batch_execute("CREATE TABLE wn (id int PRIMARY KEY); INSERT INTO wn VALUES (1);")
        .await
        .unwrap();
    let mut p = Pipeline::new(&db, &[("slot.drop.on.stop", "true")]);
    p.start();
    p.wait_events("test.public.wn", 1, LONG);
    pg.batch_execute("INSERT INTO wn VALUES (2)").await.unwrap();
    p.wait_events("test.public.wn", 2, LONG);
    assert_eq!(p.stop(), Some(0));
    assert!(
        !slot_exists(&p.slot).await,
        "slot.drop.on.stop drops the slot"
    );
    // The offsets say streaming had started, but the slot is gone. The
    // source runs alone: a worker without REST listener stops once its
    // only task failed.
    p.set_source("slot.drop.on.stop", "false");
    p.start_source_only();
    let code = p.wait_exit(LONG);
    let log = p.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("snapshot.mode=when_needed"), "{log}");
    p.set_source("snapshot.mode", "when_needed");
    p.start();
    p.wait_events("test.public.wn", 4, LONG);
    assert_eq!(ops_of(&p, "test.public.wn"), vec!["r", "c", "r", "r"]);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn message_key_columns_choose_the_key() {
    let (db, pg) = fresh_db("keycols").await;
    pg.batch_execute(
        "CREATE TABLE kc (id int PRIMARY KEY, a int, b text); INSERT INTO kc VALUES (1, 10, 'x');",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(&db, &[("message.key.columns", "public.kc:a,b")]);
    p.start();
    let recs = p.wait_events("test.public.kc", 1, LONG);
    assert_eq!(key_payload(&recs[0]), &json!({"a": 10, "b": "x"}));
    assert_eq!(recs[0]["key"]["schema"]["name"], "test.public.kc.Key");
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_action_query_runs() {
    let (db, pg) = fresh_db("hbaction").await;
    pg.batch_execute("CREATE TABLE hb_log (ts timestamptz DEFAULT now())")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("heartbeat.interval.ms", "200"),
            (
                "heartbeat.action.query",
                "INSERT INTO hb_log DEFAULT VALUES",
            ),
            ("table.include.list", "public.nothing"),
            ("publication.autocreate.mode", "filtered"),
        ],
    );
    p.start();
    p.wait_until("heartbeats", LONG, |r| {
        r.iter()
            .filter(|x| x["topic"] == "__debezium-heartbeat.test")
            .count()
            >= 2
    });
    let n: i64 = pg
        .query_one("SELECT count(*) FROM hb_log", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n >= 2, "the action query ran {n} times");
    let hb = p
        .records()
        .into_iter()
        .find(|x| x["topic"] == "__debezium-heartbeat.test")
        .unwrap();
    assert_eq!(key_payload(&hb), &json!({"serverName": "test"}));
    assert!(payload(&hb)["ts_ms"].as_i64().unwrap() > 0);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_tables_are_captured_under_their_root() {
    let (db, pg) = fresh_db("partitioned").await;
    pg.batch_execute(
        "CREATE TABLE pt (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE pt_eu PARTITION OF pt FOR VALUES IN ('eu');
         CREATE TABLE pt_us PARTITION OF pt FOR VALUES IN ('us');
         INSERT INTO pt VALUES (1, 'eu'), (2, 'us');",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(&db, &[("table.include.list", "public.pt")]);
    p.start();
    let recs = p.wait_events("test.public.pt", 2, LONG);
    assert!(recs.iter().all(|r| payload(r)["op"] == "r"));
    pg.batch_execute("INSERT INTO pt VALUES (3, 'us'); DELETE FROM pt WHERE id = 1;")
        .await
        .unwrap();
    let recs = p.wait_events("test.public.pt", 4, LONG);
    assert_eq!(payload(&recs[2])["op"], "c");
    assert_eq!(payload(&recs[2])["source"]["table"], "pt");
    assert_eq!(payload(&recs[3])["op"], "d");
    assert!(
        p.records().iter().all(|r| r["topic"] == "test.public.pt"),
        "no partition topics"
    );
    assert_eq!(p.stop(), Some(0));
}
