//! End-to-end: PostgreSQL -> `sluice` (standalone worker over Kafka, a
//! throwaway tansu broker) -> file sink, with a kill -9 in the middle.

mod common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;
use sluice_connect::sluice_kafka::{Admin, KafkaConfig};
use sluice_testkit::tansu::Tansu;

const ORDERS: &str = "CREATE SCHEMA retail; CREATE TABLE retail.orders_info (
    orderid SERIAL NOT NULL PRIMARY KEY, custid INTEGER NOT NULL, amount INTEGER NOT NULL,
    city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);";

const TOPIC: &str = "myserver.retail.orders_info";

/// Rewrites the pipeline's configs for the Kafka transport: the source as
/// `myserver`, the sink on its topic, the worker on `bootstrap`.
fn over_kafka(p: &Pipeline, bootstrap: &str, rest_port: u16) {
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Map<String, Json>)| {
        let path = p.path(file);
        let mut j: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(j["config"].as_object_mut().unwrap());
        std::fs::write(path, j.to_string()).unwrap();
    };
    edit("source.json", &|c| {
        c.remove("topic.prefix");
        c.insert("database.server.name".into(), "myserver".into());
        c.insert("table.include.list".into(), "retail.orders_info".into());
    });
    edit("sink.json", &|c| {
        c.remove("topics.regex");
        c.insert("topics".into(), TOPIC.into());
    });
    let worker = p.path("worker.properties");
    let mut w = std::fs::read_to_string(&worker)
        .unwrap()
        .replace("sluice.rest.enabled=false\n", "");
    w.push_str(&format!(
        "bootstrap.servers={bootstrap}\n\
         consumer.session.timeout.ms=6000\n\
         consumer.heartbeat.interval.ms=500\n\
         listeners=http://127.0.0.1:{rest_port}\n"
    ));
    std::fs::write(worker, w).unwrap();
}

/// The events of `TOPIC` (with a value) as (orderid, op, amount).
fn events(recs: &[Json]) -> Vec<(i64, String, i64)> {
    recs.iter()
        .filter(|r| r["topic"] == TOPIC && !r["value"].is_null())
        .map(|r| {
            let v = payload(r);
            let row = if v["after"].is_null() {
                &v["before"]
            } else {
                &v["after"]
            };
            (
                key_payload(r)["orderid"].as_i64().unwrap(),
                v["op"].as_str().unwrap().to_string(),
                row["amount"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from the REST API; the body as JSON.
fn rest_get(port: u16, path: &str) -> Json {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("REST API");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

async fn insert(pg: &tokio_postgres::Client, n: usize) {
    for _ in 0..n {
        pg.execute(
            "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
             VALUES (1, 100, 'Austin', '2020-10-09 07:23:10')",
            &[],
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_to_kafka_to_file_survives_kill_9() {
    let tansu = Tansu::start();
    let (db, pg) = fresh_db("kafka").await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 3).await;

    let mut p = Pipeline::new(&db, &[]);
    let rest = free_port();
    over_kafka(&p, &tansu.bootstrap(), rest);
    p.start();
    p.wait_until("the snapshot via Kafka", LONG, |r| events(r).len() >= 3);
    insert(&pg, 4).await;
    pg.execute(
        "UPDATE retail.orders_info SET amount = 200 WHERE orderid = 1",
        &[],
    )
    .await
    .unwrap();
    pg.execute(
        "UPDATE retail.orders_info SET amount = 300 WHERE orderid = 1",
        &[],
    )
    .await
    .unwrap();
    let recs = p.wait_until("streamed changes via Kafka", LONG, |r| events(r).len() >= 9);
    // Give a duplicate the chance to show up.
    std::thread::sleep(Duration::from_secs(2));
    let ev = events(&p.records());
    assert_eq!(
        ev.len(),
        9,
        "each change exactly once: {ev:?}\nfirst read: {}",
        recs.len()
    );
    let mut per_key: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for (id, op, amount) in &ev {
        per_key.entry(*id).or_default().push((op.clone(), *amount));
    }
    assert_eq!(
        per_key.keys().copied().collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        per_key[&1],
        vec![("r".into(), 100), ("u".into(), 200), ("u".into(), 300)],
        "order per key"
    );
    for id in 1..=3 {
        assert_eq!(per_key[&id][0].0, "r", "snapshot row {id}");
    }
    for id in 4..=7 {
        assert_eq!(per_key[&id], vec![("c".into(), 100)], "streamed row {id}");
    }

    // The REST API works over Kafka too.
    for name in ["pg-source", "file-sink"] {
        let st = rest_get(rest, &format!("/connectors/{name}/status"));
        assert_eq!(st["connector"]["state"], "RUNNING", "{st}");
        assert_eq!(st["tasks"][0]["state"], "RUNNING", "{st}");
        let topics = rest_get(rest, &format!("/connectors/{name}/topics"));
        assert_eq!(
            topics[name]["topics"],
            serde_json::json!([TOPIC]),
            "{topics}"
        );
    }

    // The topic is in the broker, created by Sluice with one partition.
    let mut cfg = KafkaConfig::new(tansu.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    let admin = Admin::connect(&cfg).await.expect("admin");
    assert_eq!(admin.partitions(TOPIC).await.expect("metadata"), Some(1));

    // kill -9, changes while down, restart: nothing lost.
    p.kill9();
    insert(&pg, 3).await;
    pg.execute(
        "UPDATE retail.orders_info SET amount = 400 WHERE orderid = 2",
        &[],
    )
    .await
    .unwrap();
    p.start();
    insert(&pg, 2).await;
    let recs = p.wait_until("every row after the restart", LONG, |r| {
        let ev = events(r);
        (1..=12).all(|id| ev.iter().any(|(i, _, _)| *i == id))
            && ev
                .iter()
                .any(|(i, op, a)| *i == 2 && op == "u" && *a == 400)
    });
    let ev = events(&recs);
    // Per key, changes never go back in time: the last event of key 1 is
    // its last update, key 2's is the update made while sluice was down.
    let last = |id: i64| ev.iter().rev().find(|(i, _, _)| *i == id).cloned().unwrap();
    assert_eq!(last(1).2, 300, "{ev:?}");
    assert_eq!(last(2).2, 400, "{ev:?}");
    assert!(
        p.stop().is_some(),
        "clean stop; log:\n{}",
        tail(&p.log_text(), 40)
    );
    let log = p.log_text();
    assert!(log.contains("transport: Kafka at"), "{}", tail(&log, 40));
}

/// Three partitions, two sink tasks (two consumers in group
/// `connect-file-sink`): every row once, in order per key.
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_topic_and_a_sink_group_of_two() {
    let tansu = Tansu::start();
    let (db, pg) = fresh_db("kafkagroup").await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 20).await;
    let mut p = Pipeline::new(&db, &[]);
    let rest = free_port();
    over_kafka(&p, &tansu.bootstrap(), rest);
    p.set_source("topic.creation.default.partitions", "3");
    let sink = p.path("sink.json");
    let mut j: Json = serde_json::from_slice(&std::fs::read(&sink).unwrap()).unwrap();
    j["config"]["tasks.max"] = "2".into();
    std::fs::write(sink, j.to_string()).unwrap();
    p.start();
    p.wait_until("the snapshot", LONG, |r| events(r).len() >= 20);
    insert(&pg, 20).await;
    for amount in [200, 300, 400] {
        pg.execute(
            "UPDATE retail.orders_info SET amount = $1 WHERE orderid % 5 = 0",
            &[&amount],
        )
        .await
        .unwrap();
    }
    p.wait_until("every change", LONG, |r| events(r).len() >= 40 + 3 * 8);
    std::thread::sleep(Duration::from_secs(2));
    let ev = events(&p.records());
    assert_eq!(ev.len(), 64, "each change once: {ev:?}");
    for id in 1..=40 {
        let amounts: Vec<i64> = ev
            .iter()
            .filter(|(i, _, _)| *i == id)
            .map(|(_, _, a)| *a)
            .collect();
        let want = if id % 5 == 0 {
            vec![100, 200, 300, 400]
        } else {
            vec![100]
        };
        assert_eq!(amounts, want, "key {id} in order");
    }
    let st = rest_get(rest, "/connectors/file-sink/status");
    assert_eq!(st["tasks"].as_array().map(Vec::len), Some(2), "{st}");
    let mut cfg = KafkaConfig::new(tansu.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    let admin = Admin::connect(&cfg).await.expect("admin");
    assert_eq!(admin.partitions(TOPIC).await.expect("metadata"), Some(3));
    assert_eq!(p.stop(), Some(0), "{}", tail(&p.log_text(), 40));
    // Both consumers of the group read partitions.
    let log = p.log_text();
    for task in 0..2 {
        let prefix = format!("sink connector 'file-sink' task {task}: assigned ");
        assert!(
            log.lines().any(|l| l
                .split(&prefix)
                .nth(1)
                .is_some_and(|rest| !rest.starts_with("0 "))),
            "task {task} got no partition; log:\n{}",
            tail(&log, 60)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_broker_fails_the_source_task_naming_the_topic() {
    let tansu = Tansu::start();
    let (db, pg) = fresh_db("kafkalost").await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 1).await;
    let mut p = Pipeline::new(&db, &[]);
    let rest = free_port();
    over_kafka(&p, &tansu.bootstrap(), rest);
    let worker = p.path("worker.properties");
    let mut w = std::fs::read_to_string(&worker).unwrap();
    w.push_str("producer.message.timeout.ms=3000\ntask.shutdown.graceful.timeout.ms=2000\n");
    std::fs::write(worker, w).unwrap();
    p.start();
    p.wait_until("the first row", LONG, |r| !events(r).is_empty());
    drop(tansu);
    insert(&pg, 1).await;
    // The worker keeps running (its REST API can restart the task once
    // Kafka is back); the task says what failed, never RUNNING.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let trace = loop {
        let st = rest_get(rest, "/connectors/pg-source/status");
        let task = &st["tasks"][0];
        let state = task["state"].as_str().unwrap_or_default();
        if matches!(state, "FAILED" | "RESTARTING") {
            break task["trace"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source task never showed the failure: {st}\n{}",
            tail(&p.log_text(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        trace.contains("producing to Kafka") && trace.contains(TOPIC),
        "{trace}"
    );
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("source connector 'pg-source' task 0 failed: producing to Kafka"))
        .unwrap_or_else(|| panic!("no failure line; log:\n{}", tail(&log, 40)));
    assert!(line.contains(TOPIC), "{line}");
    eprintln!("{line}");
    p.kill9();
}

/// Throughput PostgreSQL -> Kafka -> file, streaming: `SLUICE_BENCH_ROWS`
/// rows (default 200000) inserted in one transaction. Run with
/// `SLUICE_BENCH_BIN=<release sluice> cargo test --test kafka_pipeline -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_streaming_through_kafka() {
    let rows: usize = std::env::var("SLUICE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let tansu = Tansu::start();
    let (db, pg) = fresh_db("kafkabench").await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 1).await;
    let mut p = Pipeline::new(&db, &[]);
    over_kafka(&p, &tansu.bootstrap(), free_port());
    // For comparison: SLUICE_BENCH_INPROCESS=1 runs the same pipeline
    // with the in-process transport.
    if std::env::var_os("SLUICE_BENCH_INPROCESS").is_some() {
        let w = std::fs::read_to_string(p.path("worker.properties")).unwrap();
        let w: Vec<&str> = w
            .lines()
            .filter(|l| !l.starts_with("bootstrap.servers") && !l.starts_with("consumer."))
            .collect();
        std::fs::write(p.path("worker.properties"), w.join("\n") + "\n").unwrap();
    }
    let bin = std::env::var("SLUICE_BENCH_BIN").unwrap_or_else(|_| sluice_bin().to_string());
    let log = std::fs::File::create(&p.log).unwrap();
    p.child = Some(
        Command::new(&bin)
            .arg("connect")
            .arg(p.path("worker.properties"))
            .arg(p.path("source.json"))
            .arg(p.path("sink.json"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    p.wait_until("the first row", LONG, |r| !events(r).is_empty());
    let base = p.line_count();
    let start = Instant::now();
    pg.execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
         SELECT g, g % 1000, 'Austin', '2020-10-09 07:23:10' FROM generate_series(1, $1::int) g",
        &[&(rows as i32)],
    )
    .await
    .unwrap();
    let inserted = start.elapsed();
    while p.line_count() < base + rows {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{} of {rows}; log:\n{}",
            p.line_count() - base,
            tail(&p.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    let transport = if std::env::var_os("SLUICE_BENCH_INPROCESS").is_some() {
        "in-process"
    } else {
        "Kafka"
    };
    println!(
        "{rows} rows ({transport}): insert took {:.2} s; PostgreSQL -> {transport} -> file in {:.2} s = {:.0} events/s ({bin})",
        inserted.as_secs_f64(),
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );
    p.stop();
}

/// A pipeline over the Kafka at `bootstrap` whose worker properties are
/// `over_kafka`'s with `edit` applied, running and past its snapshot and a
/// streamed row.
async fn takeover_pipeline(
    bootstrap: &str,
    hint: &str,
    edit: impl Fn(String) -> String,
) -> (Pipeline, tokio_postgres::Client) {
    let (db, pg) = fresh_db(hint).await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 3).await;
    let mut p = Pipeline::new(&db, &[]);
    over_kafka(&p, bootstrap, free_port());
    let worker = p.path("worker.properties");
    let w = edit(std::fs::read_to_string(&worker).unwrap());
    std::fs::write(worker, w).unwrap();
    p.start();
    p.wait_until("the snapshot via Kafka", LONG, |r| events(r).len() >= 3);
    insert(&pg, 1).await;
    p.wait_until("a streamed row", LONG, |r| events(r).len() >= 4);
    (p, pg)
}

/// kill -9 of the worker, an immediate restart and a row inserted then:
/// the time from the kill to that row in the sink, i.e. how long the
/// restarted sink waited for its partitions (plus the restart itself).
async fn kill9_takeover_gap(p: &mut Pipeline, pg: &tokio_postgres::Client) -> Duration {
    // The new row is the one with a higher id than any so far (records
    // delivered again after the kill do not count).
    let last = events(&p.records()).iter().map(|e| e.0).max().unwrap_or(0);
    p.kill9();
    let killed = Instant::now();
    p.start();
    insert(pg, 1).await;
    p.wait_until("the row inserted after the restart", LONG, |r| {
        events(r).iter().any(|(id, _, _)| *id > last)
    });
    killed.elapsed()
}

/// Worker properties with `consumer.session.timeout.ms` and
/// `consumer.heartbeat.interval.ms` set to `session` and `heartbeat`
/// (empty: Sluice's defaults), plus `extra` lines.
fn session_and(session: &str, heartbeat: &str, extra: &str) -> impl Fn(String) -> String {
    let (session, heartbeat, extra) = (
        session.to_string(),
        heartbeat.to_string(),
        extra.to_string(),
    );
    move |w: String| {
        let mut out: Vec<String> = w
            .lines()
            .filter(|l| {
                !l.starts_with("consumer.session.timeout.ms=")
                    && !l.starts_with("consumer.heartbeat.interval.ms=")
            })
            .map(str::to_string)
            .collect();
        if !session.is_empty() {
            out.push(format!("consumer.session.timeout.ms={session}"));
        }
        if !heartbeat.is_empty() {
            out.push(format!("consumer.heartbeat.interval.ms={heartbeat}"));
        }
        out.extend(extra.lines().map(str::to_string));
        out.join("\n") + "\n"
    }
}

/// The member ids of consumer group `group` as the broker at `bootstrap`
/// (its own group coordinator) describes them, with a DescribeGroups v0
/// request. A static member's id starts with its `group.instance.id`, a
/// dynamic member's with its `client.id`.
fn group_member_ids(bootstrap: &str, group: &str) -> Vec<String> {
    use std::io::{Read as _, Write as _};
    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as i16).to_be_bytes());
        b.extend(s.as_bytes());
    }
    let mut req = Vec::new();
    req.extend(15i16.to_be_bytes()); // DescribeGroups
    req.extend(0i16.to_be_bytes()); // version 0
    req.extend(1i32.to_be_bytes()); // correlation id
    string(&mut req, "sluice-test");
    req.extend(1i32.to_be_bytes());
    string(&mut req, group);
    let mut conn = TcpStream::connect(bootstrap).expect("broker");
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut resp).unwrap();
    /// Reads the answer in order.
    struct Answer(Vec<u8>, usize);
    impl Answer {
        fn take(&mut self, n: usize) -> &[u8] {
            self.1 += n;
            &self.0[self.1 - n..self.1]
        }
        fn int(&mut self, n: usize) -> i64 {
            self.take(n)
                .iter()
                .fold(0i64, |v, b| v << 8 | i64::from(*b))
        }
        fn text(&mut self) -> String {
            let n = self.int(2).max(0) as usize;
            String::from_utf8_lossy(self.take(n)).into_owned()
        }
    }
    let mut a = Answer(resp, 4); // after the correlation id
    assert_eq!(a.int(4), 1, "one group described");
    assert_eq!(a.int(2), 0, "DescribeGroups error for '{group}'");
    for _group_state_protocol in 0..4 {
        a.text();
    }
    let members = a.int(4);
    (0..members)
        .map(|_| {
            let id = a.text();
            for _client_id_and_host in 0..2 {
                a.text();
            }
            for _metadata_and_assignment in 0..2 {
                let n = a.int(4).max(0) as usize;
                a.take(n);
            }
            id
        })
        .collect()
}

/// After a kill -9, a worker with `consumer.group.instance.id` set (static
/// membership) restarts and its sink consumer takes its partitions back
/// at once, as the same member, not after the dead member's session times
/// out. The session timeout here is 40 s: a rejoin that waited for it
/// would take longer than that (about 80 s measured without the setting;
/// 25 s with it, most of it the test broker's wait for more members).
/// Prints the gap from the kill to the first new record in the sink.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_worker_reads_its_sink_partitions_at_once() {
    let tansu = Tansu::start();
    let (mut p, pg) = takeover_pipeline(
        &tansu.bootstrap(),
        "kafkatakeover",
        session_and("40000", "3000", "consumer.group.instance.id=worker-a"),
    )
    .await;
    let gap = kill9_takeover_gap(&mut p, &pg).await;
    eprintln!("takeover gap after kill -9 (static member, session 40 s): {gap:?}");
    assert!(
        gap < Duration::from_secs(40),
        "the restarted sink waited {gap:?} for its partitions (session timeout 40 s)\n{}",
        tail(&p.log_text(), 40)
    );
    // The broker knows one member, the static one: the restarted
    // consumer took the dead one's place.
    let members = group_member_ids(&tansu.bootstrap(), "connect-file-sink");
    assert!(
        members.len() == 1 && members[0].starts_with("worker-a-connect-file-sink-0-"),
        "{members:?}"
    );
    let log = p.log_text();
    assert!(
        log.contains(
            "joining consumer group 'connect-file-sink' as static member 'worker-a-connect-file-sink-0'"
        ),
        "{}",
        tail(&log, 40)
    );
    // A static member does not leave its group when it stops: its
    // partitions wait for it until its session times out.
    assert!(p.stop().is_some());
    assert_eq!(
        group_member_ids(&tansu.bootstrap(), "connect-file-sink"),
        members
    );
}

/// Without `consumer.group.instance.id`, or with it empty, sink consumers
/// are dynamic members of their group, which leave it when they stop: a
/// worker stopped for good never holds partitions, whatever the broker.
#[tokio::test(flavor = "multi_thread")]
async fn sink_consumers_are_dynamic_members_unless_told_otherwise() {
    let tansu = Tansu::start();
    for extra in ["consumer.group.instance.id=", ""] {
        let (mut p, _pg) = takeover_pipeline(
            &tansu.bootstrap(),
            "kafkadynamic",
            session_and("", "", extra),
        )
        .await;
        let members = group_member_ids(&tansu.bootstrap(), "connect-file-sink");
        assert!(
            members.len() == 1 && !members[0].contains("connect-file-sink-0"),
            "{extra:?}: {members:?}"
        );
        let log = p.log_text();
        assert!(
            !log.contains("as static member"),
            "{extra:?}: {}",
            tail(&log, 40)
        );
        assert!(p.stop().is_some(), "{}", tail(&p.log_text(), 40));
        assert_eq!(
            group_member_ids(&tansu.bootstrap(), "connect-file-sink"),
            Vec::<String>::new(),
            "{extra:?}: the stopped sink left its group"
        );
    }
}

/// Answers an ApiVersions request with JoinGroup capped at version 4, as a
/// broker older than Kafka 2.3 (no static membership) would: `resp` is the
/// response frame (after its size) to a request of `version`.
fn cap_join_group(resp: &mut [u8], version: i16) {
    // Correlation id, error code.
    let mut at = 4;
    if resp.len() < at + 2 || resp[at..at + 2] != [0, 0] {
        return;
    }
    at += 2;
    let flexible = version >= 3;
    let count = if flexible {
        // An unsigned varint of count + 1 (a small one: one byte).
        at += 1;
        usize::from(resp[at - 1]).saturating_sub(1)
    } else {
        at += 4;
        i32::from_be_bytes([resp[at - 4], resp[at - 3], resp[at - 2], resp[at - 1]]) as usize
    };
    let entry = if flexible { 7 } else { 6 };
    for _ in 0..count {
        if resp.len() < at + entry || flexible && resp[at + 6] != 0 {
            return;
        }
        if resp[at..at + 2] == 11i16.to_be_bytes() {
            resp[at + 4..at + 6].copy_from_slice(&4i16.to_be_bytes());
        }
        at += entry;
    }
}

/// A TCP proxy on `listener` in front of the broker on `broker_port`, which
/// shows its clients a broker without JoinGroup v5 (see `cap_join_group`).
fn old_broker_proxy(listener: TcpListener, broker_port: u16) {
    use std::io::{Read, Write};
    fn frame(from: &mut TcpStream) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        from.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
        from.read_exact(&mut body).ok()?;
        Some(body)
    }
    fn send(to: &mut TcpStream, body: &[u8]) -> Option<()> {
        to.write_all(&(body.len() as i32).to_be_bytes()).ok()?;
        to.write_all(body).ok()
    }
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (Ok(mut client), Ok(mut broker)) =
                (client, TcpStream::connect(("127.0.0.1", broker_port)))
            else {
                continue;
            };
            let (Ok(mut client_w), Ok(mut broker_r)) = (client.try_clone(), broker.try_clone())
            else {
                continue;
            };
            // Answers come in the order of the requests.
            let (asked, answered) = std::sync::mpsc::channel::<(i16, i16)>();
            std::thread::spawn(move || {
                while let Some(req) = frame(&mut client) {
                    let key = i16::from_be_bytes([req[0], req[1]]);
                    let version = i16::from_be_bytes([req[2], req[3]]);
                    if asked.send((key, version)).is_err() || send(&mut broker, &req).is_none() {
                        break;
                    }
                }
                let _ = broker.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                while let Some(mut resp) = frame(&mut broker_r) {
                    match answered.recv() {
                        Ok((18, version)) => cap_join_group(&mut resp, version),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    if send(&mut client_w, &resp).is_none() {
                        break;
                    }
                }
                let _ = client_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// A tansu broker that its clients reach through `old_broker_proxy`.
struct OldBroker {
    /// Kept for its Drop, which kills the broker.
    _tansu: Tansu,
    bootstrap: String,
}

impl OldBroker {
    fn start() -> OldBroker {
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = proxy.local_addr().unwrap().port();
        // Metadata sends the clients to the proxy too.
        let tansu = Tansu::start_advertising(proxy_port);
        old_broker_proxy(proxy, tansu.port);
        OldBroker {
            _tansu: tansu,
            bootstrap: format!("127.0.0.1:{proxy_port}"),
        }
    }
}

/// A worker asking for static membership of a broker without it (tansu
/// behind a proxy that hides JoinGroup v5) says so once and its sink
/// consumers join dynamically: they leave their group when they stop,
/// which a static member configured on such a broker would not do.
#[tokio::test(flavor = "multi_thread")]
async fn static_membership_falls_back_to_dynamic_on_an_older_broker() {
    let broker = OldBroker::start();
    let (mut p, pg) = takeover_pipeline(
        &broker.bootstrap,
        "kafkaoldbroker",
        session_and("", "", "consumer.group.instance.id=worker-a"),
    )
    .await;
    insert(&pg, 1).await;
    p.wait_until("a row after the join", LONG, |r| events(r).len() >= 5);
    let members = group_member_ids(&broker.bootstrap, "connect-file-sink");
    assert!(
        members.len() == 1 && !members[0].starts_with("worker-a"),
        "{members:?}\n{}",
        tail(&p.log_text(), 40)
    );
    let log = p.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("consumer.group.instance.id is ignored"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", tail(&log, 40));
    eprintln!("{}", warnings[0]);
    assert!(!log.contains("as static member"), "{}", tail(&log, 40));
    assert!(p.stop().is_some(), "{}", tail(&p.log_text(), 40));
    assert_eq!(
        group_member_ids(&broker.bootstrap, "connect-file-sink"),
        Vec::<String>::new(),
        "the stopped sink left its group"
    );
}

/// The takeover gap after a kill -9 with Sluice's default consumer
/// settings; `SLUICE_TAKEOVER_PROPS` adds worker property lines (e.g.
/// `consumer.group.instance.id=w1`) to compare. Run with
/// `cargo test -p sluice-cli --test kafka_pipeline takeover_gap -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement"]
async fn takeover_gap_after_kill_9_with_default_settings() {
    let extra = std::env::var("SLUICE_TAKEOVER_PROPS").unwrap_or_default();
    let tansu = Tansu::start();
    let (mut p, pg) =
        takeover_pipeline(&tansu.bootstrap(), "kafkagap", session_and("", "", &extra)).await;
    let gap = kill9_takeover_gap(&mut p, &pg).await;
    println!(
        "takeover gap after kill -9 with default settings{}: {:.1} s",
        if extra.is_empty() {
            String::new()
        } else {
            format!(" and {:?}", extra.trim())
        },
        gap.as_secs_f64()
    );
    assert!(p.stop().is_some());
}
