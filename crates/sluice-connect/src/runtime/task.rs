//! One task's life: a supervisor creates the task, connects it to the
//! transport and runs it; when it fails with a
//! [transient](sluice_core::error::ErrorKind::Transient) error it is
//! restarted after a backoff, within its connector's [`RetryPolicy`], and
//! shows `RESTARTING` meanwhile; a definite error, or a spent budget, leaves
//! it `FAILED` with the message until it is restarted through the API. The
//! budget and the backoff are given back whenever the task reports itself
//! healthy again, so every outage gets the whole budget. A task that was
//! never healthy (a wrong port, a host that does not exist) gets only a few
//! attempts: a worker should say soon that its config cannot work.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_core::config::Props;
use sluice_core::connector::{
    ConnectorKind, OffsetWriter, RetryPolicy, SinkContext, SourceContext, TaskReporter,
};
use sluice_core::error::{definite, ErrorKind};
use sluice_core::record::SourceOffset;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::committer::{CommitSource, Committer};
use crate::connector_config::ConnectorSpec;
use crate::delivery::DeliveryTracker;
use crate::error_handling::ErrorHandler;
use crate::runtime::figures::TaskFigures;
use crate::sink_driver::{FlushPolicy, SinkDriver};
use crate::source_sender::SourceSender;
use crate::topics::ActiveTopics;
use crate::transport::kafka::KafkaClients;
use crate::transport::{SinkInputSpec, SourceOutput, SourceOutputSpec, Transport};

/// Restarts in a row of a task that never reported itself healthy.
const NEVER_HEALTHY_RETRIES: u32 = 3;
/// The first backoff.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// A task's state as its supervisor last set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Running (or starting).
    Running,
    /// Failed with a transient error; restarting after a backoff.
    Restarting(String),
    /// Failed for good (until restarted through the API).
    Failed(String),
    /// Ended on its own (a source that had nothing more to do).
    Finished,
}

/// Told whenever a task's state changes.
#[derive(Debug, Clone)]
pub(crate) struct TaskEvent {
    pub connector: String,
    pub generation: u64,
}

/// A running task as the runtime holds it.
pub(crate) struct TaskRun {
    pub props: Props,
    pub figures: Arc<TaskFigures>,
    pub state: Arc<Mutex<TaskState>>,
    pub stop: CancellationToken,
    pub handle: Option<JoinHandle<()>>,
}

impl TaskRun {
    pub(crate) fn state(&self) -> TaskState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything a task's supervisor needs.
pub(crate) struct TaskEnv {
    pub spec: ConnectorSpec,
    pub task_id: u32,
    pub tasks: u32,
    pub props: Props,
    pub generation: u64,
    pub transport: Arc<dyn Transport>,
    pub committer: Arc<tokio::sync::Mutex<Committer>>,
    /// Read the offset store again before a source task starts (another
    /// worker may have run it until now).
    pub reload_offsets: bool,
    pub dlq: Option<KafkaClients>,
    pub active: Arc<ActiveTopics>,
    pub paused: watch::Receiver<bool>,
    pub policy: FlushPolicy,
    pub grace: Duration,
    pub events: mpsc::UnboundedSender<TaskEvent>,
    pub figures: Arc<TaskFigures>,
    /// How often a snapshot's progress and a streaming summary are logged.
    pub progress: (Duration, Option<Duration>),
}

/// Starts task `env.task_id`; its run.
pub(crate) fn start(env: TaskEnv, stop: CancellationToken) -> TaskRun {
    let state = Arc::new(Mutex::new(TaskState::Running));
    let run = TaskRun {
        props: env.props.clone(),
        figures: Arc::clone(&env.figures),
        state: Arc::clone(&state),
        stop: stop.clone(),
        handle: None,
    };
    let handle = tokio::spawn(supervise(env, state, stop));
    TaskRun {
        handle: Some(handle),
        ..run
    }
}

fn label(env: &TaskEnv) -> String {
    let kind = match env.spec.kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    };
    format!("{kind} connector '{}' task {}", env.spec.name, env.task_id)
}

async fn supervise(env: TaskEnv, state: Arc<Mutex<TaskState>>, stop: CancellationToken) {
    let set = |s: TaskState| {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        if *st != s {
            *st = s;
            let _ = env.events.send(TaskEvent {
                connector: env.spec.name.clone(),
                generation: env.generation,
            });
        }
    };
    let label = label(&env);
    let policy: RetryPolicy = env.spec.plugin.retry_policy(&env.spec.props);
    let mut attempt = 0u32;
    let mut backoff = FIRST_BACKOFF;
    let mut ever_healthy = false;
    loop {
        set(TaskState::Running);
        tracing::info!("starting {label}");
        let reporter = TaskReporter::new();
        let attempt_stop = stop.child_token();
        let result = match env.spec.kind {
            ConnectorKind::Source => run_source(&env, &reporter, &attempt_stop).await,
            ConnectorKind::Sink => run_sink(&env, &reporter, &attempt_stop).await,
        };
        if reporter.take_healthy() {
            ever_healthy = true;
            attempt = 0;
            backoff = FIRST_BACKOFF;
        }
        if stop.is_cancelled() {
            match result {
                Ok(()) => tracing::debug!("{label} stopped"),
                Err(e) => tracing::warn!("{label} failed while stopping: {e:#}"),
            }
            return;
        }
        let e = match result {
            Ok(()) => {
                tracing::info!("{label} finished");
                set(TaskState::Finished);
                return;
            }
            Err(e) => e,
        };
        let trace = format!("{label} failed: {e:#}");
        let budget = if ever_healthy {
            policy.max_retries
        } else {
            Some(
                policy
                    .max_retries
                    .map_or(NEVER_HEALTHY_RETRIES, |m| m.min(NEVER_HEALTHY_RETRIES)),
            )
        };
        if ErrorKind::is_transient(&e) && budget.is_none_or(|m| attempt < m) {
            attempt += 1;
            tracing::warn!(
                "{trace}; restarting it in {} ms (attempt {attempt}{})",
                backoff.as_millis(),
                budget.map_or_else(String::new, |m| format!(" of {m}"))
            );
            set(TaskState::Restarting(trace));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(policy.max_backoff.max(FIRST_BACKOFF));
            continue;
        }
        let why = if ErrorKind::is_transient(&e) {
            format!(
                "{trace} (gave up after {attempt} restart{}; fix the cause, then POST /connectors/{}/restart?includeTasks=true&onlyFailed=true)",
                if attempt == 1 { "" } else { "s" },
                env.spec.name
            )
        } else {
            trace
        };
        tracing::error!("{why}");
        set(TaskState::Failed(why));
        return;
    }
}

/// Stores offsets at once through the worker's committer.
struct StoreNow {
    committer: Arc<tokio::sync::Mutex<Committer>>,
    connector: String,
}

#[async_trait::async_trait]
impl OffsetWriter for StoreNow {
    async fn store_now(&self, offset: &SourceOffset) -> anyhow::Result<()> {
        let mut c = self.committer.lock().await;
        c.store_now(&self.connector, offset)
            .await
            .map_err(|e| store_error(e, &c.describe()))
    }
}

fn store_error(e: crate::offsets::OffsetStoreError, what: &str) -> anyhow::Error {
    let transient = e.is_transient();
    let e = anyhow::Error::new(e).context(what.to_string());
    if transient {
        sluice_core::error::transient(e)
    } else {
        definite(e)
    }
}

async fn run_source(
    env: &TaskEnv,
    reporter: &TaskReporter,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = &env.spec;
    let mut task = spec.plugin.create_source_task(&env.props)?;
    let tracker = Arc::new(DeliveryTracker::new());
    env.figures.attach(Arc::clone(&tracker));
    let telemetry = Arc::clone(&env.figures.source);
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Default::default();
    let failed = CancellationToken::new();
    let on_failure = {
        let (failure, failed) = (Arc::clone(&failure), failed.clone());
        Box::new(move |e: anyhow::Error| {
            *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            failed.cancel();
        })
    };
    let output: Arc<dyn SourceOutput> = Arc::from(
        env.transport
            .source_output(SourceOutputSpec {
                connector: spec.name.clone(),
                task_id: env.task_id,
                props: spec.props.clone(),
                tracker: Arc::clone(&tracker),
                on_failure,
            })
            .await?,
    );
    // Offsets are read after the output exists: an exactly-once output
    // fences the producer of a task that died with its transaction open
    // (aborting it), and until then that transaction holds back what a
    // read_committed reader of the offsets topic may see (KIP-618 reads
    // offsets after fencing too).
    let reader = {
        let mut c = env.committer.lock().await;
        if env.reload_offsets {
            let what = c.describe();
            c.refresh().await.map_err(|e| store_error(e, &what))?;
        }
        c.table().reader(&spec.name)
    };
    let (committed_tx, committed_rx) = watch::channel(None);
    env.committer.lock().await.add_source(
        CommitSource::new(
            spec.name.clone(),
            env.task_id,
            Arc::clone(&tracker),
            committed_tx,
            output.stores_offsets(),
        )
        .with_telemetry(Arc::clone(&telemetry)),
    );
    let sender = SourceSender::new(
        spec.name.clone(),
        env.task_id,
        Arc::clone(&output),
        Arc::clone(&spec.key_converter),
        Arc::clone(&spec.value_converter),
        Arc::clone(&env.active),
    )
    .with_transforms(Arc::clone(&spec.transforms))
    .with_errors(ErrorHandler::for_source(spec, env.task_id))
    .with_pause(env.paused.clone(), stop.clone())
    .with_telemetry(Arc::clone(&telemetry));
    let ctx = SourceContext {
        connector: spec.name.clone(),
        task_id: env.task_id,
        sender: Arc::new(sender),
        offsets: reader,
        offset_writer: Arc::new(StoreNow {
            committer: Arc::clone(&env.committer),
            connector: spec.name.clone(),
        }),
        reporter: reporter.clone(),
        telemetry: Arc::clone(&telemetry),
        committed: committed_rx,
        shutdown: stop.clone(),
    };
    // The kafka signal channel, when the connector asks for it, reads for
    // as long as the task runs.
    let signals_stop = stop.child_token();
    let _signals_guard = signals_stop.clone().drop_guard();
    match crate::signal_channel::KafkaChannel::from_props(&spec.props) {
        Ok(Some(channel)) => {
            tokio::spawn(channel.run(spec.name.clone(), signals_stop));
        }
        Ok(None) => {}
        Err(e) => return Err(definite(e)),
    }
    let _progress = crate::runtime::progress::spawn(
        label(env),
        Arc::clone(&telemetry),
        env.progress.0,
        env.progress.1,
    );
    let result = tokio::select! {
        r = task.run(ctx) => r,
        _ = failed.cancelled() => Ok(()),
    };
    // Whatever was sent is delivered (or failed) before the last commit.
    output.close(env.grace).await;
    if tracker.delivered_up_to() > 0 {
        // It got records through: an outage after this is a new one.
        reporter.healthy();
    }
    {
        let mut c = env.committer.lock().await;
        if let Err(e) = c.commit().await {
            tracing::error!(
                "source connector '{}' task {}: committing its offsets: {e}",
                spec.name,
                env.task_id
            );
        }
        c.remove_source(&spec.name, env.task_id);
    }
    let delivery_failure = failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (result, delivery_failure) {
        (_, Some(e)) => Err(e),
        (r, None) => r,
    }
}

async fn run_sink(
    env: &TaskEnv,
    reporter: &TaskReporter,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = &env.spec;
    let subscription = spec.subscription.clone().ok_or_else(|| {
        definite(anyhow::anyhow!(
            "sink connector '{}' has neither topics nor topics.regex",
            spec.name
        ))
    })?;
    let ctx = SinkContext {
        connector: spec.name.clone(),
        task_id: env.task_id,
        key_converter: Arc::clone(&spec.key_converter),
        value_converter: Arc::clone(&spec.value_converter),
        reporter: reporter.clone(),
        telemetry: Arc::clone(&env.figures.sink),
    };
    let task = spec.plugin.create_sink_task(&env.props, ctx)?;
    // What an earlier attempt read and did not make durable is read again.
    env.figures
        .sink
        .pending
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let input = env
        .transport
        .sink_input(SinkInputSpec {
            connector: spec.name.clone(),
            task_id: env.task_id,
            tasks: env.tasks,
            subscription,
            props: spec.props.clone(),
        })
        .await?;
    SinkDriver {
        connector: spec.name.clone(),
        task_id: env.task_id,
        task,
        input,
        stop: stop.clone(),
        policy: env.policy,
        key_converter: Arc::clone(&spec.key_converter),
        value_converter: Arc::clone(&spec.value_converter),
        transforms: (!spec.transforms.is_empty()).then(|| Arc::clone(&spec.transforms)),
        paused: Some(env.paused.clone()),
        errors: ErrorHandler::for_sink(spec, env.task_id, env.dlq.as_ref()),
        active: Arc::clone(&env.active),
        reporter: reporter.clone(),
        telemetry: Arc::clone(&env.figures.sink),
        stats_file: spec
            .props
            .get(crate::sink_driver::STATS_FILE)
            .map(|p| std::path::PathBuf::from(p.trim())),
    }
    .run()
    .await
}
