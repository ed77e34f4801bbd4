//! The scale curve (issue #16, item 6): how the publish and drain rates change with the number of
//! concurrent clients (1, 2, 4, 8) and with the size of the dataset (100k to 10M records), as a
//! table, JSON and a hand-written SVG of two small charts.
//!
//! Concurrency: N publishers, each over its own connection to its own dataset (the realistic case:
//! departments publish their own datasets), share a fixed total of records, so every point does the
//! same work; N followers, each over its own connection, each subscribe to one dataset from the
//! start and read all of it. Size: one dataset grows through the hub; at each size a window of
//! publishes is timed, then the last `drain_window` changes are read (from that sequence on), so
//! the drain measures reading at that size, not re-reading everything.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{Value, json};
use xinqiao_proto::v1 as pb;

use crate::chart::{escape, step};
use crate::hub::{self, Catalog, DRAIN_PAGE, Exchange, Hub};
use crate::report::{Ctx, Res, si};

/// What the curve measures.
#[derive(Debug, Clone)]
pub struct CurveSettings {
    pub clients: Vec<usize>,
    /// Records all publishers together write at each concurrency point.
    pub publish_total: u64,
    /// Records in the dataset each follower drains.
    pub drain_records: u64,
    /// Dataset sizes at which the size points are taken, ascending.
    pub sizes: Vec<u64>,
    /// Records published (timed) just before each size is reached.
    pub window: u64,
    /// The last changes read at each size.
    pub drain_window: u64,
    pub batch: usize,
    pub in_flight: usize,
}

/// The sizes of the full curve, 100k to 10M in steps of about √10, up to `cap` (and `cap` itself
/// when it is not one of them).
pub fn sizes(cap: u64, smallest: u64) -> Vec<u64> {
    let mut out: Vec<u64> = [100_000u64, 300_000, 1_000_000, 3_000_000, 10_000_000]
        .into_iter()
        .filter(|s| *s <= cap && *s >= smallest)
        .collect();
    if out.last() != Some(&cap) && cap >= smallest {
        out.push(cap);
    }
    out
}

impl CurveSettings {
    pub fn new(quick: bool, cap: Option<u64>, batch: usize, in_flight: usize) -> Res<CurveSettings> {
        let s = if quick {
            let cap = cap.unwrap_or(3_000);
            CurveSettings {
                clients: vec![1, 2, 4, 8],
                publish_total: 800,
                drain_records: 1_000,
                sizes: {
                    let mut v: Vec<u64> = [1_000, cap].into_iter().filter(|s| *s <= cap).collect();
                    v.dedup();
                    v
                },
                window: 500,
                drain_window: 500,
                batch,
                in_flight,
            }
        } else {
            let cap = cap.unwrap_or(10_000_000);
            CurveSettings {
                clients: vec![1, 2, 4, 8],
                publish_total: 200_000,
                drain_records: 200_000,
                sizes: sizes(cap, 100_000),
                window: 50_000,
                drain_window: 100_000,
                batch,
                in_flight,
            }
        };
        if s.sizes.is_empty() {
            return Err(format!(
                "--curve-records must be at least {}",
                if quick { 1_000 } else { 100_000 }
            ));
        }
        Ok(s)
    }

    pub fn json(&self) -> Value {
        json!({
            "clients": self.clients,
            "publish_total": self.publish_total,
            "drain_records": self.drain_records,
            "sizes": self.sizes,
            "window": self.window,
            "drain_window": self.drain_window,
            "batch": self.batch,
            "in_flight": self.in_flight,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Publish,
    Drain,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Publish => "publish",
            Op::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// x is the number of concurrent publishers or followers.
    Clients,
    /// x is the number of records in the dataset.
    Records,
}

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    pub axis: Axis,
    pub op: Op,
    pub x: u64,
    /// Records per second, all clients together.
    pub rate: f64,
    /// Records per second per client (the same as `rate` on the size axis).
    pub per_client: f64,
    /// Records timed.
    pub records: u64,
    pub seconds: f64,
}

/// The whole curve.
#[derive(Debug, Clone)]
pub struct Curve {
    pub settings: CurveSettings,
    pub points: Vec<Point>,
    /// Rates of the untimed fills between the size points, as (from, to, records/s).
    pub fills: Vec<(u64, u64, f64)>,
}

/// "1000000" → "1M", "300000" → "300k".
fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1_000 && n.is_multiple_of(100) {
        format!("{}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

impl Curve {
    /// The points of one axis and operation, in the order measured.
    fn series(&self, axis: Axis, op: Op) -> Vec<&Point> {
        self.points.iter().filter(|p| p.axis == axis && p.op == op).collect()
    }

    /// The ratio of a point's rate to the first point of its series (1 client, the smallest size).
    pub fn ratio(&self, p: &Point) -> f64 {
        match self.series(p.axis, p.op).first() {
            Some(first) if first.rate > 0.0 => p.rate / first.rate,
            _ => f64::NAN,
        }
    }

    /// The table, one line a point.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let header = format!(
            "{:<7} {:<8} {:<22} {:>10} {:>12} {:>8} {:>10} {:>8}",
            "curve", "op", "point", "rate", "per client", "ratio", "timed", "seconds"
        );
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        for axis in [Axis::Clients, Axis::Records] {
            for op in [Op::Publish, Op::Drain] {
                for p in self.series(axis, op) {
                    let (curve, point) = match axis {
                        Axis::Clients => (
                            "clients",
                            format!(
                                "{} {}",
                                p.x,
                                match (op, p.x) {
                                    (Op::Publish, 1) => "publisher",
                                    (Op::Publish, _) => "publishers",
                                    (Op::Drain, 1) => "follower",
                                    (Op::Drain, _) => "followers",
                                }
                            ),
                        ),
                        Axis::Records => ("size", format!("at {} records", count(p.x))),
                    };
                    let _ = writeln!(
                        out,
                        "{:<7} {:<8} {:<22} {:>10} {:>12} {:>8.3} {:>10} {:>8.2}",
                        curve,
                        op.name(),
                        point,
                        format!("{}/s", si(p.rate)),
                        format!("{}/s", si(p.per_client)),
                        self.ratio(p),
                        count(p.records),
                        p.seconds
                    );
                }
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "settings": self.settings.json(),
            "points": self.points.iter().map(|p| json!({
                "axis": match p.axis { Axis::Clients => "clients", Axis::Records => "records" },
                "op": p.op.name(),
                "x": p.x,
                "records_per_second": p.rate,
                "per_client_records_per_second": p.per_client,
                "ratio_to_first": self.ratio(p),
                "records_timed": p.records,
                "seconds": p.seconds,
            })).collect::<Vec<_>>(),
            "fills": self.fills.iter().map(|(from, to, r)| json!({"from": from, "to": to, "records_per_second": r})).collect::<Vec<_>>(),
        })
    }

    /// Two charts side by side: rate against clients (log₂ x) and rate against records (log₁₀ x).
    pub fn svg(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#,
            W = SVG_W,
            H = SVG_H
        );
        let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="20" font-size="14" font-weight="bold">{}</text>"#,
            MARGIN_L,
            escape(title)
        );
        let line =
            |axis, op| -> Vec<(f64, f64)> { self.series(axis, op).iter().map(|p| (p.x as f64, p.rate)).collect() };
        let per = |axis, op| -> Vec<(f64, f64)> {
            self.series(axis, op)
                .iter()
                .map(|p| (p.x as f64, p.per_client))
                .collect()
        };
        let panel_w = (SVG_W - 2.0 * MARGIN_L - GAP - MARGIN_R) / 2.0;
        chart(
            &mut out,
            MARGIN_L,
            panel_w,
            "rate against concurrent clients",
            "clients",
            2.0,
            &[
                (
                    "publish, all publishers",
                    "#1f77b4",
                    false,
                    line(Axis::Clients, Op::Publish),
                ),
                ("per publisher", "#1f77b4", true, per(Axis::Clients, Op::Publish)),
                ("drain, all followers", "#d62728", false, line(Axis::Clients, Op::Drain)),
                ("per follower", "#d62728", true, per(Axis::Clients, Op::Drain)),
            ],
        );
        chart(
            &mut out,
            MARGIN_L + panel_w + GAP + MARGIN_L,
            panel_w,
            "rate against records in the dataset",
            "records in the dataset",
            10.0,
            &[
                ("publish", "#1f77b4", false, line(Axis::Records, Op::Publish)),
                ("drain (last window)", "#d62728", false, line(Axis::Records, Op::Drain)),
            ],
        );
        out.push_str("</svg>\n");
        out
    }
}

const SVG_W: f64 = 900.0;
const SVG_H: f64 = 345.0;
const MARGIN_L: f64 = 60.0;
const MARGIN_R: f64 = 20.0;
const GAP: f64 = 30.0;
const TOP: f64 = 50.0;
const PLOT_H: f64 = 220.0;

/// Maps `x` in [lo, hi] (both > 0) onto [0, width] on a log scale.
pub fn log_x(x: f64, lo: f64, hi: f64, width: f64) -> f64 {
    if hi <= lo || x <= 0.0 {
        return 0.0;
    }
    (x.ln() - lo.ln()) / (hi.ln() - lo.ln()) * width
}

/// The powers of `base` from the one at or below `lo` to the one at or above `hi`.
pub fn log_ticks(lo: f64, hi: f64, base: f64) -> Vec<f64> {
    let mut t = base.powf((lo.ln() / base.ln()).floor());
    let mut out = vec![t];
    while t < hi * (1.0 - 1e-9) {
        t *= base;
        out.push(t);
    }
    out
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

type Line<'a> = (&'a str, &'a str, bool, Vec<(f64, f64)>);

fn chart(out: &mut String, x0: f64, w: f64, title: &str, x_name: &str, base: f64, lines: &[Line<'_>]) {
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.3.iter().map(|p| p.0)).collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let ticks = if xs.is_empty() {
        vec![1.0, base]
    } else {
        log_ticks(lo, hi, base)
    };
    let (lo, hi) = (ticks[0], *ticks.last().unwrap_or(&base));
    let hi = if hi <= lo { lo * base } else { hi };
    let y_data = lines
        .iter()
        .flat_map(|l| l.3.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = step(y_data * 1.05);
    let y_max = (y_data * 1.05 / y_step).ceil().max(1.0) * y_step;
    let px = |x: f64| x0 + log_x(x, lo, hi, w);
    let py = |y: f64| TOP + PLOT_H - y / y_max * PLOT_H;
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
        TOP - 8.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{x0}" y="{TOP}" width="{w:.1}" height="{PLOT_H}" fill="none" stroke="#888"/>"##
    );
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" font-size="10" text-anchor="end">{4}/s</text>"##,
            py(y),
            x0 + w,
            x0 - 4.0,
            py(y) + 3.0,
            label(y)
        );
        y += y_step;
    }
    for t in &ticks {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="{2:.1}" font-size="10" text-anchor="middle">{3}</text>"##,
            px(*t),
            TOP + PLOT_H,
            TOP + PLOT_H + 13.0,
            label(*t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} (log scale)</text>"#,
        x0 + w / 2.0,
        TOP + PLOT_H + 28.0,
        escape(x_name)
    );
    for (i, (name, colour, dashed, points)) in lines.iter().enumerate() {
        let dash = if *dashed { r#" stroke-dasharray="5,4""# } else { "" };
        if !points.is_empty() {
            let pts: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{}"/>"#,
                pts.join(" ")
            );
            for (x, y) in points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    px(*x),
                    py(*y)
                );
            }
        }
        let lx = x0 + 8.0 + (i % 2) as f64 * (w / 2.0);
        let ly = TOP + PLOT_H + 44.0 + (i / 2) as f64 * 14.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2.5"{dash}/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 3.5,
            escape(name)
        );
    }
}

fn progress(text: &str) {
    eprintln!("[{}] curve: {text}", chrono::Local::now().format("%H:%M:%S"));
}

/// Subscribes after `after` and reads until the change numbered `until`; returns the changes read.
async fn drain_from(client: &mut Exchange, dataset: &str, after: u64, until: u64) -> Res<u64> {
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            dataset: dataset.into(),
            after_sequence: after,
            consumer: String::new(),
            max_batch: DRAIN_PAGE,
            purpose: "benchmark curve".into(),
            grant_id: String::new(),
        })
        .await
        .map_err(|s| format!("Subscribe: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let mut changes = 0u64;
    while let Some(batch) = stream.message().await.map_err(|s| format!("Subscribe: {s}"))? {
        changes += batch.changes.len() as u64;
        if batch.changes.last().is_some_and(|c| c.sequence >= until) {
            return Ok(changes);
        }
    }
    Err(format!(
        "the subscription ended after {changes} changes, before #{until}"
    ))
}

/// Measures the curve on `hub` (which should have a store of its own), making datasets through
/// `catalog`.
pub async fn run(hub: &Hub, catalog: &mut Catalog, s: &CurveSettings) -> Res<Curve> {
    let mut points = Vec::new();
    let mut fills = Vec::new();

    // Publishers: n datasets, n connections, the total split between them.
    for &n in &s.clients {
        let per = s.publish_total / n as u64;
        let mut sides = Vec::with_capacity(n);
        for _ in 0..n {
            let dataset = catalog.dataset().await?;
            let client = hub::exchange(hub.provider_channel().await?);
            let batches: Vec<pb::PublishRequest> = hub::requests(&dataset, "curve", 0, per, s.batch).collect();
            sides.push((client, batches));
        }
        progress(&format!("{n} publishers, {per} records each"));
        let started = Instant::now();
        let tasks: Vec<_> = sides
            .into_iter()
            .map(|(mut client, batches)| {
                let in_flight = s.in_flight;
                tokio::spawn(async move { hub::publish_stream(&mut client, batches.into_iter(), in_flight, per).await })
            })
            .collect();
        for t in tasks {
            t.await.ctx("publisher task")??;
        }
        let seconds = started.elapsed().as_secs_f64();
        let total = per * n as u64;
        points.push(Point {
            axis: Axis::Clients,
            op: Op::Publish,
            x: n as u64,
            rate: total as f64 / seconds,
            per_client: per as f64 / seconds,
            records: total,
            seconds,
        });
    }

    // Followers: one dataset, n connections, each reading all of it.
    let dataset = catalog.dataset().await?;
    let mut client = hub::exchange(hub.provider_channel().await?);
    progress(&format!(
        "filling the followers' dataset with {} records",
        s.drain_records
    ));
    hub::publish_stream(
        &mut client,
        hub::requests(&dataset, "curve-drain", 0, s.drain_records, s.batch),
        s.in_flight,
        s.drain_records,
    )
    .await?;
    for &n in &s.clients {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(hub::exchange(hub.provider_channel().await?));
        }
        progress(&format!("{n} followers draining {} records each", s.drain_records));
        let until = s.drain_records;
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                let dataset = dataset.clone();
                tokio::spawn(async move { drain_from(&mut c, &dataset, 0, until).await })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            let got = t.await.ctx("follower task")??;
            if got != until {
                return Err(format!("a follower read {got} changes, not {until}"));
            }
            total += got;
        }
        let seconds = started.elapsed().as_secs_f64();
        points.push(Point {
            axis: Axis::Clients,
            op: Op::Drain,
            x: n as u64,
            rate: total as f64 / seconds,
            per_client: until as f64 / seconds,
            records: total,
            seconds,
        });
    }

    // Sizes: one dataset grown through the hub.
    let dataset = catalog.dataset().await?;
    let mut client = hub::exchange(hub.provider_channel().await?);
    let mut filled = 0u64;
    for &size in &s.sizes {
        let window = s.window.min(size);
        let fill_to = size - window;
        if fill_to > filled {
            progress(&format!(
                "growing the dataset from {} to {} records",
                count(filled),
                count(fill_to)
            ));
            let started = Instant::now();
            hub::publish_stream(
                &mut client,
                hub::requests(&dataset, "curve-fill", filled, fill_to, s.batch),
                s.in_flight,
                fill_to - filled,
            )
            .await?;
            fills.push((
                filled,
                fill_to,
                (fill_to - filled) as f64 / started.elapsed().as_secs_f64(),
            ));
            filled = fill_to;
        }
        progress(&format!("publishing {window} records up to {}", count(size)));
        let batches: Vec<pb::PublishRequest> = hub::requests(&dataset, "curve-window", filled, size, s.batch).collect();
        let started = Instant::now();
        hub::publish_stream(&mut client, batches.into_iter(), s.in_flight, size - filled).await?;
        let seconds = started.elapsed().as_secs_f64();
        let r = (size - filled) as f64 / seconds;
        points.push(Point {
            axis: Axis::Records,
            op: Op::Publish,
            x: size,
            rate: r,
            per_client: r,
            records: size - filled,
            seconds,
        });
        filled = size;
        let dw = s.drain_window.min(size);
        progress(&format!("draining the last {dw} of {} records", count(size)));
        let mut follower = hub::exchange(hub.provider_channel().await?);
        let started = Instant::now();
        let got = drain_from(&mut follower, &dataset, size - dw, size).await?;
        let seconds = started.elapsed().as_secs_f64();
        if got != dw {
            return Err(format!("the size drain read {got} changes, not {dw}"));
        }
        points.push(Point {
            axis: Axis::Records,
            op: Op::Drain,
            x: size,
            rate: got as f64 / seconds,
            per_client: got as f64 / seconds,
            records: got,
            seconds,
        });
    }
    Ok(Curve {
        settings: s.clone(),
        points,
        fills,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> Curve {
        let p = |axis, op, x, rate: f64, per: f64| Point {
            axis,
            op,
            x,
            rate,
            per_client: per,
            records: 1000,
            seconds: 1.0,
        };
        Curve {
            settings: CurveSettings::new(true, None, 500, 4).expect("quick settings"),
            points: vec![
                p(Axis::Clients, Op::Publish, 1, 60_000.0, 60_000.0),
                p(Axis::Clients, Op::Publish, 2, 90_000.0, 45_000.0),
                p(Axis::Clients, Op::Drain, 1, 100_000.0, 100_000.0),
                p(Axis::Clients, Op::Drain, 2, 150_000.0, 75_000.0),
                p(Axis::Records, Op::Publish, 100_000, 60_000.0, 60_000.0),
                p(Axis::Records, Op::Publish, 10_000_000, 30_000.0, 30_000.0),
                p(Axis::Records, Op::Drain, 100_000, 120_000.0, 120_000.0),
                p(Axis::Records, Op::Drain, 10_000_000, 120_000.0, 120_000.0),
            ],
            fills: vec![],
        }
    }

    #[test]
    fn sizes_run_from_100k_to_the_cap() {
        assert_eq!(
            sizes(10_000_000, 100_000),
            vec![100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
        );
        assert_eq!(sizes(2_000_000, 100_000), vec![100_000, 300_000, 1_000_000, 2_000_000]);
        assert_eq!(sizes(100_000, 100_000), vec![100_000]);
        assert!(sizes(50_000, 100_000).is_empty());
        assert!(CurveSettings::new(false, Some(50_000), 500, 4).is_err());
        assert_eq!(
            CurveSettings::new(true, None, 500, 4).expect("quick settings").sizes,
            vec![1_000, 3_000]
        );
    }

    #[test]
    fn ratios_are_to_the_first_point_of_each_series() {
        let c = curve();
        let r: Vec<f64> = c.points.iter().map(|p| c.ratio(p)).collect();
        assert_eq!(r, vec![1.0, 1.5, 1.0, 1.5, 1.0, 0.5, 1.0, 1.0]);
        let table = c.table();
        assert!(table.contains("2 publishers"), "{table}");
        assert!(table.contains("at 10M records"), "{table}");
        assert!(table.contains("45.0k/s"), "{table}");
        assert_eq!(c.json()["points"][5]["ratio_to_first"], json!(0.5));
    }

    #[test]
    fn log_axes_place_powers_evenly() {
        assert_eq!(log_ticks(1.0, 8.0, 2.0), vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(log_ticks(100_000.0, 10_000_000.0, 10.0).len(), 3);
        assert_eq!(
            log_ticks(300_000.0, 2_000_000.0, 10.0),
            vec![100_000.0, 1_000_000.0, 10_000_000.0]
        );
        assert!((log_x(4.0, 1.0, 8.0, 300.0) - 200.0).abs() < 1e-9);
        assert!((log_x(1_000_000.0, 100_000.0, 10_000_000.0, 100.0) - 50.0).abs() < 1e-9);
        assert_eq!(step(95_000.0), 20_000.0);
    }

    #[test]
    fn the_svg_has_both_charts_and_every_point() {
        let svg = curve().svg("a <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("<circle").count(), 12);
        assert!(svg.contains(">10M<") && svg.contains(">2<"), "{svg}");
    }
}
