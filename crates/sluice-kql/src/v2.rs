//! Azure Data Explorer's v2 query response (`POST /v2/rest/query`): an
//! array of frames (`DataSetHeader`, `DataTable`s, `DataSetCompletion`).
//! The `PrimaryResult` table becomes a [`ResultSet`] with KQL types; the
//! `Visualization` entry of `@ExtendedProperties` becomes the chart.

use serde_json::Value as Json;

use crate::render::{ChartKind, RenderSpec, Stacking};
use crate::translate::Column;
use crate::types::Type;
use crate::value::ResultSet;

/// The answer to one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The primary result.
    pub result: ResultSet,
    /// The chart the query's `render` asked for, if any.
    pub render: Option<RenderSpec>,
}

/// Reads a v2 response body. Errors (malformed frames, a query error
/// reported in the frames) are described.
pub fn parse(body: &Json) -> Result<Response, String> {
    let frames = body
        .as_array()
        .ok_or("a v2 response is a JSON array of frames, and this is not an array")?;
    let mut result = None;
    let mut render = None;
    for f in frames {
        let frame_type = f.get("FrameType").and_then(Json::as_str).unwrap_or("");
        match frame_type {
            "DataTable" => {
                let kind = f.get("TableKind").and_then(Json::as_str).unwrap_or("");
                let name = f.get("TableName").and_then(Json::as_str).unwrap_or("");
                if kind == "PrimaryResult" && result.is_none() {
                    result = Some(table(f)?);
                } else if kind == "QueryProperties" || name == "@ExtendedProperties" {
                    render = visualization(f).or(render);
                }
            }
            "DataSetCompletion" if f.get("HasErrors").and_then(Json::as_bool) == Some(true) => {
                let msg = f
                    .get("OneApiErrors")
                    .and_then(Json::as_array)
                    .and_then(|e| e.first())
                    .map(one_api_message)
                    .unwrap_or_else(|| "the query failed (no error detail)".into());
                return Err(msg);
            }
            _ => {}
        }
    }
    let result = result.ok_or("the response has no PrimaryResult table")?;
    Ok(Response { result, render })
}

fn one_api_message(e: &Json) -> String {
    let err = e.get("error").unwrap_or(e);
    let code = err.get("code").and_then(Json::as_str).unwrap_or("");
    let msg = err
        .get("@message")
        .or_else(|| err.get("message"))
        .and_then(Json::as_str)
        .unwrap_or("");
    format!("{code}: {msg}")
}

fn table(f: &Json) -> Result<ResultSet, String> {
    let cols = f
        .get("Columns")
        .and_then(Json::as_array)
        .ok_or("the PrimaryResult table has no Columns")?;
    let mut columns = Vec::new();
    for c in cols {
        let name = c
            .get("ColumnName")
            .and_then(Json::as_str)
            .ok_or("a column has no ColumnName")?;
        let ty_name = c
            .get("ColumnType")
            .and_then(Json::as_str)
            .unwrap_or("string");
        let ty = match ty_name {
            "guid" => Type::String,
            t => Type::from_name(t).unwrap_or(Type::String),
        };
        columns.push(Column {
            name: name.to_string(),
            ty,
        });
    }
    let rows_json = f
        .get("Rows")
        .and_then(Json::as_array)
        .ok_or("the PrimaryResult table has no Rows")?;
    let mut rows = Vec::new();
    for r in rows_json {
        // An error in the middle of the rows is an object, not an array.
        let Some(cells) = r.as_array() else {
            let msg = r
                .get("OneApiErrors")
                .and_then(Json::as_array)
                .and_then(|e| e.first())
                .map(one_api_message)
                .unwrap_or_else(|| r.to_string());
            return Err(format!("the query failed while returning rows: {msg}"));
        };
        if cells.len() != columns.len() {
            return Err(format!(
                "a row has {} values for {} columns",
                cells.len(),
                columns.len()
            ));
        }
        rows.push(
            cells
                .iter()
                .zip(&columns)
                .map(|(v, c)| ResultSet::value_from_json(c.ty, v))
                .collect(),
        );
    }
    Ok(ResultSet { columns, rows })
}

fn visualization(f: &Json) -> Option<RenderSpec> {
    let rows = f.get("Rows")?.as_array()?;
    for r in rows {
        let cells = r.as_array()?;
        if cells.get(1).and_then(Json::as_str) != Some("Visualization") {
            continue;
        }
        let v: Json = match cells.get(2)? {
            Json::String(s) => serde_json::from_str(s).ok()?,
            other => other.clone(),
        };
        let kind = v.get("Visualization").and_then(Json::as_str)?;
        let mut spec = RenderSpec::new(ChartKind::from_name(kind)?);
        let text = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_string);
        let list = |k: &str| -> Vec<String> {
            match v.get(k) {
                Some(Json::String(s)) => s
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
                Some(Json::Array(a)) => a
                    .iter()
                    .filter_map(Json::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        };
        spec.title = text("Title");
        spec.xtitle = text("XTitle");
        spec.ytitle = text("YTitle");
        spec.xcolumn = text("XColumn");
        spec.ycolumns = list("YColumns");
        spec.series = list("Series");
        if text("Legend").as_deref() == Some("hidden") {
            spec.legend = false;
        }
        spec.stacking = match text("Kind").as_deref() {
            Some("stacked") => Stacking::Stacked,
            Some("stacked100") => Stacking::Stacked100,
            _ => spec.stacking,
        };
        return Some(spec);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use serde_json::json;

    #[test]
    fn frames_become_typed_rows_and_a_chart() {
        let body = json!([
            {"FrameType": "DataSetHeader", "IsProgressive": false, "Version": "v2.0"},
            {"FrameType": "DataTable", "TableId": 0, "TableKind": "QueryProperties", "TableName": "@ExtendedProperties",
             "Columns": [{"ColumnName": "TableId", "ColumnType": "int"}, {"ColumnName": "Key", "ColumnType": "string"}, {"ColumnName": "Value", "ColumnType": "dynamic"}],
             "Rows": [[1, "Visualization", "{\"Visualization\":\"piechart\",\"Title\":\"Sales\",\"XColumn\":null}"]]},
            {"FrameType": "DataTable", "TableId": 1, "TableKind": "PrimaryResult", "TableName": "PrimaryResult",
             "Columns": [{"ColumnName": "city", "ColumnType": "string"}, {"ColumnName": "t", "ColumnType": "datetime"}, {"ColumnName": "d", "ColumnType": "timespan"}, {"ColumnName": "n", "ColumnType": "long"}],
             "Rows": [["Austin", "2020-10-09T07:23:10Z", "00:10:00", 3], ["Seattle", null, null, null]]},
            {"FrameType": "DataSetCompletion", "HasErrors": false, "Cancelled": false}
        ]);
        let r = parse(&body).expect("parses");
        assert_eq!(r.result.rows[0][1], Value::DateTime(1_602_228_190_000_000));
        assert_eq!(r.result.rows[0][2], Value::TimeSpan(600_000_000));
        assert_eq!(r.result.rows[1][3], Value::Null);
        let spec = r.render.expect("chart");
        assert_eq!(spec.kind, ChartKind::Pie);
        assert_eq!(spec.title.as_deref(), Some("Sales"));
    }

    #[test]
    fn errors_in_frames_are_reported() {
        let body = json!([
            {"FrameType": "DataSetHeader"},
            {"FrameType": "DataSetCompletion", "HasErrors": true, "OneApiErrors": [{"error": {"code": "General_BadRequest", "@message": "Semantic error"}}]}
        ]);
        assert_eq!(
            parse(&body).expect_err("error"),
            "General_BadRequest: Semantic error"
        );
    }
}
