//! Sluice's Kafka transport against a real Kafka-protocol broker (tansu).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{java_partition, Tansu};
use sluice_core::record::{Header, Record};
use sluice_kafka::{
    Admin, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Error, KafkaConfig, Producer,
    Subscription, TopicState, COMPACTED,
};

const N: usize = 10_000;
const KEYS: usize = 64;
const PARTITIONS: i32 = 3;

fn record(topic: &Arc<str>, i: usize) -> Record {
    let mut headers = vec![Header {
        key: "seq".into(),
        value: Some(i.to_string().into_bytes()),
    }];
    if i.is_multiple_of(7) {
        headers.push(Header {
            key: "null-header".into(),
            value: None,
        });
    }
    if i.is_multiple_of(11) {
        headers.push(Header {
            key: "bin".into(),
            value: Some(vec![0, 255, (i % 256) as u8]),
        });
    }
    let value = match i % 13 {
        0 => None,                                    // tombstone
        5 if i.is_multiple_of(2) => Some(Vec::new()), // empty, not null
        _ => Some(format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)).into_bytes()),
    };
    Record {
        topic: topic.clone(),
        partition: 0,
        offset: 0,
        timestamp_ms: 1_700_000_000_000 + i as i64,
        key: Some(format!("key-{}", i % KEYS).into_bytes()),
        value,
        headers,
    }
}

fn seq_of(r: &Record) -> usize {
    let h = r
        .headers
        .iter()
        .find(|h| h.key == "seq")
        .expect("seq header");
    std::str::from_utf8(h.value.as_deref().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads events until `n` records arrived (or `timeout`).
async fn read_records(
    c: &mut Consumer,
    n: usize,
    timeout: Duration,
    assigned: &mut Vec<sluice_kafka::TopicPartition>,
) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_event()).await {
            Ok(Some(ConsumerEvent::Records(rs))) => out.extend(rs),
            Ok(Some(ConsumerEvent::Assigned(ps))) => assigned.extend(ps),
            Ok(Some(ConsumerEvent::Revoked(r))) => r.release(CommitOffsets::new()),
            Ok(None) => panic!("consumer stopped"),
            Err(_) => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_and_resume() {
    let broker = Tansu::start();
    let cfg = common::config(&broker);
    let admin = Admin::connect(&cfg).await.unwrap();

    let t0 = Instant::now();
    assert_eq!(
        admin
            .ensure_topic("orders", PARTITIONS, 1, &[])
            .await
            .unwrap(),
        TopicState::Created
    );
    assert_eq!(
        admin
            .ensure_topic("orders", PARTITIONS, 1, &[])
            .await
            .unwrap(),
        TopicState::Existed {
            partitions: PARTITIONS
        }
    );
    assert_eq!(
        admin
            .ensure_topic("connect-offsets", 1, 1, COMPACTED)
            .await
            .unwrap(),
        TopicState::Created
    );
    let e = admin.ensure_topic("bad", 0, 1, &[]).await.unwrap_err();
    assert!(e.to_string().contains("partition count 0"), "{e}");
    eprintln!("topics: {:?}", t0.elapsed());

    // Produce 10k keyed records, tombstones and headers included.
    let t0 = Instant::now();
    let producer = Producer::connect(&cfg).await.unwrap();
    let topic: Arc<str> = Arc::from("orders");
    let sent: Vec<Record> = (0..N).map(|i| record(&topic, i)).collect();
    let mut deliveries = Vec::with_capacity(N);
    for r in &sent {
        deliveries.push(producer.send(r).await.unwrap());
    }
    let delivered = futures::future::try_join_all(deliveries).await.unwrap();
    eprintln!("produced {N} records: {:?}", t0.elapsed());
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    for (r, d) in sent.iter().zip(&delivered) {
        let key = r.key.clone().unwrap();
        // Same partition as the Java client's default partitioner.
        assert_eq!(d.partition, java_partition(&key, PARTITIONS), "key {key:?}");
        assert_eq!(
            *partition_of_key.entry(key).or_insert(d.partition),
            d.partition
        );
    }
    assert!(partition_of_key.values().any(|&p| p != 0));

    // Consume them in group connect-sink.
    let t0 = Instant::now();
    let mut consumer = Consumer::subscribe(
        &cfg,
        "sink",
        Subscription::Topics(vec!["orders".into()]),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(consumer.group(), "connect-sink");
    let mut assigned = Vec::new();
    let got = read_records(&mut consumer, N, Duration::from_secs(90), &mut assigned).await;
    eprintln!("consumed {} records: {:?}", got.len(), t0.elapsed());
    assert_eq!(got.len(), N);
    assert_eq!(assigned.len(), PARTITIONS as usize, "{assigned:?}");

    let mut last_seq: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut last_offset: HashMap<i32, i64> = HashMap::new();
    let mut seen = vec![false; N];
    let mut offsets = CommitOffsets::new();
    for r in &got {
        let seq = seq_of(r);
        assert!(!seen[seq], "record {seq} twice");
        seen[seq] = true;
        let want = &sent[seq];
        assert_eq!(r.key, want.key, "key of {seq}");
        assert_eq!(r.value, want.value, "value of {seq}");
        assert_eq!(r.headers, want.headers, "headers of {seq}");
        assert_eq!(r.timestamp_ms, want.timestamp_ms, "timestamp of {seq}");
        assert_eq!(r.partition, delivered[seq].partition);
        assert_eq!(r.offset, delivered[seq].offset);
        // Per-key order.
        let key = r.key.clone().unwrap();
        if let Some(prev) = last_seq.insert(key, seq) {
            assert!(prev < seq, "key order: {prev} then {seq}");
        }
        if let Some(prev) = last_offset.insert(r.partition, r.offset) {
            assert!(prev < r.offset);
        }
        offsets.mark(r);
    }
    assert!(got.iter().any(|r| r.value.is_none()));
    assert!(got.iter().any(|r| r.value.as_deref() == Some(&[][..])));

    // Commit what "the sink made durable": everything.
    consumer.commit(&offsets).await.unwrap();
    let committed = consumer.committed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(committed, offsets);
    consumer.close().await;

    // The same group resumes after the commit: nothing again.
    let t0 = Instant::now();
    let mut consumer = Consumer::subscribe(
        &cfg,
        "sink",
        Subscription::Regex("^ord.*".into()),
        ConsumerOptions::default(),
    )
    .await
    .unwrap();
    let mut assigned = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned.len() < PARTITIONS as usize && Instant::now() < deadline {
        let again = read_records(&mut consumer, 1, Duration::from_millis(500), &mut assigned).await;
        assert!(again.is_empty(), "{} records again", again.len());
    }
    assert_eq!(assigned.len(), PARTITIONS as usize, "{assigned:?}");
    eprintln!("rejoined: {:?}", t0.elapsed());
    let again = read_records(&mut consumer, 1, Duration::from_secs(3), &mut assigned).await;
    assert!(again.is_empty(), "{} records again", again.len());

    // New records reach the resumed consumer.
    let d = producer
        .send(&record(&topic, 13))
        .await
        .unwrap()
        .await
        .unwrap();
    let more = read_records(&mut consumer, 1, Duration::from_secs(30), &mut assigned).await;
    assert_eq!(more.len(), 1);
    assert_eq!((more[0].partition, more[0].offset), (d.partition, d.offset));
    assert_eq!(more[0].value, None);
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bootstrap_fails_clearly_and_in_time() {
    let port = common::free_port(); // nothing listens there
    for (bootstrap, cause) in [
        (format!("127.0.0.1:{port}"), "Connection refused"),
        ("no-such-host.invalid:9092".to_string(), "Failed to resolve"),
    ] {
        let mut props = BTreeMap::new();
        props.insert("bootstrap.servers".to_string(), bootstrap.clone());
        let mut cfg = KafkaConfig::from_worker_props(&props).unwrap();
        cfg.connect_timeout = Duration::from_secs(3);
        let t0 = Instant::now();
        // The three clients concurrently: each must give up on its own.
        let (p, a, c) = tokio::join!(
            Producer::connect(&cfg),
            Admin::connect(&cfg),
            Consumer::subscribe(
                &cfg,
                "c",
                Subscription::Topics(vec!["t".into()]),
                ConsumerOptions::default(),
            ),
        );
        let errs = [p.err().unwrap(), a.err().unwrap(), c.err().unwrap()];
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3 + 3), "{took:?}");
        for e in errs {
            let s = e.to_string();
            assert!(matches!(e, Error::Unreachable { .. }), "{s}");
            assert!(s.contains(&bootstrap) && s.contains("3000 ms"), "{s}");
            assert!(s.contains(cause), "{s}");
            eprintln!("{s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_settings_reach_librdkafka_without_leaking() {
    // The broker has no SASL listener: the point is that librdkafka accepts
    // the mapped settings and that the secret never shows in the error.
    let mut props = BTreeMap::new();
    for (k, v) in [
        ("bootstrap.servers", format!("127.0.0.1:{}", common::free_port())),
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanism", "PLAIN".into()),
        (
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="$ConnectionString" password="Endpoint=sb://x/;SharedAccessKey=TOPSECRET";"#.into(),
        ),
    ] {
        props.insert(k.to_string(), v);
    }
    let mut cfg = KafkaConfig::from_worker_props(&props).unwrap();
    cfg.connect_timeout = Duration::from_secs(2);
    let e = Producer::connect(&cfg).await.err().unwrap();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(!e.to_string().contains("TOPSECRET"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_commits_what_the_sink_made_durable() {
    let broker = Tansu::start();
    let cfg = common::config(&broker);
    let admin = Admin::connect(&cfg).await.unwrap();
    admin.ensure_topic("events", 4, 1, &[]).await.unwrap();
    let producer = Producer::connect(&cfg).await.unwrap();
    let topic: Arc<str> = Arc::from("events");
    let mut deliveries = Vec::new();
    for i in 0..400 {
        deliveries.push(producer.send(&record(&topic, i)).await.unwrap());
    }
    futures::future::try_join_all(deliveries).await.unwrap();

    // Consumer A reads everything; "the sink" made only the first 20
    // records of each partition durable.
    let sub = || Subscription::Topics(vec!["events".into()]);
    let mut a = Consumer::subscribe(&cfg, "rb", sub(), ConsumerOptions::default())
        .await
        .unwrap();
    let mut assigned = Vec::new();
    let first = read_records(&mut a, 400, Duration::from_secs(60), &mut assigned).await;
    assert_eq!(first.len(), 400);
    let mut durable = CommitOffsets::new();
    for r in first.iter().filter(|r| r.offset < 20) {
        durable.mark(r);
    }
    assert_eq!(durable.len(), 4);
    let expected: usize = first.iter().filter(|r| r.offset >= 20).count();

    // B joins the group: A is asked to give its partitions up, answers with
    // the durable offsets, and the rest is read again from there.
    let mut b = Consumer::subscribe(&cfg, "rb", sub(), ConsumerOptions::default())
        .await
        .unwrap();
    let mut revoked = false;
    let mut again: Vec<Record> = Vec::new();
    let (mut owned_a, mut owned_b) = (0usize, 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !(revoked && again.len() >= expected && owned_a + owned_b == 4 && owned_b > 0) {
        let ev = tokio::select! {
            ev = a.next_event() => (true, ev.unwrap()),
            ev = b.next_event() => (false, ev.unwrap()),
            _ = tokio::time::sleep_until(deadline) => panic!(
                "timed out: revoked={revoked} again={} owned a={owned_a} b={owned_b}",
                again.len()
            ),
        };
        match ev {
            (is_a, ConsumerEvent::Revoked(rev)) => {
                if is_a && !revoked {
                    revoked = true;
                    let mine = durable.take(&rev.partitions);
                    assert_eq!(mine.len(), 4, "{:?}", rev.partitions);
                    rev.release(mine);
                } else {
                    rev.release(CommitOffsets::new());
                }
                if is_a {
                    owned_a = 0;
                } else {
                    owned_b = 0;
                }
            }
            (is_a, ConsumerEvent::Assigned(ps)) => {
                if is_a {
                    owned_a += ps.len();
                } else {
                    owned_b += ps.len();
                }
            }
            (_, ConsumerEvent::Records(rs)) => {
                assert!(revoked, "records before the revocation: {rs:?}");
                again.extend(rs);
            }
        }
    }
    // Exactly the records past the durable offsets, each once.
    assert_eq!(again.len(), expected);
    assert!(again.iter().all(|r| r.offset >= 20));
    let mut seqs: Vec<usize> = again.iter().map(seq_of).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), expected);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_to_a_missing_topic_fails_naming_it() {
    let broker = Tansu::start();
    let mut cfg = common::config(&broker);
    // Like the Java producer, librdkafka's asks the broker to auto-create
    // a missing topic (tansu does, as Kafka does by default); a worker that
    // creates its topics itself turns that off.
    for (k, v) in [
        ("allow.auto.create.topics", "false"),
        ("topic.metadata.propagation.max.ms", "2000"),
    ] {
        cfg.set_override(sluice_kafka::ClientRole::Producer, k, v)
            .unwrap();
    }
    let producer = Producer::connect(&cfg).await.unwrap();
    let t0 = Instant::now();
    let topic: Arc<str> = Arc::from("no-such-topic");
    let e = producer
        .send(&record(&topic, 1))
        .await
        .unwrap()
        .await
        .unwrap_err();
    let s = e.to_string();
    eprintln!("{s} after {:?}", t0.elapsed());
    assert!(matches!(e, Error::Delivery { .. }), "{s}");
    assert!(s.contains("no-such-topic"), "{s}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[test]
fn clients_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Producer>();
    send_sync::<Admin>();
    send_sync::<KafkaConfig>();
    send::<Consumer>();
    send::<ConsumerEvent>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_default_partition_count() {
    let broker = Tansu::start();
    let cfg = common::config(&broker);
    let admin = Admin::connect(&cfg).await.unwrap();
    let state = admin
        .ensure_topic(
            "defaulted",
            sluice_kafka::admin::BROKER_DEFAULT_PARTITIONS,
            1,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(state, TopicState::Created);
    let partitions = admin.partitions("defaulted").await.unwrap();
    eprintln!("broker default partitions: {partitions:?}");
    assert!(partitions.is_some_and(|p| p >= 1), "{partitions:?}");
    // Asking again finds it, with the count the broker chose.
    assert_eq!(
        admin.ensure_topic("defaulted", -1, 1, &[]).await.unwrap(),
        TopicState::Existed {
            partitions: partitions.unwrap()
        }
    );
    for bad in [0, -2] {
        let e = admin.ensure_topic("bad", bad, 1, &[]).await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("partition count {bad}")),
            "{e}"
        );
    }
}
