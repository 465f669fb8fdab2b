//! Where a worker's connector configurations live and which tasks it runs:
//! the part that differs between a standalone worker and a worker of a
//! distributed group. The runtime makes every change the same way: it
//! [writes](Cluster::write) it, then applies the [changes](Cluster::changes)
//! it reads back, so in a group every worker applies every change in one
//! order.
//!
//! [`Standalone`] keeps configurations in a file next to the offsets, so
//! connectors created over the REST API survive a restart; a distributed
//! worker's ([`crate::distributed::Distributed`]) are in the config topic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::config::Props;

use super::api::{ControlError, StateInfo, TargetState};

/// One stored change of the connectors' configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfigChange {
    /// Create (with its first target state) or reconfigure. `remember`:
    /// a standalone worker keeps it across restarts (connectors created
    /// over the REST API); the command line's connectors come from their
    /// files at every start, as in Kafka Connect.
    Put {
        name: String,
        props: Props,
        task_configs: Vec<Props>,
        initial: Option<TargetState>,
        remember: bool,
    },
    /// Delete.
    Delete { name: String },
    /// Pause, resume or stop.
    Target { name: String, state: TargetState },
    /// Restart the connector and maybe its tasks.
    Restart {
        name: String,
        include_tasks: bool,
        only_failed: bool,
    },
    /// Restart one task.
    RestartTask { name: String, task: u32 },
}

/// A change of the work this worker is given.
pub(crate) enum ClusterEvent {
    /// Start what this worker owns now.
    Assigned,
    /// Stop what this worker no longer owns and commit its offsets, then
    /// call the function to hand the work over.
    Revoked(Box<dyn FnOnce() + Send>),
    /// The worker lost its place in the group for good.
    Lost,
}

/// One task's (or with `task` None the connector's) state to publish;
/// `state` None removes it.
#[derive(Debug, Clone)]
pub(crate) struct StatusUpdate {
    pub connector: String,
    pub task: Option<u32>,
    pub state: Option<(&'static str, Option<String>)>,
}

/// A standalone worker or a worker of a group.
#[async_trait]
pub(crate) trait Cluster: Send {
    /// Stores a change; it takes effect when [`Cluster::changes`] returns
    /// it.
    async fn write(&mut self, change: ConfigChange) -> Result<(), ControlError>;
    /// The changes stored since the last call (this worker's own
    /// included), in order.
    async fn changes(&mut self) -> Result<Vec<ConfigChange>, ControlError>;
    /// Whether this worker runs task `task` of `connector`.
    fn owns(&self, connector: &str, task: u32) -> bool;
    /// Whether other workers run some tasks.
    fn is_distributed(&self) -> bool;
    /// Begins taking part (a group member joins its group).
    async fn start(&mut self, worker_id: &str) -> anyhow::Result<()>;
    /// The next change of this worker's share of the work.
    async fn next_event(&mut self) -> ClusterEvent;
    /// Publishes the states of this worker's tasks.
    async fn publish(&mut self, worker_id: &str, updates: Vec<StatusUpdate>);
    /// Reads what other workers published.
    async fn refresh_statuses(&mut self);
    /// The state another worker published for a task (or the connector).
    fn remote_status(&self, connector: &str, task: Option<u32>) -> Option<StateInfo>;
    /// Leaves: this worker's tasks go to the others.
    async fn close(&mut self);
}

/// A standalone worker: every task is its own; configurations are kept in
/// a file (when it has one) and changes apply at once.
pub(crate) struct Standalone {
    file: Option<PathBuf>,
    stored: BTreeMap<String, (Props, TargetState)>,
    queue: Vec<ConfigChange>,
}

impl Standalone {
    /// Reads the connectors remembered in `file` (none when it is missing).
    pub(crate) fn open(file: Option<PathBuf>) -> Result<Standalone, String> {
        let mut stored = BTreeMap::new();
        if let Some(path) = &file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let bad = |m: String| {
                        format!(
                            "connectors file {} is corrupt: {m} (fix or move it; it is rewritten whenever a connector changes)",
                            path.display()
                        )
                    };
                    let doc: Value =
                        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
                    let list = doc
                        .get("connectors")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad("no \"connectors\" array".into()))?;
                    for c in list {
                        let name = c.get("name").and_then(Value::as_str);
                        let config = c.get("config").and_then(Value::as_object);
                        let (Some(name), Some(config)) = (name, config) else {
                            return Err(bad(format!("entry without name or config: {c}")));
                        };
                        let props: Props = config
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                                )
                            })
                            .collect();
                        let state = match c.get("state").and_then(Value::as_str) {
                            Some("PAUSED") => TargetState::Paused,
                            Some("STOPPED") => TargetState::Stopped,
                            _ => TargetState::Running,
                        };
                        stored.insert(name.to_string(), (props, state));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("reading connectors file {}: {e}", path.display())),
            }
        }
        Ok(Standalone {
            file,
            stored,
            queue: Vec::new(),
        })
    }

    /// The connectors remembered from the last run, with their states.
    pub(crate) fn remembered(&self) -> Vec<(String, Props, TargetState)> {
        self.stored
            .iter()
            .map(|(n, (p, s))| (n.clone(), p.clone(), *s))
            .collect()
    }

    fn save(&self) -> Result<(), ControlError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let list: Vec<Value> = self
            .stored
            .iter()
            .map(|(name, (props, state))| {
                json!({"name": name, "config": props, "state": state.name()})
            })
            .collect();
        let text = serde_json::to_string_pretty(&json!({ "connectors": list }))
            .map_err(|e| ControlError::Failed(format!("serializing connectors: {e}")))?;
        // Configs hold secrets: only the worker's user may read the file.
        sluice_log::write_atomically(path, text.as_bytes())
            .map_err(|e| ControlError::Failed(format!("remembering connectors: {e}")))?;
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

#[async_trait]
impl Cluster for Standalone {
    async fn write(&mut self, change: ConfigChange) -> Result<(), ControlError> {
        let changed = match &change {
            ConfigChange::Put {
                name,
                props,
                initial,
                remember: true,
                ..
            } => {
                let state = initial
                    .or_else(|| self.stored.get(name).map(|(_, s)| *s))
                    .unwrap_or(TargetState::Running);
                self.stored.insert(name.clone(), (props.clone(), state));
                true
            }
            // The command line's version replaces a remembered one.
            ConfigChange::Put { name, .. } => self.stored.remove(name).is_some(),
            ConfigChange::Delete { name } => self.stored.remove(name).is_some(),
            ConfigChange::Target { name, state } => match self.stored.get_mut(name) {
                Some(e) => {
                    e.1 = *state;
                    true
                }
                None => false,
            },
            ConfigChange::Restart { .. } | ConfigChange::RestartTask { .. } => false,
        };
        if changed {
            self.save()?;
        }
        self.queue.push(change);
        Ok(())
    }

    async fn changes(&mut self) -> Result<Vec<ConfigChange>, ControlError> {
        Ok(std::mem::take(&mut self.queue))
    }

    fn owns(&self, _connector: &str, _task: u32) -> bool {
        true
    }

    fn is_distributed(&self) -> bool {
        false
    }

    async fn start(&mut self, _worker_id: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn next_event(&mut self) -> ClusterEvent {
        std::future::pending().await
    }

    async fn publish(&mut self, _worker_id: &str, _updates: Vec<StatusUpdate>) {}

    async fn refresh_statuses(&mut self) {}

    fn remote_status(&self, _connector: &str, _task: Option<u32>) -> Option<StateInfo> {
        None
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::props_from;

    #[tokio::test]
    async fn a_standalone_worker_remembers_connectors_and_their_states() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("connectors.json");
        let mut s = Standalone::open(Some(file.clone())).expect("open");
        assert!(s.remembered().is_empty());
        let props = props_from(&[("name", "a"), ("connector.class", "file")]);
        s.write(ConfigChange::Put {
            name: "a".into(),
            props: props.clone(),
            task_configs: vec![],
            initial: Some(TargetState::Running),
            remember: true,
        })
        .await
        .expect("put");
        s.write(ConfigChange::Target {
            name: "a".into(),
            state: TargetState::Paused,
        })
        .await
        .expect("pause");
        assert_eq!(s.changes().await.expect("changes").len(), 2);
        let again = Standalone::open(Some(file.clone())).expect("reopen");
        assert_eq!(
            again.remembered(),
            vec![("a".to_string(), props, TargetState::Paused)]
        );
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let mut s = again;
        s.write(ConfigChange::Delete { name: "a".into() })
            .await
            .expect("delete");
        assert!(Standalone::open(Some(file))
            .expect("reopen")
            .remembered()
            .is_empty());
    }
}
