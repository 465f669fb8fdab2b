//! The status table: one row per connector and one per task, in columns
//! padded to their widest cell.
//!
//! A column is a header and a function from a row to its cell. Columns
//! marked optional are left out when no row has a value, so columns that
//! depend on what a worker serves (an error today; lag, rates and slot WAL
//! from `/metrics` later) appear only when there is something to show.

use super::model::{Connector, State, Task};

/// One row: a connector's own line, or one of its tasks.
pub struct Row<'a> {
    /// The connector.
    pub connector: &'a Connector,
    /// The task, or `None` for the connector's own line.
    pub task: Option<&'a Task>,
}

impl Row<'_> {
    fn state(&self) -> &State {
        self.task.map_or(&self.connector.state, |t| &t.state)
    }
}

/// A column of the table.
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// The cell of a row; `None` shows as `-` (or leaves out an optional
    /// column that has no value in any row).
    pub cell: fn(&Row) -> Option<String>,
    /// Left out when every cell is `None`.
    pub optional: bool,
}

/// The columns, in order.
pub const COLUMNS: &[Column] = &[
    Column {
        header: "CONNECTOR",
        cell: |r| Some(r.connector.name.clone()),
        optional: false,
    },
    Column {
        header: "TYPE",
        cell: |r| Some(r.connector.kind.clone()).filter(|k| !k.is_empty()),
        optional: false,
    },
    Column {
        header: "TASK",
        cell: |r| r.task.map(|t| t.id.to_string()),
        optional: false,
    },
    Column {
        header: "STATE",
        cell: |r| Some(r.state().state.clone()),
        optional: false,
    },
    Column {
        header: "WORKER",
        cell: |r| Some(r.state().worker_id.clone()).filter(|w| !w.is_empty()),
        optional: false,
    },
    Column {
        header: "ERROR",
        cell: |r| r.state().error_line(),
        optional: true,
    },
];

/// The table's text: a header line and the rows, columns two spaces apart,
/// no trailing spaces.
pub fn render(connectors: &[Connector], columns: &[Column]) -> String {
    let rows: Vec<Row> = connectors
        .iter()
        .flat_map(|c| {
            std::iter::once(Row {
                connector: c,
                task: None,
            })
            .chain(c.tasks.iter().map(move |t| Row {
                connector: c,
                task: Some(t),
            }))
        })
        .collect();
    let mut shown: Vec<(&str, Vec<String>)> = Vec::new();
    for col in columns {
        let cells: Vec<Option<String>> = rows.iter().map(|r| (col.cell)(r)).collect();
        if col.optional && cells.iter().all(Option::is_none) {
            continue;
        }
        let cells = cells
            .into_iter()
            .map(|c| c.unwrap_or_else(|| "-".to_string()))
            .collect();
        shown.push((col.header, cells));
    }
    let widths: Vec<usize> = shown
        .iter()
        .map(|(h, cells)| {
            cells
                .iter()
                .map(|c| c.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(shown.iter().map(|(h, _)| *h).collect());
    for i in 0..rows.len() {
        line(shown.iter().map(|(_, cells)| cells[i].as_str()).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(s: &str, worker: &str, trace: Option<&str>) -> State {
        State {
            state: s.into(),
            worker_id: worker.into(),
            trace: trace.map(str::to_string),
        }
    }

    #[test]
    fn aligns_columns_and_hides_an_empty_error_column() {
        let cs = vec![Connector {
            name: "pg".into(),
            kind: "source".into(),
            state: state("RUNNING", "127.0.0.1:8083", None),
            tasks: vec![Task {
                id: 0,
                state: state("RUNNING", "127.0.0.1:8083", None),
            }],
        }];
        assert_eq!(
            render(&cs, COLUMNS),
            "CONNECTOR  TYPE    TASK  STATE    WORKER\n\
             pg         source  -     RUNNING  127.0.0.1:8083\n\
             pg         source  0     RUNNING  127.0.0.1:8083\n"
        );
    }

    #[test]
    fn shows_the_error_column_when_a_row_failed() {
        let cs = vec![Connector {
            name: "a-long-connector-name".into(),
            kind: String::new(),
            state: state("RUNNING", "w:1", None),
            tasks: vec![Task {
                id: 12,
                state: state("FAILED", "", Some("Boom: it broke\n\tat here")),
            }],
        }];
        assert_eq!(
            render(&cs, COLUMNS),
            "CONNECTOR              TYPE  TASK  STATE    WORKER  ERROR\n\
             a-long-connector-name  -     -     RUNNING  w:1     -\n\
             a-long-connector-name  -     12    FAILED   -       Boom: it broke\n"
        );
    }
}
