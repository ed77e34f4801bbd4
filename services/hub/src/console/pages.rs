//! The console's routes: each page reads through the API, each form calls one RPC.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use xinqiao_domain::identity::Principal;
use xinqiao_proto::v1 as pb;

use super::api::as_caller;
use super::session;
use super::views::{self, *};
use super::{Console, Visitor};
use crate::tls::PeerInfo;

/// A form larger than this is refused unread.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Rows a list page shows.
const PAGE: u32 = 100;

/// A form's fields in order (a field may repeat).
#[derive(Clone, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Form {
        Form(form_urlencoded::parse(bytes).into_owned().collect())
    }

    fn get(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// Where the request came from, for the trail.
#[derive(Clone, Copy)]
struct Remote(SocketAddr);

pub(crate) fn routes(console: Console) -> axum::Router {
    let signed_in = axum::Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/sign-out", post(sign_out))
        .route("/console/catalog", get(catalog))
        .route("/console/entry", get(entry))
        .route("/console/review", get(review))
        .route("/console/review/publish", post(publish))
        .route("/console/review/return", post(return_entry))
        .route("/console/departments", get(departments))
        .route("/console/departments/register", post(register_department))
        .route("/console/departments/deactivate", post(deactivate_department))
        .route("/console/datasets", get(datasets))
        .route("/console/requests", get(requests))
        .route("/console/request", get(request_page))
        .route("/console/request/approve", post(approve))
        .route("/console/request/reject", post(reject))
        .route("/console/grants", get(grants))
        .route("/console/grants/revoke", post(revoke))
        .route("/console/reports", get(reports))
        .route("/console/reports/resolve", post(resolve_report))
        .route("/console/audit", get(audit))
        .route("/console/audit/verify", post(verify))
        .route("/console/scorecard", get(scorecard))
        .route_layer(axum::middleware::from_fn_with_state(console.clone(), identify));
    axum::Router::new()
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/console.css", get(stylesheet))
        .merge(signed_in)
        .with_state(console)
}

// ---------------------------------------------------------------------------------------------
// Responses

fn html(status: u16, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut http::HeaderMap) {
    // Nothing from elsewhere, no framing, no referrer (a sign-in link's token stays here).
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
}

fn render(status: u16, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "a console page did not render");
            html(
                500,
                "<!doctype html><title>服务出错</title><p>页面生成失败。</p>".into(),
            )
        }
    }
}

fn redirect(to: &str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = http::StatusCode::SEE_OTHER;
    if let Ok(location) = http::HeaderValue::from_str(to) {
        response.headers_mut().insert(http::header::LOCATION, location);
    }
    secure_headers(response.headers_mut());
    response
}

fn frame(visitor: &Visitor, title: &str) -> Frame {
    Frame {
        title: title.into(),
        who: match &visitor.principal {
            Principal::Department(code) => format!("部门 {code}"),
            Principal::Admin(name) => format!("平台管理员 {name}"),
            Principal::Evaluator(name) => format!("评价方 {name}"),
            #[allow(unreachable_patterns)]
            other => other.to_string(),
        },
        csrf: visitor.csrf.clone(),
        admin: visitor.is_admin(),
        evaluator: visitor.is_evaluator(),
        signed_in: true,
        ..Frame::default()
    }
}

fn message(mut frame: Frame, status: u16, heading: &str, body: &str) -> Response {
    frame.title = heading.into();
    render(
        status,
        &MessagePage {
            frame,
            body: body.into(),
        },
    )
}

/// A page that could not be read: the refusal, as the API gave it.
fn refused(visitor: &Visitor, title: &str, status: &tonic::Status) -> Response {
    let refusal = views::refusal(status);
    let mut frame = frame(visitor, title);
    frame.error = refusal.message.clone();
    message(frame, refusal.http, title, &refusal.message)
}

/// A search's answer as a page reads it. The directory answers with its entries encoded already,
/// for the wire; the console is in the same process, so it decodes them itself.
fn decoded(found: tonic::Response<pb::SearchEntriesResponse>) -> Result<pb::SearchEntriesResponse, tonic::Status> {
    found
        .into_inner()
        .decoded()
        .map_err(|e| tonic::Status::internal(format!("the directory's answer does not decode: {e}")))
}

fn query(request: &Request) -> Form {
    Form::parse(request.uri().query().unwrap_or_default().as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Sign-in and identity

/// Resolves who is calling (certificate, else session), checks a form's CSRF token, and hands
/// the handler the visitor and the form.
async fn identify(State(console): State<Console>, request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerInfo>().cloned();
    let remote = peer
        .as_ref()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |p| p.remote);
    let now = crate::clock::now();
    let secret = session::cookie_secret(request.headers());
    let from_session = match &secret {
        Some(secret) => match session::session_principal(console.store.as_ref(), secret, now).await {
            Ok(found) => found,
            Err(e) => return unavailable(e),
        },
        None => None,
    };
    let certificate = peer.and_then(|p| p.principal);
    // A peer hub's certificate is for federation calls only: it signs no one into the console.
    if let Some(Principal::Hub(division)) = &certificate {
        return peer_hub_refused(division);
    }
    let mut new_cookie = None;
    let (principal, secret) = match (certificate, from_session, secret) {
        // A certificate is the identity; a session of another identity is not used with it.
        (Some(cert), Some(session), Some(secret)) if cert == session => (cert, secret),
        (Some(cert), _, _) => {
            match session::start_session(console.store.as_ref(), &cert, console.session_ttl, now).await {
                Ok(secret) => {
                    new_cookie = Some(session::set_cookie(&secret, console.session_ttl));
                    (cert, secret)
                }
                Err(e) => return unavailable(e),
            }
        }
        (None, Some(session), Some(secret)) => (session, secret),
        _ => return not_signed_in(),
    };
    let visitor = Visitor {
        principal,
        csrf: session::csrf_token(&secret),
    };
    let (mut parts, body) = request.into_parts();
    if parts.method == http::Method::POST {
        let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return message(
                    frame(&visitor, "表单过大"),
                    413,
                    "表单过大",
                    "表单内容超过 64 KiB，未处理。",
                );
            }
        };
        let form = Form::parse(&bytes);
        if !session::same(&form.get("csrf"), &visitor.csrf) {
            return message(
                frame(&visitor, "请求已拒绝"),
                403,
                "请求已拒绝",
                "表单校验码（CSRF）不符：请回到页面重新提交。",
            );
        }
        parts.extensions.insert(form);
    }
    parts.extensions.insert(visitor);
    parts.extensions.insert(Remote(remote));
    let mut response = next.run(Request::from_parts(parts, Body::empty())).await;
    if let Some(cookie) = new_cookie.and_then(|c| http::HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    response
}

fn unavailable(error: xinqiao_domain::Error) -> Response {
    tracing::error!(%error, "console sessions cannot be read");
    let frame = Frame {
        title: "暂时不可用".into(),
        ..Frame::default()
    };
    message(frame, 503, "暂时不可用", "登录状态暂时无法读取，请稍后重试。")
}

fn not_signed_in() -> Response {
    let frame = Frame {
        title: "请登录".into(),
        ..Frame::default()
    };
    message(
        frame,
        401,
        "请登录",
        "使用客户端证书访问，或在终端运行 `xinqiao console --as admin`（或 --as 部门统一社会信用代码）获取一次性登录链接。",
    )
}

fn peer_hub_refused(division: &str) -> Response {
    let frame = Frame {
        title: "无权访问".into(),
        ..Frame::default()
    };
    message(
        frame,
        403,
        "无权访问",
        &format!("这是平台 {division} 的级联证书，只用于平台之间的目录汇聚和数据交换，不能登录管理控制台。"),
    )
}

fn sign_in_frame() -> Frame {
    Frame {
        title: "登录".into(),
        ..Frame::default()
    }
}

fn invalid_link() -> Response {
    message(
        sign_in_frame(),
        403,
        "登录链接无效",
        "链接不存在、已使用或已过期。请运行 `xinqiao console` 重新获取。",
    )
}

fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a sign-in link opens: a button that uses it. Opening the page uses nothing, so a link
/// preview does not burn the link; the button's form must come back with the cookie set here.
async fn sign_in_page(request: Request) -> Response {
    let token = query(&request).get("token");
    if !well_formed_token(&token) {
        return invalid_link();
    }
    let nonce = session::secret();
    let mut response = render(
        200,
        &SignInPage {
            frame: sign_in_frame(),
            token,
            nonce: nonce.clone(),
        },
    );
    if let Ok(cookie) = http::HeaderValue::from_str(&session::sign_in_cookie(&nonce)) {
        response.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    response
}

/// Opens a session with a one-time link's token, from the sign-in page's button.
async fn sign_in(State(console): State<Console>, request: Request) -> Response {
    let now = crate::clock::now();
    let (parts, body) = request.into_parts();
    let cookie = session::cookie_value(&parts.headers, session::SIGN_IN_COOKIE);
    let form = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => Form::parse(&collected.to_bytes()),
        Err(_) => return invalid_link(),
    };
    let (token, nonce) = (form.get("token"), form.get("nonce"));
    // A form from anywhere but the sign-in page (another site's, to sign a person in as someone
    // else) lacks the page's cookie: nothing is used.
    if cookie.as_deref() != Some(nonce.as_str()) {
        return message(
            sign_in_frame(),
            403,
            "请从登录链接登录",
            "请在浏览器中打开 `xinqiao console` 给出的链接，再点击“登录控制台”。",
        );
    }
    if !well_formed_token(&token) {
        return invalid_link();
    }
    let principal = match console.store.redeem_sign_in_token(&session::hash(&token), now).await {
        Ok(Some(uri)) => match Principal::from_uri(&uri) {
            Some(p) => p,
            None => return invalid_link(),
        },
        Ok(None) => return invalid_link(),
        Err(e) => return unavailable(e),
    };
    let secret = match session::start_session(console.store.as_ref(), &principal, console.session_ttl, now).await {
        Ok(secret) => secret,
        Err(e) => return unavailable(e),
    };
    let mut response = redirect("/console/");
    for cookie in [
        session::set_cookie(&secret, console.session_ttl),
        session::clear_sign_in_cookie(),
    ] {
        if let Ok(cookie) = http::HeaderValue::from_str(&cookie) {
            response.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
    }
    response
}

async fn sign_out(State(console): State<Console>, request: Request) -> Response {
    if let Some(secret) = session::cookie_secret(request.headers())
        && let Err(e) = console.store.end_console_session(&session::hash(&secret)).await
    {
        return unavailable(e);
    }
    let frame = Frame {
        title: "已退出".into(),
        ..Frame::default()
    };
    let mut response = message(frame, 200, "已退出", "会话已结束。");
    if let Ok(cookie) = http::HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    response
}

async fn stylesheet() -> Response {
    let mut response = Response::new(Body::from(include_str!("../../templates/console/console.css")));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=3600"),
    );
    response
}

fn parts(request: &Request) -> (Visitor, SocketAddr, Form) {
    let ext = request.extensions();
    let visitor = ext.get::<Visitor>().cloned().unwrap_or_else(|| Visitor {
        principal: Principal::Evaluator("unknown".into()),
        csrf: String::new(),
    });
    let remote = ext
        .get::<Remote>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |r| r.0);
    let form = ext.get::<Form>().cloned().unwrap_or_default();
    (visitor, remote, form)
}

// ---------------------------------------------------------------------------------------------
// Pages

async fn home(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let p = &visitor.principal;
    let me = console
        .api
        .directory()
        .who_am_i(as_caller(pb::WhoAmIRequest {}, p, remote))
        .await;
    let identity = match me.map(tonic::Response::into_inner) {
        Ok(pb::WhoAmIResponse {
            identity: Some(pb::who_am_i_response::Identity::Department(d)),
        }) => format!("{}（{}）", d.name, d.code),
        Ok(pb::WhoAmIResponse {
            identity: Some(pb::who_am_i_response::Identity::Admin(name)),
        }) => format!("平台管理员 {name}"),
        Ok(pb::WhoAmIResponse {
            identity: Some(pb::who_am_i_response::Identity::Evaluator(name)),
        }) => format!("评价方 {name}"),
        Ok(_) => "—".into(),
        Err(status) => return refused(&visitor, "首页", &status),
    };
    let mut pending_reviews = String::new();
    let mut pending_requests = String::new();
    if visitor.is_admin() {
        let search = pb::SearchEntriesRequest {
            state: pb::EntryState::PendingReview as i32,
            page_size: PAGE,
            ..Default::default()
        };
        if let Ok(found) = console
            .api
            .directory()
            .search_entries(as_caller(search, p, remote))
            .await
        {
            let found = found.into_inner();
            pending_reviews = (found.entries.len() + found.encoded_entries.len()).to_string();
        }
    }
    if !visitor.is_evaluator() {
        // The admin is no party: it sees every department's.
        let party = if visitor.is_admin() {
            pb::Party::Unspecified
        } else {
            pb::Party::Provider
        };
        let list = pb::ListRequestsRequest {
            party: party as i32,
            state: pb::RequestState::Pending as i32,
            page_size: PAGE,
            ..Default::default()
        };
        if let Ok(found) = console.api.access().list_requests(as_caller(list, p, remote)).await {
            pending_requests = found.into_inner().requests.len().to_string();
        }
    }
    render(
        200,
        &HomePage {
            frame: frame(&visitor, "首页"),
            identity,
            pending_reviews,
            pending_requests,
        },
    )
}

fn entry_row(e: &pb::CatalogEntry) -> EntryRow {
    let content = e.content.clone().unwrap_or_default();
    EntryRow {
        code: e.resource_code.clone(),
        name: content.name.clone(),
        provider: if e.provider_name.is_empty() {
            e.provider_code.clone()
        } else {
            format!("{}（{}）", e.provider_name, e.provider_code)
        },
        classification: content.classification.clone(),
        share: views::share_type(content.share.as_ref().map_or(0, |s| s.share_type)).into(),
        state: views::entry_state(e.state).into(),
        version: e.version,
        updated: views::time(e.updated_at.as_ref()),
        reason: e.state_reason.clone(),
    }
}

fn choices(options: &[(i32, &str)], selected: i32) -> Vec<Choice> {
    options
        .iter()
        .map(|(value, label)| Choice {
            value: value.to_string(),
            label: (*label).into(),
            selected: *value == selected,
        })
        .collect()
}

async fn catalog(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let q = query(&request);
    let share: i32 = q.get("share_type").parse().unwrap_or(0);
    let state: i32 = q.get("state").parse().unwrap_or(0);
    let open: i32 = q.get("open_type").parse().unwrap_or(0);
    let cycle: i32 = q.get("update_cycle").parse().unwrap_or(0);
    let format: i32 = q.get("format").parse().unwrap_or(0);
    let search = pb::SearchEntriesRequest {
        keyword: q.get("q"),
        classification_prefix: q.get("classification"),
        provider_code: q.get("provider"),
        share_type: share,
        open_type: open,
        update_cycle: cycle,
        format,
        state,
        page_size: PAGE,
        page_token: q.get("page"),
        ..Default::default()
    };
    let found = match console
        .api
        .directory()
        .search_entries(as_caller(search, &visitor.principal, remote))
        .await
        .and_then(decoded)
    {
        Ok(found) => found,
        Err(status) => return refused(&visitor, "资源目录", &status),
    };
    let share_types = choices(
        &[
            (0, "全部共享类型"),
            (1, "无条件共享"),
            (2, "有条件共享"),
            (3, "不予共享"),
        ],
        share,
    );
    let states = choices(
        &[
            (0, "全部状态"),
            (1, "待提交"),
            (2, "待审核"),
            (3, "已发布"),
            (4, "已退回"),
            (5, "下线"),
        ],
        state,
    );
    let open_types = choices(
        &[
            (0, "全部开放类型"),
            (1, "无条件开放"),
            (2, "有条件开放"),
            (3, "不予开放"),
        ],
        open,
    );
    let cycles = choices(
        &[
            (0, "全部更新周期"),
            (1, "实时"),
            (2, "每日"),
            (3, "每周"),
            (4, "每月"),
            (5, "每季度"),
            (6, "每半年"),
            (7, "每年"),
            (8, "其他"),
        ],
        cycle,
    );
    let formats = choices(
        &[
            (0, "全部格式"),
            (1, "电子文件"),
            (2, "电子表格"),
            (3, "数据库"),
            (4, "图形图像"),
            (5, "流媒体"),
            (6, "自描述格式"),
            (7, "服务接口"),
        ],
        format,
    );
    render(
        200,
        &CatalogPage {
            frame: frame(&visitor, "资源目录"),
            open_types,
            cycles,
            formats,
            keyword: q.get("q"),
            classification: q.get("classification"),
            provider: q.get("provider"),
            share_types,
            states,
            entries: found.entries.iter().map(entry_row).collect(),
            next_page: found.next_page_token,
        },
    )
}

/// The metadata of two versions, row by row, each row marked when it differs.
fn compare(a: &pb::CatalogEntry, b: &pb::CatalogEntry) -> Vec<Compared> {
    fn fields(e: &pb::CatalogEntry) -> Vec<(String, String)> {
        let c = e.content.clone().unwrap_or_default();
        let share = c.share.clone().unwrap_or_default();
        let open = c.open.clone().unwrap_or_default();
        let mut rows = vec![
            ("状态".to_string(), views::entry_state(e.state).to_string()),
            ("信息资源名称".into(), c.name.clone()),
            ("信息资源分类".into(), c.classification.clone()),
            ("信息资源摘要".into(), c.summary.clone()),
            ("信息资源格式".into(), views::resource_format(c.format).into()),
            ("共享类型".into(), views::share_type(share.share_type).into()),
            ("共享条件".into(), share.condition.clone()),
            ("共享依据".into(), share.legal_basis.clone()),
            ("开放类型".into(), views::open_type(open.open_type).into()),
            ("开放条件".into(), open.condition.clone()),
            ("更新周期".into(), views::update_cycle(c.update_cycle).into()),
            ("关联资源代码".into(), c.related_codes.join("、")),
            ("元数据维护方".into(), c.maintainer.clone()),
        ];
        for item in &c.items {
            rows.push((
                format!("信息项：{}", item.name),
                format!(
                    "{}，长度 {}{}",
                    item.data_type,
                    item.length,
                    if item.sensitive { "，敏感" } else { "" }
                ),
            ));
        }
        rows
    }
    let (left, right) = (fields(a), fields(b));
    let mut labels: Vec<String> = left.iter().map(|(l, _)| l.clone()).collect();
    for (label, _) in &right {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    let find = |rows: &[(String, String)], label: &str| {
        rows.iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "（无）".into())
    };
    labels
        .into_iter()
        .map(|label| {
            let (l, r) = (find(&left, &label), find(&right, &label));
            Compared {
                changed: l != r,
                label,
                left: l,
                right: r,
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn entry_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    code: &str,
    left: u64,
    right: u64,
    mut frame: Frame,
    errors: FieldErrors,
) -> Response {
    let p = &visitor.principal;
    let get = |version: u64| pb::GetEntryRequest {
        resource_code: code.to_string(),
        version,
    };
    let current = match console.api.directory().get_entry(as_caller(get(0), p, remote)).await {
        Ok(e) => e.into_inner(),
        Err(status) => return refused(visitor, "目录条目", &status),
    };
    let versions = match console
        .api
        .directory()
        .list_entry_versions(as_caller(
            pb::ListEntryVersionsRequest {
                resource_code: code.to_string(),
            },
            p,
            remote,
        ))
        .await
    {
        Ok(v) => v.into_inner().versions,
        Err(status) => return refused(visitor, "目录条目", &status),
    };
    let right = if right == 0 { current.version } else { right };
    let left = if left == 0 {
        right.saturating_sub(1).max(1)
    } else {
        left
    };
    let fetch = |v: u64| {
        let request = as_caller(get(v), p, remote);
        let mut client = console.api.directory();
        async move { client.get_entry(request).await.map(tonic::Response::into_inner) }
    };
    let (a, b) = match (fetch(left).await, fetch(right).await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(status), _) | (_, Err(status)) => return refused(visitor, "目录条目", &status),
    };
    let content = current.content.clone().unwrap_or_default();
    if frame.title.is_empty() {
        frame = self::frame(visitor, &format!("目录条目 {}", current.resource_code));
    }
    render(
        if errors.is_empty() && frame.error.is_empty() {
            200
        } else {
            400
        },
        &EntryPage {
            frame,
            reviewable: visitor.is_admin() && current.state == pb::EntryState::PendingReview as i32,
            entry: entry_row(&current),
            summary: content.summary.clone(),
            items: content
                .items
                .iter()
                .map(|i| ItemRow {
                    name: i.name.clone(),
                    data_type: i.data_type.clone(),
                    length: i.length,
                    sensitive: i.sensitive,
                    description: i.description.clone(),
                })
                .collect(),
            versions: versions
                .iter()
                .rev()
                .map(|v| VersionRow {
                    version: v.version,
                    state: views::entry_state(v.state).into(),
                    action: v.action.clone(),
                    actor: v.actor.clone(),
                    reason: v.reason.clone(),
                    at: views::time(v.changed_at.as_ref()),
                })
                .collect(),
            left,
            right,
            compared: compare(&a, &b),
            errors,
        },
    )
}

async fn entry(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let q = query(&request);
    let left = q.get("a").parse().unwrap_or(0);
    let right = q.get("b").parse().unwrap_or(0);
    entry_page(
        &console,
        &visitor,
        remote,
        &q.get("code"),
        left,
        right,
        Frame::default(),
        FieldErrors::default(),
    )
    .await
}

async fn review_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    mut frame: Frame,
    errors: FieldErrors,
    failed: String,
) -> Response {
    let search = pb::SearchEntriesRequest {
        state: pb::EntryState::PendingReview as i32,
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .directory()
        .search_entries(as_caller(search, &visitor.principal, remote))
        .await
        .and_then(decoded)
    {
        Ok(found) => found,
        Err(status) => return refused(visitor, "审核队列", &status),
    };
    if !visitor.is_admin() && frame.error.is_empty() {
        frame.notice = "审核由平台管理员进行；此处列出本部门待审核的条目。".into();
    }
    let status = if errors.is_empty() && frame.error.is_empty() {
        200
    } else {
        400
    };
    render(
        status,
        &ReviewPage {
            frame,
            entries: found.entries.iter().map(entry_row).collect(),
            errors,
            failed,
        },
    )
}

async fn review(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let frame = frame(&visitor, "审核队列");
    review_page(&console, &visitor, remote, frame, FieldErrors::default(), String::new()).await
}

async fn publish(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let code = form.get("code");
    let call = pb::PublishEntryRequest {
        resource_code: code.clone(),
        expected_version: form.get("version").parse().unwrap_or(0),
    };
    let mut frame = frame(&visitor, "审核队列");
    match console
        .api
        .directory()
        .publish_entry(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(e) => {
            frame.notice = format!(
                "已发布 {}（第 {} 版）。",
                e.get_ref().resource_code,
                e.get_ref().version
            );
            review_page(&console, &visitor, remote, frame, FieldErrors::default(), String::new()).await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            let page = review_page(&console, &visitor, remote, frame, refusal.fields, code).await;
            with_status(page, refusal.http)
        }
    }
}

async fn return_entry(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let code = form.get("code");
    let call = pb::ReturnEntryRequest {
        resource_code: code.clone(),
        reason: form.get("reason"),
        expected_version: form.get("version").parse().unwrap_or(0),
    };
    let mut frame = frame(&visitor, "审核队列");
    match console
        .api
        .directory()
        .return_entry(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(e) => {
            frame.notice = format!("已退回 {}：{}", e.get_ref().resource_code, e.get_ref().state_reason);
            review_page(&console, &visitor, remote, frame, FieldErrors::default(), String::new()).await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            let page = review_page(&console, &visitor, remote, frame, refusal.fields, code).await;
            with_status(page, refusal.http)
        }
    }
}

fn with_status(mut response: Response, status: u16) -> Response {
    if let Ok(status) = http::StatusCode::from_u16(status) {
        *response.status_mut() = status;
    }
    response
}

async fn departments_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    frame: Frame,
    form: BTreeMap<String, String>,
    errors: FieldErrors,
) -> Response {
    let list = pb::ListDepartmentsRequest {
        page_size: 500,
        include_inactive: visitor.is_admin(),
        ..Default::default()
    };
    let found = match console
        .api
        .directory()
        .list_departments(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(visitor, "部门", &status),
    };
    let status = if errors.is_empty() && frame.error.is_empty() {
        200
    } else {
        400
    };
    render(
        status,
        &DepartmentsPage {
            frame,
            departments: found
                .departments
                .iter()
                .map(|d| DepartmentRow {
                    code: d.code.clone(),
                    name: d.name.clone(),
                    division: d.division_code.clone(),
                    contact: d.contact.clone(),
                    active: d.active,
                })
                .collect(),
            form,
            errors,
        },
    )
}

async fn departments(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let frame = frame(&visitor, "部门");
    departments_page(
        &console,
        &visitor,
        remote,
        frame,
        BTreeMap::new(),
        FieldErrors::default(),
    )
    .await
}

async fn register_department(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let call = pb::RegisterDepartmentRequest {
        code: form.get("code"),
        name: form.get("name"),
        division_code: form.get("division_code"),
        contact: form.get("contact"),
    };
    let mut frame = frame(&visitor, "部门");
    match console
        .api
        .directory()
        .register_department(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(d) => {
            frame.notice = format!("已登记 {}（{}）。", d.get_ref().name, d.get_ref().code);
            departments_page(
                &console,
                &visitor,
                remote,
                frame,
                BTreeMap::new(),
                FieldErrors::default(),
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            let kept = ["code", "name", "division_code", "contact"]
                .iter()
                .map(|f| (f.to_string(), form.get(f)))
                .collect();
            with_status(
                departments_page(&console, &visitor, remote, frame, kept, refusal.fields).await,
                refusal.http,
            )
        }
    }
}

async fn deactivate_department(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let call = pb::DeactivateDepartmentRequest {
        code: form.get("code"),
        reason: form.get("reason"),
    };
    let mut frame = frame(&visitor, "部门");
    match console
        .api
        .directory()
        .deactivate_department(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(d) => {
            frame.notice = format!("已停用 {}（{}）。", d.get_ref().name, d.get_ref().code);
            departments_page(
                &console,
                &visitor,
                remote,
                frame,
                BTreeMap::new(),
                FieldErrors::default(),
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            with_status(
                departments_page(&console, &visitor, remote, frame, BTreeMap::new(), refusal.fields).await,
                refusal.http,
            )
        }
    }
}

async fn datasets(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let list = pb::ListDatasetsRequest {
        keyword: query(&request).get("q"),
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .exchange()
        .list_datasets(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(&visitor, "数据集", &status),
    };
    render(
        200,
        &DatasetsPage {
            frame: frame(&visitor, "数据集"),
            datasets: found
                .datasets
                .iter()
                .map(|d| DatasetRow {
                    code: d.dataset.clone(),
                    name: d.name.clone(),
                    provider: if d.provider_name.is_empty() {
                        d.provider_code.clone()
                    } else {
                        d.provider_name.clone()
                    },
                    kind: views::dataset_kind(d.kind).into(),
                    standing: views::standing(d.standing).into(),
                    records: d.record_count,
                    last_sequence: d.last_sequence,
                    last_published: views::time(d.last_published_at.as_ref()),
                })
                .collect(),
        },
    )
}

fn request_row(r: &pb::AccessRequest) -> RequestRow {
    let app = r.application.clone().unwrap_or_default();
    RequestRow {
        id: r.request_id.clone(),
        dataset: app.dataset.clone(),
        applicant: r.applicant_code.clone(),
        provider: r.provider_code.clone(),
        purpose: app.purpose.clone(),
        fields: if app.operations.is_empty() {
            app.fields.join("、")
        } else {
            app.operations.join("、")
        },
        state: views::request_state(r.state).into(),
        due_on: r.due_on.clone(),
        overdue: r.overdue,
        pending: r.state == pb::RequestState::Pending as i32,
    }
}

async fn requests(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let list = pb::ListRequestsRequest {
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .access()
        .list_requests(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(&visitor, "共享申请", &status),
    };
    render(
        200,
        &RequestsPage {
            frame: frame(&visitor, "共享申请"),
            requests: found.requests.iter().map(request_row).collect(),
        },
    )
}

/// What a person typed into the answer form, kept when the API refuses it.
#[derive(Default)]
struct Answer {
    granted: Option<Vec<String>>,
    masks: BTreeMap<String, String>,
    expires_on: String,
    note: String,
    reject_reason: String,
}

#[allow(clippy::too_many_arguments)]
async fn request_view(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    id: &str,
    mut frame: Frame,
    answer: Answer,
    errors: FieldErrors,
    status_code: u16,
) -> Response {
    let call = pb::GetRequestRequest {
        request_id: id.to_string(),
    };
    let r = match console
        .api
        .access()
        .get_request(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(visitor, "共享申请", &status),
    };
    let app = r.application.clone().unwrap_or_default();
    if frame.title.is_empty() {
        frame = self::frame(visitor, &format!("共享申请 {}", r.request_id));
    }
    let requested = if app.operations.is_empty() {
        app.fields.clone()
    } else {
        app.operations.clone()
    };
    render(
        status_code,
        &RequestPage {
            frame,
            scope: app.scope.clone(),
            business_system: app.business_system.clone(),
            period: format!("{} 至 {}", app.period_from, app.period_until),
            reason: r.reason.clone(),
            grant_id: r.grant_id.clone(),
            fields: requested
                .iter()
                .map(|f| FieldChoice {
                    name: f.clone(),
                    granted: answer.granted.as_ref().is_none_or(|g| g.contains(f)),
                    mask: answer.masks.get(f).cloned().unwrap_or_default(),
                })
                .collect(),
            expires_on: answer.expires_on,
            note: answer.note,
            reject_reason: answer.reject_reason,
            request: request_row(&r),
            errors,
        },
    )
}

async fn request_page(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let id = query(&request).get("id");
    request_view(
        &console,
        &visitor,
        remote,
        &id,
        Frame::default(),
        Answer::default(),
        FieldErrors::default(),
        200,
    )
    .await
}

/// A date (YYYY-MM-DD) as the end of that day in China Standard Time.
fn end_of_day_cst(date: &str) -> Option<prost_types::Timestamp> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let end = day.and_hms_opt(23, 59, 59)?;
    let tz = chrono::FixedOffset::east_opt(8 * 3600)?;
    let at = end.and_local_timezone(tz).single()?;
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

async fn approve(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let id = form.get("request_id");
    let requested = form.all("requested");
    let granted = form.all("field");
    let masks: BTreeMap<String, String> = requested
        .iter()
        .map(|f| (f.clone(), form.get(&format!("mask:{f}"))))
        .filter(|(_, rule)| !rule.is_empty())
        .collect();
    let answer = Answer {
        granted: Some(granted.clone()),
        masks: masks.clone(),
        expires_on: form.get("expires_on"),
        note: form.get("note"),
        reject_reason: String::new(),
    };
    let expires_at = if answer.expires_on.is_empty() {
        None
    } else {
        match end_of_day_cst(&answer.expires_on) {
            Some(t) => Some(t),
            None => {
                let mut frame = frame(&visitor, &format!("共享申请 {id}"));
                frame.error = "输入有误：授权截止日期应为 YYYY-MM-DD".into();
                let errors = FieldErrors(BTreeMap::from([(
                    "expires_at".to_string(),
                    "日期格式应为 YYYY-MM-DD".to_string(),
                )]));
                return request_view(&console, &visitor, remote, &id, frame, answer, errors, 400).await;
            }
        }
    };
    // Everything requested granted is sent as "as requested" (empty), as the CLI does.
    let (fields, operations) = if granted.len() == requested.len() {
        (Vec::new(), Vec::new())
    } else if form.get("kind") == "interface" {
        (Vec::new(), granted)
    } else {
        (granted, Vec::new())
    };
    let call = pb::ApproveRequestRequest {
        request_id: id.clone(),
        fields,
        masks: masks
            .iter()
            .map(|(field, rule)| pb::FieldMask {
                field: field.clone(),
                rule: rule.clone(),
            })
            .collect(),
        expires_at,
        note: answer.note.clone(),
        operations,
    };
    let mut frame = frame(&visitor, &format!("共享申请 {id}"));
    match console
        .api
        .access()
        .approve_request(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(r) => {
            frame.notice = format!("已同意，授权编号 {}。", r.get_ref().grant_id);
            request_view(
                &console,
                &visitor,
                remote,
                &id,
                frame,
                Answer::default(),
                FieldErrors::default(),
                200,
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            request_view(
                &console,
                &visitor,
                remote,
                &id,
                frame,
                answer,
                refusal.fields,
                refusal.http,
            )
            .await
        }
    }
}

async fn reject(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let id = form.get("request_id");
    let call = pb::RejectRequestRequest {
        request_id: id.clone(),
        reason: form.get("reason"),
    };
    let mut frame = frame(&visitor, &format!("共享申请 {id}"));
    match console
        .api
        .access()
        .reject_request(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(_) => {
            frame.notice = "已拒绝，理由已告知申请方。".into();
            request_view(
                &console,
                &visitor,
                remote,
                &id,
                frame,
                Answer::default(),
                FieldErrors::default(),
                200,
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            let answer = Answer {
                reject_reason: form.get("reason"),
                ..Answer::default()
            };
            request_view(
                &console,
                &visitor,
                remote,
                &id,
                frame,
                answer,
                refusal.fields,
                refusal.http,
            )
            .await
        }
    }
}

async fn grants_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    frame: Frame,
    errors: FieldErrors,
    failed: String,
    status_code: u16,
) -> Response {
    let list = pb::ListGrantsRequest {
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .access()
        .list_grants(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(visitor, "授权", &status),
    };
    render(
        status_code,
        &GrantsPage {
            frame,
            grants: found
                .grants
                .iter()
                .map(|g| GrantRow {
                    id: g.grant_id.clone(),
                    dataset: g.dataset.clone(),
                    provider: g.provider_code.clone(),
                    grantee: g.grantee_code.clone(),
                    purpose: g.purpose.clone(),
                    fields: if g.operations.is_empty() {
                        g.fields.join("、")
                    } else {
                        g.operations.join("、")
                    },
                    masks: g
                        .masks
                        .iter()
                        .map(|m| format!("{}：{}", m.field, views::mask_rule(&m.rule)))
                        .collect::<Vec<_>>()
                        .join("；"),
                    expires: views::time(g.expires_at.as_ref()),
                    state: views::grant_state(g.state).into(),
                    active: g.state == pb::GrantState::Active as i32,
                    revoke_reason: g.revoke_reason.clone(),
                })
                .collect(),
            errors,
            failed,
        },
    )
}

async fn grants(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let frame = frame(&visitor, "授权");
    grants_page(
        &console,
        &visitor,
        remote,
        frame,
        FieldErrors::default(),
        String::new(),
        200,
    )
    .await
}

async fn revoke(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let id = form.get("grant_id");
    let call = pb::RevokeGrantRequest {
        grant_id: id.clone(),
        reason: form.get("reason"),
    };
    let mut frame = frame(&visitor, "授权");
    match console
        .api
        .access()
        .revoke_grant(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(g) => {
            frame.notice = format!("已撤销授权 {}。", g.get_ref().grant_id);
            grants_page(
                &console,
                &visitor,
                remote,
                frame,
                FieldErrors::default(),
                String::new(),
                200,
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            grants_page(&console, &visitor, remote, frame, refusal.fields, id, refusal.http).await
        }
    }
}

async fn reports_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    frame: Frame,
    errors: FieldErrors,
    failed: String,
    status_code: u16,
) -> Response {
    let list = pb::ListReportsRequest {
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .access()
        .list_reports(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(visitor, "纠错", &status),
    };
    let me = visitor.principal.to_string();
    render(
        status_code,
        &ReportsPage {
            frame,
            reports: found
                .reports
                .iter()
                .map(|r| ReportRow {
                    id: r.report_id.clone(),
                    dataset: r.dataset.clone(),
                    reporter: r.reporter_code.clone(),
                    provider: r.provider_code.clone(),
                    description: r.description.clone(),
                    state: views::report_state(r.state).into(),
                    reported: views::time(r.reported_at.as_ref()),
                    resolution: r.resolution.clone(),
                    // The provider resolves (the API decides; the form is offered where it may).
                    resolvable: r.state == pb::ReportState::Open as i32 && r.provider_code == me,
                })
                .collect(),
            errors,
            failed,
        },
    )
}

async fn reports(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let frame = frame(&visitor, "纠错");
    reports_page(
        &console,
        &visitor,
        remote,
        frame,
        FieldErrors::default(),
        String::new(),
        200,
    )
    .await
}

async fn resolve_report(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, form) = parts(&request);
    let id = form.get("report_id");
    let call = pb::ResolveReportRequest {
        report_id: id.clone(),
        resolution: form.get("resolution").parse().unwrap_or(0),
        reason: form.get("reason"),
        corrected_sequence: form.get("corrected_sequence").parse().unwrap_or(0),
    };
    let mut frame = frame(&visitor, "纠错");
    match console
        .api
        .access()
        .resolve_report(as_caller(call, &visitor.principal, remote))
        .await
    {
        Ok(r) => {
            frame.notice = format!(
                "纠错 {} 已处理：{}。",
                r.get_ref().report_id,
                views::report_state(r.get_ref().state)
            );
            reports_page(
                &console,
                &visitor,
                remote,
                frame,
                FieldErrors::default(),
                String::new(),
                200,
            )
            .await
        }
        Err(status) => {
            let refusal = views::refusal(&status);
            frame.error = refusal.message;
            reports_page(&console, &visitor, remote, frame, refusal.fields, id, refusal.http).await
        }
    }
}

async fn audit_page(
    console: &Console,
    visitor: &Visitor,
    remote: SocketAddr,
    q: &Form,
    mut page: AuditPage,
) -> Response {
    let list = pb::ListEventsRequest {
        actor: q.get("actor"),
        action: q.get("action"),
        target: q.get("target"),
        page_size: PAGE,
        ..Default::default()
    };
    let found = match console
        .api
        .audit()
        .list_events(as_caller(list, &visitor.principal, remote))
        .await
    {
        Ok(found) => found.into_inner(),
        Err(status) => return refused(visitor, "审计日志", &status),
    };
    page.actor = q.get("actor");
    page.action = q.get("action");
    page.target = q.get("target");
    page.events = found
        .events
        .iter()
        .map(|e| EventRow {
            sequence: e.sequence,
            at: views::time(e.at.as_ref()),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            outcome: e.outcome.clone(),
            ok: e.outcome == "OK",
        })
        .collect();
    render(200, &page)
}

async fn audit(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let page = AuditPage {
        frame: frame(&visitor, "审计日志"),
        actor: String::new(),
        action: String::new(),
        target: String::new(),
        events: Vec::new(),
        verified: String::new(),
        intact: false,
    };
    audit_page(&console, &visitor, remote, &query(&request), page).await
}

async fn verify(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let answer = match console
        .api
        .audit()
        .verify_chain(as_caller(
            pb::VerifyChainRequest { anchor: None },
            &visitor.principal,
            remote,
        ))
        .await
    {
        Ok(a) => a.into_inner(),
        Err(status) => return refused(&visitor, "审计日志", &status),
    };
    let verified = if answer.intact {
        format!(
            "哈希链完整：已校验 {} 条（至第 {} 条）。",
            answer.verified, answer.head_sequence
        )
    } else {
        format!("哈希链断裂：第 {} 条，{}", answer.broken_sequence, answer.broken_reason)
    };
    let page = AuditPage {
        frame: frame(&visitor, "审计日志"),
        actor: String::new(),
        action: String::new(),
        target: String::new(),
        events: Vec::new(),
        verified,
        intact: answer.intact,
    };
    audit_page(&console, &visitor, remote, &Form::default(), page).await
}

fn parts_chart(card: &pb::Scorecard, title: &str) -> String {
    // Parts are fractions (0–1); the chart, like the score, reads 0–100.
    let p = card.parts.unwrap_or_default();
    let pct = |v: Option<f64>| v.map(|v| v * 100.0);
    views::bars_svg(
        &[
            Bar {
                label: "目录".into(),
                value: pct(p.catalogue),
            },
            Bar {
                label: "及时".into(),
                value: pct(p.timeliness),
            },
            Bar {
                label: "质量".into(),
                value: pct(p.quality),
            },
            Bar {
                label: "响应".into(),
                value: pct(p.responsiveness),
            },
            Bar {
                label: "使用".into(),
                value: pct(p.r#use),
            },
        ],
        title,
    )
}

async fn scorecard(State(console): State<Console>, request: Request) -> Response {
    let (visitor, remote, _) = parts(&request);
    let q = query(&request);
    let ranking = console
        .api
        .evaluation()
        .get_ranking(as_caller(
            pb::GetRankingRequest {
                from: q.get("from"),
                to: q.get("to"),
            },
            &visitor.principal,
            remote,
        ))
        .await;
    let (period, ranked) = match ranking {
        Ok(r) => {
            let r = r.into_inner();
            (format!("{} 至 {}", r.from, r.to), r.departments)
        }
        Err(status) => return refused(&visitor, "共享评价", &status),
    };
    let ranking_chart = views::bars_svg(
        &ranked
            .iter()
            .map(|d| Bar {
                label: d.name.chars().take(9).collect(),
                value: Some(d.score),
            })
            .collect::<Vec<_>>(),
        "综合得分排名",
    );
    let rows = ranked
        .iter()
        .map(|d| RankRow {
            rank: d.rank,
            code: d.department.clone(),
            name: d.name.clone(),
            score: format!("{:.1}", d.score),
            chart: d
                .scorecard
                .as_ref()
                .map(|c| parts_chart(c, &format!("{} 分项得分", d.name)))
                .unwrap_or_default(),
        })
        .collect();
    render(
        200,
        &ScorecardPage {
            frame: frame(&visitor, "共享评价"),
            period,
            ranking_chart,
            rows,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_fields_and_decode_utf8() {
        let form = Form::parse("field=a&field=b&reason=%E4%B8%8D%E5%AE%8C%E6%95%B4+x&csrf=1".as_bytes());
        assert_eq!(form.all("field"), vec!["a", "b"]);
        assert_eq!(form.get("reason"), "不完整 x");
        assert_eq!(form.get("missing"), "");
    }

    #[test]
    fn an_expiry_date_ends_that_day_in_china() {
        let t = end_of_day_cst("2026-12-31").expect("a date");
        assert_eq!(t.seconds, 1_798_732_799);
        assert_eq!(end_of_day_cst("2026-13-01"), None);
        assert_eq!(end_of_day_cst("明天"), None);
    }

    #[test]
    fn versions_compare_row_by_row() {
        let entry = |summary: &str, items: &[&str]| pb::CatalogEntry {
            content: Some(pb::EntryContent {
                name: "法人".into(),
                summary: summary.into(),
                items: items
                    .iter()
                    .map(|n| pb::DataItem {
                        name: (*n).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rows = compare(&entry("旧", &["名称"]), &entry("新", &["名称", "住所"]));
        let changed: Vec<_> = rows.iter().filter(|r| r.changed).map(|r| r.label.as_str()).collect();
        assert_eq!(changed, vec!["信息资源摘要", "信息项：住所"]);
    }
}
