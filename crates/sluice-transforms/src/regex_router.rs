//! `org.apache.kafka.connect.transforms.RegexRouter`: when the whole topic
//! matches `regex`, the topic becomes Java's
//! `matcher.replaceFirst(replacement)`, with Java's replacement syntax:
//! `$1` (taking more digits only while they still name a group), `${name}`
//! and `\` escaping the next character.

use std::sync::Arc;

use sluice_core::config::ConfigError;

use super::{ConnectRecord, Options, Transform, TransformError};

/// The class name.
pub const CLASS: &str = "org.apache.kafka.connect.transforms.RegexRouter";

/// A piece of a parsed replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Group(usize),
    Named(String),
}

/// The configured transform.
pub struct RegexRouter {
    /// Anchored, for `Matcher.matches()`.
    whole: regex::Regex,
    /// Unanchored, for `replaceFirst`, which searches again from the start
    /// and may pick a shorter first match than the whole topic.
    first: regex::Regex,
    replacement: Vec<Part>,
}

/// Parses a Java replacement string against a pattern with `groups`
/// capturing groups (group 0 is the whole match).
fn parse_replacement(rep: &str, re: &regex::Regex) -> Result<Vec<Part>, String> {
    let groups = re.captures_len() - 1;
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = rep.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => lit.push(n),
                None => return Err("character to be escaped is missing".into()),
            },
            '$' => {
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                match chars.next() {
                    Some('{') => {
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(ch) if ch.is_ascii_alphanumeric() => name.push(ch),
                                _ => {
                                    return Err(
                                        "named capturing group is missing trailing '}'".into()
                                    )
                                }
                            }
                        }
                        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                            return Err(format!(
                                "named capturing group '{name}' is not a valid name"
                            ));
                        }
                        if !re.capture_names().any(|n| n == Some(name.as_str())) {
                            return Err(format!("No group with name {{{name}}}"));
                        }
                        parts.push(Part::Named(name));
                    }
                    Some(d) if d.is_ascii_digit() => {
                        let mut n = d as usize - '0' as usize;
                        if n > groups {
                            return Err(format!("No group {n}"));
                        }
                        while let Some(&next) = chars.peek() {
                            let Some(digit) = next.to_digit(10) else {
                                break;
                            };
                            let candidate = n * 10 + digit as usize;
                            if candidate > groups {
                                break;
                            }
                            n = candidate;
                            chars.next();
                        }
                        parts.push(Part::Group(n));
                    }
                    _ => return Err("Illegal group reference".into()),
                }
            }
            other => lit.push(other),
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Literal(lit));
    }
    Ok(parts)
}

impl RegexRouter {
    /// Reads `regex` and `replacement` (both required).
    pub fn from_options(opts: &Options<'_>) -> Result<Self, ConfigError> {
        let pattern = opts
            .get("regex")
            .ok_or_else(|| ConfigError::missing(&opts.key("regex")))?;
        let bad = |e: regex::Error| {
            opts.error(
                "regex",
                Some(pattern),
                format!("not a valid regular expression: {e}"),
            )
        };
        let whole = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(bad)?;
        let first = regex::Regex::new(pattern).map_err(bad)?;
        let rep = opts
            .get("replacement")
            .ok_or_else(|| ConfigError::missing(&opts.key("replacement")))?;
        let replacement =
            parse_replacement(rep, &first).map_err(|m| opts.error("replacement", Some(rep), m))?;
        Ok(RegexRouter {
            whole,
            first,
            replacement,
        })
    }

    /// The new topic, or None when the topic does not match.
    pub fn route(&self, topic: &str) -> Option<String> {
        if !self.whole.is_match(topic) {
            return None;
        }
        let caps = self.first.captures(topic)?;
        let m = caps.get(0)?;
        let mut out = String::with_capacity(topic.len());
        out.push_str(&topic[..m.start()]);
        for p in &self.replacement {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Group(i) => out.push_str(caps.get(*i).map_or("", |g| g.as_str())),
                Part::Named(n) => out.push_str(caps.name(n).map_or("", |g| g.as_str())),
            }
        }
        out.push_str(&topic[m.end()..]);
        Some(out)
    }
}

impl Transform for RegexRouter {
    fn apply(&self, mut record: ConnectRecord) -> Result<Option<ConnectRecord>, TransformError> {
        if let Some(t) = self.route(&record.topic) {
            record.topic = Arc::from(t);
        }
        Ok(Some(record))
    }
}
