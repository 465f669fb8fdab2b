//! What `sluice status` shows, read from Kafka Connect's
//! `GET /connectors?expand=status&expand=info` answer:
//! `{"<name>": {"status": {...}, "info": {...}}, ...}`.
//!
//! A Sluice worker's task statuses carry its live figures beside Kafka
//! Connect's fields (`streaming`, `sink`); [`Figures`] holds what the table
//! shows of them. Another Kafka Connect worker has none, and the columns
//! showing them are then left out.

use serde_json::Value;

/// One connector and its tasks.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Task number.
    pub id: u32,
    /// Its state.
    pub state: State,
    /// Its live figures, when the worker reports them.
    pub figures: Figures,
}

/// A task's live figures from a Sluice worker's status (each None when the
/// worker does not report it, or not yet).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Records a source produced (a sink read) per second, recently.
    pub rate: Option<f64>,
    /// A source's milliseconds between its last event's commit in the
    /// database and its processing.
    pub lag_ms: Option<i64>,
    /// A sink's records read and not yet durable.
    pub pending: Option<u64>,
    /// WAL a source's replication slot retains, in bytes.
    pub wal_bytes: Option<i64>,
    /// The slot's `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
}

impl Figures {
    /// Reads `streaming` (a source) or `sink` (a sink) of a task status;
    /// a field of the wrong type counts as absent, since these are extras
    /// beside the state the table is about.
    fn read(task: &Value) -> Figures {
        let streaming = task.get("streaming");
        let sink = task.get("sink");
        let slot = streaming.and_then(|s| s.get("slot"));
        let either = |key: &str| {
            streaming
                .and_then(|s| s.get(key))
                .or_else(|| sink.and_then(|s| s.get(key)))
        };
        Figures {
            rate: either("records_per_second").and_then(Value::as_f64),
            lag_ms: streaming
                .and_then(|s| s.get("behind_source_ms"))
                .and_then(Value::as_i64),
            pending: sink
                .and_then(|s| s.get("records_pending"))
                .and_then(Value::as_u64),
            wal_bytes: slot
                .and_then(|s| s.get("retained_wal_bytes"))
                .and_then(Value::as_i64),
            wal_status: slot
                .and_then(|s| s.get("wal_status"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
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
            tasks.push(Task {
                id,
                state,
                figures: Figures::read(t),
            });
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
                figures: Figures::default(),
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
        assert_eq!(sink.tasks[0].figures, Figures::default());
    }

    #[test]
    fn reads_a_sluice_workers_figures() {
        let body = json!({
            "pg": {"status": {"name": "pg", "type": "source",
                "connector": {"state": "RUNNING", "worker_id": "w:1"},
                "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w:1",
                    "streaming": {"connected": true, "events": 5,
                        "records_per_second": 12.5, "behind_source_ms": 40,
                        "slot": {"name": "s", "retained_wal_bytes": 2048,
                            "wal_status": "reserved"}}}]}},
            "out": {"status": {"name": "out", "type": "sink",
                "connector": {"state": "RUNNING", "worker_id": "w:1"},
                "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w:1",
                    "sink": {"records_read": 9, "records_durable": 6,
                        "records_pending": 3, "records_per_second": "fast"}}]}}
        });
        let cs = parse(&body).expect("parses");
        let out = &cs[0].tasks[0].figures;
        assert_eq!(out.pending, Some(3));
        assert_eq!(out.rate, None, "a rate that is no number is left out");
        assert_eq!(out.lag_ms, None);
        let pg = &cs[1].tasks[0].figures;
        assert_eq!(pg.rate, Some(12.5));
        assert_eq!(pg.lag_ms, Some(40));
        assert_eq!(pg.wal_bytes, Some(2048));
        assert_eq!(pg.wal_status.as_deref(), Some("reserved"));
        assert_eq!(pg.pending, None);
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
