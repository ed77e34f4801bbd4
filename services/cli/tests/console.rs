//! `xinqiao serve --dev` prints the web console's address, and `xinqiao console --as admin`
//! prints a link that signs a browser in once (issue #13's "done when", with the real binary).

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// Two neighbouring free ports: the hub's, and the console's next to it (`serve --dev`).
fn free_pair() -> u16 {
    for _ in 0..50 {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two neighbouring free ports on 127.0.0.1");
}

fn console(port: u16, pki: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .arg("console")
        .args(args)
        .env("XINQIAO_HUB", format!("https://127.0.0.1:{port}"))
        .env("XINQIAO_PKI", pki)
        .env_remove("XINQIAO_AS")
        .output()
        .expect("run xinqiao console")
}

/// A request as a browser without a client certificate, with `cookies` (name, value) and, for a
/// POST, a form body: the status, the cookies set (name, value) and the body.
async fn send(
    ca: &Path,
    method: &str,
    url: &str,
    cookies: &[(&str, &str)],
    form: Option<String>,
) -> (u16, Vec<(String, String)>, String) {
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let pem = std::fs::read(ca).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("CA certificate");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect to the console");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS without a client certificate");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    if !cookies.is_empty() {
        let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        request = request.header("cookie", header.join("; "));
    }
    if form.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(form.unwrap_or_default())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .expect("the console answers in time")
        .expect("an answer");
    let status = response.status().as_u16();
    let set: Vec<(String, String)> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, set, String::from_utf8_lossy(&body).into_owned())
}

/// A GET: the status, the session cookie set, the body.
async fn get(ca: &Path, url: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let cookies: Vec<(&str, &str)> = cookie.map(|c| ("__Host-xinqiao-console", c)).into_iter().collect();
    let (status, set, body) = send(ca, "GET", url, &cookies, None).await;
    (status, session_cookie(&set), body)
}

fn session_cookie(set: &[(String, String)]) -> Option<String> {
    set.iter()
        .find(|(n, v)| n == "__Host-xinqiao-console" && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// The value of a form's hidden field on a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no field {name}: {page}")) + marker.len();
    let end = page[start..].find('"').expect("the value ends") + start;
    page[start..end].to_string()
}

/// Opens a sign-in link as a person would and presses its button: the button's status and the
/// session cookie it set.
async fn use_link(ca: &Path, url: &str) -> (u16, Option<String>) {
    let (status, set, page) = send(ca, "GET", url, &[], None).await;
    assert_eq!(status, 200, "the link opens its page: {page}");
    let nonce = set
        .iter()
        .find(|(n, _)| n == "__Host-xinqiao-sign-in")
        .map(|(_, v)| v.clone())
        .expect("the page's cookie");
    let form = format!("token={}&nonce={}", hidden(&page, "token"), hidden(&page, "nonce"));
    let origin = &url[..url.find("/console/").expect("a console URL")];
    let (status, set, _) = send(
        ca,
        "POST",
        &format!("{origin}/console/sign-in"),
        &[("__Host-xinqiao-sign-in", &nonce)],
        Some(form),
    )
    .await;
    (status, session_cookie(&set))
}

#[tokio::test]
async fn serve_dev_prints_the_console_and_a_link_signs_the_admin_in_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("hub");
    let port = free_pair();
    let args = [
        OsString::from("--dev"),
        OsString::from("--data"),
        data.clone().into_os_string(),
    ];
    let hub = HubProcess::start(port, &args, &dir.path().join("hub.log")).await;
    let console_url = format!("https://127.0.0.1:{}/console/", port + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !hub.log_text().contains(&console_url) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "serve --dev prints the console's address {console_url}:\n{}",
            hub.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pki = data.join("pki");
    let ca = xinqiao_hub::pki::ca_cert_path(&pki);

    // Who asks must say who they are; the link is for that identity only.
    let anonymous = console(port, &pki, &[]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("--as"));

    let out = console(port, &pki, &["--as", "admin"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let url = stdout.lines().next().expect("the link on the first line").to_string();
    assert!(url.starts_with(&format!("{console_url}sign-in?token=")), "{url}");
    assert!(stdout.contains("urn:xinqiao:admin:platform-admin"));

    let (status, cookie) = use_link(&ca, &url).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    let (status, _, home) = get(&ca, &console_url, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(home.contains("平台管理员"), "{home}");
    let (status, _) = use_link(&ca, &url).await;
    assert_eq!(status, 403, "the link signs in once");

    // A department's link, as JSON for scripts.
    let out = console(port, &pki, &["--as", POLICE, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(link["identity"], format!("urn:xinqiao:dept:{POLICE}"));
    let (status, cookie) = use_link(&ca, link["url"].as_str().expect("url")).await;
    assert_eq!(status, 303);
    let (_, _, home) = get(&ca, &console_url, cookie.as_deref()).await;
    assert!(home.contains(POLICE) && !home.contains("平台管理员"));
    drop(hub);
}
