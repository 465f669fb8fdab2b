//! The worker's runtime: it manages connectors and their tasks' lives, the
//! same way whatever the mode. Mode-specific parts are behind roles:
//!
//! - the [`Transport`] (a local log, or Kafka) keeps records between source
//!   and sink tasks;
//! - the [`OffsetStore`](crate::offsets::OffsetStore) (a file, or the
//!   offsets topic) keeps source offsets, written by the [`Committer`];
//! - the [`Cluster`] (standalone, or a distributed group) keeps connector
//!   configurations and says which tasks this worker runs.
//!
//! Requests from [`WorkerHandle`]s (the REST API) are answered one at a time
//! by the worker's loop, so the connector table needs no locking. A change
//! is written to the cluster first and applied when it is read back, so the
//! workers of a group apply every change in one order.
//!
//! A failed task does not stop the worker: it is `FAILED` in its status
//! (with the error) and can be restarted through the API; the others keep
//! running. Only a worker nobody can reach (no REST listener) stops once
//! every one of its tasks failed, since nothing could restart them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use sluice_core::config::Props;
use sluice_core::connector::ConnectorKind;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::committer::Committer;
use crate::config_files::ConnectorFile;
use crate::connector_config::{validate_connectors, ConfigReport, ConnectorSpec};
use crate::offsets::file::FileOffsetStore;
use crate::offsets::topic::TopicOffsetStore;
use crate::offsets::{OffsetStore, OffsetStoreError, OffsetWrite};
use crate::registry::Registry;
use crate::sink_driver::FlushPolicy;
use crate::topics::ActiveTopics;
use crate::transport::kafka::{ExactlyOnce, KafkaClients, KafkaTransport};
use crate::transport::local::LocalTransport;
use crate::transport::Transport;
use crate::worker_config::{ExactlyOnceSupport, WorkerConfig};

pub mod api;
pub(crate) mod cluster;
pub mod figures;
pub mod history;
mod leftovers;
pub mod progress;
mod task;

use api::Command;
pub use api::{
    ConnectorInfo, ConnectorStatus, ControlError, OffsetChange, StateInfo, TargetState, TaskId,
    TaskInfo, TaskStatus, WorkerHandle,
};
use cluster::{Cluster, ClusterEvent, ConfigChange, Standalone, StatusUpdate};
use task::{TaskEnv, TaskEvent, TaskRun, TaskState};

/// Why the worker did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid (nothing was started).
    #[error("{0}")]
    Config(#[from] ConfigReport),
    /// The offset store could not be read or written.
    #[error(transparent)]
    Offsets(#[from] OffsetStoreError),
    /// The Kafka cluster of `bootstrap.servers` could not be reached.
    #[error("Kafka transport: {0}")]
    Kafka(String),
    /// The local log or the connectors file could not be opened.
    #[error("{0}")]
    Storage(String),
    /// Every task failed and nothing could restart them.
    #[error("{} task failure{}:\n  - {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  - "))]
    TaskFailed(Vec<String>),
}

/// A validated worker, ready to run.
pub struct Worker {
    config: WorkerConfig,
    connectors: Vec<ConnectorSpec>,
    flush_policy: FlushPolicy,
    registry: Registry,
    stop_on_task_failure: bool,
    worker_id: Arc<RwLock<String>>,
    commands: mpsc::Sender<Command>,
    inbox: mpsc::Receiver<Command>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("connectors", &self.connectors)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Validates the worker properties and every connector config against
    /// `registry` (all errors reported together, warnings logged).
    pub fn new(
        registry: &Registry,
        worker_props: &Props,
        connectors: &[ConnectorFile],
    ) -> Result<Worker, WorkerError> {
        let mut errors = Vec::new();
        let worker = match WorkerConfig::from_props(worker_props) {
            Ok((w, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(w)
            }
            Err(e) => {
                errors.extend(e.0.iter().map(|e| format!("worker: {e}")));
                None
            }
        };
        // Connector configs are checked even when the worker's is bad, so
        // the user sees everything at once; the defaults stand in.
        let fallback;
        let for_connectors = match &worker {
            Some(w) => w,
            None => {
                // Keep the offset file, so its absence is not misreported.
                let kept: Props = worker_props
                    .iter()
                    .filter(|(k, v)| {
                        k.as_str() == "offset.storage.file.filename" && !v.trim().is_empty()
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                fallback = WorkerConfig::from_props(&kept)
                    .map(|(w, _)| w)
                    .map_err(|e| ConfigReport {
                        errors: vec![e.to_string()],
                    })?;
                &fallback
            }
        };
        let specs = match validate_connectors(registry, for_connectors, connectors) {
            Ok((specs, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                specs
            }
            Err(report) => {
                errors.extend(report.errors);
                Vec::new()
            }
        };
        let config = match worker {
            Some(w) if errors.is_empty() => w,
            _ => return Err(WorkerError::Config(ConfigReport { errors })),
        };
        // Requests wait for the worker's loop; a small bound is enough since
        // each caller waits for its answer.
        let (commands, inbox) = mpsc::channel(64);
        Ok(Worker {
            config,
            connectors: specs,
            flush_policy: FlushPolicy::default(),
            registry: registry.clone(),
            stop_on_task_failure: true,
            worker_id: Arc::new(RwLock::new("sluice:standalone".to_string())),
            commands,
            inbox,
        })
    }

    /// The validated connectors.
    pub fn connectors(&self) -> &[ConnectorSpec] {
        &self.connectors
    }

    /// Whether the worker stops once a task failed for good (the default:
    /// with no REST listener nothing could restart it, and a worker going
    /// on without it would look healthy). A worker that serves the REST
    /// API keeps running, its failed tasks `FAILED` in their statuses, as
    /// Kafka Connect's do.
    pub fn set_stop_on_task_failure(&mut self, stop: bool) {
        self.stop_on_task_failure = stop;
    }

    /// The `worker_id` shown in statuses (`<host>:<port>` of the REST
    /// listener).
    pub fn set_worker_id(&mut self, id: impl Into<String>) {
        *self
            .worker_id
            .write()
            .unwrap_or_else(PoisonError::into_inner) = id.into();
    }

    /// A handle to manage the running worker (what the REST API uses).
    /// Requests made before [`Worker::run`] wait until it runs; after it
    /// returns they fail with [`ControlError::NotRunning`].
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle::new(
            self.commands.clone(),
            self.registry.clone(),
            Arc::new(self.config.clone()),
        )
    }

    /// Changes when sink tasks flush (default: 1 s or 10000 records, or as
    /// soon as their input is drained).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.flush_policy = policy;
    }

    /// Runs until `shutdown` is cancelled (Ok, or Err naming the tasks
    /// still failed then), or until a task failed while nothing could
    /// restart it (Err, see [`Worker::set_stop_on_task_failure`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        run(self, shutdown).await
    }
}

struct Connector {
    spec: ConnectorSpec,
    target: TargetState,
    generation: u64,
    tasks: BTreeMap<u32, TaskRun>,
    pause: watch::Sender<bool>,
}

struct Runtime {
    config: Arc<WorkerConfig>,
    registry: Registry,
    flush_policy: FlushPolicy,
    worker_id: Arc<RwLock<String>>,
    transport: Arc<dyn Transport>,
    /// The worker's Kafka clients, for sinks' dead letter queues.
    dlq: Option<KafkaClients>,
    committer: Arc<tokio::sync::Mutex<Committer>>,
    cluster: Box<dyn Cluster>,
    connectors: BTreeMap<String, Connector>,
    /// Target states read before their connector's config.
    pending_targets: BTreeMap<String, TargetState>,
    active: Arc<ActiveTopics>,
    events: mpsc::UnboundedSender<TaskEvent>,
    next_generation: u64,
    /// Parent of every task's stop token.
    stop_all: CancellationToken,
    /// Connectors given on the command line (a standalone worker does not
    /// remember them: their files are their source).
    from_command_line: std::collections::BTreeSet<String>,
    /// The config each connector's warnings were last logged for, so a
    /// config validated again (stored, then applied) warns once.
    warned: BTreeMap<String, Props>,
    /// What deleted connectors left behind, checked again periodically.
    leftovers: leftovers::Leftovers,
}

/// Records a source task may have in flight, as Debezium's
/// `max.queue.size` says (its default 8192); none for a sink.
fn queue_capacity(spec: &ConnectorSpec) -> u64 {
    match spec.kind {
        ConnectorKind::Sink => 0,
        ConnectorKind::Source => spec
            .props
            .get("max.queue.size")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(8192),
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
        .filter(|(k, v)| {
            !v.is_empty()
                && v.as_str() != crate::rest::secrets::HIDDEN
                && crate::rest::secrets::is_secret(def.as_ref(), k)
        })
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
async fn join_or_abort(
    handle: tokio::task::JoinHandle<()>,
    grace: std::time::Duration,
    label: String,
) {
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
        if !self.cluster.is_distributed() || c.target == TargetState::Stopped {
            return c.tasks.keys().copied().collect();
        }
        (0..Self::task_configs(&c.spec).len() as u32).collect()
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

    /// A local task's state as the API shows it.
    fn shown(target: TargetState, t: &TaskRun) -> (&'static str, Option<String>) {
        match t.state() {
            TaskState::Failed(e) => ("FAILED", Some(e)),
            TaskState::Restarting(e) => ("RESTARTING", Some(e)),
            // A source task that returned on its own produces nothing
            // more; it is no longer assigned work.
            TaskState::Finished => ("UNASSIGNED", None),
            TaskState::Running => (target.name(), None),
        }
    }

    fn status(&self, name: &str) -> Result<ConnectorStatus, ControlError> {
        let c = self.get(name)?;
        let worker_id = self.worker_id();
        let local = |(s, trace): (&'static str, Option<String>)| StateInfo {
            state: s,
            worker_id: worker_id.clone(),
            trace,
        };
        let tasks: Vec<TaskStatus> = self
            .task_ids(name)
            .into_iter()
            .map(|id| TaskStatus {
                id,
                details: c.tasks.get(&id).map(|t| t.figures.details()),
                state: match c.tasks.get(&id) {
                    Some(t) => {
                        let (state, trace) = Self::shown(c.target, t);
                        // A running task about to fail (its slot about to
                        // be invalidated) says so where tools look.
                        let trace = trace.or_else(|| {
                            t.figures
                                .source
                                .health()
                                .filter(|h| h.error && t.figures.kind == ConnectorKind::Source)
                                .map(|h| h.message)
                        });
                        local((state, trace))
                    }
                    None => self
                        .cluster
                        .remote_status(name, Some(id))
                        .unwrap_or(StateInfo {
                            state: "UNASSIGNED",
                            worker_id: String::new(),
                            trace: None,
                        }),
                },
            })
            .collect();
        let connector = if self.cluster.owns(name, 0) || c.target == TargetState::Stopped {
            local((c.target.name(), None))
        } else {
            let mut s = self.cluster.remote_status(name, None).unwrap_or(StateInfo {
                state: "UNASSIGNED",
                worker_id: String::new(),
                trace: None,
            });
            if s.state == "UNASSIGNED" {
                s.state = c.target.name();
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

    /// The figures of every connector and local task.
    fn sample(&self) -> crate::exporter::WorkerSample {
        use crate::exporter::{ConnectorSample, TaskSample};
        let mut sample = crate::exporter::WorkerSample {
            worker_id: self.worker_id(),
            stored_bytes: self.transport.stored_bytes(),
            leftovers: self.leftovers.now(),
            ..Default::default()
        };
        for (name, c) in &self.connectors {
            sample.connectors.push(ConnectorSample {
                name: name.clone(),
                kind: c.spec.kind,
                state: c.target.name(),
                server: c
                    .spec
                    .props
                    .get("topic.prefix")
                    .or_else(|| c.spec.props.get("database.server.name"))
                    .cloned()
                    .unwrap_or_default(),
                backlog: match c.spec.kind {
                    ConnectorKind::Sink => self.transport.backlog(name),
                    ConnectorKind::Source => None,
                },
            });
            for (id, t) in &c.tasks {
                sample.tasks.push(TaskSample {
                    connector: name.clone(),
                    task: *id,
                    state: Self::shown(c.target, t).0,
                    figures: Arc::clone(&t.figures),
                });
            }
        }
        sample
    }

    /// Validates `props` as start-up does.
    fn validate(&mut self, props: Props, origin: &str) -> Result<ConnectorSpec, ControlError> {
        let scrub = secret_values(&self.registry, &props);
        let file = ConnectorFile {
            path: PathBuf::from(origin),
            props,
        };
        match validate_connectors(&self.registry, &self.config, std::slice::from_ref(&file)) {
            Ok((mut specs, warnings)) => {
                let name = specs.last().map(|s| s.name.clone()).unwrap_or_default();
                if self.warned.get(&name) != Some(&file.props) {
                    for w in warnings {
                        tracing::warn!("{}", scrub_secrets(&w, &scrub));
                    }
                    self.warned.insert(name, file.props.clone());
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

    /// Starts the tasks of connector `name` this worker owns.
    fn start_tasks(&mut self, name: &str) {
        let Some(c) = self.connectors.get(name) else {
            return;
        };
        let configs = Self::task_configs(&c.spec);
        let owned: Vec<u32> = (0..configs.len() as u32)
            .filter(|t| self.cluster.owns(name, *t))
            .collect();
        self.next_generation += 1;
        let generation = self.next_generation;
        if c.spec.kind == ConnectorKind::Sink {
            if let Some(sub) = &c.spec.subscription {
                self.transport.sink_connector_added(name, sub);
            }
        }
        let mut runs = BTreeMap::new();
        for t in owned {
            let Some(props) = configs.get(t as usize).cloned() else {
                continue;
            };
            runs.insert(
                t,
                self.spawn_task(name, t, configs.len() as u32, props, generation),
            );
        }
        if let Some(c) = self.connectors.get_mut(name) {
            c.generation = generation;
            c.tasks = runs;
        }
    }

    fn spawn_task(
        &self,
        name: &str,
        task: u32,
        tasks: u32,
        props: Props,
        generation: u64,
    ) -> TaskRun {
        let Some(c) = self.connectors.get(name) else {
            // Unreachable for callers, who looked the connector up.
            return TaskRun {
                props,
                figures: Arc::new(figures::TaskFigures::new(ConnectorKind::Sink, 0)),
                state: Arc::new(std::sync::Mutex::new(TaskState::Finished)),
                stop: CancellationToken::new(),
                handle: None,
            };
        };
        let env = TaskEnv {
            spec: c.spec.clone(),
            task_id: task,
            tasks,
            props,
            generation,
            transport: Arc::clone(&self.transport),
            committer: Arc::clone(&self.committer),
            reload_offsets: self.cluster.is_distributed(),
            dlq: self.dlq.clone(),
            active: Arc::clone(&self.active),
            paused: c.pause.subscribe(),
            policy: self.flush_policy,
            grace: self.config.task_shutdown_timeout,
            events: self.events.clone(),
            progress: (self.config.progress_interval, self.config.summary_interval),
            figures: Arc::new(figures::TaskFigures::new(
                c.spec.kind,
                queue_capacity(&c.spec),
            )),
        };
        task::start(env, self.stop_all.child_token())
    }

    /// Stops the tasks of connector `name` (a source's commit what was
    /// delivered; a sink's write and commit what they took).
    async fn stop_tasks(&mut self, name: &str) {
        let grace = self.config.task_shutdown_timeout;
        let Some(c) = self.connectors.get_mut(name) else {
            return;
        };
        let tasks = std::mem::take(&mut c.tasks);
        for t in tasks.values() {
            t.stop.cancel();
        }
        // Stopping tasks may wait for the committer's periodic commit.
        let joins = tasks.into_iter().filter_map(|(id, t)| {
            t.handle
                .map(|h| join_or_abort(h, grace * 2, format!("connector '{name}' task {id}")))
        });
        futures::future::join_all(joins).await;
    }

    async fn restart_task(&mut self, name: &str, task: u32) -> Result<(), ControlError> {
        let grace = self.config.task_shutdown_timeout;
        let c = self.get(name)?;
        if c.target == TargetState::Stopped {
            return Ok(());
        }
        let configs = Self::task_configs(&c.spec);
        let Some(props) = configs.get(task as usize).cloned() else {
            return Err(ControlError::TaskNotFound(name.to_string(), task));
        };
        if !self.cluster.owns(name, task) {
            return Ok(());
        }
        let generation = c.generation;
        if let Some(old) = self
            .connectors
            .get_mut(name)
            .and_then(|c| c.tasks.remove(&task))
        {
            old.stop.cancel();
            if let Some(h) = old.handle {
                join_or_abort(h, grace * 2, format!("connector '{name}' task {task}")).await;
            }
        }
        tracing::info!(connector = %name, task, "restarting task");
        let run = self.spawn_task(name, task, configs.len() as u32, props, generation);
        if let Some(c) = self.connectors.get_mut(name) {
            c.tasks.insert(task, run);
        }
        self.publish(name).await;
        Ok(())
    }

    /// Applies one stored change to this worker.
    async fn apply(&mut self, change: ConfigChange) {
        match change {
            ConfigChange::Put {
                name,
                props,
                initial,
                ..
            } => {
                if self
                    .connectors
                    .get(&name)
                    .is_some_and(|c| c.spec.props == props)
                {
                    return;
                }
                let spec = match self.validate(props, "config") {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(connector = %name, "its stored config cannot run on this worker: {e}");
                        return;
                    }
                };
                // A connector of that name again: what was left is its own.
                self.leftovers.forget(&name);
                if let Some(c) = self.connectors.get_mut(&name) {
                    tracing::info!(connector = %name, "reconfiguring connector: restarting its tasks");
                    c.spec = spec;
                    let running = c.target != TargetState::Stopped;
                    if running {
                        self.stop_tasks(&name).await;
                        self.start_tasks(&name);
                    }
                } else {
                    let target = self
                        .pending_targets
                        .remove(&name)
                        .or(initial)
                        .unwrap_or(TargetState::Running);
                    tracing::info!(connector = %name, class = spec.plugin.class(), "creating connector");
                    self.connectors.insert(
                        name.clone(),
                        Connector {
                            spec,
                            target,
                            generation: 0,
                            tasks: BTreeMap::new(),
                            pause: watch::channel(target == TargetState::Paused).0,
                        },
                    );
                    if target != TargetState::Stopped {
                        self.start_tasks(&name);
                    }
                }
                self.publish(&name).await;
            }
            ConfigChange::Delete { name } => {
                self.pending_targets.remove(&name);
                if self.connectors.contains_key(&name) {
                    self.delete_local(&name).await;
                }
            }
            ConfigChange::Target { name, state } => {
                if !self.connectors.contains_key(&name) {
                    self.pending_targets.insert(name, state);
                    return;
                }
                self.set_target(&name, state).await;
            }
            ConfigChange::Restart {
                name,
                include_tasks,
                only_failed,
            } => {
                if include_tasks {
                    let ids: Vec<u32> = self
                        .connectors
                        .get(&name)
                        .map(|c| {
                            c.tasks
                                .iter()
                                .filter(|(_, t)| {
                                    !only_failed || matches!(t.state(), TaskState::Failed(_))
                                })
                                .map(|(id, _)| *id)
                                .collect()
                        })
                        .unwrap_or_default();
                    for id in ids {
                        let _ = self.restart_task(&name, id).await;
                    }
                }
            }
            ConfigChange::RestartTask { name, task } => {
                if let Err(e) = self.restart_task(&name, task).await {
                    tracing::warn!(connector = %name, "restarting task {task}: {e}");
                }
            }
        }
    }

    async fn set_target(&mut self, name: &str, target: TargetState) {
        let Some(c) = self.connectors.get_mut(name) else {
            return;
        };
        let was = c.target;
        if was == target {
            return;
        }
        c.target = target;
        c.pause.send_replace(target == TargetState::Paused);
        tracing::info!(connector = %name, "connector is now {}", target.name());
        if target == TargetState::Stopped {
            self.stop_tasks(name).await;
        } else if was == TargetState::Stopped {
            self.start_tasks(name);
        }
        self.publish(name).await;
    }

    /// Stops and forgets connector `name` on this worker.
    async fn delete_local(&mut self, name: &str) {
        tracing::info!(connector = %name, "deleting connector");
        let ids: Vec<u32> = self
            .connectors
            .get(name)
            .map(|c| c.tasks.keys().copied().collect())
            .unwrap_or_default();
        self.stop_tasks(name).await;
        if let Some(c) = self.connectors.remove(name) {
            if c.spec.kind == ConnectorKind::Sink {
                self.transport.sink_connector_removed(name);
            }
        }
        self.committer.lock().await.remove_connector(name);
        // As in Kafka Connect, a deleted connector's active topics go with it.
        self.active.reset(name);
        let mut updates: Vec<StatusUpdate> = ids
            .into_iter()
            .map(|t| StatusUpdate {
                connector: name.to_string(),
                task: Some(t),
                state: None,
            })
            .collect();
        if self.cluster.owns(name, 0) {
            updates.push(StatusUpdate {
                connector: name.to_string(),
                task: None,
                state: None,
            });
        }
        let id = self.worker_id();
        self.cluster.publish(&id, updates).await;
    }

    /// Publishes the states of this worker's tasks of `name` (and of the
    /// connector, when it owns task 0).
    async fn publish(&mut self, name: &str) {
        if !self.cluster.is_distributed() {
            return;
        }
        let Some(c) = self.connectors.get(name) else {
            return;
        };
        let mut updates: Vec<StatusUpdate> = c
            .tasks
            .iter()
            .map(|(id, t)| StatusUpdate {
                connector: name.to_string(),
                task: Some(*id),
                state: Some(Self::shown(c.target, t)),
            })
            .collect();
        if self.cluster.owns(name, 0) {
            updates.push(StatusUpdate {
                connector: name.to_string(),
                task: None,
                state: Some((c.target.name(), None)),
            });
        }
        let id = self.worker_id();
        self.cluster.publish(&id, updates).await;
    }

    /// Reads the changes stored since the last look and applies them.
    async fn sync(&mut self) -> Result<(), ControlError> {
        for change in self.cluster.changes().await? {
            self.apply(change).await;
        }
        Ok(())
    }

    /// Runs exactly the tasks this worker owns now.
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
            let want: Vec<u32> = (0..n).filter(|t| self.cluster.owns(&name, *t)).collect();
            let have: Vec<u32> = c.tasks.keys().copied().collect();
            if want == have {
                continue;
            }
            self.stop_tasks(&name).await;
            if want.is_empty() {
                tracing::info!(connector = %name, "no task of this connector runs on this worker now");
            } else {
                tracing::info!(connector = %name, tasks = ?want, "running this connector's tasks here");
                self.start_tasks(&name);
            }
            self.publish(&name).await;
        }
    }

    /// Keeps the stored secret when a config comes back with `[hidden]`
    /// in its place (GET config, edit one key, PUT it back).
    fn restore_secrets(&self, name: &str, mut props: Props) -> Props {
        if let Some(c) = self.connectors.get(name) {
            for (k, v) in props.iter_mut() {
                if v == crate::rest::secrets::HIDDEN {
                    if let Some(stored) = c.spec.props.get(k) {
                        *v = stored.clone();
                    }
                }
            }
        }
        props
    }

    async fn put(
        &mut self,
        props: Props,
        initial: TargetState,
        create_only: bool,
    ) -> Result<(ConnectorInfo, bool), ControlError> {
        self.sync().await?;
        let name = props
            .get("name")
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        let exists = self.connectors.contains_key(&name);
        if exists && create_only {
            return Err(ControlError::Conflict(name));
        }
        let props = self.restore_secrets(&name, props);
        if let Some((k, _)) = props
            .iter()
            .find(|(_, v)| v.as_str() == crate::rest::secrets::HIDDEN)
        {
            return Err(ControlError::InvalidConfig(vec![format!(
                "Configuration '{k}': the value is the mask '{}' and no stored value replaces it; give the real value",
                crate::rest::secrets::HIDDEN
            )]));
        }
        let spec = self.validate(props.clone(), "REST request")?;
        let external = spec.plugin.check_external(&props).await;
        if !external.is_empty() {
            let scrub = secret_values(&self.registry, &props);
            return Err(ControlError::InvalidConfig(
                external
                    .iter()
                    .map(|e| scrub_secrets(&e.to_string(), &scrub))
                    .collect(),
            ));
        }
        let task_configs = Self::task_configs(&spec);
        self.cluster
            .write(ConfigChange::Put {
                name: name.clone(),
                props,
                task_configs,
                initial: (!exists).then_some(initial),
                remember: !self.from_command_line.contains(&name),
            })
            .await?;
        self.sync().await?;
        Ok((self.info(&name)?, !exists))
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
                "Connector {name} is a sink: changing its consumer positions is not supported by Sluice yet{}",
                if self.dlq.is_some() {
                    "; use kafka-consumer-groups --reset-offsets on group connect-<name>"
                } else {
                    ""
                }
            )));
        }
        let mut committer = self.committer.lock().await;
        let writes: Vec<OffsetWrite> = match changes {
            None => committer
                .table()
                .of(name)
                .into_iter()
                .map(|(partition, _)| OffsetWrite {
                    connector: name.to_string(),
                    partition,
                    offset: None,
                })
                .collect(),
            Some(changes) => changes
                .into_iter()
                .map(|ch| OffsetWrite {
                    connector: name.to_string(),
                    partition: ch.partition,
                    offset: ch.offset,
                })
                .collect(),
        };
        committer
            .alter(writes)
            .await
            .map_err(|e| ControlError::Failed(format!("writing offsets: {e}")))
    }

    async fn offsets(&mut self, name: &str) -> Result<Vec<serde_json::Value>, ControlError> {
        let kind = self.get(name)?.spec.kind;
        if kind == ConnectorKind::Sink {
            // Sink positions are the transport's (consumer group) offsets.
            return Ok(Vec::new());
        }
        let mut committer = self.committer.lock().await;
        if self.cluster.is_distributed() {
            // Another worker may run the connector: read what it committed.
            committer
                .refresh()
                .await
                .map_err(|e| ControlError::Failed(e.to_string()))?;
        }
        Ok(committer
            .table()
            .of(name)
            .into_iter()
            .map(
                |(partition, offset)| serde_json::json!({"partition": partition, "offset": offset}),
            )
            .collect())
    }

    async fn handle(&mut self, cmd: Command) {
        // A requester that went away does not care about the answer.
        match cmd {
            Command::List(r) => {
                let _ = r.send(
                    self.sync()
                        .await
                        .map(|()| self.connectors.keys().cloned().collect()),
                );
            }
            Command::Info(n, r) => {
                let _ = r.send(self.info(&n));
            }
            Command::Status(n, r) => {
                self.cluster.refresh_statuses().await;
                let _ = r.send(self.status(&n));
            }
            Command::Sample(r) => {
                let _ = r.send(Ok(self.sample()));
            }
            Command::Tasks(n, r) => {
                let _ = r.send(self.get(&n).map(|c| {
                    let configs = Self::task_configs(&c.spec);
                    self.task_ids(&n)
                        .into_iter()
                        .map(|id| TaskInfo {
                            id: TaskId {
                                connector: n.clone(),
                                task: id,
                            },
                            config: c
                                .tasks
                                .get(&id)
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
                let _ = reply.send(self.put(props, initial, create_only).await);
            }
            Command::Delete(n, r) => {
                let result = async {
                    self.sync().await?;
                    let props = self.get(&n)?.spec.props.clone();
                    let plugin = self.get(&n)?.spec.plugin.clone();
                    self.cluster
                        .write(ConfigChange::Delete { name: n.clone() })
                        .await?;
                    self.sync().await?;
                    let left = plugin.left_behind(&props).await;
                    for l in &left {
                        tracing::warn!(connector = %n, "{}", l.note);
                    }
                    let notes = left.iter().map(|l| l.note.clone()).collect();
                    self.leftovers.note(&n, plugin, props, left);
                    Ok(notes)
                }
                .await;
                let _ = r.send(result);
            }
            Command::Target(n, t, r) => {
                let result = async {
                    self.sync().await?;
                    self.get(&n)?;
                    self.cluster
                        .write(ConfigChange::Target {
                            name: n.clone(),
                            state: t,
                        })
                        .await?;
                    self.sync().await
                }
                .await;
                let _ = r.send(result);
            }
            Command::Restart {
                name,
                include_tasks,
                only_failed,
                reply,
            } => {
                let result = async {
                    self.sync().await?;
                    self.get(&name)?;
                    self.cluster
                        .write(ConfigChange::Restart {
                            name: name.clone(),
                            include_tasks,
                            only_failed,
                        })
                        .await?;
                    self.sync().await?;
                    self.cluster.refresh_statuses().await;
                    self.status(&name)
                }
                .await;
                let _ = reply.send(result);
            }
            Command::RestartTask(name, task, reply) => {
                let result = async {
                    self.sync().await?;
                    let c = self.get(&name)?;
                    if task as usize >= Self::task_configs(&c.spec).len() {
                        return Err(ControlError::TaskNotFound(name.clone(), task));
                    }
                    self.cluster
                        .write(ConfigChange::RestartTask {
                            name: name.clone(),
                            task,
                        })
                        .await?;
                    self.sync().await
                }
                .await;
                let _ = reply.send(result);
            }
            Command::Offsets(n, r) => {
                let _ = r.send(self.offsets(&n).await);
            }
            Command::AlterOffsets(n, changes, r) => {
                let _ = r.send(self.alter_offsets(&n, changes).await);
            }
            Command::Topics(n, r) => {
                let _ = r.send(self.get(&n).map(|_| self.active.of(&n)));
            }
            Command::ResetTopics(n, r) => {
                let _ = r.send(self.get(&n).map(|_| self.active.reset(&n)));
            }
        }
    }

    /// The failures, when every task of this worker failed (and there is
    /// at least one).
    /// The errors of the tasks that are FAILED now.
    fn failed(&self) -> Vec<String> {
        self.connectors
            .values()
            .flat_map(|c| c.tasks.values())
            .filter_map(|t| match t.state() {
                TaskState::Failed(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

/// Opens the transport the worker config asks for.
async fn open_transport(
    config: &WorkerConfig,
) -> Result<(Arc<dyn Transport>, Option<KafkaClients>), WorkerError> {
    match config.kafka.clone() {
        None => {
            let settings = config.local_log.clone();
            let transport =
                tokio::task::spawn_blocking(move || LocalTransport::open(settings.log_config()))
                    .await
                    .map_err(|e| WorkerError::Storage(format!("opening the local log: {e}")))?
                    .map_err(|e| WorkerError::Storage(format!("{e:#}")))?;
            tracing::info!("transport: {}", transport.describe());
            Ok((Arc::new(transport), None))
        }
        Some(k) => {
            let shown = k.to_string();
            let clients = KafkaClients::connect(k)
                .await
                .map_err(|e| WorkerError::Kafka(format!("{shown}: {e}")))?;
            let exactly_once = config
                .distributed
                .as_ref()
                .filter(|d| d.exactly_once == ExactlyOnceSupport::Enabled)
                .map(|d| ExactlyOnce {
                    group_id: d.group_id.clone(),
                    offsets_topic: d.offset_topic.clone(),
                    commit_interval: config.offset_flush_interval,
                });
            let transport = KafkaTransport::new(clients.clone(), exactly_once);
            tracing::info!("transport: {}", transport.describe());
            Ok((Arc::new(transport), Some(clients)))
        }
    }
}

async fn run(worker: Worker, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let Worker {
        config,
        connectors,
        flush_policy,
        registry,
        stop_on_task_failure,
        worker_id,
        commands,
        mut inbox,
    } = worker;
    // Only handles keep the inbox open from now on.
    drop(commands);
    let (transport, kafka) = open_transport(&config).await?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // The mode: a group (config, status and offsets topics) or one worker
    // (a connectors file and an offset file).
    let mut remembered = Vec::new();
    let (cluster, store): (Box<dyn Cluster>, Box<dyn OffsetStore>) =
        match (&config.distributed, &kafka) {
            (Some(d), Some(k)) => {
                let topics = crate::distributed::InternalTopics::open(
                    &k.config,
                    &k.admin,
                    k.producer.clone(),
                    d.clone(),
                )
                .await
                .map_err(|e| WorkerError::Kafka(format!("{e:#}")))?;
                let topics = Arc::new(topics);
                (
                    Box::new(crate::distributed::Distributed::new(
                        Arc::clone(&topics),
                        Arc::clone(&k.config),
                        config.task_shutdown_timeout,
                    )),
                    Box::new(TopicOffsetStore::new(topics)),
                )
            }
            _ => {
                let standalone = Standalone::open(config.connectors_file.clone())
                    .map_err(WorkerError::Storage)?;
                remembered = standalone.remembered();
                let store: Box<dyn OffsetStore> = match &config.offset_file {
                    Some(f) => Box::new(FileOffsetStore::new(f)),
                    None => Box::new(crate::offsets::MemoryOffsetStore::new()),
                };
                (Box::new(standalone), store)
            }
        };
    let mut store = store;
    store.load().await?;
    let mut rt = Runtime {
        config: Arc::new(config.clone()),
        registry,
        flush_policy,
        worker_id,
        transport,
        dlq: kafka.clone(),
        committer: Arc::new(tokio::sync::Mutex::new(Committer::new(store))),
        cluster,
        connectors: BTreeMap::new(),
        pending_targets: BTreeMap::new(),
        active: Arc::new(ActiveTopics::default()),
        events: events_tx,
        next_generation: 0,
        stop_all: CancellationToken::new(),
        from_command_line: connectors.iter().map(|c| c.name.clone()).collect(),
        leftovers: leftovers::Leftovers::default(),
        // Worker::new logged the command line's warnings.
        warned: connectors
            .iter()
            .map(|c| (c.name.clone(), c.props.clone()))
            .collect(),
    };
    // What the group (or the connectors file) already has, then the
    // command line's connectors that differ from it.
    if let Err(e) = rt.sync().await {
        return Err(WorkerError::Kafka(e.to_string()));
    }
    let from_files: Vec<String> = connectors.iter().map(|c| c.name.clone()).collect();
    for (name, props, state) in remembered {
        if from_files.contains(&name) {
            continue;
        }
        tracing::info!(connector = %name, "starting the connector remembered from the last run");
        let spec = match rt.validate(props.clone(), "connectors file") {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(connector = %name, "the remembered config is no longer valid: {e}");
                continue;
            }
        };
        let task_configs = Runtime::task_configs(&spec);
        let _ = rt
            .cluster
            .write(ConfigChange::Put {
                name,
                props,
                task_configs,
                initial: Some(state),
                remember: true,
            })
            .await;
    }
    for spec in connectors {
        if rt
            .connectors
            .get(&spec.name)
            .is_some_and(|c| c.spec.props == spec.props)
        {
            continue;
        }
        if rt.cluster.is_distributed() && rt.connectors.contains_key(&spec.name) {
            tracing::warn!(
                connector = %spec.name,
                "the group already has this connector with another config; keeping the group's (change it with PUT /connectors/{}/config)",
                spec.name
            );
            continue;
        }
        // A pre-flight check, reported per key: the task itself decides
        // whether its errors are worth retrying.
        for problem in spec.plugin.check_external(&spec.props).await {
            let scrub = secret_values(&rt.registry, &spec.props);
            tracing::error!(connector = %spec.name, "{}", scrub_secrets(&problem.to_string(), &scrub));
        }
        let task_configs = Runtime::task_configs(&spec);
        let initial = rt
            .connectors
            .get(&spec.name)
            .map(|c| c.target)
            .or(Some(TargetState::Running));
        if let Err(e) = rt
            .cluster
            .write(ConfigChange::Put {
                name: spec.name.clone(),
                props: spec.props.clone(),
                task_configs,
                initial,
                remember: false,
            })
            .await
        {
            return Err(WorkerError::Kafka(e.to_string()));
        }
    }
    if let Err(e) = rt.sync().await {
        return Err(WorkerError::Kafka(e.to_string()));
    }
    // Only now: a group's assignments start tasks of the connectors just
    // read.
    let id = rt.worker_id();
    rt.cluster
        .start(&id)
        .await
        .map_err(|e| WorkerError::Kafka(format!("{e:#}")))?;

    let mut commit_tick = tokio::time::interval(
        config
            .offset_flush_interval
            .max(std::time::Duration::from_millis(1)),
    );
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    commit_tick.tick().await;
    // How soon a worker sees another's config change.
    let mut config_tick = tokio::time::interval(CONFIG_POLL);
    config_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox_open = true;
    let mut outcome: Result<(), WorkerError> = Ok(());
    let distributed = rt.cluster.is_distributed();
    let mut leftover_tick = tokio::time::interval(
        config
            .summary_interval
            .unwrap_or(leftovers::DEFAULT_CHECK_INTERVAL),
    );
    leftover_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    leftover_tick.tick().await;
    loop {
        tokio::select! {
            _ = leftover_tick.tick() => rt.leftovers.check(),
            _ = shutdown.cancelled() => {
                tracing::info!("stopping: shutdown requested");
                break;
            }
            Some(ev) = events.recv() => {
                if rt.connectors.get(&ev.connector).is_some_and(|c| c.generation == ev.generation) {
                    rt.publish(&ev.connector).await;
                }
                if stop_on_task_failure {
                    let failures = rt.failed();
                    if !failures.is_empty() {
                        tracing::error!("a task failed and no REST listener can restart it: stopping");
                        outcome = Err(WorkerError::TaskFailed(failures));
                        break;
                    }
                }
            }
            ev = rt.cluster.next_event() => match ev {
                ClusterEvent::Assigned => {
                    if let Err(e) = rt.sync().await {
                        tracing::warn!("{e}");
                    }
                    rt.reconcile().await;
                }
                ClusterEvent::Revoked(release) => {
                    // The partitions go to other workers only after their
                    // tasks stopped here and their offsets are committed.
                    rt.reconcile().await;
                    if let Err(e) = rt.committer.lock().await.commit().await {
                        tracing::error!("committing offsets before a rebalance: {e}");
                    }
                    release();
                }
                ClusterEvent::Lost => {
                    let f = "the worker group's consumer stopped: this worker can no longer take part in the group".to_string();
                    tracing::error!("{f}");
                    outcome = Err(WorkerError::TaskFailed(vec![f]));
                    break;
                }
            },
            _ = config_tick.tick(), if distributed => {
                if let Err(e) = rt.sync().await {
                    tracing::warn!("{e}");
                }
            }
            cmd = inbox.recv(), if inbox_open => match cmd {
                Some(cmd) => rt.handle(cmd).await,
                None => inbox_open = false,
            },
            _ = commit_tick.tick() => {
                if let Err(e) = rt.committer.lock().await.commit().await {
                    // Retried at the next interval; sources are not told
                    // about offsets that are not durable.
                    tracing::error!("committing offsets: {e}");
                }
            }
        }
    }
    // Requests arriving from now on are answered "not running".
    drop(inbox);
    // Stopped with tasks still failed: the worker's result says so (a
    // supervisor sees a non-zero exit), whatever was restarted before.
    if outcome.is_ok() {
        let failures = rt.failed();
        if !failures.is_empty() {
            outcome = Err(WorkerError::TaskFailed(failures));
        }
    }

    // Orderly stop: every task stops (sources commit what was delivered,
    // sinks write and commit what they took), then the final commit.
    rt.stop_all.cancel();
    let grace = config.task_shutdown_timeout;
    let mut joins = Vec::new();
    for (name, c) in rt.connectors.iter_mut() {
        for (id, t) in c.tasks.iter_mut() {
            if let Some(h) = t.handle.take() {
                joins.push(join_or_abort(
                    h,
                    grace * 2,
                    format!("connector '{name}' task {id}"),
                ));
            }
        }
    }
    futures::future::join_all(joins).await;
    if let Err(e) = rt.committer.lock().await.commit().await {
        tracing::error!("final offset commit: {e}");
        if outcome.is_ok() {
            outcome = Err(WorkerError::Offsets(e));
        }
    }
    rt.cluster.close().await;
    if outcome.is_ok() {
        tracing::info!("worker stopped");
    }
    outcome
}

/// How often a distributed worker reads the config topic for changes made
/// through other workers.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(1);
