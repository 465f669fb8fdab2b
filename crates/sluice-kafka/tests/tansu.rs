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
    if i % 7 == 0 {
        headers.push(Header {
            key: "null-header".into(),
            value: None,
        });
    }
    if i % 11 == 0 {
        headers.push(Header {
            key: "bin".into(),
            value: Some(vec![0, 255, (i % 256) as u8]),
        });
    }
    let value = match i % 13 {
        0 => None,                           // tombstone
        5 if i % 2 == 0 => Some(Vec::new()), // empty, not null
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
    let cfg = broker.config();
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
        let errs = [
            Producer::connect(&cfg).await.err().unwrap(),
            Admin::connect(&cfg).await.err().unwrap(),
            Consumer::subscribe(
                &cfg,
                "c",
                Subscription::Topics(vec!["t".into()]),
                ConsumerOptions::default(),
            )
            .await
            .err()
            .unwrap(),
        ];
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3 * 3 + 6), "{took:?}");
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
