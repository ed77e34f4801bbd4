//! Access under the sharing rules (国发〔2016〕51号): who may read a dataset's records and in what
//! shape, access requests (共享申请) and their answers, grants (授权), and error reports (纠错).

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::catalogue::{CatalogEntry, ShareType};
use crate::error::Violations;
use crate::exchange::DatasetKind;
use crate::identity::Caller;
use crate::lifecycle::EntryState;
use crate::masking::MaskRule;
use crate::text;
use crate::{Error, Result};

/// Dates of requests and deadlines are China Standard Time days (UTC+8; China has one zone).
pub fn china_day(at: DateTime<Utc>) -> NaiveDate {
    let cst = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"));
    at.with_timezone(&cst).date_naive()
}

/// The first instant after the China Standard Time day `day`.
pub fn end_of_china_day(day: NaiveDate) -> DateTime<Utc> {
    let next = day.succ_opt().unwrap_or(day);
    let midnight = next.and_hms_opt(0, 0, 0).unwrap_or_default();
    DateTime::from_naive_utc_and_offset(midnight - chrono::Duration::hours(8), Utc)
}

/// 审批状态 of an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    Pending,
    Approved,
    Rejected,
    Withdrawn,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
            RequestState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(RequestState::Pending),
            "approved" => Some(RequestState::Approved),
            "rejected" => Some(RequestState::Rejected),
            "withdrawn" => Some(RequestState::Withdrawn),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RequestState::Pending => "待审批",
            RequestState::Approved => "已同意",
            RequestState::Rejected => "已拒绝",
            RequestState::Withdrawn => "已撤回",
        }
    }
}

/// What a using department (使用方) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessApplication {
    pub dataset: String,
    /// 用途.
    pub purpose: String,
    /// 使用范围.
    pub scope: String,
    /// Top-level fields of the records (table datasets); empty for file datasets.
    pub fields: Vec<String>,
    /// The requested period of use, inclusive, in China Standard Time days.
    pub period_from: NaiveDate,
    pub period_until: NaiveDate,
    /// 应用系统: the business system that will use the data.
    pub business_system: String,
    /// The operations of an interface (接口共享) asked for; empty for a dataset.
    pub operations: Vec<String>,
}

/// An access request (共享申请) and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: String,
    pub application: AccessApplication,
    pub provider_code: String,
    pub applicant_code: String,
    pub state: RequestState,
    pub submitted_at: DateTime<Utc>,
    /// The last day to answer.
    pub due_on: NaiveDate,
    pub answered_at: Option<DateTime<Utc>>,
    pub answered_by: String,
    /// The reason of a rejection, or the provider's note on an approval.
    pub reason: String,
    pub grant_id: Option<String>,
}

impl AccessRequest {
    /// Pending past its due day.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        self.state == RequestState::Pending && china_day(now) > self.due_on
    }

    /// Answered (or still pending) within its deadline.
    pub fn answered_in_time(&self) -> Option<bool> {
        self.answered_at.map(|at| china_day(at) <= self.due_on)
    }
}

/// A grant's state at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantState {
    Active,
    Expired,
    Revoked,
}

/// A grant (授权): what an approval allows one department, bound to the purpose it declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub id: String,
    pub request_id: String,
    pub dataset: String,
    pub provider_code: String,
    pub grantee_code: String,
    pub purpose: String,
    pub business_system: String,
    /// Only these fields are sent (table datasets; empty for file datasets, which are sent whole).
    pub fields: Vec<String>,
    pub masks: Vec<(String, MaskRule)>,
    /// The operations of an interface it allows calling; empty for a dataset.
    pub operations: Vec<String>,
    pub granted_at: DateTime<Utc>,
    pub granted_by: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: String,
    pub revoke_reason: String,
}

impl AccessGrant {
    pub fn state(&self, now: DateTime<Utc>) -> GrantState {
        if self.revoked_at.is_some() {
            GrantState::Revoked
        } else if now >= self.expires_at {
            GrantState::Expired
        } else {
            GrantState::Active
        }
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.state(now) == GrantState::Active
    }

    /// Whether the grant lets its grantee call an interface's operation.
    pub fn covers_operation(&self, operation: &str) -> Result<()> {
        if self.operations.is_empty() || self.operations.iter().any(|o| o == operation) {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "grant {} covers the operations {} of {}, not '{}'; apply for access to it",
            self.id,
            self.operations.join(", "),
            self.dataset,
            text::shorten(operation, 64)
        )))
    }
}

/// The provider's answer when it approves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approval {
    /// A subset of the requested fields; empty means as requested.
    pub fields: Vec<String>,
    pub masks: Vec<(String, MaskRule)>,
    /// Unset: the end of the requested period.
    pub expires_at: Option<DateTime<Utc>>,
    pub note: String,
    /// A subset of the requested operations of an interface; empty means as requested.
    pub operations: Vec<String>,
}

/// What a dataset's records look like, as far as an application needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordShape {
    pub kind: DatasetKind,
    /// Top-level properties of the schema (table datasets).
    pub properties: Vec<String>,
    pub key: Vec<String>,
    /// The operations of an interface (empty for a dataset): an application names those it needs.
    pub operations: Vec<String>,
}

/// Required free text; reasons and descriptions may span lines.
fn required_text(field: &str, value: &str, max_chars: usize) -> Result<()> {
    text::check(value, true, max_chars, true).map_err(|e| Error::invalid(field, e))
}

fn check_fields(v: &mut Violations, field: &str, fields: &[String], shape: &RecordShape) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in fields.iter().enumerate() {
        if !shape.properties.contains(name) {
            v.add(
                format!("{field}[{i}]"),
                format!("'{}' is not a field of the dataset's records", text::shorten(name, 64)),
            );
        } else if !seen.insert(name) {
            v.add(format!("{field}[{i}]"), format!("'{name}' appears twice"));
        }
    }
}

/// Who may apply, for what: a department other than the provider, for a published dataset shared
/// on condition (有条件共享), with a purpose, scope, business system, fields of its records and a
/// period that has not ended.
pub fn apply(
    caller: &Caller,
    entry: &CatalogEntry,
    shape: &RecordShape,
    application: &AccessApplication,
    today: NaiveDate,
) -> Result<String> {
    let applicant = caller
        .department()
        .ok_or_else(|| Error::PermissionDenied("access is requested by a using department, not the admin".into()))?;
    if applicant == entry.provider_code {
        return Err(Error::FailedPrecondition(format!(
            "{} is your own dataset: you need no access request",
            entry.resource_code
        )));
    }
    if entry.state != EntryState::Published {
        return Err(Error::FailedPrecondition(format!(
            "{} is {}; access is requested only for a published entry",
            entry.resource_code,
            entry.state.label()
        )));
    }
    match entry.content.share.share_type {
        ShareType::Conditional => {}
        ShareType::Unconditional => {
            return Err(Error::FailedPrecondition(format!(
                "{} is shared unconditionally (无条件共享): read it directly, declaring your purpose",
                entry.resource_code
            )));
        }
        ShareType::NotShared => {
            return Err(Error::PermissionDenied(format!(
                "{} is not shared (不予共享)",
                entry.resource_code
            )));
        }
    }
    // Every problem of the application at once.
    let mut v = Violations::new();
    v.check("purpose", text::check(&application.purpose, true, 500, true));
    v.check("scope", text::check(&application.scope, true, 500, true));
    v.check(
        "business_system",
        text::check(&application.business_system, true, 200, false),
    );
    match shape.kind {
        DatasetKind::Table if application.fields.is_empty() => v.add("fields", "name the fields you need"),
        DatasetKind::Table => check_fields(&mut v, "fields", &application.fields, shape),
        DatasetKind::File if !application.fields.is_empty() => {
            v.add("fields", "a file dataset is granted whole: request no fields")
        }
        DatasetKind::File => {}
    }
    if shape.operations.is_empty() && !application.operations.is_empty() {
        v.add("operations", "a dataset has no operations: request none");
    } else if !shape.operations.is_empty() && application.operations.is_empty() {
        v.add(
            "operations",
            format!(
                "name the operations of the interface you need ({})",
                shape.operations.join(", ")
            ),
        );
    }
    check_operations(
        &mut v,
        &application.operations,
        &shape.operations,
        "is not an operation of the interface",
    );
    if application.period_until < application.period_from {
        v.add("period_until", "is before period_from");
    } else if application.period_until < today {
        v.add("period_until", "the requested period has already ended");
    }
    v.into_result()?;
    Ok(applicant.to_string())
}

/// Who may see a request: both parties and the admin. Others are told it does not exist.
pub fn read_request(caller: &Caller, request: &AccessRequest) -> Result<()> {
    let party = caller
        .department()
        .is_some_and(|d| d == request.applicant_code || d == request.provider_code);
    if party || caller.is_admin() {
        Ok(())
    } else {
        Err(Error::NotFound(format!("access request {}", request.id)))
    }
}

fn pending(request: &AccessRequest) -> Result<()> {
    if request.state == RequestState::Pending {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "access request {} is {} ({}); only a pending request can be answered or withdrawn",
            request.id,
            request.state.as_str(),
            request.state.label()
        )))
    }
}

/// Only the provider answers, and only a pending request.
pub fn answer(caller: &Caller, request: &AccessRequest) -> Result<()> {
    read_request(caller, request)?;
    if caller.department() != Some(request.provider_code.as_str()) {
        return Err(Error::PermissionDenied(
            "only the providing department answers an access request".into(),
        ));
    }
    pending(request)
}

/// A refusal must give its reason (国发〔2016〕51号).
pub fn reject(caller: &Caller, request: &AccessRequest, reason: &str) -> Result<()> {
    answer(caller, request)?;
    required_text("reason", reason, 1000)
}

/// Only the applicant withdraws, and only while pending.
pub fn withdraw(caller: &Caller, request: &AccessRequest) -> Result<()> {
    read_request(caller, request)?;
    if caller.department() != Some(request.applicant_code.as_str()) {
        return Err(Error::PermissionDenied(
            "only the applicant withdraws its request".into(),
        ));
    }
    pending(request)
}

/// What an approval grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTerms {
    pub fields: Vec<String>,
    pub masks: Vec<(String, MaskRule)>,
    pub expires_at: DateTime<Utc>,
    /// The operations of an interface (empty for a dataset).
    pub operations: Vec<String>,
}

/// Each operation named once, and one of `allowed`.
fn check_operations(v: &mut Violations, operations: &[String], allowed: &[String], not_allowed: &str) {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in operations.iter().enumerate() {
        if !allowed.contains(name) {
            v.add(
                format!("operations[{i}]"),
                format!("'{}' {not_allowed}", text::shorten(name, 64)),
            );
        } else if !seen.insert(name) {
            v.add(format!("operations[{i}]"), format!("'{name}' appears twice"));
        }
    }
}

/// Checks an approval against the request and the records' shape, and returns the grant's fields,
/// masks and expiry. Granted fields are a subset of the requested ones and keep the key properties;
/// masks name granted fields; the expiry lies in the future and within the requested period.
pub fn approve(
    caller: &Caller,
    request: &AccessRequest,
    shape: &RecordShape,
    approval: &Approval,
    now: DateTime<Utc>,
) -> Result<GrantTerms> {
    answer(caller, request)?;
    text::check(&approval.note, false, 1000, true).map_err(|e| Error::invalid("note", e))?;
    let fields = if approval.fields.is_empty() {
        request.application.fields.clone()
    } else {
        approval.fields.clone()
    };
    if shape.kind == DatasetKind::File && (!fields.is_empty() || !approval.masks.is_empty()) {
        return Err(Error::invalid(
            "fields",
            "a file dataset is granted whole: files are sent as they are, without fields or masking",
        ));
    }
    let operations = if approval.operations.is_empty() {
        request.application.operations.clone()
    } else {
        approval.operations.clone()
    };
    let mut v = Violations::new();
    check_fields(&mut v, "fields", &fields, shape);
    check_operations(
        &mut v,
        &operations,
        &request.application.operations,
        "was not requested; an approval may only narrow the operations",
    );
    v.into_result()?;
    for (i, name) in fields.iter().enumerate() {
        if !request.application.fields.contains(name) {
            return Err(Error::invalid(
                format!("fields[{i}]"),
                format!("'{name}' was not requested; an approval may only narrow the fields"),
            ));
        }
    }
    for key in &shape.key {
        if shape.kind == DatasetKind::Table && !fields.contains(key) {
            return Err(Error::invalid(
                "fields",
                format!("key property '{key}' identifies each record: grant it (mask it if it is sensitive)"),
            ));
        }
    }
    let mut masked = std::collections::HashSet::new();
    for (i, (field, _)) in approval.masks.iter().enumerate() {
        if !fields.contains(field) {
            return Err(Error::invalid(
                format!("masks[{i}]"),
                format!("'{}' is not a granted field", text::shorten(field, 64)),
            ));
        }
        if !masked.insert(field) {
            return Err(Error::invalid(
                format!("masks[{i}]"),
                format!("'{field}' is masked twice"),
            ));
        }
    }
    let period_end = end_of_china_day(request.application.period_until);
    let expires_at = approval.expires_at.unwrap_or(period_end);
    if expires_at <= now {
        return Err(Error::invalid("expires_at", "is not in the future"));
    }
    if expires_at > period_end {
        return Err(Error::invalid(
            "expires_at",
            format!(
                "is after the requested period, which ends {}",
                request.application.period_until
            ),
        ));
    }
    Ok(GrantTerms {
        fields,
        masks: approval.masks.clone(),
        expires_at,
        operations,
    })
}

/// Who may see a grant: its grantee, its provider and the admin.
pub fn read_grant(caller: &Caller, grant: &AccessGrant) -> Result<()> {
    let party = caller
        .department()
        .is_some_and(|d| d == grant.grantee_code || d == grant.provider_code);
    if party || caller.is_admin() {
        Ok(())
    } else {
        Err(Error::NotFound(format!("grant {}", grant.id)))
    }
}

/// The provider or the admin revokes, with a reason, a grant not yet revoked.
pub fn revoke(caller: &Caller, grant: &AccessGrant, reason: &str) -> Result<()> {
    read_grant(caller, grant)?;
    if !(caller.is_admin() || caller.department() == Some(grant.provider_code.as_str())) {
        return Err(Error::PermissionDenied(
            "only the providing department or the admin revokes a grant".into(),
        ));
    }
    if grant.revoked_at.is_some() {
        return Err(Error::FailedPrecondition(format!(
            "grant {} is already revoked",
            grant.id
        )));
    }
    required_text("reason", reason, 1000)
}

/// Why a read is allowed: the basis recorded with it in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadBasis {
    /// The provider reads its own dataset.
    Owner,
    /// 无条件共享, for the declared purpose.
    Open { purpose: String },
    /// 有条件共享, under a grant: projected and masked.
    Granted(Box<AccessGrant>),
}

impl ReadBasis {
    /// The grant the read depends on, if any.
    pub fn grant(&self) -> Option<&AccessGrant> {
        match self {
            ReadBasis::Granted(g) => Some(g),
            _ => None,
        }
    }

    pub fn purpose(&self) -> &str {
        match self {
            ReadBasis::Owner => "",
            ReadBasis::Open { purpose } => purpose,
            ReadBasis::Granted(g) => &g.purpose,
        }
    }

    /// How records leave the hub under this basis: whole, or projected and masked.
    pub fn view(&self, key: &[String]) -> Option<RecordView> {
        self.grant().filter(|g| !g.fields.is_empty()).map(|g| RecordView {
            fields: g.fields.clone(),
            masks: g.masks.clone(),
            key: key.to_vec(),
        })
    }
}

/// Who may read a dataset's records, and on what basis (the rule of every read path: fetch,
/// snapshot, subscribe, download, consumer cursors).
///
/// - The provider always.
/// - Not the admin: it manages the exchange and reads the audit trail, not the records
///   (separation of duties).
/// - Others only while the entry is published: 无条件共享 after declaring a purpose; 有条件共享 with
///   an active grant (`grant_id` names one when the caller holds several); 不予共享 never.
///
/// `grants` are the caller's grants on this dataset, in any state. `purpose` is `None` for calls
/// that need the right to read but move no records (consumer cursors, error reports).
pub fn read(
    caller: &Caller,
    entry: &CatalogEntry,
    grants: &[AccessGrant],
    grant_id: &str,
    purpose: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ReadBasis> {
    let department = match caller {
        Caller::Admin(_) => {
            return Err(Error::PermissionDenied(
                "the platform admin manages the exchange but does not read its records".into(),
            ));
        }
        Caller::Evaluator(_) => {
            return Err(Error::PermissionDenied(
                "an evaluator reads the scorecard, not the records".into(),
            ));
        }
        Caller::Department(code) => code,
    };
    if *department == entry.provider_code {
        return Ok(ReadBasis::Owner);
    }
    if entry.state != EntryState::Published {
        return Err(Error::PermissionDenied(format!(
            "{} is {}; only its provider reads it",
            entry.resource_code,
            entry.state.label()
        )));
    }
    match entry.content.share.share_type {
        ShareType::Unconditional => {
            let Some(purpose) = purpose else {
                return Ok(ReadBasis::Open { purpose: String::new() });
            };
            text::check(purpose, false, 500, false).map_err(|e| Error::invalid("purpose", e))?;
            if purpose.trim().is_empty() {
                return Err(Error::invalid(
                    "purpose",
                    "declare why you read this dataset (用途); it is recorded in the audit trail",
                ));
            }
            Ok(ReadBasis::Open {
                purpose: purpose.trim().to_string(),
            })
        }
        ShareType::NotShared => Err(Error::PermissionDenied(format!(
            "{} is not shared (不予共享)",
            entry.resource_code
        ))),
        ShareType::Conditional => {
            let mine = grants
                .iter()
                .filter(|g| g.grantee_code == *department && g.dataset == entry.resource_code);
            if !grant_id.is_empty() {
                let grant = mine.clone().find(|g| g.id == grant_id).ok_or_else(|| {
                    Error::PermissionDenied(format!(
                        "grant {} is not yours for {}",
                        text::shorten(grant_id, 64),
                        entry.resource_code
                    ))
                })?;
                return match grant.state(now) {
                    GrantState::Active => Ok(ReadBasis::Granted(Box::new(grant.clone()))),
                    GrantState::Expired => Err(Error::PermissionDenied(format!(
                        "grant {} expired at {}",
                        grant.id,
                        grant.expires_at.to_rfc3339()
                    ))),
                    GrantState::Revoked => Err(Error::PermissionDenied(format!(
                        "grant {} was revoked: {}",
                        grant.id, grant.revoke_reason
                    ))),
                };
            }
            let all: Vec<&AccessGrant> = mine.collect();
            let active: Vec<&AccessGrant> = all.iter().copied().filter(|g| g.is_active(now)).collect();
            match active.as_slice() {
                // The grant that ended last says why there is none now.
                [] => Err(match all.iter().max_by_key(|g| g.revoked_at.unwrap_or(g.expires_at)) {
                    Some(g) if g.revoked_at.is_some() => Error::PermissionDenied(format!(
                        "your grant {} for {} was revoked: {}; apply for access again",
                        g.id, entry.resource_code, g.revoke_reason
                    )),
                    Some(g) => Error::PermissionDenied(format!(
                        "your grant {} for {} expired at {}; apply for access again",
                        g.id,
                        entry.resource_code,
                        g.expires_at.to_rfc3339()
                    )),
                    None => Error::PermissionDenied(format!(
                        "{} is shared on condition (有条件共享) and you hold no active grant: apply for access first",
                        entry.resource_code
                    )),
                }),
                [one] => Ok(ReadBasis::Granted(Box::new((*one).clone()))),
                _ => Err(Error::invalid(
                    "grant_id",
                    format!(
                        "you hold {} active grants for {}: name one",
                        active.len(),
                        entry.resource_code
                    ),
                )),
            }
        }
    }
}

/// Projection and masking of records under a grant: fields not granted are never sent; masked
/// fields are sent masked, in the record and in its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    pub fields: Vec<String>,
    pub masks: Vec<(String, MaskRule)>,
    /// The dataset's key properties, in key order.
    pub key: Vec<String>,
}

impl RecordView {
    /// The record as the grantee receives it. A record that is not a JSON object (which the
    /// schema never lets in), or not even UTF-8, is withheld whole rather than sent unshaped.
    pub fn record(&self, record: &[u8]) -> String {
        let Ok(Value::Object(mut all)) = serde_json::from_slice::<Value>(record) else {
            return "{}".into();
        };
        let mut kept = Map::new();
        for field in &self.fields {
            if let Some((name, value)) = all.remove_entry(field) {
                kept.insert(name, value);
            }
        }
        let mut shaped = Value::Object(kept);
        crate::masking::mask_record(&mut shaped, &self.masks);
        shaped.to_string()
    }

    /// Whether a key property is masked, so that keys reach the reader masked.
    pub fn masks_key(&self) -> bool {
        self.key.iter().any(|k| self.masks.iter().any(|(f, _)| f == k))
    }

    /// The key (a JSON array in key order) with masked key properties masked.
    pub fn key(&self, key: &str) -> String {
        let masked: Vec<(usize, MaskRule)> = self
            .key
            .iter()
            .enumerate()
            .filter_map(|(i, k)| self.masks.iter().find(|(f, _)| f == k).map(|(_, r)| (i, *r)))
            .collect();
        if masked.is_empty() {
            return key.to_string();
        }
        let Ok(Value::Array(mut values)) = serde_json::from_str::<Value>(key) else {
            return "[]".into();
        };
        for (i, rule) in masked {
            if let Some(v) = values.get_mut(i) {
                let text = match &*v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                *v = Value::String(rule.apply(&text));
            }
        }
        Value::Array(values).to_string()
    }
}

/// 纠错 state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportState {
    Open,
    Corrected,
    Rejected,
}

impl ReportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Open => "open",
            ReportState::Corrected => "corrected",
            ReportState::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(ReportState::Open),
            "corrected" => Some(ReportState::Corrected),
            "rejected" => Some(ReportState::Rejected),
            _ => None,
        }
    }
}

/// An error report (纠错): a using department flags a record it believes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReport {
    pub id: String,
    pub dataset: String,
    pub provider_code: String,
    pub reporter_code: String,
    /// 0 when the record is named by key only.
    pub sequence: u64,
    /// The key as a JSON array; empty when named by sequence only.
    pub key: String,
    pub description: String,
    pub state: ReportState,
    pub reported_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: String,
    pub resolution: String,
    pub corrected_sequence: u64,
}

/// A department that may read a dataset (other than its provider) reports a record in it, named by
/// a sequence number it has seen or a key, with a description.
/// `key_fields` are the dataset's key properties: a grantee whose grant masks one of them only
/// ever saw masked keys, which the provider cannot match, so it names the record by sequence.
pub fn report(
    caller: &Caller,
    basis: &ReadBasis,
    sequence: u64,
    key: &str,
    key_fields: &[String],
    last_sequence: u64,
    description: &str,
) -> Result<()> {
    if matches!(basis, ReadBasis::Owner) || caller.is_admin() {
        return Err(Error::FailedPrecondition(
            "error reports come from using departments; correct your own data by publishing".into(),
        ));
    }
    if sequence == 0 && key.is_empty() {
        return Err(Error::invalid(
            "sequence",
            "name the record by its sequence number or its key",
        ));
    }
    if sequence > last_sequence {
        return Err(Error::invalid(
            "sequence",
            format!("is {sequence}, beyond the dataset's last sequence {last_sequence}"),
        ));
    }
    if !key.is_empty() && basis.view(key_fields).is_some_and(|view| view.masks_key()) {
        return Err(Error::invalid(
            "key",
            "your grant masks the key, so the provider cannot match it: name the record by its sequence number",
        ));
    }
    if !key.is_empty() {
        let ok = key.len() <= crate::exchange::MAX_KEY_BYTES
            && matches!(serde_json::from_str::<Value>(key), Ok(Value::Array(_)));
        if !ok {
            return Err(Error::invalid(
                "key",
                "must be the record's key: a JSON array, at most 1024 bytes",
            ));
        }
    }
    required_text("description", description, 2000)
}

/// Who may see a report: its reporter, the provider and the admin.
pub fn read_report(caller: &Caller, report: &ErrorReport) -> Result<()> {
    let party = caller
        .department()
        .is_some_and(|d| d == report.reporter_code || d == report.provider_code);
    if party || caller.is_admin() {
        Ok(())
    } else {
        Err(Error::NotFound(format!("error report {}", report.id)))
    }
}

/// The provider resolves an open report: corrected (naming the correcting change if it likes, which
/// must exist) or rejected with a reason.
pub fn resolve(
    caller: &Caller,
    report: &ErrorReport,
    resolution: ReportState,
    reason: &str,
    corrected_sequence: u64,
    last_sequence: u64,
) -> Result<()> {
    read_report(caller, report)?;
    if caller.department() != Some(report.provider_code.as_str()) {
        return Err(Error::PermissionDenied(
            "only the providing department resolves an error report".into(),
        ));
    }
    if report.state != ReportState::Open {
        return Err(Error::FailedPrecondition(format!(
            "error report {} is already {}",
            report.id,
            report.state.as_str()
        )));
    }
    match resolution {
        ReportState::Open => Err(Error::invalid("resolution", "must be CORRECTED or REJECTED")),
        ReportState::Rejected => {
            if corrected_sequence != 0 {
                return Err(Error::invalid(
                    "corrected_sequence",
                    "a rejected report names no correction",
                ));
            }
            required_text("reason", reason, 1000)
        }
        ReportState::Corrected => {
            text::check(reason, false, 1000, true).map_err(|e| Error::invalid("reason", e))?;
            if corrected_sequence > last_sequence {
                return Err(Error::invalid(
                    "corrected_sequence",
                    format!("is {corrected_sequence}, beyond the dataset's last sequence {last_sequence}"),
                ));
            }
            if corrected_sequence != 0 && corrected_sequence <= report.sequence {
                return Err(Error::invalid(
                    "corrected_sequence",
                    "must be a change published after the reported one",
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::tests::draft;

    const PROVIDER: &str = "11330100MB00010011";
    const USER: &str = "11330100MB0002002B";

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("a date")
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a time").with_timezone(&Utc)
    }

    fn entry(share: ShareType, state: EntryState) -> CatalogEntry {
        let mut content = draft().validate().expect("a valid draft");
        content.share.share_type = share;
        CatalogEntry {
            resource_code: "102/000001".into(),
            provider_code: PROVIDER.into(),
            provider_name: "局".into(),
            content,
            state,
            version: 3,
            state_reason: String::new(),
            published_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn shape() -> RecordShape {
        RecordShape {
            kind: DatasetKind::Table,
            properties: vec!["id".into(), "name".into(), "mobile".into(), "income".into()],
            key: vec!["id".into()],
            operations: vec![],
        }
    }

    fn application() -> AccessApplication {
        AccessApplication {
            dataset: "102/000001".into(),
            purpose: "低保资格核验".into(),
            scope: "市民政局低保科".into(),
            fields: vec!["id".into(), "name".into(), "mobile".into()],
            period_from: d(2026, 12, 1),
            period_until: d(2027, 11, 30),
            business_system: "低保审批系统".into(),
            operations: vec![],
        }
    }

    fn request(state: RequestState) -> AccessRequest {
        AccessRequest {
            id: "r1".into(),
            application: application(),
            provider_code: PROVIDER.into(),
            applicant_code: USER.into(),
            state,
            submitted_at: at("2026-11-27T02:00:00Z"),
            due_on: d(2026, 12, 11),
            answered_at: None,
            answered_by: String::new(),
            reason: String::new(),
            grant_id: None,
        }
    }

    fn grant(id: &str, expires: &str, revoked: bool) -> AccessGrant {
        AccessGrant {
            id: id.into(),
            request_id: "r1".into(),
            dataset: "102/000001".into(),
            provider_code: PROVIDER.into(),
            grantee_code: USER.into(),
            purpose: "低保资格核验".into(),
            business_system: "低保审批系统".into(),
            fields: vec!["id".into(), "name".into()],
            masks: vec![
                ("id".into(), MaskRule::ResidentId),
                ("name".into(), MaskRule::PersonalName),
            ],
            operations: vec![],
            granted_at: at("2026-11-28T00:00:00Z"),
            granted_by: PROVIDER.into(),
            expires_at: at(expires),
            revoked_at: revoked.then(|| at("2026-11-29T00:00:00Z")),
            revoked_by: String::new(),
            revoke_reason: if revoked {
                "用途已结束".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn china_days_start_at_utc_minus_eight_hours() {
        assert_eq!(china_day(at("2026-11-27T15:59:59Z")), d(2026, 11, 27));
        assert_eq!(china_day(at("2026-11-27T16:00:00Z")), d(2026, 11, 28));
        assert_eq!(end_of_china_day(d(2026, 11, 28)), at("2026-11-28T16:00:00Z"));
    }

    #[test]
    fn only_others_apply_and_only_for_conditional_published_datasets() {
        let user = Caller::Department(USER.into());
        let owner = Caller::Department(PROVIDER.into());
        let admin = Caller::Admin("ops".into());
        let today = d(2026, 11, 28);
        let conditional = entry(ShareType::Conditional, EntryState::Published);
        assert_eq!(
            apply(&user, &conditional, &shape(), &application(), today).ok(),
            Some(USER.into())
        );
        assert!(matches!(
            apply(&owner, &conditional, &shape(), &application(), today),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            apply(&admin, &conditional, &shape(), &application(), today),
            Err(Error::PermissionDenied(_))
        ));
        let open = entry(ShareType::Unconditional, EntryState::Published);
        assert!(matches!(
            apply(&user, &open, &shape(), &application(), today),
            Err(Error::FailedPrecondition(_))
        ));
        let closed = entry(ShareType::NotShared, EntryState::Published);
        assert!(matches!(
            apply(&user, &closed, &shape(), &application(), today),
            Err(Error::PermissionDenied(_))
        ));
        let withdrawn = entry(ShareType::Conditional, EntryState::Withdrawn);
        assert!(matches!(
            apply(&user, &withdrawn, &shape(), &application(), today),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn applications_need_purpose_known_fields_and_a_live_period() {
        let user = Caller::Department(USER.into());
        let e = entry(ShareType::Conditional, EntryState::Published);
        let today = d(2026, 11, 28);
        let mut a = application();
        a.purpose = "  ".into();
        a.fields = vec!["salary".into()];
        a.period_from = d(2026, 1, 1);
        a.period_until = d(2026, 11, 27);
        // Every problem at once.
        match apply(&user, &e, &shape(), &a, today) {
            Err(Error::InvalidArgument(v)) => {
                let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, ["purpose", "fields[0]", "period_until"]);
            }
            other => panic!("expected three violations, got {other:?}"),
        }
        let mut a = application();
        a.fields = vec!["salary".into()];
        assert!(apply(&user, &e, &shape(), &a, today).is_err());
        let mut a = application();
        a.fields.clear();
        assert!(apply(&user, &e, &shape(), &a, today).is_err());
        let mut a = application();
        a.period_until = d(2026, 11, 27);
        a.period_from = d(2026, 1, 1);
        assert!(apply(&user, &e, &shape(), &a, today).is_err());
        let mut a = application();
        a.period_until = d(2026, 11, 30);
        assert!(apply(&user, &e, &shape(), &a, today).is_err(), "until before from");
    }

    #[test]
    fn an_interface_is_applied_for_and_granted_by_operation() {
        let user = Caller::Department(USER.into());
        let owner = Caller::Department(PROVIDER.into());
        let e = entry(ShareType::Conditional, EntryState::Published);
        let today = d(2026, 11, 28);
        let interface = RecordShape {
            operations: vec!["verify".into(), "lookup".into()],
            ..shape()
        };
        let mut a = application();
        let Err(Error::InvalidArgument(v)) = apply(&user, &e, &interface, &a, today) else {
            panic!("an interface needs its operations named");
        };
        assert_eq!(v[0].field, "operations");
        a.operations = vec!["verify".into(), "delete".into(), "verify".into()];
        let Err(Error::InvalidArgument(v)) = apply(&user, &e, &interface, &a, today) else {
            panic!("only its operations, each once");
        };
        let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["operations[1]", "operations[2]"]);
        a.operations = vec!["verify".into(), "lookup".into()];
        assert!(apply(&user, &e, &interface, &a, today).is_ok());
        assert!(
            apply(&user, &e, &shape(), &a, today).is_err(),
            "a dataset has no operations"
        );

        let mut r = request(RequestState::Pending);
        r.application = a;
        let now = at("2026-11-28T02:00:00Z");
        let all = approve(&owner, &r, &interface, &Approval::default(), now).expect("as requested");
        assert_eq!(all.operations, ["verify", "lookup"]);
        let narrowed = Approval {
            operations: vec!["verify".into()],
            ..Approval::default()
        };
        let terms = approve(&owner, &r, &interface, &narrowed, now).expect("narrowed");
        assert_eq!(terms.operations, ["verify"]);
        let wider = Approval {
            operations: vec!["export".into()],
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &interface, &wider, now).is_err());

        let mut g = grant("g1", "2027-01-01T00:00:00Z", false);
        g.operations = terms.operations;
        assert!(g.covers_operation("verify").is_ok());
        assert!(matches!(g.covers_operation("lookup"), Err(Error::PermissionDenied(_))));
        g.operations.clear();
        assert!(
            g.covers_operation("anything").is_ok(),
            "a dataset's grant names no operation"
        );
    }

    #[test]
    fn approvals_only_narrow_keep_the_key_and_end_within_the_period() {
        let owner = Caller::Department(PROVIDER.into());
        let user = Caller::Department(USER.into());
        let now = at("2026-11-28T02:00:00Z");
        let r = request(RequestState::Pending);
        let terms = approve(&owner, &r, &shape(), &Approval::default(), now).expect("approved");
        assert_eq!(terms.fields, r.application.fields);
        assert!(terms.masks.is_empty() && terms.operations.is_empty());
        assert_eq!(terms.expires_at, at("2027-11-30T16:00:00Z"));

        let narrowed = Approval {
            fields: vec!["id".into(), "name".into()],
            masks: vec![("id".into(), MaskRule::ResidentId)],
            expires_at: Some(at("2027-01-01T00:00:00Z")),
            note: "仅限核验".into(),
            operations: vec![],
        };
        assert!(approve(&owner, &r, &shape(), &narrowed, now).is_ok());
        assert!(matches!(
            approve(&user, &r, &shape(), &narrowed, now),
            Err(Error::PermissionDenied(_))
        ));

        let wider = Approval {
            fields: vec!["id".into(), "income".into()],
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &shape(), &wider, now).is_err());
        let keyless = Approval {
            fields: vec!["name".into()],
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &shape(), &keyless, now).is_err());
        let stray_mask = Approval {
            fields: vec!["id".into()],
            masks: vec![("name".into(), MaskRule::PersonalName)],
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &shape(), &stray_mask, now).is_err());
        let too_long = Approval {
            expires_at: Some(at("2028-01-01T00:00:00Z")),
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &shape(), &too_long, now).is_err());
        let past = Approval {
            expires_at: Some(at("2026-11-01T00:00:00Z")),
            ..Approval::default()
        };
        assert!(approve(&owner, &r, &shape(), &past, now).is_err());
        assert!(matches!(
            approve(
                &owner,
                &request(RequestState::Rejected),
                &shape(),
                &Approval::default(),
                now
            ),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn rejections_need_a_reason_and_withdrawals_the_applicant() {
        let owner = Caller::Department(PROVIDER.into());
        let user = Caller::Department(USER.into());
        let stranger = Caller::Department("11330100MB0003003M".into());
        let r = request(RequestState::Pending);
        assert!(reject(&owner, &r, "").is_err());
        assert!(reject(&owner, &r, "无法律依据").is_ok());
        assert!(withdraw(&user, &r).is_ok());
        assert!(matches!(withdraw(&owner, &r), Err(Error::PermissionDenied(_))));
        assert!(matches!(withdraw(&stranger, &r), Err(Error::NotFound(_))));
        assert!(matches!(
            withdraw(&user, &request(RequestState::Approved)),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn overdue_means_pending_after_the_due_day() {
        let mut r = request(RequestState::Pending);
        assert!(!r.is_overdue(at("2026-12-11T15:59:00Z")));
        assert!(r.is_overdue(at("2026-12-11T16:00:00Z")));
        r.state = RequestState::Approved;
        r.answered_at = Some(at("2026-12-11T10:00:00Z"));
        assert!(!r.is_overdue(at("2027-01-01T00:00:00Z")));
        assert_eq!(r.answered_in_time(), Some(true));
    }

    #[test]
    fn reads_follow_the_sharing_type_and_the_grant() {
        let owner = Caller::Department(PROVIDER.into());
        let user = Caller::Department(USER.into());
        let admin = Caller::Admin("ops".into());
        let now = at("2026-12-01T00:00:00Z");
        let open = entry(ShareType::Unconditional, EntryState::Published);
        assert_eq!(read(&owner, &open, &[], "", Some(""), now).ok(), Some(ReadBasis::Owner));
        assert!(matches!(
            read(&user, &open, &[], "", Some(""), now),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            read(&user, &open, &[], "", None, now).ok(),
            Some(ReadBasis::Open { purpose: String::new() }),
            "cursor operations move no records and need no purpose"
        );
        assert_eq!(
            read(&user, &open, &[], "", Some(" 核验 "), now).ok(),
            Some(ReadBasis::Open {
                purpose: "核验".into()
            })
        );
        assert!(matches!(
            read(&admin, &open, &[], "", Some("审计"), now),
            Err(Error::PermissionDenied(_))
        ));

        let conditional = entry(ShareType::Conditional, EntryState::Published);
        let active = grant("g1", "2027-01-01T00:00:00Z", false);
        let expired = grant("g0", "2026-11-30T00:00:00Z", false);
        let revoked = grant("g2", "2027-01-01T00:00:00Z", true);
        assert!(matches!(
            read(&user, &conditional, &[], "", Some("x"), now),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            read(&user, &conditional, &[expired.clone(), revoked.clone()], "", None, now),
            Err(Error::PermissionDenied(_))
        ));
        let basis = read(&user, &conditional, &[expired.clone(), active.clone()], "", None, now).expect("granted");
        assert_eq!(basis.grant().map(|g| g.id.as_str()), Some("g1"));
        assert!(matches!(
            read(&user, &conditional, &[revoked.clone()], "g2", None, now),
            Err(Error::PermissionDenied(_))
        ));
        // Without a grant named, the refusal says which grant ended and why.
        match read(&user, &conditional, &[revoked.clone()], "", None, now) {
            Err(Error::PermissionDenied(why)) => assert!(why.contains("g2") && why.contains("用途已结束"), "{why}"),
            other => panic!("expected a refusal naming the revoked grant, got {other:?}"),
        }
        // Of several, the one that ended last (g0 expired on 11-30, after g2's revocation on 11-29).
        match read(&user, &conditional, &[expired.clone(), revoked.clone()], "", None, now) {
            Err(Error::PermissionDenied(why)) => assert!(why.contains("g0") && why.contains("expired"), "{why}"),
            other => panic!("expected a refusal naming the expired grant, got {other:?}"),
        }
        let mut second = active.clone();
        second.id = "g3".into();
        assert!(matches!(
            read(&user, &conditional, &[active.clone(), second.clone()], "", None, now),
            Err(Error::InvalidArgument(_))
        ));
        assert!(read(&user, &conditional, &[active.clone(), second], "g3", None, now).is_ok());

        let closed = entry(ShareType::NotShared, EntryState::Published);
        assert!(matches!(
            read(&user, &closed, &[active.clone()], "", Some("x"), now),
            Err(Error::PermissionDenied(_))
        ));
        let withdrawn = entry(ShareType::Conditional, EntryState::Withdrawn);
        assert!(matches!(
            read(&user, &withdrawn, &[active], "", Some("x"), now),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(
            read(&owner, &withdrawn, &[], "", None, now).ok(),
            Some(ReadBasis::Owner)
        );
    }

    #[test]
    fn granted_records_are_projected_and_masked_keys_too() {
        let basis = ReadBasis::Granted(Box::new(grant("g1", "2027-01-01T00:00:00Z", false)));
        let view = basis.view(&["id".into()]).expect("a view");
        let record = r#"{"id":"33010619900307123X","name":"张三丰","mobile":"13812345678","income":9000}"#;
        let shaped: Value = serde_json::from_str(&view.record(record.as_bytes())).expect("JSON");
        assert_eq!(shaped, serde_json::json!({"id": "330106********123X", "name": "张**"}));
        assert_eq!(view.key(r#"["33010619900307123X"]"#), r#"["330106********123X"]"#);
        assert_eq!(view.record(b"[1,2]"), "{}");
        assert_eq!(view.record(b"{\"a\": \"\xff\"}"), "{}", "not UTF-8: withheld");
        assert!(ReadBasis::Owner.view(&["id".into()]).is_none());
    }

    #[test]
    fn revocation_by_the_provider_or_the_admin_with_a_reason() {
        let g = grant("g1", "2027-01-01T00:00:00Z", false);
        assert!(revoke(&Caller::Department(PROVIDER.into()), &g, "用途结束").is_ok());
        assert!(revoke(&Caller::Admin("ops".into()), &g, "违规使用").is_ok());
        assert!(matches!(
            revoke(&Caller::Department(USER.into()), &g, "x"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(revoke(&Caller::Department(PROVIDER.into()), &g, "").is_err());
        let done = grant("g1", "2027-01-01T00:00:00Z", true);
        assert!(matches!(
            revoke(&Caller::Admin("ops".into()), &done, "x"),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn reports_name_a_record_and_are_resolved_by_the_provider() {
        let user = Caller::Department(USER.into());
        let owner = Caller::Department(PROVIDER.into());
        let open = ReadBasis::Open {
            purpose: "核验".into()
        };
        assert!(report(&user, &open, 5, "", &[], 10, "名称有误").is_ok());
        assert!(report(&user, &open, 0, r#"["x"]"#, &[], 10, "名称有误").is_ok());
        // A grant that masks the key: only the sequence number names the record.
        let masked = ReadBasis::Granted(Box::new(grant("g1", "2027-01-01T00:00:00Z", false)));
        let id = ["id".to_string()];
        assert!(report(&user, &masked, 0, r#"["330106********123X"]"#, &id, 10, "x").is_err());
        assert!(report(&user, &masked, 5, "", &id, 10, "x").is_ok());
        assert!(report(&user, &open, 0, "", &[], 10, "名称有误").is_err());
        assert!(report(&user, &open, 11, "", &[], 10, "名称有误").is_err());
        assert!(report(&user, &open, 0, "not json", &[], 10, "名称有误").is_err());
        assert!(report(&user, &open, 5, "", &[], 10, "").is_err());
        assert!(report(&owner, &ReadBasis::Owner, 5, "", &[], 10, "x").is_err());

        let r = ErrorReport {
            id: "e1".into(),
            dataset: "102/000001".into(),
            provider_code: PROVIDER.into(),
            reporter_code: USER.into(),
            sequence: 5,
            key: String::new(),
            description: "名称有误".into(),
            state: ReportState::Open,
            reported_at: Utc::now(),
            resolved_at: None,
            resolved_by: String::new(),
            resolution: String::new(),
            corrected_sequence: 0,
        };
        assert!(resolve(&owner, &r, ReportState::Corrected, "", 7, 10).is_ok());
        assert!(resolve(&owner, &r, ReportState::Corrected, "", 4, 10).is_err());
        assert!(resolve(&owner, &r, ReportState::Corrected, "", 11, 10).is_err());
        assert!(resolve(&owner, &r, ReportState::Rejected, "", 0, 10).is_err());
        assert!(resolve(&owner, &r, ReportState::Rejected, "数据无误", 0, 10).is_ok());
        assert!(matches!(
            resolve(&user, &r, ReportState::Rejected, "x", 0, 10),
            Err(Error::PermissionDenied(_))
        ));
        let mut done = r.clone();
        done.state = ReportState::Corrected;
        assert!(matches!(
            resolve(&owner, &done, ReportState::Rejected, "x", 0, 10),
            Err(Error::FailedPrecondition(_))
        ));
    }
}
