//! The worker's public control surface: what the REST API asks
//! ([`WorkerHandle`]) and the shapes of its answers, as Kafka Connect's REST
//! API shows them.

use std::sync::Arc;

use serde::Serialize;
use sluice_core::config::Props;
use tokio::sync::{mpsc, oneshot};

use crate::registry::Registry;
use crate::worker_config::WorkerConfig;

/// What a connector is asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TargetState {
    /// Tasks run.
    Running,
    /// Tasks exist but neither produce (sources) nor consume (sinks).
    Paused,
    /// No tasks; the config is kept.
    Stopped,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Running => "RUNNING",
            TargetState::Paused => "PAUSED",
            TargetState::Stopped => "STOPPED",
        }
    }
}

/// Why a control request was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No connector has this name (Kafka Connect's message).
    #[error("Connector {0} not found")]
    NotFound(String),
    /// No such task.
    #[error("Task {1} of connector {0} not found")]
    TaskNotFound(String, u32),
    /// A connector with this name exists.
    #[error("Connector {0} already exists")]
    Conflict(String),
    /// The config is invalid; one line per problem, naming the key.
    #[error("Connector configuration is invalid and contains the following {} error(s):\n{}", .0.len(), .0.join("\n"))]
    InvalidConfig(Vec<String>),
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The worker could not do what was asked (e.g. writing a file).
    #[error("{0}")]
    Failed(String),
    /// The worker is not running (stopping or stopped).
    #[error("the worker is not running")]
    NotRunning,
}

impl TargetState {
    /// The state's name in Kafka Connect's API.
    pub fn name(self) -> &'static str {
        self.as_str()
    }
}

/// A task's id as Kafka Connect shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskId {
    /// Connector name.
    pub connector: String,
    /// Task number.
    pub task: u32,
}

/// `GET /connectors/{c}`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorInfo {
    /// Name.
    pub name: String,
    /// Full config (unmasked; callers mask secrets).
    pub config: Props,
    /// Its tasks.
    pub tasks: Vec<TaskId>,
    /// `source` or `sink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// A state with where it runs and, when failed, why.
#[derive(Debug, Clone, Serialize)]
pub struct StateInfo {
    /// RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED.
    pub state: &'static str,
    /// `<host>:<port>` of the worker.
    pub worker_id: String,
    /// The error, for FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// One task's status.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// Task number.
    pub id: u32,
    /// Its state.
    #[serde(flatten)]
    pub state: StateInfo,
    /// What a task running on this worker says about itself (its health,
    /// snapshot, streaming, slot or sink figures).
    #[serde(flatten)]
    pub details: Option<crate::runtime::figures::TaskDetails>,
}

/// `GET /connectors/{c}/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    /// Name.
    pub name: String,
    /// The connector's own state.
    pub connector: StateInfo,
    /// Its tasks' states.
    pub tasks: Vec<TaskStatus>,
    /// `source` or `sink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `GET /connectors/{c}/tasks` entries.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// The task's id.
    pub id: TaskId,
    /// Its task config.
    pub config: Props,
}

type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// One entry of `PATCH /connectors/{c}/offsets`: a source partition and
/// its new offset (None: forget it).
#[derive(Debug, Clone)]
pub struct OffsetChange {
    /// The source partition.
    pub partition: serde_json::Map<String, serde_json::Value>,
    /// The new offset; None removes the partition's offset.
    pub offset: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(crate) enum Command {
    List(Reply<Vec<String>>),
    Info(String, Reply<ConnectorInfo>),
    Status(String, Reply<ConnectorStatus>),
    Tasks(String, Reply<Vec<TaskInfo>>),
    Put {
        props: Props,
        initial: TargetState,
        create_only: bool,
        reply: Reply<(ConnectorInfo, bool)>,
    },
    Delete(String, Reply<Vec<String>>),
    Target(String, TargetState, Reply<()>),
    Restart {
        name: String,
        include_tasks: bool,
        only_failed: bool,
        reply: Reply<ConnectorStatus>,
    },
    RestartTask(String, u32, Reply<()>),
    Offsets(String, Reply<Vec<serde_json::Value>>),
    Topics(String, Reply<Vec<String>>),
    AlterOffsets(String, Option<Vec<OffsetChange>>, Reply<()>),
    ResetTopics(String, Reply<()>),
    Sample(Reply<crate::exporter::WorkerSample>),
}

/// A cloneable handle to a running worker; every method waits for the
/// worker's answer.
#[derive(Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
    registry: Registry,
    config: Arc<WorkerConfig>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

impl WorkerHandle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        registry: Registry,
        config: Arc<WorkerConfig>,
    ) -> Self {
        WorkerHandle {
            commands,
            registry,
            config,
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ControlError::NotRunning)?;
        rx.await.map_err(|_| ControlError::NotRunning)?
    }

    /// The connector plugins this worker offers.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Checks a connector config as creating it would, without creating
    /// it: each problem with its key (the external system tried too), and
    /// the warnings.
    pub async fn validate(
        &self,
        props: &Props,
    ) -> (Vec<sluice_core::config::ConfigError>, Vec<String>) {
        let (mut errors, warnings) =
            crate::connector_config::validate_config(&self.registry, &self.config, props);
        if errors.is_empty() {
            if let Some(plugin) = props
                .get("connector.class")
                .and_then(|c| self.registry.lookup(c).ok())
            {
                errors.extend(plugin.check_external(props).await);
            }
        }
        (errors, warnings)
    }

    /// Connector names, sorted.
    pub async fn list(&self) -> Result<Vec<String>, ControlError> {
        self.ask(Command::List).await
    }

    /// A connector's config and tasks.
    pub async fn info(&self, name: &str) -> Result<ConnectorInfo, ControlError> {
        self.ask(|r| Command::Info(name.to_string(), r)).await
    }

    /// A connector's and its tasks' states.
    pub async fn status(&self, name: &str) -> Result<ConnectorStatus, ControlError> {
        self.ask(|r| Command::Status(name.to_string(), r)).await
    }

    /// The worker's figures now (for `GET /metrics` and the status page).
    pub async fn sample(&self) -> Result<crate::exporter::WorkerSample, ControlError> {
        self.ask(Command::Sample).await
    }

    /// A connector's task configs.
    pub async fn tasks(&self, name: &str) -> Result<Vec<TaskInfo>, ControlError> {
        self.ask(|r| Command::Tasks(name.to_string(), r)).await
    }

    /// Creates a connector from `props` (which hold `name`), validated as
    /// at start-up; [`ControlError::Conflict`] if the name is taken.
    pub async fn create(
        &self,
        props: Props,
        initial: TargetState,
    ) -> Result<ConnectorInfo, ControlError> {
        self.ask(|reply| Command::Put {
            props,
            initial,
            create_only: true,
            reply,
        })
        .await
        .map(|(info, _)| info)
    }

    /// Creates or reconfigures (restarts with the new config) a connector;
    /// true when it was created.
    pub async fn put_config(&self, props: Props) -> Result<(ConnectorInfo, bool), ControlError> {
        self.ask(|reply| Command::Put {
            props,
            initial: TargetState::Running,
            create_only: false,
            reply,
        })
        .await
    }

    /// Stops a connector's tasks and forgets it; its offsets are kept.
    /// Returns what the connector leaves behind in the external system
    /// (one line each, saying how to remove it).
    pub async fn delete(&self, name: &str) -> Result<Vec<String>, ControlError> {
        self.ask(|r| Command::Delete(name.to_string(), r)).await
    }

    /// Restarts one task.
    pub async fn restart_task(&self, name: &str, task: u32) -> Result<(), ControlError> {
        self.ask(|r| Command::RestartTask(name.to_string(), task, r))
            .await
    }

    /// Pauses, resumes or stops a connector.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), ControlError> {
        self.ask(|r| Command::Target(name.to_string(), target, r))
            .await
    }

    /// Restarts a connector (Sluice's connectors have no instance apart
    /// from their tasks: a connector that failed to start is started
    /// again) and, with `include_tasks`, its tasks (all, or only the failed
    /// ones).
    pub async fn restart(
        &self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<ConnectorStatus, ControlError> {
        self.ask(|reply| Command::Restart {
            name: name.to_string(),
            include_tasks,
            only_failed,
            reply,
        })
        .await
    }

    /// Changes (`Some`) or removes entirely (`None`) a stopped source
    /// connector's stored offsets; durable when this returns Ok.
    pub async fn alter_offsets(
        &self,
        name: &str,
        changes: Option<Vec<OffsetChange>>,
    ) -> Result<(), ControlError> {
        self.ask(|r| Command::AlterOffsets(name.to_string(), changes, r))
            .await
    }

    /// The topics a connector used (Kafka Connect's active topics).
    pub async fn topics(&self, name: &str) -> Result<Vec<String>, ControlError> {
        self.ask(|r| Command::Topics(name.to_string(), r)).await
    }

    /// Forgets the topics a connector used.
    pub async fn reset_topics(&self, name: &str) -> Result<(), ControlError> {
        self.ask(|r| Command::ResetTopics(name.to_string(), r))
            .await
    }

    /// A connector's committed offsets as `[{"partition":..,"offset":..}]`.
    pub async fn offsets(&self, name: &str) -> Result<Vec<serde_json::Value>, ControlError> {
        self.ask(|r| Command::Offsets(name.to_string(), r)).await
    }
}
