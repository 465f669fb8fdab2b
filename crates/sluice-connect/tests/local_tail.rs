//! The local transport hands a sink reading at the log's tail the records
//! its source just wrote, without decoding them: what the sink gets must be
//! exactly what decoding the log gives.

use std::sync::Arc;
use std::time::Duration;

use sluice_connect::connector_config::Subscription;
use sluice_connect::delivery::DeliveryTracker;
use sluice_connect::transport::local::LocalTransport;
use sluice_connect::transport::{
    InRecord, OutRecord, Outgoing, Polled, SinkInput, SinkInputSpec, SourceOutputSpec,
    TopicPartition, Transport,
};
use sluice_core::config::Props;
use sluice_core::record::{Header, SinkRecord, SourceRecord};
use sluice_core::schema::{prim, SchemaBuilder, SchemaType};
use sluice_core::value::Value;
use sluice_log::LogConfig;

fn props(kv: &[(&str, &str)]) -> Props {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Debezium-like events: nested structs, optional fields, bytes, a map, an
/// array, headers, a tombstone and a null-keyed record.
fn batch(n: usize) -> Vec<Outgoing> {
    let row = SchemaBuilder::structure()
        .field("id", prim::of(SchemaType::Int32, false))
        .field("name", prim::opt_string())
        .field("blob", prim::of(SchemaType::Bytes, true))
        .field("price", prim::of(SchemaType::Float64, true))
        .field(
            "tags",
            SchemaBuilder::array(prim::string()).optional().build(),
        )
        .field(
            "attrs",
            SchemaBuilder::map(prim::string(), prim::opt_int64())
                .optional()
                .build(),
        )
        .optional()
        .name("srv.public.t.Value")
        .build();
    let source = SchemaBuilder::structure()
        .field("lsn", prim::opt_int64())
        .field("snapshot", prim::opt_string())
        .build();
    let envelope = SchemaBuilder::structure()
        .field("before", Arc::clone(&row))
        .field("after", Arc::clone(&row))
        .field("source", source)
        .field("op", prim::string())
        .name("srv.public.t.Envelope")
        .build();
    let key = SchemaBuilder::structure()
        .field("id", prim::of(SchemaType::Int32, false))
        .name("srv.public.t.Key")
        .build();
    (0..n)
        .map(|i| {
            let id = i as i32;
            let after = Value::Struct(vec![
                Value::Int32(id),
                if i % 3 == 0 {
                    Value::Null
                } else {
                    Value::String(format!("name {i} ✓"))
                },
                Value::Bytes(vec![0, 1, 2, (i % 256) as u8]),
                Value::Float64(i as f64 / 7.0),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
                Value::Map(vec![(Value::String("k".into()), Value::Int64(-(i as i64)))]),
            ]);
            let (value_schema, value) = if i % 10 == 9 {
                (None, None)
            } else {
                (
                    Some(Arc::clone(&envelope)),
                    Some(Value::Struct(vec![
                        Value::Null,
                        after,
                        Value::Struct(vec![
                            Value::Int64(1000 + i as i64),
                            Value::String("true".into()),
                        ]),
                        Value::String("r".into()),
                    ])),
                )
            };
            let (key_schema, key) = if i % 17 == 16 {
                (None, None)
            } else {
                (
                    Some(Arc::clone(&key)),
                    Some(Value::Struct(vec![Value::Int32(id)])),
                )
            };
            Outgoing {
                record: Some(OutRecord::Structured(SourceRecord {
                    topic: Arc::from("srv.public.t"),
                    key_schema,
                    key,
                    value_schema,
                    value,
                    timestamp_ms: (i % 2 == 0).then_some(1_700_000_000_000 + i as i64),
                    headers: vec![Header {
                        key: "h".into(),
                        value: (i % 4 != 0).then(|| format!("v{i}").into_bytes()),
                    }],
                    offset: None,
                })),
                offset: None,
            }
        })
        .collect()
}

async fn input(t: &LocalTransport, group: &str) -> Box<dyn SinkInput> {
    t.sink_input(SinkInputSpec {
        connector: group.into(),
        task_id: 0,
        tasks: 1,
        subscription: Subscription::Topics(["srv.public.t".to_string()].into_iter().collect()),
        props: Props::new(),
    })
    .await
    .expect("input")
}

/// Everything `input` has, in (partition, offset) order.
async fn drain(input: &mut Box<dyn SinkInput>, want: usize) -> Vec<SinkRecord> {
    let mut out = Vec::new();
    while out.len() < want {
        let polled = tokio::time::timeout(Duration::from_secs(30), input.poll())
            .await
            .expect("records in time")
            .expect("poll")
            .expect("open");
        match polled {
            Polled::Records { records, .. } => out.extend(records.into_iter().map(|r| match r {
                InRecord::Structured(r) => r,
                InRecord::Serialized(r) => panic!("serialized record from the local log: {r:?}"),
            })),
            Polled::Revoked(tps) => panic!("revoked {tps:?}"),
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

#[tokio::test]
async fn records_from_the_tail_equal_the_decoded_log() {
    let dir = tempfile::tempdir().expect("dir");
    let t = LocalTransport::open(LogConfig::new(dir.path())).expect("log");
    // Two connectors read at the tail: the first is handed a copy, the
    // second the records themselves; one starts inside the first frame.
    let mut a = input(&t, "a").await;
    let mut b = input(&t, "b").await;
    b.commit(&[(
        TopicPartition {
            topic: Arc::from("srv.public.t"),
            partition: 0,
        },
        3,
    )])
    .await
    .expect("commit");
    drop(b);
    let mut b = input(&t, "b").await;

    let n = 3000;
    let tracker = Arc::new(DeliveryTracker::new());
    let out = t
        .source_output(SourceOutputSpec {
            connector: "src".into(),
            task_id: 0,
            props: props(&[("topic.creation.default.partitions", "3")]),
            tracker: Arc::clone(&tracker),
            on_failure: Box::new(|e| panic!("output failed: {e}")),
        })
        .await
        .expect("output");
    out.send(batch(n)).await.expect("send");
    out.close(Duration::from_secs(30)).await;
    assert_eq!(tracker.delivered_up_to(), n as u64);

    let from_a = drain(&mut a, n).await;
    let from_b = drain(&mut b, n - 3).await;
    assert!(
        t.tail().taken() >= 6,
        "frames taken from the tail: {}",
        t.tail().taken()
    );
    assert_eq!(t.tail().bytes(), 0, "every kept frame was handed out");
    // A connector created now reads the same log by decoding it.
    let taken = t.tail().taken();
    let mut c = input(&t, "c").await;
    let decoded = drain(&mut c, n).await;
    assert_eq!(t.tail().taken(), taken, "c decoded");

    assert_eq!(from_a.len(), n);
    assert_eq!(from_a, decoded, "the tail's records are the decoded ones");
    let skipped: Vec<_> = decoded
        .iter()
        .filter(|r| !(r.partition == 0 && r.offset < 3))
        .cloned()
        .collect();
    assert_eq!(from_b, skipped, "b starts at offset 3 of partition 0");
    assert!(decoded.iter().any(|r| r.partition == 2));
}
