//! A worker of a distributed group as the runtime sees it: configurations
//! in the config topic, states in the status topic, and the tasks of the
//! offsets topic partitions the worker group assigned to this worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    commit_record, connector_record, connector_tombstone, decode_config, restart_record,
    restart_task_record, status_key, status_value, target_record, target_tombstone, task_record,
    unit_partition, ConfigRecord, InternalTopics, StatusEntry,
};
use crate::runtime::api::{ControlError, StateInfo};
use crate::runtime::cluster::{Cluster, ClusterEvent, ConfigChange, StatusUpdate};

/// A status topic state as the REST API shows it.
fn known_state(s: &str) -> &'static str {
    match s {
        "RUNNING" => "RUNNING",
        "PAUSED" => "PAUSED",
        "STOPPED" => "STOPPED",
        "FAILED" => "FAILED",
        "RESTARTING" => "RESTARTING",
        "DESTROYED" => "DESTROYED",
        _ => "UNASSIGNED",
    }
}

/// A distributed worker's view of its group.
pub(crate) struct Distributed {
    topics: Arc<InternalTopics>,
    kafka: Arc<sluice_kafka::KafkaConfig>,
    grace: std::time::Duration,
    membership: Option<sluice_kafka::Consumer>,
    /// Partitions of the offsets topic assigned to this worker: it runs
    /// the tasks mapped to them.
    owned: BTreeSet<i32>,
    /// Bumped on every assignment (the `generation` of status records).
    generation: i64,
    /// The status topic as last read.
    statuses: BTreeMap<String, StatusEntry>,
}

impl Distributed {
    /// A worker of the group whose internal topics are `topics`, not yet
    /// joined (see [`Distributed::join`]).
    pub(crate) fn new(
        topics: Arc<InternalTopics>,
        kafka: Arc<sluice_kafka::KafkaConfig>,
        grace: std::time::Duration,
    ) -> Self {
        Distributed {
            topics,
            kafka,
            grace,
            membership: None,
            owned: BTreeSet::new(),
            generation: 0,
            statuses: BTreeMap::new(),
        }
    }

    /// Joins the worker group; its assignments then arrive as
    /// [`ClusterEvent`]s.
    async fn join(&mut self, worker_id: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let (kafka, grace) = (Arc::clone(&self.kafka), self.grace);
        let d = &self.topics.config;
        let mut options = sluice_kafka::ConsumerOptions {
            // Incremental cooperative rebalancing, as Kafka Connect's
            // workers do: when a worker joins or leaves, only the moved
            // partitions' tasks stop and start; the sticky assignment deals
            // a new group's partitions out in turn, so a connector's
            // consecutive tasks land on different workers.
            settings: vec![
                (
                    "partition.assignment.strategy".into(),
                    "cooperative-sticky".into(),
                ),
                ("client.id".into(), worker_id.to_string()),
                (
                    "session.timeout.ms".into(),
                    d.session_timeout_ms.to_string(),
                ),
                (
                    "heartbeat.interval.ms".into(),
                    d.heartbeat_interval_ms.to_string(),
                ),
                ("auto.offset.reset".into(), "latest".into()),
            ],
            revoke_timeout: grace * 3 + std::time::Duration::from_secs(10),
            ..sluice_kafka::ConsumerOptions::default()
        };
        // With `consumer.group.instance.id` set, a static member per worker:
        // one restarted after a crash takes its tasks back at once instead
        // of after the dead member's session. Opt-in, since a worker gone
        // for good then keeps its tasks until the broker expires it, which
        // not every Kafka-compatible broker does; on brokers without static
        // membership `Consumer::join` joins dynamically instead.
        if let Some(id) =
            sluice_kafka::static_member_id(&kafka, &format!("{}-{worker_id}", d.group_id))
        {
            options.settings.push(("group.instance.id".to_string(), id));
        }
        tracing::info!(group = %d.group_id, worker = %worker_id, "joining the worker group");
        let consumer = sluice_kafka::Consumer::join(
            &kafka,
            &d.group_id,
            sluice_kafka::Subscription::Topics(vec![d.offset_topic.clone()]),
            options,
        )
        .await
        .with_context(|| format!("joining worker group '{}'", d.group_id))?;
        self.membership = Some(consumer);
        Ok(())
    }

    fn write_error(&self, topic: &str, key: &str, e: anyhow::Error) -> ControlError {
        ControlError::Failed(format!("writing to {key} '{topic}': {e:#}"))
    }
}

#[async_trait]
impl Cluster for Distributed {
    async fn write(&mut self, change: ConfigChange) -> Result<(), ControlError> {
        let records = match change {
            ConfigChange::Put {
                name,
                props,
                task_configs,
                initial,
                ..
            } => {
                // As Kafka Connect writes them for tools that read the
                // topic: target state (new connectors), config, task
                // configs, commit marker.
                let mut records: Vec<_> = initial
                    .map(|t| target_record(&name, t))
                    .into_iter()
                    .collect();
                records.push(connector_record(&name, &props));
                for (i, t) in task_configs.iter().enumerate() {
                    records.push(task_record(&name, i as u32, t));
                }
                records.push(commit_record(&name, task_configs.len()));
                records
            }
            ConfigChange::Delete { name } => {
                vec![connector_tombstone(&name), target_tombstone(&name)]
            }
            ConfigChange::Target { name, state } => vec![target_record(&name, state)],
            ConfigChange::Restart {
                name,
                include_tasks,
                only_failed,
            } => vec![restart_record(&name, include_tasks, only_failed)],
            ConfigChange::RestartTask { name, task } => vec![restart_task_record(&name, task)],
        };
        let topics = Arc::clone(&self.topics);
        topics
            .write(&topics.config.config_topic, records)
            .await
            .map_err(|e| self.write_error(&topics.config.config_topic, "config.storage.topic", e))
    }

    async fn changes(&mut self) -> Result<Vec<ConfigChange>, ControlError> {
        let records = self.topics.configs.catch_up().await.map_err(|e| {
            ControlError::Failed(format!(
                "reading config.storage.topic '{}': {e}",
                self.topics.config.config_topic
            ))
        })?;
        let mut out = Vec::new();
        for r in records {
            match decode_config(r.key.as_deref(), r.value.as_deref()) {
                Ok(ConfigRecord::Connector {
                    name,
                    props: Some(props),
                }) => out.push(ConfigChange::Put {
                    name,
                    props,
                    task_configs: Vec::new(),
                    initial: None,
                    remember: false,
                }),
                Ok(ConfigRecord::Connector { name, props: None }) => {
                    out.push(ConfigChange::Delete { name })
                }
                Ok(ConfigRecord::Target {
                    name,
                    state: Some(state),
                }) => out.push(ConfigChange::Target { name, state }),
                Ok(ConfigRecord::Restart {
                    name,
                    include_tasks,
                    only_failed,
                }) => out.push(ConfigChange::Restart {
                    name,
                    include_tasks,
                    only_failed,
                }),
                Ok(ConfigRecord::RestartTask { name, task }) => {
                    out.push(ConfigChange::RestartTask { name, task })
                }
                Ok(ConfigRecord::Target { state: None, .. } | ConfigRecord::Other) => {}
                Err(e) => tracing::warn!("ignoring {e}"),
            }
        }
        Ok(out)
    }

    fn owns(&self, connector: &str, task: u32) -> bool {
        self.owned.contains(&unit_partition(
            connector,
            task,
            self.topics.offset_partitions,
        ))
    }

    fn is_distributed(&self) -> bool {
        true
    }

    async fn start(&mut self, worker_id: &str) -> anyhow::Result<()> {
        self.join(worker_id).await
    }

    async fn next_event(&mut self) -> ClusterEvent {
        use sluice_kafka::ConsumerEvent;
        let Some(m) = self.membership.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match m.next_event().await {
                // Offsets topic records: read by the offset store instead.
                Some(ConsumerEvent::Records(_)) => {}
                Some(ConsumerEvent::Assigned(parts)) => {
                    self.owned.extend(parts.iter().map(|p| p.partition));
                    self.generation += 1;
                    tracing::info!(
                        "worker group: this worker now holds {} of the {} work partitions",
                        self.owned.len(),
                        self.topics.offset_partitions
                    );
                    return ClusterEvent::Assigned;
                }
                Some(ConsumerEvent::Revoked(rev)) => {
                    for p in &rev.partitions {
                        self.owned.remove(&p.partition);
                    }
                    self.generation += 1;
                    tracing::info!(
                        "worker group: this worker now holds {} of the {} work partitions",
                        self.owned.len(),
                        self.topics.offset_partitions
                    );
                    return ClusterEvent::Revoked(Box::new(move || {
                        rev.release(sluice_kafka::CommitOffsets::new())
                    }));
                }
                None => return ClusterEvent::Lost,
            }
        }
    }

    async fn publish(&mut self, worker_id: &str, updates: Vec<StatusUpdate>) {
        if updates.is_empty() {
            return;
        }
        let records: Vec<(String, Option<Vec<u8>>)> = updates
            .into_iter()
            .map(|u| {
                let key = status_key(&u.connector, u.task);
                let value = u.state.map(|(state, trace)| {
                    status_value(&StatusEntry {
                        state: state.to_string(),
                        trace,
                        worker_id: worker_id.to_string(),
                        generation: self.generation,
                    })
                });
                (key, value)
            })
            .collect();
        let topics = Arc::clone(&self.topics);
        if let Err(e) = topics.write(&topics.config.status_topic, records).await {
            tracing::warn!("writing task states to status.storage.topic: {e:#}");
        }
    }

    async fn refresh_statuses(&mut self) {
        let topics = Arc::clone(&self.topics);
        if let Err(e) = topics.refresh_statuses(&mut self.statuses).await {
            tracing::warn!("reading status.storage.topic: {e:#}");
        }
    }

    fn remote_status(&self, connector: &str, task: Option<u32>) -> Option<StateInfo> {
        self.statuses
            .get(&status_key(connector, task))
            .map(|e| StateInfo {
                state: known_state(&e.state),
                worker_id: e.worker_id.clone(),
                trace: e.trace.clone(),
            })
    }

    async fn close(&mut self) {
        if let Some(m) = self.membership.take() {
            // Leaving the group hands this worker's tasks to the others,
            // now that they are stopped and their offsets committed. A
            // static member does not leave: its tasks wait for it to come
            // back, or move once its session times out.
            m.close().await;
        }
    }
}
