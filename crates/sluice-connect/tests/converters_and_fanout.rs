//! Records fanned out to two sink connectors reading the same topic through
//! the in-process transport, written by the real JSON and String converters
//! (worker defaults with options, a connector's own override), configured
//! from real files.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use sluice_connect::config_files::{load_connector, load_props};
use sluice_connect::{Registry, Worker};
use sluice_core::config::{ConfigDef, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SourceContext, SourceTask};
use sluice_core::record::{SourceOffset, SourceRecord};
use sluice_core::schema::prim;
use sluice_core::value::Value;
use tokio_util::sync::CancellationToken;

/// Emits `count` records: string key `k<n % 3>`, int64 value `n` (a
/// tombstone for n = 4), offset `{"n": n}`; then waits for shutdown.
struct TypedSource;

impl ConnectorPlugin for TypedSource {
    fn class(&self) -> &'static str {
        "test.TypedSource"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new("count", ConfigType::Int, "records").required()
        ])
    }
    fn validate(&self, _props: &Props) -> Result<Vec<String>, ConfigErrors> {
        Ok(Vec::new())
    }
    fn create_source_task(&self, props: &Props) -> anyhow::Result<Box<dyn SourceTask>> {
        let count = self.config_def().parse(props, &[])?.int("count");
        Ok(Box::new(TypedTask { count }))
    }
}

struct TypedTask {
    count: i64,
}

#[async_trait]
impl SourceTask for TypedTask {
    async fn run(&mut self, ctx: SourceContext) -> anyhow::Result<()> {
        let topic: Arc<str> = Arc::from("typed");
        let records = (0..self.count)
            .map(|n| {
                let mut offset = serde_json::Map::new();
                offset.insert("n".into(), n.into());
                SourceRecord {
                    topic: Arc::clone(&topic),
                    key_schema: Some(prim::string()),
                    key: Some(Value::String(format!("k{}", n % 3))),
                    value_schema: Some(prim::opt_int64()),
                    value: (n != 4).then_some(Value::Int64(n)),
                    timestamp_ms: None,
                    headers: Vec::new(),
                    offset: Some(Arc::new(SourceOffset {
                        partition: serde_json::Map::new(),
                        offset,
                    })),
                }
            })
            .collect();
        ctx.sender.send(records).await?;
        ctx.shutdown.cancelled().await;
        Ok(())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_string_converters_and_two_sinks_on_one_topic() {
    const COUNT: i64 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let offsets = d.join("offsets");
    let values = d.join("values.txt");
    let records = d.join("records.jsonl");
    let worker = write(
        d,
        "worker.json",
        &json!({
            "offset.storage.file.filename": offsets.display().to_string(),
            "offset.flush.interval.ms": 10,
            "value.converter.schemas.enable": false,
        })
        .to_string(),
    );
    let source = write(
        d,
        "source.properties",
        "name=typed\nconnector.class=test.TypedSource\ncount=30\n\
         key.converter=org.apache.kafka.connect.storage.StringConverter\n",
    );
    let plain = write(
        d,
        "plain.json",
        &json!({"name": "plain", "connector.class": "file", "topics": "typed",
                "file": values.display().to_string()})
        .to_string(),
    );
    let full = write(
        d,
        "full.properties",
        &format!(
            "name=full\nconnector.class=file\ntopics.regex=typ.*\ntasks.max=3\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             sluice.file.format=record\nfile={}\n",
            records.display()
        ),
    );
    let registry = Registry::new(vec![
        sluice_connect::file_sink::plugin(),
        Arc::new(TypedSource),
    ]);
    let connectors: Vec<_> = [&source, &plain, &full]
        .iter()
        .map(|p| load_connector(p).expect("connector config"))
        .collect();
    let worker = Worker::new(
        &registry,
        &load_props(&worker).expect("worker"),
        &connectors,
    )
    .expect("valid config");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));

    let committed_last = || {
        std::fs::read_to_string(&offsets)
            .ok()
            .and_then(|t| serde_json::from_str::<Json>(&t).ok())
            .is_some_and(|doc| doc[r#"["typed",{}]"#] == json!({"n": COUNT - 1}))
    };
    let lines_of = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    for _ in 0..3000 {
        if committed_last()
            && lines_of(&values) == COUNT as usize
            && lines_of(&records) == COUNT as usize
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(committed_last(), "the last offset was never committed");
    shutdown.cancel();
    run.await.expect("worker task").expect("clean stop");

    // Kafka's file sink format: the value's text (the worker's
    // JsonConverter without schemas), `null` for the tombstone.
    let value_lines: Vec<String> = std::fs::read_to_string(&values)
        .expect("values file")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..COUNT)
        .map(|n| {
            if n == 4 {
                "null".to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    assert_eq!(value_lines, expected);

    // The other sink sees the same records: its own StringConverter keys,
    // JSON values without the schema envelope, per-key order kept.
    let lines: Vec<Json> = std::fs::read_to_string(&records)
        .expect("records file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len() as i64, COUNT);
    for k in 0..3 {
        let got: Vec<&Json> = lines
            .iter()
            .filter(|l| l["key"] == json!(format!("k{k}")))
            .map(|l| &l["offset"])
            .collect();
        let want: Vec<Json> = (0..COUNT).filter(|n| n % 3 == k).map(Json::from).collect();
        assert_eq!(got, want.iter().collect::<Vec<_>>(), "key k{k}");
    }
    let tombstone = lines.iter().find(|l| l["offset"] == 4).expect("offset 4");
    assert_eq!(tombstone["value"], Json::Null);
    assert_eq!(
        lines.iter().find(|l| l["offset"] == 7).expect("7")["value"],
        7
    );
}
