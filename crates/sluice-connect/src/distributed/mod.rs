//! Distributed mode's shared state, kept where Kafka Connect keeps it: the
//! config topic (connector configs, target states, task configs, restart
//! requests), the status topic (connector and task states) and the offsets
//! topic (source offsets), in Kafka Connect's record formats, so the topics
//! of a Kafka Connect cluster and of a Sluice cluster read the same.
//!
//! Every worker of a group reads all three topics. Work is shared through a
//! consumer group named by `group.id` over the offsets topic: each task is
//! a unit mapped to one partition of that topic ([`unit_partition`]), and a
//! worker runs the units of the partitions the group assigned to it. The
//! group's coordinator gives every partition to exactly one live worker,
//! moves a dead worker's partitions to the others after its session times
//! out, and a worker lets partitions go only after it stopped their tasks,
//! so a task never runs twice for long (a PostgreSQL slot admits one reader
//! anyway, and sink groups fence their members).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use sluice_core::config::Props;
use sluice_core::record::Record;
use sluice_kafka::{Admin, KafkaConfig, Producer, TopicReader, COMPACTED};

use crate::murmur2::{murmur2, to_positive};
use crate::runtime::TargetState;
use crate::worker_config::DistributedConfig;

mod cluster;
pub(crate) use cluster::Distributed;

/// A config topic record, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigRecord {
    /// `connector-<name>`: its config; None when deleted.
    Connector {
        /// Connector name.
        name: String,
        /// The config, None for a tombstone.
        props: Option<Props>,
    },
    /// `target-state-<name>`; None when deleted.
    Target {
        /// Connector name.
        name: String,
        /// The state.
        state: Option<TargetState>,
    },
    /// `restart-connector-<name>`.
    Restart {
        /// Connector name.
        name: String,
        /// Restart its tasks too.
        include_tasks: bool,
        /// Only failed instances.
        only_failed: bool,
    },
    /// `restart-task-<name>-<id>` (Sluice's own: Kafka Connect restarts a
    /// single task by forwarding the request to its worker).
    RestartTask {
        /// Connector name.
        name: String,
        /// Task id.
        task: u32,
    },
    /// Task configs, commit markers, session keys: derived data Sluice
    /// recomputes from the connector config.
    Other,
}

fn json_bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// `connector-<name>` → `{"properties":{...}}`.
pub fn connector_record(name: &str, props: &Props) -> (String, Option<Vec<u8>>) {
    let properties: Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    (
        format!("connector-{name}"),
        Some(json_bytes(&json!({ "properties": properties }))),
    )
}

/// The tombstone deleting connector `name`.
pub fn connector_tombstone(name: &str) -> (String, Option<Vec<u8>>) {
    (format!("connector-{name}"), None)
}

/// `target-state-<name>`, as Kafka Connect 3.5+ writes it (`state.v2`
/// carries STOPPED; older readers see PAUSED).
pub fn target_record(name: &str, state: TargetState) -> (String, Option<Vec<u8>>) {
    let (v1, v2) = match state {
        TargetState::Running => ("STARTED", "STARTED"),
        TargetState::Paused => ("PAUSED", "PAUSED"),
        TargetState::Stopped => ("PAUSED", "STOPPED"),
    };
    (
        format!("target-state-{name}"),
        Some(json_bytes(&json!({ "state": v1, "state.v2": v2 }))),
    )
}

/// The tombstone of a deleted connector's target state.
pub fn target_tombstone(name: &str) -> (String, Option<Vec<u8>>) {
    (format!("target-state-{name}"), None)
}

/// `restart-connector-<name>` (KIP-745).
pub fn restart_record(
    name: &str,
    include_tasks: bool,
    only_failed: bool,
) -> (String, Option<Vec<u8>>) {
    (
        format!("restart-connector-{name}"),
        Some(json_bytes(
            &json!({ "include-tasks": include_tasks, "only-failed": only_failed }),
        )),
    )
}

/// `restart-task-<name>-<id>`.
pub fn restart_task_record(name: &str, task: u32) -> (String, Option<Vec<u8>>) {
    (
        format!("restart-task-{name}-{task}"),
        Some(json_bytes(&json!({}))),
    )
}

/// `task-<name>-<id>` → `{"properties":{...}}`.
pub fn task_record(name: &str, task: u32, props: &Props) -> (String, Option<Vec<u8>>) {
    let (_, value) = connector_record(name, props);
    (format!("task-{name}-{task}"), value)
}

/// `commit-<name>` → `{"tasks":N}`: the task configs before it are complete.
pub fn commit_record(name: &str, tasks: usize) -> (String, Option<Vec<u8>>) {
    (
        format!("commit-{name}"),
        Some(json_bytes(&json!({ "tasks": tasks }))),
    )
}

fn parse_object(value: &[u8], key: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "config topic record '{key}': expected a JSON object, found {other}"
        )),
        Err(e) => Err(format!("config topic record '{key}': not JSON: {e}")),
    }
}

/// Decodes one config topic record; an error names the key and what is
/// wrong (the record is then ignored by the caller, as Kafka Connect does).
pub fn decode_config(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<ConfigRecord, String> {
    let Some(key) = key else {
        return Err("config topic record without a key".into());
    };
    let key = std::str::from_utf8(key)
        .map_err(|_| "config topic record with a key that is not UTF-8".to_string())?;
    if let Some(name) = key.strip_prefix("connector-") {
        let props = match value {
            None => None,
            Some(v) => {
                let obj = parse_object(v, key)?;
                let Some(Value::Object(p)) = obj.get("properties") else {
                    return Err(format!(
                        "config topic record '{key}': no \"properties\" object"
                    ));
                };
                Some(
                    p.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k.clone(), v)
                        })
                        .collect(),
                )
            }
        };
        return Ok(ConfigRecord::Connector {
            name: name.to_string(),
            props,
        });
    }
    if let Some(name) = key.strip_prefix("target-state-") {
        let state = match value {
            None => None,
            Some(v) => {
                let obj = parse_object(v, key)?;
                let v2 = obj.get("state.v2").and_then(Value::as_str);
                let v1 = obj.get("state").and_then(Value::as_str);
                Some(match v2.or(v1) {
                    Some("STARTED") => TargetState::Running,
                    Some("PAUSED") => TargetState::Paused,
                    Some("STOPPED") => TargetState::Stopped,
                    other => {
                        return Err(format!(
                            "config topic record '{key}': unknown target state {other:?}"
                        ))
                    }
                })
            }
        };
        return Ok(ConfigRecord::Target {
            name: name.to_string(),
            state,
        });
    }
    if let Some(rest) = key.strip_prefix("restart-task-") {
        if let Some((name, task)) = rest.rsplit_once('-') {
            if let Ok(task) = task.parse::<u32>() {
                return Ok(ConfigRecord::RestartTask {
                    name: name.to_string(),
                    task,
                });
            }
        }
        return Err(format!(
            "config topic record '{key}': not restart-task-<connector>-<task>"
        ));
    }
    if let Some(name) = key.strip_prefix("restart-connector-") {
        let obj = match value {
            Some(v) => parse_object(v, key)?,
            None => return Ok(ConfigRecord::Other),
        };
        return Ok(ConfigRecord::Restart {
            name: name.to_string(),
            include_tasks: obj
                .get("include-tasks")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            only_failed: obj
                .get("only-failed")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok(ConfigRecord::Other)
}

/// A connector's or task's state as the status topic holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING.
    pub state: String,
    /// The failure, for FAILED.
    pub trace: Option<String>,
    /// The worker that wrote it.
    pub worker_id: String,
    /// The worker's generation of the assignment when it was written.
    pub generation: i64,
}

/// `status-connector-<name>`, or `status-task-<name>-<id>` for a task.
pub fn status_key(name: &str, task: Option<u32>) -> String {
    match task {
        None => format!("status-connector-{name}"),
        Some(t) => format!("status-task-{name}-{t}"),
    }
}

/// A status record's value, as Kafka Connect's status store writes it.
pub fn status_value(e: &StatusEntry) -> Vec<u8> {
    json_bytes(&json!({
        "state": e.state,
        "trace": e.trace,
        "worker_id": e.worker_id,
        "generation": e.generation,
    }))
}

/// Decodes a status record; None for keys or values it does not know.
pub fn decode_status(value: &[u8]) -> Option<StatusEntry> {
    let Value::Object(o) = serde_json::from_slice::<Value>(value).ok()? else {
        return None;
    };
    Some(StatusEntry {
        state: o.get("state")?.as_str()?.to_string(),
        trace: o.get("trace").and_then(Value::as_str).map(str::to_string),
        worker_id: o
            .get("worker_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        generation: o.get("generation").and_then(Value::as_i64).unwrap_or(0),
    })
}

/// The partition of the offsets topic whose owner runs task `task` of
/// `connector`: consecutive tasks of a connector land on consecutive
/// partitions, which the group's round-robin assignment gives to different
/// workers.
pub fn unit_partition(connector: &str, task: u32, partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let base = i64::from(to_positive(murmur2(connector.as_bytes())));
    ((base + i64::from(task)) % i64::from(partitions)) as i32
}

/// The three internal topics: created when missing, read by every worker,
/// written through the worker's producer.
pub struct InternalTopics {
    /// The settings.
    pub config: DistributedConfig,
    producer: Producer,
    /// Reads the config topic.
    pub configs: TopicReader,
    /// Reads the status topic.
    pub statuses: TopicReader,
    /// Reads the offsets topic.
    pub offsets: TopicReader,
    /// The offsets topic's partition count.
    pub offset_partitions: i32,
}

impl InternalTopics {
    /// Creates the topics when missing (compacted, as Kafka Connect
    /// requires) and opens their readers.
    pub async fn open(
        kafka: &KafkaConfig,
        admin: &Admin,
        producer: Producer,
        config: DistributedConfig,
    ) -> anyhow::Result<InternalTopics> {
        use anyhow::Context as _;
        let topics = [
            (
                &config.config_topic,
                1,
                config.config_replication,
                "config.storage.topic",
            ),
            (
                &config.offset_topic,
                config.offset_partitions,
                config.offset_replication,
                "offset.storage.topic",
            ),
            (
                &config.status_topic,
                config.status_partitions,
                config.status_replication,
                "status.storage.topic",
            ),
        ];
        let mut offset_partitions = config.offset_partitions;
        for (name, partitions, rf, key) in topics {
            let state = admin
                .ensure_topic(name, partitions.max(1), rf, COMPACTED)
                .await
                .with_context(|| format!("{key} '{name}'"))?;
            if let sluice_kafka::TopicState::Existed { partitions: p } = state {
                if key == "config.storage.topic" && p != 1 {
                    anyhow::bail!(
                        "{key} '{name}' has {p} partitions; it must have exactly 1 so that every worker reads configs in one order"
                    );
                }
                if key == "offset.storage.topic" {
                    offset_partitions = p;
                }
            }
        }
        let configs = TopicReader::open(kafka, &config.config_topic)
            .await
            .with_context(|| format!("reading config.storage.topic '{}'", config.config_topic))?;
        let statuses = TopicReader::open(kafka, &config.status_topic)
            .await
            .with_context(|| format!("reading status.storage.topic '{}'", config.status_topic))?;
        let offsets = TopicReader::open(kafka, &config.offset_topic)
            .await
            .with_context(|| format!("reading offset.storage.topic '{}'", config.offset_topic))?;
        Ok(InternalTopics {
            config,
            producer,
            configs,
            statuses,
            offsets,
            offset_partitions: offset_partitions.max(1),
        })
    }

    /// Writes records to `topic` and waits until the broker stored all of
    /// them. One at a time: these writes are few, and a record per batch
    /// keeps brokers that count batches in their ListOffsets answers (as
    /// tansu does) readable to the end.
    pub async fn write(
        &self,
        topic: &str,
        records: Vec<(String, Option<Vec<u8>>)>,
    ) -> anyhow::Result<()> {
        let topic: Arc<str> = Arc::from(topic);
        for (key, value) in records {
            let r = Record {
                topic: Arc::clone(&topic),
                partition: 0,
                offset: 0,
                timestamp_ms: 0,
                key: Some(key.into_bytes()),
                value,
                headers: Vec::new(),
            };
            self.producer
                .send(&r)
                .await
                .map_err(|e| anyhow::anyhow!("writing to '{topic}': {e}"))?
                .await
                .map_err(|e| anyhow::anyhow!("writing to '{topic}': {e}"))?;
        }
        Ok(())
    }

    /// Reads the statuses written since the last call into `statuses`.
    pub async fn refresh_statuses(
        &self,
        statuses: &mut BTreeMap<String, StatusEntry>,
    ) -> anyhow::Result<()> {
        for r in self.statuses.catch_up().await? {
            let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            match r.value.as_deref() {
                None => {
                    statuses.remove(key);
                }
                Some(v) => {
                    if let Some(e) = decode_status(v) {
                        statuses.insert(key.to_string(), e);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    #[test]
    fn config_records_round_trip_in_kafka_connects_format() {
        let p = props(&[("name", "pg"), ("tasks.max", "1")]);
        let (k, v) = connector_record("pg", &p);
        assert_eq!(k, "connector-pg");
        let text = String::from_utf8(v.clone().unwrap()).unwrap();
        assert_eq!(text, r#"{"properties":{"name":"pg","tasks.max":"1"}}"#);
        assert_eq!(
            decode_config(Some(k.as_bytes()), v.as_deref()).unwrap(),
            ConfigRecord::Connector {
                name: "pg".into(),
                props: Some(p)
            }
        );
        for state in [
            TargetState::Running,
            TargetState::Paused,
            TargetState::Stopped,
        ] {
            let (k, v) = target_record("pg", state);
            assert_eq!(
                decode_config(Some(k.as_bytes()), v.as_deref()).unwrap(),
                ConfigRecord::Target {
                    name: "pg".into(),
                    state: Some(state)
                }
            );
        }
        let (_, v) = target_record("pg", TargetState::Stopped);
        assert_eq!(
            String::from_utf8(v.unwrap()).unwrap(),
            r#"{"state":"PAUSED","state.v2":"STOPPED"}"#
        );
        // A pre-3.5 worker's record has no state.v2.
        assert_eq!(
            decode_config(Some(b"target-state-x"), Some(br#"{"state":"STARTED"}"#)).unwrap(),
            ConfigRecord::Target {
                name: "x".into(),
                state: Some(TargetState::Running)
            }
        );
        let (k, v) = restart_record("pg", true, false);
        assert_eq!(
            decode_config(Some(k.as_bytes()), v.as_deref()).unwrap(),
            ConfigRecord::Restart {
                name: "pg".into(),
                include_tasks: true,
                only_failed: false
            }
        );
        assert_eq!(
            decode_config(Some(b"connector-pg"), None).unwrap(),
            ConfigRecord::Connector {
                name: "pg".into(),
                props: None
            }
        );
        assert_eq!(
            decode_config(Some(b"commit-pg"), Some(br#"{"tasks":1}"#)).unwrap(),
            ConfigRecord::Other
        );
        let err = decode_config(Some(b"connector-pg"), Some(b"{nope")).unwrap_err();
        assert!(err.contains("'connector-pg'"), "{err}");
        let err = decode_config(Some(b"target-state-pg"), Some(br#"{"state":"ON"}"#)).unwrap_err();
        assert!(err.contains("unknown target state"), "{err}");
    }

    #[test]
    fn status_values_round_trip() {
        let e = StatusEntry {
            state: "FAILED".into(),
            trace: Some("boom".into()),
            worker_id: "10.0.0.1:8083".into(),
            generation: 7,
        };
        let v = status_value(&e);
        assert_eq!(
            String::from_utf8(v.clone()).unwrap(),
            r#"{"state":"FAILED","trace":"boom","worker_id":"10.0.0.1:8083","generation":7}"#
        );
        assert_eq!(decode_status(&v), Some(e));
        assert_eq!(status_key("pg", Some(3)), "status-task-pg-3");
        assert_eq!(status_key("pg", None), "status-connector-pg");
    }

    #[test]
    fn a_connectors_tasks_map_to_consecutive_partitions() {
        let p0 = unit_partition("sink", 0, 25);
        assert_eq!(unit_partition("sink", 1, 25), (p0 + 1) % 25);
        assert!((0..25).contains(&p0));
        assert_eq!(unit_partition("sink", 0, 1), 0);
    }
}
