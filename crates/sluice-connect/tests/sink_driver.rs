//! The sink driver over the real in-process transport (a local log on
//! disk): what it commits is exactly what its sink made durable, failing
//! puts are retried within `errors.retry.timeout`, a sink that batches
//! itself is committed only as far as it reports, and a trickle is flushed
//! without waiting for the interval.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_connect::config_files::ConnectorFile;
use sluice_connect::connector_config::{validate_connectors, Subscription};
use sluice_connect::delivery::DeliveryTracker;
use sluice_connect::error_handling::ErrorHandler;
use sluice_connect::sink_driver::{FlushPolicy, SinkDriver};
use sluice_connect::topics::ActiveTopics;
use sluice_connect::transport::local::LocalTransport;
use sluice_connect::transport::{OutRecord, Outgoing, SinkInputSpec, SourceOutputSpec, Transport};
use sluice_connect::{Registry, WorkerConfig};
use sluice_core::config::Props;
use sluice_core::connector::{PartitionOffset, SinkTask};
use sluice_core::record::{SinkRecord, SourceRecord};
use sluice_core::schema::prim;
use sluice_core::value::Value;
use sluice_log::LogConfig;
use tokio_util::sync::CancellationToken;

fn props(kv: &[(&str, &str)]) -> Props {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes `n` records with keys `k0..k{n-1}` to topic `t` through a source
/// output, and waits until the log stored them.
async fn produce(transport: &LocalTransport, n: usize, source_props: &[(&str, &str)]) {
    let tracker = Arc::new(DeliveryTracker::new());
    let out = transport
        .source_output(SourceOutputSpec {
            connector: "src".into(),
            task_id: 0,
            props: props(source_props),
            tracker: Arc::clone(&tracker),
            on_failure: Box::new(|e| panic!("output failed: {e}")),
        })
        .await
        .expect("output");
    let batch = (0..n)
        .map(|i| Outgoing {
            record: Some(OutRecord::Structured(SourceRecord {
                topic: Arc::from("t"),
                key_schema: Some(prim::string()),
                key: Some(Value::String(format!("k{i}"))),
                value_schema: Some(prim::int64()),
                value: Some(Value::Int64(i as i64)),
                timestamp_ms: Some(1),
                headers: Vec::new(),
                offset: None,
            })),
            offset: None,
        })
        .collect();
    out.send(batch).await.expect("send");
    out.close(Duration::from_secs(30)).await;
    assert_eq!(tracker.delivered_up_to(), n as u64, "all stored");
}

/// A driver for file-sink connector `name` (with `errors`) over `task`,
/// reading topic `t` from `transport`.
async fn driver(
    transport: &LocalTransport,
    name: &str,
    task: Box<dyn SinkTask>,
    errors: &[(&str, &str)],
    policy: FlushPolicy,
) -> SinkDriver {
    let registry = Registry::new(vec![sluice_connect::file_sink::plugin()]);
    let worker = WorkerConfig::from_props(&Props::new()).expect("worker").0;
    let mut p = props(&[("name", name), ("connector.class", "file"), ("topics", "t")]);
    p.extend(props(errors));
    let (specs, _) = validate_connectors(
        &registry,
        &worker,
        &[ConnectorFile {
            path: "c.properties".into(),
            props: p.clone(),
        }],
    )
    .expect("valid");
    let spec = &specs[0];
    let input = transport
        .sink_input(SinkInputSpec {
            connector: name.into(),
            task_id: 0,
            tasks: 1,
            subscription: Subscription::Topics(["t".to_string()].into_iter().collect()),
            props: p,
        })
        .await
        .expect("input");
    SinkDriver {
        connector: name.into(),
        task_id: 0,
        task,
        input,
        stop: CancellationToken::new(),
        policy,
        key_converter: Arc::clone(&spec.key_converter),
        value_converter: Arc::clone(&spec.value_converter),
        transforms: None,
        paused: None,
        errors: ErrorHandler::for_sink(spec, 0, None),
        active: Arc::new(ActiveTopics::default()),
        reporter: Default::default(),
        telemetry: Default::default(),
        stats_file: None,
    }
}

fn fast() -> FlushPolicy {
    FlushPolicy {
        interval: Duration::from_millis(10),
        max_records: 1,
        idle_gap: None,
    }
}

/// The committed positions of group `name`: (partition, next offset).
fn committed(transport: &LocalTransport, name: &str) -> Vec<(u32, i64)> {
    transport
        .log()
        .groups()
        .load(name)
        .expect("positions")
        .into_iter()
        .map(|((_, p), o)| (p, o))
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn open(dir: &std::path::Path) -> LocalTransport {
    LocalTransport::open(LogConfig::new(dir)).expect("local log")
}

/// Fails its first `failures` puts, then keeps the values it is given.
struct Flaky {
    failures: usize,
    attempts: Arc<Mutex<usize>>,
    kept: Arc<Mutex<Vec<i64>>>,
    flushes: Arc<Mutex<usize>>,
}

#[async_trait]
impl SinkTask for Flaky {
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()> {
        let mut attempts = self.attempts.lock().expect("lock");
        *attempts += 1;
        if *attempts <= self.failures {
            anyhow::bail!("the store is down (attempt {attempts})");
        }
        self.kept
            .lock()
            .expect("lock")
            .extend(records.iter().filter_map(|r| r.value.as_ref()?.as_i64()));
        Ok(())
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        *self.flushes.lock().expect("lock") += 1;
        Ok(())
    }
}

type Shared<T> = Arc<Mutex<T>>;

fn flaky(failures: usize) -> (Box<Flaky>, Shared<usize>, Shared<Vec<i64>>, Shared<usize>) {
    let (attempts, kept, flushes): (Shared<usize>, Shared<Vec<i64>>, Shared<usize>) =
        Default::default();
    (
        Box::new(Flaky {
            failures,
            attempts: Arc::clone(&attempts),
            kept: Arc::clone(&kept),
            flushes: Arc::clone(&flushes),
        }),
        attempts,
        kept,
        flushes,
    )
}

#[tokio::test]
async fn a_failing_put_is_retried_within_the_retry_timeout_and_then_committed() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = open(dir.path());
    produce(&t, 3, &[]).await;
    let (task, attempts, kept, _) = flaky(2);
    let d = driver(
        &t,
        "retry-ok",
        task,
        &[("errors.retry.timeout", "30000")],
        fast(),
    )
    .await;
    let stop = d.stop.clone();
    let run = tokio::spawn(d.run());
    until("committed", || committed(&t, "retry-ok") == vec![(0, 3)]).await;
    assert_eq!(*attempts.lock().expect("lock"), 3);
    assert_eq!(*kept.lock().expect("lock"), vec![0, 1, 2]);
    assert_eq!(
        sluice_connect::error_handling::counts("retry-ok").retries,
        2
    );
    stop.cancel();
    run.await.expect("joined").expect("stopped cleanly");
}

#[tokio::test]
async fn without_retries_a_failing_put_fails_the_task_and_commits_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = open(dir.path());
    produce(&t, 1, &[]).await;
    let (task, _, kept, _) = flaky(1);
    let d = driver(&t, "retry-none", task, &[], fast()).await;
    let err = tokio::time::timeout(Duration::from_secs(30), d.run())
        .await
        .expect("fails at once")
        .expect_err("put failed");
    let text = format!("{err:#}");
    assert!(
        text.contains("sink connector 'retry-none' task 0: put of 1 records (first: topic 't' partition 0 offset 0) failed")
            && text.contains("the store is down"),
        "{text}"
    );
    assert!(committed(&t, "retry-none").is_empty(), "nothing committed");
    assert!(kept.lock().expect("lock").is_empty());
    // The next run of the sink reads the record again.
    let (task, _, kept, _) = flaky(0);
    let d = driver(&t, "retry-none", task, &[], fast()).await;
    let stop = d.stop.clone();
    let run = tokio::spawn(d.run());
    until("read again", || *kept.lock().expect("lock") == vec![0]).await;
    stop.cancel();
    run.await.expect("joined").expect("stopped cleanly");
    assert_eq!(committed(&t, "retry-none"), vec![(0, 1)]);
}

/// Batches itself: holds what it is given and reports durable only the
/// partitions `durable` lists; `flush` writes all.
struct Batching {
    held: Vec<(Arc<str>, i32, i64)>,
    durable: Shared<Vec<i32>>,
    flushed: Shared<usize>,
}

#[async_trait]
impl SinkTask for Batching {
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()> {
        self.held.extend(
            records
                .iter()
                .map(|r| (Arc::clone(&r.topic), r.partition, r.offset)),
        );
        Ok(())
    }
    async fn flush(&mut self) -> anyhow::Result<()> {
        *self.flushed.lock().expect("lock") += 1;
        self.held.clear();
        Ok(())
    }
    fn batches_itself(&self) -> bool {
        true
    }
    async fn pre_commit(&mut self) -> anyhow::Result<Vec<PartitionOffset>> {
        let durable = self.durable.lock().expect("lock").clone();
        Ok(self
            .held
            .iter()
            .filter(|(_, p, _)| durable.contains(p))
            .map(|(t, p, o)| PartitionOffset {
                topic: Arc::clone(t),
                partition: *p,
                offset: *o,
            })
            .collect())
    }
}

#[tokio::test]
async fn a_task_that_batches_itself_is_committed_only_as_far_as_it_reports() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = open(dir.path());
    // Two partitions: the keys spread over both.
    produce(&t, 20, &[("topic.creation.default.partitions", "2")]).await;
    let (durable, flushed): (Shared<Vec<i32>>, Shared<usize>) = Default::default();
    let task = Box::new(Batching {
        held: Vec::new(),
        durable: Arc::clone(&durable),
        flushed: Arc::clone(&flushed),
    });
    let d = driver(&t, "batching", task, &[], fast()).await;
    let stop = d.stop.clone();
    let run = tokio::spawn(d.run());
    // Nothing reported durable: nothing committed, over many cadences.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(committed(&t, "batching").is_empty());
    // Partition 0 durable: only it is committed, to its end.
    durable.lock().expect("lock").push(0);
    let (end0, end1) = (
        t.log().bounds("t", 0).expect("p0").1,
        t.log().bounds("t", 1).expect("p1").1,
    );
    assert!(end0 > 0 && end1 > 0, "both partitions hold records");
    until("partition 0 committed", || {
        committed(&t, "batching") == vec![(0, end0)]
    })
    .await;
    assert_eq!(*flushed.lock().expect("lock"), 0, "never made to flush");
    // Stopping writes everything it holds, then commits it.
    stop.cancel();
    run.await.expect("joined").expect("stopped cleanly");
    assert_eq!(*flushed.lock().expect("lock"), 1);
    assert_eq!(committed(&t, "batching"), vec![(0, end0), (1, end1)]);
}

#[tokio::test]
async fn a_drained_input_is_flushed_without_waiting_for_the_interval() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = open(dir.path());
    let (task, _, kept, flushes) = flaky(0);
    // An interval no test waits for: only the idle flush can make records
    // durable.
    let policy = FlushPolicy {
        interval: Duration::from_secs(3600),
        max_records: 1_000_000,
        idle_gap: Some(Duration::from_millis(10)),
    };
    let d = driver(&t, "idle", task, &[], policy).await;
    let stop = d.stop.clone();
    let run = tokio::spawn(d.run());
    for i in 1..=3u64 {
        produce(&t, 1, &[]).await;
        until("flushed", || *flushes.lock().expect("lock") >= i as usize).await;
    }
    assert_eq!(kept.lock().expect("lock").len(), 3);
    stop.cancel();
    run.await.expect("joined").expect("stopped cleanly");
    assert_eq!(committed(&t, "idle"), vec![(0, 3)]);
}
