//! A plain SVG of each phase: throughput (published and slowest follower, per row) and the hub's
//! resident memory (every second) over time.

use std::fmt::Write as _;

use crate::chart::{escape, step};
use crate::run::PhaseReport;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const GAP: f64 = 60.0;

struct Series<'a> {
    name: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// One panel at vertical offset `y0`.
fn panel(out: &mut String, y0: f64, title: &str, unit: &str, x_max: f64, series: &[Series<'_>]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = step(y_max_data * 1.05);
    let y_max = (y_max_data * 1.05 / y_step).ceil().max(1.0) * y_step;
    let x_max = x_max.max(1.0);
    let x_step = step(x_max);
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| y0 + PANEL - y / y_max * PANEL;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
        y0 - 8.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y0:.1}" width="{plot_w:.1}" height="{PANEL}" fill="none" stroke="#888"/>"##
    );
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" font-size="11" text-anchor="end">{4}</text>"##,
            py(y),
            LEFT + plot_w,
            LEFT - 6.0,
            py(y) + 4.0,
            label(y)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#eee"/><text x="{0:.1}" y="{3:.1}" font-size="11" text-anchor="middle">{4}</text>"##,
            px(x),
            y0,
            y0 + PANEL,
            y0 + PANEL + 14.0,
            label(x)
        );
        x += x_step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">s</text><text x="12" y="{:.1}" font-size="11" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        LEFT + plot_w,
        y0 + PANEL + 28.0,
        y0 + PANEL / 2.0,
        y0 + PANEL / 2.0,
        escape(unit)
    );
    for (i, s) in series.iter().enumerate() {
        if !s.points.is_empty() {
            let points: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                s.colour,
                points.join(" ")
            );
        }
        let lx = LEFT + 10.0 + i as f64 * 220.0;
        let ly = y0 + 14.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            lx + 18.0,
            s.colour,
            lx + 22.0,
            ly + 4.0,
            escape(s.name)
        );
    }
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// The SVG document for `phases`, each with a throughput panel and a memory panel.
pub fn render(title: &str, phases: &[&PhaseReport]) -> String {
    let height = TOP + phases.len() as f64 * 2.0 * (PANEL + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="13">{}</text>"#,
        escape(title)
    );
    let mut y0 = TOP + GAP / 2.0;
    for phase in phases {
        let x_max = phase
            .rows
            .last()
            .map_or(0.0, |r| r.elapsed)
            .max(phase.rss_samples.last().map_or(0.0, |s| s.0));
        let rate = |f: fn(&crate::run::Row) -> f64| -> Vec<(f64, f64)> {
            let mut points = vec![];
            let mut previous = 0.0;
            for r in &phase.rows {
                // Each row's rate holds for its interval: drawn as steps.
                points.push((previous, f(r)));
                points.push((r.elapsed, f(r)));
                previous = r.elapsed;
            }
            points
        };
        let target = match (phase.config.rate, phase.config.max_lag) {
            (Some(r), _) => format!(", target {r:.0}/s"),
            (None, Some(lag)) if phase.config.followers > 0 => {
                format!(", unthrottled within {lag} changes of the slowest follower")
            }
            (None, _) => ", unthrottled".into(),
        };
        let mut series = vec![
            Series {
                name: "published records/s",
                colour: "#1f77b4",
                points: rate(|r| r.published_rate),
            },
            Series {
                name: "slowest follower records/s",
                colour: "#ff7f0e",
                points: rate(|r| r.slowest_rate),
            },
        ];
        if let Some(r) = phase.config.rate {
            series.push(Series {
                name: "target",
                colour: "#999",
                points: vec![(0.0, r), (x_max, r)],
            });
        }
        panel(
            &mut out,
            y0,
            &format!(
                "{}: {} publishers, {} followers{target}",
                phase.config.name, phase.config.publishers, phase.config.followers
            ),
            "records/s",
            x_max,
            &series,
        );
        y0 += PANEL + GAP;
        let rss = Series {
            name: "hub VmRSS (MiB)",
            colour: "#2ca02c",
            points: phase
                .rss_samples
                .iter()
                .filter(|s| s.1 > 0)
                .map(|(t, b)| (*t, *b as f64 / 1048576.0))
                .collect(),
        };
        panel(
            &mut out,
            y0,
            &format!("{}: hub resident memory", phase.config.name),
            "MiB",
            x_max,
            &[rss],
        );
        y0 += PANEL + GAP;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(step(100.0), 20.0);
        assert_eq!(step(43_000.0), 10_000.0);
        assert_eq!(step(7.0), 2.0);
        assert_eq!(label(20_000.0), "20k");
    }
}
