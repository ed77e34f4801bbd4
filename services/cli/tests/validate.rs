//! `xinqiao validate` as a user runs it: the binary, a schema from schemas/, and record files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .arg("validate")
        .args(args)
        .output()
        .expect("run xinqiao")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write records");
    path
}

fn schema() -> String {
    repo().join("schemas/legal-entity.json").display().to_string()
}

const GOOD: &str = r#"{"uscc":"11100000000013127D","name":"示范公司","legal_representative":"张三","established_on":"2019-03-01","status":"存续"}"#;
const BAD_CHECK: &str = r#"{"uscc":"11100000000013127E","name":"示范公司","legal_representative":"张三","established_on":"2019-03-01","status":"存续"}"#;

#[test]
fn valid_records_exit_zero_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let records = write(dir.path(), "ok.ndjson", &format!("{GOOD}\n\n{GOOD}\n"));
    let out = validate(&["--schema", &schema(), records.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("checked 2 records: 2 valid, 0 invalid"), "{stdout}");
}

#[test]
fn invalid_records_are_named_by_line_with_reasons_and_fail_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let records = write(dir.path(), "mixed.ndjson", &format!("{GOOD}\n{BAD_CHECK}\nnot json\n"));
    let out = validate(&["--schema", &schema(), records.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("line 2: invalid"), "{stdout}");
    assert!(
        stdout.contains("/uscc  [format]  统一社会信用代码 check character is 'E', expected 'D'"),
        "{stdout}"
    );
    assert!(stdout.contains("line 3: invalid"), "{stdout}");
    assert!(stdout.contains("[parse]"), "{stdout}");
    assert!(!stdout.contains("line 1:"), "{stdout}");
    assert!(
        stdout.contains("checked 3 records: 1 valid, 2 invalid, 0 with warnings"),
        "{stdout}"
    );
}

#[test]
fn lenient_mode_turns_a_wrong_check_character_into_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let records = write(dir.path(), "check.ndjson", &format!("{BAD_CHECK}\n"));
    let out = validate(&["--lenient", "--schema", &schema(), records.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("line 1: warning"), "{stdout}");
    assert!(stdout.contains("1 valid, 0 invalid, 1 with warnings"), "{stdout}");
}

#[test]
fn csv_with_a_header_row_is_typed_by_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "uscc,name,legal_representative,established_on,status,registered_capital\n\
               11100000000013127D,示范公司,张三,2019-03-01,存续,100.5\n\
               11100000000013127D,示范公司,张三,2019-03-01,存续,很多\n";
    let records = write(dir.path(), "entities.csv", csv);
    let out = validate(&["--schema", &schema(), records.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!stdout.contains("line 2:"), "the numeric capital is coerced: {stdout}");
    assert!(
        stdout.contains("line 3: invalid") && stdout.contains("/registered_capital  [type]"),
        "{stdout}"
    );
}

#[test]
fn a_missing_schema_file_is_a_clear_error() {
    let out = validate(&["--schema", "/nonexistent/schema.json", "/nonexistent/records.ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/schema.json"));
}
