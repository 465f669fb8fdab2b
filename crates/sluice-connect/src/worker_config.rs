//! The worker configuration (`connect-standalone.properties`): Kafka
//! Connect's key names and defaults, plus Sluice's `sluice.*` queue bounds.

use std::path::PathBuf;
use std::time::Duration;

use sluice_core::config::{ConfigError, ConfigErrors, Props};

/// The converter Kafka Connect workers use when none is configured.
pub const DEFAULT_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";

/// Where an in-process topic's records wait for a sink task: bounded by count
/// and by bytes so a slow sink slows the sources instead of growing memory.
pub const DEFAULT_QUEUE_MAX_RECORDS: usize = 8192;
/// See [`DEFAULT_QUEUE_MAX_RECORDS`].
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

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
    /// `sluice.queue.max.records`: per sink task queue bound.
    pub queue_max_records: usize,
    /// `sluice.queue.max.bytes`: per sink task queue bound.
    pub queue_max_bytes: usize,
    /// `key.converter` and its options.
    pub key_converter: ConverterSpec,
    /// `value.converter` and its options.
    pub value_converter: ConverterSpec,
    /// With `bootstrap.servers`: the Kafka transport's client settings
    /// (None: the in-process transport).
    pub kafka: Option<sluice_kafka::KafkaConfig>,
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
    "rest.basic.auth.user",
    "rest.basic.auth.password",
    "sluice.queue.max.records",
    "sluice.queue.max.bytes",
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

fn positive(props: &Props, key: &str, default: usize, errors: &mut Vec<ConfigError>) -> usize {
    match props.get(key) {
        None => default,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                errors.push(ConfigError::new(
                    key,
                    Some(v),
                    "Expected a positive integer",
                ));
                default
            }
        },
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
        let task_shutdown_timeout = non_negative_ms(
            props,
            "task.shutdown.graceful.timeout.ms",
            5_000,
            &mut errors,
        );
        let queue_max_records = positive(
            props,
            "sluice.queue.max.records",
            DEFAULT_QUEUE_MAX_RECORDS,
            &mut errors,
        );
        let queue_max_bytes = positive(
            props,
            "sluice.queue.max.bytes",
            DEFAULT_QUEUE_MAX_BYTES,
            &mut errors,
        );
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
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok((
            WorkerConfig {
                offset_file,
                offset_flush_interval,
                offset_flush_timeout,
                task_shutdown_timeout,
                queue_max_records,
                queue_max_bytes,
                key_converter,
                value_converter,
                kafka,
            },
            warnings,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> Props {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafka_connects() {
        let (w, warnings) = WorkerConfig::from_props(&Props::new()).expect("empty is valid");
        assert!(warnings.is_empty());
        assert_eq!(w.offset_flush_interval, Duration::from_millis(60_000));
        assert_eq!(w.key_converter.class, DEFAULT_CONVERTER);
        assert_eq!(w.value_converter.class, DEFAULT_CONVERTER);
        assert!(w.offset_file.is_none());
        assert_eq!(w.queue_max_records, DEFAULT_QUEUE_MAX_RECORDS);
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
            ("sluice.queue.max.records", "0"),
        ]))
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("2 configuration errors"), "{err}");
        assert!(err.contains("'offset.flush.interval.ms'"), "{err}");
        assert!(err.contains("'sluice.queue.max.records'"), "{err}");
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
}
