//! Access, error reports and the audit trail as a user drives them: the real `xinqiao` binary
//! against `xinqiao serve --dev`. A provider publishes person records shared on condition
//! (有条件共享); a using department applies, is granted fewer fields with masking, pulls masked
//! values, reports a record; the grant is revoked and the next pull is refused; the audit chain
//! verifies.

mod support;

use serde_json::Value;
use support::*;

/// 市人力资源和社会保障局: the using department here.
const HRSS: &str = "11330100MB0003003M";

const PERSON_ENTRY: &str = r#"
name = "人口基础信息"
classification = "101001"
summary = "本市户籍人口的公民身份号码、姓名、性别、出生日期、民族、户籍地址和行政区划代码。"
format = "数据库"
update_cycle = "每日"

[share]
type = "有条件共享"
condition = "限于法定职责范围内核验身份"
channel = "共享平台"
exchange_kind = "库表"
legal_basis = "《中华人民共和国个人信息保护法》第三十四条"

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

[[items]]
name = "性别"
data_type = "字符型"
length = 4

[[items]]
name = "出生日期"
data_type = "日期型"
length = 8

[[items]]
name = "户籍地址"
data_type = "字符型"
length = 500
sensitive = true
"#;

/// A valid 公民身份号码 from its first 17 digits.
fn resident_id(first17: &str) -> String {
    let check = xinqiao_domain::identifiers::resident_id_check_char(first17).expect("17 digits");
    format!("{first17}{check}")
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no text '{field}' in {value}"))
        .to_string()
}

/// The NDJSON lines of a pull.
fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Publishes the person records as POLICE and returns the dataset's code.
fn person_dataset(x: &Xinqiao, ids: &[String]) -> String {
    let entry = x.write("person.toml", PERSON_ENTRY);
    let code = text(&x.json(POLICE, &["catalog", "create", &entry]), "resource_code");
    x.ok(POLICE, &["catalog", "submit", &code]);
    x.ok("admin", &["catalog", "publish", &code]);
    x.ok(
        POLICE,
        &["dataset", "create", &code, "--schema", "person", "-k", "resident_id"],
    );
    let records: String = [("张伟", "男", "1990-03-07"), ("欧阳明", "男", "2001-09-15")]
        .iter()
        .zip(ids)
        .map(|((name, gender, born), id)| {
            let record = serde_json::json!({
                "resident_id": id, "name": name, "gender": gender, "birth_date": born,
                "household_address": "杭州市上城区示范街道1号",
            });
            format!("{record}\n")
        })
        .collect();
    let file = x.write("people.ndjson", &records);
    x.ok(POLICE, &["publish", &code, &file]);
    code
}

#[tokio::test]
async fn access_is_requested_granted_masked_and_revoked_and_the_trail_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let hub = HubProcess::dev(&data, free_port()).await;
    let x = Xinqiao {
        hub: format!("https://127.0.0.1:{}", hub.port),
        pki: data.join("pki"),
        dir: dir.path().to_path_buf(),
    };
    let ids = [resident_id("33010219900307001"), resident_id("33010220010915003")];
    let code = person_dataset(&x, &ids);

    // Without a grant a conditionally shared dataset cannot be read.
    let refused = x.fails(HRSS, &["pull", &code, "--quiet"]);
    assert!(refused.contains("PermissionDenied"), "{refused}");

    // The application, as both parties see it.
    let until = (chrono::Utc::now() + chrono::Duration::days(30))
        .format("%Y-%m-%d")
        .to_string();
    let request = x.json(
        HRSS,
        &[
            "access",
            "request",
            "--dataset",
            &code,
            "--purpose",
            "社会保险参保登记时核验参保人身份",
            "--scope",
            "本局社会保险经办业务",
            "--fields",
            "resident_id,name,gender,birth_date,household_address",
            "--until",
            &until,
            "--system",
            "社会保险经办系统",
        ],
    );
    assert_eq!(text(&request, "state"), "pending", "{request}");
    let request_id = text(&request, "request_id");
    let listed = x.ok(HRSS, &["access", "list", "--party", "applicant"]);
    assert!(listed.contains(&request_id), "{listed}");
    let to_answer = x.json(POLICE, &["access", "list", "--party", "provider", "--state", "pending"]);
    assert!(
        to_answer
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["request_id"] == request_id.as_str())),
        "{to_answer}"
    );
    let shown = x.ok(POLICE, &["access", "show", &request_id]);
    assert!(shown.contains("社会保险经办系统"), "{shown}");

    // The provider approves three of the five fields, masking the ID number and the name.
    let approved = x.json(
        POLICE,
        &[
            "access",
            "approve",
            &request_id,
            "--fields",
            "resident_id,name,gender",
            "--mask",
            "resident_id=resident_id",
            "--mask",
            "name=name",
            "--note",
            "仅提供核验身份所需字段",
        ],
    );
    assert_eq!(text(&approved, "state"), "approved", "{approved}");
    let grant_id = text(&approved, "grant_id");
    assert_eq!(text(&approved["grant"], "state"), "active", "{approved}");
    let grants = x.ok(HRSS, &["access", "grants", "--active"]);
    assert!(grants.contains(&grant_id), "{grants}");

    // The grantee's pull carries the granted fields only, masked, in the record and the key.
    let pulled = lines(&x.ok(HRSS, &["pull", &code, "--quiet"]));
    assert_eq!(pulled.len(), 2, "{pulled:?}");
    for (line, id) in pulled.iter().zip(&ids) {
        let record = &line["record"];
        let masked_id = format!("{}********{}", &id[..6], &id[14..]);
        assert_eq!(record["resident_id"], masked_id.as_str(), "{line}");
        assert_eq!(line["key"], serde_json::json!([masked_id]), "{line}");
        let name = record["name"].as_str().expect("a name");
        assert!(
            name.chars().skip(1).all(|c| c == '*') && name.chars().count() > 1,
            "{line}"
        );
        assert!(
            record.get("birth_date").is_none() && record.get("household_address").is_none(),
            "{line}"
        );
        assert_eq!(record["gender"], "男", "{line}");
    }

    // 纠错: the grantee reports a record by sequence number; the provider rejects the report.
    let report = x.json(
        HRSS,
        &[
            "report",
            "create",
            "--dataset",
            &code,
            "--sequence",
            "1",
            "--description",
            "性别与户籍登记不符",
        ],
    );
    assert_eq!(text(&report, "state"), "open", "{report}");
    let report_id = text(&report, "report_id");
    let open = x.ok(POLICE, &["report", "list", "--party", "provider", "--state", "open"]);
    assert!(open.contains(&report_id), "{open}");
    let resolved = x.json(
        POLICE,
        &[
            "report",
            "resolve",
            &report_id,
            "--rejected",
            "--reason",
            "经核查户籍登记无误",
        ],
    );
    assert_eq!(text(&resolved, "state"), "rejected", "{resolved}");
    let shown = x.ok(HRSS, &["report", "show", &report_id]);
    assert!(shown.contains("经核查户籍登记无误"), "{shown}");

    // Revoked, the grant no longer lets anything through.
    let revoked = x.json(POLICE, &["access", "revoke", &grant_id, "--reason", "业务系统停用"]);
    assert_eq!(text(&revoked, "state"), "revoked", "{revoked}");
    let refused = x.fails(HRSS, &["pull", &code, "--quiet"]);
    assert!(refused.contains("PermissionDenied"), "{refused}");
    let refused = x.fails(HRSS, &["pull", &code, "--quiet", "--grant", &grant_id]);
    assert!(
        refused.contains("PermissionDenied") && refused.contains("revoked"),
        "{refused}"
    );

    // The trail is intact and shows the refusals.
    let verified = x.ok("admin", &["audit", "verify"]);
    assert!(verified.contains("audit chain intact"), "{verified}");
    // Every link keyed with the development PKI's audit key.
    assert!(verified.contains("0 plain hashes"), "{verified}");
    // An anchor kept in a file vouches for the chain later; a department may not make one, and
    // an anchor file that was altered is refused.
    let anchor = x.dir.join("anchor.json");
    let anchored = x.ok("admin", &["audit", "anchor", "-o", anchor.to_str().expect("UTF-8")]);
    assert!(anchored.contains("anchored event"), "{anchored}");
    let denied = x.fails(HRSS, &["audit", "anchor"]);
    assert!(denied.contains("PermissionDenied"), "{denied}");
    let holds = x.ok(
        "admin",
        &["audit", "verify", "--anchor", anchor.to_str().expect("UTF-8")],
    );
    assert!(holds.contains("anchor holds"), "{holds}");
    let text = std::fs::read_to_string(&anchor).expect("the anchor file");
    let mut altered: Value = serde_json::from_str(&text).expect("JSON");
    altered["sequence"] = Value::from(altered["sequence"].as_u64().expect("a sequence") - 1);
    let forged = x.dir.join("forged.json");
    std::fs::write(&forged, altered.to_string()).expect("write");
    let refused = x.fails(
        "admin",
        &["audit", "verify", "--anchor", forged.to_str().expect("UTF-8")],
    );
    assert!(refused.contains("the anchor does not hold"), "{refused}");
    let events = x.json("admin", &["audit", "list", "--target", &code, "--limit", "1000"]);
    let events = events.as_array().expect("a list of events");
    assert!(
        events
            .iter()
            .any(|e| e["outcome"] == "PERMISSION_DENIED" && e["actor"] == HRSS),
        "{events:?}"
    );
    drop(hub);
}

#[tokio::test]
async fn reading_open_data_takes_a_purpose() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let hub = HubProcess::dev(&data, free_port()).await;
    let pki = data.join("pki");
    let code = open_dataset(hub.port, &pki, "企业登记信息").await;
    let mut samr = exchange(hub.port, &pki, SAMR).await.expect("connect as SAMR");
    ok(samr
        .publish(publish_request(
            &code,
            "one",
            vec![upsert(record(1, "示范科技有限公司"))],
        ))
        .await);
    let x = Xinqiao {
        hub: format!("https://127.0.0.1:{}", hub.port),
        pki,
        dir: dir.path().to_path_buf(),
    };
    let refused = x.fails(POLICE, &["pull", &code, "--quiet"]);
    assert!(
        refused.contains("InvalidArgument") && refused.contains("--purpose"),
        "{refused}"
    );
    let pulled = lines(&x.ok(POLICE, &["pull", &code, "--quiet", "--purpose", "核查企业登记状态"]));
    assert_eq!(pulled.len(), 1, "{pulled:?}");
    assert_eq!(pulled[0]["record"]["name"], "示范科技有限公司");
    drop(hub);
}
