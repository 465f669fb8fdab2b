//! The standalone worker: validates everything up front, starts the sink
//! tasks, then the source tasks, commits offsets periodically, and on
//! shutdown (or the first task failure) stops sources, lets their records
//! drain into the sinks, flushes the sinks and commits what was delivered.

use std::sync::Arc;

use sluice_core::config::Props;
use sluice_core::connector::{ConnectorKind, SinkContext, SourceContext};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::committer::{CommitSource, Committer};
use crate::config_files::ConnectorFile;
use crate::connector_config::{validate_connectors, ConfigReport, ConnectorSpec};
use crate::delivery::DeliveryTracker;
use crate::offset_file::{OffsetFileError, OffsetStore};
use crate::registry::Registry;
use crate::sink_driver::{FlushPolicy, SinkDriver};
use crate::transport::{queue, Router, SinkRoute, SourceSender};
use crate::worker_config::WorkerConfig;

/// Why the worker did not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid (nothing was started).
    #[error("{0}")]
    Config(#[from] ConfigReport),
    /// The offset file could not be read or written.
    #[error(transparent)]
    Offsets(#[from] OffsetFileError),
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
        Ok(Worker {
            config,
            connectors: specs,
            offsets,
            flush_policy: FlushPolicy::default(),
        })
    }

    /// The validated connectors.
    pub fn connectors(&self) -> &[ConnectorSpec] {
        &self.connectors
    }

    /// Changes when sink tasks flush (default: 1 s or 10000 records).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.flush_policy = policy;
    }

    /// Runs until `shutdown` is cancelled (Ok) or a task fails (Err after
    /// the orderly stop).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            config,
            connectors,
            offsets,
            flush_policy,
        } = self;
        let mut failures = Vec::new();

        // Sink tasks first: sources must find their queues.
        let sink_stop = CancellationToken::new();
        let mut routes = Vec::new();
        let mut drivers = Vec::new();
        let mut next_index = 0;
        for c in connectors.iter().filter(|c| c.kind == ConnectorKind::Sink) {
            let mut task_configs = c.plugin.task_configs(&c.props, c.tasks_max);
            task_configs.truncate(c.tasks_max);
            if task_configs.is_empty() {
                tracing::warn!(connector = %c.name, "sink connector produced no task configs; it reads nothing");
            }
            let mut tasks = Vec::new();
            for (task_id, props) in task_configs.iter().enumerate() {
                let task_id = task_id as u32;
                let ctx = SinkContext {
                    connector: c.name.clone(),
                    task_id,
                    key_converter: Arc::clone(&c.key_converter),
                    value_converter: Arc::clone(&c.value_converter),
                };
                match c.plugin.create_sink_task(props, ctx) {
                    Ok(task) => {
                        let (tx, rx) = queue(config.queue_max_records, config.queue_max_bytes);
                        tasks.push((next_index, tx));
                        drivers.push(SinkDriver {
                            connector: c.name.clone(),
                            task_id,
                            index: next_index,
                            task,
                            queue: rx,
                            stop: sink_stop.clone(),
                            policy: flush_policy,
                            transforms: c.sink_transforms(),
                        });
                        next_index += 1;
                    }
                    Err(e) => failures.push(format!(
                        "sink connector '{}' task {task_id}: could not start: {e:#}",
                        c.name
                    )),
                }
            }
            if let Some(subscription) = c.subscription.clone() {
                routes.push(SinkRoute {
                    connector: c.name.clone(),
                    subscription,
                    tasks,
                });
            }
        }
        let sink_tasks = next_index;
        let router = Arc::new(Router::new(routes));

        let source_stop = shutdown.child_token();
        let mut sources = Vec::new();
        let mut commit_sources = Vec::new();
        for c in connectors
            .iter()
            .filter(|c| c.kind == ConnectorKind::Source)
        {
            let mut task_configs = c.plugin.task_configs(&c.props, c.tasks_max);
            task_configs.truncate(c.tasks_max);
            let reader = match &offsets {
                Some(store) => store.reader(&c.name),
                None => continue,
            };
            for (task_id, props) in task_configs.iter().enumerate() {
                let task_id = task_id as u32;
                match c.plugin.create_source_task(props) {
                    Ok(task) => {
                        let tracker = Arc::new(DeliveryTracker::new(sink_tasks));
                        let (tx, rx) = watch::channel(None);
                        commit_sources.push(CommitSource::new(
                            c.name.clone(),
                            task_id,
                            Arc::clone(&tracker),
                            tx,
                        ));
                        let ctx = SourceContext {
                            connector: c.name.clone(),
                            task_id,
                            sender: Arc::new(
                                SourceSender::new(
                                    c.name.clone(),
                                    task_id,
                                    Arc::clone(&router),
                                    tracker,
                                    Arc::clone(&c.key_converter),
                                    Arc::clone(&c.value_converter),
                                )
                                .with_transforms(Arc::clone(&c.transforms)),
                            ),
                            offsets: Arc::clone(&reader),
                            committed: rx,
                            shutdown: source_stop.clone(),
                        };
                        sources.push((c.name.clone(), task_id, task, ctx));
                    }
                    Err(e) => failures.push(format!(
                        "source connector '{}' task {task_id}: could not start: {e:#}",
                        c.name
                    )),
                }
            }
        }
        if !failures.is_empty() {
            for f in &failures {
                tracing::error!("{f}");
            }
            return Err(WorkerError::TaskFailed(failures));
        }
        let mut committer = offsets.map(|store| Committer::new(store, commit_sources));

        let mut sink_set = JoinSet::new();
        for d in drivers {
            let label = format!("sink connector '{}' task {}", d.connector, d.task_id);
            tracing::info!("starting {label}");
            sink_set.spawn(async move { (label, d.run().await) });
        }
        let mut source_set = JoinSet::new();
        for (name, task_id, mut task, ctx) in sources {
            let label = format!("source connector '{name}' task {task_id}");
            tracing::info!("starting {label}");
            source_set.spawn(async move {
                let r = task.run(ctx).await;
                (label, r)
            });
        }

        let mut tick = tokio::time::interval(
            config
                .offset_flush_interval
                .max(std::time::Duration::from_millis(1)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::info!("stopping: shutdown requested");
                    break;
                }
                Some(joined) = source_set.join_next() => {
                    match flatten(joined) {
                        Ok(label) => tracing::info!("{label} finished"),
                        Err(f) => { tracing::error!("{f}"); failures.push(f); break; }
                    }
                }
                Some(joined) = sink_set.join_next() => {
                    match flatten(joined) {
                        Ok(label) => tracing::warn!("{label} stopped on its own"),
                        Err(f) => { tracing::error!("{f}"); failures.push(f); break; }
                    }
                }
                _ = tick.tick(), if committer.is_some() => {
                    if let Some(c) = committer.as_mut() {
                        if let Err(e) = c.commit().await {
                            // Retried at the next interval; sources are not
                            // told about offsets that are not durable.
                            tracing::error!("committing offsets: {e}");
                        }
                    }
                }
            }
        }

        // Orderly stop: sources first, then their last records drain into
        // the sinks, which flush; only then the final commit.
        source_stop.cancel();
        let grace = config.task_shutdown_timeout;
        let drained = tokio::time::timeout(grace, async {
            let mut found = Vec::new();
            while let Some(joined) = source_set.join_next().await {
                if let Err(f) = flatten(joined) {
                    found.push(f);
                }
            }
            found
        })
        .await;
        match drained {
            Ok(found) => failures.extend(found),
            Err(_) => {
                tracing::warn!(
                    "source tasks did not stop within task.shutdown.graceful.timeout.ms ({} ms); cancelling them",
                    grace.as_millis()
                );
                source_set.abort_all();
                while source_set.join_next().await.is_some() {}
            }
        }
        sink_stop.cancel();
        while let Some(joined) = sink_set.join_next().await {
            if let Err(f) = flatten(joined) {
                tracing::error!("{f}");
                failures.push(f);
            }
        }
        if let Some(c) = committer.as_mut() {
            if let Err(e) = c.commit().await {
                let f = format!("final offset commit: {e}");
                tracing::error!("{f}");
                failures.push(f);
            }
        }
        if failures.is_empty() {
            tracing::info!("worker stopped");
            Ok(())
        } else {
            Err(WorkerError::TaskFailed(failures))
        }
    }
}

/// A task's outcome as Ok(label) or Err(message naming the task).
fn flatten(
    joined: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> Result<String, String> {
    match joined {
        Ok((label, Ok(()))) => Ok(label),
        Ok((label, Err(e))) => Err(format!("{label} failed: {e:#}")),
        Err(e) if e.is_cancelled() => Err(format!("a task was cancelled: {e}")),
        Err(e) => Err(format!("a task panicked: {e}")),
    }
}
