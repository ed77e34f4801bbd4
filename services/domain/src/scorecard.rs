//! The sharing scorecard (评价): how well a department shares over a period, computed only from
//! facts the hub recorded — catalogue entries, publishes, error reports, access requests, grants
//! and reads — never from self-reports.
//!
//! Five parts, each a number from 0 to 1, weighted into a score from 0 to 100:
//! - catalogue (目录): the mean of shareability (entries shared 无条件 or 有条件 / all entries),
//!   metadata completeness and legal-basis coverage of 有条件 and 不予共享 entries;
//! - timeliness (及时性): update periods of the declared 更新周期 in which something was published /
//!   update periods due;
//! - quality (质量): the mean of 1 − the validation rejection rate at publish, and the share of
//!   error reports received that were resolved;
//! - responsiveness (响应): the mean of requests answered within the deadline / requests due, and
//!   refusals that gave a reason / refusals;
//! - use (使用): distinct other departments that read the department's data / other registered
//!   departments.
//!
//! A part with nothing to measure (no entries, no requests due, …) is left out and the weights of
//! the others are scaled up, so that a department is neither rewarded nor punished for what it
//! was never asked to do. A department with nothing measurable scores 0.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use crate::access::{RequestState, china_day, end_of_china_day};
use crate::catalogue::{EntryContent, OpenType, ShareType, UpdateCycle};
use crate::{Error, Result};

/// The longest period a scorecard covers.
pub const MAX_PERIOD_DAYS: i64 = 3660;

/// An evaluation period: whole China Standard Time days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Period> {
        if to < from {
            return Err(Error::invalid("to", "is before from"));
        }
        if (to - from).num_days() >= MAX_PERIOD_DAYS {
            return Err(Error::invalid(
                "from",
                format!("a period is at most {MAX_PERIOD_DAYS} days"),
            ));
        }
        Ok(Period { from, to })
    }

    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    /// The period of the same length just before this one.
    pub fn previous(&self) -> Period {
        let to = self.from.pred_opt().unwrap_or(self.from);
        let from = to - Duration::days(self.days() - 1);
        Period { from, to }
    }

    /// The first instant of the period.
    pub fn start(&self) -> DateTime<Utc> {
        end_of_china_day(self.from.pred_opt().unwrap_or(self.from))
    }

    /// The first instant after the period.
    pub fn end(&self) -> DateTime<Utc> {
        end_of_china_day(self.to)
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let day = china_day(at);
        self.from <= day && day <= self.to
    }
}

/// What the scorecard takes from one catalogue entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryFacts {
    pub share_type: ShareType,
    /// Optional metadata elements filled in, from 0 to 1 (see [`completeness`]).
    pub completeness: f64,
    pub has_legal_basis: bool,
}

impl EntryFacts {
    pub fn of(content: &EntryContent) -> EntryFacts {
        EntryFacts {
            share_type: content.share.share_type,
            completeness: completeness(content),
            has_legal_basis: !content.share.legal_basis.trim().is_empty(),
        }
    }
}

/// The share of the optional metadata elements (GB/T 21063.3, 编制指南) an entry fills in: a
/// summary, a description and a length for every data item, related resource codes, the metadata
/// maintainer, and the open condition when it opens conditionally.
pub fn completeness(content: &EntryContent) -> f64 {
    let items = &content.items;
    let checks = [
        !content.summary.trim().is_empty(),
        !items.is_empty() && items.iter().all(|i| !i.description.trim().is_empty()),
        !items.is_empty() && items.iter().all(|i| i.length > 0),
        !content.related_codes.is_empty(),
        !content.maintainer.trim().is_empty(),
        content.open.open_type != OpenType::Conditional || !content.open.condition.trim().is_empty(),
    ];
    checks.iter().filter(|&&ok| ok).count() as f64 / checks.len() as f64
}

/// A dataset and the days on which something was published to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFacts {
    pub dataset: String,
    pub cycle: UpdateCycle,
    /// The day the dataset was opened: no update is due before it.
    pub opened_on: NaiveDate,
    /// China Standard Time days with at least one accepted record or file.
    pub publish_days: BTreeSet<NaiveDate>,
}

/// An access request the department had to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub submitted_at: DateTime<Utc>,
    pub due_on: NaiveDate,
    pub state: RequestState,
    pub answered_at: Option<DateTime<Utc>>,
    pub reason_given: bool,
}

/// An error report on the department's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFacts {
    pub reported_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Everything the hub recorded about one department that the scorecard uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DepartmentFacts {
    pub department: String,
    pub name: String,
    /// Its entries published (已发布) at the end of the period.
    pub entries: Vec<EntryFacts>,
    pub datasets: Vec<DatasetFacts>,
    /// Records accepted and rejected at publish during the period.
    pub records_accepted: u64,
    pub records_rejected: u64,
    /// Error reports received during the period.
    pub reports: Vec<ReportFacts>,
    /// Access requests submitted to it during the period.
    pub requests: Vec<RequestFacts>,
    /// Records other departments read during the period, and who they were.
    pub records_read_by_others: u64,
    pub using_departments: BTreeSet<String>,
    /// Grants it has given that were active at the end of the period.
    pub active_grants: u64,
    /// Calls of its interfaces by other departments that were answered, and how many interfaces
    /// it had registered at the end of the period.
    pub interface_calls_by_others: u64,
    pub interfaces: u64,
}

/// The weights of the five parts (any non-negative numbers; they are normalised).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub catalogue: f64,
    pub timeliness: f64,
    pub quality: f64,
    pub responsiveness: f64,
    pub use_: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            catalogue: 20.0,
            timeliness: 25.0,
            quality: 20.0,
            responsiveness: 20.0,
            use_: 15.0,
        }
    }
}

impl Weights {
    pub fn validate(&self) -> Result<()> {
        let all = [
            self.catalogue,
            self.timeliness,
            self.quality,
            self.responsiveness,
            self.use_,
        ];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) || all.iter().sum::<f64>() <= 0.0 {
            return Err(Error::invalid("weights", "must be non-negative numbers, not all zero"));
        }
        Ok(())
    }
}

/// Every indicator, as counted and as a rate where one is defined.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Indicators {
    pub entries_published: u64,
    pub unconditional: u64,
    pub conditional: u64,
    pub not_shared: u64,
    pub metadata_completeness: Option<f64>,
    /// Of 有条件 and 不予共享 entries.
    pub legal_basis_coverage: Option<f64>,

    pub update_periods_due: u64,
    pub update_periods_met: u64,
    pub on_time_rate: Option<f64>,

    pub records_accepted: u64,
    pub records_rejected: u64,
    pub rejection_rate: Option<f64>,
    pub reports_received: u64,
    pub reports_open: u64,
    pub median_resolve_hours: Option<f64>,

    /// Requests whose answer was due (answered, or pending past the deadline).
    pub requests_due: u64,
    pub answered_in_time: u64,
    pub in_time_rate: Option<f64>,
    pub median_answer_hours: Option<f64>,
    pub refusals: u64,
    pub refusals_with_reason: u64,

    pub records_used: u64,
    pub using_departments: u64,
    pub active_grants: u64,
    pub interface_calls: u64,
}

/// The five parts, each from 0 to 1 when there was something to measure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Parts {
    pub catalogue: Option<f64>,
    pub timeliness: Option<f64>,
    pub quality: Option<f64>,
    pub responsiveness: Option<f64>,
    pub use_: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    pub department: String,
    pub name: String,
    pub period: Period,
    pub indicators: Indicators,
    pub parts: Parts,
    /// 0 to 100.
    pub score: f64,
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn mean(values: &[Option<f64>]) -> Option<f64> {
    let defined: Vec<f64> = values.iter().flatten().copied().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn hours(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_seconds().max(0) as f64 / 3600.0
}

/// The update periods of a cycle that fall wholly inside `[first, last]`, as (start, end) days.
/// 实时 is held to a daily update; 其他 declares no cycle and is not assessed.
pub fn update_periods(cycle: UpdateCycle, first: NaiveDate, last: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
    let months = match cycle {
        UpdateCycle::Realtime | UpdateCycle::Daily => {
            return first.iter_days().take_while(|d| *d <= last).map(|d| (d, d)).collect();
        }
        UpdateCycle::Weekly => {
            // ISO weeks, Monday to Sunday.
            let mut monday = first - Duration::days(i64::from(first.weekday().num_days_from_monday()));
            let mut weeks = Vec::new();
            while monday <= last {
                let sunday = monday + Duration::days(6);
                if monday >= first && sunday <= last {
                    weeks.push((monday, sunday));
                }
                monday += Duration::days(7);
            }
            return weeks;
        }
        UpdateCycle::Monthly => 1,
        UpdateCycle::Quarterly => 3,
        UpdateCycle::HalfYearly => 6,
        UpdateCycle::Yearly => 12,
        UpdateCycle::Other => return Vec::new(),
    };
    // Calendar months, quarters, halves and years, aligned to January.
    let mut periods = Vec::new();
    let aligned = (first.month0() / months) * months;
    let mut start = NaiveDate::from_ymd_opt(first.year(), aligned + 1, 1);
    while let Some(s) = start {
        if s > last {
            break;
        }
        let next = s.checked_add_months(chrono::Months::new(months));
        let end = next.and_then(|n| n.pred_opt());
        if let Some(end) = end
            && s >= first
            && end <= last
        {
            periods.push((s, end));
        }
        start = next;
    }
    periods
}

/// Computes a department's scorecard for a period. `departments` is the number of registered
/// departments (the use part compares with the others); `today` bounds what can be due yet.
pub fn evaluate(
    facts: &DepartmentFacts,
    period: &Period,
    departments: u64,
    today: NaiveDate,
    weights: &Weights,
) -> Scorecard {
    let mut i = Indicators {
        entries_published: facts.entries.len() as u64,
        ..Indicators::default()
    };

    // Catalogue.
    for e in &facts.entries {
        match e.share_type {
            ShareType::Unconditional => i.unconditional += 1,
            ShareType::Conditional => i.conditional += 1,
            ShareType::NotShared => i.not_shared += 1,
        }
    }
    if !facts.entries.is_empty() {
        let total: f64 = facts.entries.iter().map(|e| e.completeness).sum();
        i.metadata_completeness = Some(total / facts.entries.len() as f64);
    }
    let restricted: Vec<&EntryFacts> = facts
        .entries
        .iter()
        .filter(|e| e.share_type != ShareType::Unconditional)
        .collect();
    i.legal_basis_coverage = rate(
        restricted.iter().filter(|e| e.has_legal_basis).count() as u64,
        restricted.len() as u64,
    );
    let shareability = rate(i.unconditional + i.conditional, i.entries_published);

    // Timeliness: periods that ended by the end of the evaluation period (and by today).
    let last_day = period.to.min(today);
    for d in &facts.datasets {
        let first = period.from.max(d.opened_on);
        if first > last_day {
            continue;
        }
        for (start, end) in update_periods(d.cycle, first, last_day) {
            i.update_periods_due += 1;
            if d.publish_days.range(start..=end).next().is_some() {
                i.update_periods_met += 1;
            }
        }
    }
    i.on_time_rate = rate(i.update_periods_met, i.update_periods_due);

    // Quality.
    i.records_accepted = facts.records_accepted;
    i.records_rejected = facts.records_rejected;
    i.rejection_rate = rate(facts.records_rejected, facts.records_accepted + facts.records_rejected);
    i.reports_received = facts.reports.len() as u64;
    let end = period.end();
    let resolved_by_end: Vec<&ReportFacts> = facts
        .reports
        .iter()
        .filter(|r| r.resolved_at.is_some_and(|at| at < end))
        .collect();
    i.reports_open = i.reports_received - resolved_by_end.len() as u64;
    i.median_resolve_hours = median(
        resolved_by_end
            .iter()
            .filter_map(|r| r.resolved_at.map(|at| hours(r.reported_at, at)))
            .collect(),
    );
    let resolved_share = rate(resolved_by_end.len() as u64, i.reports_received);

    // Responsiveness: withdrawn requests asked nothing in the end; a pending one counts once its
    // deadline has passed.
    let mut answer_hours = Vec::new();
    for r in &facts.requests {
        let answered = r.answered_at.filter(|at| *at < end);
        match (r.state, answered) {
            (RequestState::Withdrawn, _) => continue,
            (_, Some(at)) => {
                i.requests_due += 1;
                if china_day(at) <= r.due_on {
                    i.answered_in_time += 1;
                }
                answer_hours.push(hours(r.submitted_at, at));
                if r.state == RequestState::Rejected {
                    i.refusals += 1;
                    if r.reason_given {
                        i.refusals_with_reason += 1;
                    }
                }
            }
            (_, None) => {
                if r.due_on < last_day {
                    i.requests_due += 1;
                }
            }
        }
    }
    i.in_time_rate = rate(i.answered_in_time, i.requests_due);
    i.median_answer_hours = median(answer_hours);
    let reason_rate = rate(i.refusals_with_reason, i.refusals);

    // Use.
    i.records_used = facts.records_read_by_others;
    i.using_departments = facts.using_departments.len() as u64;
    i.active_grants = facts.active_grants;
    i.interface_calls = facts.interface_calls_by_others;
    let others = departments.saturating_sub(1);
    // Use is measured where there is something to use: datasets or interfaces.
    let use_ = if facts.datasets.is_empty() && facts.interfaces == 0 {
        None
    } else {
        rate(i.using_departments.min(others), others)
    };

    let parts = Parts {
        catalogue: mean(&[shareability, i.metadata_completeness, i.legal_basis_coverage]),
        timeliness: i.on_time_rate,
        quality: mean(&[i.rejection_rate.map(|r| 1.0 - r), resolved_share]),
        responsiveness: mean(&[i.in_time_rate, reason_rate]),
        use_,
    };
    Scorecard {
        department: facts.department.clone(),
        name: facts.name.clone(),
        period: *period,
        indicators: i,
        score: score(&parts, weights),
        parts,
    }
}

/// The weighted mean of the defined parts, from 0 to 100, rounded to one decimal.
pub fn score(parts: &Parts, weights: &Weights) -> f64 {
    let weighted = [
        (parts.catalogue, weights.catalogue),
        (parts.timeliness, weights.timeliness),
        (parts.quality, weights.quality),
        (parts.responsiveness, weights.responsiveness),
        (parts.use_, weights.use_),
    ];
    let (sum, total) = weighted
        .iter()
        .filter_map(|(part, w)| part.map(|p| (p * w, *w)))
        .fold((0.0, 0.0), |(s, t), (ps, w)| (s + ps, t + w));
    if total <= 0.0 {
        return 0.0;
    }
    (sum / total * 1000.0).round() / 10.0
}

/// A place in the platform-wide ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// 1 for the best; equal scores share a place.
    pub rank: u32,
    pub department: String,
    pub name: String,
    pub score: f64,
    pub previous_score: Option<f64>,
}

/// Ranks scorecards by score (ties by department code), with each department's score in the
/// previous period when known.
pub fn rank(current: &[Scorecard], previous: &[Scorecard]) -> Vec<Ranked> {
    let mut order: Vec<&Scorecard> = current.iter().collect();
    order.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.department.cmp(&b.department))
    });
    let mut ranked: Vec<Ranked> = Vec::with_capacity(order.len());
    for (n, card) in order.into_iter().enumerate() {
        let rank = match ranked.last() {
            Some(last) if last.score == card.score => last.rank,
            _ => n as u32 + 1,
        };
        ranked.push(Ranked {
            rank,
            department: card.department.clone(),
            name: card.name.clone(),
            score: card.score,
            previous_score: previous
                .iter()
                .find(|p| p.department == card.department)
                .map(|p| p.score),
        });
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("a date")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
    }

    #[test]
    fn periods_are_whole_china_days() {
        let p = Period::new(d(2026, 11, 1), d(2026, 11, 30)).expect("a period");
        assert_eq!(p.days(), 30);
        assert_eq!(
            p.previous(),
            Period {
                from: d(2026, 10, 2),
                to: d(2026, 10, 31)
            }
        );
        assert_eq!(p.start(), at("2026-10-31T16:00:00Z"));
        assert_eq!(p.end(), at("2026-11-30T16:00:00Z"));
        assert!(p.contains(at("2026-10-31T16:00:00Z")));
        assert!(!p.contains(at("2026-11-30T16:00:00Z")));
        assert!(Period::new(d(2026, 11, 2), d(2026, 11, 1)).is_err());
    }

    #[test]
    fn update_periods_follow_the_cycle_and_lie_wholly_inside() {
        // 2026-11-02 is a Monday.
        let days = update_periods(UpdateCycle::Daily, d(2026, 11, 2), d(2026, 11, 4));
        assert_eq!(days.len(), 3);
        let weeks = update_periods(UpdateCycle::Weekly, d(2026, 11, 1), d(2026, 11, 22));
        assert_eq!(
            weeks,
            vec![
                (d(2026, 11, 2), d(2026, 11, 8)),
                (d(2026, 11, 9), d(2026, 11, 15)),
                (d(2026, 11, 16), d(2026, 11, 22))
            ]
        );
        let months = update_periods(UpdateCycle::Monthly, d(2026, 1, 15), d(2026, 4, 30));
        assert_eq!(
            months,
            vec![
                (d(2026, 2, 1), d(2026, 2, 28)),
                (d(2026, 3, 1), d(2026, 3, 31)),
                (d(2026, 4, 1), d(2026, 4, 30))
            ]
        );
        let quarters = update_periods(UpdateCycle::Quarterly, d(2026, 1, 1), d(2026, 12, 31));
        assert_eq!(quarters.len(), 4);
        assert_eq!(quarters[3], (d(2026, 10, 1), d(2026, 12, 31)));
        assert_eq!(
            update_periods(UpdateCycle::Yearly, d(2026, 1, 2), d(2026, 12, 31)),
            vec![]
        );
        assert_eq!(
            update_periods(UpdateCycle::Other, d(2026, 1, 1), d(2026, 12, 31)),
            vec![]
        );
    }

    #[test]
    fn completeness_counts_the_optional_elements() {
        let mut content = draft().validate().expect("a valid draft");
        content.related_codes.clear();
        content.maintainer = String::new();
        for item in &mut content.items {
            item.description = "说明".into();
            item.length = 18;
        }
        content.open.open_type = OpenType::NotOpen;
        // summary, descriptions, lengths, open condition: 4 of 6.
        assert!((completeness(&content) - 4.0 / 6.0).abs() < 1e-9);
    }

    /// A fixture computed by hand: every indicator and the score.
    #[test]
    fn a_hand_computed_scorecard() {
        let period = Period::new(d(2026, 11, 2), d(2026, 11, 8)).expect("a period");
        let entry = |share_type, completeness, has_legal_basis| EntryFacts {
            share_type,
            completeness,
            has_legal_basis,
        };
        let facts = DepartmentFacts {
            department: "11330100MB00010011".into(),
            name: "市市场监督管理局".into(),
            entries: vec![
                entry(ShareType::Unconditional, 1.0, false),
                entry(ShareType::Conditional, 0.5, true),
                entry(ShareType::NotShared, 0.75, false),
                entry(ShareType::Unconditional, 0.75, false),
            ],
            datasets: vec![
                DatasetFacts {
                    dataset: "a".into(),
                    cycle: UpdateCycle::Daily,
                    opened_on: d(2026, 11, 4),
                    // Due 11-04..11-08 (5 days), met on 3 of them; 11-01 is outside.
                    publish_days: [d(2026, 11, 1), d(2026, 11, 4), d(2026, 11, 5), d(2026, 11, 8)].into(),
                },
                DatasetFacts {
                    dataset: "b".into(),
                    cycle: UpdateCycle::Weekly,
                    opened_on: d(2026, 1, 1),
                    // One week due (11-02..11-08), met.
                    publish_days: [d(2026, 11, 3)].into(),
                },
            ],
            records_accepted: 900,
            records_rejected: 100,
            reports: vec![
                ReportFacts {
                    reported_at: at("2026-11-02T00:00:00Z"),
                    resolved_at: Some(at("2026-11-02T10:00:00Z")),
                },
                ReportFacts {
                    reported_at: at("2026-11-03T00:00:00Z"),
                    resolved_at: Some(at("2026-11-04T06:00:00Z")),
                },
                ReportFacts {
                    reported_at: at("2026-11-05T00:00:00Z"),
                    resolved_at: None,
                },
            ],
            requests: vec![
                // Answered in time, approved after 24 h.
                RequestFacts {
                    submitted_at: at("2026-11-02T01:00:00Z"),
                    due_on: d(2026, 11, 16),
                    state: RequestState::Approved,
                    answered_at: Some(at("2026-11-03T01:00:00Z")),
                    reason_given: false,
                },
                // Rejected with a reason, late, after 72 h.
                RequestFacts {
                    submitted_at: at("2026-11-02T01:00:00Z"),
                    due_on: d(2026, 11, 3),
                    state: RequestState::Rejected,
                    answered_at: Some(at("2026-11-05T01:00:00Z")),
                    reason_given: true,
                },
                // Pending past its deadline: due, not in time.
                RequestFacts {
                    submitted_at: at("2026-11-02T01:00:00Z"),
                    due_on: d(2026, 11, 4),
                    state: RequestState::Pending,
                    answered_at: None,
                    reason_given: false,
                },
                // Pending, not yet due: not counted. Withdrawn: not counted.
                RequestFacts {
                    submitted_at: at("2026-11-06T01:00:00Z"),
                    due_on: d(2026, 11, 20),
                    state: RequestState::Pending,
                    answered_at: None,
                    reason_given: false,
                },
                RequestFacts {
                    submitted_at: at("2026-11-06T01:00:00Z"),
                    due_on: d(2026, 11, 20),
                    state: RequestState::Withdrawn,
                    answered_at: Some(at("2026-11-06T02:00:00Z")),
                    reason_given: false,
                },
            ],
            records_read_by_others: 5000,
            using_departments: ["11330100MB0002002B".to_string(), "11330100MB0003003M".to_string()].into(),
            active_grants: 1,
            interface_calls_by_others: 0,
            interfaces: 0,
        };
        let card = evaluate(&facts, &period, 5, d(2026, 11, 28), &Weights::default());
        let i = &card.indicators;
        assert_eq!(
            (i.entries_published, i.unconditional, i.conditional, i.not_shared),
            (4, 2, 1, 1)
        );
        assert_eq!(i.metadata_completeness, Some(0.75));
        assert_eq!(i.legal_basis_coverage, Some(0.5));
        assert_eq!((i.update_periods_due, i.update_periods_met), (6, 4));
        assert_eq!(i.rejection_rate, Some(0.1));
        assert_eq!((i.reports_received, i.reports_open), (3, 1));
        assert_eq!(i.median_resolve_hours, Some(20.0));
        assert_eq!((i.requests_due, i.answered_in_time), (3, 1));
        assert_eq!(i.median_answer_hours, Some(48.0));
        assert_eq!((i.refusals, i.refusals_with_reason), (1, 1));
        assert_eq!((i.records_used, i.using_departments, i.active_grants), (5000, 2, 1));

        // catalogue = mean(3/4 shareable, 0.75 complete, 0.5 legal basis) = 2/3
        // timeliness = 4/6; quality = mean(0.9, 2/3) = 0.78333…
        // responsiveness = mean(1/3, 1) = 2/3; use = 2/4 = 0.5
        // score = (20·2/3 + 25·2/3 + 20·0.78333 + 20·2/3 + 15·0.5) / 100 = 0.665 → 66.5
        let parts = card.parts;
        assert!((parts.catalogue.unwrap_or_default() - 2.0 / 3.0).abs() < 1e-9);
        assert!((parts.quality.unwrap_or_default() - (0.9 + 2.0 / 3.0) / 2.0).abs() < 1e-9);
        assert_eq!(parts.use_, Some(0.5));
        assert_eq!(card.score, 66.5);
    }

    #[test]
    fn parts_without_facts_are_left_out() {
        let period = Period::new(d(2026, 11, 2), d(2026, 11, 8)).expect("a period");
        let nothing = DepartmentFacts::default();
        let card = evaluate(&nothing, &period, 3, d(2026, 11, 28), &Weights::default());
        assert_eq!(card.parts, Parts::default());
        assert_eq!(card.score, 0.0);
        let only_catalogue = DepartmentFacts {
            entries: vec![EntryFacts {
                share_type: ShareType::Unconditional,
                completeness: 0.5,
                has_legal_basis: false,
            }],
            ..DepartmentFacts::default()
        };
        // mean(1.0 shareable, 0.5 complete) = 0.75, the only part: 75.
        assert_eq!(
            evaluate(&only_catalogue, &period, 3, d(2026, 11, 28), &Weights::default()).score,
            75.0
        );
    }

    #[test]
    fn ranking_shares_places_and_shows_the_change() {
        let card = |dept: &str, score: f64| Scorecard {
            department: dept.into(),
            name: dept.into(),
            period: Period {
                from: d(2026, 11, 1),
                to: d(2026, 11, 7),
            },
            indicators: Indicators::default(),
            parts: Parts::default(),
            score,
        };
        let ranked = rank(&[card("b", 50.0), card("a", 80.0), card("c", 50.0)], &[card("a", 70.0)]);
        let places: Vec<(u32, &str)> = ranked.iter().map(|r| (r.rank, r.department.as_str())).collect();
        assert_eq!(places, vec![(1, "a"), (2, "b"), (2, "c")]);
        assert_eq!(ranked[0].previous_score, Some(70.0));
        assert_eq!(ranked[1].previous_score, None);
    }

    #[test]
    fn weights_must_be_usable() {
        assert!(Weights::default().validate().is_ok());
        let zero = Weights {
            catalogue: 0.0,
            timeliness: 0.0,
            quality: 0.0,
            responsiveness: 0.0,
            use_: 0.0,
        };
        assert!(zero.validate().is_err());
        assert!(
            Weights {
                catalogue: -1.0,
                ..Weights::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Weights {
                quality: f64::NAN,
                ..Weights::default()
            }
            .validate()
            .is_err()
        );
    }
}
