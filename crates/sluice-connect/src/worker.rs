//! The standalone worker: validates everything up front, starts the sink
//! tasks, then the source tasks, commits offsets periodically, and on
//! shutdown (or the first task failure) stops sources, lets their records
//! drain into the sinks, flushes the sinks and commits what was delivered.

use std::sync::{Arc, RwLock};

use sluice_core::config::Props;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config_files::ConnectorFile;
use crate::connector_config::{validate_connectors, ConfigReport, ConnectorSpec};
use crate::offset_file::{OffsetFileError, OffsetStore};
use crate::registry::Registry;
use crate::sink_driver::FlushPolicy;
use crate::worker_config::WorkerConfig;

mod control;

pub(crate) use control::{scrub_secrets, secret_values};
pub use control::{
    ConnectorInfo, ConnectorStatus, ControlError, OffsetChange, StateInfo, TargetState, TaskId,
    TaskInfo, TaskStatus, WorkerHandle,
};

/// Why the worker did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid (nothing was started).
    #[error("{0}")]
    Config(#[from] ConfigReport),
    /// The offset file could not be read or written.
    #[error(transparent)]
    Offsets(#[from] OffsetFileError),
    /// The Kafka cluster of `bootstrap.servers` could not be reached.
    #[error("Kafka transport: {0}")]
    Kafka(String),
    /// One or more tasks failed (or could not be created); what was
    /// delivered was still committed.
    #[error("{} task failure{}:\n  - {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  - "))]
    TaskFailed(Vec<String>),
}

/// A validated standalone worker, ready to run.
pub struct Worker {
    config: WorkerConfig,
    connectors: Vec<ConnectorSpec>,
    offsets: Option<OffsetStore>,
    flush_policy: FlushPolicy,
    registry: Registry,
    stop_on_task_failure: bool,
    worker_id: Arc<RwLock<String>>,
    commands: mpsc::Sender<control::Command>,
    inbox: mpsc::Receiver<control::Command>,
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
    /// `registry` (all errors reported together, warnings logged) and loads
    /// the offset file when one is configured.
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
        let offsets = config
            .offset_file
            .as_deref()
            .map(OffsetStore::load)
            .transpose()?;
        // Requests wait for the worker's loop; a small bound is enough since
        // each caller waits for its answer.
        let (commands, inbox) = mpsc::channel(64);
        // A worker of a group keeps serving its other tasks when one fails,
        // as Kafka Connect's do: the failure shows in the task's status.
        let stop_on_task_failure = config.distributed.is_none();
        Ok(Worker {
            config,
            connectors: specs,
            offsets,
            flush_policy: FlushPolicy::default(),
            registry: registry.clone(),
            stop_on_task_failure,
            worker_id: Arc::new(RwLock::new("sluice:standalone".to_string())),
            commands,
            inbox,
        })
    }

    /// The validated connectors.
    pub fn connectors(&self) -> &[ConnectorSpec] {
        &self.connectors
    }

    /// Whether the first task failure stops the whole worker (the default,
    /// so a worker nobody watches does not run on half broken). With false
    /// a failed task is reported FAILED in its status, as Kafka Connect
    /// does, and can be restarted through the [`WorkerHandle`].
    pub fn set_stop_on_task_failure(&mut self, stop: bool) {
        self.stop_on_task_failure = stop;
    }

    /// The `worker_id` shown in statuses (`<host>:<port>` of the REST
    /// listener).
    pub fn set_worker_id(&mut self, id: impl Into<String>) {
        *self
            .worker_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id.into();
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

    /// Changes when sink tasks flush (default: 1 s or 10000 records).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.flush_policy = policy;
    }

    /// Runs until `shutdown` is cancelled (Ok) or a task fails (Err after
    /// the orderly stop; see [`Worker::set_stop_on_task_failure`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        control::run(self, shutdown).await
    }
}
