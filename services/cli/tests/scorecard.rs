//! The sharing scorecard as a user reads it: the real `xinqiao` binary against `xinqiao serve
//! --dev`. 市市场监督管理局 compiles an entry, publishes records and 市公安局 pulls them; then the
//! scorecard shows the provider's records used equal to what was pulled, in the table, the JSON
//! and the HTML report; the admin and an evaluator see every scorecard, a department only its own
//! in full; the report page is self-contained and escapes what the hub sent.

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

/// 市人力资源和社会保障局, renamed here to a name that must be escaped in HTML.
const HRSS: &str = "11330100MB0003003M";
const ODD_NAME: &str = "市人力资源和社会保障局 <信息中心> & \"共享\"";
const ODD_NAME_ESCAPED: &str = "市人力资源和社会保障局 &lt;信息中心&gt; &amp; &quot;共享&quot;";

/// Records 市市场监督管理局 publishes and 市公安局 pulls.
const RECORDS: u64 = 5;

const ENTRY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/examples/entry-enterprise-registration.toml"
);

/// The ranked department with this code.
fn place<'a>(ranking: &'a Value, code: &str) -> &'a Value {
    ranking["departments"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["department"] == code))
        .unwrap_or_else(|| panic!("{code} is not ranked: {ranking}"))
}

fn count(card: &Value, indicator: &str) -> u64 {
    card["indicators"][indicator]
        .as_u64()
        .unwrap_or_else(|| panic!("no count '{indicator}' in {card}"))
}

/// The provider's scenario: an entry published, a dataset opened, RECORDS published; the code.
fn published_dataset(x: &Xinqiao, dir: &Path) -> String {
    let created = x.json(SAMR, &["catalog", "create", ENTRY]);
    let code = created["resource_code"]
        .as_str()
        .unwrap_or_else(|| panic!("no resource code in {created}"))
        .to_string();
    x.ok(SAMR, &["catalog", "submit", &code]);
    x.ok("admin", &["catalog", "publish", &code]);
    x.ok(
        SAMR,
        &["dataset", "create", &code, "--schema", "legal-entity", "-k", "uscc"],
    );
    let lines: String = (1..=RECORDS)
        .map(|n| {
            format!(
                "{}\n",
                String::from_utf8_lossy(&record(n, &format!("示范企业{n}有限公司")))
            )
        })
        .collect();
    let file = dir.join("companies.ndjson");
    std::fs::write(&file, lines).expect("write the records");
    x.ok(SAMR, &["publish", &code, &file.display().to_string()]);
    code
}

/// Every `<svg` has its `</svg>`, in order, none nested.
fn svg_balanced(html: &str) -> usize {
    let mut depth = 0i32;
    let mut charts = 0;
    let mut rest = html;
    while let Some(at) = rest.find("<svg").into_iter().chain(rest.find("</svg>")).min() {
        if rest[at..].starts_with("</svg>") {
            depth -= 1;
            rest = &rest[at + "</svg>".len()..];
        } else {
            depth += 1;
            charts += 1;
            rest = &rest[at + "<svg".len()..];
        }
        assert!((0..=1).contains(&depth), "unbalanced <svg> tags");
    }
    assert_eq!(depth, 0, "an <svg> is not closed");
    charts
}

#[tokio::test]
async fn the_scorecard_counts_what_was_pulled_and_the_report_shows_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let hub = HubProcess::dev(&data, free_port()).await;
    let x = Xinqiao {
        hub: format!("https://127.0.0.1:{}", hub.port),
        pki: data.join("pki"),
        dir: dir.path().to_path_buf(),
    };
    x.ok(
        "admin",
        &[
            "dept",
            "update",
            "--code",
            HRSS,
            "--name",
            ODD_NAME,
            "--division",
            "330100",
        ],
    );
    let code = published_dataset(&x, dir.path());
    let pulled = x.ok(POLICE, &["pull", &code, "--quiet", "--purpose", PURPOSE]);
    assert_eq!(pulled.lines().count() as u64, RECORDS, "{pulled}");

    // The admin sees every department ranked, each with its full scorecard.
    let ranking = x.json("admin", &["scorecard"]);
    let departments = ranking["departments"].as_array().expect("a list of departments");
    assert_eq!(departments.len(), 3, "{ranking}");
    assert!(departments.iter().all(|d| d["scorecard"].is_object()), "{ranking}");
    assert_eq!(ranking["weights"]["timeliness"], 25.0, "{ranking}");
    let samr = &place(&ranking, SAMR)["scorecard"];
    let score = samr["score"].as_f64().expect("a score");
    assert!(score > 0.0, "{samr}");
    assert_eq!(count(samr, "records_used"), RECORDS, "{samr}");
    assert_eq!(count(samr, "using_departments"), 1, "{samr}");
    assert_eq!(count(samr, "records_accepted"), RECORDS, "{samr}");
    assert_eq!(count(samr, "entries_published"), 1, "{samr}");
    // Nothing asked of it, nothing measured: the part is left out, not zero.
    assert!(samr["parts"]["responsiveness"].is_null(), "{samr}");

    // The table says the same.
    let table = x.ok("admin", &["scorecard"]);
    let score_text = format!("{score:.1}");
    assert!(table.contains("rank") && table.contains(&score_text), "{table}");
    assert!(
        table.contains(&format!(
            "records used by others {RECORDS}, interface calls answered 0, using departments 1"
        )),
        "{table}"
    );
    assert!(table.contains("responsiveness 响应       —"), "{table}");

    // One department's scorecard, asked for by itself, carries the same indicators.
    let own = x.json(SAMR, &["scorecard", "--dept", SAMR]);
    assert_eq!(own["indicators"], samr["indicators"], "{own}");
    assert_eq!(own["score"], samr["score"], "{own}");
    let shown = x.ok(SAMR, &["scorecard", "--dept", SAMR]);
    assert!(shown.contains(&format!("score {score_text}")), "{shown}");

    // An evaluator (评价方) sees what the admin sees.
    let evaluated = x.json("evaluator", &["scorecard"]);
    assert_eq!(evaluated["departments"], ranking["departments"], "{evaluated}");
    let one = x.json("evaluator", &["scorecard", "--dept", SAMR]);
    assert_eq!(one["indicators"], samr["indicators"], "{one}");

    // A department sees the ranking, but only its own scorecard in full.
    let seen = x.json(POLICE, &["scorecard"]);
    assert!(place(&seen, SAMR)["scorecard"].is_null(), "{seen}");
    assert_eq!(place(&seen, SAMR)["score"], samr["score"], "{seen}");
    assert!(place(&seen, POLICE)["scorecard"].is_object(), "{seen}");
    let refused = x.fails(POLICE, &["scorecard", "--dept", SAMR]);
    assert!(refused.contains("PermissionDenied"), "{refused}");

    // The period passes through; the hub checks it.
    let today = xinqiao_domain::access::china_day(chrono::Utc::now()).to_string();
    let day = x.json("admin", &["scorecard", "--from", &today, "--to", &today]);
    assert_eq!(
        (day["from"].as_str(), day["to"].as_str()),
        (Some(&*today), Some(&*today))
    );
    let backwards = x.fails("admin", &["scorecard", "--from", "2027-02-01", "--to", "2027-01-01"]);
    assert!(backwards.contains("InvalidArgument"), "{backwards}");
    let not_a_date = x.fails("admin", &["scorecard", "--from", "1 March"]);
    assert!(not_a_date.contains("YYYY-MM-DD"), "{not_a_date}");

    // The report page: self-contained, escaped, the same numbers.
    let report_dir = dir.path().join("report");
    std::fs::create_dir(&report_dir).expect("a report directory");
    let page = report_dir.join("scorecard.html");
    let printed = x.ok("admin", &["scorecard", "--html", &page.display().to_string()]);
    assert!(printed.contains(&score_text), "{printed}");
    let html = std::fs::read_to_string(&page).expect("the report was written");
    let files: Vec<_> = std::fs::read_dir(&report_dir).expect("list").flatten().collect();
    assert_eq!(files.len(), 1, "a temporary file was left behind");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(r#"<meta charset="utf-8">"#));
    assert_eq!(
        svg_balanced(&html),
        4,
        "a ranking chart and one parts chart per department"
    );
    for name in ["市市场监督管理局", "市公安局", ODD_NAME_ESCAPED] {
        assert!(html.contains(name), "{name} is not in the report");
    }
    assert!(!html.contains("<信息中心>"), "a name from the hub was not escaped");
    assert!(
        html.contains(&format!(">{score_text}<")),
        "the score is not in the report"
    );
    assert!(
        html.contains(&format!(
            r#"<td>records used by others</td><td class="num">{RECORDS}</td>"#
        )),
        "records used is not in the report"
    );
    let references = ["http://", "https://"]
        .iter()
        .map(|scheme| html.matches(scheme).count())
        .sum::<usize>();
    let namespaces = html.matches(r#"xmlns="http://www.w3.org/2000/svg""#).count();
    assert_eq!(references, namespaces, "the report refers to something outside itself");
    for outside in ["<script", "<link", "<img", "@import", "url("] {
        assert!(!html.contains(outside), "the report contains {outside}");
    }
    drop(hub);
}
