//! Kafka Connect's predicates (KIP-585): `predicates` = aliases,
//! `predicates.<alias>.type` = class, and a transform applies only to
//! records its `transforms.<alias>.predicate` matches (or, with
//! `transforms.<alias>.negate=true`, does not match).

use std::collections::HashMap;
use std::sync::Arc;

use sluice_core::config::{split_list, ConfigError, Props};

use super::{resolve_class, ConnectRecord, Options};

/// `org.apache.kafka.connect.transforms.predicates.TopicNameMatches`.
pub const TOPIC_NAME_MATCHES: &str =
    "org.apache.kafka.connect.transforms.predicates.TopicNameMatches";
/// `org.apache.kafka.connect.transforms.predicates.RecordIsTombstone`.
pub const RECORD_IS_TOMBSTONE: &str =
    "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone";
/// `org.apache.kafka.connect.transforms.predicates.HasHeaderKey`.
pub const HAS_HEADER_KEY: &str = "org.apache.kafka.connect.transforms.predicates.HasHeaderKey";

const CLASSES: &[&str] = &[TOPIC_NAME_MATCHES, RECORD_IS_TOMBSTONE, HAS_HEADER_KEY];

/// A configured predicate.
#[derive(Debug)]
pub enum Predicate {
    /// The topic matches `pattern` as a whole (Java's `Matcher.matches`).
    TopicNameMatches(regex::Regex),
    /// The value is null.
    RecordIsTombstone,
    /// A header with this key exists.
    HasHeaderKey(String),
}

impl Predicate {
    /// Whether the record matches.
    pub fn test(&self, record: &ConnectRecord) -> bool {
        match self {
            Predicate::TopicNameMatches(re) => re.is_match(&record.topic),
            Predicate::RecordIsTombstone => record.value.is_none(),
            Predicate::HasHeaderKey(name) => record.headers.iter().any(|h| &h.key == name),
        }
    }
}

fn build(class: &str, opts: &Options<'_>) -> Result<Predicate, ConfigError> {
    Ok(match class {
        TOPIC_NAME_MATCHES => {
            let pattern = opts.required("pattern")?;
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                opts.error(
                    "pattern",
                    Some(pattern),
                    format!("not a valid regular expression: {e}"),
                )
            })?;
            Predicate::TopicNameMatches(re)
        }
        RECORD_IS_TOMBSTONE => Predicate::RecordIsTombstone,
        _ => Predicate::HasHeaderKey(opts.required("name")?.to_string()),
    })
}

/// The predicates declared in `predicates`, by alias; problems go to
/// `errors`, each naming `predicates.<alias>.<key>`.
pub(super) fn from_props(
    props: &Props,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, Arc<Predicate>> {
    let mut out = HashMap::new();
    for alias in props
        .get("predicates")
        .map(|v| split_list(v))
        .unwrap_or_default()
    {
        let opts = Options::new(format!("predicates.{alias}."), props);
        let Some(given) = opts.get("type") else {
            errors.push(ConfigError::missing(&opts.key("type")));
            continue;
        };
        let Some(class) = resolve_class(given, CLASSES) else {
            errors.push(opts.error(
                "type",
                Some(given),
                format!(
                    "Class {} could not be found; predicates Sluice implements: {}",
                    given.trim(),
                    CLASSES.join(", ")
                ),
            ));
            continue;
        };
        match build(class, &opts) {
            Ok(p) => {
                out.insert(alias, Arc::new(p));
            }
            Err(e) => errors.push(e),
        }
    }
    out
}
