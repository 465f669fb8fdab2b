//! `duckdb.tables.topics.mapping`: which table and mode each topic lands in.

use std::collections::HashMap;

use serde_json::Value as Json;

/// How a table holds a topic's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each key's current row: creates, updates and reads upsert, deletes
    /// delete, tombstones carry nothing new.
    Upsert,
    /// One row per change event, with `__op`, `__lsn`, `__source_ts_ms` and
    /// `__deleted`.
    Append,
}

/// Where one topic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Table name (unqualified, in DuckDB's `main` schema).
    pub table: String,
    /// Upsert or append.
    pub mode: Mode,
}

/// The parsed mapping; topics not listed go to the table named after the
/// topic's last dot-separated segment, in upsert mode.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    topics: HashMap<String, Target>,
}

impl Mapping {
    /// Parses a JSON array of `{topic, table?, mode?}` objects, in the style
    /// of the Kusto sink's `kusto.tables.topics.mapping`; single-quoted
    /// strings are accepted. Errors name the entry and what is wrong.
    pub fn parse(text: &str) -> Result<Mapping, String> {
        let mut mapping = Mapping::default();
        if text.trim().is_empty() {
            return Ok(mapping);
        }
        let json: Json = serde_json::from_str(text)
            .or_else(|_| serde_json::from_str(&sluice_core::config::single_quotes_to_json(text)))
            .map_err(|e| format!("not a JSON array of objects: {e}"))?;
        let entries = json
            .as_array()
            .ok_or_else(|| "not a JSON array of objects".to_owned())?;
        for (i, entry) in entries.iter().enumerate() {
            let obj = entry
                .as_object()
                .ok_or_else(|| format!("entry {i} is not an object"))?;
            for k in obj.keys() {
                if !["topic", "table", "mode"].contains(&k.as_str()) {
                    return Err(format!(
                        "entry {i} has unknown key '{k}'; allowed: topic, table, mode"
                    ));
                }
            }
            let topic = obj
                .get("topic")
                .and_then(Json::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("entry {i} has no 'topic' string"))?;
            let table = match obj.get("table") {
                None => default_table(topic),
                Some(Json::String(t)) if !t.is_empty() => t.clone(),
                Some(_) => {
                    return Err(format!(
                        "entry {i} ('{topic}'): 'table' must be a non-empty string"
                    ))
                }
            };
            let mode = match obj.get("mode").map(|m| m.as_str()) {
                None | Some(Some("upsert")) => Mode::Upsert,
                Some(Some("append")) => Mode::Append,
                Some(other) => {
                    return Err(format!(
                        "entry {i} ('{topic}'): mode {} is not 'upsert' or 'append'",
                        other.unwrap_or("(not a string)")
                    ))
                }
            };
            if mapping
                .topics
                .insert(topic.to_owned(), Target { table, mode })
                .is_some()
            {
                return Err(format!("topic '{topic}' is mapped twice"));
            }
        }
        Ok(mapping)
    }

    /// Where `topic` goes.
    pub fn target(&self, topic: &str) -> Target {
        self.topics.get(topic).cloned().unwrap_or_else(|| Target {
            table: default_table(topic),
            mode: Mode::Upsert,
        })
    }
}

/// The topic's last dot-separated segment (`server.schema.table` → `table`).
pub fn default_table(topic: &str) -> String {
    topic.rsplit('.').next().unwrap_or(topic).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kusto_style_single_quotes() {
        let m = Mapping::parse(
            "[{'topic': 'myserver.retail.orders_info', 'table': 'orders', 'mode': 'append'}, {'topic': 'a.b.c'}]",
        )
        .expect("parse");
        assert_eq!(
            m.target("myserver.retail.orders_info"),
            Target {
                table: "orders".into(),
                mode: Mode::Append
            }
        );
        assert_eq!(
            m.target("a.b.c"),
            Target {
                table: "c".into(),
                mode: Mode::Upsert
            }
        );
        assert_eq!(m.target("x.y.unlisted").table, "unlisted");
        assert_eq!(m.target("plain").table, "plain");
    }

    #[test]
    fn double_quotes_and_quotes_inside() {
        let m = Mapping::parse(r#"[{"topic": "t", "table": "it's"}]"#).expect("parse");
        assert_eq!(m.target("t").table, "it's");
        let m = Mapping::parse(r#"[{'topic': 't', 'table': 'say "hi"'}]"#).expect("parse");
        assert_eq!(m.target("t").table, "say \"hi\"");
        assert!(Mapping::parse("").expect("empty").topics.is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        let e = Mapping::parse("[{'topic': 't', 'mode': 'merge'}]").expect_err("mode");
        assert!(e.contains("entry 0") && e.contains("merge"), "{e}");
        let e = Mapping::parse("[{'table': 'x'}]").expect_err("topic");
        assert!(e.contains("'topic'"), "{e}");
        let e = Mapping::parse("[{'topic': 't', 'tabel': 'x'}]").expect_err("key");
        assert!(e.contains("tabel"), "{e}");
        let e = Mapping::parse("[{'topic': 't'}, {'topic': 't'}]").expect_err("dup");
        assert!(e.contains("twice"), "{e}");
        assert!(Mapping::parse("{'topic': 't'}").is_err());
    }
}
