//! The worker configuration (`connect-standalone.properties`): Kafka
//! Connect's key names and defaults, plus Sluice's `sluice.*` queue bounds.

use std::path::PathBuf;
use std::time::Duration;

use sluice_core::config::{ConfigError, ConfigErrors, Props};

/// The converter Kafka Connect workers use when none is configured.
pub const DEFAULT_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";

/// The file a standalone worker remembers its connectors in: next to its
/// offset file and named after it (`<offsets stem>.connectors.json`), unless
/// `config.storage.file.filename` says otherwise; this name without an
/// offset file.
pub const DEFAULT_CONNECTORS_FILE: &str = "sluice.connectors.json";
/// The in-process transport's log directory: next to the offset file and
/// named after it (`<offsets stem>-log`), unless `local.log.dir` says
/// otherwise; this name without an offset file.
pub const DEFAULT_LOCAL_LOG_DIR: &str = "sluice-log";

/// The in-process transport's local log (worker keys `local.log.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalLogSettings {
    /// `local.log.dir`.
    pub dir: PathBuf,
    /// `local.log.segment.bytes` (default 64 MiB).
    pub segment_bytes: u64,
    /// `local.log.retention.ms` (default one day; -1: no limit).
    pub retention: Option<Duration>,
    /// `local.log.retention.bytes` per topic partition (default 4 GiB; -1:
    /// no limit).
    pub retention_bytes: Option<u64>,
    /// `local.log.max.bytes`: the whole log's limit (default none).
    pub max_bytes: Option<u64>,
}

impl LocalLogSettings {
    /// The log's configuration.
    pub fn log_config(&self) -> sluice_log::LogConfig {
        sluice_log::LogConfig {
            dir: self.dir.clone(),
            segment_bytes: self.segment_bytes,
            retention: self.retention,
            retention_bytes: self.retention_bytes,
            max_bytes: self.max_bytes,
        }
    }
}

/// A converter class and its own properties (prefix removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConverterSpec {
    /// Class name, e.g. `org.apache.kafka.connect.json.JsonConverter`.
    pub class: String,
    /// The `key.converter.`/`value.converter.` properties, prefix removed.
    pub props: Props,
}

impl ConverterSpec {
    /// The converter configured by `<prefix>` (`key.converter` or
    /// `value.converter`) in `props`, if its class is set there.
    pub fn from_props(props: &Props, prefix: &str) -> Option<ConverterSpec> {
        let class = props.get(prefix)?.trim().to_string();
        Some(ConverterSpec {
            class,
            props: prefixed(props, prefix),
        })
    }
}

/// The properties under `<prefix>.`, prefix removed.
pub fn prefixed(props: &Props, prefix: &str) -> Props {
    let dotted = format!("{prefix}.");
    props
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&dotted).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// A parsed worker configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `offset.storage.file.filename`: where standalone mode keeps source offsets.
    pub offset_file: Option<PathBuf>,
    /// `offset.flush.interval.ms`.
    pub offset_flush_interval: Duration,
    /// `offset.flush.timeout.ms`.
    pub offset_flush_timeout: Duration,
    /// `task.shutdown.graceful.timeout.ms`.
    pub task_shutdown_timeout: Duration,
    /// Standalone mode: `config.storage.file.filename`, where connectors
    /// created over the REST API are remembered (next to the offset file
    /// by default).
    pub connectors_file: Option<PathBuf>,
    /// The in-process transport's log (used without `bootstrap.servers`).
    pub local_log: LocalLogSettings,
    /// `key.converter` and its options.
    pub key_converter: ConverterSpec,
    /// `value.converter` and its options.
    pub value_converter: ConverterSpec,
    /// With `bootstrap.servers`: the Kafka transport's client settings
    /// (None: the in-process transport).
    pub kafka: Option<sluice_kafka::KafkaConfig>,
    /// With `group.id`: distributed mode's settings (None: standalone).
    pub distributed: Option<DistributedConfig>,
    /// `sluice.progress.interval.ms`: how often a running snapshot's
    /// progress is logged (default 5 s).
    pub progress_interval: Duration,
    /// `sluice.summary.interval.ms`: how often a streaming source logs a
    /// one-line summary (default 60 s; 0 never).
    pub summary_interval: Option<Duration>,
}

/// Kafka Connect's `exactly.once.source.support` (KIP-618).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExactlyOnceSupport {
    /// `disabled` (default): at-least-once source delivery.
    Disabled,
    /// `preparing`: as disabled (the step of a rolling upgrade in Kafka
    /// Connect; Sluice's workers need no preparation).
    Preparing,
    /// `enabled`: each source task writes its records and offsets in Kafka
    /// transactions.
    Enabled,
}

/// A distributed worker's group and internal topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributedConfig {
    /// `group.id`: workers with the same one share connectors and tasks.
    pub group_id: String,
    /// `config.storage.topic`: connector configs and target states.
    pub config_topic: String,
    /// `offset.storage.topic`: source offsets.
    pub offset_topic: String,
    /// `status.storage.topic`: connector and task states.
    pub status_topic: String,
    /// `config.storage.replication.factor` (-1: the broker's default).
    pub config_replication: i32,
    /// `offset.storage.replication.factor`.
    pub offset_replication: i32,
    /// `status.storage.replication.factor`.
    pub status_replication: i32,
    /// `offset.storage.partitions` (default 25; -1: the broker's default).
    pub offset_partitions: i32,
    /// `status.storage.partitions` (default 5).
    pub status_partitions: i32,
    /// `session.timeout.ms` of the worker group (default 10000).
    pub session_timeout_ms: u64,
    /// `heartbeat.interval.ms` of the worker group (default 3000).
    pub heartbeat_interval_ms: u64,
    /// `exactly.once.source.support`.
    pub exactly_once: ExactlyOnceSupport,
}

impl DistributedConfig {
    fn from_props(
        props: &Props,
        group_id: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<DistributedConfig> {
        let before = errors.len();
        if group_id.trim().is_empty() {
            errors.push(ConfigError::new(
                "group.id",
                Some(group_id),
                "Must not be empty",
            ));
        }
        if !props.contains_key("bootstrap.servers") {
            errors.push(ConfigError::new(
                "group.id",
                Some(group_id),
                "Distributed mode (group.id) needs a Kafka cluster: set bootstrap.servers",
            ));
        }
        let mut topic = |key: &str| match props.get(key).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => {
                errors.push(ConfigError::new(
                    key,
                    props.get(key).map(String::as_str),
                    "Missing required configuration: a distributed worker keeps its state in this topic",
                ));
                String::new()
            }
        };
        let config_topic = topic("config.storage.topic");
        let offset_topic = topic("offset.storage.topic");
        let status_topic = topic("status.storage.topic");
        let mut int = |key: &str, default: i32| -> i32 {
            match props.get(key) {
                None => default,
                Some(v) => match v.trim().parse::<i32>() {
                    Ok(n) if n == -1 || n >= 1 => n,
                    _ => {
                        errors.push(ConfigError::new(
                            key,
                            Some(v),
                            "Expected a positive integer, or -1 for the broker's default",
                        ));
                        default
                    }
                },
            }
        };
        let config_replication = int("config.storage.replication.factor", 3);
        let offset_replication = int("offset.storage.replication.factor", 3);
        let status_replication = int("status.storage.replication.factor", 3);
        let offset_partitions = int("offset.storage.partitions", 25);
        let status_partitions = int("status.storage.partitions", 5);
        let session_timeout_ms =
            non_negative_ms(props, "session.timeout.ms", 10_000, errors).as_millis() as u64;
        let heartbeat_interval_ms =
            non_negative_ms(props, "heartbeat.interval.ms", 3_000, errors).as_millis() as u64;
        let exactly_once = match props
            .get("exactly.once.source.support")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("disabled") => ExactlyOnceSupport::Disabled,
            Some("preparing") => ExactlyOnceSupport::Preparing,
            Some("enabled") => ExactlyOnceSupport::Enabled,
            Some(_) => {
                errors.push(ConfigError::new(
                    "exactly.once.source.support",
                    props.get("exactly.once.source.support").map(String::as_str),
                    "Expected one of: disabled, preparing, enabled",
                ));
                ExactlyOnceSupport::Disabled
            }
        };
        let distinct = [&config_topic, &offset_topic, &status_topic];
        if distinct.iter().all(|t| !t.is_empty())
            && (config_topic == offset_topic
                || config_topic == status_topic
                || offset_topic == status_topic)
        {
            errors.push(ConfigError::new(
                "config.storage.topic",
                Some(&config_topic),
                "config.storage.topic, offset.storage.topic and status.storage.topic must be three different topics",
            ));
        }
        (errors.len() == before).then(|| DistributedConfig {
            group_id: group_id.trim().to_string(),
            config_topic,
            offset_topic,
            status_topic,
            config_replication,
            offset_replication,
            status_replication,
            offset_partitions,
            status_partitions,
            session_timeout_ms,
            heartbeat_interval_ms,
            exactly_once,
        })
    }
}

/// Keys a standalone worker understands (beyond converter prefixes).
const KNOWN: &[&str] = &[
    "bootstrap.servers",
    "offset.storage.file.filename",
    "key.converter",
    "value.converter",
    "header.converter",
    "offset.flush.interval.ms",
    "offset.flush.timeout.ms",
    "task.shutdown.graceful.timeout.ms",
    "plugin.path",
    "listeners",
    "rest.port",
    "rest.host.name",
    "rest.advertised.host.name",
    "rest.advertised.port",
    "rest.advertised.listener",
    "sluice.rest.show.secrets",
    "sluice.rest.enabled",
    "sluice.rest.history.interval.ms",
    "sluice.rest.history.points",
    "sluice.dashboard.file",
    "metrics.listeners",
    "sluice.progress.interval.ms",
    "sluice.summary.interval.ms",
    "rest.basic.auth.user",
    "rest.basic.auth.password",
    "sluice.queue.max.records",
    "sluice.queue.max.bytes",
    "config.storage.file.filename",
    "local.log.dir",
    "local.log.segment.bytes",
    "local.log.retention.ms",
    "local.log.retention.bytes",
    "local.log.max.bytes",
    // Distributed mode.
    "group.id",
    "config.storage.topic",
    "offset.storage.topic",
    "status.storage.topic",
    "config.storage.replication.factor",
    "offset.storage.replication.factor",
    "status.storage.replication.factor",
    "offset.storage.partitions",
    "status.storage.partitions",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "rebalance.timeout.ms",
    "scheduled.rebalance.max.delay.ms",
    "connect.protocol",
    "worker.sync.timeout.ms",
    "worker.unsync.backoff.ms",
    "exactly.once.source.support",
    "connector.client.config.override.policy",
    "client.id",
];

const KNOWN_PREFIXES: &[&str] = &[
    "key.converter.",
    "value.converter.",
    "header.converter.",
    // Kafka client settings (see `sluice_kafka::KafkaConfig`).
    "producer.",
    "consumer.",
    "admin.",
    "ssl.",
    "sasl.",
    "security.",
];

fn non_negative_ms(
    props: &Props,
    key: &str,
    default: u64,
    errors: &mut Vec<ConfigError>,
) -> Duration {
    match props.get(key) {
        None => Duration::from_millis(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                errors.push(ConfigError::new(
                    key,
                    Some(v),
                    "Expected a non-negative integer number of milliseconds",
                ));
                Duration::from_millis(default)
            }
        },
    }
}

/// A byte count or duration with -1 meaning "no limit": None.
fn limit(
    props: &Props,
    key: &str,
    default: Option<u64>,
    errors: &mut Vec<ConfigError>,
) -> Option<u64> {
    match props.get(key).map(|v| v.trim()) {
        None => default,
        Some("-1") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                errors.push(ConfigError::new(
                    key,
                    Some(v),
                    "Expected a positive integer, or -1 for no limit",
                ));
                default
            }
        },
    }
}

/// A path next to the offset file, named after it (`<dir>/<stem><suffix>`),
/// so that workers with offset files of their own in one directory do not
/// share it; `default` when there is no offset file.
fn beside(offset_file: Option<&PathBuf>, suffix: &str, default: &str) -> PathBuf {
    let Some(f) = offset_file else {
        return PathBuf::from(default);
    };
    let stem = f
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sluice".into());
    let name = format!("{stem}{suffix}");
    match f.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

fn path_key(props: &Props, key: &str, errors: &mut Vec<ConfigError>) -> Option<PathBuf> {
    match props.get(key) {
        Some(v) if v.trim().is_empty() => {
            errors.push(ConfigError::new(key, Some(v), "Must not be empty"));
            None
        }
        Some(v) => Some(PathBuf::from(v.trim())),
        None => None,
    }
}

impl WorkerConfig {
    /// Checks worker properties: every error is collected; the returned
    /// strings are warnings (one per unknown key) for the caller to log.
    pub fn from_props(props: &Props) -> Result<(WorkerConfig, Vec<String>), ConfigErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let kafka = match props.get("bootstrap.servers") {
            None => None,
            Some(v) => match sluice_kafka::KafkaConfig::from_worker_props(props) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(ConfigError::new(
                        "bootstrap.servers",
                        Some(v),
                        format!("Kafka client settings: {e}"),
                    ));
                    None
                }
            },
        };
        if props.contains_key("plugin.path") {
            tracing::debug!(
                "worker key 'plugin.path' is ignored: Sluice's connectors are built in"
            );
        }
        let offset_file = match props.get("offset.storage.file.filename") {
            Some(v) if v.trim().is_empty() => {
                errors.push(ConfigError::new(
                    "offset.storage.file.filename",
                    Some(v),
                    "Must not be empty",
                ));
                None
            }
            Some(v) => Some(PathBuf::from(v.trim())),
            None => None,
        };
        let offset_flush_interval =
            non_negative_ms(props, "offset.flush.interval.ms", 60_000, &mut errors);
        let offset_flush_timeout =
            non_negative_ms(props, "offset.flush.timeout.ms", 5_000, &mut errors);
        let progress_interval =
            non_negative_ms(props, "sluice.progress.interval.ms", 5_000, &mut errors)
                .max(Duration::from_millis(100));
        let summary_interval =
            non_negative_ms(props, "sluice.summary.interval.ms", 60_000, &mut errors);
        let summary_interval = (!summary_interval.is_zero()).then_some(summary_interval);
        let task_shutdown_timeout = non_negative_ms(
            props,
            "task.shutdown.graceful.timeout.ms",
            5_000,
            &mut errors,
        );
        for key in ["sluice.queue.max.records", "sluice.queue.max.bytes"] {
            if props.contains_key(key) {
                warnings.push(format!(
                    "worker configuration '{key}' has no effect: records wait in the local log (local.log.*) or in Kafka"
                ));
            }
        }
        let connectors_file =
            path_key(props, "config.storage.file.filename", &mut errors).or_else(|| {
                offset_file.as_ref().map(|_| {
                    beside(
                        offset_file.as_ref(),
                        ".connectors.json",
                        DEFAULT_CONNECTORS_FILE,
                    )
                })
            });
        let local_log = LocalLogSettings {
            dir: path_key(props, "local.log.dir", &mut errors)
                .unwrap_or_else(|| beside(offset_file.as_ref(), "-log", DEFAULT_LOCAL_LOG_DIR)),
            segment_bytes: limit(
                props,
                "local.log.segment.bytes",
                Some(64 << 20),
                &mut errors,
            )
            .unwrap_or(64 << 20),
            retention: limit(
                props,
                "local.log.retention.ms",
                Some(86_400_000),
                &mut errors,
            )
            .map(Duration::from_millis),
            retention_bytes: limit(
                props,
                "local.log.retention.bytes",
                Some(4 << 30),
                &mut errors,
            ),
            max_bytes: limit(props, "local.log.max.bytes", None, &mut errors),
        };
        // Without a class the converter is the default, still configured by
        // the prefixed options (e.g. `value.converter.schemas.enable`).
        let converter = |prefix: &str| {
            ConverterSpec::from_props(props, prefix).unwrap_or_else(|| ConverterSpec {
                class: DEFAULT_CONVERTER.to_string(),
                props: prefixed(props, prefix),
            })
        };
        let key_converter = converter("key.converter");
        let value_converter = converter("value.converter");
        for key in props.keys() {
            if !KNOWN.contains(&key.as_str()) && !KNOWN_PREFIXES.iter().any(|p| key.starts_with(p))
            {
                warnings.push(format!(
                    "worker configuration '{key}' is not known to Sluice and is ignored"
                ));
            }
        }
        let distributed = props
            .get("group.id")
            .and_then(|g| DistributedConfig::from_props(props, g, &mut errors));
        if distributed.is_none() && props.contains_key("exactly.once.source.support") {
            warnings.push(
                "worker configuration 'exactly.once.source.support' applies to distributed mode (group.id) only and is ignored".to_string(),
            );
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok((
            WorkerConfig {
                offset_file,
                offset_flush_interval,
                offset_flush_timeout,
                task_shutdown_timeout,
                connectors_file,
                local_log,
                key_converter,
                value_converter,
                kafka,
                distributed,
                progress_interval,
                summary_interval,
            },
            warnings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    #[test]
    fn defaults_are_kafka_connects() {
        let (w, warnings) = WorkerConfig::from_props(&Props::new()).expect("empty is valid");
        assert!(warnings.is_empty());
        assert_eq!(w.offset_flush_interval, Duration::from_millis(60_000));
        assert_eq!(w.key_converter.class, DEFAULT_CONVERTER);
        assert_eq!(w.value_converter.class, DEFAULT_CONVERTER);
        assert!(w.offset_file.is_none());
        assert_eq!(
            w.local_log.dir,
            std::path::PathBuf::from(DEFAULT_LOCAL_LOG_DIR)
        );
        assert_eq!(w.connectors_file, None);
    }

    #[test]
    fn converter_options_keep_their_prefix_scope() {
        let (w, _) = WorkerConfig::from_props(&props(&[
            ("value.converter.schemas.enable", "false"),
            (
                "key.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
        ]))
        .expect("valid");
        assert_eq!(
            w.key_converter.class,
            "org.apache.kafka.connect.storage.StringConverter"
        );
        assert!(w.key_converter.props.is_empty());
        assert_eq!(w.value_converter.class, DEFAULT_CONVERTER);
        assert_eq!(
            w.value_converter
                .props
                .get("schemas.enable")
                .map(String::as_str),
            Some("false")
        );
    }

    #[test]
    fn errors_name_keys_and_unknown_keys_warn() {
        let err = WorkerConfig::from_props(&props(&[
            ("offset.flush.interval.ms", "soon"),
            ("local.log.max.bytes", "0"),
        ]))
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("2 configuration errors"), "{err}");
        assert!(err.contains("'offset.flush.interval.ms'"), "{err}");
        assert!(err.contains("'local.log.max.bytes'"), "{err}");
        let (_, warnings) = WorkerConfig::from_props(&props(&[
            ("plugin.path", "/opt/plugins"),
            ("group.idd", "x"),
        ]))
        .expect("valid");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("'group.idd'"));
    }

    #[test]
    fn bootstrap_servers_selects_the_kafka_transport() {
        let (w, warnings) = WorkerConfig::from_props(&props(&[
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("producer.linger.ms", "1"),
        ]))
        .expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(w.kafka.expect("kafka").bootstrap(), "127.0.0.1:9092");
        assert!(WorkerConfig::from_props(&Props::new())
            .expect("valid")
            .0
            .kafka
            .is_none());
    }

    #[test]
    fn group_id_selects_distributed_mode_with_kafka_connects_defaults() {
        let base = [
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("group.id", "connect-cluster"),
            ("config.storage.topic", "connect-configs"),
            ("offset.storage.topic", "connect-offsets"),
            ("status.storage.topic", "connect-status"),
        ];
        let (w, warnings) = WorkerConfig::from_props(&props(&base)).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        let d = w.distributed.expect("distributed");
        assert_eq!(d.group_id, "connect-cluster");
        assert_eq!((d.offset_partitions, d.status_partitions), (25, 5));
        assert_eq!(d.config_replication, 3);
        assert_eq!(d.exactly_once, ExactlyOnceSupport::Disabled);

        let err = WorkerConfig::from_props(&props(&[
            ("group.id", "g"),
            ("offset.storage.topic", "t"),
            ("status.storage.topic", "t"),
            ("exactly.once.source.support", "maybe"),
        ]))
        .expect_err("invalid")
        .to_string();
        for key in [
            "'config.storage.topic'",
            "set bootstrap.servers",
            "'exactly.once.source.support'",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }
}
