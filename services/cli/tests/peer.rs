//! `xinqiao peer` and `certs issue --hub`: the real binary against `xinqiao serve --dev` with a
//! federation division: the admin registers, lists, shows and removes a peer hub; a department
//! is refused; bad input is refused with the field named and changes nothing.

mod support;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

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

#[track_caller]
fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "xinqiao succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn the_admin_registers_lists_shows_and_removes_peer_hubs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("hub");
    let config = dir.path().join("hub.toml");
    std::fs::write(&config, "[federation]\ndivision = \"330100\"\n").expect("write the config");
    let args = vec![
        OsString::from("--dev"),
        OsString::from("--data"),
        data.as_os_str().to_owned(),
        OsString::from("--config"),
        config.as_os_str().to_owned(),
    ];
    let hub = HubProcess::start(free_port(), &args, &dir.path().join("hub.log")).await;
    let run = |who: &str, args: &[&str]| xinqiao(&data, hub.port, who, args);

    // The hub's own federation identity, from its development CA.
    let pki = data.join("pki");
    let issued = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(["certs", "issue", "--dir", &pki.display().to_string(), "--hub", "330100"])
        .output()
        .expect("run xinqiao");
    assert!(succeeds(issued).contains("urn:xinqiao:hub:330100"));
    assert!(pki.join("hub-330100.crt").exists());
    let bad_hub = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(["certs", "issue", "--dir", &pki.display().to_string(), "--hub", "3301"])
        .output()
        .expect("run xinqiao");
    assert!(fails(bad_hub).contains("division"));

    // The county's platform has a CA of its own.
    let county_pki = dir.path().join("county-pki");
    let made = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(["certs", "init", "--out", &county_pki.display().to_string()])
        .output()
        .expect("run xinqiao");
    succeeds(made);
    let county_ca = county_pki.join("ca.crt").display().to_string();
    let add = |who: &str, division: &str, relation: &str| {
        run(
            who,
            &[
                "peer",
                "add",
                "--division",
                division,
                "--name",
                "余杭区数据共享平台",
                "--address",
                "https://127.0.0.1:7443",
                "--peer-ca",
                &county_ca,
                "--relation",
                relation,
            ],
        )
    };

    let added = succeeds(add("admin", "330110", "child"));
    assert!(added.contains("330110") && added.contains("child"), "{added}");
    // Once only; and not by a department.
    assert!(fails(add("admin", "330110", "child")).contains("already exists"));
    assert!(fails(add("11330100MB00010011", "330111", "child")).contains("admin"));
    // Bad input names the field and stores nothing.
    assert!(fails(add("admin", "33011x", "child")).contains("division_code"));

    let listed: Value = serde_json::from_str(&succeeds(run("admin", &["peer", "list", "--json"]))).expect("JSON");
    let peers = listed.as_array().expect("a list");
    assert_eq!(peers.len(), 1, "{listed:#}");
    assert_eq!(peers[0]["division_code"], "330110");
    assert_eq!(peers[0]["relation"], "child");
    assert_eq!(peers[0]["catalogue_cursor"], 0);
    assert!(
        peers[0]["ca_pem"]
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE"))
    );

    let shown = succeeds(run("admin", &["peer", "show", "330110"]));
    assert!(shown.contains("余杭区数据共享平台"), "{shown}");

    let removed = succeeds(run("admin", &["peer", "remove", "330110"]));
    assert!(removed.contains("removed peer hub 330110"), "{removed}");
    assert!(fails(run("admin", &["peer", "show", "330110"])).contains("not found"));
    let listed: Value = serde_json::from_str(&succeeds(run("admin", &["peer", "list", "--json"]))).expect("JSON");
    assert_eq!(listed, Value::Array(vec![]));
}
