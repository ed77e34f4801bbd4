//! Shared by the process-level exchange tests (crash, multinode, memory): hubs run as real
//! `xinqiao serve` child processes, spoken to over mutual TLS with the development PKI.

#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tonic::transport::Channel;
use xinqiao_hub::pki;
use xinqiao_hub::tls::{ClientIdentity, connect};
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::directory_service_client::DirectoryServiceClient;
use xinqiao_proto::v1::exchange_service_client::ExchangeServiceClient;

pub type Exchange = ExchangeServiceClient<Channel>;
pub type Directory = DirectoryServiceClient<Channel>;

/// 市市场监督管理局: the provider in these tests.
pub const SAMR: &str = "11330100MB00010011";
/// 市公安局: a reader.
pub const POLICE: &str = "11330100MB0002002B";
/// What the reader declares when it reads SAMR's unconditionally shared (无条件共享) dataset.
pub const PURPOSE: &str = "集成测试：核对交换结果";

/// How long a hub may take to start before the test calls it broken (debug builds are slow).
const START_GUARD: Duration = Duration::from_secs(120);

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A hub running as `xinqiao serve`, restartable with the same arguments. Its output goes to a
/// log file, shown when it fails to start. Dropping it kills the process.
pub struct HubProcess {
    child: Option<Child>,
    pub port: u16,
    args: Vec<OsString>,
    log: PathBuf,
    pub starts: u32,
}

impl HubProcess {
    /// Starts `xinqiao serve --listen 127.0.0.1:PORT ARGS…` and waits until it accepts connections.
    pub async fn start(port: u16, args: &[OsString], log: &Path) -> HubProcess {
        let mut hub = HubProcess {
            child: None,
            port,
            args: args.to_vec(),
            log: log.to_path_buf(),
            starts: 0,
        };
        hub.spawn_and_wait().await;
        hub
    }

    /// `serve --dev --data DIR`: SQLite in DIR, the development PKI in DIR/pki (made on first start).
    pub async fn dev(data: &Path, port: u16) -> HubProcess {
        let args = vec![
            OsString::from("--dev"),
            OsString::from("--data"),
            data.as_os_str().to_owned(),
        ];
        let hub = Self::start(port, &args, &data.with_extension("log")).await;
        assert!(
            pki::ca_cert_path(&data.join("pki")).exists(),
            "serve --dev made no PKI in {}",
            data.display()
        );
        hub
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the hub is running").id()
    }

    /// The hub's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn spawn_and_wait(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the hub's log");
        let err = log.try_clone().expect("clone the log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .env("XINQIAO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("run xinqiao serve");
        self.child = Some(child);
        self.starts += 1;
        let deadline = tokio::time::Instant::now() + START_GUARD;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the hub exited with {status} while starting (start {}):\n{}",
                    self.starts,
                    self.log_text()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hub did not listen on {addr} within {START_GUARD:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the hub again with the same arguments, on the same port and data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the hub before restarting it");
        self.spawn_and_wait().await;
    }

    /// SIGTERM, and wait for a graceful exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().ok()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mutual-TLS channel to the hub on `port` with a certificate from the PKI in `pki_dir`.
pub async fn channel(port: u16, pki_dir: &Path, files: pki::CertFiles) -> Result<Channel, String> {
    let identity = ClientIdentity {
        ca: pki::ca_cert_path(pki_dir),
        cert: files.cert,
        key: files.key,
    };
    connect(&format!("https://127.0.0.1:{port}"), &identity)
        .await
        .map_err(|e| e.to_string())
}

pub async fn exchange(port: u16, pki_dir: &Path, code: &str) -> Result<Exchange, String> {
    Ok(Exchange::new(
        channel(port, pki_dir, pki::department_files(pki_dir, code)).await?,
    ))
}

/// The exchange client of `code`, retrying until the hub answers the connection.
pub async fn exchange_when_up(port: u16, pki_dir: &Path, code: &str) -> Exchange {
    let deadline = tokio::time::Instant::now() + START_GUARD;
    loop {
        match exchange(port, pki_dir, code).await {
            Ok(client) => return client,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[track_caller]
pub fn ok<T>(result: Result<tonic::Response<T>, tonic::Status>) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!("expected success, got {:?}: {}", status.code(), status.message()),
    }
}

/// An unconditionally shared 库表 entry whose data items legal-entity covers.
fn entry(name: &str) -> pb::EntryContent {
    let item = |name: &str, length| pb::DataItem {
        name: name.into(),
        data_type: "字符型".into(),
        length,
        sensitive: false,
        description: String::new(),
    };
    pb::EntryContent {
        name: name.into(),
        classification: "102001".into(),
        summary: "本市登记注册企业的营业执照信息".into(),
        format: pb::ResourceFormat::Database as i32,
        items: vec![item("统一社会信用代码", 18), item("名称", 200)],
        share: Some(pb::ShareAttributes {
            share_type: pb::ShareType::Unconditional as i32,
            condition: String::new(),
            channel: pb::ShareChannel::Platform as i32,
            exchange_kind: pb::ExchangeKind::Table as i32,
            legal_basis: String::new(),
        }),
        open: Some(pb::OpenAttributes {
            open_type: pb::OpenType::NotOpen as i32,
            condition: String::new(),
        }),
        update_cycle: pb::UpdateCycle::Daily as i32,
        related_codes: vec![],
        maintainer: String::new(),
    }
}

/// As in `xinqiao demo`: 市市场监督管理局 compiles an entry, the admin publishes it, and SAMR
/// opens a table dataset on legal-entity (which `serve --dev` registers) keyed by uscc.
pub async fn open_dataset(port: u16, pki_dir: &Path, name: &str) -> String {
    let samr_channel = channel(port, pki_dir, pki::department_files(pki_dir, SAMR))
        .await
        .expect("connect as SAMR");
    let admin_channel = channel(port, pki_dir, pki::admin_files(pki_dir))
        .await
        .expect("connect as the admin");
    let mut samr = Directory::new(samr_channel.clone());
    let mut admin = Directory::new(admin_channel);
    let code = ok(samr
        .create_entry(pb::CreateEntryRequest {
            content: Some(entry(name)),
        })
        .await)
    .resource_code;
    ok(samr
        .submit_entry(pb::SubmitEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await);
    ok(admin
        .publish_entry(pb::PublishEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await);
    let dataset = ok(Exchange::new(samr_channel)
        .create_dataset(pb::CreateDatasetRequest {
            dataset: code.clone(),
            schema_subject: "legal-entity".into(),
            schema_version: 0,
            key: vec!["uscc".into()],
        })
        .await);
    dataset.dataset
}

/// A valid 统一社会信用代码 for `serial` (below 10,000,000).
pub fn uscc(serial: u64) -> String {
    let first17 = format!("91330100MA{serial:07}");
    let check = xinqiao_domain::identifiers::uscc_check_char(&first17).expect("in the code alphabet");
    format!("{first17}{check}")
}

/// A legal-entity record keyed by `uscc(serial)` whose `name` identifies it.
pub fn record(serial: u64, name: &str) -> Vec<u8> {
    serde_json::json!({
        "uscc": uscc(serial),
        "name": name,
        "legal_representative": "王五",
        "established_on": "2018-05-20",
        "status": "存续",
    })
    .to_string()
    .into_bytes()
}

pub fn upsert(bytes: Vec<u8>) -> pb::RecordChange {
    pb::RecordChange {
        change: Some(pb::record_change::Change::Upsert(bytes)),
    }
}

pub fn publish_request(dataset: &str, idempotency_key: &str, changes: Vec<pb::RecordChange>) -> pb::PublishRequest {
    pb::PublishRequest {
        dataset: dataset.into(),
        idempotency_key: idempotency_key.into(),
        changes,
        policy: pb::BatchPolicy::RejectAll as i32,
        lenient: false,
    }
}

/// The `name` of an upsert's record.
pub fn name_of(change: &pb::Change) -> String {
    let record: serde_json::Value = serde_json::from_slice(&change.record)
        .unwrap_or_else(|e| panic!("change {} carries no JSON record: {e}", change.sequence));
    record["name"].as_str().unwrap_or_default().to_string()
}

/// Every change of a dataset, in pages of 10,000.
pub async fn fetch_all(client: &mut Exchange, dataset: &str) -> Vec<pb::Change> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = ok(client
            .fetch(pb::FetchRequest {
                dataset: dataset.into(),
                after_sequence: after,
                limit: 10_000,
                purpose: PURPOSE.into(),
                grant_id: String::new(),
            })
            .await);
        match page.changes.last() {
            Some(last) => after = last.sequence,
            None => return all,
        }
        all.extend(page.changes);
    }
}

/// Whether a refusal is the hub's answer to the request itself (retrying cannot help), as
/// opposed to the call not getting through.
pub fn is_refusal(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

/// The hub's own internal error (as opposed to a transport failure reported as INTERNAL).
pub fn is_hub_internal_error(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Internal && status.message().contains("the hub's log has the details")
}

/// The resident set size of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A log file next to `dir`.
pub fn log_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = File::create(&path);
    path
}

impl HubProcess {
    /// SIGTERM, then waits at most `guard` for the process to exit. The exit status and how long
    /// the exit took; on timeout the process is killed and the error says so.
    pub async fn terminate_within(&mut self, guard: Duration) -> Result<(std::process::ExitStatus, Duration), String> {
        let Some(mut child) = self.child.take() else {
            return Err("the hub is not running".into());
        };
        let started = tokio::time::Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        if !sent.as_ref().is_ok_and(|s| s.success()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("could not send SIGTERM: {sent:?}"));
        }
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok((status, started.elapsed())),
                Ok(None) if started.elapsed() < guard => tokio::time::sleep(Duration::from_millis(10)).await,
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the hub did not exit within {guard:?} of SIGTERM; killed"));
                }
                Err(e) => return Err(format!("waiting for the hub: {e}")),
            }
        }
    }
}

/// A mutual-TLS channel to the hub on `port` trusting the CA certificates in `ca` (a bundle may
/// hold several) and presenting `files`.
pub async fn channel_trusting(port: u16, ca: &Path, files: &pki::CertFiles) -> Result<Channel, String> {
    let identity = ClientIdentity {
        ca: ca.to_path_buf(),
        cert: files.cert.clone(),
        key: files.key.clone(),
    };
    connect(&format!("https://127.0.0.1:{port}"), &identity)
        .await
        .map_err(|e| e.to_string())
}

/// The PostgreSQL database named by `XINQIAO_TEST_DATABASE_URL`, when it is set.
pub const PG_URL_VAR: &str = "XINQIAO_TEST_DATABASE_URL";

/// A fresh PostgreSQL schema for one test run, made with its migrations; dropped (with `psql`, as
/// the cli crate has no SQL client of its own) when the value is dropped, also when the test fails.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// `None` when `XINQIAO_TEST_DATABASE_URL` is unset or empty; a panic when it is set but the
    /// database cannot be used.
    pub async fn create(prefix: &str) -> Option<TestSchema> {
        let url = std::env::var(PG_URL_VAR).ok().filter(|u| !u.is_empty())?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let schema = TestSchema { url, name };
        let store = xinqiao_store::PgStore::open_in_schema(&schema.url, &schema.name)
            .await
            .unwrap_or_else(|e| panic!("{PG_URL_VAR} is set but the store does not open: {e}"));
        store.close().await;
        Some(schema)
    }

    /// The database URL with `search_path` set to the schema on every connection (sqlx passes
    /// `options=-c search_path=…` to the server at connect).
    pub fn node_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.url, self.name)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let dropped = Command::new("psql")
            .arg(&self.url)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
            .output();
        match dropped {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not drop the test schema {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!(
                "psql is not available ({e}); drop the test schema {} by hand",
                self.name
            ),
        }
    }
}

/// A path as a TOML literal string (the temporary paths in these tests hold no single quote).
pub fn toml_literal(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// `xinqiao certs init --out DIR`: a CA with its hub, admin, evaluator and sample-department
/// certificates, and an empty CRL.
pub fn certs_init(dir: &Path) {
    let init = Command::new(env!("CARGO_BIN_EXE_xinqiao"))
        .args(["certs", "init", "--out"])
        .arg(dir)
        .output()
        .expect("run xinqiao certs init");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
}

// Faults (issue #15, item 5): shared by faults_kill, faults_postgres and faults_disk.

pub type AccessClient = xinqiao_proto::v1::access_service_client::AccessServiceClient<Channel>;
pub type AuditClient = xinqiao_proto::v1::audit_service_client::AuditServiceClient<Channel>;

/// `serve --dev --data DIR`, on SQLite in DIR or on `database_url` (the development PKI in DIR/pki
/// either way), logging to `log`.
pub async fn dev_hub_on(data: &Path, port: u16, database_url: Option<&str>, log: &Path) -> HubProcess {
    let mut args = vec![
        OsString::from("--dev"),
        OsString::from("--data"),
        data.as_os_str().to_owned(),
    ];
    if let Some(url) = database_url {
        args.extend([OsString::from("--database-url"), OsString::from(url)]);
    }
    HubProcess::start(port, &args, log).await
}

/// A request carrying `x-request-id: id`, which the hub writes into the call's audit event.
pub fn with_request_id<T>(message: T, id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("a request id is ASCII"));
    request
}

/// The admin's AuditService client, retrying until the hub answers the connection.
pub async fn audit_admin_when_up(port: u16, pki_dir: &Path) -> AuditClient {
    let deadline = tokio::time::Instant::now() + START_GUARD;
    loop {
        match channel(port, pki_dir, pki::admin_files(pki_dir)).await {
            Ok(channel) => return AuditClient::new(channel),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot connect as the admin: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// VerifyChain as the admin; panics unless the chain is intact and every link is keyed (the
/// development PKI's `audit.keys` exists before the first event).
pub async fn assert_audit_chain_intact(audit: &mut AuditClient, when: &str) -> pb::VerifyChainResponse {
    let verdict = ok(audit.verify_chain(pb::VerifyChainRequest { anchor: None }).await);
    assert!(
        verdict.intact,
        "{when}: the audit chain is broken at event {}: {}",
        verdict.broken_sequence, verdict.broken_reason
    );
    assert!(
        verdict.verified > 0 && verdict.unkeyed == 0,
        "{when}: every link is keyed: {verdict:?}"
    );
    verdict
}

/// Every audit event after sequence `after`, as the admin reads them, in pages of 1,000.
pub async fn audit_events_after(audit: &mut AuditClient, after: u64) -> Vec<pb::AuditEvent> {
    let mut events: Vec<pb::AuditEvent> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ok(audit
            .list_events(pb::ListEventsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await);
        events.extend(page.events.into_iter().filter(|e| e.sequence > after));
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

/// A well-mixed 64-bit value of `seed` (SplitMix64), for varied but repeatable test timings.
pub fn splitmix(seed: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The entry `open_dataset` uses, shared as `share` through `kind`: a condition and legal basis
/// where the share type needs them, and the 电子文件 format for a file (文件) entry.
pub fn entry_shared_as(name: &str, share: pb::ShareType, kind: pb::ExchangeKind) -> pb::EntryContent {
    let mut content = entry(name);
    let restricted = share != pb::ShareType::Unconditional;
    content.share = Some(pb::ShareAttributes {
        share_type: share as i32,
        condition: if restricted {
            "限于法定职责范围内使用".into()
        } else {
            String::new()
        },
        channel: pb::ShareChannel::Platform as i32,
        exchange_kind: kind as i32,
        legal_basis: if restricted {
            "《政务信息资源共享管理暂行办法》".into()
        } else {
            String::new()
        },
    });
    if kind == pb::ExchangeKind::File {
        content.format = pb::ResourceFormat::ElectronicFile as i32;
    }
    content
}

/// Like `open_dataset`, for any entry content of SAMR's: the admin publishes it and SAMR opens its
/// dataset (a table on legal-entity keyed by uscc, or a file dataset for a 文件 entry).
pub async fn open_dataset_with(port: u16, pki_dir: &Path, content: pb::EntryContent) -> String {
    let files = content.share.as_ref().map(|s| s.exchange_kind) == Some(pb::ExchangeKind::File as i32);
    let samr_channel = channel(port, pki_dir, pki::department_files(pki_dir, SAMR))
        .await
        .expect("connect as SAMR");
    let admin_channel = channel(port, pki_dir, pki::admin_files(pki_dir))
        .await
        .expect("connect as the admin");
    let mut samr = Directory::new(samr_channel.clone());
    let code = ok(samr
        .create_entry(pb::CreateEntryRequest { content: Some(content) })
        .await)
    .resource_code;
    ok(samr
        .submit_entry(pb::SubmitEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await);
    ok(Directory::new(admin_channel)
        .publish_entry(pb::PublishEntryRequest {
            resource_code: code.clone(),
            expected_version: 0,
        })
        .await);
    let request = if files {
        pb::CreateDatasetRequest {
            dataset: code,
            ..Default::default()
        }
    } else {
        pb::CreateDatasetRequest {
            dataset: code,
            schema_subject: "legal-entity".into(),
            schema_version: 0,
            key: vec!["uscc".into()],
        }
    };
    ok(Exchange::new(samr_channel).create_dataset(request).await).dataset
}

/// The xinqiao binary as a person runs it, pointed at one hub and its development PKI; `dir`
/// holds the files a test writes for it.
pub struct Xinqiao {
    pub hub: String,
    pub pki: PathBuf,
    pub dir: PathBuf,
}

impl Xinqiao {
    pub fn run(&self, who: &str, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_xinqiao"))
            .args(args)
            .arg("--as")
            .arg(who)
            .env("XINQIAO_HUB", &self.hub)
            .env("XINQIAO_PKI", &self.pki)
            .env_remove("XINQIAO_AS")
            .output()
            .expect("run xinqiao")
    }

    /// Runs a command that must succeed; its stdout.
    #[track_caller]
    pub fn ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "xinqiao {} --as {who} failed:\n{stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs a command with --json that must succeed; its output.
    #[track_caller]
    pub fn json(&self, who: &str, args: &[&str]) -> serde_json::Value {
        let stdout = self.ok(who, &[args, &["--json"]].concat());
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("xinqiao {} printed no JSON ({e}):\n{stdout}", args.join(" ")))
    }

    /// Runs a command that must fail; its stderr.
    #[track_caller]
    pub fn fails(&self, who: &str, args: &[&str]) -> String {
        let out = self.run(who, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "xinqiao {} --as {who} succeeded, expected a refusal:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        stderr
    }

    /// Writes a file for the binary to read; its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write a file");
        path.display().to_string()
    }
}
