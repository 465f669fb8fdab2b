//! Connector and worker configuration: flat string properties, as Kafka
//! Connect has them, checked against a declared definition so every bad value
//! is reported with its key, the value and what is allowed.

use std::collections::BTreeMap;
use std::fmt;

/// Flat configuration properties.
pub type Props = BTreeMap<String, String>;

/// Props from key/value pairs (configs written in code and tests).
pub fn props_from(kv: &[(&str, &str)]) -> Props {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The kind of a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// Free text.
    String,
    /// A secret: never logged, masked when shown.
    Password,
    /// A signed integer.
    Int,
    /// `true` or `false` (case-insensitive).
    Bool,
    /// Comma-separated list.
    List,
    /// Comma-separated list of regular expressions.
    RegexList,
    /// One of `allowed` (case-insensitive).
    Enum,
    /// A Java class name or short alias.
    Class,
}

/// One declared configuration key.
#[derive(Debug, Clone)]
pub struct ConfigKey {
    /// Canonical name.
    pub name: &'static str,
    /// Older names accepted for the same key (e.g. Debezium 1.x names).
    pub aliases: &'static [&'static str],
    /// Value kind.
    pub ty: ConfigType,
    /// Default, as text; None = no default.
    pub default: Option<&'static str>,
    /// Whether the key must be set (after aliases).
    pub required: bool,
    /// Allowed values for `Enum` (the first spelling is canonical).
    pub allowed: &'static [&'static str],
    /// One-line documentation.
    pub doc: &'static str,
}

impl ConfigKey {
    /// A key with no default that is not required.
    pub const fn new(name: &'static str, ty: ConfigType, doc: &'static str) -> ConfigKey {
        ConfigKey {
            name,
            aliases: &[],
            ty,
            default: None,
            required: false,
            allowed: &[],
            doc,
        }
    }
    /// Sets the default.
    pub const fn default(mut self, d: &'static str) -> Self {
        self.default = Some(d);
        self
    }
    /// Marks the key required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Sets aliases.
    pub const fn aliases(mut self, a: &'static [&'static str]) -> Self {
        self.aliases = a;
        self
    }
    /// Sets allowed values (for `Enum`).
    pub const fn allowed(mut self, a: &'static [&'static str]) -> Self {
        self.allowed = a;
        self
    }
}

/// A configuration problem, naming the key, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault.
    pub key: String,
    /// The bad value, if there was one (secrets are never kept here).
    pub value: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(key: impl Into<String>, value: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            value: value.map(str::to_owned),
            message: message.into(),
        }
    }
    /// A missing required key.
    pub fn missing(key: &str) -> Self {
        ConfigError::new(
            key,
            None,
            "Missing required configuration with no default value",
        )
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(
                f,
                "Invalid value '{}' for configuration '{}': {}",
                v, self.key, self.message
            ),
            None => write!(f, "Configuration '{}': {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Several configuration errors, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{} configuration error{}",
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A set of declared keys.
#[derive(Debug, Clone, Default)]
pub struct ConfigDef {
    /// The keys.
    pub keys: Vec<ConfigKey>,
}

/// Configuration checked against a [`ConfigDef`], with aliases resolved and
/// defaults applied.
#[derive(Debug, Clone)]
pub struct Parsed {
    values: BTreeMap<&'static str, String>,
    /// Keys that were set but are not declared (worth a warning).
    pub unknown: Vec<String>,
    /// Aliases that were used, as (alias, canonical).
    pub aliases_used: Vec<(String, &'static str)>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Levenshtein distance between two strings (by chars).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidates closest to `word` by [`edit_distance`], nearest first,
/// at most `max_distance` away.
pub fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    max_distance: usize,
) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= max_distance)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, c)| c).collect()
}

/// Splits a Kafka-style comma-separated list, trimming items and dropping
/// empty ones.
pub fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ConfigDef {
    /// A definition from keys.
    pub fn new(keys: Vec<ConfigKey>) -> Self {
        ConfigDef { keys }
    }

    /// The declared key `name` (canonical or alias).
    pub fn key(&self, name: &str) -> Option<&ConfigKey> {
        self.keys
            .iter()
            .find(|k| k.name == name || k.aliases.contains(&name))
    }

    /// Checks `props`: every error is collected; keys matching
    /// `ignore_prefixes` (worker-level keys such as `transforms.`) are neither
    /// checked nor reported as unknown.
    pub fn parse(&self, props: &Props, ignore: &[&str]) -> Result<Parsed, ConfigErrors> {
        let mut errors = Vec::new();
        let mut values = BTreeMap::new();
        let mut aliases_used = Vec::new();
        for key in &self.keys {
            let mut raw = props.get(key.name).map(|v| (key.name.to_string(), v));
            if raw.is_none() {
                for a in key.aliases {
                    if let Some(v) = props.get(*a) {
                        aliases_used.push(((*a).to_string(), key.name));
                        raw = Some(((*a).to_string(), v));
                        break;
                    }
                }
            }
            let Some((given_key, v)) = raw else {
                match key.default {
                    Some(d) => {
                        values.insert(key.name, d.to_string());
                    }
                    None if key.required => errors.push(ConfigError::missing(key.name)),
                    None => {}
                }
                continue;
            };
            let shown = if key.ty == ConfigType::Password {
                "[hidden]"
            } else {
                v.as_str()
            };
            let ok = match key.ty {
                ConfigType::Bool => parse_bool(v).map(|b| b.to_string()).ok_or_else(|| {
                    ConfigError::new(&given_key, Some(shown), "Expected a boolean: true or false")
                }),
                ConfigType::Int => {
                    v.trim().parse::<i64>().map(|i| i.to_string()).map_err(|_| {
                        ConfigError::new(&given_key, Some(shown), "Expected an integer")
                    })
                }
                ConfigType::Enum => {
                    let lv = v.trim().to_ascii_lowercase();
                    key.allowed
                        .iter()
                        .find(|a| a.eq_ignore_ascii_case(&lv))
                        .map(|a| a.to_string())
                        .ok_or_else(|| {
                            ConfigError::new(
                                &given_key,
                                Some(shown),
                                format!("Allowed values are: {}", key.allowed.join(", ")),
                            )
                        })
                }
                ConfigType::RegexList => {
                    let mut err = None;
                    for item in split_list(v) {
                        if let Err(e) = regex::Regex::new(&item) {
                            err = Some(ConfigError::new(
                                &given_key,
                                Some(shown),
                                format!("'{item}' is not a valid regular expression: {e}"),
                            ));
                            break;
                        }
                    }
                    match err {
                        Some(e) => Err(e),
                        None => Ok(v.clone()),
                    }
                }
                _ => Ok(v.clone()),
            };
            match ok {
                Ok(val) => {
                    if key.required && val.trim().is_empty() {
                        errors.push(ConfigError::new(&given_key, Some(""), "Must not be empty"));
                    }
                    values.insert(key.name, val);
                }
                Err(e) => errors.push(e),
            }
        }
        let unknown = props
            .keys()
            .filter(|k| self.key(k).is_none())
            .filter(|k| !ignore.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        if errors.is_empty() {
            Ok(Parsed {
                values,
                unknown,
                aliases_used,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

impl Parsed {
    /// The raw (validated) text of a key, or None when unset without default.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
    /// A string, "" when unset.
    pub fn string(&self, key: &str) -> String {
        self.get(key).unwrap_or_default().to_string()
    }
    /// A boolean (validated at parse time; false when unset).
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).and_then(parse_bool).unwrap_or(false)
    }
    /// An integer (validated at parse time; 0 when unset).
    pub fn int(&self, key: &str) -> i64 {
        self.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    /// A comma-separated list (empty when unset).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key).map(split_list).unwrap_or_default()
    }
    /// Compiled regexes anchored to match whole strings, as Debezium does.
    pub fn regexes(&self, key: &str) -> Vec<regex::Regex> {
        self.list(key)
            .into_iter()
            .filter_map(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
            .collect()
    }
}

/// Rewrites single-quoted strings of a JSON-like text as JSON strings,
/// leaving double-quoted ones alone: connector configs such as the Kusto
/// sink's `kusto.tables.topics.mapping` are written with single quotes in
/// the official examples, and the official connectors accept them.
pub fn single_quotes_to_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'') => {
                quote = Some('\'');
                out.push('"');
            }
            (None, '"') => {
                quote = Some('"');
                out.push('"');
            }
            (Some(q), '\\') => {
                if let Some(n) = chars.next() {
                    // \' inside a single-quoted string is a plain quote.
                    if q == '\'' && n == '\'' {
                        out.push('\'');
                    } else {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            (Some('\''), '\'') | (Some('"'), '"') => {
                quote = None;
                out.push('"');
            }
            (Some('\''), '"') => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> ConfigDef {
        ConfigDef::new(vec![
            ConfigKey::new("topic.prefix", ConfigType::String, "prefix")
                .required()
                .aliases(&["database.server.name"]),
            ConfigKey::new("snapshot.mode", ConfigType::Enum, "mode")
                .default("initial")
                .allowed(&["initial", "never"]),
            ConfigKey::new("flag", ConfigType::Bool, "flag").default("true"),
            ConfigKey::new("re", ConfigType::RegexList, "regex"),
        ])
    }

    use crate::config::props_from as props;

    #[test]
    fn closest_words_by_edit_distance() {
        assert_eq!(edit_distance("table.include.lst", "table.include.list"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            closest(
                "table.include.lst",
                ["table.include.list", "table.exclude.list", "topic.prefix"],
                2
            ),
            vec!["table.include.list"]
        );
        assert!(closest("wholly.other", ["table.include.list"], 2).is_empty());
    }

    #[test]
    fn aliases_defaults_and_unknown() {
        let p = def()
            .parse(
                &props(&[
                    ("database.server.name", "s"),
                    ("x.y", "1"),
                    ("transforms", "a"),
                ]),
                &["transforms"],
            )
            .expect("valid");
        assert_eq!(p.get("topic.prefix"), Some("s"));
        assert_eq!(p.get("snapshot.mode"), Some("initial"));
        assert!(p.bool("flag"));
        assert_eq!(p.unknown, vec!["x.y".to_string()]);
        assert_eq!(p.aliases_used.len(), 1);
    }

    #[test]
    fn every_error_names_key_value_and_allowed() {
        let e = def()
            .parse(
                &props(&[
                    ("snapshot.mode", "sometimes"),
                    ("flag", "yes"),
                    ("re", "a("),
                ]),
                &[],
            )
            .expect_err("invalid");
        let text = e.to_string();
        assert!(text.contains("4 configuration errors"), "{text}");
        assert!(text.contains("'topic.prefix'"), "{text}");
        assert!(
            text.contains("'sometimes'") && text.contains("initial, never"),
            "{text}"
        );
        assert!(text.contains("'yes'") && text.contains("boolean"), "{text}");
        assert!(text.contains("'a('"), "{text}");
    }
}
