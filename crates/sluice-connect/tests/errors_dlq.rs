//! Error handling of sink connectors over Kafka (a throwaway tansu broker):
//! a topic holds good JSON records and poison ones, a file sink reads it
//! with the JsonConverter, and `errors.*` decides what happens.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sluice_connect::error_handling::{self as errors, headers};
use sluice_connect::sink_driver::FlushPolicy;
use sluice_connect::sluice_kafka::{
    Admin, ClientRole, Consumer, ConsumerEvent, ConsumerOptions, KafkaConfig, Producer,
    Subscription, TopicPartition,
};
use sluice_connect::{ConnectorFile, Registry, Worker, WorkerError};
use sluice_core::config::Props;
use sluice_core::record::{Header, Record};
use sluice_testkit::tansu::Tansu;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn props(kv: &[(&str, &str)]) -> Props {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn client_config(broker: &Tansu) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(broker.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("topic.metadata.refresh.interval.ms", "1000"),
    ] {
        cfg.set_override(ClientRole::Consumer, k, v).unwrap();
    }
    cfg
}

/// What the test topic holds, by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `{"n": i}`
    Good(i64),
    /// Not JSON at all: the value converter fails.
    NotJson,
    /// JSON, but a string: the InsertField transform (when configured)
    /// fails on it.
    NotAnObject,
}

/// Offsets 0..11: good records, with poison at offset 5 (not JSON) and,
/// when `with_string` is set, offset 8 (a JSON string).
fn layout(with_string: bool) -> Vec<Kind> {
    (0..11)
        .map(|i| match i {
            5 => Kind::NotJson,
            8 if with_string => Kind::NotAnObject,
            _ => Kind::Good(i),
        })
        .collect()
}

fn record(topic: &Arc<str>, i: usize, kind: Kind) -> Record {
    let (key, value) = match kind {
        Kind::Good(n) => (format!("k{n}"), format!("{{\"n\":{n}}}")),
        Kind::NotJson => ("poison".to_string(), "not json {".to_string()),
        Kind::NotAnObject => ("string".to_string(), "\"just a string\"".to_string()),
    };
    Record {
        topic: Arc::clone(topic),
        partition: 0,
        offset: 0,
        timestamp_ms: 1_700_000_000_000 + i as i64,
        key: Some(key.into_bytes()),
        value: Some(value.into_bytes()),
        headers: vec![Header {
            key: "trace-id".into(),
            value: Some(format!("t-{i}").into_bytes()),
        }],
    }
}

/// Creates `topic` (1 partition) and writes `kinds` to it, in order.
async fn fill(cfg: &KafkaConfig, topic: &str, kinds: &[Kind]) {
    let admin = Admin::connect(cfg).await.unwrap();
    admin.ensure_topic(topic, 1, 1, &[]).await.unwrap();
    let producer = Producer::connect(cfg).await.unwrap();
    let t: Arc<str> = Arc::from(topic);
    for (i, k) in kinds.iter().enumerate() {
        let d = producer.send(&record(&t, i, *k)).await.unwrap();
        let stored = d.await.unwrap();
        assert_eq!(stored.offset, i as i64, "the test relies on offsets 0..");
    }
}

fn worker_props(broker: &Tansu) -> Props {
    props(&[
        ("bootstrap.servers", &broker.bootstrap()),
        (
            "key.converter",
            "org.apache.kafka.connect.storage.StringConverter",
        ),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter",
        ),
        ("value.converter.schemas.enable", "false"),
        ("consumer.session.timeout.ms", "6000"),
        ("consumer.heartbeat.interval.ms", "500"),
        ("consumer.topic.metadata.refresh.interval.ms", "1000"),
    ])
}

/// A file sink `name` on `topic` writing to `out`, plus `extra` settings.
fn sink(dir: &Path, name: &str, topic: &str, out: &Path, extra: &[(&str, &str)]) -> ConnectorFile {
    let mut p = props(&[
        ("name", name),
        ("connector.class", "FileStreamSink"),
        ("topics", topic),
        ("file", out.to_str().unwrap()),
    ]);
    p.extend(props(extra));
    ConnectorFile {
        path: dir.join(format!("{name}.properties")),
        props: p,
    }
}

fn start(
    broker: &Tansu,
    file: ConnectorFile,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), WorkerError>>,
) {
    let registry = Registry::new(vec![sluice_connect::file_sink::plugin()]);
    let mut worker = Worker::new(&registry, &worker_props(broker), &[file]).unwrap();
    worker.set_flush_policy(FlushPolicy {
        interval: Duration::from_millis(100),
        max_records: 1000,
        ..FlushPolicy::default()
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, run)
}

/// The `n` of every line of the sink's file.
fn written(out: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap_or_else(|e| panic!("line {l:?}: {e}"));
            v["n"].as_i64().unwrap_or_else(|| panic!("no n in {l}"))
        })
        .collect()
}

async fn wait_for_lines(out: &Path, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let w = written(out);
        if w.len() >= n {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} lines after {WAIT:?}: {w:?}",
            w.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The committed offset of group `connect-<connector>` on `topic`
/// partition 0 (None when it has none), read by joining the group once
/// the worker left it.
async fn committed(cfg: &KafkaConfig, connector: &str, topic: &str) -> Option<i64> {
    let mut c = Consumer::subscribe(
        cfg,
        connector,
        Subscription::Topics(vec![topic.to_string()]),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.next_event()).await {
            Ok(Some(ConsumerEvent::Assigned(_))) => break,
            Ok(Some(ConsumerEvent::Revoked(r))) => r.release(Default::default()),
            Ok(Some(ConsumerEvent::Records(_))) => {}
            Ok(None) | Err(_) => panic!("no partition assigned to connect-{connector}"),
        }
    }
    let offsets = c.committed(Duration::from_secs(10)).await.unwrap();
    c.close().await;
    offsets.get(&TopicPartition {
        topic: Arc::from(topic),
        partition: 0,
    })
}

/// Every record of `topic`, read from the start.
async fn read_all(cfg: &KafkaConfig, group: &str, topic: &str, n: usize) -> Vec<Record> {
    let mut c = Consumer::subscribe(
        cfg,
        group,
        Subscription::Topics(vec![topic.to_string()]),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, c.next_event()).await {
            Ok(Some(ConsumerEvent::Records(rs))) => out.extend(rs),
            Ok(Some(ConsumerEvent::Revoked(r))) => r.release(Default::default()),
            Ok(Some(ConsumerEvent::Assigned(_))) => {}
            Ok(None) | Err(_) => panic!("read {} of {n} records of '{topic}'", out.len()),
        }
    }
    c.close().await;
    out
}

fn header<'a>(r: &'a Record, key: &str) -> &'a str {
    let h = r
        .headers
        .iter()
        .find(|h| h.key == key)
        .unwrap_or_else(|| panic!("no header {key} in {:?}", r.headers));
    std::str::from_utf8(h.value.as_deref().expect("a value")).expect("UTF-8")
}

fn goods(kinds: &[Kind]) -> Vec<i64> {
    kinds
        .iter()
        .filter_map(|k| match k {
            Kind::Good(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerance_none_fails_the_task_at_the_poison_record() {
    let broker = Tansu::start();
    let cfg = client_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let kinds = layout(false);
    fill(&cfg, "orders-none", &kinds).await;

    let (_shutdown, run) = start(
        &broker,
        sink(
            dir.path(),
            "sink-none",
            "orders-none",
            &out,
            &[("errors.tolerance", "none")],
        ),
    );
    let err = tokio::time::timeout(WAIT, run)
        .await
        .expect("the task fails")
        .unwrap()
        .expect_err("the poison record fails the task")
        .to_string();
    eprintln!("{err}");
    for part in [
        "sink connector 'sink-none' task 0",
        "topic 'orders-none' partition 0 offset 5",
        "VALUE_CONVERTER",
        "org.apache.kafka.connect.json.JsonConverter",
        "converting record of topic 'orders-none'",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    // Nothing at or after the poison record was written or acknowledged.
    let w = written(&out);
    assert!(w.iter().all(|n| *n < 5), "{w:?}");
    let c = committed(&cfg, "sink-none", "orders-none").await;
    assert!(c.is_none_or(|o| o <= 5), "committed {c:?}");
    assert_eq!(errors::counts("sink-none").records_skipped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerance_all_sends_poison_to_the_dead_letter_queue_with_context() {
    let broker = Tansu::start();
    let cfg = client_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let kinds = layout(true);
    fill(&cfg, "orders-dlq", &kinds).await;

    let (shutdown, run) = start(
        &broker,
        sink(
            dir.path(),
            "sink-dlq",
            "orders-dlq",
            &out,
            &[
                ("errors.tolerance", "all"),
                ("errors.log.enable", "true"),
                ("errors.deadletterqueue.topic.name", "dlq-orders"),
                ("errors.deadletterqueue.topic.replication.factor", "1"),
                ("errors.deadletterqueue.context.headers.enable", "true"),
                ("transforms", "tag"),
                (
                    "transforms.tag.type",
                    "org.apache.kafka.connect.transforms.InsertField$Value",
                ),
                ("transforms.tag.static.field", "via"),
                ("transforms.tag.static.value", "sluice"),
            ],
        ),
    );
    let good = goods(&kinds);
    let w = wait_for_lines(&out, good.len()).await;
    assert_eq!(w, good, "every good record, in order, once");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.lines().all(|l| l.contains("\"via\":\"sluice\"")),
        "{text}"
    );

    let dlq = read_all(&cfg, "dlq-reader", "dlq-orders", 2).await;
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let topic: Arc<str> = Arc::from("orders-dlq");
    for (r, offset, stage, class) in [
        (
            &dlq[0],
            5usize,
            "VALUE_CONVERTER",
            "org.apache.kafka.connect.json.JsonConverter",
        ),
        (
            &dlq[1],
            8,
            "TRANSFORMATION",
            "org.apache.kafka.connect.transforms.InsertField$Value",
        ),
    ] {
        let original = record(&topic, offset, kinds[offset]);
        assert_eq!(r.key, original.key, "original key bytes");
        assert_eq!(r.value, original.value, "original value bytes");
        assert_eq!(r.timestamp_ms, original.timestamp_ms);
        assert_eq!(
            header(r, "trace-id"),
            format!("t-{offset}"),
            "original header kept"
        );
        assert_eq!(header(r, headers::TOPIC), "orders-dlq");
        assert_eq!(header(r, headers::PARTITION), "0");
        assert_eq!(header(r, headers::OFFSET), offset.to_string());
        assert_eq!(header(r, headers::CONNECTOR_NAME), "sink-dlq");
        assert_eq!(header(r, headers::TASK_ID), "0");
        assert_eq!(header(r, headers::STAGE), stage);
        assert_eq!(header(r, headers::CLASS_NAME), class);
        assert_eq!(
            header(r, headers::EXCEPTION_CLASS_NAME),
            "org.apache.kafka.connect.errors.DataException"
        );
        let message = header(r, headers::EXCEPTION_MESSAGE);
        assert!(!message.is_empty());
        let trace = header(r, headers::EXCEPTION_STACKTRACE);
        assert!(
            trace.starts_with(&format!(
                "org.apache.kafka.connect.errors.DataException: {message}"
            )),
            "{trace}"
        );
        // Exactly one of each context header.
        let names: Vec<&str> = r.headers.iter().map(|h| h.key.as_str()).collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
        assert_eq!(names.len(), 11, "{names:?}");
    }
    assert!(header(&dlq[0], headers::EXCEPTION_MESSAGE).contains("orders-dlq"));

    let counts = errors::counts("sink-dlq");
    assert_eq!(counts.record_errors, 2, "{counts:?}");
    assert_eq!(counts.records_skipped, 2, "{counts:?}");
    assert_eq!(counts.dlq_produced, 2, "{counts:?}");
    assert_eq!(counts.errors_logged, 2, "{counts:?}");

    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .unwrap()
        .expect("no task failed");
    assert_eq!(
        committed(&cfg, "sink-dlq", "orders-dlq").await,
        Some(kinds.len() as i64),
        "the group's offset moved past the poison records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerance_all_without_a_dead_letter_queue_skips_and_counts() {
    let broker = Tansu::start();
    let cfg = client_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let kinds = layout(false);
    fill(&cfg, "orders-skip", &kinds).await;

    let (shutdown, run) = start(
        &broker,
        sink(
            dir.path(),
            "sink-skip",
            "orders-skip",
            &out,
            &[("errors.tolerance", "all")],
        ),
    );
    let good = goods(&kinds);
    let w = wait_for_lines(&out, good.len()).await;
    assert_eq!(w, good);
    let counts = errors::counts("sink-skip");
    assert_eq!(counts.record_errors, 1, "{counts:?}");
    assert_eq!(counts.records_skipped, 1, "{counts:?}");
    assert_eq!(counts.dlq_produced, 0, "{counts:?}");
    assert_eq!(counts.errors_logged, 0, "not logged as an error, warned");

    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .unwrap()
        .expect("no task failed");
    assert_eq!(
        committed(&cfg, "sink-skip", "orders-skip").await,
        Some(kinds.len() as i64)
    );
}

#[test]
fn dead_letter_queue_settings_are_checked_at_start() {
    let dir = PathBuf::from("/nonexistent");
    let registry = Registry::new(vec![sluice_connect::file_sink::plugin()]);
    let file = |extra: &[(&str, &str)]| {
        let out = dir.join("out.txt");
        sink(&dir, "s", "orders", &out, extra)
    };
    // In-process transport: no Kafka topic to write to.
    let err = Worker::new(
        &registry,
        &Props::new(),
        &[file(&[("errors.deadletterqueue.topic.name", "dlq")])],
    )
    .expect_err("no Kafka")
    .to_string();
    assert!(
        err.contains("errors.deadletterqueue.topic.name") && err.contains("bootstrap.servers"),
        "{err}"
    );
    // Bad values name key and value.
    let err = Worker::new(
        &registry,
        &Props::new(),
        &[file(&[
            ("errors.tolerance", "most"),
            ("errors.retry.timeout", "soon"),
        ])],
    )
    .expect_err("bad values")
    .to_string();
    assert!(
        err.contains("'most'") && err.contains("'errors.tolerance'"),
        "{err}"
    );
    assert!(
        err.contains("'soon'") && err.contains("'errors.retry.timeout'"),
        "{err}"
    );
    // The queue may not be a topic the connector reads.
    let kafka = props(&[("bootstrap.servers", "127.0.0.1:1")]);
    let err = Worker::new(
        &registry,
        &kafka,
        &[file(&[("errors.deadletterqueue.topic.name", "orders")])],
    )
    .expect_err("loop")
    .to_string();
    assert!(
        err.contains("may not be a topic the connector consumes"),
        "{err}"
    );
}

/// A source of five schemaless records for topic `numbers`, offsets
/// `{"n": 0..5}`; records 2 and 4 have a string value, which the
/// InsertField transform cannot take. It then reports the offsets the
/// worker commits.
struct PoisonSource {
    committed: tokio::sync::watch::Sender<Option<i64>>,
}

impl sluice_core::connector::ConnectorPlugin for PoisonSource {
    fn class(&self) -> &'static str {
        "test.PoisonSource"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["poison"]
    }
    fn kind(&self) -> sluice_core::connector::ConnectorKind {
        sluice_core::connector::ConnectorKind::Source
    }
    fn config_def(&self) -> sluice_core::config::ConfigDef {
        sluice_core::config::ConfigDef::new(Vec::new())
    }
    fn validate(&self, _props: &Props) -> Result<Vec<String>, sluice_core::config::ConfigErrors> {
        Ok(Vec::new())
    }
    fn task_configs(&self, props: &Props, _max_tasks: usize) -> Vec<Props> {
        vec![props.clone()]
    }
    fn create_source_task(
        &self,
        _props: &Props,
    ) -> anyhow::Result<Box<dyn sluice_core::connector::SourceTask>> {
        Ok(Box::new(PoisonTask {
            committed: self.committed.clone(),
        }))
    }
}

struct PoisonTask {
    committed: tokio::sync::watch::Sender<Option<i64>>,
}

#[async_trait::async_trait]
impl sluice_core::connector::SourceTask for PoisonTask {
    async fn run(&mut self, mut ctx: sluice_core::connector::SourceContext) -> anyhow::Result<()> {
        use sluice_core::record::{SourceOffset, SourceRecord};
        use sluice_core::value::Value;
        let topic: Arc<str> = Arc::from("numbers");
        let records = (0..5i64)
            .map(|n| {
                let value = if n % 2 == 0 && n > 0 {
                    Value::String(format!("poison {n}"))
                } else {
                    Value::Map(vec![(Value::String("n".into()), Value::Int64(n))])
                };
                let mut offset = serde_json::Map::new();
                offset.insert("n".into(), n.into());
                let mut partition = serde_json::Map::new();
                partition.insert("source".into(), "poison".into());
                SourceRecord {
                    topic: Arc::clone(&topic),
                    key_schema: None,
                    key: None,
                    value_schema: None,
                    value: Some(value),
                    timestamp_ms: Some(1_700_000_000_000 + n),
                    headers: Vec::new(),
                    offset: Some(Arc::new(SourceOffset { partition, offset })),
                }
            })
            .collect();
        ctx.sender.send(records).await?;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                changed = ctx.committed.changed() => {
                    changed?;
                    let n = ctx
                        .committed
                        .borrow_and_update()
                        .as_ref()
                        .and_then(|o| o.offset.get("n").and_then(Json::as_i64));
                    let _ = self.committed.send(n);
                }
            }
        }
    }
}

fn poison_pipeline(
    dir: &Path,
    tolerance: &str,
) -> (
    Worker,
    tokio::sync::watch::Receiver<Option<i64>>,
    PathBuf,
    PathBuf,
) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let registry = Registry::new(vec![
        Arc::new(PoisonSource { committed: tx }),
        sluice_connect::file_sink::plugin(),
    ]);
    let out = dir.join("numbers.txt");
    let offsets = dir.join("connect.offsets");
    let worker = props(&[
        ("offset.storage.file.filename", offsets.to_str().unwrap()),
        ("offset.flush.interval.ms", "20"),
        (
            "key.converter",
            "org.apache.kafka.connect.json.JsonConverter",
        ),
        ("key.converter.schemas.enable", "false"),
        (
            "value.converter",
            "org.apache.kafka.connect.json.JsonConverter",
        ),
        ("value.converter.schemas.enable", "false"),
    ]);
    let name = format!("poison-source-{tolerance}");
    let source = ConnectorFile {
        path: dir.join("source.properties"),
        props: props(&[
            ("name", &name),
            ("connector.class", "poison"),
            ("errors.tolerance", tolerance),
            ("transforms", "tag"),
            (
                "transforms.tag.type",
                "org.apache.kafka.connect.transforms.InsertField$Value",
            ),
            ("transforms.tag.static.field", "via"),
            ("transforms.tag.static.value", "sluice"),
        ]),
    };
    let sink = sink(dir, "numbers-sink", "numbers", &out, &[]);
    let mut w = Worker::new(&registry, &worker, &[source, sink]).unwrap();
    w.set_flush_policy(FlushPolicy {
        interval: Duration::from_millis(20),
        max_records: 1000,
        ..FlushPolicy::default()
    });
    (w, rx, out, offsets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_record_failing_a_transform_is_skipped_and_its_offset_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (worker, mut committed, out, offsets) = poison_pipeline(dir.path(), "all");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // The last record (n = 4) is a poison one: its offset still counts.
    tokio::time::timeout(WAIT, committed.wait_for(|n| *n == Some(4)))
        .await
        .expect("offset 4 committed")
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while written(&out).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(written(&out), vec![0, 1, 3], "the good records, tagged");
    let stored: Json = serde_json::from_str(&std::fs::read_to_string(&offsets).unwrap()).unwrap();
    let text = stored.to_string();
    assert!(text.contains("{\"n\":4}"), "offset file: {text}");
    let counts = errors::counts("poison-source-all");
    assert_eq!(counts.records_skipped, 2, "{counts:?}");
    assert_eq!(counts.record_errors, 2, "{counts:?}");
    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .unwrap()
        .expect("no task failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_record_failing_a_transform_fails_the_task_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (mut worker, committed, out, _) = poison_pipeline(dir.path(), "none");
    worker.set_stop_on_task_failure(false);
    let handle = worker.handle();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    let err = tokio::time::timeout(WAIT, async {
        loop {
            let st = handle.status("poison-source-none").await.expect("status");
            if let Some(t) = st.tasks.iter().find(|t| t.state.state == "FAILED") {
                return t.state.trace.clone().unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the poison record fails the task");
    eprintln!("{err}");
    for part in [
        "source connector 'poison-source-none' task 0",
        "TRANSFORMATION",
        "org.apache.kafka.connect.transforms.InsertField$Value",
        "topic 'numbers'",
        "source offset {\"n\":2}",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    // The whole batch failed before any of it was dispatched.
    assert!(written(&out).is_empty());
    assert!(committed.borrow().is_none_or(|n| n < 2));
    shutdown.cancel();
    // Its result names the task still failed.
    let stopped = tokio::time::timeout(WAIT, run)
        .await
        .expect("stops")
        .unwrap()
        .expect_err("a task is still failed")
        .to_string();
    assert!(stopped.contains("TRANSFORMATION"), "{stopped}");
}
