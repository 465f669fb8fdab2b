//! Charts as SVG (a string a web page can embed), and as a standalone HTML
//! page with the chart and its data.
//!
//! Marks carry their data (`class="bar"`, `data-series`, `data-x`,
//! `data-y`), so a page or a test can read what was drawn.

use std::fmt::Write as _;

use super::{ticks, y_range, Chart, ChartKind, Stacking, XAxis};
use crate::value::{format_real, ResultSet};

/// Width and height of the SVG.
pub const WIDTH: f64 = 800.0;
/// Height of the SVG.
pub const HEIGHT: f64 = 450.0;
const PALETTE: &[&str] = &[
    "#0078d4", "#e3008c", "#00a36c", "#ff8c00", "#8764b8", "#00b7c3", "#c50f1f", "#498205",
    "#986f0b", "#4f6bed",
];

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn color(k: usize) -> &'static str {
    PALETTE[k % PALETTE.len()]
}

struct Frame {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

impl Frame {
    fn w(&self) -> f64 {
        self.right - self.left
    }
    fn h(&self) -> f64 {
        self.bottom - self.top
    }
}

/// Draws `chart` as an SVG document.
pub fn render(chart: &Chart) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"kql-chart\" data-kind=\"{}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"DejaVu Sans, Segoe UI, Helvetica, Arial, sans-serif\" font-size=\"12\">",
        chart.kind.name()
    );
    let _ = write!(
        s,
        "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    if !chart.title.is_empty() {
        let _ = write!(
            s,
            "<text class=\"title\" x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{}</text>",
            WIDTH / 2.0,
            escape(&chart.title)
        );
    }
    let legend = chart.legend && (chart.series.len() > 1 || chart.kind == ChartKind::Pie);
    let frame = Frame {
        left: 70.0,
        top: 40.0,
        right: if legend { WIDTH - 170.0 } else { WIDTH - 20.0 },
        bottom: HEIGHT - 70.0,
    };
    if chart.series.iter().all(|x| x.points.is_empty()) {
        let _ = write!(
            s,
            "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data</text>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
    } else if chart.kind == ChartKind::Pie {
        pie(chart, &frame, &mut s);
    } else if chart.x_axis == XAxis::Category {
        bars(chart, &frame, &mut s);
    } else {
        lines(chart, &frame, &mut s);
    }
    if legend {
        let names: Vec<String> = if chart.kind == ChartKind::Pie {
            chart.categories.clone()
        } else {
            chart.series.iter().map(|x| x.name.clone()).collect()
        };
        let _ = write!(s, "<g class=\"legend\">");
        for (k, n) in names.iter().enumerate().take(20) {
            let y = frame.top + 10.0 + k as f64 * 18.0;
            let _ = write!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                frame.right + 20.0,
                y - 10.0,
                color(k),
                frame.right + 38.0,
                y,
                escape(n)
            );
        }
        let _ = write!(s, "</g>");
    }
    s.push_str("</svg>");
    s
}

fn y_axis(chart: &Chart, f: &Frame, s: &mut String) -> (f64, f64) {
    let (lo, hi) = y_range(chart);
    let t = ticks(lo, hi, 5);
    let lo = t.first().copied().unwrap_or(lo).min(lo);
    let hi = t.last().copied().unwrap_or(hi).max(hi);
    let _ = write!(s, "<g class=\"y-axis\">");
    for v in &t {
        let y = f.bottom - (v - lo) / (hi - lo) * f.h();
        let label = if chart.stacking == Stacking::Stacked100 {
            format!("{}%", format_real(*v))
        } else {
            format_real(*v)
        };
        let _ = write!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e1e1e1\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            f.left, f.right, f.left - 6.0, y + 4.0, escape(&label)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{b}\" stroke=\"#666\"/><line x1=\"{l}\" x2=\"{r}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#666\"/>",
        l = f.left,
        r = f.right,
        t = f.top,
        b = f.bottom
    );
    if !chart.y_title.is_empty() {
        let _ = write!(
            s,
            "<text class=\"y-title\" transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            (f.top + f.bottom) / 2.0,
            escape(&chart.y_title)
        );
    }
    let _ = write!(
        s,
        "<text class=\"x-title\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
        (f.left + f.right) / 2.0,
        HEIGHT - 12.0,
        escape(&chart.x_title)
    );
    (lo, hi)
}

fn bars(chart: &Chart, f: &Frame, s: &mut String) {
    let (lo, hi) = y_axis(chart, f, s);
    let n = chart.categories.len().max(1);
    let slot = f.w() / n as f64;
    let stacked = chart.stacking != Stacking::Unstacked;
    let groups = if stacked {
        1
    } else {
        chart.series.len().max(1)
    };
    let bw = (slot * 0.8 / groups as f64).max(1.0);
    let yv = |v: f64| f.bottom - (v - lo) / (hi - lo) * f.h();
    // Category labels.
    let _ = write!(s, "<g class=\"x-axis\">");
    let step = (n / 20).max(1);
    for (i, c) in chart.categories.iter().enumerate() {
        if i % step != 0 {
            continue;
        }
        let x = f.left + slot * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"end\" transform=\"rotate(-35 {x:.1} {:.1})\">{}</text>",
            f.bottom + 14.0,
            f.bottom + 14.0,
            escape(c)
        );
    }
    let _ = write!(s, "</g>");
    let mut base_pos = vec![0f64; n];
    let mut base_neg = vec![0f64; n];
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            chart
                .series
                .iter()
                .flat_map(|x| x.points.iter())
                .filter(|p| p.x as usize == i)
                .map(|p| p.y.abs())
                .sum()
        })
        .collect();
    for (k, ser) in chart.series.iter().enumerate() {
        let _ = write!(
            s,
            "<g class=\"series\" data-series=\"{}\" fill=\"{}\">",
            escape(&ser.name),
            color(k)
        );
        for p in &ser.points {
            let i = p.x as usize;
            let mut v = p.y;
            if chart.stacking == Stacking::Stacked100 && totals.get(i).is_some_and(|t| *t > 0.0) {
                v = v / totals[i] * 100.0;
            }
            let (from, to) = if stacked {
                let b = if v >= 0.0 {
                    &mut base_pos[i]
                } else {
                    &mut base_neg[i]
                };
                let from = *b;
                *b += v;
                (from, *b)
            } else {
                (0.0, v)
            };
            let x =
                f.left + slot * i as f64 + slot * 0.1 + if stacked { 0.0 } else { bw * k as f64 };
            let (y1, y2) = (yv(from.max(to)), yv(from.min(to)));
            let _ = write!(
                s,
                "<rect class=\"bar\" data-series=\"{}\" data-x=\"{}\" data-y=\"{}\" x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bw:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
                escape(&ser.name),
                escape(&chart.x_label(p.x)),
                format_real(p.y),
                (y2 - y1).max(0.0),
                escape(&chart.x_label(p.x)),
                format_real(p.y)
            );
        }
        let _ = write!(s, "</g>");
    }
}

fn lines(chart: &Chart, f: &Frame, s: &mut String) {
    let (lo, hi) = y_axis(chart, f, s);
    let xs = chart
        .series
        .iter()
        .flat_map(|x| x.points.iter().map(|p| p.x));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmax > xmin {
        (xmin, xmax)
    } else {
        (xmin - 1.0, xmin + 1.0)
    };
    let xv = |x: f64| f.left + (x - xmin) / (xmax - xmin) * f.w();
    let yv = |v: f64| f.bottom - (v - lo) / (hi - lo) * f.h();
    let _ = write!(s, "<g class=\"x-axis\">");
    let tick_xs: Vec<f64> = if chart.x_axis == XAxis::Number {
        ticks(xmin, xmax, 6)
            .into_iter()
            .filter(|x| *x >= xmin && *x <= xmax)
            .collect()
    } else {
        super::time_ticks(xmin, xmax, 6)
    };
    for x in tick_xs {
        let px = xv(x);
        let _ = write!(
            s,
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            f.bottom + 16.0,
            escape(&chart.x_label(x))
        );
    }
    let _ = write!(s, "</g>");
    let area = matches!(chart.kind, ChartKind::Area | ChartKind::StackedArea);
    let stacked = chart.stacking != Stacking::Unstacked && area;
    let mut base: std::collections::BTreeMap<u64, f64> = Default::default();
    for (k, ser) in chart.series.iter().enumerate() {
        let pts: Vec<(f64, f64, f64)> = ser
            .points
            .iter()
            .map(|p| {
                let b = if stacked {
                    *base.get(&p.x.to_bits()).unwrap_or(&0.0)
                } else {
                    0.0
                };
                (p.x, b, b + p.y)
            })
            .collect();
        if stacked {
            for (x, _, top) in &pts {
                base.insert(x.to_bits(), *top);
            }
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(x, _, y)| format!("{:.1},{:.1}", xv(*x), yv(*y)))
            .collect();
        let _ = write!(
            s,
            "<g class=\"series\" data-series=\"{}\">",
            escape(&ser.name)
        );
        if area && !pts.is_empty() {
            let mut poly = path.clone();
            for (x, b, _) in pts.iter().rev() {
                poly.push(format!("{:.1},{:.1}", xv(*x), yv(*b)));
            }
            let _ = write!(
                s,
                "<polygon class=\"area\" points=\"{}\" fill=\"{}\" fill-opacity=\"0.35\"/>",
                poly.join(" "),
                color(k)
            );
        }
        if chart.kind != ChartKind::Scatter {
            let _ = write!(s, "<polyline class=\"line\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>", path.join(" "), color(k));
        }
        for (p, (x, _, y)) in ser.points.iter().zip(&pts) {
            let r = if chart.kind == ChartKind::Scatter {
                4.0
            } else {
                2.5
            };
            let _ = write!(
                s,
                "<circle class=\"point\" data-series=\"{}\" data-x=\"{}\" data-y=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{}\"><title>{}: {}</title></circle>",
                escape(&ser.name),
                escape(&chart.x_label(p.x)),
                format_real(p.y),
                xv(*x),
                yv(*y),
                color(k),
                escape(&chart.x_label(p.x)),
                format_real(p.y)
            );
        }
        let _ = write!(s, "</g>");
    }
}

fn pie(chart: &Chart, f: &Frame, s: &mut String) {
    let Some(ser) = chart.series.first() else {
        return;
    };
    let total: f64 = ser.points.iter().map(|p| p.y.max(0.0)).sum();
    let cx = (f.left + f.right) / 2.0;
    let cy = (f.top + f.bottom) / 2.0;
    let r = f.h().min(f.w()) / 2.0 - 10.0;
    let mut angle = -std::f64::consts::FRAC_PI_2;
    let _ = write!(
        s,
        "<g class=\"series\" data-series=\"{}\">",
        escape(&ser.name)
    );
    for p in &ser.points {
        let v = p.y.max(0.0);
        if total <= 0.0 {
            break;
        }
        let share = v / total;
        let sweep = share * std::f64::consts::TAU;
        let (x0, y0) = (cx + r * angle.cos(), cy + r * angle.sin());
        let end = angle + sweep;
        let (x1, y1) = (cx + r * end.cos(), cy + r * end.sin());
        let large = if sweep > std::f64::consts::PI { 1 } else { 0 };
        let label = chart.x_label(p.x);
        let d = if share >= 0.9999 {
            format!("M {:.1} {:.1} A {r:.1} {r:.1} 0 1 1 {:.1} {:.1} A {r:.1} {r:.1} 0 1 1 {:.1} {:.1} Z", cx, cy - r, cx, cy + r, cx, cy - r)
        } else {
            format!(
                "M {cx:.1} {cy:.1} L {x0:.1} {y0:.1} A {r:.1} {r:.1} 0 {large} 1 {x1:.1} {y1:.1} Z"
            )
        };
        let _ = write!(
            s,
            "<path class=\"slice\" data-x=\"{}\" data-y=\"{}\" d=\"{d}\" fill=\"{}\" stroke=\"#fff\"><title>{}: {} ({:.1}%)</title></path>",
            escape(&label),
            format_real(p.y),
            color(p.x as usize),
            escape(&label),
            format_real(p.y),
            share * 100.0
        );
        if share > 0.04 {
            let mid = angle + sweep / 2.0;
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#fff\" font-size=\"11\">{:.1}%</text>",
                cx + r * 0.65 * mid.cos(),
                cy + r * 0.65 * mid.sin() + 4.0,
                share * 100.0
            );
        }
        angle = end;
    }
    let _ = write!(s, "</g>");
}

/// A standalone HTML page: the chart (when there is one), then the data
/// as a table.
pub fn html(title: &str, chart: Option<&Chart>, result: &ResultSet) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:'Segoe UI',Helvetica,Arial,sans-serif;margin:24px;color:#222}}\
         table{{border-collapse:collapse;margin-top:16px}}th,td{{border:1px solid #ddd;padding:4px 8px;text-align:left}}\
         th{{background:#f3f3f3}}td.num{{text-align:right}}pre{{background:#f6f6f6;padding:8px}}</style></head><body>\
         <h1>{t}</h1>",
        t = escape(title)
    );
    if let Some(c) = chart {
        s.push_str(&render(c));
    }
    s.push_str("<table class=\"result\"><thead><tr>");
    for c in &result.columns {
        let _ = write!(s, "<th title=\"{}\">{}</th>", c.ty, escape(&c.name));
    }
    s.push_str("</tr></thead><tbody>");
    for row in &result.rows {
        s.push_str("<tr>");
        for (c, v) in result.columns.iter().zip(row) {
            let class = if c.ty.is_numeric() {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{}</td>", escape(&v.to_string()));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></body></html>\n");
    s
}
