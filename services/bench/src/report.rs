//! The results: one row per measured pair, printed as a table and written as JSON.

use serde_json::{Value, json};

pub type Res<T> = Result<T, String>;

/// Turns any displayable error into a message naming what was being done.
pub trait Ctx<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    RecordsPerSec,
    RequestsPerSec,
    Millis,
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::RecordsPerSec => "records/s",
            Unit::RequestsPerSec => "requests/s",
            Unit::Millis => "ms",
            Unit::Bytes => "bytes",
        }
    }

    pub fn format(self, v: f64) -> String {
        match self {
            Unit::RecordsPerSec => format!("{}/s", si(v)),
            Unit::RequestsPerSec => format!("{} rq/s", si(v)),
            Unit::Millis => {
                if v < 10.0 {
                    format!("{v:.2} ms")
                } else {
                    format!("{v:.1} ms")
                }
            }
            Unit::Bytes => format!("{:.0} MiB", v / (1u64 << 20) as f64),
        }
    }

    fn bare(self, v: f64) -> String {
        match self {
            Unit::RecordsPerSec | Unit::RequestsPerSec => si(v),
            Unit::Millis => format!("{v:.2}"),
            Unit::Bytes => format!("{:.0}", v / (1u64 << 20) as f64),
        }
    }
}

/// 12345 → "12.3k".
pub(crate) fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// What the ratio ours / baseline must be; `None` for a row that only shows a ratio, such as a
/// baseline measured against a faster floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::AtLeast(v) => format!(">= {v}"),
            Goal::AtMost(v) => format!("<= {v}"),
            Goal::None => "-".into(),
        }
    }

    fn met(self, ratio: f64) -> Option<bool> {
        match self {
            Goal::AtLeast(v) => Some(ratio >= v),
            Goal::AtMost(v) => Some(ratio <= v),
            Goal::None => None,
        }
    }
}

/// Median, lowest and highest of the rounds' samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summary(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: s[0],
        max: s[n - 1],
    })
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

pub struct Row {
    pub id: &'static str,
    /// What is measured, short.
    pub what: String,
    /// What it is measured against, short.
    pub against: String,
    /// At which size, e.g. "100000 rec x 5 rounds".
    pub size: String,
    pub unit: Unit,
    pub ours: Vec<f64>,
    pub baseline: Vec<f64>,
    pub goal: Goal,
    /// Said next to the row; for example why the baseline is not a fair one.
    pub note: Option<String>,
    /// Why nothing was measured (the row still shows).
    pub not_measured: Option<String>,
    /// False when the baseline is known not to be what it claims: no verdict then.
    pub valid: bool,
}

impl Row {
    pub fn new(id: &'static str, what: impl Into<String>, against: impl Into<String>, unit: Unit, goal: Goal) -> Self {
        Row {
            id,
            what: what.into(),
            against: against.into(),
            size: String::new(),
            unit,
            ours: Vec::new(),
            baseline: Vec::new(),
            goal,
            note: None,
            not_measured: None,
            valid: true,
        }
    }

    pub fn size(mut self, size: impl Into<String>) -> Self {
        self.size = size.into();
        self
    }

    pub fn samples(mut self, ours: Vec<f64>, baseline: Vec<f64>) -> Self {
        self.ours = ours;
        self.baseline = baseline;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    pub fn not_measured(mut self, why: impl Into<String>) -> Self {
        self.not_measured = Some(why.into());
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        let (o, b) = (summary(&self.ours)?, summary(&self.baseline)?);
        (b.median > 0.0).then(|| o.median / b.median)
    }

    pub fn met(&self) -> Option<bool> {
        if !self.valid || self.not_measured.is_some() {
            return None;
        }
        self.ratio().and_then(|r| self.goal.met(r))
    }

    fn cell(&self, samples: &[f64]) -> (String, String) {
        match summary(samples) {
            Some(s) => (
                self.unit.format(s.median),
                format!("{}-{}", self.unit.bare(s.min), self.unit.bare(s.max)),
            ),
            None => ("-".into(), "-".into()),
        }
    }

    pub fn json(&self) -> Value {
        let side = |samples: &[f64]| match summary(samples) {
            Some(s) => json!({ "median": s.median, "min": s.min, "max": s.max, "samples": samples }),
            None => Value::Null,
        };
        let goal = match self.goal {
            Goal::AtLeast(v) => json!({ "ratio": ">=", "value": v }),
            Goal::AtMost(v) => json!({ "ratio": "<=", "value": v }),
            Goal::None => Value::Null,
        };
        json!({
            "id": self.id,
            "what": self.what,
            "against": self.against,
            "size": self.size,
            "unit": self.unit.name(),
            "ours": side(&self.ours),
            "baseline": side(&self.baseline),
            "ratio": self.ratio(),
            "goal": goal,
            "met": self.met(),
            "note": self.note,
            "not_measured": self.not_measured,
        })
    }
}

/// Prints the rows as a table, with notes under it.
pub fn print_table(rows: &[Row]) {
    let header = [
        "id", "what", "against", "size", "ours", "spread", "baseline", "spread", "ratio", "goal", "met",
    ];
    let mut lines: Vec<[String; 11]> = Vec::new();
    let mut notes = Vec::new();
    for r in rows {
        let (ours, ours_spread) = r.cell(&r.ours);
        let (base, base_spread) = r.cell(&r.baseline);
        let ratio = r.ratio().map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        let met = match (&r.not_measured, r.met()) {
            (Some(_), _) => "not measured".to_string(),
            (None, Some(true)) => "yes".into(),
            (None, Some(false)) => "NO".into(),
            (None, None) => "n/a".into(),
        };
        let mark = if r.note.is_some() || r.not_measured.is_some() {
            notes.push((r.id, r.what.clone(), r.not_measured.clone().or_else(|| r.note.clone())));
            format!("{} [{}]", r.id, notes.len())
        } else {
            r.id.to_string()
        };
        lines.push([
            mark,
            r.what.clone(),
            r.against.clone(),
            r.size.clone(),
            ours,
            ours_spread,
            base,
            base_spread,
            ratio,
            r.goal.text(),
            met,
        ]);
    }
    let mut widths = header.map(|h| h.chars().count());
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(c);
            if i + 1 < cells.len() {
                out.extend(std::iter::repeat_n(' ', w - c.chars().count()));
            }
        }
        println!("{out}");
    };
    print(&header.map(String::from));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for l in &lines {
        print(l);
    }
    if !notes.is_empty() {
        println!();
        for (n, (id, what, note)) in notes.iter().enumerate() {
            println!("[{}] {id} {what}: {}", n + 1, note.as_deref().unwrap_or(""));
        }
    }
}
