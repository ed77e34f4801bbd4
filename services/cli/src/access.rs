//! `xinqiao access`: access requests (共享申请) for conditionally shared datasets, the provider's
//! answers, and the grants (授权) an approval issues.

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use xinqiao_domain::access::{RequestState, china_day, end_of_china_day};
use xinqiao_domain::masking::MaskRule;
use xinqiao_hub::convert;
use xinqiao_proto::v1 as pb;

use crate::client::{ClientArgs, explain};
use crate::{CliResult, out, output};

#[derive(Args)]
pub struct AccessArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AccessCommand,
}

/// Which side of a request or grant to list. (`--as` names who you are, so the side is `--party`.)
#[derive(Clone, Copy, ValueEnum)]
pub enum PartyArg {
    /// The ones you asked for (使用方).
    Applicant,
    /// The ones you answer or gave (提供方).
    Provider,
}

pub fn party(value: Option<PartyArg>) -> i32 {
    (match value {
        None => pb::Party::Unspecified,
        Some(PartyArg::Applicant) => pb::Party::Applicant,
        Some(PartyArg::Provider) => pb::Party::Provider,
    }) as i32
}

#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    /// 待审批
    Pending,
    /// 已同意
    Approved,
    /// 已拒绝
    Rejected,
    /// 已撤回
    Withdrawn,
}

#[derive(Subcommand)]
enum AccessCommand {
    /// Apply for a conditionally shared (有条件共享) dataset, stating purpose and scope of use.
    Request {
        /// The dataset (its catalogue entry's resource code).
        #[arg(long)]
        dataset: String,
        /// 用途: what the data will be used for.
        #[arg(long)]
        purpose: String,
        /// 使用范围: who and what the use covers.
        #[arg(long)]
        scope: String,
        /// The fields of the records you need, comma-separated (none for a file dataset).
        #[arg(long, value_delimiter = ',', value_name = "FIELD,…")]
        fields: Vec<String>,
        /// First day of use, YYYY-MM-DD [default: today, China Standard Time].
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        from: Option<NaiveDate>,
        /// Last day of use, YYYY-MM-DD (inclusive).
        #[arg(long, value_name = "DATE", value_parser = parse_date)]
        until: NaiveDate,
        /// 应用系统: the business system that will use the data.
        #[arg(long, value_name = "NAME")]
        system: String,
        /// The operations of an interface (接口) you need, comma-separated (none for a dataset).
        #[arg(long, value_delimiter = ',', value_name = "OPERATION,…")]
        operations: Vec<String>,
    },
    /// Approve a pending request (provider): possibly fewer fields, masking, an earlier expiry.
    Approve {
        /// The request id.
        id: String,
        /// Grant only these of the requested fields, comma-separated [default: as requested].
        #[arg(long, value_delimiter = ',', value_name = "FIELD,…")]
        fields: Vec<String>,
        /// Mask a granted field: FIELD=RULE with RULE resident_id, mobile, name or keep:FIRST:LAST
        /// (repeat for several fields).
        #[arg(long = "mask", value_name = "FIELD=RULE", value_parser = parse_mask)]
        masks: Vec<pb::FieldMask>,
        /// When the grant ends: RFC 3339, or YYYY-MM-DD for the end of that day (China Standard
        /// Time) [default: the end of the requested period].
        #[arg(long, value_name = "TIME", value_parser = parse_expiry)]
        expires: Option<DateTime<Utc>>,
        /// A note to the applicant.
        #[arg(long, default_value = "")]
        note: String,
        /// Grant only these of the requested operations of an interface, comma-separated
        /// [default: as requested].
        #[arg(long, value_delimiter = ',', value_name = "OPERATION,…")]
        operations: Vec<String>,
    },
    /// Refuse a pending request (provider); the reason is mandatory.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Take back your pending request (applicant).
    Withdraw { id: String },
    /// Show a request.
    Show { id: String },
    /// Requests you made or must answer (the admin: all), in every state.
    List {
        /// Only the ones you made (applicant) or must answer (provider) [default: both].
        #[arg(long)]
        party: Option<PartyArg>,
        #[arg(long)]
        dataset: Option<String>,
        #[arg(long)]
        state: Option<StateArg>,
        /// Only pending requests past the day they were due to be answered.
        #[arg(long)]
        overdue: bool,
        /// Those held on this hub below yours (跨级交换: what you applied for there through
        /// your own hub); their ids name it, as `330110:<id>`.
        // Not `--hub` (nor the id `hub`): that is every command's address of the hub to call.
        #[arg(long, value_name = "DIVISION")]
        on_hub: Option<String>,
        /// At most this many requests.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Grants you hold or gave (the admin: all).
    Grants {
        /// Only the ones you hold (applicant) or gave (provider) [default: both].
        #[arg(long)]
        party: Option<PartyArg>,
        #[arg(long)]
        dataset: Option<String>,
        /// Only grants active now (neither expired nor revoked).
        #[arg(long)]
        active: bool,
        /// Those held on this hub below yours (跨级交换: what you applied for there through
        /// your own hub); their ids name it, as `330110:<id>`.
        // Not `--hub` (nor the id `hub`): that is every command's address of the hub to call.
        #[arg(long, value_name = "DIVISION")]
        on_hub: Option<String>,
        /// At most this many grants.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// Show a grant.
    Grant { id: String },
    /// Revoke a grant (provider or admin); reads under it are refused at once.
    Revoke {
        /// The grant id.
        grant: String,
        #[arg(long)]
        reason: String,
    },
}

fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| format!("'{text}' is not a date written YYYY-MM-DD"))
}

/// RFC 3339, or a day (YYYY-MM-DD) meaning its end in China Standard Time, as grants run to the end
/// of their last day.
fn parse_expiry(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(end_of_china_day)
        .map_err(|_| {
            format!("'{text}' is neither an RFC 3339 time (2027-01-31T18:00:00+08:00) nor a date (2027-01-31)")
        })
}

fn parse_mask(text: &str) -> Result<pb::FieldMask, String> {
    let (field, rule) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not FIELD=RULE (for example resident_id=resident_id)"))?;
    let (field, rule) = (field.trim(), rule.trim());
    if field.is_empty() {
        return Err(format!("'{text}' names no field"));
    }
    let rule = MaskRule::parse(rule)
        .ok_or_else(|| format!("'{rule}' is not a masking rule: use resident_id, mobile, name or keep:FIRST:LAST"))?;
    Ok(pb::FieldMask {
        field: field.to_string(),
        rule: rule.as_text(),
    })
}

fn request_state(state: i32) -> Option<RequestState> {
    match pb::RequestState::try_from(state).ok()? {
        pb::RequestState::Pending => Some(RequestState::Pending),
        pb::RequestState::Approved => Some(RequestState::Approved),
        pb::RequestState::Rejected => Some(RequestState::Rejected),
        pb::RequestState::Withdrawn => Some(RequestState::Withdrawn),
        pb::RequestState::Unspecified => None,
    }
}

fn request_state_code(state: i32) -> &'static str {
    request_state(state).map(RequestState::as_str).unwrap_or("?")
}

fn request_state_text(state: i32) -> String {
    match request_state(state) {
        Some(s) => format!("{} ({})", s.as_str(), s.label()),
        None => "?".into(),
    }
}

pub fn grant_state_code(state: i32) -> &'static str {
    match pb::GrantState::try_from(state) {
        Ok(pb::GrantState::Active) => "active",
        Ok(pb::GrantState::Expired) => "expired",
        Ok(pb::GrantState::Revoked) => "revoked",
        _ => "?",
    }
}

fn grant_state_text(state: i32) -> String {
    let label = match pb::GrantState::try_from(state) {
        Ok(pb::GrantState::Active) => "有效",
        Ok(pb::GrantState::Expired) => "已过期",
        Ok(pb::GrantState::Revoked) => "已撤销",
        _ => return "?".into(),
    };
    format!("{} ({label})", grant_state_code(state))
}

/// When a grant ends. Grants usually run to the end of a day of China Standard Time (the last day
/// of the requested period), which reads better as that day than as the UTC instant after it.
fn expiry_text(t: &Option<convert::Timestamp>) -> String {
    let Some(at) = t
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
    else {
        return String::new();
    };
    let day = china_day(at - chrono::Duration::seconds(1));
    if end_of_china_day(day) == at {
        format!("end of {day} (UTC+8)")
    } else {
        output::time(t)
    }
}

fn masks_text(masks: &[pb::FieldMask]) -> String {
    masks
        .iter()
        .map(|m| format!("{}={}", m.field, m.rule))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn request_json(r: &pb::AccessRequest) -> Value {
    let a = r.application.clone().unwrap_or_default();
    json!({
        "request_id": r.request_id, "state": request_state_code(r.state),
        "dataset": a.dataset, "purpose": a.purpose, "scope": a.scope, "fields": a.fields, "operations": a.operations,
        "period_from": a.period_from, "period_until": a.period_until, "business_system": a.business_system,
        "applicant_code": r.applicant_code, "provider_code": r.provider_code,
        "submitted_at": output::time(&r.submitted_at), "due_on": r.due_on, "overdue": r.overdue,
        "answered_at": output::time(&r.answered_at), "answered_by": r.answered_by, "reason": r.reason,
        "grant_id": r.grant_id,
    })
}

pub fn grant_json(g: &pb::AccessGrant) -> Value {
    json!({
        "grant_id": g.grant_id, "request_id": g.request_id, "dataset": g.dataset,
        "provider_code": g.provider_code, "grantee_code": g.grantee_code, "purpose": g.purpose,
        "business_system": g.business_system, "fields": g.fields, "operations": g.operations,
        "masks": g.masks.iter().map(|m| json!({"field": m.field, "rule": m.rule})).collect::<Vec<_>>(),
        "state": grant_state_code(g.state), "granted_at": output::time(&g.granted_at), "granted_by": g.granted_by,
        "expires_at": output::time(&g.expires_at), "revoked_at": output::time(&g.revoked_at),
        "revoked_by": g.revoked_by, "revoke_reason": g.revoke_reason,
    })
}

/// One request, as a person reads it.
pub fn print_request(r: &pb::AccessRequest) {
    let a = r.application.clone().unwrap_or_default();
    out!("access request {}  {}", r.request_id, request_state_text(r.state));
    out!("  dataset:         {}", a.dataset);
    out!("  applicant:       {}", r.applicant_code);
    out!("  provider:        {}", r.provider_code);
    out!("  purpose (用途):  {}", a.purpose);
    out!("  scope:           {}", a.scope);
    out!("  system:          {}", a.business_system);
    if !a.operations.is_empty() {
        out!("  operations:      {}", a.operations.join(", "));
    }
    if !a.fields.is_empty() {
        out!("  fields:          {}", a.fields.join(", "));
    }
    out!("  period:          {} to {}", a.period_from, a.period_until);
    let overdue = if r.overdue { "  (overdue)" } else { "" };
    out!(
        "  submitted:       {}   answer due on {}{overdue}",
        output::time(&r.submitted_at),
        r.due_on
    );
    if r.answered_at.is_some() {
        out!(
            "  answered:        {} by {}",
            output::time(&r.answered_at),
            r.answered_by
        );
    }
    if !r.reason.is_empty() {
        let what = if r.state == pb::RequestState::Rejected as i32 {
            "reason:  "
        } else {
            "note:    "
        };
        out!("  {what}        {}", r.reason);
    }
    if !r.grant_id.is_empty() {
        out!("  grant:           {}", r.grant_id);
    }
}

/// One grant, as a person reads it.
pub fn print_grant(g: &pb::AccessGrant) {
    out!("grant {}  {}", g.grant_id, grant_state_text(g.state));
    out!("  dataset:         {}", g.dataset);
    out!("  grantee:         {}", g.grantee_code);
    out!("  provider:        {}", g.provider_code);
    out!("  purpose (用途):  {}", g.purpose);
    out!("  system:          {}", g.business_system);
    if !g.operations.is_empty() {
        out!("  operations:      {}", g.operations.join(", "));
    }
    if !g.fields.is_empty() {
        out!("  fields:          {}", g.fields.join(", "));
    }
    if !g.masks.is_empty() {
        out!("  masked:          {}", masks_text(&g.masks));
    }
    out!("  granted:         {} by {}", output::time(&g.granted_at), g.granted_by);
    out!("  expires:         {}", expiry_text(&g.expires_at));
    if g.revoked_at.is_some() {
        out!(
            "  revoked:         {} by {}: {}",
            output::time(&g.revoked_at),
            g.revoked_by,
            g.revoke_reason
        );
    }
    out!("  request:         {}", g.request_id);
}

fn requests(as_json: bool, list: &[pb::AccessRequest]) {
    output::emit(as_json, Value::Array(list.iter().map(request_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                let a = r.application.clone().unwrap_or_default();
                let due = if r.overdue {
                    format!("{} overdue", r.due_on)
                } else {
                    r.due_on.clone()
                };
                vec![
                    r.request_id.clone(),
                    a.dataset,
                    r.applicant_code.clone(),
                    r.provider_code.clone(),
                    request_state_text(r.state),
                    output::time(&r.submitted_at),
                    due,
                    a.purpose,
                ]
            })
            .collect();
        output::table(
            &[
                "request",
                "dataset",
                "applicant",
                "provider",
                "state",
                "submitted",
                "due on",
                "purpose",
            ],
            &rows,
        );
    });
}

fn grants(as_json: bool, list: &[pb::AccessGrant]) {
    output::emit(as_json, Value::Array(list.iter().map(grant_json).collect()), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|g| {
                vec![
                    g.grant_id.clone(),
                    g.dataset.clone(),
                    g.grantee_code.clone(),
                    g.provider_code.clone(),
                    grant_state_text(g.state),
                    expiry_text(&g.expires_at),
                    g.fields.join(","),
                    masks_text(&g.masks),
                ]
            })
            .collect();
        output::table(
            &[
                "grant", "dataset", "grantee", "provider", "state", "expires", "fields", "masked",
            ],
            &rows,
        );
    });
}

pub async fn run(args: AccessArgs) -> CliResult {
    let json = args.client.json;
    let mut client = args.client.access().await?;
    let show_request = |r: &pb::AccessRequest| output::emit(json, request_json(r), || print_request(r));
    match args.command {
        AccessCommand::Request {
            dataset,
            purpose,
            scope,
            fields,
            from,
            until,
            system,
            operations,
        } => {
            let from = from.unwrap_or_else(|| china_day(Utc::now()));
            let request = pb::RequestAccessRequest {
                application: Some(pb::AccessApplication {
                    dataset,
                    purpose,
                    scope,
                    fields: fields.into_iter().map(|f| f.trim().to_string()).collect(),
                    period_from: from.to_string(),
                    period_until: until.to_string(),
                    business_system: system,
                    operations: operations.into_iter().map(|o| o.trim().to_string()).collect(),
                }),
            };
            let r = client.request_access(request).await.map_err(explain)?.into_inner();
            show_request(&r);
        }
        AccessCommand::Approve {
            id,
            fields,
            masks,
            expires,
            note,
            operations,
        } => {
            let request = pb::ApproveRequestRequest {
                request_id: id,
                fields: fields.into_iter().map(|f| f.trim().to_string()).collect(),
                masks,
                expires_at: expires.map(convert::timestamp),
                note,
                operations: operations.into_iter().map(|o| o.trim().to_string()).collect(),
            };
            let r = client.approve_request(request).await.map_err(explain)?.into_inner();
            // The approval issued a grant: show what it allows.
            let grant = client
                .get_grant(pb::GetGrantRequest {
                    grant_id: r.grant_id.clone(),
                })
                .await
                .map_err(explain)?
                .into_inner();
            let mut value = request_json(&r);
            value["grant"] = grant_json(&grant);
            output::emit(json, value, || {
                print_request(&r);
                out!("");
                print_grant(&grant);
            });
        }
        AccessCommand::Reject { id, reason } => {
            let request = pb::RejectRequestRequest { request_id: id, reason };
            show_request(&client.reject_request(request).await.map_err(explain)?.into_inner());
        }
        AccessCommand::Withdraw { id } => {
            let request = pb::WithdrawRequestRequest { request_id: id };
            show_request(&client.withdraw_request(request).await.map_err(explain)?.into_inner());
        }
        AccessCommand::Show { id } => {
            let request = pb::GetRequestRequest { request_id: id };
            show_request(&client.get_request(request).await.map_err(explain)?.into_inner());
        }
        AccessCommand::List {
            party: side,
            dataset,
            state,
            overdue,
            on_hub,
            limit,
        } => {
            let mut request = pb::ListRequestsRequest {
                party: party(side),
                dataset: dataset.unwrap_or_default(),
                state: (match state {
                    None => pb::RequestState::Unspecified,
                    Some(StateArg::Pending) => pb::RequestState::Pending,
                    Some(StateArg::Approved) => pb::RequestState::Approved,
                    Some(StateArg::Rejected) => pb::RequestState::Rejected,
                    Some(StateArg::Withdrawn) => pb::RequestState::Withdrawn,
                }) as i32,
                overdue,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
                hub: on_hub.unwrap_or_default(),
            };
            let mut found = Vec::new();
            loop {
                let page = client
                    .list_requests(request.clone())
                    .await
                    .map_err(explain)?
                    .into_inner();
                found.extend(page.requests);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            requests(json, &found);
        }
        AccessCommand::Grants {
            party: side,
            dataset,
            active,
            on_hub,
            limit,
        } => {
            let mut request = pb::ListGrantsRequest {
                party: party(side),
                dataset: dataset.unwrap_or_default(),
                active_only: active,
                page_size: limit.clamp(1, 1000) as u32,
                page_token: String::new(),
                hub: on_hub.unwrap_or_default(),
            };
            let mut found = Vec::new();
            loop {
                let page = client.list_grants(request.clone()).await.map_err(explain)?.into_inner();
                found.extend(page.grants);
                if page.next_page_token.is_empty() || found.len() >= limit {
                    break;
                }
                request.page_token = page.next_page_token;
            }
            found.truncate(limit);
            grants(json, &found);
        }
        AccessCommand::Grant { id } => {
            let g = client
                .get_grant(pb::GetGrantRequest { grant_id: id })
                .await
                .map_err(explain)?
                .into_inner();
            output::emit(json, grant_json(&g), || print_grant(&g));
        }
        AccessCommand::Revoke { grant, reason } => {
            let request = pb::RevokeGrantRequest {
                grant_id: grant,
                reason,
            };
            let g = client.revoke_grant(request).await.map_err(explain)?.into_inner();
            output::emit(json, grant_json(&g), || print_grant(&g));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--hub` is every command's address of the hub to call; the hub a list is of is `--on-hub`,
    /// and neither takes the other's value (they once shared clap's id `hub`).
    #[test]
    fn the_hub_called_and_the_hub_listed_are_two_options() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            access: AccessArgs,
        }
        let parse = |args: &[&str]| {
            <Command as clap::Parser>::try_parse_from(args).map(|c| (c.access.client.hub, c.access.command))
        };
        let listed = |args: &[&str]| match parse(args) {
            Ok((hub, AccessCommand::List { on_hub, .. } | AccessCommand::Grants { on_hub, .. })) => (hub, on_hub),
            _ => panic!("{args:?} is not a list"),
        };
        let (called, on) = listed(&["x", "--hub", "https://hub:7443", "list"]);
        assert_eq!((called.as_str(), on), ("https://hub:7443", None));
        let (called, on) = listed(&["x", "--hub", "https://hub:7443", "grants", "--on-hub", "330110"]);
        assert_eq!((called.as_str(), on.as_deref()), ("https://hub:7443", Some("330110")));
    }

    #[test]
    fn masks_are_field_equals_rule() {
        let m = parse_mask("resident_id=resident_id").expect("a mask");
        assert_eq!((m.field.as_str(), m.rule.as_str()), ("resident_id", "resident_id"));
        assert_eq!(parse_mask(" name = 姓名 ").expect("a mask").rule, "name");
        assert_eq!(parse_mask("phone=keep:3:4").expect("a mask").rule, "keep:3:4");
        assert!(parse_mask("resident_id").is_err());
        assert!(parse_mask("=name").is_err());
        assert!(parse_mask("name=initials").is_err());
    }

    #[test]
    fn an_expiry_is_a_time_or_the_end_of_a_china_day() {
        let t = parse_expiry("2027-01-31T18:00:00+08:00").expect("RFC 3339");
        assert_eq!(t.to_rfc3339(), "2027-01-31T10:00:00+00:00");
        let day = parse_expiry("2027-01-31").expect("a date");
        assert_eq!(day.to_rfc3339(), "2027-01-31T16:00:00+00:00");
        assert_eq!(expiry_text(&Some(convert::timestamp(day))), "end of 2027-01-31 (UTC+8)");
        assert_eq!(expiry_text(&Some(convert::timestamp(t))), "2027-01-31 10:00:00");
        assert!(parse_expiry("31/01/2027").is_err());
        assert!(parse_date("2027-02-30").is_err());
    }
}
