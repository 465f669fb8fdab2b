//! End-to-end tests of the PostgreSQL source through the real `sluice`
//! binary, its standalone worker and the file sink, against a throwaway
//! PostgreSQL cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value as Json};

const ORDERS: &str = "CREATE SCHEMA retail; CREATE TABLE retail.orders_info (
    orderid SERIAL NOT NULL PRIMARY KEY, custid INTEGER NOT NULL, amount INTEGER NOT NULL,
    city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);";

fn ops(recs: &[Json]) -> Vec<String> {
    recs.iter()
        .filter(|r| !r["value"].is_null())
        .map(|r| payload(r)["op"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_streaming_as_debezium_events() {
    let (db, pg) = fresh_db("basic").await;
    pg.batch_execute(ORDERS).await.unwrap();
    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES
         (306, 183, 'Austin', '2020-10-09 07:23:10'), (12, 150, 'Seattle', '2020-10-09 07:23:13')",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(&db, &[("table.include.list", "retail.orders_info")]);
    p.start();
    let topic = "test.retail.orders_info";
    let snap = p.wait_events(topic, 2, LONG);
    let first = payload(&snap[0]);
    assert_eq!(first["op"], "r");
    assert_eq!(first["before"], Json::Null);
    assert_eq!(first["after"]["custid"], 306);
    assert_eq!(first["after"]["city"], "Austin");
    assert_eq!(first["source"]["snapshot"], "first");
    assert_eq!(payload(&snap[1])["source"]["snapshot"], "last");
    assert_eq!(first["source"]["connector"], "postgresql");
    assert_eq!(first["source"]["name"], "test");
    assert_eq!(first["source"]["db"], db.as_str());
    assert_eq!(first["source"]["schema"], "retail");
    assert_eq!(first["source"]["table"], "orders_info");
    assert_eq!(key_payload(&snap[0]), &json!({"orderid": 1}));
    // The key and value schemas are Debezium's.
    assert_eq!(
        snap[0]["key"]["schema"]["name"],
        "test.retail.orders_info.Key"
    );
    assert_eq!(
        snap[0]["value"]["schema"]["name"],
        "test.retail.orders_info.Envelope"
    );

    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) VALUES (7, 101, 'Chicago', '2020-10-09 07:24:00');
         UPDATE retail.orders_info SET amount = 199 WHERE orderid = 1;
         DELETE FROM retail.orders_info WHERE orderid = 2;",
    )
    .await
    .unwrap();
    let recs = p.wait_until("streamed changes", LONG, |r| {
        r.iter().filter(|x| x["topic"] == topic).count() >= 6
    });
    let topic_recs: Vec<&Json> = recs.iter().filter(|x| x["topic"] == topic).collect();
    let c = payload(topic_recs[2]);
    assert_eq!(c["op"], "c");
    assert_eq!(c["after"]["city"], "Chicago");
    assert_eq!(c["source"]["snapshot"], "false");
    assert!(c["source"]["lsn"].as_i64().unwrap() > 0);
    assert!(c["source"]["txId"].as_i64().unwrap() > 0);
    let u = payload(topic_recs[3]);
    assert_eq!(u["op"], "u");
    assert_eq!(
        u["before"],
        Json::Null,
        "REPLICA IDENTITY DEFAULT has no before"
    );
    assert_eq!(u["after"]["amount"], 199);
    let d = payload(topic_recs[4]);
    assert_eq!(d["op"], "d");
    assert_eq!(d["before"]["orderid"], 2);
    assert_eq!(d["after"], Json::Null);
    // Tombstone: same key, null value.
    assert_eq!(key_payload(topic_recs[5]), &json!({"orderid": 2}));
    assert!(topic_recs[5]["value"].is_null());
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn handoff_under_concurrent_writes_is_exactly_once() {
    let (db, pg) = fresh_db("handoff").await;
    pg.batch_execute("CREATE TABLE seqs (id bigint PRIMARY KEY, payload text)")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO seqs SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.seqs"),
            ("snapshot.max.threads", "3"),
        ],
    );
    // Writers run before, during and after the snapshot.
    let writer_db = db.clone();
    let writer = tokio::spawn(async move {
        let c = cluster().connect(&writer_db).await.unwrap();
        for i in 20001..=23000i64 {
            c.execute("INSERT INTO seqs VALUES ($1, 'w')", &[&i])
                .await
                .unwrap();
        }
    });
    p.start();
    writer.await.unwrap();
    let recs = p.wait_events("test.public.seqs", 23000, LONG);
    let mut seen = BTreeMap::new();
    for r in &recs {
        let id = payload(r)["after"]["id"].as_i64().unwrap();
        *seen.entry(id).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 23000, "every row arrives");
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "no row twice: {:?}",
        &dups[..dups.len().min(10)]
    );
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_nothing() {
    let (db, pg) = fresh_db("kill9").await;
    pg.batch_execute("CREATE TABLE k (id bigint PRIMARY KEY, v int)")
        .await
        .unwrap();
    let mut p = Pipeline::new(&db, &[("table.include.list", "public.k")]);
    p.start();
    // Wait until streaming started (snapshot of an empty table is instant).
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    let mut next = 1i64;
    for round in 0..3 {
        for _ in 0..2000 {
            pg.execute("INSERT INTO k VALUES ($1, 0)", &[&next])
                .await
                .unwrap();
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        p.kill9();
        eprintln!(
            "offsets after kill {round}: {}",
            std::fs::read_to_string(p.path("offsets.json")).unwrap_or_default()
        );
        p.start();
    }
    for _ in 0..500 {
        pg.execute("INSERT INTO k VALUES ($1, 0)", &[&next])
            .await
            .unwrap();
        next += 1;
    }
    let total = (next - 1) as usize;
    let recs = p.wait_until("all rows after restarts", LONG, |r| {
        let ids: BTreeSet<i64> = r
            .iter()
            .filter(|x| x["topic"] == "test.public.k" && !x["value"].is_null())
            .filter_map(|x| payload(x)["after"]["id"].as_i64())
            .collect();
        ids.len() >= total
    });
    // Duplicates carry the same LSN as their first delivery.
    let mut lsn_of: BTreeMap<i64, i64> = BTreeMap::new();
    for r in recs
        .iter()
        .filter(|x| x["topic"] == "test.public.k" && !x["value"].is_null())
    {
        let id = payload(r)["after"]["id"].as_i64().unwrap();
        let lsn = payload(r)["source"]["lsn"].as_i64().unwrap();
        if let Some(prev) = lsn_of.insert(id, lsn) {
            assert_eq!(
                prev,
                lsn,
                "a duplicate of row {id} has another LSN; records of it: {:?}; log:\n{}",
                recs.iter()
                    .filter(|x| x["topic"] == "test.public.k" && payload(x)["after"]["id"] == id)
                    .map(|x| payload(x).clone())
                    .collect::<Vec<_>>(),
                tail(&p.log_text(), 80)
            );
        }
    }
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn update_changing_the_key_is_delete_tombstone_create() {
    let (db, pg) = fresh_db("keychange").await;
    pg.batch_execute("CREATE TABLE kc (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.kc"),
            ("snapshot.mode", "no_data"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    pg.batch_execute("INSERT INTO kc VALUES (1, 'a'); UPDATE kc SET id = 2 WHERE id = 1;")
        .await
        .unwrap();
    let recs = p.wait_until("key change", LONG, |r| r.len() >= 4);
    assert_eq!(ops(&recs), vec!["c", "d", "c"]);
    assert_eq!(key_payload(&recs[1]), &json!({"id": 1}));
    assert!(recs[2]["value"].is_null(), "tombstone for the old key");
    assert_eq!(key_payload(&recs[2]), &json!({"id": 1}));
    assert_eq!(key_payload(&recs[3]), &json!({"id": 2}));
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_full_toast_truncate_and_no_key() {
    let (db, pg) = fresh_db("misc").await;
    pg.batch_execute(
        "CREATE TABLE full_t (id int PRIMARY KEY, v text); ALTER TABLE full_t REPLICA IDENTITY FULL;
         CREATE TABLE toast_t (id int PRIMARY KEY, big text, n int);
         ALTER TABLE toast_t ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE nokey (a int, b text);",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public\\.(full_t|toast_t|nokey)"),
            ("skipped.operations", "none"),
            ("snapshot.mode", "no_data"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    let big = "x".repeat(100_000);
    pg.batch_execute(&format!(
        "INSERT INTO full_t VALUES (1, 'old'); UPDATE full_t SET v = 'new' WHERE id = 1;
         INSERT INTO toast_t VALUES (1, '{big}', 1); UPDATE toast_t SET n = 2 WHERE id = 1;
         INSERT INTO nokey VALUES (1, 'x'); TRUNCATE full_t;"
    ))
    .await
    .unwrap();
    let recs = p.wait_until("changes", LONG, |r| r.len() >= 6);
    let by_topic = |t: &str| -> Vec<&Json> { recs.iter().filter(|r| r["topic"] == t).collect() };
    let full = by_topic("test.public.full_t");
    assert_eq!(payload(full[1])["op"], "u");
    assert_eq!(
        payload(full[1])["before"]["v"],
        "old",
        "FULL identity carries before"
    );
    assert_eq!(payload(full[2])["op"], "t");
    assert!(full[2]["key"].is_null(), "truncate has a null key");
    let toast = by_topic("test.public.toast_t");
    assert_eq!(
        payload(toast[0])["after"]["big"].as_str().unwrap().len(),
        100_000
    );
    assert_eq!(
        payload(toast[1])["after"]["big"],
        "__debezium_unavailable_value"
    );
    assert_eq!(payload(toast[1])["after"]["n"], 2);
    let nokey = by_topic("test.public.nokey");
    assert!(
        nokey[0]["key"].is_null(),
        "a table without key has null keys"
    );
    assert_eq!(payload(nokey[0])["after"]["b"], "x");
    assert!(
        p.log_text().contains("REPLICA IDENTITY FULL"),
        "the fix for a keyless table is logged"
    );
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn alter_table_mid_stream_changes_the_schema() {
    let (db, pg) = fresh_db("alter").await;
    pg.batch_execute("CREATE TABLE al (id int PRIMARY KEY, a int)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.al"),
            ("snapshot.mode", "no_data"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    pg.batch_execute(
        "INSERT INTO al VALUES (1, 1);
         ALTER TABLE al ADD COLUMN b text;
         INSERT INTO al VALUES (2, 2, 'bee');
         ALTER TABLE al DROP COLUMN a;
         INSERT INTO al VALUES (3, 'three');
         ALTER TABLE al ALTER COLUMN b TYPE int USING 7;
         INSERT INTO al VALUES (4, 4);",
    )
    .await
    .unwrap();
    let recs = p.wait_events("test.public.al", 4, LONG);
    assert_eq!(payload(&recs[0])["after"], json!({"id": 1, "a": 1}));
    assert_eq!(
        payload(&recs[1])["after"],
        json!({"id": 2, "a": 2, "b": "bee"})
    );
    assert_eq!(payload(&recs[2])["after"], json!({"id": 3, "b": "three"}));
    assert_eq!(payload(&recs[3])["after"], json!({"id": 4, "b": 4}));
    let b_schema = |r: &Json| -> Json {
        r["value"]["schema"]["fields"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == "b")
            .cloned()
            .unwrap_or(Json::Null)
    };
    assert_eq!(b_schema(&recs[2])["type"], "string");
    assert_eq!(b_schema(&recs[3])["type"], "int32");
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn include_and_exclude_filters() {
    let (db, pg) = fresh_db("filters").await;
    pg.batch_execute(
        "CREATE SCHEMA s1; CREATE SCHEMA s2;
         CREATE TABLE s1.a (id int PRIMARY KEY, secret text, keep text);
         CREATE TABLE s1.b (id int PRIMARY KEY); CREATE TABLE s2.c (id int PRIMARY KEY);
         INSERT INTO s1.a VALUES (1, 'pw', 'k'); INSERT INTO s1.b VALUES (1); INSERT INTO s2.c VALUES (1);",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("schema.whitelist", "s1"),
            ("table.blacklist", "s1\\.b"),
            ("column.exclude.list", "s1\\.a\\.secret"),
        ],
    );
    p.start();
    let recs = p.wait_events("test.s1.a", 1, LONG);
    assert_eq!(payload(&recs[0])["after"], json!({"id": 1, "keep": "k"}));
    pg.batch_execute("INSERT INTO s1.b VALUES (2); INSERT INTO s2.c VALUES (2); INSERT INTO s1.a VALUES (2, 'pw', 'k2');")
        .await
        .unwrap();
    let recs = p.wait_events("test.s1.a", 2, LONG);
    assert_eq!(payload(&recs[1])["after"], json!({"id": 2, "keep": "k2"}));
    let all = p.records();
    assert!(
        all.iter().all(|r| r["topic"] == "test.s1.a"),
        "only s1.a is captured"
    );
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_advance_the_slot_of_an_idle_capture() {
    let (db, pg) = fresh_db("heartbeat").await;
    pg.batch_execute(
        "CREATE TABLE hb (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);",
    )
    .await
    .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.hb"),
            ("heartbeat.interval.ms", "300"),
            ("snapshot.mode", "no_data"),
            ("publication.autocreate.mode", "filtered"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    let before = slot_lsn(&pg, &p.slot).await;
    // Only changes to a table that is not captured.
    for i in 0..200 {
        pg.execute("INSERT INTO other VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let target: i64 = pg
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
        .await
        .unwrap()
        .get(0);
    let mut advanced = None;
    let deadline = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < deadline {
        let now = slot_lsn(&pg, &p.slot).await;
        if now >= target {
            advanced = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        advanced.is_some(),
        "slot stayed at {before}, WAL is at {target}; log:\n{}",
        tail(&p.log_text(), 30)
    );
    let recs = p.records();
    assert!(recs
        .iter()
        .any(|r| r["topic"] == "__debezium-heartbeat.test"));
    assert_eq!(p.stop(), Some(0));
}

/// The table-free heartbeat the README documents: `heartbeat.action.query`
/// writes a logical decoding message into the captured database, so its
/// slot keeps moving while nothing it captures changes; the messages stay
/// out of the topics by their prefix.
#[tokio::test(flavor = "multi_thread")]
async fn a_logical_message_heartbeat_keeps_an_idle_slot_moving_without_a_table() {
    let (db, pg) = fresh_db("hbmessage").await;
    pg.batch_execute("CREATE TABLE idle (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.idle"),
            ("heartbeat.interval.ms", "300"),
            (
                "heartbeat.action.query",
                "SELECT pg_logical_emit_message(false, 'heartbeat', now()::varchar)",
            ),
            ("message.prefix.exclude.list", "heartbeat"),
            ("snapshot.mode", "no_data"),
            ("publication.autocreate.mode", "filtered"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    // Twice: the slot passes the WAL written so far, again and again.
    for round in 0..2 {
        let target: i64 = pg
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[])
            .await
            .unwrap()
            .get(0);
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let now = slot_lsn(&pg, &p.slot).await;
            if now >= target {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: slot at {now}, WAL at {target}; log:\n{}",
                tail(&p.log_text(), 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    p.wait_until("a heartbeat record", LONG, |recs| {
        recs.iter()
            .any(|r| r["topic"] == "__debezium-heartbeat.test")
    });
    let log = p.log_text();
    assert!(!log.contains("running heartbeat.action.query"), "{log}");
    let recs = p.records();
    assert!(
        !recs
            .iter()
            .any(|r| r["topic"].as_str().is_some_and(|t| t.ends_with(".message"))),
        "heartbeat messages are excluded by their prefix"
    );
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_metadata_events() {
    let (db, pg) = fresh_db("txmeta").await;
    pg.batch_execute("CREATE TABLE tm (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = Pipeline::with_sink(
        &db,
        &[
            ("table.include.list", "public.tm"),
            ("provide.transaction.metadata", "true"),
            ("snapshot.mode", "no_data"),
        ],
        &[("topics.regex", "test\\..*")],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    pg.batch_execute("BEGIN; INSERT INTO tm VALUES (1); INSERT INTO tm VALUES (2); COMMIT;")
        .await
        .unwrap();
    // Order holds within a topic (as in Kafka), not across topics: the
    // transaction topic and the table's are read side by side.
    let of = |recs: &[Json], topic: &str| -> Vec<Json> {
        recs.iter()
            .filter(|r| r["topic"] == topic)
            .map(|r| payload(r).clone())
            .collect()
    };
    let recs = p.wait_until("tx events", LONG, |r| {
        of(r, "test.transaction").len() >= 2 && of(r, "test.public.tm").len() >= 2
    });
    assert_eq!(recs.len(), 4, "{recs:?}");
    let tx = of(&recs, "test.transaction");
    let rows = of(&recs, "test.public.tm");
    assert_eq!(tx[0]["status"], "BEGIN");
    let id = tx[0]["id"].clone();
    assert!(id.is_string(), "{id}");
    assert_eq!(rows[0]["transaction"]["id"], id);
    assert_eq!(rows[0]["transaction"]["total_order"], 1);
    assert_eq!(rows[0]["after"]["id"], 1);
    // As Debezium writes it: "<txId>:<LSN of the event>", so BEGIN's id is
    // its first change's, and later events of the transaction differ
    // only after the colon.
    let txid = |v: &Json| {
        v.as_str()
            .and_then(|s| s.split_once(':'))
            .map(|(t, lsn)| (t.to_string(), lsn.parse::<u64>().is_ok()))
    };
    let (begin_tx, begin_lsn) = txid(&id).expect("id is <txId>:<LSN>");
    assert!(begin_lsn, "{id}");
    assert_eq!(
        txid(&rows[1]["transaction"]["id"]),
        Some((begin_tx.clone(), true))
    );
    assert_ne!(rows[1]["transaction"]["id"], id, "the second change's LSN");
    assert_eq!(rows[1]["transaction"]["total_order"], 2);
    assert_eq!(rows[1]["after"]["id"], 2);
    assert_eq!(tx[1]["status"], "END");
    assert_eq!(txid(&tx[1]["id"]), Some((begin_tx, true)));
    assert_eq!(tx[1]["event_count"], 2);
    assert_eq!(p.stop(), Some(0));
}

/// 300,000 rows of 800 bytes in one transaction (240 MB of row data, more
/// than the RSS bound once they are events): the transaction streams
/// through with bounded memory, never held whole. (`bench/run` measures the
/// peak RSS of a one-million-row transaction in a release build.)
#[tokio::test(flavor = "multi_thread")]
async fn a_big_transaction_streams_with_bounded_memory() {
    let (db, pg) = fresh_db("bigtx").await;
    pg.batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, pad text)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.big"),
            ("snapshot.mode", "no_data"),
            // Memory is the point here: the file sink's record format spells
            // out every header, which only slows a debug build down.
            ("extended.headers.enabled", "false"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    pg.batch_execute(
        "INSERT INTO big SELECT g, repeat('p', 800) FROM generate_series(1, 300000) g",
    )
    .await
    .unwrap();
    let pid = p.pid().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    // One line per insert.
    while p.line_count() < 300_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; log:\n{}",
            tail(&p.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let peak = peak_rss_kib(pid).unwrap();
    assert!(
        peak < 256 * 1024,
        "peak RSS {} MiB through a 300,000-row, 240 MB transaction",
        peak / 1024
    );
    assert_eq!(p.stop(), Some(0));
}

async fn slot_lsn(pg: &tokio_postgres::Client, slot: &str) -> i64 {
    pg.query_one(
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .unwrap()
    .get::<_, i64>(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_transactions_commit_in_order_and_aborted_ones_emit_nothing() {
    let (db, pg) = fresh_db("streamed").await;
    // A tiny decoding budget makes PostgreSQL stream these transactions
    // while they are in progress (protocol 2).
    pg.batch_execute(&format!(
        "ALTER DATABASE {db} SET logical_decoding_work_mem = '64kB'; CREATE TABLE st (id int PRIMARY KEY, pad text);"
    ))
    .await
    .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.st"),
            ("snapshot.mode", "no_data"),
            ("sluice.spill.memory.bytes", "1048576"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| p.log_text().contains("protocol 2"));
    pg.batch_execute(
        "BEGIN; INSERT INTO st SELECT g, repeat('a', 100) FROM generate_series(1, 20000) g; ROLLBACK;
         BEGIN; INSERT INTO st SELECT g, repeat('b', 100) FROM generate_series(1, 20000) g;
           SAVEPOINT s1; INSERT INTO st SELECT g, 'gone' FROM generate_series(20001, 25000) g; ROLLBACK TO s1;
         COMMIT;
         INSERT INTO st VALUES (30000, 'after');",
    )
    .await
    .unwrap();
    let recs = p.wait_events("test.public.st", 20001, LONG);
    std::thread::sleep(Duration::from_millis(500));
    let recs2 = p.records();
    assert_eq!(
        recs2.len(),
        recs.len(),
        "nothing more than the committed rows"
    );
    for (i, r) in recs.iter().take(20000).enumerate() {
        assert_eq!(payload(r)["after"]["id"], (i + 1) as i64);
        assert!(payload(r)["after"]["pad"]
            .as_str()
            .unwrap()
            .starts_with('b'));
    }
    assert_eq!(payload(&recs[20000])["after"]["id"], 30000);
    assert_eq!(p.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_is_retried_without_loss() {
    let (db, pg) = fresh_db("dropconn").await;
    pg.batch_execute("CREATE TABLE dc (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        &db,
        &[
            ("table.include.list", "public.dc"),
            ("retriable.restart.connector.wait.ms", "500"),
        ],
    );
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    for i in 0..500 {
        pg.execute("INSERT INTO dc VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    // Kill every session of the connector, the walsender included.
    pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'sluice:%' AND datname = current_database()",
        &[],
    )
    .await
    .unwrap();
    for i in 500..1000 {
        pg.execute("INSERT INTO dc VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let recs = p.wait_until("all rows after reconnect", LONG, |r| {
        r.iter()
            .filter_map(|x| payload(x)["after"]["id"].as_i64())
            .collect::<BTreeSet<_>>()
            .len()
            >= 1000
    });
    let ids: Vec<i64> = recs
        .iter()
        .filter_map(|x| payload(x)["after"]["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 1000, "a reconnect in-process re-sends nothing");
    assert!(
        p.log_text().contains("restarting it in"),
        "the lost connection restarted the task: {}",
        p.log_text()
    );
    assert_eq!(p.stop(), Some(0));
}

/// A slot of the connector's own (its offsets say it created it) that an
/// old session still holds is retried within `errors.max.retries`, then
/// reported; a slot of that name the connector did not create is refused
/// at once, and left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_slot_held_by_another_process_is_retried_then_reported() {
    let (db, pg) = fresh_db("slotbusy").await;
    pg.batch_execute("CREATE TABLE sb (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut first = Pipeline::new(&db, &[("table.include.list", "public.sb")]);
    first.start();
    first.wait_until("startup", LONG, |_| {
        first.log_text().contains("streaming changes")
    });
    let second = |offsets: Option<&Pipeline>| {
        let p = Pipeline::new(
            &db,
            &[
                ("table.include.list", "public.sb"),
                ("errors.max.retries", "2"),
                ("retriable.restart.connector.wait.ms", "200"),
            ],
        );
        p.set_source("slot.name", &first.slot);
        if let Some(from) = offsets {
            std::fs::copy(from.path("offsets.json"), p.path("offsets.json")).unwrap();
        }
        p
    };

    // Not its slot: no stored offsets.
    let mut foreign = second(None);
    foreign.start_source_only();
    let code = foreign.wait_exit(LONG);
    let log = foreign.log_text();
    assert_eq!(code, Some(1), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("already exists"))
        .unwrap_or_else(|| panic!("no foreign slot error: {log}"));
    for part in [
        format!("replication slot '{}'", first.slot),
        format!("database '{db}'"),
        "plugin 'pgoutput'".to_string(),
        "in use by PID".to_string(),
        "Choose another slot.name".to_string(),
        format!("pg_drop_replication_slot('{}')", first.slot),
    ] {
        assert!(line.contains(&part), "no {part:?} in {line}");
    }
    assert!(!log.contains("restarting it in"), "not retried: {log}");

    // Its own slot (the same connector's offsets), held by the first
    // pipeline's session: busy, retried, then reported.
    let mut own = second(Some(&first));
    own.start_source_only();
    let code = own.wait_exit(LONG);
    let log = own.log_text();
    assert_eq!(code, Some(1), "{log}");
    for attempt in ["(attempt 1 of 2)", "(attempt 2 of 2)"] {
        let line = log
            .lines()
            .find(|l| l.contains(attempt))
            .unwrap_or_else(|| panic!("no restart {attempt}: {log}"));
        assert!(line.contains("is active for PID"), "{line}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("is active for PID") && l.contains("gave up after 2 restarts")),
        "{log}"
    );

    // The first pipeline kept its slot and streams on.
    pg.batch_execute("INSERT INTO sb VALUES (1)").await.unwrap();
    first.wait_events("test.public.sb", 1, LONG);
    assert_eq!(first.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_database_is_retried_without_loss() {
    let own = sluice_testkit::PgCluster::start().unwrap();
    let pg = own.connect("postgres").await.unwrap();
    pg.batch_execute("CREATE TABLE rs (id int PRIMARY KEY)")
        .await
        .unwrap();
    let mut p = Pipeline::new(
        "postgres",
        &[
            ("table.include.list", "public.rs"),
            ("retriable.restart.connector.wait.ms", "500"),
        ],
    );
    p.set_source("database.port", &own.port().to_string());
    p.start();
    p.wait_until("startup", LONG, |_| {
        p.log_text().contains("streaming changes")
    });
    for i in 0..100 {
        pg.execute("INSERT INTO rs VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    p.wait_events("test.public.rs", 100, LONG);
    own.stop().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    own.restart().unwrap();
    let pg = own.connect("postgres").await.unwrap();
    for i in 100..200 {
        pg.execute("INSERT INTO rs VALUES ($1)", &[&i])
            .await
            .unwrap();
    }
    let recs = p.wait_events("test.public.rs", 200, LONG);
    let ids: BTreeSet<i64> = recs
        .iter()
        .filter_map(|x| payload(x)["after"]["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(p.stop(), Some(0));
}
