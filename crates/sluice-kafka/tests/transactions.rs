//! Kafka transactions of Sluice's transactional producer against a real
//! Kafka-protocol broker (tansu): what a `read_committed` consumer sees of
//! committed and aborted transactions, and fencing by a newer producer with
//! the same `transactional.id`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Tansu;
use sluice_core::record::{Header, Record};
use sluice_kafka::{
    Admin, CommitOffsets, Consumer, ConsumerEvent, ConsumerOptions, Error, KafkaConfig, Producer,
    Subscription, TransactionalProducer,
};

const PARTITIONS: i32 = 3;

fn record(topic: &str, label: &str, i: usize) -> Record {
    Record {
        topic: Arc::from(topic),
        partition: 0,
        offset: 0,
        timestamp_ms: 0,
        key: Some(format!("key-{}", i % 7).into_bytes()),
        value: Some(format!("{label}-{i}").into_bytes()),
        headers: vec![Header {
            key: "txn".into(),
            value: Some(label.as_bytes().to_vec()),
        }],
    }
}

fn value(r: &Record) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

/// A consumer of `topic` in a fresh group, reading from the start with the
/// given `isolation.level`.
async fn reader(cfg: &KafkaConfig, topic: &str, isolation: &str) -> Consumer {
    static GROUPS: AtomicUsize = AtomicUsize::new(0);
    let group = format!(
        "reader-{isolation}-{}",
        GROUPS.fetch_add(1, Ordering::Relaxed)
    );
    Consumer::join(
        cfg,
        &group,
        Subscription::Topics(vec![topic.to_string()]),
        ConsumerOptions {
            settings: vec![("isolation.level".into(), isolation.into())],
            ..ConsumerOptions::default()
        },
    )
    .await
    .expect("consumer joins")
}

/// Reads until `until` holds for what was read, or `timeout` passes.
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

fn values(rs: &[Record]) -> BTreeSet<String> {
    rs.iter().map(value).collect()
}

fn expected(label: &str, n: usize) -> BTreeSet<String> {
    (0..n).map(|i| format!("{label}-{i}")).collect()
}

/// Sends `n` records labelled `label` in the open transaction and waits
/// until the broker stored them (still uncommitted).
async fn send_all(p: &TransactionalProducer, topic: &str, label: &str, n: usize) {
    let mut deliveries = Vec::new();
    for i in 0..n {
        deliveries.push(p.send(&record(topic, label, i)).await.expect("send"));
    }
    futures::future::try_join_all(deliveries)
        .await
        .expect("stored");
}

async fn setup(topic: &str) -> (Tansu, KafkaConfig) {
    let broker = Tansu::start();
    let cfg = common::config(&broker);
    let admin = Admin::connect(&cfg).await.expect("admin");
    admin
        .ensure_topic(topic, PARTITIONS, 1, &[])
        .await
        .expect("topic");
    (broker, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_become_visible_to_read_committed_consumers() {
    let (_broker, cfg) = setup("txn-commit").await;
    let p = Producer::connect_transactional(&cfg, "sluice-test-commit")
        .await
        .expect("init_transactions");
    assert_eq!(p.transactional_id(), "sluice-test-commit");
    p.begin().expect("begin");
    send_all(&p, "txn-commit", "open", 40).await;

    // Stored, yet invisible to read_committed until the commit: a
    // read_uncommitted reader sees all of them meanwhile.
    let mut dirty = reader(&cfg, "txn-commit", "read_uncommitted").await;
    let got = read_until(&mut dirty, Duration::from_secs(60), |rs| rs.len() >= 40).await;
    assert_eq!(values(&got), expected("open", 40));
    let mut committed = reader(&cfg, "txn-commit", "read_committed").await;
    let early = read_until(&mut committed, Duration::from_secs(5), |rs| !rs.is_empty()).await;
    assert!(
        early.is_empty(),
        "read_committed saw {} record(s) of an open transaction",
        early.len()
    );

    p.commit().await.expect("commit");
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| rs.len() >= 40).await;
    assert_eq!(values(&got), expected("open", 40));

    // The producer goes on with a second transaction.
    p.begin().expect("second begin");
    send_all(&p, "txn-commit", "second", 10).await;
    p.commit().await.expect("second commit");
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| rs.len() >= 10).await;
    assert_eq!(values(&got), expected("second", 10));
    dirty.close().await;
    committed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_is_never_exposed_while_open_and_the_producer_goes_on() {
    let (_broker, cfg) = setup("txn-abort").await;
    let p = Producer::connect_transactional(&cfg, "sluice-test-abort")
        .await
        .expect("init_transactions");
    p.begin().expect("begin");
    send_all(&p, "txn-abort", "aborted", 30).await;
    let mut committed = reader(&cfg, "txn-abort", "read_committed").await;
    let early = read_until(&mut committed, Duration::from_secs(5), |rs| !rs.is_empty()).await;
    assert!(
        early.is_empty(),
        "read_committed saw {} record(s) of an open transaction",
        early.len()
    );
    p.abort().await.expect("abort");

    // The producer begins again after the abort and its next commit is
    // visible.
    p.begin().expect("begin after abort");
    send_all(&p, "txn-abort", "kept", 20).await;
    p.commit().await.expect("commit");
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        expected("kept", 20).is_subset(&values(rs))
    })
    .await;
    assert!(expected("kept", 20).is_subset(&values(&got)));
    committed.close().await;
}

/// Kafka semantics that tansu 0.6.0 does not implement: its Fetch responses
/// never list aborted transactions, so librdkafka's `read_committed`
/// consumer cannot skip aborted records once the transaction is over. Run it
/// with `--ignored` against a broker that does (e.g. `TANSU_BIN` pointing at
/// a tansu build that fills `aborted_transactions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6.0 returns no aborted_transactions in Fetch responses"]
async fn aborted_records_stay_invisible_to_read_committed_consumers() {
    let (_broker, cfg) = setup("txn-abort-strict").await;
    let p = Producer::connect_transactional(&cfg, "sluice-test-abort-strict")
        .await
        .expect("init_transactions");
    p.begin().expect("begin");
    send_all(&p, "txn-abort-strict", "aborted", 30).await;
    p.abort().await.expect("abort");
    // A committed transaction after the aborted one: once a read_committed
    // reader has all of it, it has read past every aborted record.
    p.begin().expect("begin after abort");
    send_all(&p, "txn-abort-strict", "kept", 20).await;
    p.commit().await.expect("commit");

    let mut committed = reader(&cfg, "txn-abort-strict", "read_committed").await;
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        expected("kept", 20).is_subset(&values(rs))
    })
    .await;
    assert_eq!(values(&got), expected("kept", 20), "read_committed saw");

    // The aborted records did reach the broker: read_uncommitted sees them.
    let mut dirty = reader(&cfg, "txn-abort-strict", "read_uncommitted").await;
    let all = read_until(&mut dirty, Duration::from_secs(60), |rs| rs.len() >= 50).await;
    let mut want = expected("aborted", 30);
    want.extend(expected("kept", 20));
    assert_eq!(values(&all), want, "read_uncommitted saw");
    committed.close().await;
    dirty.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_producer_with_the_same_id_fences_the_older() {
    let (_broker, cfg) = setup("txn-fence").await;
    Admin::connect(&cfg)
        .await
        .expect("admin")
        .ensure_topic("txn-fence-more", 1, 1, &[])
        .await
        .expect("second topic");
    let old = Producer::connect_transactional(&cfg, "sluice-test-fence")
        .await
        .expect("first init_transactions");
    old.begin().expect("begin");
    send_all(&old, "txn-fence", "old", 15).await;

    // Another worker takes over the task: registering the same id bumps the
    // producer epoch and aborts the old producer's open transaction.
    let new = Producer::connect_transactional(&cfg, "sluice-test-fence")
        .await
        .expect("second init_transactions");
    // The old producer goes on writing to a partition new to its
    // transaction. Kafka refuses to add it (PRODUCER_FENCED); tansu 0.6.0
    // answers that request but drops the connection instead of answering
    // the commit's EndTxn, so without it the commit below would only time
    // out there.
    let lost = old
        .send(&record("txn-fence-more", "old", 99))
        .await
        .expect("enqueued")
        .await;
    assert!(lost.is_err(), "a fenced producer's record was stored");
    let err = old.commit().await.expect_err("the fenced producer commits");
    assert!(matches!(err, Error::Fenced { .. }), "{err:?}");
    assert!(err.is_fenced());
    assert!(err.to_string().starts_with("fenced:"), "{err}");
    // Fenced for good: it cannot begin again either.
    let again = old.begin().expect_err("the fenced producer begins again");
    assert!(
        matches!(again, Error::Fenced { .. } | Error::TxnFatal { .. }),
        "{again:?}"
    );

    new.begin().expect("begin");
    send_all(&new, "txn-fence", "new", 10).await;
    new.commit().await.expect("the newer producer commits");
    let mut committed = reader(&cfg, "txn-fence", "read_committed").await;
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        expected("new", 10).is_subset(&values(rs))
    })
    .await;
    assert!(expected("new", 10).is_subset(&values(&got)));
    committed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_makes_the_commit_fail_as_abortable() {
    let (_broker, mut cfg) = setup("txn-abortable").await;
    // No auto-creation: a record for a missing topic fails for good.
    for (k, v) in [
        ("allow.auto.create.topics", "false"),
        ("topic.metadata.propagation.max.ms", "2000"),
    ] {
        cfg.set_override(sluice_kafka::ClientRole::Producer, k, v)
            .expect("override");
    }
    let p = Producer::connect_transactional(&cfg, "sluice-test-abortable")
        .await
        .expect("init_transactions");
    p.begin().expect("begin");
    send_all(&p, "txn-abortable", "doomed", 5).await;
    let lost = p
        .send(&record("no-such-topic", "doomed", 5))
        .await
        .expect("enqueued")
        .await;
    assert!(lost.is_err(), "a record for a missing topic was stored");
    let err = p
        .commit()
        .await
        .expect_err("commit after a failed delivery");
    assert!(err.requires_abort(), "{err:?}");
    assert!(matches!(err, Error::TxnAbortable { .. }), "{err:?}");
    p.abort().await.expect("abort");

    // Usable again after the abort.
    p.begin().expect("begin after abort");
    send_all(&p, "txn-abortable", "kept", 5).await;
    p.commit().await.expect("commit");
    let mut committed = reader(&cfg, "txn-abortable", "read_committed").await;
    let got = read_until(&mut committed, Duration::from_secs(60), |rs| {
        expected("kept", 5).is_subset(&values(rs))
    })
    .await;
    assert!(expected("kept", 5).is_subset(&values(&got)));
    committed.close().await;
}
