//! Service interfaces (接口共享) as a user drives them: the real `xinqiao` binary against
//! `xinqiao serve --dev`, with the sample 身份核验 service running in this process behind a
//! certificate of its own CA and letting in only the platform's clients. 市公安局 registers the
//! interface from flags, anyone lists and shows it, 市人力资源和社会保障局 calls it; a request outside
//! its schema is the hub's INVALID_ARGUMENT; a disabled interface refuses calls with its reason
//! until it is registered again (here from a specification file).

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;
use xinqiao_hub::pki;
use xinqiao_hub::sample_upstream::{SampleUpstream, VERIFY_REQUEST_SCHEMA, VERIFY_RESPONSE_SCHEMA, mobile_of};

/// 市人力资源和社会保障局: the using department here.
const HRSS: &str = "11330100MB0003003M";
const CALL_PURPOSE: &str = "社保待遇资格认证时核验参保人身份";

const ENTRY: &str = r#"
name = "居民身份核验"
classification = "101002"
summary = "按公民身份号码和姓名核验居民身份，返回是否一致和登记的手机号码。"
format = "服务接口"
update_cycle = "实时"

[share]
type = "无条件共享"
channel = "共享平台"
exchange_kind = "接口"

[open]
type = "不予开放"

[[items]]
name = "公民身份号码"
data_type = "字符型"
length = 18
sensitive = true

[[items]]
name = "姓名"
data_type = "字符型"
length = 50
sensitive = true
"#;

/// Runs a command that must be refused: exit status 1 and nothing on stdout; its stderr.
#[track_caller]
fn must_refuse(x: &Xinqiao, who: &str, args: &[&str]) -> String {
    let out = x.run(who, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "xinqiao {} --as {who}: expected a refusal (exit 1):\n{stdout}\n{stderr}",
        args.join(" ")
    );
    assert!(stdout.trim().is_empty(), "a refusal prints no answer: {stdout}");
    stderr
}

/// A valid 公民身份号码 from its first 17 digits.
fn resident_id(first17: &str) -> String {
    let check = xinqiao_domain::identifiers::resident_id_check_char(first17).expect("17 digits");
    format!("{first17}{check}")
}

/// The sample 身份核验 service with a CA of its own, letting in only clients of `client_ca`.
async fn upstream(dir: &Path, client_ca: &Path) -> (SampleUpstream, PathBuf) {
    pki::init(dir, &[]).expect("the upstream's own PKI");
    let files = pki::server_files(dir);
    let server = SampleUpstream::start(&files.cert, &files.key, Some(client_ca))
        .await
        .expect("the sample upstream");
    (server, pki::ca_cert_path(dir))
}

// The binary runs as a blocking child process while the upstream serves in this process, so the
// runtime needs threads besides the test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interface_is_registered_called_and_disabled_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let hub = HubProcess::dev(&data, free_port()).await;
    let x = Xinqiao {
        hub: format!("https://127.0.0.1:{}", hub.port),
        pki: data.join("pki"),
        dir: dir.path().to_path_buf(),
    };
    let (service, service_ca) = upstream(&dir.path().join("upstream-pki"), &pki::ca_cert_path(&x.pki)).await;
    let service_ca = service_ca.display().to_string();

    // 市公安局's schemas and its published 接口 entry.
    for (subject, text) in [
        ("id-check-request", VERIFY_REQUEST_SCHEMA),
        ("id-check-response", VERIFY_RESPONSE_SCHEMA),
    ] {
        let file = x.write(&format!("{subject}.json"), text);
        x.ok(POLICE, &["schema", "register", subject, &file]);
    }
    let entry = x.write("entry.toml", ENTRY);
    let created = x.json(POLICE, &["catalog", "create", &entry]);
    let code = created["resource_code"].as_str().expect("a resource code").to_string();
    x.ok(POLICE, &["catalog", "submit", &code]);
    x.ok("admin", &["catalog", "publish", &code]);

    // An operation flag that is not NAME=METHOD:PATH:REQUEST:RESPONSE is refused before the hub.
    let bad = x.run(
        POLICE,
        &[
            "interface",
            "register",
            &code,
            "--upstream",
            &service.url(),
            "--upstream-ca",
            &service_ca,
            "--operation",
            "verify=POST:/verify",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=METHOD:PATH"));

    // Registered from flags; a schema named without a version is pinned to its latest.
    let register = |who: &str, json: bool| {
        let url = service.url();
        let mut args = vec![
            "interface",
            "register",
            code.as_str(),
            "--upstream",
            url.as_str(),
            "--upstream-ca",
            service_ca.as_str(),
            "--operation",
            "verify=POST:/verify:id-check-request@1:id-check-response:idempotent",
            "--timeout",
            "3s",
            "--rate",
            "120",
            "--concurrency",
            "4",
        ];
        if json {
            args.push("--json");
        }
        x.run(who, &args)
    };
    let refused = register(HRSS, false);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"),
        "only the provider registers: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let registered = register(POLICE, true);
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let registered: Value = serde_json::from_slice(&registered.stdout).expect("the interface as JSON");
    assert_eq!(registered["code"], code.as_str());
    assert_eq!(registered["provider_code"], POLICE);
    assert_eq!(registered["enabled"], true);
    assert_eq!(registered["upstream"], service.url().as_str());
    assert_eq!(
        (
            &registered["timeout_ms"],
            &registered["rate_per_minute"],
            &registered["max_concurrency"]
        ),
        (&Value::from(3000), &Value::from(120), &Value::from(4))
    );
    assert_eq!(
        registered["operations"],
        serde_json::json!([{
            "name": "verify", "method": "POST", "path": "/verify",
            "request_schema": "id-check-request@1", "response_schema": "id-check-response@1",
            "idempotent": true,
        }])
    );

    // Listed and shown to a using department.
    let listed = x.ok(HRSS, &["interface", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with(&code))
        .unwrap_or_else(|| panic!("{code} is not listed:\n{listed}"));
    assert!(
        row.contains(POLICE) && row.contains("verify") && row.contains("enabled"),
        "{row}"
    );
    let other_provider = x.json(HRSS, &["interface", "list", "--provider", SAMR]);
    assert_eq!(other_provider, serde_json::json!([]));
    let shown = x.ok(HRSS, &["interface", "show", &code]);
    for words in [
        "enabled",
        service.url().as_str(),
        "3000 ms",
        "/verify",
        "id-check-response@1",
    ] {
        assert!(shown.contains(words), "'{words}' not in:\n{shown}");
    }

    // The call: the answer, pretty JSON on stdout.
    let id = resident_id("33010219900307001");
    let request = serde_json::json!({"id_number": id, "name": "张伟"}).to_string();
    let printed = x.ok(
        HRSS,
        &["call", &code, "verify", "--data", &request, "--purpose", CALL_PURPOSE],
    );
    assert!(printed.contains("\n  \"match\": true"), "indented JSON:\n{printed}");
    let answer: Value = serde_json::from_str(&printed).expect("the answer is JSON");
    assert_eq!(
        answer,
        serde_json::json!({"id_number": id, "name": "张伟", "match": true, "mobile": mobile_of(&id)})
    );
    assert_eq!(service.last_client(), HRSS, "the service heard whom the call was for");
    // From a file, with --json: the answer and what the upstream said.
    let file = format!("@{}", x.write("request.json", &request));
    let enveloped = x.json(HRSS, &["call", &code, "verify", "-d", &file, "--purpose", CALL_PURPOSE]);
    assert_eq!(enveloped["response"], answer);
    assert_eq!(enveloped["upstream_status"], 200);
    assert!(enveloped["upstream_ms"].is_u64(), "{enveloped}");

    // Refusals: the hub's status on stderr, exit code 1, and nothing reaches the service.
    let reached = service.requests();
    let stderr = must_refuse(&x, HRSS, &["call", &code, "verify", "--data", &request]);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("purpose") && stderr.contains("--purpose"),
        "{stderr}"
    );
    let mistyped = format!("{}{}", &id[..17], if id.ends_with('1') { '2' } else { '1' });
    let bad_request = serde_json::json!({"id_number": mistyped, "name": "张伟"}).to_string();
    let stderr = must_refuse(
        &x,
        HRSS,
        &[
            "call",
            &code,
            "verify",
            "--data",
            &bad_request,
            "--purpose",
            CALL_PURPOSE,
        ],
    );
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("request_json/id_number"),
        "{stderr}"
    );
    let stderr = must_refuse(
        &x,
        HRSS,
        &[
            "call",
            &code,
            "verify",
            "--data",
            "{\"id_number\":",
            "--purpose",
            CALL_PURPOSE,
        ],
    );
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("not JSON"),
        "{stderr}"
    );
    let stderr = must_refuse(
        &x,
        HRSS,
        &["call", &code, "delete", "--data", &request, "--purpose", CALL_PURPOSE],
    );
    assert!(
        stderr.contains("not an operation") && stderr.contains("verify"),
        "{stderr}"
    );
    assert_eq!(service.requests(), reached, "no refused call reached the service");

    // Disabled by its provider (not by a user): calls are refused with the reason.
    let stderr = must_refuse(&x, HRSS, &["interface", "disable", &code, "--reason", "x"]);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    let disabled = x.ok(POLICE, &["interface", "disable", &code, "--reason", "上游系统升级"]);
    assert!(disabled.contains("disabled: 上游系统升级"), "{disabled}");
    let listed = x.ok(HRSS, &["interface", "list"]);
    assert!(listed.contains("disabled: 上游系统升级"), "{listed}");
    let stderr = must_refuse(
        &x,
        HRSS,
        &["call", &code, "verify", "--data", &request, "--purpose", CALL_PURPOSE],
    );
    assert!(
        stderr.contains("FailedPrecondition") && stderr.contains("上游系统升级"),
        "{stderr}"
    );
    assert_eq!(service.requests(), reached);

    // Registered again from a specification file, it takes calls again.
    let spec = x.write(
        "interface.toml",
        &format!(
            r#"
upstream = "{}"
upstream_ca = "upstream-pki/ca.crt"
timeout = "2s"

[[operations]]
name = "verify"
path = "/verify"
request_schema = "id-check-request@1"
response_schema = "id-check-response@1"
idempotent = true
"#,
            service.url()
        ),
    );
    let again = x.ok(POLICE, &["interface", "register", &code, "--file", &spec]);
    assert!(
        again.contains("enabled") && again.contains("2000 ms") && again.contains("600 calls a minute"),
        "{again}"
    );
    let printed = x.ok(
        HRSS,
        &["call", &code, "verify", "--data", &request, "--purpose", CALL_PURPOSE],
    );
    assert_eq!(serde_json::from_str::<Value>(&printed).expect("JSON"), answer);

    // Every call, refusals included, is in the trail.
    let events = x.json("admin", &["audit", "list", "--action", "Invoke", "--target", &code]);
    let outcomes: Vec<&str> = events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        [
            "OK",
            "OK",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "FAILED_PRECONDITION",
            "OK"
        ],
        "{events:#}"
    );
    drop(hub);
}
