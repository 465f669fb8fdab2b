//! Taking over an existing Debezium deployment: a real Kafka Connect 4.3
//! distributed worker runs Debezium 3.6 against a Kafka-protocol broker
//! (tansu), then stops; Sluice's distributed worker starts on the same
//! config, offsets and status topics and carries on from Debezium's offsets
//! on Debezium's slots: no new snapshot, no change lost, none repeated.
//!
//! Two connectors: one whose offset is what Debezium 3.6 stored while
//! streaming, one whose offset is the snapshot offset Debezium 2.7 writes
//! (`"snapshot": true`, no `snapshot_completed`), put in the offsets topic
//! by Kafka Connect itself (`PATCH /connectors/{name}/offsets`, KIP-875)
//! since only Debezium 3.6 runs here; 2.7's streaming offsets have the same
//! keys as 3.6's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use sluice_testkit::tansu::Tansu;
use sluice_testkit::PgCluster;

use super::compare::{read_records, Rec};
use super::Proc;

const WAIT: Duration = Duration::from_secs(240);

async fn rest(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Json>,
) -> Result<(u16, Json), String> {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    ))
}

/// Polls `f` until it gives Some, or panics naming `what` with the log.
async fn until<T, F, Fut>(what: &str, proc_: &mut Proc, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if let Some(st) = proc_.exited() {
            panic!(
                "{} exited ({st}) while waiting for {what}\n{}",
                proc_.name,
                proc_.log_tail(40)
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            proc_.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn connector(name: &str, db: &str, port: u16, prefix: &str, slot: &str) -> Json {
    json!({
        "name": name,
        "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1",
            "database.port": port.to_string(),
            "database.user": "postgres",
            "database.password": "unused",
            "database.dbname": db,
            "topic.prefix": prefix,
            "plugin.name": "pgoutput",
            "slot.name": slot,
            "publication.name": format!("pub_{slot}"),
            "table.include.list": "public.t",
            "topic.creation.default.replication.factor": "1",
            "topic.creation.default.partitions": "1",
        }
    })
}

fn worker_properties(bootstrap: &str, group: &str, port: u16) -> String {
    format!(
        "bootstrap.servers={bootstrap}\ngroup.id={group}\n\
         config.storage.topic=connect-configs\noffset.storage.topic=connect-offsets\n\
         status.storage.topic=connect-status\nconfig.storage.replication.factor=1\n\
         offset.storage.replication.factor=1\nstatus.storage.replication.factor=1\n\
         offset.storage.partitions=5\nstatus.storage.partitions=1\n\
         key.converter=org.apache.kafka.connect.json.JsonConverter\n\
         value.converter=org.apache.kafka.connect.json.JsonConverter\n\
         listeners=http://127.0.0.1:{port}\noffset.flush.interval.ms=500\n"
    )
}

/// `(op, key id)` of a record, `("tombstone", id)` for a tombstone.
fn shape(r: &Rec) -> (String, i64) {
    let key = r.key.get("payload").unwrap_or(&r.key);
    let id = match key.get("id") {
        Some(super::json::J::Num(n)) => n.parse().unwrap_or(-1),
        _ => -1,
    };
    let op = if r.value.is_null() {
        "tombstone".to_string()
    } else {
        r.op().unwrap_or("?").to_string()
    };
    (op, id)
}

fn run_id(r: &Rec) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == "__debezium.context.runId")
        .and_then(|(_, v)| v.str().map(str::to_string))
}

fn shapes(v: &[&Rec]) -> Vec<(String, i64)> {
    v.iter().map(|r| shape(r)).collect()
}

fn expect(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(o, i)| (o.to_string(), *i)).collect()
}

pub async fn run(support: &Path, sluice: &Path) {
    let started = Instant::now();
    let cluster = PgCluster::start_with(&[("max_replication_slots", "20")]).expect("PostgreSQL");
    let tansu = Tansu::start();
    let work = tempfile::Builder::new()
        .prefix("sluice-takeover-")
        .tempdir()
        .expect("temp dir");
    let dir = work.path();
    let db36 = cluster.create_database("takeover36").await.expect("db");
    let db27 = cluster.create_database("takeover27").await.expect("db");
    let pg36 = cluster.connect(&db36).await.expect("connect");
    let pg27 = cluster.connect(&db27).await.expect("connect");
    for pg in [&pg36, &pg27] {
        pg.batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
        )
        .await
        .expect("setup");
    }

    // Phase 1: Kafka Connect with Debezium.
    let connect_port = sluice_testkit::free_port().expect("port");
    let base = format!("http://127.0.0.1:{connect_port}");
    let props = dir.join("connect.properties");
    // Plugins from their ServiceLoader manifests: scanning the wheel's 400
    // jars would take a minute.
    std::fs::write(
        &props,
        worker_properties(&tansu.bootstrap(), "connect-cluster", connect_port)
            + "plugin.discovery=service_load\n",
    )
    .expect("write");
    let mut cmd = Command::new("bash");
    cmd.arg(support.join("debezium.sh"))
        .arg("connect")
        .arg(&props);
    let mut kc = Proc::spawn("kafka connect", cmd, dir.join("connect.log"));
    let http = reqwest::Client::new();
    until("Kafka Connect's REST API", &mut kc, || async {
        rest(
            &http,
            reqwest::Method::GET,
            &format!("{base}/connectors"),
            None,
        )
        .await
        .ok()
        .filter(|(s, _)| *s == 200)
    })
    .await;
    for (name, db, prefix, slot) in [
        ("orders-36", &db36, "s36", "dbz36"),
        ("orders-27", &db27, "s27", "dbz27"),
    ] {
        let (status, body) = rest(
            &http,
            reqwest::Method::POST,
            &format!("{base}/connectors"),
            Some(connector(name, db, cluster.port(), prefix, slot)),
        )
        .await
        .expect("POST /connectors");
        assert_eq!(status, 201, "creating {name}: {body}");
    }
    // Both snapshots are complete once their offsets say so.
    let offsets = |name: &'static str| {
        let http = http.clone();
        let url = format!("{base}/connectors/{name}/offsets");
        async move {
            let (s, body) = rest(&http, reqwest::Method::GET, &url, None).await.ok()?;
            (s == 200).then_some(())?;
            body["offsets"][0]["offset"].as_object().cloned()
        }
    };
    for name in ["orders-36", "orders-27"] {
        until(&format!("{name}'s snapshot offset"), &mut kc, || async {
            offsets(name)
                .await
                .filter(|o| o.get("snapshot_completed") == Some(&json!(true)))
        })
        .await;
    }
    // orders-36 streams changes; its offset then is a streaming one.
    pg36.batch_execute("INSERT INTO t VALUES (4, 'd')")
        .await
        .expect("change");
    pg36.batch_execute("UPDATE t SET v = 'bb' WHERE id = 2")
        .await
        .expect("change");
    let before_last: String = pg36
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let before_last = lsn(&before_last);
    pg36.batch_execute("DELETE FROM t WHERE id = 3")
        .await
        .expect("change");
    let streamed = until("orders-36's streaming offset", &mut kc, || async {
        offsets("orders-36").await.filter(|o| {
            o.get("snapshot").is_none()
                && o.get("lsn_proc")
                    .and_then(Json::as_u64)
                    .is_some_and(|l| l > before_last)
        })
    })
    .await;
    // orders-27 gets the offset Debezium 2.7 writes when its snapshot
    // completes, at the position of Debezium 3.6's.
    let snap = offsets("orders-27").await.expect("orders-27 offset");
    let mut old = serde_json::Map::new();
    for k in ["last_snapshot_record", "lsn", "txId", "ts_usec"] {
        if let Some(v) = snap.get(k) {
            old.insert(k.into(), v.clone());
        }
    }
    old.insert("snapshot".into(), json!(true));
    let (s, body) = rest(
        &http,
        reqwest::Method::PUT,
        &format!("{base}/connectors/orders-27/stop"),
        None,
    )
    .await
    .expect("stop");
    assert!(s == 202 || s == 204, "stopping orders-27: {s} {body}");
    until("orders-27 stopped", &mut kc, || async {
        let (_, b) = rest(
            &http,
            reqwest::Method::GET,
            &format!("{base}/connectors/orders-27/status"),
            None,
        )
        .await
        .ok()?;
        (b["connector"]["state"] == "STOPPED").then_some(())
    })
    .await;
    let patch =
        json!({"offsets": [{"partition": {"server": "s27"}, "offset": Json::Object(old.clone())}]});
    let (s, body) = rest(
        &http,
        reqwest::Method::PATCH,
        &format!("{base}/connectors/orders-27/offsets"),
        Some(patch),
    )
    .await
    .expect("PATCH offsets");
    assert_eq!(s, 200, "PATCH orders-27 offsets: {body}");
    until("orders-27's 2.7 offset", &mut kc, || async {
        offsets("orders-27").await.filter(|o| o == &old)
    })
    .await;
    // A running connector is what Sluice takes over.
    rest(
        &http,
        reqwest::Method::PUT,
        &format!("{base}/connectors/orders-27/resume"),
        None,
    )
    .await
    .expect("resume");
    until("orders-27 running", &mut kc, || async {
        let (_, b) = rest(
            &http,
            reqwest::Method::GET,
            &format!("{base}/connectors/orders-27/status"),
            None,
        )
        .await
        .ok()?;
        (b["connector"]["state"] == "RUNNING" && b["tasks"][0]["state"] == "RUNNING").then_some(())
    })
    .await;
    kc.terminate(Duration::from_secs(60));
    println!(
        "takeover: Kafka Connect and Debezium done after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Changes while nothing captures.
    pg36.batch_execute("INSERT INTO t VALUES (5, 'e'); UPDATE t SET v = 'dd' WHERE id = 4;")
        .await
        .expect("change");
    pg36.batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .expect("change");
    pg27.batch_execute("INSERT INTO t VALUES (4, 'x')")
        .await
        .expect("change");
    pg27.batch_execute("UPDATE t SET v = 'aa' WHERE id = 1")
        .await
        .expect("change");

    // Phase 2: Sluice's workers on the same topics.
    let sluice_port = sluice_testkit::free_port().expect("port");
    let sprops = dir.join("sluice.properties");
    std::fs::write(
        &sprops,
        worker_properties(&tansu.bootstrap(), "sluice-cluster", sluice_port),
    )
    .expect("write");
    let out: PathBuf = dir.join("topics.jsonl");
    let sink = dir.join("sink.json");
    std::fs::write(
        &sink,
        json!({"name": "check-file", "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "file": out.display().to_string(),
            "topics": "s36.public.t,s27.public.t",
            "sluice.file.format": "record",
        }})
        .to_string(),
    )
    .expect("write");
    let mut cmd = Command::new(sluice);
    cmd.arg("connect")
        .arg(&sprops)
        .arg(&sink)
        .env("RUST_LOG", "info");
    let mut sl = Proc::spawn("sluice", cmd, dir.join("sluice.log"));
    let all = until(
        "Sluice's records of the changes made after Debezium stopped",
        &mut sl,
        || async {
            let recs = read_records(&out).ok()?;
            let last36 = recs
                .iter()
                .rev()
                .find(|r| r.topic == "s36.public.t")
                .map(shape);
            let last27 = recs
                .iter()
                .rev()
                .find(|r| r.topic == "s27.public.t")
                .map(shape);
            (last36 == Some(("tombstone".into(), 1)) && last27 == Some(("u".into(), 1)))
                .then_some(recs)
        },
    )
    .await;
    sl.terminate(Duration::from_secs(60));
    println!(
        "takeover: Sluice carried on after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Debezium's records come first in each topic, then Sluice's (a run id
    // of their own).
    for (topic, debezium_expected, sluice_expected) in [
        (
            "s36.public.t",
            expect(&[
                ("r", 1),
                ("r", 2),
                ("r", 3),
                ("c", 4),
                ("u", 2),
                ("d", 3),
                ("tombstone", 3),
            ]),
            expect(&[("c", 5), ("u", 4), ("d", 1), ("tombstone", 1)]),
        ),
        (
            "s27.public.t",
            expect(&[("r", 1), ("r", 2), ("r", 3)]),
            expect(&[("c", 4), ("u", 1)]),
        ),
    ] {
        let recs: Vec<&Rec> = all.iter().filter(|r| r.topic == topic).collect();
        let sluice_run = recs.last().and_then(|r| run_id(r));
        let (by_sluice, by_debezium): (Vec<&Rec>, Vec<&Rec>) =
            recs.iter().partition(|r| run_id(r) == sluice_run);
        assert_eq!(
            shapes(&by_debezium),
            debezium_expected,
            "{topic}: Debezium's records"
        );
        assert_eq!(
            shapes(&by_sluice),
            sluice_expected,
            "{topic}: Sluice must resume right after Debezium's offset ({streamed:?}): no snapshot, nothing lost or repeated"
        );
        // Debezium's records, then Sluice's.
        let first_sluice = recs.iter().position(|r| run_id(r) == sluice_run);
        assert!(first_sluice.is_some_and(|i| recs[i..].iter().all(|r| run_id(r) == sluice_run)));
    }
    // On Debezium's slots: Sluice created none, and confirmed its progress.
    let admin = cluster.connect("postgres").await.expect("connect");
    let slots: Vec<(String, Option<String>)> = admin
        .query(
            "SELECT slot_name::text, confirmed_flush_lsn::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await
        .expect("slots")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let names: Vec<&str> = slots.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["dbz27", "dbz36"],
        "Sluice must stream from Debezium's slots"
    );
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}
