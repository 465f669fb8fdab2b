//! The exactly-once (transactional) source output against a real
//! Kafka-protocol broker (tansu): records and the offsets-topic records of
//! their source offsets become visible to `read_committed` consumers
//! together, and the task's tracker counts them delivered only after the
//! commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sluice_connect::delivery::DeliveryTracker;
use sluice_connect::murmur2::{murmur2, to_positive};
use sluice_connect::sluice_kafka::{
    Admin, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, KafkaConfig, Subscription,
    COMPACTED,
};
use sluice_connect::transport::kafka::{
    KafkaClients, KafkaSourceOutput, TopicCreation, TransactionBoundary, TxnSettings,
};
use sluice_connect::transport::{OutRecord, Outgoing, SourceOutput};
use sluice_core::record::{Record, SourceOffset};
use sluice_testkit::tansu::Tansu;
use tokio::sync::oneshot;

const OFFSETS_TOPIC: &str = "connect-offsets";
const OFFSETS_PARTITIONS: i32 = 5;
const GROUP: &str = "sluice-test";
const CONNECTOR: &str = "pg";

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn offset(server: &str, lsn: u64) -> Arc<SourceOffset> {
    Arc::new(SourceOffset {
        partition: object(json!({ "server": server })),
        offset: object(json!({ "lsn": lsn, "txId": lsn / 2 })),
    })
}

/// Sends one record with its source offset through `out`.
async fn send(
    out: &KafkaSourceOutput,
    record: Record,
    offset: Option<Arc<SourceOffset>>,
) -> anyhow::Result<()> {
    out.send(vec![Outgoing {
        record: Some(OutRecord::Serialized(record)),
        offset,
    }])
    .await
}

fn record(topic: &str, i: u64) -> Record {
    Record {
        topic: Arc::from(topic),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: Some(format!("row-{i}").into_bytes()),
        value: Some(format!("{{\"id\":{i}}}").into_bytes()),
        headers: Vec::new(),
    }
}

async fn start() -> (Tansu, KafkaClients) {
    let broker = Tansu::start();
    let mut cfg = KafkaConfig::new(broker.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    let clients = KafkaClients::connect(cfg).await.expect("Kafka clients");
    Admin::connect(&clients.config)
        .await
        .expect("admin")
        .ensure_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, 1, COMPACTED)
        .await
        .expect("offsets topic");
    (broker, clients)
}

fn creation() -> TopicCreation {
    TopicCreation {
        partitions: 3,
        replication_factor: 1,
        configs: Vec::new(),
    }
}

/// Settings whose transactions end only at `max_records` (or on drop).
fn settings(max_records: usize) -> TxnSettings {
    let mut s = TxnSettings::new(
        GROUP,
        CONNECTOR,
        0,
        OFFSETS_TOPIC,
        TransactionBoundary::Poll,
        Duration::from_secs(3600),
    );
    s.max_records = Some(max_records);
    s
}

/// A read_committed consumer (librdkafka's default isolation) of `topics`
/// in a fresh group.
async fn reader(cfg: &KafkaConfig, topics: &[&str]) -> Consumer {
    static GROUPS: AtomicUsize = AtomicUsize::new(0);
    let group = format!("txn-reader-{}", GROUPS.fetch_add(1, Ordering::Relaxed));
    Consumer::join(
        cfg,
        &group,
        Subscription::Topics(topics.iter().map(|t| t.to_string()).collect()),
        ConsumerOptions {
            settings: vec![("isolation.level".into(), "read_committed".into())],
            ..ConsumerOptions::default()
        },
    )
    .await
    .expect("consumer joins")
}

async fn read_until(
    c: &mut Consumer,
    timeout: Duration,
    until: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while !until(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_event()).await {
            Ok(Some(ConsumerEvent::Records(rs))) => out.extend(rs),
            Ok(Some(ConsumerEvent::Assigned(_))) => {}
            Ok(Some(ConsumerEvent::Revoked(r))) => r.release(CommitOffsets::new()),
            Ok(None) => panic!("consumer stopped"),
            Err(_) => break,
        }
    }
    out
}

async fn wait_delivered(tracker: &DeliveryTracker, seq: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while tracker.delivered_up_to() < seq {
        assert!(
            Instant::now() < deadline,
            "delivered up to {} of {seq}",
            tracker.delivered_up_to()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(b: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
}

/// The offsets-topic records read, as key text -> (partition, value text).
fn offset_records(rs: &[Record]) -> BTreeMap<String, (i32, String)> {
    rs.iter()
        .filter(|r| &*r.topic == OFFSETS_TOPIC)
        .map(|r| (text(&r.key), (r.partition, text(&r.value))))
        .collect()
}

fn data_records(rs: &[Record], topic: &str) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .filter(|r| &*r.topic == topic)
        .map(|r| text(&r.value))
        .collect();
    v.sort();
    v
}

fn expected_offset(key: &str, value: &str) -> (String, (i32, String)) {
    let partition = to_positive(murmur2(key.as_bytes())) % OFFSETS_PARTITIONS;
    (key.to_string(), (partition, value.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_their_offsets_are_committed_together_and_acknowledged_after() {
    let (_broker, clients) = start().await;
    let tracker = Arc::new(DeliveryTracker::new());
    let out = KafkaSourceOutput::new_transactional(
        &clients,
        creation(),
        Arc::clone(&tracker),
        Box::new(|e| panic!("the output failed: {e}")),
        settings(10),
    )
    .await
    .expect("transactional output");
    assert!(out.is_transactional());

    // Nine records over two source partitions: below the boundary, so the
    // transaction stays open.
    for i in 1..=9u64 {
        let server = if i % 3 == 0 { "b" } else { "a" };
        send(&out, record("orders", i), Some(offset(server, i)))
            .await
            .expect("send");
    }
    let mut committed = reader(&clients.config, &["orders", OFFSETS_TOPIC]).await;
    let early = read_until(&mut committed, Duration::from_secs(5), |rs| !rs.is_empty()).await;
    assert!(early.is_empty(), "visible before the commit: {early:?}");
    assert_eq!(
        tracker.delivered_up_to(),
        0,
        "acknowledged before the commit"
    );
    assert!(tracker.take_committable().is_empty());

    // The tenth ends the transaction.
    send(&out, record("orders", 10), Some(offset("a", 10)))
        .await
        .expect("send");
    wait_delivered(&tracker, 10, Duration::from_secs(60)).await;
    let committable = tracker.take_committable();
    assert_eq!(committable.len(), 10);

    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        data_records(rs, "orders").len() >= 10 && offset_records(rs).len() >= 2
    })
    .await;
    let mut want: Vec<String> = (1..=10).map(|i| format!("{{\"id\":{i}}}")).collect();
    want.sort();
    assert_eq!(data_records(&got, "orders"), want);
    // The latest offset of each source partition, in Kafka Connect's
    // format, in the partition Java's default partitioner picks.
    let offsets: BTreeMap<_, _> = [
        expected_offset(r#"["pg",{"server":"a"}]"#, r#"{"lsn":10,"txId":5}"#),
        expected_offset(r#"["pg",{"server":"b"}]"#, r#"{"lsn":9,"txId":4}"#),
    ]
    .into_iter()
    .collect();
    assert_eq!(offset_records(&got), offsets);
    let offset_count = got.iter().filter(|r| &*r.topic == OFFSETS_TOPIC).count();
    assert_eq!(offset_count, 2, "one offset record per source partition");

    // A second transaction: records and an offset-only marker, committed
    // when the output is dropped.
    send(&out, record("orders", 11), Some(offset("b", 11)))
        .await
        .expect("send");
    out.send(vec![Outgoing {
        record: None,
        offset: Some(offset("a", 12)),
    }])
    .await
    .expect("offset-only marker");
    assert_eq!(tracker.delivered_up_to(), 10);
    tokio::time::timeout(Duration::from_secs(60), out.close(Duration::from_secs(60)))
        .await
        .expect("closing commits what is pending");
    assert_eq!(tracker.delivered_up_to(), 12);
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        !data_records(rs, "orders").is_empty() && offset_records(rs).len() >= 2
    })
    .await;
    assert_eq!(
        data_records(&got, "orders"),
        vec![r#"{"id":11}"#.to_string()]
    );
    let offsets: BTreeMap<_, _> = [
        expected_offset(r#"["pg",{"server":"a"}]"#, r#"{"lsn":12,"txId":6}"#),
        expected_offset(r#"["pg",{"server":"b"}]"#, r#"{"lsn":11,"txId":5}"#),
    ]
    .into_iter()
    .collect();
    assert_eq!(offset_records(&got), offsets);
    committed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_taken_over_by_another_worker_fails_as_fenced() {
    let (_broker, clients) = start().await;
    let tracker = Arc::new(DeliveryTracker::new());
    let (told_tx, told) = oneshot::channel();
    let old = KafkaSourceOutput::new_transactional(
        &clients,
        creation(),
        Arc::clone(&tracker),
        Box::new(move |e: anyhow::Error| {
            let _ = told_tx.send(e.to_string());
        }),
        settings(1000),
    )
    .await
    .expect("first output");
    send(&old, record("orders", 1), Some(offset("a", 1)))
        .await
        .expect("send");

    // Another worker starts the same task: same transactional.id.
    let new_tracker = Arc::new(DeliveryTracker::new());
    let new = KafkaSourceOutput::new_transactional(
        &clients,
        creation(),
        Arc::clone(&new_tracker),
        Box::new(|e| panic!("the new output failed: {e}")),
        settings(1000),
    )
    .await
    .expect("second output");

    // The old task goes on to a partition new to its transaction (the
    // broker refuses to add it: fenced). tansu 0.6.0 drops the connection
    // on a fenced EndTxn instead of answering it, so the commit alone would
    // only time out there; with Kafka the commit alone fails as fenced.
    let _ = send(&old, record("customers", 2), Some(offset("a", 2))).await;
    // Closing commits what is pending: the commit fails as fenced.
    let closing = tokio::spawn(async move { old.close(Duration::from_secs(60)).await });
    let failure = tokio::time::timeout(Duration::from_secs(90), told)
        .await
        .expect("told in time")
        .expect("told");
    eprintln!("the old task failed with: {failure}");
    assert!(
        failure.starts_with("fenced: another worker took over task pg-0 "),
        "{failure}"
    );
    assert!(failure.contains("'sluice-test-pg-0'"), "{failure}");
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .expect("the old output closes")
        .expect("closing");
    assert_eq!(
        tracker.delivered_up_to(),
        0,
        "nothing of the fenced task counts"
    );

    // The new owner commits normally.
    send(&new, record("orders", 3), Some(offset("a", 3)))
        .await
        .expect("send");
    tokio::time::timeout(Duration::from_secs(60), new.close(Duration::from_secs(60)))
        .await
        .expect("the new output closes");
    assert_eq!(new_tracker.delivered_up_to(), 1);
    let mut committed = reader(&clients.config, &["orders", OFFSETS_TOPIC]).await;
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        data_records(rs, "orders").contains(&r#"{"id":3}"#.to_string())
            && !offset_records(rs).is_empty()
    })
    .await;
    assert!(data_records(&got, "orders").contains(&r#"{"id":3}"#.to_string()));
    assert_eq!(
        offset_records(&got),
        [expected_offset(
            r#"["pg",{"server":"a"}]"#,
            r#"{"lsn":3,"txId":1}"#
        )]
        .into_iter()
        .collect()
    );
    committed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_cannot_commit_is_aborted_and_fails_the_task() {
    let broker = Tansu::start();
    let mut cfg = KafkaConfig::new(broker.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    // The offsets topic is missing and may not be created on the fly: the
    // offset records of the transaction cannot be delivered.
    for (k, v) in [
        ("allow.auto.create.topics", "false"),
        ("topic.metadata.propagation.max.ms", "2000"),
    ] {
        cfg.set_override(sluice_connect::sluice_kafka::ClientRole::Producer, k, v)
            .expect("override");
    }
    let clients = KafkaClients::connect(cfg).await.expect("Kafka clients");
    let tracker = Arc::new(DeliveryTracker::new());
    let (told_tx, told) = oneshot::channel();
    let out = KafkaSourceOutput::new_transactional(
        &clients,
        creation(),
        Arc::clone(&tracker),
        Box::new(move |e: anyhow::Error| {
            let _ = told_tx.send(e.to_string());
        }),
        settings(3),
    )
    .await
    .expect("transactional output");
    for i in 1..=3u64 {
        send(&out, record("orders", i), Some(offset("a", i)))
            .await
            .expect("send");
    }
    let failure = tokio::time::timeout(Duration::from_secs(90), told)
        .await
        .expect("told in time")
        .expect("told");
    eprintln!("the task failed with: {failure}");
    assert!(
        failure.starts_with(
            "source connector 'pg' task 0: committing the transaction \
             (delivery to connect-offsets failed"
        ),
        "{failure}"
    );
    assert!(failure.contains("the transaction was aborted"), "{failure}");
    assert_eq!(
        tracker.delivered_up_to(),
        0,
        "nothing of the aborted transaction counts"
    );
    // The task's next send reports the failure.
    let again = send(&out, record("orders", 4), Some(offset("a", 4)))
        .await
        .expect_err("send after the failure");
    assert_eq!(again.to_string(), failure);
    tokio::time::timeout(Duration::from_secs(30), out.close(Duration::from_secs(10)))
        .await
        .expect("the output closes");
    assert_eq!(tracker.delivered_up_to(), 0);
}
