//! The web console (issue #13), as a browser meets it: HTTPS on the console's own port without a
//! client certificate, signed in with a one-time link; every page and form, the CSRF check, and
//! the access matrix (a department cannot open or post another's pages). The console calls the
//! same services as gRPC, so its answers are the API's: the tests check both sides.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use xinqiao_hub::pki;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::console_service_client::ConsoleServiceClient;
use xinqiao_tests::*;

const GUARD: Duration = Duration::from_secs(20);
const PROVIDER: &str = POLICE;
const APPLICANT: &str = HRSS;
const STRANGER: &str = HEALTH;

/// A hub whose console has a port of its own.
async fn hub_with_console(backend: Backend) -> TestHub {
    TestHub::start_with(backend, |config| {
        config.console.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await
}

/// A sign-in link for the identity of `files`, asked for over gRPC with its certificate.
async fn link(hub: &TestHub, files: pki::CertFiles) -> pb::SignInLink {
    let mut client = ConsoleServiceClient::new(hub.channel(files).await);
    ok(client.create_sign_in_link(pb::CreateSignInLinkRequest {}).await)
}

fn console_addr(link: &pb::SignInLink) -> SocketAddr {
    link.console_url
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the link names the console's address: {link:?}"))
}

struct Page {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Page {
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("the page has a form with a CSRF token") + marker.len();
        self.body[start..start + 64].to_string()
    }

    fn has(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// The value of a form's hidden field.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name}: {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').expect("the value ends") + start;
        self.body[start..end].to_string()
    }
}

/// A browser: HTTPS without a client certificate (or with one), one cookie jar.
struct Browser {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    cookie: Option<String>,
    /// The cookie a sign-in page sets for its button.
    sign_in_cookie: Option<String>,
}

impl Browser {
    fn new(hub: &TestHub, addr: SocketAddr) -> Browser {
        let ca = std::fs::read(pki::ca_cert_path(&hub.pki_dir())).expect("CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Browser {
            addr,
            tls: Arc::new(tls),
            cookie: None,
            sign_in_cookie: None,
        }
    }

    /// A browser presenting the certificate in `files`.
    fn with_certificate(hub: &TestHub, addr: SocketAddr, files: &pki::CertFiles) -> Browser {
        let ca = std::fs::read_to_string(pki::ca_cert_path(&hub.pki_dir())).expect("CA");
        let tls = xinqiao_hub::tls::upstream_client_config(&ca, &files.cert, &files.key).expect("client TLS");
        Browser {
            addr,
            tls: Arc::new(tls),
            cookie: None,
            sign_in_cookie: None,
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tcp = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = connector.connect(name, tcp).await.expect("TLS");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1");
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        let mut cookies = Vec::new();
        if let Some(cookie) = &self.cookie {
            cookies.push(format!("__Host-xinqiao-console={cookie}"));
        }
        if let Some(cookie) = &self.sign_in_cookie {
            cookies.push(format!("__Host-xinqiao-sign-in={cookie}"));
        }
        if !cookies.is_empty() {
            request = request.header("cookie", cookies.join("; "));
        }
        let body = match form {
            Some(fields) => {
                request = request.header("content-type", "application/x-www-form-urlencoded");
                let mut encoded = form_urlencoded_body(fields);
                if encoded.is_empty() {
                    encoded.push('x');
                }
                encoded
            }
            None => String::new(),
        };
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let response = tokio::time::timeout(GUARD, sender.send_request(request))
            .await
            .expect("the console answers in time")
            .expect("an HTTP answer");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all("set-cookie") {
            let value = value.to_str().expect("cookie text");
            if let Some(rest) = value.strip_prefix("__Host-xinqiao-console=") {
                let secret = rest.split(';').next().unwrap_or_default();
                self.cookie = (!secret.is_empty()).then(|| secret.to_string());
            }
            if let Some(rest) = value.strip_prefix("__Host-xinqiao-sign-in=") {
                let nonce = rest.split(';').next().unwrap_or_default();
                self.sign_in_cookie = (!nonce.is_empty()).then(|| nonce.to_string());
            }
        }
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).expect("UTF-8"),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(fields)).await
    }

    /// Opens a sign-in link and presses its button: the answer to the button.
    async fn use_link(&mut self, path: &str) -> Page {
        let page = self.get(path).await;
        assert_eq!(page.status, 200, "a sign-in link opens its page: {}", page.body);
        let (token, nonce) = (page.hidden("token"), page.hidden("nonce"));
        self.post("/console/sign-in", &[("token", &token), ("nonce", &nonce)])
            .await
    }

    /// Opens a sign-in link, presses its button and follows the redirect.
    async fn sign_in(&mut self, link: &pb::SignInLink) -> Page {
        let opened = self.use_link(&link.path).await;
        assert_eq!(opened.status, 303, "a good link signs in: {}", opened.body);
        assert_eq!(
            opened.headers.get("location").map(|l| l.to_str().ok()),
            Some(Some("/console/"))
        );
        self.get("/console/").await
    }
}

fn form_urlencoded_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn signed_in_admin(hub: &TestHub) -> Browser {
    let link = link(hub, pki::admin_files(&hub.pki_dir())).await;
    let mut browser = Browser::new(hub, console_addr(&link));
    let home = browser.sign_in(&link).await;
    assert_eq!(home.status, 200, "{}", home.body);
    browser
}

async fn signed_in_dept(hub: &TestHub, code: &str) -> Browser {
    let link = link(hub, pki::department_files(&hub.pki_dir(), code)).await;
    let mut browser = Browser::new(hub, console_addr(&link));
    let home = browser.sign_in(&link).await;
    assert_eq!(home.status, 200, "{}", home.body);
    browser
}

/// An entry of `provider`, submitted for review.
async fn submitted(hub: &TestHub, provider: &str, name: &str) -> String {
    let mut dept = hub.dept(provider).await;
    let code = ok(dept.create_entry(create(content(name, "101", "人口基础信息"))).await).resource_code;
    ok(dept.submit_entry(submit(&code)).await);
    code
}

async fn entry_state(hub: &TestHub, code: &str) -> i32 {
    ok(hub.admin().await.get_entry(get(code, 0)).await).state
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sign_in_links_are_single_use_bound_and_audited_sqlite() {
    sign_in_links_are_single_use_bound_and_audited(Backend::Sqlite).await;
}

#[tokio::test]
async fn sign_in_links_are_single_use_bound_and_audited_postgres() {
    if let Some(backend) = Backend::postgres("console sign-in") {
        sign_in_links_are_single_use_bound_and_audited(backend).await;
    }
}

async fn sign_in_links_are_single_use_bound_and_audited(backend: Backend) {
    let hub = hub_with_console(backend).await;
    let admin_link = link(&hub, pki::admin_files(&hub.pki_dir())).await;
    assert_eq!(admin_link.identity, format!("urn:xinqiao:admin:{ADMIN}"));
    assert!(admin_link.path.starts_with("/console/sign-in?token="));
    let addr = console_addr(&admin_link);
    assert_ne!(addr, hub.addr, "the console has a port of its own");

    // Without a session: asked to sign in, nothing shown.
    let mut browser = Browser::new(&hub, addr);
    let page = browser.get("/console/requests").await;
    assert_eq!(page.status, 401);
    assert!(page.has("xinqiao console --as admin"));

    // Opening the link uses nothing (a link preview does not burn it): only its button does.
    for _ in 0..2 {
        let page = Browser::new(&hub, addr).get(&admin_link.path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.has("登录控制台"));
    }
    // The button's form from anywhere but the page (no page cookie) uses nothing either.
    let mut forger = Browser::new(&hub, addr);
    let token = admin_link.path.rsplit('=').next().expect("token").to_string();
    let forged = forger
        .post("/console/sign-in", &[("token", &token), ("nonce", &"0".repeat(64))])
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(forger.cookie, None);

    // The link signs in once; the cookie is Secure, HttpOnly, SameSite=Strict.
    let opened = browser.use_link(&admin_link.path).await;
    assert_eq!(opened.status, 303, "{}", opened.body);
    let cookie = opened
        .headers
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .expect("text");
    for attribute in [
        "__Host-xinqiao-console=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert_eq!(
        opened.headers.get("referrer-policy").map(|v| v.as_bytes()),
        Some(&b"no-referrer"[..])
    );
    let home = browser.get("/console/").await;
    assert_eq!(home.status, 200);
    assert!(home.has("平台管理员"));
    assert!(home.has("default-src") || home.headers.get("content-security-policy").is_some());

    let mut second = Browser::new(&hub, addr);
    let again = second.use_link(&admin_link.path).await;
    assert_eq!(again.status, 403, "a used link signs nobody in");
    assert!(again.has("登录链接无效"));
    assert_eq!(second.cookie, None);
    for bad in [
        "/console/sign-in",
        "/console/sign-in?token=x",
        "/console/sign-in?token=%00%FF%3Cscript%3E",
    ] {
        assert_eq!(second.get(bad).await.status, 403, "{bad}");
    }
    assert!(!second.get(bad_token_path()).await.has("<script>"));

    // A department's link signs in as that department, not as the admin.
    let dept = link(&hub, pki::department_files(&hub.pki_dir(), PROVIDER)).await;
    assert_eq!(dept.identity, format!("urn:xinqiao:dept:{PROVIDER}"));
    let mut dept_browser = Browser::new(&hub, addr);
    let home = dept_browser.sign_in(&dept).await;
    assert!(home.has(PROVIDER));
    assert!(!home.has("平台管理员"));

    // Minting a link is audited like any change, as the caller.
    let events = ok(hub
        .audit_admin()
        .await
        .list_events(pb::ListEventsRequest {
            action: "CreateSignInLink".into(),
            page_size: 10,
            ..Default::default()
        })
        .await)
    .events;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].actor, format!("admin:{ADMIN}"));
    assert_eq!(events[1].actor, PROVIDER);
    assert!(events.iter().all(|e| e.outcome == "OK"));

    // Signing out ends the session on the server, not only in the browser.
    let kept = browser.cookie.clone();
    let home = browser.get("/console/").await;
    let out = browser.post("/console/sign-out", &[("csrf", &home.csrf())]).await;
    assert_eq!(out.status, 200);
    assert_eq!(browser.cookie, None);
    browser.cookie = kept;
    assert_eq!(browser.get("/console/").await.status, 401, "the old cookie is dead");
    hub.finish().await;
}

fn bad_token_path() -> &'static str {
    "/console/sign-in?token=%3Cscript%3E"
}

#[tokio::test]
async fn an_expired_link_signs_nobody_in() {
    let hub = TestHub::start_with(Backend::Sqlite, |config| {
        config.console.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.console.link_ttl_secs = Some(30);
    })
    .await;
    let link = link(&hub, pki::admin_files(&hub.pki_dir())).await;
    // Moved into the past behind the hub's back, as 30 s of waiting would.
    let changed = hub
        .execute_sql("UPDATE console_sign_in_tokens SET expires_at = '2000-01-01T00:00:00+00:00'")
        .await;
    assert_eq!(changed, 1);
    let mut browser = Browser::new(&hub, console_addr(&link));
    assert_eq!(browser.use_link(&link.path).await.status, 403);
    assert_eq!(browser.cookie, None);
    hub.finish().await;
}

#[tokio::test]
async fn a_client_certificate_signs_in_on_the_hubs_port_and_the_consoles() {
    let hub = hub_with_console(Backend::Sqlite).await;
    let files = pki::admin_files(&hub.pki_dir());
    let link = link(&hub, files.clone()).await;
    for addr in [hub.addr, console_addr(&link)] {
        let mut browser = Browser::with_certificate(&hub, addr, &files);
        let home = browser.get("/console/").await;
        assert_eq!(home.status, 200, "{addr}: {}", home.body);
        assert!(home.has("平台管理员"));
        assert!(browser.cookie.is_some(), "a session carries the form tokens");
        // The certificate's session works for forms too.
        let verified = browser.post("/console/audit/verify", &[("csrf", &home.csrf())]).await;
        assert_eq!(verified.status, 200, "{}", verified.body);
        assert!(verified.has("哈希链完整"));
    }
    // A department's certificate is that department, whatever cookie the browser holds.
    let mut admin = signed_in_admin(&hub).await;
    let kept = admin.cookie.clone();
    let mut dept = Browser::with_certificate(&hub, hub.addr, &pki::department_files(&hub.pki_dir(), PROVIDER));
    dept.cookie = kept;
    let home = dept.get("/console/").await;
    assert!(home.has(PROVIDER) && !home.has("平台管理员"));
    assert_ne!(dept.cookie, admin.cookie);
    let _ = admin.get("/console/").await;

    // A peer hub's certificate (federation only) signs no one in, and opens no session.
    let peer = pki::issue(
        &hub.pki_dir(),
        &xinqiao_domain::identity::Principal::Hub("330100".into()),
    )
    .expect("a hub certificate");
    let mut peer_hub = Browser::with_certificate(&hub, hub.addr, &peer);
    let refused = peer_hub.get("/console/").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.has("330100") && refused.has("不能登录"), "{}", refused.body);
    assert!(peer_hub.cookie.is_none());
    hub.finish().await;
}

#[tokio::test]
async fn every_page_renders_for_the_admin() {
    let hub = hub_with_console(Backend::Sqlite).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(PROVIDER, "居民联系信息", pb::ShareType::Conditional)
        .await;
    let request = hub.apply(APPLICANT, &dataset.dataset, &["resident_id", "name"]).await;
    let mut admin = signed_in_admin(&hub).await;
    let pages = [
        ("/console/", "当前身份"),
        ("/console/catalog", "资源目录"),
        ("/console/catalog?q=%E5%B1%85%E6%B0%91&share_type=2", "居民联系信息"),
        (
            "/console/catalog?open_type=3&update_cycle=2&format=3",
            "value=\"3\" selected>不予开放",
        ),
        (&format!("/console/entry?code={}", dataset.dataset) as &str, "版本对照"),
        ("/console/review", "审核队列"),
        ("/console/departments", "登记部门"),
        ("/console/datasets", "居民联系信息"),
        ("/console/requests", &request.request_id as &str),
        (
            &format!("/console/request?id={}", request.request_id) as &str,
            "最低生活保障资格核验",
        ),
        ("/console/grants", "授权"),
        ("/console/reports", "纠错"),
        ("/console/audit", "RequestAccess"),
        ("/console/audit?action=RequestAccess", HRSS),
        ("/console/scorecard", "<svg"),
        ("/console/console.css", "font"),
    ];
    for (path, expected) in pages {
        let page = admin.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.has(expected), "{path} shows {expected}: {}", page.body);
        assert!(
            !page.has("http://") && !page.has("https://"),
            "{path}: nothing from elsewhere"
        );
    }
    let filtered = admin.get("/console/catalog?q=%E4%B8%8D%E5%AD%98%E5%9C%A8").await;
    assert!(filtered.has("没有符合条件的条目"));
    hub.finish().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_change_nothing() {
    let hub = hub_with_console(Backend::Sqlite).await;
    let code = submitted(&hub, PROVIDER, "法人登记信息").await;
    let mut admin = signed_in_admin(&hub).await;
    for csrf in ["", "0000000000000000000000000000000000000000000000000000000000000000"] {
        let page = admin
            .post(
                "/console/review/publish",
                &[("csrf", csrf), ("code", &code), ("version", "2")],
            )
            .await;
        assert_eq!(page.status, 403);
        assert!(page.has("CSRF"));
    }
    // Another session's token is not this one's.
    let mut other = signed_in_admin(&hub).await;
    let foreign = other.get("/console/review").await.csrf();
    let page = admin
        .post("/console/review/publish", &[("csrf", &foreign), ("code", &code)])
        .await;
    assert_eq!(page.status, 403);
    assert_eq!(entry_state(&hub, &code).await, pb::EntryState::PendingReview as i32);
    hub.finish().await;
}

#[tokio::test]
async fn the_admin_reviews_entries_in_the_console() {
    let hub = hub_with_console(Backend::Sqlite).await;
    let first = submitted(&hub, PROVIDER, "法人登记信息").await;
    let second = submitted(&hub, PROVIDER, "个体工商户信息").await;
    let mut admin = signed_in_admin(&hub).await;
    let queue = admin.get("/console/review").await;
    assert!(queue.has(&first) && queue.has(&second));
    let csrf = queue.csrf();

    // A return needs a reason: the API's error is shown beside the field.
    let page = admin
        .post(
            "/console/review/return",
            &[("csrf", &csrf), ("code", &first), ("reason", "")],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.has("class=\"field-error\""), "{}", page.body);
    assert_eq!(entry_state(&hub, &first).await, pb::EntryState::PendingReview as i32);

    let page = admin
        .post(
            "/console/review/return",
            &[
                ("csrf", &csrf),
                ("code", &first),
                ("reason", "摘要不完整，请补充信息项说明"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已退回"));
    let returned = ok(hub.admin().await.get_entry(get(&first, 0)).await);
    assert_eq!(returned.state, pb::EntryState::Returned as i32);
    assert_eq!(returned.state_reason, "摘要不完整，请补充信息项说明");

    let page = admin
        .post(
            "/console/review/publish",
            &[("csrf", &csrf), ("code", &second), ("version", "2")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已发布"));
    assert_eq!(entry_state(&hub, &second).await, pb::EntryState::Published as i32);

    // A stale version is the API's ABORTED, shown as such.
    let third = submitted(&hub, PROVIDER, "企业年报信息").await;
    let page = admin
        .post(
            "/console/review/publish",
            &[("csrf", &csrf), ("code", &third), ("version", "1")],
        )
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.has("已被他人修改"));

    // The entry page compares versions side by side and marks what changed.
    let mut dept = hub.dept(PROVIDER).await;
    let mut content = content("法人登记信息", "101", "人口基础信息，含住所");
    content.items.push(item("住所", "字符型", 200));
    ok(dept.update_entry(update(&first, content)).await);
    let page = admin.get(&format!("/console/entry?code={first}&a=1&b=4")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("class=\"changed\""));
    assert!(page.has("信息项：住所"));

    // The trail names the admin for each decision, as for a gRPC call.
    let events = ok(hub
        .audit_admin()
        .await
        .list_events(pb::ListEventsRequest {
            actor: format!("admin:{ADMIN}"),
            page_size: 100,
            ..Default::default()
        })
        .await)
    .events;
    let actions: Vec<_> = events
        .iter()
        .filter(|e| e.action != "CreateSignInLink")
        .map(|e| (e.action.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("ReturnEntry", first.as_str(), "INVALID_ARGUMENT"),
            ("ReturnEntry", first.as_str(), "OK"),
            ("PublishEntry", second.as_str(), "OK"),
            ("PublishEntry", third.as_str(), "ABORTED"),
        ]
    );
    // Each says it came through the console.
    for event in events.iter().filter(|e| e.action.ends_with("Entry")) {
        let detail: serde_json::Value = serde_json::from_str(&event.detail).expect("JSON detail");
        assert_eq!(detail["via"], "console", "{event:?}");
    }
    hub.finish().await;
}

#[tokio::test]
async fn departments_are_registered_and_deactivated_in_the_console() {
    let hub = hub_with_console(Backend::Sqlite).await;
    let mut admin = signed_in_admin(&hub).await;
    let csrf = admin.get("/console/departments").await.csrf();
    let page = admin
        .post(
            "/console/departments/register",
            &[
                ("csrf", &csrf),
                ("code", "11330100MB0009XXXX"),
                ("name", "市统计局"),
                ("division_code", "330100"),
                ("contact", "0571-1"),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.has("class=\"field-error\""));
    assert!(page.has("value=\"市统计局\""), "what was typed is kept");

    let code = uscc(9);
    let page = admin
        .post(
            "/console/departments/register",
            &[
                ("csrf", &csrf),
                ("code", &code),
                ("name", "市统计局"),
                ("division_code", "330100"),
                ("contact", "0571-1"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已登记"));
    let page = admin
        .post(
            "/console/departments/deactivate",
            &[("csrf", &csrf), ("code", &code), ("reason", "机构改革")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已停用"));
    let stored = hub
        .store()
        .get_department(&code)
        .await
        .expect("read")
        .expect("registered");
    assert!(!stored.active);
    hub.finish().await;
}

#[tokio::test]
async fn a_provider_answers_a_request_with_masks_and_revokes_the_grant_sqlite() {
    a_provider_answers_a_request_with_masks_and_revokes_the_grant(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_provider_answers_a_request_with_masks_and_revokes_the_grant_postgres() {
    if let Some(backend) = Backend::postgres("console answers") {
        a_provider_answers_a_request_with_masks_and_revokes_the_grant(backend).await;
    }
}

async fn a_provider_answers_a_request_with_masks_and_revokes_the_grant(backend: Backend) {
    let hub = hub_with_console(backend).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(PROVIDER, "居民联系信息", pb::ShareType::Conditional)
        .await;
    let request = hub
        .apply(APPLICANT, &dataset.dataset, &["resident_id", "name", "mobile"])
        .await;
    let mut provider = signed_in_dept(&hub, PROVIDER).await;
    let path = format!("/console/request?id={}", request.request_id);
    let page = provider.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("待审批"));
    let csrf = page.csrf();
    let id = request.request_id.as_str();
    let until = (chrono::Utc::now() + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();

    // An unknown masking rule: the API's field violation, beside the masks.
    let page = provider
        .post(
            "/console/request/approve",
            &[
                ("csrf", &csrf),
                ("request_id", id),
                ("requested", "resident_id"),
                ("requested", "name"),
                ("requested", "mobile"),
                ("field", "resident_id"),
                ("field", "name"),
                ("mask:resident_id", "scramble"),
                ("expires_on", &until),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.has("id=\"masks-error\""), "{}", page.body);
    assert!(page.has("scramble"), "what was typed is kept");
    // A date that is not one: beside the expiry, the API not called.
    let page = provider
        .post(
            "/console/request/approve",
            &[
                ("csrf", &csrf),
                ("request_id", id),
                ("requested", "name"),
                ("field", "name"),
                ("expires_on", "下个月"),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("id=\"expires-error\""));
    // An expiry in the past is the API's refusal.
    let page = provider
        .post(
            "/console/request/approve",
            &[
                ("csrf", &csrf),
                ("request_id", id),
                ("requested", "name"),
                ("field", "name"),
                ("expires_on", "2020-01-01"),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("id=\"expires-error\""), "{}", page.body);
    assert_eq!(
        ok(hub.access(PROVIDER).await.get_request(get_request(id)).await).state,
        pb::RequestState::Pending as i32
    );

    let page = provider
        .post(
            "/console/request/approve",
            &[
                ("csrf", &csrf),
                ("request_id", id),
                ("requested", "resident_id"),
                ("requested", "name"),
                ("requested", "mobile"),
                ("field", "resident_id"),
                ("field", "name"),
                ("mask:resident_id", "resident_id"),
                ("mask:name", "name"),
                ("expires_on", &until),
                ("note", "仅限低保资格核验"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已同意"));
    let answered = ok(hub.access(PROVIDER).await.get_request(get_request(id)).await);
    assert_eq!(answered.state, pb::RequestState::Approved as i32);
    let grant = ok(hub
        .access(APPLICANT)
        .await
        .get_grant(get_grant(&answered.grant_id))
        .await);
    assert_eq!(grant.fields, ["resident_id", "name"]);
    let mut masks: Vec<_> = grant
        .masks
        .iter()
        .map(|m| (m.field.as_str(), m.rule.as_str()))
        .collect();
    masks.sort();
    assert_eq!(masks, [("name", "name"), ("resident_id", "resident_id")]);
    let expires =
        chrono::DateTime::from_timestamp(grant.expires_at.as_ref().expect("expiry").seconds, 0).expect("time");
    assert_eq!(
        expires
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("CST"))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        format!("{until} 23:59:59")
    );

    // Both sides see the grant; the provider revokes it (a reason is required).
    let mut applicant = signed_in_dept(&hub, APPLICANT).await;
    let page = applicant.get("/console/grants").await;
    assert!(page.has(&grant.grant_id) && page.has("身份证号脱敏"));
    let page = provider.get("/console/grants").await;
    let csrf = page.csrf();
    let page = provider
        .post(
            "/console/grants/revoke",
            &[("csrf", &csrf), ("grant_id", &grant.grant_id), ("reason", "")],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.has("class=\"field-error\""), "{}", page.body);
    let page = provider
        .post(
            "/console/grants/revoke",
            &[
                ("csrf", &csrf),
                ("grant_id", &grant.grant_id),
                ("reason", "核验任务结束"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已撤销"));
    let revoked = ok(hub.access(APPLICANT).await.get_grant(get_grant(&grant.grant_id)).await);
    assert_eq!(revoked.state, pb::GrantState::Revoked as i32);
    assert_eq!(revoked.revoke_reason, "核验任务结束");
    hub.finish().await;
}

#[tokio::test]
async fn a_request_is_rejected_with_its_reason() {
    let hub = hub_with_console(Backend::Sqlite).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(PROVIDER, "居民联系信息", pb::ShareType::Conditional)
        .await;
    let request = hub.apply(APPLICANT, &dataset.dataset, &["name"]).await;
    let mut provider = signed_in_dept(&hub, PROVIDER).await;
    let csrf = provider
        .get(&format!("/console/request?id={}", request.request_id))
        .await
        .csrf();
    let page = provider
        .post(
            "/console/request/reject",
            &[("csrf", &csrf), ("request_id", &request.request_id), ("reason", "")],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("id=\"reason-error\""), "{}", page.body);
    let page = provider
        .post(
            "/console/request/reject",
            &[
                ("csrf", &csrf),
                ("request_id", &request.request_id),
                ("reason", "用途与共享条件不符"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("已拒绝"));
    let answered = ok(hub
        .access(APPLICANT)
        .await
        .get_request(get_request(&request.request_id))
        .await);
    assert_eq!(answered.state, pb::RequestState::Rejected as i32);
    assert_eq!(answered.reason, "用途与共享条件不符");
    hub.finish().await;
}

/// The access matrix: what the API refuses a department, the console refuses it too — pages and
/// forms alike — and the refusal is audited as the department's.
#[tokio::test]
async fn a_department_cannot_open_or_post_anothers_pages() {
    let hub = hub_with_console(Backend::Sqlite).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(PROVIDER, "居民联系信息", pb::ShareType::Conditional)
        .await;
    let request = hub.apply(APPLICANT, &dataset.dataset, &["resident_id", "name"]).await;
    let (_, grant) = hub
        .grant(
            PROVIDER,
            APPLICANT,
            &dataset.dataset,
            &["resident_id", "name"],
            approval(&[], &[]),
        )
        .await;
    let code = submitted(&hub, PROVIDER, "法人登记信息").await;

    // A registered department with a certificate of its own.
    ok(hub
        .admin()
        .await
        .register_department(register_request(STRANGER, "市卫生健康委员会"))
        .await);
    let _ = hub.issue_dept(STRANGER).await;
    let mut stranger = signed_in_dept(&hub, STRANGER).await;
    let csrf = stranger.get("/console/").await.csrf();
    let page = stranger
        .get(&format!("/console/request?id={}", request.request_id))
        .await;
    assert!(matches!(page.status, 403 | 404), "{}: {}", page.status, page.body);
    assert!(!page.has("最低生活保障资格核验"), "nothing of the request is shown");
    let posts: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "/console/request/approve",
            vec![
                ("request_id", &request.request_id),
                ("requested", "name"),
                ("field", "name"),
            ],
        ),
        (
            "/console/request/reject",
            vec![("request_id", &request.request_id), ("reason", "不同意")],
        ),
        (
            "/console/grants/revoke",
            vec![("grant_id", &grant.grant_id), ("reason", "撤销")],
        ),
        ("/console/review/publish", vec![("code", &code)]),
        ("/console/review/return", vec![("code", &code), ("reason", "退回")]),
        (
            "/console/departments/deactivate",
            vec![("code", PROVIDER), ("reason", "停用")],
        ),
    ];
    for (path, mut fields) in posts {
        fields.push(("csrf", &csrf));
        let page = stranger.post(path, &fields).await;
        assert!(
            matches!(page.status, 403 | 404),
            "{path}: {} {}",
            page.status,
            page.body
        );
    }
    // The applicant may read its own request but not answer it.
    let mut applicant = signed_in_dept(&hub, APPLICANT).await;
    let page = applicant
        .get(&format!("/console/request?id={}", request.request_id))
        .await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let page = applicant
        .post(
            "/console/request/approve",
            &[
                ("csrf", &csrf),
                ("request_id", &request.request_id),
                ("requested", "name"),
                ("field", "name"),
            ],
        )
        .await;
    assert_eq!(page.status, 403, "{}", page.body);
    // A department sees its own grants, not others'.
    let page = stranger.get("/console/grants").await;
    assert!(!page.has(&grant.grant_id));
    // Nothing changed.
    assert_eq!(
        ok(hub
            .access(PROVIDER)
            .await
            .get_request(get_request(&request.request_id))
            .await)
        .state,
        pb::RequestState::Pending as i32
    );
    assert_eq!(
        ok(hub.access(PROVIDER).await.get_grant(get_grant(&grant.grant_id)).await).state,
        pb::GrantState::Active as i32
    );
    assert_eq!(entry_state(&hub, &code).await, pb::EntryState::PendingReview as i32);
    assert!(
        hub.store()
            .get_department(PROVIDER)
            .await
            .expect("read")
            .expect("there")
            .active
    );

    // The refusals are in the trail as the department's, as over gRPC (another's request or
    // entry is NOT_FOUND to it: the API does not say that it exists).
    let events = ok(hub
        .audit_admin()
        .await
        .list_events(pb::ListEventsRequest {
            actor: STRANGER.into(),
            page_size: 100,
            ..Default::default()
        })
        .await)
    .events;
    for action in [
        "ApproveRequest",
        "RejectRequest",
        "RevokeGrant",
        "PublishEntry",
        "ReturnEntry",
        "DeactivateDepartment",
    ] {
        assert!(
            events
                .iter()
                .any(|e| e.action == action && matches!(e.outcome.as_str(), "PERMISSION_DENIED" | "NOT_FOUND")),
            "{action} refused and audited: {events:?}"
        );
    }

    // An evaluator reads the scorecard, nothing else.
    let link = link(&hub, pki::evaluator_files(&hub.pki_dir())).await;
    let mut evaluator = Browser::new(&hub, console_addr(&link));
    evaluator.sign_in(&link).await;
    assert_eq!(evaluator.get("/console/scorecard").await.status, 200);
    assert_eq!(evaluator.get("/console/requests").await.status, 403);
    assert_eq!(evaluator.get("/console/audit").await.status, 403);
    hub.finish().await;
}

#[tokio::test]
async fn bad_input_gets_a_precise_page() {
    let hub = hub_with_console(Backend::Sqlite).await;
    let mut admin = signed_in_admin(&hub).await;
    let csrf = admin.get("/console/").await.csrf();
    let big = "字".repeat(30_000);
    let page = admin
        .post("/console/review/return", &[("csrf", &csrf), ("reason", &big)])
        .await;
    assert_eq!(page.status, 413, "a form above 64 KiB is refused unread");
    for path in [
        "/console/entry?code=%FF%FE",
        "/console/entry?code=101/999999",
        "/console/entry",
        "/console/request?id=",
        "/console/request?id=%00",
        "/console/catalog?share_type=99&state=-1&page=%E4%B8%8D",
        "/console/scorecard?from=yesterday",
        "/console/audit?actor=%3Cscript%3E",
    ] {
        let page = admin.get(path).await;
        assert!(
            (200..500).contains(&page.status),
            "{path}: {} {}",
            page.status,
            page.body
        );
        assert!(!page.has("<script>"), "{path} escapes what it shows");
    }
    let page = admin
        .post(
            "/console/request/approve",
            &[("csrf", &csrf), ("request_id", "nope"), ("expires_on", "2026-02-30")],
        )
        .await;
    assert_eq!(page.status, 404, "an unknown request is not found: {}", page.body);
    let page = admin
        .post("/console/departments/register", &[("csrf", &csrf), ("code", "<b>")])
        .await;
    assert_eq!(page.status, 400);
    assert!(page.has("&#60;b&#62;") && !page.has("<b>"), "{}", page.body);
    hub.finish().await;
}

#[tokio::test]
async fn a_provider_resolves_an_error_report_in_the_console() {
    let hub = hub_with_console(Backend::Sqlite).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(PROVIDER, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    ok(hub
        .exchange(PROVIDER)
        .await
        .publish(batch(
            &open,
            "first",
            (1..=3).map(|s| upsert_resident(s, "张三丰")).collect(),
        ))
        .await);
    let filed = ok(hub
        .access(APPLICANT)
        .await
        .report_error(pb::ReportErrorRequest {
            dataset: open.clone(),
            sequence: 2,
            key: Vec::new(),
            description: "姓名有误".into(),
        })
        .await);
    // The reporter sees its report but is offered no answer; the provider answers it.
    let mut applicant = signed_in_dept(&hub, APPLICANT).await;
    let page = applicant.get("/console/reports").await;
    assert!(page.has("姓名有误") && !page.has("/console/reports/resolve"));
    let mut provider = signed_in_dept(&hub, PROVIDER).await;
    let page = provider.get("/console/reports").await;
    assert!(page.has("姓名有误") && page.has("/console/reports/resolve"));
    let csrf = page.csrf();
    // Refusing to correct needs a reason, beside the field.
    let page = provider
        .post(
            "/console/reports/resolve",
            &[
                ("csrf", &csrf),
                ("report_id", &filed.report_id),
                ("resolution", "3"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.has("class=\"field-error\""), "{}", page.body);
    let page = provider
        .post(
            "/console/reports/resolve",
            &[
                ("csrf", &csrf),
                ("report_id", &filed.report_id),
                ("resolution", "3"),
                ("reason", "经核实登记信息无误"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.has("不予更正"));
    let resolved = ok(hub
        .access(APPLICANT)
        .await
        .get_report(pb::GetReportRequest {
            report_id: filed.report_id.clone(),
        })
        .await);
    assert_eq!(resolved.state, pb::ReportState::Rejected as i32);
    assert_eq!(resolved.resolution, "经核实登记信息无误");
    // The reporter cannot answer its own report.
    let csrf = applicant.get("/console/reports").await.csrf();
    let page = applicant
        .post(
            "/console/reports/resolve",
            &[("csrf", &csrf), ("report_id", &filed.report_id), ("resolution", "2")],
        )
        .await;
    assert!(matches!(page.status, 403 | 404 | 412), "{}", page.status);
    hub.finish().await;
}
