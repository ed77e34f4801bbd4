//! The sharing scorecard (评价) over gRPC: a scenario played through the real services — entries
//! published, records published with known accepted and rejected counts, a read by another
//! department, access requests approved and refused, an error report resolved — and then every
//! indicator, every part and the score checked against numbers worked out by hand from the
//! scenario, with the formulas of `domain::scorecard` written out here rather than called. Also
//! who may see which scorecard, the ranking, how periods are checked, and which grants count as
//! active at the end of a period.
//!
//! The scenario runs within one China Standard Time day and is evaluated over that day (and over
//! the default 30 days ending it, which must give the same indicators).

use tonic::Code;
use tonic::transport::Channel;
use xinqiao_domain::access::china_day;
use xinqiao_hub::pki;
use xinqiao_proto::v1::evaluation_service_client::EvaluationServiceClient;
use xinqiao_tests::chrono::{DateTime, Duration, NaiveDate, SecondsFormat, SubsecRound, Utc};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    a_scorecard_counts_what_the_hub_recorded,
    the_ranking_shows_full_scorecards_only_to_whom_may_see_them,
    periods_are_whole_days_written_in_order,
    active_grants_are_those_given_and_not_yet_ended_at_the_period_end,
);

type Evaluation = EvaluationServiceClient<Channel>;

async fn evaluation(hub: &TestHub, code: &str) -> Evaluation {
    Evaluation::new(hub.channel(pki::department_files(&hub.pki_dir(), code)).await)
}

async fn evaluation_admin(hub: &TestHub) -> Evaluation {
    Evaluation::new(hub.admin_channel().await)
}

fn scorecard_of(department: &str, from: &str, to: &str) -> pb::GetScorecardRequest {
    pb::GetScorecardRequest {
        department: department.into(),
        from: from.into(),
        to: to.into(),
    }
}

fn ranking_of(from: &str, to: &str) -> pb::GetRankingRequest {
    pb::GetRankingRequest {
        from: from.into(),
        to: to.into(),
    }
}

/// Valid records SAMR publishes in its first batch (REJECT_ALL, all valid).
const N: u64 = 6;
/// Records in its second batch, under ACCEPT_VALID …
const M: u64 = 4;
/// … of which this many carry a wrong check character and are rejected.
const K: u64 = 2;
/// The departments the development PKI registers: SAMR, POLICE, HRSS.
const DEPARTMENTS: u64 = 3;

/// What the scenario left behind that the hand computation needs.
struct Scenario {
    today: NaiveDate,
    open: String,
    conditional: String,
    /// The approved request (HRSS) and the refused one (POLICE), as the hub answered them.
    approved: pb::AccessRequest,
    refused: pb::AccessRequest,
    /// The error report, as resolved.
    report: pb::ErrorReport,
}

fn instant(ts: &Option<Timestamp>) -> DateTime<Utc> {
    let ts = ts.as_ref().expect("a timestamp");
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).expect("nanos")).expect("a valid timestamp")
}

/// Whole seconds between two instants, in hours (the scorecard's unit for durations).
fn hours_between(from: &Option<Timestamp>, to: &Option<Timestamp>) -> f64 {
    (instant(to) - instant(from)).num_seconds().max(0) as f64 / 3600.0
}

/// SAMR's unconditionally shared entry: summary, item descriptions, item lengths, maintainer and
/// an open condition (it opens conditionally) — 5 of the 6 optional elements; no related codes.
fn open_entry() -> pb::EntryContent {
    let mut c = content("企业登记信息", "102001", "本市登记注册企业的营业执照信息");
    for item in &mut c.items {
        item.description = format!("营业执照上的{}", item.name);
    }
    c.maintainer = "市市场监督管理局数据科".into();
    c.open = Some(pb::OpenAttributes {
        open_type: pb::OpenType::Conditional as i32,
        condition: "经申请后向社会开放".into(),
    });
    c
}

/// SAMR's conditionally shared entry, updated monthly and related to the open one: summary, item
/// lengths, related codes and the open condition (not owed: it is not opened) — 4 of 6; no item
/// descriptions, no maintainer.
fn conditional_entry(related: &str) -> pb::EntryContent {
    let mut c = shared_as(
        content("企业经营异常名录", "102002", "列入经营异常名录的企业及原因"),
        pb::ShareType::Conditional,
        pb::ExchangeKind::Table,
    );
    c.update_cycle = pb::UpdateCycle::Monthly as i32;
    c.related_codes = vec![related.into()];
    c
}

async fn play(hub: &TestHub) -> Scenario {
    let today = china_today();
    hub.import_shared_schemas().await;

    // SAMR opens an unconditionally shared dataset (daily cycle) and a conditional one.
    let open = hub.open_table(SAMR, open_entry()).await.dataset;
    let conditional = hub.open_table(SAMR, conditional_entry(&open)).await.dataset;

    // SAMR publishes N valid records, then M records under ACCEPT_VALID of which K are invalid.
    let mut samr_exchange = hub.exchange(SAMR).await;
    let first = companies(&open, "batch-1", 1..=N);
    let published = ok(samr_exchange.publish(first.clone()).await);
    assert_eq!((published.accepted, published.rejected.len()), (N as u32, 0));
    let mut second = batch(
        &open,
        "batch-2",
        (N + 1..=N + M - K).map(|s| upsert(&company(s))).collect(),
    );
    second
        .changes
        .extend((N + M - K + 1..=N + M).map(|s| upsert(&wrong_check_character(s))));
    second.policy = pb::BatchPolicy::AcceptValid as i32;
    let published = ok(samr_exchange.publish(second).await);
    assert_eq!(
        (published.accepted, published.rejected.len()),
        ((M - K) as u32, K as usize)
    );
    // A retry of the first batch is a replay: it stores nothing and must not count again.
    let replayed = ok(samr_exchange.publish(first).await);
    assert!(replayed.replayed, "the same idempotency key replays the first answer");

    // POLICE reads the open dataset, declaring a purpose; SAMR reading its own does not count.
    let mut police_exchange = hub.exchange(POLICE).await;
    let received = fetch_all(&mut police_exchange, &open, 0).await;
    assert_eq!(received.len() as u64, N + M - K);
    assert_eq!(fetch_all(&mut samr_exchange, &open, 0).await.len() as u64, N + M - K);

    // HRSS applies for the conditional dataset and SAMR approves; POLICE applies and SAMR
    // refuses, giving a reason.
    let fields = ["uscc", "name"];
    let (approved, _grant) = hub.grant(SAMR, HRSS, &conditional, &fields, approval(&[], &[])).await;
    let asked = hub.apply(POLICE, &conditional, &fields).await;
    let refused = ok(hub
        .access(SAMR)
        .await
        .reject_request(pb::RejectRequestRequest {
            request_id: asked.request_id.clone(),
            reason: "申请用途超出共享条件".into(),
        })
        .await);
    assert_eq!(refused.state, pb::RequestState::Rejected as i32);

    // POLICE flags a record it read; SAMR checks it and resolves the report.
    let mut police_access = hub.access(POLICE).await;
    let filed = ok(police_access
        .report_error(pb::ReportErrorRequest {
            dataset: open.clone(),
            sequence: received[0].sequence,
            key: Vec::new(),
            description: "企业名称与营业执照不一致".into(),
        })
        .await);
    let report = ok(hub
        .access(SAMR)
        .await
        .resolve_report(pb::ResolveReportRequest {
            report_id: filed.report_id,
            resolution: pb::ReportState::Rejected as i32,
            reason: "经核实与登记信息一致".into(),
            corrected_sequence: 0,
        })
        .await);
    assert_eq!(report.state, pb::ReportState::Rejected as i32);

    assert_eq!(
        china_today(),
        today,
        "the scenario straddled midnight China Standard Time: its facts fall on two days"
    );
    Scenario {
        today,
        open,
        conditional,
        approved,
        refused,
        report,
    }
}

/// Rounds every rate to 1e-9, so that whole structs compare although the hub adds in its order.
fn rounded(x: Option<f64>) -> Option<f64> {
    x.map(|v| (v * 1e9).round() / 1e9)
}

fn rounded_indicators(i: &pb::Indicators) -> pb::Indicators {
    pb::Indicators {
        metadata_completeness: rounded(i.metadata_completeness),
        legal_basis_coverage: rounded(i.legal_basis_coverage),
        on_time_rate: rounded(i.on_time_rate),
        rejection_rate: rounded(i.rejection_rate),
        median_resolve_hours: rounded(i.median_resolve_hours),
        in_time_rate: rounded(i.in_time_rate),
        median_answer_hours: rounded(i.median_answer_hours),
        ..*i
    }
}

fn rounded_parts(p: &pb::ScoreParts) -> pb::ScoreParts {
    pb::ScoreParts {
        catalogue: rounded(p.catalogue),
        timeliness: rounded(p.timeliness),
        quality: rounded(p.quality),
        responsiveness: rounded(p.responsiveness),
        r#use: rounded(p.r#use),
    }
}

/// SAMR's indicators, parts and score for the scenario's day, worked out by hand.
fn expected_for_samr(s: &Scenario) -> (pb::Indicators, pb::ScoreParts, f64) {
    // Catalogue: two published entries, one 无条件 and one 有条件 (with its legal basis).
    // Completeness: 5/6 for the open entry, 4/6 for the conditional one (see the entries).
    let completeness = (5.0 / 6.0 + 4.0 / 6.0) / 2.0; // 0.75
    let (entries, shared, restricted, with_legal_basis) = (2.0, 2.0, 1.0, 1.0);
    let shareability = shared / entries;
    let legal_basis = with_legal_basis / restricted;
    let catalogue = (shareability + completeness + legal_basis) / 3.0; // 0.91666…

    // Timeliness: the open dataset is daily, opened today and published to today: 1 due, 1 met.
    // The conditional one is monthly: no whole month lies in one day, so nothing is due.
    let (periods_due, periods_met) = (1.0, 1.0);
    let timeliness = periods_met / periods_due;

    // Quality: N + (M − K) = 8 accepted, K = 2 rejected (the replay adds nothing); 1 report,
    // resolved the same day.
    let accepted = N + M - K;
    let rejection_rate = K as f64 / (accepted + K) as f64; // 2/10
    let (reports, resolved) = (1.0, 1.0);
    let resolved_share = resolved / reports;
    let quality = ((1.0 - rejection_rate) + resolved_share) / 2.0; // 0.9

    // Responsiveness: 2 requests answered today, both long before their deadline (10 working
    // days); 1 refusal, with a reason.
    let (due, answered_in_time, refusals, with_reason) = (2.0, 2.0, 1.0, 1.0);
    let in_time = answered_in_time / due;
    let reasons = with_reason / refusals;
    let responsiveness = (in_time + reasons) / 2.0;

    // Use: one other department (POLICE) read its data, of DEPARTMENTS − 1 = 2 others.
    let use_ = 1.0 / (DEPARTMENTS - 1) as f64; // 0.5

    // Every part is defined, so all five weights count:
    // (20·0.91666… + 25·1 + 20·0.9 + 20·1 + 15·0.5) / (20 + 25 + 20 + 20 + 15)
    //   = (18.333… + 25 + 18 + 20 + 7.5) / 100 = 0.88833… → 88.8 (one decimal).
    let weighted = 20.0 * catalogue + 25.0 * timeliness + 20.0 * quality + 20.0 * responsiveness + 15.0 * use_;
    let score = (weighted / 100.0 * 1000.0).round() / 10.0;
    assert_eq!(score, 88.8, "the hand computation itself");

    let answer_hours = [
        hours_between(&s.approved.submitted_at, &s.approved.answered_at),
        hours_between(&s.refused.submitted_at, &s.refused.answered_at),
    ];
    let indicators = pb::Indicators {
        entries_published: 2,
        unconditional: 1,
        conditional: 1,
        not_shared: 0,
        metadata_completeness: Some(completeness),
        legal_basis_coverage: Some(legal_basis),
        update_periods_due: 1,
        update_periods_met: 1,
        on_time_rate: Some(timeliness),
        records_accepted: accepted,
        records_rejected: K,
        rejection_rate: Some(rejection_rate),
        reports_received: 1,
        reports_open: 0,
        median_resolve_hours: Some(hours_between(&s.report.reported_at, &s.report.resolved_at)),
        requests_due: 2,
        answered_in_time: 2,
        in_time_rate: Some(in_time),
        // The median of two is their mean.
        median_answer_hours: Some((answer_hours[0] + answer_hours[1]) / 2.0),
        refusals: 1,
        refusals_with_reason: 1,
        records_used: N + M - K,
        using_departments: 1,
        active_grants: 1,
        interface_calls: 0,
    };
    let parts = pb::ScoreParts {
        catalogue: Some(catalogue),
        timeliness: Some(timeliness),
        quality: Some(quality),
        responsiveness: Some(responsiveness),
        r#use: Some(use_),
    };
    (indicators, parts, score)
}

/// The scorecard of a department that provides nothing and answered nothing: every count zero,
/// every part undefined, a score of 0 (as in the previous period, when nothing had happened).
fn empty_card(code: &str, name: &str, day: &str) -> pb::Scorecard {
    pb::Scorecard {
        department: code.into(),
        name: name.into(),
        from: day.into(),
        to: day.into(),
        score: 0.0,
        parts: Some(pb::ScoreParts::default()),
        indicators: Some(pb::Indicators::default()),
        previous_score: Some(0.0),
    }
}

async fn a_scorecard_counts_what_the_hub_recorded(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let s = play(&hub).await;
    let day = s.today.to_string();

    // The scenario's preconditions on deadlines: both requests were answered on their day.
    for request in [&s.approved, &s.refused] {
        let due: NaiveDate = request.due_on.parse().expect("due_on is a date");
        assert!(china_day(instant(&request.answered_at)) <= due);
        assert!(due > s.today, "10 working days lie ahead");
    }
    assert_ne!(s.open, s.conditional);

    let mut admin = evaluation_admin(&hub).await;
    let card = ok(admin.get_scorecard(scorecard_of(SAMR, &day, &day)).await);
    let (indicators, parts, score) = expected_for_samr(&s);
    assert_eq!(
        (card.department.as_str(), card.name.as_str()),
        (SAMR, "市市场监督管理局")
    );
    assert_eq!((card.from.as_str(), card.to.as_str()), (day.as_str(), day.as_str()));
    assert_eq!(
        rounded_indicators(card.indicators.as_ref().expect("indicators")),
        rounded_indicators(&indicators)
    );
    assert_eq!(
        rounded_parts(card.parts.as_ref().expect("parts")),
        rounded_parts(&parts)
    );
    assert_eq!(card.score, score);
    assert_eq!(card.score, 88.8);
    // Yesterday SAMR had published nothing: nothing to measure, 0.
    assert_eq!(card.previous_score, Some(0.0));

    // SAMR sees the same card of its own, asking by code or without one.
    let mut samr = evaluation(&hub, SAMR).await;
    assert_eq!(ok(samr.get_scorecard(scorecard_of(SAMR, &day, &day)).await), card);
    assert_eq!(ok(samr.get_scorecard(scorecard_of("", &day, &day)).await), card);

    // The default period is the 30 days ending today: the same facts, so the same card.
    let default = ok(admin.get_scorecard(scorecard_of(SAMR, "", "")).await);
    let from = (s.today - Duration::days(29)).to_string();
    assert_eq!(
        (default.from.as_str(), default.to.as_str()),
        (from.as_str(), day.as_str())
    );
    assert_eq!(
        pb::Scorecard {
            from: day.clone(),
            to: day.clone(),
            ..default
        },
        card
    );
    // Only `to` given: the 30 days ending then.
    let to_only = ok(admin.get_scorecard(scorecard_of(SAMR, "", &day)).await);
    assert_eq!(
        (to_only.from.as_str(), to_only.to.as_str()),
        (from.as_str(), day.as_str())
    );

    hub.finish().await;
}

async fn the_ranking_shows_full_scorecards_only_to_whom_may_see_them(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let s = play(&hub).await;
    let day = s.today.to_string();
    let mut admin = evaluation_admin(&hub).await;
    let mut police = evaluation(&hub, POLICE).await;

    // A department sees its own scorecard, not another's.
    let denied = refused(
        police.get_scorecard(scorecard_of(SAMR, &day, &day)).await,
        Code::PermissionDenied,
    );
    assert!(!denied.message().is_empty());
    refused(
        police.get_scorecard(scorecard_of(HRSS, "", "")).await,
        Code::PermissionDenied,
    );
    let own = ok(police.get_scorecard(scorecard_of("", &day, &day)).await);
    assert_eq!(own, ok(police.get_scorecard(scorecard_of(POLICE, &day, &day)).await));
    // POLICE read, applied and reported, but provides nothing: nothing of its own to measure.
    assert_eq!(own, empty_card(POLICE, "市公安局", &day));
    assert_eq!(ok(admin.get_scorecard(scorecard_of(POLICE, &day, &day)).await), own);
    let hrss_card = ok(admin.get_scorecard(scorecard_of(HRSS, &day, &day)).await);
    // HRSS holds a grant, but as grantee: a provider's count.
    assert_eq!(hrss_card, empty_card(HRSS, "市人力资源和社会保障局", &day));
    let samr_card = ok(admin.get_scorecard(scorecard_of(SAMR, &day, &day)).await);
    assert_eq!(samr_card.score, 88.8);

    // The admin's ranking: every active department, ranked by score; equal scores share a place
    // and are listed by code. Each with its full scorecard, the same as GetScorecard's.
    let ranking = ok(admin.get_ranking(ranking_of(&day, &day)).await);
    assert_eq!(
        (ranking.from.as_str(), ranking.to.as_str()),
        (day.as_str(), day.as_str())
    );
    assert_eq!(
        (
            ranking.weight_catalogue,
            ranking.weight_timeliness,
            ranking.weight_quality,
            ranking.weight_responsiveness,
            ranking.weight_use
        ),
        (20.0, 25.0, 20.0, 20.0, 15.0)
    );
    let places: Vec<(u32, &str, &str, f64, Option<f64>)> = ranking
        .departments
        .iter()
        .map(|d| {
            (
                d.rank,
                d.department.as_str(),
                d.name.as_str(),
                d.score,
                d.previous_score,
            )
        })
        .collect();
    assert_eq!(
        places,
        vec![
            (1, SAMR, "市市场监督管理局", 88.8, Some(0.0)),
            (2, POLICE, "市公安局", 0.0, Some(0.0)),
            (2, HRSS, "市人力资源和社会保障局", 0.0, Some(0.0)),
        ]
    );
    assert_ranked_by_score(&ranking);
    for (place, card) in ranking.departments.iter().zip([&samr_card, &own, &hrss_card]) {
        assert_eq!(place.scorecard.as_ref(), Some(card), "{}", place.department);
    }
    // The default period ranks the same departments with the same scores.
    let default = ok(admin.get_ranking(ranking_of("", "")).await);
    assert_eq!(default.to, day);
    let scores = |r: &pb::Ranking| -> Vec<(u32, String, f64)> {
        r.departments
            .iter()
            .map(|d| (d.rank, d.department.clone(), d.score))
            .collect()
    };
    assert_eq!(scores(&default), scores(&ranking));

    // POLICE's ranking: the same places and scores, and a full scorecard only for itself.
    let seen = ok(police.get_ranking(ranking_of(&day, &day)).await);
    assert_eq!(scores(&seen), scores(&ranking));
    assert_ranked_by_score(&seen);
    for place in &seen.departments {
        let expected = ranking
            .departments
            .iter()
            .find(|d| d.department == place.department)
            .expect("the same departments");
        assert_eq!(
            (place.name.as_str(), place.previous_score),
            (expected.name.as_str(), expected.previous_score)
        );
        if place.department == POLICE {
            assert_eq!(place.scorecard.as_ref(), Some(&own));
        } else {
            assert_eq!(
                place.scorecard, None,
                "POLICE sees no scorecard of {}",
                place.department
            );
        }
    }

    hub.finish().await;
}

/// Scores never increase down the list, and a place is 1 + the number of better scores.
#[track_caller]
fn assert_ranked_by_score(ranking: &pb::Ranking) {
    let scores: Vec<f64> = ranking.departments.iter().map(|d| d.score).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not ordered by score: {scores:?}"
    );
    for d in &ranking.departments {
        let better = scores.iter().filter(|s| **s > d.score).count() as u32;
        assert_eq!(d.rank, better + 1, "{}", d.department);
    }
}

async fn periods_are_whole_days_written_in_order(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let mut admin = evaluation_admin(&hub).await;
    let today = china_today();
    let day = today.to_string();
    let yesterday = (today - Duration::days(1)).to_string();

    for (from, to, field) in [
        ("2026-02-30", "", "from"),
        ("yesterday", day.as_str(), "from"),
        ("", "2026/03/01", "to"),
        (day.as_str(), "20260301", "to"),
        // `to` before `from`.
        (day.as_str(), yesterday.as_str(), "to"),
    ] {
        invalid(admin.get_scorecard(scorecard_of(SAMR, from, to)).await, &[field]);
        invalid(admin.get_ranking(ranking_of(from, to)).await, &[field]);
    }

    // At most 3660 days.
    let longest = (today - Duration::days(3659)).to_string();
    let too_long = (today - Duration::days(3660)).to_string();
    let card = ok(admin.get_scorecard(scorecard_of(SAMR, &longest, &day)).await);
    assert_eq!((card.from.as_str(), card.to.as_str()), (longest.as_str(), day.as_str()));
    invalid(
        admin.get_scorecard(scorecard_of(SAMR, &too_long, &day)).await,
        &["from"],
    );
    invalid(admin.get_ranking(ranking_of(&too_long, &day)).await, &["from"]);

    // The admin names the department; one that is not registered is not found.
    invalid(admin.get_scorecard(scorecard_of("", &day, &day)).await, &["department"]);
    refused(
        admin.get_scorecard(scorecard_of(HEALTH, &day, &day)).await,
        Code::NotFound,
    );

    hub.finish().await;
}

/// `active_grants` counts the grants active at the end of the period: given by then, and neither
/// revoked nor expired by then. Grants are given "three days ago" by moving `granted_at` back in
/// the database, since a grant cannot be given in the past through the API.
async fn active_grants_are_those_given_and_not_yet_ended_at_the_period_end(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_shared_schemas().await;
    let today = china_today();
    let conditional = hub
        .open_table(
            SAMR,
            shared_as(
                content("企业经营异常名录", "102002", "列入经营异常名录的企业及原因"),
                pb::ShareType::Conditional,
                pb::ExchangeKind::Table,
            ),
        )
        .await
        .dataset;
    let fields = ["uscc", "name"];
    let (_, kept) = hub.grant(SAMR, HRSS, &conditional, &fields, approval(&[], &[])).await;
    let (_, revoked) = hub.grant(SAMR, POLICE, &conditional, &fields, approval(&[], &[])).await;
    // Whole seconds, in the text form the SQLite store writes (PostgreSQL reads it as well).
    let three_days_ago = (Utc::now() - Duration::days(3)).trunc_subsecs(0);
    let mut samr = hub.access(SAMR).await;
    for grant in [&kept, &revoked] {
        let moved = hub
            .execute_sql(&format!(
                "UPDATE access_grants SET granted_at = '{}' WHERE id = '{}'",
                three_days_ago.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                grant.grant_id.replace('\'', "")
            ))
            .await;
        assert_eq!(moved, 1);
        let read = ok(samr.get_grant(get_grant(&grant.grant_id)).await);
        assert_eq!(instant(&read.granted_at), three_days_ago);
    }
    let revoked = ok(samr.revoke_grant(revoke_grant(&revoked.grant_id, "用途已结束")).await);
    assert!(revoked.revoked_at.is_some());

    let mut admin = evaluation_admin(&hub).await;
    let mut active_at_end_of = async |day: NaiveDate| {
        let day = day.to_string();
        let card = ok(admin.get_scorecard(scorecard_of(SAMR, &day, &day)).await);
        card.indicators.expect("indicators").active_grants
    };
    // Today's end (for now, the present): HRSS's grant; POLICE's is revoked.
    // Yesterday's end: both had been given and neither was revoked yet.
    // Four days ago: neither had been given.
    let counted = (
        active_at_end_of(today).await,
        active_at_end_of(today - Duration::days(1)).await,
        active_at_end_of(today - Duration::days(4)).await,
    );
    assert_eq!(
        counted,
        (1, 2, 0),
        "active grants at the end of today, yesterday and four days ago"
    );
    // Four days ago nothing else of SAMR's counts either.
    let before = (today - Duration::days(4)).to_string();
    assert_eq!(
        ok(admin.get_scorecard(scorecard_of(SAMR, &before, &before)).await),
        pb::Scorecard {
            from: before.clone(),
            to: before.clone(),
            ..empty_card(SAMR, "市市场监督管理局", &before)
        }
    );

    hub.finish().await;
}
