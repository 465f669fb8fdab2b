//! Charts as terminal text: bars for categories and pies, a character
//! plot for lines, areas and points.

use super::{y_range, Chart, ChartKind, XAxis};
use crate::value::format_real;

/// Bar width of the largest value.
const BAR: usize = 40;
/// Plot size in characters.
const PLOT_W: usize = 60;
const PLOT_H: usize = 14;
/// Series markers on plots.
const MARKS: &[char] = &['*', 'o', '+', 'x', '#', '@', '%', '&', '=', '~'];

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// A bar of `v` scaled so `max` is [`BAR`] wide, in eighths of a cell.
fn bar(v: f64, max: f64) -> String {
    if max <= 0.0 || !v.is_finite() {
        return String::new();
    }
    let eighths = ((v.abs() / max) * (BAR * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    s.push_str(PARTS[eighths % 8]);
    if v < 0.0 {
        s = s.replace('█', "░");
    }
    s
}

/// Draws `chart` as text.
pub fn render(chart: &Chart) -> String {
    let mut out = String::new();
    if !chart.title.is_empty() {
        out.push_str(&chart.title);
        out.push('\n');
    }
    if chart.series.iter().all(|s| s.points.is_empty()) {
        out.push_str("(no data to chart)\n");
        return out;
    }
    match chart.kind {
        ChartKind::Pie => pie(chart, &mut out),
        _ if chart.x_axis == XAxis::Category => bars(chart, &mut out),
        _ => plot(chart, &mut out),
    }
    out
}

fn bars(chart: &Chart, out: &mut String) {
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.y.abs()))
        .fold(0f64, f64::max);
    let label_w = chart
        .categories
        .iter()
        .map(|c| width(c))
        .max()
        .unwrap_or(0)
        .max(width(&chart.x_title));
    let many = chart.series.len() > 1;
    let series_w = chart
        .series
        .iter()
        .map(|s| width(&s.name))
        .max()
        .unwrap_or(0);
    out.push_str(&format!(
        "{}  {}\n",
        pad(&chart.x_title, label_w),
        chart.y_title
    ));
    for (i, cat) in chart.categories.iter().enumerate() {
        let mut first = true;
        for s in &chart.series {
            for p in s.points.iter().filter(|p| p.x as usize == i) {
                let label = if first { cat.as_str() } else { "" };
                first = false;
                if many {
                    out.push_str(&format!(
                        "{}  {}  {} {}\n",
                        pad(label, label_w),
                        pad(&s.name, series_w),
                        bar(p.y, max),
                        format_real(p.y)
                    ));
                } else {
                    out.push_str(&format!(
                        "{}  {} {}\n",
                        pad(label, label_w),
                        bar(p.y, max),
                        format_real(p.y)
                    ));
                }
            }
        }
    }
}

fn pie(chart: &Chart, out: &mut String) {
    let Some(s) = chart.series.first() else {
        return;
    };
    let total: f64 = s.points.iter().map(|p| p.y.max(0.0)).sum();
    let label_w = chart.categories.iter().map(|c| width(c)).max().unwrap_or(0);
    for p in &s.points {
        let share = if total > 0.0 {
            p.y.max(0.0) / total * 100.0
        } else {
            0.0
        };
        let cat = chart.x_label(p.x);
        out.push_str(&format!(
            "{}  {:>5.1}%  {} {}\n",
            pad(&cat, label_w),
            share,
            bar(share, 100.0),
            format_real(p.y)
        ));
    }
}

fn plot(chart: &Chart, out: &mut String) {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmax > xmin {
        (xmin, xmax)
    } else {
        (xmin - 1.0, xmin + 1.0)
    };
    let (ylo, yhi) = y_range(chart);
    let mut grid = vec![vec![' '; PLOT_W]; PLOT_H];
    let col = |x: f64| (((x - xmin) / (xmax - xmin)) * (PLOT_W - 1) as f64).round() as usize;
    let row = |y: f64| {
        let r = ((y - ylo) / (yhi - ylo) * (PLOT_H - 1) as f64).round() as usize;
        PLOT_H - 1 - r.min(PLOT_H - 1)
    };
    for (k, s) in chart.series.iter().enumerate() {
        let mark = MARKS[k % MARKS.len()];
        let pts: Vec<(usize, usize)> = s.points.iter().map(|p| (col(p.x), row(p.y))).collect();
        if chart.kind != ChartKind::Scatter {
            // Lines: fill the columns between consecutive points.
            for w in pts.windows(2) {
                let ((c0, r0), (c1, r1)) = (w[0], w[1]);
                #[allow(clippy::needless_range_loop)]
                for c in c0.min(c1)..=c0.max(c1) {
                    let t = if c1 == c0 {
                        0.0
                    } else {
                        (c as f64 - c0 as f64) / (c1 as f64 - c0 as f64)
                    };
                    let r = (r0 as f64 + t * (r1 as f64 - r0 as f64)).round() as usize;
                    if grid[r][c] == ' ' {
                        grid[r][c] = '·';
                    }
                }
            }
        }
        for (c, r) in pts {
            grid[r][c] = mark;
        }
    }
    let top = format_real(super::round_sig(yhi));
    let bottom = format_real(super::round_sig(ylo));
    let lw = width(&top).max(width(&bottom));
    if !chart.y_title.is_empty() {
        out.push_str(&format!("{}\n", chart.y_title));
    }
    for (r, line) in grid.iter().enumerate() {
        let label = if r == 0 {
            top.clone()
        } else if r == PLOT_H - 1 {
            bottom.clone()
        } else {
            String::new()
        };
        let text: String = line.iter().collect();
        out.push_str(&format!("{:>lw$} ┤{}\n", label, text.trim_end()));
    }
    out.push_str(&format!("{} └{}\n", " ".repeat(lw), "─".repeat(PLOT_W)));
    let left = chart.x_label(xmin);
    let right = chart.x_label(xmax);
    let gap = PLOT_W.saturating_sub(width(&left) + width(&right));
    out.push_str(&format!(
        "{}  {left}{}{right}\n",
        " ".repeat(lw),
        " ".repeat(gap)
    ));
    out.push_str(&format!("{}  {}\n", " ".repeat(lw), chart.x_title));
    if chart.legend && (chart.series.len() > 1 || chart.y_title.is_empty()) {
        for (k, s) in chart.series.iter().enumerate() {
            out.push_str(&format!("  {} {}\n", MARKS[k % MARKS.len()], s.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Point, Series, Stacking};
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        let c = Chart {
            kind: ChartKind::Column,
            title: "t".into(),
            x_title: "city".into(),
            y_title: "total".into(),
            x_axis: XAxis::Category,
            categories: vec!["Austin".into(), "Seattle".into()],
            series: vec![Series {
                name: "total".into(),
                points: vec![Point { x: 0.0, y: 10.0 }, Point { x: 1.0, y: 5.0 }],
            }],
            legend: true,
            stacking: Stacking::Unstacked,
        };
        let text = render(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "t");
        assert_eq!(lines[1], "city     total");
        assert_eq!(lines[2], format!("Austin   {} 10", "█".repeat(40)));
        assert_eq!(lines[3], format!("Seattle  {} 5", "█".repeat(20)));
    }
}
