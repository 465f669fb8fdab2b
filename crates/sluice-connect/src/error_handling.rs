//! Kafka Connect's error handling for connectors (KIP-298): what happens
//! when a record cannot be converted or transformed, or a sink task cannot
//! write.
//!
//! A connector configures it with the `errors.*` keys ([`ErrorPolicy`]):
//!
//! ```properties
//! errors.tolerance=all                    # none (default): the first bad record fails the task
//! errors.retry.timeout=30000              # retry a failing put for 30 s (0: never, -1: forever)
//! errors.retry.delay.max.ms=60000         # backoff 300 ms, doubling, capped here
//! errors.log.enable=true                  # an ERROR line per failed record
//! errors.log.include.messages=true        # ... with its key and value
//! errors.deadletterqueue.topic.name=dlq   # sinks over Kafka: keep the failed record there
//! errors.deadletterqueue.topic.replication.factor=1
//! errors.deadletterqueue.context.headers.enable=true
//! ```
//!
//! Every task has an [`ErrorHandler`]: it reads records with the converters
//! when the connector asked for error handling ([`ErrorHandler::check_record`]),
//! reports failed records (log line, dead letter queue, counters) and decides
//! whether the task goes on ([`ErrorHandler::report_sink`],
//! [`ErrorHandler::report_source`]). A skipped record is never dropped
//! silently: without a dead letter queue and without `errors.log.enable` it
//! still gets a WARN line naming where it was (rate-limited, and counted in
//! [`counts`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sluice_core::config::{ConfigError, Props};
use sluice_core::connector::ConnectorKind;
use sluice_core::converter::{Converter, JSON_CONVERTER_CLASS, STRING_CONVERTER_CLASS};
use sluice_core::record::{Header, Record, SourceOffset};

use crate::connector_config::ConnectorSpec;
use crate::converters::BYTE_ARRAY_CONVERTER;
use crate::transport::kafka::KafkaClients;

/// `errors.tolerance`: `none` or `all`.
pub const TOLERANCE: &str = "errors.tolerance";
/// `errors.retry.timeout`: ms; 0 no retries, -1 forever.
pub const RETRY_TIMEOUT: &str = "errors.retry.timeout";
/// `errors.retry.delay.max.ms`: the longest wait between two retries.
pub const RETRY_DELAY_MAX: &str = "errors.retry.delay.max.ms";
/// `errors.log.enable`.
pub const LOG_ENABLE: &str = "errors.log.enable";
/// `errors.log.include.messages`.
pub const LOG_INCLUDE_MESSAGES: &str = "errors.log.include.messages";
/// `errors.deadletterqueue.topic.name` (sink connectors only).
pub const DLQ_TOPIC: &str = "errors.deadletterqueue.topic.name";
/// `errors.deadletterqueue.topic.replication.factor`.
pub const DLQ_REPLICATION_FACTOR: &str = "errors.deadletterqueue.topic.replication.factor";
/// `errors.deadletterqueue.context.headers.enable`.
pub const DLQ_CONTEXT_HEADERS: &str = "errors.deadletterqueue.context.headers.enable";

/// Every `errors.*` key Kafka Connect defines.
pub const KEYS: &[&str] = &[
    TOLERANCE,
    RETRY_TIMEOUT,
    RETRY_DELAY_MAX,
    LOG_ENABLE,
    LOG_INCLUDE_MESSAGES,
    DLQ_TOPIC,
    DLQ_REPLICATION_FACTOR,
    DLQ_CONTEXT_HEADERS,
];

/// The first wait between retries (Kafka's `RETRIES_DELAY_MIN_MS`); each
/// further retry waits twice as long, up to `errors.retry.delay.max.ms`.
pub const RETRY_DELAY_MIN: Duration = Duration::from_millis(300);

/// `errors.retry.delay.max.ms` when unset.
pub const DEFAULT_RETRY_DELAY_MAX: Duration = Duration::from_millis(60_000);

/// `errors.deadletterqueue.topic.replication.factor` when unset.
pub const DEFAULT_DLQ_REPLICATION_FACTOR: i32 = 3;

/// The context headers a dead letter queue record gets with
/// `errors.deadletterqueue.context.headers.enable=true`, as Kafka's
/// `DeadLetterQueueReporter` names them; every value is a UTF-8 string.
pub mod headers {
    /// The topic the record was consumed from.
    pub const TOPIC: &str = "__connect.errors.topic";
    /// Its partition (decimal).
    pub const PARTITION: &str = "__connect.errors.partition";
    /// Its offset (decimal).
    pub const OFFSET: &str = "__connect.errors.offset";
    /// The connector's name.
    pub const CONNECTOR_NAME: &str = "__connect.errors.connector.name";
    /// The task number (decimal).
    pub const TASK_ID: &str = "__connect.errors.task.id";
    /// The stage that failed, e.g. `VALUE_CONVERTER`.
    pub const STAGE: &str = "__connect.errors.stage";
    /// The class of the converter or transform that failed.
    pub const CLASS_NAME: &str = "__connect.errors.class.name";
    /// The (Kafka Connect) class of the error.
    pub const EXCEPTION_CLASS_NAME: &str = "__connect.errors.exception.class.name";
    /// The error's message.
    pub const EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
    /// The error and its causes, one per line.
    pub const EXCEPTION_STACKTRACE: &str = "__connect.errors.exception.stacktrace";
}

/// Kafka Connect's class of the errors converters and transforms raise.
pub const DATA_EXCEPTION: &str = "org.apache.kafka.connect.errors.DataException";
/// Kafka Connect's class of other task errors.
pub const CONNECT_EXCEPTION: &str = "org.apache.kafka.connect.errors.ConnectException";

/// `errors.tolerance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tolerance {
    /// The first failed record fails the task.
    #[default]
    None,
    /// Failed records are reported and skipped.
    All,
}

/// A sink connector's dead letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// `errors.deadletterqueue.topic.name`.
    pub topic: String,
    /// `errors.deadletterqueue.topic.replication.factor` (-1: the broker's
    /// default), used when the topic is created.
    pub replication_factor: i32,
    /// `errors.deadletterqueue.context.headers.enable`.
    pub context_headers: bool,
}

/// The classes whose failures are reported, for logs and the
/// `__connect.errors.class.name` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageClasses {
    /// The connector's key converter class.
    pub key_converter: String,
    /// The connector's value converter class.
    pub value_converter: String,
    /// Per transform alias, its class.
    pub transforms: HashMap<String, String>,
    /// The connector class (the stage `TASK_PUT` runs it).
    pub connector: String,
}

/// A connector's `errors.*` settings, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPolicy {
    /// `errors.tolerance`.
    pub tolerance: Tolerance,
    /// `errors.retry.timeout`: how long a failing operation is retried;
    /// None retries forever, zero never retries.
    pub retry_timeout: Option<Duration>,
    /// `errors.retry.delay.max.ms`.
    pub retry_delay_max: Duration,
    /// `errors.log.enable`.
    pub log: bool,
    /// `errors.log.include.messages`.
    pub log_messages: bool,
    /// `errors.deadletterqueue.*` (only ever set for sink connectors).
    pub dead_letter_queue: Option<DeadLetterQueue>,
    /// Whether the connector sets any `errors.*` key. Then a sink reads its
    /// records with the converters before `put` even without transforms,
    /// so a record they cannot read reaches this policy instead of the
    /// task; without any, records reach `put` untouched (no extra cost).
    pub configured: bool,
    /// Who runs each stage.
    pub classes: StageClasses,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            tolerance: Tolerance::None,
            retry_timeout: Some(Duration::ZERO),
            retry_delay_max: DEFAULT_RETRY_DELAY_MAX,
            log: false,
            log_messages: false,
            dead_letter_queue: None,
            configured: false,
            classes: StageClasses::default(),
        }
    }
}

fn parse_bool(props: &Props, key: &str, errors: &mut Vec<ConfigError>) -> bool {
    match props.get(key) {
        None => false,
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => {
                errors.push(ConfigError::new(
                    key,
                    Some(v),
                    "Expected a boolean: true or false",
                ));
                false
            }
        },
    }
}

/// Whether `name` is a legal Kafka topic name (Kafka's `Topic.validate`).
fn valid_topic_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err("a topic may not be named '.' or '..'".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "a topic name is at most 249 characters long, this one has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "a topic name may contain only ASCII letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// The full class name of a converter given by class or alias (what Kafka
/// would report as the executing class).
pub fn converter_class(given: &str) -> String {
    let g = given.trim();
    if g == JSON_CONVERTER_CLASS
        || ["JsonConverter", "Json"].contains(&g)
        || g.eq_ignore_ascii_case("json")
    {
        JSON_CONVERTER_CLASS.to_string()
    } else if g == STRING_CONVERTER_CLASS
        || ["StringConverter", "String"].contains(&g)
        || g.eq_ignore_ascii_case("string")
    {
        STRING_CONVERTER_CLASS.to_string()
    } else if g == "ByteArrayConverter" {
        BYTE_ARRAY_CONVERTER.to_string()
    } else {
        g.to_string()
    }
}

/// Per transform alias of `props` (`transforms`), its class: the full name
/// when Sluice implements it, else as configured.
pub fn transform_classes(props: &Props) -> HashMap<String, String> {
    let aliases = props
        .get("transforms")
        .map(|v| sluice_core::config::split_list(v))
        .unwrap_or_default();
    aliases
        .into_iter()
        .filter_map(|alias| {
            let given = props.get(&format!("transforms.{alias}.type"))?.trim();
            let class = crate::transforms::TRANSFORM_CLASSES
                .iter()
                .find(|c| **c == given || c.rsplit('.').next() == Some(given))
                .map_or_else(|| given.to_string(), |c| c.to_string());
            Some((alias, class))
        })
        .collect()
}

impl ErrorPolicy {
    /// Parses the `errors.*` keys of a connector config. Bad values are
    /// pushed to `errors` (each naming its key and value), keys Kafka
    /// Connect does not define to `warnings`; the policy returned then
    /// holds the defaults for the bad keys. `kafka_transport` tells whether
    /// the worker runs over Kafka (a dead letter queue needs it).
    pub fn from_props(
        props: &Props,
        kind: ConnectorKind,
        kafka_transport: bool,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> ErrorPolicy {
        let mut p = ErrorPolicy {
            configured: props.keys().any(|k| k.starts_with("errors.")),
            ..ErrorPolicy::default()
        };
        let mut unknown: Vec<&String> = props
            .keys()
            .filter(|k| k.starts_with("errors.") && !KEYS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            warnings.push(format!(
                "configuration '{k}' is not an error handling setting (known: {})",
                KEYS.join(", ")
            ));
        }
        if let Some(v) = props.get(TOLERANCE) {
            match v.trim().to_ascii_lowercase().as_str() {
                "none" => p.tolerance = Tolerance::None,
                "all" => p.tolerance = Tolerance::All,
                _ => errors.push(ConfigError::new(
                    TOLERANCE,
                    Some(v),
                    "Allowed values are: none, all",
                )),
            }
        }
        if let Some(v) = props.get(RETRY_TIMEOUT) {
            match v.trim().parse::<i64>() {
                Ok(-1) => p.retry_timeout = None,
                Ok(ms) if ms >= 0 => p.retry_timeout = Some(Duration::from_millis(ms as u64)),
                _ => errors.push(ConfigError::new(
                    RETRY_TIMEOUT,
                    Some(v),
                    "Expected milliseconds: 0 (no retries, the default), a positive number, or -1 (retry forever)",
                )),
            }
        }
        if let Some(v) = props.get(RETRY_DELAY_MAX) {
            match v.trim().parse::<i64>() {
                Ok(ms) if ms >= 0 => p.retry_delay_max = Duration::from_millis(ms as u64),
                _ => errors.push(ConfigError::new(
                    RETRY_DELAY_MAX,
                    Some(v),
                    "Expected a non-negative number of milliseconds",
                )),
            }
        }
        p.log = parse_bool(props, LOG_ENABLE, errors);
        p.log_messages = parse_bool(props, LOG_INCLUDE_MESSAGES, errors);
        let context_headers = parse_bool(props, DLQ_CONTEXT_HEADERS, errors);
        let replication_factor = match props.get(DLQ_REPLICATION_FACTOR) {
            None => DEFAULT_DLQ_REPLICATION_FACTOR,
            Some(v) => match v.trim().parse::<i32>() {
                Ok(n) if n == -1 || (1..=i32::from(i16::MAX)).contains(&n) => n,
                _ => {
                    errors.push(ConfigError::new(
                        DLQ_REPLICATION_FACTOR,
                        Some(v),
                        "Expected a positive number of replicas, or -1 (the broker's default)",
                    ));
                    DEFAULT_DLQ_REPLICATION_FACTOR
                }
            },
        };
        let topic = props.get(DLQ_TOPIC).map(|t| t.trim()).unwrap_or("");
        if !topic.is_empty() {
            let raw = props.get(DLQ_TOPIC).map(String::as_str);
            if kind == ConnectorKind::Source {
                errors.push(ConfigError::new(
                    DLQ_TOPIC,
                    raw,
                    "a dead letter queue is for sink connectors only; Kafka Connect rejects it on a source connector (use errors.tolerance and errors.log.enable)",
                ));
            } else if !kafka_transport {
                errors.push(ConfigError::new(
                    DLQ_TOPIC,
                    raw,
                    "a dead letter queue is a Kafka topic and needs the Kafka transport: set bootstrap.servers in the worker properties, or remove this key",
                ));
            } else if let Err(why) = valid_topic_name(topic) {
                errors.push(ConfigError::new(DLQ_TOPIC, raw, why));
            } else {
                p.dead_letter_queue = Some(DeadLetterQueue {
                    topic: topic.to_string(),
                    replication_factor,
                    context_headers,
                });
            }
        }
        p
    }

    /// The wait before the next try of an operation that has failed
    /// `attempt` times (1 after the first failure) since it started failing
    /// `elapsed` ago; None once `errors.retry.timeout` is used up. The
    /// schedule is Kafka's: 300 ms, doubling each time, at most
    /// `errors.retry.delay.max.ms`, never past the timeout.
    pub fn retry_delay(&self, attempt: u32, elapsed: Duration) -> Option<Duration> {
        let remaining = match self.retry_timeout {
            None => None,
            Some(timeout) if elapsed >= timeout => return None,
            Some(timeout) => Some(timeout - elapsed),
        };
        // Past 2^20 the cap applies anyway; the shift must not overflow.
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        let delay = RETRY_DELAY_MIN
            .saturating_mul(factor)
            .min(self.retry_delay_max);
        Some(remaining.map_or(delay, |r| delay.min(r)))
    }

    /// The class running `stage` (for a transform, the one named `alias`).
    pub fn class_of(&self, stage: Stage, alias: Option<&str>) -> String {
        let c = &self.classes;
        match stage {
            Stage::KeyConverter => c.key_converter.clone(),
            Stage::ValueConverter => c.value_converter.clone(),
            Stage::Transformation => alias
                .map(|a| {
                    c.transforms
                        .get(a)
                        .cloned()
                        .unwrap_or_else(|| a.to_string())
                })
                .unwrap_or_default(),
            Stage::TaskPut => c.connector.clone(),
        }
    }
}

/// The step of a record's processing that failed (Kafka's `Stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading or writing the key with the key converter.
    KeyConverter,
    /// Reading or writing the value with the value converter.
    ValueConverter,
    /// A single message transform.
    Transformation,
    /// The sink task's `put`.
    TaskPut,
}

impl Stage {
    /// Kafka's name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::KeyConverter => "KEY_CONVERTER",
            Stage::ValueConverter => "VALUE_CONVERTER",
            Stage::Transformation => "TRANSFORMATION",
            Stage::TaskPut => "TASK_PUT",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a record could not be processed.
#[derive(Debug)]
pub struct Failure {
    /// Where it failed.
    pub stage: Stage,
    /// For [`Stage::Transformation`], the alias of the failing transform.
    pub transform: Option<String>,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure of `stage`.
    pub fn new(stage: Stage, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            stage,
            transform: None,
            error: error.into(),
        }
    }

    /// A failure of transform `alias`.
    pub fn transform(alias: impl Into<String>, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            stage: Stage::Transformation,
            transform: Some(alias.into()),
            error: error.into(),
        }
    }

    /// The Kafka Connect error class this failure stands for.
    pub fn exception_class(&self) -> &'static str {
        match self.stage {
            Stage::KeyConverter | Stage::ValueConverter | Stage::Transformation => DATA_EXCEPTION,
            Stage::TaskPut => CONNECT_EXCEPTION,
        }
    }

    /// The error and its causes as text, first line `<class>: <message>`,
    /// then one `Caused by:` line per cause (what a Java stack trace would
    /// say of it, without frames).
    pub fn trace(&self) -> String {
        let mut out = format!("{}: {}", self.exception_class(), self.error);
        for cause in self.error.chain().skip(1) {
            let _ = write!(out, "\nCaused by: {cause}");
        }
        out
    }
}

/// What went wrong with records of a connector since the process started
/// (Kafka's task error metrics, summed over the connector's tasks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Records that failed a conversion or transform.
    pub record_errors: u64,
    /// Failed records skipped under `errors.tolerance=all`.
    pub records_skipped: u64,
    /// Failures logged under `errors.log.enable`.
    pub errors_logged: u64,
    /// Records written to the dead letter queue.
    pub dlq_produced: u64,
    /// Records the dead letter queue did not take.
    pub dlq_failures: u64,
    /// Retries of failing operations (`put`).
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    record_errors: AtomicU64,
    records_skipped: AtomicU64,
    errors_logged: AtomicU64,
    dlq_produced: AtomicU64,
    dlq_failures: AtomicU64,
    retries: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Counters>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Counters>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn counters_for(connector: &str) -> Arc<Counters> {
    let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(reg.entry(connector.to_string()).or_default())
}

/// The error counts of connector `connector` (all zero when none of its
/// tasks ever ran).
pub fn counts(connector: &str) -> ErrorCounts {
    let reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let Some(c) = reg.get(connector) else {
        return ErrorCounts::default();
    };
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    ErrorCounts {
        record_errors: get(&c.record_errors),
        records_skipped: get(&c.records_skipped),
        errors_logged: get(&c.errors_logged),
        dlq_produced: get(&c.dlq_produced),
        dlq_failures: get(&c.dlq_failures),
        retries: get(&c.retries),
    }
}

/// Lets at most [`WarnGate::BURST`] warnings through per
/// [`WarnGate::WINDOW`], counting the ones held back so the next warning
/// can say how many were not logged.
#[derive(Debug)]
pub struct WarnGate {
    window_start: Option<Instant>,
    in_window: u32,
    held_back: u64,
}

impl Default for WarnGate {
    fn default() -> Self {
        Self::new()
    }
}

impl WarnGate {
    /// Warnings let through per window.
    pub const BURST: u32 = 10;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// A gate with nothing let through yet.
    pub fn new() -> Self {
        WarnGate {
            window_start: None,
            in_window: 0,
            held_back: 0,
        }
    }

    /// Whether a warning at `now` is logged: Some(number of warnings held
    /// back since the last one logged), or None when it is held back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= Self::WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= Self::BURST {
            self.held_back += 1;
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

/// Lossy text of a key or value for a log line.
fn text(data: Option<&[u8]>) -> String {
    match data {
        None => "null".to_string(),
        Some(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn source_offset_text(offset: Option<&Arc<SourceOffset>>) -> String {
    offset.map_or_else(
        || "none".to_string(),
        |o| serde_json::Value::Object(o.offset.clone()).to_string(),
    )
}

struct Dlq {
    config: DeadLetterQueue,
    clients: Option<KafkaClients>,
}

/// A task's error handling: the connector's [`ErrorPolicy`] with the
/// converters to check records with, the dead letter queue producer and
/// the connector's [`counts`].
pub struct ErrorHandler {
    connector: String,
    task_id: u32,
    kind: ConnectorKind,
    policy: Arc<ErrorPolicy>,
    key_converter: Arc<dyn Converter>,
    value_converter: Arc<dyn Converter>,
    dlq: Option<Dlq>,
    counters: Arc<Counters>,
    gate: Mutex<WarnGate>,
}

impl ErrorHandler {
    /// Whether a skip warning may be logged now (rate-limited): the text
    /// to append, telling how many were held back since the last one.
    fn admit_warning(&self) -> Option<String> {
        let held_back = self
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now())?;
        Some(if held_back > 0 {
            format!(" ({held_back} more skipped records were not logged)")
        } else {
            String::new()
        })
    }

    /// The handler of sink task `task_id` of `spec`; `kafka` (the worker's
    /// clients) writes the dead letter queue.
    pub fn for_sink(spec: &ConnectorSpec, task_id: u32, kafka: Option<&KafkaClients>) -> Self {
        let mut h = Self::new(spec, task_id, ConnectorKind::Sink);
        h.dlq = spec.errors.dead_letter_queue.clone().map(|config| Dlq {
            config,
            clients: kafka.cloned(),
        });
        h
    }

    /// The handler of source task `task_id` of `spec`.
    pub fn for_source(spec: &ConnectorSpec, task_id: u32) -> Self {
        Self::new(spec, task_id, ConnectorKind::Source)
    }

    fn new(spec: &ConnectorSpec, task_id: u32, kind: ConnectorKind) -> Self {
        ErrorHandler {
            connector: spec.name.clone(),
            task_id,
            kind,
            policy: Arc::clone(&spec.errors),
            key_converter: Arc::clone(&spec.key_converter),
            value_converter: Arc::clone(&spec.value_converter),
            dlq: None,
            counters: counters_for(&spec.name),
            gate: Mutex::new(WarnGate::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &ErrorPolicy {
        &self.policy
    }

    fn label(&self) -> String {
        let kind = match self.kind {
            ConnectorKind::Sink => "sink",
            ConnectorKind::Source => "source",
        };
        format!(
            "{kind} connector '{}' task {}",
            self.connector, self.task_id
        )
    }

    /// Whether a sink reads every record with its converters before `put`
    /// (see [`ErrorPolicy::configured`]).
    pub fn validates_records(&self) -> bool {
        self.policy.configured
    }

    /// Whether a failed record's original headers must be kept (for the
    /// dead letter queue).
    pub fn keeps_originals(&self) -> bool {
        self.dlq.is_some()
    }

    /// Reads `r`'s key and value with the connector's converters, as Kafka
    /// Connect does before any sink task sees a record; the record itself
    /// goes to `put` unchanged.
    pub fn check_record(&self, r: &Record) -> Result<(), Failure> {
        self.key_converter
            .to_connect(&r.topic, r.key.as_deref())
            .map_err(|e| Failure::new(Stage::KeyConverter, e))?;
        self.value_converter
            .to_connect(&r.topic, r.value.as_deref())
            .map_err(|e| Failure::new(Stage::ValueConverter, e))?;
        Ok(())
    }

    /// Creates the dead letter queue topic when missing (1 partition, the
    /// configured replication factor), as Kafka Connect does when a task
    /// starts. Nothing to do without a dead letter queue.
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let Some(dlq) = &self.dlq else {
            return Ok(());
        };
        let clients = dlq.clients.as_ref().with_context(|| {
            format!(
                "{}: dead letter queue '{}' configured, but the worker has no Kafka connection (bootstrap.servers)",
                self.label(),
                dlq.config.topic
            )
        })?;
        let state = clients
            .admin
            .ensure_topic(&dlq.config.topic, 1, dlq.config.replication_factor, &[])
            .await
            .with_context(|| {
                format!(
                    "{}: creating the dead letter queue topic '{}' (replication factor {})",
                    self.label(),
                    dlq.config.topic,
                    dlq.config.replication_factor
                )
            })?;
        tracing::debug!(topic = %dlq.config.topic, ?state, "dead letter queue ready");
        Ok(())
    }

    /// Reports sink record `r` (as consumed) that failed: logs it when
    /// `errors.log.enable`, sends it to the dead letter queue when there is
    /// one, counts it. Ok when the task goes on without it
    /// (`errors.tolerance=all`), with the dead letter queue delivery to
    /// await (before the record's offset may be committed, see
    /// [`ErrorHandler::await_dlq`]); Err naming the record when the task
    /// must fail.
    pub async fn report_sink(
        &self,
        r: &Record,
        failure: Failure,
    ) -> anyhow::Result<Option<sluice_kafka::Delivery>> {
        bump(&self.counters.record_errors);
        let class = self
            .policy
            .class_of(failure.stage, failure.transform.as_deref());
        let place = format!(
            "topic '{}' partition {} offset {}",
            r.topic, r.partition, r.offset
        );
        if self.policy.log {
            bump(&self.counters.errors_logged);
            let record = if self.policy.log_messages {
                format!(
                    "{{topic='{}', partition={}, offset={}, timestamp={}, key={}, value={}}}",
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp_ms,
                    text(r.key.as_deref()),
                    text(r.value.as_deref())
                )
            } else {
                format!(
                    "{{topic='{}', partition={}, offset={}, timestamp={}}}",
                    r.topic, r.partition, r.offset, r.timestamp_ms
                )
            };
            tracing::error!(
                connector = %self.connector,
                task = self.task_id,
                stage = failure.stage.name(),
                topic = %r.topic,
                partition = r.partition,
                offset = r.offset,
                "Error encountered in {}. Executing stage '{}' with class '{class}', where consumed record is {record}: {:#}",
                self.label(),
                failure.stage,
                failure.error
            );
        }
        let delivery = match &self.dlq {
            Some(dlq) => Some(self.send_to_dlq(dlq, r, &failure, &class).await?),
            None => None,
        };
        if self.policy.tolerance == Tolerance::None {
            if let Some(d) = delivery {
                // The record is in the dead letter queue before the task
                // fails, so it is there to inspect.
                self.await_dlq(vec![d]).await?;
            }
            let Failure { stage, error, .. } = failure;
            return Err(error.context(format!(
                "{}: Tolerance exceeded in error handler (errors.tolerance=none): stage {stage} ({class}) failed on the record at {place}",
                self.label()
            )));
        }
        bump(&self.counters.records_skipped);
        if !self.policy.log && delivery.is_none() {
            if let Some(also) = self.admit_warning() {
                tracing::warn!(
                    connector = %self.connector,
                    task = self.task_id,
                    topic = %r.topic,
                    partition = r.partition,
                    offset = r.offset,
                    "{}: skipped the record at {place} (errors.tolerance=all): stage {} ({class}) failed: {:#}{also}",
                    self.label(),
                    failure.stage,
                    failure.error
                );
            }
        }
        Ok(delivery)
    }

    async fn send_to_dlq(
        &self,
        dlq: &Dlq,
        r: &Record,
        failure: &Failure,
        class: &str,
    ) -> anyhow::Result<sluice_kafka::Delivery> {
        let clients = dlq.clients.as_ref().with_context(|| {
            format!(
                "{}: cannot write the record at topic '{}' partition {} offset {} to the dead letter queue '{}': the worker has no Kafka connection",
                self.label(),
                r.topic,
                r.partition,
                r.offset,
                dlq.config.topic
            )
        })?;
        let record = self.dlq_record(&dlq.config, r, failure, class);
        clients.producer.send(&record).await.with_context(|| {
            format!(
                "{}: writing the record at topic '{}' partition {} offset {} to the dead letter queue '{}'",
                self.label(),
                r.topic,
                r.partition,
                r.offset,
                dlq.config.topic
            )
        })
    }

    /// The dead letter queue record for `r`: its original key, value,
    /// timestamp and headers, plus the context headers when enabled.
    pub fn dlq_record(
        &self,
        dlq: &DeadLetterQueue,
        r: &Record,
        failure: &Failure,
        class: &str,
    ) -> Record {
        let mut hs = r.headers.clone();
        if dlq.context_headers {
            let context = [
                (headers::TOPIC, r.topic.to_string()),
                (headers::PARTITION, r.partition.to_string()),
                (headers::OFFSET, r.offset.to_string()),
                (headers::CONNECTOR_NAME, self.connector.clone()),
                (headers::TASK_ID, self.task_id.to_string()),
                (headers::STAGE, failure.stage.name().to_string()),
                (headers::CLASS_NAME, class.to_string()),
                (
                    headers::EXCEPTION_CLASS_NAME,
                    failure.exception_class().to_string(),
                ),
                (headers::EXCEPTION_MESSAGE, failure.error.to_string()),
                (headers::EXCEPTION_STACKTRACE, failure.trace()),
            ];
            for (key, value) in context {
                // As Kafka: a record that already went through a dead
                // letter queue keeps its first context rather than getting
                // two values per header.
                if hs.iter().any(|h| h.key == key) {
                    tracing::warn!(
                        "{}: the record at topic '{}' partition {} offset {} already has header '{key}'; not adding another",
                        self.label(),
                        r.topic,
                        r.partition,
                        r.offset
                    );
                    continue;
                }
                hs.push(Header {
                    key: key.to_string(),
                    value: Some(value.into_bytes()),
                });
            }
        }
        Record {
            topic: Arc::from(dlq.topic.as_str()),
            partition: 0,
            offset: 0,
            timestamp_ms: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: hs,
        }
    }

    /// Waits until the dead letter queue stored every record of
    /// `deliveries`; Err (failing the task, so the records' offsets are
    /// never committed) when it did not take one.
    pub async fn await_dlq(&self, deliveries: Vec<sluice_kafka::Delivery>) -> anyhow::Result<()> {
        let topic = self
            .dlq
            .as_ref()
            .map_or("", |d| d.config.topic.as_str())
            .to_string();
        for d in deliveries {
            match d.await {
                Ok(_) => bump(&self.counters.dlq_produced),
                Err(e) => {
                    bump(&self.counters.dlq_failures);
                    return Err(anyhow::Error::new(e).context(format!(
                        "{}: the dead letter queue '{topic}' did not take a failed record; it is not skipped",
                        self.label()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reports a source record for `topic` with source offset `offset`
    /// that failed: logs it when `errors.log.enable` (else a rate-limited
    /// WARN), counts it. Ok when the task goes on without it
    /// (`errors.tolerance=all`; the caller still records its offset as
    /// processed); Err naming the record when the task must fail.
    pub fn report_source(
        &self,
        topic: &str,
        offset: Option<&Arc<SourceOffset>>,
        failure: Failure,
    ) -> anyhow::Result<()> {
        bump(&self.counters.record_errors);
        let class = self
            .policy
            .class_of(failure.stage, failure.transform.as_deref());
        let place = format!(
            "a record for topic '{topic}' (source offset {})",
            source_offset_text(offset)
        );
        if self.policy.tolerance == Tolerance::None {
            if self.policy.log {
                bump(&self.counters.errors_logged);
                tracing::error!(
                    connector = %self.connector,
                    task = self.task_id,
                    "Error encountered in {}. Executing stage '{}' with class '{class}', where source record is {place}: {:#}",
                    self.label(),
                    failure.stage,
                    failure.error
                );
            }
            let Failure { stage, error, .. } = failure;
            return Err(error.context(format!(
                "{}: stage {stage} ({class}) failed on {place}",
                self.label()
            )));
        }
        bump(&self.counters.records_skipped);
        if self.policy.log {
            bump(&self.counters.errors_logged);
            tracing::error!(
                connector = %self.connector,
                task = self.task_id,
                "Error encountered in {}. Executing stage '{}' with class '{class}', where source record is {place}; skipped (errors.tolerance=all): {:#}",
                self.label(),
                failure.stage,
                failure.error
            );
            return Ok(());
        }
        if let Some(also) = self.admit_warning() {
            tracing::warn!(
                connector = %self.connector,
                task = self.task_id,
                "{}: skipped {place} (errors.tolerance=all): stage {} ({class}) failed: {:#}{also}",
                self.label(),
                failure.stage,
                failure.error
            );
        }
        Ok(())
    }

    /// Counts one retry of a failing operation.
    pub fn note_retry(&self) {
        bump(&self.counters.retries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    fn parse(
        kv: &[(&str, &str)],
        kind: ConnectorKind,
        kafka: bool,
    ) -> (ErrorPolicy, Vec<ConfigError>, Vec<String>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let p = ErrorPolicy::from_props(&props(kv), kind, kafka, &mut errors, &mut warnings);
        (p, errors, warnings)
    }

    #[test]
    fn defaults_are_kafkas() {
        let (p, errors, warnings) = parse(&[("name", "x")], ConnectorKind::Sink, true);
        assert!(errors.is_empty() && warnings.is_empty());
        assert_eq!(p, ErrorPolicy::default());
        assert_eq!(p.tolerance, Tolerance::None);
        assert_eq!(p.retry_timeout, Some(Duration::ZERO));
        assert_eq!(p.retry_delay_max, Duration::from_millis(60_000));
        assert!(!p.log && !p.log_messages && !p.configured);
        assert!(p.dead_letter_queue.is_none());
    }

    #[test]
    fn every_key_parses() {
        let (p, errors, warnings) = parse(
            &[
                (TOLERANCE, "ALL"),
                (RETRY_TIMEOUT, "-1"),
                (RETRY_DELAY_MAX, "5000"),
                (LOG_ENABLE, "True"),
                (LOG_INCLUDE_MESSAGES, "true"),
                (DLQ_TOPIC, " dlq-orders "),
                (DLQ_REPLICATION_FACTOR, "-1"),
                (DLQ_CONTEXT_HEADERS, "true"),
            ],
            ConnectorKind::Sink,
            true,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p.tolerance, Tolerance::All);
        assert_eq!(p.retry_timeout, None);
        assert_eq!(p.retry_delay_max, Duration::from_millis(5000));
        assert!(p.log && p.log_messages && p.configured);
        assert_eq!(
            p.dead_letter_queue,
            Some(DeadLetterQueue {
                topic: "dlq-orders".into(),
                replication_factor: -1,
                context_headers: true,
            })
        );
        let (p, errors, _) = parse(&[(RETRY_TIMEOUT, "1500")], ConnectorKind::Source, false);
        assert!(errors.is_empty());
        assert_eq!(p.retry_timeout, Some(Duration::from_millis(1500)));
        assert!(p.configured, "any errors.* key opts in to record checks");
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let (_, errors, _) = parse(
            &[
                (TOLERANCE, "some"),
                (RETRY_TIMEOUT, "-2"),
                (RETRY_DELAY_MAX, "soon"),
                (LOG_ENABLE, "yes"),
                (DLQ_REPLICATION_FACTOR, "0"),
                (DLQ_CONTEXT_HEADERS, "1"),
            ],
            ConnectorKind::Sink,
            true,
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for (key, value) in [
            (TOLERANCE, "some"),
            (RETRY_TIMEOUT, "-2"),
            (RETRY_DELAY_MAX, "soon"),
            (LOG_ENABLE, "yes"),
            (DLQ_REPLICATION_FACTOR, "0"),
            (DLQ_CONTEXT_HEADERS, "1"),
        ] {
            assert!(
                text.iter()
                    .any(|t| t.contains(&format!("'{key}'")) && t.contains(&format!("'{value}'"))),
                "{key}={value} not reported: {text:?}"
            );
        }
        assert_eq!(errors.len(), 6, "{text:?}");
        let (_, errors, _) = parse(&[(DLQ_TOPIC, "bad topic")], ConnectorKind::Sink, true);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains(DLQ_TOPIC), "{}", errors[0]);
    }

    #[test]
    fn dead_letter_queues_are_for_sinks_over_kafka() {
        let (p, errors, _) = parse(&[(DLQ_TOPIC, "dlq")], ConnectorKind::Source, true);
        assert!(p.dead_letter_queue.is_none());
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("sink connectors only"),
            "{}",
            errors[0]
        );
        let (_, errors, _) = parse(&[(DLQ_TOPIC, "dlq")], ConnectorKind::Sink, false);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("bootstrap.servers"),
            "{}",
            errors[0]
        );
        // An empty name means no dead letter queue, anywhere.
        let (p, errors, _) = parse(&[(DLQ_TOPIC, " ")], ConnectorKind::Source, false);
        assert!(errors.is_empty() && p.dead_letter_queue.is_none());
    }

    #[test]
    fn unknown_errors_keys_warn() {
        let (_, errors, warnings) =
            parse(&[("errors.tolerence", "all")], ConnectorKind::Sink, true);
        assert!(errors.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("'errors.tolerence'"),
            "{}",
            warnings[0]
        );
    }

    fn policy(timeout: Option<u64>, max: u64) -> ErrorPolicy {
        ErrorPolicy {
            retry_timeout: timeout.map(Duration::from_millis),
            retry_delay_max: Duration::from_millis(max),
            ..ErrorPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_from_300ms_up_to_the_cap() {
        let p = policy(None, 60_000);
        let ms: Vec<u128> = (1..=10)
            .map(|a| {
                p.retry_delay(a, Duration::ZERO)
                    .expect("forever")
                    .as_millis()
            })
            .collect();
        assert_eq!(
            ms,
            [300, 600, 1200, 2400, 4800, 9600, 19_200, 38_400, 60_000, 60_000]
        );
        // A huge attempt count neither overflows nor passes the cap.
        assert_eq!(
            p.retry_delay(u32::MAX, Duration::from_secs(1 << 30)),
            Some(Duration::from_millis(60_000))
        );
        let small = policy(None, 1000);
        assert_eq!(
            small.retry_delay(3, Duration::ZERO),
            Some(Duration::from_millis(1000))
        );
    }

    #[test]
    fn backoff_stops_at_the_timeout() {
        // Default: no retries at all.
        assert_eq!(ErrorPolicy::default().retry_delay(1, Duration::ZERO), None);
        let p = policy(Some(1000), 60_000);
        assert_eq!(
            p.retry_delay(1, Duration::ZERO),
            Some(Duration::from_millis(300))
        );
        // The wait never goes past the deadline...
        assert_eq!(
            p.retry_delay(3, Duration::from_millis(900)),
            Some(Duration::from_millis(100))
        );
        // ... and once it is reached there is no retry left.
        assert_eq!(p.retry_delay(4, Duration::from_millis(1000)), None);
        assert_eq!(p.retry_delay(4, Duration::from_millis(5000)), None);
    }

    #[test]
    fn the_warn_gate_lets_a_burst_through_and_counts_the_rest() {
        let mut g = WarnGate::new();
        let t0 = Instant::now();
        for _ in 0..WarnGate::BURST {
            assert_eq!(g.admit(t0), Some(0));
        }
        assert_eq!(g.admit(t0), None);
        assert_eq!(g.admit(t0 + Duration::from_millis(10)), None);
        // The next window's first warning says how many were held back.
        assert_eq!(g.admit(t0 + WarnGate::WINDOW), Some(2));
        assert_eq!(g.admit(t0 + WarnGate::WINDOW), Some(0));
    }

    #[test]
    fn stage_names_and_classes() {
        let mut p = ErrorPolicy::default();
        p.classes.value_converter = converter_class("json");
        p.classes.key_converter = converter_class("StringConverter");
        p.classes.transforms = transform_classes(&props(&[
            ("transforms", "ins"),
            ("transforms.ins.type", "InsertField$Value"),
        ]));
        assert_eq!(
            p.class_of(Stage::ValueConverter, None),
            "org.apache.kafka.connect.json.JsonConverter"
        );
        assert_eq!(
            p.class_of(Stage::KeyConverter, None),
            "org.apache.kafka.connect.storage.StringConverter"
        );
        assert_eq!(
            p.class_of(Stage::Transformation, Some("ins")),
            "org.apache.kafka.connect.transforms.InsertField$Value"
        );
        assert_eq!(Stage::ValueConverter.name(), "VALUE_CONVERTER");
        assert_eq!(Stage::TaskPut.name(), "TASK_PUT");
        assert_eq!(
            converter_class("ByteArrayConverter"),
            "org.apache.kafka.connect.converters.ByteArrayConverter"
        );
    }

    #[test]
    fn a_failure_renders_its_causes() {
        let inner = anyhow::anyhow!("unexpected character 'n' at 0");
        let f = Failure::new(
            Stage::ValueConverter,
            inner.context("converting record of topic 't'"),
        );
        let trace = f.trace();
        assert!(trace.starts_with(
            "org.apache.kafka.connect.errors.DataException: converting record of topic 't'"
        ));
        assert!(
            trace.contains("\nCaused by: unexpected character"),
            "{trace}"
        );
    }
}
