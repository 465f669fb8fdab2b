//! Distributed mode end to end: two `sluice connect` workers of one group
//! on a tansu broker, the scenario's connector configs posted over HTTP,
//! a kill -9 of the worker running the source, and the other worker
//! carrying on from the offsets topic.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{read_records, sluice_bin, tail, LONG};
use serde_json::{json, Value as Json};
use sluice_connect::sluice_kafka::{Admin, KafkaConfig, TopicReader};
use sluice_testkit::tansu::Tansu;
use sluice_testkit::PgCluster;

const ORDERS: &str = "CREATE SCHEMA retail; CREATE TABLE retail.orders_info (
    orderid SERIAL NOT NULL PRIMARY KEY, custid INTEGER NOT NULL, amount INTEGER NOT NULL,
    city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);";

const TOPIC: &str = "myserver.retail.orders_info";

/// The scenario's source config, as users post it (host, port, user,
/// password and database changed).
fn scenario_source(port: u16) -> String {
    format!(
        r#"{{"name": "pg-orders-source",
 "config": {{
   "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
   "database.hostname": "127.0.0.1", "database.port": "{port}",
   "database.user": "postgres", "database.password": "s3cret-pw",
   "database.dbname": "postgres",
   "database.server.name": "myserver",
   "plugin.name": "wal2json",
   "table.whitelist": "retail.orders_info",
   "value.converter": "org.apache.kafka.connect.json.JsonConverter"}}}}"#
    )
}

/// The scenario's sink config with the file sink standing in for Azure
/// Data Explorer: same topic, tasks, key converter and `unwrap` transform.
fn scenario_sink(file: &Path) -> String {
    json!({"name": "orders-sink",
     "config": {
       "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
       "file": file.display().to_string(),
       "sluice.file.format": "record",
       "tasks.max": 2,
       "topics": TOPIC,
       "key.converter": "org.apache.kafka.connect.storage.StringConverter",
       "transforms": "unwrap",
       "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState"}})
    .to_string()
}

/// Stops a throwaway cluster when the test ends, passed or not.
struct StopOnDrop(PgCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

struct Worker {
    props: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Worker {
    fn new(dir: &Path, name: &str, bootstrap: &str, extra: &str) -> Worker {
        let port = sluice_testkit::free_port().unwrap();
        let props = dir.join(format!("{name}.properties"));
        std::fs::write(
            &props,
            format!(
                "bootstrap.servers={bootstrap}\n\
                 group.id=sluice-cluster\n\
                 config.storage.topic=connect-configs\n\
                 offset.storage.topic=connect-offsets\n\
                 status.storage.topic=connect-status\n\
                 config.storage.replication.factor=1\n\
                 offset.storage.replication.factor=1\n\
                 status.storage.replication.factor=1\n\
                 offset.storage.partitions=10\n\
                 offset.flush.interval.ms=200\n\
                 session.timeout.ms=6000\n\
                 heartbeat.interval.ms=500\n\
                 consumer.session.timeout.ms=6000\n\
                 consumer.heartbeat.interval.ms=500\n\
                 consumer.max.poll.interval.ms=10000\n\
                 task.shutdown.graceful.timeout.ms=3000\n\
                 listeners=http://127.0.0.1:{port}\n{extra}"
            ),
        )
        .unwrap();
        Worker {
            props,
            log: dir.join(format!("{name}.log")),
            port,
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(sluice_bin())
                .arg("connect")
                .arg(&self.props)
                .env(
                    "RUST_LOG",
                    std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while http(self.port, "GET", "/", None).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "REST API of {} never answered; log:\n{}",
                self.id(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn id(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().ok()?.code()
    }

    fn log_text(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 60)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("sluice-distributed-{}.log", self.port));
            let _ = std::fs::copy(&self.log, &keep);
            eprintln!(
                "---- log of worker {} (whole log kept in {}) ----\n{}",
                self.id(),
                keep.display(),
                self.log_text()
            );
        }
    }
}

/// One HTTP request; (status, body as JSON or text). None when nothing
/// listens.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Json)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let text = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    Some((
        status,
        serde_json::from_str(text).unwrap_or(Json::String(text.to_string())),
    ))
}

fn status(w: &Worker, name: &str) -> Json {
    http(w.port, "GET", &format!("/connectors/{name}/status"), None)
        .map(|(_, j)| j)
        .unwrap_or(Json::Null)
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the sink's output satisfies `done`. tansu's group
/// coordinator can livelock two consumers that join a group about a second
/// apart (each SyncGroup answered "rebalance in progress", forever); a
/// real Kafka cluster does not. When the sink makes no progress for 30 s,
/// its tasks are restarted through the REST API, which makes them join
/// again: a workaround for the test broker only.
fn wait_rows(
    what: &str,
    port: u16,
    file: &Path,
    done: impl Fn(&BTreeMap<i64, Vec<i64>>) -> bool,
) -> BTreeMap<i64, Vec<i64>> {
    let start = Instant::now();
    let (mut seen, mut since) = (0usize, Instant::now());
    loop {
        let r = rows(file);
        if done(&r) {
            return r;
        }
        let n: usize = r.values().map(Vec::len).sum();
        if n != seen {
            (seen, since) = (n, Instant::now());
        } else if since.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "no sink progress for 30 s while waiting for {what}: restarting the sink's tasks"
            );
            let _ = http(
                port,
                "POST",
                "/connectors/orders-sink/restart?includeTasks=true",
                None,
            );
            since = Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The unwrapped rows the sink wrote: orderid -> amounts in file order.
fn rows(file: &Path) -> BTreeMap<i64, Vec<i64>> {
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in read_records(file) {
        if r["topic"] != TOPIC || r["value"].is_null() {
            continue;
        }
        let v = common::payload(&r);
        if let (Some(id), Some(amount)) = (v["orderid"].as_i64(), v["amount"].as_i64()) {
            out.entry(id).or_default().push(amount);
        }
    }
    out
}

async fn insert(pg: &tokio_postgres::Client, from: i64, to: i64) {
    pg.execute(
        "INSERT INTO retail.orders_info (orderid, custid, amount, city, purchase_time) \
         SELECT g, 306, 100, 'Austin', '2020-10-09 07:23:10' FROM generate_series($1::int, $2::int) g",
        &[&(from as i32), &(to as i32)],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_share_the_scenario_and_survive_a_kill_9() {
    let tansu = Tansu::start();
    // Its own cluster: the scenario config uses the default slot and
    // publication names.
    let pg_cluster = StopOnDrop(PgCluster::start().expect("PostgreSQL"));
    let pg_cluster = &pg_cluster.0;
    let pg = pg_cluster.connect("postgres").await.unwrap();
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 1, 5).await;
    // The users' topic exists with four partitions, so both sink tasks
    // have work.
    let mut kcfg = KafkaConfig::new(tansu.bootstrap());
    kcfg.connect_timeout = Duration::from_secs(20);
    let admin = Admin::connect(&kcfg).await.unwrap();
    admin.ensure_topic(TOPIC, 4, 1, &[]).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("orders.jsonl");
    let extra = std::env::var("SLUICE_TEST_WORKER_EXTRA").unwrap_or_default();
    let mut a = Worker::new(dir.path(), "a", &tansu.bootstrap(), &extra);
    let mut b = Worker::new(dir.path(), "b", &tansu.bootstrap(), &extra);
    a.start();
    b.start();
    // Both are members before the connectors exist, so their tasks are
    // dealt out from the start.
    for w in [&a, &b] {
        wait_for("both workers in the group", LONG, || {
            let log = std::fs::read_to_string(&w.log).unwrap_or_default();
            log.contains("holds 5 of the 10 work partitions")
                .then_some(())
        });
    }

    // Posted over HTTP, as with Kafka Connect.
    let (code, body) = http(
        a.port,
        "POST",
        "/connectors",
        Some(&scenario_source(pg_cluster.port())),
    )
    .unwrap_or_else(|| panic!("POST source: no answer; log:\n{}", a.log_text()));
    assert_eq!(code, 201, "{body}; log:\n{}", a.log_text());
    assert_eq!(body["name"], "pg-orders-source");
    let (code, body) = http(a.port, "POST", "/connectors", Some(&scenario_sink(&out))).unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = http(a.port, "POST", "/connectors", Some(&scenario_sink(&out))).unwrap();
    assert_eq!(code, 409, "a second create conflicts: {body}");

    wait_for("the snapshot in the sink", LONG, || {
        (rows(&out).len() >= 5).then_some(())
    });

    let spread = wait_for("the sink's tasks on both workers", LONG, || {
        let st = status(&b, "orders-sink");
        let workers: std::collections::BTreeSet<String> = st["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "RUNNING")
            .filter_map(|t| t["worker_id"].as_str().map(str::to_string))
            .collect();
        (workers.len() == 2).then_some(st)
    });
    eprintln!("sink status: {spread}");
    // Both workers answer for every connector, from the shared topics.
    for w in [&a, &b] {
        let (code, list) = http(w.port, "GET", "/connectors", None).unwrap();
        assert_eq!(code, 200);
        let mut names: Vec<String> = serde_json::from_value(list).unwrap();
        names.sort();
        assert_eq!(names, ["orders-sink", "pg-orders-source"]);
        let (_, cfg) = http(w.port, "GET", "/connectors/pg-orders-source/config", None).unwrap();
        assert_ne!(
            cfg["database.password"], "s3cret-pw",
            "secrets masked: {cfg}"
        );
    }

    insert(&pg, 6, 40).await;
    pg.execute(
        "UPDATE retail.orders_info SET amount = 200 WHERE orderid <= 3",
        &[],
    )
    .await
    .unwrap();
    wait_rows("streamed rows", a.port, &out, |r| {
        r.len() >= 40 && (1..=3).all(|id| r[&id].last() == Some(&200))
    });

    // kill -9 the worker running the source; the other one takes over
    // from the offsets topic once the group notices.
    let logs = [a.log.clone(), b.log.clone()];
    let st = status(&a, "pg-orders-source");
    let source_worker = st["tasks"][0]["worker_id"].as_str().unwrap().to_string();
    let (victim, survivor) = if source_worker == a.id() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.kill9();
    insert(&pg, 41, 60).await;
    pg.execute(
        "UPDATE retail.orders_info SET amount = 300 WHERE orderid <= 3",
        &[],
    )
    .await
    .unwrap();
    let survivor_id = survivor.id();
    wait_for("the source on the surviving worker", LONG, || {
        let st = status(survivor, "pg-orders-source");
        (st["tasks"][0]["worker_id"] == survivor_id.as_str()
            && st["tasks"][0]["state"] == "RUNNING")
            .then_some(())
    });
    insert(&pg, 61, 70).await;
    let got = wait_rows("every row after the kill", survivor.port, &out, |r| {
        (1..=70).all(|id| r.contains_key(&id)) && (1..=3).all(|id| r[&id].last() == Some(&300))
    });
    // At least once, and per key never back in time.
    for (id, amounts) in &got {
        let mut sorted = amounts.clone();
        sorted.sort();
        assert_eq!(&sorted, amounts, "order of key {id}: {amounts:?}");
    }

    // The offsets the takeover committed, through the REST API.
    let (code, offs) = http(
        survivor.port,
        "GET",
        "/connectors/pg-orders-source/offsets",
        None,
    )
    .unwrap();
    assert_eq!(code, 200, "{offs}");
    assert_eq!(
        offs["offsets"][0]["partition"]["server"], "myserver",
        "{offs}"
    );
    assert!(offs["offsets"][0]["offset"]["lsn"].is_number(), "{offs}");

    // The config topic holds the connectors in Kafka Connect's format.
    let reader = TopicReader::open(&kcfg, "connect-configs").await.unwrap();
    let configs = reader.catch_up().await.unwrap();
    let source = configs
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some(b"connector-pg-orders-source".as_slice()))
        .expect("source config record");
    let v: Json = serde_json::from_slice(source.value.as_deref().unwrap()).unwrap();
    assert_eq!(v["properties"]["table.whitelist"], "retail.orders_info");
    // Offsets in the offsets topic, keyed as Kafka Connect keys them.
    let reader = TopicReader::open(&kcfg, "connect-offsets").await.unwrap();
    let offsets = reader.catch_up().await.unwrap();
    assert!(
        offsets.iter().any(|r| r
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with(br#"["pg-orders-source",{"server":"myserver"}]"#))),
        "offsets topic keys: {:?}",
        offsets
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned())
            .collect::<Vec<_>>()
    );

    // Deleting through one worker removes the connector everywhere.
    let (code, _) = http(survivor.port, "DELETE", "/connectors/orders-sink", None).unwrap();
    assert_eq!(code, 204);
    let (code, _) = http(survivor.port, "GET", "/connectors/orders-sink", None).unwrap();
    assert_eq!(code, 404);
    assert_eq!(
        survivor.stop(),
        Some(0),
        "clean stop; log:\n{}",
        survivor.log_text()
    );
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("s3cret-pw"), "a secret in {}", log.display());
    }
}

/// Reads Debezium events until `want` distinct orderids were seen,
/// collecting every orderid read (duplicates included).
async fn read_ids(
    reader: &mut sluice_connect::sluice_kafka::Consumer,
    ids: &mut Vec<i64>,
    want: usize,
    log: impl Fn() -> String,
) {
    use sluice_connect::sluice_kafka::ConsumerEvent;
    let start = Instant::now();
    while ids.iter().collect::<std::collections::BTreeSet<_>>().len() < want {
        assert!(
            start.elapsed() < LONG,
            "only {} of {want} rows read; worker log:\n{}",
            ids.len(),
            log()
        );
        let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), reader.next_event()).await
        else {
            continue;
        };
        match ev {
            ConsumerEvent::Records(rs) => {
                for r in rs {
                    let Some(v) = r.value.as_deref() else {
                        continue;
                    };
                    let v: Json = serde_json::from_slice(v).unwrap();
                    if let Some(id) = v["payload"]["after"]["orderid"].as_i64() {
                        ids.push(id);
                    }
                }
            }
            ConsumerEvent::Revoked(r) => r.release(Default::default()),
            ConsumerEvent::Assigned(_) => {}
        }
    }
}

/// Whether the broker hides aborted transactions from `read_committed`
/// consumers (tansu 0.6 does not: its fetch answers never list them).
async fn broker_hides_aborted_records(cfg: &KafkaConfig) -> bool {
    use sluice_connect::sluice_kafka::{
        Consumer, ConsumerEvent, ConsumerOptions, Producer, Subscription,
    };
    let topic: std::sync::Arc<str> = std::sync::Arc::from("abort-probe");
    let admin = Admin::connect(cfg).await.unwrap();
    admin.ensure_topic(&topic, 1, 1, &[]).await.unwrap();
    let record = |v: &str| sluice_core::record::Record {
        topic: std::sync::Arc::clone(&topic),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: None,
        value: Some(v.as_bytes().to_vec()),
        headers: Vec::new(),
    };
    let p = Producer::connect_transactional(cfg, "abort-probe")
        .await
        .unwrap();
    p.begin().unwrap();
    // Stored before the abort (an abort drops what was not sent yet).
    p.send(&record("aborted")).await.unwrap().await.unwrap();
    p.abort().await.unwrap();
    p.begin().unwrap();
    p.send(&record("committed")).await.unwrap().await.unwrap();
    p.commit().await.unwrap();
    let mut c = Consumer::join(
        cfg,
        "abort-probe",
        Subscription::Topics(vec![topic.to_string()]),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|v| v == "committed") {
        match tokio::time::timeout(Duration::from_secs(60), c.next_event()).await {
            Ok(Some(ConsumerEvent::Records(rs))) => seen.extend(rs.iter().map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            })),
            Ok(Some(ConsumerEvent::Revoked(r))) => r.release(Default::default()),
            Ok(Some(_)) => {}
            _ => panic!("probe records not read: {seen:?}"),
        }
    }
    c.close().await;
    !seen.iter().any(|v| v == "aborted")
}

/// Exactly-once source (KIP-618): records and offsets in one transaction,
/// a kill -9 in the middle of a stream of small transactions, a restart
/// that fences the dead worker's producer: every change is in the topic,
/// and none twice.
#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_source_survives_a_kill_9_without_duplicates() {
    use sluice_connect::sluice_kafka::{Consumer, ConsumerOptions, Subscription};
    let tansu = Tansu::start();
    let (db, pg) = common::fresh_db("eos").await;
    pg.batch_execute(ORDERS).await.unwrap();
    insert(&pg, 1, 20).await;
    let mut kcfg = KafkaConfig::new(tansu.bootstrap());
    kcfg.connect_timeout = Duration::from_secs(20);
    let hides_aborted = broker_hides_aborted_records(&kcfg).await;

    let dir = tempfile::tempdir().unwrap();
    let mut w = Worker::new(
        dir.path(),
        "eos",
        &tansu.bootstrap(),
        "exactly.once.source.support=enabled\n",
    );
    w.start();
    let source = json!({"name": "eos-source", "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": common::cluster().port().to_string(),
        "database.user": "postgres",
        "database.dbname": db,
        "topic.prefix": "eos",
        "slot.name": format!("slot_{db}"),
        "publication.name": format!("pub_{db}"),
        "table.include.list": "retail.orders_info",
    }});
    let (code, body) = http(w.port, "POST", "/connectors", Some(&source.to_string())).unwrap();
    assert_eq!(code, 201, "{body}");

    // Read the topic as a read_committed consumer would.
    let topic = "eos.retail.orders_info";
    Admin::connect(&kcfg)
        .await
        .unwrap()
        .ensure_topic(topic, 1, 1, &[])
        .await
        .unwrap();
    let mut reader = Consumer::join(
        &kcfg,
        "eos-verify",
        Subscription::Topics(vec![topic.to_string()]),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let mut ids: Vec<i64> = Vec::new();
    read_ids(&mut reader, &mut ids, 20, || w.log_text()).await;

    // A stream of small transactions; the worker dies in the middle.
    for id in 21..=120 {
        insert(&pg, id, id).await;
        if id == 70 {
            w.kill9();
        }
    }
    w.start();
    for id in 121..=150 {
        insert(&pg, id, id).await;
    }
    read_ids(&mut reader, &mut ids, 150, || w.log_text()).await;
    // Let anything late show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    read_ids(&mut reader, &mut ids, 150, || w.log_text()).await;
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for id in &ids {
        *counts.entry(*id).or_default() += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>(),
        "every row"
    );
    let twice: Vec<i64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert!(
        log.contains("transactional"),
        "the task wrote through a transactional producer:\n{}",
        w.log_text()
    );
    if hides_aborted {
        assert!(twice.is_empty(), "duplicates: {twice:?}");
    } else {
        // tansu shows aborted records to read_committed consumers: the
        // only repeats allowed are those of the one transaction that was
        // open when the worker died (consecutive rows, aborted at the
        // restart by the fencing producer).
        eprintln!("broker shows aborted transactions; rows of the aborted transaction: {twice:?}");
        assert!(
            twice.windows(2).all(|w| w[1] == w[0] + 1),
            "repeats come from one transaction: {twice:?}"
        );
    }
    reader.close().await;
    assert_eq!(w.stop(), Some(0), "clean stop; log:\n{}", w.log_text());
}
