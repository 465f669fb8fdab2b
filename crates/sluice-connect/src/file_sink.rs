//! `org.apache.kafka.connect.file.FileStreamSinkConnector`: writes one line
//! per record to a file (or stdout) — the value as the connector's value
//! converter writes it, `null` for a tombstone. `sluice.file.format=record`
//! writes a JSON object per line instead, with topic, partition, offset, key
//! and value, so keys and tombstones can be seen.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use serde_json::Value as Json;
use sluice_core::config::{ConfigDef, ConfigErrors, ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin, SinkContext, SinkTask};
use sluice_core::converter::Converter;
use sluice_core::record::SinkRecord;

/// Kafka's class name for the file sink.
pub const CLASS: &str = "org.apache.kafka.connect.file.FileStreamSinkConnector";

/// Buffered output beyond this is written out before the next flush, to
/// bound memory; durability still comes only from `flush`.
const MAX_BUFFER: usize = 1 << 20;

/// The file sink plugin.
pub fn plugin() -> Arc<dyn ConnectorPlugin> {
    Arc::new(FileStreamSink)
}

struct FileStreamSink;

impl ConnectorPlugin for FileStreamSink {
    fn class(&self) -> &'static str {
        CLASS
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["file", "FileStreamSink", "FileStreamSinkConnector"]
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn config_def(&self) -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new(
                "file",
                ConfigType::String,
                "Destination file; absent or '-' writes to standard output.",
            ),
            ConfigKey::new(
                "sluice.file.format",
                ConfigType::Enum,
                "'value': the value's text per line (Kafka's behaviour); 'record': one JSON object per record with topic, partition, offset, key and value.",
            )
            .default("value")
            .allowed(&["value", "record"]),
        ])
    }
    fn validate(&self, _props: &Props) -> Result<Vec<String>, ConfigErrors> {
        Ok(Vec::new())
    }
    fn task_configs(&self, props: &Props, max_tasks: usize) -> Vec<Props> {
        vec![props.clone(); max_tasks.max(1)]
    }
    fn create_sink_task(
        &self,
        props: &Props,
        ctx: SinkContext,
    ) -> anyhow::Result<Box<dyn SinkTask>> {
        let parsed = self.config_def().parse(props, &[])?;
        let format = match parsed.get("sluice.file.format") {
            Some("record") => Format::Record,
            _ => Format::Value,
        };
        let out = match parsed.get("file").map(str::trim) {
            None | Some("") | Some("-") => Output::Stdout,
            Some(path) => {
                let path = PathBuf::from(path);
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening file sink output '{}'", path.display()))?;
                Output::File {
                    path,
                    file: Arc::new(file),
                }
            }
        };
        Ok(Box::new(FileSinkTask {
            out,
            format,
            buf: Vec::new(),
            key_converter: ctx.key_converter,
            value_converter: ctx.value_converter,
        }))
    }
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Value,
    Record,
}

enum Output {
    Stdout,
    File {
        path: PathBuf,
        file: Arc<std::fs::File>,
    },
}

struct FileSinkTask {
    out: Output,
    format: Format,
    buf: Vec<u8>,
    key_converter: Arc<dyn Converter>,
    value_converter: Arc<dyn Converter>,
}

/// Key or value text as JSON: parsed when it is JSON, else a string.
fn as_json(data: Option<&[u8]>) -> Json {
    match data {
        None => Json::Null,
        Some(b) => serde_json::from_slice(b)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(b).into_owned())),
    }
}

impl FileSinkTask {
    fn append(&mut self, r: &SinkRecord) -> anyhow::Result<()> {
        let value = self
            .value_converter
            .from_connect(&r.topic, r.value_schema.as_deref(), r.value.as_ref())
            .with_context(|| {
                format!(
                    "file sink: writing the value of the record at {}",
                    r.position()
                )
            })?;
        match self.format {
            Format::Value => match &value {
                Some(v) => self.buf.extend_from_slice(v),
                None => self.buf.extend_from_slice(b"null"),
            },
            Format::Record => {
                let key = self
                    .key_converter
                    .from_connect(&r.topic, r.key_schema.as_deref(), r.key.as_ref())
                    .with_context(|| {
                        format!(
                            "file sink: writing the key of the record at {}",
                            r.position()
                        )
                    })?;
                let mut obj = serde_json::Map::new();
                obj.insert("topic".into(), Json::String(r.topic.to_string()));
                obj.insert("partition".into(), r.partition.into());
                obj.insert("offset".into(), r.offset.into());
                obj.insert("key".into(), as_json(key.as_deref()));
                obj.insert("value".into(), as_json(value.as_deref()));
                if !r.headers.is_empty() {
                    let headers = r
                        .headers
                        .iter()
                        .map(|h| {
                            let mut o = serde_json::Map::new();
                            o.insert("key".into(), Json::String(h.key.clone()));
                            o.insert("value".into(), as_json(h.value.as_deref()));
                            Json::Object(o)
                        })
                        .collect();
                    obj.insert("headers".into(), Json::Array(headers));
                }
                self.buf
                    .extend_from_slice(Json::Object(obj).to_string().as_bytes());
            }
        }
        self.buf.push(b'\n');
        Ok(())
    }

    async fn write_out(&mut self, sync: bool) -> anyhow::Result<()> {
        let data = std::mem::take(&mut self.buf);
        match &self.out {
            Output::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&data)
                    .context("writing to standard output")?;
                stdout.flush().context("flushing standard output")?;
            }
            Output::File { path, file } => {
                let file = Arc::clone(file);
                let shown = path.display().to_string();
                // One write call per buffer: with O_APPEND, tasks sharing the
                // file never interleave inside a line.
                tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                    (&*file)
                        .write_all(&data)
                        .with_context(|| format!("writing '{shown}'"))?;
                    if sync {
                        file.sync_data()
                            .with_context(|| format!("syncing '{shown}'"))?;
                    }
                    Ok(())
                })
                .await
                .context("file sink writer thread")??;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SinkTask for FileSinkTask {
    async fn put(&mut self, records: &[SinkRecord]) -> anyhow::Result<()> {
        for r in records {
            self.append(r)?;
            if self.buf.len() >= MAX_BUFFER {
                self.write_out(false).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        self.write_out(true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::record::Header;

    fn rec(offset: i64, key: Option<&str>, value: Option<&str>) -> SinkRecord {
        SinkRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: 0,
            key_schema: None,
            key: key.map(|k| sluice_core::value::Value::Bytes(k.as_bytes().to_vec())),
            value_schema: None,
            value: value.map(|v| sluice_core::value::Value::Bytes(v.as_bytes().to_vec())),
            headers: Vec::new(),
        }
    }

    fn task(props: &[(&str, &str)]) -> Box<dyn SinkTask> {
        let props: Props = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let conv: Arc<dyn sluice_core::converter::Converter> =
            Arc::new(crate::converters::ByteArrayConverter);
        plugin()
            .create_sink_task(
                &props,
                SinkContext {
                    connector: "f".into(),
                    task_id: 0,
                    key_converter: Arc::clone(&conv),
                    value_converter: conv,
                    reporter: Default::default(),
                    telemetry: Default::default(),
                },
            )
            .expect("task")
    }

    #[tokio::test]
    async fn value_lines_and_tombstones_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "existing\n").expect("seed");
        let shown = path.display().to_string();
        let mut t = task(&[("file", &shown)]);
        t.put(&[
            rec(0, Some("k"), Some("{\"a\":1}")),
            rec(1, Some("k"), None),
        ])
        .await
        .expect("put");
        // Nothing is promised before flush; after it, everything is there.
        t.flush().await.expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "existing\n{\"a\":1}\nnull\n");
    }

    #[tokio::test]
    async fn record_format_shows_keys_and_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        let shown = path.display().to_string();
        let mut t = task(&[("file", &shown), ("sluice.file.format", "record")]);
        let mut with_header = rec(2, Some("plain key"), Some("text"));
        with_header.headers.push(Header {
            key: "h".into(),
            value: Some(b"1".to_vec()),
        });
        t.put(&[
            rec(0, Some("{\"id\":1}"), None),
            rec(1, None, Some("[1]")),
            with_header,
        ])
        .await
        .expect("put");
        t.flush().await.expect("flush");
        let lines: Vec<Json> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"topic":"t","partition":0,"offset":0,"key":{"id":1},"value":null})
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"topic":"t","partition":0,"offset":1,"key":null,"value":[1]})
        );
        assert_eq!(lines[2]["key"], "plain key");
        assert_eq!(lines[2]["value"], "text");
        assert_eq!(lines[2]["headers"][0]["value"], 1);
    }
}
