//! The web console in a real browser (issue #13): headless Chromium, driven over WebDriver by
//! Debian's `chromedriver`, through sign-in with a link, a review, an approval with masking and
//! a revocation, at 1280 px and at a phone's width. Screenshots of each page are saved under
//! `target/console-screenshots/` (or `$XINQIAO_SCREENSHOTS`) for a person to look at.
//!
//! Chromium and chromedriver are required (CI installs them: `apt-get install chromium
//! chromium-driver fonts-wqy-zenhei`); without them this test fails and says so. Everything is on
//! 127.0.0.1 and bounded in time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use xinqiao_hub::pki;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::console_service_client::ConsoleServiceClient;
use xinqiao_tests::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The whole walk-through, start to end.
const WHOLE: Duration = Duration::from_secs(240);
/// One WebDriver command.
const COMMAND: Duration = Duration::from_secs(60);
const PROVIDER: &str = POLICE;
const APPLICANT: &str = HRSS;
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

async fn start_driver() -> Driver {
    for program in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: the console's browser test needs Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver fonts-wqy-zenhei; .ci/run installs them)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    for _ in 0..100 {
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), call(port, "GET", "/status", None)).await
            && status["value"]["ready"] == json!(true)
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not become ready on 127.0.0.1:{port}");
}

/// One WebDriver command: its `value`, or the driver's error.
async fn call(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json; charset=utf-8")
        .body(http_body_util::Full::new(bytes::Bytes::from(text)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!("{status}: {}", value["value"]))
    }
}

/// A browser session.
struct Chromium {
    port: u16,
    session: String,
    shots: PathBuf,
}

impl Chromium {
    async fn start(driver: &Driver) -> Chromium {
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                // The hub's certificate is from the development CA, which this profile does not know.
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1280,900", "--lang=zh-CN", "--no-first-run",
                             "--disable-background-networking", "--disable-sync"]
                }
            }}
        });
        let started = tokio::time::timeout(COMMAND, call(driver.port, "POST", "/session", Some(capabilities)))
            .await
            .expect("Chromium starts in time")
            .unwrap_or_else(|e| panic!("Chromium does not start: {e}"));
        let session = started["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        let shots = std::env::var_os("XINQIAO_SCREENSHOTS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&shots).expect("the screenshots' directory");
        Chromium {
            port: driver.port,
            session,
            shots,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        tokio::time::timeout(COMMAND, call(self.port, method, &path, body))
            .await
            .unwrap_or_else(|_| panic!("WebDriver {method} {path} timed out"))
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))["value"]
            .take()
    }

    async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/click"), Some(json!({})))
            .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command("POST", &format!("/element/{element}/clear"), Some(json!({})))
            .await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.command("GET", "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the page shows `text` (a form's answer may still be loading after a click);
    /// the page's source.
    async fn wait_for(&self, text: &str) -> String {
        let mut page = String::new();
        for _ in 0..100 {
            page = self.source().await;
            if page.contains(text) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {text}: {page}");
    }

    async fn title(&self) -> String {
        self.command("GET", "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn resize(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(json!({"width": width, "height": height})))
            .await;
    }

    /// Saves the page as `name`.png; returns its path.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.command("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    async fn quit(self) {
        let path = format!("/session/{}", self.session);
        let _ = tokio::time::timeout(COMMAND, call(self.port, "DELETE", &path, None)).await;
    }
}

async fn link(hub: &TestHub, files: pki::CertFiles) -> pb::SignInLink {
    let mut client = ConsoleServiceClient::new(hub.channel(files).await);
    ok(client.create_sign_in_link(pb::CreateSignInLinkRequest {}).await)
}

/// An entry of the provider, drafted, revised (a data item added) and submitted for review.
async fn submitted(hub: &TestHub, name: &str, summary: &str) -> String {
    let mut dept = hub.dept(PROVIDER).await;
    let code = ok(dept.create_entry(create(content(name, "101", summary))).await).resource_code;
    let mut revised = content(name, "101", &format!("{summary}，含住所与经营范围"));
    revised.items.push(item("住所", "字符型", 200));
    ok(dept.update_entry(update(&code, revised)).await);
    ok(dept.submit_entry(submit(&code)).await);
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_reviews_approves_with_masking_and_revokes_in_chromium() {
    tokio::time::timeout(WHOLE, walk_through())
        .await
        .expect("the browser walk-through finishes in time");
}

async fn walk_through() {
    let driver = start_driver().await;
    let hub = TestHub::start_with(Backend::Sqlite, |config| {
        config.console.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(PROVIDER, "居民联系信息", pb::ShareType::Conditional)
        .await;
    let request = hub
        .apply(APPLICANT, &dataset.dataset, &["resident_id", "name", "mobile"])
        .await;
    let entry = submitted(&hub, "法人登记信息", "市场主体登记的基本信息").await;
    let browser = Chromium::start(&driver).await;

    // The admin signs in with the link `xinqiao console --as admin` would print.
    let admin = link(&hub, pki::admin_files(&hub.pki_dir())).await;
    let base = admin.console_url.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    browser.open(&format!("{base}{}", admin.path)).await;
    // The link's page uses it only when its button is pressed (a link preview burns nothing).
    browser.wait_for("登录控制台").await;
    browser.screenshot("00-sign-in").await;
    browser.click("form[action='/console/sign-in'] button").await;
    browser.wait_for("平台管理员").await;
    assert!(browser.title().await.contains("信桥控制台"));
    browser.screenshot("01-admin-home").await;

    // A review: the queue, the entry's versions side by side (changes marked), then publish.
    browser.click("a[href='/console/review']").await;
    browser.wait_for(&entry).await;
    browser.screenshot("02-review-queue").await;
    browser
        .open(&format!(
            "{base}/console/entry?code={}&a=1&b=3",
            entry.replace('/', "%2F")
        ))
        .await;
    let page = browser.source().await;
    assert!(
        page.contains("class=\"changed\"") && page.contains("信息项：住所"),
        "{page}"
    );
    browser.screenshot("03-entry-versions").await;
    browser.click("form[action='/console/review/publish'] button").await;
    browser.wait_for("已发布").await;
    browser.screenshot("04-published").await;
    assert_eq!(
        ok(hub.admin().await.get_entry(get(&entry, 0)).await).state,
        pb::EntryState::Published as i32
    );

    // The provider signs in, answers the request: two of three fields, both masked.
    let provider = link(&hub, pki::department_files(&hub.pki_dir(), PROVIDER)).await;
    browser.open(&format!("{base}{}", provider.path)).await;
    browser.wait_for("登录控制台").await;
    browser.click("form[action='/console/sign-in'] button").await;
    browser.wait_for("退出").await;
    browser.click("a[href='/console/requests']").await;
    browser.wait_for(&request.request_id).await;
    browser.screenshot("05-requests").await;
    browser
        .click(&format!("a[href='/console/request?id={}']", request.request_id))
        .await;
    browser.click("#field-mobile").await;
    browser.type_into("input[name='mask:resident_id']", "resident_id").await;
    browser.type_into("input[name='mask:name']", "name").await;
    browser
        .type_into("#approve input[name='note']", "仅限低保资格核验")
        .await;
    browser.screenshot("06-answer-form").await;
    browser.click("#approve button[type='submit']").await;
    browser.wait_for("已同意").await;
    browser.screenshot("07-approved").await;
    let answered = ok(hub
        .access(PROVIDER)
        .await
        .get_request(get_request(&request.request_id))
        .await);
    let grant = ok(hub
        .access(PROVIDER)
        .await
        .get_grant(get_grant(&answered.grant_id))
        .await);
    assert_eq!(grant.fields, ["resident_id", "name"]);
    assert_eq!(grant.masks.len(), 2);

    // The grant, then its revocation with a reason.
    browser.click("a[href='/console/grants']").await;
    browser.wait_for("身份证号脱敏").await;
    browser.screenshot("08-grants").await;
    browser
        .type_into(
            "form[action='/console/grants/revoke'] input[name='reason']",
            "核验任务结束",
        )
        .await;
    browser.click("form[action='/console/grants/revoke'] button").await;
    browser.wait_for("已撤销").await;
    browser.screenshot("09-revoked").await;
    assert_eq!(
        ok(hub.access(APPLICANT).await.get_grant(get_grant(&grant.grant_id)).await).state,
        pb::GrantState::Revoked as i32
    );

    // Every other page, as a person would see it.
    for (shot, path, heading) in [
        ("13-catalog", "/console/catalog", "<h1>资源目录</h1>"),
        ("14-departments", "/console/departments", "<h1>部门</h1>"),
        ("15-datasets", "/console/datasets", "<h1>数据集</h1>"),
        ("16-reports", "/console/reports", "<h1>纠错</h1>"),
        ("17-audit", "/console/audit", "<h1>审计日志</h1>"),
    ] {
        browser.open(&format!("{base}{path}")).await;
        browser.wait_for(heading).await;
        browser.screenshot(shot).await;
    }

    // The scorecard's charts, and the pages at a phone's width.
    browser.open(&format!("{base}/console/scorecard")).await;
    browser.wait_for("<svg").await;
    browser.screenshot("10-scorecard").await;
    browser.resize(390, 844).await;
    browser.open(&format!("{base}/console/requests")).await;
    browser.screenshot("11-phone-requests").await;
    browser.open(&format!("{base}/console/catalog")).await;
    browser.screenshot("12-phone-catalog").await;
    browser.quit().await;
    hub.finish().await;
}
