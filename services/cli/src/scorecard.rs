//! `xinqiao scorecard`: the sharing scorecard (共享评价). The ranking of departments by score, and
//! each department's five parts with the indicators they are computed from — in the terminal, as
//! JSON, or as one self-contained HTML page with inline SVG charts. The terminal and the page are
//! drawn from the same rows, so they show the same numbers.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use clap::Args;
use serde_json::{Value, json};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::evaluation_service_client::EvaluationServiceClient;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct ScorecardArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// One department's full scorecard, by its 统一社会信用代码, instead of the ranking.
    #[arg(long, value_name = "CODE")]
    dept: Option<String>,
    /// The first day of the period, YYYY-MM-DD (China Standard Time) [default: the hub's default
    /// period, 30 days, ending at --to].
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    from: Option<NaiveDate>,
    /// The last day of the period, included [default: today].
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    to: Option<NaiveDate>,
    /// Also write the report as one self-contained HTML page (inline SVG charts, nothing fetched).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| format!("'{text}' is not a date written YYYY-MM-DD"))
}

/// One of the five parts of a scorecard, with the indicators it is computed from.
struct Part {
    name: &'static str,
    chinese: &'static str,
    /// From 0 to 1; none when there was nothing to measure (left out of the score).
    value: Option<f64>,
    /// How the part is computed from its indicators.
    formula: &'static str,
    /// Where the hub recorded the facts behind the indicators.
    source: &'static str,
    /// The indicators as (name, value), a line of related ones at a time.
    lines: Vec<Vec<(&'static str, String)>>,
}

impl Part {
    fn label(&self) -> String {
        format!("{} {}", self.name, self.chinese)
    }
}

/// A rate as a percentage: "66.7%", "100%"; "—" when undefined.
fn percent(rate: Option<f64>) -> String {
    match rate.filter(|r| r.is_finite()) {
        None => "—".into(),
        Some(r) => {
            let p = r * 100.0;
            if (p - p.round()).abs() < 0.05 {
                format!("{:.0}%", p.round())
            } else {
                format!("{p:.1}%")
            }
        }
    }
}

/// `part / whole` when `whole` is not zero.
fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn hours(value: Option<f64>) -> String {
    value
        .filter(|h| h.is_finite())
        .map_or_else(|| "—".into(), |h| format!("{h:.1}"))
}

fn score_text(score: f64) -> String {
    format!("{score:.1}")
}

/// The change against the previous period: "+12.5", "-3.0", "0.0"; "—" when unknown.
fn change_text(score: f64, previous: Option<f64>) -> String {
    match previous.filter(|p| p.is_finite()) {
        None => "—".into(),
        Some(p) => {
            let change = ((score - p) * 10.0).round() / 10.0;
            if change == 0.0 {
                "0.0".into()
            } else {
                format!("{change:+.1}")
            }
        }
    }
}

fn previous_text(previous: Option<f64>) -> String {
    previous
        .filter(|p| p.is_finite())
        .map_or_else(|| "—".into(), score_text)
}

fn parts(card: &pb::Scorecard) -> Vec<Part> {
    let p = card.parts.unwrap_or_default();
    let i = card.indicators.unwrap_or_default();
    vec![
        Part {
            name: "catalogue",
            chinese: "目录",
            value: p.catalogue,
            formula: "mean of shareable, metadata completeness and legal basis coverage",
            source: "the department's catalogue entries published (已发布) by the end of the period",
            lines: vec![
                vec![
                    ("entries published", i.entries_published.to_string()),
                    ("无条件", i.unconditional.to_string()),
                    ("有条件", i.conditional.to_string()),
                    ("不予共享", i.not_shared.to_string()),
                    (
                        "shareable",
                        percent(rate(i.unconditional + i.conditional, i.entries_published)),
                    ),
                ],
                vec![
                    ("metadata completeness", percent(i.metadata_completeness)),
                    ("legal basis coverage", percent(i.legal_basis_coverage)),
                ],
            ],
        },
        Part {
            name: "timeliness",
            chinese: "及时性",
            value: p.timeliness,
            formula: "update periods met / update periods due",
            source: "datasets of its published entries and their 更新周期; the days the audit trail records an \
                     accepted publish or a completed upload",
            lines: vec![vec![
                ("update periods due", i.update_periods_due.to_string()),
                ("met", i.update_periods_met.to_string()),
                ("on time", percent(i.on_time_rate)),
            ]],
        },
        Part {
            name: "quality",
            chinese: "质量",
            value: p.quality,
            formula: "mean of 1 − rejection rate and reports resolved",
            source: "the accepted and rejected counts of its publishes in the audit trail; error reports (纠错) \
                     received in the period",
            lines: vec![
                vec![
                    ("records accepted", i.records_accepted.to_string()),
                    ("rejected", i.records_rejected.to_string()),
                    ("rejection rate", percent(i.rejection_rate)),
                ],
                vec![
                    ("error reports received", i.reports_received.to_string()),
                    ("open", i.reports_open.to_string()),
                    (
                        "resolved",
                        percent(rate(
                            i.reports_received.saturating_sub(i.reports_open),
                            i.reports_received,
                        )),
                    ),
                    ("median hours to resolve", hours(i.median_resolve_hours)),
                ],
            ],
        },
        Part {
            name: "responsiveness",
            chinese: "响应",
            value: p.responsiveness,
            formula: "mean of answered in time / requests due and refusals with a reason / refusals",
            source: "access requests (共享申请) submitted to it in the period: their due days, answers and reasons",
            lines: vec![
                vec![
                    ("access requests due", i.requests_due.to_string()),
                    ("answered in time", i.answered_in_time.to_string()),
                    ("in time", percent(i.in_time_rate)),
                    ("median hours to answer", hours(i.median_answer_hours)),
                ],
                vec![
                    ("refusals", i.refusals.to_string()),
                    ("with a reason", i.refusals_with_reason.to_string()),
                    ("reasons given", percent(rate(i.refusals_with_reason, i.refusals))),
                ],
            ],
        },
        Part {
            name: "use",
            chinese: "使用",
            value: p.r#use,
            formula: "other departments that read its data or called its interfaces / other registered departments",
            source: "reads of its data by other departments in the audit trail (Fetch, Snapshot, Subscribe, \
                     DownloadFile) and answered calls of its interfaces (Invoke); its grants active at the end of \
                     the period",
            lines: vec![vec![
                ("records used by others", i.records_used.to_string()),
                ("interface calls answered", i.interface_calls.to_string()),
                ("using departments", i.using_departments.to_string()),
                ("active grants", i.active_grants.to_string()),
            ]],
        },
    ]
}

fn weights(r: &pb::Ranking) -> [(&'static str, f64); 5] {
    [
        ("catalogue", r.weight_catalogue),
        ("timeliness", r.weight_timeliness),
        ("quality", r.weight_quality),
        ("responsiveness", r.weight_responsiveness),
        ("use", r.weight_use),
    ]
}

fn weights_text(r: &pb::Ranking) -> String {
    weights(r)
        .iter()
        .map(|(name, w)| format!("{name} {w}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn card_json(c: &pb::Scorecard) -> Value {
    let p = c.parts.unwrap_or_default();
    let i = c.indicators.unwrap_or_default();
    json!({
        "department": c.department, "name": c.name, "from": c.from, "to": c.to,
        "score": c.score, "previous_score": c.previous_score,
        "parts": {
            "catalogue": p.catalogue, "timeliness": p.timeliness, "quality": p.quality,
            "responsiveness": p.responsiveness, "use": p.r#use,
        },
        "indicators": {
            "entries_published": i.entries_published, "unconditional": i.unconditional,
            "conditional": i.conditional, "not_shared": i.not_shared,
            "metadata_completeness": i.metadata_completeness, "legal_basis_coverage": i.legal_basis_coverage,
            "update_periods_due": i.update_periods_due, "update_periods_met": i.update_periods_met,
            "on_time_rate": i.on_time_rate,
            "records_accepted": i.records_accepted, "records_rejected": i.records_rejected,
            "rejection_rate": i.rejection_rate, "reports_received": i.reports_received,
            "reports_open": i.reports_open, "median_resolve_hours": i.median_resolve_hours,
            "requests_due": i.requests_due, "answered_in_time": i.answered_in_time,
            "in_time_rate": i.in_time_rate, "median_answer_hours": i.median_answer_hours,
            "refusals": i.refusals, "refusals_with_reason": i.refusals_with_reason,
            "records_used": i.records_used, "using_departments": i.using_departments,
            "active_grants": i.active_grants, "interface_calls": i.interface_calls,
        },
    })
}

pub fn ranking_json(r: &pb::Ranking) -> Value {
    let weights: serde_json::Map<String, Value> = weights(r).iter().map(|(k, w)| (k.to_string(), json!(w))).collect();
    json!({
        "from": r.from, "to": r.to, "weights": weights,
        "departments": r.departments.iter().map(|d| json!({
            "rank": d.rank, "department": d.department, "name": d.name, "score": d.score,
            "previous_score": d.previous_score,
            "scorecard": d.scorecard.as_ref().map(card_json),
        })).collect::<Vec<_>>(),
    })
}

/// Display width in a terminal, for the part labels: CJK characters take two columns.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| if ('\u{2E80}'..='\u{9FFF}').contains(&c) { 2 } else { 1 })
        .sum()
}

/// A department's parts, one line per group of indicators, under a heading line.
fn print_card(heading: &str, card: &pb::Scorecard) {
    out!("{heading}");
    let parts = parts(card);
    let label_width = parts.iter().map(|p| width(&p.label())).max().unwrap_or(0);
    for part in &parts {
        let label = part.label();
        let pad = " ".repeat(label_width - width(&label));
        for (n, line) in part.lines.iter().enumerate() {
            let text = line
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect::<Vec<_>>()
                .join(", ");
            if n == 0 {
                out!("   {label}{pad}  {:>6}  {text}", percent(part.value));
            } else {
                out!("   {}  {:>6}  {text}", " ".repeat(label_width), "");
            }
        }
    }
}

fn card_heading(card: &pb::Scorecard) -> String {
    format!(
        "{} {}: score {} (previous period {}, change {})",
        card.name,
        card.department,
        score_text(card.score),
        previous_text(card.previous_score),
        change_text(card.score, card.previous_score)
    )
}

/// One department's scorecard: its score and every part with its indicators.
pub fn print_scorecard(card: &pb::Scorecard) {
    out!(
        "Sharing scorecard (共享评价), {} to {} (China Standard Time days, both included)",
        card.from,
        card.to
    );
    out!("Each part from 0 to 100%; — marks a part with nothing to measure, left out of the score.\n");
    print_card(&card_heading(card), card);
}

/// The ranking table, then the parts and indicators of each department whose scorecard came with it.
pub fn print_ranking(r: &pb::Ranking) {
    out!(
        "Sharing scorecard (共享评价), {} to {} (China Standard Time days, both included)",
        r.from,
        r.to
    );
    out!("Weights: {}.", weights_text(r));
    out!("A part with nothing to measure (—) is left out of the score and the others count for more.\n");
    let rows: Vec<Vec<String>> = r
        .departments
        .iter()
        .map(|d| {
            vec![
                d.rank.to_string(),
                d.department.clone(),
                d.name.clone(),
                score_text(d.score),
                previous_text(d.previous_score),
                change_text(d.score, d.previous_score),
            ]
        })
        .collect();
    output::table(&["rank", "department", "name", "score", "previous", "change"], &rows);
    for d in &r.departments {
        if let Some(card) = &d.scorecard {
            out!("");
            print_card(&format!("{}. {}", d.rank, card_heading(card)), card);
        }
    }
    if r.departments.iter().any(|d| d.scorecard.is_none()) {
        out!("\n(A department sees its own scorecard in full; the admin and evaluators see every one.)");
    }
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, with "…" when cut (chart labels; the tables carry the full text).
fn shorten(text: &str, max: usize) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Charts carry their own colours and font, so that they look the same copied out of the page.
const SVG_OPEN: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" font-size="13" fill="#1a202c" font-family="system-ui,-apple-system,'PingFang SC','Microsoft YaHei','Noto Sans CJK SC',sans-serif""##;

/// A bar from 0 to `length` pixels for a value from 0 to `full`.
fn bar_length(value: f64, full: f64, length: f64) -> f64 {
    if value.is_finite() {
        (value / full).clamp(0.0, 1.0) * length
    } else {
        0.0
    }
}

/// One bar per department, its score from 0 to 100.
fn ranking_chart(r: &pb::Ranking) -> String {
    const LABEL: f64 = 260.0;
    const BAR: f64 = 420.0;
    const ROW: f64 = 28.0;
    const TOP: f64 = 22.0;
    let width = LABEL + BAR + 60.0;
    let height = TOP + ROW * r.departments.len() as f64 + 8.0;
    let mut svg = format!(
        r#"{SVG_OPEN} class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-labelledby="ranking-title"><title id="ranking-title">Score by department, 0 to 100</title>"#
    );
    for tick in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let x = LABEL + bar_length(tick, 100.0, BAR);
        svg.push_str(&format!(
            r##"<line stroke="#e2e8f0" x1="{x}" y1="{}" x2="{x}" y2="{}"/><text fill="#718096" font-size="11" x="{x}" y="14" text-anchor="middle">{tick}</text>"##,
            TOP - 4.0,
            height - 4.0
        ));
    }
    for (n, d) in r.departments.iter().enumerate() {
        let y = TOP + ROW * n as f64;
        let length = bar_length(d.score, 100.0, BAR);
        svg.push_str(&format!(
            r##"<text x="{}" y="{}" text-anchor="end">{}. {}</text><rect fill="#edf2f7" x="{LABEL}" y="{}" width="{BAR}" height="{}"/><rect fill="#2b6cb0" x="{LABEL}" y="{}" width="{length:.1}" height="{}"/><text x="{:.1}" y="{}">{}</text>"##,
            LABEL - 8.0,
            y + 18.0,
            d.rank,
            escape(&shorten(&d.name, 16)),
            y + 4.0,
            ROW - 8.0,
            y + 4.0,
            ROW - 8.0,
            LABEL + length + 6.0,
            y + 18.0,
            score_text(d.score)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The five parts of one scorecard as bars from 0 to 100%; an undefined part is a "—".
fn parts_chart(parts: &[Part]) -> String {
    const LABEL: f64 = 160.0;
    const BAR: f64 = 300.0;
    const ROW: f64 = 26.0;
    let width = LABEL + BAR + 70.0;
    let height = ROW * parts.len() as f64 + 6.0;
    let mut svg = format!(
        r#"{SVG_OPEN} class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"><title>The five parts, each from 0 to 100%</title>"#
    );
    for (n, part) in parts.iter().enumerate() {
        let y = ROW * n as f64 + 3.0;
        svg.push_str(&format!(
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL - 8.0,
            y + 15.0,
            escape(&part.label())
        ));
        match part.value.filter(|v| v.is_finite()) {
            Some(value) => {
                let length = bar_length(value, 1.0, BAR);
                svg.push_str(&format!(
                    r##"<rect fill="#edf2f7" x="{LABEL}" y="{y}" width="{BAR}" height="{}"/><rect fill="#2b6cb0" x="{LABEL}" y="{y}" width="{length:.1}" height="{}"/><text x="{:.1}" y="{}">{}</text>"##,
                    ROW - 6.0,
                    ROW - 6.0,
                    LABEL + length + 6.0,
                    y + 15.0,
                    percent(Some(value))
                ));
            }
            None => svg.push_str(&format!(
                r##"<rect fill="none" stroke="#a0aec0" stroke-dasharray="4 3" x="{LABEL}" y="{y}" width="{BAR}" height="{}"/><text x="{}" y="{}">— nothing to measure, left out</text>"##,
                ROW - 6.0,
                LABEL + 8.0,
                y + 15.0
            )),
        }
    }
    svg.push_str("</svg>");
    svg
}

fn html_ranking_table(r: &pb::Ranking) -> String {
    let mut html = String::from(
        "<table><thead><tr><th>rank</th><th>department</th><th>name</th><th>score</th><th>previous</th><th>change</th></tr></thead><tbody>",
    );
    for d in &r.departments {
        let name = if d.scorecard.is_some() {
            format!(r##"<a href="#dept-{}">{}</a>"##, escape(&d.department), escape(&d.name))
        } else {
            escape(&d.name)
        };
        html.push_str(&format!(
            r#"<tr><td class="num">{}</td><td class="code">{}</td><td>{name}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            d.rank,
            escape(&d.department),
            score_text(d.score),
            previous_text(d.previous_score),
            change_text(d.score, d.previous_score)
        ));
    }
    html.push_str("</tbody></table>");
    html
}

fn html_card(heading: &str, card: &pb::Scorecard) -> String {
    let parts = parts(card);
    let mut html = format!(
        r#"<section id="dept-{}"><h2>{}</h2><p class="score">score <strong>{}</strong> · previous period {} · change {}</p>{}"#,
        escape(&card.department),
        escape(heading),
        score_text(card.score),
        previous_text(card.previous_score),
        change_text(card.score, card.previous_score),
        parts_chart(&parts)
    );
    html.push_str(
        "<table><thead><tr><th>part</th><th>value</th><th>indicator</th><th>count or rate</th><th>computed as</th><th>recorded in</th></tr></thead><tbody>",
    );
    for part in &parts {
        let indicators: Vec<&(&str, String)> = part.lines.iter().flatten().collect();
        let span = indicators.len().max(1);
        for (n, (name, value)) in indicators.iter().enumerate() {
            html.push_str("<tr>");
            if n == 0 {
                html.push_str(&format!(
                    r#"<th rowspan="{span}">{}</th><td rowspan="{span}" class="num">{}</td>"#,
                    escape(&part.label()),
                    percent(part.value)
                ));
            }
            html.push_str(&format!(
                r#"<td>{}</td><td class="num">{}</td>"#,
                escape(name),
                escape(value)
            ));
            if n == 0 {
                html.push_str(&format!(
                    r#"<td rowspan="{span}" class="note">{}</td><td rowspan="{span}" class="note">{}</td>"#,
                    escape(part.formula),
                    escape(part.source)
                ));
            }
            html.push_str("</tr>");
        }
    }
    html.push_str("</tbody></table></section>");
    html
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,\"PingFang SC\",\"Microsoft YaHei\",\"Noto Sans CJK SC\",sans-serif;\
margin:2em auto;max-width:1100px;padding:0 1em;color:#1a202c;line-height:1.45}\
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #cbd5e0}\
p.meta{color:#4a5568;margin:.2em 0}p.score{font-size:1.05em}\
table{border-collapse:collapse;margin:1em 0;font-size:.92em}\
th,td{border:1px solid #cbd5e0;padding:.3em .6em;text-align:left;vertical-align:top}\
thead th{background:#edf2f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td.code{font-family:ui-monospace,monospace}td.note{color:#4a5568;font-size:.9em;max-width:22em}\
svg.chart{display:block;margin:1em 0}\
footer{margin-top:3em;color:#718096;font-size:.85em}";

/// A whole page: everything it shows is in the file; it loads nothing.
fn page(title: &str, meta: &[String], body: &str) -> String {
    let generated = chrono::FixedOffset::east_opt(8 * 3600)
        .map(|cst| {
            chrono::Utc::now()
                .with_timezone(&cst)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default();
    let meta: String = meta
        .iter()
        .map(|m| format!(r#"<p class="meta">{}</p>"#, escape(m)))
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{meta}\n{body}\n<footer>信桥 Xinqiao · generated {generated} China Standard Time · every number comes from what the hub recorded: the catalogue, the access and error-report tables, and the audit trail. Each part is from 0 to 100%; the score is the weighted mean of the parts that had something to measure.</footer>\n</body>\n</html>\n",
        title = escape(title),
    )
}

fn ranking_page(r: &pb::Ranking) -> String {
    let mut body = String::from("<h2>Ranking</h2>");
    body.push_str(&ranking_chart(r));
    body.push_str(&html_ranking_table(r));
    for d in &r.departments {
        if let Some(card) = &d.scorecard {
            body.push_str(&html_card(
                &format!("{}. {} {}", d.rank, card.name, card.department),
                card,
            ));
        }
    }
    if r.departments.iter().any(|d| d.scorecard.is_none()) {
        body.push_str(
            r#"<p class="meta">A department sees its own scorecard in full; the admin and evaluators see every one.</p>"#,
        );
    }
    page(
        &format!("共享评价 Sharing scorecard {} – {}", r.from, r.to),
        &[
            format!(
                "Period: {} to {}, China Standard Time days, both included.",
                r.from, r.to
            ),
            format!(
                "Weights: {}. A part with nothing to measure (—) is left out and the others count for more.",
                weights_text(r)
            ),
        ],
        &body,
    )
}

fn scorecard_page(card: &pb::Scorecard) -> String {
    page(
        &format!("共享评价 Sharing scorecard {} {} – {}", card.name, card.from, card.to),
        &[format!(
            "Period: {} to {}, China Standard Time days, both included.",
            card.from, card.to
        )],
        &html_card(&format!("{} {}", card.name, card.department), card),
    )
}

/// Writes `text` to `path` through a temporary file in the same directory, so that the file is
/// either the old one or the whole new one.
fn write_atomically(path: &Path, text: &str) -> CliResult {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write the report in {}: {e}", dir.display()))?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    temp.persist(path)
        .map_err(|e| format!("cannot move the report to {}: {}", path.display(), e.error))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

pub async fn run(args: ScorecardArgs) -> CliResult {
    let json = args.client.json;
    let mut client = EvaluationServiceClient::new(args.client.channel().await?);
    let from = args.from.map(|d| d.to_string()).unwrap_or_default();
    let to = args.to.map(|d| d.to_string()).unwrap_or_default();
    match args.dept {
        Some(department) => {
            let card = client
                .get_scorecard(pb::GetScorecardRequest { department, from, to })
                .await
                .map_err(explain)?
                .into_inner();
            if let Some(path) = &args.html {
                write_atomically(path, &scorecard_page(&card))?;
            }
            output::emit(json, card_json(&card), || print_scorecard(&card));
        }
        None => {
            let ranking = client
                .get_ranking(pb::GetRankingRequest { from, to })
                .await
                .map_err(explain)?
                .into_inner();
            if let Some(path) = &args.html {
                write_atomically(path, &ranking_page(&ranking))?;
            }
            output::emit(json, ranking_json(&ranking), || print_ranking(&ranking));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(code: &str, name: &str, score: f64) -> pb::Scorecard {
        pb::Scorecard {
            department: code.into(),
            name: name.into(),
            from: "2027-01-01".into(),
            to: "2027-01-30".into(),
            score,
            parts: Some(pb::ScoreParts {
                catalogue: Some(2.0 / 3.0),
                timeliness: Some(1.0),
                quality: None,
                responsiveness: None,
                r#use: Some(0.5),
            }),
            indicators: Some(pb::Indicators {
                entries_published: 3,
                unconditional: 2,
                conditional: 1,
                records_accepted: 7,
                records_used: 5,
                ..Default::default()
            }),
            previous_score: Some(60.0),
        }
    }

    fn ranking() -> pb::Ranking {
        let samr = card("11330100MB00010011", "市市场监督管理局 <&> \"引号\"", 72.5);
        pb::Ranking {
            from: "2027-01-01".into(),
            to: "2027-01-30".into(),
            departments: vec![
                pb::RankedDepartment {
                    rank: 1,
                    department: samr.department.clone(),
                    name: samr.name.clone(),
                    score: samr.score,
                    previous_score: samr.previous_score,
                    scorecard: Some(samr),
                },
                pb::RankedDepartment {
                    rank: 2,
                    department: "11330100MB0002002B".into(),
                    name: "市公安局".into(),
                    score: 0.0,
                    previous_score: None,
                    scorecard: None,
                },
            ],
            weight_catalogue: 20.0,
            weight_timeliness: 25.0,
            weight_quality: 20.0,
            weight_responsiveness: 20.0,
            weight_use: 15.0,
        }
    }

    #[test]
    fn rates_and_changes_read_as_people_write_them() {
        assert_eq!(percent(Some(2.0 / 3.0)), "66.7%");
        assert_eq!(percent(Some(1.0)), "100%");
        assert_eq!(percent(Some(0.0)), "0%");
        assert_eq!(percent(None), "—");
        assert_eq!(percent(Some(f64::NAN)), "—");
        assert_eq!(change_text(72.5, Some(60.0)), "+12.5");
        assert_eq!(change_text(60.0, Some(72.5)), "-12.5");
        assert_eq!(change_text(60.0, Some(60.0)), "0.0");
        assert_eq!(change_text(60.0, None), "—");
        assert_eq!(hours(Some(1.26)), "1.3");
        assert_eq!(hours(None), "—");
    }

    #[test]
    fn undefined_parts_are_dashes_not_zeros() {
        let parts = parts(&card("11330100MB00010011", "市市场监督管理局", 72.5));
        let quality = parts.iter().find(|p| p.name == "quality").expect("a quality part");
        assert_eq!(percent(quality.value), "—");
        let chart = parts_chart(&parts);
        assert_eq!(chart.matches("nothing to measure").count(), 2, "{chart}");
        assert!(chart.contains(">66.7%<") && chart.contains(">100%<") && chart.contains(">50%<"));
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_the_hub_sent() {
        let html = ranking_page(&ranking());
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains(r#"<meta charset="utf-8">"#));
        assert!(
            html.contains("市市场监督管理局 &lt;&amp;&gt; &quot;引号&quot;"),
            "{html}"
        );
        assert!(!html.contains("<&>"));
        let outside = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside.contains("http://") && !outside.contains("https://"));
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("@import"));
        // The ranking chart and one parts chart (the second department's card is not visible).
        assert_eq!(html.matches("<svg ").count(), 2);
        assert_eq!(html.matches("</svg>").count(), 2);
        assert!(html.contains(">72.5<") && html.contains("records used by others"));
        assert!(html.contains("href=\"#dept-11330100MB00010011\""));
    }

    #[test]
    fn a_single_scorecard_page_has_its_parts_chart() {
        let html = scorecard_page(&card("11330100MB00010011", "市市场监督管理局", 72.5));
        assert_eq!(html.matches("<svg ").count(), 1);
        assert!(html.contains("<title>共享评价 Sharing scorecard 市市场监督管理局 2027-01-01 – 2027-01-30</title>"));
    }
}
