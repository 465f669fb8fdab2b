//! KQL's `render`: the chart a query asks for, built from its result, and
//! drawn as terminal text ([`text`]), SVG or an HTML page ([`svg`]), or PNG
//! ([`png`], with the `png` feature).
//!
//! The columns play KQL's roles: the x axis is `xcolumn` or the first
//! column; the y values are `ycolumns` or every numeric column left; each
//! distinct value of the string columns left (or of `series`) is a series.

pub mod svg;
pub mod text;

#[cfg(feature = "png")]
pub mod png;

use crate::ast::{Name, RenderValue};
use crate::error::{semantic, unsupported, Result};
use crate::translate::RCol;
use crate::types::Type;
use crate::value::{format_datetime, format_timespan, ResultSet, Value};

/// The chart kinds Sluice draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// Vertical bars.
    Column,
    /// Horizontal bars.
    Bar,
    /// A pie.
    Pie,
    /// Lines.
    Line,
    /// Lines over time.
    Time,
    /// Filled areas.
    Area,
    /// Filled areas, stacked.
    StackedArea,
    /// Points.
    Scatter,
    /// No chart: the table.
    Table,
}

impl ChartKind {
    /// The kind for a `render` name.
    pub fn from_name(name: &str) -> Option<ChartKind> {
        Some(match name {
            "columnchart" => ChartKind::Column,
            "barchart" => ChartKind::Bar,
            "piechart" => ChartKind::Pie,
            "linechart" => ChartKind::Line,
            "timechart" => ChartKind::Time,
            "areachart" => ChartKind::Area,
            "stackedareachart" => ChartKind::StackedArea,
            "scatterchart" => ChartKind::Scatter,
            "table" => ChartKind::Table,
            _ => return None,
        })
    }

    /// The `render` name.
    pub fn name(self) -> &'static str {
        match self {
            ChartKind::Column => "columnchart",
            ChartKind::Bar => "barchart",
            ChartKind::Pie => "piechart",
            ChartKind::Line => "linechart",
            ChartKind::Time => "timechart",
            ChartKind::Area => "areachart",
            ChartKind::StackedArea => "stackedareachart",
            ChartKind::Scatter => "scatterchart",
            ChartKind::Table => "table",
        }
    }

    fn is_bars(self) -> bool {
        matches!(self, ChartKind::Column | ChartKind::Bar | ChartKind::Pie)
    }
}

/// `kind=` of `render ... with (...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stacking {
    /// Series side by side (bars) or overlaid (areas).
    Unstacked,
    /// Series stacked.
    Stacked,
    /// Series stacked to 100%.
    Stacked100,
}

/// What `render` asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderSpec {
    /// The chart kind.
    pub kind: ChartKind,
    /// `title`.
    pub title: Option<String>,
    /// `xtitle`.
    pub xtitle: Option<String>,
    /// `ytitle`.
    pub ytitle: Option<String>,
    /// `xcolumn`.
    pub xcolumn: Option<String>,
    /// `ycolumns`.
    pub ycolumns: Vec<String>,
    /// `series`.
    pub series: Vec<String>,
    /// `legend` (visible unless `hidden`).
    pub legend: bool,
    /// `kind` (stacking).
    pub stacking: Stacking,
}

impl RenderSpec {
    /// A spec of `kind` with no properties.
    pub fn new(kind: ChartKind) -> RenderSpec {
        RenderSpec {
            kind,
            title: None,
            xtitle: None,
            ytitle: None,
            xcolumn: None,
            ycolumns: Vec::new(),
            series: Vec::new(),
            legend: true,
            stacking: if kind == ChartKind::StackedArea {
                Stacking::Stacked
            } else {
                Stacking::Unstacked
            },
        }
    }
}

pub(crate) fn spec_from_ast(
    kind: &Name,
    props: &[(Name, RenderValue)],
    cols: &[RCol],
) -> Result<RenderSpec> {
    let k = ChartKind::from_name(&kind.text).ok_or_else(|| {
        unsupported(
            kind.span,
            format!(
                "render '{}' is not supported (columnchart, barchart, piechart, linechart, timechart, areachart, stackedareachart, scatterchart, table)",
                kind.text
            ),
        )
    })?;
    let mut spec = RenderSpec::new(k);
    let text = |v: &RenderValue| -> Option<String> {
        match v {
            RenderValue::Str(s) => Some(s.clone()),
            RenderValue::Names(n) if n.len() == 1 => Some(n[0].text.clone()),
            _ => None,
        }
    };
    let columns = |name: &Name, v: &RenderValue| -> Result<Vec<String>> {
        let names: Vec<(String, crate::error::Span)> = match v {
            RenderValue::Names(n) => n.iter().map(|x| (x.text.clone(), x.span)).collect(),
            RenderValue::Str(s) => s
                .split(',')
                .map(|x| (x.trim().to_string(), name.span))
                .collect(),
            _ => {
                return Err(semantic(
                    name.span,
                    format!("{} takes column names", name.text),
                ))
            }
        };
        for (n, span) in &names {
            if !cols.iter().any(|c| &c.name == n) {
                let have: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
                return Err(semantic(
                    *span,
                    format!(
                        "render {}: there is no column '{n}' (the result has {})",
                        name.text,
                        have.join(", ")
                    ),
                ));
            }
        }
        Ok(names.into_iter().map(|(n, _)| n).collect())
    };
    for (name, v) in props {
        let bad = || {
            semantic(
                name.span,
                format!(
                    "render property {} has a value of the wrong kind",
                    name.text
                ),
            )
        };
        match name.text.as_str() {
            "title" => spec.title = Some(text(v).ok_or_else(bad)?),
            "xtitle" => spec.xtitle = Some(text(v).ok_or_else(bad)?),
            "ytitle" => spec.ytitle = Some(text(v).ok_or_else(bad)?),
            "xcolumn" => spec.xcolumn = columns(name, v)?.into_iter().next(),
            "ycolumns" => spec.ycolumns = columns(name, v)?,
            "series" => spec.series = columns(name, v)?,
            "legend" => {
                spec.legend = match text(v).as_deref() {
                    Some("visible") => true,
                    Some("hidden") => false,
                    _ => return Err(bad()),
                }
            }
            "kind" => {
                spec.stacking = match text(v).as_deref() {
                    Some("default") | Some("unstacked") => Stacking::Unstacked,
                    Some("stacked") => Stacking::Stacked,
                    Some("stacked100") => Stacking::Stacked100,
                    _ => return Err(unsupported(name.span, "render kind is default, unstacked, stacked or stacked100 here")),
                }
            }
            other => {
                return Err(unsupported(
                    name.span,
                    format!("the render property '{other}' is not supported (title, xtitle, ytitle, xcolumn, ycolumns, series, legend, kind)"),
                ))
            }
        }
    }
    Ok(spec)
}

/// How the x axis reads its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Distinct labels, in order of first appearance.
    Category,
    /// Numbers.
    Number,
    /// Datetimes (microseconds).
    Time,
    /// Timespans (microseconds).
    Span,
}

/// One point: its x (a category index or a number) and y.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Category index, or the x value.
    pub x: f64,
    /// The y value.
    pub y: f64,
}

/// One series of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name (the series columns' values, or the y column).
    pub name: String,
    /// Its points, in x order.
    pub points: Vec<Point>,
}

/// A chart ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The kind.
    pub kind: ChartKind,
    /// Title (the spec's, or empty).
    pub title: String,
    /// The x axis's title.
    pub x_title: String,
    /// The y axis's title.
    pub y_title: String,
    /// How x values read.
    pub x_axis: XAxis,
    /// Category labels (for [`XAxis::Category`]).
    pub categories: Vec<String>,
    /// The series.
    pub series: Vec<Series>,
    /// Whether to draw the legend.
    pub legend: bool,
    /// Stacking.
    pub stacking: Stacking,
}

impl Chart {
    /// Text for an x value.
    pub fn x_label(&self, x: f64) -> String {
        match self.x_axis {
            XAxis::Category => self.categories.get(x as usize).cloned().unwrap_or_default(),
            XAxis::Number => crate::value::format_real(round_sig(x)),
            XAxis::Time => format_datetime(x as i64),
            XAxis::Span => format_timespan(x as i64),
        }
    }
}

fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powi(6 - v.abs().log10().ceil() as i32);
    (v * mag).round() / mag
}

/// Builds the chart `spec` asks for from `result`; an error says which
/// column is missing or unusable.
pub fn build(spec: &RenderSpec, result: &ResultSet) -> std::result::Result<Chart, String> {
    let cols = &result.columns;
    if cols.is_empty() {
        return Err("the result has no columns to chart".into());
    }
    let find = |n: &str| -> std::result::Result<usize, String> {
        result
            .column(n)
            .ok_or_else(|| format!("render: there is no column '{n}'"))
    };
    let x = match &spec.xcolumn {
        Some(n) => find(n)?,
        None => 0,
    };
    let series_cols: Vec<usize> = if !spec.series.is_empty() {
        spec.series
            .iter()
            .map(|n| find(n))
            .collect::<std::result::Result<_, _>>()?
    } else if spec.kind == ChartKind::Pie {
        Vec::new()
    } else {
        (0..cols.len())
            .filter(|&i| i != x && matches!(cols[i].ty, Type::String | Type::Bool | Type::Dynamic))
            .collect()
    };
    let y_cols: Vec<usize> = if !spec.ycolumns.is_empty() {
        spec.ycolumns
            .iter()
            .map(|n| find(n))
            .collect::<std::result::Result<_, _>>()?
    } else {
        (0..cols.len())
            .filter(|&i| i != x && !series_cols.contains(&i) && cols[i].ty.is_numeric())
            .collect()
    };
    let y_cols = if spec.kind == ChartKind::Pie {
        y_cols.into_iter().take(1).collect()
    } else {
        y_cols
    };
    if y_cols.is_empty() {
        return Err(format!(
            "render {}: no numeric column to plot (the result has {})",
            spec.kind.name(),
            cols.iter()
                .map(|c| format!("{}: {}", c.name, c.ty))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let x_ty = cols[x].ty;
    let x_axis = if spec.kind.is_bars() {
        XAxis::Category
    } else {
        match x_ty {
            Type::DateTime => XAxis::Time,
            Type::TimeSpan => XAxis::Span,
            t if t.is_numeric() => XAxis::Number,
            _ => XAxis::Category,
        }
    };
    let mut categories: Vec<String> = Vec::new();
    // The x values behind the categories, to order an axis of numbers,
    // datetimes or timespans by value rather than by row.
    let mut category_values: Vec<f64> = Vec::new();
    let mut series: Vec<Series> = Vec::new();
    for row in &result.rows {
        let xv = &row[x];
        let xnum = match x_axis {
            XAxis::Category => {
                let label = xv.to_string();
                match categories.iter().position(|c| *c == label) {
                    Some(i) => i as f64,
                    None => {
                        categories.push(label);
                        category_values.push(xv.as_f64().unwrap_or(f64::NAN));
                        (categories.len() - 1) as f64
                    }
                }
            }
            _ => match xv.as_f64() {
                Some(v) => v,
                None => continue,
            },
        };
        let key: Vec<String> = series_cols.iter().map(|&i| row[i].to_string()).collect();
        let key = key.join(", ");
        for &yc in &y_cols {
            let Some(y) = row[yc].as_f64() else { continue };
            if matches!(row[yc], Value::Null) {
                continue;
            }
            let name = match (key.is_empty(), y_cols.len() > 1) {
                (true, _) => cols[yc].name.clone(),
                (false, false) => key.clone(),
                (false, true) => format!("{key}:{}", cols[yc].name),
            };
            let s = match series.iter().position(|s| s.name == name) {
                Some(i) => &mut series[i],
                None => {
                    series.push(Series {
                        name,
                        points: Vec::new(),
                    });
                    let last = series.len() - 1;
                    &mut series[last]
                }
            };
            s.points.push(Point { x: xnum, y });
        }
    }
    if x_axis == XAxis::Category && x_ty.is_plottable() {
        let mut order: Vec<usize> = (0..categories.len()).collect();
        order.sort_by(|&a, &b| category_values[a].total_cmp(&category_values[b]));
        let mut rank = vec![0usize; order.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old] = new;
        }
        categories = order.iter().map(|&i| categories[i].clone()).collect();
        for s in &mut series {
            for p in &mut s.points {
                p.x = rank[p.x as usize] as f64;
            }
        }
    }
    if x_axis != XAxis::Category || x_ty.is_plottable() {
        for s in &mut series {
            s.points.sort_by(|a, b| a.x.total_cmp(&b.x));
        }
    }
    let y_title = spec.ytitle.clone().unwrap_or_else(|| {
        if y_cols.len() == 1 {
            cols[y_cols[0]].name.clone()
        } else {
            String::new()
        }
    });
    Ok(Chart {
        kind: spec.kind,
        title: spec.title.clone().unwrap_or_default(),
        x_title: spec.xtitle.clone().unwrap_or_else(|| cols[x].name.clone()),
        y_title,
        x_axis,
        categories,
        series,
        legend: spec.legend,
        stacking: spec.stacking,
    })
}

/// About `n` round tick values covering `lo..=hi`.
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut v = start;
    while v <= hi + step * 1e-9 {
        out.push(round_sig(v));
        v += step;
        if out.len() > 50 {
            break;
        }
    }
    // The axis reaches past the highest value.
    if out.last().is_some_and(|l| *l < hi - step * 1e-9) {
        let next = out.last().copied().unwrap_or(start) + step;
        out.push(round_sig(next));
    }
    out
}

/// Round tick values for an axis of datetimes or timespans (microseconds):
/// whole seconds, minutes, hours or days, about `n` of them within
/// `lo..=hi`.
pub fn time_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    const S: f64 = 1e6;
    const STEPS: &[f64] = &[
        S,
        5.0 * S,
        10.0 * S,
        30.0 * S,
        60.0 * S,
        300.0 * S,
        600.0 * S,
        1800.0 * S,
        3600.0 * S,
        7200.0 * S,
        10800.0 * S,
        21600.0 * S,
        43200.0 * S,
        86400.0 * S,
        7.0 * 86400.0 * S,
        30.0 * 86400.0 * S,
        365.0 * 86400.0 * S,
    ];
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let step = STEPS.iter().copied().find(|s| *s >= raw).unwrap_or(raw);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi && out.len() <= 50 {
        out.push(v);
        v += step;
    }
    out
}

/// The y range of a chart: from 0 (or the lowest value) to the highest,
/// stacked values summed per x.
pub fn y_range(chart: &Chart) -> (f64, f64) {
    let mut lo = 0f64;
    let mut hi = 0f64;
    if chart.stacking != Stacking::Unstacked && chart.kind != ChartKind::Pie {
        if chart.stacking == Stacking::Stacked100 {
            return (0.0, 100.0);
        }
        let mut sums: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
        for s in &chart.series {
            for p in &s.points {
                let e = sums.entry(p.x.to_bits() as i64).or_default();
                if p.y >= 0.0 {
                    e.0 += p.y;
                } else {
                    e.1 += p.y;
                }
            }
        }
        for (pos, neg) in sums.values() {
            hi = hi.max(*pos);
            lo = lo.min(*neg);
        }
    } else {
        for s in &chart.series {
            for p in &s.points {
                hi = hi.max(p.y);
                lo = lo.min(p.y);
            }
        }
    }
    if hi == lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::Column;

    fn result() -> ResultSet {
        ResultSet {
            columns: vec![
                Column {
                    name: "hour".into(),
                    ty: Type::TimeSpan,
                },
                Column {
                    name: "city".into(),
                    ty: Type::String,
                },
                Column {
                    name: "event_count".into(),
                    ty: Type::Long,
                },
            ],
            rows: vec![
                vec![
                    Value::TimeSpan(600_000_000),
                    Value::String("Austin".into()),
                    Value::Long(3),
                ],
                vec![
                    Value::TimeSpan(0),
                    Value::String("Austin".into()),
                    Value::Long(1),
                ],
                vec![
                    Value::TimeSpan(0),
                    Value::String("Seattle".into()),
                    Value::Long(2),
                ],
            ],
        }
    }

    #[test]
    fn string_columns_make_series_and_numbers_the_values() {
        let c = build(&RenderSpec::new(ChartKind::Column), &result()).expect("chart");
        assert_eq!(c.x_axis, XAxis::Category);
        // Timespans on a category axis are in time order.
        assert_eq!(c.categories, ["00:00:00", "00:10:00"]);
        assert_eq!(c.series.len(), 2);
        assert_eq!(c.series[0].name, "Austin");
        assert_eq!(
            c.series[0].points,
            [Point { x: 0.0, y: 1.0 }, Point { x: 1.0, y: 3.0 }]
        );
        assert_eq!(c.series[1].points, [Point { x: 0.0, y: 2.0 }]);
        let t = build(&RenderSpec::new(ChartKind::Time), &result()).expect("chart");
        assert_eq!(t.x_axis, XAxis::Span);
        // Points are in x order on a continuous axis.
        assert_eq!(t.series[0].points[0], Point { x: 0.0, y: 1.0 });
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 100.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(0.0, 7.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0]);
        // 00:00 to 23:50 in about six steps: every 6 hours.
        let h = 3_600e6;
        assert_eq!(
            time_ticks(0.0, 23.0 * h + 50.0 * 60e6, 6),
            [0.0, 6.0 * h, 12.0 * h, 18.0 * h]
        );
    }
}
