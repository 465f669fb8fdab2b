//! The status table: one row per connector and one per task, in columns
//! padded to their widest cell.
//!
//! A column is a header and a function from a row to its cell. Columns
//! marked optional are left out when no row has a value, so columns that
//! depend on what a worker serves (an error; a Sluice worker's rates, lag,
//! pending records and slot WAL) appear only when there is something to
//! show.

use super::model::{Connector, Figures, State, Task};

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

    /// A task's figures; a connector's own line has none.
    fn figures(&self) -> Option<&Figures> {
        self.task.map(|t| &t.figures)
    }
}

/// `12.3/s`, `980/s`, `15.2k/s`.
fn rate(per_second: f64) -> String {
    if per_second >= 10_000.0 {
        format!("{:.1}k/s", per_second / 1000.0)
    } else if per_second >= 100.0 {
        format!("{per_second:.0}/s")
    } else {
        format!("{per_second:.1}/s")
    }
}

/// `850ms`, `12.5s`, `3.2min`.
fn duration_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{:.1}min", ms as f64 / 60_000.0)
    }
}

/// `512B`, `16.0MiB`, `1.5GiB`.
fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
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
        header: "RATE",
        cell: |r| r.figures()?.rate.map(rate),
        optional: true,
    },
    Column {
        header: "LAG",
        cell: |r| r.figures()?.lag_ms.map(duration_ms),
        optional: true,
    },
    Column {
        header: "PENDING",
        cell: |r| r.figures()?.pending.map(|n| n.to_string()),
        optional: true,
    },
    Column {
        header: "WAL",
        cell: |r| {
            let f = r.figures()?;
            let b = bytes(f.wal_bytes?);
            // Only a status other than the normal one is worth the width.
            Some(match f.wal_status.as_deref() {
                None | Some("reserved") => b,
                Some(s) => format!("{b}({s})"),
            })
        },
        optional: true,
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
                figures: Figures::default(),
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
                figures: Figures::default(),
            }],
        }];
        assert_eq!(
            render(&cs, COLUMNS),
            "CONNECTOR              TYPE  TASK  STATE    WORKER  ERROR\n\
             a-long-connector-name  -     -     RUNNING  w:1     -\n\
             a-long-connector-name  -     12    FAILED   -       Boom: it broke\n"
        );
    }

    #[test]
    fn shows_rates_lag_pending_and_wal_of_a_sluice_worker() {
        let cs = vec![
            Connector {
                name: "out".into(),
                kind: "sink".into(),
                state: state("RUNNING", "w:1", None),
                tasks: vec![Task {
                    id: 0,
                    state: state("RUNNING", "w:1", None),
                    figures: Figures {
                        rate: Some(15_234.0),
                        pending: Some(40),
                        ..Figures::default()
                    },
                }],
            },
            Connector {
                name: "pg".into(),
                kind: "source".into(),
                state: state("RUNNING", "w:1", None),
                tasks: vec![Task {
                    id: 0,
                    state: state("RUNNING", "w:1", None),
                    figures: Figures {
                        rate: Some(2.5),
                        lag_ms: Some(1_500),
                        wal_bytes: Some(3 * 1024 * 1024),
                        wal_status: Some("extended".into()),
                        ..Figures::default()
                    },
                }],
            },
        ];
        assert_eq!(
            render(&cs, COLUMNS),
            "CONNECTOR  TYPE    TASK  STATE    WORKER  RATE     LAG   PENDING  WAL\n\
             out        sink    -     RUNNING  w:1     -        -     -        -\n\
             out        sink    0     RUNNING  w:1     15.2k/s  -     40       -\n\
             pg         source  -     RUNNING  w:1     -        -     -        -\n\
             pg         source  0     RUNNING  w:1     2.5/s    1.5s  -        3.0MiB(extended)\n"
        );
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(300_000), "5.0min");
        assert_eq!(bytes(512), "512B");
        assert_eq!(rate(980.4), "980/s");
    }
}
