//! PostgreSQL to Azure Data Explorer end to end: a `sluice connect` worker,
//! the scenario's two connector configs posted over HTTP as users post them
//! to Kafka Connect (only host names, credentials and the database name
//! changed), and the local ADX stand-ins (engine with its Azure AD token
//! endpoint, data management, Azurite) behind one cluster URL.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{cluster, fresh_db, insert_orders, sluice_bin, tail};
use serde_json::{json, Value as Json};
use sluice_testkit::kusto::azurite::Azurite;
use sluice_testkit::kusto::dm::FakeDm;
use sluice_testkit::kusto::engine::FakeEngine;
use sluice_testkit::kusto::store::Store;

const ORDERS: &str = "CREATE SCHEMA retail; CREATE TABLE retail.orders_info (
    orderid SERIAL NOT NULL PRIMARY KEY, custid INTEGER NOT NULL, amount INTEGER NOT NULL,
    city VARCHAR(255) NOT NULL, purchase_time VARCHAR(20) NOT NULL);";

/// The scenario's ADX setup: `.create table Orders ...` and its mapping.
fn scenario_store() -> Store {
    let store = Store::new();
    store.create_database("retail");
    store.create_table(
        "retail",
        "Orders",
        &[
            ("orderid", "string"),
            ("custid", "string"),
            ("city", "string"),
            ("amount", "int"),
            ("purchase_time", "datetime"),
        ],
    );
    store
        .create_json_mapping(
            "retail",
            "Orders",
            "OrdersEventMapping",
            r#"[{"column":"orderid","Properties":{"path":"$.orderid"}},{"column":"custid","Properties":{"path":"$.custid"}},{"column":"city","Properties":{"path":"$.city"}},{"column":"amount","Properties":{"path":"$.amount"}},{"column":"purchase_time","Properties":{"path":"$.purchase_time"}}]"#,
        )
        .expect("mapping");
    store
}

/// One URL for the whole cluster, as `kusto.url` names it: the ingestion
/// commands go to the data-management stand-in, everything else to the
/// engine. (A real cluster has two host names, `ingest-<cluster>` and
/// `<cluster>`; on loopback both are one host.)
#[derive(Clone)]
struct Front {
    engine: String,
    dm: String,
    http: reqwest::Client,
}

async fn forward(State(f): State<Front>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let to_dm = parts.uri.path() == "/v1/rest/mgmt"
        && serde_json::from_slice::<Json>(&body)
            .ok()
            .and_then(|j| j["csl"].as_str().map(|c| c.trim().to_string()))
            .is_some_and(|c| {
                c.starts_with(".get ingestion resources")
                    || c.starts_with(".get kusto identity token")
            });
    let base = if to_dm { &f.dm } else { &f.engine };
    let url = format!(
        "{base}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut rb = f.http.request(parts.method.clone(), url);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            rb = rb.header(k, v);
        }
    }
    match rb.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = (status, bytes).into_response();
            for (k, v) in &headers {
                if k != "content-length" && k != "transfer-encoding" {
                    resp.headers_mut().insert(k, v.clone());
                }
            }
            resp
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_front(engine: &FakeEngine, dm: &FakeDm) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(forward).with_state(Front {
        engine: engine.url(),
        dm: dm.url(),
        http: reqwest::Client::new(),
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, Json) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Json::Null);
    (code, json)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scenarios_configs_posted_over_http_fill_the_adx_table() {
    let (db, pg) = fresh_db("kustoe2e").await;
    pg.batch_execute(ORDERS).await.expect("schema");
    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT 300 + g, 100 + g, (ARRAY['Austin','Seattle','New York'])[1 + g % 3], '2020-10-09 07:23:10'
         FROM generate_series(1, 40) g",
    )
    .await
    .expect("rows");

    let store = scenario_store();
    let (engine, _azurite, dm, front) = start_adx(&store).await;

    let dir = tempfile::tempdir().expect("temp");
    let rest = sluice_testkit::free_port().expect("port");
    let worker = dir.path().join("worker.properties");
    std::fs::write(
        &worker,
        format!(
            "offset.storage.file.filename={}\noffset.flush.interval.ms=500\nlisteners=http://127.0.0.1:{rest}\n",
            dir.path().join("offsets.json").display()
        ),
    )
    .expect("worker");
    let log = dir.path().join("sluice.log");
    // AZURE_AUTHORITY_HOST: where Azure AD is, as the Azure SDKs read it.
    let _child = spawn_worker(&[&worker], &log, &engine.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", rest)).is_err() {
        assert!(
            Instant::now() < deadline,
            "REST never came up: {}",
            tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The scenario's source config (host, port, user, database changed).
    let source = json!({"name": "pg-orders-source",
     "config": {
       "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
       "database.hostname": "127.0.0.1", "database.port": cluster().port().to_string(),
       "database.user": "postgres", "database.password": "s3cret-pw",
       "database.dbname": db,
       "database.server.name": "myserver",
       "plugin.name": "wal2json",
       "slot.name": "kusto_e2e",
       "table.whitelist": "retail.orders_info",
       "value.converter": "org.apache.kafka.connect.json.JsonConverter"}});
    // The scenario's adx-orders-sink.json: only the database, tenant,
    // URL and app credentials changed.
    let sink = json!({"name": "adx-orders-sink",
     "config": {
       "connector.class": "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector",
       "flush.size.bytes": 10000, "flush.interval.ms": 30000, "tasks.max": 2,
       "topics": "myserver.retail.orders_info",
       "kusto.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info','db': 'retail', 'table': 'Orders','format': 'json', 'mapping':'OrdersEventMapping'}]",
       "aad.auth.authority": engine.tenant(),
       "kusto.url": front,
       "aad.auth.appid": engine.app_id(), "aad.auth.appkey": engine.app_key(),
       "key.converter": "org.apache.kafka.connect.storage.StringConverter",
       "transforms": "unwrap",
       "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState"}});
    let (code, body) = http(rest, "POST", "/connectors", Some(&sink.to_string()));
    assert_eq!(code, 201, "{body}");
    let (code, body) = http(rest, "POST", "/connectors", Some(&source.to_string()));
    assert_eq!(code, 201, "{body}");

    // Changes while streaming: more orders and an update.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT 400 + g, 200 + g, 'Chicago', '2020-10-09 08:00:00' FROM generate_series(1, 20) g;
         UPDATE retail.orders_info SET amount = 999 WHERE orderid = 1;",
    )
    .await
    .expect("changes");

    // 40 snapshot rows, 20 inserts, 1 update: 61 rows (ADX keeps every
    // change); the last batch closes on flush.interval.ms (30 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = store.rows("retail", "Orders");
        if rows.len() >= 61 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 61 rows; log:\n{}",
            rows.len(),
            tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = store.rows("retail", "Orders");
    assert_eq!(rows.len(), 61, "{rows:?}");
    let order1: Vec<&serde_json::Map<String, Json>> =
        rows.iter().filter(|r| r["orderid"] == "1").collect();
    let mut amounts: Vec<i64> = order1.iter().filter_map(|r| r["amount"].as_i64()).collect();
    amounts.sort();
    assert_eq!(amounts, [101, 999], "{order1:?}");
    assert_eq!(rows.iter().filter(|r| r["city"] == "Chicago").count(), 20);
    assert!(
        rows.iter().all(|r| r["purchase_time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2020-10-09"))),
        "{rows:?}"
    );

    let (code, status) = http(rest, "GET", "/connectors/adx-orders-sink/status", None);
    assert_eq!(code, 200);
    assert_eq!(status["connector"]["state"], "RUNNING", "{status}");
    assert_eq!(engine.violations(), Vec::<String>::new());
    assert_eq!(dm.violations(), Vec::<String>::new());
    drop(pg);
}

/// The ADX stand-ins over `store`, and the one cluster URL in front of
/// them.
async fn start_adx(store: &Store) -> (FakeEngine, Azurite, FakeDm, String) {
    let engine = FakeEngine::start(store.clone()).await.expect("engine");
    let azurite = Azurite::start().expect("azurite");
    let dm = FakeDm::start(store.clone(), &azurite, engine.token_validator())
        .await
        .expect("dm");
    let front = start_front(&engine, &dm).await;
    engine.accept_audience(&front);
    (engine, azurite, dm, front)
}

/// A fresh database with the scenario's table and `n` orders.
async fn orders_db(name: &str, n: i64) -> (String, tokio_postgres::Client) {
    let (db, pg) = fresh_db(name).await;
    pg.batch_execute(ORDERS).await.expect("schema");
    insert_orders(&pg, n).await;
    (db, pg)
}

/// The scenario's source connector on `db`, with `extra` settings.
fn pg_source(db: &str, slot: &str, extra: Json) -> Json {
    let mut config = json!({
       "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
       "database.hostname": "127.0.0.1", "database.port": cluster().port().to_string(),
       "database.user": "postgres", "database.dbname": db,
       "database.server.name": "myserver", "slot.name": slot,
       "table.include.list": "retail.orders_info"});
    merge(&mut config, extra);
    json!({"name": "pg-orders-source", "config": config})
}

/// The scenario's ADX sink (unwrapped records into `Orders`) through
/// `front`, with `extra` settings.
fn adx_sink(engine: &FakeEngine, front: &str, extra: Json) -> Json {
    let mut config = json!({
       "connector.class": "com.microsoft.azure.kusto.kafka.connect.sink.KustoSinkConnector",
       "tasks.max": 1,
       "topics": "myserver.retail.orders_info",
       "kusto.tables.topics.mapping": "[{'topic': 'myserver.retail.orders_info','db': 'retail', 'table': 'Orders','format': 'json', 'mapping':'OrdersEventMapping'}]",
       "kusto.ingestion.url": front,
       "aad.auth.authority": engine.tenant(),
       "aad.auth.appid": engine.app_id(), "aad.auth.appkey": engine.app_key(),
       "key.converter": "org.apache.kafka.connect.storage.StringConverter",
       "transforms": "unwrap",
       "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState"});
    merge(&mut config, extra);
    json!({"name": "adx-orders-sink", "config": config})
}

fn merge(into: &mut Json, extra: Json) {
    if let (Some(into), Json::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

/// Starts `sluice connect` with `files`, logging to `log`, with Azure AD at
/// `authority` (`AZURE_AUTHORITY_HOST`).
fn spawn_worker(files: &[&std::path::Path], log: &std::path::Path, authority: &str) -> Killed {
    let child = Command::new(sluice_bin())
        .arg("connect")
        .args(files)
        .env("RUST_LOG", "info")
        .env("AZURE_AUTHORITY_HOST", authority)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log"),
        )
        .spawn()
        .expect("spawn");
    Killed(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn over_kafka_with_dedup_a_sink_killed_mid_batch_leaves_no_duplicates() {
    let tansu = sluice_testkit::tansu::Tansu::start();
    let (db, pg) = orders_db("kustodedup", 120).await;
    let store = scenario_store();
    let (engine, _azurite, dm, front) = start_adx(&store).await;
    // Queue messages wait: a killed sink's last batches are posted but not
    // ingested, so the replay meets them in flight.
    dm.pause_ingestion();

    let dir = tempfile::tempdir().expect("temp");
    let path = |f: &str| dir.path().join(f);
    let worker = |name: &str| {
        format!(
            "bootstrap.servers={}\noffset.storage.file.filename={}\noffset.flush.interval.ms=500\n\
             consumer.session.timeout.ms=6000\nconsumer.heartbeat.interval.ms=500\n",
            tansu.bootstrap(),
            path(&format!("{name}.offsets")).display()
        )
    };
    std::fs::write(path("source-worker.properties"), worker("source")).expect("write");
    std::fs::write(path("sink-worker.properties"), worker("sink")).expect("write");
    let source = pg_source(&db, "kusto_dedup", json!({}));
    let sink = adx_sink(
        &engine,
        &front,
        json!({"flush.size.bytes": 2000, "flush.interval.ms": 1000,
               "kusto.ingestion.dedup": true,
               "tempdir.path": path("kusto-tmp").display().to_string()}),
    );
    std::fs::write(path("source.json"), source.to_string()).expect("write");
    std::fs::write(path("sink.json"), sink.to_string()).expect("write");
    let authority = engine.url();
    let _source = spawn_worker(
        &[&path("source-worker.properties"), &path("source.json")],
        &path("source.log"),
        &authority,
    );
    let sink_files = [path("sink-worker.properties"), path("sink.json")];
    let sink_files: Vec<&std::path::Path> = sink_files.iter().map(|p| p.as_path()).collect();
    let mut sink_worker = spawn_worker(&sink_files, &path("sink.log"), &authority);

    // Kill -9 the sink the moment its second batch is posted: posted,
    // not yet committed to Kafka.
    let posted = |dm: &FakeDm| {
        dm.storage_requests()
            .iter()
            .filter(|r| r.service == "queue" && r.method == "POST" && r.status < 300)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while posted(&dm) < 2 {
        assert!(
            Instant::now() < deadline,
            "no batch posted; sink log:\n{}",
            tail(
                &std::fs::read_to_string(path("sink.log")).unwrap_or_default(),
                40
            )
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sink_worker);
    let before_restart = posted(&dm);
    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT 500 + g, 300 + g, 'Seattle', '2020-10-09 09:00:00' FROM generate_series(1, 30) g",
    )
    .await
    .expect("more rows");
    sink_worker = spawn_worker(&sink_files, &path("sink.log"), &authority);
    dm.resume_ingestion();

    let deadline = Instant::now() + Duration::from_secs(120);
    while store.rows("retail", "Orders").len() < 150 {
        assert!(
            Instant::now() < deadline,
            "{} of 150 rows; sink log:\n{}",
            store.rows("retail", "Orders").len(),
            tail(
                &std::fs::read_to_string(path("sink.log")).unwrap_or_default(),
                40
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let any duplicate still in the queue land.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dm.queues_empty().await.expect("queues") {
        assert!(
            Instant::now() < deadline,
            "the ingestion queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = store.rows("retail", "Orders");
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r["orderid"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "every order");
    assert_eq!(rows.len(), 150, "and each once");
    let skipped = dm
        .outcomes()
        .values()
        .filter(|o| o.contains("Skipped"))
        .count();
    eprintln!(
        "batches posted before the kill: {before_restart}; replayed batches ADX skipped: {skipped}"
    );
    assert_eq!(engine.violations(), Vec::<String>::new());
    assert_eq!(dm.violations(), Vec::<String>::new());
    drop(sink_worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_snapshot_with_reconcile_leaves_adx_with_only_what_postgres_has() {
    let (db, pg) = orders_db("kustoresnap", 60).await;
    let store = scenario_store();
    let (engine, _azurite, dm, front) = start_adx(&store).await;

    let dir = tempfile::tempdir().expect("temp");
    let path = |f: &str| dir.path().join(f);
    std::fs::write(
        path("worker.properties"),
        format!(
            "offset.storage.file.filename={}\noffset.flush.interval.ms=500\n",
            path("offsets.json").display()
        ),
    )
    .expect("write");
    // Every start snapshots again, as after a lost slot.
    let source = pg_source(&db, "kusto_resnap", json!({"snapshot.mode": "always"}));
    let sink = adx_sink(
        &engine,
        &front,
        json!({"flush.size.bytes": 4000, "flush.interval.ms": 500,
               "kusto.ingestion.status.check": true,
               "kusto.snapshot.reconcile": true,
               "transforms.unwrap.add.fields": "op,lsn,snapshot"}),
    );
    std::fs::write(path("source.json"), source.to_string()).expect("write");
    std::fs::write(path("sink.json"), sink.to_string()).expect("write");
    let files = [
        path("worker.properties"),
        path("source.json"),
        path("sink.json"),
    ];
    let files: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let authority = engine.url();
    let log = path("sluice.log");
    let orders = || {
        let mut ids: Vec<String> = store
            .rows("retail", "Orders")
            .iter()
            .filter_map(|r| r["orderid"].as_str().map(str::to_owned))
            .collect();
        ids.sort_by_key(|id| id.parse::<i64>().unwrap_or(-1));
        ids
    };
    let wait_for = |want: Vec<String>, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while orders() != want {
            assert!(
                Instant::now() < deadline,
                "{what}: the table has {:?}; log:\n{}",
                orders(),
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let all: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
    let worker = spawn_worker(&files, &log, &authority);
    wait_for(all.clone(), "the first snapshot");
    drop(worker);

    // Rows deleted while nothing ran: no delete event will ever say so.
    pg.batch_execute("DELETE FROM retail.orders_info WHERE orderid % 7 = 0")
        .await
        .expect("deletes");
    let kept: Vec<String> = (1..=60)
        .filter(|i| i % 7 != 0)
        .map(|i| i.to_string())
        .collect();
    let _worker = spawn_worker(&files, &log, &authority);
    wait_for(kept.clone(), "the second snapshot, reconciled");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("extent(s) of older generations dropped"),
        "{}",
        tail(&text, 40)
    );
    // Streaming goes on in the new generation.
    pg.batch_execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         VALUES (999, 999, 'Seattle', '2020-10-09 09:00:00')",
    )
    .await
    .expect("insert");
    let mut more = kept;
    more.push("61".into());
    wait_for(more, "a change streamed after the second snapshot");
    let tags: std::collections::BTreeSet<String> = store
        .extents("retail", "Orders")
        .into_iter()
        .flatten()
        .filter(|t| t.starts_with("drop-by:sluice/"))
        .collect();
    assert_eq!(tags.len(), 1, "one generation left: {tags:?}");
    assert_eq!(engine.violations(), Vec::<String>::new());
    assert_eq!(dm.violations(), Vec::<String>::new());
}
