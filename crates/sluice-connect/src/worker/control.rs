//! The worker's runtime and control plane: connectors start, stop, pause
//! and change while the worker runs, driven by requests from
//! [`WorkerHandle`]s (the REST API) that the worker's loop answers one at a
//! time, so the connector table needs no locking.
//!
//! Sink connectors added at runtime are routed to for every topic already
//! seen. A sink connector that is deleted, stopped, reconfigured or
//! restarted first loses its route (to nothing, or to its new tasks); its
//! old tasks, unpaused for this, write and flush what was dispatched to
//! them and end when no sender can reach their queues, so nothing sent
//! before the change is skipped. Only a task that does not finish within
//! `task.shutdown.graceful.timeout.ms` is stopped, its queue closed, and
//! no longer waited on by the delivery trackers: records only it had not
//! written are then not written anywhere, exactly as in Kafka Connect,
//! where a deleted sink simply stops consuming.
//!
//! Like Kafka Connect's standalone mode, connectors created through the
//! API are not remembered across restarts; offsets are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context as _;
use futures::FutureExt as _;
use serde::Serialize;
use sluice_core::config::Props;
use sluice_core::connector::{ConnectorKind, SinkContext, SourceContext};
use sluice_kafka::ClientRole;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Worker, WorkerError};
use crate::committer::{CommitSource, Committer};
use crate::config_files::ConnectorFile;
use crate::connector_config::{validate_connectors, ConnectorSpec};
use crate::delivery::{DeliveryTracker, SinkTaskIndex};
use crate::distributed::{self as dist, ConfigRecord, InternalTopics, StatusEntry};
use crate::kafka_transport::{
    consumer_subscription, run_sink, KafkaClients, KafkaSourceOutput, TopicCreation,
    TransactionBoundary, TxnSettings, PRODUCER,
};
use crate::registry::Registry;
use crate::sink_driver::{FlushPolicy, SinkDriver};
use crate::transport::{queue, Router, SinkRoute, SourceSender};
use crate::worker_config::{ExactlyOnceSupport, WorkerConfig};

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

pub(super) enum Command {
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
    Delete(String, Reply<()>),
    Target(String, TargetState, Reply<()>),
    Restart {
        name: String,
        include_tasks: bool,
        only_failed: bool,
        reply: Reply<ConnectorStatus>,
    },
    Offsets(String, Reply<Vec<serde_json::Value>>),
    Topics(String, Reply<Vec<String>>),
    AlterOffsets(String, Option<Vec<OffsetChange>>, Reply<()>),
    ResetTopics(String, Reply<()>),
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
    pub(super) fn new(
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

    /// Checks a connector config as start-up would, without creating it:
    /// each problem with its key, and the warnings.
    pub fn validate(&self, props: &Props) -> (Vec<sluice_core::config::ConfigError>, Vec<String>) {
        crate::connector_config::validate_config(&self.registry, &self.config, props)
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
    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        self.ask(|r| Command::Delete(name.to_string(), r)).await
    }

    /// Pauses, resumes or stops a connector.
    pub async fn set_target(&self, name: &str, target: TargetState) -> Result<(), ControlError> {
        self.ask(|r| Command::Target(name.to_string(), target, r))
            .await
    }

    /// Restarts a connector's tasks (all, or only the failed ones); the
    /// connector itself has no separate instance in Sluice, so without
    /// `include_tasks` nothing is restarted.
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

enum TaskState {
    Running,
    Finished,
    Failed(String),
}

struct TaskRun {
    id: u32,
    props: Props,
    state: TaskState,
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
    sink_index: Option<SinkTaskIndex>,
    /// The task's pause switch (per task, so a sink task being retired can
    /// be let go on draining while its connector stays paused).
    pause: watch::Sender<bool>,
}

impl TaskRun {
    /// A task that could not start: FAILED with `error`.
    fn failed(
        id: u32,
        props: Props,
        error: String,
        stop: CancellationToken,
        pause: watch::Sender<bool>,
    ) -> TaskRun {
        TaskRun {
            id,
            props,
            state: TaskState::Failed(error),
            stop,
            handle: None,
            sink_index: None,
            pause,
        }
    }
}

struct Connector {
    spec: ConnectorSpec,
    target: TargetState,
    generation: u64,
    tasks: Vec<TaskRun>,
}

struct Exit {
    connector: String,
    generation: u64,
    task: u32,
    label: String,
    error: Option<String>,
}

struct Runtime {
    config: WorkerConfig,
    registry: Registry,
    flush_policy: FlushPolicy,
    worker_id: Arc<RwLock<String>>,
    router: Arc<Router>,
    connectors: BTreeMap<String, Connector>,
    next_sink_index: SinkTaskIndex,
    next_generation: u64,
    committer: Option<Committer>,
    /// The Kafka transport's clients (None: in-process).
    kafka: Option<KafkaClients>,
    /// Per source task over Kafka: acknowledges its deliveries in order.
    ackers: Vec<JoinHandle<()>>,
    source_stop: CancellationToken,
    sink_stop: CancellationToken,
    exits: mpsc::UnboundedSender<Exit>,
    /// Distributed mode's shared state (None: standalone).
    cluster: Option<Cluster>,
}

/// A distributed worker's view of its group.
struct Cluster {
    topics: Arc<InternalTopics>,
    /// Partitions of the offsets topic assigned to this worker: it runs
    /// the tasks mapped to them.
    owned: BTreeSet<i32>,
    /// Bumped on every assignment (the `generation` of status records).
    generation: i64,
    /// The status topic as last read.
    statuses: BTreeMap<String, StatusEntry>,
    /// Target states read before their connector's config.
    pending_targets: BTreeMap<String, TargetState>,
}

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

fn kind_str(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    }
}

/// The values of `props` that are secrets (see
/// [`crate::rest::secrets::is_secret`]), longest first.
pub(crate) fn secret_values(registry: &Registry, props: &Props) -> Vec<String> {
    let def = props
        .get("connector.class")
        .and_then(|c| registry.lookup(c).ok())
        .map(|p| p.config_def());
    let mut values: Vec<String> = props
        .iter()
        .filter(|(k, v)| !v.is_empty() && crate::rest::secrets::is_secret(def.as_ref(), k))
        .map(|(_, v)| v.clone())
        .collect();
    // A secret containing another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// `text` with every secret value replaced by `[hidden]`: validation
/// messages quote values, and they reach logs and REST answers.
pub(crate) fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), crate::rest::secrets::HIDDEN);
    }
    out
}

/// Waits for a task to end after its stop token was cancelled; aborts it
/// after `grace`.
async fn join_or_abort(handle: JoinHandle<()>, grace: std::time::Duration, label: &str) {
    let abort = handle.abort_handle();
    if tokio::time::timeout(grace, handle).await.is_err() {
        tracing::warn!(
            "{label} did not stop within task.shutdown.graceful.timeout.ms ({} ms); cancelling it",
            grace.as_millis()
        );
        abort.abort();
    }
}

impl Runtime {
    fn worker_id(&self) -> String {
        self.worker_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn get(&self, name: &str) -> Result<&Connector, ControlError> {
        self.connectors
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_string()))
    }

    fn info(&self, name: &str) -> Result<ConnectorInfo, ControlError> {
        let c = self.get(name)?;
        Ok(ConnectorInfo {
            name: name.to_string(),
            config: c.spec.props.clone(),
            tasks: self
                .task_ids(name)
                .into_iter()
                .map(|task| TaskId {
                    connector: name.to_string(),
                    task,
                })
                .collect(),
            kind: kind_str(c.spec.kind),
        })
    }

    fn status(&self, name: &str) -> Result<ConnectorStatus, ControlError> {
        let c = self.get(name)?;
        let worker_id = self.worker_id();
        let state = |s: &'static str, trace: Option<String>| StateInfo {
            state: s,
            worker_id: worker_id.clone(),
            trace,
        };
        // Tasks running elsewhere in the group show what their worker
        // last wrote to the status topic.
        let remote = |key: String| -> StateInfo {
            match self.cluster.as_ref().and_then(|cl| cl.statuses.get(&key)) {
                Some(e) => StateInfo {
                    state: known_state(&e.state),
                    worker_id: e.worker_id.clone(),
                    trace: e.trace.clone(),
                },
                None => StateInfo {
                    state: "UNASSIGNED",
                    worker_id: String::new(),
                    trace: None,
                },
            }
        };
        let tasks = self
            .task_ids(name)
            .into_iter()
            .map(|id| TaskStatus {
                id,
                state: match c.tasks.iter().find(|t| t.id == id) {
                    Some(t) => match &t.state {
                        TaskState::Failed(e) => state("FAILED", Some(e.clone())),
                        // A source task that returned on its own produces
                        // nothing more; it is no longer assigned work.
                        TaskState::Finished => state("UNASSIGNED", None),
                        TaskState::Running => state(c.target.as_str(), None),
                    },
                    None => remote(dist::status_key(name, Some(id))),
                },
            })
            .collect();
        let connector = if self.owns(name, 0) || c.target == TargetState::Stopped {
            state(c.target.as_str(), None)
        } else {
            let mut s = remote(dist::status_key(name, None));
            if s.state == "UNASSIGNED" {
                s.state = c.target.as_str();
            }
            s
        };
        Ok(ConnectorStatus {
            name: name.to_string(),
            connector,
            tasks,
            kind: kind_str(c.spec.kind),
        })
    }

    /// Validates `props` as start-up does (the offset file check included).
    fn validate(&self, props: Props) -> Result<ConnectorSpec, ControlError> {
        let scrub = secret_values(&self.registry, &props);
        let file = ConnectorFile {
            path: PathBuf::from("REST request"),
            props,
        };
        match validate_connectors(&self.registry, &self.config, std::slice::from_ref(&file)) {
            Ok((mut specs, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                specs
                    .pop()
                    .ok_or_else(|| ControlError::BadRequest("no connector config".into()))
            }
            Err(report) => Err(ControlError::InvalidConfig(
                report
                    .errors
                    .iter()
                    .map(|e| scrub_secrets(e, &scrub))
                    .collect(),
            )),
        }
    }

    /// Starts the tasks of connector `name` (which has none running) and,
    /// for a sink, routes to them.
    async fn start(&mut self, name: &str) -> Vec<String> {
        let source = self
            .connectors
            .get(name)
            .is_some_and(|c| c.spec.kind == ConnectorKind::Source);
        if source && self.cluster.is_some() {
            // Another worker may have run this connector until now.
            if let Some(committer) = self.committer.as_mut() {
                if let Err(e) = committer.refresh().await {
                    let f = format!("source connector '{name}': reading its offsets: {e}");
                    tracing::error!("{f}");
                    return vec![f];
                }
            }
        }
        let (failures, route) = self.start_tasks(name);
        if let Some(route) = route {
            self.router.set_route(name, Some(route));
            self.router.recompute();
        }
        for f in &failures {
            tracing::error!("{f}");
        }
        self.publish_status(name).await;
        failures
    }

    /// Creates and spawns the tasks of connector `name`; for a sink, also
    /// the route to them, for the caller to install. Failures to create a
    /// task are that task's FAILED state.
    fn start_tasks(&mut self, name: &str) -> (Vec<String>, Option<SinkRoute>) {
        let Some(count) = self
            .connectors
            .get(name)
            .map(|c| Self::task_configs(&c.spec).len())
        else {
            return (Vec::new(), None);
        };
        let owned: Vec<bool> = (0..count as u32).map(|t| self.owns(name, t)).collect();
        let owned = |t: u32| owned.get(t as usize).copied().unwrap_or(false);
        let Some(c) = self.connectors.get_mut(name) else {
            return (Vec::new(), None);
        };
        self.next_generation += 1;
        c.generation = self.next_generation;
        let generation = c.generation;
        let spec = c.spec.clone();
        let start_paused = c.target == TargetState::Paused;
        let mut route = None;
        let task_configs = Self::task_configs(&spec);
        let mut failures = Vec::new();
        let mut tasks = Vec::new();
        match spec.kind {
            ConnectorKind::Sink => {
                if task_configs.is_empty() {
                    tracing::warn!(connector = %name, "sink connector produced no task configs; it reads nothing");
                }
                let mut queues = Vec::new();
                for (task_id, props) in task_configs.into_iter().enumerate() {
                    let task_id = task_id as u32;
                    if !owned(task_id) {
                        continue;
                    }
                    let ctx = SinkContext {
                        connector: name.to_string(),
                        task_id,
                        key_converter: Arc::clone(&spec.key_converter),
                        value_converter: Arc::clone(&spec.value_converter),
                    };
                    let label = format!("sink connector '{name}' task {task_id}");
                    let stop = self.sink_stop.child_token();
                    let (pause, paused) = watch::channel(start_paused);
                    let over_kafka = match (&self.kafka, &spec.subscription) {
                        (Some(k), Some(sub)) => {
                            match client_overrides(&k.config, &spec.props, ClientRole::Consumer) {
                                Ok(cfg) => Some((cfg, consumer_subscription(sub))),
                                Err(e) => {
                                    let f = format!("{label}: could not start: {e:#}");
                                    tasks.push(TaskRun::failed(
                                        task_id,
                                        props,
                                        f.clone(),
                                        stop,
                                        pause,
                                    ));
                                    failures.push(f);
                                    continue;
                                }
                            }
                        }
                        _ => None,
                    };
                    match spec.plugin.create_sink_task(&props, ctx) {
                        Ok(task) => {
                            let index = self.next_sink_index;
                            self.next_sink_index += 1;
                            let (tx, rx) =
                                queue(self.config.queue_max_records, self.config.queue_max_bytes);
                            let feed = match over_kafka {
                                Some(k) => Some((tx, k)),
                                None => {
                                    queues.push((index, tx));
                                    None
                                }
                            };
                            let driver = SinkDriver {
                                connector: name.to_string(),
                                task_id,
                                index,
                                task,
                                queue: rx,
                                stop: stop.clone(),
                                policy: self.flush_policy,
                                transforms: spec.sink_transforms(),
                                paused: Some(paused),
                                errors: crate::errors::ErrorHandler::for_sink(
                                    &spec,
                                    task_id,
                                    self.kafka.as_ref(),
                                ),
                                flush_now: Default::default(),
                            };
                            tracing::info!("starting {label}");
                            let handle = match feed {
                                Some((tx, (cfg, sub))) => self.spawn(
                                    name,
                                    generation,
                                    task_id,
                                    label,
                                    run_sink(driver, tx, Arc::clone(&self.router), cfg, sub),
                                ),
                                None => self.spawn(name, generation, task_id, label, driver.run()),
                            };
                            tasks.push(TaskRun {
                                id: task_id,
                                props,
                                state: TaskState::Running,
                                stop,
                                handle: Some(handle),
                                sink_index: Some(index),
                                pause,
                            });
                        }
                        Err(e) => {
                            let f = format!("{label}: could not start: {e:#}");
                            tasks.push(TaskRun::failed(task_id, props, f.clone(), stop, pause));
                            failures.push(f);
                        }
                    }
                }
                route = spec
                    .subscription
                    .clone()
                    .filter(|_| self.kafka.is_none())
                    .map(|subscription| SinkRoute {
                        connector: name.to_string(),
                        subscription,
                        tasks: queues,
                    });
            }
            ConnectorKind::Source => {
                let Some(committer) = self.committer.as_mut() else {
                    // Validation requires an offset file for sources.
                    return (
                        vec![format!(
                            "source connector '{name}': no offset.storage.file.filename configured"
                        )],
                        None,
                    );
                };
                let reader = committer.store().reader(name);
                let stop_connector = self.source_stop.child_token();
                // Exactly-once: (group.id, offsets topic) for each task's
                // transactional producer.
                let eos = self
                    .cluster
                    .as_ref()
                    .filter(|cl| cl.topics.config.exactly_once == ExactlyOnceSupport::Enabled)
                    .map(|cl| {
                        (
                            cl.topics.config.group_id.clone(),
                            cl.topics.config.offset_topic.clone(),
                        )
                    });
                let mut started: Vec<(
                    u32,
                    String,
                    Props,
                    CancellationToken,
                    watch::Sender<bool>,
                    TaskFuture,
                )> = Vec::new();
                for (task_id, props) in task_configs.into_iter().enumerate() {
                    let task_id = task_id as u32;
                    if !owned(task_id) {
                        continue;
                    }
                    let label = format!("source connector '{name}' task {task_id}");
                    let stop = stop_connector.child_token();
                    let (pause, paused) = watch::channel(start_paused);
                    let creation = match &self.kafka {
                        Some(_) => match TopicCreation::from_connector_props(&spec.props) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                let f = format!("{label}: could not start: {e:#}");
                                tasks.push(TaskRun::failed(task_id, props, f.clone(), stop, pause));
                                failures.push(f);
                                continue;
                            }
                        },
                        None => None,
                    };
                    match spec.plugin.create_source_task(&props) {
                        Ok(task) => {
                            let tracker = Arc::new(DeliveryTracker::new(match &self.kafka {
                                Some(_) => PRODUCER + 1,
                                None => self.next_sink_index,
                            }));
                            // A failed delivery fails the task at once, as
                            // its own error would.
                            let on_failure: Box<dyn FnOnce(String) + Send> = {
                                let (exits, stop) = (self.exits.clone(), stop.clone());
                                let (connector, label) = (name.to_string(), label.clone());
                                Box::new(move |e: String| {
                                    let _ = exits.send(Exit {
                                        connector,
                                        generation,
                                        task: task_id,
                                        error: Some(format!("{label} failed: {e}")),
                                        label,
                                    });
                                    stop.cancel();
                                })
                            };
                            // `producer.override.*`: this connector's own
                            // producer settings.
                            let overridden = match &self.kafka {
                                Some(k) => match client_overrides(
                                    &k.config,
                                    &spec.props,
                                    ClientRole::Producer,
                                ) {
                                    Ok(cfg) if !Arc::ptr_eq(&cfg, &k.config) => Some(cfg),
                                    Ok(_) => None,
                                    Err(e) => {
                                        let f = format!("{label}: could not start: {e:#}");
                                        tasks.push(TaskRun::failed(
                                            task_id,
                                            props,
                                            f.clone(),
                                            stop,
                                            pause,
                                        ));
                                        failures.push(f);
                                        continue;
                                    }
                                },
                                None => None,
                            };
                            let output = match (&self.kafka, creation, &eos) {
                                (Some(k), Some(creation), Some((group, offsets_topic))) => {
                                    let settings = TransactionBoundary::from_connector_props(
                                        &spec.props,
                                    )
                                    .map(|boundary| {
                                        TxnSettings::new(
                                            group,
                                            name,
                                            task_id,
                                            offsets_topic,
                                            boundary,
                                            self.config.offset_flush_interval,
                                        )
                                    });
                                    let settings = match settings {
                                        Ok(s) => s,
                                        Err(e) => {
                                            let f = format!("{label}: could not start: {e:#}");
                                            tasks.push(TaskRun::failed(
                                                task_id,
                                                props,
                                                f.clone(),
                                                stop,
                                                pause,
                                            ));
                                            failures.push(f);
                                            continue;
                                        }
                                    };
                                    let (mut k, tracker) = (k.clone(), Arc::clone(&tracker));
                                    if let Some(cfg) = overridden {
                                        k.config = cfg;
                                    }
                                    let label = label.clone();
                                    Output::Deferred(Box::pin(async move {
                                        let id = settings.transactional_id.clone();
                                        let out = KafkaSourceOutput::new_transactional(
                                            &k, creation, tracker, on_failure, settings,
                                        )
                                        .await?;
                                        tracing::info!(
                                            "{label}: exactly-once: records and offsets in transactions of transactional.id '{id}'"
                                        );
                                        Ok(out)
                                    }))
                                }
                                (Some(k), Some(creation), None) if overridden.is_some() => {
                                    let (mut k, tracker) = (k.clone(), Arc::clone(&tracker));
                                    let label = label.clone();
                                    Output::Deferred(Box::pin(async move {
                                        if let Some(cfg) = overridden {
                                            k.producer = sluice_kafka::Producer::connect(&cfg)
                                                .await
                                                .with_context(|| {
                                                    format!("{label}: its producer (producer.override.*)")
                                                })?;
                                            k.config = cfg;
                                        }
                                        Ok(KafkaSourceOutput::new(
                                            &k, creation, tracker, on_failure,
                                        ))
                                    }))
                                }
                                (Some(k), Some(creation), None) => {
                                    let (out, acker) = KafkaSourceOutput::new(
                                        k,
                                        creation,
                                        Arc::clone(&tracker),
                                        on_failure,
                                    );
                                    self.ackers.retain(|a| !a.is_finished());
                                    self.ackers.push(acker);
                                    Output::Ready(Some(out))
                                }
                                _ => Output::Ready(None),
                            };
                            let (tx, rx) = watch::channel(None);
                            let mut commit_source = CommitSource::new(
                                name.to_string(),
                                task_id,
                                Arc::clone(&tracker),
                                tx,
                            );
                            if eos.is_some() && self.kafka.is_some() {
                                commit_source = commit_source.stored_by_task();
                            }
                            committer.add_source(commit_source);
                            let sender = SourceSender::new(
                                name.to_string(),
                                task_id,
                                Arc::clone(&self.router),
                                tracker,
                                Arc::clone(&spec.key_converter),
                                Arc::clone(&spec.value_converter),
                            )
                            .with_transforms(Arc::clone(&spec.transforms))
                            .with_errors(crate::errors::ErrorHandler::for_source(&spec, task_id))
                            .with_pause(paused, stop.clone());
                            let ctx = {
                                let (connector, offsets, shutdown) =
                                    (name.to_string(), Arc::clone(&reader), stop.clone());
                                move |sender: SourceSender| SourceContext {
                                    connector,
                                    task_id,
                                    sender: Arc::new(sender),
                                    offsets,
                                    committed: rx,
                                    shutdown,
                                }
                            };
                            let fut: TaskFuture = match output {
                                Output::Ready(out) => {
                                    let sender = match out {
                                        Some(out) => sender.with_kafka(out),
                                        None => sender,
                                    };
                                    Box::pin(task_fut(task, ctx(sender)))
                                }
                                Output::Deferred(make) => {
                                    let grace = self.config.task_shutdown_timeout;
                                    Box::pin(async move {
                                        let (out, acker) = make.await?;
                                        let result =
                                            task_fut(task, ctx(sender.with_kafka(out))).await;
                                        // The output, dropped with the task's
                                        // context, commits what is pending.
                                        let _ = tokio::time::timeout(grace, acker).await;
                                        result
                                    })
                                }
                            };
                            started.push((task_id, label, props, stop, pause, fut));
                        }
                        Err(e) => {
                            let f = format!("{label}: could not start: {e:#}");
                            tasks.push(TaskRun::failed(task_id, props, f.clone(), stop, pause));
                            failures.push(f);
                        }
                    }
                }
                for (task_id, label, props, stop, pause, fut) in started {
                    tracing::info!("starting {label}");
                    let handle = self.spawn(name, generation, task_id, label, fut);
                    tasks.push(TaskRun {
                        id: task_id,
                        props,
                        state: TaskState::Running,
                        stop,
                        handle: Some(handle),
                        sink_index: None,
                        pause,
                    });
                }
                tasks.sort_by_key(|t| t.id);
            }
        }
        if let Some(c) = self.connectors.get_mut(name) {
            c.tasks = tasks;
        }
        (failures, route)
    }

    fn spawn(
        &self,
        connector: &str,
        generation: u64,
        task: u32,
        label: String,
        fut: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> JoinHandle<()> {
        let exits = self.exits.clone();
        let connector = connector.to_string();
        tokio::spawn(async move {
            let error = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{label} failed: {e:#}")),
                Err(_) => Some(format!("{label} panicked")),
            };
            // The loop may be gone (worker stopping): nothing to tell.
            let _ = exits.send(Exit {
                connector,
                generation,
                task,
                label,
                error,
            });
        })
    }

    /// Stops the tasks of connector `name`. A source's tasks stop and its
    /// delivered offsets are committed; a sink's tasks are retired (see
    /// [`Runtime::retire_sink_tasks`]) with no successor.
    async fn stop_tasks(&mut self, name: &str) {
        let grace = self.config.task_shutdown_timeout;
        let Some(c) = self.connectors.get_mut(name) else {
            return;
        };
        let kind = c.spec.kind;
        let tasks = std::mem::take(&mut c.tasks);
        match kind {
            ConnectorKind::Source => {
                for t in &tasks {
                    t.stop.cancel();
                }
                for t in tasks {
                    if let Some(h) = t.handle {
                        join_or_abort(h, grace, &format!("connector '{name}' task {}", t.id)).await;
                    }
                }
                if let Some(committer) = self.committer.as_mut() {
                    if let Err(e) = committer.commit().await {
                        tracing::error!("committing offsets of connector '{name}': {e}");
                    }
                    committer.remove_connector(name);
                }
            }
            ConnectorKind::Sink => self.retire_sink_tasks(name, tasks, None).await,
        }
    }

    /// Restarts connector `name`'s tasks. A sink's new tasks take over its
    /// route before the old ones are retired, so no record in between is
    /// missed.
    async fn restart_tasks(&mut self, name: &str) {
        let Some(c) = self.connectors.get_mut(name) else {
            return;
        };
        match c.spec.kind {
            ConnectorKind::Source => {
                self.stop_tasks(name).await;
                self.start(name).await;
            }
            ConnectorKind::Sink => {
                let old = std::mem::take(&mut c.tasks);
                let (failures, route) = self.start_tasks(name);
                for f in &failures {
                    tracing::error!("{f}");
                }
                self.retire_sink_tasks(name, old, route).await;
            }
        }
    }

    /// Retires a sink connector's tasks, installing `successor` as its
    /// route (None: no longer routed). The old tasks are unpaused so that
    /// records already queued for them, and any record a source is waiting
    /// to enqueue, are written; once the route no longer reaches their
    /// queues they see the end of their input, flush and stop, so every
    /// record dispatched to them is written and acknowledged. A task that
    /// does not keep up within `task.shutdown.graceful.timeout.ms` is
    /// stopped and then cancelled; the trackers stop waiting on it, so what
    /// it had not written is written nowhere, as when Kafka Connect deletes
    /// a sink.
    async fn retire_sink_tasks(
        &mut self,
        name: &str,
        old: Vec<TaskRun>,
        successor: Option<SinkRoute>,
    ) {
        let grace = self.config.task_shutdown_timeout;
        for t in &old {
            t.pause.send_replace(false);
        }
        self.router.set_route(name, successor);
        self.router.recompute();
        if self.kafka.is_some() {
            // Over Kafka nothing ends a task's input: stop it (it drains,
            // flushes and commits what it flushed).
            for t in &old {
                t.stop.cancel();
            }
        }
        let mut indices = Vec::new();
        for t in old {
            indices.extend(t.sink_index);
            if let Some(mut h) = t.handle {
                // It ends by itself once its queue has no senders left.
                if tokio::time::timeout(grace, &mut h).await.is_err() {
                    let label = format!("sink connector '{name}' task {}", t.id);
                    tracing::warn!("{label} did not finish its last records in time; stopping it");
                    t.stop.cancel();
                    join_or_abort(h, grace, &label).await;
                }
            }
        }
        if let Some(committer) = self.committer.as_ref() {
            for tracker in committer.trackers() {
                for &i in &indices {
                    tracker.forget(i);
                }
            }
        }
    }

    /// The connector name of a create/reconfigure request and whether it
    /// exists; a create of an existing one is a conflict.
    fn name_for_put(
        &self,
        props: &Props,
        create_only: bool,
    ) -> Result<(String, bool), ControlError> {
        let name = props
            .get("name")
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        let exists = self.connectors.contains_key(&name);
        if exists && create_only {
            return Err(ControlError::Conflict(name));
        }
        Ok((name, exists))
    }

    async fn put(
        &mut self,
        props: Props,
        initial: TargetState,
        create_only: bool,
    ) -> Result<(ConnectorInfo, bool), ControlError> {
        let (name, exists) = self.name_for_put(&props, create_only)?;
        let spec = self.validate(props)?;
        if exists {
            tracing::info!(connector = %name, "reconfiguring connector: restarting its tasks");
            let target = match self.connectors.get_mut(&name) {
                Some(c) => {
                    c.spec = spec;
                    c.target
                }
                None => TargetState::Running,
            };
            if target != TargetState::Stopped {
                self.restart_tasks(&name).await;
            }
            return Ok((self.info(&name)?, false));
        }
        tracing::info!(connector = %name, class = spec.plugin.class(), "creating connector");
        self.connectors.insert(
            name.clone(),
            Connector {
                spec,
                target: initial,
                generation: 0,
                tasks: Vec::new(),
            },
        );
        if initial != TargetState::Stopped {
            self.start(&name).await;
        }
        Ok((self.info(&name)?, true))
    }

    async fn set_target(&mut self, name: &str, target: TargetState) -> Result<(), ControlError> {
        let c = self
            .connectors
            .get_mut(name)
            .ok_or_else(|| ControlError::NotFound(name.to_string()))?;
        let was = c.target;
        c.target = target;
        for t in &c.tasks {
            t.pause.send_replace(target == TargetState::Paused);
        }
        tracing::info!(connector = %name, "connector is now {}", target.as_str());
        if target == TargetState::Stopped && was != TargetState::Stopped {
            self.stop_tasks(name).await;
        } else if was == TargetState::Stopped && target != TargetState::Stopped {
            self.start(name).await;
        }
        self.publish_status(name).await;
        Ok(())
    }

    async fn restart(
        &mut self,
        name: &str,
        include_tasks: bool,
        only_failed: bool,
    ) -> Result<ConnectorStatus, ControlError> {
        let c = self.get(name)?;
        let any_failed = c
            .tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Failed(_)));
        // Sluice's connectors have no instance apart from their tasks, and
        // a sink's tasks share one route: the tasks restart together.
        if include_tasks && c.target != TargetState::Stopped && (!only_failed || any_failed) {
            tracing::info!(connector = %name, "restarting connector tasks");
            self.restart_tasks(name).await;
        }
        self.status(name)
    }

    async fn alter_offsets(
        &mut self,
        name: &str,
        changes: Option<Vec<OffsetChange>>,
    ) -> Result<(), ControlError> {
        let c = self.get(name)?;
        if c.target != TargetState::Stopped {
            return Err(ControlError::BadRequest(format!(
                "Connectors must be in the STOPPED state before their offsets can be modified. \
                 This can be done for the specified connector by issuing a 'PUT' request to the \
                 '/connectors/{name}/stop' endpoint"
            )));
        }
        if c.spec.kind == ConnectorKind::Sink {
            return Err(ControlError::BadRequest(format!(
                "Connector {name} is a sink: {}",
                if self.kafka.is_some() {
                    "changing its consumer group offsets is not supported by Sluice yet; use \
                     kafka-consumer-groups --reset-offsets on group connect-<name>"
                } else {
                    "with the in-process transport there are no consumer offsets to change"
                }
            )));
        }
        let Some(committer) = self.committer.as_mut() else {
            return Err(ControlError::BadRequest(
                "this worker has no offset.storage.file.filename".into(),
            ));
        };
        committer
            .alter(|store| match changes {
                None => {
                    store.remove(name, None);
                }
                Some(changes) => {
                    for ch in changes {
                        match ch.offset {
                            Some(o) => store.set(name, &ch.partition, &o),
                            None => {
                                store.remove(name, Some(&ch.partition));
                            }
                        }
                    }
                }
            })
            .await
            .map_err(|e| ControlError::Failed(format!("writing the offset file: {e}")))
    }

    fn offsets(&self, name: &str) -> Result<Vec<serde_json::Value>, ControlError> {
        let c = self.get(name)?;
        let Some(committer) = self.committer.as_ref() else {
            return Ok(Vec::new());
        };
        if c.spec.kind == ConnectorKind::Sink {
            // In-process topics have no consumer group offsets to show.
            return Ok(Vec::new());
        }
        let doc = committer.store().to_json();
        let mut out = Vec::new();
        if let serde_json::Value::Object(entries) = doc {
            for (key, offset) in entries {
                // Keys are `["<connector>",{partition}]`, as Kafka writes them.
                let Ok(serde_json::Value::Array(parts)) = serde_json::from_str(&key) else {
                    continue;
                };
                if parts.first().and_then(|v| v.as_str()) == Some(name) {
                    out.push(serde_json::json!({
                        "partition": parts.get(1).cloned().unwrap_or(serde_json::Value::Null),
                        "offset": offset,
                    }));
                }
            }
        }
        Ok(out)
    }

    /// Whether this worker runs task `task` of `name` (always, standalone).
    fn owns(&self, name: &str, task: u32) -> bool {
        match &self.cluster {
            None => true,
            Some(c) => c.owned.contains(&dist::unit_partition(
                name,
                task,
                c.topics.offset_partitions,
            )),
        }
    }

    /// A connector's task configs (all of them, wherever they run).
    fn task_configs(spec: &ConnectorSpec) -> Vec<Props> {
        let mut t = spec.plugin.task_configs(&spec.props, spec.tasks_max);
        t.truncate(spec.tasks_max);
        t
    }

    /// A connector's task ids: in a group all of them (a stopped connector
    /// has none, as in Kafka Connect); standalone, the ones it runs.
    fn task_ids(&self, name: &str) -> Vec<u32> {
        let Some(c) = self.connectors.get(name) else {
            return Vec::new();
        };
        if self.cluster.is_none() || c.target == TargetState::Stopped {
            return c.tasks.iter().map(|t| t.id).collect();
        }
        (0..Self::task_configs(&c.spec).len() as u32).collect()
    }

    /// Writes the states of this worker's tasks of `name` (and of the
    /// connector, when it owns task 0) to the status topic.
    async fn publish_status(&mut self, name: &str) {
        let Some(cl) = &self.cluster else {
            return;
        };
        let Some(c) = self.connectors.get(name) else {
            return;
        };
        let worker_id = self.worker_id();
        let entry = |state: &str, trace: Option<String>| StatusEntry {
            state: state.to_string(),
            trace,
            worker_id: worker_id.clone(),
            generation: cl.generation,
        };
        let mut records = Vec::new();
        for t in &c.tasks {
            let e = match &t.state {
                TaskState::Failed(f) => entry("FAILED", Some(f.clone())),
                TaskState::Finished => entry("UNASSIGNED", None),
                TaskState::Running => entry(c.target.as_str(), None),
            };
            records.push((
                dist::status_key(name, Some(t.id)),
                Some(dist::status_value(&e)),
            ));
        }
        if self.owns(name, 0) {
            records.push((
                dist::status_key(name, None),
                Some(dist::status_value(&entry(c.target.as_str(), None))),
            ));
        }
        if records.is_empty() {
            return;
        }
        let topics = Arc::clone(&cl.topics);
        if let Err(e) = topics.write(&topics.config.status_topic, records).await {
            tracing::warn!(connector = %name, "writing task states to status.storage.topic: {e:#}");
        }
    }

    /// Reads the status topic's news (what other workers' tasks are doing).
    async fn refresh_statuses(&mut self) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let topics = Arc::clone(&cl.topics);
        if let Err(e) = topics.refresh_statuses(&mut cl.statuses).await {
            tracing::warn!("reading status.storage.topic: {e:#}");
        }
    }

    /// Reads the config topic up to its end and applies what changed
    /// (including this worker's own writes).
    async fn sync_configs(&mut self) -> Result<(), ControlError> {
        let Some(cl) = &self.cluster else {
            return Ok(());
        };
        let topics = Arc::clone(&cl.topics);
        let records = topics.configs.catch_up().await.map_err(|e| {
            ControlError::Failed(format!(
                "reading config.storage.topic '{}': {e}",
                topics.config.config_topic
            ))
        })?;
        for r in records {
            match dist::decode_config(r.key.as_deref(), r.value.as_deref()) {
                Ok(rec) => self.apply_config(rec).await,
                Err(e) => tracing::warn!("ignoring {e}"),
            }
        }
        Ok(())
    }

    /// Applies one config topic record to this worker.
    async fn apply_config(&mut self, rec: ConfigRecord) {
        match rec {
            ConfigRecord::Connector {
                name,
                props: Some(props),
            } => {
                if self
                    .connectors
                    .get(&name)
                    .is_some_and(|c| c.spec.props == props)
                {
                    return;
                }
                let initial = self
                    .cluster
                    .as_mut()
                    .and_then(|c| c.pending_targets.remove(&name))
                    .unwrap_or(TargetState::Running);
                if let Err(e) = self.put(props, initial, false).await {
                    tracing::error!(connector = %name, "the config in config.storage.topic cannot run on this worker: {e}");
                }
            }
            ConfigRecord::Connector { name, props: None } => {
                if self.connectors.contains_key(&name) {
                    self.delete_local(&name).await;
                }
                if let Some(c) = self.cluster.as_mut() {
                    c.pending_targets.remove(&name);
                }
            }
            ConfigRecord::Target {
                name,
                state: Some(state),
            } => match self.connectors.get(&name) {
                Some(c) if c.target == state => {}
                Some(_) => {
                    if let Err(e) = self.set_target(&name, state).await {
                        tracing::warn!(connector = %name, "changing its state: {e}");
                    }
                }
                None => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.pending_targets.insert(name, state);
                    }
                }
            },
            ConfigRecord::Restart {
                name,
                include_tasks,
                only_failed,
            } => {
                if self.connectors.contains_key(&name) {
                    if let Err(e) = self.restart(&name, include_tasks, only_failed).await {
                        tracing::warn!(connector = %name, "restarting: {e}");
                    }
                }
            }
            ConfigRecord::Target { state: None, .. } | ConfigRecord::Other => {}
        }
    }

    /// Writes `records` to the config topic, then applies everything new
    /// in it: a change is made by the group, in the topic's order.
    async fn write_configs(
        &mut self,
        records: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), ControlError> {
        let Some(cl) = &self.cluster else {
            return Ok(());
        };
        let topics = Arc::clone(&cl.topics);
        topics
            .write(&topics.config.config_topic, records)
            .await
            .map_err(|e| {
                ControlError::Failed(format!(
                    "writing to config.storage.topic '{}': {e:#}",
                    topics.config.config_topic
                ))
            })?;
        self.sync_configs().await
    }

    /// Distributed create / reconfigure: validated here, then written.
    async fn dist_put(
        &mut self,
        props: Props,
        initial: TargetState,
        create_only: bool,
    ) -> Result<(ConnectorInfo, bool), ControlError> {
        self.sync_configs().await?;
        let (name, exists) = self.name_for_put(&props, create_only)?;
        let spec = self.validate(props.clone())?;
        let records = config_records(&name, &props, &spec, (!exists).then_some(initial));
        self.write_configs(records).await?;
        Ok((self.info(&name)?, !exists))
    }

    /// Stops and forgets connector `name` on this worker.
    async fn delete_local(&mut self, name: &str) {
        tracing::info!(connector = %name, "deleting connector");
        let ids: Vec<u32> = self
            .connectors
            .get(name)
            .map(|c| c.tasks.iter().map(|t| t.id).collect())
            .unwrap_or_default();
        let owns_connector = self.owns(name, 0);
        self.stop_tasks(name).await;
        self.connectors.remove(name);
        // As in Kafka Connect, a deleted connector's active topics go with it.
        self.router.reset_active_topics(name);
        if let Some(cl) = &self.cluster {
            let mut records: Vec<(String, Option<Vec<u8>>)> = ids
                .into_iter()
                .map(|t| (dist::status_key(name, Some(t)), None))
                .collect();
            if owns_connector {
                records.push((dist::status_key(name, None), None));
            }
            let topics = Arc::clone(&cl.topics);
            if let Err(e) = topics.write(&topics.config.status_topic, records).await {
                tracing::warn!(connector = %name, "removing its states from status.storage.topic: {e:#}");
            }
        }
    }

    /// Runs exactly the tasks this worker owns now: stops a connector's
    /// local tasks and starts the owned ones when the two differ.
    async fn reconcile(&mut self) {
        let names: Vec<String> = self.connectors.keys().cloned().collect();
        for name in names {
            let Some(c) = self.connectors.get(&name) else {
                continue;
            };
            if c.target == TargetState::Stopped {
                continue;
            }
            let n = Self::task_configs(&c.spec).len() as u32;
            let want: BTreeSet<u32> = (0..n).filter(|t| self.owns(&name, *t)).collect();
            let have: BTreeSet<u32> = c.tasks.iter().map(|t| t.id).collect();
            if want == have {
                continue;
            }
            self.stop_tasks(&name).await;
            if want.is_empty() {
                tracing::info!(connector = %name, "no task of this connector runs on this worker now");
            } else {
                tracing::info!(connector = %name, tasks = ?want, "running this connector's tasks here");
                self.start(&name).await;
            }
        }
    }

    /// A change of the worker group's assignment.
    async fn on_membership(&mut self, ev: sluice_kafka::ConsumerEvent) {
        use sluice_kafka::ConsumerEvent;
        match ev {
            // Offsets topic records: read by the offset store instead.
            ConsumerEvent::Records(_) => {}
            ConsumerEvent::Assigned(parts) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.owned.extend(parts.iter().map(|p| p.partition));
                    c.generation += 1;
                    tracing::info!(
                        "worker group: this worker now holds {} of the {} work partitions",
                        c.owned.len(),
                        c.topics.offset_partitions
                    );
                }
                if let Err(e) = self.sync_configs().await {
                    tracing::warn!("{e}");
                }
                self.reconcile().await;
            }
            ConsumerEvent::Revoked(rev) => {
                if let Some(c) = self.cluster.as_mut() {
                    for p in &rev.partitions {
                        c.owned.remove(&p.partition);
                    }
                    c.generation += 1;
                    tracing::info!(
                        "worker group: this worker now holds {} of the {} work partitions",
                        c.owned.len(),
                        c.topics.offset_partitions
                    );
                }
                // The partitions go to other workers only after their tasks
                // stopped here and their offsets are committed.
                self.reconcile().await;
                if let Some(c) = self.committer.as_mut() {
                    if let Err(e) = c.commit().await {
                        tracing::error!("committing offsets before a rebalance: {e}");
                    }
                }
                rev.release(sluice_kafka::CommitOffsets::new());
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        // A requester that went away does not care about the answer.
        match cmd {
            Command::List(r) => {
                let _ = r.send(Ok(self.connectors.keys().cloned().collect()));
            }
            Command::Info(n, r) => {
                let _ = r.send(self.info(&n));
            }
            Command::Status(n, r) => {
                self.refresh_statuses().await;
                let _ = r.send(self.status(&n));
            }
            Command::Tasks(n, r) => {
                let _ = r.send(self.get(&n).map(|c| {
                    let all = self.task_ids(&n);
                    let configs = Self::task_configs(&c.spec);
                    all.into_iter()
                        .map(|id| TaskInfo {
                            id: TaskId {
                                connector: n.clone(),
                                task: id,
                            },
                            config: c
                                .tasks
                                .iter()
                                .find(|t| t.id == id)
                                .map(|t| t.props.clone())
                                .or_else(|| configs.get(id as usize).cloned())
                                .unwrap_or_default(),
                        })
                        .collect()
                }));
            }
            Command::Put {
                props,
                initial,
                create_only,
                reply,
            } => {
                let result = if self.cluster.is_some() {
                    self.dist_put(props, initial, create_only).await
                } else {
                    self.put(props, initial, create_only).await
                };
                let _ = reply.send(result);
            }
            Command::Delete(n, r) => {
                let result = match self
                    .sync_configs()
                    .await
                    .and_then(|()| self.get(&n).map(|_| ()))
                {
                    Ok(()) if self.cluster.is_some() => {
                        self.write_configs(vec![
                            dist::connector_tombstone(&n),
                            dist::target_tombstone(&n),
                        ])
                        .await
                    }
                    Ok(()) => {
                        self.delete_local(&n).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = r.send(result);
            }
            Command::Target(n, t, r) => {
                let result = if self.cluster.is_some() {
                    match self
                        .sync_configs()
                        .await
                        .and_then(|()| self.get(&n).map(|_| ()))
                    {
                        Ok(()) => self.write_configs(vec![dist::target_record(&n, t)]).await,
                        Err(e) => Err(e),
                    }
                } else {
                    self.set_target(&n, t).await
                };
                let _ = r.send(result);
            }
            Command::Restart {
                name,
                include_tasks,
                only_failed,
                reply,
            } => {
                let result = if self.cluster.is_some() {
                    match self
                        .sync_configs()
                        .await
                        .and_then(|()| self.get(&name).map(|_| ()))
                    {
                        Ok(()) => match self
                            .write_configs(vec![dist::restart_record(
                                &name,
                                include_tasks,
                                only_failed,
                            )])
                            .await
                        {
                            Ok(()) => {
                                self.refresh_statuses().await;
                                self.status(&name)
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                } else {
                    self.restart(&name, include_tasks, only_failed).await
                };
                let _ = reply.send(result);
            }
            Command::Offsets(n, r) => {
                if self.cluster.is_some() {
                    // Another worker may run the connector: read what it
                    // committed.
                    if let Some(c) = self.committer.as_mut() {
                        if let Err(e) = c.refresh().await {
                            let _ = r.send(Err(ControlError::Failed(e.to_string())));
                            return;
                        }
                    }
                }
                let _ = r.send(self.offsets(&n));
            }
            Command::AlterOffsets(n, changes, r) => {
                let _ = r.send(self.alter_offsets(&n, changes).await);
            }
            Command::Topics(n, r) => {
                let _ = r.send(self.get(&n).map(|_| self.router.active_topics(&n)));
            }
            Command::ResetTopics(n, r) => {
                let _ = r.send(self.get(&n).map(|_| self.router.reset_active_topics(&n)));
            }
        }
    }

    /// Records a task's end; returns the failure if it failed.
    fn task_exited(&mut self, exit: Exit) -> Option<String> {
        let c = self.connectors.get_mut(&exit.connector)?;
        if c.generation != exit.generation {
            // A task of an earlier incarnation, stopped on purpose; only
            // how it ended is worth telling.
            if let Some(e) = exit.error {
                tracing::error!("{e} (while being stopped)");
            }
            return None;
        }
        let t = c.tasks.iter_mut().find(|t| t.id == exit.task)?;
        match exit.error {
            // A task failed by its Kafka deliveries stops without an error
            // of its own: it stays failed.
            None if matches!(t.state, TaskState::Failed(_)) => None,
            None => {
                if c.spec.kind == ConnectorKind::Source {
                    tracing::info!("{} finished", exit.label);
                } else if self.source_stop.is_cancelled() {
                    // The worker is stopping: sinks end once drained.
                    tracing::debug!("{} stopped", exit.label);
                } else {
                    tracing::warn!("{} stopped on its own", exit.label);
                }
                t.state = TaskState::Finished;
                None
            }
            Some(e) => {
                tracing::error!("{e}");
                t.state = TaskState::Failed(e.clone());
                Some(e)
            }
        }
    }
}

/// A source task's run, boxed so that tasks over either output kind can
/// be started alike.
type TaskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// A source task's way into Kafka: ready, or still to be connected (a
/// transactional producer, or the connector's own producer), which the
/// task's own future does before it runs.
enum Output {
    Ready(Option<KafkaSourceOutput>),
    Deferred(MakeOutput),
}

/// Connects a task's own output: the output and what acknowledges it.
type MakeOutput = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = anyhow::Result<(KafkaSourceOutput, JoinHandle<()>)>>
            + Send,
    >,
>;

/// A source task's run as a `'static` future.
async fn task_fut(
    mut task: Box<dyn sluice_core::connector::SourceTask>,
    ctx: SourceContext,
) -> anyhow::Result<()> {
    task.run(ctx).await
}

pub(super) async fn run(worker: Worker, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let Worker {
        config,
        connectors,
        offsets,
        flush_policy,
        registry,
        stop_on_task_failure,
        worker_id,
        commands,
        mut inbox,
    } = worker;
    // Only handles keep the inbox open from now on.
    drop(commands);
    let kafka = match config.kafka.clone() {
        None => None,
        Some(k) => {
            let shown = k.to_string();
            match KafkaClients::connect(k).await {
                Ok(c) => {
                    tracing::info!("Kafka transport: {shown}");
                    Some(c)
                }
                Err(e) => return Err(WorkerError::Kafka(format!("{shown}: {e}"))),
            }
        }
    };
    let (exits, mut exited) = mpsc::unbounded_channel();
    let topics = match (&config.distributed, &kafka) {
        (Some(d), Some(k)) => {
            match InternalTopics::open(&k.config, &k.admin, k.producer.clone(), d.clone()).await {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => return Err(WorkerError::Kafka(format!("{e:#}"))),
            }
        }
        _ => None,
    };
    let committer = match &topics {
        Some(t) => {
            let mut c = Committer::over_topic(
                crate::offset_file::OffsetStore::memory(&format!(
                    "offsets topic '{}'",
                    t.config.offset_topic
                )),
                Arc::clone(t),
            );
            if let Err(e) = c.refresh().await {
                return Err(WorkerError::Kafka(e.to_string()));
            }
            Some(c)
        }
        None => offsets.map(|store| Committer::new(store, Vec::new())),
    };
    let mut rt = Runtime {
        config: config.clone(),
        registry,
        flush_policy,
        worker_id,
        router: Arc::new(Router::new(Vec::new())),
        connectors: BTreeMap::new(),
        // Over Kafka, index 0 of a source's tracker is the producer.
        next_sink_index: if kafka.is_some() { PRODUCER + 1 } else { 0 },
        next_generation: 0,
        committer,
        kafka,
        ackers: Vec::new(),
        source_stop: shutdown.child_token(),
        sink_stop: CancellationToken::new(),
        exits,
        cluster: topics.as_ref().map(|t| Cluster {
            topics: Arc::clone(t),
            owned: BTreeSet::new(),
            generation: 0,
            statuses: BTreeMap::new(),
            pending_targets: BTreeMap::new(),
        }),
    };
    let mut failures = Vec::new();
    let mut membership = None;
    let connectors = match &topics {
        Some(t) => match join_group(&mut rt, t, connectors).await {
            Ok(m) => {
                membership = Some(m);
                Vec::new()
            }
            Err(e) => return Err(WorkerError::Kafka(format!("{e:#}"))),
        },
        None => connectors,
    };
    // Sinks first: sources must find their queues.
    let mut ordered: Vec<ConnectorSpec> = connectors;
    ordered.sort_by_key(|c| c.kind == ConnectorKind::Source);
    for spec in ordered {
        let name = spec.name.clone();
        rt.connectors.insert(
            name.clone(),
            Connector {
                spec,
                target: TargetState::Running,
                generation: 0,
                tasks: Vec::new(),
            },
        );
        let failed = rt.start(&name).await;
        // Otherwise the task's FAILED state tells, and it can be restarted.
        if stop_on_task_failure {
            failures.extend(failed);
        }
    }

    let mut tick = tokio::time::interval(
        config
            .offset_flush_interval
            .max(std::time::Duration::from_millis(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // How soon a worker sees another's config change.
    let mut config_tick = tokio::time::interval(CONFIG_POLL);
    config_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox_open = true;
    while failures.is_empty() || !stop_on_task_failure {
        tokio::select! {
            _ = shutdown.cancelled() => {
                tracing::info!("stopping: shutdown requested");
                break;
            }
            Some(exit) = exited.recv() => {
                let name = exit.connector.clone();
                if let Some(f) = rt.task_exited(exit) {
                    if stop_on_task_failure {
                        failures.push(f);
                    }
                }
                rt.publish_status(&name).await;
            }
            ev = next_membership_event(&mut membership) => match ev {
                Some(ev) => rt.on_membership(ev).await,
                None => {
                    let f = "the worker group's consumer stopped: this worker can no longer take part in the group".to_string();
                    tracing::error!("{f}");
                    failures.push(f);
                    break;
                }
            },
            _ = config_tick.tick(), if rt.cluster.is_some() => {
                if let Err(e) = rt.sync_configs().await {
                    tracing::warn!("{e}");
                }
            }
            cmd = inbox.recv(), if inbox_open => match cmd {
                Some(cmd) => rt.handle(cmd).await,
                None => inbox_open = false,
            },
            _ = tick.tick(), if rt.committer.is_some() => {
                if let Some(c) = rt.committer.as_mut() {
                    if let Err(e) = c.commit().await {
                        // Retried at the next interval; sources are not
                        // told about offsets that are not durable.
                        tracing::error!("committing offsets: {e}");
                    }
                }
            }
        }
    }
    // Requests arriving from now on are answered "not running".
    drop(inbox);

    // Orderly stop: sources first, then their last records drain into the
    // sinks, which flush; only then the final commit.
    rt.source_stop.cancel();
    let grace = config.task_shutdown_timeout;
    let mut sources = Vec::new();
    let mut sinks = Vec::new();
    for c in rt.connectors.values_mut() {
        for t in &mut c.tasks {
            if let Some(h) = t.handle.take() {
                match c.spec.kind {
                    ConnectorKind::Source => sources.push(h),
                    ConnectorKind::Sink => sinks.push(h),
                }
            }
        }
    }
    let aborts: Vec<_> = sources.iter().map(JoinHandle::abort_handle).collect();
    if tokio::time::timeout(grace, futures::future::join_all(sources))
        .await
        .is_err()
    {
        tracing::warn!(
            "source tasks did not stop within task.shutdown.graceful.timeout.ms ({} ms); cancelling them",
            grace.as_millis()
        );
        for a in aborts {
            a.abort();
        }
    }
    rt.sink_stop.cancel();
    futures::future::join_all(sinks).await;
    while let Ok(exit) = exited.try_recv() {
        if let Some(f) = rt.task_exited(exit) {
            if !failures.contains(&f) {
                failures.push(f);
            }
        }
    }
    if !stop_on_task_failure {
        // Tasks still failed at the end; ones restarted since do not count.
        for c in rt.connectors.values() {
            for t in &c.tasks {
                if let TaskState::Failed(f) = &t.state {
                    if !failures.contains(f) {
                        failures.push(f.clone());
                    }
                }
            }
        }
    }
    if let Some(k) = &rt.kafka {
        // Wait for what the sources produced to be acknowledged, so the
        // final commit covers it.
        if let Err(e) = k.producer.flush(grace).await {
            tracing::warn!("flushing the Kafka producer: {e}");
        }
        let ackers = std::mem::take(&mut rt.ackers);
        let _ = tokio::time::timeout(grace, futures::future::join_all(ackers)).await;
    }
    if let Some(c) = rt.committer.as_mut() {
        if let Err(e) = c.commit().await {
            let f = format!("final offset commit: {e}");
            tracing::error!("{f}");
            failures.push(f);
        }
    }
    if let Some(m) = membership.take() {
        // Leaving the group hands this worker's tasks to the others, now
        // that they are stopped and their offsets committed.
        m.close().await;
    }
    if failures.is_empty() {
        tracing::info!("worker stopped");
        Ok(())
    } else {
        Err(WorkerError::TaskFailed(failures))
    }
}

/// The worker's Kafka settings with a connector's `producer.override.*` or
/// `consumer.override.*` applied (the same Arc when it has none).
fn client_overrides(
    base: &Arc<sluice_kafka::KafkaConfig>,
    props: &Props,
    role: ClientRole,
) -> anyhow::Result<Arc<sluice_kafka::KafkaConfig>> {
    let prefix = match role {
        ClientRole::Producer => "producer.override.",
        ClientRole::Consumer => "consumer.override.",
        ClientRole::Admin => "admin.override.",
    };
    let mut overrides = props
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k, v)))
        .peekable();
    if overrides.peek().is_none() {
        return Ok(Arc::clone(base));
    }
    let mut cfg = (**base).clone();
    for (k, v) in overrides {
        cfg.set_override(role, k, v)
            .map_err(|e| anyhow::anyhow!("'{prefix}{k}': {e}"))?;
    }
    Ok(Arc::new(cfg))
}

/// The config topic records that create or reconfigure connector `name`:
/// its target state (new connectors only), its config, and its task configs
/// with their commit marker, as Kafka Connect writes them for tools that
/// read the topic.
fn config_records(
    name: &str,
    props: &Props,
    spec: &ConnectorSpec,
    initial: Option<TargetState>,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut records: Vec<_> = initial
        .map(|t| dist::target_record(name, t))
        .into_iter()
        .collect();
    records.push(dist::connector_record(name, props));
    let tasks = Runtime::task_configs(spec);
    for (i, t) in tasks.iter().enumerate() {
        records.push(dist::task_record(name, i as u32, t));
    }
    records.push(dist::commit_record(name, tasks.len()));
    records
}

/// How often a distributed worker reads the config topic for changes made
/// through other workers.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(1);

async fn next_membership_event(
    m: &mut Option<sluice_kafka::Consumer>,
) -> Option<sluice_kafka::ConsumerEvent> {
    match m {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

/// Distributed start-up: loads the connectors of the config topic, adds
/// the command line's connectors that it lacks, and joins the worker group
/// (whose assignments then start this worker's tasks).
async fn join_group(
    rt: &mut Runtime,
    topics: &Arc<InternalTopics>,
    from_files: Vec<ConnectorSpec>,
) -> anyhow::Result<sluice_kafka::Consumer> {
    use anyhow::Context as _;
    rt.refresh_statuses().await;
    rt.sync_configs().await?;
    for spec in from_files {
        match rt.connectors.get(&spec.name) {
            None => {
                tracing::info!(connector = %spec.name, "adding the connector of the command line to the group");
                let records =
                    config_records(&spec.name, &spec.props, &spec, Some(TargetState::Running));
                rt.write_configs(records).await?;
            }
            Some(c) if c.spec.props != spec.props => tracing::warn!(
                connector = %spec.name,
                "the group already has this connector with another config; keeping the group's (change it with PUT /connectors/{}/config)",
                spec.name
            ),
            Some(_) => {}
        }
    }
    let d = &topics.config;
    let kafka = rt
        .kafka
        .as_ref()
        .context("distributed mode without Kafka clients")?;
    let grace = rt.config.task_shutdown_timeout;
    let options = sluice_kafka::ConsumerOptions {
        // Incremental cooperative rebalancing, as Kafka Connect's workers
        // do: when a worker joins or leaves, only the moved partitions'
        // tasks stop and start; the sticky assignment deals a new group's
        // partitions out in turn, so a connector's consecutive tasks land
        // on different workers.
        settings: vec![
            (
                "partition.assignment.strategy".into(),
                "cooperative-sticky".into(),
            ),
            ("client.id".into(), rt.worker_id()),
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
    tracing::info!(group = %d.group_id, worker = %rt.worker_id(), "joining the worker group");
    sluice_kafka::Consumer::join(
        &kafka.config,
        &d.group_id,
        sluice_kafka::Subscription::Topics(vec![d.offset_topic.clone()]),
        options,
    )
    .await
    .with_context(|| format!("joining worker group '{}'", d.group_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::props_from;

    #[test]
    fn connector_client_overrides_apply_to_their_role_only() {
        let base = Arc::new(sluice_kafka::KafkaConfig::new("127.0.0.1:9092"));
        let none =
            client_overrides(&base, &props_from(&[("name", "c")]), ClientRole::Producer).unwrap();
        assert!(
            Arc::ptr_eq(&none, &base),
            "no override: the worker's settings"
        );
        let props = props_from(&[
            ("producer.override.linger.ms", "20"),
            ("consumer.override.max.poll.interval.ms", "10000"),
        ]);
        let p = client_overrides(&base, &props, ClientRole::Producer).unwrap();
        assert_eq!(
            p.override_value(ClientRole::Producer, "linger.ms"),
            Some("20")
        );
        assert_eq!(
            p.override_value(ClientRole::Consumer, "max.poll.interval.ms"),
            None
        );
        let c = client_overrides(&base, &props, ClientRole::Consumer).unwrap();
        assert_eq!(
            c.override_value(ClientRole::Consumer, "max.poll.interval.ms"),
            Some("10000")
        );
        // Settings Sluice owns are refused, naming the key.
        let err = client_overrides(
            &base,
            &props_from(&[("producer.override.enable.idempotence", "false")]),
            ClientRole::Producer,
        )
        .expect_err("a reserved key");
        assert!(
            err.to_string()
                .contains("producer.override.enable.idempotence"),
            "{err}"
        );
    }
}
