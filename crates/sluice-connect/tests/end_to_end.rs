//! The runtime end to end: a small numbered source (defined here) feeds the
//! file sink through the in-process transport, configured from real files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use sluice_connect::config_files::{load_connector, load_props};
use sluice_connect::{Registry, Worker, WorkerError};
use sluice_core::config::{ConfigDef, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SourceContext, SourceTask};
use sluice_core::record::{Header, SourceOffset, SourceRecord};
use sluice_core::schema::{prim, SchemaType};
use sluice_core::value::Value;
use tokio_util::sync::CancellationToken;

/// What the source tasks saw, for the test to check.
#[derive(Default)]
struct Seen {
    /// (task, committed n, n found in the offset file when it was announced)
    committed: Vec<(u32, i64, Option<i64>)>,
    /// (task, stored offset read at start)
    started_from: Vec<(u32, Option<Json>)>,
}

/// Emits `count` records per task: key `{"k": n % keys}`, value
/// `{"task": t, "n": n}`, a header `n`, offset `{"n": n}` in partition
/// `{"task": t}` on every record but each third (those are covered by the
/// next offset). Fails after sending when `fail` is set.
struct NumberedSource {
    seen: Arc<Mutex<Seen>>,
}

impl ConnectorPlugin for NumberedSource {
    fn class(&self) -> &'static str {
        "test.NumberedSource"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["numbered"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new("count", ConfigType::Int, "records per task").required(),
            ConfigKey::new("keys", ConfigType::Int, "distinct keys").default("10"),
            ConfigKey::new("topic", ConfigType::String, "topic").required(),
            ConfigKey::new("fail", ConfigType::Bool, "fail after sending").default("false"),
            ConfigKey::new("offsets.path", ConfigType::String, "offset file to check").required(),
            ConfigKey::new("task.index", ConfigType::Int, "set per task"),
        ])
    }
    fn validate(&self, _props: &Props) -> Result<Vec<String>, ConfigErrors> {
        Ok(Vec::new())
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        (0..max_tasks)
            .map(|i| {
                let mut p = props.clone();
                p.insert("task.index".into(), i.to_string());
                p
            })
            .collect()
    }
    fn create_source_task(&self, props: &Props) -> anyhow::Result<Box<dyn SourceTask>> {
        let parsed = self.config_def().parse(
            props,
            &[
                "name",
                "connector.class",
                "tasks.max",
                "key.converter",
                "value.converter",
            ],
        )?;
        Ok(Box::new(NumberedTask {
            count: parsed.int("count"),
            keys: parsed.int("keys"),
            topic: Arc::from(parsed.string("topic")),
            fail: parsed.bool("fail"),
            offsets_path: PathBuf::from(parsed.string("offsets.path")),
            seen: Arc::clone(&self.seen),
        }))
    }
}

struct NumberedTask {
    count: i64,
    keys: i64,
    topic: Arc<str>,
    fail: bool,
    offsets_path: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

fn partition(task: u32) -> serde_json::Map<String, Json> {
    let mut p = serde_json::Map::new();
    p.insert("task".into(), task.into());
    p
}

/// The `n` stored in the offset file for `task`, read as a user would.
fn file_offset(path: &Path, connector: &str, task: u32) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: Json = serde_json::from_str(&text).ok()?;
    let key = json!([connector, {"task": task}]).to_string();
    doc.get(&key)?.get("n")?.as_i64()
}

#[async_trait]
impl SourceTask for NumberedTask {
    async fn run(&mut self, mut ctx: SourceContext) -> anyhow::Result<()> {
        let task = ctx.task_id;
        let stored = ctx.offsets.read(&partition(task)).map(Json::Object);
        self.seen
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .started_from
            .push((task, stored.clone()));
        let start = stored
            .as_ref()
            .and_then(|o| o.get("n"))
            .and_then(Json::as_i64)
            .map_or(0, |n| n + 1);
        let bytes = prim::of(SchemaType::Bytes, false);
        let mut batch = Vec::new();
        for n in start..self.count {
            let mut offset = serde_json::Map::new();
            offset.insert("n".into(), n.into());
            let with_offset = n % 3 != 1 || n == self.count - 1;
            batch.push(SourceRecord {
                topic: Arc::clone(&self.topic),
                key_schema: Some(Arc::clone(&bytes)),
                key: Some(Value::Bytes(
                    json!({"k": n % self.keys}).to_string().into_bytes(),
                )),
                value_schema: Some(Arc::clone(&bytes)),
                value: Some(Value::Bytes(
                    json!({"task": task, "n": n}).to_string().into_bytes(),
                )),
                timestamp_ms: Some(1_700_000_000_000 + n),
                headers: vec![Header {
                    key: "n".into(),
                    value: Some(n.to_string().into_bytes()),
                }],
                offset: with_offset.then(|| {
                    Arc::new(SourceOffset {
                        partition: partition(task),
                        offset,
                    })
                }),
            });
            if batch.len() == 7 {
                ctx.sender.send(std::mem::take(&mut batch)).await?;
            }
        }
        ctx.sender.send(batch).await?;
        if self.fail {
            anyhow::bail!("numbered source gave up on purpose");
        }
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                changed = ctx.committed.changed() => {
                    changed?;
                    let committed = ctx.committed.borrow_and_update().clone();
                    if let Some(o) = committed {
                        let n = o.offset.get("n").and_then(Json::as_i64).unwrap_or(-1);
                        let in_file = file_offset(&self.offsets_path, &ctx.connector, task);
                        self.seen
                            .lock()
                            .map_err(|_| anyhow::anyhow!("poisoned"))?
                            .committed
                            .push((task, n, in_file));
                    }
                }
            }
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    out: PathBuf,
    offsets: PathBuf,
    worker_props: Props,
    connectors: Vec<sluice_connect::ConnectorFile>,
    registry: Registry,
    seen: Arc<Mutex<Seen>>,
}

fn setup(count: i64, fail: bool) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let offsets = dir.path().join("connect.offsets");
    let worker = dir.path().join("worker.properties");
    std::fs::write(
        &worker,
        format!(
            "# standalone worker\n\
             offset.storage.file.filename={}\n\
             offset.flush.interval.ms=20\n\
             key.converter=org.apache.kafka.connect.converters.ByteArrayConverter\n\
             value.converter=org.apache.kafka.connect.converters.ByteArrayConverter\n",
            offsets.display()
        ),
    )
    .expect("write worker config");
    let source = dir.path().join("source.json");
    std::fs::write(
        &source,
        json!({"name": "numbers", "config": {
            "connector.class": "numbered", "tasks.max": 2, "count": count, "keys": 7,
            "topic": "numbers", "fail": fail, "offsets.path": offsets.display().to_string()
        }})
        .to_string(),
    )
    .expect("write source config");
    let sink = dir.path().join("sink.properties");
    std::fs::write(
        &sink,
        format!(
            "name=numbers-file\nconnector.class=FileStreamSink\ntasks.max=2\ntopics=numbers\n\
             file={}\nsluice.file.format=record\n",
            out.display()
        ),
    )
    .expect("write sink config");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let registry = Registry::new(vec![
        sluice_connect::file_sink::plugin(),
        Arc::new(NumberedSource {
            seen: Arc::clone(&seen),
        }),
    ]);
    Setup {
        out,
        offsets,
        worker_props: load_props(&worker).expect("worker props"),
        connectors: vec![
            load_connector(&source).expect("source config"),
            load_connector(&sink).expect("sink config"),
        ],
        registry,
        seen,
        _dir: dir,
    }
}

fn lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits (failing after a generous limit) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_in_order_and_offsets_commit_after_the_log() {
    const COUNT: i64 = 500;
    let s = setup(COUNT, false);
    let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid config");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));

    let seen = Arc::clone(&s.seen);
    let last_committed = move |task: u32| {
        seen.lock()
            .expect("seen")
            .committed
            .iter()
            .any(|&(t, n, _)| t == task && n == COUNT - 1)
    };
    until("both tasks' last offsets to be committed", || {
        last_committed(0) && last_committed(1)
    })
    .await;
    let out_path = s.out.clone();
    until("the sink to write every record", || {
        lines(&out_path).len() as i64 >= 2 * COUNT
    })
    .await;
    shutdown.cancel();
    run.await.expect("worker task").expect("clean stop");

    // Every record delivered exactly once.
    let out = lines(&s.out);
    assert_eq!(out.len() as i64, 2 * COUNT);
    let mut by_task: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for l in &out {
        assert_eq!(l["topic"], "numbers");
        assert_eq!(l["partition"], 0);
        let v = &l["value"];
        assert_eq!(l["headers"][0]["value"], v["n"]);
        assert_eq!(l["key"]["k"], v["n"].as_i64().expect("n") % 7);
        by_task
            .entry(v["task"].as_i64().expect("task"))
            .or_default()
            .push(v["n"].as_i64().expect("n"));
    }
    for (_, mut ns) in by_task.clone() {
        ns.sort_unstable();
        assert_eq!(ns, (0..COUNT).collect::<Vec<_>>());
    }
    // Per key order: within a key, each source's records and the topic
    // offsets appear in increasing order, and topic offsets are unique.
    let mut last: HashMap<(i64, i64), i64> = HashMap::new();
    let mut last_offset: HashMap<i64, i64> = HashMap::new();
    let mut offsets: Vec<i64> = Vec::new();
    for l in &out {
        let k = l["key"]["k"].as_i64().expect("k");
        let task = l["value"]["task"].as_i64().expect("task");
        let n = l["value"]["n"].as_i64().expect("n");
        let off = l["offset"].as_i64().expect("offset");
        if let Some(prev) = last.insert((k, task), n) {
            assert!(prev < n, "key {k} task {task}: {n} after {prev}");
        }
        if let Some(prev) = last_offset.insert(k, off) {
            assert!(prev < off, "key {k}: topic offset {off} after {prev}");
        }
        offsets.push(off);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..2 * COUNT).collect::<Vec<_>>());

    // The offset file holds each task's last offset, in Kafka Connect's shape.
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(&s.offsets).expect("offset file"))
            .expect("offset JSON");
    assert_eq!(doc[r#"["numbers",{"task":0}]"#], json!({"n": COUNT - 1}));
    assert_eq!(doc[r#"["numbers",{"task":1}]"#], json!({"n": COUNT - 1}));

    // Each announcement came after the file already held that offset.
    {
        let seen = s.seen.lock().expect("seen");
        assert!(!seen.committed.is_empty());
        for &(task, n, in_file) in &seen.committed {
            assert!(
                in_file.is_some_and(|f| f >= n),
                "task {task} told {n} was committed while the file held {in_file:?}"
            );
        }
    }

    // A restart resumes from the stored offsets and sends nothing again.
    let seen = Arc::clone(&s.seen);
    let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid config");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    until("both tasks to start again", || {
        seen.lock().expect("seen").started_from.len() == 4
    })
    .await;
    shutdown.cancel();
    run.await.expect("worker task").expect("clean stop");
    let seen = s.seen.lock().expect("seen");
    let mut restarted: Vec<_> = seen.started_from[2..].to_vec();
    restarted.sort_by_key(|(t, _)| *t);
    assert_eq!(
        restarted,
        vec![
            (0, Some(json!({"n": COUNT - 1}))),
            (1, Some(json!({"n": COUNT - 1})))
        ]
    );
    assert_eq!(lines(&s.out).len() as i64, 2 * COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_failed_in_its_status_while_the_rest_runs_on() {
    const COUNT: i64 = 40;
    let s = setup(COUNT, true);
    let mut worker =
        Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid config");
    // A worker with a REST listener would be told so: it keeps running.
    worker.set_stop_on_task_failure(false);
    let handle = worker.handle();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // The failed task's records were already handed over: the sink writes
    // them and their offsets are committed.
    let out_path = s.out.clone();
    until("the sink to write the failed source's records", || {
        lines(&out_path).len() as i64 >= 2 * COUNT
    })
    .await;
    let status = loop {
        let st = handle.status("numbers").await.expect("status");
        if st.tasks.iter().all(|t| t.state.state == "FAILED") {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for t in &status.tasks {
        let trace = t.state.trace.as_deref().unwrap_or_default();
        assert!(
            trace.contains("source connector 'numbers' task") && trace.contains("on purpose"),
            "{trace}"
        );
    }
    let sink = handle.status("numbers-file").await.expect("sink status");
    assert!(
        sink.tasks.iter().all(|t| t.state.state == "RUNNING"),
        "the healthy sink keeps running: {sink:?}"
    );
    let offsets = s.offsets.clone();
    until("the delivered offsets to be committed", || {
        std::fs::read_to_string(&offsets)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .and_then(|d| {
                d.as_object()
                    .map(|o| o.len() == 2 && o.values().all(|v| v == &json!({"n": COUNT - 1})))
            })
            .unwrap_or(false)
    })
    .await;
    shutdown.cancel();
    // Stopped while a task is still failed: the result says which.
    let err = run
        .await
        .expect("worker task")
        .expect_err("a task is still failed")
        .to_string();
    assert!(err.contains("on purpose"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_nobody_can_reach_stops_once_a_task_failed() {
    const COUNT: i64 = 5;
    // The failing source and a healthy sink: going on with the sink alone
    // would look healthy while nothing new arrives.
    let s = setup(COUNT, true);
    assert_eq!(s.connectors.len(), 2);
    let worker = Worker::new(&s.registry, &s.worker_props, &s.connectors).expect("valid config");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        worker.run(CancellationToken::new()),
    )
    .await
    .expect("stops by itself")
    .expect_err("a task failed");
    let text = err.to_string();
    assert!(matches!(err, WorkerError::TaskFailed(_)), "{text}");
    assert!(text.contains("on purpose"), "{text}");
}

#[test]
fn every_config_error_of_every_connector_is_reported_together() {
    let s = setup(1, false);
    let mut connectors = s.connectors.clone();
    connectors[0].props.insert("tasks.max".into(), "0".into());
    connectors[0].props.remove("topic");
    connectors[1]
        .props
        .insert("topics.regex".into(), "num.*".into());
    connectors[1]
        .props
        .insert("sluice.file.format".into(), "xml".into());
    connectors.push(sluice_connect::ConnectorFile {
        path: PathBuf::from("third.properties"),
        props: [("name", "third"), ("connector.class", "nope")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    });
    let mut worker_props = s.worker_props.clone();
    worker_props.insert("offset.flush.interval.ms".into(), "soon".into());
    worker_props.remove("offset.storage.file.filename");
    let err = Worker::new(&s.registry, &worker_props, &connectors).expect_err("invalid");
    let text = err.to_string();
    for needle in [
        "'offset.flush.interval.ms'",
        "'offset.storage.file.filename'",
        "connector 'numbers'",
        "'tasks.max'",
        "'topic'",
        "connector 'numbers-file'",
        "mutually exclusive",
        "'sluice.file.format'",
        "connector 'third' (third.properties)",
        "'connector.class'",
        "test.NumberedSource",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
