//! The topic reader against a real broker: reads a topic to its end, then
//! exactly what was written since, across partitions.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Tansu;
use sluice_core::record::Record;
use sluice_kafka::{Admin, Producer, TopicReader};

fn record(topic: &Arc<str>, key: String) -> Record {
    Record {
        topic: Arc::clone(topic),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        value: Some(format!("v-{key}").into_bytes()),
        key: Some(key.into_bytes()),
        headers: Vec::new(),
    }
}

/// Writes one record at a time: tansu answers ListOffsets(latest) with
/// the number of record batches rather than the next offset, which is the
/// same only when every batch holds one record.
async fn write(p: &Producer, topic: &Arc<str>, keys: std::ops::Range<usize>) {
    for i in keys {
        p.send(&record(topic, format!("k{i}")))
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

fn keys(records: &[Record]) -> Vec<String> {
    let mut k: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    k.sort_by_key(|s| s[1..].parse::<usize>().unwrap());
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_to_the_end_then_only_what_is_new() {
    let broker = Tansu::start();
    let cfg = common::config(&broker);
    let admin = Admin::connect(&cfg).await.unwrap();
    let topic: Arc<str> = Arc::from("reader-test");
    admin.ensure_topic(&topic, 3, 1, &[]).await.unwrap();
    let producer = Producer::connect(&cfg).await.unwrap();

    let reader = TopicReader::open(&cfg, &topic).await.unwrap();
    let start = Instant::now();
    assert!(reader.catch_up().await.unwrap().is_empty(), "empty topic");
    let empty_took = start.elapsed();

    write(&producer, &topic, 0..50).await;
    let got = reader.catch_up().await.unwrap();
    assert_eq!(
        keys(&got),
        (0..50).map(|i| format!("k{i}")).collect::<Vec<_>>()
    );

    // Nothing new: nothing returned.
    assert!(reader.catch_up().await.unwrap().is_empty());

    write(&producer, &topic, 50..53).await;
    let got = reader.catch_up().await.unwrap();
    assert_eq!(keys(&got), ["k50", "k51", "k52"]);
    eprintln!("catch-up of an empty topic took {empty_took:?}");
    assert!(empty_took < Duration::from_secs(30));
}
