//! What the pages show: the templates' data, Chinese labels for the API's codes, a status as a
//! message (with its field violations), and server-drawn SVG bars.

use std::collections::BTreeMap;

use askama::Template;
use tonic::Code;
use xinqiao_proto::v1 as pb;

/// What every page has around its content.
#[derive(Clone, Default)]
pub(crate) struct Frame {
    pub title: String,
    /// Who is signed in, as shown in the header.
    pub who: String,
    pub csrf: String,
    pub admin: bool,
    pub evaluator: bool,
    pub signed_in: bool,
    /// A message after a form succeeded.
    pub notice: String,
    /// A refusal or failure, as a sentence.
    pub error: String,
}

/// The field violations of an INVALID_ARGUMENT, by field, to show beside each field.
#[derive(Clone, Default)]
pub(crate) struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    /// The messages of `field` and of its parts (`masks[0].rule` for `masks`).
    pub fn of(&self, field: &str) -> String {
        self.0
            .iter()
            .filter(|(name, _)| {
                name.as_str() == field
                    || name
                        .strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
                    || name.strip_prefix("application.").is_some_and(|n| n == field)
            })
            .map(|(_, message)| message.as_str())
            .collect::<Vec<_>>()
            .join("；")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A refused or failed call as a person reads it, and the HTTP status of the page.
pub(crate) struct Refusal {
    pub http: u16,
    pub message: String,
    pub fields: FieldErrors,
}

pub(crate) fn refusal(status: &tonic::Status) -> Refusal {
    use tonic_types::StatusExt;
    let label = match status.code() {
        Code::PermissionDenied => "无权操作",
        Code::Unauthenticated => "未登录",
        Code::NotFound => "未找到",
        Code::InvalidArgument | Code::OutOfRange => "输入有误",
        Code::FailedPrecondition => "当前状态不允许此操作",
        Code::AlreadyExists => "已存在",
        Code::Aborted => "已被他人修改，请刷新后重试",
        Code::ResourceExhausted => "请求过多或过大",
        Code::Unavailable | Code::DeadlineExceeded => "暂时不可用，请稍后重试",
        _ => "服务出错",
    };
    let mut fields = BTreeMap::new();
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            fields
                .entry(v.field)
                .and_modify(|m: &mut String| {
                    m.push('；');
                    m.push_str(&v.description);
                })
                .or_insert(v.description);
        }
    }
    Refusal {
        http: crate::web::http_status(status.code()),
        message: format!("{label}：{}", status.message()),
        fields: FieldErrors(fields),
    }
}

pub(crate) fn entry_state(state: i32) -> &'static str {
    match pb::EntryState::try_from(state) {
        Ok(pb::EntryState::Draft) => "待提交",
        Ok(pb::EntryState::PendingReview) => "待审核",
        Ok(pb::EntryState::Published) => "已发布",
        Ok(pb::EntryState::Returned) => "已退回",
        Ok(pb::EntryState::Withdrawn) => "下线",
        _ => "—",
    }
}

pub(crate) fn share_type(value: i32) -> &'static str {
    match pb::ShareType::try_from(value) {
        Ok(pb::ShareType::Unconditional) => "无条件共享",
        Ok(pb::ShareType::Conditional) => "有条件共享",
        Ok(pb::ShareType::NotShared) => "不予共享",
        _ => "—",
    }
}

pub(crate) fn open_type(value: i32) -> &'static str {
    match pb::OpenType::try_from(value) {
        Ok(pb::OpenType::Unconditional) => "无条件开放",
        Ok(pb::OpenType::Conditional) => "有条件开放",
        Ok(pb::OpenType::NotOpen) => "不予开放",
        _ => "—",
    }
}

pub(crate) fn update_cycle(value: i32) -> &'static str {
    match pb::UpdateCycle::try_from(value) {
        Ok(pb::UpdateCycle::Realtime) => "实时",
        Ok(pb::UpdateCycle::Daily) => "每日",
        Ok(pb::UpdateCycle::Weekly) => "每周",
        Ok(pb::UpdateCycle::Monthly) => "每月",
        Ok(pb::UpdateCycle::Quarterly) => "每季度",
        Ok(pb::UpdateCycle::HalfYearly) => "每半年",
        Ok(pb::UpdateCycle::Yearly) => "每年",
        Ok(pb::UpdateCycle::Other) => "其他",
        _ => "—",
    }
}

pub(crate) fn resource_format(value: i32) -> &'static str {
    match pb::ResourceFormat::try_from(value) {
        Ok(pb::ResourceFormat::ElectronicFile) => "电子文件",
        Ok(pb::ResourceFormat::Spreadsheet) => "电子表格",
        Ok(pb::ResourceFormat::Database) => "数据库",
        Ok(pb::ResourceFormat::Image) => "图形图像",
        Ok(pb::ResourceFormat::StreamingMedia) => "流媒体",
        Ok(pb::ResourceFormat::SelfDescribing) => "自描述格式",
        Ok(pb::ResourceFormat::ServiceInterface) => "服务接口",
        _ => "—",
    }
}

pub(crate) fn request_state(value: i32) -> &'static str {
    match pb::RequestState::try_from(value) {
        Ok(pb::RequestState::Pending) => "待审批",
        Ok(pb::RequestState::Approved) => "已同意",
        Ok(pb::RequestState::Rejected) => "已拒绝",
        Ok(pb::RequestState::Withdrawn) => "已撤回",
        _ => "—",
    }
}

pub(crate) fn grant_state(value: i32) -> &'static str {
    match pb::GrantState::try_from(value) {
        Ok(pb::GrantState::Active) => "有效",
        Ok(pb::GrantState::Expired) => "已过期",
        Ok(pb::GrantState::Revoked) => "已撤销",
        _ => "—",
    }
}

pub(crate) fn report_state(value: i32) -> &'static str {
    match pb::ReportState::try_from(value) {
        Ok(pb::ReportState::Open) => "待处理",
        Ok(pb::ReportState::Corrected) => "已更正",
        Ok(pb::ReportState::Rejected) => "不予更正",
        _ => "—",
    }
}

pub(crate) fn standing(value: i32) -> &'static str {
    match pb::Standing::try_from(value) {
        Ok(pb::Standing::Owner) => "本部门提供",
        Ok(pb::Standing::Open) => "可直接使用",
        Ok(pb::Standing::Granted) => "已获授权",
        Ok(pb::Standing::Requestable) => "可申请",
        _ => "—",
    }
}

pub(crate) fn dataset_kind(value: i32) -> &'static str {
    match pb::DatasetKind::try_from(value) {
        Ok(pb::DatasetKind::Table) => "库表",
        Ok(pb::DatasetKind::File) => "文件",
        _ => "—",
    }
}

pub(crate) fn mask_rule(rule: &str) -> String {
    match rule {
        "resident_id" => "身份证号脱敏".into(),
        "mobile" => "手机号脱敏".into(),
        "name" => "姓名脱敏".into(),
        other => other.to_string(),
    }
}

/// A time in China Standard Time, to the minute.
pub(crate) fn time(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else { return "—".into() };
    let Some(utc) = chrono::DateTime::from_timestamp(t.seconds, 0) else {
        return "—".into();
    };
    let cst = chrono::FixedOffset::east_opt(8 * 3600).map(|tz| utc.with_timezone(&tz));
    cst.map_or_else(|| "—".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

/// One bar of a chart: a label, a value from 0 to 100 (or none), drawn server-side.
pub(crate) struct Bar {
    pub label: String,
    pub value: Option<f64>,
}

/// Horizontal bars as inline SVG, values 0–100. No script, no external asset.
pub(crate) fn bars_svg(bars: &[Bar], title: &str) -> String {
    const ROW: usize = 22;
    const LABEL: usize = 120;
    const WIDTH: usize = 300;
    let height = ROW * bars.len() + 4;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {} {height}\" width=\"100%\" preserveAspectRatio=\"xMinYMin meet\">",
        escape(title),
        LABEL + WIDTH + 50
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = i * ROW + 2;
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 14,
            escape(&bar.label)
        ));
        svg.push_str(&format!(
            "<rect x=\"{LABEL}\" y=\"{y}\" width=\"{WIDTH}\" height=\"16\" fill=\"#eef1f5\"/>"
        ));
        match bar.value {
            Some(v) => {
                let v = v.clamp(0.0, 100.0);
                // The bar's length in whole pixels: 0..=WIDTH, so the cast cannot truncate.
                let w = (v / 100.0 * WIDTH as f64).round() as usize;
                svg.push_str(&format!(
                    "<rect x=\"{LABEL}\" y=\"{y}\" width=\"{w}\" height=\"16\" fill=\"#2f6fb5\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{v:.1}</text>",
                    LABEL + WIDTH + 6,
                    y + 13
                ));
            }
            None => svg.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#888\">未测</text>",
                LABEL + WIDTH + 6,
                y + 13
            )),
        }
    }
    svg.push_str("</svg>");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------------------
// Templates

#[derive(Template)]
#[template(path = "console/message.html")]
pub(crate) struct MessagePage {
    pub frame: Frame,
    pub body: String,
}

/// The page a sign-in link opens: the link is used only when the person presses the button, so
/// that a link preview fetching it does not use it up.
#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub(crate) struct SignInPage {
    pub frame: Frame,
    pub token: String,
    pub nonce: String,
}

#[derive(Template)]
#[template(path = "console/home.html")]
pub(crate) struct HomePage {
    pub frame: Frame,
    pub identity: String,
    pub pending_reviews: String,
    pub pending_requests: String,
}

pub(crate) struct EntryRow {
    pub code: String,
    pub name: String,
    pub provider: String,
    pub classification: String,
    pub share: String,
    pub state: String,
    pub version: u64,
    pub updated: String,
    pub reason: String,
}

pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "console/catalog.html")]
pub(crate) struct CatalogPage {
    pub frame: Frame,
    pub keyword: String,
    pub classification: String,
    pub provider: String,
    pub share_types: Vec<Choice>,
    pub open_types: Vec<Choice>,
    pub cycles: Vec<Choice>,
    pub formats: Vec<Choice>,
    pub states: Vec<Choice>,
    pub entries: Vec<EntryRow>,
    pub next_page: String,
}

pub(crate) struct Compared {
    pub label: String,
    pub left: String,
    pub right: String,
    pub changed: bool,
}

pub(crate) struct ItemRow {
    pub name: String,
    pub data_type: String,
    pub length: u32,
    pub sensitive: bool,
    pub description: String,
}

pub(crate) struct VersionRow {
    pub version: u64,
    pub state: String,
    pub action: String,
    pub actor: String,
    pub reason: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "console/entry.html")]
pub(crate) struct EntryPage {
    pub frame: Frame,
    pub entry: EntryRow,
    pub summary: String,
    pub items: Vec<ItemRow>,
    pub versions: Vec<VersionRow>,
    pub left: u64,
    pub right: u64,
    pub compared: Vec<Compared>,
    pub reviewable: bool,
    pub errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "console/review.html")]
pub(crate) struct ReviewPage {
    pub frame: Frame,
    pub entries: Vec<EntryRow>,
    pub errors: FieldErrors,
    /// The entry the errors are about.
    pub failed: String,
}

pub(crate) struct DepartmentRow {
    pub code: String,
    pub name: String,
    pub division: String,
    pub contact: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "console/departments.html")]
pub(crate) struct DepartmentsPage {
    pub frame: Frame,
    pub departments: Vec<DepartmentRow>,
    pub form: BTreeMap<String, String>,
    pub errors: FieldErrors,
}

impl DepartmentsPage {
    pub fn value(&self, field: &str) -> String {
        self.form.get(field).cloned().unwrap_or_default()
    }
}

pub(crate) struct DatasetRow {
    pub code: String,
    pub name: String,
    pub provider: String,
    pub kind: String,
    pub standing: String,
    pub records: u64,
    pub last_sequence: u64,
    pub last_published: String,
}

#[derive(Template)]
#[template(path = "console/datasets.html")]
pub(crate) struct DatasetsPage {
    pub frame: Frame,
    pub datasets: Vec<DatasetRow>,
}

pub(crate) struct RequestRow {
    pub id: String,
    pub dataset: String,
    pub applicant: String,
    pub provider: String,
    pub purpose: String,
    pub fields: String,
    pub state: String,
    pub due_on: String,
    pub overdue: bool,
    pub pending: bool,
}

#[derive(Template)]
#[template(path = "console/requests.html")]
pub(crate) struct RequestsPage {
    pub frame: Frame,
    pub requests: Vec<RequestRow>,
}

pub(crate) struct FieldChoice {
    pub name: String,
    pub granted: bool,
    pub mask: String,
}

#[derive(Template)]
#[template(path = "console/request.html")]
pub(crate) struct RequestPage {
    pub frame: Frame,
    pub request: RequestRow,
    pub scope: String,
    pub business_system: String,
    pub period: String,
    pub reason: String,
    pub grant_id: String,
    pub fields: Vec<FieldChoice>,
    pub expires_on: String,
    pub note: String,
    pub reject_reason: String,
    pub errors: FieldErrors,
}

pub(crate) struct GrantRow {
    pub id: String,
    pub dataset: String,
    pub provider: String,
    pub grantee: String,
    pub purpose: String,
    pub fields: String,
    pub masks: String,
    pub expires: String,
    pub state: String,
    pub active: bool,
    pub revoke_reason: String,
}

#[derive(Template)]
#[template(path = "console/grants.html")]
pub(crate) struct GrantsPage {
    pub frame: Frame,
    pub grants: Vec<GrantRow>,
    pub errors: FieldErrors,
    pub failed: String,
}

pub(crate) struct ReportRow {
    pub id: String,
    pub dataset: String,
    pub reporter: String,
    pub provider: String,
    pub description: String,
    pub state: String,
    pub reported: String,
    pub resolution: String,
    pub resolvable: bool,
}

#[derive(Template)]
#[template(path = "console/reports.html")]
pub(crate) struct ReportsPage {
    pub frame: Frame,
    pub reports: Vec<ReportRow>,
    pub errors: FieldErrors,
    /// The report the errors are about.
    pub failed: String,
}

pub(crate) struct EventRow {
    pub sequence: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub ok: bool,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
pub(crate) struct AuditPage {
    pub frame: Frame,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub events: Vec<EventRow>,
    /// The verification's outcome, when asked for.
    pub verified: String,
    pub intact: bool,
}

pub(crate) struct RankRow {
    pub rank: u32,
    pub code: String,
    pub name: String,
    pub score: String,
    pub chart: String,
}

#[derive(Template)]
#[template(path = "console/scorecard.html")]
pub(crate) struct ScorecardPage {
    pub frame: Frame,
    pub period: String,
    pub ranking_chart: String,
    pub rows: Vec<RankRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_are_found_by_field_and_part() {
        let errors = FieldErrors(BTreeMap::from([
            ("masks[0].rule".to_string(), "unknown rule".to_string()),
            ("reason".to_string(), "required".to_string()),
        ]));
        assert_eq!(errors.of("masks"), "unknown rule");
        assert_eq!(errors.of("reason"), "required");
        assert_eq!(errors.of("reasons"), "");
        assert_eq!(errors.of("mask"), "");
    }

    #[test]
    fn bars_are_drawn_within_their_box_and_escape_labels() {
        let svg = bars_svg(
            &[
                Bar {
                    label: "<目录>".into(),
                    value: Some(150.0),
                },
                Bar {
                    label: "使用".into(),
                    value: None,
                },
            ],
            "t",
        );
        assert!(svg.contains("width=\"300\" height=\"16\" fill=\"#2f6fb5\""));
        assert!(svg.contains("&lt;目录&gt;"));
        assert!(svg.contains("未测"));
    }
}
