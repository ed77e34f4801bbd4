//! Access under the sharing rules (国发〔2016〕51号) over gRPC: who reads and writes what (the
//! access matrix), projection and masking under grants, files granted whole, revocation ending
//! live reads, deadlines in working days, the request workflow and error reports (纠错).
//!
//! Timeouts below only keep a broken hub from hanging the suite, except where a test says that
//! something must happen within a bound.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tonic::{Code, Response, Status};
use xinqiao_tests::chrono::{Datelike, NaiveDate, Utc, Weekday};
use xinqiao_tests::v1 as pb;
use xinqiao_tests::*;

on_each_backend!(
    the_access_matrix,
    grants_project_and_mask_every_read_path,
    owners_and_open_readers_get_the_published_bytes,
    file_datasets_are_granted_whole,
    several_active_grants_are_told_apart_by_grant_id,
    revocation_ends_live_subscriptions_at_once,
    expiry_and_withdrawal_end_live_reads,
    requests_are_due_ten_working_days_after_submission,
    overdue_requests_are_listed_as_such,
    the_request_workflow,
    error_reports_are_filed_and_resolved,
);

/// How long a grant approved to expire soon lives.
const SHORT_GRANT: Duration = Duration::from_secs(4);

/// The file every file dataset of these tests holds.
const FILE_NAME: &str = "低保名单.csv";

fn file_bytes() -> Vec<u8> {
    let mut text = String::from("公民身份号码,姓名\n");
    for serial in 1..=200 {
        text.push_str(&format!("{},居民{serial}\n", resident_id(serial)));
    }
    text.into_bytes()
}

/// Refused with INVALID_ARGUMENT naming `field`: exactly, indexed (`fields[0]`), or inside the
/// request's application (`application.fields[0]`).
#[track_caller]
fn names_field(status: &Status, field: &str) {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "expected INVALID_ARGUMENT on {field}, got {:?}: {}",
        status.code(),
        status.message()
    );
    let named = violated_fields(status);
    let matches = |n: &String| {
        let bare = n.strip_prefix("application.").unwrap_or(n);
        bare == field || bare.starts_with(&format!("{field}["))
    };
    assert!(
        named.iter().any(matches),
        "expected a violation on {field}, got {named:?} ({})",
        status.message()
    );
}

#[track_caller]
fn invalid_on<T: std::fmt::Debug>(result: Result<Response<T>, Status>, field: &str) -> Status {
    let status = refused(result, Code::InvalidArgument);
    names_field(&status, field);
    status
}

/// Waits until the grant's expiry has passed, as its grantee sees it.
async fn until_expired(access: &mut Access, grant_id: &str) {
    let deadline = Instant::now() + SHORT_GRANT + Duration::from_secs(30);
    loop {
        let grant = ok(access.get_grant(get_grant(grant_id)).await);
        if grant.state == pb::GrantState::Expired as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "grant {grant_id} never expired: {grant:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn in_a_few_seconds() -> Timestamp {
    timestamp(Utc::now() + xinqiao_tests::chrono::Duration::from_std(SHORT_GRANT).expect("a short span"))
}

// ---------------------------------------------------------------------------------------------
// The access matrix

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// 提供方: SAMR, whose datasets these are.
    Owner,
    /// 使用方: POLICE, in the grant state of the scenario.
    Other,
    /// The platform admin.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sharing {
    /// 无条件共享.
    Unconditional,
    /// 有条件共享.
    Conditional,
    /// 不予共享.
    NotShared,
    /// A published entry withdrawn (下线) afterwards: conditional when POLICE held a grant on it,
    /// unconditional otherwise.
    Withdrawn,
}

/// Where POLICE stands in the access workflow for the scenario's datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GrantState {
    NoGrant,
    /// A request not yet answered.
    Pending,
    Rejected,
    Active,
    /// Approved to expire a few seconds later, and read after that.
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Fetch,
    Snapshot,
    /// The first message of a subscription.
    Subscribe,
    /// On the scenario's file dataset.
    DownloadFile,
    Acknowledge,
    GetConsumer,
    ReportError,
    Publish,
    /// On the scenario's file dataset.
    StartUpload,
}

/// The columns of [`MATRIX`].
const RPCS: [Rpc; 9] = [
    Rpc::Fetch,
    Rpc::Snapshot,
    Rpc::Subscribe,
    Rpc::DownloadFile,
    Rpc::Acknowledge,
    Rpc::GetConsumer,
    Rpc::ReportError,
    Rpc::Publish,
    Rpc::StartUpload,
];

/// What a cell expects: the call is allowed (and delivers), or refused with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Refused(Code),
}

const OK: Expect = Expect::Allowed;
const PD: Expect = Expect::Refused(Code::PermissionDenied);
const NF: Expect = Expect::Refused(Code::NotFound);
const FP: Expect = Expect::Refused(Code::FailedPrecondition);

/// The scenarios: the sharing type of the datasets and POLICE's standing in the workflow.
const SCENARIOS: [(Sharing, GrantState); 10] = [
    (Sharing::Unconditional, GrantState::NoGrant),
    (Sharing::Conditional, GrantState::NoGrant),
    (Sharing::Conditional, GrantState::Pending),
    (Sharing::Conditional, GrantState::Rejected),
    (Sharing::Conditional, GrantState::Active),
    (Sharing::Conditional, GrantState::Expired),
    (Sharing::Conditional, GrantState::Revoked),
    (Sharing::NotShared, GrantState::NoGrant),
    (Sharing::Withdrawn, GrantState::Active),
    (Sharing::Withdrawn, GrantState::NoGrant),
];

type Row = (Role, Sharing, GrantState, [Expect; 9]);

/// The rules, written out. Columns: Fetch, Snapshot, Subscribe, DownloadFile, Acknowledge,
/// GetConsumer, ReportError, Publish, StartUpload.
fn matrix() -> Vec<Row> {
    use GrantState::*;
    use Role::*;
    use Sharing::*;
    vec![
        // The provider reads its datasets whatever their sharing type, also once withdrawn; it
        // corrects its data by publishing, not by reporting errors; it publishes only while the
        // entry is published.
        (Owner, Unconditional, NoGrant, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, NoGrant, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, Pending, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, Rejected, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, Active, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, Expired, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Conditional, Revoked, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, NotShared, NoGrant, [OK, OK, OK, OK, OK, OK, FP, OK, OK]),
        (Owner, Withdrawn, Active, [OK, OK, OK, OK, OK, OK, FP, FP, FP]),
        (Owner, Withdrawn, NoGrant, [OK, OK, OK, OK, OK, OK, FP, FP, FP]),
        // Another department reads 无条件共享 data, and 有条件共享 data only under an active
        // grant; never 不予共享; a withdrawn entry no longer exists for it. It never writes.
        (Other, Unconditional, NoGrant, [OK, OK, OK, OK, OK, OK, OK, PD, PD]),
        (Other, Conditional, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, Conditional, Pending, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, Conditional, Rejected, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, Conditional, Active, [OK, OK, OK, OK, OK, OK, OK, PD, PD]),
        (Other, Conditional, Expired, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, Conditional, Revoked, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, NotShared, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Other, Withdrawn, Active, [NF, NF, NF, NF, NF, NF, NF, NF, NF]),
        (Other, Withdrawn, NoGrant, [NF, NF, NF, NF, NF, NF, NF, NF, NF]),
        // The platform admin manages the exchange but neither reads nor writes records
        // (separation of duties), whatever the entry's state.
        (Admin, Unconditional, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, Pending, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, Rejected, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, Active, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, Expired, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Conditional, Revoked, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, NotShared, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Withdrawn, Active, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
        (Admin, Withdrawn, NoGrant, [PD, PD, PD, PD, PD, PD, PD, PD, PD]),
    ]
}

/// A scenario's datasets: a table of two residents and a file dataset holding [`FILE_NAME`].
struct Fixture {
    table: String,
    files: String,
}

/// A role's clients.
struct Clients {
    exchange: Exchange,
    access: Access,
}

/// Opens a scenario's datasets and puts POLICE in its grant state; returns the fixture and the
/// grants that must be waited out (the expired scenario).
async fn prepare(hub: &TestHub, index: usize, sharing: Sharing, state: GrantState) -> (Fixture, Vec<String>) {
    let share = match (sharing, state) {
        (Sharing::Unconditional, _) | (Sharing::Withdrawn, GrantState::NoGrant) => pb::ShareType::Unconditional,
        (Sharing::Conditional, _) | (Sharing::Withdrawn, _) => pb::ShareType::Conditional,
        (Sharing::NotShared, _) => pb::ShareType::NotShared,
    };
    let mut samr = hub.exchange(SAMR).await;
    let table = hub
        .open_residents(SAMR, &format!("低保对象信息{index}"), share)
        .await
        .dataset;
    ok(samr
        .publish(batch(
            &table,
            "residents",
            vec![upsert_resident(1, "张三丰"), upsert_resident(2, "李四")],
        ))
        .await);
    let files = hub
        .open_files_shared(SAMR, &format!("低保名单文件{index}"), share)
        .await
        .dataset;
    hub.upload_file(SAMR, &files, FILE_NAME, &file_bytes()).await;

    let mut provider = hub.access(SAMR).await;
    let mut expiring = Vec::new();
    for (dataset, fields) in [(&table, &RESIDENT_FIELDS[..]), (&files, &[][..])] {
        match state {
            GrantState::NoGrant => {}
            GrantState::Pending => {
                hub.apply(POLICE, dataset, fields).await;
            }
            GrantState::Rejected => {
                let request = hub.apply(POLICE, dataset, fields).await;
                ok(provider
                    .reject_request(pb::RejectRequestRequest {
                        request_id: request.request_id,
                        reason: "申请用途与共享条件不符".into(),
                    })
                    .await);
            }
            GrantState::Active => {
                hub.grant(SAMR, POLICE, dataset, fields, approval(&[], &[])).await;
            }
            GrantState::Expired => {
                let mut soon = approval(&[], &[]);
                soon.expires_at = Some(in_a_few_seconds());
                let (_, grant) = hub.grant(SAMR, POLICE, dataset, fields, soon).await;
                assert_eq!(grant.state, pb::GrantState::Active as i32, "active until it expires");
                expiring.push(grant.grant_id);
            }
            GrantState::Revoked => {
                let (_, grant) = hub.grant(SAMR, POLICE, dataset, fields, approval(&[], &[])).await;
                ok(provider
                    .revoke_grant(revoke_grant(&grant.grant_id, "核验事项已办结"))
                    .await);
            }
        }
    }
    if sharing == Sharing::Withdrawn {
        let mut directory = hub.dept(SAMR).await;
        for code in [&table, &files] {
            ok(directory.withdraw_entry(withdraw(code, "数据源调整")).await);
        }
    }
    (Fixture { table, files }, expiring)
}

/// Makes the call of `rpc` on the fixture; how much it delivered (records, bytes, or 1 for a call
/// that answers one item), or its refusal. Streams count as refused when their first message is
/// an error: nothing was delivered before it.
async fn attempt(rpc: Rpc, clients: &mut Clients, fixture: &Fixture, purpose: &str, n: u32) -> Result<usize, Status> {
    let table = fixture.table.as_str();
    let files = fixture.files.as_str();
    let ex = &mut clients.exchange;
    match rpc {
        Rpc::Fetch => ex
            .fetch(fetch_as(table, 0, 0, purpose, ""))
            .await
            .map(|r| r.into_inner().changes.len()),
        Rpc::Snapshot => first_message(ex.snapshot(snapshot_as(table, purpose, "")).await)
            .await
            .map(|m| m.map_or(0, |chunk| chunk.records.len())),
        Rpc::Subscribe => first_message(ex.subscribe(subscribe_as(table, 0, purpose, "")).await)
            .await
            .map(|m| m.map_or(0, |batch| batch.changes.len())),
        Rpc::DownloadFile => first_message(ex.download_file(download_as(files, FILE_NAME, purpose, "")).await)
            .await
            .map(|m| m.map_or(0, |data| data.data.len())),
        Rpc::Acknowledge => ex
            .acknowledge(pb::AcknowledgeRequest {
                dataset: table.into(),
                consumer: "matrix".into(),
                sequence: 1,
            })
            .await
            .map(|r| r.into_inner().acknowledged_sequence as usize),
        Rpc::GetConsumer => ex
            .get_consumer(pb::GetConsumerRequest {
                dataset: table.into(),
                consumer: "matrix".into(),
            })
            .await
            .map(|r| r.into_inner().acknowledged_sequence as usize),
        Rpc::ReportError => clients
            .access
            .report_error(pb::ReportErrorRequest {
                dataset: table.into(),
                sequence: 1,
                key: Vec::new(),
                description: "姓名与户籍登记不一致".into(),
            })
            .await
            .map(|_| 1),
        Rpc::Publish => ex
            .publish(batch(
                table,
                &format!("matrix-{n}"),
                vec![upsert_resident(100 + n, "赵六")],
            ))
            .await
            .map(|r| r.into_inner().accepted as usize),
        Rpc::StartUpload => ex
            .start_upload(pb::StartUploadRequest {
                dataset: files.into(),
                file_name: format!("补充名单{n}.csv"),
                size: 3,
                sha256: sha256_hex(b"abc"),
            })
            .await
            .map(|_| 1),
    }
}

fn describe(outcome: &Result<usize, Status>) -> String {
    match outcome {
        Ok(n) => format!("allowed, delivering {n}"),
        Err(status) => format!("{:?} ({})", status.code(), status.message()),
    }
}

/// Role × sharing type × grant state × RPC: each call allowed or refused as [`matrix`] says, and
/// a refused read delivering no record.
async fn the_access_matrix(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;

    // The table covers every role and scenario once.
    let rows = matrix();
    for role in [Role::Owner, Role::Other, Role::Admin] {
        for (sharing, state) in SCENARIOS {
            let count = rows
                .iter()
                .filter(|(r, s, g, _)| (*r, *s, *g) == (role, sharing, state))
                .count();
            assert_eq!(
                count, 1,
                "the matrix has {count} rows for {role:?} × {sharing:?} × {state:?}"
            );
        }
    }

    // The expiring scenario first, so that its grants run out while the others are prepared.
    let mut order = SCENARIOS.to_vec();
    order.sort_by_key(|(_, state)| *state != GrantState::Expired);
    let mut fixtures = BTreeMap::new();
    let mut expiring = Vec::new();
    for (index, (sharing, state)) in order.into_iter().enumerate() {
        let (fixture, grants) = prepare(&hub, index, sharing, state).await;
        fixtures.insert((sharing, state), fixture);
        expiring.extend(grants);
    }
    let mut police_access = hub.access(POLICE).await;
    for grant in &expiring {
        until_expired(&mut police_access, grant).await;
    }

    let mut clients = BTreeMap::new();
    for (role, exchange, access) in [
        (Role::Owner as u8, hub.exchange(SAMR).await, hub.access(SAMR).await),
        (Role::Other as u8, hub.exchange(POLICE).await, hub.access(POLICE).await),
        (Role::Admin as u8, hub.exchange_admin().await, hub.access_admin().await),
    ] {
        clients.insert(role, Clients { exchange, access });
    }

    let mut failures = Vec::new();
    let mut n = 0;
    for (role, sharing, state, expected) in &rows {
        let fixture = &fixtures[&(*sharing, *state)];
        let role_clients = clients.get_mut(&(*role as u8)).expect("clients of every role");
        for (rpc, expect) in RPCS.iter().zip(expected) {
            n += 1;
            let outcome = attempt(*rpc, role_clients, fixture, PURPOSE, n).await;
            let right = match (expect, &outcome) {
                (Expect::Allowed, Ok(delivered)) => *delivered > 0,
                (Expect::Refused(code), Err(status)) => status.code() == *code,
                _ => false,
            };
            if !right {
                failures.push(format!(
                    "{role:?} × {sharing:?} × grant {state:?} × {rpc:?}: expected {}, got {}",
                    match expect {
                        Expect::Allowed => "allowed, delivering".to_string(),
                        Expect::Refused(code) => format!("{code:?}"),
                    },
                    describe(&outcome)
                ));
            }
        }
    }

    // What each side is told of its standing; a withdrawn entry's dataset is gone for others
    // while its provider keeps it, and the admin still sees the entry itself.
    let owner = &mut clients.get_mut(&(Role::Owner as u8)).expect("SAMR").exchange;
    for (key, fixture) in &fixtures {
        for dataset in [&fixture.table, &fixture.files] {
            let standing = owner
                .get_dataset(get_dataset(dataset))
                .await
                .map(|d| d.into_inner().standing);
            if standing.as_ref().ok() != Some(&(pb::Standing::Owner as i32)) {
                failures.push(format!(
                    "Owner × {key:?}: GetDataset standing {standing:?}, expected OWNER"
                ));
            }
        }
    }
    let other = &mut clients.get_mut(&(Role::Other as u8)).expect("POLICE").exchange;
    for (key, fixture) in &fixtures {
        let expected = match key {
            (Sharing::Unconditional, _) => Ok(pb::Standing::Open as i32),
            (Sharing::Conditional, GrantState::Active) => Ok(pb::Standing::Granted as i32),
            (Sharing::Conditional, _) => Ok(pb::Standing::Requestable as i32),
            (Sharing::NotShared, _) => Ok(pb::Standing::NotShared as i32),
            (Sharing::Withdrawn, _) => Err(Code::NotFound),
        };
        for dataset in [&fixture.table, &fixture.files] {
            let standing = other
                .get_dataset(get_dataset(dataset))
                .await
                .map(|d| d.into_inner().standing)
                .map_err(|s| s.code());
            if standing != expected {
                failures.push(format!(
                    "Other × {key:?}: GetDataset gave {standing:?}, expected {expected:?}"
                ));
            }
        }
    }
    let mut request = pb::ListDatasetsRequest {
        standing: pb::Standing::Granted as i32,
        ..Default::default()
    };
    let mut listed = Vec::new();
    loop {
        let page = ok(other.list_datasets(request.clone()).await);
        listed.extend(page.datasets.into_iter().map(|d| d.dataset));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    listed.sort();
    let active = &fixtures[&(Sharing::Conditional, GrantState::Active)];
    let mut expected = vec![active.table.clone(), active.files.clone()];
    expected.sort();
    if listed != expected {
        failures.push(format!(
            "Other: ListDatasets standing=GRANTED lists {listed:?}, expected {expected:?}"
        ));
    }
    let withdrawn = &fixtures[&(Sharing::Withdrawn, GrantState::Active)].table;
    let entry = hub.admin().await.get_entry(get(withdrawn, 0)).await;
    if !matches!(&entry, Ok(e) if e.get_ref().state == pb::EntryState::Withdrawn as i32) {
        failures.push(format!("Admin: GetEntry of a withdrawn entry gave {entry:?}"));
    }
    let entry = hub.dept(POLICE).await.get_entry(get(withdrawn, 0)).await;
    if entry.as_ref().map_err(|s| s.code()).err() != Some(Code::NotFound) {
        failures.push(format!(
            "Other: GetEntry of a withdrawn entry gave {entry:?}, expected NOT_FOUND"
        ));
    }

    // The purpose column: a department reading another's 无条件共享 data declares why; the
    // provider and a grantee need not (the grant carries the purpose).
    let open = &fixtures[&(Sharing::Unconditional, GrantState::NoGrant)];
    let granted = &fixtures[&(Sharing::Conditional, GrantState::Active)];
    for rpc in [Rpc::Fetch, Rpc::Snapshot, Rpc::Subscribe, Rpc::DownloadFile] {
        for purpose in ["", "   "] {
            let other = clients.get_mut(&(Role::Other as u8)).expect("POLICE");
            n += 1;
            let outcome = attempt(rpc, other, open, purpose, n).await;
            let right = match &outcome {
                Err(status) if status.code() == Code::InvalidArgument => {
                    violated_fields(status).iter().any(|f| f == "purpose")
                }
                _ => false,
            };
            if !right {
                failures.push(format!(
                    "Other × Unconditional × {rpc:?} with purpose {purpose:?}: expected INVALID_ARGUMENT on purpose, got {}",
                    describe(&outcome)
                ));
            }
        }
        for (role, fixture, what) in [(Role::Owner, open, "the provider"), (Role::Other, granted, "a grantee")] {
            let role_clients = clients.get_mut(&(role as u8)).expect("clients");
            n += 1;
            let outcome = attempt(rpc, role_clients, fixture, "", n).await;
            if !matches!(outcome, Ok(delivered) if delivered > 0) {
                failures.push(format!(
                    "{what} × {rpc:?} without a purpose: expected allowed, got {}",
                    describe(&outcome)
                ));
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} of the access matrix's cells differ from the rules:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Projection and masking

/// Keeps the first `first` and last `last` characters of `text`, the rest `*`.
fn kept(text: &str, first: usize, last: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut out: String = chars[..first].iter().collect();
    out.push_str(&"*".repeat(n - first - last));
    out.extend(&chars[n - last..]);
    out
}

/// The masked 公民身份号码 of resident `serial`: first 6 and last 4.
fn masked_id(serial: u32) -> String {
    let id = resident_id(serial);
    format!("330106********{}", &id[14..])
}

/// Resident `serial` as the grant of [`masking_grant`] shows it.
fn masked_resident(serial: u32, masked_name: &str) -> Json {
    serde_json::json!({
        "resident_id": masked_id(serial),
        "name": masked_name,
        "mobile": format!("138****{serial:04}"),
        "address": format!("浙江省杭州市******{serial}号"),
    })
}

/// Grants the four personal fields of the five requested, each masked with another rule.
fn masking_grant() -> pb::ApproveRequestRequest {
    approval(
        &["resident_id", "name", "mobile", "address"],
        &[
            ("resident_id", "resident_id"),
            ("name", "name"),
            ("mobile", "mobile"),
            ("address", "keep:6:2"),
        ],
    )
}

/// Checks changes as the masking grant delivers them: `expected` maps each sequence to the
/// masked record of an upsert, or to the masked key alone for a delete.
#[track_caller]
fn assert_masked(changes: &[pb::Change], expected: &BTreeMap<u64, (u32, Option<&str>)>) {
    assert_eq!(
        sequences(changes),
        expected.keys().copied().collect::<Vec<_>>(),
        "the changes delivered"
    );
    for change in changes {
        let (serial, name) = expected[&change.sequence];
        assert_eq!(
            key_of(change),
            serde_json::json!([masked_id(serial)]),
            "the key of change {} is masked as its key property is",
            change.sequence
        );
        match name {
            Some(name) => {
                assert_eq!(change.op, pb::ChangeOp::Upsert as i32);
                assert_eq!(
                    record_of(change),
                    masked_resident(serial, name),
                    "change {}: granted fields only, masked",
                    change.sequence
                );
            }
            None => {
                assert_eq!(change.op, pb::ChangeOp::Delete as i32);
                assert!(
                    change.record.is_empty(),
                    "a delete carries the key only, got {:?}",
                    String::from_utf8_lossy(&change.record)
                );
            }
        }
    }
}

async fn grants_project_and_mask_every_read_path(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    ok(samr
        .publish(batch(
            &dataset,
            "first",
            vec![
                upsert_resident(1, "张三丰"),
                upsert_resident(2, "李四"),
                upsert_resident(3, "欧阳娜娜"),
            ],
        ))
        .await);
    let (_, grant) = hub
        .grant(SAMR, POLICE, &dataset, &RESIDENT_FIELDS, masking_grant())
        .await;
    assert_eq!(grant.fields, ["resident_id", "name", "mobile", "address"]);
    assert_eq!(
        grant
            .masks
            .iter()
            .map(|m| (m.field.as_str(), m.rule.as_str()))
            .collect::<Vec<_>>(),
        [
            ("resident_id", "resident_id"),
            ("name", "name"),
            ("mobile", "mobile"),
            ("address", "keep:6:2")
        ]
    );
    ok(samr.publish(batch(&dataset, "second", vec![delete_resident(2)])).await);

    let mut police = hub.exchange(POLICE).await;
    let mut expected = BTreeMap::from([
        (1, (1, Some("张**"))),
        (2, (2, Some("李*"))),
        (3, (3, Some("欧***"))),
        (4, (2, None)),
    ]);

    // Fetch: under the one active grant, with or without naming it, with or without a purpose.
    assert_masked(&fetch_all_as(&mut police, &dataset, "", "").await, &expected);
    assert_masked(
        &fetch_all_as(&mut police, &dataset, PURPOSE, &grant.grant_id).await,
        &expected,
    );
    let page = ok(police.fetch(fetch_as(&dataset, 3, 1, "", "")).await);
    assert_masked(&page.changes, &BTreeMap::from([(4, (2, None))]));
    assert_eq!(page.last_sequence, 4);

    // Snapshot: the present keys, masked.
    let mut stream = ok(police.snapshot(snapshot_as(&dataset, "", "")).await);
    let (chunks, error) = drain(&mut stream).await;
    assert!(error.is_none(), "the snapshot ends cleanly: {error:?}");
    let records: Vec<pb::Change> = chunks.into_iter().flat_map(|c| c.records).collect();
    assert_masked(
        &records,
        &BTreeMap::from([(1, (1, Some("张**"))), (3, (3, Some("欧***")))]),
    );

    // Subscribe: the log, then a live change, masked alike.
    let mut live = ok(police.subscribe(subscribe_as(&dataset, 0, "", "")).await);
    let mut received = Vec::new();
    while received.len() < 4 {
        match timeout(STREAM_GUARD, live.message()).await {
            Ok(Ok(Some(batch))) => received.extend(batch.changes),
            other => panic!("the subscription failed: {other:?}"),
        }
    }
    ok(samr
        .publish(batch(&dataset, "third", vec![upsert_resident(4, "王五")]))
        .await);
    while received.len() < 5 {
        match timeout(STREAM_GUARD, live.message()).await {
            Ok(Ok(Some(batch))) => received.extend(batch.changes),
            other => panic!("the subscription failed: {other:?}"),
        }
    }
    expected.insert(5, (4, Some("王*")));
    assert_masked(&received, &expected);
    drop(live);

    // Another grantee, other rules: keep:F:L on the key property, and on a number (masked as
    // its text).
    let (_, hrss_grant) = hub
        .grant(
            SAMR,
            HRSS,
            &dataset,
            &["resident_id", "monthly_income"],
            approval(&[], &[("resident_id", "keep:3:4"), ("monthly_income", "keep:1:0")]),
        )
        .await;
    let mut hrss = hub.exchange(HRSS).await;
    let seen = fetch_all_as(&mut hrss, &dataset, "", &hrss_grant.grant_id).await;
    assert_eq!(sequences(&seen), [1, 2, 3, 4, 5]);
    for change in &seen {
        let serial = expected[&change.sequence].0;
        let key = kept(&resident_id(serial), 3, 4);
        assert_eq!(key_of(change), serde_json::json!([key]));
        if change.op == pb::ChangeOp::Upsert as i32 {
            assert_eq!(
                record_of(change),
                serde_json::json!({"resident_id": key, "monthly_income": "1***"}),
                "change {}",
                change.sequence
            );
        } else {
            assert!(change.record.is_empty());
        }
    }
    assert_eq!(kept("浙江省杭州市西湖区文三路1号", 6, 2), "浙江省杭州市******1号");
    hub.finish().await;
}

/// The provider and a reader of 无条件共享 data get each record exactly as it was published.
async fn owners_and_open_readers_get_the_published_bytes(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let conditional = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    let published: Vec<String> = vec![resident_text(1, "张三丰"), resident_text(2, "李四")];
    for dataset in [&conditional, &open] {
        ok(samr
            .publish(batch(
                dataset,
                "first",
                published.iter().map(|t| upsert_bytes(t.clone().into_bytes())).collect(),
            ))
            .await);
    }
    // A masking grant to someone else changes nothing for the provider.
    hub.grant(SAMR, POLICE, &conditional, &RESIDENT_FIELDS, masking_grant())
        .await;

    let mut police = hub.exchange(POLICE).await;
    let mut samr_again = samr.clone();
    let readers: [(&mut Exchange, &str); 3] = [
        (&mut samr, &conditional),
        (&mut samr_again, &open),
        (&mut police, &open),
    ];
    for (client, dataset) in readers {
        let fetched = fetch_all_as(client, dataset, PURPOSE, "").await;
        let texts: Vec<String> = fetched
            .iter()
            .map(|c| String::from_utf8(c.record.clone()).expect("UTF-8"))
            .collect();
        assert_eq!(texts, published, "Fetch of {dataset}: the published bytes");
        assert_eq!(
            key_of(&fetched[0]),
            serde_json::json!([resident_id(1)]),
            "the key unmasked"
        );

        let mut stream = ok(client.snapshot(snapshot_as(dataset, PURPOSE, "")).await);
        let (chunks, error) = drain(&mut stream).await;
        assert!(error.is_none(), "{error:?}");
        let snap: Vec<Vec<u8>> = chunks.into_iter().flat_map(|c| c.records).map(|c| c.record).collect();
        assert_eq!(
            snap,
            published.iter().map(|t| t.clone().into_bytes()).collect::<Vec<_>>(),
            "Snapshot of {dataset}: the published bytes"
        );

        let first = first_message(client.subscribe(subscribe_as(dataset, 0, PURPOSE, "")).await)
            .await
            .expect("a subscription")
            .expect("a first message");
        assert_eq!(
            first.changes[0].record,
            published[0].clone().into_bytes(),
            "Subscribe to {dataset}: the published bytes"
        );
    }
    hub.finish().await;
}

/// The bytes and digest of a whole download, or its refusal.
async fn download(client: &mut Exchange, dataset: &str, grant_id: &str) -> Result<(Vec<u8>, String), Status> {
    let mut stream = client
        .download_file(download_as(dataset, FILE_NAME, "", grant_id))
        .await?
        .into_inner();
    let (messages, error) = drain(&mut stream).await;
    if let Some(status) = error {
        assert!(
            messages.is_empty(),
            "a refused download delivered {} messages first",
            messages.len()
        );
        return Err(status);
    }
    let digest = messages.first().map(|m| m.sha256.clone()).unwrap_or_default();
    Ok((messages.into_iter().flat_map(|m| m.data).collect(), digest))
}

async fn file_datasets_are_granted_whole(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    let dataset = hub
        .open_files_shared(SAMR, "低保名单文件", pb::ShareType::Conditional)
        .await
        .dataset;
    let bytes = file_bytes();
    hub.upload_file(SAMR, &dataset, FILE_NAME, &bytes).await;
    let mut police = hub.exchange(POLICE).await;
    let mut police_access = hub.access(POLICE).await;
    let mut samr_access = hub.access(SAMR).await;

    let status = download(&mut police, &dataset, "")
        .await
        .expect_err("no grant, no file");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());

    // A file is requested and granted whole: no fields, no masks.
    invalid_on(
        police_access
            .request_access(request_access(application(&dataset, &["resident_id"])))
            .await,
        "fields",
    );
    let request = hub.apply(POLICE, &dataset, &[]).await;
    for wrong in [
        approval(&["resident_id"], &[]),
        approval(&[], &[("resident_id", "resident_id")]),
    ] {
        let status = refused(
            samr_access
                .approve_request(pb::ApproveRequestRequest {
                    request_id: request.request_id.clone(),
                    ..wrong
                })
                .await,
            Code::InvalidArgument,
        );
        assert!(!violated_fields(&status).is_empty(), "{}", status.message());
    }
    let approved = ok(samr_access
        .approve_request(pb::ApproveRequestRequest {
            request_id: request.request_id.clone(),
            ..approval(&[], &[])
        })
        .await);
    let grant = ok(samr_access.get_grant(get_grant(&approved.grant_id)).await);
    assert!(grant.fields.is_empty() && grant.masks.is_empty(), "{grant:?}");

    let (received, digest) = download(&mut police, &dataset, "")
        .await
        .expect("the grantee downloads");
    assert_eq!(received, bytes, "the whole file, unchanged");
    assert_eq!(digest, sha256_hex(&bytes));
    let (named, _) = download(&mut police, &dataset, &approved.grant_id)
        .await
        .expect("naming the grant");
    assert_eq!(named, bytes);

    // Another department without a grant still gets nothing.
    let mut hrss = hub.exchange(HRSS).await;
    let status = download(&mut hrss, &dataset, "").await.expect_err("no grant");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = download(&mut hrss, &dataset, &approved.grant_id)
        .await
        .expect_err("someone else's grant");
    assert_eq!(status.code(), Code::PermissionDenied);
    ok(police_access.get_grant(get_grant(&approved.grant_id)).await);
    hub.finish().await;
}

async fn several_active_grants_are_told_apart_by_grant_id(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    ok(samr
        .publish(batch(&dataset, "first", vec![upsert_resident(1, "张三丰")]))
        .await);
    let (_, names) = hub
        .grant(
            SAMR,
            POLICE,
            &dataset,
            &["resident_id", "name"],
            approval(&[], &[("name", "name")]),
        )
        .await;
    let (_, phones) = hub
        .grant(SAMR, POLICE, &dataset, &["resident_id", "mobile"], approval(&[], &[]))
        .await;
    let (_, hrss_grant) = hub
        .grant(SAMR, HRSS, &dataset, &["resident_id"], approval(&[], &[]))
        .await;
    let mut police = hub.exchange(POLICE).await;

    // Two active grants: the reader names one.
    invalid_on(police.fetch(fetch_as(&dataset, 0, 0, "", "")).await, "grant_id");
    for status in [
        first_message(police.snapshot(snapshot_as(&dataset, "", "")).await)
            .await
            .expect_err("which grant?"),
        first_message(police.subscribe(subscribe_as(&dataset, 0, "", "")).await)
            .await
            .expect_err("which grant?"),
    ] {
        names_field(&status, "grant_id");
    }
    let under = |grant: &str| fetch_as(&dataset, 0, 0, "", grant);
    let by_name = ok(police.fetch(under(&names.grant_id)).await);
    assert_eq!(
        record_of(&by_name.changes[0]),
        serde_json::json!({"resident_id": resident_id(1), "name": "张**"})
    );
    let by_phone = ok(police.fetch(under(&phones.grant_id)).await);
    assert_eq!(
        record_of(&by_phone.changes[0]),
        serde_json::json!({"resident_id": resident_id(1), "mobile": mobile(1)})
    );
    // Someone else's grant, or one that does not exist, is no basis.
    refused(police.fetch(under(&hrss_grant.grant_id)).await, Code::PermissionDenied);
    refused(police.fetch(under("no-such-grant")).await, Code::PermissionDenied);

    // With one of them revoked, the other is the one.
    ok(hub
        .access(SAMR)
        .await
        .revoke_grant(revoke_grant(&phones.grant_id, "已无需手机号码"))
        .await);
    refused(police.fetch(under(&phones.grant_id)).await, Code::PermissionDenied);
    let only = ok(police.fetch(fetch_as(&dataset, 0, 0, "", "")).await);
    assert_eq!(
        record_of(&only.changes[0]),
        serde_json::json!({"resident_id": resident_id(1), "name": "张**"})
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Revocation

/// How soon a revocation must end a live subscription on the same hub.
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// Reads a subscription until it fails; the changes before the failure and the failure. Panics
/// when it delivers nothing within `within`.
async fn until_refused(stream: &mut tonic::Streaming<pb::ChangeBatch>, within: Duration) -> (Vec<pb::Change>, Status) {
    let deadline = Instant::now() + within;
    let mut changes = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.message()).await {
            Ok(Ok(Some(batch))) => changes.extend(batch.changes),
            Ok(Ok(None)) => panic!("the subscription ended without an error"),
            Ok(Err(status)) => return (changes, status),
            Err(_) => panic!("the subscription was still open after {within:?}"),
        }
    }
}

async fn revocation_ends_live_subscriptions_at_once(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    ok(samr
        .publish(batch(
            &dataset,
            "first",
            vec![upsert_resident(1, "张三丰"), upsert_resident(2, "李四")],
        ))
        .await);
    let fields = ["resident_id", "name"];
    let (_, police_grant) = hub.grant(SAMR, POLICE, &dataset, &fields, approval(&[], &[])).await;
    let (_, hrss_grant) = hub.grant(SAMR, HRSS, &dataset, &fields, approval(&[], &[])).await;
    let mut police = hub.exchange(POLICE).await;
    let mut hrss = hub.exchange(HRSS).await;
    let mut police_access = hub.access(POLICE).await;
    let mut samr_access = hub.access(SAMR).await;

    let mut police_live = ok(police.subscribe(subscribe_as(&dataset, 0, "", "")).await);
    let mut hrss_live = ok(hrss.subscribe(subscribe_as(&dataset, 0, "", "")).await);
    for live in [&mut police_live, &mut hrss_live] {
        let mut seen = 0;
        while seen < 2 {
            match timeout(STREAM_GUARD, live.message()).await {
                Ok(Ok(Some(batch))) => seen += batch.changes.len(),
                other => panic!("the subscription failed: {other:?}"),
            }
        }
    }

    // Only the provider or the admin revokes, with a reason.
    refused(
        police_access
            .revoke_grant(revoke_grant(&police_grant.grant_id, "不再需要"))
            .await,
        Code::PermissionDenied,
    );
    refused(
        hub.access(HRSS)
            .await
            .revoke_grant(revoke_grant(&police_grant.grant_id, "越权"))
            .await,
        Code::NotFound,
    );
    invalid_on(
        samr_access.revoke_grant(revoke_grant(&police_grant.grant_id, "")).await,
        "reason",
    );

    // The provider revokes POLICE's grant: its subscription ends at once with PERMISSION_DENIED,
    // and a change published afterwards never reaches it.
    let revoked = ok(samr_access
        .revoke_grant(revoke_grant(&police_grant.grant_id, "核验事项已办结"))
        .await);
    let at = Instant::now();
    assert_eq!(revoked.state, pb::GrantState::Revoked as i32);
    assert_eq!(revoked.revoked_by, SAMR);
    assert_eq!(revoked.revoke_reason, "核验事项已办结");
    assert!(revoked.revoked_at.is_some());
    ok(samr
        .publish(batch(&dataset, "after", vec![upsert_resident(3, "王五")]))
        .await);
    let (late, status) = until_refused(&mut police_live, REVOCATION_BOUND).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    assert!(
        late.iter().all(|c| c.sequence <= 2),
        "changes after the revocation reached the revoked grantee: {:?}",
        sequences(&late)
    );
    eprintln!("the revoked subscription ended {:?} after the revocation", at.elapsed());

    // HRSS's grant is untouched: its subscription goes on.
    match timeout(STREAM_GUARD, hrss_live.message()).await {
        Ok(Ok(Some(batch))) => assert_eq!(sequences(&batch.changes), [3]),
        other => panic!("the other grantee's subscription suffered: {other:?}"),
    }

    // New reads under the revoked grant are refused, named or not.
    refused(
        police.fetch(fetch_as(&dataset, 0, 0, "", "")).await,
        Code::PermissionDenied,
    );
    refused(
        police.fetch(fetch_as(&dataset, 0, 0, "", &police_grant.grant_id)).await,
        Code::PermissionDenied,
    );
    for status in [
        first_message(police.snapshot(snapshot_as(&dataset, "", "")).await)
            .await
            .expect_err("revoked"),
        first_message(police.subscribe(subscribe_as(&dataset, 0, "", "")).await)
            .await
            .expect_err("revoked"),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    }
    assert_eq!(
        ok(police_access.get_grant(get_grant(&police_grant.grant_id)).await).state,
        pb::GrantState::Revoked as i32
    );
    refused(
        samr_access
            .revoke_grant(revoke_grant(&police_grant.grant_id, "再次撤销"))
            .await,
        Code::FailedPrecondition,
    );

    // The admin revokes HRSS's grant: the same.
    let revoked = ok(hub
        .access_admin()
        .await
        .revoke_grant(revoke_grant(&hrss_grant.grant_id, "违规使用"))
        .await);
    assert_eq!(revoked.state, pb::GrantState::Revoked as i32);
    assert_eq!(revoked.revoked_by, admin_actor());
    let (_, status) = until_refused(&mut hrss_live, REVOCATION_BOUND).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    refused(
        hrss.fetch(fetch_as(&dataset, 0, 0, "", "")).await,
        Code::PermissionDenied,
    );
    hub.finish().await;
}

/// How soon a live read notices, with nothing published meanwhile, that its grant expired or its
/// entry was withdrawn. The rules name no figure; this only keeps the test from waiting forever.
const RECHECK_BOUND: Duration = Duration::from_secs(5);

/// A grant that expires, or an entry withdrawn, ends the live reads that depended on it, also
/// when nothing is published meanwhile.
async fn expiry_and_withdrawal_end_live_reads(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let conditional = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let mut samr = hub.exchange(SAMR).await;
    for dataset in [&conditional, &open] {
        ok(samr
            .publish(batch(dataset, "first", vec![upsert_resident(1, "张三丰")]))
            .await);
    }
    let mut soon = approval(&[], &[]);
    soon.expires_at = Some(in_a_few_seconds());
    let (_, grant) = hub
        .grant(SAMR, POLICE, &conditional, &["resident_id", "name"], soon)
        .await;
    let mut police = hub.exchange(POLICE).await;
    let mut granted = ok(police.subscribe(subscribe_as(&conditional, 0, "", "")).await);
    let mut open_live = ok(police.subscribe(subscribe_as(&open, 0, PURPOSE, "")).await);
    for live in [&mut granted, &mut open_live] {
        match timeout(STREAM_GUARD, live.message()).await {
            Ok(Ok(Some(batch))) => assert_eq!(sequences(&batch.changes), [1]),
            other => panic!("the subscription failed: {other:?}"),
        }
    }

    let expires = grant.expires_at.expect("an expiry");
    let left = Duration::from_secs((expires.seconds - Utc::now().timestamp()).max(0) as u64);
    let (late, status) = until_refused(&mut granted, left + RECHECK_BOUND).await;
    assert!(late.is_empty(), "nothing new was published");
    assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
    assert_eq!(
        ok(hub.access(POLICE).await.get_grant(get_grant(&grant.grant_id)).await).state,
        pb::GrantState::Expired as i32
    );
    ok(samr
        .publish(batch(&conditional, "after", vec![upsert_resident(2, "李四")]))
        .await);
    refused(
        police.fetch(fetch_as(&conditional, 0, 0, "", "")).await,
        Code::PermissionDenied,
    );

    ok(hub.dept(SAMR).await.withdraw_entry(withdraw(&open, "数据源调整")).await);
    let (late, status) = until_refused(&mut open_live, RECHECK_BOUND).await;
    assert!(late.is_empty(), "nothing new was published");
    assert!(
        matches!(status.code(), Code::NotFound | Code::PermissionDenied),
        "a withdrawn entry's subscription ends refused: {status:?}"
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Deadlines

fn is_workday(day: NaiveDate, holidays: &[NaiveDate], extra: &[NaiveDate]) -> bool {
    extra.contains(&day) || (!matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !holidays.contains(&day))
}

/// The `n`-th working day after `day`, walked by hand.
fn workdays_after(day: NaiveDate, n: u32, holidays: &[NaiveDate], extra: &[NaiveDate]) -> NaiveDate {
    let mut day = day;
    let mut counted = 0;
    while counted < n {
        day = day.succ_opt().expect("a next day");
        if is_workday(day, holidays, extra) {
            counted += 1;
        }
    }
    day
}

async fn requests_are_due_ten_working_days_after_submission(backend: Backend) {
    // The next three weekdays are holidays, and the first Saturday after them a make-up working
    // day (调休): both move the deadline.
    let today = china_today();
    let mut holidays = Vec::new();
    let mut day = today;
    while holidays.len() < 3 {
        day = day.succ_opt().expect("a next day");
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            holidays.push(day);
        }
    }
    let mut saturday = day;
    while saturday.weekday() != Weekday::Sat {
        saturday = saturday.succ_opt().expect("a next day");
    }
    let extra = vec![saturday];
    let (h, e) = (holidays.clone(), extra.clone());
    let hub = TestHub::start_with(backend, move |c| {
        c.access.holidays = h;
        c.access.extra_workdays = e;
    })
    .await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;

    let before = china_today();
    let request = hub.apply(POLICE, &dataset, &["resident_id"]).await;
    let after = china_today();
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|d| workdays_after(*d, 10, &holidays, &extra).to_string())
        .collect();
    assert!(
        expected.contains(&request.due_on),
        "submitted {before} (holidays {holidays:?}, make-up day {saturday}): due {:?}, expected {}",
        request.due_on,
        expected[0]
    );
    assert_ne!(
        workdays_after(before, 10, &holidays, &extra),
        workdays_after(before, 10, &[], &[]),
        "the configured calendar matters to this case"
    );
    assert!(!request.overdue);
    assert_eq!(request.state, pb::RequestState::Pending as i32);
    // The deadline reads back the same.
    let read = ok(hub
        .access(SAMR)
        .await
        .get_request(get_request(&request.request_id))
        .await);
    assert_eq!(read.due_on, request.due_on);
    hub.finish().await;
}

fn list_requests(party: pb::Party, state: pb::RequestState, overdue: bool) -> pb::ListRequestsRequest {
    pb::ListRequestsRequest {
        party: party as i32,
        dataset: String::new(),
        state: state as i32,
        overdue,
        page_size: 0,
        page_token: String::new(),
        hub: String::new(),
    }
}

/// The ids of every request a listing finds (all pages).
async fn request_ids(client: &mut Access, mut request: pb::ListRequestsRequest) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let page = ok(client.list_requests(request.clone()).await);
        ids.extend(page.requests.into_iter().map(|r| r.request_id));
        if page.next_page_token.is_empty() {
            ids.sort();
            return ids;
        }
        request.page_token = page.next_page_token;
    }
    panic!("the listing never ended");
}

/// With `answer_within_workdays = 0` a request is due the day it is made, so it is not overdue
/// yet; overdue needs a due day in the past, which the test makes by moving the stored due day
/// back (it cannot wait a day).
async fn overdue_requests_are_listed_as_such(backend: Backend) {
    let hub = TestHub::start_with(backend, |c| c.access.answer_within_workdays = 0).await;
    hub.import_resident_schema().await;
    let dataset = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let before = china_today();
    let late = hub.apply(POLICE, &dataset, &["resident_id"]).await;
    let timely = hub.apply(POLICE, &dataset, &["resident_id", "name"]).await;
    let after = china_today();
    assert!(
        [before.to_string(), after.to_string()].contains(&late.due_on),
        "due the day it is made: {}",
        late.due_on
    );
    assert!(!late.overdue, "due today is not overdue");
    let mut police = hub.access(POLICE).await;
    let mut samr = hub.access(SAMR).await;
    let mut admin = hub.access_admin().await;
    let both = {
        let mut ids = vec![late.request_id.clone(), timely.request_id.clone()];
        ids.sort();
        ids
    };
    let any = pb::RequestState::Unspecified;
    assert!(
        request_ids(&mut police, list_requests(pb::Party::Applicant, any, true))
            .await
            .is_empty()
    );
    assert!(
        request_ids(&mut samr, list_requests(pb::Party::Provider, any, true))
            .await
            .is_empty()
    );
    assert_eq!(
        request_ids(&mut police, list_requests(pb::Party::Applicant, any, false)).await,
        both
    );

    // Due yesterday: overdue now, for both parties and the admin.
    let yesterday = before.pred_opt().expect("a day before");
    let moved = hub
        .execute_sql(&format!(
            "UPDATE access_requests SET due_on = '{yesterday}' WHERE id = '{}'",
            late.request_id.replace('\'', "")
        ))
        .await;
    assert_eq!(moved, 1);
    let read = ok(police.get_request(get_request(&late.request_id)).await);
    assert!(read.overdue, "pending after its due day: {read:?}");
    assert!(!ok(police.get_request(get_request(&timely.request_id)).await).overdue);
    let only_late = vec![late.request_id.clone()];
    assert_eq!(
        request_ids(&mut police, list_requests(pb::Party::Applicant, any, true)).await,
        only_late
    );
    assert_eq!(
        request_ids(&mut samr, list_requests(pb::Party::Provider, any, true)).await,
        only_late
    );
    assert_eq!(
        request_ids(&mut admin, list_requests(pb::Party::Unspecified, any, true)).await,
        only_late
    );
    assert_eq!(
        request_ids(
            &mut samr,
            list_requests(pb::Party::Provider, pb::RequestState::Pending, true)
        )
        .await,
        only_late
    );

    // Answered late, it is no longer overdue (it is no longer pending).
    let answered = ok(samr
        .approve_request(pb::ApproveRequestRequest {
            request_id: late.request_id.clone(),
            ..approval(&[], &[])
        })
        .await);
    assert!(!answered.overdue);
    assert!(
        request_ids(&mut samr, list_requests(pb::Party::Provider, any, true))
            .await
            .is_empty()
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The request workflow

async fn the_request_workflow(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let conditional = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let closed = hub
        .open_residents(SAMR, "低保对象家庭收入", pb::ShareType::NotShared)
        .await
        .dataset;
    let mut police = hub.access(POLICE).await;
    let mut hrss = hub.access(HRSS).await;
    let mut samr = hub.access(SAMR).await;
    let mut admin = hub.access_admin().await;
    let requested = ["resident_id", "name", "mobile", "address"];
    let apply_for = |fields: &[&str]| request_access(application(&conditional, fields));

    // Who may apply, and for what.
    refused(
        samr.request_access(apply_for(&requested)).await,
        Code::FailedPrecondition,
    );
    refused(
        admin.request_access(apply_for(&requested)).await,
        Code::PermissionDenied,
    );
    refused(
        police
            .request_access(request_access(application(&open, &requested)))
            .await,
        Code::FailedPrecondition,
    );
    refused(
        police
            .request_access(request_access(application(&closed, &requested)))
            .await,
        Code::PermissionDenied,
    );
    refused(
        police
            .request_access(request_access(application("101001/999999", &requested)))
            .await,
        Code::NotFound,
    );
    invalid_on(
        police.request_access(apply_for(&["resident_id", "salary"])).await,
        "fields",
    );
    invalid_on(police.request_access(apply_for(&[])).await, "fields");
    let mut app = application(&conditional, &requested);
    app.purpose = String::new();
    invalid_on(police.request_access(request_access(app)).await, "purpose");
    let mut app = application(&conditional, &requested);
    let yesterday = china_today().pred_opt().expect("a day before");
    app.period_from = (yesterday - xinqiao_tests::chrono::Duration::days(30)).to_string();
    app.period_until = yesterday.to_string();
    invalid_on(police.request_access(request_access(app)).await, "period_until");
    let mut app = application(&conditional, &requested);
    app.period_until = "2027-02-30".into();
    invalid_on(police.request_access(request_access(app)).await, "period_until");

    let r1 = ok(police.request_access(apply_for(&requested)).await);
    assert_eq!(r1.state, pb::RequestState::Pending as i32);
    assert_eq!((r1.applicant_code.as_str(), r1.provider_code.as_str()), (POLICE, SAMR));
    assert_eq!(r1.application, Some(application(&conditional, &requested)));
    assert!(r1.submitted_at.is_some() && !r1.due_on.is_empty() && !r1.overdue);
    assert!(r1.answered_at.is_none() && r1.grant_id.is_empty());
    let r2 = ok(hrss.request_access(apply_for(&["resident_id"])).await);
    let r3 = ok(hrss.request_access(apply_for(&["resident_id", "name"])).await);

    // Who sees a request: both parties and the admin; a third department is told it does not
    // exist.
    for client in [&mut police, &mut samr, &mut admin] {
        assert_eq!(ok(client.get_request(get_request(&r1.request_id)).await), r1);
    }
    refused(hrss.get_request(get_request(&r1.request_id)).await, Code::NotFound);
    refused(police.get_request(get_request("no-such-request")).await, Code::NotFound);

    // Approving: only the provider; only narrowing; the key stays; masks on granted fields;
    // an expiry in the future and within the period.
    let approve = |a: pb::ApproveRequestRequest| pb::ApproveRequestRequest {
        request_id: r1.request_id.clone(),
        ..a
    };
    refused(
        police.approve_request(approve(approval(&[], &[]))).await,
        Code::PermissionDenied,
    );
    refused(hrss.approve_request(approve(approval(&[], &[]))).await, Code::NotFound);
    refused(
        admin.approve_request(approve(approval(&[], &[]))).await,
        Code::PermissionDenied,
    );
    invalid_on(
        samr.approve_request(approve(approval(&["resident_id", "monthly_income"], &[])))
            .await,
        "fields",
    );
    invalid_on(samr.approve_request(approve(approval(&["name"], &[]))).await, "fields");
    invalid_on(
        samr.approve_request(approve(approval(&["resident_id", "name"], &[("mobile", "mobile")])))
            .await,
        "masks",
    );
    let status = refused(
        samr.approve_request(approve(approval(&[], &[("name", "hide-it")])))
            .await,
        Code::InvalidArgument,
    );
    assert!(!violated_fields(&status).is_empty());
    let period_end =
        NaiveDate::parse_from_str(&r1.application.as_ref().expect("app").period_until, "%Y-%m-%d").expect("a date");
    let mut too_long = approval(&[], &[]);
    too_long.expires_at = Some(timestamp(xinqiao_tests::chrono::DateTime::from_naive_utc_and_offset(
        (period_end + xinqiao_tests::chrono::Duration::days(2))
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
        Utc,
    )));
    invalid_on(samr.approve_request(approve(too_long)).await, "expires_at");
    let mut past = approval(&[], &[]);
    past.expires_at = Some(timestamp(Utc::now() - xinqiao_tests::chrono::Duration::hours(1)));
    invalid_on(samr.approve_request(approve(past)).await, "expires_at");
    assert_eq!(
        ok(samr.get_request(get_request(&r1.request_id)).await).state,
        pb::RequestState::Pending as i32,
        "refused answers change nothing"
    );

    let expires = Utc::now() + xinqiao_tests::chrono::Duration::days(30);
    let mut narrowed = approval(&["resident_id", "name"], &[("resident_id", "keep:3:4")]);
    narrowed.expires_at = Some(timestamp(expires));
    narrowed.note = "仅限低保资格核验".into();
    let approved = ok(samr.approve_request(approve(narrowed)).await);
    assert_eq!(approved.state, pb::RequestState::Approved as i32);
    assert_eq!(approved.answered_by, SAMR);
    assert!(approved.answered_at.is_some());
    assert_eq!(approved.reason, "仅限低保资格核验");
    assert!(!approved.grant_id.is_empty());
    let grant = ok(police.get_grant(get_grant(&approved.grant_id)).await);
    assert_eq!(grant.request_id, r1.request_id);
    assert_eq!(grant.dataset, conditional);
    assert_eq!(
        (grant.provider_code.as_str(), grant.grantee_code.as_str()),
        (SAMR, POLICE)
    );
    assert_eq!(grant.purpose, "最低生活保障资格核验");
    assert_eq!(grant.business_system, "社会救助信息系统");
    assert_eq!(grant.fields, ["resident_id", "name"]);
    assert_eq!(grant.masks, [mask("resident_id", "keep:3:4")]);
    assert_eq!(grant.expires_at.map(|t| t.seconds), Some(expires.timestamp()));
    assert_eq!(grant.state, pb::GrantState::Active as i32);
    refused(hrss.get_grant(get_grant(&approved.grant_id)).await, Code::NotFound);
    ok(admin.get_grant(get_grant(&approved.grant_id)).await);

    // Answered once only.
    refused(
        samr.approve_request(approve(approval(&[], &[]))).await,
        Code::FailedPrecondition,
    );
    refused(
        samr.reject_request(pb::RejectRequestRequest {
            request_id: r1.request_id.clone(),
            reason: "重新考虑".into(),
        })
        .await,
        Code::FailedPrecondition,
    );
    refused(
        police
            .withdraw_request(pb::WithdrawRequestRequest {
                request_id: r1.request_id.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );

    // The grantee's standing; the exchange catalogue filters by it.
    let mut police_exchange = hub.exchange(POLICE).await;
    let mut hrss_exchange = hub.exchange(HRSS).await;
    assert_eq!(
        ok(police_exchange.get_dataset(get_dataset(&conditional)).await).standing,
        pb::Standing::Granted as i32
    );
    assert_eq!(
        ok(hrss_exchange.get_dataset(get_dataset(&conditional)).await).standing,
        pb::Standing::Requestable as i32
    );
    let granted_only = pb::ListDatasetsRequest {
        standing: pb::Standing::Granted as i32,
        ..Default::default()
    };
    let listed: Vec<(String, i32)> = ok(police_exchange.list_datasets(granted_only.clone()).await)
        .datasets
        .into_iter()
        .map(|d| (d.dataset, d.standing))
        .collect();
    assert_eq!(listed, [(conditional.clone(), pb::Standing::Granted as i32)]);
    assert!(ok(hrss_exchange.list_datasets(granted_only).await).datasets.is_empty());

    // Grants listed by party.
    let grants = |party: pb::Party| pb::ListGrantsRequest {
        party: party as i32,
        active_only: true,
        ..Default::default()
    };
    let ids = |r: pb::ListGrantsResponse| r.grants.into_iter().map(|g| g.grant_id).collect::<Vec<_>>();
    assert_eq!(
        ids(ok(police.list_grants(grants(pb::Party::Applicant)).await)),
        [approved.grant_id.as_str()]
    );
    assert_eq!(
        ids(ok(samr.list_grants(grants(pb::Party::Provider)).await)),
        [approved.grant_id.as_str()]
    );
    assert!(ids(ok(police.list_grants(grants(pb::Party::Provider)).await)).is_empty());
    assert!(ids(ok(hrss.list_grants(grants(pb::Party::Unspecified)).await)).is_empty());

    // Rejecting needs a reason.
    let reject = |reason: &str| pb::RejectRequestRequest {
        request_id: r2.request_id.clone(),
        reason: reason.into(),
    };
    invalid_on(samr.reject_request(reject("")).await, "reason");
    invalid_on(samr.reject_request(reject("  \n ")).await, "reason");
    refused(hrss.reject_request(reject("自己拒绝")).await, Code::PermissionDenied);
    let rejected = ok(samr.reject_request(reject("申请用途超出共享条件")).await);
    assert_eq!(rejected.state, pb::RequestState::Rejected as i32);
    assert_eq!(rejected.reason, "申请用途超出共享条件");
    assert!(rejected.grant_id.is_empty());
    refused(
        samr.approve_request(pb::ApproveRequestRequest {
            request_id: r2.request_id.clone(),
            ..approval(&[], &[])
        })
        .await,
        Code::FailedPrecondition,
    );

    // Withdrawing: the applicant, while pending.
    let withdraw_r3 = || pb::WithdrawRequestRequest {
        request_id: r3.request_id.clone(),
    };
    refused(samr.withdraw_request(withdraw_r3()).await, Code::PermissionDenied);
    refused(police.withdraw_request(withdraw_r3()).await, Code::NotFound);
    let withdrawn = ok(hrss.withdraw_request(withdraw_r3()).await);
    assert_eq!(withdrawn.state, pb::RequestState::Withdrawn as i32);
    refused(hrss.withdraw_request(withdraw_r3()).await, Code::FailedPrecondition);
    refused(
        samr.approve_request(pb::ApproveRequestRequest {
            request_id: r3.request_id.clone(),
            ..approval(&[], &[])
        })
        .await,
        Code::FailedPrecondition,
    );

    // Listings by party, state and dataset.
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let all = sorted(vec![
        r1.request_id.clone(),
        r2.request_id.clone(),
        r3.request_id.clone(),
    ]);
    let any = pb::RequestState::Unspecified;
    assert_eq!(
        request_ids(&mut police, list_requests(pb::Party::Applicant, any, false)).await,
        [r1.request_id.as_str()]
    );
    assert!(
        request_ids(&mut police, list_requests(pb::Party::Provider, any, false))
            .await
            .is_empty()
    );
    assert_eq!(
        request_ids(&mut samr, list_requests(pb::Party::Provider, any, false)).await,
        all
    );
    assert!(
        request_ids(&mut samr, list_requests(pb::Party::Applicant, any, false))
            .await
            .is_empty()
    );
    assert_eq!(
        request_ids(&mut hrss, list_requests(pb::Party::Unspecified, any, false)).await,
        sorted(vec![r2.request_id.clone(), r3.request_id.clone()])
    );
    assert_eq!(
        request_ids(&mut admin, list_requests(pb::Party::Unspecified, any, false)).await,
        all
    );
    for (state, expected) in [
        (pb::RequestState::Approved, &r1),
        (pb::RequestState::Rejected, &r2),
        (pb::RequestState::Withdrawn, &r3),
    ] {
        assert_eq!(
            request_ids(&mut samr, list_requests(pb::Party::Provider, state, false)).await,
            [expected.request_id.as_str()],
            "{state:?}"
        );
    }
    assert!(
        request_ids(
            &mut samr,
            list_requests(pb::Party::Provider, pb::RequestState::Pending, false)
        )
        .await
        .is_empty()
    );
    let mut by_dataset = list_requests(pb::Party::Provider, any, false);
    by_dataset.dataset = open.clone();
    assert!(request_ids(&mut samr, by_dataset.clone()).await.is_empty());
    by_dataset.dataset = conditional.clone();
    assert_eq!(request_ids(&mut samr, by_dataset).await, all);
    assert!(
        request_ids(&mut samr, list_requests(pb::Party::Provider, any, true))
            .await
            .is_empty()
    );
    hub.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Error reports (纠错)

fn report(dataset: &str, sequence: u64, key: &str, description: &str) -> pb::ReportErrorRequest {
    pb::ReportErrorRequest {
        dataset: dataset.into(),
        sequence,
        key: key.as_bytes().to_vec(),
        description: description.into(),
    }
}

fn resolve(id: &str, resolution: pb::ReportState, reason: &str, corrected_sequence: u64) -> pb::ResolveReportRequest {
    pb::ResolveReportRequest {
        report_id: id.into(),
        resolution: resolution as i32,
        reason: reason.into(),
        corrected_sequence,
    }
}

fn list_reports(party: pb::Party, state: pb::ReportState) -> pb::ListReportsRequest {
    pb::ListReportsRequest {
        party: party as i32,
        state: state as i32,
        ..Default::default()
    }
}

async fn report_ids(client: &mut Access, request: pb::ListReportsRequest) -> Vec<String> {
    let mut ids: Vec<String> = ok(client.list_reports(request).await)
        .reports
        .into_iter()
        .map(|r| r.report_id)
        .collect();
    ids.sort();
    ids
}

async fn error_reports_are_filed_and_resolved(backend: Backend) {
    let hub = TestHub::start_on(backend).await;
    hub.import_resident_schema().await;
    let open = hub
        .open_residents(SAMR, "公示低保对象信息", pb::ShareType::Unconditional)
        .await
        .dataset;
    let conditional = hub
        .open_residents(SAMR, "低保对象联系信息", pb::ShareType::Conditional)
        .await
        .dataset;
    let mut samr_exchange = hub.exchange(SAMR).await;
    for dataset in [&open, &conditional] {
        ok(samr_exchange
            .publish(batch(
                dataset,
                "first",
                (1..=3).map(|s| upsert_resident(s, "张三丰")).collect(),
            ))
            .await);
    }
    hub.grant(SAMR, POLICE, &conditional, &RESIDENT_FIELDS, approval(&[], &[]))
        .await;
    let mut police = hub.access(POLICE).await;
    let mut hrss = hub.access(HRSS).await;
    let mut samr = hub.access(SAMR).await;
    let mut admin = hub.access_admin().await;
    let key3 = serde_json::json!([resident_id(3)]).to_string();

    // Who reports: a department that may read, not the provider, not a department without access.
    refused(
        samr.report_error(report(&open, 2, "", "姓名有误")).await,
        Code::FailedPrecondition,
    );
    refused(
        admin.report_error(report(&open, 2, "", "姓名有误")).await,
        Code::PermissionDenied,
    );
    refused(
        hrss.report_error(report(&conditional, 2, "", "姓名有误")).await,
        Code::PermissionDenied,
    );
    refused(
        police.report_error(report("101001/999999", 2, "", "姓名有误")).await,
        Code::NotFound,
    );
    // What a report names: a record it could have seen, and what is wrong.
    invalid_on(police.report_error(report(&open, 4, "", "姓名有误")).await, "sequence");
    invalid_on(police.report_error(report(&open, 0, "", "姓名有误")).await, "sequence");
    invalid_on(
        police.report_error(report(&open, 0, "not json", "姓名有误")).await,
        "key",
    );
    invalid_on(police.report_error(report(&open, 2, "", "")).await, "description");

    let by_sequence = ok(police.report_error(report(&open, 2, "", "姓名与户籍登记不一致")).await);
    assert_eq!(by_sequence.state, pb::ReportState::Open as i32);
    assert_eq!(
        (
            by_sequence.dataset.as_str(),
            by_sequence.provider_code.as_str(),
            by_sequence.reporter_code.as_str(),
            by_sequence.sequence,
            by_sequence.description.as_str()
        ),
        (open.as_str(), SAMR, POLICE, 2, "姓名与户籍登记不一致")
    );
    assert!(by_sequence.reported_at.is_some() && by_sequence.resolved_at.is_none());
    let by_key = ok(police.report_error(report(&open, 0, &key3, "手机号码已停用")).await);
    assert_eq!((by_key.sequence, by_key.key.as_slice()), (0, key3.as_bytes()));
    let granted = ok(police.report_error(report(&conditional, 1, "", "住址有误")).await);
    assert_eq!(granted.provider_code, SAMR);

    // Who sees a report: reporter, provider, admin.
    for client in [&mut police, &mut samr, &mut admin] {
        assert_eq!(
            ok(client
                .get_report(pb::GetReportRequest {
                    report_id: by_sequence.report_id.clone(),
                })
                .await),
            by_sequence
        );
    }
    refused(
        hrss.get_report(pb::GetReportRequest {
            report_id: by_sequence.report_id.clone(),
        })
        .await,
        Code::NotFound,
    );

    // Resolving: the provider, once; a rejection gives a reason; a correction names a later
    // change that exists.
    let id = by_sequence.report_id.as_str();
    refused(
        police
            .resolve_report(resolve(id, pb::ReportState::Rejected, "无误", 0))
            .await,
        Code::PermissionDenied,
    );
    refused(
        hrss.resolve_report(resolve(id, pb::ReportState::Rejected, "无误", 0))
            .await,
        Code::NotFound,
    );
    invalid_on(
        samr.resolve_report(resolve(id, pb::ReportState::Rejected, "", 0)).await,
        "reason",
    );
    invalid_on(
        samr.resolve_report(resolve(id, pb::ReportState::Corrected, "", 2))
            .await,
        "corrected_sequence",
    );
    invalid_on(
        samr.resolve_report(resolve(id, pb::ReportState::Corrected, "", 9))
            .await,
        "corrected_sequence",
    );
    refused(
        samr.resolve_report(resolve(id, pb::ReportState::Open, "", 0)).await,
        Code::InvalidArgument,
    );
    let fix = ok(samr_exchange
        .publish(batch(&open, "fix", vec![upsert_resident(2, "张三")]))
        .await);
    assert_eq!(fix.first_sequence, 4);
    let corrected = ok(samr
        .resolve_report(resolve(id, pb::ReportState::Corrected, "已按户籍更正", 4))
        .await);
    assert_eq!(corrected.state, pb::ReportState::Corrected as i32);
    assert_eq!(corrected.corrected_sequence, 4);
    assert_eq!(corrected.resolved_by, SAMR);
    assert!(corrected.resolved_at.is_some());
    refused(
        samr.resolve_report(resolve(id, pb::ReportState::Rejected, "再次处理", 0))
            .await,
        Code::FailedPrecondition,
    );
    let rejected = ok(samr
        .resolve_report(resolve(
            &by_key.report_id,
            pb::ReportState::Rejected,
            "经核实数据无误",
            0,
        ))
        .await);
    assert_eq!(rejected.state, pb::ReportState::Rejected as i32);
    assert_eq!(rejected.resolution, "经核实数据无误");

    // Listings by side and state.
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let all = sorted(vec![
        by_sequence.report_id.clone(),
        by_key.report_id.clone(),
        granted.report_id.clone(),
    ]);
    let any = pb::ReportState::Unspecified;
    assert_eq!(report_ids(&mut samr, list_reports(pb::Party::Provider, any)).await, all);
    assert_eq!(
        report_ids(&mut police, list_reports(pb::Party::Applicant, any)).await,
        all
    );
    assert_eq!(
        report_ids(&mut police, list_reports(pb::Party::Unspecified, any)).await,
        all
    );
    assert!(
        report_ids(&mut police, list_reports(pb::Party::Provider, any))
            .await
            .is_empty()
    );
    assert!(
        report_ids(&mut hrss, list_reports(pb::Party::Unspecified, any))
            .await
            .is_empty()
    );
    assert_eq!(
        report_ids(&mut admin, list_reports(pb::Party::Unspecified, any)).await,
        all
    );
    for (state, expected) in [
        (pb::ReportState::Open, &granted),
        (pb::ReportState::Corrected, &by_sequence),
        (pb::ReportState::Rejected, &by_key),
    ] {
        assert_eq!(
            report_ids(&mut samr, list_reports(pb::Party::Provider, state)).await,
            [expected.report_id.as_str()],
            "{state:?}"
        );
    }
    let mut of_dataset = list_reports(pb::Party::Provider, any);
    of_dataset.dataset = conditional.clone();
    assert_eq!(report_ids(&mut samr, of_dataset).await, [granted.report_id.as_str()]);
    hub.finish().await;
}
