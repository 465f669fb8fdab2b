//! What `sluice status` shows, read from Kafka Connect's
//! `GET /connectors?expand=status&expand=info` answer:
//! `{"<name>": {"status": {...}, "info": {...}}, ...}`.
//!
//! Values from other endpoints (lag, rates and slot WAL from `/metrics`)
//! belong here too, as fields of [`Connector`] and [`Task`] filled in after
//! the REST answer is read; the table's columns then show them.

use serde_json::Value;

/// One connector and its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// Its name.
    pub name: String,
    /// `source` or `sink` (empty when the worker does not say).
    pub kind: String,
    /// The connector's own state.
    pub state: State,
    /// Its tasks, by id.
    pub tasks: Vec<Task>,
}

/// One task of a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Task number.
    pub id: u32,
    /// Its state.
    pub state: State,
}

/// A state as Kafka Connect reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// RUNNING, PAUSED, STOPPED, FAILED, UNASSIGNED, RESTARTING.
    pub state: String,
    /// `host:port` of the worker running it (empty when unassigned).
    pub worker_id: String,
    /// The error's trace, for FAILED.
    pub trace: Option<String>,
}

impl State {
    /// The trace's first non-blank line (the exception and its message),
    /// with control characters made spaces so one row stays one line.
    pub fn error_line(&self) -> Option<String> {
        let line = self
            .trace
            .as_deref()?
            .lines()
            .find(|l| !l.trim().is_empty())?;
        Some(
            line.trim()
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
        )
    }
}

/// Reads the expanded connector list; errors say what was missing where.
pub fn parse(body: &Value) -> Result<Vec<Connector>, String> {
    let map = body.as_object().ok_or_else(|| {
        format!(
            "expected a JSON object of connectors, got {}",
            kind_of(body)
        )
    })?;
    let mut out = Vec::with_capacity(map.len());
    for (name, entry) in map {
        out.push(connector(name, entry).map_err(|e| format!("connector '{name}': {e}"))?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn connector(name: &str, entry: &Value) -> Result<Connector, String> {
    let status = entry
        .get("status")
        .ok_or("no \"status\" (the worker ignored expand=status)")?;
    let info = entry.get("info");
    let state = read_state(
        status
            .get("connector")
            .ok_or("no \"status\".\"connector\"")?,
    )
    .map_err(|e| format!("\"status\".\"connector\": {e}"))?;
    let kind = status
        .get("type")
        .or_else(|| info.and_then(|i| i.get("type")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut tasks = Vec::new();
    if let Some(list) = status.get("tasks") {
        let list = list.as_array().ok_or_else(|| {
            format!(
                "\"status\".\"tasks\": expected an array, got {}",
                kind_of(list)
            )
        })?;
        for (i, t) in list.iter().enumerate() {
            let id = task_id(t.get("id"))
                .ok_or_else(|| format!("\"status\".\"tasks\"[{i}]: no numeric \"id\""))?;
            let state = read_state(t).map_err(|e| format!("task {id}: {e}"))?;
            tasks.push(Task { id, state });
        }
    }
    // Tasks the connector has but no worker reported on yet.
    let known = info
        .and_then(|i| i.get("tasks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| task_id(t.get("task")));
    for id in known {
        if !tasks.iter().any(|t| t.id == id) {
            tasks.push(Task {
                id,
                state: State {
                    state: "UNASSIGNED".into(),
                    worker_id: String::new(),
                    trace: None,
                },
            });
        }
    }
    tasks.sort_by_key(|t| t.id);
    Ok(Connector {
        name: name.to_string(),
        kind,
        state,
        tasks,
    })
}

fn task_id(v: Option<&Value>) -> Option<u32> {
    v?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn read_state(v: &Value) -> Result<State, String> {
    let state = v
        .get("state")
        .and_then(Value::as_str)
        .ok_or("no \"state\"")?
        .to_string();
    Ok(State {
        state,
        worker_id: v
            .get("worker_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        trace: v.get("trace").and_then(Value::as_str).map(str::to_string),
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_states_tasks_and_errors() {
        let body = json!({
            "sink": {
                "status": {"name": "sink", "type": "sink",
                    "connector": {"state": "RUNNING", "worker_id": "w:1"},
                    "tasks": [
                        {"id": 1, "state": "FAILED", "worker_id": "w:2",
                         "trace": "\n  org.example.Boom: disk full\n\tat x.y(Z.java:1)"},
                        {"id": 0, "state": "RUNNING", "worker_id": "w:1"}]},
                "info": {"name": "sink", "type": "sink", "config": {},
                    "tasks": [{"connector": "sink", "task": 0},
                              {"connector": "sink", "task": 1},
                              {"connector": "sink", "task": 2}]}},
            "a-source": {
                "status": {"name": "a-source",
                    "connector": {"state": "PAUSED", "worker_id": "w:1"}, "tasks": []},
                "info": {"type": "source", "tasks": []}}
        });
        let cs = parse(&body).expect("parses");
        assert_eq!(cs[0].name, "a-source");
        assert_eq!(cs[0].kind, "source", "type from info when status lacks it");
        assert_eq!(cs[0].state.state, "PAUSED");
        let sink = &cs[1];
        let ids: Vec<u32> = sink.tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(
            sink.tasks[1].state.error_line().as_deref(),
            Some("org.example.Boom: disk full")
        );
        assert_eq!(sink.tasks[2].state.state, "UNASSIGNED");
    }

    #[test]
    fn names_what_is_missing() {
        let e = parse(&json!(["a", "b"])).expect_err("a list is not expanded");
        assert!(e.contains("got an array"), "{e}");
        let e = parse(&json!({"c": {"info": {}}})).expect_err("no status");
        assert!(
            e.contains("connector 'c'") && e.contains("expand=status"),
            "{e}"
        );
        let e = parse(&json!({"c": {"status": {"connector": {"state": "RUNNING"},
            "tasks": [{"state": "RUNNING"}]}}}))
        .expect_err("no task id");
        assert!(e.contains("\"tasks\"[0]") && e.contains("\"id\""), "{e}");
    }

    #[test]
    fn error_line_is_one_line() {
        let s = State {
            state: "FAILED".into(),
            worker_id: String::new(),
            trace: Some("a\u{1b}[31mred\rb\nsecond".into()),
        };
        assert_eq!(s.error_line().as_deref(), Some("a [31mred b"));
    }
}
