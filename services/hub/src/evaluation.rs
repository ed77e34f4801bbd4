//! EvaluationService: the sharing scorecard. The facts come from what the hub recorded — the
//! catalogue, the access workflow's tables, and the audit trail (publishes with their counts,
//! reads with theirs) — and the formulas from `domain::scorecard`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use serde_json::Value;
use tonic::{Request, Response, Status};
use xinqiao_domain::access::{AccessGrant, AccessRequest, ErrorReport, RequestState, china_day};
use xinqiao_domain::catalogue::{CatalogEntry, EntryFilter};
use xinqiao_domain::department::Department;
use xinqiao_domain::identity::Caller;
use xinqiao_domain::interface::Interface;
use xinqiao_domain::lifecycle::EntryState;
use xinqiao_domain::policy::EntryVisibility;
use xinqiao_domain::scorecard::{
    self, DatasetFacts, DepartmentFacts, EntryFacts, Period, Ranked, ReportFacts, RequestFacts, Scorecard, Weights,
};
use xinqiao_domain::search::SearchPosition;
use xinqiao_domain::{Error, Result};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::evaluation_service_server::EvaluationService;
use xinqiao_store::{AuditFilter, DatasetFilter, DatasetListing, GrantFilter, ReportFilter, RequestFilter, Store};

use crate::auth::Authenticator;
use crate::config::EvaluationSettings;
use crate::status::answer;

/// Rows read per step from the store.
const PAGE: u32 = 1000;

pub struct EvaluationApi {
    evaluator: Evaluator,
    auth: Authenticator,
}

/// Computes scorecards from the store. Cheap to clone.
#[derive(Clone)]
pub struct Evaluator {
    store: Arc<dyn Store>,
    weights: Weights,
    default_days: u32,
}

/// What the audit trail says about departments over a period.
#[derive(Default)]
struct Activity {
    accepted: u64,
    rejected: u64,
    /// Days on which each dataset received something.
    publish_days: HashMap<String, BTreeSet<NaiveDate>>,
    read_by_others: u64,
    /// Answered calls of its interfaces by other departments.
    interface_calls: u64,
    users: BTreeSet<String>,
}

fn number(detail: &Value, key: &str) -> u64 {
    detail.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Whether an actor is a department (a 统一社会信用代码), not the admin, the hub or a refused peer.
fn is_department(actor: &str) -> bool {
    actor.len() == 18 && actor.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Every item of a listing that the store pages by key: `page` gets the key to continue after.
async fn every_page<T, Page>(key: impl Fn(&T) -> String, mut page: impl FnMut(Option<String>) -> Page) -> Result<Vec<T>>
where
    Page: Future<Output = Result<Vec<T>>>,
{
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let items = page(after.take()).await?;
        let full = items.len() == PAGE as usize;
        after = items.last().map(&key);
        all.extend(items);
        if !full {
            return Ok(all);
        }
    }
}

impl Evaluator {
    pub fn new(store: Arc<dyn Store>, settings: &EvaluationSettings) -> Result<Evaluator> {
        let weights = settings.weights();
        weights.validate()?;
        Ok(Evaluator {
            store,
            weights,
            default_days: settings.default_period_days.max(1),
        })
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// The period a request names, or the default one ending today.
    pub fn period(&self, from: &str, to: &str) -> Result<Period> {
        let date = |field: &str, value: &str| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map_err(|_| Error::invalid(field, "must be a date written YYYY-MM-DD"))
        };
        let today = china_day(crate::clock::now());
        let to = if to.is_empty() { today } else { date("to", to)? };
        let from = if from.is_empty() {
            to - chrono::Duration::days(i64::from(self.default_days) - 1)
        } else {
            date("from", from)?
        };
        Period::new(from, to)
    }

    /// Reads the audit trail over the period once: publishes and their counts per department,
    /// and the records each department's data gave to others.
    async fn activity(&self, period: &Period, involving: Option<&str>) -> Result<HashMap<String, Activity>> {
        let filter = AuditFilter {
            from: Some(period.start()),
            to: Some(period.end()),
            involving: involving.map(str::to_string),
            ..AuditFilter::default()
        };
        let mut by_department: HashMap<String, Activity> = HashMap::new();
        let mut after = 0;
        loop {
            let page = self.store.list_audit(&filter, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.event.sequence;
            let full = page.len() == PAGE as usize;
            for row in page {
                let e = row.event;
                let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
                let day = china_day(e.at);
                match e.action.as_str() {
                    "Publish" | "PublishStream" if e.outcome == "OK" => {
                        if detail.get("replayed").and_then(Value::as_bool) == Some(true) {
                            continue;
                        }
                        let a = by_department.entry(e.actor.clone()).or_default();
                        let accepted = number(&detail, "accepted");
                        a.accepted += accepted;
                        a.rejected += number(&detail, "rejected");
                        if accepted > 0 {
                            a.publish_days.entry(e.target.clone()).or_default().insert(day);
                        }
                    }
                    "UploadChunks" | "StartUpload"
                        if e.outcome == "OK" && detail.get("complete").and_then(Value::as_bool) == Some(true) =>
                    {
                        let a = by_department.entry(e.actor.clone()).or_default();
                        a.publish_days.entry(e.target.clone()).or_default().insert(day);
                    }
                    "Fetch" | "Snapshot" | "Subscribe" | "DownloadFile" => {
                        // Unary fetches are one event; streams count at their end.
                        let counted = e.action == "Fetch" && e.outcome == "OK"
                            || detail.get("phase").and_then(Value::as_str) == Some("end");
                        let records = number(&detail, "records");
                        if counted && records > 0 && e.actor != e.about && is_department(&e.actor) {
                            let a = by_department.entry(e.about.clone()).or_default();
                            a.read_by_others += records;
                            a.users.insert(e.actor.clone());
                        }
                    }
                    // An interface call is a use like a read: one answer.
                    "Invoke" if e.outcome == "OK" && e.actor != e.about && is_department(&e.actor) => {
                        let a = by_department.entry(e.about.clone()).or_default();
                        a.interface_calls += 1;
                        a.users.insert(e.actor.clone());
                    }
                    _ => {}
                }
            }
            if !full {
                break;
            }
        }
        Ok(by_department)
    }

    /// The facts about one department that are kept in the catalogue and workflow tables.
    async fn facts(
        &self,
        code: &str,
        name: &str,
        period: &Period,
        activity: Option<&Activity>,
    ) -> Result<DepartmentFacts> {
        let end = period.end();
        let now = crate::clock::now();

        let published = &EntryFilter {
            provider_code: code.to_string(),
            state: Some(EntryState::Published),
            ..EntryFilter::default()
        };
        let entries: Vec<CatalogEntry> = every_page(
            |e: &CatalogEntry| e.resource_code.clone(),
            |after| async move {
                self.store
                    .search_entries(
                        &EntryVisibility::All,
                        published,
                        after.map(|code| SearchPosition::of_code(&code)).as_ref(),
                        PAGE,
                    )
                    .await
            },
        )
        .await?
        .into_iter()
        .filter(|e| e.published_at.is_none_or(|at| at < end))
        .collect();
        let cycles: HashMap<&str, &CatalogEntry> = entries.iter().map(|e| (e.resource_code.as_str(), e)).collect();

        let own = &DatasetFilter {
            provider_code: code.to_string(),
            ..DatasetFilter::default()
        };
        let listings = every_page(
            |l: &DatasetListing| l.dataset.id.clone(),
            |after| async move { self.store.list_datasets(own, after.as_deref(), PAGE).await },
        )
        .await?;
        let datasets = listings
            .into_iter()
            // Only a dataset whose entry is published owes updates.
            .filter_map(|listing| {
                let entry = cycles.get(listing.dataset.id.as_str())?;
                Some(DatasetFacts {
                    cycle: entry.content.update_cycle,
                    opened_on: china_day(listing.dataset.created_at),
                    publish_days: activity
                        .and_then(|a| a.publish_days.get(&listing.dataset.id))
                        .cloned()
                        .unwrap_or_default(),
                    dataset: listing.dataset.id,
                })
            })
            .collect();

        let to_answer = &RequestFilter {
            provider: Some(code.to_string()),
            ..RequestFilter::default()
        };
        let requests = every_page(
            |r: &AccessRequest| r.id.clone(),
            |after| async move { self.store.list_requests(to_answer, after.as_deref(), PAGE).await },
        )
        .await?
        .into_iter()
        .filter(|r| period.contains(r.submitted_at))
        .map(|r| RequestFacts {
            submitted_at: r.submitted_at,
            due_on: r.due_on,
            reason_given: r.state == RequestState::Rejected && !r.reason.trim().is_empty(),
            state: r.state,
            answered_at: r.answered_at,
        })
        .collect();

        let received = &ReportFilter {
            provider: Some(code.to_string()),
            ..ReportFilter::default()
        };
        let reports = every_page(
            |r: &ErrorReport| r.id.clone(),
            |after| async move { self.store.list_reports(received, after.as_deref(), PAGE).await },
        )
        .await?
        .into_iter()
        .filter(|r| period.contains(r.reported_at))
        .map(|r| ReportFacts {
            reported_at: r.reported_at,
            resolved_at: r.resolved_at,
        })
        .collect();

        let active = &GrantFilter {
            provider: Some(code.to_string()),
            active_at: Some(end.min(now)),
            ..GrantFilter::default()
        };
        let active_grants = every_page(
            |g: &AccessGrant| g.id.clone(),
            |after| async move { self.store.list_grants(active, after.as_deref(), PAGE).await },
        )
        .await?
        .len() as u64;
        let interfaces = every_page(
            |i: &Interface| i.code.clone(),
            |after| async move { self.store.list_interfaces(Some(code), after.as_deref(), PAGE).await },
        )
        .await?
        .len() as u64;

        Ok(DepartmentFacts {
            department: code.to_string(),
            name: name.to_string(),
            entries: entries.iter().map(|e| EntryFacts::of(&e.content)).collect(),
            datasets,
            records_accepted: activity.map_or(0, |a| a.accepted),
            records_rejected: activity.map_or(0, |a| a.rejected),
            reports,
            requests,
            records_read_by_others: activity.map_or(0, |a| a.read_by_others),
            using_departments: activity.map(|a| a.users.clone()).unwrap_or_default(),
            active_grants,
            interface_calls_by_others: activity.map_or(0, |a| a.interface_calls),
            interfaces,
        })
    }

    /// Every active department, by code, with its name.
    async fn departments(&self) -> Result<Vec<(String, String)>> {
        let all = every_page(
            |d: &Department| d.code().to_string(),
            |after| async move { self.store.list_departments(after.as_deref(), PAGE, false).await },
        )
        .await?;
        Ok(all.into_iter().map(|d| (d.profile.code, d.profile.name)).collect())
    }

    /// Every active department's scorecard over a period.
    pub async fn all(&self, period: &Period) -> Result<Vec<Scorecard>> {
        let departments = self.departments().await?;
        let activity = self.activity(period, None).await?;
        let today = china_day(crate::clock::now());
        let mut cards = Vec::with_capacity(departments.len());
        for (code, name) in &departments {
            let facts = self.facts(code, name, period, activity.get(code)).await?;
            cards.push(scorecard::evaluate(
                &facts,
                period,
                departments.len() as u64,
                today,
                &self.weights,
            ));
        }
        Ok(cards)
    }

    /// One department's scorecard over a period, and over the period before it.
    pub async fn one(&self, code: &str, period: &Period) -> Result<(Scorecard, Scorecard)> {
        let department = self.store.get_department(code).await?;
        let department = department.ok_or_else(|| Error::NotFound(format!("department {code}")))?;
        let count = self.departments().await?.len() as u64;
        let name = &department.profile.name;
        let card = self.card(code, name, count, period).await?;
        let previous = self.card(code, name, count, &period.previous()).await?;
        Ok((card, previous))
    }

    async fn card(&self, code: &str, name: &str, departments: u64, period: &Period) -> Result<Scorecard> {
        let activity = self.activity(period, Some(code)).await?;
        let facts = self.facts(code, name, period, activity.get(code)).await?;
        let today = china_day(crate::clock::now());
        Ok(scorecard::evaluate(&facts, period, departments, today, &self.weights))
    }

    /// The ranking over a period, with the previous period's scores.
    pub async fn ranking(&self, period: &Period) -> Result<(Vec<Ranked>, Vec<Scorecard>)> {
        let current = self.all(period).await?;
        let previous = self.all(&period.previous()).await?;
        Ok((scorecard::rank(&current, &previous), current))
    }
}

fn card_api(card: &Scorecard, previous_score: Option<f64>) -> pb::Scorecard {
    let i = &card.indicators;
    pb::Scorecard {
        department: card.department.clone(),
        name: card.name.clone(),
        from: card.period.from.to_string(),
        to: card.period.to.to_string(),
        score: card.score,
        parts: Some(pb::ScoreParts {
            catalogue: card.parts.catalogue,
            timeliness: card.parts.timeliness,
            quality: card.parts.quality,
            responsiveness: card.parts.responsiveness,
            r#use: card.parts.use_,
        }),
        indicators: Some(pb::Indicators {
            entries_published: i.entries_published,
            unconditional: i.unconditional,
            conditional: i.conditional,
            not_shared: i.not_shared,
            metadata_completeness: i.metadata_completeness,
            legal_basis_coverage: i.legal_basis_coverage,
            update_periods_due: i.update_periods_due,
            update_periods_met: i.update_periods_met,
            on_time_rate: i.on_time_rate,
            records_accepted: i.records_accepted,
            records_rejected: i.records_rejected,
            rejection_rate: i.rejection_rate,
            reports_received: i.reports_received,
            reports_open: i.reports_open,
            median_resolve_hours: i.median_resolve_hours,
            requests_due: i.requests_due,
            answered_in_time: i.answered_in_time,
            in_time_rate: i.in_time_rate,
            median_answer_hours: i.median_answer_hours,
            refusals: i.refusals,
            refusals_with_reason: i.refusals_with_reason,
            records_used: i.records_used,
            interface_calls: i.interface_calls,
            using_departments: i.using_departments,
            active_grants: i.active_grants,
        }),
        previous_score,
    }
}

impl EvaluationApi {
    pub fn new(evaluator: Evaluator, auth: Authenticator) -> Self {
        Self { evaluator, auth }
    }
}

/// Who may see a department's full scorecard: the admin and evaluators (评价方), and the
/// department itself.
fn may_see(caller: &Caller, department: &str) -> bool {
    caller.is_admin() || caller.is_evaluator() || caller.department() == Some(department)
}

#[tonic::async_trait]
impl EvaluationService for EvaluationApi {
    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Result<Response<pb::Scorecard>, Status> {
        answer(async {
            let caller = self.auth.anyone(&request).await?;
            let r = request.get_ref();
            let department = match (r.department.as_str(), caller.department()) {
                ("", Some(me)) => me.to_string(),
                ("", None) => return Err(Error::invalid("department", "name the department to evaluate")),
                (code, _) => code.to_string(),
            };
            if !may_see(&caller, &department) {
                return Err(Error::PermissionDenied(
                    "a department sees its own scorecard and the ranking; the admin and evaluators see every scorecard"
                        .into(),
                ));
            }
            let period = self.evaluator.period(&r.from, &r.to)?;
            let (card, previous) = self.evaluator.one(&department, &period).await?;
            Ok(card_api(&card, Some(previous.score)))
        })
        .await
    }

    async fn get_ranking(&self, request: Request<pb::GetRankingRequest>) -> Result<Response<pb::Ranking>, Status> {
        answer(async {
            let caller = self.auth.anyone(&request).await?;
            let r = request.get_ref();
            let period = self.evaluator.period(&r.from, &r.to)?;
            let (ranked, cards) = self.evaluator.ranking(&period).await?;
            let w = self.evaluator.weights();
            Ok(pb::Ranking {
                from: period.from.to_string(),
                to: period.to.to_string(),
                departments: ranked
                    .into_iter()
                    .map(|place| {
                        let scorecard = may_see(&caller, &place.department)
                            .then(|| cards.iter().find(|c| c.department == place.department))
                            .flatten()
                            .map(|c| card_api(c, place.previous_score));
                        pb::RankedDepartment {
                            rank: place.rank,
                            department: place.department,
                            name: place.name,
                            score: place.score,
                            previous_score: place.previous_score,
                            scorecard,
                        }
                    })
                    .collect(),
                weight_catalogue: w.catalogue,
                weight_timeliness: w.timeliness,
                weight_quality: w.quality,
                weight_responsiveness: w.responsiveness,
                weight_use: w.use_,
            })
        })
        .await
    }
}

/// How often the scorecard gauges of `/metrics` are recomputed (over the default period).
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Keeps the `xinqiao_scorecard` gauges current: every department's score and parts over the
/// default period, recomputed now and then until the hub stops.
pub fn keep_gauges(
    evaluator: Evaluator,
    metrics: crate::metrics::Metrics,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match evaluator.period("", "") {
                Ok(period) => match evaluator.all(&period).await {
                    Ok(cards) => {
                        for card in cards {
                            let d = &card.department;
                            metrics.set_scorecard(d, "score", card.score);
                            let parts = [
                                ("catalogue", card.parts.catalogue),
                                ("timeliness", card.parts.timeliness),
                                ("quality", card.parts.quality),
                                ("responsiveness", card.parts.responsiveness),
                                ("use", card.parts.use_),
                            ];
                            for (name, value) in parts {
                                if let Some(value) = value {
                                    metrics.set_scorecard(d, name, value);
                                }
                            }
                            let i = &card.indicators;
                            metrics.set_scorecard(d, "records_used", i.records_used as f64);
                            metrics.set_scorecard(d, "active_grants", i.active_grants as f64);
                            metrics.set_scorecard(d, "reports_open", i.reports_open as f64);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the scorecard gauges could not be computed"),
                },
                Err(e) => tracing::warn!(error = %e, "the scorecard period is invalid"),
            }
            tokio::select! {
                _ = tokio::time::sleep(GAUGES_EVERY) => {}
                _ = stopping.changed() => return,
            }
        }
    });
}
