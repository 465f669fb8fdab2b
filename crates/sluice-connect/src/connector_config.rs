//! Checking every connector configuration before anything starts, so a user
//! sees all problems of all connectors at once, each naming the connector,
//! its file and the key.

use std::collections::HashSet;
use std::sync::Arc;

use sluice_core::config::{closest, split_list, ConfigError, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin};
use sluice_core::converter::Converter;

use crate::config_files::ConnectorFile;
use crate::converters;
use crate::error_handling::{converter_class, transform_classes, ErrorPolicy, StageClasses};
use crate::registry::Registry;
use crate::transforms::TransformChain;
use crate::worker_config::WorkerConfig;

/// Keys the worker itself interprets, exactly.
const WORKER_LEVEL_KEYS: &[&str] = &[
    "name",
    "connector.class",
    "tasks.max",
    "key.converter",
    "value.converter",
    "header.converter",
    "transforms",
    "predicates",
    "topics",
    "topics.regex",
    "config.action.reload",
    "offsets.storage.topic",
];

/// Key families the worker itself interprets.
const WORKER_LEVEL_PREFIXES: &[&str] = &[
    "key.converter.",
    "value.converter.",
    "header.converter.",
    "transforms.",
    "predicates.",
    "errors.",
    "producer.override.",
    "consumer.override.",
    "topic.creation.",
    "exactly.once.",
    "transaction.boundary",
    "sluice.sink.",
    // The kafka signal channel's consumer (the worker runs it).
    "signal.consumer.",
];

/// Whether a connector config key belongs to the worker rather than the
/// connector (so it is never reported as unknown to the connector).
pub fn is_worker_level(key: &str) -> bool {
    WORKER_LEVEL_KEYS.contains(&key) || WORKER_LEVEL_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// All configuration problems found, reported together.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration error{}:\n  - {}", .errors.len(), if .errors.len() == 1 { "" } else { "s" }, .errors.join("\n  - "))]
pub struct ConfigReport {
    /// One line per problem, naming where and which key.
    pub errors: Vec<String>,
}

/// Which topics a sink connector reads.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// `topics`: an explicit list.
    Topics(HashSet<String>),
    /// `topics.regex`: matched against whole topic names, as Java's
    /// `Pattern.matcher(topic).matches()`.
    Regex(regex::Regex),
}

impl Subscription {
    /// Whether the connector reads `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Topics(t) => t.contains(topic),
            Subscription::Regex(r) => r.is_match(topic),
        }
    }
}

/// A validated connector, ready to start.
#[derive(Clone)]
pub struct ConnectorSpec {
    /// `name`.
    pub name: String,
    /// Where its config came from.
    pub origin: String,
    /// The plugin chosen by `connector.class`.
    pub plugin: Arc<dyn ConnectorPlugin>,
    /// Source or sink.
    pub kind: ConnectorKind,
    /// The full connector config.
    pub props: Props,
    /// `tasks.max`.
    pub tasks_max: usize,
    /// For sinks: what it reads.
    pub subscription: Option<Subscription>,
    /// Its key converter.
    pub key_converter: Arc<dyn Converter>,
    /// Its value converter.
    pub value_converter: Arc<dyn Converter>,
    /// Its `transforms` chain (empty when none is configured).
    pub transforms: Arc<TransformChain>,
    /// Its error handling (`errors.*`).
    pub errors: Arc<ErrorPolicy>,
}

impl std::fmt::Debug for ConnectorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSpec")
            .field("name", &self.name)
            .field("class", &self.plugin.class())
            .field("kind", &self.kind)
            .field("tasks_max", &self.tasks_max)
            .finish_non_exhaustive()
    }
}

fn subscription(props: &Props, errors: &mut Vec<ConfigError>) -> Option<Subscription> {
    let topics = props.get("topics").filter(|v| !v.trim().is_empty());
    let regex = props.get("topics.regex").filter(|v| !v.trim().is_empty());
    match (topics, regex) {
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                "topics",
                None,
                "topics and topics.regex are mutually exclusive options, but both are set",
            ));
            None
        }
        (None, None) => {
            errors.push(ConfigError::new(
                "topics",
                None,
                "Must configure one of topics or topics.regex",
            ));
            None
        }
        (Some(t), None) => Some(Subscription::Topics(split_list(t).into_iter().collect())),
        (None, Some(r)) => match regex::Regex::new(&format!("^(?:{})$", r.trim())) {
            Ok(re) => Some(Subscription::Regex(re)),
            Err(e) => {
                errors.push(ConfigError::new(
                    "topics.regex",
                    Some(r),
                    format!("not a valid regular expression: {e}"),
                ));
                None
            }
        },
    }
}

/// Validates one connector; returns the spec (when valid) and warnings.
fn validate_one(
    registry: &Registry,
    worker: &WorkerConfig,
    file: &ConnectorFile,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<ConnectorSpec> {
    let props = &file.props;
    let name = props.get("name").map(|n| n.trim().to_string());
    if name.as_deref().is_none_or(str::is_empty) {
        errors.push(ConfigError::missing("name"));
    }
    let plugin = match props.get("connector.class") {
        None => {
            errors.push(ConfigError::missing("connector.class"));
            None
        }
        Some(c) => registry.lookup(c).map_err(|e| errors.push(e)).ok(),
    };
    let tasks_max = match props.get("tasks.max") {
        None => 1,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                errors.push(ConfigError::new(
                    "tasks.max",
                    Some(v),
                    "Expected a positive integer",
                ));
                1
            }
        },
    };
    let plugin = plugin?;
    let kind = plugin.kind();
    let subscription = match kind {
        ConnectorKind::Sink => subscription(props, errors),
        ConnectorKind::Source => None,
    };
    let def = plugin.config_def();
    // A key a typo away from a known one is almost surely that key
    // misspelt: ignoring it would run with the default (e.g. capture every
    // table), so it is refused.
    let near_miss = |key: &str| -> Option<String> {
        let known = def
            .keys
            .iter()
            .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
            .chain(WORKER_LEVEL_KEYS.iter().copied());
        let max = if key.len() > 12 { 2 } else { 1 };
        closest(key, known, max).first().map(|s| s.to_string())
    };
    let unknown_key = |key: &str, warnings: &mut Vec<String>, errors: &mut Vec<ConfigError>| {
        match near_miss(key) {
            Some(known) => errors.push(ConfigError::new(
                key,
                props.get(key).map(String::as_str),
                format!(
                    "not a configuration of {}; did you mean '{known}'? (a misspelt key would silently fall back to the default, so it is refused)",
                    plugin.class()
                ),
            )),
            None => warnings.push(format!(
                "configuration '{key}' is not used by {}",
                plugin.class()
            )),
        }
    };
    match def.parse(props, &[]) {
        Ok(parsed) => {
            for key in parsed.unknown.iter().filter(|k| !is_worker_level(k)) {
                unknown_key(key, warnings, errors);
            }
            for (alias, canonical) in parsed.aliases_used {
                warnings.push(format!(
                    "configuration '{alias}' is deprecated; use '{canonical}'"
                ));
            }
        }
        Err(e) => {
            // Unknown keys are worth reporting even when the config is
            // rejected: they are often the misspelling behind the error.
            let unknown: Vec<&String> = props
                .keys()
                .filter(|k| def.key(k).is_none() && !is_worker_level(k))
                .collect();
            for key in unknown {
                unknown_key(key, warnings, errors);
            }
            errors.extend(e.0)
        }
    }
    // A plugin's own validation may repeat what its declared keys already
    // reported; each problem is reported once.
    match plugin.validate(props) {
        Ok(w) => {
            for w in w {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        Err(e) => {
            for e in e.0 {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    let transforms = TransformChain::from_props(props)
        .map_err(|e| errors.extend(e))
        .ok();
    warnings.extend(crate::transforms::unused_options(props));
    let mut converter = |prefix: &str, worker_spec, is_key| {
        let (spec, warning) = converters::for_connector(props, worker_spec, prefix);
        warnings.extend(warning);
        converters::build(&spec, is_key)
            .map_err(|e| {
                // The worker's converter is at fault unless the connector chose its own.
                let key = if props.contains_key(prefix) {
                    e.key.clone()
                } else {
                    format!("{} (worker)", e.key)
                };
                errors.push(ConfigError {
                    key,
                    value: e.value,
                    message: e.message,
                })
            })
            .ok()
    };
    let key_converter = converter("key.converter", &worker.key_converter, true);
    let value_converter = converter("value.converter", &worker.value_converter, false);
    let mut policy = ErrorPolicy::from_props(props, kind, worker.kafka.is_some(), errors, warnings);
    if let (Some(dlq), Some(sub)) = (&policy.dead_letter_queue, &subscription) {
        // Its records would be consumed again, and fail again.
        if sub.matches(&dlq.topic) {
            errors.push(ConfigError::new(
                crate::error_handling::DLQ_TOPIC,
                Some(&dlq.topic),
                "the dead letter queue may not be a topic the connector consumes ('topics' or 'topics.regex')",
            ));
        }
    }
    policy.classes = StageClasses {
        key_converter: converter_class(
            &converters::for_connector(props, &worker.key_converter, "key.converter")
                .0
                .class,
        ),
        value_converter: converter_class(
            &converters::for_connector(props, &worker.value_converter, "value.converter")
                .0
                .class,
        ),
        transforms: transform_classes(props),
        connector: plugin.class().to_string(),
    };
    Some(ConnectorSpec {
        name: name?,
        origin: file.path.display().to_string(),
        plugin,
        kind,
        props: props.clone(),
        tasks_max,
        subscription: if kind == ConnectorKind::Sink {
            Some(subscription?)
        } else {
            None
        },
        key_converter: key_converter?,
        value_converter: value_converter?,
        transforms: Arc::new(transforms?),
        errors: Arc::new(policy),
    })
}

/// Checks one connector config with exactly the start-up checks (the
/// offset file requirement aside), returning each problem with its key, and
/// the warnings. What `PUT /connector-plugins/{p}/config/validate` reports.
pub fn validate_config(
    registry: &Registry,
    worker: &WorkerConfig,
    props: &Props,
) -> (Vec<ConfigError>, Vec<String>) {
    let file = ConnectorFile {
        path: std::path::PathBuf::from("REST request"),
        props: props.clone(),
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    validate_one(registry, worker, &file, &mut errors, &mut warnings);
    (errors, warnings)
}

/// Validates all connectors against the registry and worker config. Returns
/// the specs and warnings (one line per unknown key), or every error found.
pub fn validate_connectors(
    registry: &Registry,
    worker: &WorkerConfig,
    files: &[ConnectorFile],
) -> Result<(Vec<ConnectorSpec>, Vec<String>), ConfigReport> {
    let mut report = Vec::new();
    let mut warnings = Vec::new();
    let mut specs = Vec::new();
    let mut names = HashSet::new();
    for file in files {
        let label = format!(
            "connector '{}' ({})",
            file.props.get("name").map(String::as_str).unwrap_or("?"),
            file.path.display()
        );
        let mut errors = Vec::new();
        let mut w = Vec::new();
        let spec = validate_one(registry, worker, file, &mut errors, &mut w);
        warnings.extend(w.into_iter().map(|w| format!("{label}: {w}")));
        report.extend(errors.iter().map(|e| format!("{label}: {e}")));
        if let Some(spec) = spec {
            if errors.is_empty() {
                if !names.insert(spec.name.clone()) {
                    report.push(format!(
                        "{label}: Configuration 'name': another connector is already named '{}'",
                        spec.name
                    ));
                }
                specs.push(spec);
            }
        }
    }
    let has_source = specs.iter().any(|s| s.kind == ConnectorKind::Source)
        || files.iter().any(|f| {
            f.props
                .get("connector.class")
                .and_then(|c| registry.lookup(c).ok())
                .is_some_and(|p| p.kind() == ConnectorKind::Source)
        });
    if has_source && worker.offset_file.is_none() && worker.distributed.is_none() {
        report.push(format!(
            "worker: {}",
            ConfigError::missing("offset.storage.file.filename")
        ));
    }
    if report.is_empty() {
        Ok((specs, warnings))
    } else {
        // The errors stop start-up; the warnings still help explain them.
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Err(ConfigReport { errors: report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(kv: &[(&str, &str)]) -> ConnectorFile {
        ConnectorFile {
            path: PathBuf::from("c.properties"),
            props: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn worker() -> WorkerConfig {
        let mut p = Props::new();
        p.insert(
            "key.converter".into(),
            crate::converters::BYTE_ARRAY_CONVERTER.into(),
        );
        p.insert(
            "value.converter".into(),
            crate::converters::BYTE_ARRAY_CONVERTER.into(),
        );
        WorkerConfig::from_props(&p).expect("worker").0
    }

    #[test]
    fn unknown_keys_warn_once_each_worker_keys_do_not() {
        let registry = Registry::new(vec![crate::file_sink::plugin()]);
        let (specs, warnings) = validate_connectors(
            &registry,
            &worker(),
            &[file(&[
                ("name", "s"),
                ("connector.class", "file"),
                ("topics.regex", "a|b"),
                ("transforms", "unwrap"),
                (
                    "transforms.unwrap.type",
                    "io.debezium.transforms.ExtractNewRecordState",
                ),
                ("errors.tolerance", "all"),
                ("consumer.override.max.poll.records", "5"),
                ("namespace", "x"),
                ("fiel", "typo"),
            ])],
        )
        .expect("valid");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("'namespace'")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("'fiel'") && w.contains("c.properties")));
        let sub = specs[0].subscription.as_ref().expect("sink");
        assert!(sub.matches("a") && sub.matches("b"));
        // topics.regex matches whole names, as Java's Pattern.matches does.
        assert!(!sub.matches("ab") && !sub.matches("xa"));
    }

    #[test]
    fn duplicate_names_are_errors() {
        let registry = Registry::new(vec![crate::file_sink::plugin()]);
        let sink = file(&[("name", "s"), ("connector.class", "file"), ("topics", "t")]);
        let err = validate_connectors(&registry, &worker(), &[sink.clone(), sink])
            .expect_err("duplicate")
            .to_string();
        assert!(err.contains("already named 's'"), "{err}");
    }
}
