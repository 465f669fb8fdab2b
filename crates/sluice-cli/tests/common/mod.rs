//! Shared helpers: run the real `sluice` binary against a throwaway
//! PostgreSQL cluster and read what the file sink wrote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub use sluice_testkit::shared as cluster;

/// A pipeline: configs in a temp dir, a running `sluice connect`.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub db: String,
    pub slot: String,
    pub child: Option<Child>,
    pub out: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the `sluice` process.
    pub env: Vec<(String, String)>,
    runs: u32,
    /// Bytes of the sink's file counted by `line_count`, and their lines.
    lines_seen: std::sync::Mutex<(u64, usize)>,
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

impl Pipeline {
    /// Configs for database `db` with extra source properties.
    pub fn new(db: &str, source_extra: &[(&str, &str)]) -> Pipeline {
        Self::with_sink(db, source_extra, &[])
    }

    pub fn with_sink(
        db: &str,
        source_extra: &[(&str, &str)],
        sink_extra: &[(&str, &str)],
    ) -> Pipeline {
        let dir = tempfile::tempdir().expect("temp dir");
        let c = cluster();
        let slot = format!("slot_{db}");
        let out = dir.path().join("events.jsonl");
        let mut source = serde_json::Map::new();
        for (k, v) in [
            (
                "connector.class",
                "io.debezium.connector.postgresql.PostgresConnector",
            ),
            ("database.hostname", "127.0.0.1"),
            ("database.user", "postgres"),
            ("database.dbname", db),
            ("topic.prefix", "test"),
            ("slot.name", slot.as_str()),
            ("publication.name", &format!("pub_{db}")),
            ("database.sslmode", "disable"),
            ("status.update.interval.ms", "1000"),
        ] {
            source.insert(k.into(), Json::String(v.into()));
        }
        source.insert("database.port".into(), Json::String(c.port().to_string()));
        for (k, v) in source_extra {
            source.insert((*k).into(), Json::String((*v).into()));
        }
        let source = serde_json::json!({"name": "pg-source", "config": source});
        let mut sink = serde_json::Map::new();
        sink.insert(
            "connector.class".into(),
            "org.apache.kafka.connect.file.FileStreamSinkConnector".into(),
        );
        sink.insert("file".into(), Json::String(out.display().to_string()));
        sink.insert(
            "topics.regex".into(),
            "test\\..*|__debezium-heartbeat\\..*".into(),
        );
        sink.insert("sluice.file.format".into(), "record".into());
        for (k, v) in sink_extra {
            sink.insert((*k).into(), Json::String((*v).into()));
        }
        let sink = serde_json::json!({"name": "file-sink", "config": sink});
        std::fs::write(dir.path().join("source.json"), source.to_string()).expect("write");
        std::fs::write(dir.path().join("sink.json"), sink.to_string()).expect("write");
        std::fs::write(
            dir.path().join("worker.properties"),
            format!(
                "offset.storage.file.filename={}\noffset.flush.interval.ms=200\n\
                 sluice.rest.enabled=false\n\
                 key.converter=org.apache.kafka.connect.json.JsonConverter\n\
                 value.converter=org.apache.kafka.connect.json.JsonConverter\n",
                dir.path().join("offsets.json").display()
            ),
        )
        .expect("write");
        let log = dir.path().join("sluice.log");
        Pipeline {
            dir,
            db: db.to_string(),
            slot,
            child: None,
            out,
            log,
            env: Vec::new(),
            runs: 0,
            lines_seen: std::sync::Mutex::new((0, 0)),
        }
    }

    /// Serves the REST API on a free port of 127.0.0.1 instead of running
    /// without it; the port. A worker with a REST listener keeps running
    /// whatever its tasks do: their failures show in their statuses.
    pub fn enable_rest(&self) -> u16 {
        let port = sluice_testkit::free_port().expect("free port");
        let worker = self.path("worker.properties");
        let w = std::fs::read_to_string(&worker)
            .expect("read")
            .replace("sluice.rest.enabled=false\n", "");
        std::fs::write(&worker, format!("{w}listeners=http://127.0.0.1:{port}\n")).expect("write");
        port
    }

    /// Waits until `GET /connectors/{connector}/status` satisfies `pred`;
    /// panics with the last status and the log otherwise.
    pub fn wait_status(
        &self,
        port: u16,
        connector: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Json) -> bool,
    ) -> Json {
        let deadline = Instant::now() + timeout;
        let path = format!("/connectors/{connector}/status");
        loop {
            let status = rest_get(port, &path);
            if status.as_ref().is_some_and(&pred) {
                return status.unwrap_or_default();
            }
            if Instant::now() > deadline || self.child.is_none() || self.exited() {
                panic!(
                    "no {what} in the status of {connector}: {status:?}; log:\n{}",
                    tail(&self.log_text(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// Rewrites one source property.
    pub fn set_source(&self, key: &str, value: &str) {
        let p = self.path("source.json");
        let mut j: Json = serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
        j["config"][key] = Json::String(value.into());
        std::fs::write(p, j.to_string()).expect("write");
    }

    /// Starts `sluice connect worker source sink`.
    pub fn start(&mut self) {
        self.spawn(&["source.json", "sink.json"]);
    }

    /// Starts `sluice connect worker source` without the sink: a worker
    /// without REST listener stops (exit code 1) once its only task failed,
    /// which is how a source's failure is seen from outside. What the
    /// source sends stays in the local log for a later run with the sink.
    pub fn start_source_only(&mut self) {
        self.spawn(&["source.json"]);
    }

    fn spawn(&mut self, connectors: &[&str]) {
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(sluice_bin())
            .arg("connect")
            .arg(self.path("worker.properties"))
            .args(connectors.iter().map(|c| self.path(c)))
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = c.id() as i32;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exited(&self) -> bool {
        // try_wait needs &mut; /proc tells without reaping.
        self.child.as_ref().is_some_and(|c| {
            std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
                .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
                .unwrap_or(true)
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines the file sink wrote so far (cheap: no parsing, and only what
    /// was appended since the last call is read).
    pub fn line_count(&self) -> usize {
        use std::io::{Read as _, Seek as _};
        let mut seen = self
            .lines_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(mut f) = std::fs::File::open(&self.out) else {
            return 0;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < seen.0 {
            // Not the file counted so far: count again.
            *seen = (0, 0);
        }
        if f.seek(std::io::SeekFrom::Start(seen.0)).is_err() {
            return seen.1;
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.0 += n as u64;
                    seen.1 += buf[..n].iter().filter(|&&c| c == b'\n').count();
                }
            }
        }
        seen.1
    }

    /// Every record the file sink wrote so far.
    pub fn records(&self) -> Vec<Json> {
        read_records(&self.out)
    }

    /// Waits until `pred(records)` holds; panics with the log otherwise.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Json]) -> bool,
    ) -> Vec<Json> {
        let deadline = Instant::now() + timeout;
        loop {
            let recs = self.records();
            if pred(&recs) {
                return recs;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; {} records so far; log:\n{}",
                    recs.len(),
                    tail(&self.log_text(), 60)
                );
            }
            if self.child.is_none() || self.exited() {
                let recs = self.records();
                if pred(&recs) {
                    return recs;
                }
                panic!(
                    "sluice exited while waiting for {what}; {} records; log:\n{}",
                    recs.len(),
                    tail(&self.log_text(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for at least `n` records with a value on `topic`.
    pub fn wait_events(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Json> {
        let recs = self.wait_until(&format!("{n} events on {topic}"), timeout, |r| {
            r.iter()
                .filter(|x| x["topic"] == topic && !x["value"].is_null())
                .count()
                >= n
        });
        recs.into_iter()
            .filter(|x| x["topic"] == topic && !x["value"].is_null())
            .collect()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET `path` from the REST API on `port`: the body as JSON when the answer
/// is 200 OK, None while nothing answers (the worker is starting) or for
/// any other answer.
pub fn rest_get(port: u16, path: &str) -> Option<Json> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(out.split("\r\n\r\n").nth(1)?).ok()
}

/// The state and trace of task `task` in a connector status.
pub fn task_state(status: &Json, task: usize) -> (&str, &str) {
    let t = &status["tasks"][task];
    (
        t["state"].as_str().unwrap_or_default(),
        t["trace"].as_str().unwrap_or_default(),
    )
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn read_records(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The payload of a record's value (schemas.enable=true form).
pub fn payload(rec: &Json) -> &Json {
    if rec["value"].get("payload").is_some() {
        &rec["value"]["payload"]
    } else {
        &rec["value"]
    }
}

pub fn key_payload(rec: &Json) -> &Json {
    if rec["key"].get("payload").is_some() {
        &rec["key"]["payload"]
    } else {
        &rec["key"]
    }
}

/// A fresh database on the shared cluster, and a client to it.
pub async fn fresh_db(hint: &str) -> (String, tokio_postgres::Client) {
    let c = cluster();
    let db = c.create_database(hint).await.expect("create database");
    let client = c.connect(&db).await.expect("connect");
    (db, client)
}

/// Peak resident memory (VmHWM) of a process in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub const LONG: Duration = Duration::from_secs(120);

/// The reference scenario's table, as its users create it.
pub const ORDERS: &str = "CREATE SCHEMA retail;
    CREATE TABLE retail.orders_info (
        orderid SERIAL NOT NULL PRIMARY KEY,
        custid INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        city VARCHAR(255) NOT NULL,
        purchase_time VARCHAR(20) NOT NULL)";

/// A PostgreSQL source connector `name` of the scenario's table in `db`,
/// with topic prefix `prefix` and its own slot and publication.
pub fn orders_source(name: &str, db: &str, prefix: &str, slot: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "config": {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": "127.0.0.1",
        "database.port": cluster().port().to_string(),
        "database.user": "postgres",
        "database.dbname": db,
        "topic.prefix": prefix,
        "table.include.list": "retail.orders_info",
        "slot.name": slot,
        "publication.name": format!("pub_{slot}"),
    }})
}

/// A DuckDB sink connector `name` writing topic `<prefix>.retail.orders_info`
/// into table `orders` of `file`.
pub fn orders_duckdb_sink(name: &str, file: &str, prefix: &str) -> serde_json::Value {
    let topic = format!("{prefix}.retail.orders_info");
    serde_json::json!({"name": name, "config": {
        "connector.class": "duckdb",
        "duckdb.path": file,
        "topics": topic,
        "duckdb.tables.topics.mapping": format!("[{{'topic': '{topic}', 'table': 'orders', 'mode': 'upsert'}}]"),
    }})
}

/// Inserts `n` rows into the scenario's table.
pub async fn insert_orders(pg: &tokio_postgres::Client, n: i64) {
    pg.execute(
        "INSERT INTO retail.orders_info (custid, amount, city, purchase_time)
         SELECT g % 1000, 100 + g % 100, 'Austin', '2020-10-09 07:23:10' FROM generate_series(1, $1::bigint) g",
        &[&n],
    )
    .await
    .expect("insert");
}
