//! The REST API over real HTTP against a running worker: a ticking source
//! (defined here) and the file sink, managed entirely at runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{json, Value as Json};
use sluice_connect::rest::{RestConfig, RestServer};
use sluice_connect::{Registry, Worker};
use sluice_core::config::{ConfigDef, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SourceContext, SourceTask};
use sluice_core::record::{SourceOffset, SourceRecord};
use sluice_core::schema::{prim, SchemaType};
use sluice_core::value::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

/// Sends `tick-<n>` to `topic` every `interval.ms`, forever, resuming after
/// its stored offset; fails at once when `fail` is set.
struct TickSource;

impl ConnectorPlugin for TickSource {
    fn class(&self) -> &'static str {
        "test.TickSource"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["ticks"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new("topic", ConfigType::String, "topic").required(),
            ConfigKey::new("interval.ms", ConfigType::Int, "pause between records").default("5"),
            ConfigKey::new("fail", ConfigType::Bool, "fail at once").default("false"),
            ConfigKey::new("secret.key", ConfigType::Password, "a secret"),
        ])
    }
    fn validate(&self, props: &Props) -> Result<Vec<String>, ConfigErrors> {
        // Quotes the secret, as careless plugins do: the worker must hide it.
        match props.get("secret.key") {
            Some(v) if v.starts_with("wrong") => {
                Err(ConfigErrors(vec![sluice_core::config::ConfigError::new(
                    "secret.key",
                    Some(v),
                    "not accepted",
                )]))
            }
            _ => Ok(Vec::new()),
        }
    }
    fn create_source_task(&self, props: &Props) -> anyhow::Result<Box<dyn SourceTask>> {
        let parsed = self
            .config_def()
            .parse(props, &["name", "connector.class", "tasks.max"])?;
        Ok(Box::new(TickTask {
            topic: Arc::from(parsed.string("topic")),
            interval: Duration::from_millis(parsed.int("interval.ms").max(1) as u64),
            fail: parsed.bool("fail"),
        }))
    }
}

struct TickTask {
    topic: Arc<str>,
    interval: Duration,
    fail: bool,
}

fn partition() -> serde_json::Map<String, Json> {
    let mut p = serde_json::Map::new();
    p.insert("source".into(), "ticks".into());
    p
}

#[async_trait]
impl SourceTask for TickTask {
    async fn run(&mut self, ctx: SourceContext) -> anyhow::Result<()> {
        if self.fail {
            anyhow::bail!("tick source failed on purpose");
        }
        let mut n = ctx
            .offsets
            .read(&partition())
            .and_then(|o| o.get("n").and_then(Json::as_i64))
            .map_or(0, |n| n + 1);
        let bytes = prim::of(SchemaType::Bytes, false);
        loop {
            let mut offset = serde_json::Map::new();
            offset.insert("n".into(), n.into());
            let record = SourceRecord {
                topic: Arc::clone(&self.topic),
                key_schema: None,
                key: None,
                value_schema: Some(Arc::clone(&bytes)),
                value: Some(Value::Bytes(format!("tick-{n}").into_bytes())),
                timestamp_ms: None,
                headers: Vec::new(),
                offset: Some(Arc::new(SourceOffset {
                    partition: partition(),
                    offset,
                })),
            };
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = ctx.sender.send(vec![record]) => r?,
            }
            n += 1;
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

struct Running {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), sluice_connect::WorkerError>>,
    auth: Option<String>,
}

impl Running {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Json>) -> (u16, Json) {
        http(self.addr, method, path, body, self.auth.as_deref()).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let r = self.worker.await.expect("worker task");
        r.expect("worker stopped cleanly");
    }
}

/// A worker with the REST API on a free loopback port; `extra` are worker
/// properties.
async fn start(extra: &[(&str, &str)]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut props: Props = [
        (
            "offset.storage.file.filename",
            dir.path().join("offsets").display().to_string(),
        ),
        ("offset.flush.interval.ms", "20".to_string()),
        (
            "key.converter",
            "org.apache.kafka.connect.converters.ByteArrayConverter".to_string(),
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.converters.ByteArrayConverter".to_string(),
        ),
        ("listeners", "http://127.0.0.1:0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        props.insert(k.to_string(), v.to_string());
    }
    let registry = Registry::new(vec![
        sluice_connect::file_sink::plugin(),
        Arc::new(TickSource),
    ]);
    let mut worker = Worker::new(&registry, &props, &[]).expect("valid worker");
    worker.set_stop_on_task_failure(false);
    let server = RestServer::bind(RestConfig::from_props(&props).expect("REST config"))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    worker.set_worker_id(addr.to_string());
    let shutdown = CancellationToken::new();
    tokio::spawn(server.serve(worker.handle(), shutdown.clone()));
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    Running {
        addr,
        dir,
        shutdown,
        worker,
        auth: None,
    }
}

/// One HTTP/1.1 request over a fresh connection; the body read to EOF.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Json>,
    auth: Option<&str>,
) -> (u16, Json) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(a);
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("headers end");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    let json = if body.trim().is_empty() {
        Json::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"))
    };
    (status, json)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (up to 10 s) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn sink_config(out: &Path) -> Json {
    json!({
        "connector.class": "FileStreamSink",
        "topics": "ticks",
        "file": out.display().to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_are_managed_at_runtime() {
    let w = start(&[]).await;

    let (code, root) = w.call("GET", "/", None).await;
    assert_eq!(code, 200);
    assert!(
        root["version"].is_string() && root["commit"].is_string(),
        "{root}"
    );

    let (code, plugins) = w.call("GET", "/connector-plugins", None).await;
    assert_eq!(code, 200);
    let classes: Vec<&str> = plugins
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["class"].as_str())
        .collect();
    assert!(
        classes.contains(&"org.apache.kafka.connect.file.FileStreamSinkConnector")
            && classes.contains(&"test.TickSource"),
        "{plugins}"
    );

    // Create a source; its Password key is masked when shown.
    let (code, created) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "ticks", "config": {
                "connector.class": "ticks", "topic": "ticks", "secret.key": "s3cr3t",
                "producer.override.sasl.jaas.config": "jaas"
            }})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["name"], "ticks");
    assert_eq!(created["type"], "source");
    assert_eq!(created["config"]["secret.key"], "[hidden]");
    assert_eq!(
        created["config"]["producer.override.sasl.jaas.config"],
        "[hidden]"
    );
    assert_eq!(created["tasks"], json!([{"connector": "ticks", "task": 0}]));

    // The same name again: 409.
    let (code, err) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "ticks", "config": {"connector.class": "ticks", "topic": "t"}})),
        )
        .await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(err["error_code"], 409);
    assert!(err["message"].as_str().expect("message").contains("ticks"));

    // An invalid config: 400 naming the key.
    let (code, err) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "bad", "config": {"connector.class": "ticks", "topic": "t", "interval.ms": "soon"}})),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["error_code"], 400);
    let msg = err["message"].as_str().expect("message");
    assert!(
        msg.contains("'interval.ms'") && msg.contains("soon"),
        "{msg}"
    );
    let (code, err) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "bad", "config": {"connector.class": "nosuch"}})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(err["message"]
        .as_str()
        .expect("message")
        .contains("'connector.class'"));
    let (code, _) = w
        .call("POST", "/connectors", Some(json!({"config": {}})))
        .await;
    assert_eq!(code, 400, "a name is required");
    // Messages quoting a secret value show it hidden.
    let (code, err) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "bad", "config": {"connector.class": "ticks", "topic": "t", "secret.key": "wrong-s3cr3t"}})),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    let msg = err["message"].as_str().expect("message");
    assert!(
        msg.contains("'secret.key'") && msg.contains("[hidden]"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-s3cr3t"), "{msg}");

    // Created stopped: no tasks until resumed.
    let (code, created) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "later", "config": {"connector.class": "ticks", "topic": "later"}, "initial_state": "STOPPED"})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let (_, status) = w.call("GET", "/connectors/later/status", None).await;
    assert_eq!(status["connector"]["state"], "STOPPED");
    assert_eq!(status["tasks"], json!([]));
    let (code, _) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "x", "config": {"connector.class": "ticks", "topic": "t"}, "initial_state": "SLEEPING"})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(w.call("DELETE", "/connectors/later", None).await.0, 204);

    // Unknown connectors: 404 with Kafka's message.
    for (method, path) in [
        ("GET", "/connectors/nope"),
        ("GET", "/connectors/nope/status"),
        ("GET", "/connectors/nope/config"),
        ("GET", "/connectors/nope/tasks"),
        ("GET", "/connectors/nope/offsets"),
        ("PUT", "/connectors/nope/pause"),
        ("DELETE", "/connectors/nope"),
    ] {
        let (code, err) = w.call(method, path, None).await;
        assert_eq!(code, 404, "{method} {path}");
        assert_eq!(
            err["message"], "Connector nope not found",
            "{method} {path}"
        );
        assert_eq!(err["error_code"], 404);
    }

    // Unknown paths and methods answer in the same error shape.
    let (code, err) = w.call("GET", "/nowhere", None).await;
    assert_eq!((code, err["error_code"].as_i64()), (404, Some(404)));
    let (code, err) = w.call("DELETE", "/connectors", None).await;
    assert_eq!((code, err["error_code"].as_i64()), (405, Some(405)));

    let (code, config) = w.call("GET", "/connectors/ticks/config", None).await;
    assert_eq!(code, 200);
    assert_eq!(config["secret.key"], "[hidden]");
    assert_eq!(config["topic"], "ticks");
    assert_eq!(config["name"], "ticks");

    // A sink created while the source runs receives its records.
    let out = w.path("out.txt");
    let (code, sink) = w
        .call(
            "PUT",
            "/connectors/ticks-file/config",
            Some(sink_config(&out)),
        )
        .await;
    assert_eq!(code, 201, "{sink}");
    assert_eq!(sink["type"], "sink");
    eventually("records reach the sink created at runtime", || {
        lines(&out).len() >= 5
    })
    .await;
    assert!(lines(&out).iter().all(|l| l.starts_with("tick-")));

    let (code, names) = w.call("GET", "/connectors", None).await;
    assert_eq!(code, 200);
    assert_eq!(names, json!(["ticks", "ticks-file"]));
    let (code, expanded) = w
        .call("GET", "/connectors?expand=status&expand=info", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(expanded["ticks"]["status"]["connector"]["state"], "RUNNING");
    assert_eq!(expanded["ticks-file"]["info"]["type"], "sink");

    let (code, status) = w.call("GET", "/connectors/ticks/status", None).await;
    assert_eq!(code, 200);
    assert_eq!(status["name"], "ticks");
    assert_eq!(status["type"], "source");
    assert_eq!(status["connector"]["worker_id"], w.addr.to_string());
    assert_eq!(status["tasks"][0]["state"], "RUNNING");
    assert_eq!(status["tasks"][0]["id"], 0);
    let (code, task) = w
        .call("GET", "/connectors/ticks/tasks/0/status", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(task["state"], "RUNNING");
    let (code, _) = w
        .call("GET", "/connectors/ticks/tasks/7/status", None)
        .await;
    assert_eq!(code, 404);
    let (code, tasks) = w.call("GET", "/connectors/ticks/tasks", None).await;
    assert_eq!(code, 200);
    assert_eq!(tasks[0]["id"], json!({"connector": "ticks", "task": 0}));
    assert_eq!(tasks[0]["config"]["secret.key"], "[hidden]");

    // Active topics: what the source wrote to and the sink was routed.
    for c in ["ticks", "ticks-file"] {
        let (code, topics) = w
            .call("GET", &format!("/connectors/{c}/topics"), None)
            .await;
        assert_eq!(code, 200);
        assert_eq!(topics, json!({ c: {"topics": ["ticks"]} }));
    }
    // A running sink notes its topics again with its next records: reset
    // while it is stopped, as users do before re-pointing it.
    let (code, _) = w.call("PUT", "/connectors/ticks-file/stop", None).await;
    assert_eq!(code, 204);
    let (code, _) = w
        .call("PUT", "/connectors/ticks-file/topics/reset", None)
        .await;
    assert_eq!(code, 202);
    let (_, topics) = w.call("GET", "/connectors/ticks-file/topics", None).await;
    assert_eq!(topics, json!({"ticks-file": {"topics": []}}));
    let (code, _) = w.call("PUT", "/connectors/ticks-file/resume", None).await;
    assert_eq!(code, 202);
    assert_eq!(w.call("GET", "/connectors/nope/topics", None).await.0, 404);

    // Offsets come from the offset store once committed.
    let mut offsets = Json::Null;
    for _ in 0..250 {
        offsets = w.call("GET", "/connectors/ticks/offsets", None).await.1;
        if offsets["offsets"].as_array().is_some_and(|o| !o.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        offsets["offsets"][0]["partition"],
        json!({"source": "ticks"})
    );
    assert!(offsets["offsets"][0]["offset"]["n"].is_i64(), "{offsets}");

    // Paused: the source produces nothing.
    let (code, _) = w.call("PUT", "/connectors/ticks/pause", None).await;
    assert_eq!(code, 202);
    let (_, status) = w.call("GET", "/connectors/ticks/status", None).await;
    assert_eq!(status["connector"]["state"], "PAUSED");
    assert_eq!(status["tasks"][0]["state"], "PAUSED");
    // Records sent before the pause are flushed within the sink's 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = lines(&out).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(lines(&out).len(), paused_at, "no records while paused");
    let (code, _) = w.call("PUT", "/connectors/ticks/resume", None).await;
    assert_eq!(code, 202);
    eventually("records flow again after resume", || {
        lines(&out).len() > paused_at + 3
    })
    .await;

    // A paused sink stops consuming; records wait for it.
    let (code, _) = w.call("PUT", "/connectors/ticks-file/pause", None).await;
    assert_eq!(code, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sink_paused_at = lines(&out).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        lines(&out).len(),
        sink_paused_at,
        "a paused sink writes nothing"
    );
    // Its queue is full and the source waits for room; sinks can still be
    // added and deleted meanwhile.
    let out_b = w.path("out-b.txt");
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        w.call(
            "PUT",
            "/connectors/ticks-b/config",
            Some(sink_config(&out_b)),
        ),
    )
    .await
    .expect("creating a sink does not wait for a paused one");
    assert_eq!(created.0, 201, "{}", created.1);
    let deleted = tokio::time::timeout(
        Duration::from_secs(10),
        w.call("DELETE", "/connectors/ticks-b", None),
    )
    .await
    .expect("deleting a sink does not wait for a paused one");
    assert_eq!(deleted.0, 204);
    let (code, _) = w.call("PUT", "/connectors/ticks-file/resume", None).await;
    assert_eq!(code, 202);
    eventually("the sink consumes again", || {
        lines(&out).len() > sink_paused_at + 3
    })
    .await;

    // Reconfiguring restarts the sink with the new file.
    let out2 = w.path("out2.txt");
    let (code, updated) = w
        .call(
            "PUT",
            "/connectors/ticks-file/config",
            Some(sink_config(&out2)),
        )
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["config"]["file"], out2.display().to_string());
    eventually("the reconfigured sink writes its new file", || {
        lines(&out2).len() >= 3
    })
    .await;
    // The old tasks wrote what reached them before the new ones took over:
    // across both files no record is missing.
    let mut seen: Vec<i64> = lines(&out)
        .iter()
        .chain(lines(&out2).iter())
        .map(|l| {
            l.trim_start_matches("tick-")
                .parse()
                .unwrap_or_else(|_| panic!("a tick line: {l}"))
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let (first, last) = (seen[0], seen[seen.len() - 1]);
    assert_eq!(
        seen.len() as i64,
        last - first + 1,
        "ticks {first}..={last} all written across the reconfigure"
    );

    // PATCH changes one key.
    let (code, patched) = w
        .call(
            "PATCH",
            "/connectors/ticks/config",
            Some(json!({"interval.ms": "3"})),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    let (_, config) = w.call("GET", "/connectors/ticks/config", None).await;
    assert_eq!(config["interval.ms"], "3");

    let (code, restarted) = w
        .call("POST", "/connectors/ticks/restart?includeTasks=true", None)
        .await;
    assert_eq!(code, 202, "{restarted}");
    assert_eq!(restarted["tasks"][0]["state"], "RUNNING");
    let (code, _) = w.call("POST", "/connectors/ticks/restart", None).await;
    assert_eq!(code, 204);

    // Stopped: no tasks, config kept.
    let (code, _) = w.call("PUT", "/connectors/ticks/stop", None).await;
    assert_eq!(code, 204);
    let (_, status) = w.call("GET", "/connectors/ticks/status", None).await;
    assert_eq!(status["connector"]["state"], "STOPPED");
    assert_eq!(status["tasks"], json!([]));
    // Offsets change only while stopped; the source resumes after them.
    let (code, err) = w
        .call("DELETE", "/connectors/ticks-file/offsets", None)
        .await;
    assert_eq!(code, 400, "{err}");
    let (code, _) = w
        .call(
            "PATCH",
            "/connectors/ticks/offsets",
            Some(json!({"offsets": [{"partition": {"source": "ticks"}, "offset": "n"}]})),
        )
        .await;
    assert_eq!(code, 400, "an offset must be an object");
    let (code, reply) = w
        .call(
            "PATCH",
            "/connectors/ticks/offsets",
            Some(json!({"offsets": [{"partition": {"source": "ticks"}, "offset": {"n": 100000}}]})),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    let (_, offsets) = w.call("GET", "/connectors/ticks/offsets", None).await;
    assert_eq!(
        offsets,
        json!({"offsets": [{"partition": {"source": "ticks"}, "offset": {"n": 100000}}]})
    );
    let (code, _) = w.call("PUT", "/connectors/ticks/resume", None).await;
    assert_eq!(code, 202);
    eventually("the source resumes after the altered offset", || {
        lines(&out2).iter().any(|l| l == "tick-100001")
    })
    .await;
    let (code, err) = w.call("DELETE", "/connectors/ticks/offsets", None).await;
    assert_eq!(code, 400, "not while running: {err}");
    assert!(err["message"]
        .as_str()
        .expect("message")
        .contains("STOPPED"));

    // Deleting the sink: routing stops, the source is not blocked (its
    // offsets keep advancing with no sink reading its topic).
    let (code, _) = w.call("DELETE", "/connectors/ticks-file", None).await;
    assert_eq!(code, 204);
    let (code, _) = w.call("GET", "/connectors/ticks-file", None).await;
    assert_eq!(code, 404);
    let written = lines(&out2).len();
    let n_of = |o: &Json| o["offsets"][0]["offset"]["n"].as_i64().unwrap_or(-1);
    let before = n_of(&w.call("GET", "/connectors/ticks/offsets", None).await.1);
    let mut after = before;
    for _ in 0..250 {
        after = n_of(&w.call("GET", "/connectors/ticks/offsets", None).await.1);
        if after > before + 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        after > before + 5,
        "source offsets advance after the sink is gone: {before} -> {after}"
    );
    assert!(
        lines(&out2).len() <= written + 1,
        "nothing is written after the delete"
    );

    // Deleting keeps offsets: re-created, the source resumes after them.
    let (code, _) = w.call("DELETE", "/connectors/ticks", None).await;
    assert_eq!(code, 204);
    let (_, names) = w.call("GET", "/connectors", None).await;
    assert_eq!(names, json!([]));
    let (code, _) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "ticks", "config": {"connector.class": "ticks", "topic": "ticks"}, "initial_state": "STOPPED"})),
        )
        .await;
    assert_eq!(code, 201);
    let (_, offsets) = w.call("GET", "/connectors/ticks/offsets", None).await;
    assert!(
        n_of(&offsets) > 100000,
        "a deleted connector's offsets are kept: {offsets}"
    );
    let (code, reply) = w.call("DELETE", "/connectors/ticks/offsets", None).await;
    assert_eq!(code, 200, "{reply}");
    let (_, offsets) = w.call("GET", "/connectors/ticks/offsets", None).await;
    assert_eq!(offsets, json!({"offsets": []}));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_answers_config_infos() {
    let w = start(&[]).await;
    let (code, infos) = w
        .call(
            "PUT",
            "/connector-plugins/FileStreamSinkConnector/config/validate",
            Some(json!({
                "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "name": "v",
                "topics": "a",
                "topics.regex": "b.*",
                "sluice.file.format": "xml",
            })),
        )
        .await;
    assert_eq!(code, 200, "{infos}");
    assert_eq!(
        infos["name"],
        "org.apache.kafka.connect.file.FileStreamSinkConnector"
    );
    assert_eq!(
        infos["groups"],
        json!(["Common", "FileStreamSinkConnector"])
    );
    assert_eq!(infos["error_count"], 2, "{infos}");
    let configs = infos["configs"].as_array().expect("configs");
    let find = |name: &str| {
        configs
            .iter()
            .find(|c| c["definition"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {infos}"))
            .clone()
    };
    let format = find("sluice.file.format");
    assert_eq!(format["definition"]["type"], "STRING");
    assert_eq!(format["definition"]["default_value"], "value");
    assert_eq!(format["definition"]["required"], false);
    assert!(format["definition"]["importance"].is_string());
    assert!(format["definition"]["documentation"].is_string());
    assert_eq!(format["value"]["value"], "xml");
    assert_eq!(
        format["value"]["recommended_values"],
        json!(["value", "record"])
    );
    assert_eq!(format["value"]["visible"], true);
    assert_eq!(format["value"]["errors"].as_array().map(Vec::len), Some(1));
    assert!(find("topics")["value"]["errors"][0]
        .as_str()
        .expect("error")
        .contains("mutually exclusive"));
    assert_eq!(find("name")["value"]["errors"], json!([]));

    // A valid config has no errors; a source's secrets are masked.
    let (code, infos) = w
        .call(
            "PUT",
            "/connector-plugins/test.TickSource/config/validate",
            Some(json!({"name": "t", "topic": "x", "secret.key": "pw"})),
        )
        .await;
    assert_eq!(code, 200, "{infos}");
    assert_eq!(infos["error_count"], 0, "{infos}");
    let secret = infos["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .find(|c| c["definition"]["name"] == "secret.key")
        .expect("secret.key")
        .clone();
    assert_eq!(secret["definition"]["type"], "PASSWORD");
    assert_eq!(secret["value"]["value"], "[hidden]");

    let (code, err) = w
        .call(
            "PUT",
            "/connector-plugins/NoSuch/config/validate",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 404, "{err}");
    let (code, err) = w
        .call(
            "PUT",
            "/connector-plugins/FileStreamSinkConnector/config/validate",
            Some(json!({"connector.class": "ticks"})),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_reported_and_restarted() {
    let w = start(&[]).await;
    let (code, _) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "f", "config": {"connector.class": "ticks", "topic": "x", "fail": "true"}})),
        )
        .await;
    assert_eq!(code, 201);
    let mut status = Json::Null;
    for _ in 0..250 {
        status = w.call("GET", "/connectors/f/status", None).await.1;
        if status["tasks"][0]["state"] == "FAILED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status["tasks"][0]["state"], "FAILED", "{status}");
    assert!(status["tasks"][0]["trace"]
        .as_str()
        .expect("trace")
        .contains("failed on purpose"));
    // Fixed config, then restart only what failed.
    let (code, _) = w
        .call(
            "PATCH",
            "/connectors/f/config",
            Some(json!({"fail": "false"})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, status) = w
        .call(
            "POST",
            "/connectors/f/restart?includeTasks=true&onlyFailed=true",
            None,
        )
        .await;
    assert_eq!(code, 202, "{status}");
    assert_eq!(status["tasks"][0]["state"], "RUNNING", "{status}");
    // Restarted and running: the worker ends cleanly.
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_failed_at_the_end_is_the_workers_error() {
    let w = start(&[]).await;
    let (code, _) = w
        .call(
            "POST",
            "/connectors",
            Some(json!({"name": "f", "config": {"connector.class": "ticks", "topic": "x", "fail": "true"}})),
        )
        .await;
    assert_eq!(code, 201);
    for _ in 0..250 {
        let status = w.call("GET", "/connectors/f/status", None).await.1;
        if status["tasks"][0]["state"] == "FAILED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.shutdown.cancel();
    let err = w
        .worker
        .await
        .expect("worker task")
        .expect_err("a failed task")
        .to_string();
    assert!(err.contains("failed on purpose"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_required_when_configured() {
    let mut w = start(&[
        ("rest.basic.auth.user", "admin"),
        ("rest.basic.auth.password", "pw"),
    ])
    .await;
    let (code, err) = w.call("GET", "/connectors", None).await;
    assert_eq!(code, 401);
    assert_eq!(err["error_code"], 401);
    w.auth = Some("admin:wrong".into());
    assert_eq!(w.call("GET", "/connectors", None).await.0, 401);
    w.auth = Some("admin:pw".into());
    let (code, names) = w.call("GET", "/connectors", None).await;
    assert_eq!(code, 200);
    assert_eq!(names, json!([]));
    w.stop().await;
}
