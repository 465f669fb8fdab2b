//! Reading worker and connector configuration files in the forms Kafka
//! Connect users already have: `.properties`, a flat JSON object, or the JSON
//! bodies of `POST /connectors` (`{"name", "config"}`) and
//! `GET /connectors/{name}/config` (flat, with `name`).

use std::path::{Path, PathBuf};

use sluice_core::config::Props;

use crate::properties::{self, PropertiesError};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Reading or parsing a `.properties` file failed.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// Reading a JSON file failed.
    #[error("reading '{path}': {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not an accepted form.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A connector configuration and where it came from.
#[derive(Debug, Clone)]
pub struct ConnectorFile {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// The flat connector properties, `name` included.
    pub props: Props,
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Reads a file as flat properties, whatever its form: `.json` files may be
/// flat or `{"name", "config": {...}}` (then `name` is folded into the map).
pub fn load_props(path: &Path) -> Result<Props, ConfigFileError> {
    if !is_json(path) {
        return Ok(properties::load_file(path)?);
    }
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_json(&text, &shown)
}

/// Parses JSON configuration text (see [`load_props`]); `origin` names it in
/// errors.
pub fn parse_json(text: &str, origin: &str) -> Result<Props, ConfigFileError> {
    let invalid = |message: String| ConfigFileError::Invalid {
        path: origin.to_string(),
        message,
    };
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(obj) = doc else {
        return Err(invalid("expected a JSON object".to_string()));
    };
    // The REST API's create form nests the config; its top-level name wins
    // only when the nested config has none (they must agree otherwise).
    if let Some(config) = obj.get("config") {
        let serde_json::Value::Object(config) = config else {
            return Err(invalid("'config' must be a JSON object".to_string()));
        };
        let mut props = flatten(config, origin)?;
        if let Some(name) = obj.get("name") {
            let name =
                scalar_text(name).ok_or_else(|| invalid("'name' must be a string".to_string()))?;
            match props.get("name") {
                Some(inner) if *inner != name => {
                    return Err(invalid(format!(
                        "'name' is '{name}' but config.name is '{inner}'"
                    )))
                }
                _ => {
                    props.insert("name".to_string(), name);
                }
            }
        }
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "name" | "config" | "initial_state" | "tasks" | "type"
            ) {
                return Err(invalid(format!(
                    "unexpected top-level key '{key}' next to 'config'"
                )));
            }
        }
        return Ok(props);
    }
    flatten(&obj, origin)
}

/// The text Kafka Connect would see for a JSON scalar (numbers and booleans
/// become their literal text).
fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn flatten(
    obj: &serde_json::Map<String, serde_json::Value>,
    origin: &str,
) -> Result<Props, ConfigFileError> {
    let mut props = Props::new();
    for (k, v) in obj {
        match v {
            // Kafka Connect drops nulls from configs; so do we.
            serde_json::Value::Null => {}
            other => {
                let text = scalar_text(other).ok_or_else(|| ConfigFileError::Invalid {
                    path: origin.to_string(),
                    message: format!(
                        "value of '{k}' must be a string, number or boolean, not {}",
                        if other.is_array() {
                            "an array"
                        } else {
                            "an object"
                        }
                    ),
                })?;
                props.insert(k.clone(), text);
            }
        }
    }
    Ok(props)
}

/// Whether a configuration looks like a connector config rather than a worker
/// config (it names a connector class or a connector).
pub fn looks_like_connector(props: &Props) -> bool {
    props.contains_key("connector.class") || props.contains_key("name")
}

/// Reads a connector config file; it must have `name`.
pub fn load_connector(path: &Path) -> Result<ConnectorFile, ConfigFileError> {
    let props = load_props(path)?;
    match props.get("name") {
        Some(n) if !n.trim().is_empty() => Ok(ConnectorFile {
            path: path.to_path_buf(),
            props,
        }),
        _ => Err(ConfigFileError::Invalid {
            path: path.display().to_string(),
            message: "Configuration 'name': a connector config must set the connector's name"
                .to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn connector_forms_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let a = load_connector(&write(
            d,
            "a.properties",
            "name=sink\nconnector.class=file\nflush.size.bytes=10000\nflag=true\n",
        ))
        .expect("properties");
        let b = load_connector(&write(
            d,
            "b.json",
            r#"{"name":"sink","config":{"connector.class":"file","flush.size.bytes":10000,"flag":true}}"#,
        ))
        .expect("POST form");
        let c = load_connector(&write(
            d,
            "c.json",
            r#"{"name":"sink","connector.class":"file","flush.size.bytes":10000,"flag":true}"#,
        ))
        .expect("flat form");
        let e = load_connector(&write(
            d,
            "e.json",
            r#"{"name":"sink","config":{"name":"sink","connector.class":"file","flush.size.bytes":"10000","flag":"true"},"tasks":[],"type":"sink"}"#,
        ))
        .expect("GET /connectors/x form");
        assert_eq!(a.props, b.props);
        assert_eq!(a.props, c.props);
        assert_eq!(a.props, e.props);
        assert_eq!(
            a.props.get("flush.size.bytes").map(String::as_str),
            Some("10000")
        );
    }

    #[test]
    fn connector_without_name_is_rejected_naming_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "x.properties", "connector.class=file\n");
        let err = load_connector(&p).expect_err("no name").to_string();
        assert!(
            err.contains("x.properties") && err.contains("'name'"),
            "{err}"
        );
    }

    #[test]
    fn bad_json_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "w.json", "{\"a\": [1]}");
        let err = load_props(&p).expect_err("array").to_string();
        assert!(err.contains("w.json") && err.contains("'a'"), "{err}");
        let p = write(dir.path(), "v.json", "{\"a\": ");
        let err = load_props(&p).expect_err("truncated").to_string();
        assert!(
            err.contains("v.json") && err.contains("not valid JSON"),
            "{err}"
        );
        let p = write(
            dir.path(),
            "n.json",
            r#"{"name":"a","config":{"name":"b"}}"#,
        );
        let err = load_props(&p).expect_err("names differ").to_string();
        assert!(err.contains("n.json") && err.contains("'b'"), "{err}");
    }

    #[test]
    fn worker_json_is_flat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "w.json",
            r#"{"offset.flush.interval.ms": 1000, "value.converter.schemas.enable": false}"#,
        );
        let props = load_props(&p).expect("worker json");
        assert_eq!(
            props.get("offset.flush.interval.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            props
                .get("value.converter.schemas.enable")
                .map(String::as_str),
            Some("false")
        );
        assert!(!looks_like_connector(&props));
    }
}
