//! `PUT /connector-plugins/{p}/config/validate`: Kafka Connect's
//! `ConfigInfos` answer, built from a plugin's `config_def()` and the same
//! checks the worker runs at start-up.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sluice_core::config::{ConfigKey, ConfigType, Props};
use sluice_core::connector::{ConnectorKind, ConnectorPlugin};

use super::secrets::{is_secret, HIDDEN};

/// The group of the keys every connector has.
const COMMON: &str = "Common";

fn type_name(ty: ConfigType) -> &'static str {
    match ty {
        ConfigType::String | ConfigType::Enum => "STRING",
        ConfigType::Password => "PASSWORD",
        ConfigType::Int => "INT",
        ConfigType::Bool => "BOOLEAN",
        ConfigType::List | ConfigType::RegexList => "LIST",
        ConfigType::Class => "CLASS",
    }
}

struct Def {
    name: String,
    ty: &'static str,
    required: bool,
    default: Option<String>,
    doc: String,
    group: String,
    recommended: Vec<String>,
}

fn common(kind: ConnectorKind) -> Vec<Def> {
    let d = |name: &str, ty, required, default: Option<&str>, doc: &str| Def {
        name: name.to_string(),
        ty,
        required,
        default: default.map(str::to_string),
        doc: doc.to_string(),
        group: COMMON.to_string(),
        recommended: Vec::new(),
    };
    let mut defs = vec![
        d("name", "STRING", true, None, "Globally unique name to use for this connector."),
        d("connector.class", "STRING", true, None, "Name or alias of the class for this connector."),
        d("tasks.max", "INT", false, Some("1"), "Maximum number of tasks to use for this connector."),
        d("key.converter", "CLASS", false, None, "Converter class used to convert between Kafka Connect format and the serialized form that is written to Kafka (record keys)."),
        d("value.converter", "CLASS", false, None, "Converter class used to convert between Kafka Connect format and the serialized form that is written to Kafka (record values)."),
        d("transforms", "LIST", false, Some(""), "Aliases for the transformations to be applied to records."),
    ];
    if kind == ConnectorKind::Sink {
        defs.push(d(
            "topics",
            "LIST",
            false,
            Some(""),
            "List of topics to consume, separated by commas.",
        ));
        defs.push(d(
            "topics.regex",
            "STRING",
            false,
            Some(""),
            "Regular expression giving topics to consume.",
        ));
    }
    defs
}

fn from_key(k: &ConfigKey, group: &str) -> Def {
    Def {
        name: k.name.to_string(),
        ty: type_name(k.ty),
        required: k.required,
        default: k.default.map(str::to_string),
        doc: k.doc.to_string(),
        group: group.to_string(),
        recommended: k.allowed.iter().map(|a| a.to_string()).collect(),
    }
}

/// The plugin's simple class name (its group in the answer).
pub fn simple_name(class: &str) -> &str {
    class.rsplit('.').next().unwrap_or(class)
}

/// Builds the `ConfigInfos` answer for `props` checked against `plugin`;
/// `errors` are (key, message) pairs from the worker's checks.
pub fn config_infos(
    plugin: &dyn ConnectorPlugin,
    props: &Props,
    errors: &[(String, String)],
    show_secrets: bool,
) -> Value {
    let group = simple_name(plugin.class()).to_string();
    let def = plugin.config_def();
    let mut defs = common(plugin.kind());
    defs.extend(def.keys.iter().map(|k| from_key(k, &group)));
    // Errors about keys no definition lists (a transform's option, say)
    // still count: they get a definition of their own.
    for (key, _) in errors {
        if !defs.iter().any(|d| &d.name == key) {
            defs.push(Def {
                name: key.clone(),
                ty: "STRING",
                required: false,
                default: None,
                doc: String::new(),
                group: COMMON.to_string(),
                recommended: Vec::new(),
            });
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, msg) in errors {
        by_key.entry(key.as_str()).or_default().push(msg.as_str());
    }
    let mut error_count = 0;
    let configs: Vec<Value> = defs
        .iter()
        .enumerate()
        .map(|(order, d)| {
            let errs = by_key.get(d.name.as_str()).cloned().unwrap_or_default();
            error_count += errs.len();
            let value = props.get(&d.name).map(|v| {
                if !show_secrets && (d.ty == "PASSWORD" || is_secret(Some(&def), &d.name)) {
                    HIDDEN.to_string()
                } else {
                    v.clone()
                }
            });
            json!({
                "definition": {
                    "name": d.name,
                    "type": d.ty,
                    "required": d.required,
                    "default_value": d.default,
                    "importance": if d.required { "HIGH" } else { "MEDIUM" },
                    "documentation": d.doc,
                    "group": d.group,
                    "width": "NONE",
                    "display_name": d.name,
                    "dependents": [],
                    "order": order as i64 + 1,
                },
                "value": {
                    "name": d.name,
                    "value": value,
                    "recommended_values": d.recommended,
                    "errors": errs,
                    "visible": true,
                }
            })
        })
        .collect();
    json!({
        "name": plugin.class(),
        "error_count": error_count,
        "groups": [COMMON, group],
        "configs": configs,
    })
}
