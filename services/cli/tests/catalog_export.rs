//! `xinqiao catalog export --format dcat`: the real binary against `xinqiao serve --dev` writes the
//! published catalogue as DCAT-AP JSON-LD, to standard output or to a file with `-o`, and lists
//! an entry once it is published, never before.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

const ENTRY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/examples/entry-enterprise-registration.toml"
);

/// `xinqiao ARGS --as WHO` against the hub at `port` with its development PKI in `data/pki`.
fn xinqiao(data: &Path, port: u16, who: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(args)
        .args(["--as", who])
        .env("XINQIAO_HUB", format!("https://127.0.0.1:{port}"))
        .env("XINQIAO_PKI", data.join("pki"))
        .env_remove("XINQIAO_AS")
        .output()
        .expect("run xinqiao")
}

/// The standard output of a command that must succeed.
#[track_caller]
fn succeeds(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "xinqiao failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The resource codes of the datasets in an exported document.
fn exported_codes(document: &str) -> Vec<String> {
    let document: Value =
        serde_json::from_str(document).unwrap_or_else(|e| panic!("the export is not JSON ({e}):\n{document}"));
    assert_eq!(document["@type"], "dcat:Catalog", "{document:#}");
    document["dcat:dataset"]
        .as_array()
        .unwrap_or_else(|| panic!("no dcat:dataset list: {document:#}"))
        .iter()
        .map(|d| d["dct:identifier"].as_str().expect("an identifier").to_string())
        .collect()
}

#[tokio::test]
async fn catalog_export_writes_the_published_catalogue_as_dcat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let hub = HubProcess::dev(&data, free_port()).await;
    let run = |who: &str, args: &[&str]| xinqiao(&data, hub.port, who, args);

    let created: Value = serde_json::from_str(&succeeds(run(SAMR, &["catalog", "create", ENTRY, "--json"])))
        .expect("the created entry as JSON");
    let code = created["resource_code"].as_str().expect("a resource code").to_string();
    succeeds(run(SAMR, &["catalog", "submit", &code]));
    // Pending review: not in the catalogue yet.
    let before = succeeds(run(POLICE, &["catalog", "export", "--format", "dcat"]));
    assert_eq!(exported_codes(&before), Vec::<String>::new());

    succeeds(run("admin", &["catalog", "publish", &code]));
    let printed = succeeds(run(POLICE, &["catalog", "export", "--format", "dcat"]));
    assert_eq!(exported_codes(&printed), std::slice::from_ref(&code));
    assert!(printed.contains("\"@language\": \"zh\""), "{printed}");

    // To a file: the same document, and a line saying where it went.
    let file = dir.path().join("catalog.jsonld");
    let said = succeeds(run(SAMR, &["catalog", "export", "-o", &file.display().to_string()]));
    assert!(
        said.contains("catalog.jsonld") && said.contains("application/ld+json"),
        "{said}"
    );
    let written = std::fs::read_to_string(&file).expect("the written document");
    assert_eq!(written, printed);

    // A format the hub does not write is refused before anything is asked.
    let unknown = run(SAMR, &["catalog", "export", "--format", "rdfxml"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("dcat"),
        "the refusal names the formats: {}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
